//! Positions of the generator sources (`nexmark`, `datagen`): a fixed number of splits, split `s`
//! producing the items numbered `s, s + splits, s + 2·splits, ...`, optionally up to a total.
//!
//! Invariants: a split's position is how many of its items were emitted, and it is what
//! checkpoints store; splits go to subtask `split mod parallelism`, so they move whole when the
//! parallelism changes; the watermark of a subtask is the minimum over its unfinished splits of
//! the largest event time emitted, minus the delay.

use keel_runtime::{RestoredState, Result, RuntimeError, TaskContext, WatermarkStatus};
use keel_types::time::MIN_WATERMARK;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SplitState {
    pub split: u32,
    pub emitted: u64,
    pub max_ts: i64,
}

/// The splits one subtask owns.
pub(crate) struct Splits {
    pub states: Vec<SplitState>,
    count: u32,
    limit: Option<u64>,
}

impl Splits {
    /// The splits of this subtask, at their checkpointed positions (or the start).
    pub fn restore(
        table: &str,
        count: u32,
        limit: Option<u64>,
        ctx: &TaskContext,
        restored: &RestoredState,
    ) -> Result<Splits> {
        let mut saved = std::collections::HashMap::new();
        for part in restored.parts.iter().filter(|p| !p.is_empty()) {
            let states: Vec<SplitState> = serde_json::from_slice(part)
                .map_err(|e| RuntimeError::Internal(format!("generator state of '{table}' is unreadable: {e}")))?;
            for s in states {
                saved.insert(s.split, s);
            }
        }
        let states = (0..count)
            .filter(|s| s % ctx.parallelism == ctx.subtask)
            .map(|s| saved.remove(&s).unwrap_or(SplitState { split: s, emitted: 0, max_ts: MIN_WATERMARK }))
            .collect();
        Ok(Splits { states, count, limit })
    }

    /// The global number of the next item of split `idx`.
    pub fn next_number(&self, idx: usize) -> u64 {
        let s = &self.states[idx];
        s.emitted * u64::from(self.count) + u64::from(s.split)
    }

    pub fn finished(&self, idx: usize) -> bool {
        self.limit.is_some_and(|total| self.next_number(idx) >= total)
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Records that split `idx` emitted items up to event time `ts`.
    pub fn advance(&mut self, idx: usize, items: u64, ts: i64) {
        let s = &mut self.states[idx];
        s.emitted += items;
        s.max_ts = s.max_ts.max(ts);
    }

    pub fn watermark(&self, event_time: Option<(usize, i64)>) -> WatermarkStatus {
        let Some((_, delay)) = event_time else { return WatermarkStatus::Active(MIN_WATERMARK) };
        if self.states.is_empty() {
            return WatermarkStatus::Idle(MIN_WATERMARK);
        }
        let active: Vec<i64> =
            (0..self.states.len()).filter(|&i| !self.finished(i)).map(|i| self.states[i].max_ts).collect();
        let wm = if active.is_empty() { self.states.iter().map(|s| s.max_ts).max() } else { active.into_iter().min() };
        WatermarkStatus::Active(wm.unwrap_or(MIN_WATERMARK).saturating_sub(delay))
    }

    pub fn snapshot(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.states).map_err(|e| RuntimeError::Internal(format!("encoding generator state: {e}")))
    }
}
