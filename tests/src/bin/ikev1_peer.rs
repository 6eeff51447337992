//! A tiny IKEv1 peer for the strongSwan interop test: our sans-IO IKEv1
//! engine (`control::ikev1`) over kernel UDP sockets on ports 500 and
//! 4500.
//!
//! ```text
//! ikev1_peer --local IP --remote IP --psk KEY --enc AES128 --integ SHA2-256 --dh 14
//!            [--pfs GROUP] [--initiate] [--secs 20] [--dpd-secs N]
//!            [--local-ts CIDR] [--remote-ts CIDR] (default 0.0.0.0/0)
//!            [--phase1-secs N --phase2-secs N] [--close-file PATH]
//! ```
//!
//! `--enc` and `--integ` name phase 1 and phase 2 algorithms alike (phase
//! 1 skips AES-GCM: ISAKMP has no AEAD); `--enc-p2` adds phase 2 only
//! ones. Prints one line per event on stdout (`IKE_UP`, `CHILD_UP` with
//! the ESP keys in hex per SPI, `CHILD_DOWN`, `IKE_DOWN`, `LOG`) and exits
//! after `--secs` seconds or once `--close-file` exists, sending DELETEs
//! first. Test use only: it
//! prints keys.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use control::config::{
    DhGroup, EncryptionAlgorithm, IntegrityAlgorithm, PreSharedKey, TunnelOptions,
};
use control::ike::SystemRng;
use control::ike::sa::{Datagram, Event, IKE_PORT, IkeConfig, NAT_T_PORT};
use control::ikev1::endpoint::Endpoint;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn name<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_json::from_str(&format!("\"{s}\"")).unwrap_or_else(|e| panic!("bad value {s}: {e}"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut local, mut remote, mut psk) = (None, None, String::new());
    let (mut enc, mut enc2, mut integ, mut dh, mut pfs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut initiate, mut secs) = (false, 20u64);
    let (mut local_ts, mut remote_ts): (Vec<ipnet::IpNet>, Vec<ipnet::IpNet>) = (vec![], vec![]);
    let mut timers: Vec<(String, u64)> = Vec::new();
    let mut close_file: Option<std::path::PathBuf> = None;
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--local" => local = Some(v().parse::<IpAddr>().expect("local")),
            "--remote" => remote = Some(v().parse::<IpAddr>().expect("remote")),
            "--psk" => psk = v(),
            "--enc" => enc.push(name::<EncryptionAlgorithm>(&v())),
            "--enc-p2" => enc2.push(name::<EncryptionAlgorithm>(&v())),
            "--integ" => integ.push(name::<IntegrityAlgorithm>(&v())),
            "--dh" => dh.push(DhGroup::from(v().parse::<u16>().expect("dh"))),
            "--pfs" => pfs.push(DhGroup::from(v().parse::<u16>().expect("pfs"))),
            "--initiate" => initiate = true,
            "--local-ts" => local_ts.push(v().parse().expect("local ts")),
            "--remote-ts" => remote_ts.push(v().parse().expect("remote ts")),
            "--secs" => secs = v().parse().expect("secs"),
            "--close-file" => close_file = Some(v().into()),
            "--phase1-secs" | "--phase2-secs" | "--dpd-secs" => {
                timers.push((a.clone(), v().parse().expect("number")));
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let (local, remote) = (local.expect("--local"), remote.expect("--remote"));
    let mut p2 = enc.clone();
    p2.extend(enc2);
    let opts = TunnelOptions {
        pre_shared_key: Some(PreSharedKey::new(psk).expect("psk")),
        phase1_encryption_algorithms: enc,
        phase2_encryption_algorithms: p2,
        phase1_integrity_algorithms: integ.clone(),
        phase2_integrity_algorithms: integ,
        phase1_dh_groups: dh,
        phase2_dh_groups: pfs,
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
    for (k, n) in timers {
        let d = Duration::from_secs(n);
        match k.as_str() {
            "--phase1-secs" => cfg.phase1_lifetime = d,
            "--phase2-secs" => cfg.phase2_lifetime = d,
            _ => cfg.dpd_timeout = d,
        }
    }
    let s500 = UdpSocket::bind((local, IKE_PORT)).expect("bind 500");
    let s4500 = UdpSocket::bind((local, NAT_T_PORT)).expect("bind 4500");
    s500.set_nonblocking(true).expect("nonblocking");
    s4500.set_nonblocking(true).expect("nonblocking");
    let mut rng = SystemRng;
    let mut ep = Endpoint::new();
    ep.add_tunnel(cfg);
    if initiate {
        assert!(ep.initiate(Instant::now(), &mut rng, remote), "initiate");
    }
    let end = Instant::now() + Duration::from_secs(secs);
    let mut out = std::io::stdout();
    let mut buf = vec![0u8; 65536];
    let mut closing = false;
    loop {
        let now = Instant::now();
        let asked = close_file.as_ref().is_some_and(|f| f.exists());
        if (now >= end || asked) && !closing {
            closing = true;
            ep.close_all(&mut rng);
        }
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
                } => format!(
                    "IKE_UP spi_i={spi_i:016x} spi_r={spi_r:016x} nat={nat_detected} suite={suite:?}"
                ),
                Event::ChildSaUp(c) => format!(
                    "CHILD_UP in={:08x} out={:08x} nat={} in_enc={} in_int={} out_enc={} out_int={} remote={} suite={:?}",
                    c.inbound.spi,
                    c.outbound.spi,
                    c.nat_t,
                    hex(&c.inbound.enc_key),
                    hex(&c.inbound.auth_key),
                    hex(&c.outbound.enc_key),
                    hex(&c.outbound.auth_key),
                    c.remote,
                    c.suite
                ),
                Event::ChildSaDown {
                    inbound_spi,
                    outbound_spi,
                } => format!("CHILD_DOWN in={inbound_spi:08x} out={outbound_spi:08x}"),
                Event::IkeSaDown { reason } => format!("IKE_DOWN {reason:?}"),
                Event::Log(l) => format!("LOG {l}"),
                other => format!("EVENT {other:?}"),
            };
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        if closing {
            break;
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
