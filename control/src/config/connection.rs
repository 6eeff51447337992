//! VPN connections: two tunnels to one customer gateway (spec §2.2, §3.4,
//! §3.5, §3.14, §10, §25.1).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::error::{ConfigError, Errors, finish};
use super::gateway::check_id;
use super::names::{
    DpdTimeoutAction, GatewayKind, OutsideIpAddressType, PreSharedKeyStorage, RoutingType,
    StartupAction, TunnelBandwidth, TunnelInsideIpVersion,
};
use super::tunnel::TunnelOptions;

/// Most static routes per connection (spec §21.2, VGW quota; applied to
/// every gateway kind as the appliance's documented limit).
pub const MAX_STATIC_ROUTES: usize = 100;

/// BGP session settings for a dynamic-routing connection; they apply to the
/// eBGP session inside each of its tunnels (spec §10, §14, §25.4).
///
/// The timers are \[INFERRED\] in the spec (hold 30 s / keepalive 10 s,
/// graceful restart 120 s); the MED 100 is what every sample shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpOptions {
    /// Hold time offered in OPEN: 0 (no keepalives) or 3–65535 s
    /// (RFC 4271 §4.2). Default 30.
    #[serde(default = "default_hold_time")]
    pub hold_time_secs: u32,
    /// Keepalive interval: 1 s to a third of the hold time (RFC 4271
    /// §10), or 0 when the hold time is 0. Default 10.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u32,
    /// MED advertised on our routes. Default 100. Maintenance lowers it on
    /// the surviving tunnel (spec §10.3).
    #[serde(default = "default_med")]
    pub med: u32,
    /// Most prefixes accepted from the peer before NOTIFICATION 6/1.
    /// Default by gateway kind: 100 (virtual-private-gateway), 1000
    /// (transit-gateway, concentrator) (spec §21.2, §11.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prefixes: Option<u32>,
    /// Most prefixes advertised to the peer. Default by gateway kind: 1000
    /// (virtual-private-gateway), 5000 (transit-gateway, concentrator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_advertised_prefixes: Option<u32>,
    /// Graceful restart time, 0–4095 s (RFC 4724 §3, 12 bits); 0 disables.
    /// Default 120.
    #[serde(default = "default_gr_time")]
    pub graceful_restart_time_secs: u32,
}

fn default_hold_time() -> u32 {
    30
}
fn default_keepalive() -> u32 {
    10
}
fn default_med() -> u32 {
    100
}
fn default_gr_time() -> u32 {
    120
}

impl Default for BgpOptions {
    fn default() -> Self {
        Self {
            hold_time_secs: default_hold_time(),
            keepalive_secs: default_keepalive(),
            med: default_med(),
            max_prefixes: None,
            max_advertised_prefixes: None,
            graceful_restart_time_secs: default_gr_time(),
        }
    }
}

impl BgpOptions {
    /// Received-prefix limit in force for `kind`.
    #[must_use]
    pub fn effective_max_prefixes(&self, kind: GatewayKind) -> u32 {
        self.max_prefixes.unwrap_or(match kind {
            GatewayKind::VirtualPrivateGateway => 100,
            _ => 1000,
        })
    }

    /// Advertised-prefix limit in force for `kind`.
    #[must_use]
    pub fn effective_max_advertised_prefixes(&self, kind: GatewayKind) -> u32 {
        self.max_advertised_prefixes.unwrap_or(match kind {
            GatewayKind::VirtualPrivateGateway => 1000,
            _ => 5000,
        })
    }

    pub(crate) fn validate_into(&self, errs: &mut Errors<'_>) {
        if self.hold_time_secs != 0 {
            errs.range("hold_time_secs", self.hold_time_secs, 3, 65_535);
        }
        if self.hold_time_secs == 0 {
            if self.keepalive_secs != 0 {
                errs.conflict(
                    "keepalive_secs",
                    self.keepalive_secs,
                    "hold_time_secs = 0: no keepalives are sent, set keepalive_secs = 0",
                );
            }
        } else {
            let hi = (self.hold_time_secs / 3).max(1);
            if self.keepalive_secs == 0 || self.keepalive_secs > hi {
                errs.out_of_range(
                    "keepalive_secs",
                    self.keepalive_secs,
                    format!(
                        "1..={hi} (at most a third of hold_time_secs = {})",
                        self.hold_time_secs
                    ),
                );
            }
        }
        if self.max_prefixes == Some(0) {
            errs.out_of_range("max_prefixes", 0, ">= 1");
        }
        if self.max_advertised_prefixes == Some(0) {
            errs.out_of_range("max_advertised_prefixes", 0, ">= 1");
        }
        errs.range(
            "graceful_restart_time_secs",
            self.graceful_restart_time_secs,
            0,
            4095,
        );
    }
}

const ANY_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 0);
const ANY_V6: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 0);

fn any_v4() -> Ipv4Net {
    ANY_V4
}
fn any_v6() -> Ipv6Net {
    ANY_V6
}

/// Read the tunnel list and insist on exactly two. (serde's array impl
/// would silently ignore a third `[[connections.tunnels]]`.)
fn exactly_two_tunnels<'de, D: Deserializer<'de>>(d: D) -> Result<[TunnelOptions; 2], D::Error> {
    let v = Vec::<TunnelOptions>::deserialize(d)?;
    let n = v.len();
    <[TunnelOptions; 2]>::try_from(v)
        .map_err(|_| de::Error::custom(format!("a connection has exactly 2 tunnels, found {n}")))
}

/// A VPN connection: exactly two tunnels between the appliance and one
/// customer gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpnConnection {
    /// Identifier (e.g. `vpn-0a1b2c`): 1–64 characters from `[A-Za-z0-9-]`.
    pub id: String,
    /// The customer gateway this connection goes to.
    pub customer_gateway_id: String,
    /// The gateway (this appliance's `gateway.id`) the connection attaches
    /// to.
    pub target: String,
    /// Static or dynamic (BGP) routing. Default `dynamic`.
    #[serde(default)]
    pub routing: RoutingType,
    /// Static prefixes behind the customer gateway (static routing only),
    /// at most [`MAX_STATIC_ROUTES`], of the inside IP version's family.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_routes: Vec<IpNet>,
    /// Traffic selector, customer side, IPv4 connections (spec §3.4).
    /// Default 0.0.0.0/0.
    #[serde(default = "any_v4")]
    pub local_ipv4_network_cidr: Ipv4Net,
    /// Traffic selector, appliance side, IPv4 connections. Default 0.0.0.0/0.
    #[serde(default = "any_v4")]
    pub remote_ipv4_network_cidr: Ipv4Net,
    /// Traffic selector, customer side, IPv6 connections. Default ::/0.
    #[serde(default = "any_v6")]
    pub local_ipv6_network_cidr: Ipv6Net,
    /// Traffic selector, appliance side, IPv6 connections. Default ::/0.
    #[serde(default = "any_v6")]
    pub remote_ipv6_network_cidr: Ipv6Net,
    /// Outside address type (spec §3.5). Default `PublicIpv4`.
    #[serde(default)]
    pub outside_ip_address_type: OutsideIpAddressType,
    /// Inside address family (spec §3.14). Default `ipv4`.
    #[serde(default)]
    pub tunnel_inside_ip_version: TunnelInsideIpVersion,
    /// Where the tunnels' pre-shared keys live. Default `Standard` (in this
    /// file). With `SecretsManager` the keys must not be in this file.
    #[serde(default)]
    pub pre_shared_key_storage: PreSharedKeyStorage,
    /// Accelerated connection (spec §9). Default false.
    #[serde(default)]
    pub enable_acceleration: bool,
    /// BGP settings (dynamic routing only). Absent: defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpOptions>,
    /// The two tunnels. Absent: two tunnels with default options.
    #[serde(default, deserialize_with = "exactly_two_tunnels")]
    pub tunnels: [TunnelOptions; 2],
}

impl VpnConnection {
    /// A connection with every option at its default.
    #[must_use]
    pub fn new(
        id: impl Into<String>,
        customer_gateway_id: impl Into<String>,
        target: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            customer_gateway_id: customer_gateway_id.into(),
            target: target.into(),
            routing: RoutingType::default(),
            static_routes: Vec::new(),
            local_ipv4_network_cidr: ANY_V4,
            remote_ipv4_network_cidr: ANY_V4,
            local_ipv6_network_cidr: ANY_V6,
            remote_ipv6_network_cidr: ANY_V6,
            outside_ip_address_type: OutsideIpAddressType::default(),
            tunnel_inside_ip_version: TunnelInsideIpVersion::default(),
            pre_shared_key_storage: PreSharedKeyStorage::default(),
            enable_acceleration: false,
            bgp: None,
            tunnels: Default::default(),
        }
    }

    /// The BGP settings in force (defaults when absent).
    #[must_use]
    pub fn bgp_options(&self) -> BgpOptions {
        self.bgp.clone().unwrap_or_default()
    }

    /// Check every rule that involves this connection alone (its own fields
    /// and both tunnels). Field paths are relative (`tunnels[0].…`).
    ///
    /// # Errors
    /// Every broken rule.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut out = Vec::new();
        self.validate_into(&mut Errors::new("", &mut out));
        finish(out)
    }

    pub(crate) fn validate_into(&self, errs: &mut Errors<'_>) {
        check_id(errs, "id", &self.id);
        for (i, t) in self.tunnels.iter().enumerate() {
            t.validate_into(&mut errs.nested(&format!("tunnels[{i}]")));
        }
        let [t0, t1] = &self.tunnels;
        let v6_inside = self.tunnel_inside_ip_version == TunnelInsideIpVersion::Ipv6;

        // Both tunnels alike in bandwidth (spec §4).
        if t0.tunnel_bandwidth != t1.tunnel_bandwidth {
            let other = errs.path("tunnels[0].tunnel_bandwidth");
            errs.conflict(
                "tunnels[1].tunnel_bandwidth",
                t1.tunnel_bandwidth,
                format!(
                    "{other} = {}: both tunnels of a connection use the same bandwidth",
                    t0.tunnel_bandwidth
                ),
            );
        }

        // The two tunnels are distinct endpoints (spec §2.2).
        if let (Some(a), Some(b)) = (t0.outside_ip_address, t1.outside_ip_address)
            && a == b
        {
            let first = errs.path("tunnels[0].outside_ip_address");
            errs.duplicate("tunnels[1].outside_ip_address", b, first);
        }
        for (i, t) in self.tunnels.iter().enumerate() {
            if let Some(a) = t.outside_ip_address {
                let want_v6 = self.outside_ip_address_type == OutsideIpAddressType::Ipv6;
                if a.is_ipv6() != want_v6 {
                    let other = errs.path("outside_ip_address_type");
                    errs.conflict(
                        &format!("tunnels[{i}].outside_ip_address"),
                        a,
                        format!(
                            "{other} = {}: the address must be {}",
                            self.outside_ip_address_type,
                            if want_v6 { "IPv6" } else { "IPv4" }
                        ),
                    );
                }
            }
            if !v6_inside && let Some(n) = t.inside_ipv6_cidr {
                let other = errs.path("tunnel_inside_ip_version");
                errs.conflict(
                    &format!("tunnels[{i}].inside_ipv6_cidr"),
                    n,
                    format!(
                        "{other} = ipv4: an inside IPv6 CIDR is for IPv6-inside connections only"
                    ),
                );
            }
            if self.pre_shared_key_storage == PreSharedKeyStorage::Standard
                && let Some(name) = &t.pre_shared_key_ref
            {
                let other = errs.path("pre_shared_key_storage");
                errs.conflict(
                    &format!("tunnels[{i}].pre_shared_key_ref"),
                    name,
                    format!("{other} = Standard keeps the key in this file; use SecretsManager to take it from the key store"),
                );
            }
            if self.pre_shared_key_storage == PreSharedKeyStorage::SecretsManager
                && t.pre_shared_key.is_some()
            {
                let other = errs.path("pre_shared_key_storage");
                errs.conflict(
                    &format!("tunnels[{i}].pre_shared_key"),
                    "<redacted>",
                    format!("{other} = SecretsManager: the key lives in the secret store, not in this file"),
                );
            }
        }
        if let (Some(a), Some(b)) = (t0.inside_ipv4_cidr, t1.inside_ipv4_cidr)
            && a == b
        {
            let first = errs.path("tunnels[0].inside_ipv4_cidr");
            errs.duplicate("tunnels[1].inside_ipv4_cidr", b, first);
        }
        if let (Some(a), Some(b)) = (t0.inside_ipv6_cidr, t1.inside_ipv6_cidr)
            && a == b
        {
            let first = errs.path("tunnels[0].inside_ipv6_cidr");
            errs.duplicate("tunnels[1].inside_ipv6_cidr", b, first);
        }

        // Traffic selectors (spec §3.4): written as network addresses, and
        // only the inside family's pair may differ from "any".
        for (f, net) in [
            (
                "local_ipv4_network_cidr",
                IpNet::V4(self.local_ipv4_network_cidr),
            ),
            (
                "remote_ipv4_network_cidr",
                IpNet::V4(self.remote_ipv4_network_cidr),
            ),
            (
                "local_ipv6_network_cidr",
                IpNet::V6(self.local_ipv6_network_cidr),
            ),
            (
                "remote_ipv6_network_cidr",
                IpNet::V6(self.remote_ipv6_network_cidr),
            ),
        ] {
            if net.addr() != net.network() {
                errs.invalid(
                    f,
                    net,
                    format!(
                        "host bits are set; write the network address {}",
                        net.trunc()
                    ),
                );
            }
            let is_any = net.prefix_len() == 0;
            if !is_any && net.addr().is_ipv6() != v6_inside {
                let other = errs.path("tunnel_inside_ip_version");
                errs.conflict(
                    f,
                    net,
                    format!(
                        "{other} = {}: only the {} network CIDRs apply",
                        self.tunnel_inside_ip_version,
                        if v6_inside { "IPv6" } else { "IPv4" }
                    ),
                );
            }
        }

        // Routing (spec §10).
        match self.routing {
            RoutingType::Static => {
                if let Some(_bgp) = &self.bgp {
                    let other = errs.path("routing");
                    errs.conflict(
                        "bgp",
                        "(set)",
                        format!("{other} = static: BGP settings need dynamic routing"),
                    );
                }
                if self.static_routes.len() > MAX_STATIC_ROUTES {
                    errs.out_of_range(
                        "static_routes",
                        format!("{} routes", self.static_routes.len()),
                        format!("at most {MAX_STATIC_ROUTES}"),
                    );
                }
            }
            RoutingType::Dynamic => {
                if !self.static_routes.is_empty() {
                    let other = errs.path("routing");
                    errs.conflict(
                        "static_routes",
                        format!("{} routes", self.static_routes.len()),
                        format!("{other} = dynamic: static routes cannot be combined with BGP (spec §10)"),
                    );
                }
                if let Some(bgp) = &self.bgp {
                    bgp.validate_into(&mut errs.nested("bgp"));
                }
            }
        }
        for (i, r) in self.static_routes.iter().enumerate() {
            let f = format!("static_routes[{i}]");
            if r.addr() != r.network() {
                errs.invalid(
                    &f,
                    r,
                    format!("host bits are set; write the network address {}", r.trunc()),
                );
            }
            if r.addr().is_ipv6() != v6_inside {
                let other = errs.path("tunnel_inside_ip_version");
                errs.conflict(
                    &f,
                    r,
                    format!(
                        "{other} = {}: a connection carries one family",
                        self.tunnel_inside_ip_version
                    ),
                );
            }
            if let Some(j) = self.static_routes[..i].iter().position(|s| s == r) {
                let first = errs.path(&format!("static_routes[{j}]"));
                errs.duplicate(&f, r, first);
            }
        }

        // Acceleration (spec §9, §4).
        if self.enable_acceleration {
            if t0.tunnel_bandwidth == TunnelBandwidth::Large {
                errs.conflict(
                    "enable_acceleration",
                    true,
                    "tunnel_bandwidth = large: large-bandwidth tunnels cannot be accelerated",
                );
            }
            if self.outside_ip_address_type == OutsideIpAddressType::PrivateIpv4 {
                errs.conflict(
                    "enable_acceleration",
                    true,
                    "outside_ip_address_type = PrivateIpv4: acceleration does not apply to private IP VPN",
                );
            }
            for (i, t) in self.tunnels.iter().enumerate() {
                // "IKE must be initiated from the customer gateway": we may
                // neither start nor restart IKE ourselves.
                if t.startup_action == StartupAction::Start {
                    errs.conflict(
                        &format!("tunnels[{i}].startup_action"),
                        t.startup_action,
                        "enable_acceleration = true: IKE must be initiated by the customer gateway (use add)",
                    );
                }
                if t.dpd_timeout_action == DpdTimeoutAction::Restart {
                    errs.conflict(
                        &format!("tunnels[{i}].dpd_timeout_action"),
                        t.dpd_timeout_action,
                        "enable_acceleration = true: IKE must be initiated by the customer gateway (use clear or none)",
                    );
                }
            }
        }
    }

    /// Apply a connection-options modification (spec §18.7) and return the
    /// new connection if its own rules hold. `self` is unchanged.
    ///
    /// # Errors
    /// Every rule the patched connection breaks.
    pub fn apply_options(
        &self,
        patch: VpnConnectionOptionsPatch,
    ) -> Result<Self, Vec<ConfigError>> {
        let next = self.patched_options(patch);
        next.validate()?;
        Ok(next)
    }

    pub(crate) fn patched_options(&self, patch: VpnConnectionOptionsPatch) -> Self {
        let mut n = self.clone();
        if let Some(v) = patch.local_ipv4_network_cidr {
            n.local_ipv4_network_cidr = v;
        }
        if let Some(v) = patch.remote_ipv4_network_cidr {
            n.remote_ipv4_network_cidr = v;
        }
        if let Some(v) = patch.local_ipv6_network_cidr {
            n.local_ipv6_network_cidr = v;
        }
        if let Some(v) = patch.remote_ipv6_network_cidr {
            n.remote_ipv6_network_cidr = v;
        }
        if let Some(b) = patch.tunnel_bandwidth {
            for t in &mut n.tunnels {
                t.tunnel_bandwidth = b;
            }
        }
        n
    }
}

/// A modification of connection options (spec §18.7,
/// modify-vpn-connection-options): traffic selectors and the bandwidth of
/// both tunnels. Each `Some` replaces the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpnConnectionOptionsPatch {
    /// New `local_ipv4_network_cidr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ipv4_network_cidr: Option<Ipv4Net>,
    /// New `remote_ipv4_network_cidr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ipv4_network_cidr: Option<Ipv4Net>,
    /// New `local_ipv6_network_cidr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ipv6_network_cidr: Option<Ipv6Net>,
    /// New `remote_ipv6_network_cidr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ipv6_network_cidr: Option<Ipv6Net>,
    /// New bandwidth class for both tunnels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_bandwidth: Option<TunnelBandwidth>,
}
