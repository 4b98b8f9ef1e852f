//! Time values as Keel reads and writes them: event times are milliseconds since the Unix epoch
//! (UTC, `i64`), written out as ISO-8601 with a `Z`; durations are written like `10s`, `500ms`,
//! `2m`, `1h` on the command line and in connector options.
//!
//! Invariant: `MIN_WATERMARK` and `MAX_WATERMARK` are the bottom and top of event time; a
//! watermark of `MAX_WATERMARK` means "no more input" and fires every window.

use std::time::Duration;

/// The watermark before any event was seen.
pub const MIN_WATERMARK: i64 = i64::MIN;
/// The watermark at the end of bounded input.
pub const MAX_WATERMARK: i64 = i64::MAX;

/// Errors from parsing durations.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration '{input}': {reason} (write it like 500ms, 10s, 2m or 1h)")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

/// Parses `500ms`, `10s`, `10 s`, `2m`, `2min`, `1h`, `1d`; a bare number is seconds.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    let err = |reason| DurationError { input: input.to_string(), reason };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(err("it does not start with a number"));
    }
    let n: u64 = num.parse().map_err(|_| err("the number is too large"))?;
    let ms_per = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return Err(err("unknown unit")),
    };
    n.checked_mul(ms_per).map(Duration::from_millis).ok_or_else(|| err("the number is too large"))
}

/// Writes epoch milliseconds as ISO-8601 in UTC with millisecond precision: `2024-01-01T00:00:10.000Z`.
pub fn format_timestamp_ms(ms: i64) -> String {
    let mut s = String::with_capacity(24);
    write_timestamp_ms(ms, &mut s);
    s
}

/// Appends the ISO-8601 form of `ms` to `out` (see `format_timestamp_ms`). Years outside
/// 0000–9999 are written with chrono; the common case is formatted directly (it is on the hot
/// path of every sink).
pub fn write_timestamp_ms(ms: i64, out: &mut String) {
    use std::fmt::Write;
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        match chrono::DateTime::from_timestamp_millis(ms) {
            Some(t) => {
                let _ = write!(out, "{}", t.format("%Y-%m-%dT%H:%M:%S%.3fZ"));
            }
            // Outside chrono's range (about ±262,000 years): write the raw number rather than lie.
            None => {
                let _ = write!(out, "{ms}");
            }
        }
        return;
    }
    let (h, mi, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, v: i64, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y, 4);
    put(5, m, 2);
    put(8, d, 2);
    put(11, h, 2);
    put(14, mi, 2);
    put(17, s, 2);
    put(20, milli, 3);
    out.push_str(std::str::from_utf8(&b).unwrap_or_default());
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic Gregorian; Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A watermark for display: `-inf`, `+inf` or ISO-8601.
pub fn format_watermark(wm: i64) -> String {
    match wm {
        MIN_WATERMARK => "-inf".to_string(),
        MAX_WATERMARK => "+inf".to_string(),
        t => format_timestamp_ms(t),
    }
}

/// Milliseconds since the epoch, now, by the wall clock.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10 s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("ten").unwrap_err().reason, "it does not start with a number");
        assert_eq!(parse_duration("10 parsecs").unwrap_err().reason, "unknown unit");
    }

    #[test]
    fn timestamps_are_iso_utc() {
        assert_eq!(format_timestamp_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_timestamp_ms(1_704_067_210_123), "2024-01-01T00:00:10.123Z");
        assert_eq!(format_timestamp_ms(-1), "1969-12-31T23:59:59.999Z");
        // The direct formatter agrees with chrono across leap years, centuries and negatives.
        let mut ms = -62_167_219_200_000i64; // 0000-01-01
        while ms < 253_402_300_799_999 {
            let expected =
                chrono::DateTime::from_timestamp_millis(ms).unwrap().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            assert_eq!(format_timestamp_ms(ms), expected, "{ms}");
            ms += 86_399_999 * 37 + 12_345;
        }
        assert_eq!(format_timestamp_ms(253_402_300_800_000), "+10000-01-01T00:00:00.000Z");
    }
}
