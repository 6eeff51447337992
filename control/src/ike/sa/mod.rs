//! One IKE SA and its Child SA, sans-IO (conventions 4–6).
//!
//! # Call order
//!
//! ```text
//! let mut sa = IkeSa::initiate(cfg, now, &mut rng)?;     // or IkeSa::accept(...) on an IKE_SA_INIT
//! loop {
//!     while let Some(t) = sa.poll_transmit() { socket(t.local).send_to(&t.payload, t.remote) }
//!     while let Some(e) = sa.poll_event()    { install / delete SAs, log }
//!     wait for a datagram or sa.poll_timeout()
//!     sa.handle_datagram(now, &mut rng, dgram)  |  sa.handle_timeout(now, &mut rng)
//! }
//! ```
//!
//! Nothing here reads the clock, touches a socket or draws randomness
//! except through the [`Rng`] passed in. Datagrams on port 4500 carry the
//! 4-byte non-ESP marker (RFC 3948 § 2.2); [`IkeSa`] strips and adds it.
//!
//! The handshake is a typestate: [`ExpectSaInitResponse`] →
//! [`ExpectAuthResponse`] → [`Established`] for the initiator,
//! [`ExpectAuthRequest`] → [`Established`] for the responder; each holds
//! only the keys and nonces valid there. A Child SA's keys are built
//! only with the proof tokens [`AuthVerified`] and [`TsNarrowed`].
//!
//! # Layout
//!
//! This file holds the [`IkeSa`] type, its states, what it reports
//! ([`Event`], [`DownReason`], [`Transmit`]), the proof tokens, and the
//! two entry points that dispatch to the rest: [`IkeSa::handle_datagram`]
//! (request or response, by exchange and pending kind) and
//! [`IkeSa::handle_timeout`] (every timer, in priority order). The
//! exchanges live beside it, each adding `impl IkeSa` blocks:
//!
//! | file | owns |
//! |---|---|
//! | `config` | [`IkeConfig`], [`Retransmit`], the rekey-time formula |
//! | `handshake` | IKE_SA_INIT / IKE_AUTH typestate, [`IkeSa::initiate`], [`IkeSa::accept`], NAT detection |
//! | `auth` | PSK and certificate AUTH, CERTREQ and fragmentation notifies, SKF reassembly |
//! | `child` | [`ChildSa`] and its keys, traffic selector narrowing, the responder's Child SA negotiation |
//! | `child_rekey` | Child SA timers, rekey (both roles, collisions), deferred outbound, expiry |
//! | `ike_rekey` | IKE SA rekey (both roles, collisions), the spawned successor SA |
//! | `informational` | DELETE (IKE and ESP) both ways, [`IkeSa::close`], DPD idle time |
//! | `retransmit` | the request window, retransmission and giving up, message protection |

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::Rng;
use super::crypto::{IkeKeys, IkeSuite, SkKeys};
use super::wire::{ExchangeType, Message, Notify, NotifyType, Payload, TrafficSelector};

mod auth;
mod child;
mod child_rekey;
mod config;
mod handshake;
mod ike_rekey;
mod informational;
mod retransmit;

pub use child::{ChildSa, EspKeys};
pub use child_rekey::DEFERRED_OUTBOUND_MAX;
use child_rekey::{ChildRekey, ChildState};
pub use config::{IkeConfig, Retransmit};
pub use handshake::{
    CookieFn, ExpectAuthRequest, ExpectAuthResponse, ExpectSaInitResponse, Refused, nat_hash,
};
use ike_rekey::IkeRekey;
use retransmit::{Pending, PendingKind};

/// IKE port.
pub const IKE_PORT: u16 = 500;
/// NAT-T port (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;
/// NAT-T keepalive interval ([RFC 3948 § 4]: "The sender MUST use a
/// one-octet long payload with the value 0xFF"; § 2.3 of the same RFC
/// recommends 20 seconds as the default interval).
///
/// [RFC 3948 § 4]: https://www.rfc-editor.org/rfc/rfc3948#section-4
pub const NAT_KEEPALIVE: Duration = Duration::from_secs(20);
/// Packets after which a Child SA without extended sequence numbers is
/// rekeyed: the 32-bit sequence number must not cycle ([RFC 4303
/// § 3.3.3]); 2^32 − 2^28 leaves 268 million packets for the rekey to
/// complete. The dataplane counts and reports it (a soft lifetime
/// limit); [`IkeSa::expedite_child_rekey`] acts on it.
///
/// [RFC 4303 § 3.3.3]: https://www.rfc-editor.org/rfc/rfc4303#section-3.3.3
pub const SEQ_REKEY_PACKETS: u64 = (1 << 32) - (1 << 28);
const NONCE_LEN: usize = 32;

/// A datagram received on an IKE socket.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// Our address and port it arrived on.
    pub local: SocketAddr,
    /// Sender.
    pub remote: SocketAddr,
    /// UDP payload (with the non-ESP marker on port 4500).
    pub payload: &'a [u8],
}

/// A datagram to send.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Source address and port.
    pub local: SocketAddr,
    /// Destination.
    pub remote: SocketAddr,
    /// UDP payload (with the non-ESP marker on port 4500).
    pub payload: Vec<u8>,
}

/// Why an IKE SA went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// A request went unanswered after every retransmission.
    Timeout,
    /// DPD: the peer did not answer liveness checks.
    DpdTimeout,
    /// The peer's AUTH did not verify (PSK mismatch), or it refused ours.
    AuthenticationFailed,
    /// No common proposal.
    NoProposalChosen,
    /// The peer deleted the IKE SA.
    DeletedByPeer,
    /// We deleted it ([`IkeSa::close`]).
    Closed,
    /// The peer answered with another error notify.
    PeerError(NotifyType),
    /// The responder's half-open SA timed out.
    HalfOpenTimeout,
    /// The IKE SA was replaced by a rekeyed one.
    Rekeyed,
    /// The peer set up a new IKE SA with INITIAL_CONTACT: it lost this
    /// one (RFC 7296 § 2.4).
    Replaced,
    /// The peer broke the protocol.
    Protocol,
    /// Its lifetime ended without a rekey (IKEv1: the responder's ISAKMP
    /// SA, which the initiator replaces by a new Main Mode).
    Expired,
}

/// Proof that the peer's AUTH payload verified (convention 6).
#[derive(Debug)]
pub struct AuthVerified(());

/// Proof that the Child SA's traffic selectors were narrowed to the
/// configuration (convention 6).
#[derive(Debug)]
pub struct TsNarrowed(());

/// What an [`IkeSa`] reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The IKE SA is established (phase 1 up).
    IkeSaUp {
        /// Initiator SPI.
        spi_i: u64,
        /// Responder SPI.
        spi_r: u64,
        /// Negotiated suite.
        suite: IkeSuite,
        /// NAT detected (ESP in UDP 4500).
        nat_detected: bool,
    },
    /// A Child SA is ready: install it (both directions, or only the
    /// inbound SA when [`ChildSa::outbound_deferred`]).
    ChildSaUp(Box<ChildSa>),
    /// The deferred outbound SA of a Child SA (see
    /// [`ChildSa::outbound_deferred`]) may carry traffic now: the SA it
    /// replaces is being deleted (its [`Event::ChildSaDown`] follows).
    ChildSaOutbound {
        /// Our (inbound) SPI of the Child SA.
        inbound_spi: u32,
        /// The peer's (outbound) SPI: the one to send with now.
        outbound_spi: u32,
    },
    /// A new Child SA (not a rekey) was not established: the first one in
    /// IKE_AUTH, in either role, or one that [`IkeSa::create_child`]
    /// started. The IKE SA stays up without it; the owner retries
    /// ([`super::endpoint`]).
    ChildSaFailed {
        /// The error (TS_UNACCEPTABLE, NO_PROPOSAL_CHOSEN, …).
        reason: NotifyType,
        /// The peer refused ours (`true`), or we refused the peer's.
        by_peer: bool,
    },
    /// A Child SA is gone: remove it.
    ChildSaDown {
        /// Our (inbound) SPI.
        inbound_spi: u32,
        /// The peer's (outbound) SPI.
        outbound_spi: u32,
    },
    /// The IKE SA is gone; its Child SAs too (each reported by
    /// [`Event::ChildSaDown`] first).
    IkeSaDown {
        /// Why.
        reason: DownReason,
    },
    /// The IKE SA was rekeyed (RFC 7296 § 2.18): the Child SAs now
    /// belong to the new one; the old one reports
    /// [`DownReason::Rekeyed`] when deleted.
    IkeSaRekeyed {
        /// New initiator SPI.
        spi_i: u64,
        /// New responder SPI.
        spi_r: u64,
    },
    /// A tunnel activity log line (spec § 20.4 texts where one exists).
    Log(String),
}

/// Phase state for `ike_phase1_state` / `ike_phase2_state` (spec § 20.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseState {
    /// Up.
    Established,
    /// Being rekeyed.
    Rekeying,
    /// Being negotiated.
    Negotiating,
    /// Down.
    Down,
}

/// Both roles, after IKE_AUTH.
#[derive(Debug)]
pub struct Established {
    keys: SaKeys,
    children: Vec<ChildState>,
    rekey_ike_at: Instant,
    expire_ike_at: Instant,
    /// Last time anything authenticated arrived from the peer.
    last_heard: Instant,
    /// A CREATE_CHILD_SA we sent, awaiting its answer.
    rekeying: Option<ChildRekey>,
    /// An IKE SA rekey we sent, awaiting its answer.
    ike_rekey: Option<IkeRekey>,
}

struct SaKeys {
    suite: IkeSuite,
    sk_d: Zeroizing<Vec<u8>>,
    sk_pi: Zeroizing<Vec<u8>>,
    sk_pr: Zeroizing<Vec<u8>>,
    out: SkKeys,
    inn: SkKeys,
}

impl fmt::Debug for SaKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaKeys")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl SaKeys {
    fn new(suite: IkeSuite, k: IkeKeys, initiator: bool) -> Self {
        let i = SkKeys::new(suite.encr, suite.integ, k.sk_ei, k.sk_ai);
        let r = SkKeys::new(suite.encr, suite.integ, k.sk_er, k.sk_ar);
        let (out, inn) = if initiator { (i, r) } else { (r, i) };
        Self {
            suite,
            sk_d: k.sk_d,
            sk_pi: k.sk_pi,
            sk_pr: k.sk_pr,
            out,
            inn,
        }
    }
}

#[derive(Debug)]
enum State {
    InitSent(ExpectSaInitResponse),
    AuthSent(ExpectAuthResponse),
    AwaitAuth(ExpectAuthRequest),
    Established(Box<Established>),
    Closed,
}

/// One IKE SA (see the module docs for the call order).
#[derive(Debug)]
pub struct IkeSa {
    cfg: IkeConfig,
    initiator: bool,
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
    nat_detected: bool,
    /// We are behind a NAT (the peer saw another address than ours): the
    /// next NAT-T keepalive is due then (RFC 3948 § 4).
    keepalive_at: Option<Instant>,
    state: State,
    next_request: u32,
    expected_request: u32,
    pending: Option<Pending>,
    last_response: Option<(u32, Vec<u8>)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    created: Instant,
    /// A rekeyed Child SA (inbound, outbound SPI) whose DELETE waits for
    /// the request window.
    queued_delete: VecDeque<(u32, u32)>,
    /// The rekeyed Child SA whose DELETE is in flight: reported down when
    /// the peer answers (until then the peer may still send with it).
    child_deleting: Option<(u32, u32)>,
    /// New IKE SAs made by rekeying this one, for the owner to adopt.
    spawned: Vec<Self>,
    /// This SA was rekeyed: its Child SAs moved to the new one.
    rekeyed_away: bool,
    /// The peer's IKE_AUTH carried INITIAL_CONTACT.
    initial_contact: bool,
    /// Created by rekeying another IKE SA.
    from_rekey: bool,
    /// Both sides announced IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383).
    peer_frag: bool,
    /// The peer announced SIGNATURE_HASH_ALGORITHMS with SHA2-256 (RFC 7427).
    peer_rfc7427: bool,
    /// SKF fragments being collected.
    reassembly: super::frag::Reassembly,
    /// A message just reassembled, for `decrypt`.
    reassembled: Option<Vec<Payload>>,
}

fn random_u64(rng: &mut dyn Rng) -> u64 {
    loop {
        let mut b = [0u8; 8];
        rng.fill(&mut b);
        let v = u64::from_be_bytes(b);
        if v != 0 {
            return v;
        }
    }
}

fn random_spi(rng: &mut dyn Rng) -> u32 {
    loop {
        let mut b = [0u8; 4];
        rng.fill(&mut b);
        let v = u32::from_be_bytes(b);
        if v > 255 {
            return v;
        }
    }
}

fn random_bytes(rng: &mut dyn Rng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill(&mut v);
    v
}

fn nonce_of(p: &[Payload]) -> Option<&Vec<u8>> {
    p.iter().find_map(|p| match p {
        Payload::Nonce(n) => Some(n),
        _ => None,
    })
}

fn ke_of(p: &[Payload]) -> Option<(u16, &Vec<u8>)> {
    p.iter().find_map(|p| match p {
        Payload::Ke { group, data } => Some((*group, data)),
        _ => None,
    })
}

fn sa_of(p: &[Payload]) -> Option<&Vec<super::wire::Proposal>> {
    p.iter().find_map(|p| match p {
        Payload::Sa(v) => Some(v),
        _ => None,
    })
}

fn tsi_of(p: &[Payload]) -> Option<&Vec<TrafficSelector>> {
    p.iter().find_map(|p| match p {
        Payload::TsI(v) => Some(v),
        _ => None,
    })
}

fn tsr_of(p: &[Payload]) -> Option<&Vec<TrafficSelector>> {
    p.iter().find_map(|p| match p {
        Payload::TsR(v) => Some(v),
        _ => None,
    })
}

/// The group an INVALID_KE_PAYLOAD notify asks for.
fn invalid_ke_group(p: &[Payload]) -> Option<u16> {
    p.iter().find_map(|x| match x {
        Payload::Notify(n) if n.kind == NotifyType::InvalidKePayload => {
            n.data.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]))
        }
        _ => None,
    })
}

fn spi_u32(v: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(v).ok().map(u32::from_be_bytes)
}

/// Strips the non-ESP marker on the NAT-T port; `None` for ESP, a NAT-T
/// keepalive or a runt.
fn strip_marker(d: Datagram<'_>) -> Option<&[u8]> {
    if d.local.port() == NAT_T_PORT {
        match d.payload {
            [0, 0, 0, 0, rest @ ..] => Some(rest),
            _ => None,
        }
    } else {
        Some(d.payload)
    }
}

fn add_marker(local: SocketAddr, bytes: Vec<u8>) -> Vec<u8> {
    if local.port() == NAT_T_PORT {
        let mut v = Vec::with_capacity(bytes.len() + 4);
        v.extend_from_slice(&[0, 0, 0, 0]);
        v.extend_from_slice(&bytes);
        v
    } else {
        bytes
    }
}

impl IkeSa {
    fn blank(cfg: IkeConfig, initiator: bool, now: Instant, state: State) -> Self {
        let local = SocketAddr::new(cfg.local, IKE_PORT);
        let remote = SocketAddr::new(cfg.remote, IKE_PORT);
        Self {
            cfg,
            initiator,
            spi_i: 0,
            spi_r: 0,
            local,
            remote,
            nat_detected: false,
            keepalive_at: None,
            state,
            next_request: 0,
            expected_request: 0,
            pending: None,
            last_response: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            created: now,
            queued_delete: VecDeque::new(),
            child_deleting: None,
            spawned: Vec::new(),
            rekeyed_away: false,
            initial_contact: false,
            from_rekey: false,
            peer_frag: false,
            peer_rfc7427: false,
            reassembly: super::frag::Reassembly::default(),
            reassembled: None,
        }
    }

    /// Initiator SPI.
    #[must_use]
    pub fn spi_i(&self) -> u64 {
        self.spi_i
    }

    /// Responder SPI (0 before the IKE_SA_INIT response).
    #[must_use]
    pub fn spi_r(&self) -> u64 {
        self.spi_r
    }

    /// Whether we are the original initiator.
    #[must_use]
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// The peer's current address and port.
    #[must_use]
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &IkeConfig {
        &self.cfg
    }

    /// `ike_phase1_state` (spec § 20.3).
    #[must_use]
    pub fn phase1_state(&self) -> PhaseState {
        match &self.state {
            State::InitSent(_) | State::AuthSent(_) | State::AwaitAuth(_) => {
                PhaseState::Negotiating
            }
            State::Established(_) => PhaseState::Established,
            State::Closed => PhaseState::Down,
        }
    }

    /// `ike_phase2_state` (spec § 20.3).
    #[must_use]
    pub fn phase2_state(&self) -> PhaseState {
        match &self.state {
            State::Established(e)
                if e.rekeying.as_ref().is_some_and(|r| r.old_inbound.is_some()) =>
            {
                PhaseState::Rekeying
            }
            // A new Child SA being created (IkeSa::create_child).
            State::Established(e) if e.rekeying.is_some() && e.children.is_empty() => {
                PhaseState::Negotiating
            }
            State::Established(e) if !e.children.is_empty() => PhaseState::Established,
            State::Closed => PhaseState::Down,
            State::Established(_) => PhaseState::Down,
            _ => PhaseState::Negotiating,
        }
    }

    /// The negotiated suite and when this IKE SA is next rekeyed, once it
    /// is established (for `show tunnels`).
    #[must_use]
    pub fn established_suite(&self) -> Option<(IkeSuite, Instant)> {
        match &self.state {
            State::Established(e) => Some((e.keys.suite, e.rekey_ike_at)),
            _ => None,
        }
    }

    /// When the Child SA with our (inbound) SPI `inbound_spi` is next
    /// rekeyed, if this IKE SA holds it.
    #[must_use]
    pub fn child_rekey_at(&self, inbound_spi: u32) -> Option<Instant> {
        match &self.state {
            State::Established(e) => e
                .children
                .iter()
                .find(|c| c.inbound_spi == inbound_spi)
                .map(|c| c.rekey_at),
            _ => None,
        }
    }

    /// Whether the peer's IKE_AUTH carried INITIAL_CONTACT: other IKE SAs
    /// with this peer are stale.
    #[must_use]
    pub fn initial_contact(&self) -> bool {
        self.initial_contact
    }

    /// Drops the SA without telling the peer (it lost its state), reporting
    /// its Child SAs and itself down.
    pub fn discard(&mut self, reason: DownReason) {
        self.pending = None;
        self.go_down(reason);
    }

    /// Whether the SA is gone (drop it after draining events).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// IKE SAs created by rekeying this one: the owner must drive them
    /// from now on.
    pub fn take_spawned(&mut self) -> Vec<Self> {
        std::mem::take(&mut self.spawned)
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = self.pending.as_ref().map(|p| p.next);
        let mut min = |x: Instant| t = Some(t.map_or(x, |y| y.min(x)));
        match &self.state {
            State::AwaitAuth(_) => min(self.created + self.cfg.half_open_timeout),
            State::Established(e) => {
                min(e.expire_ike_at);
                if let Some(k) = self.keepalive_at {
                    min(k);
                }
                // Rekeys and DPD wait for the request slot (window 1): a
                // due timer that cannot act now is not reported, or the
                // caller would spin on it.
                if self.pending.is_none() {
                    if !self.rekeyed_away {
                        min(e.rekey_ike_at);
                    }
                    min(e.last_heard + self.dpd_idle());
                    for c in &e.children {
                        min(c.rekey_at);
                    }
                }
                for c in &e.children {
                    min(c.expire_at);
                    if let Some((_, at)) = c.deferred {
                        min(at);
                    }
                }
            }
            _ => {}
        }
        t
    }

    fn log(&mut self, s: impl Into<String>) {
        self.events.push_back(Event::Log(s.into()));
    }

    fn keys(&self) -> Option<&SaKeys> {
        match &self.state {
            State::AuthSent(s) => Some(&s.keys),
            State::AwaitAuth(s) => Some(&s.keys),
            State::Established(e) => Some(&e.keys),
            _ => None,
        }
    }

    fn go_down(&mut self, reason: DownReason) {
        let deleting: Vec<(u32, u32)> = self
            .child_deleting
            .take()
            .into_iter()
            .chain(self.queued_delete.drain(..))
            .collect();
        for (inbound_spi, outbound_spi) in deleting {
            self.events.push_back(Event::ChildSaDown {
                inbound_spi,
                outbound_spi,
            });
        }
        if let State::Established(e) = &self.state {
            let downs: Vec<Event> = e
                .children
                .iter()
                .map(|c| Event::ChildSaDown {
                    inbound_spi: c.inbound_spi,
                    outbound_spi: c.outbound_spi,
                })
                .collect();
            self.events.extend(downs);
        }
        if !matches!(self.state, State::Closed) {
            self.state = State::Closed;
            self.events.push_back(Event::IkeSaDown { reason });
        }
        // A DELETE we queued just before stays queued; nothing more is
        // retransmitted.
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.kind != PendingKind::Delete)
        {
            self.pending = None;
        }
    }

    /// Timers: retransmission, half-open timeout, DPD, rekey, expiry.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut dyn Rng) {
        self.retransmit_due(now);
        match &self.state {
            State::AwaitAuth(_) if now >= self.created + self.cfg.half_open_timeout => {
                self.log(format!(
                    "AWS tunnel timeout: deleting unestablished phase 1 IKE_SA with cgw: {}",
                    self.remote.ip()
                ));
                self.go_down(DownReason::HalfOpenTimeout);
            }
            State::Established(e) => {
                if now >= e.expire_ike_at {
                    self.log("IKE_SA lifetime expired");
                    self.go_down(DownReason::Timeout);
                    return;
                }
                // NAT-T keepalive (RFC 3948 § 4): one 0xFF octet to the
                // peer's NAT-T port, no non-ESP marker. Sent on the
                // interval regardless of ESP traffic (which the control
                // plane does not see): harmless, and it keeps the mapping.
                if let Some(k) = self.keepalive_at
                    && now >= k
                {
                    self.keepalive_at = Some(now + self.cfg.nat_keepalive);
                    self.transmits.push_back(Transmit {
                        local: self.local,
                        remote: self.remote,
                        payload: vec![0xFF],
                    });
                }
                let child_due = e
                    .children
                    .iter()
                    .find(|c| now >= c.rekey_at)
                    .map(|c| c.inbound_spi);
                let overdue: Vec<u32> = e
                    .children
                    .iter()
                    .filter_map(|c| c.deferred.filter(|(_, at)| now >= *at).map(|(old, _)| old))
                    .collect();
                let idle = now >= e.last_heard + self.dpd_idle();
                let ike_due = now >= e.rekey_ike_at && !self.rekeyed_away;
                if self.pending.is_none() {
                    if ike_due {
                        self.rekey_ike(now, rng);
                    } else if let Some(spi) = child_due {
                        self.rekey_child(now, rng, spi);
                    } else if idle {
                        // DPD (RFC 7296 § 2.4): an empty INFORMATIONAL.
                        self.request(now, rng, ExchangeType::Informational, &[], PendingKind::Dpd);
                    }
                }
                for old in overdue {
                    self.log(format!(
                        "CHILD_SA with SPI {old:08x} not deleted by the peer within {} s of its rekey: sending with the new SA",
                        DEFERRED_OUTBOUND_MAX.as_secs()
                    ));
                    self.release_deferred(old);
                }
                self.expire_children(now);
            }
            _ => {}
        }
        self.flush_queued(now, rng);
    }

    /// Processes one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, rng: &mut dyn Rng, dgram: Datagram<'_>) {
        let Some(raw) = strip_marker(dgram) else {
            return;
        };
        let Ok(msg) = Message::parse(raw) else {
            return;
        };
        let h = msg.header;
        // A retransmitted IKE_SA_INIT request still has SPIr = 0.
        let init_retx = h.exchange == ExchangeType::IkeSaInit && !h.is_response() && h.spi_r == 0;
        if h.spi_i != self.spi_i || (self.spi_r != 0 && h.spi_r != self.spi_r && !init_retx) {
            return;
        }
        // The peer's I flag must be the opposite of ours.
        if h.is_initiator() == self.initiator {
            return;
        }
        if !self.reassemble(now, raw, &msg) {
            return;
        }
        if h.is_response() {
            let Some(p) = &self.pending else { return };
            if p.id != h.message_id {
                return;
            }
            self.handle_response(now, rng, dgram, raw, msg);
        } else {
            if let Some((id, bytes)) = &self.last_response
                && *id == h.message_id
                && h.message_id.wrapping_add(1) == self.expected_request
            {
                // A retransmitted request: resend the cached response.
                self.transmits
                    .extend(auth::datagrams(self.local, self.remote, bytes));
                return;
            }
            if h.message_id != self.expected_request {
                return;
            }
            self.handle_request(now, rng, dgram, raw, msg);
        }
        self.flush_queued(now, rng);
    }

    fn handle_response(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        dgram: Datagram<'_>,
        raw: &[u8],
        msg: Message,
    ) {
        if msg.header.exchange == ExchangeType::IkeSaInit {
            self.on_sa_init_response(now, rng, dgram, raw, &msg);
            return;
        }
        let Some(payloads) = self.decrypt(raw, &msg) else {
            return;
        };
        let kind = self.pending.as_ref().map(|p| p.kind);
        self.pending = None;
        if let State::Established(e) = &mut self.state {
            e.last_heard = now;
        }
        match kind {
            Some(PendingKind::Auth) => self.on_auth_response(now, rng, &payloads),
            Some(PendingKind::CreateChild) => {
                self.on_create_child_response(now, rng, &msg, &payloads);
            }
            Some(PendingKind::RekeyIke) => self.on_ike_rekey_response(now, rng, &msg, &payloads),
            Some(PendingKind::Delete) if self.rekeyed_away => self.go_down(DownReason::Rekeyed),
            Some(PendingKind::Delete) => self.child_deleted(),
            _ => {}
        }
    }

    fn fail(&mut self, reason: DownReason) {
        self.pending = None;
        self.go_down(reason);
    }

    fn handle_request(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        dgram: Datagram<'_>,
        raw: &[u8],
        msg: Message,
    ) {
        let Some(payloads) = self.decrypt(raw, &msg) else {
            return;
        };
        let id = msg.header.message_id;
        self.expected_request = id.wrapping_add(1);
        // Answer where the request came from (RFC 7296 § 2.11, § 2.23).
        self.local = dgram.local;
        self.remote = dgram.remote;
        if let State::Established(e) = &mut self.state {
            e.last_heard = now;
        }
        match (msg.header.exchange, &self.state) {
            (ExchangeType::IkeAuth, State::AwaitAuth(_)) => {
                self.on_auth_request(now, rng, id, &payloads);
            }
            (ExchangeType::Informational, State::Established(_)) => {
                self.on_informational(rng, id, &payloads);
            }
            (ExchangeType::CreateChildSa, State::Established(_)) => {
                self.on_create_child_request(now, rng, id, &payloads);
            }
            _ => {
                self.respond(
                    rng,
                    msg.header.exchange,
                    id,
                    &[Payload::Notify(Notify::new(
                        NotifyType::InvalidSyntax,
                        Vec::new(),
                    ))],
                );
            }
        }
    }
}
