//! The filesystem source: JSON-lines and CSV files under a directory, read once (the files present
//! at the first start; hidden files ignored; a last line without a newline still read), exactly
//! once across a SIGKILL, and watched for new files; lines that do not fit the schema written to
//! the dead-letter topic exactly once across a SIGKILL, or failing the job with file and line.

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
fn csv_files_are_read_and_bad_lines_can_fail_the_job_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let evs = events(3, 0..500);
    let csv: String =
        evs.iter().map(|(u, a, ts)| format!("{u},{a},{}\n", keel::types::time::format_timestamp_ms(*ts))).collect();
    std::fs::write(input.join("part.csv"), &csv).unwrap();
    let pipeline = dir.path().join("csv.sql");
    std::fs::write(&pipeline, sql(&input, "csv", ", 'bad-records' = 'fail'")).unwrap();
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
    let place = format!("line {} (byte {}) of", evs.len() + 1, csv.len());
    assert!(err.contains(&place) && err.contains("part.csv"), "{err}");
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

/// JSON-lines files of `evs` (in `files` files) with bad lines mixed in at seeded places; returns
/// each bad line as (file name, line number, text).
fn files_with_bad_lines(input: &std::path::Path, evs: &[(String, i64, i64)], files: usize, seed: u64) -> BadLines {
    const BAD: [&str; 4] = [
        "not JSON at all",
        r#"{"user_id":"u","amount":"lots","ts":"2024-01-01T00:00:00Z"}"#,
        r#"{"user_id":"u","amount":1,"ts":"yesterday"}"#,
        "[1, 2, 3]",
    ];
    let mut rng = Rng(seed);
    let mut bad = BadLines::new();
    let per_file = evs.len() / files;
    for f in 0..files {
        let name = format!("f{f:02}.jsonl");
        let mut text = String::new();
        let mut line = 0u64;
        for ev in &evs[f * per_file..(f + 1) * per_file] {
            if rng.below(40) == 0 {
                let b = BAD[rng.below(BAD.len() as u64) as usize];
                line += 1;
                text.push_str(b);
                text.push('\n');
                *bad.entry((name.clone(), line, b.to_string())).or_insert(0) += 1;
            }
            line += 1;
            text.push_str(&json_lines(std::slice::from_ref(ev)));
        }
        std::fs::write(input.join(&name), text).unwrap();
    }
    assert!(bad.len() > 5, "the seed gave too few bad lines: {bad:?}");
    bad
}

/// (file name, line number, text) of bad lines, counted.
type BadLines = std::collections::BTreeMap<(String, u64, String), usize>;

#[test]
fn bad_json_lines_reach_the_dead_letter_topic_exactly_once_across_a_kill() {
    let seed = seed("file_dead_letters");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let evs = events(seed, 0..6_000);
    let bad = files_with_bad_lines(&input, &evs, 12, seed);
    // The default policy: the dead-letter topic JOB-dead-letter.
    let pipeline = dir.path().join("totals.sql");
    std::fs::write(&pipeline, sql(&input, "json", "")).unwrap();
    let status = keel(dir.path())
        .args(["run", pipeline.to_str().unwrap(), "--quiet", "--checkpoint-interval", "20ms", "-p", "2"])
        .env("KEEL_FAULTS", "sink.commit=kill@1")
        .stdin(Stdio::null())
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));
    run_ok(keel(dir.path()).args(["run", pipeline.to_str().unwrap(), "--quiet", "-p", "1"]));
    assert_same(&actual_totals(&topic_rows(dir.path(), "totals")), &expected(&evs));
    let mut letters = BadLines::new();
    for l in topic_rows(dir.path(), "totals-dead-letter") {
        assert_eq!(l["table"], "events");
        assert!(!l["error"].as_str().unwrap().is_empty(), "{l}");
        let path = std::path::PathBuf::from(l["file"].as_str().unwrap());
        assert_eq!(path.parent(), Some(input.as_path()), "{l}");
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let key = (name, l["line"].as_u64().unwrap(), l["record"].as_str().unwrap().to_string());
        *letters.entry(key).or_insert(0) += 1;
    }
    assert_eq!(letters, bad);
}

#[test]
fn a_bad_json_line_fails_the_job_naming_file_and_line_under_fail() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let evs = events(11, 0..2_000);
    let bad = files_with_bad_lines(&input, &evs, 1, 11);
    let ((file, line, _), _) = bad.iter().next().unwrap();
    let pipeline = dir.path().join("strict.sql");
    std::fs::write(&pipeline, sql(&input, "json", ", 'bad-records' = 'fail'")).unwrap();
    let out = keel(dir.path())
        .args(["run", pipeline.to_str().unwrap(), "--quiet"])
        .env("KEEL_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("line {line} (byte ")) && err.contains(&format!("{file} does not fit")), "{err}");
    assert!(!err.contains("restart 1"), "a bad line is a user error, not retried:\n{err}");
    assert!(keel::log::Log::open(dir.path()).unwrap().topic("strict-dead-letter").is_err());
}
