//! A deadline per key, ordered: the event loop's index of per-socket
//! retry times (a BGP listener or IKE socket that could not be bound), so
//! the next wake-up is the first entry (O(log N)) and the due entries are
//! taken from the front, instead of a scan over every socket on every
//! wake-up.
//!
//! What it never does: hold two deadlines for one key (setting one
//! replaces the other), or keep a cancelled one ([`DeadlineIndex::remove`]
//! takes it out of both maps).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Deadlines by key, and keys by deadline.
#[derive(Debug, Clone)]
pub struct DeadlineIndex<K: Ord + Clone> {
    by_time: BTreeSet<(Instant, K)>,
    by_key: BTreeMap<K, Instant>,
}

impl<K: Ord + Clone> Default for DeadlineIndex<K> {
    fn default() -> Self {
        Self {
            by_time: BTreeSet::new(),
            by_key: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> DeadlineIndex<K> {
    /// No deadlines.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// `key` is due at `at` (replacing its previous deadline).
    pub fn insert(&mut self, key: K, at: Instant) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    /// Cancel `key`'s deadline; the deadline it had.
    pub fn remove(&mut self, key: &K) -> Option<Instant> {
        let at = self.by_key.remove(key)?;
        self.by_time.remove(&(at, key.clone()));
        Some(at)
    }

    /// `key`'s deadline.
    #[must_use]
    pub fn get(&self, key: &K) -> Option<Instant> {
        self.by_key.get(key).copied()
    }

    /// The earliest deadline.
    #[must_use]
    pub fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// Take the earliest key whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        if self.next()? > now {
            return None;
        }
        let (_, key) = self.by_time.pop_first()?;
        self.by_key.remove(&key);
        Some(key)
    }

    /// Keys with a deadline.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// No deadline at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn earliest_first_replaced_and_cancelled_ones_gone() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut d = DeadlineIndex::new();
        assert_eq!(d.next(), None);
        d.insert("c", s(30));
        d.insert("a", s(10));
        d.insert("b", s(20));
        assert_eq!(d.next(), Some(s(10)));
        // Replacing a's deadline moves it behind b.
        d.insert("a", s(25));
        assert_eq!(d.next(), Some(s(20)));
        assert_eq!(d.len(), 3);
        // Cancelling b: its deadline is no longer the next.
        assert_eq!(d.remove(&"b"), Some(s(20)));
        assert_eq!(d.remove(&"b"), None);
        assert_eq!(d.next(), Some(s(25)));
        assert_eq!(d.get(&"a"), Some(s(25)));
        // Nothing due before its time; then in deadline order.
        assert_eq!(d.pop_due(s(24)), None);
        assert_eq!(d.pop_due(s(40)), Some("a"));
        assert_eq!(d.pop_due(s(40)), Some("c"));
        assert_eq!(d.pop_due(s(40)), None);
        assert!(d.is_empty());
        assert_eq!(d.next(), None);
    }

    /// Against a plain map scanned for its minimum, over random
    /// operations.
    #[test]
    fn agrees_with_a_scan() {
        let t0 = Instant::now();
        let mut d = DeadlineIndex::new();
        let mut model: BTreeMap<u32, Instant> = BTreeMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = u32::try_from(x % 64).unwrap();
            let at = t0 + Duration::from_millis(x % 1000);
            match x % 3 {
                0 => {
                    d.insert(key, at);
                    model.insert(key, at);
                }
                1 => assert_eq!(d.remove(&key), model.remove(&key)),
                _ => {
                    let now = t0 + Duration::from_millis((x >> 20) % 1000);
                    let want = model
                        .iter()
                        .filter(|(_, t)| **t <= now)
                        .min_by_key(|(k, t)| (**t, **k))
                        .map(|(k, _)| *k);
                    let got = d.pop_due(now);
                    assert_eq!(got, want);
                    if let Some(k) = got {
                        model.remove(&k);
                    }
                }
            }
            assert_eq!(d.next(), model.values().min().copied());
            assert_eq!(d.len(), model.len());
        }
    }
}
