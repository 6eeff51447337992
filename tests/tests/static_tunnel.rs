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
}

fn run_case(case: &Case) {
    require_root();
    let t = tag();
    let (peer, dp, vpc) = (
        Netns::new(&format!("vt-sp-{t}")),
        Netns::new(&format!("vt-sd-{t}")),
        Netns::new(&format!("vt-sv-{t}")),
    );
    veth(&peer, &format!("sp{t}"), &dp, &format!("so{t}"));
    veth(&vpc, &format!("sv{t}"), &dp, &format!("si{t}"));
    peer.sh(&format!("ip addr add 192.0.2.2/24 dev sp{t}"));
    vpc.sh(&format!("ip addr add 198.51.100.2/24 dev sv{t}"));
    vpc.sh("ip route add 203.0.113.0/24 via 198.51.100.1");
    let [ok, oa, ik, ia] = case.keys;
    let config = format!(
        r#"
[ports]
outside = "net_af_packet0,iface=so{t}"
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
        peer_mac = mac_of(&peer, &format!("sp{t}")),
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
    let daemon = Daemon::spawn(cmd, "vpn-dp");
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
        "python3 {} sp{t} {} {} 192.0.2.2 192.0.2.1 8194 {ik} {ia_} 4097 {ok} {oa_} 203.0.113.5 198.51.100.2 20",
        script.display(),
        case.alg,
        u8::from(case.nat_t),
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
}

#[test]
fn aes_gcm_raw_esp_through_the_dataplane() {
    run_case(&Case {
        alg: "aes128gcm16",
        nat_t: false,
        keys: [
            "000102030405060708090a0b0c0d0e0f10111213",
            "",
            "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3",
            "",
        ],
    });
}

#[test]
fn aes_cbc_sha256_in_udp_4500_through_the_dataplane() {
    run_case(&Case {
        alg: "aes256cbc-sha256",
        nat_t: true,
        keys: [
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60",
            "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf",
            "6162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f80",
        ],
    });
}
