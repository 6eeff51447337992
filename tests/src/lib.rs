//! Helpers for end-to-end tests: network namespaces and veth pairs that
//! remove themselves, and the appliance's binaries run as child processes.
//!
//! Everything a test makes is named after the test process, lives only in
//! namespaces the test created, and is removed on drop, also when the test
//! fails. Traffic stays between those namespaces. So every test needs a
//! process of its own: each starts with `testkit::own_process()`, a no-op
//! under `cargo nextest` that re-runs the test alone under plain
//! `cargo test`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod charon;
pub mod swan_lab;

/// Runs a command and returns its output; panics with the command line and
/// its stderr when it fails.
///
/// # Panics
/// When the command cannot run or exits non-zero.
pub fn sh(cmd: &str) -> Output {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{cmd}`: {e}"));
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Like [`sh`] but returns whether it succeeded, quietly.
#[must_use]
pub fn sh_ok(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", cmd])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Fails the test early, with a clear message, when it cannot create
/// namespaces (it needs root).
///
/// # Panics
/// When not running as root.
pub fn require_root() {
    let uid = sh("id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "end-to-end tests create network namespaces and need root"
    );
}

/// A short tag unique to this test process, for names (interface names
/// are limited to 15 characters).
#[must_use]
pub fn tag() -> String {
    format!("{:05}", std::process::id() % 100_000)
}

/// A network namespace, deleted (with its interfaces) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with loopback up.
    ///
    /// # Panics
    /// When `ip netns add` fails.
    #[must_use]
    pub fn new(name: &str) -> Self {
        let _ = sh_ok(&format!("ip netns del {name}"));
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        Self {
            name: name.to_owned(),
        }
    }

    /// The namespace's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a shell command inside the namespace; panics on failure.
    ///
    /// # Panics
    /// When the command fails.
    pub fn sh(&self, cmd: &str) -> Output {
        sh(&format!("ip netns exec {} sh -c '{cmd}'", self.name))
    }

    /// Runs a shell command inside the namespace; returns success.
    #[must_use]
    pub fn sh_ok(&self, cmd: &str) -> bool {
        sh_ok(&format!("ip netns exec {} sh -c '{cmd}'", self.name))
    }

    /// A command that runs `program` inside the namespace.
    #[must_use]
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh_ok(&format!("ip netns del {}", self.name));
    }
}

/// Creates a veth pair `a` (in `ns_a`) ⇄ `b` (in `ns_b`), both up, IPv6
/// off, tx checksum offload off (so kernel-sent UDP reaches af_packet with
/// finished checksums). Removed with the namespaces.
///
/// # Panics
/// When `ip link add` fails.
pub fn veth(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str) {
    sh(&format!(
        "ip link add {a} netns {} type veth peer name {b} netns {}",
        ns_a.name, ns_b.name
    ));
    for (ns, dev) in [(ns_a, a), (ns_b, b)] {
        let _ = ns.sh_ok(&format!("sysctl -qw net.ipv6.conf.{dev}.disable_ipv6=1"));
        let _ = ns.sh_ok(&format!("ethtool -K {dev} tx off"));
        ns.sh(&format!("ip link set {dev} up"));
    }
}

/// Path of one of the workspace's binaries (built by `cargo build --bins`
/// into the same target directory as the running test).
///
/// # Panics
/// When the binary has not been built.
#[must_use]
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A child process killed (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    what: String,
}

impl Daemon {
    /// Spawns `cmd` with stdout/stderr captured.
    ///
    /// # Panics
    /// When it cannot be spawned.
    #[must_use]
    pub fn spawn(mut cmd: Command, what: &str) -> Self {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self {
            child: Some(child),
            what: what.to_owned(),
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }

    /// Sends SIGTERM and waits (up to 10 s, then SIGKILL) for its output.
    ///
    /// # Panics
    /// When waiting fails.
    pub fn stop(self) -> Output {
        Self::stop_together(vec![self]).pop().expect("one output")
    }

    /// Stops several at once: SIGTERM to every one first, then waits for
    /// each (up to 10 s, then SIGKILL) and returns their outputs in order.
    /// For peers that must not see each other go while they still run:
    /// two `net_memif` ends, where the one that closes first can crash
    /// the other while it still polls (DPDK 22.11), if they are stopped
    /// one after the other.
    ///
    /// # Panics
    /// When waiting fails.
    pub fn stop_together(daemons: Vec<Self>) -> Vec<Output> {
        let children: Vec<(Child, String)> = daemons
            .into_iter()
            .map(|mut d| {
                let child = d.child.take().expect("running");
                (child, std::mem::take(&mut d.what))
            })
            .collect();
        for (child, _) in &children {
            terminate(child);
        }
        children
            .into_iter()
            .map(|(child, what)| {
                let deadline = Instant::now() + Duration::from_secs(10);
                let pid = child.id();
                let waiter = std::thread::spawn(move || child.wait_with_output());
                while !waiter.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if !waiter.is_finished() {
                    let _ = sh_ok(&format!("kill -KILL {pid}"));
                }
                waiter
                    .join()
                    .expect("waiter thread")
                    .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
            })
            .collect()
    }
}

fn terminate(child: &Child) {
    let _ = sh_ok(&format!("kill -TERM {}", child.id()));
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().is_ok_and(|s| s.is_some()) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `f` every 100 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process (a peer daemon: charon, BIRD, vpnd) with its output in
/// a file, stopped on drop: SIGTERM, then SIGKILL after 10 s.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    out: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr into the file `out`.
    ///
    /// # Panics
    /// When the file cannot be created or the command cannot start.
    pub fn spawn(mut cmd: Command, out: &Path) -> Self {
        let f = std::fs::File::create(out).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(f.try_clone().expect("dup")))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("spawn");
        Self {
            child,
            out: out.to_owned(),
        }
    }

    /// Everything the process printed so far.
    #[must_use]
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|s| s.is_none())
    }

    /// Its exit status, once it has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Its process id (for signals such as SIGSTOP).
    #[must_use]
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (bounded) for the exit; true when it exited.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        if !self.running() {
            return true;
        }
        let _ = sh_ok(&format!("kill -TERM {}", self.child.id()));
        wait_until(limit, || self.child.try_wait().is_ok_and(|s| s.is_some()))
    }

    /// SIGTERM, and SIGKILL when it has not exited after `limit`.
    pub fn stop(&mut self, limit: Duration) {
        if !self.terminate(limit) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// Runs a command with a time limit (killed when it passes) and returns
/// its output.
///
/// # Panics
/// When the command cannot start.
pub fn bounded(mut c: Command, limit: Duration) -> Output {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().expect("spawn");
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    let deadline = Instant::now() + limit;
    while !waiter.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !waiter.is_finished() {
        let _ = sh_ok(&format!("kill -KILL {pid}"));
    }
    waiter.join().expect("waiter").expect("output")
}

/// A command's stdout then stderr, as text.
#[must_use]
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
