//! Cross-check against scapy's ESP (an independent implementation), both
//! ways, for every algorithm, all four inner/outer IP combinations, with
//! and without NAT-T: scapy decrypts what our encap produced, and our
//! decap accepts what scapy encrypted. The Python side is
//! `tests/esp/scapy_esp.py` (it installs scapy with pip if missing; if
//! that is impossible the test says so on stderr and passes as skipped).
#![allow(
    clippy::cast_possible_truncation,
    reason = "test patterns wrap bytes modulo 256 on purpose"
)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::Command;

use dataplane::crypto::{CryptoBackend, EspAlgorithm, Integrity};
use dataplane::esp::burst::{decap_burst_mb, encap_burst_mb};
use dataplane::esp::sa::{
    DfPolicy, Direction, InboundSa, Lifetimes, NatT, OutboundSa, SaConfig, TunnelEndpoints,
};
use dataplane::esp::{DropCounters, DropReason, decap, encap};
use ipsec_mb::Manager;
use netbuf::TestBuffer;
use zeroize::Zeroizing;

fn alg_name(a: EspAlgorithm) -> String {
    let integ = |i: Integrity| match i {
        Integrity::HmacSha1_96 => "sha1",
        Integrity::HmacSha256_128 => "sha256",
        Integrity::HmacSha384_192 => "sha384",
        Integrity::HmacSha512_256 => "sha512",
    };
    match a {
        EspAlgorithm::Aes128Gcm16 => "aes128gcm16".into(),
        EspAlgorithm::Aes256Gcm16 => "aes256gcm16".into(),
        EspAlgorithm::Aes128Cbc(i) => format!("aes128cbc-{}", integ(i)),
        EspAlgorithm::Aes256Cbc(i) => format!("aes256cbc-{}", integ(i)),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

struct Case {
    alg: EspAlgorithm,
    outer_v6: bool,
    nat_t: bool,
    esn: bool,
    spi: u32,
    enc: Vec<u8>,
    auth: Vec<u8>,
}

impl Case {
    /// (our address, peer address)
    fn addrs(&self) -> (IpAddr, IpAddr) {
        if self.outer_v6 {
            (
                IpAddr::V6("2001:db8::1".parse().unwrap()),
                IpAddr::V6("2001:db8:ffff::7".parse().unwrap()),
            )
        } else {
            (
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            )
        }
    }

    fn cfg(&self, dir: Direction) -> SaConfig {
        let (us, peer) = self.addrs();
        let tunnel = match (us, peer) {
            (IpAddr::V4(local), IpAddr::V4(remote)) => TunnelEndpoints::V4 { local, remote },
            (IpAddr::V6(local), IpAddr::V6(remote)) => TunnelEndpoints::V6 { local, remote },
            _ => unreachable!(),
        };
        SaConfig {
            spi: self.spi,
            direction: dir,
            algorithm: self.alg,
            enc_key: Zeroizing::new(self.enc.clone()),
            auth_key: Zeroizing::new(self.auth.clone()),
            iv_seed: Zeroizing::new([0x33; 16]),
            tunnel,
            nat_t: self.nat_t.then_some(NatT {
                local_port: 4500,
                remote_port: 4500,
            }),
            esn: self.esn,
            replay_window: 1024,
            lifetimes: Lifetimes::default(),
            df: DfPolicy::CopyFromInner,
        }
    }

    fn prefix(&self, kind: &str, id: usize, seq: u64, src: IpAddr, dst: IpAddr) -> String {
        format!(
            "{kind} {id} {} {} {} {} {seq} {} {} {} {src} {dst}",
            alg_name(self.alg),
            if self.outer_v6 { 6 } else { 4 },
            u8::from(self.nat_t),
            u8::from(self.esn),
            self.spi,
            hex(&self.enc),
            if self.auth.is_empty() {
                "-".to_string()
            } else {
                hex(&self.auth)
            },
        )
    }
}

fn inner_packet(v6: bool, len: usize, seed: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| ((i * 7 + seed) % 256) as u8).collect();
    let udp_len = u16::try_from(8 + len).unwrap();
    let mut udp = Vec::new();
    udp.extend_from_slice(&1111u16.to_be_bytes());
    udp.extend_from_slice(&2222u16.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]); // checksum 0: fine for IPv4, scapy does not care for IPv6
    udp.extend_from_slice(&payload);
    if v6 {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&udp_len.to_be_bytes());
        p.extend_from_slice(&[17, 64]);
        p.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd00:1::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&udp);
        p
    } else {
        let total = u16::try_from(20 + udp.len()).unwrap();
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 1, 0, 2]);
        let mut s: u32 = p
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        let c = !(s as u16);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(&udp);
        p
    }
}

#[test]
fn scapy_cross_check_both_ways() {
    run(CryptoBackend::Ring);
}

/// The same cross-check with the SAs on intel-ipsec-mb (GCM through its
/// direct API, CBC + HMAC through its job API: every packet goes through
/// the batched burst functions), so both backends are checked against
/// scapy.
#[test]
fn scapy_cross_check_both_ways_ipsec_mb() {
    run(CryptoBackend::ipsec_mb().expect("intel-ipsec-mb runs on this CPU"));
}

/// Encapsulates one packet: on intel-ipsec-mb through the batched burst
/// (the job API for CBC + HMAC), else one packet at a time.
fn encap_one(mgr: Option<&mut Manager>, sa: &mut OutboundSa, b: &mut TestBuffer) {
    match mgr {
        Some(m) => {
            let mut v = [Ok(())];
            let mut drops = DropCounters::default();
            encap_burst_mb(
                m,
                std::slice::from_mut(sa),
                std::slice::from_mut(b),
                &[0],
                &mut v,
                &mut drops,
            );
            v[0].unwrap();
        }
        None => encap(sa, b).unwrap(),
    }
}

/// Decapsulates one packet, as [`encap_one`].
fn decap_one(
    mgr: Option<&mut Manager>,
    sa: &mut InboundSa,
    b: &mut TestBuffer,
    off: usize,
) -> Result<(), DropReason> {
    match mgr {
        Some(m) => {
            let mut v = [Ok(())];
            let mut drops = DropCounters::default();
            decap_burst_mb(
                m,
                std::slice::from_mut(sa),
                std::slice::from_mut(b),
                &[0],
                &[off],
                &mut v,
                &mut drops,
            );
            v[0]
        }
        None => decap(sa, b, off),
    }
}

fn run(backend: CryptoBackend) {
    let mut mgr = match backend {
        CryptoBackend::IpsecMb(_) => Some(Manager::new().unwrap()),
        CryptoBackend::Ring => None,
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/esp/scapy_esp.py");
    // No up-front scapy check: the script installs scapy when it can.
    if Command::new("python3").arg("--version").output().is_err() {
        testkit::tool_missing("python3");
        return;
    }
    let mut cases = Vec::new();
    // Every algorithm x outer v4/v6 x NAT-T, without ESN; plus one ESN case
    // per algorithm crossing the 2^32 boundary.
    let combos = [false, true]
        .into_iter()
        .flat_map(|o| [(o, false, false), (o, true, false)]);
    for alg in EspAlgorithm::ALL {
        let esn_case = (cases.len() % 2 == 0, cases.len() % 4 == 0, true);
        for (outer_v6, nat_t, esn) in combos.clone().chain([esn_case]) {
            {
                let n = cases.len();
                cases.push(Case {
                    alg,
                    outer_v6,
                    nat_t,
                    esn,
                    spi: 0x1000 + u32::try_from(n).unwrap(),
                    enc: (0..alg.enc_key_len()).map(|i| (i * 11 + n) as u8).collect(),
                    auth: (0..alg.auth_key_len()).map(|i| (i * 5 + n) as u8).collect(),
                });
            }
        }
    }

    let mut req = String::new();
    let mut expect_inner: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut dec_case: HashMap<usize, usize> = HashMap::new();
    let mut id = 0;
    for (ci, c) in cases.iter().enumerate() {
        let (us, peer) = c.addrs();
        let mut out = OutboundSa::new_with(&c.cfg(Direction::Outbound), 0, backend).unwrap();
        // ESN cases start 3 below 2^32 in both directions.
        let base = if c.esn { (1u64 << 32) - 3 } else { 0 };
        out.set_seq(base);
        let mut peer_seq = base;
        for inner_v6 in [false, true] {
            for len in [0usize, 5, 200] {
                // Ours -> scapy.
                let inner = inner_packet(inner_v6, len, id);
                let mut b = TestBuffer::from_slice(&inner);
                encap_one(mgr.as_mut(), &mut out, &mut b);
                let _ = writeln!(
                    req,
                    "{} {} {}",
                    c.prefix("ENC", id, out.seq(), us, peer),
                    hex(&inner),
                    hex(b.as_ref())
                );
                expect_inner.insert(id, inner);
                id += 1;
                // Scapy -> ours (scapy plays the peer: peer -> us).
                let inner = inner_packet(inner_v6, len + 3, id);
                peer_seq += 1;
                let _ = writeln!(
                    req,
                    "{} {}",
                    c.prefix("DEC", id, peer_seq, peer, us),
                    hex(&inner)
                );
                expect_inner.insert(id, inner);
                dec_case.insert(id, ci);
                id += 1;
            }
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let req_path = dir.path().join("requests.txt");
    let out_path = dir.path().join("answers.txt");
    std::fs::write(&req_path, req).unwrap();
    let status = Command::new("python3")
        .arg(&script)
        .arg(&req_path)
        .arg(&out_path)
        .status()
        .unwrap();
    if status.code() == Some(77) {
        testkit::tool_missing("scapy (scapy_esp.py could not install it)");
        return;
    }
    assert!(status.success(), "scapy_esp.py failed: {status}");

    let answers = std::fs::read_to_string(&out_path).unwrap();
    let mut inbound: HashMap<usize, InboundSa> = HashMap::new();
    let (mut enc_ok, mut dec_ok) = (0, 0);
    let mut failures = Vec::new();
    for line in answers.lines().filter(|l| !l.is_empty()) {
        let mut f = line.splitn(3, ' ');
        let kind = f.next().unwrap();
        let rid: usize = f.next().unwrap().parse().unwrap();
        let rest = f.next().unwrap_or("");
        match kind {
            "OK" => enc_ok += 1,
            "PKT" => {
                let c = &cases[dec_case[&rid]];
                let sa = inbound.entry(dec_case[&rid]).or_insert_with(|| {
                    let mut sa =
                        InboundSa::new_with(&c.cfg(Direction::Inbound), 0, backend).unwrap();
                    if c.esn {
                        sa.resume_replay((1 << 32) - 3);
                    }
                    sa
                });
                let mut b = TestBuffer::from_slice(&unhex(rest));
                let off = (if c.outer_v6 { 40 } else { 20 }) + if c.nat_t { 8 } else { 0 };
                match decap_one(mgr.as_mut(), sa, &mut b, off) {
                    Ok(()) if b.as_ref() == &expect_inner[&rid][..] => dec_ok += 1,
                    Ok(()) => failures.push(format!("{rid}: decap output differs")),
                    Err(r) => failures.push(format!(
                        "{rid} ({}, v6out={}, natt={}, esn={}): decap {r:?}",
                        alg_name(c.alg),
                        c.outer_v6,
                        c.nat_t,
                        c.esn
                    )),
                }
            }
            _ => failures.push(line.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(enc_ok, id / 2, "every ENC answered OK");
    assert_eq!(dec_ok, id / 2, "every DEC accepted");
    eprintln!(
        "scapy cross-check: {enc_ok} packets decrypted by scapy, {dec_ok} scapy packets decapsulated by us"
    );
}
