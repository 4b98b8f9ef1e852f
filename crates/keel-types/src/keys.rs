//! Key hashing, key groups and their assignment to subtasks.
//!
//! Keyed state is partitioned over a fixed number of key groups (the job's maximum parallelism),
//! not over subtasks, so that a checkpoint taken at one parallelism restores at another: each
//! key group moves whole to the subtask that owns it now.
//!
//! Invariants: `hash_key` is xxh3-64 with seed 0 over the caller's canonical key bytes and must
//! never change (checkpoints and topic partitioning depend on it); key group `g` of `n` groups is
//! owned by subtask `g * p / n` at parallelism `p` (contiguous ranges, as Flink assigns them).

use xxhash_rust::xxh3::xxh3_64;

/// The number of key groups a job uses unless configured otherwise.
pub const DEFAULT_KEY_GROUPS: u32 = 128;

/// Stable 64-bit hash of a key's canonical bytes.
pub fn hash_key(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// The key group of a key hash, in `0..key_groups`.
pub fn key_group(hash: u64, key_groups: u32) -> u32 {
    // Mix the high bits in so that hashes differing only above bit 32 spread too.
    ((hash ^ (hash >> 32)) % u64::from(key_groups)) as u32
}

/// The subtask, in `0..parallelism`, that owns a key group.
pub fn subtask_of_key_group(group: u32, key_groups: u32, parallelism: u32) -> u32 {
    (u64::from(group) * u64::from(parallelism) / u64::from(key_groups)) as u32
}

/// The contiguous range of key groups a subtask owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyGroupRange {
    pub start: u32,
    pub end: u32,
}

impl KeyGroupRange {
    /// The key groups owned by `subtask` at `parallelism` (inverse of `subtask_of_key_group`).
    pub fn of_subtask(subtask: u32, key_groups: u32, parallelism: u32) -> Self {
        let start = (u64::from(subtask) * u64::from(key_groups)).div_ceil(u64::from(parallelism)) as u32;
        let end = (u64::from(subtask + 1) * u64::from(key_groups)).div_ceil(u64::from(parallelism)) as u32;
        KeyGroupRange { start, end }
    }

    pub fn contains(&self, group: u32) -> bool {
        group >= self.start && group < self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_partition_all_groups_and_agree_with_owner() {
        for groups in [1u32, 7, 128, 1000] {
            for p in 1..=9u32.min(groups) {
                let mut covered = 0;
                for s in 0..p {
                    let r = KeyGroupRange::of_subtask(s, groups, p);
                    assert!(r.start <= r.end);
                    for g in r.start..r.end {
                        assert_eq!(subtask_of_key_group(g, groups, p), s, "groups={groups} p={p} g={g}");
                    }
                    covered += r.end - r.start;
                }
                assert_eq!(covered, groups);
            }
        }
    }

    #[test]
    fn hash_is_stable() {
        // Pinned: checkpoints and topic partitioning store the consequences of this value.
        assert_eq!(hash_key(b"user-1"), xxh3_64(b"user-1"));
        assert_eq!(key_group(hash_key(b""), 128), key_group(0x2d06800538d394c2, 128));
    }
}
