//! The endpoint: demultiplexes datagrams to sessions by source address,
//! authenticates every control packet with tls-crypt before it reaches
//! (or creates) any state, owns the address pool and counts every drop.
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

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::data::DataDrop;
use super::push::AddressPool;
use super::session::{CloseReason, Event, Session, SessionConfig, SessionDrop};
use super::tls_crypt::UnwrapError;
use super::wire::{ControlBody, MAX_PEER_ID, Opcode, SessionId, split_first_byte};
use crate::ike::Rng;

/// How long a closed session lingers to deliver its last packets (the TLS
/// alert that tells a refused client why).
pub const CLOSE_LINGER: Duration = Duration::from_secs(3);
/// Hard resets remembered to refuse their replay from another address.
pub const RECENT_RESETS: usize = 4096;
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
    /// tls-crypt packet id seen before (in the session, or a hard reset
    /// that already started one, replayed from elsewhere).
    Replay,
    /// A control packet from an address without a session that does not
    /// start one.
    UnknownSession,
    /// Session ids that do not match the session at that address.
    WrongSession,
    /// Message id beyond the receive window.
    OutOfWindow,
    /// Opcodes we do not serve (key method 1, tls-crypt-v2, renegotiation).
    Unsupported,
    /// The session table is full.
    SessionLimit,
    /// A data packet from an address without an established session.
    DataNoSession,
    /// A data packet a session refused (see `data_drops` for why).
    DataRejected,
}

impl DropReason {
    /// Number of variants.
    pub const COUNT: usize = 10;
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
    /// (session id, tls-crypt packet id) of the hard resets that started
    /// sessions, oldest first: a captured reset replayed from a spoofed
    /// address must not start another session.
    recent_resets: VecDeque<(SessionId, u32)>,
    recent_reset_set: HashSet<(SessionId, u32)>,
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
            recent_resets: VecDeque::new(),
            recent_reset_set: HashSet::new(),
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
        match s.handle_data(now, &mut self.scratch) {
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
        // 2. A client (re)starting: a hard reset, key id 0, message 0.
        let is_reset = op == Opcode::HardResetClientV2;
        if matches!(
            op,
            Opcode::HardResetClientV1
                | Opcode::HardResetClientV3
                | Opcode::ControlWkcV1
                | Opcode::SoftResetV1
        ) {
            self.counters.count(DropReason::Unsupported);
            return;
        }
        let existing = self.sessions.get(&src).map(Session::remote_sid);
        if is_reset && existing != Some(header.session_id) {
            if header.key_id != 0 || body.message_id != Some(0) {
                self.counters.count(DropReason::Malformed);
                return;
            }
            let seen = (header.session_id, header.packet_id);
            if self.recent_reset_set.contains(&seen) {
                self.counters.count(DropReason::Replay);
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
            match Session::new(&self.cfg.session, now, rng, src, peer_id, &header) {
                Ok(s) => {
                    self.sessions.insert(src, s);
                    self.counters.sessions_created += 1;
                    if self.recent_resets.len() == RECENT_RESETS
                        && let Some(old) = self.recent_resets.pop_front()
                    {
                        self.recent_reset_set.remove(&old);
                    }
                    self.recent_resets.push_back(seen);
                    self.recent_reset_set.insert(seen);
                }
                Err(_) => self.counters.count(DropReason::SessionLimit),
            }
            return;
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
            });
        }
        self.collect_events(now, src);
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
                Event::Closed(_) => {
                    self.closed_at.entry(src).or_insert(now);
                }
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

    /// Closes a client's session (e.g. revoked by the operator).
    pub fn close(&mut self, now: Instant, peer: SocketAddr) {
        self.end_session(now, peer, CloseReason::Local);
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
