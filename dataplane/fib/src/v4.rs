//! IPv4 longest-prefix match, DIR-16-8-8.
//!
//! Level 1 has one entry per /16 (65,536 × 4 bytes); an entry holds either
//! a target (routes of length ≤ 16 expanded over their /16s, or the best
//! shorter route) or, with the top bit set, the index of a 256-entry
//! level-2 block for the next 8 bits, whose entries in turn hold a target
//! or a level-3 block for the last 8 bits. A lookup reads at most three
//! entries.
//!
//! Tables are built from the sorted route set, shortest prefixes first, so
//! every longer prefix overwrites the shorter ones it covers: the entries
//! end up holding exactly the longest match. A table also changes in
//! place, one route at a time ([`Table::insert`], [`Table::remove`]): the
//! changed prefix's range is repainted with the best route covering it,
//! then every route nested inside it, shortest first — the same rule on
//! the range alone, so the cost is the prefix's span and the routes under
//! it, not the table. Blocks that become uniform are folded back into
//! their parent entry and reused, so churn does not grow the table.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Top bit: the entry points at a block of the next level.
const BLOCK: u32 = 1 << 31;

#[derive(Debug, Clone)]
pub(crate) struct Table {
    l1: Box<[u32]>,
    /// Level-2 and level-3 blocks, 256 entries each, back to back.
    blocks: Vec<u32>,
    /// Blocks folded back into their parent, free for reuse.
    free: Vec<usize>,
    /// The routes (normalised prefix → packed target).
    routes: BTreeMap<Ipv4Net, u32>,
}

impl Table {
    pub(crate) fn build(routes: impl Iterator<Item = (Ipv4Net, u32)>) -> Self {
        let routes: BTreeMap<Ipv4Net, u32> = routes.collect();
        let mut sorted: Vec<(Ipv4Net, u32)> = routes.iter().map(|(p, v)| (*p, *v)).collect();
        sorted.sort_by_key(|(p, _)| p.prefix_len());
        let mut t = Self {
            l1: vec![crate::packed::NONE; 1 << 16].into_boxed_slice(),
            blocks: Vec::new(),
            free: Vec::new(),
            routes,
        };
        for (prefix, value) in sorted {
            t.paint(prefix, value);
        }
        t
    }

    /// The routes, in prefix order.
    pub(crate) fn routes(&self) -> impl Iterator<Item = (Ipv4Net, u32)> + '_ {
        self.routes.iter().map(|(p, v)| (*p, *v))
    }

    /// Number of routes.
    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }

    /// Adds or replaces the route of a normalised prefix.
    pub(crate) fn insert(&mut self, prefix: Ipv4Net, value: u32) -> Option<u32> {
        let old = self.routes.insert(prefix, value);
        if old != Some(value) {
            self.repaint(prefix);
        }
        old
    }

    /// Removes the route of a normalised prefix.
    pub(crate) fn remove(&mut self, prefix: Ipv4Net) -> Option<u32> {
        let old = self.routes.remove(&prefix)?;
        self.repaint(prefix);
        Some(old)
    }

    /// Bytes of lookup tables (level 1 and every block, free ones too).
    pub(crate) fn table_bytes(&self) -> usize {
        (self.l1.len() + self.blocks.len()) * 4
    }

    /// Level-2 and level-3 blocks in use (not folded).
    pub(crate) fn blocks_in_use(&self) -> usize {
        self.blocks.len() / 256 - self.free.len()
    }

    /// Makes `prefix`'s range hold the longest match again after its own
    /// route changed: the best route covering it (itself, or the longest
    /// shorter one), then every longer route inside it, shortest first.
    fn repaint(&mut self, prefix: Ipv4Net) {
        let base = self.covering(prefix);
        self.paint(prefix, base);
        let last = Ipv4Net::new(prefix.broadcast(), 32).unwrap_or(prefix);
        let mut inner: Vec<(Ipv4Net, u32)> = self
            .routes
            .range(prefix..=last)
            .filter(|(p, _)| p.prefix_len() > prefix.prefix_len())
            .map(|(p, v)| (*p, *v))
            .collect();
        inner.sort_by_key(|(p, _)| p.prefix_len());
        for (p, v) in inner {
            self.paint(p, v);
        }
        self.fold(prefix);
    }

    /// The value of `prefix` itself or of the longest route that contains
    /// it.
    fn covering(&self, prefix: Ipv4Net) -> u32 {
        let addr = u32::from(prefix.network());
        (0..=prefix.prefix_len())
            .rev()
            .find_map(|len| {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                let p = Ipv4Net::new(Ipv4Addr::from(addr & mask), len).ok()?;
                self.routes.get(&p).copied()
            })
            .unwrap_or(crate::packed::NONE)
    }

    fn paint(&mut self, prefix: Ipv4Net, value: u32) {
        let addr = u32::from(prefix.network());
        let len = u32::from(prefix.prefix_len());
        if len <= 16 {
            let first = (addr >> 16) as usize;
            let count = 1usize << (16 - len);
            for i in first..first + count {
                let e = self.l1[i];
                if e & BLOCK != 0 {
                    // A longer prefix already split this /16: fill under it.
                    self.fill_block((e & !BLOCK) as usize, 0, 256, value, 2);
                } else {
                    self.l1[i] = value;
                }
            }
            return;
        }
        let l2 = self.block_of_l1((addr >> 16) as usize);
        let byte2 = ((addr >> 8) & 0xff) as usize;
        if len <= 24 {
            let count = 1usize << (24 - len);
            self.fill_block(l2, byte2, count, value, 2);
            return;
        }
        let l3 = self.block_of(l2, byte2);
        let byte3 = (addr & 0xff) as usize;
        let count = 1usize << (32 - len);
        self.fill_block(l3, byte3, count, value, 3);
    }

    /// Folds the blocks under `prefix`'s range that became uniform back
    /// into their parent entries.
    fn fold(&mut self, prefix: Ipv4Net) {
        let addr = u32::from(prefix.network());
        let len = u32::from(prefix.prefix_len());
        let first = (addr >> 16) as usize;
        let count = if len <= 16 { 1usize << (16 - len) } else { 1 };
        for i in first..first + count {
            let e = self.l1[i];
            if e & BLOCK == 0 {
                continue;
            }
            let l2 = (e & !BLOCK) as usize;
            // Level 3 under the changed range (all of it for ≤ /24).
            let (from, n) = if len <= 16 {
                (0, 256)
            } else if len <= 24 {
                (((addr >> 8) & 0xff) as usize, 1usize << (24 - len))
            } else {
                (((addr >> 8) & 0xff) as usize, 1)
            };
            for j in from..from + n {
                let slot = l2 * 256 + j;
                let e = self.blocks[slot];
                if e & BLOCK != 0
                    && let Some(v) = self.uniform((e & !BLOCK) as usize)
                {
                    self.free.push((e & !BLOCK) as usize);
                    self.blocks[slot] = v;
                }
            }
            if let Some(v) = self.uniform(l2) {
                self.free.push(l2);
                self.l1[i] = v;
            }
        }
    }

    /// The value every entry of a block holds, if they all hold the same
    /// target (no pointer to a block below).
    fn uniform(&self, block: usize) -> Option<u32> {
        let b = &self.blocks[block * 256..block * 256 + 256];
        let v = b[0];
        (v & BLOCK == 0 && b.iter().all(|e| *e == v)).then_some(v)
    }

    /// Writes `value` over `count` entries of a block from `start`; at
    /// level 2, entries that point at a level-3 block get it inside the
    /// block instead (they hold longer prefixes that must win).
    fn fill_block(&mut self, block: usize, start: usize, count: usize, value: u32, level: u8) {
        for i in start..start + count {
            let slot = block * 256 + i;
            let e = self.blocks[slot];
            if level == 2 && e & BLOCK != 0 {
                self.fill_block((e & !BLOCK) as usize, 0, 256, value, 3);
            } else {
                self.blocks[slot] = value;
            }
        }
    }

    /// The level-2 block under a /16, created from its current value.
    fn block_of_l1(&mut self, i: usize) -> usize {
        let e = self.l1[i];
        if e & BLOCK != 0 {
            return (e & !BLOCK) as usize;
        }
        let b = self.new_block(e);
        self.l1[i] = BLOCK | block_ref(b);
        b
    }

    /// The level-3 block under a level-2 entry, created from its value.
    fn block_of(&mut self, l2: usize, i: usize) -> usize {
        let slot = l2 * 256 + i;
        let e = self.blocks[slot];
        if e & BLOCK != 0 {
            return (e & !BLOCK) as usize;
        }
        let b = self.new_block(e);
        self.blocks[slot] = BLOCK | block_ref(b);
        b
    }

    fn new_block(&mut self, fill: u32) -> usize {
        if let Some(b) = self.free.pop() {
            self.blocks[b * 256..b * 256 + 256].fill(fill);
            return b;
        }
        let b = self.blocks.len() / 256;
        self.blocks.resize(self.blocks.len() + 256, fill);
        b
    }

    #[inline]
    pub(crate) fn lookup(&self, addr: u32) -> u32 {
        let e = self.l1[(addr >> 16) as usize];
        if e & BLOCK == 0 {
            return e;
        }
        let e = self.entry(e, (addr >> 8) & 0xff);
        if e & BLOCK == 0 {
            return e;
        }
        self.entry(e, addr & 0xff)
    }

    #[inline]
    fn entry(&self, pointer: u32, byte: u32) -> u32 {
        let slot = (pointer & !BLOCK) as usize * 256 + byte as usize;
        self.blocks
            .get(slot)
            .copied()
            .unwrap_or(crate::packed::NONE)
    }
}

/// A block index as stored in an entry. There are at most 2^16 level-2
/// blocks and 2^24 level-3 blocks (one per /16 and per /24), so an index
/// always fits the 31 bits below [`BLOCK`].
#[allow(clippy::cast_possible_truncation)]
fn block_ref(block: usize) -> u32 {
    debug_assert!(block < (1 << 25));
    block as u32
}
