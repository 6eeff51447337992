//! `vpnd`'s IKE in operation, against a real strongSwan 5.9.8 customer
//! gateway (kernel-libipsec), traffic through the DPDK dataplane:
//!
//! * an IKE_SA_INIT flood from many source addresses while a tunnel
//!   forwards pings: cookies (RFC 7296 § 2.6), no lost ping;
//! * Child SA and IKE SA rekeys with short lifetimes, initiated by
//!   strongSwan and by vpnd, while a fast ping runs: no lost ping
//!   (make-before-break in the worker);
//! * SIGTERM: vpnd sends DELETE for its IKE SAs before it exits;
//! * a Child SA refused with TS_UNACCEPTABLE is retried until the peer,
//!   once fixed, accepts it (issue 17 item 5).
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
//! The lab is [`e2e::swan_lab`]'s.
//!
//! Needs the workspace binaries (`cargo build --workspace --bins`),
//! strongSwan and scapy (`tools/setup.sh`).

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use control::config::{PreSharedKey, TunnelOptions};
use control::ike::SystemRng;
use control::ike::endpoint::Endpoint;
use control::ike::sa::IkeConfig;
use e2e::charon::CharonConf;
use e2e::swan_lab::{Auth, CGW, CGW_LAN, Options, SwanLab, US0, vpn_conf};
use e2e::{Proc, bounded, sh_ok, text, wait_until};

const PSK: &str = "vtx.PSK_0123456789abc";
const CONN: &str = "vpn-ops";
/// Static routing to the gateway's LAN.
const STATIC: &[&str] = &["--routing", "static", "--static-route", "10.1.0.0/16"];

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

/// The lab of `setup`: vpnd puts the outside addresses (and a route and
/// neighbour for the gateway) on the kernel port itself.
fn new_lab(setup: &Setup) -> SwanLab {
    let mut env = Vec::new();
    if let Some(d) = setup.lifetime_divisor {
        env.push(("VPND_IKE_LIFETIME_DIVISOR", d.to_string()));
    }
    if let Some(n) = setup.rekey_packets {
        env.push(("VPND_IKE_REKEY_PACKETS", n.to_string()));
    }
    SwanLab::new(&Options {
        ns: "iko",
        dev: "k",
        gateway: "id = \"tgw-ops\"",
        vpnd_env: &env,
        charon: CharonConf {
            log: "default = 1 ike = 2",
            ..CharonConf::default()
        },
        swanctl_conf: &vpn_conf(
            Auth::Psk(PSK),
            "aes128gcm16-ecp256",
            setup.ike_extra,
            setup.child_extra,
        ),
        conn: CONN,
        ..Options::default()
    })
}

/// The connection (static routing to the gateway's LAN, our PSK on
/// tunnel 0), strongSwan's configuration loaded and the tunnel up
/// (strongSwan initiates), pings passing.
fn tunnel_up(lab: &SwanLab, options: &[&str]) {
    lab.create_connection("cgw-ops", &[], STATIC);
    lab.set_tunnel_options(0, &[&format!("pre_shared_key={PSK}")]);
    for o in options {
        lab.set_tunnel_options(0, &[o]);
    }
    lab.load_swanctl();
    lab.initiate();
    lab.wait_status(0, "UP", "strongSwan initiates");
    // The VPC host resolves vpnd's inside address, and a first ping
    // goes through (the worker may be descheduled on a loaded machine).
    assert!(
        wait_until(Duration::from_secs(30), || lab
            .vpc
            .sh_ok(&format!("ping -c 1 -W 2 {CGW_LAN} >/dev/null"))),
        "no ping through the tunnel\n{}",
        lab.diagnostics()
    );
}

/// Starts `ping -c count -i interval` from the VPC host to the
/// gateway's LAN in the background.
fn start_ping(lab: &SwanLab, count: u32, interval: &str) -> Proc {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", lab.vpc.name(), "ping", "-q", "-n"])
        .args(["-c", &count.to_string(), "-i", interval, "-W", "5", CGW_LAN]);
    Proc::spawn(c, &lab.dir.path().join(format!("ping-{count}.log")))
}

/// Waits (bounded) for a ping started by [`start_ping`]; returns (transmitted,
/// received) and the summary.
fn ping_result(mut p: Proc, limit: Duration) -> (u64, u64, String) {
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

fn logs(lab: &SwanLab) -> String {
    lab.ctl_ok(&["logs", "--connection", CONN])
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

/// A scapy sender in the gateway's namespace of `n` well-formed
/// IKE_SA_INIT requests to vpnd's outside address, `inter` seconds apart:
/// every one spoofs the gateway's address (from another port), or with
/// `mixed` every other one comes from one of 200 addresses that are no
/// configured peer. Prints "sent N".
fn sa_init_sender(lab: &SwanLab, name: &str, n: usize, inter: f64, mixed: bool) -> Command {
    let dir = lab.dir.path();
    let hex = dir.join(format!("{name}.hex"));
    std::fs::write(&hex, sa_init_requests(n)).expect("requests");
    let mac = String::from_utf8_lossy(
        &lab.dp
            .sh(&format!("cat /sys/class/net/{}/address", lab.dev('o')))
            .stdout,
    )
    .trim()
    .to_owned();
    let script = dir.join(format!("{name}.py"));
    std::fs::write(
        &script,
        format!(
            r#"
from scapy.all import Ether, IP, UDP, Raw, sendp, conf
conf.verb = 0
reqs = [bytes.fromhex(l) for l in open("{hex}").read().split()]
pkts = []
for i, r in enumerate(reqs):
    if i % 2 == 0 or not {mixed}:
        src, sport = "{CGW}", 10000 + i          # spoofs the configured gateway
    else:
        src, sport = "192.0.2.%d" % (10 + i % 200), 500   # no configured peer
    pkts.append(Ether(dst="{mac}")/IP(src=src, dst="{US0}")/UDP(sport=sport, dport=500)/Raw(r))
sendp(pkts, iface="{kc}", inter={inter})
print("sent", len(pkts))
"#,
            hex = hex.display(),
            mixed = if mixed { "True" } else { "False" },
            kc = lab.dev('c'),
        ),
    )
    .expect("script");
    let mut c = Command::new("ip");
    c.args(["netns", "exec", lab.cgw.name(), "python3"])
        .arg(script);
    c
}

/// A flood of IKE_SA_INIT from many source addresses while the tunnel
/// forwards pings: half of the requests spoof the gateway's address (each
/// would cost vpnd a DH and a half-open SA), half come from 200 addresses
/// that are no configured peer. vpnd switches to cookies once 32 SAs are
/// half-open (the counters and the tunnel's activity log say so), drops
/// the unknown sources unanswered, and the tunnel loses no ping.
#[test]
fn ike_sa_init_flood_gets_cookies_and_the_tunnel_keeps_forwarding() {
    if !testkit::own_process() {
        return;
    }
    if !testkit::scapy_available() {
        return;
    }
    let lab = new_lab(&Setup::default());
    tunnel_up(&lab, &[]);

    let flood = sa_init_sender(&lab, "flood", 400, 0.002, true);

    // The flood's unknown sources are in 192.0.2.0/24: a route back via
    // the tap, or the kernel's strict reverse-path filter would drop them
    // before vpnd sees them (on a concentrator the default route does).
    lab.dp.sh(&format!(
        "ip route replace 192.0.2.0/24 dev {}",
        lab.dev('k')
    ));
    let ping = start_ping(&lab, 300, "0.05");
    std::thread::sleep(Duration::from_secs(2));
    let out = bounded(flood, Duration::from_secs(60));
    assert!(
        out.status.success() && text(&out).contains("sent 400"),
        "flood: {}",
        text(&out)
    );
    let (sent, received, summary) = ping_result(ping, Duration::from_secs(90));

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
    let logs = logs(&lab);
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
    lab: &SwanLab,
    setup: &Setup,
    what: &str,
    seconds: u32,
    rekeys_seen: impl Fn(&SwanLab) -> bool,
) {
    tunnel_up(lab, setup.options);
    let pings = seconds * 100;
    let ping = start_ping(lab, pings, "0.01");
    let (sent, received, summary) =
        ping_result(ping, Duration::from_secs(u64::from(seconds) * 3 + 60));
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
    if !testkit::own_process() {
        return;
    }
    let setup = Setup {
        ike_extra: "  rekey_time = 20s\n  over_time = 60s\n  rand_time = 0s\n",
        child_extra: "   rekey_time = 8s\n   life_time = 60s\n   rand_time = 0s\n",
        ..Setup::default()
    };
    let lab = new_lab(&setup);
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
    if !testkit::own_process() {
        return;
    }
    let setup = Setup {
        lifetime_divisor: Some(30),
        options: &["phase2_lifetime_secs=900", "phase1_lifetime_secs=1800"],
        ..Setup::default()
    };
    let lab = new_lab(&setup);
    rekeys_lose_nothing(&lab, &setup, "vpnd rekeys", 70, |lab| {
        let v = lab.vpnd.output();
        count(&v, "CHILD_SA established and installed") >= 4 && count(&v, "IKE_SA rekeyed") >= 1
    });
}

/// SIGTERM: vpnd closes its tunnels first, so strongSwan receives a
/// DELETE for the IKE SA (and does not wait for DPD), then vpnd exits 0.
#[test]
fn sigterm_sends_delete_to_the_peer_before_exit() {
    if !testkit::own_process() {
        return;
    }
    let mut lab = new_lab(&Setup::default());
    tunnel_up(&lab, &[]);
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
    if !testkit::own_process() {
        return;
    }
    let setup = Setup {
        rekey_packets: Some(1500),
        ..Setup::default()
    };
    let lab = new_lab(&setup);
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
    if !testkit::own_process() {
        return;
    }
    let lab = new_lab(&Setup::default());
    lab.create_connection("cgw-ops", &[], STATIC);
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

/// A well-formed IKE_SA_INIT spoofed from the gateway's address every
/// 2 s, while strongSwan deletes its IKE SA: vpnd (startup action
/// `start`) re-initiates within seconds. Each spoofed request leaves a
/// half-open responder SA; before issue 17's fix vpnd waited for those to
/// time out before re-initiating (31.6 s), and this stream of them kept
/// the tunnel down for good.
#[test]
fn a_spoofed_ike_sa_init_does_not_hold_a_start_tunnel_down() {
    if !testkit::own_process() {
        return;
    }
    if !testkit::scapy_available() {
        return;
    }
    let lab = new_lab(&Setup::default());
    tunnel_up(&lab, &[]);
    lab.vpnd_initiates();

    let mut spoofer = Proc::spawn(
        sa_init_sender(&lab, "spoof", 15, 2.0, false),
        &lab.dir.path().join("spoof.log"),
    );
    // The first spoofed requests are in: vpnd holds half-open SAs.
    std::thread::sleep(Duration::from_secs(3));
    let (ok, out) = lab.swanctl("--terminate --ike vpn");
    assert!(ok, "swanctl --terminate: {out}");
    let t0 = Instant::now();
    let back = wait_until(Duration::from_secs(20), || {
        lab.vpnd.output().contains("re-initiating IKE_SA")
            && lab.tunnel(0)["status"] == "UP"
            && lab.swanctl("--list-sas").1.contains("INSTALLED")
    });
    let took = t0.elapsed();
    let spoofing = spoofer.running();
    spoofer.stop(Duration::from_secs(5));
    assert!(
        back && spoofing,
        "tunnel not back within 20 s of the peer's DELETE while spoofed requests arrived \
         (back: {back}, spoofer still sending: {spoofing})\n{}",
        lab.diagnostics()
    );
    eprintln!("tunnel back {took:?} after the peer's DELETE");
    assert!(
        lab.vpc
            .sh_ok(&format!("ping -c 1 -W 5 {CGW_LAN} >/dev/null")),
        "no ping after re-initiation\n{}",
        lab.diagnostics()
    );
}

/// Dead peer detection with action `clear` on a `start` tunnel: the
/// tunnel goes DOWN and vpnd does not re-initiate (issue 17: it did,
/// which made `clear` the same as `restart`); it comes back when the
/// peer initiates.
#[test]
fn dpd_clear_on_a_start_tunnel_stays_down_until_the_peer_initiates() {
    if !testkit::own_process() {
        return;
    }
    let lab = new_lab(&Setup::default());
    tunnel_up(&lab, &["dpd_timeout_secs=30"]);
    lab.vpnd_initiates();
    // The peer freezes: DPD (30 s, the spec's minimum) declares it dead.
    assert!(
        sh_ok(&format!("kill -STOP {}", lab.charon.id())),
        "SIGSTOP charon"
    );
    let down = wait_until(Duration::from_secs(90), || {
        logs(&lab).contains("AWS tunnel DPD timed out") && lab.tunnel(0)["status"] == "DOWN"
    });
    let _ = sh_ok(&format!("kill -CONT {}", lab.charon.id()));
    assert!(
        down,
        "DPD never took the tunnel down\n{}",
        lab.diagnostics()
    );
    // It has thawed; nothing initiates for 10 s (vpnd's restart delay is
    // 1 s).
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        !lab.vpnd.output().contains("re-initiating IKE_SA"),
        "vpnd re-initiated after DPD clear\n{}",
        lab.diagnostics()
    );
    assert_eq!(lab.tunnel(0)["status"], "DOWN", "{}", lab.diagnostics());
    // strongSwan still thinks its SA is up; it re-initiates when told.
    let _ = lab.swanctl("--terminate --ike vpn --force");
    lab.initiate();
    lab.wait_status(0, "UP", "the peer initiates again");
}

/// Issue 17 item 5: strongSwan's traffic selectors do not match the
/// connection's (its LAN is 10.9.0.0/16, the connection says 10.1.0.0/16):
/// vpnd (startup action `start`) gets TS_UNACCEPTABLE in IKE_AUTH, keeps
/// the IKE SA, shows the reason and the next retry in `show tunnels`, and
/// retries. The operator fixes strongSwan (`swanctl --load-conns`): the
/// tunnel comes UP without restarting vpnd (before the fix it stayed
/// DOWN with an IKE SA and no Child SA forever).
#[test]
fn ts_unacceptable_is_retried_until_the_fixed_peer_accepts() {
    if !testkit::own_process() {
        return;
    }
    let lab = new_lab(&Setup::default());
    lab.create_connection("cgw-ops", &[], STATIC);
    lab.set_tunnel_options(0, &[&format!("pre_shared_key={PSK}")]);
    lab.ctl_ok(&[
        "connection",
        "modify",
        CONN,
        "--set",
        "local_ipv4_network_cidr=10.1.0.0/16",
    ]);
    let good = std::fs::read_to_string(lab.swanctl_conf()).expect("swanctl.conf");
    let wrong = good.replace("local_ts = 10.1.0.0/16", "local_ts = 10.9.0.0/16");
    assert_ne!(good, wrong, "the lab's strongSwan LAN moved");
    std::fs::write(lab.swanctl_conf(), &wrong).expect("write swanctl.conf");
    lab.load_swanctl();
    lab.set_tunnel_options(0, &["startup_action=start"]);

    // The reason and the next retry, with the IKE SA up and the tunnel down.
    let mut t = serde_json::Value::Null;
    let shown = wait_until(Duration::from_secs(30), || {
        t = lab.tunnel(0);
        t["status_detail"]
            .as_str()
            .is_some_and(|d| d.contains("TS_UNACCEPTABLE refused by the peer"))
    });
    assert!(
        shown,
        "no TS_UNACCEPTABLE in show tunnels\n{}",
        lab.diagnostics()
    );
    assert_eq!(t["status"], "DOWN", "{t}");
    assert_eq!(t["ike_phase1_state"], "Established", "{t}");
    let table = lab.ctl_ok(&["show", "tunnels"]);
    assert!(
        table.contains("TS_UNACCEPTABLE") && table.contains("retry in"),
        "{table}"
    );
    assert!(
        logs(&lab).contains("AWS: Traffic Selector: TS_UNACCEPTABLE: received from responder"),
        "{}",
        lab.diagnostics()
    );
    eprintln!("before the fix:\n{table}");

    // The operator fixes the peer; vpnd keeps running.
    let pid = lab.vpnd.id();
    std::fs::write(lab.swanctl_conf(), &good).expect("write swanctl.conf");
    let (ok, out) = lab.swanctl(&format!(
        "--load-conns --file {}",
        lab.swanctl_conf().display()
    ));
    assert!(ok, "swanctl --load-conns: {out}");
    let t0 = Instant::now();
    // Retries at 10 s (CREATE_CHILD_SA) and 30 s (a fresh IKE SA) after
    // the first failure, then 70 s, 150 s, ...
    let up = wait_until(Duration::from_secs(100), || lab.tunnel(0)["status"] == "UP");
    assert!(
        up,
        "tunnel not UP after the peer was fixed\n{}",
        lab.diagnostics()
    );
    eprintln!("UP {:?} after swanctl --load-conns", t0.elapsed());
    assert_eq!(lab.vpnd.id(), pid, "vpnd restarted");
    let t = lab.tunnel(0);
    assert!(t.get("status_detail").is_none(), "{t}");
    assert!(
        wait_until(Duration::from_secs(30), || lab
            .vpc
            .sh_ok(&format!("ping -c 1 -W 2 {CGW_LAN} >/dev/null"))),
        "no ping through the tunnel\n{}",
        lab.diagnostics()
    );
}
