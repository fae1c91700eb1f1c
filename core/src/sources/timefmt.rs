//! Timestamps in and out of the HTTP API and CSV files: RFC 3339 (`2024-07-02T00:00:00.5Z`,
//! also with a space and `+00:00`) or integer nanoseconds since the Unix epoch.

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

/// Parses an RFC 3339 timestamp, or an integer of nanoseconds since the epoch.
pub fn parse_ns(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ns) = s.parse::<i64>() {
        return Ok(ns);
    }
    let bad = || format!("{s:?} is not an RFC 3339 time or integer nanoseconds");
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b' ' || b[10] == b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num =
        |r: std::ops::Range<usize>| s.get(r).and_then(|v| v.parse::<i64>().ok()).ok_or_else(bad);
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    let mut i = 19;
    let mut frac_ns = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return Err(bad());
        }
        // Nanoseconds: the first nine digits, padded with zeros on the right.
        let kept = &digits[..digits.len().min(9)];
        let scale = 10i64.pow(9 - kept.len() as u32);
        frac_ns = kept.parse::<i64>().map_err(|_| bad())? * scale;
    }
    let offset_s = match &s[i..] {
        "" | "Z" | "z" => 0,
        tz => {
            let sign = match tz.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(bad()),
            };
            // `hhmm` or `hh:mm`, ASCII digits only (read byte by byte, nothing allocated).
            let mut digits = tz.as_bytes()[1..].iter().filter(|&&c| c != b':');
            let mut minutes = 0i64;
            for _ in 0..4 {
                match digits.next() {
                    Some(d) if d.is_ascii_digit() => minutes = minutes * 10 + i64::from(d - b'0'),
                    _ => return Err(bad()),
                }
            }
            if digits.next().is_some() {
                return Err(bad());
            }
            let (hh, mm) = (minutes / 100, minutes % 100);
            sign * (hh * 3_600 + mm * 60)
        }
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3_600 + mi * 60 + se - offset_s;
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
