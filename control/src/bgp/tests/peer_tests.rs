//! Session settings from the configuration model.

use std::net::IpAddr;

use crate::bgp::peer::{PeerConfigError, adverts, ecmp_for, peer_config};
use crate::bgp::rib::Steering;
use crate::config::{
    BgpOptions, CustomerGateway, GatewayConfig, GatewayKind, RoutingType, TunnelInsideIpVersion,
    VpnConnection,
};

fn gateway(kind: GatewayKind) -> GatewayConfig {
    GatewayConfig {
        id: "tgw-1".into(),
        kind,
        asn: 64512,
        outside_addresses: vec!["192.0.2.1".parse().unwrap()],
        local_networks: vec![
            "10.2.0.0/16".parse().unwrap(),
            "2001:db8:2::/48".parse().unwrap(),
        ],
    }
}

fn cgw(asn: Option<u32>) -> CustomerGateway {
    CustomerGateway {
        id: "cgw-1".into(),
        ip_address: Some("198.51.100.7".parse().unwrap()),
        bgp_asn: asn,
        certificate: None,
        device_name: None,
    }
}

fn azure_connection() -> VpnConnection {
    let mut c = VpnConnection::new("vpn-1", "cgw-1", "tgw-1");
    c.tunnels[0].inside_ipv4_cidr = Some("169.254.21.0/30".parse().unwrap());
    c.tunnels[1].inside_ipv4_cidr = Some("169.254.22.0/30".parse().unwrap());
    c
}

#[test]
fn azure_tunnels_get_first_host_and_spec_defaults() {
    let c = azure_connection();
    let p = peer_config(
        &gateway(GatewayKind::TransitGateway),
        &cgw(Some(65000)),
        &c,
        1,
    )
    .unwrap();
    assert_eq!(p.local_addr, "169.254.22.1".parse::<IpAddr>().unwrap());
    assert_eq!(p.peer_addr, "169.254.22.2".parse::<IpAddr>().unwrap());
    assert_eq!((p.local_asn, p.peer_asn), (64512, 65000));
    assert_eq!(
        (p.hold_time_secs, p.keepalive_secs, p.graceful_restart_secs),
        (30, 10, 120)
    );
    assert_eq!((p.max_prefixes, p.max_advertised), (1000, 5000));
    assert_eq!(p.connected, vec!["169.254.22.0/30".parse().unwrap()]);
    assert!(p.ipv4 && !p.ipv6);
    let v = peer_config(
        &gateway(GatewayKind::VirtualPrivateGateway),
        &cgw(Some(65000)),
        &c,
        0,
    )
    .unwrap();
    assert_eq!((v.max_prefixes, v.max_advertised), (100, 1000));
    assert!(ecmp_for(GatewayKind::TransitGateway) && !ecmp_for(GatewayKind::VirtualPrivateGateway));
    // Only the connection's family is advertised, with its MED.
    let a = adverts(
        &gateway(GatewayKind::TransitGateway),
        &c,
        0,
        Steering::Equal,
    );
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].prefix, a[0].med),
        ("10.2.0.0/16".parse().unwrap(), Some(100))
    );
}

#[test]
fn ipv6_inside_runs_over_the_126() {
    let mut c = azure_connection();
    c.tunnel_inside_ip_version = TunnelInsideIpVersion::Ipv6;
    c.tunnels[0].inside_ipv6_cidr = Some("fd00:1::/126".parse().unwrap());
    c.bgp = Some(BgpOptions {
        hold_time_secs: 90,
        keepalive_secs: 30,
        max_prefixes: Some(10),
        ..BgpOptions::default()
    });
    let p = peer_config(
        &gateway(GatewayKind::Concentrator),
        &cgw(Some(65000)),
        &c,
        0,
    )
    .unwrap();
    assert_eq!(p.local_addr, "fd00:1::1".parse::<IpAddr>().unwrap());
    assert_eq!(p.peer_addr, "fd00:1::2".parse::<IpAddr>().unwrap());
    assert_eq!(
        p.router_id,
        "169.254.21.1".parse::<std::net::Ipv4Addr>().unwrap()
    );
    assert!(p.ipv6 && !p.ipv4);
    assert_eq!(
        (p.hold_time_secs, p.keepalive_secs, p.max_prefixes),
        (90, 30, 10)
    );
    let a = adverts(&gateway(GatewayKind::Concentrator), &c, 0, Steering::Equal);
    assert_eq!(a[0].prefix, "2001:db8:2::/48".parse().unwrap());
    // Tunnel 1 has no /126 yet.
    assert!(matches!(
        peer_config(
            &gateway(GatewayKind::Concentrator),
            &cgw(Some(65000)),
            &c,
            1
        ),
        Err(PeerConfigError::NoInsideCidr(_, 1, "IPv6"))
    ));
}

#[test]
fn no_session_cases() {
    let g = gateway(GatewayKind::TransitGateway);
    let mut c = azure_connection();
    assert!(matches!(
        peer_config(&g, &cgw(None), &c, 0),
        Err(PeerConfigError::NoPeerAsn(_))
    ));
    assert!(matches!(
        peer_config(&g, &cgw(Some(64512)), &c, 0),
        Err(PeerConfigError::SameAsn(_, 64512))
    ));
    assert!(matches!(
        peer_config(&g, &cgw(Some(65000)), &c, 2),
        Err(PeerConfigError::NoSuchTunnel(_, 2))
    ));
    c.routing = RoutingType::Static;
    assert!(matches!(
        peer_config(&g, &cgw(Some(65000)), &c, 0),
        Err(PeerConfigError::StaticRouting(_))
    ));
}
