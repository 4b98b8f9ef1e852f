//! The five pipelines of `keel bench chaos`: for each, its Flink SQL, its input topics, a seeded
//! event generator and the result computed from the same events in plain Rust, independently of
//! Keel (no Keel operator, planner or connector is used to compute it).
//!
//! Invariants the generators keep, so that the expectation is exact whatever the timing:
//! - event `i` is a pure function of the seed and `i`, and the producer appends events in index
//!   order, a chunk at a time across all partitions (`rounds.rs`);
//! - event `i` has the time `BASE + i * step - jitter` with the jitter below 500 ms, and every
//!   table declares a watermark delay of 1 s: a row's time is always above the watermark when it
//!   arrives (the watermark is at most the largest time read minus 1 s, and every earlier event
//!   is at most 500 ms later than a later one), so no window row and no join row is ever late.
//!   Partitions never turn idle (`'scan.idle-timeout'` of an hour), so the watermark is always the
//!   minimum over all of them. Late rows would go to the job's dead-letter topic
//!   (`'late-records' = 'dead-letter'`), which the benchmark checks is empty;
//! - deduplication keeps the row with the smallest time per key; two events of one key at the
//!   same time carry the same value, so which of them is kept cannot change the result.

use keel::sample::{BASE_MS, mix};
use keel_types::time::format_timestamp_ms as ts;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// Window size of the window pipelines (ms).
const WINDOW_MS: i64 = 2_000;
/// Users of the window pipelines.
const WINDOW_USERS: u64 = 100;
/// Event-time step between consecutive events of the window pipelines (ms).
const WINDOW_STEP_MS: i64 = 2;
/// Bound of the interval join: `p.ts BETWEEN o.ts - JOIN_MS AND o.ts + JOIN_MS`.
const JOIN_MS: i64 = 2_000;
/// Event-time step between consecutive events of the interval join (ms).
const JOIN_STEP_MS: i64 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pipeline {
    Window,
    IntervalJoin,
    GroupChangelog,
    Dedup,
    Files,
}

pub const ALL: [Pipeline; 5] =
    [Pipeline::Window, Pipeline::IntervalJoin, Pipeline::GroupChangelog, Pipeline::Dedup, Pipeline::Files];

/// An input topic and its partitions.
pub struct Input {
    pub topic: &'static str,
    pub partitions: u32,
}

/// Where a pipeline's committed output is read from.
pub enum Output {
    /// A topic; `changelog` when it holds debezium-json envelopes.
    Topic { topic: &'static str, partitions: u32, changelog: bool },
    /// JSON-lines files in the directory `out` under the pipeline's data directory.
    Files,
}

/// The seed and the number of events one pipeline's generator is given.
#[derive(Clone, Copy)]
pub struct Gen {
    pub seed: u64,
    pub events: u64,
}

impl Gen {
    /// Keys of the group aggregate: about ten events each.
    fn group_users(self) -> u64 {
        (self.events / 10).max(1)
    }
    /// Keys of the deduplication: about four events each.
    fn dedup_keys(self) -> u64 {
        (self.events / 4).max(1)
    }
}

/// The jitter (below 500 ms) of an event whose random bits are `r`.
fn jitter(r: u64) -> i64 {
    ((r >> 40) % 500) as i64
}

/// The options every source table takes (see the module's invariants).
const SOURCE_OPTIONS: &str = "'format' = 'json', 'late-records' = 'dead-letter', 'scan.idle-timeout' = '1 h'";

impl Pipeline {
    pub fn name(self) -> &'static str {
        match self {
            Pipeline::Window => "window",
            Pipeline::IntervalJoin => "interval-join",
            Pipeline::GroupChangelog => "group-changelog",
            Pipeline::Dedup => "dedup",
            Pipeline::Files => "files",
        }
    }

    pub fn parse(name: &str) -> Option<Pipeline> {
        ALL.into_iter().find(|p| p.name() == name)
    }

    /// The job's name: the pipeline file's stem.
    pub fn job(self) -> String {
        format!("chaos-{}", self.name())
    }

    pub fn inputs(self) -> &'static [Input] {
        match self {
            Pipeline::IntervalJoin => {
                &[Input { topic: "orders", partitions: 2 }, Input { topic: "payments", partitions: 3 }]
            }
            _ => &[Input { topic: "events", partitions: 4 }],
        }
    }

    pub fn output(self) -> Output {
        match self {
            Pipeline::Window => Output::Topic { topic: "totals", partitions: 2, changelog: false },
            Pipeline::IntervalJoin => Output::Topic { topic: "paid", partitions: 3, changelog: false },
            Pipeline::GroupChangelog => Output::Topic { topic: "per_user", partitions: 2, changelog: true },
            Pipeline::Dedup => Output::Topic { topic: "firsts", partitions: 3, changelog: true },
            Pipeline::Files => Output::Files,
        }
    }

    /// The fields that identify a result row, and the fields compared.
    pub fn key(self) -> &'static [&'static str] {
        match self {
            Pipeline::Window | Pipeline::Files => &["user_id", "window_start"],
            Pipeline::IntervalJoin => &["order_id", "payment_id"],
            Pipeline::GroupChangelog => &["user_id"],
            Pipeline::Dedup => &["k"],
        }
    }

    pub fn value(self) -> &'static [&'static str] {
        match self {
            Pipeline::Window | Pipeline::Files => &["window_end", "n", "total"],
            Pipeline::IntervalJoin => &["order_amount", "paid", "order_ts", "paid_ts"],
            Pipeline::GroupChangelog => &["n", "total", "biggest"],
            Pipeline::Dedup => &["v", "ts"],
        }
    }

    /// The fault points this pipeline's job reaches, with the largest hit to fire on.
    pub fn fault_points(self) -> Vec<(&'static str, u64)> {
        let mut points = vec![
            ("checkpoint.before-manifest", 4),
            ("checkpoint.before-record", 4),
            ("checkpoint.after-manifest", 4),
            ("sink.commit", 4),
            ("source.poll", 400),
        ];
        if !matches!(self, Pipeline::Files) {
            // The topic sink's commits append to the log: a torn append.
            points.push(("log.append", 4));
        }
        if matches!(self, Pipeline::Window | Pipeline::GroupChangelog | Pipeline::Files) {
            points.push(("aggregate.process", 40));
        }
        points
    }

    /// The pipeline file; `out` is the filesystem sink's directory.
    pub fn sql(self, out: &Path) -> String {
        let events = |cols: &str| {
            format!(
                "CREATE TABLE events ({cols}, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)\n\
                 WITH ('connector' = 'topic', 'topic' = 'events', {SOURCE_OPTIONS});\n"
            )
        };
        let window_query = "SELECT user_id, window_start, window_end, COUNT(*) AS n, SUM(amount) AS total\n\
             FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND))\n\
             GROUP BY user_id, window_start, window_end;\n";
        let window_sink = "CREATE TABLE totals (user_id VARCHAR, window_start TIMESTAMP(3), window_end TIMESTAMP(3), \
             n BIGINT, total BIGINT)\n";
        match self {
            Pipeline::Window => format!(
                "{}{window_sink}WITH ('connector' = 'topic', 'topic' = 'totals', 'format' = 'json');\n\
                 INSERT INTO totals {window_query}",
                events("user_id VARCHAR, amount BIGINT")
            ),
            Pipeline::Files => format!(
                "{}{window_sink}WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');\n\
                 INSERT INTO totals {window_query}",
                events("user_id VARCHAR, amount BIGINT"),
                out.display().to_string().replace('\'', "''")
            ),
            Pipeline::GroupChangelog => format!(
                "{}CREATE TABLE per_user (user_id VARCHAR, n BIGINT, total BIGINT, biggest BIGINT)\n\
                 WITH ('connector' = 'topic', 'topic' = 'per_user', 'format' = 'debezium-json');\n\
                 INSERT INTO per_user SELECT user_id, COUNT(*) AS n, SUM(amount) AS total, MAX(amount) AS biggest\n\
                 FROM events GROUP BY user_id;\n",
                events("user_id VARCHAR, amount BIGINT")
            ),
            Pipeline::Dedup => format!(
                "{}CREATE TABLE firsts (k VARCHAR, v BIGINT, ts TIMESTAMP(3))\n\
                 WITH ('connector' = 'topic', 'topic' = 'firsts', 'format' = 'debezium-json');\n\
                 INSERT INTO firsts SELECT k, v, ts FROM (\n\
                 SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts ASC) AS rn FROM events) WHERE rn = 1;\n",
                events("k VARCHAR, v BIGINT")
            ),
            Pipeline::IntervalJoin => format!(
                "CREATE TABLE orders (order_id BIGINT, amount BIGINT, ts TIMESTAMP(3),\n\
                 WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)\n\
                 WITH ('connector' = 'topic', 'topic' = 'orders', {SOURCE_OPTIONS});\n\
                 CREATE TABLE payments (payment_id BIGINT, order_id BIGINT, amount BIGINT, ts TIMESTAMP(3),\n\
                 WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)\n\
                 WITH ('connector' = 'topic', 'topic' = 'payments', {SOURCE_OPTIONS});\n\
                 CREATE TABLE paid (order_id BIGINT, payment_id BIGINT, order_amount BIGINT, paid BIGINT,\n\
                 order_ts TIMESTAMP(3), paid_ts TIMESTAMP(3))\n\
                 WITH ('connector' = 'topic', 'topic' = 'paid', 'format' = 'json');\n\
                 INSERT INTO paid SELECT o.order_id, p.payment_id, o.amount, p.amount, o.ts, p.ts\n\
                 FROM orders o JOIN payments p ON o.order_id = p.order_id\n\
                 AND p.ts BETWEEN o.ts - INTERVAL '{0}' SECOND AND o.ts + INTERVAL '{0}' SECOND;\n",
                JOIN_MS / 1000
            ),
        }
    }

    /// Event `i`: the index of its input (in `inputs()`) and its JSON text.
    pub fn event(self, g: Gen, i: u64) -> (usize, String) {
        match self {
            Pipeline::Window | Pipeline::Files => {
                (0, keel::sample::event_json(g.seed, i, WINDOW_USERS, WINDOW_STEP_MS))
            }
            Pipeline::GroupChangelog => (0, keel::sample::event_json(g.seed, i, g.group_users(), 1)),
            Pipeline::Dedup => {
                let (k, v, t) = dedup_event(g, i);
                (0, json!({"k": k, "v": v, "ts": ts(t)}).to_string())
            }
            Pipeline::IntervalJoin => match join_event(g, i) {
                JoinEvent::Order { id, amount, ts: t } => {
                    (0, json!({"order_id": id, "amount": amount, "ts": ts(t)}).to_string())
                }
                JoinEvent::Payment { id, order, amount, ts: t } => {
                    (1, json!({"payment_id": id, "order_id": order, "amount": amount, "ts": ts(t)}).to_string())
                }
            },
        }
    }

    /// The result of the pipeline over events `0..g.events`, as the sink's rows (for a
    /// changelog: its final table).
    pub fn expected(self, g: Gen) -> Vec<Value> {
        match self {
            Pipeline::Window | Pipeline::Files => {
                let mut acc: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
                for i in 0..g.events {
                    let (user, amount, t) = keel::sample::event(g.seed, i, WINDOW_USERS, WINDOW_STEP_MS);
                    let e = acc.entry((user, t.div_euclid(WINDOW_MS) * WINDOW_MS)).or_default();
                    e.0 += 1;
                    e.1 += amount;
                }
                acc.into_iter()
                    .map(|((user, start), (n, total))| {
                        json!({"user_id": user, "window_start": ts(start), "window_end": ts(start + WINDOW_MS),
                               "n": n, "total": total})
                    })
                    .collect()
            }
            Pipeline::GroupChangelog => {
                let mut acc: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
                for i in 0..g.events {
                    let (user, amount, _) = keel::sample::event(g.seed, i, g.group_users(), 1);
                    let e = acc.entry(user).or_insert((0, 0, i64::MIN));
                    e.0 += 1;
                    e.1 += amount;
                    e.2 = e.2.max(amount);
                }
                acc.into_iter()
                    .map(|(user, (n, total, biggest))| json!({"user_id": user, "n": n, "total": total, "biggest": biggest}))
                    .collect()
            }
            Pipeline::Dedup => {
                let mut first: BTreeMap<String, (i64, i64)> = BTreeMap::new();
                for i in 0..g.events {
                    let (k, v, t) = dedup_event(g, i);
                    let e = first.entry(k).or_insert((t, v));
                    if t < e.0 {
                        *e = (t, v);
                    }
                }
                first.into_iter().map(|(k, (t, v))| json!({"k": k, "v": v, "ts": ts(t)})).collect()
            }
            Pipeline::IntervalJoin => {
                let mut orders: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
                let mut payments = vec![];
                for i in 0..g.events {
                    match join_event(g, i) {
                        JoinEvent::Order { id, amount, ts } => {
                            orders.insert(id, (amount, ts));
                        }
                        JoinEvent::Payment { id, order, amount, ts } => payments.push((id, order, amount, ts)),
                    }
                }
                let mut out = vec![];
                for (id, order, amount, t) in payments {
                    if let Some(&(o_amount, o_ts)) = orders.get(&order)
                        && o_ts - JOIN_MS <= t
                        && t <= o_ts + JOIN_MS
                    {
                        out.push(json!({"order_id": order, "payment_id": id, "order_amount": o_amount,
                                        "paid": amount, "order_ts": ts(o_ts), "paid_ts": ts(t)}));
                    }
                }
                out
            }
        }
    }
}

/// Deduplication event `i`: key, value and time. The value is a function of key and time, so
/// two events of one key at one time are the same row.
fn dedup_event(g: Gen, i: u64) -> (String, i64, i64) {
    let r = mix(g.seed, i);
    let k = r % g.dedup_keys();
    let t = BASE_MS + i as i64 - jitter(r);
    let v = (mix(g.seed ^ k, t as u64) % 1000) as i64;
    (format!("k-{k}"), v, t)
}

enum JoinEvent {
    Order { id: i64, amount: i64, ts: i64 },
    Payment { id: i64, order: i64, amount: i64, ts: i64 },
}

/// Interval-join event `i`: even events are orders (id `i / 2`), odd ones payments (id `i / 2`)
/// of an order up to 300 orders before or 100 after (3 s and 1 s of event time), so that some
/// payments fall outside the join's 2 s bound and some arrive before their order.
fn join_event(g: Gen, i: u64) -> JoinEvent {
    let r = mix(g.seed, i);
    let t = BASE_MS + i as i64 * JOIN_STEP_MS - jitter(r);
    let amount = ((r >> 20) % 1000) as i64 + 1;
    let id = (i / 2) as i64;
    if i.is_multiple_of(2) {
        JoinEvent::Order { id, amount, ts: t }
    } else {
        let order = id + ((r >> 8) % 400) as i64 - 300;
        JoinEvent::Payment { id, order, amount, ts: t }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pipeline_expects_rows_and_its_events_are_deterministic() {
        let g = Gen { seed: 42, events: 2_000 };
        for p in ALL {
            let rows = p.expected(g);
            assert!(!rows.is_empty(), "{}", p.name());
            assert_eq!(p.event(g, 17), p.event(g, 17));
            assert_eq!(Pipeline::parse(p.name()), Some(p));
        }
        // The join has matches and non-matches.
        let matched = Pipeline::IntervalJoin.expected(g).len();
        assert!(matched > 50 && matched < 1_000, "{matched} of 1,000 payments matched");
        // Deduplication sees keys whose first event by time is not their first by arrival.
        let mut seen: BTreeMap<String, i64> = BTreeMap::new();
        let mut replaced = 0;
        for i in 0..g.events {
            let (k, _, t) = dedup_event(g, i);
            if seen.get(&k).is_some_and(|&first| t < first) {
                replaced += 1;
            }
            seen.entry(k).and_modify(|f| *f = (*f).min(t)).or_insert(t);
        }
        assert!(replaced > 10, "{replaced} keys change their first row");
    }

    #[test]
    fn no_event_is_more_than_500_ms_before_an_earlier_one() {
        // The invariant that keeps every row on time (see the module's comment).
        for p in [Pipeline::Dedup, Pipeline::IntervalJoin] {
            let g = Gen { seed: 7, events: 5_000 };
            let mut latest = i64::MIN / 2;
            for i in 0..g.events {
                let t = match p {
                    Pipeline::Dedup => dedup_event(g, i).2,
                    _ => match join_event(g, i) {
                        JoinEvent::Order { ts, .. } | JoinEvent::Payment { ts, .. } => ts,
                    },
                };
                assert!(t > latest - 500, "{}: event {i}", p.name());
                latest = latest.max(t);
            }
        }
    }
}
