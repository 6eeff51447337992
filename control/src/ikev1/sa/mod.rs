//! One ISAKMP SA (IKEv1 phase 1) and the IPsec SAs negotiated over it
//! (phase 2), sans-IO (conventions 4–6), in the same shape as the IKEv2
//! [`IkeSa`](crate::ike::sa::IkeSa).
//!
//! # Call order
//!
//! ```text
//! let mut sa = Ikev1Sa::initiate(cfg, now, &mut rng)?;   // or Ikev1Sa::accept(...) on Main Mode message 1
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
//! 4-byte non-ESP marker ([RFC 3948 § 2.2]); [`Ikev1Sa`] strips and adds
//! it.
//!
//! Main Mode ([RFC 2409 § 5], pre-shared key) is a typestate:
//! [`ExpectMm2`] → [`ExpectMm4`] → [`ExpectMm6`] for the initiator,
//! [`ExpectMm3`] → [`ExpectMm5`] for the responder, each holding only the
//! values valid there; then `Established`. Quick Modes run on an
//! established SA, each keyed by its message ID with its own IV chain
//! (RFC 2409 Appendix B). An IPsec SA is reported up only with the proof
//! token [`HashVerified`], which only the hash checks make.
//!
//! | file | owns |
//! |---|---|
//! | `main_mode` | Main Mode both roles, NAT-D and the float to 4500, phase 1 protection |
//! | `quick_mode` | Quick Mode both roles, with and without PFS, ID payloads as selectors |
//! | `informational` | DELETE both ways, INITIAL-CONTACT, DPD (RFC 3706), lifetimes |
//!
//! Phase 2 SAs are rekeyed by a new Quick Mode `rekey_margin` before
//! they expire (at most half their lifetime; a margin of zero leaves it
//! to the peer); the successor's arrival retires the old SA after
//! [`REKEYED_GRACE`].
//!
//! Not done: Aggressive Mode (refused, spec § 3.2), signature
//! authentication, phase 1 rekey as initiator, IPv6
//! selectors other than subnets, commit bit (RFC 2408 § 3.1, ignored).
//!
//! [RFC 3948 § 2.2]: https://www.rfc-editor.org/rfc/rfc3948#section-2.2
//! [RFC 2409 § 5]: https://www.rfc-editor.org/rfc/rfc2409#section-5

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::ike::Rng;
use crate::ike::dh::DhPrivate;
use crate::ike::sa::{
    Datagram, DownReason, Event, IKE_PORT, IkeConfig, NAT_T_PORT, PhaseState, Transmit,
};

use super::crypto::{BLOCK, Phase1Cipher};
use super::proposal::Phase1Suite;
use super::wire::{Header, Payload, PayloadType, VERSION, emit_chain};

mod informational;
mod main_mode;
mod quick_mode;

pub use main_mode::{Refused, nat_d_hash};
pub use quick_mode::{id_of_net, net_of_id};

/// Nonce length we send (RFC 2409 § 5: 8 to 256 bytes).
const NONCE_LEN: usize = 32;
/// Vendor ID of RFC 3947 NAT-T: MD5("RFC 3947").
pub const VID_NAT_T: [u8; 16] = [
    0x4a, 0x13, 0x1c, 0x81, 0x07, 0x03, 0x58, 0x45, 0x5c, 0x57, 0x28, 0xf2, 0x0e, 0x95, 0x45, 0x2f,
];
/// Vendor ID of Dead Peer Detection ([RFC 3706 § 5.2]): 0xAFCAD713
/// 68A1F1C9 6B8696FC 7757 followed by major version 1, minor 0.
///
/// [RFC 3706 § 5.2]: https://www.rfc-editor.org/rfc/rfc3706#section-5.2
pub const VID_DPD: [u8; 16] = [
    0xaf, 0xca, 0xd7, 0x13, 0x68, 0xa1, 0xf1, 0xc9, 0x6b, 0x86, 0x96, 0xfc, 0x77, 0x57, 0x01, 0x00,
];
/// Answers remembered for retransmitted requests.
const ANSWERED_MAX: usize = 8;

/// Proof that the peer's HASH payload verified (convention 6): made only
/// by the Main Mode and Quick Mode hash checks.
#[derive(Debug)]
pub struct HashVerified(());

/// Initiator, after Main Mode message 1.
#[derive(Debug)]
pub struct ExpectMm2 {
    sa_i_b: Vec<u8>,
}

/// Responder, after Main Mode message 2.
#[derive(Debug)]
pub struct ExpectMm3 {
    sa_i_b: Vec<u8>,
    suite: Phase1Suite,
}

/// Initiator, after Main Mode message 3.
#[derive(Debug)]
pub struct ExpectMm4 {
    sa_i_b: Vec<u8>,
    suite: Phase1Suite,
    dh: DhPrivate,
    ni: Vec<u8>,
}

/// The keyed half of Main Mode (messages 5 and 6), both roles.
#[derive(Debug)]
pub struct Keyed {
    sa_i_b: Vec<u8>,
    suite: Phase1Suite,
    skeyid: Zeroizing<Vec<u8>>,
    skeyid_d: Zeroizing<Vec<u8>>,
    skeyid_a: Zeroizing<Vec<u8>>,
    cipher: Phase1Cipher,
    ke_i: Vec<u8>,
    ke_r: Vec<u8>,
    /// The phase 1 IV chain: the last ciphertext block so far.
    iv: [u8; BLOCK],
}

/// Responder, after Main Mode message 4.
#[derive(Debug)]
pub struct ExpectMm5(Keyed);

/// Initiator, after Main Mode message 5.
#[derive(Debug)]
pub struct ExpectMm6(Keyed);

/// An IPsec SA an ISAKMP SA holds (for DELETE, expiry and adoption).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldSa {
    /// Our SPI.
    pub inbound_spi: u32,
    /// The peer's SPI.
    pub outbound_spi: u32,
    /// Its hard lifetime ends then.
    pub expire_at: Instant,
    /// We start a Quick Mode for its successor then (None: not ours to
    /// rekey, or started).
    pub rekey_at: Option<Instant>,
    /// A successor is being negotiated: once it is up, this SA is
    /// deleted after [`REKEYED_GRACE`].
    pub rekeying: bool,
    /// Its PFS group (None: without PFS), which its successor offers: a
    /// Quick Mode carries one KE payload, and the peer accepted this one.
    pub pfs: Option<u16>,
}

/// A rekeyed IPsec SA is deleted this long after its successor is up
/// (packets the peer sent with it before switching still arrive).
pub const REKEYED_GRACE: Duration = Duration::from_secs(5);

/// After our rekey's Quick Mode message 3, we keep sending with the old
/// IPsec SA this long: the peer installs the successor only when message
/// 3 arrives (RFC 2409 § 5.5 has no acknowledgement of it), and a packet
/// with the new SPI before that would be dropped.
pub const OUTBOUND_SWITCH_DELAY: Duration = Duration::from_secs(1);

/// A Quick Mode in progress.
#[derive(Debug)]
struct Quick {
    mid: u32,
    /// The exchange's IV chain.
    iv: [u8; BLOCK],
    role: quick_mode::QmRole,
}

/// A DPD probe in flight (RFC 3706 § 5.5).
#[derive(Debug)]
struct DpdProbe {
    seq: u32,
    datagram: Vec<u8>,
    resend_at: Instant,
    dead_at: Instant,
}

/// Both roles, after Main Mode.
#[derive(Debug)]
pub struct Established {
    suite: Phase1Suite,
    skeyid_d: Zeroizing<Vec<u8>>,
    skeyid_a: Zeroizing<Vec<u8>>,
    cipher: Phase1Cipher,
    /// The last CBC block of phase 1: the base of every phase 2 and
    /// Informational IV.
    p1_last: [u8; BLOCK],
    expire_at: Instant,
    last_heard: Instant,
    quick: Vec<Quick>,
    children: Vec<HeldSa>,
    /// Successors of our rekeys whose outbound SA is not used yet: when,
    /// and (our SPI, the peer's SPI).
    switches: Vec<(Instant, u32, u32)>,
    dpd: Option<DpdProbe>,
    dpd_seq: u32,
    /// Message IDs of the peer's exchanges already handled (bounded):
    /// a replayed Informational or Quick Mode message 1 is dropped.
    seen_mids: VecDeque<u32>,
}

/// Message IDs remembered against replay.
const SEEN_MIDS_MAX: usize = 256;

impl Established {
    /// Records a Message ID; false when it was seen before (a replay,
    /// RFC 2408 § 3.1: Message IDs are unique per exchange).
    fn fresh_mid(&mut self, mid: u32) -> bool {
        if self.seen_mids.contains(&mid) {
            return false;
        }
        if self.seen_mids.len() == SEEN_MIDS_MAX {
            self.seen_mids.pop_front();
        }
        self.seen_mids.push_back(mid);
        true
    }
}

#[derive(Debug)]
enum State {
    Mm2(ExpectMm2),
    Mm3(ExpectMm3),
    Mm4(ExpectMm4),
    Mm5(ExpectMm5),
    Mm6(ExpectMm6),
    Established(Box<Established>),
    Closed,
}

/// Our last message awaiting an answer, retransmitted with backoff.
#[derive(Debug)]
struct Resend {
    payload: Vec<u8>,
    at: Instant,
    interval: Duration,
    left: u32,
    /// The Quick Mode it belongs to (None: Main Mode).
    mid: Option<u32>,
}

/// One ISAKMP SA (see the module docs for the call order).
#[derive(Debug)]
pub struct Ikev1Sa {
    cfg: IkeConfig,
    initiator: bool,
    cky_i: u64,
    cky_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
    /// The peer sent the RFC 3947 vendor ID.
    peer_nat_t: bool,
    /// The peer sent the DPD vendor ID.
    peer_dpd: bool,
    nat_detected: bool,
    initial_contact: bool,
    state: State,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Digests of requests we answered, with the answer.
    answered: VecDeque<(Vec<u8>, Vec<u8>)>,
    resend: Option<Resend>,
    /// Main Mode must complete by then.
    half_open_until: Instant,
    /// [`Event::IkeSaDown`] was reported.
    down_reported: bool,
    /// IPsec SAs that outlive this ISAKMP SA (the peer deleted it, RFC
    /// 2409 keeps phase 2 SAs independent of phase 1), for
    /// [`Self::take_orphans`].
    orphans: Vec<HeldSa>,
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

fn random_u32(rng: &mut dyn Rng, above: u32) -> u32 {
    loop {
        let mut b = [0u8; 4];
        rng.fill(&mut b);
        let v = u32::from_be_bytes(b);
        if v > above {
            return v;
        }
    }
}

fn random_bytes(rng: &mut dyn Rng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill(&mut v);
    v
}

fn digest(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

/// The ISAKMP message inside a datagram: without the non-ESP marker on
/// port 4500; `None` for ESP or a NAT-T keepalive there.
#[must_use]
pub fn strip_marker(d: Datagram<'_>) -> Option<&[u8]> {
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

/// `HASH | rest` as a payload chain whose HASH covers `rest`: emits
/// `rest`, computes the hash over it with `f`, and prepends the HASH
/// payload. Returns the bytes (first payload: HASH).
fn hashed_chain(rest: &[Payload], f: impl FnOnce(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let mut tail = Vec::new();
    let first = emit_chain(rest, &mut tail);
    let h = f(&tail);
    let mut out = Vec::with_capacity(4 + h.len() + tail.len());
    out.push(first.into());
    out.push(0);
    out.extend_from_slice(&u16::try_from(4 + h.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&tail);
    out
}

impl Ikev1Sa {
    fn blank(cfg: IkeConfig, initiator: bool, now: Instant, state: State) -> Self {
        let local = SocketAddr::new(cfg.local, IKE_PORT);
        let remote = SocketAddr::new(cfg.remote, IKE_PORT);
        let half_open_until = now + cfg.half_open_timeout;
        Self {
            cfg,
            initiator,
            cky_i: 0,
            cky_r: 0,
            local,
            remote,
            peer_nat_t: false,
            peer_dpd: false,
            nat_detected: false,
            initial_contact: false,
            state,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            answered: VecDeque::new(),
            resend: None,
            half_open_until,
            down_reported: false,
            orphans: Vec::new(),
        }
    }

    /// Initiator cookie.
    #[must_use]
    pub fn cky_i(&self) -> u64 {
        self.cky_i
    }
    /// Responder cookie.
    #[must_use]
    pub fn cky_r(&self) -> u64 {
        self.cky_r
    }
    /// The peer's address and port (after a float: its NAT-T port).
    #[must_use]
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }
    /// Whether we initiated Main Mode.
    #[must_use]
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }
    /// Whether Main Mode completed and the SA is not closed.
    #[must_use]
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }
    /// Whether the SA is gone (its [`Event::IkeSaDown`] was reported).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }
    /// Whether the peer's Main Mode carried INITIAL-CONTACT (RFC 2407
    /// § 4.6.3.3): its other SAs with us are stale.
    #[must_use]
    pub fn initial_contact(&self) -> bool {
        self.initial_contact
    }
    /// Whether NAT was detected (ESP in UDP 4500).
    #[must_use]
    pub fn nat_detected(&self) -> bool {
        self.nat_detected
    }

    /// Phase 1 as `show tunnels` reports it (spec § 20.3): Main Mode in
    /// progress is `Negotiating`.
    #[must_use]
    pub fn phase1_state(&self) -> PhaseState {
        match self.state {
            State::Established(_) => PhaseState::Established,
            State::Closed => PhaseState::Down,
            _ => PhaseState::Negotiating,
        }
    }

    /// Phase 2: `Established` while the SA holds an IPsec SA, `Rekeying`
    /// when it holds one and a Quick Mode runs, `Negotiating` when only a
    /// Quick Mode runs.
    #[must_use]
    pub fn phase2_state(&self) -> PhaseState {
        match &self.state {
            State::Established(e) => match (e.children.is_empty(), e.quick.is_empty()) {
                (false, true) => PhaseState::Established,
                (false, false) => PhaseState::Rekeying,
                (true, false) => PhaseState::Negotiating,
                (true, true) => PhaseState::Down,
            },
            State::Closed => PhaseState::Down,
            _ => PhaseState::Negotiating,
        }
    }

    /// A responder SA whose Main Mode has not completed (half-open).
    #[must_use]
    pub fn is_half_open(&self) -> bool {
        !self.initiator && !matches!(self.state, State::Established(_) | State::Closed)
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn log(&mut self, s: impl Into<String>) {
        self.events.push_back(Event::Log(s.into()));
    }

    fn header(&self, exchange: super::wire::ExchangeType, flags: u8, mid: u32) -> Header {
        Header {
            cky_i: self.cky_i,
            cky_r: self.cky_r,
            next: PayloadType::None,
            version: VERSION,
            exchange,
            flags,
            message_id: mid,
            length: 0,
        }
    }

    /// Queues `bytes` (an ISAKMP message) to the peer.
    fn send(&mut self, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit {
            local: self.local,
            remote: self.remote,
            payload: add_marker(self.local, bytes),
        });
    }

    /// Sends `bytes` and retransmits them until [`Self::answered_by_peer`].
    fn send_expecting(&mut self, now: Instant, bytes: Vec<u8>, mid: Option<u32>) {
        self.resend = Some(Resend {
            payload: bytes.clone(),
            at: now + self.cfg.retransmit.base,
            interval: self.cfg.retransmit.base,
            left: self.cfg.retransmit.tries,
            mid,
        });
        self.send(bytes);
    }

    /// The message we were retransmitting was answered.
    fn answered_by_peer(&mut self, mid: Option<u32>) {
        if self.resend.as_ref().is_some_and(|r| r.mid == mid) {
            self.resend = None;
        }
    }

    /// Remembers our answer to a request, for its retransmissions.
    fn remember(&mut self, request: &[u8], answer: &[u8]) {
        if self.answered.len() == ANSWERED_MAX {
            self.answered.pop_front();
        }
        self.answered.push_back((digest(request), answer.to_vec()));
    }

    /// Closes the SA: every IPsec SA down, then the ISAKMP SA.
    fn down(&mut self, reason: DownReason) {
        if let State::Established(est) = &mut self.state {
            let children = std::mem::take(&mut est.children);
            if matches!(reason, DownReason::DeletedByPeer | DownReason::Expired) {
                // Phase 2 SAs do not depend on the phase 1 SA that made
                // them: a peer that rekeys its ISAKMP SA (a new Main Mode)
                // deletes the old one and keeps them. The owner moves them
                // to another ISAKMP SA with the peer, or reports them down.
                self.orphans = children;
                self.state = State::Closed;
                self.resend = None;
                if !self.down_reported {
                    self.down_reported = true;
                    self.events.push_back(Event::IkeSaDown { reason });
                }
                return;
            }
            for c in children {
                self.events.push_back(Event::ChildSaDown {
                    inbound_spi: c.inbound_spi,
                    outbound_spi: c.outbound_spi,
                });
            }
        }
        self.state = State::Closed;
        self.resend = None;
        // The handlers take the state out while they work (it reads as
        // Closed then), so "already reported" is a flag of its own.
        if !self.down_reported {
            self.down_reported = true;
            self.events.push_back(Event::IkeSaDown { reason });
        }
    }

    /// The peer started over (INITIAL-CONTACT in a newer SA): drops this
    /// SA and its IPsec SAs without telling the peer, which lost them
    /// ([`DownReason::Replaced`]).
    pub fn replaced(&mut self) {
        self.down(DownReason::Replaced);
    }

    /// The IPsec SAs left when the peer deleted this ISAKMP SA or it
    /// expired ([`DownReason::DeletedByPeer`], [`DownReason::Expired`]);
    /// the caller gives them to another
    /// ISAKMP SA with [`Self::adopt`] or reports them down.
    pub fn take_orphans(&mut self) -> Vec<HeldSa> {
        std::mem::take(&mut self.orphans)
    }

    /// Takes over IPsec SAs of an older ISAKMP SA with the same peer
    /// (their DELETEs and expiry are this SA's from now on). Returns them
    /// back if this SA is not established.
    pub fn adopt(&mut self, sas: Vec<HeldSa>) -> Vec<HeldSa> {
        match &mut self.state {
            State::Established(est) => {
                est.children.extend(sas);
                Vec::new()
            }
            _ => sas,
        }
    }

    /// Handles a datagram for this SA (its cookies match, or it is Main
    /// Mode message 2 for our initiator cookie).
    pub fn handle_datagram(&mut self, now: Instant, rng: &mut dyn Rng, d: Datagram<'_>) {
        let Some(bytes) = strip_marker(d) else {
            return;
        };
        let Ok(msg) = super::wire::Message::parse(bytes) else {
            self.log("dropped a malformed ISAKMP message");
            return;
        };
        let key = digest(bytes);
        if let Some((_, answer)) = self.answered.iter().find(|(k, _)| *k == key) {
            // A retransmitted request: the same answer again (RFC 2408
            // § 5: the responder re-sends its last message).
            let answer = answer.clone();
            self.send(answer);
            return;
        }
        let h = msg.header;
        use super::wire::ExchangeType as X;
        match (h.exchange, &self.state) {
            (X::IdentityProtection, _) => self.handle_main_mode(now, rng, d, bytes, &msg),
            (X::QuickMode, State::Established(_)) => {
                self.handle_quick_mode(now, rng, d, bytes, &msg);
            }
            (X::Informational, _) => self.handle_informational(now, rng, bytes, &msg),
            (X::Aggressive, _) => {
                self.log("IKEv1 Aggressive Mode is not supported (Main Mode only); dropped");
            }
            (other, _) => {
                self.log(format!(
                    "dropped an ISAKMP message of exchange type {}",
                    u8::from(other)
                ));
            }
        }
    }

    /// When [`Self::handle_timeout`] wants to run next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |x: Instant| t = Some(t.map_or(x, |y| y.min(x)));
        if matches!(self.state, State::Closed) {
            return None;
        }
        if let Some(r) = &self.resend {
            at(r.at);
        }
        match &self.state {
            State::Established(est) => {
                at(est.expire_at);
                for (t, _, _) in &est.switches {
                    at(*t);
                }
                for c in &est.children {
                    at(c.expire_at);
                    if est.quick.is_empty()
                        && let Some(r) = c.rekey_at
                    {
                        at(r);
                    }
                }
                if let Some(p) = &est.dpd {
                    at(p.resend_at.min(p.dead_at));
                } else if self.dpd_enabled() {
                    at(est.last_heard + self.cfg.dpd_timeout);
                }
            }
            _ => at(self.half_open_until),
        }
        t
    }

    /// Runs due timers: retransmission, half-open timeout, DPD, lifetimes.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut dyn Rng) {
        if matches!(self.state, State::Closed) {
            return;
        }
        if !matches!(self.state, State::Established(_)) && now >= self.half_open_until {
            self.log(format!(
                "AWS tunnel timeout: deleting unestablished phase 1 IKE_SA with cgw: {}",
                self.remote.ip()
            ));
            self.down(DownReason::HalfOpenTimeout);
            return;
        }
        if let Some(r) = &mut self.resend
            && now >= r.at
        {
            if r.left == 0 {
                let mid = r.mid;
                self.resend = None;
                match mid {
                    None => {
                        self.log("no answer to Main Mode after every retransmission");
                        self.down(DownReason::Timeout);
                        return;
                    }
                    Some(m) => {
                        self.log("no answer to Quick Mode after every retransmission");
                        if let State::Established(est) = &mut self.state {
                            est.quick.retain(|q| q.mid != m);
                        }
                    }
                }
            } else {
                r.left -= 1;
                r.interval = r.interval.saturating_mul(2);
                r.at = now + r.interval;
                let p = r.payload.clone();
                self.send(p);
            }
        }
        self.handle_lifetimes(now, rng);
        self.handle_dpd(now, rng);
    }

    fn dpd_enabled(&self) -> bool {
        self.peer_dpd && !self.cfg.dpd_timeout.is_zero()
    }

    /// Takes the established state out (the SA reads as closed until it
    /// is put back); `None`, leaving the state alone, in any other state.
    fn take_established(&mut self) -> Option<Box<Established>> {
        if !matches!(self.state, State::Established(_)) {
            return None;
        }
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Established(e) => Some(e),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Installs an established state and reports phase 1 up.
    fn establish(&mut self, now: Instant, k: Keyed, p1_last: [u8; BLOCK]) {
        let suite = k.suite;
        self.state = State::Established(Box::new(Established {
            suite,
            skeyid_d: k.skeyid_d,
            skeyid_a: k.skeyid_a,
            cipher: k.cipher,
            p1_last,
            expire_at: now + suite.lifetime,
            last_heard: now,
            quick: Vec::new(),
            children: Vec::new(),
            switches: Vec::new(),
            dpd: None,
            dpd_seq: 0,
            seen_mids: VecDeque::new(),
        }));
        self.events.push_back(Event::IkeSaUp {
            spi_i: self.cky_i,
            spi_r: self.cky_r,
            suite: suite.as_ike_suite(),
            nat_detected: self.nat_detected,
        });
    }
}
