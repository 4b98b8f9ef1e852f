//! Column-wise accumulators for COUNT, SUM, AVG, MIN and MAX with Flink's result rules: COUNT is
//! BIGINT; SUM and AVG keep the input's type, and AVG of integers truncates toward zero; MIN and
//! MAX keep the input's type; SUM, AVG, MIN and MAX of no non-NULL values are NULL.
//!
//! Each accumulator holds one slot per group (indexed by group id); slots are reused after a
//! group is emitted (`reset`). A retractable accumulator (`new_retractable`, for aggregates over
//! a changelog) also takes rows back (`retract`): COUNT, SUM and AVG subtract; MIN, MAX and
//! COUNT(DISTINCT) keep a multiset of values (value → multiplicity) so the next value is known
//! when the current one is retracted. Integer-like inputs (all integer widths, timestamps, dates) are
//! accumulated as i64, floats as f64, decimals as i128 at the input's scale, strings as `String`.

use crate::error::{Result, RuntimeError};
use arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, Float64Array, Int64Array, PrimitiveArray, StringArray};
use arrow::datatypes::{ArrowPrimitiveType, DataType, Decimal128Type, Field, Float64Type, Int64Type};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The aggregate functions the window aggregate supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggregateFunction {
    CountStar,
    Count,
    /// COUNT(DISTINCT x): the number of different non-NULL values.
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
    /// A user-defined aggregate (its definition travels in `AggregateCall::user`).
    User,
}

#[derive(Debug)]
enum Values {
    /// The distinct values seen per group, for integer-like arguments.
    DistinctInt(super::distinct::IntSets),
    /// The distinct values seen per group, in Arrow's row format.
    Distinct(Vec<hashbrown::HashSet<Box<[u8]>>>, Box<arrow::row::RowConverter>),
    Int(Vec<i64>),
    Float(Vec<f64>),
    Decimal(Vec<i128>, u8, i8),
    Str(Vec<Option<String>>),
    /// Values with their multiplicities per group, in Arrow's row format (ordered as the values).
    Multiset(Vec<BTreeMap<Box<[u8]>, i64>>, Box<arrow::row::RowConverter>),
    /// A user-defined aggregate's accumulators, one per group.
    User(super::udaf::UserSlots),
}

/// One aggregate's slots for all groups.
#[derive(Debug)]
pub struct Accumulator {
    func: AggregateFunction,
    values: Values,
    /// Non-NULL inputs seen per group (rows, for COUNT(*)).
    counts: Vec<i64>,
}

/// Adds row `i` of `a` into slot `groups[i]` for SUM/AVG (with `add`), MIN or MAX.
fn fold<T: ArrowPrimitiveType>(
    func: AggregateFunction,
    vals: &mut [T::Native],
    counts: &mut [i64],
    groups: &[u32],
    a: &PrimitiveArray<T>,
    add: impl Fn(T::Native, T::Native) -> T::Native,
) where
    T::Native: PartialOrd,
{
    for (i, &g) in groups.iter().enumerate() {
        if a.is_valid(i) {
            let (g, v) = (g as usize, a.value(i));
            let seen = counts[g] > 0;
            vals[g] = match func {
                AggregateFunction::Min if seen && vals[g] <= v => vals[g],
                AggregateFunction::Max if seen && vals[g] >= v => vals[g],
                AggregateFunction::Min | AggregateFunction::Max => v,
                _ => add(vals[g], v),
            };
            counts[g] += 1;
        }
    }
}

fn unsupported(func: AggregateFunction, t: &DataType) -> RuntimeError {
    RuntimeError::User(format!(
        "{func:?} over a {t} column is not supported; cast the argument to BIGINT, DOUBLE or DECIMAL"
    ))
}

impl Accumulator {
    /// The accumulator for `call` over `input` rows; `retractable` when the input is a changelog.
    pub fn for_call(call: &super::AggregateCall, input: &arrow::datatypes::Schema, retractable: bool) -> Result<Self> {
        if let Some(user) = &call.user {
            let values = Values::User(super::udaf::UserSlots::new(user.clone())?);
            return Ok(Accumulator { func: AggregateFunction::User, values, counts: vec![] });
        }
        let t = call.arg.map(|c| input.field(c).data_type());
        if retractable { Self::new_retractable(call.func, t) } else { Self::new(call.func, t) }
    }

    /// An accumulator for `func` over arguments of `input` type (`None` for COUNT(*)).
    pub fn new(func: AggregateFunction, input: Option<&DataType>) -> Result<Self> {
        use DataType::*;
        let values = match (func, input) {
            (AggregateFunction::CountDistinct, Some(t)) if super::distinct::fits_i64(t) => {
                Values::DistinctInt(super::distinct::IntSets::new(t)?)
            }
            (AggregateFunction::CountDistinct, Some(t)) => Values::Distinct(
                vec![],
                Box::new(
                    arrow::row::RowConverter::new(vec![arrow::row::SortField::new(t.clone())])
                        .map_err(RuntimeError::arrow("COUNT(DISTINCT) values"))?,
                ),
            ),
            (AggregateFunction::User, _) => {
                return Err(RuntimeError::Internal("a user aggregate is created with Accumulator::for_call".into()));
            }
            (AggregateFunction::CountStar | AggregateFunction::Count, _) | (_, None) => Values::Int(vec![]),
            (_, Some(Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | Timestamp(_, _) | Date32 | Date64)) => {
                Values::Int(vec![])
            }
            (_, Some(Float16 | Float32 | Float64)) => Values::Float(vec![]),
            (_, Some(Decimal128(p, s))) => Values::Decimal(vec![], *p, *s),
            (AggregateFunction::Min | AggregateFunction::Max, Some(Utf8 | LargeUtf8 | Utf8View)) => Values::Str(vec![]),
            (f, Some(t)) => return Err(unsupported(f, t)),
        };
        Ok(Accumulator { func, values, counts: vec![] })
    }

    /// An accumulator that can also take rows back (`retract`).
    pub fn new_retractable(func: AggregateFunction, input: Option<&DataType>) -> Result<Self> {
        match (func, input) {
            (AggregateFunction::Min | AggregateFunction::Max | AggregateFunction::CountDistinct, Some(t)) => {
                let conv = arrow::row::RowConverter::new(vec![arrow::row::SortField::new(t.clone())])
                    .map_err(RuntimeError::arrow("aggregate values"))?;
                Ok(Accumulator { func, values: Values::Multiset(vec![], Box::new(conv)), counts: vec![] })
            }
            _ => Self::new(func, input),
        }
    }

    /// Takes row `i` of `arg` back out of group `groups[i]`, for every row (the inverse of
    /// `update`). Only for COUNT, SUM, AVG and retractable accumulators.
    pub fn retract(&mut self, groups: &[u32], arg: Option<&ArrayRef>) -> Result<()> {
        if let Values::User(u) = &mut self.values {
            return u.retract(groups, arg);
        }
        let func = self.func;
        let Some(arg) = arg.filter(|_| func != AggregateFunction::CountStar) else {
            for &g in groups {
                self.counts[g as usize] -= 1;
            }
            return Ok(());
        };
        if func == AggregateFunction::Count {
            for (i, &g) in groups.iter().enumerate() {
                if arg.is_valid(i) {
                    self.counts[g as usize] -= 1;
                }
            }
            return Ok(());
        }
        let cast = |t: &DataType| arrow::compute::cast(arg, t).map_err(RuntimeError::arrow("aggregate argument"));
        fn sub<T: ArrowPrimitiveType>(
            vals: &mut [T::Native],
            counts: &mut [i64],
            groups: &[u32],
            a: &PrimitiveArray<T>,
            minus: impl Fn(T::Native, T::Native) -> T::Native,
        ) {
            for (i, &g) in groups.iter().enumerate() {
                if a.is_valid(i) {
                    vals[g as usize] = minus(vals[g as usize], a.value(i));
                    counts[g as usize] -= 1;
                }
            }
        }
        match &mut self.values {
            Values::Multiset(sets, conv) => {
                let rows =
                    conv.convert_columns(std::slice::from_ref(arg)).map_err(RuntimeError::arrow("aggregate values"))?;
                for (i, &g) in groups.iter().enumerate() {
                    if !arg.is_valid(i) {
                        continue;
                    }
                    let set = &mut sets[g as usize];
                    let key = rows.row(i).data();
                    if let Some(n) = set.get_mut(key) {
                        *n -= 1;
                        if *n <= 0 {
                            set.remove(key);
                        }
                        if func != AggregateFunction::CountDistinct {
                            self.counts[g as usize] -= 1;
                        }
                    }
                    if func == AggregateFunction::CountDistinct {
                        self.counts[g as usize] = set.len() as i64;
                    }
                }
            }
            Values::Int(vals) if matches!(func, AggregateFunction::Sum | AggregateFunction::Avg) => {
                let a = cast(&DataType::Int64)?;
                sub(vals, &mut self.counts, groups, a.as_primitive::<Int64Type>(), i64::wrapping_sub);
            }
            Values::Float(vals) if matches!(func, AggregateFunction::Sum | AggregateFunction::Avg) => {
                let a = cast(&DataType::Float64)?;
                sub(vals, &mut self.counts, groups, a.as_primitive::<Float64Type>(), |x, y| x - y);
            }
            Values::Decimal(vals, p, s) if matches!(func, AggregateFunction::Sum | AggregateFunction::Avg) => {
                let a = cast(&DataType::Decimal128(*p, *s))?;
                sub(vals, &mut self.counts, groups, a.as_primitive::<Decimal128Type>(), i128::wrapping_sub);
            }
            _ => {
                return Err(RuntimeError::Internal(format!(
                    "{func:?} accumulator is not retractable (create it with new_retractable)"
                )));
            }
        }
        Ok(())
    }

    /// `int_sets`, read-only.
    pub(crate) fn int_sets_ref(&self) -> Option<&super::distinct::IntSets> {
        match &self.values {
            Values::DistinctInt(s) => Some(s),
            _ => None,
        }
    }

    /// The integer distinct sets of a COUNT(DISTINCT) over an integer-like column, if this is one.
    pub(crate) fn int_sets(&mut self) -> Option<&mut super::distinct::IntSets> {
        match &mut self.values {
            Values::DistinctInt(s) => Some(s),
            _ => None,
        }
    }

    /// Counts one more distinct value in slot `g` (a COUNT(DISTINCT) family updates its calls).
    pub(crate) fn count_one(&mut self, g: usize) {
        self.counts[g] += 1;
    }

    /// Makes slots `0..n` exist.
    pub fn ensure(&mut self, n: usize) {
        if self.counts.len() >= n {
            return;
        }
        self.counts.resize(n, 0);
        match &mut self.values {
            Values::Distinct(v, _) => v.resize_with(n, Default::default),
            Values::DistinctInt(v) => v.ensure(n),
            Values::Int(v) => v.resize(n, 0),
            Values::Float(v) => v.resize(n, 0.0),
            Values::Decimal(v, _, _) => v.resize(n, 0),
            Values::Str(v) => v.resize(n, None),
            Values::Multiset(v, _) => v.resize_with(n, Default::default),
            Values::User(u) => u.ensure(n),
        }
    }

    /// Clears slot `g` for reuse by another group.
    pub fn reset(&mut self, g: usize) {
        self.counts[g] = 0;
        match &mut self.values {
            Values::Distinct(v, _) => v[g] = Default::default(),
            Values::DistinctInt(v) => v.reset(g),
            Values::Int(v) => v[g] = 0,
            Values::Float(v) => v[g] = 0.0,
            Values::Decimal(v, _, _) => v[g] = 0,
            Values::Str(v) => v[g] = None,
            Values::Multiset(v, _) => v[g] = Default::default(),
            Values::User(u) => u.reset(g),
        }
    }

    /// Folds slot `from` into slot `into` (merging two session windows); `from` is left as is.
    pub fn merge(&mut self, into: usize, from: usize) -> Result<()> {
        if let Values::User(u) = &mut self.values {
            return u.merge(into, from);
        }
        let (ci, cf) = (self.counts[into], self.counts[from]);
        let func = self.func;
        fn pick<T: PartialOrd + Copy>(
            func: AggregateFunction,
            a: T,
            b: T,
            ca: i64,
            cb: i64,
            add: impl Fn(T, T) -> T,
        ) -> T {
            match func {
                _ if cb == 0 => a,
                _ if ca == 0 => b,
                AggregateFunction::Min => {
                    if b < a {
                        b
                    } else {
                        a
                    }
                }
                AggregateFunction::Max => {
                    if b > a {
                        b
                    } else {
                        a
                    }
                }
                _ => add(a, b),
            }
        }
        match &mut self.values {
            Values::DistinctInt(v) => {
                self.counts[into] = v.merge(into, from);
                return Ok(());
            }
            Values::Distinct(v, _) => {
                let other = std::mem::take(&mut v[from]);
                v[into].extend(other.iter().cloned());
                v[from] = other;
                self.counts[into] = v[into].len() as i64;
                return Ok(());
            }
            Values::User(_) => return Ok(()), // handled above
            Values::Multiset(v, _) => {
                let other = v[from].clone();
                for (k, n) in other {
                    *v[into].entry(k).or_insert(0) += n;
                }
                if func == AggregateFunction::CountDistinct {
                    self.counts[into] = v[into].len() as i64;
                    return Ok(());
                }
            }
            Values::Int(v) => v[into] = pick(func, v[into], v[from], ci, cf, i64::wrapping_add),
            Values::Float(v) => v[into] = pick(func, v[into], v[from], ci, cf, |a, b| a + b),
            Values::Decimal(v, _, _) => v[into] = pick(func, v[into], v[from], ci, cf, i128::wrapping_add),
            Values::Str(v) => {
                let (a, b) = (v[into].clone(), v[from].clone());
                v[into] = match (a, b) {
                    (None, b) => b,
                    (a, None) => a,
                    (Some(a), Some(b)) => Some(if (func == AggregateFunction::Min) == (b < a) { b } else { a }),
                };
            }
        }
        self.counts[into] = ci + cf;
        Ok(())
    }

    /// Adds row `i` of `arg` to group `groups[i]`, for every row.
    pub fn update(&mut self, groups: &[u32], arg: Option<&ArrayRef>) -> Result<()> {
        if let Values::User(u) = &mut self.values {
            return u.update(groups, arg);
        }
        let func = self.func;
        let Some(arg) = arg.filter(|_| func != AggregateFunction::CountStar) else {
            for &g in groups {
                self.counts[g as usize] += 1;
            }
            return Ok(());
        };
        let valid = |i: usize| arg.is_valid(i);
        if func == AggregateFunction::Count {
            for (i, &g) in groups.iter().enumerate() {
                if valid(i) {
                    self.counts[g as usize] += 1;
                }
            }
            return Ok(());
        }
        let cast = |t: &DataType| arrow::compute::cast(arg, t).map_err(RuntimeError::arrow("aggregate argument"));
        match &mut self.values {
            Values::DistinctInt(sets) => sets.update(groups, arg, &mut self.counts)?,
            Values::Distinct(sets, conv) => {
                let rows = conv
                    .convert_columns(std::slice::from_ref(arg))
                    .map_err(RuntimeError::arrow("COUNT(DISTINCT) values"))?;
                for (i, &g) in groups.iter().enumerate() {
                    // Allocate a value's copy only when it is new to the group.
                    let v = rows.row(i);
                    if arg.is_valid(i)
                        && !sets[g as usize].contains(v.data())
                        && sets[g as usize].insert(v.data().into())
                    {
                        self.counts[g as usize] += 1;
                    }
                }
            }
            Values::User(_) => return Err(RuntimeError::Internal("user aggregate updated as a built-in".into())),
            Values::Multiset(sets, conv) => {
                let rows =
                    conv.convert_columns(std::slice::from_ref(arg)).map_err(RuntimeError::arrow("aggregate values"))?;
                for (i, &g) in groups.iter().enumerate() {
                    if arg.is_valid(i) {
                        let set = &mut sets[g as usize];
                        match set.get_mut(rows.row(i).data()) {
                            Some(n) => *n += 1,
                            None => {
                                set.insert(rows.row(i).data().into(), 1);
                            }
                        }
                        self.counts[g as usize] = if func == AggregateFunction::CountDistinct {
                            set.len() as i64
                        } else {
                            self.counts[g as usize] + 1
                        };
                    }
                }
            }
            Values::Int(vals) => {
                let a = cast(&DataType::Int64)?;
                fold(func, vals, &mut self.counts, groups, a.as_primitive::<Int64Type>(), i64::wrapping_add);
            }
            Values::Float(vals) => {
                let a = cast(&DataType::Float64)?;
                fold(func, vals, &mut self.counts, groups, a.as_primitive::<Float64Type>(), |x, y| x + y);
            }
            Values::Decimal(vals, p, s) => {
                let a = cast(&DataType::Decimal128(*p, *s))?;
                fold(func, vals, &mut self.counts, groups, a.as_primitive::<Decimal128Type>(), i128::wrapping_add);
            }
            Values::Str(vals) => {
                let a = cast(&DataType::Utf8)?;
                let a = a.as_string::<i32>();
                for (i, &g) in groups.iter().enumerate() {
                    if a.is_valid(i) {
                        let (g, v) = (g as usize, a.value(i));
                        let better = match &vals[g] {
                            None => true,
                            Some(cur) => {
                                (func == AggregateFunction::Min && v < cur.as_str())
                                    || (func == AggregateFunction::Max && v > cur.as_str())
                            }
                        };
                        if better {
                            vals[g] = Some(v.to_string());
                        }
                        self.counts[g] += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// The results for `groups`, as `output` type.
    pub fn evaluate(&self, groups: &[u32], output: &DataType) -> Result<ArrayRef> {
        if let Values::User(u) = &self.values {
            return u.evaluate(groups);
        }
        let present = |g: u32| self.counts[g as usize] > 0;
        let arr: ArrayRef = match (&self.values, self.func) {
            (_, AggregateFunction::CountStar | AggregateFunction::Count | AggregateFunction::CountDistinct) => {
                Arc::new(Int64Array::from_iter_values(groups.iter().map(|&g| self.counts[g as usize])))
            }
            (Values::Int(v), f) => Arc::new(Int64Array::from_iter(groups.iter().map(|&g| {
                let g2 = g as usize;
                present(g).then(|| if f == AggregateFunction::Avg { v[g2] / self.counts[g2] } else { v[g2] })
            }))),
            (Values::Float(v), f) => Arc::new(Float64Array::from_iter(groups.iter().map(|&g| {
                let g2 = g as usize;
                present(g).then(|| if f == AggregateFunction::Avg { v[g2] / self.counts[g2] as f64 } else { v[g2] })
            }))),
            (Values::Decimal(v, p, s), f) => Arc::new(
                Decimal128Array::from_iter(groups.iter().map(|&g| {
                    let g2 = g as usize;
                    present(g)
                        .then(|| if f == AggregateFunction::Avg { v[g2] / i128::from(self.counts[g2]) } else { v[g2] })
                }))
                .with_precision_and_scale((*p).max(38), *s)
                .map_err(RuntimeError::arrow("decimal aggregate"))?,
            ),
            (Values::Str(v), _) => Arc::new(StringArray::from_iter(groups.iter().map(|&g| v[g as usize].clone()))),
            (Values::User(_), _) => {
                return Err(RuntimeError::Internal("user aggregate evaluated as a built-in".into()));
            }
            (Values::Multiset(sets, conv), f) => {
                // One value per group (the smallest or largest), NULL for an empty group.
                let parser = conv.parser();
                let picked: Vec<Option<&[u8]>> = groups
                    .iter()
                    .map(|&g| {
                        let set = &sets[g as usize];
                        let e = if f == AggregateFunction::Max { set.keys().next_back() } else { set.keys().next() };
                        e.map(|k| k.as_ref())
                    })
                    .collect();
                let present: Vec<arrow::row::Row<'_>> = picked.iter().flatten().map(|k| parser.parse(k)).collect();
                let values = conv.convert_rows(present).map_err(RuntimeError::arrow("aggregate values"))?;
                let values = &values[0];
                let mut at = 0;
                let idx: Vec<Option<u32>> = picked
                    .iter()
                    .map(|p| {
                        p.map(|_| {
                            at += 1;
                            at as u32 - 1
                        })
                    })
                    .collect();
                arrow::compute::take(values.as_ref(), &arrow::array::UInt32Array::from(idx), None)
                    .map_err(RuntimeError::arrow("aggregate values"))?
            }
            (Values::Distinct(..) | Values::DistinctInt(_), f) => {
                return Err(RuntimeError::Internal(format!(
                    "distinct values kept for {f:?}, which is not COUNT(DISTINCT)"
                )));
            }
        };
        if arr.data_type() == output {
            Ok(arr)
        } else {
            arrow::compute::cast(&arr, output).map_err(RuntimeError::arrow("aggregate result"))
        }
    }

    /// The state of `groups` as columns (for checkpoints), named with `prefix`.
    pub fn state(&self, groups: &[u32], prefix: &str) -> Result<Vec<(Field, ArrayRef)>> {
        self.state_with(groups, prefix, None)
    }

    /// `state`, with the distinct values of a COUNT(DISTINCT) given as `distinct` (written by the
    /// `distinct::Family` that holds them) rather than read from this accumulator's own sets.
    pub(crate) fn state_with(
        &self,
        groups: &[u32],
        prefix: &str,
        distinct: Option<ArrayRef>,
    ) -> Result<Vec<(Field, ArrayRef)>> {
        if let Values::User(u) = &self.values {
            return u.state(groups, prefix);
        }
        let counts: ArrayRef = Arc::new(Int64Array::from_iter_values(groups.iter().map(|&g| self.counts[g as usize])));
        let mut out = vec![(Field::new(format!("{prefix}_count"), DataType::Int64, false), counts)];
        let vals: Option<ArrayRef> = match &self.values {
            Values::DistinctInt(sets) => match distinct {
                Some(given) => Some(given),
                None => Some(sets.state(groups)?),
            },
            Values::Distinct(sets, _) => {
                Some(Arc::new(arrow::array::BinaryArray::from_iter_values(groups.iter().map(|&g| {
                    // Length-prefixed row-format values.
                    let mut blob = Vec::new();
                    for v in &sets[g as usize] {
                        blob.extend_from_slice(&(v.len() as u32).to_le_bytes());
                        blob.extend_from_slice(v);
                    }
                    blob
                }))))
            }
            Values::Multiset(sets, _) => {
                Some(Arc::new(arrow::array::BinaryArray::from_iter_values(groups.iter().map(|&g| {
                    // Length-prefixed row-format values, each followed by its multiplicity.
                    let mut blob = Vec::new();
                    for (v, n) in &sets[g as usize] {
                        blob.extend_from_slice(&(v.len() as u32).to_le_bytes());
                        blob.extend_from_slice(v);
                        blob.extend_from_slice(&n.to_le_bytes());
                    }
                    blob
                }))))
            }
            Values::User(_) => None, // handled above
            _ if matches!(self.func, AggregateFunction::CountStar | AggregateFunction::Count) => None,
            Values::Int(v) => Some(Arc::new(Int64Array::from_iter_values(groups.iter().map(|&g| v[g as usize])))),
            Values::Float(v) => Some(Arc::new(Float64Array::from_iter_values(groups.iter().map(|&g| v[g as usize])))),
            Values::Decimal(v, p, s) => Some(Arc::new(
                Decimal128Array::from_iter_values(groups.iter().map(|&g| v[g as usize]))
                    .with_precision_and_scale(*p, *s)
                    .unwrap_or_else(|_| Decimal128Array::from_iter_values(groups.iter().map(|&g| v[g as usize]))),
            )),
            Values::Str(v) => Some(Arc::new(StringArray::from_iter(groups.iter().map(|&g| v[g as usize].clone())))),
        };
        if let Some(vals) = vals {
            out.push((Field::new(format!("{prefix}_value"), vals.data_type().clone(), true), vals));
        }
        Ok(out)
    }

    /// Loads slot `groups[i]` from row `i` of state columns written by `state`.
    pub fn restore(&mut self, groups: &[u32], cols: &[ArrayRef]) -> Result<()> {
        if let Values::User(u) = &mut self.values {
            return u.restore(groups, cols);
        }
        let bad = || RuntimeError::Internal("aggregate state columns do not match the accumulator".into());
        let counts = cols.first().and_then(|c| c.as_primitive_opt::<Int64Type>()).ok_or_else(bad)?;
        for (i, &g) in groups.iter().enumerate() {
            self.counts[g as usize] = counts.value(i);
        }
        if matches!(self.func, AggregateFunction::CountStar | AggregateFunction::Count) {
            return Ok(());
        }
        let vals = cols.get(1).ok_or_else(bad)?;
        match &mut self.values {
            Values::User(_) => return Err(bad()), // handled above
            Values::DistinctInt(sets) => {
                let sizes = sets.restore(groups, vals.as_binary_opt::<i32>().ok_or_else(bad)?)?;
                for (&g, n) in groups.iter().zip(sizes) {
                    self.counts[g as usize] = n;
                }
            }
            Values::Distinct(sets, _) => {
                let a = vals.as_binary_opt::<i32>().ok_or_else(bad)?;
                for (i, &g) in groups.iter().enumerate() {
                    let mut blob = a.value(i);
                    let set = &mut sets[g as usize];
                    while blob.len() >= 4 {
                        let n = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
                        if blob.len() < 4 + n {
                            return Err(bad());
                        }
                        set.insert(blob[4..4 + n].into());
                        blob = &blob[4 + n..];
                    }
                }
            }
            Values::Multiset(sets, _) => {
                let a = vals.as_binary_opt::<i32>().ok_or_else(bad)?;
                for (i, &g) in groups.iter().enumerate() {
                    let mut blob = a.value(i);
                    let set = &mut sets[g as usize];
                    while blob.len() >= 4 {
                        let n = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
                        if blob.len() < 4 + n + 8 {
                            return Err(bad());
                        }
                        let mut m = [0u8; 8];
                        m.copy_from_slice(&blob[4 + n..12 + n]);
                        set.insert(blob[4..4 + n].into(), i64::from_le_bytes(m));
                        blob = &blob[12 + n..];
                    }
                }
            }
            Values::Int(v) => {
                let a = vals.as_primitive_opt::<Int64Type>().ok_or_else(bad)?;
                groups.iter().enumerate().for_each(|(i, &g)| v[g as usize] = a.value(i));
            }
            Values::Float(v) => {
                let a = vals.as_primitive_opt::<Float64Type>().ok_or_else(bad)?;
                groups.iter().enumerate().for_each(|(i, &g)| v[g as usize] = a.value(i));
            }
            Values::Decimal(v, _, _) => {
                let a = vals.as_primitive_opt::<Decimal128Type>().ok_or_else(bad)?;
                groups.iter().enumerate().for_each(|(i, &g)| v[g as usize] = a.value(i));
            }
            Values::Str(v) => {
                let a = vals.as_string_opt::<i32>().ok_or_else(bad)?;
                groups
                    .iter()
                    .enumerate()
                    .for_each(|(i, &g)| v[g as usize] = a.is_valid(i).then(|| a.value(i).to_string()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int32Array;

    #[test]
    fn flink_result_rules() {
        let arg: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), Some(2), None, Some(-3)]));
        let groups = [0u32, 0, 1, 1];
        let run = |f| {
            let mut a = Accumulator::new(f, Some(&DataType::Int32)).unwrap();
            a.ensure(2);
            a.update(&groups, Some(&arg)).unwrap();
            a
        };
        let avg = run(AggregateFunction::Avg).evaluate(&[0, 1], &DataType::Int32).unwrap();
        assert_eq!(avg.as_primitive::<arrow::datatypes::Int32Type>().values(), &[1, -3], "AVG(1,2) truncates to 1");
        let cnt = run(AggregateFunction::Count).evaluate(&[0, 1], &DataType::Int64).unwrap();
        assert_eq!(cnt.as_primitive::<Int64Type>().values(), &[2, 1], "COUNT skips NULL");
        let min = run(AggregateFunction::Min).evaluate(&[0, 1], &DataType::Int32).unwrap();
        assert_eq!(min.as_primitive::<arrow::datatypes::Int32Type>().values(), &[1, -3]);
        let max = run(AggregateFunction::Max).evaluate(&[0, 1], &DataType::Int32).unwrap();
        assert_eq!(max.as_primitive::<arrow::datatypes::Int32Type>().values(), &[2, -3]);
        let sum = run(AggregateFunction::Sum).evaluate(&[0, 1], &DataType::Int32).unwrap();
        assert_eq!(sum.as_primitive::<arrow::datatypes::Int32Type>().values(), &[3, -3], "SUM(INT) stays INT");
        let mut empty = Accumulator::new(AggregateFunction::Sum, Some(&DataType::Int64)).unwrap();
        empty.ensure(1);
        assert!(empty.evaluate(&[0], &DataType::Int64).unwrap().is_null(0), "SUM of nothing is NULL");
    }

    #[test]
    fn count_distinct_survives_a_snapshot() {
        let arg: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), Some("b"), Some("a"), None, Some("c")]));
        let mut a = Accumulator::new(AggregateFunction::CountDistinct, Some(&DataType::Utf8)).unwrap();
        a.ensure(2);
        a.update(&[0, 0, 0, 0, 1], Some(&arg)).unwrap();
        let cols: Vec<ArrayRef> = a.state(&[0, 1], "d").unwrap().into_iter().map(|c| c.1).collect();
        let mut b = Accumulator::new(AggregateFunction::CountDistinct, Some(&DataType::Utf8)).unwrap();
        b.ensure(2);
        b.restore(&[0, 1], &cols).unwrap();
        // "a" again must not count twice after the restore; "d" is new.
        let more: ArrayRef = Arc::new(StringArray::from(vec!["a", "d"]));
        b.update(&[0, 0], Some(&more)).unwrap();
        let n = b.evaluate(&[0, 1], &DataType::Int64).unwrap();
        assert_eq!(n.as_primitive::<Int64Type>().values(), &[3, 1]);
    }

    #[test]
    fn retraction_gives_back_the_previous_results() {
        let arg: ArrayRef = Arc::new(Int32Array::from(vec![Some(5), Some(3), Some(9), None, Some(3)]));
        let groups = [0u32, 0, 0, 0, 0];
        let gone: ArrayRef = Arc::new(Int32Array::from(vec![Some(3), Some(9)]));
        let result = |f, t: &DataType| {
            let mut a = Accumulator::new_retractable(f, Some(&DataType::Int32)).unwrap();
            a.ensure(1);
            a.update(&groups, Some(&arg)).unwrap();
            a.retract(&[0, 0], Some(&gone)).unwrap();
            let cols: Vec<ArrayRef> = a.state(&[0], "r").unwrap().into_iter().map(|c| c.1).collect();
            let mut b = Accumulator::new_retractable(f, Some(&DataType::Int32)).unwrap();
            b.ensure(1);
            b.restore(&[0], &cols).unwrap();
            arrow::compute::cast(&b.evaluate(&[0], t).unwrap(), &DataType::Int64).unwrap()
        };
        let v = |f| result(f, &DataType::Int32).as_primitive::<Int64Type>().value(0);
        // Left: 5 and one 3 (the other 3 and the 9 were retracted).
        assert_eq!(v(AggregateFunction::Max), 5, "MAX falls back to 5 once 9 is retracted");
        assert_eq!(v(AggregateFunction::Min), 3, "one 3 is still there");
        assert_eq!(v(AggregateFunction::Sum), 8);
        assert_eq!(v(AggregateFunction::Avg), 4);
        assert_eq!(result(AggregateFunction::Count, &DataType::Int64).as_primitive::<Int64Type>().value(0), 2);
        assert_eq!(result(AggregateFunction::CountDistinct, &DataType::Int64).as_primitive::<Int64Type>().value(0), 2);
        let mut a = Accumulator::new_retractable(AggregateFunction::Max, Some(&DataType::Int32)).unwrap();
        a.ensure(1);
        a.update(&[0], Some(&gone)).unwrap();
        a.retract(&[0], Some(&gone)).unwrap();
        assert!(a.evaluate(&[0], &DataType::Int32).unwrap().is_null(0), "MAX of nothing left is NULL");
        let mut plain = Accumulator::new(AggregateFunction::Max, Some(&DataType::Int32)).unwrap();
        plain.ensure(1);
        assert!(plain.retract(&[0], Some(&gone)).is_err(), "a plain MAX cannot retract");
    }

    #[test]
    fn state_roundtrip() {
        let arg: ArrayRef = Arc::new(StringArray::from(vec!["b", "a", "c"]));
        let mut a = Accumulator::new(AggregateFunction::Min, Some(&DataType::Utf8)).unwrap();
        a.ensure(1);
        a.update(&[0, 0, 0], Some(&arg)).unwrap();
        let cols: Vec<ArrayRef> = a.state(&[0], "m").unwrap().into_iter().map(|c| c.1).collect();
        let mut b = Accumulator::new(AggregateFunction::Min, Some(&DataType::Utf8)).unwrap();
        b.ensure(3);
        b.restore(&[2], &cols).unwrap();
        assert_eq!(b.evaluate(&[2], &DataType::Utf8).unwrap().as_string::<i32>().value(0), "a");
    }
}
