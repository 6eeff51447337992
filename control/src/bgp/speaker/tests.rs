//! The speaker's pure parts: sessions from the configuration, log records.

use super::*;
use crate::bgp::wire::{AsPath, Origin};
use crate::bgp::{PeerRoute, RouteLog};

fn config(routing: &str) -> ApplianceConfig {
    ApplianceConfig::from_toml_str(&format!(
        r#"
[gateway]
id = "tgw-s"
asn = 64512
outside_addresses = ["192.0.2.1", "192.0.2.3"]
local_networks = ["198.51.100.0/24", "2001:db8:5::/48"]

[dataplane]
worker_lcores = [1]
ports = []

[[customer_gateways]]
id = "cgw-s"
ip_address = "192.0.2.2"
bgp_asn = 65001

[[connections]]
id = "vpn-s"
customer_gateway_id = "cgw-s"
target = "tgw-s"
routing = "{routing}"

[connections.bgp]
max_prefixes = 7

[[connections.tunnels]]
outside_ip_address = "192.0.2.1"
inside_ipv4_cidr = "169.254.21.0/30"

[[connections.tunnels]]
outside_ip_address = "192.0.2.3"
inside_ipv4_cidr = "169.254.22.0/30"
"#
    ))
    .unwrap()
}

/// One session per tunnel of a dynamic connection, between the first
/// (ours) and second (the gateway's) host of the inside /30, with the
/// connection's limit, advertising the IPv4 local networks; none for
/// static routing.
#[test]
fn a_dynamic_connection_has_a_session_per_tunnel() {
    let (specs, skipped) = bgp_specs(&config("dynamic"));
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(specs.len(), 2);
    let s = &specs[1];
    assert_eq!(s.key.tunnel, 1);
    assert_eq!(s.resource_id, "vpn-s_192.0.2.3");
    assert_eq!(s.peer.local_addr.to_string(), "169.254.22.1");
    assert_eq!(s.peer.peer_addr.to_string(), "169.254.22.2");
    assert_eq!((s.peer.local_asn, s.peer.peer_asn), (64512, 65001));
    assert_eq!(s.peer.max_prefixes, 7);
    assert_eq!((s.peer.hold_time_secs, s.peer.keepalive_secs), (30, 10));
    let adverts: Vec<String> = s.adverts.iter().map(|a| a.prefix.to_string()).collect();
    assert_eq!(adverts, ["198.51.100.0/24"]);

    let (specs, skipped) = bgp_specs(&config("static"));
    assert!(specs.is_empty() && skipped.is_empty());
}

/// A session's route event becomes the spec's `RouteStatus` record.
#[test]
fn route_events_become_route_status_records() {
    let route = PeerRoute {
        origin: Origin::Igp,
        as_path: AsPath::sequence(&[65001, 64512]),
        med: None,
        local_pref: None,
        next_hop: "169.254.21.2".parse().unwrap(),
        communities: Vec::new(),
    };
    let event = BgpLogEvent::Route(RouteLog {
        status: RouteLogStatus::Advertised,
        prefix: "10.66.0.0/16".parse().unwrap(),
        as_path: route.as_path.to_string(),
        local_pref: 100,
        med: 0,
        next_hop: route.next_hop,
        weight: 0,
        details: Some("DENIED due to: as-path contains our own AS".to_owned()),
    });
    let line = log_entry("vpn-s_192.0.2.1", 1_767_225_600_000, event).render_text();
    assert!(
        line.ends_with(
            "vpn-s_192.0.2.1 type=RouteStatus status=ADVERTISED prefix=10.66.0.0/16 asPath=\"65001 64512\" localPref=100 med=0 nextHopIp=169.254.21.2 weight=0 details=\"DENIED due to: as-path contains our own AS\""
        ),
        "{line}"
    );
}
