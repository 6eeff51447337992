//! `vpnd` against a real strongSwan 5.9.8 customer gateway
//! (kernel-libipsec), in three namespaces the lab makes and removes:
//!
//! ```text
//!  [vt-{ns}-c-{t} cgw: charon at the gateway addresses (192.0.2.2),
//!                      LAN 10.1.0.1/16 on lo]
//!        │ veth {d}c ⇄ {d}o (af_packet, outside)
//!  [vt-{ns}-d-{t} dp: vpnd, outside addresses 192.0.2.1, 192.0.2.3, …
//!                     kernel port {d}k (tap): IKE (and BGP) sockets
//!                     inside 198.51.100.1]
//!        │ veth {d}i ⇄ {d}v (af_packet, inside)
//!  [vt-{ns}-v-{t} vpc: 198.51.100.2, 10.1.0.0/16 via 198.51.100.1]
//! ```
//!
//! `{ns}` and the interface letter `{d}` are the test's ([`Options`]),
//! `{t}` is the process's [`tag`]. vpnd runs with `--no-huge` and the
//! DPDK prefix `vt-{ns}-dp-{t}`; charon's configuration is
//! [`Options::charon`] and [`Options::swanctl_conf`] (loaded by the test,
//! [`SwanLab::load_swanctl`]). The helpers drive vpnd through `vpnctl`
//! and strongSwan through `swanctl`, and a failed wait prints both sides'
//! state ([`SwanLab::diagnostics`]).
//!
//! Needs the workspace binaries (`cargo build --workspace --bins`) and
//! strongSwan (`../shared/lab/recipes.md` § 0).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::charon::{Charon, CharonConf};
use crate::{Netns, Proc, bin, bounded, require_root, tag, text, veth, wait_until};

/// The customer gateway's (first) outside address.
pub const CGW: &str = "192.0.2.2";
/// Our outside address of tunnel 0.
pub const US0: &str = "192.0.2.1";
/// Our outside address of tunnel 1.
pub const US1: &str = "192.0.2.3";
/// The customer gateway's LAN address (on its loopback, in 10.1.0.0/16).
pub const CGW_LAN: &str = "10.1.0.1";

/// The VPC side: our local network, our inside address, the VPC host.
#[derive(Debug, Clone, Copy)]
pub struct Vpc {
    /// Our local network (`local_networks`).
    pub net: &'static str,
    /// vpnd's inside address, the VPC host's gateway.
    pub gw: &'static str,
    /// The VPC host.
    pub host: &'static str,
}

/// The default VPC side: 198.51.100.0/24.
pub const VPC: Vpc = Vpc {
    net: "198.51.100.0/24",
    gw: "198.51.100.1",
    host: "198.51.100.2",
};

/// What a test chooses about its lab.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    /// Namespace tag: namespaces `vt-{ns}-{c,d,v}-{tag}`.
    pub ns: &'a str,
    /// Interface letter: veths `{dev}c{tag}` ⇄ `{dev}o{tag}` and
    /// `{dev}v{tag}` ⇄ `{dev}i{tag}`, kernel port `{dev}k{tag}`.
    pub dev: &'a str,
    /// vpnd.toml's `[gateway]` lines before `outside_addresses` (`id`,
    /// `kind`, `asn`).
    pub gateway: &'a str,
    /// The customer gateway's outside addresses (the first is its
    /// neighbour on the kernel port with [`Self::kernel_port_addresses`]).
    pub cgws: &'a [&'a str],
    /// Our outside addresses.
    pub outside: &'a [&'a str],
    /// The VPC side.
    pub vpc: Vpc,
    /// More of vpnd.toml, after `[metrics]`.
    pub vpnd_toml: &'a str,
    /// Environment variables for vpnd (its test modes).
    pub vpnd_env: &'a [(&'a str, String)],
    /// charon's `strongswan.conf`.
    pub charon: CharonConf<'a>,
    /// strongSwan's `swanctl.conf` (see [`vpn_conf`]), written to
    /// [`SwanLab::swanctl_conf`].
    pub swanctl_conf: &'a str,
    /// The connection [`SwanLab::create_connection`] creates and
    /// [`SwanLab::tunnel`], [`SwanLab::counters`] and [`SwanLab::traffic`]
    /// look at.
    pub conn: &'a str,
    /// The lab puts our outside addresses on the kernel port, and a
    /// permanent neighbour for the gateway, once vpnd made it (otherwise
    /// vpnd does it for the tunnels it has).
    pub kernel_port_addresses: bool,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            ns: "sw",
            dev: "s",
            gateway: "id = \"tgw-sw\"",
            cgws: &[CGW],
            outside: &[US0, US1],
            vpc: VPC,
            vpnd_toml: "",
            vpnd_env: &[],
            charon: CharonConf::default(),
            swanctl_conf: "",
            conn: "vpn-sw",
            kernel_port_addresses: false,
        }
    }
}

/// How strongSwan authenticates in [`vpn_conf`].
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// Both sides with this pre-shared key.
    Psk(&'a str),
    /// Both sides with certificates of the PKI [`make_pki`] made in this
    /// directory: strongSwan's `sw.pem` (its key must be in `private/`
    /// beside `swanctl.conf`), ours verified up to `root.pem`.
    ///
    /// [`make_pki`]: crate::charon::make_pki
    Certificates(&'a std::path::Path),
}

/// strongSwan's connection `vpn` from [`CGW`] to [`US0`] (IKE
/// aes128gcm16-prfsha256-ecp256) with the Child SA `net` between the
/// gateway's LAN 10.1.0.0/16 and 198.51.100.0/24, as `swanctl.conf`.
/// `ike_extra` and `child_extra` are more lines for the connection and
/// the Child SA sections.
#[must_use]
pub fn vpn_conf(auth: Auth<'_>, esp_proposals: &str, ike_extra: &str, child_extra: &str) -> String {
    let (local, remote, tail) = match auth {
        Auth::Psk(psk) => (
            "local { auth = psk }".to_owned(),
            "remote { auth = psk }".to_owned(),
            format!("secrets {{ ike-1 {{ secret = \"{psk}\" }} }}\n"),
        ),
        Auth::Certificates(dir) => {
            let p = dir.display();
            (
                format!("local {{\n   auth = pubkey\n   certs = {p}/sw.pem\n  }}"),
                format!("remote {{\n   auth = pubkey\n   cacerts = {p}/root.pem\n  }}"),
                format!(
                    "authorities {{\n root {{ cacert = {p}/root.pem }}\n sub {{ cacert = {p}/sub.pem }}\n}}\n"
                ),
            )
        }
    };
    format!(
        "connections {{\n vpn {{\n  version = 2\n  local_addrs = {CGW}\n  remote_addrs = {US0}\n  proposals = aes128gcm16-prfsha256-ecp256\n{ike_extra}\n  {local}\n  {remote}\n  children {{ net {{\n   local_ts = 10.1.0.0/16\n   remote_ts = 198.51.100.0/24\n   esp_proposals = {esp_proposals}\n   mode = tunnel\n{child_extra}\n  }} }}\n }}\n}}\n{tail}"
    )
}

/// vpnd, strongSwan and the three namespaces; everything is stopped and
/// removed on drop (also the DPDK runtime directory a crashed vpnd would
/// leave).
#[derive(Debug)]
pub struct SwanLab {
    // Drop order: processes, then the directory, then the namespaces.
    /// strongSwan.
    pub charon: Charon,
    /// vpnd.
    pub vpnd: Proc,
    /// vpnd.toml, the control socket, logs, charon's files, the test's.
    pub dir: tempfile::TempDir,
    /// The customer gateway's namespace.
    pub cgw: Netns,
    /// vpnd's namespace.
    pub dp: Netns,
    /// The VPC host's namespace.
    pub vpc: Netns,
    /// The process's tag in names.
    pub t: String,
    dev: String,
    prefix: String,
    conn: String,
    vpc_side: Vpc,
}

impl SwanLab {
    /// Makes the namespaces and veths, starts vpnd and charon, and waits
    /// until both answer (charon's vici socket within 10 s, vpnd's
    /// `vpnctl ping` within 60 s).
    ///
    /// # Panics
    /// When not root or any step fails.
    #[must_use]
    pub fn new(o: &Options<'_>) -> Self {
        require_root();
        let t = tag();
        let (ns, d) = (o.ns, o.dev);
        let cgw = Netns::new(&format!("vt-{ns}-c-{t}"));
        let dp = Netns::new(&format!("vt-{ns}-d-{t}"));
        let vpc = Netns::new(&format!("vt-{ns}-v-{t}"));
        veth(&cgw, &format!("{d}c{t}"), &dp, &format!("{d}o{t}"));
        veth(&vpc, &format!("{d}v{t}"), &dp, &format!("{d}i{t}"));
        for a in o.cgws {
            cgw.sh(&format!("ip addr add {a}/24 dev {d}c{t}"));
        }
        cgw.sh(&format!("ip addr add {CGW_LAN}/16 dev lo"));
        let vpc_len = o.vpc.net.split('/').nth(1).expect("prefix length");
        vpc.sh(&format!("ip addr add {}/{vpc_len} dev {d}v{t}", o.vpc.host));
        vpc.sh(&format!("ip route add 10.1.0.0/16 via {}", o.vpc.gw));
        // The af_packet ports' veths stay kernel interfaces too: without
        // strict reverse-path filtering the kernel would take the frames
        // the worker also punts (our outside addresses are local on the
        // tap), and IKE would see every datagram twice. (On a NIC bound
        // to DPDK the kernel never sees them.)
        dp.sh(&format!(
            "sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.{d}o{t}.rp_filter=1 net.ipv4.conf.{d}i{t}.rp_filter=1"
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = format!("vt-{ns}-dp-{t}");
        let mac = |ns: &Netns, dev: &str| {
            String::from_utf8_lossy(&ns.sh(&format!("cat /sys/class/net/{dev}/address")).stdout)
                .trim()
                .to_owned()
        };
        let outside = o
            .outside
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            dir.path().join("vpnd.toml"),
            format!(
                r#"
[gateway]
{gateway}
outside_addresses = [{outside}]
local_networks = ["{vpc_net}"]

[dataplane]
file_prefix = "{prefix}"
main_lcore = 0
worker_lcores = [1]
outside_next_hop_mac = "{cgw_mac}"
inside_next_hop_mac = "{vpc_mac}"
inside_addresses = ["{vpc_gw}"]

[[dataplane.ports]]
name = "wan"
device = "net_af_packet0,iface={d}o{t}"
role = "outside"

[[dataplane.ports]]
name = "lan"
device = "net_af_packet1,iface={d}i{t}"
role = "inside"

[[dataplane.ports]]
name = "kernel"
device = "net_tap0,iface={d}k{t}"
role = "kernel"

[management]
socket_path = "{socket}"

[metrics]
enabled = false
{extra}"#,
                gateway = o.gateway,
                vpc_net = o.vpc.net,
                vpc_gw = o.vpc.gw,
                cgw_mac = mac(&cgw, &format!("{d}c{t}")),
                vpc_mac = mac(&vpc, &format!("{d}v{t}")),
                socket = dir.path().join("control.sock").display(),
                extra = o.vpnd_toml,
            ),
        )
        .expect("vpnd.toml");
        let mut cmd = dp.command(&bin("vpnd"));
        cmd.arg("--config")
            .arg(dir.path().join("vpnd.toml"))
            .arg("--no-huge")
            .envs(o.vpnd_env.iter().map(|(k, v)| (*k, v)));
        let vpnd = Proc::spawn(cmd, &dir.path().join("vpnd.log"));

        // strongSwan, its LAN on lo (recipes § 1).
        let sdir = dir.path().join("swanctl");
        std::fs::create_dir_all(&sdir).expect("swanctl dir");
        std::fs::write(sdir.join("swanctl.conf"), o.swanctl_conf).expect("swanctl.conf");
        let charon = Charon::start(&cgw, dir.path(), &o.charon);

        let mut lab = Self {
            charon,
            vpnd,
            dir,
            cgw,
            dp,
            vpc,
            t,
            dev: d.to_owned(),
            prefix,
            conn: o.conn.to_owned(),
            vpc_side: o.vpc,
        };
        let up = wait_until(Duration::from_secs(60), || {
            lab.vpnd.running() && lab.ctl(&["ping"]).status.success()
        });
        assert!(up, "vpnd did not come up:\n{}", lab.vpnd.output());
        if o.kernel_port_addresses {
            // The exception path: the tap (kernel port) holds the outside
            // addresses, where vpnd's IKE sockets are; the kernel cannot
            // ARP through the worker, so its neighbour is static (the
            // worker rewrites the MACs).
            let k = lab.dev('k');
            assert!(
                wait_until(Duration::from_secs(10), || lab
                    .dp
                    .sh_ok(&format!("ip link show {k}"))),
                "no kernel port {k}"
            );
            let _ = lab
                .dp
                .sh_ok(&format!("sysctl -qw net.ipv6.conf.{k}.disable_ipv6=1"));
            let addrs: String = o
                .outside
                .iter()
                .map(|a| format!("ip addr add {a}/24 dev {k} && "))
                .collect();
            lab.dp.sh(&format!(
                "{addrs}ip link set {k} up && ip neigh replace {} lladdr 02:00:00:00:00:02 dev {k} nud permanent",
                o.cgws[0]
            ));
        }
        lab
    }

    /// The lab's interface `{dev}{end}{tag}`: `c`, `o` (outside veth),
    /// `v`, `i` (inside veth), `k` (kernel port).
    #[must_use]
    pub fn dev(&self, end: char) -> String {
        format!("{}{end}{}", self.dev, self.t)
    }

    /// strongSwan's `swanctl.conf` ([`Options::swanctl_conf`]); swanctl
    /// reads private keys from `private/` beside it.
    #[must_use]
    pub fn swanctl_conf(&self) -> PathBuf {
        self.dir.path().join("swanctl/swanctl.conf")
    }

    /// `swanctl --load-all` of [`swanctl_conf`](Self::swanctl_conf);
    /// returns its output.
    ///
    /// # Panics
    /// When swanctl fails.
    pub fn load_swanctl(&self) -> String {
        let (ok, out) = self.swanctl(&format!(
            "--load-all --file {}",
            self.swanctl_conf().display()
        ));
        assert!(ok, "swanctl --load-all: {out}");
        out
    }

    /// `vpnctl args` against vpnd (killed after 30 s).
    #[must_use]
    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut c = Command::new(bin("vpnctl"));
        c.arg("--socket")
            .arg(self.dir.path().join("control.sock"))
            .args(args);
        bounded(c, Duration::from_secs(30))
    }

    /// `vpnctl args`, which must succeed; its output.
    ///
    /// # Panics
    /// When vpnctl fails.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "vpnctl {args:?}: {}\n--- vpnd:\n{}",
            text(&out),
            self.vpnd.output()
        );
        text(&out)
    }

    /// `vpnctl --json args`, parsed.
    ///
    /// # Panics
    /// When vpnctl fails or does not print JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl_ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("vpnctl {args:?}: {e}: {out}"))
    }

    /// `swanctl args` against the gateway's charon (killed after 30 s).
    #[must_use]
    pub fn swanctl(&self, args: &str) -> (bool, String) {
        self.charon.swanctl(args)
    }

    /// strongSwan initiates the Child SA `child`, retried within 40 s
    /// (vpnd's IKE thread takes configuration changes within 250 ms: an
    /// attempt that met the old configuration is repeated); success and
    /// the last attempt's output.
    #[must_use]
    pub fn try_initiate(&self, child: &str) -> (bool, String) {
        let mut out = String::new();
        let ok = wait_until(Duration::from_secs(40), || {
            let (ok, o) = self.swanctl(&format!("--initiate --child {child} --timeout 15"));
            out = o;
            ok
        });
        (ok, out)
    }

    /// [`try_initiate`](Self::try_initiate) of `net`, which must succeed.
    ///
    /// # Panics
    /// When strongSwan cannot bring the tunnel up.
    pub fn initiate(&self) {
        let (ok, out) = self.try_initiate("net");
        assert!(
            ok,
            "strongSwan could not bring the tunnel up: {out}\n{}",
            self.diagnostics()
        );
    }

    /// Creates the customer gateway `cgw` at [`CGW`] (more `vpnctl cgw
    /// create` options in `cgw_options`) and the lab's connection to it
    /// with `routing` (`--routing …` options) and our outside addresses
    /// [`US0`], [`US1`].
    pub fn create_connection(&self, cgw: &str, cgw_options: &[&str], routing: &[&str]) {
        let mut a = vec!["cgw", "create", cgw, "--ip-address", CGW];
        a.extend_from_slice(cgw_options);
        self.ctl_ok(&a);
        let mut a = vec![
            "connection",
            "create",
            &self.conn,
            "--customer-gateway",
            cgw,
        ];
        a.extend_from_slice(routing);
        a.extend_from_slice(&["--tunnel0-outside-ip", US0, "--tunnel1-outside-ip", US1]);
        self.ctl_ok(&a);
    }

    /// `vpnctl modify-tunnel-options` of tunnel `index` of the lab's
    /// connection, `--set` each of `settings` (`key=value`).
    pub fn set_tunnel_options(&self, index: usize, settings: &[&str]) {
        let index = index.to_string();
        let mut a = vec!["modify-tunnel-options", &self.conn, &index];
        for s in settings {
            a.extend_from_slice(&["--set", s]);
        }
        self.ctl_ok(&a);
    }

    /// Tunnel 0's startup action becomes `start`: vpnd initiates, the
    /// tunnel is UP and strongSwan has the Child SA (10 s).
    ///
    /// # Panics
    /// When it does not come up.
    pub fn vpnd_initiates(&self) {
        // The tunnel may be UP already (the peer initiated): wait for UP
        // with other SPIs than now, or a stale UP seen before vpnd applies
        // the change (up to 250 ms later) would pass for ours.
        let before = self.spis(0);
        self.set_tunnel_options(0, &["startup_action=start"]);
        let ok = wait_until(Duration::from_secs(30), || {
            self.tunnel(0)["status"] == "UP" && {
                let now = self.spis(0);
                !now.is_empty() && now.iter().all(|s| !before.contains(s))
            }
        });
        assert!(
            ok,
            "vpnd initiates: tunnel 0 never UP with new SAs\n{}",
            self.diagnostics()
        );
        assert!(
            wait_until(Duration::from_secs(10), || self
                .swanctl("--list-sas")
                .1
                .contains("INSTALLED")),
            "strongSwan has no Child SA after we initiated\n{}",
            self.diagnostics()
        );
    }

    /// The SPIs `show sas` lists for tunnel `index` of the lab's
    /// connection.
    #[must_use]
    pub fn spis(&self, index: usize) -> Vec<u64> {
        let v = self.json(&["show", "sas"]);
        v["response"]["sas"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| s["connection_id"] == self.conn.as_str() && s["tunnel"] == index)
                    .filter_map(|s| s["spi"].as_u64())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `show tunnels`' entry for tunnel `index` of the lab's connection
    /// (null when there is none).
    #[must_use]
    pub fn tunnel(&self, index: usize) -> Value {
        let v = self.json(&["show", "tunnels", &self.conn]);
        v["response"]["tunnels"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["tunnel"] == index).cloned())
            .unwrap_or(Value::Null)
    }

    /// Both sides' state and logs, for a failure message.
    #[must_use]
    pub fn diagnostics(&self) -> String {
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

    /// Waits (30 s) until tunnel `index` has `status`.
    ///
    /// # Panics
    /// When it does not.
    pub fn wait_status(&self, index: usize, status: &str, what: &str) {
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
    #[must_use]
    pub fn counters(&self) -> (u64, u64, u64, u64) {
        let v = self.json(&["show", "stats"]);
        let t = &v["response"]["stats"]["tunnels"][format!("{}/0", self.conn)];
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        (
            n("packets_in"),
            n("packets_out"),
            n("data_in_bytes"),
            n("data_out_bytes"),
        )
    }

    /// Whether the VPC host resolves vpnd's inside address (the worker
    /// answers ARP) within 20 s, so that pings after it do not wait on
    /// ARP retries.
    #[must_use]
    pub fn vpc_resolves_gw(&self) -> bool {
        let (gw, dev) = (self.vpc_side.gw, self.dev('v'));
        wait_until(Duration::from_secs(20), || {
            self.vpc.sh_ok(&format!(
                "ping -c 1 -W 1 {gw} >/dev/null 2>&1; ip neigh show {gw} dev {dev} | grep -q lladdr"
            ))
        })
    }

    /// Pings both ways through tunnel 0; its counters grow.
    ///
    /// # Panics
    /// When a ping run gets no answer within 30 s, or the counters do not
    /// grow.
    pub fn traffic(&self, what: &str) {
        assert!(
            self.vpc_resolves_gw(),
            "{what}: the VPC host cannot resolve {}\n{}",
            self.vpc_side.gw,
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
        let host = self.vpc_side.host;
        assert!(
            wait_until(Duration::from_secs(30), || self.cgw.sh_ok(&format!(
                "ping -c 3 -i 0.2 -W 5 -I {CGW_LAN} {host} >/dev/null"
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

impl Drop for SwanLab {
    fn drop(&mut self) {
        // vpnd removes it on SIGTERM; after a crash it would stay.
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
    }
}
