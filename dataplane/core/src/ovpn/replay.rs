//! The packet-id replay window.

use super::REPLAY_WINDOW;

/// Sliding-window replay protection over 32-bit packet ids: `check`
/// before decryption, `commit` after the tag verified (RFC 4303
/// Appendix A's two steps, without ESN: OpenVPN packet ids never wrap).
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// Highest id accepted (0: none yet).
    top: u32,
    /// Bit i set: `top - i` was accepted.
    bits: u64,
}

impl ReplayWindow {
    /// The pre-decryption check: would `id` be accepted?
    #[inline]
    #[must_use]
    pub fn check(&self, id: u32) -> bool {
        if id == 0 {
            return false;
        }
        if id > self.top {
            // Right of the window ("Case A": ahead of everything seen).
            return true;
        }
        let back = self.top - id;
        back < REPLAY_WINDOW && self.bits & (1u64 << back) == 0
    }

    /// The post-authentication update: marks `id` seen. Call only after
    /// [`Self::check`] passed and the packet authenticated.
    #[inline]
    pub fn commit(&mut self, id: u32) {
        if id > self.top {
            let shift = id - self.top;
            self.bits = if shift >= 64 { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.top = id;
        } else {
            let back = self.top - id;
            if back < 64 {
                self.bits |= 1u64 << back;
            }
        }
    }

    /// The highest packet id accepted (0: none yet).
    #[must_use]
    pub fn top(&self) -> u32 {
        self.top
    }
}
