//! Work in flight per key (a user, a host), with a cap: one key past its cap is refused at once rather than
//! queued, so it cannot take every slot of a shared resource. Counts live in this process: they protect this
//! replica's memory, connections and upstream slots.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Mutex};

use crate::sync;

/// Separate locks for separate keys, so concurrent requests of different users rarely wait on each other.
const SHARDS: usize = 16;

pub struct InFlight<K> {
    cap: u32,
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<K, u32>>]>,
}

/// One unit of work in flight for a key; dropping it ends it.
pub struct Permit<K: Hash + Eq + Clone> {
    owner: Arc<InFlight<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> InFlight<K> {
    /// At most `cap` at once per key.
    pub fn new(cap: u32) -> Arc<InFlight<K>> {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Arc::new(InFlight { cap, hasher: RandomState::new(), shards })
    }

    pub fn cap(&self) -> u32 {
        self.cap
    }

    fn shard(&self, key: &K) -> &Mutex<HashMap<K, u32>> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// One more for `key`, unless it has `cap` in flight already.
    pub fn try_acquire(self: &Arc<Self>, key: &K) -> Option<Permit<K>> {
        let mut counts = sync::lock(self.shard(key));
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(Permit { owner: Arc::clone(self), key: key.clone() })
    }

    /// Whether `key` is at its cap now.
    pub fn is_full(&self, key: &K) -> bool {
        sync::lock(self.shard(key)).get(key).is_some_and(|count| *count >= self.cap)
    }

    /// Every key at its cap now.
    pub fn full_keys(&self) -> Vec<K> {
        let full = |shard: &Mutex<HashMap<K, u32>>| {
            sync::lock(shard)
                .iter()
                .filter(|(_, count)| **count >= self.cap)
                .map(|(key, _)| key.clone())
                .collect::<Vec<_>>()
        };
        self.shards.iter().flat_map(full).collect()
    }

    fn release(&self, key: &K) {
        let mut counts = sync::lock(self.shard(key));
        if let Some(count) = counts.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(key);
            }
        }
    }
}

impl<K: Hash + Eq + Clone> Drop for Permit<K> {
    fn drop(&mut self) {
        self.owner.release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_at_its_cap_is_refused_until_one_of_its_permits_ends() {
        let in_flight = InFlight::new(2);
        let (a, b) = ("alice".to_owned(), "bob".to_owned());
        let first = in_flight.try_acquire(&a).unwrap();
        let _second = in_flight.try_acquire(&a).unwrap();
        assert!(in_flight.try_acquire(&a).is_none() && in_flight.is_full(&a));
        assert_eq!(in_flight.full_keys(), std::slice::from_ref(&a));
        assert!(in_flight.try_acquire(&b).is_some(), "another key has its own count");
        drop(first);
        assert!(!in_flight.is_full(&a));
        assert!(in_flight.try_acquire(&a).is_some());
    }

    #[test]
    fn nothing_is_kept_for_a_key_with_nothing_in_flight() {
        let in_flight = InFlight::new(1);
        for n in 0..1_000 {
            drop(in_flight.try_acquire(&n).unwrap());
        }
        assert!(in_flight.shards.iter().all(|shard| sync::lock(shard).is_empty()));
    }
}
