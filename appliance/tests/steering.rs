//! Inbound steering on a real `net_tap` outside port with two workers.
//!
//! ```text
//!   [vt-pl-steer-<pid> netns, made by the test; the test binary re-runs itself inside it]
//!   kernel UdpSocket 192.0.2.1:4500 ── tap vtplo ──► DPDK net_tap (2 rx queues) ──► worker 0 / worker 1
//!        ESP-in-UDP to 192.0.2.10 (tunnel 0, SPI 0x1001) ×10
//!        ESP-in-UDP to 192.0.2.11 (tunnel 1, SPI 0x2001) ×20   (no SAs: each counted unknown_spi
//!                                                                by the worker that got it)
//! ```
//!
//! Tunnels 0 and 1 are the two tunnels of one connection. Where the tap
//! PMD can install flow rules (a kernel with `sch_multiq`, `cls_flower`,
//! `act_skbedit`), each tunnel's traffic is steered to its own worker and
//! the per-worker counters show 10 on one and 20 on the other. Where it
//! cannot, the runtime reports the fallback with the driver's reason,
//! installs nothing, and the traffic is still all received (spread by
//! the tun device's own queue choice). Runs as root under nextest.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use appliance::eal_args::Memory;
use appliance::runtime::steering::{SteerTunnel, SteeringMode, queue_for};
use appliance::runtime::{Runtime, RuntimeConfig};
use fib::TunnelId;
use worker::{Addresses, Command as WorkerCommand, Drop as DropReason};

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

    // One connection, tunnel ids 0 and 1.
    let tunnels: Vec<SteerTunnel> = [(0u32, local0), (1, local1)]
        .iter()
        .map(|&(id, local)| SteerTunnel {
            tunnel: TunnelId(id),
            local: IpAddr::V4(local),
            remote: IpAddr::V4(remote),
            queue: queue_for(0, id as usize, 2),
        })
        .collect();
    let refused = rt.steer(&tunnels);
    match &mode {
        SteeringMode::Flow => {
            assert!(refused.is_empty(), "{refused:?}");
            assert_eq!(rt.steered_worker(TunnelId(0)), Some(0));
            assert_eq!(rt.steered_worker(TunnelId(1)), Some(1));
        }
        SteeringMode::Rss { reason } => {
            // The tap PMD's refusal, as the driver words it.
            assert!(
                reason.contains("net_tap0") && reason.contains("rte_flow_create"),
                "{reason}"
            );
            assert!(refused.is_empty(), "nothing is tried without rte_flow");
            assert_eq!(rt.steered_worker(TunnelId(0)), None);
            assert_eq!(rt.steering_failures(), 0);
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

    let unknown = |rt: &Runtime, w: usize| {
        rt.worker_snapshot(w)
            .map_or(0, |s| s.worker.dropped(DropReason::UnknownSpi))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while unknown(&rt, 0) + unknown(&rt, 1) < 30 && Instant::now() < deadline {
        rt.poll();
        std::thread::sleep(Duration::from_millis(50));
    }
    let each = (unknown(&rt, 0), unknown(&rt, 1));
    println!("steering: unknown_spi per worker {each:?}");
    assert_eq!(
        each.0 + each.1,
        30,
        "every datagram reached a worker: {each:?}"
    );
    if mode == SteeringMode::Flow {
        assert_eq!(each, (10, 20), "tunnel 0 on worker 0, tunnel 1 on worker 1");
    }
    rt.shutdown();
    assert!(!std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists());
}
