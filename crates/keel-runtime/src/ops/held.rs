//! Rows a stateful operator keeps (the join's sides, the Top-N's partitions), held as Arrow
//! columns: each input batch that adds rows gives one stored batch with just those rows, and a
//! held row is its position `(stored batch, row)`. Output and snapshots gather rows from the
//! stored batches with `interleave`, rather than decoding a row format row by row; snapshots take
//! rows in position order (`by_position`, `snapshot_chunks`), so that long stretches of a
//! stored batch are written as slices of it (`columns_of`).
//!
//! Invariants: a stored batch counts the held rows that point into it and is freed with the last
//! of them (its slot is then reused); a reserved slot holds no batch until `fill` and is never
//! counted; `gather` of a position whose batch is gone is an internal error (the caller released
//! a row it still holds).

use crate::error::{Result, RuntimeError};
use arrow::array::{Array, ArrayRef};

/// Rows' columns, and how many held rows still point into them.
struct Stored {
    cols: Vec<ArrayRef>,
    rows: usize,
    live: usize,
}

#[derive(Default)]
pub(crate) struct HeldBatches {
    /// `None`: a freed slot, or one reserved for the batch being processed.
    batches: Vec<Option<Stored>>,
    free: Vec<u32>,
    /// Rows in all stored batches, live or not.
    stored_rows: usize,
    /// Held rows pointing into stored batches.
    live_rows: usize,
}

impl HeldBatches {
    /// A slot for a stored batch (filled by `fill`, or given back by `unreserve`).
    pub(crate) fn reserve(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.batches.push(None);
            (self.batches.len() - 1) as u32
        })
    }

    /// Stores `cols` in slot `id` with `live` held rows pointing into it.
    pub(crate) fn fill(&mut self, id: u32, cols: Vec<ArrayRef>, live: usize) {
        let rows = cols.first().map_or(0, |c| c.len());
        self.stored_rows += rows;
        self.live_rows += live;
        self.batches[id as usize] = Some(Stored { cols, rows, live });
    }

    pub(crate) fn unreserve(&mut self, id: u32) {
        self.batches[id as usize] = None;
        self.free.push(id);
    }

    /// Fills the reserved slot `id` with rows `kept` (increasing) of `data`, `live` of which are
    /// held; a batch whose rows are all kept is stored as it is, the others are copied with
    /// `take`. With no row left to hold, the slot is given back.
    pub(crate) fn fill_rows(&mut self, id: u32, data: &[ArrayRef], kept: Vec<u32>, live: usize) -> Result<()> {
        if live == 0 {
            self.unreserve(id);
            return Ok(());
        }
        let cols = if kept.len() == data.first().map_or(0, |c| c.len()) {
            data.to_vec()
        } else {
            let idx = arrow::array::UInt32Array::from(kept);
            (data.iter())
                .map(|c| arrow::compute::take(c.as_ref(), &idx, None))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(RuntimeError::arrow("keeping rows"))?
        };
        self.fill(id, cols, live);
        Ok(())
    }

    /// A held row is gone: its stored batch is freed with its last row.
    pub(crate) fn release(&mut self, at: (u32, u32)) {
        if let Some(slot) = self.batches.get_mut(at.0 as usize)
            && let Some(b) = slot
        {
            b.live = b.live.saturating_sub(1);
            self.live_rows = self.live_rows.saturating_sub(1);
            if b.live == 0 {
                self.stored_rows -= b.rows;
                *slot = None;
                self.free.push(at.0);
            }
        }
    }

    /// Rows in stored batches, and how many of them are held.
    #[cfg(test)]
    pub(crate) fn rows(&self) -> (usize, usize) {
        (self.stored_rows, self.live_rows)
    }

    /// How many stored batches hold rows.
    #[cfg(test)]
    pub(crate) fn stored_batches(&self) -> usize {
        self.batches.iter().flatten().count()
    }

    /// Column `c` of stored batch `id`; `what` names the operator in the error.
    pub(crate) fn column(&self, id: u32, c: usize, what: &str) -> Result<&ArrayRef> {
        match self.batches.get(id as usize) {
            Some(Some(stored)) => Ok(&stored.cols[c]),
            _ => Err(RuntimeError::Internal(format!("{what}: a held row points at freed stored batch {id}"))),
        }
    }

    /// `ncols` columns of the held rows `at` (sorted, as `snapshot_chunks` gives them): a stretch of
    /// consecutive rows of one stored batch is a slice of it, with nothing copied.
    pub(crate) fn columns_of(&self, at: &[(u32, u32)], ncols: usize, what: &str) -> Result<Vec<ArrayRef>> {
        match (at.first(), at.last()) {
            (Some(&(b, first)), Some(&(last_b, last))) if b == last_b && (last - first) as usize + 1 == at.len() => {
                (0..ncols).map(|c| Ok(self.column(b, c, what)?.slice(first as usize, at.len()))).collect()
            }
            _ => self.gather(at, ncols, what),
        }
    }

    /// The stored batches a compaction rewrites (`mask[slot]`): none (an empty mask) while the
    /// stored batches hold at most twice the held rows plus `slack`; past that, every batch less
    /// than half of whose rows are held. Rewriting only those copies each held row at most once
    /// per time its batch loses half its rows, and leaves every batch at least half held, so the
    /// stored rows are again at most twice the held ones.
    pub(crate) fn compaction_victims(&self, slack: usize) -> Vec<bool> {
        if self.stored_rows <= 2 * self.live_rows + slack {
            return vec![];
        }
        self.batches.iter().map(|b| b.as_ref().is_some_and(|s| 2 * s.live < s.rows)).collect()
    }

    /// Rewrites the held rows `at` into fresh stored batches of at most `chunk` rows, in position
    /// order, and frees the stored batches of `victims` (a mask from `compaction_victims`). `at`
    /// must be every held row of the victims, in any order; a missing or foreign row is an
    /// internal error (the caller's rows and the batches' counts disagree).
    pub(crate) fn compact(
        &mut self,
        victims: &[bool],
        at: Vec<(u32, u32)>,
        ncols: usize,
        chunk: usize,
        what: &str,
    ) -> Result<Relocation> {
        let is_victim = |b: u32| victims.get(b as usize).copied().unwrap_or(false);
        let counted: usize = (0..self.batches.len() as u32)
            .filter(|&b| is_victim(b))
            .map(|b| self.batches[b as usize].as_ref().map_or(0, |s| s.live))
            .sum();
        let rows = |b: u32| self.batches.get(b as usize).and_then(Option::as_ref).map_or(0, |s| s.rows);
        if at.len() != counted || at.iter().any(|&(b, i)| !is_victim(b) || i as usize >= rows(b)) {
            return Err(RuntimeError::Internal(format!(
                "{what}: compaction was given {} rows for stored batches that hold {counted}",
                at.len()
            )));
        }
        let (at, _) = by_position(at.into_iter().map(|a| (a, ())).collect());
        if let Some(w) = at.windows(2).find(|w| w[0] == w[1]) {
            return Err(RuntimeError::Internal(format!(
                "{what}: held row {}:{} given twice to compaction",
                w[0].0, w[0].1
            )));
        }
        let mut base = vec![None; self.batches.len()];
        let mut total = 0;
        for (b, slot) in self.batches.iter().enumerate() {
            if is_victim(b as u32)
                && let Some(s) = slot
            {
                base[b] = Some(total);
                total += s.rows;
            }
        }
        let mut to = vec![UNMOVED; total];
        for part in at.chunks(chunk.max(1)) {
            // Copied, never sliced: a slice would keep the victim's buffers alive.
            let cols = self.gather(part, ncols, what)?;
            let id = self.reserve();
            self.fill(id, cols, part.len());
            for (k, &(b, i)) in part.iter().enumerate() {
                // In range and given once (checked above).
                to[base[b as usize].unwrap_or(0) + i as usize] = (id, k as u32);
            }
        }
        for (b, slot) in self.batches.iter_mut().enumerate() {
            if is_victim(b as u32)
                && let Some(s) = slot.take()
            {
                self.stored_rows -= s.rows;
                self.live_rows -= s.live;
                self.free.push(b as u32);
            }
        }
        Ok(Relocation { base, to })
    }

    /// `ncols` columns of the held rows `at`, in order.
    pub(crate) fn gather(&self, at: &[(u32, u32)], ncols: usize, what: &str) -> Result<Vec<ArrayRef>> {
        let mut used: hashbrown::HashMap<u32, usize> = hashbrown::HashMap::new();
        let mut order: Vec<u32> = vec![];
        let picks: Vec<(usize, usize)> = at
            .iter()
            .map(|&(b, i)| {
                let src = *used.entry(b).or_insert_with(|| {
                    order.push(b);
                    order.len() - 1
                });
                (src, i as usize)
            })
            .collect();
        (0..ncols)
            .map(|c| {
                let sources = order
                    .iter()
                    .map(|&b| self.column(b, c, what).map(|a| a.as_ref()))
                    .collect::<Result<Vec<&dyn Array>>>()?;
                arrow::compute::interleave(&sources, &picks).map_err(RuntimeError::arrow(what))
            })
            .collect()
    }
}

/// Where a compaction moved held rows (see `HeldBatches::compact`).
#[derive(Debug)]
pub(crate) struct Relocation {
    /// Per slot at the time of the compaction: where its rows start in `to`, for rewritten slots.
    base: Vec<Option<usize>>,
    /// The new position of each row of each rewritten slot (rows not held: `UNMOVED`).
    to: Vec<(u32, u32)>,
}

const UNMOVED: (u32, u32) = (u32::MAX, u32::MAX);

impl Relocation {
    /// The new position of held row `at`, or `at` itself when its stored batch was not rewritten.
    pub(crate) fn new_position(&self, at: (u32, u32)) -> (u32, u32) {
        match self.base.get(at.0 as usize) {
            Some(Some(base)) => match self.to.get(base + at.1 as usize) {
                Some(&to) if to != UNMOVED => to,
                _ => at,
            },
            _ => at,
        }
    }

    /// Whether held row `at` was moved.
    pub(crate) fn moves(&self, at: (u32, u32)) -> bool {
        self.new_position(at) != at
    }
}

/// The positions and values of `items`, in position order: bucketed by stored batch (a counting
/// sort, as slot ids are small and dense), then each bucket sorted by row. A comparison sort of
/// millions of held rows, with the positions read through references, took a tenth of a large
/// join's checkpoint.
pub(crate) fn by_position<T: Copy>(items: Vec<((u32, u32), T)>) -> (Vec<(u32, u32)>, Vec<T>) {
    let Some(slots) = items.iter().map(|x| x.0.0 as usize + 1).max() else { return (vec![], vec![]) };
    let mut start = vec![0usize; slots + 1];
    for x in &items {
        start[x.0.0 as usize + 1] += 1;
    }
    for b in 1..=slots {
        start[b] += start[b - 1];
    }
    let mut next = start.clone();
    let mut out = items.clone();
    for x in items {
        let b = x.0.0 as usize;
        out[next[b]] = x;
        next[b] += 1;
    }
    for b in 0..slots {
        out[start[b]..start[b + 1]].sort_unstable_by_key(|x| x.0.1);
    }
    out.into_iter().unzip()
}

/// Stretches of consecutive rows of one stored batch at least this long are a chunk of their own
/// in `snapshot_chunks`, so that they are written without a copy.
const WHOLE_RUN: usize = 1024;

/// Splits held rows `at`, sorted by position, into the chunks a snapshot writes, each of at most
/// `max` rows: every stretch of at least `WHOLE_RUN` consecutive rows of one stored batch is a
/// chunk of its own (see `columns_of`), and the rows between them are gathered in chunks.
pub(crate) fn snapshot_chunks(at: &[(u32, u32)], max: usize) -> Vec<std::ops::Range<usize>> {
    let max = max.max(1);
    let mut out = vec![];
    let (mut start, mut i) = (0, 0);
    while i < at.len() {
        let mut j = i + 1;
        while j < at.len() && j - i < max && at[j].0 == at[i].0 && at[j].1 == at[j - 1].1 + 1 {
            j += 1;
        }
        if j - i >= WHOLE_RUN.min(max) {
            if start < i {
                out.push(start..i);
            }
            out.push(i..j);
            start = j;
        } else if j - start > max {
            out.push(start..i);
            start = i;
        }
        i = j;
    }
    if start < at.len() {
        out.push(start..at.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::Int64Type;
    use std::sync::Arc;

    fn ints(v: &[i64]) -> Vec<ArrayRef> {
        vec![Arc::new(Int64Array::from(v.to_vec()))]
    }

    /// Stores a batch of `len` rows, all held, valued `next..`; returns its slot.
    fn add_batch(h: &mut HeldBatches, next: &mut i64, len: usize) -> u32 {
        let id = h.reserve();
        h.fill(id, ints(&(*next..*next + len as i64).collect::<Vec<_>>()), len);
        *next += len as i64;
        id
    }

    #[test]
    fn batches_are_freed_with_their_last_row_and_slots_reused() {
        let mut h = HeldBatches::default();
        let a = h.reserve();
        h.fill(a, ints(&[1, 2, 3]), 2);
        let b = h.reserve();
        h.fill(b, ints(&[4]), 1);
        assert_eq!(h.rows(), (4, 3));
        let got = h.gather(&[(b, 0), (a, 2), (a, 0)], 1, "test").unwrap();
        assert_eq!(got[0].as_primitive::<Int64Type>().values().to_vec(), vec![4, 3, 1]);
        h.release((a, 0));
        assert_eq!(h.stored_batches(), 2);
        h.release((a, 2));
        assert_eq!((h.stored_batches(), h.rows()), (1, (1, 1)));
        let err = h.gather(&[(a, 0)], 1, "test").unwrap_err().to_string();
        assert!(err.contains("freed stored batch"), "{err}");
        assert_eq!(h.reserve(), a, "a freed slot is reused");
    }

    #[test]
    fn rows_are_kept_whole_copied_or_not_at_all() {
        let mut h = HeldBatches::default();
        let data = ints(&[7, 8, 9]);
        let all = h.reserve();
        h.fill_rows(all, &data, vec![0, 1, 2], 3).unwrap();
        assert!(Arc::ptr_eq(h.column(all, 0, "test").unwrap(), &data[0]), "a whole batch is not copied");
        let some = h.reserve();
        h.fill_rows(some, &data, vec![0, 2], 2).unwrap();
        assert_eq!(h.column(some, 0, "test").unwrap().as_primitive::<Int64Type>().values().to_vec(), vec![7, 9]);
        let none = h.reserve();
        h.fill_rows(none, &data, vec![1], 0).unwrap();
        assert_eq!((h.stored_batches(), h.rows()), (2, (5, 5)), "a slot with no held row is given back");
        assert_eq!(h.reserve(), none);
    }

    #[test]
    fn snapshot_chunks_cover_every_row_and_slice_whole_runs() {
        let mut rng = crate::test_rng::Lcg::seeded("snapshot_chunks");
        for _ in 0..50 {
            // Stored batches of random sizes, some rows of each held.
            let mut h = HeldBatches::default();
            let mut at: Vec<(u32, u32)> = vec![];
            let mut next = 0i64;
            for _ in 0..1 + rng.below(8) {
                let len = 1 + rng.below(3000) as usize;
                let id = add_batch(&mut h, &mut next, len);
                let keep_all = rng.below(2) == 0;
                at.extend((0..len as u32).filter(|_| keep_all || rng.below(4) > 0).map(|i| (id, i)));
            }
            at.sort_unstable();
            let max = 1 + rng.below(5000) as usize;
            let chunks = snapshot_chunks(&at, max);
            let seed = rng.seed();
            assert_eq!(chunks.iter().map(|r| r.len()).sum::<usize>(), at.len(), "seed {seed}");
            let mut end = 0;
            for r in &chunks {
                assert_eq!(r.start, end, "chunks follow each other (seed {seed})");
                assert!(!r.is_empty() && r.len() <= max, "chunk {r:?} of at most {max} (seed {seed})");
                end = r.end;
                let got = h.columns_of(&at[r.clone()], 1, "test").unwrap();
                let want = h.gather(&at[r.clone()], 1, "test").unwrap();
                assert_eq!(got[0].as_ref(), want[0].as_ref(), "seed {seed}");
            }
            // Every run of WHOLE_RUN consecutive rows of one batch starts or continues a chunk of
            // its own: no chunk mixes such a run with other rows.
            for r in &chunks {
                let part = &at[r.clone()];
                let contiguous = part.windows(2).all(|w| w[0].0 == w[1].0 && w[1].1 == w[0].1 + 1);
                if !contiguous {
                    let mut run = 1;
                    for w in part.windows(2) {
                        run = if w[0].0 == w[1].0 && w[1].1 == w[0].1 + 1 { run + 1 } else { 1 };
                        assert!(run < WHOLE_RUN.min(max), "a long run was gathered with other rows (seed {seed})");
                    }
                }
            }
        }
    }

    #[test]
    fn a_run_of_one_stored_batch_is_sliced_not_copied() {
        let mut h = HeldBatches::default();
        let id = h.reserve();
        let data = ints(&(0..10).collect::<Vec<_>>());
        h.fill(id, data.clone(), 10);
        let got = h.columns_of(&[(id, 3), (id, 4), (id, 5)], 1, "test").unwrap();
        let values = got[0].as_primitive::<Int64Type>().values();
        assert_eq!(values.to_vec(), vec![3, 4, 5]);
        let base = data[0].as_primitive::<Int64Type>().values().as_ptr();
        assert_eq!(values.as_ptr(), base.wrapping_add(3), "the run shares the stored batch's buffer");
        let gathered = h.columns_of(&[(id, 3), (id, 5)], 1, "test").unwrap();
        assert_eq!(gathered[0].as_primitive::<Int64Type>().values().to_vec(), vec![3, 5]);
    }

    #[test]
    fn compaction_rewrites_only_batches_less_than_half_held() {
        let mut rng = crate::test_rng::Lcg::seeded("compaction");
        for _ in 0..40 {
            let seed = rng.seed();
            let mut h = HeldBatches::default();
            let mut held: Vec<(u32, u32)> = vec![];
            let mut next = 0i64;
            for _ in 0..1 + rng.below(10) {
                let len = 1 + rng.below(500) as usize;
                let id = add_batch(&mut h, &mut next, len);
                // Each batch keeps a random share of its rows.
                let keep = rng.below(5);
                for i in 0..len as u32 {
                    if rng.below(4) < keep { held.push((id, i)) } else { h.release((id, i)) }
                }
            }
            let (stored, live) = h.rows();
            assert_eq!(live, held.len(), "seed {seed}");
            let victims = h.compaction_victims(0);
            if stored <= 2 * live {
                assert!(victims.is_empty(), "no compaction within the bound (seed {seed})");
                continue;
            }
            let values = |h: &HeldBatches, at: &[(u32, u32)]| {
                h.gather(at, 1, "test").unwrap()[0].as_primitive::<Int64Type>().values().to_vec()
            };
            let before = values(&h, &held);
            let was_victim: Vec<bool> = held.iter().map(|a| victims[a.0 as usize]).collect();
            let moving: Vec<(u32, u32)> = held.iter().copied().filter(|a| victims[a.0 as usize]).collect();
            // Given in a shuffled order: the compaction sorts them itself.
            let mut shuffled = moving.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let moved = h.compact(&victims, shuffled, 1, 1 + rng.below(300) as usize, "test").unwrap();
            let after: Vec<(u32, u32)> = held.iter().map(|&a| moved.new_position(a)).collect();
            assert_eq!(values(&h, &after), before, "every held row keeps its values (seed {seed})");
            for (i, &a) in held.iter().enumerate() {
                assert_eq!(moved.moves(a), was_victim[i], "only rows of rewritten batches move (seed {seed})");
            }
            let (stored, live) = h.rows();
            assert_eq!(live, held.len(), "seed {seed}");
            assert!(stored <= 2 * live, "{stored} stored rows for {live} held after compaction (seed {seed})");
            for (b, &v) in victims.iter().enumerate() {
                if v && !after.iter().any(|a| a.0 == b as u32) {
                    assert!(h.column(b as u32, 0, "test").is_err(), "rewritten batch {b} freed (seed {seed})");
                }
            }
            // Moved rows keep their position order, packed: later snapshots slice long runs.
            let mut sorted = moving;
            sorted.sort_unstable();
            let news: Vec<(u32, u32)> = sorted.iter().map(|&a| moved.new_position(a)).collect();
            for w in news.windows(2) {
                assert!(w[0].0 != w[1].0 || w[1].1 == w[0].1 + 1, "{w:?} (seed {seed})");
            }
        }
    }

    #[test]
    fn compaction_refuses_rows_that_do_not_match_the_counts() {
        let mut h = HeldBatches::default();
        let a = h.reserve();
        let data = ints(&[1, 2, 3, 4]);
        h.fill(a, data.clone(), 4);
        h.release((a, 0));
        h.release((a, 1));
        h.release((a, 2));
        let victims = h.compaction_victims(0);
        assert_eq!(victims, vec![true]);
        let err = h.compact(&victims, vec![], 1, 10, "test").unwrap_err().to_string();
        assert!(err.contains("compaction was given 0 rows for stored batches that hold 1"), "{err}");
        let err = h.compact(&victims, vec![(a, 9)], 1, 10, "test").unwrap_err().to_string();
        assert!(err.contains("compaction was given"), "{err}");
        assert_eq!(h.rows(), (4, 1), "a refused compaction changes nothing");
        let mut twice = HeldBatches::default();
        let b = twice.reserve();
        twice.fill(b, ints(&[1, 2, 3, 4, 5]), 5);
        (0..3).for_each(|i| twice.release((b, i)));
        let err = twice.compact(&[true], vec![(b, 4), (b, 4)], 1, 10, "test").unwrap_err().to_string();
        assert!(err.contains("held row 0:4 given twice"), "{err}");
        assert_eq!(twice.rows(), (5, 2), "a refused compaction changes nothing");
        let moved = h.compact(&victims, vec![(a, 3)], 1, 10, "test").unwrap();
        let at = moved.new_position((a, 3));
        assert_eq!(h.gather(&[at], 1, "test").unwrap()[0].as_primitive::<Int64Type>().value(0), 4);
        let kept = h.column(at.0, 0, "test").unwrap().as_primitive::<Int64Type>().values().as_ptr();
        let old = data[0].as_primitive::<Int64Type>().values().as_ptr();
        assert_ne!(kept, old.wrapping_add(3), "a compacted row is copied, not a slice keeping the old buffer");
        assert_eq!(h.rows(), (1, 1));
    }

    #[test]
    fn by_position_sorts_as_a_comparison_sort_does() {
        let mut rng = crate::test_rng::Lcg::seeded("by_position");
        for _ in 0..20 {
            let n = rng.below(5000) as usize;
            let slots = 1 + rng.below(40) as u32;
            let items: Vec<((u32, u32), usize)> =
                (0..n).map(|i| ((rng.below(slots as u64) as u32, rng.below(100_000) as u32), i)).collect();
            let mut want = items.clone();
            want.sort_unstable_by_key(|x| x.0);
            let (positions, mut ids) = by_position(items);
            let keys = |v: &[((u32, u32), usize)]| v.iter().map(|x| x.0).collect::<Vec<_>>();
            assert_eq!(positions, keys(&want), "seed {}", rng.seed());
            ids.sort_unstable();
            assert_eq!(ids, (0..n).collect::<Vec<_>>(), "every item once (seed {})", rng.seed());
        }
    }
}
