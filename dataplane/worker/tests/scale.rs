//! The worker-level acceptance tests: 10,000 SAs and 10,000
//! routes installed through commands with traffic to a sample of them;
//! a rekey under traffic with nothing lost or duplicated; bad packets of
//! every kind counted by reason, never a panic.

#![allow(
    clippy::cast_possible_truncation,
    reason = "test packets are built with deliberate narrowing"
)]

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use common::*;
use dataplane::crypto::{EspAlgorithm, Integrity};
use dataplane::esp::sa::Direction;
use dataplane::esp::{DropReason, InboundSa, OutboundSa, decap, encap};
use fib::{FibBuilder, Target, TunnelId};
use netbuf::{Prepend, TestBuffer, TrimFromStart};
use worker::{Action, Command, Drop, Event, SaSnapshot, Worker, channel};

const TUNNELS: u32 = 10_000;

fn out_spi(t: u32) -> u32 {
    0x0010_0000 + t
}
fn in_spi(t: u32) -> u32 {
    0x0020_0000 + t
}
/// Tunnel `t`'s remote site: 10.x.y.0/24.
fn site(t: u32) -> [u8; 4] {
    [10, (t >> 8) as u8, t as u8, 0]
}
fn alg_of(t: u32) -> EspAlgorithm {
    match t % 3 {
        0 => EspAlgorithm::Aes128Gcm16,
        1 => EspAlgorithm::Aes256Gcm16,
        _ => EspAlgorithm::Aes128Cbc(Integrity::HmacSha256_128),
    }
}

#[test]
fn ten_thousand_sas_and_routes_through_commands_with_traffic_to_a_sample() {
    let (mut control, end) = channel(256);
    let mut w = Worker::new(end, TUNNELS as usize);
    let (mut done, mut failed) = (0, 0);
    let mut send = |w: &mut Worker, c: Command, drain: bool| {
        let mut c = Some(c);
        loop {
            if let Some(cmd) = c.take() {
                match control.send(cmd) {
                    Ok(_) => {}
                    // Ring full: the worker applies between "bursts".
                    Err(back) => c = Some(back),
                }
            }
            if c.is_some() || drain {
                w.apply_commands();
            }
            while let Some(e) = control.poll_event() {
                match e {
                    Event::Done { .. } => done += 1,
                    Event::Failed { .. } => failed += 1,
                    _ => {}
                }
            }
            if c.is_none() {
                break;
            }
        }
    };
    send(
        &mut w,
        Command::SetAddresses(Box::new(worker::Addresses {
            outside_mac: CONC_MAC,
            outside_gateway_mac: CGW_MAC,
            inside_mac: INSIDE_MAC,
            inside_gateway_mac: VPC_ROUTER_MAC,
            kernel_mac: KERNEL_MAC,
            outside_v4: vec![CONC],
            outside_v6: vec![],
            inside_v4: vec![std::net::Ipv4Addr::new(198, 51, 100, 1)],
        })),
        false,
    );
    let mut fib = FibBuilder::new();
    for t in 0..TUNNELS {
        let alg = alg_of(t);
        let o = sa_config(out_spi(t), alg, Direction::Outbound, CONC, CGW, t % 2 == 0);
        let i = sa_config(in_spi(t), alg, Direction::Inbound, CONC, CGW, t % 2 == 0);
        send(
            &mut w,
            Command::SetOutbound {
                tunnel: TunnelId(t),
                sa: Box::new(OutboundSa::new(&o, 0).unwrap()),
            },
            false,
        );
        send(
            &mut w,
            Command::AddInboundForTunnel {
                tunnel: TunnelId(t),
                sa: Box::new(InboundSa::new(&i, 0).unwrap()),
            },
            false,
        );
        let s = site(t);
        fib.insert(
            format!("{}.{}.{}.0/24", s[0], s[1], s[2]).parse().unwrap(),
            Target::Tunnel(TunnelId(t)),
        )
        .unwrap();
    }
    fib.insert("198.51.100.0/24".parse().unwrap(), Target::Inside)
        .unwrap();
    send(&mut w, Command::SetFib(Arc::new(fib.build())), true);
    assert_eq!((done, failed), (2 + 2 * TUNNELS as usize, 0));
    assert_eq!(w.tables().inbound_len(), TUNNELS as usize);
    assert_eq!(w.tables().outbound_len(), TUNNELS as usize);

    let counters = w.counters();
    // A sample: every 97th tunnel plus the edges.
    let sample: Vec<u32> = (0..TUNNELS).step_by(97).chain([1, TUNNELS - 1]).collect();
    for &t in &sample {
        let alg = alg_of(t);
        let nat_t = t % 2 == 0;
        let s = site(t);
        // The peer's mirror SAs.
        let mut peer_in = InboundSa::new(
            &sa_config(out_spi(t), alg, Direction::Inbound, CGW, CONC, nat_t),
            0,
        )
        .unwrap();
        let mut peer_out = OutboundSa::new(
            &sa_config(in_spi(t), alg, Direction::Outbound, CGW, CONC, nat_t),
            0,
        )
        .unwrap();
        // VPC → site t.
        let inner = udp_v4(
            [198, 51, 100, 2],
            [s[0], s[1], s[2], 7],
            100 + t as usize % 200,
        );
        let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
        assert_eq!(w.handle_inside(&mut b), Action::ToOutside, "tunnel {t}");
        b.trim_from_start(14).unwrap();
        let esp_at = if nat_t { 28 } else { 20 };
        let spi = u32::from_be_bytes(b.as_ref()[esp_at..esp_at + 4].try_into().unwrap());
        assert_eq!(spi, out_spi(t), "the tunnel's SA");
        decap(&mut peer_in, &mut b, esp_at).unwrap();
        assert_eq!(b.as_ref(), &inner[..], "tunnel {t}: intact");
        // Site t → VPC.
        let reply = udp_v4([s[0], s[1], s[2], 7], [198, 51, 100, 2], 50);
        let mut r = TestBuffer::from_slice(&reply);
        encap(&mut peer_out, &mut r).unwrap();
        let eth = r.prepend(14).unwrap();
        eth[..6].copy_from_slice(&CONC_MAC);
        eth[6..12].copy_from_slice(&CGW_MAC);
        eth[12..14].copy_from_slice(&[8, 0]);
        assert_eq!(w.handle_outside(&mut r), Action::ToInside, "tunnel {t}");
        assert_eq!(&r.as_ref()[14..], &reply[..]);
        let c = counters.tunnel(TunnelId(t)).unwrap();
        assert_eq!((c.in_packets, c.out_packets), (1, 1), "tunnel {t}");
        assert_eq!(c.out_bytes, inner.len() as u64);
        assert_eq!(c.in_bytes, reply.len() as u64);
    }
    assert_eq!(w.stats().total_dropped(), 0);
    assert_eq!(w.stats().encap_packets, sample.len() as u64);
    // An unsampled tunnel saw nothing.
    assert_eq!(counters.tunnel(TunnelId(2)).unwrap().out_packets, 0);
}

/// One id per packet in the payload.
fn tagged(id: u32, src: [u8; 4], dst: [u8; 4]) -> TestBuffer {
    let mut p = udp_v4(src, dst, 64);
    p[28..32].copy_from_slice(&id.to_be_bytes());
    frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &p)
}
fn id_of(b: &TestBuffer) -> u32 {
    u32::from_be_bytes(b.as_ref()[14 + 28..14 + 32].try_into().unwrap())
}

fn sas(side: &mut Side) -> HashMap<(u32, bool), SaSnapshot> {
    side.send(Command::SnapshotSas(Box::new(Vec::with_capacity(8))));
    side.events()
        .into_iter()
        .find_map(|e| match e {
            Event::SaSnapshot { sas, .. } => Some(sas),
            _ => None,
        })
        .unwrap()
        .iter()
        .map(|s| ((s.spi, s.inbound), *s))
        .collect()
}

#[test]
fn rekey_under_traffic_loses_and_duplicates_nothing_and_the_old_sas_stop() {
    const N: u32 = 600;
    const IN_FLIGHT: usize = 24;
    let alg = EspAlgorithm::Aes128Gcm16;
    let (mut conc, mut cgw) = pair(alg, false);
    let new_sa = |spi, dir, l, r| sa_config(spi, alg, dir, l, r, false);
    // Packets cross a "wire" that holds IN_FLIGHT packets each way, so
    // packets sealed under the old SAs arrive after the switch.
    let mut to_cgw: VecDeque<TestBuffer> = VecDeque::new();
    let mut to_conc: VecDeque<TestBuffer> = VecDeque::new();
    let mut got_cgw = Vec::new();
    let mut got_conc = Vec::new();
    let mut old_counts_at_switch = None;
    for i in 0..N + IN_FLIGHT as u32 {
        if i < N {
            let mut a = tagged(i, [198, 51, 100, 2], [203, 0, 113, 5]);
            assert_eq!(conc.worker.handle_inside(&mut a), Action::ToOutside);
            to_cgw.push_back(a);
            let mut b = tagged(i, [203, 0, 113, 5], [198, 51, 100, 2]);
            assert_eq!(cgw.worker.handle_inside(&mut b), Action::ToOutside);
            to_conc.push_back(b);
        }
        if to_cgw.len() > IN_FLIGHT || i >= N {
            if let Some(mut a) = to_cgw.pop_front() {
                assert_eq!(cgw.worker.handle_outside(&mut a), Action::ToInside, "{i}");
                got_cgw.push(id_of(&a));
            }
            if let Some(mut b) = to_conc.pop_front() {
                assert_eq!(conc.worker.handle_outside(&mut b), Action::ToInside, "{i}");
                got_conc.push(id_of(&b));
            }
        }
        if i == N / 2 {
            // Make before break: both new inbound SAs first ...
            conc.send(Command::AddInbound(Box::new(
                InboundSa::new(&new_sa(0x3003, Direction::Inbound, CONC, CGW), 0).unwrap(),
            )));
            cgw.send(Command::AddInbound(Box::new(
                InboundSa::new(&new_sa(0x4004, Direction::Inbound, CGW, CONC), 0).unwrap(),
            )));
            // ... then the outbound switch on both sides.
            conc.send(Command::SetOutbound {
                tunnel: TunnelId(0),
                sa: Box::new(
                    OutboundSa::new(&new_sa(0x4004, Direction::Outbound, CONC, CGW), 0).unwrap(),
                ),
            });
            cgw.send(Command::SetOutbound {
                tunnel: TunnelId(0),
                sa: Box::new(
                    OutboundSa::new(&new_sa(0x3003, Direction::Outbound, CGW, CONC), 0).unwrap(),
                ),
            });
            let retired: Vec<u64> = conc
                .events()
                .into_iter()
                .chain(cgw.events())
                .filter_map(|e| match e {
                    Event::RetiredOutbound(sa) => Some(sa.counters().packets),
                    _ => None,
                })
                .collect();
            assert_eq!(
                retired,
                vec![u64::from(N / 2 + 1); 2],
                "sent on the old SAs"
            );
            old_counts_at_switch = Some(retired[0]);
        }
        if i == N / 2 + IN_FLIGHT as u32 + 1 {
            // The wire has drained the old SAs' packets: break.
            let before = sas(&mut conc);
            assert_eq!(
                before[&(0x2002, true)].counters.packets,
                old_counts_at_switch.unwrap(),
                "every packet sent on the old SA arrived on it"
            );
            conc.send(Command::RemoveInbound { spi: 0x2002 });
            cgw.send(Command::RemoveInbound { spi: 0x1001 });
            let old: Vec<u64> = conc
                .events()
                .into_iter()
                .chain(cgw.events())
                .filter_map(|e| match e {
                    Event::RetiredInbound(sa) => Some(sa.counters().packets),
                    _ => None,
                })
                .collect();
            assert_eq!(
                old,
                vec![old_counts_at_switch.unwrap(); 2],
                "old SAs stopped"
            );
        }
    }
    let expect: Vec<u32> = (0..N).collect();
    assert_eq!(
        got_cgw, expect,
        "conc → cgw: none lost, duplicated or reordered"
    );
    assert_eq!(got_conc, expect, "cgw → conc");
    assert_eq!(conc.worker.stats().total_dropped(), 0);
    assert_eq!(cgw.worker.stats().total_dropped(), 0);
    // The new SAs carried the rest.
    let after = sas(&mut conc);
    assert_eq!(
        after[&(0x3003, true)].counters.packets,
        u64::from(N) - old_counts_at_switch.unwrap()
    );
    assert_eq!(
        after[&(0x4004, false)].counters.packets,
        u64::from(N) - old_counts_at_switch.unwrap()
    );
    assert!(!after.contains_key(&(0x2002, true)));
}

/// A tiny deterministic generator for the garbage tests.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn bad_packets_are_counted_by_reason_and_never_panic() {
    for nat_t in [false, true] {
        let alg = EspAlgorithm::Aes128Cbc(Integrity::HmacSha1_96);
        let (mut conc, mut cgw) = pair(alg, nat_t);
        let cfg = sa_config(0x2002, alg, Direction::Inbound, CONC, CGW, nat_t);
        conc.send(Command::AddInboundForTunnel {
            tunnel: TunnelId(0),
            sa: Box::new(InboundSa::new(&cfg, 0).unwrap()),
        });
        let counters = conc.worker.counters();
        let fresh = |cgw: &mut Side| {
            let mut b = tagged(1, [203, 0, 113, 5], [198, 51, 100, 2]);
            assert_eq!(cgw.worker.handle_inside(&mut b), Action::ToOutside);
            b
        };
        let esp_at = 14 + 20 + if nat_t { 8 } else { 0 };
        let mut dropped = 0;
        let mut expect_drop = |conc: &mut Side, mut b: TestBuffer, what: &str| {
            assert_eq!(conc.worker.handle_outside(&mut b), Action::Drop, "{what}");
            dropped += 1;
            assert_eq!(
                conc.worker.stats().total_dropped(),
                dropped,
                "{what}: counted once"
            );
        };
        // Truncated at every length.
        let good = fresh(&mut cgw);
        for len in 0..good.len() {
            expect_drop(
                &mut conc,
                TestBuffer::from_slice(&good.as_ref()[..len]),
                "truncated",
            );
        }
        // Unknown SPI.
        let mut u = fresh(&mut cgw);
        u.as_mut()[esp_at] ^= 0x55;
        expect_drop(&mut conc, u, "unknown SPI");
        assert_eq!(conc.worker.stats().dropped(Drop::UnknownSpi), 1);
        // Tampered: every single byte from the SPI on, of fresh packets
        // (a tampered SPI is an unknown SPI, a tampered sequence number
        // an ICV failure, a tampered anything else an ICV failure).
        let base = fresh(&mut cgw);
        for at in esp_at..base.len() {
            let mut t = base.duplicate();
            t.as_mut()[at] ^= 0x01;
            expect_drop(&mut conc, t, "tampered");
        }
        let icv_fails = conc.worker.stats().esp.get(DropReason::IcvFail);
        assert_eq!(icv_fails, (base.len() - esp_at - 4) as u64);
        // Replayed: accepted once, then dropped.
        let mut ok = base.duplicate();
        assert_eq!(conc.worker.handle_outside(&mut ok), Action::ToInside);
        expect_drop(&mut conc, base.duplicate(), "replayed");
        assert_eq!(conc.worker.stats().esp.get(DropReason::ReplayDuplicate), 1);
        // The tunnel's counters carry the ESP drops of its SA.
        let t0 = counters.tunnel(TunnelId(0)).unwrap();
        assert_eq!(t0.drops.get(DropReason::IcvFail), icv_fails);
        assert_eq!(t0.drops.get(DropReason::ReplayDuplicate), 1);
        assert_eq!((t0.in_packets, conc.worker.stats().decap_packets), (1, 1));
        // Garbage after a valid outer header, and random frames on every
        // port: every Drop is counted (or is a fragment held for
        // reassembly), nothing panics.
        let mut rng = Lcg(7 + u64::from(nat_t));
        let before = conc.worker.stats().clone();
        let mut drops = 0u64;
        let mut count = |a: Action| drops += u64::from(a == Action::Drop);
        for _ in 0..2000 {
            let keep = (rng.next() as usize) % base.len();
            let mut g = base.as_ref()[..keep.max(esp_at + 4)].to_vec();
            g.extend((0..rng.next() % 200).map(|_| rng.next() as u8));
            count(conc.worker.handle_outside(&mut TestBuffer::from_slice(&g)));
            let mut r: Vec<u8> = (0..rng.next() % 300).map(|_| rng.next() as u8).collect();
            if r.len() > 14 && rng.next().is_multiple_of(2) {
                r[12..14].copy_from_slice(&[8, 0]);
                r[14] = 0x45;
            }
            count(conc.worker.handle_outside(&mut TestBuffer::from_slice(&r)));
            count(conc.worker.handle_inside(&mut TestBuffer::from_slice(&r)));
            count(conc.worker.handle_kernel(&mut TestBuffer::from_slice(&r)));
        }
        let after = conc.worker.stats();
        assert_eq!(
            after.total_dropped() - before.total_dropped()
                + (after.fragments_held - before.fragments_held),
            drops
        );
        assert!(drops > 7000, "garbage is mostly dropped: {drops}");
    }
}

/// Waits (bounded) for an event matching `want`, returning it; other
/// events are collected into `seen`.
fn wait_event(
    control: &mut worker::ControlEnd,
    seen: &mut Vec<Event>,
    want: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        while let Some(e) = control.poll_event() {
            if want(&e) {
                return e;
            }
            seen.push(e);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no event from the worker"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn rekey_under_traffic_on_a_running_worker_thread() {
    use std::sync::mpsc;
    use std::time::Duration;
    const N: u32 = 4000;
    const BURST: u32 = 16;
    let alg = EspAlgorithm::Aes256Gcm16;
    let (conc, mut cgw) = pair(alg, false);
    let Side {
        worker: mut w,
        control: mut ctl,
    } = conc;
    let (in_tx, in_rx) = mpsc::sync_channel::<Vec<TestBuffer>>(32);
    let (out_tx, out_rx) = mpsc::channel::<u32>();
    // The worker: commands between bursts, like the DPDK loop.
    let runner = std::thread::spawn(move || {
        loop {
            w.apply_commands();
            match in_rx.recv_timeout(Duration::from_millis(1)) {
                Ok(burst) => {
                    w.begin_burst(burst.len());
                    for mut b in burst {
                        if w.handle_outside(&mut b) == Action::ToInside {
                            out_tx.send(id_of(&b)).unwrap();
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        w.apply_commands();
        w
    });
    let mut seen = Vec::new();
    let mut old_sent = 0u64;
    for start in (0..N).step_by(BURST as usize) {
        if start == N / 2 {
            // Make: the new inbound SA, acknowledged by the running worker
            // while old-SA packets are still queued for it (its own ack:
            // the set-up commands' acks are still in the event ring) ...
            let add = ctl
                .send(Command::AddInbound(Box::new(
                    InboundSa::new(
                        &sa_config(0x3003, alg, Direction::Inbound, CONC, CGW, false),
                        0,
                    )
                    .unwrap(),
                )))
                .unwrap();
            wait_event(
                &mut ctl,
                &mut seen,
                |e| matches!(e, Event::Done { seq } if *seq == add),
            );
            // ... then the peer switches its outbound SA atomically.
            cgw.send(Command::SetOutbound {
                tunnel: TunnelId(0),
                sa: Box::new(
                    OutboundSa::new(
                        &sa_config(0x3003, alg, Direction::Outbound, CGW, CONC, false),
                        0,
                    )
                    .unwrap(),
                ),
            });
            old_sent = cgw
                .events()
                .iter()
                .find_map(|e| match e {
                    Event::RetiredOutbound(sa) => Some(sa.counters().packets),
                    _ => None,
                })
                .unwrap();
        }
        let burst = (start..start + BURST)
            .map(|i| {
                let mut b = tagged(i, [203, 0, 113, 5], [198, 51, 100, 2]);
                assert_eq!(cgw.worker.handle_inside(&mut b), Action::ToOutside);
                b
            })
            .collect();
        in_tx.send(burst).unwrap();
    }
    assert_eq!(old_sent, u64::from(N / 2));
    // Everything arrives, once, in order.
    let got: Vec<u32> = (0..N)
        .map(|_| out_rx.recv_timeout(Duration::from_secs(20)).unwrap())
        .collect();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    // Break: the old inbound SA leaves; its counters stopped at what was
    // sent on it.
    ctl.send(Command::RemoveInbound { spi: 0x2002 }).unwrap();
    let Event::RetiredInbound(old) = wait_event(
        &mut ctl,
        &mut seen,
        |e| matches!(e, Event::RetiredInbound(sa) if sa.spi() == 0x2002),
    ) else {
        unreachable!()
    };
    assert_eq!(old.counters().packets, old_sent);
    drop(in_tx);
    let w = runner.join().unwrap();
    assert_eq!(w.stats().total_dropped(), 0, "{:?}", w.stats());
    assert_eq!(w.stats().decap_packets, u64::from(N));
    let new = w.tables().inbound().find(|sa| sa.spi() == 0x3003).unwrap();
    assert_eq!(new.counters().packets, u64::from(N) - old_sent);
    assert!(out_rx.try_recv().is_err(), "no duplicate");
}
