//! BGP for `vpnd`'s dynamic-routing tunnels: one sans-IO
//! [`control::bgp::Session`] per tunnel, driven over kernel TCP between the
//! tunnel's inside addresses, every session's routes selected in one
//! [`Rib`] and the result handed to the dataplane's FIB.
//!
//! ```text
//!   BGP thread (run), one poll(2) loop, non-blocking sockets:
//!     every 100 ms: lock Manager ──► bgp_specs(config), tunnel states
//!                   ──► BgpService::reconcile: peers added / removed / re-advertised;
//!                       IPsec UP   ─► Rib::set_tunnel_up(true),  Session::handle_start
//!                       IPsec DOWN ─► Rib::set_tunnel_up(false) (routes withdrawn at once),
//!                                     Session::handle_stop (session reset, sockets closed)
//!                   ──► publish: bgp_state ─► set_tunnel_state (UP needs Established),
//!                                neighbours ─► show bgp
//!     poll: listener <inside-ip>:179 (IP_FREEBIND) ── accept ─► handle_connected(Incoming)
//!           connect <inside-ip> → <peer-ip>:179     ── ready ─► handle_connected(Outgoing)
//!           streams ── bytes ─► handle_data, EOF/error ─► handle_closed
//!           timers  ─► handle_timeout
//!     drive: poll_transmit ─► write (bounded send buffer per connection)
//!            poll_action   ─► Connect / Close / Announce / Withdraw ─► Rib
//!            poll_log      ─► BGPStatus / RouteStatus log entries
//!     changed? lock Manager ──► set_dynamic_routes (Rib::selected, BGP only, each
//!                               with its backup path; the dataplane rebuilds the
//!                               FIB), record_log, set_tunnel_state
//! ```
//!
//! The appliance takes the first usable address of the tunnel's inside
//! /30 (/126), the customer gateway the second ([`control::bgp::peer`]).
//! The inside addresses live on the kernel (tap) port like the outside
//! ones ([`crate::kernel_port`] puts them there, with a route and a
//! neighbour for the peer): the kernel's TCP reaches the peer through the
//! worker, which routes the inside /30 into the tunnel and punts our
//! inside address to the kernel. Sockets are bound with `IP_FREEBIND`, so
//! the address may appear on the tap after vpnd starts (a connect before
//! it fails and is retried by the session's ConnectRetryTimer).
//!
//! What it never does: block (every socket is non-blocking; the only wait
//! is `poll(2)`, at most [`MAX_WAIT`]), hold the manager's lock while
//! waiting for the network, or keep unbounded state: connections per peer,
//! bytes queued per connection, bytes read per wake-up and log entries
//! waiting for the manager are all capped.

use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control::api::BgpNeighbor;
use control::bgp::peer::{adverts, ecmp_for, peer_config};
use control::bgp::wire::CeaseSubcode;
use control::bgp::{
    Action, Advert, BgpLogEvent, ConnId, Direction, NeighborSnapshot, PeerConfig, Rib,
    RouteLogStatus, RouteTarget, Session, Source, State, Steering, TunnelId,
};
use control::config::{ApplianceConfig, CustomerGateway, RoutingType};
use control::dataplane::{Dataplane, DynamicRoute, TunnelKey, TunnelRuntimeState, TunnelUpDown};
use control::logs::{
    ActivityContext, BgpLog, BgpLogMessage, BgpLogStatus, BgpLogType, IkePhaseState, LogEntry,
    TunnelActivityLog, readable_timestamp, resource_id,
};
use control::manager::Manager;
use ipnet::IpNet;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{AddressFamily, SocketFlags, SocketType, ipproto, sockopt};

/// How often the configuration and the tunnels' IPsec state are read.
/// Bounds how long a session keeps running over a tunnel IKE took down
/// (the dataplane drops that tunnel's routes in the same moment anyway).
pub const RECONCILE_PERIOD: Duration = Duration::from_millis(100);
/// Longest `poll(2)` wait.
pub const MAX_WAIT: Duration = Duration::from_millis(100);
/// BGP's TCP port.
pub const BGP_PORT: u16 = 179;
/// TCP connections kept per peer (RFC 4271 needs two during a collision).
const MAX_CONNS_PER_PEER: usize = 2;
/// Bytes queued for a connection the peer does not read; beyond this the
/// connection is closed (TcpConnectionFails).
const MAX_QUEUED_BYTES: usize = 4 << 20;
/// Reads per connection per wake-up (so one busy peer cannot starve the
/// others), each up to [`READ_CHUNK`] bytes.
const READS_PER_WAKE: usize = 8;
/// Largest read.
const READ_CHUNK: usize = 65_536;
/// Log entries waiting for the manager; older ones are dropped (counted).
const MAX_PENDING_LOGS: usize = 4096;
/// Rounds of draining a session's outputs after one input (each round
/// feeds back only socket failures, so two or three suffice).
const MAX_DRIVE_ROUNDS: usize = 16;
/// A listener that could not be bound is tried again after this long.
const LISTEN_RETRY: Duration = Duration::from_secs(5);
/// Pending connections on a listener.
const LISTEN_BACKLOG: i32 = 8;

/// One tunnel's BGP session as the configuration defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpSpec {
    /// Which tunnel.
    pub key: TunnelKey,
    /// `<connection-id>_<outside-ip>`, the logs' resource id.
    pub resource_id: String,
    /// The session's settings.
    pub peer: PeerConfig,
    /// What we advertise on it.
    pub adverts: Vec<Advert>,
}

/// The BGP sessions `config` asks for (one per tunnel of each
/// dynamic-routing connection), and why other tunnels have none.
#[must_use]
pub fn bgp_specs(config: &ApplianceConfig) -> (Vec<BgpSpec>, Vec<String>) {
    let mut specs = Vec::new();
    let mut skipped = Vec::new();
    let cgws: std::collections::HashMap<&str, &CustomerGateway> = config
        .customer_gateways
        .iter()
        .map(|g| (g.id.as_str(), g))
        .collect();
    for c in &config.connections {
        if c.routing != RoutingType::Dynamic {
            continue;
        }
        let Some(&cgw) = cgws.get(c.customer_gateway_id.as_str()) else {
            skipped.push(format!(
                "{}: customer gateway {} does not exist",
                c.id, c.customer_gateway_id
            ));
            continue;
        };
        for (i, t) in c.tunnels.iter().enumerate() {
            match peer_config(&config.gateway, cgw, c, i) {
                Ok(peer) => specs.push(BgpSpec {
                    key: TunnelKey {
                        connection_id: c.id.clone(),
                        tunnel: i,
                    },
                    resource_id: resource_id(
                        &c.id,
                        &t.outside_ip_address
                            .map_or_else(String::new, |a| a.to_string()),
                    ),
                    peer,
                    adverts: adverts(&config.gateway, c, i, Steering::Equal),
                }),
                Err(e) => skipped.push(format!("{}/{i}: {e}", c.id)),
            }
        }
    }
    (specs, skipped)
}

/// What the BGP thread needs from the locked manager.
pub trait RoutingSink {
    /// The current configuration.
    fn config(&self) -> &ApplianceConfig;
    /// A tunnel's state (IKE writes the phases, BGP the session state).
    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState;
    /// Record a tunnel's state.
    fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState);
    /// Replace the BGP routes the FIB carries.
    fn set_dynamic_routes(&mut self, routes: Vec<DynamicRoute>);
    /// Publish the neighbours for `show bgp`.
    fn set_bgp_neighbors(&mut self, neighbors: Vec<BgpNeighbor>);
    /// Record a tunnel log entry.
    fn record_log(&mut self, entry: LogEntry);
}

impl<D: Dataplane> RoutingSink for Manager<D> {
    fn config(&self) -> &ApplianceConfig {
        Self::config(self)
    }
    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState {
        self.dataplane().tunnel_state(key)
    }
    fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState) {
        self.dataplane_mut().set_tunnel_state(key, state);
    }
    fn set_dynamic_routes(&mut self, routes: Vec<DynamicRoute>) {
        self.dataplane_mut().set_dynamic_routes(routes);
    }
    fn set_bgp_neighbors(&mut self, neighbors: Vec<BgpNeighbor>) {
        Self::set_bgp_neighbors(self, neighbors);
    }
    fn record_log(&mut self, entry: LogEntry) {
        Self::record_log(self, entry);
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whether IKE has the tunnel's Child SA in the dataplane.
fn ipsec_up(st: &TunnelRuntimeState) -> bool {
    matches!(
        st.ike_phase2_state,
        IkePhaseState::Established | IkePhaseState::Rekeying
    )
}

/// A session's log event as the tunnel log record of spec § 20.3.
fn log_entry(resource_id: &str, event: BgpLogEvent) -> LogEntry {
    let now = epoch_ms();
    let record = match event {
        BgpLogEvent::Status { up, details } => {
            BgpLog::status(resource_id.to_owned(), now, up, details)
        }
        BgpLogEvent::Route(r) => BgpLog {
            resource_id: resource_id.to_owned(),
            event_timestamp: now,
            timestamp: readable_timestamp(now),
            kind: BgpLogType::RouteStatus,
            status: match r.status {
                RouteLogStatus::Advertised => BgpLogStatus::Advertised,
                RouteLogStatus::Updated => BgpLogStatus::Updated,
                RouteLogStatus::Withdrawn => BgpLogStatus::Withdrawn,
            },
            message: BgpLogMessage {
                prefix: Some(r.prefix.to_string()),
                as_path: Some(r.as_path),
                local_pref: Some(r.local_pref),
                med: Some(r.med),
                next_hop_ip: Some(r.next_hop.to_string()),
                weight: Some(r.weight),
                details: r.details,
            },
        },
    };
    LogEntry::Bgp(record)
}

/// A non-blocking TCP socket of `addr`'s family, bound with `IP_FREEBIND`
/// (the inside address may not be on the kernel port yet).
fn freebind_socket(addr: SocketAddr) -> std::io::Result<rustix::fd::OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        Some(ipproto::TCP),
    )?;
    if addr.is_ipv4() {
        sockopt::set_ip_freebind(&fd, true)?;
    } else {
        sockopt::set_ipv6_v6only(&fd, true)?;
        sockopt::set_ipv6_freebind(&fd, true)?;
    }
    sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    Ok(fd)
}

fn listen_on(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let fd = freebind_socket(addr)?;
    rustix::net::listen(&fd, LISTEN_BACKLOG)?;
    Ok(TcpListener::from(fd))
}

/// Starts a non-blocking connect from `local` (any port) to `peer`.
/// `Ok(true)`: connected already; `Ok(false)`: in progress.
fn start_connect(local: IpAddr, peer: SocketAddr) -> std::io::Result<(TcpStream, bool)> {
    let fd = freebind_socket(SocketAddr::new(local, 0))?;
    let done = match rustix::net::connect(&fd, &peer) {
        Ok(()) => true,
        Err(rustix::io::Errno::INPROGRESS) => false,
        Err(e) => return Err(e.into()),
    };
    Ok((TcpStream::from(fd), done))
}

/// One TCP connection of a session.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    /// Bytes the kernel did not take yet.
    queued: VecDeque<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        // Small messages (KEEPALIVE, UPDATE) must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            queued: VecDeque::new(),
        }
    }

    /// Writes what the kernel takes; `Err` when the connection failed.
    fn flush(&mut self) -> std::io::Result<()> {
        while !self.queued.is_empty() {
            let (head, _) = self.queued.as_slices();
            match self.stream.write(head) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => drop(self.queued.drain(..n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// An outgoing connection not established yet.
#[derive(Debug)]
struct Connecting {
    id: ConnId,
    stream: TcpStream,
    deadline: Instant,
}

/// One tunnel's session and its sockets.
#[derive(Debug)]
struct Peer {
    spec: BgpSpec,
    /// The session's handle in the RIB.
    tunnel: TunnelId,
    session: Session,
    /// Whether IKE has the tunnel up (the session runs only then).
    ipsec_up: bool,
    listener: Option<TcpListener>,
    listen_failed_at: Option<Instant>,
    conns: BTreeMap<ConnId, Conn>,
    connecting: Option<Connecting>,
    /// The session state last written to the tunnel's state.
    published_state: Option<State>,
    /// `bgp{connection, tunnel, neighbor}`: the parent of this peer's log
    /// events.
    span: tracing::Span,
}

impl Peer {
    fn local(&self) -> IpAddr {
        self.spec.peer.local_addr
    }

    fn remote(&self) -> SocketAddr {
        SocketAddr::new(self.spec.peer.peer_addr, BGP_PORT)
    }

    fn what(&self) -> String {
        format!("{}/{}", self.spec.key.connection_id, self.spec.key.tunnel)
    }

    fn ensure_listener(&mut self, now: Instant) {
        if self.listener.is_some()
            || self
                .listen_failed_at
                .is_some_and(|t| now < t + LISTEN_RETRY)
        {
            return;
        }
        let addr = SocketAddr::new(self.local(), BGP_PORT);
        match listen_on(addr) {
            Ok(l) => {
                self.span
                    .in_scope(|| tracing::info!("bgp: {} listening on {addr}", self.what()));
                self.listener = Some(l);
                self.listen_failed_at = None;
            }
            Err(e) => {
                self.span.in_scope(|| {
                    tracing::warn!("bgp: {} cannot listen on {addr}: {e}", self.what())
                });
                self.listen_failed_at = Some(now);
            }
        }
    }

    fn close_all(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.conns) {
            let _ = c.flush();
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        self.connecting = None;
    }
}

/// Which socket a poll entry is.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Listener(usize),
    Connecting(usize),
    Conn(usize, ConnId),
}

/// Every BGP session of the appliance and the RIB, without the manager:
/// configuration and tunnel state in through [`reconcile`](Self::reconcile),
/// routes, state and logs out through [`publish`](Self::publish).
#[derive(Debug)]
pub struct BgpService {
    peers: Vec<Peer>,
    rib: Rib,
    ecmp: bool,
    next_conn: u64,
    skipped: Vec<String>,
    /// The RIB changed since the routes were last handed over.
    routes_dirty: bool,
    published_routes: Vec<DynamicRoute>,
    /// The gateway's own networks as last given to the RIB.
    local_networks: Vec<IpNet>,
    logs: VecDeque<LogEntry>,
    logs_dropped: u64,
}

impl Default for BgpService {
    fn default() -> Self {
        Self::new()
    }
}

impl BgpService {
    /// No sessions.
    #[must_use]
    pub fn new() -> Self {
        Self {
            peers: Vec::new(),
            rib: Rib::new(true),
            ecmp: true,
            next_conn: 1,
            skipped: Vec::new(),
            routes_dirty: false,
            published_routes: Vec::new(),
            local_networks: Vec::new(),
            logs: VecDeque::new(),
            logs_dropped: 0,
        }
    }

    fn conn_id(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        id
    }

    fn push_log(&mut self, entry: LogEntry) {
        tracing::info!("bgp: {}", entry.render_text());
        if self.logs.len() == MAX_PENDING_LOGS {
            self.logs.pop_front();
            self.logs_dropped += 1;
        }
        self.logs.push_back(entry);
    }

    /// Make the sessions match the configuration and the tunnels' IPsec
    /// state in `m`, then [`publish`](Self::publish).
    pub fn reconcile(&mut self, now: Instant, m: &mut dyn RoutingSink) {
        let (specs, skipped) = bgp_specs(m.config());
        if skipped != self.skipped {
            for s in skipped.iter().filter(|s| !self.skipped.contains(s)) {
                tracing::info!("bgp: no session for {s}");
            }
            self.skipped = skipped;
        }
        let ecmp = ecmp_for(m.config().gateway.kind);
        if ecmp != self.ecmp {
            self.rebuild_rib(ecmp);
        }
        // Learned routes never override our own networks (the RIB leaves
        // out what they cover).
        if m.config().gateway.local_networks != self.local_networks {
            self.local_networks
                .clone_from(&m.config().gateway.local_networks);
            self.rib
                .set_local_networks(self.local_networks.iter().copied());
            self.routes_dirty = true;
        }

        // Removed or changed peers stop (Cease 6/3, de-configured); a change
        // of what we advertise only re-advertises.
        // By key, so that this pass stays linear in the number of tunnels
        // (it runs under the manager's lock, every RECONCILE_PERIOD).
        let by_key: std::collections::HashMap<&TunnelKey, &BgpSpec> =
            specs.iter().map(|s| (&s.key, s)).collect();
        let mut i = 0;
        while i < self.peers.len() {
            let p = &mut self.peers[i];
            let same = by_key
                .get(&p.spec.key)
                .copied()
                .filter(|s| s.peer == p.spec.peer && s.resource_id == p.spec.resource_id);
            match same {
                Some(s) => {
                    if s.adverts != p.spec.adverts {
                        p.spec.adverts.clone_from(&s.adverts);
                        p.session.set_advertised(now, s.adverts.iter().cloned());
                    }
                    i += 1;
                }
                None => {
                    let mut p = self.peers.remove(i);
                    p.span
                        .in_scope(|| tracing::info!("bgp: {} session removed", p.what()));
                    p.session.handle_stop(now, CeaseSubcode::PeerDeconfigured);
                    self.drive_peer_outputs(now, &mut p);
                    p.close_all();
                    self.rib.remove_tunnel(p.tunnel);
                    self.routes_dirty = true;
                    let mut st = m.tunnel_state(&p.spec.key);
                    st.bgp_state = None;
                    m.set_tunnel_state(p.spec.key.clone(), st);
                }
            }
        }
        drop(by_key);
        let present: std::collections::HashSet<TunnelKey> =
            self.peers.iter().map(|p| p.spec.key.clone()).collect();
        let mut used_ids: Option<std::collections::HashSet<u32>> = None;
        let mut next_id = 0u32;
        for s in specs {
            if present.contains(&s.key) {
                continue;
            }
            // The lowest RIB handle no peer uses.
            let used =
                used_ids.get_or_insert_with(|| self.peers.iter().map(|p| p.tunnel.0).collect());
            while used.contains(&next_id) {
                next_id += 1;
            }
            used.insert(next_id);
            let tunnel = TunnelId(next_id);
            self.rib.add_tunnel(tunnel);
            let mut session = Session::new(s.peer.clone());
            session.set_advertised(now, s.adverts.iter().cloned());
            let span = tracing::info_span!(
                "bgp",
                connection = %s.key.connection_id,
                tunnel = s.key.tunnel,
                neighbor = %s.peer.peer_addr
            );
            span.in_scope(|| {
                tracing::info!(
                    "bgp: {}/{} session {} (AS {}) -> {} (AS {})",
                    s.key.connection_id,
                    s.key.tunnel,
                    s.peer.local_addr,
                    s.peer.local_asn,
                    s.peer.peer_addr,
                    s.peer.peer_asn
                )
            });
            self.peers.push(Peer {
                spec: s,
                tunnel,
                session,
                ipsec_up: false,
                listener: None,
                listen_failed_at: None,
                conns: BTreeMap::new(),
                connecting: None,
                published_state: None,
                span,
            });
        }

        // The session runs while IKE has the tunnel up; a tunnel going
        // down withdraws its routes now and resets the session.
        for idx in 0..self.peers.len() {
            let up = ipsec_up(&m.tunnel_state(&self.peers[idx].spec.key));
            let p = &mut self.peers[idx];
            p.ensure_listener(now);
            if up == p.ipsec_up {
                continue;
            }
            p.ipsec_up = up;
            self.rib.set_tunnel_up(p.tunnel, up);
            self.routes_dirty = true;
            if up {
                p.span
                    .in_scope(|| tracing::info!("bgp: {} IPsec up: session starts", p.what()));
                p.session.handle_start(now);
            } else {
                p.span.in_scope(|| {
                    tracing::info!(
                        "bgp: {} IPsec down: routes withdrawn, session reset",
                        p.what()
                    )
                });
                // The connections close through the session's Close
                // actions (drive, below).
                p.session
                    .handle_stop(now, CeaseSubcode::AdministrativeReset);
                p.connecting = None;
            }
        }
        self.drive(now);
        self.publish(now, m);
    }

    /// A new RIB (ECMP mode changed), refilled from the sessions.
    fn rebuild_rib(&mut self, ecmp: bool) {
        self.ecmp = ecmp;
        self.rib = Rib::new(ecmp);
        self.rib
            .set_local_networks(self.local_networks.iter().copied());
        for p in &self.peers {
            self.rib.add_tunnel(p.tunnel);
            self.rib.set_tunnel_up(p.tunnel, p.ipsec_up);
            for (prefix, route) in p.session.received() {
                self.rib.announce(p.tunnel, *prefix, route.clone());
            }
        }
        self.routes_dirty = true;
    }

    /// Hand what changed to the manager: the selected BGP routes (the FIB
    /// follows), each session's state (tunnel UP/DOWN), log entries and
    /// the neighbours for `show bgp`.
    pub fn publish(&mut self, now: Instant, m: &mut dyn RoutingSink) {
        if self.routes_dirty {
            self.routes_dirty = false;
            let routes = self.selected_routes();
            if routes != self.published_routes {
                for r in &routes {
                    let via: Vec<String> = r
                        .tunnels
                        .iter()
                        .map(|k| format!("{}/{}", k.connection_id, k.tunnel))
                        .collect();
                    if !self.published_routes.contains(r) {
                        tracing::info!(
                            "bgp: FIB {} via {} (AS path {:?})",
                            r.prefix,
                            via.join(" "),
                            r.as_path
                        );
                    }
                }
                for r in &self.published_routes {
                    if !routes.iter().any(|n| n.prefix == r.prefix) {
                        tracing::info!("bgp: FIB {} removed", r.prefix);
                    }
                }
                m.set_dynamic_routes(routes.clone());
                self.published_routes = routes;
            }
        }
        for entry in self.logs.drain(..) {
            m.record_log(entry);
        }
        if self.logs_dropped > 0 {
            tracing::warn!(
                "bgp: {} log entries dropped (the manager was not reached in time)",
                self.logs_dropped
            );
            self.logs_dropped = 0;
        }
        for p in &mut self.peers {
            let state = p.session.state();
            if p.published_state == Some(state) {
                continue;
            }
            p.published_state = Some(state);
            let routing = RoutingType::Dynamic;
            let mut st = m.tunnel_state(&p.spec.key);
            let was = st.up_down(routing);
            st.bgp_state = Some(state.to_string());
            let is = st.up_down(routing);
            if is != was {
                // A dynamic-routing tunnel is UP only with BGP Established
                // (spec § 20.7): the session decides this transition, so
                // it is logged here (IKE logs the ones it causes).
                st.last_status_change_ms = Some(epoch_ms());
                let dpd_enabled = m
                    .config()
                    .connections
                    .iter()
                    .find(|c| c.id == p.spec.key.connection_id)
                    .and_then(|c| c.tunnels.get(p.spec.key.tunnel))
                    .is_some_and(|t| t.dpd_timeout_secs > 0);
                let ctx = ActivityContext {
                    dpd_enabled,
                    nat_t_detected: st.nat_t_detected,
                    ike_phase1_state: st.ike_phase1_state,
                    ike_phase2_state: st.ike_phase2_state,
                };
                let status = if is == TunnelUpDown::Up { "UP" } else { "DOWN" };
                let entry = LogEntry::Activity(TunnelActivityLog::new(
                    p.spec.resource_id.clone(),
                    epoch_ms(),
                    ctx,
                    format!("tunnel status changed to {status} (BGP {state})"),
                ));
                p.span
                    .in_scope(|| tracing::info!("bgp: {}", entry.render_text()));
                m.record_log(entry);
            }
            m.set_tunnel_state(p.spec.key.clone(), st);
        }
        m.set_bgp_neighbors(self.neighbors(now));
    }

    /// The RIB's selected BGP routes in the dataplane's terms.
    fn selected_routes(&self) -> Vec<DynamicRoute> {
        let key = |t: TunnelId| {
            self.peers
                .iter()
                .find(|p| p.tunnel == t)
                .map(|p| p.spec.key.clone())
        };
        self.rib
            .selected()
            .into_iter()
            .filter(|(_, s)| s.source == Source::Bgp)
            .filter_map(|(prefix, s)| {
                let members = match s.target {
                    RouteTarget::Tunnel(t) => vec![t],
                    RouteTarget::Ecmp(members) => members,
                    RouteTarget::Inside => Vec::new(),
                };
                // The path the RIB would pick without the selected
                // tunnels: where the dataplane sends the traffic when IKE
                // takes them down.
                let backup = self
                    .rib
                    .best_excluding(prefix, &members)
                    .filter(|b| b.source == Source::Bgp)
                    .map_or_else(Vec::new, |b| match b.target {
                        RouteTarget::Tunnel(t) => vec![t],
                        RouteTarget::Ecmp(m) => m,
                        RouteTarget::Inside => Vec::new(),
                    });
                let tunnels: Vec<TunnelKey> = members.into_iter().filter_map(key).collect();
                let path = s.path?;
                (!tunnels.is_empty()).then(|| DynamicRoute {
                    prefix,
                    tunnels,
                    backup: backup.into_iter().filter_map(key).collect(),
                    as_path: path.as_path.to_string(),
                    med: path.med,
                    next_hop: path.next_hop,
                })
            })
            .collect()
    }

    /// The neighbours, for `show bgp`.
    #[must_use]
    pub fn neighbors(&self, now: Instant) -> Vec<BgpNeighbor> {
        self.peers
            .iter()
            .map(|p| {
                let s = NeighborSnapshot::of(&p.session, now);
                BgpNeighbor {
                    connection_id: p.spec.key.connection_id.clone(),
                    tunnel: p.spec.key.tunnel,
                    local_address: p.local(),
                    neighbor: s.neighbor,
                    local_asn: s.local_asn,
                    peer_asn: s.peer_asn,
                    state: s.state.to_string(),
                    uptime_secs: s.uptime_secs,
                    established_transitions: s.established_transitions,
                    hold_time_secs: s.hold_time_secs,
                    prefixes_received: s.prefixes_received,
                    prefixes_advertised: s.prefixes_advertised,
                    denied: s.denied,
                    last_sent_notification: s.last_sent_notification,
                    last_received_notification: s.last_received_notification,
                }
            })
            .collect()
    }

    /// Whether routes or log entries wait for [`publish`](Self::publish).
    #[must_use]
    pub fn has_updates(&self) -> bool {
        self.routes_dirty
            || !self.logs.is_empty()
            || self
                .peers
                .iter()
                .any(|p| p.published_state != Some(p.session.state()))
    }

    /// Fire the sessions' due timers and time out slow connects.
    pub fn handle_timeout(&mut self, now: Instant) {
        for p in &mut self.peers {
            if p.session.poll_timeout().is_some_and(|t| t <= now) {
                p.session.handle_timeout(now);
            }
            if p.connecting.as_ref().is_some_and(|c| c.deadline <= now)
                && let Some(c) = p.connecting.take()
            {
                p.session.handle_closed(now, c.id);
            }
        }
    }

    /// The earliest timer of any session or pending connect.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .iter()
            .flat_map(|p| {
                [
                    p.session.poll_timeout(),
                    p.connecting.as_ref().map(|c| c.deadline),
                ]
            })
            .flatten()
            .min()
    }

    /// Take every session's outputs: bytes to the sockets, actions (connect,
    /// close, RIB changes), log entries.
    pub fn drive(&mut self, now: Instant) {
        let mut peers = std::mem::take(&mut self.peers);
        for p in &mut peers {
            self.drive_peer_outputs(now, p);
        }
        self.peers = peers;
    }

    fn drive_peer_outputs(&mut self, now: Instant, p: &mut Peer) {
        for _ in 0..MAX_DRIVE_ROUNDS {
            let mut progress = false;
            while let Some(t) = p.session.poll_transmit() {
                progress = true;
                let Some(c) = p.conns.get_mut(&t.conn) else {
                    continue;
                };
                c.queued.extend(&t.data);
                let failed = if c.queued.len() > MAX_QUEUED_BYTES {
                    tracing::warn!(
                        "bgp: {} connection {} has {} bytes queued: the peer does not read; closing",
                        p.spec.key.connection_id,
                        t.conn.0,
                        c.queued.len()
                    );
                    true
                } else {
                    c.flush().is_err()
                };
                if failed {
                    p.conns.remove(&t.conn);
                    p.session.handle_closed(now, t.conn);
                }
            }
            while let Some(a) = p.session.poll_action() {
                progress = true;
                match a {
                    Action::Connect => self.connect(now, p),
                    Action::Close(id) => {
                        if let Some(mut c) = p.conns.remove(&id) {
                            let _ = c.flush();
                            let _ = c.stream.shutdown(std::net::Shutdown::Both);
                        }
                        if p.connecting.as_ref().is_some_and(|c| c.id == id) {
                            p.connecting = None;
                        }
                    }
                    Action::EndOfRib(_) => {}
                    route => self.routes_dirty |= self.rib.apply(p.tunnel, &route),
                }
            }
            while let Some(l) = p.session.poll_log() {
                progress = true;
                self.push_log(log_entry(&p.spec.resource_id, l));
            }
            if !progress {
                return;
            }
        }
    }

    fn connect(&mut self, now: Instant, p: &mut Peer) {
        let id = self.conn_id();
        p.connecting = None;
        let timeout = Duration::from_secs(u64::from(p.spec.peer.connect_retry_secs.max(1)));
        match start_connect(p.local(), p.remote()) {
            Ok((stream, true)) => {
                p.conns.insert(id, Conn::new(stream));
                p.session.handle_connected(now, id, Direction::Outgoing);
            }
            Ok((stream, false)) => {
                p.connecting = Some(Connecting {
                    id,
                    stream,
                    deadline: now + timeout,
                });
            }
            Err(e) => {
                p.span.in_scope(|| {
                    tracing::warn!(
                        "bgp: {} connect {} -> {}: {e}",
                        p.what(),
                        p.local(),
                        p.remote()
                    )
                });
                p.session.handle_closed(now, id);
            }
        }
    }

    /// Wait up to `timeout` for socket events and feed them to the
    /// sessions (their outputs are taken by the next [`drive`](Self::drive)).
    pub fn poll_sockets(&mut self, timeout: Duration) {
        let mut slots = Vec::new();
        let mut fds = Vec::new();
        for (i, p) in self.peers.iter().enumerate() {
            if let Some(l) = &p.listener {
                slots.push(Slot::Listener(i));
                fds.push(PollFd::new(l, PollFlags::IN));
            }
            if let Some(c) = &p.connecting {
                slots.push(Slot::Connecting(i));
                fds.push(PollFd::new(&c.stream, PollFlags::OUT));
            }
            for (id, c) in &p.conns {
                let mut events = PollFlags::IN;
                if !c.queued.is_empty() {
                    events |= PollFlags::OUT;
                }
                slots.push(Slot::Conn(i, *id));
                fds.push(PollFd::new(&c.stream, events));
            }
        }
        let ts = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        });
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) => return,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return,
            Err(e) => {
                tracing::warn!("bgp: poll: {e}");
                std::thread::sleep(timeout);
                return;
            }
        }
        let ready: Vec<(Slot, PollFlags)> = slots
            .into_iter()
            .zip(fds.iter().map(PollFd::revents))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        drop(fds);
        let now = Instant::now();
        for (slot, revents) in ready {
            match slot {
                Slot::Listener(i) => self.accept(now, i),
                Slot::Connecting(i) => self.finish_connect(now, i),
                Slot::Conn(i, id) => self.service_conn(now, i, id, revents),
            }
        }
    }

    fn accept(&mut self, now: Instant, i: usize) {
        for _ in 0..MAX_CONNS_PER_PEER {
            let id = self.conn_id();
            let p = &mut self.peers[i];
            let Some(l) = &p.listener else { return };
            match l.accept() {
                Ok((stream, from)) => {
                    if from.ip() != p.spec.peer.peer_addr {
                        p.span.in_scope(|| {
                            tracing::warn!(
                                "bgp: {} refused a connection from {from} (the neighbour is {})",
                                p.what(),
                                p.spec.peer.peer_addr
                            )
                        });
                        continue;
                    }
                    if p.conns.len() >= MAX_CONNS_PER_PEER {
                        p.span.in_scope(|| {
                            tracing::warn!(
                                "bgp: {} refused a connection from {from}: {MAX_CONNS_PER_PEER} are open",
                                p.what()
                            );
                        });
                        continue;
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        p.span
                            .in_scope(|| tracing::warn!("bgp: {} accepted socket: {e}", p.what()));
                        continue;
                    }
                    p.conns.insert(id, Conn::new(stream));
                    p.session.handle_connected(now, id, Direction::Incoming);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    p.span
                        .in_scope(|| tracing::warn!("bgp: {} accept: {e}", p.what()));
                    return;
                }
            }
        }
    }

    fn finish_connect(&mut self, now: Instant, i: usize) {
        let p = &mut self.peers[i];
        let Some(c) = p.connecting.take() else { return };
        match sockopt::socket_error(c.stream.as_fd()) {
            Ok(Ok(())) => {
                p.conns.insert(c.id, Conn::new(c.stream));
                p.session.handle_connected(now, c.id, Direction::Outgoing);
            }
            Ok(Err(e)) => {
                p.span.in_scope(|| {
                    tracing::warn!(
                        "bgp: {} connect {} -> {}: {e}",
                        p.what(),
                        p.local(),
                        p.remote()
                    )
                });
                p.session.handle_closed(now, c.id);
            }
            Err(e) => {
                p.span
                    .in_scope(|| tracing::warn!("bgp: {} connect: SO_ERROR: {e}", p.what()));
                p.session.handle_closed(now, c.id);
            }
        }
    }

    fn service_conn(&mut self, now: Instant, i: usize, id: ConnId, revents: PollFlags) {
        let p = &mut self.peers[i];
        let Some(c) = p.conns.get_mut(&id) else {
            return;
        };
        let mut failed = revents.contains(PollFlags::OUT) && c.flush().is_err();
        let mut buf = [0u8; READ_CHUNK];
        if !failed && revents.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            for _ in 0..READS_PER_WAKE {
                let Some(c) = p.conns.get_mut(&id) else {
                    return;
                };
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        failed = true;
                        break;
                    }
                    Ok(n) => p.session.handle_data(now, id, &buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
        }
        if failed && p.conns.remove(&id).is_some() {
            p.session.handle_closed(now, id);
        }
    }
}

/// The BGP thread's loop: never returns. `with_manager` runs a closure
/// with the manager locked.
pub fn run<F>(mut with_manager: F)
where
    F: FnMut(&mut dyn FnMut(&mut dyn RoutingSink)),
{
    let mut svc = BgpService::new();
    let mut next_reconcile = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_reconcile {
            next_reconcile = now + RECONCILE_PERIOD;
            with_manager(&mut |m: &mut dyn RoutingSink| svc.reconcile(now, m));
        }
        svc.handle_timeout(Instant::now());
        svc.drive(Instant::now());
        if svc.has_updates() {
            with_manager(&mut |m: &mut dyn RoutingSink| svc.publish(Instant::now(), m));
        }
        let now = Instant::now();
        let wake = svc
            .poll_timeout()
            .unwrap_or(now + MAX_WAIT)
            .min(now + MAX_WAIT)
            .min(next_reconcile);
        svc.poll_sockets(wake.saturating_duration_since(now));
        svc.drive(Instant::now());
        if svc.has_updates() {
            with_manager(&mut |m: &mut dyn RoutingSink| svc.publish(Instant::now(), m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::bgp::wire::{AsPath, Origin};
    use control::bgp::{PeerRoute, RouteLog};

    fn config(routing: &str) -> ApplianceConfig {
        ApplianceConfig::from_toml_str(&format!(
            r#"
[gateway]
id = "tgw-s"
asn = 64512
outside_addresses = ["192.0.2.1", "192.0.2.3"]
local_networks = ["198.51.100.0/24", "2001:db8:5::/48"]

[dataplane]
worker_lcores = [1]
ports = []

[[customer_gateways]]
id = "cgw-s"
ip_address = "192.0.2.2"
bgp_asn = 65001

[[connections]]
id = "vpn-s"
customer_gateway_id = "cgw-s"
target = "tgw-s"
routing = "{routing}"

[connections.bgp]
max_prefixes = 7

[[connections.tunnels]]
outside_ip_address = "192.0.2.1"
inside_ipv4_cidr = "169.254.21.0/30"

[[connections.tunnels]]
outside_ip_address = "192.0.2.3"
inside_ipv4_cidr = "169.254.22.0/30"
"#
        ))
        .unwrap()
    }

    /// One session per tunnel of a dynamic connection, between the first
    /// (ours) and second (the gateway's) host of the inside /30, with the
    /// connection's limit, advertising the IPv4 local networks; none for
    /// static routing.
    #[test]
    fn a_dynamic_connection_has_a_session_per_tunnel() {
        let (specs, skipped) = bgp_specs(&config("dynamic"));
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(specs.len(), 2);
        let s = &specs[1];
        assert_eq!(s.key.tunnel, 1);
        assert_eq!(s.resource_id, "vpn-s_192.0.2.3");
        assert_eq!(s.peer.local_addr.to_string(), "169.254.22.1");
        assert_eq!(s.peer.peer_addr.to_string(), "169.254.22.2");
        assert_eq!((s.peer.local_asn, s.peer.peer_asn), (64512, 65001));
        assert_eq!(s.peer.max_prefixes, 7);
        assert_eq!((s.peer.hold_time_secs, s.peer.keepalive_secs), (30, 10));
        let adverts: Vec<String> = s.adverts.iter().map(|a| a.prefix.to_string()).collect();
        assert_eq!(adverts, ["198.51.100.0/24"]);

        let (specs, skipped) = bgp_specs(&config("static"));
        assert!(specs.is_empty() && skipped.is_empty());
    }

    /// A session's route event becomes the spec's `RouteStatus` record.
    #[test]
    fn route_events_become_route_status_records() {
        let route = PeerRoute {
            origin: Origin::Igp,
            as_path: AsPath::sequence(&[65001, 64512]),
            med: None,
            local_pref: None,
            next_hop: "169.254.21.2".parse().unwrap(),
            communities: Vec::new(),
        };
        let event = BgpLogEvent::Route(RouteLog {
            status: RouteLogStatus::Advertised,
            prefix: "10.66.0.0/16".parse().unwrap(),
            as_path: route.as_path.to_string(),
            local_pref: 100,
            med: 0,
            next_hop: route.next_hop,
            weight: 0,
            details: Some("DENIED due to: as-path contains our own AS".to_owned()),
        });
        let line = log_entry("vpn-s_192.0.2.1", event).render_text();
        assert!(
            line.ends_with(
                "vpn-s_192.0.2.1 type=RouteStatus status=ADVERTISED prefix=10.66.0.0/16 asPath=\"65001 64512\" localPref=100 med=0 nextHopIp=169.254.21.2 weight=0 details=\"DENIED due to: as-path contains our own AS\""
            ),
            "{line}"
        );
    }
}
