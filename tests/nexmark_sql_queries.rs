//! The Nexmark queries (all but q10, whose files `file_sink_partitioned.rs` checks, and q12, whose
//! windows follow the wall clock), run by Keel on a small generated stream, straight through and
//! with the process SIGKILLed and restored, and compared with the same computation done by
//! DataFusion's batch engine over every person, auction and bid of that stream. Updating results
//! are written as debezium-json and replayed into the final table before comparing. The batch
//! session has Keel's Flink functions (`SPLIT_INDEX`, `REGEXP_EXTRACT`, `count_char`, ...), whose
//! own semantics are tested beside them and in golden cases with expected rows written out.

mod common;
use common::*;
use std::sync::Arc;

const EVENTS: u64 = 20_000;

fn nexmark_sql(name: &str) -> String {
    let root = manifest_dir().join("nexmark");
    // 500 events per second of event time: 40 s of events, so windows have something to close.
    let ddl = std::fs::read_to_string(root.join("ddl.sql"))
        .unwrap()
        .replace("${EVENTS}", &EVENTS.to_string())
        .replace("'first-event.rate' = '10000000'", "'first-event.rate' = '500'");
    let q = match name {
        "all_bids" => "CREATE TABLE all_bids (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR)
         WITH ('connector' = 'blackhole');
         INSERT INTO all_bids SELECT * FROM bid;"
            .to_string(),
        "all_persons" => "CREATE TABLE all_persons (id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, state VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR)
         WITH ('connector' = 'blackhole');
         INSERT INTO all_persons SELECT * FROM person;"
            .to_string(),
        "all_auctions" => "CREATE TABLE all_auctions (id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT, dateTime TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR)
         WITH ('connector' = 'blackhole');
         INSERT INTO all_auctions SELECT * FROM auction;"
            .to_string(),
        _ => std::fs::read_to_string(root.join(format!("{name}.sql"))).unwrap(),
    };
    let q =
        q.replace("'connector' = 'blackhole'", "'connector' = 'topic', 'topic' = 'out', 'format' = 'debezium-json'");
    let q = q.replace("${SIDE_INPUT}", &side_input().display().to_string());
    format!("{ddl}\n{q}")
}

/// q13's side input: `key,value` rows for keys 0..10,000, in a directory of its own.
fn side_input() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-nexmark-side-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text: String = (0..10_000).map(|k| format!("{k},v{}\n", k * 7 % 10_000)).collect();
    std::fs::write(dir.join("side_input.csv"), text).unwrap();
    dir
}

/// Runs a query to the end and returns its final table.
fn run_query(name: &str, parallelism: &str) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join(format!("{name}.sql"));
    std::fs::write(&sql, nexmark_sql(name)).unwrap();
    run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--quiet", "-p", parallelism]));
    replay_changelog(topic_rows(dir.path(), "out"))
}

/// Runs a query with the process SIGKILLed at seeded fault points (while checkpointing and
/// committing) and restarted, at parallelism 1 or 2, until it finishes; returns its final table.
fn run_query_with_kills(name: &str, rng: &mut Rng) -> (Vec<serde_json::Value>, u32) {
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join(format!("{name}.sql"));
    std::fs::write(&sql, nexmark_sql(name)).unwrap();
    let points = ["checkpoint.before-manifest", "checkpoint.after-manifest", "sink.commit"];
    let mut kills = 0;
    for attempt in 0.. {
        assert!(attempt < 30, "{name}: did not finish after 30 restarts");
        let mut cmd = keel(dir.path());
        cmd.args(["run", sql.to_str().unwrap(), "--quiet", "--restart-attempts", "0", "--checkpoint-interval", "50ms"])
            .arg("-p")
            .arg((1 + rng.below(2)).to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        if kills < 2 {
            // The first kill comes at the first hit, which every run reaches (the final checkpoint
            // and its commit at least); a later one may come later.
            let at = if kills == 0 { 1 } else { 1 + rng.below(3) };
            cmd.env("KEEL_FAULTS", format!("{}=kill@{at}", points[rng.below(3) as usize]));
        }
        let out = cmd.output().unwrap();
        if out.status.success() {
            break;
        }
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(9), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        kills += 1;
    }
    assert!(kills >= 1, "{name}: no kill landed");
    (replay_changelog(topic_rows(dir.path(), "out")), kills)
}

/// A DataFusion session holding `person`, `auction` and `bid` from Keel's dumps of the stream.
fn batch_session() -> datafusion::prelude::SessionContext {
    let ctx = datafusion::prelude::SessionContext::new_with_config({
        let mut c = datafusion::prelude::SessionConfig::new().with_target_partitions(1);
        // Identifiers as written (camelCase columns), as in Keel.
        c.options_mut().sql_parser.enable_ident_normalization = false;
        c
    });
    for f in keel::sql::functions::flink_aggregates() {
        ctx.register_udaf(f);
    }
    for f in keel::sql::scalar::flink_scalars() {
        ctx.register_udf(f);
    }
    for (table, dump) in [("bid", "all_bids"), ("person", "all_persons"), ("auction", "all_auctions")] {
        let sql = nexmark_sql(dump);
        let toks = keel::sql::script::tokenize(&sql).unwrap();
        let def = keel::sql::script::split_statements(toks)
            .into_iter()
            .filter_map(|s| keel::sql::script::parse_create_table(&s).ok())
            .find(|d| d.name == dump)
            .unwrap();
        let schema = keel::sql::planner::table_schema(&def);
        let rows: Vec<String> = run_query(dump, "2").iter().map(|v| v.to_string()).collect();
        assert!(!rows.is_empty(), "no {table} rows generated");
        let mut decoder = keel::connectors::json::JsonDecoder::new(schema.clone()).unwrap();
        let values: Vec<&[u8]> = rows.iter().map(|l| l.as_bytes()).collect();
        let batch = decoder.decode(&values).unwrap().batch;
        let mem = datafusion::catalog::MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        ctx.register_table(table, Arc::new(mem)).unwrap();
    }
    ctx
}

fn batch(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let batches = rt.block_on(async { ctx.sql(sql).await?.collect().await }).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = vec![];
    for b in &batches {
        for r in 0..b.num_rows() {
            let mut s = String::new();
            keel::connectors::json::encode_row(b, r, &mut s);
            out.push(serde_json::from_str(&s).unwrap());
        }
    }
    out
}

/// The rows projected to `cols` (in that order), as sorted strings; floats rounded.
fn view(rows: &[serde_json::Value], cols: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|c| match &r[*c] {
                    serde_json::Value::Number(n) if n.is_f64() => format!("{:.6}", n.as_f64().unwrap()),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    v.sort();
    v
}

/// Checks a query straight through and across kills against the batch computation.
fn check(ctx: &datafusion::prelude::SessionContext, rng: &mut Rng, query: &str, batch_sql: &str, cols: &[&str]) {
    let want = view(&batch(ctx, batch_sql), cols);
    assert!(!want.is_empty(), "{query}: the batch result is empty, which proves nothing");
    let compare = |how: &str, got: Vec<String>| {
        if got != want {
            let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).take(5).collect();
            let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).take(5).collect();
            panic!(
                "{query} ({how}): {} rows, expected {}; missing {missing:?}; unexpected {extra:?}",
                got.len(),
                want.len()
            );
        }
    };
    compare("straight", view(&run_query(query, "2"), cols));
    let (killed, kills) = run_query_with_kills(query, rng);
    compare(&format!("after {kills} kill(s)"), view(&killed, cols));
    println!("{query}: ok ({} rows; straight, and with {kills} kill(s))", want.len());
}

/// The five windows (10 s, sliding every 2 s) each bid falls in, as a table `hb(auction, ws)`.
const HOP_BIDS: &str = "(SELECT auction, date_bin(INTERVAL '2 seconds', dateTime) AS ws FROM bid
    UNION ALL SELECT auction, date_bin(INTERVAL '2 seconds', dateTime) - INTERVAL '2 seconds' AS ws FROM bid
    UNION ALL SELECT auction, date_bin(INTERVAL '2 seconds', dateTime) - INTERVAL '4 seconds' AS ws FROM bid
    UNION ALL SELECT auction, date_bin(INTERVAL '2 seconds', dateTime) - INTERVAL '6 seconds' AS ws FROM bid
    UNION ALL SELECT auction, date_bin(INTERVAL '2 seconds', dateTime) - INTERVAL '8 seconds' AS ws FROM bid)";

/// q12 counts in windows of the wall clock, so its rows depend on timing; what does not: every
/// bid is counted once, windows are 10 s long and aligned, and they lie in the test's run time.
#[test]
fn processing_time_windows_count_every_bid_once() {
    let started = keel_types_now_ms();
    let rows = run_query("q12", "2");
    let finished = keel_types_now_ms();
    let bids = run_query("all_bids", "1").len() as i64;
    let total: i64 = rows.iter().map(|r| r["bid_count"].as_i64().unwrap()).sum();
    assert_eq!(total, bids, "every bid counts in exactly one processing-time window");
    for r in &rows {
        let (s, e) = (iso_ms(r["starttime"].as_str().unwrap()), iso_ms(r["endtime"].as_str().unwrap()));
        assert_eq!(e - s, 10_000);
        assert_eq!(s % 10_000, 0);
        assert!(e > started && s <= finished, "window [{s}, {e}) outside the run [{started}, {finished}]");
    }
}

fn keel_types_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Epoch milliseconds of `YYYY-MM-DDTHH:MM:SS.mmmZ`, through DataFusion's parser.
fn iso_ms(t: &str) -> i64 {
    let v = arrow::compute::cast(
        &(std::sync::Arc::new(arrow::array::StringArray::from(vec![t])) as arrow::array::ArrayRef),
        &arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
    )
    .unwrap();
    v.as_any().downcast_ref::<arrow::array::TimestampMillisecondArray>().unwrap().value(0)
}

#[test]
fn stateless_and_window_queries_match_across_kills() {
    let rng = &mut Rng(seed("nexmark_sql_queries_stateless"));
    let ctx = batch_session();
    check(
        &ctx,
        rng,
        "q0",
        "SELECT auction, bidder, price, dateTime, extra FROM bid",
        &["auction", "bidder", "price", "dateTime", "extra"],
    );
    check(
        &ctx,
        rng,
        "q1",
        "SELECT auction, bidder, CAST(0.908 * price AS DECIMAL(23, 3)) AS price, dateTime FROM bid",
        &["auction", "bidder", "price", "dateTime"],
    );
    check(&ctx, rng, "q2", "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0", &["auction", "price"]);
    check(
        &ctx,
        rng,
        "q21",
        "SELECT auction, bidder, price, channel,
           CASE lower(channel) WHEN 'apple' THEN '0' WHEN 'google' THEN '1' WHEN 'facebook' THEN '2'
             WHEN 'baidu' THEN '3' ELSE REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) END AS channel_id
         FROM bid WHERE lower(channel) IN ('apple', 'google', 'facebook', 'baidu')
           OR REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) IS NOT NULL",
        &["auction", "bidder", "price", "channel", "channel_id"],
    );
    check(
        &ctx,
        rng,
        "q22",
        "SELECT auction, bidder, price, channel, SPLIT_INDEX(url, '/', 3) AS dir1, SPLIT_INDEX(url, '/', 4) AS dir2,
           SPLIT_INDEX(url, '/', 5) AS dir3 FROM bid",
        &["auction", "bidder", "price", "channel", "dir1", "dir2", "dir3"],
    );
    check(
        &ctx,
        rng,
        "q14",
        "SELECT auction, bidder, CASE WHEN HOUR(dateTime) >= 8 AND HOUR(dateTime) <= 18 THEN 'dayTime'
             WHEN HOUR(dateTime) <= 6 OR HOUR(dateTime) >= 20 THEN 'nightTime' ELSE 'otherTime' END AS bidTimeType,
           dateTime, extra, count_char(extra, 'c') AS c_counts
         FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000",
        &["auction", "bidder", "bidTimeType", "dateTime", "extra", "c_counts"],
    );
    // The highest bids of each 10 s tumbling window (ties all kept, as RANK() = 1 keeps them).
    check(
        &ctx,
        rng,
        "q7",
        "SELECT b.auction, b.price, b.bidder, b.dateTime, b.extra FROM bid b JOIN (
           SELECT date_bin(INTERVAL '10 seconds', dateTime) AS ws, MAX(price) AS top FROM bid GROUP BY 1) m
         ON date_bin(INTERVAL '10 seconds', b.dateTime) = m.ws AND b.price = m.top",
        &["auction", "price", "bidder", "dateTime", "extra"],
    );
    // Sessions per bidder with a 10 s gap: a bid starts a new session unless it comes at most 10 s
    // after the bidder's previous one (windows that touch merge, as in Flink).
    check(
        &ctx,
        rng,
        "q11",
        "SELECT bidder, COUNT(*) AS bid_count, MIN(dateTime) AS starttime,
           MAX(dateTime) + INTERVAL '10 seconds' AS endtime
         FROM (SELECT bidder, dateTime, SUM(fresh) OVER (PARTITION BY bidder ORDER BY dateTime, fresh DESC
                 ROWS UNBOUNDED PRECEDING) AS session
               FROM (SELECT bidder, dateTime,
                       CASE WHEN CAST(dateTime AS BIGINT) - LAG(CAST(dateTime AS BIGINT))
                         OVER (PARTITION BY bidder ORDER BY dateTime) <= 10000 THEN 0 ELSE 1 END AS fresh
                     FROM bid))
         GROUP BY bidder, session",
        &["bidder", "bid_count", "starttime", "endtime"],
    );
}

#[test]
fn join_update_and_top_n_queries_match_the_batch_computation() {
    let rng = &mut Rng(seed("nexmark_sql_queries"));
    let ctx = batch_session();
    check(
        &ctx,
        rng,
        "q3",
        "SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN person AS P ON A.seller = P.id
         WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')",
        &["name", "city", "state", "id"],
    );
    check(
        &ctx,
        rng,
        "q4",
        "SELECT Q.category AS id, AVG(Q.final) AS final FROM (
           SELECT MAX(B.price) AS final, A.category FROM auction A, bid B
           WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.expires GROUP BY A.id, A.category) Q
         GROUP BY Q.category",
        &["id", "final"],
    );
    check(
        &ctx,
        rng,
        "q5",
        &format!(
            "SELECT a.auction, a.num FROM
               (SELECT auction, ws, COUNT(*) AS num FROM {HOP_BIDS} GROUP BY auction, ws) a
             JOIN (SELECT ws, MAX(num) AS maxn FROM (SELECT auction, ws, COUNT(*) AS num FROM {HOP_BIDS} GROUP BY auction, ws) GROUP BY ws) m
             ON a.ws = m.ws AND a.num >= m.maxn"
        ),
        &["auction", "num"],
    );
    check(
        &ctx,
        rng,
        "q8",
        "SELECT P.id, P.name, P.ws AS stime FROM
           (SELECT id, name, date_bin(INTERVAL '10 seconds', dateTime) AS ws FROM person GROUP BY 1, 2, 3) P
         JOIN (SELECT seller, date_bin(INTERVAL '10 seconds', dateTime) AS ws FROM auction GROUP BY 1, 2) A
         ON P.id = A.seller AND P.ws = A.ws",
        &["id", "name", "stime"],
    );
    // Ties on price and time would make the winner arbitrary; compare what does not depend on it.
    check(
        &ctx,
        rng,
        "q9",
        "SELECT id, price, bid_dateTime, category FROM (
           SELECT A.id, A.category, B.price, B.dateTime AS bid_dateTime,
             ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.dateTime ASC) AS rownum
           FROM auction A, bid B WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.expires)
         WHERE rownum <= 1",
        &["id", "price", "bid_dateTime", "category"],
    );
    let bands = "COUNT(*) AS total_bids,
        COUNT(CASE WHEN price < 10000 THEN 1 END) AS rank1_bids,
        COUNT(CASE WHEN price >= 10000 AND price < 1000000 THEN 1 END) AS rank2_bids,
        COUNT(CASE WHEN price >= 1000000 THEN 1 END) AS rank3_bids";
    let distinct = "COUNT(DISTINCT bidder) AS total_bidders,
        COUNT(DISTINCT CASE WHEN price < 10000 THEN bidder END) AS rank1_bidders,
        COUNT(DISTINCT CASE WHEN price >= 10000 AND price < 1000000 THEN bidder END) AS rank2_bidders,
        COUNT(DISTINCT CASE WHEN price >= 1000000 THEN bidder END) AS rank3_bidders,
        COUNT(DISTINCT auction) AS total_auctions,
        COUNT(DISTINCT CASE WHEN price < 10000 THEN auction END) AS rank1_auctions,
        COUNT(DISTINCT CASE WHEN price >= 10000 AND price < 1000000 THEN auction END) AS rank2_auctions,
        COUNT(DISTINCT CASE WHEN price >= 1000000 THEN auction END) AS rank3_auctions";
    let q15_cols = [
        "day",
        "total_bids",
        "rank1_bids",
        "rank2_bids",
        "rank3_bids",
        "total_bidders",
        "rank1_bidders",
        "rank2_bidders",
        "rank3_bidders",
        "total_auctions",
        "rank1_auctions",
        "rank2_auctions",
        "rank3_auctions",
    ];
    let side: Vec<(i64, String)> = (0..10_000).map(|k| (k, format!("v{}", k * 7 % 10_000))).collect();
    let side = arrow::array::RecordBatch::try_from_iter(vec![
        (
            "key",
            Arc::new(arrow::array::Int64Array::from_iter_values(side.iter().map(|s| s.0))) as arrow::array::ArrayRef,
        ),
        ("value", Arc::new(arrow::array::StringArray::from_iter_values(side.iter().map(|s| s.1.clone()))) as _),
    ])
    .unwrap();
    let mem = datafusion::catalog::MemTable::try_new(side.schema(), vec![vec![side]]).unwrap();
    ctx.register_table("side_input", Arc::new(mem)).unwrap();
    check(
        &ctx,
        rng,
        "q13",
        "SELECT B.auction, B.bidder, B.price, B.dateTime, S.value FROM bid B JOIN side_input S ON B.auction % 10000 = S.key",
        &["auction", "bidder", "price", "dateTime", "value"],
    );
    check(
        &ctx,
        rng,
        "q15",
        &format!("SELECT to_char(dateTime, '%Y-%m-%d') AS day, {bands}, {distinct} FROM bid GROUP BY 1"),
        &q15_cols,
    );
    let mut q16_cols = vec!["channel", "minute"];
    q16_cols.extend(q15_cols);
    check(
        &ctx,
        rng,
        "q16",
        &format!(
            "SELECT channel, to_char(dateTime, '%Y-%m-%d') AS day, MAX(to_char(dateTime, '%H:%M')) AS minute, {bands}, {distinct}
             FROM bid GROUP BY 1, 2"
        ),
        &q16_cols,
    );
    check(
        &ctx,
        rng,
        "q17",
        &format!(
            "SELECT auction, to_char(dateTime, '%Y-%m-%d') AS day, {bands}, MIN(price) AS min_price,
               MAX(price) AS max_price, AVG(price) AS avg_price, SUM(price) AS sum_price FROM bid GROUP BY 1, 2"
        ),
        &[
            "auction",
            "day",
            "total_bids",
            "rank1_bids",
            "rank2_bids",
            "rank3_bids",
            "min_price",
            "max_price",
            "avg_price",
            "sum_price",
        ],
    );
    check(
        &ctx,
        rng,
        "q18",
        "SELECT auction, bidder, dateTime FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY dateTime DESC) AS rank_number FROM bid)
         WHERE rank_number <= 1",
        &["auction", "bidder", "dateTime"],
    );
    // Bids of equal price may swap places; the prices by rank may not.
    check(
        &ctx,
        rng,
        "q19",
        "SELECT auction, price, rank_number FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid)
         WHERE rank_number <= 10",
        &["auction", "price", "rank_number"],
    );
    check(
        &ctx,
        rng,
        "q20",
        "SELECT auction, bidder, price, B.dateTime AS bid_dateTime, itemName, seller, category, A.dateTime AS auction_dateTime
         FROM bid AS B INNER JOIN auction AS A ON B.auction = A.id WHERE A.category = 10",
        &["auction", "bidder", "price", "bid_dateTime", "itemName", "seller", "category", "auction_dateTime"],
    );
}
