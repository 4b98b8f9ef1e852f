//! Damaged checkpoints never cost exactly-once, and never silently: a window job and an
//! updating (changelog) job are SIGKILLed while running with committed output, their newest
//! checkpoint is damaged on disk, and they are started again. One damaged file (a flipped or
//! truncated state file, a garbled or deleted manifest, every manifest deleted) is repaired from
//! the checkpoint's parity or the completion record and the output stays exact; damage beyond
//! that is refused, naming the checkpoint an operator may choose with `--from-checkpoint`.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;

const N: u64 = 60_000;
const USERS: u64 = 200;
const STEP: i64 = 5;

const GROUP_SQL: &str = "
CREATE TABLE events (
  user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'topic', 'topic' = 'events', 'format' = 'json');

CREATE TABLE totals (user_id VARCHAR, n BIGINT, total BIGINT)
WITH ('connector' = 'topic', 'topic' = 'totals', 'format' = 'debezium-json');

INSERT INTO totals SELECT user_id, COUNT(*) AS n, SUM(amount) AS total FROM events GROUP BY user_id;
";

#[derive(Clone, Copy)]
enum Job {
    Windows,
    Updating,
}

fn setup(test: &str, job: Job) -> (tempfile::TempDir, PathBuf, u64) {
    let seed = seed(test);
    let dir = tempfile::tempdir().unwrap();
    make_events(dir.path(), "events", 4, N, seed, USERS, STEP);
    let sql = dir.path().join("totals.sql");
    std::fs::write(
        &sql,
        match job {
            Job::Windows => WINDOW_SQL,
            Job::Updating => GROUP_SQL,
        },
    )
    .unwrap();
    (dir, sql, seed)
}

/// Runs the job unbounded until it has committed output and completed a checkpoint after that,
/// then SIGKILLs it: its newest checkpoint's output is committed.
fn run_and_kill(data: &Path, sql: &Path) {
    let mut child = keel(data)
        .args(["run", sql.to_str().unwrap(), "--quiet", "-p", "2", "--checkpoint-interval", "100ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_rows(data, "totals", 1, &mut child, "first committed output");
    // One more completed checkpoint after the output was seen: its commit has happened or is
    // under way; either way the completion record names it.
    let chk = data.join("jobs/totals/checkpoints");
    let newest = || newest_checkpoint(&chk).map(|(id, _)| id).unwrap_or(0);
    let seen = newest();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while newest() <= seen + 1 {
        assert!(std::time::Instant::now() < deadline, "no new checkpoint within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The checkpoint the completion record names as committed (sinks were told to commit its
/// output), and its directory: the one whose damage used to cost exactly-once. Made the newest.
fn committed_checkpoint(chk: &Path) -> (u64, PathBuf) {
    let mut best: Option<(u64, u64)> = None; // (sequence, committed)
    for slot in ["_completed.0", "_completed.1"] {
        let Ok(bytes) = std::fs::read(chk.join(slot)) else { continue };
        let Ok(record) = serde_json::from_slice::<serde_json::Value>(&bytes[16.min(bytes.len())..]) else { continue };
        let (seq, committed) = (record["sequence"].as_u64().unwrap(), record["committed"].as_u64().unwrap());
        if best.is_none_or(|b| seq > b.0) {
            best = Some((seq, committed));
        }
    }
    let id = best.expect("a completion record").1;
    let dir = chk.join(format!("chk-{id:010}"));
    // A checkpoint newer than the committed one (its manifest written, the record not yet) was
    // never committed: passing over it repeats nothing, so it is removed (as if the process died
    // before its manifest) to make the committed one the newest.
    for e in std::fs::read_dir(chk).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && p > dir && p.file_name().unwrap().to_str().unwrap().starts_with("chk-") {
            std::fs::remove_dir_all(p).unwrap();
        }
    }
    (id, dir)
}

/// The newest checkpoint directory with a manifest: (id, path).
fn newest_checkpoint(chk: &Path) -> Option<(u64, PathBuf)> {
    let mut dirs: Vec<(u64, PathBuf)> = std::fs::read_dir(chk)
        .ok()?
        .filter_map(|e| {
            let p = e.ok()?.path();
            let id = p.file_name()?.to_str()?.strip_prefix("chk-")?.parse().ok()?;
            p.join("_manifest.json").exists().then_some((id, p))
        })
        .collect();
    dirs.sort();
    dirs.pop()
}

/// The state files (not parity, not manifest) of a checkpoint, largest first.
fn state_files(chk: &Path) -> Vec<PathBuf> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(chk)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_str().unwrap().starts_with('_'))
        .map(|p| (std::fs::metadata(&p).unwrap().len(), p))
        .collect();
    files.sort();
    files.into_iter().rev().map(|f| f.1).collect()
}

fn run_bounded(data: &Path, sql: &Path, extra: &[&str]) -> std::process::Output {
    keel(data)
        .args(["run", sql.to_str().unwrap(), "--bounded", "--quiet", "-p", "2"])
        .args(extra)
        .env("KEEL_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn check(data: &Path, seed: u64, job: Job) {
    match job {
        Job::Windows => {
            assert_same(&actual_totals(&topic_rows(data, "totals")), &expected_totals(N, seed, USERS, STEP, 10_000))
        }
        Job::Updating => {
            let mut expected = std::collections::BTreeMap::new();
            for i in 0..N {
                let (user, amount, _) = keel::sample::event(seed, i, USERS, STEP);
                let e = expected.entry(user).or_insert((0i64, 0i64));
                e.0 += 1;
                e.1 += amount;
            }
            let mut actual = std::collections::BTreeMap::new();
            for row in replay_changelog(topic_rows(data, "totals")) {
                let user = row["user_id"].as_str().unwrap().to_string();
                let v = (row["n"].as_i64().unwrap(), row["total"].as_i64().unwrap());
                assert!(actual.insert(user.clone(), v).is_none(), "user {user} has two rows: output doubled");
            }
            assert_same(&actual, &expected);
        }
    }
}

#[test]
fn a_flipped_or_truncated_state_file_is_rebuilt_and_nothing_is_repeated() {
    for (job, how) in [(Job::Windows, "flip"), (Job::Updating, "truncate")] {
        let (dir, sql, seed) = setup(&format!("state_file_{how}"), job);
        run_and_kill(dir.path(), &sql);
        let (_, newest) = committed_checkpoint(&dir.path().join("jobs/totals/checkpoints"));
        let file = state_files(&newest).remove(0);
        let mut bytes = std::fs::read(&file).unwrap();
        if how == "flip" {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x10;
        } else {
            bytes.truncate(bytes.len() / 3);
        }
        std::fs::write(&file, &bytes).unwrap();
        let out = run_bounded(dir.path(), &sql, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("rebuilt from the checkpoint's parity"), "{stderr}");
        check(dir.path(), seed, job);
    }
}

#[test]
fn garbled_or_deleted_manifests_are_restored_from_the_completion_record() {
    for (job, how) in [(Job::Windows, "garble"), (Job::Updating, "delete all")] {
        let (dir, sql, seed) = setup(&format!("manifest_{how}"), job);
        run_and_kill(dir.path(), &sql);
        let chk = dir.path().join("jobs/totals/checkpoints");
        let (_, newest) = committed_checkpoint(&chk);
        if how == "garble" {
            let m = newest.join("_manifest.json");
            let text = std::fs::read_to_string(&m).unwrap();
            std::fs::write(&m, &text[..text.len() / 2]).unwrap();
        } else {
            for e in std::fs::read_dir(&chk).unwrap() {
                let _ = std::fs::remove_file(e.unwrap().path().join("_manifest.json"));
            }
        }
        let out = run_bounded(dir.path(), &sql, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("restored from the completion record"), "{stderr}");
        check(dir.path(), seed, job);
    }
}

#[test]
fn damage_beyond_repair_is_refused_until_the_operator_chooses_a_checkpoint() {
    let (dir, sql, seed) = setup("beyond_repair", Job::Windows);
    run_and_kill(dir.path(), &sql);
    let chk = dir.path().join("jobs/totals/checkpoints");
    let (id, newest) = committed_checkpoint(&chk);
    // Two files of the committed checkpoint damaged: the parity rebuilds one.
    let files = state_files(&newest);
    assert!(files.len() >= 2, "{files:?}");
    for f in &files[..2] {
        std::fs::write(f, b"damaged").unwrap();
    }
    let before = topic_rows(dir.path(), "totals").len();
    let out = run_bounded(dir.path(), &sql, &[]);
    assert!(!out.status.success(), "falling back past committed output must be refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("Checkpoint {id} completed and its output was committed")), "{stderr}");
    let older = stderr
        .split("--from-checkpoint ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no checkpoint offered in: {stderr}"));
    assert!(older < id);
    assert_eq!(topic_rows(dir.path(), "totals").len(), before, "a refused start commits nothing");
    assert_eq!(std::fs::read(&files[0]).unwrap(), b"damaged", "nothing was changed");
    // The operator accepts the repeated output: the job runs from the older checkpoint; every
    // window is there, right, and any repeated one is a copy of a window committed before.
    let out = run_bounded(dir.path(), &sql, &["--from-checkpoint", &older.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(chk.join("_set_aside").join(newest.file_name().unwrap()).exists(), "the damaged checkpoint is kept");
    let expected = expected_totals(N, seed, USERS, STEP, 10_000);
    let mut seen = std::collections::BTreeMap::new();
    for r in topic_rows(dir.path(), "totals") {
        let key = (r["user_id"].as_str().unwrap().to_string(), r["window_start"].as_str().unwrap().to_string());
        let val =
            (r["window_end"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap(), r["total"].as_i64().unwrap());
        assert_eq!(expected.get(&key), Some(&val), "window {key:?}");
        *seen.entry(key).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), expected.len(), "every window is committed");
    // Later starts resume normally: the choice is remembered.
    let out = run_bounded(dir.path(), &sql, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_job_with_committed_output_and_no_usable_checkpoint_never_starts_over_by_itself() {
    let (dir, sql, _) = setup("no_checkpoint_left", Job::Updating);
    run_and_kill(dir.path(), &sql);
    let chk = dir.path().join("jobs/totals/checkpoints");
    let (id, _) = committed_checkpoint(&chk);
    for e in std::fs::read_dir(&chk).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        }
    }
    let before = topic_rows(dir.path(), "totals").len();
    let out = run_bounded(dir.path(), &sql, &[]);
    assert!(!out.status.success(), "starting over would write the changelog twice");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("starting over would write") && stderr.contains("--fresh"), "{stderr}");
    assert_eq!(topic_rows(dir.path(), "totals").len(), before, "nothing written");
    let out = run_bounded(dir.path(), &sql, &["--fresh"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("through checkpoint {id}")) && stderr.contains("written again"), "{stderr}");
}
