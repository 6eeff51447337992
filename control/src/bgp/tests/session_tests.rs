//! The session FSM, as protocol scripts.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;

use super::harness::{A_ADDR, A_ASN, B_ADDR, B_ASN, Pair, Scripted, configs, texts};
use crate::bgp::log::{BgpLogEvent, RouteLogStatus};
use crate::bgp::session::{Action, Advert, State};
use crate::bgp::wire::{
    Afi, AsPath, CeaseSubcode, ErrorCode, Message, MpReach, Notification, Origin, PathAttributes,
    Safi, Update,
};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn advert(p: &str) -> Advert {
    Advert {
        prefix: net(p),
        med: Some(100),
        prepend: 0,
        communities: Vec::new(),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Both sides connect at once: the collision is resolved (RFC 4271 § 6.8),
/// one connection survives, Cease 6/7 closes the other, and the logs show
/// the spec's transitions.
#[test]
fn both_active_collide_and_establish_once() {
    let (a, b) = configs();
    let mut p = Pair::new(a, b);
    p.a.handle_start(p.now);
    p.b.handle_start(p.now);
    let took = p.establish(secs(10));
    assert!(took < secs(1), "took {took:?}");
    let open = p.open_links();
    assert_eq!(open.len(), 1, "one connection survives: {open:?}");
    // B (169.254.21.2) has the higher identifier: its connection survives.
    assert!(!open[0].1, "B-initiated connection kept");
    let all = [texts(&p.a_logs), texts(&p.b_logs)].concat();
    assert!(
        all.iter()
            .any(|t| t.contains("sent notification 6/7 (Cease/Connection Collision Resolution)"))
    );
    let a = texts(&p.a_logs);
    for want in [
        "AWS-side peer BGP session state has changed from Idle to Connect with neighbor 169.254.21.2",
        "AWS-side peer BGP session state has changed from Connect to OpenSent with neighbor 169.254.21.2",
        "AWS-side peer BGP session state has changed from OpenSent to OpenConfirm with neighbor 169.254.21.2",
        "AWS-side peer BGP session state has changed from OpenConfirm to Established with neighbor 169.254.21.2",
        "AWS-side peer is initiating connection (via Connect) to neighbor 169.254.21.2",
        "AWS-side peer sent OPEN message to neighbor 169.254.21.2 - version 4, AS 64512, hold time 30, router-id 169.254.21.1",
        "AWS-side peer received OPEN message from neighbor 169.254.21.2 - version 4, AS 65000, hold time 30, router-id 169.254.21.2",
        "AWS-side peer sent an End-of-RIB message to neighbor 169.254.21.2",
    ] {
        assert!(a.iter().any(|t| t == want), "missing {want:?} in {a:#?}");
    }
    let up = p.a_logs.iter().find(
        |l| matches!(l, BgpLogEvent::Status { details, .. } if details.contains("to Established")),
    );
    assert!(matches!(up, Some(BgpLogEvent::Status { up: true, .. })));
    // Stays up on keepalives for five minutes.
    p.run_for(secs(300));
    assert_eq!(
        (p.a.state(), p.b.state()),
        (State::Established, State::Established)
    );
    assert_eq!(p.a.stats().established_transitions, 1);
}

/// The lower identifier's side keeps its own connection when it is the one
/// with the higher id: swap roles and check the other outcome.
#[test]
fn collision_keeps_connection_of_higher_identifier() {
    let (mut a, mut b) = configs();
    a.router_id = Ipv4Addr::new(10, 0, 0, 9);
    b.router_id = Ipv4Addr::new(10, 0, 0, 1);
    let mut p = Pair::new(a, b);
    p.a.handle_start(p.now);
    p.b.handle_start(p.now);
    p.establish(secs(10));
    let open = p.open_links();
    assert_eq!(open.len(), 1);
    assert!(open[0].1, "A-initiated connection kept");
}

/// Hold time negotiated down (RFC 4271 § 4.2): 30 vs 9 → 9, keepalive 3.
#[test]
fn hold_time_negotiated_down() {
    let (a, mut b) = configs();
    b.hold_time_secs = 9;
    b.keepalive_secs = 3;
    b.passive = true;
    let mut p = Pair::new(a, b);
    p.a.handle_start(p.now);
    p.b.handle_start(p.now);
    p.establish(secs(5));
    assert_eq!(p.a.negotiated_hold_time(), Some(secs(9)));
    assert_eq!(p.b.negotiated_hold_time(), Some(secs(9)));
    assert_eq!(p.open_links().len(), 1);
    p.run_for(secs(60));
    assert_eq!(p.a.state(), State::Established);
}

/// A dead path: no keepalives arrive, HoldTimer_Expires after the hold
/// time, NOTIFICATION 4/0 and the spec's log line; routes are withdrawn;
/// the session comes back by itself when the path heals.
#[test]
fn hold_timer_expires_and_session_recovers() {
    let (a, b) = configs();
    let mut p = Pair::new(a, b);
    p.b.set_advertised(p.now, [advert("10.1.0.0/16")]);
    p.a.handle_start(p.now);
    p.b.handle_start(p.now);
    p.establish(secs(10));
    assert!(p.a.received().contains_key(&net("10.1.0.0/16")));
    p.blackhole = true;
    let t0 = p.now;
    while p.a.state() == State::Established {
        p.run_for(Duration::from_millis(500));
        assert!(p.now - t0 < secs(40), "hold timer never fired");
    }
    let down_after = p.now - t0;
    assert!(
        down_after >= secs(20) && down_after <= secs(31),
        "{down_after:?}"
    );
    let a = texts(&p.a_logs);
    assert!(a.iter().any(
        |t| t == "AWS-side peer sent Hold Timer Expired notification to neighbor 169.254.21.2"
    ));
    assert!(a.iter().any(|t| t == "AWS-side peer BGP session state has changed from Established to Idle with neighbor 169.254.21.2"));
    assert!(p.a_routes.contains(&Action::WithdrawAll));
    assert!(p.a.received().is_empty());
    assert_eq!(
        p.a.stats().last_sent_notification,
        Some(Notification::new(ErrorCode::HoldTimerExpired, 0))
    );
    p.blackhole = false;
    // B also lost hold; both restart after the idle hold.
    p.establish(secs(120));
    assert!(p.a.received().contains_key(&net("10.1.0.0/16")));
}

/// Routes both ways, IPv4 and IPv6 (MP-BGP), End-of-RIB, then a withdrawal.
#[test]
fn routes_exchanged_both_ways_with_end_of_rib() {
    let (mut a, mut b) = configs();
    for c in [&mut a, &mut b] {
        c.ipv6 = true;
        c.connected.push(net("fd00::/126"));
    }
    a.local_addr_v6 = Some("fd00::1".parse().unwrap());
    b.local_addr_v6 = Some("fd00::2".parse().unwrap());
    let mut p = Pair::new(a, b);
    p.a.set_advertised(p.now, [advert("10.2.0.0/16"), advert("2001:db8:2::/48")]);
    p.b.set_advertised(
        p.now,
        [
            advert("10.1.0.0/16"),
            advert("10.1.1.0/24"),
            advert("2001:db8:1::/48"),
        ],
    );
    p.a.handle_start(p.now);
    p.b.handle_start(p.now);
    p.establish(secs(10));
    let got_a: Vec<IpNet> = p.a.received().keys().copied().collect();
    assert_eq!(
        got_a,
        vec![
            net("10.1.0.0/16"),
            net("10.1.1.0/24"),
            net("2001:db8:1::/48")
        ]
    );
    let r = &p.a.received()[&net("2001:db8:1::/48")];
    assert_eq!(r.next_hop, "fd00::2".parse::<IpAddr>().unwrap());
    assert_eq!(r.as_path, AsPath::sequence(&[B_ASN]));
    assert_eq!(r.med, Some(100));
    let got_b: Vec<IpNet> = p.b.received().keys().copied().collect();
    assert_eq!(got_b, vec![net("10.2.0.0/16"), net("2001:db8:2::/48")]);
    assert!(p.a_routes.contains(&Action::EndOfRib(Afi::Ipv4)));
    assert!(p.a_routes.contains(&Action::EndOfRib(Afi::Ipv6)));
    assert_eq!(p.a.stats().eor_received, vec![Afi::Ipv4, Afi::Ipv6]);
    assert!(p.a_logs.iter().any(|l| matches!(l, BgpLogEvent::Route(r) if r.status == RouteLogStatus::Advertised && r.prefix == net("10.1.1.0/24") && r.as_path == "65000" && r.med == 100)));
    // B withdraws one prefix; A drops it and logs WITHDRAWN.
    p.b.set_advertised(p.now, [advert("10.1.0.0/16"), advert("2001:db8:1::/48")]);
    p.run_for(Duration::from_millis(50));
    assert!(!p.a.received().contains_key(&net("10.1.1.0/24")));
    assert!(p.a_routes.contains(&Action::Withdraw {
        prefix: net("10.1.1.0/24")
    }));
    assert!(p.a_logs.iter().any(|l| matches!(l, BgpLogEvent::Route(r) if r.status == RouteLogStatus::Withdrawn && r.prefix == net("10.1.1.0/24"))));
    // ... and the IPv6 one through MP_UNREACH.
    p.b.set_advertised(p.now, [advert("10.1.0.0/16")]);
    p.run_for(Duration::from_millis(50));
    assert!(!p.a.received().contains_key(&net("2001:db8:1::/48")));
    // A changed MED is an UPDATED route.
    p.b.set_advertised(
        p.now,
        [Advert {
            med: Some(50),
            ..advert("10.1.0.0/16")
        }],
    );
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.a.received()[&net("10.1.0.0/16")].med, Some(50));
    assert!(p.a_logs.iter().any(
        |l| matches!(l, BgpLogEvent::Route(r) if r.status == RouteLogStatus::Updated && r.med == 50)
    ));
}

/// Prefix limit: warning near the limit (80 %), Cease 6/1 past it with the
/// spec's three log lines; the session stays down for the max-prefix
/// restart time, then comes back.
#[test]
fn prefix_limit_warns_then_ceases() {
    let (mut a, b) = configs();
    a.max_prefixes = 10;
    let mut p = Pair::new(a, b);
    let some = |n: u8| {
        (0..n)
            .map(|i| advert(&format!("10.1.{i}.0/24")))
            .collect::<Vec<_>>()
    };
    p.b.set_advertised(p.now, some(8));
    p.a.handle_start(p.now);
    p.b.handle_start(p.now);
    p.establish(secs(10));
    let a = texts(&p.a_logs);
    assert!(
        a.iter().any(|t| t == "AWS-side peer reported maximum-prefix limit warning - received 8 prefixes from neighbor 169.254.21.2, limit 10"),
        "{a:#?}"
    );
    let t_exceed = p.now;
    p.b.set_advertised(p.now, some(11));
    p.run_for(Duration::from_millis(50));
    let a = texts(&p.a_logs);
    for want in [
        "AWS-side peer detected maximum-prefix limit exceeded - received 11 prefixes from neighbor 169.254.21.2, limit 10",
        "AWS-side peer sent notification 6/1 (Cease/Maximum Number of Prefixes Reached) to neighbor 169.254.21.2",
    ] {
        assert!(a.iter().any(|t| t == want), "missing {want:?}");
    }
    assert!(texts(&p.b_logs).iter().any(|t| t == "AWS-side peer received notification 6/1 (Cease/Maximum Number of Prefixes Reached) from neighbor 169.254.21.1"));
    assert_eq!(p.a.state(), State::Idle);
    assert!(p.a.received().is_empty());
    assert!(p.a_routes.contains(&Action::WithdrawAll));
    let sent = p.a.stats().last_sent_notification.clone().unwrap();
    assert_eq!((sent.code, sent.subcode), (ErrorCode::Cease, 1));
    // RFC 4486 data: AFI 1, SAFI 1, limit 10.
    assert_eq!(sent.data, vec![0, 1, 1, 0, 0, 0, 10]);
    // Down for the max-prefix restart time (60 s), then retried.
    p.run_for(secs(50));
    assert_ne!(p.a.state(), State::Established);
    p.b.set_advertised(p.now, some(5));
    p.establish(secs(30));
    assert!(p.now - t_exceed >= secs(60));
    assert_eq!(p.a.received().len(), 5);
}

fn update_from(as_path: &[u32], nh: Ipv4Addr, prefixes: &[&str]) -> Message {
    Message::Update(Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(as_path)),
            next_hop: Some(nh),
            med: Some(100),
            ..PathAttributes::default()
        },
        nlri: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        ..Update::default()
    })
}

/// Own AS in the AS_PATH and a next hop off the inside /30 are denied with
/// the spec's texts; nothing reaches the RIB; a denied replacement
/// withdraws the previous path.
#[test]
fn own_as_and_unconnected_next_hop_are_denied() {
    let (a, _) = configs();
    let mut s = Scripted::establish(a);
    s.recv(&update_from(&[B_ASN], B_ADDR, &["10.7.0.0/16"]));
    assert!(
        s.actions
            .iter()
            .any(|a| matches!(a, Action::Announce { prefix, .. } if *prefix == net("10.7.0.0/16")))
    );
    s.actions.clear();
    s.recv(&update_from(
        &[B_ASN, A_ASN],
        B_ADDR,
        &["10.7.0.0/16", "10.8.0.0/16"],
    ));
    s.recv(&update_from(
        &[B_ASN],
        Ipv4Addr::new(192, 0, 2, 1),
        &["10.9.0.0/16"],
    ));
    let routes: Vec<(RouteLogStatus, IpNet, Option<String>)> = s
        .logs
        .iter()
        .filter_map(|l| match l {
            BgpLogEvent::Route(r) => Some((r.status, r.prefix, r.details.clone())),
            BgpLogEvent::Status { .. } => None,
        })
        .collect();
    let own = Some("DENIED due to: as-path contains our own AS".to_owned());
    let nh = Some("DENIED due to: nexthop not connected".to_owned());
    assert!(routes.contains(&(RouteLogStatus::Updated, net("10.7.0.0/16"), own.clone())));
    assert!(routes.contains(&(RouteLogStatus::Advertised, net("10.8.0.0/16"), own)));
    assert!(routes.contains(&(RouteLogStatus::Advertised, net("10.9.0.0/16"), nh)));
    assert_eq!(
        s.actions,
        vec![Action::Withdraw {
            prefix: net("10.7.0.0/16")
        }]
    );
    assert!(s.s.received().is_empty());
    assert_eq!(s.s.stats().denied, 3);
    assert_eq!(s.s.state(), State::Established);
    assert!(texts(&s.logs).iter().any(|t| t == "AWS-side peer received attribute update from neighbor 169.254.21.2 - AS path: 65000 64512"));
}

/// IPv6 next hops: the inside /126 and link-local are connected.
#[test]
fn ipv6_next_hop_checks() {
    let (mut a, _) = configs();
    a.ipv6 = true;
    a.connected.push(net("fd00::/126"));
    let mut s = Scripted::establish(a);
    let mp = |nh: &str, p: &str| {
        Message::Update(Update {
            attributes: PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::sequence(&[B_ASN])),
                mp_reach: Some(MpReach {
                    afi: Afi::Ipv6,
                    safi: Safi::Unicast,
                    next_hops: vec![nh.parse().unwrap()],
                    nlri: vec![net(p)],
                }),
                ..PathAttributes::default()
            },
            ..Update::default()
        })
    };
    s.recv(&mp("fd00::2", "2001:db8:1::/48"));
    s.recv(&mp("fe80::2", "2001:db8:2::/48"));
    s.recv(&mp("2001:db8::9", "2001:db8:3::/48"));
    let got: Vec<IpNet> = s.s.received().keys().copied().collect();
    assert_eq!(got, vec![net("2001:db8:1::/48"), net("2001:db8:2::/48")]);
}

/// RFC 7606 inside the session: a malformed ORIGIN withdraws the prefix and
/// keeps the session; a malformed NLRI resets it with 3/10.
#[test]
fn treat_as_withdraw_keeps_session_and_reset_closes_it() {
    let (a, _) = configs();
    let mut s = Scripted::establish(a);
    s.recv(&update_from(&[B_ASN], B_ADDR, &["10.7.0.0/16"]));
    let Message::Update(mut bad) = update_from(&[B_ASN], B_ADDR, &["10.7.0.0/16"]) else {
        unreachable!()
    };
    bad.attributes.origin = Some(Origin::from(9));
    s.actions.clear();
    s.recv(&Message::Update(bad));
    assert_eq!(
        s.actions,
        vec![Action::Withdraw {
            prefix: net("10.7.0.0/16")
        }]
    );
    assert_eq!(s.s.state(), State::Established);
    assert_eq!(s.s.stats().treat_as_withdraw, 1);
    // NLRI with prefix length 40.
    let mut b = vec![0xff; 16];
    b.extend_from_slice(&[0, 27, 2, 0, 0, 0, 0, 40, 10, 0, 0, 0, 0]);
    b.truncate(27);
    s.sent.clear();
    s.recv_bytes(&b);
    assert!(
        matches!(s.sent.last(), Some(Message::Notification(n)) if n.code == ErrorCode::Update && n.subcode == 10)
    );
    assert_eq!(s.s.state(), State::Idle);
    assert!(s.actions.contains(&Action::WithdrawAll));
}

/// OPEN checks: wrong AS → 2/2 with the spec's "bad OPEN" line.
#[test]
fn bad_peer_as_is_refused() {
    let (a, _) = configs();
    let mut s = Scripted::new(a);
    s.recv(&Message::Open(Scripted::peer_open(65999, 30)));
    assert!(
        matches!(s.sent.last(), Some(Message::Notification(n)) if n.code == ErrorCode::Open && n.subcode == 2)
    );
    assert!(texts(&s.logs).iter().any(|t| t == "AWS-side peer detected bad OPEN message from neighbor 169.254.21.2 - remote AS is 65999, expected 65000"));
    assert_eq!(s.s.state(), State::Idle);
    // Hold time 2 → 2/6.
    let (a, _) = configs();
    let mut s = Scripted::new(a);
    s.recv(&Message::Open(Scripted::peer_open(B_ASN, 2)));
    assert!(
        matches!(s.sent.last(), Some(Message::Notification(n)) if n.code == ErrorCode::Open && n.subcode == 6)
    );
}

/// An UPDATE in OpenSent is an FSM error (RFC 6608 subcode 1).
#[test]
fn unexpected_message_is_fsm_error() {
    let (a, _) = configs();
    let mut s = Scripted::new(a);
    s.recv(&update_from(&[B_ASN], B_ADDR, &["10.7.0.0/16"]));
    assert!(
        matches!(s.sent.last(), Some(Message::Notification(n)) if n.code == ErrorCode::Fsm && n.subcode == 1)
    );
    assert_eq!(s.s.state(), State::Idle);
}

/// ManualStop sends Cease 6/2; a peer's NOTIFICATION is logged; 4-octet
/// peer AS works through AS_TRANS.
#[test]
fn stop_and_four_octet_peer() {
    let (mut a, _) = configs();
    a.peer_asn = 4_200_000_001;
    let mut s = Scripted::establish(a);
    assert_eq!(s.s.state(), State::Established);
    s.s.handle_stop(s.now, CeaseSubcode::AdministrativeShutdown);
    s.drain();
    assert!(
        matches!(s.sent.last(), Some(Message::Notification(n)) if n.code == ErrorCode::Cease && n.subcode == 2)
    );
    assert!(texts(&s.logs).iter().any(|t| t == "AWS-side peer sent notification 6/2 (Cease/Administrative Shutdown) to neighbor 169.254.21.2"));
    assert_eq!(s.s.state(), State::Idle);
    // Stopped: no restart.
    s.advance(secs(600));
    assert!(!s.actions.iter().skip(1).any(|a| *a == Action::Connect));
}

/// Connect fails (nothing listens): Connect → Active, retried on the
/// ConnectRetryTimer, and established once the peer listens.
#[test]
fn connect_retry_until_peer_listens() {
    let (a, mut b) = configs();
    b.passive = true;
    let mut p = Pair::new(a, b);
    p.b_refuses = true;
    p.a.handle_start(p.now);
    p.b.handle_start(p.now);
    p.run_for(secs(12));
    assert!(matches!(p.a.state(), State::Connect | State::Active));
    let a = texts(&p.a_logs);
    assert!(a.iter().any(|t| t == "AWS-side peer BGP session state has changed from Connect to Active with neighbor 169.254.21.2"));
    assert!(
        a.iter()
            .filter(|t| t.contains("initiating connection"))
            .count()
            >= 3
    );
    p.b_refuses = false;
    p.establish(secs(10));
}

/// Arbitrary bytes into an established session never panic.
#[test]
fn garbage_never_panics() {
    use proptest::prelude::*;
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..300), |bytes| {
            let (a, _) = configs();
            let mut s = Scripted::establish(a);
            let mut framed = vec![0xff; 16];
            framed.extend_from_slice(
                &u16::try_from((bytes.len() + 19).min(4096))
                    .unwrap()
                    .to_be_bytes(),
            );
            framed.push(2);
            framed.extend_from_slice(&bytes);
            s.recv_bytes(&framed);
            s.recv_bytes(&bytes);
            Ok(())
        })
        .unwrap();
    let _ = A_ADDR;
}

fn gr_open(asn: u32, forwarding: bool) -> Message {
    let mut o = Scripted::peer_open(asn, 30);
    o.capabilities
        .push(crate::bgp::wire::Capability::GracefulRestart {
            restarting: false,
            time_secs: 120,
            families: vec![(Afi::Ipv4, Safi::Unicast, if forwarding { 0x80 } else { 0 })],
        });
    Message::Open(o)
}

/// Reconnects a scripted session that lost its connection.
fn reconnect(s: &mut Scripted, open: &Message) {
    s.actions.clear();
    s.advance(secs(10));
    assert!(s.actions.contains(&Action::Connect), "{:?}", s.actions);
    s.conn = crate::bgp::session::ConnId(8);
    let now = s.now;
    s.s.handle_connected(now, s.conn, crate::bgp::session::Direction::Outgoing);
    s.drain();
    s.recv(open);
    s.recv(&Message::Keepalive);
    assert_eq!(s.s.state(), State::Established);
}

/// RFC 4724 helper: the peer's TCP connection dies (it restarts); its
/// routes stay (stale) instead of being withdrawn; after it is back, routes
/// it re-announces stay and the others go at its End-of-RIB.
#[test]
fn graceful_restart_keeps_routes_until_end_of_rib() {
    let (a, _) = configs();
    let mut s = Scripted::new(a);
    s.recv(&gr_open(B_ASN, true));
    s.recv(&Message::Keepalive);
    s.recv(&update_from(
        &[B_ASN],
        B_ADDR,
        &["10.7.0.0/16", "10.8.0.0/16"],
    ));
    s.actions.clear();
    let now = s.now;
    s.s.handle_closed(now, s.conn);
    s.drain();
    assert_eq!(s.s.state(), State::Idle);
    assert!(!s.actions.contains(&Action::WithdrawAll), "{:?}", s.actions);
    assert!(
        !s.actions
            .iter()
            .any(|a| matches!(a, Action::Withdraw { .. }))
    );
    assert_eq!(s.s.received().len(), 2);
    assert!(
        texts(&s.logs)
            .iter()
            .any(|t| t.contains("retained 2 routes from neighbor 169.254.21.2 as stale"))
    );
    reconnect(&mut s, &gr_open(B_ASN, true));
    s.actions.clear();
    s.recv(&update_from(&[B_ASN], B_ADDR, &["10.7.0.0/16"]));
    s.recv(&Message::Update(Update::end_of_rib(
        Afi::Ipv4,
        Safi::Unicast,
    )));
    assert_eq!(
        s.actions,
        vec![
            Action::Withdraw {
                prefix: net("10.8.0.0/16")
            },
            Action::EndOfRib(Afi::Ipv4)
        ]
    );
    let got: Vec<IpNet> = s.s.received().keys().copied().collect();
    assert_eq!(got, vec![net("10.7.0.0/16")]);
}

/// The peer does not come back within its restart time: stale routes go.
/// And a peer without the capability loses its routes at once.
#[test]
fn graceful_restart_timer_and_no_capability() {
    let (a, _) = configs();
    let mut s = Scripted::new(a.clone());
    s.recv(&gr_open(B_ASN, true));
    s.recv(&Message::Keepalive);
    s.recv(&update_from(&[B_ASN], B_ADDR, &["10.7.0.0/16"]));
    let now = s.now;
    s.s.handle_closed(now, s.conn);
    s.drain();
    s.actions.clear();
    s.advance(secs(119));
    assert!(
        !s.actions
            .iter()
            .any(|a| matches!(a, Action::Withdraw { .. }))
    );
    s.advance(secs(2));
    assert!(s.actions.contains(&Action::Withdraw {
        prefix: net("10.7.0.0/16")
    }));
    assert!(s.s.received().is_empty());
    // Back without the F bit: stale routes go when it is Established.
    let mut s = Scripted::new(a.clone());
    s.recv(&gr_open(B_ASN, true));
    s.recv(&Message::Keepalive);
    s.recv(&update_from(&[B_ASN], B_ADDR, &["10.7.0.0/16"]));
    let now = s.now;
    s.s.handle_closed(now, s.conn);
    reconnect(&mut s, &gr_open(B_ASN, false));
    assert!(s.actions.contains(&Action::Withdraw {
        prefix: net("10.7.0.0/16")
    }));
    // No capability: WithdrawAll at once.
    let mut s = Scripted::establish(a);
    s.recv(&update_from(&[B_ASN], B_ADDR, &["10.7.0.0/16"]));
    let now = s.now;
    s.s.handle_closed(now, s.conn);
    s.drain();
    assert!(s.actions.contains(&Action::WithdrawAll));
}

/// ROUTE-REFRESH both ways (RFC 2918): asking sends the message when the
/// peer supports it; receiving one re-sends our routes.
#[test]
fn route_refresh() {
    let (a, b) = configs();
    let mut p = Pair::new(a, b);
    p.a.set_advertised(p.now, [advert("10.2.0.0/16")]);
    p.a.handle_start(p.now);
    p.b.handle_start(p.now);
    p.establish(secs(10));
    p.b_routes.clear();
    assert!(p.b.request_refresh(Afi::Ipv4));
    p.run_for(Duration::from_millis(50));
    // A re-sent its route: B sees an identical path (no new action, no
    // error) and stays up.
    assert_eq!(p.b.state(), State::Established);
    assert!(p.b.received().contains_key(&net("10.2.0.0/16")));
    let (a, _) = configs();
    let mut s = Scripted::establish(a);
    let now = s.now;
    s.s.set_advertised(now, [advert("10.2.0.0/16")]);
    s.drain();
    assert!(
        !s.s.request_refresh(Afi::Ipv4),
        "peer_open has no route refresh capability"
    );
    s.sent.clear();
    s.recv(&Message::RouteRefresh(crate::bgp::wire::RouteRefresh {
        afi: Afi::Ipv4,
        subtype: 0,
        safi: Safi::Unicast,
    }));
    let want: Vec<ipnet::Ipv4Net> = vec!["10.2.0.0/16".parse().unwrap()];
    assert!(
        s.sent
            .iter()
            .any(|m| matches!(m, Message::Update(u) if u.nlri == want)),
        "{:?}",
        s.sent
    );
    assert_eq!(s.s.state(), State::Established);
}
