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

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use zeroize::Zeroizing;

use super::Rng;
use super::crypto::{
    IkeKeys, IkeSuite, SkKeys, child_keymat, ct_eq, derive_ike_keys, psk_auth, skeyseed,
    skeyseed_rekey,
};
use super::dh::DhPrivate;
use super::proposal::{
    AlgorithmSet, EspSuite, accept_esp_response, accept_ike_response, esp_response, ike_response,
    select_esp, select_ike,
};
use super::wire::{
    AuthMethod, Delete, ExchangeType, Header, Identification, Message, Notify, NotifyType, Payload,
    ProtocolId, TrafficSelector, emit_chain, find_notify, first_error_notify, flags, parse_chain,
};
use crate::config::{DpdTimeoutAction, StartupAction, TunnelOptions};

#[path = "sa_auth.rs"]
mod auth;

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

/// Retransmission policy (RFC 7296 § 2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// First timeout.
    pub base: Duration,
    /// Retransmissions before giving up.
    pub tries: u32,
}

impl Default for Retransmit {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            tries: 5,
        }
    }
}

/// A tunnel's IKE configuration.
#[derive(Debug, Clone)]
pub struct IkeConfig {
    /// Our outside address.
    pub local: IpAddr,
    /// The customer gateway's address.
    pub remote: IpAddr,
    /// Our identity (default: the local address).
    pub local_id: Identification,
    /// The identity the peer must present (None: any).
    pub remote_id: Option<Identification>,
    /// Pre-shared key.
    pub psk: Zeroizing<Vec<u8>>,
    /// Phase 1 algorithms.
    pub phase1: AlgorithmSet,
    /// Phase 2 algorithms.
    pub phase2: AlgorithmSet,
    /// Our side's traffic selectors (route-based: 0.0.0.0/0).
    pub local_ts: Vec<IpNet>,
    /// The peer's side's traffic selectors.
    pub remote_ts: Vec<IpNet>,
    /// IKE SA lifetime.
    pub phase1_lifetime: Duration,
    /// Child SA lifetime.
    pub phase2_lifetime: Duration,
    /// Rekey margin.
    pub rekey_margin: Duration,
    /// Rekey fuzz, percent of the margin.
    pub rekey_fuzz_percent: u32,
    /// ESP replay window, packets.
    pub replay_window: u32,
    /// DPD: idle time before a liveness check, and the time after the
    /// first unanswered check at which the peer is declared dead.
    pub dpd_timeout: Duration,
    /// DPD timeout action.
    pub dpd_action: DpdTimeoutAction,
    /// Startup action: `start` initiates and keeps retrying (spec § 6).
    pub startup_action: StartupAction,
    /// Retransmission policy.
    pub retransmit: Retransmit,
    /// Half-open IKE SA timeout (responder waiting for IKE_AUTH).
    pub half_open_timeout: Duration,
    /// NAT-T keepalive interval when we are the side behind a NAT.
    pub nat_keepalive: Duration,
    /// Certificate authentication (None: PSK). Shared: the key objects
    /// are not cloned per IKE SA.
    pub cert: Option<std::sync::Arc<super::cert::CertAuth>>,
    /// IKE fragmentation (RFC 7383).
    pub fragmentation: super::frag::FragmentConfig,
}

impl IkeConfig {
    /// A tunnel's IKE configuration. `local_ts` / `remote_ts` are the
    /// concentrator-side and customer-side networks (the connection's
    /// `remote_*_network_cidr` and `local_*_network_cidr`: the spec names
    /// them from the customer's point of view).
    #[must_use]
    pub fn from_tunnel(
        o: &TunnelOptions,
        local: IpAddr,
        remote: IpAddr,
        local_ts: Vec<IpNet>,
        remote_ts: Vec<IpNet>,
    ) -> Self {
        Self {
            local,
            remote,
            local_id: Identification::from_ip(local),
            remote_id: None,
            psk: Zeroizing::new(
                o.pre_shared_key
                    .as_ref()
                    .map(|p| p.dangerous_as_str().as_bytes().to_vec())
                    .unwrap_or_default(),
            ),
            phase1: AlgorithmSet::phase1(o),
            phase2: AlgorithmSet::phase2(o),
            local_ts,
            remote_ts,
            phase1_lifetime: Duration::from_secs(u64::from(o.phase1_lifetime_secs)),
            phase2_lifetime: Duration::from_secs(u64::from(o.phase2_lifetime_secs)),
            rekey_margin: Duration::from_secs(u64::from(o.rekey_margin_time_secs)),
            rekey_fuzz_percent: o.rekey_fuzz_percent,
            replay_window: o.replay_window_packets,
            dpd_timeout: Duration::from_secs(u64::from(o.dpd_timeout_secs)),
            dpd_action: o.dpd_timeout_action,
            startup_action: o.startup_action,
            retransmit: Retransmit::default(),
            half_open_timeout: Duration::from_secs(30),
            nat_keepalive: NAT_KEEPALIVE,
            cert: None,
            fragmentation: super::frag::FragmentConfig::default(),
        }
    }

    /// Rekey time for a lifetime: `lifetime − margin − random(0 ..=
    /// margin × fuzz / 100)` (spec § 3.7).
    fn rekey_after(&self, lifetime: Duration, rng: &mut dyn Rng) -> Duration {
        let margin = self.rekey_margin.as_millis();
        let window = margin * u128::from(self.rekey_fuzz_percent.min(100)) / 100;
        let mut b = [0u8; 8];
        rng.fill(&mut b);
        let fuzz = if window == 0 {
            0
        } else {
            u128::from(u64::from_be_bytes(b)) % (window + 1)
        };
        let ms = lifetime.as_millis().saturating_sub(margin + fuzz);
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

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
}

/// Proof that the peer's AUTH payload verified (convention 6).
#[derive(Debug)]
pub struct AuthVerified(());

/// Proof that the Child SA's traffic selectors were narrowed to the
/// configuration (convention 6).
#[derive(Debug)]
pub struct TsNarrowed(());

/// One direction's ESP keys.
pub struct EspKeys {
    /// SPI.
    pub spi: u32,
    /// Encryption key (GCM: key ‖ 4-byte salt).
    pub enc_key: Zeroizing<Vec<u8>>,
    /// Integrity key (empty for GCM).
    pub auth_key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for EspKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EspKeys")
            .field("spi", &format_args!("{:08x}", self.spi))
            .finish_non_exhaustive()
    }
}

/// A negotiated Child SA, ready to install.
#[derive(Debug)]
pub struct ChildSa {
    /// Algorithms.
    pub suite: EspSuite,
    /// Peer → us.
    pub inbound: EspKeys,
    /// Us → peer.
    pub outbound: EspKeys,
    /// Our side's selectors.
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's side's selectors.
    pub remote_ts: Vec<TrafficSelector>,
    /// Our ESP endpoint (port meaningful with NAT-T).
    pub local: SocketAddr,
    /// The peer's ESP endpoint.
    pub remote: SocketAddr,
    /// UDP encapsulation (NAT detected).
    pub nat_t: bool,
    /// Replay window.
    pub replay_window: u32,
    /// Hard lifetime.
    pub lifetime: Duration,
    /// Whether we initiated the exchange that created it.
    pub initiator: bool,
    /// Install only the inbound SA now: we answered the peer's rekey of
    /// another Child SA, and the peer installs its inbound SA only when our
    /// answer reaches it. The outbound SA follows with
    /// [`Event::ChildSaOutbound`] once the peer deletes the SA this one
    /// replaces (RFC 7296 § 2.8).
    pub outbound_deferred: bool,
}

impl ChildSa {
    #[allow(
        clippy::too_many_arguments,
        reason = "the two proof tokens are extra by design"
    )]
    fn new(
        suite: EspSuite,
        keymat: &[u8],
        our_spi: u32,
        peer_spi: u32,
        we_initiated: bool,
        ts: (Vec<TrafficSelector>, Vec<TrafficSelector>),
        ctx: &ChildCtx,
        _auth: &AuthVerified,
        _narrowed: TsNarrowed,
    ) -> Self {
        let e = suite.encr.keymat_len();
        let a = suite.integ.map_or(0, super::crypto::Integ::key_len);
        let half = |o: usize| EspKeysRaw {
            enc: Zeroizing::new(keymat[o..o + e].to_vec()),
            auth: Zeroizing::new(keymat[o + e..o + e + a].to_vec()),
        };
        let (i2r, r2i) = (half(0), half(e + a));
        let (inb, outb) = if we_initiated { (r2i, i2r) } else { (i2r, r2i) };
        Self {
            suite,
            inbound: EspKeys {
                spi: our_spi,
                enc_key: inb.enc,
                auth_key: inb.auth,
            },
            outbound: EspKeys {
                spi: peer_spi,
                enc_key: outb.enc,
                auth_key: outb.auth,
            },
            local_ts: ts.0,
            remote_ts: ts.1,
            local: ctx.local,
            remote: ctx.remote,
            nat_t: ctx.nat,
            replay_window: ctx.replay_window,
            lifetime: ctx.lifetime,
            initiator: we_initiated,
            outbound_deferred: false,
        }
    }

    /// The initiator → responder keys (strongSwan logs these as the
    /// "initiator" keys).
    #[must_use]
    pub fn initiator_keys(&self) -> &EspKeys {
        if self.initiator {
            &self.outbound
        } else {
            &self.inbound
        }
    }
    /// The responder → initiator keys.
    #[must_use]
    pub fn responder_keys(&self) -> &EspKeys {
        if self.initiator {
            &self.inbound
        } else {
            &self.outbound
        }
    }

    /// The dataplane SA record for one direction. `iv_seed` comes from
    /// the control plane's RNG (CBC IV generator, unused for GCM).
    ///
    /// # Errors
    /// `None` if the suite or addresses cannot be expressed (mixed
    /// address families).
    #[must_use]
    pub fn sa_config(
        &self,
        direction: dataplane::esp::sa::Direction,
        iv_seed: [u8; 16],
    ) -> Option<dataplane::esp::sa::SaConfig> {
        use dataplane::esp::sa::{
            DfPolicy, Direction, LifetimeLimits, Lifetimes, NatT, SaConfig, TunnelEndpoints,
        };
        let keys = match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        };
        let tunnel = match (self.local.ip(), self.remote.ip()) {
            (IpAddr::V4(local), IpAddr::V4(remote)) => TunnelEndpoints::V4 { local, remote },
            (IpAddr::V6(local), IpAddr::V6(remote)) => TunnelEndpoints::V6 { local, remote },
            _ => return None,
        };
        let secs = self.lifetime.as_secs();
        Some(SaConfig {
            spi: keys.spi,
            direction,
            algorithm: self.suite.to_dataplane()?,
            enc_key: keys.enc_key.clone(),
            auth_key: keys.auth_key.clone(),
            iv_seed: Zeroizing::new(iv_seed),
            tunnel,
            nat_t: self.nat_t.then_some(NatT {
                local_port: self.local.port(),
                remote_port: self.remote.port(),
            }),
            esn: self.suite.esn,
            replay_window: self.replay_window,
            lifetimes: Lifetimes {
                soft: LifetimeLimits::default(),
                hard: LifetimeLimits {
                    secs: Some(secs),
                    ..LifetimeLimits::default()
                },
            },
            df: DfPolicy::default(),
        })
    }
}

struct EspKeysRaw {
    enc: Zeroizing<Vec<u8>>,
    auth: Zeroizing<Vec<u8>>,
}

struct ChildCtx {
    local: SocketAddr,
    remote: SocketAddr,
    nat: bool,
    replay_window: u32,
    lifetime: Duration,
}

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

/// Initiator, after sending IKE_SA_INIT.
#[derive(Debug)]
pub struct ExpectSaInitResponse {
    dh: DhPrivate,
    ni: Vec<u8>,
    cookie: Option<Vec<u8>>,
    tried_groups: Vec<u16>,
}

/// Initiator, after sending IKE_AUTH.
#[derive(Debug)]
pub struct ExpectAuthResponse {
    keys: SaKeys,
    ni: Vec<u8>,
    nr: Vec<u8>,
    /// Our IKE_SA_INIT request and the peer's response, as sent.
    msg1: Vec<u8>,
    msg2: Vec<u8>,
    child_spi: u32,
}

/// Responder, after answering IKE_SA_INIT.
#[derive(Debug)]
pub struct ExpectAuthRequest {
    keys: SaKeys,
    ni: Vec<u8>,
    nr: Vec<u8>,
    msg1: Vec<u8>,
    msg2: Vec<u8>,
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

#[derive(Debug)]
struct IkeRekey {
    new_spi: u64,
    ni: Vec<u8>,
    dh: DhPrivate,
    /// The peer rekeyed this IKE SA at the same time (RFC 7296 § 2.8.2):
    /// the lowest nonce of its exchange and the SA it made, held back
    /// until ours completes and the nonces decide which one survives.
    collision: Option<(Vec<u8>, Box<IkeSa>)>,
}

#[derive(Debug)]
struct ChildState {
    inbound_spi: u32,
    outbound_spi: u32,
    rekey_at: Instant,
    expire_at: Instant,
    /// Its outbound SA waits (we answered the peer's rekey): until the
    /// SA with this inbound SPI is deleted, or [`DEFERRED_OUTBOUND_MAX`]
    /// has passed.
    deferred: Option<(u32, Instant)>,
}

#[derive(Debug)]
struct ChildRekey {
    old_inbound: u32,
    new_spi: u32,
    ni: Vec<u8>,
    dh: Option<DhPrivate>,
    /// The peer rekeyed the same Child SA at the same time (RFC 7296
    /// § 2.8.1): the lowest nonce of its exchange.
    collision: Option<Vec<u8>>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingKind {
    SaInit,
    Auth,
    Dpd,
    CreateChild,
    RekeyIke,
    Delete,
}

#[derive(Debug)]
struct Pending {
    id: u32,
    bytes: Vec<u8>,
    kind: PendingKind,
    tries: u32,
    next: Instant,
    first_sent: Instant,
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

/// NAT_DETECTION_*_IP data: `SHA1(SPIi | SPIr | IP | port)` (RFC 7296
/// § 2.23).
#[must_use]
pub fn nat_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(&spi_r.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(a) => ctx.update(&a.octets()),
        IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    ctx.finish().as_ref().to_vec()
}

fn net_range(n: &IpNet) -> TrafficSelector {
    TrafficSelector::range(n.network(), n.broadcast())
}

fn ip_u128(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(v) => (false, u128::from(u32::from(v))),
        IpAddr::V6(v) => (true, u128::from(v)),
    }
}

fn ip_from(v6: bool, x: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(x.into())
    } else {
        IpAddr::V4(u32::try_from(x).unwrap_or(u32::MAX).into())
    }
}

/// Intersection of a peer selector and one of our networks.
fn intersect(ts: &TrafficSelector, net: &IpNet) -> Option<TrafficSelector> {
    let (f1, s1) = ip_u128(ts.start);
    let (f2, e1) = ip_u128(ts.end);
    let ours = net_range(net);
    let (f3, s2) = ip_u128(ours.start);
    let (_, e2) = ip_u128(ours.end);
    if f1 != f2 || f1 != f3 {
        return None;
    }
    let (s, e) = (s1.max(s2), e1.min(e2));
    (s <= e && ts.start_port <= ts.end_port).then(|| TrafficSelector {
        ip_protocol: ts.ip_protocol,
        start_port: ts.start_port,
        end_port: ts.end_port,
        start: ip_from(f1, s),
        end: ip_from(f1, e),
    })
}

/// Narrows the peer's selectors to our configured networks (RFC 7296
/// § 2.9); `None` when nothing is left (TS_UNACCEPTABLE).
fn narrow(peer: &[TrafficSelector], ours: &[IpNet]) -> Option<Vec<TrafficSelector>> {
    let v: Vec<TrafficSelector> = peer
        .iter()
        .flat_map(|t| ours.iter().filter_map(move |n| intersect(t, n)))
        .collect();
    (!v.is_empty()).then_some(v)
}

/// Whether every selector of a response lies inside what we proposed.
fn within(resp: &[TrafficSelector], ours: &[IpNet]) -> bool {
    !resp.is_empty()
        && resp.iter().all(|t| {
            ours.iter()
                .any(|n| intersect(t, n).is_some_and(|x| x == *t))
        })
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

fn auth_of(p: &[Payload]) -> Option<&Vec<u8>> {
    p.iter().find_map(|p| match p {
        Payload::Auth {
            method: AuthMethod::SharedKeyMic,
            data,
        } => Some(data),
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

/// A failed Child SA rekey is retried halfway to the SA's hard expiry
/// while that leaves at least this long.
const MIN_REKEY_RETRY: Duration = Duration::from_secs(1);

/// How long the responder of a Child SA rekey keeps sending with the old
/// SA when the peer does not delete it: a DELETE lost once is retransmitted
/// within this time (strongSwan: after 4 s); a peer that never deletes the
/// old SA gets our traffic on the new one from then on.
pub const DEFERRED_OUTBOUND_MAX: Duration = Duration::from_secs(10);

fn spi_u32(v: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(v).ok().map(u32::from_be_bytes)
}

/// Computes the expected COOKIE from `(Ni, IPi:port, SPIi)`.
pub type CookieFn<'a> = dyn Fn(&[u8], SocketAddr, u64) -> Vec<u8> + 'a;

/// Outcome of [`IkeSa::accept`] when no SA is created: a stateless
/// answer to send (INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN, COOKIE) or
/// nothing.
#[derive(Debug)]
pub struct Refused {
    /// Answer to send, if any.
    pub transmit: Option<Transmit>,
    /// The answer is a COOKIE (the request had none, or a wrong one).
    pub cookie: bool,
    /// Log lines.
    pub logs: Vec<String>,
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

    /// Starts an IKE SA as initiator: queues IKE_SA_INIT.
    ///
    /// # Errors
    /// [`super::dh::DhError`] if the first configured group is unusable.
    pub fn initiate(
        cfg: IkeConfig,
        now: Instant,
        rng: &mut dyn Rng,
    ) -> Result<Self, super::dh::DhError> {
        let group = cfg.phase1.dh.first().copied().unwrap_or(14);
        let dh = DhPrivate::generate(group, rng)?;
        let ni = random_bytes(rng, NONCE_LEN);
        let mut sa = Self::blank(
            cfg,
            true,
            now,
            State::InitSent(ExpectSaInitResponse {
                dh,
                ni,
                cookie: None,
                tried_groups: vec![group],
            }),
        );
        sa.spi_i = random_u64(rng);
        sa.send_sa_init(now);
        Ok(sa)
    }

    fn send_sa_init(&mut self, now: Instant) {
        let State::InitSent(st) = &self.state else {
            return;
        };
        let mut payloads = Vec::new();
        if let Some(c) = &st.cookie {
            payloads.push(Payload::Notify(Notify::new(NotifyType::Cookie, c.clone())));
        }
        payloads.push(Payload::Sa(self.cfg.phase1.ike_proposals(st.dh.group())));
        payloads.push(Payload::Ke {
            group: st.dh.group(),
            data: st.dh.public().to_vec(),
        });
        payloads.push(Payload::Nonce(st.ni.clone()));
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::NatDetectionSourceIp,
            nat_hash(self.spi_i, 0, self.local),
        )));
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::NatDetectionDestinationIp,
            nat_hash(self.spi_i, 0, self.remote),
        )));
        payloads.extend(auth::sa_init_request_extras(&self.cfg));
        let msg = Message {
            header: Header {
                spi_i: self.spi_i,
                spi_r: 0,
                exchange: ExchangeType::IkeSaInit,
                flags: flags::INITIATOR,
                message_id: 0,
            },
            payloads,
        };
        self.next_request = 1;
        self.send_request_bytes(now, 0, msg.emit(), PendingKind::SaInit);
    }

    /// Answers an IKE_SA_INIT request as responder. On success the SA
    /// has queued its response; otherwise [`Refused`] says what to send.
    ///
    /// `cookie_required`: the caller's half-open count is above its
    /// threshold; `cookie` computes the expected COOKIE for
    /// `(Ni, IPi, SPIi)` (RFC 7296 § 2.6).
    ///
    /// # Errors
    /// [`Refused`] for anything that does not create an SA.
    pub fn accept(
        cfg: IkeConfig,
        now: Instant,
        rng: &mut dyn Rng,
        dgram: Datagram<'_>,
        cookie: Option<&CookieFn<'_>>,
    ) -> Result<Self, Refused> {
        let mut logs = Vec::new();
        let refuse = |t: Option<Transmit>, logs: Vec<String>| Refused {
            transmit: t,
            cookie: false,
            logs,
        };
        let Some(raw) = strip_marker(dgram) else {
            return Err(refuse(None, logs));
        };
        let Ok(msg) = Message::parse(raw) else {
            return Err(refuse(None, logs));
        };
        let h = msg.header;
        if h.exchange != ExchangeType::IkeSaInit
            || h.is_response()
            || !h.is_initiator()
            || h.spi_r != 0
            || h.message_id != 0
        {
            return Err(refuse(None, logs));
        }
        let stateless = |payloads: Vec<Payload>| {
            let m = Message {
                header: Header {
                    spi_i: h.spi_i,
                    spi_r: 0,
                    exchange: ExchangeType::IkeSaInit,
                    flags: flags::RESPONSE,
                    message_id: 0,
                },
                payloads,
            };
            Some(Transmit {
                local: dgram.local,
                remote: dgram.remote,
                payload: add_marker(dgram.local, m.emit()),
            })
        };
        let (Some(ni), Some((ke_group, ke)), Some(props)) = (
            nonce_of(&msg.payloads),
            ke_of(&msg.payloads),
            sa_of(&msg.payloads),
        ) else {
            return Err(refuse(
                stateless(vec![Payload::Notify(Notify::new(
                    NotifyType::InvalidSyntax,
                    Vec::new(),
                ))]),
                logs,
            ));
        };
        if let Some(f) = cookie {
            let want = f(ni, dgram.remote, h.spi_i);
            let ok = msg
                .notify(NotifyType::Cookie)
                .is_some_and(|n| ct_eq(&n.data, &want));
            if !ok {
                return Err(Refused {
                    transmit: stateless(vec![Payload::Notify(Notify::new(
                        NotifyType::Cookie,
                        want,
                    ))]),
                    cookie: true,
                    logs,
                });
            }
        }
        let Some((number, suite)) = select_ike(&cfg.phase1, props, ke_group) else {
            logs.push(
                "No matching proposal found. Notifying with \"No proposal chosen\"".to_owned(),
            );
            return Err(refuse(
                stateless(vec![Payload::Notify(Notify::new(
                    NotifyType::NoProposalChosen,
                    Vec::new(),
                ))]),
                logs,
            ));
        };
        if suite.dh != ke_group {
            logs.push(format!(
                "INVALID_KE_PAYLOAD: peer used DH group {ke_group}, requesting group {}",
                suite.dh
            ));
            return Err(refuse(
                stateless(vec![Payload::Notify(Notify::new(
                    NotifyType::InvalidKePayload,
                    suite.dh.to_be_bytes().to_vec(),
                ))]),
                logs,
            ));
        }
        let Ok(dh) = DhPrivate::generate(suite.dh, rng) else {
            return Err(refuse(None, logs));
        };
        let Ok(g_ir) = dh.agree(ke) else {
            logs.push(format!("invalid KE payload for DH group {ke_group}"));
            return Err(refuse(
                stateless(vec![Payload::Notify(Notify::new(
                    NotifyType::InvalidSyntax,
                    Vec::new(),
                ))]),
                logs,
            ));
        };
        let nr = random_bytes(rng, NONCE_LEN);
        let spi_r = random_u64(rng);
        // NAT detection (RFC 7296 § 2.23): compare the peer's hashes with
        // the addresses we actually see.
        let src_ok = msg
            .notify(NotifyType::NatDetectionSourceIp)
            .is_none_or(|n| n.data == nat_hash(h.spi_i, 0, dgram.remote));
        let dst_ok = msg
            .notify(NotifyType::NatDetectionDestinationIp)
            .is_none_or(|n| n.data == nat_hash(h.spi_i, 0, dgram.local));
        let nat = !(src_ok && dst_ok);
        let behind_nat = !dst_ok;
        let seed = skeyseed(suite.prf, ni, &nr, &g_ir);
        let keys = derive_ike_keys(&suite, &seed, ni, &nr, h.spi_i, spi_r);
        let mut payloads = vec![
            Payload::Sa(vec![ike_response(number, &suite)]),
            Payload::Ke {
                group: suite.dh,
                data: dh.public().to_vec(),
            },
            Payload::Nonce(nr.clone()),
        ];
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::NatDetectionSourceIp,
            nat_hash(h.spi_i, spi_r, dgram.local),
        )));
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::NatDetectionDestinationIp,
            nat_hash(h.spi_i, spi_r, dgram.remote),
        )));
        payloads.extend(auth::sa_init_response_extras(&cfg, &msg.payloads));
        let resp = Message {
            header: Header {
                spi_i: h.spi_i,
                spi_r,
                exchange: ExchangeType::IkeSaInit,
                flags: flags::RESPONSE,
                message_id: 0,
            },
            payloads,
        };
        let msg2 = resp.emit();
        let mut sa = Self::blank(
            cfg,
            false,
            now,
            State::AwaitAuth(ExpectAuthRequest {
                keys: SaKeys::new(suite, keys, false),
                ni: ni.clone(),
                nr,
                msg1: raw.to_vec(),
                msg2: msg2.clone(),
            }),
        );
        sa.spi_i = h.spi_i;
        sa.spi_r = spi_r;
        sa.local = dgram.local;
        sa.remote = dgram.remote;
        sa.nat_detected = nat;
        if behind_nat {
            sa.keepalive_at = Some(now + sa.cfg.nat_keepalive);
        }
        sa.expected_request = 1;
        sa.peer_frag = auth::peer_fragmentation(&sa.cfg, &msg.payloads);
        sa.peer_rfc7427 = super::cert::peer_accepts_rfc7427(&msg.payloads);
        for l in logs {
            sa.log(l);
        }
        if nat {
            sa.log(format!(
                "NAT detected: remote host {} is behind NAT",
                dgram.remote
            ));
        }
        sa.send_response_bytes(0, msg2);
        Ok(sa)
    }

    /// The dataplane reports that Child SA `spi` (inbound or outbound)
    /// reached a soft byte or packet lifetime: rekey it as soon as the
    /// request slot is free, not when its time-based timer fires. `false`
    /// when no Child SA of this IKE SA has that SPI.
    pub fn expedite_child_rekey(&mut self, now: Instant, spi: u32) -> bool {
        let State::Established(e) = &mut self.state else {
            return false;
        };
        let rekeying = e.rekeying.as_ref().map(|r| r.old_inbound);
        let Some(c) = e
            .children
            .iter_mut()
            .find(|c| c.inbound_spi == spi || c.outbound_spi == spi)
        else {
            return false;
        };
        // A rekey of it already in flight: nothing to do.
        if rekeying != Some(c.inbound_spi) && c.rekey_at > now {
            c.rekey_at = now;
        }
        true
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
            State::Established(e) if e.rekeying.is_some() => PhaseState::Rekeying,
            State::Established(e) if !e.children.is_empty() => PhaseState::Established,
            State::Closed => PhaseState::Down,
            State::Established(_) => PhaseState::Down,
            _ => PhaseState::Negotiating,
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

    /// Idle time before a DPD check: a quarter of the DPD timeout, so
    /// retransmissions fit in the rest.
    fn dpd_idle(&self) -> Duration {
        (self.cfg.dpd_timeout / 4).max(Duration::from_secs(1))
    }

    fn log(&mut self, s: impl Into<String>) {
        self.events.push_back(Event::Log(s.into()));
    }

    fn send_request_bytes(&mut self, now: Instant, id: u32, bytes: Vec<u8>, kind: PendingKind) {
        self.transmits
            .extend(auth::datagrams(self.local, self.remote, &bytes));
        self.pending = Some(Pending {
            id,
            bytes,
            kind,
            tries: 0,
            next: now + self.cfg.retransmit.base,
            first_sent: now,
        });
    }

    fn send_response_bytes(&mut self, id: u32, bytes: Vec<u8>) {
        self.transmits
            .extend(auth::datagrams(self.local, self.remote, &bytes));
        self.last_response = Some((id, bytes));
    }

    fn keys(&self) -> Option<&SaKeys> {
        match &self.state {
            State::AuthSent(s) => Some(&s.keys),
            State::AwaitAuth(s) => Some(&s.keys),
            State::Established(e) => Some(&e.keys),
            _ => None,
        }
    }

    fn protect(
        &self,
        rng: &mut dyn Rng,
        exchange: ExchangeType,
        response: bool,
        id: u32,
        payloads: &[Payload],
    ) -> Option<Vec<u8>> {
        let keys = self.keys()?;
        let mut f = if self.initiator { flags::INITIATOR } else { 0 };
        if response {
            f |= flags::RESPONSE;
        }
        let header = Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            exchange,
            flags: f,
            message_id: id,
        };
        let mut inner = Vec::new();
        let first = emit_chain(payloads, &mut inner);
        if let Some(max) = self.fragment_limit()
            && super::wire::HEADER_LEN + inner.len() + keys.out.overhead(inner.len()) > max
        {
            // RFC 7383 § 2.5: the fragments, back to back; they are sent
            // (and retransmitted) as separate datagrams.
            let frags = super::frag::fragment(&keys.out, &header, first, &inner, max, &mut || {
                random_bytes(rng, 16)
            })
            .ok()?;
            return Some(frags.concat());
        }
        let iv = random_bytes(rng, 16);
        keys.out.seal(&header, first, &inner, &iv).ok()
    }

    fn request(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        exchange: ExchangeType,
        payloads: &[Payload],
        kind: PendingKind,
    ) {
        let id = self.next_request;
        if let Some(b) = self.protect(rng, exchange, false, id, payloads) {
            self.next_request = self.next_request.wrapping_add(1);
            self.send_request_bytes(now, id, b, kind);
        }
    }

    fn respond(&mut self, rng: &mut dyn Rng, exchange: ExchangeType, id: u32, p: &[Payload]) {
        if let Some(b) = self.protect(rng, exchange, true, id, p) {
            self.send_response_bytes(id, b);
        }
    }

    /// Deletes the IKE SA (INFORMATIONAL with DELETE), reporting its
    /// Child SAs down at once.
    pub fn close(&mut self, now: Instant, rng: &mut dyn Rng) {
        if let State::Established(_) = self.state {
            self.request(
                now,
                rng,
                ExchangeType::Informational,
                &[Payload::Delete(Delete {
                    protocol: ProtocolId::Ike,
                    spi_size: 0,
                    spis: Vec::new(),
                })],
                PendingKind::Delete,
            );
        }
        self.go_down(DownReason::Closed);
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
        if let Some(p) = &mut self.pending
            && now >= p.next
        {
            if p.tries >= self.cfg.retransmit.tries {
                let kind = p.kind;
                let tries = p.tries;
                self.pending = None;
                match kind {
                    PendingKind::Dpd => {
                        self.log(format!(
                            "AWS tunnel DPD timed out after {tries} retransmissions"
                        ));
                        if self.cfg.dpd_action == DpdTimeoutAction::None {
                            // Action none: keep the SAs; probe again later.
                            if let State::Established(e) = &mut self.state {
                                e.last_heard = now;
                            }
                        } else {
                            self.go_down(DownReason::DpdTimeout);
                        }
                    }
                    PendingKind::Delete => {
                        self.child_deleted();
                        if self.rekeyed_away {
                            self.go_down(DownReason::Rekeyed);
                        }
                    }
                    _ => {
                        self.log(format!("giving up after {tries} retransmissions"));
                        self.go_down(DownReason::Timeout);
                    }
                }
            } else {
                p.tries += 1;
                // Exponential backoff, capped by the DPD timeout for DPD.
                let mut wait = self.cfg.retransmit.base * 2u32.saturating_pow(p.tries);
                if p.kind == PendingKind::Dpd {
                    let deadline = p.first_sent + self.cfg.dpd_timeout;
                    wait = wait.min(deadline.saturating_duration_since(now));
                    if p.tries == self.cfg.retransmit.tries {
                        wait = deadline.saturating_duration_since(now);
                    }
                }
                p.next = now + wait;
                self.transmits
                    .extend(auth::datagrams(self.local, self.remote, &p.bytes));
            }
        }
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

    fn expire_children(&mut self, now: Instant) {
        let State::Established(e) = &mut self.state else {
            return;
        };
        let expired: Vec<u32> = e
            .children
            .iter()
            .filter(|c| now >= c.expire_at)
            .map(|c| c.inbound_spi)
            .collect();
        for spi in expired {
            self.release_deferred(spi);
            if let State::Established(e) = &mut self.state
                && let Some(i) = e.children.iter().position(|c| c.inbound_spi == spi)
            {
                let c = e.children.remove(i);
                self.events.push_back(Event::ChildSaDown {
                    inbound_spi: c.inbound_spi,
                    outbound_spi: c.outbound_spi,
                });
            }
        }
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

    fn flush_queued(&mut self, now: Instant, rng: &mut dyn Rng) {
        if self.pending.is_none()
            && matches!(self.state, State::Established(_))
            && let Some((spi, outbound_spi)) = self.queued_delete.pop_front()
        {
            self.child_deleting = Some((spi, outbound_spi));
            self.request(
                now,
                rng,
                ExchangeType::Informational,
                &[Payload::Delete(Delete {
                    protocol: ProtocolId::Esp,
                    spi_size: 4,
                    spis: vec![spi.to_be_bytes().to_vec()],
                })],
                PendingKind::Delete,
            );
        }
    }

    fn decrypt(&mut self, raw: &[u8], msg: &Message) -> Option<Vec<Payload>> {
        if let Some(Payload::Skf { .. }) = msg.payloads.last() {
            // Opened fragment by fragment in `reassemble`.
            return self.reassembled.take();
        }
        let keys = self.keys()?;
        match msg.payloads.last()? {
            Payload::Sk { first, data } => {
                let plain = keys.inn.open(raw, raw.len() - data.len()).ok()?;
                parse_chain(*first, &plain).ok()
            }
            _ => None,
        }
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

    /// The DELETE of a rekeyed Child SA was answered (or given up on): the
    /// peer sends no more with it.
    fn child_deleted(&mut self) {
        if let Some((inbound_spi, outbound_spi)) = self.child_deleting.take() {
            self.events.push_back(Event::ChildSaDown {
                inbound_spi,
                outbound_spi,
            });
        }
    }

    /// The Child SA with inbound SPI `old` is going away: the Child SA
    /// whose outbound SA waited for that (we answered the peer's rekey of
    /// `old`) sends from now on. Reported before `old` goes down.
    fn release_deferred(&mut self, old: u32) {
        let State::Established(e) = &mut self.state else {
            return;
        };
        for c in &mut e.children {
            if c.deferred.is_some_and(|(o, _)| o == old) {
                c.deferred = None;
                self.events.push_back(Event::ChildSaOutbound {
                    inbound_spi: c.inbound_spi,
                    outbound_spi: c.outbound_spi,
                });
            }
        }
    }

    fn on_sa_init_response(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        dgram: Datagram<'_>,
        raw: &[u8],
        msg: &Message,
    ) {
        let State::InitSent(st) = &mut self.state else {
            return;
        };
        // COOKIE (RFC 7296 § 2.6): retry with it.
        if let Some(c) = msg.notify(NotifyType::Cookie) {
            if st.cookie.is_some() && st.cookie.as_deref() == Some(&c.data[..]) {
                return;
            }
            st.cookie = Some(c.data.clone());
            self.pending = None;
            self.send_sa_init(now);
            return;
        }
        // INVALID_KE_PAYLOAD (§ 1.3): retry with the requested group.
        if let Some(n) = msg.notify(NotifyType::InvalidKePayload) {
            let g = n.data.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
            match g {
                // IKE_SA_INIT requests all carry message ID 0, so an
                // answer to an earlier request (our retransmission of the
                // old group, answered again by a slow responder) cannot be
                // told from a fresh one. One naming the group we already
                // switched to asks for what we are doing: ignore it and
                // keep waiting (and retransmitting) for the real answer.
                Some(g) if g == st.dh.group() => {
                    self.log(format!(
                        "ignoring INVALID_KE_PAYLOAD for DH group {g}: already retrying with it"
                    ));
                }
                Some(g) if self.cfg.phase1.dh.contains(&g) && !st.tried_groups.contains(&g) => {
                    match DhPrivate::generate(g, rng) {
                        Ok(dh) => {
                            st.dh = dh;
                            st.tried_groups.push(g);
                            st.ni = random_bytes(rng, NONCE_LEN);
                            self.log(format!(
                                "peer requested DH group {g} (INVALID_KE_PAYLOAD), retrying"
                            ));
                            self.pending = None;
                            self.send_sa_init(now);
                        }
                        Err(_) => self.fail(DownReason::NoProposalChosen),
                    }
                }
                _ => {
                    self.log("No proposal match found by AWS");
                    self.fail(DownReason::NoProposalChosen);
                }
            }
            return;
        }
        if let Some(n) = first_error_notify(&msg.payloads) {
            let kind = n.kind;
            if kind == NotifyType::NoProposalChosen {
                self.log("No matching proposal found. Notifying with \"No proposal chosen\"");
                self.fail(DownReason::NoProposalChosen);
            } else {
                self.log(format!("IKE_SA_INIT failed: peer sent {kind:?}"));
                self.fail(DownReason::PeerError(kind));
            }
            return;
        }
        let (Some(nr), Some((group, ke)), Some(props)) = (
            nonce_of(&msg.payloads),
            ke_of(&msg.payloads),
            sa_of(&msg.payloads),
        ) else {
            return;
        };
        let suite = match props.as_slice() {
            [p] => accept_ike_response(&self.cfg.phase1, p),
            _ => None,
        };
        let Some(suite) = suite.filter(|s| s.dh == group && group == st.dh.group()) else {
            self.log("No proposal match found by AWS");
            self.fail(DownReason::NoProposalChosen);
            return;
        };
        let Ok(g_ir) = st.dh.agree(ke) else {
            self.fail(DownReason::Protocol);
            return;
        };
        let h = msg.header;
        self.spi_r = h.spi_r;
        self.peer_frag = auth::peer_fragmentation(&self.cfg, &msg.payloads);
        self.peer_rfc7427 = super::cert::peer_accepts_rfc7427(&msg.payloads);
        let src_ok = msg
            .notify(NotifyType::NatDetectionSourceIp)
            .is_none_or(|n| n.data == nat_hash(h.spi_i, h.spi_r, dgram.remote));
        let dst_ok = msg
            .notify(NotifyType::NatDetectionDestinationIp)
            .is_none_or(|n| n.data == nat_hash(h.spi_i, h.spi_r, dgram.local));
        let peer_supports_nat_t = msg.notify(NotifyType::NatDetectionSourceIp).is_some();
        self.nat_detected = peer_supports_nat_t && !(src_ok && dst_ok);
        if peer_supports_nat_t && !dst_ok {
            self.keepalive_at = Some(now + self.cfg.nat_keepalive);
        }
        let ni = std::mem::take(&mut st.ni);
        let nr = nr.clone();
        let seed = skeyseed(suite.prf, &ni, &nr, &g_ir);
        let keys = derive_ike_keys(&suite, &seed, &ni, &nr, self.spi_i, self.spi_r);
        let msg1 = self.pending.take().map(|p| p.bytes).unwrap_or_default();
        if self.nat_detected {
            // Float to 4500 (RFC 7296 § 2.23).
            self.local.set_port(NAT_T_PORT);
            self.remote.set_port(NAT_T_PORT);
            self.log(format!("NAT detected: floating to UDP {NAT_T_PORT}"));
            if self.keepalive_at.is_some() {
                self.log("we are behind a NAT: sending NAT-T keepalives");
            }
        }
        let child_spi = random_spi(rng);
        self.state = State::AuthSent(ExpectAuthResponse {
            keys: SaKeys::new(suite, keys, true),
            ni,
            nr,
            msg1,
            msg2: raw.to_vec(),
            child_spi,
        });
        self.send_auth(now, rng);
    }

    fn send_auth(&mut self, now: Instant, rng: &mut dyn Rng) {
        let State::AuthSent(st) = &self.state else {
            return;
        };
        let ours = match self.our_auth(&st.keys, &st.msg1, &st.nr, true) {
            Ok(o) => o,
            Err(why) => {
                self.log(why);
                self.fail(DownReason::AuthenticationFailed);
                return;
            }
        };
        let mut payloads = vec![Payload::IdI(ours.id)];
        payloads.extend(ours.certs);
        if let Some(c) = &self.cfg.cert {
            payloads.push(c.trust.certreq_payload());
        }
        if let Some(r) = &self.cfg.remote_id {
            payloads.push(Payload::IdR(r.clone()));
        }
        payloads.push(ours.auth);
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::InitialContact,
            Vec::new(),
        )));
        payloads.push(Payload::Sa(
            self.cfg.phase2.esp_proposals(st.child_spi, None),
        ));
        payloads.push(Payload::TsI(
            self.cfg.local_ts.iter().map(net_range).collect(),
        ));
        payloads.push(Payload::TsR(
            self.cfg.remote_ts.iter().map(net_range).collect(),
        ));
        self.request(
            now,
            rng,
            ExchangeType::IkeAuth,
            &payloads,
            PendingKind::Auth,
        );
    }

    fn fail(&mut self, reason: DownReason) {
        self.pending = None;
        self.go_down(reason);
    }

    fn child_ctx(&self) -> ChildCtx {
        ChildCtx {
            local: self.local,
            remote: self.remote,
            nat: self.nat_detected,
            replay_window: self.cfg.replay_window,
            lifetime: self.cfg.phase2_lifetime,
        }
    }

    fn on_auth_response(&mut self, now: Instant, rng: &mut dyn Rng, payloads: &[Payload]) {
        let State::AuthSent(st) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        if let Some(n) = find_notify(payloads, NotifyType::AuthenticationFailed) {
            let _ = n;
            self.state = State::AuthSent(st);
            if self.cfg.cert.is_some() {
                self.log(format!(
                    "AWS tunnel certificate authentication refused by cgw: {} (AUTHENTICATION_FAILED)",
                    self.remote.ip()
                ));
            } else {
                self.log(format!(
                    "AWS tunnel detected pre-shared key mismatch with cgw: {}",
                    self.remote.ip()
                ));
            }
            self.fail(DownReason::AuthenticationFailed);
            return;
        }
        // Verify the responder's AUTH (RFC 7296 § 2.15).
        let idr = payloads.iter().find_map(|p| match p {
            Payload::IdR(id) => Some(id),
            _ => None,
        });
        let Some(idr) = idr else {
            self.state = State::AuthSent(st);
            self.fail(DownReason::Protocol);
            return;
        };
        let verified =
            match self.verify_peer_auth(now, &st.keys, &st.msg2, &st.ni, false, idr, payloads) {
                Ok(v) => v,
                Err(auth::AuthFailure::Missing) => {
                    self.state = State::AuthSent(st);
                    self.fail(DownReason::Protocol);
                    return;
                }
                Err(auth::AuthFailure::Failed(why)) => {
                    self.state = State::AuthSent(st);
                    self.log(why);
                    self.fail(DownReason::AuthenticationFailed);
                    return;
                }
            };
        let mut est = Established {
            rekey_ike_at: now + self.cfg.rekey_after(self.cfg.phase1_lifetime, rng),
            expire_ike_at: now + self.cfg.phase1_lifetime,
            keys: st.keys,
            children: Vec::new(),
            last_heard: now,
            rekeying: None,
            ike_rekey: None,
        };
        self.events.push_back(Event::IkeSaUp {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            suite: est.keys.suite,
            nat_detected: self.nat_detected,
        });
        // The first Child SA.
        let child = (|| {
            if let Some(n) = first_error_notify(payloads) {
                return Err(n.kind);
            }
            let props = sa_of(payloads).ok_or(NotifyType::NoProposalChosen)?;
            let [p] = props.as_slice() else {
                return Err(NotifyType::NoProposalChosen);
            };
            let suite = accept_esp_response(&self.cfg.phase2, p, None)
                .ok_or(NotifyType::NoProposalChosen)?;
            let peer_spi = spi_u32(&p.spi).ok_or(NotifyType::NoProposalChosen)?;
            let (tsi, tsr) = (tsi_of(payloads), tsr_of(payloads));
            let (Some(tsi), Some(tsr)) = (tsi, tsr) else {
                return Err(NotifyType::TsUnacceptable);
            };
            let narrowed =
                check_ts_response(&self.cfg, tsi, tsr).ok_or(NotifyType::TsUnacceptable)?;
            let km = child_keymat(
                est.keys.suite.prf,
                &est.keys.sk_d,
                None,
                &st.ni,
                &st.nr,
                2 * suite.keymat_len(),
            );
            Ok(ChildSa::new(
                suite,
                &km,
                st.child_spi,
                peer_spi,
                true,
                (tsi.clone(), tsr.clone()),
                &self.child_ctx(),
                &verified,
                narrowed,
            ))
        })();
        match child {
            Ok(c) => {
                est.children.push(ChildState {
                    inbound_spi: c.inbound.spi,
                    outbound_spi: c.outbound.spi,
                    rekey_at: now + self.cfg.rekey_after(self.cfg.phase2_lifetime, rng),
                    expire_at: now + self.cfg.phase2_lifetime,
                    deferred: None,
                });
                self.events.push_back(Event::ChildSaUp(Box::new(c)));
            }
            Err(NotifyType::TsUnacceptable) => {
                self.log("AWS: Traffic Selector: TS_UNACCEPTABLE: received from responder");
            }
            Err(kind) => {
                self.log(format!(
                    "AWS tunnel phase 2 SA cannot be established while keeping phase 1 ({kind:?})"
                ));
            }
        }
        self.state = State::Established(Box::new(est));
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

    fn on_auth_request(&mut self, now: Instant, rng: &mut dyn Rng, id: u32, p: &[Payload]) {
        let State::AwaitAuth(st) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        let idi = p.iter().find_map(|p| match p {
            Payload::IdI(id) => Some(id),
            _ => None,
        });
        let verified = match idi {
            Some(idi) => self.verify_peer_auth(now, &st.keys, &st.msg1, &st.nr, true, idi, p),
            None => Err(auth::AuthFailure::Missing),
        };
        let verified = match verified {
            Ok(v) => Some(v),
            Err(auth::AuthFailure::Missing) => {
                self.log(format!(
                    "AWS tunnel detected pre-shared key mismatch with cgw: {}",
                    self.remote.ip()
                ));
                None
            }
            Err(auth::AuthFailure::Failed(why)) => {
                self.log(why);
                None
            }
        };
        let Some(verified) = verified else {
            self.state = State::AwaitAuth(st);
            self.log("AWS tunnel is sending AUTHENTICATION_FAILED as response");
            self.respond(
                rng,
                ExchangeType::IkeAuth,
                id,
                &[Payload::Notify(Notify::new(
                    NotifyType::AuthenticationFailed,
                    Vec::new(),
                ))],
            );
            self.go_down(DownReason::AuthenticationFailed);
            return;
        };
        self.initial_contact = find_notify(p, NotifyType::InitialContact).is_some();
        let ours = match self.our_auth(&st.keys, &st.msg2, &st.ni, false) {
            Ok(o) => o,
            Err(why) => {
                self.log(why);
                self.state = State::AwaitAuth(st);
                self.respond(
                    rng,
                    ExchangeType::IkeAuth,
                    id,
                    &[Payload::Notify(Notify::new(
                        NotifyType::AuthenticationFailed,
                        Vec::new(),
                    ))],
                );
                self.go_down(DownReason::AuthenticationFailed);
                return;
            }
        };
        let mut resp = vec![Payload::IdR(ours.id)];
        resp.extend(ours.certs);
        resp.push(ours.auth);
        let mut est = Established {
            rekey_ike_at: now + self.cfg.rekey_after(self.cfg.phase1_lifetime, rng),
            expire_ike_at: now + self.cfg.phase1_lifetime,
            keys: st.keys,
            children: Vec::new(),
            last_heard: now,
            rekeying: None,
            ike_rekey: None,
        };
        let child = self.negotiate_child(rng, &est, p, &st.ni, &st.nr, None, &verified);
        let child = match child {
            Ok((c, props)) => {
                resp.extend(props);
                Some(c)
            }
            Err(n) => {
                resp.push(Payload::Notify(Notify::new(n, Vec::new())));
                None
            }
        };
        self.events.push_back(Event::IkeSaUp {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            suite: est.keys.suite,
            nat_detected: self.nat_detected,
        });
        if let Some(c) = child {
            est.children.push(ChildState {
                inbound_spi: c.inbound.spi,
                outbound_spi: c.outbound.spi,
                rekey_at: now + self.cfg.rekey_after(self.cfg.phase2_lifetime, rng),
                expire_at: now + self.cfg.phase2_lifetime,
                deferred: None,
            });
            self.events.push_back(Event::ChildSaUp(Box::new(c)));
        }
        self.state = State::Established(Box::new(est));
        self.respond(rng, ExchangeType::IkeAuth, id, &resp);
    }

    /// Responder side of a Child SA negotiation: proposal, TS narrowing,
    /// keys. Returns the SA and the response payloads (SA, TSi, TSr).
    #[allow(clippy::too_many_arguments, reason = "the exchange's inputs")]
    fn negotiate_child(
        &mut self,
        rng: &mut dyn Rng,
        est: &Established,
        p: &[Payload],
        ni: &[u8],
        nr: &[u8],
        g_ir: Option<(u16, &[u8])>,
        verified: &AuthVerified,
    ) -> Result<(ChildSa, Vec<Payload>), NotifyType> {
        let props = sa_of(p).ok_or(NotifyType::NoProposalChosen)?;
        let Some((prop, suite)) = select_esp(&self.cfg.phase2, props, g_ir.map(|g| g.0)) else {
            self.log("No matching proposal found. Notifying with \"No proposal chosen\"");
            self.log("AWS tunnel phase 2 SA cannot be established while keeping phase 1");
            return Err(NotifyType::NoProposalChosen);
        };
        let peer_spi = spi_u32(&prop.spi).ok_or(NotifyType::NoProposalChosen)?;
        let (Some(tsi), Some(tsr)) = (tsi_of(p), tsr_of(p)) else {
            return Err(NotifyType::TsUnacceptable);
        };
        // The peer's TSi is its side (our remote), TSr ours.
        let (Some(n_i), Some(n_r)) = (
            narrow(tsi, &self.cfg.remote_ts),
            narrow(tsr, &self.cfg.local_ts),
        ) else {
            self.log("AWS: Traffic Selector: TS_UNACCEPTABLE: sent to initiator");
            return Err(NotifyType::TsUnacceptable);
        };
        let narrowed = TsNarrowed(());
        let our_spi = random_spi(rng);
        let km = child_keymat(
            est.keys.suite.prf,
            &est.keys.sk_d,
            g_ir.map(|g| g.1),
            ni,
            nr,
            2 * suite.keymat_len(),
        );
        let c = ChildSa::new(
            suite,
            &km,
            our_spi,
            peer_spi,
            false,
            (n_r.clone(), n_i.clone()),
            &self.child_ctx(),
            verified,
            narrowed,
        );
        Ok((
            c,
            vec![
                Payload::Sa(vec![esp_response(prop.number, our_spi, &suite)]),
                Payload::TsI(n_i),
                Payload::TsR(n_r),
            ],
        ))
    }

    fn on_informational(&mut self, rng: &mut dyn Rng, id: u32, p: &[Payload]) {
        let mut resp = Vec::new();
        let mut ike_deleted = false;
        for d in p.iter().filter_map(|p| match p {
            Payload::Delete(d) => Some(d),
            _ => None,
        }) {
            match d.protocol {
                ProtocolId::Ike => ike_deleted = true,
                ProtocolId::Esp => {
                    let mut ours = Vec::new();
                    for spi in d.spis.iter().filter_map(|s| spi_u32(s)) {
                        self.log(format!(
                            "AWS tunnel received DELETE for phase 2 SA with SPI: {spi:08x}"
                        ));
                        if let State::Established(e) = &self.state
                            && let Some(rk) = &e.rekeying
                            && e.children
                                .iter()
                                .any(|c| c.outbound_spi == spi && c.inbound_spi == rk.old_inbound)
                        {
                            self.log(
                                "AWS tunnel detected a (CHILD_REKEY) collision as CHILD_DELETE",
                            );
                        }
                        let inbound = match &self.state {
                            State::Established(e) => e
                                .children
                                .iter()
                                .find(|c| c.outbound_spi == spi)
                                .map(|c| c.inbound_spi),
                            _ => None,
                        };
                        if let Some(inbound) = inbound {
                            self.release_deferred(inbound);
                        }
                        if let State::Established(e) = &mut self.state
                            && let Some(i) = e.children.iter().position(|c| c.outbound_spi == spi)
                        {
                            let c = e.children.remove(i);
                            ours.push(c.inbound_spi.to_be_bytes().to_vec());
                            self.events.push_back(Event::ChildSaDown {
                                inbound_spi: c.inbound_spi,
                                outbound_spi: c.outbound_spi,
                            });
                        }
                    }
                    if !ours.is_empty() {
                        resp.push(Payload::Delete(Delete {
                            protocol: ProtocolId::Esp,
                            spi_size: 4,
                            spis: ours,
                        }));
                    }
                }
                _ => {}
            }
        }
        if ike_deleted {
            self.respond(rng, ExchangeType::Informational, id, &[]);
            let childless = match &self.state {
                State::Established(e) => e.children.is_empty(),
                _ => true,
            };
            // A replaced IKE SA, or the redundant one of a rekey collision.
            if self.rekeyed_away || (self.from_rekey && childless) {
                self.go_down(DownReason::Rekeyed);
            } else {
                self.log("AWS tunnel received DELETE for IKE_SA from CGW");
                self.go_down(DownReason::DeletedByPeer);
            }
            return;
        }
        self.respond(rng, ExchangeType::Informational, id, &resp);
    }

    fn on_create_child_request(&mut self, now: Instant, rng: &mut dyn Rng, id: u32, p: &[Payload]) {
        self.log(format!(
            "AWS tunnel processing request for CREATE_CHILD_SA (id={id})"
        ));
        let fail = |kind: NotifyType| vec![Payload::Notify(Notify::new(kind, Vec::new()))];
        let rekey = find_notify(p, NotifyType::RekeySa).and_then(|n| spi_u32(&n.spi));
        let is_ike_rekey =
            sa_of(p).is_some_and(|v| v.iter().any(|x| x.protocol == ProtocolId::Ike));
        let resp = if is_ike_rekey {
            self.answer_ike_rekey(now, rng, p)
        } else {
            let known = |old: u32| match &self.state {
                State::Established(e) => e.children.iter().any(|c| c.outbound_spi == old),
                _ => false,
            };
            if let Some(old) = rekey
                && !known(old)
            {
                // RFC 7296 § 2.25: rekeying an SA we no longer have.
                self.log(format!(
                    "CHILD_SA with SPI {old:08x} not found for rekeying"
                ));
                self.respond(
                    rng,
                    ExchangeType::CreateChildSa,
                    id,
                    &fail(NotifyType::ChildSaNotFound),
                );
                return;
            }
            let Some(ni) = nonce_of(p).cloned() else {
                self.respond(
                    rng,
                    ExchangeType::CreateChildSa,
                    id,
                    &fail(NotifyType::InvalidSyntax),
                );
                return;
            };
            let nr = random_bytes(rng, NONCE_LEN);
            let mut dh_out = None;
            let g_ir = match ke_of(p) {
                Some((g, ke)) if self.cfg.phase2.dh.contains(&g) => {
                    match DhPrivate::generate(g, rng).ok().and_then(|d| {
                        let s = d.agree(ke).ok()?;
                        Some((d, s))
                    }) {
                        Some((d, s)) => {
                            dh_out = Some(d);
                            Some((g, s))
                        }
                        None => {
                            self.respond(
                                rng,
                                ExchangeType::CreateChildSa,
                                id,
                                &fail(NotifyType::InvalidSyntax),
                            );
                            return;
                        }
                    }
                }
                Some(_) => {
                    let g = self.cfg.phase2.dh.first().copied().unwrap_or(14);
                    self.respond(
                        rng,
                        ExchangeType::CreateChildSa,
                        id,
                        &[Payload::Notify(Notify::new(
                            NotifyType::InvalidKePayload,
                            g.to_be_bytes().to_vec(),
                        ))],
                    );
                    return;
                }
                None => None,
            };
            let State::Established(est) = std::mem::replace(&mut self.state, State::Closed) else {
                return;
            };
            // The IKE SA's AUTH was verified when it was established.
            let verified = AuthVerified(());
            let r = self.negotiate_child(
                rng,
                &est,
                p,
                &ni,
                &nr,
                g_ir.as_ref().map(|(g, s)| (*g, &s[..])),
                &verified,
            );
            self.state = State::Established(est);
            let nr_copy = nr.clone();
            match r {
                Ok((mut c, props)) => {
                    let mut resp = props;
                    resp.insert(1, Payload::Nonce(nr));
                    if let Some(d) = &dh_out {
                        resp.insert(
                            2,
                            Payload::Ke {
                                group: d.group(),
                                data: d.public().to_vec(),
                            },
                        );
                    }
                    // RFC 7296 § 2.8: the initiator of the rekey installs
                    // its inbound SA when our answer reaches it; until it
                    // deletes the old SA we keep sending on that one.
                    let replaces = rekey.and_then(|old| match &self.state {
                        State::Established(e) => e
                            .children
                            .iter()
                            .find(|c| c.outbound_spi == old)
                            .map(|c| c.inbound_spi),
                        _ => None,
                    });
                    c.outbound_deferred = replaces.is_some();
                    if let State::Established(e) = &mut self.state {
                        e.children.push(ChildState {
                            inbound_spi: c.inbound.spi,
                            outbound_spi: c.outbound.spi,
                            rekey_at: now + self.cfg.rekey_after(self.cfg.phase2_lifetime, rng),
                            expire_at: now + self.cfg.phase2_lifetime,
                            deferred: replaces.map(|old| (old, now + DEFERRED_OUTBOUND_MAX)),
                        });
                    }
                    if let Some(old) = rekey {
                        self.log(format!("rekeying CHILD_SA with SPI {old:08x}"));
                        // Simultaneous rekey of the same Child SA?
                        let their_min = if ni < nr_copy {
                            ni.clone()
                        } else {
                            nr_copy.clone()
                        };
                        if let State::Established(e) = &mut self.state
                            && let Some(rk) = &mut e.rekeying
                            && e.children
                                .iter()
                                .any(|c| c.outbound_spi == old && c.inbound_spi == rk.old_inbound)
                        {
                            rk.collision = Some(their_min);
                        }
                    }
                    self.events.push_back(Event::ChildSaUp(Box::new(c)));
                    resp
                }
                Err(n) => fail(n),
            }
        };
        self.log(format!(
            "AWS tunnel is sending response for CREATE_CHILD_SA (id={id})"
        ));
        self.respond(rng, ExchangeType::CreateChildSa, id, &resp);
    }

    /// Rekeys the Child SA whose inbound SPI is `spi` (CREATE_CHILD_SA
    /// with REKEY_SA, PFS with the first configured phase 2 group).
    fn rekey_child(&mut self, now: Instant, rng: &mut dyn Rng, spi: u32) {
        let group = self.cfg.phase2.dh.first().copied();
        self.rekey_child_with(now, rng, spi, group);
    }

    /// Rekeys Child SA `spi` with PFS in `group` (None: without KE).
    fn rekey_child_with(&mut self, now: Instant, rng: &mut dyn Rng, spi: u32, group: Option<u16>) {
        let dh = group.and_then(|g| DhPrivate::generate(g, rng).ok());
        let new_spi = random_spi(rng);
        let ni = random_bytes(rng, NONCE_LEN);
        let mut p = vec![Payload::Notify(Notify {
            protocol: ProtocolId::Esp,
            spi: spi.to_be_bytes().to_vec(),
            kind: NotifyType::RekeySa,
            data: Vec::new(),
        })];
        p.push(Payload::Sa(
            self.cfg
                .phase2
                .esp_proposals(new_spi, dh.as_ref().map(DhPrivate::group)),
        ));
        p.push(Payload::Nonce(ni.clone()));
        if let Some(d) = &dh {
            p.push(Payload::Ke {
                group: d.group(),
                data: d.public().to_vec(),
            });
        }
        p.push(Payload::TsI(
            self.cfg.local_ts.iter().map(net_range).collect(),
        ));
        p.push(Payload::TsR(
            self.cfg.remote_ts.iter().map(net_range).collect(),
        ));
        let id = self.next_request;
        self.log(format!(
            "AWS tunnel is sending request for CREATE_CHILD_SA (id={id})"
        ));
        if let State::Established(e) = &mut self.state {
            e.rekeying = Some(ChildRekey {
                old_inbound: spi,
                new_spi,
                ni,
                dh,
                collision: None,
            });
            // Do not try again before this attempt ends.
            if let Some(c) = e.children.iter_mut().find(|c| c.inbound_spi == spi) {
                c.rekey_at = c.expire_at;
            }
        }
        self.request(
            now,
            rng,
            ExchangeType::CreateChildSa,
            &p,
            PendingKind::CreateChild,
        );
    }

    fn on_create_child_response(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        msg: &Message,
        p: &[Payload],
    ) {
        let rekey_in = self.cfg.rekey_after(self.cfg.phase2_lifetime, rng);
        let id = msg.header.message_id;
        self.log(format!(
            "AWS tunnel processing response for CREATE_CHILD_SA (id={id})"
        ));
        let State::Established(est) = &mut self.state else {
            return;
        };
        let Some(rk) = est.rekeying.take() else {
            return;
        };
        let result = (|| {
            if let Some(n) = first_error_notify(p) {
                return Err(n.kind);
            }
            let props = sa_of(p).ok_or(NotifyType::NoProposalChosen)?;
            let [prop] = props.as_slice() else {
                return Err(NotifyType::NoProposalChosen);
            };
            let pfs = rk.dh.as_ref().map(DhPrivate::group);
            let suite = accept_esp_response(&self.cfg.phase2, prop, pfs)
                .ok_or(NotifyType::NoProposalChosen)?;
            let peer_spi = spi_u32(&prop.spi).ok_or(NotifyType::NoProposalChosen)?;
            let nr = nonce_of(p).ok_or(NotifyType::InvalidSyntax)?;
            let g_ir = match (&rk.dh, ke_of(p)) {
                (Some(d), Some((g, ke))) if g == d.group() => {
                    Some(d.agree(ke).map_err(|_| NotifyType::InvalidSyntax)?)
                }
                (None, None) => None,
                _ => return Err(NotifyType::NoProposalChosen),
            };
            let (Some(tsi), Some(tsr)) = (tsi_of(p), tsr_of(p)) else {
                return Err(NotifyType::TsUnacceptable);
            };
            let narrowed =
                check_ts_response(&self.cfg, tsi, tsr).ok_or(NotifyType::TsUnacceptable)?;
            let km = child_keymat(
                est.keys.suite.prf,
                &est.keys.sk_d,
                g_ir.as_deref().map(|v| &v[..]),
                &rk.ni,
                nr,
                2 * suite.keymat_len(),
            );
            let verified = AuthVerified(());
            Ok(ChildSa::new(
                suite,
                &km,
                rk.new_spi,
                peer_spi,
                true,
                (tsi.clone(), tsr.clone()),
                &ChildCtx {
                    local: self.local,
                    remote: self.remote,
                    nat: self.nat_detected,
                    replay_window: self.cfg.replay_window,
                    lifetime: self.cfg.phase2_lifetime,
                },
                &verified,
                narrowed,
            ))
        })();
        let our_min = nonce_of(p).map(|nr| {
            if rk.ni < *nr {
                rk.ni.clone()
            } else {
                nr.clone()
            }
        });
        match result {
            Ok(c) => {
                let new_in = c.inbound.spi;
                est.children.push(ChildState {
                    inbound_spi: new_in,
                    outbound_spi: c.outbound.spi,
                    rekey_at: now + rekey_in,
                    expire_at: now + self.cfg.phase2_lifetime,
                    deferred: None,
                });
                // Make-before-break: the new SA is reported up before the
                // old one is deleted.
                self.events.push_back(Event::ChildSaUp(Box::new(c)));
                // RFC 7296 § 2.8.1: after a simultaneous rekey, the SA
                // created with the lowest of the four nonces is redundant
                // and its initiator deletes it; the other side deletes
                // the old SA.
                let lost = matches!((&rk.collision, &our_min), (Some(theirs), Some(ours)) if ours < theirs);
                if lost {
                    self.log(
                        "AWS tunnel (CHILD_SA) redundant SA is being deleted due to detected collision",
                    );
                    // The peer's SA replaces the old one: it sends now.
                    self.release_deferred(rk.old_inbound);
                    self.delete_child_after_rekey(new_in);
                } else {
                    // The peer's SA of the collision is the redundant one
                    // (the peer deletes it): it never sends.
                    if let State::Established(e) = &mut self.state {
                        for c in &mut e.children {
                            if c.deferred.is_some_and(|(o, _)| o == rk.old_inbound) {
                                c.deferred = None;
                            }
                        }
                    }
                    self.delete_child_after_rekey(rk.old_inbound);
                }
            }
            Err(NotifyType::InvalidKePayload)
                if let Some(g) = invalid_ke_group(p).filter(|g| {
                    self.cfg.phase2.dh.contains(g)
                        && rk.dh.as_ref().map(DhPrivate::group) != Some(*g)
                }) =>
            {
                // RFC 7296 § 1.3: the responder wants another PFS group
                // (one of ours): rekey again with it.
                self.log(format!(
                    "peer requested DH group {g} for CREATE_CHILD_SA (INVALID_KE_PAYLOAD), retrying"
                ));
                self.rekey_child_with(now, rng, rk.old_inbound, Some(g));
            }
            Err(k) => {
                // Try again halfway to the hard expiry (a later attempt may
                // meet a peer that recovered), not only when it expires.
                if let Some(c) = est
                    .children
                    .iter_mut()
                    .find(|c| c.inbound_spi == rk.old_inbound)
                    && let Some(left) = c.expire_at.checked_duration_since(now)
                    && left >= 2 * MIN_REKEY_RETRY
                {
                    c.rekey_at = now + left / 2;
                }
                self.log(format!(
                    "AWS tunnel phase 2 SA cannot be established while keeping phase 1 ({k:?})"
                ));
            }
        }
    }

    fn delete_child_after_rekey(&mut self, old_inbound: u32) {
        let State::Established(e) = &mut self.state else {
            return;
        };
        if let Some(i) = e.children.iter().position(|c| c.inbound_spi == old_inbound) {
            let c = e.children.remove(i);
            // The DELETE goes out once the pending slot is free (window
            // size 1): queue it as the next request. The SA is reported
            // down when the peer answers: until then it may still send
            // with it (it switches when it sees our DELETE).
            self.queued_delete
                .push_back((c.inbound_spi, c.outbound_spi));
        }
    }
}

impl IkeSa {
    /// A new IKE SA from a rekey, inheriting the Child SAs.
    #[allow(clippy::too_many_arguments, reason = "the new SA's parts")]
    fn rekeyed(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        initiator: bool,
        spi_i: u64,
        spi_r: u64,
        keys: SaKeys,
        children: Vec<ChildState>,
    ) -> Self {
        let est = Established {
            rekey_ike_at: now + self.cfg.rekey_after(self.cfg.phase1_lifetime, rng),
            expire_ike_at: now + self.cfg.phase1_lifetime,
            keys,
            children,
            last_heard: now,
            rekeying: None,
            ike_rekey: None,
        };
        let mut n = Self::blank(
            self.cfg.clone(),
            initiator,
            now,
            State::Established(Box::new(est)),
        );
        n.spi_i = spi_i;
        n.spi_r = spi_r;
        n.from_rekey = true;
        n.local = self.local;
        n.remote = self.remote;
        n.nat_detected = self.nat_detected;
        n.keepalive_at = self.keepalive_at;
        n.log(format!(
            "IKE_SA rekeyed: {:016x}_i {:016x}_r replaced by {spi_i:016x}_i {spi_r:016x}_r",
            self.spi_i, self.spi_r
        ));
        n.events.push_back(Event::IkeSaRekeyed { spi_i, spi_r });
        self.rekeyed_away = true;
        n
    }

    /// Starts an IKE SA rekey (RFC 7296 § 1.3.2) with the current group.
    fn rekey_ike(&mut self, now: Instant, rng: &mut dyn Rng) {
        let State::Established(e) = &mut self.state else {
            return;
        };
        // One attempt per lifetime; expiry deletes the SA if it fails.
        e.rekey_ike_at = e.expire_ike_at;
        let Ok(dh) = DhPrivate::generate(e.keys.suite.dh, rng) else {
            return;
        };
        let new_spi = random_u64(rng);
        let ni = random_bytes(rng, NONCE_LEN);
        let mut props = self.cfg.phase1.ike_proposals(dh.group());
        for p in &mut props {
            p.spi = new_spi.to_be_bytes().to_vec();
        }
        let payloads = vec![
            Payload::Sa(props),
            Payload::Nonce(ni.clone()),
            Payload::Ke {
                group: dh.group(),
                data: dh.public().to_vec(),
            },
        ];
        e.ike_rekey = Some(IkeRekey {
            new_spi,
            ni,
            dh,
            collision: None,
        });
        let id = self.next_request;
        self.log(format!(
            "AWS tunnel is sending request for CREATE_CHILD_SA (id={id})"
        ));
        self.request(
            now,
            rng,
            ExchangeType::CreateChildSa,
            &payloads,
            PendingKind::RekeyIke,
        );
    }

    fn on_ike_rekey_response(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        msg: &Message,
        p: &[Payload],
    ) {
        let id = msg.header.message_id;
        self.log(format!(
            "AWS tunnel processing response for CREATE_CHILD_SA (id={id})"
        ));
        let State::Established(e) = &mut self.state else {
            return;
        };
        let Some(rk) = e.ike_rekey.take() else {
            return;
        };
        let derived = (|| {
            if let Some(n) = first_error_notify(p) {
                return Err(n.kind);
            }
            let props = sa_of(p).ok_or(NotifyType::NoProposalChosen)?;
            let [prop] = props.as_slice() else {
                return Err(NotifyType::NoProposalChosen);
            };
            let suite = accept_ike_response(&self.cfg.phase1, prop)
                .filter(|s| s.dh == rk.dh.group())
                .ok_or(NotifyType::NoProposalChosen)?;
            let peer_spi = <[u8; 8]>::try_from(&prop.spi[..])
                .map(u64::from_be_bytes)
                .map_err(|_| NotifyType::InvalidSyntax)?;
            let nr = nonce_of(p).ok_or(NotifyType::InvalidSyntax)?;
            let (g, ke) = ke_of(p).ok_or(NotifyType::InvalidSyntax)?;
            if g != rk.dh.group() {
                return Err(NotifyType::InvalidKePayload);
            }
            let g_ir = rk.dh.agree(ke).map_err(|_| NotifyType::InvalidSyntax)?;
            let seed = skeyseed_rekey(e.keys.suite.prf, &e.keys.sk_d, &g_ir, &rk.ni, nr);
            let k = derive_ike_keys(&suite, &seed, &rk.ni, nr, rk.new_spi, peer_spi);
            Ok((peer_spi, SaKeys::new(suite, k, true)))
        })();
        match derived {
            Ok((peer_spi, keys)) => {
                let children = std::mem::take(&mut e.children);
                let our_min = nonce_of(p).map(|nr| rk.ni.clone().min(nr.clone()));
                if let Some((their_min, mut theirs)) = rk.collision {
                    // RFC 7296 § 2.8.2: the new IKE SA created with the
                    // lowest of the four nonces is redundant; its
                    // initiator deletes it. The survivor takes the Child
                    // SAs; whoever initiated it deletes the old IKE SA.
                    let ours_lost = our_min.is_some_and(|m| m < their_min);
                    self.log("IKE_SA rekey collision detected");
                    if ours_lost {
                        theirs.adopt_children(children);
                        let mut mine =
                            self.rekeyed(now, rng, true, rk.new_spi, peer_spi, keys, Vec::new());
                        mine.log("AWS tunnel (IKE_SA) redundant SA is being deleted due to detected collision");
                        mine.close_quietly(now, rng);
                        self.spawned.push(*theirs);
                        self.spawned.push(mine);
                        // The peer deletes the old IKE SA.
                        return;
                    }
                    let n = self.rekeyed(now, rng, true, rk.new_spi, peer_spi, keys, children);
                    self.spawned.push(n);
                    self.spawned.push(*theirs);
                } else {
                    let n = self.rekeyed(now, rng, true, rk.new_spi, peer_spi, keys, children);
                    self.spawned.push(n);
                }
                // Delete the old IKE SA (RFC 7296 § 2.18).
                self.request(
                    now,
                    rng,
                    ExchangeType::Informational,
                    &[Payload::Delete(Delete {
                        protocol: ProtocolId::Ike,
                        spi_size: 0,
                        spis: Vec::new(),
                    })],
                    PendingKind::Delete,
                );
            }
            Err(k) => self.log(format!("IKE_SA rekey failed: peer sent {k:?}")),
        }
    }

    fn adopt_children(&mut self, children: Vec<ChildState>) {
        if let State::Established(e) = &mut self.state {
            e.children.extend(children);
        }
    }

    /// Deletes a redundant IKE SA that owns no Child SA.
    fn close_quietly(&mut self, now: Instant, rng: &mut dyn Rng) {
        self.request(
            now,
            rng,
            ExchangeType::Informational,
            &[Payload::Delete(Delete {
                protocol: ProtocolId::Ike,
                spi_size: 0,
                spis: Vec::new(),
            })],
            PendingKind::Delete,
        );
        self.rekeyed_away = true;
    }

    /// Responder side of an IKE SA rekey; returns the response payloads.
    fn answer_ike_rekey(&mut self, now: Instant, rng: &mut dyn Rng, p: &[Payload]) -> Vec<Payload> {
        let fail = |kind: NotifyType, data: Vec<u8>| vec![Payload::Notify(Notify::new(kind, data))];
        if self.rekeyed_away {
            // Already replaced by our own rekey (RFC 7296 § 2.8.2).
            return fail(NotifyType::TemporaryFailure, Vec::new());
        }
        let (Some(props), Some(ni), Some((g, ke))) = (sa_of(p), nonce_of(p), ke_of(p)) else {
            return fail(NotifyType::InvalidSyntax, Vec::new());
        };
        let Some((number, suite)) = select_ike(&self.cfg.phase1, props, g) else {
            self.log("No matching proposal found. Notifying with \"No proposal chosen\"");
            return fail(NotifyType::NoProposalChosen, Vec::new());
        };
        if suite.dh != g {
            return fail(
                NotifyType::InvalidKePayload,
                suite.dh.to_be_bytes().to_vec(),
            );
        }
        let peer_spi = props
            .iter()
            .find(|x| x.number == number)
            .and_then(|x| <[u8; 8]>::try_from(&x.spi[..]).ok())
            .map(u64::from_be_bytes);
        let Some(peer_spi) = peer_spi else {
            return fail(NotifyType::InvalidSyntax, Vec::new());
        };
        let Some((dh, g_ir)) = DhPrivate::generate(g, rng).ok().and_then(|d| {
            let s = d.agree(ke).ok()?;
            Some((d, s))
        }) else {
            return fail(NotifyType::InvalidSyntax, Vec::new());
        };
        let nr = random_bytes(rng, NONCE_LEN);
        let our_spi = random_u64(rng);
        let State::Established(e) = &mut self.state else {
            return fail(NotifyType::TemporaryFailure, Vec::new());
        };
        let seed = skeyseed_rekey(e.keys.suite.prf, &e.keys.sk_d, &g_ir, ni, &nr);
        let k = derive_ike_keys(&suite, &seed, ni, &nr, peer_spi, our_spi);
        // Our own rekey of this IKE SA is under way: a collision.
        let colliding = e.ike_rekey.is_some();
        let their_min = ni.clone().min(nr.clone());
        let children = if colliding {
            Vec::new()
        } else {
            std::mem::take(&mut e.children)
        };
        let mut prop = ike_response(number, &suite);
        prop.spi = our_spi.to_be_bytes().to_vec();
        let n = self.rekeyed(
            now,
            rng,
            false,
            peer_spi,
            our_spi,
            SaKeys::new(suite, k, false),
            children,
        );
        if colliding {
            if let State::Established(e) = &mut self.state
                && let Some(rk) = &mut e.ike_rekey
            {
                rk.collision = Some((their_min, Box::new(n)));
            }
        } else {
            self.spawned.push(n);
        }
        vec![
            Payload::Sa(vec![prop]),
            Payload::Nonce(nr),
            Payload::Ke {
                group: dh.group(),
                data: dh.public().to_vec(),
            },
        ]
    }
}

fn check_ts_response(
    cfg: &IkeConfig,
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
) -> Option<TsNarrowed> {
    (within(tsi, &cfg.local_ts) && within(tsr, &cfg.remote_ts)).then_some(TsNarrowed(()))
}

/// Verifies the peer's PSK AUTH (RFC 7296 § 2.15). `peer_is_initiator`
/// selects SK_pi vs SK_pr; `real_message` is the peer's IKE_SA_INIT
/// message and `our_nonce` our nonce.
fn verify_psk(
    keys: &SaKeys,
    cfg: &IkeConfig,
    real_message: &[u8],
    our_nonce: &[u8],
    peer_is_initiator: bool,
    peer_id: &Identification,
    auth: &[u8],
) -> Option<AuthVerified> {
    if let Some(want) = &cfg.remote_id
        && want != peer_id
    {
        return None;
    }
    let sk_p = if peer_is_initiator {
        &keys.sk_pi
    } else {
        &keys.sk_pr
    };
    let expect = psk_auth(
        keys.suite.prf,
        &cfg.psk,
        real_message,
        our_nonce,
        sk_p,
        &peer_id.body(),
    );
    ct_eq(&expect, auth).then_some(AuthVerified(()))
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
