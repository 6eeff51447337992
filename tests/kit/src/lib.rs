//! Helpers shared by the workspace's tests (dev-dependency only).
//!
//! * [`own_process`]: a test that needs a process of its own (the DPDK
//!   EAL initialises once per process; end-to-end labs are named after
//!   the process) gets one under plain `cargo test` too. `cargo nextest`
//!   already gives every test its own process; plain `cargo test` runs a
//!   binary's tests as threads of one process, so there the test re-runs
//!   its own binary for itself, one such child at a time.
//! * [`scapy_available`] and [`tool_missing`]: a test whose tool is
//!   missing fails under CI (env `CI` set) saying which tool; elsewhere it
//!   skips with a `SKIPPED` line on stderr.
//!
//! Nothing here is used outside tests.

use std::io::Write as _;
use std::process::Command;
use std::sync::{Mutex, PoisonError};

/// Set in the environment of a test re-run by [`own_process`].
const CHILD_ENV: &str = "VPN_TEST_OWN_PROCESS";

/// One re-run test at a time per test binary: like nextest's `peers`
/// group, and it keeps two tests' labs off each other's timing.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The running test's name: libtest names each test's thread after it
/// (`None` on another thread).
#[must_use]
pub fn test_name() -> Option<String> {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(str::to_owned)
}

/// Whether the calling test is alone in its process: `true` under
/// `cargo nextest` (process per test) and in a re-run child; then the
/// caller runs its body.
///
/// Otherwise (plain `cargo test`) it runs the test again in a new process
/// of the same binary (`<name> --exact`), waits for it, echoes its output
/// (captured by libtest like the test's own) and returns `false`: the
/// caller returns at once, its body having run in the child.
///
/// # Panics
/// When the child fails, or did not run exactly that one test; when
/// called from a thread that is not the test's own.
#[must_use]
pub fn own_process() -> bool {
    let alone = std::env::var("NEXTEST_EXECUTION_MODE").is_ok_and(|m| m == "process-per-test")
        || std::env::var_os(CHILD_ENV).is_some();
    if alone {
        return true;
    }
    let name = test_name().expect("own_process() called from a test's own thread");
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(&exe)
        .args([
            name.as_str(),
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap_or_else(|e| panic!("re-running {} for {name}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "{name} failed in its own process ({})",
        out.status
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{name}: the re-run did not run exactly this test"
    );
    false
}

/// A tool the calling test needs is missing. Under CI (env `CI` set) the
/// test must not pass without it: this panics naming the tool (an empty
/// `CI` counts as unset). Elsewhere it writes a `SKIPPED` line straight to
/// stderr, past libtest's capture, so a skip is seen; the caller then
/// returns.
///
/// # Panics
/// Under CI.
pub fn tool_missing(tool: &str) {
    let name = test_name().unwrap_or_else(|| "this test".to_owned());
    assert!(
        std::env::var_os("CI").is_none_or(|v| v.is_empty()),
        "{name}: CI must run this test, but {tool} is missing (bash tools/setup.sh installs it)"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {name}: {tool} is missing (under CI this fails)"
    );
}

/// Whether `python3` can import scapy's IPsec layer, the independent
/// reference the cross-checks use. When it cannot, see [`tool_missing`]:
/// the test fails under CI and skips loudly elsewhere.
///
/// # Panics
/// Under CI, when scapy is missing.
#[must_use]
pub fn scapy_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import scapy.layers.ipsec, scapy.layers.inet"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        tool_missing("python3 with scapy (scapy.layers.ipsec)");
    }
    ok
}
