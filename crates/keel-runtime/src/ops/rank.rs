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
        let bytes: Arc<[u8]> = sort.iter().chain(row).copied().collect();
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
mod tests {
    use super::*;
    use crate::changelog::with_op_field;
    use crate::exchange::split_by_key;
    use crate::metrics::Metrics;
    use RowKind::{Delete, Insert, UpdateAfter, UpdateBefore};
    use arrow::array::Int64Array;
    use arrow::util::display::array_value_to_string;
    use datafusion::physical_expr::expressions::Column;

    type Row3 = (i64, i64, i64);

    #[derive(Clone, Copy, Debug)]
    struct Opts {
        limit: usize,
        desc: bool,
        later_wins: bool,
        number: bool,
        updating: bool,
        numbering: Numbering,
        ttl: Option<Duration>,
    }
    const DEDUP: Opts = Opts {
        limit: 1,
        desc: false,
        later_wins: false,
        number: true,
        updating: false,
        numbering: Numbering::RowNumber,
        ttl: None,
    };

    fn schema() -> SchemaRef {
        let f = |n| Field::new(n, DataType::Int64, false);
        Arc::new(Schema::new(vec![f("k"), f("ts"), f("v")]))
    }

    /// PARTITION BY k ORDER BY ts.
    fn op(o: Opts) -> Rank {
        let mut out: Vec<Field> = schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        if o.number {
            out.push(Field::new("rn", DataType::UInt64, false));
        }
        let order: Arc<dyn PhysicalExpr> = Arc::new(Column::new("ts", 1));
        Rank::new(Arc::new(RankSpec {
            input_schema: schema(),
            input_updating: o.updating,
            partition_cols: vec![0],
            order: vec![(order, SortOptions { descending: o.desc, nulls_first: false })],
            limit: o.limit,
            numbering: o.numbering,
            emit_number: o.number,
            later_wins_ties: o.later_wins,
            state_ttl: o.ttl,
            output_schema: with_op_field(&Schema::new(out)),
        }))
        .unwrap()
    }

    /// Rows (k, ts, v); a changelog batch when `kinds` is not empty.
    fn batch(rows: &[Row3], kinds: &[RowKind]) -> RecordBatch {
        let col = |f: fn(&Row3) -> i64| Arc::new(Int64Array::from_iter_values(rows.iter().map(f))) as ArrayRef;
        let cols = vec![col(|r| r.0), col(|r| r.1), col(|r| r.2)];
        if kinds.is_empty() {
            RecordBatch::try_new(schema(), cols).unwrap()
        } else {
            changelog_batch(with_op_field(&schema()), cols, kinds).unwrap()
        }
    }

    /// Output rows as "+I k,ts,v[,number]".
    fn lines(out: &[RecordBatch]) -> Vec<String> {
        let mut v = vec![];
        for b in out {
            let kinds = row_kinds(b).unwrap();
            for i in 0..b.num_rows() {
                let vals: Vec<String> =
                    (0..b.num_columns() - 1).map(|c| array_value_to_string(b.column(c), i).unwrap()).collect();
                v.push(format!("{} {}", RowKind::from_code(kinds.value(i)).unwrap().short(), vals.join(",")));
            }
        }
        v
    }

    fn run(r: &mut Rank, rows: &[Row3], kinds: &[RowKind]) -> Vec<String> {
        let mut out = vec![];
        r.process(batch(rows, kinds), &mut out).unwrap();
        assert!(out.len() <= 1, "one output batch per input batch");
        lines(&out)
    }

    fn ctx(subtask: u32, parallelism: u32) -> TaskContext {
        TaskContext {
            job: "t".into(),
            stage: "s".into(),
            subtask,
            parallelism,
            key_groups: 128,
            data_dir: ".".into(),
            job_dir: ".".into(),
            run_id: "r".into(),
            attempt: 0,
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// Applies changelog lines to a result table, checking that every retraction retracts a row
    /// of the table and that each -U is followed by a +U.
    fn replay(table: &mut Vec<String>, out: &[String]) {
        for (i, l) in out.iter().enumerate() {
            let (kind, row) = l.split_at(3);
            match kind {
                "+I " | "+U " => table.push(row.to_string()),
                _ => {
                    let at =
                        table.iter().position(|r| r == row).unwrap_or_else(|| panic!("{l} retracts a row not emitted"));
                    table.swap_remove(at);
                }
            }
            if kind == "-U " {
                assert!(out.get(i + 1).is_some_and(|n| n.starts_with("+U")), "-U not followed by +U in {out:?}");
            }
        }
    }

    /// The Top-N of live rows (in arrival order), computed naively, as sorted "k,ts,v[,number]".
    fn brute(rows: &[Row3], o: Opts) -> Vec<String> {
        let mut keys: Vec<i64> = rows.iter().map(|r| r.0).collect();
        keys.sort();
        keys.dedup();
        let mut res = vec![];
        for k in keys {
            let mut part: Vec<(usize, &Row3)> = rows.iter().filter(|r| r.0 == k).enumerate().collect();
            part.sort_by(|a, b| {
                let by_ts = if o.desc { b.1.1.cmp(&a.1.1) } else { a.1.1.cmp(&b.1.1) };
                by_ts.then(if o.later_wins { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) })
            });
            let (mut number, mut distinct) = (0, 0);
            for (pos, (_, r)) in part.iter().enumerate() {
                let tie = pos > 0 && part[pos - 1].1.1 == r.1;
                distinct += usize::from(!tie);
                number = match o.numbering {
                    Numbering::RowNumber => pos + 1,
                    Numbering::Rank if tie => number,
                    Numbering::Rank => pos + 1,
                    Numbering::DenseRank => distinct,
                };
                if number > o.limit {
                    break;
                }
                let n = if o.number { format!(",{number}") } else { String::new() };
                res.push(format!("{},{},{}{n}", r.0, r.1, r.2));
            }
        }
        res.sort();
        res
    }

    struct Lcg(u64);
    impl Lcg {
        fn seeded(name: &str) -> Lcg {
            let seed = std::env::var("KEEL_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
            });
            println!("{name}: seed {seed} (set KEEL_TEST_SEED to replay)");
            Lcg(seed)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn dedup_keep_first_ignores_later_rows_and_takes_earlier_timestamps() {
        let mut r = op(DEDUP);
        assert_eq!(run(&mut r, &[(1, 10, 1), (2, 7, 9)], &[]), ["+I 1,10,1,1", "+I 2,7,9,1"]);
        assert!(run(&mut r, &[(1, 20, 2), (1, 10, 4)], &[]).is_empty(), "larger or tied ts: first row stays");
        assert_eq!(run(&mut r, &[(1, 5, 3)], &[]), ["-U 1,10,1,1", "+U 1,5,3,1"]);
        // Two changes to one partition in a batch give one net change.
        assert_eq!(run(&mut r, &[(1, 4, 5), (1, 3, 6), (2, 8, 0)], &[]), ["-U 1,5,3,1", "+U 1,3,6,1"]);
        let mut r = op(Opts { number: false, ..DEDUP });
        assert_eq!(run(&mut r, &[(1, 10, 1)], &[]), ["+I 1,10,1"]);
        assert!(run(&mut r, &[(1, 20, 2)], &[]).is_empty());
        assert_eq!(run(&mut r, &[(1, 5, 3)], &[]), ["-D 1,10,1", "+I 1,5,3"]);
        assert_eq!(r.partitions.len(), 1);
        assert_eq!(r.partitions.values().next().unwrap().store.len(), 1, "append-only keeps only the top row");
    }

    #[test]
    fn dedup_keep_last_replaces_on_equal_timestamps() {
        let mut r = op(Opts { desc: true, later_wins: true, ..DEDUP });
        assert_eq!(run(&mut r, &[(1, 10, 1)], &[]), ["+I 1,10,1,1"]);
        assert_eq!(run(&mut r, &[(1, 10, 2)], &[]), ["-U 1,10,1,1", "+U 1,10,2,1"]);
        assert!(run(&mut r, &[(1, 9, 3)], &[]).is_empty());
        assert_eq!(run(&mut r, &[(1, 11, 4), (1, 11, 5)], &[]), ["-U 1,10,2,1", "+U 1,11,5,1"]);
    }

    #[test]
    fn top3_new_best_shifts_positions() {
        let mut r = op(Opts { limit: 3, ..DEDUP });
        let out = run(&mut r, &[(1, 20, 0), (1, 10, 1), (1, 30, 2), (1, 40, 3)], &[]);
        assert_eq!(out, ["+I 1,10,1,1", "+I 1,20,0,2", "+I 1,30,2,3"]);
        let out = run(&mut r, &[(1, 5, 4)], &[]);
        let shifted = ["-U 1,10,1,1", "+U 1,5,4,1", "-U 1,20,0,2", "+U 1,10,1,2", "-U 1,30,2,3", "+U 1,20,0,3"];
        assert_eq!(out, shifted);
        assert!(run(&mut r, &[(1, 25, 5)], &[]).is_empty());
        assert_eq!(run(&mut r, &[(1, 15, 6)], &[]), ["-U 1,20,0,3", "+U 1,15,6,3"]);
    }

    #[test]
    fn rank_numbers_ties_alike() {
        let mut r = op(Opts { limit: 2, numbering: Numbering::Rank, ..DEDUP });
        assert_eq!(run(&mut r, &[(1, 10, 0), (1, 10, 1), (1, 20, 2)], &[]), ["+I 1,10,0,1", "+I 1,10,1,1"]);
        let out = run(&mut r, &[(1, 5, 3)], &[]);
        assert_eq!(out, ["-U 1,10,0,1", "+U 1,5,3,1", "-U 1,10,1,1", "+U 1,10,0,2", "+I 1,10,1,2"]);
    }

    #[test]
    fn random_append_only_matches_brute_force() {
        let mut rng = Lcg::seeded("append-only");
        let top3 = Opts { limit: 3, ..DEDUP };
        let variants = [
            DEDUP,
            top3,
            Opts { number: false, desc: true, later_wins: true, ..top3 },
            Opts { numbering: Numbering::Rank, limit: 2, ..top3 },
            Opts { numbering: Numbering::DenseRank, limit: 2, number: false, ..top3 },
        ];
        for o in variants {
            let (mut r, mut all, mut table) = (op(o), vec![], vec![]);
            while all.len() < 600 {
                let rows: Vec<Row3> = (0..1 + rng.below(20))
                    .map(|_| (rng.below(6) as i64, rng.below(15) as i64, all.len() as i64 + rng.below(1 << 20) as i64))
                    .collect();
                all.extend_from_slice(&rows);
                replay(&mut table, &run(&mut r, &rows, &[]));
                table.sort();
                assert_eq!(table, brute(&all, o), "{o:?}");
            }
        }
    }

    #[test]
    fn random_changelog_input_matches_brute_force() {
        let mut rng = Lcg::seeded("changelog");
        for o in [Opts { limit: 3, updating: true, ..DEDUP }, Opts { limit: 2, updating: true, number: false, ..DEDUP }]
        {
            let (mut r, mut live, mut table, mut next_v, mut was_tree) = (op(o), Vec::<Row3>::new(), vec![], 0, false);
            for step in 0..160 {
                let (mut rows, mut kinds) = (vec![], vec![]);
                // The last 10 steps retract everything left.
                let count = if step >= 150 { live.len().div_ceil(160 - step) as u64 } else { 1 + rng.below(30) };
                for _ in 0..count {
                    next_v += 1;
                    let fresh = (rng.below(2) as i64, rng.below(40) as i64, next_v);
                    match rng.below(20) {
                        _ if step >= 150 => {
                            if let Some(old) = live.pop() {
                                rows.push(old);
                                kinds.push(Delete);
                            }
                        }
                        0..13 => {
                            rows.push(fresh);
                            kinds.push(Insert);
                            live.push(fresh);
                        }
                        13..18 if !live.is_empty() => {
                            let old = live.remove(rng.below(live.len() as u64) as usize);
                            let new = (old.0, rng.below(40) as i64, next_v);
                            rows.extend([old, new]);
                            kinds.extend([UpdateBefore, UpdateAfter]);
                            live.push(new);
                        }
                        _ => {
                            rows.push(fresh);
                            kinds.push(Delete);
                        }
                    }
                }
                if !rows.is_empty() {
                    replay(&mut table, &run(&mut r, &rows, &kinds));
                }
                was_tree |= r.partitions.values().any(|p| matches!(p.store, Store::Tree(_)));
                table.sort();
                assert_eq!(table, brute(&live, o), "{o:?} step {step}");
            }
            assert!(was_tree, "large partitions move to a B-tree");
            assert!(live.is_empty() && table.is_empty() && r.partitions.is_empty(), "all retracted, all forgotten");
        }
    }

    #[test]
    fn changelog_delete_brings_the_fourth_row_up() {
        let mut r = op(Opts { limit: 3, updating: true, ..DEDUP });
        let out = run(&mut r, &[(1, 10, 0), (1, 20, 1), (1, 30, 2), (1, 40, 3)], &[Insert; 4]);
        assert_eq!(out, ["+I 1,10,0,1", "+I 1,20,1,2", "+I 1,30,2,3"]);
        assert!(run(&mut r, &[(1, 20, 9), (2, 1, 1)], &[Delete, UpdateBefore]).is_empty(), "nothing held: ignored");
        let out = run(&mut r, &[(1, 20, 1)], &[Delete]);
        assert_eq!(out, ["-U 1,20,1,2", "+U 1,30,2,2", "-U 1,30,2,3", "+U 1,40,3,3"]);
        let out = run(&mut r, &[(1, 10, 0), (1, 50, 0)], &[UpdateBefore, UpdateAfter]);
        let moved = ["-U 1,10,0,1", "+U 1,30,2,1", "-U 1,30,2,2", "+U 1,40,3,2", "-U 1,40,3,3", "+U 1,50,0,3"];
        assert_eq!(out, moved);
        let out = run(&mut r, &[(1, 30, 2), (1, 40, 3), (1, 50, 0)], &[Delete; 3]);
        assert_eq!(out, ["-D 1,30,2,1", "-D 1,40,3,2", "-D 1,50,0,3"]);
        assert!(r.partitions.is_empty(), "an emptied partition is forgotten");
    }

    #[test]
    fn restore_at_parallelism_two_splits_by_key_group_and_continues() {
        let o = Opts { limit: 2, ..DEDUP };
        let mut a = op(o);
        let first: Vec<Row3> =
            (0..20).flat_map(|k| [(k, 10, k * 10), (k, 20, k * 10 + 1), (k, 30, k * 10 + 2)]).collect();
        run(&mut a, &first, &[]);
        let bytes = a.snapshot(1).unwrap().unwrap();
        let state = RestoredState { parts: vec![bytes], inherited: vec![0], checkpoint: Some(1) };
        let mut subs: Vec<Rank> = (0..2)
            .map(|s| {
                let mut r = op(o);
                r.open(&ctx(s, 2), state.clone()).unwrap();
                r
            })
            .collect();
        let groups = row_key_groups(&batch(&first, &[]), &[0], 128).unwrap();
        for (row, g) in first.iter().zip(groups) {
            for (s, sub) in subs.iter().enumerate() {
                let key: ArrayRef = Arc::new(Int64Array::from(vec![row.0]));
                let key = sub.key_conv.as_ref().unwrap().convert_columns(&[key]).unwrap();
                let owns = KeyGroupRange::of_subtask(s as u32, 128, 2).contains(g);
                assert_eq!(sub.partitions.contains_key(key.row(0).data()), owns, "key {} subtask {s}", row.0);
            }
        }
        assert!(subs.iter().all(|s| !s.partitions.is_empty() && s.partitions.len() < 20));
        // Ties with restored rows must rank after them (the arrival counter continues above them).
        let next: Vec<Row3> = (0..20).flat_map(|k| [(k, 10, 1000 + k), (k, 5 + k % 3 * 10, 2000 + k)]).collect();
        let mut expected = run(&mut a, &next, &[]);
        let mut got = vec![];
        for (sub, part) in subs.iter_mut().zip(split_by_key(&batch(&next, &[]), &[0], 128, 2).unwrap()) {
            let mut out = vec![];
            sub.process(part.unwrap(), &mut out).unwrap();
            got.extend(lines(&out));
        }
        expected.sort();
        got.sort();
        assert!(expected.contains(&"+U 1,10,1001,2".to_string()), "{expected:?}");
        assert_eq!(got, expected);
        assert!(op(o).snapshot(2).unwrap().is_none(), "empty state");
    }

    #[test]
    fn ttl_forgets_idle_partitions_without_output() {
        let mut r = op(Opts { ttl: Some(Duration::from_secs(10)), ..DEDUP });
        let t0 = Instant::now();
        let mut at = |rows: &[Row3], secs: u64| {
            let mut out = vec![];
            r.process_at(batch(rows, &[]), &mut out, t0 + Duration::from_secs(secs)).unwrap();
            (lines(&out), r.partitions.len())
        };
        assert_eq!(at(&[(1, 10, 0), (2, 10, 1)], 0).0, ["+I 1,10,0,1", "+I 2,10,1,1"]);
        // A row that does not enter does not refresh partition 1; partition 2 changes at 5 s.
        assert!(at(&[(1, 20, 2)], 5).0.is_empty());
        assert_eq!(at(&[(2, 5, 3)], 5).0, ["-U 2,10,1,1", "+U 2,5,3,1"]);
        assert!(at(&[(2, 6, 9)], 9).0.is_empty(), "partition 2 is still held at 9 s");
        // At 10 s partition 1 is forgotten: a larger row is a fresh insert with no retraction.
        assert_eq!(at(&[(1, 30, 4), (2, 7, 5)], 10).0, ["+I 1,30,4,1"]);
        assert_eq!(at(&[(3, 1, 6)], 100), (vec!["+I 3,1,6,1".to_string()], 1), "the sweep freed 1 and 2");
    }

    #[test]
    #[ignore]
    fn bench_dedup() {
        let mut r = op(DEDUP);
        let t = Instant::now();
        let mut rng = Lcg(7);
        let mut n_out = 0;
        for b in 0..2000 {
            let rows: Vec<Row3> = (0..1000).map(|i| (rng.below(500_000) as i64, b * 1000 + i, i)).collect();
            let mut out = vec![];
            r.process(batch(&rows, &[]), &mut out).unwrap();
            n_out += out.iter().map(|b| b.num_rows()).sum::<usize>();
        }
        println!("2M rows {:?}, out {n_out}, partitions {}", t.elapsed(), r.partitions.len());
        let t = Instant::now();
        let snap = r.snapshot(1).unwrap().unwrap();
        println!("snapshot {} bytes in {:?}", snap.len(), t.elapsed());
        let t = Instant::now();
        let mut r2 = op(DEDUP);
        r2.open(&ctx(0, 1), RestoredState { parts: vec![snap], inherited: vec![0], checkpoint: Some(1) }).unwrap();
        println!("restore {:?} partitions {}", t.elapsed(), r2.partitions.len());
        let mut r = op(Opts { limit: 1, desc: true, later_wins: true, ..DEDUP });
        let t = Instant::now();
        for b in 0..2000 {
            let rows: Vec<Row3> = (0..1000).map(|i| (rng.below(500_000) as i64, b * 1000 + i, i)).collect();
            let mut out = vec![];
            r.process(batch(&rows, &[]), &mut out).unwrap();
        }
        println!("keep-last 2M rows {:?}", t.elapsed());
    }
}
