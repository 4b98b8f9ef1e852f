//! Unwindowed Top-N and deduplication: `ROW_NUMBER() OVER (PARTITION BY p ORDER BY o) <= N` over a
//! whole stream (and RANK / DENSE_RANK), emitting a changelog of the result.
//!
//! Each partition holds its rows compactly, sorted: one shared byte buffer per row (the ordering
//! key in arrow's row format followed by the data columns in row format) plus a tie-breaker derived
//! from the row's arrival sequence (earlier first, or later first with `later_wins_ties`).
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
//!   output (lazily on access, and by a periodic sweep that frees the memory).

use crate::changelog::{RowKind, changelog_batch, data_columns, is_changelog, row_kinds};
use crate::error::{Result, RuntimeError};
use crate::exchange::row_key_groups;
use crate::operator::{Operator, RestoredState, TaskContext};
use crate::ops::topn::Numbering;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array, UInt64Array};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type, UInt64Type};
use arrow::row::{RowConverter, RowParser, Rows, SortField};
use datafusion::physical_expr::PhysicalExpr;
use keel_types::KeyGroupRange;
use std::cmp::Ordering;
use std::collections::BTreeSet;
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

/// A partition's store switches from a sorted vector to a B-tree above this many rows...
const TREE_ABOVE: usize = 256;
/// ...and back below this many.
const VEC_BELOW: usize = 64;
/// Name of the arrival-sequence column of a snapshot.
const SEQ_COLUMN: &str = "__keel_rank_seq";

/// The scalar settings the per-row path needs (copied out of the spec).
#[derive(Debug, Clone, Copy)]
struct Cfg {
    limit: u64,
    numbering: Numbering,
    later_wins: bool,
    /// Keep every row (changelog input) rather than only the result.
    keep_all: bool,
    ttl_ms: Option<u64>,
    sweep_ms: u64,
}

impl Cfg {
    /// The tie-breaker of a row with arrival sequence `seq` (its own inverse).
    fn tie(&self, seq: u64) -> u64 {
        if self.later_wins { u64::MAX - seq } else { seq }
    }
}

/// One held row: ordering key bytes then data row bytes in one buffer, and its tie-breaker.
/// Ordered by (ordering key, tie-breaker), which is unique within a partition.
#[derive(Debug, Clone)]
struct Entry {
    bytes: Arc<[u8]>,
    sort_len: u32,
    tie: u64,
}

impl Entry {
    fn new(sort: &[u8], row: &[u8], tie: u64) -> Entry {
        // Two slice copies (a byte-by-byte collect of the chained slices was a hot spot).
        let mut joined = Vec::with_capacity(sort.len() + row.len());
        joined.extend_from_slice(sort);
        joined.extend_from_slice(row);
        let bytes: Arc<[u8]> = joined.into();
        Entry { bytes, sort_len: sort.len() as u32, tie }
    }
    fn sort(&self) -> &[u8] {
        &self.bytes[..self.sort_len as usize]
    }
    fn row(&self) -> &[u8] {
        &self.bytes[self.sort_len as usize..]
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sort().cmp(other.sort()).then(self.tie.cmp(&other.tie))
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}

/// A partition's rows in order: a sorted vector while small, a B-tree when large.
#[derive(Debug)]
enum Store {
    Vec(Vec<Entry>),
    Tree(BTreeSet<Entry>),
}

enum StoreIter<'a> {
    Vec(std::slice::Iter<'a, Entry>),
    Tree(std::collections::btree_set::Iter<'a, Entry>),
}

impl<'a> Iterator for StoreIter<'a> {
    type Item = &'a Entry;
    fn next(&mut self) -> Option<&'a Entry> {
        match self {
            StoreIter::Vec(i) => i.next(),
            StoreIter::Tree(i) => i.next(),
        }
    }
}

/// A result: rows in order with their numbers.
type Ranked = Vec<(Entry, u64)>;

impl Store {
    fn len(&self) -> usize {
        match self {
            Store::Vec(v) => v.len(),
            Store::Tree(t) => t.len(),
        }
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn last(&self) -> Option<&Entry> {
        match self {
            Store::Vec(v) => v.last(),
            Store::Tree(t) => t.last(),
        }
    }
    fn iter(&self) -> StoreIter<'_> {
        match self {
            Store::Vec(v) => StoreIter::Vec(v.iter()),
            Store::Tree(t) => StoreIter::Tree(t.iter()),
        }
    }

    fn insert(&mut self, e: Entry) {
        match self {
            Store::Vec(v) => {
                let at = v.partition_point(|x| x < &e);
                v.insert(at, e);
                if v.len() > TREE_ABOVE {
                    *self = Store::Tree(std::mem::take(v).into_iter().collect());
                }
            }
            Store::Tree(t) => {
                t.insert(e);
            }
        }
    }

    fn remove(&mut self, e: &Entry) {
        match self {
            Store::Vec(v) => {
                if let Ok(at) = v.binary_search(e) {
                    v.remove(at);
                }
            }
            Store::Tree(t) => {
                t.remove(e);
            }
        }
        self.maybe_shrink();
    }

    fn truncate(&mut self, len: usize) {
        match self {
            Store::Vec(v) => v.truncate(len),
            Store::Tree(t) => {
                while t.len() > len {
                    t.pop_last();
                }
            }
        }
        self.maybe_shrink();
    }

    fn maybe_shrink(&mut self) {
        if let Store::Tree(t) = self
            && t.len() < VEC_BELOW
        {
            *self = Store::Vec(std::mem::take(t).into_iter().collect());
        }
    }

    /// A held row with ordering key `sort` and data `row` (the first in order).
    fn find_equal(&self, sort: &[u8], row: &[u8]) -> Option<Entry> {
        let same = |x: &&Entry| x.sort() == sort;
        match self {
            Store::Vec(v) => {
                let from = v.partition_point(|x| x.sort() < sort);
                v[from..].iter().take_while(same).find(|x| x.row() == row).cloned()
            }
            Store::Tree(t) => {
                let probe = Entry::new(sort, &[], 0);
                t.range(probe..).take_while(same).find(|x| x.row() == row).cloned()
            }
        }
    }

    /// Calls `f` with each row of the result and its number, in order; returns how many.
    fn walk<'a>(&'a self, cfg: &Cfg, mut f: impl FnMut(&'a Entry, u64)) -> usize {
        let (mut position, mut number, mut count) = (0u64, 0u64, 0usize);
        let mut prev: Option<&[u8]> = None;
        for e in self.iter() {
            position += 1;
            let tie = prev == Some(e.sort());
            number = match cfg.numbering {
                Numbering::RowNumber => position,
                Numbering::Rank | Numbering::DenseRank if tie => number,
                Numbering::Rank => position,
                Numbering::DenseRank => number + 1,
            };
            if number > cfg.limit {
                break;
            }
            f(e, number);
            count += 1;
            prev = Some(e.sort());
        }
        count
    }

    fn result(&self, cfg: &Cfg) -> Ranked {
        let mut out = Vec::new();
        self.walk(cfg, |e, n| out.push((e.clone(), n)));
        out
    }

    /// Whether a new row would enter a store that holds exactly its result (append-only input).
    fn would_keep(&self, sort: &[u8], tie: u64, cfg: &Cfg) -> bool {
        let Some(last) = self.last() else { return true };
        if (sort, tie) < (last.sort(), last.tie) {
            return true;
        }
        let ties_last = sort == last.sort();
        let below_limit = (self.len() as u64) < cfg.limit;
        match cfg.numbering {
            Numbering::RowNumber => below_limit,
            Numbering::Rank => ties_last || below_limit,
            Numbering::DenseRank => {
                let mut distinct = 0;
                self.walk(cfg, |_, n| distinct = n);
                ties_last || distinct < cfg.limit
            }
        }
    }
}

#[derive(Debug)]
struct Partition {
    store: Store,
    /// When the rows last changed (ms since the operator's epoch).
    touched_ms: u64,
    /// The batch that last captured this partition's result before changing it.
    mark: u64,
}

/// The partitions a batch changed, with their results before the batch, in first-change order.
type Touched = Vec<(Box<[u8]>, Ranked)>;

/// The unwindowed Top-N operator (see the module comment).
pub struct Rank {
    spec: Arc<RankSpec>,
    cfg: Cfg,
    data_conv: RowConverter,
    parser: RowParser,
    key_conv: Option<RowConverter>,
    ord_conv: Option<RowConverter>,
    partitions: hashbrown::HashMap<Box<[u8]>, Partition>,
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
        let data_conv = converter(types.iter().cloned().map(SortField::new).collect(), "these columns")?
            .ok_or_else(|| RuntimeError::Internal("Top-N input has no columns".into()))?;
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
            parser: data_conv.parser(),
            data_conv,
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

    /// Partition keys, ordering keys and data rows of `batch` (whose first columns are the data).
    fn convert(&self, batch: &RecordBatch, data: &[ArrayRef]) -> Result<(Option<Rows>, Option<Rows>, Rows)> {
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
        let rows = self.data_conv.convert_columns(data).map_err(RuntimeError::arrow("Top-N rows"))?;
        Ok((keys, sorts, rows))
    }

    /// Applies one row to its partition. `seq` is given for restored rows; `touched` is None on
    /// restore (no output).
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
    ) {
        let cfg = self.cfg;
        if !add && !self.partitions.contains_key(key) {
            return;
        }
        let part = (self.partitions.entry_ref(key)).or_insert_with(|| Partition {
            store: Store::Vec(Vec::new()),
            touched_ms: now_ms,
            mark: 0,
        });
        if let Some(ttl) = cfg.ttl_ms
            && part.mark != self.batch_no
            && now_ms.saturating_sub(part.touched_ms) >= ttl
        {
            part.store = Store::Vec(Vec::new());
        }
        let entry = if add {
            let seq = seq.unwrap_or(self.next_seq);
            self.next_seq = self.next_seq.max(seq.saturating_add(1));
            let tie = cfg.tie(seq);
            if !cfg.keep_all && !part.store.would_keep(sort, tie, &cfg) {
                return;
            }
            Entry::new(sort, row, tie)
        } else {
            match part.store.find_equal(sort, row) {
                Some(e) => e,
                None => return,
            }
        };
        if let Some(t) = touched
            && part.mark != self.batch_no
        {
            part.mark = self.batch_no;
            t.push((key.into(), part.store.result(&cfg)));
        }
        if add {
            part.store.insert(entry);
            if !cfg.keep_all {
                let keep = part.store.walk(&cfg, |_, _| {});
                part.store.truncate(keep);
            }
        } else {
            part.store.remove(&entry);
        }
        part.touched_ms = now_ms;
    }

    /// Forgets expired and empty partitions, at most once per sweep interval.
    fn sweep(&mut self, now_ms: u64) {
        let Some(ttl) = self.cfg.ttl_ms else { return };
        if now_ms < self.last_sweep_ms + self.cfg.sweep_ms {
            return;
        }
        self.last_sweep_ms = now_ms;
        self.partitions.retain(|_, p| !p.store.is_empty() && now_ms.saturating_sub(p.touched_ms) < ttl);
    }

    /// `process` with an explicit clock reading.
    fn process_at(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>, now: Instant) -> Result<()> {
        let now_ms = self.ms(now);
        self.sweep(now_ms);
        self.batch_no += 1;
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
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
        for i in 0..n {
            let add = match &kinds {
                Some(k) => RowKind::from_code(k.value(i))?.is_addition(),
                None => true,
            };
            let key = keys.as_ref().map_or(&[][..], |k| k.row(i).data());
            let sort = sorts.as_ref().map_or(&[][..], |s| s.row(i).data());
            self.apply(key, sort, rows.row(i).data(), add, None, now_ms, Some(&mut touched));
        }
        let (mut emitted, mut numbers, mut kinds) = (Vec::new(), Vec::new(), Vec::new());
        for (key, old) in touched {
            let Some(part) = self.partitions.get(&key) else { continue };
            let new = part.store.result(&self.cfg);
            if self.spec.emit_number {
                for i in 0..old.len().max(new.len()) {
                    match (old.get(i), new.get(i)) {
                        (Some(o), Some(n)) if o.0.row() == n.0.row() && o.1 == n.1 => {}
                        (Some(o), Some(n)) => {
                            emitted.extend([o.0.clone(), n.0.clone()]);
                            numbers.extend([o.1, n.1]);
                            kinds.extend([RowKind::UpdateBefore, RowKind::UpdateAfter]);
                        }
                        (Some((e, num)), None) | (None, Some((e, num))) => {
                            emitted.push(e.clone());
                            numbers.push(*num);
                            kinds.push(if i < old.len() { RowKind::Delete } else { RowKind::Insert });
                        }
                        (None, None) => {}
                    }
                }
            } else {
                for (e, n) in unmatched(&old, &new) {
                    emitted.push(e.clone());
                    numbers.push(n);
                    kinds.push(RowKind::Delete);
                }
                for (e, n) in unmatched(&new, &old) {
                    emitted.push(e.clone());
                    numbers.push(n);
                    kinds.push(RowKind::Insert);
                }
            }
            if part.store.is_empty() {
                self.partitions.remove(&key);
            }
        }
        if !emitted.is_empty() {
            let mut cols = self.to_columns(emitted.iter().map(Entry::row))?;
            if self.spec.emit_number {
                cols.push(Arc::new(UInt64Array::from(numbers)));
            }
            out.push(changelog_batch(self.spec.output_schema.clone(), cols, &kinds)?);
        }
        Ok(())
    }

    /// Data rows back to columns of the input's types.
    fn to_columns<'a>(&self, rows: impl Iterator<Item = &'a [u8]>) -> Result<Vec<ArrayRef>> {
        let cols = (self.data_conv.convert_rows(rows.map(|r| self.parser.parse(r))))
            .map_err(RuntimeError::arrow("Top-N output rows"))?;
        // The row format hydrates dictionaries: cast back where the input type differs.
        (cols.into_iter().zip(self.spec.input_schema.fields()))
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    arrow::compute::cast(&c, f.data_type()).map_err(RuntimeError::arrow("Top-N output rows"))
                }
            })
            .collect()
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
        for i in 0..data.num_rows() {
            let key = keys.as_ref().map_or(&[][..], |k| k.row(i).data());
            let sort = sorts.as_ref().map_or(&[][..], |s| s.row(i).data());
            self.apply(key, sort, rows.row(i).data(), true, Some(seqs.value(i)), now_ms, None);
        }
        Ok(())
    }
}

/// The rows of `a` (with their numbers) left over after matching them one-to-one with equal rows
/// of `b`, in `a`'s order.
fn unmatched<'a>(a: &'a Ranked, b: &Ranked) -> Vec<(&'a Entry, u64)> {
    let by_row = |r: &Ranked| {
        let mut idx: Vec<usize> = (0..r.len()).collect();
        idx.sort_by(|&x, &y| r[x].0.row().cmp(r[y].0.row()));
        idx
    };
    let (ai, bi) = (by_row(a), by_row(b));
    let mut matched = vec![false; a.len()];
    let (mut i, mut j) = (0, 0);
    while i < ai.len() && j < bi.len() {
        match a[ai[i]].0.row().cmp(b[bi[j]].0.row()) {
            Ordering::Less => i += 1,
            Ordering::Greater => j += 1,
            Ordering::Equal => {
                matched[ai[i]] = true;
                i += 1;
                j += 1;
            }
        }
    }
    a.iter().zip(matched).filter(|(_, m)| !m).map(|((e, n), _)| (e, *n)).collect()
}

impl Operator for Rank {
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()> {
        self.key_groups = ctx.key_groups;
        let range = KeyGroupRange::of_subtask(ctx.subtask, ctx.key_groups, ctx.parallelism);
        let now_ms = self.ms(Instant::now());
        for part in restored.parts.iter().filter(|p| !p.is_empty()) {
            let batch = keel_state::batch_from_ipc(part, "Top-N state")?;
            self.restore_part(&batch, range, now_ms)?;
        }
        Ok(())
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.process_at(batch, out, Instant::now())
    }

    fn snapshot(&mut self, _checkpoint: u64) -> Result<Option<Vec<u8>>> {
        let now_ms = self.ms(Instant::now());
        let live = |p: &&Partition| self.cfg.ttl_ms.is_none_or(|ttl| now_ms.saturating_sub(p.touched_ms) < ttl);
        let entries: Vec<&Entry> = self.partitions.values().filter(live).flat_map(|p| p.store.iter()).collect();
        if entries.is_empty() {
            return Ok(None);
        }
        let cols = self.to_columns(entries.iter().map(|e| e.row()))?;
        let data = RecordBatch::try_new(self.spec.input_schema.clone(), cols)
            .map_err(RuntimeError::arrow("Top-N snapshot"))?;
        let groups = row_key_groups(&data, &self.spec.partition_cols, self.key_groups)?;
        let seqs: UInt64Array = entries.iter().map(|e| self.cfg.tie(e.tie)).collect::<Vec<u64>>().into();
        let mut fields = vec![Field::new("key_group", DataType::UInt32, false)];
        fields.extend(self.spec.input_schema.fields().iter().map(|f| f.as_ref().clone()));
        fields.push(Field::new(SEQ_COLUMN, DataType::UInt64, false));
        let mut cols: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from(groups))];
        cols.extend(data.columns().iter().cloned());
        cols.push(Arc::new(seqs));
        let batch =
            RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(RuntimeError::arrow("Top-N snapshot"))?;
        Ok(Some(keel_state::batch_to_ipc(&batch)?))
    }
}

#[cfg(test)]
#[path = "rank_tests.rs"]
mod tests;
