//! From the configuration model to a [`PeerConfig`]: one eBGP session per
//! tunnel of a dynamic-routing connection (spec §25.4, interop §6.4).
//!
//! The appliance takes the first usable address of the tunnel's inside /30
//! (and /126), the customer gateway the second; the session runs over the
//! IPv4 pair on IPv4-inside connections and over the IPv6 pair on
//! IPv6-inside ones (a connection carries one family, spec §10.4). Timers,
//! MED and limits come from the connection's [`BgpOptions`] and the gateway
//! kind.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use super::rib::{Steering, connection_adverts};
use super::session::{Advert, PeerConfig};
use crate::config::inside::{inside_ipv4_hosts, inside_ipv6_hosts};
use crate::config::{
    BgpOptions, CustomerGateway, GatewayConfig, GatewayKind, RoutingType, TunnelInsideIpVersion,
    VpnConnection,
};

/// Why a tunnel has no BGP session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerConfigError {
    /// The connection uses static routing.
    #[error("connection {0} uses static routing: no BGP session")]
    StaticRouting(String),
    /// The customer gateway has no BGP ASN.
    #[error("customer gateway {0} has no BGP ASN")]
    NoPeerAsn(String),
    /// Local and peer ASN are equal (the seeds require them to differ).
    #[error("connection {0}: local ASN {1} equals the customer gateway's")]
    SameAsn(String, u32),
    /// The tunnel index is not 0 or 1.
    #[error("connection {0} has no tunnel {1}")]
    NoSuchTunnel(String, usize),
    /// The inside CIDR the session needs is not assigned yet.
    #[error("connection {0} tunnel {1}: inside {2} CIDR not assigned")]
    NoInsideCidr(String, usize, &'static str),
}

/// Whether the gateway kind spreads equal BGP routes over tunnels (ECMP,
/// transit-gateway-like) or picks one preferred tunnel (VGW-like, §10.2).
#[must_use]
pub fn ecmp_for(kind: GatewayKind) -> bool {
    !matches!(kind, GatewayKind::VirtualPrivateGateway)
}

/// The session settings of tunnel `index` of `conn`.
///
/// # Errors
/// [`PeerConfigError`] when the tunnel has no BGP session or is not fully
/// configured.
pub fn peer_config(
    gateway: &GatewayConfig,
    cgw: &CustomerGateway,
    conn: &VpnConnection,
    index: usize,
) -> Result<PeerConfig, PeerConfigError> {
    if conn.routing == RoutingType::Static {
        return Err(PeerConfigError::StaticRouting(conn.id.clone()));
    }
    let peer_asn = cgw
        .bgp_asn
        .ok_or_else(|| PeerConfigError::NoPeerAsn(cgw.id.clone()))?;
    if peer_asn == gateway.asn {
        return Err(PeerConfigError::SameAsn(conn.id.clone(), peer_asn));
    }
    let t = conn
        .tunnels
        .get(index)
        .ok_or_else(|| PeerConfigError::NoSuchTunnel(conn.id.clone(), index))?;
    let v6_inside = conn.tunnel_inside_ip_version == TunnelInsideIpVersion::Ipv6;
    let v4 = t.inside_ipv4_cidr.map(|n| (n, inside_ipv4_hosts(n)));
    let v6 = t.inside_ipv6_cidr.map(|n| (n, inside_ipv6_hosts(n)));
    let (local, peer) = if v6_inside {
        let (_, (l, p)) =
            v6.ok_or_else(|| PeerConfigError::NoInsideCidr(conn.id.clone(), index, "IPv6"))?;
        (IpAddr::V6(l), IpAddr::V6(p))
    } else {
        let (_, (l, p)) =
            v4.ok_or_else(|| PeerConfigError::NoInsideCidr(conn.id.clone(), index, "IPv4"))?;
        (IpAddr::V4(l), IpAddr::V4(p))
    };
    let opts: BgpOptions = conn.bgp_options();
    let mut cfg = PeerConfig::new(gateway.asn, peer_asn, local, peer);
    // The router id is an IPv4 address: the tunnel's IPv4 inside address
    // when there is one, otherwise 169.254.0.1 (RFC 6286 only needs it to
    // differ from the peer's on an eBGP session).
    cfg.router_id = v4.map_or(Ipv4Addr::new(169, 254, 0, 1), |(_, (l, _))| l);
    cfg.connected = v4
        .map(|(n, _)| IpNet::V4(n))
        .into_iter()
        .chain(v6.map(|(n, _)| IpNet::V6(n)))
        .collect();
    cfg.local_addr_v6 = v6.map(|(_, (l, _))| l);
    cfg.ipv4 = !v6_inside;
    cfg.ipv6 = v6_inside;
    cfg.hold_time_secs = u16::try_from(opts.hold_time_secs).unwrap_or(u16::MAX);
    cfg.keepalive_secs = u16::try_from(opts.keepalive_secs).unwrap_or(u16::MAX);
    cfg.graceful_restart_secs =
        u16::try_from(opts.graceful_restart_time_secs.min(4095)).unwrap_or(4095);
    cfg.max_prefixes = opts.effective_max_prefixes(gateway.kind);
    cfg.max_advertised = opts.effective_max_advertised_prefixes(gateway.kind);
    Ok(cfg)
}

/// What tunnel `index` of `conn` advertises: the gateway's local networks
/// of the connection's inside family, with the connection's MED, steered by
/// `steering`.
#[must_use]
pub fn adverts(
    gateway: &GatewayConfig,
    conn: &VpnConnection,
    index: usize,
    steering: Steering,
) -> Vec<Advert> {
    let v6_inside = conn.tunnel_inside_ip_version == TunnelInsideIpVersion::Ipv6;
    let nets: Vec<IpNet> = gateway
        .local_networks
        .iter()
        .filter(|n| matches!(n, IpNet::V6(_)) == v6_inside)
        .copied()
        .collect();
    connection_adverts(&nets, conn.bgp_options().med, steering, index)
}
