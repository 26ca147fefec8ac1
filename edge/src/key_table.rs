//! The virtual keys an edge knows: by the SHA-256 of their secret (every request), and by id
//! (a delta that replaces or removes a key names it by id).

use std::hash::BuildHasher;
use std::sync::Arc;

use smol_str::SmolStr;

use crate::FastMap;
use crate::config::KeyEntry;
use crate::shard_map::ShardMap;

#[derive(Clone, Default)]
pub struct KeyTable {
    by_secret: ShardMap<[u8; 32], Arc<KeyEntry>>,
    /// A 64-bit hash of the id → the secret hash: 40-byte entries where the id itself made 56,
    /// ~35 bytes a key once the maps' slack counts. An entry holds only while the key it leads
    /// to has that id, so a collision can never name another key.
    by_id: ShardMap<u64, [u8; 32]>,
    /// Ids whose hash another id already holds: about one pair in 10^7 at a million keys, so
    /// normally empty (and cheap to copy with each version).
    spill: FastMap<SmolStr, [u8; 32]>,
    seed: foldhash::fast::RandomState,
    /// Tests make every id collide, to walk the spill path.
    #[cfg(test)]
    collide: bool,
}

impl KeyTable {
    #[must_use]
    pub fn get(&self, secret_sha256: &[u8; 32]) -> Option<&Arc<KeyEntry>> {
        self.by_secret.get(secret_sha256)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.by_secret.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_secret.is_empty()
    }

    /// Room for `n` keys without growing.
    pub fn reserve(&mut self, n: usize) {
        self.by_secret.reserve(n);
        self.by_id.reserve(n);
    }

    /// Adds a key, or replaces the key with its id (whose secret may have changed).
    pub fn insert(&mut self, secret_sha256: [u8; 32], entry: KeyEntry) {
        if let Some(old) = self.take_id(&entry.id)
            && old != secret_sha256
        {
            self.by_secret.remove(&old);
        }
        let h = self.id_hash(&entry.id);
        match self.by_id.get(&h) {
            Some(other) if self.by_secret.get(other).is_some_and(|e| e.id != entry.id) => {
                self.spill.insert(entry.id.clone(), secret_sha256);
            }
            _ => {
                self.by_id.insert(h, secret_sha256);
            }
        }
        self.by_secret.insert(secret_sha256, Arc::new(entry));
    }

    pub fn remove_id(&mut self, id: &str) {
        if let Some(secret) = self.take_id(id) {
            self.by_secret.remove(&secret);
        }
    }

    /// Forgets the id's entry and says which secret hash it led to.
    fn take_id(&mut self, id: &str) -> Option<[u8; 32]> {
        if let Some(secret) = self.spill.remove(id) {
            return Some(secret);
        }
        let h = self.id_hash(id);
        let secret = *self.by_id.get(&h)?;
        if self.by_secret.get(&secret).is_none_or(|e| e.id != id) {
            return None;
        }
        self.by_id.remove(&h);
        Some(secret)
    }

    fn id_hash(&self, id: &str) -> u64 {
        #[cfg(test)]
        if self.collide {
            return 7;
        }
        self.seed.hash_one(id)
    }
}

#[cfg(test)]
mod tests {
    use llmgw_shared::keys::hash_secret;

    use super::*;

    fn entry(id: &str) -> KeyEntry {
        KeyEntry {
            id: id.into(),
            name: id.into(),
            project: None,
            team: None,
            models: None,
            revoked: false,
            expires_at: 0,
            quota: None,
        }
    }

    fn secret(s: &str) -> [u8; 32] {
        hash_secret(s)
    }

    fn id_of(t: &KeyTable, s: &str) -> Option<String> {
        t.get(&secret(s)).map(|e| e.id.to_string())
    }

    fn walk(collide: bool) {
        let mut t = KeyTable { collide, ..KeyTable::default() };
        t.insert(secret("sa"), entry("a"));
        t.insert(secret("sb"), entry("b"));
        t.insert(secret("sc"), entry("c"));
        assert_eq!(
            (id_of(&t, "sa").as_deref(), id_of(&t, "sb").as_deref(), t.len()),
            (Some("a"), Some("b"), 3)
        );

        // A new secret for b: the old one stops working.
        t.insert(secret("sb2"), entry("b"));
        assert_eq!((id_of(&t, "sb"), id_of(&t, "sb2").as_deref(), t.len()), (None, Some("b"), 3));

        t.remove_id("a");
        assert_eq!((id_of(&t, "sa"), t.len()), (None, 2));
        t.remove_id("a");
        t.remove_id("nobody");
        assert_eq!(t.len(), 2);

        // Removing b leaves c, whatever the ids' hashes.
        t.remove_id("b");
        assert_eq!((id_of(&t, "sb2"), id_of(&t, "sc").as_deref(), t.len()), (None, Some("c"), 1));
        t.insert(secret("sa"), entry("a"));
        t.remove_id("c");
        assert_eq!((id_of(&t, "sa").as_deref(), id_of(&t, "sc"), t.len()), (Some("a"), None, 1));
    }

    #[test]
    fn keys_are_replaced_and_removed_by_id() {
        walk(false);
    }

    #[test]
    fn ids_with_one_hash_never_touch_each_other() {
        walk(true);
    }

    #[test]
    fn versions_do_not_share_changes() {
        let mut a = KeyTable::default();
        a.insert(secret("sa"), entry("a"));
        let mut b = a.clone();
        b.remove_id("a");
        b.insert(secret("sx"), entry("x"));
        assert_eq!((id_of(&a, "sa").as_deref(), id_of(&a, "sx")), (Some("a"), None));
        assert_eq!((id_of(&b, "sa"), id_of(&b, "sx").as_deref()), (None, Some("x")));
    }
}
