//! HOP windows from shared slices, as Flink's slicing window aggregate does: the assigner puts
//! each row in the one slice `[s, s + slide)` containing it (a tumbling window of the slide), the
//! aggregate accumulates per (slice, key), and the window `[e - size, e)` is emitted from the
//! `size / slide` slices it spans when the watermark reaches `e - 1`. Each row is accumulated
//! once instead of once per window.
//!
//! Invariants: windows are emitted in increasing order of end, each exactly once, and each with
//! exactly the rows of its slices; a slice is kept until its last window `[s, s + size)` has been
//! emitted, so a row arriving after some of its windows fired still counts in the ones that have
//! not (the row is late, and dropped, only when all of them have fired: Flink's rule); a window
//! spanning one slice is emitted straight from that slice's groups, one spanning several from
//! groups merged for the emission and forgotten right after (never listed with the slices).

use super::aggregate::WindowAggregate;
use crate::error::Result;
use arrow::array::RecordBatch;
use keel_types::window::is_late;

impl WindowAggregate {
    /// Emits every window that the watermark moving from `old` to the current one closes, then
    /// forgets the slices none of whose windows is still open.
    pub(super) fn fire_slices(&mut self, size: i64, slide: i64, old: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        let wm = self.watermark;
        // Every window with an end at or below `fired` has been emitted.
        let mut fired = old.saturating_add(1);
        while let Some((&(first_end, _), _)) = self.by_window.first_key_value() {
            // The first window after `fired` that the oldest slice belongs to (ends are on the
            // slide grid, as slice ends are).
            let mut e = first_end;
            if e <= fired {
                e += ((fired - e) / slide + 1) * slide;
            }
            if !is_late(e, wm) {
                break;
            }
            let spanned: Vec<(i64, i64)> =
                self.by_window.range(..=(e, i64::MAX)).map(|(&k, _)| k).filter(|&(_, s)| s >= e - size).collect();
            match spanned.as_slice() {
                [] => {}
                [one] => {
                    let gids = self.by_window.get(one).cloned().unwrap_or_default();
                    out.push(self.emit(e - size, e, &gids)?);
                }
                many => {
                    let merged = self.merge_slices(e - size, e, many)?;
                    out.push(self.emit(e - size, e, &merged)?);
                    for g in merged {
                        self.forget(g);
                    }
                }
            }
            fired = e;
            let done: Vec<(i64, i64)> =
                self.by_window.range(..=(e, i64::MAX)).map(|(&k, _)| k).filter(|&(_, s)| s + size <= e).collect();
            for k in done {
                for g in self.by_window.remove(&k).unwrap_or_default() {
                    self.forget(g);
                }
            }
        }
        Ok(())
    }

    /// Groups of window `[start, end)` holding the merged accumulators of `slices`' groups, one per
    /// key; they are not listed under any window.
    fn merge_slices(&mut self, start: i64, end: i64, slices: &[(i64, i64)]) -> Result<Vec<u32>> {
        let mut merged = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for slice in slices {
            let gids = self.by_window.get(slice).cloned().unwrap_or_default();
            for g in gids {
                let (key, key_group) = {
                    let gr = &self.groups[g as usize];
                    (gr.key.clone(), gr.key_group)
                };
                let w = self.group_of(start, end, &key, || key_group);
                if seen.insert(w) {
                    merged.push(w);
                }
                for a in &mut self.accs {
                    a.merge(w as usize, g as usize)?;
                }
            }
        }
        // `group_of` listed the new groups under the window; they belong to this emission only.
        self.by_window.remove(&(end, start));
        Ok(merged)
    }
}
