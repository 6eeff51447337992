//! A fixed-capacity burst of owned mbufs: what rx fills and tx drains.

use std::mem::MaybeUninit;

use crate::mbuf::Mbuf;

/// The largest burst a [`Burst`] holds.
pub const MAX_BURST: usize = 64;

/// Up to [`MAX_BURST`] owned packets in a stack array (never allocates).
///
/// Its storage has the layout DPDK's burst functions take
/// (`struct rte_mbuf *[]`), so rx writes straight into it and tx reads
/// straight from it. Packets still in a burst when it drops are freed.
pub struct Burst {
    len: usize,
    slots: [MaybeUninit<Mbuf>; MAX_BURST],
}

impl Burst {
    /// An empty burst.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            len: 0,
            slots: [const { MaybeUninit::uninit() }; MAX_BURST],
        }
    }

    /// Packets in the burst.
    #[inline]
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the burst is empty.
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free slots.
    #[inline]
    #[must_use]
    pub fn spare(&self) -> usize {
        MAX_BURST - self.len
    }

    /// Adds a packet, or gives it back when the burst is full.
    ///
    /// # Errors
    /// The packet itself, when the burst already holds [`MAX_BURST`].
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == MAX_BURST {
            return Err(m);
        }
        self.slots[self.len].write(m);
        self.len += 1;
        Ok(())
    }

    /// Removes the last packet.
    #[inline]
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: slot len was initialised and is now outside the live
        // prefix, so it is read exactly once.
        Some(unsafe { self.slots[self.len].assume_init_read() })
    }

    /// The packets.
    #[inline]
    #[must_use]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: the first len slots are initialised; MaybeUninit<Mbuf>
        // has Mbuf's layout.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr().cast::<Mbuf>(), self.len) }
    }

    /// The packets, mutably.
    #[inline]
    #[must_use]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: as in as_slice, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.slots.as_mut_ptr().cast::<Mbuf>(), self.len) }
    }

    /// Frees every packet.
    pub fn clear(&mut self) {
        let len = self.len;
        // Set len first so a panic while dropping cannot double-free.
        self.len = 0;
        for slot in &mut self.slots[..len] {
            // SAFETY: slots below the old len were initialised and are
            // dropped exactly once.
            unsafe { slot.assume_init_drop() };
        }
    }

    /// Moves every packet out, in order, leaving the burst empty.
    pub fn drain(&mut self) -> Drain<'_> {
        let len = self.len;
        self.len = 0;
        Drain {
            burst: self,
            next: 0,
            end: len,
        }
    }

    /// The spare slots as raw mbuf pointers, for a DPDK call that fills
    /// them (rx burst, ring dequeue). Follow with [`Burst::commit`].
    #[inline]
    pub(crate) fn spare_raw(&mut self) -> (*mut *mut dpdk_sys::rte_mbuf, usize) {
        // SAFETY: len <= MAX_BURST, so the offset stays inside the array.
        let ptr = unsafe { self.slots.as_mut_ptr().add(self.len) };
        (ptr.cast(), MAX_BURST - self.len)
    }

    /// Records that DPDK filled `n` spare slots with valid mbufs we own.
    ///
    /// # Safety
    /// The `n` slots after the live prefix must hold valid, non-null,
    /// unowned mbuf pointers.
    #[inline]
    pub(crate) unsafe fn commit(&mut self, n: usize) {
        debug_assert!(n <= self.spare());
        self.len += n;
    }

    /// The live packets as raw pointers, for a DPDK call that takes them
    /// (tx burst, ring enqueue). Follow with [`Burst::forget_front`].
    #[inline]
    pub(crate) fn live_raw(&mut self) -> (*mut *mut dpdk_sys::rte_mbuf, usize) {
        (self.slots.as_mut_ptr().cast(), self.len)
    }

    /// Forgets the first `n` packets (DPDK took them) and moves the rest
    /// to the front.
    ///
    /// # Safety
    /// DPDK must have taken ownership of exactly the first `n` packets.
    #[inline]
    pub(crate) unsafe fn forget_front(&mut self, n: usize) {
        let n = n.min(self.len);
        let rest = self.len - n;
        // SAFETY: slots n..len are initialised; copying them to 0..rest
        // (possibly overlapping) moves them; the first n are not dropped.
        unsafe {
            std::ptr::copy(self.slots.as_ptr().add(n), self.slots.as_mut_ptr(), rest);
        }
        self.len = rest;
    }
}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.clear();
    }
}

impl std::fmt::Debug for Burst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Burst").field("len", &self.len).finish()
    }
}

/// Iterator of [`Burst::drain`].
#[derive(Debug)]
pub struct Drain<'a> {
    burst: &'a mut Burst,
    next: usize,
    end: usize,
}

impl Iterator for Drain<'_> {
    type Item = Mbuf;

    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        if self.next == self.end {
            return None;
        }
        let i = self.next;
        self.next += 1;
        // SAFETY: slots next..end were initialised when drain started and
        // each is read once; the burst's len is already 0.
        Some(unsafe { self.burst.slots[i].assume_init_read() })
    }
}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        // Free what the caller did not take.
        for _ in self.by_ref() {}
    }
}
