//! A full disk: the job fails with a message naming the file and the cause (after the restart
//! strategy gives up), nothing committed is damaged, and once space is freed the job resumes and
//! its output is exact. The data directory is a small tmpfs mounted for the test (needs root, as
//! the test machines and CI run).

mod common;
use common::*;
use std::process::{Command, Stdio};

struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_clearly_and_the_job_resumes_exactly_once_space_is_freed() {
    let seed = seed("disk_full");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(&data).status();
    assert!(
        ok.is_ok_and(|s| s.success()),
        "this test mounts a 4 MB tmpfs to fill it; run it as root (as CI does) on a machine that allows mounts"
    );
    let _mount = Mount(data.clone());
    let (n, users, step) = (15_000u64, 150u64, 10i64);
    make_events(&data, "events", 2, n, seed, users, step);
    let sql = dir.path().join("totals.sql");
    std::fs::write(&sql, WINDOW_SQL).unwrap();
    // Leave about 48 KB free: enough to start the job (its lock, identity and topics take a page
    // each on tmpfs), less than its output and checkpoints need.
    let filler = data.join("filler");
    let free = {
        let out = Command::new("df").args(["--output=avail", "-B1"]).arg(&data).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse::<u64>().unwrap()
    };
    std::fs::write(&filler, vec![0u8; free.saturating_sub(48 << 10) as usize]).unwrap();
    let out = keel(&data)
        .args([
            "run",
            sql.to_str().unwrap(),
            "--bounded",
            "--quiet",
            "--restart-attempts",
            "1",
            "--checkpoint-interval",
            "100ms",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the job should not fit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.contains("is giving up"), "{stderr}");
    std::fs::remove_file(&filler).unwrap();
    run_ok(keel(&data).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet"]));
    assert_same(&actual_totals(&topic_rows(&data, "totals")), &expected_totals(n, seed, users, step, 10_000));
}
