//! Manager: changes, validation, atomicity and persistence.

use super::*;
use crate::api::{CustomerGatewayPatch, ErrorCode};
use crate::config::{CustomerGateway, RoutingType, TunnelOptionsPatch, VpnConnectionOptionsPatch};
use crate::dataplane::{InMemoryDataplane, TunnelRuntimeState};
use crate::logs::{self, IkePhaseState};

const EXAMPLE: &str = include_str!("../../examples/appliance.toml");

pub(super) fn fill() -> Fill {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    Box::new(move |buf: &mut [u8]| {
        for b in buf {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *b = s.to_le_bytes()[0];
        }
    })
}

pub(super) fn start(dir: &tempfile::TempDir) -> Manager<InMemoryDataplane> {
    let path = dir.path().join("vpnd.toml");
    std::fs::write(&path, EXAMPLE).unwrap();
    let (m, from) =
        Manager::start(&ConfigStore::new(&path), InMemoryDataplane::new(), fill()).unwrap();
    assert_eq!(from, Loaded::Toml(LoadedFrom::Current));
    m
}

/// What a restart would load: the store's configuration.
pub(super) fn on_disk(dir: &tempfile::TempDir) -> ApplianceConfig {
    Journal::open(StorePaths::next_to(&dir.path().join("vpnd.toml")))
        .unwrap()
        .expect("a store")
        .1
}

fn journal_bytes(dir: &tempfile::TempDir) -> Vec<u8> {
    std::fs::read(dir.path().join("vpnd.journal")).unwrap()
}

fn cgw(id: &str, ip: &str) -> CustomerGateway {
    CustomerGateway {
        id: id.into(),
        ip_address: Some(ip.parse().unwrap()),
        bgp_asn: Some(65001),
        certificate: None,
        device_name: None,
    }
}

fn static_conn(id: &str, cgw: &str) -> VpnConnection {
    let mut c = VpnConnection::new(id, cgw, "");
    c.routing = RoutingType::Static;
    c
}

#[test]
fn create_show_modify_delete_each_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = start(&dir);

    m.handle(Request::CreateCustomerGateway {
        customer_gateway: cgw("cgw-2", "203.0.113.30"),
    })
    .unwrap();
    assert!(
        on_disk(&dir)
            .customer_gateways
            .iter()
            .any(|g| g.id == "cgw-2")
    );

    let r = m
        .handle(Request::CreateConnection {
            connection: Box::new(static_conn("vpn-2", "cgw-2")),
        })
        .unwrap();
    let Response::Connection { connection } = r else {
        panic!("{r:?}")
    };
    // Generated: target, outside addresses, inside CIDRs, keys (hidden).
    assert_eq!(connection.connection.target, "tgw-lab");
    assert_eq!(
        connection.connection.tunnels[0].outside_ip_address,
        Some("198.51.100.10".parse().unwrap())
    );
    assert!(connection.connection.tunnels[1].inside_ipv4_cidr.is_some());
    assert_eq!(connection.pre_shared_key_set, [true, true]);
    assert!(connection.connection.tunnels[0].pre_shared_key.is_none());
    let disk = on_disk(&dir);
    let c = disk.connections.iter().find(|c| c.id == "vpn-2").unwrap();
    assert!(c.tunnels[0].pre_shared_key.is_some());
    assert_eq!(&disk, m.config());
    assert_eq!(m.dataplane().applied(), Some(m.config()));

    m.handle(Request::ModifyTunnelOptions {
        connection_id: "vpn-2".into(),
        tunnel: 1,
        options: Box::new(TunnelOptionsPatch {
            phase2_lifetime_secs: Some(1800),
            ..TunnelOptionsPatch::default()
        }),
    })
    .unwrap();
    let disk = on_disk(&dir);
    let c = disk.connections.iter().find(|c| c.id == "vpn-2").unwrap();
    assert_eq!(c.tunnels[1].phase2_lifetime_secs, 1800);

    m.handle(Request::ModifyConnectionOptions {
        connection_id: "vpn-2".into(),
        options: VpnConnectionOptionsPatch {
            remote_ipv4_network_cidr: Some("10.2.0.0/16".parse().unwrap()),
            ..VpnConnectionOptionsPatch::default()
        },
    })
    .unwrap();
    // A route over the gateway's own network is refused, with the field
    // it collides with, and nothing is written (issue 17).
    let before = std::fs::read(dir.path().join("vpnd.toml")).unwrap();
    let err = m
        .handle(Request::AddStaticRoute {
            connection_id: "vpn-2".into(),
            prefix: "0.0.0.0/0".parse().unwrap(),
        })
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ValidationFailed, "{err:?}");
    assert!(
        err.errors
            .iter()
            .any(|e| e.field == "connections[vpn-2].static_routes[0]"
                && e.allowed.contains("gateway.local_networks")),
        "{err:?}"
    );
    assert_eq!(std::fs::read(dir.path().join("vpnd.toml")).unwrap(), before);
    m.handle(Request::AddStaticRoute {
        connection_id: "vpn-2".into(),
        prefix: "10.50.0.0/16".parse().unwrap(),
    })
    .unwrap();
    let disk = on_disk(&dir);
    let c = disk.connections.iter().find(|c| c.id == "vpn-2").unwrap();
    assert_eq!(c.static_routes, vec!["10.50.0.0/16".parse().unwrap()]);
    let Response::Routes { routes } = m
        .handle(Request::ShowRoutes {
            connection_id: None,
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(routes.len(), 1);
    assert!(!routes[0].active);

    m.handle(Request::ModifyCustomerGateway {
        id: "cgw-2".into(),
        changes: CustomerGatewayPatch {
            device_name: Some("edge-2".into()),
            ..CustomerGatewayPatch::default()
        },
    })
    .unwrap();
    assert_eq!(
        on_disk(&dir).customer_gateways[1].device_name.as_deref(),
        Some("edge-2")
    );

    // A gateway in use cannot go.
    let e = m
        .handle(Request::DeleteCustomerGateway { id: "cgw-2".into() })
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ValidationFailed);
    assert!(e.errors[0].allowed.contains("vpn-2"), "{e:?}");

    m.handle(Request::DeleteStaticRoute {
        connection_id: "vpn-2".into(),
        prefix: "10.50.0.0/16".parse().unwrap(),
    })
    .unwrap();
    m.handle(Request::DeleteConnection { id: "vpn-2".into() })
        .unwrap();
    m.handle(Request::DeleteCustomerGateway { id: "cgw-2".into() })
        .unwrap();
    let disk = on_disk(&dir);
    assert_eq!(disk.connections.len(), 1);
    assert_eq!(disk.customer_gateways.len(), 1);
}

#[test]
fn validation_errors_name_field_and_range_and_nothing_is_half_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = start(&dir);
    let before = m.config().clone();
    let file_before = journal_bytes(&dir);
    let applies = m.dataplane().apply_count();

    // Two broken rules in one change: both reported, neither applied (and
    // the valid part of the patch is not applied either).
    let e = m
        .handle(Request::ModifyTunnelOptions {
            connection_id: "vpn-branch1".into(),
            tunnel: 0,
            options: Box::new(TunnelOptionsPatch {
                phase2_lifetime_secs: Some(5000),
                replay_window_packets: Some(10),
                dpd_timeout_secs: Some(60),
                ..TunnelOptionsPatch::default()
            }),
        })
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ValidationFailed);
    let f = e
        .errors
        .iter()
        .find(|f| f.field == "connections[vpn-branch1].tunnels[0].phase2_lifetime_secs")
        .unwrap_or_else(|| panic!("{e:?}"));
    assert_eq!(f.value, "5000");
    assert!(
        f.allowed.contains("900") && f.allowed.contains("3600"),
        "{f:?}"
    );
    assert!(
        e.errors
            .iter()
            .any(|f| f.field.ends_with("tunnels[0].replay_window_packets")),
        "{e:?}"
    );
    assert_eq!(m.config(), &before);
    assert_eq!(journal_bytes(&dir), file_before);
    assert_eq!(m.dataplane().apply_count(), applies);

    // Unknown objects.
    let e = m
        .handle(Request::DeleteConnection { id: "vpn-x".into() })
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(e.message.contains("vpn-x"));
    let e = m
        .handle(Request::CreateConnection {
            connection: Box::new(static_conn("vpn-branch1", "cgw-branch1")),
        })
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::AlreadyExists);

    // A connection to a missing gateway.
    let e = m
        .handle(Request::CreateConnection {
            connection: Box::new(static_conn("vpn-3", "cgw-missing")),
        })
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ValidationFailed);
    assert!(
        e.errors.iter().any(|f| f.value.contains("cgw-missing")),
        "{e:?}"
    );
    assert_eq!(m.config(), &before);
    assert_eq!(journal_bytes(&dir), file_before);
}

#[test]
fn a_failed_save_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = ApplianceConfig::from_toml_str(EXAMPLE).unwrap();
    let mut journal =
        Journal::create(StorePaths::next_to(&dir.path().join("vpnd.toml")), &config).unwrap();
    journal.fail_appends();
    let mut m = Manager::new(config.clone(), journal, InMemoryDataplane::new(), fill());
    let e = m
        .handle(Request::CreateCustomerGateway {
            customer_gateway: cgw("cgw-9", "203.0.113.99"),
        })
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Internal);
    assert!(e.message.contains("nothing was changed"));
    assert_eq!(m.config(), &config);
}

#[test]
fn show_tunnels_logs_and_download() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = start(&dir);
    m.dataplane_mut().set_tunnel_state(
        TunnelKey {
            connection_id: "vpn-branch1".into(),
            tunnel: 1,
        },
        TunnelRuntimeState {
            ike_phase1_state: IkePhaseState::Established,
            ike_phase2_state: IkePhaseState::Established,
            bgp_state: Some("Established".into()),
            nat_t_detected: true,
            last_status_change_ms: Some(1),
            ..TunnelRuntimeState::default()
        },
    );
    let Response::Tunnels { tunnels } = m
        .handle(Request::ShowTunnels {
            connection_id: Some("vpn-branch1".into()),
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(tunnels.len(), 2);
    assert_eq!(tunnels[0].status, TunnelUpDown::Down);
    assert_eq!(tunnels[1].status, TunnelUpDown::Up);
    assert_eq!(
        tunnels[1].peer_ip_address,
        Some("203.0.113.20".parse().unwrap())
    );
    assert!(
        m.render_metrics()
            .contains("vpn_connection_tunnel_state{vpn_id=\"vpn-branch1\"} 0.5")
    );

    m.record_log(LogEntry::Activity(logs::TunnelActivityLog::new(
        logs::resource_id("vpn-branch1", "198.51.100.10"),
        1_000,
        logs::ActivityContext::default(),
        logs::MSG_DELETE_IKE_SA,
    )));
    let Response::Logs { entries } = m
        .handle(Request::Logs {
            connection_id: Some("vpn-branch1".into()),
            lines: None,
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(entries.len(), 1);
    // The record's tunnel, found by its resource id, decides whether it
    // reaches the log outputs: the example turns tunnel 0's logs on
    // (json), tunnel 1 keeps them off.
    let t0 = m
        .tunnel_log_options(&logs::resource_id("vpn-branch1", "198.51.100.10"))
        .unwrap();
    assert!(t0.activity.enabled && t0.bgp.enabled);
    let t1 = m
        .tunnel_log_options(&logs::resource_id("vpn-branch1", "198.51.100.11"))
        .unwrap();
    assert!(!t1.activity.enabled && !t1.bgp.enabled);
    assert!(
        m.tunnel_log_options(&logs::resource_id("vpn-branch1", "198.51.100.99"))
            .is_none()
    );
    assert!(
        m.tunnel_log_options(&logs::resource_id("vpn-other", "198.51.100.11"))
            .is_none()
    );

    let Response::ConfigText { text, .. } = m
        .handle(Request::ConfigDownload {
            connection_id: "vpn-branch1".into(),
            device: download::Device::Strongswan,
        })
        .unwrap()
    else {
        panic!()
    };
    assert!(text.contains("secrets {"));

    // A device whose file cannot say what the options ask for is the
    // configuration's problem, not a missing object.
    m.handle(Request::ModifyTunnelOptions {
        connection_id: "vpn-branch1".into(),
        tunnel: 0,
        options: Box::new(TunnelOptionsPatch {
            ike_versions: Some(vec![crate::config::IkeVersion::Ikev1]),
            startup_action: Some(crate::config::StartupAction::Add),
            ..TunnelOptionsPatch::default()
        }),
    })
    .unwrap();
    let e = m
        .handle(Request::ConfigDownload {
            connection_id: "vpn-branch1".into(),
            device: download::Device::CiscoIos,
        })
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ValidationFailed, "{e:?}");
    let e = m
        .handle(Request::ConfigDownload {
            connection_id: "vpn-nope".into(),
            device: download::Device::CiscoIos,
        })
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound, "{e:?}");
}

/// BGP state published by the daemon's BGP thread: `show_bgp` lists the
/// neighbours (filtered by connection), `show_routes` the BGP routes with
/// their chosen path and ECMP members.
#[test]
fn show_bgp_and_bgp_routes() {
    use crate::api::BgpNeighbor;
    use crate::dataplane::{Dataplane, DynamicRoute};

    let dir = tempfile::tempdir().unwrap();
    let mut m = start(&dir);
    let key = |tunnel| TunnelKey {
        connection_id: "vpn-branch1".into(),
        tunnel,
    };
    let neighbor = BgpNeighbor {
        connection_id: "vpn-branch1".into(),
        tunnel: 0,
        local_address: "169.254.21.1".parse().unwrap(),
        neighbor: "169.254.21.2".parse().unwrap(),
        local_asn: 64512,
        peer_asn: 65001,
        state: "Established".into(),
        uptime_secs: 42,
        established_transitions: 1,
        hold_time_secs: Some(30),
        prefixes_received: 1,
        prefixes_advertised: 2,
        denied: 0,
        last_sent_notification: None,
        last_received_notification: None,
    };
    m.set_bgp_neighbors(vec![neighbor.clone()]);
    let Response::Bgp { neighbors } = m
        .handle(Request::ShowBgp {
            connection_id: Some("vpn-branch1".into()),
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(neighbors, [neighbor]);
    let e = m
        .handle(Request::ShowBgp {
            connection_id: Some("vpn-nope".into()),
        })
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);

    m.dataplane_mut().set_dynamic_routes(vec![DynamicRoute {
        prefix: "10.1.0.0/16".parse().unwrap(),
        tunnels: vec![key(0), key(1)],
        backup: Vec::new(),
        as_path: "65001".into(),
        med: Some(100),
        next_hop: "169.254.21.2".parse().unwrap(),
    }]);
    let up = TunnelRuntimeState {
        ike_phase1_state: IkePhaseState::Established,
        ike_phase2_state: IkePhaseState::Established,
        bgp_state: Some("Established".into()),
        ..TunnelRuntimeState::default()
    };
    m.dataplane_mut().set_tunnel_state(key(1), up);
    let Response::Routes { routes } = m
        .handle(Request::ShowRoutes {
            connection_id: Some("vpn-branch1".into()),
        })
        .unwrap()
    else {
        panic!()
    };
    let r = routes.iter().find(|r| r.source == "bgp").unwrap();
    assert_eq!(r.tunnel, Some(0));
    assert_eq!(r.ecmp, ["vpn-branch1/0", "vpn-branch1/1"]);
    assert_eq!(r.as_path.as_deref(), Some("65001"));
    assert!(r.active, "tunnel 1 is UP");
}

/// A static route is spread over its connection's UP tunnels: `show
/// routes` names them as ECMP members, or the one tunnel left.
#[test]
fn static_routes_show_their_up_tunnels() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = start(&dir);
    m.handle(Request::CreateCustomerGateway {
        customer_gateway: cgw("cgw-2", "203.0.113.30"),
    })
    .unwrap();
    m.handle(Request::CreateConnection {
        connection: Box::new(static_conn("vpn-2", "cgw-2")),
    })
    .unwrap();
    m.handle(Request::AddStaticRoute {
        connection_id: "vpn-2".into(),
        prefix: "10.50.0.0/16".parse().unwrap(),
    })
    .unwrap();
    let up = TunnelRuntimeState {
        ike_phase1_state: IkePhaseState::Established,
        ike_phase2_state: IkePhaseState::Established,
        ..TunnelRuntimeState::default()
    };
    let key = |tunnel| TunnelKey {
        connection_id: "vpn-2".into(),
        tunnel,
    };
    let route = |m: &mut Manager<InMemoryDataplane>| {
        let Response::Routes { routes } = m
            .handle(Request::ShowRoutes {
                connection_id: Some("vpn-2".into()),
            })
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(routes.len(), 1, "{routes:?}");
        routes.into_iter().next().unwrap()
    };

    let r = route(&mut m);
    assert!(
        !r.active && r.tunnel.is_none() && r.ecmp.is_empty(),
        "{r:?}"
    );

    m.dataplane_mut().set_tunnel_state(key(1), up.clone());
    let r = route(&mut m);
    assert!(r.active, "{r:?}");
    assert_eq!(r.tunnel, Some(1));
    assert!(r.ecmp.is_empty(), "{r:?}");

    // Both UP: tunnel 0 is the primary, no ECMP (spec § 10.2).
    m.dataplane_mut().set_tunnel_state(key(0), up);
    let r = route(&mut m);
    assert_eq!(r.tunnel, Some(0));
    assert!(r.active && r.ecmp.is_empty(), "{r:?}");
}

/// What validating the whole configuration says of `request` applied to
/// `config` the way the manager applied changes before it validated them
/// one by one: `Some(true)` valid, `Some(false)` invalid, `None` when the
/// request is refused before validation (unknown or existing object).
fn whole_verdict(config: &ApplianceConfig, request: &Request) -> Option<bool> {
    let mut next = config.clone();
    match request {
        Request::CreateCustomerGateway { customer_gateway } => {
            if next
                .customer_gateways
                .iter()
                .any(|g| g.id == customer_gateway.id)
            {
                return None;
            }
            next.customer_gateways.push(customer_gateway.clone());
        }
        Request::ModifyCustomerGateway { id, changes } => {
            let g = next.customer_gateways.iter_mut().find(|g| g.id == *id)?;
            if changes.ip_address.is_some() {
                g.ip_address = changes.ip_address;
            }
            if changes.bgp_asn.is_some() {
                g.bgp_asn = changes.bgp_asn;
            }
        }
        Request::CreateConnection { connection } => {
            if next.connections.iter().any(|c| c.id == connection.id) {
                return None;
            }
            let mut c = (**connection).clone();
            c.target.clone_from(&next.gateway.id);
            next.connections.push(c);
        }
        Request::ModifyTunnelOptions {
            connection_id,
            tunnel,
            options,
        } => {
            next.connections.iter().find(|c| c.id == *connection_id)?;
            return Some(
                config
                    .modify_tunnel_options(connection_id, *tunnel, (**options).clone())
                    .is_ok(),
            );
        }
        Request::AddStaticRoute {
            connection_id,
            prefix,
        } => {
            let c = next
                .connections
                .iter_mut()
                .find(|c| c.id == *connection_id)?;
            if c.static_routes.contains(prefix) {
                return None;
            }
            c.static_routes.push(*prefix);
        }
        Request::DeleteConnection { id } => {
            let i = next.connections.iter().position(|c| c.id == *id)?;
            next.connections.remove(i);
        }
        _ => unreachable!("not generated"),
    }
    Some(next.validate().is_ok())
}

/// The per-change validation agrees with validating the whole result, on
/// a long pseudo-random sequence of changes over a few ids, addresses and
/// inside CIDRs (so that many collide): every change the manager accepts
/// leaves a configuration that validates as a whole, and every change it
/// rejects as invalid would have broken a rule of the whole configuration.
#[test]
fn per_change_validation_agrees_with_validating_the_whole() {
    for kind in ["transit-gateway", "virtual-private-gateway"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vpnd.toml");
        std::fs::write(
            &path,
            EXAMPLE.replace("kind = \"transit-gateway\"", &format!("kind = \"{kind}\"")),
        )
        .unwrap();
        let (mut m, _) =
            Manager::start(&ConfigStore::new(&path), InMemoryDataplane::new(), fill()).unwrap();
        let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let (mut accepted, mut rejected) = (0, 0);
        for step in 0..600 {
            let cgw_id = format!("cgw-{}", next(4));
            let conn_id = format!("vpn-{}", next(5));
            let ip = format!("203.0.113.{}", 1 + next(3));
            // Two /24s, so that a static route can cover the inside CIDRs
            // of other connections but not its own.
            let cidr = |k: u64| -> ipnet::Ipv4Net {
                format!("169.254.{}.{}/30", 10 + 10 * (k % 2), 4 * k)
                    .parse()
                    .unwrap()
            };
            let request = match next(7) {
                0 => Request::CreateCustomerGateway {
                    customer_gateway: CustomerGateway {
                        bgp_asn: (next(4) != 0).then_some(65001),
                        ..cgw(&cgw_id, &ip)
                    },
                },
                1 => Request::ModifyCustomerGateway {
                    id: cgw_id,
                    changes: CustomerGatewayPatch {
                        ip_address: (next(2) == 0).then(|| ip.parse().unwrap()),
                        bgp_asn: (next(2) == 0).then_some(if next(3) == 0 { 64512 } else { 65002 }),
                        ..CustomerGatewayPatch::default()
                    },
                },
                2 | 3 => {
                    let mut c = VpnConnection::new(&conn_id, &cgw_id, "");
                    c.routing = if next(2) == 0 {
                        RoutingType::Static
                    } else {
                        RoutingType::Dynamic
                    };
                    let a = next(16);
                    let b = next(16);
                    for (t, k) in c.tunnels.iter_mut().zip([a, b]) {
                        t.inside_ipv4_cidr = Some(cidr(k));
                        t.pre_shared_key = Some(crate::config::PreSharedKey::generate(
                            &mut |b: &mut [u8]| b.fill(b'k'),
                        ));
                    }
                    c.tunnels[0].outside_ip_address = Some("198.51.100.10".parse().unwrap());
                    c.tunnels[1].outside_ip_address = Some(
                        if next(5) == 0 {
                            "198.51.100.10"
                        } else {
                            "198.51.100.11"
                        }
                        .parse()
                        .unwrap(),
                    );
                    Request::CreateConnection {
                        connection: Box::new(c),
                    }
                }
                4 => Request::ModifyTunnelOptions {
                    connection_id: conn_id,
                    tunnel: usize::try_from(next(2)).unwrap(),
                    options: Box::new(TunnelOptionsPatch {
                        inside_ipv4_cidr: Some(cidr(next(16))),
                        ..TunnelOptionsPatch::default()
                    }),
                },
                5 => Request::AddStaticRoute {
                    connection_id: conn_id,
                    // Some over the inside CIDRs in play, of this connection
                    // or another.
                    prefix: match next(6) {
                        0 => "169.254.10.0/24".parse().unwrap(),
                        1 => "169.254.20.0/24".parse().unwrap(),
                        k => format!("10.{k}.0.0/16").parse().unwrap(),
                    },
                },
                _ => Request::DeleteConnection { id: conn_id },
            };
            let whole = whole_verdict(m.config(), &request);
            let got = m.handle(request.clone());
            m.config().validate().unwrap_or_else(|e| {
                panic!("{kind} step {step}: {request:?} left an invalid configuration: {e:?}")
            });
            match (&got, whole) {
                (Ok(_), Some(true)) => accepted += 1,
                (Err(e), Some(false)) if e.code == ErrorCode::ValidationFailed => rejected += 1,
                (Err(e), None) if e.code != ErrorCode::ValidationFailed => {}
                _ => panic!(
                    "{kind} step {step}: {request:?}: manager {got:?}, whole configuration {whole:?}"
                ),
            }
        }
        assert!(
            accepted > 50 && rejected > 50,
            "{kind}: {accepted} accepted, {rejected} rejected"
        );
        // And the store and the dataplane (following change by change)
        // hold what the manager holds.
        assert_eq!(&on_disk(&dir), m.config());
        assert_eq!(m.dataplane().applied(), Some(m.config()));
    }
}

/// A static route may not cover another connection's inside CIDR, in
/// either order of the two changes.
#[test]
fn static_routes_and_inside_cidrs_of_other_connections_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = start(&dir);
    for (id, ip) in [
        ("cgw-a", "203.0.113.31"),
        ("cgw-b", "203.0.113.32"),
        ("cgw-c", "203.0.113.33"),
    ] {
        m.handle(Request::CreateCustomerGateway {
            customer_gateway: cgw(id, ip),
        })
        .unwrap();
    }
    let conn = |id: &str, cidrs: [&str; 2]| {
        let mut c = static_conn(id, &id.replace("vpn", "cgw"));
        for (t, n) in c.tunnels.iter_mut().zip(cidrs) {
            t.inside_ipv4_cidr = Some(n.parse().unwrap());
        }
        Request::CreateConnection {
            connection: Box::new(c),
        }
    };
    m.handle(conn("vpn-a", ["169.254.10.0/30", "169.254.10.4/30"]))
        .unwrap();
    m.handle(Request::AddStaticRoute {
        connection_id: "vpn-a".into(),
        prefix: "169.254.20.0/24".parse().unwrap(),
    })
    .unwrap();
    let e = m
        .handle(conn("vpn-b", ["169.254.20.4/30", "169.254.30.0/30"]))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ValidationFailed);
    assert!(
        e.errors.iter().any(
            |f| f.field == "connections[vpn-b].tunnels[0].inside_ipv4_cidr"
                && f.allowed.contains("connections[vpn-a].static_routes[0]")
        ),
        "{e:?}"
    );
    m.handle(conn("vpn-c", ["169.254.30.0/30", "169.254.30.4/30"]))
        .unwrap();
    let e = m
        .handle(Request::AddStaticRoute {
            connection_id: "vpn-a".into(),
            prefix: "169.254.30.0/24".parse().unwrap(),
        })
        .unwrap_err();
    assert!(
        e.errors
            .iter()
            .any(|f| f.field == "connections[vpn-a].static_routes[1]"
                && f.allowed
                    .contains("connections[vpn-c].tunnels[0].inside_ipv4_cidr")),
        "{e:?}"
    );
    m.config().validate().unwrap();
}

/// Migration to the key store on import: an exported configuration whose
/// connection is switched to `SecretsManager` (keys still inline) imports
/// with its keys moved into the store; the configuration on disk and its
/// export keep only the names; a restart finds the keys; a modified store
/// stops the start.
#[test]
fn import_moves_inline_keys_to_the_key_store_and_a_restart_finds_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = start(&dir);
    let Response::ConfigToml { toml } = m.handle(Request::ConfigExport {}).unwrap() else {
        panic!("export");
    };
    let key0 = m.config().connections[0].tunnels[0]
        .pre_shared_key
        .clone()
        .expect("an inline key");
    assert!(toml.contains(key0.dangerous_as_str()));
    let id = m.config().connections[0].id.clone();
    // The exported file names the storage; the operator switches it.
    let switched = toml.replacen(
        "pre_shared_key_storage = \"Standard\"",
        "pre_shared_key_storage = \"SecretsManager\"",
        1,
    );
    assert_ne!(switched, toml);
    m.handle(Request::ConfigImport { toml: switched }).unwrap();
    let t0 = &m.config().connections[0].tunnels[0];
    assert_eq!(t0.pre_shared_key, None);
    assert_eq!(t0.pre_shared_key_ref, Some(format!("{id}/0")));
    let Response::ConfigToml { toml } = m.handle(Request::ConfigExport {}).unwrap() else {
        panic!("export");
    };
    assert!(!toml.contains(key0.dangerous_as_str()), "{toml}");
    assert!(
        on_disk(&dir).connections[0].tunnels[0]
            .pre_shared_key
            .is_none()
    );
    let Response::Psks { secrets } = m.handle(Request::PskList {}).unwrap() else {
        panic!("list");
    };
    assert_eq!(secrets.len(), 2);
    assert_eq!(secrets[0].used_by, [format!("{id}/0")]);
    // The key IKE gets is the one that was inline.
    let (mut specs, mut skipped) = crate::ike::tunnels::tunnel_specs(m.config());
    assert!(specs.iter().all(|s| s.pre_shared_key_ref().is_some()));
    m.resolve_keys(&mut specs, &mut skipped);
    assert!(
        specs.iter().all(|s| s.pre_shared_key_ref().is_none()),
        "{skipped:?}"
    );
    drop(m);

    // A restart: the store's configuration and the key store.
    let path = dir.path().join("vpnd.toml");
    let (m, _) =
        Manager::start(&ConfigStore::new(&path), InMemoryDataplane::new(), fill()).unwrap();
    let (mut specs, mut skipped) = crate::ike::tunnels::tunnel_specs(m.config());
    let before = specs.len();
    m.resolve_keys(&mut specs, &mut skipped);
    assert_eq!(specs.len(), before, "{skipped:?}");
    drop(m);

    // A flipped bit in the store: vpnd does not start.
    let store = dir.path().join("vpnd.psk");
    let mut bytes = std::fs::read(&store).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    std::fs::write(&store, &bytes).unwrap();
    let e = Manager::start(&ConfigStore::new(&path), InMemoryDataplane::new(), fill())
        .expect_err("a tampered key store stops the start");
    assert!(e.to_string().contains("does not authenticate"), "{e}");
}
