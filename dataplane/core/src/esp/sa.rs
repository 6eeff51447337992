//! Security associations, split cold/hot (VPP `ipsec_sa.h`).
//!
//! [`SaConfig`] is the control plane's full record (keys in
//! [`Zeroizing`]). A worker receives, per direction, an [`OutboundSa`] or
//! [`InboundSa`]: `#[repr(C, align(64))]`, per-packet state first
//! (sequence number / replay window, counters, limits), then the
//! prebuilt outer header template and the transform.
//!
//! Lifetimes: byte and packet limits are checked per packet by the
//! worker; time limits are checked when the worker calls
//! `handle_timeout(now_secs)` between bursts (the SA never reads the
//! clock). Reaching a soft limit raises a flag that
//! `poll_lifetime()` reports once (the control plane starts a rekey);
//! reaching a hard limit makes every further packet a
//! [`DropReason::LifetimeExpired`].

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::DropReason;
use super::shared::{SharedReplayWindow, SharedSeq, reserve};

use super::hdr::{IPV4_LEN, IPV6_LEN, PROTO_ESP, PROTO_UDP, UDP_LEN};
use super::replay::{MAX_WINDOW, MIN_WINDOW, ReplayWindow};
use crate::crypto::{
    CryptoBackend, CryptoError, ESP_HEADER_LEN, EspAlgorithm, EspTransform, Transform,
};

/// Which way an SA carries traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Peer → us (decap).
    Inbound,
    /// Us → peer (encap).
    Outbound,
}

/// Outer tunnel endpoints. For an outbound SA `local` is the outer
/// source; for an inbound SA `local` is the outer destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEndpoints {
    /// IPv4 outer header.
    V4 {
        /// Our address.
        local: Ipv4Addr,
        /// The peer's address.
        remote: Ipv4Addr,
    },
    /// IPv6 outer header.
    V6 {
        /// Our address.
        local: Ipv6Addr,
        /// The peer's address.
        remote: Ipv6Addr,
    },
}

/// UDP encapsulation of ESP ([RFC 3948]), normally 4500 ↔ 4500 or the
/// peer's NAT-mapped port.
///
/// [RFC 3948]: https://www.rfc-editor.org/rfc/rfc3948
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatT {
    /// Our UDP port.
    pub local_port: u16,
    /// The peer's UDP port.
    pub remote_port: u16,
}

/// One set of lifetime limits; `None` = no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LifetimeLimits {
    /// Seconds after installation.
    pub secs: Option<u64>,
    /// Inner bytes.
    pub bytes: Option<u64>,
    /// Packets.
    pub packets: Option<u64>,
}

/// Soft (rekey) and hard (stop) limits (RFC 4301 § 4.4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetimes {
    /// Reaching any soft limit asks the control plane to rekey.
    pub soft: LifetimeLimits,
    /// Reaching any hard limit stops the SA.
    pub hard: LifetimeLimits,
}

/// What to put in the outer IPv4 DF bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DfPolicy {
    /// Copy DF from an inner IPv4 packet (RFC 4301 § 8.1); 0 for an inner
    /// IPv6 packet, so the path may fragment the outer packet (the spec
    /// forbids relying on PMTUD, § 25.3).
    #[default]
    CopyFromInner,
    /// Always clear DF (spec § 14.2 best practice "reset DF").
    Clear,
    /// Always set DF.
    Set,
}

/// The control plane's full SA record (cold).
#[derive(Debug, Clone)]
pub struct SaConfig {
    /// SPI (RFC 4303 § 2.1; 1–255 are reserved, 0 is invalid).
    pub spi: u32,
    /// Direction.
    pub direction: Direction,
    /// Algorithm suite.
    pub algorithm: EspAlgorithm,
    /// Encryption key (GCM: key || 4-byte salt).
    pub enc_key: Zeroizing<Vec<u8>>,
    /// Integrity key (empty for GCM).
    pub auth_key: Zeroizing<Vec<u8>>,
    /// Seed of the CBC IV generator, drawn once per SA from the control
    /// plane's RNG (unused for GCM).
    pub iv_seed: Zeroizing<[u8; 16]>,
    /// Outer endpoints.
    pub tunnel: TunnelEndpoints,
    /// UDP encapsulation, if NAT was detected.
    pub nat_t: Option<NatT>,
    /// Extended sequence numbers (RFC 4304).
    pub esn: bool,
    /// Anti-replay window, 64–2048 packets (spec § 3.8, default 1024).
    pub replay_window: u32,
    /// Lifetimes.
    pub lifetimes: Lifetimes,
    /// Outer DF bit policy.
    pub df: DfPolicy,
}

/// Why an SA could not be built (control-plane error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaError {
    /// SPI 0–255 (RFC 4303 § 2.1).
    #[error("SPI {0} is reserved")]
    ReservedSpi(u32),
    /// Replay window outside 64–2048.
    #[error("replay window {0} outside 64..=2048")]
    ReplayWindow(u32),
    /// Built for the wrong direction.
    #[error("SA config is for the other direction")]
    WrongDirection,
    /// Key setup failed.
    #[error("key setup failed: {0}")]
    Crypto(#[from] CryptoError),
}

impl SaConfig {
    fn validate(&self, dir: Direction, backend: CryptoBackend) -> Result<Transform, SaError> {
        if self.spi < 256 {
            return Err(SaError::ReservedSpi(self.spi));
        }
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&self.replay_window) {
            return Err(SaError::ReplayWindow(self.replay_window));
        }
        if self.direction != dir {
            return Err(SaError::WrongDirection);
        }
        Ok(Transform::with_backend(
            backend,
            self.algorithm,
            &self.enc_key,
            &self.auth_key,
            &self.iv_seed,
        )?)
    }
}

/// Lifetime event for the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeEvent {
    /// A soft limit was reached: rekey.
    SoftExpired,
    /// A hard limit was reached: the SA drops everything; delete it.
    HardExpired,
}

/// Per-SA packet/byte counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SaCounters {
    /// Packets processed successfully.
    pub packets: u64,
    /// Inner bytes processed successfully.
    pub bytes: u64,
}

/// Limits and state shared by both directions: what every packet reads
/// or writes first, what a flush or timeout reads after.
#[derive(Debug, Clone)]
#[repr(C)]
pub(crate) struct LifetimeState {
    // per packet
    pub(crate) counters: SaCounters,
    hard_packets: u64,
    hard_bytes: u64,
    pub(crate) hard_reached: bool,
    pub(crate) soft_reached: bool,
    soft_reported: bool,
    hard_reported: bool,
    // per flush / timeout
    soft_packets: u64,
    soft_bytes: u64,
    soft_at_secs: u64,
    hard_at_secs: u64,
}

impl LifetimeState {
    fn new(l: &Lifetimes, installed_at_secs: u64) -> Self {
        let at = |s: Option<u64>| s.map_or(u64::MAX, |s| installed_at_secs.saturating_add(s));
        Self {
            counters: SaCounters::default(),
            soft_packets: l.soft.packets.unwrap_or(u64::MAX),
            soft_bytes: l.soft.bytes.unwrap_or(u64::MAX),
            hard_packets: l.hard.packets.unwrap_or(u64::MAX),
            hard_bytes: l.hard.bytes.unwrap_or(u64::MAX),
            soft_at_secs: at(l.soft.secs),
            hard_at_secs: at(l.hard.secs),
            soft_reached: false,
            hard_reached: false,
            soft_reported: false,
            hard_reported: false,
        }
    }

    /// Whether one more packet is allowed, given `pending` not yet
    /// flushed counters (hard packet limit: at most `hard_packets`
    /// packets; hard byte limit: no packet starts once it is reached).
    #[inline]
    pub(crate) fn admits(&self, pending: &SaCounters) -> bool {
        !self.hard_reached
            && self.counters.packets.saturating_add(pending.packets) < self.hard_packets
            && self.counters.bytes.saturating_add(pending.bytes) < self.hard_bytes
    }

    /// Adds `delta` and updates the soft/hard flags.
    #[inline]
    pub(crate) fn flush(&mut self, delta: &SaCounters) {
        let c = &mut self.counters;
        c.packets = c.packets.saturating_add(delta.packets);
        c.bytes = c.bytes.saturating_add(delta.bytes);
        if c.packets >= self.soft_packets || c.bytes >= self.soft_bytes {
            self.soft_reached = true;
        }
        if c.packets >= self.hard_packets || c.bytes >= self.hard_bytes {
            self.hard_reached = true;
        }
    }

    fn handle_timeout(&mut self, now_secs: u64) {
        if now_secs >= self.soft_at_secs {
            self.soft_reached = true;
        }
        if now_secs >= self.hard_at_secs {
            self.hard_reached = true;
        }
    }

    fn poll(&mut self) -> Option<LifetimeEvent> {
        if self.hard_reached && !self.hard_reported {
            self.hard_reported = true;
            self.soft_reported = true;
            return Some(LifetimeEvent::HardExpired);
        }
        if self.soft_reached && !self.soft_reported {
            self.soft_reported = true;
            return Some(LifetimeEvent::SoftExpired);
        }
        None
    }
}

/// Longest outer template: IPv6 (40) + UDP (8) + ESP header (8).
pub(crate) const MAX_TEMPLATE: usize = IPV6_LEN + UDP_LEN + ESP_HEADER_LEN;

/// Prebuilt outer IPv4/IPv6 (+ UDP) + ESP header; per packet only lengths,
/// ID, TOS/TC, DF, checksums and the sequence number are filled in. One
/// cache line of its own.
#[derive(Debug, Clone)]
#[repr(C, align(64))]
pub(crate) struct HeaderTemplate {
    pub(crate) bytes: [u8; MAX_TEMPLATE],
    /// Bytes used: ip_len + udp + 8.
    pub(crate) len: u8,
    /// 20 or 40.
    pub(crate) ip_len: u8,
    /// UDP encapsulation present.
    pub(crate) udp: bool,
    /// The outer IPv4 header checksum is left to the NIC
    /// ([`OutboundSa::with_tx_checksum_offload`]).
    pub(crate) tx_checksum_offload: bool,
}

/// Outer TTL / hop limit.
pub(crate) const OUTER_TTL: u8 = 64;

impl HeaderTemplate {
    fn new(spi: u32, tunnel: &TunnelEndpoints, nat_t: Option<NatT>) -> Self {
        let mut b = [0u8; MAX_TEMPLATE];
        let proto = if nat_t.is_some() {
            PROTO_UDP
        } else {
            PROTO_ESP
        };
        let ip_len = match tunnel {
            TunnelEndpoints::V4 { local, remote } => {
                b[0] = 0x45;
                b[8] = OUTER_TTL;
                b[9] = proto;
                b[12..16].copy_from_slice(&local.octets());
                b[16..20].copy_from_slice(&remote.octets());
                IPV4_LEN
            }
            TunnelEndpoints::V6 { local, remote } => {
                b[0] = 0x60;
                b[6] = proto;
                b[7] = OUTER_TTL;
                b[8..24].copy_from_slice(&local.octets());
                b[24..40].copy_from_slice(&remote.octets());
                IPV6_LEN
            }
        };
        let mut off = ip_len;
        if let Some(n) = nat_t {
            b[off..off + 2].copy_from_slice(&n.local_port.to_be_bytes());
            b[off + 2..off + 4].copy_from_slice(&n.remote_port.to_be_bytes());
            off += UDP_LEN;
        }
        b[off..off + 4].copy_from_slice(&spi.to_be_bytes());
        off += ESP_HEADER_LEN;
        Self {
            bytes: b,
            len: u8::try_from(off).unwrap_or(u8::MAX),
            ip_len: u8::try_from(ip_len).unwrap_or(u8::MAX),
            udp: nat_t.is_some(),
            tx_checksum_offload: false,
        }
    }
}

/// Outbound (encap) runtime SA, owned by one worker.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct OutboundSa {
    // --- lines 0-1: read and written per packet ---
    /// Last sequence number sent (0 = none yet; the first is 1).
    pub(crate) seq: u64,
    pub(crate) spi: u32,
    pub(crate) ip_id: u16,
    pub(crate) esn: bool,
    pub(crate) df: DfPolicy,
    pub(crate) life: LifetimeState,
    /// The counter shared with the other workers carrying this SA
    /// ([`super::shared`]); `None`: this worker alone numbers packets.
    pub(crate) shared_seq: Option<SharedSeq>,
    /// Shared counter only: last number of this worker's reservation
    /// (`seq` runs up to it), the burst it was made in, and how many
    /// numbers the next reservation asks for.
    pub(crate) seq_end: u64,
    pub(crate) seq_epoch: u64,
    pub(crate) seq_hint: u32,
    // --- line 2: read per packet ---
    pub(crate) template: HeaderTemplate,
    // --- lines 3+: the cipher context (ring's AES-GCM key: key schedule
    // and GHASH table; intel-ipsec-mb's is boxed, 64-byte aligned) ---
    pub(crate) transform: Transform,
}

/// Inbound (decap) runtime SA, owned by one worker.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct InboundSa {
    // --- lines 0-1: per packet ---
    pub(crate) spi: u32,
    pub(crate) esn: bool,
    pub(crate) nat_t: bool,
    /// The outer header is IPv6 (sizes the tunnel MTU).
    pub(crate) outer_v6: bool,
    pub(crate) life: LifetimeState,
    /// The window shared with the other workers carrying this SA
    /// ([`super::shared`]); `None`: `replay` below is used.
    pub(crate) shared_replay: Option<Arc<SharedReplayWindow>>,
    // --- next 5 lines: window top/size + 2048-bit ring ---
    pub(crate) replay: ReplayWindow,
    // --- then the cipher context ---
    pub(crate) transform: Transform,
}

// Size guards. Per-packet scalars (sequence number, counters, hard limits,
// flags) sit in the first two cache lines, the header template in exactly
// the third, and the replay ring is 2048 bits plus its header. The whole
// structs are dominated by the opaque key objects (ring's AES-GCM key is
// ~560 bytes; CBC/HMAC contexts are boxed, see `Transform`): the last two
// guards catch an accidental growth, e.g. a crypto upgrade.
const _: () = assert!(std::mem::offset_of!(OutboundSa, life) + size_of::<LifetimeState>() <= 128);
const _: () = assert!(std::mem::offset_of!(OutboundSa, template) == 128);
const _: () = assert!(size_of::<HeaderTemplate>() == 64);
const _: () = assert!(std::mem::offset_of!(InboundSa, life) + size_of::<LifetimeState>() <= 128);
const _: () = assert!(size_of::<ReplayWindow>() <= 256 + 64);
const _: () = assert!(align_of::<OutboundSa>() == 64 && align_of::<InboundSa>() == 64);
const _: () = assert!(size_of::<OutboundSa>() <= 1024);
const _: () = assert!(size_of::<InboundSa>() <= 1280);

impl OutboundSa {
    /// Builds the runtime SA from the cold record (cold path), with the
    /// `ring` crypto backend; see [`Self::new_with`].
    ///
    /// # Errors
    /// [`SaError`] for an invalid record or key.
    pub fn new(cfg: &SaConfig, installed_at_secs: u64) -> Result<Self, SaError> {
        Self::new_with(cfg, installed_at_secs, CryptoBackend::Ring)
    }

    /// The SA's crypto runs on intel-ipsec-mb's job API: its packets are
    /// best prepared with [`super::encap::encap_begin`] and sealed a burst
    /// at a time ([`crate::crypto::run_cbc_batch`]).
    #[inline]
    #[must_use]
    pub fn uses_job_api(&self) -> bool {
        self.transform.cbc_mb().is_some()
    }

    /// Builds the runtime SA from the cold record (cold path), its cipher
    /// on `backend` (the one the process chose at start).
    ///
    /// # Errors
    /// [`SaError`] for an invalid record or key.
    pub fn new_with(
        cfg: &SaConfig,
        installed_at_secs: u64,
        backend: CryptoBackend,
    ) -> Result<Self, SaError> {
        let transform = cfg.validate(Direction::Outbound, backend)?;
        Ok(Self {
            seq: 0,
            shared_seq: None,
            seq_end: 0,
            seq_epoch: 0,
            seq_hint: 1,
            life: LifetimeState::new(&cfg.lifetimes, installed_at_secs),
            ip_id: 0,
            spi: cfg.spi,
            esn: cfg.esn,
            df: cfg.df,
            template: HeaderTemplate::new(cfg.spi, &cfg.tunnel, cfg.nat_t),
            transform,
        })
    }

    /// SPI.
    #[must_use]
    pub fn spi(&self) -> u32 {
        self.spi
    }
    /// Last sequence number sent.
    #[must_use]
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Sets the last-sent sequence number (tests; a worker taking over
    /// an SA). With a shared counter it sets the shared counter too (and
    /// drops this worker's reservation).
    pub fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
        self.seq_end = seq;
        if let Some(c) = &self.shared_seq {
            c.store(seq, std::sync::atomic::Ordering::Release);
        }
    }

    /// Makes this copy of the SA number its packets from `counter`,
    /// shared with the copies on other workers ([`super::shared`]). Build
    /// one `OutboundSa` per worker from the same [`SaConfig`] and give
    /// each a clone of the same counter.
    #[must_use]
    pub fn with_shared_seq(mut self, counter: SharedSeq) -> Self {
        self.seq = 0;
        self.seq_end = 0;
        self.shared_seq = Some(counter);
        self
    }

    /// Leaves the outer IPv4 header checksum to the NIC: for the copy of
    /// the SA on a worker whose outside port has the transmit offload
    /// enabled (the packet buffer must agree too:
    /// [`netbuf::ChecksumOffload::offload_tx_ipv4_checksum`]). No effect
    /// on an IPv6 outer header.
    #[must_use]
    pub fn with_tx_checksum_offload(mut self, on: bool) -> Self {
        self.template.tx_checksum_offload = on;
        self
    }

    /// The shared counter, if any.
    #[must_use]
    pub fn shared_seq(&self) -> Option<&SharedSeq> {
        self.shared_seq.as_ref()
    }

    /// Announces a burst: `epoch` identifies it (the worker increments it
    /// per burst) and `expected` is how many more packets of the burst may
    /// use this SA. With a shared counter, numbers left over from an
    /// earlier burst are abandoned and the next reservation asks for
    /// `expected` numbers, so one compare-and-swap serves the burst.
    /// Without one this only records the hint.
    #[inline]
    pub fn begin_burst(&mut self, epoch: u64, expected: u32) {
        if epoch != self.seq_epoch {
            self.seq_epoch = epoch;
            self.seq_end = self.seq;
        }
        self.seq_hint = expected.max(1);
    }

    /// The sequence number of the next packet (RFC 4303 § 3.3.3: never
    /// cycles; exhaustion means the SA must be rekeyed).
    #[inline]
    pub(crate) fn next_seq(&mut self) -> Result<u64, DropReason> {
        let limit = if self.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        let Some(counter) = &self.shared_seq else {
            let next = self.seq.checked_add(1).ok_or(DropReason::SeqExhausted)?;
            if next > limit {
                return Err(DropReason::SeqExhausted);
            }
            self.seq = next;
            return Ok(next);
        };
        if self.seq < self.seq_end {
            self.seq += 1;
            return Ok(self.seq);
        }
        let (first, last) =
            reserve(counter, u64::from(self.seq_hint), limit).ok_or(DropReason::SeqExhausted)?;
        // Later packets of this burst use the rest; the hint is spent.
        self.seq_hint = 1;
        self.seq = first;
        self.seq_end = last;
        Ok(first)
    }
    /// Counters flushed so far.
    #[must_use]
    pub fn counters(&self) -> SaCounters {
        self.life.counters
    }
    /// The outer DF policy; [`DfPolicy::Clear`] is the tunnel's "clear DF"
    /// option (spec § 14.2), which also lets the worker fragment inner
    /// IPv4 packets that have DF set ([`super::frag`]).
    #[must_use]
    pub fn df_policy(&self) -> DfPolicy {
        self.df
    }
    /// Bytes of outer header + ESP header + IV that encap prepends.
    #[must_use]
    pub fn header_overhead(&self) -> usize {
        usize::from(self.template.len) + self.transform.iv_len()
    }
    /// Time-based lifetime check; call between bursts.
    pub fn handle_timeout(&mut self, now_secs: u64) {
        self.life.handle_timeout(now_secs);
    }
    /// Next lifetime event for the control plane, each reported once.
    pub fn poll_lifetime(&mut self) -> Option<LifetimeEvent> {
        self.life.poll()
    }
    /// Whether the soft lifetime was reached (rekey wanted).
    #[must_use]
    pub fn soft_expired(&self) -> bool {
        self.life.soft_reached
    }
    /// Whether the hard lifetime was reached (all packets dropped).
    #[must_use]
    pub fn hard_expired(&self) -> bool {
        self.life.hard_reached
    }
}

impl InboundSa {
    /// Builds the runtime SA from the cold record (cold path), with the
    /// `ring` crypto backend; see [`Self::new_with`].
    ///
    /// # Errors
    /// [`SaError`] for an invalid record or key.
    pub fn new(cfg: &SaConfig, installed_at_secs: u64) -> Result<Self, SaError> {
        Self::new_with(cfg, installed_at_secs, CryptoBackend::Ring)
    }

    /// The SA's crypto runs on intel-ipsec-mb's job API: its packets are
    /// best checked with [`super::decap::decap_begin`] and opened a burst
    /// at a time ([`crate::crypto::run_cbc_batch`]).
    #[inline]
    #[must_use]
    pub fn uses_job_api(&self) -> bool {
        self.transform.cbc_mb().is_some()
    }

    /// Builds the runtime SA from the cold record (cold path), its cipher
    /// on `backend` (the one the process chose at start).
    ///
    /// # Errors
    /// [`SaError`] for an invalid record or key.
    pub fn new_with(
        cfg: &SaConfig,
        installed_at_secs: u64,
        backend: CryptoBackend,
    ) -> Result<Self, SaError> {
        let transform = cfg.validate(Direction::Inbound, backend)?;
        Ok(Self {
            life: LifetimeState::new(&cfg.lifetimes, installed_at_secs),
            spi: cfg.spi,
            esn: cfg.esn,
            nat_t: cfg.nat_t.is_some(),
            outer_v6: matches!(cfg.tunnel, TunnelEndpoints::V6 { .. }),
            shared_replay: None,
            replay: ReplayWindow::new(cfg.replay_window, cfg.esn),
            transform,
        })
    }

    /// SPI.
    #[must_use]
    pub fn spi(&self) -> u32 {
        self.spi
    }
    /// Whether the SA expects UDP-encapsulated ESP (NAT-T).
    #[must_use]
    pub fn nat_t(&self) -> bool {
        self.nat_t
    }
    /// Whether the outer header is IPv6.
    #[must_use]
    pub fn outer_v6(&self) -> bool {
        self.outer_v6
    }
    /// The anti-replay window.
    #[must_use]
    pub fn replay(&self) -> &ReplayWindow {
        &self.replay
    }
    /// Makes this copy of the SA use `window`, shared with the copies on
    /// other workers ([`super::shared`]): build one `InboundSa` per worker
    /// from the same [`SaConfig`] and give each a clone of the same
    /// window.
    #[must_use]
    pub fn with_shared_replay(mut self, window: Arc<SharedReplayWindow>) -> Self {
        self.shared_replay = Some(window);
        self
    }

    /// The shared window, if any.
    #[must_use]
    pub fn shared_replay(&self) -> Option<&Arc<SharedReplayWindow>> {
        self.shared_replay.as_ref()
    }

    /// Highest sequence number authenticated so far (from the shared
    /// window if there is one).
    #[must_use]
    pub fn replay_top(&self) -> u64 {
        self.shared_replay
            .as_ref()
            .map_or_else(|| self.replay.top(), |w| w.top())
    }

    /// Restarts the replay window as "everything up to `top` seen" (see
    /// [`ReplayWindow::resume`]), e.g. when an SA's inbound state moves to
    /// another worker.
    pub fn resume_replay(&mut self, top: u64) {
        self.replay = ReplayWindow::resume(self.replay.size(), self.esn, top);
    }
    /// Counters flushed so far.
    #[must_use]
    pub fn counters(&self) -> SaCounters {
        self.life.counters
    }
    /// Time-based lifetime check; call between bursts.
    pub fn handle_timeout(&mut self, now_secs: u64) {
        self.life.handle_timeout(now_secs);
    }
    /// Next lifetime event for the control plane, each reported once.
    pub fn poll_lifetime(&mut self) -> Option<LifetimeEvent> {
        self.life.poll()
    }
    /// Whether the soft lifetime was reached.
    #[must_use]
    pub fn soft_expired(&self) -> bool {
        self.life.soft_reached
    }
    /// Whether the hard lifetime was reached.
    #[must_use]
    pub fn hard_expired(&self) -> bool {
        self.life.hard_reached
    }
}
