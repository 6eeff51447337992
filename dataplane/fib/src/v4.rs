//! IPv4 longest-prefix match, DIR-16-8-8.
//!
//! Level 1 has one entry per /16 (65,536 × 4 bytes); an entry holds either
//! a target (routes of length ≤ 16 expanded over their /16s, or the best
//! shorter route) or, with the top bit set, the index of a 256-entry
//! level-2 block for the next 8 bits, whose entries in turn hold a target
//! or a level-3 block for the last 8 bits. A lookup reads at most three
//! entries.
//!
//! Tables are built from scratch from the sorted route set, shortest
//! prefixes first, so every longer prefix overwrites the shorter ones it
//! covers: the entries end up holding exactly the longest match.

use ipnet::Ipv4Net;

/// Top bit: the entry points at a block of the next level.
const BLOCK: u32 = 1 << 31;

#[derive(Debug, Clone)]
pub(crate) struct Table {
    l1: Box<[u32]>,
    /// Level-2 and level-3 blocks, 256 entries each, back to back.
    blocks: Vec<u32>,
}

impl Table {
    pub(crate) fn build(routes: impl Iterator<Item = (Ipv4Net, u32)>) -> Self {
        let mut routes: Vec<(Ipv4Net, u32)> = routes.collect();
        routes.sort_by_key(|(p, _)| p.prefix_len());
        let mut t = Self {
            l1: vec![crate::packed::NONE; 1 << 16].into_boxed_slice(),
            blocks: Vec::new(),
        };
        for (prefix, value) in routes {
            t.paint(prefix, value);
        }
        t
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
