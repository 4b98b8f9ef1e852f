//! The sample-event generator used by `keel demo`, `keel bench` and the tests: deterministic
//! for a seed and an event index, so any run can be repeated exactly.
//!
//! Events are `{"user_id":"user-N","amount":A,"ts":"ISO-8601"}`; event `i` happens at
//! `base + i * step_ms` minus up to 500 ms of jitter, so within any subsequence the disorder is
//! below the one-second watermark delay the demo pipeline declares.

use keel_log::{Durability, Record, Topic};

/// 2024-01-01T00:00:00Z.
pub const BASE_MS: i64 = 1_704_067_200_000;

/// A 64-bit mix of the seed and index (splitmix64).
pub fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The fields of event `i`.
pub fn event(seed: u64, i: u64, users: u64, step_ms: i64) -> (String, i64, i64) {
    let r = mix(seed, i);
    let user = format!("user-{}", r % users);
    let amount = ((r >> 20) % 1000) as i64 + 1;
    let jitter = ((r >> 40) % 500) as i64;
    let ts = BASE_MS + i as i64 * step_ms - jitter;
    (user, amount, ts)
}

/// Event `i` as a JSON line.
pub fn event_json(seed: u64, i: u64, users: u64, step_ms: i64) -> String {
    let (user, amount, ts) = event(seed, i, users, step_ms);
    format!(r#"{{"user_id":"{user}","amount":{amount},"ts":"{}"}}"#, keel_types::time::format_timestamp_ms(ts))
}

/// Appends events `0..n` to `topic`, event `i` to partition `i % partitions`, with progress on stderr.
pub fn fill_topic(topic: &Topic, n: u64, seed: u64, users: u64, step_ms: i64) -> Result<(), keel_log::LogError> {
    fill_topic_range(topic, 0..n, seed, users, step_ms)
}

/// Appends events `range` (see `fill_topic`).
pub fn fill_topic_range(
    topic: &Topic,
    range: std::ops::Range<u64>,
    seed: u64,
    users: u64,
    step_ms: i64,
) -> Result<(), keel_log::LogError> {
    let n = range.end;
    let parts = u64::from(topic.partitions());
    let mut writers =
        (0..topic.partitions()).map(|p| topic.writer(p, Durability::OsBuffer)).collect::<Result<Vec<_>, _>>()?;
    let mut batches: Vec<Vec<Record>> = vec![Vec::new(); parts as usize];
    let started = std::time::Instant::now();
    let mut last_report = started;
    for i in range {
        let b = &mut batches[(i % parts) as usize];
        b.push(Record::new(None, event_json(seed, i, users, step_ms).into_bytes()));
        if b.len() >= 8192 {
            writers[(i % parts) as usize].append(b)?;
            b.clear();
        }
        if last_report.elapsed().as_secs() >= 2 {
            last_report = std::time::Instant::now();
            eprintln!("generating events: {i} of {n}");
        }
    }
    for (p, b) in batches.iter().enumerate() {
        if !b.is_empty() {
            writers[p].append(b)?;
        }
    }
    Ok(())
}
