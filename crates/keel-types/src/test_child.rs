//! Running one test of the current test binary again in a child process, for tests of inputs
//! that once crashed the process: a stack overflow or a failed allocation aborts every thread,
//! so neither a thread nor `catch_unwind` can contain it, and the test binary would die with it.
//!
//! Invariant: the parent passes only if the child ran exactly that test and it passed; a child
//! killed by a signal (the abort of a stack overflow) is reported as a crash with its output.

use std::process::Command;

/// Set in the child's environment; its presence means "run the test body here".
pub const CHILD_ENV: &str = "KEEL_TEST_CHILD";

/// Call first in a test named `test` (its full path in the test binary, as `cargo test` lists
/// it, e.g. `json::tests::deep_records_are_bad_records`). In the test process it runs that test
/// alone in a child process, asserts that it passed, and returns `true` (the caller returns);
/// in the child it returns `false` and the caller runs the body.
pub fn run_in_child(test: &str) -> bool {
    if std::env::var_os(CHILD_ENV).is_some() {
        return false;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => panic!("cannot find the test binary to run {test} in a child process: {e}"),
    };
    let out =
        match Command::new(exe).args([test, "--exact", "--nocapture", "--test-threads=1"]).env(CHILD_ENV, "1").output()
        {
            Ok(out) => out,
            Err(e) => panic!("cannot start a child process for {test}: {e}"),
        };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{test} in a child process failed or crashed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("1 passed"), "{test}: the child process did not run that one test:\n{stdout}");
    true
}
