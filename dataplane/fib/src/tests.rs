use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
        (0u32..50).prop_map(|c| Target::Client(ClientId(c))),
        Just(Target::Client(ClientId(packed::MAX_INDEX))),
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

/// IPv4 routes crowded into a few /16s and /24s, so that changes split
/// and fold level-2 and level-3 blocks, mixed with the spread ones.
fn arb_crowded_v4_route() -> impl Strategy<Value = (Ipv4Net, Target)> {
    prop_oneof![
        arb_v4_route(),
        (0u32..2, 0u32..4, any::<u8>(), 14u8..=32, arb_target()).prop_map(
            |(b16, b24, lo, len, t)| {
                let addr = 0x0a01_0000 | (b16 << 16) | (b24 << 8) | u32::from(lo);
                (Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc(), t)
            }
        ),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Insert(IpNet, Target),
    Remove(IpNet),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => arb_crowded_v4_route().prop_map(|(p, t)| Op::Insert(IpNet::V4(p), t)),
        2 => arb_crowded_v4_route().prop_map(|(p, _)| Op::Remove(IpNet::V4(p))),
        1 => arb_v6_route().prop_map(|(p, t)| Op::Insert(IpNet::V6(p), t)),
        1 => arb_v6_route().prop_map(|(p, _)| Op::Remove(IpNet::V6(p))),
    ]
}

proptest! {
    /// A table changed in place, one route at a time, answers every
    /// address as the reference does and as a table built from scratch
    /// from the same routes; removed prefixes leave no block behind.
    #[test]
    fn changes_in_place_match_a_fresh_build(ops in prop::collection::vec(arb_op(), 0..80),
                                            probes in prop::collection::vec(any::<u32>(), 0..30)) {
        let mut b = FibBuilder::new();
        with_group(&mut b);
        let mut fib = b.build();
        for op in &ops {
            match op {
                Op::Insert(p, t) => {
                    fib.apply(&FibChange::Insert(*p, *t)).unwrap();
                    b.insert(*p, *t).unwrap();
                }
                Op::Remove(p) => {
                    fib.apply(&FibChange::Remove(*p)).unwrap();
                    b.remove(*p);
                }
            }
        }
        let fresh = b.build();
        prop_assert_eq!(fib.len(), fresh.len());
        let mut ours: Vec<_> = fib.routes().collect();
        let mut theirs: Vec<_> = fresh.routes().collect();
        ours.sort_by_key(|(p, _)| *p);
        theirs.sort_by_key(|(p, _)| *p);
        prop_assert_eq!(&ours, &theirs);
        let v4: Vec<(Ipv4Net, Target)> = theirs
            .iter()
            .filter_map(|(p, t)| match p { IpNet::V4(p) => Some((*p, *t)), IpNet::V6(_) => None })
            .collect();
        let v6: Vec<(Ipv6Net, Target)> = theirs
            .iter()
            .filter_map(|(p, t)| match p { IpNet::V6(p) => Some((*p, *t)), IpNet::V4(_) => None })
            .collect();
        let edges = ops.iter().flat_map(|op| {
            let (Op::Insert(p, _) | Op::Remove(p)) = op;
            [p.network(), p.broadcast()]
        });
        for a in edges.chain(probes.iter().map(|a| Ipv4Addr::from(*a).into())) {
            match a {
                IpAddr::V4(a) => {
                    prop_assert_eq!(fib.lookup_v4(a), reference_v4(&v4, a), "address {}", a);
                    prop_assert_eq!(fib.lookup_v4(a), fresh.lookup_v4(a), "address {}", a);
                }
                IpAddr::V6(a) => {
                    prop_assert_eq!(fib.lookup_v6(a), reference_v6(&v6, a), "address {}", a);
                }
            }
        }
        // Everything removed again: every block folded back.
        for (p, _) in &ours {
            fib.apply(&FibChange::Remove(*p)).unwrap();
        }
        prop_assert!(fib.is_empty());
        prop_assert!(fib.routes().next().is_none());
        prop_assert_eq!(fib.lookup_v4(Ipv4Addr::new(10, 1, 0, 1)), None);
        prop_assert_eq!(fib.v4_blocks_in_use(), 0);
    }
}

#[test]
fn groups_change_in_place() {
    let mut fib = Fib::default();
    assert_eq!(
        fib.apply(&FibChange::Insert(
            net("10.0.0.0/8"),
            Target::Ecmp(GroupId(3))
        )),
        Err(FibError::UnknownGroup(3))
    );
    fib.apply(&FibChange::Group(
        GroupId(3),
        vec![TunnelId(7), TunnelId(8)],
    ))
    .unwrap();
    fib.apply(&FibChange::Insert(
        net("10.0.0.0/8"),
        Target::Ecmp(GroupId(3)),
    ))
    .unwrap();
    let t = fib.lookup_v4(Ipv4Addr::new(10, 1, 2, 3)).unwrap();
    assert_eq!(fib.resolve(t, 0), Target::Tunnel(TunnelId(7)));
    assert_eq!(fib.resolve(t, u32::MAX), Target::Tunnel(TunnelId(8)));
    fib.apply(&FibChange::Group(GroupId(3), vec![TunnelId(8)]))
        .unwrap();
    assert_eq!(fib.resolve(t, 0), Target::Tunnel(TunnelId(8)));
    fib.apply(&FibChange::Group(GroupId(3), Vec::new()))
        .unwrap();
    assert_eq!(fib.resolve(t, 0), Target::Blackhole);
    assert_eq!(fib.group_slots(), 4);
    assert!(fib.group(GroupId(1)).is_empty());
}

/// Removing every route folds every block back: the table does not grow
/// under churn.
#[test]
fn churn_does_not_grow_the_table() {
    let mut fib = Fib::default();
    let mut first = 0;
    for round in 0..4u32 {
        for i in 0..512u32 {
            let a = Ipv4Addr::from(0xa9fe_0000 + ((i * 97) % 16_384) * 4);
            let p = IpNet::V4(Ipv4Net::new(a, 30).unwrap());
            fib.apply(&FibChange::Insert(p, Target::Tunnel(TunnelId(i + round))))
                .unwrap();
        }
        if round == 0 {
            first = fib.v4_table_bytes();
        }
        assert!(fib.v4_blocks_in_use() > 100);
        let all: Vec<IpNet> = fib.routes().map(|(p, _)| p).collect();
        for p in all {
            fib.apply(&FibChange::Remove(p)).unwrap();
        }
        assert!(fib.is_empty());
        assert_eq!(fib.v4_blocks_in_use(), 0);
    }
    // 256 /24s at most under 169.254/16, plus one level-2 block.
    assert!(
        fib.v4_table_bytes() <= (65_536 + 257 * 256) * 4,
        "{}",
        fib.v4_table_bytes()
    );
    assert_eq!(fib.v4_table_bytes(), first);
}
