//! A running job and a following consumer as a user drives them from a terminal: Ctrl-C (SIGINT)
//! stops `keel run` with a final checkpoint and exit code 0, and the next run resumes with no
//! loss and no duplicates; `keel consume --follow` prints records as they are committed.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

#[test]
fn ctrl_c_stops_with_a_final_checkpoint_and_the_next_run_resumes_exactly() {
    let seed = seed("ctrl_c");
    let dir = tempfile::tempdir().unwrap();
    let (n, users, step) = (80_000u64, 100u64, 3i64);
    make_events(dir.path(), "events", 2, n, seed, users, step);
    let sql = dir.path().join("totals.sql");
    std::fs::write(&sql, WINDOW_SQL).unwrap();
    let mut child = keel(dir.path())
        .args(["run", sql.to_str().unwrap(), "--quiet", "--checkpoint-interval", "200ms"])
        .env("KEEL_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // Wait until the job is running (its tasks have started), then interrupt it.
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "keel exited early:\n{seen}");
        seen.push_str(&line);
        if line.contains("starting from the beginning (no checkpoint)") {
            break;
        }
    }
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{seen}{rest}");
    assert!(
        rest.contains("stopping: taking a final checkpoint") && rest.contains("stopped after checkpoint"),
        "{rest}"
    );
    run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet"]));
    assert_same(&actual_totals(&topic_rows(dir.path(), "totals")), &expected_totals(n, seed, users, step, 10_000));
}

#[test]
fn consume_follow_prints_records_as_they_are_committed() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(keel(dir.path()).args(["topic", "create", "t"]));
    let mut consumer = keel(dir.path())
        .args(["consume", "t", "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(consumer.stdout.take().unwrap()).lines();
    for i in 0..3 {
        let mut p =
            keel(dir.path()).args(["produce", "t"]).stdin(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        writeln!(p.stdin.take().unwrap(), "{{\"i\":{i}}}").unwrap();
        assert!(p.wait().unwrap().success());
        // Blocks until the follower prints the record just produced.
        assert_eq!(lines.next().unwrap().unwrap(), format!("{{\"i\":{i}}}"));
    }
    consumer.kill().unwrap();
    consumer.wait().unwrap();
}

#[test]
fn an_idle_partition_does_not_hold_windows_back_while_the_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(keel(dir.path()).args(["topic", "create", "events", "--partitions", "2"]));
    // Partition 0 gets 30 seconds of events; partition 1 stays empty.
    let log = keel::log::Log::open(dir.path()).unwrap();
    let mut w = log.topic("events").unwrap().writer(0, keel::log::Durability::Fsync).unwrap();
    let recs: Vec<_> = (0..30)
        .map(|s| {
            let ts = keel::types::time::format_timestamp_ms(keel::sample::BASE_MS + s * 1000);
            keel::log::Record::new(None, format!(r#"{{"user_id":"u","amount":1,"ts":"{ts}"}}"#).into_bytes())
        })
        .collect();
    w.append(&recs).unwrap();
    let sql = dir.path().join("totals.sql");
    std::fs::write(
        &sql,
        WINDOW_SQL.replace(
            "'format' = 'json');\n\nCREATE TABLE totals",
            "'format' = 'json', 'scan.idle-timeout' = '300ms');\n\nCREATE TABLE totals",
        ),
    )
    .unwrap();
    let mut child = keel(dir.path())
        .args(["run", sql.to_str().unwrap(), "--quiet", "-p", "1", "--checkpoint-interval", "100ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Unbounded: windows can only fire if the empty partition stops holding the watermark back.
    let rows = wait_for_rows(dir.path(), "totals", 2, &mut child, "the idle partition holds the watermark back");
    child.kill().unwrap();
    child.wait().unwrap();
    // Watermark = 29 s - 1 s delay = 28 s: windows [0, 10) and [10, 20) are closed.
    let mut got: Vec<(String, i64)> =
        rows.iter().map(|r| (r["window_start"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap())).collect();
    got.sort();
    assert_eq!(got, vec![("2024-01-01T00:00:00.000Z".to_string(), 10), ("2024-01-01T00:00:10.000Z".to_string(), 10)]);
}
