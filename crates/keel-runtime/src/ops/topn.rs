//! Window Top-N: numbers the rows of each window partition by an ordering
//! (`ROW_NUMBER() OVER (PARTITION BY window_start, window_end, ... ORDER BY ...)`) once the
//! window has closed; a filter after it keeps the first N.
//!
//! Invariants: rows are held per window until the watermark reaches the window's end − 1, then
//! numbered and emitted once, and forgotten; a row of an already closed window is late (counted,
//! and dropped or written to the dead-letter output, `late.rs`); the held rows are checkpointed with the key group of their partition, so a restore at
//! any parallelism gives each subtask the partitions it owns.

use crate::error::{Result, RuntimeError};
use crate::exchange::row_key_groups;
use crate::metrics::Metrics;
use crate::operator::{Operator, RestoredState, SideOutputFactory, TaskContext};
use crate::ops::late::LateRows;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array, UInt64Array};
use arrow::compute::{SortColumn, SortOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use keel_types::KeyGroupRange;
use keel_types::time::MIN_WATERMARK;
use keel_types::window::is_late;
use std::collections::BTreeMap;
use std::sync::Arc;

/// ROW_NUMBER, RANK or DENSE_RANK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbering {
    /// 1, 2, 3, ... whatever the ties (which of tied rows comes first is unspecified, as in Flink).
    RowNumber,
    /// Tied rows share a number; the next number skips (1, 1, 3).
    Rank,
    /// Tied rows share a number; the next does not skip (1, 1, 2).
    DenseRank,
}

/// What defines a window Top-N.
#[derive(Debug, Clone)]
pub struct TopNSpec {
    pub input_schema: SchemaRef,
    /// The PARTITION BY columns (they include window_start and window_end).
    pub partition_cols: Vec<usize>,
    pub window_end: usize,
    pub order: Vec<(Arc<dyn PhysicalExpr>, SortOptions)>,
    /// How rows that tie on the ordering are numbered.
    pub numbering: Numbering,
    /// The input's columns plus the row number (UInt64).
    pub output_schema: SchemaRef,
    /// The largest number the filter after this operator keeps (`rownum <= N`), when known: a
    /// window's rows are then compacted while it is open to those that can still be numbered
    /// N or less (input only adds rows, so a row's number never goes down).
    pub limit: Option<u64>,
    /// Where late rows go (`'late-records' = 'dead-letter'` on the input's table); `None` drops
    /// them (they are counted either way).
    pub late_output: Option<SideOutputFactory>,
}

pub struct WindowTopN {
    spec: Arc<TopNSpec>,
    held: BTreeMap<i64, Vec<RecordBatch>>,
    /// Per window: the held row count at which to compact next (with a known limit).
    compact_at: BTreeMap<i64, usize>,
    watermark: i64,
    key_groups: u32,
    metrics: Option<Arc<Metrics>>,
    late: LateRows,
}

fn window_ends(batch: &RecordBatch, col: usize) -> Result<ArrayRef> {
    arrow::compute::cast(batch.column(col), &DataType::Timestamp(TimeUnit::Millisecond, None))
        .map_err(RuntimeError::arrow("window end"))
}

impl WindowTopN {
    pub fn new(spec: Arc<TopNSpec>) -> Self {
        WindowTopN {
            spec,
            held: BTreeMap::new(),
            compact_at: BTreeMap::new(),
            watermark: MIN_WATERMARK,
            key_groups: keel_types::DEFAULT_KEY_GROUPS,
            metrics: None,
            late: LateRows::default(),
        }
    }

    /// Holds the rows of `batch` whose windows are open; returns the others (late).
    fn hold(&mut self, batch: &RecordBatch) -> Result<Vec<u32>> {
        let ends = window_ends(batch, self.spec.window_end)?;
        let ends = ends.as_primitive::<TimestampMillisecondType>();
        let mut by_end: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        let mut late = vec![];
        for i in 0..batch.num_rows() {
            let e = ends.value(i);
            if is_late(e, self.watermark) {
                late.push(i as u32);
            } else {
                by_end.entry(e).or_default().push(i as u32);
            }
        }
        for (e, idx) in by_end {
            let part = arrow::compute::take_record_batch(batch, &UInt32Array::from(idx))
                .map_err(RuntimeError::arrow("top-n"))?;
            self.held.entry(e).or_default().push(part);
            self.maybe_compact(e)?;
        }
        Ok(late)
    }

    /// With a known limit, replaces window `end`'s held rows by those numbered within the limit
    /// once they have doubled since the last compaction (so the work stays linear overall).
    fn maybe_compact(&mut self, end: i64) -> Result<()> {
        const FIRST: usize = 65_536;
        let Some(limit) = self.spec.limit else { return Ok(()) };
        let held: usize = self.held.get(&end).map_or(0, |b| b.iter().map(RecordBatch::num_rows).sum());
        if held < *self.compact_at.get(&end).unwrap_or(&FIRST) {
            return Ok(());
        }
        let batches = self.held.remove(&end).unwrap_or_default();
        let rows =
            arrow::compute::concat_batches(&self.spec.input_schema, &batches).map_err(RuntimeError::arrow("Top-N"))?;
        let numbered = self.number(&rows)?;
        let last = numbered.num_columns() - 1;
        let keep =
            arrow::compute::kernels::cmp::lt_eq(numbered.column(last), &arrow::array::UInt64Array::new_scalar(limit))
                .map_err(RuntimeError::arrow("Top-N compaction"))?;
        let kept = arrow::compute::filter_record_batch(&numbered, &keep).map_err(RuntimeError::arrow("Top-N"))?;
        let kept = RecordBatch::try_new(self.spec.input_schema.clone(), kept.columns()[..last].to_vec())
            .map_err(RuntimeError::arrow("Top-N compaction"))?;
        self.compact_at.insert(end, (2 * kept.num_rows()).max(FIRST));
        self.held.insert(end, vec![kept]);
        Ok(())
    }

    /// Numbers the rows of one closed window within their partitions.
    fn number(&self, rows: &RecordBatch) -> Result<RecordBatch> {
        let n = rows.num_rows();
        let mut sort_cols: Vec<SortColumn> = self
            .spec
            .partition_cols
            .iter()
            .map(|&c| SortColumn { values: rows.column(c).clone(), options: None })
            .collect();
        let mut order_values = vec![];
        for (e, opts) in &self.spec.order {
            let values =
                e.evaluate(rows).and_then(|v| v.into_array(n)).map_err(RuntimeError::expr("Top-N ORDER BY"))?;
            order_values.push((values.clone(), *opts));
            sort_cols.push(SortColumn { values, options: Some(*opts) });
        }
        let order = arrow::compute::lexsort_to_indices(&sort_cols, None).map_err(RuntimeError::arrow("Top-N sort"))?;
        let sorted = arrow::compute::take_record_batch(rows, &order).map_err(RuntimeError::arrow("Top-N sort"))?;
        let keys: Vec<ArrayRef> = self.spec.partition_cols.iter().map(|&c| sorted.column(c).clone()).collect();
        let conv = RowConverter::new(keys.iter().map(|k| SortField::new(k.data_type().clone())).collect())
            .map_err(RuntimeError::arrow("Top-N partitions"))?;
        let key_rows = conv.convert_columns(&keys).map_err(RuntimeError::arrow("Top-N partitions"))?;
        // The ordering values in sorted order, comparable as rows (to find ties).
        let ord: Vec<ArrayRef> = order_values
            .iter()
            .map(|(v, _)| arrow::compute::take(v, &order, None))
            .collect::<std::result::Result<_, _>>()
            .map_err(RuntimeError::arrow("Top-N ties"))?;
        let ord_conv = RowConverter::new(
            order_values.iter().map(|(v, o)| SortField::new_with_options(v.data_type().clone(), *o)).collect(),
        )
        .map_err(RuntimeError::arrow("Top-N ties"))?;
        let ord_rows = ord_conv.convert_columns(&ord).map_err(RuntimeError::arrow("Top-N ties"))?;
        let mut numbers = Vec::with_capacity(n);
        let (mut position, mut number) = (0u64, 0u64);
        for i in 0..n {
            let same_partition = i > 0 && key_rows.row(i) == key_rows.row(i - 1);
            let tie = same_partition && !ord.is_empty() && ord_rows.row(i) == ord_rows.row(i - 1);
            position = if same_partition { position + 1 } else { 1 };
            number = match self.spec.numbering {
                Numbering::RowNumber => position,
                Numbering::Rank | Numbering::DenseRank if tie => number,
                Numbering::Rank => position,
                Numbering::DenseRank if same_partition => number + 1,
                Numbering::DenseRank => 1,
            };
            numbers.push(number);
        }
        let mut cols = sorted.columns().to_vec();
        cols.push(Arc::new(UInt64Array::from(numbers)));
        RecordBatch::try_new(self.spec.output_schema.clone(), cols).map_err(RuntimeError::arrow("Top-N output"))
    }
}

impl Operator for WindowTopN {
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()> {
        self.key_groups = ctx.key_groups;
        self.metrics = Some(ctx.metrics.clone());
        self.late = LateRows::open(self.spec.late_output.as_ref(), ctx, restored.checkpoint)?;
        let range = KeyGroupRange::of_subtask(ctx.subtask, ctx.key_groups, ctx.parallelism);
        let mut wm: Option<i64> = None;
        for part in restored.parts.iter().filter(|p| !p.is_empty()) {
            let batch = keel_state::batch_from_ipc(part, "Top-N state")?;
            if let Some(w) = batch.schema().metadata().get("watermark").and_then(|w| w.parse::<i64>().ok()) {
                wm = Some(wm.map_or(w, |m| m.min(w)));
            }
            let Some(rows) = crate::exchange::owned_rows(&batch, range)? else { continue };
            let rows = RecordBatch::try_new(self.spec.input_schema.clone(), rows.columns()[1..].to_vec())
                .map_err(RuntimeError::arrow("Top-N state"))?;
            self.hold(&rows)?;
        }
        if let Some(w) = wm {
            self.watermark = w;
        }
        Ok(())
    }

    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        let late = self.hold(&batch)?;
        let reason = "late: its window had already closed and been ranked";
        self.late.found(self.metrics.as_deref(), &batch, late, reason)
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        while let Some((&end, _)) = self.held.first_key_value() {
            if !is_late(end, self.watermark) {
                break;
            }
            let batches = self.held.remove(&end).unwrap_or_default();
            self.compact_at.remove(&end);
            let rows = arrow::compute::concat_batches(&self.spec.input_schema, &batches)
                .map_err(RuntimeError::arrow("Top-N"))?;
            if rows.num_rows() > 0 {
                out.push(self.number(&rows)?);
            }
        }
        Ok(())
    }

    fn checkpoint_complete(&mut self, checkpoint: u64) -> Result<()> {
        self.late.commit(checkpoint)
    }

    fn snapshot(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        self.late.pre_commit(checkpoint)?;
        let batches: Vec<RecordBatch> = self.held.values().flatten().cloned().collect();
        let rows = arrow::compute::concat_batches(&self.spec.input_schema, &batches)
            .map_err(RuntimeError::arrow("Top-N snapshot"))?;
        let groups = row_key_groups(&rows, &self.spec.partition_cols, self.key_groups)?;
        let mut fields = vec![Field::new("key_group", DataType::UInt32, false)];
        fields.extend(self.spec.input_schema.fields().iter().map(|f| f.as_ref().clone()));
        let schema =
            Arc::new(Schema::new(fields).with_metadata([("watermark".to_string(), self.watermark.to_string())].into()));
        let mut cols: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from(groups))];
        cols.extend(rows.columns().iter().cloned());
        let batch = RecordBatch::try_new(schema, cols).map_err(RuntimeError::arrow("Top-N snapshot"))?;
        Ok(Some(keel_state::batch_to_ipc(&batch)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampMillisecondArray};
    use datafusion::physical_expr::expressions::Column;

    fn spec(limit: Option<u64>, numbering: Numbering) -> Arc<TopNSpec> {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let input =
            Arc::new(Schema::new(vec![Field::new("window_end", ts, false), Field::new("v", DataType::Int64, false)]));
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("n", DataType::UInt64, false));
        Arc::new(TopNSpec {
            input_schema: input,
            partition_cols: vec![0],
            window_end: 0,
            order: vec![(Arc::new(Column::new("v", 1)), SortOptions { descending: true, nulls_first: false })],
            numbering,
            output_schema: Arc::new(Schema::new(fields)),
            limit,
            late_output: None,
        })
    }

    #[test]
    fn a_known_limit_compacts_an_open_window_without_changing_its_result() {
        let mut rng = crate::test_rng::Lcg::fixed("window top-n compaction", 0x7099_u64);
        let mut next = move || rng.below(50_000) as i64;
        let batches: Vec<RecordBatch> = (0..20)
            .map(|_| {
                let v: Vec<i64> = (0..10_000).map(|_| next()).collect();
                RecordBatch::try_new(
                    spec(None, Numbering::Rank).input_schema.clone(),
                    vec![
                        Arc::new(TimestampMillisecondArray::from(vec![10_000; v.len()])),
                        Arc::new(Int64Array::from(v)),
                    ],
                )
                .unwrap()
            })
            .collect();
        let run = |limit: Option<u64>| {
            let mut op = WindowTopN::new(spec(limit, Numbering::Rank));
            op.open(&TaskContext::for_test(0, 1), RestoredState::default()).unwrap();
            for b in &batches {
                op.process(b.clone(), &mut vec![]).unwrap();
            }
            let held: usize = op.held.values().flatten().map(RecordBatch::num_rows).sum();
            let mut out = vec![];
            op.on_watermark(20_000, &mut out).unwrap();
            let mut top: Vec<(i64, u64)> = out
                .iter()
                .flat_map(|b| {
                    let v = b.column(1).as_primitive::<arrow::datatypes::Int64Type>().clone();
                    let n = b.column(2).as_primitive::<arrow::datatypes::UInt64Type>().clone();
                    (0..b.num_rows()).map(move |i| (v.value(i), n.value(i))).collect::<Vec<_>>()
                })
                .filter(|(_, n)| *n <= 3)
                .collect();
            top.sort();
            (top, held)
        };
        let (all, held_all) = run(None);
        let (compacted, held_compacted) = run(Some(3));
        assert_eq!(held_all, 200_000);
        assert!(held_compacted < 70_000, "the open window was compacted: {held_compacted} rows held");
        assert!(all.len() >= 3);
        assert_eq!(compacted, all, "RANK <= 3 (ties included) is the same with and without compaction");
    }

    #[test]
    fn rows_of_closed_windows_go_to_the_dead_letter_output() {
        use crate::operator::SideOutput;
        use crate::ops::late::testing::{Recorded, RecordingOutput};
        let record = Arc::new(std::sync::Mutex::new(Recorded::default()));
        let mut s = spec(None, Numbering::RowNumber).as_ref().clone();
        let r = record.clone();
        s.late_output = Some(SideOutputFactory(Arc::new(move |_, _| {
            Ok(Box::new(RecordingOutput(r.clone())) as Box<dyn SideOutput>)
        })));
        let mut op = WindowTopN::new(Arc::new(s));
        let c = TaskContext::for_test(0, 1);
        op.open(&c, RestoredState::default()).unwrap();
        let rows = |ends: &[i64], v: &[i64]| {
            RecordBatch::try_new(
                op_schema(),
                vec![Arc::new(TimestampMillisecondArray::from(ends.to_vec())), Arc::new(Int64Array::from(v.to_vec()))],
            )
            .unwrap()
        };
        op.process(rows(&[10_000, 20_000], &[1, 2]), &mut vec![]).unwrap();
        op.on_watermark(10_000, &mut vec![]).unwrap();
        // The window ending at 10 s has fired: a row of it is late; one of [.., 20 s) is not.
        op.process(rows(&[10_000, 20_000], &[3, 4]), &mut vec![]).unwrap();
        op.snapshot(7).unwrap();
        op.checkpoint_complete(7).unwrap();
        let got = record.lock().unwrap();
        let v: Vec<i64> = got
            .emitted
            .iter()
            .flat_map(|(b, _)| b.column(1).as_primitive::<arrow::datatypes::Int64Type>().values().to_vec())
            .collect();
        assert_eq!(v, [3]);
        assert_eq!(Metrics::get(&c.metrics.late_records), 1);
        assert_eq!(got.events, ["pre-commit 7", "commit 7"]);
    }

    fn op_schema() -> SchemaRef {
        spec(None, Numbering::RowNumber).input_schema.clone()
    }
}
