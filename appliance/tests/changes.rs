//! `DpdkDataplane` following configuration changes one at a time against
//! a real worker (the EAL with two `net_null` ports, one worker lcore):
//! every change returns without waiting, the acknowledgements come back
//! through `poll` as events, the table the workers hold is the one a
//! full apply of the same configuration gives, and tunnel ids stay put.
//! Runs under nextest (one EAL per process).

use std::time::{Duration, Instant};

use appliance::eal_args::Memory;
use appliance::runtime::dataplane::DpdkDataplane;
use appliance::runtime::{Runtime, RuntimeConfig};
use control::config::{ApplianceConfig, Change, RoutingType, VpnConnection};
use control::dataplane::{Dataplane, DataplaneEvent, TunnelKey, TunnelRuntimeState};
use control::logs::IkePhaseState;
use fib::{Fib, Target, TunnelId};

const CONFIG: &str = r#"
[gateway]
id = "tgw-test"
outside_addresses = ["192.0.2.1", "192.0.2.3"]
local_networks = ["198.51.100.0/24"]

[dataplane]
worker_lcores = [1]

[[dataplane.ports]]
name = "wan"
device = "net_null0"
role = "outside"

[[dataplane.ports]]
name = "lan"
device = "net_null1"
role = "inside"

[[customer_gateways]]
id = "cgw-1"
ip_address = "192.0.2.2"
"#;

fn connection(i: u8, statics: &[&str]) -> VpnConnection {
    let mut c = VpnConnection::new(format!("vpn-{i}"), "cgw-1", "tgw-test");
    c.routing = RoutingType::Static;
    c.static_routes = statics.iter().map(|s| s.parse().unwrap()).collect();
    for (t, tunnel) in c.tunnels.iter_mut().enumerate() {
        tunnel.outside_ip_address = Some(["192.0.2.1", "192.0.2.3"][t].parse().unwrap());
        tunnel.inside_ipv4_cidr = Some(format!("169.254.{i}.{}/30", t * 4).parse().unwrap());
    }
    c
}

fn key(i: u8, tunnel: usize) -> TunnelKey {
    TunnelKey {
        connection_id: format!("vpn-{i}"),
        tunnel,
    }
}

/// The routes as the workers see them: ECMP groups by their members.
fn seen(fib: &Fib) -> Vec<(ipnet::IpNet, String)> {
    let mut v: Vec<_> = fib
        .routes()
        .map(|(p, t)| {
            let t = match t {
                Target::Ecmp(g) => format!("{:?}", fib.group(g)),
                other => format!("{other:?}"),
            };
            (p, t)
        })
        .collect();
    v.sort();
    v
}

fn settle(dp: &mut DpdkDataplane) -> Vec<DataplaneEvent> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    loop {
        dp.poll();
        events.extend(dp.poll_events());
        if dp.is_settled() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(dp.is_settled(), "the worker did not apply everything");
    events
}

#[test]
fn changes_are_queued_acknowledged_by_poll_and_give_the_full_apply_table() {
    let prefix = format!("vt-d-chg-{}", std::process::id());
    let rc = RuntimeConfig::new(
        &prefix,
        "net_null0",
        "net_null1",
        Memory::NoHuge {
            reason: "test".into(),
        },
    );
    let mut dp = DpdkDataplane::new(Runtime::start(&rc).expect("runtime"));
    let mut config = ApplianceConfig::from_toml_str(CONFIG).unwrap();
    for i in 1..=3 {
        config.connections.push(connection(i, &["10.0.0.0/8"]));
    }
    config.connections[2].static_routes = vec!["10.3.0.0/16".parse().unwrap()];
    dp.apply(&config);
    let events = settle(&mut dp);
    assert!(
        events.iter().any(
            |e| matches!(e, DataplaneEvent::Applied { what, .. } if what.starts_with("routes"))
        ),
        "{events:?}"
    );
    let ids: Vec<Option<TunnelId>> = (1..=3).map(|i| dp.tunnel_id(&key(i, 0))).collect();
    assert_eq!(
        ids,
        [Some(TunnelId(0)), Some(TunnelId(2)), Some(TunnelId(4))]
    );

    // One change at a time, each queued and returned at once.
    let changes = [
        Change::DeleteConnection { id: "vpn-2".into() },
        Change::PutConnection {
            connection: Box::new(connection(4, &["10.4.0.0/16", "10.0.0.0/8"])),
        },
        Change::PutConnection {
            connection: Box::new(connection(1, &["10.1.0.0/16"])),
        },
    ];
    for change in &changes {
        let t = Instant::now();
        config.apply_change(change);
        dp.apply_change(&config, change);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
    // A tunnel UP: one group changes.
    let up = TunnelRuntimeState {
        ike_phase2_state: IkePhaseState::Established,
        ..TunnelRuntimeState::default()
    };
    dp.set_tunnel_state(key(4, 1), up.clone());
    settle(&mut dp);
    // Ids: the others kept theirs; vpn-4 did not take vpn-2's while the
    // old table could still name them.
    assert_eq!(dp.tunnel_id(&key(1, 0)), Some(TunnelId(0)));
    assert_eq!(dp.tunnel_id(&key(3, 0)), Some(TunnelId(4)));
    assert_eq!(dp.tunnel_id(&key(2, 0)), None);
    let four = dp.tunnel_id(&key(4, 1)).unwrap();
    assert_eq!(dp.tunnel_key(four), Some(&key(4, 1)));
    let after_changes = seen(dp.fib());
    // vpn-4 came last: its 10.0.0.0/8 wins, through its UP tunnel.
    assert!(
        after_changes.contains(&("10.0.0.0/8".parse().unwrap(), format!("{:?}", [four]))),
        "{after_changes:?}"
    );
    assert!(
        after_changes
            .iter()
            .all(|(p, _)| p.to_string() != "169.254.2.0/30")
    );

    // The same configuration applied whole gives the same table (a full
    // apply re-ranks every connection by its place in the file).
    dp.apply(&config);
    settle(&mut dp);
    assert_eq!(seen(dp.fib()), after_changes);

    let st = dp.stats();
    assert_eq!(st.worker["ring_full"], 0, "{st:?}");
    assert_eq!(st.worker["commands_failed"], 0, "{st:?}");
    assert_eq!(st.worker["commands_queued"], 0, "{st:?}");
    assert!(st.worker["fib_publications"] >= 3, "{st:?}");
    assert_eq!(st.worker["fib_changes_refused"], 0, "{st:?}");
    dp.shutdown();
}

/// The dataplane's own cost of one change (no journal, no socket): the
/// median create + delete of a connection is the same with 10 tunnels
/// configured as with 10,000 (it was a whole apply, 268 ms at 5,000).
#[test]
fn a_change_costs_the_same_at_10_and_10000_tunnels() {
    let prefix = format!("vt-d-chs-{}", std::process::id());
    let rc = RuntimeConfig::new(
        &prefix,
        "net_null0",
        "net_null1",
        Memory::NoHuge {
            reason: "test".into(),
        },
    );
    let mut dp = DpdkDataplane::new(Runtime::start(&rc).expect("runtime"));
    let mut config = ApplianceConfig::from_toml_str(CONFIG).unwrap();
    dp.apply(&config);
    let conn = |i: u32| {
        let mut c = VpnConnection::new(format!("c-{i}"), "cgw-1", "tgw-test");
        c.routing = RoutingType::Static;
        c.static_routes = vec![format!("10.{}.{}.0/24", i >> 8, i & 0xff).parse().unwrap()];
        for (t, tunnel) in c.tunnels.iter_mut().enumerate() {
            let a = 0xa9fe_0000 + i * 8 + u32::try_from(t).unwrap() * 4;
            tunnel.inside_ipv4_cidr = Some(ipnet::Ipv4Net::new(a.into(), 30).unwrap());
        }
        c
    };
    let apply = |dp: &mut DpdkDataplane, config: &mut ApplianceConfig, change: Change| {
        config.apply_change(&change);
        let t = Instant::now();
        dp.apply_change(config, &change);
        t.elapsed()
    };
    let median_at = |dp: &mut DpdkDataplane, config: &mut ApplianceConfig| {
        let mut took = Vec::new();
        for j in 0..200 {
            let c = conn(7000 + j);
            let id = c.id.clone();
            took.push(apply(
                dp,
                config,
                Change::PutConnection {
                    connection: Box::new(c),
                },
            ));
            took.push(apply(dp, config, Change::DeleteConnection { id }));
            dp.poll();
        }
        took.sort();
        took[took.len() / 2]
    };
    for i in 0..5 {
        apply(
            &mut dp,
            &mut config,
            Change::PutConnection {
                connection: Box::new(conn(i)),
            },
        );
    }
    settle(&mut dp);
    let small = median_at(&mut dp, &mut config);
    for i in 5..5000 {
        apply(
            &mut dp,
            &mut config,
            Change::PutConnection {
                connection: Box::new(conn(i)),
            },
        );
        if i % 64 == 0 {
            dp.poll();
        }
    }
    settle(&mut dp);
    let large = median_at(&mut dp, &mut config);
    eprintln!("median per change: {small:?} at 10 tunnels, {large:?} at 10,000");
    assert!(
        large < small * 4 + Duration::from_micros(200),
        "{small:?} at 10 tunnels, {large:?} at 10,000"
    );
    assert_eq!(dp.stats().worker["commands_failed"], 0);
    dp.shutdown();
}
