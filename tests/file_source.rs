//! The filesystem source: JSON-lines and CSV files under a directory, read once (the files present
//! at the first start; hidden files ignored; a last line without a newline still read), exactly
//! once across a SIGKILL, and watched for new files.

mod common;
use common::*;
use std::io::Write;
use std::process::Stdio;

fn events(seed: u64, range: std::ops::Range<u64>) -> Vec<(String, i64, i64)> {
    range.map(|i| keel::sample::event(seed, i, 30, 7)).collect()
}

fn json_lines(evs: &[(String, i64, i64)]) -> String {
    evs.iter()
        .map(|(u, a, ts)| {
            format!(
                "{{\"user_id\":\"{u}\",\"amount\":{a},\"ts\":\"{}\"}}\n",
                keel::types::time::format_timestamp_ms(*ts)
            )
        })
        .collect()
}

fn expected(evs: &[(String, i64, i64)]) -> Totals {
    let mut t = Totals::new();
    let fmt = keel::types::time::format_timestamp_ms;
    for (u, a, ts) in evs {
        let s = ts.div_euclid(10_000) * 10_000;
        let e = t.entry((u.clone(), fmt(s))).or_insert((fmt(s + 10_000), 0, 0));
        e.1 += 1;
        e.2 += a;
    }
    t
}

fn sql(dir: &std::path::Path, format: &str, extra: &str) -> String {
    WINDOW_SQL.replace(
        "'connector' = 'topic', 'topic' = 'events', 'format' = 'json'",
        &format!("'connector' = 'filesystem', 'path' = '{}', 'format' = '{format}'{extra}", dir.display()),
    )
}

#[test]
fn files_are_read_once_exactly_across_a_kill() {
    let seed = seed("file_source");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let evs = events(seed, 0..9_000);
    // Thirty files, each in event-time order; the last has no final newline and uses CRLF.
    for f in 0..29 {
        std::fs::write(input.join(format!("f{f:02}.jsonl")), json_lines(&evs[f * 300..f * 300 + 300])).unwrap();
    }
    let last = json_lines(&evs[8700..]).replace('\n', "\r\n");
    std::fs::write(input.join("f29.jsonl"), last.trim_end()).unwrap();
    std::fs::write(input.join(".hidden.jsonl"), "not even json\n").unwrap();
    let pipeline = dir.path().join("totals.sql");
    std::fs::write(&pipeline, sql(&input, "json", "")).unwrap();
    let status = keel(dir.path())
        .args(["run", pipeline.to_str().unwrap(), "--quiet", "--checkpoint-interval", "20ms", "-p", "2"])
        .env("KEEL_FAULTS", "checkpoint.after-manifest=kill@1")
        .stdin(Stdio::null())
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));
    // A file added after the first start is not part of this bounded job.
    std::fs::write(input.join("d.jsonl"), json_lines(&events(seed + 1, 0..10))).unwrap();
    run_ok(keel(dir.path()).args(["run", pipeline.to_str().unwrap(), "--quiet", "-p", "1"]));
    assert_same(&actual_totals(&topic_rows(dir.path(), "totals")), &expected(&evs));
}

#[test]
fn csv_files_are_read_and_bad_lines_fail_the_job_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let evs = events(3, 0..500);
    let csv: String =
        evs.iter().map(|(u, a, ts)| format!("{u},{a},{}\n", keel::types::time::format_timestamp_ms(*ts))).collect();
    std::fs::write(input.join("part.csv"), &csv).unwrap();
    let pipeline = dir.path().join("csv.sql");
    std::fs::write(&pipeline, sql(&input, "csv", "")).unwrap();
    run_ok(keel(dir.path()).args(["run", pipeline.to_str().unwrap(), "--quiet"]));
    assert_same(&actual_totals(&topic_rows(dir.path(), "totals")), &expected(&evs));
    std::fs::write(input.join("part.csv"), format!("{csv}user-1,lots,2024-01-01T00:00:00Z\n")).unwrap();
    let out = keel(dir.path())
        .args(["run", pipeline.to_str().unwrap(), "--quiet", "--fresh"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("the line at byte {} of", csv.len())) && err.contains("part.csv"), "{err}");
}

#[test]
fn a_watched_directory_picks_up_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let pipeline = dir.path().join("watch.sql");
    std::fs::write(&pipeline, sql(&input, "json", ", 'source.monitor-interval' = '100ms'")).unwrap();
    let mut child = keel(dir.path())
        .args(["run", pipeline.to_str().unwrap(), "--quiet", "-p", "1", "--checkpoint-interval", "100ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Written after the job started: 25 s of events, so windows [0, 10) and [10, 20) close.
    let evs: Vec<(String, i64, i64)> =
        (0..25).map(|s| ("u".to_string(), 1, keel::sample::BASE_MS + s * 1000)).collect();
    let mut f = std::fs::File::create(input.join(".new.tmp")).unwrap();
    f.write_all(json_lines(&evs).as_bytes()).unwrap();
    drop(f);
    std::fs::rename(input.join(".new.tmp"), input.join("new.jsonl")).unwrap();
    let rows = wait_for_rows(dir.path(), "totals", 2, &mut child, "the new file was not picked up");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut n: Vec<i64> = rows.iter().map(|r| r["n"].as_i64().unwrap()).collect();
    n.sort();
    assert_eq!(n, vec![10, 10]);
}
