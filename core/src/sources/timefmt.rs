//! Timestamps in and out of the HTTP API and CSV files: RFC 3339 (`2024-07-02T00:00:00.5Z`,
//! `2024-07-02T02:00:00+02:00`; also with a space for `T` and an offset without its colon,
//! `+0200`, as CSV exports write them) or integer nanoseconds since the Unix epoch.
//!
//! Files also write integers in other units ([`TimeUnit`], told apart by magnitude with
//! [`TimeUnit::guess`]) and naive times without an offset (`2024-07-02 00:00:00.5`,
//! HistData's `20240702 000000500`), read at a fixed offset by [`parse_naive_ns`], or in a
//! zone of the IANA tz database whose daylight saving time they follow ([`NaiveZone`]).
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
    parse_ns_with(s, &mut SecondCache::default())
}

/// The last whole second an RFC 3339 parse read (`YYYY-MM-DDThh:mm:ss`, before its offset):
/// the lines of a tick file share it many times over, so its date arithmetic is done once.
#[derive(Debug, Clone, Default)]
pub struct SecondCache {
    text: [u8; 19],
    /// Seconds since the epoch of `text` read as UTC; `None` when nothing is cached.
    secs: Option<i64>,
}

/// [`parse_ns`], reusing `cache` when `s` falls in the second it holds (and updating it).
pub fn parse_ns_with(s: &str, cache: &mut SecondCache) -> Result<i64, String> {
    let s = s.trim();
    let b = s.as_bytes();
    let cached = match (cache.secs, b.get(..19)) {
        (Some(secs), Some(head)) if b.len() >= 20 && *head == cache.text => Some(secs),
        _ => None,
    };
    if cached.is_none() {
        if let Ok(ns) = s.parse::<i64>() {
            return Ok(ns);
        }
    }
    let bad = |why: &str| format!("{s:?} is not an RFC 3339 time or integer nanoseconds: {why}");
    let (utc_secs, leap) = match cached {
        Some(secs) => (secs, false),
        None => {
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
            let secs = days_from_civil(y, mo, d) * 86_400 + h * 3_600 + mi * 60 + se;
            (secs, se == 60)
        }
    };
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
    // A leap second exists only as the last second of a UTC day; it is never cached.
    if leap && ((utc_secs - 60) / 60 - offset).rem_euclid(1_440) != 1_439 {
        return Err(bad("a leap second (:60) is only 23:59:60 UTC"));
    }
    if cached.is_none() && !leap {
        cache.text.copy_from_slice(&b[..19]);
        cache.secs = Some(utc_secs);
    }
    let secs = utc_secs - offset * 60;
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac_ns))
        .ok_or_else(|| format!("{s:?} is out of range"))
}

/// The unit of an integer (or decimal) time since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeUnit {
    /// Seconds.
    S,
    /// Milliseconds (Binance).
    Ms,
    /// Microseconds (Tardis).
    Us,
    /// Nanoseconds (Databento, the HTTP API).
    Ns,
}

impl TimeUnit {
    /// Nanoseconds in one unit.
    pub fn nanos(self) -> i64 {
        match self {
            TimeUnit::S => 1_000_000_000,
            TimeUnit::Ms => 1_000_000,
            TimeUnit::Us => 1_000,
            TimeUnit::Ns => 1,
        }
    }

    /// The unit a time of this magnitude is in, taking times to lie between 1973 and 5138:
    /// below 1e11 seconds, below 1e14 milliseconds, below 1e17 microseconds, else
    /// nanoseconds. A guess: say so to the user, and let them name the unit.
    pub fn guess(value: i64) -> TimeUnit {
        match value.unsigned_abs() {
            v if v < 100_000_000_000 => TimeUnit::S,
            v if v < 100_000_000_000_000 => TimeUnit::Ms,
            v if v < 100_000_000_000_000_000 => TimeUnit::Us,
            _ => TimeUnit::Ns,
        }
    }

    /// The unit's short name: `s`, `ms`, `us`, `ns`.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeUnit::S => "s",
            TimeUnit::Ms => "ms",
            TimeUnit::Us => "us",
            TimeUnit::Ns => "ns",
        }
    }
}

impl std::str::FromStr for TimeUnit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "s" => Ok(TimeUnit::S),
            "ms" => Ok(TimeUnit::Ms),
            "us" | "µs" => Ok(TimeUnit::Us),
            "ns" => Ok(TimeUnit::Ns),
            other => Err(format!("{other:?} is not a time unit: s, ms, us or ns")),
        }
    }
}

/// A number of `unit`s since the epoch as nanoseconds: an integer, or a decimal (`1719878400.5`
/// seconds) whose digits past nanoseconds are dropped.
pub fn parse_epoch(s: &str, unit: TimeUnit) -> Result<i64, String> {
    let s = s.trim();
    let out_of_range = || format!("{s:?} {} is out of range", unit.as_str());
    if let Ok(n) = s.parse::<i64>() {
        return n.checked_mul(unit.nanos()).ok_or_else(out_of_range);
    }
    let bad = || format!("{s:?} is not a number of {} since the epoch", unit.as_str());
    let (whole, frac) = s.split_once('.').ok_or_else(bad)?;
    let negative = whole.starts_with('-');
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // The fraction of one unit, in nanoseconds: its first digits, padded.
    let digits = unit.nanos().ilog10() as usize;
    let kept = &frac[..frac.len().min(digits)];
    let frac_ns = if kept.is_empty() {
        0
    } else {
        kept.parse::<i64>().map_err(|_| bad())? * 10i64.pow((digits - kept.len()) as u32)
    };
    let frac_ns = if negative { -frac_ns } else { frac_ns };
    whole
        .checked_mul(unit.nanos())
        .and_then(|n| n.checked_add(frac_ns))
        .ok_or_else(out_of_range)
}

/// A time without an offset, at `offset_minutes` east of UTC: `YYYY-MM-DD hh:mm:ss[.f]`
/// (or with `T`), or HistData's `YYYYMMDD hhmmss[fff]` (milliseconds).
pub fn parse_naive_ns(s: &str, offset_minutes: i32) -> Result<i64, String> {
    let t = s.trim();
    let b = t.as_bytes();
    let bad = || format!("{t:?} is not a date and time (YYYY-MM-DD hh:mm:ss)");
    let (date, rest) = if b.len() >= 15 && b[8] == b' ' && b[..8].iter().all(u8::is_ascii_digit) {
        // HistData: YYYYMMDD hhmmss + milliseconds.
        let rest = &t[9..];
        if rest.len() < 6 || !rest.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let iso = format!(
            "{}-{}-{}T{}:{}:{}",
            &t[..4],
            &t[4..6],
            &t[6..8],
            &rest[..2],
            &rest[2..4],
            &rest[4..6]
        );
        let frac = &rest[6..];
        (
            iso,
            if frac.is_empty() {
                String::new()
            } else {
                format!(".{frac}")
            },
        )
    } else if b.len() >= 19 {
        (t[..19].to_string(), t[19..].to_string())
    } else {
        return Err(bad());
    };
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let m = offset_minutes.unsigned_abs();
    let offset = format!("{sign}{:02}:{:02}", m / 60, m % 60);
    parse_ns(&format!("{date}{rest}{offset}")).map_err(|_| bad())
}

/// A fixed offset east of UTC in minutes, from `Z`, `UTC`, `+hh:mm`, `-hhmm` or `-05`.
pub fn parse_offset(s: &str) -> Result<i32, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return Ok(0);
    }
    let padded = if t.len() == 3 {
        format!("{t}:00")
    } else {
        t.to_string()
    };
    offset_minutes(padded.as_bytes())
        .map(|m| m as i32)
        .ok_or_else(|| {
            format!(
                "{t:?} is not a fixed offset: write it as -05:00, +0530, -05 or UTC (time zone \
                 names are not read, as their offsets change with the season)"
            )
        })
}

/// Where times written without an offset were taken: a fixed offset, or a zone of the IANA
/// tz database whose offset follows its rules (daylight saving time included).
#[derive(Debug, Clone)]
pub enum NaiveZone {
    /// Minutes east of UTC, all year.
    Offset(i32),
    /// A tz database zone, like `America/New_York`.
    Zone(jiff::tz::TimeZone),
}

impl NaiveZone {
    /// `-05:00`, `+0530`, `-05`, `UTC`: a fixed offset ([`parse_offset`]); else a zone
    /// name like `America/New_York`, from the system's tz database (a copy built into the
    /// binary when the system has none).
    pub fn parse(s: &str) -> Result<NaiveZone, String> {
        if let Ok(minutes) = parse_offset(s) {
            return Ok(NaiveZone::Offset(minutes));
        }
        jiff::tz::TimeZone::get(s.trim())
            .map(NaiveZone::Zone)
            .map_err(|_| {
                format!(
                    "{:?} is neither a fixed offset (-05:00, +0530, -05, UTC) nor a time zone                      name of the tz database (America/New_York, Europe/London)",
                    s.trim()
                )
            })
    }

    /// The instant of the naive time `s` ([`parse_naive_ns`]'s forms) here. In a zone, a
    /// wall time that daylight saving time repeats (autumn) is the first of the two, and
    /// one it skips (spring) is read with the offset from before the change: the
    /// "compatible" choice of RFC 5545 and JavaScript's Temporal.
    pub fn parse_ns(&self, s: &str) -> Result<i64, String> {
        let tz = match self {
            NaiveZone::Offset(minutes) => return parse_naive_ns(s, *minutes),
            NaiveZone::Zone(tz) => tz,
        };
        // The wall time read as if it were UTC, then placed in the zone.
        let wall = parse_naive_ns(s, 0)?;
        let out_of_range = |e: jiff::Error| format!("{:?}: {e}", s.trim());
        let wall = jiff::Timestamp::from_nanosecond(i128::from(wall)).map_err(out_of_range)?;
        let civil = jiff::tz::TimeZone::UTC.to_datetime(wall);
        let at = tz
            .to_ambiguous_timestamp(civil)
            .compatible()
            .map_err(out_of_range)?;
        i64::try_from(at.as_nanosecond()).map_err(|_| format!("{:?} is out of range", s.trim()))
    }
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
    fn a_cached_second_reads_as_a_fresh_parse() {
        let lines = [
            "2024-07-01T12:00:00.5Z",
            "2024-07-01T12:00:00.25+02:00",
            "2024-07-01T12:00:00.000000001-05:30",
            "2024-07-01T12:00:00Z",
            "2024-07-01T12:00:00.Z",
            "2024-07-01T12:00:00.1+24:00",
            "2024-07-01T12:00:01.1Z",
            "2016-12-31T23:59:60.5Z",
            "2016-12-31T23:59:60.5+01:00",
            "2016-12-31T23:59:60.5Z",
            "1969-12-31T23:59:59.9Z",
            "1969-12-31T23:59:59.9+00:01",
            "1700000000000000000",
        ];
        let mut cache = SecondCache::default();
        for line in lines {
            assert_eq!(parse_ns_with(line, &mut cache), parse_ns(line), "{line}");
        }
        // The cache holds the last good second, not the leap second or the integer.
        assert_eq!(&cache.text, b"1969-12-31T23:59:59");
    }

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
    fn integer_times_in_every_unit_and_naive_times_at_an_offset() {
        let t = 1_719_878_400_000_000_000;
        assert_eq!(parse_epoch("1719878400", TimeUnit::S).unwrap(), t);
        assert_eq!(
            parse_epoch("1719878400.25", TimeUnit::S).unwrap(),
            t + 250_000_000
        );
        assert_eq!(parse_epoch("1719878400000", TimeUnit::Ms).unwrap(), t);
        assert_eq!(
            parse_epoch("1719878400000001", TimeUnit::Us).unwrap(),
            t + 1_000
        );
        assert!(parse_epoch("1719878400x", TimeUnit::S).is_err());
        assert!(parse_epoch("9999999999999999999", TimeUnit::S).is_err());
        for (v, unit) in [
            (1_719_878_400, TimeUnit::S),
            (1_719_878_400_000, TimeUnit::Ms),
            (1_719_878_400_000_000, TimeUnit::Us),
            (t, TimeUnit::Ns),
        ] {
            assert_eq!(TimeUnit::guess(v), unit);
        }
        assert_eq!(parse_naive_ns("2024-07-01 19:00:00", -300).unwrap(), t);
        assert_eq!(
            parse_naive_ns("2024-07-02T00:00:00.5", 0).unwrap(),
            t + 500_000_000
        );
        assert_eq!(parse_naive_ns("20240701 190000000", -300).unwrap(), t);
        assert_eq!(
            parse_naive_ns("20240701 190000250", -300).unwrap(),
            t + 250_000_000
        );
        assert!(parse_naive_ns("2024-07-02", 0).is_err());
        assert_eq!(parse_offset("-05:00").unwrap(), -300);
        assert_eq!(parse_offset("-05").unwrap(), -300);
        assert_eq!(parse_offset("+0530").unwrap(), 330);
        assert_eq!(parse_offset("UTC").unwrap(), 0);
        assert!(parse_offset("America/New_York").is_err());
    }

    /// New York's daylight saving time: 2024-03-10 02:00 EST jumps to 03:00 EDT, and
    /// 2024-11-03 02:00 EDT falls back to 01:00 EST.
    #[test]
    fn a_zone_name_follows_daylight_saving_time_across_its_changes() {
        let ny = NaiveZone::parse("America/New_York").unwrap();
        let at = |s: &str| format_ns(ny.parse_ns(s).unwrap());
        // Spring: the last second of EST (UTC-5), then the first of EDT (UTC-4), one
        // second later in UTC.
        assert_eq!(at("2024-03-10 01:59:59"), "2024-03-10T06:59:59.000000000Z");
        assert_eq!(at("2024-03-10 03:00:00"), "2024-03-10T07:00:00.000000000Z");
        // A skipped wall time takes the offset from before the change.
        assert_eq!(at("2024-03-10 02:30:00"), "2024-03-10T07:30:00.000000000Z");
        // Autumn: 01:30 comes twice; the first (EDT) is taken. 02:00 is EST.
        assert_eq!(at("2024-11-03 00:59:59"), "2024-11-03T04:59:59.000000000Z");
        assert_eq!(at("2024-11-03 01:30:00"), "2024-11-03T05:30:00.000000000Z");
        assert_eq!(at("2024-11-03 02:00:00"), "2024-11-03T07:00:00.000000000Z");
        // Summer and winter, and HistData's form with milliseconds.
        assert_eq!(at("2024-07-01 20:00:00"), "2024-07-02T00:00:00.000000000Z");
        assert_eq!(at("20240102 190000250"), "2024-01-03T00:00:00.250000000Z");
        // Offsets still parse as offsets; nonsense is refused with both forms named.
        assert!(matches!(
            NaiveZone::parse("-05:00"),
            Ok(NaiveZone::Offset(-300))
        ));
        let e = NaiveZone::parse("Mars/Olympus").unwrap_err();
        assert!(
            e.contains("America/New_York") && e.contains("-05:00"),
            "{e}"
        );
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
