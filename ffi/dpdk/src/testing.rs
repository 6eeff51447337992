//! EAL set-up for tests: one EAL per test process. `cargo nextest` gives
//! every test its own process; under plain `cargo test` a binary with
//! several EAL tests starts each with `testkit::own_process()`, which
//! re-runs the test in a process of its own.

use crate::eal::Eal;
use crate::error::Result;

/// Initialises the EAL for a test: `--no-pci`, `--no-huge`, a file prefix
/// unique to the process, quiet logs, plus `extra` (usually `--vdev`s).
///
/// The runtime directory DPDK creates for the prefix is removed when the
/// process exits normally.
///
/// # Errors
/// What `rte_eal_init` reported.
pub fn test_eal(name: &str, extra: &[&str]) -> Result<Eal> {
    let prefix = format!("vpnt-{name}-{}", std::process::id());
    let mut args = vec![
        "--no-pci".to_owned(),
        "--no-huge".to_owned(),
        "-m".to_owned(),
        "256".to_owned(),
        format!("--file-prefix={prefix}"),
        "--log-level=warning".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let eal = Eal::init(&args)?;
    let _ = RUNTIME_PREFIX.set(prefix);
    // SAFETY: atexit with a plain extern "C" fn is always sound.
    unsafe { libc::atexit(remove_runtime_dir) };
    Ok(eal)
}

static RUNTIME_PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

extern "C" fn remove_runtime_dir() {
    if let Some(prefix) = RUNTIME_PREFIX.get() {
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
    }
}
