//! `keel topic`, `keel produce` and `keel consume` as a user runs them: durable appends with a
//! count, keyed partitioning, JSON errors with their line number and nothing half-written, reads
//! from any position, and a torn segment tail that is reported, truncated and never served.

mod common;
use common::*;
use std::io::Write;
use std::process::Stdio;

fn produce(data: &std::path::Path, args: &[&str], input: &str) -> std::process::Output {
    produce_input(data, args, input.as_bytes())
}

fn consume(data: &std::path::Path, args: &[&str]) -> Vec<String> {
    let out = run_ok(keel(data).arg("consume").args(args));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn create_list_describe_delete() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run_ok(keel(d).args(["topic", "create", "clicks", "--partitions", "3"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "created topic 'clicks' with 3 partition(s)");
    let out = keel(d).args(["topic", "create", "clicks"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("topic 'clicks' already exists"));
    produce(d, &["clicks"], "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n{\"a\":4}\n");
    let list = String::from_utf8(run_ok(keel(d).args(["topic", "list"])).stdout).unwrap();
    assert_eq!(list.trim(), "clicks\t3 partition(s)\t4 record(s)");
    let desc = String::from_utf8(run_ok(keel(d).args(["topic", "describe", "clicks"])).stdout).unwrap();
    let ends: u64 = desc.lines().skip(2).map(|l| l.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(ends, 4, "{desc}");
    run_ok(keel(d).args(["topic", "delete", "clicks"]));
    let out = keel(d).args(["consume", "clicks"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("topic 'clicks' does not exist; create it with `keel topic create clicks`")
    );
}

#[test]
fn produce_reports_counts_and_stops_at_the_first_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(keel(d).args(["topic", "create", "t"]));
    let out = produce(d, &["t"], "{\"n\":1}\n\n{\"n\":2}\n");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "wrote 2 record(s) to topic 't'");
    let out = produce(d, &["t"], "{\"n\":3}\n{\"n\":4}\n{\"n\": oops}\n{\"n\":5}\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3 is not valid JSON")
            && err.contains("the 2 record(s) before it were written, nothing after it"),
        "{err}"
    );
    assert_eq!(consume(d, &["t"]), vec!["{\"n\":1}", "{\"n\":2}", "{\"n\":3}", "{\"n\":4}"]);
    assert_eq!(consume(d, &["t", "--from", "2"]), vec!["{\"n\":3}", "{\"n\":4}"]);
    assert!(consume(d, &["t", "--from", "latest"]).is_empty());
}

#[test]
fn keyed_produce_keeps_each_key_in_one_partition() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(keel(d).args(["topic", "create", "t", "--partitions", "4"]));
    let input: String = (0..200).map(|i| format!("{{\"user\":\"u{}\",\"i\":{i}}}\n", i % 9)).collect();
    assert!(produce(d, &["t", "--key", "user"], &input).status.success());
    let mut owner = std::collections::HashMap::new();
    for p in 0..4 {
        for line in consume(d, &["t", "--partition", &p.to_string()]) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let u = v["user"].as_str().unwrap().to_string();
            assert_eq!(*owner.entry(u.clone()).or_insert(p), p, "key {u} in two partitions");
        }
    }
    assert_eq!(owner.len(), 9);
    let out = produce(d, &["t", "--key", "missing"], "{\"user\":\"x\"}\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1 has no value for the key field 'missing'"));
}

#[test]
fn a_torn_tail_is_reported_truncated_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(keel(d).args(["topic", "create", "t"]));
    produce(d, &["t"], "{\"n\":1}\n{\"n\":2}\n");
    let seg = d.join("topics/t/p-0000/00000000000000000000.log");
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0x40, 0, 0, 0, 9, 9, 9, 9, 1, 2, 3]).unwrap(); // a frame cut short
    drop(f);
    assert_eq!(consume(d, &["t"]).len(), 2);
    let out = keel(d)
        .env("KEEL_LOG", "warn")
        .arg("produce")
        .arg("t")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = out;
    child.stdin.take().unwrap().write_all(b"{\"n\":3}\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cutting 11 bytes after offset 2"), "{err}");
    assert_eq!(consume(d, &["t"]), vec!["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"]);
}

#[test]
fn wrong_arguments_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = |args: &[&str]| {
        let out = keel(d).args(args).stdin(Stdio::null()).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(err(&["topic", "create", "bad/name"]).contains("invalid topic name 'bad/name': '/' is not allowed"));
    assert!(err(&["topic", "create", "t", "--partitions", "0"]).contains("between 1 and 4096 partitions"));
    assert!(
        err(&["topic", "create", "t", "--retention", "10 parsecs"])
            .contains("invalid duration '10 parsecs': unknown unit")
    );
    let out = run_ok(keel(d).args([
        "topic",
        "create",
        "t",
        "--partitions",
        "2",
        "--retention",
        "7d",
        "--retention-bytes",
        "1000000",
    ]));
    assert!(out.status.success());
    let desc = String::from_utf8(run_ok(keel(d).args(["topic", "describe", "t"])).stdout).unwrap();
    assert!(desc.contains("retention 1000000 bytes, 604800000 ms"), "{desc}");
    assert!(
        err(&["consume", "t", "--from", "yesterday"])
            .contains("--from 'yesterday' is not earliest, latest or an offset")
    );
    assert!(
        err(&["consume", "t", "--partition", "5"]).contains("partition 5 does not exist: topic 't' has 2 partition(s)")
    );
    let sql = d.join("p.sql");
    std::fs::write(&sql, WINDOW_SQL).unwrap();
    assert!(err(&["run", sql.to_str().unwrap(), "--checkpoint-interval", "soon"]).contains("invalid duration 'soon'"));
    assert!(err(&["run", "/nonexistent.sql"]).contains("cannot read pipeline file /nonexistent.sql"));
}

#[test]
fn invalid_utf8_is_refused_naming_its_line_after_writing_the_lines_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(keel(d).args(["topic", "create", "t"]));
    let out = produce_input(d, &["t"], b"{\"n\":1}\n{\"n\":2}\n{\"n\":\"\xff\xfe\"}\n{\"n\":4}\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3 is not valid UTF-8 (at byte 7)")
            && err.contains("the 2 record(s) before it were written, nothing after it"),
        "{err}"
    );
    assert_eq!(consume(d, &["t"]), vec!["{\"n\":1}", "{\"n\":2}"]);
}

/// Unmounts the test's tmpfs when dropped.
struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn produce_on_a_full_disk_says_how_many_records_are_durable_and_which_line_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    std::fs::create_dir(&d).unwrap();
    let ok = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&d).status();
    assert!(ok.is_ok_and(|s| s.success()), "this test mounts a 1 MB tmpfs to fill it; run it as root (as CI does)");
    let _mount = Mount(d.clone());
    run_ok(keel(&d).args(["topic", "create", "t"]));
    // About 3 MB of records in groups of 4096 lines: some groups fit, then the disk is full.
    let input: String = (0..30_000).map(|i| format!("{{\"n\":{i},\"pad\":\"{:0>80}\"}}\n", 0)).collect();
    let out = produce_input(&d, &["t"], input.as_bytes());
    assert!(!out.status.success(), "the input does not fit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    let written: usize = err
        .split(" record(s) were written and are durable")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of durable records in: {err}"));
    assert!(written > 0, "{err}");
    assert!(err.contains(&format!("line {} and some lines after it were not", written + 1)), "{err}");
    // Exactly the lines before the first unwritten one are in the topic, once each.
    let got = consume(&d, &["t"]);
    assert_eq!(got.len(), written);
    for (i, line) in got.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["n"].as_u64(), Some(i as u64));
    }
}
