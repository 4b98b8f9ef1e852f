//! The Nexmark generator and the queries Keel runs, checked on a small stream: the event mix
//! and determinism (the same events at any parallelism), and q0, q1, q2, q21 and q22 against
//! results computed here, with plain Rust, from every bid with all its columns.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;

const EVENTS: u64 = 20_000;

/// The query file with its blackhole sink replaced by a topic named `out`.
fn query(name: &str, data: &Path) -> std::path::PathBuf {
    let root = manifest_dir().join("nexmark");
    // 500 events per second of event time: 40 s of events, so sessions and windows have gaps.
    let ddl = std::fs::read_to_string(root.join("ddl.sql"))
        .unwrap()
        .replace("${EVENTS}", &EVENTS.to_string())
        .replace("'first-event.rate' = '10000000'", "'first-event.rate' = '500'");
    let q = if name == "all_bids" {
        "CREATE TABLE all_bids (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR)
         WITH ('connector' = 'blackhole');
         INSERT INTO all_bids SELECT auction, bidder, price, channel, url, dateTime, extra FROM bid;"
            .to_string()
    } else if name == "null_rows" {
        // Every event, with whether its person row and that row's id read as NULL.
        "CREATE TABLE null_rows (event_type INT, row_null BOOLEAN, id_null BOOLEAN) WITH ('connector' = 'blackhole');
         INSERT INTO null_rows SELECT event_type, person IS NULL, person.id IS NULL FROM datagen;"
            .to_string()
    } else {
        std::fs::read_to_string(root.join(format!("{name}.sql"))).unwrap()
    };
    let q = q.replace("'connector' = 'blackhole'", "'connector' = 'topic', 'topic' = 'out'");
    let path = data.join(format!("{name}.sql"));
    std::fs::write(&path, format!("{ddl}\n{q}")).unwrap();
    path
}

fn run_query(name: &str, parallelism: &str) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let sql = query(name, dir.path());
    // No --bounded: a nexmark table with 'events.num' ends by itself.
    run_ok(keel(dir.path()).args(["run", sql.to_str().unwrap(), "--quiet", "-p", parallelism]));
    topic_rows(dir.path(), "out")
}

fn sorted(rows: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    v.sort();
    v
}

#[test]
fn nexmark_queries_give_the_results_computed_from_every_bid() {
    let bids = run_query("all_bids", "2");
    // 46 of every 50 events are bids.
    assert_eq!(bids.len() as u64, EVENTS / 50 * 46);
    assert_eq!(sorted(&bids), sorted(&run_query("all_bids", "1")), "the stream must not depend on parallelism");
    let q0: Vec<serde_json::Value> = bids
        .iter()
        .map(|b| serde_json::json!({"auction": b["auction"], "bidder": b["bidder"], "price": b["price"], "dateTime": b["dateTime"], "extra": b["extra"]}))
        .collect();
    assert_eq!(sorted(&run_query("q0", "2")), sorted(&q0));
    let hot = bids.iter().filter(|b| b["auction"].as_i64().unwrap() % 100 == 0).count();
    assert!(hot * 3 > bids.len(), "about half the bids go to hot auctions, got {hot} of {}", bids.len());

    // q1: price in euros.
    let mut want: Vec<(i64, i64, i64)> = bids
        .iter()
        .map(|b| (b["auction"].as_i64().unwrap(), b["bidder"].as_i64().unwrap(), b["price"].as_i64().unwrap() * 908))
        .collect();
    let mut got: Vec<(i64, i64, i64)> = run_query("q1", "2")
        .iter()
        .map(|r| {
            (
                r["auction"].as_i64().unwrap(),
                r["bidder"].as_i64().unwrap(),
                (r["price"].as_f64().unwrap() * 1000.0).round() as i64,
            )
        })
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);

    // q2: auctions that are multiples of 123.
    let mut want: Vec<(i64, i64)> = bids
        .iter()
        .map(|b| (b["auction"].as_i64().unwrap(), b["price"].as_i64().unwrap()))
        .filter(|(a, _)| a % 123 == 0)
        .collect();
    let mut got: Vec<(i64, i64)> =
        run_query("q2", "2").iter().map(|r| (r["auction"].as_i64().unwrap(), r["price"].as_i64().unwrap())).collect();
    want.sort();
    got.sort();
    assert!(!want.is_empty());
    assert_eq!(got, want);

    // q21: channel ids.
    let mut want = BTreeMap::new();
    for b in &bids {
        let (channel, url) = (b["channel"].as_str().unwrap(), b["url"].as_str().unwrap());
        let id = match channel.to_lowercase().as_str() {
            "apple" => Some("0".to_string()),
            "google" => Some("1".to_string()),
            "facebook" => Some("2".to_string()),
            "baidu" => Some("3".to_string()),
            _ => url.split(['?', '&']).find_map(|p| p.strip_prefix("channel_id=")).map(str::to_string),
        };
        if let Some(id) = id {
            *want
                .entry((b["auction"].as_i64().unwrap(), b["bidder"].as_i64().unwrap(), channel.to_string(), id))
                .or_insert(0) += 1;
        }
    }
    let mut got = BTreeMap::new();
    for r in run_query("q21", "2") {
        let key = (
            r["auction"].as_i64().unwrap(),
            r["bidder"].as_i64().unwrap(),
            r["channel"].as_str().unwrap().to_string(),
            r["channel_id"].as_str().unwrap().to_string(),
        );
        *got.entry(key).or_insert(0) += 1;
    }
    assert_eq!(got, want);

    // q14: converted price in (1,000,000, 50,000,000), time of day, 'c's in extra.
    let mut want: Vec<String> = bids
        .iter()
        .filter_map(|b| {
            let cents = b["price"].as_i64().unwrap() * 908; // price * 0.908, in thousandths
            if cents <= 1_000_000_000 || cents >= 50_000_000_000 {
                return None;
            }
            let t = b["dateTime"].as_str().unwrap();
            let hour: i64 = t[11..13].parse().unwrap();
            let kind = if (8..=18).contains(&hour) {
                "dayTime"
            } else if hour <= 6 || hour >= 20 {
                "nightTime"
            } else {
                "otherTime"
            };
            let c = b["extra"].as_str().unwrap().chars().filter(|&x| x == 'c').count();
            Some(format!("{}|{}|{cents}|{kind}|{c}", b["auction"], b["bidder"]))
        })
        .collect();
    let mut got: Vec<String> = run_query("q14", "2")
        .iter()
        .map(|r| {
            let cents = (r["price"].as_f64().unwrap() * 1000.0).round() as i64;
            format!("{}|{}|{cents}|{}|{}", r["auction"], r["bidder"], r["bidTimeType"].as_str().unwrap(), r["c_counts"])
        })
        .collect();
    want.sort();
    got.sort();
    assert!(!want.is_empty());
    assert_eq!(got, want);

    // q11: sessions per bidder with a 10 s gap (windows that touch merge, as in Flink).
    let mut times: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for b in &bids {
        let t = b["dateTime"].as_str().unwrap();
        let ms = chrono_ms(t);
        times.entry(b["bidder"].as_i64().unwrap()).or_default().push(ms);
    }
    let mut want = vec![];
    for (bidder, mut ts) in times {
        ts.sort_unstable();
        let (mut start, mut last, mut n) = (ts[0], ts[0], 0);
        for t in ts {
            if t - last > 10_000 {
                want.push((bidder, start, last + 10_000, n));
                start = t;
                n = 0;
            }
            last = t;
            n += 1;
        }
        want.push((bidder, start, last + 10_000, n));
    }
    let mut got: Vec<(i64, i64, i64, i64)> = run_query("q11", "2")
        .iter()
        .map(|r| {
            let s = |k: &str| chrono_ms(r[k].as_str().unwrap());
            (r["bidder"].as_i64().unwrap(), s("starttime"), s("endtime"), r["bid_count"].as_i64().unwrap())
        })
        .collect();
    want.sort();
    got.sort();
    assert!(want.len() > 100, "expected many sessions, got {}", want.len());
    assert_eq!(got, want);

    // q7: the highest-priced bid(s) of each 10 s window.
    let mut best: BTreeMap<i64, i64> = BTreeMap::new();
    for b in &bids {
        let w = chrono_ms(b["dateTime"].as_str().unwrap()).div_euclid(10_000);
        let p = b["price"].as_i64().unwrap();
        let e = best.entry(w).or_insert(p);
        *e = (*e).max(p);
    }
    let mut want: Vec<String> = bids
        .iter()
        .filter(|b| {
            best[&chrono_ms(b["dateTime"].as_str().unwrap()).div_euclid(10_000)] == b["price"].as_i64().unwrap()
        })
        .map(|b| format!("{}|{}|{}|{}", b["auction"], b["price"], b["bidder"], b["dateTime"]))
        .collect();
    let mut got: Vec<String> = run_query("q7", "2")
        .iter()
        .map(|r| format!("{}|{}|{}|{}", r["auction"], r["price"], r["bidder"], r["dateTime"]))
        .collect();
    want.sort();
    got.sort();
    assert!(want.len() >= best.len());
    assert_eq!(got, want);

    // q22: url directories.
    let dirs = |url: &str, i: usize| url.split('/').nth(i).map(str::to_string);
    let mut want: Vec<String> = bids
        .iter()
        .map(|b| {
            let url = b["url"].as_str().unwrap();
            format!("{}|{:?}|{:?}|{:?}", b["auction"], dirs(url, 3), dirs(url, 4), dirs(url, 5))
        })
        .collect();
    let mut got: Vec<String> = run_query("q22", "2")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().map(str::to_string);
            format!("{}|{:?}|{:?}|{:?}", r["auction"], s("dir1"), s("dir2"), s("dir3"))
        })
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

/// Epoch milliseconds of an ISO-8601 UTC timestamp as Keel writes it (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
fn chrono_ms(t: &str) -> i64 {
    let p = |a: usize, b: usize| t[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (p(0, 4), p(5, 7), p(8, 10));
    // Days from the civil date (the inverse of the usual days-to-civil algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400_000 + p(11, 13) * 3_600_000 + p(14, 16) * 60_000 + p(17, 19) * 1000 + p(20, 23)
}

#[test]
fn the_fields_of_an_absent_row_are_null() {
    let rows = run_query("null_rows", "1");
    assert_eq!(rows.len() as u64, EVENTS);
    for r in &rows {
        let person = r["event_type"] == 0;
        assert_eq!(r["row_null"], !person, "{r}");
        assert_eq!(r["id_null"], !person, "person.id of a non-person event is NULL, as in Flink: {r}");
    }
}
