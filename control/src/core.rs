//! The control core: one sans-IO state machine that owns the whole control
//! plane of the appliance — the [`Manager`] (configuration, its journal,
//! the dataplane handle, the log ring), the IKE tunnels ([`TunnelSet`]),
//! the BGP speaker ([`Speaker`], whose RIB is the only route selector) and
//! one timer table for every deadline. The daemon's event loop
//! (`appliance::event_loop`) feeds it events and performs its outputs; no
//! other thread touches its state.
//!
//! ```text
//!  events in (handle)                 Core                       outputs out
//!  ──────────────────                 ────                       ───────────
//!  Api{token, request} ─┐  Manager::handle ─► changed connection ┌─► Reply{token, result}
//!  IkeDatagram ─────────┤     ─► TunnelSet::reconcile_connection ├─► poll_transmit: IKE datagram
//!  BgpConnected/Bytes/  ┤     ─► Speaker::reconcile_connection   ├─► Bgp(Listen/Connect/Send/Close)
//!    Closed (accept:    │  TunnelSet ─► SAs into the dataplane   ├─► IkeListen(outside addresses)
//!    handle_bgp_accept) │     ─► tunnel state set ─► IPsec up/   ├─► KernelPort (config changed)
//!  Timeout ─────────────┤        down ─► Speaker::set_ipsec_up   ├─► Log(line)
//!  DataplaneEvents ─────┤  Speaker ─► RIB ─► route delta ─► FIB  └─► Stopped (after Shutdown)
//!  Shutdown ────────────┘  timers: Ike, Bgp, Dataplane, Counters, Flush
//! ```
//!
//! Call order (as quinn-proto's `Connection`): [`Core::start`] once; then
//! for every input [`Core::handle`] (or [`Core::handle_bgp_accept`]),
//! after which drain [`Core::poll_transmit`] and [`Core::poll_action`];
//! sleep until [`Core::poll_timeout`] (or the next input) and call
//! `handle(now, Event::Timeout)` when it passes. Time comes in as [`Now`];
//! nothing here reads a clock, opens a socket or sleeps.
//!
//! What the core guarantees:
//! * A configuration change costs its own size: only the tunnels and BGP
//!   sessions of the connections the request touched are reconciled
//!   (a customer gateway change: the connections that use it); only
//!   `config_import` looks at every tunnel.
//! * BGP follows IKE by events: when IKE records a tunnel's state, the
//!   speaker is told whether its IPsec is up (routes withdrawn at once on
//!   down); nothing polls tunnel state.
//! * Routes reach the dataplane as deltas from the RIB
//!   ([`Dataplane::update_dynamic_routes`]).
//! * It is deterministic in time: every behaviour runs in virtual time in
//!   the unit tests (`core/tests.rs`: a config change through IKE, SA
//!   install and BGP to a FIB route; a late worker ack; a BGP flap during
//!   a change).
//!
//! The dataplane's workers report back over rings that have no file
//! descriptor; the core collects them ([`Dataplane::poll`]) at
//! [`DATAPLANE_POLL`] intervals through its timer table, or when the loop
//! delivers [`Event::DataplaneEvents`].

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use dataplane::esp::SaConfig;

use crate::api::{ApiError, Request, Response};
use crate::bgp::ConnId;
use crate::bgp::speaker::{RoutingSink, Speaker, SpeakerAction, ipsec_up};
use crate::dataplane::{
    ChildSaPair, Dataplane, DataplaneError, DataplaneEvent, SaLifetimeEvent, TunnelKey,
    TunnelRuntimeState,
};
use crate::ike::sa::{Datagram, Transmit};
pub use crate::ike::tunnels::Now;
use crate::ike::tunnels::{
    IkeCounters, TunnelSet, TunnelSink, connection_tunnel_specs, tunnel_specs,
};
use crate::logs::LogEntry;
use crate::manager::Manager;

/// How often the dataplane's acknowledgements, SA lifetime events and
/// counters are collected (its rings have no file descriptor to wait on).
pub const DATAPLANE_POLL: Duration = Duration::from_millis(20);
/// The IKE counters are published (and logged when a flood moved them) at
/// most this often.
pub const COUNTERS_PERIOD: Duration = Duration::from_secs(2);
/// After the DELETEs of a shutdown are handed out: time for the worker to
/// take them from the kernel port and send them.
pub const DELETE_FLUSH: Duration = Duration::from_millis(300);

/// An input of the core.
#[derive(Debug)]
pub enum Event<'a> {
    /// A management request; its reply is [`Output::Reply`] with `token`.
    Api {
        /// The caller's handle for the reply (e.g. the client connection).
        token: u64,
        /// The request.
        request: Request,
    },
    /// A datagram on one of the IKE sockets.
    IkeDatagram(Datagram<'a>),
    /// An outgoing BGP connection ([`SpeakerAction::Connect`]) is up.
    BgpConnected {
        /// The connection.
        conn: ConnId,
    },
    /// Bytes read from a BGP connection.
    BgpBytes {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        data: &'a [u8],
    },
    /// A BGP connection closed or failed, or could not be opened.
    BgpClosed {
        /// The connection.
        conn: ConnId,
    },
    /// [`Core::poll_timeout`] passed.
    Timeout,
    /// The dataplane has something to report (acknowledgements, SA
    /// lifetime events): collect it now.
    DataplaneEvents,
    /// Stop: DELETE to every peer, then [`Output::Stopped`] after
    /// [`DELETE_FLUSH`].
    Shutdown,
}

/// An output of the core, other than IKE datagrams
/// ([`Core::poll_transmit`]).
#[derive(Debug)]
#[must_use]
pub enum Output {
    /// The reply to [`Event::Api`].
    Reply {
        /// The event's token.
        token: u64,
        /// The reply.
        result: Result<Response, ApiError>,
    },
    /// BGP socket work.
    Bgp(SpeakerAction),
    /// IKE needs sockets (UDP 500 and 4500) on exactly these outside
    /// addresses.
    IkeListen(BTreeSet<IpAddr>),
    /// The configuration changed: the kernel port's addresses, routes and
    /// neighbours may have to follow.
    KernelPort,
    /// A line for the daemon's log.
    Log(String),
    /// A problem that failed nothing (a compaction that could not be
    /// written), for the daemon's log as a warning.
    Warn(String),
    /// The shutdown's DELETEs are out and flushed: stop the dataplane
    /// ([`Core::shutdown_dataplane`]) and exit.
    Stopped,
}

/// The core's deadlines (quinn-proto's `TimerTable` shape: one slot per
/// kind, the earliest is the wake-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// The earliest IKE timer of any tunnel.
    Ike = 0,
    /// The earliest BGP session timer or connect deadline.
    Bgp = 1,
    /// Collect the dataplane's reports.
    Dataplane = 2,
    /// Publish the IKE counters.
    Counters = 3,
    /// The shutdown's flush.
    Flush = 4,
}

const TIMERS: usize = 5;

#[derive(Debug, Default, Clone, Copy)]
struct TimerTable([Option<Instant>; TIMERS]);

impl TimerTable {
    fn set(&mut self, t: Timer, at: Instant) {
        self.0[t as usize] = Some(at);
    }

    fn put(&mut self, t: Timer, at: Option<Instant>) {
        self.0[t as usize] = at;
    }

    fn stop(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }

    fn is_expired(&self, t: Timer, now: Instant) -> bool {
        self.0[t as usize].is_some_and(|at| at <= now)
    }

    fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}

/// The [`TunnelSink`] IKE writes through: the manager, with the tunnels
/// whose state IKE recorded noted, so BGP hears of IPsec up/down.
struct Watch<'a, D: Dataplane> {
    manager: &'a mut Manager<D>,
    changed: &'a mut Vec<TunnelKey>,
}

impl<D: Dataplane> TunnelSink for Watch<'_, D> {
    fn install_child_sa(
        &mut self,
        key: &TunnelKey,
        pair: &ChildSaPair,
    ) -> Result<(), DataplaneError> {
        self.manager.install_child_sa(key, pair)
    }
    fn remove_child_sa(&mut self, key: &TunnelKey) -> Result<(), DataplaneError> {
        self.manager.remove_child_sa(key)
    }
    fn add_child_inbound(&mut self, key: &TunnelKey, sa: &SaConfig) -> Result<(), DataplaneError> {
        self.manager.add_child_inbound(key, sa)
    }
    fn remove_child_inbound(&mut self, key: &TunnelKey, spi: u32) -> Result<(), DataplaneError> {
        self.manager.remove_child_inbound(key, spi)
    }
    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState {
        TunnelSink::tunnel_state(&*self.manager, key)
    }
    fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState) {
        self.changed.push(key.clone());
        TunnelSink::set_tunnel_state(&mut *self.manager, key, state);
    }
    fn record_log(&mut self, entry: LogEntry) {
        TunnelSink::record_log(&mut *self.manager, entry);
    }
    fn poll_sa_events(&mut self) -> Vec<SaLifetimeEvent> {
        self.manager.poll_sa_events()
    }
    fn publish_ike_counters(&mut self, c: &IkeCounters) {
        self.manager.publish_ike_counters(c);
    }
}

/// ` of <connection>/<tunnel>`, or nothing.
fn of(tunnel: Option<&TunnelKey>) -> String {
    tunnel.map_or_else(String::new, |k| {
        format!(" of {}/{}", k.connection_id, k.tunnel)
    })
}

/// Which connections a request changes.
#[derive(Debug)]
enum Scope {
    /// None (a query).
    Nothing,
    /// These connections.
    Connections(Vec<String>),
    /// Every connection and the gateway (an import).
    All,
}

/// The control core (see the module docs).
pub struct Core<D: Dataplane> {
    manager: Manager<D>,
    ike: TunnelSet,
    bgp: Speaker,
    timers: TimerTable,
    outputs: VecDeque<Output>,
    /// Tunnels whose state IKE recorded since BGP was last told.
    changed: Vec<TunnelKey>,
    /// The outside addresses last announced with [`Output::IkeListen`].
    ike_locals: Option<BTreeSet<IpAddr>>,
    /// IKE counters as last logged.
    logged: IkeCounters,
    /// IKE datagrams the loop could not take (counted into the metrics).
    rx_dropped: u64,
    stopping: bool,
    /// The shutdown's DELETEs, counted before they are handed out.
    deletes: VecDeque<Transmit>,
    /// IKE and BGP run (false: the management plane only, for a daemon
    /// without a dataplane that moves packets).
    protocols: bool,
}

impl<D: Dataplane + std::fmt::Debug> std::fmt::Debug for Core<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("manager", &self.manager)
            .field("tunnels", &self.ike.len())
            .field("bgp_sessions", &self.bgp.len())
            .field("timers", &self.timers)
            .finish_non_exhaustive()
    }
}

impl<D: Dataplane> Core<D> {
    /// A core over a started manager, running no tunnel yet
    /// ([`start`](Self::start) runs the configured ones).
    #[must_use]
    pub fn new(manager: Manager<D>) -> Self {
        Self::with_tunnels(manager, TunnelSet::new())
    }

    /// As [`new`](Self::new), with a tunnel set prepared by the caller
    /// (test-mode lifetimes, a half-open threshold).
    #[must_use]
    pub fn with_tunnels(manager: Manager<D>, ike: TunnelSet) -> Self {
        Self {
            manager,
            ike,
            bgp: Speaker::new(),
            timers: TimerTable::default(),
            outputs: VecDeque::new(),
            changed: Vec::new(),
            ike_locals: None,
            logged: IkeCounters::default(),
            rx_dropped: 0,
            stopping: false,
            deletes: VecDeque::new(),
            protocols: true,
        }
    }

    /// A core that serves the management API and the dataplane handle
    /// only: no IKE, no BGP, no kernel port (the in-memory stand-in moves
    /// no packets).
    #[must_use]
    pub fn management_only(manager: Manager<D>) -> Self {
        Self {
            protocols: false,
            ..Self::new(manager)
        }
    }

    /// The manager (configuration, dataplane, log ring).
    #[must_use]
    pub fn manager(&self) -> &Manager<D> {
        &self.manager
    }

    /// The manager, mutably (for the daemon's start-up and tests).
    pub fn manager_mut(&mut self) -> &mut Manager<D> {
        &mut self.manager
    }

    /// The BGP speaker.
    #[must_use]
    pub fn speaker(&self) -> &Speaker {
        &self.bgp
    }

    /// The IKE tunnels.
    #[must_use]
    pub fn tunnels(&self) -> &TunnelSet {
        &self.ike
    }

    /// Run the configured tunnels and sessions (the whole configuration,
    /// once).
    pub fn start(&mut self, now: Now) {
        if self.protocols {
            self.reconcile(now, &Scope::All);
            self.outputs.push_back(Output::KernelPort);
        }
        self.timers
            .set(Timer::Dataplane, now.instant + DATAPLANE_POLL);
        self.timers
            .set(Timer::Counters, now.instant + COUNTERS_PERIOD);
        self.after(now);
    }

    /// Take one input (see the module docs for the call order).
    pub fn handle(&mut self, now: Now, event: Event<'_>) {
        match event {
            Event::Api { token, request } => {
                let result = self.handle_api(now, request);
                self.outputs.push_back(Output::Reply { token, result });
            }
            Event::IkeDatagram(d) => {
                if !self.stopping {
                    self.ike.handle_datagram(now.instant, d);
                }
            }
            Event::BgpConnected { conn } => self.bgp.handle_connected(now.instant, conn),
            Event::BgpBytes { conn, data } => self.bgp.handle_data(now.instant, conn, data),
            Event::BgpClosed { conn } => self.bgp.handle_closed(now.instant, conn),
            Event::Timeout => self.handle_timeout(now),
            Event::DataplaneEvents => self.collect_dataplane(now),
            Event::Shutdown => self.shutdown(now),
        }
        self.after(now);
    }

    /// A BGP connection accepted on `local` from `remote`: its id, or
    /// `None` when it is refused (the caller closes it).
    pub fn handle_bgp_accept(
        &mut self,
        now: Now,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<ConnId> {
        let id = self.bgp.handle_incoming(now.instant, local, remote);
        self.after(now);
        id
    }

    /// IKE datagrams the loop dropped (it reads no faster), for the
    /// counters.
    pub fn set_ike_rx_dropped(&mut self, dropped: u64) {
        self.rx_dropped = dropped;
    }

    /// The next deadline: call `handle(now, Event::Timeout)` then.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The next IKE datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.deletes.pop_front() {
            return Some(t);
        }
        self.ike.poll_transmit()
    }

    /// The next output other than IKE datagrams.
    pub fn poll_action(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Stop the dataplane (after [`Output::Stopped`]).
    pub fn shutdown_dataplane(&mut self) {
        self.manager.dataplane_mut().shutdown();
    }

    fn handle_api(&mut self, now: Now, request: Request) -> Result<Response, ApiError> {
        self.manager.handle_clock(now.unix_ms);
        if matches!(request, Request::ShowBgp { .. }) {
            // Live: uptimes move without events.
            let neighbors = self.bgp.neighbors(now.instant);
            self.manager.set_bgp_neighbors(neighbors);
        }
        if self.stopping && request.is_change() {
            return Err(ApiError::new(
                crate::api::ErrorCode::Internal,
                "the daemon is stopping; nothing was changed".to_owned(),
            ));
        }
        let scope = self.scope(&request);
        let result = self.manager.handle(request);
        for w in self.manager.take_warnings() {
            self.outputs.push_back(Output::Warn(w));
        }
        if result.is_ok() && !matches!(scope, Scope::Nothing) && self.protocols {
            self.reconcile(now, &scope);
            self.outputs.push_back(Output::KernelPort);
        }
        result
    }

    /// The connections `request` changes, read before it is applied (a
    /// deleted customer gateway has no connections; a changed one, those
    /// that use it).
    fn scope(&self, request: &Request) -> Scope {
        let one = |id: &str| Scope::Connections(vec![id.to_owned()]);
        match request {
            Request::CreateConnection { connection } => one(&connection.id),
            Request::ModifyConnectionOptions { connection_id, .. }
            | Request::ModifyTunnelOptions { connection_id, .. }
            | Request::AddStaticRoute { connection_id, .. }
            | Request::DeleteStaticRoute { connection_id, .. } => one(connection_id),
            Request::DeleteConnection { id } => one(id),
            Request::CreateCustomerGateway { customer_gateway } => {
                self.users_of(&customer_gateway.id)
            }
            Request::ModifyCustomerGateway { id, .. } | Request::DeleteCustomerGateway { id } => {
                self.users_of(id)
            }
            Request::ConfigImport { .. } => Scope::All,
            // The tunnels using a secret take its new key (a new IKE SA).
            Request::PskSet { name, .. } | Request::PskRotate { name, .. } => {
                Scope::Connections(self.manager.connections_using_secret(name))
            }
            _ => Scope::Nothing,
        }
    }

    fn users_of(&self, gateway: &str) -> Scope {
        Scope::Connections(
            self.manager
                .config()
                .connections
                .iter()
                .filter(|c| c.customer_gateway_id == gateway)
                .map(|c| c.id.clone())
                .collect(),
        )
    }

    /// IKE, then BGP, follow the configuration for `scope`.
    fn reconcile(&mut self, now: Now, scope: &Scope) {
        let mut watch = Watch {
            manager: &mut self.manager,
            changed: &mut self.changed,
        };
        match scope {
            Scope::Nothing => return,
            Scope::All => {
                let (mut specs, mut skipped) = tunnel_specs(watch.manager.config());
                watch.manager.resolve_keys(&mut specs, &mut skipped);
                self.ike.reconcile(now, specs, skipped, &mut watch);
                self.bgp.reconcile(now, &mut self.manager);
            }
            Scope::Connections(ids) => {
                for id in ids {
                    let (mut specs, mut skipped) =
                        connection_tunnel_specs(watch.manager.config(), id);
                    watch.manager.resolve_keys(&mut specs, &mut skipped);
                    self.ike
                        .reconcile_connection(now, id, specs, skipped, &mut watch);
                }
                for id in ids {
                    self.bgp.reconcile_connection(now, id, &mut self.manager);
                }
            }
        }
        let locals = self.ike.local_addresses();
        if self.ike_locals.as_ref() != Some(&locals) {
            self.ike_locals = Some(locals.clone());
            self.outputs.push_back(Output::IkeListen(locals));
        }
    }

    fn handle_timeout(&mut self, now: Now) {
        let t = now.instant;
        if self.timers.is_expired(Timer::Ike, t) {
            self.ike.handle_timeout(t);
        }
        if self.timers.is_expired(Timer::Bgp, t) {
            self.bgp.handle_timeout(t);
        }
        if self.timers.is_expired(Timer::Dataplane, t) {
            self.collect_dataplane(now);
        }
        if self.timers.is_expired(Timer::Counters, t) {
            self.timers.set(Timer::Counters, t + COUNTERS_PERIOD);
            // Health events (a tunnel DOWN too long) are raised on this
            // period: their threshold is an hour, two seconds late is
            // nothing.
            self.manager.handle_clock(now.unix_ms);
            if self.protocols {
                self.publish_counters();
            }
        }
        if self.timers.is_expired(Timer::Flush, t) {
            self.timers = TimerTable::default();
            self.outputs.push_back(Output::Stopped);
        }
    }

    /// The dataplane's acknowledgements, retired objects, counters and SA
    /// lifetime events (soft limits: IKE rekeys).
    fn collect_dataplane(&mut self, now: Now) {
        self.manager.dataplane_mut().poll();
        for w in self.manager.take_warnings() {
            self.outputs.push_back(Output::Warn(w));
        }
        let mut watch = Watch {
            manager: &mut self.manager,
            changed: &mut self.changed,
        };
        let events = watch.poll_sa_events();
        if !events.is_empty() {
            self.ike.handle_sa_events(now, events, &mut watch);
        }
        // What the workers did with the commands queued for them: a
        // refusal or a stalled worker is logged; an applied command is
        // what was expected.
        for e in self.manager.dataplane_mut().poll_events() {
            let line = match e {
                DataplaneEvent::Applied { .. } => continue,
                DataplaneEvent::Failed {
                    what,
                    tunnel,
                    reason,
                } => format!(
                    "dataplane: a worker refused {what}{}: {reason}",
                    of(tunnel.as_ref())
                ),
                DataplaneEvent::RingFull { what, tunnel } => format!(
                    "dataplane: {what}{} not sent: a worker's command ring is full",
                    of(tunnel.as_ref())
                ),
                DataplaneEvent::Late {
                    what,
                    tunnel,
                    after_ms,
                } => format!(
                    "dataplane: {what}{} not applied after {after_ms} ms (a worker is stalled)",
                    of(tunnel.as_ref())
                ),
            };
            self.outputs.push_back(Output::Warn(line));
        }
        if !self.stopping {
            self.timers
                .set(Timer::Dataplane, now.instant + DATAPLANE_POLL);
        }
    }

    fn publish_counters(&mut self) {
        self.ike.set_rx_queue_full(self.rx_dropped);
        let c = self.ike.counters();
        // Only what a flood or a misconfiguration moves.
        let moved = |c: &IkeCounters| {
            (
                c.init_unknown_peer,
                c.cookies_sent,
                c.init_refused,
                c.rx_queue_full,
            )
        };
        if moved(&c) != moved(&self.logged) {
            self.outputs
                .push_back(Output::Log(format!("ike: counters {c:?}")));
            self.logged = c;
        }
        self.manager.publish_ike_counters(&c);
    }

    fn shutdown(&mut self, now: Now) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        let n = self.ike.len();
        let mut watch = Watch {
            manager: &mut self.manager,
            changed: &mut self.changed,
        };
        self.ike.close_all(now, &mut watch);
        self.deletes
            .extend(std::iter::from_fn(|| self.ike.poll_transmit()));
        self.outputs.push_back(Output::Log(format!(
            "ike: shutting down: {n} tunnel(s) closed, {} DELETE(s) sent",
            self.deletes.len()
        )));
        self.timers = TimerTable::default();
        self.timers.set(Timer::Flush, now.instant + DELETE_FLUSH);
    }

    /// After any input: IKE's events applied (SAs, state), BGP told of
    /// IPsec changes, BGP's routes and state published, outputs queued,
    /// timers refreshed.
    fn after(&mut self, now: Now) {
        if self.ike.collect_events(now.instant) {
            let mut watch = Watch {
                manager: &mut self.manager,
                changed: &mut self.changed,
            };
            self.ike.apply(now, &mut watch);
        }
        for key in std::mem::take(&mut self.changed) {
            let up = ipsec_up(&RoutingSink::tunnel_state(&self.manager, &key));
            self.bgp.set_ipsec_up(now, &key, up);
        }
        if self.bgp.has_updates() {
            self.bgp.publish(now, &mut self.manager);
        }
        while let Some(a) = self.bgp.poll_action() {
            self.outputs.push_back(Output::Bgp(a));
        }
        while let Some(line) = self.ike.poll_log() {
            self.outputs.push_back(Output::Log(format!("ike: {line}")));
        }
        if !self.stopping {
            self.timers.put(Timer::Ike, self.ike.poll_timeout());
            self.timers.put(Timer::Bgp, self.bgp.poll_timeout());
        } else {
            self.timers.stop(Timer::Ike);
            self.timers.stop(Timer::Bgp);
        }
    }
}

#[cfg(test)]
mod tests;
