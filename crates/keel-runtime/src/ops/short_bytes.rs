//! A byte string kept inline when short (up to 22 bytes: most row-format keys of one or two
//! numbers) and shared on the heap otherwise, in 24 bytes either way. Operators that keep one
//! key per partition or row (the streaming Top-N holds millions) save an allocation, a pointer
//! chase on every comparison, and most of the memory the allocation cost.
//!
//! Invariants: the bytes read back are exactly the bytes given; hashing, equality and ordering
//! are those of the byte slice, so a map keyed by `ShortBytes` can be probed with `&[u8]`;
//! cloning a long one shares it (no copy).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

const INLINE: usize = 22;

#[derive(Clone)]
pub(crate) enum ShortBytes {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<[u8]>),
}

impl ShortBytes {
    /// The concatenation of `parts`.
    pub(crate) fn joined(parts: &[&[u8]]) -> ShortBytes {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len <= INLINE {
            let mut bytes = [0u8; INLINE];
            let mut at = 0;
            for p in parts {
                bytes[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            ShortBytes::Inline { len: len as u8, bytes }
        } else {
            let mut v = Vec::with_capacity(len);
            for p in parts {
                v.extend_from_slice(p);
            }
            ShortBytes::Shared(v.into())
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            ShortBytes::Inline { len, bytes } => &bytes[..*len as usize],
            ShortBytes::Shared(b) => b,
        }
    }
}

impl From<&[u8]> for ShortBytes {
    fn from(b: &[u8]) -> Self {
        ShortBytes::joined(&[b])
    }
}

impl Borrow<[u8]> for ShortBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::ops::Deref for ShortBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Hash for ShortBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl PartialEq for ShortBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}
impl Eq for ShortBytes {}

impl Ord for ShortBytes {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}
impl PartialOrd for ShortBytes {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Debug for ShortBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn short_and_long_read_back_hash_and_compare_as_slices() {
        let hasher = std::collections::hash_map::RandomState::new();
        let long: Vec<u8> = (0..40).collect();
        for bytes in [&[][..], &[1, 2, 3][..], &long[..22], &long[..23], &long[..]] {
            let s = ShortBytes::from(bytes);
            assert_eq!(s.as_slice(), bytes);
            assert_eq!(matches!(s, ShortBytes::Inline { .. }), bytes.len() <= 22);
            assert_eq!(hasher.hash_one(&s), hasher.hash_one(bytes), "hashes as its slice");
            let (a, b) = bytes.split_at(bytes.len() / 2);
            assert_eq!(ShortBytes::joined(&[a, b]), s);
        }
        assert!(ShortBytes::from(&long[..23]) < ShortBytes::from(&long[..]));
        assert!(ShortBytes::from(&[2][..]) > ShortBytes::from(&long[..]));
        assert_eq!(std::mem::size_of::<ShortBytes>(), 24);
        let mut map: hashbrown::HashMap<ShortBytes, u32> = hashbrown::HashMap::new();
        map.insert(ShortBytes::from(&long[..]), 1);
        map.insert(ShortBytes::from(&[9u8][..]), 2);
        assert_eq!(map.get(&long[..]), Some(&1));
        assert_eq!(map.get(&[9u8][..]), Some(&2));
    }
}
