//! The partitioned filesystem sink end to end (`PARTITIONED BY (dt, hm)`, as Nexmark q10): a SQL
//! pipeline from a topic into a partitioned CSV sink with the success-file commit policy, killed
//! by SIGKILL at its first file publication (`sink.commit`: that checkpoint is complete but its
//! files are at most partly published) and restarted at another parallelism. Every event must
//! then appear exactly once, in the directory named by its date and escaped `HH:mm` (or the
//! default partition for NULL), without the partition columns, and every partition directory
//! must hold a `_SUCCESS` file and no hidden (uncommitted) file. And `nexmark/q10.sql` itself, on
//! a small generated stream: every bid once, under the date and minute of its `dateTime`.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

const N: u64 = 20_000;
const USERS: u64 = 50;
/// 30 ms apart: the events span 10 minutes (and, with jitter, start in the previous day).
const STEP: i64 = 30;

fn pipeline(out: &Path) -> String {
    format!(
        "CREATE TABLE events (
  user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'topic', 'topic' = 'events', 'format' = 'json');
CREATE TABLE fs_sink (user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3), dt STRING, hm STRING)
PARTITIONED BY (dt, hm)
WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv',
  'sink.partition-commit.policy.kind' = 'success-file');
INSERT INTO fs_sink
SELECT user_id, amount, ts, DATE_FORMAT(ts, 'yyyy-MM-dd'),
  CASE WHEN amount <= 50 THEN NULL ELSE DATE_FORMAT(ts, 'HH:mm') END
FROM events;",
        out.display()
    )
}

/// Every file under `dir`, relative to it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().to_string()
}

#[test]
fn a_partitioned_csv_sink_killed_at_commit_writes_every_row_once_in_its_partition() {
    let seed = seed("file_sink_partitioned");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    make_events(data, "events", 2, N, seed, USERS, STEP);
    let out = data.join("out");
    let sql = data.join("partitioned.sql");
    std::fs::write(&sql, pipeline(&out)).unwrap();
    let run = |parallelism: &str| {
        let mut cmd = keel(data);
        cmd.args(["run", sql.to_str().unwrap(), "--bounded", "--quiet", "--checkpoint-interval", "10ms", "-p"])
            .arg(parallelism)
            .stdin(Stdio::null());
        cmd
    };

    // First run: killed as it publishes its first file.
    let killed = run("2").env("KEEL_FAULTS", "sink.commit=kill@1").output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        killed.status.signal(),
        Some(9),
        "keel was not killed at sink.commit: {:?}\n{}",
        killed.status,
        String::from_utf8_lossy(&killed.stderr)
    );
    // The kill interrupted the first publication: that checkpoint is complete but files of it
    // are still pending (the other subtask may have published some of its own before the signal
    // landed).
    let files = walk(&out);
    assert!(files.iter().any(|f| file_name(f).ends_with(".pending")), "nothing pending at the kill: {files:?}");

    // Restart at another parallelism: recovery publishes what the checkpoint covers, the rest is
    // written again (checkpoints every 10 ms, so the first often does not cover all the input).
    run_ok(&mut run("1"));

    let mut expected: BTreeMap<(String, String), u32> = BTreeMap::new();
    for i in 0..N {
        let (user, amount, ts) = keel::sample::event(seed, i, USERS, STEP);
        let iso = keel::types::time::format_timestamp_ms(ts);
        let hm = if amount <= 50 { "__DEFAULT_PARTITION__".to_string() } else { iso[11..16].replace(':', "%3A") };
        let partition = format!("dt={}/hm={hm}", &iso[..10]);
        *expected.entry((partition, format!("{user},{amount},{iso}"))).or_default() += 1;
    }
    let mut actual: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut success_dirs = vec![];
    for f in walk(&out) {
        let name = file_name(&f);
        assert!(!name.starts_with('.'), "uncommitted file left behind: {}", f.display());
        let partition = f.parent().unwrap().to_string_lossy().to_string();
        if name == "_SUCCESS" {
            success_dirs.push(partition);
            continue;
        }
        assert!(name.starts_with("part-") && name.ends_with(".csv"), "unexpected file {}", f.display());
        for line in std::fs::read_to_string(out.join(&f)).unwrap().lines() {
            *actual.entry((partition.clone(), line.to_string())).or_default() += 1;
        }
    }
    assert_same(&actual, &expected);
    let partitions: std::collections::BTreeSet<&String> = expected.keys().map(|k| &k.0).collect();
    assert!(partitions.len() >= 12, "too few partitions to test much: {partitions:?}");
    assert!(partitions.iter().any(|p| p.starts_with("dt=2023-12-31/")), "{partitions:?}");
    assert!(partitions.iter().any(|p| p.ends_with("/hm=__DEFAULT_PARTITION__")), "{partitions:?}");
    assert_eq!(success_dirs.iter().collect::<std::collections::BTreeSet<_>>(), partitions);
}

/// Nexmark q10 as `nexmark/q10.sql` has it: every bid once, in the directory of its date and
/// minute, with its other columns, and a `_SUCCESS` file in every partition.
#[test]
fn nexmark_q10_writes_every_bid_under_its_date_and_minute() {
    const EVENTS: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let root = manifest_dir().join("nexmark");
    // 50 events per second of event time: 400 s of events, so several minutes.
    let ddl = std::fs::read_to_string(root.join("ddl.sql"))
        .unwrap()
        .replace("${EVENTS}", &EVENTS.to_string())
        .replace("'first-event.rate' = '10000000'", "'first-event.rate' = '50'");
    let out = dir.path().join("q10-out");
    let q10 = std::fs::read_to_string(root.join("q10.sql")).unwrap().replace("${OUTPUT_DIR}", out.to_str().unwrap());
    let sql = dir.path().join("q10.sql");
    std::fs::write(&sql, format!("{ddl}\n{q10}")).unwrap();
    // No --bounded: a nexmark table with 'events.num' ends by itself.
    run_ok(keel(dir.path()).args([
        "run",
        sql.to_str().unwrap(),
        "--quiet",
        "-p",
        "2",
        "--checkpoint-interval",
        "100ms",
    ]));
    let (mut bids, mut partitions, mut success) = (0u64, std::collections::BTreeSet::new(), vec![]);
    for f in walk(&out) {
        let partition = f.parent().unwrap().to_string_lossy().to_string();
        match file_name(&f).as_str() {
            "_SUCCESS" => success.push(partition),
            name => {
                assert!(name.starts_with("part-") && name.ends_with(".csv"), "unexpected file {}", f.display());
                for line in std::fs::read_to_string(out.join(&f)).unwrap().lines() {
                    // auction, bidder, price, dateTime, extra: no dt or hm.
                    let fields: Vec<&str> = line.splitn(5, ',').collect();
                    assert_eq!(fields.len(), 5, "{line}");
                    let t = fields[3];
                    assert_eq!(partition, format!("dt={}/hm={}%3A{}", &t[..10], &t[11..13], &t[14..16]), "{line}");
                    bids += 1;
                }
                partitions.insert(partition);
            }
        }
    }
    // 46 of every 50 events are bids.
    assert_eq!(bids, EVENTS / 50 * 46);
    assert!(partitions.len() >= 6, "{partitions:?}");
    assert_eq!(success.into_iter().collect::<std::collections::BTreeSet<_>>(), partitions);
}
