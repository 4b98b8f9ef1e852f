//! Tests of how queries are cut into stages: which keyed operators join the stage before them
//! because its rows are already partitioned by their keys (`Stream::partitioned`).

use crate::plan::{PlannedInput, PlannedOp, PlannedStage};

fn stages(query: &str) -> Vec<PlannedStage> {
    let sql = format!("{}\n{query}", include_str!("../../../nexmark/ddl.sql").replace("${EVENTS}", "1000"));
    let opts = crate::PipelineOptions {
        job: "plan-test".into(),
        data_dir: ".".into(),
        parallelism: 2,
        bounded: true,
        udfs: vec![],
        udafs: vec![],
    };
    let planned = crate::plan(&sql, &opts).map_err(|e| e.to_string()).unwrap();
    planned.inserts[0].stages.clone()
}

/// For each stage, whether it holds a join and whether it holds a Top-N, and how rows reach it.
fn shape(stages: &[PlannedStage]) -> Vec<(bool, bool, &'static str)> {
    stages
        .iter()
        .map(|s| {
            let has = |f: fn(&PlannedOp) -> bool| s.ops.iter().any(f);
            let input = match s.input {
                PlannedInput::Source(_) => "source",
                PlannedInput::Exchange { .. } => "exchange",
                PlannedInput::Forward { .. } => "forward",
                PlannedInput::Join { .. } => "join",
            };
            (has(|o| matches!(o, PlannedOp::Join(..))), has(|o| matches!(o, PlannedOp::Rank(_))), input)
        })
        .collect()
}

const SINK: &str = "CREATE TABLE out_t (id BIGINT, bidder BIGINT, price BIGINT) WITH ('connector' = 'blackhole');";

fn top_bid(partition: &str) -> String {
    format!(
        "{SINK}
INSERT INTO out_t SELECT id, bidder, price FROM (
  SELECT A.id, B.bidder, B.price, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY B.price DESC) AS rn
  FROM auction A, bid B WHERE A.id = B.auction) WHERE rn <= 1;"
    )
}

#[test]
fn nexmark_q9_ranks_in_the_joins_stage() {
    let got = shape(&stages(include_str!("../../../nexmark/q9.sql")));
    let joins: Vec<_> = got.iter().filter(|s| s.0).collect();
    assert_eq!(joins, [&(true, true, "join")], "the top-1 per auction runs in the join's stage: {got:?}");
    assert!(!got.iter().any(|s| s.2 == "exchange"), "no exchange after the join: {got:?}");
}

#[test]
fn a_top_n_on_the_join_key_under_another_name_is_chained() {
    // Partitioned by the left key, with the partition column renamed by a projection on the way.
    let query = format!(
        "{SINK}
INSERT INTO out_t SELECT aid, bidder, price FROM (
  SELECT aid, bidder, price, ROW_NUMBER() OVER (PARTITION BY aid ORDER BY price DESC) AS rn
  FROM (SELECT B.price, A.id AS aid, B.bidder FROM auction A JOIN bid B ON A.id = B.auction)) WHERE rn <= 1;"
    );
    let got = shape(&stages(&query));
    assert!(got.contains(&(true, true, "join")), "{got:?}");
}

#[test]
fn a_top_n_on_other_columns_starts_its_own_stage() {
    for partition in ["B.bidder", "A.id, B.bidder"] {
        let got = shape(&stages(&top_bid(partition)));
        assert!(got.contains(&(true, false, "join")), "{partition}: {got:?}");
        assert!(got.contains(&(false, true, "exchange")), "{partition}: the Top-N is behind an exchange: {got:?}");
    }
    // The same query on the join key is chained: the difference is the partition alone.
    assert!(shape(&stages(&top_bid("A.id"))).contains(&(true, true, "join")));
    // Unless the join keeps right rows without a partner: those have NULL in A.id and stay on
    // the subtask of their own key.
    let with_join = |join: &str| {
        let q = top_bid("A.id").replace(
            "FROM auction A, bid B WHERE A.id = B.auction",
            &format!("FROM auction A {join} bid B ON A.id = B.auction"),
        );
        assert!(q.contains(join));
        shape(&stages(&q))
    };
    for join in ["RIGHT JOIN", "FULL JOIN"] {
        let got = with_join(join);
        assert!(got.contains(&(false, true, "exchange")), "{join}: the Top-N is behind an exchange: {got:?}");
    }
    assert!(with_join("LEFT JOIN").contains(&(true, true, "join")), "a left join keeps the left key");
}

#[test]
fn nexmark_q6_is_refused_as_flink_refuses_it() {
    // q6 (average price of a seller's last 10 closed auctions): an OVER aggregation over the
    // updating result of a GROUP BY (nexmark/README.md lists it as not run, with this reason).
    let sql = format!(
        "{}
CREATE TABLE q6 (seller BIGINT, avg_price BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO q6 SELECT Q.seller, AVG(Q.final) OVER (PARTITION BY Q.seller ORDER BY Q.dateTime ROWS BETWEEN 10 PRECEDING AND CURRENT ROW)
FROM (SELECT MAX(B.price) AS final, A.seller, MAX(B.dateTime) AS dateTime FROM auction AS A, bid AS B
      WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.expires GROUP BY A.id, A.seller) AS Q;",
        include_str!("../../../nexmark/ddl.sql").replace("${EVENTS}", "1000")
    );
    let opts = crate::PipelineOptions {
        job: "q6".into(),
        data_dir: ".".into(),
        parallelism: 1,
        bounded: true,
        udfs: vec![],
        udafs: vec![],
    };
    let err = crate::plan(&sql, &opts).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("an OVER aggregation over an updating input is not supported"), "{err}");
}

#[test]
fn time_bounded_join_sides_carry_their_tables_late_records_option() {
    let late_tables = |query: &str| -> Vec<Option<String>> {
        let stages = stages(query);
        let op = stages.iter().flat_map(|s| &s.ops).find(|o| matches!(o, PlannedOp::Join(..)));
        match op {
            Some(PlannedOp::Join(_, tables)) => tables.iter().map(|t| t.as_ref().map(|t| t.name.clone())).collect(),
            _ => panic!("no join planned"),
        }
    };
    // An interval join: both sides are bounded by time, and both read the generator's table.
    let interval = format!(
        "{SINK}
INSERT INTO out_t SELECT A.id, B.bidder, B.price FROM auction A, bid B
WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.dateTime + INTERVAL '10' SECOND;"
    );
    assert_eq!(late_tables(&interval), [Some("datagen".to_string()), Some("datagen".to_string())]);
    // q9's regular join keeps its rows (no row is ever late), so no side has a late-row output.
    assert_eq!(late_tables(include_str!("../../../nexmark/q9.sql")), [None, None]);
}

#[test]
fn statement_sets_in_flinks_brackets_plan_their_inserts_as_one_job() {
    let opts = crate::PipelineOptions {
        job: "set".into(),
        data_dir: ".".into(),
        parallelism: 1,
        bounded: true,
        udfs: vec![],
        udafs: vec![],
    };
    let ddl = format!("{}\n{SINK}\n", include_str!("../../../nexmark/ddl.sql").replace("${EVENTS}", "1000"));
    let insert = "INSERT INTO out_t SELECT auction, bidder, price FROM bid";
    let plan = |body: String| crate::plan(&format!("{ddl}{body}"), &opts).map_err(|e| e.to_string());
    for body in [
        format!("EXECUTE STATEMENT SET BEGIN {insert}; {insert}; END;"),
        format!("BEGIN STATEMENT SET; {insert}; {insert}; END;"),
        format!("{insert}; {insert};"),
    ] {
        assert_eq!(plan(body.clone()).map(|p| p.inserts.len()), Ok(2), "{body}");
    }
    let refused = |body: String, expected: &str| {
        let err = plan(body.clone()).err().unwrap_or_default();
        assert!(err.contains(expected), "{body}: {err}");
    };
    refused(format!("BEGIN STATEMENT SET; {insert};"), "this STATEMENT SET is not closed: end it with END;");
    refused(format!("{insert}; END;"), "END without a STATEMENT SET to close");
    refused(
        format!("BEGIN STATEMENT SET; SET 'table.exec.state.ttl' = '1 h'; {insert}; END;"),
        "a SET statement inside a STATEMENT SET",
    );
    refused(format!("BEGIN STATEMENT SET; BEGIN STATEMENT SET; {insert}; END;"), "inside another one");
}
