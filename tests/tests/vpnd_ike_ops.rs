//! `vpnd`'s IKE in operation, against a real strongSwan 5.9.8 customer
//! gateway (kernel-libipsec), traffic through the DPDK dataplane:
//!
//! * an IKE_SA_INIT flood from many source addresses while a tunnel
//!   forwards pings: cookies (RFC 7296 § 2.6), no lost ping;
//! * Child SA and IKE SA rekeys with short lifetimes, initiated by
//!   strongSwan and by vpnd, while a fast ping runs: no lost ping
//!   (make-before-break in the worker);
//! * SIGTERM: vpnd sends DELETE for its IKE SAs before it exits.
//!
//! ```text
//!  [vt-iko-c cgw: charon 192.0.2.2, LAN 10.1.0.1/16 on lo; scapy floods]
//!        │ veth kc ⇄ ko (af_packet, outside)
//!  [vt-iko-d dp: vpnd  outside 192.0.2.1 (tunnel 0), 192.0.2.3 (tunnel 1)
//!              kernel port kk (tap): vpnd puts the outside addresses on it
//!              inside 198.51.100.1]
//!        │ veth kv ⇄ ki (af_packet, inside)
//!  [vt-iko-v vpc: 198.51.100.2, 10.1.0.0/16 via 198.51.100.1]
//! ```
//!
//! Needs the workspace binaries (`cargo build --workspace --bins`),
//! strongSwan and scapy (`tools/setup.sh`).

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use control::config::{PreSharedKey, TunnelOptions};
use control::ike::SystemRng;
use control::ike::endpoint::Endpoint;
use control::ike::sa::IkeConfig;
use e2e::{Netns, Proc, bin, bounded, require_root, tag, text, veth, wait_until};
use serde_json::Value;

const CGW: &str = "192.0.2.2";
const US0: &str = "192.0.2.1";
const US1: &str = "192.0.2.3";
const CGW_LAN: &str = "10.1.0.1";
const VPC: &str = "198.51.100.2";
const PSK: &str = "vtx.PSK_0123456789abc";
const CONN: &str = "vpn-ops";

/// What differs between the scenarios.
#[derive(Default)]
struct Setup {
    /// Extra lines in strongSwan's IKE connection section.
    ike_extra: &'static str,
    /// Extra lines in strongSwan's Child SA section.
    child_extra: &'static str,
    /// `VPND_IKE_LIFETIME_DIVISOR` for vpnd (short lifetimes, test mode).
    lifetime_divisor: Option<u32>,
    /// `VPND_IKE_REKEY_PACKETS` for vpnd (soft packet lifetime, test mode).
    rekey_packets: Option<u64>,
    /// `modify-tunnel-options` settings for tunnel 0.
    options: &'static [&'static str],
}

struct Lab {
    // Drop order: processes, then the directory, then the namespaces.
    charon: Proc,
    vpnd: Proc,
    dir: tempfile::TempDir,
    cgw: Netns,
    dp: Netns,
    vpc: Netns,
    t: String,
    prefix: String,
}

impl Lab {
    fn new(setup: &Setup) -> Self {
        require_root();
        let t = tag();
        let cgw = Netns::new(&format!("vt-iko-c-{t}"));
        let dp = Netns::new(&format!("vt-iko-d-{t}"));
        let vpc = Netns::new(&format!("vt-iko-v-{t}"));
        veth(&cgw, &format!("kc{t}"), &dp, &format!("ko{t}"));
        veth(&vpc, &format!("kv{t}"), &dp, &format!("ki{t}"));
        cgw.sh(&format!("ip addr add {CGW}/24 dev kc{t}"));
        cgw.sh(&format!("ip addr add {CGW_LAN}/16 dev lo"));
        vpc.sh(&format!("ip addr add {VPC}/24 dev kv{t}"));
        vpc.sh("ip route add 10.1.0.0/16 via 198.51.100.1");
        // The af_packet ports' veths are kernel interfaces too: strict
        // reverse-path filtering keeps the kernel from taking the frames
        // the worker also punts (see vpnd_strongswan.rs).
        dp.sh(&format!(
            "sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.ko{t}.rp_filter=1 net.ipv4.conf.ki{t}.rp_filter=1"
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = format!("vt-iko-dp-{t}");
        let mac = |ns: &Netns, dev: &str| {
            String::from_utf8_lossy(&ns.sh(&format!("cat /sys/class/net/{dev}/address")).stdout)
                .trim()
                .to_owned()
        };
        let socket = dir.path().join("control.sock");
        std::fs::write(
            dir.path().join("vpnd.toml"),
            format!(
                r#"
[gateway]
id = "tgw-ops"
outside_addresses = ["{US0}", "{US1}"]
local_networks = ["198.51.100.0/24"]

[dataplane]
file_prefix = "{prefix}"
main_lcore = 0
worker_lcores = [1]
outside_next_hop_mac = "{cgw_mac}"
inside_next_hop_mac = "{vpc_mac}"
inside_addresses = ["198.51.100.1"]

[[dataplane.ports]]
name = "wan"
device = "net_af_packet0,iface=ko{t}"
role = "outside"

[[dataplane.ports]]
name = "lan"
device = "net_af_packet1,iface=ki{t}"
role = "inside"

[[dataplane.ports]]
name = "kernel"
device = "net_tap0,iface=kk{t}"
role = "kernel"

[management]
socket_path = "{socket}"

[metrics]
enabled = false
"#,
                cgw_mac = mac(&cgw, &format!("kc{t}")),
                vpc_mac = mac(&vpc, &format!("kv{t}")),
                socket = socket.display(),
            ),
        )
        .expect("vpnd.toml");
        let mut cmd = dp.command(&bin("vpnd"));
        cmd.arg("--config")
            .arg(dir.path().join("vpnd.toml"))
            .arg("--no-huge");
        if let Some(d) = setup.lifetime_divisor {
            cmd.env("VPND_IKE_LIFETIME_DIVISOR", d.to_string());
        }
        if let Some(n) = setup.rekey_packets {
            cmd.env("VPND_IKE_REKEY_PACKETS", n.to_string());
        }
        let vpnd = Proc::spawn(cmd, &dir.path().join("vpnd.log"));

        let d = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("strongswan.conf"),
            format!(
                "charon {{\n  load = random nonce openssl aes sha1 sha2 hmac gcm pem pkcs1 x509 pubkey kdf curve25519 kernel-libipsec kernel-netlink socket-default vici updown\n  plugins {{ vici {{ socket = unix://{d}/charon.vici }} }}\n  filelog {{ stderr {{ default = 1 ike = 2 }} }}\n}}\ncharon-systemd {{ journal {{ default = -1 }} }}\n"
            ),
        )
        .expect("strongswan.conf");
        std::fs::write(
            dir.path().join("swanctl.conf"),
            format!(
                "connections {{\n vpn {{\n  version = 2\n  local_addrs = {CGW}\n  remote_addrs = {US0}\n  proposals = aes128gcm16-prfsha256-ecp256\n{ike}\n  local {{ auth = psk }}\n  remote {{ auth = psk }}\n  children {{ net {{\n   local_ts = 10.1.0.0/16\n   remote_ts = 198.51.100.0/24\n   esp_proposals = aes128gcm16-ecp256\n   mode = tunnel\n{child}\n  }} }}\n }}\n}}\nsecrets {{ ike-1 {{ secret = \"{PSK}\" }} }}\n",
                ike = setup.ike_extra,
                child = setup.child_extra,
            ),
        )
        .expect("swanctl.conf");
        let mut cmd = cgw.command(Path::new("/usr/sbin/charon-systemd"));
        cmd.env("STRONGSWAN_CONF", dir.path().join("strongswan.conf"));
        let charon = Proc::spawn(cmd, &dir.path().join("charon.log"));

        let mut lab = Self {
            charon,
            vpnd,
            dir,
            cgw,
            dp,
            vpc,
            t,
            prefix,
        };
        let vici = lab.dir.path().join("charon.vici");
        assert!(
            wait_until(Duration::from_secs(10), || vici.exists()),
            "charon did not start: {}",
            lab.charon.output()
        );
        let up = wait_until(Duration::from_secs(60), || {
            lab.vpnd.running() && lab.ctl(&["ping"]).status.success()
        });
        assert!(up, "vpnd did not come up:\n{}", lab.vpnd.output());
        // vpnd puts the outside addresses (and a route and neighbour for
        // the gateway) on the kernel port itself: no `ip addr` here.
        lab
    }

    fn ctl(&self, args: &[&str]) -> Output {
        let mut c = Command::new(bin("vpnctl"));
        c.arg("--socket")
            .arg(self.dir.path().join("control.sock"))
            .args(args);
        bounded(c, Duration::from_secs(30))
    }

    fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "vpnctl {args:?}: {}\n--- vpnd:\n{}",
            text(&out),
            self.vpnd.output()
        );
        text(&out)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl_ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("vpnctl {args:?}: {e}: {out}"))
    }

    fn swanctl(&self, args: &str) -> (bool, String) {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.cgw.name(), "swanctl"])
            .args(args.split_whitespace())
            .arg("--uri")
            .arg(format!("unix://{}/charon.vici", self.dir.path().display()));
        let out = bounded(c, Duration::from_secs(30));
        (out.status.success(), text(&out))
    }

    fn tunnel(&self, index: usize) -> Value {
        let v = self.json(&["show", "tunnels", CONN]);
        v["response"]["tunnels"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["tunnel"] == index).cloned())
            .unwrap_or(Value::Null)
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- show tunnels:\n{}\n--- show sas:\n{}\n--- show stats:\n{}\n--- swanctl --list-sas:\n{}\n--- vpnd:\n{}\n--- charon:\n{}",
            text(&self.ctl(&["show", "tunnels"])),
            text(&self.ctl(&["show", "sas"])),
            text(&self.ctl(&["--json", "show", "stats"])),
            self.swanctl("--list-sas").1,
            self.vpnd.output(),
            self.charon.output()
        )
    }

    fn wait_status(&self, index: usize, status: &str, what: &str) {
        let ok = wait_until(Duration::from_secs(30), || {
            self.tunnel(index)["status"] == status
        });
        assert!(
            ok,
            "{what}: tunnel {index} never {status}\n{}",
            self.diagnostics()
        );
    }

    /// The connection (static routing to the gateway's LAN, our PSK on
    /// tunnel 0), strongSwan's configuration loaded and the tunnel up
    /// (strongSwan initiates), pings passing.
    fn tunnel_up(&self, options: &[&str]) {
        self.ctl_ok(&["cgw", "create", "cgw-ops", "--ip-address", CGW]);
        self.ctl_ok(&[
            "connection",
            "create",
            CONN,
            "--customer-gateway",
            "cgw-ops",
            "--routing",
            "static",
            "--static-route",
            "10.1.0.0/16",
            "--tunnel0-outside-ip",
            US0,
            "--tunnel1-outside-ip",
            US1,
        ]);
        self.ctl_ok(&[
            "modify-tunnel-options",
            CONN,
            "0",
            "--set",
            &format!("pre_shared_key={PSK}"),
        ]);
        for o in options {
            self.ctl_ok(&["modify-tunnel-options", CONN, "0", "--set", o]);
        }
        let (ok, out) = self.swanctl(&format!(
            "--load-all --file {}",
            self.dir.path().join("swanctl.conf").display()
        ));
        assert!(ok, "swanctl --load-all: {out}");
        let mut out = String::new();
        let ok = wait_until(Duration::from_secs(40), || {
            let (ok, o) = self.swanctl("--initiate --child net --timeout 15");
            out = o;
            ok
        });
        assert!(
            ok,
            "strongSwan could not bring the tunnel up: {out}\n{}",
            self.diagnostics()
        );
        self.wait_status(0, "UP", "strongSwan initiates");
        // The VPC host resolves vpnd's inside address, and a first ping
        // goes through (the worker may be descheduled on a loaded machine).
        assert!(
            wait_until(Duration::from_secs(30), || self
                .vpc
                .sh_ok(&format!("ping -c 1 -W 2 {CGW_LAN} >/dev/null"))),
            "no ping through the tunnel\n{}",
            self.diagnostics()
        );
    }

    /// Starts `ping -c count -i interval` from the VPC host to the
    /// gateway's LAN in the background.
    fn ping(&self, count: u32, interval: &str) -> Proc {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.vpc.name(), "ping", "-q", "-n"])
            .args(["-c", &count.to_string(), "-i", interval, "-W", "5", CGW_LAN]);
        Proc::spawn(c, &self.dir.path().join(format!("ping-{count}.log")))
    }

    /// Waits (bounded) for a ping started by [`ping`](Self::ping); returns
    /// (transmitted, received) and the summary.
    fn ping_result(&self, mut p: Proc, limit: Duration) -> (u64, u64, String) {
        let done = wait_until(limit, || !p.running());
        let out = p.output();
        assert!(done, "ping still running after {limit:?}: {out}");
        // "N packets transmitted, M received, ..."
        let line = out
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_default()
            .to_owned();
        let num = |word: &str| {
            let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
            words
                .iter()
                .position(|w| *w == word)
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| words[i].parse::<u64>().ok())
                .unwrap_or(0)
        };
        (num("packets"), num("received"), out)
    }

    fn logs(&self) -> String {
        self.ctl_ok(&["logs", "--connection", CONN])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // vpnd removes it on SIGTERM; after a crash it would stay.
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
    }
}

/// Well-formed IKE_SA_INIT requests (group 19 KE, the gateway's proposal),
/// a fresh SPI and nonce each, as hex lines.
fn sa_init_requests(n: usize) -> String {
    let o = TunnelOptions {
        pre_shared_key: Some(PreSharedKey::new(PSK).expect("psk")),
        ..TunnelOptions::default()
    };
    let (cgw, us): (IpAddr, IpAddr) = (CGW.parse().expect("ip"), US0.parse().expect("ip"));
    let any = vec!["0.0.0.0/0".parse().expect("net")];
    let mut cfg = IkeConfig::from_tunnel(&o, cgw, us, any.clone(), any);
    // Group 19 first: what vpnd and the gateway agree on.
    cfg.phase1.dh.retain(|g| *g == 19);
    let mut rng = SystemRng;
    let mut e = Endpoint::new(&mut rng, usize::MAX);
    e.add_tunnel(cfg);
    let mut out = String::new();
    for _ in 0..n {
        assert!(e.initiate(Instant::now(), &mut rng, us));
    }
    while let Some(t) = e.poll_transmit() {
        for b in &t.payload {
            out.push_str(&format!("{b:02x}"));
        }
        out.push('\n');
    }
    out
}

/// A flood of IKE_SA_INIT from many source addresses while the tunnel
/// forwards pings: half of the requests spoof the gateway's address (each
/// would cost vpnd a DH and a half-open SA), half come from 200 addresses
/// that are no configured peer. vpnd switches to cookies once 32 SAs are
/// half-open (the counters and the tunnel's activity log say so), drops
/// the unknown sources unanswered, and the tunnel loses no ping.
#[test]
fn ike_sa_init_flood_gets_cookies_and_the_tunnel_keeps_forwarding() {
    let lab = Lab::new(&Setup::default());
    lab.tunnel_up(&[]);

    let dir = lab.dir.path();
    std::fs::write(dir.join("inits.hex"), sa_init_requests(400)).expect("inits");
    let t = &lab.t;
    let mac = String::from_utf8_lossy(
        &lab.dp
            .sh(&format!("cat /sys/class/net/ko{t}/address"))
            .stdout,
    )
    .trim()
    .to_owned();
    std::fs::write(
        dir.join("flood.py"),
        format!(
            r#"
import random, sys
from scapy.all import Ether, IP, UDP, Raw, sendp, conf
conf.verb = 0
reqs = [bytes.fromhex(l) for l in open("{d}/inits.hex").read().split()]
pkts = []
for i, r in enumerate(reqs):
    if i % 2 == 0:
        src, sport = "{CGW}", 10000 + i          # spoofs the configured gateway
    else:
        src, sport = "192.0.2.%d" % (10 + i % 200), 500   # no configured peer
    pkts.append(Ether(dst="{mac}")/IP(src=src, dst="{US0}")/UDP(sport=sport, dport=500)/Raw(r))
sendp(pkts, iface="kc{t}", inter=0.002)
print("sent", len(pkts))
"#,
            d = dir.display()
        ),
    )
    .expect("flood.py");

    // The flood's unknown sources are in 192.0.2.0/24: a route back via
    // the tap, or the kernel's strict reverse-path filter would drop them
    // before vpnd sees them (on a concentrator the default route does).
    lab.dp
        .sh(&format!("ip route replace 192.0.2.0/24 dev kk{t}"));
    let ping = lab.ping(300, "0.05");
    std::thread::sleep(Duration::from_secs(2));
    let mut c = Command::new("ip");
    c.args(["netns", "exec", lab.cgw.name(), "python3"])
        .arg(dir.join("flood.py"));
    let out = bounded(c, Duration::from_secs(60));
    assert!(
        out.status.success() && text(&out).contains("sent 400"),
        "flood: {}",
        text(&out)
    );
    let (sent, received, summary) = lab.ping_result(ping, Duration::from_secs(90));

    let log = lab.vpnd.output();
    assert!(
        log.contains("IKE_SA_INIT must carry a COOKIE"),
        "vpnd never required cookies\n{}",
        lab.diagnostics()
    );
    // The counters line: cookies sent and unknown sources dropped.
    let counters = wait_until(Duration::from_secs(10), || {
        let log = lab.vpnd.output();
        log.lines()
            .filter(|l| l.contains("counters IkeCounters"))
            .any(|l| {
                let get = |k: &str| {
                    l.split(&format!("{k}: "))
                        .nth(1)
                        .and_then(|r| r.split([',', ' ']).next())
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                get("cookies_sent") > 0 && get("init_unknown_peer") >= 150
            })
    });
    assert!(
        counters,
        "no counters line with cookies and unknown sources\n{}",
        lab.vpnd.output()
    );
    // For the record (visible with --nocapture).
    for l in lab
        .vpnd
        .output()
        .lines()
        .filter(|l| l.contains("counters IkeCounters") || l.contains("half-open IKE_SAs"))
    {
        eprintln!("{l}");
    }
    eprintln!(
        "ping during the flood: {}",
        summary
            .lines()
            .rev()
            .take(2)
            .collect::<Vec<_>>()
            .join(" / ")
    );
    let logs = lab.logs();
    assert!(
        logs.contains("IKE_SA_INIT under load: COOKIE sent"),
        "{logs}"
    );
    assert_eq!(lab.tunnel(0)["status"], "UP", "{}", lab.diagnostics());
    assert!(
        sent == 300 && received == sent,
        "pings lost during the flood: {summary}\n{}",
        lab.diagnostics()
    );
}

/// Runs a fast ping (100 per second) long enough for several rekeys of
/// the kind `what`, and checks that strongSwan saw them and no ping was
/// lost.
fn rekeys_lose_nothing(
    lab: &Lab,
    setup: &Setup,
    what: &str,
    seconds: u32,
    rekeys_seen: impl Fn(&Lab) -> bool,
) {
    lab.tunnel_up(setup.options);
    let pings = seconds * 100;
    let ping = lab.ping(pings, "0.01");
    let (sent, received, summary) =
        lab.ping_result(ping, Duration::from_secs(u64::from(seconds) * 3 + 60));
    assert!(
        rekeys_seen(lab),
        "{what}: no rekey during the ping\n{}",
        lab.diagnostics()
    );
    assert_eq!(lab.tunnel(0)["status"], "UP", "{}", lab.diagnostics());
    let v = lab.vpnd.output();
    eprintln!(
        "{what}: {} Child SAs installed, {} IKE SA rekeys; ping: {}",
        count(&v, "CHILD_SA established and installed"),
        count(&v, "IKE_SA rekeyed: new SPIs"),
        summary
            .lines()
            .rev()
            .take(2)
            .collect::<Vec<_>>()
            .join(" / ")
    );
    assert!(
        sent == u64::from(pings) && received == sent,
        "{what}: pings lost across rekeys: {summary}\n{}",
        lab.diagnostics()
    );
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// strongSwan rekeys the Child SA every 8 s and the IKE SA every 20 s
/// (vpnd keeps its long defaults: every rekey is strongSwan's). vpnd, the
/// answering side, adds each new inbound SA at once and sends with the new
/// outbound SA only after strongSwan's DELETE of the old one (RFC 7296
/// § 2.8): sent earlier, a reply could reach kernel-libipsec before charon
/// installed its inbound SA (1 ping in 4500 was lost so).
#[test]
fn rekeys_initiated_by_strongswan_lose_no_ping() {
    let setup = Setup {
        ike_extra: "  rekey_time = 20s\n  over_time = 60s\n  rand_time = 0s\n",
        child_extra: "   rekey_time = 8s\n   life_time = 60s\n   rand_time = 0s\n",
        ..Setup::default()
    };
    let lab = Lab::new(&setup);
    rekeys_lose_nothing(&lab, &setup, "strongSwan rekeys", 45, |lab| {
        let v = lab.vpnd.output();
        count(&v, "used once the peer deletes the rekeyed SA") >= 4
            && count(&v, "IKE_SA rekeyed") >= 1
    });
}

/// vpnd's lifetimes divided by 30 (test mode): Child SA 900 s → 30 s
/// (rekey after 12–21 s), IKE SA 1800 s → 60 s (rekey after 42–51 s);
/// strongSwan keeps its long defaults, so every rekey is vpnd's.
#[test]
fn rekeys_initiated_by_vpnd_lose_no_ping() {
    let setup = Setup {
        lifetime_divisor: Some(30),
        options: &["phase2_lifetime_secs=900", "phase1_lifetime_secs=1800"],
        ..Setup::default()
    };
    let lab = Lab::new(&setup);
    rekeys_lose_nothing(&lab, &setup, "vpnd rekeys", 70, |lab| {
        let v = lab.vpnd.output();
        count(&v, "CHILD_SA established and installed") >= 4 && count(&v, "IKE_SA rekeyed") >= 1
    });
}

/// SIGTERM: vpnd closes its tunnels first, so strongSwan receives a
/// DELETE for the IKE SA (and does not wait for DPD), then vpnd exits 0.
#[test]
fn sigterm_sends_delete_to_the_peer_before_exit() {
    let mut lab = Lab::new(&Setup::default());
    lab.tunnel_up(&[]);
    assert!(
        lab.vpnd.terminate(Duration::from_secs(15)),
        "vpnd did not exit after SIGTERM\n{}",
        lab.vpnd.output()
    );
    let status = lab.vpnd.exit_status();
    assert!(
        status.is_some_and(|s| s.success()),
        "vpnd exit {status:?}\n{}",
        lab.vpnd.output()
    );
    let v = lab.vpnd.output();
    assert!(
        v.contains("shutting down: 2 tunnel(s) closed, 1 DELETE(s) sent"),
        "{v}"
    );
    let deleted = wait_until(Duration::from_secs(10), || {
        lab.charon
            .output()
            .contains("received DELETE for IKE_SA vpn[")
    });
    assert!(
        deleted,
        "strongSwan got no DELETE:\n{}\n--- vpnd:\n{v}",
        lab.charon.output()
    );
    let (_, sas) = lab.swanctl("--list-sas");
    assert!(!sas.contains("ESTABLISHED"), "{sas}");
}

/// Byte/packet lifetimes: installed Child SAs get a soft limit of 1500
/// packets (test mode; in production the 32-bit sequence number's limit
/// for SAs without ESN). The dataplane reports it and vpnd rekeys the
/// Child SA then, long before its 3600 s timer, losing no ping.
#[test]
fn dataplane_packet_lifetime_triggers_child_rekeys_with_no_lost_ping() {
    let setup = Setup {
        rekey_packets: Some(1500),
        ..Setup::default()
    };
    let lab = Lab::new(&setup);
    rekeys_lose_nothing(&lab, &setup, "packet lifetime rekeys", 40, |lab| {
        let v = lab.vpnd.output();
        count(&v, "byte/packet lifetime in the dataplane: rekeying it now") >= 2
            && count(&v, "CHILD_SA established and installed") >= 3
    });
}

/// `vpnctl config download --device strongswan` produces a swanctl.conf
/// that strongSwan loads unchanged and that brings both tunnels of the
/// connection up (the customer gateway initiates both: start_action =
/// start for our startup action `add`); pings pass. The connection's
/// networks are set (customer 10.1.0.0/16, VPC 198.51.100.0/24) so the
/// selectors do not capture the gateway's own IKE traffic.
#[test]
fn downloaded_strongswan_config_brings_both_tunnels_up() {
    let lab = Lab::new(&Setup::default());
    lab.ctl_ok(&["cgw", "create", "cgw-ops", "--ip-address", CGW]);
    lab.ctl_ok(&[
        "connection",
        "create",
        CONN,
        "--customer-gateway",
        "cgw-ops",
        "--routing",
        "static",
        "--static-route",
        "10.1.0.0/16",
        "--tunnel0-outside-ip",
        US0,
        "--tunnel1-outside-ip",
        US1,
    ]);
    lab.ctl_ok(&[
        "connection",
        "modify",
        CONN,
        "--set",
        "local_ipv4_network_cidr=10.1.0.0/16",
        "--set",
        "remote_ipv4_network_cidr=198.51.100.0/24",
    ]);
    let conf = lab.ctl_ok(&["config", "download", CONN, "--device", "strongswan"]);
    assert!(
        conf.contains("vpn-ops-tunnel1") && conf.contains("vpn-ops-tunnel2"),
        "{conf}"
    );
    let file = lab.dir.path().join("downloaded.conf");
    std::fs::write(&file, &conf).expect("downloaded.conf");
    let (ok, out) = lab.swanctl(&format!("--load-all --file {}", file.display()));
    assert!(ok, "strongSwan refused the downloaded file: {out}\n{conf}");
    for i in 0..2 {
        let up = wait_until(Duration::from_secs(60), || lab.tunnel(i)["status"] == "UP");
        assert!(
            up,
            "tunnel {i} not UP with the downloaded configuration\n{conf}\n{}",
            lab.diagnostics()
        );
    }
    let (_, sas) = lab.swanctl("--list-sas");
    assert_eq!(count(&sas, "INSTALLED"), 2, "{sas}");
    assert!(
        wait_until(Duration::from_secs(30), || lab
            .vpc
            .sh_ok(&format!("ping -c 1 -W 2 {CGW_LAN} >/dev/null"))),
        "no ping through the downloaded tunnels\n{}",
        lab.diagnostics()
    );
}
