//! Tests of the join operator: inner and outer results, changelog inputs, the non-equi
//! condition, time-bounded expiry and restore by key group.

use super::*;
use crate::changelog::with_op_field;
use arrow::array::{Int8Array, StringArray};
use datafusion::logical_expr::Operator as BinOp;
use datafusion::physical_expr::expressions::{BinaryExpr, Column};

fn side_schema(prefix: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(format!("{prefix}k"), DataType::Int64, true),
        Field::new(format!("{prefix}v"), DataType::Utf8, true),
        Field::new(format!("{prefix}t"), DataType::Int64, false),
    ]))
}

fn spec(join_type: JoinType, updating: [bool; 2], filter: Option<Arc<dyn PhysicalExpr>>) -> Arc<JoinSpec> {
    let side = |p: &str, u: bool| JoinSide { schema: side_schema(p), updating: u, keys: vec![0], expiry: None };
    let mut fields: Vec<Field> = side_schema("l")
        .fields()
        .iter()
        .chain(side_schema("r").fields().iter())
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let output_updating = updating.iter().any(|u| *u) || join_type != JoinType::Inner;
    if output_updating {
        fields.push(crate::changelog::op_field());
    }
    Arc::new(JoinSpec {
        late_output: [None, None],
        left: side("l", updating[0]),
        right: side("r", updating[1]),
        join_type,
        filter,
        output_schema: Arc::new(Schema::new(fields)),
        output_updating,
        state_ttl: None,
    })
}

fn rows(k: &[Option<i64>], v: &[&str], t: &[i64], kind: Option<RowKind>) -> RecordBatch {
    let b = RecordBatch::try_from_iter(vec![
        ("k", Arc::new(Int64Array::from(k.to_vec())) as ArrayRef),
        ("v", Arc::new(StringArray::from(v.to_vec())) as ArrayRef),
        ("t", Arc::new(Int64Array::from(t.to_vec())) as ArrayRef),
    ])
    .unwrap();
    match kind {
        None => b,
        Some(kind) => {
            let mut cols = b.columns().to_vec();
            cols.push(Arc::new(Int8Array::from(vec![kind.code(); k.len()])));
            RecordBatch::try_new(with_op_field(&b.schema()), cols).unwrap()
        }
    }
}

fn ctx(subtask: u32, parallelism: u32) -> TaskContext {
    TaskContext::for_test(subtask, parallelism)
}

/// Output rows as "KIND lv rv" (NULL as "-").
fn show(b: &RecordBatch) -> Vec<String> {
    let lv = b.column(1).as_string::<i32>();
    let rv = b.column(4).as_string::<i32>();
    let s =
        |a: &arrow::array::StringArray, i: usize| if a.is_null(i) { "-".to_string() } else { a.value(i).to_string() };
    let kinds = crate::changelog::is_changelog(&b.schema());
    (0..b.num_rows())
        .map(|i| {
            let k = if kinds { RowKind::from_code(row_kinds(b).unwrap().value(i)).unwrap().short() } else { "+I" };
            format!("{k} {} {}", s(lv, i), s(rv, i))
        })
        .collect()
}

fn feed(op: &mut Join, side: usize, b: RecordBatch) -> Vec<String> {
    let mut out = vec![];
    op.process_side(side, b, &mut out).unwrap();
    out.iter().flat_map(show).collect()
}

#[test]
fn inner_join_matches_equal_keys_with_multiplicity() {
    let mut op = Join::new(spec(JoinType::Inner, [false, false], None)).unwrap();
    op.open(&ctx(0, 1), RestoredState::default()).unwrap();
    assert!(feed(&mut op, 0, rows(&[Some(1), Some(2), Some(1)], &["a", "b", "a"], &[0, 0, 0], None)).is_empty());
    let out = feed(&mut op, 1, rows(&[Some(1), Some(3), None], &["x", "y", "z"], &[0, 0, 0], None));
    assert_eq!(out, ["+I a x", "+I a x"], "two equal left rows give two results; NULL keys never match");
    let out = feed(&mut op, 0, rows(&[Some(3), None], &["c", "n"], &[0, 0], None));
    assert_eq!(out, ["+I c y"]);
}

#[test]
fn left_join_pads_then_retracts_the_padding() {
    let mut op = Join::new(spec(JoinType::Left, [false, true], None)).unwrap();
    op.open(&ctx(0, 1), RestoredState::default()).unwrap();
    assert_eq!(feed(&mut op, 0, rows(&[Some(1), None], &["a", "n"], &[0, 0], None)), ["+I a -", "+I n -"]);
    assert_eq!(feed(&mut op, 1, rows(&[Some(1)], &["x"], &[0], Some(RowKind::Insert))), ["-D a -", "+I a x"]);
    assert_eq!(feed(&mut op, 1, rows(&[Some(1)], &["y"], &[0], Some(RowKind::Insert))), ["+I a y"]);
    assert_eq!(feed(&mut op, 1, rows(&[Some(1)], &["x"], &[0], Some(RowKind::Delete))), ["-D a x"]);
    assert_eq!(
        feed(&mut op, 1, rows(&[Some(1)], &["y"], &[0], Some(RowKind::UpdateBefore))),
        ["-D a y", "+I a -"],
        "the last partner gone: the left row is padded again"
    );
    assert!(feed(&mut op, 1, rows(&[Some(9)], &["q"], &[0], Some(RowKind::Delete))).is_empty(), "unknown row ignored");
}

#[test]
fn full_join_pads_both_sides() {
    let mut op = Join::new(spec(JoinType::Full, [false, false], None)).unwrap();
    op.open(&ctx(0, 1), RestoredState::default()).unwrap();
    assert_eq!(feed(&mut op, 1, rows(&[Some(1)], &["x"], &[0], None)), ["+I - x"]);
    assert_eq!(feed(&mut op, 0, rows(&[Some(1), Some(2)], &["a", "b"], &[0, 0], None)), ["-D - x", "+I a x", "+I b -"]);
}

#[test]
fn semi_and_anti_joins_emit_left_rows_once() {
    let one_side = |jt: JoinType| {
        let mut s = spec(jt, [false, true], None).as_ref().clone();
        let mut fields: Vec<Field> = side_schema("l").fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(crate::changelog::op_field());
        s.output_schema = Arc::new(Schema::new(fields));
        s.output_updating = true;
        let mut op = Join::new(Arc::new(s)).unwrap();
        op.open(&ctx(0, 1), RestoredState::default()).unwrap();
        op
    };
    let lv = |op: &mut Join, side: usize, b: RecordBatch| -> Vec<String> {
        let mut out = vec![];
        op.process_side(side, b, &mut out).unwrap();
        out.iter()
            .flat_map(|b| {
                let v = b.column(1).as_string::<i32>().clone();
                let k = row_kinds(b).unwrap().clone();
                (0..b.num_rows())
                    .map(move |i| format!("{} {}", RowKind::from_code(k.value(i)).unwrap().short(), v.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let mut semi = one_side(JoinType::LeftSemi);
    assert!(lv(&mut semi, 0, rows(&[Some(1)], &["a"], &[0], None)).is_empty());
    assert_eq!(lv(&mut semi, 1, rows(&[Some(1)], &["x"], &[0], Some(RowKind::Insert))), ["+I a"]);
    assert!(lv(&mut semi, 1, rows(&[Some(1)], &["y"], &[0], Some(RowKind::Insert))).is_empty(), "once per left row");
    assert_eq!(lv(&mut semi, 0, rows(&[Some(1)], &["b"], &[0], None)), ["+I b"]);
    let mut anti = one_side(JoinType::LeftAnti);
    assert_eq!(lv(&mut anti, 0, rows(&[Some(1)], &["a"], &[0], None)), ["+I a"]);
    assert_eq!(lv(&mut anti, 1, rows(&[Some(1)], &["x"], &[0], Some(RowKind::Insert))), ["-D a"]);
    assert_eq!(lv(&mut anti, 1, rows(&[Some(1)], &["x"], &[0], Some(RowKind::Delete))), ["+I a"]);
}

#[test]
fn the_non_equi_condition_filters_pairs() {
    // l.t < r.t (columns 2 and 5 of the joined row).
    let cond: Arc<dyn PhysicalExpr> =
        Arc::new(BinaryExpr::new(Arc::new(Column::new("lt", 2)), BinOp::Lt, Arc::new(Column::new("rt", 5))));
    let mut op = Join::new(spec(JoinType::Left, [false, false], Some(cond))).unwrap();
    op.open(&ctx(0, 1), RestoredState::default()).unwrap();
    assert_eq!(feed(&mut op, 0, rows(&[Some(1), Some(1)], &["a", "b"], &[10, 30], None)), ["+I a -", "+I b -"]);
    assert_eq!(feed(&mut op, 1, rows(&[Some(1)], &["x"], &[20], None)), ["-D a -", "+I a x"], "only a has t < 20");
    let f = op.filter.as_ref().unwrap();
    assert_eq!(f.cols, [vec![2], vec![2]], "the condition is evaluated over the two columns it reads");

    // r.v <> l.v AND l.t < r.t: columns of both sides, named out of order.
    let ne = Arc::new(BinaryExpr::new(Arc::new(Column::new("rv", 4)), BinOp::NotEq, Arc::new(Column::new("lv", 1))));
    let lt = Arc::new(BinaryExpr::new(Arc::new(Column::new("lt", 2)), BinOp::Lt, Arc::new(Column::new("rt", 5))));
    let cond: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(ne, BinOp::And, lt));
    let mut op = Join::new(spec(JoinType::Inner, [false, false], Some(cond))).unwrap();
    op.open(&ctx(0, 1), RestoredState::default()).unwrap();
    feed(&mut op, 0, rows(&[Some(1), Some(1), Some(1)], &["a", "x", "c"], &[10, 10, 30], None));
    assert_eq!(feed(&mut op, 1, rows(&[Some(1)], &["x"], &[20], None)), ["+I a x"], "x = x and 30 > 20 fail");
    assert_eq!(op.filter.as_ref().unwrap().cols, [vec![1, 2], vec![1, 2]]);
}

#[test]
fn time_bounded_rows_expire_and_late_rows_are_dropped() {
    let mut s = spec(JoinType::Inner, [false, false], None).as_ref().clone();
    s.left.expiry = Some((2, 10));
    s.right.expiry = Some((2, 0));
    let mut op = Join::new(Arc::new(s)).unwrap();
    let c = ctx(0, 1);
    op.open(&c, RestoredState::default()).unwrap();
    feed(&mut op, 0, rows(&[Some(1)], &["a"], &[100], None));
    op.on_watermark(105, &mut vec![]).unwrap();
    assert_eq!(feed(&mut op, 1, rows(&[Some(1)], &["x"], &[107], None)), ["+I a x"], "a lives until 110");
    op.on_watermark(110, &mut vec![]).unwrap();
    assert!(feed(&mut op, 1, rows(&[Some(1)], &["y"], &[111], None)).is_empty(), "a expired at 110");
    assert!(feed(&mut op, 0, rows(&[Some(1)], &["b"], &[99], None)).is_empty(), "b (99 + 10 <= 110) is late");
    assert_eq!(c.metrics.late_records.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(op.state[0].rows.len(), 0);
    assert_eq!(op.state[1].rows.values().flatten().count(), 1, "only y (111) is still held");
    assert_eq!(op.state[0].held.stored_batches(), 0, "a side whose rows all expired holds no stored batch");
    assert_eq!(op.state[1].held.stored_batches(), 1, "the batch holding y is kept");
}

#[test]
fn late_rows_go_to_their_sides_output_and_commit_with_checkpoints() {
    use crate::operator::SideOutput;
    use crate::ops::late::testing::{Recorded, RecordingOutput};
    let record = Arc::new(std::sync::Mutex::new(Recorded::default()));
    let mut s = spec(JoinType::Inner, [false, false], None).as_ref().clone();
    s.left.expiry = Some((2, 10));
    s.right.expiry = Some((2, 0));
    let r = record.clone();
    // Only the left side's table sends late rows somewhere; the right side's are dropped.
    s.late_output[0] = Some(SideOutputFactory(Arc::new(move |_, restored| {
        assert_eq!(restored, Some(4), "the output is told the checkpoint it restores from");
        Ok(Box::new(RecordingOutput(r.clone())) as Box<dyn SideOutput>)
    })));
    let mut op = Join::new(Arc::new(s)).unwrap();
    let c = ctx(0, 1);
    op.open(&c, RestoredState { checkpoint: Some(4), ..RestoredState::default() }).unwrap();
    op.on_watermark(110, &mut vec![]).unwrap();
    // b (99 + 10 <= 110) and d (100 + 10) are late; c (101 + 10 > 110) is not.
    let left = rows(&[Some(1), Some(1), Some(2)], &["b", "c", "d"], &[99, 101, 100], None);
    assert!(feed(&mut op, 0, left).is_empty());
    assert!(feed(&mut op, 1, rows(&[Some(1)], &["y"], &[105], None)).is_empty(), "y (105 + 0) is late");
    assert_eq!(c.metrics.late_records.load(std::sync::atomic::Ordering::Relaxed), 3, "counted either way");
    op.snapshot_into(5, &mut Vec::new()).unwrap();
    op.checkpoint_complete(5).unwrap();
    let got = record.lock().unwrap();
    assert_eq!(got.emitted.len(), 1, "one batch of late left rows");
    let v = got.emitted[0].0.column(1).as_string::<i32>();
    assert_eq!((0..v.len()).map(|i| v.value(i)).collect::<Vec<_>>(), ["b", "d"]);
    assert!(got.emitted[0].1.starts_with("late: "), "{}", got.emitted[0].1);
    assert_eq!(got.events, ["pre-commit 5", "commit 5"]);
}

#[test]
fn restore_at_another_parallelism_gives_the_same_results() {
    let mut rng = crate::test_rng::Lcg::fixed("join restore", 0x10_1a_u64);
    let mut next = move || rng.bits() as i64;
    let names: Vec<String> = (0..50).map(|i| format!("v{i}")).collect();
    let mut batches = vec![];
    for _ in 0..30 {
        let side = (next() % 2) as usize;
        let k: Vec<Option<i64>> = (0..6).map(|_| Some(next() % 12)).collect();
        let v: Vec<&str> = (0..6).map(|_| names[(next() % 50) as usize].as_str()).collect();
        batches.push((side, rows(&k, &v, &[0; 6], None)));
    }
    let replay = |table: &mut BTreeMap<String, i64>, lines: Vec<String>| {
        for l in lines {
            let (kind, row) = l.split_once(' ').unwrap();
            *table.entry(row.to_string()).or_default() += if kind.starts_with('+') { 1 } else { -1 };
        }
        table.retain(|_, n| *n != 0);
    };
    let mut whole = Join::new(spec(JoinType::Left, [false, false], None)).unwrap();
    whole.open(&ctx(0, 1), RestoredState::default()).unwrap();
    let mut expected = BTreeMap::new();
    for (s, b) in &batches {
        replay(&mut expected, feed(&mut whole, *s, b.clone()));
    }
    let mut first = Join::new(spec(JoinType::Left, [false, false], None)).unwrap();
    first.open(&ctx(0, 1), RestoredState::default()).unwrap();
    let mut table = BTreeMap::new();
    for (s, b) in &batches[..15] {
        replay(&mut table, feed(&mut first, *s, b.clone()));
    }
    let snap = first.snapshot(1).unwrap().unwrap();
    // The same state written into a checkpoint's file (the header filled in after the left side
    // is written) reads back, its checksum verified, as the same bytes.
    let dir = tempfile::tempdir().unwrap();
    let store = keel_state::CheckpointStore::open(dir.path(), 1).unwrap();
    let mut w = store.writer(1).unwrap();
    let mut file = store.state_file(1, "join.0");
    assert!(first.snapshot_into(1, &mut file).unwrap());
    w.adopt(file.finish().unwrap().unwrap()).unwrap();
    w.commit(serde_json::json!({})).unwrap();
    let from_file = store.latest().unwrap().unwrap().read("join.0").unwrap();
    assert_eq!(from_file, snap);
    let restored = RestoredState { parts: vec![from_file], inherited: vec![0], checkpoint: Some(1) };
    let mut two: Vec<Join> = (0..2)
        .map(|i| {
            let mut op = Join::new(spec(JoinType::Left, [false, false], None)).unwrap();
            op.open(&ctx(i, 2), restored.clone()).unwrap();
            op
        })
        .collect();
    for (s, b) in &batches[15..] {
        for (t, part) in crate::exchange::split_by_key(b, &[0], 128, 2).unwrap().into_iter().enumerate() {
            if let Some(part) = part {
                replay(&mut table, feed(&mut two[t], *s, part));
            }
        }
    }
    assert_eq!(table, expected);
    assert!(!expected.is_empty());
}

#[test]
fn a_truncated_snapshot_is_refused_on_restore() {
    let mut op = Join::new(spec(JoinType::Inner, [false, false], None)).unwrap();
    op.open(&ctx(0, 1), RestoredState::default()).unwrap();
    feed(&mut op, 0, rows(&[Some(1)], &["a"], &[0], None));
    let mut snap = op.snapshot(1).unwrap().unwrap();
    snap.truncate(snap.len() / 2);
    let restored = RestoredState { parts: vec![snap], inherited: vec![0], checkpoint: Some(1) };
    let mut again = Join::new(spec(JoinType::Inner, [false, false], None)).unwrap();
    assert!(again.open(&ctx(0, 1), restored).is_err(), "half a snapshot must not restore as if it were whole");
}

#[test]
fn rows_idle_for_the_state_ttl_are_forgotten() {
    let mut s = spec(JoinType::Inner, [false, false], None).as_ref().clone();
    s.state_ttl = Some(Duration::from_secs(10));
    let mut op = Join::new(Arc::new(s)).unwrap();
    op.open(&ctx(0, 1), RestoredState::default()).unwrap();
    let t0 = op.epoch;
    let at = |secs: u64| t0 + Duration::from_secs(secs);
    let feed_at = |op: &mut Join, side: usize, b: RecordBatch, secs: u64| {
        let mut out = vec![];
        op.on_batch(side, &b, &mut out, at(secs)).unwrap();
        out.iter().map(|b| b.num_rows()).sum::<usize>()
    };
    feed_at(&mut op, 0, rows(&[Some(1)], &["a"], &[0], None), 0);
    assert_eq!(feed_at(&mut op, 1, rows(&[Some(1)], &["x"], &[0], None), 5), 1, "a is held at 5 s");
    assert_eq!(feed_at(&mut op, 1, rows(&[Some(2)], &["y"], &[0], None), 12), 0);
    assert_eq!(op.state[0].rows.len(), 0, "a, idle since 0 s, is gone at 12 s");
    assert_eq!(op.state[0].held.stored_batches(), 0, "with its stored batch");
    assert_eq!(op.state[1].rows.len(), 2, "x (5 s) and y (12 s) are still held");
    assert_eq!(feed_at(&mut op, 0, rows(&[Some(1)], &["b"], &[0], None), 14), 1, "b meets x");
    feed_at(&mut op, 0, rows(&[Some(3)], &["c"], &[0], None), 16);
    assert_eq!(op.state[1].rows.len(), 1, "x (5 s) is gone at 16 s, y (12 s) is not");
}

#[test]
fn a_snapshot_of_several_chunks_restores_chunk_by_chunk() {
    // Three input batches of 1500 left rows, all held: each is a run long enough to be a chunk
    // of its own in the snapshot, so the left side's stream holds several batches.
    let mut first = Join::new(spec(JoinType::Inner, [false, false], None)).unwrap();
    first.open(&ctx(0, 1), RestoredState::default()).unwrap();
    let n = 1500;
    let names: Vec<String> = (0..3 * n).map(|i| format!("l{i}")).collect();
    for b in 0..3 {
        let k: Vec<Option<i64>> = (0..n).map(|i| Some(((b * n + i) % 1000) as i64)).collect();
        let v: Vec<&str> = names[b * n..(b + 1) * n].iter().map(String::as_str).collect();
        assert!(feed(&mut first, 0, rows(&k, &v, &vec![0; n], None)).is_empty());
    }
    let snap = first.snapshot(1).unwrap().unwrap();
    let l = u64::from_le_bytes(snap[8..16].try_into().unwrap()) as usize;
    let chunks = keel_state::batches_from_ipc(&snap[16..16 + l], "test").unwrap().count();
    assert!(chunks >= 3, "{chunks} chunks");
    // Each key k < 1000 has rows k, k + 1000, ... among the 4500: a right row with key k
    // matches every one of them, at parallelism 1 and split over two subtasks.
    let probe: Vec<Option<i64>> = (0..1000).map(Some).collect();
    let r = rows(&probe, &vec!["r"; 1000], &vec![0; 1000], None);
    for parallelism in [1u32, 2] {
        let restored = RestoredState { parts: vec![snap.clone()], inherited: vec![0], checkpoint: Some(1) };
        let mut matched = vec![];
        for subtask in 0..parallelism {
            let mut op = Join::new(spec(JoinType::Inner, [false, false], None)).unwrap();
            op.open(&ctx(subtask, parallelism), restored.clone()).unwrap();
            let mine = crate::exchange::split_by_key(&r, &[0], 128, parallelism).unwrap();
            if let Some(part) = mine[subtask as usize].clone() {
                matched.extend(feed(&mut op, 1, part));
            }
        }
        matched.sort();
        let mut want: Vec<String> = names.iter().map(|v| format!("+I {v} r")).collect();
        want.sort();
        assert_eq!(matched, want, "parallelism {parallelism}");
    }
}
