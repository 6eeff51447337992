use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

use super::*;
use std::collections::BTreeMap;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// The obviously-correct reference: scan every route, keep the longest.
fn reference_v4(routes: &[(Ipv4Net, Target)], a: Ipv4Addr) -> Option<Target> {
    routes
        .iter()
        .filter(|(p, _)| p.contains(&a))
        .max_by_key(|(p, _)| p.prefix_len())
        .map(|(_, t)| *t)
}

fn reference_v6(routes: &[(Ipv6Net, Target)], a: Ipv6Addr) -> Option<Target> {
    routes
        .iter()
        .filter(|(p, _)| p.contains(&a))
        .max_by_key(|(p, _)| p.prefix_len())
        .map(|(_, t)| *t)
}

#[test]
fn longest_prefix_wins_at_every_level() {
    let mut b = FibBuilder::new();
    b.insert(net("0.0.0.0/0"), Target::Inside).unwrap();
    b.insert(net("10.0.0.0/8"), Target::Tunnel(TunnelId(1)))
        .unwrap();
    b.insert(net("10.1.0.0/16"), Target::Tunnel(TunnelId(2)))
        .unwrap();
    b.insert(net("10.1.2.0/24"), Target::Tunnel(TunnelId(3)))
        .unwrap();
    b.insert(net("10.1.2.128/25"), Target::Tunnel(TunnelId(4)))
        .unwrap();
    b.insert(net("10.1.2.129/32"), Target::Local).unwrap();
    b.insert(net("10.1.3.0/17"), Target::Blackhole).unwrap(); // host bits cleared: 10.1.0.0/17
    let fib = b.build();
    let at = |s: &str| fib.lookup_v4(s.parse().unwrap());
    assert_eq!(at("192.0.2.1"), Some(Target::Inside));
    assert_eq!(at("10.9.9.9"), Some(Target::Tunnel(TunnelId(1))));
    assert_eq!(at("10.1.200.1"), Some(Target::Tunnel(TunnelId(2))));
    assert_eq!(at("10.1.100.1"), Some(Target::Blackhole), "10.1.0.0/17");
    assert_eq!(at("10.1.2.1"), Some(Target::Tunnel(TunnelId(3))));
    assert_eq!(at("10.1.2.200"), Some(Target::Tunnel(TunnelId(4))));
    assert_eq!(at("10.1.2.129"), Some(Target::Local));
    assert_eq!(fib.len(), 7);
}

#[test]
fn no_route_is_none_and_removal_works() {
    let mut b = FibBuilder::new();
    b.insert(net("169.254.21.0/30"), Target::Local).unwrap();
    b.insert(net("fd00::/126"), Target::Local).unwrap();
    let fib = b.build();
    assert_eq!(fib.lookup_v4("169.254.21.4".parse().unwrap()), None);
    assert_eq!(
        fib.lookup_v4("169.254.21.2".parse().unwrap()),
        Some(Target::Local)
    );
    assert_eq!(
        fib.lookup_v6("fd00::3".parse().unwrap()),
        Some(Target::Local)
    );
    assert_eq!(fib.lookup_v6("fd00::4".parse().unwrap()), None);
    assert_eq!(b.remove(net("169.254.21.1/30")), Some(Target::Local));
    let fib = b.build();
    assert_eq!(fib.lookup_v4("169.254.21.2".parse().unwrap()), None);
    assert_eq!(Fib::default().lookup_v4(Ipv4Addr::LOCALHOST), None);
}

#[test]
fn ecmp_spreads_flows_and_keeps_each_flow_on_one_member() {
    let mut b = FibBuilder::new();
    let members = [TunnelId(10), TunnelId(11), TunnelId(12), TunnelId(13)];
    let g = b.add_group(&members).unwrap();
    b.insert(net("203.0.113.0/24"), Target::Ecmp(g)).unwrap();
    let fib = b.build();
    let t = fib.lookup_v4("203.0.113.9".parse().unwrap()).unwrap();
    assert_eq!(t, Target::Ecmp(g));
    let mut counts = [0u32; 4];
    let mut h: u32 = 0x9e37_79b9;
    for _ in 0..40_000 {
        h = h.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let Target::Tunnel(TunnelId(id)) = fib.resolve(t, h) else {
            panic!("a group resolves to a tunnel")
        };
        assert_eq!(
            fib.resolve(t, h),
            Target::Tunnel(TunnelId(id)),
            "stable per flow"
        );
        counts[(id - 10) as usize] += 1;
    }
    for c in counts {
        assert!((9_000..11_000).contains(&c), "uneven spread: {counts:?}");
    }
    assert_eq!(fib.resolve(Target::Inside, 7), Target::Inside);
}

#[test]
fn bad_groups_and_indices_are_rejected() {
    let mut b = FibBuilder::new();
    assert_eq!(b.add_group(&[]), Err(FibError::EmptyGroup(0)));
    assert_eq!(
        b.insert(net("10.0.0.0/8"), Target::Ecmp(GroupId(3))),
        Err(FibError::UnknownGroup(3))
    );
    assert_eq!(
        b.insert(net("10.0.0.0/8"), Target::Tunnel(TunnelId(u32::MAX))),
        Err(FibError::IndexTooLarge(u32::MAX))
    );
    assert!(b.is_empty());
}

#[test]
fn tens_of_thousands_of_routes() {
    let mut b = FibBuilder::new();
    let mut routes = Vec::new();
    for i in 0..30_000u32 {
        // /24s and /28s spread over 10.0.0.0/8 and 100.64.0.0/10.
        let base = if i % 2 == 0 { 0x0a00_0000 } else { 0x6440_0000 };
        let addr = base | (i.wrapping_mul(2_654_435_761) & 0x003f_fff0);
        let len = if i % 3 == 0 { 28 } else { 24 };
        let p = Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc();
        let t = Target::Tunnel(TunnelId(i));
        b.insert(IpNet::V4(p), t).unwrap();
        routes.push((p, t));
    }
    // Later inserts of the same prefix replace earlier ones.
    let mut dedup = BTreeMap::new();
    for (p, t) in &routes {
        dedup.insert(*p, *t);
    }
    let routes: Vec<_> = dedup.into_iter().collect();
    let fib = b.build();
    assert_eq!(fib.len(), routes.len());
    for (p, _) in routes.iter().step_by(7) {
        for a in [p.network(), p.broadcast()] {
            assert_eq!(fib.lookup_v4(a), reference_v4(&routes, a), "{a}");
        }
    }
}

/// Every kind of target, so the packed encoding is exercised whole.
fn arb_target() -> impl Strategy<Value = Target> {
    prop_oneof![
        (0u32..50).prop_map(|t| Target::Tunnel(TunnelId(t))),
        (0u32..50).prop_map(|t| Target::Tunnel(TunnelId(packed::MAX_INDEX - t))),
        Just(Target::Ecmp(GroupId(0))),
        Just(Target::Inside),
        Just(Target::Local),
        Just(Target::Blackhole),
    ]
}

fn with_group(b: &mut FibBuilder) {
    b.add_group(&[TunnelId(1), TunnelId(2)]).unwrap();
}

fn arb_v4_route() -> impl Strategy<Value = (Ipv4Net, Target)> {
    // Few distinct high bits so prefixes nest and overlap a lot.
    (0u32..16, any::<u32>(), 0u8..=32, arb_target()).prop_map(|(hi, lo, len, t)| {
        let addr = (hi << 28) | (lo >> 4);
        let p = Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc();
        (p, t)
    })
}

fn arb_v6_route() -> impl Strategy<Value = (Ipv6Net, Target)> {
    (0u128..8, any::<u128>(), 0u8..=128, arb_target()).prop_map(|(hi, lo, len, t)| {
        let addr = (hi << 125) | (lo >> 3);
        let p = Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc();
        (p, t)
    })
}

proptest! {
    #[test]
    fn v4_matches_the_reference(routes in prop::collection::vec(arb_v4_route(), 0..60),
                                probes in prop::collection::vec(any::<u32>(), 0..60)) {
        let mut b = FibBuilder::new();
        with_group(&mut b);
        let mut table = BTreeMap::new();
        for (p, t) in &routes {
            b.insert(IpNet::V4(*p), *t).unwrap();
            table.insert(*p, *t);
        }
        let routes: Vec<_> = table.into_iter().collect();
        let fib = b.build();
        // Probe random addresses and every route's edges.
        let edges = routes.iter().flat_map(|(p, _)| [u32::from(p.network()), u32::from(p.broadcast())]);
        for a in probes.iter().copied().chain(edges) {
            let a = Ipv4Addr::from(a);
            prop_assert_eq!(fib.lookup_v4(a), reference_v4(&routes, a), "address {}", a);
        }
    }

    #[test]
    fn v6_matches_the_reference(routes in prop::collection::vec(arb_v6_route(), 0..40),
                                probes in prop::collection::vec(any::<u128>(), 0..40)) {
        let mut b = FibBuilder::new();
        with_group(&mut b);
        let mut table = BTreeMap::new();
        for (p, t) in &routes {
            b.insert(IpNet::V6(*p), *t).unwrap();
            table.insert(*p, *t);
        }
        let routes: Vec<_> = table.into_iter().collect();
        let fib = b.build();
        let edges = routes.iter().flat_map(|(p, _)| [u128::from(p.network()), u128::from(p.broadcast())]);
        for a in probes.iter().copied().chain(edges) {
            let a = Ipv6Addr::from(a);
            prop_assert_eq!(fib.lookup_v6(a), reference_v6(&routes, a), "address {}", a);
        }
    }
}
