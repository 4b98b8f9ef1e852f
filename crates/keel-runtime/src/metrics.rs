//! Counters a running job exposes for progress lines and tests. All are monotonic except the
//! watermark and checkpoint fields, which hold the latest value.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug)]
pub struct Metrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub bad_records: AtomicU64,
    pub late_records: AtomicU64,
    /// The lowest watermark reached by the last stage (epoch ms; i64::MIN before any).
    pub watermark: AtomicI64,
    pub last_checkpoint: AtomicU64,
    pub last_checkpoint_ms: AtomicI64,
    pub checkpoints_completed: AtomicU64,
    pub checkpoints_aborted: AtomicU64,
    pub restarts: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            bad_records: AtomicU64::new(0),
            late_records: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            last_checkpoint: AtomicU64::new(0),
            last_checkpoint_ms: AtomicI64::new(0),
            checkpoints_completed: AtomicU64::new(0),
            checkpoints_aborted: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
