//! SPI → inbound SA index: an open-addressing table built so that a
//! lookup reads one cache line and the burst loop can prefetch that line
//! before it looks up.
//!
//! With thousands of SAs every ESP packet of a burst looks up another
//! SPI, and the table's lines have left the cache since that SPI's last
//! packet (the SAs streaming through evict them). A general hash map
//! (hashbrown) reads a control-byte group and then a bucket, two
//! dependent misses the pipeline can only wait for. Here a slot is the
//! SPI and the index side by side (8 bytes, 8 to a line), probed
//! linearly from the SPI's home slot in a table at most half full, so
//! the home slot's line almost always answers, and
//! [`SpiMap::prefetch`] fetches it a few packets ahead.
//!
//! Keys are SPIs this appliance chose (random per Child SA, or from the
//! static file): a peer cannot choose colliding keys, it can only probe.
//! Removal shifts the following run back (no tombstones), so probe runs
//! stay as short as the load allows however many SAs come and go.

/// One slot: an SPI and its value; `index == EMPTY` marks a free slot.
#[derive(Debug, Clone, Copy)]
struct Slot {
    spi: u32,
    index: u32,
}

const EMPTY: u32 = u32::MAX;
const FREE: Slot = Slot {
    spi: 0,
    index: EMPTY,
};

/// SPI → `u32` (below `u32::MAX`), for up to the capacity given at
/// creation; never reallocates.
#[derive(Debug)]
pub(crate) struct SpiMap {
    slots: Box<[Slot]>,
    /// `slots.len() - 1` (a power of two minus one).
    mask: usize,
    /// Right shift that leaves the hash's top bits as a slot number.
    shift: u32,
    len: usize,
    capacity: usize,
}

impl SpiMap {
    /// A table for up to `capacity` entries: at least twice as many
    /// slots, a power of two (allocated here, once).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let slots = capacity.saturating_mul(2).next_power_of_two().max(16);
        Self {
            slots: vec![FREE; slots].into_boxed_slice(),
            mask: slots - 1,
            shift: 64 - slots.trailing_zeros(),
            len: 0,
            capacity,
        }
    }

    /// The SPI's home slot: Fibonacci hashing (the multiply's top bits),
    /// which spreads sequential SPIs as well as random ones.
    #[inline]
    fn home(&self, spi: u32) -> usize {
        let h = u64::from(spi).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift;
        // `shift` leaves at most log2(slots) bits: h <= mask.
        usize::try_from(h).unwrap_or(0) & self.mask
    }

    /// The slot holding `spi`, if any.
    #[inline]
    fn find(&self, spi: u32) -> Option<usize> {
        let mut i = self.home(spi);
        // At most half full: a free slot ends every probe run.
        loop {
            let slot = self.slots[i];
            if slot.index == EMPTY {
                return None;
            }
            if slot.spi == spi {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The value of `spi`.
    #[inline]
    pub(crate) fn get(&self, spi: u32) -> Option<u32> {
        self.find(spi).map(|i| self.slots[i].index)
    }

    /// Prefetches the line of `spi`'s home slot (where its lookup reads).
    #[inline]
    pub(crate) fn prefetch(&self, spi: u32) {
        prefetch::read(&self.slots[self.home(spi)]);
    }

    /// Sets `spi`'s value (`value < u32::MAX`); returns the value it
    /// replaces.
    ///
    /// # Errors
    /// `Err(())` when `spi` is new and the table holds `capacity` entries
    /// already, or for `value == u32::MAX`.
    pub(crate) fn insert(&mut self, spi: u32, value: u32) -> Result<Option<u32>, ()> {
        if value == EMPTY {
            return Err(());
        }
        if let Some(i) = self.find(spi) {
            return Ok(Some(std::mem::replace(&mut self.slots[i].index, value)));
        }
        if self.len >= self.capacity {
            return Err(());
        }
        let mut i = self.home(spi);
        while self.slots[i].index != EMPTY {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = Slot { spi, index: value };
        self.len += 1;
        Ok(None)
    }

    /// Removes `spi`; returns its value.
    pub(crate) fn remove(&mut self, spi: u32) -> Option<u32> {
        let mut hole = self.find(spi)?;
        let value = self.slots[hole].index;
        // Backward-shift deletion: move up every later entry of the run
        // whose home is not between the hole and its slot (cyclically),
        // so no lookup ever meets a gap before its key.
        let mut i = hole;
        loop {
            i = (i + 1) & self.mask;
            let slot = self.slots[i];
            if slot.index == EMPTY {
                break;
            }
            let home = self.home(slot.spi);
            // Distances from the hole and from the entry's home, forward.
            if (i.wrapping_sub(home) & self.mask) >= (i.wrapping_sub(hole) & self.mask) {
                self.slots[hole] = slot;
                hole = i;
            }
        }
        self.slots[hole] = FREE;
        self.len -= 1;
        Some(value)
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn insert_get_replace_remove() {
        let mut m = SpiMap::with_capacity(4);
        assert_eq!(m.get(7), None);
        assert_eq!(m.insert(7, 1), Ok(None));
        assert_eq!(m.insert(0, 2), Ok(None), "SPI 0 is a key like any other");
        assert_eq!(m.insert(7, 3), Ok(Some(1)));
        assert_eq!((m.get(7), m.get(0), m.len()), (Some(3), Some(2), 2));
        assert_eq!(m.insert(9, u32::MAX), Err(()), "the free marker");
        assert_eq!(m.remove(7), Some(3));
        assert_eq!((m.get(7), m.remove(7), m.len()), (None, None, 1));
    }

    #[test]
    fn full_at_capacity_but_replacing_still_works() {
        let mut m = SpiMap::with_capacity(3);
        for spi in 1..=3 {
            assert_eq!(m.insert(spi, spi), Ok(None));
        }
        assert_eq!(m.insert(4, 4), Err(()));
        assert_eq!(m.insert(2, 20), Ok(Some(2)));
        assert_eq!(m.remove(1), Some(1));
        assert_eq!(m.insert(4, 4), Ok(None));
    }

    /// Keys that all share one home slot, so removal must shift a run
    /// that wraps around the end of the table.
    #[test]
    fn removal_inside_a_run_that_wraps() {
        let mut m = SpiMap::with_capacity(8);
        let last = m.mask;
        let keys: Vec<u32> = (1..u32::MAX)
            .filter(|&s| m.home(s) == last)
            .take(5)
            .collect();
        for (v, &k) in (0u32..).zip(&keys) {
            m.insert(k, v).unwrap();
        }
        assert_eq!(m.remove(keys[1]), Some(1));
        for (v, &k) in (0u32..).zip(&keys).filter(|&(v, _)| v != 1) {
            assert_eq!(m.get(k), Some(v), "key {v} after the removal");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u32),
        Remove(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct keys (so they collide and repeat) from the whole
        // range (so they land anywhere, near the end included).
        let key = prop_oneof![0u32..48, any::<u32>()];
        prop_oneof![
            (key.clone(), 0u32..1000).prop_map(|(k, v)| Op::Insert(k, v)),
            key.prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Agrees with `HashMap` after every step of any sequence of
        /// inserts and removes, capacity limit included.
        #[test]
        fn behaves_like_a_hash_map(ops in proptest::collection::vec(op(), 1..400)) {
            const CAP: usize = 24;
            let mut m = SpiMap::with_capacity(CAP);
            let mut model: HashMap<u32, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let want = if model.contains_key(&k) || model.len() < CAP {
                            Ok(model.insert(k, v))
                        } else {
                            Err(())
                        };
                        prop_assert_eq!(m.insert(k, v), want);
                    }
                    Op::Remove(k) => prop_assert_eq!(m.remove(k), model.remove(&k)),
                }
                prop_assert_eq!(m.len(), model.len());
                for (&k, &v) in &model {
                    prop_assert_eq!(m.get(k), Some(v));
                }
            }
        }
    }
}
