//! A hash map whose versions share structure: the entries live in [`SHARDS`] hash maps behind
//! `Arc`s, so a version with one entry changed copies one shard (a thousandth of a million-key
//! map) and shares the rest.
//!
//! It replaced `imbl::HashMap` for the key table: imbl's trie cost ~200 bytes an entry for a
//! 40-byte entry (a million keys: ~400 MiB for the two key maps); a shard is a plain hash map
//! (~86 bytes an entry), and a lookup is one hash and one probe. See edge/benches/big_config.rs.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use crate::FastMap;

/// A one-key change at a million entries copies ~1,000 of them (tens of microseconds); an empty
/// map costs ~70 KiB.
const SHARDS: usize = 1024;

#[derive(Clone)]
pub struct ShardMap<K, V> {
    hasher: foldhash::fast::RandomState,
    /// Cloning a version copies these 1,024 pointers (a few microseconds).
    shards: Vec<Arc<FastMap<K, V>>>,
    len: usize,
}

impl<K, V> Default for ShardMap<K, V> {
    fn default() -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| Arc::new(FastMap::default())).collect(),
            len: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> ShardMap<K, V> {
    fn shard<Q: Hash + ?Sized>(&self, k: &Q) -> usize {
        // The high bits: the shard's own map hashes with another seed, so they stay independent.
        (self.hasher.hash_one(k) >> 54) as usize % SHARDS
    }

    pub fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(k)].get(k)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The shard `i`, copied first if another version shares it.
    fn shard_mut(&mut self, i: usize) -> &mut FastMap<K, V> {
        Arc::make_mut(&mut self.shards[i])
    }

    /// Room for `n` entries in all without any shard growing (unless one gets more than four
    /// standard deviations above its share). Only for large maps: below ~250,000 entries the
    /// tables growing leave little behind, and the margin would cost more than it saves.
    pub fn reserve(&mut self, n: usize) {
        let share = n / SHARDS;
        if share < 256 {
            return;
        }
        let each = share + 4 * share.isqrt() + 8;
        for i in 0..SHARDS {
            let shard = self.shard_mut(i);
            shard.reserve(each.saturating_sub(shard.len()));
        }
    }

    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        let i = self.shard(&k);
        let old = self.shard_mut(i).insert(k, v);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.shard(k);
        if !self.shards[i].contains_key(k) {
            return None; // no copy for a miss
        }
        let old = self.shard_mut(i).remove(k);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_independent_and_share_untouched_shards() {
        let mut a: ShardMap<String, u32> = ShardMap::default();
        for i in 0..10_000 {
            a.insert(format!("k{i}"), i);
        }
        assert_eq!(a.len(), 10_000);
        let mut b = a.clone();
        assert_eq!(b.insert("k5".into(), 500), Some(5));
        assert_eq!(b.remove("k6"), Some(6));
        assert_eq!(b.remove("k6"), None);
        b.insert("new".into(), 1);
        assert_eq!((a.get("k5"), a.get("k6"), a.get("new")), (Some(&5), Some(&6), None));
        assert_eq!((b.get("k5"), b.get("k6"), b.get("new")), (Some(&500), None, Some(&1)));
        assert_eq!((a.len(), b.len()), (10_000, 10_000));
        // Three shards changed (at most): the others are the same allocations.
        let shared = a.shards.iter().zip(b.shards.iter()).filter(|(x, y)| Arc::ptr_eq(x, y)).count();
        assert!(shared >= SHARDS - 3, "{shared}");
    }

    #[test]
    fn a_reserved_map_takes_its_entries_without_growing() {
        let mut m: ShardMap<u64, u64> = ShardMap::default();
        m.reserve(400_000);
        let before: Vec<_> = m.shards.iter().map(|s| s.capacity()).collect();
        for i in 0..400_000 {
            m.insert(i, i);
        }
        let after: Vec<_> = m.shards.iter().map(|s| s.capacity()).collect();
        assert_eq!(before, after);
    }
}
