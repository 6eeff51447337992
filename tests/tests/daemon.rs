//! The appliance daemon `vpnd` and its CLI `vpnctl`, end to end: the real
//! binaries, talking over the real management socket.
//!
//! ```text
//!   test ──► vpnctl (child process, maybe as uid 65534) ──unix socket──► vpnd ──► <dir>/vpnd.snapshot + vpnd.journal
//!                                                                              (from <dir>/vpnd.toml when absent)
//!   test ──► raw UnixStream (garbage, truncated, oversized lines) ──────►  │
//!   test ──► kill -9 / SIGTERM ──────────────────────────────────────────►  │
//! ```
//!
//! Most tests run `vpnd --no-dataplane` (the in-memory stand-in; no DPDK,
//! fast); `the_real_dataplane_*` runs it on DPDK virtual devices. Every
//! test works in its own directory under the system temp dir and removes it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::{Netns, bin, require_root, tag, veth, wait_until};
use serde_json::Value;

/// A test directory with a `vpnd` configuration, removed on drop.
struct Setup {
    dir: PathBuf,
    /// Run vpnd in this network namespace.
    netns: Option<String>,
}

impl Setup {
    /// A directory `vt-d-<name>-<tag>` holding `vpnd.toml` with the
    /// socket inside the directory, metrics off, and `extra` appended.
    fn new(name: &str, socket_group: &str, extra: &str) -> Self {
        let s = Self::empty(name);
        let config = format!(
            r#"
[gateway]
id = "tgw-test"
asn = 64512
outside_addresses = ["198.51.100.10", "198.51.100.11"]

[dataplane]
worker_lcores = [1]

[[dataplane.ports]]
name = "outside"
device = "net_null0"
role = "outside"

[[dataplane.ports]]
name = "inside"
device = "net_null1"
role = "inside"

[management]
socket_path = "{socket}"
socket_group = "{socket_group}"

[metrics]
enabled = false
{extra}"#,
            socket = s.socket().display(),
        );
        std::fs::write(s.config(), config).unwrap();
        s
    }

    /// The directory only; the caller writes the configuration.
    fn empty(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vt-d-{name}-{}", tag()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir, netns: None }
    }

    fn config(&self) -> PathBuf {
        self.dir.join("vpnd.toml")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// Start `vpnd --no-dataplane` and wait until it answers.
    fn start(&self) -> Vpnd {
        self.start_with(&["--no-dataplane"])
    }

    fn start_with(&self, args: &[&str]) -> Vpnd {
        let log = self.dir.join(format!("vpnd-{}.log", now_ms()));
        let mut cmd = match &self.netns {
            None => Command::new(bin("vpnd")),
            Some(ns) => {
                // `ip netns exec` execs vpnd: the pid stays vpnd's.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("vpnd"));
                c
            }
        };
        let child = cmd
            .arg("--config")
            .arg(self.config())
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start vpnd");
        let mut d = Vpnd {
            child: Some(child),
            log,
        };
        let up = wait_until(Duration::from_secs(30), || {
            d.running() && self.ctl(&["ping"]).status.success()
        });
        assert!(up, "vpnd did not come up:\n{}", d.log_text());
        d
    }

    /// Run `vpnctl --socket <ours> args…` and return its output.
    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_as(None, args)
    }

    /// Like [`ctl`](Self::ctl); with `Some((uid, gid))`, through `setpriv`
    /// as that user, without supplementary groups.
    fn ctl_as(&self, user: Option<(u32, u32)>, args: &[&str]) -> Output {
        let mut c = match user {
            None => Command::new(bin("vpnctl")),
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(bin("vpnctl"));
                c
            }
        };
        c.arg("--socket").arg(self.socket()).args(args);
        c.stdin(Stdio::null());
        run_bounded(c, Duration::from_secs(30))
    }

    /// `vpnctl --json args…`, which must succeed, parsed.
    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl(&a);
        assert!(out.status.success(), "vpnctl {args:?}: {}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "vpnctl --json {args:?} printed no JSON ({e}): {}",
                describe(&out)
            )
        })
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `vpnd`; SIGKILLed on drop if still running.
struct Vpnd {
    child: Option<Child>,
    log: PathBuf,
}

impl Vpnd {
    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9` and reap.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("vpnd ignored SIGTERM for 20 s:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Vpnd {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// Run `c`, killing it after `limit`.
fn run_bounded(mut c: Command, limit: Duration) -> Output {
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    let deadline = Instant::now() + limit;
    while !waiter.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !waiter.is_finished() {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    waiter.join().expect("waiter").expect("wait")
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not signalled")
}

/// The two tunnels of a connection, from `show connections --json`.
fn tunnels_of(s: &Setup, conn: &str) -> Vec<Value> {
    let v = s.json(&["show", "connections", conn]);
    v["response"]["connections"][0]["tunnels"]
        .as_array()
        .expect("tunnels")
        .clone()
}

fn create_gateway_and_connection(s: &Setup) {
    let out = s.ctl(&[
        "customer-gateway",
        "create",
        "cgw-e2e",
        "--ip-address",
        "203.0.113.20",
        "--bgp-asn",
        "65000",
    ]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let out = s.ctl(&[
        "connection",
        "create",
        "vpn-e2e",
        "--customer-gateway",
        "cgw-e2e",
        "--routing",
        "static",
        "--static-route",
        "10.1.0.0/16",
    ]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
}

#[test]
fn create_show_modify_delete_through_the_cli() {
    if !testkit::own_process() {
        return;
    }
    require_root();
    let s = Setup::new("cli", "vpnd", "");
    let mut d = s.start();
    create_gateway_and_connection(&s);

    // show: the human table and the JSON agree on what exists.
    let table = s.ctl(&["show", "tunnels"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{}", describe(&table));
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("vpn-e2e") && l.contains("DOWN"))
            .count(),
        2,
        "two DOWN tunnels expected:\n{text}"
    );
    let v = s.json(&["show", "tunnels", "vpn-e2e"]);
    let tunnels = v["response"]["tunnels"].as_array().expect("tunnels");
    assert_eq!(tunnels.len(), 2);
    for (i, t) in tunnels.iter().enumerate() {
        assert_eq!(t["tunnel"], i);
        assert_eq!(t["status"], "DOWN");
        assert_eq!(t["peer_ip_address"], "203.0.113.20");
    }
    assert_eq!(tunnels[0]["outside_ip_address"], "198.51.100.10");
    assert_eq!(tunnels[1]["outside_ip_address"], "198.51.100.11");
    // Keys are assigned but never shown.
    let conn = &s.json(&["show", "connections"])["response"]["connections"][0];
    assert_eq!(conn["id"], "vpn-e2e");
    assert_eq!(conn["pre_shared_key_set"], serde_json::json!([true, true]));
    assert!(conn["tunnels"][0].get("pre_shared_key").is_none());
    // Defaults of the spec were applied.
    assert_eq!(conn["tunnels"][0]["phase2_lifetime_secs"], 3600);
    assert_eq!(conn["tunnels"][0]["dpd_timeout_action"], "clear");

    // modify-vpn-tunnel-options (spec flow): several options at once.
    let out = s.ctl(&[
        "modify-tunnel-options",
        "vpn-e2e",
        "1",
        "--set",
        "phase2_lifetime_secs=1800",
        "--set",
        "dpd_timeout_action=restart",
        "--set",
        "startup_action=start",
        "--set",
        r#"phase1_encryption_algorithms=["AES256-GCM-16"]"#,
        "--set",
        "phase1_dh_groups=[20, 21]",
    ]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let t = tunnels_of(&s, "vpn-e2e");
    assert_eq!(t[1]["phase2_lifetime_secs"], 1800);
    assert_eq!(t[1]["dpd_timeout_action"], "restart");
    assert_eq!(t[1]["startup_action"], "start");
    assert_eq!(
        t[1]["phase1_encryption_algorithms"],
        serde_json::json!(["AES256-GCM-16"])
    );
    assert_eq!(t[1]["phase1_dh_groups"], serde_json::json!([20, 21]));
    // Tunnel 0 untouched.
    assert_eq!(t[0]["phase2_lifetime_secs"], 3600);
    // And persisted: the exported configuration has it.
    let out = s.ctl(&["config", "export"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let file = String::from_utf8_lossy(&out.stdout);
    assert!(file.contains("phase2_lifetime_secs = 1800"), "{file}");

    // Static routes. One that would capture the appliance's own traffic
    // (the default route covers its outside addresses and the tunnels'
    // inside /30s) is refused with the field it collides with.
    let out = s.ctl(&["static-route", "add", "vpn-e2e", "0.0.0.0/0"]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("static_routes[1]") && err.contains("gateway.outside_addresses[0]"),
        "{err}"
    );
    assert_eq!(
        code(&s.ctl(&["static-route", "add", "vpn-e2e", "10.2.0.0/16"])),
        0
    );
    let routes = s.json(&["show", "routes", "vpn-e2e"]);
    let prefixes: Vec<&str> = routes["response"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["prefix"].as_str())
        .collect();
    assert_eq!(prefixes, ["10.1.0.0/16", "10.2.0.0/16"]);
    assert_eq!(
        code(&s.ctl(&["static-route", "delete", "vpn-e2e", "10.1.0.0/16"])),
        0
    );

    // Counters and the device configuration are served.
    let stats = s.json(&["show", "stats"]);
    assert_eq!(stats["response"]["type"], "stats");
    let dl = s.ctl(&["config", "download", "vpn-e2e", "--device", "strongswan"]);
    assert!(dl.status.success(), "{}", describe(&dl));
    assert!(String::from_utf8_lossy(&dl.stdout).contains("connections {"));

    // Deleting the gateway while the connection uses it is refused.
    let out = s.ctl(&["customer-gateway", "delete", "cgw-e2e"]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert_eq!(code(&s.ctl(&["connection", "delete", "vpn-e2e"])), 0);
    assert_eq!(code(&s.ctl(&["customer-gateway", "delete", "cgw-e2e"])), 0);
    let v = s.json(&["show", "connections"]);
    assert_eq!(v["response"]["connections"], serde_json::json!([]));
    // Unknown object: rejected, exit code 2, not_found.
    let out = s.ctl(&["--json", "connection", "delete", "vpn-e2e"]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("error reply as JSON");
    assert_eq!(v["error"]["code"], "not_found");
    assert!(v["id"].is_u64(), "the daemon's own reply line: {v}");

    // The state survives a clean restart.
    assert!(d.terminate().success(), "{}", d.log_text());
    assert!(!s.socket().exists(), "SIGTERM must remove the socket");
    let _d = s.start();
    let v = s.json(&["show", "customer-gateways"]);
    assert_eq!(v["response"]["customer_gateways"], serde_json::json!([]));
}

#[test]
fn validation_errors_name_field_value_and_range_with_exit_code_2() {
    if !testkit::own_process() {
        return;
    }
    require_root();
    let s = Setup::new("valid", "vpnd", "");
    let _d = s.start();
    create_gateway_and_connection(&s);
    let before = std::fs::read(s.config()).unwrap();

    // Out of range, and a second rule broken in the same request: both
    // are reported, nothing is applied.
    let out = s.ctl(&[
        "modify-tunnel-options",
        "vpn-e2e",
        "0",
        "--set",
        "phase2_lifetime_secs=5000",
        "--set",
        "replay_window_packets=32",
    ]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("connections[vpn-e2e].tunnels[0].phase2_lifetime_secs")
            && err.contains("5000")
            && err.contains("900..=3600"),
        "{err}"
    );
    assert!(
        err.contains("replay_window_packets") && err.contains("32") && err.contains("64..=2048"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(s.config()).unwrap(),
        before,
        "nothing written"
    );
    assert_eq!(tunnels_of(&s, "vpn-e2e")[0]["phase2_lifetime_secs"], 3600);

    // The same with --json: the error reply parses and lists the fields.
    let out = s.ctl(&[
        "--json",
        "modify-tunnel-options",
        "vpn-e2e",
        "0",
        "--set",
        "phase2_lifetime_secs=5000",
    ]);
    assert_eq!(code(&out), 2);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON error reply");
    assert_eq!(v["error"]["code"], "validation_failed");
    let e = &v["error"]["errors"][0];
    assert_eq!(
        e["field"],
        "connections[vpn-e2e].tunnels[0].phase2_lifetime_secs"
    );
    assert_eq!(e["value"], "5000");
    assert_eq!(e["allowed"], "900..=3600");

    // Reserved inside CIDR and a bad pre-shared key.
    let out = s.ctl(&[
        "modify-tunnel-options",
        "vpn-e2e",
        "0",
        "--set",
        "inside_ipv4_cidr=169.254.169.252/30",
    ]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside_ipv4_cidr"));
    let out = s.ctl(&[
        "modify-tunnel-options",
        "vpn-e2e",
        "0",
        "--set",
        "pre_shared_key=0startswithzero",
    ]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pre_shared_key"), "{err}");
    assert!(
        !err.contains("0startswithzero"),
        "keys are never echoed: {err}"
    );

    // Usage errors (exit 1) never reach the daemon.
    let out = s.ctl(&["modify-tunnel-options", "vpn-e2e", "2", "--set", "x=1"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let out = s.ctl(&["modify-tunnel-options", "vpn-e2e", "0", "--set", "nokey"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let out = s.ctl(&[
        "modify-tunnel-options",
        "vpn-e2e",
        "0",
        "--set",
        "no_such_option=1",
    ]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert_eq!(
        std::fs::read(s.config()).unwrap(),
        before,
        "nothing written"
    );
}

#[test]
fn unreachable_daemon_is_exit_code_3() {
    if !testkit::own_process() {
        return;
    }
    require_root();
    let s = Setup::new("unreach", "vpnd", "");
    let out = s.ctl(&["ping"]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}

/// Concurrent `vpnctl` calls change the configuration while `vpnd` is
/// killed with SIGKILL at a different moment in each round. After a
/// restart every change that was acknowledged (exit 0) is there, loaded
/// from the store (a record torn by the kill is dropped, never a failed
/// start), and the operator's TOML file is untouched.
#[test]
fn acknowledged_changes_survive_kill_9_during_a_burst() {
    if !testkit::own_process() {
        return;
    }
    require_root();
    let s = Arc::new(Setup::new("crash", "vpnd", ""));
    let toml_before = std::fs::read_to_string(s.config()).unwrap();
    {
        let _d = s.start();
        create_gateway_and_connection(&s);
    }
    let mut acked_gateways: Vec<String> = Vec::new();
    let mut acked_dpd: u64 = 40;
    for round in 0..4u64 {
        let mut d = s.start();
        let log = d.log_text();
        assert!(log.contains("(store, generation"), "round {round}: {log}");
        // Everything acknowledged before is still there.
        check_acknowledged(&s, &acked_gateways, acked_dpd);

        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for w in 0..3u64 {
            let (s, stop, acks) = (s.clone(), stop.clone(), acks.clone());
            workers.push(std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 500 {
                    let id = format!("cgw-r{round}-w{w}-{n}");
                    let ip = format!("203.0.113.{}", 1 + (n % 200));
                    let out = s.ctl(&["cgw", "create", &id, "--ip-address", &ip]);
                    match code(&out) {
                        0 => {
                            acked.push(id);
                            acks.fetch_add(1, Ordering::Relaxed);
                        }
                        3 => break, // the daemon is gone
                        c => panic!("unexpected exit code {c}: {}", describe(&out)),
                    }
                    n += 1;
                }
                acked
            }));
        }
        // A fourth client rewrites one tunnel option with increasing values.
        let dpd = {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last_acked = None;
                let mut v = 41 + round * 1000;
                while !stop.load(Ordering::Relaxed) && v < 41 + round * 1000 + 500 {
                    let set = format!("dpd_timeout_secs={v}");
                    let out = s.ctl(&["modify-tunnel-options", "vpn-e2e", "0", "--set", &set]);
                    match code(&out) {
                        0 => last_acked = Some(v),
                        3 => break,
                        c => panic!("unexpected exit code {c}: {}", describe(&out)),
                    }
                    v += 1;
                }
                last_acked
            })
        };
        // Kill after a different number of acknowledged changes each
        // round, while the clients keep going.
        let target = usize::try_from(3 + 11 * round).unwrap();
        let reached = wait_until(Duration::from_secs(60), || {
            acks.load(Ordering::Relaxed) >= target
        });
        std::thread::sleep(Duration::from_millis(7 * round));
        let pid = d.pid();
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        let mut this_round = 0;
        for w in workers {
            let acked = w.join().expect("client thread");
            this_round += acked.len();
            acked_gateways.extend(acked);
        }
        if let Some(v) = dpd.join().expect("dpd thread") {
            acked_dpd = v;
        }
        assert!(
            reached && this_round >= target,
            "round {round}: only {this_round} change(s) acknowledged before kill -9 of {pid}"
        );
        // The operator's file is only read when there is no store.
        assert_eq!(std::fs::read_to_string(s.config()).unwrap(), toml_before);
        assert!(s.dir.join("vpnd.snapshot").exists() && s.dir.join("vpnd.journal").exists());
    }
    let _d = s.start();
    check_acknowledged(&s, &acked_gateways, acked_dpd);
}

/// A change torn by a crash in the middle of its journal append (simulated
/// by appending part of a record after a kill -9): the restart drops the
/// torn record with a log line, keeps every acknowledged change, and the
/// journal takes changes again after it.
#[test]
fn a_torn_journal_record_is_dropped_and_acknowledged_changes_are_kept() {
    if !testkit::own_process() {
        return;
    }
    require_root();
    let s = Setup::new("torn", "vpnd", "");
    let mut d = s.start();
    create_gateway_and_connection(&s);
    let acked: Vec<String> = (0..5)
        .map(|i| {
            let id = format!("cgw-torn-{i}");
            let ip = format!("203.0.113.{}", 100 + i);
            let out = s.ctl(&["cgw", "create", &id, "--ip-address", &ip]);
            assert_eq!(code(&out), 0, "{}", describe(&out));
            id
        })
        .collect();
    d.kill9();
    let journal = s.dir.join("vpnd.journal");
    let whole = std::fs::read(&journal).unwrap();
    // Half of a record: a length, a checksum and some of the payload.
    let mut torn = whole.clone();
    torn.extend_from_slice(&200u32.to_le_bytes());
    torn.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    torn.extend_from_slice(br#"{"op":"put_customer_gateway","customer_gat"#);
    std::fs::write(&journal, &torn).unwrap();

    let d = s.start();
    let log = d.log_text();
    assert!(
        log.contains("dropped a torn or corrupt last record")
            && log.contains(&format!("from offset {}", whole.len())),
        "{log}"
    );
    check_acknowledged(&s, &acked, 40);
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        whole,
        "cut back to the last whole record"
    );
    // Changes are journaled after the cut and survive another crash.
    let out = s.ctl(&[
        "cgw",
        "create",
        "cgw-after",
        "--ip-address",
        "203.0.113.200",
    ]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    drop(d);
    let d = s.start();
    assert!(!d.log_text().contains("dropped"), "{}", d.log_text());
    let mut all = acked;
    all.push("cgw-after".to_owned());
    check_acknowledged(&s, &all, 40);
}

/// `vpnctl config export` writes the configuration as TOML, `config
/// import` replaces it (after validation: a broken file changes nothing),
/// and the imported configuration survives a restart.
#[test]
fn config_export_and_import_round_trip() {
    if !testkit::own_process() {
        return;
    }
    require_root();
    let s = Setup::new("export", "vpnd", "");
    let mut d = s.start();
    create_gateway_and_connection(&s);
    let exported = s.dir.join("exported.toml");
    let out = s.ctl(&["config", "export", "--output", exported.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = std::fs::read_to_string(&exported).unwrap();
    assert!(
        text.contains("cgw-e2e") && text.contains("vpn-e2e"),
        "{text}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&exported).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the export holds pre-shared keys");
    }
    let before = s.json(&["show", "connections"])["response"].clone();

    // Change things, then import the exported file: back as exported.
    assert_eq!(code(&s.ctl(&["connection", "delete", "vpn-e2e"])), 0);
    assert_eq!(code(&s.ctl(&["cgw", "delete", "cgw-e2e"])), 0);
    let out = s.ctl(&["config", "import", exported.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(s.json(&["show", "connections"])["response"], before);

    // A broken file is refused with the field path; nothing changes.
    let broken = s.dir.join("broken.toml");
    std::fs::write(&broken, text.replace("asn = 64512", "asn = 1")).unwrap();
    let out = s.ctl(&["config", "import", broken.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway.asn"), "{err}");
    assert_eq!(s.json(&["show", "connections"])["response"], before);

    // Imported state is the store's: it survives a restart.
    assert!(d.terminate().success(), "{}", d.log_text());
    let _d = s.start();
    assert_eq!(s.json(&["show", "connections"])["response"], before);
}

fn check_acknowledged(s: &Setup, gateways: &[String], dpd_at_least: u64) {
    let v = s.json(&["show", "customer-gateways"]);
    let have: Vec<&str> = v["response"]["customer_gateways"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["id"].as_str())
        .collect();
    let missing: Vec<&String> = gateways
        .iter()
        .filter(|g| !have.contains(&g.as_str()))
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    let dpd = tunnels_of(s, "vpn-e2e")[0]["dpd_timeout_secs"]
        .as_u64()
        .unwrap();
    // A change may land on disk without its acknowledgement (killed in
    // between), never the other way round.
    assert!(
        dpd >= dpd_at_least,
        "dpd_timeout_secs {dpd} < acknowledged {dpd_at_least}"
    );
}

/// Only root, the daemon's user and the socket group may use the API.
#[test]
fn api_access_from_a_non_permitted_user_is_refused() {
    if !testkit::own_process() {
        return;
    }
    require_root();
    // The socket group is "nogroup" (gid 65534) here so that both sides of
    // the rule can be shown with setpriv.
    let s = Setup::new("perm", "nogroup", "");
    let _d = s.start();
    // The socket directory must be reachable by the unprivileged users.
    std::fs::set_permissions(&s.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let meta = std::fs::metadata(s.socket()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o660
    );

    // uid/gid 1 ("daemon"), no supplementary groups: the file mode already
    // refuses it (connect fails: exit 3).
    let out = s.ctl_as(Some((1, 1)), &["ping"]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ermission denied"),
        "{}",
        describe(&out)
    );

    // A member of the socket group is allowed.
    let out = s.ctl_as(Some((65534, 65534)), &["ping"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));

    // Open the file mode to everyone: the daemon's own SO_PEERCRED check
    // still refuses the non-member, with a permission_denied reply.
    std::fs::set_permissions(
        s.socket(),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let out = s.ctl_as(
        Some((1, 1)),
        &[
            "--json",
            "cgw",
            "create",
            "cgw-intruder",
            "--ip-address",
            "203.0.113.9",
        ],
    );
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON error reply");
    assert_eq!(
        v["error"]["code"],
        "permission_denied",
        "{}",
        describe(&out)
    );
    let v = s.json(&["show", "customer-gateways"]);
    assert_eq!(v["response"]["customer_gateways"], serde_json::json!([]));
}

/// One request line on a raw connection, one reply line back.
fn exchange(stream: &mut BufReader<UnixStream>, line: &[u8]) -> Value {
    stream.get_mut().write_all(line).unwrap();
    read_reply(stream)
}

fn read_reply(stream: &mut BufReader<UnixStream>) -> Value {
    let mut reply = String::new();
    stream.read_line(&mut reply).expect("a reply line");
    assert!(
        reply.ends_with('\n'),
        "reply not newline-terminated: {reply:?}"
    );
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("reply {reply:?}: {e}"))
}

fn connect(s: &Setup) -> BufReader<UnixStream> {
    let c = UnixStream::connect(s.socket()).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    BufReader::new(c)
}

const PING: &[u8] = b"{\"version\":1,\"id\":42,\"request\":{\"type\":\"ping\"}}\n";

fn assert_pong(v: &Value) {
    assert_eq!(v["id"], 42, "{v}");
    assert_eq!(v["response"]["type"], "pong", "{v}");
}

#[test]
fn bad_input_on_the_socket_gets_error_replies_and_the_daemon_keeps_serving() {
    if !testkit::own_process() {
        return;
    }
    require_root();
    let s = Setup::new("fuzz", "vpnd", "");
    let mut d = s.start();
    let mut c = connect(&s);

    let cases: &[(&[u8], &str)] = &[
        (b"garbage\n", "bad_request"),
        (b"\x00\xff\xfe not utf-8\n", "bad_request"),
        (b"[1,2,3]\n", "bad_request"),
        (b"{\"version\":1,\"id\":1}\n", "bad_request"),
        (b"{\"version\":1,\"id\":2,\"request\":{\"type\":\"format_disk\"}}\n", "bad_request"),
        (b"{\"version\":1,\"id\":3,\"request\":{\"type\":\"ping\",\"extra\":1}}\n", "bad_request"),
        (b"{\"version\":99,\"id\":4,\"request\":{\"type\":\"ping\"}}\n", "unsupported_version"),
        (b"{\"version\":1,\"id\":5,\"request\":{\"type\":\"show_connections\",\"id\":\"nope\"}}\n", "not_found"),
    ];
    for (input, want) in cases {
        let v = exchange(&mut c, input);
        assert_eq!(
            v["error"]["code"],
            *want,
            "input {:?}: {v}",
            String::from_utf8_lossy(input)
        );
    }
    // The id is echoed when it could be read, null when not.
    let v = exchange(&mut c, b"{\"version\":99,\"id\":77,\"request\":{}}\n");
    assert_eq!(v["id"], 77);
    let v = exchange(&mut c, b"}{\n");
    assert!(v["id"].is_null());

    // Deeply nested JSON: an error, not a stack overflow.
    let mut deep = vec![b'['; 100_000];
    deep.push(b'\n');
    let v = exchange(&mut c, &deep);
    assert_eq!(v["error"]["code"], "bad_request");

    // Oversized: 3 MiB in one line (limit 1 MiB), answered with too_large;
    // the line is discarded and the connection still works.
    let mut huge = b"{\"version\":1,\"id\":9,\"request\":{\"type\":\"ping\",\"pad\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 3 * 1024 * 1024));
    huge.extend(b"\"}}\n");
    let writer = {
        let mut w = c.get_ref().try_clone().unwrap();
        std::thread::spawn(move || w.write_all(&huge))
    };
    let v = read_reply(&mut c);
    writer.join().unwrap().unwrap();
    assert_eq!(v["error"]["code"], "too_large", "{v}");
    assert_pong(&exchange(&mut c, PING));

    // Several requests in one write are answered in order.
    c.get_mut()
        .write_all(b"garbage\n{\"version\":1,\"id\":42,\"request\":{\"type\":\"ping\"}}\n")
        .unwrap();
    assert_eq!(read_reply(&mut c)["error"]["code"], "bad_request");
    assert_pong(&read_reply(&mut c));

    // Truncated: the client stops mid-line and shuts its side down; the
    // fragment is answered, then the connection ends.
    let mut t = connect(&s);
    t.get_mut()
        .write_all(b"{\"version\":1,\"id\":6,\"request\":{\"type\":\"pi")
        .unwrap();
    t.get_ref().shutdown(std::net::Shutdown::Write).unwrap();
    let v = read_reply(&mut t);
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    assert_eq!(v["id"], Value::Null);
    let mut rest = String::new();
    assert_eq!(t.read_line(&mut rest).unwrap(), 0, "then EOF");

    // A client that disconnects mid-line, one that connects and says
    // nothing, and one that sends 10 MiB without a newline and vanishes.
    {
        let mut g = UnixStream::connect(s.socket()).unwrap();
        g.write_all(b"{\"version\":1,").unwrap();
    }
    let _idle = UnixStream::connect(s.socket()).unwrap();
    {
        let mut g = UnixStream::connect(s.socket()).unwrap();
        g.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let chunk = vec![b'y'; 1024 * 1024];
        for _ in 0..10 {
            if g.write_all(&chunk).is_err() {
                break;
            }
        }
    }

    // Still serving: on the first connection, on a new one, and to vpnctl.
    assert_pong(&exchange(&mut c, PING));
    assert_pong(&exchange(&mut connect(&s), PING));
    assert_eq!(code(&s.ctl(&["ping"])), 0);
    assert!(d.running(), "{}", d.log_text());
    assert!(d.terminate().success(), "{}", d.log_text());
}

/// `vpnd` without a usable configuration exits with the documented code.
#[test]
fn invalid_configuration_is_exit_code_1() {
    if !testkit::own_process() {
        return;
    }
    require_root();
    let s = Setup::new("badcfg", "vpnd", "");
    let text = std::fs::read_to_string(s.config()).unwrap();
    std::fs::write(s.config(), text.replace("asn = 64512", "asn = 1")).unwrap();
    let out = run_bounded(
        {
            let mut c = Command::new(bin("vpnd"));
            c.arg("--config").arg(s.config()).arg("--no-dataplane");
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway.asn") && err.contains('1'), "{err}");
    assert!(!Path::new(&s.socket()).exists());
}

fn mac_of(ns: &Netns, dev: &str) -> String {
    let out = ns.sh(&format!("cat /sys/class/net/{dev}/address"));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn drops(s: &Setup, reason: &str) -> u64 {
    let v = s.json(&["show", "stats"]);
    v["response"]["stats"]["drops"][reason]
        .as_u64()
        .unwrap_or_else(|| panic!("no drop reason {reason} in {v}"))
}

/// `vpnd` on the real dataplane: DPDK af_packet ports on veths into a
/// customer-side namespace and a VPC namespace.
///
/// ```text
///  [vt-d-p peer] 192.0.2.2 ── veth ── [vt-d-d: vpnd outside 192.0.2.1 | inside 198.51.100.1] ── veth ── [vt-d-v vpc] 198.51.100.2
/// ```
///
/// Configuration changes made with vpnctl reach the worker: its addresses
/// (it answers ARP on both sides), its FIB (VPC traffic to a static route
/// of a connection first has no route, then goes to the connection's
/// tunnels, which have no SA yet, then has no route again after the
/// connection is deleted), and `show stats` reports worker and port
/// counters with drops by reason. SIGTERM stops the worker, cleans the EAL
/// up and removes the socket.
#[test]
fn the_real_dataplane_follows_configuration_changes() {
    if !testkit::own_process() {
        return;
    }
    require_root();
    let t = tag();
    let (peer, dp, vpc) = (
        Netns::new(&format!("vt-d-p-{t}")),
        Netns::new(&format!("vt-d-d-{t}")),
        Netns::new(&format!("vt-d-v-{t}")),
    );
    veth(&peer, &format!("dp{t}"), &dp, &format!("do{t}"));
    veth(&vpc, &format!("dv{t}"), &dp, &format!("di{t}"));
    peer.sh(&format!("ip addr add 192.0.2.2/24 dev dp{t}"));
    vpc.sh(&format!("ip addr add 198.51.100.2/24 dev dv{t}"));
    vpc.sh("ip route add 10.1.0.0/16 via 198.51.100.1");
    let prefix = format!("vt-d-dp-{t}");
    let mut s = Setup::empty("dp");
    s.netns = Some(dp.name().to_owned());
    let config = format!(
        r#"
[gateway]
id = "tgw-test"
outside_addresses = ["192.0.2.1", "192.0.2.3"]
local_networks = ["198.51.100.0/24"]

[dataplane]
file_prefix = "{prefix}"
main_lcore = 0
worker_lcores = [1]
outside_next_hop_mac = "{peer_mac}"
inside_next_hop_mac = "{vpc_mac}"
inside_addresses = ["198.51.100.1"]

[[dataplane.ports]]
name = "wan"
device = "net_af_packet0,iface=do{t}"
role = "outside"

[[dataplane.ports]]
name = "lan"
device = "net_af_packet1,iface=di{t}"
role = "inside"

[[dataplane.ports]]
name = "kernel"
device = "net_tap0,iface=dk{t}"
role = "kernel"

[management]
socket_path = "{socket}"

[metrics]
enabled = false
"#,
        peer_mac = mac_of(&peer, &format!("dp{t}")),
        vpc_mac = mac_of(&vpc, &format!("dv{t}")),
        socket = s.socket().display(),
    );
    std::fs::write(s.config(), config).unwrap();
    let mut d = s.start_with(&["--no-huge"]);
    assert!(
        d.log_text().contains("dataplane running"),
        "{}",
        d.log_text()
    );
    assert!(
        Path::new(&format!("/var/run/dpdk/{prefix}")).exists(),
        "EAL runtime directory"
    );

    // `show ports`: each port's device and link; a link that goes down
    // and comes back is seen, logged and counted.
    let wan = |s: &Setup| s.json(&["show", "stats"])["response"]["stats"]["ports"]["wan"].clone();
    assert!(
        wait_until(Duration::from_secs(10), || wan(&s)["link_up"] == true),
        "wan link: {}",
        wan(&s)
    );
    assert_eq!(wan(&s)["device"], format!("net_af_packet0,iface=do{t}"));
    let table = String::from_utf8_lossy(&s.ctl(&["show", "ports"]).stdout).into_owned();
    assert!(
        table.contains("DEVICE")
            && table.lines().any(|l| l.starts_with("wan")
                && l.contains(&format!("iface=do{t}"))
                && l.contains(" up ")),
        "{table}"
    );
    // net_af_packet always says up; net_tap reports its interface: the
    // kernel port's link goes down and comes back.
    let kernel =
        |s: &Setup| s.json(&["show", "stats"])["response"]["stats"]["ports"]["kernel"].clone();
    assert!(
        wait_until(Duration::from_secs(10), || kernel(&s)["link_up"] == true),
        "kernel port link: {}",
        kernel(&s)
    );
    // Checksum offloads where the driver offers them (issue 20):
    // af_packet offers none, the tap PMD both IPv4 header ones.
    assert_eq!(wan(&s)["offloads"], "none", "{}", wan(&s));
    assert_eq!(
        kernel(&s)["offloads"],
        "rx-ipv4-cksum,tx-ipv4-cksum",
        "{}",
        kernel(&s)
    );
    dp.sh(&format!("ip link set dk{t} down"));
    assert!(
        wait_until(Duration::from_secs(10), || kernel(&s)["link_up"] == false),
        "the kernel port's link did not go down: {}",
        kernel(&s)
    );
    dp.sh(&format!("ip link set dk{t} up"));
    assert!(
        wait_until(Duration::from_secs(10), || kernel(&s)["link_up"] == true
            && kernel(&s)["link_changes"] == 2),
        "the kernel port's link did not come back: {}",
        kernel(&s)
    );
    assert!(
        d.log_text()
            .contains(&format!("kernel port net_tap0,iface=dk{t}: link went down")),
        "{}",
        d.log_text()
    );

    // The exception path: the kernel behind the tap owns the outside
    // address (as it will for IKE); the worker punts to it and sends what
    // it answers back out. The kernel cannot ARP through the worker, so
    // its neighbour is static (the worker rewrites the MACs anyway).
    dp.sh(&format!(
        "ip addr add 192.0.2.1/24 dev dk{t} && ip link set dk{t} up && ip neigh replace 192.0.2.2 lladdr 02:00:00:00:00:02 dev dk{t} nud permanent"
    ));

    // The worker has its addresses: it answers ARP on both sides.
    for (ns, dev, addr) in [
        (&peer, format!("dp{t}"), "192.0.2.1"),
        (&vpc, format!("dv{t}"), "198.51.100.1"),
    ] {
        assert!(
            wait_until(Duration::from_secs(20), || {
                ns.sh_ok(&format!(
                "ip neigh flush dev {dev}; ping -c 1 -W 1 {addr} >/dev/null 2>&1; ip neigh show {addr} | grep -q lladdr"
            ))
            }),
            "vpnd never answered ARP for {addr}:\n{}",
            d.log_text()
        );
    }
    // ICMP to our outside address goes to the kernel and its reply back
    // to the peer.
    assert!(
        peer.sh_ok("ping -c 3 -i 0.2 -W 2 192.0.2.1"),
        "no echo reply through the kernel port: {}",
        s.json(&["show", "stats"])
    );
    let ping = || {
        // No reply is expected: the dataplane drops these, counting why.
        let _ = vpc.sh_ok("ping -c 3 -i 0.2 -W 1 10.1.0.5");
    };

    // No connection: VPC traffic to 10.1.0.5 has no route.
    let before = drops(&s, "no_route");
    ping();
    assert!(
        wait_until(Duration::from_secs(5), || drops(&s, "no_route")
            >= before + 3),
        "no_route drops: {}",
        drops(&s, "no_route")
    );

    // A static connection whose tunnels are both DOWN does not route its
    // static prefixes (spec § 10.5): still no_route. Its tunnels' inside
    // CIDRs do route into them (no SA until IKE): dropped as
    // no_outbound_sa, counted per tunnel.
    assert_eq!(
        code(&s.ctl(&["cgw", "create", "cgw-dp", "--ip-address", "192.0.2.2"])),
        0
    );
    let out = s.ctl(&[
        "connection",
        "create",
        "vpn-dp",
        "--customer-gateway",
        "cgw-dp",
        "--routing",
        "static",
        "--static-route",
        "10.1.0.0/16",
    ]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let v = s.json(&["show", "tunnels", "vpn-dp"]);
    for tun in v["response"]["tunnels"].as_array().unwrap() {
        assert_eq!(tun["status"], "DOWN");
    }
    let before = drops(&s, "no_route");
    ping();
    assert!(
        wait_until(Duration::from_secs(5), || drops(&s, "no_route")
            >= before + 3),
        "no_route drops with both tunnels down: {}",
        drops(&s, "no_route")
    );
    // The customer gateway's inside address of tunnel 0 (the second
    // host of its /30).
    let cidr: ipnet::Ipv4Net = v["response"]["tunnels"][0]["inside_cidr"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("inside_cidr: {v}"));
    let cgw_inside = std::net::Ipv4Addr::from(u32::from(cidr.network()) + 2);
    vpc.sh(&format!("ip route add {cidr} via 198.51.100.1"));
    let before = drops(&s, "no_outbound_sa");
    let _ = vpc.sh_ok(&format!("ping -c 3 -i 0.2 -W 1 {cgw_inside}"));
    assert!(
        wait_until(Duration::from_secs(5), || drops(&s, "no_outbound_sa")
            >= before + 3),
        "no_outbound_sa drops: {}",
        drops(&s, "no_outbound_sa")
    );

    // Worker, tunnel and port counters.
    let v = s.json(&["show", "stats"]);
    let st = &v["response"]["stats"];
    let tunnel_drops: u64 = ["vpn-dp/0", "vpn-dp/1"]
        .iter()
        .map(|k| st["tunnels"][k]["drops"].as_u64().unwrap())
        .sum();
    assert!(tunnel_drops >= 3, "per-tunnel no-SA drops: {st}");
    assert!(st["worker"]["arp_replies"].as_u64().unwrap() >= 2, "{st}");
    assert!(
        st["worker"]["commands_applied"].as_u64().unwrap() >= 3,
        "{st}"
    );
    assert_eq!(st["worker"]["commands_failed"], 0, "{st}");
    assert!(
        st["ports"]["lan"]["rx_packets"].as_u64().unwrap() >= 6,
        "{st}"
    );
    assert!(
        st["ports"]["wan"]["tx_packets"].as_u64().unwrap() >= 1,
        "{st}"
    );
    assert!(st["rx_packets"].as_u64().unwrap() >= 7, "{st}");
    assert!(st["worker"]["punted"].as_u64().unwrap() >= 3, "{st}");
    assert!(
        st["ports"]["kernel"]["rx_packets"].as_u64().unwrap() >= 3,
        "{st}"
    );
    // The ESP crypto library chosen at start (`auto`): intel-ipsec-mb on
    // an AVX2-or-better path, else ring.
    let backend = st["crypto_backend"].as_str().unwrap_or_default().to_owned();
    assert!(
        backend == "ring" || backend.starts_with("ipsec-mb/"),
        "crypto_backend: {st}"
    );
    let table = s.ctl(&["show", "stats"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("no_outbound_sa") && text.contains("lan") && text.contains("arp_replies"),
        "{text}"
    );
    assert!(text.contains(&format!("crypto: {backend}")), "{text}");

    // Deleted: no route again.
    assert_eq!(code(&s.ctl(&["connection", "delete", "vpn-dp"])), 0);
    let before = drops(&s, "no_route");
    ping();
    assert!(
        wait_until(Duration::from_secs(5), || drops(&s, "no_route")
            >= before + 3),
        "no_route drops after delete: {}",
        drops(&s, "no_route")
    );

    // SIGTERM: clean exit, EAL cleaned up, socket gone.
    let status = d.terminate();
    let log = d.log_text();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("dataplane stopped"), "{log}");
    assert!(!s.socket().exists());
    assert!(
        !Path::new(&format!("/var/run/dpdk/{prefix}")).exists(),
        "EAL runtime directory left behind"
    );
}

/// `Type=notify`: vpnd tells the service manager READY=1 once it serves,
/// and STOPPING=1 on SIGTERM (as systemd's `NOTIFY_SOCKET` protocol).
#[test]
fn readiness_and_stopping_are_notified_to_the_service_manager() {
    if !testkit::own_process() {
        return;
    }
    require_root();
    let s = Setup::new("notify", "vpnd", "");
    let notify_path = s.dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let child = Command::new(bin("vpnd"))
        .arg("--config")
        .arg(s.config())
        .arg("--no-dataplane")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut d = Vpnd {
        child: Some(child),
        log: s.dir.join("none.log"),
    };
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 within 30 s");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means serving.
    assert_eq!(code(&s.ctl(&["ping"])), 0);
    let pid = d.pid();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let n = notify.recv(&mut buf).expect("STOPPING=1 within 30 s");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(d.terminate().success());
}

/// Prometheus text on `metrics.listen`: tunnel state per tunnel and per
/// connection, data counters, drops.
#[test]
fn metrics_are_served_in_prometheus_text_format() {
    if !testkit::own_process() {
        return;
    }
    require_root();
    // A free loopback port (the tiny race with other processes is
    // acceptable for a test on loopback).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Setup::new("metrics", "vpnd", "");
    let text = std::fs::read_to_string(s.config()).unwrap();
    std::fs::write(
        s.config(),
        text.replace(
            "enabled = false",
            &format!("enabled = true\nlisten = \"127.0.0.1:{port}\""),
        ),
    )
    .unwrap();
    let _d = s.start();
    create_gateway_and_connection(&s);
    let get = |path: &str| {
        use std::io::Read;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        body
    };
    let body = get("/metrics");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(
        body.contains("Content-Type: text/plain; version=0.0.4"),
        "{body}"
    );
    assert!(
        body.contains("vpn_tunnel_state{vpn_id=\"vpn-e2e\",tunnel_ip_address=\"198.51.100.10\"} 0"),
        "{body}"
    );
    assert!(
        body.contains("vpn_connection_tunnel_state{vpn_id=\"vpn-e2e\"} 0"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE vpn_tunnel_data_in_bytes_total counter"),
        "{body}"
    );
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
}

/// Idle clients cannot exhaust the daemon: past 64 connections a new one
/// gets an error reply, and once they go the daemon serves again.
#[test]
fn too_many_idle_clients_are_refused_and_the_daemon_recovers() {
    if !testkit::own_process() {
        return;
    }
    require_root();
    let s = Setup::new("clients", "vpnd", "");
    let _d = s.start();
    let idle: Vec<BufReader<UnixStream>> = (0..64).map(|_| connect(&s)).collect();
    // Each idle connection has been accepted once it answers.
    let mut idle = idle;
    for c in &mut idle {
        assert_pong(&exchange(c, PING));
    }
    let mut extra = connect(&s);
    let v = read_reply(&mut extra);
    assert_eq!(v["error"]["code"], "internal", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("64"),
        "{v}"
    );
    drop(idle);
    assert!(
        wait_until(Duration::from_secs(10), || s
            .ctl(&["ping"])
            .status
            .success()),
        "the daemon did not recover after the idle clients left"
    );
}

/// A dataplane that cannot start (a port whose interface does not exist)
/// is exit code 3, with the reason, and leaves no socket behind.
#[test]
fn a_dataplane_that_cannot_start_is_exit_code_3() {
    if !testkit::own_process() {
        return;
    }
    require_root();
    let s = Setup::new("nodp", "vpnd", "");
    let text = std::fs::read_to_string(s.config()).unwrap();
    let prefix = format!("vt-d-nodp-{}", tag());
    std::fs::write(
        s.config(),
        text.replace(
            "device = \"net_null0\"",
            "device = \"net_af_packet0,iface=vt-d-nonexist\"",
        )
        .replace(
            "worker_lcores = [1]",
            &format!("worker_lcores = [1]\nfile_prefix = \"{prefix}\""),
        ),
    )
    .unwrap();
    let out = run_bounded(
        {
            let mut c = Command::new(bin("vpnd"));
            c.arg("--config").arg(s.config()).arg("--no-huge");
            c
        },
        Duration::from_secs(60),
    );
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dataplane cannot start"),
        "{}",
        describe(&out)
    );
    assert!(!s.socket().exists());
    assert!(!Path::new(&format!("/var/run/dpdk/{prefix}")).exists());
}

/// `dataplane.worker_cpus`: two workers on one cpu (more workers than
/// this 2-cpu machine could otherwise pin beside the main lcore). vpnd
/// hands the map to the EAL as `--lcores 0@0,1@1,2@1`, both worker
/// threads are pinned to cpu 1, both poll their queues of the `net_null`
/// ports (whose zero frames are counted as malformed), the daemon serves,
/// the missing inbound steering (`net_null` has no `rte_flow`) is
/// reported, and SIGTERM cleans up.
#[test]
fn two_workers_share_one_cpu_through_worker_cpus() {
    if !testkit::own_process() {
        return;
    }
    require_root();
    let s = Setup::new("cpus", "vpnd", "");
    let text = std::fs::read_to_string(s.config()).unwrap();
    let prefix = format!("vt-d-cpus-{}", tag());
    std::fs::write(
        s.config(),
        text.replace(
            "worker_lcores = [1]",
            &format!("worker_lcores = [1, 2]\nworker_cpus = [1, 1]\nfile_prefix = \"{prefix}\""),
        ),
    )
    .unwrap();
    let mut d = s.start_with(&["--no-huge"]);
    let log = d.log_text();
    assert!(
        log.contains("dataplane running: 2 worker(s) on lcores [1, 2] (lcore@cpu 0@0,1@1,2@1)"),
        "{log}"
    );
    // The EAL's worker threads (`rte-worker-<lcore>`) and the cpus they may
    // run on.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", d.pid())).unwrap();
    let mut workers = Vec::new();
    let mut names = Vec::new();
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        names.push(comm.trim().to_owned());
        if comm.trim().starts_with("rte-worker-") {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap();
            let cpus = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap()
                .trim()
                .to_owned();
            workers.push((comm.trim().to_owned(), cpus));
        }
    }
    workers.sort();
    assert_eq!(
        workers,
        [
            ("rte-worker-1".to_owned(), "1".to_owned()),
            ("rte-worker-2".to_owned(), "1".to_owned())
        ],
        "threads {names:?}\n{log}"
    );
    // Both workers poll: each port's two queues are read.
    assert!(
        wait_until(Duration::from_secs(10), || drops(&s, "malformed") > 0),
        "{}",
        d.log_text()
    );
    // net_null has no rte_flow: the fallback to hand-off between the
    // workers is logged once at start with the driver's answer, and
    // reported by show stats, where the two tunnels of the connection
    // name different workers.
    let fallback = "vpnd: dataplane: no rte_flow steering, each tunnel's ESP handed to its worker";
    assert_eq!(log.matches(fallback).count(), 1, "{log}");
    assert!(
        log.contains("outside port net_null0: rte_flow_create"),
        "{log}"
    );
    create_gateway_and_connection(&s);
    let v = s.json(&["show", "stats"]);
    let st = &v["response"]["stats"];
    assert!(
        st["steering"]
            .as_str()
            .unwrap()
            .starts_with("no rte_flow steering"),
        "{st}"
    );
    let tunnels = st["tunnels"].as_object().unwrap();
    assert_eq!(tunnels.len(), 2, "{st}");
    let mut workers: Vec<u64> = tunnels
        .values()
        .filter_map(|t| t.get("worker")?.as_u64())
        .collect();
    workers.sort_unstable();
    assert_eq!(workers, [0, 1], "{st}");
    let table = s.ctl(&["show", "stats"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("WORKER") && text.contains("steering: no rte_flow steering"),
        "{text}"
    );
    let status = d.terminate();
    assert!(status.success(), "{status}: {}", d.log_text());
    assert!(!Path::new(&format!("/var/run/dpdk/{prefix}")).exists());
}
