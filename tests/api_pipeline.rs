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

/// A user aggregate written in Rust: the sum of squares of BIGINTs (with retraction).
#[derive(Debug, Default)]
struct SumOfSquares(i64);

impl datafusion::logical_expr::Accumulator for SumOfSquares {
    fn update_batch(&mut self, values: &[datafusion::arrow::array::ArrayRef]) -> datafusion::error::Result<()> {
        use datafusion::arrow::array::AsArray;
        let a = values[0].as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        self.0 += a.iter().flatten().map(|v| v * v).sum::<i64>();
        Ok(())
    }
    fn retract_batch(&mut self, values: &[datafusion::arrow::array::ArrayRef]) -> datafusion::error::Result<()> {
        use datafusion::arrow::array::AsArray;
        let a = values[0].as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        self.0 -= a.iter().flatten().map(|v| v * v).sum::<i64>();
        Ok(())
    }
    fn supports_retract_batch(&self) -> bool {
        true
    }
    fn evaluate(&mut self) -> datafusion::error::Result<datafusion::common::ScalarValue> {
        Ok(datafusion::common::ScalarValue::Int64(Some(self.0)))
    }
    fn size(&self) -> usize {
        std::mem::size_of::<Self>()
    }
    fn state(&mut self) -> datafusion::error::Result<Vec<datafusion::common::ScalarValue>> {
        Ok(vec![datafusion::common::ScalarValue::Int64(Some(self.0))])
    }
    fn merge_batch(&mut self, states: &[datafusion::arrow::array::ArrayRef]) -> datafusion::error::Result<()> {
        use datafusion::arrow::array::AsArray;
        self.0 += states[0].as_primitive::<datafusion::arrow::datatypes::Int64Type>().iter().flatten().sum::<i64>();
        Ok(())
    }
}

#[test]
fn sql_can_call_a_rust_aggregate_registered_through_the_api() {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{Volatility, create_udaf};
    let seed = seed("api_udaf");
    let dir = tempfile::tempdir().unwrap();
    let (n, users, step) = (5_000u64, 20u64, 4i64);
    make_events(dir.path(), "events", 2, n, seed, users, step);
    let squares = create_udaf(
        "sum_squares",
        vec![DataType::Int64],
        std::sync::Arc::new(DataType::Int64),
        Volatility::Immutable,
        std::sync::Arc::new(|_| Ok(Box::new(SumOfSquares::default()))),
        std::sync::Arc::new(vec![DataType::Int64]),
    );
    // A window aggregate and an unwindowed (updating) one, in one statement set.
    let sql = "CREATE TABLE events (user_id VARCHAR, amount BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
      WITH ('connector' = 'topic', 'topic' = 'events');
    CREATE TABLE per_window (user_id VARCHAR, window_start TIMESTAMP(3), sq BIGINT) WITH ('connector' = 'topic', 'topic' = 'per_window');
    CREATE TABLE per_user (user_id VARCHAR, sq BIGINT) WITH ('connector' = 'topic', 'topic' = 'per_user', 'format' = 'debezium-json');
    INSERT INTO per_window SELECT user_id, window_start, sum_squares(amount)
      FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY user_id, window_start, window_end;
    INSERT INTO per_user SELECT user_id, sum_squares(amount) FROM events GROUP BY user_id;";
    let functions = keel::api::Functions { scalar: vec![], aggregate: vec![squares] };
    let opts = RunOptions { bounded: true, parallelism: 2, ..RunOptions::default() };
    let outcome = keel::api::run_sql_with_functions(sql, "udaf", dir.path(), functions, &opts).unwrap();
    assert!(matches!(outcome, keel::runtime::JobOutcome::Finished { .. }));
    let events: Vec<(String, i64, i64)> = (0..n).map(|i| keel::sample::event(seed, i, users, step)).collect();
    let mut per_user: std::collections::BTreeMap<String, i64> = Default::default();
    let mut per_window: std::collections::BTreeMap<(String, i64), i64> = Default::default();
    for (u, a, ts) in &events {
        *per_user.entry(u.clone()).or_default() += a * a;
        *per_window.entry((u.clone(), ts.div_euclid(10_000) * 10_000)).or_default() += a * a;
    }
    let got: std::collections::BTreeMap<String, i64> = replay_changelog(topic_rows(dir.path(), "per_user"))
        .iter()
        .map(|r| (r["user_id"].as_str().unwrap().to_string(), r["sq"].as_i64().unwrap()))
        .collect();
    assert_eq!(got, per_user);
    let got = topic_rows(dir.path(), "per_window");
    assert_eq!(got.len(), per_window.len());
    let sum: i64 = got.iter().map(|r| r["sq"].as_i64().unwrap()).sum();
    assert_eq!(sum, per_window.values().sum::<i64>());
}
