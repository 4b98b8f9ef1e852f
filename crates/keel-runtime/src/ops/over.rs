//! Event-time OVER aggregation, Flink's `agg(x) OVER (PARTITION BY k ORDER BY ts <frame>)`: every
//! input row comes out exactly once, with one more column per aggregate, once the watermark has
//! passed its time. Output is append-only.
//!
//! Invariants:
//! - A row whose time is at or below the watermark when it arrives (or NULL) is late: counted in
//!   `late_records` and dropped, or written to the dead-letter output (`late.rs`). Every other
//!   row is buffered until the watermark reaches its time, then emitted; one watermark emits one
//!   batch ordered by (time, arrival).
//! - Within a partition rows are taken in (time, arrival) order. A ROWS frame is the row and the N
//!   rows before it in that order; a RANGE frame is every row of the partition with time in
//!   `[t - r, t]`, so rows of equal time are in each other's frame and share their results.
//! - State stays bounded by what future frames can need: the buffered rows; for ROWS N the last N
//!   emitted rows of each partition; for RANGE r the emitted rows with `time + r > watermark`
//!   (both only the time and the argument columns); for unbounded frames one running accumulator
//!   per partition, no rows. A RANGE partition whose rows all left every frame is forgotten.
//! - A snapshot holds all of that with the key group of its partition, the watermark in the
//!   schema metadata, so a restore at any parallelism keeps exactly the partitions it owns.
//!
//! Frames are computed without retraction (MIN and MAX cannot retract): the rows of a partition
//! form a queue whose two ends only move forward, kept as two stacks of partial aggregates
//! (suffix aggregates of the front part, one running aggregate of the back part), so each frame
//! is the merge of at most two partials and each row is merged a constant number of times.

use crate::error::{Result, RuntimeError};
use crate::exchange::row_key_groups;
use crate::metrics::Metrics;
use crate::operator::{Operator, RestoredState, SideOutputFactory, TaskContext};
use crate::ops::accumulators::Accumulator;
use crate::ops::aggregate::AggregateCall;
use crate::ops::late::LateRows;
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array, UInt64Array};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::row::{RowConverter, Rows, SortField};
use keel_types::time::MIN_WATERMARK;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

mod frames;
mod state;

/// The frame of the OVER window, always ending at the current row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverFrame {
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW`. `Rows(u64::MAX)` is `ROWS BETWEEN UNBOUNDED
    /// PRECEDING AND CURRENT ROW` (a running aggregate in which rows of equal time each see only
    /// the rows that arrived before them).
    Rows(u64),
    /// `RANGE BETWEEN INTERVAL r PRECEDING AND CURRENT ROW`, r in milliseconds (not negative).
    RangeMillis(i64),
    /// `RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW`, Flink's frame for an ORDER BY without
    /// one: a running aggregate; rows of equal time share their result.
    Unbounded,
}

/// What defines an OVER aggregation.
#[derive(Debug, Clone)]
pub struct OverSpec {
    pub input_schema: SchemaRef,
    pub partition_cols: Vec<usize>,
    /// The event-time column (a Timestamp(ms) column, as the window assigner's time column is).
    pub time_col: usize,
    pub frame: OverFrame,
    /// One per OVER call: function, argument column (None for COUNT(*)), Flink output type.
    pub aggregates: Vec<AggregateCall>,
    /// Input columns + one per aggregate.
    pub output_schema: SchemaRef,
    /// Where late rows go (`'late-records' = 'dead-letter'` on the input's table); `None` drops
    /// them (they are counted either way).
    pub late_output: Option<SideOutputFactory>,
}

#[derive(Debug, Clone, Copy)]
enum Frame {
    Rows(usize),
    Range(i64),
    /// Unbounded preceding; `ties`: rows of equal time share their frame (RANGE).
    Running {
        ties: bool,
    },
}

struct Partition {
    key: Box<[u8]>,
    key_group: u32,
    live: bool,
    /// Buffered rows of this partition.
    pending: usize,
    /// Emitted rows later frames can still need (bounded frames): `history_schema`, in order.
    history: Option<RecordBatch>,
    /// RANGE frames: the watermark at which all of `history` leaves every future frame.
    expires: Option<i64>,
}

/// The operator (see the module docs).
pub struct OverAggregate {
    spec: Arc<OverSpec>,
    frame: Frame,
    /// Partition keys in Arrow's row format (`None` without PARTITION BY: one partition).
    converter: Option<RowConverter>,
    /// Input columns, then the time (Int64 ms), the arrival number (UInt64), the partition id (UInt32).
    buffer_schema: SchemaRef,
    /// Time (Int64 ms), then `arg_cols`.
    history_schema: SchemaRef,
    /// The distinct input columns the aggregates take as arguments.
    arg_cols: Vec<usize>,
    /// Buffered rows sorted by time, per arrival batch, keyed by (first time, id); with the row
    /// count of the allocation they slice.
    pending: BTreeMap<(i64, u64), (RecordBatch, usize)>,
    next_id: u64,
    next_seq: u64,
    partitions: Vec<Partition>,
    index: HashMap<Box<[u8]>, u32>,
    free: Vec<u32>,
    /// RANGE frames: (expiry watermark, partition) of every partition with history.
    expiry: BTreeSet<(i64, u32)>,
    /// Unbounded frames: the running aggregates, one slot per partition id.
    running: Vec<Accumulator>,
    watermark: i64,
    key_groups: u32,
    metrics: Option<Arc<Metrics>>,
    late: LateRows,
}

fn event_times(col: &ArrayRef) -> Result<Int64Array> {
    let t = arrow::compute::cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None))
        .map_err(RuntimeError::arrow("OVER time column"))?;
    let t = t.as_primitive::<TimestampMillisecondType>();
    Ok(Int64Array::new(t.values().clone(), t.nulls().cloned()))
}

fn i64s(a: &ArrayRef) -> &[i64] {
    a.as_primitive::<Int64Type>().values()
}

impl OverAggregate {
    pub fn new(spec: Arc<OverSpec>) -> Result<Self> {
        let input = &spec.input_schema;
        let ni = input.fields().len();
        let bad = |what: String| Err(RuntimeError::Internal(format!("OVER aggregate: {what}")));
        let args = spec.aggregates.iter().filter_map(|a| a.arg);
        if let Some(c) = spec.partition_cols.iter().copied().chain(args).chain([spec.time_col]).find(|&c| c >= ni) {
            return bad(format!("column {c} is not in the {ni}-column input"));
        }
        if spec.output_schema.fields().len() != ni + spec.aggregates.len() {
            return bad("the output schema is not the input plus one column per aggregate".into());
        }
        let frame = match spec.frame {
            OverFrame::Rows(u64::MAX) => Frame::Running { ties: false },
            OverFrame::Rows(n) => Frame::Rows(usize::try_from(n).unwrap_or(usize::MAX)),
            OverFrame::RangeMillis(r) if r < 0 => {
                return Err(RuntimeError::User(format!("an OVER RANGE interval must not be negative, got {r} ms")));
            }
            OverFrame::RangeMillis(r) => Frame::Range(r),
            OverFrame::Unbounded => Frame::Running { ties: true },
        };
        // Also checks that every function accepts its argument's type.
        let running =
            spec.aggregates.iter().map(|a| Accumulator::for_call(a, input, false)).collect::<Result<Vec<_>>>()?;
        let converter = if spec.partition_cols.is_empty() {
            None
        } else {
            let fields = spec.partition_cols.iter().map(|&c| SortField::new(input.field(c).data_type().clone()));
            Some(RowConverter::new(fields.collect()).map_err(RuntimeError::arrow("OVER partition keys"))?)
        };
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("__time", DataType::Int64, false));
        fields.push(Field::new("__seq", DataType::UInt64, false));
        fields.push(Field::new("__partition", DataType::UInt32, false));
        let mut arg_cols: Vec<usize> = spec.aggregates.iter().filter_map(|a| a.arg).collect();
        arg_cols.sort_unstable();
        arg_cols.dedup();
        let mut hist = vec![Field::new("time", DataType::Int64, false)];
        hist.extend(arg_cols.iter().map(|&c| input.field(c).clone().with_nullable(true)));
        Ok(OverAggregate {
            frame,
            converter,
            buffer_schema: Arc::new(Schema::new(fields)),
            history_schema: Arc::new(Schema::new(hist)),
            arg_cols,
            pending: BTreeMap::new(),
            next_id: 0,
            next_seq: 0,
            partitions: Vec::new(),
            index: HashMap::new(),
            free: Vec::new(),
            expiry: BTreeSet::new(),
            running: if matches!(frame, Frame::Running { .. }) { running } else { Vec::new() },
            watermark: MIN_WATERMARK,
            key_groups: keel_types::DEFAULT_KEY_GROUPS,
            metrics: None,
            late: LateRows::default(),
            spec,
        })
    }

    fn ni(&self) -> usize {
        self.spec.input_schema.fields().len()
    }

    fn is_running(&self) -> bool {
        matches!(self.frame, Frame::Running { .. })
    }

    /// The partition keys of rows whose partition columns are `cols` (`None`: no PARTITION BY).
    fn keys(&self, cols: &[ArrayRef]) -> Result<Option<Rows>> {
        self.converter
            .as_ref()
            .map(|c| c.convert_columns(cols).map_err(RuntimeError::arrow("OVER partition keys")))
            .transpose()
    }

    /// The partition columns of `pids`' keys.
    fn key_columns(&self, pids: &[u32]) -> Result<Vec<ArrayRef>> {
        let Some(conv) = &self.converter else { return Ok(Vec::new()) };
        let parser = conv.parser();
        conv.convert_rows(pids.iter().map(|&p| parser.parse(&self.partitions[p as usize].key)))
            .map_err(RuntimeError::arrow("OVER partition keys"))
    }

    /// The id of the partition with `key`, created if new.
    fn partition_of(&mut self, key: &[u8], key_group: u32) -> u32 {
        if let Some(&p) = self.index.get(key) {
            return p;
        }
        let part = Partition { key: key.into(), key_group, live: true, pending: 0, history: None, expires: None };
        let p = match self.free.pop() {
            Some(p) => {
                self.partitions[p as usize] = part;
                p
            }
            None => {
                self.partitions.push(part);
                (self.partitions.len() - 1) as u32
            }
        };
        self.index.insert(key.into(), p);
        for a in &mut self.running {
            a.ensure(self.partitions.len());
        }
        p
    }

    /// Forgets partition `p` if nothing of it is needed any more (never for unbounded frames).
    fn maybe_free(&mut self, p: u32) {
        let part = &mut self.partitions[p as usize];
        if part.live && part.pending == 0 && part.history.is_none() && !matches!(self.frame, Frame::Running { .. }) {
            part.live = false;
            self.index.remove(&part.key);
            part.key = Box::new([]);
            self.free.push(p);
        }
    }

    fn set_history(&mut self, p: u32, history: Option<RecordBatch>) {
        let part = &mut self.partitions[p as usize];
        if let Some(at) = part.expires.take() {
            self.expiry.remove(&(at, p));
        }
        if let (Frame::Range(r), Some(h)) = (self.frame, &history)
            && let Some(&last) = i64s(h.column(0)).last()
        {
            let at = last.saturating_add(r);
            part.expires = Some(at);
            self.expiry.insert((at, p));
        }
        part.history = history;
    }

    /// How many of a partition's emitted rows (times in order) no future frame needs.
    fn history_cut(&self, times: &[i64]) -> usize {
        match self.frame {
            Frame::Rows(n) => times.len().saturating_sub(n),
            // Future rows have time > watermark, so their frames start after watermark - r.
            Frame::Range(r) => times.partition_point(|&t| t.saturating_add(r) <= self.watermark),
            Frame::Running { .. } => times.len(),
        }
    }

    /// Buffers rows `keep` of `rows` (input schema), with their times and arrival numbers.
    fn hold(
        &mut self,
        rows: &RecordBatch,
        times: &[i64],
        mut keep: Vec<u32>,
        seq: impl Fn(usize) -> u64,
    ) -> Result<()> {
        if keep.is_empty() {
            return Ok(());
        }
        keep.sort_by_key(|&i| times[i as usize]); // ties are ordered by arrival number when emitted
        let kgs = row_key_groups(rows, &self.spec.partition_cols, self.key_groups)?;
        let pcols: Vec<ArrayRef> = self.spec.partition_cols.iter().map(|&c| rows.column(c).clone()).collect();
        let keys = self.keys(&pcols)?;
        let mut pids = Vec::with_capacity(keep.len());
        for &i in &keep {
            let key = keys.as_ref().map_or(&[][..], |k| k.row(i as usize).data());
            let p = self.partition_of(key, kgs[i as usize]);
            self.partitions[p as usize].pending += 1;
            pids.push(p);
        }
        let kept_times = Int64Array::from_iter_values(keep.iter().map(|&i| times[i as usize]));
        let seqs = UInt64Array::from_iter_values(keep.iter().map(|&i| seq(i as usize)));
        let mut cols = take_record_batch(rows, &UInt32Array::from(keep))
            .map_err(RuntimeError::arrow("OVER buffer"))?
            .columns()
            .to_vec();
        cols.extend([Arc::new(kept_times) as ArrayRef, Arc::new(seqs), Arc::new(UInt32Array::from(pids))]);
        let batch =
            RecordBatch::try_new(self.buffer_schema.clone(), cols).map_err(RuntimeError::arrow("OVER buffer"))?;
        let n = batch.num_rows();
        self.park(batch, n)
    }

    /// Keeps buffered rows (sorted by time); copies them out of an allocation mostly emitted.
    fn park(&mut self, batch: RecordBatch, alloc: usize) -> Result<()> {
        let n = batch.num_rows();
        let (batch, alloc) = if n * 2 < alloc {
            let all = UInt32Array::from_iter_values(0..n as u32);
            (take_record_batch(&batch, &all).map_err(RuntimeError::arrow("OVER buffer"))?, n)
        } else {
            (batch, alloc)
        };
        let Some(&first) = i64s(batch.column(self.ni())).first() else { return Ok(()) };
        self.pending.insert((first, self.next_id), (batch, alloc));
        self.next_id += 1;
        Ok(())
    }
}

impl Operator for OverAggregate {
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()> {
        self.key_groups = ctx.key_groups;
        self.metrics = Some(ctx.metrics.clone());
        self.late = LateRows::open(self.spec.late_output.as_ref(), ctx, restored.checkpoint)?;
        self.restore(ctx, &restored)
    }

    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        let times = event_times(batch.column(self.spec.time_col))?;
        // Late: time <= watermark (`window::is_late` for a window whose last millisecond is t).
        let keep: Vec<u32> = (0..batch.num_rows())
            .filter(|&i| times.is_valid(i) && times.value(i) > self.watermark)
            .map(|i| i as u32)
            .collect();
        if keep.len() < batch.num_rows() {
            let mut is_late = vec![true; batch.num_rows()];
            keep.iter().for_each(|&i| is_late[i as usize] = false);
            let late = (0..batch.num_rows() as u32).filter(|&i| is_late[i as usize]).collect();
            let reason = "late: the watermark had passed its time, so the rows of its frame had been emitted";
            self.late.found(self.metrics.as_deref(), &batch, late, reason)?;
        }
        let base = self.next_seq;
        self.next_seq += batch.num_rows() as u64;
        self.hold(&batch, times.values(), keep, |i| base + i as u64)
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        let (w, ni) = (self.watermark, self.ni());
        let mut ready = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > w {
                break;
            }
            let (batch, alloc) = entry.remove();
            let cut = i64s(batch.column(ni)).partition_point(|&t| t <= w);
            ready.push(batch.slice(0, cut));
            if cut < batch.num_rows() {
                self.park(batch.slice(cut, batch.num_rows() - cut), alloc)?;
            }
        }
        if !ready.is_empty() {
            let ready = concat_batches(&self.buffer_schema, &ready).map_err(RuntimeError::arrow("OVER emit"))?;
            let sort: Vec<SortColumn> = [ni + 2, ni, ni + 1]
                .iter()
                .map(|&c| SortColumn { values: ready.column(c).clone(), options: None })
                .collect();
            let order = lexsort_to_indices(&sort, None).map_err(RuntimeError::arrow("OVER emit"))?;
            let ready = take_record_batch(&ready, &order).map_err(RuntimeError::arrow("OVER emit"))?;
            out.push(self.emit(&ready)?);
        }
        // Histories all of whose rows left every future frame (after emitting: the rows just
        // emitted may have needed them).
        while self.expiry.first().is_some_and(|&(at, _)| at <= w) {
            if let Some((at, p)) = self.expiry.pop_first()
                && self.partitions[p as usize].expires == Some(at)
            {
                self.set_history(p, None);
                self.maybe_free(p);
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        self.late.pre_commit(checkpoint)?;
        self.snapshot_state().map(Some)
    }

    fn checkpoint_complete(&mut self, checkpoint: u64) -> Result<()> {
        self.late.commit(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::aggregate::AggregateFunction as F;
    use arrow::array::{StringArray, TimestampMillisecondArray};

    /// (partition, time ms, value, id)
    type In = (&'static str, i64, Option<i64>, i64);
    /// id → (time, aggregate results)
    type Out = BTreeMap<i64, (i64, Vec<Option<i64>>)>;

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
            Field::new("v", DataType::Int64, true),
            Field::new("id", DataType::Int64, false),
        ]))
    }

    fn spec(frame: OverFrame, aggs: &[(F, Option<usize>)]) -> Arc<OverSpec> {
        let input = input_schema();
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend((0..aggs.len()).map(|i| Field::new(format!("a{i}"), DataType::Int64, true)));
        let aggregates = aggs
            .iter()
            .map(|&(func, arg)| AggregateCall { func, arg, output_type: DataType::Int64, user: None })
            .collect();
        Arc::new(OverSpec {
            input_schema: input,
            partition_cols: vec![0],
            time_col: 1,
            frame,
            aggregates,
            output_schema: Arc::new(Schema::new(fields)),
            late_output: None,
        })
    }

    fn batch(rows: &[In]) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.2))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
            ],
        )
        .unwrap()
    }

    fn ctx(subtask: u32, parallelism: u32) -> TaskContext {
        TaskContext::for_test(subtask, parallelism)
    }

    fn open(spec: &Arc<OverSpec>, ctx: &TaskContext, parts: Vec<Vec<u8>>) -> OverAggregate {
        let mut op = OverAggregate::new(spec.clone()).unwrap();
        op.open(ctx, RestoredState { parts, inherited: vec![], checkpoint: Some(1) }).unwrap();
        op
    }

    /// Feeds `rows`, then advances the watermark to `wm`; returns the output, checking each
    /// batch is ordered by time and holds only rows the watermark passed.
    fn step(op: &mut OverAggregate, rows: &[In], wm: i64, out: &mut Out) {
        step_batch(op, Some(batch(rows)), wm, out)
    }

    fn step_batch(op: &mut OverAggregate, rows: Option<RecordBatch>, wm: i64, out: &mut Out) {
        let mut o = Vec::new();
        if let Some(rows) = rows {
            op.process(rows, &mut o).unwrap();
        }
        assert!(o.is_empty(), "rows are emitted on watermarks only");
        op.on_watermark(wm, &mut o).unwrap();
        for b in &o {
            let ts = b.column(1).as_primitive::<TimestampMillisecondType>().values();
            assert!(ts.windows(2).all(|w| w[0] <= w[1]), "output ordered by time");
            let ids = b.column(3).as_primitive::<Int64Type>().values();
            for (r, (&id, &t)) in ids.iter().zip(ts.iter()).enumerate() {
                assert!(t <= wm, "row {id} at {t} emitted before the watermark {wm}");
                let aggs = (4..b.num_columns()).map(|c| b.column(c).as_primitive::<Int64Type>()).collect::<Vec<_>>();
                let vals = aggs.iter().map(|a| a.is_valid(r).then(|| a.value(r))).collect();
                assert!(out.insert(id, (t, vals)).is_none(), "row {id} emitted twice");
            }
        }
    }

    fn results(out: &Out) -> Vec<(i64, Vec<Option<i64>>)> {
        out.iter().map(|(&id, (_, v))| (id, v.clone())).collect()
    }

    fn some(v: &[i64]) -> Vec<Option<i64>> {
        v.iter().map(|&x| Some(x)).collect()
    }

    #[test]
    fn rows_two_preceding_across_watermarks() {
        let spec = spec(OverFrame::Rows(2), &[(F::Sum, Some(2)), (F::Count, Some(2)), (F::Max, Some(2))]);
        let c = ctx(0, 1);
        let mut op = open(&spec, &c, vec![]);
        let mut out = Out::new();
        let first = [("a", 5, Some(5), 1), ("a", 1, Some(1), 2), ("b", 2, Some(20), 3), ("a", 3, Some(3), 4)];
        step(&mut op, &[first[0], first[1], first[2], first[3], ("a", 12, Some(12), 5)], 6, &mut out);
        assert_eq!(
            results(&out),
            vec![(1, some(&[9, 3, 5])), (2, some(&[1, 1, 1])), (3, some(&[20, 1, 20])), (4, some(&[4, 2, 3]))]
        );
        out.clear();
        // Out of order again; two rows at 8 keep their arrival order; 4 is late.
        let second = [("a", 8, Some(8), 6), ("a", 7, Some(-7), 7), ("a", 4, Some(4), 8), ("a", 8, Some(80), 9)];
        step(&mut op, &second, 20, &mut out);
        assert_eq!(
            results(&out),
            vec![
                (5, some(&[100, 3, 80])), // 8, 80, 12
                (6, some(&[6, 3, 8])),    // 5, -7, 8
                (7, some(&[1, 3, 5])),    // 3, 5, -7
                (9, some(&[81, 3, 80])),  // -7, 8, 80
            ]
        );
        assert_eq!(Metrics::get(&c.metrics.late_records), 1);
        // Only the last two rows of each partition are kept.
        assert_eq!(history_len(&op, "a"), Some(2));
        assert_eq!(history_len(&op, "b"), Some(1));
    }

    /// How many emitted rows partition `k` keeps (`None`: the partition is forgotten).
    fn history_len(op: &OverAggregate, k: &str) -> Option<usize> {
        let keys = op.keys(&[Arc::new(StringArray::from(vec![k])) as ArrayRef]).unwrap().unwrap();
        let p = *op.index.get(keys.row(0).data())?;
        Some(op.partitions[p as usize].history.as_ref().map_or(0, |h| h.num_rows()))
    }

    #[test]
    fn range_frame_shares_results_between_equal_times() {
        let spec = spec(OverFrame::RangeMillis(10_000), &[(F::Sum, Some(2)), (F::CountStar, None), (F::Min, Some(2))]);
        let c = ctx(0, 1);
        let mut op = open(&spec, &c, vec![]);
        let mut out = Out::new();
        let first = [("a", 10_000, Some(2), 2), ("a", 0, Some(1), 1), ("a", 10_000, Some(3), 3), ("b", 1, Some(7), 20)];
        step(&mut op, &first, 10_000, &mut out);
        assert_eq!(
            results(&out),
            vec![(1, some(&[1, 1, 1])), (2, some(&[6, 3, 1])), (3, some(&[6, 3, 1])), (20, some(&[7, 1, 7]))]
        );
        // The row at 0 can be in no frame after 10 000; the rows at 10 000 can.
        assert_eq!(history_len(&op, "a"), Some(2));
        out.clear();
        let second = [
            ("a", 20_001, Some(6), 6),
            ("a", 15_000, Some(4), 4),
            ("a", 20_000, Some(5), 5),
            ("a", 20_000, Some(-5), 7),
            ("a", 25_000, Some(100), 8),
        ];
        step(&mut op, &second, 20_001, &mut out);
        assert_eq!(
            results(&out),
            vec![
                (4, some(&[9, 3, 2])),   // [5 000, 15 000]: 2, 3, 4
                (5, some(&[9, 5, -5])),  // [10 000, 20 000]: 2, 3, 4, 5, -5
                (6, some(&[10, 4, -5])), // [10 001, 20 001]: 4, 5, -5, 6
                (7, some(&[9, 5, -5])),
            ]
        );
        // Rows after 10 001 stay for frames of rows after 20 001; b's row left every frame.
        assert_eq!(history_len(&op, "a"), Some(4));
        assert_eq!(history_len(&op, "b"), None, "a partition whose rows left every frame is forgotten");
        out.clear();
        // [15 000, 25 000]: 4, 5, -5, 6, 100; b has its first row again.
        step(&mut op, &[("b", 30_000, None, 21)], i64::MAX, &mut out);
        assert_eq!(results(&out), vec![(8, some(&[110, 5, -5])), (21, vec![None, Some(1), None])]);
    }

    #[test]
    fn unbounded_running_count_and_avg() {
        let aggs = [(F::Count, Some(2)), (F::Avg, Some(2))];
        for (frame, tied) in [(OverFrame::Unbounded, [3, 2, 3, 2]), (OverFrame::Rows(u64::MAX), [2, 1, 3, 2])] {
            let spec = spec(frame, &aggs);
            let mut op = open(&spec, &ctx(0, 1), vec![]);
            let mut out = Out::new();
            let rows = [("a", 1, Some(1), 1), ("a", 2, Some(2), 2), ("a", 2, Some(4), 3), ("a", 5, Some(10), 5)];
            step(&mut op, &[rows[3], rows[1], rows[0], rows[2], ("a", 3, None, 4)], 3, &mut out);
            // RANGE: both rows at 2 see 1, 2, 4 (AVG truncates 7 / 3); ROWS: the first sees 1, 2.
            let want = vec![
                (1, some(&[1, 1])),
                (2, some(&[tied[0], tied[1]])),
                (3, some(&[tied[2], tied[3]])),
                (4, some(&[3, 2])),
            ];
            assert_eq!(results(&out), want, "{frame:?}");
            out.clear();
            step(&mut op, &[("a", 4, Some(7), 6)], 10, &mut out);
            assert_eq!(results(&out), vec![(5, some(&[5, 4])), (6, some(&[4, 3]))], "{frame:?}");
            assert_eq!(history_len(&op, "a"), Some(0), "running frames keep no rows");
        }
    }

    #[test]
    fn late_rows_are_dropped_and_counted() {
        let spec = spec(OverFrame::Rows(5), &[(F::CountStar, None)]);
        let c = ctx(0, 1);
        let mut op = open(&spec, &c, vec![]);
        let mut out = Out::new();
        step(&mut op, &[("a", 100, Some(1), 1)], 100, &mut out);
        // At the watermark is late, one past it is not.
        step(&mut op, &[("a", 100, Some(1), 2), ("a", 50, Some(1), 3), ("a", 101, Some(1), 4)], 100, &mut out);
        assert_eq!(Metrics::get(&c.metrics.late_records), 2);
        assert_eq!(results(&out), vec![(1, some(&[1]))], "nothing emitted before its time");
        step(&mut op, &[], 200, &mut out);
        assert_eq!(results(&out), vec![(1, some(&[1])), (4, some(&[2]))]);
    }

    #[test]
    fn late_rows_go_to_the_dead_letter_output_and_commit_with_checkpoints() {
        use crate::operator::{SideOutput, SideOutputFactory};
        use crate::ops::late::testing::{Recorded, RecordingOutput};
        let record = Arc::new(std::sync::Mutex::new(Recorded::default()));
        let mut s = spec(OverFrame::Rows(5), &[(F::CountStar, None)]).as_ref().clone();
        let r = record.clone();
        s.late_output = Some(SideOutputFactory(Arc::new(move |_, _| {
            Ok(Box::new(RecordingOutput(r.clone())) as Box<dyn SideOutput>)
        })));
        let c = ctx(0, 1);
        let mut op = open(&Arc::new(s), &c, vec![]);
        let mut out = Out::new();
        step(&mut op, &[("a", 100, Some(1), 1)], 100, &mut out);
        step(&mut op, &[("a", 100, Some(1), 2), ("a", 50, Some(1), 3), ("a", 101, Some(1), 4)], 100, &mut out);
        op.snapshot(2).unwrap();
        op.checkpoint_complete(2).unwrap();
        let got = record.lock().unwrap();
        let ids: Vec<i64> =
            got.emitted.iter().flat_map(|(b, _)| b.column(3).as_primitive::<Int64Type>().values().to_vec()).collect();
        assert_eq!(ids, [2, 3], "the rows at and before the watermark, counted and written");
        assert!(got.emitted[0].1.starts_with("late: "));
        assert_eq!(Metrics::get(&c.metrics.late_records), 2);
        assert_eq!(got.events, ["pre-commit 2", "commit 2"]);
    }

    use crate::test_rng::Lcg;

    const KEYS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

    /// Random rows: times drift upwards with disorder, some values NULL; the watermark trails.
    fn random_steps(rng: &mut Lcg, steps: usize, keys: usize, clock: &mut i64, id: &mut i64) -> Vec<(Vec<In>, i64)> {
        (0..steps)
            .map(|_| {
                let rows = (0..rng.below(7))
                    .map(|_| {
                        *id += 1;
                        let v = (rng.below(7) > 0).then(|| rng.below(11) as i64 - 5);
                        (KEYS[rng.below(keys as u64) as usize], *clock + rng.below(12) as i64 - 4, v, *id)
                    })
                    .collect();
                *clock += rng.below(4) as i64;
                (rows, *clock - rng.below(6) as i64)
            })
            .collect()
    }

    /// The aggregates of every row, straight from the definition of the frame.
    fn brute_force(frame: OverFrame, accepted: &[In]) -> Vec<(i64, Vec<Option<i64>>)> {
        let mut want = Vec::new();
        for &(k, t, _, id) in accepted {
            // Arrival order is the order in `accepted`; a partition's rows in (time, arrival) order.
            let mut part: Vec<&In> = accepted.iter().filter(|r| r.0 == k).collect();
            part.sort_by_key(|r| r.1);
            let pos = part.iter().position(|r| r.3 == id).unwrap();
            let frame_rows: Vec<&In> = match frame {
                OverFrame::Rows(n) => part[pos.saturating_sub(usize::try_from(n).unwrap_or(usize::MAX))..=pos].to_vec(),
                OverFrame::RangeMillis(r) => part.iter().filter(|x| x.1 >= t - r && x.1 <= t).copied().collect(),
                OverFrame::Unbounded => part.iter().filter(|x| x.1 <= t).copied().collect(),
            };
            let vals: Vec<i64> = frame_rows.iter().filter_map(|x| x.2).collect();
            let n = vals.len() as i64;
            let distinct = vals.iter().collect::<std::collections::BTreeSet<_>>().len() as i64;
            let sum = (n > 0).then(|| vals.iter().sum::<i64>());
            want.push((
                id,
                vec![
                    sum,
                    Some(n),
                    Some(frame_rows.len() as i64),
                    vals.iter().min().copied(),
                    vals.iter().max().copied(),
                    sum.map(|s| s / n),
                    Some(distinct),
                ],
            ));
        }
        want.sort();
        want
    }

    const ALL: [(F, Option<usize>); 7] = [
        (F::Sum, Some(2)),
        (F::Count, Some(2)),
        (F::CountStar, None),
        (F::Min, Some(2)),
        (F::Max, Some(2)),
        (F::Avg, Some(2)),
        (F::CountDistinct, Some(2)),
    ];

    #[test]
    fn random_input_matches_brute_force() {
        let mut rng = Lcg::seeded("OVER against brute force");
        let seed = rng.seed();
        let frames = [
            OverFrame::Rows(0),
            OverFrame::Rows(3),
            OverFrame::RangeMillis(0),
            OverFrame::RangeMillis(4),
            OverFrame::Unbounded,
            OverFrame::Rows(u64::MAX),
        ];
        for frame in frames {
            let spec = spec(frame, &ALL);
            let c = ctx(0, 1);
            let mut op = open(&spec, &c, vec![]);
            let (mut clock, mut id, mut wm) = (0, 0, MIN_WATERMARK);
            let (mut out, mut accepted, mut late) = (Out::new(), Vec::new(), 0);
            for (rows, next_wm) in random_steps(&mut rng, 120, 4, &mut clock, &mut id) {
                for r in &rows {
                    if r.1 > wm { accepted.push(*r) } else { late += 1 }
                }
                step(&mut op, &rows, next_wm, &mut out);
                wm = wm.max(next_wm);
                if rng.below(8) == 0 {
                    let snap = op.snapshot(1).unwrap().unwrap();
                    op = open(&spec, &c, vec![snap]);
                }
            }
            step(&mut op, &[], i64::MAX, &mut out);
            assert_eq!(Metrics::get(&c.metrics.late_records), late, "{frame:?}, seed {seed}");
            assert_eq!(results(&out), brute_force(frame, &accepted), "{frame:?}, seed {seed}");
            assert!(op.pending.is_empty());
        }
    }

    #[test]
    fn restore_at_other_parallelism_continues_identically() {
        for frame in [OverFrame::Rows(2), OverFrame::RangeMillis(5), OverFrame::Unbounded] {
            let spec = spec(frame, &ALL);
            let mut rng = Lcg::fixed("OVER restore", 42);
            let (mut clock, mut id) = (0, 0);
            let phases: Vec<_> = (0..3).map(|_| random_steps(&mut rng, 40, KEYS.len(), &mut clock, &mut id)).collect();
            let mut whole = open(&spec, &ctx(0, 1), vec![]);
            let mut want = Out::new();
            for (rows, wm) in phases.iter().flatten() {
                step(&mut whole, rows, *wm, &mut want);
            }
            step(&mut whole, &[], i64::MAX, &mut want);
            // 1 subtask, then 3, then 2.
            let mut got = Out::new();
            let mut parts = vec![];
            for (phase, p) in phases.iter().zip([1u32, 3, 2]) {
                let mut ops: Vec<_> = (0..p).map(|s| open(&spec, &ctx(s, p), parts.clone())).collect();
                if !parts.is_empty() {
                    // Each partition is restored by exactly one subtask.
                    let live: usize = ops.iter().map(|o| o.index.len()).sum();
                    assert_eq!(live, phase_live(&spec, &parts), "{frame:?}");
                }
                for (rows, wm) in phase {
                    let split = crate::exchange::split_by_key(&batch(rows), &[0], 128, p).unwrap();
                    for (op, b) in ops.iter_mut().zip(split) {
                        step_batch(op, b, *wm, &mut got);
                    }
                }
                parts = ops.iter_mut().map(|o| o.snapshot(1).unwrap().unwrap()).collect();
            }
            let mut last = open(&spec, &ctx(0, 1), parts);
            assert!(!last.pending.is_empty(), "the test restores buffered rows");
            step(&mut last, &[], i64::MAX, &mut got);
            assert_eq!(got, want, "{frame:?}");
        }
    }

    /// The number of partitions in snapshots `parts`.
    fn phase_live(spec: &Arc<OverSpec>, parts: &[Vec<u8>]) -> usize {
        open(spec, &ctx(0, 1), parts.to_vec()).index.len()
    }
}
