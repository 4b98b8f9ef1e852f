//! A job has one owner and stays inside the data directory: a second `keel run` of a running
//! job is refused naming the process that holds it (and a SIGKILLed owner leaves no stale lock);
//! job names that would leave `DATA_DIR/jobs/` are refused before anything is touched; a
//! pipeline file whose name holds spaces or non-ASCII letters gets a valid derived job name.

mod common;
use common::*;
use std::process::Stdio;

#[test]
fn a_second_run_of_a_running_job_is_refused_and_a_killed_owner_leaves_no_lock() {
    let seed = seed("job_ownership");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (n, users, step) = (40_000u64, 100u64, 5i64);
    make_events(data, "events", 2, n, seed, users, step);
    let sql = data.join("totals.sql");
    std::fs::write(&sql, WINDOW_SQL).unwrap();
    let mut owner = keel(data)
        .args(["run", sql.to_str().unwrap(), "--quiet", "--checkpoint-interval", "100ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Once output is committed, the owner certainly holds the job.
    wait_for_rows(data, "totals", 1, &mut owner, "the first run");
    for extra in [&[][..], &["--fresh"][..]] {
        let out = keel(data)
            .args(["run", sql.to_str().unwrap(), "--bounded", "--quiet"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "a second owner must be refused ({extra:?})");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("job 'totals' is already running in process {}", owner.id())),
            "{extra:?}: {err}"
        );
    }
    assert!(owner.try_wait().unwrap().is_none(), "the owner keeps running");
    owner.kill().unwrap(); // SIGKILL: the OS releases the lock
    owner.wait().unwrap();
    run_ok(keel(data).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet"]));
    assert_same(&actual_totals(&topic_rows(data, "totals")), &expected_totals(n, seed, users, step, 10_000));
}

#[test]
fn job_names_that_leave_the_jobs_directory_are_refused_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep me").unwrap();
    make_events(&data, "events", 1, 100, 1, 5, 100);
    let sql = dir.path().join("p.sql");
    std::fs::write(&sql, WINDOW_SQL).unwrap();
    run_ok(keel(&data).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet", "--name", "other"]));
    let other_job = data.join("jobs/other/job.json");
    assert!(other_job.exists());
    let abs = outside.display().to_string();
    for name in ["../../outside", "../outside", &abs, "", ".", "..", "a/b", ".hidden"] {
        let out = keel(&data)
            .args(["run", sql.to_str().unwrap(), "--bounded", "--quiet", "--fresh", "--name", name])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "--name '{name}' must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("invalid job name '{name}'")), "{name}: {err}");
        assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep me", "{name} touched outside");
        assert!(other_job.exists(), "--name '{name}' --fresh wiped another job");
        assert!(!outside.join("job.json").exists() && !outside.join("checkpoints").exists());
    }
    // A pipeline file named with a space and a non-ASCII letter runs under a derived name.
    let odd = dir.path().join("tötals x.sql");
    std::fs::write(&odd, WINDOW_SQL).unwrap();
    let out = run_ok(keel(&data).args(["run", odd.to_str().unwrap(), "--bounded", "--quiet"]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("job 't_tals_x'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data.join("jobs/t_tals_x/job.json").exists());
}

#[test]
fn two_files_that_give_one_job_name_and_a_job_named_by_keel_0_1_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make_events(&data, "events", 1, 100, 1, 5, 100);
    // `a b.sql` and `a_b.sql` both give the job name `a_b`.
    let first = dir.path().join("a b.sql");
    std::fs::write(&first, WINDOW_SQL).unwrap();
    run_ok(keel(&data).args(["run", first.to_str().unwrap(), "--bounded", "--quiet"]));
    let second = dir.path().join("a_b.sql");
    std::fs::write(&second, WINDOW_SQL.replace("INTERVAL '10' SECOND))", "INTERVAL '20' SECOND))")).unwrap();
    let out = keel(&data).args(["run", second.to_str().unwrap(), "--bounded", "--quiet"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to pipeline file") && err.contains("--name"), "{err}");
    // A job Keel 0.1 named after the file as it was is not silently replaced by a new one.
    let legacy = dir.path().join("my report.sql");
    std::fs::write(&legacy, WINDOW_SQL).unwrap();
    std::fs::create_dir_all(data.join("jobs/my report")).unwrap();
    std::fs::write(data.join("jobs/my report/job.json"), br#"{"name":"my report"}"#).unwrap();
    let out = keel(&data).args(["run", legacy.to_str().unwrap(), "--bounded", "--quiet"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("was named 'my report' by an earlier Keel") && err.contains("my_report"), "{err}");
    assert!(!data.join("jobs/my_report").exists(), "nothing was started");
}
