//! The Client VPN endpoint as configured: its fields with the spec's
//! ranges and defaults, and the rules that tie it to the rest of the
//! configuration (local networks, connections, other endpoints).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::config::{ApplianceConfig, ConfigError, Errors, check_id, finish};

/// Shortest client CIDR prefix (largest pool): /12.
pub const CLIENT_CIDR_MIN_PREFIX: u8 = 12;
/// Longest client CIDR prefix (smallest pool): /22.
pub const CLIENT_CIDR_MAX_PREFIX: u8 = 22;
/// Most DNS servers per endpoint.
pub const MAX_DNS_SERVERS: usize = 2;
/// Most authorization rules per endpoint.
pub const MAX_AUTHORIZATION_RULES: usize = 200;
/// Most routes per endpoint.
pub const MAX_ROUTES: usize = 100;
/// Most entries of the certificate revocation list.
pub const MAX_CRL_ENTRIES: usize = 20_000;
/// Longest client login banner, in characters (Unicode scalar values).
pub const MAX_BANNER_CHARS: usize = 1_400;
/// The VPN ports an endpoint may listen on.
pub const VPN_PORTS: [u16; 2] = [443, 1194];
/// The session timeouts allowed, hours.
pub const SESSION_TIMEOUT_HOURS: [u32; 4] = [8, 10, 12, 24];
/// Default session timeout, hours.
pub const DEFAULT_SESSION_TIMEOUT_HOURS: u32 = 24;
/// Most concurrent connections one endpoint accepts (the pool of a /12
/// holds about a million addresses; the runtime's peer-id space is 24
/// bits).
pub const MAX_CONNECTIONS_LIMIT: u32 = 500_000;

/// The transport the endpoint listens on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportProtocol {
    /// UDP (default): the data channel runs in the DPDK workers.
    #[default]
    Udp,
    /// TCP (2-byte length framing).
    Tcp,
}

impl TransportProtocol {
    /// The value as written in the configuration and in an `.ovpn` file's
    /// `proto`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

impl std::fmt::Display for TransportProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an authorization rule does with the destinations it covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Clients may reach the destination (the cloud service's only kind).
    #[default]
    Allow,
    /// Clients may not: an exception carved out of a shorter `allow` rule
    /// (most specific match wins). An extension of ours.
    Deny,
}

/// One authorization rule: a destination network and whether clients may
/// reach it. With certificate authentication a rule applies to every user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationRule {
    /// The destination network.
    pub destination: Ipv4Net,
    /// Allow (default) or deny.
    #[serde(default, skip_serializing_if = "is_allow")]
    pub access: Access,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if signature"
)]
fn is_allow(a: &Access) -> bool {
    *a == Access::Allow
}

/// Where a route of the endpoint sends client traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteTarget {
    /// Out of the inside (VPC) port: `vpc`.
    Vpc,
    /// To the other clients of this endpoint (client-to-client): `local`.
    /// Its destination lies within the client CIDR.
    Local,
    /// Into a site-to-site VPN connection, by its id.
    Connection(String),
}

impl RouteTarget {
    /// As written in the configuration.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Vpc => "vpc",
            Self::Local => "local",
            Self::Connection(id) => id,
        }
    }
}

impl std::fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RouteTarget {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "vpc" => Self::Vpc,
            "local" => Self::Local,
            id => Self::Connection(id.to_owned()),
        })
    }
}

impl Serialize for RouteTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RouteTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(s.parse().unwrap_or(Self::Vpc))
    }
}

/// One route of the endpoint's route table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientVpnRoute {
    /// The destination network.
    pub destination: Ipv4Net,
    /// `vpc`, `local` or a connection id.
    pub target: RouteTarget,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One Client VPN endpoint (`[[client_vpn_endpoints]]`).
///
/// ```toml
/// [[client_vpn_endpoints]]
/// id = "cvpn-1"
/// client_cidr = "192.168.100.0/22"          # /22 ... /12, immutable
/// server_certificate_file = "/etc/vpn/cvpn/server-chain.pem"
/// server_private_key_file = "/etc/vpn/cvpn/server.key"
/// client_ca_chain_file = "/etc/vpn/cvpn/client-ca.pem"
/// tls_crypt_key_file = "/etc/vpn/cvpn/tls-crypt.key"   # openvpn --genkey tls-crypt
/// # crl_file = "/etc/vpn/cvpn/crl.pem"
/// transport_protocol = "udp"                # udp | tcp
/// vpn_port = 443                            # 443 | 1194
/// dns_servers = ["10.0.0.2"]
/// split_tunnel = true
/// session_timeout_hours = 24                # 8 | 10 | 12 | 24
/// max_connections = 500
/// [[client_vpn_endpoints.authorization_rules]]
/// destination = "10.0.0.0/16"
/// [[client_vpn_endpoints.routes]]
/// destination = "10.0.0.0/16"
/// target = "vpc"                            # vpc | local | <connection id>
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientVpnEndpoint {
    /// Identifier, `[A-Za-z0-9-]`, 1–64 characters.
    pub id: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The pool client addresses come from: /22 … /12, immutable after
    /// creation. The endpoint takes its first host address.
    pub client_cidr: Ipv4Net,
    /// The outside address clients connect to: one of
    /// `gateway.outside_addresses`. Absent: the gateway's first IPv4
    /// outside address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_address: Option<IpAddr>,
    /// The server certificate (PEM, end entity first, then
    /// intermediates). Its common name is what clients verify
    /// (`verify-x509-name`); it needs the `serverAuth` extended key usage
    /// (`remote-cert-tls server`).
    pub server_certificate_file: PathBuf,
    /// Its private key (PEM: PKCS#8, SEC1 or PKCS#1). Never echoed.
    pub server_private_key_file: PathBuf,
    /// The CA certificate(s) client certificates must chain to (PEM);
    /// also the `<ca>` clients verify the server with, so the server
    /// certificate must chain to it too.
    pub client_ca_chain_file: PathBuf,
    /// The `tls-crypt` static key (OpenVPN key file format, 2048 bits).
    pub tls_crypt_key_file: PathBuf,
    /// Certificate revocation list (PEM or DER), at most 20,000 entries,
    /// issued by a CA of `client_ca_chain_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_file: Option<PathBuf>,
    /// `udp` (default) or `tcp`.
    #[serde(default)]
    pub transport_protocol: TransportProtocol,
    /// 443 (default) or 1194.
    #[serde(default = "default_port")]
    pub vpn_port: u16,
    /// Up to two DNS servers pushed to clients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<Ipv4Addr>,
    /// Split tunnel: push the route table instead of 0.0.0.0/0. Default
    /// off (full tunnel).
    #[serde(default)]
    pub split_tunnel: bool,
    /// Session timeout: 8, 10, 12 or 24 (default) hours.
    #[serde(default = "default_timeout")]
    pub session_timeout_hours: u32,
    /// Text shown to clients when they connect, at most 1,400 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_login_banner: Option<String>,
    /// Most concurrent connections. Absent: half the pool (the
    /// recommended 2 × headroom).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Authorization rules, at most 200.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_rules: Vec<AuthorizationRule>,
    /// Routes, at most 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<ClientVpnRoute>,
}

fn default_port() -> u16 {
    443
}
fn default_timeout() -> u32 {
    DEFAULT_SESSION_TIMEOUT_HOURS
}

/// Client addresses a pool holds: all but the network address, the
/// broadcast address and the endpoint's own (first host).
#[must_use]
pub fn pool_client_addresses(cidr: Ipv4Net) -> u32 {
    let size = 1u64 << (32 - u32::from(cidr.prefix_len()));
    u32::try_from(size.saturating_sub(3)).unwrap_or(u32::MAX)
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl ClientVpnEndpoint {
    /// An endpoint with the defaults and no rules or routes.
    #[must_use]
    pub fn new(
        id: impl Into<String>,
        client_cidr: Ipv4Net,
        server_certificate_file: PathBuf,
        server_private_key_file: PathBuf,
        client_ca_chain_file: PathBuf,
        tls_crypt_key_file: PathBuf,
    ) -> Self {
        Self {
            id: id.into(),
            description: None,
            client_cidr,
            outside_address: None,
            server_certificate_file,
            server_private_key_file,
            client_ca_chain_file,
            tls_crypt_key_file,
            crl_file: None,
            transport_protocol: TransportProtocol::Udp,
            vpn_port: default_port(),
            dns_servers: Vec::new(),
            split_tunnel: false,
            session_timeout_hours: DEFAULT_SESSION_TIMEOUT_HOURS,
            client_login_banner: None,
            max_connections: None,
            authorization_rules: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// `max_connections`, or its default: half the pool's client
    /// addresses.
    #[must_use]
    pub fn effective_max_connections(&self) -> u32 {
        self.max_connections
            .unwrap_or_else(|| pool_client_addresses(self.client_cidr) / 2)
    }

    /// The outside address clients connect to: `outside_address`, or the
    /// gateway's first IPv4 outside address (then its first at all).
    #[must_use]
    pub fn effective_outside_address(&self, config: &ApplianceConfig) -> Option<IpAddr> {
        self.outside_address.or_else(|| {
            let o = &config.gateway.outside_addresses;
            o.iter()
                .find(|a| a.is_ipv4())
                .or_else(|| o.first())
                .copied()
        })
    }

    /// The endpoint's own tunnel address: the pool's first host.
    #[must_use]
    pub fn server_tunnel_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.client_cidr.network()).wrapping_add(1))
    }

    /// Advice that is not an error: a pool smaller than twice the
    /// concurrent connections (the recommended size).
    #[must_use]
    pub fn advisories(&self) -> Vec<String> {
        let mut out = Vec::new();
        let pool = pool_client_addresses(self.client_cidr);
        let max = self.effective_max_connections();
        if u64::from(pool) < 2 * u64::from(max) {
            out.push(format!(
                "client_vpn_endpoints[{}].client_cidr: {} holds {pool} client addresses, fewer than \
                 2 × max_connections ({max}) = {}: the recommended size; a client CIDR cannot be \
                 changed after creation",
                self.id,
                self.client_cidr,
                2 * u64::from(max)
            ));
        }
        out
    }

    /// The endpoint's own rules (ranges, counts, uniqueness within it),
    /// under `errs`' prefix.
    pub(crate) fn validate_own(&self, errs: &mut Errors<'_>) {
        check_id(errs, "id", &self.id);
        check_text(errs, "description", self.description.as_deref(), 255);
        let p = self.client_cidr.prefix_len();
        if !(CLIENT_CIDR_MIN_PREFIX..=CLIENT_CIDR_MAX_PREFIX).contains(&p) {
            errs.out_of_range(
                "client_cidr",
                self.client_cidr,
                format!(
                    "a prefix length of /{CLIENT_CIDR_MIN_PREFIX} ... /{CLIENT_CIDR_MAX_PREFIX}"
                ),
            );
        }
        if self.client_cidr.trunc() != self.client_cidr {
            errs.invalid(
                "client_cidr",
                self.client_cidr,
                format!("host bits set; the network is {}", self.client_cidr.trunc()),
            );
        }
        for (field, path) in [
            (
                "server_certificate_file",
                Some(&self.server_certificate_file),
            ),
            (
                "server_private_key_file",
                Some(&self.server_private_key_file),
            ),
            ("client_ca_chain_file", Some(&self.client_ca_chain_file)),
            ("tls_crypt_key_file", Some(&self.tls_crypt_key_file)),
            ("crl_file", self.crl_file.as_ref()),
        ] {
            if let Some(path) = path
                && !path.is_absolute()
            {
                errs.invalid(field, path.display(), "must be an absolute path");
            }
        }
        if !VPN_PORTS.contains(&self.vpn_port) {
            errs.not_allowed("vpn_port", self.vpn_port, "443, 1194");
        }
        if self.dns_servers.len() > MAX_DNS_SERVERS {
            errs.out_of_range(
                "dns_servers",
                format!("{} servers", self.dns_servers.len()),
                format!("at most {MAX_DNS_SERVERS}"),
            );
        }
        for (i, d) in self.dns_servers.iter().enumerate() {
            if d.is_unspecified() || d.is_broadcast() || d.is_multicast() {
                errs.invalid(&format!("dns_servers[{i}]"), d, "a unicast IPv4 address");
            }
        }
        if !SESSION_TIMEOUT_HOURS.contains(&self.session_timeout_hours) {
            errs.not_allowed(
                "session_timeout_hours",
                self.session_timeout_hours,
                "8, 10, 12, 24",
            );
        }
        if let Some(b) = &self.client_login_banner {
            let n = b.chars().count();
            if n > MAX_BANNER_CHARS {
                errs.out_of_range(
                    "client_login_banner",
                    format!("{n} characters"),
                    format!("at most {MAX_BANNER_CHARS} characters"),
                );
            }
            if b.chars().any(|c| c.is_control() && c != '\n') {
                errs.invalid(
                    "client_login_banner",
                    format!("{:?}", b.chars().take(40).collect::<String>()),
                    "no control characters other than line breaks",
                );
            }
        }
        if let Some(m) = self.max_connections
            && !(1..=MAX_CONNECTIONS_LIMIT).contains(&m)
        {
            errs.out_of_range("max_connections", m, format!("1..={MAX_CONNECTIONS_LIMIT}"));
        }
        if let Some(m) = self.max_connections {
            let pool = pool_client_addresses(self.client_cidr);
            if m > pool {
                errs.conflict(
                    "max_connections",
                    m,
                    format!(
                        "client_cidr {} holds only {pool} client addresses",
                        self.client_cidr
                    ),
                );
            }
        }
        self.validate_rules(errs);
        self.validate_routes(errs);
    }

    fn validate_rules(&self, errs: &mut Errors<'_>) {
        if self.authorization_rules.len() > MAX_AUTHORIZATION_RULES {
            errs.out_of_range(
                "authorization_rules",
                format!("{} rules", self.authorization_rules.len()),
                format!("at most {MAX_AUTHORIZATION_RULES}"),
            );
        }
        for (i, r) in self.authorization_rules.iter().enumerate() {
            let f = format!("authorization_rules[{i}]");
            if r.destination.trunc() != r.destination {
                errs.invalid(
                    &format!("{f}.destination"),
                    r.destination,
                    format!("host bits set; the network is {}", r.destination.trunc()),
                );
            }
            check_text(
                errs,
                &format!("{f}.description"),
                r.description.as_deref(),
                255,
            );
            if let Some(j) = self.authorization_rules[..i]
                .iter()
                .position(|o| o.destination.trunc() == r.destination.trunc())
            {
                errs.duplicate(
                    &format!("{f}.destination"),
                    r.destination,
                    errs.path(&format!("authorization_rules[{j}].destination")),
                );
            }
        }
    }

    fn validate_routes(&self, errs: &mut Errors<'_>) {
        if self.routes.len() > MAX_ROUTES {
            errs.out_of_range(
                "routes",
                format!("{} routes", self.routes.len()),
                format!("at most {MAX_ROUTES}"),
            );
        }
        for (i, r) in self.routes.iter().enumerate() {
            let f = format!("routes[{i}]");
            if r.destination.trunc() != r.destination {
                errs.invalid(
                    &format!("{f}.destination"),
                    r.destination,
                    format!("host bits set; the network is {}", r.destination.trunc()),
                );
            }
            check_text(
                errs,
                &format!("{f}.description"),
                r.description.as_deref(),
                255,
            );
            if let RouteTarget::Connection(id) = &r.target {
                check_id(errs, &format!("{f}.target"), id);
            }
            let in_pool = self.client_cidr.contains(&r.destination);
            match (&r.target, in_pool) {
                (RouteTarget::Local, false) => errs.conflict(
                    &format!("{f}.destination"),
                    r.destination,
                    format!(
                        "target local (client-to-client) needs a destination within client_cidr {}",
                        self.client_cidr
                    ),
                ),
                (RouteTarget::Vpc | RouteTarget::Connection(_), _)
                    if overlaps(r.destination, self.client_cidr) =>
                {
                    errs.conflict(
                        &format!("{f}.destination"),
                        r.destination,
                        format!(
                            "client_cidr {} (the client CIDR must not overlap the endpoint's routes; \
                             client-to-client routes have target local)",
                            self.client_cidr
                        ),
                    );
                }
                _ => {}
            }
            if let Some(j) = self.routes[..i]
                .iter()
                .position(|o| o.destination.trunc() == r.destination.trunc())
            {
                errs.duplicate(
                    &format!("{f}.destination"),
                    r.destination,
                    errs.path(&format!("routes[{j}].destination")),
                );
            }
        }
    }

    /// The rules between this endpoint and the rest of `config` (which is
    /// assumed valid, and may or may not hold this endpoint): outside
    /// address, local networks, referenced connections, other endpoints.
    pub(crate) fn validate_against(&self, config: &ApplianceConfig, errs: &mut Errors<'_>) {
        match self.outside_address {
            Some(a) if !config.gateway.outside_addresses.contains(&a) => {
                errs.unknown_reference("outside_address", a, "one of gateway.outside_addresses")
            }
            None if config.gateway.outside_addresses.is_empty() => errs.missing(
                "outside_address",
                "the gateway has no outside address for clients to connect to",
            ),
            _ => {}
        }
        for (j, n) in config.gateway.local_networks.iter().enumerate() {
            if let ipnet::IpNet::V4(n) = n
                && overlaps(*n, self.client_cidr)
            {
                errs.conflict(
                    "client_cidr",
                    self.client_cidr,
                    format!(
                        "gateway.local_networks[{j}] = {n}: the client CIDR must not overlap the local (VPC) networks"
                    ),
                );
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            if let RouteTarget::Connection(id) = &r.target
                && !config.connections.iter().any(|c| c.id == *id)
            {
                errs.unknown_reference(
                    &format!("routes[{i}].target"),
                    id,
                    "vpc, local, or the id of a VPN connection",
                );
            }
        }
        for other in &config.client_vpn_endpoints {
            if other.id == self.id {
                continue;
            }
            if overlaps(other.client_cidr, self.client_cidr) {
                errs.conflict(
                    "client_cidr",
                    self.client_cidr,
                    format!(
                        "client_vpn_endpoints[{}].client_cidr = {}: client CIDRs must not overlap",
                        other.id, other.client_cidr
                    ),
                );
            }
            let listen = |e: &Self| {
                (
                    e.effective_outside_address(config),
                    e.transport_protocol,
                    e.vpn_port,
                )
            };
            if listen(other) == listen(self) {
                errs.duplicate(
                    "vpn_port",
                    format!("{}/{}", self.vpn_port, self.transport_protocol),
                    format!(
                        "client_vpn_endpoints[{}] on the same outside address",
                        other.id
                    ),
                );
            }
        }
    }
}

fn check_text(errs: &mut Errors<'_>, field: &str, text: Option<&str>, max: usize) {
    if let Some(t) = text
        && (t.is_empty() || t.chars().count() > max || t.chars().any(char::is_control))
    {
        errs.invalid(
            field,
            format!("{t:?}"),
            format!("1..={max} characters, no control characters"),
        );
    }
}

/// Every endpoint of `config`: its own rules, those against the rest of
/// the configuration, and unique ids. Part of
/// [`ApplianceConfig::validate`].
pub(crate) fn validate_endpoints(config: &ApplianceConfig, errs: &mut Errors<'_>) {
    for (i, ep) in config.client_vpn_endpoints.iter().enumerate() {
        let label = if ep.id.is_empty() {
            i.to_string()
        } else {
            ep.id.clone()
        };
        let mut e = errs.nested(&format!("client_vpn_endpoints[{label}]"));
        ep.validate_own(&mut e);
        ep.validate_against(config, &mut e);
        if config.client_vpn_endpoints[..i]
            .iter()
            .any(|o| o.id == ep.id)
        {
            e.duplicate("id", &ep.id, "another client VPN endpoint (ids are unique)");
        }
    }
}

impl ApplianceConfig {
    /// Check that `self` with `ep` added (its id is not configured) or
    /// replacing the endpoint with its id still validates, given that
    /// `self` validates. Does not read the endpoint's files (see
    /// [`super::files::check_files`]).
    ///
    /// # Errors
    /// Every broken rule, with field paths under
    /// `client_vpn_endpoints[<id>]`.
    pub fn validate_put_client_vpn_endpoint(
        &self,
        ep: &ClientVpnEndpoint,
    ) -> Result<(), Vec<ConfigError>> {
        let mut out = Vec::new();
        let mut errs = Errors::new(format!("client_vpn_endpoints[{}]", ep.id), &mut out);
        ep.validate_own(&mut errs);
        ep.validate_against(self, &mut errs);
        finish(out)
    }

    /// The client VPN endpoints whose routes send traffic into connection
    /// `id` (a connection they name cannot be deleted).
    #[must_use]
    pub fn client_vpn_users_of(&self, connection_id: &str) -> Vec<&str> {
        self.client_vpn_endpoints
            .iter()
            .filter(|e| {
                e.routes
                    .iter()
                    .any(|r| r.target == RouteTarget::Connection(connection_id.to_owned()))
            })
            .map(|e| e.id.as_str())
            .collect()
    }
}
