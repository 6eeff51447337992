//! Our BGP speaker (`control::bgp::Session` + `Rib`, driven over kernel TCP
//! by the `bgp_speaker` test binary) against a real BIRD 2, directly over a
//! veth pair (no tunnel yet).
//!
//! ```text
//!  [vt-b-us-N] bgp_speaker AS 64512            [vt-b-bird-N] BIRD 2 AS 65000
//!   169.254.21.1/30  fd00::1/126  ── veth ──   169.254.21.2/30  fd00::2/126
//!   advertises 10.2.0.0/16, 2001:db8:2::/48     advertises 10.1.0.0/16, 10.1.1.0/24,
//!                                               2001:db8:1::/48, and 10.66.0.0/16
//!                                               with 64512 in its AS_PATH
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::{Daemon, Netns, require_root, sh, tag, wait_until};

const TIMEOUT: Duration = Duration::from_secs(20);

/// The namespaces, the veth pair and a scratch directory, removed on drop.
struct Lab {
    us: Netns,
    bird_ns: Netns,
    dir: PathBuf,
}

impl Lab {
    fn new() -> Self {
        require_root();
        let t = tag();
        let us = Netns::new(&format!("vt-b-us-{t}"));
        let bird_ns = Netns::new(&format!("vt-b-bird-{t}"));
        let (a, b) = (format!("vb{t}u"), format!("vb{t}b"));
        sh(&format!(
            "ip link add {a} netns {} type veth peer name {b} netns {}",
            us.name(),
            bird_ns.name()
        ));
        us.sh(&format!(
            "ip addr add 169.254.21.1/30 dev {a} && ip addr add fd00::1/126 dev {a} nodad && ip link set {a} up"
        ));
        bird_ns.sh(&format!(
            "ip addr add 169.254.21.2/30 dev {b} && ip addr add fd00::2/126 dev {b} nodad && ip link set {b} up"
        ));
        let dir = std::env::temp_dir().join(format!("vt-b-bgp-{t}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self { us, bird_ns, dir }
    }

    fn bird(&self, extra_static: &str) -> Daemon {
        let conf = self.dir.join("bird.conf");
        std::fs::write(&conf, bird_conf(extra_static)).expect("bird.conf");
        let ctl = self.dir.join("bird.ctl");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.bird_ns.name(), "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&ctl);
        Daemon::spawn(cmd, "bird")
    }

    fn birdc(&self, what: &str) -> String {
        let ctl = self.dir.join("bird.ctl");
        let out = Command::new("ip")
            .args(["netns", "exec", self.bird_ns.name(), "birdc", "-s"])
            .arg(&ctl)
            .args(what.split(' '))
            .output()
            .expect("birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn speaker(&self, extra: &[&str]) -> (Daemon, PathBuf) {
        let out = self.dir.join("speaker.out");
        let _ = std::fs::remove_file(&out);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.us.name()])
            .arg(env!("CARGO_BIN_EXE_bgp_speaker"))
            .args([
                "--local-addr",
                "169.254.21.1",
                "--peer-addr",
                "169.254.21.2",
                "--local-as",
                "64512",
                "--peer-as",
                "65000",
                "--local-v6",
                "fd00::1",
                "--connected",
                "169.254.21.0/30",
                "--connected",
                "fd00::/126",
                "--ipv6",
                "--advertise",
                "10.2.0.0/16",
                "--advertise",
                "2001:db8:2::/48",
                "--out",
            ])
            .arg(&out)
            .args(extra);
        (Daemon::spawn(cmd, "bgp_speaker"), out)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bird_conf(extra_static: &str) -> String {
    format!(
        r#"
router id 169.254.21.2;
log stderr all;
protocol device {{ }}
protocol direct {{ ipv4; ipv6; }}
protocol static s4 {{
  ipv4;
  route 10.1.0.0/16 blackhole;
  {extra_static}
}}
protocol static s4b {{
  ipv4;
  route 10.1.1.0/24 blackhole;
}}
protocol static loop4 {{
  ipv4;
  route 10.66.0.0/16 blackhole;
}}
protocol static s6 {{
  ipv6;
  route 2001:db8:1::/48 blackhole;
}}
filter to_us4 {{
  if proto = "loop4" then {{ bgp_path.prepend(64512); accept; }}
  if source = RTS_STATIC then accept;
  reject;
}}
protocol bgp cgw {{
  local 169.254.21.2 as 65000;
  neighbor 169.254.21.1 as 64512;
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 5;
  ipv4 {{ import all; export filter to_us4; }};
  ipv6 {{ import all; export where source = RTS_STATIC; next hop address fd00::2; }};
}}
"#
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn wait_for(path: &Path, what: &str) {
    assert!(
        wait_until(TIMEOUT, || read(path).contains(what)),
        "speaker never wrote {what:?}; its output:\n{}",
        read(path)
    );
}

/// Session Established, routes both ways in IPv4 and IPv6, End-of-RIB both
/// ways, the own-AS route denied, and a BIRD withdrawal reaching our RIB.
#[test]
fn bird_exchange_routes_both_ways() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new();
    let mut bird = lab.bird("");
    let (mut speaker, out) = lab.speaker(&[]);
    wait_for(&out, "STATE Established");
    wait_for(
        &out,
        "from OpenConfirm to Established with neighbor 169.254.21.2",
    );
    // BIRD's routes in our RIB, IPv4 and IPv6 (MP-BGP), next hops on the /30 and /126.
    wait_for(&out, "RIB ADD 10.1.0.0/16 via 169.254.21.2 as-path 65000");
    wait_for(&out, "RIB ADD 10.1.1.0/24 via 169.254.21.2 as-path 65000");
    wait_for(&out, "RIB ADD 2001:db8:1::/48 via fd00::2 as-path 65000");
    wait_for(&out, "EOR ipv4");
    wait_for(&out, "EOR ipv6");
    wait_for(&out, "sent an End-of-RIB message to neighbor 169.254.21.2");
    // The route carrying our AS was denied with the spec's text.
    wait_for(&out, "prefix=10.66.0.0/16 asPath=\"65000 64512\"");
    let text = read(&out);
    assert!(
        text.lines().any(|l| l.contains("prefix=10.66.0.0/16")
            && l.contains("details=\"DENIED due to: as-path contains our own AS\"")),
        "{text}"
    );
    assert!(!text.contains("RIB ADD 10.66.0.0/16"), "{text}");
    // Our routes in BIRD.
    assert!(
        wait_until(TIMEOUT, || {
            let r = lab.birdc("show route protocol cgw");
            r.contains("10.2.0.0/16") && r.contains("2001:db8:2::/48")
        }),
        "BIRD did not learn our routes: {}",
        lab.birdc("show route protocol cgw all")
    );
    let detail = lab.birdc("show route protocol cgw all");
    assert!(detail.contains("BGP.as_path: 64512"), "{detail}");
    assert!(detail.contains("BGP.med: 100"), "{detail}");
    assert!(detail.contains("BGP.next_hop: 169.254.21.1"), "{detail}");
    assert!(detail.contains("fd00::1"), "{detail}");
    // BIRD withdraws 10.1.1.0/24: our RIB drops it.
    // Shown with `--no-capture`.
    eprintln!("--- BIRD:\n{detail}\n--- speaker:\n{}", read(&out));
    lab.birdc("disable s4b");
    wait_for(&out, "RIB DEL 10.1.1.0/24");
    wait_for(&out, "status=WITHDRAWN prefix=10.1.1.0/24");
    assert!(speaker.is_running() && bird.is_running());
    // BIRD shuts the session down administratively: we log its Cease and
    // drop everything learned.
    lab.birdc("disable cgw");
    wait_for(
        &out,
        "received notification 6/2 (Cease/Administrative Shutdown) from neighbor 169.254.21.2",
    );
    wait_for(&out, "RIB DEL 10.1.0.0/16");
    wait_for(&out, "RIB DEL 2001:db8:1::/48");
    drop(speaker);
    drop(bird);
}

/// More prefixes than our limit: warning, Cease 6/1 with the spec's lines,
/// and BIRD sees the notification.
#[test]
fn bird_prefix_limit_exceeded_ceases() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new();
    let many: String = (0..6)
        .map(|i| format!("route 10.9.{i}.0/24 blackhole;\n  "))
        .collect();
    let bird = lab.bird(&many);
    // BIRD sends 1 + 6 + 1 (s4b) IPv4 routes plus one IPv6 (the own-AS
    // route is denied and not counted): 9 accepted > 8.
    let (_speaker, out) = lab.speaker(&["--max-prefixes", "8"]);
    wait_for(
        &out,
        "detected maximum-prefix limit exceeded - received 9 prefixes from neighbor 169.254.21.2, limit 8",
    );
    assert!(
        !read(&out).contains("RIB ADD 10.9.5.0/24 via")
            || read(&out).contains("RIB DEL 10.9.5.0/24")
    );
    wait_for(
        &out,
        "sent notification 6/1 (Cease/Maximum Number of Prefixes Reached) to neighbor 169.254.21.2",
    );
    wait_for(&out, "from Established to Idle with neighbor 169.254.21.2");
    // BIRD logged our NOTIFICATION (its last error is overwritten later by
    // our refusals, Cease 6/5, while we back off for 60 s).
    std::thread::sleep(Duration::from_millis(500));
    let log = bird.stop();
    let log = String::from_utf8_lossy(&log.stderr);
    assert!(
        log.contains("Received: Maximum number of prefixes reached"),
        "{log}"
    );
}
