//! ESP tunnel mode ([RFC 4303]) for the workers: SAs, anti-replay/ESN,
//! encapsulation, decapsulation, bursts, and drop accounting.
//!
//! Layer: above [`crate::crypto`] (the transforms), generic over
//! [`netbuf::PacketBuffer`] (DPDK mbuf or `TestBuffer`).
//!
//! Guarantees on the per-packet path ([`encap`](fn@encap), [`decap`](fn@decap), [`burst`]):
//! no allocation, no syscall, no lock, no panic. Every failure is a
//! [`DropReason`], counted by the caller in its per-worker
//! [`DropCounters`]; the packet is then freed by the caller. Encap never
//! copies the payload: outer headers go into the headroom, the trailer
//! and ICV into the tailroom, and encryption is in place.
//!
//! ```text
//!   control core                      worker (owns its SAs)
//!   SaConfig (cold, Zeroizing keys) ──► OutboundSa / InboundSa (hot, align 64)
//!        ▲  poll_lifetime() events           │ encap / decap / burst
//!        └───────────────────────────────────┘ DropCounters per worker
//! ```
//!
//! [RFC 4303]: https://www.rfc-editor.org/rfc/rfc4303

pub mod burst;
pub mod decap;
pub mod encap;
pub mod frag;
mod hdr;
pub mod mtu;
pub mod reassembly;
pub mod replay;
pub mod sa;
pub mod shared;

pub use decap::decap;
pub use encap::encap;
pub use replay::{Replay, ReplayWindow};
pub use sa::{InboundSa, OutboundSa, SaConfig};
pub use shared::{SharedReplayWindow, SharedSeq, shared_seq};

/// Every reason the ESP path drops a packet. The discriminant indexes
/// [`DropCounters`] (VPP `foreach_esp_decrypt_next`, grout
/// `GR_DROP_REGISTER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum DropReason {
    /// No inbound SA for the SPI (counted by the caller's SA lookup).
    #[error("no SA for this SPI")]
    UnknownSpi = 0,
    /// The SPI in the packet is not the SA's.
    #[error("SPI does not match the SA")]
    SpiMismatch,
    /// Too short for the headers, or the ciphertext length is not
    /// aligned (RFC 4303 § 3.4.2 malformed).
    #[error("truncated or malformed ESP packet")]
    Truncated,
    /// The outer IP / UDP header is inconsistent.
    #[error("malformed outer header")]
    OuterMalformed,
    /// Replay window: sequence number already received.
    #[error("replayed sequence number")]
    ReplayDuplicate,
    /// Replay window: sequence number left of the window.
    #[error("sequence number too old for the replay window")]
    ReplayTooOld,
    /// ICV verification failed (RFC 4303 § 3.4.4).
    #[error("integrity check failed")]
    IcvFail,
    /// Padding bytes are not 1, 2, 3, … (RFC 4303 § 2.4).
    #[error("bad ESP padding")]
    BadPadding,
    /// Next header is neither 4 (IPv4) nor 41 (IPv6) in tunnel mode.
    #[error("unsupported next header")]
    BadNextHeader,
    /// Next header 59: a dummy packet (RFC 4303 § 2.6), discarded.
    #[error("dummy packet")]
    DummyPacket,
    /// The inner packet is not a consistent IPv4/IPv6 packet.
    #[error("malformed inner packet")]
    InnerMalformed,
    /// Outer CE on a Not-ECT inner packet (RFC 6040 § 4.2: drop).
    #[error("CE mark on a Not-ECT inner packet")]
    EcnNotEct,
    /// Not enough headroom for the outer headers.
    #[error("not enough headroom")]
    NoHeadroom,
    /// Not enough tailroom for the trailer and ICV.
    #[error("not enough tailroom")]
    NoTailroom,
    /// Outbound sequence number space exhausted (RFC 4303 § 3.3.3); the
    /// SA must be rekeyed.
    #[error("sequence number exhausted")]
    SeqExhausted,
    /// The SA's hard lifetime is reached.
    #[error("SA hard lifetime expired")]
    LifetimeExpired,
    /// The crypto library failed for a reason other than the ICV.
    #[error("crypto operation failed")]
    CryptoFailure,
    /// The inner packet exceeds the tunnel MTU and may not be fragmented
    /// (IPv4 with DF set, or IPv6); an ICMP "fragmentation needed" /
    /// "packet too big" goes back to the source ([`frag`]).
    #[error("inner packet larger than the tunnel MTU")]
    TooBig,
    /// Pre-fragmentation failed: no buffer from the pool, more fragments
    /// than the output array holds, or malformed IPv4 options ([`frag`]).
    #[error("could not fragment the inner packet")]
    FragmentFailed,
    /// A datagram under reassembly timed out; counted once per datagram
    /// ([`reassembly`]).
    #[error("reassembly timed out")]
    ReassemblyTimeout,
    /// Overlapping fragments: the whole datagram is dropped (RFC 5722 for
    /// IPv6, the same rule for IPv4).
    #[error("overlapping fragments")]
    ReassemblyOverlap,
    /// An exact duplicate of a fragment already held.
    #[error("duplicate fragment")]
    ReassemblyDuplicate,
    /// More fragments than the per-datagram limit.
    #[error("too many fragments in one datagram")]
    ReassemblyTooManyFragments,
    /// The reassembled datagram would exceed the configured maximum or
    /// the output buffer.
    #[error("reassembled datagram too big")]
    ReassemblyTooBig,
    /// The reassembly table was full: the oldest datagram was evicted
    /// (counted once per evicted datagram).
    #[error("reassembly table full, oldest datagram evicted")]
    ReassemblyEvicted,
    /// The outer IPv4 header checksum is wrong (found by the NIC where
    /// the port checks it, else in software).
    #[error("bad outer IPv4 header checksum")]
    OuterBadChecksum,
}

impl DropReason {
    /// Number of reasons (size of [`DropCounters`]).
    pub const COUNT: usize = Self::OuterBadChecksum as usize + 1;

    /// All reasons, in discriminant order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::UnknownSpi,
        Self::SpiMismatch,
        Self::Truncated,
        Self::OuterMalformed,
        Self::ReplayDuplicate,
        Self::ReplayTooOld,
        Self::IcvFail,
        Self::BadPadding,
        Self::BadNextHeader,
        Self::DummyPacket,
        Self::InnerMalformed,
        Self::EcnNotEct,
        Self::NoHeadroom,
        Self::NoTailroom,
        Self::SeqExhausted,
        Self::LifetimeExpired,
        Self::CryptoFailure,
        Self::TooBig,
        Self::FragmentFailed,
        Self::ReassemblyTimeout,
        Self::ReassemblyOverlap,
        Self::ReassemblyDuplicate,
        Self::ReassemblyTooManyFragments,
        Self::ReassemblyTooBig,
        Self::ReassemblyEvicted,
        Self::OuterBadChecksum,
    ];
}

impl From<Replay> for DropReason {
    fn from(r: Replay) -> Self {
        match r {
            Replay::Duplicate => Self::ReplayDuplicate,
            Replay::TooOld => Self::ReplayTooOld,
        }
    }
}

/// Per-worker drop counters, one per [`DropReason`]; summed by the
/// control core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropCounters(pub [u64; DropReason::COUNT]);

impl Default for DropCounters {
    fn default() -> Self {
        Self([0; DropReason::COUNT])
    }
}

impl DropCounters {
    /// Counts one drop.
    #[inline]
    pub fn count(&mut self, reason: DropReason) {
        let c = &mut self.0[reason as usize];
        *c = c.wrapping_add(1);
    }

    /// The count for `reason`.
    #[must_use]
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// Sum over all reasons.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.0.iter().fold(0, |a, b| a.wrapping_add(*b))
    }
}

#[cfg(test)]
mod frag_tests;
#[cfg(test)]
mod tests;
