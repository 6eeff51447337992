//! Helpers shared by the workspace's tests (dev-dependency only).
//!
//! * [`own_process`]: a test that needs a process of its own (the DPDK
//!   EAL initialises once per process; end-to-end labs are named after
//!   the process) gets one under plain `cargo test` too. `cargo nextest`
//!   already gives every test its own process; plain `cargo test` runs a
//!   binary's tests as threads of one process, so there the test re-runs
//!   its own binary for itself, one such child at a time.
//!
//! Nothing here is used outside tests.

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
