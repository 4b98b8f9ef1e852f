//! Flink's time functions that DataFusion lacks or gives other semantics, as DataFusion scalar
//! functions registered by `scalar::flink_scalars()`: `DATE_FORMAT` (in `date_format`),
//! `TO_TIMESTAMP_LTZ(epoch[, 0 | 3])`, `TIMESTAMPADD(unit, n, t)`, `TIMESTAMPDIFF(unit, a, b)`,
//! `YEAR`, `QUARTER`, `MONTH`, `WEEK`, `DAYOFYEAR`, `DAYOFMONTH`, `DAYOFWEEK`, `HOUR`, `MINUTE`,
//! `SECOND`, and the targets of the `FLOOR`/`CEIL(t TO unit)` rewrite (in `syntax`).
//!
//! Invariants: time is UTC; every time argument is coerced to TIMESTAMP(3) (Arrow
//! `Timestamp(Millisecond, None)`, a DATE being its midnight), so the bodies read epoch
//! milliseconds only; a NULL argument gives NULL; a unit or precision that is a literal is checked
//! when the query is planned. Results follow Flink: parts are BIGINT, `DAYOFWEEK` counts from
//! Sunday = 1, `WEEK` is the ISO week, `TIMESTAMPDIFF` is an INT truncated toward zero (NULL if it
//! does not fit), month arithmetic keeps the day of month or clamps it to the month's last day,
//! and a week starts on Sunday for `FLOOR`/`CEIL`.

mod date_format;
mod syntax;

pub(crate) use syntax::rewrite_time_syntax;

use arrow::array::{Array, ArrayRef, AsArray, Int32Array, Int64Array, TimestampMillisecondArray, new_null_array};
use arrow::datatypes::{
    DataType, Field, FieldRef, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMillisecondType,
};
use chrono::{Datelike, Months, NaiveDate};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use std::sync::Arc;

pub(crate) const DAY_MS: i64 = 86_400_000;
/// Days from 0001-01-01 (chrono's day 1 of the common era) to 1970-01-01.
const EPOCH_DAYS_FROM_CE: i64 = 719_163;
/// The function the `FLOOR(t TO WEEK)` rewrite calls (other units become `date_trunc`).
pub(crate) const FLOOR_FN: &str = "keel_floor_time";
/// The function the `CEIL(t TO unit)` rewrite calls.
pub(crate) const CEIL_FN: &str = "keel_ceil_time";

/// TIMESTAMP(3): what every time argument is coerced to.
pub(crate) fn ts_ms_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// Whether a type is taken as a time argument (coerced to TIMESTAMP(3)).
pub(crate) fn is_time(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 | DataType::Null)
}

/// The time functions to register.
pub(crate) fn time_scalars() -> Vec<ScalarUDF> {
    let fns: [(&str, Kind); 15] = [
        ("year", Kind::Part(Part::Year)),
        ("quarter", Kind::Part(Part::Quarter)),
        ("month", Kind::Part(Part::Month)),
        ("week", Kind::Part(Part::Week)),
        ("dayofyear", Kind::Part(Part::DayOfYear)),
        ("dayofmonth", Kind::Part(Part::DayOfMonth)),
        ("dayofweek", Kind::Part(Part::DayOfWeek)),
        ("hour", Kind::Part(Part::Hour)),
        ("minute", Kind::Part(Part::Minute)),
        ("second", Kind::Part(Part::Second)),
        ("to_timestamp_ltz", Kind::ToTimestampLtz),
        ("timestampadd", Kind::TimestampAdd),
        ("timestampdiff", Kind::TimestampDiff),
        (FLOOR_FN, Kind::Floor),
        (CEIL_FN, Kind::Ceil),
    ];
    let mut out = vec![ScalarUDF::from(date_format::DateFormat::new())];
    for (name, kind) in fns {
        out.push(ScalarUDF::from(TimeFn {
            name: name.to_string(),
            aliases: vec![name.to_uppercase()],
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        }));
    }
    out
}

/// A unit of `TIMESTAMPADD`, `TIMESTAMPDIFF`, `FLOOR` and `CEIL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

/// The units, for messages.
pub(crate) const UNIT_NAMES: &str = "SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, QUARTER or YEAR";

impl Unit {
    pub(crate) fn parse(s: &str) -> Option<Unit> {
        Some(match s.to_ascii_uppercase().as_str() {
            "SECOND" => Unit::Second,
            "MINUTE" => Unit::Minute,
            "HOUR" => Unit::Hour,
            "DAY" => Unit::Day,
            "WEEK" => Unit::Week,
            "MONTH" => Unit::Month,
            "QUARTER" => Unit::Quarter,
            "YEAR" => Unit::Year,
            _ => return None,
        })
    }

    /// Milliseconds in one unit, for the units of fixed length.
    fn fixed_ms(self) -> Option<i64> {
        match self {
            Unit::Second => Some(1000),
            Unit::Minute => Some(60_000),
            Unit::Hour => Some(3_600_000),
            Unit::Day => Some(DAY_MS),
            Unit::Week => Some(7 * DAY_MS),
            Unit::Month | Unit::Quarter | Unit::Year => None,
        }
    }

    /// Months in one unit, for the calendar units.
    fn months(self) -> i64 {
        match self {
            Unit::Quarter => 3,
            Unit::Year => 12,
            _ => 1,
        }
    }
}

fn date_of(ms: i64) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(i32::try_from(ms.div_euclid(DAY_MS) + EPOCH_DAYS_FROM_CE).ok()?)
}

fn ms_of(date: NaiveDate) -> i64 {
    (date.num_days_from_ce() as i64 - EPOCH_DAYS_FROM_CE) * DAY_MS
}

/// `ms` plus `months` months, the day of month clamped to the target month's last day.
fn add_months(ms: i64, months: i64) -> Option<i64> {
    let date = date_of(ms)?;
    let m = Months::new(u32::try_from(months.unsigned_abs()).ok()?);
    let moved = if months >= 0 { date.checked_add_months(m) } else { date.checked_sub_months(m) }?;
    ms_of(moved).checked_add(ms.rem_euclid(DAY_MS))
}

/// The start of the unit containing `ms`.
pub(crate) fn floor(ms: i64, unit: Unit) -> Option<i64> {
    match unit {
        Unit::Week => {
            let days = ms.div_euclid(DAY_MS);
            // 1970-01-01 was a Thursday: 4 days after a Sunday.
            Some((days - (days + 4).rem_euclid(7)) * DAY_MS)
        }
        Unit::Second | Unit::Minute | Unit::Hour | Unit::Day => {
            let step = unit.fixed_ms()?;
            Some(ms - ms.rem_euclid(step))
        }
        Unit::Month | Unit::Quarter | Unit::Year => {
            let d = date_of(ms)?;
            let month = match unit {
                Unit::Month => d.month(),
                Unit::Quarter => (d.month0() / 3) * 3 + 1,
                _ => 1,
            };
            NaiveDate::from_ymd_opt(d.year(), month, 1).map(ms_of)
        }
    }
}

/// `ms` itself when it starts a unit, else the start of the next unit.
pub(crate) fn ceil(ms: i64, unit: Unit) -> Option<i64> {
    let f = floor(ms, unit)?;
    if f == ms { Some(ms) } else { add(f, unit, 1) }
}

/// `ms` plus `n` units.
pub(crate) fn add(ms: i64, unit: Unit, n: i64) -> Option<i64> {
    match unit.fixed_ms() {
        Some(step) => ms.checked_add(n.checked_mul(step)?),
        None => add_months(ms, n.checked_mul(unit.months())?),
    }
}

/// Whole months from `a` to `b` (negative when `b` is before `a`).
fn months_between(a: i64, b: i64) -> Option<i64> {
    if b < a {
        return months_between(b, a).map(|m| -m);
    }
    let (da, db) = (date_of(a)?, date_of(b)?);
    let m = (db.year() as i64 - da.year() as i64) * 12 + db.month() as i64 - da.month() as i64;
    // `a` moved by m months lands in b's month: one month less if that passes b.
    Some(if add_months(a, m)? > b { m - 1 } else { m })
}

/// Whole units from `a` to `b`, truncated toward zero.
pub(crate) fn diff(unit: Unit, a: i64, b: i64) -> Option<i64> {
    match unit.fixed_ms() {
        Some(step) => Some(b.checked_sub(a)? / step),
        None => Some(months_between(a, b)? / unit.months()),
    }
}

/// A field of a time, as Flink's `EXTRACT` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    Year,
    Quarter,
    Month,
    Week,
    DayOfYear,
    DayOfMonth,
    DayOfWeek,
    Hour,
    Minute,
    Second,
}

fn part(ms: i64, p: Part) -> Option<i64> {
    let day_ms = ms.rem_euclid(DAY_MS);
    let v = match p {
        Part::Hour => day_ms / 3_600_000,
        Part::Minute => day_ms / 60_000 % 60,
        Part::Second => day_ms / 1000 % 60,
        _ => {
            let d = date_of(ms)?;
            (match p {
                Part::Year => d.year(),
                Part::Quarter => d.month0() as i32 / 3 + 1,
                Part::Month => d.month() as i32,
                Part::Week => d.iso_week().week() as i32,
                Part::DayOfYear => d.ordinal() as i32,
                Part::DayOfMonth => d.day() as i32,
                _ => d.weekday().num_days_from_sunday() as i32 + 1,
            }) as i64
        }
    };
    Some(v)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Part(Part),
    ToTimestampLtz,
    TimestampAdd,
    TimestampDiff,
    Floor,
    Ceil,
}

/// One of the time functions other than `DATE_FORMAT`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TimeFn {
    name: String,
    aliases: Vec<String>,
    kind: Kind,
    signature: Signature,
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null)
}

fn is_int(t: &DataType) -> bool {
    t.is_integer() || *t == DataType::Null
}

impl TimeFn {
    fn usage(&self) -> &'static str {
        match self.kind {
            Kind::Part(_) => "(timestamp or date)",
            Kind::ToTimestampLtz => "(numeric epoch [, precision 0 or 3])",
            Kind::TimestampAdd => "(unit, integer, timestamp)",
            Kind::TimestampDiff => "(unit, timestamp, timestamp)",
            Kind::Floor | Kind::Ceil => "('unit', timestamp)",
        }
    }

    /// The argument types to coerce to, `None` when `args` do not fit.
    fn coerced(&self, args: &[DataType]) -> Option<Vec<DataType>> {
        let ts = ts_ms_type();
        let time = |t: &DataType| is_time(t).then(|| ts.clone());
        let unit = |t: &DataType| is_string(t).then_some(DataType::Utf8);
        match (self.kind, args) {
            (Kind::Part(_), [t]) => Some(vec![time(t)?]),
            (Kind::ToTimestampLtz, [v, rest @ ..]) if rest.len() <= 1 => {
                let v = if is_int(v) {
                    DataType::Int64
                } else if v.is_floating() || v.is_numeric() {
                    DataType::Float64
                } else {
                    return None;
                };
                let mut out = vec![v];
                for p in rest {
                    out.push(is_int(p).then_some(DataType::Int32)?);
                }
                Some(out)
            }
            (Kind::TimestampAdd, [u, n, t]) => Some(vec![unit(u)?, is_int(n).then_some(DataType::Int64)?, time(t)?]),
            (Kind::TimestampDiff, [u, a, b]) => Some(vec![unit(u)?, time(a)?, time(b)?]),
            (Kind::Floor | Kind::Ceil, [u, t]) => Some(vec![unit(u)?, time(t)?]),
            _ => None,
        }
    }

    fn output(&self) -> DataType {
        match self.kind {
            Kind::Part(_) => DataType::Int64,
            Kind::TimestampDiff => DataType::Int32,
            Kind::ToTimestampLtz | Kind::TimestampAdd | Kind::Floor | Kind::Ceil => ts_ms_type(),
        }
    }
}

/// The unit argument: one for the whole batch (`None` when NULL), or one per row.
enum Units {
    Fixed(Option<Unit>),
    PerRow(ArrayRef),
}

fn parse_unit(name: &str, s: &str) -> Result<Unit> {
    match Unit::parse(s) {
        Some(u) => Ok(u),
        None => exec_err!("{}: unknown time unit '{s}' (use {UNIT_NAMES})", name.to_uppercase()),
    }
}

impl Units {
    fn new(name: &str, arg: &ColumnarValue) -> Result<Units> {
        Ok(match arg {
            ColumnarValue::Scalar(v) => match v.try_as_str() {
                Some(Some(s)) => Units::Fixed(Some(parse_unit(name, s)?)),
                Some(None) => Units::Fixed(None),
                None if v.is_null() => Units::Fixed(None),
                None => return exec_err!("{}: the unit must be a string, not {v:?}", name.to_uppercase()),
            },
            ColumnarValue::Array(a) if a.as_string_opt::<i32>().is_some() => Units::PerRow(a.clone()),
            ColumnarValue::Array(a) => {
                return exec_err!("{}: the unit must be a string, not {}", name.to_uppercase(), a.data_type());
            }
        })
    }

    fn get(&self, name: &str, i: usize) -> Result<Option<Unit>> {
        match self {
            Units::Fixed(u) => Ok(*u),
            Units::PerRow(a) => {
                // Invariant: `new` only keeps a string array.
                let s = a.as_string::<i32>();
                if s.is_null(i) { Ok(None) } else { parse_unit(name, s.value(i)).map(Some) }
            }
        }
    }
}

pub(crate) fn done(a: ArrayRef, all_scalar: bool) -> Result<ColumnarValue> {
    if all_scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&a, 0)?))
    } else {
        Ok(ColumnarValue::Array(a))
    }
}

pub(crate) fn null_result(t: DataType, all_scalar: bool, rows: usize) -> Result<ColumnarValue> {
    done(new_null_array(&t, rows), all_scalar)
}

fn check_precision(p: i64) -> Result<()> {
    if p == 0 || p == 3 {
        Ok(())
    } else {
        exec_err!("TO_TIMESTAMP_LTZ: the precision must be 0 (epoch seconds) or 3 (epoch milliseconds), not {p}")
    }
}

impl ScalarUDFImpl for TimeFn {
    fn name(&self) -> &str {
        &self.name
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match self.coerced(args) {
            Some(t) => Ok(t),
            None => {
                let got: Vec<String> = args.iter().map(|t| t.to_string()).collect();
                plan_err!("{} takes {}, not ({})", self.name.to_uppercase(), self.usage(), got.join(", "))
            }
        }
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.output())
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        // Literal units and precisions are checked now, before any job starts.
        let literal = |i: usize| args.scalar_arguments.get(i).copied().flatten();
        match self.kind {
            Kind::TimestampAdd | Kind::TimestampDiff | Kind::Floor | Kind::Ceil => {
                if let Some(
                    ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)),
                ) = literal(0)
                    && Unit::parse(s).is_none()
                {
                    return plan_err!("{}: unknown time unit '{s}' (use {UNIT_NAMES})", self.name.to_uppercase());
                }
            }
            Kind::ToTimestampLtz => {
                if let Some(p) = literal(1).and_then(|v| v.cast_to(&DataType::Int64).ok())
                    && let ScalarValue::Int64(Some(p)) = p
                    && check_precision(p).is_err()
                {
                    return plan_err!(
                        "TO_TIMESTAMP_LTZ: the precision must be 0 (epoch seconds) or 3 (epoch milliseconds), not {p}"
                    );
                }
            }
            Kind::Part(_) => {}
        }
        Ok(Arc::new(Field::new(self.name(), self.output(), true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let all_scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if all_scalar { 1 } else { args.number_rows };
        let name = self.name.as_str();
        let ms_array = |a: &ColumnarValue| -> Result<ArrayRef> { a.clone().into_array(rows) };
        let out: ArrayRef = match (self.kind, args.args.as_slice()) {
            (Kind::Part(p), [t]) => {
                let t = ms_array(t)?;
                let t = t.as_primitive::<TimestampMillisecondType>();
                Arc::new(t.iter().map(|v| v.and_then(|ms| part(ms, p))).collect::<Int64Array>())
            }
            (Kind::ToTimestampLtz, [v, rest @ ..]) => {
                let v = ms_array(v)?;
                let precision = match rest.first() {
                    Some(p) => Some(ms_array(p)?),
                    None => None,
                };
                let mut out = Vec::with_capacity(rows);
                for i in 0..rows {
                    let p = match &precision {
                        None => Some(3),
                        Some(p) => {
                            let p = p.as_primitive::<Int32Type>();
                            p.is_valid(i).then(|| p.value(i) as i64)
                        }
                    };
                    let Some(p) = p.filter(|_| v.is_valid(i)) else {
                        out.push(None);
                        continue;
                    };
                    check_precision(p)?;
                    let scale = if p == 0 { 1000 } else { 1 };
                    out.push(match v.data_type() {
                        DataType::Float64 => {
                            let x = v.as_primitive::<Float64Type>().value(i) * scale as f64;
                            // `as` saturates; out-of-range and NaN epochs give NULL instead.
                            (x.is_finite() && x.abs() < 9.2e18).then_some(x as i64)
                        }
                        _ => v.as_primitive::<Int64Type>().value(i).checked_mul(scale),
                    });
                }
                Arc::new(TimestampMillisecondArray::from(out))
            }
            (Kind::TimestampAdd, [u, n, t]) => {
                let units = Units::new(name, u)?;
                let (n, t) = (ms_array(n)?, ms_array(t)?);
                let (n, t) = (n.as_primitive::<Int64Type>(), t.as_primitive::<TimestampMillisecondType>());
                let mut out = Vec::with_capacity(rows);
                for i in 0..rows {
                    let unit = units.get(name, i)?;
                    out.push(match unit {
                        Some(unit) if n.is_valid(i) && t.is_valid(i) => add(t.value(i), unit, n.value(i)),
                        _ => None,
                    });
                }
                Arc::new(TimestampMillisecondArray::from(out))
            }
            (Kind::TimestampDiff, [u, a, b]) => {
                let units = Units::new(name, u)?;
                let (a, b) = (ms_array(a)?, ms_array(b)?);
                let (a, b) =
                    (a.as_primitive::<TimestampMillisecondType>(), b.as_primitive::<TimestampMillisecondType>());
                let mut out = Vec::with_capacity(rows);
                for i in 0..rows {
                    let unit = units.get(name, i)?;
                    out.push(match unit {
                        Some(unit) if a.is_valid(i) && b.is_valid(i) => {
                            diff(unit, a.value(i), b.value(i)).and_then(|d| i32::try_from(d).ok())
                        }
                        _ => None,
                    });
                }
                Arc::new(Int32Array::from(out))
            }
            (Kind::Floor | Kind::Ceil, [u, t]) => {
                let units = Units::new(name, u)?;
                let t = ms_array(t)?;
                let t = t.as_primitive::<TimestampMillisecondType>();
                let round = if self.kind == Kind::Floor { floor } else { ceil };
                let out: TimestampMillisecondArray = match units {
                    Units::Fixed(Some(unit)) => t.iter().map(|v| v.and_then(|ms| round(ms, unit))).collect(),
                    _ => (0..rows)
                        .map(|i| {
                            let unit = units.get(name, i)?;
                            Ok(unit.filter(|_| t.is_valid(i)).and_then(|unit| round(t.value(i), unit)))
                        })
                        .collect::<Result<_>>()?,
                };
                Arc::new(out)
            }
            (_, a) => return exec_err!("{} takes {}, got {} argument(s)", name.to_uppercase(), self.usage(), a.len()),
        };
        done(out, all_scalar)
    }
}

#[cfg(test)]
mod tests;
