//! Every resource that input, SQL or options can grow is bounded, end to end through the `keel`
//! binary (each run is a child process, so an input that once aborted Keel cannot abort the
//! test): deeply nested JSON is a dead letter from a file or a topic, SQL nested too deeply is
//! refused with its place, a parallelism beyond the key groups and a sink path that is a file are
//! refused before anything starts, and a day of 10-second CUMULATE windows runs in bounded pieces.

mod common;
use common::*;
use std::process::{Command, Stdio};

/// Runs `cmd`, which must fail by itself (not by a signal): its standard error.
fn fails(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "expected a refusal, got {:?}:\n{err}", out.status);
    err
}

const EVENTS: &str = "CREATE TABLE events (user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (SOURCE);
CREATE TABLE out_t (user_id VARCHAR, amount BIGINT) WITH ('connector' = 'topic', 'topic' = 'out');
";

/// A JSON record whose `user_id` nests `levels` arrays.
fn nested(levels: usize) -> String {
    format!(r#"{{"user_id":{}"x"{},"amount":1,"ts":1000}}"#, "[".repeat(levels), "]".repeat(levels))
}

#[test]
fn deeply_nested_json_is_a_dead_letter_from_files_and_topics() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let good = |n: i64| format!(r#"{{"user_id":"u{n}","amount":{n},"ts":{n}000}}"#);
    let lines = [good(1), nested(50_000), good(2), nested(129), good(3)];
    std::fs::write(input.join("a.jsonl"), lines.join("\n") + "\n").unwrap();
    let files = EVENTS.replace("SOURCE", &format!("'connector' = 'filesystem', 'path' = '{}'", input.display()));
    let pipeline = dir.path().join("files.sql");
    std::fs::write(&pipeline, format!("{files}INSERT INTO out_t SELECT user_id, amount FROM events;")).unwrap();
    run_ok(keel(dir.path()).args(["run", pipeline.to_str().unwrap(), "--quiet", "-p", "1"]));
    let mut amounts: Vec<i64> = topic_rows(dir.path(), "out").iter().map(|r| r["amount"].as_i64().unwrap()).collect();
    amounts.sort();
    assert_eq!(amounts, [1, 2, 3]);
    let letters = topic_rows(dir.path(), "files-dead-letter");
    assert_eq!(letters.iter().map(|l| l["line"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 4]);
    for l in &letters {
        assert!(l["error"].as_str().unwrap().contains("deeper than 128 levels"), "{}", l["error"]);
    }
    assert_eq!(letters[0]["record_truncated"], true, "a 100 KB record is cut in its letter");

    // The same records in a topic (written through the log: `keel produce` refuses them).
    let log = keel::log::Log::open(dir.path()).unwrap();
    let events = log.create_topic("events", keel::log::TopicConfig::new(1)).unwrap();
    let records: Vec<keel::log::Record> =
        lines.iter().map(|l| keel::log::Record::new(None, l.clone().into_bytes())).collect();
    events.writer(0, keel::log::Durability::Fsync).unwrap().append(&records).unwrap();
    let topic = EVENTS.replace("SOURCE", "'connector' = 'topic', 'topic' = 'events'").replace("'out'", "'out2'");
    let pipeline = dir.path().join("topic.sql");
    std::fs::write(&pipeline, format!("{topic}INSERT INTO out_t SELECT user_id, amount FROM events;")).unwrap();
    run_ok(keel(dir.path()).args(["run", pipeline.to_str().unwrap(), "--quiet", "--bounded", "-p", "1"]));
    assert_eq!(topic_rows(dir.path(), "out2").len(), 3);
    let letters = topic_rows(dir.path(), "topic-dead-letter");
    assert_eq!(letters.iter().map(|l| l["offset"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 3]);
    assert!(letters[1]["error"].as_str().unwrap().contains("deeper than 128 levels"), "{}", letters[1]["error"]);
}

#[test]
fn sql_nested_too_deeply_is_refused_with_its_place_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let source = EVENTS.replace("SOURCE", "'connector' = 'datagen', 'number-of-rows' = '10'");
    let sum = vec!["amount"; 4_000].join(" + ");
    let pipeline = dir.path().join("deep.sql");
    std::fs::write(&pipeline, format!("{source}INSERT INTO out_t SELECT user_id, {sum} FROM events;")).unwrap();
    let err = fails(keel(dir.path()).args(["run", pipeline.to_str().unwrap(), "--quiet"]));
    assert!(err.contains("line 4, column ") && err.contains("nested more than 256 levels deep"), "{err}");
    assert!(!dir.path().join("jobs/deep").exists(), "a refused pipeline creates no job state");
}

#[test]
fn a_bad_parallelism_or_a_sink_path_that_is_a_file_is_refused_before_the_job_starts() {
    let dir = tempfile::tempdir().unwrap();
    let source = EVENTS.replace("SOURCE", "'connector' = 'datagen', 'number-of-rows' = '10'");
    let pipeline = dir.path().join("p.sql");
    std::fs::write(&pipeline, format!("{source}INSERT INTO out_t SELECT user_id, amount FROM events;")).unwrap();
    for p in ["0", "4096"] {
        let err = fails(keel(dir.path()).args(["run", pipeline.to_str().unwrap(), "--quiet", "-p", p]));
        assert!(err.contains(&format!("parallelism {p}")) && err.contains("between 1 and 128"), "{err}");
    }
    assert!(!dir.path().join("jobs/p").exists(), "refused at start: no job state");
    let taken = dir.path().join("taken.txt");
    std::fs::write(&taken, "a file").unwrap();
    let sink = source.replace(
        "'connector' = 'topic', 'topic' = 'out'",
        &format!("'connector' = 'filesystem', 'path' = '{}'", taken.display()),
    );
    let pipeline = dir.path().join("f.sql");
    std::fs::write(&pipeline, format!("{sink}INSERT INTO out_t SELECT user_id, amount FROM events;")).unwrap();
    let err = fails(keel(dir.path()).args(["run", pipeline.to_str().unwrap(), "--quiet"]));
    assert!(err.contains("line 3, column ") && err.contains("is a file, not a directory"), "{err}");
    assert!(!dir.path().join("jobs/f").exists());
}

#[test]
fn a_day_of_ten_second_cumulate_windows_runs_every_window() {
    let dir = tempfile::tempdir().unwrap();
    // 300 rows within the first second of the day: each is in all 8,640 windows of the day.
    let sql = "CREATE TABLE events (k BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH ('connector' = 'datagen', 'number-of-rows' = '300', 'rows-per-second' = '1000', 'fields.k.min' = '1', 'fields.k.max' = '1');
CREATE TABLE out_t (window_end TIMESTAMP(3), n BIGINT) WITH ('connector' = 'topic', 'topic' = 'out');
INSERT INTO out_t SELECT window_end, COUNT(*) FROM TABLE(
  CUMULATE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '1' DAY)) GROUP BY window_start, window_end;";
    let pipeline = dir.path().join("c.sql");
    std::fs::write(&pipeline, sql).unwrap();
    run_ok(keel(dir.path()).args(["run", pipeline.to_str().unwrap(), "--quiet", "-p", "1"]));
    let rows = topic_rows(dir.path(), "out");
    assert_eq!(rows.len(), 8_640, "one result per window of the day");
    assert!(rows.iter().all(|r| r["n"] == 300), "every window counts every row once");
}

#[test]
fn checkpoints_that_keep_expiring_do_not_fill_the_disk() {
    let seed = seed("expiring_checkpoints");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    make_events(data, "events", 2, 200_000, seed, 300, 2);
    let sql = data.join("totals.sql");
    std::fs::write(&sql, WINDOW_SQL).unwrap();
    // A timeout shorter than any checkpoint takes: every periodic checkpoint expires, each
    // leaving a directory with whatever state files its tasks wrote.
    let log = std::fs::File::create(data.join("stderr.log")).unwrap();
    let mut child = keel(data)
        .args(["run", sql.to_str().unwrap(), "--quiet", "-p", "2", "--checkpoint-interval", "10ms"])
        .args(["--checkpoint-timeout", "1ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let chk = data.join("jobs/totals/checkpoints");
    let (mut most, mut newest) = (0, 0u64);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    // Watch the directory until 40 checkpoints were started.
    while newest < 40 {
        assert!(std::time::Instant::now() < deadline, "40 checkpoints were not started within 120 s");
        assert!(child.try_wait().unwrap().is_none(), "keel exited");
        let dirs: Vec<u64> = std::fs::read_dir(&chk)
            .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("chk-")?.parse().ok()).collect())
            .unwrap_or_default();
        most = most.max(dirs.len());
        newest = newest.max(dirs.iter().copied().max().unwrap_or(0));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // An expired checkpoint's directory goes once every task passed it: a few at once, and no
    // task ever wrote into a deleted one (which would fail the job).
    let stderr = std::fs::read_to_string(data.join("stderr.log")).unwrap();
    assert!(!stderr.contains("failed"), "{stderr}");
    assert!(stderr.contains("expired"), "the checkpoints were meant to expire: {stderr}");
    assert!(most <= 6, "{most} checkpoint directories at once");
}
