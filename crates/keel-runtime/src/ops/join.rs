//! Two-input joins on equal keys: regular joins (inner, left, right, full outer) whose state
//! lives until a TTL forgets it, and time-bounded inner joins (interval and window joins) whose
//! rows are dropped once the watermark says no partner can arrive any more.
//!
//! Each side keeps its rows per join key (Arrow row format, with multiplicities). A row arriving
//! on one side is matched against the other side's rows with the same key (and the optional
//! non-equi condition); additions emit `+I` joined rows, retractions (`-U`/`-D` of a changelog
//! input) emit `-D` for the rows they had produced. For outer joins a row without partner is
//! emitted padded with NULLs, and retracted (`-D`) when its first partner arrives, as Flink does.
//!
//! Invariants: both inputs are hash partitioned by their join keys, so equal keys meet on one
//! subtask; a key containing NULL never matches (SQL equality), so such rows are not kept (an
//! outer side emits them padded at once); state is checkpointed per key group and restored by key
//! group; a time-bounded side's row is forgotten once `watermark >= time + offset`, and a row that
//! arrives already past that point is late (counted and dropped).

use crate::changelog::{RowKind, changelog_batch, row_kinds};
use crate::error::{Result, RuntimeError};
use crate::exchange::row_key_groups;
use crate::metrics::Metrics;
use crate::operator::{Operator, RestoredState, TaskContext};
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, UInt32Type};
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use hashbrown::HashMap;
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
}

struct Entry {
    row: Box<[u8]>,
    count: i64,
    /// Partner rows (with multiplicity) on the other side, for outer joins.
    matches: i64,
    key_group: u32,
    expiry: i64,
    touched: Instant,
}

#[derive(Default)]
struct SideState {
    rows: HashMap<Box<[u8]>, Vec<Entry>>,
    /// Expiry time → keys with a row expiring then (time-bounded sides only).
    expiries: BTreeMap<i64, Vec<Box<[u8]>>>,
}

/// One output row: left and right parts (row-format bytes; `None` = NULL padded).
/// Output rows of one batch: left and right parts as byte ranges of one buffer (`None` = NULL
/// padded), so that emitting a row copies bytes instead of allocating.
#[derive(Default)]
struct OutRows {
    bytes: Vec<u8>,
    rows: Vec<(Option<Span>, Option<Span>, RowKind)>,
}

/// Where a row part lies in `OutRows::bytes`: start and length.
type Span = (usize, usize);

impl OutRows {
    fn put(&mut self, b: Option<&[u8]>) -> Option<Span> {
        let b = b?;
        let at = self.bytes.len();
        self.bytes.extend_from_slice(b);
        Some((at, b.len()))
    }

    fn push(&mut self, left: Option<&[u8]>, right: Option<&[u8]>, kind: RowKind) {
        let (l, r) = (self.put(left), self.put(right));
        self.rows.push((l, r, kind));
    }

    /// `me` (a row of side `s`) with `other` (of the other side, or NULLs).
    fn push_from(&mut self, s: usize, me: Option<&[u8]>, other: Option<&[u8]>, kind: RowKind) {
        if s == 0 { self.push(me, other, kind) } else { self.push(other, me, kind) }
    }

    fn part(&self, side: usize, row: usize) -> Option<&[u8]> {
        let r = if side == 0 { self.rows[row].0 } else { self.rows[row].1 };
        r.map(|(at, len)| &self.bytes[at..at + len])
    }
}

pub struct Join {
    spec: Arc<JoinSpec>,
    /// Converters for each side's data columns and for the join keys (shared by both sides).
    rows: [RowConverter; 2],
    keys: RowConverter,
    state: [SideState; 2],
    watermark: i64,
    key_groups: u32,
    last_expiry: Instant,
    metrics: Option<Arc<Metrics>>,
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
            spec,
            rows,
            keys,
            state: [SideState::default(), SideState::default()],
            watermark: MIN_WATERMARK,
            key_groups: keel_types::DEFAULT_KEY_GROUPS,
            last_expiry: Instant::now(),
            metrics: None,
        })
    }

    fn side(&self, s: usize) -> &JoinSide {
        if s == 0 { &self.spec.left } else { &self.spec.right }
    }

    fn on_batch(&mut self, s: usize, batch: &RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let now = Instant::now();
        self.expire_ttl(now);
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
        let rows = self.rows[s].convert_columns(data).map_err(RuntimeError::arrow("join rows"))?;
        let has_null: Vec<bool> = (0..n).map(|i| key_cols.iter().any(|c| c.is_null(i))).collect();
        let key_groups = row_key_groups(batch, &side.keys, self.key_groups)?;
        let mut late = 0u64;
        let live: Vec<bool> = (0..n)
            .map(|i| {
                let ok = expiry.as_ref().is_none_or(|e| e[i] > self.watermark);
                late += u64::from(!ok);
                ok
            })
            .collect();
        if late > 0
            && let Some(m) = &self.metrics
        {
            Metrics::add(&m.late_records, late);
        }
        // Candidate partners of every row, from the other side's state (fixed for this batch).
        let mut cand: Vec<(usize, usize)> = vec![]; // (input row, entry index under its key)
        for i in 0..n {
            if has_null[i] || !live[i] {
                continue;
            }
            if let Some(entries) = self.state[o].rows.get(keys.row(i).data()) {
                cand.extend((0..entries.len()).map(|j| (i, j)));
            }
        }
        let passes = self.evaluate_filter(s, batch, &keys, &cand)?;
        let mut results = OutRows::default();
        let mut c = 0;
        for i in 0..n {
            if !live[i] {
                continue;
            }
            let me: &[u8] = rows.row(i).data();
            let add = additions[i];
            if has_null[i] {
                if self.spec.join_type.preserves(s) {
                    results.push_from(s, Some(me), None, if add { RowKind::Insert } else { RowKind::Delete });
                }
                continue;
            }
            let key = keys.row(i).data();
            let mut matched = 0i64;
            while c < cand.len() && cand[c].0 == i {
                if passes[c] {
                    let j = cand[c].1;
                    let jt = self.spec.join_type;
                    let preserves_other = jt.preserves(o);
                    let semi_other = jt.semi(o);
                    if let Some(e) = self.state[o].rows.get_mut(key).and_then(|v| v.get_mut(j)) {
                        matched += e.count;
                        let before = e.matches;
                        e.matches += if add { 1 } else { -1 };
                        let other: &[u8] = &e.row;
                        let count = e.count;
                        // The partner's first match arrives, or its last one goes.
                        let (first, last) = (add && before == 0, !add && before == 1);
                        if (first && preserves_other) || (last && semi_other) {
                            for _ in 0..count {
                                results.push_from(s, None, Some(other), RowKind::Delete);
                            }
                        }
                        if jt.pairs() {
                            for _ in 0..count {
                                let kind = if add { RowKind::Insert } else { RowKind::Delete };
                                results.push_from(s, Some(me), Some(other), kind);
                            }
                        }
                        if (last && preserves_other) || (first && semi_other) {
                            for _ in 0..count {
                                results.push_from(s, None, Some(other), RowKind::Insert);
                            }
                        }
                    }
                }
                c += 1;
            }
            let jt = self.spec.join_type;
            if (matched == 0 && jt.preserves(s)) || (matched > 0 && jt.semi(s)) {
                results.push_from(s, Some(me), None, if add { RowKind::Insert } else { RowKind::Delete });
            }
            let st = &mut self.state[s];
            if add {
                if !st.rows.contains_key(key) {
                    st.rows.insert(key.into(), vec![]);
                }
                let Some(entries) = st.rows.get_mut(key) else {
                    return Err(RuntimeError::Internal("a join key vanished right after its insertion".into()));
                };
                // Equal rows share an entry only where retractions must find them (a changelog
                // input); an append-only side just keeps each row.
                let same = if side.updating { entries.iter_mut().find(|e| &*e.row == me) } else { None };
                match same {
                    Some(e) => {
                        e.count += 1;
                        e.touched = now;
                    }
                    None => {
                        let exp = expiry.as_ref().map_or(i64::MAX, |e| e[i]);
                        entries.push(Entry {
                            row: me.into(),
                            count: 1,
                            matches: matched,
                            key_group: key_groups[i],
                            expiry: exp,
                            touched: now,
                        });
                        if exp != i64::MAX {
                            st.expiries.entry(exp).or_default().push(key.into());
                        }
                    }
                }
            } else if let Some(entries) = st.rows.get_mut(key) {
                if let Some(pos) = entries.iter().position(|e| &*e.row == me) {
                    entries[pos].count -= 1;
                    if entries[pos].count <= 0 {
                        entries.swap_remove(pos);
                    }
                }
                if entries.is_empty() {
                    st.rows.remove(key);
                }
            }
        }
        if let Some(b) = self.output(results)? {
            out.push(b);
        }
        Ok(())
    }

    /// Whether each candidate pair passes the non-equi condition.
    fn evaluate_filter(
        &self,
        s: usize,
        batch: &RecordBatch,
        keys: &arrow::row::Rows,
        cand: &[(usize, usize)],
    ) -> Result<Vec<bool>> {
        let Some(filter) = &self.spec.filter else { return Ok(vec![true; cand.len()]) };
        if cand.is_empty() {
            return Ok(vec![]);
        }
        let o = 1 - s;
        let ncols = self.side(s).schema.fields().len();
        let idx = UInt32Array::from_iter_values(cand.iter().map(|c| c.0 as u32));
        let mine: Vec<ArrayRef> = batch.columns()[..ncols]
            .iter()
            .map(|c| arrow::compute::take(c.as_ref(), &idx, None))
            .collect::<std::result::Result<_, _>>()
            .map_err(RuntimeError::arrow("join condition"))?;
        let parser = self.rows[o].parser();
        let mut others = vec![];
        for &(i, j) in cand {
            let e = self.state[o].rows.get(keys.row(i).data()).and_then(|v| v.get(j)).ok_or_else(|| {
                RuntimeError::Internal("a join candidate vanished from state while its batch was processed".into())
            })?;
            others.push(parser.parse(&e.row));
        }
        let theirs = self.rows[o].convert_rows(others).map_err(RuntimeError::arrow("join condition"))?;
        let cols = if s == 0 { [mine, theirs].concat() } else { [theirs, mine].concat() };
        let schema = self.joined_schema();
        let joined = RecordBatch::try_new(schema, cols).map_err(RuntimeError::arrow("join condition"))?;
        let v = filter
            .evaluate(&joined)
            .and_then(|v| v.into_array(joined.num_rows()))
            .map_err(RuntimeError::expr("join condition"))?;
        let b = v.as_boolean_opt().ok_or_else(|| RuntimeError::Internal("join condition is not boolean".into()))?;
        Ok((0..b.len()).map(|i| b.is_valid(i) && b.value(i)).collect())
    }

    fn joined_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> =
            self.spec.left.schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
        fields.extend(self.spec.right.schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)));
        Arc::new(Schema::new(fields))
    }

    /// Turns output rows into a batch of the output schema.
    fn output(&self, results: OutRows) -> Result<Option<RecordBatch>> {
        let n = results.rows.len();
        if n == 0 {
            return Ok(None);
        }
        let mut cols = vec![];
        let sides = self.spec.join_type.output_sides();
        for s in (0..2).filter(|&s| sides[s]) {
            let parser = self.rows[s].parser();
            let present: Vec<arrow::row::Row<'_>> =
                (0..n).filter_map(|r| results.part(s, r)).map(|b| parser.parse(b)).collect();
            let all_present = present.len() == n;
            let values = self.rows[s].convert_rows(present).map_err(RuntimeError::arrow("join output"))?;
            if all_present {
                cols.extend(values);
                continue;
            }
            let mut at = 0u32;
            let idx: UInt32Array = (0..n)
                .map(|r| {
                    results.part(s, r).map(|_| {
                        at += 1;
                        at - 1
                    })
                })
                .collect();
            for v in values {
                cols.push(arrow::compute::take(v.as_ref(), &idx, None).map_err(RuntimeError::arrow("join output"))?);
            }
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
        for st in &mut self.state {
            st.rows.retain(|_, v| {
                v.retain(|e| now.duration_since(e.touched) < ttl);
                !v.is_empty()
            });
        }
    }

    fn snapshot_side(&self, s: usize) -> Result<Vec<u8>> {
        let st = &self.state[s];
        let entries: Vec<&Entry> = st.rows.values().flatten().collect();
        let parser = self.rows[s].parser();
        let values = self.rows[s]
            .convert_rows(entries.iter().map(|e| parser.parse(&e.row)))
            .map_err(RuntimeError::arrow("join snapshot"))?;
        let mut fields = vec![
            Field::new("key_group", DataType::UInt32, false),
            Field::new("count", DataType::Int64, false),
            Field::new("matches", DataType::Int64, false),
            Field::new("expiry", DataType::Int64, false),
        ];
        fields.extend(self.side(s).schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)));
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(entries.iter().map(|e| e.key_group))),
            Arc::new(Int64Array::from_iter_values(entries.iter().map(|e| e.count))),
            Arc::new(Int64Array::from_iter_values(entries.iter().map(|e| e.matches))),
            Arc::new(Int64Array::from_iter_values(entries.iter().map(|e| e.expiry))),
        ];
        cols.extend(values);
        let batch =
            RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(RuntimeError::arrow("join snapshot"))?;
        Ok(keel_state::batch_to_ipc(&batch)?)
    }

    fn restore_side(&mut self, s: usize, bytes: &[u8], range: KeyGroupRange) -> Result<()> {
        let batch = keel_state::batch_from_ipc(bytes, "join state")?;
        let Some(batch) = crate::exchange::owned_rows(&batch, range)? else { return Ok(()) };
        let num = |c: usize| batch.column(c).as_primitive::<Int64Type>().clone();
        let (count, matches, expiry) = (num(1), num(2), num(3));
        let kg = batch.column(0).as_primitive::<UInt32Type>().clone();
        let data = &batch.columns()[4..];
        let rows = self.rows[s].convert_columns(data).map_err(RuntimeError::arrow("restoring join state"))?;
        let key_cols: Vec<ArrayRef> = self.side(s).keys.iter().map(|&k| data[k].clone()).collect();
        let keys = self.keys.convert_columns(&key_cols).map_err(RuntimeError::arrow("restoring join state"))?;
        let now = Instant::now();
        let st = &mut self.state[s];
        for i in 0..batch.num_rows() {
            let key: Box<[u8]> = keys.row(i).data().into();
            let exp = expiry.value(i);
            if exp != i64::MAX {
                st.expiries.entry(exp).or_default().push(key.clone());
            }
            st.rows.entry(key).or_default().push(Entry {
                row: rows.row(i).data().into(),
                count: count.value(i),
                matches: matches.value(i),
                key_group: kg.value(i),
                expiry: exp,
                touched: now,
            });
        }
        Ok(())
    }
}

impl Operator for Join {
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()> {
        self.key_groups = ctx.key_groups;
        self.metrics = Some(ctx.metrics.clone());
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
        self.on_batch(0, &batch, out)
    }

    fn process_side(&mut self, side: usize, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        if side > 1 {
            return Err(RuntimeError::Internal(format!("a join has two inputs, not input {side}")));
        }
        self.on_batch(side, &batch, out)
    }

    fn on_watermark(&mut self, watermark: i64, _out: &mut Vec<RecordBatch>) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        for st in &mut self.state {
            while let Some(entry) = st.expiries.first_entry() {
                if *entry.key() > self.watermark {
                    break;
                }
                let (_, keys) = entry.remove_entry();
                for key in keys {
                    if let Some(v) = st.rows.get_mut(&key) {
                        v.retain(|e| e.expiry > watermark);
                        if v.is_empty() {
                            st.rows.remove(&key);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, _checkpoint: u64) -> Result<Option<Vec<u8>>> {
        if self.state.iter().all(|s| s.rows.is_empty()) {
            return Ok(None);
        }
        let (l, r) = (self.snapshot_side(0)?, self.snapshot_side(1)?);
        let mut out = Vec::with_capacity(16 + l.len() + r.len());
        out.extend_from_slice(&self.watermark.to_le_bytes());
        out.extend_from_slice(&(l.len() as u64).to_le_bytes());
        out.extend_from_slice(&l);
        out.extend_from_slice(&r);
        Ok(Some(out))
    }
}

fn bad_state() -> RuntimeError {
    RuntimeError::Internal("join state is truncated".into())
}

#[cfg(test)]
#[path = "join_tests.rs"]
mod tests;
