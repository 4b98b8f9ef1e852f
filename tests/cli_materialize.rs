//! `keel consume --materialize` as a user runs it: debezium-json changes (inserts, updates,
//! deletes, duplicates, spread over partitions so a removal may be read before its insert) and
//! upsert records with tombstones (written with `keel produce --key-separator`) replay to exactly
//! the final table; a plain record is refused with its position; tombstones print as `null` in a
//! plain consume; and SQL pipelines writing an upsert topic and a debezium-json topic materialize
//! to the results computed independently: window totals (inserts only) and an unwindowed
//! GROUP BY with HAVING (updates, and deletes when a group stops qualifying).

mod common;
use common::*;
use std::io::Write;
use std::process::{Output, Stdio};

fn produce(data: &std::path::Path, args: &[&str], input: &str) -> Output {
    let out = produce_input(data, args, input.as_bytes());
    assert!(out.status.success(), "produce failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs `keel consume ARGS`; returns (stdout lines, stderr).
fn consume(data: &std::path::Path, args: &[&str]) -> (Vec<String>, String) {
    let out = run_ok(keel(data).arg("consume").args(args));
    let lines = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    (lines, String::from_utf8(out.stderr).unwrap())
}

fn consume_err(data: &std::path::Path, args: &[&str]) -> String {
    let out = keel(data).arg("consume").args(args).stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success(), "consume {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn debezium_changes_materialize_to_the_final_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(keel(d).args(["topic", "create", "cdc", "--partitions", "3"]));
    // Round-robin over 3 partitions: some removals sit in a partition read before their insert.
    let changes = [
        r#"{"before":null,"after":{"k":"a","n":1},"op":"c"}"#,
        r#"{"before":null,"after":{"k":"b","n":1},"op":"c"}"#,
        r#"{"before":{"k":"a","n":1},"after":null,"op":"d"}"#,
        r#"{"before":null,"after":{"n":2,"k":"a"},"op":"c"}"#,
        r#"{"before":{"k":"b","n":1},"after":null,"op":"d"}"#,
        r#"{"before":null,"after":{"k":"c","n":5},"op":"c"}"#,
        r#"{"before":null,"after":{"k":"c","n":5},"op":"c"}"#,
        r#"{"before":{"k":"c","n":5},"after":null,"op":"d"}"#,
        r#"{"before":{"k":"a","n":2},"after":{"k":"a","n":3},"op":"u"}"#,
        r#"{"before":null,"after":{"k":"d","n":null},"op":"r"}"#,
    ];
    produce(d, &["cdc"], &(changes.join("\n") + "\n"));
    let (lines, err) = consume(d, &["cdc", "--materialize"]);
    assert_eq!(lines, vec![r#"{"k":"a","n":3}"#, r#"{"k":"c","n":5}"#, r#"{"k":"d","n":null}"#]);
    assert_eq!(err.trim(), "3 row(s) from 10 record(s) applied of topic 'cdc'");
    // A plain consume still prints the records themselves.
    assert_eq!(consume(d, &["cdc"]).0.len(), 10);
}

#[test]
fn upserts_and_tombstones_materialize_to_the_latest_value_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(keel(d).args(["topic", "create", "up", "--partitions", "2"]));
    let input = concat!(
        "{\"id\":1}|{\"id\":1,\"v\":\"x\"}\n",
        "{\"id\":2}|{\"id\":2,\"v\":\"y\"}\n",
        "{\"id\":1}|{\"v\":\"z\",\"id\":1}\n",
        "{\"id\":2}|\n",
        "{\"id\":3}|{\"id\":3,\"v\":\"w\"}\n",
        "{\"id\":4}|{\"id\":4,\"v\":\"gone\"}\n",
        "{\"id\":4}|\n",
    );
    let out = produce(d, &["up", "--key-separator", "|"], input);
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "wrote 7 record(s) to topic 'up'");
    let (lines, err) = consume(d, &["up", "--materialize"]);
    assert_eq!(lines, vec![r#"{"id":1,"v":"z"}"#, r#"{"id":3,"v":"w"}"#]);
    assert_eq!(err.trim(), "2 row(s) from 7 record(s) applied of topic 'up'");
    // Each key stays in one partition, and a plain consume shows a tombstone as null.
    let mut all = vec![];
    for p in ["0", "1"] {
        let (keyed, _) = consume(d, &["up", "--partition", p, "--key-separator", "|"]);
        let (plain, _) = consume(d, &["up", "--partition", p]);
        assert_eq!(keyed.len(), plain.len());
        for (k, v) in keyed.iter().zip(&plain) {
            let (key, value) = k.split_once('|').unwrap();
            assert_eq!(if value.is_empty() { "null" } else { value }, v.as_str());
            all.push((key.to_string(), p));
        }
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "a key in two partitions: {all:?}");
    // One partition alone materializes to its keys.
    let (p0, _) = consume(d, &["up", "--materialize", "--partition", "0"]);
    let (p1, _) = consume(d, &["up", "--materialize", "--partition", "1"]);
    let mut both = [p0, p1].concat();
    both.sort();
    assert_eq!(both, lines);
}

#[test]
fn plain_records_and_wrong_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(keel(d).args(["topic", "create", "mixed"]));
    produce(d, &["mixed"], "{\"before\":null,\"after\":{\"a\":1},\"op\":\"c\"}\n{\"a\":2}\n");
    let err = consume_err(d, &["mixed", "--materialize"]);
    assert!(err.contains("the record at topic 'mixed' partition 0 offset 1"), "{err}");
    assert!(err.contains("--materialize needs debezium-json or upsert records"), "{err}");
    let err = consume_err(d, &["mixed", "--materialize", "--follow"]);
    assert!(err.contains("--materialize prints the table as of the topic's current end and cannot --follow"), "{err}");
    let err = consume_err(d, &["mixed", "--materialize", "--from", "1"]);
    assert!(err.contains("--materialize replays each partition from its start"), "{err}");
    run_ok(keel(d).args(["topic", "create", "empty"]));
    let (lines, err) = consume(d, &["empty", "--materialize"]);
    assert!(lines.is_empty());
    assert_eq!(err.trim(), "0 row(s) from 0 record(s) applied of topic 'empty'");
    // produce --key-separator explains its lines.
    let bad = |input: &str| {
        let mut child = keel(d)
            .args(["produce", "empty", "--key-separator", "|"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(bad("k|{}\nno separator\n").contains("line 2 has no key separator '|'; the 1 record(s) before it"));
    assert!(bad("k|{oops\n").contains("line 1: its value is not valid JSON"));
    assert!(bad("|\n").contains("a tombstone needs a key"));
}

const CHANGELOG_SQL: &str = "
CREATE TABLE events (
  user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'topic', 'topic' = 'events', 'format' = 'json');

CREATE TABLE totals_up (
  user_id VARCHAR, window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT, total BIGINT,
  PRIMARY KEY (user_id, window_start) NOT ENFORCED
) WITH ('connector' = 'upsert-topic', 'topic' = 'totals_up');

CREATE TABLE totals_cdc (
  user_id VARCHAR, window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT, total BIGINT
) WITH ('connector' = 'topic', 'topic' = 'totals_cdc', 'format' = 'debezium-json');

INSERT INTO totals_up
SELECT user_id, window_start, window_end, COUNT(*) AS n, SUM(amount) AS total
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY user_id, window_start, window_end;
INSERT INTO totals_cdc
SELECT user_id, window_start, window_end, COUNT(*) AS n, SUM(amount) AS total
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY user_id, window_start, window_end;
";

#[test]
fn a_pipeline_writing_upsert_and_debezium_topics_materializes_to_the_totals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (n, seed, users, step) = (3000, 7, 5, 37);
    make_events(d, "events", 2, n, seed, users, step);
    let sql = d.join("p.sql");
    std::fs::write(&sql, CHANGELOG_SQL).unwrap();
    run_ok(keel(d).args(["run", sql.to_str().unwrap(), "--bounded", "--parallelism", "2"]));
    let expected = expected_totals(n, seed, users, step, 10_000);
    for topic in ["totals_up", "totals_cdc"] {
        let (lines, _) = consume(d, &[topic, "--materialize"]);
        let rows: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_same(&actual_totals(&rows), &expected);
    }
    // The upsert topic is keyed by the primary key as a JSON object.
    let (keyed, _) = consume(d, &["totals_up", "--key-separator", "\t"]);
    let (key, value) = keyed[0].split_once('\t').unwrap();
    let key: serde_json::Value = serde_json::from_str(key).unwrap();
    let value: serde_json::Value = serde_json::from_str(value).unwrap();
    assert_eq!(key, serde_json::json!({"user_id": value["user_id"], "window_start": value["window_start"]}));
}

const UPDATING_SQL: &str = "
CREATE TABLE events (user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3))
WITH ('connector' = 'topic', 'topic' = 'events');
CREATE TABLE few_up (user_id VARCHAR, n BIGINT, total BIGINT, PRIMARY KEY (user_id) NOT ENFORCED)
WITH ('connector' = 'upsert-topic', 'topic' = 'few_up');
CREATE TABLE few_cdc (user_id VARCHAR, n BIGINT, total BIGINT)
WITH ('connector' = 'topic', 'topic' = 'few_cdc', 'format' = 'debezium-json');
INSERT INTO few_up SELECT user_id, COUNT(*), SUM(amount) FROM events GROUP BY user_id HAVING COUNT(*) < 4;
INSERT INTO few_cdc SELECT user_id, COUNT(*), SUM(amount) FROM events GROUP BY user_id HAVING COUNT(*) < 4;
";

#[test]
fn an_updating_pipeline_materializes_with_its_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(keel(d).args(["topic", "create", "events", "--partitions", "2"]));
    // Several produce calls: several source batches, so groups are updated, and the users that
    // reach 4 events leave the result (a delete).
    let mut expected: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    let mut i = 0i64;
    for round in 0..5 {
        let mut input = String::new();
        for u in 0..7 {
            if u % 3 == 0 || round < u % 4 + 1 {
                i += 1;
                input.push_str(&format!("{{\"user_id\":\"u{u}\",\"amount\":{i},\"ts\":{}}}\n", i * 1000));
                let e = expected.entry(format!("u{u}")).or_default();
                e.0 += 1;
                e.1 += i;
            }
        }
        produce(d, &["events"], &input);
    }
    let mut want: Vec<String> = expected
        .iter()
        .filter(|(_, (n, _))| *n < 4)
        .map(|(u, (n, t))| format!("{{\"n\":{n},\"total\":{t},\"user_id\":\"{u}\"}}"))
        .collect();
    want.sort();
    assert!(want.len() >= 2 && want.len() < expected.len(), "the data has kept and deleted groups: {want:?}");
    let sql = d.join("updating.sql");
    std::fs::write(&sql, UPDATING_SQL).unwrap();
    run_ok(keel(d).args(["run", sql.to_str().unwrap(), "--bounded", "--parallelism", "2"]));
    for topic in ["few_up", "few_cdc"] {
        let (lines, _) = consume(d, &[topic, "--materialize"]);
        assert_eq!(lines, want, "{topic}");
    }
    // The changelog really carried deletes: tombstones in the upsert topic, "d" in the other.
    let (up, _) = consume(d, &["few_up"]);
    assert!(up.iter().any(|l| l == "null"), "{up:?}");
    let (cdc, _) = consume(d, &["few_cdc"]);
    assert!(cdc.iter().any(|l| l.ends_with(r#""op":"d"}"#)), "{cdc:?}");
}
