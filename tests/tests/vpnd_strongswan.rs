//! `vpnd` end to end against a real strongSwan 5.9.8 customer gateway:
//! IKEv2 negotiated by vpnd's IKE thread over the kernel (tap) port, the
//! Child SA installed into the DPDK dataplane, and traffic from a VPC host
//! through the tunnel to the gateway's LAN and back.
//!
//! ```text
//!  [vt-x-c cgw: charon 192.0.2.2, LAN 10.1.0.1/16 on lo]
//!        │ veth xc ⇄ xo (af_packet, outside)
//!  [vt-x-d dp: vpnd  outside 192.0.2.1 (tunnel 0), 192.0.2.3 (tunnel 1)
//!              kernel port xk (tap) holds the outside addresses: IKE sockets
//!              inside 198.51.100.1]
//!        │ veth xi ⇄ xv (af_packet, inside)
//!  [vt-x-v vpc: 198.51.100.2, 10.1.0.0/16 via 198.51.100.1]
//! ```
//!
//! kernel-libipsec forces NAT-T, so ESP travels in UDP 4500 both ways.
//! First strongSwan initiates (our startup action `add`), then, after
//! strongSwan deletes the IKE SA, our tunnel is switched to startup action
//! `start` through vpnctl and vpnd initiates.
//!
//! Needs the workspace binaries (`cargo build --workspace --bins`) and
//! strongSwan (`../shared/lab/recipes.md` § 0).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use e2e::{Netns, Proc, bin, bounded, require_root, tag, text, veth, wait_until};
use serde_json::Value;

const CGW: &str = "192.0.2.2";
const US0: &str = "192.0.2.1";
const US1: &str = "192.0.2.3";
const CGW_LAN: &str = "10.1.0.1";
const VPC: &str = "198.51.100.2";
const PSK: &str = "vtx.PSK_0123456789abc";
const CONN: &str = "vpn-sw";

struct Lab {
    // Drop order: processes, then the directory, then the namespaces.
    charon: Proc,
    vpnd: Proc,
    dir: tempfile::TempDir,
    cgw: Netns,
    dp: Netns,
    vpc: Netns,
    prefix: String,
}

impl Lab {
    fn new() -> Self {
        Self::with_gateway_kind("transit-gateway")
    }

    /// The lab with vpnd's gateway of `kind` (spec § 1.3 rule sets).
    fn with_gateway_kind(kind: &str) -> Self {
        require_root();
        let t = tag();
        let cgw = Netns::new(&format!("vt-x-c-{t}"));
        let dp = Netns::new(&format!("vt-x-d-{t}"));
        let vpc = Netns::new(&format!("vt-x-v-{t}"));
        veth(&cgw, &format!("xc{t}"), &dp, &format!("xo{t}"));
        veth(&vpc, &format!("xv{t}"), &dp, &format!("xi{t}"));
        cgw.sh(&format!("ip addr add {CGW}/24 dev xc{t}"));
        cgw.sh(&format!("ip addr add {CGW_LAN}/16 dev lo"));
        vpc.sh(&format!("ip addr add {VPC}/24 dev xv{t}"));
        vpc.sh("ip route add 10.1.0.0/16 via 198.51.100.1");
        // The af_packet ports' veths stay kernel interfaces too: without
        // strict reverse-path filtering the kernel would take the frames
        // the worker also punts (192.0.2.1 is local on the tap), and IKE
        // would see every datagram twice. (On a NIC bound to DPDK the
        // kernel never sees them.)
        dp.sh(&format!(
            "sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.xo{t}.rp_filter=1 net.ipv4.conf.xi{t}.rp_filter=1"
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = format!("vt-x-dp-{t}");
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
id = "tgw-sw"
kind = "{kind}"
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
device = "net_af_packet0,iface=xo{t}"
role = "outside"

[[dataplane.ports]]
name = "lan"
device = "net_af_packet1,iface=xi{t}"
role = "inside"

[[dataplane.ports]]
name = "kernel"
device = "net_tap0,iface=xk{t}"
role = "kernel"

[management]
socket_path = "{socket}"

[metrics]
enabled = false
"#,
                cgw_mac = mac(&cgw, &format!("xc{t}")),
                vpc_mac = mac(&vpc, &format!("xv{t}")),
                socket = socket.display(),
            ),
        )
        .expect("vpnd.toml");
        let mut cmd = dp.command(&bin("vpnd"));
        cmd.arg("--config")
            .arg(dir.path().join("vpnd.toml"))
            .arg("--no-huge");
        let vpnd = Proc::spawn(cmd, &dir.path().join("vpnd.log"));

        // strongSwan, its LAN on lo (recipes § 1), our PSK and proposals.
        let d = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("strongswan.conf"),
            format!(
                "charon {{\n  load = random nonce openssl aes sha1 sha2 hmac gcm pem pkcs1 x509 pubkey kdf curve25519 kernel-libipsec kernel-netlink socket-default vici updown\n  plugins {{ vici {{ socket = unix://{d}/charon.vici }} }}\n  filelog {{ stderr {{ default = 1 }} }}\n}}\ncharon-systemd {{ journal {{ default = -1 }} }}\n"
            ),
        )
        .expect("strongswan.conf");
        std::fs::write(
            dir.path().join("swanctl.conf"),
            format!(
                "connections {{\n vpn {{\n  version = 2\n  local_addrs = {CGW}\n  remote_addrs = {US0}\n  proposals = aes128gcm16-prfsha256-ecp256\n  local {{ auth = psk }}\n  remote {{ auth = psk }}\n  children {{ net {{\n   local_ts = 10.1.0.0/16\n   remote_ts = 198.51.100.0/24\n   esp_proposals = aes128gcm16\n   mode = tunnel\n  }} }}\n }}\n}}\nsecrets {{ ike-1 {{ secret = \"{PSK}\" }} }}\n"
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
        // The exception path: the tap (kernel port) holds the outside
        // addresses, where vpnd's IKE sockets are; the kernel cannot ARP
        // through the worker, so its neighbour is static (the worker
        // rewrites the MACs).
        let k = format!("xk{t}");
        assert!(
            wait_until(Duration::from_secs(10), || lab
                .dp
                .sh_ok(&format!("ip link show {k}"))),
            "no kernel port {k}"
        );
        let _ = lab
            .dp
            .sh_ok(&format!("sysctl -qw net.ipv6.conf.{k}.disable_ipv6=1"));
        lab.dp.sh(&format!(
            "ip addr add {US0}/24 dev {k} && ip addr add {US1}/24 dev {k} && ip link set {k} up && ip neigh replace {CGW} lladdr 02:00:00:00:00:02 dev {k} nud permanent"
        ));
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

    /// Tunnel 0's counters: (packets in, packets out, bytes in, bytes out).
    fn counters(&self) -> (u64, u64, u64, u64) {
        let v = self.json(&["show", "stats"]);
        let t = &v["response"]["stats"]["tunnels"][format!("{CONN}/0")];
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        (
            n("packets_in"),
            n("packets_out"),
            n("data_in_bytes"),
            n("data_out_bytes"),
        )
    }

    /// Pings both ways through the tunnel; the tunnel's counters grow.
    fn traffic(&self, what: &str) {
        // The VPC host resolves vpnd's inside address first (the worker
        // answers ARP), so the pings below do not wait on ARP retries.
        let dev = self.vpc.name().replace("vt-x-v-", "xv");
        assert!(
            wait_until(Duration::from_secs(20), || {
                self.vpc.sh_ok(&format!(
                "ping -c 1 -W 1 198.51.100.1 >/dev/null 2>&1; ip neigh show 198.51.100.1 dev {dev} | grep -q lladdr"
            ))
            }),
            "{what}: the VPC host cannot resolve 198.51.100.1\n{}",
            self.diagnostics()
        );
        let before = self.counters();
        // On a loaded 2-core machine the busy-polling worker can be
        // descheduled for seconds: a ping run that gets no reply is
        // retried, within a bound.
        assert!(
            wait_until(Duration::from_secs(30), || self
                .vpc
                .sh_ok(&format!("ping -c 3 -i 0.2 -W 5 {CGW_LAN} >/dev/null"))),
            "{what}: VPC host -> {CGW_LAN} through the tunnel failed\n{}",
            self.diagnostics()
        );
        assert!(
            wait_until(Duration::from_secs(30), || self.cgw.sh_ok(&format!(
                "ping -c 3 -i 0.2 -W 5 -I {CGW_LAN} {VPC} >/dev/null"
            ))),
            "{what}: {CGW_LAN} -> VPC host through the tunnel failed\n{}",
            self.diagnostics()
        );
        // Counters are published by the worker every 100 ms.
        let mut after = before;
        let grew = wait_until(Duration::from_secs(5), || {
            after = self.counters();
            after.0 >= before.0 + 6 && after.1 >= before.1 + 6
        });
        assert!(
            grew && after.2 > before.2 && after.3 > before.3,
            "{what}: tunnel counters {before:?} -> {after:?}\n{}",
            self.diagnostics()
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // vpnd removes it on SIGTERM; after a crash it would stay.
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
    }
}

#[test]
fn ike_with_strongswan_installs_child_sas_and_traffic_flows_both_ways() {
    let lab = Lab::new();

    // The connection, through vpnctl: static routing to the gateway's LAN,
    // our PSK on tunnel 0 (tunnel 1 keeps its generated one and stays DOWN:
    // strongSwan has no connection to 192.0.2.3).
    lab.ctl_ok(&["cgw", "create", "cgw-sw", "--ip-address", CGW]);
    lab.ctl_ok(&[
        "connection",
        "create",
        CONN,
        "--customer-gateway",
        "cgw-sw",
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
        "modify-tunnel-options",
        CONN,
        "0",
        "--set",
        &format!("pre_shared_key={PSK}"),
    ]);
    assert_eq!(lab.tunnel(0)["status"], "DOWN");
    let (ok, out) = lab.swanctl(&format!(
        "--load-all --file {}",
        lab.dir.path().join("swanctl.conf").display()
    ));
    assert!(ok, "swanctl --load-all: {out}");

    // 1. strongSwan initiates; we respond (startup action add).
    // vpnd's IKE thread takes configuration changes within 250 ms: an
    // attempt that still met the generated PSK is repeated.
    let mut out = String::new();
    let ok = wait_until(Duration::from_secs(40), || {
        let (ok, o) = lab.swanctl("--initiate --child net --timeout 15");
        out = o;
        ok
    });
    assert!(
        ok,
        "strongSwan could not bring the tunnel up: {out}\n{}",
        lab.diagnostics()
    );
    lab.wait_status(0, "UP", "strongSwan initiates");
    let t0 = lab.tunnel(0);
    assert_eq!(t0["ike_phase1_state"], "Established", "{t0}");
    assert_eq!(t0["ike_phase2_state"], "Established", "{t0}");
    assert_eq!(t0["nat_t_detected"], true, "{t0}");
    assert_eq!(lab.tunnel(1)["status"], "DOWN");
    let sas = lab.json(&["show", "sas", CONN]);
    let sas = sas["response"]["sas"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(sas.len(), 2, "one inbound and one outbound SA: {sas:?}");
    // strongSwan's inbound SPI is our outbound one.
    let (_, list) = lab.swanctl("--list-sas");
    for s in &sas {
        let spi = format!("{:08x}", s["spi"].as_u64().unwrap_or(0));
        assert!(
            list.contains(&spi),
            "SPI {spi} not in strongSwan's SAs:\n{list}"
        );
    }
    lab.traffic("strongSwan initiated");
    let logs = lab.ctl_ok(&["logs", "--connection", CONN]);
    assert!(logs.contains("tunnel status changed to UP"), "{logs}");

    // 2. strongSwan deletes the IKE SA: DOWN (our startup action is add).
    let (ok, out) = lab.swanctl("--terminate --ike vpn --timeout 10");
    assert!(ok, "{out}");
    lab.wait_status(0, "DOWN", "strongSwan deleted the IKE SA");
    let logs = lab.ctl_ok(&["logs", "--connection", CONN]);
    assert!(
        logs.contains("AWS tunnel received DELETE for IKE_SA from CGW"),
        "{logs}"
    );

    // 3. Startup action start: vpnd initiates.
    lab.ctl_ok(&[
        "modify-tunnel-options",
        CONN,
        "0",
        "--set",
        "startup_action=start",
    ]);
    lab.wait_status(0, "UP", "vpnd initiates");
    assert!(
        wait_until(Duration::from_secs(10), || lab
            .swanctl("--list-sas")
            .1
            .contains("INSTALLED")),
        "strongSwan has no Child SA after we initiated\n{}",
        lab.diagnostics()
    );
    lab.traffic("vpnd initiated");
}

/// The per-tunnel policer driven by the configuration: a concentrator's
/// tunnels are capped at 100 Mbps / 10,000 packets/s each way (spec
/// § 11.2, § 21.3). With the Child SA installed by IKE, the VPC host
/// sends 3,000 UDP datagrams to the customer gateway's inside address
/// (routed into tunnel 0 by its inside /30) as fast as the kernel
/// goes: the 10 ms burst (100 packets) and the rate are exceeded, the
/// excess is dropped as `policed`, and `vpnctl show stats` counts it
/// both for the appliance and in the tunnel's drops.
#[test]
fn policer_at_the_concentrator_cap_counts_policed_drops_in_show_stats() {
    let lab = Lab::with_gateway_kind("concentrator");
    lab.ctl_ok(&[
        "cgw",
        "create",
        "cgw-sw",
        "--ip-address",
        CGW,
        "--bgp-asn",
        "65010",
    ]);
    lab.ctl_ok(&[
        "connection",
        "create",
        CONN,
        "--customer-gateway",
        "cgw-sw",
        "--routing",
        "dynamic",
        "--tunnel0-outside-ip",
        US0,
        "--tunnel1-outside-ip",
        US1,
    ]);
    lab.ctl_ok(&[
        "modify-tunnel-options",
        CONN,
        "0",
        "--set",
        &format!("pre_shared_key={PSK}"),
        "--set",
        "inside_ipv4_cidr=169.254.50.0/30",
    ]);
    let (ok, out) = lab.swanctl(&format!(
        "--load-all --file {}",
        lab.dir.path().join("swanctl.conf").display()
    ));
    assert!(ok, "swanctl --load-all: {out}");
    let mut out = String::new();
    let ok = wait_until(Duration::from_secs(40), || {
        let (ok, o) = lab.swanctl("--initiate --child net --timeout 15");
        out = o;
        ok
    });
    assert!(
        ok,
        "strongSwan could not bring the tunnel up: {out}\n{}",
        lab.diagnostics()
    );
    // Both SAs in the dataplane (IKE reports phase 2 once installed).
    assert!(
        wait_until(
            Duration::from_secs(20),
            || lab.tunnel(0)["ike_phase2_state"] == "Established"
        ),
        "no Child SA\n{}",
        lab.diagnostics()
    );
    let (net, cgw_inside) = ("169.254.50.0/30", "169.254.50.2");
    let dev = lab.vpc.name().replace("vt-x-v-", "xv");
    assert!(
        wait_until(Duration::from_secs(20), || {
            lab.vpc.sh_ok(&format!(
                "ping -c 1 -W 1 198.51.100.1 >/dev/null 2>&1; ip neigh show 198.51.100.1 dev {dev} | grep -q lladdr"
            ))
        }),
        "the VPC host cannot resolve 198.51.100.1\n{}",
        lab.diagnostics()
    );
    lab.vpc
        .sh(&format!("ip route replace {net} via 198.51.100.1"));
    let policed = |v: &Value| {
        v["response"]["stats"]["drops"]["policed"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = lab.json(&["show", "stats"]);
    assert_eq!(policed(&before), 0, "{before}");
    // 3,000 datagrams, bounded: one python loop, no pacing.
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for i in range(3000): s.sendto(b'x' * 64, ('{cgw_inside}', 9))"
    );
    let sent = bounded(
        {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", lab.vpc.name(), "python3", "-c", &script]);
            c
        },
        Duration::from_secs(60),
    );
    assert!(
        sent.status.success(),
        "the UDP sender failed: {}",
        text(&sent)
    );
    // Counters are published every 100 ms.
    let mut after = before;
    let seen = wait_until(Duration::from_secs(10), || {
        after = lab.json(&["show", "stats"]);
        policed(&after) > 0
    });
    assert!(seen, "nothing policed: {after}\n{}", lab.diagnostics());
    let t = &after["response"]["stats"]["tunnels"][format!("{CONN}/0")];
    let out = t["packets_out"].as_u64().unwrap_or(0);
    let drops = t["drops"].as_u64().unwrap_or(0);
    assert!(
        drops >= policed(&after),
        "tunnel drops {drops} < policed: {after}"
    );
    // What passed is bounded by the cap: 3,000 sent, at least the excess
    // over burst + rate dropped, and nothing lost between the two counts.
    assert!(out < 3000 && out + policed(&after) <= 3000 + 10, "{after}");
    eprintln!(
        "policer: sent 3000, encapsulated {out}, policed {}",
        policed(&after)
    );
}
