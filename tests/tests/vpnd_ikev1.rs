//! `vpnd` against a real strongSwan 5.9.8 customer gateway speaking IKEv1
//! (Main Mode + Quick Mode, PSK): the tunnel's `ike_versions` pick the
//! version (spec § 3.2), the IPsec SA goes into the DPDK dataplane as an
//! IKEv2 Child SA would, and `show tunnels` says which version is up.
//! strongSwan initiates (startup action `start` is IKEv2 only).
//!
//! The lab is [`e2e::swan_lab`]'s (see `vpnd_strongswan.rs`), namespace
//! tag `v1`, interface letter `w`; vpnd puts the outside addresses on
//! the kernel port itself. kernel-libipsec forces NAT-T, so the IKEv1
//! exchange floats to UDP 4500 and ESP travels in UDP 4500 both ways.
//!
//! Needs the workspace binaries (`cargo build --workspace --bins`) and
//! strongSwan (`../shared/lab/recipes.md` § 0).

use std::time::Duration;

use e2e::charon::CharonConf;
use e2e::swan_lab::{CGW, CGW_LAN, Options, SwanLab, US0};
use e2e::wait_until;

const PSK: &str = "vtv1.PSK_0123456789abc";
const CONN: &str = "vpn-v1";
/// Static routing to the gateway's LAN.
const STATIC: &[&str] = &["--routing", "static", "--static-route", "10.1.0.0/16"];

/// strongSwan's IKEv1 connection `vpn` to tunnel 0 with the Child SA
/// `net` (Quick Mode with PFS), as `swanctl.conf`.
fn ikev1_conf() -> String {
    format!(
        "connections {{\n vpn {{\n  version = 1\n  local_addrs = {CGW}\n  remote_addrs = {US0}\n  proposals = aes256-sha256-modp2048\n  dpd_delay = 10s\n  local {{ auth = psk }}\n  remote {{ auth = psk }}\n  children {{ net {{\n   local_ts = 10.1.0.0/16\n   remote_ts = 198.51.100.0/24\n   esp_proposals = aes128-sha256-modp2048\n   mode = tunnel\n  }} }}\n }}\n}}\nsecrets {{ ike-1 {{ secret = \"{PSK}\" }} }}\n"
    )
}

fn new_lab(swanctl_conf: &str) -> SwanLab {
    SwanLab::new(&Options {
        ns: "v1",
        dev: "w",
        gateway: "id = \"tgw-v1\"",
        charon: CharonConf {
            log: "default = 1 ike = 2",
            ..CharonConf::default()
        },
        swanctl_conf,
        conn: CONN,
        ..Options::default()
    })
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// A tunnel that allows only IKEv1: strongSwan's Main Mode and Quick Mode
/// bring it UP, `show tunnels` says IKEv1, strongSwan holds the SPIs
/// vpnd installed, pings pass both ways. The tunnel is then limited to
/// IKEv2: vpnd deletes the IKEv1 SAs and refuses strongSwan's next Main
/// Mode, and `show tunnels` says why the tunnel is DOWN (before this
/// change an IKEv1-only tunnel was not run at all: nothing answered).
#[test]
fn strongswan_ikev1_brings_an_ikev1_only_tunnel_up_and_traffic_flows() {
    if !testkit::own_process() {
        return;
    }
    let lab = new_lab(&ikev1_conf());
    lab.create_connection("cgw-v1", &[], STATIC);
    lab.set_tunnel_options(
        0,
        &[
            &format!("pre_shared_key={PSK}"),
            r#"ike_versions=["ikev1"]"#,
        ],
    );
    lab.load_swanctl();
    lab.initiate();
    lab.wait_status(0, "UP", "strongSwan initiates IKEv1");
    let t0 = lab.tunnel(0);
    assert_eq!(t0["ike_version"], "ikev1", "{t0}");
    assert_eq!(t0["ike_phase1_state"], "Established", "{t0}");
    assert_eq!(t0["nat_t_detected"], true, "{t0}");
    assert!(t0.get("ike_refused").is_none(), "{t0}");
    let table = lab.ctl_ok(&["show", "tunnels", CONN]);
    assert!(table.contains("IKE") && table.contains("ikev1"), "{table}");
    let (_, list) = lab.swanctl("--list-sas");
    assert!(list.contains("IKEv1"), "{list}");
    let spis = lab.spis(0);
    assert_eq!(spis.len(), 2, "one inbound and one outbound SA: {spis:?}");
    for s in &spis {
        let spi = format!("{s:08x}");
        assert!(
            list.contains(&spi),
            "SPI {spi} not in strongSwan's SAs:\n{list}"
        );
    }
    lab.traffic("IKEv1");
    let logs = lab.ctl_ok(&["logs", "--connection", CONN]);
    for l in [
        "IKE_SA established (IKEv1 Main Mode)",
        "tunnel status changed to UP (IKEv1)",
    ] {
        assert!(
            logs.contains(l) || lab.vpnd.output().contains(l),
            "{l}\n{logs}"
        );
    }

    // Only IKEv2 from now on: the IKEv1 SA is deleted (strongSwan
    // drops it), and its next Main Mode gets no answer.
    lab.set_tunnel_options(0, &[r#"ike_versions=["ikev2"]"#]);
    assert!(
        wait_until(Duration::from_secs(20), || lab.tunnel(0)["status"]
            == "DOWN"
            && !lab.swanctl("--list-sas").1.contains("ESTABLISHED")),
        "the IKEv1 SA stayed\n{}",
        lab.diagnostics()
    );
    let (ok, out) = lab.swanctl("--initiate --child net --timeout 8");
    assert!(!ok, "an IKEv2-only tunnel answered IKEv1: {out}");
    let t0 = lab.tunnel(0);
    assert_eq!(t0["status"], "DOWN", "{t0}");
    let why = t0["ike_refused"].as_str().unwrap_or_default();
    assert!(
        why.contains("uses IKEv1") && why.contains("allows only ikev2"),
        "show tunnels does not say why: {t0}"
    );
    // strongSwan retransmits Main Mode message 1: one log line a minute.
    let v = lab.vpnd.output();
    assert_eq!(count(&v, "IKEv1 datagram dropped"), 1, "{v}");
}

/// `vpnctl config download --device strongswan` for a connection whose
/// tunnel 0 allows only IKEv1 and tunnel 1 both versions: the file has
/// an IKEv1 connection for tunnel 1 and an IKEv2 one for tunnel 2,
/// strongSwan loads it unchanged and brings both up, each tunnel runs
/// its own version, and pings pass.
#[test]
fn downloaded_config_runs_one_ikev1_and_one_ikev2_tunnel() {
    if !testkit::own_process() {
        return;
    }
    let lab = new_lab("");
    lab.create_connection("cgw-v1", &[], STATIC);
    lab.ctl_ok(&[
        "connection",
        "modify",
        CONN,
        "--set",
        "local_ipv4_network_cidr=10.1.0.0/16",
        "--set",
        "remote_ipv4_network_cidr=198.51.100.0/24",
    ]);
    lab.set_tunnel_options(0, &[r#"ike_versions=["ikev1"]"#]);
    let conf = lab.ctl_ok(&["config", "download", CONN, "--device", "strongswan"]);
    let t1 = &conf[conf.find("vpn-v1-tunnel1 {").expect("tunnel 1")..];
    let t2 = &conf[conf.find("vpn-v1-tunnel2 {").expect("tunnel 2")..];
    assert!(
        t1.contains("version = 1") && t2.contains("version = 2"),
        "{conf}"
    );
    let file = lab.dir.path().join("downloaded.conf");
    std::fs::write(&file, &conf).expect("downloaded.conf");
    let (ok, out) = lab.swanctl(&format!("--load-all --file {}", file.display()));
    assert!(ok, "strongSwan refused the downloaded file: {out}\n{conf}");
    for i in 0..2 {
        let up = wait_until(Duration::from_secs(90), || lab.tunnel(i)["status"] == "UP");
        assert!(
            up,
            "tunnel {i} not UP with the downloaded configuration\n{conf}\n{}",
            lab.diagnostics()
        );
    }
    assert_eq!(lab.tunnel(0)["ike_version"], "ikev1");
    assert_eq!(lab.tunnel(1)["ike_version"], "ikev2");
    let (_, sas) = lab.swanctl("--list-sas");
    assert_eq!(count(&sas, "IKEv1"), 1, "{sas}");
    assert_eq!(count(&sas, "IKEv2"), 1, "{sas}");
    assert!(
        wait_until(Duration::from_secs(30), || lab
            .vpc
            .sh_ok(&format!("ping -c 1 -W 2 {CGW_LAN} >/dev/null"))),
        "no ping through the downloaded tunnels\n{}",
        lab.diagnostics()
    );
}

/// vpnd's lifetimes divided by 30 (test mode): the IPsec SA's 900 s
/// become 30 s and the rekey margin's 270 s 9 s, so vpnd starts a Quick
/// Mode 21 s after each IPsec SA is up (strongSwan keeps its long
/// defaults: every rekey is vpnd's); the successor is installed make
/// before break, the old SA deleted 5 s later. A 100/s ping for 40 s
/// across the rekeys loses nothing.
#[test]
fn vpnd_rekeys_ikev1_ipsec_sas_under_a_ping_without_loss() {
    if !testkit::own_process() {
        return;
    }
    let env = [("VPND_IKE_LIFETIME_DIVISOR", "30".to_owned())];
    let conf = ikev1_conf();
    let lab = SwanLab::new(&Options {
        ns: "v1",
        dev: "w",
        gateway: "id = \"tgw-v1\"",
        vpnd_env: &env,
        charon: CharonConf {
            log: "default = 1 ike = 2",
            ..CharonConf::default()
        },
        swanctl_conf: &conf,
        conn: CONN,
        ..Options::default()
    });
    lab.create_connection("cgw-v1", &[], STATIC);
    // The connection's networks are strongSwan's selectors: vpnd's
    // Quick Mode offers them (it does not narrow).
    lab.ctl_ok(&[
        "connection",
        "modify",
        CONN,
        "--set",
        "local_ipv4_network_cidr=10.1.0.0/16",
        "--set",
        "remote_ipv4_network_cidr=198.51.100.0/24",
    ]);
    lab.set_tunnel_options(
        0,
        &[
            &format!("pre_shared_key={PSK}"),
            r#"ike_versions=["ikev1"]"#,
            "phase2_lifetime_secs=900",
        ],
    );
    lab.load_swanctl();
    lab.initiate();
    lab.wait_status(0, "UP", "strongSwan initiates IKEv1");
    assert!(
        lab.vpc_resolves_gw(),
        "the VPC host cannot resolve vpnd\n{}",
        lab.diagnostics()
    );
    let pings = 4000;
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", lab.vpc.name(), "ping", "-q", "-n"])
        .args(["-c", &pings.to_string(), "-i", "0.01", "-W", "5", CGW_LAN]);
    let mut ping = e2e::Proc::spawn(c, &lab.dir.path().join("ping.log"));
    let done = wait_until(Duration::from_secs(180), || !ping.running());
    let out = ping.output();
    assert!(done, "ping still running: {out}");
    let v = lab.vpnd.output();
    let rekeys = count(&v, "reaches its rekey time: starting Quick Mode");
    let installed = count(&v, "CHILD_SA established and installed");
    eprintln!("IKEv1 rekeys by vpnd: {rekeys}, IPsec SAs installed: {installed}; {out}");
    assert!(
        rekeys >= 1 && installed > rekeys,
        "no rekey by vpnd during the ping\n{}",
        lab.diagnostics()
    );
    assert_eq!(lab.tunnel(0)["status"], "UP", "{}", lab.diagnostics());
    assert!(
        out.contains(&format!("{pings} packets transmitted, {pings} received")),
        "pings lost across IKEv1 rekeys: {out}\n{}",
        lab.diagnostics()
    );
}
