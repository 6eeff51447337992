//! `vpnd` end to end against a real strongSwan 5.9.8 customer gateway
//! with certificate authentication: the customer gateway names a private
//! certificate (`vpnctl cgw create --certificate`), vpnd's `[certificates]`
//! section gives our endpoint certificate and the CA chain that name
//! stands for, both PKIs are made by strongSwan's `pki` in the test (the
//! gateway's certificate with the spec's SKI / basicConstraints through
//! `openssl x509 -req`, see `ike_strongswan_cert.rs`). IKE runs in vpnd's
//! IKE thread, the Child SA goes into the DPDK dataplane, and a VPC host
//! pings the gateway's LAN through the tunnel, with strongSwan initiating
//! and then vpnd initiating. Same topology as `vpnd_strongswan.rs`:
//!
//! ```text
//!  [vt-ikc-c cgw: charon 192.0.2.2, LAN 10.1.0.1/16 on lo]
//!        │ veth kc ⇄ ko (af_packet, outside)
//!  [vt-ikc-d dp: vpnd outside 192.0.2.1 / 192.0.2.3, kernel port kk (tap)]
//!        │ veth ki ⇄ kv (af_packet, inside)
//!  [vt-ikc-v vpc: 198.51.100.2, 10.1.0.0/16 via 198.51.100.1]
//! ```
//!
//! Needs the workspace binaries (`cargo build --workspace --bins`),
//! strongSwan and its `pki` tool, and openssl.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use e2e::{Netns, Proc, bin, bounded, require_root, sh, tag, text, veth, wait_until};
use serde_json::Value;

const CGW: &str = "192.0.2.2";
const US0: &str = "192.0.2.1";
const US1: &str = "192.0.2.3";
const CGW_LAN: &str = "10.1.0.1";
const VPC: &str = "198.51.100.2";
/// The private certificate name the customer gateway is created with.
const CERT_NAME: &str = "arn:aws:acm:eu-west-1:111122223333:certificate/vt-ikc";
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
        let cgw = Netns::new(&format!("vt-ikc-c-{t}"));
        let dp = Netns::new(&format!("vt-ikc-d-{t}"));
        let vpc = Netns::new(&format!("vt-ikc-v-{t}"));
        veth(&cgw, &format!("kc{t}"), &dp, &format!("ko{t}"));
        veth(&vpc, &format!("kv{t}"), &dp, &format!("ki{t}"));
        cgw.sh(&format!("ip addr add {CGW}/24 dev kc{t}"));
        cgw.sh(&format!("ip addr add {CGW_LAN}/16 dev lo"));
        vpc.sh(&format!("ip addr add {VPC}/24 dev kv{t}"));
        vpc.sh("ip route add 10.1.0.0/16 via 198.51.100.1");
        // The af_packet ports' veths stay kernel interfaces too: without
        // strict reverse-path filtering the kernel would take the frames
        // the worker also punts (192.0.2.1 is local on the tap), and IKE
        // would see every datagram twice. (On a NIC bound to DPDK the
        // kernel never sees them.)
        dp.sh(&format!(
            "sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.ko{t}.rp_filter=1 net.ipv4.conf.ki{t}.rp_filter=1"
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = format!("vt-ikc-dp-{t}");
        let mac = |ns: &Netns, dev: &str| {
            String::from_utf8_lossy(&ns.sh(&format!("cat /sys/class/net/{dev}/address")).stdout)
                .trim()
                .to_owned()
        };
        let socket = dir.path().join("control.sock");
        let pki_dir = dir.path().join("pki");
        std::fs::create_dir_all(&pki_dir).expect("pki dir");
        make_pki(&pki_dir);
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

[certificates]
endpoint_certificate_file = "{pki}/us-chain.pem"
endpoint_private_key_file = "{pki}/us.key"

[[certificates.authorities]]
certificate = "{CERT_NAME}"
ca_chain_file = "{pki}/root.pem"
"#,
                pki = pki_dir.display(),
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
        let vpnd = Proc::spawn(cmd, &dir.path().join("vpnd.log"));

        // strongSwan, its LAN on lo (recipes § 1), its certificate and key
        // (swanctl reads keys from `private/` beside its file), our root.
        let d = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("strongswan.conf"),
            format!(
                "charon {{\n  load = random nonce openssl aes sha1 sha2 hmac gcm pem pkcs1 x509 pubkey kdf curve25519 kernel-libipsec kernel-netlink socket-default vici updown\n  plugins {{ vici {{ socket = unix://{d}/charon.vici }} }}\n  filelog {{ stderr {{ default = 1 }} }}\n}}\ncharon-systemd {{ journal {{ default = -1 }} }}\n"
            ),
        )
        .expect("strongswan.conf");
        let sdir = dir.path().join("swanctl");
        std::fs::create_dir_all(sdir.join("private")).expect("swanctl dir");
        std::fs::copy(pki_dir.join("sw.key"), sdir.join("private/sw.key")).expect("key");
        let p = pki_dir.display();
        std::fs::write(
            sdir.join("swanctl.conf"),
            format!(
                "connections {{\n vpn {{\n  version = 2\n  local_addrs = {CGW}\n  remote_addrs = {US0}\n  proposals = aes128gcm16-prfsha256-ecp256\n  local {{\n   auth = pubkey\n   certs = {p}/sw.pem\n  }}\n  remote {{\n   auth = pubkey\n   cacerts = {p}/root.pem\n  }}\n  children {{ net {{\n   local_ts = 10.1.0.0/16\n   remote_ts = 198.51.100.0/24\n   esp_proposals = aes128gcm16\n   mode = tunnel\n  }} }}\n }}\n}}\nauthorities {{\n root {{ cacert = {p}/root.pem }}\n sub {{ cacert = {p}/sub.pem }}\n}}\n"
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
        let k = format!("kk{t}");
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
        let dev = self.vpc.name().replace("vt-ikc-v-", "kv");
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

/// Runs `pki` in `dir` (quiet about its optional TPM plugin).
fn pki(dir: &Path, args: &str) {
    sh(&format!("cd {} && pki {args} 2>/dev/null", dir.display()));
}

/// ECDSA P-256 PKI in `dir`: root and subordinate CA, our certificate
/// (`us-chain.pem` with the subordinate, `us.key`), strongSwan's
/// (`sw.pem`, `sw.key`) with AKI, SKI and basicConstraints.
fn make_pki(dir: &Path) {
    let g = "--type ecdsa --size 256";
    pki(dir, &format!("--gen {g} --outform pem > root.key"));
    pki(
        dir,
        "--self --ca --lifetime 3650 --in root.key --type priv --dn \"C=CH, O=vt lab, CN=vt Root CA\" --outform pem > root.pem",
    );
    pki(dir, &format!("--gen {g} --outform pem > sub.key"));
    pki(
        dir,
        "--issue --cacert root.pem --cakey root.key --type priv --in sub.key --ca --lifetime 1825 --dn \"C=CH, O=vt lab, CN=vt Sub CA\" --outform pem > sub.pem",
    );
    pki(dir, &format!("--gen {g} --outform pem > us.key"));
    pki(
        dir,
        "--issue --cacert sub.pem --cakey sub.key --type priv --in us.key --lifetime 365 --dn \"C=CH, O=vt lab, CN=aws.vt.example\" --san aws.vt.example --outform pem > us.pem",
    );
    sh(&format!(
        "cd {} && cat us.pem sub.pem > us-chain.pem",
        dir.display()
    ));
    pki(dir, &format!("--gen {g} --outform pem > sw.key"));
    std::fs::write(
        dir.join("sw.ext"),
        "basicConstraints = critical, CA:FALSE\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\nkeyUsage = digitalSignature\nsubjectAltName = DNS:cgw.vt.example\n",
    )
    .expect("ext file");
    pki(
        dir,
        "--req --in sw.key --type priv --dn \"C=CH, O=vt lab, CN=cgw.vt.example\" --outform pem > sw.csr",
    );
    sh(&format!(
        "cd {} && openssl x509 -req -in sw.csr -CA sub.pem -CAkey sub.key -CAcreateserial -days 365 -sha256 -extfile sw.ext -out sw.pem 2>/dev/null",
        dir.display()
    ));
}

#[test]
fn vpnd_certificate_tunnel_with_strongswan_carries_traffic() {
    let lab = Lab::new();
    // The customer gateway names its private certificate: tunnel 0 uses
    // certificate authentication (its generated PSK is not used).
    lab.ctl_ok(&[
        "cgw",
        "create",
        "cgw-sw",
        "--ip-address",
        CGW,
        "--certificate",
        CERT_NAME,
    ]);
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
    assert_eq!(lab.tunnel(0)["status"], "DOWN");
    let (ok, out) = lab.swanctl(&format!(
        "--load-all --file {}",
        lab.dir.path().join("swanctl/swanctl.conf").display()
    ));
    assert!(ok && out.contains("key from"), "swanctl --load-all: {out}");

    // 1. strongSwan initiates; we respond (startup action add). vpnd's
    // IKE thread takes the new tunnel within 250 ms: retried, bounded.
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
    let logs = lab.ctl_ok(&["logs", "--connection", CONN]);
    assert!(
        logs.contains("authenticated cgw: 192.0.2.2 by certificate")
            && logs.contains("CN=cgw.vt.example"),
        "{logs}"
    );
    assert!(
        lab.charon
            .output()
            .contains("authentication of 'C=CH, O=vt lab, CN=aws.vt.example' with"),
        "{}",
        lab.diagnostics()
    );
    lab.traffic("strongSwan initiated");

    // 2. strongSwan deletes the IKE SA; 3. vpnd initiates (start).
    let (ok, out) = lab.swanctl("--terminate --ike vpn --timeout 10");
    assert!(ok, "{out}");
    lab.wait_status(0, "DOWN", "strongSwan deleted the IKE SA");
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
