//! The dataplane end to end in static-SA mode: `vpn-dp` on two af_packet
//! ports between a VPC host (a real kernel, answering pings) and a customer
//! gateway whose ESP is scapy's independent implementation.
//!
//! ```text
//!  [vt-sp peer] 192.0.2.2 ── veth ── [vt-sd: vpn-dp outside 192.0.2.1 | inside 198.51.100.1] ── veth ── [vt-sv vpc] 198.51.100.2
//!   scapy: ICMP 203.0.113.5 → 198.51.100.2 in ESP ──►  decap ─► vpc kernel answers ─► encap ──► scapy decrypts
//! ```

use std::path::PathBuf;
use std::time::Duration;

use e2e::{Daemon, Netns, bin, require_root, tag, veth, wait_until};

fn mac_of(ns: &Netns, dev: &str) -> String {
    let out = ns.sh(&format!("cat /sys/class/net/{dev}/address"));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct Case {
    alg: &'static str,
    nat_t: bool,
    /// (outbound key, outbound auth, inbound key, inbound auth) from our side.
    keys: [&'static str; 4],
    /// `vpn-dp --crypto-backend`.
    backend: &'static str,
    /// Non-zero: the peer sends big requests whose ESP packets scapy
    /// splits into outer fragments of this many data bytes.
    fragsize: usize,
    /// The outside port's driver.
    outside: Outside,
}

/// The outside port's DPDK driver, and so which checksum work the NIC
/// does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outside {
    /// `net_af_packet` on a veth: no checksum offloads, all in software.
    AfPacket,
    /// `net_pcap` on a veth (hands outer fragments over as they came:
    /// af_packet's fanout would defragment them).
    Pcap,
    /// `net_tap`, its interface moved into the peer's namespace: the PMD
    /// offers the IPv4 header checksum offloads (it verifies received
    /// headers and fills marked ones on transmit), so the outer checksum
    /// is the "NIC"'s on both paths.
    Tap,
}

/// The peer's MAC on a `net_tap` outside port (set on the kernel's side
/// of the tap once it is in the peer's namespace).
const TAP_PEER_MAC: &str = "02:00:5e:00:02:02";

/// Requests the peer sends with a wrong outer IPv4 header checksum after
/// the good ones.
const BAD_CHECKSUMS: usize = 2;

fn run_case(case: &Case) {
    require_root();
    let t = tag();
    let (peer, dp, vpc) = (
        Netns::new(&format!("vt-sp-{t}")),
        Netns::new(&format!("vt-sd-{t}")),
        Netns::new(&format!("vt-sv-{t}")),
    );
    if case.outside != Outside::Tap {
        veth(&peer, &format!("sp{t}"), &dp, &format!("so{t}"));
        peer.sh(&format!("ip addr add 192.0.2.2/24 dev sp{t}"));
    }
    veth(&vpc, &format!("sv{t}"), &dp, &format!("si{t}"));
    vpc.sh(&format!("ip addr add 198.51.100.2/24 dev sv{t}"));
    vpc.sh("ip route add 203.0.113.0/24 via 198.51.100.1");
    let [ok, oa, ik, ia] = case.keys;
    let config = format!(
        r#"
[ports]
outside = "{outside_dev}"
inside = "net_af_packet1,iface=si{t}"

[addresses]
outside = ["192.0.2.1"]
inside = ["198.51.100.1"]
outside_gateway_mac = "{peer_mac}"
inside_gateway_mac = "{vpc_mac}"

[[tunnels]]
id = 0
algorithm = "{alg}"
local = "192.0.2.1"
remote = "192.0.2.2"
nat_t = {nat_t}
outbound = {{ spi = 4097, key = "{ok}", auth_key = "{oa}" }}
inbound = {{ spi = 8194, key = "{ik}", auth_key = "{ia}" }}

[[routes]]
prefix = "203.0.113.0/24"
target = "tunnel:0"

[[routes]]
prefix = "198.51.100.0/24"
target = "inside"
"#,
        // DPDK's af_packet PMD opens its socket with
        // PACKET_FANOUT_FLAG_DEFRAG: the kernel would reassemble outer
        // fragments before vpn-dp sees them. net_pcap hands them over as
        // they came.
        outside_dev = match case.outside {
            Outside::Pcap => format!("net_pcap0,iface=so{t}"),
            Outside::AfPacket => format!("net_af_packet0,iface=so{t}"),
            Outside::Tap => format!("net_tap0,iface=sp{t}"),
        },
        peer_mac = if case.outside == Outside::Tap {
            TAP_PEER_MAC.to_owned()
        } else {
            mac_of(&peer, &format!("sp{t}"))
        },
        vpc_mac = mac_of(&vpc, &format!("sv{t}")),
        alg = case.alg,
        nat_t = case.nat_t,
    );
    let dir = std::env::temp_dir().join(format!("vt-static-{t}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("static.toml");
    std::fs::write(&path, config).unwrap();

    let mut cmd = dp.command(&bin("vpn-dp"));
    cmd.arg("--config").arg(&path);
    cmd.args(["--no-huge", "--file-prefix", &format!("vt-sd-{t}")]);
    cmd.args(["--crypto-backend", case.backend]);
    let daemon = Daemon::spawn(cmd, "vpn-dp");
    if case.outside == Outside::Tap {
        // The PMD made the tap in vpn-dp's namespace; the peer's kernel
        // gets the other end of it.
        // Moved once the port is started (the PMD configures the
        // interface by name in its own namespace until then).
        assert!(
            wait_until(Duration::from_secs(20), || dp
                .sh_ok(&format!("ip -o link show up dev sp{t} | grep -q sp{t}"))),
            "vpn-dp never started its tap sp{t}"
        );
        dp.sh(&format!("ip link set sp{t} netns {}", peer.name()));
        peer.sh(&format!(
            "sysctl -qw net.ipv6.conf.sp{t}.disable_ipv6=1; ip link set sp{t} address {TAP_PEER_MAC} && ip addr add 192.0.2.2/24 dev sp{t} && ip link set sp{t} up"
        ));
    }
    // Up when it answers ARP for its outside address.
    assert!(
        wait_until(Duration::from_secs(20), || {
            peer.sh_ok(&format!(
            "ip neigh flush dev sp{t}; arping -c 1 -w 1 -I sp{t} 192.0.2.1 >/dev/null 2>&1 || ping -c 1 -W 1 192.0.2.1 >/dev/null 2>&1; ip neigh show 192.0.2.1 | grep -q lladdr"
        ))
        }),
        "vpn-dp never answered ARP on the outside"
    );

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("esp/peer.py");
    // The peer's view: its outbound SA is our inbound one and vice versa.
    let out = peer.sh(&format!(
        "python3 {} sp{t} {} {} 192.0.2.2 192.0.2.1 8194 {ik} {ia_} 4097 {ok} {oa_} 203.0.113.5 198.51.100.2 20 {} {BAD_CHECKSUMS}",
        script.display(),
        case.alg,
        u8::from(case.nat_t),
        case.fragsize,
        ia_ = if ia.is_empty() { "-" } else { ia },
        oa_ = if oa.is_empty() { "-" } else { oa },
    ));
    let result = String::from_utf8_lossy(&out.stdout).to_string();
    let stopped = daemon.stop();
    let stats = String::from_utf8_lossy(&stopped.stdout).to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        result.contains(r#""sent": 20, "replies": 20, "bad": 0"#),
        "peer: {result}\nvpn-dp: {stats}\n{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(
        stats.contains("decap=20") && stats.contains("encap=20"),
        "{stats}"
    );
    // The requests with a wrong outer IPv4 header checksum were dropped
    // for it: found by the NIC on a tap, by the dataplane elsewhere.
    assert!(
        stats.contains(&format!("esp_drop OuterBadChecksum={BAD_CHECKSUMS}")),
        "{stats}"
    );
    if case.fragsize > 0 {
        // Every request arrived in outer fragments, reassembled before
        // decryption, none dropped.
        assert!(
            stats.contains("reassembly outer_reassembled=20 "),
            "{stats}"
        );
        assert!(!stats.contains("drop outer_fragment"), "{stats}");
    }
    // The backend asked for is the one that ran (`ring`, `ipsec-mb/avx512`;
    // `auto` names what it chose).
    let err = String::from_utf8_lossy(&stopped.stderr);
    let offloads = match case.outside {
        Outside::Tap => "checksum offloads: rx-ipv4-cksum,tx-ipv4-cksum",
        Outside::AfPacket | Outside::Pcap => "checksum offloads: none",
    };
    assert!(
        err.lines()
            .any(|l| l.contains("outside port") && l.contains(offloads)),
        "{err}"
    );
    let want = match case.backend {
        "auto" => "vpn-dp: crypto: ".to_owned(),
        b => format!("vpn-dp: crypto: {b}"),
    };
    assert!(err.contains(&want), "{err}");
}

#[test]
fn aes_gcm_raw_esp_through_the_dataplane() {
    if !testkit::own_process() {
        return;
    }
    if !testkit::scapy_available() {
        return;
    }
    run_case(&Case {
        alg: "aes128gcm16",
        nat_t: false,
        keys: [
            "000102030405060708090a0b0c0d0e0f10111213",
            "",
            "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3",
            "",
        ],
        backend: "ring",
        fragsize: 0,
        outside: Outside::AfPacket,
    });
}

/// The same with the SAs on intel-ipsec-mb.
#[test]
fn aes_gcm_raw_esp_through_the_dataplane_ipsec_mb() {
    if !testkit::own_process() {
        return;
    }
    if !testkit::scapy_available() {
        return;
    }
    run_case(&Case {
        alg: "aes256gcm16",
        nat_t: false,
        keys: [
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223",
            "",
            "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3",
            "",
        ],
        backend: "ipsec-mb",
        fragsize: 0,
        outside: Outside::AfPacket,
    });
}

#[test]
fn aes_cbc_sha256_in_udp_4500_through_the_dataplane() {
    if !testkit::own_process() {
        return;
    }
    if !testkit::scapy_available() {
        return;
    }
    run_case(&Case {
        alg: "aes256cbc-sha256",
        nat_t: true,
        keys: [
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60",
            "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf",
            "6162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f80",
        ],
        backend: "auto",
        fragsize: 0,
        outside: Outside::AfPacket,
    });
}

/// Issue 20: on a port whose driver offers the IPv4 header checksum
/// offloads (`net_tap` here, e1000e in the image's boot test) the
/// dataplane uses them: received outer headers are checked by the PMD
/// (bad ones dropped and counted), sent ones are filled by it. scapy
/// checks every outer checksum on the wire, so a header left unfilled
/// fails the test, as does a bad one that is answered.
#[test]
fn outer_ipv4_checksums_are_the_nic_s_where_the_port_offers_it() {
    if !testkit::own_process() {
        return;
    }
    if !testkit::scapy_available() {
        return;
    }
    run_case(&Case {
        alg: "aes128gcm16",
        nat_t: false,
        keys: [
            "000102030405060708090a0b0c0d0e0f10111213",
            "",
            "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3",
            "",
        ],
        backend: "ring",
        fragsize: 0,
        outside: Outside::Tap,
    });
    run_case(&Case {
        alg: "aes256cbc-sha256",
        nat_t: true,
        keys: [
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60",
            "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf",
            "6162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f80",
        ],
        backend: "auto",
        fragsize: 0,
        outside: Outside::Tap,
    });
}

/// Spec § 25.3: ESP that reaches us in outer IPv4 fragments (scapy's
/// `fragment()` below the ESP packet's size, sent last fragment first) is
/// reassembled before decryption, raw ESP and UDP 4500 alike.
#[test]
fn outer_esp_fragments_are_reassembled_before_decryption() {
    if !testkit::own_process() {
        return;
    }
    if !testkit::scapy_available() {
        return;
    }
    run_case(&Case {
        alg: "aes128gcm16",
        nat_t: false,
        keys: [
            "000102030405060708090a0b0c0d0e0f10111213",
            "",
            "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3",
            "",
        ],
        backend: "ring",
        fragsize: 512,
        outside: Outside::Pcap,
    });
    run_case(&Case {
        alg: "aes256cbc-sha256",
        nat_t: true,
        keys: [
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60",
            "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf",
            "6162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f80",
        ],
        backend: "auto",
        fragsize: 600,
        outside: Outside::Pcap,
    });
}

// ---------------------------------------------------------------------------
// Every ESP algorithm, bad packets and the kernel port: one `vpn-dp` with a
// tunnel per algorithm against `esp/cgw_multi.py` (scapy) as the customer
// gateway; namespaces `vt-p-*`.
// ---------------------------------------------------------------------------

/// Every algorithm of the spec (§ 3.4: AES-128/256-GCM-16, AES-128/256-CBC
/// with HMAC-SHA1-96, SHA2-256-128, SHA2-384-192, SHA2-512-256).
const ALGORITHMS: [&str; 10] = [
    "aes128gcm16",
    "aes256gcm16",
    "aes128cbc-sha1",
    "aes128cbc-sha256",
    "aes128cbc-sha384",
    "aes128cbc-sha512",
    "aes256cbc-sha1",
    "aes256cbc-sha256",
    "aes256cbc-sha384",
    "aes256cbc-sha512",
];

/// Key material for `alg` (encryption key incl. the GCM salt, integrity
/// key or ""), distinct per tunnel and direction.
fn keys_for(alg: &str, seed: u8) -> (String, String) {
    let hex = |n: usize, s: u8| -> String {
        (0..n)
            .map(|i| {
                let b = u8::try_from(i % 256).unwrap_or(0);
                format!("{:02x}", b.wrapping_mul(7).wrapping_add(s))
            })
            .collect()
    };
    let enc = match alg {
        "aes128gcm16" => 20,
        "aes256gcm16" => 36,
        a if a.starts_with("aes128cbc") => 16,
        _ => 32,
    };
    let auth = match alg.split_once('-').map(|(_, i)| i) {
        Some("sha1") => 20,
        Some("sha256") => 32,
        Some("sha384") => 48,
        Some("sha512") => 64,
        _ => 0,
    };
    (hex(enc, seed), hex(auth, seed.wrapping_add(101)))
}

/// Namespaces peer ⇄ dp ⇄ vpc, addresses, and `vpn-dp` running with
/// `extra` appended to the config (after one tunnel per algorithm in
/// `algs`, tunnel `i` for site 10.(i+1).0.0/24, NAT-T on odd tunnels) and
/// `dp_args` added to its command line.
struct Lab {
    t: String,
    peer: Netns,
    dp: Netns,
    vpc: Netns,
    daemon: Daemon,
    dir: PathBuf,
    tunnels: Vec<serde_json::Value>,
}

impl Lab {
    fn start(algs: &[&str], ports_extra: &str, routes_extra: &str, dp_args: &[&str]) -> Self {
        require_root();
        let t = tag();
        let (peer, dp, vpc) = (
            Netns::new(&format!("vt-p-o{t}")),
            Netns::new(&format!("vt-p-d{t}")),
            Netns::new(&format!("vt-p-v{t}")),
        );
        veth(&peer, &format!("po{t}"), &dp, &format!("pd{t}"));
        veth(&vpc, &format!("pv{t}"), &dp, &format!("pi{t}"));
        peer.sh(&format!("ip addr add 192.0.2.2/24 dev po{t}"));
        vpc.sh(&format!("ip addr add 198.51.100.2/24 dev pv{t}"));
        vpc.sh("ip route add 10.0.0.0/8 via 198.51.100.1");
        let mut config = format!(
            r#"
[ports]
outside = "net_af_packet0,iface=pd{t}"
inside = "net_af_packet1,iface=pi{t}"
{ports_extra}

[addresses]
outside = ["192.0.2.1"]
inside = ["198.51.100.1"]
outside_gateway_mac = "{peer_mac}"
inside_gateway_mac = "{vpc_mac}"

[[routes]]
prefix = "198.51.100.0/24"
target = "inside"
{routes_extra}
"#,
            peer_mac = mac_of(&peer, &format!("po{t}")),
            vpc_mac = mac_of(&vpc, &format!("pv{t}")),
        );
        let mut tunnels = Vec::new();
        for (i, alg) in algs.iter().enumerate() {
            let n = u8::try_from(i).unwrap();
            let (ok, oa) = keys_for(alg, n.wrapping_mul(2));
            let (ik, ia) = keys_for(alg, n.wrapping_mul(2).wrapping_add(1));
            let nat_t = i % 2 == 1;
            let auth = |k: &str| {
                if k.is_empty() {
                    String::new()
                } else {
                    format!(r#", auth_key = "{k}""#)
                }
            };
            config.push_str(&format!(
                r#"
[[tunnels]]
id = {i}
algorithm = "{alg}"
local = "192.0.2.1"
remote = "192.0.2.2"
nat_t = {nat_t}
outbound = {{ spi = {ospi}, key = "{ok}"{oa_} }}
inbound = {{ spi = {ispi}, key = "{ik}"{ia_} }}

[[routes]]
prefix = "10.{site}.0.0/24"
target = "tunnel:{i}"
"#,
                ospi = 0x1000 + i,
                ispi = 0x2000 + i,
                oa_ = auth(&oa),
                ia_ = auth(&ia),
                site = i + 1,
            ));
            // The peer's view: its outbound SA is our inbound one.
            tunnels.push(serde_json::json!({
                "alg": alg, "natt": nat_t,
                "out_spi": 0x2000 + i, "out_key": ik, "out_auth": ia,
                "in_spi": 0x1000 + i, "in_key": ok, "in_auth": oa,
                "site": format!("10.{}.0.5", i + 1),
            }));
        }
        let dir = std::env::temp_dir().join(format!("vt-p-static-{t}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("static.toml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = dp.command(&bin("vpn-dp"));
        cmd.arg("--config").arg(&path);
        cmd.args(["--no-huge", "--file-prefix", &format!("vt-p-d{t}")]);
        cmd.args(dp_args);
        let daemon = Daemon::spawn(cmd, "vpn-dp");
        let lab = Self {
            t,
            peer,
            dp,
            vpc,
            daemon,
            dir,
            tunnels,
        };
        let t = &lab.t;
        assert!(
            wait_until(Duration::from_secs(20), || {
                lab.peer.sh_ok(&format!(
                    "ip neigh flush dev po{t}; ping -c 1 -W 1 192.0.2.1 >/dev/null 2>&1; ip neigh show 192.0.2.1 | grep -q lladdr"
                ))
            }),
            "vpn-dp never answered ARP on the outside"
        );
        lab
    }

    /// Runs `esp/cgw_multi.py` in the peer namespace (bounded by
    /// `timeout`); its JSON result.
    fn cgw(&self, count: u32, bad: bool) -> serde_json::Value {
        let t = &self.t;
        let spec = serde_json::json!({
            "iface": format!("po{t}"), "local": "192.0.2.2", "remote": "192.0.2.1",
            "remote_mac": mac_of(&self.dp, &format!("pd{t}")),
            "vpc_ns": self.vpc.name(), "vpc_addr": "198.51.100.2",
            "count": count, "bad": bad, "tunnels": self.tunnels,
        });
        let path = self.dir.join("cgw.json");
        std::fs::write(&path, spec.to_string()).unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("esp/cgw_multi.py");
        let out = self.peer.sh(&format!(
            "timeout 600 python3 {} {}",
            script.display(),
            path.display()
        ));
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or_else(|e| {
            panic!(
                "cgw_multi.py: {e}: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Stops `vpn-dp`; its printed counters.
    fn stop(self) -> String {
        let out = self.daemon.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// The value of `key=N` on the line starting with `prefix` in vpn-dp's
/// counters (0 when absent: only non-zero reasons are printed).
fn counter(stats: &str, prefix: &str, key: &str) -> u64 {
    stats
        .lines()
        .filter(|l| l.starts_with(prefix))
        .flat_map(|l| l.split_whitespace())
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or(0)
}

fn assert_flows(result: &serde_json::Value, count: u64, stats: &str) {
    let tunnels = result["tunnels"].as_array().expect("tunnels");
    for (i, t) in tunnels.iter().enumerate() {
        for flow in ["icmp_out", "udp_out", "icmp_in", "udp_in"] {
            assert_eq!(
                t[flow].as_u64(),
                Some(count),
                "tunnel {i} ({} nat_t={}) {flow}: {result}\n{stats}",
                t["alg"],
                t["natt"]
            );
        }
    }
    assert_eq!(result["undecryptable"], 0, "{result}\n{stats}");
}

/// UDP and ICMP both ways (started by the customer site and by the VPC)
/// through a tunnel per ESP algorithm, raw ESP and NAT-T alternating.
#[test]
fn every_esp_algorithm_udp_and_icmp_both_ways() {
    if !testkit::own_process() {
        return;
    }
    if !testkit::scapy_available() {
        return;
    }
    every_esp_algorithm_on("ring");
}

/// The same with the SAs on intel-ipsec-mb.
#[test]
fn every_esp_algorithm_udp_and_icmp_both_ways_ipsec_mb() {
    if !testkit::own_process() {
        return;
    }
    if !testkit::scapy_available() {
        return;
    }
    every_esp_algorithm_on("ipsec-mb");
}

fn every_esp_algorithm_on(backend: &str) {
    let lab = Lab::start(&ALGORITHMS, "", "", &["--crypto-backend", backend]);
    let result = lab.cgw(3, false);
    let stats = lab.stop();
    assert!(
        stats.contains(&format!("vpn-dp: crypto: {backend}")),
        "{stats}"
    );
    assert_flows(&result, 3, &stats);
    // Each tunnel: 3 echo requests + 3 UDP + 3 echo replies + 3 UDP
    // echoes in, the same out; nothing dropped.
    for i in 0..ALGORITHMS.len() {
        let line = format!("tunnel {i}:");
        assert_eq!(counter(&stats, &line, "in_packets"), 12, "{stats}");
        assert_eq!(counter(&stats, &line, "out_packets"), 12, "{stats}");
        assert_eq!(counter(&stats, &line, "dropped"), 0, "{stats}");
    }
    assert_eq!(counter(&stats, "stats:", "decap"), 120, "{stats}");
    assert_eq!(counter(&stats, "stats:", "encap"), 120, "{stats}");
}

/// Two workers over two RSS queues per port (`--lcores 0@0,1@0,2@1`:
/// the main lcore and two workers on this two-cpu machine; af_packet gets
/// `qpairs=2`, the kernel's fanout hash spreads by inner 5-tuple on the
/// inside and by outer addresses + SPI (NAT-T: ports) on the outside).
/// Every tunnel is installed on both workers (shared sequence counter and
/// replay window): the same flows as with one worker come through
/// intact, both workers carry traffic (ten VPC → site destinations hash
/// over two queues: all on one has odds 2^-9), and the summed counters
/// equal the single-worker figures. af_packet has no `rte_flow`, so the
/// workers steer inbound ESP themselves: tunnel `i` is decrypted by
/// worker `i mod 2` only, whichever queue its packets came in on, the
/// rest handed over between the workers.
#[test]
fn two_workers_over_rss_queues_carry_every_tunnel() {
    if !testkit::own_process() {
        return;
    }
    if !testkit::scapy_available() {
        return;
    }
    let lab = Lab::start(&ALGORITHMS, "", "", &["--lcores", "0@0,1@0,2@1"]);
    let result = lab.cgw(3, false);
    let stats = lab.stop();
    for l in stats
        .lines()
        .filter(|l| l.contains("worker") || l.contains("port"))
    {
        eprintln!("{l}");
    }
    assert_flows(&result, 3, &stats);
    assert!(
        stats.contains("spread by the driver") || stats.contains("RSS hash functions"),
        "ports not multi-queue: {stats}"
    );
    for i in 0..ALGORITHMS.len() {
        let line = format!("tunnel {i}:");
        assert_eq!(counter(&stats, &line, "in_packets"), 12, "{stats}");
        assert_eq!(counter(&stats, &line, "out_packets"), 12, "{stats}");
        assert_eq!(counter(&stats, &line, "dropped"), 0, "{stats}");
    }
    assert_eq!(counter(&stats, "stats:", "decap"), 120, "{stats}");
    assert_eq!(counter(&stats, "stats:", "encap"), 120, "{stats}");
    // af_packet has no rte_flow: the fallback is said once, with the
    // driver's answer, and no tunnel is steered to one worker.
    assert_eq!(
        stats
            .matches("vpn-dp: dataplane: no rte_flow steering")
            .count(),
        1,
        "{stats}"
    );
    assert!(stats.contains("rte_flow_create"), "{stats}");
    assert!(stats.contains("handed to its worker"), "{stats}");
    for i in 0..ALGORITHMS.len() {
        let line = format!("tunnel {i}:");
        let t = stats.lines().find(|l| l.starts_with(&line)).unwrap_or("");
        let expect = if i % 2 == 0 { "12,0" } else { "0,12" };
        assert!(
            t.contains(&format!("steered_worker={}", i % 2))
                && t.contains(&format!("in_by_worker={expect}")),
            "tunnel {i} not decrypted by worker {} alone: {t}",
            i % 2
        );
    }
    let (w0, w1) = ("worker 0:", "worker 1:");
    // Five tunnels each, 12 packets per tunnel; what one worker handed
    // over the other received, and nothing was lost on the way.
    assert_eq!(counter(&stats, w0, "decap"), 60, "{stats}");
    assert_eq!(counter(&stats, w1, "decap"), 60, "{stats}");
    assert_eq!(
        counter(&stats, w0, "handed_off") + counter(&stats, w1, "handed_off"),
        counter(&stats, w0, "handoff_received") + counter(&stats, w1, "handoff_received"),
        "{stats}"
    );
    assert!(
        counter(&stats, w0, "handed_off") + counter(&stats, w1, "handed_off") > 0,
        "no packet arrived on the other worker's queue: {stats}"
    );
    assert_eq!(counter(&stats, w0, "handoff_full"), 0, "{stats}");
    // Each worker counts what it received (ports and hand-off rings) and
    // the cycles it spent on it: at least its encapsulated, decapsulated
    // and handed-on packets, and some cycles for them.
    for w in [w0, w1] {
        let rx = counter(&stats, w, "rx");
        let handled = counter(&stats, w, "encap")
            + counter(&stats, w, "decap")
            + counter(&stats, w, "handed_off");
        assert!(rx >= handled && rx > 0, "{w} rx {rx} < {handled}: {stats}");
        assert!(counter(&stats, w, "busy_cycles") > 0, "{w}: {stats}");
    }
    let work = |w: &str| counter(&stats, w, "encap") + counter(&stats, w, "decap");
    assert!(work(w0) > 0 && work(w1) > 0, "one worker idle: {stats}");
    assert_eq!(
        counter(&stats, w0, "encap") + counter(&stats, w1, "encap"),
        120,
        "{stats}"
    );
    assert_eq!(
        counter(&stats, w0, "decap") + counter(&stats, w1, "decap"),
        120,
        "{stats}"
    );
    assert_eq!(counter(&stats, "worker 2:", "encap"), 0, "{stats}");
}

/// Replayed, tampered, truncated and unknown-SPI ESP from the peer, and
/// garbage to the outside port: each dropped and counted by its reason,
/// and traffic flows afterwards.
#[test]
fn bad_packets_are_counted_by_reason_and_traffic_still_flows() {
    if !testkit::own_process() {
        return;
    }
    if !testkit::scapy_available() {
        return;
    }
    let lab = Lab::start(&ALGORITHMS[..2], "", "", &[]);
    let result = lab.cgw(3, true);
    let stats = lab.stop();
    assert_flows(&result, 3, &stats);
    assert_eq!(result["bad_good"], true, "{result}\n{stats}");
    assert_eq!(result["after_bad"], 3, "{result}\n{stats}");
    assert_eq!(counter(&stats, "esp_drop", "ReplayDuplicate"), 3, "{stats}");
    assert_eq!(counter(&stats, "esp_drop", "IcvFail"), 3, "{stats}");
    assert_eq!(counter(&stats, "esp_drop", "Truncated"), 3, "{stats}");
    // 3 unknown SPIs as raw ESP, 3 garbage datagrams to UDP 4500.
    assert_eq!(counter(&stats, "drop", "unknown_spi"), 6, "{stats}");
    assert!(counter(&stats, "drop", "malformed") >= 3, "{stats}");
    // The ESP drops are the tunnel's.
    assert_eq!(counter(&stats, "tunnel 0:", "dropped"), 9, "{stats}");
}

/// The optional kernel (tap) port: UDP to port 500 of the outside address
/// reaches a socket of the kernel behind the tap, and a ping to the
/// tunnel's inside address (169.254.10.1) sent through the tunnel is
/// answered by that kernel and comes back through the tunnel. Run with
/// two workers, so the tap is a two-queue (multi-queue tun) port whose
/// queues the two workers poll and send on.
#[test]
fn kernel_port_gets_ike_and_answers_pings_through_the_tunnel() {
    if !testkit::own_process() {
        return;
    }
    if !testkit::scapy_available() {
        return;
    }
    let t = tag();
    let lab = Lab::start(
        &ALGORITHMS[..1],
        &format!(r#"kernel = "net_tap0,iface=pk{t}""#),
        r#"
[[routes]]
prefix = "169.254.10.0/30"
target = "tunnel:0"

[[routes]]
prefix = "169.254.10.1/32"
target = "local"
"#,
        &["--lcores", "0@0,1@0,2@1"],
    );
    assert!(
        wait_until(Duration::from_secs(10), || lab
            .dp
            .sh_ok(&format!("ip link show pk{t}"))),
        "no tap interface pk{t}"
    );
    // The kernel owns the outside and the inside tunnel addresses; it
    // cannot ARP through the worker, so its neighbours are static (the
    // worker rewrites the MACs anyway). The af_packet ports' veths stay
    // kernel interfaces too: without strict reverse-path filtering the
    // kernel would also take the peer's ESP arriving there (192.0.2.1 is
    // local on the tap), answer it with ICMP "protocol unreachable" (no
    // ESP in this kernel) through the tap, and the worker would forward
    // that to the peer, which counted the quoted ESP as a bad packet. (On
    // a NIC bound to DPDK the kernel never sees those frames.)
    lab.dp.sh(&format!(
        "sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.pd{t}.rp_filter=1 net.ipv4.conf.pi{t}.rp_filter=1"
    ));
    lab.dp.sh(&format!(
        "ip addr add 192.0.2.1/24 dev pk{t} && ip addr add 169.254.10.1/30 dev pk{t} && ip link set pk{t} up \
         && ip neigh replace 192.0.2.2 lladdr 02:00:00:00:00:02 dev pk{t} nud permanent \
         && ip neigh replace 169.254.10.2 lladdr 02:00:00:00:00:02 dev pk{t} nud permanent"
    ));
    // A socket on UDP 500 in the kernel behind the tap.
    let listener = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.dp.name(),
            "timeout",
            "15",
            "python3",
            "-c",
        ])
        .arg(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind((\"192.0.2.1\", 500))\nprint(s.recvfrom(2000)[0].decode(), flush=True)",
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("listener");
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        lab.peer.sh(
            "python3 -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b\\\"ike-probe\\\", (\\\"192.0.2.1\\\", 500))\"",
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = listener.wait_with_output().expect("listener output");
    let got = String::from_utf8_lossy(&got.stdout).to_string();

    // ICMP to the tunnel's inside address, through the tunnel.
    let tun = &lab.tunnels[0];
    let s = |k: &str| tun[k].as_str().unwrap().to_owned();
    let dash = |k: &str| {
        if s(k).is_empty() {
            "-".to_owned()
        } else {
            s(k)
        }
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("esp/peer.py");
    let out = lab.peer.sh(&format!(
        "timeout 180 python3 {} po{t} {} 0 192.0.2.2 192.0.2.1 {} {} {} {} {} {} 169.254.10.2 169.254.10.1 5",
        script.display(),
        s("alg"),
        tun["out_spi"],
        s("out_key"),
        dash("out_auth"),
        tun["in_spi"],
        s("in_key"),
        dash("in_auth"),
    ));
    let ping = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = lab.stop();
    assert_eq!(
        got.trim(),
        "ike-probe",
        "UDP 500 never reached the kernel\n{stats}"
    );
    assert!(
        ping.contains(r#""sent": 5, "replies": 5, "bad": 0"#),
        "peer: {ping}\n{stats}"
    );
    assert!(counter(&stats, "stats:", "punted") >= 8, "{stats}");
    assert!(
        stats.contains(&format!("kernel port net_tap0,iface=pk{t}: 2 queue(s)")),
        "{stats}"
    );
    assert_eq!(counter(&stats, "tunnel 0:", "in_packets"), 5, "{stats}");
    assert_eq!(counter(&stats, "tunnel 0:", "out_packets"), 5, "{stats}");
}

/// IPv6 on the outside: the peer's kernel resolves our outside IPv6
/// address by neighbour discovery, answered by the worker (RFC 4861
/// Neighbor Advertisement with the outside port's MAC), and a solicitation
/// for an address that is not ours is ignored and counted.
#[test]
fn the_peer_resolves_our_outside_ipv6_address() {
    if !testkit::own_process() {
        return;
    }
    require_root();
    let t = tag();
    let (peer, dp) = (
        Netns::new(&format!("vt-n6p-{t}")),
        Netns::new(&format!("vt-n6d-{t}")),
    );
    veth(&peer, &format!("n6p{t}"), &dp, &format!("n6d{t}"));
    peer.sh(&format!(
        "sysctl -qw net.ipv6.conf.n6p{t}.disable_ipv6=0 && ip -6 addr add 2001:db8::2/64 dev n6p{t} nodad"
    ));
    let config = format!(
        r#"
[ports]
outside = "net_af_packet0,iface=n6d{t}"
inside = "net_null0"

[addresses]
outside = ["192.0.2.1", "2001:db8::1"]
outside_gateway_mac = "{peer_mac}"
inside_gateway_mac = "02:00:00:00:01:01"
"#,
        peer_mac = mac_of(&peer, &format!("n6p{t}")),
    );
    let dir = std::env::temp_dir().join(format!("vt-n6-{t}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("static.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = dp.command(&bin("vpn-dp"));
    cmd.arg("--config").arg(&path);
    cmd.args(["--no-huge", "--file-prefix", &format!("vt-n6d-{t}")]);
    let daemon = Daemon::spawn(cmd, "vpn-dp");
    let ours = mac_of(&dp, &format!("n6d{t}"));
    // A ping makes the kernel solicit; nothing answers the echo itself
    // (no kernel port), the neighbour entry is what we look at.
    let resolved = wait_until(Duration::from_secs(20), || {
        peer.sh_ok(&format!(
            "ip -6 neigh flush dev n6p{t}; ping -6 -c 1 -W 1 2001:db8::1 >/dev/null 2>&1; \
             ip -6 neigh show 2001:db8::1 dev n6p{t} | grep -q 'lladdr {ours}'"
        ))
    });
    // Someone else's address: solicited, never answered.
    let _ = peer.sh_ok("ping -6 -c 1 -W 1 2001:db8::77 >/dev/null 2>&1");
    let other = peer.sh(&format!("ip -6 neigh show 2001:db8::77 dev n6p{t}"));
    let stopped = daemon.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let stats = format!(
        "{}\n{}",
        String::from_utf8_lossy(&stopped.stdout),
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(resolved, "2001:db8::1 not resolved to {ours}\n{stats}");
    assert!(
        !String::from_utf8_lossy(&other.stdout).contains("lladdr"),
        "2001:db8::77 resolved: {}",
        String::from_utf8_lossy(&other.stdout)
    );
    assert!(counter(&stats, "stats:", "arp_replies") >= 1, "{stats}");
    assert!(counter(&stats, "drop", "nd_ignored") >= 1, "{stats}");
}
