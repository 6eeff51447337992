//! Remote access ("Client VPN"): the endpoint's configuration, the pure
//! policy it implies, and the `.ovpn` file clients import.
//!
//! Layer: configuration and policy, like [`crate::config`]; the protocol
//! engine is [`crate::openvpn`]. Nothing here reads the clock or touches a
//! socket; [`files`] is the one part that reads files (the endpoint's
//! certificates, key, CRL and tls-crypt key), and only when asked.
//!
//! ```text
//!   ApplianceConfig.client_vpn_endpoints ──► endpoint::validate_endpoints (pure, field paths)
//!        │                                   files::check_files (reads and checks the files)
//!        ├─► policy::authorize(rules, dst)   most specific rule wins
//!        ├─► policy::route_for(routes, dst)  longest prefix: vpc | local | connection
//!        ├─► policy::push_options(ep)        full tunnel: redirect-gateway; split: routes; DNS
//!        └─► ovpn::render(ep, addr, files)   the .ovpn a stock OpenVPN 2.6 client loads
//! ```
//!
//! What it guarantees: `validate()` (through [`crate::config::ApplianceConfig::validate`]
//! and [`crate::config::ApplianceConfig::validate_put_client_vpn_endpoint`])
//! returns every broken rule with its field path
//! (`client_vpn_endpoints[cvpn-1].routes[2].target`):
//!
//! * client CIDR /22 … /12, no host bits, immutable after creation
//!   ([`ClientVpnEndpoint::patched`]), not overlapping the gateway's
//!   local networks, another endpoint's pool or the endpoint's own routes
//!   (other than `local` ones, which lie within it); a pool smaller than
//!   2 × max connections is an advisory ([`ClientVpnEndpoint::advisories`]);
//! * transport `udp` | `tcp`, port 443 | 1194, at most one endpoint per
//!   (outside address, transport, port);
//! * at most 2 DNS servers, session timeout 8 | 10 | 12 | 24 h (default
//!   24), banner at most 1,400 characters;
//! * at most 200 authorization rules and 100 routes, destinations unique;
//!   a route's target is `vpc`, `local` or an existing connection (which
//!   then cannot be deleted);
//! * the files ([`files::check_files`]): certificate and key parse and
//!   match, the CA file holds CA certificates the server certificate
//!   chains to, the server certificate has a common name and `serverAuth`,
//!   the CRL parses, has at most 20,000 entries and comes from one of the
//!   CAs, the tls-crypt key is an OpenVPN static key.
//!
//! Choices on points the requirements leave open:
//!
//! * Authorization rules may also `deny` (an exception inside a shorter
//!   `allow`); the cloud service only has allow rules. No matching rule
//!   means no access.
//! * An endpoint created without routes gets one `vpc` route per IPv4
//!   local network of the gateway (what the cloud service adds when a
//!   subnet is associated).
//! * `max_connections` defaults to half the pool's client addresses.
//! * Destinations are IPv4 (clients get IPv4 addresses from the pool).

pub mod api;
pub mod endpoint;
pub mod files;
pub mod ovpn;
pub mod policy;

#[cfg(test)]
pub(crate) mod tests;

pub use api::{ClientVpnConnection, ClientVpnEndpointPatch, ClientVpnEndpointView};
pub(crate) use endpoint::validate_endpoints;
pub use endpoint::{
    Access, AuthorizationRule, ClientVpnEndpoint, ClientVpnRoute, RouteTarget, TransportProtocol,
};
pub use files::{EndpointMaterial, check_files};
pub use policy::{PushOptions, authorize, push_options, route_for};
