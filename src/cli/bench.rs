//! `keel bench`: throughput benchmarks, in-process, reported as a Markdown table. `windows` runs
//! the demo's windowed pipeline from a topic of JSON events to a topic; `nexmark` runs the Nexmark
//! queries Keel supports on the generator. Both report events per second of wall time and per
//! CPU-second (the per-core rate), the checkpoints taken and the peak memory.

use crate::cli::demo::demo_sql;
use crate::cli::run::{RunArgs, run_pipeline};
use anyhow::{Context, Result};
use clap::Args;
use keel::sample;
use keel_log::{Log, TopicConfig};
use keel_runtime::Metrics;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

#[derive(Args)]
pub struct BenchArgs {
    /// `windows` (tumbling-window SQL from a JSON topic to a topic) or `nexmark`.
    #[arg(default_value = "windows")]
    suite: String,
    /// Events per run.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Parallelism values to measure, comma-separated.
    #[arg(long, default_value = "1,2")]
    parallelism: String,
    /// Checkpoint intervals to measure, comma-separated (`off` for none); default `off,1s` for
    /// windows and `off,10s` for nexmark.
    #[arg(long)]
    checkpoint_interval: Option<String>,
    /// Partitions of the windows benchmark's topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Nexmark queries to run, comma-separated.
    #[arg(long, default_value = "q0,q1,q2,q11,q14,q21,q22")]
    queries: String,
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass; a zeroed rusage is a valid initial value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

const NEXMARK_DDL: &str = include_str!("../../nexmark/ddl.sql");
const NEXMARK_QUERIES: &[(&str, &str)] = &[
    ("q0", include_str!("../../nexmark/q0.sql")),
    ("q1", include_str!("../../nexmark/q1.sql")),
    ("q2", include_str!("../../nexmark/q2.sql")),
    ("q7", include_str!("../../nexmark/q7.sql")),
    ("q11", include_str!("../../nexmark/q11.sql")),
    ("q14", include_str!("../../nexmark/q14.sql")),
    ("q21", include_str!("../../nexmark/q21.sql")),
    ("q22", include_str!("../../nexmark/q22.sql")),
];

/// Runs one pipeline file fresh and prints its table row.
fn measure(dir: &Path, label: &str, pipeline: std::path::PathBuf, p: u32, interval: &str, events: u64) -> Result<()> {
    let run_args = RunArgs {
        pipeline,
        parallelism: Some(p),
        checkpoint_interval: interval.to_string(),
        checkpoint_timeout: "60s".into(),
        retained_checkpoints: 3,
        bounded: true,
        fresh: true,
        name: None,
        restart_attempts: 0,
        restart_window: "10m".into(),
        quiet: true,
    };
    let cpu_before = cpu_seconds();
    let report = run_pipeline(dir, &run_args, Arc::new(AtomicBool::new(false)))?;
    let cpu = cpu_seconds() - cpu_before;
    let secs = report.elapsed.as_secs_f64();
    let n = Metrics::get(&report.metrics.records_in);
    anyhow::ensure!(n == events, "{label}: the benchmark read {n} events, expected {events}");
    println!(
        "| {label} | {p} | {interval} | {secs:.2} | {:.0} | {cpu:.2} | {:.0} | {} | {} |",
        n as f64 / secs,
        n as f64 / cpu,
        Metrics::get(&report.metrics.checkpoints_completed),
        peak_rss_mb().map(|m| format!("{m:.0}")).unwrap_or_else(|| "?".into())
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
    match args.suite.as_str() {
        "windows" => {
            let intervals = args.checkpoint_interval.unwrap_or_else(|| "off,1s".into());
            let log = Log::open(&dir)?;
            let source = format!("bench-events-{}", args.events);
            let topic = log.topic_or_create(&source, TopicConfig::new(args.partitions))?;
            let have: u64 = topic.describe()?.iter().map(|p| p.end_offset).sum();
            if have != args.events {
                if have != 0 {
                    log.delete_topic(&source)?;
                }
                let topic = log.topic_or_create(&source, TopicConfig::new(args.partitions))?;
                eprintln!("generating {} events into topic '{source}'...", args.events);
                sample::fill_topic(&topic, args.events, 7, 1_000, 1)?;
            }
            let bytes: u64 = log.topic(&source)?.describe()?.iter().map(|p| p.size_bytes).sum();
            println!(
                "benchmark: tumbling 10 s window COUNT/SUM per user (1,000 users, 1 event per ms), {} JSON events ({:.0} MB) from topic to topic",
                args.events,
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
                    measure(&dir, "windows", pipeline, p, ci, args.events)?;
                }
            }
        }
        "nexmark" => {
            let intervals = args.checkpoint_interval.unwrap_or_else(|| "off,10s".into());
            println!("benchmark: Nexmark queries on {} generated events (blackhole sinks)", args.events);
            header();
            for q in args.queries.split(',').map(str::trim) {
                let (_, sql) = NEXMARK_QUERIES
                    .iter()
                    .find(|(name, _)| *name == q)
                    .with_context(|| format!("no Nexmark query {q} that Keel runs; nexmark/README.md lists them"))?;
                for &p in &parallelism {
                    for ci in intervals.split(',').map(str::trim) {
                        let pipeline = dir.join(format!("nexmark-{q}-p{p}-{ci}.sql"));
                        std::fs::write(
                            &pipeline,
                            format!("{}\n{sql}", NEXMARK_DDL.replace("${EVENTS}", &args.events.to_string())),
                        )?;
                        measure(&dir, &format!("nexmark {q}"), pipeline, p, ci, args.events)?;
                    }
                }
            }
        }
        other => anyhow::bail!("unknown benchmark '{other}': use windows or nexmark"),
    }
    println!("(events per CPU-second = events / (user + system CPU time): the per-core rate; peak RSS is the");
    println!(" process high-water mark so far, so later rows include earlier ones)");
    Ok(())
}
