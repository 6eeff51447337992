//! [`Worker::handle_burst_io`] (the burst loop that looks the packets
//! ahead up and prefetches their state) against the one-packet
//! `handle_*_io`: the same frames through two identically configured
//! workers come out the same — the same frames, byte for byte, in the same
//! order, with the same actions — and leave the same counters, for a mix of
//! tunnels, an ECMP route, fragmentation, drops of every kind, punts and
//! ARP, on the inside and the outside port.

#![allow(
    clippy::cast_possible_truncation,
    reason = "test packets are built with deliberate narrowing"
)]

mod common;

use std::sync::Arc;

use common::*;
use dataplane::crypto::{CryptoBackend, EspAlgorithm};
use dataplane::esp::sa::Direction;
use dataplane::esp::{InboundSa, OutboundSa};
use fib::{FibBuilder, Target, TunnelId};
use netbuf::TestBuffer;
use worker::{Action, Command, Event, Ingress, NO_OWNER, Worker};

const TUNNELS: u32 = 12;
const BURST: usize = 32;

fn alg_of(t: u32) -> EspAlgorithm {
    if t.is_multiple_of(2) {
        EspAlgorithm::Aes128Gcm16
    } else {
        EspAlgorithm::Aes256Gcm16
    }
}

/// The concentrator: tunnel `t` to the gateway with outbound SPI
/// `0x1000 + t`, inbound `0x2000 + t`, route `10.0.t.0/24`; an ECMP route
/// over tunnels 0-3; the VPC inside; a local address.
fn concentrator() -> Side {
    concentrator_with(CryptoBackend::Ring, alg_of)
}

/// [`concentrator`] with its SAs on `backend`, tunnel `t` with suite
/// `alg(t)`.
fn concentrator_with(backend: CryptoBackend, alg: fn(u32) -> EspAlgorithm) -> Side {
    let mut conc = Side::new(CONC, CONC_MAC, CGW_MAC);
    let mut fib = FibBuilder::new();
    for t in 0..TUNNELS {
        let cfg = |spi, dir| sa_config(spi, alg(t), dir, CONC, CGW, false);
        conc.send(Command::SetOutbound {
            tunnel: TunnelId(t),
            sa: Box::new(
                OutboundSa::new_with(&cfg(0x1000 + t, Direction::Outbound), 0, backend).unwrap(),
            ),
        });
        conc.send(Command::AddInboundForTunnel {
            tunnel: TunnelId(t),
            sa: Box::new(
                InboundSa::new_with(&cfg(0x2000 + t, Direction::Inbound), 0, backend).unwrap(),
            ),
        });
        fib.insert(
            format!("10.0.{t}.0/24").parse().unwrap(),
            Target::Tunnel(TunnelId(t)),
        )
        .unwrap();
    }
    let g = fib
        .add_group(&[TunnelId(0), TunnelId(1), TunnelId(2), TunnelId(3)])
        .unwrap();
    fib.insert("10.200.0.0/16".parse().unwrap(), Target::Ecmp(g))
        .unwrap();
    fib.insert("198.51.100.0/24".parse().unwrap(), Target::Inside)
        .unwrap();
    fib.insert("169.254.21.1/32".parse().unwrap(), Target::Local)
        .unwrap();
    conc.send(Command::SetFib(Arc::new(fib.build())));
    conc
}

/// The gateway side of every tunnel: sends to `198.51.100.t` through
/// tunnel `t` (outbound SPI `0x2000 + t`).
fn gateway() -> Side {
    gateway_with(alg_of)
}

/// [`gateway`] with tunnel `t` on suite `alg(t)` (`ring` backend).
fn gateway_with(alg: fn(u32) -> EspAlgorithm) -> Side {
    let mut cgw = Side::new(CGW, CGW_MAC, CONC_MAC);
    let mut fib = FibBuilder::new();
    for t in 0..TUNNELS {
        let cfg = sa_config(0x2000 + t, alg(t), Direction::Outbound, CGW, CONC, false);
        cgw.send(Command::SetOutbound {
            tunnel: TunnelId(t),
            sa: Box::new(OutboundSa::new(&cfg, 0).unwrap()),
        });
        fib.insert(
            format!("198.51.100.{}/32", 10 + t).parse().unwrap(),
            Target::Tunnel(TunnelId(t)),
        )
        .unwrap();
    }
    cgw.send(Command::SetFib(Arc::new(fib.build())));
    cgw
}

fn udp(dst: [u8; 4], total: usize, df: bool) -> TestBuffer {
    let mut p = udp_v4([198, 51, 100, 2], dst, total - 28);
    p[6] = if df { 0x40 } else { 0 };
    fix_v4_checksum(&mut p);
    frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &p)
}

/// Inside frames: every tunnel at several sizes, ECMP flows, a fragmented
/// packet, no route, hairpin, local, ARP, runts.
fn inside_frames() -> Vec<TestBuffer> {
    let mut v = Vec::new();
    for i in 0..150u32 {
        let t = (i * 7) % TUNNELS;
        v.push(match i % 25 {
            3 => udp([10, 200, (i % 5) as u8, i as u8], 200, true),
            7 => udp([10, 0, t as u8, 9], 1900, false), // fragmented before encryption
            11 => udp([172, 16, 0, 1], 100, true),      // no route
            13 => udp([198, 51, 100, 9], 100, true),    // hairpin
            17 => udp([169, 254, 21, 1], 100, true),    // local: to the kernel
            19 => {
                // ARP request for our inside address.
                let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
                arp.extend_from_slice(&VPC_ROUTER_MAC);
                arp.extend_from_slice(&[198, 51, 100, 2]);
                arp.extend_from_slice(&[0; 6]);
                arp.extend_from_slice(&[198, 51, 100, 1]);
                frame([0xff; 6], VPC_ROUTER_MAC, 0x0806, &arp)
            }
            23 => TestBuffer::from_slice(&[0x45; 9]), // runt
            _ => udp(
                [10, 0, t as u8, (i % 200) as u8],
                40 + (i as usize * 97) % 1400,
                true,
            ),
        });
    }
    v
}

/// Outside frames: ESP of every tunnel from the gateway, with a replay, an
/// unknown SPI, a tampered packet and IKE among them.
fn outside_frames() -> Vec<TestBuffer> {
    outside_frames_with(alg_of)
}

/// [`outside_frames`] from a gateway with tunnel `t` on `alg(t)`.
fn outside_frames_with(alg: fn(u32) -> EspAlgorithm) -> Vec<TestBuffer> {
    let mut cgw = gateway_with(alg);
    let mut esp = Vec::new();
    for i in 0..120u32 {
        let t = (i * 5) % TUNNELS;
        let mut p = udp_v4(
            [203, 0, 113, 7],
            [198, 51, 100, 10 + t as u8],
            20 + i as usize * 11,
        );
        fix_v4_checksum(&mut p);
        let mut b = frame(CONC_MAC, CGW_MAC, 0x0800, &p);
        assert_eq!(cgw.worker.handle_inside(&mut b), Action::ToOutside);
        esp.push(b);
    }
    let mut v = Vec::new();
    for (i, b) in esp.iter().enumerate() {
        v.push(b.duplicate());
        match i % 30 {
            4 => v.push(esp[i - 2].duplicate()), // replay
            9 => {
                let mut x = b.duplicate();
                x.as_mut()[14 + 20..14 + 24].copy_from_slice(&0x0bad_0bad_u32.to_be_bytes());
                v.push(x); // unknown SPI
            }
            14 => {
                let mut x = esp[i + 1].duplicate();
                let n = x.len();
                x.as_mut()[n - 3] ^= 1; // tampered: ICV fails (the original follows)
                v.push(x);
            }
            21 => {
                // IKE to us: punted.
                let mut ike = udp_v4([192, 0, 2, 2], [192, 0, 2, 1], 40);
                ike[20..24].copy_from_slice(&[1, 244, 1, 244]);
                fix_v4_checksum(&mut ike);
                v.push(frame(CONC_MAC, CGW_MAC, 0x0800, &ike));
            }
            _ => {}
        }
    }
    v
}

/// Runs `frames` in bursts of `size` through `w`, one packet at a time or
/// with `handle_burst_io`; returns what left, in order.
fn run(
    w: &mut Worker,
    ingress: Ingress,
    frames: &[TestBuffer],
    burst: bool,
    size: usize,
) -> Vec<(Action, Vec<u8>)> {
    let mut io = TestIo::with_pool(1000);
    for chunk in frames.chunks(size) {
        w.begin_burst(chunk.len());
        let bufs = chunk.iter().map(TestBuffer::duplicate);
        if burst {
            w.handle_burst_io(ingress, bufs, &mut io);
        } else {
            for mut b in bufs {
                let a = match ingress {
                    Ingress::Outside => w.handle_outside_io(&mut b, &mut io),
                    Ingress::Inside => w.handle_inside_io(&mut b, &mut io),
                    Ingress::Kernel => w.handle_kernel_io(&mut b, &mut io),
                };
                if a != Action::Drop {
                    io.sent.push((a, b));
                }
            }
        }
    }
    io.sent
        .into_iter()
        .map(|(a, b)| (a, b.as_ref().to_vec()))
        .collect()
}

/// Bursts shorter than each prefetch stage's distance, between them, at
/// the burst loop's depth and past it, and the runtime's usual 32.
const SIZES: [usize; 7] = [1, 3, 5, 7, 8, 9, BURST];

fn same_through_both(ingress: Ingress, frames: &[TestBuffer]) -> usize {
    let mut out = 0;
    for size in SIZES {
        let (mut one, mut many) = (concentrator(), concentrator());
        let a = run(&mut one.worker, ingress, frames, false, size);
        let b = run(&mut many.worker, ingress, frames, true, size);
        assert_eq!(a.len(), b.len(), "as many frames out (bursts of {size})");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x.0, y.0, "action of frame {i} out (bursts of {size})");
            assert_eq!(x.1, y.1, "bytes of frame {i} out (bursts of {size})");
        }
        assert_eq!(one.worker.stats(), many.worker.stats(), "bursts of {size}");
        let (c1, c2) = (one.worker.counters(), many.worker.counters());
        for t in 0..TUNNELS {
            assert_eq!(c1.tunnel(TunnelId(t)), c2.tunnel(TunnelId(t)), "tunnel {t}");
        }
        out = a.len();
    }
    out
}

#[test]
fn a_burst_through_handle_burst_io_leaves_as_one_packet_at_a_time() {
    let inside = inside_frames();
    let out = same_through_both(Ingress::Inside, &inside);
    // Everything but the drops left (and fragmentation added some).
    assert!(out > 120, "{out} frames out of {}", inside.len());
    let outside = outside_frames();
    let out = same_through_both(Ingress::Outside, &outside);
    assert!(out >= 120, "{out} frames out of {}", outside.len());
}

#[test]
fn every_drop_and_counter_is_the_same_in_the_burst_loop() {
    let (mut one, mut many) = (concentrator(), concentrator());
    let frames = inside_frames();
    run(&mut one.worker, Ingress::Inside, &frames, false, BURST);
    run(&mut many.worker, Ingress::Inside, &frames, true, BURST);
    let s = many.worker.stats();
    assert_eq!(s, one.worker.stats());
    // The mix did exercise the paths it claims to.
    assert!(s.encap_packets > 100 && s.fragmented > 0 && s.arp_replies > 0 && s.punted > 0);
    assert!(
        s.dropped(worker::Drop::NoRoute) == 6
            && s.dropped(worker::Drop::Hairpin) == 6
            && s.dropped(worker::Drop::Malformed) == 6,
        "no route, hairpin and runts: {s:?}"
    );
}

#[test]
fn empty_and_single_packet_bursts() {
    let mut w = concentrator();
    let mut io = TestIo::with_pool(8);
    w.worker.begin_burst(0);
    w.worker
        .handle_burst_io(Ingress::Inside, std::iter::empty(), &mut io);
    assert!(io.sent.is_empty());
    w.worker.begin_burst(1);
    w.worker.handle_burst_io(
        Ingress::Inside,
        std::iter::once(udp([10, 0, 1, 1], 100, true)),
        &mut io,
    );
    assert_eq!(io.sent.len(), 1);
    assert_eq!(io.sent[0].0, Action::ToOutside);
}

/// [`Worker::inbound_owner`], what the runtime's hand-off between workers
/// asks of each received frame: the worker of the ESP's tunnel from the
/// table [`Command::SetInboundOwners`] gave; nothing without a table, for
/// a tunnel marked [`NO_OWNER`] or beyond the table, for an unknown SPI or
/// for anything that is not ESP. A new table gives the old one back.
#[test]
fn inbound_owner_names_the_worker_of_the_esp_s_tunnel() {
    let mut conc = concentrator();
    let mut cgw = gateway();
    // ESP of tunnels 0..=3 (inbound SPIs 0x2000..=0x2003).
    let esp: Vec<TestBuffer> = (0..4u8)
        .map(|t| {
            let mut p = udp_v4([203, 0, 113, 7], [198, 51, 100, 10 + t], 64);
            fix_v4_checksum(&mut p);
            let mut b = frame(CONC_MAC, CGW_MAC, 0x0800, &p);
            assert_eq!(cgw.worker.handle_inside(&mut b), Action::ToOutside);
            b
        })
        .collect();
    let owners = |conc: &Side| -> Vec<Option<u16>> {
        esp.iter()
            .map(|b| conc.worker.inbound_owner(b.as_ref()))
            .collect()
    };
    assert_eq!(owners(&conc), [None; 4], "no table: no hand-off");

    conc.send(Command::SetInboundOwners(Arc::from(vec![1, 0, NO_OWNER])));
    assert_eq!(owners(&conc), [Some(1), Some(0), None, None]);
    let mut unknown = esp[0].duplicate();
    unknown.as_mut()[14 + 20..14 + 24].copy_from_slice(&0x0bad_0bad_u32.to_be_bytes());
    assert_eq!(conc.worker.inbound_owner(unknown.as_ref()), None);
    let mut ike = udp_v4([192, 0, 2, 2], [192, 0, 2, 1], 40);
    ike[20..24].copy_from_slice(&[17, 148, 17, 148]); // 4500 → 4500, non-ESP marker
    fix_v4_checksum(&mut ike);
    let ike = frame(CONC_MAC, CGW_MAC, 0x0800, &ike);
    assert_eq!(conc.worker.inbound_owner(ike.as_ref()), None);
    assert_eq!(conc.worker.inbound_owner(&[0x45; 9]), None);

    conc.send(Command::SetInboundOwners(Arc::from(vec![0, 1, 0, 1])));
    assert_eq!(owners(&conc), [Some(0), Some(1), Some(0), Some(1)]);
    let retired: Vec<usize> = conc
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::RetiredOwners(o) => Some(o.len()),
            _ => None,
        })
        .collect();
    assert_eq!(retired, [0, 3], "each table replaced comes back");
}

/// Tunnel `t` on the `t % 8`-th AES-CBC + HMAC suite (both key sizes, all
/// four integrity algorithms), a third of them on AES-GCM.
fn cbc_alg_of(t: u32) -> EspAlgorithm {
    if t % 3 == 2 {
        EspAlgorithm::Aes256Gcm16
    } else {
        EspAlgorithm::ALL[2 + (t % 8) as usize]
    }
}

/// With the SAs on intel-ipsec-mb, [`Worker::handle_burst_io`] batches the
/// AES-CBC + HMAC packets of a burst through the job API (prepared in
/// order, sealed or opened in one pass, finished in order), while one
/// packet at a time goes through the `aws-lc-rs` + `ring` engine: the same
/// frames come out, byte for byte, with the same actions, stats and
/// per-tunnel counters. Batched packets leave after the burst's other
/// packets (fragmented ones are sealed one at a time), so the frames are
/// compared as multisets; the sequence numbers inside them show each was
/// prepared in the same order.
#[test]
fn cbc_bursts_through_the_job_api_leave_as_one_packet_at_a_time() {
    let mb = CryptoBackend::ipsec_mb().expect("intel-ipsec-mb runs on this CPU");
    for (ingress, frames) in [
        (Ingress::Inside, inside_frames()),
        (Ingress::Outside, outside_frames_with(cbc_alg_of)),
    ] {
        for size in SIZES {
            let one_w = concentrator_with(mb, cbc_alg_of);
            let many_w = concentrator_with(mb, cbc_alg_of);
            let (mut one, mut many) = (one_w, many_w);
            let mut a = run(&mut one.worker, ingress, &frames, false, size);
            let mut b = run(&mut many.worker, ingress, &frames, true, size);
            a.sort_by(|x, y| (format!("{:?}", x.0), &x.1).cmp(&(format!("{:?}", y.0), &y.1)));
            b.sort_by(|x, y| (format!("{:?}", x.0), &x.1).cmp(&(format!("{:?}", y.0), &y.1)));
            assert_eq!(a.len(), b.len(), "as many frames out (bursts of {size})");
            assert!(a == b, "same frames out (bursts of {size})");
            assert_eq!(one.worker.stats(), many.worker.stats(), "bursts of {size}");
            let (c1, c2) = (one.worker.counters(), many.worker.counters());
            for t in 0..TUNNELS {
                assert_eq!(c1.tunnel(TunnelId(t)), c2.tunnel(TunnelId(t)), "tunnel {t}");
            }
            let s = many.worker.stats();
            if ingress == Ingress::Outside {
                assert!(s.decap_packets >= 110, "{s:?}");
                assert!(s.esp.get(dataplane::esp::DropReason::IcvFail) > 0, "{s:?}");
                assert!(
                    s.esp.get(dataplane::esp::DropReason::ReplayDuplicate) > 0,
                    "{s:?}"
                );
            } else {
                assert!(s.encap_packets > 100, "{s:?}");
            }
        }
    }
}
