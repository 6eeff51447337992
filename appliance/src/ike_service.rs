//! IKE for `vpnd`'s tunnels: the per-tunnel logic of
//! [`control::ike::tunnels`] driven over kernel UDP sockets and the
//! system clocks. Only I/O lives here: sockets, threads, the clocks, the
//! daemon's log, the kernel port's addresses.
//!
//! ```text
//!   receiver threads (one per socket: <outside address>:500 and :4500,
//!   bound with IP_FREEBIND, so the address may appear on the kernel port
//!   later)  ──► bounded mpsc ──►  IKE thread (run):
//!                           TunnelSet::handle_datagram
//!                           TunnelSet::handle_timeout
//!                           every 250 ms: lock Manager, tunnel_specs(config)
//!                                         ──► TunnelSet::reconcile
//!                                         ──► TunnelSet::handle_sa_events
//!                                         ──► kernel_port::KernelPort::reconcile
//!                                             (the tap's addresses; unlocked)
//!                           poll_transmit ──► send_to (out of the kernel
//!                                             port; the worker routes it out)
//!                           events? lock Manager ──► TunnelSet::apply
//!                                             (SAs, tunnel state, activity log)
//!                           poll_log      ──► the log (`vpnd: ike: …`)
//! ```
//!
//! Every call into the [`TunnelSet`] carries the time read here
//! ([`Now`]: monotonic and wall clock). The receivers hand datagrams to
//! the IKE thread through a bounded queue: when the IKE thread falls
//! behind, the excess is dropped and counted
//! ([`IkeCounters::rx_queue_full`]) rather than buffered without limit.
//! The counters are logged when they move, and published as metrics.
//!
//! What it never does: touch the dataplane except through
//! [`control::ike::tunnels::TunnelSink`] (the manager), or hold the
//! manager's lock while waiting for the network.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control::config::ApplianceConfig;
use control::dataplane::Dataplane;
use control::ike::sa::{Datagram, IKE_PORT, NAT_T_PORT, Transmit};
use control::ike::tunnels::{IkeCounters, Now, TunnelSet, TunnelSink, tunnel_specs};
use control::manager::Manager;

/// How often the configuration is compared with the running tunnels.
pub const RECONCILE_PERIOD: Duration = Duration::from_millis(250);
/// Longest sleep of the IKE thread (bounds the reaction to a change).
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Largest IKE datagram read.
const MAX_DATAGRAM: usize = 65_535;
/// Receiver threads wake this often to notice they must stop.
const RECV_TIMEOUT: Duration = Duration::from_millis(500);
/// Test mode: an integer > 1 in this environment variable divides every
/// tunnel's IKE and Child SA lifetimes and rekey margin (the spec's
/// minimum Child SA lifetime is 900 s; rekey tests need seconds). vpnd
/// logs it at start; never set it in production.
pub const LIFETIME_DIVISOR_ENV: &str = "VPND_IKE_LIFETIME_DIVISOR";
/// Test mode: a packet count in this environment variable becomes the
/// soft packet lifetime of every installed Child SA (rekey tests need
/// small numbers; production uses [`control::ike::sa::SEQ_REKEY_PACKETS`] for SAs without
/// ESN and no packet limit otherwise). Logged at start.
pub const REKEY_PACKETS_ENV: &str = "VPND_IKE_REKEY_PACKETS";

/// The counters are logged (when they moved) at most this often.
const COUNTERS_LOG_PERIOD: Duration = Duration::from_secs(2);
/// A failed bind is retried after this long.
const BIND_RETRY: Duration = Duration::from_secs(5);
/// Datagrams queued from the receivers to the IKE thread; more are
/// dropped (counted) while the IKE thread is behind.
pub const RX_QUEUE: usize = 4096;

/// A datagram read by a receiver thread.
#[derive(Debug)]
struct Received {
    local: SocketAddr,
    remote: SocketAddr,
    payload: Vec<u8>,
}

/// The two IKE sockets of one outside address and their receivers.
#[derive(Debug)]
struct LocalSockets {
    ike: UdpSocket,
    nat_t: UdpSocket,
    stop: Arc<AtomicBool>,
}

impl Drop for LocalSockets {
    fn drop(&mut self) {
        // The receivers notice within RECV_TIMEOUT and close their copies.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A UDP socket on `addr`, bound even when the address is not (yet) on
/// an interface (`IP_FREEBIND`): the kernel port's address may be set up
/// after vpnd starts.
fn bind_freebind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use rustix::net::{AddressFamily, SocketType, ipproto, sockopt};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket(family, SocketType::DGRAM, Some(ipproto::UDP))?;
    if addr.is_ipv4() {
        sockopt::set_ip_freebind(&fd, true)?;
    } else {
        sockopt::set_ipv6_v6only(&fd, true)?;
        sockopt::set_ipv6_freebind(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    Ok(UdpSocket::from(fd))
}

fn spawn_receiver(
    socket: &UdpSocket,
    local: SocketAddr,
    stop: &Arc<AtomicBool>,
    tx: &mpsc::SyncSender<Received>,
    full: &Arc<AtomicU64>,
) -> std::io::Result<()> {
    let s = socket.try_clone()?;
    s.set_read_timeout(Some(RECV_TIMEOUT))?;
    let (stop, tx, full) = (stop.clone(), tx.clone(), full.clone());
    std::thread::Builder::new()
        .name(format!("ike-rx-{}", local.port()))
        .spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while !stop.load(Ordering::Relaxed) {
                match s.recv_from(&mut buf) {
                    Ok((n, remote)) => {
                        let r = Received {
                            local,
                            remote,
                            payload: buf[..n].to_vec(),
                        };
                        match tx.try_send(r) {
                            Ok(()) => {}
                            Err(mpsc::TrySendError::Full(_)) => {
                                full.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(mpsc::TrySendError::Disconnected(_)) => return,
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => {
                        tracing::warn!("ike: receive on {local}: {e}");
                        std::thread::sleep(RECV_TIMEOUT);
                    }
                }
            }
        })?;
    Ok(())
}

/// The IKE sockets (UDP 500 and 4500 on each outside address in use).
#[derive(Debug)]
pub struct IkeSockets {
    by_local: BTreeMap<IpAddr, LocalSockets>,
    failed: BTreeMap<IpAddr, Instant>,
    tx: mpsc::SyncSender<Received>,
    rx: mpsc::Receiver<Received>,
    send_errors: u64,
    /// Datagrams the receivers dropped because the queue was full.
    queue_full: Arc<AtomicU64>,
}

impl Default for IkeSockets {
    fn default() -> Self {
        Self::new()
    }
}

impl IkeSockets {
    /// No sockets yet.
    #[must_use]
    pub fn new() -> Self {
        let (tx, rx) = mpsc::sync_channel(RX_QUEUE);
        Self {
            by_local: BTreeMap::new(),
            failed: BTreeMap::new(),
            tx,
            rx,
            send_errors: 0,
            queue_full: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bind the sockets of `locals` not bound yet (a failed bind is
    /// retried after `BIND_RETRY`); close those of other addresses.
    pub fn ensure(&mut self, locals: &BTreeSet<IpAddr>, now: Instant) {
        self.by_local.retain(|a, _| locals.contains(a));
        self.failed.retain(|a, _| locals.contains(a));
        for &a in locals {
            if self.by_local.contains_key(&a)
                || self.failed.get(&a).is_some_and(|t| now < *t + BIND_RETRY)
            {
                continue;
            }
            match self.bind(a) {
                Ok(s) => {
                    tracing::info!("ike: listening on {a} ports {IKE_PORT} and {NAT_T_PORT}");
                    self.failed.remove(&a);
                    self.by_local.insert(a, s);
                }
                Err(e) => {
                    tracing::warn!("ike: cannot bind {a} ports {IKE_PORT}/{NAT_T_PORT}: {e}");
                    self.failed.insert(a, now);
                }
            }
        }
    }

    fn bind(&self, a: IpAddr) -> std::io::Result<LocalSockets> {
        let ike = bind_freebind(SocketAddr::new(a, IKE_PORT))?;
        let nat_t = bind_freebind(SocketAddr::new(a, NAT_T_PORT))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = LocalSockets { ike, nat_t, stop };
        let full = &self.queue_full;
        spawn_receiver(
            &s.ike,
            SocketAddr::new(a, IKE_PORT),
            &s.stop,
            &self.tx,
            full,
        )?;
        spawn_receiver(
            &s.nat_t,
            SocketAddr::new(a, NAT_T_PORT),
            &s.stop,
            &self.tx,
            full,
        )?;
        Ok(s)
    }

    /// Send one datagram from the socket its source names.
    pub fn send(&mut self, t: &Transmit) {
        let Some(s) = self.by_local.get(&t.local.ip()) else {
            self.send_errors += 1;
            return;
        };
        let sock = if t.local.port() == NAT_T_PORT {
            &s.nat_t
        } else {
            &s.ike
        };
        if let Err(e) = sock.send_to(&t.payload, t.remote) {
            self.send_errors += 1;
            tracing::warn!("ike: send {} -> {}: {e}", t.local, t.remote);
        }
    }

    /// Datagrams dropped because the receive queue was full.
    #[must_use]
    pub fn queue_full(&self) -> u64 {
        self.queue_full.load(Ordering::Relaxed)
    }

    /// Wait up to `timeout` for a datagram and hand it, and every other one
    /// already queued, to `set`.
    pub fn receive(&self, timeout: Duration, set: &mut TunnelSet) {
        let Ok(first) = self.rx.recv_timeout(timeout) else {
            return;
        };
        for r in std::iter::once(first).chain(self.rx.try_iter()) {
            set.handle_datagram(
                Instant::now(),
                Datagram {
                    local: r.local,
                    remote: r.remote,
                    payload: &r.payload,
                },
            );
        }
    }
}

/// Asks the IKE thread to close every tunnel (an INFORMATIONAL DELETE
/// of each IKE SA to its peer, RFC 7296 § 1.4.1) and to stop; the daemon
/// does this on SIGTERM before it stops the dataplane, which must still
/// forward the DELETEs.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<(std::sync::Mutex<ShutdownState>, std::sync::Condvar)>);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ShutdownState {
    #[default]
    Running,
    Requested,
    Done,
}

/// After the DELETEs are handed to the kernel: time for the worker to take
/// them from the kernel port and send them out.
const DELETE_FLUSH: Duration = Duration::from_millis(300);

impl Shutdown {
    fn state(&self) -> ShutdownState {
        *self
            .0
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, s: ShutdownState) {
        *self
            .0
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = s;
        self.0.1.notify_all();
    }

    /// Request the shutdown and wait up to `limit` for the DELETEs to be
    /// sent. `false` if the IKE thread did not finish in time.
    #[must_use]
    pub fn request_and_wait(&self, limit: Duration) -> bool {
        self.set(ShutdownState::Requested);
        let guard = self
            .0
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (guard, _) = self
            .0
            .1
            .wait_timeout_while(guard, limit, |s| *s != ShutdownState::Done)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard == ShutdownState::Done
    }
}

/// The IKE thread's loop, until [`Shutdown::request_and_wait`]:
/// `with_manager` runs a closure with the manager locked.
pub fn run<F>(mut with_manager: F, shutdown: &Shutdown)
where
    F: FnMut(&mut dyn FnMut(&mut dyn ManagerAccess)),
{
    let mut set = TunnelSet::new();
    if let Some(d) = std::env::var(LIFETIME_DIVISOR_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|d| *d > 1)
    {
        tracing::warn!(
            "ike: TEST MODE: lifetimes and rekey margins divided by {d} ({LIFETIME_DIVISOR_ENV})"
        );
        set.set_lifetime_divisor(d);
    }
    if let Some(n) = std::env::var(REKEY_PACKETS_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| *n > 0)
    {
        tracing::warn!("ike: TEST MODE: Child SAs rekeyed every {n} packets ({REKEY_PACKETS_ENV})");
        set.set_rekey_packets(n);
    }
    let mut sockets = IkeSockets::new();
    let mut next_reconcile = Instant::now();
    let mut kernel: Option<crate::kernel_port::KernelPort> = None;
    let mut logged = IkeCounters::default();
    let mut next_counters_log = Instant::now();
    loop {
        flush_log(&mut set);
        let at = clock();
        let now = at.instant;
        if shutdown.state() == ShutdownState::Requested {
            let n = set.len();
            with_manager(&mut |m: &mut dyn ManagerAccess| set.close_all(at, m.sink()));
            flush_log(&mut set);
            let mut sent = 0;
            while let Some(t) = set.poll_transmit() {
                sockets.send(&t);
                sent += 1;
            }
            tracing::info!("ike: shutting down: {n} tunnel(s) closed, {sent} DELETE(s) sent");
            std::thread::sleep(DELETE_FLUSH);
            shutdown.set(ShutdownState::Done);
            return;
        }
        if now >= next_counters_log {
            next_counters_log = now + COUNTERS_LOG_PERIOD;
            set.set_rx_queue_full(sockets.queue_full());
            let c = set.counters();
            // Only what a flood or a misconfiguration moves.
            let moved = |c: &IkeCounters| {
                (
                    c.init_unknown_peer,
                    c.cookies_sent,
                    c.init_refused,
                    c.rx_queue_full,
                )
            };
            if moved(&c) != moved(&logged) {
                tracing::info!("ike: counters {c:?}");
                logged = c;
            }
            with_manager(&mut |m: &mut dyn ManagerAccess| m.sink().publish_ike_counters(&c));
        }
        if now >= next_reconcile {
            next_reconcile = now + RECONCILE_PERIOD;
            let mut tap = None;
            with_manager(&mut |m: &mut dyn ManagerAccess| {
                let (specs, skipped) = tunnel_specs(m.config());
                set.reconcile(at, specs, skipped, m.sink());
                let events = m.sink().poll_sa_events();
                set.handle_sa_events(at, events, m.sink());
                tap = crate::kernel_port::kernel_iface(m.config())
                    .map(|i| (i, crate::kernel_port::desired(m.config())));
            });
            // The tap's addresses, routes and neighbours (outside the lock:
            // this runs `ip` when something changed).
            if let Some((iface, want)) = tap {
                if kernel.as_ref().is_none_or(|k| k.iface() != iface) {
                    kernel = Some(crate::kernel_port::KernelPort::new(&iface));
                }
                if let Some(k) = kernel.as_mut() {
                    k.reconcile(&want, now);
                }
            }
            sockets.ensure(&set.local_addresses(), now);
        }
        set.handle_timeout(Instant::now());
        while let Some(t) = set.poll_transmit() {
            sockets.send(&t);
        }
        let at = clock();
        if set.collect_events(at.instant) {
            with_manager(&mut |m: &mut dyn ManagerAccess| set.apply(at, m.sink()));
            // Applying can queue nothing, but a close may have.
            while let Some(t) = set.poll_transmit() {
                sockets.send(&t);
            }
        }
        let now = Instant::now();
        let wake = set
            .poll_timeout()
            .unwrap_or(now + MAX_WAIT)
            .min(now + MAX_WAIT)
            .min(next_reconcile);
        sockets.receive(wake.saturating_duration_since(now), &mut set);
    }
}

/// Both clocks, read now.
fn clock() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// The tunnel set's log lines to the daemon's log.
fn flush_log(set: &mut TunnelSet) {
    while let Some(line) = set.poll_log() {
        tracing::info!("ike: {line}");
    }
}

/// What [`run`] needs from the locked manager.
pub trait ManagerAccess {
    /// The current configuration.
    fn config(&self) -> &ApplianceConfig;
    /// The manager as a [`TunnelSink`].
    fn sink(&mut self) -> &mut dyn TunnelSink;
}

impl<D: Dataplane> ManagerAccess for Manager<D> {
    fn config(&self) -> &ApplianceConfig {
        Self::config(self)
    }
    fn sink(&mut self) -> &mut dyn TunnelSink {
        self
    }
}
