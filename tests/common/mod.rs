//! Helpers shared by the integration tests: running the `keel` binary, seeded randomness,
//! reading a topic's committed rows, and the demo pipeline's expected output computed
//! independently of Keel (plain Rust over the generated events).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn keel_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keel"))
}

/// A `keel` command on a data directory, with quiet logs.
pub fn keel(data: &Path) -> Command {
    let mut c = Command::new(keel_bin());
    c.arg("--data-dir").arg(data).env("KEEL_LOG", "warn").env_remove("KEEL_FAULTS");
    c
}

/// Runs `keel produce ARGS` with `input` on its standard input. The command may stop reading
/// early (a refused line), so a broken pipe while writing is expected and ignored.
pub fn produce_input(data: &Path, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = keel(data)
        .arg("produce")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keel produce");
    let mut stdin = child.stdin.take().expect("a piped standard input");
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().expect("wait for keel produce")
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn keel");
    assert!(
        out.status.success(),
        "keel failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The seed for this test: `KEEL_TEST_SEED` to replay a failure, else time-based. Printed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("KEEL_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    println!("{test}: seed = {seed} (replay with KEEL_TEST_SEED={seed})");
    seed
}

/// A small seeded generator (splitmix64) for test decisions.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        keel::sample::mix(self.0, 0x5eed)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every committed record of a topic, parsed as JSON.
pub fn topic_rows(data: &Path, topic: &str) -> Vec<serde_json::Value> {
    let log = keel::log::Log::open(data).unwrap();
    let t = log.topic(topic).unwrap();
    let mut rows = vec![];
    for p in 0..t.partitions() {
        let mut r = t.reader(p, 0).unwrap();
        while let Some(chunk) = r.read(1 << 20).unwrap() {
            chunk.for_each(|rec| rows.push(serde_json::from_slice(rec.value).expect("output is JSON"))).unwrap();
        }
    }
    rows
}

/// Creates topic `name` with `partitions` and fills it with `n` sample events.
pub fn make_events(data: &Path, name: &str, partitions: u32, n: u64, seed: u64, users: u64, step_ms: i64) {
    let log = keel::log::Log::open(data).unwrap();
    let t = log.create_topic(name, keel::log::TopicConfig::new(partitions)).unwrap();
    keel::sample::fill_topic(&t, n, seed, users, step_ms).unwrap();
}

pub const WINDOW_SQL: &str = "
CREATE TABLE events (
  user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'topic', 'topic' = 'events', 'format' = 'json');

CREATE TABLE totals (
  user_id VARCHAR, window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT, total BIGINT
) WITH ('connector' = 'topic', 'topic' = 'totals', 'format' = 'json');

INSERT INTO totals
SELECT user_id, window_start, window_end, COUNT(*) AS n, SUM(amount) AS total
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY user_id, window_start, window_end;
";

/// Window totals: (user, window_start ISO) -> (window_end ISO, n, total).
pub type Totals = BTreeMap<(String, String), (String, i64, i64)>;

/// (user, window_start ISO) -> (window_end ISO, n, total): the tumbling-window totals computed
/// directly from the generated events.
pub fn expected_totals(
    n: u64,
    seed: u64,
    users: u64,
    step_ms: i64,
    size_ms: i64,
) -> BTreeMap<(String, String), (String, i64, i64)> {
    let mut acc: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    for i in 0..n {
        let (user, amount, ts) = keel::sample::event(seed, i, users, step_ms);
        let start = ts.div_euclid(size_ms) * size_ms;
        let e = acc.entry((user, start)).or_insert((0, 0));
        e.0 += 1;
        e.1 += amount;
    }
    acc.into_iter()
        .map(|((u, s), (c, t))| {
            let fmt = keel::types::time::format_timestamp_ms;
            ((u, fmt(s)), (fmt(s + size_ms), c, t))
        })
        .collect()
}

/// The committed totals keyed like `expected_totals`; panics on a duplicate key.
pub fn actual_totals(rows: &[serde_json::Value]) -> Totals {
    let mut out = BTreeMap::new();
    for r in rows {
        let key = (r["user_id"].as_str().unwrap().to_string(), r["window_start"].as_str().unwrap().to_string());
        let val =
            (r["window_end"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap(), r["total"].as_i64().unwrap());
        if let Some(prev) = out.insert(key.clone(), val) {
            panic!("window {key:?} was committed twice (first {prev:?})");
        }
    }
    out
}

/// Asserts two result maps are equal, describing the first differences.
pub fn assert_same<K: std::fmt::Debug + Ord, V: std::fmt::Debug + PartialEq>(
    actual: &BTreeMap<K, V>,
    expected: &BTreeMap<K, V>,
) {
    let missing: Vec<_> = expected.keys().filter(|k| !actual.contains_key(k)).take(5).collect();
    let extra: Vec<_> = actual.keys().filter(|k| !expected.contains_key(k)).take(5).collect();
    let wrong: Vec<_> = expected.iter().filter(|(k, v)| actual.get(k).is_some_and(|a| a != *v)).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && wrong.is_empty(),
        "{} rows expected, {} committed; missing {missing:?}; unexpected {extra:?}; wrong {wrong:?}",
        expected.len(),
        actual.len()
    );
}

/// This package's directory: the value cargo sets when it runs the test (the compile-time value
/// can name another checkout that shared the build cache).
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

/// Waits (up to 60 s) until topic `topic` holds at least `n` committed rows while `child` keeps
/// running; returns them. Fails if the child exits or time runs out.
pub fn wait_for_rows(
    data: &Path,
    topic: &str,
    n: usize,
    child: &mut std::process::Child,
    what: &str,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let rows =
            keel::log::Log::open(data).unwrap().topic(topic).map(|_| topic_rows(data, topic)).unwrap_or_default();
        if rows.len() >= n {
            return rows;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: no {n} rows within 60 s");
        assert!(child.try_wait().unwrap().is_none(), "{what}: keel exited");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Replays a debezium-json changelog (as `topic_rows` returns it) into the rows of the final
/// table; rows without an envelope are returned as they are. Panics on a retraction of a row
/// that is not there (a duplicated or lost change).
pub fn replay_changelog(rows: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    let envelope =
        |v: &serde_json::Value| v.get("op").is_some() && (v.get("before").is_some() || v.get("after").is_some());
    if !rows.iter().any(envelope) {
        return rows;
    }
    let mut table: std::collections::BTreeMap<String, (serde_json::Value, i64)> = Default::default();
    for v in &rows {
        assert!(envelope(v), "a changelog record without an envelope: {v}");
        if let Some(after) = v.get("after").filter(|a| !a.is_null()) {
            table.entry(after.to_string()).or_insert((after.clone(), 0)).1 += 1;
        }
        if let Some(before) = v.get("before").filter(|b| !b.is_null()) {
            let e = table.entry(before.to_string()).or_insert((before.clone(), 0));
            e.1 -= 1;
            assert!(e.1 >= 0, "the changelog retracts a row it never inserted: {before}");
        }
    }
    table.into_values().flat_map(|(row, n)| std::iter::repeat_n(row, n as usize)).collect()
}
