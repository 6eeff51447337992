//! The seam between the management plane and the packet-moving runtime.
//!
//! The [`Manager`](crate::manager::Manager) hands every accepted
//! configuration to a [`Dataplane`] and asks it for tunnel state, SAs,
//! routes and counters. The worker runtime (DPDK workers fed over SPSC
//! rings, IKE/BGP state machines) implements this trait when it lands;
//! until then [`InMemoryDataplane`] stands in: it remembers the
//! configuration, reports every tunnel DOWN and every counter zero, and lets
//! tests set state and counters.
//!
//! Nothing here touches DPDK or a socket.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use dataplane::esp::SaConfig;
use dataplane::esp::sa::TunnelEndpoints;

use crate::config::{ApplianceConfig, Change, IkeVersion, RoutingType};
use crate::logs::IkePhaseState;
use crate::visibility::StatusChange;

/// Identifies one tunnel: connection id plus index 0 or 1.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TunnelKey {
    /// Connection id.
    pub connection_id: String,
    /// Tunnel index, 0 or 1 (as in `tunnels[0]`, `tunnels[1]`).
    pub tunnel: usize,
}

/// UP/DOWN as the console shows a tunnel (spec §12.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TunnelUpDown {
    /// Child SA established (and BGP Established for dynamic routing).
    Up,
    /// Anything else.
    #[default]
    Down,
}

/// The runtime state of one tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TunnelRuntimeState {
    /// IKE SA state.
    pub ike_phase1_state: IkePhaseState,
    /// Child SA state.
    pub ike_phase2_state: IkePhaseState,
    /// BGP session state (RFC 4271 name), dynamic routing only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_state: Option<String>,
    /// NAT-T detected in front of the customer gateway.
    pub nat_t_detected: bool,
    /// Last UP/DOWN change, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_change_ms: Option<u64>,
    /// Why the status last changed (or was first recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_change_reason: Option<String>,
    /// UP/DOWN changes since the daemon started.
    #[serde(default)]
    pub status_changes: u64,
    /// Flaps: changes from UP to DOWN since the daemon started.
    #[serde(default)]
    pub flaps: u64,
    /// DOWN since (ms since the epoch); `None` while UP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_since_ms: Option<u64>,
    /// What IKE negotiated for the current SAs (absent while no IKE SA is
    /// established).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negotiated: Option<crate::visibility::NegotiatedParams>,
    /// The IKE version of the tunnel's established (or last) IKE SA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike_version: Option<IkeVersion>,
    /// Why the customer gateway's last attempt was refused (an IKE
    /// version the tunnel does not allow), until an IKE SA is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike_refused: Option<String>,
    /// Why the tunnel is not up although IKE is, e.g. the IKE SA is up
    /// but its Child SA was refused (`TS_UNACCEPTABLE refused by the
    /// peer, 2 failures`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    /// When the next attempt to fix that starts, milliseconds since the
    /// Unix epoch (`None` while one is in flight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_ms: Option<u64>,
}

impl TunnelRuntimeState {
    /// Record an UP/DOWN change (or the first status recorded, when
    /// `first`): time, reason, the change and flap counters, DOWN-since.
    pub fn note_status_change(&mut self, change: StatusChange<'_>, first: bool) {
        self.last_status_change_ms = Some(change.at_ms);
        self.last_status_change_reason = Some(change.reason.to_owned());
        if change.up {
            self.down_since_ms = None;
        } else if first || self.down_since_ms.is_none() {
            self.down_since_ms = Some(change.at_ms);
        }
        if !first {
            self.status_changes += 1;
            if !change.up {
                self.flaps += 1;
            }
        }
    }

    /// UP/DOWN by the `TunnelState` rule (spec §20.7): static routing is UP
    /// when the child SA is established (or rekeying); BGP routing only
    /// when, in addition, the BGP session is Established.
    #[must_use]
    pub fn up_down(&self, routing: RoutingType) -> TunnelUpDown {
        let ipsec = matches!(
            self.ike_phase2_state,
            IkePhaseState::Established | IkePhaseState::Rekeying
        );
        let bgp_ok = match routing {
            RoutingType::Static => true,
            RoutingType::Dynamic => self.bgp_state.as_deref() == Some("Established"),
        };
        if ipsec && bgp_ok {
            TunnelUpDown::Up
        } else {
            TunnelUpDown::Down
        }
    }
}

/// Per-tunnel counters, monotonic since the daemon started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TunnelCounters {
    /// Bytes received from the customer gateway, after decryption
    /// (`TunnelDataIn`).
    pub data_in_bytes: u64,
    /// Bytes sent to the customer gateway, before encryption
    /// (`TunnelDataOut`).
    pub data_out_bytes: u64,
    /// Packets decrypted.
    pub packets_in: u64,
    /// Packets encrypted.
    pub packets_out: u64,
    /// Packets of this tunnel dropped (any reason).
    pub drops: u64,
    /// The worker whose rx queue this tunnel's inbound ESP and NAT-T are
    /// steered to by flow rules on the outside port; absent where nothing
    /// steers it (one worker, a driver without `rte_flow`: RSS spreads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u32>,
}

/// Counters and link of one port (the NIC's view).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PortCounters {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets the NIC dropped (no descriptor, no mbuf, receive error).
    pub rx_dropped: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// The device (PCI address or virtual device) the port runs on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
    /// Link state as the driver last reported it (`None`: unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_up: Option<bool>,
    /// Link speed in Mbit/s (0: unknown).
    #[serde(default)]
    pub speed_mbps: u32,
    /// Link state changes seen since start (each is logged).
    #[serde(default)]
    pub link_changes: u64,
    /// The checksum offloads the port uses (`rx-ipv4-cksum`,
    /// `tx-ipv4-cksum`, comma-separated; `none`: all in software; empty:
    /// not known).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub offloads: String,
}

/// Counters summed over the workers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DataplaneStats {
    /// Per tunnel.
    pub tunnels: BTreeMap<String, TunnelCounters>,
    /// Drops by reason (the dataplane's `DropReason` names).
    pub drops: BTreeMap<String, u64>,
    /// Packets received on all ports.
    pub rx_packets: u64,
    /// Packets sent on all ports.
    pub tx_packets: u64,
    /// Worker pipeline counters by name (`encap_packets`, `decap_packets`,
    /// `punted`, …), summed over workers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub worker: BTreeMap<String, u64>,
    /// Per port, by the port's configured name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, PortCounters>,
    /// How inbound ESP is spread over the workers (flow rules per tunnel,
    /// or RSS and why); empty with one worker or no dataplane.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub steering: String,
    /// The ESP crypto library the dataplane chose at start (`ring`, or
    /// `ipsec-mb/<path>` with intel-ipsec-mb's code path for this CPU,
    /// e.g. `ipsec-mb/avx512`); empty with no dataplane.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub crypto_backend: String,
}

impl DataplaneStats {
    /// The key of `tunnels` for one tunnel: `<connection-id>/<index>`.
    #[must_use]
    pub fn tunnel_key(connection_id: &str, tunnel: usize) -> String {
        format!("{connection_id}/{tunnel}")
    }
}

/// Direction of an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaDirection {
    /// Decrypts traffic from the customer gateway.
    Inbound,
    /// Encrypts traffic to the customer gateway.
    Outbound,
}

/// One installed ESP SA (no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaInfo {
    /// Connection id.
    pub connection_id: String,
    /// Tunnel index.
    pub tunnel: usize,
    /// Direction.
    pub direction: SaDirection,
    /// SPI.
    pub spi: u32,
    /// Cipher, spelled as the configuration spells it.
    pub encryption: String,
    /// Local outside address.
    pub local: IpAddr,
    /// Peer outside address.
    pub peer: IpAddr,
    /// UDP encapsulation (NAT-T) in use.
    pub nat_t: bool,
    /// Bytes through the SA.
    pub bytes: u64,
    /// Packets through the SA.
    pub packets: u64,
    /// Seconds since installation.
    pub age_secs: u64,
}

/// One route in the forwarding table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// Destination prefix.
    pub prefix: IpNet,
    /// Connection the route points into.
    pub connection_id: String,
    /// Tunnel index, when the route is bound to one tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<usize>,
    /// `static` or `bgp`.
    pub source: String,
    /// Installed in the FIB (its tunnel is UP).
    pub active: bool,
    /// BGP routes spread over several tunnels: every member as
    /// `<connection-id>/<index>` (the first is `connection_id`/`tunnel`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecmp: Vec<String>,
    /// BGP: the chosen path's AS_PATH, space separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_path: Option<String>,
    /// BGP: the chosen path's MULTI_EXIT_DISC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub med: Option<u32>,
    /// BGP: the chosen path's next hop (the peer's inside address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<IpAddr>,
}

/// A route BGP selected, as the dataplane installs it: the prefix to one
/// tunnel, or spread over several (ECMP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicRoute {
    /// Destination prefix.
    pub prefix: IpNet,
    /// The tunnels carrying it, preferred first; more than one is an ECMP
    /// group. Never empty.
    pub tunnels: Vec<TunnelKey>,
    /// Where the route goes while none of `tunnels` is UP: the tunnels of
    /// the path BGP would select without them (empty: none). Traffic
    /// moves there the moment IKE reports the tunnels down, before the
    /// BGP withdrawal is processed.
    pub backup: Vec<TunnelKey>,
    /// The chosen path's AS_PATH, space separated.
    pub as_path: String,
    /// The chosen path's MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// The chosen path's next hop.
    pub next_hop: IpAddr,
}

impl DynamicRoute {
    /// The route as `show routes` lists it (its selected tunnels); `active`
    /// when the FIB holds it.
    #[must_use]
    pub fn entry(&self, active: bool) -> RouteEntry {
        let first = self.tunnels.first();
        RouteEntry {
            prefix: self.prefix,
            connection_id: first.map(|k| k.connection_id.clone()).unwrap_or_default(),
            tunnel: first.map(|k| k.tunnel),
            source: "bgp".to_owned(),
            active,
            ecmp: if self.tunnels.len() > 1 {
                self.tunnels
                    .iter()
                    .map(|k| DataplaneStats::tunnel_key(&k.connection_id, k.tunnel))
                    .collect()
            } else {
                Vec::new()
            },
            as_path: Some(self.as_path.clone()),
            med: self.med,
            next_hop: Some(self.next_hop),
        }
    }
}

/// A change of the BGP routes the FIB carries: routes added or replaced
/// (by prefix), prefixes removed. What [`Dataplane::update_dynamic_routes`]
/// follows so that a BGP update costs its own size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDelta {
    /// Routes added, or replacing the route of their prefix.
    pub put: Vec<DynamicRoute>,
    /// Prefixes whose route goes.
    pub remove: Vec<IpNet>,
}

impl RouteDelta {
    /// Whether nothing changes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.remove.is_empty()
    }
}

/// A negotiated Child SA: the two directions of one tunnel's ESP.
///
/// The key material is in the [`SaConfig`]s (zeroised on drop); nothing
/// here is ever shown or serialised.
#[derive(Debug)]
pub struct ChildSaPair {
    /// Decrypts what the customer gateway sends.
    pub inbound: SaConfig,
    /// Encrypts what we send to the customer gateway.
    pub outbound: SaConfig,
}

/// An SA reached a lifetime limit in the dataplane (IKE rekeys on
/// `SoftExpired` and deletes on `HardExpired`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaLifetimeEvent {
    /// The tunnel the SA belongs to, if it is one installed through
    /// [`Dataplane::install_child_sa`].
    pub tunnel: Option<TunnelKey>,
    /// The SA's SPI.
    pub spi: u32,
    /// Its direction.
    pub direction: SaDirection,
    /// Soft or hard.
    pub event: dataplane::esp::sa::LifetimeEvent,
}

/// What the runtime reports back about the commands it queued for its
/// workers, collected by [`Dataplane::poll`] and taken with
/// [`Dataplane::poll_events`]. Commands are queued without waiting;
/// workers apply them in order, so a later command always sees the
/// earlier ones, and what a worker refused shows up here.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataplaneEvent {
    /// Every worker applied the command (SA installs and removals, route
    /// table publications).
    Applied {
        /// The command, e.g. `SetOutbound 0x2001` or `routes`.
        what: String,
        /// The tunnel it was for, if any.
        tunnel: Option<TunnelKey>,
    },
    /// A worker refused the command (e.g. its SA table was full); it took
    /// no effect on that worker.
    Failed {
        /// The command.
        what: String,
        /// The tunnel it was for, if any.
        tunnel: Option<TunnelKey>,
        /// The worker's reason.
        reason: String,
    },
    /// The command could not be queued: a worker's command ring was full
    /// (counted; nothing was sent to any worker). Route tables are sent
    /// again by the next poll; other commands are dropped.
    RingFull {
        /// The command.
        what: String,
        /// The tunnel it was for, if any.
        tunnel: Option<TunnelKey>,
    },
    /// A queued command was still not applied after `after_ms` (the
    /// worker is stalled); reported once, its outcome follows when it
    /// comes.
    Late {
        /// The command.
        what: String,
        /// The tunnel it was for, if any.
        tunnel: Option<TunnelKey>,
        /// How long it has been waiting.
        after_ms: u64,
    },
}

/// Why the dataplane could not install or remove SAs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataplaneError {
    /// The tunnel is not in the applied configuration.
    #[error("tunnel {0:?} is not configured")]
    UnknownTunnel(TunnelKey),
    /// The SA record cannot be turned into a runtime SA.
    #[error("tunnel {tunnel:?}: invalid {direction:?} SA (SPI {spi:#x}): {reason}")]
    InvalidSa {
        /// The tunnel.
        tunnel: TunnelKey,
        /// Which SA.
        direction: SaDirection,
        /// Its SPI.
        spi: u32,
        /// What is wrong.
        reason: String,
    },
    /// A worker's command ring is full (the worker is stalled).
    #[error("worker command ring is full")]
    RingFull,
    /// A worker refused a command (e.g. its SA table is full).
    #[error("worker refused {what}: {reason}")]
    Refused {
        /// The command.
        what: String,
        /// The worker's reason.
        reason: String,
    },
    /// A worker did not acknowledge in time.
    #[error("worker did not acknowledge {what} within {timeout_ms} ms")]
    Timeout {
        /// The command.
        what: String,
        /// How long we waited.
        timeout_ms: u64,
    },
}

/// What the management plane needs from the packet-moving runtime.
///
/// Call order: [`apply`](Self::apply) once at start with the loaded
/// configuration and after every accepted change; the query methods at any
/// time; [`poll`](Self::poll) periodically (the daemon does it every few
/// milliseconds) so the runtime can collect acknowledgements, retired
/// objects and counters. `apply` is called only with a configuration that
/// validated and was already persisted.
///
/// IKE (when it lands) drives [`install_child_sa`](Self::install_child_sa),
/// [`remove_child_sa`](Self::remove_child_sa) and
/// [`set_tunnel_state`](Self::set_tunnel_state).
pub trait Dataplane: Send {
    /// Make the runtime match `config` (add/remove tunnels, SAs, routes).
    fn apply(&mut self, config: &ApplianceConfig);
    /// Follow one accepted change: `config` is the configuration with
    /// `change` already applied. The default applies the whole
    /// configuration; a runtime that can follow the one object changed
    /// overrides it, so that a change costs its own size.
    fn apply_change(&mut self, config: &ApplianceConfig, change: &Change) {
        let _ = change;
        self.apply(config);
    }
    /// State of one tunnel (DOWN with no SA when unknown).
    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState;
    /// The tunnel's number in the runtime (the handle its FIB entries and
    /// workers use), assigned when its connection is applied; the control
    /// core's RIB takes the same number, so one id names a tunnel from the
    /// configuration to the worker. `None` (the default) when the runtime
    /// does not number tunnels or `key` is not configured.
    fn tunnel_id(&self, key: &TunnelKey) -> Option<fib::TunnelId> {
        let _ = key;
        None
    }
    /// Installed SAs.
    fn sas(&self) -> Vec<SaInfo>;
    /// Routes learnt dynamically (BGP); static routes come from the
    /// configuration.
    fn dynamic_routes(&self) -> Vec<RouteEntry>;
    /// Replace the routes BGP selected (the whole set). The FIB carries
    /// each through those of its tunnels that are UP; routes of the
    /// configuration (local networks, static routes, inside CIDRs) win over
    /// a BGP route for the same prefix.
    fn set_dynamic_routes(&mut self, routes: Vec<DynamicRoute>);
    /// Follow a change of the BGP routes: `delta` is what changed, `all`
    /// the whole set after it. The default replaces the whole set
    /// ([`set_dynamic_routes`](Self::set_dynamic_routes)); a runtime that
    /// can follow the change overrides it, so that an update costs its own
    /// size.
    fn update_dynamic_routes(&mut self, delta: &RouteDelta, all: &[DynamicRoute]) {
        let _ = delta;
        self.set_dynamic_routes(all.to_vec());
    }
    /// Counters summed over workers.
    fn stats(&self) -> DataplaneStats;
    /// Record the state IKE/BGP report for one tunnel.
    fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState);
    /// Install a Child SA pair for a configured tunnel, make before break:
    /// (1) add the new inbound SA (unless [`add_child_inbound`] added it
    /// already), (2) switch the tunnel's outbound SA to the new one. The
    /// previous pair's inbound SA stays, next to the new one, until
    /// [`remove_child_inbound`]: IKE removes it when the peer no longer
    /// sends with it (the rekeyed SA's DELETE is done), so no packet of the
    /// peer is lost whichever SA it uses; from (2) on we send with the new
    /// one only.
    ///
    /// [`add_child_inbound`]: Self::add_child_inbound
    /// [`remove_child_inbound`]: Self::remove_child_inbound
    ///
    /// A runtime that queues commands for its workers returns once they
    /// are queued (in order: anything asked later is applied after
    /// them); what it can check beforehand (the tunnel, the SA records,
    /// room in its rings and tables) is an error here, what a worker
    /// refuses later is a [`DataplaneEvent::Failed`].
    ///
    /// # Errors
    /// [`DataplaneError`]; on error the previous pair stays installed.
    fn install_child_sa(
        &mut self,
        key: &TunnelKey,
        pair: &ChildSaPair,
    ) -> Result<(), DataplaneError>;
    /// Add only the inbound SA of a tunnel's next Child SA: we answered
    /// the peer's rekey, and it installs its own inbound SA only when our
    /// answer arrives (RFC 7296 § 2.8), so we keep sending with the
    /// installed pair until [`install_child_sa`](Self::install_child_sa)
    /// with this SA switches. Both inbound SAs decrypt meanwhile.
    ///
    /// # Errors
    /// [`DataplaneError`].
    fn add_child_inbound(&mut self, key: &TunnelKey, sa: &SaConfig) -> Result<(), DataplaneError>;
    /// Remove one of a tunnel's inbound SAs that is not the installed
    /// pair's: a rekeyed SA once deleted, or an SA added by
    /// [`add_child_inbound`](Self::add_child_inbound) that never became
    /// the pair. An SPI not installed so is not an error.
    ///
    /// # Errors
    /// [`DataplaneError`].
    fn remove_child_inbound(&mut self, key: &TunnelKey, spi: u32) -> Result<(), DataplaneError>;
    /// Remove the tunnel's Child SAs: the pair (outbound first, then
    /// inbound) and every other inbound SA of the tunnel. Nothing installed
    /// is not an error.
    ///
    /// # Errors
    /// [`DataplaneError`].
    fn remove_child_sa(&mut self, key: &TunnelKey) -> Result<(), DataplaneError>;
    /// Collect what the runtime reports back (acknowledgements, retired
    /// SAs and tables, counters). Never blocks.
    fn poll(&mut self) {}
    /// SA lifetime events collected by [`poll`](Self::poll) since the last
    /// call, oldest first.
    fn poll_sa_events(&mut self) -> Vec<SaLifetimeEvent> {
        Vec::new()
    }
    /// What the runtime reported about the commands it queued (see
    /// [`DataplaneEvent`]), collected by [`poll`](Self::poll) since the
    /// last call, oldest first. A runtime that applies everything before
    /// returning (or keeps no log) returns nothing.
    fn poll_events(&mut self) -> Vec<DataplaneEvent> {
        Vec::new()
    }
    /// Stop moving packets and release the runtime's resources (workers,
    /// ports, EAL). Afterwards `apply` and SA changes do nothing and the
    /// queries report an idle dataplane.
    fn shutdown(&mut self) {}
}

impl<D: Dataplane + ?Sized> Dataplane for Box<D> {
    fn apply(&mut self, config: &ApplianceConfig) {
        (**self).apply(config);
    }
    fn apply_change(&mut self, config: &ApplianceConfig, change: &Change) {
        (**self).apply_change(config, change);
    }
    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState {
        (**self).tunnel_state(key)
    }
    fn tunnel_id(&self, key: &TunnelKey) -> Option<fib::TunnelId> {
        (**self).tunnel_id(key)
    }
    fn sas(&self) -> Vec<SaInfo> {
        (**self).sas()
    }
    fn dynamic_routes(&self) -> Vec<RouteEntry> {
        (**self).dynamic_routes()
    }
    fn set_dynamic_routes(&mut self, routes: Vec<DynamicRoute>) {
        (**self).set_dynamic_routes(routes);
    }
    fn update_dynamic_routes(&mut self, delta: &RouteDelta, all: &[DynamicRoute]) {
        (**self).update_dynamic_routes(delta, all);
    }
    fn stats(&self) -> DataplaneStats {
        (**self).stats()
    }
    fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState) {
        (**self).set_tunnel_state(key, state);
    }
    fn install_child_sa(
        &mut self,
        key: &TunnelKey,
        pair: &ChildSaPair,
    ) -> Result<(), DataplaneError> {
        (**self).install_child_sa(key, pair)
    }
    fn add_child_inbound(&mut self, key: &TunnelKey, sa: &SaConfig) -> Result<(), DataplaneError> {
        (**self).add_child_inbound(key, sa)
    }
    fn remove_child_inbound(&mut self, key: &TunnelKey, spi: u32) -> Result<(), DataplaneError> {
        (**self).remove_child_inbound(key, spi)
    }
    fn remove_child_sa(&mut self, key: &TunnelKey) -> Result<(), DataplaneError> {
        (**self).remove_child_sa(key)
    }
    fn poll(&mut self) {
        (**self).poll();
    }
    fn poll_sa_events(&mut self) -> Vec<SaLifetimeEvent> {
        (**self).poll_sa_events()
    }
    fn poll_events(&mut self) -> Vec<DataplaneEvent> {
        (**self).poll_events()
    }
    fn shutdown(&mut self) {
        (**self).shutdown();
    }
}

/// The [`SaInfo`] of one SA record (counters zero, age 0).
#[must_use]
pub fn sa_info(key: &TunnelKey, direction: SaDirection, sa: &SaConfig) -> SaInfo {
    let (local, peer) = match sa.tunnel {
        TunnelEndpoints::V4 { local, remote } => (IpAddr::V4(local), IpAddr::V4(remote)),
        TunnelEndpoints::V6 { local, remote } => (IpAddr::V6(local), IpAddr::V6(remote)),
    };
    SaInfo {
        connection_id: key.connection_id.clone(),
        tunnel: key.tunnel,
        direction,
        spi: sa.spi,
        encryption: format!("{:?}", sa.algorithm),
        local,
        peer,
        nat_t: sa.nat_t.is_some(),
        bytes: 0,
        packets: 0,
        age_secs: 0,
    }
}

/// Whether `key` names a tunnel of `config`.
#[must_use]
pub fn is_configured(config: &ApplianceConfig, key: &TunnelKey) -> bool {
    key.tunnel < 2 && config.connections.iter().any(|c| c.id == key.connection_id)
}

/// The stand-in [`Dataplane`]: remembers the configuration, holds state and
/// counters that tests may set, moves no packets.
#[derive(Debug, Default)]
pub struct InMemoryDataplane {
    applied: Option<ApplianceConfig>,
    states: BTreeMap<TunnelKey, TunnelRuntimeState>,
    stats: DataplaneStats,
    sas: Vec<SaInfo>,
    applies: u64,
    dynamic: Vec<DynamicRoute>,
    route_updates: u64,
    route_delta_items: usize,
    /// Tunnel numbers, lowest free first, as a runtime assigns them.
    ids: BTreeMap<TunnelKey, fib::TunnelId>,
}

impl InMemoryDataplane {
    /// An empty stand-in.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the state reported for one tunnel.
    pub fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState) {
        self.states.insert(key, state);
    }

    /// Replace the counters reported.
    pub fn set_stats(&mut self, stats: DataplaneStats) {
        self.stats = stats;
    }

    /// Replace the SAs reported.
    pub fn set_sas(&mut self, sas: Vec<SaInfo>) {
        self.sas = sas;
    }

    /// The last configuration applied.
    #[must_use]
    pub fn applied(&self) -> Option<&ApplianceConfig> {
        self.applied.as_ref()
    }

    /// How many times `apply` was called.
    #[must_use]
    pub fn apply_count(&self) -> u64 {
        self.applies
    }

    /// The BGP routes the stand-in holds (what the FIB would carry).
    #[must_use]
    pub fn routes(&self) -> &[DynamicRoute] {
        &self.dynamic
    }

    /// How many route updates arrived, and how many routes and prefixes
    /// their deltas carried in all.
    #[must_use]
    pub fn route_updates(&self) -> (u64, usize) {
        (self.route_updates, self.route_delta_items)
    }
}

impl InMemoryDataplane {
    /// Number the tunnels of connection `id` (present in `config`) or free
    /// their numbers (absent).
    fn number(&mut self, config: &ApplianceConfig, id: &str) {
        let n = config
            .connections
            .iter()
            .find(|c| c.id == id)
            .map_or(0, |c| c.tunnels.len());
        self.ids
            .retain(|k, _| k.connection_id != id || k.tunnel < n);
        for tunnel in 0..n {
            let key = TunnelKey {
                connection_id: id.to_owned(),
                tunnel,
            };
            if self.ids.contains_key(&key) {
                continue;
            }
            let used: std::collections::BTreeSet<u32> = self.ids.values().map(|t| t.0).collect();
            let free = (0..).find(|i| !used.contains(i)).unwrap_or(u32::MAX);
            self.ids.insert(key, fib::TunnelId(free));
        }
    }
}

impl Dataplane for InMemoryDataplane {
    fn apply(&mut self, config: &ApplianceConfig) {
        // Forget state and SAs of tunnels that no longer exist.
        self.states
            .retain(|k, _| config.connections.iter().any(|c| c.id == k.connection_id));
        self.sas
            .retain(|s| config.connections.iter().any(|c| c.id == s.connection_id));
        self.ids
            .retain(|k, _| config.connections.iter().any(|c| c.id == k.connection_id));
        for c in &config.connections {
            self.number(config, &c.id);
        }
        self.applied = Some(config.clone());
        self.applies += 1;
    }

    fn tunnel_id(&self, key: &TunnelKey) -> Option<fib::TunnelId> {
        self.ids.get(key).copied()
    }

    fn apply_change(&mut self, config: &ApplianceConfig, change: &Change) {
        match &mut self.applied {
            Some(applied) => applied.apply_change(change),
            None => self.applied = Some(config.clone()),
        }
        if let Change::DeleteConnection { id } = change {
            self.states.retain(|k, _| k.connection_id != *id);
            self.sas.retain(|s| s.connection_id != *id);
        }
        match change {
            Change::PutConnection { connection } => self.number(config, &connection.id),
            Change::DeleteConnection { id } => self.number(config, id),
            _ => {}
        }
        self.applies += 1;
    }

    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState {
        self.states.get(key).cloned().unwrap_or_default()
    }

    fn sas(&self) -> Vec<SaInfo> {
        self.sas.clone()
    }

    fn dynamic_routes(&self) -> Vec<RouteEntry> {
        let routing = |k: &TunnelKey| {
            self.applied
                .as_ref()
                .and_then(|c| c.connections.iter().find(|c| c.id == k.connection_id))
                .map_or(RoutingType::Static, |c| c.routing)
        };
        self.dynamic
            .iter()
            .map(|r| {
                let up = r
                    .tunnels
                    .iter()
                    .chain(&r.backup)
                    .any(|k| self.tunnel_state(k).up_down(routing(k)) == TunnelUpDown::Up);
                r.entry(up)
            })
            .collect()
    }

    fn set_dynamic_routes(&mut self, routes: Vec<DynamicRoute>) {
        self.dynamic = routes;
        self.route_updates += 1;
    }

    fn update_dynamic_routes(&mut self, delta: &RouteDelta, _all: &[DynamicRoute]) {
        let gone = |p: &IpNet| delta.remove.contains(p) || delta.put.iter().any(|r| r.prefix == *p);
        self.dynamic.retain(|r| !gone(&r.prefix));
        self.dynamic.extend(delta.put.iter().cloned());
        self.dynamic.sort_by_key(|r| r.prefix);
        self.route_updates += 1;
        self.route_delta_items += delta.put.len() + delta.remove.len();
    }

    fn stats(&self) -> DataplaneStats {
        self.stats.clone()
    }

    fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState) {
        self.states.insert(key, state);
    }

    fn install_child_sa(
        &mut self,
        key: &TunnelKey,
        pair: &ChildSaPair,
    ) -> Result<(), DataplaneError> {
        if !self.applied.as_ref().is_some_and(|c| is_configured(c, key)) {
            return Err(DataplaneError::UnknownTunnel(key.clone()));
        }
        let ours = |s: &SaInfo| s.connection_id == key.connection_id && s.tunnel == key.tunnel;
        self.sas.retain(|s| {
            !(ours(s) && (s.direction == SaDirection::Outbound || s.spi == pair.inbound.spi))
        });
        self.sas
            .push(sa_info(key, SaDirection::Inbound, &pair.inbound));
        self.sas
            .push(sa_info(key, SaDirection::Outbound, &pair.outbound));
        Ok(())
    }

    fn add_child_inbound(&mut self, key: &TunnelKey, sa: &SaConfig) -> Result<(), DataplaneError> {
        if !self.applied.as_ref().is_some_and(|c| is_configured(c, key)) {
            return Err(DataplaneError::UnknownTunnel(key.clone()));
        }
        self.sas
            .retain(|s| s.spi != sa.spi || s.direction != SaDirection::Inbound);
        self.sas.push(sa_info(key, SaDirection::Inbound, sa));
        Ok(())
    }

    fn remove_child_inbound(&mut self, key: &TunnelKey, spi: u32) -> Result<(), DataplaneError> {
        let is_it = |s: &SaInfo| {
            s.connection_id == key.connection_id
                && s.tunnel == key.tunnel
                && s.direction == SaDirection::Inbound
                && s.spi == spi
        };
        self.sas.retain(|s| !is_it(s));
        Ok(())
    }

    fn remove_child_sa(&mut self, key: &TunnelKey) -> Result<(), DataplaneError> {
        self.sas
            .retain(|s| s.connection_id != key.connection_id || s.tunnel != key.tunnel);
        Ok(())
    }
}
