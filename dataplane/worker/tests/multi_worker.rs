//! One tunnel on several workers, on real threads (issue 4 item 3):
//! outbound copies of an SA share one sequence counter reserved per
//! burst, inbound copies share one anti-replay window. Duplicates are
//! never accepted, whichever worker they reach; reordering beyond the
//! window is rejected; the counter never wraps.

#![allow(
    clippy::cast_possible_truncation,
    reason = "test packets are built with deliberate narrowing"
)]

mod common;

use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use dataplane::crypto::EspAlgorithm;
use dataplane::esp::sa::Direction;
use dataplane::esp::{
    DropReason, InboundSa, OutboundSa, SharedReplayWindow, SharedSeq, shared_seq,
};
use fib::{Target, TunnelId};
use netbuf::TestBuffer;
use worker::{Action, Command};

const WORKERS: usize = 3;
const ALG: EspAlgorithm = EspAlgorithm::Aes128Gcm16;
const WINDOW: u64 = 1024;

/// A packet from the VPC carrying `id` in its payload.
fn tagged(id: u32) -> TestBuffer {
    let mut p = udp_v4([198, 51, 100, 2], [203, 0, 113, 5], 64);
    p[28..32].copy_from_slice(&id.to_be_bytes());
    frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &p)
}

fn id_of(inner_frame: &TestBuffer) -> u32 {
    let b = &inner_frame.as_ref()[14 + 28..14 + 32];
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn esp_seq(frame: &TestBuffer) -> u32 {
    let b = &frame.as_ref()[14 + 24..14 + 28];
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A concentrator worker whose tunnel 0 uses a copy of outbound SA 0x1001
/// numbering from `counter`.
fn conc_with_shared_outbound(counter: &SharedSeq) -> Side {
    let mut conc = Side::new(CONC, CONC_MAC, CGW_MAC);
    let cfg = sa_config(0x1001, ALG, Direction::Outbound, CONC, CGW, false);
    conc.send(Command::SetOutbound {
        tunnel: TunnelId(0),
        sa: Box::new(
            OutboundSa::new(&cfg, 0)
                .unwrap()
                .with_shared_seq(counter.clone()),
        ),
    });
    conc.routes(&[("203.0.113.0/24", Target::Tunnel(TunnelId(0)))]);
    conc
}

/// A concentrator worker with a copy of inbound SA 0x2002 using `window`.
fn conc_with_shared_inbound(window: &Arc<SharedReplayWindow>) -> Side {
    let mut conc = Side::new(CONC, CONC_MAC, CGW_MAC);
    let cfg = sa_config(0x2002, ALG, Direction::Inbound, CONC, CGW, false);
    conc.send(Command::AddInbound(Box::new(
        InboundSa::new(&cfg, 0)
            .unwrap()
            .with_shared_replay(window.clone()),
    )));
    conc.routes(&[("198.51.100.0/24", Target::Inside)]);
    conc
}

/// The customer gateway's encapsulated packets 1..=n toward conc (SPI
/// 0x2002), each carrying its sequence number as id.
fn cgw_packets(n: u32) -> Vec<TestBuffer> {
    let (_, mut cgw) = pair(ALG, false);
    (1..=n)
        .map(|i| {
            let mut p = udp_v4([203, 0, 113, 5], [198, 51, 100, 2], 64);
            p[28..32].copy_from_slice(&i.to_be_bytes());
            let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &p);
            assert_eq!(cgw.worker.handle_inside(&mut b), Action::ToOutside);
            assert_eq!(esp_seq(&b), i);
            b
        })
        .collect()
}

#[test]
fn outbound_bursts_on_three_workers_use_unique_sequence_numbers_within_the_window() {
    const BURSTS: u32 = 60;
    const BURST: u32 = 32;
    let counter = shared_seq();
    let (tx, rx) = mpsc::channel::<Vec<TestBuffer>>();
    let start = Arc::new(Barrier::new(WORKERS));
    let threads: Vec<_> = (0..WORKERS as u32)
        .map(|w| {
            let mut conc = conc_with_shared_outbound(&counter);
            let (tx, start) = (tx.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for burst in 0..BURSTS {
                    // Bursts of varying fill, like a real rx queue.
                    let n = 1 + (burst * 7 + w * 5) % BURST;
                    conc.worker.begin_burst(n as usize);
                    let out: Vec<TestBuffer> = (0..n)
                        .map(|i| {
                            let mut b = tagged((w << 24) | (burst << 8) | i);
                            assert_eq!(conc.worker.handle_inside(&mut b), Action::ToOutside);
                            b
                        })
                        .collect();
                    tx.send(out).unwrap(); // "tx burst"
                    // Pinned workers poll at the same pace; on this shared
                    // test machine a thread can be descheduled for
                    // milliseconds, so keep them in step per burst round.
                    start.wait();
                }
                conc.worker.stats().encap_packets
            })
        })
        .collect();
    drop(tx);
    let encapped: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    // The peer receives the bursts in the order the workers sent them.
    let (_, mut cgw) = pair(ALG, false);
    let mut seqs = HashSet::new();
    let mut ids = HashSet::new();
    let (mut highest, mut max_reorder) = (0u32, 0u32);
    while let Ok(burst) = rx.recv_timeout(Duration::from_secs(10)) {
        for mut b in burst {
            let s = esp_seq(&b);
            assert!(seqs.insert(s), "sequence number {s} used twice");
            max_reorder = max_reorder.max(highest.saturating_sub(s));
            highest = highest.max(s);
            assert_eq!(
                cgw.worker.handle_outside(&mut b),
                Action::ToInside,
                "seq {s}: {:?}",
                cgw.worker.stats()
            );
            assert!(ids.insert(id_of(&b)));
        }
    }
    assert_eq!(seqs.len() as u64, encapped);
    assert_eq!(
        cgw.worker.stats().total_dropped(),
        0,
        "nothing out of window"
    );
    assert!(
        u64::from(max_reorder) < WINDOW / 4,
        "reorder {max_reorder} far inside the window"
    );
    // Unused reservations are gaps, at most one burst per worker per burst.
    let top = counter.load(std::sync::atomic::Ordering::Relaxed);
    assert!(top >= encapped && top <= encapped + u64::from(BURST * BURSTS) * WORKERS as u64);
}

#[test]
fn shared_counter_stops_at_exhaustion_across_threads_and_never_wraps() {
    let counter = shared_seq();
    counter.store(
        u64::from(u32::MAX) - 100,
        std::sync::atomic::Ordering::Relaxed,
    );
    let start = Arc::new(Barrier::new(WORKERS));
    let threads: Vec<_> = (0..WORKERS)
        .map(|_| {
            let mut conc = conc_with_shared_outbound(&counter);
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let mut seqs = Vec::new();
                for _ in 0..10 {
                    conc.worker.begin_burst(8);
                    for _ in 0..8 {
                        let mut b = tagged(0);
                        if conc.worker.handle_inside(&mut b) == Action::ToOutside {
                            seqs.push(esp_seq(&b));
                        }
                    }
                }
                let s = conc.worker.stats();
                (seqs, s.esp.get(DropReason::SeqExhausted), s.total_dropped())
            })
        })
        .collect();
    let mut all = HashSet::new();
    let mut exhausted = 0;
    for t in threads {
        let (seqs, ex, dropped) = t.join().unwrap();
        assert_eq!(ex, dropped, "only exhaustion drops");
        exhausted += ex;
        for s in seqs {
            assert!(s > u32::MAX - 101, "no wrap: {s}");
            assert!(all.insert(s), "{s} twice");
        }
    }
    assert_eq!(
        counter.load(std::sync::atomic::Ordering::Relaxed),
        u64::from(u32::MAX)
    );
    assert_eq!(all.len() as u64 + exhausted, (WORKERS * 80) as u64);
    assert!(all.contains(&u32::MAX));
    assert!(all.len() <= 100);
}

#[test]
fn duplicates_reaching_several_workers_are_accepted_once() {
    const N: u32 = 3000;
    let packets = cgw_packets(N);
    let window = SharedReplayWindow::new(WINDOW as u32, false);
    let start = Arc::new(Barrier::new(WORKERS));
    let threads: Vec<_> = (0..WORKERS)
        .map(|w| {
            let mut conc = conc_with_shared_inbound(&window);
            // Every worker gets every packet (each is a duplicate on the
            // other two), locally reordered differently per worker.
            let mut mine: Vec<TestBuffer> = packets.iter().map(TestBuffer::duplicate).collect();
            for chunk in mine.chunks_mut(16 + 8 * w) {
                chunk.reverse();
            }
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let mut accepted = Vec::new();
                for mut b in mine {
                    if conc.worker.handle_outside(&mut b) == Action::ToInside {
                        accepted.push(id_of(&b));
                    }
                }
                let s = conc.worker.stats();
                let replay =
                    s.esp.get(DropReason::ReplayDuplicate) + s.esp.get(DropReason::ReplayTooOld);
                assert_eq!(replay, s.total_dropped(), "only replay drops");
                accepted
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for t in threads {
        for id in t.join().unwrap() {
            assert!(seen.insert(id), "packet {id} accepted twice");
        }
    }
    // Reordering here is within 32 packets, far inside the window: every
    // packet got through exactly once, on some worker.
    assert_eq!(seen.len(), N as usize);
    assert_eq!(window.top(), u64::from(N));
    // And replaying them all again, anywhere, gets nothing through.
    let mut conc = conc_with_shared_inbound(&window);
    for b in &packets {
        assert_eq!(conc.worker.handle_outside(&mut b.duplicate()), Action::Drop);
    }
}

#[test]
fn reordering_beyond_the_window_is_rejected_on_every_worker() {
    const N: u32 = 4000;
    let packets = cgw_packets(N);
    let window = SharedReplayWindow::new(WINDOW as u32, false);
    // The newest 2000 arrive first, spread over the workers.
    let (old, new) = packets.split_at(2000);
    let start = Arc::new(Barrier::new(WORKERS));
    let spawn = |batch: Vec<TestBuffer>, start: Arc<Barrier>| {
        let mut conc = conc_with_shared_inbound(&window);
        std::thread::spawn(move || {
            start.wait();
            let mut accepted = Vec::new();
            for mut b in batch {
                if conc.worker.handle_outside(&mut b) == Action::ToInside {
                    accepted.push(id_of(&b));
                }
            }
            (
                accepted,
                conc.worker.stats().esp.get(DropReason::ReplayTooOld),
            )
        })
    };
    let threads: Vec<_> = (0..WORKERS)
        .map(|w| {
            let batch = new
                .iter()
                .skip(w)
                .step_by(WORKERS)
                .map(TestBuffer::duplicate)
                .collect();
            spawn(batch, start.clone())
        })
        .collect();
    let mut seen = HashSet::new();
    for t in threads {
        for id in t.join().unwrap().0 {
            assert!(seen.insert(id));
        }
    }
    assert_eq!(window.top(), u64::from(N));
    // Then the 2000 older ones, never seen but all more than W = 1024
    // behind the top (4000), arrive on all workers at once: every one is
    // rejected as too old.
    let start = Arc::new(Barrier::new(WORKERS));
    let threads: Vec<_> = (0..WORKERS)
        .map(|_| {
            spawn(
                old.iter().map(TestBuffer::duplicate).collect(),
                start.clone(),
            )
        })
        .collect();
    for t in threads {
        let (accepted, too_old) = t.join().unwrap();
        assert!(
            accepted.is_empty(),
            "accepted beyond the window: {accepted:?}"
        );
        assert_eq!(too_old, 2000);
    }
    // The edge of the window: T − W is too old, T a duplicate, T + 1 new.
    let fresh = cgw_packets(N + 1);
    let mut conc = conc_with_shared_inbound(&window);
    let at = |s: u32| fresh[s as usize - 1].duplicate();
    assert_eq!(conc.worker.handle_outside(&mut at(N - 1024)), Action::Drop);
    assert_eq!(
        conc.worker.handle_outside(&mut at(N)),
        Action::Drop,
        "the top: seen"
    );
    assert_eq!(conc.worker.handle_outside(&mut at(N + 1)), Action::ToInside);
    assert_eq!(conc.worker.stats().esp.get(DropReason::ReplayTooOld), 1);
    assert_eq!(conc.worker.stats().esp.get(DropReason::ReplayDuplicate), 1);
}
