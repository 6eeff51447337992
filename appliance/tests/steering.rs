//! Inbound steering on a real `net_tap` outside port with two workers.
//!
//! ```text
//!   [vt-pl-steer-<pid> netns, made by the test; the test binary re-runs itself inside it]
//!   kernel UdpSocket 192.0.2.1:4500 ── tap vtplo ──► DPDK net_tap (2 rx queues) ──► worker 0 / worker 1
//!        ESP-in-UDP to 192.0.2.10 (tunnel 0, SPI 0x1001) ×10
//!        ESP-in-UDP to 192.0.2.11 (tunnel 1, SPI 0x2001) ×20   (SAs installed, but the packets are
//!                                                                not sealed with them: each counted
//!                                                                as an ICV failure of its tunnel by
//!                                                                the worker that decrypted it)
//!        ESP-in-UDP, SPI 0x3001 ×5 (no SA: unknown_spi where it arrived)
//! ```
//!
//! Tunnels 0 and 1 are the two tunnels of one connection. Where the tap
//! PMD can install flow rules (a kernel with `sch_multiq`, `cls_flower`,
//! `act_skbedit`), each tunnel's traffic is steered to its worker's
//! queue; where it cannot, the runtime says why and the workers hand
//! each tunnel's ESP to its worker over the hand-off rings. Either way
//! the per-worker tunnel counters show tunnel 0's 10 on worker 0 alone
//! and tunnel 1's 20 on worker 1 alone, and with hand-off what one worker
//! handed over the other received. Runs as root under nextest.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use appliance::eal_args::Memory;
use appliance::runtime::steering::{SteerTunnel, SteeringMode, queue_for};
use appliance::runtime::{Runtime, RuntimeConfig};
use dataplane::crypto::EspAlgorithm;
use dataplane::esp::SaConfig;
use dataplane::esp::sa::{DfPolicy, Direction, Lifetimes, NatT, TunnelEndpoints};
use fib::TunnelId;
use worker::{Addresses, Command as WorkerCommand, Drop as DropReason};
use zeroize::Zeroizing;

const INNER: &str = "VPN_STEERING_TEST_IN_NETNS";
const TEST: &str =
    "two_tunnels_of_a_connection_are_steered_to_two_workers_or_the_fallback_is_reported";

/// Deletes the namespace on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(cmd: &str) {
    let st = Command::new("sh").args(["-c", cmd]).status().expect("sh");
    assert!(st.success(), "{cmd}: {st}");
}

#[test]
fn two_tunnels_of_a_connection_are_steered_to_two_workers_or_the_fallback_is_reported() {
    if std::env::var_os(INNER).is_some() {
        inner();
        return;
    }
    // Root: the namespace and the tap need it.
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|r| r.split_whitespace().next().unwrap_or("1").to_owned())
        })
        .unwrap_or_default();
    assert_eq!(uid, "0", "this test needs root (network namespaces, tap)");
    let ns = Netns(format!("vt-pl-steer-{}", std::process::id()));
    sh(&format!("ip netns add {}", ns.0));
    let out = Command::new("timeout")
        .args(["120", "ip", "netns", "exec", &ns.0])
        .arg(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .output()
        .expect("re-run in the namespace");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "inside the namespace: {text}");
    assert!(text.contains("steering:"), "{text}");
}

/// Sends `count` ESP-in-UDP datagrams with `spi` from the kernel to `dst`:4500.
fn send_esp(sock: &UdpSocket, dst: Ipv4Addr, spi: u32, count: u32) {
    for seq in 1..=count {
        let mut p = vec![0u8; 64];
        p[..4].copy_from_slice(&spi.to_be_bytes());
        p[4..8].copy_from_slice(&seq.to_be_bytes());
        sock.send_to(&p, (dst, 4500)).unwrap();
    }
}

fn inner() {
    let pid = std::process::id();
    let tap = "vtplo";
    let prefix = format!("vt-pl-steer-{pid}");
    let mut rc = RuntimeConfig::new(
        &prefix,
        &format!("net_tap0,iface={tap}"),
        "net_null0",
        Memory::NoHuge {
            reason: "test".into(),
        },
    );
    rc.worker_lcores = vec![1, 2];
    rc.lcore_map = Some("0@0,1@1,2@1".into());
    rc.sa_capacity = 64;
    let mut rt = Runtime::start(&rc).expect("runtime");
    assert_eq!(rt.workers(), 2);
    let mode = rt.steering_mode().clone();
    println!("steering: {mode}");

    let (local0, local1) = (Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 11));
    let remote = Ipv4Addr::new(192, 0, 2, 1);
    let macs = rt.macs();
    let t = rt
        .send(WorkerCommand::SetAddresses(Box::new(Addresses {
            outside_mac: macs.outside,
            outside_gateway_mac: [0xff; 6],
            inside_mac: macs.inside,
            inside_gateway_mac: [0xff; 6],
            kernel_mac: [0; 6],
            outside_v4: vec![local0, local1],
            outside_v6: Vec::new(),
            inside_v4: Vec::new(),
        })))
        .unwrap();
    rt.wait(t, Duration::from_secs(10)).unwrap();

    // One connection, tunnel ids 0 and 1. With hand-off, tunnel 1's
    // customer gateway has no configured address (a certificate peer):
    // hand-off goes by SPI and places it all the same (flow rules need
    // the address, so there both tunnels have it).
    let handoff_mode = matches!(mode, SteeringMode::Handoff { .. });
    let tunnels: Vec<SteerTunnel> = [(0u32, local0), (1, local1)]
        .iter()
        .map(|&(id, local)| SteerTunnel {
            tunnel: TunnelId(id),
            local: Some(IpAddr::V4(local)),
            remote: (id == 0 || !handoff_mode).then_some(IpAddr::V4(remote)),
            queue: queue_for(0, id as usize, 2),
        })
        .collect();
    for (id, spi, local) in [(0u32, 0x1001, local0), (1, 0x2001, local1)] {
        let cfg = SaConfig {
            spi,
            direction: Direction::Inbound,
            algorithm: EspAlgorithm::Aes128Gcm16,
            enc_key: Zeroizing::new((0..20u8).collect()),
            auth_key: Zeroizing::new(Vec::new()),
            iv_seed: Zeroizing::new([0; 16]),
            tunnel: TunnelEndpoints::V4 { local, remote },
            nat_t: Some(NatT {
                local_port: 4500,
                remote_port: 4500,
            }),
            esn: false,
            replay_window: 1024,
            lifetimes: Lifetimes::default(),
            df: DfPolicy::CopyFromInner,
        };
        let t = rt
            .add_inbound(Some(TunnelId(id)), &cfg, Duration::from_secs(5))
            .unwrap();
        rt.wait(t, Duration::from_secs(10)).unwrap();
    }
    let refused = rt.steer(&tunnels);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(rt.steered_worker(TunnelId(0)), Some(0));
    assert_eq!(rt.steered_worker(TunnelId(1)), Some(1));
    match &mode {
        SteeringMode::Flow => {}
        SteeringMode::Handoff { reason } => {
            // The tap PMD's refusal, as the driver words it.
            assert!(
                reason.contains("net_tap0") && reason.contains("rte_flow_create"),
                "{reason}"
            );
            assert_eq!(rt.steering_failures(), 0, "no rule is tried");
        }
        SteeringMode::Single => panic!("two workers, yet no steering decision"),
    }

    // The kernel side of the tap is the customer gateway.
    sh(&format!(
        "ip link set lo up && sysctl -qw net.ipv6.conf.{tap}.disable_ipv6=1 \
         && ip addr add {remote}/24 dev {tap} && ip link set {tap} up"
    ));
    let mac = macs
        .outside
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    for l in [local0, local1] {
        sh(&format!(
            "ip neigh replace {l} lladdr {mac} dev {tap} nud permanent"
        ));
    }
    let sock = UdpSocket::bind((remote, 4500)).unwrap();
    send_esp(&sock, local0, 0x1001, 10);
    send_esp(&sock, local1, 0x2001, 20);
    send_esp(&sock, local0, 0x3001, 5);

    // (tunnel 0's drops, tunnel 1's drops) as counted by worker `w`.
    let tunnel_drops = |rt: &Runtime, w: usize| {
        let d = |t| {
            rt.tunnel_counters_of(w, TunnelId(t))
                .map_or(0, |c| c.total_dropped())
        };
        (d(0), d(1))
    };
    let unknown = |rt: &Runtime, w: usize| {
        rt.worker_snapshot(w)
            .map_or(0, |s| s.worker.dropped(DropReason::UnknownSpi))
    };
    let seen = |rt: &Runtime| {
        let (a, b) = (tunnel_drops(rt, 0), tunnel_drops(rt, 1));
        a.0 + a.1 + b.0 + b.1 + unknown(rt, 0) + unknown(rt, 1)
    };
    // The tunnel counters are read live, the workers' own counters (the
    // hand-off's among them) from the snapshots they publish every few
    // milliseconds: wait for both to have caught up.
    let handed = |rt: &Runtime| {
        (0..2)
            .filter_map(|w| rt.worker_snapshot(w))
            .fold((0, 0), |(s, r), x| {
                (s + x.handoff.sent, r + x.handoff.received)
            })
    };
    let settled = |rt: &Runtime| {
        let (sent, received) = handed(rt);
        // (Nothing handed over at all would mean RSS put each tunnel on
        // its own worker already: then this waits out the deadline.)
        seen(rt) >= 35 && sent == received && (sent > 0 || !handoff_mode)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !settled(&rt) && Instant::now() < deadline {
        rt.poll();
        std::thread::sleep(Duration::from_millis(50));
    }
    let each = (tunnel_drops(&rt, 0), tunnel_drops(&rt, 1));
    let handoff: Vec<_> = (0..2)
        .map(|w| rt.worker_snapshot(w).map(|s| s.handoff).unwrap_or_default())
        .collect();
    println!("steering: (tunnel 0, tunnel 1) drops per worker {each:?}, hand-off {handoff:?}");
    assert_eq!(
        unknown(&rt, 0) + unknown(&rt, 1),
        5,
        "a packet without an SA stays where it arrived"
    );
    assert_eq!(
        each,
        ((10, 0), (0, 20)),
        "tunnel 0 decrypted by worker 0 alone, tunnel 1 by worker 1 alone"
    );
    if matches!(mode, SteeringMode::Handoff { .. }) {
        let sent = handoff[0].sent + handoff[1].sent;
        assert_eq!(sent, handoff[0].received + handoff[1].received);
        assert_eq!(handoff[0].full + handoff[1].full, 0);
    }
    rt.shutdown();
    assert!(!std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists());
}
