//! RIB selection, ECMP, failover, steering, and the FIB it builds.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use fib::{Target, TunnelId};
use ipnet::IpNet;

use super::harness::{Pair, configs};
use crate::bgp::rib::{Rib, RouteTarget, Source, Steering, connection_adverts, lowered_med};
use crate::bgp::session::{Action, PeerRoute, State};
use crate::bgp::wire::{AsPath, Origin};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn path(asns: &[u32], med: Option<u32>) -> PeerRoute {
    PeerRoute {
        origin: Origin::Igp,
        as_path: AsPath::sequence(asns),
        med,
        local_pref: None,
        next_hop: IpAddr::V4(Ipv4Addr::new(169, 254, 21, 2)),
        communities: Vec::new(),
    }
}

const T1: TunnelId = TunnelId(1);
const T2: TunnelId = TunnelId(2);
const T3: TunnelId = TunnelId(3);

fn rib(ecmp: bool) -> Rib {
    let mut r = Rib::new(ecmp);
    for t in [T1, T2, T3] {
        r.set_tunnel_up(t, true);
    }
    r
}

#[test]
fn equal_paths_are_ecmp_in_tgw_mode_and_preferred_tunnel_otherwise() {
    for (ecmp, want) in [
        (true, RouteTarget::Ecmp(vec![T1, T2])),
        (false, RouteTarget::Tunnel(T1)),
    ] {
        let mut r = rib(ecmp);
        r.announce(T2, net("10.1.0.0/16"), path(&[65000], Some(100)));
        r.announce(T1, net("10.1.0.0/16"), path(&[65000], Some(100)));
        assert_eq!(r.best(net("10.1.0.0/16")).unwrap().target, want);
    }
}

#[test]
fn shortest_as_path_then_lowest_med_within_neighbour_as() {
    let mut r = rib(true);
    let p = net("10.1.0.0/16");
    r.announce(T1, p, path(&[65000, 65000], Some(10)));
    r.announce(T2, p, path(&[65000], Some(100)));
    assert_eq!(r.best(p).unwrap().target, RouteTarget::Tunnel(T2));
    r.announce(T1, p, path(&[65000], Some(50)));
    assert_eq!(
        r.best(p).unwrap().target,
        RouteTarget::Tunnel(T1),
        "lower MED, same first AS"
    );
    // A path from another neighbour AS is not compared on MED.
    r.announce(T3, p, path(&[65001], Some(500)));
    assert_eq!(r.best(p).unwrap().target, RouteTarget::Ecmp(vec![T1, T3]));
    // Missing MED counts as 0 (RFC 4271 § 9.1.2.2 c).
    r.announce(T2, p, path(&[65000], None));
    assert_eq!(r.best(p).unwrap().target, RouteTarget::Ecmp(vec![T2, T3]));
}

#[test]
fn origin_breaks_ties_before_med() {
    let mut r = rib(true);
    let p = net("10.1.0.0/16");
    let mut inc = path(&[65000], Some(0));
    inc.origin = Origin::Incomplete;
    r.announce(T1, p, inc);
    r.announce(T2, p, path(&[65000], Some(900)));
    assert_eq!(r.best(p).unwrap().target, RouteTarget::Tunnel(T2));
}

#[test]
fn static_beats_bgp_and_local_is_never_overridden() {
    let mut r = rib(true);
    r.set_local_networks([net("10.2.0.0/16")]);
    r.announce(T1, net("10.1.0.0/16"), path(&[65000], None));
    r.set_static_routes(T2, [net("10.1.0.0/16")]);
    let s = r.best(net("10.1.0.0/16")).unwrap();
    assert_eq!(
        (s.target, s.source),
        (RouteTarget::Tunnel(T2), Source::Static)
    );
    // A learned route inside (or equal to) the local network is ignored.
    r.announce(T1, net("10.2.5.0/24"), path(&[65000], None));
    r.announce(T1, net("10.2.0.0/16"), path(&[65000], None));
    assert_eq!(r.best(net("10.2.5.0/24")), None);
    assert_eq!(r.best(net("10.2.0.0/16")).unwrap().source, Source::Local);
    // Static routes fail over to the other tunnel, no ECMP.
    r.set_static_routes(T3, [net("10.1.0.0/16")]);
    assert_eq!(
        r.best(net("10.1.0.0/16")).unwrap().target,
        RouteTarget::Tunnel(T2)
    );
    r.set_tunnel_up(T2, false);
    assert_eq!(
        r.best(net("10.1.0.0/16")).unwrap().target,
        RouteTarget::Tunnel(T3)
    );
}

#[test]
fn tunnel_down_withdraws_its_routes_and_fib_moves() {
    let mut r = rib(true);
    r.set_local_networks([net("10.2.0.0/16")]);
    for t in [T1, T2] {
        r.announce(t, net("10.1.0.0/16"), path(&[65000], Some(100)));
        r.announce(t, net("2001:db8:1::/48"), path(&[65000], Some(100)));
    }
    r.announce(T1, net("10.9.0.0/16"), path(&[65000], None));
    let fib = r.fib_builder().unwrap().build();
    let dst = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    let Some(Target::Ecmp(g)) = fib.lookup(dst) else {
        panic!("ECMP expected");
    };
    let members: std::collections::HashSet<Target> = (0..64u32)
        .map(|h| fib.resolve(Target::Ecmp(g), h.wrapping_mul(0x9e37_79b9)))
        .collect();
    assert_eq!(members, [Target::Tunnel(T1), Target::Tunnel(T2)].into());
    // The IPv4 and IPv6 routes with the same members share one group.
    assert_eq!(
        fib.lookup("2001:db8:1::5".parse().unwrap()),
        Some(Target::Ecmp(g))
    );
    assert_eq!(
        fib.lookup(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1))),
        Some(Target::Inside)
    );
    // DPD clear on tunnel 1.
    r.set_tunnel_up(T1, false);
    let fib = r.fib_builder().unwrap().build();
    assert_eq!(fib.lookup(dst), Some(Target::Tunnel(T2)));
    assert_eq!(fib.lookup(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1))), None);
    // Back up: routes return only once the session re-learns them.
    r.set_tunnel_up(T1, true);
    assert_eq!(
        r.best(net("10.1.0.0/16")).unwrap().target,
        RouteTarget::Tunnel(T2)
    );
    r.announce(T1, net("10.1.0.0/16"), path(&[65000], Some(100)));
    assert_eq!(
        r.best(net("10.1.0.0/16")).unwrap().target,
        RouteTarget::Ecmp(vec![T1, T2])
    );
    // Announcements on a down tunnel are ignored.
    r.set_tunnel_up(T3, false);
    r.announce(T3, net("10.3.0.0/16"), path(&[65000], None));
    assert_eq!(r.best(net("10.3.0.0/16")), None);
}

#[test]
fn steering_adverts() {
    let nets = [net("10.2.0.0/16")];
    let a0 = connection_adverts(&nets, 100, Steering::LowerMed { preferred: 0 }, 0);
    let a1 = connection_adverts(&nets, 100, Steering::LowerMed { preferred: 0 }, 1);
    assert_eq!((a0[0].med, a1[0].med), (Some(lowered_med(100)), Some(100)));
    let p0 = connection_adverts(
        &nets,
        100,
        Steering::Prepend {
            preferred: 1,
            count: 2,
        },
        0,
    );
    let p1 = connection_adverts(
        &nets,
        100,
        Steering::Prepend {
            preferred: 1,
            count: 2,
        },
        1,
    );
    assert_eq!((p0[0].prepend, p1[0].prepend), (2, 0));
    let e = connection_adverts(&nets, 100, Steering::Equal, 1);
    assert_eq!((e[0].med, e[0].prepend), (Some(100), 0));
}

/// The whole chain with two tunnels: our two sessions advertise with
/// AS_PATH-prepend steering (then MED steering), the customer gateway's RIB
/// prefers tunnel 1, and when tunnel 1's session dies it moves to tunnel 2.
#[test]
fn two_tunnels_steering_and_failover_end_to_end() {
    for steering in [
        Steering::Prepend {
            preferred: 0,
            count: 2,
        },
        Steering::LowerMed { preferred: 0 },
    ] {
        let local = [net("10.2.0.0/16")];
        let mut pairs: Vec<Pair> = (0..2)
            .map(|i| {
                let (a, b) = configs();
                let mut p = Pair::new(a, b);
                p.a.set_advertised(p.now, connection_adverts(&local, 100, steering, i));
                p.a.handle_start(p.now);
                p.b.handle_start(p.now);
                p.establish(Duration::from_secs(10));
                p
            })
            .collect();
        // The customer gateway's RIB, one tunnel per session (no ECMP: it
        // must pick the steered tunnel).
        let mut cgw = Rib::new(true);
        let tid = [T1, T2];
        for (i, p) in pairs.iter_mut().enumerate() {
            cgw.set_tunnel_up(tid[i], true);
            for a in p.b_routes.drain(..) {
                cgw.apply(tid[i], &a);
            }
        }
        assert_eq!(
            cgw.best(local[0]).unwrap().target,
            RouteTarget::Tunnel(T1),
            "{steering:?}"
        );
        // Tunnel 1's path dies: hold timer, WithdrawAll, traffic to tunnel 2.
        pairs[0].blackhole = true;
        while pairs[0].b.state() == State::Established {
            pairs[0].run_for(Duration::from_secs(1));
        }
        for a in pairs[0].b_routes.drain(..) {
            cgw.apply(T1, &a);
        }
        assert!(pairs[0].b_routes.is_empty());
        assert_eq!(cgw.best(local[0]).unwrap().target, RouteTarget::Tunnel(T2));
        let _ = Action::WithdrawAll;
    }
}

/// The seeds' Azure-style active-active plan (interop §2.3): four tunnels,
/// inside /30s 169.254.21.0, 169.254.22.0, 169.254.21.4, 169.254.22.4, our
/// side .1/.5 with ASN 64512, the peer ASN 65000 on .2/.6. Four sessions
/// come up, the peer's VNet prefix is ECMP over all four; killing
/// instance 0 (its two tunnels) leaves ECMP over the other two.
#[test]
fn azure_active_active_four_tunnels_ecmp() {
    let plan = [
        ("169.254.21.1", "169.254.21.2"),
        ("169.254.22.1", "169.254.22.2"),
        ("169.254.21.5", "169.254.21.6"),
        ("169.254.22.5", "169.254.22.6"),
    ];
    let vnet = net("10.1.0.0/16");
    let vpc = net("10.2.0.0/16");
    let mut rib = Rib::new(true);
    rib.set_local_networks([vpc]);
    let mut pairs: Vec<Pair> = plan
        .iter()
        .map(|(ours, theirs)| {
            let ours: IpAddr = ours.parse().unwrap();
            let theirs: IpAddr = theirs.parse().unwrap();
            let a = crate::bgp::session::PeerConfig::new(64512, 65000, ours, theirs);
            let b = crate::bgp::session::PeerConfig::new(65000, 64512, theirs, ours);
            let mut p = Pair::new(a, b);
            p.a.set_advertised(p.now, connection_adverts(&[vpc], 100, Steering::Equal, 0));
            p.b.set_advertised(p.now, connection_adverts(&[vnet], 100, Steering::Equal, 0));
            p.a.handle_start(p.now);
            p.b.handle_start(p.now);
            p.establish(Duration::from_secs(10));
            p
        })
        .collect();
    let tunnels: Vec<TunnelId> = (1..=4).map(TunnelId).collect();
    for (i, p) in pairs.iter_mut().enumerate() {
        rib.set_tunnel_up(tunnels[i], true);
        for a in p.a_routes.drain(..) {
            rib.apply(tunnels[i], &a);
        }
        assert_eq!(
            p.b.received().keys().copied().collect::<Vec<_>>(),
            vec![vpc]
        );
    }
    assert_eq!(
        rib.best(vnet).unwrap().target,
        RouteTarget::Ecmp(tunnels.clone())
    );
    let fib = rib.fib_builder().unwrap().build();
    let Some(Target::Ecmp(g)) = fib.lookup("10.1.2.3".parse().unwrap()) else {
        panic!("ECMP expected");
    };
    let used: std::collections::HashSet<Target> = (0..256u32)
        .map(|h| fib.resolve(Target::Ecmp(g), h.wrapping_mul(0x9e37_79b9)))
        .collect();
    assert_eq!(used.len(), 4);
    // Instance 0 dies: DPD clears tunnels 1 and 2.
    rib.set_tunnel_up(tunnels[0], false);
    rib.set_tunnel_up(tunnels[1], false);
    assert_eq!(
        rib.best(vnet).unwrap().target,
        RouteTarget::Ecmp(vec![tunnels[2], tunnels[3]])
    );
    // Its sessions then time out; their WithdrawAll changes nothing more.
    for p in &mut pairs[..2] {
        p.blackhole = true;
        p.run_for(Duration::from_secs(31));
        assert_ne!(p.a.state(), State::Established);
    }
    for (i, p) in pairs.iter_mut().enumerate() {
        for a in p.a_routes.drain(..) {
            rib.apply(tunnels[i], &a);
        }
    }
    assert_eq!(
        rib.best(vnet).unwrap().target,
        RouteTarget::Ecmp(vec![tunnels[2], tunnels[3]])
    );
}

/// The backup of a selected route is what the RIB would select without
/// its tunnels: the prepended path of the other tunnel, nothing when no
/// other path exists.
#[test]
fn best_excluding_gives_the_backup_path() {
    let mut r = rib(true);
    let p = net("10.1.0.0/16");
    r.announce(T1, p, path(&[65000], None));
    r.announce(T2, p, path(&[65000, 65000], None));
    r.announce(T3, p, path(&[65000, 65000], None));
    assert_eq!(r.best(p).unwrap().target, RouteTarget::Tunnel(T1));
    let backup = r.best_excluding(p, &[T1]).unwrap();
    assert_eq!(backup.target, RouteTarget::Ecmp(vec![T2, T3]));
    assert_eq!(backup.source, Source::Bgp);
    assert_eq!(r.best_excluding(p, &[T1, T2, T3]), None);
    // Excluding is a question, not a change.
    assert_eq!(r.best(p).unwrap().target, RouteTarget::Tunnel(T1));
}
