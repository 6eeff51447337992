//! The runtime with two workers against real DPDK: two `net_null` ports
//! with two queues each (the null PMD feeds zero-filled frames, counted
//! as `malformed`), lcores 1 and 2 mapped onto this machine's cpus
//! (`--lcores 0@0,1@1,2@1`), one command ring per worker.
//!
//! What it shows: commands reach both workers and a ticket completes only
//! when both acknowledged; SAs are built once per worker (a boxed SA
//! cannot be copied and is refused); per-SA counters come back summed,
//! once per SA; policer shares and refusals name the worker; the final
//! counters are per worker and summed. Runs under nextest (one EAL per
//! process).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use appliance::eal_args::Memory;
use appliance::runtime::{Runtime, RuntimeConfig, RuntimeError};
use dataplane::crypto::EspAlgorithm;
use dataplane::esp::sa::{DfPolicy, Direction, Lifetimes, TunnelEndpoints};
use dataplane::esp::{InboundSa, SaConfig};
use fib::TunnelId;
use worker::Command;
use worker::policy::{Bandwidth, caps_for};
use zeroize::Zeroizing;

fn sa(spi: u32, direction: Direction) -> SaConfig {
    let (local, remote) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
    SaConfig {
        spi,
        direction,
        algorithm: EspAlgorithm::Aes128Gcm16,
        enc_key: Zeroizing::new((0..20u8).collect()),
        auth_key: Zeroizing::new(Vec::new()),
        iv_seed: Zeroizing::new([7; 16]),
        tunnel: TunnelEndpoints::V4 { local, remote },
        nat_t: None,
        esn: false,
        replay_window: 1024,
        lifetimes: Lifetimes::default(),
        df: DfPolicy::CopyFromInner,
    }
}

#[test]
fn two_workers_get_every_command_and_their_counters_are_summed() {
    let prefix = format!("vt-dp-mw-{}", std::process::id());
    let mut rc = RuntimeConfig::new(
        &prefix,
        "net_null0",
        "net_null1",
        Memory::NoHuge {
            reason: "test".into(),
        },
    );
    rc.worker_lcores = vec![1, 2];
    rc.lcore_map = Some("0@0,1@1,2@1".into());
    rc.sa_capacity = 64;
    let mut rt = Runtime::start(&rc).expect("runtime");
    assert_eq!(rt.workers(), 2);
    assert_eq!(rt.worker_lcores(), [1, 2]);
    for p in rt.port_queues() {
        assert_eq!(p.queues, 2, "{p}");
    }
    let wait = Duration::from_secs(10);

    // An SA in a box cannot be copied to two workers.
    let boxed = InboundSa::new(&sa(0x1001, Direction::Inbound), 0).unwrap();
    match rt.send(Command::AddInbound(Box::new(boxed))) {
        Err(RuntimeError::NotReplicable { instead, .. }) => assert_eq!(instead, "add_inbound"),
        other => panic!("expected NotReplicable, got {other:?}"),
    }
    // Built once per worker from the configuration: both acknowledge.
    let t = rt
        .add_inbound(Some(TunnelId(0)), &sa(0x1001, Direction::Inbound), wait)
        .unwrap();
    assert!(t.seq(0).is_some() && t.seq(1).is_some() && t.seq(2).is_none());
    rt.wait(t, wait).unwrap();
    let t = rt
        .set_outbound(TunnelId(0), &sa(0x2001, Direction::Outbound), wait)
        .unwrap();
    rt.wait(t, wait).unwrap();
    // The spec's concentrator caps, split in two shares.
    let t = rt
        .set_tunnel_caps(TunnelId(0), caps_for(Bandwidth::ConcentratorSite))
        .unwrap();
    rt.wait(t, wait).unwrap();
    // A tunnel id beyond the workers' capacity: refused, by worker 0 first.
    let t = rt
        .set_tunnel_caps(TunnelId(1 << 20), caps_for(Bandwidth::Standard))
        .unwrap();
    match rt.wait(t, wait) {
        Err(RuntimeError::Refused { worker, .. }) => assert_eq!(worker, 0),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Per-SA counters come back from both workers, merged: each SA once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.sa_counters().len() < 2 && Instant::now() < deadline {
        rt.poll();
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut spis: Vec<(u32, bool)> = rt
        .sa_counters()
        .iter()
        .map(|s| (s.spi, s.inbound))
        .collect();
    spis.sort_unstable();
    assert_eq!(spis, [(0x1001, true), (0x2001, false)]);

    // Removing the inbound SA twice: the second is refused.
    let t = rt.send(Command::RemoveInbound { spi: 0x1001 }).unwrap();
    rt.wait(t, wait).unwrap();
    let t = rt.send(Command::RemoveInbound { spi: 0x1001 }).unwrap();
    assert!(matches!(
        rt.wait(t, wait),
        Err(RuntimeError::Refused { .. })
    ));

    // Every command counted on both rings: 4 applied + 1 refused by each
    // (the NotReplicable one was never sent) plus the snapshot requests.
    let (applied, failed) = rt.commands();
    assert!(applied >= 12, "{applied}");
    assert_eq!(
        failed, 4,
        "caps beyond capacity and the second removal, on each worker"
    );

    let (each, total) = rt.shutdown_per_worker();
    assert_eq!(each.len(), 2);
    // Both workers polled their queues (the null PMD's frames).
    for w in &each {
        assert!(w.worker.total_dropped() > 0, "{w:?}");
    }
    assert_eq!(
        total.worker.total_dropped(),
        each[0].worker.total_dropped() + each[1].worker.total_dropped()
    );
    assert!(!std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists());
}
