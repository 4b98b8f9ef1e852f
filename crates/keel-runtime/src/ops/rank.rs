//! Unwindowed Top-N and deduplication: `ROW_NUMBER() OVER (PARTITION BY p ORDER BY o) <= N` over a
//! whole stream (and RANK / DENSE_RANK), emitting a changelog of the result.
//!
//! Each partition holds its rows sorted by their ordering key (in arrow's row format) and a
//! tie-breaker derived from the row's arrival sequence (earlier first, or later first with
//! `later_wins_ties`). The rows' columns are held as Arrow batches (`held.rs`): output and
//! snapshots gather them, with no row-format decoding. A changelog input also keeps each row's
//! data in row format, to find the equal row a retraction removes.
//!
//! Invariants:
//! - after each batch, every partition the batch changed emits exactly the difference between its
//!   result before and after the batch, so replaying the output gives the current Top-N of every
//!   partition; a `-U` is always immediately followed by its `+U`;
//! - with an append-only input a partition holds only the rows inside its result (a row pushed out
//!   can never come back); with a changelog input it holds every live row;
//! - a retraction removes one held row equal in all data columns, or is ignored when none is held;
//! - tie-breakers are unique within a partition: the arrival counter always lies above every held
//!   sequence, including restored ones;
//! - with a state TTL, a partition whose rows did not change for the TTL is forgotten without
//!   output (lazily on access, and by a periodic sweep that frees the memory);
//! - a held row's stored batch lives at least until the batch that dropped the row has emitted
//!   (rows leaving a partition are released after the output is built), and the stored batches
//!   hold at most about twice the held rows (`compact` rewrites them beyond that).

use crate::changelog::{RowKind, changelog_batch, data_columns, is_changelog, row_kinds};
use crate::error::{Result, RuntimeError};
use crate::exchange::row_key_groups;
use crate::operator::{Operator, RestoredState, TaskContext};
use crate::ops::held::{HeldBatches, by_position, snapshot_chunks};
use crate::ops::rank_store::{Cfg, Entry, Ranked, Store, unmatched};
use crate::ops::short_bytes::ShortBytes;
use crate::ops::topn::Numbering;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array, UInt64Array};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type, UInt64Type};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::physical_expr::PhysicalExpr;
use keel_state::StateOut;
use keel_types::KeyGroupRange;
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What defines an unwindowed Top-N.
#[derive(Debug, Clone)]
pub struct RankSpec {
    /// The input's data columns (without `_op`).
    pub input_schema: SchemaRef,
    /// True when the input is itself a changelog (batches end with `_op`): rows can be retracted
    /// (-U/-D remove one equal row), so every row of a partition must be kept, not only the top N.
    pub input_updating: bool,
    pub partition_cols: Vec<usize>,
    pub order: Vec<(Arc<dyn PhysicalExpr>, SortOptions)>,
    /// N: rows numbered 1..=N are in the result.
    pub limit: usize,
    pub numbering: Numbering,
    /// Whether the output carries the number (UInt64) as a column after the input's columns.
    pub emit_number: bool,
    /// Deduplication keeping the last row (`ORDER BY ts DESC`): a new row that ties the current
    /// rows on the ordering ranks before them. Otherwise ties rank in arrival order (earlier first).
    pub later_wins_ties: bool,
    /// Processing-time state TTL: a partition not updated for this long is forgotten without
    /// output. None = keep forever.
    pub state_ttl: Option<Duration>,
    /// Input columns [+ number UInt64] + `_op`.
    pub output_schema: SchemaRef,
}

/// Stored batches are compacted when they hold more than twice the held rows plus this many.
const COMPACT_SLACK: usize = 65_536;
/// Rows per stored batch written by a compaction, and per encoded chunk of a snapshot.
const CHUNK_ROWS: usize = 65_536;
/// Name of the arrival-sequence column of a snapshot.
const SEQ_COLUMN: &str = "__keel_rank_seq";

#[derive(Debug)]
struct Partition {
    store: Store,
    /// When the rows last changed (ms since the operator's epoch).
    touched_ms: u64,
    /// The batch that last changed this partition (`mark_of`): its number (low 40 bits) in the
    /// high bits, and the partition's index in that batch's `Touched` in the low `INDEX_BITS`.
    mark: u64,
}

/// Bits of a partition's mark that hold its index in `Touched` (`NO_INDEX`: too far in to say).
const INDEX_BITS: u32 = 24;
const NO_INDEX: u64 = (1 << INDEX_BITS) - 1;

/// The mark of batch `batch_no`: 1 to 2^40 - 1, never 0 (a new partition's mark). After 2^40
/// batches, decades at a thousand batches a second, a mark could be mistaken for one that old.
fn mark_of(batch_no: u64) -> u64 {
    batch_no % ((1 << (64 - INDEX_BITS)) - 1) + 1
}

/// A partition a batch changed: its result before the batch and, while the batch has changed it
/// only once, its result after (computed then, so that the output needs no second look-up).
struct TouchedPart {
    key: ShortBytes,
    old: Ranked,
    new: Option<Ranked>,
}

/// The partitions a batch changed, in first-change order.
type Touched = Vec<TouchedPart>;

/// The unwindowed Top-N operator (see the module comment).
pub struct Rank {
    spec: Arc<RankSpec>,
    cfg: Cfg,
    /// Data rows in row format, for a changelog input only.
    data_conv: Option<RowConverter>,
    held: HeldBatches,
    /// Positions of rows that left their partition during the current batch, released once its
    /// output is built.
    released: Vec<(u32, u32)>,
    /// `COMPACT_SLACK`, lowered by tests.
    compact_slack: usize,
    key_conv: Option<RowConverter>,
    ord_conv: Option<RowConverter>,
    partitions: hashbrown::HashMap<ShortBytes, Partition>,
    next_seq: u64,
    batch_no: u64,
    key_groups: u32,
    epoch: Instant,
    last_sweep_ms: u64,
}

fn converter(fields: Vec<SortField>, what: &str) -> Result<Option<RowConverter>> {
    if fields.is_empty() {
        return Ok(None);
    }
    RowConverter::new(fields).map(Some).map_err(|e| RuntimeError::User(format!("Top-N cannot hold {what}: {e}")))
}

impl Rank {
    /// Checks the spec. All three numberings are supported. Errors: `User` for a limit of 0 or
    /// columns the row format cannot hold; `Internal` for column indices or an output schema that
    /// do not fit the input.
    pub fn new(spec: Arc<RankSpec>) -> Result<Rank> {
        let n = spec.input_schema.fields().len();
        if spec.limit == 0 {
            return Err(RuntimeError::User("a Top-N limit must be at least 1".into()));
        }
        if n == 0 || spec.partition_cols.iter().any(|&c| c >= n) {
            return Err(RuntimeError::Internal(format!(
                "Top-N partition columns {:?} out of range",
                spec.partition_cols
            )));
        }
        let outputs = n + usize::from(spec.emit_number) + 1;
        if spec.output_schema.fields().len() != outputs || !is_changelog(&spec.output_schema) {
            return Err(RuntimeError::Internal(format!(
                "Top-N output schema must have {outputs} columns ending in _op"
            )));
        }
        let types: Vec<DataType> = spec.input_schema.fields().iter().map(|f| f.data_type().clone()).collect();
        let data_conv = if spec.input_updating {
            converter(types.iter().cloned().map(SortField::new).collect(), "these columns")?
        } else {
            None
        };
        let key_conv =
            converter(spec.partition_cols.iter().map(|&c| SortField::new(types[c].clone())).collect(), "this key")?;
        let mut ord_fields = vec![];
        for (e, opts) in &spec.order {
            let t = e.data_type(&spec.input_schema).map_err(RuntimeError::expr("Top-N ORDER BY"))?;
            ord_fields.push(SortField::new_with_options(t, *opts));
        }
        let ord_conv = converter(ord_fields, "this ordering")?;
        let ttl_ms = spec.state_ttl.map(|t| (t.as_millis() as u64).max(1));
        let cfg = Cfg {
            limit: spec.limit as u64,
            numbering: spec.numbering,
            later_wins: spec.later_wins_ties,
            keep_all: spec.input_updating,
            ttl_ms,
            sweep_ms: ttl_ms.map_or(0, |t| (t / 2).clamp(1_000, 60_000)),
        };
        Ok(Rank {
            data_conv,
            held: HeldBatches::default(),
            released: Vec::new(),
            compact_slack: COMPACT_SLACK,
            key_conv,
            ord_conv,
            cfg,
            spec,
            partitions: hashbrown::HashMap::new(),
            next_seq: 0,
            batch_no: 0,
            key_groups: keel_types::DEFAULT_KEY_GROUPS,
            epoch: Instant::now(),
            last_sweep_ms: 0,
        })
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Partition keys, ordering keys and (for a changelog input) data rows of `batch` (whose
    /// first columns are the data).
    #[allow(clippy::type_complexity)]
    fn convert(&self, batch: &RecordBatch, data: &[ArrayRef]) -> Result<(Option<Rows>, Option<Rows>, Option<Rows>)> {
        let keys = match &self.key_conv {
            Some(c) => {
                let cols: Vec<ArrayRef> = self.spec.partition_cols.iter().map(|&i| data[i].clone()).collect();
                Some(c.convert_columns(&cols).map_err(RuntimeError::arrow("Top-N partition keys"))?)
            }
            None => None,
        };
        let sorts = match &self.ord_conv {
            Some(c) => {
                let n = batch.num_rows();
                let cols = (self.spec.order.iter())
                    .map(|(e, _)| e.evaluate(batch).and_then(|v| v.into_array(n)))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(RuntimeError::expr("Top-N ORDER BY"))?;
                Some(c.convert_columns(&cols).map_err(RuntimeError::arrow("Top-N ordering"))?)
            }
            None => None,
        };
        let rows = match &self.data_conv {
            Some(c) => Some(c.convert_columns(data).map_err(RuntimeError::arrow("Top-N rows"))?),
            None => None,
        };
        Ok((keys, sorts, rows))
    }

    /// Applies one row to its partition; returns whether it is now held (at `at`). `seq` is given
    /// for restored rows; `touched` is None on restore (no output).
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        key: &[u8],
        sort: &[u8],
        row: &[u8],
        add: bool,
        seq: Option<u64>,
        now_ms: u64,
        touched: Option<&mut Touched>,
        at: (u32, u32),
    ) -> bool {
        let cfg = self.cfg;
        if !add && !self.partitions.contains_key(key) {
            return false;
        }
        // Append-only ROW_NUMBER partitions never hold more than N rows (see below).
        let bounded = !cfg.keep_all && cfg.numbering == Numbering::RowNumber;
        let part = (self.partitions.entry_ref(key)).or_insert_with(|| Partition {
            store: Store::Vec(if bounded {
                SmallVec::with_capacity((cfg.limit as usize).min(16))
            } else {
                SmallVec::new()
            }),
            touched_ms: now_ms,
            mark: 0,
        });
        if let Some(ttl) = cfg.ttl_ms
            && part.mark >> INDEX_BITS != mark_of(self.batch_no)
            && now_ms.saturating_sub(part.touched_ms) >= ttl
        {
            self.released.extend(part.store.iter().map(|e| e.at));
            part.store = Store::Vec(SmallVec::new());
        }
        let entry = if add {
            let seq = seq.unwrap_or(self.next_seq);
            self.next_seq = self.next_seq.max(seq.saturating_add(1));
            let tie = cfg.tie(seq);
            if !cfg.keep_all && !part.store.would_keep(sort, tie, &cfg) {
                return false;
            }
            Entry::new(sort, row, tie, at)
        } else {
            match part.store.find_equal(sort, row) {
                Some(e) => e,
                None => return false,
            }
        };
        let first_change = touched.is_some() && part.mark >> INDEX_BITS != mark_of(self.batch_no);
        let old = if first_change { Some(part.store.result(&cfg)) } else { None };
        if add {
            if bounded {
                // The row enters, so the N-th row (if any) leaves: drop it first, so that the
                // store never grows past N.
                part.store.truncate(cfg.limit as usize - 1, &mut self.released);
            }
            part.store.insert(entry);
            // (A bounded ROW_NUMBER store holds at most N rows already.)
            if !cfg.keep_all && !bounded {
                let keep = part.store.walk(&cfg, |_, _| {});
                part.store.truncate(keep, &mut self.released);
            }
        } else {
            self.released.push(entry.at);
            part.store.remove(&entry);
        }
        part.touched_ms = now_ms;
        if let Some(t) = touched {
            match old {
                Some(old) => {
                    // Past NO_INDEX a later change could not clear `new`: read it at the end.
                    let i = t.len() as u64;
                    part.mark = mark_of(self.batch_no) << INDEX_BITS | i.min(NO_INDEX);
                    let new = (i < NO_INDEX).then(|| part.store.result(&cfg));
                    t.push(TouchedPart { key: key.into(), old, new });
                }
                // Changed again: the result after the batch is read at its end.
                None => match part.mark & NO_INDEX {
                    NO_INDEX => {}
                    i => {
                        if let Some(p) = t.get_mut(i as usize) {
                            p.new = None;
                        }
                    }
                },
            }
        }
        add
    }

    /// Forgets expired and empty partitions, at most once per sweep interval.
    fn sweep(&mut self, now_ms: u64) {
        let Some(ttl) = self.cfg.ttl_ms else { return };
        if now_ms < self.last_sweep_ms + self.cfg.sweep_ms {
            return;
        }
        self.last_sweep_ms = now_ms;
        let released = &mut self.released;
        self.partitions.retain(|_, p| {
            let keep = !p.store.is_empty() && now_ms.saturating_sub(p.touched_ms) < ttl;
            if !keep {
                released.extend(p.store.iter().map(|e| e.at));
            }
            keep
        });
    }

    /// `process` with an explicit clock reading.
    fn process_at(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>, now: Instant) -> Result<()> {
        let now_ms = self.ms(now);
        self.sweep(now_ms);
        self.batch_no += 1;
        let n = batch.num_rows();
        if n == 0 {
            return self.release_and_compact();
        }
        let width = self.spec.input_schema.fields().len();
        let expected = width + usize::from(self.spec.input_updating);
        if batch.num_columns() != expected {
            return Err(RuntimeError::Internal(format!(
                "Top-N expected {expected} input columns, got {}",
                batch.num_columns()
            )));
        }
        let kinds = if self.spec.input_updating { Some(row_kinds(&batch)?.clone()) } else { None };
        let data = if self.spec.input_updating { data_columns(&batch) } else { batch.columns() };
        let (keys, sorts, rows) = self.convert(&batch, data)?;
        let mut touched = Touched::new();
        // The rows this batch adds are copied into one stored batch at the end.
        let id = self.held.reserve();
        let mut kept: Vec<u32> = Vec::new();
        for i in 0..n {
            let add = match &kinds {
                Some(k) => RowKind::from_code(k.value(i))?.is_addition(),
                None => true,
            };
            let key = keys.as_ref().map_or(&[][..], |k| k.row(i).data());
            let sort = sorts.as_ref().map_or(&[][..], |s| s.row(i).data());
            let row = rows.as_ref().map_or(&[][..], |r| r.row(i).data());
            if self.apply(key, sort, row, add, None, now_ms, Some(&mut touched), (id, kept.len() as u32)) {
                kept.push(i as u32);
            }
        }
        let live = kept.len();
        self.held.fill_rows(id, data, kept, live)?;
        let (mut emitted, mut numbers, mut kinds) = (Vec::new(), Vec::new(), Vec::new());
        for TouchedPart { key, old, new } in touched {
            let new = match new {
                Some(new) => new,
                None => match self.partitions.get(&key) {
                    Some(part) => part.store.result(&self.cfg),
                    None => continue,
                },
            };
            if self.spec.emit_number {
                for i in 0..old.len().max(new.len()) {
                    match (old.get(i), new.get(i)) {
                        (Some(o), Some(n)) if o.1 == n.1 && o.0.same_row(&n.0) => {}
                        (Some(o), Some(n)) => {
                            emitted.extend([o.0.at, n.0.at]);
                            numbers.extend([o.1, n.1]);
                            kinds.extend([RowKind::UpdateBefore, RowKind::UpdateAfter]);
                        }
                        (Some((e, num)), None) | (None, Some((e, num))) => {
                            emitted.push(e.at);
                            numbers.push(*num);
                            kinds.push(if i < old.len() { RowKind::Delete } else { RowKind::Insert });
                        }
                        (None, None) => {}
                    }
                }
            } else {
                for (e, n) in unmatched(&old, &new) {
                    emitted.push(e.at);
                    numbers.push(n);
                    kinds.push(RowKind::Delete);
                }
                for (e, n) in unmatched(&new, &old) {
                    emitted.push(e.at);
                    numbers.push(n);
                    kinds.push(RowKind::Insert);
                }
            }
            // An empty result is an empty store (N is at least 1).
            if new.is_empty() {
                self.partitions.remove(&key);
            }
        }
        if !emitted.is_empty() {
            let mut cols = self.held.gather(&emitted, width, "Top-N output rows")?;
            if self.spec.emit_number {
                cols.push(Arc::new(UInt64Array::from(numbers)));
            }
            out.push(changelog_batch(self.spec.output_schema.clone(), cols, &kinds)?);
        }
        self.release_and_compact()
    }

    /// Releases the rows that left their partitions, then, when the stored batches hold more than
    /// about twice the held rows, rewrites the batches that are less than half held
    /// (`HeldBatches::compaction_victims`) and points their rows at their new places.
    fn release_and_compact(&mut self) -> Result<()> {
        for at in std::mem::take(&mut self.released) {
            self.held.release(at);
        }
        let victims = self.held.compaction_victims(self.compact_slack);
        if victims.is_empty() {
            return Ok(());
        }
        let in_victim = |at: &(u32, u32)| victims.get(at.0 as usize).copied().unwrap_or(false);
        let moving: Vec<(u32, u32)> =
            self.partitions.values().flat_map(|p| p.store.iter().map(|e| e.at)).filter(in_victim).collect();
        let width = self.spec.input_schema.fields().len();
        let moved = self.held.compact(&victims, moving, width, CHUNK_ROWS, "compacting Top-N rows")?;
        for p in self.partitions.values_mut() {
            p.store.relocate(&moved);
        }
        Ok(())
    }

    /// Re-inserts the snapshot rows of `batch` (key group, data columns, sequence) that this
    /// subtask owns.
    fn restore_part(&mut self, batch: &RecordBatch, range: KeyGroupRange, now_ms: u64) -> Result<()> {
        let width = self.spec.input_schema.fields().len();
        if batch.num_columns() != width + 2
            || batch.column(0).data_type() != &DataType::UInt32
            || batch.column(width + 1).data_type() != &DataType::UInt64
        {
            return Err(RuntimeError::Internal("Top-N state does not match this operator's columns".into()));
        }
        let groups = batch.column(0).as_primitive::<UInt32Type>();
        let keep: Vec<u32> =
            (0..batch.num_rows() as u32).filter(|&i| range.contains(groups.value(i as usize))).collect();
        let batch = arrow::compute::take_record_batch(batch, &UInt32Array::from(keep))
            .map_err(RuntimeError::arrow("Top-N restore"))?;
        let data = RecordBatch::try_new(self.spec.input_schema.clone(), batch.columns()[1..=width].to_vec())
            .map_err(RuntimeError::arrow("Top-N restore"))?;
        let seqs = batch.column(width + 1).as_primitive::<UInt64Type>().clone();
        let (keys, sorts, rows) = self.convert(&data, data.columns())?;
        let id = self.held.reserve();
        let mut kept = Vec::new();
        for i in 0..data.num_rows() {
            let key = keys.as_ref().map_or(&[][..], |k| k.row(i).data());
            let sort = sorts.as_ref().map_or(&[][..], |s| s.row(i).data());
            let row = rows.as_ref().map_or(&[][..], |r| r.row(i).data());
            if self.apply(key, sort, row, true, Some(seqs.value(i)), now_ms, None, (id, kept.len() as u32)) {
                kept.push(i as u32);
            }
        }
        let live = kept.len();
        self.held.fill_rows(id, data.columns(), kept, live)?;
        self.release_and_compact()
    }
}

impl Operator for Rank {
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()> {
        self.key_groups = ctx.key_groups;
        let range = KeyGroupRange::of_subtask(ctx.subtask, ctx.key_groups, ctx.parallelism);
        let now_ms = self.ms(Instant::now());
        // Chunk by chunk, as written: a restored state of GBs is never concatenated.
        for part in restored.parts.iter().filter(|p| !p.is_empty()) {
            for chunk in keel_state::batches_from_ipc(part, "Top-N state")? {
                self.restore_part(&chunk?, range, now_ms)?;
            }
        }
        Ok(())
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.process_at(batch, out, Instant::now())
    }

    fn snapshot(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        crate::operator::snapshot_in_memory(self, checkpoint)
    }

    /// (key group, data columns, sequence) of every held row, gathered and encoded 64 K rows at
    /// a time straight into `out`.
    fn snapshot_into(&mut self, _checkpoint: u64, out: &mut dyn StateOut) -> Result<bool> {
        let now_ms = self.ms(Instant::now());
        let live = |p: &&Partition| self.cfg.ttl_ms.is_none_or(|ttl| now_ms.saturating_sub(p.touched_ms) < ttl);
        // In stored order, chunked as `held::snapshot_chunks` says (runs of a stored batch go
        // out as they are).
        let (ats, entries) = by_position(
            self.partitions.values().filter(live).flat_map(|p| p.store.iter()).map(|e| (e.at, e)).collect(),
        );
        if ats.is_empty() {
            return Ok(false);
        }
        let mut fields = vec![Field::new("key_group", DataType::UInt32, false)];
        fields.extend(self.spec.input_schema.fields().iter().map(|f| f.as_ref().clone()));
        fields.push(Field::new(SEQ_COLUMN, DataType::UInt64, false));
        let schema = Arc::new(Schema::new(fields));
        let chunk = |r: std::ops::Range<usize>| -> Result<RecordBatch> {
            let cols =
                self.held.columns_of(&ats[r.clone()], self.spec.input_schema.fields().len(), "Top-N snapshot")?;
            let data = RecordBatch::try_new(self.spec.input_schema.clone(), cols)
                .map_err(RuntimeError::arrow("Top-N snapshot"))?;
            let groups = row_key_groups(&data, &self.spec.partition_cols, self.key_groups)?;
            let seqs: UInt64Array = entries[r].iter().map(|e| self.cfg.tie(e.tie)).collect::<Vec<u64>>().into();
            let mut cols: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from(groups))];
            cols.extend(data.columns().iter().cloned());
            cols.push(Arc::new(seqs));
            RecordBatch::try_new(schema.clone(), cols).map_err(RuntimeError::arrow("Top-N snapshot"))
        };
        let chunks = snapshot_chunks(&ats, CHUNK_ROWS);
        keel_state::write_batches(out, &schema, chunks.into_iter().map(chunk))?;
        Ok(true)
    }
}

#[cfg(test)]
#[path = "rank_tests.rs"]
mod tests;
