//! Per-tunnel rate policy through the worker pipeline: both directions
//! policed on their own, drops counted as `policed` per worker and per
//! tunnel and direction, the rate kept in virtual time, the worker-wide
//! switch and the commands' failures.

mod common;

use common::*;
use dataplane::crypto::EspAlgorithm;
use dataplane::esp::InboundSa;
use dataplane::esp::sa::Direction;
use fib::TunnelId;
use worker::policy::{Bandwidth, Limit, RatePolicy, caps_for};
use worker::{Action, Command, Drop, Event};

const ALG: EspAlgorithm = EspAlgorithm::Aes128Gcm16;

/// `pair` with conc's inbound SA attributed to tunnel 0.
fn counted_pair() -> (Side, Side) {
    let (mut conc, cgw) = pair(ALG, false);
    let cfg = sa_config(0x2002, ALG, Direction::Inbound, CONC, CGW, false);
    conc.send(Command::AddInboundForTunnel {
        tunnel: TunnelId(0),
        sa: Box::new(InboundSa::new(&cfg, 0).unwrap()),
    });
    let _ = conc.events();
    (conc, cgw)
}

fn out_frame(payload: usize) -> netbuf::TestBuffer {
    frame(
        INSIDE_MAC,
        VPC_ROUTER_MAC,
        0x0800,
        &udp_v4([198, 51, 100, 2], [203, 0, 113, 9], payload),
    )
}

fn in_frame(payload: usize) -> netbuf::TestBuffer {
    frame(
        INSIDE_MAC,
        VPC_ROUTER_MAC,
        0x0800,
        &udp_v4([203, 0, 113, 9], [198, 51, 100, 2], payload),
    )
}

/// 5 packets/s, burst 3, no byte cap.
const FIVE_PPS: RatePolicy = RatePolicy {
    bytes: None,
    packets: Some(Limit {
        per_sec: 5,
        burst: 3,
    }),
};

#[test]
fn both_directions_policed_separately_and_counted_by_reason() {
    let (mut conc, mut cgw) = counted_pair();
    conc.send(Command::SetTunnelPolicy {
        tunnel: TunnelId(0),
        policy: FIVE_PPS,
    });
    assert!(matches!(conc.events()[..], [Event::Done { .. }]));
    assert!(conc.worker.has_tunnel_policy(TunnelId(0)));
    // Out: the burst of 3 passes, the next 2 are policed.
    let out: Vec<Action> = (0..5)
        .map(|_| conc.worker.handle_inside(&mut out_frame(100)))
        .collect();
    assert_eq!(out[..3], [Action::ToOutside; 3]);
    assert_eq!(out[3..], [Action::Drop; 2]);
    // In: its own bucket, still full: 3 pass, then 4 policed.
    let mut got = Vec::new();
    for _ in 0..7 {
        let mut b = in_frame(100);
        assert_eq!(cgw.worker.handle_inside(&mut b), Action::ToOutside);
        got.push(conc.worker.handle_outside(&mut b));
    }
    assert_eq!(got[..3], [Action::ToInside; 3]);
    assert_eq!(got[3..], [Action::Drop; 4]);
    let st = conc.worker.stats();
    assert_eq!(st.dropped(Drop::Policed), 6);
    assert_eq!(st.total_dropped(), 6);
    assert_eq!((st.encap_packets, st.decap_packets), (3, 3));
    let t = conc.worker.counters().tunnel(TunnelId(0)).unwrap();
    assert_eq!((t.policed_out, t.policed_in), (2, 4));
    assert_eq!((t.out_packets, t.in_packets), (3, 3));
    assert_eq!(t.total_dropped(), 6);
    assert_eq!(Drop::Policed.name(), "policed");
    // 200 ms later one token each way (5/s).
    conc.worker.handle_time_ms(200);
    assert_eq!(
        conc.worker.handle_inside(&mut out_frame(100)),
        Action::ToOutside
    );
    assert_eq!(conc.worker.handle_inside(&mut out_frame(100)), Action::Drop);
    let mut b = in_frame(100);
    assert_eq!(cgw.worker.handle_inside(&mut b), Action::ToOutside);
    assert_eq!(conc.worker.handle_outside(&mut b), Action::ToInside);
}

#[test]
fn switch_and_clear() {
    let (mut conc, _cgw) = counted_pair();
    conc.send(Command::SetTunnelPolicy {
        tunnel: TunnelId(0),
        policy: FIVE_PPS,
    });
    conc.send(Command::SetPolicing { enabled: false });
    assert!(!conc.worker.policing());
    for _ in 0..20 {
        assert_eq!(
            conc.worker.handle_inside(&mut out_frame(10)),
            Action::ToOutside
        );
    }
    conc.send(Command::SetPolicing { enabled: true });
    let passed = (0..20)
        .filter(|_| conc.worker.handle_inside(&mut out_frame(10)) == Action::ToOutside)
        .count();
    assert_eq!(passed, 3);
    conc.send(Command::ClearTunnelPolicy {
        tunnel: TunnelId(0),
    });
    assert!(!conc.worker.has_tunnel_policy(TunnelId(0)));
    assert_eq!(
        conc.worker.handle_inside(&mut out_frame(10)),
        Action::ToOutside
    );
    let _ = conc.events();
    // Clearing twice and a tunnel beyond the capacity fail.
    conc.send(Command::ClearTunnelPolicy {
        tunnel: TunnelId(0),
    });
    conc.send(Command::SetTunnelPolicy {
        tunnel: TunnelId(1_000_000),
        policy: FIVE_PPS,
    });
    let ev = conc.events();
    assert!(
        matches!(ev[..], [Event::Failed { .. }, Event::Failed { .. }]),
        "{ev:?}"
    );
}

/// The concentrator-site cap (100 Mbps, 10,000 pps) over 2 s of virtual
/// time with 1 ms ticks, offered twice the packet rate with 400-byte
/// inner packets (the packet cap binds) and then 1400-byte ones (the
/// byte cap binds): within 1 %.
#[test]
fn concentrator_caps_hold_in_virtual_time_through_the_pipeline() {
    let (mut conc, _cgw) = counted_pair();
    let caps = caps_for(Bandwidth::ConcentratorSite);
    conc.send(Command::SetTunnelPolicy {
        tunnel: TunnelId(0),
        policy: RatePolicy::from_caps(caps),
    });
    let mut now = 0;
    let mut run = |conc: &mut Side, payload: usize, per_ms: usize| {
        let mut sent = 0u64;
        for _ in 0..2000 {
            now += 1;
            conc.worker.handle_time_ms(now);
            for _ in 0..per_ms {
                if conc.worker.handle_inside(&mut out_frame(payload)) == Action::ToOutside {
                    sent += 1;
                }
            }
        }
        sent
    };
    // Packet cap: 10,000/s × 2 s.
    let pkts = run(&mut conc, 400 - 28, 12);
    assert!(pkts.abs_diff(20_000) * 100 < 20_000, "{pkts}");
    // Byte cap: 12,500,000 B/s × 2 s / 1400 B.
    let pkts = run(&mut conc, 1400 - 28, 12);
    let expect = 12_500_000 * 2 / 1400;
    assert!(pkts.abs_diff(expect) * 100 < expect, "{pkts} vs {expect}");
    let t = conc.worker.counters().tunnel(TunnelId(0)).unwrap();
    assert_eq!(t.policed_out, 2 * 2000 * 12 - t.out_packets);
}
