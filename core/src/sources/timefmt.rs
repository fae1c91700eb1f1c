//! Timestamps in and out of the HTTP API and CSV files: RFC 3339 (`2024-07-02T00:00:00.5Z`,
//! `2024-07-02T02:00:00+02:00`; also with a space for `T` and an offset without its colon,
//! `+0200`, as CSV exports write them) or integer nanoseconds since the Unix epoch.
//!
//! Parsing is strict: the date must exist (`2024-02-30` is refused, `2024-02-29` is not),
//! the offset is required and within ±23:59, each field has exactly its digits, and a
//! leap second (`:60`) is only read at 23:59 UTC. A lenient parser would store a different
//! instant than the client meant (`2024-02-31` as March 2nd) without telling it.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn is_leap_year(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap_year(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The unsigned decimal in `b[range]`, ASCII digits only (no sign, no space).
fn digits(b: &[u8], range: std::ops::Range<usize>) -> Option<i64> {
    let field = b.get(range)?;
    field.iter().try_fold(0i64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

/// The offset east of UTC in minutes: `Z`, `z`, `±hh:mm` or `±hhmm`, hours 0–23,
/// minutes 0–59.
fn offset_minutes(tz: &[u8]) -> Option<i64> {
    let (sign, rest) = match tz {
        [b'Z'] | [b'z'] => return Some(0),
        [b'+', rest @ ..] => (1, rest),
        [b'-', rest @ ..] => (-1, rest),
        _ => return None,
    };
    let (hh, mm) = match rest.len() {
        5 if rest[2] == b':' => (digits(rest, 0..2)?, digits(rest, 3..5)?),
        4 => (digits(rest, 0..2)?, digits(rest, 2..4)?),
        _ => return None,
    };
    (hh <= 23 && mm <= 59).then_some(sign * (hh * 60 + mm))
}

/// Parses an RFC 3339 timestamp, or an integer of nanoseconds since the epoch.
pub fn parse_ns(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ns) = s.parse::<i64>() {
        return Ok(ns);
    }
    let bad = |why: &str| format!("{s:?} is not an RFC 3339 time or integer nanoseconds: {why}");
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad("expected YYYY-MM-DDThh:mm:ss and an offset"));
    }
    let field = |r| digits(b, r).ok_or_else(|| bad("expected YYYY-MM-DDThh:mm:ss digits"));
    let (y, mo, d) = (field(0..4)?, field(5..7)?, field(8..10)?);
    let (h, mi, se) = (field(11..13)?, field(14..16)?, field(17..19)?);
    if !(1..=12).contains(&mo) {
        return Err(bad("no such month"));
    }
    if !(1..=days_in_month(y, mo)).contains(&d) {
        return Err(bad("no such day in that month"));
    }
    if h > 23 || mi > 59 || se > 60 {
        return Err(bad("no such time of day"));
    }
    let mut i = 19;
    let mut frac_ns = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad("no digits after the decimal point"));
        }
        // Nanoseconds: the first nine digits, padded with zeros on the right.
        let kept = start..i.min(start + 9);
        let scale = 10i64.pow(9 - kept.len() as u32);
        frac_ns = digits(b, kept).ok_or_else(|| bad("bad fraction"))? * scale;
    }
    let offset = offset_minutes(&b[i..])
        .ok_or_else(|| bad("the offset must be Z or +hh:mm / -hh:mm within 23:59"))?;
    // A leap second exists only as the last second of a UTC day.
    if se == 60 && (h * 60 + mi - offset).rem_euclid(1_440) != 1_439 {
        return Err(bad("a leap second (:60) is only 23:59:60 UTC"));
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3_600 + mi * 60 + se - offset * 60;
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac_ns))
        .ok_or_else(|| format!("{s:?} is out of range"))
}

/// RFC 3339 in UTC with nanoseconds: `2024-07-02T00:00:00.123456789Z`.
pub fn format_ns(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_the_api_and_files_use() {
        assert_eq!(
            parse_ns("2024-07-02T00:00:00Z").unwrap(),
            1_719_878_400_000_000_000
        );
        assert_eq!(
            parse_ns("1719878400000000000").unwrap(),
            1_719_878_400_000_000_000
        );
        assert_eq!(
            parse_ns("2013-01-01 22:00:00.295000+00:00").unwrap(),
            1_357_077_600_295_000_000
        );
        assert_eq!(
            parse_ns("2024-07-02T02:00:00.5+02:00").unwrap(),
            1_719_878_400_500_000_000
        );
        assert_eq!(parse_ns("1969-12-31T23:59:59.999999999Z").unwrap(), -1);
        for half_hour_east in ["2024-07-02T05:30:00+05:30", "2024-07-02T05:30:00+0530"] {
            assert_eq!(parse_ns(half_hour_east).unwrap(), 1_719_878_400_000_000_000);
        }
        assert_eq!(
            parse_ns("2024-07-01T23:00:00.0000000012-01:00").unwrap(),
            1_719_878_400_000_000_001
        );
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-07-02T00:00:00+2",
            // Found by fuzzing (tick_parse): a multi-byte character in the offset panicked.
            "2013-01-01 22:00:10+0\u{703}0",
            "2024-07-02T00:00:00+€1",
            "2024-07-02T00:00:00+-900",
        ] {
            assert!(parse_ns(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_real_dates_offsets_and_digits_are_read() {
        for ok in [
            "2024-02-29T00:00:00Z",
            "2000-02-29T00:00:00Z",
            "2024-12-31T23:59:59.999999999+23:59",
            "2024-01-01T00:00:00-23:59",
            "2016-12-31T23:59:60Z",
            "2017-01-01T01:59:60+02:00",
        ] {
            assert!(parse_ns(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            parse_ns("2016-12-31T23:59:60Z").unwrap(),
            parse_ns("2017-01-01T00:00:00Z").unwrap()
        );
        for bad in [
            "2024-02-31T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-00-10T00:00:00Z",
            "2024-07-00T00:00:00Z",
            "2024-07-02T24:00:00Z",
            "2024-07-02T00:60:00Z",
            "2024-07-02T12:00:60Z",
            "2024-07-02T00:00:00+99:99",
            "2024-07-02T00:00:00+24:00",
            "2024-07-02T00:00:00+05:60",
            "2024-07-02T00:00:00+05::30",
            "2024-07-02T00:00:00+:0530",
            "2024-07-02T00:00:00",
            "2024-07-02T00:00:00.Z",
            "+024-07-02T00:00:00Z",
            "2024-+7-02T00:00:00Z",
            "2024-07-02T00:00:00ZZ",
        ] {
            assert!(parse_ns(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_and_round_trips() {
        for ns in [0, -1, 1_719_878_400_123_456_789, 1_357_077_600_295_000_000] {
            assert_eq!(parse_ns(&format_ns(ns)).unwrap(), ns);
        }
        assert_eq!(
            format_ns(1_719_878_400_000_000_001),
            "2024-07-02T00:00:00.000000001Z"
        );
    }
}
