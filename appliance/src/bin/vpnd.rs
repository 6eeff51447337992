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
//!   main thread: EAL init, ports, worker lcore ──► Manager::start (apply config)
//!   main thread: accept on the unix socket ──► one thread per client
//!                                                  │ read line (≤ 1 MiB)
//!                                                  │ lock Manager, handle, unlock
//!                                                  ▼ write reply line
//!   metrics thread: accept TCP ──► GET /metrics ──► lock Manager, render
//!   tick thread: every 20 ms lock Manager ──► Dataplane::poll (acks, retired
//!                SAs freed, counters)
//!   ike thread: appliance::ike_service::run (IKE over UDP 500/4500 on the
//!               outside addresses; Child SAs ──► lock Manager ──► install)
//!   bgp thread: appliance::bgp_service::run (a BGP session per dynamic-routing
//!               tunnel over kernel TCP between the inside addresses, while
//!               IKE has the tunnel up; selected routes ──► lock Manager ──►
//!               FIB; state and logs)
//!   signal thread: SIGTERM/SIGINT ──► ike thread closes every tunnel
//!                  (DELETE to each peer, through the still-running worker;
//!                  ≤ 3 s) ──► lock Manager (waits for an in-flight
//!                  save) ──► remove socket ──► stop worker, close ports,
//!                  rte_eal_cleanup ──► exit 0
//! ```
//!
//! With `--no-dataplane` an in-memory stand-in takes the configuration
//! (every tunnel DOWN, counters zero): for tests and for machines without
//! the NICs. systemd: `Type=notify`; `READY=1` is sent once the dataplane,
//! the socket and the metrics listener are up, `STOPPING=1` on SIGTERM.
//!
//! The IKE thread puts the outside and tunnel inside addresses on the
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
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use appliance::eal_args::{self, Memory};
use appliance::logging;
use appliance::mgmt::{self, LineRead, PeerPolicy};
use appliance::runtime::dataplane::DpdkDataplane;
use appliance::runtime::{Runtime, RuntimeConfig};
use clap::Parser;
use control::api::{self, ApiError, ErrorCode, MAX_MESSAGE_BYTES};
use control::config::journal::{DroppedTail, Journal, OpenReport};
use control::config::{ApplianceConfig, ConfigStore, DataplaneConfig, PortRole, StorePaths};
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

type Shared = Arc<Mutex<Manager<Box<dyn Dataplane>>>>;

fn lock(m: &Shared) -> MutexGuard<'_, Manager<Box<dyn Dataplane>>> {
    // A panicking client thread must not take the management plane down;
    // the manager's state is only replaced after a complete commit.
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
    let mut cfg = startup_config(&ConfigStore::new(config))
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
        let cfg = match startup_config(&store) {
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
    let shared: Shared = Arc::new(Mutex::new(manager));

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

    if metrics_cfg.enabled {
        match TcpListener::bind(metrics_cfg.listen) {
            Ok(l) => {
                let m = shared.clone();
                std::thread::spawn(move || serve_metrics(&l, &m));
            }
            Err(e) => {
                tracing::error!("cannot listen for metrics on {}: {e}", metrics_cfg.listen);
                let _ = std::fs::remove_file(&mgmt_cfg.socket_path);
                return 2;
            }
        }
    }

    let ike_shutdown = appliance::ike_service::Shutdown::default();
    match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(mut signals) => {
            let m = shared.clone();
            let path = mgmt_cfg.socket_path.clone();
            let ike = (!args.no_dataplane).then(|| ike_shutdown.clone());
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    let _ = mgmt::sd_notify("STOPPING=1");
                    // DELETE to the peers first, while the worker still
                    // forwards what the IKE sockets send.
                    if let Some(ike) = ike
                        && !ike.request_and_wait(IKE_SHUTDOWN)
                    {
                        tracing::warn!(
                            "IKE did not close its tunnels within {IKE_SHUTDOWN:?}; stopping anyway"
                        );
                    }
                    // Wait for a change in progress to finish (it holds
                    // the lock through its save), then stop; the lock is
                    // kept so no request runs after this point.
                    let mut guard = lock(&m);
                    let _ = std::fs::remove_file(&path);
                    tracing::info!("signal {sig}, stopping");
                    guard.dataplane_mut().shutdown();
                    logging::flush(LOG_FLUSH);
                    std::process::exit(0);
                }
            });
        }
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return 2;
        }
    }

    {
        let m = shared.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(20));
                let mut guard = lock(&m);
                guard.dataplane_mut().poll();
                for w in guard.take_warnings() {
                    tracing::warn!("{w}");
                }
            }
        });
    }

    // IKE and BGP on the real dataplane only: the stand-in moves no packets.
    if !args.no_dataplane {
        let m = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("ike".to_owned())
            .spawn(move || appliance::ike_service::run(|f| f(&mut *lock(&m)), &ike_shutdown));
        if let Err(e) = spawned {
            tracing::error!("cannot start the IKE thread: {e}");
            return 2;
        }
        let m = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("bgp".to_owned())
            .spawn(move || appliance::bgp_service::run(|f| f(&mut *lock(&m))));
        if let Err(e) = spawned {
            tracing::error!("cannot start the BGP thread: {e}");
            return 2;
        }
    }

    if let Err(e) = mgmt::sd_notify("READY=1") {
        tracing::warn!("sd_notify: {e}");
    }
    tracing::info!("serving on {}", mgmt_cfg.socket_path.display());
    let clients = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        match stream {
            Ok(mut s) => {
                if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                    clients.fetch_sub(1, Ordering::SeqCst);
                    let reply = api::encode_reply(
                        None,
                        Err(ApiError::new(
                            ErrorCode::Internal,
                            format!("{MAX_CLIENTS} clients are connected; try again later"),
                        )),
                    );
                    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = s.write_all(&reply);
                    continue;
                }
                let (m, clients) = (shared.clone(), clients.clone());
                std::thread::spawn(move || {
                    serve_client(s, &m, policy);
                    clients.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(e) => tracing::warn!("accept: {e}"),
        }
    }
    0
}

/// The configuration the dataplane starts with, read before the manager
/// (the EAL needs the ports first): the store's if it exists (a read-only
/// look; the manager opens it for writing, dropping a torn tail), else the
/// TOML file's.
fn startup_config(toml: &ConfigStore) -> Result<ApplianceConfig, String> {
    let paths = StorePaths::next_to(toml.path());
    if paths.exists() {
        // The dataplane section only: opening the store here would also
        // repair it, which is the manager's job; the snapshot has it.
        return Journal::read_snapshot(&paths).map_err(|e| e.to_string());
    }
    toml.load_or_prev()
        .map(|(c, _)| c)
        .map_err(|e| e.to_string())
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

/// How long SIGTERM waits for IKE to send DELETE to the peers.
const IKE_SHUTDOWN: Duration = Duration::from_secs(3);

/// Connections served at once; more are answered `internal` and closed, so
/// idle clients cannot exhaust threads.
const MAX_CLIENTS: usize = 64;

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

fn serve_client(stream: UnixStream, manager: &Shared, policy: PeerPolicy) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("client: {e}");
            return;
        }
    };
    match rustix::net::sockopt::socket_peercred(&stream) {
        Ok(cred) => {
            let pid = rustix::process::Pid::as_raw(Some(cred.pid));
            let groups = mgmt::supplementary_groups(pid);
            if !policy.allows(cred.uid.as_raw(), cred.gid.as_raw(), &groups) {
                tracing::warn!(
                    "refused client pid {pid} uid {} gid {}",
                    cred.uid.as_raw(),
                    cred.gid.as_raw()
                );
                let reply = api::encode_reply(
                    None,
                    Err(ApiError::new(
                        ErrorCode::PermissionDenied,
                        format!(
                            "uid {} is not allowed to use the management socket (root, the daemon's user or the socket group only)",
                            cred.uid.as_raw()
                        ),
                    )),
                );
                let _ = writer.write_all(&reply);
                // Let the client finish sending its request (bounded), so
                // it reads the refusal instead of a broken pipe.
                let _ = writer.shutdown(std::net::Shutdown::Write);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut sink = [0u8; 4096];
                let mut left = MAX_MESSAGE_BYTES;
                while let Ok(n @ 1..) = (&stream).read(&mut sink) {
                    left = left.saturating_sub(n);
                    if left == 0 {
                        break;
                    }
                }
                return;
            }
        }
        Err(e) => {
            tracing::warn!("cannot read peer credentials: {e}");
            return;
        }
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(300)));
    // A client that does not read its replies cannot hold a thread forever.
    let _ = writer.set_write_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        let reply = match mgmt::read_bounded_line(&mut reader, MAX_MESSAGE_BYTES, &mut line) {
            Ok(LineRead::Eof) | Err(_) => return,
            Ok(LineRead::TooLong(n)) => api::encode_reply(
                None,
                Err(ApiError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "message of {n} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes; discarded"
                    ),
                )),
            ),
            Ok(LineRead::Line) => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match api::decode_request(&line) {
                    Ok(env) => {
                        let result = lock(manager).handle(env.request);
                        api::encode_reply(Some(env.id), result)
                    }
                    Err(e) => api::encode_reply(e.id, Err(e.error)),
                }
            }
        };
        if writer.write_all(&reply).is_err() {
            return;
        }
    }
}

fn serve_metrics(listener: &TcpListener, manager: &Shared) {
    for stream in listener.incoming() {
        let Ok(s) = stream else { continue };
        let m = manager.clone();
        std::thread::spawn(move || serve_metrics_client(s, &m));
    }
}

fn serve_metrics_client(mut s: TcpStream, manager: &Shared) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    // Read the request head (bounded to 8 KiB).
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&req);
    let first = head.lines().next().unwrap_or_default();
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = if method == "GET" && (target == "/metrics" || target == "/") {
        (
            "200 OK",
            control::metrics::CONTENT_TYPE,
            lock(manager).render_metrics(),
        )
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "GET /metrics\n".to_owned(),
        )
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes());
}
