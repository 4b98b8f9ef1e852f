//! COUNT(DISTINCT x) over integer-like values (all integer widths up to 32 bits unsigned, BIGINT,
//! timestamps, dates): each group's distinct values as a set of `i64`, which is several times
//! cheaper to probe than a set of row-format byte strings (no allocation, no byte compare).
//!
//! Invariant: the checkpointed state is byte-for-byte the format of the general distinct sets
//! (per group, length-prefixed values in Arrow's row format of the argument's own type), so a
//! checkpoint taken by either representation restores into the other.

use crate::error::{Result, RuntimeError};
use crate::ops::bits_map::BitsMap;
use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int64Array};
use arrow::datatypes::{DataType, Int64Type};
use arrow::row::{RowConverter, SortField};
use hashbrown::HashSet;

/// Whether values of type `t` are held exactly in an `i64`.
pub(crate) fn fits_i64(t: &DataType) -> bool {
    use DataType::*;
    matches!(t, Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | Timestamp(_, _) | Date32 | Date64)
}

#[derive(Debug)]
pub(crate) struct IntSets {
    sets: Vec<HashSet<i64>>,
    /// The argument's type, for the row format of checkpoints.
    arg_type: DataType,
    conv: RowConverter,
}

impl IntSets {
    pub fn new(arg_type: &DataType) -> Result<Self> {
        let conv = RowConverter::new(vec![SortField::new(arg_type.clone())])
            .map_err(RuntimeError::arrow("distinct values"))?;
        Ok(IntSets { sets: vec![], arg_type: arg_type.clone(), conv })
    }

    pub fn ensure(&mut self, n: usize) {
        if self.sets.len() < n {
            self.sets.resize_with(n, HashSet::new);
        }
    }

    pub fn reset(&mut self, g: usize) {
        self.sets[g] = HashSet::new();
    }

    /// Adds `from`'s values to `into`; returns `into`'s new size.
    pub fn merge(&mut self, into: usize, from: usize) -> i64 {
        let other = std::mem::take(&mut self.sets[from]);
        self.sets[into].extend(other.iter().copied());
        self.sets[from] = other;
        self.sets[into].len() as i64
    }

    /// Adds row `i` of `arg` to the set of `groups[i]`, counting values new to their group.
    pub fn update(&mut self, groups: &[u32], arg: &ArrayRef, counts: &mut [i64]) -> Result<()> {
        let a = arrow::compute::cast(arg, &DataType::Int64).map_err(RuntimeError::arrow("COUNT(DISTINCT) values"))?;
        let a = a.as_primitive::<Int64Type>();
        for (i, &g) in groups.iter().enumerate() {
            if a.is_valid(i) && self.sets[g as usize].insert(a.value(i)) {
                counts[g as usize] += 1;
            }
        }
        Ok(())
    }

    /// Per group, its values length-prefixed in row format (see the module's invariant).
    pub fn state(&self, groups: &[u32]) -> Result<ArrayRef> {
        self.encode(groups, |g, out| out.extend(self.sets[g as usize].iter().copied()))
    }

    /// Per group, the values `values(g, ..)` appends, in this call's checkpoint format.
    fn encode(&self, groups: &[u32], mut values: impl FnMut(u32, &mut Vec<i64>)) -> Result<ArrayRef> {
        let (mut all, mut ends) = (Vec::new(), Vec::with_capacity(groups.len()));
        for &g in groups {
            values(g, &mut all);
            ends.push(all.len());
        }
        let values = arrow::compute::cast(&Int64Array::from(all), &self.arg_type)
            .map_err(RuntimeError::arrow("COUNT(DISTINCT) state"))?;
        let rows = self.conv.convert_columns(&[values]).map_err(RuntimeError::arrow("COUNT(DISTINCT) state"))?;
        let mut at = 0;
        let blobs = ends.into_iter().map(|end| {
            let mut blob = Vec::new();
            for i in at..end {
                let v = rows.row(i).data();
                blob.extend_from_slice(&(v.len() as u32).to_le_bytes());
                blob.extend_from_slice(v);
            }
            at = end;
            blob
        });
        Ok(std::sync::Arc::new(BinaryArray::from_iter_values(blobs)))
    }

    /// Loads the sets of `groups` from `state`'s blobs; returns each group's size.
    pub fn restore(&mut self, groups: &[u32], blobs: &BinaryArray) -> Result<Vec<i64>> {
        let bad = || RuntimeError::Internal("COUNT(DISTINCT) state is damaged: a value overruns its group".into());
        // Every value of a fixed-width type is its null/order byte and the value's bytes.
        let width = self.arg_type.primitive_width().map(|w| w + 1);
        let parser = self.conv.parser();
        let mut rows = vec![];
        let mut owners = vec![];
        for (i, &g) in groups.iter().enumerate() {
            let mut blob = blobs.value(i);
            while blob.len() >= 4 {
                let n = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
                let v = blob.get(4..4 + n).filter(|v| width.is_none_or(|w| v.len() == w)).ok_or_else(bad)?;
                rows.push(parser.parse(v));
                owners.push(g);
                blob = &blob[4 + n..];
            }
        }
        let values = self.conv.convert_rows(rows).map_err(RuntimeError::arrow("COUNT(DISTINCT) state"))?;
        let values =
            arrow::compute::cast(&values[0], &DataType::Int64).map_err(RuntimeError::arrow("COUNT(DISTINCT) state"))?;
        let values = values.as_primitive::<Int64Type>();
        for (i, &g) in owners.iter().enumerate() {
            self.sets[g as usize].insert(values.value(i));
        }
        Ok(groups.iter().map(|&g| self.sets[g as usize].len() as i64).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int32Array;
    use std::sync::Arc;

    /// Values of group blobs written in the general format, as i32.
    fn values(blob: &[u8]) -> Vec<i32> {
        let conv = RowConverter::new(vec![SortField::new(DataType::Int32)]).unwrap();
        let parser = conv.parser();
        let mut rows = vec![];
        let mut blob = blob;
        while !blob.is_empty() {
            let n = u32::from_le_bytes(blob[..4].try_into().unwrap()) as usize;
            rows.push(parser.parse(&blob[4..4 + n]));
            blob = &blob[4 + n..];
        }
        let cols = conv.convert_rows(rows).unwrap();
        let mut v: Vec<i32> = cols[0].as_primitive::<arrow::datatypes::Int32Type>().values().to_vec();
        v.sort_unstable();
        v
    }

    #[test]
    fn state_is_the_row_format_of_the_general_sets() {
        // A group's blob as the general (row-format) distinct sets write it.
        let conv = RowConverter::new(vec![SortField::new(DataType::Int32)]).unwrap();
        let rows = conv.convert_columns(&[Arc::new(Int32Array::from(vec![5, -9])) as ArrayRef]).unwrap();
        let mut blob = vec![];
        for r in rows.iter() {
            blob.extend_from_slice(&(r.data().len() as u32).to_le_bytes());
            blob.extend_from_slice(r.data());
        }
        let mut s = IntSets::new(&DataType::Int32).unwrap();
        s.ensure(2);
        assert_eq!(s.restore(&[1], &BinaryArray::from_iter_values([blob.clone()])).unwrap(), vec![2]);
        let mut counts = vec![0, 2];
        let arg: ArrayRef = Arc::new(Int32Array::from(vec![Some(5), Some(7), Some(5), None]));
        s.update(&[1, 1, 0, 0], &arg, &mut counts).unwrap();
        assert_eq!(counts, vec![1, 3], "5 is not new to group 1, 7 is; 5 is new to group 0; NULL is not counted");
        let state = s.state(&[1, 0]).unwrap();
        let state = state.as_binary::<i32>();
        assert_eq!(values(state.value(0)), vec![-9, 5, 7]);
        assert_eq!(values(state.value(1)), vec![5]);
        assert_eq!(s.merge(0, 1), 3);

        let mut damaged = IntSets::new(&DataType::Int32).unwrap();
        damaged.ensure(1);
        let cut = BinaryArray::from_iter_values([blob[..blob.len() - 1].to_vec()]);
        assert!(damaged.restore(&[0], &cut).is_err(), "a value cut short is refused");
    }
}

/// COUNT(DISTINCT x) calls that differ only in their FILTER (q16's four `COUNT(DISTINCT bidder)
/// FILTER (WHERE price ...)`), over append-only input: one map per group from value to a bit per
/// call, so that a row costs one probe for the whole family instead of one per call. Each call's
/// argument is `x` where its filter holds and NULL elsewhere, so the non-NULL arguments of a row
/// are all the same value.
///
/// Invariant: the calls' own sets (`IntSets`) stay empty while the family holds the values; a
/// snapshot writes each call's values from the map in the calls' own format (`state`), and a
/// restore loads them into the calls' sets first and then moves them into the map (`import`), so
/// the checkpoint format is that of separate calls.
#[derive(Debug)]
pub(crate) struct Family {
    /// The aggregate calls, in bit order (at most 64).
    pub calls: Vec<usize>,
    maps: Vec<BitsMap>,
}

/// How many rows ahead `Family::update` prefetches a row's slot (its map's header twice as far).
const AHEAD: usize = 8;

impl Family {
    pub fn new(calls: Vec<usize>) -> Result<Self> {
        if calls.len() > 64 {
            return Err(RuntimeError::Internal("a COUNT(DISTINCT) family of more than 64 calls".into()));
        }
        Ok(Family { calls, maps: vec![] })
    }

    pub fn ensure(&mut self, n: usize) {
        if self.maps.len() < n {
            self.maps.resize_with(n, BitsMap::default);
        }
    }

    pub fn reset(&mut self, g: usize) {
        self.maps[g] = BitsMap::default();
    }

    /// Adds the rows of `groups`; `args[k]` is call `calls[k]`'s argument. Calls `counted(k, g)`
    /// for each value new to call `k` in group `g`.
    pub fn update(&mut self, groups: &[u32], args: &[ArrayRef], mut counted: impl FnMut(usize, u32)) -> Result<()> {
        let args = args
            .iter()
            .map(|a| arrow::compute::cast(a, &DataType::Int64).map_err(RuntimeError::arrow("COUNT(DISTINCT) values")))
            .collect::<Result<Vec<_>>>()?;
        let args: Vec<&arrow::array::Int64Array> = args.iter().map(|a| a.as_primitive::<Int64Type>()).collect();
        // Each row's group, value and call bits first, so that the slots of rows `AHEAD` on can be
        // prefetched while this row's is probed (the maps miss the cache: see `bits_map`).
        let mut rows: Vec<(u32, i64, u64)> = Vec::with_capacity(groups.len());
        for (i, &g) in groups.iter().enumerate() {
            let mut bits = 0u64;
            let mut value = None;
            for (k, a) in args.iter().enumerate() {
                if a.is_valid(i) {
                    bits |= 1 << k;
                    value = Some(a.value(i));
                }
            }
            if let Some(v) = value {
                rows.push((g, v, bits));
            }
        }
        for (j, &(g, v, bits)) in rows.iter().enumerate() {
            if let Some(&(g, _, _)) = rows.get(j + 2 * AHEAD) {
                self.maps[g as usize].prefetch_header();
            }
            if let Some(&(g, v, _)) = rows.get(j + AHEAD) {
                self.maps[g as usize].prefetch(v);
            }
            let seen = self.maps[g as usize].or_insert(v, bits);
            let new = bits & !seen;
            for k in 0..args.len() {
                if new & (1 << k) != 0 {
                    counted(k, g);
                }
            }
        }
        Ok(())
    }

    /// Call `k`'s state for `groups` (its distinct values, as its own sets `sets` would write
    /// them), straight from the map.
    pub fn state(&self, k: usize, sets: &IntSets, groups: &[u32]) -> Result<ArrayRef> {
        let bit = 1u64 << k;
        sets.encode(groups, |g, out| {
            out.extend(self.maps[g as usize].iter().filter(|(_, b)| *b & bit != 0).map(|(v, _)| v))
        })
    }

    /// Moves restored per-call sets of `groups` into the map.
    pub fn import(&mut self, groups: &[u32], sets: &mut [&mut IntSets]) {
        for &g in groups {
            for (k, s) in sets.iter_mut().enumerate() {
                for v in std::mem::take(&mut s.sets[g as usize]) {
                    self.maps[g as usize].or_insert(v, 1 << k);
                }
            }
        }
    }
}
