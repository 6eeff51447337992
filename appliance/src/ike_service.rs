//! IKE for `vpnd`'s tunnels: the sans-IO engine ([`control::ike`]) driven
//! over kernel UDP sockets, its Child SAs installed into the dataplane.
//!
//! ```text
//!   receiver threads (one per socket: <outside address>:500 and :4500,
//!   bound with IP_FREEBIND, so the address may appear on the kernel port
//!   later)  ──► mpsc ──►  IKE thread (run):
//!                           TunnelSet::handle_datagram ─► the tunnel's Endpoint
//!                           TunnelSet::handle_timeout     (by local/peer address)
//!                           every 250 ms: lock Manager, tunnel_specs(config)
//!                                         ──► TunnelSet::reconcile
//!                           poll_transmit ──► send_to (out of the kernel
//!                                             port; the worker routes it out)
//!                           events? lock Manager ──► TunnelSet::apply:
//!                             ChildSaUp   ─► install_child_sa (make before break)
//!                             ChildSaDown ─► remove_child_sa (the installed pair only)
//!                             Log         ─► activity log (vpnctl logs)
//!                             state       ─► set_tunnel_state (vpnctl show tunnels;
//!                                            the FIB follows the UP tunnels)
//! ```
//!
//! One [`Endpoint`] per tunnel, keyed by (our outside address, customer
//! gateway address): the two tunnels of a connection go to the same peer
//! from different outside addresses, and each keeps its own IKE SA,
//! retries and DPD. A tunnel whose IKE-relevant options change (or that is
//! removed) is closed (DELETE sent, SAs removed) and, if still configured,
//! started afresh.
//!
//! What it never does: touch the dataplane except through
//! [`TunnelSink`] (the manager's [`Dataplane`]), or hold the manager's
//! lock while waiting for the network.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control::config::{
    ApplianceConfig, IkeVersion, RoutingType, TunnelInsideIpVersion, TunnelOptions,
};
use control::dataplane::{
    ChildSaPair, Dataplane, DataplaneError, TunnelKey, TunnelRuntimeState, TunnelUpDown,
};
use control::ike::endpoint::{DEFAULT_HALF_OPEN_THRESHOLD, Endpoint};
use control::ike::sa::{
    ChildSa, Datagram, Event, IKE_PORT, IkeConfig, NAT_T_PORT, PhaseState, Transmit,
};
use control::ike::{Rng, SystemRng};
use control::logs::{ActivityContext, IkePhaseState, LogEntry, TunnelActivityLog, resource_id};
use control::manager::Manager;
use dataplane::esp::sa::Direction;
use ipnet::IpNet;

/// How often the configuration is compared with the running tunnels.
pub const RECONCILE_PERIOD: Duration = Duration::from_millis(250);
/// Longest sleep of the IKE thread (bounds the reaction to a change).
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Largest IKE datagram read.
const MAX_DATAGRAM: usize = 65_535;
/// Receiver threads wake this often to notice they must stop.
const RECV_TIMEOUT: Duration = Duration::from_millis(500);
/// A Child SA the dataplane could not install is tried again after this
/// long.
const INSTALL_RETRY: Duration = Duration::from_secs(1);
/// A failed bind is retried after this long.
const BIND_RETRY: Duration = Duration::from_secs(5);

/// What IKE needs from the rest of the daemon: the dataplane's SA and
/// state calls and the log ring. Implemented by [`Manager`].
pub trait TunnelSink {
    /// Install (or replace, make before break) a tunnel's Child SA pair.
    ///
    /// # Errors
    /// The dataplane's.
    fn install_child_sa(
        &mut self,
        key: &TunnelKey,
        pair: &ChildSaPair,
    ) -> Result<(), DataplaneError>;
    /// Remove a tunnel's Child SA pair.
    ///
    /// # Errors
    /// The dataplane's.
    fn remove_child_sa(&mut self, key: &TunnelKey) -> Result<(), DataplaneError>;
    /// The tunnel's state as last recorded.
    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState;
    /// Record a tunnel's state.
    fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState);
    /// Record a tunnel log entry.
    fn record_log(&mut self, entry: LogEntry);
}

impl<D: Dataplane> TunnelSink for Manager<D> {
    fn install_child_sa(
        &mut self,
        key: &TunnelKey,
        pair: &ChildSaPair,
    ) -> Result<(), DataplaneError> {
        self.dataplane_mut().install_child_sa(key, pair)
    }
    fn remove_child_sa(&mut self, key: &TunnelKey) -> Result<(), DataplaneError> {
        self.dataplane_mut().remove_child_sa(key)
    }
    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState {
        self.dataplane().tunnel_state(key)
    }
    fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState) {
        self.dataplane_mut().set_tunnel_state(key, state);
    }
    fn record_log(&mut self, entry: LogEntry) {
        Self::record_log(self, entry);
    }
}

/// One tunnel as IKE runs it, derived from the configuration. Two specs
/// are equal when IKE would behave the same: options IKE does not use
/// (bandwidth, logs, inside CIDRs) are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSpec {
    /// Which tunnel.
    pub key: TunnelKey,
    /// Our outside address (the tunnel's `outside_ip_address`).
    pub local: IpAddr,
    /// The customer gateway's address.
    pub remote: IpAddr,
    /// Static or BGP (for UP/DOWN).
    pub routing: RoutingType,
    /// Appliance-side traffic selectors.
    pub local_ts: Vec<IpNet>,
    /// Customer-side traffic selectors.
    pub remote_ts: Vec<IpNet>,
    /// The tunnel's options, IKE-relevant fields only.
    options: TunnelOptions,
}

impl TunnelSpec {
    /// The engine's configuration of this tunnel.
    #[must_use]
    pub fn ike_config(&self) -> IkeConfig {
        IkeConfig::from_tunnel(
            &self.options,
            self.local,
            self.remote,
            self.local_ts.clone(),
            self.remote_ts.clone(),
        )
    }

    /// `<connection-id>_<outside-ip>` (spec § 20.3).
    #[must_use]
    pub fn resource_id(&self) -> String {
        resource_id(&self.key.connection_id, &self.local.to_string())
    }
}

/// The tunnels IKE runs for `config`, and why others are not run (one
/// message per skipped tunnel).
#[must_use]
pub fn tunnel_specs(config: &ApplianceConfig) -> (Vec<TunnelSpec>, Vec<String>) {
    let mut specs = Vec::new();
    let mut skipped = Vec::new();
    for c in &config.connections {
        let remote = config
            .customer_gateways
            .iter()
            .find(|g| g.id == c.customer_gateway_id)
            .and_then(|g| g.ip_address);
        let Some(remote) = remote else {
            skipped.push(format!(
                "{}: customer gateway {} has no IP address",
                c.id, c.customer_gateway_id
            ));
            continue;
        };
        let (local_ts, remote_ts) = match c.tunnel_inside_ip_version {
            TunnelInsideIpVersion::Ipv6 => (
                vec![IpNet::V6(c.remote_ipv6_network_cidr)],
                vec![IpNet::V6(c.local_ipv6_network_cidr)],
            ),
            _ => (
                vec![IpNet::V4(c.remote_ipv4_network_cidr)],
                vec![IpNet::V4(c.local_ipv4_network_cidr)],
            ),
        };
        for (i, t) in c.tunnels.iter().enumerate() {
            let what = format!("{}/{i}", c.id);
            let Some(local) = t.outside_ip_address else {
                skipped.push(format!("{what}: no outside address"));
                continue;
            };
            if t.pre_shared_key.is_none() {
                skipped.push(format!("{what}: no pre-shared key"));
                continue;
            }
            if !t.ike_versions.contains(&IkeVersion::Ikev2) {
                skipped.push(format!("{what}: IKEv1 only (this build speaks IKEv2)"));
                continue;
            }
            let mut options = t.clone();
            // Not IKE's business: changing them must not restart IKE.
            options.inside_ipv4_cidr = None;
            options.inside_ipv6_cidr = None;
            options.tunnel_bandwidth = TunnelOptions::default().tunnel_bandwidth;
            options.log = TunnelOptions::default().log;
            options.enable_tunnel_lifecycle_control = false;
            specs.push(TunnelSpec {
                key: TunnelKey {
                    connection_id: c.id.clone(),
                    tunnel: i,
                },
                local,
                remote,
                routing: c.routing,
                local_ts: local_ts.clone(),
                remote_ts: remote_ts.clone(),
                options,
            });
        }
    }
    (specs, skipped)
}

fn phase(p: PhaseState) -> IkePhaseState {
    match p {
        PhaseState::Established => IkePhaseState::Established,
        PhaseState::Rekeying => IkePhaseState::Rekeying,
        PhaseState::Negotiating => IkePhaseState::Negotiating,
        PhaseState::Down => IkePhaseState::Down,
    }
}

/// Best of two states (Established > Rekeying > Negotiating > Down).
fn best(a: IkePhaseState, b: IkePhaseState) -> IkePhaseState {
    let rank = |s| match s {
        IkePhaseState::Established => 3,
        IkePhaseState::Rekeying => 2,
        IkePhaseState::Negotiating => 1,
        IkePhaseState::Down => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One running tunnel.
#[derive(Debug)]
struct Runner {
    spec: TunnelSpec,
    endpoint: Endpoint,
    /// The installed pair: (inbound SPI, outbound SPI).
    installed: Option<(u32, u32)>,
    nat_t: bool,
    /// Events taken from the endpoint, not yet applied.
    pending: Vec<Event>,
    /// A Child SA the dataplane refused (e.g. a stalled worker did not
    /// acknowledge in time), tried again at the instant given.
    retry: Option<(Instant, Box<ChildSa>)>,
    /// What was last recorded.
    reported: Option<(IkePhaseState, IkePhaseState, bool)>,
}

impl Runner {
    fn new(spec: TunnelSpec, now: Instant, rng: &mut dyn Rng) -> Self {
        let mut endpoint = Endpoint::new(rng, DEFAULT_HALF_OPEN_THRESHOLD);
        endpoint.add_tunnel(spec.ike_config());
        endpoint.start(now, rng);
        Self {
            spec,
            endpoint,
            installed: None,
            nat_t: false,
            pending: Vec::new(),
            retry: None,
            reported: None,
        }
    }

    fn phases(&self) -> (IkePhaseState, IkePhaseState) {
        let mut p1 = IkePhaseState::Down;
        let mut p2 = IkePhaseState::Down;
        for s in self.endpoint.sas() {
            p1 = best(p1, phase(s.phase1_state()));
            p2 = best(p2, phase(s.phase2_state()));
        }
        // Up only with the pair in the dataplane.
        if self.installed.is_none()
            && matches!(p2, IkePhaseState::Established | IkePhaseState::Rekeying)
        {
            p2 = IkePhaseState::Negotiating;
        }
        if self.installed.is_some() && p2 == IkePhaseState::Down {
            p2 = IkePhaseState::Established;
        }
        (p1, p2)
    }

    fn context(&self) -> ActivityContext {
        let (p1, p2) = self.phases();
        ActivityContext {
            dpd_enabled: self.spec.options.dpd_timeout_secs > 0,
            nat_t_detected: self.nat_t,
            ike_phase1_state: p1,
            ike_phase2_state: p2,
        }
    }

    fn log(&self, sink: &mut dyn TunnelSink, details: String) {
        let entry =
            TunnelActivityLog::new(self.spec.resource_id(), epoch_ms(), self.context(), details);
        let entry = LogEntry::Activity(entry);
        eprintln!("vpnd: ike: {}", entry.render_text());
        sink.record_log(entry);
    }

    fn retry_due(&self, now: Instant) -> bool {
        self.retry.as_ref().is_some_and(|(at, _)| *at <= now)
    }

    fn apply(&mut self, rng: &mut dyn Rng, sink: &mut dyn TunnelSink) {
        let key = self.spec.key.clone();
        if self.retry_due(Instant::now())
            && let Some((_, c)) = self.retry.take()
        {
            self.pending.insert(0, Event::ChildSaUp(c));
        }
        for e in std::mem::take(&mut self.pending) {
            // A Child SA that goes away is not retried.
            if let Event::ChildSaDown { inbound_spi, .. } = &e
                && self
                    .retry
                    .as_ref()
                    .is_some_and(|(_, c)| c.inbound.spi == *inbound_spi)
            {
                self.retry = None;
            }
            match e {
                Event::IkeSaUp { nat_detected, .. } => {
                    self.nat_t = nat_detected;
                    self.log(sink, "IKE_SA established".to_owned());
                }
                Event::ChildSaUp(c) => {
                    let mut seeds = [[0u8; 16]; 2];
                    rng.fill(&mut seeds[0]);
                    rng.fill(&mut seeds[1]);
                    let pair = c
                        .sa_config(Direction::Inbound, seeds[0])
                        .zip(c.sa_config(Direction::Outbound, seeds[1]));
                    let Some((inbound, outbound)) = pair else {
                        self.log(
                            sink,
                            format!(
                                "CHILD_SA {:08x}/{:08x} cannot be expressed for the dataplane",
                                c.inbound.spi, c.outbound.spi
                            ),
                        );
                        continue;
                    };
                    self.nat_t |= c.nat_t;
                    match sink.install_child_sa(&key, &ChildSaPair { inbound, outbound }) {
                        Ok(()) => {
                            self.installed = Some((c.inbound.spi, c.outbound.spi));
                            self.log(
                                sink,
                                format!(
                                    "CHILD_SA established and installed: SPIs {:08x}_i {:08x}_o",
                                    c.inbound.spi, c.outbound.spi
                                ),
                            );
                        }
                        Err(e) => {
                            self.log(
                                sink,
                                format!(
                                    "CHILD_SA {:08x}/{:08x} cannot be installed (retrying in {} s): {e}",
                                    c.inbound.spi,
                                    c.outbound.spi,
                                    INSTALL_RETRY.as_secs()
                                ),
                            );
                            self.retry = Some((Instant::now() + INSTALL_RETRY, c));
                        }
                    }
                }
                // A rekeyed SA goes down after its successor was installed
                // (which already replaced it): only the installed pair is
                // removed.
                Event::ChildSaDown { inbound_spi, .. }
                    if self.installed.is_some_and(|(i, _)| i == inbound_spi) =>
                {
                    if let Err(e) = sink.remove_child_sa(&key) {
                        self.log(sink, format!("removing CHILD_SA {inbound_spi:08x}: {e}"));
                    }
                    self.installed = None;
                    self.log(sink, format!("CHILD_SA {inbound_spi:08x} removed"));
                }
                Event::IkeSaDown { reason } => {
                    self.log(sink, format!("IKE_SA down: {reason:?}"));
                }
                Event::Log(line) => self.log(sink, line),
                // IKE SA rekeys change nothing in the dataplane.
                _ => {}
            }
        }
        self.report(sink);
    }

    /// Record the state if it changed.
    fn report(&mut self, sink: &mut dyn TunnelSink) {
        let (p1, p2) = self.phases();
        let now = (p1, p2, self.nat_t);
        if self.reported == Some(now) {
            return;
        }
        let key = self.spec.key.clone();
        let mut state = sink.tunnel_state(&key);
        let was = state.up_down(self.spec.routing);
        state.ike_phase1_state = p1;
        state.ike_phase2_state = p2;
        state.nat_t_detected = self.nat_t;
        let is = state.up_down(self.spec.routing);
        if was != is || state.last_status_change_ms.is_none() {
            state.last_status_change_ms = Some(epoch_ms());
        }
        sink.set_tunnel_state(key, state);
        self.reported = Some(now);
        if was != is {
            let s = if is == TunnelUpDown::Up { "UP" } else { "DOWN" };
            self.log(sink, format!("tunnel status changed to {s}"));
        }
    }

    /// DELETE to the peer, SAs out of the dataplane, state DOWN.
    fn close(&mut self, now: Instant, rng: &mut dyn Rng, sink: &mut dyn TunnelSink) {
        self.endpoint.close(now, rng, self.spec.remote);
        while let Some((_, e)) = self.endpoint.poll_event() {
            self.pending.push(e);
        }
        self.apply(rng, sink);
        if self.installed.take().is_some()
            && let Err(e) = sink.remove_child_sa(&self.spec.key)
        {
            self.log(sink, format!("removing the CHILD_SA: {e}"));
        }
        let mut state = sink.tunnel_state(&self.spec.key);
        state.ike_phase1_state = IkePhaseState::Down;
        state.ike_phase2_state = IkePhaseState::Down;
        sink.set_tunnel_state(self.spec.key.clone(), state);
    }
}

/// The tunnels IKE runs, without sockets: datagrams and time in,
/// datagrams and dataplane calls out (see the module docs for the order).
#[derive(Debug, Default)]
pub struct TunnelSet {
    rng: SystemRng,
    runners: BTreeMap<TunnelKey, Runner>,
    transmits: VecDeque<Transmit>,
    skipped: Vec<String>,
    unmatched: u64,
}

impl TunnelSet {
    /// No tunnels.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Make the running tunnels match `specs`: new ones start (initiating
    /// when their startup action is `start`), changed ones are closed and
    /// started again, removed ones are closed. `skipped` are reasons why
    /// configured tunnels do not run (logged when they change).
    pub fn reconcile(
        &mut self,
        now: Instant,
        specs: Vec<TunnelSpec>,
        skipped: Vec<String>,
        sink: &mut dyn TunnelSink,
    ) {
        if skipped != self.skipped {
            for s in skipped.iter().filter(|s| !self.skipped.contains(s)) {
                eprintln!("vpnd: ike: not running {s}");
            }
            self.skipped = skipped;
        }
        let wanted: BTreeMap<TunnelKey, TunnelSpec> =
            specs.into_iter().map(|s| (s.key.clone(), s)).collect();
        let stale: Vec<TunnelKey> = self
            .runners
            .iter()
            .filter(|(k, r)| wanted.get(*k) != Some(&r.spec))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(mut r) = self.runners.remove(&k) {
                r.close(now, &mut self.rng, sink);
                self.transmits
                    .extend(std::iter::from_fn(|| r.endpoint.poll_transmit()));
                eprintln!("vpnd: ike: {}/{} stopped", k.connection_id, k.tunnel);
            }
        }
        for (k, spec) in wanted {
            if self.runners.contains_key(&k) {
                continue;
            }
            eprintln!(
                "vpnd: ike: {}/{} runs {} -> {} ({:?})",
                k.connection_id, k.tunnel, spec.local, spec.remote, spec.options.startup_action
            );
            let mut r = Runner::new(spec, now, &mut self.rng);
            while let Some((_, e)) = r.endpoint.poll_event() {
                r.pending.push(e);
            }
            r.apply(&mut self.rng, sink);
            self.runners.insert(k, r);
        }
    }

    /// The outside addresses the running tunnels use.
    #[must_use]
    pub fn local_addresses(&self) -> BTreeSet<IpAddr> {
        self.runners.values().map(|r| r.spec.local).collect()
    }

    /// A datagram from one of the IKE sockets, to the tunnel of its
    /// (local, remote) addresses.
    pub fn handle_datagram(&mut self, now: Instant, d: Datagram<'_>) {
        let r = self
            .runners
            .values_mut()
            .find(|r| r.spec.local == d.local.ip() && r.spec.remote == d.remote.ip());
        match r {
            Some(r) => r.endpoint.handle_datagram(now, &mut self.rng, d),
            None => self.unmatched += 1,
        }
    }

    /// Run the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        for r in self.runners.values_mut() {
            if r.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                r.endpoint.handle_timeout(now, &mut self.rng);
            }
        }
    }

    /// The earliest timer.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.runners
            .values()
            .filter_map(|r| r.endpoint.poll_timeout())
            .min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        self.runners
            .values_mut()
            .find_map(|r| r.endpoint.poll_transmit())
    }

    /// Take the engines' events; `true` when some must be applied (call
    /// [`apply`](Self::apply) with the manager locked).
    pub fn collect_events(&mut self) -> bool {
        let mut any = false;
        for r in self.runners.values_mut() {
            while let Some((_, e)) = r.endpoint.poll_event() {
                r.pending.push(e);
            }
            any |= !r.pending.is_empty() || r.retry_due(Instant::now());
        }
        any
    }

    /// Apply the collected events: SAs into the dataplane, state, logs.
    pub fn apply(&mut self, sink: &mut dyn TunnelSink) {
        for r in self.runners.values_mut() {
            if !r.pending.is_empty() || r.retry_due(Instant::now()) {
                r.apply(&mut self.rng, sink);
            }
        }
    }

    /// Datagrams that matched no tunnel.
    #[must_use]
    pub fn unmatched(&self) -> u64 {
        self.unmatched
    }
}

/// A datagram read by a receiver thread.
#[derive(Debug)]
struct Received {
    local: SocketAddr,
    remote: SocketAddr,
    payload: Vec<u8>,
}

/// The two IKE sockets of one outside address and their receivers.
#[derive(Debug)]
struct LocalSockets {
    ike: UdpSocket,
    nat_t: UdpSocket,
    stop: Arc<AtomicBool>,
}

impl Drop for LocalSockets {
    fn drop(&mut self) {
        // The receivers notice within RECV_TIMEOUT and close their copies.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A UDP socket on `addr`, bound even when the address is not (yet) on
/// an interface (`IP_FREEBIND`): the kernel port's address may be set up
/// after vpnd starts.
fn bind_freebind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use rustix::net::{AddressFamily, SocketType, ipproto, sockopt};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket(family, SocketType::DGRAM, Some(ipproto::UDP))?;
    if addr.is_ipv4() {
        sockopt::set_ip_freebind(&fd, true)?;
    } else {
        sockopt::set_ipv6_v6only(&fd, true)?;
        sockopt::set_ipv6_freebind(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    Ok(UdpSocket::from(fd))
}

fn spawn_receiver(
    socket: &UdpSocket,
    local: SocketAddr,
    stop: &Arc<AtomicBool>,
    tx: &mpsc::Sender<Received>,
) -> std::io::Result<()> {
    let s = socket.try_clone()?;
    s.set_read_timeout(Some(RECV_TIMEOUT))?;
    let (stop, tx) = (stop.clone(), tx.clone());
    std::thread::Builder::new()
        .name(format!("ike-rx-{}", local.port()))
        .spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while !stop.load(Ordering::Relaxed) {
                match s.recv_from(&mut buf) {
                    Ok((n, remote)) => {
                        let r = Received {
                            local,
                            remote,
                            payload: buf[..n].to_vec(),
                        };
                        if tx.send(r).is_err() {
                            return;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => {
                        eprintln!("vpnd: ike: receive on {local}: {e}");
                        std::thread::sleep(RECV_TIMEOUT);
                    }
                }
            }
        })?;
    Ok(())
}

/// The IKE sockets (UDP 500 and 4500 on each outside address in use).
#[derive(Debug)]
pub struct IkeSockets {
    by_local: BTreeMap<IpAddr, LocalSockets>,
    failed: BTreeMap<IpAddr, Instant>,
    tx: mpsc::Sender<Received>,
    rx: mpsc::Receiver<Received>,
    send_errors: u64,
}

impl Default for IkeSockets {
    fn default() -> Self {
        Self::new()
    }
}

impl IkeSockets {
    /// No sockets yet.
    #[must_use]
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Self {
            by_local: BTreeMap::new(),
            failed: BTreeMap::new(),
            tx,
            rx,
            send_errors: 0,
        }
    }

    /// Bind the sockets of `locals` not bound yet (a failed bind is
    /// retried after [`BIND_RETRY`]); close those of other addresses.
    pub fn ensure(&mut self, locals: &BTreeSet<IpAddr>, now: Instant) {
        self.by_local.retain(|a, _| locals.contains(a));
        self.failed.retain(|a, _| locals.contains(a));
        for &a in locals {
            if self.by_local.contains_key(&a)
                || self.failed.get(&a).is_some_and(|t| now < *t + BIND_RETRY)
            {
                continue;
            }
            match self.bind(a) {
                Ok(s) => {
                    eprintln!("vpnd: ike: listening on {a} ports {IKE_PORT} and {NAT_T_PORT}");
                    self.failed.remove(&a);
                    self.by_local.insert(a, s);
                }
                Err(e) => {
                    eprintln!("vpnd: ike: cannot bind {a} ports {IKE_PORT}/{NAT_T_PORT}: {e}");
                    self.failed.insert(a, now);
                }
            }
        }
    }

    fn bind(&self, a: IpAddr) -> std::io::Result<LocalSockets> {
        let ike = bind_freebind(SocketAddr::new(a, IKE_PORT))?;
        let nat_t = bind_freebind(SocketAddr::new(a, NAT_T_PORT))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = LocalSockets { ike, nat_t, stop };
        spawn_receiver(&s.ike, SocketAddr::new(a, IKE_PORT), &s.stop, &self.tx)?;
        spawn_receiver(&s.nat_t, SocketAddr::new(a, NAT_T_PORT), &s.stop, &self.tx)?;
        Ok(s)
    }

    /// Send one datagram from the socket its source names.
    pub fn send(&mut self, t: &Transmit) {
        let Some(s) = self.by_local.get(&t.local.ip()) else {
            self.send_errors += 1;
            return;
        };
        let sock = if t.local.port() == NAT_T_PORT {
            &s.nat_t
        } else {
            &s.ike
        };
        if let Err(e) = sock.send_to(&t.payload, t.remote) {
            self.send_errors += 1;
            eprintln!("vpnd: ike: send {} -> {}: {e}", t.local, t.remote);
        }
    }

    /// Wait up to `timeout` for a datagram and hand it, and every other one
    /// already queued, to `set`.
    pub fn receive(&self, timeout: Duration, set: &mut TunnelSet) {
        let Ok(first) = self.rx.recv_timeout(timeout) else {
            return;
        };
        for r in std::iter::once(first).chain(self.rx.try_iter()) {
            set.handle_datagram(
                Instant::now(),
                Datagram {
                    local: r.local,
                    remote: r.remote,
                    payload: &r.payload,
                },
            );
        }
    }
}

/// The IKE thread's loop: never returns. `with_manager` runs a closure
/// with the manager locked.
pub fn run<F>(mut with_manager: F)
where
    F: FnMut(&mut dyn FnMut(&mut dyn ManagerAccess)),
{
    let mut set = TunnelSet::new();
    let mut sockets = IkeSockets::new();
    let mut next_reconcile = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_reconcile {
            next_reconcile = now + RECONCILE_PERIOD;
            with_manager(&mut |m: &mut dyn ManagerAccess| {
                let (specs, skipped) = tunnel_specs(m.config());
                set.reconcile(now, specs, skipped, m.sink());
            });
            sockets.ensure(&set.local_addresses(), now);
        }
        set.handle_timeout(Instant::now());
        while let Some(t) = set.poll_transmit() {
            sockets.send(&t);
        }
        if set.collect_events() {
            with_manager(&mut |m: &mut dyn ManagerAccess| set.apply(m.sink()));
            // Applying can queue nothing, but a close may have.
            while let Some(t) = set.poll_transmit() {
                sockets.send(&t);
            }
        }
        let now = Instant::now();
        let wake = set
            .poll_timeout()
            .unwrap_or(now + MAX_WAIT)
            .min(now + MAX_WAIT)
            .min(next_reconcile);
        sockets.receive(wake.saturating_duration_since(now), &mut set);
    }
}

/// What [`run`] needs from the locked manager.
pub trait ManagerAccess {
    /// The current configuration.
    fn config(&self) -> &ApplianceConfig;
    /// The manager as a [`TunnelSink`].
    fn sink(&mut self) -> &mut dyn TunnelSink;
}

impl<D: Dataplane> ManagerAccess for Manager<D> {
    fn config(&self) -> &ApplianceConfig {
        Self::config(self)
    }
    fn sink(&mut self) -> &mut dyn TunnelSink {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::config::{PreSharedKey, StartupAction};

    /// Records what IKE asks of the dataplane.
    #[derive(Default)]
    struct Sink {
        installed: BTreeMap<TunnelKey, (u32, u32)>,
        states: BTreeMap<TunnelKey, TunnelRuntimeState>,
        logs: Vec<String>,
    }

    impl TunnelSink for Sink {
        fn install_child_sa(
            &mut self,
            key: &TunnelKey,
            pair: &ChildSaPair,
        ) -> Result<(), DataplaneError> {
            self.installed
                .insert(key.clone(), (pair.inbound.spi, pair.outbound.spi));
            Ok(())
        }
        fn remove_child_sa(&mut self, key: &TunnelKey) -> Result<(), DataplaneError> {
            self.installed.remove(key);
            Ok(())
        }
        fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState {
            self.states.get(key).cloned().unwrap_or_default()
        }
        fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState) {
            self.states.insert(key, state);
        }
        fn record_log(&mut self, entry: LogEntry) {
            self.logs.push(entry.render_text());
        }
    }

    fn spec(local: &str, remote: &str, start: bool) -> TunnelSpec {
        let any: IpNet = "0.0.0.0/0".parse().unwrap();
        TunnelSpec {
            key: TunnelKey {
                connection_id: "vpn-t".to_owned(),
                tunnel: 0,
            },
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            routing: RoutingType::Static,
            local_ts: vec![any],
            remote_ts: vec![any],
            options: TunnelOptions {
                pre_shared_key: Some(PreSharedKey::new("vtx.unit_0123456789".to_owned()).unwrap()),
                startup_action: if start {
                    StartupAction::Start
                } else {
                    StartupAction::Add
                },
                ..TunnelOptions::default()
            },
        }
    }

    /// Moves every datagram of `from` to `to`, as the network would.
    fn deliver(now: Instant, from: &mut TunnelSet, to: &mut TunnelSet) {
        while let Some(t) = from.poll_transmit() {
            to.handle_datagram(
                now,
                Datagram {
                    local: t.remote,
                    remote: t.local,
                    payload: &t.payload,
                },
            );
        }
    }

    /// Two appliances, one `start`, one `add`: both install the pair
    /// (mirrored SPIs) and report the tunnel UP; closing it (a changed
    /// configuration) removes the pair on both sides.
    #[test]
    fn a_start_tunnel_and_an_add_tunnel_come_up_and_install_mirrored_sas() {
        let (mut a, mut b) = (TunnelSet::new(), TunnelSet::new());
        let (mut sa, mut sb) = (Sink::default(), Sink::default());
        let mut now = Instant::now();
        a.reconcile(
            now,
            vec![spec("192.0.2.1", "192.0.2.2", true)],
            vec![],
            &mut sa,
        );
        b.reconcile(
            now,
            vec![spec("192.0.2.2", "192.0.2.1", false)],
            vec![],
            &mut sb,
        );
        for _ in 0..500 {
            now += Duration::from_millis(10);
            a.handle_timeout(now);
            b.handle_timeout(now);
            deliver(now, &mut a, &mut b);
            deliver(now, &mut b, &mut a);
            for (set, sink) in [(&mut a, &mut sa), (&mut b, &mut sb)] {
                if set.collect_events() {
                    set.apply(sink);
                }
            }
            if sa.installed.len() == 1 && sb.installed.len() == 1 {
                break;
            }
        }
        let key = spec("192.0.2.1", "192.0.2.2", true).key;
        let (ai, ao) = sa.installed[&key];
        let (bi, bo) = sb.installed[&key];
        assert_eq!((ai, ao), (bo, bi), "mirrored SPIs");
        for s in [&sa, &sb] {
            assert_eq!(
                s.states[&key].up_down(RoutingType::Static),
                TunnelUpDown::Up,
                "{:?}",
                s.logs
            );
        }
        assert!(
            sa.logs
                .iter()
                .any(|l| l.contains("tunnel status changed to UP"))
        );

        // The tunnel is removed from A's configuration: DELETE, pair gone.
        a.reconcile(now, vec![], vec![], &mut sa);
        assert!(sa.installed.is_empty());
        assert_eq!(
            sa.states[&key].up_down(RoutingType::Static),
            TunnelUpDown::Down
        );
        deliver(now, &mut a, &mut b);
        assert!(b.collect_events());
        b.apply(&mut sb);
        assert!(sb.installed.is_empty(), "{:?}", sb.logs);
        assert_eq!(
            sb.states[&key].up_down(RoutingType::Static),
            TunnelUpDown::Down
        );
    }
}
