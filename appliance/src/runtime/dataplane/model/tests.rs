//! The model's table, built change by change, against the table a full
//! build of the same configuration, states and BGP routes gives
//! ([`build_fib`], the rule the dataplane followed before it tracked
//! changes).

use std::collections::BTreeMap;

use control::config::{ApplianceConfig, Change, RoutingType, VpnConnection};
use control::dataplane::{DynamicRoute, TunnelKey, TunnelRuntimeState, TunnelUpDown};
use control::logs::IkePhaseState;
use fib::{Fib, FibBuilder, FibChange, Target, TunnelId};
use ipnet::IpNet;
use proptest::prelude::*;

use super::{Model, first_host_v4, first_host_v6};

/// The forwarding table of `config` built from scratch: BGP routes first
/// (through their UP tunnels, else their backup's), then local networks,
/// then each connection in order (static routes through its first UP
/// tunnel, none while neither is; inside CIDRs; our inside address),
/// a later insert replacing an earlier one.
fn build_fib(
    config: &ApplianceConfig,
    ids: &BTreeMap<TunnelKey, TunnelId>,
    states: &BTreeMap<TunnelKey, TunnelRuntimeState>,
    dynamic: &[DynamicRoute],
    up: &[TunnelKey],
) -> FibBuilder {
    let mut b = FibBuilder::new();
    let mut groups: BTreeMap<Vec<TunnelId>, fib::GroupId> = BTreeMap::new();
    let up_ids = |keys: &[TunnelKey]| -> Vec<TunnelId> {
        keys.iter()
            .filter(|k| up.contains(k))
            .filter_map(|k| ids.get(k).copied())
            .collect()
    };
    for r in dynamic {
        let mut members = up_ids(&r.tunnels);
        if members.is_empty() {
            members = up_ids(&r.backup);
        }
        let target = match members.as_slice() {
            [] => continue,
            [t] => Target::Tunnel(*t),
            _ => match groups.get(&members) {
                Some(g) => Target::Ecmp(*g),
                None => {
                    let g = b.add_group(&members).unwrap();
                    groups.insert(members.clone(), g);
                    Target::Ecmp(g)
                }
            },
        };
        b.insert(r.prefix, target).unwrap();
    }
    for n in &config.gateway.local_networks {
        b.insert(*n, Target::Inside).unwrap();
    }
    for c in &config.connections {
        let tid = |i| ids[&key(&c.id, i)];
        let (t0, t1) = (tid(0), tid(1));
        if c.routing == RoutingType::Static && !c.static_routes.is_empty() {
            let primary = [t0, t1].into_iter().enumerate().find(|(i, _)| {
                states
                    .get(&key(&c.id, *i))
                    .is_some_and(|s| s.up_down(c.routing) == TunnelUpDown::Up)
            });
            if let Some((_, t)) = primary {
                let g = b.add_group(&[t]).unwrap();
                for p in &c.static_routes {
                    b.insert(*p, Target::Ecmp(g)).unwrap();
                }
            }
        }
        for (t, tunnel) in [t0, t1].into_iter().zip(&c.tunnels) {
            if let Some(n) = tunnel.inside_ipv4_cidr {
                b.insert(IpNet::V4(n), Target::Tunnel(t)).unwrap();
                if let Some(h) = first_host_v4(n) {
                    b.insert(h, Target::Local).unwrap();
                }
            }
            if let Some(n) = tunnel.inside_ipv6_cidr {
                b.insert(IpNet::V6(n), Target::Tunnel(t)).unwrap();
                if let Some(h) = first_host_v6(n) {
                    b.insert(h, Target::Local).unwrap();
                }
            }
        }
    }
    b
}

fn key(c: &str, tunnel: usize) -> TunnelKey {
    TunnelKey {
        connection_id: c.to_owned(),
        tunnel,
    }
}

/// A route as the workers see it: ECMP groups by their members.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    One(String),
    Group(Vec<u32>),
}

fn seen(fib: &Fib) -> Vec<(IpNet, Seen)> {
    let mut out: Vec<(IpNet, Seen)> = fib
        .routes()
        .map(|(p, t)| {
            let s = match t {
                Target::Ecmp(g) => Seen::Group(fib.group(g).iter().map(|t| t.0).collect()),
                other => Seen::One(format!("{other:?}")),
            };
            (p, s)
        })
        .collect();
    out.sort();
    out
}

const BASE: &str = r#"
[gateway]
id = "tgw-m"
outside_addresses = ["192.0.2.1", "192.0.2.3"]

[dataplane]
worker_lcores = [1]
ports = []
"#;

const CONNS: usize = 5;
const INSIDE_V4: [&str; 4] = [
    "169.254.10.0/30",
    "169.254.11.0/30",
    "169.254.12.0/30",
    "169.254.13.0/30",
];
const INSIDE_V6: [&str; 2] = ["fd00::/126", "fd00::4/126"];
const PREFIXES: [&str; 8] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "192.168.0.0/16",
    "169.254.10.0/30",
    "198.51.100.0/24",
    "0.0.0.0/0",
    "fd00::/126",
];

/// (connection, tunnel) indices.
type Keys = Vec<(usize, usize)>;

#[derive(Debug, Clone)]
enum Op {
    Put {
        conn: usize,
        dynamic: bool,
        statics: Vec<usize>,
        inside: [Option<usize>; 2],
        inside6: Option<usize>,
    },
    Delete(usize),
    State {
        conn: usize,
        tunnel: usize,
        /// 0 down, 1 IPsec up, 2 IPsec and BGP up.
        level: u8,
    },
    Dynamic(Vec<(usize, Keys, Keys)>),
    Local(Vec<usize>),
    ReleaseIds,
}

fn arb_keys() -> impl Strategy<Value = Vec<(usize, usize)>> {
    prop::collection::vec((0..CONNS + 1, 0..2usize), 0..4)
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            0..CONNS,
            any::<bool>(),
            prop::collection::vec(0..PREFIXES.len(), 0..4),
            [prop::option::of(0..INSIDE_V4.len()), prop::option::of(0..INSIDE_V4.len())],
            prop::option::of(0..INSIDE_V6.len()),
        )
            .prop_map(|(conn, dynamic, statics, inside, inside6)| Op::Put {
                conn,
                dynamic,
                statics,
                inside,
                inside6,
            }),
        1 => (0..CONNS).prop_map(Op::Delete),
        4 => (0..CONNS, 0..2usize, 0..3u8).prop_map(|(conn, tunnel, level)| Op::State {
            conn,
            tunnel,
            level,
        }),
        2 => prop::collection::vec((0..PREFIXES.len(), arb_keys(), arb_keys()), 0..6)
            .prop_map(Op::Dynamic),
        1 => prop::collection::vec(0..PREFIXES.len(), 0..3).prop_map(Op::Local),
        1 => Just(Op::ReleaseIds),
    ]
}

fn conn_id(i: usize) -> String {
    format!("c{i}")
}

fn connection(
    conn: usize,
    dynamic: bool,
    statics: &[usize],
    inside: [Option<usize>; 2],
    inside6: Option<usize>,
) -> VpnConnection {
    let mut c = VpnConnection::new(conn_id(conn), "cgw", "tgw-m");
    c.routing = if dynamic {
        RoutingType::Dynamic
    } else {
        RoutingType::Static
    };
    c.static_routes = statics
        .iter()
        .map(|i| PREFIXES[*i].parse().unwrap())
        .collect();
    for (t, i) in c.tunnels.iter_mut().zip(inside) {
        t.inside_ipv4_cidr = i.map(|i| INSIDE_V4[i].parse().unwrap());
    }
    c.tunnels[1].inside_ipv6_cidr = inside6.map(|i| INSIDE_V6[i].parse().unwrap());
    c
}

fn state(level: u8) -> TunnelRuntimeState {
    TunnelRuntimeState {
        ike_phase2_state: if level >= 1 {
            IkePhaseState::Established
        } else {
            IkePhaseState::Down
        },
        bgp_state: (level >= 2).then(|| "Established".to_owned()),
        ..TunnelRuntimeState::default()
    }
}

/// Replays `ops` on a model and on a configuration; returns the model's
/// table (every change applied to one table, as the workers get them) and
/// the one a full build gives.
fn replay(ops: &[Op]) -> (Fib, Fib, Model) {
    let mut model = Model::default();
    let mut config = ApplianceConfig::from_toml_str(BASE).unwrap();
    let mut dynamic: Vec<DynamicRoute> = Vec::new();
    let mut fib = Fib::default();
    let mut states: BTreeMap<TunnelKey, TunnelRuntimeState> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Put {
                conn,
                dynamic: d,
                statics,
                inside,
                inside6,
            } => {
                let c = connection(*conn, *d, statics, *inside, *inside6);
                model.put_connection(&c, None);
                config.apply_change(&Change::PutConnection {
                    connection: Box::new(c),
                });
            }
            Op::Delete(conn) => {
                model.delete_connection(&conn_id(*conn));
                config.apply_change(&Change::DeleteConnection { id: conn_id(*conn) });
                states.retain(|k, _| k.connection_id != conn_id(*conn));
            }
            Op::State {
                conn,
                tunnel,
                level,
            } => {
                let k = key(&conn_id(*conn), *tunnel);
                model.set_state(k.clone(), state(*level));
                if config.connections.iter().any(|c| c.id == k.connection_id) {
                    states.insert(k, state(*level));
                }
            }
            Op::Dynamic(routes) => {
                let keys = |ks: &[(usize, usize)]| -> Vec<TunnelKey> {
                    ks.iter().map(|(c, t)| key(&conn_id(*c), *t)).collect()
                };
                dynamic = routes
                    .iter()
                    .filter(|(_, t, _)| !t.is_empty())
                    .map(|(p, t, b)| DynamicRoute {
                        prefix: PREFIXES[*p].parse().unwrap(),
                        tunnels: keys(t),
                        backup: keys(b),
                        as_path: "65001".to_owned(),
                        med: None,
                        next_hop: "169.254.10.2".parse().unwrap(),
                    })
                    .collect();
                // One route per prefix, as the RIB selects them (the
                // model keeps the last of a prefix listed twice).
                let mut seen = std::collections::HashSet::new();
                dynamic.reverse();
                dynamic.retain(|r| seen.insert(r.prefix));
                dynamic.reverse();
                model.set_dynamic(dynamic.clone());
            }
            Op::Local(ps) => {
                config.gateway.local_networks =
                    ps.iter().map(|i| PREFIXES[*i].parse().unwrap()).collect();
                model.set_local_networks(&config.gateway.local_networks);
            }
            Op::ReleaseIds => model.release_ids(),
        }
        for c in model.take_changes() {
            fib.apply(&c).unwrap();
        }
    }
    let ids: BTreeMap<TunnelKey, TunnelId> = model.ids().map(|(k, t)| (k.clone(), t)).collect();
    let up: Vec<TunnelKey> = ids.keys().filter(|k| model.is_up(k)).cloned().collect();
    let full = build_fib(&config, &ids, &states, &dynamic, &up).build();
    (fib, full, model)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any sequence of connection changes, tunnel states, BGP route sets
    /// and local networks leaves the table a full build gives.
    #[test]
    fn changes_give_the_table_a_full_build_gives(ops in prop::collection::vec(arb_op(), 0..40)) {
        let (fib, full, model) = replay(&ops);
        prop_assert_eq!(seen(&fib), seen(&full));
        // Ids: one per tunnel, both ways, never shared.
        let mut used = std::collections::HashSet::new();
        for (k, t) in model.ids() {
            prop_assert!(used.insert(t.0), "id {} twice", t.0);
            prop_assert_eq!(model.key_of(t), Some(k));
        }
    }
}

/// A connection keeps its ids while others come and go; a new one takes
/// the lowest id free once released.
#[test]
fn ids_are_stable_and_reused_after_release() {
    let mut m = Model::default();
    let a = m.put_connection(&connection(0, false, &[], [None, None], None), None);
    let b = m.put_connection(&connection(1, false, &[], [None, None], None), None);
    assert_eq!(
        (a, b),
        ([TunnelId(0), TunnelId(1)], [TunnelId(2), TunnelId(3)])
    );
    m.delete_connection("c0");
    // Not reused before the table without them is in the workers.
    let c = m.put_connection(&connection(2, false, &[], [None, None], None), None);
    assert_eq!(c, [TunnelId(4), TunnelId(5)]);
    m.release_ids();
    let d = m.put_connection(&connection(3, false, &[], [None, None], None), None);
    assert_eq!(d, [TunnelId(0), TunnelId(1)]);
    // Re-putting keeps them.
    let b2 = m.put_connection(&connection(1, true, &[0], [Some(1), None], None), None);
    assert_eq!(b2, b);
    assert_eq!(m.id(&key("c1", 1)), Some(TunnelId(3)));
    assert_eq!(m.key_of(TunnelId(3)), Some(&key("c1", 1)));
}

/// Spec § 10.2/§ 10.5 on a static connection: its routes are routed
/// while a tunnel is UP, through one primary tunnel (the first UP one, no
/// ECMP); a tunnel changing while the other stays UP changes one group,
/// not the routes; with neither UP they are withdrawn.
#[test]
fn static_routes_follow_one_primary_tunnel_and_leave_with_the_last() {
    let mut m = Model::default();
    m.put_connection(
        &connection(0, false, &[0, 1, 3], [Some(0), Some(1)], None),
        None,
    );
    let first = m.take_changes();
    // The group (tunnel 0, unnamed) and the inside routes; no static
    // route while both tunnels are down.
    assert_eq!(first.len(), 1 + 4, "{first:?}");
    // Tunnel 1 UP: the group names it and the static routes come.
    assert!(m.set_state(key("c0", 1), state(1)));
    let up1 = m.take_changes();
    assert_eq!(
        up1[0],
        FibChange::Group(fib::GroupId(0), vec![TunnelId(1)]),
        "{up1:?}"
    );
    assert_eq!(up1.len(), 1 + 3, "{up1:?}");
    assert!(
        up1[1..]
            .iter()
            .all(|c| matches!(c, FibChange::Insert(_, Target::Ecmp(fib::GroupId(0))))),
        "{up1:?}"
    );
    // Already UP: nothing.
    assert!(!m.set_state(key("c0", 1), state(2)));
    assert!(m.take_changes().is_empty());
    // Tunnel 0 UP too: it becomes the primary, one group change, and
    // no ECMP over both.
    assert!(m.set_state(key("c0", 0), state(2)));
    assert_eq!(
        m.take_changes(),
        [FibChange::Group(fib::GroupId(0), vec![TunnelId(0)])]
    );
    // Tunnel 0 DOWN: back to tunnel 1, routes untouched.
    assert!(m.set_state(key("c0", 0), state(0)));
    assert_eq!(
        m.take_changes(),
        [FibChange::Group(fib::GroupId(0), vec![TunnelId(1)])]
    );
    // The last one DOWN: the three static routes are withdrawn.
    assert!(m.set_state(key("c0", 1), state(0)));
    let down = m.take_changes();
    assert_eq!(down.len(), 3, "{down:?}");
    assert!(
        down.iter().all(|c| matches!(c, FibChange::Remove(_))),
        "{down:?}"
    );
}
