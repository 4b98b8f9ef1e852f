//! Two-input joins on equal keys: regular joins (inner, left, right, full outer) whose state
//! lives until a TTL forgets it, and time-bounded inner joins (interval and window joins) whose
//! rows are dropped once the watermark says no partner can arrive any more.
//!
//! Each side keeps its rows per join key, with multiplicities. The rows' columns stay columnar:
//! the rows an input batch adds go into a stored batch (the batch itself when all are kept, a
//! `take` otherwise), and each held row points at its place there; output, snapshots and the
//! non-equi condition gather rows from those batches (`interleave`), with no per-row allocation
//! or row-format round trip (`held.rs`). A stored batch is freed when its last held row goes. A
//! changelog side also keeps each row in Arrow's row format, to find the equal row a retraction
//! removes. A row arriving on one side is matched against the other side's rows with the same
//! key (and the optional non-equi condition); additions emit `+I` joined rows, retractions (`-U`/`-D` of a changelog
//! input) emit `-D` for the rows they had produced. For outer joins a row without partner is
//! emitted padded with NULLs, and retracted (`-D`) when its first partner arrives, as Flink does.
//!
//! Invariants: both inputs are hash partitioned by their join keys, so equal keys meet on one
//! subtask; a key containing NULL never matches (SQL equality), so such rows are not kept (an
//! outer side emits them padded at once); state is checkpointed per key group and restored by key
//! group; a time-bounded side's row is forgotten once `watermark >= time + offset`, and a row that
//! arrives already past that point is late (counted, and dropped or written to its table's
//! dead-letter output, staged with each checkpoint and committed when it completes).

use crate::changelog::{RowKind, changelog_batch, row_kinds};
use crate::error::{Result, RuntimeError};
use crate::exchange::row_key_groups;
use crate::metrics::Metrics;
use crate::operator::{Operator, RestoredState, SideOutputFactory, TaskContext, write_error};
use crate::ops::held::{HeldBatches, by_position, snapshot_chunks};
use crate::ops::join_filter::JoinFilter;
use crate::ops::late::LateRows;
use crate::ops::short_bytes::ShortBytes;
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use hashbrown::HashMap;
use keel_state::{Counted, StateOut};
use keel_types::KeyGroupRange;
use keel_types::time::MIN_WATERMARK;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinType {
    Inner,
    Left,
    Right,
    Full,
    /// The left rows that have a partner (each once), left columns only.
    LeftSemi,
    /// The left rows without a partner, left columns only.
    LeftAnti,
    RightSemi,
    RightAnti,
}

impl JoinType {
    /// Whether rows of `side` (0 left, 1 right) without partner are emitted (padded with NULLs
    /// for outer joins, as they are for anti joins).
    fn preserves(self, side: usize) -> bool {
        matches!(
            (self, side),
            (JoinType::Left | JoinType::Full | JoinType::LeftAnti, 0)
                | (JoinType::Right | JoinType::Full | JoinType::RightAnti, 1)
        )
    }

    /// Whether rows of `side` with at least one partner are emitted once (a semi join).
    fn semi(self, side: usize) -> bool {
        matches!((self, side), (JoinType::LeftSemi, 0) | (JoinType::RightSemi, 1))
    }

    /// Whether matched pairs are emitted (every join but semi and anti joins).
    fn pairs(self) -> bool {
        matches!(self, JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full)
    }

    /// Which sides' columns the output has.
    pub fn output_sides(self) -> [bool; 2] {
        match self {
            JoinType::LeftSemi | JoinType::LeftAnti => [true, false],
            JoinType::RightSemi | JoinType::RightAnti => [false, true],
            _ => [true, true],
        }
    }
}

/// One side of a join.
#[derive(Debug, Clone)]
pub struct JoinSide {
    /// Data columns (a changelog input's batches have `_op` after them).
    pub schema: SchemaRef,
    pub updating: bool,
    pub keys: Vec<usize>,
    /// For time-bounded joins: the time column (Timestamp or Int64 milliseconds) and the offset
    /// after which a row can have no new partner: it is dropped once `watermark >= time + offset`.
    pub expiry: Option<(usize, i64)>,
}

#[derive(Debug, Clone)]
pub struct JoinSpec {
    pub left: JoinSide,
    pub right: JoinSide,
    pub join_type: JoinType,
    /// The non-equi part of the ON condition, over left columns followed by right columns.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// Left columns, right columns, then `_op` when `output_updating`.
    pub output_schema: SchemaRef,
    /// False only when no retraction can come out (inner join of append-only inputs).
    pub output_updating: bool,
    pub state_ttl: Option<Duration>,
    /// Where each side's late rows go (`'late-records' = 'dead-letter'` on its table); `None`
    /// drops them (they are counted either way).
    pub late_output: [Option<SideOutputFactory>; 2],
}

struct Entry {
    /// Where the row's columns are: (stored batch, row in it).
    at: (u32, u32),
    /// The row in row format, kept on a changelog side only (retractions find equal rows by it).
    row: Option<Box<[u8]>>,
    count: i64,
    /// Partner rows (with multiplicity) on the other side, for outer joins.
    matches: i64,
    expiry: i64,
    /// When the row was last added, in milliseconds since the operator's `epoch` (state TTL).
    touched: u64,
}

// A regular join holds one entry per row for ever (q20: 9 M of them at 10 M events), so its size
// matters: the key group is computed again from the key columns when a snapshot is written, and
// the time is 8 bytes rather than an `Instant`'s 16.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Entry>() == 56);

#[derive(Default)]
struct SideState {
    rows: HashMap<ShortBytes, Vec<Entry>>,
    /// Expiry time → keys with a row expiring then (time-bounded sides only).
    expiries: BTreeMap<i64, Vec<ShortBytes>>,
    /// The columns of held rows: one stored batch per input batch that added rows.
    held: HeldBatches,
}

/// Where an output row's part comes from: row `i` of the batch being processed, or a held row.
#[derive(Debug, Clone, Copy)]
enum Ref {
    Current(u32),
    Held(u32, u32),
}

/// Output rows of one batch: where each one's left and right parts come from (`None` = NULL
/// padded).
#[derive(Default)]
struct OutRows {
    rows: Vec<(Option<Ref>, Option<Ref>, RowKind)>,
}

impl OutRows {
    /// `me` (a row of side `s`) with `other` (of the other side, or NULLs).
    fn push_from(&mut self, s: usize, me: Option<Ref>, other: Option<Ref>, kind: RowKind) {
        self.rows.push(if s == 0 { (me, other, kind) } else { (other, me, kind) });
    }

    fn part(&self, side: usize, row: usize) -> Option<Ref> {
        if side == 0 { self.rows[row].0 } else { self.rows[row].1 }
    }
}

pub struct Join {
    spec: Arc<JoinSpec>,
    filter: Option<JoinFilter>,
    /// Converters for each side's data columns and for the join keys (shared by both sides).
    rows: [RowConverter; 2],
    keys: RowConverter,
    state: [SideState; 2],
    watermark: i64,
    key_groups: u32,
    /// The zero of `Entry::touched`.
    epoch: Instant,
    last_expiry: Instant,
    metrics: Option<Arc<Metrics>>,
    /// Each side's late rows (see `JoinSpec::late_output`).
    late: [LateRows; 2],
}

fn converter(schema: &Schema, cols: &[usize]) -> Result<RowConverter> {
    RowConverter::new(cols.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect())
        .map_err(RuntimeError::arrow("join rows"))
}

fn millis(col: &ArrayRef) -> Result<Vec<i64>> {
    let c = match col.data_type() {
        DataType::Timestamp(_, _) => arrow::compute::cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None))
            .and_then(|c| arrow::compute::cast(&c, &DataType::Int64)),
        _ => arrow::compute::cast(col, &DataType::Int64),
    }
    .map_err(RuntimeError::arrow("join time column"))?;
    let c = c.as_primitive::<Int64Type>();
    Ok((0..c.len()).map(|i| if c.is_null(i) { i64::MIN } else { c.value(i) }).collect())
}

impl Join {
    pub fn new(spec: Arc<JoinSpec>) -> Result<Self> {
        let all = |s: &JoinSide| (0..s.schema.fields().len()).collect::<Vec<_>>();
        let rows = [converter(&spec.left.schema, &all(&spec.left))?, converter(&spec.right.schema, &all(&spec.right))?];
        if spec.left.keys.len() != spec.right.keys.len() || spec.left.keys.is_empty() {
            return Err(RuntimeError::Internal("a join needs the same number (> 0) of keys on both sides".into()));
        }
        for (&l, &r) in spec.left.keys.iter().zip(&spec.right.keys) {
            let (lt, rt) = (spec.left.schema.field(l).data_type(), spec.right.schema.field(r).data_type());
            if lt != rt {
                return Err(RuntimeError::Internal(format!("join key types differ: {lt} and {rt}")));
            }
        }
        let keys = converter(&spec.left.schema, &spec.left.keys)?;
        Ok(Join {
            filter: JoinFilter::new(&spec)?,
            spec,
            rows,
            keys,
            state: [SideState::default(), SideState::default()],
            watermark: MIN_WATERMARK,
            key_groups: keel_types::DEFAULT_KEY_GROUPS,
            epoch: Instant::now(),
            last_expiry: Instant::now(),
            metrics: None,
            late: [LateRows::default(), LateRows::default()],
        })
    }

    /// Milliseconds from the operator's epoch to `t`.
    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn side(&self, s: usize) -> &JoinSide {
        if s == 0 { &self.spec.left } else { &self.spec.right }
    }

    /// Processes a batch of side `s` arriving at `now` (the clock of the state TTL).
    fn on_batch(&mut self, s: usize, batch: &RecordBatch, out: &mut Vec<RecordBatch>, now: Instant) -> Result<()> {
        self.expire_ttl(now);
        let now_ms = self.ms(now);
        // The spec is shared (an Arc): a handle to it, not a copy of the side, per batch.
        let spec = self.spec.clone();
        let side = if s == 0 { &spec.left } else { &spec.right };
        let o = 1 - s;
        let n = batch.num_rows();
        let ncols = side.schema.fields().len();
        let data = &batch.columns()[..ncols];
        let additions: Vec<bool> = if side.updating {
            let ops = row_kinds(batch)?;
            ops.values().iter().map(|&c| RowKind::from_code(c).map(RowKind::is_addition)).collect::<Result<_>>()?
        } else {
            vec![true; n]
        };
        let expiry: Option<Vec<i64>> = match side.expiry {
            Some((col, off)) => Some(millis(batch.column(col))?.into_iter().map(|t| t.saturating_add(off)).collect()),
            None => None,
        };
        let key_cols: Vec<ArrayRef> = side.keys.iter().map(|&k| batch.column(k).clone()).collect();
        let keys = self.keys.convert_columns(&key_cols).map_err(RuntimeError::arrow("join keys"))?;
        // Row-format copies only where retractions must find equal rows.
        let rows = if side.updating {
            Some(self.rows[s].convert_columns(data).map_err(RuntimeError::arrow("join rows"))?)
        } else {
            None
        };
        let has_null: Vec<bool> = (0..n).map(|i| key_cols.iter().any(|c| c.is_null(i))).collect();
        let live: Vec<bool> = (0..n).map(|i| expiry.as_ref().is_none_or(|e| e[i] > self.watermark)).collect();
        let late: Vec<u32> = (0..n as u32).filter(|&i| !live[i as usize]).collect();
        if !late.is_empty() {
            let cols: Vec<usize> = (0..ncols).collect();
            let rows = batch.project(&cols).map_err(RuntimeError::arrow("late join rows"))?;
            let reason = "late: the watermark had passed the time bound of the join, so no row it could match was left";
            self.late[s].found(self.metrics.as_deref(), &rows, late, reason)?;
        }
        // Candidate partners of every row, from the other side's state (fixed for this batch).
        // (input row, entry index under its key, the entry's held row)
        let mut cand: Vec<(usize, usize, (u32, u32))> = vec![];
        // Each candidate's multiplicity, for joins that need nothing else of the partner's entry.
        let mut cand_count: Vec<i64> = vec![];
        for i in 0..n {
            if has_null[i] || !live[i] {
                continue;
            }
            if let Some(entries) = self.state[o].rows.get(keys.row(i).data()) {
                cand.extend(entries.iter().enumerate().map(|(j, e)| (i, j, e.at)));
                cand_count.extend(entries.iter().map(|e| e.count));
            }
        }
        // Only outer and semi joins read a partner's match count (its first match retracts its
        // NULL-padded row, ...); an inner join neither looks the partners up again nor writes
        // to them, so their entries' `matches` are not kept up to date (nothing reads them).
        let jt = self.spec.join_type;
        let track_partners = jt.preserves(o) || jt.semi(o);
        let passes = self.evaluate_filter(s, batch, &cand)?;
        let mut results = OutRows::default();
        // The rows this batch adds to the state, copied into one stored batch at the end.
        let new_id = self.state[s].held.reserve();
        let mut stored: Vec<u32> = vec![];
        let mut removed_new = 0usize;
        let mut c = 0;
        for i in 0..n {
            if !live[i] {
                continue;
            }
            let me = Some(Ref::Current(i as u32));
            let me_bytes: Option<&[u8]> = rows.as_ref().map(|r| r.row(i).data());
            let add = additions[i];
            if has_null[i] {
                if self.spec.join_type.preserves(s) {
                    results.push_from(s, me, None, if add { RowKind::Insert } else { RowKind::Delete });
                }
                continue;
            }
            let key = keys.row(i).data();
            let mut matched = 0i64;
            // The partners' entries under this key, looked up once for all of them (outer and
            // semi joins only: an inner join takes what it needs from `cand`).
            let has_cand = c < cand.len() && cand[c].0 == i;
            let mut partners = if has_cand && track_partners { self.state[o].rows.get_mut(key) } else { None };
            let (preserves_other, semi_other) = (jt.preserves(o), jt.semi(o));
            while c < cand.len() && cand[c].0 == i {
                if passes[c] {
                    let (at, count) = (cand[c].2, cand_count[c]);
                    let other = Some(Ref::Held(at.0, at.1));
                    matched += count;
                    // The partner's first match arrives, or its last one goes.
                    let (first, last) = match partners.as_mut().and_then(|v| v.get_mut(cand[c].1)) {
                        Some(e) => {
                            let before = e.matches;
                            e.matches += if add { 1 } else { -1 };
                            (add && before == 0, !add && before == 1)
                        }
                        None => (false, false),
                    };
                    if (first && preserves_other) || (last && semi_other) {
                        for _ in 0..count {
                            results.push_from(s, None, other, RowKind::Delete);
                        }
                    }
                    if jt.pairs() {
                        let kind = if add { RowKind::Insert } else { RowKind::Delete };
                        for _ in 0..count {
                            results.push_from(s, me, other, kind);
                        }
                    }
                    if (last && preserves_other) || (first && semi_other) {
                        for _ in 0..count {
                            results.push_from(s, None, other, RowKind::Insert);
                        }
                    }
                }
                c += 1;
            }
            if (matched == 0 && jt.preserves(s)) || (matched > 0 && jt.semi(s)) {
                results.push_from(s, me, None, if add { RowKind::Insert } else { RowKind::Delete });
            }
            let st = &mut self.state[s];
            if add {
                // One probe: the key is copied only when it is new.
                let entries = st.rows.entry_ref(key).or_default();
                // Equal rows share an entry only where retractions must find them (a changelog
                // input); an append-only side just keeps each row.
                let same = match me_bytes {
                    Some(b) => entries.iter_mut().find(|e| e.row.as_deref() == Some(b)),
                    None => None,
                };
                match same {
                    Some(e) => {
                        e.count += 1;
                        e.touched = now_ms;
                    }
                    None => {
                        let exp = expiry.as_ref().map_or(i64::MAX, |e| e[i]);
                        entries.push(Entry {
                            at: (new_id, stored.len() as u32),
                            row: me_bytes.map(Box::from),
                            count: 1,
                            matches: matched,
                            expiry: exp,
                            touched: now_ms,
                        });
                        stored.push(i as u32);
                        if exp != i64::MAX {
                            st.expiries.entry(exp).or_default().push(key.into());
                        }
                    }
                }
            } else if let Some(entries) = st.rows.get_mut(key) {
                let mut gone = None;
                if let Some(pos) = entries.iter().position(|e| e.row.is_some() && e.row.as_deref() == me_bytes) {
                    entries[pos].count -= 1;
                    if entries[pos].count <= 0 {
                        gone = Some(entries.swap_remove(pos).at);
                    }
                }
                if entries.is_empty() {
                    st.rows.remove(key);
                }
                match gone {
                    Some((id, _)) if id == new_id => removed_new += 1,
                    Some(at) => st.held.release(at),
                    None => {}
                }
            }
        }
        let live = stored.len() - removed_new;
        self.state[s].held.fill_rows(new_id, data, stored, live)?;
        if let Some(b) = self.output(results, s, batch)? {
            out.push(b);
        }
        Ok(())
    }

    /// Columns of the rows `refs` of side `s` (`None`: NULLs), gathered from the held batches
    /// and, when side `s` is the one being processed, from `current`.
    fn gather(&self, s: usize, refs: &[Option<Ref>], current: Option<&RecordBatch>) -> Result<Vec<ArrayRef>> {
        let all: Vec<usize> = (0..self.side(s).schema.fields().len()).collect();
        self.gather_cols(s, refs, current, &all)
    }

    /// Columns `cols` of side `s` of the rows `refs`, as `gather`.
    fn gather_cols(
        &self,
        s: usize,
        refs: &[Option<Ref>],
        current: Option<&RecordBatch>,
        cols: &[usize],
    ) -> Result<Vec<ArrayRef>> {
        let schema = &self.side(s).schema;
        let st = &self.state[s];
        // Source arrays: 0 = one NULL row, 1 = the current batch, then each held batch used.
        let mut used: HashMap<u32, usize> = HashMap::new();
        let mut order: Vec<u32> = vec![];
        let mut picks = Vec::with_capacity(refs.len());
        for r in refs {
            picks.push(match r {
                None => (0, 0),
                Some(Ref::Current(i)) if current.is_some() => (1, *i as usize),
                Some(Ref::Current(_)) => {
                    return Err(RuntimeError::Internal(
                        "a join output row points at a batch not being processed".into(),
                    ));
                }
                Some(Ref::Held(b, i)) => {
                    let src = *used.entry(*b).or_insert_with(|| {
                        order.push(*b);
                        order.len() + 1
                    });
                    (src, *i as usize)
                }
            });
        }
        let mut out = Vec::with_capacity(cols.len());
        for &c in cols {
            let null = arrow::array::new_null_array(schema.field(c).data_type(), 1);
            let cur = current.map(|b| b.column(c).clone()).unwrap_or_else(|| null.clone());
            let mut sources: Vec<&dyn Array> = vec![null.as_ref(), cur.as_ref()];
            for b in &order {
                sources.push(st.held.column(*b, c, "join")?.as_ref());
            }
            out.push(arrow::compute::interleave(&sources, &picks).map_err(RuntimeError::arrow("join rows"))?);
        }
        Ok(out)
    }

    /// Whether each candidate pair passes the non-equi condition, evaluated over only the columns
    /// it reads.
    fn evaluate_filter(&self, s: usize, batch: &RecordBatch, cand: &[(usize, usize, (u32, u32))]) -> Result<Vec<bool>> {
        let Some(filter) = &self.filter else { return Ok(vec![true; cand.len()]) };
        if cand.is_empty() {
            return Ok(vec![]);
        }
        let o = 1 - s;
        let idx = UInt32Array::from_iter_values(cand.iter().map(|c| c.0 as u32));
        let mine: Vec<ArrayRef> = (filter.cols[s].iter())
            .map(|&c| arrow::compute::take(batch.column(c).as_ref(), &idx, None))
            .collect::<std::result::Result<_, _>>()
            .map_err(RuntimeError::arrow("join condition"))?;
        let others: Vec<Option<Ref>> = cand.iter().map(|c| Some(Ref::Held(c.2.0, c.2.1))).collect();
        let theirs = self.gather_cols(o, &others, None, &filter.cols[o])?;
        let cols = if s == 0 { [mine, theirs].concat() } else { [theirs, mine].concat() };
        let joined = RecordBatch::try_new_with_options(
            filter.schema.clone(),
            cols,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(cand.len())),
        )
        .map_err(RuntimeError::arrow("join condition"))?;
        let v = (filter.expr)
            .evaluate(&joined)
            .and_then(|v| v.into_array(joined.num_rows()))
            .map_err(RuntimeError::expr("join condition"))?;
        let b = v.as_boolean_opt().ok_or_else(|| RuntimeError::Internal("join condition is not boolean".into()))?;
        Ok((0..b.len()).map(|i| b.is_valid(i) && b.value(i)).collect())
    }

    /// Turns output rows into a batch of the output schema; `current` is the batch of side
    /// `current_side` being processed.
    fn output(&self, results: OutRows, current_side: usize, current: &RecordBatch) -> Result<Option<RecordBatch>> {
        let n = results.rows.len();
        if n == 0 {
            return Ok(None);
        }
        let mut cols = vec![];
        let sides = self.spec.join_type.output_sides();
        for s in (0..2).filter(|&s| sides[s]) {
            let refs: Vec<Option<Ref>> = (0..n).map(|r| results.part(s, r)).collect();
            cols.extend(self.gather(s, &refs, (s == current_side).then_some(current))?);
        }
        let schema = self.spec.output_schema.clone();
        let kinds: Vec<RowKind> = results.rows.iter().map(|r| r.2).collect();
        if self.spec.output_updating {
            changelog_batch(schema, cols, &kinds).map(Some)
        } else {
            if kinds.iter().any(|k| *k != RowKind::Insert) {
                return Err(RuntimeError::Internal("an append-only join produced a retraction".into()));
            }
            RecordBatch::try_new(schema, cols).map(Some).map_err(RuntimeError::arrow("join output"))
        }
    }

    fn expire_ttl(&mut self, now: Instant) {
        let Some(ttl) = self.spec.state_ttl else { return };
        if now.duration_since(self.last_expiry) < Duration::from_secs(1).min(ttl) {
            return;
        }
        self.last_expiry = now;
        let (now_ms, ttl_ms) = (self.ms(now), u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        for st in &mut self.state {
            let mut gone = vec![];
            st.rows.retain(|_, v| {
                v.retain(|e| {
                    let keep = now_ms.saturating_sub(e.touched) < ttl_ms;
                    if !keep {
                        gone.push(e.at);
                    }
                    keep
                });
                !v.is_empty()
            });
            for at in gone {
                st.held.release(at);
            }
        }
    }

    fn snapshot_side(&self, s: usize, out: &mut dyn StateOut) -> Result<()> {
        let st = &self.state[s];
        // In stored order: each chunk reads its stored batches front to back, and a stretch of a
        // stored batch whose rows are all held is written as it is (`held::snapshot_chunks`).
        let (ats, entries) = by_position(st.rows.values().flatten().map(|e| (e.at, e)).collect());
        let mut fields = vec![
            Field::new("key_group", DataType::UInt32, false),
            Field::new("count", DataType::Int64, false),
            Field::new("matches", DataType::Int64, false),
            Field::new("expiry", DataType::Int64, false),
        ];
        let side = &self.side(s).schema;
        fields.extend(side.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)));
        let schema = Arc::new(Schema::new(fields));
        // Encoded a chunk at a time: a state of GBs is never copied whole first.
        let keys = &self.side(s).keys;
        let chunk = |r: std::ops::Range<usize>| -> Result<RecordBatch> {
            let part = &entries[r.clone()];
            let data = st.held.columns_of(&ats[r], side.fields().len(), "join snapshot")?;
            let data = RecordBatch::try_new(side.clone(), data).map_err(RuntimeError::arrow("join snapshot"))?;
            let mut cols: Vec<ArrayRef> = vec![
                Arc::new(UInt32Array::from(row_key_groups(&data, keys, self.key_groups)?)),
                Arc::new(Int64Array::from_iter_values(part.iter().map(|e| e.count))),
                Arc::new(Int64Array::from_iter_values(part.iter().map(|e| e.matches))),
                Arc::new(Int64Array::from_iter_values(part.iter().map(|e| e.expiry))),
            ];
            cols.extend(data.columns().iter().cloned());
            RecordBatch::try_new(schema.clone(), cols).map_err(RuntimeError::arrow("join snapshot"))
        };
        const CHUNK: usize = 64 * 1024;
        // An empty side is a stream with no batch, which reads back as zero rows.
        Ok(keel_state::write_batches(out, &schema, snapshot_chunks(&ats, CHUNK).into_iter().map(chunk))?)
    }

    /// Restores side `s` from its IPC stream, chunk by chunk (each chunk a stored batch).
    fn restore_side(&mut self, s: usize, bytes: &[u8], range: KeyGroupRange) -> Result<()> {
        for chunk in keel_state::batches_from_ipc(bytes, "join state")? {
            self.restore_chunk(s, &chunk?, range)?;
        }
        Ok(())
    }

    /// Restores the rows of one snapshot chunk of side `s` that this subtask owns.
    fn restore_chunk(&mut self, s: usize, chunk: &RecordBatch, range: KeyGroupRange) -> Result<()> {
        let Some(batch) = crate::exchange::owned_rows(chunk, range)? else { return Ok(()) };
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let num = |c: usize| batch.column(c).as_primitive::<Int64Type>().clone();
        let (count, matches, expiry) = (num(1), num(2), num(3));
        let data = &batch.columns()[4..];
        let rows = if self.side(s).updating {
            Some(self.rows[s].convert_columns(data).map_err(RuntimeError::arrow("restoring join state"))?)
        } else {
            None
        };
        let key_cols: Vec<ArrayRef> = self.side(s).keys.iter().map(|&k| data[k].clone()).collect();
        let keys = self.keys.convert_columns(&key_cols).map_err(RuntimeError::arrow("restoring join state"))?;
        let now_ms = self.ms(Instant::now());
        let st = &mut self.state[s];
        let id = st.held.reserve();
        // Copied: the decoded columns are slices of one buffer per chunk, which also holds the
        // key group, count, matches and expiry columns the held rows do not need.
        let all = UInt32Array::from_iter_values(0..batch.num_rows() as u32);
        let data = (data.iter())
            .map(|c| arrow::compute::take(c.as_ref(), &all, None))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(RuntimeError::arrow("restoring join state"))?;
        st.held.fill(id, data, batch.num_rows());
        for i in 0..batch.num_rows() {
            let key: ShortBytes = keys.row(i).data().into();
            let exp = expiry.value(i);
            if exp != i64::MAX {
                st.expiries.entry(exp).or_default().push(key.clone());
            }
            st.rows.entry(key).or_default().push(Entry {
                at: (id, i as u32),
                row: rows.as_ref().map(|r| r.row(i).data().into()),
                count: count.value(i),
                matches: matches.value(i),
                expiry: exp,
                touched: now_ms,
            });
        }
        Ok(())
    }
}

impl Operator for Join {
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()> {
        self.key_groups = ctx.key_groups;
        self.metrics = Some(ctx.metrics.clone());
        for (late, factory) in self.late.iter_mut().zip(&self.spec.late_output) {
            *late = LateRows::open(factory.as_ref(), ctx, restored.checkpoint)?;
        }
        let range = KeyGroupRange::of_subtask(ctx.subtask, ctx.key_groups, ctx.parallelism);
        let mut wm: Option<i64> = None;
        for part in restored.parts.iter().filter(|p| p.len() >= 16) {
            // watermark (8 bytes) | left length (8 bytes) | left IPC | right IPC
            let w = i64::from_le_bytes(part[0..8].try_into().map_err(|_| bad_state())?);
            let l = u64::from_le_bytes(part[8..16].try_into().map_err(|_| bad_state())?) as usize;
            let rest = &part[16..];
            if rest.len() < l {
                return Err(bad_state());
            }
            wm = Some(wm.map_or(w, |m| m.min(w)));
            self.restore_side(0, &rest[..l], range)?;
            self.restore_side(1, &rest[l..], range)?;
        }
        if let Some(w) = wm {
            self.watermark = w;
        }
        Ok(())
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.on_batch(0, &batch, out, Instant::now())
    }

    fn process_side(&mut self, side: usize, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        if side > 1 {
            return Err(RuntimeError::Internal(format!("a join has two inputs, not input {side}")));
        }
        self.on_batch(side, &batch, out, Instant::now())
    }

    fn on_watermark(&mut self, watermark: i64, _out: &mut Vec<RecordBatch>) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        // The operator's watermark, not the one just received: that may be lower (after a
        // restore), and a row kept here would have lost its expiry entry for good.
        let wm = self.watermark;
        for st in &mut self.state {
            while let Some(entry) = st.expiries.first_entry() {
                if *entry.key() > wm {
                    break;
                }
                let (_, keys) = entry.remove_entry();
                let mut gone = vec![];
                for key in keys {
                    if let Some(v) = st.rows.get_mut(&key) {
                        v.retain(|e| {
                            let keep = e.expiry > wm;
                            if !keep {
                                gone.push(e.at);
                            }
                            keep
                        });
                        if v.is_empty() {
                            st.rows.remove(&key);
                        }
                    }
                }
                for at in gone {
                    st.held.release(at);
                }
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        crate::operator::snapshot_in_memory(self, checkpoint)
    }

    /// watermark (8 bytes) | left length (8 bytes) | left IPC | right IPC, each side encoded a
    /// chunk at a time straight into `out` (the left length is filled in once it is known).
    fn checkpoint_complete(&mut self, checkpoint: u64) -> Result<()> {
        for late in &mut self.late {
            late.commit(checkpoint)?;
        }
        Ok(())
    }

    fn snapshot_into(&mut self, checkpoint: u64, out: &mut dyn StateOut) -> Result<bool> {
        // Late rows written since the last barrier are staged with this checkpoint.
        for late in &mut self.late {
            late.pre_commit(checkpoint)?;
        }
        if self.state.iter().all(|s| s.rows.is_empty()) {
            return Ok(false);
        }
        out.write_all(&self.watermark.to_le_bytes()).map_err(|e| write_error(out, e))?;
        let at = out.set_aside(8).map_err(|e| write_error(out, e))?;
        let mut counted = Counted::new(out);
        self.snapshot_side(0, &mut counted)?;
        let l_len = counted.written();
        out.fill(at, &l_len.to_le_bytes()).map_err(|e| write_error(out, e))?;
        self.snapshot_side(1, out)?;
        Ok(true)
    }
}

fn bad_state() -> RuntimeError {
    RuntimeError::Internal("join state is truncated".into())
}

#[cfg(test)]
#[path = "join_tests.rs"]
mod tests;
