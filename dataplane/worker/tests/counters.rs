//! Per-tunnel and per-SA counters: exact packets and bytes both ways,
//! drops by reason, summed over workers, read while a worker thread runs.

#![allow(
    clippy::cast_possible_truncation,
    reason = "test packets are built with deliberate narrowing"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use dataplane::crypto::EspAlgorithm;
use dataplane::esp::sa::Direction;
use dataplane::esp::{DropReason, InboundSa, OutboundSa, shared_seq};
use fib::{Target, TunnelId};
use worker::{Action, Command, Event, SaSnapshot, TunnelSnapshot, sum_tunnel};

const ALG: EspAlgorithm = EspAlgorithm::Aes256Gcm16;

/// `pair`, with conc's inbound SA attributed to tunnel 0.
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

fn snapshot_sas(side: &mut Side) -> Vec<SaSnapshot> {
    side.send(Command::SnapshotSas(Box::new(Vec::with_capacity(16))));
    side.events()
        .into_iter()
        .find_map(|e| match e {
            Event::SaSnapshot { sas, truncated } => {
                assert!(!truncated);
                Some(*sas)
            }
            _ => None,
        })
        .expect("a snapshot")
}

#[test]
fn tunnel_counters_count_inner_bytes_both_ways_and_drops_by_reason() {
    let (mut conc, mut cgw) = counted_pair();
    let handle = conc.worker.counters();
    // Out: 3 packets of 100, 200 and 1000 inner bytes (TunnelDataOut counts
    // before encryption).
    for len in [100usize, 200, 1000] {
        let mut b = frame(
            INSIDE_MAC,
            VPC_ROUTER_MAC,
            0x0800,
            &udp_v4([198, 51, 100, 2], [203, 0, 113, 9], len - 28),
        );
        assert_eq!(conc.worker.handle_inside(&mut b), Action::ToOutside);
    }
    // In: 2 packets of 60 and 1400 bytes (TunnelDataIn: after decryption).
    let mut sent_in = Vec::new();
    for len in [60usize, 1400] {
        let mut b = frame(
            INSIDE_MAC,
            VPC_ROUTER_MAC,
            0x0800,
            &udp_v4([203, 0, 113, 9], [198, 51, 100, 2], len - 28),
        );
        assert_eq!(cgw.worker.handle_inside(&mut b), Action::ToOutside);
        sent_in.push(b.duplicate());
        assert_eq!(conc.worker.handle_outside(&mut b), Action::ToInside);
    }
    // Drops: a replay, a tampered packet, a too-big DF packet, and a packet
    // to a tunnel without SA.
    assert_eq!(
        conc.worker.handle_outside(&mut sent_in[0].duplicate()),
        Action::Drop
    );
    let mut t = frame(
        INSIDE_MAC,
        VPC_ROUTER_MAC,
        0x0800,
        &udp_v4([203, 0, 113, 9], [198, 51, 100, 2], 300),
    );
    assert_eq!(cgw.worker.handle_inside(&mut t), Action::ToOutside);
    let n = t.len();
    t.as_mut()[n - 1] ^= 0x80;
    assert_eq!(conc.worker.handle_outside(&mut t), Action::Drop);
    let mut big = frame(
        INSIDE_MAC,
        VPC_ROUTER_MAC,
        0x0800,
        &udp_v4([198, 51, 100, 2], [203, 0, 113, 9], 1600),
    );
    assert_eq!(conc.worker.handle_inside(&mut big), Action::Drop);
    conc.routes(&[
        ("203.0.113.0/24", Target::Tunnel(TunnelId(0))),
        ("203.0.114.0/24", Target::Tunnel(TunnelId(5))),
    ]);
    let mut nosa = frame(
        INSIDE_MAC,
        VPC_ROUTER_MAC,
        0x0800,
        &udp_v4([198, 51, 100, 2], [203, 0, 114, 1], 10),
    );
    assert_eq!(conc.worker.handle_inside(&mut nosa), Action::Drop);

    let t0 = handle.tunnel(TunnelId(0)).unwrap();
    let mut want = TunnelSnapshot {
        in_packets: 2,
        in_bytes: 1460,
        out_packets: 3,
        out_bytes: 1300,
        no_sa: 0,
        drops: Default::default(),
        ..TunnelSnapshot::default()
    };
    want.drops.count(DropReason::ReplayDuplicate);
    want.drops.count(DropReason::IcvFail);
    want.drops.count(DropReason::TooBig);
    assert_eq!(t0, want);
    let t5 = handle.tunnel(TunnelId(5)).unwrap();
    assert_eq!((t5.no_sa, t5.total_dropped()), (1, 1));
    assert_eq!(handle.unattributed(), TunnelSnapshot::default());
    assert!(handle.tunnel(TunnelId(1_000_000)).is_none());

    // Per SA: the same numbers, from the SAs themselves.
    let sas = snapshot_sas(&mut conc);
    let inb = sas.iter().find(|s| s.inbound).unwrap();
    assert_eq!(
        (
            inb.spi,
            inb.tunnel,
            inb.counters.packets,
            inb.counters.bytes
        ),
        (0x2002, Some(TunnelId(0)), 2, 1460)
    );
    let out = sas.iter().find(|s| !s.inbound).unwrap();
    assert_eq!(
        (
            out.spi,
            out.tunnel,
            out.counters.packets,
            out.counters.bytes
        ),
        (0x1001, Some(TunnelId(0)), 3, 1300)
    );
    // A vector too small says so.
    conc.send(Command::SnapshotSas(Box::new(Vec::with_capacity(1))));
    assert!(conc.events().iter().any(|e| matches!(
        e,
        Event::SaSnapshot { sas, truncated: true } if sas.len() == 1
    )));
}

#[test]
fn the_control_core_sums_workers_while_one_runs() {
    // Two workers carry tunnel 0 (shared sequence counter); one runs on a
    // thread while the control core reads its counters.
    let counter = shared_seq();
    let mut workers: Vec<Side> = (0..2)
        .map(|_| {
            let mut s = Side::new(CONC, CONC_MAC, CGW_MAC);
            let cfg = sa_config(0x1001, ALG, Direction::Outbound, CONC, CGW, false);
            s.send(Command::SetOutbound {
                tunnel: TunnelId(0),
                sa: Box::new(
                    OutboundSa::new(&cfg, 0)
                        .unwrap()
                        .with_shared_seq(counter.clone()),
                ),
            });
            s.routes(&[("203.0.113.0/24", Target::Tunnel(TunnelId(0)))]);
            s
        })
        .collect();
    let handles: Vec<_> = workers.iter().map(|w| w.worker.counters()).collect();
    let packet = udp_v4([198, 51, 100, 2], [203, 0, 113, 9], 72); // 100 bytes
    // Worker 1: 10 packets, here.
    for _ in 0..10 {
        let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &packet);
        assert_eq!(workers[1].worker.handle_inside(&mut b), Action::ToOutside);
    }
    // Worker 0: 20,000 packets on a thread.
    let mut w0 = workers.swap_remove(0);
    let done = Arc::new(AtomicBool::new(false));
    let runner = {
        let done = done.clone();
        let packet = packet.clone();
        std::thread::spawn(move || {
            for burst in 0..625 {
                w0.worker.begin_burst(32);
                for _ in 0..32 {
                    let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &packet);
                    assert_eq!(
                        w0.worker.handle_inside(&mut b),
                        Action::ToOutside,
                        "{burst}"
                    );
                }
            }
            done.store(true, Ordering::Release);
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = TunnelSnapshot::default();
    let mut reads = 0;
    loop {
        let finished = done.load(Ordering::Acquire);
        let s = sum_tunnel(&handles, TunnelId(0));
        assert!(s.out_packets >= last.out_packets && s.out_bytes >= last.out_bytes);
        assert!(s.out_packets >= 10);
        last = s;
        reads += 1;
        if finished {
            break;
        }
        assert!(Instant::now() < deadline, "worker thread too slow");
        std::thread::yield_now();
    }
    runner.join().unwrap();
    let s = sum_tunnel(&handles, TunnelId(0));
    assert_eq!(s.out_packets, 20_010);
    assert_eq!(s.out_bytes, 20_010 * 100);
    assert_eq!(s.total_dropped(), 0);
    assert!(reads >= 1);
}
