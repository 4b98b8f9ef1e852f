//! `keel bench nexmark`: each configuration runs in a child process, `--repeat` runs it several
//! times and reports the median run with the range, and nothing of the measured jobs is left.

mod common;
use common::*;

#[test]
fn bench_nexmark_repeats_runs_and_reports_the_median_with_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(keel(dir.path()).args([
        "bench",
        "nexmark",
        "--events",
        "20000",
        "--queries",
        "q0,q9",
        "--parallelism",
        "1",
        "--checkpoint-interval",
        "off",
        "--repeat",
        "3",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| nexmark q")).collect();
    assert_eq!(rows.len(), 2, "one row per query:\n{text}");
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | job | parallelism | checkpoints | wall s | events/s | CPU s | per CPU-second (range) | ...
        let per_cpu = cells[7];
        let (median, range) = per_cpu.split_once(" (").unwrap_or_else(|| panic!("no range in {row:?}"));
        assert!(range.ends_with("M over 3 runs)"), "{row:?}");
        let median: f64 = median.parse().unwrap();
        let (lo, hi) = range.trim_end_matches(" M over 3 runs)").split_once('–').unwrap();
        let (lo, hi): (f64, f64) = (lo.parse().unwrap(), hi.parse().unwrap());
        // The figures are rounded to 0.01 M (10,000 events per CPU-second).
        assert!(lo <= hi && lo * 1e6 - 5e3 <= median && median <= hi * 1e6 + 5e3, "median outside range: {row:?}");
        // CPU s is printed to 0.01 s.
        let cpu: f64 = cells[6].parse().unwrap();
        let (fewest, most) = (20_000.0 / (cpu + 0.005), 20_000.0 / (cpu - 0.005).max(1e-9));
        assert!(fewest <= median && median <= most, "per CPU-second is events / CPU s: {row:?}");
    }
    let jobs = dir.path().join("bench/jobs");
    let left: Vec<_> =
        std::fs::read_dir(&jobs).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "measured jobs' data is removed: {left:?}");
}
