//! A rough in-memory measure of the whole pipeline per packet (classify,
//! MSS clamp, MTU check, encap or decap + reassembly check, FIB, counters)
//! on `TestBuffer`s. Not a benchmark (those live in `bench/`): a quick
//! number for the worker's own changes. Run with
//! `cargo test --release -p worker --test throughput -- --ignored --nocapture`
//! (one of them: add its name, e.g. `decap`).

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "a measurement printout"
)]

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use common::*;
use dataplane::crypto::EspAlgorithm;
use dataplane::esp::sa::Direction;
use dataplane::esp::{OutboundSa, SaConfig};
use fib::{FibBuilder, Target, TunnelId};
use netbuf::TestBuffer;
use worker::{Action, Command, Ingress, PacketIo};

#[test]
#[ignore = "a measurement, run in release by hand"]
fn pipeline_ns_per_packet() {
    for (alg, len) in [
        (EspAlgorithm::Aes128Gcm16, 64usize),
        (EspAlgorithm::Aes128Gcm16, 1420),
        (EspAlgorithm::Aes256Gcm16, 1420),
    ] {
        let (mut conc, mut cgw) = pair(alg, false);
        let inner = udp_v4([198, 51, 100, 2], [203, 0, 113, 5], len - 28);
        let template = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
        const N: usize = 200_000;
        // Encap on conc; keep a slice of the output to decap on cgw.
        let mut sealed: Vec<TestBuffer> = Vec::with_capacity(4096);
        let mut b = template.duplicate();
        let t = Instant::now();
        for i in 0..N {
            if i % 32 == 0 {
                conc.worker.begin_burst(32);
            }
            b.reset(template.as_ref()).unwrap();
            assert_eq!(conc.worker.handle_inside(&mut b), Action::ToOutside);
            if sealed.len() < sealed.capacity() {
                sealed.push(b.duplicate());
            }
        }
        let enc = t.elapsed().as_nanos() as f64 / N as f64;
        let frames: Vec<Vec<u8>> = sealed.iter().map(|b| b.as_ref().to_vec()).collect();
        let t = Instant::now();
        for f in &frames {
            let mut b = TestBuffer::from_slice(f);
            assert_eq!(cgw.worker.handle_outside(&mut b), Action::ToInside);
        }
        let dec = t.elapsed().as_nanos() as f64 / frames.len() as f64;
        println!(
            "{alg:?} {len} B: encap {enc:.0} ns/pkt ({:.2} Gbps inner), decap {dec:.0} ns/pkt ({:.2} Gbps)",
            len as f64 * 8.0 / enc,
            len as f64 * 8.0 / dec
        );
    }
}

/// Tunnel `t`'s AES-128-GCM SA (SPI `0x10_0000 + t`) from `local` to
/// `remote`, one way.
fn tunnel_sa(t: u32, dir: Direction, local: Ipv4Addr, remote: Ipv4Addr) -> SaConfig {
    sa_config(
        0x10_0000 + t,
        EspAlgorithm::Aes128Gcm16,
        dir,
        local,
        remote,
        false,
    )
}

/// A concentrator worker with `n` AES-128-GCM tunnels: tunnel `t` has
/// outbound SPI `0x10_0000 + t` and the route `10.x.y.0/24` (`x.y` = `t`).
fn tunnels(n: u32) -> Side {
    let mut side = Side::with_capacity(CONC, CONC_MAC, CGW_MAC, n as usize);
    let mut fib = FibBuilder::new();
    for t in 0..n {
        let cfg = tunnel_sa(t, Direction::Outbound, CONC, CGW);
        side.send(Command::SetOutbound {
            tunnel: TunnelId(t),
            sa: Box::new(OutboundSa::new(&cfg, 0).unwrap()),
        });
        let _ = side.events();
        fib.insert(
            format!("10.{}.{}.0/24", t >> 8, t & 0xff).parse().unwrap(),
            Target::Tunnel(TunnelId(t)),
        )
        .unwrap();
    }
    side.send(Command::SetFib(Arc::new(fib.build())));
    side
}

/// Buffers come back through `send` and are refilled for the next burst.
struct Recycle(Vec<TestBuffer>);

impl PacketIo<TestBuffer> for Recycle {
    fn alloc(&mut self) -> Option<TestBuffer> {
        None
    }
    fn send(&mut self, _action: Action, buf: TestBuffer) {
        self.0.push(buf);
    }
}

/// Encap of 1420-byte packets round robin over 1 and 10,000 tunnels (no
/// two packets of a burst share an SA, as in the end-to-end bench), one
/// packet at a time (`handle_inside_io`) and through the prefetching
/// burst loop (`handle_burst_io`), the two alternating round by round;
/// the best and the median of 200 rounds of 16 bursts each (the machine
/// is shared: the best is the round least disturbed). Each packet is
/// restored into its buffer before every burst (a copy, as a NIC's DMA or
/// memif would do), timed with it in all four cases. `ONLY=burst` or
/// `ONLY=single` in the environment runs one of the two (to profile it).
#[test]
#[ignore = "a measurement, run in release by hand"]
fn encap_many_tunnels_one_at_a_time_and_in_bursts() {
    const BURSTS: usize = 16;
    const ROUNDS: usize = 200;
    const LEN: usize = 1420;
    // [tunnels][burst] -> (best, median) ns per packet
    let mut results = [[(0.0, 0.0); 2]; 2];
    for (k, n) in [1u32, 10_000].into_iter().enumerate() {
        let mut side = tunnels(n);
        let mut next = 0u32;
        let mut frames = |count: usize| -> Vec<Vec<u8>> {
            (0..count)
                .map(|_| {
                    next = (next + 7919) % n;
                    let inner = udp_v4(
                        [198, 51, 100, 2],
                        [10, (next >> 8) as u8, next as u8, 5],
                        LEN - 28,
                    );
                    frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner)
                        .as_ref()
                        .to_vec()
                })
                .collect()
        };
        // Enough different frames that a round does not revisit tunnels.
        let frames = frames(BURSTS * 32 * 8);
        let mut io = Recycle((0..32).map(|_| TestBuffer::new()).collect());
        let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut at = 0;
        // `ONLY=burst` / `ONLY=single`: just one of the two (for a
        // profile of it).
        let only = std::env::var("ONLY").ok();
        for round in 0..ROUNDS * 2 {
            let burst = round % 2 == 1;
            if only.as_deref().is_some_and(|o| (o == "burst") != burst) {
                continue;
            }
            let t0 = Instant::now();
            for _ in 0..BURSTS {
                let chunk = &frames[at..at + 32];
                at = (at + 32) % frames.len();
                let mut bufs = std::mem::take(&mut io.0);
                for (b, f) in bufs.iter_mut().zip(chunk) {
                    b.reset(f).unwrap();
                }
                side.worker.begin_burst(chunk.len());
                if burst {
                    side.worker
                        .handle_burst_io(Ingress::Inside, bufs.drain(..), &mut io);
                } else {
                    for mut b in bufs.drain(..) {
                        let a = side.worker.handle_inside_io(&mut b, &mut io);
                        assert_eq!(a, Action::ToOutside);
                        io.send(a, b);
                    }
                }
                io.0.append(&mut bufs);
                assert_eq!(io.0.len(), 32);
            }
            times[usize::from(burst)].push(t0.elapsed().as_nanos() as f64 / (BURSTS * 32) as f64);
        }
        for (b, t) in times.iter_mut().enumerate() {
            if t.is_empty() {
                t.push(f64::NAN);
            }
            t.sort_by(f64::total_cmp);
            results[k][b] = (t[0], t[t.len() / 2]);
            println!(
                "{n:>5} tunnels, {}: best {:.0} ns/pkt ({:.2} Gbps inner), median {:.0} ns/pkt",
                if b == 1 {
                    "burst + prefetch"
                } else {
                    "one at a time   "
                },
                t[0],
                LEN as f64 * 8.0 / t[0],
                t[t.len() / 2]
            );
        }
    }
    for (b, name) in ["one at a time", "burst + prefetch"].iter().enumerate() {
        println!(
            "10k/1 ratio, {name}: best {:.2}, median {:.2}",
            results[0][b].0 / results[1][b].0,
            results[0][b].1 / results[1][b].1
        );
    }
}

/// The receiving end of [`tunnels`]: a worker at the customer gateway's
/// address with the inbound SA of each of `n` tunnels.
fn receivers(n: u32) -> Side {
    let mut side = Side::with_capacity(CGW, CGW_MAC, CONC_MAC, n as usize);
    for t in 0..n {
        let cfg = tunnel_sa(t, Direction::Inbound, CGW, CONC);
        side.send(Command::AddInbound(Box::new(
            dataplane::esp::InboundSa::new(&cfg, 0).unwrap(),
        )));
        let _ = side.events();
    }
    side.routes(&[("10.0.0.0/8", Target::Inside)]);
    side
}

/// Decap of ESP frames (`LEN` bytes of inner packet in the environment,
/// 64 by default) round robin over 1 and 10,000 tunnels through the
/// prefetching burst loop, the two alternating round by round; the best
/// and the median of 100 rounds of 16 bursts each, and the median of the
/// rounds' ratios. Every frame is sealed beforehand (each decapsulated
/// once: the replay window is on) and copied into its buffer before every
/// burst, timed with it. `SPREAD=n` sends the 10,000-SA worker's traffic
/// round robin over its first `n` tunnels only: with `n` small all their
/// state stays in cache, which separates the cost of a different SA per
/// packet from that of its cache misses. `STRIDE=k` visits the tunnels
/// `k` apart (e.g. 7919, a prime: an order the hardware prefetcher cannot
/// follow, unlike the default 1, where SAs neighbouring in memory come
/// one after another, as in the end-to-end bench).
#[test]
#[ignore = "a measurement, run in release by hand"]
fn decap_many_tunnels_in_bursts() {
    const BURSTS: usize = 16;
    const ROUNDS: usize = 100;
    let len: usize = std::env::var("LEN")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(64);
    let spread: u32 = std::env::var("SPREAD")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(u32::MAX);
    let stride: u64 = std::env::var("STRIDE")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(1);
    let counts = [1u32, 10_000];
    let mut sides = Vec::new();
    for n in counts {
        let mut sealer = tunnels(n);
        let frames: Vec<Vec<u8>> = (0..ROUNDS * BURSTS * 32)
            .map(|i| {
                let t = ((i as u64 * stride) % u64::from(spread.clamp(1, n))) as u32;
                let inner = udp_v4(
                    [198, 51, 100, 2],
                    [10, (t >> 8) as u8, t as u8, 5],
                    len - 28,
                );
                let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
                assert_eq!(sealer.worker.handle_inside(&mut b), Action::ToOutside);
                b.as_ref().to_vec()
            })
            .collect();
        sides.push((receivers(n), frames));
    }
    let mut io = Recycle((0..32).map(|_| TestBuffer::new()).collect());
    let mut times = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for (k, (side, frames)) in sides.iter_mut().enumerate() {
            let frames = &frames[round * BURSTS * 32..][..BURSTS * 32];
            let t0 = Instant::now();
            for chunk in frames.chunks(32) {
                let mut bufs = std::mem::take(&mut io.0);
                for (b, f) in bufs.iter_mut().zip(chunk) {
                    b.reset(f).unwrap();
                }
                side.worker.begin_burst(chunk.len());
                side.worker
                    .handle_burst_io(Ingress::Outside, bufs.drain(..), &mut io);
                io.0.append(&mut bufs);
                assert_eq!(
                    io.0.len(),
                    32,
                    "a frame was dropped: {:?}",
                    side.worker.stats()
                );
            }
            times[k].push(t0.elapsed().as_nanos() as f64 / (BURSTS * 32) as f64);
        }
    }
    // Round by round (the two ran back to back, in the same weather).
    let mut paired: Vec<f64> = times[0].iter().zip(&times[1]).map(|(a, b)| a / b).collect();
    paired.sort_by(f64::total_cmp);
    let mut results = [(0.0, 0.0); 2];
    for (k, t) in times.iter_mut().enumerate() {
        t.sort_by(f64::total_cmp);
        results[k] = (t[0], t[t.len() / 2]);
        println!(
            "{:>5} tunnels, decap {len} B: best {:.0} ns/pkt, median {:.0} ns/pkt",
            counts[k],
            t[0],
            t[t.len() / 2]
        );
    }
    println!(
        "10k/1 ratio, decap {len} B: best {:.2}, median {:.2}, paired median {:.2}",
        results[0].0 / results[1].0,
        results[0].1 / results[1].1,
        paired[paired.len() / 2]
    );
}
