//! Exactly-once under SIGKILL: the windowed SQL pipeline over 200,000 events, which arrive in
//! chunks between crashes, is killed at seeded
//! random moments (timed kills while processing, and kills at the moment a checkpoint is being
//! made durable, right after it became durable, in the middle of a sink commit, and in the middle
//! of a log append), restarted after each, and its committed output must equal the expectation
//! computed directly from the events: every window once, with the right count and sum.

mod common;
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    crash_test("crash_recovery", Sink::Topic, 12);
}

#[test]
fn sigkill_with_a_filesystem_sink_publishes_every_window_once() {
    crash_test("crash_recovery_files", Sink::Files, 8);
}

#[derive(Clone, Copy, PartialEq)]
enum Sink {
    Topic,
    Files,
}

fn crash_test(name: &str, sink: Sink, min_kills: u32) {
    let seed = seed(name);
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (n, users, step) = (200_000u64, 300u64, 2i64);
    let log = keel::log::Log::open(data).unwrap();
    let topic = log.create_topic("events", keel::log::TopicConfig::new(4)).unwrap();
    // Events arrive in chunks while the job keeps crashing, as a live stream would.
    let chunks = 14u64;
    let mut appended = 0u64;
    let sql = data.join("totals.sql");
    let out_dir = data.join("out");
    let pipeline = match sink {
        Sink::Topic => WINDOW_SQL.to_string(),
        Sink::Files => WINDOW_SQL.replace(
            "'connector' = 'topic', 'topic' = 'totals', 'format' = 'json'",
            &format!("'connector' = 'filesystem', 'path' = '{}', 'format' = 'json'", out_dir.display()),
        ),
    };
    std::fs::write(&sql, pipeline).unwrap();
    let points: &[&str] = match sink {
        Sink::Topic => &["checkpoint.before-manifest", "checkpoint.after-manifest", "sink.commit", "log.append"],
        Sink::Files => &["checkpoint.before-manifest", "checkpoint.after-manifest", "sink.commit"],
    };
    let mut kills = 0;
    while kills < min_kills || appended < n {
        if appended < n {
            let next = (appended + n / chunks).min(n);
            keel::sample::fill_topic_range(&topic, appended..next, seed, users, step).unwrap();
            appended = next;
        }
        // Killed rounds run unbounded, so they never finish by themselves: every kill lands,
        // while reading, while idle between checkpoints, or at a fault point.
        let mut cmd = keel(data);
        cmd.args(["run", sql.to_str().unwrap(), "--quiet", "--checkpoint-interval", "100ms", "-p"])
            .arg(if rng.below(2) == 0 { "1" } else { "2" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let timed = rng.below(3) == 0;
        let mut what = "timed".to_string();
        if !timed {
            let point = points[rng.below(points.len() as u64) as usize];
            what = format!("{point}=kill@{}", 1 + rng.below(if point.starts_with("checkpoint") { 3 } else { 2 }));
            cmd.env("KEEL_FAULTS", &what);
        }
        let mut child = cmd.spawn().unwrap();
        // A fault point that is never reached falls back to a timed kill.
        let wait = Duration::from_millis(if timed { 50 + rng.below(900) } else { 5_000 });
        let until = Instant::now() + wait;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= until {
                if !timed {
                    what.push_str(" (not reached: timed kill)");
                }
                child.kill().unwrap(); // SIGKILL
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        use std::os::unix::process::ExitStatusExt;
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.signal(), Some(9), "kill {kills}: keel died by {status:?}, not by SIGKILL:\n{stderr}");
        kills += 1;
        println!("kill {kills}: {what}");
    }
    run_ok(keel(data).args(["run", sql.to_str().unwrap(), "--bounded", "--quiet", "--checkpoint-interval", "100ms"]));
    let expected = expected_totals(n, seed, users, step, 10_000);
    let rows = match sink {
        Sink::Topic => topic_rows(data, "totals"),
        Sink::Files => {
            let mut rows = vec![];
            for e in std::fs::read_dir(&out_dir).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().to_string();
                if name.starts_with('.') {
                    panic!("uncommitted file {name} left in the sink directory");
                }
                for line in std::fs::read_to_string(out_dir.join(&name)).unwrap().lines() {
                    rows.push(serde_json::from_str(line).unwrap());
                }
            }
            rows
        }
    };
    let actual = actual_totals(&rows);
    assert_same(&actual, &expected);
    // Nothing uncommitted is left staged.
    let staged = walk(&data.join("jobs/totals/staging"));
    assert!(staged.is_empty(), "staging files left behind: {staged:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
