//! A tiny IKE peer for the strongSwan interop test: our sans-IO IKE
//! engine (`control::ike`) over kernel UDP sockets on ports 500 and 4500.
//!
//! ```text
//! ike_peer --local IP --remote IP --psk KEY --enc AES128-GCM-16 --integ SHA2-256 --dh 19
//!          [--initiate | --start] [--secs 20] [--dpd-secs N --dpd-action clear|none|restart]
//!          [--local-ts CIDR]… [--remote-ts CIDR]… (default 0.0.0.0/0)
//!          [--phase1-secs N --phase2-secs N --margin-secs N --fuzz PERCENT]
//!          [--cert FILE --key FILE --ca FILE]  (certificate authentication)
//!          [--fragment-size BYTES | --no-fragmentation]
//! ```
//!
//! Prints one line per event on stdout (`IKE_UP`, `CHILD_UP` with the
//! ESP keys in hex, `CHILD_DOWN`, `IKE_DOWN`, `LOG`) and exits after
//! `--secs` seconds. Test use only: it prints keys.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control::config::{
    DhGroup, DpdTimeoutAction, EncryptionAlgorithm, IntegrityAlgorithm, PreSharedKey,
    StartupAction, TunnelOptions,
};
use control::ike::SystemRng;
use control::ike::cert::{CertAuth, LocalCredentials, TrustAnchors, WallClock};
use control::ike::endpoint::Endpoint;
use control::ike::sa::{Datagram, Event, IKE_PORT, IkeConfig, NAT_T_PORT};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn name<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_json::from_str(&format!("\"{s}\"")).unwrap_or_else(|e| panic!("bad value {s}: {e}"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut local, mut remote, mut psk) = (None, None, String::new());
    let (mut enc, mut integ, mut dh) = (Vec::new(), Vec::new(), Vec::new());
    let (mut initiate, mut secs) = (false, 20u64);
    let mut timers: Vec<(String, u64)> = Vec::new();
    let (mut dpd_action, mut start) = (DpdTimeoutAction::Clear, false);
    let (mut local_ts, mut remote_ts): (Vec<ipnet::IpNet>, Vec<ipnet::IpNet>) = (vec![], vec![]);
    let (mut cert, mut key, mut ca) = (None, None, None);
    let (mut fragment_size, mut no_frag) = (None, false);
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--local" => local = Some(v().parse::<IpAddr>().expect("local")),
            "--remote" => remote = Some(v().parse::<IpAddr>().expect("remote")),
            "--psk" => psk = v(),
            "--enc" => enc.push(name::<EncryptionAlgorithm>(&v())),
            "--integ" => integ.push(name::<IntegrityAlgorithm>(&v())),
            "--dh" => dh.push(DhGroup::from(v().parse::<u16>().expect("dh"))),
            "--initiate" => initiate = true,
            "--start" => start = true,
            "--local-ts" => local_ts.push(v().parse().expect("local ts")),
            "--remote-ts" => remote_ts.push(v().parse().expect("remote ts")),
            "--dpd-action" => dpd_action = name::<DpdTimeoutAction>(&v()),
            "--secs" => secs = v().parse().expect("secs"),
            "--cert" => cert = Some(std::path::PathBuf::from(v())),
            "--key" => key = Some(std::path::PathBuf::from(v())),
            "--ca" => ca = Some(std::path::PathBuf::from(v())),
            "--fragment-size" => fragment_size = Some(v().parse::<usize>().expect("bytes")),
            "--no-fragmentation" => no_frag = true,
            "--phase1-secs" | "--phase2-secs" | "--margin-secs" | "--fuzz" | "--dpd-secs" => {
                timers.push((a.clone(), v().parse().expect("number")));
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let (local, remote) = (local.expect("--local"), remote.expect("--remote"));
    let opts = TunnelOptions {
        pre_shared_key: Some(PreSharedKey::new(psk).expect("psk")),
        phase1_encryption_algorithms: enc.clone(),
        phase2_encryption_algorithms: enc,
        phase1_integrity_algorithms: integ.clone(),
        phase2_integrity_algorithms: integ,
        phase1_dh_groups: dh.clone(),
        phase2_dh_groups: dh,
        dpd_timeout_action: dpd_action,
        startup_action: if start {
            StartupAction::Start
        } else {
            StartupAction::Add
        },
        ..TunnelOptions::default()
    };
    let any: Vec<ipnet::IpNet> = vec!["0.0.0.0/0".parse().expect("net")];
    if local_ts.is_empty() {
        local_ts.clone_from(&any);
    }
    if remote_ts.is_empty() {
        remote_ts = any;
    }
    let mut cfg = IkeConfig::from_tunnel(&opts, local, remote, local_ts, remote_ts);
    // Short timers for tests, below what the configuration validation
    // allows for real tunnels.
    for (k, n) in timers {
        let d = Duration::from_secs(n);
        match k.as_str() {
            "--phase1-secs" => cfg.phase1_lifetime = d,
            "--phase2-secs" => cfg.phase2_lifetime = d,
            "--margin-secs" => cfg.rekey_margin = d,
            "--fuzz" => cfg.rekey_fuzz_percent = u32::try_from(n).expect("fuzz"),
            _ => cfg.dpd_timeout = d,
        }
    }
    if let (Some(cert), Some(key), Some(ca)) = (cert, key, ca) {
        let local_creds = LocalCredentials::load(&cert, &key).unwrap_or_else(|e| panic!("{e}"));
        let trust = TrustAnchors::load(&ca).unwrap_or_else(|e| panic!("{e}"));
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        cfg.cert = Some(Arc::new(CertAuth {
            local: local_creds,
            trust,
            clock: WallClock::new(Instant::now(), i64::try_from(unix).expect("time")),
        }));
    }
    if let Some(n) = fragment_size {
        cfg.fragmentation.max_datagram = n;
    }
    cfg.fragmentation.enabled = !no_frag;
    let s500 = UdpSocket::bind((local, IKE_PORT)).expect("bind 500");
    let s4500 = UdpSocket::bind((local, NAT_T_PORT)).expect("bind 4500");
    s500.set_nonblocking(true).expect("nonblocking");
    s4500.set_nonblocking(true).expect("nonblocking");
    let mut rng = SystemRng;
    let mut ep = Endpoint::new(&mut rng, 32);
    ep.add_tunnel(cfg);
    if initiate {
        assert!(ep.initiate(Instant::now(), &mut rng, remote), "initiate");
    }
    ep.start(Instant::now(), &mut rng);
    let end = Instant::now() + Duration::from_secs(secs);
    let mut out = std::io::stdout();
    let mut buf = vec![0u8; 65536];
    while Instant::now() < end {
        let mut busy = false;
        while let Some(t) = ep.poll_transmit() {
            busy = true;
            let s = if t.local.port() == NAT_T_PORT {
                &s4500
            } else {
                &s500
            };
            let _ = s.send_to(&t.payload, t.remote);
        }
        while let Some((_, e)) = ep.poll_event() {
            let line = match e {
                Event::IkeSaUp {
                    spi_i,
                    spi_r,
                    suite,
                    nat_detected,
                } => {
                    format!(
                        "IKE_UP spi_i={spi_i:016x} spi_r={spi_r:016x} nat={nat_detected} suite={suite:?}"
                    )
                }
                Event::ChildSaUp(c) => {
                    let (i, r) = (c.initiator_keys(), c.responder_keys());
                    format!(
                        "CHILD_UP in={:08x} out={:08x} nat={} i_enc={} i_int={} r_enc={} r_int={} suite={:?}",
                        c.inbound.spi,
                        c.outbound.spi,
                        c.nat_t,
                        hex(&i.enc_key),
                        hex(&i.auth_key),
                        hex(&r.enc_key),
                        hex(&r.auth_key),
                        c.suite
                    )
                }
                Event::ChildSaDown {
                    inbound_spi,
                    outbound_spi,
                } => {
                    format!("CHILD_DOWN in={inbound_spi:08x} out={outbound_spi:08x}")
                }
                Event::IkeSaDown { reason } => format!("IKE_DOWN {reason:?}"),
                Event::Log(l) => format!("LOG {l}"),
                Event::IkeSaRekeyed { spi_i, spi_r } => {
                    format!("IKE_REKEYED spi_i={spi_i:016x} spi_r={spi_r:016x}")
                }
                other => format!("EVENT {other:?}"),
            };
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        for (s, port) in [(&s500, IKE_PORT), (&s4500, NAT_T_PORT)] {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                busy = true;
                ep.handle_datagram(
                    Instant::now(),
                    &mut rng,
                    Datagram {
                        local: SocketAddr::new(local, port),
                        remote: from,
                        payload: &buf[..n],
                    },
                );
            }
        }
        if ep.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            ep.handle_timeout(Instant::now(), &mut rng);
            busy = true;
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let _ = writeln!(out, "DONE");
}
