//! The tunnels IKE runs, without sockets, threads or clocks: the
//! per-tunnel logic between the sans-IO engine ([`super::endpoint`],
//! [`super::sa`]) and the rest of the control core. The control core
//! ([`crate::core::Core`]) calls [`TunnelSet`] in this order (the daemon's
//! event loop reads the sockets and the clocks):
//!
//! ```text
//!   at start, on config_import: tunnel_specs(config) ──► TunnelSet::reconcile
//!   a change of connection c:   connection_tunnel_specs(config, c)
//!                               ──► TunnelSet::reconcile_connection (c's tunnels only)
//!   dataplane SA events  ──► TunnelSet::handle_sa_events
//!   a datagram            ──► TunnelSet::handle_datagram ─► the tunnel's Endpoint
//!   a timer               ──► TunnelSet::handle_timeout     (by local/peer address)
//!   TunnelSet::poll_transmit ──► send_to
//!   TunnelSet::collect_events? ──► TunnelSet::apply (through the sink):
//!       ChildSaUp       ─► install_child_sa (make before break), or
//!                          add_child_inbound when we answered the peer's
//!                          rekey (RFC 7296 § 2.8)
//!       ChildSaOutbound ─► install_child_sa (the peer deleted the rekeyed
//!                          SA: send with the new one)
//!       ChildSaDown     ─► remove_child_sa (the installed pair),
//!                          remove_child_inbound (any other SA)
//!       Log             ─► the tunnel's activity log
//!       state           ─► set_tunnel_state (the FIB follows the UP tunnels;
//!                          the core tells BGP whether IPsec is up)
//!   TunnelSet::poll_log ──► the daemon's log
//!   TunnelSet::poll_timeout: the earliest engine timer, install retry or
//!                            cookie log line
//! ```
//!
//! One [`Endpoint`] per tunnel (a `Runner`), keyed by (our outside
//! address, customer gateway address): the two tunnels of a connection go
//! to the same peer from different outside addresses, and each keeps its
//! own IKE SA, retries and DPD.
//!
//! # IKE versions (spec § 3.2)
//!
//! A runner has an IKEv2 side ([`Endpoint`]) and, when the tunnel's
//! `ike_versions` allow IKEv1, an IKEv1 side
//! ([`crate::ikev1::endpoint::Endpoint`], Main Mode + Quick Mode). A
//! datagram goes to one of them by the major version in its ISAKMP header
//! (octet 17), so a tunnel that allows both answers whichever version
//! arrives. Both report the same [`Event`]s: IKEv1 IPsec SAs reach the
//! dataplane, the state table, the FIB and BGP exactly as IKEv2 Child SAs
//! do; the logs and the state's `ike_version` name the version. Startup
//! action `start` initiates IKEv2 only; an IKEv1 tunnel with DPD action
//! `restart` starts a new Main Mode after a DPD timeout. A datagram of a
//! version the tunnel does not allow is dropped unanswered, counted
//! ([`IkeCounters::v1_refused`], [`IkeCounters::v2_refused`]), logged in
//! the tunnel's log at most every [`REFUSED_LOG_PERIOD`], and the state's
//! `ike_refused` says why the tunnel is not up; IKEv1 from an address
//! that is no customer gateway is counted
//! ([`IkeCounters::v1_unknown_peer`]) and logged once per sender per
//! [`REFUSED_LOG_PERIOD`]. A tunnel whose IKE-relevant options
//! change (or that is removed) is closed (DELETE sent, SAs removed) and,
//! if still configured, started afresh.
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
//! [`super::endpoint`]). Transitions into and out of cookie mode are
//! logged, and each tunnel whose endpoint sent cookies says so in its
//! activity log (at most every [`COOKIE_LOG_PERIOD`]).
//!
//! What it never does: read a clock (time comes in as [`Now`]), touch a
//! socket, or reach the dataplane, the state table or the log ring except
//! through [`TunnelSink`] (implemented by [`Manager`]). Certificate files
//! are read when a tunnel (re)starts ([`TunnelSpec::ike_config_loaded`]),
//! as the configuration code reads them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use dataplane::esp::SaConfig;
use dataplane::esp::sa::{Direction, LifetimeLimits};
use ipnet::IpNet;

use super::cert::WallClock;
use super::crypto::IkeSuite;
use super::endpoint::{Counters as EndpointCounters, DEFAULT_HALF_OPEN_THRESHOLD, Endpoint};
use super::proposal::{EspSuite, encryption_name, integrity_name, prf_name};
use super::sa::{
    ChildSa, Datagram, DownReason, Event, IkeConfig, NAT_T_PORT, PhaseState, SEQ_REKEY_PACKETS,
    Transmit,
};
use super::wire::NotifyType;
use super::{Rng, SystemRng};
use crate::config::{
    ApplianceConfig, CertConfigError, CertificatesConfig, DpdTimeoutAction, IkeVersion,
    RoutingType, TunnelInsideIpVersion, TunnelOptions, VpnConnection,
};
use crate::dataplane::{
    ChildSaPair, Dataplane, DataplaneError, SaLifetimeEvent, TunnelKey, TunnelRuntimeState,
    TunnelUpDown,
};
use crate::ikev1::endpoint::Endpoint as V1Endpoint;
use crate::logs::{ActivityContext, IkePhaseState, LogEntry, TunnelActivityLog, resource_id};
use crate::manager::Manager;
use crate::metrics::ControlMetric;
use crate::visibility::{NegotiatedParams, StatusChange};

/// A Child SA the dataplane could not install is tried again after this
/// long.
const INSTALL_RETRY: Duration = Duration::from_secs(1);

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

/// A tunnel's activity log mentions cookies at most this often.
pub const COOKIE_LOG_PERIOD: Duration = Duration::from_secs(5);

/// A datagram of an IKE version a tunnel does not allow (or an IKEv1
/// datagram from an address that is no customer gateway) is logged at
/// most this often per peer.
pub const REFUSED_LOG_PERIOD: Duration = Duration::from_secs(60);

/// Peers remembered for [`REFUSED_LOG_PERIOD`] that are no customer
/// gateway (the oldest are forgotten first).
const UNKNOWN_PEERS_LOGGED_MAX: usize = 1024;

/// What a runner last wrote to the state table: phase 1, phase 2, NAT-T,
/// IKE version, refusal.
type Reported = (
    IkePhaseState,
    IkePhaseState,
    bool,
    Option<Negotiated>,
    Option<IkeVersion>,
    Option<String>,
    Option<String>,
    Option<u64>,
);

/// `IKEv1` / `IKEv2`, as the logs name a version.
fn label(v: IkeVersion) -> &'static str {
    match v {
        IkeVersion::Ikev1 => "IKEv1",
        _ => "IKEv2",
    }
}

/// The ISAKMP major version of an IKE datagram (1: IKEv1, 2: IKEv2; RFC
/// 2408 § 3.1, RFC 7296 § 3.1: the high nibble of octet 17), after the
/// non-ESP marker on port 4500; `None` for anything else (ESP, a NAT-T
/// keepalive, a runt).
fn major_version(d: Datagram<'_>) -> Option<u8> {
    let body = if d.local.port() == NAT_T_PORT {
        d.payload.strip_prefix(&[0, 0, 0, 0])?
    } else {
        d.payload
    };
    if body.len() < 28 {
        return None;
    }
    Some(body[17] >> 4)
}

/// When a call happens: the monotonic instant the timers run on, and the
/// wall clock for log timestamps, status-change times and certificate
/// validity. The caller reads both clocks; nothing here does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// Unix time, milliseconds.
    pub unix_ms: u64,
}

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
    /// IKEv1 datagrams to a tunnel that allows only IKEv2, dropped.
    pub v1_refused: u64,
    /// IKEv2 datagrams to a tunnel that allows only IKEv1, dropped.
    pub v2_refused: u64,
    /// IKEv1 datagrams from addresses that are no configured customer
    /// gateway (of any running tunnel), dropped.
    pub v1_unknown_peer: u64,
    /// New Child SAs not established (TS_UNACCEPTABLE, …), all tunnels.
    pub child_sa_failures: u64,
    /// Retries of such Child SAs started, all tunnels.
    pub child_sa_retries: u64,
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
                "vpn_ike_v1_refused_total",
                "IKEv1 datagrams to a tunnel whose ike_versions do not allow IKEv1, dropped.",
                false,
                self.v1_refused,
            ),
            m(
                "vpn_ike_v2_refused_total",
                "IKEv2 datagrams to a tunnel whose ike_versions do not allow IKEv2, dropped.",
                false,
                self.v2_refused,
            ),
            m(
                "vpn_ike_v1_unknown_peer_total",
                "IKEv1 datagrams from addresses that are no configured customer gateway, dropped.",
                false,
                self.v1_unknown_peer,
            ),
            m(
                "vpn_ike_child_sa_failures_total",
                "New Child SAs not established (TS_UNACCEPTABLE, NO_PROPOSAL_CHOSEN, ...) while the IKE SA stays up.",
                false,
                self.child_sa_failures,
            ),
            m(
                "vpn_ike_child_sa_retries_total",
                "Retries of such Child SAs started (CREATE_CHILD_SA or a fresh IKE SA).",
                false,
                self.child_sa_retries,
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
        self.record_tunnel_state(key, state);
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
    /// from its files (validity checked against `now`'s wall clock, then
    /// advanced by the engine's monotonic time).
    ///
    /// # Errors
    /// [`CertConfigError`] naming the file that does not load.
    pub fn ike_config_loaded(&self, now: Now) -> Result<IkeConfig, CertConfigError> {
        let mut cfg = self.ike_config();
        if let Some((name, certs)) = &self.certificate {
            let unix = i64::try_from(now.unix_ms / 1000).unwrap_or(i64::MAX);
            cfg.cert = Some(certs.cert_auth(name, WallClock::new(now.instant, unix))?);
        }
        Ok(cfg)
    }

    /// The name of this tunnel's key in the pre-shared key store, when
    /// its connection keeps keys there.
    #[must_use]
    pub fn pre_shared_key_ref(&self) -> Option<&str> {
        if self.options.pre_shared_key.is_some() || self.certificate.is_some() {
            return None;
        }
        self.options.pre_shared_key_ref.as_deref()
    }

    /// Give the tunnel its key, read from the store. The key is part of
    /// the spec, so a rotated key makes a different spec and the tunnel
    /// re-authenticates with it (a new IKE SA).
    pub fn set_pre_shared_key(&mut self, key: crate::config::PreSharedKey) {
        self.options.pre_shared_key = Some(key);
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
        connection_specs(config, c, &mut specs, &mut skipped);
    }
    (specs, skipped)
}

/// The tunnels IKE runs for connection `id` of `config` (none when it
/// does not exist), and why others of it are not run: what
/// [`TunnelSet::reconcile_connection`] takes.
#[must_use]
pub fn connection_tunnel_specs(
    config: &ApplianceConfig,
    id: &str,
) -> (Vec<TunnelSpec>, Vec<String>) {
    let mut specs = Vec::new();
    let mut skipped = Vec::new();
    if let Some(c) = config.connections.iter().find(|c| c.id == id) {
        connection_specs(config, c, &mut specs, &mut skipped);
    }
    (specs, skipped)
}

fn connection_specs(
    config: &ApplianceConfig,
    c: &VpnConnection,
    specs: &mut Vec<TunnelSpec>,
    skipped: &mut Vec<String>,
) {
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
        return;
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
        if t.pre_shared_key.is_none() && t.pre_shared_key_ref.is_none() && certificate.is_none() {
            skipped.push(format!("{what}: no pre-shared key"));
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

/// Adds to the running totals what one endpoint's counters moved by in
/// one call (`before` → `after`).
fn add_moved(c: &mut IkeCounters, before: &EndpointCounters, after: &EndpointCounters) {
    let moved = |a: u64, b: u64| a.saturating_sub(b);
    c.cookies_sent += moved(after.cookies_sent, before.cookies_sent);
    c.cookies_accepted += moved(after.cookies_accepted, before.cookies_accepted);
    c.init_refused += moved(after.init_refused, before.init_refused);
    c.init_unknown_peer += moved(after.init_unknown_peer, before.init_unknown_peer);
    c.child_sa_failures += moved(after.child_sa_failures, before.child_sa_failures);
    c.child_sa_retries += moved(after.child_sa_retries, before.child_sa_retries);
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
    /// The IKEv1 side of the tunnel (Main Mode + Quick Mode), when its
    /// `ike_versions` allow IKEv1; `endpoint` is the IKEv2 side, which
    /// only gets datagrams when IKEv2 is allowed.
    v1: Option<V1Endpoint>,
    /// IKEv2 is allowed.
    allow_v2: bool,
    /// The version of the last IKE SA established.
    version: Option<IkeVersion>,
    /// Why the peer's last attempt was refused (a version the tunnel does
    /// not allow), until an IKE SA is up; when it was last logged.
    refused: Option<(String, Instant)>,
    /// Events taken from the endpoints, with their version, not yet
    /// applied.
    pending: Vec<(IkeVersion, Event)>,
    /// A Child SA the dataplane refused (e.g. a stalled worker did not
    /// acknowledge in time), tried again at the instant given.
    retry: Option<(Instant, Box<ChildSa>)>,
    /// What was last recorded.
    reported: Option<Reported>,
    /// The suite and lifetime of the Child SA last installed.
    child_suite: Option<(EspSuite, Duration)>,
    /// Why the state is about to change: the last event applied.
    reason: Option<String>,
    /// Cookies sent as of the last activity-log line about them, and when.
    cookies_logged: (u64, Option<Instant>),
    /// Test mode: soft packet limit of installed Child SAs.
    rekey_packets: Option<u64>,
    /// Daemon log lines (its activity-log lines as text), for
    /// [`TunnelSet::poll_log`].
    lines: VecDeque<String>,
    /// Its half-open responder SAs as last counted into
    /// [`TunnelSet`]'s total.
    half_open: usize,
}

impl Runner {
    /// When this tunnel next needs the set: its engine's timer, a refused
    /// install's retry, a cookie line due.
    fn deadline(&self) -> Option<Instant> {
        let cookies = (self.endpoint.counters().cookies_sent > self.cookies_logged.0)
            .then(|| self.cookies_logged.1.map(|t| t + COOKIE_LOG_PERIOD))
            .flatten();
        [
            self.endpoint.poll_timeout(),
            self.v1.as_ref().and_then(V1Endpoint::poll_timeout),
            self.retry.as_ref().map(|(at, _)| *at),
            cookies,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn new(spec: TunnelSpec, now: Now, rng: &mut dyn Rng, lifetime_divisor: u32) -> Self {
        let mut endpoint = Endpoint::new(rng, DEFAULT_HALF_OPEN_THRESHOLD);
        let mut pending = Vec::new();
        // Certificate files are read here, once per (re)configured tunnel,
        // not on every reconciliation (which holds the manager's lock).
        let mut cfg = spec.ike_config_loaded(now).unwrap_or_else(|e| {
            // No credentials at all: the peer's AUTH fails and the tunnel
            // log says why.
            pending.push((
                IkeVersion::Ikev2,
                Event::Log(format!(
                    "AWS tunnel cannot load its certificate authentication: {e}"
                )),
            ));
            let mut c = spec.ike_config();
            c.psk = zeroize::Zeroizing::new(Vec::new());
            c
        });
        if lifetime_divisor > 1 {
            cfg.phase1_lifetime /= lifetime_divisor;
            cfg.phase2_lifetime /= lifetime_divisor;
            cfg.rekey_margin /= lifetime_divisor;
        }
        let allow_v2 = spec.options.ike_versions.contains(&IkeVersion::Ikev2);
        let v1 = spec
            .options
            .ike_versions
            .contains(&IkeVersion::Ikev1)
            .then(|| {
                let mut v1 = V1Endpoint::new();
                v1.add_tunnel(cfg.clone());
                v1
            });
        endpoint.add_tunnel(cfg);
        // Startup action `start` initiates IKEv2 only (spec § 3.2, § 6;
        // configuration validation requires ikev2 with it).
        if allow_v2 {
            endpoint.start(now.instant, rng);
        }
        Self {
            spec,
            endpoint,
            installed: None,
            deferred: None,
            nat_t: false,
            v1,
            allow_v2,
            version: None,
            refused: None,
            pending,
            retry: None,
            reported: None,
            child_suite: None,
            reason: None,
            cookies_logged: (0, None),
            rekey_packets: None,
            lines: VecDeque::new(),
            half_open: 0,
        }
    }

    /// An activity-log line when this tunnel's endpoint sent cookies since
    /// the last one (at most every [`COOKIE_LOG_PERIOD`]).
    fn cookies_to_log(&self, now: Instant) -> bool {
        let (n, at) = self.cookies_logged;
        self.endpoint.counters().cookies_sent > n && at.is_none_or(|t| now >= t + COOKIE_LOG_PERIOD)
    }

    fn log_cookies(&mut self, now: Now, sink: &mut dyn TunnelSink) {
        let c = self.endpoint.counters();
        let fresh = c.cookies_sent - self.cookies_logged.0;
        self.cookies_logged = (c.cookies_sent, Some(now.instant));
        self.log(
            sink,
            now,
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
        if let Some(v1) = &self.v1 {
            let (a, b) = v1.tunnel_state();
            p1 = best(p1, phase(a));
            p2 = best(p2, phase(b));
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

    fn log(&mut self, sink: &mut dyn TunnelSink, now: Now, details: String) {
        let entry = TunnelActivityLog::new(
            self.spec.resource_id(),
            now.unix_ms,
            self.context(),
            details,
        );
        let entry = LogEntry::Activity(entry);
        self.lines.push_back(entry.render_text());
        sink.record_log(entry);
    }

    fn retry_due(&self, now: Instant) -> bool {
        self.retry.as_ref().is_some_and(|(at, _)| *at <= now)
    }

    fn apply(&mut self, now: Now, rng: &mut dyn Rng, sink: &mut dyn TunnelSink) {
        let key = self.spec.key.clone();
        if self.cookies_to_log(now.instant) {
            self.log_cookies(now, sink);
        }
        if self.retry_due(now.instant)
            && let Some((_, c)) = self.retry.take()
        {
            let v = self.version.unwrap_or(IkeVersion::Ikev2);
            self.pending.insert(0, (v, Event::ChildSaUp(c)));
        }
        for (v, e) in std::mem::take(&mut self.pending) {
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
                    self.version = Some(v);
                    self.refused = None;
                    let what = match v {
                        IkeVersion::Ikev1 => "IKEv1 Main Mode",
                        _ => "IKEv2",
                    };
                    self.reason = Some("IKE_SA established".to_owned());
                    self.log(sink, now, format!("IKE_SA established ({what})"));
                }
                Event::ChildSaUp(c) => self.install(c, now, rng, sink),
                Event::ChildSaOutbound { inbound_spi, .. } => {
                    if let Some(mut c) = self.deferred.take_if(|c| c.inbound.spi == inbound_spi) {
                        c.outbound_deferred = false;
                        self.install(c, now, rng, sink);
                    }
                }
                // The installed pair goes: the tunnel has no SA left.
                Event::ChildSaDown { inbound_spi, .. }
                    if self.installed.is_some_and(|(i, _)| i == inbound_spi) =>
                {
                    if let Err(e) = sink.remove_child_sa(&key) {
                        self.log(
                            sink,
                            now,
                            format!("removing CHILD_SA {inbound_spi:08x}: {e}"),
                        );
                    }
                    self.installed = None;
                    self.deferred = None;
                    self.reason = Some(format!("CHILD_SA {inbound_spi:08x} removed"));
                    self.log(sink, now, format!("CHILD_SA {inbound_spi:08x} removed"));
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
                        self.log(
                            sink,
                            now,
                            format!("removing inbound SA {inbound_spi:08x}: {e}"),
                        );
                    }
                }
                Event::IkeSaDown { reason } => {
                    self.reason = Some(format!("IKE_SA down: {reason:?}"));
                    self.log(sink, now, format!("IKE_SA down ({}): {reason:?}", label(v)));
                    self.v1_down(v, reason, now, rng, sink);
                }
                // The endpoint schedules the retry and logs it; the state
                // shows it (report).
                Event::ChildSaFailed { .. } => {}
                Event::IkeSaRekeyed { spi_i, spi_r } => {
                    self.log(
                        sink,
                        now,
                        format!("IKE_SA rekeyed: new SPIs {spi_i:016x}_i {spi_r:016x}_r"),
                    );
                }
                Event::Log(line) if v == IkeVersion::Ikev1 => {
                    self.log(sink, now, format!("IKEv1: {line}"));
                }
                Event::Log(line) => self.log(sink, now, line),
            }
        }
        self.report(now, sink);
    }

    /// An IKEv1 SA went down: with DPD action `restart` (spec § 3.1) a
    /// new Main Mode starts (IKEv1's own dead-peer recovery; `start`
    /// itself initiates IKEv2 only).
    fn v1_down(
        &mut self,
        v: IkeVersion,
        reason: DownReason,
        now: Now,
        rng: &mut dyn Rng,
        sink: &mut dyn TunnelSink,
    ) {
        if v != IkeVersion::Ikev1
            || reason != DownReason::DpdTimeout
            || self.spec.options.dpd_timeout_action != DpdTimeoutAction::Restart
        {
            return;
        }
        if let Some(v1) = &mut self.v1
            && v1.initiate(now.instant, rng, self.spec.remote)
        {
            self.log(
                sink,
                now,
                "IKEv1: DPD timeout action restart: initiating Main Mode".to_owned(),
            );
        }
    }

    /// Move both endpoints' events to `pending`.
    fn drain_events(&mut self) {
        while let Some((_, e)) = self.endpoint.poll_event() {
            self.pending.push((IkeVersion::Ikev2, e));
        }
        if let Some(v1) = &mut self.v1 {
            while let Some((_, e)) = v1.poll_event() {
                self.pending.push((IkeVersion::Ikev1, e));
            }
        }
    }

    /// The next datagram either endpoint sends.
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.endpoint
            .poll_transmit()
            .or_else(|| self.v1.as_mut().and_then(V1Endpoint::poll_transmit))
    }

    /// A datagram of `version` the tunnel does not allow arrived from its
    /// peer: remember why (for `show tunnels`) and say so in the tunnel's
    /// log at most every [`REFUSED_LOG_PERIOD`].
    fn refuse(&mut self, now: Instant, version: IkeVersion) {
        let allowed: Vec<String> = self
            .spec
            .options
            .ike_versions
            .iter()
            .map(ToString::to_string)
            .collect();
        let why = format!(
            "the customer gateway {} uses {}, the tunnel allows only {} (ike_versions)",
            self.spec.remote,
            label(version),
            allowed.join(", ")
        );
        let due = self
            .refused
            .as_ref()
            .is_none_or(|(w, at)| *w != why || now >= *at + REFUSED_LOG_PERIOD);
        if due {
            self.pending.push((
                IkeVersion::Ikev2,
                Event::Log(format!("{} datagram dropped: {why}", label(version))),
            ));
            self.refused = Some((why, now));
        }
    }

    /// Put a Child SA into the dataplane: both directions, or only the
    /// inbound SA when its outbound SA is deferred. A refusal is retried
    /// after [`INSTALL_RETRY`] (both directions then).
    fn install(
        &mut self,
        mut c: Box<ChildSa>,
        now: Now,
        rng: &mut dyn Rng,
        sink: &mut dyn TunnelSink,
    ) {
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
                now,
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
                self.child_suite = Some((c.suite, c.lifetime));
                if c.outbound_deferred {
                    self.deferred = Some(c);
                } else {
                    self.installed = Some((spi_i, spi_o));
                    self.reason = Some("CHILD_SA established".to_owned());
                }
                self.log(sink, now, line);
            }
            Err(e) => {
                self.log(
                    sink,
                    now,
                    format!(
                        "CHILD_SA {spi_i:08x}/{spi_o:08x} cannot be installed (retrying in {} s): {e}",
                        INSTALL_RETRY.as_secs()
                    ),
                );
                c.outbound_deferred = false;
                self.retry = Some((now.instant + INSTALL_RETRY, c));
            }
        }
    }

    /// What IKE negotiated for the IKE SA in use (the one holding the
    /// installed Child SA, else the newest established one).
    fn negotiated(&self) -> Option<Negotiated> {
        let sas = self.endpoint.sas();
        let holding = self
            .installed
            .and_then(|(i, _)| sas.iter().find(|s| s.child_rekey_at(i).is_some()));
        let sa = holding.or_else(|| sas.iter().rev().find(|s| s.established_suite().is_some()))?;
        let (ike, ike_rekey_at) = sa.established_suite()?;
        Some(Negotiated {
            ike,
            ike_lifetime: sa.config().phase1_lifetime,
            ike_rekey_at,
            child: self.child_suite,
            child_rekey_at: self.installed.and_then(|(i, _)| sa.child_rekey_at(i)),
        })
    }

    /// Why the tunnel is down with its IKE SA up, and when the next retry
    /// starts (Unix ms): a Child SA that was refused.
    fn detail(&self, now: Now) -> (Option<String>, Option<u64>) {
        let Some(r) = self.endpoint.child_retry(self.spec.remote) else {
            return (None, None);
        };
        let who = if r.by_peer {
            "refused by the peer"
        } else {
            "refused by us"
        };
        let detail = format!(
            "CHILD_SA not established: {} {who}, {} failure{}",
            notify_name(r.reason),
            r.failures,
            if r.failures == 1 { "" } else { "s" }
        );
        let at = r.next.map(|t| {
            let ms = t.saturating_duration_since(now.instant).as_millis();
            now.unix_ms
                .saturating_add(u64::try_from(ms).unwrap_or(u64::MAX))
        });
        (Some(detail), at)
    }

    /// Record the state if it changed.
    fn report(&mut self, now: Now, sink: &mut dyn TunnelSink) {
        let (p1, p2) = self.phases();
        let negotiated = self.negotiated();
        let refused = self.refused.as_ref().map(|(w, _)| w.clone());
        let (detail, next_retry_ms) = self.detail(now);
        let seen = (
            p1,
            p2,
            self.nat_t,
            negotiated,
            self.version,
            refused.clone(),
            detail,
            next_retry_ms,
        );
        if self.reported.as_ref() == Some(&seen) {
            return;
        }
        let key = self.spec.key.clone();
        let mut state = sink.tunnel_state(&key);
        let was = state.up_down(self.spec.routing);
        state.ike_phase1_state = p1;
        state.ike_phase2_state = p2;
        state.nat_t_detected = self.nat_t;
        state.negotiated = negotiated.map(|n| n.params(now));
        state.ike_version = self.version;
        state.ike_refused = refused;
        state.status_detail.clone_from(&seen.6);
        state.next_retry_ms = seen.7;
        let is = state.up_down(self.spec.routing);
        if was != is || state.last_status_change_ms.is_none() {
            let reason = self.reason.take().unwrap_or_else(|| {
                if is == TunnelUpDown::Up {
                    "IPsec up".to_owned()
                } else {
                    format!("IKE phase 1 {p1:?}, phase 2 {p2:?}")
                }
            });
            let change = StatusChange {
                up: is == TunnelUpDown::Up,
                at_ms: now.unix_ms,
                reason: &reason,
            };
            state.note_status_change(change, was == is);
        }
        sink.set_tunnel_state(key, state);
        self.reported = Some(seen);
        if was != is {
            let s = match (is, self.version) {
                (TunnelUpDown::Up, Some(v)) => format!("UP ({})", label(v)),
                (TunnelUpDown::Up, None) => "UP".to_owned(),
                _ => "DOWN".to_owned(),
            };
            self.log(sink, now, format!("tunnel status changed to {s}"));
        }
    }

    /// DELETE to the peer, SAs out of the dataplane, state DOWN.
    fn close(&mut self, now: Now, rng: &mut dyn Rng, sink: &mut dyn TunnelSink) {
        self.endpoint.close(now.instant, rng, self.spec.remote);
        if let Some(v1) = &mut self.v1 {
            v1.close_all(rng);
        }
        self.drain_events();
        self.apply(now, rng, sink);
        if self.installed.take().is_some()
            && let Err(e) = sink.remove_child_sa(&self.spec.key)
        {
            self.log(sink, now, format!("removing the CHILD_SA: {e}"));
        }
        let mut state = sink.tunnel_state(&self.spec.key);
        let was = state.up_down(self.spec.routing);
        state.ike_phase1_state = IkePhaseState::Down;
        state.ike_phase2_state = IkePhaseState::Down;
        state.status_detail = None;
        state.next_retry_ms = None;
        state.negotiated = None;
        if was == TunnelUpDown::Up {
            state.note_status_change(
                StatusChange {
                    up: false,
                    at_ms: now.unix_ms,
                    reason: "tunnel closed by the appliance (configuration changed or stopping)",
                },
                false,
            );
        }
        sink.set_tunnel_state(self.spec.key.clone(), state);
    }
}

/// [`NegotiatedParams`] in the engine's terms, compared between reports
/// (instants, so that the same SAs always compare equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Negotiated {
    ike: IkeSuite,
    ike_lifetime: Duration,
    ike_rekey_at: Instant,
    child: Option<(EspSuite, Duration)>,
    child_rekey_at: Option<Instant>,
}

impl Negotiated {
    fn params(&self, now: Now) -> NegotiatedParams {
        let at_ms = |at: Instant| {
            let ahead = at.saturating_duration_since(now.instant).as_millis();
            now.unix_ms
                .saturating_add(u64::try_from(ahead).unwrap_or(u64::MAX))
        };
        let child = self.child.map(|(c, _)| c);
        NegotiatedParams {
            ike_version: IkeVersion::Ikev2,
            // Only the appliance's own ciphers can be negotiated.
            phase1_encryption: encryption_name(self.ike.encr)
                .unwrap_or(crate::config::EncryptionAlgorithm::Aes256Gcm16),
            phase1_integrity: self.ike.integ.map(integrity_name),
            phase1_prf: prf_name(self.ike.prf),
            phase1_dh_group: self.ike.dh,
            phase1_lifetime_secs: self.ike_lifetime.as_secs(),
            phase1_rekey_at_ms: Some(at_ms(self.ike_rekey_at)),
            phase2_encryption: child.and_then(|c| encryption_name(c.encr)),
            phase2_integrity: child.and_then(|c| c.integ).map(integrity_name),
            phase2_pfs_dh_group: child.and_then(|c| c.dh),
            phase2_esn: child.is_some_and(|c| c.esn),
            phase2_lifetime_secs: self.child.map(|(_, l)| l.as_secs()),
            phase2_rekey_at_ms: self.child_rekey_at.map(at_ms),
        }
    }
}

/// An error notify's RFC 7296 name (`TS_UNACCEPTABLE`), for the status.
fn notify_name(n: NotifyType) -> String {
    match n {
        NotifyType::TsUnacceptable => "TS_UNACCEPTABLE".to_owned(),
        NotifyType::NoProposalChosen => "NO_PROPOSAL_CHOSEN".to_owned(),
        NotifyType::InvalidKePayload => "INVALID_KE_PAYLOAD".to_owned(),
        NotifyType::InvalidSyntax => "INVALID_SYNTAX".to_owned(),
        NotifyType::SinglePairRequired => "SINGLE_PAIR_REQUIRED".to_owned(),
        NotifyType::NoAdditionalSas => "NO_ADDITIONAL_SAS".to_owned(),
        NotifyType::InternalAddressFailure => "INTERNAL_ADDRESS_FAILURE".to_owned(),
        other => format!("{other:?}"),
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
    /// Test mode: lifetimes and rekey margin divided by this.
    lifetime_divisor: u32,
    /// Test mode: soft packet lifetime of the Child SAs.
    rekey_packets: Option<u64>,
    /// Daemon log lines, for [`poll_log`](Self::poll_log).
    lines: VecDeque<String>,
    /// Runners by (our outside address, the peer's address), for datagrams.
    by_addr: HashMap<(IpAddr, IpAddr), BTreeSet<TunnelKey>>,
    /// Outside addresses in use, with how many runners use each.
    locals: BTreeMap<IpAddr, usize>,
    /// Runners touched since their events were last taken.
    touched: BTreeSet<TunnelKey>,
    /// Runners that may have datagrams to send.
    outbox: BTreeSet<TunnelKey>,
    /// Runners that may have log lines.
    logbox: BTreeSet<TunnelKey>,
    /// Every runner's next deadline, earliest first, and the index back.
    timers: BTreeSet<(Instant, TunnelKey)>,
    deadlines: HashMap<TunnelKey, Instant>,
    /// IKEv1 senders that are no customer gateway, with when each was
    /// last logged (bounded: [`UNKNOWN_PEERS_LOGGED_MAX`]).
    unknown_v1_logged: HashMap<IpAddr, Instant>,
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
            lines: VecDeque::new(),
            by_addr: HashMap::new(),
            locals: BTreeMap::new(),
            touched: BTreeSet::new(),
            outbox: BTreeSet::new(),
            logbox: BTreeSet::new(),
            timers: BTreeSet::new(),
            deadlines: HashMap::new(),
            unknown_v1_logged: HashMap::new(),
        }
    }
}

impl TunnelSet {
    /// `key`'s runner was used: its outputs are looked at, its deadline
    /// and half-open count brought up to date. What keeps every call
    /// proportional to the tunnels it concerns, not to all of them.
    fn touch(&mut self, key: &TunnelKey) {
        let Some(r) = self.runners.get_mut(key) else {
            return;
        };
        let h = r.endpoint.half_open();
        self.half_open = (self.half_open + h).saturating_sub(r.half_open);
        r.half_open = h;
        let next = r.deadline();
        if let Some(old) = self.deadlines.remove(key) {
            self.timers.remove(&(old, key.clone()));
        }
        if let Some(t) = next {
            self.deadlines.insert(key.clone(), t);
            self.timers.insert((t, key.clone()));
        }
        self.touched.insert(key.clone());
        self.outbox.insert(key.clone());
        self.logbox.insert(key.clone());
    }

    /// Forget `key`'s runner in the indexes (it was removed).
    fn forget(&mut self, key: &TunnelKey, r: &Runner) {
        self.half_open = self.half_open.saturating_sub(r.half_open);
        if let Some(old) = self.deadlines.remove(key) {
            self.timers.remove(&(old, key.clone()));
        }
        self.touched.remove(key);
        self.outbox.remove(key);
        self.logbox.remove(key);
        if let Some(n) = self.locals.get_mut(&r.spec.local) {
            *n -= 1;
            if *n == 0 {
                self.locals.remove(&r.spec.local);
            }
        }
        let pair = (r.spec.local, r.spec.remote);
        // Another runner of the same addresses (configuration validation
        // forbids it; the first in key order takes over) stays in the
        // set: no walk over the runners.
        if let Some(keys) = self.by_addr.get_mut(&pair) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_addr.remove(&pair);
            }
        }
    }

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
    /// packets; tunnels started from now on.
    pub fn set_rekey_packets(&mut self, packets: u64) {
        self.rekey_packets = Some(packets);
    }

    /// Soft byte/packet lifetime events from the dataplane: the Child SA
    /// is rekeyed now rather than on its timer (hard ones too: the
    /// dataplane already drops its traffic, a new SA is the way out).
    pub fn handle_sa_events(
        &mut self,
        now: Now,
        events: Vec<SaLifetimeEvent>,
        sink: &mut dyn TunnelSink,
    ) {
        for ev in events {
            let Some(key) = ev.tunnel.as_ref() else {
                continue;
            };
            let Some(r) = self.runners.get_mut(key) else {
                continue;
            };
            let known = r.endpoint.expedite_child_rekey(now.instant, ev.spi);
            let what = format!(
                "CHILD_SA SPI {:08x} ({:?}) reached its {:?} byte/packet lifetime in the dataplane",
                ev.spi, ev.direction, ev.event
            );
            let line = if known {
                format!("{what}: rekeying it now")
            } else if r.v1.is_some() && r.version == Some(IkeVersion::Ikev1) {
                format!("{what}: IKEv1 SAs are rekeyed by time (Quick Mode), not by volume")
            } else {
                format!("{what}: no longer in use, nothing to do")
            };
            r.log(sink, now, line);
            self.touch(key);
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
            let line = if busy {
                format!(
                    "{half_open} half-open IKE_SAs (threshold {}): IKE_SA_INIT must carry a COOKIE",
                    self.half_open_threshold
                )
            } else {
                format!(
                    "{half_open} half-open IKE_SAs: cookies no longer required; {:?}",
                    self.counters()
                )
            };
            self.lines.push_back(line);
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
        now: Now,
        specs: Vec<TunnelSpec>,
        skipped: Vec<String>,
        sink: &mut dyn TunnelSink,
    ) {
        if skipped != self.skipped {
            for s in skipped.iter().filter(|s| !self.skipped.contains(s)) {
                self.lines.push_back(format!("not running {s}"));
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
        self.replace(now, stale, wanted, sink);
    }

    /// [`reconcile`](Self::reconcile) for the tunnels of connection `id`
    /// only (it was created, changed or deleted): `specs` and `skipped` are
    /// [`connection_tunnel_specs`]'s for it. The other tunnels are not
    /// looked at, so a change costs its own size.
    pub fn reconcile_connection(
        &mut self,
        now: Now,
        id: &str,
        specs: Vec<TunnelSpec>,
        skipped: Vec<String>,
        sink: &mut dyn TunnelSink,
    ) {
        for s in &skipped {
            if !self.skipped.contains(s) {
                self.lines.push_back(format!("not running {s}"));
            }
        }
        let mine = |s: &String| {
            s.strip_prefix(id)
                .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('/'))
        };
        self.skipped.retain(|s| !mine(s));
        self.skipped.extend(skipped);
        let wanted: BTreeMap<TunnelKey, TunnelSpec> = specs
            .into_iter()
            .filter(|s| s.key.connection_id == id)
            .map(|s| (s.key.clone(), s))
            .collect();
        let stale: Vec<TunnelKey> = self
            .runners
            .range(crate::bgp::speaker::connection_range(id))
            .filter(|(k, r)| wanted.get(*k) != Some(&r.spec))
            .map(|(k, _)| k.clone())
            .collect();
        self.replace(now, stale, wanted, sink);
    }

    /// Close the `stale` runners, then start those of `wanted` not running.
    fn replace(
        &mut self,
        now: Now,
        stale: Vec<TunnelKey>,
        wanted: BTreeMap<TunnelKey, TunnelSpec>,
        sink: &mut dyn TunnelSink,
    ) {
        for k in stale {
            if let Some(mut r) = self.runners.remove(&k) {
                self.forget(&k, &r);
                r.close(now, &mut self.rng, sink);
                self.transmits
                    .extend(std::iter::from_fn(|| r.poll_transmit()));
                self.lines
                    .push_back(format!("{}/{} stopped", k.connection_id, k.tunnel));
                self.lines.extend(r.lines.drain(..));
            }
        }
        for (k, spec) in wanted {
            if self.runners.contains_key(&k) {
                continue;
            }
            let versions: Vec<&str> = spec
                .options
                .ike_versions
                .iter()
                .map(|v| label(*v))
                .collect();
            self.lines.push_back(format!(
                "{}/{} runs {} -> {} ({:?}, {})",
                k.connection_id,
                k.tunnel,
                spec.local,
                spec.remote,
                spec.options.startup_action,
                versions.join("+")
            ));
            let mut r = Runner::new(spec, now, &mut self.rng, self.lifetime_divisor);
            r.rekey_packets = self.rekey_packets;
            r.endpoint.set_cookies_required(self.under_load);
            r.drain_events();
            r.apply(now, &mut self.rng, sink);
            *self.locals.entry(r.spec.local).or_insert(0) += 1;
            self.by_addr
                .entry((r.spec.local, r.spec.remote))
                .or_default()
                .insert(k.clone());
            self.runners.insert(k.clone(), r);
            self.touch(&k);
        }
    }

    /// Close every tunnel (DELETE to its peer, SAs out of the dataplane),
    /// as on shutdown.
    pub fn close_all(&mut self, now: Now, sink: &mut dyn TunnelSink) {
        for (_, mut r) in std::mem::take(&mut self.runners) {
            r.close(now, &mut self.rng, sink);
            self.transmits
                .extend(std::iter::from_fn(|| r.poll_transmit()));
            self.lines.extend(r.lines.drain(..));
        }
        self.by_addr.clear();
        self.locals.clear();
        self.touched.clear();
        self.outbox.clear();
        self.logbox.clear();
        self.timers.clear();
        self.deadlines.clear();
        self.half_open = 0;
    }

    /// How many tunnels run.
    #[must_use]
    pub fn len(&self) -> usize {
        self.runners.len()
    }

    /// Whether no tunnel runs.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.runners.is_empty()
    }

    /// Datagrams the daemon's receivers dropped on a full queue, for
    /// [`counters`](Self::counters).
    pub fn set_rx_queue_full(&mut self, dropped: u64) {
        self.counters.rx_queue_full = dropped;
    }

    /// The next line for the daemon's log: service events (tunnels
    /// started and stopped, cookie mode) and every tunnel's activity-log
    /// lines as text.
    pub fn poll_log(&mut self) -> Option<String> {
        if let Some(l) = self.lines.pop_front() {
            return Some(l);
        }
        while let Some(k) = self.logbox.first().cloned() {
            if let Some(l) = self.runners.get_mut(&k).and_then(|r| r.lines.pop_front()) {
                return Some(l);
            }
            self.logbox.remove(&k);
        }
        None
    }

    /// The outside addresses the running tunnels use.
    #[must_use]
    pub fn local_addresses(&self) -> BTreeSet<IpAddr> {
        self.locals.keys().copied().collect()
    }

    /// A datagram from one of the IKE sockets, to the tunnel of its
    /// (local, remote) addresses.
    pub fn handle_datagram(&mut self, now: Instant, d: Datagram<'_>) {
        let key = self
            .by_addr
            .get(&(d.local.ip(), d.remote.ip()))
            .and_then(|keys| keys.first())
            .cloned();
        let version = major_version(d);
        match key.and_then(|k| self.runners.get_mut(&k).map(|r| (k, r))) {
            // By the ISAKMP header's major version, to the tunnel's
            // IKEv1 or IKEv2 side when its ike_versions allow it.
            Some((k, r)) => {
                match (version, r.v1.as_mut()) {
                    (Some(1), Some(v1)) => v1.handle_datagram(now, &mut self.rng, d),
                    (Some(1), None) => {
                        self.counters.v1_refused += 1;
                        r.refuse(now, IkeVersion::Ikev1);
                    }
                    (Some(2), _) if !r.allow_v2 => {
                        self.counters.v2_refused += 1;
                        r.refuse(now, IkeVersion::Ikev2);
                    }
                    _ => {
                        // The totals follow each tunnel's counters as they
                        // move (a datagram or a timer moves them), so
                        // reading them costs no walk over the tunnels.
                        let before = r.endpoint.counters();
                        r.endpoint.handle_datagram(now, &mut self.rng, d);
                        add_moved(&mut self.counters, &before, &r.endpoint.counters());
                    }
                }
                self.touch(&k);
                self.update_load(self.half_open);
            }
            None => {
                self.counters.unmatched += 1;
                if is_sa_init_request(d) {
                    self.counters.init_unknown_peer += 1;
                }
                if version == Some(1) {
                    self.counters.v1_unknown_peer += 1;
                    self.log_unknown_v1(now, d);
                }
            }
        }
    }

    /// An IKEv1 datagram from an address that is no customer gateway of
    /// a running tunnel: logged once per sender per
    /// [`REFUSED_LOG_PERIOD`].
    fn log_unknown_v1(&mut self, now: Instant, d: Datagram<'_>) {
        let peer = d.remote.ip();
        if self
            .unknown_v1_logged
            .get(&peer)
            .is_some_and(|at| now < *at + REFUSED_LOG_PERIOD)
        {
            return;
        }
        if self.unknown_v1_logged.len() >= UNKNOWN_PEERS_LOGGED_MAX {
            self.unknown_v1_logged
                .retain(|_, at| now < *at + REFUSED_LOG_PERIOD);
            if self.unknown_v1_logged.len() >= UNKNOWN_PEERS_LOGGED_MAX {
                // Still full of recent senders: counted, not logged.
                return;
            }
        }
        self.unknown_v1_logged.insert(peer, now);
        self.lines.push_back(format!(
            "IKEv1 datagram from {} to {} dropped: no tunnel of ours has this customer gateway address ({} such datagrams in all)",
            d.remote, d.local, self.counters.v1_unknown_peer
        ));
    }

    /// Run the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<TunnelKey> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, k)| k.clone())
            .collect();
        for k in due {
            if let Some(r) = self.runners.get_mut(&k) {
                if r.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                    let before = r.endpoint.counters();
                    r.endpoint.handle_timeout(now, &mut self.rng);
                    add_moved(&mut self.counters, &before, &r.endpoint.counters());
                }
                if let Some(v1) = &mut r.v1
                    && v1.poll_timeout().is_some_and(|t| t <= now)
                {
                    v1.handle_timeout(now, &mut self.rng);
                }
            }
            // Its deadline moves on; a retry or cookie line due is found
            // by collect_events, and applying it moves that deadline.
            self.touch(&k);
        }
        self.update_load(self.half_open);
    }

    /// The counters of every tunnel since the set was made (running
    /// totals, kept as datagrams move them: O(1), and monotonic — a
    /// removed tunnel's counts stay, as a Prometheus counter must).
    #[must_use]
    pub fn counters(&self) -> IkeCounters {
        let mut c = self.counters;
        c.half_open = u64::try_from(self.half_open).unwrap_or(u64::MAX);
        c
    }

    /// The earliest timer.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        while let Some(k) = self.outbox.first().cloned() {
            if let Some(t) = self.runners.get_mut(&k).and_then(Runner::poll_transmit) {
                return Some(t);
            }
            self.outbox.remove(&k);
        }
        None
    }

    /// Take the engines' events; `true` when some must be applied (call
    /// [`apply`](Self::apply) with the manager locked).
    pub fn collect_events(&mut self, now: Instant) -> bool {
        // Only the tunnels touched since the last call can have any.
        let mut ready = BTreeSet::new();
        for k in std::mem::take(&mut self.touched) {
            let Some(r) = self.runners.get_mut(&k) else {
                continue;
            };
            r.drain_events();
            if !r.pending.is_empty() || r.retry_due(now) || r.cookies_to_log(now) {
                ready.insert(k);
            }
        }
        let any = !ready.is_empty();
        self.touched = ready;
        any
    }

    /// Apply the collected events: SAs into the dataplane, state, logs.
    pub fn apply(&mut self, now: Now, sink: &mut dyn TunnelSink) {
        for k in std::mem::take(&mut self.touched) {
            if let Some(r) = self.runners.get_mut(&k)
                && (!r.pending.is_empty()
                    || r.retry_due(now.instant)
                    || r.cookies_to_log(now.instant))
            {
                r.apply(now, &mut self.rng, sink);
            }
            // A retry or cookie line set or done: its deadline moves.
            self.touch(&k);
            self.touched.remove(&k);
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
    use super::wire::{ExchangeType, Header, Reader};
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::{PreSharedKey, StartupAction};

    /// `instant` with a fixed wall clock (2026-01-01).
    fn at(instant: Instant) -> Now {
        Now {
            instant,
            unix_ms: 1_767_225_600_000,
        }
    }

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
            at(Instant::now()),
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
        assert!(set.collect_events(Instant::now()));
        set.apply(at(Instant::now()), &mut sink);
        assert!(
            sink.logs
                .iter()
                .any(|l| l.contains("IKE_SA_INIT under load: COOKIE sent to 1 request(s)")),
            "{:?}",
            sink.logs
        );
        // The totals are kept, not summed over the running tunnels: a
        // removed tunnel's counts stay (counters never go down).
        set.reconcile(
            at(Instant::now()),
            vec![spec("192.0.2.1", "192.0.2.2", false)],
            vec![],
            &mut sink,
        );
        let after = set.counters();
        assert_eq!(
            (after.cookies_sent, after.init_unknown_peer, after.unmatched),
            (c.cookies_sent, c.init_unknown_peer, c.unmatched),
            "{after:?}"
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
            at(now),
            vec![spec("192.0.2.1", "192.0.2.2", true)],
            vec![],
            &mut sa,
        );
        b.reconcile(
            at(now),
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
                if set.collect_events(now) {
                    set.apply(at(now), sink);
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
        a.reconcile(at(now), vec![], vec![], &mut sa);
        assert!(sa.installed.is_empty());
        assert_eq!(
            sa.states[&key].up_down(RoutingType::Static),
            TunnelUpDown::Down
        );
        deliver(now, &mut a, &mut b);
        assert!(b.collect_events(now));
        b.apply(at(now), &mut sb);
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
            at(now),
            vec![spec("192.0.2.1", "192.0.2.2", true)],
            vec![],
            &mut sa,
        );
        b.reconcile(
            at(now),
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
                if set.collect_events(now) {
                    set.apply(at(now), sink);
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
            if to.collect_events(now) {
                to.apply(at(now), sink);
            }
        };
        a.handle_sa_events(
            at(now),
            vec![SaLifetimeEvent {
                tunnel: Some(key.clone()),
                spi: old_a.0,
                direction: crate::dataplane::SaDirection::Inbound,
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

    /// Moves every datagram between a bare IKEv1 endpoint (the customer
    /// gateway) and a tunnel set, both ways, until neither sends.
    fn exchange_v1(now: Instant, peer: &mut V1Endpoint, set: &mut TunnelSet, sink: &mut Sink) {
        let mut rng = SystemRng;
        for _ in 0..20 {
            let mut moved = false;
            while let Some(t) = peer.poll_transmit() {
                moved = true;
                set.handle_datagram(
                    now,
                    Datagram {
                        local: t.remote,
                        remote: t.local,
                        payload: &t.payload,
                    },
                );
            }
            if set.collect_events(now) {
                set.apply(at(now), sink);
            }
            while let Some(t) = set.poll_transmit() {
                moved = true;
                peer.handle_datagram(
                    now,
                    &mut rng,
                    Datagram {
                        local: t.remote,
                        remote: t.local,
                        payload: &t.payload,
                    },
                );
            }
            if !moved {
                break;
            }
        }
    }

    /// A tunnel that allows both versions answers an IKEv1 Main Mode:
    /// Quick Mode's IPsec SA goes to the dataplane (mirrored SPIs), the
    /// state says IKEv1 and UP, the log names the version; removing the
    /// tunnel sends the peer a DELETE and takes the SA out.
    #[test]
    fn an_ikev1_peer_brings_a_tunnel_up_and_removal_deletes_it() {
        let now = Instant::now();
        let mut set = TunnelSet::new();
        let mut sink = Sink::default();
        let ours = spec("192.0.2.1", "192.0.2.2", false);
        assert_eq!(
            ours.options.ike_versions,
            [IkeVersion::Ikev1, IkeVersion::Ikev2],
            "default: both"
        );
        set.reconcile(at(now), vec![ours.clone()], vec![], &mut sink);
        let mut rng = SystemRng;
        let mut peer = V1Endpoint::new();
        peer.add_tunnel(spec("192.0.2.2", "192.0.2.1", false).ike_config());
        assert!(peer.initiate(now, &mut rng, "192.0.2.1".parse().unwrap()));
        exchange_v1(now, &mut peer, &mut set, &mut sink);
        let mut peer_children = Vec::new();
        while let Some((_, e)) = peer.poll_event() {
            if let Event::ChildSaUp(c) = e {
                peer_children.push((c.inbound.spi, c.outbound.spi));
            }
        }
        let key = ours.key.clone();
        let (i, o) = *sink.installed.get(&key).expect("IPsec SA installed");
        assert_eq!(peer_children, [(o, i)], "mirrored SPIs");
        let st = &sink.states[&key];
        assert_eq!(st.up_down(RoutingType::Static), TunnelUpDown::Up);
        assert_eq!(st.ike_version, Some(IkeVersion::Ikev1));
        assert!(st.ike_refused.is_none());
        for l in [
            "IKE_SA established (IKEv1 Main Mode)",
            "tunnel status changed to UP (IKEv1)",
        ] {
            assert!(
                sink.logs.iter().any(|x| x.contains(l)),
                "{l}: {:?}",
                sink.logs
            );
        }
        assert_eq!(set.counters().v1_refused, 0);

        // Removed: DELETE to the peer, SA out of the dataplane.
        set.reconcile(at(now), vec![], vec![], &mut sink);
        assert!(sink.installed.is_empty());
        assert_eq!(
            sink.states[&key].up_down(RoutingType::Static),
            TunnelUpDown::Down
        );
        exchange_v1(now, &mut peer, &mut set, &mut sink);
        let mut down = false;
        while let Some((_, e)) = peer.poll_event() {
            down |= matches!(e, Event::ChildSaDown { inbound_spi, .. } if inbound_spi == o);
        }
        assert!(down, "the peer deleted its IPsec SA on our DELETE");
    }

    /// IKEv1 to a tunnel that allows only IKEv2, and from an address that
    /// is no customer gateway: no answer, counted, logged once per peer
    /// per minute; `show tunnels`' state says why the tunnel is not up.
    /// An IKEv1-only tunnel does not answer IKEv2 either.
    #[test]
    fn a_version_the_tunnel_does_not_allow_is_refused_counted_and_shown() {
        let mut now = Instant::now();
        let mut set = TunnelSet::new();
        let mut sink = Sink::default();
        let mut v2only = spec("192.0.2.1", "192.0.2.2", false);
        v2only.options.ike_versions = vec![IkeVersion::Ikev2];
        let mut v1only = spec("192.0.2.1", "192.0.2.9", false);
        v1only.key.tunnel = 1;
        v1only.options.ike_versions = vec![IkeVersion::Ikev1];
        set.reconcile(
            at(now),
            vec![v2only.clone(), v1only.clone()],
            vec![],
            &mut sink,
        );
        let mut rng = SystemRng;
        let main_mode_1 = |from: &str, to: &str| {
            let mut peer = V1Endpoint::new();
            peer.add_tunnel(spec(from, to, false).ike_config());
            assert!(peer.initiate(Instant::now(), &mut SystemRng, to.parse().unwrap()));
            peer.poll_transmit().expect("Main Mode message 1")
        };
        let send = |set: &mut TunnelSet, t: &Transmit, now: Instant| {
            set.handle_datagram(
                now,
                Datagram {
                    local: t.remote,
                    remote: t.local,
                    payload: &t.payload,
                },
            );
        };
        let mm1 = main_mode_1("192.0.2.2", "192.0.2.1");
        for _ in 0..3 {
            send(&mut set, &mm1, now);
        }
        // From no customer gateway.
        let stray = main_mode_1("203.0.113.7", "192.0.2.1");
        send(&mut set, &stray, now);
        send(&mut set, &stray, now);
        // IKEv2 to the IKEv1-only tunnel.
        let mut v2peer = Endpoint::new(&mut rng, usize::MAX);
        v2peer.add_tunnel(spec("192.0.2.9", "192.0.2.1", false).ike_config());
        assert!(v2peer.initiate(now, &mut rng, "192.0.2.1".parse().unwrap()));
        let init = v2peer.poll_transmit().expect("IKE_SA_INIT");
        send(&mut set, &init, now);

        assert!(set.poll_transmit().is_none(), "nothing is answered");
        let c = set.counters();
        assert_eq!(
            (c.v1_refused, c.v1_unknown_peer, c.v2_refused),
            (3, 2, 1),
            "{c:?}"
        );
        let m = c.metrics();
        assert!(
            m.iter()
                .any(|x| x.name == "vpn_ike_v1_refused_total" && x.value == 3)
        );
        assert!(set.collect_events(now));
        set.apply(at(now), &mut sink);
        let refused = |sink: &Sink| {
            sink.logs
                .iter()
                .filter(|l| l.contains("IKEv1 datagram dropped"))
                .count()
        };
        assert_eq!(refused(&sink), 1, "{:?}", sink.logs);
        let why = sink.states[&v2only.key].ike_refused.clone().unwrap();
        assert!(
            why.contains("192.0.2.2 uses IKEv1") && why.contains("allows only ikev2"),
            "{why}"
        );
        let why1 = sink.states[&v1only.key].ike_refused.clone().unwrap();
        assert!(why1.contains("uses IKEv2"), "{why1}");
        let lines: Vec<String> = std::iter::from_fn(|| set.poll_log()).collect();
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("IKEv1 datagram from 203.0.113.7:500"))
                .count(),
            1,
            "{lines:?}"
        );
        // A minute later: logged again.
        now += REFUSED_LOG_PERIOD;
        send(&mut set, &mm1, now);
        assert!(set.collect_events(now));
        set.apply(at(now), &mut sink);
        assert_eq!(refused(&sink), 2, "{:?}", sink.logs);
    }

    /// A customer gateway with a private certificate makes its tunnels
    /// use certificate authentication (no PSK needed); files that do not
    /// load are named in the tunnel's log when it starts.
    #[test]
    fn certificate_tunnels_need_loadable_files() {
        let mut c =
            ApplianceConfig::from_toml_str(include_str!("../../examples/appliance.toml")).unwrap();
        let (specs, _) = tunnel_specs(&c);
        assert!(!specs.is_empty() && specs.iter().all(|s| s.certificate.is_none()));
        c.customer_gateways[0].certificate = Some("cgw-cert".into());
        c.certificates = CertificatesConfig {
            endpoint_certificate_file: Some("/nonexistent/vt-ikc/endpoint.pem".into()),
            endpoint_private_key_file: Some("/nonexistent/vt-ikc/endpoint.key".into()),
            authorities: vec![crate::config::CertificateAuthority {
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
        let e = certs[0].ike_config_loaded(at(now)).unwrap_err();
        assert!(e.to_string().contains("endpoint.pem"), "{e}");
        let mut rng = SystemRng;
        let mut r = Runner::new(certs[0].clone(), at(now), &mut rng, 1);
        assert!(
            r.pending.iter().any(|(_, e)| matches!(e, Event::Log(l)
                if l.contains("cannot load its certificate authentication")
                    && l.contains("endpoint.pem"))),
            "{:?}",
            r.pending
        );
        r.pending.clear();
    }
}
