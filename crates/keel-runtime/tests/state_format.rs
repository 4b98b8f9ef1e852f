//! The window aggregate's checkpointed state format is pinned: a snapshot written by Keel 0.1
//! (checked in) must restore, at any parallelism, into the same results. Regenerate only for a
//! deliberate format change, with `KEEL_WRITE_FIXTURES=1`.

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
use keel_runtime::ops::{AggregateCall, AggregateFunction, GroupColumn, WindowAggregate, WindowAggregateSpec};
use keel_runtime::{Metrics, Operator, RestoredState, TaskContext};
use std::sync::Arc;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn spec() -> Arc<WindowAggregateSpec> {
    let input = Arc::new(Schema::new(vec![
        Field::new("key_0", DataType::Utf8, true),
        Field::new("window_start", ts(), false),
        Field::new("window_end", ts(), false),
        Field::new("arg_3", DataType::Int64, true),
    ]));
    let output = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, true),
        Field::new("window_start", ts(), false),
        Field::new("window_end", ts(), false),
        Field::new("n", DataType::Int64, false),
        Field::new("total", DataType::Int64, true),
    ]));
    Arc::new(WindowAggregateSpec {
        input_schema: input,
        num_keys: 1,
        window_start: 1,
        window_end: 2,
        aggregates: vec![
            AggregateCall { func: AggregateFunction::CountStar, arg: None, output_type: DataType::Int64, user: None },
            AggregateCall { func: AggregateFunction::Sum, arg: Some(3), output_type: DataType::Int64, user: None },
        ],
        group_output: vec![GroupColumn::Key(0), GroupColumn::WindowStart, GroupColumn::WindowEnd],
        output_schema: output,
        late_output: None,
        merge_sessions: false,
        processing_time: None,
        hop_slices: None,
    })
}

fn ctx(subtask: u32, parallelism: u32) -> TaskContext {
    TaskContext {
        job: "fixture".into(),
        stage: "agg".into(),
        subtask,
        parallelism,
        key_groups: 128,
        data_dir: ".".into(),
        job_dir: ".".into(),
        run_id: "fixture".into(),
        attempt: 0,
        metrics: Arc::new(Metrics::default()),
    }
}

fn fixture() -> std::path::PathBuf {
    manifest_dir().join("tests/fixtures/window-aggregate-v1.arrow")
}

/// This package's directory: the value cargo sets when it runs the test (the compile-time value
/// can name another checkout that shared the build cache).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

#[test]
fn window_state_written_by_version_1_restores_at_any_parallelism() {
    if std::env::var("KEEL_WRITE_FIXTURES").is_ok() {
        let mut agg = WindowAggregate::new(spec()).unwrap();
        agg.open(&ctx(0, 1), RestoredState::default()).unwrap();
        let users = ["ann", "bob", "cid", "dee", "eve"];
        let batch = RecordBatch::try_new(
            spec().input_schema.clone(),
            vec![
                Arc::new(StringArray::from((0..20).map(|i| users[i % 5]).collect::<Vec<_>>())),
                Arc::new(TimestampMillisecondArray::from(
                    (0..20).map(|i| if i < 10 { 0 } else { 10_000 }).collect::<Vec<i64>>(),
                )),
                Arc::new(TimestampMillisecondArray::from(
                    (0..20).map(|i| if i < 10 { 10_000 } else { 20_000 }).collect::<Vec<i64>>(),
                )),
                Arc::new(Int64Array::from((0..20).map(|i| i as i64).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        agg.process(batch, &mut vec![]).unwrap();
        std::fs::write(fixture(), agg.snapshot(1).unwrap().unwrap()).unwrap();
    }
    let bytes = std::fs::read(fixture()).unwrap();
    for parallelism in [1u32, 3] {
        let mut rows = vec![];
        for sub in 0..parallelism {
            let mut agg = WindowAggregate::new(spec()).unwrap();
            let restored = RestoredState { parts: vec![bytes.clone()], inherited: vec![0], checkpoint: Some(1) };
            agg.open(&ctx(sub, parallelism), restored).unwrap();
            let mut out = vec![];
            agg.on_watermark(i64::MAX, &mut out).unwrap();
            for b in out {
                for r in 0..b.num_rows() {
                    rows.push((
                        b.column(0).as_string::<i32>().value(r).to_string(),
                        b.column(1).as_primitive::<arrow::datatypes::TimestampMillisecondType>().value(r),
                        b.column(3).as_primitive::<Int64Type>().value(r),
                        b.column(4).as_primitive::<Int64Type>().value(r),
                    ));
                    assert!(b.column(4).is_valid(r));
                }
            }
        }
        rows.sort();
        // Rows i < 10 are in window 0, the rest in window 10 000; user = i % 5; total = sum of i.
        let mut expected = vec![];
        for (w, range) in [(0i64, 0..10), (10_000, 10..20)] {
            for (u, name) in ["ann", "bob", "cid", "dee", "eve"].iter().enumerate() {
                let vals: Vec<i64> = range.clone().filter(|i| i % 5 == u).map(|i| i as i64).collect();
                expected.push((name.to_string(), w, vals.len() as i64, vals.iter().sum()));
            }
        }
        expected.sort();
        assert_eq!(rows, expected, "parallelism {parallelism}");
    }
}

/// Session windows: rows merge into sessions across batches and across a snapshot and restore
/// (at another parallelism), and touching sessions merge.
#[test]
fn sessions_merge_across_batches_and_a_restore() {
    let mut spec = spec().as_ref().clone();
    spec.merge_sessions = true;
    let spec = Arc::new(spec);
    let gap = 5_000;
    let batch = |rows: &[(&str, i64, i64)]| {
        RecordBatch::try_new(
            spec.input_schema.clone(),
            vec![
                Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.1 + gap).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    };
    let mut a = WindowAggregate::new(spec.clone()).unwrap();
    a.open(&ctx(0, 1), RestoredState::default()).unwrap();
    // ann: 0 and 20 000 are far apart; 10 000 later joins neither; bob: 1 000.
    a.process(batch(&[("ann", 0, 1), ("ann", 20_000, 2), ("bob", 1_000, 10)]), &mut vec![]).unwrap();
    a.process(batch(&[("ann", 10_000, 4)]), &mut vec![]).unwrap();
    let state = a.snapshot(1).unwrap().unwrap();
    // Restore at parallelism 2 and bridge ann's sessions: 5 000 touches [0, 5 000) and
    // [10 000, 15 000); 15 000 touches that and [20 000, 25 000).
    let mut rows = vec![];
    for sub in 0..2 {
        let mut b = WindowAggregate::new(spec.clone()).unwrap();
        b.open(&ctx(sub, 2), RestoredState { parts: vec![state.clone()], inherited: vec![0], checkpoint: Some(1) })
            .unwrap();
        let mut out = vec![];
        let mine = |k: &str| {
            let h = keel_runtime::exchange::row_key_groups(&batch(&[(k, 0, 0)]), &[0], 128).unwrap()[0];
            keel_types::KeyGroupRange::of_subtask(sub, 128, 2).contains(h)
        };
        if mine("ann") {
            b.process(batch(&[("ann", 5_000, 8), ("ann", 15_000, 16)]), &mut out).unwrap();
        }
        b.on_watermark(i64::MAX, &mut out).unwrap();
        rows.extend(window_rows(&out));
    }
    rows.sort();
    assert_eq!(rows, vec![("ann".to_string(), 0, 25_000, 5, 31), ("bob".to_string(), 1_000, 6_000, 1, 10)]);
}

/// Output rows of a window aggregate as (user, window start, window end, count, total).
fn window_rows(out: &[RecordBatch]) -> Vec<(String, i64, i64, i64, i64)> {
    let mut rows = vec![];
    for o in out {
        for r in 0..o.num_rows() {
            rows.push((
                o.column(0).as_string::<i32>().value(r).to_string(),
                o.column(1).as_primitive::<arrow::datatypes::TimestampMillisecondType>().value(r),
                o.column(2).as_primitive::<arrow::datatypes::TimestampMillisecondType>().value(r),
                o.column(3).as_primitive::<Int64Type>().value(r),
                o.column(4).as_primitive::<Int64Type>().value(r),
            ));
        }
    }
    rows
}

/// HOP windows built from slices give exactly what the same rows assigned to every window give,
/// with late rows and a snapshot restored at parallelism 2 in the middle; a sliced snapshot
/// does not restore into an aggregate of whole windows.
#[test]
fn hop_slices_match_whole_windows_across_a_restore() {
    use keel_types::WindowSpec;
    let seed = std::env::var("KEEL_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("hop slices: seed {seed} (set KEEL_TEST_SEED to replay)");
    let mut state = seed;
    let mut below = |n: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let (size, slide) = (6_000, 2_000);
    let hop = WindowSpec::Hop { size, slide, offset: 0 };
    let sliced_spec = {
        let mut s = spec().as_ref().clone();
        s.hop_slices = Some((size, slide));
        Arc::new(s)
    };
    let users = ["ann", "bob", "cid", "dee"];
    // Batches of (user, ts, amount), each followed by a watermark 1 s behind the largest ts so
    // far; rows go up to 3 s back, so some arrive after some or all of their windows fired.
    type Batch = (Vec<(&'static str, i64, i64)>, i64);
    let mut batches: Vec<Batch> = vec![];
    let mut max_ts = 0i64;
    for b in 0..40 {
        let rows: Vec<(&str, i64, i64)> = (0..1 + below(6))
            .map(|_| {
                let ts = (b * 500 + below(500) as i64 - below(3_000) as i64).max(0);
                (users[below(4) as usize], ts, below(100) as i64)
            })
            .collect();
        max_ts = max_ts.max(rows.iter().map(|r| r.1).max().unwrap_or(0));
        batches.push((rows, max_ts - 1_000));
    }
    let input = |rows: &[(&str, i64, i64, i64)]| {
        RecordBatch::try_new(
            spec().input_schema.clone(),
            vec![
                Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    };
    // Whole windows: each row once per window containing it.
    let mut whole = WindowAggregate::new(spec()).unwrap();
    whole.open(&ctx(0, 1), RestoredState::default()).unwrap();
    let mut want = vec![];
    for (rows, wm) in &batches {
        let mut assigned = vec![];
        for &(u, ts, v) in rows {
            hop.assign(ts, |s, e| assigned.push((u, s, e, v)));
        }
        whole.process(input(&assigned), &mut want).unwrap();
        whole.on_watermark(*wm, &mut want).unwrap();
    }
    whole.on_watermark(i64::MAX, &mut want).unwrap();
    // Slices: each row once, in its slice; snapshot after a random batch, restore at
    // parallelism 2 (each subtask given the rows of its own key groups), and go on.
    let slice_rows = |rows: &[(&'static str, i64, i64)]| -> Vec<(&'static str, i64, i64, i64)> {
        rows.iter()
            .map(|&(u, ts, v)| {
                let s = keel_types::window::window_start(ts, 0, slide);
                (u, s, s + slide, v)
            })
            .collect()
    };
    let cut = 1 + below(batches.len() as u64 - 2) as usize;
    let mut first = WindowAggregate::new(sliced_spec.clone()).unwrap();
    first.open(&ctx(0, 1), RestoredState::default()).unwrap();
    let mut got = vec![];
    for (rows, wm) in &batches[..cut] {
        first.process(input(&slice_rows(rows)), &mut got).unwrap();
        first.on_watermark(*wm, &mut got).unwrap();
    }
    let snapshot = first.snapshot(1).unwrap().unwrap();
    let restored = || RestoredState { parts: vec![snapshot.clone()], inherited: vec![0], checkpoint: Some(1) };
    for sub in 0..2 {
        let mut next = WindowAggregate::new(sliced_spec.clone()).unwrap();
        next.open(&ctx(sub, 2), restored()).unwrap();
        let mine = |u: &str| {
            let probe = input(&[(u, 0, 0, 0)]);
            let g = keel_runtime::exchange::row_key_groups(&probe, &[0], 128).unwrap()[0];
            keel_types::KeyGroupRange::of_subtask(sub, 128, 2).contains(g)
        };
        for (rows, wm) in &batches[cut..] {
            let own: Vec<_> = slice_rows(rows).into_iter().filter(|r| mine(r.0)).collect();
            next.process(input(&own), &mut got).unwrap();
            next.on_watermark(*wm, &mut got).unwrap();
        }
        next.on_watermark(i64::MAX, &mut got).unwrap();
    }
    let (mut want, mut got) = (window_rows(&want), window_rows(&got));
    want.sort();
    got.sort();
    assert!(want.len() > 20, "the rows fill several windows: {want:?}");
    assert_eq!(got, want, "seed {seed}, restored after batch {cut}");
    // A sliced snapshot is not whole windows: restoring it there is refused, saying what to do.
    let mut wrong = WindowAggregate::new(spec()).unwrap();
    let err = wrong.open(&ctx(0, 1), restored()).unwrap_err().to_string();
    assert!(err.contains("HOP slices") && err.contains("--fresh"), "{err}");
}
