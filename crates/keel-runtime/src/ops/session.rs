//! Session windows for the window aggregate: rows of one key whose windows `[ts, ts + gap)`
//! overlap or touch are merged into one session `[first ts, last ts + gap)`, with their
//! accumulators. A session that already fired (the watermark passed its end) is gone: a later
//! row starts a new one, as in Flink without allowed lateness.
//!
//! Invariants: the open sessions of a key never overlap; a session is emitted once, when the
//! watermark reaches its end − 1, like any window; a group slot merged away inside a batch is
//! neither reused nor accumulated into before the batch ends (rows assigned to it are redirected
//! to the session that absorbed it).

use super::aggregate::WindowAggregate;
use crate::error::Result;
use std::collections::HashMap;

impl WindowAggregate {
    /// The session of `key` that a row with window `[start, end)` belongs to, merging every open
    /// session it overlaps. Merged-away slots are recorded in `redirect` and `retired`.
    pub(super) fn session_of(
        &mut self,
        start: i64,
        end: i64,
        key: &[u8],
        key_group: u32,
        redirect: &mut HashMap<u32, u32>,
        retired: &mut Vec<u32>,
    ) -> Result<u32> {
        let open = self.sessions.get(key).cloned().unwrap_or_default();
        let overlapping: Vec<u32> = open
            .into_iter()
            .filter(|&g| {
                let gr = &self.groups[g as usize];
                // Inclusive, as Flink's TimeWindow.intersects: sessions that touch merge.
                gr.start <= end && start <= gr.end
            })
            .collect();
        let Some(&target) = overlapping.first() else {
            let g = self.add_group(start, end, key, key_group);
            self.sessions.entry(key.into()).or_default().push(g);
            return Ok(g);
        };
        let (mut s, mut e) = (start, end);
        for &g in &overlapping {
            s = s.min(self.groups[g as usize].start);
            e = e.max(self.groups[g as usize].end);
        }
        for &g in &overlapping[1..] {
            for a in &mut self.accs {
                a.merge(target as usize, g as usize)?;
            }
            self.detach(g);
            for a in &mut self.accs {
                a.reset(g as usize);
            }
            redirect.insert(g, target);
            retired.push(g);
        }
        self.rebound(target, s, e);
        Ok(target)
    }

    /// Moves group `g` to window `[start, end)`.
    fn rebound(&mut self, g: u32, start: i64, end: i64) {
        let (old_start, old_end) = (self.groups[g as usize].start, self.groups[g as usize].end);
        if (old_start, old_end) == (start, end) {
            return;
        }
        self.unlist(g, old_start, old_end);
        self.groups[g as usize].start = start;
        self.groups[g as usize].end = end;
        self.by_window.entry((end, start)).or_default().push(g);
    }

    /// Removes group `g` from the window index and its key's open sessions.
    fn detach(&mut self, g: u32) {
        let (start, end) = (self.groups[g as usize].start, self.groups[g as usize].end);
        self.unlist(g, start, end);
        self.drop_session(g);
    }

    fn unlist(&mut self, g: u32, start: i64, end: i64) {
        if let Some(v) = self.by_window.get_mut(&(end, start)) {
            v.retain(|&x| x != g);
            if v.is_empty() {
                self.by_window.remove(&(end, start));
            }
        }
    }

    /// Forgets that group `g` is an open session of its key.
    pub(super) fn drop_session(&mut self, g: u32) {
        let key = &self.groups[g as usize].key;
        if let Some(v) = self.sessions.get_mut(key) {
            v.retain(|&x| x != g);
            if v.is_empty() {
                self.sessions.remove(key);
            }
        }
    }

    /// Rebuilds the open-session index from the groups (after a restore).
    pub(super) fn index_sessions(&mut self) {
        self.sessions.clear();
        for &g in self.by_window.values().flatten() {
            self.sessions.entry(self.groups[g as usize].key.clone()).or_default().push(g);
        }
    }
}

/// Where a row assigned to group `g` really goes after the merges of its batch.
pub(super) fn resolve(redirect: &HashMap<u32, u32>, mut g: u32) -> u32 {
    while let Some(&t) = redirect.get(&g) {
        g = t;
    }
    g
}
