//! [`control::dataplane::Dataplane`] on the DPDK [`Runtime`]: what `vpnd`
//! runs unless started with `--no-dataplane`.
//!
//! ```text
//!   Manager::commit ──► apply_change(config, change)   one object: its tunnels' ids, routes,
//!                       │                               caps and steering, nothing else
//!                       └─ apply(config) (start, import: the whole configuration, reconciled
//!                                         connection by connection, + addresses, local networks)
//!        Model (model.rs) ── FibChange log ──► FibSync (fib_sync.rs) ──► SetFib(spare table
//!                                                                        brought up to date)
//!   BGP ──► set_dynamic_routes ──► Model: only the routes that changed
//!   IKE ──► set_tunnel_state ──► Model: UP/DOWN changes one ECMP group / its BGP routes
//!   IKE ──► add_child_inbound ──► AddInbound(new)            (we answered the peer's rekey)
//!   IKE ──► install_child_sa ──► AddInbound(new), SetOutbound(new)   queued back to back
//!                                (the old inbound SA stays an "extra" one)
//!   IKE ──► remove_child_inbound(old) ──► RemoveInbound(old)   (its DELETE done)
//!   vpnd tick ──► poll() ──► acks and refusals → DataplaneEvents (poll_events), retired SAs
//!                            and tables freed, a table that could not go yet published,
//!                            counters
//! ```
//!
//! Nothing here waits for a worker: every command is queued on the
//! workers' rings and the call returns (the caller holds the daemon's
//! lock). Workers apply their rings in order, so a command always sees
//! the ones queued before it (an SA switch follows the SA's install, a
//! route table follows the removal of what it no longer names). What can
//! be checked before queuing — the tunnel, the SA records, room in every
//! ring for the whole operation, room in the SA tables — is checked, and
//! is the error the trait's methods return; what a worker refuses later
//! comes back through [`poll`](Dataplane::poll) as a
//! [`DataplaneEvent::Failed`] (and counts as a failed command). A full
//! ring is an error counted (`ring_full` in the worker counters), never
//! a wait.
//!
//! A change costs its object's size: the connection's own routes, its
//! two tunnels' caps and steering, the BGP routes through its tunnels,
//! and a table publication whose cost is the changes' size (see
//! `fib_sync.rs`). `apply` (start, `config_import`: gateway settings,
//! addresses, local networks and policing can change only there) walks
//! every connection and keeps the O(N) path. Tunnel ids come from the
//! model (`model.rs`): stable per tunnel, O(1) both ways.
//!
//! Tunnel state is what IKE/BGP report through `set_tunnel_state`; until
//! they do, every tunnel is DOWN (routes to it drop as `no_outbound_sa`).
//! A tunnel going DOWN takes its BGP routes out of the FIB in the same
//! call (the BGP thread's withdrawal follows), so traffic moves at once to
//! the other ECMP members or, when none is left, to the route's backup
//! (the path BGP selects without it).
//! Per-tunnel counters (`TunnelDataIn`/`TunnelDataOut`, packets, drops)
//! are read lock-free from the worker's counter block by tunnel id; per-SA
//! counters (`show sas`) come from a snapshot the runtime asks the worker
//! for about once a second.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use control::config::{
    ApplianceConfig, Change, GatewayKind, PortRole, TunnelBandwidth, VpnConnection, parse_mac,
};
use control::dataplane::{
    ChildSaPair, Dataplane, DataplaneError, DataplaneEvent, DataplaneStats, DynamicRoute,
    PortCounters, RouteEntry, SaDirection, SaInfo, SaLifetimeEvent, TunnelCounters, TunnelKey,
    TunnelRuntimeState, sa_info,
};
use dataplane::esp::{InboundSa, OutboundSa, SaConfig};
use fib::TunnelId;
use worker::{Addresses, Command, Drop};

use super::{Runtime, RuntimeError, Ticket, v4_only, v6_only};

mod fib_sync;
mod model;
mod policing;
mod steer;

use fib_sync::FibSync;
use model::Model;

/// A queued command not applied by every worker after this long is
/// reported ([`DataplaneEvent::Late`]).
const ACK_LATE: Duration = Duration::from_secs(2);
/// Events kept for [`Dataplane::poll_events`] before the oldest are
/// dropped (counted).
const EVENTS_KEPT: usize = 4096;
/// SA lifetime events kept for IKE before the oldest are dropped.
const SA_EVENTS_KEPT: usize = 4096;

/// The pair installed for one tunnel.
#[derive(Debug)]
struct Installed {
    inbound: SaInfo,
    outbound: SaInfo,
    at: Instant,
}

/// What the dataplane needs of a connection besides its routes (the
/// model has those): steering and caps.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConnInfo {
    customer_gateway_id: String,
    outside: [Option<IpAddr>; 2],
    bandwidth: [TunnelBandwidth; 2],
}

impl ConnInfo {
    fn of(c: &VpnConnection) -> Self {
        Self {
            customer_gateway_id: c.customer_gateway_id.clone(),
            outside: [
                c.tunnels[0].outside_ip_address,
                c.tunnels[1].outside_ip_address,
            ],
            bandwidth: [c.tunnels[0].tunnel_bandwidth, c.tunnels[1].tunnel_bandwidth],
        }
    }
}

/// What a queued command was, for its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Reported when applied and when refused.
    Reported,
    /// Reported only when refused.
    Quiet,
    /// A route table (reported when applied, by its publication number).
    Routes,
    /// Caps for a tunnel: forgotten when refused, so the next `apply`
    /// retries.
    Caps(TunnelId),
}

/// A command queued for every worker, awaiting its outcome.
#[derive(Debug)]
struct Queued {
    ticket: Ticket,
    what: String,
    tunnel: Option<TunnelKey>,
    kind: Kind,
    at: Instant,
    late: bool,
}

/// The DPDK dataplane behind `vpnd`.
#[derive(Debug)]
pub struct DpdkDataplane {
    rt: Option<Runtime>,
    model: Model,
    fib: FibSync,
    conns: HashMap<String, ConnInfo>,
    /// Customer gateway addresses by id.
    gateways: HashMap<String, Option<IpAddr>>,
    /// Connections by customer gateway id.
    conns_of_gateway: HashMap<String, HashSet<String>>,
    gateway_kind: GatewayKind,
    installed: HashMap<TunnelKey, Installed>,
    /// Inbound SAs besides the installed pairs', by SPI: a rekeyed SA
    /// until its DELETE is done, the next SA until its outbound switch.
    extra_inbound: BTreeMap<u32, (TunnelKey, SaInfo, Instant)>,
    addresses: Option<Addresses>,
    port_names: BTreeMap<&'static str, String>,
    apply_errors: u64,
    ring_full: u64,
    sa_events: Vec<SaLifetimeEvent>,
    /// Commands queued and not yet applied by every worker, in order.
    queued: VecDeque<Queued>,
    events: VecDeque<DataplaneEvent>,
    events_dropped: u64,
    /// The per-tunnel rate policy the workers hold.
    policies: policing::Applied,
}

impl DpdkDataplane {
    /// Wrap a started runtime. Nothing is sent until [`Dataplane::apply`].
    #[must_use]
    pub fn new(rt: Runtime) -> Self {
        Self {
            rt: Some(rt),
            model: Model::default(),
            fib: FibSync::default(),
            conns: HashMap::new(),
            gateways: HashMap::new(),
            conns_of_gateway: HashMap::new(),
            gateway_kind: GatewayKind::default(),
            installed: HashMap::new(),
            extra_inbound: BTreeMap::new(),
            addresses: None,
            port_names: BTreeMap::new(),
            apply_errors: 0,
            ring_full: 0,
            sa_events: Vec::new(),
            queued: VecDeque::new(),
            events: VecDeque::new(),
            events_dropped: 0,
            policies: policing::Applied::default(),
        }
    }

    /// The runtime (for its counters), while running.
    #[must_use]
    pub fn runtime(&self) -> Option<&Runtime> {
        self.rt.as_ref()
    }

    /// The runtime, mutably (to send commands of its own), while running.
    pub fn runtime_mut(&mut self) -> Option<&mut Runtime> {
        self.rt.as_mut()
    }

    /// The FIB tunnel id of a configured tunnel (O(1); stable while the
    /// tunnel's connection exists).
    #[must_use]
    pub fn tunnel_id(&self, key: &TunnelKey) -> Option<TunnelId> {
        self.model.id(key)
    }

    /// The tunnel a FIB tunnel id stands for (O(1)).
    #[must_use]
    pub fn tunnel_key(&self, id: TunnelId) -> Option<&TunnelKey> {
        self.model.key_of(id)
    }

    /// The forwarding table last sent to the workers.
    #[must_use]
    pub fn fib(&self) -> &fib::Fib {
        self.fib.live()
    }

    /// Whether everything queued has been applied by every worker and no
    /// route table waits to go (call [`Dataplane::poll`] first).
    #[must_use]
    pub fn is_settled(&self) -> bool {
        self.queued.is_empty() && !self.fib.has_pending() && !self.model.has_changes()
    }

    /// Queue what `send` builds (one command per worker) and remember it
    /// until its outcome comes back. A full ring is counted and reported.
    fn queue(
        &mut self,
        what: String,
        tunnel: Option<&TunnelKey>,
        kind: Kind,
        send: impl FnOnce(&mut Runtime) -> Result<Ticket, RuntimeError>,
    ) -> Result<(), DataplaneError> {
        let Some(rt) = self.rt.as_mut() else {
            return Err(DataplaneError::Refused {
                what,
                reason: "the dataplane is shut down".to_owned(),
            });
        };
        match send(rt) {
            Ok(ticket) => {
                self.queued.push_back(Queued {
                    ticket,
                    what,
                    tunnel: tunnel.cloned(),
                    kind,
                    at: Instant::now(),
                    late: false,
                });
                Ok(())
            }
            Err(RuntimeError::RingFull) => {
                self.ring_full += 1;
                self.event(DataplaneEvent::RingFull {
                    what,
                    tunnel: tunnel.cloned(),
                });
                Err(DataplaneError::RingFull)
            }
            Err(e) => Err(DataplaneError::Refused {
                what,
                reason: e.to_string(),
            }),
        }
    }

    /// [`queue`](Self::queue) of one command replicated to every worker.
    fn queue_command(
        &mut self,
        what: String,
        tunnel: Option<&TunnelKey>,
        kind: Kind,
        command: Command,
    ) -> Result<(), DataplaneError> {
        self.queue(what, tunnel, kind, |rt| rt.send(command))
    }

    /// Room for `n` more commands on every worker's ring, or
    /// [`DataplaneError::RingFull`] (counted) so that an operation of
    /// several commands is queued whole or not at all.
    fn room_for(&mut self, n: usize, what: &str, tunnel: &TunnelKey) -> Result<(), DataplaneError> {
        let free = self.rt.as_ref().map_or(0, Runtime::free_slots);
        if free >= n {
            return Ok(());
        }
        self.ring_full += 1;
        self.event(DataplaneEvent::RingFull {
            what: what.to_owned(),
            tunnel: Some(tunnel.clone()),
        });
        Err(DataplaneError::RingFull)
    }

    fn event(&mut self, e: DataplaneEvent) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    /// Shut the runtime down (workers stopped, EAL cleaned up); returns
    /// a one-line summary of the final counters.
    pub fn shutdown_runtime(&mut self) -> Option<String> {
        let rt = self.rt.take()?;
        let (applied, failed) = rt.commands();
        let s = rt.shutdown();
        Some(format!(
            "commands applied {applied} failed {failed}; encap {} decap {} punted {} dropped {}",
            s.worker.encap_packets,
            s.worker.decap_packets,
            s.worker.punted,
            s.worker.total_dropped()
        ))
    }

    fn log_apply_error(&mut self, what: &str, e: &dyn std::fmt::Display) {
        self.apply_errors += 1;
        tracing::warn!("dataplane: {what}: {e}");
    }

    /// Publish what the model changed, if the workers gave the spare
    /// table back (else the next poll does).
    fn publish_fib(&mut self) {
        if self.model.has_changes() {
            self.fib.push(self.model.take_changes());
        }
        if !self.fib.has_pending() || self.rt.is_none() {
            return;
        }
        let n = self.fib.published() + 1;
        let mut ticket = None;
        let sent = self.fib.publish(|fib| match self.rt.as_mut() {
            Some(rt) => rt.send(Command::SetFib(fib)).map(|t| ticket = Some(t)),
            None => Err(RuntimeError::RingFull),
        });
        match (sent, ticket) {
            (Some(Ok(())), Some(ticket)) => self.queued.push_back(Queued {
                ticket,
                what: format!("routes #{n}"),
                tunnel: None,
                kind: Kind::Routes,
                at: Instant::now(),
                late: false,
            }),
            (Some(Err(e)), _) => {
                self.ring_full += 1;
                self.event(DataplaneEvent::RingFull {
                    what: format!("routes #{n}"),
                    tunnel: None,
                });
                tracing::warn!(
                    "dataplane: forwarding table #{n}: {e} (sent again by the next poll)"
                );
            }
            _ => {}
        }
    }

    /// Collect outcomes of queued commands (in order: workers apply their
    /// rings in order) into events.
    fn collect_outcomes(&mut self) {
        let Some(rt) = self.rt.as_ref() else {
            return;
        };
        let mut done = Vec::new();
        let mut late = Vec::new();
        while let Some(q) = self.queued.front() {
            match rt.outcome(&q.ticket) {
                Some(r) => {
                    if let Some(q) = self.queued.pop_front() {
                        done.push((q, r));
                    }
                }
                None => break,
            }
        }
        for q in &mut self.queued {
            if !q.late && q.at.elapsed() >= ACK_LATE {
                q.late = true;
                late.push(DataplaneEvent::Late {
                    what: q.what.clone(),
                    tunnel: q.tunnel.clone(),
                    after_ms: u64::try_from(q.at.elapsed().as_millis()).unwrap_or(u64::MAX),
                });
            }
        }
        for e in late {
            tracing::warn!("dataplane: {e:?}");
            self.event(e);
        }
        for (q, r) in done {
            match r {
                Ok(()) => {
                    if matches!(q.kind, Kind::Reported | Kind::Routes) {
                        self.event(DataplaneEvent::Applied {
                            what: q.what,
                            tunnel: q.tunnel,
                        });
                    }
                }
                Err(e) => {
                    if let Kind::Caps(t) = q.kind {
                        self.policies.forget(t);
                    }
                    let reason = match e {
                        RuntimeError::Refused { reason, .. } => reason.to_owned(),
                        other => other.to_string(),
                    };
                    tracing::warn!(
                        "dataplane: a worker refused {} (tunnel {:?}): {reason}",
                        q.what,
                        q.tunnel
                    );
                    self.event(DataplaneEvent::Failed {
                        what: q.what,
                        tunnel: q.tunnel,
                        reason,
                    });
                }
            }
        }
        // Ids given up are free again once the workers hold a table that
        // no longer names them and nothing older is in flight.
        if self.queued.iter().all(|q| q.kind != Kind::Routes)
            && !self.fib.has_pending()
            && !self.model.has_changes()
        {
            self.model.release_ids();
        }
    }

    // --- configuration -------------------------------------------------

    /// Add or replace one connection: routes (model), caps, steering.
    fn put_connection(&mut self, c: &VpnConnection, seq: Option<u64>) {
        let ids = self.model.put_connection(c, seq);
        let info = ConnInfo::of(c);
        if let Some(old) = self.conns.get(&c.id)
            && old.customer_gateway_id != info.customer_gateway_id
            && let Some(set) = self.conns_of_gateway.get_mut(&old.customer_gateway_id)
        {
            set.remove(&c.id);
        }
        self.conns_of_gateway
            .entry(info.customer_gateway_id.clone())
            .or_default()
            .insert(c.id.clone());
        let changed = self.conns.get(&c.id) != Some(&info);
        self.conns.insert(c.id.clone(), info);
        if changed {
            self.apply_caps_of(&c.id, ids);
            self.steer_connection(&c.id);
        }
    }

    /// Remove one connection: its SAs, routes, caps, steering, ids.
    fn delete_connection(&mut self, id: &str) {
        for i in 0..2 {
            let k = TunnelKey {
                connection_id: id.to_owned(),
                tunnel: i,
            };
            if let Err(e) = self.remove_child_sa(&k) {
                self.log_apply_error(&format!("removing the SAs of {k:?}"), &e);
            }
        }
        let Some(ids) = self.model.delete_connection(id) else {
            return;
        };
        if let Some(info) = self.conns.remove(id)
            && let Some(set) = self.conns_of_gateway.get_mut(&info.customer_gateway_id)
        {
            set.remove(id);
            if set.is_empty() {
                self.conns_of_gateway.remove(&info.customer_gateway_id);
            }
        }
        for t in ids {
            self.clear_caps(t);
        }
        if let Some(rt) = self.rt.as_mut() {
            for p in rt.steer_update(&[], &ids) {
                self.apply_errors += 1;
                tracing::warn!("dataplane: steering: {p}");
            }
        }
    }

    /// A customer gateway's address changed: re-steer its connections.
    fn put_gateway(&mut self, id: &str, address: Option<IpAddr>) {
        let before = self.gateways.insert(id.to_owned(), address);
        if before == Some(address) {
            return;
        }
        let conns: Vec<String> = self
            .conns_of_gateway
            .get(id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for c in conns {
            self.steer_connection(&c);
        }
    }
}

/// `UnknownSpi` → `unknown_spi`.
fn snake(debug_name: &str) -> String {
    let mut out = String::with_capacity(debug_name.len() + 4);
    for (i, ch) in debug_name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

impl Dataplane for DpdkDataplane {
    fn tunnel_id(&self, key: &TunnelKey) -> Option<TunnelId> {
        Self::tunnel_id(self, key)
    }

    fn apply(&mut self, config: &ApplianceConfig) {
        if self.rt.is_none() {
            return;
        }
        self.poll_runtime();
        self.port_names = config
            .dataplane
            .ports
            .iter()
            .map(|p| {
                let role = match p.role {
                    PortRole::Outside => "outside",
                    PortRole::Inside => "inside",
                    _ => "kernel",
                };
                (role, p.name.clone())
            })
            .collect();

        // 1. Addresses (only when they change).
        let Some(macs) = self.rt.as_ref().map(Runtime::macs) else {
            return;
        };
        let mac = |m: &Option<String>| {
            m.as_deref()
                .and_then(|m| parse_mac(m).ok())
                .unwrap_or([0xff; 6])
        };
        let d = &config.dataplane;
        let addresses = Addresses {
            outside_mac: macs.outside,
            outside_gateway_mac: mac(&d.outside_next_hop_mac),
            inside_mac: macs.inside,
            inside_gateway_mac: mac(&d.inside_next_hop_mac),
            kernel_mac: macs.kernel.unwrap_or_default(),
            outside_v4: v4_only(&config.gateway.outside_addresses),
            outside_v6: v6_only(&config.gateway.outside_addresses),
            inside_v4: d.inside_addresses.clone(),
        };
        if self.addresses.as_ref() != Some(&addresses) {
            let cmd = Command::SetAddresses(Box::new(addresses.clone()));
            match self.queue_command("SetAddresses".to_owned(), None, Kind::Reported, cmd) {
                Ok(()) => self.addresses = Some(addresses),
                Err(e) => self.log_apply_error("addresses", &e),
            }
        }

        // 2. Connections gone lose their SAs, routes and ids first.
        let wanted: HashSet<&str> = config.connections.iter().map(|c| c.id.as_str()).collect();
        let gone: Vec<String> = self
            .model
            .connections()
            .filter(|c| !wanted.contains(c.as_str()))
            .cloned()
            .collect();
        for id in gone {
            self.delete_connection(&id);
        }

        // 3. Routes: local networks, every connection in configuration
        //    order (its rank among them), then caps and steering for all
        //    (the gateway kind decides every tunnel's caps).
        self.gateway_kind = config.gateway.kind;
        self.gateways = config
            .customer_gateways
            .iter()
            .map(|g| (g.id.clone(), g.ip_address))
            .collect();
        self.model
            .set_local_networks(&config.gateway.local_networks);
        for (i, c) in config.connections.iter().enumerate() {
            self.put_connection(c, Some(i as u64));
        }
        self.publish_fib();

        // 4. Rate policy by each tunnel's bandwidth option.
        self.apply_rate_policy(config);

        // 5. Inbound steering of each tunnel to a worker.
        self.apply_steering(config);
    }

    fn apply_change(&mut self, config: &ApplianceConfig, change: &Change) {
        if self.rt.is_none() {
            return;
        }
        // Acknowledgements so far (no waiting): the spare table is
        // usually back by now.
        self.poll_runtime();
        self.gateway_kind = config.gateway.kind;
        match change {
            Change::PutConnection { connection } => self.put_connection(connection, None),
            Change::DeleteConnection { id } => self.delete_connection(id),
            Change::PutCustomerGateway { customer_gateway } => {
                self.put_gateway(&customer_gateway.id, customer_gateway.ip_address);
            }
            Change::DeleteCustomerGateway { id } => {
                self.gateways.remove(id);
            }
            // Client VPN endpoints have no dataplane state yet (the
            // remote-access runtime will install its own): nothing to do,
            // and no reason to re-apply every tunnel.
            Change::PutClientVpnEndpoint { .. } | Change::DeleteClientVpnEndpoint { .. } => {
                return;
            }
            // A kind of change this runtime does not follow yet: the
            // whole configuration.
            _ => {
                self.apply(config);
                return;
            }
        }
        self.publish_fib();
    }

    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState {
        self.model.state(key).cloned().unwrap_or_default()
    }

    fn sas(&self) -> Vec<SaInfo> {
        let counters = self.rt.as_ref().map_or(&[][..], Runtime::sa_counters);
        let mut out = Vec::new();
        for i in self.installed.values() {
            let age = i.at.elapsed().as_secs();
            for s in [&i.inbound, &i.outbound] {
                let mut s = s.clone();
                s.age_secs = age;
                let inbound = s.direction == SaDirection::Inbound;
                if let Some(c) = counters
                    .iter()
                    .find(|c| c.spi == s.spi && c.inbound == inbound)
                {
                    s.packets = c.counters.packets;
                    s.bytes = c.counters.bytes;
                }
                out.push(s);
            }
        }
        for (_, s, at) in self.extra_inbound.values() {
            let mut s = s.clone();
            s.age_secs = at.elapsed().as_secs();
            if let Some(c) = counters.iter().find(|c| c.spi == s.spi && c.inbound) {
                s.packets = c.counters.packets;
                s.bytes = c.counters.bytes;
            }
            out.push(s);
        }
        out
    }

    fn dynamic_routes(&self) -> Vec<RouteEntry> {
        let mut routes: Vec<&DynamicRoute> = self.model.dynamic().collect();
        routes.sort_by_key(|r| r.prefix);
        routes
            .into_iter()
            .map(|r| {
                r.entry(
                    r.tunnels
                        .iter()
                        .chain(&r.backup)
                        .any(|k| self.model.is_up(k)),
                )
            })
            .collect()
    }

    fn set_dynamic_routes(&mut self, routes: Vec<DynamicRoute>) {
        self.model.set_dynamic(routes);
        self.publish_fib();
    }

    fn stats(&self) -> DataplaneStats {
        let mut st = DataplaneStats::default();
        for (k, t) in self.model.ids() {
            let c = self
                .rt
                .as_ref()
                .and_then(|rt| rt.tunnel_counters(t))
                .unwrap_or_default();
            st.tunnels.insert(
                DataplaneStats::tunnel_key(&k.connection_id, k.tunnel),
                TunnelCounters {
                    data_in_bytes: c.in_bytes,
                    data_out_bytes: c.out_bytes,
                    packets_in: c.in_packets,
                    packets_out: c.out_packets,
                    drops: c.total_dropped(),
                    worker: self
                        .rt
                        .as_ref()
                        .and_then(|rt| rt.steered_worker(t))
                        .and_then(|w| u32::try_from(w).ok()),
                },
            );
        }
        let Some(rt) = &self.rt else {
            return st;
        };
        if rt.workers() > 1 {
            st.steering = rt.steering_mode().to_string();
        }
        st.crypto_backend = rt.crypto_backend().to_string();
        let snap = rt.worker_stats();
        let w = &snap.worker;
        for reason in Drop::ALL {
            if reason != Drop::Esp && reason != Drop::Ovpn {
                st.drops.insert(reason.name().to_owned(), w.dropped(reason));
            }
        }
        // The OpenVPN data channel's reasons (together: Drop::Ovpn).
        for reason in dataplane::ovpn::DataDrop::ALL {
            st.drops
                .insert(format!("ovpn_{}", reason.name()), w.ovpn[reason.index()]);
        }
        for reason in dataplane::esp::DropReason::ALL {
            st.drops.insert(
                format!("esp_{}", snake(&format!("{reason:?}"))),
                w.esp.get(reason),
            );
            // Outer reassembly before decap: only its own reasons.
            let outer = w.outer.get(reason);
            if outer > 0 || format!("{reason:?}").starts_with("Reassembly") {
                st.drops
                    .insert(format!("outer_{}", snake(&format!("{reason:?}"))), outer);
            }
        }
        for (i, role) in ["outside", "inside", "kernel"].into_iter().enumerate() {
            st.drops.insert(format!("tx_full_{role}"), snap.tx_full[i]);
        }
        st.drops
            .insert("no_kernel_port".to_owned(), snap.no_kernel_port);
        st.drops
            .insert("handoff_full".to_owned(), snap.handoff.full);
        let (applied, failed) = rt.commands();
        for (name, v) in [
            ("encap_packets", w.encap_packets),
            ("decap_packets", w.decap_packets),
            ("punted", w.punted),
            ("arp_replies", w.arp_replies),
            ("outer_reassembled", w.outer_reassembled),
            ("outer_fragments_held", w.outer_fragments_held),
            ("ovpn_decap_packets", w.ovpn_decap_packets),
            ("ovpn_encap_packets", w.ovpn_encap_packets),
            ("ovpn_keepalives", w.ovpn_keepalives),
            ("ovpn_control_punted", w.ovpn_control_punted),
            ("handed_off", snap.handoff.sent),
            ("handoff_received", snap.handoff.received),
            ("dropped", w.total_dropped()),
            ("commands_applied", applied),
            ("commands_failed", failed),
            ("uptime_secs", snap.uptime_secs),
            ("apply_errors", self.apply_errors),
            ("ring_full", self.ring_full),
            ("commands_queued", self.queued.len() as u64),
            ("fib_publications", self.fib.published()),
            ("fib_changes_refused", self.fib.refused()),
            ("events_dropped", self.events_dropped),
        ] {
            st.worker.insert(name.to_owned(), v);
        }
        let links = rt.port_links();
        let queues = rt.port_queues();
        for (role, p) in rt.port_stats() {
            let name = self
                .port_names
                .get(role)
                .cloned()
                .unwrap_or_else(|| role.to_owned());
            let link = links.iter().find(|(r, _)| *r == role).map(|(_, l)| *l);
            st.rx_packets += p.rx_packets;
            st.tx_packets += p.tx_packets;
            st.ports.insert(
                name,
                PortCounters {
                    rx_packets: p.rx_packets,
                    tx_packets: p.tx_packets,
                    rx_bytes: p.rx_bytes,
                    tx_bytes: p.tx_bytes,
                    rx_dropped: p.rx_missed + p.rx_no_mbuf + p.rx_errors,
                    tx_errors: p.tx_errors,
                    device: link.map(|l| l.device.clone()).unwrap_or_default(),
                    link_up: link.and_then(|l| l.status).map(|s| s.up),
                    speed_mbps: link.and_then(|l| l.status).map_or(0, |s| s.speed_mbps),
                    link_changes: link.map_or(0, |l| l.changes),
                    offloads: queues
                        .iter()
                        .find(|q| q.role == role)
                        .map(|q| q.offloads.to_string())
                        .unwrap_or_default(),
                },
            );
        }
        st
    }

    fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState) {
        // Routes follow the UP tunnels (one group, the BGP routes through
        // the tunnel).
        if self.model.set_state(key, state) {
            self.publish_fib();
        }
    }

    fn install_child_sa(
        &mut self,
        key: &TunnelKey,
        pair: &ChildSaPair,
    ) -> Result<(), DataplaneError> {
        let tunnel = self
            .model
            .id(key)
            .ok_or_else(|| DataplaneError::UnknownTunnel(key.clone()))?;
        let now = self.rt.as_ref().map_or(0, Runtime::now_secs);
        let invalid = |direction, spi, e: &dyn std::fmt::Display| DataplaneError::InvalidSa {
            tunnel: key.clone(),
            direction,
            spi,
            reason: e.to_string(),
        };
        // Checked here for an error naming tunnel and direction; the
        // runtime builds one copy per worker from the same configuration.
        InboundSa::new(&pair.inbound, now)
            .map_err(|e| invalid(SaDirection::Inbound, pair.inbound.spi, &e))?;
        OutboundSa::new(&pair.outbound, now)
            .map_err(|e| invalid(SaDirection::Outbound, pair.outbound.spi, &e))?;
        let new_spi = pair.inbound.spi;
        // (1) The new inbound SA: from now on both decrypt. Added already
        // when we answered the peer's rekey (add_child_inbound).
        let added_before = self
            .extra_inbound
            .get(&new_spi)
            .is_some_and(|(k, _, _)| k == key);
        let replaces = self
            .installed
            .get(key)
            .is_some_and(|i| i.inbound.spi == new_spi);
        if !added_before && !replaces {
            self.room_in_sa_tables(key, new_spi)?;
        }
        self.check_tunnel_capacity(key, tunnel)?;
        let what_out = format!("SetOutbound {:#x}", pair.outbound.spi);
        self.room_for(if added_before { 1 } else { 2 }, &what_out, key)?;
        if !added_before {
            self.queue(
                format!("AddInbound {new_spi:#x}"),
                Some(key),
                Kind::Reported,
                |rt| rt.add_inbound(Some(tunnel), &pair.inbound, Duration::ZERO),
            )?;
        }
        // (2) Switch the outbound SA (queued behind (1): the worker
        // applies them in order); the old one comes back retired.
        self.queue(what_out, Some(key), Kind::Reported, |rt| {
            rt.set_outbound(tunnel, &pair.outbound, Duration::ZERO)
        })?;
        let previous = self.installed.insert(
            key.clone(),
            Installed {
                inbound: sa_info(key, SaDirection::Inbound, &pair.inbound),
                outbound: sa_info(key, SaDirection::Outbound, &pair.outbound),
                at: Instant::now(),
            },
        );
        self.extra_inbound.remove(&new_spi);
        // The previous inbound SA decrypts until IKE removes it.
        if let Some(old) = previous
            && old.inbound.spi != new_spi
        {
            self.extra_inbound
                .insert(old.inbound.spi, (key.clone(), old.inbound, old.at));
        }
        Ok(())
    }

    fn add_child_inbound(&mut self, key: &TunnelKey, sa: &SaConfig) -> Result<(), DataplaneError> {
        let tunnel = self
            .model
            .id(key)
            .ok_or_else(|| DataplaneError::UnknownTunnel(key.clone()))?;
        let now = self.rt.as_ref().map_or(0, Runtime::now_secs);
        InboundSa::new(sa, now).map_err(|e| DataplaneError::InvalidSa {
            tunnel: key.clone(),
            direction: SaDirection::Inbound,
            spi: sa.spi,
            reason: e.to_string(),
        })?;
        if !self.extra_inbound.contains_key(&sa.spi) {
            self.room_in_sa_tables(key, sa.spi)?;
        }
        self.queue(
            format!("AddInbound {:#x}", sa.spi),
            Some(key),
            Kind::Reported,
            |rt| rt.add_inbound(Some(tunnel), sa, Duration::ZERO),
        )?;
        self.extra_inbound.insert(
            sa.spi,
            (
                key.clone(),
                sa_info(key, SaDirection::Inbound, sa),
                Instant::now(),
            ),
        );
        Ok(())
    }

    fn remove_child_inbound(&mut self, key: &TunnelKey, spi: u32) -> Result<(), DataplaneError> {
        if self
            .extra_inbound
            .get(&spi)
            .is_none_or(|(k, _, _)| k != key)
        {
            return Ok(());
        }
        self.queue_command(
            format!("RemoveInbound {spi:#x}"),
            Some(key),
            Kind::Reported,
            Command::RemoveInbound { spi },
        )?;
        self.extra_inbound.remove(&spi);
        Ok(())
    }

    fn remove_child_sa(&mut self, key: &TunnelKey) -> Result<(), DataplaneError> {
        let extra: Vec<u32> = self
            .extra_inbound
            .iter()
            .filter(|(_, (k, _, _))| k == key)
            .map(|(spi, _)| *spi)
            .collect();
        let pair = usize::from(self.installed.contains_key(key)) * 2;
        if extra.is_empty() && pair == 0 {
            return Ok(());
        }
        self.room_for(extra.len() + pair, "RemoveChildSa", key)?;
        for spi in extra {
            self.remove_child_inbound(key, spi)?;
        }
        let Some(old) = self.installed.remove(key) else {
            return Ok(());
        };
        if let Some(tunnel) = self.model.id(key) {
            self.queue_command(
                "RemoveOutbound".to_owned(),
                Some(key),
                Kind::Reported,
                Command::RemoveOutbound { tunnel },
            )?;
        }
        self.queue_command(
            format!("RemoveInbound {:#x}", old.inbound.spi),
            Some(key),
            Kind::Reported,
            Command::RemoveInbound {
                spi: old.inbound.spi,
            },
        )
    }

    fn poll(&mut self) {
        self.poll_runtime();
        // A table that could not go when it was made (the workers still
        // held the spare, or a ring was full) goes now.
        self.publish_fib();
        let Some(rt) = self.rt.as_mut() else {
            return;
        };
        for ev in rt.take_lifetime_events() {
            let worker::Event::Lifetime {
                spi,
                inbound,
                event,
            } = ev
            else {
                continue;
            };
            let direction = if inbound {
                SaDirection::Inbound
            } else {
                SaDirection::Outbound
            };
            let tunnel = self
                .installed
                .iter()
                .find(|(_, i)| {
                    let s = if inbound { &i.inbound } else { &i.outbound };
                    s.spi == spi
                })
                .map(|(k, _)| k.clone())
                .or_else(|| {
                    self.extra_inbound
                        .get(&spi)
                        .filter(|_| inbound)
                        .map(|(k, _, _)| k.clone())
                });
            tracing::info!("dataplane: SA {spi:#x} ({direction:?}, tunnel {tunnel:?}) {event:?}");
            if self.sa_events.len() == SA_EVENTS_KEPT {
                self.sa_events.remove(0);
            }
            self.sa_events.push(SaLifetimeEvent {
                tunnel,
                spi,
                direction,
                event,
            });
        }
    }

    fn poll_sa_events(&mut self) -> Vec<SaLifetimeEvent> {
        std::mem::take(&mut self.sa_events)
    }

    fn poll_events(&mut self) -> Vec<DataplaneEvent> {
        self.events.drain(..).collect()
    }

    fn shutdown(&mut self) {
        if let Some(summary) = self.shutdown_runtime() {
            tracing::info!("dataplane stopped: {summary}");
        }
    }
}

impl DpdkDataplane {
    /// The runtime's events (acks, retired objects, counters), then the
    /// outcomes of what was queued. Never blocks.
    fn poll_runtime(&mut self) {
        if let Some(rt) = self.rt.as_mut() {
            rt.poll();
            rt.watch_links();
        }
        self.collect_outcomes();
    }

    /// Room in the workers' inbound SA tables for one more SA.
    fn room_in_sa_tables(&self, key: &TunnelKey, spi: u32) -> Result<(), DataplaneError> {
        let cap = self.rt.as_ref().map_or(0, Runtime::sa_capacity);
        if self.installed.len() + self.extra_inbound.len() < cap {
            return Ok(());
        }
        Err(DataplaneError::Refused {
            what: format!("AddInbound {spi:#x} for {key:?}"),
            reason: format!("inbound SA table full ({cap} SAs)"),
        })
    }

    /// A tunnel id the workers' outbound table can hold.
    fn check_tunnel_capacity(&self, key: &TunnelKey, t: TunnelId) -> Result<(), DataplaneError> {
        let cap = self.rt.as_ref().map_or(0, Runtime::sa_capacity);
        if (t.0 as usize) < cap {
            return Ok(());
        }
        Err(DataplaneError::Refused {
            what: format!("SetOutbound for {key:?}"),
            reason: format!("tunnel id {} beyond the outbound table ({cap})", t.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_inside_hosts() {
        assert_eq!(snake("UnknownSpi"), "unknown_spi");
        assert_eq!(snake("Replay"), "replay");
        assert_eq!(
            model::first_host_v4("169.254.10.0/30".parse().unwrap()),
            Some("169.254.10.1/32".parse().unwrap())
        );
        assert_eq!(
            model::first_host_v6("fd00::4/126".parse().unwrap()),
            Some("fd00::5/128".parse().unwrap())
        );
    }
}
