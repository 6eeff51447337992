//! The management API's Client VPN messages: the modification patch, the
//! endpoint as shown, and a connection as `show connections` reports it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::endpoint::{ClientVpnEndpoint, TransportProtocol};
use crate::config::{ApplianceConfig, ConfigError};

/// Fields of an endpoint modification; each present one replaces. An
/// empty text (`""`) clears an optional one (`description`,
/// `client_login_banner`, `crl_file`), and `max_connections = 0` returns
/// it to its default. `client_cidr` is accepted only unchanged: it is
/// immutable after creation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientVpnEndpointPatch {
    /// Immutable: only its current value is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cidr: Option<Ipv4Net>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Outside address clients connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_address: Option<IpAddr>,
    /// Server certificate chain file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate_file: Option<PathBuf>,
    /// Server key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_private_key_file: Option<PathBuf>,
    /// Client CA chain file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_chain_file: Option<PathBuf>,
    /// tls-crypt key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_crypt_key_file: Option<PathBuf>,
    /// CRL file (`""` removes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_file: Option<PathBuf>,
    /// `udp` or `tcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_protocol: Option<TransportProtocol>,
    /// 443 or 1194.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpn_port: Option<u16>,
    /// DNS servers (the whole list; `[]` removes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<Ipv4Addr>>,
    /// Split tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_tunnel: Option<bool>,
    /// 8, 10, 12 or 24.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_timeout_hours: Option<u32>,
    /// Banner (`""` removes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_login_banner: Option<String>,
    /// Most concurrent connections (0: the default, half the pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl ClientVpnEndpoint {
    /// This endpoint with `patch` applied (not validated).
    ///
    /// # Errors
    /// A `client_cidr` other than the current one (immutable).
    pub fn patched(&self, patch: ClientVpnEndpointPatch) -> Result<Self, Vec<ConfigError>> {
        let ClientVpnEndpointPatch {
            client_cidr,
            description,
            outside_address,
            server_certificate_file,
            server_private_key_file,
            client_ca_chain_file,
            tls_crypt_key_file,
            crl_file,
            transport_protocol,
            vpn_port,
            dns_servers,
            split_tunnel,
            session_timeout_hours,
            client_login_banner,
            max_connections,
        } = patch;
        if let Some(c) = client_cidr
            && c != self.client_cidr
        {
            return Err(vec![ConfigError::Conflict {
                field: format!("client_vpn_endpoints[{}].client_cidr", self.id),
                value: c.to_string(),
                allowed: format!(
                    "the client CIDR is immutable after creation (it is {}); create a new endpoint",
                    self.client_cidr
                ),
            }]);
        }
        let mut e = self.clone();
        if let Some(d) = description {
            e.description = non_empty(d);
        }
        if outside_address.is_some() {
            e.outside_address = outside_address;
        }
        if let Some(f) = server_certificate_file {
            e.server_certificate_file = f;
        }
        if let Some(f) = server_private_key_file {
            e.server_private_key_file = f;
        }
        if let Some(f) = client_ca_chain_file {
            e.client_ca_chain_file = f;
        }
        if let Some(f) = tls_crypt_key_file {
            e.tls_crypt_key_file = f;
        }
        if let Some(f) = crl_file {
            e.crl_file = (!f.as_os_str().is_empty()).then_some(f);
        }
        if let Some(t) = transport_protocol {
            e.transport_protocol = t;
        }
        if let Some(p) = vpn_port {
            e.vpn_port = p;
        }
        if let Some(d) = dns_servers {
            e.dns_servers = d;
        }
        if let Some(s) = split_tunnel {
            e.split_tunnel = s;
        }
        if let Some(h) = session_timeout_hours {
            e.session_timeout_hours = h;
        }
        if let Some(b) = client_login_banner {
            e.client_login_banner = non_empty(b);
        }
        if let Some(m) = max_connections {
            e.max_connections = (m != 0).then_some(m);
        }
        Ok(e)
    }
}

/// An endpoint as shown: the configuration plus what it implies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientVpnEndpointView {
    /// The endpoint as configured.
    #[serde(flatten)]
    pub endpoint: ClientVpnEndpoint,
    /// The address clients connect to (`outside_address` or its default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_outside_address: Option<IpAddr>,
    /// The endpoint's own tunnel address (the pool's first host).
    pub server_tunnel_address: Ipv4Addr,
    /// Client addresses in the pool.
    pub pool_addresses: u32,
    /// `max_connections` or its default.
    pub effective_max_connections: u32,
    /// Advice (e.g. a pool smaller than 2 × max connections).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl ClientVpnEndpointView {
    /// The view of `ep` in `config`.
    #[must_use]
    pub fn of(ep: &ClientVpnEndpoint, config: &ApplianceConfig) -> Self {
        Self {
            effective_outside_address: ep.effective_outside_address(config),
            server_tunnel_address: ep.server_tunnel_address(),
            pool_addresses: super::endpoint::pool_client_addresses(ep.client_cidr),
            effective_max_connections: ep.effective_max_connections(),
            warnings: ep.advisories(),
            endpoint: ep.clone(),
        }
    }
}

/// One client connection, as `show_client_vpn_connections` reports it
/// (published by the remote-access runtime).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientVpnConnection {
    /// The endpoint.
    pub endpoint_id: String,
    /// Connection id, e.g. `cvpn-connection-0a1b2c3d`.
    pub connection_id: String,
    /// The client certificate's common name.
    pub common_name: String,
    /// The address handed out from the client CIDR.
    pub client_address: Ipv4Addr,
    /// The client's public address and port.
    pub public_address: SocketAddr,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    /// When the connection was established, ms since the epoch.
    pub since_ms: u64,
}
