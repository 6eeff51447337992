//! One client's session: the reliable control channel carrying TLS, key
//! method 2, PUSH_REQUEST/PUSH_REPLY, then the data channel and
//! keepalive. Driven by [`super::server::Server`], which owns the address
//! pool and demultiplexes datagrams; nothing here reads a clock or
//! touches a socket.
//!
//! ```text
//!  client                                   server (this)
//!  HARD_RESET_CLIENT_V2 id 0  ───────────▶  new session, ack 0
//!                             ◀───────────  HARD_RESET_SERVER_V2 id 0 (+ack 0)
//!  CONTROL_V1 … TLS handshake (client certificate required) …
//!  [TLS] key method 2 (options, IV_PROTO, IV_CIPHERS)
//!                             ◀───────────  [TLS] key method 2
//!  [TLS] "PUSH_REQUEST"       ───────────▶  address from the pool, data keys by TLS-EKM
//!    (or at once when IV_PROTO has REQUEST_PUSH)
//!                             ◀───────────  [TLS] "PUSH_REPLY,…,ifconfig …,peer-id n,cipher …"
//!  P_DATA_V2 (AES-GCM) ◀──────────────────▶ P_DATA_V2, keepalive pings
//!  [TLS] "EXIT" or OCC exit   ───────────▶  closed, address released
//! ```

use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::data::{
    DataChannel, DataCipher, DataDrop, DataKeys, EKM_LABEL, EKM_LEN, PING, Payload, ReplayWindow,
    classify,
};
use super::key_method::{
    ClientKeyMethod2, IV_PROTO_CC_EXIT_NOTIFY, IV_PROTO_REQUEST_PUSH, IV_PROTO_TLS_KEY_EXPORT,
    KeyMethodError, PeerInfo, server_message, server_options,
};
use super::push::{AddressPool, PushConfig};
use super::reliable::{Received, RecvQueue, SendQueue};
use super::tls_crypt::TlsCrypt;
use super::wire::{ControlBody, ControlHeader, Opcode, SEND_ACKS, SessionId};
use crate::ike::Rng;

/// TLS bytes per control packet: well inside a 1500-byte path with the
/// 66 bytes of control header, tag and acks, and inside OpenVPN's
/// default `tls-mtu` of 1250.
pub const TLS_CHUNK: usize = 1000;
/// Plaintext buffered from the TLS session before a complete message.
pub const MAX_PLAINTEXT: usize = 16 * 1024;
/// Control messages queued for sending (the window plus the TLS flight
/// behind it); a session that needs more is broken.
pub const MAX_SEND_QUEUE: usize = 64;

/// Settings shared by every session of an endpoint.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The TLS server (certificate, client CA).
    pub tls: Arc<rustls::ServerConfig>,
    /// The tls-crypt transform (server role).
    pub tls_crypt: Arc<TlsCrypt>,
    /// What clients get pushed.
    pub push: PushConfig,
    /// The transport, for the options string.
    pub tcp: bool,
    /// Time to finish TLS and the push (OpenVPN's `hand-window`, 60 s).
    pub handshake_timeout: Duration,
    /// First retransmission timeout of control packets; doubles up to
    /// `max_retransmit`.
    pub initial_retransmit: Duration,
    /// Largest retransmission timeout.
    pub max_retransmit: Duration,
    /// The `net_time` field of our tls-crypt packet ids (wall-clock
    /// seconds when the endpoint started; fixed, as OpenVPN does).
    pub net_time: u32,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The TLS handshake failed (e.g. a client certificate from another CA).
    TlsFailed(String),
    /// Key method, cipher or push could not be agreed.
    Negotiation(String),
    /// TLS and push did not finish within the handshake window.
    HandshakeTimeout,
    /// Nothing heard from the client for twice `ping-restart`.
    PingTimeout,
    /// The client said it leaves (explicit-exit-notify).
    ClientExit,
    /// A new session from the same address replaced this one.
    Replaced,
    /// The pool has no address left.
    PoolExhausted,
    /// The endpoint closed it.
    Local,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TlsFailed(e) => write!(f, "TLS handshake failed: {e}"),
            Self::Negotiation(e) => write!(f, "negotiation failed: {e}"),
            Self::HandshakeTimeout => f.write_str("handshake timeout"),
            Self::PingTimeout => f.write_str("ping timeout"),
            Self::ClientExit => f.write_str("client exit"),
            Self::Replaced => f.write_str("replaced by a new session"),
            Self::PoolExhausted => f.write_str("client address pool exhausted"),
            Self::Local => f.write_str("closed locally"),
        }
    }
}

/// What a session reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// TLS done, client certificate verified, address pushed, data keys in place.
    Established {
        /// The client certificate's subject CN.
        common_name: String,
        /// The pushed tunnel address.
        address: Ipv4Addr,
        /// The peer-id in its data packets.
        peer_id: u32,
        /// The negotiated data cipher.
        cipher: DataCipher,
        /// `IV_VER` of the client.
        client_version: Option<String>,
    },
    /// A decrypted tunnel packet from the client.
    Packet(Vec<u8>),
    /// The session ended.
    Closed(CloseReason),
}

/// Why a received control packet was dropped inside a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionDrop {
    Replay,
    WrongSession,
    OutOfWindow,
    Unsupported,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TLS handshake and key method 2.
    Handshake,
    /// Keys exchanged, waiting for PUSH_REQUEST.
    AwaitPush,
    /// Pushed; data channel up.
    Established,
    /// Ended; the server removes it.
    Closed,
}

/// One client session.
pub(crate) struct Session {
    peer: SocketAddr,
    phase: Phase,
    local_sid: SessionId,
    remote_sid: SessionId,
    key_id: u8,
    peer_id: u32,
    tx_packet_id: u32,
    rx_time: u32,
    rx_replay: ReplayWindow,
    send: SendQueue,
    recv: RecvQueue,
    tls: rustls::ServerConnection,
    plain: Vec<u8>,
    km_done: bool,
    peer_info: PeerInfo,
    common_name: String,
    push_reply: Option<String>,
    data: Option<DataChannel>,
    address: Option<Ipv4Addr>,
    started: Instant,
    last_rx: Instant,
    last_data_tx: Instant,
    datagrams: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("phase", &self.phase)
            .field("local_sid", &self.local_sid)
            .field("remote_sid", &self.remote_sid)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session for a client's verified HARD_RESET_CLIENT_V2: queues our
    /// HARD_RESET_SERVER_V2 (message 0) and owes the ack of theirs.
    pub(crate) fn new(
        cfg: &SessionConfig,
        now: Instant,
        rng: &mut dyn Rng,
        peer: SocketAddr,
        peer_id: u32,
        header: &ControlHeader,
    ) -> Result<Self, rustls::Error> {
        let mut sid = [0u8; 8];
        rng.fill(&mut sid);
        let mut send = SendQueue::new(0, cfg.initial_retransmit, cfg.max_retransmit);
        send.push(Vec::new());
        let mut recv = RecvQueue::new(0);
        let _ = recv.handle(0, &[]);
        let _ = recv.pop();
        let mut rx_replay = ReplayWindow::default();
        rx_replay.commit(header.packet_id);
        Ok(Self {
            peer,
            phase: Phase::Handshake,
            local_sid: SessionId(sid),
            remote_sid: header.session_id,
            key_id: header.key_id,
            peer_id,
            tx_packet_id: 1,
            rx_time: header.net_time,
            rx_replay,
            send,
            recv,
            tls: rustls::ServerConnection::new(cfg.tls.clone())?,
            plain: Vec::new(),
            km_done: false,
            peer_info: PeerInfo::default(),
            common_name: String::new(),
            push_reply: None,
            data: None,
            address: None,
            started: now,
            last_rx: now,
            last_data_tx: now,
            datagrams: VecDeque::new(),
            events: VecDeque::new(),
            scratch: Vec::new(),
        })
    }

    pub(crate) fn remote_sid(&self) -> SessionId {
        self.remote_sid
    }
    pub(crate) fn address(&self) -> Option<Ipv4Addr> {
        self.address
    }
    pub(crate) fn peer_id(&self) -> u32 {
        self.peer_id
    }
    pub(crate) fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub(crate) fn close(&mut self, reason: CloseReason) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            self.events.push_back(Event::Closed(reason));
        }
    }

    /// The tls-crypt replay check (OpenVPN's long-form packet id: a later
    /// `net_time` starts a new window, an earlier one is a replay).
    fn replay_ok(&mut self, h: &ControlHeader) -> bool {
        if h.net_time > self.rx_time {
            self.rx_time = h.net_time;
            self.rx_replay = ReplayWindow::default();
        } else if h.net_time < self.rx_time {
            return false;
        }
        if !self.rx_replay.check(h.packet_id) {
            return false;
        }
        self.rx_replay.commit(h.packet_id);
        true
    }

    /// An authenticated control packet for this session.
    pub(crate) fn handle_control(
        &mut self,
        cfg: &SessionConfig,
        pool: &mut AddressPool,
        rng: &mut dyn Rng,
        now: Instant,
        h: &ControlHeader,
        body: &ControlBody<'_>,
    ) -> Result<(), SessionDrop> {
        if h.session_id != self.remote_sid
            || body.remote_session_id.is_some_and(|s| s != self.local_sid)
        {
            return Err(SessionDrop::WrongSession);
        }
        if !self.replay_ok(h) {
            return Err(SessionDrop::Replay);
        }
        self.last_rx = now;
        for &a in &body.acks {
            self.send.handle_ack(a);
        }
        let Some(id) = body.message_id else {
            return Ok(());
        };
        match h.opcode {
            Opcode::ControlV1 | Opcode::HardResetClientV2 if h.key_id == self.key_id => {}
            // Renegotiation (soft reset, new key id) is not implemented:
            // the client's reneg-sec (3600 s default) must be off or long.
            _ => return Err(SessionDrop::Unsupported),
        }
        if self.recv.handle(id, body.payload) == Received::OutOfWindow {
            return Err(SessionDrop::OutOfWindow);
        }
        while let Some(p) = self.recv.pop() {
            if self.phase == Phase::Closed {
                break;
            }
            self.tls_input(cfg, pool, rng, now, &p);
        }
        Ok(())
    }

    fn tls_input(
        &mut self,
        cfg: &SessionConfig,
        pool: &mut AddressPool,
        rng: &mut dyn Rng,
        now: Instant,
        mut bytes: &[u8],
    ) {
        while !bytes.is_empty() {
            if self.tls.read_tls(&mut bytes).is_err() {
                break;
            }
            if let Err(e) = self.tls.process_new_packets() {
                // Send the alert rustls prepared, then end.
                self.flush_tls();
                self.close(CloseReason::TlsFailed(e.to_string()));
                return;
            }
        }
        if self.common_name.is_empty() && !self.tls.is_handshaking() {
            self.common_name = self
                .tls
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| super::tls::common_name(c))
                .unwrap_or_default();
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.tls.reader().read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if self.plain.len() + n > MAX_PLAINTEXT {
                        self.close(CloseReason::Negotiation(
                            "control plaintext overflow".into(),
                        ));
                        return;
                    }
                    self.plain.extend_from_slice(&buf[..n]);
                }
            }
        }
        self.plaintext(cfg, pool, rng, now);
        self.flush_tls();
    }

    fn plaintext(
        &mut self,
        cfg: &SessionConfig,
        pool: &mut AddressPool,
        rng: &mut dyn Rng,
        now: Instant,
    ) {
        if !self.km_done {
            match ClientKeyMethod2::parse(&self.plain) {
                Err(KeyMethodError::Incomplete) => return,
                Err(e) => {
                    self.close(CloseReason::Negotiation(e.to_string()));
                    return;
                }
                Ok((km, used)) => {
                    self.plain.drain(..used);
                    self.km_done = true;
                    if let Err(e) = self.key_method(cfg, rng, km) {
                        self.close(CloseReason::Negotiation(e));
                        return;
                    }
                    // A client announcing IV_PROTO_REQUEST_PUSH counts as
                    // having asked: push now rather than on its first
                    // PUSH_REQUEST timer (OpenVPN's server does the same).
                    if self.peer_info.has(IV_PROTO_REQUEST_PUSH) {
                        self.control_message(cfg, pool, now, "PUSH_REQUEST");
                        if self.phase == Phase::Closed {
                            return;
                        }
                    }
                }
            }
        }
        while let Some(nul) = self.plain.iter().position(|&b| b == 0) {
            let msg: Vec<u8> = self.plain.drain(..=nul).collect();
            let text = String::from_utf8_lossy(&msg[..msg.len() - 1]).into_owned();
            self.control_message(cfg, pool, now, &text);
            if self.phase == Phase::Closed {
                return;
            }
        }
    }

    fn key_method(
        &mut self,
        cfg: &SessionConfig,
        rng: &mut dyn Rng,
        km: ClientKeyMethod2,
    ) -> Result<(), String> {
        self.peer_info = km.peer_info;
        if !self.peer_info.has(IV_PROTO_TLS_KEY_EXPORT) {
            return Err(format!(
                "client (IV_VER={}) does not offer TLS-EKM key derivation (IV_PROTO={})",
                self.peer_info.version.as_deref().unwrap_or("?"),
                self.peer_info.proto
            ));
        }
        let mut random = Zeroizing::new([0u8; 64]);
        rng.fill(&mut random[..]);
        let msg = server_message(&random, &server_options(cfg.tcp));
        self.tls
            .writer()
            .write_all(&msg)
            .map_err(|e| format!("TLS write: {e}"))?;
        self.phase = Phase::AwaitPush;
        Ok(())
    }

    fn control_message(
        &mut self,
        cfg: &SessionConfig,
        pool: &mut AddressPool,
        now: Instant,
        text: &str,
    ) {
        match text {
            "PUSH_REQUEST" => {
                if self.push_reply.is_none()
                    && let Err(r) = self.establish(cfg, pool)
                {
                    self.close(r);
                    return;
                }
                if let Some(reply) = &self.push_reply {
                    let mut m = reply.clone().into_bytes();
                    m.push(0);
                    let _ = self.tls.writer().write_all(&m);
                }
                self.last_data_tx = now;
            }
            "EXIT" => self.close(CloseReason::ClientExit),
            _ => {}
        }
    }

    /// Address, cipher, data keys, push reply.
    fn establish(
        &mut self,
        cfg: &SessionConfig,
        pool: &mut AddressPool,
    ) -> Result<(), CloseReason> {
        if self.phase != Phase::AwaitPush {
            return Err(CloseReason::Negotiation(
                "PUSH_REQUEST before key exchange".into(),
            ));
        }
        let ciphers = if self.peer_info.ciphers.is_empty() {
            vec![DataCipher::Aes256Gcm.name().to_owned()]
        } else {
            self.peer_info.ciphers.clone()
        };
        let cipher = cfg.push.negotiate(&ciphers).ok_or_else(|| {
            CloseReason::Negotiation(format!("no common data cipher in {}", ciphers.join(":")))
        })?;
        let mut ekm = Zeroizing::new([0u8; EKM_LEN]);
        self.tls
            .export_keying_material(&mut ekm[..], EKM_LABEL, None)
            .map_err(|e| CloseReason::Negotiation(format!("TLS-EKM export: {e}")))?;
        let address = pool.allocate().ok_or(CloseReason::PoolExhausted)?;
        let keys = DataKeys::from_ekm(cipher, &ekm);
        self.data = Some(keys.server_channel(self.key_id, self.peer_id));
        self.address = Some(address);
        self.push_reply = Some(cfg.push.reply(
            address,
            self.peer_id,
            cipher,
            self.peer_info.has(IV_PROTO_CC_EXIT_NOTIFY),
        ));
        self.phase = Phase::Established;
        self.events.push_back(Event::Established {
            common_name: self.common_name.clone(),
            address,
            peer_id: self.peer_id,
            cipher,
            client_version: self.peer_info.version.clone(),
        });
        Ok(())
    }

    fn flush_tls(&mut self) {
        let mut out = Vec::new();
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut out).is_err() {
                break;
            }
        }
        for chunk in out.chunks(TLS_CHUNK) {
            if self.send.len() >= MAX_SEND_QUEUE {
                self.close(CloseReason::Negotiation("control send queue full".into()));
                return;
            }
            self.send.push(chunk.to_vec());
        }
    }

    /// A data packet for this session (already matched by address and
    /// peer-id). Returns the drop reason when it is not accepted.
    pub(crate) fn handle_data(&mut self, now: Instant, packet: &mut [u8]) -> Result<(), DataDrop> {
        let Some(ch) = self.data.as_mut() else {
            return Err(DataDrop::UnknownKeyId);
        };
        let range = ch.open_in_place(packet)?;
        self.last_rx = now;
        match classify(&packet[range]) {
            Payload::Ping | Payload::Occ(_) => {}
            Payload::Exit => self.close(CloseReason::ClientExit),
            Payload::Packet(p) => self.events.push_back(Event::Packet(p.to_vec())),
        }
        Ok(())
    }

    /// Seals a tunnel packet to the client.
    pub(crate) fn send_data(&mut self, now: Instant, payload: &[u8]) -> Result<(), DataDrop> {
        let Some(ch) = self.data.as_mut() else {
            return Err(DataDrop::UnknownKeyId);
        };
        self.scratch.clear();
        self.scratch.resize(super::data::DATA_V2_OVERHEAD, 0);
        self.scratch.extend_from_slice(payload);
        ch.seal_in_place(&mut self.scratch)?;
        self.datagrams.push_back(self.scratch.clone());
        self.last_data_tx = now;
        Ok(())
    }

    /// Timers: handshake window, keepalive, ping-restart.
    pub(crate) fn handle_timeout(&mut self, cfg: &SessionConfig, now: Instant) {
        match self.phase {
            Phase::Closed => {}
            Phase::Handshake | Phase::AwaitPush => {
                if now >= self.started + cfg.handshake_timeout {
                    self.close(CloseReason::HandshakeTimeout);
                }
            }
            Phase::Established => {
                let restart = Duration::from_secs(u64::from(cfg.push.ping_restart_secs) * 2);
                if now >= self.last_rx + restart {
                    self.close(CloseReason::PingTimeout);
                } else if now >= self.last_data_tx + ping(cfg) {
                    let _ = self.send_data(now, &PING);
                }
            }
        }
    }

    /// The earliest time [`Self::handle_timeout`] or a retransmission has work.
    pub(crate) fn poll_timeout(&self, cfg: &SessionConfig) -> Option<Instant> {
        let timer = match self.phase {
            Phase::Closed => return None,
            Phase::Handshake | Phase::AwaitPush => self.started + cfg.handshake_timeout,
            Phase::Established => {
                let restart = Duration::from_secs(u64::from(cfg.push.ping_restart_secs) * 2);
                (self.last_data_tx + ping(cfg)).min(self.last_rx + restart)
            }
        };
        Some(self.send.poll_timeout().map_or(timer, |t| t.min(timer)))
    }

    /// The next datagram to send: data packets, then due control messages
    /// (with acks piggybacked), then a bare ack.
    pub(crate) fn poll_transmit(&mut self, cfg: &SessionConfig, now: Instant) -> Option<Vec<u8>> {
        if let Some(d) = self.datagrams.pop_front() {
            return Some(d);
        }
        let (opcode, message_id, payload) = match self.send.poll_due(now) {
            Some(d) => {
                let op = if d.id == 0 {
                    Opcode::HardResetServerV2
                } else {
                    Opcode::ControlV1
                };
                (op, Some(d.id), d.payload.to_vec())
            }
            None if self.recv.owes_acks() => (Opcode::AckV1, None, Vec::new()),
            None => return None,
        };
        let acks = self.recv.take_acks(SEND_ACKS).collect();
        let body = ControlBody {
            remote_session_id: Some(self.remote_sid),
            acks,
            message_id,
            payload: &payload,
        };
        let body = ControlBody {
            remote_session_id: (!body.acks.is_empty()).then_some(self.remote_sid),
            ..body
        };
        let mut plain = Vec::with_capacity(body.buffer_len());
        body.emit(&mut plain);
        let header = ControlHeader {
            opcode,
            key_id: self.key_id,
            session_id: self.local_sid,
            packet_id: self.tx_packet_id,
            net_time: cfg.net_time,
        };
        self.tx_packet_id = self.tx_packet_id.wrapping_add(1);
        Some(cfg.tls_crypt.wrap(&header, &plain))
    }

    /// Whether nothing is left to send or acknowledge.
    pub(crate) fn idle(&self) -> bool {
        self.datagrams.is_empty() && self.send.is_empty() && !self.recv.owes_acks()
    }

    /// Control-channel retransmissions so far.
    pub(crate) fn retransmits(&self) -> u64 {
        self.send.retransmits()
    }
}

fn ping(cfg: &SessionConfig) -> Duration {
    Duration::from_secs(u64::from(cfg.push.ping_secs.max(1)))
}
