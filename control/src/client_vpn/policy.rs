//! Pure decisions derived from an endpoint's configuration: may a client
//! reach a destination ([`authorize`]), which route carries it
//! ([`route_for`]), and what the endpoint pushes to every client
//! ([`push_options`]).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::endpoint::{Access, AuthorizationRule, ClientVpnEndpoint, ClientVpnRoute};
use crate::openvpn::push::PushConfig;

/// Whether a client may reach `dst`: the rule with the longest destination
/// prefix that contains `dst` decides (most specific match wins); no rule
/// containing it means no access. Rules apply to every user (certificate
/// authentication has no groups).
#[must_use]
pub fn authorize(rules: &[AuthorizationRule], dst: Ipv4Addr) -> bool {
    rules
        .iter()
        .filter(|r| r.destination.contains(&dst))
        .max_by_key(|r| r.destination.prefix_len())
        .is_some_and(|r| r.access == Access::Allow)
}

/// The route that carries traffic to `dst`: the longest prefix match.
#[must_use]
pub fn route_for(routes: &[ClientVpnRoute], dst: Ipv4Addr) -> Option<&ClientVpnRoute> {
    routes
        .iter()
        .filter(|r| r.destination.contains(&dst))
        .max_by_key(|r| r.destination.prefix_len())
}

/// What the endpoint pushes to every client besides its address, peer id
/// and cipher (which are per connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOptions {
    /// Full tunnel: `redirect-gateway def1` (0.0.0.0/0 as 0.0.0.0/1 +
    /// 128.0.0.0/1, so the client's own default route stays for the
    /// tunnel's outer packets).
    pub redirect_gateway: bool,
    /// Split tunnel: the route table's destinations (`route`), without
    /// those inside the client CIDR (the client reaches its own subnet
    /// through `topology subnet` already).
    pub routes: Vec<Ipv4Net>,
    /// `dhcp-option DNS`.
    pub dns: Vec<Ipv4Addr>,
}

/// The push option set `ep` implies: full tunnel pushes 0.0.0.0/0 by
/// `redirect-gateway`, split tunnel pushes the route table; DNS servers
/// either way.
#[must_use]
pub fn push_options(ep: &ClientVpnEndpoint) -> PushOptions {
    let routes = if ep.split_tunnel {
        let mut v: Vec<Ipv4Net> = Vec::new();
        for r in &ep.routes {
            let d = r.destination.trunc();
            if !ep.client_cidr.contains(&d) && !v.contains(&d) {
                v.push(d);
            }
        }
        v
    } else {
        Vec::new()
    };
    PushOptions {
        redirect_gateway: !ep.split_tunnel,
        routes,
        dns: ep.dns_servers.clone(),
    }
}

impl PushOptions {
    /// The engine's [`PushConfig`] for `ep`: its pool and these options,
    /// the engine's defaults for keepalive and ciphers.
    #[must_use]
    pub fn push_config(ep: &ClientVpnEndpoint) -> PushConfig {
        let o = push_options(ep);
        PushConfig {
            pool: ep.client_cidr,
            routes: o.routes,
            redirect_gateway: o.redirect_gateway,
            dns: o.dns,
            ..PushConfig::default()
        }
    }
}
