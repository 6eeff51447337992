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
