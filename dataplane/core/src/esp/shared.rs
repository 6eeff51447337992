//! One SA on several workers: the outbound sequence counter and the
//! inbound anti-replay window, shared without locks.
//!
//! The architecture asks that a tunnel "must be able to use several
//! workers where one is not enough" (issue 4 item 3). Each worker still
//! owns its own runtime SA (its cipher context, lifetime counters, header
//! template); only what must be unique per SA is shared:
//!
//! * **Outbound**: one [`SharedSeq`] (an `AtomicU64` holding the last
//!   *reserved* sequence number) per outbound SA, shared by the copies
//!   of that SA on every worker. A worker reserves a block of numbers per
//!   burst with one compare-and-swap ([`OutboundSa::begin_burst`](super::OutboundSa::begin_burst)); the
//!   numbers it does not use by the end of the burst are abandoned (a gap
//!   the receiver tolerates), so reordering between workers stays within
//!   `workers × burst` packets, far inside the 1024-packet default
//!   window. The counter never wraps: a reservation stops at 2^32 − 1
//!   (2^64 − 1 with ESN) and then every packet is
//!   [`DropReason::SeqExhausted`](super::DropReason::SeqExhausted)
//!   (RFC 4303 § 3.3.3). Since the GCM explicit IV and the CBC IV are
//!   both derived from the sequence number, distinct numbers also mean
//!   IVs never repeat across workers.
//!
//! * **Inbound**: [`SharedReplayWindow`], chosen over steering each SA to
//!   one worker. Steering relies on the NIC delivering every packet of an
//!   SA to one queue, which the runtime cannot guarantee: RSS hashes
//!   the outer header fields the PMD supports (often addresses and UDP
//!   ports, rarely the SPI), so the queue of an SA is not known to the
//!   control core and changes with the NAT-T source port; and giving
//!   every worker its own window for the same SA would be a hole: a
//!   replay with a modified outer source lands on another queue and would
//!   pass that worker's window. With the shared window any worker may
//!   decapsulate any SA, and a sequence number is accepted at most once
//!   whichever queue it arrives on. The cost, one compare-and-swap on a
//!   shared cache line per packet, is paid only by SAs installed on
//!   several workers; an SA on one worker keeps its private
//!   [`ReplayWindow`](super::ReplayWindow).
//!
//! # The shared window
//!
//! RFC 4303 Appendix A's sliding window, kept as a ring of slots in the
//! style of RFC 6479, each slot an `AtomicU64` holding a 32-bit *tag*
//! (the number of the 32-packet block it describes, `seq / 32`, mod
//! 2^32) and a 32-bit bitmap. The slot of a block is `block mod slots`
//! with `slots × 32 ≥ W + 32`, so the blocks inside the window never
//! share a slot. Commit of `seq` after its ICV verified:
//!
//! 1. `seq` must be right of `top − W` (the highest committed number).
//! 2. CAS loop on the slot: same tag → set the bit, or
//!    [`Replay::Duplicate`] if it is set; older tag → the slot is
//!    recycled for this block with only this bit set; newer tag → the
//!    slot already moved past this block: [`Replay::TooOld`].
//! 3. `top = max(top, seq)`.
//! 4. Re-check 1 against the new `top`: a number that fell out of the
//!    window while it was being decrypted is rejected.
//!
//! A slot's tag only ever moves forward, so once a bit of block `b` is
//! set no later commit can see block `b` as unset: a sequence number is
//! accepted at most once, whatever the interleaving. The tag is 32 bits
//! of a 59-bit block number: two blocks collide only 2^37 packets apart,
//! far beyond any window (and an attacker cannot produce such a jump:
//! commits happen only after the ICV verified).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::replay::{MAX_WINDOW, MIN_WINDOW, Replay, infer_esn};

/// The outbound sequence counter shared by the copies of one outbound SA:
/// the last sequence number reserved by any worker (0 = none).
pub type SharedSeq = Arc<AtomicU64>;

/// A fresh shared counter (the first packet will carry 1).
#[must_use]
pub fn shared_seq() -> SharedSeq {
    Arc::new(AtomicU64::new(0))
}

/// Reserves up to `want` (≥ 1) sequence numbers after the counter's value,
/// never beyond `limit`; returns the first and last reserved.
///
/// # Errors
/// `None` when the space up to `limit` is exhausted.
pub(crate) fn reserve(counter: &AtomicU64, want: u64, limit: u64) -> Option<(u64, u64)> {
    let want = want.max(1);
    let prev = counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
            (cur < limit).then(|| cur + want.min(limit - cur))
        })
        .ok()?;
    Some((prev + 1, prev + want.min(limit - prev)))
}

const BLOCK_BITS: u64 = 32;
/// Slots for the largest window: 2048 / 32 + 1, rounded to a power of two.
const SLOTS: usize = 128;
const _: () = assert!(SLOTS as u64 * BLOCK_BITS >= MAX_WINDOW as u64 + BLOCK_BITS);

/// The highest committed sequence number, on a cache line of its own.
#[derive(Debug)]
#[repr(align(64))]
struct Top(AtomicU64);

/// An anti-replay window shared by the workers that carry one inbound SA
/// (see the module doc). Lock-free; `check` and `commit` take `&self`.
#[derive(Debug)]
pub struct SharedReplayWindow {
    top: Top,
    size: u32,
    esn: bool,
    slots: Box<[AtomicU64; SLOTS]>,
}

#[inline]
#[allow(
    clippy::cast_possible_truncation,
    reason = "the tag is the block number mod 2^32 on purpose"
)]
fn tag_of(seq: u64) -> u32 {
    (seq / BLOCK_BITS) as u32
}

#[inline]
#[allow(
    clippy::cast_possible_truncation,
    reason = "block mod SLOTS < SLOTS fits any usize"
)]
fn slot_of(seq: u64) -> usize {
    ((seq / BLOCK_BITS) % SLOTS as u64) as usize
}

#[inline]
fn bit_of(seq: u64) -> u32 {
    1 << (seq % BLOCK_BITS)
}

#[inline]
#[allow(
    clippy::cast_possible_truncation,
    reason = "unpacking the two 32-bit halves"
)]
fn split(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

#[inline]
fn join(tag: u32, bits: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(bits)
}

/// Whether block tag `a` is newer (> 0), the same (0) or older (< 0) than
/// `b`, on the 32-bit circle.
#[inline]
#[allow(
    clippy::cast_possible_wrap,
    reason = "serial-number comparison (RFC 1982 style)"
)]
fn tag_cmp(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

impl SharedReplayWindow {
    /// A fresh window of `size` packets (clamped to 64..=2048).
    #[must_use]
    pub fn new(size: u32, esn: bool) -> Arc<Self> {
        Arc::new(Self {
            top: Top(AtomicU64::new(0)),
            size: size.clamp(MIN_WINDOW, MAX_WINDOW),
            esn,
            slots: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        })
    }

    /// Window size W.
    #[must_use]
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Highest committed sequence number (0 if none yet).
    #[must_use]
    pub fn top(&self) -> u64 {
        self.top.0.load(Ordering::Acquire)
    }

    #[inline]
    fn left_of_window(&self, seq: u64, top: u64) -> bool {
        seq == 0 || (seq <= top && top - seq >= u64::from(self.size))
    }

    /// Pre-decryption check; as [`ReplayWindow::check`](super::ReplayWindow::check).
    ///
    /// # Errors
    /// [`Replay::Duplicate`] or [`Replay::TooOld`].
    #[inline]
    pub fn check(&self, seq_low: u32) -> Result<u64, Replay> {
        let top = self.top();
        let seq = if self.esn {
            infer_esn(top, self.size, seq_low)?
        } else {
            u64::from(seq_low)
        };
        if self.left_of_window(seq, top) {
            return Err(Replay::TooOld);
        }
        let (tag, bits) = split(self.slots[slot_of(seq)].load(Ordering::Acquire));
        match tag_cmp(tag_of(seq), tag) {
            0 if bits & bit_of(seq) != 0 => Err(Replay::Duplicate),
            d if d < 0 => Err(Replay::TooOld),
            _ => Ok(seq),
        }
    }

    /// Post-ICV commit (steps 1–4 of the module doc).
    ///
    /// # Errors
    /// [`Replay::Duplicate`] if another worker (or this one) committed
    /// `seq` already, [`Replay::TooOld`] if it is left of the window.
    #[inline]
    pub fn commit(&self, seq: u64) -> Result<(), Replay> {
        // 1.
        if self.left_of_window(seq, self.top()) {
            return Err(Replay::TooOld);
        }
        // 2.
        let slot = &self.slots[slot_of(seq)];
        let (tag, bit) = (tag_of(seq), bit_of(seq));
        let mut cur = slot.load(Ordering::Acquire);
        loop {
            let (ctag, cbits) = split(cur);
            let new = match tag_cmp(tag, ctag) {
                0 if cbits & bit != 0 => return Err(Replay::Duplicate),
                0 => join(tag, cbits | bit),
                d if d > 0 => join(tag, bit),
                _ => return Err(Replay::TooOld),
            };
            match slot.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        // 3.
        let top = self.top.0.fetch_max(seq, Ordering::AcqRel).max(seq);
        // 4.
        if self.left_of_window(seq, top) {
            return Err(Replay::TooOld);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esp::ReplayWindow;
    use proptest::prelude::*;

    #[test]
    fn reserve_never_wraps() {
        let c = AtomicU64::new(0);
        assert_eq!(reserve(&c, 32, 100), Some((1, 32)));
        assert_eq!(reserve(&c, 0, 100), Some((33, 33)), "at least one");
        assert_eq!(reserve(&c, 100, 100), Some((34, 100)), "capped");
        assert_eq!(reserve(&c, 1, 100), None, "exhausted");
        assert_eq!(c.load(Ordering::Relaxed), 100);
        let c = AtomicU64::new(u64::MAX - 2);
        assert_eq!(reserve(&c, 8, u64::MAX), Some((u64::MAX - 1, u64::MAX)));
        assert_eq!(reserve(&c, 8, u64::MAX), None);
    }

    /// Two copies of one outbound SA numbering from one counter: unique
    /// numbers, reservations per burst, exhaustion at 2^32 − 1 without ESN.
    #[test]
    fn outbound_copies_share_the_counter_up_to_exhaustion() {
        use crate::crypto::EspAlgorithm;
        use crate::esp::sa::Direction;
        use crate::esp::tests::{cfg, inner_v4};
        use crate::esp::{DropReason, OutboundSa, encap};
        let c = cfg(
            EspAlgorithm::Aes128Gcm16,
            false,
            false,
            false,
            Direction::Outbound,
        );
        let counter = shared_seq();
        let mut a = OutboundSa::new(&c, 0)
            .unwrap()
            .with_shared_seq(counter.clone());
        let mut b = OutboundSa::new(&c, 0)
            .unwrap()
            .with_shared_seq(counter.clone());
        let mut seen = std::collections::HashSet::new();
        let mut send = |sa: &mut OutboundSa| {
            let mut buf = netbuf::TestBuffer::from_slice(&inner_v4(40, 0));
            encap(sa, &mut buf).map(|()| {
                let seq = u32::from_be_bytes(buf.as_ref()[24..28].try_into().unwrap());
                assert!(seen.insert(seq), "seq {seq} twice");
                seq
            })
        };
        a.begin_burst(1, 4);
        b.begin_burst(1, 4);
        assert_eq!(send(&mut a), Ok(1));
        assert_eq!(send(&mut b), Ok(5), "b reserved 5..=8");
        assert_eq!(send(&mut a), Ok(2));
        // Next burst: a's leftover 3..=4 is abandoned.
        a.begin_burst(2, 2);
        assert_eq!(send(&mut a), Ok(9));
        assert_eq!(send(&mut a), Ok(10));
        assert_eq!(
            send(&mut a),
            Ok(11),
            "beyond the hint: one more reservation"
        );
        // Near the end of the 32-bit space.
        a.set_seq(u64::from(u32::MAX) - 3);
        b.begin_burst(3, 8);
        a.begin_burst(3, 8);
        assert_eq!(send(&mut b), Ok(u32::MAX - 2));
        assert_eq!(
            send(&mut a),
            Err(DropReason::SeqExhausted),
            "b holds the rest"
        );
        assert_eq!(send(&mut b), Ok(u32::MAX - 1));
        assert_eq!(send(&mut b), Ok(u32::MAX));
        assert_eq!(send(&mut b), Err(DropReason::SeqExhausted));
        assert_eq!(
            counter.load(Ordering::Relaxed),
            u64::from(u32::MAX),
            "never wraps"
        );
    }

    /// Single-threaded, the shared window decides exactly as the private
    /// one (which is itself checked against a model in `replay`).
    fn same_as_private(w: u32, esn: bool, seqs: &[u64]) {
        let shared = SharedReplayWindow::new(w, esn);
        let mut private = ReplayWindow::new(w, esn);
        for &s in seqs {
            let low = crate::crypto::seq_lo(s);
            let a = private
                .check(low)
                .and_then(|full| private.commit(full).map(|()| full));
            let b = shared
                .check(low)
                .and_then(|full| shared.commit(full).map(|()| full));
            assert_eq!(a, b, "seq {s} w {w}");
            assert_eq!(private.top(), shared.top());
        }
    }

    #[test]
    fn table() {
        let w = 64;
        same_as_private(
            w,
            false,
            &[
                1, 1, 2, 64, 65, 1, 2, 3, 100, 36, 37, 37, 200, 136, 137, 5000, 4937, 4936,
            ],
        );
        same_as_private(
            1024,
            true,
            &[(1 << 32) - 5, (1 << 32) + 3, (1 << 32) - 4, (1 << 32) - 5],
        );
    }

    proptest! {
        #[test]
        fn matches_private_window(
            w in prop_oneof![Just(64u32), Just(100), Just(1024), Just(2048)],
            steps in proptest::collection::vec((0u64..3000, proptest::bool::ANY), 1..300),
        ) {
            // A walk that moves forward and looks back, with repeats.
            let mut at = 1u64;
            let seqs: Vec<u64> = steps
                .iter()
                .map(|&(d, back)| {
                    if back { at.saturating_sub(d).max(1) } else { at += d; at }
                })
                .collect();
            same_as_private(w, false, &seqs);
        }
    }
}
