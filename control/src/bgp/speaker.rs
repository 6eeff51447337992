//! Every BGP session of the appliance and the RIB that selects among
//! them, without sockets: the pure half of the daemon's BGP (the socket
//! half is `appliance`'s). One [`Session`] per tunnel of each
//! dynamic-routing connection, their routes selected in one [`Rib`], the
//! result handed to the dataplane through a [`RoutingSink`].
//!
//! ```text
//!   configuration ─► reconcile / reconcile_connection: peers added,
//!                    removed (Cease 6/3), re-advertised
//!   IPsec up/down ─► set_ipsec_up: Rib::set_tunnel_up, Session start/stop
//!   sockets       ─► handle_incoming / handle_connected / handle_data /
//!                    handle_closed (by ConnId)
//!   timers        ─► handle_timeout (session timers, connect deadlines)
//!   poll_action   ─► Listen / Unlisten / Connect / Send / Close (the
//!                    caller's sockets)
//!   publish       ─► RoutingSink: selected routes (as a delta), tunnel
//!                    state (a dynamic tunnel is UP only with BGP
//!                    Established), log records, `show bgp`
//! ```
//!
//! Call order, like quinn's `Connection`: after any `handle_*` or
//! `reconcile*`, drain [`poll_action`](Speaker::poll_action) and call
//! [`publish`](Speaker::publish) when [`has_updates`](Speaker::has_updates);
//! wake at [`poll_timeout`](Speaker::poll_timeout).
//!
//! The appliance takes the first usable address of the tunnel's inside
//! /30 (/126), the customer gateway the second ([`super::peer`]). Who may
//! connect (the configured neighbour only, at most
//! [`MAX_CONNS_PER_PEER`] connections) is decided here.
//!
//! What it never does: read a clock (time comes in as [`Now`]), touch a
//! socket, or keep unbounded state: connections per peer and log records
//! waiting for the sink are capped. Daemon log lines go through `tracing`
//! in the peer's `bgp{connection, tunnel, neighbor}` span, as before the
//! move.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::peer::{adverts, ecmp_for, peer_config};
use super::wire::CeaseSubcode;
use super::{
    Action, Advert, BgpLogEvent, ConnId, Direction, NeighborSnapshot, PeerConfig, Rib,
    RouteLogStatus, RouteTarget, Session, Source, State, Steering, TunnelId,
};
use crate::api::BgpNeighbor;
use crate::config::{ApplianceConfig, CustomerGateway, RoutingType, VpnConnection};
use crate::dataplane::{
    Dataplane, DynamicRoute, RouteDelta, TunnelKey, TunnelRuntimeState, TunnelUpDown,
};
use crate::ike::tunnels::Now;
use crate::logs::{
    ActivityContext, BgpLog, BgpLogMessage, BgpLogStatus, BgpLogType, IkePhaseState, LogEntry,
    TunnelActivityLog, readable_timestamp, resource_id,
};
use crate::manager::Manager;

/// BGP's TCP port.
pub const BGP_PORT: u16 = 179;
/// TCP connections kept per peer (RFC 4271 needs two during a collision).
pub const MAX_CONNS_PER_PEER: usize = 2;
/// Log records waiting for the sink; older ones are dropped (counted).
const MAX_PENDING_LOGS: usize = 4096;
/// Rounds of draining a session's outputs after one input.
const MAX_DRIVE_ROUNDS: usize = 16;

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
    let cgws: HashMap<&str, &CustomerGateway> = config
        .customer_gateways
        .iter()
        .map(|g| (g.id.as_str(), g))
        .collect();
    for c in &config.connections {
        let cgw = cgws.get(c.customer_gateway_id.as_str()).copied();
        connection_specs(config, c, cgw, &mut specs, &mut skipped);
    }
    (specs, skipped)
}

/// The BGP sessions of one connection (none for static routing).
fn connection_specs(
    config: &ApplianceConfig,
    c: &VpnConnection,
    cgw: Option<&CustomerGateway>,
    specs: &mut Vec<BgpSpec>,
    skipped: &mut Vec<String>,
) {
    if c.routing != RoutingType::Dynamic {
        return;
    }
    let Some(cgw) = cgw else {
        skipped.push(format!(
            "{}: customer gateway {} does not exist",
            c.id, c.customer_gateway_id
        ));
        return;
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

/// What the speaker needs from the rest of the control core (the
/// manager): the configuration, tunnel state, the FIB's BGP routes, the
/// log ring and `show bgp`.
pub trait RoutingSink {
    /// The current configuration.
    fn config(&self) -> &ApplianceConfig;
    /// A tunnel's state (IKE writes the phases, BGP the session state).
    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState;
    /// Record a tunnel's state.
    fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState);
    /// Change the BGP routes the FIB carries by `delta`; `all` is the
    /// whole set after it.
    fn update_dynamic_routes(&mut self, delta: &RouteDelta, all: &[DynamicRoute]);
    /// Publish the neighbours for `show bgp`.
    fn set_bgp_neighbors(&mut self, neighbors: Vec<BgpNeighbor>);
    /// Whether [`set_bgp_neighbors`](Self::set_bgp_neighbors) should be
    /// called whenever a session changes. A sink that asks the speaker
    /// for [`Speaker::neighbors`] when they are shown says `false`: the
    /// list has every session, so building it per change would cost
    /// O(sessions) per change.
    fn wants_bgp_neighbors(&self) -> bool {
        true
    }
    /// Record a tunnel log entry.
    fn record_log(&mut self, entry: LogEntry);
    /// The dataplane's number of the tunnel ([`Dataplane::tunnel_id`]),
    /// which the RIB then uses too; `None`: the speaker numbers it.
    fn tunnel_id(&self, key: &TunnelKey) -> Option<TunnelId> {
        let _ = key;
        None
    }
}

impl<D: Dataplane> RoutingSink for Manager<D> {
    fn config(&self) -> &ApplianceConfig {
        Self::config(self)
    }
    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState {
        self.dataplane().tunnel_state(key)
    }
    fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState) {
        self.record_tunnel_state(key, state);
    }
    fn update_dynamic_routes(&mut self, delta: &RouteDelta, all: &[DynamicRoute]) {
        self.dataplane_mut().update_dynamic_routes(delta, all);
    }
    fn set_bgp_neighbors(&mut self, neighbors: Vec<BgpNeighbor>) {
        Self::set_bgp_neighbors(self, neighbors);
    }
    /// The control core sets them live for each `show bgp`
    /// (`Core::handle_api`), the manager's only reader of them.
    fn wants_bgp_neighbors(&self) -> bool {
        false
    }
    fn record_log(&mut self, entry: LogEntry) {
        Self::record_log(self, entry);
    }
    fn tunnel_id(&self, key: &TunnelKey) -> Option<TunnelId> {
        self.dataplane().tunnel_id(key)
    }
}

/// Whether IKE has the tunnel's Child SA in the dataplane.
#[must_use]
pub fn ipsec_up(st: &TunnelRuntimeState) -> bool {
    matches!(
        st.ike_phase2_state,
        IkePhaseState::Established | IkePhaseState::Rekeying
    )
}

/// A session's log event as the tunnel log record of spec § 20.3.
#[must_use]
pub fn log_entry(resource_id: &str, unix_ms: u64, event: BgpLogEvent) -> LogEntry {
    let record = match event {
        BgpLogEvent::Status { up, details } => {
            BgpLog::status(resource_id.to_owned(), unix_ms, up, details)
        }
        BgpLogEvent::Route(r) => BgpLog {
            resource_id: resource_id.to_owned(),
            event_timestamp: unix_ms,
            timestamp: readable_timestamp(unix_ms),
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

/// What the speaker asks of the sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum SpeakerAction {
    /// Listen on this address (a peer's inside address, port 179); accepted
    /// connections go to [`Speaker::handle_incoming`].
    Listen(SocketAddr),
    /// Stop listening on this address.
    Unlisten(SocketAddr),
    /// Open a TCP connection from `local` (any port) to `remote`; report it
    /// with [`Speaker::handle_connected`] or [`Speaker::handle_closed`].
    Connect {
        /// The connection's id.
        conn: ConnId,
        /// Our address.
        local: IpAddr,
        /// The neighbour's address and port.
        remote: SocketAddr,
    },
    /// Send these bytes (whole BGP messages) on the connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Close the connection after what was queued for it (and forget a
    /// pending connect).
    Close(ConnId),
}

/// One tunnel's session.
#[derive(Debug)]
struct Peer {
    spec: BgpSpec,
    /// The session's handle in the RIB.
    tunnel: TunnelId,
    session: Session,
    /// Whether IKE has the tunnel up (the session runs only then).
    ipsec_up: bool,
    conns: BTreeSet<ConnId>,
    /// An outgoing connection not established yet, and its deadline.
    connecting: Option<(ConnId, Instant)>,
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

    fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.local(), BGP_PORT)
    }
}

/// Every BGP session of the appliance and the RIB, without sockets (see
/// the module docs for the call order).
#[derive(Debug)]
pub struct Speaker {
    peers: BTreeMap<TunnelKey, Peer>,
    /// Connection → its peer.
    by_conn: HashMap<ConnId, TunnelKey>,
    /// Our inside address → the peer listening there.
    by_local: HashMap<IpAddr, TunnelKey>,
    /// RIB handles in use.
    used_ids: BTreeSet<u32>,
    /// The session's tunnel by RIB number (for the routes' tunnels,
    /// without a map over every session per publication).
    tunnel_keys: HashMap<TunnelId, TunnelKey>,
    rib: Rib,
    ecmp: bool,
    next_conn: u64,
    /// Why tunnels have no session, by connection.
    skipped: BTreeMap<String, Vec<String>>,
    /// The RIB changed since the routes were last handed over.
    routes_dirty: bool,
    published_routes: BTreeMap<IpNet, DynamicRoute>,
    /// The gateway's own networks as last given to the RIB.
    local_networks: Vec<IpNet>,
    /// The neighbours' table changed (`show bgp`).
    neighbors_dirty: bool,
    /// Sessions' log events not yet turned into records (they get their
    /// wall-clock time at [`publish`](Self::publish)).
    pending_bgp: VecDeque<(String, BgpLogEvent)>,
    logs: VecDeque<LogEntry>,
    logs_dropped: u64,
    actions: VecDeque<SpeakerAction>,
    /// Sessions whose state moved since it was last published.
    used: BTreeSet<TunnelKey>,
    /// Every session's next deadline (timer or connect), earliest first,
    /// and the index back: a timeout costs the sessions it concerns.
    timers: BTreeSet<(Instant, TunnelKey)>,
    deadlines: HashMap<TunnelKey, Instant>,
}

impl Default for Speaker {
    fn default() -> Self {
        Self::new()
    }
}

impl Speaker {
    /// No sessions.
    #[must_use]
    pub fn new() -> Self {
        Self {
            peers: BTreeMap::new(),
            by_conn: HashMap::new(),
            by_local: HashMap::new(),
            used_ids: BTreeSet::new(),
            tunnel_keys: HashMap::new(),
            rib: Rib::new(true),
            ecmp: true,
            next_conn: 1,
            skipped: BTreeMap::new(),
            routes_dirty: false,
            published_routes: BTreeMap::new(),
            local_networks: Vec::new(),
            neighbors_dirty: false,
            pending_bgp: VecDeque::new(),
            logs: VecDeque::new(),
            logs_dropped: 0,
            actions: VecDeque::new(),
            used: BTreeSet::new(),
            timers: BTreeSet::new(),
            deadlines: HashMap::new(),
        }
    }

    /// How many sessions are configured.
    #[must_use]
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no session is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The RIB (read-only: the speaker is its only writer).
    #[must_use]
    pub fn rib(&self) -> &Rib {
        &self.rib
    }

    /// The RIB's handle of `key`'s tunnel, if it has a session.
    #[must_use]
    pub fn tunnel_id(&self, key: &TunnelKey) -> Option<TunnelId> {
        self.peers.get(key).map(|p| p.tunnel)
    }

    /// The session of `key`'s tunnel, if it has one.
    #[must_use]
    pub fn session(&self, key: &TunnelKey) -> Option<&Session> {
        self.peers.get(key).map(|p| &p.session)
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

    /// Gateway-wide settings: ECMP mode and the local networks (learned
    /// routes never override them).
    fn gateway_settings(&mut self, config: &ApplianceConfig) {
        let ecmp = ecmp_for(config.gateway.kind);
        if ecmp != self.ecmp {
            self.rebuild_rib(ecmp);
        }
        if config.gateway.local_networks != self.local_networks {
            self.local_networks
                .clone_from(&config.gateway.local_networks);
            self.rib
                .set_local_networks(self.local_networks.iter().copied());
            self.routes_dirty = true;
        }
    }

    fn note_skipped(&mut self, connection: &str, skipped: Vec<String>) {
        let old = self.skipped.get(connection).cloned().unwrap_or_default();
        for s in skipped.iter().filter(|s| !old.contains(s)) {
            tracing::info!("bgp: no session for {s}");
        }
        if skipped.is_empty() {
            self.skipped.remove(connection);
        } else {
            self.skipped.insert(connection.to_owned(), skipped);
        }
    }

    /// Make the sessions match the whole configuration in `sink` (start,
    /// `config_import`); a new session starts at once when its tunnel's
    /// IPsec is up. Then [`publish`](Self::publish).
    pub fn reconcile(&mut self, now: Now, sink: &mut dyn RoutingSink) {
        self.gateway_settings(sink.config());
        let config = sink.config();
        let cgws: HashMap<&str, &CustomerGateway> = config
            .customer_gateways
            .iter()
            .map(|g| (g.id.as_str(), g))
            .collect();
        let mut specs = Vec::new();
        let mut skipped = BTreeMap::new();
        for c in &config.connections {
            let cgw = cgws.get(c.customer_gateway_id.as_str()).copied();
            let mut s = Vec::new();
            connection_specs(config, c, cgw, &mut specs, &mut s);
            skipped.insert(c.id.clone(), s);
        }
        drop(cgws);
        self.skipped.retain(|k, _| skipped.contains_key(k));
        for (c, s) in skipped {
            self.note_skipped(&c, s);
        }
        let wanted: BTreeMap<TunnelKey, BgpSpec> =
            specs.into_iter().map(|s| (s.key.clone(), s)).collect();
        let gone: Vec<TunnelKey> = self
            .peers
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            self.remove_peer(now, &k, sink);
        }
        for (_, s) in wanted {
            self.put_peer(now, s, sink);
        }
        self.neighbors_dirty = true;
        self.publish(now, sink);
    }

    /// Make the sessions of connection `id` match the configuration in
    /// `sink` (it changed, or was removed): the cost is this connection's,
    /// not the configuration's. Then [`publish`](Self::publish).
    pub fn reconcile_connection(&mut self, now: Now, id: &str, sink: &mut dyn RoutingSink) {
        let mut specs = Vec::new();
        let mut skipped = Vec::new();
        let config = sink.config();
        if let Some(c) = config.connections.iter().find(|c| c.id == id) {
            let cgw = config
                .customer_gateways
                .iter()
                .find(|g| g.id == c.customer_gateway_id);
            connection_specs(config, c, cgw, &mut specs, &mut skipped);
        }
        self.note_skipped(id, skipped);
        let wanted: BTreeMap<usize, BgpSpec> =
            specs.into_iter().map(|s| (s.key.tunnel, s)).collect();
        let have: Vec<TunnelKey> = self
            .peers
            .range(connection_range(id))
            .map(|(k, _)| k.clone())
            .filter(|k| !wanted.contains_key(&k.tunnel))
            .collect();
        for k in have {
            self.remove_peer(now, &k, sink);
        }
        for (_, s) in wanted {
            self.put_peer(now, s, sink);
        }
        self.publish(now, sink);
    }

    /// Add the peer of `s`, or update the one of its tunnel: a changed
    /// session is removed and added again, a change of what we advertise
    /// only re-advertises.
    fn put_peer(&mut self, now: Now, s: BgpSpec, sink: &mut dyn RoutingSink) {
        if let Some(p) = self.peers.get_mut(&s.key) {
            if s.peer == p.spec.peer && s.resource_id == p.spec.resource_id {
                if s.adverts != p.spec.adverts {
                    p.spec.adverts.clone_from(&s.adverts);
                    p.session
                        .set_advertised(now.instant, s.adverts.iter().cloned());
                    self.drive(now.instant, &s.key);
                }
                return;
            }
            let key = s.key.clone();
            self.remove_peer(now, &key, sink);
        }
        // The dataplane's number of the tunnel, so one id names it from
        // the configuration to the worker; else the lowest free one.
        let tunnel = match sink.tunnel_id(&s.key) {
            Some(id) if !self.used_ids.contains(&id.0) => id,
            _ => TunnelId(
                (0..)
                    .find(|i| !self.used_ids.contains(i))
                    .unwrap_or(u32::MAX),
            ),
        };
        self.used_ids.insert(tunnel.0);
        self.tunnel_keys.insert(tunnel, s.key.clone());
        self.rib.add_tunnel(tunnel);
        let mut session = Session::new(s.peer.clone());
        session.set_advertised(now.instant, s.adverts.iter().cloned());
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
            );
        });
        let key = s.key.clone();
        let up = ipsec_up(&sink.tunnel_state(&key));
        let p = Peer {
            spec: s,
            tunnel,
            session,
            ipsec_up: false,
            conns: BTreeSet::new(),
            connecting: None,
            published_state: None,
            span,
        };
        self.by_local.insert(p.local(), key.clone());
        self.actions
            .push_back(SpeakerAction::Listen(p.listen_addr()));
        self.peers.insert(key.clone(), p);
        self.neighbors_dirty = true;
        self.refresh(&key);
        if up {
            self.set_ipsec_up(now, &key, true);
        }
    }

    /// Stop and forget a peer (Cease 6/3, de-configured), its sockets and
    /// its routes.
    fn remove_peer(&mut self, now: Now, key: &TunnelKey, sink: &mut dyn RoutingSink) {
        if !self.peers.contains_key(key) {
            return;
        }
        if let Some(p) = self.peers.get_mut(key) {
            p.span
                .in_scope(|| tracing::info!("bgp: {} session removed", p.what()));
            p.session
                .handle_stop(now.instant, CeaseSubcode::PeerDeconfigured);
        }
        self.drive(now.instant, key);
        let Some(p) = self.peers.remove(key) else {
            return;
        };
        for c in p.conns.iter().chain(p.connecting.as_ref().map(|(c, _)| c)) {
            self.by_conn.remove(c);
            self.actions.push_back(SpeakerAction::Close(*c));
        }
        if self.by_local.get(&p.local()) == Some(key) {
            self.by_local.remove(&p.local());
        }
        self.actions
            .push_back(SpeakerAction::Unlisten(p.listen_addr()));
        self.refresh(key);
        self.rib.remove_tunnel(p.tunnel);
        self.used_ids.remove(&p.tunnel.0);
        self.tunnel_keys.remove(&p.tunnel);
        self.routes_dirty = true;
        self.neighbors_dirty = true;
        let mut st = sink.tunnel_state(key);
        if st.bgp_state.take().is_some() {
            sink.set_tunnel_state(key.clone(), st);
        }
    }

    /// IKE brought the tunnel's Child SA up or took it down: the session
    /// runs while it is up; going down withdraws its routes at once and
    /// resets the session. A tunnel without a session is ignored.
    pub fn set_ipsec_up(&mut self, now: Now, key: &TunnelKey, up: bool) {
        let Some(p) = self.peers.get_mut(key) else {
            return;
        };
        if up == p.ipsec_up {
            return;
        }
        p.ipsec_up = up;
        self.rib.set_tunnel_up(p.tunnel, up);
        self.routes_dirty = true;
        let mut closed = None;
        if up {
            p.span
                .in_scope(|| tracing::info!("bgp: {} IPsec up: session starts", p.what()));
            p.session.handle_start(now.instant);
        } else {
            p.span.in_scope(|| {
                tracing::info!(
                    "bgp: {} IPsec down: routes withdrawn, session reset",
                    p.what()
                );
            });
            // The connections close through the session's Close actions.
            p.session
                .handle_stop(now.instant, CeaseSubcode::AdministrativeReset);
            closed = p.connecting.take().map(|(c, _)| c);
        }
        if let Some(c) = closed {
            self.by_conn.remove(&c);
            self.actions.push_back(SpeakerAction::Close(c));
        }
        self.drive(now.instant, key);
    }

    /// A connection accepted on `local` from `remote`: its id, or `None`
    /// when it is refused (not the neighbour, too many connections; the
    /// caller closes it).
    pub fn handle_incoming(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<ConnId> {
        let key = self.by_local.get(&local.ip())?.clone();
        let id = ConnId(self.next_conn);
        let p = self.peers.get_mut(&key)?;
        if remote.ip() != p.spec.peer.peer_addr {
            p.span.in_scope(|| {
                tracing::warn!(
                    "bgp: {} refused a connection from {remote} (the neighbour is {})",
                    p.what(),
                    p.spec.peer.peer_addr
                );
            });
            return None;
        }
        if p.conns.len() >= MAX_CONNS_PER_PEER {
            p.span.in_scope(|| {
                tracing::warn!(
                    "bgp: {} refused a connection from {remote}: {MAX_CONNS_PER_PEER} are open",
                    p.what()
                );
            });
            return None;
        }
        self.next_conn += 1;
        p.conns.insert(id);
        p.session.handle_connected(now, id, Direction::Incoming);
        self.by_conn.insert(id, key.clone());
        self.drive(now, &key);
        Some(id)
    }

    /// An outgoing connection ([`SpeakerAction::Connect`]) is established.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId) {
        let Some(key) = self.by_conn.get(&conn).cloned() else {
            // Forgotten meanwhile (peer removed, IPsec down): drop it.
            self.actions.push_back(SpeakerAction::Close(conn));
            return;
        };
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.connecting.is_some_and(|(c, _)| c == conn) {
            p.connecting = None;
        }
        p.conns.insert(conn);
        p.session.handle_connected(now, conn, Direction::Outgoing);
        self.drive(now, &key);
    }

    /// Bytes read from a connection.
    pub fn handle_data(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        let Some(key) = self.by_conn.get(&conn).cloned() else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&key) {
            p.session.handle_data(now, conn, data);
        }
        self.drive(now, &key);
    }

    /// A connection closed, failed, or could not be opened.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        let Some(key) = self.by_conn.remove(&conn) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&key) {
            p.conns.remove(&conn);
            if p.connecting.is_some_and(|(c, _)| c == conn) {
                p.connecting = None;
            }
            p.session.handle_closed(now, conn);
        }
        self.drive(now, &key);
    }

    /// Fire the sessions' due timers and time out slow connects.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<TunnelKey> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, k)| k.clone())
            .collect();
        for key in due {
            let Some(p) = self.peers.get_mut(&key) else {
                continue;
            };
            if p.session.poll_timeout().is_some_and(|t| t <= now) {
                p.session.handle_timeout(now);
            }
            if let Some((c, _)) = p.connecting.take_if(|(_, d)| *d <= now) {
                self.by_conn.remove(&c);
                self.actions.push_back(SpeakerAction::Close(c));
                if let Some(p) = self.peers.get_mut(&key) {
                    p.session.handle_closed(now, c);
                }
            }
            self.drive(now, &key);
        }
    }

    /// The earliest timer of any session or pending connect.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// The next thing to do with the sockets.
    pub fn poll_action(&mut self) -> Option<SpeakerAction> {
        self.actions.pop_front()
    }

    /// Take one session's outputs: bytes and socket actions queued, route
    /// changes into the RIB, log records.
    fn drive(&mut self, now: Instant, key: &TunnelKey) {
        self.drive_outputs(now, key);
        self.refresh(key);
    }

    /// `key`'s session was used: its state is published next, its
    /// deadline brought up to date.
    fn refresh(&mut self, key: &TunnelKey) {
        if let Some(old) = self.deadlines.remove(key) {
            self.timers.remove(&(old, key.clone()));
        }
        let Some(p) = self.peers.get(key) else {
            self.used.remove(key);
            return;
        };
        let next = [p.session.poll_timeout(), p.connecting.map(|(_, d)| d)]
            .into_iter()
            .flatten()
            .min();
        let moved = p.published_state != Some(p.session.state());
        if let Some(t) = next {
            self.deadlines.insert(key.clone(), t);
            self.timers.insert((t, key.clone()));
        }
        if moved {
            self.used.insert(key.clone());
        }
    }

    fn drive_outputs(&mut self, now: Instant, key: &TunnelKey) {
        for _ in 0..MAX_DRIVE_ROUNDS {
            let mut progress = false;
            let Some(p) = self.peers.get_mut(key) else {
                return;
            };
            while let Some(t) = p.session.poll_transmit() {
                progress = true;
                if p.conns.contains(&t.conn) {
                    self.actions.push_back(SpeakerAction::Send {
                        conn: t.conn,
                        data: t.data,
                    });
                }
            }
            let mut logs = Vec::new();
            let mut connect = false;
            while let Some(a) = p.session.poll_action() {
                progress = true;
                match a {
                    Action::Connect => connect = true,
                    Action::Close(id) => {
                        p.conns.remove(&id);
                        if p.connecting.is_some_and(|(c, _)| c == id) {
                            p.connecting = None;
                        }
                        self.by_conn.remove(&id);
                        self.actions.push_back(SpeakerAction::Close(id));
                    }
                    Action::EndOfRib(_) => {}
                    route => self.routes_dirty |= self.rib.apply(p.tunnel, &route),
                }
            }
            while let Some(l) = p.session.poll_log() {
                progress = true;
                logs.push(l);
            }
            let resource = p.spec.resource_id.clone();
            if p.published_state != Some(p.session.state()) {
                self.neighbors_dirty = true;
            }
            if connect {
                self.connect(now, key);
            }
            for l in logs {
                // The wall clock of a session's log record is taken at
                // publish (the records wait for it in order).
                self.pending_bgp.push_back((resource.clone(), l));
            }
            if !progress {
                return;
            }
        }
    }

    fn connect(&mut self, now: Instant, key: &TunnelKey) {
        let id = self.conn_id();
        let Some(p) = self.peers.get_mut(key) else {
            return;
        };
        if let Some((old, _)) = p.connecting.take() {
            self.by_conn.remove(&old);
            self.actions.push_back(SpeakerAction::Close(old));
        }
        let timeout = Duration::from_secs(u64::from(p.spec.peer.connect_retry_secs.max(1)));
        p.connecting = Some((id, now + timeout));
        self.by_conn.insert(id, key.clone());
        self.actions.push_back(SpeakerAction::Connect {
            conn: id,
            local: p.local(),
            remote: p.remote(),
        });
    }

    /// A new RIB (ECMP mode changed), refilled from the sessions.
    fn rebuild_rib(&mut self, ecmp: bool) {
        self.ecmp = ecmp;
        self.rib = Rib::new(ecmp);
        self.rib
            .set_local_networks(self.local_networks.iter().copied());
        for p in self.peers.values() {
            self.rib.add_tunnel(p.tunnel);
            self.rib.set_tunnel_up(p.tunnel, p.ipsec_up);
            for (prefix, route) in p.session.received() {
                self.rib.announce(p.tunnel, *prefix, route.clone());
            }
        }
        self.routes_dirty = true;
    }

    /// Whether routes, state or log records wait for
    /// [`publish`](Self::publish).
    #[must_use]
    pub fn has_updates(&self) -> bool {
        self.routes_dirty
            || self.neighbors_dirty
            || !self.logs.is_empty()
            || !self.pending_bgp.is_empty()
            || !self.used.is_empty()
    }

    /// Hand what changed to `sink`: the selected BGP routes (as a delta;
    /// the FIB follows), each session's state (tunnel UP/DOWN), log
    /// records and the neighbours for `show bgp`.
    pub fn publish(&mut self, now: Now, sink: &mut dyn RoutingSink) {
        for (resource, l) in std::mem::take(&mut self.pending_bgp) {
            self.push_log(log_entry(&resource, now.unix_ms, l));
        }
        if self.routes_dirty {
            self.routes_dirty = false;
            self.publish_routes(sink);
        }
        for entry in self.logs.drain(..) {
            sink.record_log(entry);
        }
        if self.logs_dropped > 0 {
            tracing::warn!(
                "bgp: {} log entries dropped (the manager was not reached in time)",
                self.logs_dropped
            );
            self.logs_dropped = 0;
        }
        for k in std::mem::take(&mut self.used) {
            let Some(p) = self.peers.get_mut(&k) else {
                continue;
            };
            let state = p.session.state();
            if p.published_state == Some(state) {
                continue;
            }
            p.published_state = Some(state);
            let routing = RoutingType::Dynamic;
            let mut st = sink.tunnel_state(&p.spec.key);
            let was = st.up_down(routing);
            st.bgp_state = Some(state.to_string());
            let is = st.up_down(routing);
            if is != was {
                // A dynamic-routing tunnel is UP only with BGP Established
                // (spec § 20.7): the session decides this transition, so
                // it is logged here (IKE logs the ones it causes).
                let reason = if is == TunnelUpDown::Up {
                    "BGP session Established".to_owned()
                } else {
                    format!("BGP session left Established ({state})")
                };
                st.note_status_change(
                    crate::visibility::StatusChange {
                        up: is == TunnelUpDown::Up,
                        at_ms: now.unix_ms,
                        reason: &reason,
                    },
                    false,
                );
                let dpd_enabled = sink
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
                    now.unix_ms,
                    ctx,
                    format!("tunnel status changed to {status} (BGP {state})"),
                ));
                p.span
                    .in_scope(|| tracing::info!("bgp: {}", entry.render_text()));
                sink.record_log(entry);
            }
            sink.set_tunnel_state(p.spec.key.clone(), st);
        }
        if std::mem::take(&mut self.neighbors_dirty) && sink.wants_bgp_neighbors() {
            sink.set_bgp_neighbors(self.neighbors(now.instant));
        }
    }

    /// The selected routes as a delta against what was published.
    fn publish_routes(&mut self, sink: &mut dyn RoutingSink) {
        let routes = self.selected_routes();
        let mut delta = RouteDelta::default();
        for (prefix, r) in &routes {
            if self.published_routes.get(prefix) == Some(r) {
                continue;
            }
            let via: Vec<String> = r
                .tunnels
                .iter()
                .map(|k| format!("{}/{}", k.connection_id, k.tunnel))
                .collect();
            tracing::info!(
                "bgp: FIB {} via {} (AS path {:?})",
                r.prefix,
                via.join(" "),
                r.as_path
            );
            delta.put.push(r.clone());
        }
        for prefix in self.published_routes.keys() {
            if !routes.contains_key(prefix) {
                tracing::info!("bgp: FIB {prefix} removed");
                delta.remove.push(*prefix);
            }
        }
        if delta.is_empty() {
            return;
        }
        self.published_routes = routes;
        let all: Vec<DynamicRoute> = self.published_routes.values().cloned().collect();
        sink.update_dynamic_routes(&delta, &all);
    }

    /// The routes published to the dataplane last, by prefix.
    #[must_use]
    pub fn published_routes(&self) -> &BTreeMap<IpNet, DynamicRoute> {
        &self.published_routes
    }

    /// The RIB's selected BGP routes in the dataplane's terms.
    fn selected_routes(&self) -> BTreeMap<IpNet, DynamicRoute> {
        let key = |t: TunnelId| self.tunnel_keys.get(&t).cloned();
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
                (!tunnels.is_empty()).then(|| {
                    (
                        prefix,
                        DynamicRoute {
                            prefix,
                            tunnels,
                            backup: backup.into_iter().filter_map(key).collect(),
                            as_path: path.as_path.to_string(),
                            med: path.med,
                            next_hop: path.next_hop,
                        },
                    )
                })
            })
            .collect()
    }

    /// The neighbours, for `show bgp`.
    #[must_use]
    pub fn neighbors(&self, now: Instant) -> Vec<BgpNeighbor> {
        self.peers
            .values()
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

    /// Every session's tunnel and whether IKE has it up, as last told.
    pub fn ipsec_states(&self) -> impl Iterator<Item = (&TunnelKey, bool)> {
        self.peers.iter().map(|(k, p)| (k, p.ipsec_up))
    }
}

/// The keys of connection `id`'s tunnels, as a range of a map ordered by
/// [`TunnelKey`] (connection id first).
pub(crate) fn connection_range(id: &str) -> std::ops::RangeInclusive<TunnelKey> {
    TunnelKey {
        connection_id: id.to_owned(),
        tunnel: 0,
    }..=TunnelKey {
        connection_id: id.to_owned(),
        tunnel: usize::MAX,
    }
}

#[cfg(test)]
mod tests;
