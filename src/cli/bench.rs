//! `keel bench`: benchmarks, each run in child `keel run`s, reported as a Markdown table. `windows`
//! runs the demo's windowed pipeline from a topic of JSON events to a topic; `nexmark` runs the
//! Nexmark queries Keel supports on the generator. Both report events per second of wall time and
//! per CPU-second (the per-core rate), the checkpoints taken and the peak memory. `chaos`
//! (`chaos/`) measures exactly-once instead: pipelines SIGKILLed at seeded moments, their output
//! compared with an independent computation.

use crate::cli::demo::demo_sql;
use anyhow::{Context, Result};
use clap::Args;
use keel::sample;
use keel_log::{Log, TopicConfig};
use std::path::Path;

#[derive(Args)]
pub struct BenchArgs {
    /// `windows` (tumbling-window SQL from a JSON topic to a topic), `nexmark`, or `chaos`
    /// (pipelines SIGKILLed at seeded moments, output compared with an independent computation).
    #[arg(default_value = "windows")]
    suite: String,
    /// Events per run (default 10,000,000; chaos: per pipeline, default 20,000).
    #[arg(long)]
    events: Option<u64>,
    /// Parallelism values to measure, comma-separated (chaos: each round chooses one).
    #[arg(long, default_value = "1,2")]
    parallelism: String,
    /// Checkpoint intervals to measure, comma-separated (`off` for none); default `off,1s` for
    /// windows and `off,10s` for nexmark (chaos: each round chooses one of `50ms,100ms,250ms`).
    #[arg(long)]
    checkpoint_interval: Option<String>,
    /// Partitions of the windows benchmark's topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Runs of each configuration: the row shows the run with the median CPU time, and the range
    /// of events per CPU-second over all of them (on a shared or virtual machine the large-state
    /// queries vary by 10-20% from run to run).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Nexmark queries to run, comma-separated.
    #[arg(long, default_value = "q0,q1,q2,q3,q4,q5,q7,q8,q9,q10,q11,q12,q13,q14,q15,q16,q17,q18,q19,q20,q21,q22")]
    queries: String,
    #[command(flatten)]
    chaos: crate::cli::chaos::ChaosArgs,
}

const NEXMARK_DDL: &str = include_str!("../../nexmark/ddl.sql");
const NEXMARK_QUERIES: &[(&str, &str)] = &[
    ("q0", include_str!("../../nexmark/q0.sql")),
    ("q1", include_str!("../../nexmark/q1.sql")),
    ("q2", include_str!("../../nexmark/q2.sql")),
    ("q3", include_str!("../../nexmark/q3.sql")),
    ("q4", include_str!("../../nexmark/q4.sql")),
    ("q5", include_str!("../../nexmark/q5.sql")),
    ("q7", include_str!("../../nexmark/q7.sql")),
    ("q8", include_str!("../../nexmark/q8.sql")),
    ("q9", include_str!("../../nexmark/q9.sql")),
    ("q10", include_str!("../../nexmark/q10.sql")),
    ("q11", include_str!("../../nexmark/q11.sql")),
    ("q12", include_str!("../../nexmark/q12.sql")),
    ("q13", include_str!("../../nexmark/q13.sql")),
    ("q14", include_str!("../../nexmark/q14.sql")),
    ("q15", include_str!("../../nexmark/q15.sql")),
    ("q16", include_str!("../../nexmark/q16.sql")),
    ("q17", include_str!("../../nexmark/q17.sql")),
    ("q18", include_str!("../../nexmark/q18.sql")),
    ("q19", include_str!("../../nexmark/q19.sql")),
    ("q20", include_str!("../../nexmark/q20.sql")),
    ("q21", include_str!("../../nexmark/q21.sql")),
    ("q22", include_str!("../../nexmark/q22.sql")),
];

/// The side input of q13: `key,value` for keys 0..10,000 (as the Nexmark suite's side_input.txt).
fn side_input(dir: &Path) -> Result<std::path::PathBuf> {
    let d = dir.join("nexmark-side-input");
    std::fs::create_dir_all(&d)?;
    let f = d.join("side_input.csv");
    if !f.exists() {
        let text: String = (0..10_000).map(|k| format!("{k},{}\n", k * 7 % 10_000)).collect();
        std::fs::write(&f, text)?;
    }
    Ok(d)
}

/// The output directory of a query that writes files (q10's `${OUTPUT_DIR}`): `run` under
/// `DIR/nexmark-output`, emptied first so that each run starts with none of an earlier run's files.
fn output_dir(dir: &Path, run: &str) -> Result<std::path::PathBuf> {
    let d = dir.join("nexmark-output").join(run);
    if d.exists() {
        std::fs::remove_dir_all(&d).with_context(|| format!("emptying {}", d.display()))?;
    }
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// What one benchmark run cost, from the child process's resource usage.
struct RunCost {
    wall: f64,
    cpu: f64,
    peak_rss_mb: f64,
    events: u64,
    checkpoints: u64,
}

/// Runs one pipeline file fresh in a child `keel run` (so that its CPU time and peak memory are
/// its own) and returns what it cost.
fn run_child(dir: &Path, pipeline: &Path, p: u32, interval: &str) -> Result<RunCost> {
    use std::io::Read;
    let exe = std::env::current_exe().context("finding the keel executable")?;
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(exe)
        .arg("--data-dir")
        .arg(dir)
        .arg("run")
        .arg(pipeline)
        .args(["--bounded", "--fresh", "--quiet", "--restart-attempts", "0", "--checkpoint-interval", interval])
        .args(["-p", &p.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting keel run")?;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).context("reading keel run's output")?;
    }
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child (not yet reaped: std's Child was never waited on).
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    anyhow::ensure!(pid > 0, "waiting for keel run failed: {}", std::io::Error::last_os_error());
    let wall = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "keel run {} failed:\n{stderr}",
        pipeline.display()
    );
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    // "finished: read N events in ..., committed in checkpoint C"
    let line = stderr.lines().find(|l| l.starts_with("finished: read ")).unwrap_or_default();
    let events = line.trim_start_matches("finished: read ").split(' ').next().and_then(|n| n.parse().ok());
    let checkpoints = line.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    Ok(RunCost {
        wall,
        cpu: t(usage.ru_utime) + t(usage.ru_stime),
        peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
        events: events.with_context(|| format!("keel run did not report what it read:\n{stderr}"))?,
        checkpoints,
    })
}

/// Runs one pipeline `repeat` times and prints its table row (the median run by CPU time).
#[allow(clippy::too_many_arguments)]
fn measure(
    dir: &Path,
    label: &str,
    pipeline: std::path::PathBuf,
    p: u32,
    interval: &str,
    events: u64,
    repeat: u32,
) -> Result<()> {
    let mut runs = vec![];
    for _ in 0..repeat {
        runs.push(run_child(dir, &pipeline, p, interval)?);
        // The run's checkpoints (GBs for the largest states) are of no use once it is measured,
        // and left behind they fill the disk and the page cache, which slows the runs after it.
        let job = pipeline.file_stem().map(|stem| dir.join("jobs").join(stem));
        if let Some(job) = job.filter(|j| j.exists()) {
            std::fs::remove_dir_all(&job)
                .with_context(|| format!("removing the measured job's data {}", job.display()))?;
        }
    }
    runs.sort_by(|a, b| a.cpu.total_cmp(&b.cpu));
    let per_cpu = |r: &RunCost| events as f64 / r.cpu;
    let spread = match (runs.last(), runs.first()) {
        (Some(slowest), Some(fastest)) if runs.len() > 1 => {
            format!(" ({:.2}–{:.2} M over {} runs)", per_cpu(slowest) / 1e6, per_cpu(fastest) / 1e6, runs.len())
        }
        _ => String::new(),
    };
    let c = &runs[runs.len() / 2];
    // A bounded run ends only once every source is exhausted, so all `events` were generated. The
    // rows read are fewer when a query reads only some kinds of event (the generator then builds
    // only those: 2% of events are persons, 6% auctions, 92% bids), and more when it reads the
    // stream through two views (two sources) or a side table (q13); none is a failure to read.
    anyhow::ensure!(c.events > 0, "{label}: the benchmark read no rows");
    // Rates count the stream's events once, however many sources read it.
    println!(
        "| {label} | {p} | {interval} | {:.2} | {:.0} | {:.2} | {:.0}{spread} | {} | {:.0} |",
        c.wall,
        events as f64 / c.wall,
        c.cpu,
        per_cpu(c),
        c.checkpoints,
        c.peak_rss_mb
    );
    Ok(())
}

fn header() {
    println!(
        "| job | parallelism | checkpoints | wall s | events/s | CPU s | events per CPU-second | checkpoints done | peak RSS MB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
}

pub fn bench(data_dir: &Path, args: BenchArgs) -> Result<()> {
    let parallelism: Vec<u32> = args
        .parallelism
        .split(',')
        .map(|p| p.trim().parse())
        .collect::<Result<_, _>>()
        .context("--parallelism takes numbers like 1,2")?;
    let dir = data_dir.join("bench");
    std::fs::create_dir_all(&dir)?;
    let events = args.events.unwrap_or(10_000_000);
    match args.suite.as_str() {
        "chaos" => {
            let intervals = args.checkpoint_interval.as_deref().unwrap_or(crate::cli::chaos::DEFAULT_INTERVALS);
            let events = args.events.unwrap_or(crate::cli::chaos::DEFAULT_EVENTS);
            return crate::cli::chaos::chaos(&dir, &args.chaos, events, parallelism, intervals);
        }
        "windows" => {
            let intervals = args.checkpoint_interval.unwrap_or_else(|| "off,1s".into());
            let log = Log::open(&dir)?;
            let source = format!("bench-events-{}", events);
            let topic = log.topic_or_create(&source, TopicConfig::new(args.partitions))?;
            let have: u64 = topic.describe()?.iter().map(|p| p.end_offset).sum();
            if have != events {
                if have != 0 {
                    log.delete_topic(&source)?;
                }
                let topic = log.topic_or_create(&source, TopicConfig::new(args.partitions))?;
                eprintln!("generating {} events into topic '{source}'...", events);
                sample::fill_topic(&topic, events, 7, 1_000, 1)?;
            }
            let bytes: u64 = log.topic(&source)?.describe()?.iter().map(|p| p.size_bytes).sum();
            println!(
                "benchmark: tumbling 10 s window COUNT/SUM per user (1,000 users, 1 event per ms), {} JSON events ({:.0} MB) from topic to topic",
                events,
                bytes as f64 / 1e6
            );
            header();
            for &p in &parallelism {
                for ci in intervals.split(',').map(str::trim) {
                    let sink = format!("bench-out-p{p}-{ci}");
                    if log.topic(&sink).is_ok() {
                        log.delete_topic(&sink)?;
                    }
                    let pipeline = dir.join(format!("bench-p{p}-{ci}.sql"));
                    std::fs::write(&pipeline, demo_sql(&source, &sink))?;
                    measure(&dir, "windows", pipeline, p, ci, events, args.repeat)?;
                }
            }
        }
        "nexmark" => {
            let intervals = args.checkpoint_interval.unwrap_or_else(|| "off,10s".into());
            println!(
                "benchmark: Nexmark queries on {} generated events (blackhole sinks; q10 writes CSV files under {})",
                events,
                dir.join("nexmark-output").display()
            );
            header();
            for q in args.queries.split(',').map(str::trim) {
                let (_, sql) = NEXMARK_QUERIES
                    .iter()
                    .find(|(name, _)| *name == q)
                    .with_context(|| format!("no Nexmark query {q} that Keel runs; nexmark/README.md lists them"))?;
                for &p in &parallelism {
                    for ci in intervals.split(',').map(str::trim) {
                        let pipeline = dir.join(format!("nexmark-{q}-p{p}-{ci}.sql"));
                        let mut sql = sql.replace("${SIDE_INPUT}", &side_input(&dir)?.display().to_string());
                        if sql.contains("${OUTPUT_DIR}") {
                            let out = output_dir(&dir, &format!("{q}-p{p}-{ci}"))?;
                            sql = sql.replace("${OUTPUT_DIR}", &out.display().to_string());
                        }
                        std::fs::write(
                            &pipeline,
                            format!("{}\n{sql}", NEXMARK_DDL.replace("${EVENTS}", &events.to_string())),
                        )?;
                        measure(&dir, &format!("nexmark {q}"), pipeline, p, ci, events, args.repeat)?;
                    }
                }
            }
        }
        other => anyhow::bail!("unknown benchmark '{other}': use windows, nexmark or chaos"),
    }
    println!("(events per CPU-second = events / (user + system CPU time): the per-core rate; peak RSS is the");
    println!(" resident memory high-water mark of that run's process)");
    Ok(())
}
