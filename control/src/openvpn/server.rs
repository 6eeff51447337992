//! The endpoint: demultiplexes datagrams to sessions by source address,
//! authenticates every control packet with tls-crypt before it reaches
//! (or creates) any state, owns the address pool and counts every drop.
//!
//! A new client costs no state until it proves its address: its hard
//! reset is answered statelessly with a cookie as our session id
//! ([`super::cookie`]), and only the packet echoing that cookie from the
//! same address creates the session (OpenVPN 2.6's three-way handshake).
//!
//! Call order (quinn `Connection` style, time passed in):
//!
//! ```text
//! loop {
//!     socket readable  -> server.handle_datagram(now, rng, src, bytes)
//!     timer fired      -> server.handle_timeout(now)
//!     while let Some(t) = server.poll_transmit(now) { socket.send_to(t.payload, t.dst) }
//!     while let Some((peer, ev)) = server.poll_event() { ... }
//!     sleep until server.poll_timeout()
//! }
//! ```
//!
//! Tunnel packets for a client go in with [`Server::send_packet`]; the
//! client's arrive as [`Event::Packet`]. Over TCP the caller frames each
//! datagram with [`super::wire::tcp_frame`] and deframes the stream with
//! [`super::wire::TcpDeframer`].

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;

use super::cookie::CookieKey;
use super::data::DataDrop;
use super::push::AddressPool;
use super::session::{CloseReason, Event, Session, SessionConfig, SessionDrop};
use super::tls_crypt::UnwrapError;
use super::wire::{ControlBody, ControlHeader, MAX_PEER_ID, Opcode, split_first_byte};
use crate::ike::Rng;

/// How long a closed session lingers to deliver its last packets (the TLS
/// alert that tells a refused client why).
pub const CLOSE_LINGER: Duration = Duration::from_secs(3);
/// Stateless cookie replies queued for sending; beyond this a reset is
/// dropped ([`DropReason::CookieQueueFull`]) and the client retries.
pub const MAX_COOKIE_REPLIES: usize = 1024;
/// Largest datagram handled; longer ones are dropped as malformed.
pub const MAX_DATAGRAM: usize = 2048;

/// Why a received packet was dropped, one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum DropReason {
    /// Too short, unknown opcode, bad ack array, oversized.
    Malformed = 0,
    /// tls-crypt tag did not verify (forged, corrupted, wrong key).
    Unauthenticated,
    /// tls-crypt packet id seen before in the session.
    Replay,
    /// A control packet from an address without a session that neither
    /// starts one (a hard reset) nor echoes a cookie.
    UnknownSession,
    /// Session ids that do not match the session at that address.
    WrongSession,
    /// Message id beyond the receive window.
    OutOfWindow,
    /// Opcodes we do not serve (key method 1, tls-crypt-v2).
    Unsupported,
    /// The session table is full.
    SessionLimit,
    /// A data packet from an address without an established session.
    DataNoSession,
    /// A data packet a session refused (see `data_drops` for why).
    DataRejected,
    /// A control packet under a key id other than the session's current
    /// one (stale, or a soft reset out of sequence).
    WrongKeyId,
    /// A packet that would complete the three-way handshake with a
    /// session id that is not our cookie for its address (expired,
    /// replayed from elsewhere, forged), or acking ids beyond it.
    BadCookie,
    /// Too many cookie replies waiting to be sent.
    CookieQueueFull,
}

impl DropReason {
    /// Number of variants.
    pub const COUNT: usize = 13;
}

/// Drop counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// By [`DropReason`].
    pub drops: [u64; DropReason::COUNT],
    /// Data-channel drops by [`DataDrop`].
    pub data_drops: [u64; DataDrop::COUNT],
    /// Sessions created.
    pub sessions_created: u64,
    /// Sessions established (pushed).
    pub sessions_established: u64,
    /// Data packets decrypted.
    pub data_rx: u64,
    /// Data packets sealed.
    pub data_tx: u64,
    /// Data-key renegotiations completed (either side started them).
    pub renegotiations: u64,
    /// Hard resets answered with a stateless cookie.
    pub cookies_sent: u64,
    /// Handshakes refused because the CRL lists the client's certificate.
    pub revoked_refused: u64,
    /// Connected clients closed because a reloaded CRL lists them.
    pub revoked_disconnected: u64,
}

impl Counters {
    /// The count for one reason.
    #[must_use]
    pub fn drop(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
    fn count(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }
}

/// The endpoint's settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Per-session settings.
    pub session: SessionConfig,
    /// Most concurrent sessions (handshaking or up).
    pub max_sessions: usize,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// Where to.
    pub dst: SocketAddr,
    /// The bytes.
    pub payload: Vec<u8>,
}

/// Errors of [`Server::send_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No established client has that tunnel address.
    #[error("no client at {0}")]
    NoClient(Ipv4Addr),
    /// The data channel refused it.
    #[error("data channel: {0}")]
    Data(DataDrop),
}

/// The remote-access endpoint (one UDP socket, or one TCP listener's
/// connections).
#[derive(Debug)]
pub struct Server {
    cfg: ServerConfig,
    sessions: HashMap<SocketAddr, Session>,
    closed_at: HashMap<SocketAddr, Instant>,
    by_address: HashMap<Ipv4Addr, SocketAddr>,
    pool: AddressPool,
    next_peer_id: u32,
    events: VecDeque<(SocketAddr, Event)>,
    counters: Counters,
    scratch: Vec<u8>,
    /// The cookie secret, drawn on the first packet (no rng before).
    cookie_key: Option<CookieKey>,
    /// Cookie time slots count from the first packet.
    epoch: Option<Instant>,
    /// Stateless replies (cookie resets) waiting to go out.
    replies: VecDeque<Transmit>,
}

impl Server {
    /// An endpoint with no sessions.
    #[must_use]
    pub fn new(cfg: ServerConfig) -> Self {
        let pool = AddressPool::new(cfg.session.push.pool);
        Self {
            cfg,
            sessions: HashMap::new(),
            closed_at: HashMap::new(),
            by_address: HashMap::new(),
            pool,
            next_peer_id: 0,
            events: VecDeque::new(),
            counters: Counters::default(),
            scratch: Vec::with_capacity(MAX_DATAGRAM),
            cookie_key: None,
            epoch: None,
            replies: VecDeque::new(),
        }
    }

    /// The counters.
    #[must_use]
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Sessions in the table (any phase).
    #[must_use]
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Control-channel retransmissions over the current sessions.
    #[must_use]
    pub fn retransmits(&self) -> u64 {
        self.sessions.values().map(Session::retransmits).sum()
    }

    fn take_peer_id(&mut self) -> u32 {
        // Skip ids still held by a session (wrapping after 2^24 sessions).
        loop {
            let id = self.next_peer_id;
            self.next_peer_id = if id >= MAX_PEER_ID { 0 } else { id + 1 };
            if !self.sessions.values().any(|s| s.peer_id() == id) {
                return id;
            }
        }
    }

    /// One datagram from `src`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        src: SocketAddr,
        bytes: &[u8],
    ) {
        let Some(&b0) = bytes.first() else {
            self.counters.count(DropReason::Malformed);
            return;
        };
        if bytes.len() > MAX_DATAGRAM {
            self.counters.count(DropReason::Malformed);
            return;
        }
        let (op, _) = split_first_byte(b0);
        if op.is_data() {
            self.handle_data(now, src, bytes);
        } else if op.is_control() {
            self.handle_control(now, rng, src, op, bytes);
        } else {
            self.counters.count(DropReason::Malformed);
        }
    }

    fn handle_data(&mut self, now: Instant, src: SocketAddr, bytes: &[u8]) {
        let Some(s) = self.sessions.get_mut(&src) else {
            self.counters.count(DropReason::DataNoSession);
            return;
        };
        self.scratch.clear();
        self.scratch.extend_from_slice(bytes);
        match s.handle_data(&self.cfg.session, now, &mut self.scratch) {
            Ok(()) => self.counters.data_rx += 1,
            Err(d) => {
                self.counters.count(DropReason::DataRejected);
                self.counters.data_drops[d.index()] += 1;
            }
        }
        self.collect_events(now, src);
    }

    fn handle_control(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        src: SocketAddr,
        op: Opcode,
        bytes: &[u8],
    ) {
        // 1. Authenticate before anything else: forged packets cost one
        //    AES-CTR pass and one HMAC, never state.
        let (header, plain) = match self.cfg.session.tls_crypt.unwrap(bytes) {
            Ok(x) => x,
            Err(UnwrapError::Malformed(_)) => {
                self.counters.count(DropReason::Malformed);
                return;
            }
            Err(UnwrapError::BadTag) => {
                self.counters.count(DropReason::Unauthenticated);
                return;
            }
        };
        let Ok(body) = ControlBody::parse(op, &plain) else {
            self.counters.count(DropReason::Malformed);
            return;
        };
        if matches!(
            op,
            Opcode::HardResetClientV1 | Opcode::HardResetClientV3 | Opcode::ControlWkcV1
        ) {
            self.counters.count(DropReason::Unsupported);
            return;
        }
        // 2. No session for this address and client session id: answer a
        //    hard reset with a cookie, start a session only for a packet
        //    that echoes one (the three-way handshake), keep nothing else.
        let existing = self.sessions.get(&src).map(Session::remote_sid);
        if existing != Some(header.session_id) {
            if op == Opcode::HardResetClientV2 {
                self.send_cookie(now, rng, src, &header, &body);
                return;
            }
            let echoed = body
                .remote_session_id
                .filter(|_| matches!(op, Opcode::ControlV1 | Opcode::AckV1) && header.key_id == 0);
            let Some(echoed) = echoed else {
                self.counters.count(if existing.is_some() {
                    DropReason::WrongSession
                } else {
                    DropReason::UnknownSession
                });
                return;
            };
            // Only our reset (id 0) may be acked and only the client's
            // first message after its reset (id 1) may ride along.
            let slot = self.slot(now);
            if body.acks.iter().any(|&a| a > 1)
                || body.message_id.is_some_and(|m| m > 1)
                || !self
                    .cookie_key(rng)
                    .verify(slot, src, header.session_id, echoed)
            {
                self.counters.count(DropReason::BadCookie);
                return;
            }
            if existing.is_some() {
                self.end_session(now, src, CloseReason::Replaced);
                self.remove(src);
            }
            if self.sessions.len() >= self.cfg.max_sessions {
                self.counters.count(DropReason::SessionLimit);
                return;
            }
            let peer_id = self.take_peer_id();
            match Session::accept(&self.cfg.session, now, src, peer_id, echoed, &header) {
                Ok(s) => {
                    self.sessions.insert(src, s);
                    self.counters.sessions_created += 1;
                }
                Err(_) => {
                    self.counters.count(DropReason::SessionLimit);
                    return;
                }
            }
        }
        // 3. Everything else belongs to the session at that address.
        let Some(s) = self.sessions.get_mut(&src) else {
            self.counters.count(DropReason::UnknownSession);
            return;
        };
        if let Err(d) =
            s.handle_control(&self.cfg.session, &mut self.pool, rng, now, &header, &body)
        {
            self.counters.count(match d {
                SessionDrop::Replay => DropReason::Replay,
                SessionDrop::WrongSession => DropReason::WrongSession,
                SessionDrop::OutOfWindow => DropReason::OutOfWindow,
                SessionDrop::Unsupported => DropReason::Unsupported,
                SessionDrop::KeyId => DropReason::WrongKeyId,
            });
        }
        self.collect_events(now, src);
    }

    /// The cookie time slot of `now`: half a handshake window each.
    fn slot(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        let half = (self.cfg.session.handshake_timeout.as_secs() / 2).max(1);
        now.saturating_duration_since(epoch).as_secs() / half
    }

    fn cookie_key(&mut self, rng: &mut dyn Rng) -> &CookieKey {
        self.cookie_key.get_or_insert_with(|| {
            let mut secret = zeroize::Zeroizing::new([0u8; 32]);
            rng.fill(&mut secret[..]);
            CookieKey::new(&secret)
        })
    }

    /// Answers a hard reset with our reset whose session id is the
    /// cookie (acking the client's message 0, itself message 0), keeping
    /// no state.
    fn send_cookie(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        src: SocketAddr,
        header: &ControlHeader,
        body: &ControlBody<'_>,
    ) {
        if header.key_id != 0 || body.message_id != Some(0) {
            self.counters.count(DropReason::Malformed);
            return;
        }
        if self.replies.len() >= MAX_COOKIE_REPLIES {
            self.counters.count(DropReason::CookieQueueFull);
            return;
        }
        let slot = self.slot(now);
        let cookie = self.cookie_key(rng).cookie(slot, src, header.session_id);
        let mut acks = ArrayVec::new();
        acks.push(0);
        let reply = ControlBody {
            remote_session_id: Some(header.session_id),
            acks,
            message_id: Some(0),
            payload: &[],
        };
        let mut plain = Vec::with_capacity(reply.buffer_len());
        reply.emit(&mut plain);
        let payload = self.cfg.session.tls_crypt.wrap(
            &ControlHeader {
                opcode: Opcode::HardResetServerV2,
                key_id: 0,
                session_id: cookie,
                packet_id: super::session::COOKIE_PACKET_ID,
                net_time: self.cfg.session.net_time,
            },
            &plain,
        );
        self.replies.push_back(Transmit { dst: src, payload });
        self.counters.cookies_sent += 1;
    }

    fn collect_events(&mut self, now: Instant, src: SocketAddr) {
        let Some(s) = self.sessions.get_mut(&src) else {
            return;
        };
        while let Some(ev) = s.poll_event() {
            match &ev {
                Event::Established { address, .. } => {
                    self.by_address.insert(*address, src);
                    self.counters.sessions_established += 1;
                }
                Event::Closed(r) => {
                    self.closed_at.entry(src).or_insert(now);
                    match r {
                        CloseReason::CertificateRevoked => self.counters.revoked_refused += 1,
                        CloseReason::RevokedOnReload => self.counters.revoked_disconnected += 1,
                        _ => {}
                    }
                }
                Event::Renegotiated { .. } => self.counters.renegotiations += 1,
                Event::Packet(_) => {}
            }
            self.events.push_back((src, ev));
        }
    }

    fn end_session(&mut self, now: Instant, src: SocketAddr, reason: CloseReason) {
        if let Some(s) = self.sessions.get_mut(&src) {
            s.close(reason);
        }
        self.collect_events(now, src);
    }

    fn remove(&mut self, src: SocketAddr) {
        if let Some(a) = self.sessions.remove(&src).and_then(|s| s.address()) {
            self.pool.release(a);
            self.by_address.remove(&a);
        }
        self.closed_at.remove(&src);
    }

    /// Closes a client's session (the operator's terminate); a connected
    /// client is told `HALT` first.
    pub fn close(&mut self, now: Instant, peer: SocketAddr) {
        self.end_session(now, peer, CloseReason::Local);
    }

    /// Replaces the TLS configuration (a new CRL, a renewed server
    /// certificate): new handshakes and renegotiations use it, sessions
    /// keep running, except those whose certificate `crl` revokes, which
    /// are told `HALT` and closed. Returns how many were.
    pub fn reload_tls(
        &mut self,
        now: Instant,
        tls: std::sync::Arc<rustls::ServerConfig>,
        crl: Option<&super::tls::Crl>,
    ) -> usize {
        self.cfg.session.tls = tls;
        let Some(crl) = crl else {
            return 0;
        };
        let revoked: Vec<SocketAddr> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.is_closed() && s.certificate().is_some_and(|c| crl.revokes(c)))
            .map(|(a, _)| *a)
            .collect();
        for &p in &revoked {
            self.end_session(now, p, CloseReason::RevokedOnReload);
        }
        revoked.len()
    }

    /// Closes every session for shutdown, telling connected clients
    /// `RESTART`; keep calling [`Self::poll_transmit`] (and
    /// [`Self::handle_datagram`] for their acks) for a moment after.
    pub fn shutdown(&mut self, now: Instant) {
        let peers: Vec<SocketAddr> = self.sessions.keys().copied().collect();
        for p in peers {
            self.end_session(now, p, CloseReason::Shutdown);
        }
    }

    /// Timers of every session; removes sessions that ended.
    pub fn handle_timeout(&mut self, now: Instant) {
        let peers: Vec<SocketAddr> = self.sessions.keys().copied().collect();
        for p in peers {
            if let Some(s) = self.sessions.get_mut(&p) {
                s.handle_timeout(&self.cfg.session, now);
            }
            self.collect_events(now, p);
            // Closed: keep it a moment so its last packets (a TLS alert)
            // go out and are acked, then drop it.
            let done = self.sessions.get(&p).is_some_and(|s| {
                s.is_closed()
                    && self
                        .closed_at
                        .get(&p)
                        .is_none_or(|&t| now >= t + CLOSE_LINGER || s.idle())
            });
            if done {
                self.remove(p);
            }
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if let Some(t) = self.replies.pop_front() {
            return Some(t);
        }
        for (dst, s) in &mut self.sessions {
            if let Some(payload) = s.poll_transmit(&self.cfg.session, now) {
                if payload
                    .first()
                    .is_some_and(|&b| split_first_byte(b).0.is_data())
                {
                    self.counters.data_tx += 1;
                }
                return Some(Transmit { dst: *dst, payload });
            }
        }
        None
    }

    /// When [`Self::handle_timeout`] should next run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|s| s.poll_timeout(&self.cfg.session))
            .min()
    }

    /// The next event, with the client's transport address.
    pub fn poll_event(&mut self) -> Option<(SocketAddr, Event)> {
        self.events.pop_front()
    }

    /// Sends a tunnel packet to the client holding tunnel address `to`.
    ///
    /// # Errors
    /// [`SendError::NoClient`], [`SendError::Data`].
    pub fn send_packet(
        &mut self,
        now: Instant,
        to: Ipv4Addr,
        packet: &[u8],
    ) -> Result<(), SendError> {
        let peer = *self.by_address.get(&to).ok_or(SendError::NoClient(to))?;
        let s = self
            .sessions
            .get_mut(&peer)
            .ok_or(SendError::NoClient(to))?;
        s.send_data(now, packet).map_err(SendError::Data)
    }
}
