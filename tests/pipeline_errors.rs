//! What users see when something is wrong: SQL Keel cannot run is refused before anything
//! starts, with the construct and its position; bad records go to the dead-letter topic, are
//! skipped and counted, or fail the job with their position; late records are counted and kept
//! out of closed windows; `--fresh` says what it discards; a changed pipeline is not resumed.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

const EVENTS_DDL: &str = "CREATE TABLE events (
  user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'topic', 'topic' = 'events', 'format' = 'json');
CREATE TABLE out_t (user_id VARCHAR, window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT, total BIGINT)
WITH ('connector' = 'topic', 'topic' = 'out', 'format' = 'json');
";

fn fails(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success(), "expected failure, got success: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn produce(data: &Path, topic: &str, lines: &str) -> std::process::Output {
    produce_input(data, &[topic], lines.as_bytes())
}

fn refused(sql_tail: &str, expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    run_ok(keel(dir.path()).args(["topic", "create", "events"]));
    let sql = dir.path().join("bad.sql");
    std::fs::write(&sql, format!("{EVENTS_DDL}{sql_tail}")).unwrap();
    let err = fails(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded"]));
    for e in expect {
        assert!(err.contains(e), "expected {e:?} in:\n{err}");
    }
    assert!(!dir.path().join("jobs/bad").exists(), "a refused pipeline must not create job state");
}

#[test]
fn unsupported_sql_is_refused_with_construct_and_position() {
    refused(
        "INSERT INTO out_t SELECT a.user_id, a.ts, b.ts, 1, 2 FROM events a JOIN events b ON a.ts < b.ts;",
        &["line 7, column 68: a join without an equality between the two sides is not supported", "add an equality"],
    );
    refused(
        "INSERT INTO out_t SELECT user_id, ts, ts AS t2, COUNT(*), SUM(amount) FROM events GROUP BY user_id, ts;",
        &[
            "line 7, column 13: INSERT INTO out_t: the query produces an updating result",
            "use 'format' = 'debezium-json' or 'connector' = 'upsert-topic'",
        ],
    );
    refused(
        "INSERT INTO out_t SELECT user_id, window_start, window_end, COUNT(*), SUM(amount)\nFROM TABLE(SLIDE(TABLE events, DESCRIPTOR(ts), INTERVAL '5' SECOND))\nGROUP BY user_id, window_start, window_end;",
        &["line 8, column 12: table function SLIDE is not supported; use TUMBLE, HOP, CUMULATE or SESSION"],
    );
    refused(
        "INSERT INTO out_t SELECT 'x', window_start, window_end, COUNT(*), SUM(amount)\nFROM TABLE(SESSION(TABLE events PARTITION BY user_id, DESCRIPTOR(ts), INTERVAL '5' SECOND))\nGROUP BY window_start, window_end;",
        &["line 9, column 1: a SESSION window partitioned by user_id must GROUP BY user_id"],
    );
    refused(
        "INSERT INTO out_t SELECT user_id, window_start, window_end, COUNT(*), SUM(DISTINCT amount) FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY user_id, window_start, window_end;",
        &["SUM(DISTINCT ...) is not supported; COUNT(DISTINCT ...) is supported"],
    );
    refused(
        "INSERT INTO out_t SELECT user_id, ts, ts AS t2, amount, amount AS a2 FROM events ORDER BY amount;",
        &["ORDER BY is not supported"],
    );
}

#[test]
fn wrong_names_types_and_options_are_explained() {
    refused(
        "INSERT INTO nowhere SELECT * FROM events;",
        &["line 7, column 13: INSERT INTO nowhere: no table of that name"],
    );
    refused(
        "INSERT INTO out_t SELECT user_id, ts FROM events;",
        &["the query produces 2 column(s) (user_id, ts) but out_t has 5"],
    );
    refused(
        "INSERT INTO out_t SELECT user_id, ts, ts AS t2, amount, nosuch FROM events;",
        &["line 7, column 57: ", "nosuch"],
    );
    refused(
        "CREATE TABLE o2 (a VARCHAR) WITH ('connector' = 'topic', 'topic' = 'o2', 'colour' = 'red');\nINSERT INTO o2 SELECT user_id FROM events;",
        &["line 7, column 74: table o2: unknown option 'colour' for connector 'topic'; accepted:"],
    );
    refused(
        "CREATE TABLE o2 (a VARCHAR) WITH ('connector' = 'kafka');\nINSERT INTO o2 SELECT user_id FROM events;",
        &["connector 'kafka' is not supported; use 'topic', 'filesystem', 'print' or 'blackhole'"],
    );
    refused(
        "CREATE TABLE e2 (user_id VARCHAR, ts TIMESTAMP(3)) WITH ('connector' = 'topic', 'topic' = 'events');\nINSERT INTO out_t SELECT user_id, window_start, window_end, COUNT(*), COUNT(*) FROM TABLE(TUMBLE(TABLE e2, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY user_id, window_start, window_end;",
        &["DESCRIPTOR(ts) must name a time attribute: declare `WATERMARK FOR ts"],
    );
    refused(
        "CREATE TABLE t (a GEOMETRY) WITH ('connector' = 'print');",
        &["line 7, column 19: column type GEOMETRY is not supported"],
    );
}

#[test]
fn type_errors_name_the_column_and_the_types() {
    // Refused at plan time (DataFusion would cast the string on each row and fail at run time).
    refused(
        "INSERT INTO out_t SELECT user_id, ts, ts AS t2, amount, amount AS a2 FROM events WHERE user_id > 5;",
        &["line 7, column", "type error: user_id (VARCHAR) > 5 (BIGINT)", "CAST(user_id AS BIGINT)"],
    );
    refused(
        "INSERT INTO out_t SELECT user_id, ts, ts AS t2, amount, amount AS a2 FROM events WHERE amount = 'ten';",
        &["type error: amount (BIGINT) = 'ten' (VARCHAR)", "CAST('ten' AS BIGINT)"],
    );
    refused(
        "INSERT INTO out_t SELECT user_id, window_start, window_end, COUNT(*), SUM(user_id)\nFROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY user_id, window_start, window_end;",
        &["line 7, column 71: type error: SUM(user_id) takes no argument of type VARCHAR"],
    );
    refused(
        "INSERT INTO out_t SELECT user_id, ts, ts AS t2, amount, amount + user_id FROM events;",
        &["line 7, column 64: type error: BIGINT + VARCHAR"],
    );
    refused(
        "INSERT INTO out_t SELECT user_id, ts, ts AS t2, amount, user_id AS a2 FROM events;",
        &[
            "line 7, column 13: type error: INSERT INTO out_t: column total (BIGINT) cannot take query column a2 (VARCHAR)",
            "CAST(a2 AS BIGINT)",
        ],
    );
}

/// The `events` table of `late_events`, asking for late rows in the dead-letter topic.
const LATE_EVENTS_DDL: &str = "CREATE TABLE events (user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'topic', 'topic' = 'events', 'format' = 'json', 'late-records' = 'dead-letter');
";

/// A data directory whose `events` topic holds four rows, one per append (so each is its own
/// batch and the watermark moves between them); the third, at 00:00:02, comes after the
/// watermark reached 00:00:24.
fn late_events() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    run_ok(keel(dir.path()).args(["topic", "create", "events"]));
    for l in [
        r#"{"user_id":"a","amount":1,"ts":"2024-01-01T00:00:01Z"}"#,
        r#"{"user_id":"a","amount":10,"ts":"2024-01-01T00:00:25Z"}"#,
        r#"{"user_id":"a","amount":100,"ts":"2024-01-01T00:00:02Z"}"#,
        r#"{"user_id":"a","amount":1000,"ts":"2024-01-01T00:00:26Z"}"#,
    ] {
        assert!(produce(dir.path(), "events", &format!("{l}\n")).status.success());
    }
    dir
}

#[test]
fn late_rows_of_an_interval_join_go_to_the_dead_letter_topic() {
    // The 00:00:02 row is late on whichever side has seen the watermark reach 00:00:24 (each side
    // reads the topic through its own source, so how many sides have is a race; the count below
    // is not).
    let dir = late_events();
    let sql = dir.path().join("j.sql");
    std::fs::write(
        &sql,
        LATE_EVENTS_DDL.to_string()
            + "CREATE TABLE out_j (user_id VARCHAR, a1 BIGINT, a2 BIGINT) WITH ('connector' = 'topic', 'topic' = 'outj', 'format' = 'json');
INSERT INTO out_j SELECT x.user_id, x.amount, y.amount FROM events x JOIN events y
ON x.user_id = y.user_id AND y.ts BETWEEN x.ts - INTERVAL '1' SECOND AND x.ts + INTERVAL '1' SECOND;",
    )
    .unwrap();
    let mut letters_before = 0;
    let mut some_late = false;
    for _ in 0..5 {
        let out = run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded", "--fresh", "-p", "1"]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let late: usize = stderr
            .split(" late record(s)")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let letters = topic_rows(dir.path(), "j-dead-letter");
        let new = &letters[letters_before.min(letters.len())..];
        assert_eq!(new.len(), late, "every late row counted is one dead letter, once: {stderr}\n{new:?}");
        for l in new {
            assert_eq!(l["record"]["amount"].as_i64(), Some(100), "only the 00:00:02 row can be late: {l}");
            assert!(l["error"].as_str().unwrap().starts_with("late: "), "{l}");
        }
        letters_before = letters.len();
        some_late |= late > 0;
        if some_late {
            break;
        }
    }
    assert!(some_late, "in five runs the late row never reached the join after the watermark passed it");
}

#[test]
fn late_rows_of_a_window_top_n_go_to_the_dead_letter_topic() {
    let dir = late_events();
    let sql = dir.path().join("t.sql");
    std::fs::write(
        &sql,
        LATE_EVENTS_DDL.to_string()
            + "CREATE TABLE out_t (user_id VARCHAR, amount BIGINT, rn BIGINT) WITH ('connector' = 'topic', 'topic' = 'outt', 'format' = 'json');
INSERT INTO out_t SELECT user_id, amount, rn FROM (
  SELECT user_id, amount, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY amount DESC) AS rn
  FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))) WHERE rn <= 1;",
    )
    .unwrap();
    let out = run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded", "-p", "1"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 late record(s)"));
    let letters = topic_rows(dir.path(), "t-dead-letter");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["record"]["amount"].as_i64(), Some(100));
    assert_eq!(letters[0]["error"].as_str(), Some("late: its window had already closed and been ranked"));
    let amounts: Vec<i64> = topic_rows(dir.path(), "outt").iter().map(|r| r["amount"].as_i64().unwrap()).collect();
    assert_eq!(amounts, [1, 1000], "the late row took no part in its window's ranking");
}

#[test]
fn a_missing_source_topic_says_how_to_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("p.sql");
    std::fs::write(
        &sql,
        format!("{EVENTS_DDL}INSERT INTO out_t SELECT user_id, ts, ts AS t2, amount, amount AS a2 FROM events;"),
    )
    .unwrap();
    let err = fails(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded"]));
    assert!(err.contains("topic 'events' does not exist; create it with `keel topic create events`"), "{err}");
    assert!(!dir.path().join("jobs/p").exists(), "a job whose source is missing must not create job state");
}

const GOOD_AND_BAD: &str = r#"{"user_id":"a","amount":1,"ts":"2024-01-01T00:00:01Z"}
{"user_id":"a","amount":"lots","ts":"2024-01-01T00:00:02Z"}
{"user_id":"b","amount":2,"ts":1704067203000}
not json at all
{"user_id":"a","amount":3,"ts":"2024-01-01 00:00:04.5"}
"#;

fn window_sql(extra_option: &str) -> String {
    format!(
        "CREATE TABLE events (
  user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'topic', 'topic' = 'events', 'format' = 'json'{extra_option});
CREATE TABLE out_t (user_id VARCHAR, window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT, total BIGINT)
WITH ('connector' = 'topic', 'topic' = 'out', 'format' = 'json');
INSERT INTO out_t SELECT user_id, window_start, window_end, COUNT(*), SUM(amount)
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY user_id, window_start, window_end;
"
    )
}

fn setup_bad(extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    run_ok(keel(dir.path()).args(["topic", "create", "events"]));
    // A non-JSON line is refused by `keel produce`, so write it with the library, as another
    // producer might.
    let log = keel::log::Log::open(dir.path()).unwrap();
    let mut w = log.topic("events").unwrap().writer(0, keel::log::Durability::Fsync).unwrap();
    let recs: Vec<_> = GOOD_AND_BAD.lines().map(|l| keel::log::Record::new(None, l.as_bytes().to_vec())).collect();
    w.append(&recs).unwrap();
    let sql = dir.path().join("job.sql");
    std::fs::write(&sql, window_sql(extra)).unwrap();
    (dir, sql)
}

fn totals(data: &Path) -> Vec<(String, i64, i64)> {
    let mut v: Vec<_> = topic_rows(data, "out")
        .iter()
        .map(|r| (r["user_id"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap(), r["total"].as_i64().unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn bad_records_go_to_the_dead_letter_topic_with_reason_and_position() {
    let (dir, sql) = setup_bad("");
    let out = run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 bad record(s)"));
    assert_eq!(totals(dir.path()), vec![("a".into(), 2, 4), ("b".into(), 1, 2)]);
    let letters = topic_rows(dir.path(), "job-dead-letter");
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!((letters[0]["partition"].as_u64(), letters[0]["offset"].as_u64()), (Some(0), Some(1)));
    assert_eq!(letters[0]["record"].as_str().unwrap(), GOOD_AND_BAD.lines().nth(1).unwrap());
    assert!(letters[0]["error"].as_str().unwrap().contains("lots"), "{}", letters[0]["error"]);
    assert_eq!(letters[1]["offset"].as_u64(), Some(3));
    assert!(letters[1]["error"].as_str().unwrap().contains("not a JSON object"), "{}", letters[1]["error"]);
}

#[test]
fn bad_records_can_be_skipped_and_counted() {
    let (dir, sql) = setup_bad(", 'bad-records' = 'skip'");
    let out = run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 bad record(s)"));
    assert_eq!(totals(dir.path()), vec![("a".into(), 2, 4), ("b".into(), 1, 2)]);
    assert!(
        keel::log::Log::open(dir.path()).unwrap().topic("job-dead-letter").is_err(),
        "skip must not create a dead-letter topic"
    );
}

#[test]
fn a_bad_record_can_fail_the_job_naming_its_position_without_restarting() {
    let (dir, sql) = setup_bad(", 'bad-records' = 'fail'");
    let err =
        fails(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet"]).env("KEEL_LOG", "info"));
    assert!(err.contains("record at topic 'events' partition 0 offset 1 does not fit the schema"), "{err}");
    assert!(err.contains("not restarting"), "{err}");
    assert!(!err.contains("restart 1"), "a user error must not be retried:\n{err}");
}

/// The rows of topic `out` as (window start, n, total), sorted.
fn window_rows(dir: &std::path::Path) -> Vec<(String, i64, i64)> {
    window_rows_after(dir, 0)
}

/// The window results of the output topic after its first `skip` rows (those of earlier runs), sorted.
fn window_rows_after(dir: &std::path::Path, skip: usize) -> Vec<(String, i64, i64)> {
    let mut rows: Vec<(String, i64, i64)> = topic_rows(dir, "out")
        .iter()
        .skip(skip)
        .map(|r| {
            (r["window_start"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap(), r["total"].as_i64().unwrap())
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn late_records_are_counted_and_kept_out_of_closed_windows() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(keel(dir.path()).args(["topic", "create", "events"]));
    let lines = [
        r#"{"user_id":"a","amount":1,"ts":"2024-01-01T00:00:01Z"}"#,
        r#"{"user_id":"a","amount":10,"ts":"2024-01-01T00:00:25Z"}"#,
        r#"{"user_id":"a","amount":100,"ts":"2024-01-01T00:00:02Z"}"#,
        r#"{"user_id":"a","amount":1000,"ts":"2024-01-01T00:00:26Z"}"#,
    ];
    // One record per append, so each is its own batch and the watermark moves between them.
    for l in lines {
        let out = produce(dir.path(), "events", &format!("{l}\n"));
        assert!(out.status.success());
    }
    let sql = dir.path().join("job.sql");
    std::fs::write(&sql, window_sql("")).unwrap();
    let out = run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet", "-p", "1"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 late record(s)"), "{stderr}");
    let rows = window_rows(dir.path());
    assert_eq!(rows, vec![("2024-01-01T00:00:00.000Z".into(), 1, 1), ("2024-01-01T00:00:20.000Z".into(), 2, 1010)]);
    assert!(
        keel::log::Log::open(dir.path())
            .unwrap()
            .topic("job-dead-letter")
            .map(|_| topic_rows(dir.path(), "job-dead-letter"))
            .unwrap_or_default()
            .is_empty(),
        "late rows are dropped by default"
    );

    // With 'late-records' = 'dead-letter' the late row goes to the dead-letter topic, once.
    std::fs::write(&sql, window_sql(", 'late-records' = 'dead-letter'")).unwrap();
    run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet", "-p", "1", "--fresh"]));
    let letters = topic_rows(dir.path(), "job-dead-letter");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(letters[0]["error"].as_str().unwrap().starts_with("late: its window had already closed"), "{}", letters[0]);
    assert_eq!(letters[0]["record"]["amount"].as_i64(), Some(100), "{}", letters[0]);
    assert_eq!(letters[0]["record"]["window_start"].as_str(), Some("2024-01-01T00:00:00.000Z"));

    // HOP windows (5 s slide, 10 s size) are built from slices: the late row is one dead letter
    // (not one per window), shown with the last of its windows, [0 s, 10 s).
    let hop = "HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND)";
    let hop_sql = window_sql(", 'late-records' = 'dead-letter'")
        .replace("TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND)", hop);
    std::fs::write(&sql, hop_sql).unwrap();
    // The output topic still holds the TUMBLE runs' rows: only the HOP run's are checked below.
    let earlier = topic_rows(dir.path(), "out").len();
    run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet", "-p", "1", "--fresh"]));
    let letters = topic_rows(dir.path(), "job-dead-letter");
    let hop_letters: Vec<_> = letters.iter().skip(1).collect();
    assert_eq!(hop_letters.len(), 1, "{letters:?}");
    assert_eq!(hop_letters[0]["record"]["amount"].as_i64(), Some(100), "{}", hop_letters[0]);
    assert_eq!(hop_letters[0]["record"]["window_start"].as_str(), Some("2024-01-01T00:00:00.000Z"));
    assert_eq!(hop_letters[0]["record"]["window_end"].as_str(), Some("2024-01-01T00:00:10.000Z"));
    let rows = window_rows_after(dir.path(), earlier);
    let hop_rows = [
        ("2023-12-31T23:59:55.000Z", 1, 1),
        ("2024-01-01T00:00:00.000Z", 1, 1),
        ("2024-01-01T00:00:20.000Z", 2, 1010),
        ("2024-01-01T00:00:25.000Z", 2, 1010),
    ];
    for (w, n, total) in hop_rows {
        assert!(rows.contains(&(w.to_string(), n, total)), "{w} missing from {rows:?}");
    }
}

#[test]
fn fresh_says_what_it_discards_and_a_changed_pipeline_is_not_resumed() {
    let (dir, sql) = setup_bad("");
    run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet"]));
    std::fs::write(&sql, window_sql(", 'bad-records' = 'skip'")).unwrap();
    let err = fails(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet"]));
    assert!(err.contains("the pipeline of job 'job' changed") && err.contains("--fresh"), "{err}");
    let out = run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet", "--fresh"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--fresh: discarding job 'job': 1 checkpoint(s) (newest 1)"), "{stderr}");
}
