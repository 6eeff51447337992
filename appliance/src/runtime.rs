//! The dataplane runtime: the EAL, the ports, one worker lcore running
//! [`worker::Worker`], and the control core's end of its rings. Shared by
//! `vpn-dp` (static SAs from a file) and `vpnd` (configuration from the
//! management API, SAs from IKE).
//!
//! ```text
//!   control core (vpnd / vpn-dp thread)                worker lcore (pinned by the EAL)
//!   Runtime::send(Command) ──► [SPSC command ring] ──►  Worker::apply_commands between bursts
//!   Runtime::poll()        ◄── [SPSC event ring]  ◄──   Done/Failed acks, retired SAs/FIBs, lifetimes
//!   Runtime::stats()       ◄── [SPSC stats ring]  ◄──   a WorkerStats copy every 100 ms (and at exit)
//!   Port::stats() (rte_eth_stats_get, control side)     rx burst outside/inside/kernel
//!                                                        → Worker::handle_* → tx burst
//! ```
//!
//! What it guarantees: the worker loop never allocates, locks or makes a
//! syscall per packet (the stats copy is a fixed-size value pushed into a
//! preallocated ring, dropped when the control core is behind); every
//! packet freed without being sent is counted (pipeline drop reasons in
//! [`WorkerStats`], a full tx ring in [`WorkerSnapshot::tx_full`]).
//! [`Runtime::shutdown`] stops the worker, waits for it, releases ports
//! and mempool, runs `rte_eal_cleanup` and removes the EAL's runtime
//! directory. What it never does: decide SAs or routes (that is the
//! caller's), or share a table with the worker (everything goes through
//! commands).

pub mod dataplane;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dpdk::{Burst, Eal, Mbuf, Mempool, Port, PortConfig, PortStats, RxQueue, TxQueue};
use fib::TunnelId;
use worker::{
    Action, Command, ControlEnd, CountersHandle, Event, FnIo, SaSnapshot, TunnelSnapshot, Worker,
    WorkerStats,
};

use crate::eal_args::{self, Memory};

/// How often the worker publishes its counters.
const STATS_PERIOD_MS: u64 = 100;
/// Commands the ring holds.
const COMMAND_RING: usize = 4096;
/// Failures remembered for [`Runtime::wait`].
const FAILURES_KEPT: usize = 64;
/// How often [`Runtime::poll`] asks the worker for its per-SA counters.
const SA_SNAPSHOT_PERIOD: Duration = Duration::from_secs(1);

/// What to start.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// EAL `--file-prefix`, unique per DPDK process on the host.
    pub file_prefix: String,
    /// The main lcore (control core).
    pub main_lcore: u32,
    /// The worker lcore. (One worker for now; the configuration may name
    /// more, the others stay idle.)
    pub worker_lcore: u32,
    /// Hugepages or not.
    pub memory: Memory,
    /// The outside port's device: a virtual device (`net_af_packet0,iface=x`)
    /// or a PCI address.
    pub outside: String,
    /// The inside port's device.
    pub inside: String,
    /// The exception port into the kernel (`net_tap0,iface=x`), if any.
    pub kernel: Option<String>,
    /// SAs per direction the worker's tables hold.
    pub sa_capacity: usize,
    /// Mbufs in the pool.
    pub mbufs: u32,
}

impl RuntimeConfig {
    /// Defaults for everything but the devices and lcores.
    #[must_use]
    pub fn new(file_prefix: &str, outside: &str, inside: &str, memory: Memory) -> Self {
        Self {
            file_prefix: file_prefix.to_owned(),
            main_lcore: 0,
            worker_lcore: 1,
            memory,
            outside: outside.to_owned(),
            inside: inside.to_owned(),
            kernel: None,
            sa_capacity: 16 * 1024,
            mbufs: 8191,
        }
    }

    /// The EAL arguments: virtual devices with `--vdev`, PCI devices with
    /// `-a` (and then without `--no-pci`).
    #[must_use]
    pub fn eal_args(&self) -> Vec<String> {
        let devices: Vec<&String> = [&self.outside, &self.inside]
            .into_iter()
            .chain(self.kernel.as_ref())
            .collect();
        let vdevs: Vec<String> = devices
            .iter()
            .filter(|d| !is_pci(d))
            .map(|d| (*d).clone())
            .collect();
        let lcores = format!("{},{}", self.main_lcore, self.worker_lcore);
        let mut args = eal_args::build(
            &self.file_prefix,
            &lcores,
            Some(self.main_lcore),
            &self.memory,
            &vdevs,
        );
        let pci: Vec<&&String> = devices.iter().filter(|d| is_pci(d)).collect();
        if !pci.is_empty() {
            args.retain(|a| a != "--no-pci");
            for p in pci {
                args.push("-a".to_owned());
                args.push((*p).clone());
            }
        }
        args
    }
}

/// A PCI address (`0000:01:00.0` or `01:00.0`), as opposed to a vdev.
fn is_pci(device: &str) -> bool {
    !device.starts_with("net_") && device.contains(':')
}

/// The ethdev name of a device specification: a vdev's name is what comes
/// before the first comma; a PCI device is named by its address.
fn ethdev_name(device: &str) -> &str {
    device.split(',').next().unwrap_or(device)
}

/// The MAC of the kernel's side of a `net_tap…,iface=NAME` device: frames
/// the worker punts must carry it, or the kernel discards them as meant
/// for another host. (The PMD's own MAC is a different one.)
fn kernel_iface_mac(device: &str) -> Option<[u8; 6]> {
    let iface = device.split(',').find_map(|kv| kv.strip_prefix("iface="))?;
    // The name must be a plain interface name, not a path.
    if iface.is_empty() || iface.contains('/') || iface.starts_with('.') {
        return None;
    }
    let text = std::fs::read_to_string(format!("/sys/class/net/{iface}/address")).ok()?;
    control::config::parse_mac(text.trim()).ok()
}

/// Why the runtime could not start or take a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// `rte_eal_init` failed.
    #[error("EAL initialisation with {args:?}: {source}")]
    Eal {
        /// The arguments.
        args: Vec<String>,
        /// DPDK's error.
        source: dpdk::Error,
    },
    /// A port could not be found, configured or started.
    #[error("{role} port {device:?}: {what}: {source}")]
    Port {
        /// outside / inside / kernel.
        role: &'static str,
        /// Its device.
        device: String,
        /// The step.
        what: &'static str,
        /// DPDK's error.
        source: dpdk::Error,
    },
    /// The mbuf pool could not be created.
    #[error("mbuf pool of {count} mbufs: {source}")]
    Mempool {
        /// Its size.
        count: u32,
        /// DPDK's error.
        source: dpdk::Error,
    },
    /// The worker lcore could not be launched.
    #[error("launching the worker on lcore {lcore}: {source}")]
    Launch {
        /// The lcore.
        lcore: u32,
        /// DPDK's error.
        source: dpdk::Error,
    },
    /// The command ring is full.
    #[error("the worker's command ring is full")]
    RingFull,
    /// The worker refused a command.
    #[error("the worker refused command {seq}: {reason}")]
    Refused {
        /// Its sequence number.
        seq: u64,
        /// The worker's reason.
        reason: &'static str,
    },
    /// The worker did not acknowledge in time.
    #[error("the worker did not acknowledge command {seq} within {timeout:?}")]
    Timeout {
        /// Its sequence number.
        seq: u64,
        /// How long we waited.
        timeout: Duration,
    },
}

/// What the worker publishes: its counters plus what the loop around it
/// counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// The pipeline's counters.
    pub worker: WorkerStats,
    /// Packets freed because a tx ring was full: outside, inside, kernel.
    pub tx_full: [u64; 3],
    /// Packets the pipeline sent to the kernel while no kernel port exists.
    pub no_kernel_port: u64,
    /// Seconds the worker has been running (its SA ageing clock).
    pub uptime_secs: u64,
}

/// The ports' MAC addresses, read after start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortMacs {
    /// Outside port.
    pub outside: [u8; 6],
    /// Inside port.
    pub inside: [u8; 6],
    /// The kernel side of the exception port, if any.
    pub kernel: Option<[u8; 6]>,
}

/// Waits for the worker lcore's job.
type Join = Box<dyn FnOnce() -> i32 + Send>;

/// The running dataplane. Drop (or [`Runtime::shutdown`]) stops it.
pub struct Runtime {
    control: ControlEnd,
    stop: Arc<AtomicBool>,
    job: Option<Join>,
    stats_rx: rtrb::Consumer<WorkerSnapshot>,
    last: WorkerSnapshot,
    ports: Vec<(&'static str, Port)>,
    macs: PortMacs,
    acked: u64,
    failures: std::collections::VecDeque<(u64, &'static str)>,
    failed_total: u64,
    lifetime_events: Vec<Event>,
    counters: CountersHandle,
    sa_capacity: usize,
    sa_snapshot: Vec<SaSnapshot>,
    sa_snapshot_pending: bool,
    sa_snapshot_at: Instant,
    started: Instant,
    prefix: String,
    eal: Option<Eal>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("prefix", &self.prefix)
            .field("running", &self.job.is_some())
            .field("ports", &self.ports)
            .field("acked", &self.acked)
            .field("failed_total", &self.failed_total)
            .finish_non_exhaustive()
    }
}

/// The worker's queues.
struct Queues {
    outside: (RxQueue, TxQueue),
    inside: (RxQueue, TxQueue),
    kernel: Option<(RxQueue, TxQueue)>,
}

/// The worker's tx side: one burst per port and what could not be sent.
struct TxSide {
    to: [Burst; 3],
    tx_full: [u64; 3],
    no_kernel_port: u64,
}

impl TxSide {
    /// Queues `m` toward the port `action` names; a full burst is sent
    /// first (fragments can make one rx burst several tx bursts long).
    fn emit(&mut self, q: &mut Queues, action: Action, m: Mbuf) {
        let (i, txq) = match action {
            Action::ToOutside => (0, &mut q.outside.1),
            Action::ToInside => (1, &mut q.inside.1),
            Action::ToKernel => match &mut q.kernel {
                Some(k) => (2, &mut k.1),
                None => {
                    self.no_kernel_port += 1;
                    return;
                }
            },
            Action::Drop => return,
        };
        if let Err(m) = self.to[i].push(m) {
            self.tx_full[i] += txq.tx_burst(&mut self.to[i]).dropped as u64;
            let _ = self.to[i].push(m);
        }
    }

    /// Sends every non-empty burst.
    fn flush(&mut self, q: &mut Queues) {
        let mut send = |i: usize, txq: &mut TxQueue| {
            if !self.to[i].is_empty() {
                self.tx_full[i] += txq.tx_burst(&mut self.to[i]).dropped as u64;
            }
        };
        send(0, &mut q.outside.1);
        send(1, &mut q.inside.1);
        if let Some(k) = &mut q.kernel {
            send(2, &mut k.1);
        }
    }
}

impl Runtime {
    /// Initialise the EAL, start the ports and launch the worker.
    ///
    /// # Errors
    /// [`RuntimeError`] naming the step that failed. The EAL can be
    /// initialised once per process: a second `start` fails.
    pub fn start(config: &RuntimeConfig) -> Result<Self, RuntimeError> {
        let args = config.eal_args();
        let eal = Eal::init(&args).map_err(|source| RuntimeError::Eal {
            args: args.clone(),
            source,
        })?;
        let result = Self::start_on(&eal, config);
        match result {
            Ok(mut rt) => {
                rt.eal = Some(eal);
                Ok(rt)
            }
            Err(e) => {
                drop(eal);
                remove_runtime_dir(&config.file_prefix);
                Err(e)
            }
        }
    }

    fn start_on(eal: &Eal, config: &RuntimeConfig) -> Result<Self, RuntimeError> {
        let pool = Mempool::new(
            eal,
            "vpn_pool",
            config.mbufs,
            256,
            Mempool::DEFAULT_DATA_ROOM,
        )
        .map_err(|source| RuntimeError::Mempool {
            count: config.mbufs,
            source,
        })?;
        let start = |role: &'static str, device: &str| {
            let err = |what, source| RuntimeError::Port {
                role,
                device: device.to_owned(),
                what,
                source,
            };
            let id = dpdk::port_by_name(eal, ethdev_name(device)).map_err(|e| err("find", e))?;
            let port = Port::configure(eal, id, &PortConfig::default(), &pool)
                .map_err(|e| err("configure", e))?;
            port.start().map_err(|e| err("start", e))?;
            let rx = port.rx_queue(0).map_err(|e| err("rx queue 0", e))?;
            let tx = port.tx_queue(0).map_err(|e| err("tx queue 0", e))?;
            let mac = port.mac().map_err(|e| err("MAC address", e))?;
            Ok::<_, RuntimeError>((port, rx, tx, mac))
        };
        let (outside, o_rx, o_tx, o_mac) = start("outside", &config.outside)?;
        let (inside, i_rx, i_tx, i_mac) = start("inside", &config.inside)?;
        let kernel = config
            .kernel
            .as_deref()
            .map(|k| start("kernel", k))
            .transpose()?;
        let macs = PortMacs {
            outside: o_mac,
            inside: i_mac,
            kernel: kernel.as_ref().map(|k| {
                config
                    .kernel
                    .as_deref()
                    .and_then(kernel_iface_mac)
                    .unwrap_or(k.3)
            }),
        };
        let mut ports = vec![("outside", outside), ("inside", inside)];
        let queues = Queues {
            outside: (o_rx, o_tx),
            inside: (i_rx, i_tx),
            kernel: kernel.map(|(port, rx, tx, _)| {
                ports.push(("kernel", port));
                (rx, tx)
            }),
        };
        // Where the pipeline's extra packets (fragments, ICMP errors) come
        // from.
        let worker_pool = pool.clone();

        let (control, end) = worker::channel(COMMAND_RING);
        let w = Worker::new(end, config.sa_capacity);
        let counters = w.counters();
        let (mut stats_tx, stats_rx) = rtrb::RingBuffer::new(4);
        let stop = Arc::new(AtomicBool::new(false));
        let lcore = dpdk::LcoreId(config.worker_lcore);
        let job = {
            let stop = stop.clone();
            eal.launch(lcore, move || {
                let (mut w, mut queues) = (w, queues);
                let snapshot = worker_loop(&mut w, &mut queues, &worker_pool, &stop, &mut stats_tx);
                // The final counters; the control core is waiting for them.
                let _ = stats_tx.push(snapshot);
                0
            })
            .map_err(|source| RuntimeError::Launch {
                lcore: config.worker_lcore,
                source,
            })?
        };
        let job: Join = Box::new(move || job.join());
        Ok(Self {
            control,
            stop,
            job: Some(job),
            stats_rx,
            last: WorkerSnapshot::default(),
            ports,
            macs,
            acked: 0,
            failures: std::collections::VecDeque::new(),
            failed_total: 0,
            lifetime_events: Vec::new(),
            counters,
            sa_capacity: config.sa_capacity,
            sa_snapshot: Vec::new(),
            sa_snapshot_pending: false,
            sa_snapshot_at: Instant::now(),
            started: Instant::now(),
            prefix: config.file_prefix.clone(),
            eal: None,
        })
    }

    /// The ports' MAC addresses.
    #[must_use]
    pub fn macs(&self) -> PortMacs {
        self.macs
    }

    /// Seconds since the worker started: the clock SAs are installed at
    /// (`InboundSa::new(cfg, rt.now_secs())`).
    #[must_use]
    pub fn now_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Queue a command for the worker; returns its sequence number.
    ///
    /// # Errors
    /// [`RuntimeError::RingFull`] (the command is dropped: SAs in it are
    /// zeroised and freed here).
    pub fn send(&mut self, command: Command) -> Result<u64, RuntimeError> {
        self.control
            .send(command)
            .map_err(|_| RuntimeError::RingFull)
    }

    /// Queue a command, waiting (polling events, 1 ms at a time) while
    /// the ring is full, up to `patience`: for bulk loads such as the
    /// start-up of a large static configuration.
    ///
    /// # Errors
    /// [`RuntimeError::RingFull`] when the ring stayed full for
    /// `patience` (the worker is not draining it).
    pub fn send_waiting(
        &mut self,
        command: Command,
        patience: Duration,
    ) -> Result<u64, RuntimeError> {
        let deadline = Instant::now() + patience;
        let mut command = command;
        loop {
            match self.control.send(command) {
                Ok(seq) => return Ok(seq),
                Err(back) if Instant::now() < deadline => {
                    command = back;
                    self.poll();
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return Err(RuntimeError::RingFull),
            }
        }
    }

    /// Collect events: acknowledgements, failures, retired objects (freed
    /// here, on the control core), lifetime events (kept for
    /// [`take_lifetime_events`](Self::take_lifetime_events)), and the
    /// newest counters.
    pub fn poll(&mut self) {
        while let Some(ev) = self.control.poll_event() {
            match ev {
                Event::Done { seq } => self.acked = self.acked.max(seq + 1),
                Event::Failed { seq, reason } => {
                    self.acked = self.acked.max(seq + 1);
                    self.failed_total += 1;
                    if self.failures.len() == FAILURES_KEPT {
                        self.failures.pop_front();
                    }
                    self.failures.push_back((seq, reason));
                }
                // Bounded (nobody may be taking them yet); beyond the
                // bound they are dropped like retired objects.
                ev @ Event::Lifetime { .. } if self.lifetime_events.len() < 4096 => {
                    self.lifetime_events.push(ev);
                }
                Event::SaSnapshot { sas, .. } => {
                    self.sa_snapshot = *sas;
                    self.sa_snapshot_pending = false;
                }
                // Retired SAs and tables: dropping them here frees them.
                _ => {}
            }
        }
        while let Ok(s) = self.stats_rx.pop() {
            self.last = s;
        }
        // Per-SA counters: one request in flight at a time; the buffer is
        // allocated here, the worker only fills it.
        if !self.sa_snapshot_pending
            && self.job.is_some()
            && self.sa_snapshot_at.elapsed() >= SA_SNAPSHOT_PERIOD
        {
            // Room for twice the SAs seen last time (at least 64), never
            // more than both tables can hold.
            let room = (self.sa_snapshot.len() * 2)
                .max(64)
                .min(self.sa_capacity.saturating_mul(2).max(64));
            let buf = Box::new(Vec::with_capacity(room));
            if self.control.send(Command::SnapshotSas(buf)).is_ok() {
                self.sa_snapshot_pending = true;
                self.sa_snapshot_at = Instant::now();
            }
        }
    }

    /// One tunnel's counters (`TunnelDataIn`/`TunnelDataOut`, packets,
    /// drops), read lock-free from the worker's counter block.
    #[must_use]
    pub fn tunnel_counters(&self, tunnel: TunnelId) -> Option<TunnelSnapshot> {
        self.counters.tunnel(tunnel)
    }

    /// Tunnel ids the worker counts (`0..capacity`).
    #[must_use]
    pub fn tunnel_capacity(&self) -> usize {
        self.counters.capacity()
    }

    /// The newest per-SA counters (refreshed about once a second by
    /// [`poll`](Self::poll)).
    #[must_use]
    pub fn sa_counters(&self) -> &[SaSnapshot] {
        &self.sa_snapshot
    }

    /// Wait (polling) until command `seq` is applied.
    ///
    /// # Errors
    /// [`RuntimeError::Refused`] with the worker's reason, or
    /// [`RuntimeError::Timeout`].
    pub fn wait(&mut self, seq: u64, timeout: Duration) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll();
            if self.acked > seq {
                return match self.failures.iter().find(|(s, _)| *s == seq) {
                    Some((_, reason)) => Err(RuntimeError::Refused { seq, reason }),
                    None => Ok(()),
                };
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Timeout { seq, timeout });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Commands applied so far and how many of them failed.
    #[must_use]
    pub fn commands(&self) -> (u64, u64) {
        (self.acked, self.failed_total)
    }

    /// SA lifetime events reported since the last call.
    pub fn take_lifetime_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.lifetime_events)
    }

    /// The newest counters the worker published (call [`poll`](Self::poll)
    /// first).
    #[must_use]
    pub fn worker_stats(&self) -> &WorkerSnapshot {
        &self.last
    }

    /// The ports' counters, by role (`outside`, `inside`, `kernel`).
    #[must_use]
    pub fn port_stats(&self) -> Vec<(&'static str, PortStats)> {
        self.ports
            .iter()
            .map(|(role, p)| (*role, p.stats().unwrap_or_default()))
            .collect()
    }

    /// Stop the worker, wait for it, free what it held, release the ports
    /// and the mempool, clean the EAL up and remove its runtime directory.
    /// Returns the worker's final counters.
    pub fn shutdown(mut self) -> WorkerSnapshot {
        self.stop_worker();
        self.last.clone()
    }

    fn stop_worker(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(join) = self.job.take() {
            let _ = join();
        }
        self.poll();
        // Ports (and with them the mempool) go before the EAL.
        self.ports.clear();
        if let Some(eal) = self.eal.take() {
            drop(eal);
            remove_runtime_dir(&self.prefix);
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

/// DPDK leaves `/var/run/dpdk/<prefix>` behind; remove it.
fn remove_runtime_dir(prefix: &str) {
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
}

/// rx → pipeline → tx for every port, commands between bursts, SA ageing
/// once a second, counters published every [`STATS_PERIOD_MS`]. Returns
/// the final counters.
fn worker_loop(
    w: &mut Worker,
    q: &mut Queues,
    pool: &Mempool,
    stop: &AtomicBool,
    stats_tx: &mut rtrb::Producer<WorkerSnapshot>,
) -> WorkerSnapshot {
    let mut rx = Burst::new();
    let mut out = TxSide {
        to: [Burst::new(), Burst::new(), Burst::new()],
        tx_full: [0; 3],
        no_kernel_port: 0,
    };
    let hz = dpdk::tsc_hz().max(1);
    let stats_period = (hz / 1000).max(1) * STATS_PERIOD_MS;
    let start = dpdk::rdtsc();
    let mut next_tick = start + hz;
    let mut next_stats = start + stats_period;
    let mut secs = 0u64;
    let snapshot = |w: &Worker, out: &TxSide, secs| WorkerSnapshot {
        worker: w.stats().clone(),
        tx_full: out.tx_full,
        no_kernel_port: out.no_kernel_port,
        uptime_secs: secs,
    };
    while !stop.load(Ordering::Relaxed) {
        w.apply_commands();
        let now = dpdk::rdtsc();
        // The millisecond clock drives reassembly timeouts and the
        // policers; the second clock SA lifetimes.
        w.handle_time_ms((now - start) / (hz / 1000).max(1));
        if now >= next_tick {
            secs += 1;
            next_tick = now + hz;
            w.handle_timeout(secs);
        }
        if now >= next_stats {
            next_stats = now + stats_period;
            // One slot stays free for the final counters.
            if stats_tx.slots() > 1 {
                let _ = stats_tx.push(snapshot(w, &out, secs));
            }
        }
        for side in 0..3 {
            let queue = match side {
                0 => &mut q.outside.0,
                1 => &mut q.inside.0,
                _ => match &mut q.kernel {
                    Some(k) => &mut k.0,
                    None => continue,
                },
            };
            let n = queue.rx_burst_max(&mut rx, 32);
            if n == 0 {
                continue;
            }
            w.begin_burst(n);
            for mut m in rx.drain() {
                let action = {
                    let mut io = FnIo(|| pool.alloc(), |a, extra| out.emit(q, a, extra));
                    match side {
                        0 => w.handle_outside_io(&mut m, &mut io),
                        1 => w.handle_inside_io(&mut m, &mut io),
                        _ => w.handle_kernel_io(&mut m, &mut io),
                    }
                };
                out.emit(q, action, m);
            }
            out.flush(q);
        }
    }
    snapshot(w, &out, secs)
}

/// Our IPv4 addresses among `addrs`.
#[must_use]
pub fn v4_only(addrs: &[IpAddr]) -> Vec<Ipv4Addr> {
    addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// Our IPv6 addresses among `addrs`.
#[must_use]
pub fn v6_only(addrs: &[IpAddr]) -> Vec<Ipv6Addr> {
    addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vdevs_and_pci_devices_get_their_own_eal_arguments() {
        let mut c = RuntimeConfig::new(
            "p",
            "net_af_packet0,iface=a",
            "net_null1",
            Memory::NoHuge { reason: "t".into() },
        );
        let a = c.eal_args();
        assert!(a.contains(&"--no-pci".to_owned()));
        assert!(a.contains(&"--vdev=net_af_packet0,iface=a".to_owned()));
        assert!(a.contains(&"--main-lcore=0".to_owned()));
        assert!(a.contains(&"0,1".to_owned()));
        c.inside = "0000:01:00.1".into();
        let a = c.eal_args();
        assert!(!a.contains(&"--no-pci".to_owned()));
        assert!(a.windows(2).any(|w| w == ["-a", "0000:01:00.1"]));
        assert_eq!(ethdev_name("net_tap0,iface=x"), "net_tap0");
        assert_eq!(ethdev_name("0000:01:00.1"), "0000:01:00.1");
        assert!(is_pci("01:00.0") && !is_pci("net_null0"));
    }
}
