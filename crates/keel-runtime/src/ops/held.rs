//! Rows a stateful operator keeps (the join's sides, the Top-N's partitions), held as Arrow
//! columns: each input batch that adds rows gives one stored batch with just those rows, and a
//! held row is its position `(stored batch, row)`. Output and snapshots gather rows from the
//! stored batches with `interleave`, rather than decoding a row format row by row.
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::Int64Type;
    use std::sync::Arc;

    fn ints(v: &[i64]) -> Vec<ArrayRef> {
        vec![Arc::new(Int64Array::from(v.to_vec()))]
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
}
