//! RFC 3339 timestamps ⇄ Unix seconds, for `expires_at`. Small enough to write out rather than
//! pull a date-time crate into every binary: the file needs one parse and one format.

use crate::period::{civil_from_days, days_from_civil};

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` into Unix seconds; fractions are dropped.
pub(super) fn parse(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let (hour, minute, second) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    // 60 would be a leap second; Unix time has none, so it is refused rather than guessed.
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let offset = h * 3600 + m * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`; `None` outside years 0000–9999.
pub(super) fn format(unix: i64) -> Option<String> {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    Some(format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"))
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |n, c| c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0')))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse("2027-01-01T00:00:00Z"), Some(1_798_761_600));
        assert_eq!(parse("2027-01-01T02:00:00.5+02:00"), Some(1_798_761_600));
        assert_eq!(parse("2024-02-29t12:30:15z"), Some(1_709_209_815));
        assert_eq!(format(1_798_761_600).as_deref(), Some("2027-01-01T00:00:00Z"));
        assert_eq!(format(-1).as_deref(), Some("1969-12-31T23:59:59Z"));
        for t in [0, 951_782_400, 1_709_209_815, 4_102_444_799] {
            assert_eq!(parse(&format(t).unwrap()), Some(t));
        }
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "2027-01-01",
            "2027-01-01T00:00:00",
            "2023-02-29T00:00:00Z",
            "2027-13-01T00:00:00Z",
            "2027-01-01T24:00:00Z",
            "2027-01-01T00:00:60Z",
            "2027-01-01T00:00:00.Z",
            "2027-01-01T00:00:00+0200",
            "next tuesday",
        ] {
            assert_eq!(parse(s), None, "{s}");
        }
    }
}
