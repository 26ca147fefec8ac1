//! Calendar arithmetic for budgets and usage, all in UTC: hour buckets and their shard ids, and the
//! budget periods (day, ISO week from Monday 00:00, month) they add up to. Written out rather
//! than pulling in a date-time crate: the ledger needs only whole days, weeks and months.

pub const HOUR: i64 = 3600;
pub const DAY: i64 = 86_400;

/// A budget period, as `Budget.period` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Daily,
    /// ISO week: Monday 00:00 UTC to the next Monday.
    Weekly,
    Monthly,
    /// Everything ever counted.
    Total,
}

impl Period {
    /// From the config's enum; unspecified means total, as config.proto says.
    #[must_use]
    pub fn from_proto(p: crate::proto::Period) -> Self {
        use crate::proto::Period as P;
        match p {
            P::Daily => Self::Daily,
            P::Weekly => Self::Weekly,
            P::Monthly => Self::Monthly,
            P::Total | P::Unspecified => Self::Total,
        }
    }

    /// The period containing `now` (Unix seconds) as `[start, end)`; `None` for `Total`.
    #[must_use]
    pub fn window(self, now: i64) -> Option<(i64, i64)> {
        let days = now.div_euclid(DAY);
        match self {
            Self::Daily => Some((days * DAY, (days + 1) * DAY)),
            Self::Weekly => {
                // 1970-01-01 was a Thursday: Monday is weekday 0 after shifting by 3.
                let monday = days - (days + 3).rem_euclid(7);
                Some((monday * DAY, (monday + 7) * DAY))
            }
            Self::Monthly => {
                let (y, m, _) = civil_from_days(days);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                Some((days_from_civil(y, m, 1) * DAY, days_from_civil(ny, nm, 1) * DAY))
            }
            Self::Total => None,
        }
    }

    /// The id of the period containing `now`, for grants and logs: `2026-11-24`, `2026-W48`
    /// (ISO week-numbering year), `2026-11`, `total`.
    #[must_use]
    pub fn id(self, now: i64) -> String {
        let days = now.div_euclid(DAY);
        match self {
            Self::Daily => {
                let (y, m, d) = civil_from_days(days);
                format!("{y:04}-{m:02}-{d:02}")
            }
            Self::Weekly => {
                // The ISO week belongs to the year of its Thursday.
                let thursday = days - (days + 3).rem_euclid(7) + 3;
                let (y, _, _) = civil_from_days(thursday);
                let week = (thursday - days_from_civil(y, 1, 1)) / 7 + 1;
                format!("{y:04}-W{week:02}")
            }
            Self::Monthly => {
                let (y, m, _) = civil_from_days(days);
                format!("{y:04}-{m:02}")
            }
            Self::Total => "total".to_owned(),
        }
    }
}

/// The start of the hour containing `t`.
#[must_use]
pub fn floor_hour(t: i64) -> i64 {
    t.div_euclid(HOUR) * HOUR
}

/// An hour bucket's id in shard keys: `h{YYYYMMDDHH}`, so keys sort by time.
#[must_use]
pub fn hour_id(hour: i64) -> String {
    let (y, m, d) = civil_from_days(hour.div_euclid(DAY));
    let h = hour.rem_euclid(DAY) / HOUR;
    format!("h{y:04}{m:02}{d:02}{h:02}")
}

/// The inverse of [`hour_id`].
#[must_use]
pub fn parse_hour_id(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('h')?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| digits[r].parse::<i64>().ok();
    let (y, m, d, h) = (n(0..4)?, n(4..6)?, n(6..8)?, n(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Refuses 2026-02-31 and the like rather than rolling over.
    (civil_from_days(days) == (y, m, d)).then_some(days * DAY + h * HOUR)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
#[must_use]
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (the inverse of [`days_from_civil`]).
#[must_use]
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-24T13:45:00Z, a Tuesday.
    const T: i64 = 1_795_527_900;

    #[test]
    fn windows() {
        let day = 1_795_478_400; // 2026-11-24T00:00:00Z
        assert_eq!(Period::Daily.window(T), Some((day, day + DAY)));
        assert_eq!(Period::Weekly.window(T), Some((day - DAY, day + 6 * DAY)));
        // November 2026: the 1st is 23 days before the 24th; December 1st is 7 days after.
        assert_eq!(Period::Monthly.window(T), Some((day - 23 * DAY, day + 7 * DAY)));
        assert_eq!(Period::Total.window(T), None);
        // The boundaries themselves belong to the period they start.
        assert_eq!(Period::Daily.window(day), Some((day, day + DAY)));
        assert_eq!(Period::Daily.window(day - 1), Some((day - DAY, day)));
        let monday = day - DAY;
        assert_eq!(Period::Weekly.window(monday), Some((monday, monday + 7 * DAY)));
        assert_eq!(Period::Weekly.window(monday - 1), Some((monday - 7 * DAY, monday)));
        // December rolls into the next year.
        let dec = 1_796_601_600; // 2026-12-07
        let (start, end) = Period::Monthly.window(dec).unwrap();
        assert_eq!(
            (Period::Daily.id(start), Period::Daily.id(end)),
            ("2026-12-01".into(), "2027-01-01".into())
        );
    }

    #[test]
    fn ids() {
        assert_eq!(Period::Daily.id(T), "2026-11-24");
        assert_eq!(Period::Weekly.id(T), "2026-W48");
        assert_eq!(Period::Monthly.id(T), "2026-11");
        assert_eq!(Period::Total.id(T), "total");
        // 2027-01-01 is a Friday: still ISO week 53 of 2026. 2024-12-30 (Monday) is 2025-W01.
        assert_eq!(Period::Weekly.id(1_798_761_600), "2026-W53");
        assert_eq!(Period::Weekly.id(1_735_516_800), "2025-W01");
    }

    #[test]
    fn hour_ids_round_trip_and_sort() {
        let h = floor_hour(T);
        assert_eq!(h, 1_795_525_200);
        assert_eq!(hour_id(h), "h2026112413");
        assert_eq!(parse_hour_id("h2026112413"), Some(h));
        for t in [0, 951_782_400, 4_102_444_800 - HOUR, h] {
            assert_eq!(parse_hour_id(&hour_id(floor_hour(t))), Some(floor_hour(t)));
        }
        assert!(hour_id(h) < hour_id(h + HOUR) && hour_id(h + 23 * HOUR) < hour_id(h + 24 * HOUR));
        for bad in ["h202611241", "h2026112424", "h2026023100", "2026112413", "h20261124ab", "total"] {
            assert_eq!(parse_hour_id(bad), None, "{bad}");
        }
        assert_eq!(floor_hour(-1), -HOUR);
    }
}
