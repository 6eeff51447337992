//! Anti-replay window with extended sequence numbers, following
//! [RFC 4303 Appendix A] (window) and [RFC 4303 Appendix A2] / [RFC 4304]
//! (ESN inference), visibly.
//!
//! Two calls per packet (VPP `ipsec_sa_anti_replay_and_sn_advance`,
//! boringtun `will_accept` / `mark_did_receive`):
//!
//! 1. [`ReplayWindow::check`] before decryption: cheap, read-only; rejects
//!    duplicates and too-old packets and infers the high 32 bits of the
//!    sequence number (Appendix A2.2, cases A and B) that the ICV check
//!    needs.
//! 2. [`ReplayWindow::commit`] after the ICV verified: advances the window
//!    (RFC 4303 § 3.4.3: "the receive window is updated only if the
//!    integrity verification succeeds").
//!
//! The bitmap is a fixed 2048-bit ring indexed by `seq mod 2048`, so
//! window sizes 64–2048 share one layout and a check never allocates or
//! shifts: advancing the window clears only the bits it passes over.
//!
//! Not implemented: the Appendix A3 resynchronisation after many
//! consecutive ICV failures (a wrong Seqh guess only costs the packet).
//!
//! [RFC 4303 Appendix A]: https://www.rfc-editor.org/rfc/rfc4303#appendix-A
//! [RFC 4303 Appendix A2]: https://www.rfc-editor.org/rfc/rfc4303#appendix-A.2
//! [RFC 4304]: https://www.rfc-editor.org/rfc/rfc4304

use crate::crypto::{seq_hi, seq_lo};

/// Smallest window the spec allows (spec § 3.8: 64–2048 packets).
pub const MIN_WINDOW: u32 = 64;
/// Largest window the spec allows.
pub const MAX_WINDOW: u32 = 2048;
/// Default window (spec § 3.8).
pub const DEFAULT_WINDOW: u32 = 1024;

const RING_BITS: u64 = MAX_WINDOW as u64;
const WORDS: usize = (MAX_WINDOW / 64) as usize;

/// Why the window refused a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    /// Already received (bit set in the window).
    #[error("duplicate sequence number")]
    Duplicate,
    /// Left of the window, or sequence number 0 (never sent, RFC 4303
    /// § 3.3.3: the first packet has sequence number 1).
    #[error("sequence number left of the window")]
    TooOld,
}

/// The receive-side window of one inbound SA.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest authenticated sequence number ("T"); 0 before the first.
    top: u64,
    /// Window size "W" in packets, 64..=2048.
    size: u32,
    /// Extended sequence numbers negotiated (RFC 4304).
    esn: bool,
    /// Bit `s mod 2048` set = sequence `s` received (for s in (T-2048, T]).
    bits: [u64; WORDS],
}

#[inline]
#[allow(clippy::cast_possible_truncation)] // s % 2048 < 2048 fits any usize
fn ring_pos(s: u64) -> usize {
    (s % RING_BITS) as usize
}

impl ReplayWindow {
    /// A fresh window; `size` is clamped to 64..=2048.
    #[must_use]
    pub fn new(size: u32, esn: bool) -> Self {
        Self {
            top: 0,
            size: size.clamp(MIN_WINDOW, MAX_WINDOW),
            esn,
            bits: [0; WORDS],
        }
    }

    /// A window that has already seen everything up to and including
    /// `top`: for handing an SA's inbound state over (another worker, a
    /// restart from a checkpoint) when only the highest sequence number is
    /// known. Conservative: every number in the window counts as received.
    #[must_use]
    pub fn resume(size: u32, esn: bool, top: u64) -> Self {
        Self {
            top,
            bits: [u64::MAX; WORDS],
            ..Self::new(size, esn)
        }
    }

    /// Window size W.
    #[must_use]
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Highest authenticated sequence number (0 if none yet).
    #[must_use]
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Pre-decryption check of the 32-bit sequence number from the wire.
    ///
    /// Returns the full sequence number to authenticate with (with ESN
    /// the inferred high half; without ESN the low half as `u64`).
    ///
    /// # Errors
    /// [`Replay::Duplicate`] or [`Replay::TooOld`].
    #[inline]
    pub fn check(&self, seq_low: u32) -> Result<u64, Replay> {
        let seq = if self.esn {
            self.infer_esn(seq_low)?
        } else {
            u64::from(seq_low)
        };
        self.check_full(seq)
    }

    /// RFC 4303 Appendix A2.2: infer Seqh from Seql and the window.
    #[inline]
    fn infer_esn(&self, seql: u32) -> Result<u64, Replay> {
        infer_esn(self.top, self.size, seql)
    }

    /// RFC 4303 Appendix A: right of the window = new; in the window =
    /// check the bit; left of it = too old.
    #[inline]
    fn check_full(&self, seq: u64) -> Result<u64, Replay> {
        if seq == 0 {
            return Err(Replay::TooOld);
        }
        if seq > self.top {
            return Ok(seq);
        }
        if self.top - seq >= u64::from(self.size) {
            return Err(Replay::TooOld);
        }
        let p = ring_pos(seq);
        if self.bits[p / 64] & (1 << (p % 64)) != 0 {
            Err(Replay::Duplicate)
        } else {
            Ok(seq)
        }
    }

    /// Post-ICV update: marks `seq` received and slides the window right
    /// if `seq` is new. Re-checks first, so two packets with the same
    /// sequence number checked in one batch cannot both be committed.
    ///
    /// # Errors
    /// [`Replay`] if `seq` became a duplicate or too old since
    /// [`ReplayWindow::check`]; the window is unchanged.
    #[inline]
    pub fn commit(&mut self, seq: u64) -> Result<(), Replay> {
        self.check_full(seq)?;
        if seq > self.top {
            let diff = seq - self.top;
            if diff >= RING_BITS {
                self.bits = [0; WORDS];
            } else if diff > 1 {
                self.clear_range(self.top + 1, diff);
            }
            // diff == 1, in order (the common case): the one slot entering
            // the window is `seq`'s own, set below; nothing to clear.
            self.top = seq;
        }
        let p = ring_pos(seq);
        self.bits[p / 64] |= 1 << (p % 64);
        Ok(())
    }

    /// Clears `count` (< 2048) ring bits starting at sequence `start`.
    fn clear_range(&mut self, start: u64, count: u64) {
        let mut pos = ring_pos(start);
        let mut left = ring_pos(count); // count < RING_BITS
        while left > 0 {
            let word = pos / 64;
            let bit = pos % 64;
            let n = (64 - bit).min(left);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            self.bits[word] &= !mask;
            left -= n;
            pos = (pos + n) % WORDS.saturating_mul(64);
        }
    }
}

/// RFC 4303 Appendix A2.2: infer Seqh from Seql, the window top `top`
/// ("T") and size `w` ("W").
///
/// # Errors
/// [`Replay::TooOld`] when the inferred number would fall outside the
/// 64-bit space.
#[inline]
pub(crate) fn infer_esn(top: u64, w: u32, seql: u32) -> Result<u64, Replay> {
    let tl = seq_lo(top);
    let th = seq_hi(top);
    let seqh = if tl >= w - 1 {
        // Case A: the window lies within one 2^32 sub-space.
        //   If (Seql >= Tl - W + 1) Seqh = Th, else Seqh = Th + 1
        if seql >= tl - (w - 1) {
            th
        } else {
            th.checked_add(1).ok_or(Replay::TooOld)?
        }
    } else {
        // Case B: the window spans two sub-spaces.
        //   If (Seql >= Tl - W + 1 (mod 2^32)) Seqh = Th - 1, else Seqh = Th
        if seql >= tl.wrapping_sub(w - 1) {
            // No sub-space below 0: such a packet cannot be valid.
            th.checked_sub(1).ok_or(Replay::TooOld)?
        } else {
            th
        }
    };
    Ok((u64::from(seqh) << 32) | u64::from(seql))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// Trivially correct reference: every accepted sequence number in a
    /// set, plus the highest.
    struct Model {
        seen: HashSet<u64>,
        top: u64,
        w: u64,
    }

    impl Model {
        fn new(w: u32) -> Self {
            Self {
                seen: HashSet::new(),
                top: 0,
                w: u64::from(w),
            }
        }
        fn accept(&mut self, s: u64) -> Result<(), Replay> {
            if s == 0 || (s <= self.top && self.top - s >= self.w) {
                return Err(Replay::TooOld);
            }
            if !self.seen.insert(s) {
                return Err(Replay::Duplicate);
            }
            self.top = self.top.max(s);
            Ok(())
        }
    }

    fn run(w: &mut ReplayWindow, s: u64) -> Result<(), Replay> {
        let full = w.check(seq_lo(s))?;
        assert_eq!(full, s, "inferred sequence number");
        w.commit(full)
    }

    /// Exhaustive: every sequence of 4 values from an interesting set
    /// around the window edges, against the model (window 64).
    #[test]
    fn exhaustive_small_range_matches_model() {
        let vals = [1u64, 2, 3, 62, 63, 64, 65, 66, 67, 127, 128, 129, 130, 200];
        for &a in &vals {
            for &b in &vals {
                for &c in &vals {
                    for &d in &vals {
                        let mut w = ReplayWindow::new(64, false);
                        let mut m = Model::new(64);
                        for s in [a, b, c, d] {
                            assert_eq!(run(&mut w, s), m.accept(s), "{a} {b} {c} {d} at {s}");
                        }
                    }
                }
            }
        }
    }

    /// Exhaustive: all pairs in 1..=300 for the smallest window (without
    /// ESN: left of the window, 32 bits cannot tell "too old" from "next
    /// sub-space", which the ESN tests cover separately).
    #[test]
    fn exhaustive_pairs() {
        for a in 1..=300u64 {
            for b in 1..=300u64 {
                let mut w = ReplayWindow::new(64, false);
                let mut m = Model::new(64);
                assert_eq!(run(&mut w, a), m.accept(a));
                assert_eq!(run(&mut w, b), m.accept(b), "{a} then {b}");
            }
        }
    }

    /// boringtun `test_replay_counter`-style table.
    #[test]
    fn table() {
        let mut w = ReplayWindow::new(64, false);
        assert_eq!(w.check(0), Err(Replay::TooOld), "seq 0 is never valid");
        assert_eq!(run(&mut w, 1), Ok(()));
        assert_eq!(run(&mut w, 1), Err(Replay::Duplicate));
        assert_eq!(run(&mut w, 3), Ok(()));
        assert_eq!(run(&mut w, 2), Ok(()), "in-window out of order");
        assert_eq!(run(&mut w, 2), Err(Replay::Duplicate));
        assert_eq!(run(&mut w, 66), Ok(()));
        assert_eq!(
            run(&mut w, 3),
            Err(Replay::Duplicate),
            "66-3 = 63 < 64: 3 is still in the window, and a duplicate"
        );
        assert_eq!(w.check(2), Err(Replay::TooOld), "66-2 = 64: left of window");
        assert_eq!(run(&mut w, 10_000), Ok(()), "window jump");
        assert_eq!(run(&mut w, 66), Err(Replay::TooOld));
        assert_eq!(run(&mut w, 9_999), Ok(()));
        assert_eq!(run(&mut w, 9_937), Ok(()), "edge: T - 63");
        assert_eq!(w.check(9_936), Err(Replay::TooOld), "edge: T - 64");
    }

    #[test]
    fn commit_rechecks() {
        let mut w = ReplayWindow::new(1024, false);
        let a = w.check(5).unwrap();
        let b = w.check(5).unwrap();
        assert_eq!(w.commit(a), Ok(()));
        assert_eq!(w.commit(b), Err(Replay::Duplicate));
    }

    #[test]
    fn resume_treats_the_window_as_seen() {
        let w = ReplayWindow::resume(64, true, (1 << 32) + 5);
        assert_eq!(w.check(5), Err(Replay::Duplicate));
        assert_eq!(w.check(u32::MAX), Err(Replay::Duplicate));
        assert_eq!(w.check(6), Ok((1 << 32) + 6));
    }

    #[test]
    fn size_is_clamped() {
        assert_eq!(ReplayWindow::new(1, false).size(), MIN_WINDOW);
        assert_eq!(ReplayWindow::new(100_000, false).size(), MAX_WINDOW);
    }

    /// ESN rollover: the window straddles each 2^32 boundary (Case B) and
    /// packets from both sub-spaces are inferred correctly.
    #[test]
    fn esn_rollover_at_2_pow_32_boundaries() {
        for k in 1..=3u64 {
            let b = k << 32;
            let mut w = ReplayWindow::new(1024, true);
            let mut m = Model::new(1024);
            // Get the window to just below the boundary.
            for s in [b - 2000, b - 10, b - 3] {
                // b - 2000 with T = 0: Case B, Th = 0 -> needs a start at
                // the right epoch; seed via commit directly.
                if w.top() == 0 {
                    w.commit(s).unwrap();
                    m.accept(s).unwrap();
                    continue;
                }
                assert_eq!(run(&mut w, s), m.accept(s));
            }
            // Cross the boundary: Case A, Seql < Tl - W + 1 -> Th + 1.
            for s in [b, b + 1, b - 1, b + 5, b - 2, b - 3, b - 5] {
                assert_eq!(run(&mut w, s), m.accept(s), "k={k} s={s:#x}");
            }
            // Now Tl = 5 < W - 1 (Case B): late packets from the old
            // sub-space are inferred as Th - 1.
            assert_eq!(w.check(seq_lo(b - 1)), Err(Replay::Duplicate));
            assert_eq!(w.check(seq_lo(b - 4)), Ok(b - 4));
            assert_eq!(w.check(seq_lo(b - 1018)), Ok(b - 1018), "T - W + 1");
            assert_eq!(w.check(seq_lo(b + 6)), Ok(b + 6));
            // Jump so that Tl = 1024 >= W - 1 (Case A again).
            assert_eq!(run(&mut w, b + 1024), Ok(()));
            assert_eq!(w.check(seq_lo(b + 1)), Err(Replay::Duplicate));
            assert_eq!(w.check(seq_lo(b + 2)), Ok(b + 2));
            // b - 1 is left of the window; 32 bits cannot say so, Case A
            // infers Seqh = Th (a far-future number) and the ICV check
            // with that Seqh is what rejects it (Appendix A2.2).
            assert_eq!(w.check(seq_lo(b - 1)), Ok(b + (1 << 32) - 1));
        }
    }

    #[test]
    fn esn_low_half_zero_is_valid_above_first_epoch() {
        let mut w = ReplayWindow::new(64, true);
        w.commit((1 << 32) - 1).unwrap();
        assert_eq!(w.check(0), Ok(1 << 32));
        let mut n = ReplayWindow::new(64, false);
        n.commit(5).unwrap();
        assert_eq!(n.check(0), Err(Replay::TooOld));
    }

    proptest! {
        /// Random walks (in-window reordering, duplicates, jumps) with
        /// random window sizes, starting anywhere including just below a
        /// 2^32 boundary, against the model.
        #[test]
        fn random_walk_matches_model(
            size in MIN_WINDOW..=MAX_WINDOW,
            start_hi in 0u64..4,
            start_off in 0u64..5000,
            steps in proptest::collection::vec(-3000i64..3000, 1..300),
        ) {
            let mut w = ReplayWindow::new(size, true);
            let mut m = Model::new(size);
            let start = ((start_hi << 32) | 1).saturating_sub(start_off).max(1);
            w.commit(start).unwrap();
            m.accept(start).unwrap();
            let mut cur = start;
            for st in steps {
                let s = cur.saturating_add_signed(st).max(1);
                // Only sequence numbers inside the ESN inference range
                // [T - W + 1, T + 2^32 - W] are decidable from 32 bits;
                // left of it the check must not claim `s` itself.
                let lo = m.top.saturating_sub(u64::from(size) - 1);
                let got = w.check(seq_lo(s));
                if s < lo {
                    prop_assert_ne!(got, Ok(s));
                    continue;
                }
                match (got, m.accept(s)) {
                    (Ok(g), Ok(())) => {
                        prop_assert_eq!(g, s);
                        w.commit(g).unwrap();
                    }
                    (Err(a), Err(b)) => prop_assert_eq!(a, b),
                    (a, b) => prop_assert!(false, "s={} ours={:?} model={:?}", s, a, b),
                }
                cur = s;
            }
            prop_assert_eq!(w.top(), m.top);
        }
    }
}
