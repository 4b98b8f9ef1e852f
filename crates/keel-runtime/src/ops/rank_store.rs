//! The rows of one partition of the unwindowed Top-N (`rank.rs`), in order: each row's ordering
//! key, tie-breaker and held position (`Entry`), a sorted vector or a B-tree of them (`Store`),
//! and the numbered result a partition shows (`Ranked`).
//!
//! Invariants: a store is sorted by (ordering key, tie-breaker), which is unique within a
//! partition; a store of more than `TREE_ABOVE` rows is a B-tree and one of fewer than
//! `VEC_BELOW` a vector; `walk` numbers rows as the partition's numbering says and stops past the
//! limit.

use crate::ops::held::Relocation;
use crate::ops::short_bytes::ShortBytes;
use crate::ops::topn::Numbering;
use smallvec::SmallVec;
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// A partition's store switches from a sorted vector to a B-tree above this many rows...
const TREE_ABOVE: usize = 256;
/// ...and back below this many.
const VEC_BELOW: usize = 64;

/// The scalar settings the per-row path needs (copied out of the spec).
#[derive(Debug, Clone, Copy)]
pub(super) struct Cfg {
    pub(super) limit: u64,
    pub(super) numbering: Numbering,
    pub(super) later_wins: bool,
    /// Keep every row (changelog input) rather than only the result.
    pub(super) keep_all: bool,
    pub(super) ttl_ms: Option<u64>,
    pub(super) sweep_ms: u64,
}

impl Cfg {
    /// The tie-breaker of a row with arrival sequence `seq` (its own inverse).
    pub(super) fn tie(&self, seq: u64) -> u64 {
        if self.later_wins { u64::MAX - seq } else { seq }
    }
}

/// One held row: its ordering key bytes (then, for a changelog input, its data in row format) in
/// one buffer, its tie-breaker, and where its columns are held. Ordered by (ordering key,
/// tie-breaker), which is unique within a partition.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) bytes: ShortBytes,
    pub(super) sort_len: u32,
    pub(super) at: (u32, u32),
    pub(super) tie: u64,
}

impl Entry {
    pub(super) fn new(sort: &[u8], row: &[u8], tie: u64, at: (u32, u32)) -> Entry {
        Entry { bytes: ShortBytes::joined(&[sort, row]), sort_len: sort.len() as u32, at, tie }
    }
    pub(super) fn sort(&self) -> &[u8] {
        &self.bytes[..self.sort_len as usize]
    }
    /// The data in row format (changelog input only; empty otherwise).
    pub(super) fn row(&self) -> &[u8] {
        &self.bytes[self.sort_len as usize..]
    }
    /// What makes two held rows the same row of a result: equal data for a changelog input (a
    /// retracted row and its re-insertion are one), the same held row otherwise.
    pub(super) fn ident(&self) -> (&[u8], (u32, u32)) {
        if self.row().is_empty() { (&[], self.at) } else { (self.row(), (0, 0)) }
    }
    /// `ident() == other.ident()`, without a byte compare (a `memcmp` call, even of empty
    /// slices) for append-only input, where the ident is the held row's place: 10% of q19.
    pub(super) fn same_row(&self, other: &Entry) -> bool {
        let (a, b) = (self.row(), other.row());
        if a.is_empty() && b.is_empty() { self.at == other.at } else { a == b }
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sort().cmp(other.sort()).then(self.tie.cmp(&other.tie))
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}

/// A partition's rows in order: a sorted vector while small (its first row inline), a B-tree
/// when large.
#[derive(Debug)]
pub(super) enum Store {
    /// One row is held inline (deduplication keeps one per partition, often millions of them).
    Vec(SmallVec<[Entry; 1]>),
    Tree(BTreeSet<Entry>),
}

pub(super) enum StoreIter<'a> {
    Vec(std::slice::Iter<'a, Entry>),
    Tree(std::collections::btree_set::Iter<'a, Entry>),
}

impl<'a> Iterator for StoreIter<'a> {
    type Item = &'a Entry;
    fn next(&mut self) -> Option<&'a Entry> {
        match self {
            StoreIter::Vec(i) => i.next(),
            StoreIter::Tree(i) => i.next(),
        }
    }
}

/// A result: rows in order with their numbers.
pub(super) type Ranked = Vec<(Entry, u64)>;

impl Store {
    pub(super) fn len(&self) -> usize {
        match self {
            Store::Vec(v) => v.len(),
            Store::Tree(t) => t.len(),
        }
    }
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub(super) fn last(&self) -> Option<&Entry> {
        match self {
            Store::Vec(v) => v.last(),
            Store::Tree(t) => t.last(),
        }
    }
    pub(super) fn iter(&self) -> StoreIter<'_> {
        match self {
            Store::Vec(v) => StoreIter::Vec(v.iter()),
            Store::Tree(t) => StoreIter::Tree(t.iter()),
        }
    }

    pub(super) fn insert(&mut self, e: Entry) {
        match self {
            Store::Vec(v) => {
                let at = v.partition_point(|x| x < &e);
                v.insert(at, e);
                if v.len() > TREE_ABOVE {
                    *self = Store::Tree(std::mem::take(v).into_iter().collect());
                }
            }
            Store::Tree(t) => {
                t.insert(e);
            }
        }
    }

    pub(super) fn remove(&mut self, e: &Entry) {
        match self {
            Store::Vec(v) => {
                if let Ok(at) = v.binary_search(e) {
                    v.remove(at);
                }
            }
            Store::Tree(t) => {
                t.remove(e);
            }
        }
        self.maybe_shrink();
    }

    /// Keeps the first `len` rows; the positions of the others go to `gone`.
    pub(super) fn truncate(&mut self, len: usize, gone: &mut Vec<(u32, u32)>) {
        match self {
            Store::Vec(v) => gone.extend(v.drain(len.min(v.len())..).map(|e| e.at)),
            Store::Tree(t) => {
                while t.len() > len {
                    gone.extend(t.pop_last().map(|e| e.at));
                }
            }
        }
        self.maybe_shrink();
    }

    /// Points the rows a compaction moved at their new places.
    pub(super) fn relocate(&mut self, moved: &Relocation) {
        match self {
            Store::Vec(v) => v.iter_mut().for_each(|e| e.at = moved.new_position(e.at)),
            // A B-tree gives no mutable access to its rows: rebuild it, only when a row moved.
            Store::Tree(t) if t.iter().any(|e| moved.moves(e.at)) => {
                *t = std::mem::take(t)
                    .into_iter()
                    .map(|mut e| {
                        e.at = moved.new_position(e.at);
                        e
                    })
                    .collect()
            }
            Store::Tree(_) => {}
        }
    }

    fn maybe_shrink(&mut self) {
        if let Store::Tree(t) = self
            && t.len() < VEC_BELOW
        {
            *self = Store::Vec(std::mem::take(t).into_iter().collect());
        }
    }

    /// A held row with ordering key `sort` and data `row` (the first in order).
    pub(super) fn find_equal(&self, sort: &[u8], row: &[u8]) -> Option<Entry> {
        let same = |x: &&Entry| x.sort() == sort;
        match self {
            Store::Vec(v) => {
                let from = v.partition_point(|x| x.sort() < sort);
                v[from..].iter().take_while(same).find(|x| x.row() == row).cloned()
            }
            Store::Tree(t) => {
                let probe = Entry::new(sort, &[], 0, (0, 0));
                t.range(probe..).take_while(same).find(|x| x.row() == row).cloned()
            }
        }
    }

    /// Calls `f` with each row of the result and its number, in order; returns how many.
    pub(super) fn walk<'a>(&'a self, cfg: &Cfg, mut f: impl FnMut(&'a Entry, u64)) -> usize {
        let (mut position, mut number, mut count) = (0u64, 0u64, 0usize);
        let mut prev: Option<&[u8]> = None;
        for e in self.iter() {
            position += 1;
            // Ties matter only to RANK and DENSE_RANK (no byte compare for ROW_NUMBER).
            number = match cfg.numbering {
                Numbering::RowNumber => position,
                Numbering::Rank | Numbering::DenseRank if prev == Some(e.sort()) => number,
                Numbering::Rank => position,
                Numbering::DenseRank => number + 1,
            };
            if number > cfg.limit {
                break;
            }
            f(e, number);
            count += 1;
            prev = Some(e.sort());
        }
        count
    }

    pub(super) fn result(&self, cfg: &Cfg) -> Ranked {
        let mut out = Vec::with_capacity(self.len().min(cfg.limit as usize));
        self.walk(cfg, |e, n| out.push((e.clone(), n)));
        out
    }

    /// Whether a new row would enter a store that holds exactly its result (append-only input).
    pub(super) fn would_keep(&self, sort: &[u8], tie: u64, cfg: &Cfg) -> bool {
        let Some(last) = self.last() else { return true };
        if (sort, tie) < (last.sort(), last.tie) {
            return true;
        }
        let ties_last = sort == last.sort();
        let below_limit = (self.len() as u64) < cfg.limit;
        match cfg.numbering {
            Numbering::RowNumber => below_limit,
            Numbering::Rank => ties_last || below_limit,
            Numbering::DenseRank => {
                let mut distinct = 0;
                self.walk(cfg, |_, n| distinct = n);
                ties_last || distinct < cfg.limit
            }
        }
    }
}

/// The rows of `a` (with their numbers) left over after matching them one-to-one with the same
/// rows (`Entry::ident`) of `b`, in `a`'s order.
pub(super) fn unmatched<'a>(a: &'a Ranked, b: &Ranked) -> Vec<(&'a Entry, u64)> {
    let by_row = |r: &Ranked| {
        let mut idx: Vec<usize> = (0..r.len()).collect();
        idx.sort_by(|&x, &y| r[x].0.ident().cmp(&r[y].0.ident()));
        idx
    };
    let (ai, bi) = (by_row(a), by_row(b));
    let mut matched = vec![false; a.len()];
    let (mut i, mut j) = (0, 0);
    while i < ai.len() && j < bi.len() {
        match a[ai[i]].0.ident().cmp(&b[bi[j]].0.ident()) {
            Ordering::Less => i += 1,
            Ordering::Greater => j += 1,
            Ordering::Equal => {
                matched[ai[i]] = true;
                i += 1;
                j += 1;
            }
        }
    }
    a.iter().zip(matched).filter(|(_, m)| !m).map(|((e, n), _)| (e, *n)).collect()
}
