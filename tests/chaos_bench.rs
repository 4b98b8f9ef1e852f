//! `keel bench chaos`, short: every pipeline (window aggregate, interval join, changelog GROUP BY,
//! deduplication, files) is SIGKILLed four times (three while its events arrive, one once they
//! are all written, perhaps in a bounded run), then finished, and
//! must report every expected row compared with none lost, duplicated or wrong. The long run's
//! figures are in docs/RELIABILITY.md.

mod common;
use common::*;

const PIPELINES: [&str; 5] = ["window", "interval-join", "group-changelog", "dedup", "files"];

#[test]
fn chaos_benchmark_short_run_loses_duplicates_and_breaks_nothing() {
    let seed = seed("chaos_bench");
    let dir = tempfile::tempdir().unwrap();
    let out = keel(dir.path())
        .args(["bench", "chaos", "--seed", &seed.to_string(), "--kills", "20", "--events", "3000"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("spawn keel");
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "keel bench chaos failed ({:?}), seed {seed}:\n{text}\n{stderr}", out.status);
    assert!(text.contains(&format!("seed {seed}")), "the seed is printed:\n{text}");
    // One progress line per kill, naming the pipeline.
    for p in PIPELINES {
        let kills = text.lines().filter(|l| l.starts_with(p) && l.contains(" kill ") && l.contains("killed: ")).count();
        assert_eq!(kills, 4, "{p}: four kills reported, seed {seed}:\n{text}");
    }
    // | pipeline | kills | of them at fault points | restarts | rows compared | lost | duplicated | wrong | seconds |
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| pipeline"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), PIPELINES.len() + 1, "a row per pipeline and the total:\n{text}");
    for (row, name) in rows.iter().zip(PIPELINES.iter().chain(std::iter::once(&"**total**"))) {
        assert_eq!(row[1], *name, "{text}");
        let n = |i: usize| row[i].parse::<u64>().unwrap_or_else(|_| panic!("cell {i} of {row:?} is not a number"));
        assert!(n(5) > 0, "{name}: rows were compared, seed {seed}:\n{text}");
        assert_eq!((n(6), n(7), n(8)), (0, 0, 0), "{name}: lost, duplicated, wrong; seed {seed}:\n{text}");
        assert_eq!(n(2), if *name == "**total**" { 20 } else { 4 }, "{name}: kills, seed {seed}:\n{text}");
    }
    // A passing run leaves nothing behind.
    let left = dir.path().join("bench").join(format!("chaos-{seed}"));
    assert!(!left.exists(), "{} is left", left.display());
}

#[test]
fn an_unknown_pipeline_is_refused_naming_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let out = keel(dir.path())
        .args(["bench", "chaos", "--pipelines", "window,joins", "--kills", "1"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("spawn keel");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no chaos pipeline 'joins'") && err.contains("interval-join"), "{err}");
}
