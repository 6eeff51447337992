//! `vpnd` with a dynamic-routing connection against a real customer
//! gateway: strongSwan 5.9.8 (kernel-libipsec) for the two tunnels and
//! BIRD 2 for the two BGP sessions that run inside them, between the
//! tunnels' inside addresses.
//!
//! ```text
//!  [vt-bgp-c cgw: charon 192.0.2.2, LAN 10.1.0.1/16 on lo,
//!                 ipsec0 (libipsec TUN): 169.254.21.2/30, 169.254.22.2/30,
//!                 BIRD AS 65001: t1 ⇄ 169.254.21.1, t2 ⇄ 169.254.22.1]
//!        │ veth gc ⇄ go (af_packet, outside)
//!  [vt-bgp-d dp: vpnd AS 64512, outside 192.0.2.1 (tunnel 0), 192.0.2.3 (tunnel 1),
//!                kernel port gk (tap): vpnd puts the outside addresses (IKE)
//!                and the inside addresses 169.254.21.1, 169.254.22.1 (BGP) on it
//!                inside 198.51.100.1]
//!        │ veth gi ⇄ gv (af_packet, inside)
//!  [vt-bgp-v vpc: 198.51.100.2, 10.1.0.0/16 via 198.51.100.1]
//! ```
//!
//! The VPC host has a route to the gateway's LAN only because vpnd learned
//! 10.1.0.0/16 over BGP: no static route exists anywhere on our side.
//! Both tunnels carry 0.0.0.0/0 selectors (route-based, as a cloud VPN's
//! tunnels do).
//!
//! A second test runs the seeds' Azure-style active-active plan on the
//! same fixture ([`AZURE_AA`]): one gateway namespace with two instance
//! addresses P0 192.0.2.2 and P1 192.0.2.4, two connections × two tunnels
//! (our outside 192.0.2.1, .3 to P0 and .5, .7 to P1), the spec's APIPA
//! /30s 169.254.21.0, 169.254.22.0, 169.254.21.4, 169.254.22.4, BIRD AS
//! 65000 with four sessions, VPC 10.2.0.0/16.
//!
//! A third runs a static-routing connection on the same fixture
//! ([`STATIC_TWO`]: 10.1.0.0/16 configured, no BIRD): ECMP over the UP
//! tunnels, failover and failback.
//!
//! The lab is [`e2e::swan_lab`]'s (interface letter `g`), with BIRD
//! beside charon.
//!
//! Needs the workspace binaries (`cargo build --workspace --bins`),
//! strongSwan and BIRD 2 (`../shared/lab/recipes.md` § 0, tools/setup.sh).

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::swan_lab::{Options, SwanLab, Vpc};
use e2e::{Proc, bounded, text, wait_until};
use serde_json::Value;

const CGW_INSIDE: [&str; 2] = ["169.254.21.2", "169.254.22.2"];
const CGW_LAN: &str = "10.1.0.1";
const CONN: &str = "vpn-bgp";
/// Prefixes vpnd accepts per session in this fixture (the gateway's LAN
/// is one; the `many` static protocol in BIRD adds six).
const MAX_PREFIXES: u32 = 5;

/// One tunnel of a lab's plan: its connection, its place there, the
/// customer-gateway instance it ends on, the addresses and the PSK.
#[derive(Debug, Clone, Copy)]
struct TunnelPlan {
    conn: &'static str,
    /// Tunnel index within the connection.
    index: usize,
    /// Index into [`Plan::cgws`].
    cgw: usize,
    /// Our outside address.
    us: &'static str,
    inside: &'static str,
    /// Our inside address (first host of `inside`).
    ours: &'static str,
    /// The peer's inside address (second host of `inside`).
    theirs: &'static str,
    psk: &'static str,
}

/// A lab's topology: customer-gateway instances (outside addresses of the
/// one gateway namespace; all share `peer_asn`), the tunnels in the order
/// the tests number them (strongSwan's `vpn{i}`/`net{i}`, BIRD's `t{i+1}`),
/// and the VPC side (our local network, our inside address, the host).
#[derive(Debug)]
struct Plan {
    /// Namespace/prefix tag: `vt-{ns}-*`.
    ns: &'static str,
    peer_asn: u32,
    cgws: &'static [&'static str],
    tunnels: &'static [TunnelPlan],
    vpc_net: &'static str,
    vpc_gw: &'static str,
    vpc_host: &'static str,
    /// strongSwan's IKE and ESP proposals (the customer gateway's offer).
    ike_proposals: &'static str,
    esp_proposals: &'static str,
    /// Empty: dynamic routing (BGP with BIRD). Otherwise static routing
    /// with these routes to the gateway's side, and no BIRD.
    static_routes: &'static [&'static str],
}

impl Plan {
    /// The connections, in order of first appearance, with their instance.
    fn connections(&self) -> Vec<(&'static str, usize)> {
        let mut out: Vec<(&'static str, usize)> = Vec::new();
        for t in self.tunnels {
            if !out.iter().any(|(c, _)| *c == t.conn) {
                out.push((t.conn, t.cgw));
            }
        }
        out
    }
}

/// One dynamic connection, two tunnels, one customer gateway.
const TWO_TUNNELS: Plan = Plan {
    ns: "bgp",
    peer_asn: 65001,
    cgws: &["192.0.2.2"],
    tunnels: &[
        TunnelPlan {
            conn: CONN,
            index: 0,
            cgw: 0,
            us: "192.0.2.1",
            inside: "169.254.21.0/30",
            ours: "169.254.21.1",
            theirs: CGW_INSIDE[0],
            psk: "vtx.BGP0_0123456789abc",
        },
        TunnelPlan {
            conn: CONN,
            index: 1,
            cgw: 0,
            us: "192.0.2.3",
            inside: "169.254.22.0/30",
            ours: "169.254.22.1",
            theirs: CGW_INSIDE[1],
            psk: "vtx.BGP1_0123456789abc",
        },
    ],
    vpc_net: "198.51.100.0/24",
    vpc_gw: "198.51.100.1",
    vpc_host: "198.51.100.2",
    ike_proposals: "aes128gcm16-prfsha256-ecp256",
    esp_proposals: "aes128gcm16",
    static_routes: &[],
};

/// The seeds' Azure-style active-active plan (interop §2.3, §6.11 #1):
/// two connections (one per gateway instance P0, P1) × two tunnels, each
/// tunnel with its own outside address on our side, inside /30s
/// 169.254.21.0, 169.254.22.0 (instance 0) and 169.254.21.4, 169.254.22.4
/// (instance 1), our BGP addresses .1/.5, the peer's .2/.6, ASN 64512 ⇄
/// 65000, VNet 10.1.0.0/16 ⇄ VPC 10.2.0.0/16.
const AZURE_AA: Plan = Plan {
    ns: "bg4",
    peer_asn: 65000,
    cgws: &["192.0.2.2", "192.0.2.4"],
    tunnels: &[
        TunnelPlan {
            conn: "vpn-az0",
            index: 0,
            cgw: 0,
            us: "192.0.2.1",
            inside: "169.254.21.0/30",
            ours: "169.254.21.1",
            theirs: "169.254.21.2",
            psk: "vtx.AZ00_0123456789abc",
        },
        TunnelPlan {
            conn: "vpn-az0",
            index: 1,
            cgw: 0,
            us: "192.0.2.3",
            inside: "169.254.22.0/30",
            ours: "169.254.22.1",
            theirs: "169.254.22.2",
            psk: "vtx.AZ01_0123456789abc",
        },
        TunnelPlan {
            conn: "vpn-az1",
            index: 0,
            cgw: 1,
            us: "192.0.2.5",
            inside: "169.254.21.4/30",
            ours: "169.254.21.5",
            theirs: "169.254.21.6",
            psk: "vtx.AZ10_0123456789abc",
        },
        TunnelPlan {
            conn: "vpn-az1",
            index: 1,
            cgw: 1,
            us: "192.0.2.7",
            inside: "169.254.22.4/30",
            ours: "169.254.22.5",
            theirs: "169.254.22.6",
            psk: "vtx.AZ11_0123456789abc",
        },
    ],
    vpc_net: "10.2.0.0/16",
    vpc_gw: "10.2.0.1",
    vpc_host: "10.2.0.2",
    // Azure's default policy (interop §6.2): IKE with DH group 2
    // (MODP-1024), AES-256, SHA-256; ESP AES-256-GCM without PFS.
    ike_proposals: "aes256-sha256-modp1024",
    esp_proposals: "aes256gcm16",
    static_routes: &[],
};

/// One static-routing connection, two tunnels, one customer gateway: the
/// gateway's LAN is a configured route (no BGP, no BIRD); the VPC side is
/// a /16 so that [`Lab::spread`]'s sources are ours.
const STATIC_TWO: Plan = Plan {
    ns: "stf",
    peer_asn: 65001,
    cgws: &["192.0.2.2"],
    tunnels: &[
        TunnelPlan {
            conn: "vpn-static",
            index: 0,
            cgw: 0,
            us: "192.0.2.1",
            inside: "169.254.21.0/30",
            ours: "169.254.21.1",
            theirs: CGW_INSIDE[0],
            psk: "vtx.STF0_0123456789abc",
        },
        TunnelPlan {
            conn: "vpn-static",
            index: 1,
            cgw: 0,
            us: "192.0.2.3",
            inside: "169.254.22.0/30",
            ours: "169.254.22.1",
            theirs: CGW_INSIDE[1],
            psk: "vtx.STF1_0123456789abc",
        },
    ],
    vpc_net: "10.2.0.0/16",
    vpc_gw: "10.2.0.1",
    vpc_host: "10.2.0.2",
    ike_proposals: "aes128gcm16-prfsha256-ecp256",
    esp_proposals: "aes128gcm16",
    static_routes: &["10.1.0.0/16"],
};

/// BIRD's configuration: the gateway's LAN to every session, all but
/// tunnel 0's copies prepended when `prefer_t1`; a route carrying our AS
/// (denied by vpnd); six more routes in `many`, disabled until the limit
/// test.
fn bird_conf(plan: &Plan, prefer_t1: bool) -> String {
    let asn = plan.peer_asn;
    let many: String = (0..6)
        .map(|i| format!("  route 10.9.{i}.0/24 blackhole;\n"))
        .collect();
    let mut sessions = String::new();
    for (n, t) in plan.tunnels.iter().enumerate() {
        let prepend = if prefer_t1 && n > 0 {
            format!("bgp_path.prepend({asn});")
        } else {
            String::new()
        };
        sessions.push_str(&format!(
            r#"filter to_t{k} {{
  if proto = "loop4" then {{ bgp_path.prepend(64512); accept; }}
  if source = RTS_STATIC then {{ {prepend} accept; }}
  reject;
}}
protocol bgp t{k} {{
  local {theirs} as {asn};
  neighbor {ours} as 64512;
  hold time 30;
  keepalive time 10;
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 5;
  ipv4 {{ import all; export filter to_t{k}; }};
}}
"#,
            k = n + 1,
            theirs = t.theirs,
            ours = t.ours,
        ));
    }
    format!(
        r#"router id {rid};
log stderr all;
protocol device {{ scan time 1; }}
protocol static lan {{ ipv4; route 10.1.0.0/16 blackhole; }}
protocol static loop4 {{ ipv4; route 10.66.0.0/16 blackhole; }}
protocol static many {{
  ipv4;
  disabled;
{many}}}
{sessions}"#,
        rid = plan.tunnels[0].theirs,
    )
}

struct Lab {
    // Drop order: BIRD, then the rest of the lab.
    bird: Option<Proc>,
    lab: SwanLab,
    plan: &'static Plan,
}

impl Deref for Lab {
    type Target = SwanLab;
    fn deref(&self) -> &SwanLab {
        &self.lab
    }
}

impl DerefMut for Lab {
    fn deref_mut(&mut self) -> &mut SwanLab {
        &mut self.lab
    }
}

impl Lab {
    fn new(plan: &'static Plan) -> Self {
        let quoted = |v: Vec<&str>| {
            v.iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let cgws: String = plan
            .cgws
            .iter()
            .enumerate()
            .map(|(i, a)| {
                format!(
                    "[[customer_gateways]]\nid = \"cgw-{i}\"\nip_address = \"{a}\"\nbgp_asn = {}\n\n",
                    plan.peer_asn
                )
            })
            .collect();
        let connections: String = plan
            .connections()
            .into_iter()
            .map(|(conn, instance)| {
                let tunnels: String = plan
                    .tunnels
                    .iter()
                    .filter(|tp| tp.conn == conn)
                    .map(|tp| {
                        format!(
                            "[[connections.tunnels]]\noutside_ip_address = \"{}\"\ninside_ipv4_cidr = \"{}\"\npre_shared_key = \"{}\"\nstartup_action = \"add\"\n\n",
                            tp.us, tp.inside, tp.psk
                        )
                    })
                    .collect();
                let routing = if plan.static_routes.is_empty() {
                    format!("routing = \"dynamic\"\n\n[connections.bgp]\nmax_prefixes = {MAX_PREFIXES}")
                } else {
                    format!(
                        "routing = \"static\"\nstatic_routes = [{}]",
                        quoted(plan.static_routes.to_vec())
                    )
                };
                format!(
                    "[[connections]]\nid = \"{conn}\"\ncustomer_gateway_id = \"cgw-{instance}\"\ntarget = \"tgw-bgp\"\n{routing}\n\n{tunnels}"
                )
            })
            .collect();
        // strongSwan: one IKE connection per tunnel, route-based (0/0),
        // from the tunnel's instance address.
        let conns: String = plan
            .tunnels
            .iter()
            .enumerate()
            .map(|(i, tp)| {
                format!(
                    " vpn{i} {{\n  version = 2\n  local_addrs = {me}\n  remote_addrs = {us}\n  proposals = {ike}\n  local {{ auth = psk\n id = {me} }}\n  remote {{ auth = psk\n id = {us} }}\n  children {{ net{i} {{\n   local_ts = 0.0.0.0/0\n   remote_ts = 0.0.0.0/0\n   esp_proposals = {esp}\n   mode = tunnel\n  }} }}\n }}\n",
                    me = plan.cgws[tp.cgw],
                    us = tp.us,
                    ike = plan.ike_proposals,
                    esp = plan.esp_proposals,
                )
            })
            .collect();
        let secrets: String = plan
            .tunnels
            .iter()
            .enumerate()
            .map(|(i, tp)| {
                format!(
                    " ike-{i} {{ id-a = {}\n id-b = {}\n secret = \"{}\" }}\n",
                    plan.cgws[tp.cgw], tp.us, tp.psk
                )
            })
            .collect();
        let outside: Vec<&str> = plan.tunnels.iter().map(|tp| tp.us).collect();
        let lab = SwanLab::new(&Options {
            ns: plan.ns,
            dev: "g",
            gateway: "id = \"tgw-bgp\"\nasn = 64512",
            cgws: plan.cgws,
            outside: &outside,
            vpc: Vpc {
                net: plan.vpc_net,
                gw: plan.vpc_gw,
                host: plan.vpc_host,
            },
            vpnd_toml: &format!("\n{cgws}{connections}"),
            swanctl_conf: &format!("connections {{\n{conns}}}\nsecrets {{\n{secrets}}}\n"),
            conn: plan.tunnels[0].conn,
            ..Options::default()
        });
        // libipsec's table 220 sends everything into ipsec0 except the
        // peer address of each tunnel that is up: IKE to the other
        // tunnel's address must not be tunnelled either (a real gateway
        // has its WAN routes ahead of the VPN's).
        lab.cgw
            .sh("ip rule add to 192.0.2.0/24 lookup main pref 100");
        // The exception path: vpnd itself puts the outside addresses (IKE)
        // and our inside addresses (BGP) on the kernel port, with a route
        // and a permanent neighbour for each peer (kernel_port.rs).
        let k = lab.dev('k');
        let ready = wait_until(Duration::from_secs(20), || {
            plan.tunnels.iter().all(|tp| {
                lab.dp
                    .sh_ok(&format!("ip -4 addr show dev {k} | grep -qw {}", tp.ours))
            })
        });
        assert!(
            ready,
            "vpnd did not put the inside addresses on {k}: {}\n{}",
            String::from_utf8_lossy(&lab.dp.sh(&format!("ip addr show dev {k}")).stdout),
            lab.vpnd.output()
        );

        // The customer side: the inside addresses on libipsec's TUN device
        // (created when charon starts), then BIRD.
        assert!(
            wait_until(Duration::from_secs(10), || lab
                .cgw
                .sh_ok("ip link show ipsec0")),
            "charon has no ipsec0: {}",
            lab.charon.output()
        );
        for tp in plan.tunnels {
            lab.cgw
                .sh(&format!("ip addr add {}/30 dev ipsec0", tp.theirs));
        }
        lab.load_swanctl();
        let mut lab = Self {
            bird: None,
            lab,
            plan,
        };
        if plan.static_routes.is_empty() {
            lab.start_bird(false);
        }
        lab
    }

    fn start_bird(&mut self, prefer_t1: bool) {
        let conf = self.dir.path().join("bird.conf");
        std::fs::write(&conf, bird_conf(self.plan, prefer_t1)).expect("bird.conf");
        let mut cmd = self.cgw.command(Path::new("/usr/sbin/bird"));
        cmd.arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(self.dir.path().join("bird.ctl"));
        self.bird = Some(Proc::spawn(cmd, &self.dir.path().join("bird.log")));
        let ctl = self.dir.path().join("bird.ctl");
        assert!(
            wait_until(Duration::from_secs(10), || ctl.exists()),
            "BIRD did not start: {}",
            self.bird.as_ref().map(Proc::output).unwrap_or_default()
        );
    }

    /// Rewrites BIRD's configuration and has it reload (export filters
    /// changed: BIRD re-exports).
    fn reconfigure_bird(&self, prefer_t1: bool) {
        std::fs::write(
            self.dir.path().join("bird.conf"),
            bird_conf(self.plan, prefer_t1),
        )
        .expect("bird.conf");
        let out = self.birdc("configure");
        assert!(out.contains("Reconfigured"), "birdc configure: {out}");
    }

    fn birdc(&self, what: &str) -> String {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.cgw.name(), "birdc", "-s"])
            .arg(self.dir.path().join("bird.ctl"))
            .args(what.split(' '));
        text(&bounded(c, Duration::from_secs(10)))
    }

    /// strongSwan brings tunnel `i` up (retried within a bound: vpnd's
    /// IKE thread takes the configuration within 250 ms of starting).
    fn initiate(&self, i: usize) {
        let (ok, out) = self.try_initiate(&format!("net{i}"));
        assert!(
            ok,
            "strongSwan could not bring tunnel {i} up: {out}\n{}",
            self.diagnostics()
        );
    }

    /// `show bgp`'s entry for tunnel `index` of the plan.
    fn neighbor(&self, index: usize) -> Value {
        let tp = self.plan.tunnels[index];
        let v = self.json(&["show", "bgp", tp.conn]);
        v["response"]["neighbors"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["tunnel"] == tp.index).cloned())
            .unwrap_or(Value::Null)
    }

    /// The selected BGP route for `prefix` (over all connections: an ECMP
    /// route is listed under its first member's connection).
    fn route(&self, prefix: &str) -> Value {
        let v = self.json(&["show", "routes"]);
        v["response"]["routes"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|r| r["prefix"] == prefix && r["source"] == "bgp")
                    .cloned()
            })
            .unwrap_or(Value::Null)
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- show tunnels:\n{}\n--- show bgp:\n{}\n--- show routes:\n{}\n--- show stats:\n{}\n--- swanctl --list-sas:\n{}\n--- birdc show protocols all:\n{}\n--- vpnd:\n{}\n--- charon (tail):\n{}\n--- bird:\n{}",
            text(&self.ctl(&["show", "tunnels"])),
            text(&self.ctl(&["show", "bgp"])),
            text(&self.ctl(&["show", "routes"])),
            text(&self.ctl(&["show", "stats"])),
            self.swanctl("--list-sas").1,
            self.birdc("show protocols all"),
            self.vpnd.output(),
            tail(&self.charon.output(), 60),
            self.bird.as_ref().map(Proc::output).unwrap_or_default()
        )
    }

    fn wait_bgp(&self, index: usize, state: &str, what: &str) {
        let ok = wait_until(Duration::from_secs(60), || {
            self.neighbor(index)["state"] == state
        });
        assert!(
            ok,
            "{what}: BGP on tunnel {index} never {state}\n{}",
            self.diagnostics()
        );
    }

    /// Waits until vpnd's route to the gateway's LAN satisfies `f`.
    fn wait_route(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let mut r = Value::Null;
        let ok = wait_until(Duration::from_secs(60), || {
            r = self.route("10.1.0.0/16");
            f(&r)
        });
        assert!(
            ok,
            "{what}: route 10.1.0.0/16 is {r}\n{}",
            self.diagnostics()
        );
        r
    }

    /// `show stats`' key of tunnel `i` of the plan (also its name in the
    /// ECMP members of `show routes`).
    fn key(&self, i: usize) -> String {
        let tp = self.plan.tunnels[i];
        format!("{}/{}", tp.conn, tp.index)
    }

    /// Packets vpnd encrypted into each tunnel of the plan.
    fn packets_out_all(&self) -> Vec<u64> {
        let v = self.json(&["show", "stats"]);
        (0..self.plan.tunnels.len())
            .map(|i| {
                v["response"]["stats"]["tunnels"][self.key(i)]["packets_out"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Packets vpnd encrypted into tunnel `i` of the plan.
    fn packets_out(&self, i: usize) -> u64 {
        self.packets_out_all()[i]
    }

    /// The VPC host reaches the gateway's LAN (and back) within a bound
    /// (a busy-polling worker on a loaded 2-core machine can be
    /// descheduled for seconds); returns the tunnel that carried the
    /// requests, by vpnd's counters.
    fn ping_through(&self, what: &str) -> usize {
        assert!(
            self.vpc_resolves_gw(),
            "{what}: the VPC host cannot resolve {}\n{}",
            self.plan.vpc_gw,
            self.diagnostics()
        );
        let before = self.packets_out_all();
        assert!(
            wait_until(Duration::from_secs(30), || self
                .vpc
                .sh_ok(&format!("ping -c 5 -i 0.2 -W 5 {CGW_LAN} >/dev/null"))),
            "{what}: VPC host -> {CGW_LAN} through the tunnel failed\n{}",
            self.diagnostics()
        );
        let mut after = before.clone();
        let grew = wait_until(Duration::from_secs(5), || {
            after = self.packets_out_all();
            after.iter().sum::<u64>() >= before.iter().sum::<u64>() + 5
        });
        assert!(
            grew,
            "{what}: tunnel counters {before:?} -> {after:?}\n{}",
            self.diagnostics()
        );
        let delta: Vec<u64> = after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        eprintln!("{what}: packets out per tunnel +{delta:?}");
        // The first tunnel that carried the most (ties: the lower index).
        let most = delta.iter().copied().max().unwrap_or(0);
        delta.iter().position(|d| *d == most).unwrap_or(0)
    }

    /// Flows from `SOURCES` addresses of the VPC host (added by the
    /// caller) to the gateway's LAN at once: how many got answers, and the
    /// packets vpnd encrypted into each tunnel meanwhile. The flow hash
    /// covers the addresses, so the sources spread over an ECMP group.
    fn spread(&self, what: &str) -> (usize, Vec<u64>) {
        let before = self.packets_out_all();
        let out = self.vpc.sh(&format!(
            "for i in $(seq {first} {last}); do (ping -c 2 -i 0.2 -W 2 -I 10.2.1.$i {CGW_LAN} >/dev/null 2>&1 && echo ok) & done; wait",
            first = 1,
            last = SOURCES
        ));
        let answered = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| *l == "ok")
            .count();
        let mut after = before.clone();
        // vpnd's counters are read from the workers periodically.
        wait_until(Duration::from_secs(5), || {
            after = self.packets_out_all();
            after.iter().sum::<u64>() >= before.iter().sum::<u64>() + SOURCES
        });
        let delta: Vec<u64> = after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        eprintln!("{what}: {answered}/{SOURCES} flows answered, packets out per tunnel +{delta:?}");
        (answered, delta)
    }

    /// A bounded ping stream from the VPC host (`count` packets every
    /// `interval_ms`), started now; returns its handle.
    fn ping_stream(&self, count: u32, interval_ms: u32) -> Child {
        self.vpc
            .command(Path::new("/usr/bin/ping"))
            .args([
                "-c",
                &count.to_string(),
                "-i",
                &format!("0.{interval_ms:03}"),
                "-W",
                "1",
                CGW_LAN,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ping")
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// `transmitted` and `received` from ping's summary line.
fn ping_counts(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_default();
    let num = |after: &str| {
        line.split(',')
            .find(|p| p.contains(after))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (num("transmitted"), num("received"))
}

/// The whole story on one fixture: sessions up over both tunnels, routes
/// both ways, ECMP, preference by AS_PATH prepend, failover and failback
/// with the loss measured, the own-AS route denied and the prefix limit.
#[test]
#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
fn bgp_over_tunnels_with_bird_failover_and_limits() {
    if !testkit::own_process() {
        return;
    }
    let mut lab = Lab::new(&TWO_TUNNELS);

    // 1. Both tunnels up (strongSwan initiates); BGP over each.
    lab.initiate(0);
    lab.initiate(1);
    lab.wait_bgp(0, "Established", "tunnel 0 up");
    lab.wait_bgp(1, "Established", "tunnel 1 up");
    let tunnels = lab.json(&["show", "tunnels", CONN]);
    for t in tunnels["response"]["tunnels"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(t["status"], "UP", "{t}");
        assert_eq!(t["bgp_state"], "Established", "{t}");
    }

    // 2. Routes both ways. Equal paths: ECMP over both tunnels.
    let r = lab.wait_route("equal paths", |r| {
        r["ecmp"].as_array().is_some_and(|m| m.len() == 2)
    });
    assert_eq!(r["as_path"], "65001", "{r}");
    assert_eq!(r["active"], true, "{r}");
    assert!(
        wait_until(Duration::from_secs(30), || {
            let b = lab.birdc("show route 198.51.100.0/24 all");
            b.contains("BGP.as_path: 64512") && b.contains("t1") && b.contains("t2")
        }),
        "BIRD did not learn the VPC prefix over both sessions: {}\n{}",
        lab.birdc("show route all"),
        lab.diagnostics()
    );
    let n0 = lab.neighbor(0);
    assert_eq!(n0["prefixes_received"], 1, "{n0}");
    assert_eq!(n0["prefixes_advertised"], 1, "{n0}");
    eprintln!("--- vpnctl show bgp:\n{}", lab.ctl_ok(&["show", "bgp"]));
    eprintln!(
        "--- vpnctl show routes:\n{}",
        lab.ctl_ok(&["show", "routes"])
    );
    lab.ping_through("ECMP");

    // 3. The own-AS route was denied with the spec's text.
    let logs = lab.ctl_ok(&["logs", "--connection", CONN, "--lines", "1000"]);
    assert!(
        logs.lines().any(|l| l.contains("prefix=10.66.0.0/16")
            && l.contains("DENIED due to: as-path contains our own AS")),
        "{logs}"
    );
    assert!(lab.route("10.66.0.0/16").is_null());
    assert!(logs.contains("type=BGPStatus status=UP"), "{logs}");
    assert!(
        logs.contains("tunnel status changed to UP (BGP Established)"),
        "{logs}"
    );
    assert!(
        logs.contains("AWS-side peer BGP session state has changed from OpenConfirm to Established with neighbor 169.254.21.2"),
        "{logs}"
    );

    // 4. Prefer tunnel 0: BIRD prepends its AS on tunnel 1's session.
    lab.reconfigure_bird(true);
    let r = lab.wait_route("tunnel 1 prepended", |r| {
        r["tunnel"] == 0 && r["ecmp"].is_null()
    });
    assert_eq!(r["next_hop"], CGW_INSIDE[0], "{r}");
    eprintln!(
        "--- vpnctl show routes (tunnel 0 preferred):\n{}",
        lab.ctl_ok(&["show", "routes"])
    );
    assert_eq!(lab.ping_through("tunnel 0 preferred"), 0);

    // 5. Failover: strongSwan stops tunnel 0's IKE SA while the VPC host
    //    pings every 20 ms; the routes through it go at once, traffic
    //    moves to tunnel 1.
    let (count, interval_ms) = (600u32, 20u32);
    let stream = lab.ping_stream(count, interval_ms);
    std::thread::sleep(Duration::from_secs(2));
    let before = lab.packets_out(1);
    let t_down = Instant::now();
    let (ok, out) = lab.swanctl("--terminate --ike vpn0 --timeout 10");
    assert!(ok, "{out}");
    lab.wait_route("tunnel 0 down", |r| r["tunnel"] == 1);
    let moved = t_down.elapsed();
    let out = stream.wait_with_output().expect("ping");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let (sent, received) = ping_counts(&out);
    let lost = sent.saturating_sub(received);
    eprintln!(
        "FAILOVER: route moved to tunnel 1 within {} ms; ping stream {sent} sent / {received} received: {lost} lost ({} ms at {interval_ms} ms intervals)",
        moved.as_millis(),
        lost * u64::from(interval_ms)
    );
    assert!(sent >= u64::from(count) - 1, "{out}");
    assert!(
        lab.packets_out(1) > before,
        "no traffic through tunnel 1 after the failover\n{}",
        lab.diagnostics()
    );
    // Bounded loss: the stream ran 10 s past the termination; without a
    // failover all of it is lost. The bound leaves room for a worker
    // descheduled for seconds on a loaded 2-core machine.
    assert!(
        lost * u64::from(interval_ms) < 5000,
        "lost {lost} of {sent}: {out}\n{}",
        lab.diagnostics()
    );
    assert_ne!(lab.neighbor(0)["state"], "Established");
    assert_eq!(lab.ping_through("after failover"), 1);

    // 6. Tunnel 0 returns: the session re-establishes, traffic returns.
    lab.initiate(0);
    lab.wait_bgp(0, "Established", "tunnel 0 back");
    lab.wait_route("tunnel 0 back", |r| r["tunnel"] == 0);
    assert_eq!(lab.ping_through("tunnel 0 back"), 0);

    // 7. Prefix limit: six more routes from BIRD exceed our limit of
    //    five: Cease 6/1 and the spec's log lines.
    let out = lab.birdc("enable many");
    assert!(out.contains("enabled"), "birdc enable many: {out}");
    let ok = wait_until(Duration::from_secs(30), || {
        lab.neighbor(0)["last_sent_notification"]
            .as_str()
            .is_some_and(|n| n.starts_with("6/1"))
    });
    assert!(ok, "no Cease 6/1\n{}", lab.diagnostics());
    let logs = lab.ctl_ok(&["logs", "--connection", CONN, "--lines", "1000"]);
    assert!(
        logs.contains(&format!(
            "AWS-side peer detected maximum-prefix limit exceeded - received 7 prefixes from neighbor 169.254.21.2, limit {MAX_PREFIXES}"
        )),
        "{logs}"
    );
    assert!(
        logs.contains("AWS-side peer sent notification 6/1 (Cease/Maximum Number of Prefixes Reached) to neighbor 169.254.21.2"),
        "{logs}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || lab
            .birdc("show protocols all t1")
            .contains("Maximum number of prefixes reached")),
        "BIRD did not see our Cease: {}",
        lab.birdc("show protocols all t1")
    );
    eprintln!(
        "--- vpnctl show bgp (after the limit):\n{}",
        lab.ctl_ok(&["show", "bgp"])
    );
    assert!(lab.vpnd.running(), "{}", lab.vpnd.output());
    // What vpnd's BGP thread said (shown with --nocapture).
    let out = lab.vpnd.output();
    let bgp: Vec<&str> = out.lines().filter(|l| l.contains("vpnd: bgp:")).collect();
    eprintln!(
        "--- vpnd BGP lines (last 60 of {}):\n{}",
        bgp.len(),
        bgp[bgp.len().saturating_sub(60)..].join("\n")
    );
    lab.bird = None;
}

/// Source addresses [`Lab::spread`] uses (10.2.1.1 up).
const SOURCES: u64 = 32;

/// The members of `r`'s ECMP group (empty when it has one tunnel).
fn ecmp_members(r: &Value) -> Vec<String> {
    r["ecmp"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The seeds' Azure-style active-active plan (interop §2.3, §6.11 #1) end
/// to end: four tunnels over two connections to the two instances of one
/// gateway, a BGP session in each between the spec's APIPA addresses,
/// the VNet prefix ECMP over the four; one tunnel down → ECMP over the
/// other three with traffic flowing; back → four again; instance 0 down →
/// ECMP over instance 1's two tunnels.
#[test]
#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
fn azure_active_active_four_tunnels_ecmp_with_bird() {
    if !testkit::own_process() {
        return;
    }
    let started = Instant::now();
    let lab = Lab::new(&AZURE_AA);
    let n = AZURE_AA.tunnels.len();
    let all: Vec<String> = (0..n).map(|i| lab.key(i)).collect();

    // 1. strongSwan brings the four tunnels up; BGP over each.
    for i in 0..n {
        lab.initiate(i);
    }
    for i in 0..n {
        lab.wait_bgp(i, "Established", "four tunnels up");
    }
    let tunnels = lab.json(&["show", "tunnels"]);
    let tunnels = tunnels["response"]["tunnels"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(tunnels.len(), n, "{tunnels:?}");
    for t in &tunnels {
        assert_eq!(t["status"], "UP", "{t}\n{}", lab.diagnostics());
        assert_eq!(t["bgp_state"], "Established", "{t}");
    }
    // Each session between the plan's addresses, each with the VNet.
    for (i, tp) in AZURE_AA.tunnels.iter().enumerate() {
        let nb = lab.neighbor(i);
        assert_eq!(nb["neighbor"], tp.theirs, "{nb}");
        assert_eq!(nb["local_address"], tp.ours, "{nb}");
        assert_eq!(nb["local_asn"], 64512, "{nb}");
        assert_eq!(nb["peer_asn"], 65000, "{nb}");
        // The peer's UPDATE follows its OPEN/KEEPALIVE: wait for it.
        let mut nb = nb;
        let got = wait_until(Duration::from_secs(30), || {
            nb = lab.neighbor(i);
            nb["prefixes_received"].as_u64().is_some_and(|p| p >= 1)
        });
        assert!(
            got,
            "tunnel {i}: no route received: {nb}\n{}",
            lab.diagnostics()
        );
    }

    // 2. The VNet prefix: ECMP over the four tunnels; BIRD learned the
    //    VPC over the four sessions; traffic flows.
    let r = lab.wait_route("four tunnels", |r| {
        let mut m = ecmp_members(r);
        m.sort();
        m == all
    });
    assert_eq!(r["as_path"], "65000", "{r}");
    assert_eq!(r["active"], true, "{r}");
    assert!(
        wait_until(Duration::from_secs(30), || {
            let b = lab.birdc("show route 10.2.0.0/16 all");
            b.contains("BGP.as_path: 64512") && (1..=n).all(|k| b.contains(&format!("t{k}")))
        }),
        "BIRD did not learn the VPC prefix over the four sessions: {}\n{}",
        lab.birdc("show route all"),
        lab.diagnostics()
    );
    eprintln!("--- vpnctl show bgp:\n{}", lab.ctl_ok(&["show", "bgp"]));
    eprintln!(
        "--- vpnctl show routes:\n{}",
        lab.ctl_ok(&["show", "routes"])
    );
    let via = lab.ping_through("ECMP over four");
    // Many flows spread over the four tunnels.
    for i in 1..=SOURCES {
        lab.vpc
            .sh(&format!("ip addr add 10.2.1.{i}/16 dev {}", lab.dev('v')));
    }
    let check_spread = |what: &str, down: Option<usize>| {
        let (answered, delta) = lab.spread(what);
        let least = usize::try_from(SOURCES).unwrap_or(usize::MAX) - 2;
        assert!(
            answered >= least,
            "{what}: only {answered} of {SOURCES} flows answered\n{}",
            lab.diagnostics()
        );
        for (i, d) in delta.iter().enumerate() {
            let expect_used = Some(i) != down;
            assert_eq!(
                *d > 0,
                expect_used,
                "{what}: tunnel {i} ({}) carried {d} packets: {delta:?}\n{}",
                lab.key(i),
                lab.diagnostics()
            );
        }
    };
    check_spread("ECMP over four", None);

    // 3. The tunnel that carried the single flow goes down (strongSwan
    //    deletes its IKE SA) while the VPC host pings every 20 ms: ECMP
    //    over the other three, the flow moves, traffic keeps flowing.
    let down = via;
    let (count, interval_ms) = (300u32, 20u32);
    let stream = lab.ping_stream(count, interval_ms);
    std::thread::sleep(Duration::from_secs(1));
    let t_down = Instant::now();
    let (ok, out) = lab.swanctl(&format!("--terminate --ike vpn{down} --timeout 10"));
    assert!(ok, "swanctl --terminate: {out}\n{}", lab.diagnostics());
    let three: Vec<String> = all.iter().filter(|k| **k != all[down]).cloned().collect();
    let r = lab.wait_route("one tunnel down", |r| {
        let mut m = ecmp_members(r);
        m.sort();
        m == three
    });
    let moved = t_down.elapsed();
    assert_eq!(r["active"], true, "{r}");
    assert_ne!(lab.neighbor(down)["state"], "Established");
    let out = stream.wait_with_output().expect("ping");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let (sent, received) = ping_counts(&out);
    let lost = sent.saturating_sub(received);
    eprintln!(
        "ONE TUNNEL DOWN: ECMP over three within {} ms; ping stream {sent} sent / {received} received: {lost} lost",
        moved.as_millis()
    );
    assert!(sent >= u64::from(count) - 1, "{out}");
    // The stream outlived the termination by seconds: most of it got
    // through (room for a worker descheduled on a loaded machine).
    assert!(
        lost * u64::from(interval_ms) < 3000,
        "lost {lost} of {sent}: {out}\n{}",
        lab.diagnostics()
    );
    let via = lab.ping_through("ECMP over three");
    assert_ne!(
        via, down,
        "traffic still counted on the tunnel that went down"
    );
    check_spread("ECMP over three", Some(down));
    for i in (0..n).filter(|i| *i != down) {
        assert_eq!(lab.neighbor(i)["state"], "Established", "tunnel {i}");
    }

    // 4. It returns: four sessions, ECMP over the four again.
    lab.initiate(down);
    lab.wait_bgp(down, "Established", "tunnel back");
    lab.wait_route("tunnel back", |r| {
        let mut m = ecmp_members(r);
        m.sort();
        m == all
    });
    lab.ping_through("ECMP over four again");
    check_spread("ECMP over four again", None);

    // 5. Instance 0 goes away (both its IKE SAs deleted) under a ping
    //    stream: ECMP over instance 1's two tunnels, traffic flows.
    let stream = lab.ping_stream(count, interval_ms);
    std::thread::sleep(Duration::from_secs(1));
    let t_down = Instant::now();
    for i in [0, 1] {
        let (ok, out) = lab.swanctl(&format!("--terminate --ike vpn{i} --timeout 10"));
        assert!(ok, "swanctl --terminate: {out}\n{}", lab.diagnostics());
    }
    let instance1: Vec<String> = vec![lab.key(2), lab.key(3)];
    lab.wait_route("instance 0 down", |r| ecmp_members(r) == instance1);
    let moved = t_down.elapsed();
    let out = stream.wait_with_output().expect("ping");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let (sent, received) = ping_counts(&out);
    let lost = sent.saturating_sub(received);
    eprintln!(
        "INSTANCE 0 DOWN: ECMP over instance 1 within {} ms; ping stream {sent} sent / {received} received: {lost} lost",
        moved.as_millis()
    );
    assert!(
        lost * u64::from(interval_ms) < 3000,
        "lost {lost} of {sent}: {out}\n{}",
        lab.diagnostics()
    );
    let (answered, delta) = lab.spread("instance 1 only");
    assert!(
        answered >= usize::try_from(SOURCES).unwrap_or(usize::MAX) - 2
            && delta[0] == 0
            && delta[1] == 0
            && delta[2] > 0
            && delta[3] > 0,
        "instance 1 only: {answered} answered, {delta:?}\n{}",
        lab.diagnostics()
    );
    eprintln!(
        "--- vpnctl show routes (instance 0 down):\n{}",
        lab.ctl_ok(&["show", "routes"])
    );
    eprintln!(
        "AZURE-AA: scenario took {} ms",
        started.elapsed().as_millis()
    );
}

/// Issue 21 item 3, spec § 10.2/§ 10.5: a static-routing connection sends
/// through one primary tunnel (no ECMP on static VPNs): both tunnels up →
/// 10.1.0.0/16 active through tunnel 0 alone (every flow, by vpnd's
/// counters); tunnel 0 is terminated by strongSwan under a 20 ms ping
/// stream → the stream continues over tunnel 1 with the loss measured;
/// tunnel 1 goes down too → the route is withdrawn (inactive, no answer);
/// both return → tunnel 0 is the primary again.
#[test]
#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
fn static_routing_primary_tunnel_failover_and_back() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new(&STATIC_TWO);
    let conn = STATIC_TWO.tunnels[0].conn;
    let tunnel_up = |i: usize| {
        let v = lab.json(&["show", "tunnels", conn]);
        v["response"]["tunnels"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["tunnel"] == i).cloned())
            .is_some_and(|t| t["status"] == "UP")
    };
    let wait_tunnel = |i: usize, up: bool, what: &str| {
        assert!(
            wait_until(Duration::from_secs(60), || tunnel_up(i) == up),
            "{what}: tunnel {i} never {}\n{}",
            if up { "UP" } else { "DOWN" },
            lab.diagnostics()
        );
    };
    let static_route = || {
        let v = lab.json(&["show", "routes", conn]);
        v["response"]["routes"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|r| r["prefix"] == "10.1.0.0/16" && r["source"] == "static")
                    .cloned()
            })
            .unwrap_or(Value::Null)
    };

    // 1. strongSwan brings both tunnels up; no BGP anywhere.
    lab.initiate(0);
    lab.initiate(1);
    wait_tunnel(0, true, "both up");
    wait_tunnel(1, true, "both up");
    let r = static_route();
    assert_eq!(r["active"], true, "{r}\n{}", lab.diagnostics());
    assert_eq!(r["connection_id"], conn, "{r}");
    // One primary tunnel, the first UP one; no ECMP members.
    let members = |r: &Value| -> Vec<String> {
        r["ecmp"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(r["tunnel"], 0, "{r}");
    assert!(members(&r).is_empty(), "{r}");
    assert!(
        lab.route("10.1.0.0/16").is_null(),
        "a BGP route on a static connection"
    );
    eprintln!(
        "--- vpnctl show routes:\n{}",
        lab.ctl_ok(&["show", "routes"])
    );

    // 2. Traffic flows; every flow through the primary tunnel 0.
    let via = lab.ping_through("static, both up");
    assert_eq!(via, 0, "{}", lab.diagnostics());
    for i in 1..=SOURCES {
        lab.vpc
            .sh(&format!("ip addr add 10.2.1.{i}/16 dev {}", lab.dev('v')));
    }
    let least = usize::try_from(SOURCES).unwrap_or(usize::MAX) - 2;
    let check_spread = |what: &str, down: Option<usize>| {
        let (answered, delta) = lab.spread(what);
        assert!(
            answered >= least,
            "{what}: only {answered} of {SOURCES} flows answered\n{}",
            lab.diagnostics()
        );
        for (i, d) in delta.iter().enumerate() {
            assert_eq!(
                *d > 0,
                Some(i) != down,
                "{what}: tunnel {i} carried {d} packets: {delta:?}\n{}",
                lab.diagnostics()
            );
        }
    };
    check_spread("static: every flow through the primary", Some(1));

    // 3. Failover: strongSwan deletes the IKE SA of the primary tunnel
    //    while the VPC host pings every 20 ms.
    let down = via;
    let other = 1 - down;
    let (count, interval_ms) = (500u32, 20u32);
    let stream = lab.ping_stream(count, interval_ms);
    std::thread::sleep(Duration::from_secs(2));
    let before = lab.packets_out(other);
    let t_down = Instant::now();
    let (ok, out) = lab.swanctl(&format!("--terminate --ike vpn{down} --timeout 10"));
    assert!(ok, "swanctl --terminate: {out}\n{}", lab.diagnostics());
    wait_tunnel(down, false, "terminated");
    let noticed = t_down.elapsed();
    let out = stream.wait_with_output().expect("ping");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let (sent, received) = ping_counts(&out);
    let lost = sent.saturating_sub(received);
    eprintln!(
        "STATIC FAILOVER: tunnel {down} DOWN within {} ms; ping stream {sent} sent / {received} received: {lost} lost ({} ms at {interval_ms} ms intervals)",
        noticed.as_millis(),
        lost * u64::from(interval_ms)
    );
    assert!(sent >= u64::from(count) - 1, "{out}");
    assert!(
        lab.packets_out(other) > before,
        "no traffic through tunnel {other} after the failover\n{}",
        lab.diagnostics()
    );
    // The stream ran ~8 s past the termination; without a failover all
    // of it is lost. Room for a worker descheduled on a loaded machine.
    assert!(
        lost * u64::from(interval_ms) < 5000,
        "lost {lost} of {sent}: {out}\n{}",
        lab.diagnostics()
    );
    assert!(tunnel_up(other), "{}", lab.diagnostics());
    let r = static_route();
    assert_eq!(r["active"], true, "one tunnel up: {r}");
    assert_eq!(r["tunnel"], other, "one tunnel up: {r}");
    assert!(members(&r).is_empty(), "one tunnel up: {r}");
    assert_eq!(lab.ping_through("after failover"), other);
    check_spread("static over one", Some(down));

    // 4. The other goes down too: the route is withdrawn (spec § 10.5:
    //    routed while the connection is UP), nothing answers.
    let (ok, out) = lab.swanctl(&format!("--terminate --ike vpn{other} --timeout 10"));
    assert!(ok, "swanctl --terminate: {out}\n{}", lab.diagnostics());
    wait_tunnel(other, false, "both terminated");
    let r = static_route();
    assert_eq!(r["active"], false, "both down: {r}");
    assert!(r["tunnel"].is_null(), "both down: {r}");
    assert!(
        !lab.vpc.sh_ok(&format!("ping -c 2 -W 1 {CGW_LAN}")),
        "an answer with both tunnels down\n{}",
        lab.diagnostics()
    );

    // 5. Both return: tunnel 0 is the primary again.
    lab.initiate(other);
    wait_tunnel(other, true, "back");
    let r = static_route();
    assert_eq!(r["tunnel"], other, "one back: {r}");
    lab.initiate(down);
    wait_tunnel(down, true, "back");
    let r = static_route();
    assert_eq!(r["active"], true, "both up again: {r}");
    assert_eq!(r["tunnel"], 0, "both up again: {r}");
    assert!(members(&r).is_empty(), "both up again: {r}");
    assert_eq!(lab.ping_through("both back"), 0);
    check_spread("static: the primary again", Some(1));
}
