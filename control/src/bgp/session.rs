//! One BGP peer: the RFC 4271 § 8 finite state machine, sans-IO.
//!
//! A [`Session`] never touches a socket or a clock. The caller owns the TCP
//! connections (kernel TCP through the exception path) and drives it:
//!
//! ```text
//!   caller                                   Session
//!   ──────                                   ───────
//!   handle_start(now)            ─────────►  ManualStart
//!   poll_action() → Connect      ◄─────────  open TCP to peer:179
//!   handle_connected(now, id, Outgoing)  ─►  Tcp_CR_Acked
//!   (accepted socket) handle_connected(now, id, Incoming)
//!                                       ─►  TcpConnectionConfirmed
//!   handle_data(now, id, bytes)  ─────────►  BGPOpen, KeepAliveMsg, UpdateMsg, …
//!   handle_closed(now, id)       ─────────►  TcpConnectionFails
//!   handle_timeout(now)          ─────────►  HoldTimer_Expires, KeepaliveTimer_Expires,
//!                                            ConnectRetryTimer_Expires, IdleHoldTimer_Expires
//!   poll_transmit() → bytes for a connection
//!   poll_action()   → Connect / Close / Announce / Withdraw / WithdrawAll / EndOfRib
//!   poll_log()      → BGPStatus / RouteStatus entries (spec §20.4 texts)
//!   poll_timeout()  → when to call handle_timeout next
//! ```
//!
//! Call order after any `handle_*`: drain `poll_transmit`, then
//! `poll_action` (a `Close` comes after the bytes it must flush), then
//! `poll_log`, then re-arm the timer from `poll_timeout`.
//!
//! Each TCP connection runs its own copy of the OpenSent → OpenConfirm →
//! Established part of the FSM; with two connections (both sides connected
//! at once) the collision is resolved when the second OPEN arrives
//! ([RFC 4271 § 6.8]): the connection initiated by the speaker with the
//! higher BGP Identifier survives, the other is closed with Cease 6/7. The
//! session's reported [`State`] is the most advanced connection's.
//!
//! Policy that belongs to the peer is applied here, before routes reach the
//! RIB (spec §25.4): routes whose AS_PATH holds our own AS and routes whose
//! next hop is not on the tunnel's inside network are denied (logged with
//! the spec's `DENIED due to: …` texts), and the received-prefix limit
//! warns near the limit and sends Cease 6/1 past it.
//!
//! [RFC 4271 § 6.8]: https://www.rfc-editor.org/rfc/rfc4271#section-6.8

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};

use super::log::{BgpLogEvent, RouteLogStatus, msg};
use super::wire::{
    AS_TRANS, Afi, AsPath, BGP_VERSION, Capability, CeaseSubcode, Codec, ErrorCode, Message,
    MessageError, MpReach, MpUnreach, Notification, Open, Origin, PathAttributes, RouteRefresh,
    Safi, Update, UpdateError, fsm_subcode, open_subcode,
};

/// BGP FSM states ([RFC 4271 § 8.2.2]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Refusing connections; waiting for a start event.
    Idle,
    /// Waiting for our outgoing TCP connection.
    Connect,
    /// Our connection attempt failed; waiting to retry (and accepting).
    Active,
    /// OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for KEEPALIVE.
    OpenConfirm,
    /// Exchanging routes.
    Established,
}

impl State {
    /// The RFC's name, as in the logs.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "Idle",
            Self::Connect => "Connect",
            Self::Active => "Active",
            Self::OpenSent => "OpenSent",
            Self::OpenConfirm => "OpenConfirm",
            Self::Established => "Established",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller's handle for one TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Who opened a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We connected to the peer's port 179.
    Outgoing,
    /// The peer connected to ours.
    Incoming,
}

/// One peer's settings (spec §25.4 defaults via [`PeerConfig::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Our AS (default 64512).
    pub local_asn: u32,
    /// The peer's AS; an OPEN with another is refused (2/2).
    pub peer_asn: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Our address on the session (the first host of the inside /30).
    pub local_addr: IpAddr,
    /// The neighbour's address (the second host).
    pub peer_addr: IpAddr,
    /// Our IPv6 inside address, the next hop of IPv6 routes we advertise.
    pub local_addr_v6: Option<Ipv6Addr>,
    /// Networks directly connected through this session's tunnel (the
    /// inside /30 and /126): a received next hop must be in one of them.
    pub connected: Vec<IpNet>,
    /// Hold time offered, seconds (0 or ≥ 3). Default 30.
    pub hold_time_secs: u16,
    /// Keepalive interval, seconds; capped at a third of the negotiated hold
    /// time. Default 10.
    pub keepalive_secs: u16,
    /// ConnectRetryTimer, seconds. Default 5 (inside a tunnel the peer is
    /// either there or the tunnel is down; RFC 4271 suggests 120).
    pub connect_retry_secs: u16,
    /// IdleHoldTimer before the automatic restart after an error, seconds.
    /// Default 5.
    pub idle_hold_secs: u16,
    /// Idle hold after a Cease 6/1 we sent, seconds. Default 60.
    pub max_prefix_restart_secs: u16,
    /// Received-prefix limit (100 VGW-like, 1000 TGW-like / concentrator).
    pub max_prefixes: u32,
    /// Percent of `max_prefixes` at which the warning is logged. Default 80.
    pub warning_percent: u8,
    /// How often the warning repeats while above the threshold. Default 60 s.
    pub warning_interval_secs: u16,
    /// Advertised-prefix limit (1000 VGW-like, 5000 TGW-like).
    pub max_advertised: u32,
    /// Negotiate IPv4 unicast.
    pub ipv4: bool,
    /// Negotiate IPv6 unicast.
    pub ipv6: bool,
    /// Graceful restart time advertised, seconds (0: capability not sent).
    /// Default 120.
    pub graceful_restart_secs: u16,
    /// Do not initiate connections, only accept them.
    pub passive: bool,
}

impl PeerConfig {
    /// A peer with the spec's defaults: hold 30 s, keepalive 10 s, limits
    /// 1000 in / 5000 out, IPv4 unicast, graceful restart 120 s.
    #[must_use]
    pub fn new(local_asn: u32, peer_asn: u32, local_addr: IpAddr, peer_addr: IpAddr) -> Self {
        let router_id = match local_addr {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        let connected = match (local_addr, peer_addr) {
            (IpAddr::V4(a), IpAddr::V4(_)) => {
                vec![IpNet::V4(
                    Ipv4Net::new(a, 30).map_or_else(|_| Ipv4Net::from(a), |n| n.trunc()),
                )]
            }
            _ => Vec::new(),
        };
        Self {
            local_asn,
            peer_asn,
            router_id,
            local_addr,
            peer_addr,
            local_addr_v6: None,
            connected,
            hold_time_secs: 30,
            keepalive_secs: 10,
            connect_retry_secs: 5,
            idle_hold_secs: 5,
            max_prefix_restart_secs: 60,
            max_prefixes: 1000,
            warning_percent: 80,
            warning_interval_secs: 60,
            max_advertised: 5000,
            ipv4: true,
            ipv6: false,
            graceful_restart_secs: 120,
            passive: false,
        }
    }

    fn is_connected(&self, nh: IpAddr) -> bool {
        if let IpAddr::V6(a) = nh
            && (a.segments()[0] & 0xffc0) == 0xfe80
        {
            return true; // link-local: on the link by definition
        }
        self.connected.iter().any(|n| n.contains(&nh))
    }

    fn open(&self) -> Open {
        let mut caps = Vec::new();
        if self.ipv4 {
            caps.push(Capability::Multiprotocol {
                afi: Afi::Ipv4,
                safi: Safi::Unicast,
            });
        }
        if self.ipv6 {
            caps.push(Capability::Multiprotocol {
                afi: Afi::Ipv6,
                safi: Safi::Unicast,
            });
        }
        caps.push(Capability::RouteRefresh);
        if self.graceful_restart_secs > 0 {
            // We do not preserve forwarding state across a restart: no
            // families, only the restart time (RFC 4724 § 3, "helper").
            caps.push(Capability::GracefulRestart {
                restarting: false,
                time_secs: self.graceful_restart_secs.min(4095),
                families: Vec::new(),
            });
        }
        caps.push(Capability::FourOctetAs(self.local_asn));
        Open {
            version: BGP_VERSION,
            my_as: u16::try_from(self.local_asn).unwrap_or(AS_TRANS),
            hold_time: self.hold_time_secs,
            bgp_id: self.router_id,
            capabilities: caps,
        }
    }
}

/// A route learned from the peer, as the RIB needs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerRoute {
    /// ORIGIN.
    pub origin: Origin,
    /// AS_PATH.
    pub as_path: AsPath,
    /// MULTI_EXIT_DISC (absent: 0 for comparison, RFC 4271 § 9.1.2.2 c).
    pub med: Option<u32>,
    /// LOCAL_PREF (eBGP: absent).
    pub local_pref: Option<u32>,
    /// Next hop (checked to be connected).
    pub next_hop: IpAddr,
    /// COMMUNITIES.
    pub communities: Vec<u32>,
}

/// A prefix we advertise, with the attributes that steer the peer's choice
/// between a connection's two tunnels (spec §10.2, §10.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Advert {
    /// The prefix.
    pub prefix: IpNet,
    /// MED (spec: 100 normally, lower on the preferred tunnel).
    pub med: Option<u32>,
    /// Extra copies of our AS to prepend (0: none).
    pub prepend: u8,
    /// Communities to attach.
    pub communities: Vec<u32>,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Open a TCP connection from our address to the peer's port 179, then
    /// report it with [`Session::handle_connected`] (or
    /// [`Session::handle_closed`] with the id it was given).
    Connect,
    /// Close this connection (after sending what was queued for it).
    Close(ConnId),
    /// Install or replace a learned route in the RIB.
    Announce {
        /// Prefix.
        prefix: IpNet,
        /// Path.
        route: PeerRoute,
    },
    /// Remove a learned route.
    Withdraw {
        /// Prefix.
        prefix: IpNet,
    },
    /// The session left Established: remove every route learned from it.
    WithdrawAll,
    /// The peer finished its initial update for a family.
    EndOfRib(Afi),
}

/// Bytes to send on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// Connection.
    pub conn: ConnId,
    /// One or more whole BGP messages.
    pub data: Vec<u8>,
}

/// Per-connection part of the FSM.
#[derive(Debug)]
struct Conn {
    id: ConnId,
    dir: Direction,
    state: State,
    rx: Vec<u8>,
    peer_open: Option<Open>,
    codec: Codec,
    hold: Duration,
    keepalive: Duration,
    hold_deadline: Option<Instant>,
    keepalive_deadline: Option<Instant>,
}

/// FSM input events (RFC 4271 § 8.1 names).
#[derive(Debug)]
enum Event {
    /// Event 1: ManualStart / Event 3: AutomaticStart.
    Start,
    /// Event 2: ManualStop.
    Stop(CeaseSubcode),
    /// Event 9: ConnectRetryTimer_Expires.
    ConnectRetryTimerExpires,
    /// Event 13: IdleHoldTimer_Expires.
    IdleHoldTimerExpires,
    /// Event 18: TcpConnectionFails (no connection left).
    TcpConnectionFails,
}

/// Per-connection events (RFC 4271 § 8.1 names).
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "short-lived, moved once into the FSM; boxing would allocate per UPDATE"
)]
enum ConnEvent {
    /// Event 16/17: Tcp_CR_Acked / TcpConnectionConfirmed.
    TcpConnected,
    /// Event 18: TcpConnectionFails.
    TcpConnectionFails,
    /// Event 10: HoldTimer_Expires.
    HoldTimerExpires,
    /// Event 11: KeepaliveTimer_Expires.
    KeepaliveTimerExpires,
    /// Event 19: BGPOpen.
    BgpOpen(Open),
    /// Event 21/22: BGPHeaderErr / BGPOpenMsgErr (and UPDATE errors that reset).
    MsgErr(Notification),
    /// Event 24/25: NotifMsgVerErr / NotifMsg.
    NotifMsg(Notification),
    /// Event 26: KeepAliveMsg.
    KeepAliveMsg,
    /// Event 27: UpdateMsg.
    UpdateMsg(Update),
    /// Event 28: UpdateMsgErr (treat-as-withdraw).
    UpdateTreatAsWithdraw(Vec<IpNet>, Notification),
    /// ROUTE-REFRESH received (RFC 2918).
    RouteRefresh(RouteRefresh),
}

/// Counters and times for `show bgp`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// When the session last became Established.
    pub established_at: Option<Instant>,
    /// Times it became Established.
    pub established_transitions: u32,
    /// Last NOTIFICATION sent.
    pub last_sent_notification: Option<Notification>,
    /// Last NOTIFICATION received.
    pub last_received_notification: Option<Notification>,
    /// Routes denied by policy (own AS, next hop not connected).
    pub denied: u64,
    /// UPDATEs handled with treat-as-withdraw.
    pub treat_as_withdraw: u64,
    /// Families whose End-of-RIB was received since Established.
    pub eor_received: Vec<Afi>,
    /// Families whose End-of-RIB we sent since Established.
    pub eor_sent: Vec<Afi>,
}

/// One BGP peer (see the module documentation for the call order).
#[derive(Debug)]
pub struct Session {
    cfg: PeerConfig,
    /// Idle, Connect or Active while no connection has got further.
    base: State,
    started: bool,
    conns: Vec<Conn>,
    /// Whether an outgoing connect is pending (Connect state).
    connecting: bool,
    connect_retry: Option<Instant>,
    idle_hold: Option<Instant>,
    /// While the IdleHoldTimer runs after an ordinary error, the peer may
    /// reconnect first (accepted); after a Cease 6/1 we sent, it may not.
    refuse_in_idle: bool,
    /// Set just before an Established connection's TCP failure takes the
    /// session down, when the peer announced graceful restart: (restart
    /// time, families).
    gr_pending_down: Option<(Duration, Vec<Afi>)>,
    /// Routes kept as stale while the peer restarts (RFC 4724 § 4.2).
    stale: BTreeSet<IpNet>,
    /// When the stale routes go: the peer's restart time before the
    /// session is back, then [`STALE_ROUTES_SECS`] for its End-of-RIB.
    stale_deadline: Option<Instant>,
    reported: State,
    adj_in: BTreeMap<IpNet, PeerRoute>,
    adj_out_wanted: BTreeMap<IpNet, Advert>,
    adj_out_sent: BTreeMap<IpNet, Advert>,
    warned_at: Option<Instant>,
    transmits: VecDeque<Transmit>,
    actions: VecDeque<Action>,
    logs: VecDeque<BgpLogEvent>,
    stats: SessionStats,
}

/// How long routes stay stale after the restarted peer is back, waiting for
/// its End-of-RIB (the "stale routes kept for 300 s" of the spec's Juniper
/// sample, §16.4).
pub const STALE_ROUTES_SECS: u64 = 300;

/// Announcements sharing these (IPv6?, MED, prepend, communities) go in
/// one UPDATE.
type AttrKey = (bool, Option<u32>, u8, Vec<u32>);

fn cease_data_max_prefix(afi: Afi, limit: u32) -> Vec<u8> {
    // RFC 4486 § 4: AFI (2), SAFI (1), upper bound (4).
    let mut d = u16::from(afi).to_be_bytes().to_vec();
    d.push(Safi::Unicast.into());
    d.extend_from_slice(&limit.to_be_bytes());
    d
}

impl Session {
    /// A session in Idle.
    #[must_use]
    pub fn new(cfg: PeerConfig) -> Self {
        Self {
            cfg,
            base: State::Idle,
            started: false,
            conns: Vec::new(),
            connecting: false,
            connect_retry: None,
            idle_hold: None,
            refuse_in_idle: false,
            gr_pending_down: None,
            stale: BTreeSet::new(),
            stale_deadline: None,
            reported: State::Idle,
            adj_in: BTreeMap::new(),
            adj_out_wanted: BTreeMap::new(),
            adj_out_sent: BTreeMap::new(),
            warned_at: None,
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            logs: VecDeque::new(),
            stats: SessionStats::default(),
        }
    }

    /// The peer's settings.
    #[must_use]
    pub fn config(&self) -> &PeerConfig {
        &self.cfg
    }

    /// The session's state (the most advanced connection's).
    #[must_use]
    pub fn state(&self) -> State {
        self.reported
    }

    /// Routes accepted from the peer (Adj-RIB-In after policy).
    #[must_use]
    pub fn received(&self) -> &BTreeMap<IpNet, PeerRoute> {
        &self.adj_in
    }

    /// Prefixes currently advertised to the peer.
    #[must_use]
    pub fn advertised(&self) -> &BTreeMap<IpNet, Advert> {
        &self.adj_out_sent
    }

    /// Counters for `show bgp`.
    #[must_use]
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// The negotiated hold time of the established connection.
    #[must_use]
    pub fn negotiated_hold_time(&self) -> Option<Duration> {
        self.conns
            .iter()
            .find(|c| c.state == State::Established)
            .map(|c| c.hold)
    }

    /// ManualStart (event 1).
    pub fn handle_start(&mut self, now: Instant) {
        self.started = true;
        self.fsm(now, Event::Start);
    }

    /// ManualStop (event 2): Cease with `reason` (6/2 shutdown, 6/3
    /// de-configured, 6/4 reset, 6/6 configuration change).
    pub fn handle_stop(&mut self, now: Instant, reason: CeaseSubcode) {
        self.started = false;
        self.fsm(now, Event::Stop(reason));
    }

    /// A TCP connection to or from the peer is up (events 16/17).
    pub fn handle_connected(&mut self, now: Instant, id: ConnId, dir: Direction) {
        if dir == Direction::Outgoing {
            self.connecting = false;
        }
        let busy = self.conns.iter().any(|c| c.dir == dir || c.id == id);
        let backing_off =
            self.base == State::Idle && self.idle_hold.is_some() && self.refuse_in_idle;
        if !self.started || backing_off || busy {
            // Idle refuses connections (RFC 4271 § 8.2.2) while stopped or
            // backing off after a prefix-limit Cease; a second connection
            // in the same direction is refused too.
            self.queue_message(
                id,
                &Message::Notification(Notification::cease(CeaseSubcode::ConnectionRejected)),
                Codec::default(),
            );
            self.actions.push_back(Action::Close(id));
            return;
        }
        if self.base == State::Idle {
            // The peer reconnected before our IdleHoldTimer: take it
            // (AutomaticStart with passive TCP establishment, event 5).
            self.idle_hold = None;
            self.base = State::Active;
        }
        self.conns.push(Conn {
            id,
            dir,
            state: State::Connect,
            rx: Vec::new(),
            peer_open: None,
            codec: Codec::default(),
            hold: Duration::ZERO,
            keepalive: Duration::ZERO,
            hold_deadline: None,
            keepalive_deadline: None,
        });
        self.conn_event(now, id, ConnEvent::TcpConnected);
    }

    /// A TCP connection closed or an outgoing connect failed (event 18).
    pub fn handle_closed(&mut self, now: Instant, id: ConnId) {
        if self.conns.iter().any(|c| c.id == id) {
            self.conn_event(now, id, ConnEvent::TcpConnectionFails);
        } else if self.connecting {
            self.connecting = false;
            self.fsm(now, Event::TcpConnectionFails);
        }
    }

    /// Bytes received on a connection.
    pub fn handle_data(&mut self, now: Instant, id: ConnId, data: &[u8]) {
        let Some(c) = self.conns.iter_mut().find(|c| c.id == id) else {
            return;
        };
        c.rx.extend_from_slice(data);
        loop {
            let Some(c) = self.conns.iter_mut().find(|c| c.id == id) else {
                return;
            };
            let len = match Message::frame_len(&c.rx) {
                Ok(Some(len)) if c.rx.len() >= len => len,
                Ok(_) => return,
                Err(MessageError::Notify(n)) => {
                    c.rx.clear();
                    self.conn_event(now, id, ConnEvent::MsgErr(n));
                    return;
                }
                Err(MessageError::Update(_)) => return,
            };
            let frame: Vec<u8> = c.rx.drain(..len).collect();
            let ev = match Message::parse(&frame, c.codec) {
                Ok(Message::Open(o)) => ConnEvent::BgpOpen(o),
                Ok(Message::Keepalive) => ConnEvent::KeepAliveMsg,
                Ok(Message::Update(u)) => ConnEvent::UpdateMsg(u),
                Ok(Message::Notification(n)) => ConnEvent::NotifMsg(n),
                Ok(Message::RouteRefresh(rr)) => ConnEvent::RouteRefresh(rr),
                Err(
                    MessageError::Notify(n) | MessageError::Update(UpdateError::SessionReset(n)),
                ) => ConnEvent::MsgErr(n),
                Err(MessageError::Update(UpdateError::TreatAsWithdraw {
                    withdrawn,
                    notification,
                })) => ConnEvent::UpdateTreatAsWithdraw(withdrawn, notification),
            };
            self.conn_event(now, id, ev);
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.stale_deadline.is_some_and(|t| t <= now) {
            self.stale_deadline = None;
            let all: Vec<IpNet> = self.stale.iter().copied().collect();
            for p in all {
                self.drop_stale(p);
            }
        }
        if self.idle_hold.is_some_and(|t| t <= now) {
            self.idle_hold = None;
            self.fsm(now, Event::IdleHoldTimerExpires);
        }
        if self.connect_retry.is_some_and(|t| t <= now) {
            self.connect_retry = None;
            self.fsm(now, Event::ConnectRetryTimerExpires);
        }
        let due: Vec<(ConnId, bool, bool)> = self
            .conns
            .iter()
            .map(|c| {
                (
                    c.id,
                    c.hold_deadline.is_some_and(|t| t <= now),
                    c.keepalive_deadline.is_some_and(|t| t <= now),
                )
            })
            .collect();
        for (id, hold, ka) in due {
            if hold {
                self.conn_event(now, id, ConnEvent::HoldTimerExpires);
            } else if ka {
                self.conn_event(now, id, ConnEvent::KeepaliveTimerExpires);
            }
        }
    }

    /// The earliest timer, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns
            .iter()
            .flat_map(|c| [c.hold_deadline, c.keepalive_deadline])
            .chain([self.connect_retry, self.idle_hold, self.stale_deadline])
            .flatten()
            .min()
    }

    /// Next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next action for the caller.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Next log entry.
    pub fn poll_log(&mut self) -> Option<BgpLogEvent> {
        self.logs.pop_front()
    }

    /// Sets what we advertise. When Established, the difference is sent at
    /// once; otherwise it is sent after the session comes up. At most
    /// `max_advertised` prefixes are sent (the lowest ones); the rest are
    /// logged and dropped.
    pub fn set_advertised(&mut self, now: Instant, adverts: impl IntoIterator<Item = Advert>) {
        let mut wanted: BTreeMap<IpNet, Advert> =
            adverts.into_iter().map(|a| (a.prefix.trunc(), a)).collect();
        let limit = usize::try_from(self.cfg.max_advertised).unwrap_or(usize::MAX);
        if wanted.len() > limit {
            self.logs.push_back(BgpLogEvent::status(
                true,
                msg::advertised_limit(wanted.len(), self.cfg.peer_addr, self.cfg.max_advertised),
            ));
            while wanted.len() > limit {
                wanted.pop_last();
            }
        }
        self.adj_out_wanted = wanted;
        let _ = now;
        if let Some(id) = self.established_conn() {
            self.sync_adj_out(id);
        }
    }

    /// Asks the peer to re-send its routes for `afi` (RFC 2918), e.g. after
    /// a policy change. Returns false (nothing sent) unless Established and
    /// the peer announced the route refresh capability.
    pub fn request_refresh(&mut self, afi: Afi) -> bool {
        let Some(c) = self.conns.iter().find(|c| c.state == State::Established) else {
            return false;
        };
        let supported = c
            .peer_open
            .as_ref()
            .is_some_and(|o| o.has(|c| matches!(c, Capability::RouteRefresh)));
        if !supported {
            return false;
        }
        let (id, codec) = (c.id, c.codec);
        let rr = RouteRefresh {
            afi,
            subtype: 0,
            safi: Safi::Unicast,
        };
        self.queue_message(id, &Message::RouteRefresh(rr), codec);
        true
    }

    fn established_conn(&self) -> Option<ConnId> {
        self.conns
            .iter()
            .find(|c| c.state == State::Established)
            .map(|c| c.id)
    }

    fn log_status(&mut self, up: bool, details: String) {
        self.logs.push_back(BgpLogEvent::status(up, details));
    }

    fn queue_message(&mut self, id: ConnId, m: &Message, codec: Codec) {
        let data = m.to_bytes(codec);
        match self.transmits.back_mut() {
            Some(t) if t.conn == id => t.data.extend_from_slice(&data),
            _ => self.transmits.push_back(Transmit { conn: id, data }),
        }
    }

    fn update_reported(&mut self) {
        let new = self
            .conns
            .iter()
            .map(|c| c.state)
            .max()
            .filter(|s| *s >= State::OpenSent)
            .unwrap_or(self.base);
        let old = self.reported;
        if new != old {
            self.reported = new;
            self.log_status(
                new == State::Established,
                msg::state_changed(old, new, self.cfg.peer_addr),
            );
            if old == State::Established {
                self.stats.established_at = None;
                if let Some((_, families)) = self.gr_pending_down.take() {
                    // RFC 4724 § 4.2: keep the families the peer preserves,
                    // marked stale; withdraw the others.
                    let mut gone = Vec::new();
                    for p in self.adj_in.keys() {
                        if families.contains(&Afi::from(*p)) {
                            self.stale.insert(*p);
                        } else {
                            gone.push(*p);
                        }
                    }
                    for p in gone {
                        self.adj_in.remove(&p);
                        self.actions.push_back(Action::Withdraw { prefix: p });
                    }
                    self.log_status(
                        false,
                        msg::gr_retained(self.stale.len(), self.cfg.peer_addr),
                    );
                } else {
                    self.adj_in.clear();
                    self.stale.clear();
                    self.stale_deadline = None;
                    self.actions.push_back(Action::WithdrawAll);
                }
                self.adj_out_sent.clear();
                self.stats.eor_received.clear();
                self.stats.eor_sent.clear();
                self.warned_at = None;
            }
        }
    }

    /// Session-level FSM: Idle / Connect / Active.
    fn fsm(&mut self, now: Instant, ev: Event) {
        let retry = Duration::from_secs(u64::from(self.cfg.connect_retry_secs));
        let next = match (self.base, ev) {
            (State::Idle, Event::Start | Event::IdleHoldTimerExpires) => {
                if !self.started {
                    None
                } else if self.cfg.passive {
                    self.connect_retry = None;
                    Some(State::Active)
                } else {
                    self.connect_retry = Some(now + retry);
                    self.start_connect();
                    Some(State::Connect)
                }
            }
            (State::Connect | State::Active, Event::ConnectRetryTimerExpires) => {
                // Connect: the attempt is taking too long, try again
                // (RFC 4271 § 8.2.2, Connect state, event 9).
                self.connect_retry = Some(now + retry);
                if self.conns.is_empty() {
                    self.start_connect();
                    Some(State::Connect)
                } else {
                    None
                }
            }
            (State::Connect, Event::TcpConnectionFails) => {
                self.connect_retry = Some(now + retry);
                Some(State::Active)
            }
            (_, Event::Stop(sub)) => {
                let ids: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
                for id in ids {
                    self.close_conn(id, Some(Notification::cease(sub)));
                }
                self.connect_retry = None;
                self.idle_hold = None;
                self.connecting = false;
                Some(State::Idle)
            }
            (_, Event::Start) => None,
            (s, ev) => {
                // Events with no effect in this state (timers raced).
                let _ = (s, ev);
                None
            }
        };
        if let Some(s) = next {
            self.base = s;
        }
        self.update_reported();
    }

    fn start_connect(&mut self) {
        if !self.connecting && !self.conns.iter().any(|c| c.dir == Direction::Outgoing) {
            self.connecting = true;
            self.log_status(false, msg::initiating(self.cfg.peer_addr));
            self.actions.push_back(Action::Connect);
        }
    }

    /// Drops a connection (sending `notify` first), without touching the
    /// session-level state.
    fn close_conn(&mut self, id: ConnId, notify: Option<Notification>) {
        let Some(i) = self.conns.iter().position(|c| c.id == id) else {
            return;
        };
        let c = self.conns.remove(i);
        if let Some(n) = notify {
            if c.state >= State::OpenSent {
                self.queue_message(id, &Message::Notification(n.clone()), c.codec);
            }
            self.log_status(false, msg::notification_sent(&n, self.cfg.peer_addr));
            self.stats.last_sent_notification = Some(n);
        }
        self.actions.push_back(Action::Close(id));
    }

    /// A connection failed in a way that takes the whole session down
    /// (RFC 4271: "… changes its state to Idle", with automatic restart
    /// after the IdleHoldTimer).
    fn session_error(
        &mut self,
        now: Instant,
        id: ConnId,
        notify: Option<Notification>,
        idle_hold_secs: u16,
    ) {
        let was_established = self
            .conns
            .iter()
            .any(|c| c.id == id && c.state == State::Established);
        self.close_conn(id, notify);
        let others_alive = self.conns.iter().any(|c| c.state >= State::OpenSent);
        if others_alive && !was_established {
            // The other connection of a collision carries on.
            self.update_reported();
            return;
        }
        self.go_idle(now, idle_hold_secs);
    }

    /// Closes every connection and goes to Idle; the IdleHoldTimer brings
    /// the automatic restart (event 3, AutomaticStart) while started.
    fn go_idle(&mut self, now: Instant, idle_hold_secs: u16) {
        let ids: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
        for other in ids {
            self.close_conn(
                other,
                Some(Notification::cease(CeaseSubcode::AdministrativeReset)),
            );
        }
        self.connect_retry = None;
        self.connecting = false;
        self.base = State::Idle;
        self.refuse_in_idle = false;
        if self.started {
            self.idle_hold = Some(now + Duration::from_secs(u64::from(idle_hold_secs)));
        }
        self.update_reported();
    }

    #[allow(
        clippy::too_many_lines,
        reason = "one arm per (state, event) pair, as RFC 4271 § 8.2.2 lists them"
    )]
    fn conn_event(&mut self, now: Instant, id: ConnId, ev: ConnEvent) {
        let Some(idx) = self.conns.iter().position(|c| c.id == id) else {
            return;
        };
        let state = self.conns[idx].state;
        let idle_hold = self.cfg.idle_hold_secs;
        let fsm_err = |s: State| {
            Notification::new(
                ErrorCode::Fsm,
                match s {
                    State::OpenSent => fsm_subcode::UNEXPECTED_IN_OPENSENT,
                    State::OpenConfirm => fsm_subcode::UNEXPECTED_IN_OPENCONFIRM,
                    _ => fsm_subcode::UNEXPECTED_IN_ESTABLISHED,
                },
            )
        };
        match (state, ev) {
            (State::Connect, ConnEvent::TcpConnected) => {
                let open = self.cfg.open();
                self.log_status(false, msg::open_sent(&open, self.cfg.peer_addr));
                self.queue_message(id, &Message::Open(open), Codec::default());
                let c = &mut self.conns[idx];
                c.state = State::OpenSent;
                // RFC 4271 § 8.2.2: a large hold timer (4 minutes) in OpenSent.
                c.hold_deadline = Some(now + Duration::from_secs(240));
                self.connect_retry = None;
                self.update_reported();
            }
            (State::OpenSent, ConnEvent::BgpOpen(open)) => self.handle_open(now, idx, open),
            (State::OpenConfirm | State::Established, ConnEvent::BgpOpen(_)) => {
                self.session_error(now, id, Some(fsm_err(state)), idle_hold);
            }
            (State::OpenConfirm, ConnEvent::KeepAliveMsg) => {
                let c = &mut self.conns[idx];
                c.state = State::Established;
                if !c.hold.is_zero() {
                    c.hold_deadline = Some(now + c.hold);
                }
                self.stats.established_at = Some(now);
                self.stats.established_transitions += 1;
                if !self.stale.is_empty() {
                    // RFC 4724 § 4.2: families the restarted peer no longer
                    // preserves (F bit clear) lose their stale routes now.
                    let keep: Vec<Afi> = self.conns[idx]
                        .peer_open
                        .as_ref()
                        .and_then(gr_capability_forwarding)
                        .unwrap_or_default();
                    let drop: Vec<IpNet> = self
                        .stale
                        .iter()
                        .filter(|p| !keep.contains(&Afi::from(**p)))
                        .copied()
                        .collect();
                    for p in drop {
                        self.drop_stale(p);
                    }
                    self.stale_deadline = Some(now + Duration::from_secs(STALE_ROUTES_SECS));
                }
                self.update_reported();
                self.sync_adj_out(id);
            }
            (State::Established, ConnEvent::KeepAliveMsg) => self.restart_hold(now, idx),
            (State::Established, ConnEvent::UpdateMsg(u)) => {
                self.restart_hold(now, idx);
                self.handle_update(now, id, u);
            }
            (State::Established, ConnEvent::UpdateTreatAsWithdraw(prefixes, n)) => {
                self.restart_hold(now, idx);
                self.stats.treat_as_withdraw += 1;
                for p in prefixes {
                    if let Some(old) = self.adj_in.remove(&p) {
                        self.logs.push_back(BgpLogEvent::route(
                            RouteLogStatus::Withdrawn,
                            p,
                            &old,
                            Some(format!(
                                "treat-as-withdraw: malformed UPDATE ({})",
                                n.name()
                            )),
                        ));
                        self.actions.push_back(Action::Withdraw { prefix: p });
                    }
                }
            }
            (State::Established, ConnEvent::RouteRefresh(rr)) => {
                // RFC 2918: re-advertise the Adj-RIB-Out for the family.
                let afi = rr.afi;
                self.adj_out_sent.retain(|p, _| Afi::from(*p) != afi);
                self.sync_adj_out(id);
            }
            (
                State::OpenSent | State::OpenConfirm,
                ConnEvent::RouteRefresh(_)
                | ConnEvent::UpdateMsg(_)
                | ConnEvent::UpdateTreatAsWithdraw(..),
            ) => {
                self.session_error(now, id, Some(fsm_err(state)), idle_hold);
            }
            (State::OpenSent, ConnEvent::KeepAliveMsg) => {
                self.session_error(now, id, Some(fsm_err(state)), idle_hold);
            }
            (State::OpenConfirm | State::Established, ConnEvent::KeepaliveTimerExpires) => {
                let codec = self.conns[idx].codec;
                self.queue_message(id, &Message::Keepalive, codec);
                let c = &mut self.conns[idx];
                c.keepalive_deadline = Some(now + c.keepalive);
            }
            (_, ConnEvent::HoldTimerExpires) => {
                self.log_status(false, msg::hold_timer_expired_sent(self.cfg.peer_addr));
                let n = Notification::new(ErrorCode::HoldTimerExpired, 0);
                self.stats.last_sent_notification = Some(n.clone());
                if let Some(c) = self.conns.iter().find(|c| c.id == id) {
                    let codec = c.codec;
                    self.queue_message(id, &Message::Notification(n), codec);
                }
                self.session_error(now, id, None, idle_hold);
            }
            (_, ConnEvent::NotifMsg(n)) => {
                self.log_status(false, msg::notification_received(&n, self.cfg.peer_addr));
                self.stats.last_received_notification = Some(n);
                self.session_error(now, id, None, idle_hold);
            }
            (_, ConnEvent::MsgErr(n)) => {
                self.session_error(now, id, Some(n), idle_hold);
            }
            (_, ConnEvent::TcpConnectionFails) => {
                let c = self.conns.remove(idx);
                let others = self.conns.iter().any(|o| o.state >= State::OpenSent);
                match c.state {
                    // The other connection of a collision carries on.
                    State::OpenSent | State::OpenConfirm if others => self.update_reported(),
                    // RFC 4271 § 8.2.2, OpenSent + event 18: → Active.
                    State::OpenSent => {
                        self.base = State::Active;
                        self.connect_retry =
                            Some(now + Duration::from_secs(u64::from(self.cfg.connect_retry_secs)));
                        self.update_reported();
                    }
                    // OpenConfirm / Established + event 18: → Idle.
                    // A peer that announced graceful restart keeps its
                    // routes (stale) for its restart time.
                    _ => {
                        if c.state == State::Established
                            && let Some((secs, families)) =
                                c.peer_open.as_ref().and_then(gr_capability)
                            && secs > 0
                        {
                            let t = Duration::from_secs(u64::from(secs));
                            self.gr_pending_down = Some((t, families));
                            self.stale_deadline = Some(now + t);
                        }
                        self.go_idle(now, idle_hold);
                    }
                }
            }
            (s, ev) => {
                // The single "FSM error" arm: anything else in this state.
                let _ = ev;
                self.session_error(now, id, Some(fsm_err(s)), idle_hold);
            }
        }
    }

    fn drop_stale(&mut self, p: IpNet) {
        self.stale.remove(&p);
        if let Some(old) = self.adj_in.remove(&p) {
            self.logs.push_back(BgpLogEvent::route(
                RouteLogStatus::Withdrawn,
                p,
                &old,
                Some("stale after graceful restart".to_owned()),
            ));
            self.actions.push_back(Action::Withdraw { prefix: p });
        }
    }

    fn restart_hold(&mut self, now: Instant, idx: usize) {
        let c = &mut self.conns[idx];
        if !c.hold.is_zero() {
            c.hold_deadline = Some(now + c.hold);
        }
    }

    /// OpenSent + BGPOpen: check the OPEN, negotiate, resolve collisions.
    fn handle_open(&mut self, now: Instant, idx: usize, open: Open) {
        let id = self.conns[idx].id;
        let idle_hold = self.cfg.idle_hold_secs;
        self.log_status(false, msg::open_received(&open, self.cfg.peer_addr));
        // RFC 4271 § 6.2, checks in its order.
        if open.version != BGP_VERSION {
            let n = Notification::with_data(
                ErrorCode::Open,
                open_subcode::UNSUPPORTED_VERSION,
                &u16::from(BGP_VERSION).to_be_bytes(),
            );
            self.session_error(now, id, Some(n), idle_hold);
            return;
        }
        let asn = open.asn();
        if asn != self.cfg.peer_asn {
            self.log_status(
                false,
                msg::bad_open(asn, self.cfg.peer_asn, self.cfg.peer_addr),
            );
            let n = Notification::new(ErrorCode::Open, open_subcode::BAD_PEER_AS);
            self.session_error(now, id, Some(n), idle_hold);
            return;
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            let n = Notification::new(ErrorCode::Open, open_subcode::UNACCEPTABLE_HOLD_TIME);
            self.session_error(now, id, Some(n), idle_hold);
            return;
        }
        if open.bgp_id.is_unspecified()
            || open.bgp_id.is_multicast()
            || open.bgp_id == Ipv4Addr::BROADCAST
        {
            let n = Notification::new(ErrorCode::Open, open_subcode::BAD_BGP_ID);
            self.session_error(now, id, Some(n), idle_hold);
            return;
        }
        // Collision detection (RFC 4271 § 6.8) against the other connection.
        if let Some(other) = self
            .conns
            .iter()
            .find(|c| c.id != id && c.state >= State::OpenConfirm)
            .map(|c| (c.id, c.dir, c.state))
        {
            let (oid, odir, ostate) = other;
            let keep_ours_initiated = u32::from(self.cfg.router_id) > u32::from(open.bgp_id);
            let this_dir = self.conns[idx].dir;
            let close_this = ostate == State::Established
                || (keep_ours_initiated && this_dir == Direction::Incoming)
                || (!keep_ours_initiated && this_dir == Direction::Outgoing);
            let victim = if close_this { id } else { oid };
            let _ = odir;
            self.log_status(false, msg::collision(self.cfg.peer_addr));
            self.close_conn(
                victim,
                Some(Notification::cease(
                    CeaseSubcode::ConnectionCollisionResolution,
                )),
            );
            if close_this {
                self.update_reported();
                return;
            }
        }
        let Some(idx) = self.conns.iter().position(|c| c.id == id) else {
            return;
        };
        let ours = u64::from(self.cfg.hold_time_secs);
        let hold = ours.min(u64::from(open.hold_time));
        let keepalive = if hold == 0 {
            0
        } else {
            u64::from(self.cfg.keepalive_secs).min(hold / 3).max(1)
        };
        let four = open.four_octet_as();
        let c = &mut self.conns[idx];
        c.codec = Codec {
            four_octet_as: four,
            external: true,
        };
        c.hold = Duration::from_secs(hold);
        c.keepalive = Duration::from_secs(keepalive);
        c.hold_deadline = (hold > 0).then(|| now + c.hold);
        c.keepalive_deadline = (keepalive > 0).then(|| now + c.keepalive);
        c.peer_open = Some(open);
        c.state = State::OpenConfirm;
        let codec = c.codec;
        self.queue_message(id, &Message::Keepalive, codec);
        self.update_reported();
    }

    fn families(&self, id: ConnId) -> (bool, bool) {
        let Some(open) = self
            .conns
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.peer_open.as_ref())
        else {
            return (false, false);
        };
        let peer_mp = open.has(|c| matches!(c, Capability::Multiprotocol { .. }));
        // Without any multiprotocol capability the peer speaks IPv4 unicast
        // only (RFC 4760 § 8).
        let v4 = self.cfg.ipv4 && (!peer_mp || open.multiprotocol(Afi::Ipv4));
        let v6 = self.cfg.ipv6 && open.multiprotocol(Afi::Ipv6);
        (v4, v6)
    }

    /// Established + UpdateMsg: policy, Adj-RIB-In, prefix limit.
    fn handle_update(&mut self, now: Instant, id: ConnId, u: Update) {
        if let Some((afi, _)) = u.as_end_of_rib() {
            if !self.stats.eor_received.contains(&afi) {
                self.stats.eor_received.push(afi);
            }
            // RFC 4724 § 4.2: stale routes not refreshed before End-of-RIB go.
            let drop: Vec<IpNet> = self
                .stale
                .iter()
                .filter(|p| Afi::from(**p) == afi)
                .copied()
                .collect();
            for p in drop {
                self.drop_stale(p);
            }
            if self.stale.is_empty() {
                self.stale_deadline = None;
            }
            self.actions.push_back(Action::EndOfRib(afi));
            return;
        }
        let peer = self.cfg.peer_addr;
        let a = &u.attributes;
        let mut withdrawn: Vec<IpNet> = u.withdrawn.iter().map(|n| IpNet::V4(*n)).collect();
        if let Some(mp) = &a.mp_unreach {
            withdrawn.extend(mp.withdrawn.iter().copied());
        }
        for p in withdrawn {
            self.stale.remove(&p);
            if let Some(old) = self.adj_in.remove(&p) {
                self.logs
                    .push_back(BgpLogEvent::route(RouteLogStatus::Withdrawn, p, &old, None));
                self.actions.push_back(Action::Withdraw { prefix: p });
            }
        }
        let mut reach: Vec<(IpNet, IpAddr)> = Vec::new();
        if let Some(nh) = a.next_hop {
            reach.extend(u.nlri.iter().map(|n| (IpNet::V4(*n), IpAddr::V4(nh))));
        }
        if let Some(mp) = &a.mp_reach
            && let Some(nh) = mp.next_hops.first()
        {
            reach.extend(mp.nlri.iter().map(|n| (*n, *nh)));
        }
        if reach.is_empty() {
            return;
        }
        let as_path = a.as_path.clone().unwrap_or_default();
        self.log_status(true, msg::attribute_update(&as_path, peer));
        let own_as = as_path.contains(self.cfg.local_asn);
        for (prefix, nh) in reach {
            let route = PeerRoute {
                origin: a.origin.unwrap_or(Origin::Incomplete),
                as_path: as_path.clone(),
                med: a.med,
                local_pref: a.local_pref,
                next_hop: nh,
                communities: a.communities.clone(),
            };
            let denied = if own_as {
                Some(msg::DENIED_OWN_AS)
            } else if !self.cfg.is_connected(nh) {
                Some(msg::DENIED_NEXTHOP)
            } else {
                None
            };
            if let Some(why) = denied {
                self.stats.denied += 1;
                let status = if self.adj_in.contains_key(&prefix) {
                    RouteLogStatus::Updated
                } else {
                    RouteLogStatus::Advertised
                };
                self.logs.push_back(BgpLogEvent::route(
                    status,
                    prefix,
                    &route,
                    Some(why.to_owned()),
                ));
                // A denied replacement withdraws the previous path.
                if self.adj_in.remove(&prefix).is_some() {
                    self.actions.push_back(Action::Withdraw { prefix });
                }
                continue;
            }
            let status = match self.adj_in.get(&prefix) {
                Some(old) if *old == route => {
                    self.stale.remove(&prefix);
                    continue;
                }
                Some(_) => RouteLogStatus::Updated,
                None => RouteLogStatus::Advertised,
            };
            self.logs
                .push_back(BgpLogEvent::route(status, prefix, &route, None));
            self.stale.remove(&prefix);
            self.adj_in.insert(prefix, route.clone());
            self.actions.push_back(Action::Announce { prefix, route });
        }
        self.check_prefix_limit(now, id);
    }

    fn check_prefix_limit(&mut self, now: Instant, id: ConnId) {
        let count = self.adj_in.len();
        let limit = self.cfg.max_prefixes;
        let peer = self.cfg.peer_addr;
        if count > usize::try_from(limit).unwrap_or(usize::MAX) {
            self.log_status(false, msg::max_prefix_exceeded(count, peer, limit));
            let afi = self
                .adj_in
                .keys()
                .next_back()
                .map_or(Afi::Ipv4, |p| Afi::from(*p));
            let n = Notification::with_data(
                ErrorCode::Cease,
                CeaseSubcode::MaxPrefixes.into(),
                &cease_data_max_prefix(afi, limit),
            );
            let hold = self
                .cfg
                .max_prefix_restart_secs
                .max(self.cfg.idle_hold_secs);
            self.session_error(now, id, Some(n), hold);
            self.refuse_in_idle = true;
            return;
        }
        let threshold = u64::from(limit) * u64::from(self.cfg.warning_percent) / 100;
        if count as u64 >= threshold {
            let interval = Duration::from_secs(u64::from(self.cfg.warning_interval_secs));
            if self.warned_at.is_none_or(|t| now >= t + interval) {
                self.warned_at = Some(now);
                self.log_status(true, msg::max_prefix_warning(count, peer, limit));
            }
        } else {
            self.warned_at = None;
        }
    }

    /// Sends the difference between the wanted and the sent Adj-RIB-Out,
    /// then End-of-RIB for each family the first time.
    fn sync_adj_out(&mut self, id: ConnId) {
        let Some(codec) = self.conns.iter().find(|c| c.id == id).map(|c| c.codec) else {
            return;
        };
        let (v4, v6) = self.families(id);
        let allowed = |p: &IpNet| match p {
            IpNet::V4(_) => v4,
            IpNet::V6(_) => v6,
        };
        // Withdrawals.
        let gone: Vec<IpNet> = self
            .adj_out_sent
            .keys()
            .filter(|p| !self.adj_out_wanted.contains_key(p))
            .copied()
            .collect();
        let (gone4, gone6): (Vec<IpNet>, Vec<IpNet>) =
            gone.iter().partition(|p| p.addr().is_ipv4());
        for chunk in gone4.chunks(800) {
            let u = Update {
                withdrawn: chunk
                    .iter()
                    .filter_map(|p| match p {
                        IpNet::V4(n) => Some(*n),
                        IpNet::V6(_) => None,
                    })
                    .collect(),
                ..Update::default()
            };
            self.queue_message(id, &Message::Update(u), codec);
        }
        for chunk in gone6.chunks(200) {
            let u = Update {
                attributes: PathAttributes {
                    mp_unreach: Some(MpUnreach {
                        afi: Afi::Ipv6,
                        safi: Safi::Unicast,
                        withdrawn: chunk.to_vec(),
                    }),
                    ..PathAttributes::default()
                },
                ..Update::default()
            };
            self.queue_message(id, &Message::Update(u), codec);
        }
        for p in gone {
            self.adj_out_sent.remove(&p);
        }
        // Announcements, grouped by identical attributes.
        let mut groups: BTreeMap<AttrKey, Vec<IpNet>> = BTreeMap::new();
        for (p, a) in &self.adj_out_wanted {
            if !allowed(p) || self.adj_out_sent.get(p) == Some(a) {
                continue;
            }
            groups
                .entry((p.addr().is_ipv6(), a.med, a.prepend, a.communities.clone()))
                .or_default()
                .push(*p);
        }
        for ((is_v6, med, prepend, communities), prefixes) in groups {
            let mut as_path = AsPath::sequence(&[self.cfg.local_asn]);
            as_path.prepend(self.cfg.local_asn, usize::from(prepend));
            let base = PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(as_path),
                med,
                communities,
                ..PathAttributes::default()
            };
            // 4096-byte messages hold ~700 IPv4 /24s or ~200 IPv6 /48s with
            // these attributes; stay well below.
            for chunk in prefixes.chunks(if is_v6 { 150 } else { 600 }) {
                let mut attrs = base.clone();
                let mut u = Update::default();
                if is_v6 {
                    let nh = self
                        .cfg
                        .local_addr_v6
                        .unwrap_or_else(|| match self.cfg.local_addr {
                            IpAddr::V6(a) => a,
                            IpAddr::V4(a) => a.to_ipv6_mapped(),
                        });
                    attrs.mp_reach = Some(MpReach {
                        afi: Afi::Ipv6,
                        safi: Safi::Unicast,
                        next_hops: vec![IpAddr::V6(nh)],
                        nlri: chunk.to_vec(),
                    });
                } else {
                    attrs.next_hop = match self.cfg.local_addr {
                        IpAddr::V4(a) => Some(a),
                        IpAddr::V6(_) => Some(self.cfg.router_id),
                    };
                    u.nlri = chunk
                        .iter()
                        .filter_map(|p| match p {
                            IpNet::V4(n) => Some(*n),
                            IpNet::V6(_) => None,
                        })
                        .collect();
                }
                u.attributes = attrs;
                self.queue_message(id, &Message::Update(u), codec);
            }
            for p in prefixes {
                if let Some(a) = self.adj_out_wanted.get(&p) {
                    self.adj_out_sent.insert(p, a.clone());
                }
            }
        }
        for (afi, on) in [(Afi::Ipv4, v4), (Afi::Ipv6, v6)] {
            if on && !self.stats.eor_sent.contains(&afi) {
                self.queue_message(
                    id,
                    &Message::Update(Update::end_of_rib(afi, Safi::Unicast)),
                    codec,
                );
                self.stats.eor_sent.push(afi);
                self.log_status(true, msg::eor_sent(self.cfg.peer_addr));
            }
        }
    }
}

/// The peer's graceful restart capability: restart time and the unicast
/// families it covers.
fn gr_capability(open: &Open) -> Option<(u16, Vec<Afi>)> {
    open.capabilities.iter().find_map(|c| match c {
        Capability::GracefulRestart {
            time_secs,
            families,
            ..
        } => Some((
            *time_secs,
            families
                .iter()
                .filter(|(_, safi, _)| *safi == Safi::Unicast)
                .map(|(afi, _, _)| *afi)
                .collect(),
        )),
        _ => None,
    })
}

/// Families whose forwarding state the (restarted) peer preserved: the F
/// bit (0x80) of its graceful restart capability.
fn gr_capability_forwarding(open: &Open) -> Option<Vec<Afi>> {
    open.capabilities.iter().find_map(|c| match c {
        Capability::GracefulRestart { families, .. } => Some(
            families
                .iter()
                .filter(|(_, safi, f)| *safi == Safi::Unicast && f & 0x80 != 0)
                .map(|(afi, _, _)| *afi)
                .collect(),
        ),
        _ => None,
    })
}

impl From<IpNet> for Afi {
    fn from(p: IpNet) -> Self {
        match p {
            IpNet::V4(_) => Self::Ipv4,
            IpNet::V6(_) => Self::Ipv6,
        }
    }
}
