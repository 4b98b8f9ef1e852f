//! The keyed window aggregate: groups rows by (window, key), accumulates, and emits each window's
//! groups once the watermark passes the window's end, then forgets them.
//!
//! Input layout (prepared by a projection before the hash exchange): key columns `0..num_keys`,
//! then the window start and end columns, then the aggregate arguments.
//!
//! Invariants: a window `[s, e)` is emitted exactly once, when the watermark first reaches
//! `e - 1`; a row arriving when the watermark is already at or past `e - 1` is late: it is counted
//! and dropped, never added to an emitted window. State snapshots hold every open group with its
//! key group, so a restore at any parallelism gives each subtask exactly the groups it owns.

use crate::error::{Result, RuntimeError};
use crate::exchange::row_key_groups;
use crate::metrics::Metrics;
use crate::operator::{Operator, RestoredState, SideOutput, SideOutputFactory, TaskContext};
use crate::ops::accumulators::Accumulator;
pub use crate::ops::accumulators::AggregateFunction;
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType, UInt32Type};
use arrow::row::{RowConverter, SortField};
use hashbrown::HashTable;
use keel_types::KeyGroupRange;
use keel_types::time::MIN_WATERMARK;
use keel_types::window::is_late;
use std::collections::BTreeMap;
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Where an output group column comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupColumn {
    Key(usize),
    WindowStart,
    WindowEnd,
}

/// One aggregate call: function, argument column in the input, result type.
#[derive(Debug, Clone)]
pub struct AggregateCall {
    pub func: AggregateFunction,
    pub arg: Option<usize>,
    pub output_type: DataType,
    /// The definition of a user-defined aggregate (`func` is then `AggregateFunction::User`).
    pub user: Option<Arc<super::udaf::UserAggregate>>,
}

/// Everything that defines a window aggregate.
#[derive(Debug, Clone)]
pub struct WindowAggregateSpec {
    pub input_schema: SchemaRef,
    pub num_keys: usize,
    pub window_start: usize,
    pub window_end: usize,
    pub aggregates: Vec<AggregateCall>,
    /// The group columns of the output, in order; the aggregates follow them.
    pub group_output: Vec<GroupColumn>,
    pub output_schema: SchemaRef,
    /// Where late rows go (with their reason); `None` drops them (they are counted either way).
    pub late_output: Option<SideOutputFactory>,
    /// Session windows: overlapping windows of a key merge (see `session.rs`).
    pub merge_sessions: bool,
    /// Processing-time tumbling windows (Flink's PROCTIME()): each row belongs to the window of
    /// the wall clock when it reaches this operator (its window columns are overwritten), and a
    /// window fires when the clock passes its end; watermarks only matter at the end of input.
    pub processing_time: Option<keel_types::WindowSpec>,
    /// HOP windows of (size, slide) built from slices (see `slices.rs`): the input's window
    /// columns are each row's slice `[s, s + slide)`, not its windows.
    pub hop_slices: Option<(i64, i64)>,
}

/// Keys in Arrow's row format, or none at all (a window aggregate without GROUP BY keys: one
/// empty key, so every row of a window is one group).
enum KeyRows {
    Rows(arrow::row::Rows),
    Empty,
}

impl KeyRows {
    fn key(&self, i: usize) -> &[u8] {
        match self {
            KeyRows::Rows(r) => r.row(i).data(),
            KeyRows::Empty => &[],
        }
    }
}

pub(super) struct Group {
    pub(super) start: i64,
    pub(super) end: i64,
    hash: u64,
    pub(super) key: Box<[u8]>,
    pub(super) key_group: u32,
}

/// The operator (see the module docs).
pub struct WindowAggregate {
    spec: Arc<WindowAggregateSpec>,
    converter: RowConverter,
    table: HashTable<u32>,
    pub(super) groups: Vec<Group>,
    free: Vec<u32>,
    pub(super) by_window: BTreeMap<(i64, i64), Vec<u32>>,
    pub(super) accs: Vec<Accumulator>,
    /// Session windows only: the open sessions of each key.
    pub(super) sessions: std::collections::HashMap<Box<[u8]>, Vec<u32>>,
    pub(super) watermark: i64,
    key_groups: u32,
    metrics: Option<Arc<Metrics>>,
    late: Option<Box<dyn SideOutput>>,
}

/// Schema metadata of a snapshot holding HOP slices ("size/slide") rather than whole windows.
const SLICES_KEY: &str = "hop_slices";

fn group_hash(start: i64, end: i64, key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, (start as u64) ^ (end as u64).rotate_left(29))
}

/// Late rows of a sliced HOP carry their slice; show the last window of it, `[s, s + size)`, the
/// one whose closing made them late.
fn last_window_of_slices(rows: RecordBatch, start: usize, end: usize, size: i64) -> Result<RecordBatch> {
    let starts = millis(rows.column(start))?;
    let ends: TimestampMillisecondArray =
        starts.as_primitive::<TimestampMillisecondType>().unary(|s| s.saturating_add(size));
    let ends = arrow::compute::cast(&ends, rows.column(end).data_type()).map_err(RuntimeError::arrow("late rows"))?;
    let mut cols = rows.columns().to_vec();
    cols[end] = ends;
    RecordBatch::try_new(rows.schema(), cols).map_err(RuntimeError::arrow("late rows"))
}

fn millis(col: &ArrayRef) -> Result<ArrayRef> {
    let t = DataType::Timestamp(TimeUnit::Millisecond, None);
    if col.data_type() == &t {
        Ok(col.clone())
    } else {
        arrow::compute::cast(col, &t).map_err(RuntimeError::arrow("window bounds"))
    }
}

impl WindowAggregate {
    pub fn new(spec: Arc<WindowAggregateSpec>) -> Result<Self> {
        let fields =
            spec.input_schema.fields()[..spec.num_keys].iter().map(|f| SortField::new(f.data_type().clone())).collect();
        let converter = RowConverter::new(fields).map_err(RuntimeError::arrow("group keys"))?;
        let accs = spec
            .aggregates
            .iter()
            .map(|a| Accumulator::for_call(a, &spec.input_schema, false))
            .collect::<Result<_>>()?;
        Ok(WindowAggregate {
            spec,
            converter,
            table: HashTable::new(),
            groups: Vec::new(),
            free: Vec::new(),
            by_window: BTreeMap::new(),
            accs,
            watermark: MIN_WATERMARK,
            key_groups: keel_types::DEFAULT_KEY_GROUPS,
            metrics: None,
            late: None,
            sessions: Default::default(),
        })
    }

    /// The row-format keys of a batch's key columns (none for an aggregate without keys).
    fn key_rows(&self, cols: &[ArrayRef]) -> Result<KeyRows> {
        if cols.is_empty() {
            return Ok(KeyRows::Empty);
        }
        Ok(KeyRows::Rows(self.converter.convert_columns(cols).map_err(RuntimeError::arrow("group keys"))?))
    }

    /// The group id of (start, end, key), creating it if new.
    pub(super) fn group_of(&mut self, start: i64, end: i64, key: &[u8], key_group: impl FnOnce() -> u32) -> u32 {
        let h = group_hash(start, end, key);
        let groups = &self.groups;
        if let Some(&g) = self.table.find(h, |&g| {
            let gr = &groups[g as usize];
            // The full hash first: it is in the group's own slot, the key bytes are behind a pointer.
            gr.hash == h && gr.start == start && gr.end == end && &*gr.key == key
        }) {
            return g;
        }
        let g = self.add_group(start, end, key, key_group());
        let groups = &self.groups;
        self.table.insert_unique(h, g, |&x| groups[x as usize].hash);
        g
    }

    /// Allocates a group slot for (start, end, key) and lists it under its window.
    pub(super) fn add_group(&mut self, start: i64, end: i64, key: &[u8], key_group: u32) -> u32 {
        let h = group_hash(start, end, key);
        let group = Group { start, end, hash: h, key: key.into(), key_group };
        let g = match self.free.pop() {
            Some(g) => {
                self.groups[g as usize] = group;
                g
            }
            None => {
                self.groups.push(group);
                (self.groups.len() - 1) as u32
            }
        };
        self.by_window.entry((end, start)).or_default().push(g);
        for a in &mut self.accs {
            a.ensure(self.groups.len());
        }
        g
    }

    /// Output rows for `gids`, all of window `[start, end)`.
    pub(super) fn emit(&mut self, start: i64, end: i64, gids: &[u32]) -> Result<RecordBatch> {
        let parser = self.converter.parser();
        let keys = self
            .converter
            .convert_rows(gids.iter().map(|&g| parser.parse(&self.groups[g as usize].key)))
            .map_err(RuntimeError::arrow("group keys"))?;
        let n = gids.len();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.spec.output_schema.fields().len());
        for gc in &self.spec.group_output {
            cols.push(match *gc {
                GroupColumn::Key(i) => keys[i].clone(),
                GroupColumn::WindowStart => Arc::new(TimestampMillisecondArray::from(vec![start; n])),
                GroupColumn::WindowEnd => Arc::new(TimestampMillisecondArray::from(vec![end; n])),
            });
        }
        for (acc, call) in self.accs.iter().zip(&self.spec.aggregates) {
            cols.push(acc.evaluate(gids, &call.output_type)?);
        }
        let cols = cols
            .into_iter()
            .zip(self.spec.output_schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    arrow::compute::cast(&c, f.data_type()).map_err(RuntimeError::arrow("window result"))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        RecordBatch::try_new(self.spec.output_schema.clone(), cols).map_err(RuntimeError::arrow("window result"))
    }

    pub(super) fn forget(&mut self, g: u32) {
        if self.spec.merge_sessions {
            self.drop_session(g);
        }
        let h = self.groups[g as usize].hash;
        if let Ok(entry) = self.table.find_entry(h, |&x| x == g) {
            entry.remove();
        }
        for a in &mut self.accs {
            a.reset(g as usize);
        }
        self.groups[g as usize].key = Box::new([]);
        self.free.push(g);
    }

    /// Emits and forgets every window that `watermark` (or the clock) closes.
    fn fire(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        let old = self.watermark;
        self.watermark = self.watermark.max(watermark);
        if let Some((size, slide)) = self.spec.hop_slices {
            return self.fire_slices(size, slide, old, out);
        }
        while let Some((&(end, start), _)) = self.by_window.first_key_value() {
            if !is_late(end, self.watermark) {
                break;
            }
            let gids = self.by_window.remove(&(end, start)).unwrap_or_default();
            out.push(self.emit(start, end, &gids)?);
            for g in gids {
                self.forget(g);
            }
        }
        Ok(())
    }

    fn state_schema(&self, acc_fields: &[Field]) -> SchemaRef {
        let mut fields = vec![
            Field::new("key_group", DataType::UInt32, false),
            Field::new("window_start", DataType::Int64, false),
            Field::new("window_end", DataType::Int64, false),
        ];
        fields.extend(
            self.spec.input_schema.fields()[..self.spec.num_keys]
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true)),
        );
        fields.extend(acc_fields.iter().cloned());
        let mut meta: std::collections::HashMap<String, String> =
            [("watermark".to_string(), self.watermark.to_string())].into();
        if let Some((size, slide)) = self.spec.hop_slices {
            meta.insert(SLICES_KEY.to_string(), format!("{size}/{slide}"));
        }
        Arc::new(Schema::new(fields).with_metadata(meta))
    }
}

impl Operator for WindowAggregate {
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()> {
        self.key_groups = ctx.key_groups;
        self.metrics = Some(ctx.metrics.clone());
        if let Some(f) = &self.spec.late_output {
            self.late = Some((f.0)(ctx, restored.checkpoint)?);
        }
        let range = KeyGroupRange::of_subtask(ctx.subtask, ctx.key_groups, ctx.parallelism);
        let mut wm: Option<i64> = None;
        for part in restored.parts.iter().filter(|p| !p.is_empty()) {
            let batch = keel_state::batch_from_ipc(part, "window aggregate state")?;
            let slices = batch.schema().metadata().get(SLICES_KEY).cloned();
            let want = self.spec.hop_slices.map(|(size, slide)| format!("{size}/{slide}"));
            if slices != want {
                let held = |s: &Option<String>| match s {
                    Some(s) => format!("HOP slices (size/slide {s} ms)"),
                    None => "whole windows".to_string(),
                };
                return Err(RuntimeError::User(format!(
                    "the window aggregate's checkpoint holds {} but this plan aggregates {}: the query or the Keel \
                     version changed how it is planned; start the job fresh (--fresh) to drop the old state",
                    held(&slices),
                    held(&want)
                )));
            }
            if let Some(w) = batch.schema().metadata().get("watermark").and_then(|w| w.parse::<i64>().ok()) {
                wm = Some(wm.map_or(w, |m| m.min(w)));
            }
            let Some(batch) = crate::exchange::owned_rows(&batch, range)? else { continue };
            let kg = batch.column(0).as_primitive::<UInt32Type>().clone();
            let starts = batch.column(1).as_primitive::<arrow::datatypes::Int64Type>().clone();
            let ends = batch.column(2).as_primitive::<arrow::datatypes::Int64Type>().clone();
            let nk = self.spec.num_keys;
            let rows = self.key_rows(&batch.columns()[3..3 + nk])?;
            let mut gids = Vec::with_capacity(batch.num_rows());
            for i in 0..batch.num_rows() {
                gids.push(self.group_of(starts.value(i), ends.value(i), rows.key(i), || kg.value(i)));
            }
            let mut at = 3 + nk;
            for a in &mut self.accs {
                let n = a.state(&[], "x")?.len();
                a.restore(&gids, &batch.columns()[at..at + n])?;
                at += n;
            }
        }
        if let Some(w) = wm {
            self.watermark = w;
        }
        if self.spec.merge_sessions {
            self.index_sessions();
        }
        Ok(())
    }

    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        keel_types::faults::hit("aggregate.process");
        let (starts, ends) = match self.spec.processing_time {
            Some(spec) => {
                let now = keel_types::time::now_ms().max(self.watermark + 1);
                let mut window = None;
                spec.assign(now, |s, e| window = window.or(Some((s, e))));
                let (s, e) = window
                    .ok_or_else(|| RuntimeError::Internal("a processing-time window spec gave no window".into()))?;
                let n = batch.num_rows();
                let col = |v: i64| -> ArrayRef { Arc::new(arrow::array::TimestampMillisecondArray::from_value(v, n)) };
                (col(s), col(e))
            }
            None => (millis(batch.column(self.spec.window_start))?, millis(batch.column(self.spec.window_end))?),
        };
        let starts = starts.as_primitive::<TimestampMillisecondType>();
        let ends = ends.as_primitive::<TimestampMillisecondType>();
        let nk = self.spec.num_keys;
        let rows = self.key_rows(&batch.columns()[..nk])?;
        let key_cols: Vec<usize> = (0..nk).collect();
        let key_groups = row_key_groups(&batch, &key_cols, self.key_groups)?;
        let mut gids = Vec::with_capacity(batch.num_rows());
        let mut keep = Vec::new();
        let mut late = 0u64;
        let (mut redirect, mut retired) = (std::collections::HashMap::new(), Vec::new());
        // A slice is late only when its last window `[s, s + size)` has fired.
        let hop = self.spec.hop_slices;
        let last_end = |s: i64, e: i64| hop.map_or(e, |(size, _)| s + size);
        for (i, &kg) in key_groups.iter().enumerate() {
            let (s, e) = (starts.value(i), ends.value(i));
            if is_late(last_end(s, e), self.watermark) {
                late += 1;
                continue;
            }
            keep.push(i as u32);
            let g = if self.spec.merge_sessions {
                self.session_of(s, e, rows.key(i), kg, &mut redirect, &mut retired)?
            } else {
                self.group_of(s, e, rows.key(i), || kg)
            };
            gids.push(g);
        }
        if !redirect.is_empty() {
            for g in &mut gids {
                *g = super::session::resolve(&redirect, *g);
            }
        }
        let args: Vec<Option<ArrayRef>> = if late > 0 {
            if let Some(m) = &self.metrics {
                Metrics::add(&m.late_records, late);
            }
            if let Some(out) = &mut self.late {
                let mut is_late_row = vec![true; batch.num_rows()];
                for &k in &keep {
                    is_late_row[k as usize] = false;
                }
                let late_rows: Vec<u32> = (0..batch.num_rows() as u32).filter(|&i| is_late_row[i as usize]).collect();
                let mut rows = arrow::compute::take_record_batch(&batch, &UInt32Array::from(late_rows))
                    .map_err(RuntimeError::arrow("late rows"))?;
                if let Some((size, _)) = hop {
                    rows = last_window_of_slices(rows, self.spec.window_start, self.spec.window_end, size)?;
                }
                let reason = format!(
                    "late: its window had already closed (watermark {})",
                    keel_types::time::format_watermark(self.watermark)
                );
                out.emit(&rows, &reason)?;
            }
            let idx = UInt32Array::from(keep);
            self.spec
                .aggregates
                .iter()
                .map(|a| {
                    a.arg
                        .map(|c| {
                            arrow::compute::take(batch.column(c), &idx, None)
                                .map_err(RuntimeError::arrow("late filter"))
                        })
                        .transpose()
                })
                .collect::<Result<_>>()?
        } else {
            self.spec.aggregates.iter().map(|a| a.arg.map(|c| batch.column(c).clone())).collect()
        };
        for (acc, arg) in self.accs.iter_mut().zip(&args) {
            acc.update(&gids, arg.as_ref())?;
        }
        // Slots merged away in this batch may be reused from now on.
        for g in retired {
            self.groups[g as usize].key = Box::new([]);
            self.free.push(g);
        }
        Ok(())
    }

    fn on_processing_time(&mut self, now: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        if self.spec.processing_time.is_none() {
            return Ok(());
        }
        self.fire(now, out)
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        // Processing-time windows ignore event time, except that the end of input fires them all.
        if self.spec.processing_time.is_some() && watermark < keel_types::time::MAX_WATERMARK {
            return Ok(());
        }
        self.fire(watermark, out)
    }

    fn checkpoint_complete(&mut self, checkpoint: u64) -> Result<()> {
        if let Some(out) = &mut self.late {
            out.commit(checkpoint)?;
        }
        Ok(())
    }

    fn snapshot(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        if let Some(out) = &mut self.late {
            out.pre_commit(checkpoint)?;
        }
        let gids: Vec<u32> = self.by_window.values().flatten().copied().collect();
        let parser = self.converter.parser();
        let keys = self
            .converter
            .convert_rows(gids.iter().map(|&g| parser.parse(&self.groups[g as usize].key)))
            .map_err(RuntimeError::arrow("snapshot keys"))?;
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(gids.iter().map(|&g| self.groups[g as usize].key_group))),
            Arc::new(Int64Array::from_iter_values(gids.iter().map(|&g| self.groups[g as usize].start))),
            Arc::new(Int64Array::from_iter_values(gids.iter().map(|&g| self.groups[g as usize].end))),
        ];
        cols.extend(keys);
        let mut acc_fields = vec![];
        for (i, a) in self.accs.iter().enumerate() {
            for (f, c) in a.state(&gids, &format!("agg{i}"))? {
                acc_fields.push(f);
                cols.push(c);
            }
        }
        let schema = self.state_schema(&acc_fields);
        let cols = cols
            .into_iter()
            .zip(schema.fields())
            .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c) } else { arrow::compute::cast(&c, f.data_type()) })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(RuntimeError::arrow("snapshot"))?;
        let batch = RecordBatch::try_new(schema, cols).map_err(RuntimeError::arrow("snapshot"))?;
        Ok(Some(keel_state::batch_to_ipc(&batch)?))
    }
}
