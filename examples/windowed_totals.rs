//! The Rust API: per-user totals in 10-second tumbling windows, from a topic to a topic, with
//! checkpoints every second and exactly-once output. Run it with
//! `cargo run --example windowed_totals -- ./example-data` (it generates its own events).

use datafusion::prelude::{col, lit};
use keel::api::{Agg, PipelineBuilder, RunOptions, event_schema};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "./example-data".into()));
    let log = keel::log::Log::open(&data_dir)?;
    if log.topic("events").is_err() {
        let topic = log.create_topic("events", keel::log::TopicConfig::new(2))?;
        keel::sample::fill_topic(&topic, 100_000, 1, 100, 10)?;
    }
    let pipeline = PipelineBuilder::topic_source("example", &data_dir, "events", event_schema(), "ts", 1_000)?
        .filter(col("amount").gt(lit(100)))?
        .tumble(10_000)?
        .aggregate(
            vec![col("user_id")],
            vec![Agg::count_star("n"), Agg::sum(col("amount"), "total"), Agg::max(col("amount"), "biggest")],
        )?
        .to_topic("example-totals")?;
    let outcome = pipeline.run(&RunOptions { parallelism: 2, bounded: true, ..RunOptions::default() })?;
    println!("{outcome:?}; read the results with: keel consume example-totals --data-dir {}", data_dir.display());
    Ok(())
}
