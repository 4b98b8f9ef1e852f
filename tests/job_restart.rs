//! Automatic recovery: a task that panics makes the job restart from its newest checkpoint under
//! the restart strategy, and the output stays exactly-once; a task that keeps failing exhausts
//! the strategy with a clear final error; a job restored at another parallelism keeps its state.

mod common;
use common::*;
use std::process::Stdio;

const N: u64 = 60_000;
const USERS: u64 = 200;
const STEP: i64 = 5;

fn setup(test: &str) -> (tempfile::TempDir, std::path::PathBuf, u64) {
    let seed = seed(test);
    let dir = tempfile::tempdir().unwrap();
    make_events(dir.path(), "events", 4, N, seed, USERS, STEP);
    let sql = dir.path().join("totals.sql");
    std::fs::write(&sql, WINDOW_SQL).unwrap();
    (dir, sql, seed)
}

fn check(data: &std::path::Path, seed: u64) {
    let expected = expected_totals(N, seed, USERS, STEP, 10_000);
    assert_same(&actual_totals(&topic_rows(data, "totals")), &expected);
}

#[test]
fn a_panicking_task_restarts_from_the_checkpoint_and_output_stays_exact() {
    let (dir, sql, seed) = setup("panic_restart");
    let out = run_ok(
        keel(dir.path())
            .args(["run", sql.to_str().unwrap(), "--bounded", "--quiet", "-p", "2", "--checkpoint-interval", "50ms"])
            .env("KEEL_LOG", "info")
            .env("KEEL_FAULTS", "aggregate.process=panic@3"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("injected panic at aggregate.process"), "restart cause not logged:\n{stderr}");
    assert!(stderr.contains("restart 1 (at most 10 within"), "restart not logged:\n{stderr}");
    check(dir.path(), seed);
}

#[test]
fn a_task_that_keeps_failing_gives_up_with_a_clear_final_error() {
    let (dir, sql, _) = setup("panic_forever");
    let out = keel(dir.path())
        .args([
            "run",
            sql.to_str().unwrap(),
            "--bounded",
            "--quiet",
            "--restart-attempts",
            "2",
            "--restart-window",
            "1m",
        ])
        .env("KEEL_FAULTS", "aggregate.process=panic@0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed 3 times within 60s and is giving up"), "{stderr}");
    assert!(stderr.contains("injected panic at aggregate.process"), "{stderr}");
}

#[test]
fn a_job_restored_at_another_parallelism_keeps_its_window_state() {
    for (before, after) in [("2", "1"), ("1", "2")] {
        let (dir, sql, seed) = setup(&format!("rescale_{before}_to_{after}"));
        // Run unbounded until the third checkpoint is durable, then die: open windows are in it.
        let status = keel(dir.path())
            .args(["run", sql.to_str().unwrap(), "--quiet", "-p", before, "--checkpoint-interval", "100ms"])
            .env("KEEL_FAULTS", "checkpoint.after-manifest=kill@3")
            .stdin(Stdio::null())
            .status()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
        let chk = std::fs::read_dir(dir.path().join("jobs/totals/checkpoints")).unwrap().count();
        assert!(chk > 0, "no checkpoint was kept");
        run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet", "-p", after]));
        check(dir.path(), seed);
    }
}

#[test]
fn a_damaged_state_file_of_the_newest_checkpoint_is_rebuilt_from_its_parity() {
    let (dir, sql, seed) = setup("damaged_checkpoint");
    let status = keel(dir.path())
        .args(["run", sql.to_str().unwrap(), "--quiet", "-p", "2", "--checkpoint-interval", "100ms"])
        .env("KEEL_FAULTS", "checkpoint.after-manifest=kill@3")
        .stdin(Stdio::null())
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));
    let chk_dir = dir.path().join("jobs/totals/checkpoints");
    let mut chks: Vec<_> = std::fs::read_dir(&chk_dir).unwrap().map(|e| e.unwrap().path()).collect();
    chks.sort();
    let newest = chks.last().unwrap().clone();
    let state = std::fs::read_dir(&newest)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("window-aggregate"))
        .unwrap();
    let mut bytes = std::fs::read(&state).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&state, bytes).unwrap();
    let out = run_ok(
        keel(dir.path())
            .args(["run", sql.to_str().unwrap(), "--bounded", "--quiet", "-p", "2"])
            .env("KEEL_LOG", "warn"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id: u64 = newest.file_name().unwrap().to_string_lossy().trim_start_matches("chk-").parse().unwrap();
    assert!(stderr.contains(&format!("checkpoint {id}: state file window-aggregate")), "{stderr}");
    assert!(stderr.contains("rebuilt from the checkpoint's parity"), "{stderr}");
    assert!(stderr.contains(&format!("resuming from checkpoint {id}")), "{stderr}");
    check(dir.path(), seed);
}

#[test]
fn a_commit_that_fails_after_the_final_checkpoint_is_not_reported_as_finished() {
    let (dir, sql, seed) = setup("final_commit_fails");
    // With periodic checkpoints off, the only commit is the final one; make it panic once.
    let out = run_ok(
        keel(dir.path())
            .args(["run", sql.to_str().unwrap(), "--bounded", "--quiet", "--checkpoint-interval", "off"])
            .env("KEEL_LOG", "info")
            .env("KEEL_FAULTS", "sink.commit=panic@1"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("injected panic at sink.commit") && stderr.contains("restart 1"), "{stderr}");
    check(dir.path(), seed);
}
