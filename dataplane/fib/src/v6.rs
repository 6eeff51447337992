//! IPv6 longest-prefix match: one hash table per prefix length present,
//! probed longest first.
//!
//! Site-to-site route tables use few distinct IPv6 lengths (/126 inside
//! addresses, /64, /56, /48, the default), so a lookup is a handful of hash
//! probes at most.

use std::collections::HashMap;

use ipnet::Ipv6Net;

#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    /// (prefix length, mask, routes keyed by masked address), longest first.
    levels: Vec<(u8, u128, HashMap<u128, u32>)>,
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl Table {
    pub(crate) fn build(routes: impl Iterator<Item = (Ipv6Net, u32)>) -> Self {
        let mut levels: Vec<(u8, u128, HashMap<u128, u32>)> = Vec::new();
        for (prefix, value) in routes {
            let len = prefix.prefix_len();
            let m = mask(len);
            let key = u128::from(prefix.network()) & m;
            match levels.iter_mut().find(|(l, _, _)| *l == len) {
                Some((_, _, map)) => {
                    map.insert(key, value);
                }
                None => levels.push((len, m, HashMap::from([(key, value)]))),
            }
        }
        levels.sort_by_key(|level| std::cmp::Reverse(level.0));
        Self { levels }
    }

    /// Adds or replaces the route of a normalised prefix.
    pub(crate) fn insert(&mut self, prefix: Ipv6Net, value: u32) -> Option<u32> {
        let len = prefix.prefix_len();
        let m = mask(len);
        let key = u128::from(prefix.network()) & m;
        if let Some((_, _, map)) = self.levels.iter_mut().find(|(l, _, _)| *l == len) {
            return map.insert(key, value);
        }
        // Longest first.
        let at = self
            .levels
            .iter()
            .position(|(l, _, _)| *l < len)
            .unwrap_or(self.levels.len());
        self.levels
            .insert(at, (len, m, HashMap::from([(key, value)])));
        None
    }

    /// Removes the route of a normalised prefix.
    pub(crate) fn remove(&mut self, prefix: Ipv6Net) -> Option<u32> {
        let len = prefix.prefix_len();
        let key = u128::from(prefix.network()) & mask(len);
        let i = self.levels.iter().position(|(l, _, _)| *l == len)?;
        let old = self.levels[i].2.remove(&key);
        if self.levels[i].2.is_empty() {
            self.levels.remove(i);
        }
        old
    }

    /// The routes (unordered).
    pub(crate) fn routes(&self) -> impl Iterator<Item = (Ipv6Net, u32)> + '_ {
        self.levels.iter().flat_map(|(len, _, map)| {
            map.iter().filter_map(move |(k, v)| {
                Ipv6Net::new(std::net::Ipv6Addr::from(*k), *len)
                    .ok()
                    .map(|p| (p, *v))
            })
        })
    }

    /// Number of routes.
    pub(crate) fn len(&self) -> usize {
        self.levels.iter().map(|(_, _, m)| m.len()).sum()
    }

    #[inline]
    pub(crate) fn lookup(&self, addr: u128) -> u32 {
        for (_, m, map) in &self.levels {
            if let Some(v) = map.get(&(addr & m)) {
                return *v;
            }
        }
        crate::packed::NONE
    }
}
