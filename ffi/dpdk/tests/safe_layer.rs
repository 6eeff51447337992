//! The safe layer against a real EAL with virtual devices.
//!
//! Each test initialises its own EAL, which DPDK allows once per process:
//! `cargo nextest` runs every test in a process of its own, and under plain
//! `cargo test` each test re-runs itself in one ([`testkit::own_process`]).
//! `--no-pci --no-huge` and a unique file prefix are always passed (see
//! `dpdk::testing::test_eal`).

#![allow(clippy::cast_possible_truncation)] // test patterns are deliberately byte-truncated

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dpdk::testing::test_eal;
use dpdk::{Burst, Eal, Error, MAX_BURST, Mbuf, MbufRing, Mempool, Port, PortConfig, PortId};
use netbuf::{Append, Headroom, Prepend, Tailroom, TrimFromEnd, TrimFromStart};

fn pool(eal: &Eal, name: &str, count: u32) -> Mempool {
    Mempool::new(eal, name, count, 0, Mempool::DEFAULT_DATA_ROOM).unwrap()
}

fn started(eal: &Eal, id: PortId, pool: &Mempool) -> Port {
    let port = Port::configure(eal, id, &PortConfig::default(), pool).unwrap();
    port.start().unwrap();
    port
}

/// A packet whose bytes encode (seq, len) so the receiver can check both.
fn packet(pool: &Mempool, seq: u32, len: usize) -> Mbuf {
    let mut m = pool.alloc().expect("pool has room");
    let data = m.append(len).unwrap();
    for (i, b) in data.iter_mut().enumerate() {
        *b = (seq as usize + i) as u8;
    }
    data[..4].copy_from_slice(&seq.to_be_bytes());
    m
}

fn seq_of(m: &Mbuf) -> u32 {
    u32::from_be_bytes(m.as_ref()[..4].try_into().unwrap())
}

#[test]
fn eal_initialises_once_with_virtual_devices() {
    if !testkit::own_process() {
        return;
    }
    let eal = test_eal("init", &["--vdev=net_null0", "--vdev=net_null1"]).unwrap();
    assert_eq!(dpdk::port_count(&eal), 2);
    assert_eq!(dpdk::port_by_name(&eal, "net_null1").unwrap(), PortId(1));
    assert!(matches!(
        dpdk::port_by_name(&eal, "net_nope"),
        Err(Error::NoDevice { .. })
    ));
    assert!(matches!(Eal::init(["--no-pci"]), Err(Error::Busy { .. })));
    assert!(dpdk::tsc_hz() > 0);
}

#[test]
fn mbuf_grows_and_shrinks_through_dpdk_helpers() {
    if !testkit::own_process() {
        return;
    }
    let eal = test_eal("mbuf", &[]).unwrap();
    let pool = pool(&eal, "mbuf", 63);
    let mut m = pool.alloc().unwrap();
    assert_eq!(m.headroom(), 128);
    assert_eq!(m.data_len(), 0);
    let room = m.tailroom();
    m.append(5).unwrap().copy_from_slice(b"inner");
    m.prepend(4).unwrap().copy_from_slice(b"hdr:");
    m.append(3).unwrap().copy_from_slice(b"tag");
    assert_eq!(m.as_ref(), b"hdr:innertag");
    assert_eq!(m.headroom(), 124);
    assert_eq!(m.tailroom(), room - 8);
    m.trim_from_start(4).unwrap();
    m.trim_from_end(3).unwrap();
    assert_eq!(m.as_ref(), b"inner");
    assert!(m.prepend(200).is_err(), "more than the headroom");
    assert!(m.append(room + 1).is_err(), "more than the tailroom");
    assert!(m.trim_from_end(6).is_err(), "more than the packet");
    assert_eq!(m.as_ref(), b"inner", "failed operations change nothing");
    assert_eq!(pool.in_use(), 1);
    drop(m);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn packets_round_trip_through_a_ring_port_pair() {
    if !testkit::own_process() {
        return;
    }
    let eal = test_eal("ringpair", &[]).unwrap();
    let pool = pool(&eal, "ringpair", 2047);
    let (a, b) = MbufRing::port_pair(&eal, "rp", 1024).unwrap();
    let (pa, pb) = (started(&eal, a, &pool), started(&eal, b, &pool));
    let (mut tx_a, mut rx_b) = (pa.tx_queue(0).unwrap(), pb.rx_queue(0).unwrap());
    let (mut tx_b, mut rx_a) = (pb.tx_queue(0).unwrap(), pa.rx_queue(0).unwrap());
    assert!(
        matches!(pa.tx_queue(0), Err(Error::Busy { .. })),
        "a queue is handed out once"
    );

    for (tx, rx) in [(&mut tx_a, &mut rx_b), (&mut tx_b, &mut rx_a)] {
        let mut next = 0u32;
        let mut expected = 0u32;
        for _round in 0..40 {
            let mut burst = Burst::new();
            for _ in 0..32 {
                burst
                    .push(packet(&pool, next, 60 + (next as usize % 1400)))
                    .unwrap();
                next += 1;
            }
            let sent = tx.tx_burst(&mut burst);
            assert_eq!((sent.sent, sent.dropped), (32, 0));
            assert!(burst.is_empty());
            let mut got = Burst::new();
            while rx.rx_burst(&mut got) > 0 {
                for m in got.drain() {
                    assert_eq!(seq_of(&m), expected, "in order, none lost");
                    assert_eq!(m.data_len(), 60 + (expected as usize % 1400));
                    let want = (expected as usize + 4) as u8;
                    assert_eq!(m.as_ref()[4], want, "payload intact");
                    expected += 1;
                }
            }
        }
        assert_eq!(expected, next);
    }
    let stats = pa.stats().unwrap();
    assert_eq!((stats.tx_packets, stats.rx_packets), (1280, 1280));
    assert_eq!(pool.in_use(), 0, "every mbuf back in the pool");
}

#[test]
fn full_tx_ring_frees_and_counts_the_rest() {
    if !testkit::own_process() {
        return;
    }
    let eal = test_eal("txfull", &[]).unwrap();
    let pool = pool(&eal, "txfull", 1023);
    // 64-slot rings hold 63 packets.
    let (a, b) = MbufRing::port_pair(&eal, "tf", 64).unwrap();
    let (pa, pb) = (started(&eal, a, &pool), started(&eal, b, &pool));
    let mut tx = pa.tx_queue(0).unwrap();
    let mut rx = pb.rx_queue(0).unwrap();

    let mut burst = Burst::new();
    for i in 0..MAX_BURST as u32 {
        burst.push(packet(&pool, i, 64)).unwrap();
    }
    assert!(
        burst.push(packet(&pool, 99, 64)).is_err(),
        "a burst holds MAX_BURST"
    );
    let first = tx.tx_burst(&mut burst);
    assert_eq!((first.sent, first.dropped), (63, 1));
    for i in 0..MAX_BURST as u32 {
        burst.push(packet(&pool, i, 64)).unwrap();
    }
    let second = tx.tx_burst(&mut burst);
    assert_eq!((second.sent, second.dropped), (0, 64));
    assert_eq!(tx.dropped_full(), 65);
    assert_eq!(pool.in_use(), 63, "only the queued packets are out");

    let mut got = Burst::new();
    let mut received = 0;
    while rx.rx_burst(&mut got) > 0 {
        received += got.len();
        got.clear();
    }
    assert_eq!(received, 63);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn no_mbuf_leaks_after_many_bursts() {
    if !testkit::own_process() {
        return;
    }
    let eal = test_eal("leak", &[]).unwrap();
    let pool = pool(&eal, "leak", 4095);
    let (a, b) = MbufRing::port_pair(&eal, "lk", 256).unwrap();
    let (pa, pb) = (started(&eal, a, &pool), started(&eal, b, &pool));
    let (mut tx, mut rx) = (pa.tx_queue(0).unwrap(), pb.rx_queue(0).unwrap());
    let mut burst = Burst::new();
    let mut got = Burst::new();
    let mut received = 0usize;
    for round in 0..20_000u32 {
        for i in 0..8 {
            burst.push(packet(&pool, round * 8 + i, 64)).unwrap();
        }
        let _ = tx.tx_burst(&mut burst);
        rx.rx_burst(&mut got);
        received += got.len();
        // Keep a few packets across rounds, drop the rest in different ways.
        if round % 3 == 0 {
            got.clear();
        } else {
            for m in got.drain().take(3) {
                drop(m);
            }
        }
    }
    while rx.rx_burst(&mut got) > 0 {
        received += got.len();
        got.clear();
    }
    assert_eq!(received as u64 + tx.dropped_full(), 160_000);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn spsc_ring_hands_packets_to_a_worker_lcore() {
    if !testkit::own_process() {
        return;
    }
    let eal = test_eal("lcore", &["-l", "0-1"]).unwrap();
    let pool = pool(&eal, "lcore", 2047);
    let (mut producer, mut consumer) = MbufRing::spsc(&eal, "handoff", 512).unwrap();
    let workers = eal.worker_lcores();
    assert_eq!(workers.len(), 1);

    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let job = {
        let (received, done) = (received.clone(), done.clone());
        eal.launch(workers[0], move || {
            let mut burst = Burst::new();
            let mut expected = 0u32;
            loop {
                let finished = done.load(Ordering::Acquire);
                if consumer.dequeue_burst(&mut burst) == 0 && finished {
                    break;
                }
                for m in burst.drain() {
                    if seq_of(&m) != expected {
                        return -1;
                    }
                    expected += 1;
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            0
        })
        .unwrap()
    };
    let mut burst = Burst::new();
    for seq in 0..50_000u32 {
        let mut m = packet(&pool, seq, 64);
        loop {
            match producer.enqueue(m) {
                Ok(()) => break,
                Err(back) => {
                    m = back;
                    std::hint::spin_loop();
                }
            }
        }
    }
    drop(burst.drain());
    done.store(true, Ordering::Release);
    assert_eq!(job.join(), 0, "the worker saw every packet in order");
    assert_eq!(received.load(Ordering::Relaxed), 50_000);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn flow_rules_are_refused_with_the_driver_s_reason() {
    if !testkit::own_process() {
        return;
    }
    use dpdk::{FlowL4, FlowMatch};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    let eal = test_eal("flow", &["--vdev=net_null0"]).unwrap();
    let pool = pool(&eal, "flow", 511);
    let config = PortConfig {
        rx_queues: 2,
        tx_queues: 2,
        ..PortConfig::default()
    };
    let port = Port::configure(&eal, PortId(0), &config, &pool).unwrap();
    port.start().unwrap();
    let esp = FlowMatch {
        src: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
        dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        l4: FlowL4::Esp { spi: Some(0x1001) },
    };
    assert_eq!(esp.to_string(), "192.0.2.1 -> 192.0.2.10 esp spi 0x1001");
    // net_null has no rte_flow: the driver's refusal, not a panic or a leak.
    match port.flow_to_queue(&esp, 1) {
        Err(Error::Flow { op, errno, message }) => {
            assert_eq!(op, "rte_flow_create");
            assert!(errno > 0, "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected the driver's refusal, got {other:?}"),
    }
    // Checked before DPDK is asked: a queue the port does not have, and
    // addresses of two families.
    assert!(matches!(
        port.flow_to_queue(&esp, 2),
        Err(Error::InvalidArgument { .. })
    ));
    let mixed = FlowMatch {
        src: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        l4: FlowL4::Udp { dst_port: 4500 },
        ..esp
    };
    assert!(matches!(
        port.flow_to_queue(&mixed, 0),
        Err(Error::InvalidArgument { .. })
    ));
}
