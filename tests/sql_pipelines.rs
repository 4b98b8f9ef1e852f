//! SQL pipelines beyond the basic tumbling window, each checked against results computed here
//! from the same events: HOP windows with a WHERE filter and MIN/MAX/AVG, projections with
//! DataFusion scalar functions, the filesystem sink (JSON lines and CSV, published only on
//! checkpoint completion), and the print sink (which says it is at-least-once).

mod common;
use common::*;
use std::collections::BTreeMap;

const N: u64 = 20_000;
const USERS: u64 = 50;
const STEP: i64 = 3;

fn events(test: &str) -> (tempfile::TempDir, u64) {
    let seed = seed(test);
    let dir = tempfile::tempdir().unwrap();
    make_events(dir.path(), "events", 2, N, seed, USERS, STEP);
    (dir, seed)
}

const SOURCE: &str = "CREATE TABLE events (
  user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'topic', 'topic' = 'events', 'format' = 'json');
";

/// (user, window start) and (window end, min, max, avg, count).
type Key = (String, String);
type Stats = (String, i64, i64, i64, i64);

fn files(dir: &std::path::Path, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with('.') && n.ends_with(ext))
        .collect();
    names.sort();
    names
}

#[test]
fn hop_windows_with_a_filter_and_min_max_avg_to_json_files() {
    let (dir, seed) = events("hop_filter");
    let out = dir.path().join("out");
    let sql = dir.path().join("hop.sql");
    std::fs::write(
        &sql,
        format!(
            "{SOURCE}CREATE TABLE stats (user_id VARCHAR, window_start TIMESTAMP(3), window_end TIMESTAMP(3),
  lo BIGINT, hi BIGINT, mean BIGINT, n BIGINT)
WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
INSERT INTO stats
SELECT user_id, window_start, window_end, MIN(amount), MAX(amount), AVG(amount), COUNT(*)
FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '6' SECOND))
WHERE amount > 100 AND user_id <> 'user-7'
GROUP BY user_id, window_start, window_end;",
            out.display()
        ),
    )
    .unwrap();
    run_ok(keel(dir.path()).args([
        "run",
        sql.to_str().unwrap(),
        "--bounded",
        "--quiet",
        "--checkpoint-interval",
        "200ms",
    ]));
    // Expected: each qualifying event in size/slide = 3 windows.
    let mut exp: BTreeMap<(String, i64), (i64, i64, i64, i64)> = BTreeMap::new();
    for i in 0..N {
        let (u, a, ts) = keel::sample::event(seed, i, USERS, STEP);
        if a <= 100 || u == "user-7" {
            continue;
        }
        let last = ts.div_euclid(2000) * 2000;
        for start in [last - 4000, last - 2000, last] {
            let e = exp.entry((u.clone(), start)).or_insert((i64::MAX, i64::MIN, 0, 0));
            e.0 = e.0.min(a);
            e.1 = e.1.max(a);
            e.2 += a;
            e.3 += 1;
        }
    }
    let fmt = keel::types::time::format_timestamp_ms;
    let expected: BTreeMap<Key, Stats> =
        exp.into_iter().map(|((u, s), (lo, hi, sum, n))| ((u, fmt(s)), (fmt(s + 6000), lo, hi, sum / n, n))).collect();
    let names = files(&out, ".jsonl");
    assert!(!names.is_empty(), "no files were published");
    let mut actual = BTreeMap::new();
    for name in names {
        for line in std::fs::read_to_string(out.join(name)).unwrap().lines() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = (r["user_id"].as_str().unwrap().to_string(), r["window_start"].as_str().unwrap().to_string());
            let val = (
                r["window_end"].as_str().unwrap().to_string(),
                r["lo"].as_i64().unwrap(),
                r["hi"].as_i64().unwrap(),
                r["mean"].as_i64().unwrap(),
                r["n"].as_i64().unwrap(),
            );
            assert!(actual.insert(key.clone(), val).is_none(), "{key:?} written twice");
        }
    }
    assert_same(&actual, &expected);
    let hidden: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "in-progress or pending files left: {hidden:?}");
}

#[test]
fn projections_with_scalar_functions_to_csv_files() {
    let (dir, seed) = events("scalar_csv");
    let out = dir.path().join("csv");
    let sql = dir.path().join("proj.sql");
    std::fs::write(
        &sql,
        format!(
            "{SOURCE}CREATE TABLE shaped (who VARCHAR, cents BIGINT, doubled BIGINT, ts TIMESTAMP(3))
WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
INSERT INTO shaped
SELECT upper(substr(user_id, 6)), amount * 100, abs(amount - 500) * 2, ts FROM events WHERE amount % 7 = 0;",
            out.display()
        ),
    )
    .unwrap();
    run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet", "-p", "2"]));
    let mut expected = vec![];
    for i in 0..N {
        let (u, a, ts) = keel::sample::event(seed, i, USERS, STEP);
        if a % 7 == 0 {
            let who = u[5..].to_uppercase();
            expected.push(format!(
                "{who},{},{},{}",
                a * 100,
                (a - 500).abs() * 2,
                keel::types::time::format_timestamp_ms(ts)
            ));
        }
    }
    let mut actual: Vec<String> = files(&out, ".csv")
        .iter()
        .flat_map(|n| std::fs::read_to_string(out.join(n)).unwrap().lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    expected.sort();
    actual.sort();
    assert_eq!(actual.len(), expected.len());
    assert_eq!(actual, expected);
}

#[test]
fn the_print_sink_prints_every_row_and_says_it_is_at_least_once() {
    let (dir, seed) = events("print");
    let sql = dir.path().join("print.sql");
    std::fs::write(
        &sql,
        format!(
            "{SOURCE}CREATE TABLE shown (user_id VARCHAR, window_end TIMESTAMP(3), n BIGINT) WITH ('connector' = 'print');
INSERT INTO shown SELECT user_id, window_end, COUNT(*)
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY user_id, window_start, window_end;"
        ),
    )
    .unwrap();
    let out = run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sink shown: at-least-once"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = expected_totals(N, seed, USERS, STEP, 10_000);
    let mut want: Vec<String> = expected.iter().map(|((u, _), (end, n, _))| format!("+I[{u}, {end}, {n}]")).collect();
    let mut got: Vec<String> = stdout.lines().map(str::to_string).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn explain_prints_the_streaming_plan_without_running() {
    let (dir, _) = events("explain");
    let sql = dir.path().join("explain.sql");
    std::fs::write(&sql, WINDOW_SQL.replace("INSERT INTO totals", "EXPLAIN PLAN FOR INSERT INTO totals")).unwrap();
    let out = run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "-p", "3"]));
    let plan = String::from_utf8_lossy(&out.stdout);
    for part in [
        "Streaming plan (parallelism 3)",
        "source events: topic 'events'",
        "window assigner Tumble { size: 10000",
        "exchange: stage 0 hashed by columns [0]",
        "window aggregate [CountStar, Sum]",
        "sink totals",
        "exactly-once",
        "Aggregate: groupBy=",
    ] {
        assert!(plan.contains(part), "{part:?} missing from:\n{plan}");
    }
    assert!(!dir.path().join("jobs/explain").exists(), "EXPLAIN must not create job state");
    assert!(
        keel::log::Log::open(dir.path()).unwrap().topic("totals").is_err(),
        "EXPLAIN must not create the sink topic"
    );
}

#[test]
fn the_blackhole_sink_discards_rows_and_counts_them() {
    let (dir, seed) = events("blackhole");
    let sql = dir.path().join("bh.sql");
    std::fs::write(
        &sql,
        format!(
            "{SOURCE}CREATE TABLE nowhere (user_id VARCHAR, amount BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO nowhere SELECT user_id, amount FROM events WHERE amount > 500;"
        ),
    )
    .unwrap();
    let out = run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kept = (0..N).filter(|&i| keel::sample::event(seed, i, USERS, STEP).1 > 500).count();
    assert!(stderr.contains(&format!("read {N} events")) && stderr.contains(&format!("wrote {kept} rows")), "{stderr}");
    assert!(stderr.contains("sink nowhere: none needed (discards every row)"), "{stderr}");
}

const DATAGEN: &str = "CREATE TABLE gen (user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
WITH ('connector' = 'datagen', 'number-of-rows' = '2000', 'rows-per-second' = '1000', 'seed' = 'SEED',
      'fields.user_id.length' = '1', 'fields.amount.min' = '1', 'fields.amount.max' = '100');
CREATE TABLE out_t (user_id VARCHAR, window_start TIMESTAMP(3), n BIGINT, lo BIGINT, hi BIGINT)
WITH ('connector' = 'topic', 'topic' = 'out', 'format' = 'json');
INSERT INTO out_t SELECT user_id, window_start, COUNT(*), MIN(amount), MAX(amount)
FROM TABLE(TUMBLE(TABLE gen, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY user_id, window_start, window_end;";

fn datagen_run(seed: u64, p: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("gen.sql");
    std::fs::write(&sql, DATAGEN.replace("SEED", &seed.to_string())).unwrap();
    // 2000 rows at 1000 rows per second of event time; paced to 1000 per second of wall time, so
    // this takes about 2 s (no --bounded: a datagen table with 'number-of-rows' ends by itself).
    run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--quiet", "-p", p]));
    let mut rows: Vec<String> = topic_rows(dir.path(), "out").iter().map(|r| r.to_string()).collect();
    rows.sort();
    rows
}

#[test]
fn datagen_rows_are_seeded_bounded_and_within_their_ranges() {
    let rows = datagen_run(11, "2");
    let parsed: Vec<serde_json::Value> = rows.iter().map(|r| serde_json::from_str(r).unwrap()).collect();
    let total: i64 = parsed.iter().map(|r| r["n"].as_i64().unwrap()).sum();
    assert_eq!(total, 2000, "every generated row counted once");
    assert!(parsed.iter().all(|r| r["lo"].as_i64().unwrap() >= 1 && r["hi"].as_i64().unwrap() <= 100));
    assert!(parsed.iter().all(|r| r["user_id"].as_str().unwrap().len() == 1));
    // Event time advances 1 ms per row at 1000 rows per second: two one-second windows.
    let windows: std::collections::BTreeSet<&str> =
        parsed.iter().map(|r| r["window_start"].as_str().unwrap()).collect();
    assert_eq!(windows.len(), 2, "{windows:?}");
    assert_eq!(rows, datagen_run(11, "1"), "the same seed gives the same rows at any parallelism");
    assert_ne!(rows, datagen_run(12, "2"), "another seed gives other rows");
}
