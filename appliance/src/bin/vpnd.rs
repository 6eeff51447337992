//! `vpnd`: the appliance daemon.
//!
//! Reads the configuration from its store next to the TOML file
//! (`--config`, default `/etc/vpn/vpnd.toml`: `vpnd.snapshot` and
//! `vpnd.journal` in the same directory, see `control::config::journal`),
//! or from the TOML file itself when no store exists (first start; the
//! store is then created from it), starts the DPDK dataplane (`appliance::runtime`: EAL, the ports of
//! `[dataplane]`, a worker lcore) unless `--no-dataplane`, serves the
//! management API (`control::api`, newline-delimited JSON) on the unix
//! socket named by `management.socket_path`, and Prometheus metrics on
//! `metrics.listen` (HTTP `GET /metrics`) when `metrics.enabled`.
//!
//! ```text
//!   main thread: EAL init, ports, worker lcores ──► Manager::start (apply config)
//!                ──► control::core::Core (manager + IKE tunnels + BGP speaker
//!                    + timers) ──► Core::start (the configured tunnels)
//!                ──► appliance::event_loop: one epoll loop over the
//!                    management socket and its clients, the metrics
//!                    listener, the IKE sockets, the BGP sockets and the
//!                    signal pipes; every input an event of the core,
//!                    every output performed by the loop
//!   SIGTERM/SIGINT ──► STOPPING=1 ──► Event::Shutdown: DELETE to each peer
//!                  (through the still-running worker), changes refused
//!                  ──► 300 ms later Output::Stopped ──► remove socket ──►
//!                  stop worker, close ports, rte_eal_cleanup ──► exit 0
//!   log thread: appliance::logging (the only other thread of the control
//!               side)
//! ```
//!
//! With `--no-dataplane` an in-memory stand-in takes the configuration
//! (every tunnel DOWN, counters zero): for tests and for machines without
//! the NICs. systemd: `Type=notify`; `READY=1` is sent once the dataplane,
//! the socket and the metrics listener are up, `STOPPING=1` on SIGTERM.
//!
//! The event loop puts the outside and tunnel inside addresses on the
//! kernel port itself (`appliance::kernel_port`). Test mode only (logged
//! at start, never for production): `VPND_IKE_LIFETIME_DIVISOR=<n>`
//! divides every tunnel's IKE/Child SA lifetimes and rekey margin,
//! `VPND_IKE_REKEY_PACKETS=<n>` gives installed Child SAs a soft lifetime
//! of n packets (rekey tests).
//!
//! Log: `appliance::logging`, set up first from `[logging]` (level or
//! `RUST_LOG`, text or JSON, stderr or journald, a size-rotated file); the
//! lines keep the `vpnd: <message>` text they always had.
//!
//! Exit codes: 0 stopped by SIGTERM/SIGINT, 1 usage or invalid
//! configuration, 2 cannot set up the log, the socket or the metrics listener,
//! 3 the dataplane cannot start (EAL, ports, lcores), 70 no randomness
//! available.

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use appliance::eal_args::{self, Memory};
use appliance::event_loop::{self, EventLoop, Setup};
use appliance::logging;
use appliance::mgmt::{self, PeerPolicy};
use appliance::runtime::dataplane::DpdkDataplane;
use appliance::runtime::{Runtime, RuntimeConfig};
use clap::Parser;
use control::config::journal::{DroppedTail, Journal, OpenReport};
use control::config::{ConfigStore, DataplaneConfig, PortRole, StorePaths};
use control::core::Core;
use control::dataplane::{Dataplane, InMemoryDataplane};
use control::manager::{Fill, Loaded, Manager};
use rustix::fs::Mode;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "vpnd",
    version,
    about = "VPN concentrator daemon: DPDK dataplane, management API and metrics",
    after_help = "Exit codes: 0 stopped by SIGTERM/SIGINT, 1 usage or invalid configuration, \
                  2 cannot set up the log, the socket or metrics listener, 3 the dataplane cannot start, \
                  70 no randomness."
)]
struct Args {
    /// The configuration file (TOML), read only when no store exists next
    /// to it. Changes made through the API go to the store (`<stem>.snapshot`
    /// and `<stem>.journal` in the same directory); `vpnctl config export`
    /// and `vpnctl config import` move the configuration between the two.
    #[arg(long, short = 'c', default_value = "/etc/vpn/vpnd.toml")]
    config: PathBuf,
    /// Run without DPDK: an in-memory stand-in takes the configuration,
    /// reports every tunnel DOWN and every counter zero (for tests and for
    /// editing a configuration on a machine without the NICs).
    #[arg(long)]
    no_dataplane: bool,
    /// Give the EAL ordinary memory instead of hugepages (test mode).
    #[arg(long)]
    no_huge: bool,
    /// Hugepage set-up to take the dataplane's memory from; without it (or
    /// without free hugepages) vpnd falls back to `--no-huge`.
    #[arg(long, default_value = "/etc/vpn/hugepages.conf")]
    hugepages_conf: PathBuf,
}

fn urandom_fill() -> Result<Fill, std::io::Error> {
    let mut f = File::open("/dev/urandom")?;
    Ok(Box::new(move |buf: &mut [u8]| {
        if let Err(e) = f.read_exact(buf) {
            tracing::error!("cannot read /dev/urandom: {e}");
            logging::flush(LOG_FLUSH);
            std::process::exit(70);
        }
    }))
}

fn main() {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = i32::from(e.use_stderr());
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Err(e) = start_logging(&args.config) {
        eprintln!("vpnd: {e}");
        std::process::exit(2);
    }
    let code = run(&args);
    logging::flush(LOG_FLUSH);
    std::process::exit(code);
}

/// How long an exit waits for queued log lines to be written.
const LOG_FLUSH: Duration = Duration::from_secs(2);

/// The log, from `[logging]` of the configuration (the store's snapshot,
/// else the TOML file; defaults when neither can be read: the error is
/// reported once the log is up). A
/// relative `logging.file` is left out here; validation rejects it.
fn start_logging(config: &Path) -> Result<(), logging::InitError> {
    let mut cfg = Journal::startup_config(&ConfigStore::new(config))
        .map(|c| c.logging)
        .unwrap_or_default();
    if cfg.file.as_ref().is_some_and(|f| !f.is_absolute()) {
        cfg.file = None;
    }
    logging::init(&logging::Outputs::resolve(&cfg))
}

fn run(args: &Args) -> i32 {
    let fill = match urandom_fill() {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("cannot open /dev/urandom: {e}");
            return 70;
        }
    };
    let store = ConfigStore::new(&args.config);
    if let Err(e) = store.remove_stale_temp_files() {
        tracing::warn!("cannot remove stale temporary files: {e}");
    }
    let dataplane: Box<dyn Dataplane> = if args.no_dataplane {
        tracing::info!("--no-dataplane: the in-memory stand-in takes the configuration");
        Box::new(InMemoryDataplane::new())
    } else {
        let cfg = match Journal::startup_config(&store) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{}: {e}", args.config.display());
                return 1;
            }
        };
        let rc = match runtime_config(&cfg.dataplane, args) {
            Ok(rc) => rc,
            Err(e) => {
                tracing::error!("{}: {e}", args.config.display());
                return 1;
            }
        };
        match Runtime::start(&rc) {
            Ok(rt) => {
                let map = rc
                    .lcore_map
                    .as_ref()
                    .map(|m| format!(" (lcore@cpu {m})"))
                    .unwrap_or_default();
                tracing::info!(
                    "dataplane running: {} worker(s) on lcores {:?}{map}, file prefix {}",
                    rt.workers(),
                    rt.worker_lcores(),
                    rc.file_prefix
                );
                for p in rt.port_queues() {
                    tracing::info!("{p}");
                }
                if rt.workers() > 1 {
                    tracing::info!("dataplane: {}", rt.steering_mode());
                }
                tracing::info!(
                    "crypto: {} ({})",
                    rt.crypto_backend(),
                    rt.crypto_backend_reason()
                );
                Box::new(DpdkDataplane::new(rt))
            }
            Err(e) => {
                tracing::error!("the dataplane cannot start: {e}");
                return 3;
            }
        }
    };
    let (manager, loaded) = match Manager::start(&store, dataplane, fill) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("{}: {e}", args.config.display());
            return 1;
        }
    };
    let paths = manager.journal().paths();
    let source = match loaded {
        Loaded::Store(report) => {
            log_open_report(paths, &report);
            format!(
                "{} (store, generation {}, {} change(s) replayed)",
                paths.snapshot.display(),
                report.generation,
                report.replayed
            )
        }
        Loaded::Toml(from) => format!(
            "{} ({from:?}; no store existed: created {})",
            args.config.display(),
            paths.snapshot.display()
        ),
    };
    tracing::info!(
        "loaded {source}: {} customer gateway(s), {} connection(s)",
        manager.config().customer_gateways.len(),
        manager.config().connections.len()
    );
    let mgmt_cfg = manager.config().management.clone();
    let metrics_cfg = manager.config().metrics.clone();

    let group_gid = mgmt::lookup_group_gid(&mgmt_cfg.socket_group);
    let listener = match bind_socket(&mgmt_cfg.socket_path, group_gid) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {}: {e}", mgmt_cfg.socket_path.display());
            return 2;
        }
    };
    if group_gid.is_none() {
        tracing::warn!(
            "group {:?} does not exist; only root and the daemon's user may use the socket",
            mgmt_cfg.socket_group
        );
    }
    let policy = PeerPolicy {
        daemon_uid: rustix::process::geteuid().as_raw(),
        group_gid,
    };

    let metrics = if metrics_cfg.enabled {
        match TcpListener::bind(metrics_cfg.listen) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!("cannot listen for metrics on {}: {e}", metrics_cfg.listen);
                let _ = std::fs::remove_file(&mgmt_cfg.socket_path);
                return 2;
            }
        }
    } else {
        None
    };

    let signals = match signal_pipes() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            let _ = std::fs::remove_file(&mgmt_cfg.socket_path);
            return 2;
        }
    };

    // IKE and BGP on the real dataplane only: the stand-in moves no packets.
    let mut core = if args.no_dataplane {
        Core::management_only(manager)
    } else {
        Core::with_tunnels(manager, appliance::ike_service::tunnel_set_from_env())
    };
    core.start(event_loop::clock());
    let lp = match EventLoop::new(
        core,
        Setup {
            mgmt: listener,
            mgmt_path: mgmt_cfg.socket_path.clone(),
            policy,
            metrics,
            signals,
        },
    ) {
        Ok(lp) => lp,
        Err(e) => {
            tracing::error!("cannot set up the event loop (epoll): {e}");
            let _ = std::fs::remove_file(&mgmt_cfg.socket_path);
            return 2;
        }
    };

    if let Err(e) = mgmt::sd_notify("READY=1") {
        tracing::warn!("sd_notify: {e}");
    }
    tracing::info!("serving on {}", mgmt_cfg.socket_path.display());
    lp.run()
}

/// A pipe per stopping signal: the handler writes a byte, the event loop
/// polls the read end.
fn signal_pipes() -> std::io::Result<Vec<(UnixStream, i32)>> {
    let mut out = Vec::new();
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let (read, write) = UnixStream::pair()?;
        write.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(sig, write)?;
        out.push((read, sig));
    }
    Ok(out)
}

/// Log what opening the store found beyond the normal case.
fn log_open_report(paths: &StorePaths, report: &OpenReport) {
    if let Some(DroppedTail {
        offset,
        bytes,
        reason,
    }) = report.dropped_tail
    {
        tracing::warn!(
            "{}: dropped a torn or corrupt last record ({reason:?}): {bytes} byte(s) from offset {offset}; \
             a change interrupted before it was acknowledged",
            paths.journal.display()
        );
    }
    if report.journal_reset {
        tracing::warn!(
            "{}: missing or older than the snapshot (a compaction was interrupted): started empty",
            paths.journal.display()
        );
    }
}

/// The runtime's settings from `[dataplane]` and the command line.
fn runtime_config(d: &DataplaneConfig, args: &Args) -> Result<RuntimeConfig, String> {
    let port = |role: PortRole| {
        d.ports
            .iter()
            .find(|p| p.role == role)
            .map(|p| p.device.clone())
    };
    let (Some(outside), Some(inside)) = (port(PortRole::Outside), port(PortRole::Inside)) else {
        return Err("dataplane.ports: an outside and an inside port are required".to_owned());
    };
    if d.worker_lcores.is_empty() {
        return Err("dataplane.worker_lcores: at least one worker lcore is required".to_owned());
    }
    let memory = if args.no_huge {
        Memory::NoHuge {
            reason: "--no-huge given".to_owned(),
        }
    } else {
        let conf = appliance::hugepages::HugepageConfig::load(&args.hugepages_conf).ok();
        eal_args::choose_memory(conf.as_ref(), 512)
    };
    if let Memory::NoHuge { reason } = &memory {
        tracing::info!("dataplane without hugepages (--no-huge): {reason}");
    }
    let mut rc = RuntimeConfig::new(&d.file_prefix, &outside, &inside, memory);
    rc.kernel = port(PortRole::Kernel);
    rc.main_lcore = d.main_lcore;
    rc.worker_lcores.clone_from(&d.worker_lcores);
    rc.lcore_map = d.lcore_map();
    rc.crypto_backend = d.crypto_backend_preference();
    Ok(rc)
}

/// Bind the socket with mode 0660 and the configured group.
fn bind_socket(path: &Path, group_gid: Option<u32>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a previous run (kill -9) would make bind fail.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    // Create the socket node without group/other access from the start,
    // then open it up to exactly 0660.
    let old = rustix::process::umask(Mode::from_raw_mode(0o177));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound?;
    if let Some(gid) = group_gid {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}
