//! Durations on the command line: a whole number and a unit, `30d`, `12h`, `90m`, `3600s`,
//! `500ms` (and `2w`). A bare number is refused: `--expires-in 30` could mean seconds or days.

use std::time::Duration;

/// Parses a positive duration.
pub(crate) fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || format!("\"{s}\" is not a duration such as 30d, 12h, 90m, 3600s or 500ms");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        "" => return Err(format!("\"{s}\" needs a unit: s, m, h or d (as in {s}s)")),
        _ => return Err(bad()),
    };
    let millis = n.checked_mul(millis_per_unit).ok_or_else(|| format!("\"{s}\" is too long"))?;
    if millis == 0 {
        return Err(format!("\"{s}\" must be more than zero"));
    }
    Ok(Duration::from_millis(millis))
}

/// Prints a duration the way [`parse`] reads it, in its largest whole unit (`30d`, `90m`).
pub(crate) fn format(d: Duration) -> String {
    let millis = d.as_millis();
    for (unit, per) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis >= per && millis.is_multiple_of(per) {
            return format!("{}{unit}", millis / per);
        }
    }
    format!("{millis}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(parse("3600s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse(" 10s "), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn refuses_what_is_not_a_positive_duration() {
        assert!(parse("30").unwrap_err().contains("needs a unit"));
        assert!(parse("0s").unwrap_err().contains("more than zero"));
        for bad in ["", "d", "-5s", "1.5h", "10 s", "10y", "1h30m", "99999999999999999999s"] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse("18446744073709551615d").unwrap_err().contains("too long"));
    }

    #[test]
    fn formats_in_the_largest_whole_unit() {
        assert_eq!(format(Duration::from_secs(10)), "10s");
        assert_eq!(format(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(format(Duration::from_secs(2 * 86_400)), "2d");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
    }
}
