//! `keel demo` (the first thing a newcomer runs) and `keel bench` (the throughput benchmark of
//! the same pipeline).

use crate::cli::run::{RunArgs, run_pipeline};
use anyhow::{Context, Result};
use clap::Args;
use keel::sample;
use keel_log::{Log, TopicConfig};
use keel_runtime::{JobOutcome, Metrics};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The demo's pipeline: per-user totals in 10-second tumbling windows.
pub fn demo_sql(source_topic: &str, sink_topic: &str) -> String {
    format!(
        "-- Keel demo: per-user event counts and totals in 10-second tumbling windows.
CREATE TABLE events (
  user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'topic', 'topic' = '{source_topic}', 'format' = 'json');

CREATE TABLE totals (
  user_id VARCHAR, window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT, total BIGINT
) WITH ('connector' = 'topic', 'topic' = '{sink_topic}', 'format' = 'json');

INSERT INTO totals
SELECT user_id, window_start, window_end, COUNT(*) AS n, SUM(amount) AS total
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY user_id, window_start, window_end;
"
    )
}

#[derive(Args)]
pub struct DemoArgs {
    /// How many sample events to generate (only when the demo topic is empty): 200 users, one
    /// event every 2 ms of event time.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    #[arg(long, short = 'p')]
    parallelism: Option<u32>,
    /// Start over: delete the demo's topics and job state.
    #[arg(long)]
    fresh: bool,
}

pub fn demo(data_dir: &Path, args: DemoArgs) -> Result<()> {
    let log = Log::open(data_dir)?;
    if args.fresh {
        for t in ["demo-events", "demo-totals", "demo-dead-letter"] {
            if log.topic(t).is_ok() {
                log.delete_topic(t)?;
            }
        }
    }
    let topic = log.topic_or_create("demo-events", TopicConfig::new(4))?;
    if topic.describe()?.iter().all(|p| p.end_offset == 0) {
        eprintln!("generating {} sample events into topic 'demo-events' (4 partitions)...", args.events);
        sample::fill_topic(&topic, args.events, 42, 200, 2)?;
    }
    let dir = data_dir.join("demo");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pipeline = dir.join("demo.sql");
    std::fs::write(&pipeline, demo_sql("demo-events", "demo-totals"))
        .with_context(|| format!("writing {}", pipeline.display()))?;
    eprintln!(
        "running {} (Ctrl-C stops it with a final checkpoint; run `keel demo` again to resume)",
        pipeline.display()
    );
    let run_args = RunArgs {
        pipeline,
        parallelism: args.parallelism,
        checkpoint_interval: "1s".into(),
        checkpoint_timeout: "60s".into(),
        retained_checkpoints: 3,
        bounded: true,
        fresh: args.fresh,
        from_checkpoint: None,
        no_checkpoint_parity: false,
        name: Some("demo".into()),
        restart_attempts: 10,
        restart_window: "10m".into(),
        quiet: false,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || {
        if s.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping with a final checkpoint...");
    })
    .context("installing the Ctrl-C handler")?;
    let report = run_pipeline(data_dir, &run_args, stop)?;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let read = Metrics::get(&report.metrics.records_in);
    eprintln!("read {read} events in {secs:.2}s ({:.0} events/s) in this run", read as f64 / secs);
    if let Some(JobOutcome::Stopped { checkpoint }) = report.outcome {
        eprintln!("stopped after checkpoint {checkpoint}; run `keel demo` again to resume where it stopped");
        return Ok(());
    }
    let totals = log.topic("demo-totals")?;
    let rows: u64 = totals.describe()?.iter().map(|p| p.end_offset).sum();
    println!("results in topic 'demo-totals': {rows} rows (one per user and 10-second window); a few from the middle:");
    let mut shown = 0;
    for p in 0..totals.partitions() {
        let mid = totals.partition_info(p)?.end_offset / 2;
        let mut r = totals.reader(p, mid)?;
        while shown < 10 {
            let Some(chunk) = r.read(64 << 10)? else { break };
            chunk.for_each(|rec| {
                if shown < 10 {
                    println!("  {}", String::from_utf8_lossy(rec.value));
                    shown += 1;
                }
            })?;
        }
    }
    println!("see them all with: keel consume demo-totals --data-dir {}", data_dir.display());
    Ok(())
}
