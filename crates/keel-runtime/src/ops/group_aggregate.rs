//! The unwindowed (regular) GROUP BY aggregate: an updating result, emitted as a changelog.
//!
//! For each batch, every group the batch touches is emitted once: `+I new` for a group seen for
//! the first time, `-U old` then `+U new` for a group whose result changed, `-D old` for a group
//! whose last row was retracted (its state is then dropped). Over a changelog input, `+I`/`+U`
//! rows accumulate and `-U`/`-D` rows retract (MIN, MAX and COUNT DISTINCT then keep value
//! multisets). Replaying the output gives one row per live group holding its current result;
//! Flink emits per row rather than per batch, which yields the same table.
//!
//! Invariants: a group's state lives on the subtask owning its key group (the input is hash
//! partitioned by the GROUP BY keys); snapshots carry each group's key group, so a restore at any
//! parallelism keeps exactly the groups this subtask owns. With a state TTL, a group not updated
//! for that long (processing time) is forgotten without output, as Flink's
//! `table.exec.state.ttl` does; a later row for it starts it afresh with `+I`.

use crate::changelog::{RowKind, changelog_batch, row_kinds};
use crate::error::{Result, RuntimeError};
use crate::exchange::row_key_groups;
use crate::operator::{Operator, RestoredState, TaskContext};
use crate::ops::accumulators::Accumulator;
use crate::ops::aggregate::AggregateCall;
use crate::ops::short_bytes::ShortBytes;
use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, UInt32Type};
use arrow::row::{RowConverter, SortField};
use hashbrown::HashMap;
use keel_state::StateOut;
use keel_types::KeyGroupRange;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything that defines a group aggregate.
#[derive(Debug, Clone)]
pub struct GroupAggregateSpec {
    /// The prepared input's data columns: the `num_keys` GROUP BY keys, then the arguments.
    pub input_schema: SchemaRef,
    /// The input is a changelog (its batches end with `_op`).
    pub input_updating: bool,
    pub num_keys: usize,
    pub aggregates: Vec<AggregateCall>,
    /// Keys, then one column per aggregate, then `_op`.
    pub output_schema: SchemaRef,
    /// Forget groups not updated for this long (processing time).
    pub state_ttl: Option<Duration>,
    /// COUNT(DISTINCT) calls (indices into `aggregates`) over the same column that differ only in
    /// their FILTER: over append-only input, each set of them shares one map (`distinct::Family`).
    pub distinct_families: Vec<Vec<usize>>,
}

struct Slot {
    /// The group's key in row format (inline when short, shared with `index` otherwise).
    key: ShortBytes,
    key_group: u32,
    /// Rows accumulated minus rows retracted.
    rows: i64,
    touched: Instant,
}

pub struct GroupAggregate {
    spec: Arc<GroupAggregateSpec>,
    keys: Option<RowConverter>,
    index: HashMap<ShortBytes, u32>,
    /// Per slot, the last batch (`batch_no`) that touched it.
    marks: Vec<u64>,
    batch_no: u64,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    accs: Vec<Accumulator>,
    /// Families of COUNT(DISTINCT) calls sharing a map, and whether each call is in one.
    families: Vec<crate::ops::distinct::Family>,
    in_family: Vec<bool>,
    key_groups: u32,
    /// Groups per snapshot chunk (`SNAPSHOT_GROUPS`; smaller in tests).
    snapshot_groups: usize,
    last_expiry: Instant,
}

/// The distinct sets of `calls` (in order), for a family's snapshot or restore.
fn family_sets<'a>(accs: &'a mut [Accumulator], calls: &[usize]) -> Vec<&'a mut crate::ops::distinct::IntSets> {
    accs.iter_mut().enumerate().filter(|(i, _)| calls.contains(i)).filter_map(|(_, a)| a.int_sets()).collect()
}

impl GroupAggregate {
    pub fn new(spec: Arc<GroupAggregateSpec>) -> Result<Self> {
        let keys = if spec.num_keys == 0 {
            None
        } else {
            let fields = spec.input_schema.fields()[..spec.num_keys]
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect();
            Some(RowConverter::new(fields).map_err(RuntimeError::arrow("group keys"))?)
        };
        let mut accs = vec![];
        for a in &spec.aggregates {
            accs.push(Accumulator::for_call(a, &spec.input_schema, spec.input_updating)?);
        }
        // A family shares a map only over append-only input, between calls keeping integer sets.
        let mut families = vec![];
        let mut in_family = vec![false; accs.len()];
        for calls in &spec.distinct_families {
            let mut calls = calls.clone();
            calls.sort_unstable();
            calls.dedup();
            let usable = calls.iter().all(|&c| c < accs.len() && !in_family[c] && accs[c].int_sets().is_some());
            if spec.input_updating || calls.len() < 2 || !usable {
                continue;
            }
            for &c in &calls {
                in_family[c] = true;
            }
            families.push(crate::ops::distinct::Family::new(calls)?);
        }
        Ok(GroupAggregate {
            spec,
            snapshot_groups: SNAPSHOT_GROUPS,
            keys,
            index: HashMap::new(),
            marks: Vec::new(),
            batch_no: 0,
            slots: vec![],
            free: vec![],
            accs,
            families,
            in_family,
            key_groups: keel_types::DEFAULT_KEY_GROUPS,
            last_expiry: Instant::now(),
        })
    }

    /// The key of each row in row format (empty keys without GROUP BY columns).
    fn key_bytes(&self, cols: &[ArrayRef], n: usize) -> Result<Vec<Box<[u8]>>> {
        match &self.keys {
            None => Ok(vec![Box::from(&[][..]); n]),
            Some(conv) => {
                let rows = conv.convert_columns(cols).map_err(RuntimeError::arrow("group keys"))?;
                Ok(rows.iter().map(|r| r.data().into()).collect())
            }
        }
    }

    fn slot_of(&mut self, key: &[u8], key_group: impl FnOnce() -> u32, now: Instant) -> (u32, bool) {
        if let Some(&s) = self.index.get(key) {
            return (s, false);
        }
        let key = ShortBytes::from(key);
        let slot = Slot { key: key.clone(), key_group: key_group(), rows: 0, touched: now };
        let s = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(slot);
                s
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        for a in &mut self.accs {
            a.ensure(self.slots.len());
            a.reset(s as usize);
        }
        for f in &mut self.families {
            f.ensure(self.slots.len());
            f.reset(s as usize);
        }
        self.index.insert(key, s);
        (s, true)
    }

    fn forget(&mut self, s: u32) {
        if let Some(slot) = self.slots[s as usize].take() {
            self.index.remove(&slot.key);
            self.free.push(s);
        }
    }

    /// The key columns of `slots`, decoded from the row format.
    fn key_columns(&self, slots: &[u32]) -> Result<Vec<ArrayRef>> {
        let Some(conv) = &self.keys else { return Ok(vec![]) };
        let parser = conv.parser();
        let rows = slots.iter().map(|&s| match &self.slots[s as usize] {
            Some(slot) => Ok(parser.parse(&slot.key)),
            None => Err(RuntimeError::Internal(format!("group slot {s} is empty but was asked for"))),
        });
        let rows = rows.collect::<Result<Vec<_>>>()?;
        conv.convert_rows(rows).map_err(RuntimeError::arrow("group keys"))
    }

    /// Result rows (keys, then aggregates) of `slots`.
    fn results(&self, slots: &[u32]) -> Result<Vec<ArrayRef>> {
        let mut cols = self.key_columns(slots)?;
        for (a, call) in self.accs.iter().zip(&self.spec.aggregates) {
            cols.push(a.evaluate(slots, &call.output_type)?);
        }
        Ok(cols)
    }

    fn expire(&mut self, now: Instant) {
        let Some(ttl) = self.spec.state_ttl else { return };
        if now.duration_since(self.last_expiry) < Duration::from_secs(1).min(ttl) {
            return;
        }
        self.last_expiry = now;
        let old: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&s| self.slots[s as usize].as_ref().is_some_and(|slot| now.duration_since(slot.touched) >= ttl))
            .collect();
        for s in old {
            self.forget(s);
        }
    }

    fn apply(&mut self, batch: &RecordBatch, now: Instant) -> Result<Option<RecordBatch>> {
        self.expire(now);
        let n = batch.num_rows();
        let nk = self.spec.num_keys;
        let kinds: Option<Vec<bool>> = if self.spec.input_updating {
            let ops = row_kinds(batch)?;
            Some(ops.values().iter().map(|&c| RowKind::from_code(c).map(RowKind::is_addition)).collect::<Result<_>>()?)
        } else {
            None
        };
        let key_rows = match &self.keys {
            None => None,
            Some(conv) => {
                Some(conv.convert_columns(&batch.columns()[..nk]).map_err(RuntimeError::arrow("group keys"))?)
            }
        };
        // Key groups are computed (for the whole batch) only when a new group appears.
        let key_cols: Vec<usize> = (0..nk).collect();
        let mut key_groups: Option<Vec<u32>> = None;
        let mut groups = Vec::with_capacity(n);
        // Touched slots in first-touch order, and whether each existed with rows before.
        let mut touched: Vec<(u32, bool)> = vec![];
        self.batch_no += 1;
        for i in 0..n {
            let key = key_rows.as_ref().map_or(&[][..], |r| r.row(i).data());
            let (s, new) = match self.index.get(key) {
                Some(&s) => (s, false),
                None => {
                    if key_groups.is_none() {
                        key_groups = Some(row_key_groups(batch, &key_cols, self.key_groups)?);
                    }
                    let kg = key_groups.as_ref().and_then(|k| k.get(i).copied()).unwrap_or(0);
                    self.slot_of(key, || kg, now)
                }
            };
            groups.push(s);
            let su = s as usize;
            if self.marks.len() <= su {
                self.marks.resize(su + 1, 0);
            }
            if self.marks[su] != self.batch_no {
                self.marks[su] = self.batch_no;
                let existed = !new && self.slots[s as usize].as_ref().is_some_and(|slot| slot.rows > 0);
                touched.push((s, existed));
            }
        }
        let before_slots: Vec<u32> = touched.iter().filter(|t| t.1).map(|t| t.0).collect();
        let before = self.results(&before_slots)?;
        // Accumulate additions and retract retractions.
        let (add, sub): (Vec<usize>, Vec<usize>) = match &kinds {
            None => ((0..n).collect(), vec![]),
            Some(k) => (0..n).partition(|&i| k[i]),
        };
        for (rows, adding) in [(add, true), (sub, false)] {
            if rows.is_empty() {
                continue;
            }
            let all = rows.len() == n;
            let idx = UInt32Array::from_iter_values(rows.iter().map(|&i| i as u32));
            let g: Vec<u32> = rows.iter().map(|&i| groups[i]).collect();
            for f in &mut self.families {
                // Families exist only over append-only input: every row adds.
                let mut args: Vec<ArrayRef> = vec![];
                for c in f.calls.iter().filter_map(|&c| self.spec.aggregates[c].arg) {
                    args.push(if all {
                        batch.column(c).clone()
                    } else {
                        arrow::compute::take(batch.column(c).as_ref(), &idx, None)
                            .map_err(RuntimeError::arrow("aggregate input"))?
                    });
                }
                let (accs, calls) = (&mut self.accs, f.calls.clone());
                f.update(&g, &args, |k, slot| accs[calls[k]].count_one(slot as usize))?;
            }
            for ((a, call), &shared) in self.accs.iter_mut().zip(&self.spec.aggregates).zip(&self.in_family) {
                if shared {
                    continue;
                }
                let arg = match call.arg {
                    None => None,
                    Some(c) if all => Some(batch.column(c).clone()),
                    Some(c) => Some(
                        arrow::compute::take(batch.column(c).as_ref(), &idx, None)
                            .map_err(RuntimeError::arrow("aggregate input"))?,
                    ),
                };
                if adding { a.update(&g, arg.as_ref())? } else { a.retract(&g, arg.as_ref())? }
            }
            for &s in &g {
                if let Some(slot) = self.slots[s as usize].as_mut() {
                    slot.rows += if adding { 1 } else { -1 };
                    slot.touched = now;
                }
            }
        }
        let after_slots: Vec<u32> = touched
            .iter()
            .map(|t| t.0)
            .filter(|&s| self.slots[s as usize].as_ref().is_some_and(|slot| slot.rows > 0))
            .collect();
        let after = self.results(&after_slots)?;
        // Interleave: per touched slot, (-U old, +U new) | +I new | -D old.
        let mut picks: Vec<(usize, usize)> = vec![];
        let mut kinds_out = vec![];
        let (mut bi, mut ai) = (0usize, 0usize);
        for &(s, existed) in &touched {
            let alive = self.slots[s as usize].as_ref().is_some_and(|slot| slot.rows > 0);
            match (existed, alive) {
                (true, true) => {
                    picks.push((0, bi));
                    picks.push((1, ai));
                    kinds_out.extend([RowKind::UpdateBefore, RowKind::UpdateAfter]);
                    bi += 1;
                    ai += 1;
                }
                (false, true) => {
                    picks.push((1, ai));
                    kinds_out.push(RowKind::Insert);
                    ai += 1;
                }
                (true, false) => {
                    picks.push((0, bi));
                    kinds_out.push(RowKind::Delete);
                    bi += 1;
                }
                (false, false) => {}
            }
            if !alive {
                self.forget(s);
            }
        }
        if picks.is_empty() {
            return Ok(None);
        }
        let mut cols = Vec::with_capacity(before.len());
        for (b, a) in before.iter().zip(&after) {
            cols.push(
                arrow::compute::interleave(&[b.as_ref(), a.as_ref()], &picks)
                    .map_err(RuntimeError::arrow("group aggregate output"))?,
            );
        }
        if cols.is_empty() {
            // No keys and no aggregates cannot happen (an aggregate has at least one of them).
            return Err(RuntimeError::Internal("a group aggregate with no output columns".into()));
        }
        changelog_batch(self.spec.output_schema.clone(), cols, &kinds_out).map(Some)
    }

    fn state_schema(&self, acc_fields: &[Field]) -> SchemaRef {
        let mut fields =
            vec![Field::new("key_group", DataType::UInt32, false), Field::new("rows", DataType::Int64, false)];
        fields.extend(
            self.spec.input_schema.fields()[..self.spec.num_keys]
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true)),
        );
        fields.extend(acc_fields.iter().cloned());
        Arc::new(Schema::new(fields))
    }

    /// Restores one chunk of a snapshot (rows of key groups this subtask owns).
    fn restore_chunk(&mut self, batch: &RecordBatch, now: Instant) -> Result<()> {
        let nk = self.spec.num_keys;
        let kg = batch.column(0).as_primitive::<UInt32Type>().clone();
        let rows = batch.column(1).as_primitive::<Int64Type>().clone();
        let keys = self.key_bytes(&batch.columns()[2..2 + nk], batch.num_rows())?;
        let mut slots = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let (s, _) = self.slot_of(key, || kg.value(i), now);
            if let Some(slot) = self.slots[s as usize].as_mut() {
                slot.rows = rows.value(i);
            }
            slots.push(s);
        }
        let mut at = 2 + nk;
        for a in &mut self.accs {
            let w = a.state(&[], "x")?.len();
            a.restore(&slots, &batch.columns()[at..at + w])?;
            at += w;
        }
        for f in &mut self.families {
            f.import(&slots, &mut family_sets(&mut self.accs, &f.calls));
        }
        Ok(())
    }

    /// The state of the groups in slots `live` as one table: key group, row count, keys, then
    /// each aggregate's state columns.
    fn state_chunk(&self, live: &[u32]) -> Result<RecordBatch> {
        let slot = |s: u32| self.slots[s as usize].as_ref();
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(live.iter().map(|&s| slot(s).map_or(0, |x| x.key_group)))),
            Arc::new(Int64Array::from_iter_values(live.iter().map(|&s| slot(s).map_or(0, |x| x.rows)))),
        ];
        cols.extend(self.key_columns(live)?);
        // A family's calls write their values from the family's maps, in their own format.
        let mut given: Vec<Option<ArrayRef>> = vec![None; self.accs.len()];
        for f in &self.families {
            for (k, &call) in f.calls.iter().enumerate() {
                if let Some(sets) = self.accs.get(call).and_then(|a| a.int_sets_ref()) {
                    given[call] = Some(f.state(k, sets, live)?);
                }
            }
        }
        let states: Result<Vec<_>> = (self.accs.iter().zip(given).enumerate())
            .map(|(i, (a, values))| a.state_with(live, &format!("agg{i}"), values))
            .collect();
        let mut acc_fields = vec![];
        for (f, c) in states?.into_iter().flatten() {
            acc_fields.push(f);
            cols.push(c);
        }
        RecordBatch::try_new(self.state_schema(&acc_fields), cols)
            .map_err(RuntimeError::arrow("group aggregate snapshot"))
    }
}

/// Groups per chunk of a snapshot: a chunk's columns are built in memory before they are encoded.
const SNAPSHOT_GROUPS: usize = 4096;

impl Operator for GroupAggregate {
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()> {
        self.key_groups = ctx.key_groups;
        let range = KeyGroupRange::of_subtask(ctx.subtask, ctx.key_groups, ctx.parallelism);
        let now = Instant::now();
        // Chunk by chunk, as written (`snapshot_into`): a large state is not decoded whole first.
        for part in restored.parts.iter().filter(|p| !p.is_empty()) {
            for batch in keel_state::batches_from_ipc(part, "group aggregate state")? {
                if let Some(batch) = crate::exchange::owned_rows(&batch?, range)? {
                    self.restore_chunk(&batch, now)?;
                }
            }
        }
        Ok(())
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        keel_types::faults::hit("aggregate.process");
        if let Some(b) = self.apply(&batch, Instant::now())? {
            out.push(b);
        }
        Ok(())
    }

    fn snapshot(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        crate::operator::snapshot_in_memory(self, checkpoint)
    }

    /// The live groups as an Arrow IPC stream, `SNAPSHOT_GROUPS` groups a chunk, each chunk
    /// encoded straight into `out`: the state (GBs of distinct values, for q16) is never built
    /// whole as columns nor as bytes.
    fn snapshot_into(&mut self, _checkpoint: u64, out: &mut dyn StateOut) -> Result<bool> {
        let live: Vec<u32> = (0..self.slots.len() as u32).filter(|&s| self.slots[s as usize].is_some()).collect();
        let mut chunks = live.chunks(self.snapshot_groups).map(|c| self.state_chunk(c));
        let Some(first) = chunks.next().transpose()? else { return Ok(false) };
        let schema = first.schema();
        keel_state::write_batches(out, &schema, std::iter::once(Ok(first)).chain(chunks))?;
        Ok(true)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::changelog::{all_inserts, with_op_field};
    use crate::ops::accumulators::AggregateFunction;
    use arrow::array::{Int8Array, StringArray};
    use std::collections::BTreeMap;

    fn spec(updating: bool, ttl: Option<Duration>) -> Arc<GroupAggregateSpec> {
        let input =
            Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new("v", DataType::Int64, true)]));
        let out = Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
            Field::new("mx", DataType::Int64, true),
        ]);
        Arc::new(GroupAggregateSpec {
            input_schema: input,
            input_updating: updating,
            num_keys: 1,
            aggregates: vec![
                AggregateCall {
                    func: AggregateFunction::CountStar,
                    arg: None,
                    output_type: DataType::Int64,
                    user: None,
                },
                AggregateCall { func: AggregateFunction::Max, arg: Some(1), output_type: DataType::Int64, user: None },
            ],
            output_schema: with_op_field(&out),
            state_ttl: ttl,
            distinct_families: vec![],
        })
    }

    /// A batch of (k VARCHAR, v BIGINT) rows (also used by the user-aggregate tests).
    pub(crate) fn rows(k: &[&str], v: &[i64]) -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("k", Arc::new(StringArray::from(k.to_vec())) as ArrayRef),
            ("v", Arc::new(Int64Array::from(v.to_vec())) as ArrayRef),
        ])
        .unwrap()
    }

    fn ctx(subtask: u32, parallelism: u32) -> TaskContext {
        TaskContext::for_test(subtask, parallelism)
    }

    /// Each output row as "KIND k n mx".
    fn show(b: &RecordBatch) -> Vec<String> {
        let k = b.column(0).as_string::<i32>();
        let n = b.column(1).as_primitive::<Int64Type>();
        let m = b.column(2).as_primitive::<Int64Type>();
        let ops = row_kinds(b).unwrap();
        (0..b.num_rows())
            .map(|i| {
                let kind = RowKind::from_code(ops.value(i)).unwrap().short();
                format!("{kind} {} {} {}", k.value(i), n.value(i), m.value(i))
            })
            .collect()
    }

    /// Replays a changelog into {row text: multiplicity}.
    fn replay(table: &mut BTreeMap<String, i64>, b: &RecordBatch) {
        for line in show(b) {
            let (kind, row) = line.split_once(' ').unwrap();
            *table.entry(row.to_string()).or_default() += if kind.starts_with('+') { 1 } else { -1 };
        }
        table.retain(|_, n| *n != 0);
    }

    #[test]
    fn first_row_inserts_later_rows_update() {
        let mut op = GroupAggregate::new(spec(false, None)).unwrap();
        op.open(&ctx(0, 1), RestoredState::default()).unwrap();
        let mut out = vec![];
        op.process(rows(&["a", "b", "a"], &[5, 1, 7]), &mut out).unwrap();
        op.process(rows(&["a"], &[2]), &mut out).unwrap();
        assert_eq!(show(&out[0]), ["+I a 2 7", "+I b 1 1"]);
        assert_eq!(show(&out[1]), ["-U a 2 7", "+U a 3 7"]);
    }

    #[test]
    fn retractions_update_and_delete_groups() {
        let mut op = GroupAggregate::new(spec(true, None)).unwrap();
        op.open(&ctx(0, 1), RestoredState::default()).unwrap();
        let mut out = vec![];
        op.process(all_inserts(&rows(&["a", "a", "b"], &[5, 9, 1])).unwrap(), &mut out).unwrap();
        let retract = |k: &[&str], v: &[i64], kind: RowKind| {
            let b = rows(k, v);
            let mut cols = b.columns().to_vec();
            cols.push(Arc::new(Int8Array::from(vec![kind.code(); k.len()])));
            RecordBatch::try_new(with_op_field(&b.schema()), cols).unwrap()
        };
        op.process(retract(&["a"], &[9], RowKind::Delete), &mut out).unwrap();
        op.process(retract(&["b"], &[1], RowKind::UpdateBefore), &mut out).unwrap();
        assert_eq!(show(&out[1]), ["-U a 2 9", "+U a 1 5"], "MAX falls back to 5 when 9 is retracted");
        assert_eq!(show(&out[2]), ["-D b 1 1"], "the group's last row retracted deletes it");
        let mut table = BTreeMap::new();
        out.iter().for_each(|b| replay(&mut table, b));
        assert_eq!(table.into_iter().collect::<Vec<_>>(), [("a 1 5".to_string(), 1)]);
    }

    #[test]
    fn snapshot_restores_at_another_parallelism() {
        let mut rng = crate::test_rng::Lcg::fixed("group aggregate", 0x5eed_u64);
        let mut next = || rng.bits() as i64;
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        let mut batches = vec![];
        for _ in 0..20 {
            let ks: Vec<&str> = (0..10).map(|_| keys[(next() % 40) as usize].as_str()).collect();
            let vs: Vec<i64> = (0..10).map(|_| next() % 1000).collect();
            batches.push(rows(&ks, &vs));
        }
        // Straight through on one subtask.
        let mut whole = GroupAggregate::new(spec(false, None)).unwrap();
        whole.open(&ctx(0, 1), RestoredState::default()).unwrap();
        let mut expected = BTreeMap::new();
        for b in &batches {
            let mut out = vec![];
            whole.process(b.clone(), &mut out).unwrap();
            out.iter().for_each(|b| replay(&mut expected, b));
        }
        // Half on one subtask, snapshot, the rest on two subtasks fed by key group.
        let mut first = GroupAggregate::new(spec(false, None)).unwrap();
        first.open(&ctx(0, 1), RestoredState::default()).unwrap();
        let mut table = BTreeMap::new();
        for b in &batches[..10] {
            let mut out = vec![];
            first.process(b.clone(), &mut out).unwrap();
            out.iter().for_each(|b| replay(&mut table, b));
        }
        // Written three groups a chunk, so that the restore reads many chunks.
        first.snapshot_groups = 3;
        let snap = first.snapshot(1).unwrap().unwrap();
        let chunks = keel_state::batches_from_ipc(&snap, "test").unwrap().count();
        assert!(chunks >= 5, "the snapshot was written in {chunks} chunks");
        let restored = RestoredState { parts: vec![snap], inherited: vec![0], checkpoint: Some(1) };
        let mut two: Vec<GroupAggregate> = (0..2)
            .map(|s| {
                let mut op = GroupAggregate::new(spec(false, None)).unwrap();
                op.open(&ctx(s, 2), restored.clone()).unwrap();
                op
            })
            .collect();
        for b in &batches[10..] {
            for (s, part) in crate::exchange::split_by_key(b, &[0], 128, 2).unwrap().into_iter().enumerate() {
                if let Some(part) = part {
                    let mut out = vec![];
                    two[s].process(part, &mut out).unwrap();
                    out.iter().for_each(|b| replay(&mut table, b));
                }
            }
        }
        assert_eq!(table, expected);
    }

    #[test]
    fn count_distinct_families_match_separate_calls_and_their_snapshots() {
        // COUNT(DISTINCT v) and COUNT(DISTINCT v) FILTER (WHERE v < 500), as the planner gives
        // them: the second call's argument is v where the filter holds, NULL elsewhere.
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
            Field::new("v_small", DataType::Int64, true),
        ]));
        let out = Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("d", DataType::Int64, false),
            Field::new("d_small", DataType::Int64, false),
        ]);
        let distinct = |arg| AggregateCall {
            func: AggregateFunction::CountDistinct,
            arg: Some(arg),
            output_type: DataType::Int64,
            user: None,
        };
        let spec = |families: Vec<Vec<usize>>| {
            Arc::new(GroupAggregateSpec {
                input_schema: input.clone(),
                input_updating: false,
                num_keys: 1,
                aggregates: vec![distinct(1), distinct(2)],
                output_schema: with_op_field(&out),
                state_ttl: None,
                distinct_families: families,
            })
        };
        let mut rng = crate::test_rng::Lcg::fixed("group aggregate", 0x0d15_7111_u64);
        let mut next = move || rng.bits() as i64;
        let batches: Vec<RecordBatch> = (0..12)
            .map(|_| {
                let ks: Vec<String> = (0..50).map(|_| format!("k{}", next() % 5)).collect();
                let vs: Vec<Option<i64>> = (0..50).map(|_| (next() % 10 != 0).then(|| next() % 1000)).collect();
                let small: Vec<Option<i64>> = vs.iter().map(|v| v.filter(|v| *v < 500)).collect();
                RecordBatch::try_new(
                    input.clone(),
                    vec![
                        Arc::new(StringArray::from(ks)),
                        Arc::new(Int64Array::from(vs)),
                        Arc::new(Int64Array::from(small)),
                    ],
                )
                .unwrap()
            })
            .collect();
        let run = |op: &mut GroupAggregate, bs: &[RecordBatch]| -> Vec<RecordBatch> {
            let mut out = vec![];
            for b in bs {
                op.process(b.clone(), &mut out).unwrap();
            }
            out
        };
        let fresh = |families: Vec<Vec<usize>>, restored: RestoredState| {
            let mut op = GroupAggregate::new(spec(families)).unwrap();
            op.open(&ctx(0, 1), restored).unwrap();
            op
        };
        let mut shared = fresh(vec![vec![0, 1]], RestoredState::default());
        assert_eq!(shared.families.len(), 1, "the two calls form a family");
        let mut separate = fresh(vec![], RestoredState::default());
        assert_eq!(run(&mut shared, &batches[..6]), run(&mut separate, &batches[..6]));
        // Each one's snapshot restores into the other kind, and all four go on alike.
        let restored = |op: &mut GroupAggregate| RestoredState {
            parts: vec![op.snapshot(1).unwrap().unwrap()],
            inherited: vec![0],
            checkpoint: Some(1),
        };
        let (from_shared, from_separate) = (restored(&mut shared), restored(&mut separate));
        let expected = run(&mut separate, &batches[6..]);
        assert_eq!(run(&mut shared, &batches[6..]), expected, "the family went on after its snapshot");
        for (families, state) in
            [(vec![], from_shared.clone()), (vec![vec![0, 1]], from_separate), (vec![vec![0, 1]], from_shared)]
        {
            assert_eq!(run(&mut fresh(families.clone(), state), &batches[6..]), expected, "families {families:?}");
        }
    }

    #[test]
    fn ttl_forgets_idle_groups() {
        let mut op = GroupAggregate::new(spec(false, Some(Duration::from_secs(10)))).unwrap();
        op.open(&ctx(0, 1), RestoredState::default()).unwrap();
        let t0 = Instant::now();
        let first = op.apply(&rows(&["a"], &[1]), t0).unwrap().unwrap();
        assert_eq!(show(&first), ["+I a 1 1"]);
        let later = op.apply(&rows(&["b"], &[1]), t0 + Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(show(&later), ["+I b 1 1"]);
        // 11 s after "a" was last updated (6 s after "b"): "a" is gone, "b" is kept.
        let out = op.apply(&rows(&["a", "b"], &[3, 3]), t0 + Duration::from_secs(11)).unwrap().unwrap();
        assert_eq!(show(&out), ["+I a 1 3", "-U b 1 1", "+U b 2 3"]);
    }
}
