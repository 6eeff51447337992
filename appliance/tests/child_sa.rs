//! `DpdkDataplane` against a real worker: the EAL with two `net_null`
//! ports (they only feed the worker zero-filled frames, counted as
//! `malformed`), one worker lcore, the real command ring.
//!
//! The worker refuses to remove an SA it does not hold, so every step of
//! the make-before-break sequence that succeeds proves the worker's tables
//! are what the control side believes; a deliberate double removal proves
//! the old SA is really gone. Runs under nextest (one EAL per process).

use std::net::Ipv4Addr;
use std::time::Duration;

use appliance::eal_args::Memory;
use appliance::runtime::dataplane::DpdkDataplane;
use appliance::runtime::{Runtime, RuntimeConfig, RuntimeError};
use control::config::ApplianceConfig;
use control::dataplane::{ChildSaPair, Dataplane, DataplaneError, SaDirection, TunnelKey};
use dataplane::crypto::EspAlgorithm;
use dataplane::esp::SaConfig;
use dataplane::esp::sa::{
    DfPolicy, Direction, LifetimeEvent, LifetimeLimits, Lifetimes, TunnelEndpoints,
};
use worker::Command;
use zeroize::Zeroizing;

const CONFIG: &str = r#"
[gateway]
id = "tgw-test"
outside_addresses = ["192.0.2.1", "192.0.2.3"]
local_networks = ["198.51.100.0/24"]

[dataplane]
worker_lcores = [1]

[[dataplane.ports]]
name = "wan"
device = "net_null0"
role = "outside"

[[dataplane.ports]]
name = "lan"
device = "net_null1"
role = "inside"

[[customer_gateways]]
id = "cgw-1"
ip_address = "192.0.2.2"

[[connections]]
id = "vpn-1"
customer_gateway_id = "cgw-1"
target = "tgw-test"
routing = "static"
static_routes = ["10.1.0.0/16"]

[[connections.tunnels]]
outside_ip_address = "192.0.2.1"
inside_ipv4_cidr = "169.254.10.0/30"

[[connections.tunnels]]
outside_ip_address = "192.0.2.3"
inside_ipv4_cidr = "169.254.11.0/30"
"#;

fn sa(spi: u32, direction: Direction) -> SaConfig {
    let (local, remote) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
    SaConfig {
        spi,
        direction,
        algorithm: EspAlgorithm::Aes128Gcm16,
        enc_key: Zeroizing::new((0..20u8).map(|b| b ^ spi.to_le_bytes()[0]).collect()),
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

fn pair(inbound: u32, outbound: u32) -> ChildSaPair {
    ChildSaPair {
        inbound: sa(inbound, Direction::Inbound),
        outbound: sa(outbound, Direction::Outbound),
    }
}

fn spis(dp: &DpdkDataplane) -> Vec<(SaDirection, u32)> {
    let mut v: Vec<_> = dp.sas().iter().map(|s| (s.direction, s.spi)).collect();
    v.sort_by_key(|(_, spi)| *spi);
    v
}

#[test]
fn child_sa_pairs_install_make_before_break_and_are_removed() {
    let prefix = format!("vt-d-csa-{}", std::process::id());
    let rc = RuntimeConfig::new(
        &prefix,
        "net_null0",
        "net_null1",
        Memory::NoHuge {
            reason: "test".into(),
        },
    );
    let rt = Runtime::start(&rc).expect("runtime");
    let mut dp = DpdkDataplane::new(rt);
    let config = ApplianceConfig::from_toml_str(CONFIG).unwrap();
    dp.apply(&config);
    let key = |tunnel| TunnelKey {
        connection_id: "vpn-1".into(),
        tunnel,
    };

    // First pair.
    dp.install_child_sa(&key(0), &pair(0x1001, 0x2001)).unwrap();
    assert_eq!(
        spis(&dp),
        [
            (SaDirection::Inbound, 0x1001),
            (SaDirection::Outbound, 0x2001)
        ]
    );
    // Rekey: add 0x1002, switch to 0x2002; 0x1001 decrypts until IKE
    // removes it (its DELETE done). The worker would refuse the removal
    // if 0x1001 were not installed.
    dp.install_child_sa(&key(0), &pair(0x1002, 0x2002)).unwrap();
    assert_eq!(
        spis(&dp),
        [
            (SaDirection::Inbound, 0x1001),
            (SaDirection::Inbound, 0x1002),
            (SaDirection::Outbound, 0x2002)
        ]
    );
    dp.remove_child_inbound(&key(0), 0x1001).unwrap();
    dp.remove_child_inbound(&key(0), 0x1001).unwrap(); // gone: no error
    assert_eq!(
        spis(&dp),
        [
            (SaDirection::Inbound, 0x1002),
            (SaDirection::Outbound, 0x2002)
        ]
    );
    // 0x1001 is gone from the worker: removing it again is refused.
    let rt = dp.runtime_mut().unwrap();
    let seq = rt.send(Command::RemoveInbound { spi: 0x1001 }).unwrap();
    match rt.wait(seq, Duration::from_secs(2)) {
        Err(RuntimeError::Refused { reason, .. }) => assert!(reason.contains("no such")),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The worker's per-SA counters come back by snapshot, with the tunnel
    // each inbound SA is counted under.
    // The runtime asks for one about once a second; a loaded machine may
    // take longer to answer.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        dp.poll();
        let snap = dp.runtime().unwrap().sa_counters();
        if snap.iter().any(|s| s.spi == 0x1002) || std::time::Instant::now() > deadline {
            break;
        }
    }
    let tid = dp.tunnel_id(&key(0)).unwrap();
    let snap = dp.runtime().unwrap().sa_counters();
    for (spi, inbound) in [(0x1002, true), (0x2002, false)] {
        let s = snap
            .iter()
            .find(|s| s.spi == spi && s.inbound == inbound)
            .unwrap_or_else(|| panic!("SA {spi:#x} not in the snapshot {snap:?}"));
        assert_eq!(s.tunnel, Some(tid), "{s:?}");
    }
    assert!(!snap.iter().any(|s| s.spi == 0x1001), "{snap:?}");
    // The other tunnel has its own pair, whose inbound SA soft-expires
    // after 1 s: the event reaches the control side naming the tunnel.
    let mut short = pair(0x3001, 0x4001);
    short.inbound.lifetimes = Lifetimes {
        soft: LifetimeLimits {
            secs: Some(1),
            ..LifetimeLimits::default()
        },
        hard: LifetimeLimits {
            secs: Some(3600),
            ..LifetimeLimits::default()
        },
    };
    dp.install_child_sa(&key(1), &short).unwrap();
    assert_eq!(dp.sas().len(), 4);
    let mut events = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while events.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        dp.poll();
        events = dp.poll_sa_events();
    }
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].spi, 0x3001);
    assert_eq!(events[0].direction, SaDirection::Inbound);
    assert_eq!(events[0].tunnel, Some(key(1)));
    assert_eq!(events[0].event, LifetimeEvent::SoftExpired);

    // Bad input never half-installs.
    let err = dp.install_child_sa(&key(0), &pair(7, 0x2003)).unwrap_err();
    assert!(
        matches!(err, DataplaneError::InvalidSa { spi: 7, .. }),
        "{err}"
    );
    let err = dp
        .install_child_sa(&key(2), &pair(0x5001, 0x6001))
        .unwrap_err();
    assert!(matches!(err, DataplaneError::UnknownTunnel(_)), "{err}");
    assert_eq!(dp.sas().len(), 4);

    // The answering side of a rekey: the next inbound SA alone, the pair
    // keeps sending; the switch later does not add it again.
    dp.add_child_inbound(&key(0), &pair(0x1005, 0x2005).inbound)
        .unwrap();
    assert_eq!(
        spis(&dp)
            .into_iter()
            .filter(|(_, s)| *s < 0x3000)
            .collect::<Vec<_>>(),
        [
            (SaDirection::Inbound, 0x1002),
            (SaDirection::Inbound, 0x1005),
            (SaDirection::Outbound, 0x2002)
        ]
    );
    dp.install_child_sa(&key(0), &pair(0x1005, 0x2005)).unwrap();
    assert_eq!(
        spis(&dp)
            .into_iter()
            .filter(|(_, s)| *s < 0x3000)
            .collect::<Vec<_>>(),
        [
            (SaDirection::Inbound, 0x1002),
            (SaDirection::Inbound, 0x1005),
            (SaDirection::Outbound, 0x2005)
        ]
    );

    // Removal: outbound, then every inbound SA of the tunnel; all
    // acknowledged by the worker.
    dp.remove_child_sa(&key(0)).unwrap();
    dp.remove_child_sa(&key(0)).unwrap(); // nothing installed: no error
    assert_eq!(
        spis(&dp),
        [
            (SaDirection::Inbound, 0x3001),
            (SaDirection::Outbound, 0x4001)
        ]
    );

    // Deleting the connection removes what is left.
    let mut without = config.clone();
    without.connections.clear();
    dp.apply(&without);
    assert!(dp.sas().is_empty());

    // The counters: the one deliberate refusal, the worker busy with the
    // null ports' frames, per-port counters under their configured names.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let st = loop {
        std::thread::sleep(Duration::from_millis(100));
        dp.poll();
        let st = dp.stats();
        if st.worker["commands_failed"] >= 1
            && st.ports.get("wan").is_some_and(|p| p.rx_packets > 0)
            || std::time::Instant::now() > deadline
        {
            break st;
        }
    };
    assert_eq!(st.worker["commands_failed"], 1, "{st:?}");
    assert_eq!(st.worker["apply_errors"], 0, "{st:?}");
    assert!(st.drops["malformed"] > 0, "{st:?}");
    assert!(st.ports["wan"].rx_packets > 0, "{st:?}");

    // Shutdown: worker stopped, EAL cleaned up, runtime directory gone.
    dp.shutdown();
    assert!(dp.runtime().is_none());
    assert!(!std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists());
}
