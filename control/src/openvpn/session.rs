//! One client's session: the reliable control channel carrying TLS, key
//! method 2, PUSH_REQUEST/PUSH_REPLY, then the data channel and
//! keepalive. Driven by [`super::server::Server`], which owns the address
//! pool and demultiplexes datagrams; nothing here reads a clock or
//! touches a socket.
//!
//! ```text
//!  client                                   server (this)
//!  HARD_RESET_CLIENT_V2 id 0  ───────────▶  no state: cookie = MAC(address, sid, time)
//!                             ◀───────────  HARD_RESET_SERVER_V2 id 0 (+ack 0), sid = cookie
//!  CONTROL_V1 id 1 or ACK_V1, ack 0, remote sid = cookie ─▶  cookie verified: new session
//!  CONTROL_V1 … TLS handshake (client certificate required) …
//!  [TLS] key method 2 (options, IV_PROTO, IV_CIPHERS)
//!                             ◀───────────  [TLS] key method 2
//!  [TLS] "PUSH_REQUEST"       ───────────▶  address from the pool, data keys by TLS-EKM
//!    (or at once when IV_PROTO has REQUEST_PUSH)
//!                             ◀───────────  [TLS] "PUSH_REPLY,…,ifconfig …,peer-id n,cipher …"
//!  P_DATA_V2 (AES-GCM) ◀──────────────────▶ P_DATA_V2, keepalive pings
//!  [TLS] "EXIT" or OCC exit   ───────────▶  closed, address released
//! ```
//!
//! Renegotiation (OpenVPN's soft reset), started by either side: the
//! reset carries the next key id (1..7, wrapping to 1; 0 is the first key
//! only) and opens a new key state: its own TLS session, reliable queues
//! (message ids from 0 again) and key method 2 exchange; session ids and
//! the tls-crypt packet ids carry on. OpenVPN keeps one control key state
//! (packets for another key id are refused) and up to two data keys.
//!
//! ```text
//!  SOFT_RESET_V1 key k+1 id 0 ◀──────────▶  SOFT_RESET_V1 key k+1 id 0 (each side sends one)
//!  CONTROL_V1 key k+1 … TLS handshake, key method 2 … (no push)
//!                                           new keys by TLS-EKM: opened at once, sealed with
//!                                           once the client acked our key method message or
//!                                           sent data under k+1; key k becomes the lame duck,
//!                                           still opened for `transition_window`
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
use super::wire::{ControlBody, ControlHeader, Opcode, SEND_ACKS, SessionId, split_first_byte};
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
    /// Server-initiated renegotiation of the data keys (OpenVPN's
    /// `reneg-sec`, [`DEFAULT_RENEG`]); each key lives a random 90–100 %
    /// of it, as OpenVPN's server spreads them. `None`: only the client
    /// renegotiates.
    pub reneg: Option<Duration>,
    /// How long the previous data key still opens packets after the new
    /// one took over (OpenVPN's `tran-window`, [`DEFAULT_TRANSITION_WINDOW`]).
    pub transition_window: Duration,
    /// How long a client stays connected before it must authenticate
    /// again (the endpoint's 8/10/12/24 h, [`DEFAULT_SESSION_TIMEOUT`]);
    /// then it is told `RESTART` and closed.
    pub session_timeout: Duration,
}

/// The endpoint's default session timeout: 24 h.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The tls-crypt packet id of the stateless cookie reset; a session's
/// own packets continue after it.
pub const COOKIE_PACKET_ID: u32 = 1;

/// OpenVPN's default `reneg-sec`.
pub const DEFAULT_RENEG: Duration = Duration::from_secs(3600);
/// OpenVPN's default `tran-window`.
pub const DEFAULT_TRANSITION_WINDOW: Duration = Duration::from_secs(60);

/// The key id after `k`: 1..=7, wrapping to 1 (0 names the first key only).
#[must_use]
pub fn next_key_id(k: u8) -> u8 {
    if k >= 7 { 1 } else { k + 1 }
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
    /// The endpoint closed it (operator terminate).
    Local,
    /// The client's certificate is on the CRL: refused at the handshake.
    CertificateRevoked,
    /// The client's certificate is on a CRL loaded while it was connected.
    RevokedOnReload,
    /// Connected for the session timeout.
    SessionTimeout,
    /// The endpoint is shutting down.
    Shutdown,
}

impl CloseReason {
    /// The explicit exit notification we send a connected client on the
    /// control channel: `HALT` (OpenVPN clients exit) when it is turned
    /// away, `RESTART` (they reconnect) when it may come back at once.
    #[must_use]
    pub fn exit_message(&self) -> Option<&'static str> {
        match self {
            Self::Local | Self::RevokedOnReload => Some("HALT"),
            Self::SessionTimeout | Self::Shutdown => Some("RESTART"),
            _ => None,
        }
    }
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
            Self::Local => f.write_str("terminated by the endpoint"),
            Self::CertificateRevoked => f.write_str("client certificate revoked (CRL)"),
            Self::RevokedOnReload => f.write_str("client certificate revoked by a CRL reload"),
            Self::SessionTimeout => f.write_str("session timeout"),
            Self::Shutdown => f.write_str("endpoint shutting down"),
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
    /// New data keys are in place under `key_id` (a soft reset finished).
    Renegotiated {
        /// The new key id.
        key_id: u8,
        /// Whether this side started it (`reneg-sec` on the server).
        by_server: bool,
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
    KeyId,
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

/// The control channel under one key id (OpenVPN's `key_state`): its
/// TLS session, its reliable queues and its key method exchange.
struct KeyState {
    key_id: u8,
    send: SendQueue,
    recv: RecvQueue,
    tls: rustls::ServerConnection,
    plain: Vec<u8>,
    km_done: bool,
    /// Data keys derived from this TLS session.
    keys_ready: bool,
    /// This side sent the soft reset.
    by_server: bool,
    started: Instant,
}

impl KeyState {
    fn new(cfg: &SessionConfig, key_id: u8, now: Instant) -> Result<Self, rustls::Error> {
        Ok(Self {
            key_id,
            send: SendQueue::new(0, cfg.initial_retransmit, cfg.max_retransmit),
            recv: RecvQueue::new(0),
            tls: rustls::ServerConnection::new(cfg.tls.clone())?,
            plain: Vec::new(),
            km_done: false,
            keys_ready: false,
            by_server: false,
            started: now,
        })
    }
}

/// A data channel with the key id it seals and opens under.
struct DataKey {
    key_id: u8,
    ch: DataChannel,
}

/// One client session.
pub(crate) struct Session {
    peer: SocketAddr,
    phase: Phase,
    local_sid: SessionId,
    remote_sid: SessionId,
    peer_id: u32,
    tx_packet_id: u32,
    rx_time: u32,
    rx_replay: ReplayWindow,
    ks: KeyState,
    peer_info: PeerInfo,
    common_name: String,
    /// The client's certificate (DER), for CRL reloads.
    cert: Option<Vec<u8>>,
    established_at: Option<Instant>,
    cipher: Option<DataCipher>,
    push_reply: Option<String>,
    /// Seals and opens.
    primary: Option<DataKey>,
    /// Renegotiated, opens; seals once the client has it too.
    pending: Option<DataKey>,
    /// The previous key, opening until the instant.
    lame_duck: Option<(DataKey, Instant)>,
    /// When the server starts the next renegotiation.
    reneg_at: Option<Instant>,
    /// Retransmissions of earlier key states.
    old_retransmits: u64,
    address: Option<Ipv4Addr>,
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
    /// A session for a client that echoed our cookie (`local_sid`) from
    /// its address: our reset (message 0, tls-crypt packet id
    /// [`COOKIE_PACKET_ID`]) and its reset (its message 0) count as
    /// exchanged; `header` is the echoing packet's, which the caller
    /// hands to [`Self::handle_control`] next.
    pub(crate) fn accept(
        cfg: &SessionConfig,
        now: Instant,
        peer: SocketAddr,
        peer_id: u32,
        local_sid: SessionId,
        header: &ControlHeader,
    ) -> Result<Self, rustls::Error> {
        let mut ks = KeyState::new(cfg, 0, now)?;
        ks.send = SendQueue::new(1, cfg.initial_retransmit, cfg.max_retransmit);
        ks.recv = RecvQueue::new(1);
        Ok(Self {
            peer,
            phase: Phase::Handshake,
            local_sid,
            remote_sid: header.session_id,
            peer_id,
            tx_packet_id: COOKIE_PACKET_ID + 1,
            rx_time: header.net_time,
            rx_replay: ReplayWindow::default(),
            ks,
            peer_info: PeerInfo::default(),
            common_name: String::new(),
            cert: None,
            established_at: None,
            cipher: None,
            push_reply: None,
            primary: None,
            pending: None,
            lame_duck: None,
            reneg_at: None,
            old_retransmits: 0,
            address: None,
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

    /// The client's certificate (DER), once verified.
    pub(crate) fn certificate(&self) -> Option<&[u8]> {
        self.cert.as_deref()
    }

    /// Ends the session; a connected client is told why first when the
    /// reason has an [`CloseReason::exit_message`] (delivered by the
    /// reliable layer while the closed session lingers).
    pub(crate) fn close(&mut self, reason: CloseReason) {
        if self.phase == Phase::Closed {
            return;
        }
        let notify = self.phase == Phase::Established && !self.ks.tls.is_handshaking();
        self.phase = Phase::Closed;
        if let Some(m) = reason.exit_message().filter(|_| notify) {
            let mut msg = m.as_bytes().to_vec();
            msg.push(0);
            if self.ks.tls.writer().write_all(&msg).is_ok() {
                self.flush_tls();
            }
        }
        self.events.push_back(Event::Closed(reason));
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
        if h.opcode == Opcode::SoftResetV1 && h.key_id != self.ks.key_id {
            // The client renegotiates: only from a session whose current
            // keys are in place, and only to the next key id (OpenVPN
            // refuses the same way: "key IDs out of sync").
            if self.phase != Phase::Established
                || !self.ks.keys_ready
                || h.key_id != next_key_id(self.ks.key_id)
            {
                return Err(SessionDrop::KeyId);
            }
            if let Err(e) = self.soft_reset(cfg, now, false) {
                self.close(CloseReason::TlsFailed(e.to_string()));
                return Ok(());
            }
        }
        // One control key state at a time: acks and messages under any
        // other key id are stale.
        if h.key_id != self.ks.key_id {
            return Err(SessionDrop::KeyId);
        }
        self.last_rx = now;
        for &a in &body.acks {
            self.ks.send.handle_ack(a);
        }
        self.maybe_promote(cfg, now);
        let Some(id) = body.message_id else {
            return Ok(());
        };
        match h.opcode {
            Opcode::ControlV1 => {}
            Opcode::HardResetClientV2 if h.key_id == 0 => {}
            Opcode::SoftResetV1 if h.key_id != 0 => {}
            _ => return Err(SessionDrop::Unsupported),
        }
        if self.ks.recv.handle(id, body.payload) == Received::OutOfWindow {
            return Err(SessionDrop::OutOfWindow);
        }
        while let Some(p) = self.ks.recv.pop() {
            if self.phase == Phase::Closed {
                break;
            }
            self.tls_input(cfg, pool, rng, now, &p);
        }
        Ok(())
    }

    /// Starts a new key state under the next key id and queues our soft
    /// reset (its message 0). The current data keys keep working.
    fn soft_reset(
        &mut self,
        cfg: &SessionConfig,
        now: Instant,
        by_server: bool,
    ) -> Result<(), rustls::Error> {
        // A renegotiation whose keys never took over for sending: they
        // are complete, use them before starting another.
        if self.pending.is_some() {
            self.promote(cfg, now);
        }
        let mut ks = KeyState::new(cfg, next_key_id(self.ks.key_id), now)?;
        ks.by_server = by_server;
        ks.send.push(Vec::new());
        self.old_retransmits += self.ks.send.retransmits();
        self.ks = ks;
        self.reneg_at = None;
        Ok(())
    }

    /// The renegotiated key seals from now on; the one it replaces opens
    /// for the transition window more.
    fn promote(&mut self, cfg: &SessionConfig, now: Instant) {
        if let Some(new) = self.pending.take()
            && let Some(old) = self.primary.replace(new)
        {
            self.lame_duck = Some((old, now + cfg.transition_window));
        }
    }

    /// Promotes the pending key once the client acked everything of the
    /// new key state (our key method message included): it has the keys.
    fn maybe_promote(&mut self, cfg: &SessionConfig, now: Instant) {
        if self.pending.is_some() && self.ks.keys_ready && self.ks.send.is_empty() {
            self.promote(cfg, now);
        }
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
            if self.ks.tls.read_tls(&mut bytes).is_err() {
                break;
            }
            if let Err(e) = self.ks.tls.process_new_packets() {
                // Send the alert rustls prepared, then end.
                self.flush_tls();
                self.close(
                    if e == rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked) {
                        CloseReason::CertificateRevoked
                    } else {
                        CloseReason::TlsFailed(e.to_string())
                    },
                );
                return;
            }
        }
        if self.cert.is_none() && !self.ks.tls.is_handshaking() {
            self.common_name = self.peer_common_name();
            self.cert = self
                .ks
                .tls
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec());
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.ks.tls.reader().read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if self.ks.plain.len() + n > MAX_PLAINTEXT {
                        self.close(CloseReason::Negotiation(
                            "control plaintext overflow".into(),
                        ));
                        return;
                    }
                    self.ks.plain.extend_from_slice(&buf[..n]);
                }
            }
        }
        self.plaintext(cfg, pool, rng, now);
        self.flush_tls();
    }

    fn peer_common_name(&self) -> String {
        self.ks
            .tls
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| super::tls::common_name(c))
            .unwrap_or_default()
    }

    fn plaintext(
        &mut self,
        cfg: &SessionConfig,
        pool: &mut AddressPool,
        rng: &mut dyn Rng,
        now: Instant,
    ) {
        if !self.ks.km_done {
            match ClientKeyMethod2::parse(&self.ks.plain) {
                Err(KeyMethodError::Incomplete) => return,
                Err(e) => {
                    self.close(CloseReason::Negotiation(e.to_string()));
                    return;
                }
                Ok((km, used)) => {
                    self.ks.plain.drain(..used);
                    self.ks.km_done = true;
                    let first = self.phase == Phase::Handshake;
                    let r = if first {
                        self.key_method(cfg, rng, km)
                    } else {
                        self.rekey(cfg, rng, now, km)
                    };
                    if let Err(e) = r {
                        self.close(CloseReason::Negotiation(e));
                        return;
                    }
                    // A client announcing IV_PROTO_REQUEST_PUSH counts as
                    // having asked: push now rather than on its first
                    // PUSH_REQUEST timer (OpenVPN's server does the same).
                    if first && self.peer_info.has(IV_PROTO_REQUEST_PUSH) {
                        self.control_message(cfg, pool, rng, now, "PUSH_REQUEST");
                        if self.phase == Phase::Closed {
                            return;
                        }
                    }
                }
            }
        }
        while let Some(nul) = self.ks.plain.iter().position(|&b| b == 0) {
            let msg: Vec<u8> = self.ks.plain.drain(..=nul).collect();
            let text = String::from_utf8_lossy(&msg[..msg.len() - 1]).into_owned();
            self.control_message(cfg, pool, rng, now, &text);
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
        self.write_key_method(cfg, rng)?;
        self.phase = Phase::AwaitPush;
        Ok(())
    }

    fn write_key_method(&mut self, cfg: &SessionConfig, rng: &mut dyn Rng) -> Result<(), String> {
        let mut random = Zeroizing::new([0u8; 64]);
        rng.fill(&mut random[..]);
        let msg = server_message(&random, &server_options(cfg.tcp));
        self.ks
            .tls
            .writer()
            .write_all(&msg)
            .map_err(|e| format!("TLS write: {e}"))
    }

    /// Key method 2 of a renegotiation: same client, same cipher, new
    /// keys from the new TLS session (nothing is pushed again).
    fn rekey(
        &mut self,
        cfg: &SessionConfig,
        rng: &mut dyn Rng,
        now: Instant,
        km: ClientKeyMethod2,
    ) -> Result<(), String> {
        if !km.peer_info.has(IV_PROTO_TLS_KEY_EXPORT) {
            return Err("renegotiation without TLS-EKM".into());
        }
        let cn = self.peer_common_name();
        if cn != self.common_name {
            return Err(format!(
                "common name changed on renegotiation ({} -> {cn})",
                self.common_name
            ));
        }
        let cipher = self
            .cipher
            .ok_or_else(|| "renegotiation before the data channel".to_owned())?;
        self.write_key_method(cfg, rng)?;
        let keys = self.derive(cipher)?;
        self.pending = Some(DataKey {
            key_id: self.ks.key_id,
            ch: keys.server_channel(self.ks.key_id, self.peer_id),
        });
        self.keys_ready(cfg, rng, now);
        self.events.push_back(Event::Renegotiated {
            key_id: self.ks.key_id,
            by_server: self.ks.by_server,
        });
        Ok(())
    }

    fn derive(&self, cipher: DataCipher) -> Result<DataKeys, String> {
        let mut ekm = Zeroizing::new([0u8; EKM_LEN]);
        self.ks
            .tls
            .export_keying_material(&mut ekm[..], EKM_LABEL, None)
            .map_err(|e| format!("TLS-EKM export: {e}"))?;
        Ok(DataKeys::from_ekm(cipher, &ekm))
    }

    /// The current key state has its data keys: schedule the next
    /// renegotiation at a random 90–100 % of `reneg`.
    fn keys_ready(&mut self, cfg: &SessionConfig, rng: &mut dyn Rng, now: Instant) {
        self.ks.keys_ready = true;
        self.reneg_at = cfg.reneg.map(|r| {
            let mut b = [0u8; 1];
            rng.fill(&mut b);
            now + r.mul_f64(0.9 + 0.1 * f64::from(b[0]) / 255.0)
        });
    }

    fn control_message(
        &mut self,
        cfg: &SessionConfig,
        pool: &mut AddressPool,
        rng: &mut dyn Rng,
        now: Instant,
        text: &str,
    ) {
        match text {
            "PUSH_REQUEST" => {
                if self.push_reply.is_none()
                    && let Err(r) = self.establish(cfg, pool, rng, now)
                {
                    self.close(r);
                    return;
                }
                if let Some(reply) = &self.push_reply {
                    let mut m = reply.clone().into_bytes();
                    m.push(0);
                    let _ = self.ks.tls.writer().write_all(&m);
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
        rng: &mut dyn Rng,
        now: Instant,
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
        let keys = self.derive(cipher).map_err(CloseReason::Negotiation)?;
        let address = pool.allocate().ok_or(CloseReason::PoolExhausted)?;
        self.primary = Some(DataKey {
            key_id: self.ks.key_id,
            ch: keys.server_channel(self.ks.key_id, self.peer_id),
        });
        self.cipher = Some(cipher);
        self.address = Some(address);
        self.push_reply = Some(cfg.push.reply(
            address,
            self.peer_id,
            cipher,
            self.peer_info.has(IV_PROTO_CC_EXIT_NOTIFY),
        ));
        self.phase = Phase::Established;
        self.established_at = Some(now);
        self.keys_ready(cfg, rng, now);
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
        while self.ks.tls.wants_write() {
            if self.ks.tls.write_tls(&mut out).is_err() {
                break;
            }
        }
        for chunk in out.chunks(TLS_CHUNK) {
            if self.ks.send.len() >= MAX_SEND_QUEUE {
                self.close(CloseReason::Negotiation("control send queue full".into()));
                return;
            }
            self.ks.send.push(chunk.to_vec());
        }
    }

    /// A data packet for this session (already matched by address and
    /// peer-id). Returns the drop reason when it is not accepted.
    pub(crate) fn handle_data(
        &mut self,
        cfg: &SessionConfig,
        now: Instant,
        packet: &mut [u8],
    ) -> Result<(), DataDrop> {
        let Some(&b0) = packet.first() else {
            return Err(DataDrop::TooShort);
        };
        let key_id = split_first_byte(b0).1;
        let range = if let Some(k) = self.pending.as_mut().filter(|k| k.key_id == key_id) {
            let r = k.ch.open_in_place(packet)?;
            // The client seals with the new key: it has it, so do we.
            self.promote(cfg, now);
            r
        } else if let Some(k) = self.primary.as_mut().filter(|k| k.key_id == key_id) {
            k.ch.open_in_place(packet)?
        } else if let Some((k, _)) = self.lame_duck.as_mut().filter(|(k, _)| k.key_id == key_id) {
            k.ch.open_in_place(packet)?
        } else {
            return Err(DataDrop::UnknownKeyId);
        };
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
        let Some(k) = self.primary.as_mut() else {
            return Err(DataDrop::UnknownKeyId);
        };
        self.scratch.clear();
        self.scratch.resize(super::data::DATA_V2_OVERHEAD, 0);
        self.scratch.extend_from_slice(payload);
        k.ch.seal_in_place(&mut self.scratch)?;
        self.datagrams.push_back(self.scratch.clone());
        self.last_data_tx = now;
        Ok(())
    }

    /// Timers: handshake window, keepalive, ping-restart, renegotiation,
    /// the lame duck's end.
    pub(crate) fn handle_timeout(&mut self, cfg: &SessionConfig, now: Instant) {
        match self.phase {
            Phase::Closed => {}
            Phase::Handshake | Phase::AwaitPush => {
                if now >= self.ks.started + cfg.handshake_timeout {
                    self.close(CloseReason::HandshakeTimeout);
                }
            }
            Phase::Established => {
                let restart = Duration::from_secs(u64::from(cfg.push.ping_restart_secs) * 2);
                if now >= self.last_rx + restart {
                    self.close(CloseReason::PingTimeout);
                    return;
                }
                if self
                    .established_at
                    .is_some_and(|t| now >= t + cfg.session_timeout)
                {
                    self.close(CloseReason::SessionTimeout);
                    return;
                }
                if !self.ks.keys_ready && now >= self.ks.started + cfg.handshake_timeout {
                    self.close(CloseReason::HandshakeTimeout);
                    return;
                }
                if self
                    .lame_duck
                    .as_ref()
                    .is_some_and(|(_, until)| now >= *until)
                {
                    self.lame_duck = None;
                }
                self.maybe_promote(cfg, now);
                if self.ks.keys_ready
                    && self.reneg_at.is_some_and(|t| now >= t)
                    && let Err(e) = self.soft_reset(cfg, now, true)
                {
                    self.close(CloseReason::TlsFailed(e.to_string()));
                    return;
                }
                if now >= self.last_data_tx + ping(cfg) {
                    let _ = self.send_data(now, &PING);
                }
            }
        }
    }

    /// The earliest time [`Self::handle_timeout`] or a retransmission has work.
    pub(crate) fn poll_timeout(&self, cfg: &SessionConfig) -> Option<Instant> {
        let timer = match self.phase {
            Phase::Closed => return None,
            Phase::Handshake | Phase::AwaitPush => self.ks.started + cfg.handshake_timeout,
            Phase::Established => {
                let restart = Duration::from_secs(u64::from(cfg.push.ping_restart_secs) * 2);
                let mut t = (self.last_data_tx + ping(cfg)).min(self.last_rx + restart);
                if let Some(e) = self.established_at {
                    t = t.min(e + cfg.session_timeout);
                }
                if self.ks.keys_ready {
                    if let Some(r) = self.reneg_at {
                        t = t.min(r);
                    }
                } else {
                    t = t.min(self.ks.started + cfg.handshake_timeout);
                }
                if let Some((_, until)) = &self.lame_duck {
                    t = t.min(*until);
                }
                t
            }
        };
        Some(self.ks.send.poll_timeout().map_or(timer, |t| t.min(timer)))
    }

    /// The next datagram to send: data packets, then due control messages
    /// (with acks piggybacked), then a bare ack.
    pub(crate) fn poll_transmit(&mut self, cfg: &SessionConfig, now: Instant) -> Option<Vec<u8>> {
        if let Some(d) = self.datagrams.pop_front() {
            return Some(d);
        }
        let key_id = self.ks.key_id;
        let (opcode, message_id, payload) = match self.ks.send.poll_due(now) {
            Some(d) => {
                let op = match (d.id, key_id) {
                    (0, 0) => Opcode::HardResetServerV2,
                    (0, _) => Opcode::SoftResetV1,
                    _ => Opcode::ControlV1,
                };
                (op, Some(d.id), d.payload.to_vec())
            }
            None if self.ks.recv.owes_acks() => (Opcode::AckV1, None, Vec::new()),
            None => return None,
        };
        let acks = self.ks.recv.take_acks(SEND_ACKS).collect();
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
            key_id,
            session_id: self.local_sid,
            packet_id: self.tx_packet_id,
            net_time: cfg.net_time,
        };
        self.tx_packet_id = self.tx_packet_id.wrapping_add(1);
        Some(cfg.tls_crypt.wrap(&header, &plain))
    }

    /// Whether nothing is left to send or acknowledge.
    pub(crate) fn idle(&self) -> bool {
        self.datagrams.is_empty() && self.ks.send.is_empty() && !self.ks.recv.owes_acks()
    }

    /// Control-channel retransmissions so far.
    pub(crate) fn retransmits(&self) -> u64 {
        self.old_retransmits + self.ks.send.retransmits()
    }
}

fn ping(cfg: &SessionConfig) -> Duration {
    Duration::from_secs(u64::from(cfg.push.ping_secs.max(1)))
}
