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

use crate::config::{ApplianceConfig, RoutingType};
use crate::logs::IkePhaseState;

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
}

impl TunnelRuntimeState {
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
}

/// What the management plane needs from the packet-moving runtime.
///
/// Call order: [`apply`](Self::apply) once at start with the loaded
/// configuration and after every accepted change; the query methods at any
/// time. `apply` is called only with a configuration that validated and was
/// already persisted.
pub trait Dataplane: Send {
    /// Make the runtime match `config` (add/remove tunnels, SAs, routes).
    fn apply(&mut self, config: &ApplianceConfig);
    /// State of one tunnel (DOWN with no SA when unknown).
    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState;
    /// Installed SAs.
    fn sas(&self) -> Vec<SaInfo>;
    /// Routes learnt dynamically (BGP); static routes come from the
    /// configuration.
    fn dynamic_routes(&self) -> Vec<RouteEntry>;
    /// Counters summed over workers.
    fn stats(&self) -> DataplaneStats;
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
}

impl Dataplane for InMemoryDataplane {
    fn apply(&mut self, config: &ApplianceConfig) {
        // Forget state of tunnels that no longer exist.
        self.states
            .retain(|k, _| config.connections.iter().any(|c| c.id == k.connection_id));
        self.applied = Some(config.clone());
        self.applies += 1;
    }

    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState {
        self.states.get(key).cloned().unwrap_or_default()
    }

    fn sas(&self) -> Vec<SaInfo> {
        self.sas.clone()
    }

    fn dynamic_routes(&self) -> Vec<RouteEntry> {
        Vec::new()
    }

    fn stats(&self) -> DataplaneStats {
        self.stats.clone()
    }
}
