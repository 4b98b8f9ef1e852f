//! Flink's `DATE_FORMAT(timestamp | string, pattern)`: a Java `DateTimeFormatter` pattern,
//! translated once into a list of [`Item`]s and applied to each row in UTC.
//!
//! Invariants: a pattern is compiled once per distinct string (a bounded per-function cache);
//! a pattern that is a literal is checked when the query is planned, so a bad pattern letter
//! never reaches a running job; formatting a row allocates nothing beyond the output builder.
//! A string argument is read as Flink reads it (`yyyy-MM-dd HH:mm:ss` at its start, anything after
//! ignored); one that does not parse gives NULL, as does a NULL argument.

use super::{DAY_MS, ts_ms_type};
use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::{DataType, TimestampMillisecondType};
use chrono::{Datelike, NaiveDate};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The numeric fields a pattern letter prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Year,
    Month,
    Day,
    DayOfYear,
    /// `H`: 0–23.
    Hour,
    /// `h`: 1–12.
    ClockHourOfHalf,
    /// `k`: 1–24.
    ClockHourOfDay,
    /// `K`: 0–11.
    HourOfHalf,
    Minute,
    Second,
}

/// One piece of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Literal(String),
    /// A number, zero-padded to at least `width` digits.
    Number(Num, u8),
    /// `yy`: the last two digits of the year.
    Year2,
    /// `S`…`SSSSSSSSS`: the fraction of the second, truncated to this many digits.
    Fraction(u8),
    /// `MMM` (`false`) or `MMMM` (`true`).
    MonthName(bool),
    /// `E`…`EEE` (`false`) or `EEEE` (`true`).
    DayName(bool),
    /// `a`: AM or PM.
    AmPm,
}

/// A compiled pattern.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Pattern {
    items: Vec<Item>,
    /// Whether any item needs the calendar date (not only the time of day).
    needs_date: bool,
    /// The pattern's text is the same for every instant of one epoch-aligned stretch of this many
    /// milliseconds (its finest field's unit: a day for a date, a minute for `HH:mm`), so that
    /// consecutive rows of one stretch are formatted once.
    step_ms: i64,
}

impl Item {
    /// The unit of the finest field this item prints, in milliseconds.
    fn unit_ms(&self) -> i64 {
        match self {
            Item::Fraction(_) => 1,
            Item::Number(Num::Second, _) => 1_000,
            Item::Number(Num::Minute, _) => 60_000,
            Item::Number(Num::Hour | Num::ClockHourOfHalf | Num::ClockHourOfDay | Num::HourOfHalf, _) | Item::AmPm => {
                3_600_000
            }
            Item::Literal(_)
            | Item::Year2
            | Item::MonthName(_)
            | Item::DayName(_)
            | Item::Number(Num::Year | Num::Month | Num::Day | Num::DayOfYear, _) => DAY_MS,
        }
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
/// Monday first, as chrono numbers weekdays.
const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// Translates a `DateTimeFormatter` pattern, or says which letter or construct it cannot take.
pub(crate) fn compile(pattern: &str) -> std::result::Result<Pattern, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut items: Vec<Item> = vec![];
    let literal = |items: &mut Vec<Item>, c: char| match items.last_mut() {
        Some(Item::Literal(s)) => s.push(c),
        _ => items.push(Item::Literal(c.to_string())),
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // '' is a quote; 'text' is text, with '' inside it a quote.
            if chars.get(i + 1) == Some(&'\'') {
                literal(&mut items, '\'');
                i += 2;
                continue;
            }
            let mut j = i + 1;
            loop {
                match chars.get(j) {
                    None => return Err(format!("the quote at position {} is not closed", i + 1)),
                    Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                        literal(&mut items, '\'');
                        j += 2;
                    }
                    Some('\'') => break,
                    Some(&x) => {
                        literal(&mut items, x);
                        j += 1;
                    }
                }
            }
            i = j + 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            match c {
                '[' | ']' => return Err("optional sections ('[' and ']') are not supported".into()),
                '{' | '}' | '#' => return Err(format!("'{c}' is reserved in patterns; quote it: '{c}'")),
                _ => literal(&mut items, c),
            }
            i += 1;
            continue;
        }
        let mut n = 1;
        while chars.get(i + n) == Some(&c) {
            n += 1;
        }
        let too_many = || format!("too many pattern letters: {}", c.to_string().repeat(n));
        let width = |max: usize| if n > max { Err(too_many()) } else { Ok(n as u8) };
        let item = match c {
            'y' if n == 2 => Item::Year2,
            'y' => Item::Number(Num::Year, width(9)?),
            'M' if n <= 2 => Item::Number(Num::Month, n as u8),
            'M' if n <= 4 => Item::MonthName(n == 4),
            'd' => Item::Number(Num::Day, width(2)?),
            'D' => Item::Number(Num::DayOfYear, width(3)?),
            'H' => Item::Number(Num::Hour, width(2)?),
            'h' => Item::Number(Num::ClockHourOfHalf, width(2)?),
            'k' => Item::Number(Num::ClockHourOfDay, width(2)?),
            'K' => Item::Number(Num::HourOfHalf, width(2)?),
            'm' => Item::Number(Num::Minute, width(2)?),
            's' => Item::Number(Num::Second, width(2)?),
            'S' => Item::Fraction(width(9)?),
            'a' if n == 1 => Item::AmPm,
            'E' if n <= 4 => Item::DayName(n == 4),
            'M' | 'a' | 'E' => return Err(too_many()),
            other => {
                return Err(format!(
                    "pattern letter '{other}' is not supported (Keel formats y, M, d, D, H, h, k, K, m, s, S, a and E; quote literal text: 'T')"
                ));
            }
        };
        items.push(item);
        i += n;
    }
    let needs_date = items.iter().any(|it| {
        matches!(
            it,
            Item::Year2
                | Item::MonthName(_)
                | Item::DayName(_)
                | Item::Number(Num::Year | Num::Month | Num::Day | Num::DayOfYear, _)
        )
    });
    let step_ms = items.iter().map(Item::unit_ms).min().unwrap_or(DAY_MS);
    Ok(Pattern { items, needs_date, step_ms })
}

/// Appends `v` zero-padded to `width` digits (a sign first when negative).
fn push_num(out: &mut String, v: i64, width: u8) {
    if v < 0 {
        out.push('-');
    }
    let mut digits = [0u8; 20];
    let mut n = 0;
    let mut x = v.unsigned_abs();
    loop {
        digits[n] = b'0' + (x % 10) as u8;
        n += 1;
        x /= 10;
        if x == 0 {
            break;
        }
    }
    for _ in n..width as usize {
        out.push('0');
    }
    for d in digits[..n].iter().rev() {
        out.push(*d as char);
    }
}

impl Pattern {
    /// Formats epoch milliseconds (UTC) into `out`; false when the date is out of range.
    fn format(&self, ms: i64, out: &mut String) -> bool {
        let day_ms = ms.rem_euclid(DAY_MS);
        let date = if self.needs_date {
            // Days from 0001-01-01 (day 1 of the common era) to 1970-01-01: 719_163.
            match i32::try_from(ms.div_euclid(DAY_MS) + 719_163).ok().and_then(NaiveDate::from_num_days_from_ce_opt) {
                Some(d) => Some(d),
                None => return false,
            }
        } else {
            None
        };
        let hour = day_ms / 3_600_000;
        for item in &self.items {
            match item {
                Item::Literal(s) => out.push_str(s),
                Item::Number(field, width) => {
                    let v = match (field, &date) {
                        (Num::Year, Some(d)) => d.year() as i64,
                        (Num::Month, Some(d)) => d.month() as i64,
                        (Num::Day, Some(d)) => d.day() as i64,
                        (Num::DayOfYear, Some(d)) => d.ordinal() as i64,
                        (Num::Hour, _) => hour,
                        (Num::ClockHourOfHalf, _) => (hour + 11) % 12 + 1,
                        (Num::ClockHourOfDay, _) => (hour + 23) % 24 + 1,
                        (Num::HourOfHalf, _) => hour % 12,
                        (Num::Minute, _) => day_ms / 60_000 % 60,
                        (Num::Second, _) => day_ms / 1000 % 60,
                        // needs_date is set for every date field, so the date is there.
                        (_, None) => 0,
                    };
                    push_num(out, v, *width);
                }
                Item::Year2 => push_num(out, date.map_or(0, |d| d.year() as i64).rem_euclid(100), 2),
                Item::Fraction(n) => {
                    // Milliseconds are the finest unit a TIMESTAMP(3) has: digits past 3 are 0.
                    let millis = day_ms % 1000;
                    let shown = (*n).min(3);
                    push_num(out, millis / 10i64.pow(3 - shown as u32), shown);
                    for _ in shown..*n {
                        out.push('0');
                    }
                }
                Item::MonthName(full) => {
                    let name = MONTHS[date.map_or(0, |d| d.month0() as usize)];
                    out.push_str(if *full { name } else { &name[..3] });
                }
                Item::DayName(full) => {
                    let name = DAYS[date.map_or(0, |d| d.weekday().num_days_from_monday() as usize)];
                    out.push_str(if *full { name } else { &name[..3] });
                }
                Item::AmPm => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            }
        }
        true
    }
}

/// Reads a string as Flink's `DATE_FORMAT(string, ...)` does: `yyyy-MM-dd HH:mm:ss` (fields of
/// one or more digits) at the start, the rest ignored; `None` when it does not parse.
pub(crate) fn parse_default_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let mut pos = 0;
    let mut fields = [0i64; 6];
    for (k, sep) in [b'-', b'-', b' ', b':', b':', 0].into_iter().enumerate() {
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() && pos - start < 9 {
            fields[k] = fields[k] * 10 + (b[pos] - b'0') as i64;
            pos += 1;
        }
        if pos == start {
            return None;
        }
        if sep != 0 {
            if b.get(pos) != Some(&sep) {
                return None;
            }
            pos += 1;
        }
    }
    let [y, mo, d, h, mi, sec] = fields;
    let date = NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, u32::try_from(mo).ok()?, u32::try_from(d).ok()?)?;
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let days = date.num_days_from_ce() as i64 - 719_163;
    Some(days * DAY_MS + (h * 3600 + mi * 60 + sec) * 1000)
}

/// The `DATE_FORMAT` function, with its cache of compiled patterns.
#[derive(Debug)]
pub(crate) struct DateFormat {
    signature: Signature,
    aliases: Vec<String>,
    cache: Mutex<HashMap<String, Arc<Pattern>>>,
}

/// Distinct patterns kept compiled; past this the cache starts over.
const CACHE_LIMIT: usize = 64;

impl DateFormat {
    pub(crate) fn new() -> Self {
        DateFormat {
            signature: Signature::user_defined(Volatility::Immutable),
            aliases: vec!["DATE_FORMAT".into()],
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn pattern(&self, text: &str) -> Result<Arc<Pattern>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(text) {
            return Ok(p.clone());
        }
        let p = match compile(text) {
            Ok(p) => Arc::new(p),
            Err(e) => return exec_err!("DATE_FORMAT: pattern '{text}': {e}"),
        };
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(text.to_string(), p.clone());
        Ok(p)
    }
}

impl PartialEq for DateFormat {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}
impl Eq for DateFormat {}
impl std::hash::Hash for DateFormat {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "date_format".hash(state)
    }
}

impl ScalarUDFImpl for DateFormat {
    fn name(&self) -> &str {
        "date_format"
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let [value, pattern] = args else {
            return plan_err!("DATE_FORMAT takes (timestamp or string, pattern), got {} argument(s)", args.len());
        };
        let value = match value {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
            t if super::is_time(t) => ts_ms_type(),
            t => return plan_err!("DATE_FORMAT: the first argument must be a TIMESTAMP, DATE or string, not {t}"),
        };
        if !matches!(pattern, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null) {
            return plan_err!("DATE_FORMAT: the pattern must be a string, not {pattern}");
        }
        Ok(vec![value, DataType::Utf8])
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<arrow::datatypes::FieldRef> {
        // A literal pattern is checked now, so a bad one is refused before the job starts.
        if let Some(Some(ScalarValue::Utf8(Some(p)) | ScalarValue::LargeUtf8(Some(p)) | ScalarValue::Utf8View(Some(p)))) =
            args.scalar_arguments.get(1)
            && let Err(e) = compile(p)
        {
            return plan_err!("DATE_FORMAT: pattern '{p}': {e}");
        }
        Ok(Arc::new(arrow::datatypes::Field::new(self.name(), DataType::Utf8, true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [value, pattern] = args.args.as_slice() else {
            return exec_err!("DATE_FORMAT takes two arguments");
        };
        let all_scalar = matches!((value, pattern), (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)));
        let rows = if all_scalar { 1 } else { n };
        let fixed = match pattern {
            ColumnarValue::Scalar(v) => match v.try_as_str() {
                Some(Some(p)) => Some(self.pattern(p)?),
                Some(None) => return super::null_result(DataType::Utf8, all_scalar, rows),
                None if v.is_null() => return super::null_result(DataType::Utf8, all_scalar, rows),
                None => return exec_err!("DATE_FORMAT: the pattern must be a string, not {v:?}"),
            },
            ColumnarValue::Array(_) => None,
        };
        let values: ArrayRef = value.clone().into_array(rows)?;
        let patterns = match (&fixed, pattern) {
            (None, p) => Some(p.clone().into_array(rows)?),
            _ => None,
        };
        let pattern_strings = patterns.as_ref().and_then(|p| p.as_string_opt::<i32>());
        let timestamps = values.as_primitive_opt::<TimestampMillisecondType>();
        let strings = values.as_string_opt::<i32>();
        let mut out = StringBuilder::with_capacity(rows, rows * 16);
        let mut buf = String::with_capacity(64);
        // The stretch (`Pattern::step_ms`) whose text `buf` holds, for the current pattern.
        let mut formatted: Option<i64> = None;
        // A pattern per row: the last one compiled, and the row it came from.
        let mut last: Option<(usize, Arc<Pattern>)> = None;
        for i in 0..rows {
            if let Some(ps) = pattern_strings {
                if ps.is_null(i) {
                    out.append_null();
                    continue;
                }
                if last.as_ref().is_none_or(|(j, _)| ps.value(*j) != ps.value(i)) {
                    last = Some((i, self.pattern(ps.value(i))?));
                    formatted = None;
                }
            }
            let p: &Pattern = match (&fixed, &last) {
                (Some(p), _) | (None, Some((_, p))) => p,
                // Invariant: without a fixed pattern, `last` was set above (or the row skipped).
                (None, None) => return exec_err!("DATE_FORMAT: the pattern column is not a string column"),
            };
            let ms = match (timestamps, strings) {
                (Some(t), _) => t.is_valid(i).then(|| t.value(i)),
                (None, Some(s)) => s.is_valid(i).then(|| parse_default_timestamp(s.value(i))).flatten(),
                // coerce_types makes the value a TIMESTAMP(3) or a string; anything else is NULL.
                (None, None) => None,
            };
            let Some(ms) = ms else {
                out.append_null();
                continue;
            };
            let stretch = ms.div_euclid(p.step_ms);
            if formatted != Some(stretch) {
                buf.clear();
                formatted = p.format(ms, &mut buf).then_some(stretch);
            }
            if formatted.is_some() { out.append_value(&buf) } else { out.append_null() }
        }
        super::done(Arc::new(out.finish()), all_scalar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(pattern: &str, ms: i64) -> String {
        let mut s = String::new();
        assert!(compile(pattern).unwrap().format(ms, &mut s));
        s
    }

    /// 2024-03-01T13:04:05.067Z, a Friday, day 61 of a leap year.
    const T: i64 = 1_709_298_245_067;

    #[test]
    fn formats_the_common_patterns() {
        assert_eq!(fmt("yyyy-MM-dd", T), "2024-03-01");
        assert_eq!(fmt("HH:mm", T), "13:04");
        assert_eq!(fmt("yyyy-MM-dd HH:mm:ss.SSS", T), "2024-03-01 13:04:05.067");
        assert_eq!(fmt("yy/M/d H:m:s", T), "24/3/1 13:4:5");
        assert_eq!(fmt("hh:mm a", T), "01:04 PM");
        assert_eq!(fmt("h a, K k", 0), "12 AM, 0 24");
        assert_eq!(fmt("E EEE EEEE", T), "Fri Fri Friday");
        assert_eq!(fmt("MMM MMMM D DDD", T), "Mar March 61 061");
        assert_eq!(fmt("S SS SSSS", T), "0 06 0670");
        assert_eq!(fmt("y", T), "2024");
    }

    #[test]
    fn quotes_and_literals() {
        assert_eq!(fmt("yyyy-MM-dd'T'HH:mm:ss'Z'", T), "2024-03-01T13:04:05Z");
        assert_eq!(fmt("'o''clock' HH", T), "o'clock 13");
        assert_eq!(fmt("HH''mm", T), "13'04");
        assert_eq!(fmt("'at' yyyy", T), "at 2024");
        assert_eq!(fmt("", T), "");
    }

    #[test]
    fn before_the_epoch_and_at_day_boundaries() {
        assert_eq!(fmt("yyyy-MM-dd HH:mm:ss.SSS E", -1), "1969-12-31 23:59:59.999 Wed");
        assert_eq!(fmt("yyyy-MM-dd HH:mm", 86_400_000), "1970-01-02 00:00");
    }

    #[test]
    fn refuses_what_it_cannot_format() {
        for (p, word) in [
            ("yyyy-MM-dd Z", "'Z'"),
            ("u", "'u'"),
            ("ww", "'w'"),
            ("ddd", "dd"),
            ("aa", "aa"),
            ("MMMMM", "MMMMM"),
            ("yyyy-MM-dd 'T", "not closed"),
            ("[HH]", "optional"),
            ("#", "reserved"),
        ] {
            let e = compile(p).unwrap_err();
            assert!(e.contains(word), "{p}: {e}");
        }
    }

    #[test]
    fn reads_strings_like_flink() {
        assert_eq!(parse_default_timestamp("2024-03-01 13:04:05"), Some(T - 67));
        assert_eq!(parse_default_timestamp("2024-03-01 13:04:05.067"), Some(T - 67), "the fraction is ignored");
        assert_eq!(parse_default_timestamp("2024-3-1 13:4:5"), Some(T - 67));
        assert_eq!(parse_default_timestamp("2024-03-01"), None);
        assert_eq!(parse_default_timestamp("2024-03-01T13:04:05"), None);
        assert_eq!(parse_default_timestamp("2024-02-30 00:00:00"), None);
        assert_eq!(parse_default_timestamp("2024-01-01 24:00:00"), None);
    }

    fn invoke(value: ColumnarValue, pattern: ColumnarValue, rows: usize) -> Result<ColumnarValue> {
        let f = DateFormat::new();
        let fields = vec![
            Arc::new(arrow::datatypes::Field::new("v", value.data_type(), true)),
            Arc::new(arrow::datatypes::Field::new("p", DataType::Utf8, true)),
        ];
        f.invoke_with_args(ScalarFunctionArgs {
            args: vec![value, pattern],
            arg_fields: fields,
            number_rows: rows,
            return_field: Arc::new(arrow::datatypes::Field::new("f", DataType::Utf8, true)),
            config_options: Default::default(),
        })
    }

    #[test]
    fn rows_of_one_stretch_format_as_each_row_alone() {
        let mut rng = keel_types::test_rng::Lcg::seeded("rows_of_one_stretch_format_as_each_row_alone");
        let seed = rng.seed();
        let mut next = move |n: u64| rng.below(n);
        // Runs of nearby instants (many in one second, minute, hour or day; some crossing a
        // boundary), before and after the epoch, with NULLs among them.
        let mut ms = T - 400 * DAY_MS;
        let mut values = vec![];
        for _ in 0..3000 {
            let jump = [0, 1, 999, 59_000, 3_599_000, DAY_MS - 1][next(6) as usize];
            ms += jump * next(2) as i64 + next(3) as i64;
            if next(500) == 0 {
                ms = -ms;
            }
            values.push((next(20) > 0).then_some(ms));
        }
        let ts: ArrayRef = Arc::new(arrow::array::TimestampMillisecondArray::from(values.clone()));
        for pattern in ["yyyy-MM-dd", "HH:mm", "HH:mm:ss.SSS", "EEEE h a", "yy MMM D", "'at' k:mm:ss"] {
            let p = ColumnarValue::Scalar(ScalarValue::Utf8(Some(pattern.into())));
            let out =
                invoke(ColumnarValue::Array(ts.clone()), p, values.len()).unwrap().into_array(values.len()).unwrap();
            let out = out.as_string::<i32>();
            for (i, v) in values.iter().enumerate() {
                match v {
                    Some(ms) => assert_eq!(out.value(i), fmt(pattern, *ms), "{pattern} at {ms} (seed {seed})"),
                    None => assert!(out.is_null(i), "{pattern} row {i} (seed {seed})"),
                }
            }
        }
    }

    #[test]
    fn columns_nulls_and_a_pattern_per_row() {
        let ts: ArrayRef = Arc::new(arrow::array::TimestampMillisecondArray::from(vec![Some(T), None, Some(0)]));
        let pat = ColumnarValue::Scalar(ScalarValue::Utf8(Some("yyyy-MM-dd".into())));
        let out = invoke(ColumnarValue::Array(ts.clone()), pat, 3).unwrap().into_array(3).unwrap();
        let out = out.as_string::<i32>();
        assert_eq!((out.value(0), out.is_null(1), out.value(2)), ("2024-03-01", true, "1970-01-01"));

        let pats: ArrayRef = Arc::new(arrow::array::StringArray::from(vec![Some("HH:mm"), Some("HH:mm"), None]));
        let out = invoke(ColumnarValue::Array(ts), ColumnarValue::Array(pats), 3).unwrap().into_array(3).unwrap();
        let out = out.as_string::<i32>();
        assert_eq!((out.value(0), out.is_null(1), out.is_null(2)), ("13:04", true, true));

        let strings: ArrayRef = Arc::new(arrow::array::StringArray::from(vec!["2024-03-01 13:04:05", "bad", "x"]));
        let pat = ColumnarValue::Scalar(ScalarValue::Utf8(Some("HH:mm:ss".into())));
        let out = invoke(ColumnarValue::Array(strings), pat, 3).unwrap().into_array(3).unwrap();
        let out = out.as_string::<i32>();
        assert_eq!((out.value(0), out.is_null(1)), ("13:04:05", true));

        let null_pattern = invoke(
            ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(Some(T), None)),
            ColumnarValue::Scalar(ScalarValue::Utf8(None)),
            1,
        )
        .unwrap();
        assert!(matches!(null_pattern, ColumnarValue::Scalar(ScalarValue::Utf8(None))));

        let e = invoke(
            ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(Some(T), None)),
            ColumnarValue::Scalar(ScalarValue::Utf8(Some("yyyy-ww".into()))),
            1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("pattern letter 'w'"), "{e}");
    }
}
