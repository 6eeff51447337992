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
//!                                         ──► kernel_port::KernelPort::reconcile
//!                                             (the tap's addresses; unlocked)
//!                           poll_transmit ──► send_to (out of the kernel
//!                                             port; the worker routes it out)
//!                           events? lock Manager ──► TunnelSet::apply:
//!                             ChildSaUp   ─► install_child_sa (make before break),
//!                                            or add_child_inbound when we answered
//!                                            the peer's rekey (RFC 7296 § 2.8)
//!                             ChildSaOutbound ─► install_child_sa (the peer deleted
//!                                            the rekeyed SA: send with the new one)
//!                             ChildSaDown ─► remove_child_sa (the installed pair),
//!                                            remove_child_inbound (any other SA)
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
//! # Under an IKE_SA_INIT flood (RFC 7296 § 2.6)
//!
//! The half-open budget is the appliance's, not a tunnel's: the control
//! core's DH work is what a flood exhausts. [`TunnelSet`] counts the
//! half-open responder SAs of all tunnels; from
//! [`DEFAULT_HALF_OPEN_THRESHOLD`] on, every tunnel answers a new
//! IKE_SA_INIT with a stateless COOKIE (no DH, no state) until the count
//! falls again (SAs complete or time out). IKE_SA_INIT from an address
//! that is no configured customer gateway is dropped unanswered and
//! counted ([`IkeCounters::init_unknown_peer`]; why: see
//! [`control::ike::endpoint`]). The receivers hand datagrams to the IKE
//! thread through a bounded queue: when the IKE thread falls behind, the
//! excess is dropped and counted ([`IkeCounters::rx_queue_full`]) rather
//! than buffered without limit. Transitions into and out of cookie mode
//! and the counters are logged (`vpnd: ike: …`), and each tunnel whose
//! endpoint sent cookies says so in its activity log (at most every
//! [`COOKIE_LOG_PERIOD`]).
//!
//! What it never does: touch the dataplane except through
//! [`TunnelSink`] (the manager's [`Dataplane`]), or hold the manager's
//! lock while waiting for the network.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control::config::{
    ApplianceConfig, CertConfigError, CertificatesConfig, IkeVersion, RoutingType,
    TunnelInsideIpVersion, TunnelOptions,
};
use control::dataplane::{
    ChildSaPair, Dataplane, DataplaneError, SaLifetimeEvent, TunnelKey, TunnelRuntimeState,
    TunnelUpDown,
};
use control::ike::cert::WallClock;
use control::ike::endpoint::{DEFAULT_HALF_OPEN_THRESHOLD, Endpoint};
use control::ike::sa::{
    ChildSa, Datagram, Event, IKE_PORT, IkeConfig, NAT_T_PORT, PhaseState, SEQ_REKEY_PACKETS,
    Transmit,
};
use control::ike::{Rng, SystemRng};
use control::logs::{ActivityContext, IkePhaseState, LogEntry, TunnelActivityLog, resource_id};
use control::manager::Manager;
use control::metrics::ControlMetric;
use dataplane::esp::SaConfig;
use dataplane::esp::sa::{Direction, LifetimeLimits};
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
/// Test mode: an integer > 1 in this environment variable divides every
/// tunnel's IKE and Child SA lifetimes and rekey margin (the spec's
/// minimum Child SA lifetime is 900 s; rekey tests need seconds). vpnd
/// logs it at start; never set it in production.
pub const LIFETIME_DIVISOR_ENV: &str = "VPND_IKE_LIFETIME_DIVISOR";
/// Test mode: a packet count in this environment variable becomes the
/// soft packet lifetime of every installed Child SA (rekey tests need
/// small numbers; production uses [`SEQ_REKEY_PACKETS`] for SAs without
/// ESN and no packet limit otherwise). Logged at start.
pub const REKEY_PACKETS_ENV: &str = "VPND_IKE_REKEY_PACKETS";

/// The soft lifetime limits of an installed Child SA: without ESN, rekey
/// before the 32-bit sequence number cycles; `test_packets` (test mode)
/// lowers the packet limit.
#[must_use]
pub fn soft_limits(esn: bool, test_packets: Option<u64>) -> LifetimeLimits {
    let seq = (!esn).then_some(SEQ_REKEY_PACKETS);
    let packets = match (seq, test_packets) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    LifetimeLimits {
        packets,
        ..LifetimeLimits::default()
    }
}

/// The counters are logged (when they moved) at most this often.
const COUNTERS_LOG_PERIOD: Duration = Duration::from_secs(2);
/// A failed bind is retried after this long.
const BIND_RETRY: Duration = Duration::from_secs(5);
/// Datagrams queued from the receivers to the IKE thread; more are
/// dropped (counted) while the IKE thread is behind.
pub const RX_QUEUE: usize = 4096;
/// A tunnel's activity log mentions cookies at most this often.
pub const COOKIE_LOG_PERIOD: Duration = Duration::from_secs(5);

/// The IKE service's counters (`vpnd: ike: counters …` in the log, and
/// `vpn_ike_*` in the metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IkeCounters {
    /// Datagrams that matched no running tunnel (by local and peer
    /// address).
    pub unmatched: u64,
    /// Of those, IKE_SA_INIT requests (from no configured peer): dropped
    /// unanswered.
    pub init_unknown_peer: u64,
    /// COOKIE notifications sent, all tunnels.
    pub cookies_sent: u64,
    /// IKE_SA_INIT requests taken with a valid cookie, all tunnels.
    pub cookies_accepted: u64,
    /// IKE_SA_INIT requests refused (no proposal, wrong group, malformed).
    pub init_refused: u64,
    /// Datagrams dropped because the receive queue was full.
    pub rx_queue_full: u64,
    /// Half-open responder IKE SAs now, all tunnels.
    pub half_open: u64,
}

impl IkeCounters {
    /// As Prometheus metrics.
    #[must_use]
    pub fn metrics(&self) -> Vec<ControlMetric> {
        let m = |name, help, gauge, value| ControlMetric {
            name,
            help,
            gauge,
            value,
        };
        vec![
            m(
                "vpn_ike_cookies_sent_total",
                "IKE_SA_INIT requests answered with a COOKIE (RFC 7296 2.6).",
                false,
                self.cookies_sent,
            ),
            m(
                "vpn_ike_cookies_accepted_total",
                "IKE_SA_INIT requests taken with a valid COOKIE while cookies were required.",
                false,
                self.cookies_accepted,
            ),
            m(
                "vpn_ike_init_unknown_peer_total",
                "IKE_SA_INIT requests from addresses that are no configured customer gateway, dropped.",
                false,
                self.init_unknown_peer,
            ),
            m(
                "vpn_ike_init_refused_total",
                "IKE_SA_INIT requests refused (no proposal, wrong group, malformed).",
                false,
                self.init_refused,
            ),
            m(
                "vpn_ike_unmatched_datagrams_total",
                "IKE datagrams that matched no running tunnel.",
                false,
                self.unmatched,
            ),
            m(
                "vpn_ike_rx_queue_full_total",
                "IKE datagrams dropped because the IKE thread was behind.",
                false,
                self.rx_queue_full,
            ),
            m(
                "vpn_ike_half_open_sas",
                "Half-open responder IKE SAs, all tunnels.",
                true,
                self.half_open,
            ),
        ]
    }
}

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
    /// Add only the inbound SA of the tunnel's next Child SA
    /// ([`Dataplane::add_child_inbound`]).
    ///
    /// # Errors
    /// The dataplane's.
    fn add_child_inbound(&mut self, key: &TunnelKey, sa: &SaConfig) -> Result<(), DataplaneError>;
    /// Remove an inbound SA that is not the installed pair's
    /// ([`Dataplane::remove_child_inbound`]).
    ///
    /// # Errors
    /// The dataplane's.
    fn remove_child_inbound(&mut self, key: &TunnelKey, spi: u32) -> Result<(), DataplaneError>;
    /// The tunnel's state as last recorded.
    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState;
    /// Record a tunnel's state.
    fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState);
    /// Record a tunnel log entry.
    fn record_log(&mut self, entry: LogEntry);
    /// SA lifetime events from the dataplane since the last call (soft
    /// byte/packet limits ask for a rekey).
    fn poll_sa_events(&mut self) -> Vec<SaLifetimeEvent> {
        Vec::new()
    }
    /// Publish the IKE service's counters (metrics).
    fn publish_ike_counters(&mut self, _counters: &IkeCounters) {}
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
    fn add_child_inbound(&mut self, key: &TunnelKey, sa: &SaConfig) -> Result<(), DataplaneError> {
        self.dataplane_mut().add_child_inbound(key, sa)
    }
    fn remove_child_inbound(&mut self, key: &TunnelKey, spi: u32) -> Result<(), DataplaneError> {
        self.dataplane_mut().remove_child_inbound(key, spi)
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
    fn poll_sa_events(&mut self) -> Vec<SaLifetimeEvent> {
        self.dataplane_mut().poll_sa_events()
    }
    fn publish_ike_counters(&mut self, c: &IkeCounters) {
        self.set_control_metrics(c.metrics());
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
    /// Certificate authentication: the customer gateway's private
    /// certificate name and the `[certificates]` section (None: PSK).
    pub certificate: Option<(String, CertificatesConfig)>,
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

    /// The engine's configuration with certificate authentication loaded
    /// from its files (validity checked against the system clock read
    /// now, then advanced by the engine's monotonic time).
    ///
    /// # Errors
    /// [`CertConfigError`] naming the file that does not load.
    pub fn ike_config_loaded(&self, now: Instant) -> Result<IkeConfig, CertConfigError> {
        let mut cfg = self.ike_config();
        if let Some((name, certs)) = &self.certificate {
            let unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            cfg.cert = Some(certs.cert_auth(name, WallClock::new(now, unix))?);
        }
        Ok(cfg)
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
        let cgw = config
            .customer_gateways
            .iter()
            .find(|g| g.id == c.customer_gateway_id);
        let remote = cgw.and_then(|g| g.ip_address);
        let certificate = cgw
            .and_then(|g| g.certificate.clone())
            .map(|name| (name, config.certificates.clone()));
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
            if t.pre_shared_key.is_none() && certificate.is_none() {
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
                certificate: certificate.clone(),
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
    /// The next Child SA, only its inbound SA installed: we answered the
    /// peer's rekey; its outbound SA follows on
    /// [`Event::ChildSaOutbound`].
    deferred: Option<Box<ChildSa>>,
    nat_t: bool,
    /// Events taken from the endpoint, not yet applied.
    pending: Vec<Event>,
    /// A Child SA the dataplane refused (e.g. a stalled worker did not
    /// acknowledge in time), tried again at the instant given.
    retry: Option<(Instant, Box<ChildSa>)>,
    /// What was last recorded.
    reported: Option<(IkePhaseState, IkePhaseState, bool)>,
    /// Cookies sent as of the last activity-log line about them, and when.
    cookies_logged: (u64, Option<Instant>),
    /// Test mode: soft packet limit of installed Child SAs.
    rekey_packets: Option<u64>,
}

impl Runner {
    fn new(spec: TunnelSpec, now: Instant, rng: &mut dyn Rng, lifetime_divisor: u32) -> Self {
        let mut endpoint = Endpoint::new(rng, DEFAULT_HALF_OPEN_THRESHOLD);
        let mut pending = Vec::new();
        // Certificate files are read here, once per (re)configured tunnel,
        // not on every reconciliation (which holds the manager's lock).
        let mut cfg = spec.ike_config_loaded(now).unwrap_or_else(|e| {
            // No credentials at all: the peer's AUTH fails and the tunnel
            // log says why.
            pending.push(Event::Log(format!(
                "AWS tunnel cannot load its certificate authentication: {e}"
            )));
            let mut c = spec.ike_config();
            c.psk = zeroize::Zeroizing::new(Vec::new());
            c
        });
        if lifetime_divisor > 1 {
            cfg.phase1_lifetime /= lifetime_divisor;
            cfg.phase2_lifetime /= lifetime_divisor;
            cfg.rekey_margin /= lifetime_divisor;
        }
        endpoint.add_tunnel(cfg);
        endpoint.start(now, rng);
        Self {
            spec,
            endpoint,
            installed: None,
            deferred: None,
            nat_t: false,
            pending,
            retry: None,
            reported: None,
            cookies_logged: (0, None),
            rekey_packets: None,
        }
    }

    /// An activity-log line when this tunnel's endpoint sent cookies since
    /// the last one (at most every [`COOKIE_LOG_PERIOD`]).
    fn cookies_to_log(&self, now: Instant) -> bool {
        let (n, at) = self.cookies_logged;
        self.endpoint.counters().cookies_sent > n && at.is_none_or(|t| now >= t + COOKIE_LOG_PERIOD)
    }

    fn log_cookies(&mut self, now: Instant, sink: &mut dyn TunnelSink) {
        let c = self.endpoint.counters();
        let fresh = c.cookies_sent - self.cookies_logged.0;
        self.cookies_logged = (c.cookies_sent, Some(now));
        self.log(
            sink,
            format!(
                "IKE_SA_INIT under load: COOKIE sent to {fresh} request(s) from {} ({} in all, {} returned with a valid cookie)",
                self.spec.remote, c.cookies_sent, c.cookies_accepted
            ),
        );
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
        if self.cookies_to_log(Instant::now()) {
            self.log_cookies(Instant::now(), sink);
        }
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
                Event::ChildSaUp(c) => self.install(c, rng, sink),
                Event::ChildSaOutbound { inbound_spi, .. } => {
                    if let Some(mut c) = self.deferred.take_if(|c| c.inbound.spi == inbound_spi) {
                        c.outbound_deferred = false;
                        self.install(c, rng, sink);
                    }
                }
                // The installed pair goes: the tunnel has no SA left.
                Event::ChildSaDown { inbound_spi, .. }
                    if self.installed.is_some_and(|(i, _)| i == inbound_spi) =>
                {
                    if let Err(e) = sink.remove_child_sa(&key) {
                        self.log(sink, format!("removing CHILD_SA {inbound_spi:08x}: {e}"));
                    }
                    self.installed = None;
                    self.deferred = None;
                    self.log(sink, format!("CHILD_SA {inbound_spi:08x} removed"));
                }
                // A rekeyed SA whose DELETE is done, or a next SA that
                // never got to send: only its inbound SA is installed.
                Event::ChildSaDown { inbound_spi, .. } => {
                    if self
                        .deferred
                        .as_ref()
                        .is_some_and(|c| c.inbound.spi == inbound_spi)
                    {
                        self.deferred = None;
                    }
                    if let Err(e) = sink.remove_child_inbound(&key, inbound_spi) {
                        self.log(sink, format!("removing inbound SA {inbound_spi:08x}: {e}"));
                    }
                }
                Event::IkeSaDown { reason } => {
                    self.log(sink, format!("IKE_SA down: {reason:?}"));
                }
                Event::IkeSaRekeyed { spi_i, spi_r } => {
                    self.log(
                        sink,
                        format!("IKE_SA rekeyed: new SPIs {spi_i:016x}_i {spi_r:016x}_r"),
                    );
                }
                Event::Log(line) => self.log(sink, line),
                // IKE SA rekeys change nothing in the dataplane.
                _ => {}
            }
        }
        self.report(sink);
    }

    /// Put a Child SA into the dataplane: both directions, or only the
    /// inbound SA when its outbound SA is deferred. A refusal is retried
    /// after [`INSTALL_RETRY`] (both directions then).
    fn install(&mut self, mut c: Box<ChildSa>, rng: &mut dyn Rng, sink: &mut dyn TunnelSink) {
        let key = self.spec.key.clone();
        let mut seeds = [[0u8; 16]; 2];
        rng.fill(&mut seeds[0]);
        rng.fill(&mut seeds[1]);
        let pair = c
            .sa_config(Direction::Inbound, seeds[0])
            .zip(c.sa_config(Direction::Outbound, seeds[1]));
        let Some((mut inbound, mut outbound)) = pair else {
            self.log(
                sink,
                format!(
                    "CHILD_SA {:08x}/{:08x} cannot be expressed for the dataplane",
                    c.inbound.spi, c.outbound.spi
                ),
            );
            return;
        };
        // Soft limits: the dataplane reports them and the Child SA is
        // rekeyed (handle_sa_events).
        let soft = soft_limits(c.suite.esn, self.rekey_packets);
        inbound.lifetimes.soft = soft;
        outbound.lifetimes.soft = soft;
        self.nat_t |= c.nat_t;
        let (spi_i, spi_o) = (c.inbound.spi, c.outbound.spi);
        let done = if c.outbound_deferred {
            sink.add_child_inbound(&key, &inbound).map(|()| {
                format!(
                    "CHILD_SA established: inbound SA {spi_i:08x} installed, outbound SA \
                     {spi_o:08x} used once the peer deletes the rekeyed SA"
                )
            })
        } else {
            sink.install_child_sa(&key, &ChildSaPair { inbound, outbound })
                .map(|()| {
                    format!("CHILD_SA established and installed: SPIs {spi_i:08x}_i {spi_o:08x}_o")
                })
        };
        match done {
            Ok(line) => {
                if c.outbound_deferred {
                    self.deferred = Some(c);
                } else {
                    self.installed = Some((spi_i, spi_o));
                }
                self.log(sink, line);
            }
            Err(e) => {
                self.log(
                    sink,
                    format!(
                        "CHILD_SA {spi_i:08x}/{spi_o:08x} cannot be installed (retrying in {} s): {e}",
                        INSTALL_RETRY.as_secs()
                    ),
                );
                c.outbound_deferred = false;
                self.retry = Some((Instant::now() + INSTALL_RETRY, c));
            }
        }
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
#[derive(Debug)]
pub struct TunnelSet {
    rng: SystemRng,
    runners: BTreeMap<TunnelKey, Runner>,
    transmits: VecDeque<Transmit>,
    skipped: Vec<String>,
    counters: IkeCounters,
    /// Half-open responder SAs of all tunnels (kept up to date per
    /// datagram, recounted on every timer run).
    half_open: usize,
    /// Cookies are required by every tunnel (the half-open count reached
    /// the threshold).
    under_load: bool,
    half_open_threshold: usize,
    /// Test mode: lifetimes and rekey margin divided by this (see
    /// [`LIFETIME_DIVISOR_ENV`]).
    lifetime_divisor: u32,
    /// Test mode: soft packet lifetime of the Child SAs (see
    /// [`REKEY_PACKETS_ENV`]).
    rekey_packets: Option<u64>,
}

impl Default for TunnelSet {
    fn default() -> Self {
        Self {
            rng: SystemRng,
            runners: BTreeMap::new(),
            transmits: VecDeque::new(),
            skipped: Vec::new(),
            counters: IkeCounters::default(),
            half_open: 0,
            under_load: false,
            half_open_threshold: DEFAULT_HALF_OPEN_THRESHOLD,
            lifetime_divisor: 1,
            rekey_packets: None,
        }
    }
}

impl TunnelSet {
    /// No tunnels.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// No tunnels; cookies from `threshold` half-open SAs on (all
    /// tunnels together).
    #[must_use]
    pub fn with_half_open_threshold(threshold: usize) -> Self {
        Self {
            half_open_threshold: threshold,
            ..Self::default()
        }
    }

    /// Test mode: installed Child SAs get a soft lifetime of `packets`
    /// packets (see [`REKEY_PACKETS_ENV`]); tunnels started from now on.
    pub fn set_rekey_packets(&mut self, packets: u64) {
        self.rekey_packets = Some(packets);
    }

    /// Soft byte/packet lifetime events from the dataplane: the Child SA
    /// is rekeyed now rather than on its timer (hard ones too: the
    /// dataplane already drops its traffic, a new SA is the way out).
    pub fn handle_sa_events(
        &mut self,
        now: Instant,
        events: Vec<SaLifetimeEvent>,
        sink: &mut dyn TunnelSink,
    ) {
        for ev in events {
            let Some(r) = ev.tunnel.as_ref().and_then(|k| self.runners.get_mut(k)) else {
                continue;
            };
            let known = r.endpoint.expedite_child_rekey(now, ev.spi);
            let what = format!(
                "CHILD_SA SPI {:08x} ({:?}) reached its {:?} byte/packet lifetime in the dataplane",
                ev.spi, ev.direction, ev.event
            );
            let line = if known {
                format!("{what}: rekeying it now")
            } else {
                format!("{what}: no longer in use, nothing to do")
            };
            r.log(sink, line);
        }
    }

    /// Test mode: divide every tunnel's IKE and Child SA lifetimes and its
    /// rekey margin by `divisor` (tunnels started from now on).
    pub fn set_lifetime_divisor(&mut self, divisor: u32) {
        self.lifetime_divisor = divisor.max(1);
    }

    /// Recount the half-open SAs and switch cookie mode on or off.
    fn update_load(&mut self, half_open: usize) {
        self.half_open = half_open;
        let busy = half_open >= self.half_open_threshold;
        if busy != self.under_load {
            self.under_load = busy;
            if busy {
                eprintln!(
                    "vpnd: ike: {half_open} half-open IKE_SAs (threshold {}): IKE_SA_INIT must carry a COOKIE",
                    self.half_open_threshold
                );
            } else {
                eprintln!(
                    "vpnd: ike: {half_open} half-open IKE_SAs: cookies no longer required; {:?}",
                    self.counters()
                );
            }
            for r in self.runners.values_mut() {
                r.endpoint.set_cookies_required(busy);
            }
        }
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
            let mut r = Runner::new(spec, now, &mut self.rng, self.lifetime_divisor);
            r.rekey_packets = self.rekey_packets;
            r.endpoint.set_cookies_required(self.under_load);
            while let Some((_, e)) = r.endpoint.poll_event() {
                r.pending.push(e);
            }
            r.apply(&mut self.rng, sink);
            self.runners.insert(k, r);
        }
    }

    /// Close every tunnel (DELETE to its peer, SAs out of the dataplane),
    /// as on shutdown.
    pub fn close_all(&mut self, now: Instant, sink: &mut dyn TunnelSink) {
        for (_, mut r) in std::mem::take(&mut self.runners) {
            r.close(now, &mut self.rng, sink);
            self.transmits
                .extend(std::iter::from_fn(|| r.endpoint.poll_transmit()));
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
            Some(r) => {
                let before = r.endpoint.half_open();
                r.endpoint.handle_datagram(now, &mut self.rng, d);
                let after = r.endpoint.half_open();
                let total = (self.half_open + after).saturating_sub(before);
                self.update_load(total);
            }
            None => {
                self.counters.unmatched += 1;
                if is_sa_init_request(d) {
                    self.counters.init_unknown_peer += 1;
                }
            }
        }
    }

    /// Run the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut half_open = 0;
        for r in self.runners.values_mut() {
            if r.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                r.endpoint.handle_timeout(now, &mut self.rng);
            }
            half_open += r.endpoint.half_open();
        }
        self.update_load(half_open);
    }

    /// The counters, summed over the tunnels.
    #[must_use]
    pub fn counters(&self) -> IkeCounters {
        let mut c = self.counters;
        for r in self.runners.values() {
            let e = r.endpoint.counters();
            c.cookies_sent += e.cookies_sent;
            c.cookies_accepted += e.cookies_accepted;
            c.init_refused += e.init_refused;
            c.init_unknown_peer += e.init_unknown_peer;
        }
        c.half_open = u64::try_from(self.half_open).unwrap_or(u64::MAX);
        c
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
            let now = Instant::now();
            any |= !r.pending.is_empty() || r.retry_due(now) || r.cookies_to_log(now);
        }
        any
    }

    /// Apply the collected events: SAs into the dataplane, state, logs.
    pub fn apply(&mut self, sink: &mut dyn TunnelSink) {
        for r in self.runners.values_mut() {
            let now = Instant::now();
            if !r.pending.is_empty() || r.retry_due(now) || r.cookies_to_log(now) {
                r.apply(&mut self.rng, sink);
            }
        }
    }

    /// Datagrams that matched no tunnel.
    #[must_use]
    pub fn unmatched(&self) -> u64 {
        self.counters.unmatched
    }
}

/// An IKE_SA_INIT request (header only: exchange 34, not a response)?
fn is_sa_init_request(d: Datagram<'_>) -> bool {
    use control::ike::wire::{ExchangeType, Header, Reader};
    let body = if d.local.port() == NAT_T_PORT {
        match d.payload {
            [0, 0, 0, 0, rest @ ..] => rest,
            _ => return false,
        }
    } else {
        d.payload
    };
    Header::parse(&mut Reader::new(body))
        .is_ok_and(|(h, _, _)| h.exchange == ExchangeType::IkeSaInit && !h.is_response())
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
    tx: &mpsc::SyncSender<Received>,
    full: &Arc<AtomicU64>,
) -> std::io::Result<()> {
    let s = socket.try_clone()?;
    s.set_read_timeout(Some(RECV_TIMEOUT))?;
    let (stop, tx, full) = (stop.clone(), tx.clone(), full.clone());
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
                        match tx.try_send(r) {
                            Ok(()) => {}
                            Err(mpsc::TrySendError::Full(_)) => {
                                full.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(mpsc::TrySendError::Disconnected(_)) => return,
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
    tx: mpsc::SyncSender<Received>,
    rx: mpsc::Receiver<Received>,
    send_errors: u64,
    /// Datagrams the receivers dropped because the queue was full.
    queue_full: Arc<AtomicU64>,
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
        let (tx, rx) = mpsc::sync_channel(RX_QUEUE);
        Self {
            by_local: BTreeMap::new(),
            failed: BTreeMap::new(),
            tx,
            rx,
            send_errors: 0,
            queue_full: Arc::new(AtomicU64::new(0)),
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
        let full = &self.queue_full;
        spawn_receiver(
            &s.ike,
            SocketAddr::new(a, IKE_PORT),
            &s.stop,
            &self.tx,
            full,
        )?;
        spawn_receiver(
            &s.nat_t,
            SocketAddr::new(a, NAT_T_PORT),
            &s.stop,
            &self.tx,
            full,
        )?;
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

    /// Datagrams dropped because the receive queue was full.
    #[must_use]
    pub fn queue_full(&self) -> u64 {
        self.queue_full.load(Ordering::Relaxed)
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

/// Asks the IKE thread to close every tunnel (an INFORMATIONAL DELETE
/// of each IKE SA to its peer, RFC 7296 § 1.4.1) and to stop; the daemon
/// does this on SIGTERM before it stops the dataplane, which must still
/// forward the DELETEs.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<(std::sync::Mutex<ShutdownState>, std::sync::Condvar)>);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ShutdownState {
    #[default]
    Running,
    Requested,
    Done,
}

/// After the DELETEs are handed to the kernel: time for the worker to take
/// them from the kernel port and send them out.
const DELETE_FLUSH: Duration = Duration::from_millis(300);

impl Shutdown {
    fn state(&self) -> ShutdownState {
        *self
            .0
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, s: ShutdownState) {
        *self
            .0
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = s;
        self.0.1.notify_all();
    }

    /// Request the shutdown and wait up to `limit` for the DELETEs to be
    /// sent. `false` if the IKE thread did not finish in time.
    #[must_use]
    pub fn request_and_wait(&self, limit: Duration) -> bool {
        self.set(ShutdownState::Requested);
        let guard = self
            .0
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (guard, _) = self
            .0
            .1
            .wait_timeout_while(guard, limit, |s| *s != ShutdownState::Done)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard == ShutdownState::Done
    }
}

/// The IKE thread's loop, until [`Shutdown::request_and_wait`]:
/// `with_manager` runs a closure with the manager locked.
pub fn run<F>(mut with_manager: F, shutdown: &Shutdown)
where
    F: FnMut(&mut dyn FnMut(&mut dyn ManagerAccess)),
{
    let mut set = TunnelSet::new();
    if let Some(d) = std::env::var(LIFETIME_DIVISOR_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|d| *d > 1)
    {
        eprintln!(
            "vpnd: ike: TEST MODE: lifetimes and rekey margins divided by {d} ({LIFETIME_DIVISOR_ENV})"
        );
        set.set_lifetime_divisor(d);
    }
    if let Some(n) = std::env::var(REKEY_PACKETS_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| *n > 0)
    {
        eprintln!(
            "vpnd: ike: TEST MODE: Child SAs rekeyed every {n} packets ({REKEY_PACKETS_ENV})"
        );
        set.set_rekey_packets(n);
    }
    let mut sockets = IkeSockets::new();
    let mut next_reconcile = Instant::now();
    let mut kernel: Option<crate::kernel_port::KernelPort> = None;
    let mut logged = IkeCounters::default();
    let mut next_counters_log = Instant::now();
    loop {
        let now = Instant::now();
        if shutdown.state() == ShutdownState::Requested {
            let n = set.runners.len();
            with_manager(&mut |m: &mut dyn ManagerAccess| set.close_all(now, m.sink()));
            let mut sent = 0;
            while let Some(t) = set.poll_transmit() {
                sockets.send(&t);
                sent += 1;
            }
            eprintln!("vpnd: ike: shutting down: {n} tunnel(s) closed, {sent} DELETE(s) sent");
            std::thread::sleep(DELETE_FLUSH);
            shutdown.set(ShutdownState::Done);
            return;
        }
        if now >= next_counters_log {
            next_counters_log = now + COUNTERS_LOG_PERIOD;
            set.counters.rx_queue_full = sockets.queue_full();
            let c = set.counters();
            // Only what a flood or a misconfiguration moves.
            let moved = |c: &IkeCounters| {
                (
                    c.init_unknown_peer,
                    c.cookies_sent,
                    c.init_refused,
                    c.rx_queue_full,
                )
            };
            if moved(&c) != moved(&logged) {
                eprintln!("vpnd: ike: counters {c:?}");
                logged = c;
            }
            with_manager(&mut |m: &mut dyn ManagerAccess| m.sink().publish_ike_counters(&c));
        }
        if now >= next_reconcile {
            next_reconcile = now + RECONCILE_PERIOD;
            let mut tap = None;
            with_manager(&mut |m: &mut dyn ManagerAccess| {
                let (specs, skipped) = tunnel_specs(m.config());
                set.reconcile(now, specs, skipped, m.sink());
                let events = m.sink().poll_sa_events();
                set.handle_sa_events(now, events, m.sink());
                tap = crate::kernel_port::kernel_iface(m.config())
                    .map(|i| (i, crate::kernel_port::desired(m.config())));
            });
            // The tap's addresses, routes and neighbours (outside the lock:
            // this runs `ip` when something changed).
            if let Some((iface, want)) = tap {
                if kernel.as_ref().is_none_or(|k| k.iface() != iface) {
                    kernel = Some(crate::kernel_port::KernelPort::new(&iface));
                }
                if let Some(k) = kernel.as_mut() {
                    k.reconcile(&want, now);
                }
            }
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
        /// Inbound SAs besides the installed pairs'.
        extra_inbound: Vec<(TunnelKey, u32)>,
        states: BTreeMap<TunnelKey, TunnelRuntimeState>,
        logs: Vec<String>,
    }

    impl TunnelSink for Sink {
        fn install_child_sa(
            &mut self,
            key: &TunnelKey,
            pair: &ChildSaPair,
        ) -> Result<(), DataplaneError> {
            // As the dataplane: the previous pair's inbound SA stays.
            self.extra_inbound
                .retain(|(k, s)| (k, *s) != (key, pair.inbound.spi));
            if let Some((old, _)) = self
                .installed
                .insert(key.clone(), (pair.inbound.spi, pair.outbound.spi))
                && old != pair.inbound.spi
            {
                self.extra_inbound.push((key.clone(), old));
            }
            Ok(())
        }
        fn remove_child_sa(&mut self, key: &TunnelKey) -> Result<(), DataplaneError> {
            self.installed.remove(key);
            self.extra_inbound.retain(|(k, _)| k != key);
            Ok(())
        }
        fn add_child_inbound(
            &mut self,
            key: &TunnelKey,
            sa: &SaConfig,
        ) -> Result<(), DataplaneError> {
            self.extra_inbound.push((key.clone(), sa.spi));
            Ok(())
        }
        fn remove_child_inbound(
            &mut self,
            key: &TunnelKey,
            spi: u32,
        ) -> Result<(), DataplaneError> {
            self.extra_inbound.retain(|(k, s)| (k, *s) != (key, spi));
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
            certificate: None,
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

    /// IKE_SA_INIT requests as a flood would send them: well-formed, a
    /// fresh SPI each, for the tunnel `spec` describes (seen from the peer).
    fn flood(spec: &TunnelSpec, n: usize) -> Vec<Transmit> {
        let mut rng = SystemRng;
        let mut x = Endpoint::new(&mut rng, usize::MAX);
        x.add_tunnel(spec.ike_config());
        for _ in 0..n {
            assert!(x.initiate(Instant::now(), &mut rng, spec.remote));
        }
        std::iter::from_fn(|| x.poll_transmit()).collect()
    }

    /// The half-open budget is the appliance's: requests spoofing two
    /// configured peers fill it together, then both tunnels answer with
    /// COOKIE; requests from an unconfigured address get no answer.
    #[test]
    fn cookies_under_a_flood_across_tunnels_and_unknown_sources_dropped() {
        let mut set = TunnelSet::with_half_open_threshold(3);
        let mut sink = Sink::default();
        let mut b = spec("192.0.2.1", "192.0.2.9", false);
        b.key.tunnel = 1;
        set.reconcile(
            Instant::now(),
            vec![spec("192.0.2.1", "192.0.2.2", false), b],
            vec![],
            &mut sink,
        );
        // As the peers would send them (their local = our remote).
        let from_a = flood(&spec("192.0.2.2", "192.0.2.1", false), 4);
        let from_b = flood(&spec("192.0.2.9", "192.0.2.1", false), 2);
        let now = Instant::now();
        let send = |set: &mut TunnelSet, t: &Transmit, src: &str| {
            set.handle_datagram(
                now,
                Datagram {
                    local: t.remote,
                    remote: SocketAddr::new(src.parse().unwrap(), t.local.port()),
                    payload: &t.payload,
                },
            );
        };
        send(&mut set, &from_a[0], "192.0.2.2");
        send(&mut set, &from_a[1], "192.0.2.2");
        send(&mut set, &from_b[0], "192.0.2.9");
        assert_eq!(set.counters().half_open, 3);
        send(&mut set, &from_a[2], "192.0.2.2");
        send(&mut set, &from_b[1], "192.0.2.9");
        for t in &from_a {
            send(&mut set, t, "203.0.113.7");
        }
        let out: Vec<Transmit> = std::iter::from_fn(|| set.poll_transmit()).collect();
        assert!(
            out.iter()
                .all(|t| t.remote.ip().to_string() != "203.0.113.7")
        );
        let c = set.counters();
        assert_eq!(out.len(), 5, "3 IKE_SA_INIT responses, 2 cookies");
        assert_eq!(
            (
                c.half_open,
                c.cookies_sent,
                c.init_unknown_peer,
                c.unmatched
            ),
            (3, 2, 4, 4),
            "{c:?}"
        );
        // The tunnel's activity log says so.
        assert!(set.collect_events());
        set.apply(&mut sink);
        assert!(
            sink.logs
                .iter()
                .any(|l| l.contains("IKE_SA_INIT under load: COOKIE sent to 1 request(s)")),
            "{:?}",
            sink.logs
        );
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

    /// A's dataplane reports a soft lifetime: A rekeys the Child SA and B
    /// answers. B adds only the new inbound SA and keeps sending with the
    /// old pair until A's DELETE of it arrives (A installs the new SAs only
    /// when B's answer arrives: RFC 7296 § 2.8); A keeps the old inbound
    /// SA until B answered that DELETE. Each step is checked in the
    /// dataplane calls both sides made.
    #[test]
    fn child_rekey_switches_the_answering_side_after_the_delete() {
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
        let key = spec("192.0.2.1", "192.0.2.2", true).key;
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
        let old_a = sa.installed[&key];
        let old_b = sb.installed[&key];
        let step = |from: &mut TunnelSet, to: &mut TunnelSet, sink: &mut Sink| {
            deliver(now, from, to);
            if to.collect_events() {
                to.apply(sink);
            }
        };
        a.handle_sa_events(
            now,
            vec![SaLifetimeEvent {
                tunnel: Some(key.clone()),
                spi: old_a.0,
                direction: control::dataplane::SaDirection::Inbound,
                event: dataplane::esp::sa::LifetimeEvent::SoftExpired,
            }],
            &mut sa,
        );
        a.handle_timeout(now);
        // CREATE_CHILD_SA request → B: the new inbound SA only.
        step(&mut a, &mut b, &mut sb);
        assert_eq!(sb.installed[&key], old_b, "B still sends with the old SA");
        let new_b_in = sb
            .extra_inbound
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, s)| *s)
            .expect("B added the new inbound SA");
        assert!(
            sb.logs
                .iter()
                .any(|l| l.contains(&format!("inbound SA {new_b_in:08x} installed, outbound SA"))),
            "{:?}",
            sb.logs
        );
        // The answer → A: the new pair, the old inbound SA kept.
        step(&mut b, &mut a, &mut sa);
        let new_a = sa.installed[&key];
        assert_eq!(new_a.1, new_b_in);
        assert_eq!(sa.extra_inbound, [(key.clone(), old_a.0)]);
        // A's DELETE of the old SA → B: it switches, the old one goes.
        step(&mut a, &mut b, &mut sb);
        assert_eq!(sb.installed[&key], (new_b_in, new_a.0));
        assert!(sb.extra_inbound.is_empty(), "{:?}", sb.extra_inbound);
        // B's answer → A: A's old inbound SA goes.
        step(&mut b, &mut a, &mut sa);
        assert_eq!(sa.installed[&key], new_a);
        assert!(sa.extra_inbound.is_empty(), "{:?}", sa.extra_inbound);
    }

    /// A customer gateway with a private certificate makes its tunnels
    /// use certificate authentication (no PSK needed); files that do not
    /// load are named in the tunnel's log when it starts.
    #[test]
    fn certificate_tunnels_need_loadable_files() {
        let mut c =
            ApplianceConfig::from_toml_str(include_str!("../../control/examples/appliance.toml"))
                .unwrap();
        let (specs, _) = tunnel_specs(&c);
        assert!(!specs.is_empty() && specs.iter().all(|s| s.certificate.is_none()));
        c.customer_gateways[0].certificate = Some("cgw-cert".into());
        c.certificates = CertificatesConfig {
            endpoint_certificate_file: Some("/nonexistent/vt-ikc/endpoint.pem".into()),
            endpoint_private_key_file: Some("/nonexistent/vt-ikc/endpoint.key".into()),
            authorities: vec![control::config::CertificateAuthority {
                certificate: "cgw-cert".into(),
                ca_chain_file: "/nonexistent/vt-ikc/chain.pem".into(),
            }],
        };
        for conn in &mut c.connections {
            for t in &mut conn.tunnels {
                t.pre_shared_key = None;
            }
        }
        let (specs, _) = tunnel_specs(&c);
        let cgw = c.customer_gateways[0].id.clone();
        let n = c
            .connections
            .iter()
            .filter(|k| k.customer_gateway_id == cgw)
            .count();
        let certs: Vec<_> = specs.iter().filter(|s| s.certificate.is_some()).collect();
        assert_eq!(certs.len(), 2 * n);
        let now = Instant::now();
        let e = certs[0].ike_config_loaded(now).unwrap_err();
        assert!(e.to_string().contains("endpoint.pem"), "{e}");
        let mut rng = SystemRng;
        let mut r = Runner::new(certs[0].clone(), now, &mut rng, 1);
        assert!(
            r.pending.iter().any(|e| matches!(e, Event::Log(l)
                if l.contains("cannot load its certificate authentication")
                    && l.contains("endpoint.pem"))),
            "{:?}",
            r.pending
        );
        r.pending.clear();
    }
}
