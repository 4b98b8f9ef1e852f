//! How batches move from one stage's subtasks to the next: partitioning schemes and the stable
//! key hash that decides a row's key group.
//!
//! Invariant: `row_hashes` depends only on key values (not on Arrow's physical layout or on the
//! integer width: INT 5 and BIGINT 5 hash alike), so the key group of a key is the same in every
//! run, process and parallelism; keyed state stored per key group therefore restores correctly.

use crate::error::{Result, RuntimeError};
use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::{
    DataType, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use keel_types::keys::{key_group, subtask_of_key_group};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// How a stage's output is spread over the next stage's subtasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitioning {
    /// Subtask i sends to subtask i (same parallelism).
    Forward,
    /// By the hash of these columns' values, through key groups.
    Hash(Vec<usize>),
    /// Round-robin over all subtasks, batch by batch.
    Rebalance,
}

const SEED: u64 = 0x6b65_656c; // "keel"

fn mix(seed: u64, tag: u64, bytes: &[u8]) -> u64 {
    xxh3_64_with_seed(bytes, seed ^ tag.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The stable hash of each row's key (the values of `keys`, in order).
pub fn row_hashes(batch: &RecordBatch, keys: &[usize]) -> Result<Vec<u64>> {
    let mut hashes = vec![SEED; batch.num_rows()];
    for &k in keys {
        let col = batch.column(k);
        macro_rules! ints {
            ($t:ty) => {{
                let a = col.as_primitive::<$t>();
                for (i, h) in hashes.iter_mut().enumerate() {
                    *h = if a.is_null(i) { mix(*h, 0, &[]) } else { mix(*h, 2, &(a.value(i) as i64).to_le_bytes()) };
                }
            }};
        }
        match col.data_type() {
            DataType::Utf8 => {
                let a = col.as_string::<i32>();
                for (i, h) in hashes.iter_mut().enumerate() {
                    *h = if a.is_null(i) { mix(*h, 0, &[]) } else { mix(*h, 1, a.value(i).as_bytes()) };
                }
            }
            DataType::LargeUtf8 => {
                let a = col.as_string::<i64>();
                for (i, h) in hashes.iter_mut().enumerate() {
                    *h = if a.is_null(i) { mix(*h, 0, &[]) } else { mix(*h, 1, a.value(i).as_bytes()) };
                }
            }
            DataType::Utf8View => {
                let a = col.as_string_view();
                for (i, h) in hashes.iter_mut().enumerate() {
                    *h = if a.is_null(i) { mix(*h, 0, &[]) } else { mix(*h, 1, a.value(i).as_bytes()) };
                }
            }
            DataType::Int8 => ints!(Int8Type),
            DataType::Int16 => ints!(Int16Type),
            DataType::Int32 => ints!(Int32Type),
            DataType::Int64 => ints!(Int64Type),
            DataType::UInt8 => ints!(UInt8Type),
            DataType::UInt16 => ints!(UInt16Type),
            DataType::UInt32 => ints!(UInt32Type),
            DataType::UInt64 => ints!(UInt64Type),
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
                let a =
                    arrow::compute::cast(col, &DataType::Int64).map_err(RuntimeError::arrow("hashing a time key"))?;
                let a = a.as_primitive::<Int64Type>();
                for (i, h) in hashes.iter_mut().enumerate() {
                    *h = if a.is_null(i) { mix(*h, 0, &[]) } else { mix(*h, 2, &a.value(i).to_le_bytes()) };
                }
            }
            DataType::Boolean => {
                let a = col.as_boolean();
                for (i, h) in hashes.iter_mut().enumerate() {
                    *h = if a.is_null(i) { mix(*h, 0, &[]) } else { mix(*h, 5, &[a.value(i) as u8]) };
                }
            }
            DataType::Float32 | DataType::Float64 => {
                let a = arrow::compute::cast(col, &DataType::Float64)
                    .map_err(RuntimeError::arrow("hashing a float key"))?;
                let a = a.as_primitive::<arrow::datatypes::Float64Type>();
                for (i, h) in hashes.iter_mut().enumerate() {
                    let v = a.value(i);
                    let v = if v == 0.0 { 0.0f64 } else { v };
                    *h = if a.is_null(i) { mix(*h, 0, &[]) } else { mix(*h, 4, &v.to_bits().to_le_bytes()) };
                }
            }
            DataType::Decimal128(_, _) => {
                let a = col.as_primitive::<arrow::datatypes::Decimal128Type>();
                for (i, h) in hashes.iter_mut().enumerate() {
                    *h = if a.is_null(i) { mix(*h, 0, &[]) } else { mix(*h, 7, &a.value(i).to_le_bytes()) };
                }
            }
            other => {
                return Err(RuntimeError::User(format!(
                    "cannot group or partition by a column of type {other}; use a string, integer, time, boolean, float or decimal column"
                )));
            }
        }
    }
    Ok(hashes)
}

/// The key group of each row.
pub fn row_key_groups(batch: &RecordBatch, keys: &[usize], key_groups: u32) -> Result<Vec<u32>> {
    Ok(row_hashes(batch, keys)?.into_iter().map(|h| key_group(h, key_groups)).collect())
}

/// The rows of a keyed-state snapshot table (its first column: each row's key group, UInt32)
/// that a subtask owning `range` restores; `None` when it owns none of them.
pub fn owned_rows(batch: &RecordBatch, range: keel_types::KeyGroupRange) -> Result<Option<RecordBatch>> {
    let kg = batch.column(0).as_primitive_opt::<arrow::datatypes::UInt32Type>().ok_or_else(|| {
        RuntimeError::Internal("a keyed-state table must start with a UInt32 key_group column".into())
    })?;
    let keep: Vec<u32> = (0..batch.num_rows() as u32).filter(|&i| range.contains(kg.value(i as usize))).collect();
    if keep.is_empty() {
        return Ok(None);
    }
    if keep.len() == batch.num_rows() {
        return Ok(Some(batch.clone()));
    }
    arrow::compute::take_record_batch(batch, &UInt32Array::from(keep))
        .map(Some)
        .map_err(RuntimeError::arrow("restoring keyed state"))
}

/// Splits `batch` into one batch per target subtask (`None` where no row goes).
pub fn split_by_key(
    batch: &RecordBatch,
    keys: &[usize],
    key_groups: u32,
    parallelism: u32,
) -> Result<Vec<Option<RecordBatch>>> {
    let n = parallelism as usize;
    if n == 1 {
        return Ok(vec![Some(batch.clone())]);
    }
    let groups = row_key_groups(batch, keys, key_groups)?;
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (row, g) in groups.into_iter().enumerate() {
        indices[subtask_of_key_group(g, key_groups, parallelism) as usize].push(row as u32);
    }
    indices
        .into_iter()
        .map(|idx| {
            if idx.is_empty() {
                return Ok(None);
            }
            let idx = UInt32Array::from(idx);
            arrow::compute::take_record_batch(batch, &idx)
                .map(Some)
                .map_err(RuntimeError::arrow("splitting a batch by key"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn integer_width_does_not_change_the_hash() {
        let a = RecordBatch::try_from_iter(vec![("k", Arc::new(Int32Array::from(vec![5, 6])) as _)]).unwrap();
        let b = RecordBatch::try_from_iter(vec![("k", Arc::new(Int64Array::from(vec![5, 6])) as _)]).unwrap();
        assert_eq!(row_hashes(&a, &[0]).unwrap(), row_hashes(&b, &[0]).unwrap());
    }

    #[test]
    fn split_sends_equal_keys_to_one_subtask_and_keeps_every_row() {
        let keys: Vec<String> = (0..500).map(|i| format!("user-{}", i % 37)).collect();
        let vals: Vec<i64> = (0..500).collect();
        let batch = RecordBatch::try_from_iter(vec![
            ("k", Arc::new(StringArray::from(keys)) as _),
            ("v", Arc::new(Int64Array::from(vals)) as _),
        ])
        .unwrap();
        let parts = split_by_key(&batch, &[0], 128, 3).unwrap();
        let mut total = 0;
        let mut owner = std::collections::HashMap::new();
        for (s, p) in parts.iter().enumerate() {
            let Some(p) = p else { continue };
            total += p.num_rows();
            for k in p.column(0).as_string::<i32>().iter().flatten() {
                assert_eq!(*owner.entry(k.to_string()).or_insert(s), s, "key {k} went to two subtasks");
            }
        }
        assert_eq!(total, 500);
        assert!(parts.iter().filter(|p| p.is_some()).count() > 1, "37 keys should spread over subtasks");
    }
}
