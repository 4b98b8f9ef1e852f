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

#[test]
fn sql_can_call_a_rust_function_registered_through_the_api() {
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let seed = seed("api_udf");
    let dir = tempfile::tempdir().unwrap();
    let (n, users, step) = (5_000u64, 20u64, 4i64);
    make_events(dir.path(), "events", 2, n, seed, users, step);
    // A user function: the number in a "user-N" id.
    let user_number = create_udf(
        "user_number",
        vec![DataType::Utf8],
        DataType::Int64,
        Volatility::Immutable,
        std::sync::Arc::new(|args: &[ColumnarValue]| {
            let a = args[0].clone().into_array(1)?;
            let out: Int64Array =
                a.as_string::<i32>().iter().map(|s| s.and_then(|s| s.strip_prefix("user-")?.parse().ok())).collect();
            Ok(ColumnarValue::Array(std::sync::Arc::new(out)))
        }),
    );
    let sql = "CREATE TABLE events (user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
      WITH ('connector' = 'topic', 'topic' = 'events');
    CREATE TABLE out_t (num BIGINT, amount BIGINT) WITH ('connector' = 'topic', 'topic' = 'out');
    INSERT INTO out_t SELECT user_number(user_id), amount FROM events WHERE user_number(user_id) < 5;";
    let outcome = keel::api::run_sql(
        sql,
        "udf",
        dir.path(),
        vec![user_number],
        &RunOptions { bounded: true, ..RunOptions::default() },
    )
    .unwrap();
    assert!(matches!(outcome, keel::runtime::JobOutcome::Finished { .. }));
    let mut want: Vec<(i64, i64)> = (0..n)
        .map(|i| keel::sample::event(seed, i, users, step))
        .filter_map(|(u, a, _)| {
            u.strip_prefix("user-").and_then(|x| x.parse::<i64>().ok()).filter(|x| *x < 5).map(|x| (x, a))
        })
        .collect();
    let mut got: Vec<(i64, i64)> = topic_rows(dir.path(), "out")
        .iter()
        .map(|r| (r["num"].as_i64().unwrap(), r["amount"].as_i64().unwrap()))
        .collect();
    want.sort();
    got.sort();
    assert!(!want.is_empty());
    assert_eq!(got, want);
}
