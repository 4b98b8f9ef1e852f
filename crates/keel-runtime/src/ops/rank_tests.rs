//! Tests of the streaming Top-N: exact changelogs, seeded comparisons with a brute-force top N,
//! changelog input, restore by key group and the TTL.
use super::*;
use crate::changelog::with_op_field;
use crate::exchange::split_by_key;
use crate::test_rng::Lcg;
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
    // Every held row is counted in the stored batches, and they hold at most about twice that.
    let held: usize = r.partitions.values().map(|p| p.store.len()).sum();
    let (stored, live) = r.held.rows();
    assert_eq!(live, held, "stored batches count exactly the held rows");
    assert!(stored <= 2 * live + r.compact_slack, "{stored} stored rows for {live} held");
    lines(&out)
}

fn ctx(subtask: u32, parallelism: u32) -> TaskContext {
    TaskContext::for_test(subtask, parallelism)
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
    for (o, slack) in variants.iter().flat_map(|&o| [(o, COMPACT_SLACK), (o, 0)]) {
        // Without slack the stored batches are compacted whenever half their rows are gone.
        let (mut r, mut all, mut table) = (op(o), vec![], vec![]);
        r.compact_slack = slack;
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
    for o in [Opts { limit: 3, updating: true, ..DEDUP }, Opts { limit: 2, updating: true, number: false, ..DEDUP }] {
        let (mut r, mut live, mut table, mut next_v, mut was_tree) = (op(o), Vec::<Row3>::new(), vec![], 0, false);
        r.compact_slack = 0;
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
    let first: Vec<Row3> = (0..20).flat_map(|k| [(k, 10, k * 10), (k, 20, k * 10 + 1), (k, 30, k * 10 + 2)]).collect();
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
fn same_row_is_equality_of_idents() {
    use crate::ops::rank_store::Entry;
    let mut rng = crate::test_rng::Lcg::seeded("rank same_row");
    let rows: [&[u8]; 4] = [b"", b"a", b"b", b"ab"];
    for _ in 0..2000 {
        let changelog = rng.below(2) == 1;
        let mut pick = || {
            let row = if changelog { rows[1 + rng.below(3) as usize] } else { rows[0] };
            let at = (rng.below(3) as u32, rng.below(3) as u32);
            Entry::new(b"k", row, rng.bits(), at)
        };
        let (x, y) = (pick(), pick());
        assert_eq!(x.same_row(&y), x.ident() == y.ident(), "{x:?} {y:?} (seed {})", rng.seed());
    }
}
