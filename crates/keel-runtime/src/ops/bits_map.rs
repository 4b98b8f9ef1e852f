//! The map behind a COUNT(DISTINCT) family (`distinct::Family`): per distinct value (`i64`), the
//! bits of the calls that have seen it, in one flat table whose slot for a value is known before
//! it is read, so that a batch can prefetch the slots of rows a few ahead.
//!
//! Why not hashbrown: in q16 each bid goes to one of about ten thousand groups at random, so each
//! probe of a group's map missed the cache; 22% of q16's CPU time was the wait for hashbrown's
//! control bytes and buckets. hashbrown does not say where a key's probe starts, so it cannot be
//! prefetched; here a value's home slot is its Fibonacci hash, and the probe is linear from there.
//!
//! Invariants: a slot is empty exactly when its bits are 0 (a stored value always has some call's
//! bit); the table's length is a power of two (or 0) and at most `MAX_LOAD` of it is full, so a
//! probe always ends at an empty slot.

/// Full slots per slot, at most (7/10).
const MAX_LOAD: (usize, usize) = (7, 10);

#[derive(Debug, Default)]
pub(crate) struct BitsMap {
    /// (value, bits); bits 0 marks an empty slot.
    slots: Vec<(i64, u64)>,
    len: usize,
}

impl BitsMap {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The home slot of `v` in a table of `n` slots (a power of two, at least 2).
    fn home(v: i64, n: usize) -> usize {
        let h = (v as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> (64 - n.trailing_zeros())) as usize
    }

    /// Asks the processor to fetch `v`'s home slot into the cache.
    pub fn prefetch(&self, v: i64) {
        if self.slots.len() < 2 {
            return;
        }
        let at: *const (i64, u64) = &self.slots[Self::home(v, self.slots.len())];
        prefetch(at.cast());
    }

    /// Asks the processor to fetch this map's header (where its table is) into the cache.
    pub fn prefetch_header(&self) {
        let at: *const BitsMap = self;
        prefetch(at.cast());
    }

    /// ORs `bits` (not 0) into `v`'s bits, adding `v` if new; returns the bits `v` had before.
    pub fn or_insert(&mut self, v: i64, bits: u64) -> u64 {
        debug_assert!(bits != 0, "a stored value has some call's bit");
        if (self.len + 1) * MAX_LOAD.1 > self.slots.len() * MAX_LOAD.0 {
            self.grow();
        }
        let n = self.slots.len();
        let mut i = Self::home(v, n);
        loop {
            let slot = &mut self.slots[i];
            if slot.1 == 0 {
                *slot = (v, bits);
                self.len += 1;
                return 0;
            }
            if slot.0 == v {
                let before = slot.1;
                slot.1 |= bits;
                return before;
            }
            i = (i + 1) & (n - 1);
        }
    }

    fn grow(&mut self) {
        let n = (self.slots.len() * 2).max(8);
        let old = std::mem::replace(&mut self.slots, vec![(0, 0); n]);
        for (v, bits) in old.into_iter().filter(|s| s.1 != 0) {
            let mut i = Self::home(v, n);
            while self.slots[i].1 != 0 {
                i = (i + 1) & (n - 1);
            }
            self.slots[i] = (v, bits);
        }
    }

    /// Every value with its bits, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.slots.iter().copied().filter(|s| s.1 != 0)
    }
}

#[cfg(target_arch = "x86_64")]
fn prefetch(at: *const i8) {
    // SAFETY: a prefetch is a hint that never faults, whatever the address; `at` points into a
    // live allocation anyway.
    unsafe { std::arch::x86_64::_mm_prefetch(at, std::arch::x86_64::_MM_HINT_T0) }
}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch(_at: *const i8) {}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::test_rng::Lcg;
    use std::collections::HashMap;

    #[test]
    fn holds_what_a_hash_map_holds() {
        let mut rng = Lcg::seeded("bits_map");
        let mut map = BitsMap::default();
        let mut expected: HashMap<i64, u64> = HashMap::new();
        let special = [0, 1, -1, i64::MIN, i64::MAX, 1 << 32, -(1 << 40)];
        for round in 0..20_000u64 {
            let v = match rng.below(4) {
                0 => special[rng.below(special.len() as u64) as usize],
                1 => round as i64,                 // increasing ids, as Nexmark's
                2 => (rng.below(64) << 20) as i64, // strided: same low bits
                _ => rng.bits() as i64,
            };
            let bits = 1 << rng.below(64);
            map.prefetch(v);
            let before = map.or_insert(v, bits);
            let e = expected.entry(v).or_insert(0);
            assert_eq!(before, *e, "value {v} (seed {})", rng.seed());
            *e |= bits;
            assert_eq!(map.len(), expected.len());
        }
        let mut got: Vec<(i64, u64)> = map.iter().collect();
        let mut want: Vec<(i64, u64)> = expected.into_iter().collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
        let load = map.len() * MAX_LOAD.1;
        assert!(load <= map.slots.len() * MAX_LOAD.0, "load stays at most 7/10");
        assert!(map.slots.len().is_power_of_two());
    }

    #[test]
    fn an_empty_map_has_nothing_and_prefetches_safely() {
        let map = BitsMap::default();
        map.prefetch(5);
        map.prefetch_header();
        assert_eq!(map.iter().count(), 0);
        assert_eq!(map.len(), 0);
    }
}
