//! User-defined aggregate functions: DataFusion `AggregateUDF`s written in Rust and registered
//! through Keel's API, run inside Keel's keyed aggregates (window, group and OVER aggregates).
//!
//! Each group slot holds one DataFusion accumulator, created when the slot is first used. Rows
//! are handed to each group's accumulator in arrival order; the checkpoint stores each slot's
//! `state()` (DataFusion's intermediate state) and a restore merges it into a fresh accumulator,
//! so a user function checkpoints, restores and rescales like the built-in ones. Retraction (an
//! aggregate over a changelog) needs the function's `retract_batch`; without it the aggregate is
//! refused at the first retraction with the function's name.

use crate::error::{Result, RuntimeError};
use arrow::array::{ArrayRef, UInt32Array};
use arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{Accumulator as DfAccumulator, AggregateUDF};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A user aggregate as called in a query: the function, its argument type and result type.
#[derive(Debug)]
pub struct UserAggregate {
    pub udaf: Arc<AggregateUDF>,
    /// The argument's type (`None` for a call without argument).
    pub input: Option<DataType>,
    pub output: DataType,
}

fn df<'a>(context: &'static str, name: &'a str) -> impl Fn(datafusion::error::DataFusionError) -> RuntimeError + 'a {
    move |e| RuntimeError::User(format!("user aggregate {name}: {context}: {}", e.strip_backtrace()))
}

/// One accumulator per group slot.
#[derive(Debug)]
pub(crate) struct UserSlots {
    def: Arc<UserAggregate>,
    slots: Vec<Option<RefCell<Box<dyn DfAccumulator>>>>,
}

impl UserSlots {
    pub(crate) fn new(def: Arc<UserAggregate>) -> Result<Self> {
        let s = UserSlots { def, slots: vec![] };
        s.fresh()?; // Fails now, at open, if the function cannot make an accumulator.
        Ok(s)
    }

    fn name(&self) -> &str {
        self.def.udaf.name()
    }

    fn fresh(&self) -> Result<Box<dyn DfAccumulator>> {
        let return_field: FieldRef = Arc::new(Field::new(self.name(), self.def.output.clone(), true));
        let fields: Vec<FieldRef> =
            self.def.input.iter().map(|t| Arc::new(Field::new("arg", t.clone(), true)) as FieldRef).collect();
        let schema = Schema::new(fields.clone());
        let exprs: Vec<Arc<dyn PhysicalExpr>> =
            fields.iter().enumerate().map(|(i, f)| Arc::new(Column::new(f.name(), i)) as _).collect();
        let args = AccumulatorArgs {
            return_field,
            schema: &schema,
            ignore_nulls: false,
            order_bys: &[],
            is_reversed: false,
            name: self.name(),
            is_distinct: false,
            exprs: &exprs,
            expr_fields: &fields,
        };
        self.def.udaf.accumulator(args).map_err(df("creating an accumulator", self.name()))
    }

    pub(crate) fn ensure(&mut self, n: usize) {
        if self.slots.len() < n {
            self.slots.resize_with(n, || None);
        }
    }

    pub(crate) fn reset(&mut self, g: usize) {
        self.slots[g] = None;
    }

    fn slot(&mut self, g: usize) -> Result<&mut Box<dyn DfAccumulator>> {
        if self.slots[g].is_none() {
            self.slots[g] = Some(RefCell::new(self.fresh()?));
        }
        match self.slots[g].as_mut() {
            Some(cell) => Ok(cell.get_mut()),
            None => Err(RuntimeError::Internal("a user aggregate slot vanished after creation".into())),
        }
    }

    /// Runs `f` on each group's rows of `arg` (rows in arrival order).
    fn per_group(
        &mut self,
        groups: &[u32],
        arg: Option<&ArrayRef>,
        mut f: impl FnMut(&mut Box<dyn DfAccumulator>, &[ArrayRef], &str) -> Result<()>,
    ) -> Result<()> {
        let mut rows: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (i, &g) in groups.iter().enumerate() {
            rows.entry(g).or_default().push(i as u32);
        }
        let name = self.name().to_string();
        for (g, idx) in rows {
            let values: Vec<ArrayRef> = match arg {
                Some(a) if idx.len() == a.len() => vec![a.clone()],
                Some(a) => vec![
                    arrow::compute::take(a.as_ref(), &UInt32Array::from(idx), None)
                        .map_err(RuntimeError::arrow("user aggregate input"))?,
                ],
                // No argument: one placeholder column with a row per input row.
                None => vec![arrow::array::new_null_array(&DataType::Null, idx.len())],
            };
            f(self.slot(g as usize)?, &values, &name)?;
        }
        Ok(())
    }

    pub(crate) fn update(&mut self, groups: &[u32], arg: Option<&ArrayRef>) -> Result<()> {
        self.per_group(groups, arg, |acc, v, name| acc.update_batch(v).map_err(df("update", name)))
    }

    pub(crate) fn retract(&mut self, groups: &[u32], arg: Option<&ArrayRef>) -> Result<()> {
        self.per_group(groups, arg, |acc, v, name| {
            if !acc.supports_retract_batch() {
                return Err(RuntimeError::User(format!(
                    "user aggregate {name} cannot take rows back (its accumulator has no retract_batch), but its input is an updating result; implement retract_batch or aggregate an append-only input"
                )));
            }
            acc.retract_batch(v).map_err(df("retract", name))
        })
    }

    pub(crate) fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef> {
        let mut values = Vec::with_capacity(groups.len());
        for &g in groups {
            let v = match &self.slots[g as usize] {
                Some(cell) => cell.borrow_mut().evaluate(),
                None => self.fresh()?.evaluate(),
            };
            values.push(v.map_err(df("evaluate", self.name()))?);
        }
        if values.is_empty() {
            return Ok(arrow::array::new_empty_array(&self.def.output));
        }
        let a = ScalarValue::iter_to_array(values).map_err(df("evaluate", self.name()))?;
        if a.data_type() == &self.def.output {
            Ok(a)
        } else {
            arrow::compute::cast(&a, &self.def.output).map_err(RuntimeError::arrow("user aggregate result"))
        }
    }

    /// Each group's intermediate state, one column per state field.
    pub(crate) fn state(&self, groups: &[u32], prefix: &str) -> Result<Vec<(Field, ArrayRef)>> {
        let empty = self.fresh()?.state().map_err(df("state", self.name()))?;
        let mut cols: Vec<Vec<ScalarValue>> = vec![vec![]; empty.len()];
        for &g in groups {
            let state = match &self.slots[g as usize] {
                Some(cell) => cell.borrow_mut().state(),
                None => self.fresh()?.state(),
            }
            .map_err(df("state", self.name()))?;
            for (c, v) in cols.iter_mut().zip(state) {
                c.push(v);
            }
        }
        let mut out = vec![];
        for (j, (values, proto)) in cols.into_iter().zip(empty).enumerate() {
            let array = if values.is_empty() {
                arrow::array::new_empty_array(&proto.data_type())
            } else {
                ScalarValue::iter_to_array(values).map_err(df("state", self.name()))?
            };
            out.push((Field::new(format!("{prefix}_u{j}"), array.data_type().clone(), true), array));
        }
        Ok(out)
    }

    /// Loads slot `groups[i]` from row `i` of columns written by `state`.
    pub(crate) fn restore(&mut self, groups: &[u32], cols: &[ArrayRef]) -> Result<()> {
        let name = self.name().to_string();
        for (i, &g) in groups.iter().enumerate() {
            let row: Vec<ArrayRef> = cols.iter().map(|c| c.slice(i, 1)).collect();
            self.slots[g as usize] = None;
            self.slot(g as usize)?.merge_batch(&row).map_err(df("restore", &name))?;
        }
        Ok(())
    }

    /// Folds slot `from` into slot `into` (merging session windows).
    pub(crate) fn merge(&mut self, into: usize, from: usize) -> Result<()> {
        let state = self.state(&[from as u32], "m")?;
        let cols: Vec<ArrayRef> = state.into_iter().map(|c| c.1).collect();
        let name = self.name().to_string();
        self.slot(into)?.merge_batch(&cols).map_err(df("merge", &name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changelog::{RowKind, all_inserts, row_kinds, with_op_field};
    use crate::operator::{Operator, RestoredState, TaskContext};
    use crate::ops::accumulators::AggregateFunction;
    use crate::ops::group_aggregate::tests::rows;
    use crate::ops::{AggregateCall, GroupAggregate, GroupAggregateSpec};
    use arrow::array::{AsArray, RecordBatch};
    use arrow::datatypes::Int64Type;
    use datafusion::logical_expr::{Volatility, create_udaf};

    /// Sum of squares, with retraction; its state is the running sum.
    #[derive(Debug, Default)]
    struct Squares(i64);
    impl DfAccumulator for Squares {
        fn update_batch(&mut self, v: &[ArrayRef]) -> datafusion::error::Result<()> {
            self.0 += v[0].as_primitive::<Int64Type>().iter().flatten().map(|x| x * x).sum::<i64>();
            Ok(())
        }
        fn retract_batch(&mut self, v: &[ArrayRef]) -> datafusion::error::Result<()> {
            self.0 -= v[0].as_primitive::<Int64Type>().iter().flatten().map(|x| x * x).sum::<i64>();
            Ok(())
        }
        fn supports_retract_batch(&self) -> bool {
            true
        }
        fn evaluate(&mut self) -> datafusion::error::Result<ScalarValue> {
            Ok(ScalarValue::Int64(Some(self.0)))
        }
        fn size(&self) -> usize {
            8
        }
        fn state(&mut self) -> datafusion::error::Result<Vec<ScalarValue>> {
            Ok(vec![ScalarValue::Int64(Some(self.0))])
        }
        fn merge_batch(&mut self, s: &[ArrayRef]) -> datafusion::error::Result<()> {
            self.0 += s[0].as_primitive::<Int64Type>().iter().flatten().sum::<i64>();
            Ok(())
        }
    }

    fn spec(updating: bool) -> Arc<GroupAggregateSpec> {
        let udaf = create_udaf(
            "squares",
            vec![DataType::Int64],
            Arc::new(DataType::Int64),
            Volatility::Immutable,
            Arc::new(|_| Ok(Box::new(Squares::default()))),
            Arc::new(vec![DataType::Int64]),
        );
        let user = UserAggregate { udaf: Arc::new(udaf), input: Some(DataType::Int64), output: DataType::Int64 };
        let input =
            Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new("v", DataType::Int64, true)]));
        let out = Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new("sq", DataType::Int64, true)]);
        Arc::new(GroupAggregateSpec {
            input_schema: input,
            input_updating: updating,
            num_keys: 1,
            aggregates: vec![AggregateCall {
                func: AggregateFunction::User,
                arg: Some(1),
                output_type: DataType::Int64,
                user: Some(Arc::new(user)),
            }],
            output_schema: with_op_field(&out),
            state_ttl: None,
            distinct_families: vec![],
        })
    }

    /// The final table of a changelog: key → value.
    fn replay(table: &mut BTreeMap<String, i64>, out: &[RecordBatch]) {
        for b in out {
            let (k, v, ops) =
                (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<Int64Type>(), row_kinds(b).unwrap());
            for i in 0..b.num_rows() {
                if RowKind::from_code(ops.value(i)).unwrap().is_addition() {
                    table.insert(k.value(i).to_string(), v.value(i));
                } else {
                    table.remove(k.value(i));
                }
            }
        }
    }

    #[test]
    fn a_user_aggregate_checkpoints_restores_at_another_parallelism_and_retracts() {
        let mut first = GroupAggregate::new(spec(true)).unwrap();
        first.open(&TaskContext::for_test(0, 1), RestoredState::default()).unwrap();
        let mut table = BTreeMap::new();
        let mut out = vec![];
        first.process(all_inserts(&rows(&["a", "b", "a", "c"], &[1, 2, 3, 4])).unwrap(), &mut out).unwrap();
        replay(&mut table, &out);
        let snap = first.snapshot(1).unwrap().unwrap();
        let restored = RestoredState { parts: vec![snap], inherited: vec![0], checkpoint: Some(1) };
        let mut two: Vec<GroupAggregate> = (0..2)
            .map(|s| {
                let mut op = GroupAggregate::new(spec(true)).unwrap();
                op.open(&TaskContext::for_test(s, 2), restored.clone()).unwrap();
                op
            })
            .collect();
        // a: +5, retract the 1; b: +1; c untouched.
        let more = all_inserts(&rows(&["a", "b", "a"], &[5, 1, 1])).unwrap();
        let mut cols = more.columns().to_vec();
        cols[2] = Arc::new(arrow::array::Int8Array::from(vec![
            RowKind::Insert.code(),
            RowKind::Insert.code(),
            RowKind::Delete.code(),
        ]));
        let more = RecordBatch::try_new(more.schema(), cols).unwrap();
        for (s, part) in crate::exchange::split_by_key(&more, &[0], 128, 2).unwrap().into_iter().enumerate() {
            if let Some(part) = part {
                let mut out = vec![];
                two[s].process(part, &mut out).unwrap();
                replay(&mut table, &out);
            }
        }
        let want: BTreeMap<String, i64> =
            [("a".to_string(), 9 + 25), ("b".to_string(), 4 + 1), ("c".to_string(), 16)].into_iter().collect();
        assert_eq!(table, want);
    }
}
