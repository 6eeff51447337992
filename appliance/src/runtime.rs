//! The dataplane runtime: the EAL, the ports, one worker lcore per queue
//! running [`worker::Worker`], and the control core's end of their rings.
//! Shared by `vpn-dp` (static SAs from a file) and `vpnd` (configuration
//! from the management API, SAs from IKE).
//!
//! ```text
//!   control core (vpnd / vpn-dp thread)                  worker i (lcore pinned by the EAL), i in 0..N
//!   Runtime::send(Command) ─► one SPSC command ring ─►    Worker::apply_commands between bursts
//!                             per worker (a Ticket
//!                             holds each ring's seq)
//!   Runtime::poll()        ◄─ SPSC event ring     ◄─      Done/Failed acks, retired SAs/FIBs, lifetimes
//!   Runtime::stats()       ◄─ SPSC stats ring     ◄─      a WorkerStats copy every 100 ms (and at exit)
//!   Port::stats() (rte_eth_stats_get, control side)       rx burst on queue i of outside/inside/kernel
//!                                                          → Worker::handle_* → tx burst on queue i
//! ```
//!
//! # Several workers
//!
//! Every port gets one rx and one tx queue per worker; worker `i` polls
//! queue `i` of each port and sends on queue `i`, so no queue is shared.
//! How packets are spread over the rx queues is the port's business:
//!
//! * a NIC with RSS hashes what [`PortConfig`] asks for where the driver
//!   offers it: addresses and TCP/UDP ports everywhere (the inner 5-tuple
//!   on the inside port; outer addresses, and the NAT-T ports, on the
//!   outside), plus the ESP SPI on the outside port ([`dpdk::RSS_ESP`]);
//! * `net_af_packet` has no RSS offload: with `qpairs=N` (added to the
//!   device arguments here when missing) the kernel's `PACKET_FANOUT_HASH`
//!   spreads by its flow hash, which covers addresses and ports and, for
//!   ESP, the SPI (the kernel's flow dissector reads the SPI where the
//!   ports would be);
//! * `net_tap` (the kernel port) gets N queues of a multi-queue tun
//!   device; the kernel picks the queue of what it sends by its flow hash;
//! * `net_memif` and `net_ring` have no hash: the peer decides the queue.
//!
//! On top of that each tunnel's inbound ESP and NAT-T goes to one worker,
//! the two tunnels of a connection to different ones ([`Runtime::steer`]):
//! where the outside port's driver has `rte_flow`, by flow rules to that
//! worker's queue ([`steering`]); elsewhere by hand-off, the receiving
//! worker passing the packet over a ring to the tunnel's worker
//! ([`handoff`]); [`Runtime::steering_mode`] says which and why.
//!
//! Because neither RSS nor steering can be relied on to bring every
//! packet of an SA to one queue (a rule matches configured addresses, a
//! tunnel may not be steered yet; see the worker crate's "One tunnel on
//! several workers"), every tunnel is carried by every worker: [`Runtime::add_inbound`] and
//! [`Runtime::set_outbound`] build one copy of the SA per worker from the
//! same `SaConfig`, the copies sharing one sequence counter (outbound)
//! and one anti-replay window (inbound) when there are several workers.
//! So the two tunnels of a connection are never confined to one worker:
//! each is served by all of them, and a stalled worker takes a share of
//! every tunnel's flows, not a whole tunnel. Per-tunnel policers are
//! split into per-worker shares ([`Runtime::set_tunnel_caps`]). Commands
//! without per-worker state (FIB, addresses, removals) are replicated by
//! [`Runtime::send`]; a [`Ticket`] completes when every worker has
//! acknowledged. Volume (byte/packet) SA lifetimes are counted per copy;
//! the spec's lifetimes are in seconds, which every copy reaches together
//! (lifetime events are reported once per SA).
//!
//! Sending never waits unless asked to: [`Runtime::send`] and the SA
//! builders queue on every ring or fail with [`RuntimeError::RingFull`];
//! [`Runtime::poll`] collects acknowledgements and [`Runtime::outcome`]
//! tells, without waiting, whether a queued command was applied or
//! refused (what `vpnd`'s [`dataplane::DpdkDataplane`] uses, under the
//! daemon's lock). [`Runtime::wait`] and [`Runtime::send_waiting`] poll
//! and sleep; they are for `vpn-dp`'s start-up and for tests.
//!
//! What it guarantees: the worker loop never allocates, locks or makes a
//! syscall per packet (the stats copy is a fixed-size value pushed into a
//! preallocated ring, dropped when the control core is behind); every
//! packet freed without being sent is counted (pipeline drop reasons in
//! [`WorkerStats`], a full tx ring in [`WorkerSnapshot::tx_full`], a full
//! hand-off ring in [`HandoffCounts::full`]).
//! [`Runtime::shutdown`] stops the workers, waits for them, releases ports
//! and mempool, runs `rte_eal_cleanup` and removes the EAL's runtime
//! directory. What it never does: decide SAs or routes (that is the
//! caller's), or share a table with a worker (everything goes through
//! commands).

pub mod dataplane;
pub mod handoff;
pub mod steering;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ::dataplane::crypto::{BackendChoice, BackendPreference, CryptoBackend, select_backend};
use ::dataplane::esp::sa::LifetimeEvent;
use ::dataplane::esp::{InboundSa, OutboundSa, SaConfig, SharedReplayWindow, shared_seq};
use dpdk::{Burst, Eal, Mbuf, Mempool, Port, PortConfig, PortStats, RxQueue, TxQueue};
use fib::TunnelId;
use worker::policy::{Caps, RatePolicy};
use worker::{
    Action, Command, ControlEnd, CountersHandle, Event, FnIo, Ingress, SaSnapshot, TunnelSnapshot,
    Worker, WorkerStats,
};

use crate::eal_args::{self, Memory};
use handoff::{Handoff, HandoffCounts};
use steering::{SteerTunnel, Steering, SteeringMode};

/// How often the worker publishes its counters.
const STATS_PERIOD_MS: u64 = 100;
/// Commands the ring holds.
const COMMAND_RING: usize = 4096;
/// Failures remembered for [`Runtime::wait`] and
/// [`Runtime::outcome`] (per worker; the caller checks after each poll).
const FAILURES_KEPT: usize = 1024;
/// Lifetime events remembered to report each SA's once.
const LIFETIME_SEEN_KEPT: usize = 4096;
/// How often [`Runtime::poll`] asks the workers for their per-SA counters.
const SA_SNAPSHOT_PERIOD: Duration = Duration::from_secs(1);

/// What to start.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// EAL `--file-prefix`, unique per DPDK process on the host.
    pub file_prefix: String,
    /// The main lcore (control core).
    pub main_lcore: u32,
    /// The worker lcores: worker `i` runs on `worker_lcores[i]` and
    /// polls queue `i` of every port.
    pub worker_lcores: Vec<u32>,
    /// An EAL `--lcores` map used instead of `-l main,workers…`, e.g.
    /// `0@0,1@1,2@1` to run two workers on one cpu in a functional test
    /// on a small machine. It must define the main and worker lcores.
    pub lcore_map: Option<String>,
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
    /// Which ESP crypto library (`dataplane.crypto_backend`); resolved
    /// against this CPU by [`Runtime::start`].
    pub crypto_backend: BackendPreference,
}

impl RuntimeConfig {
    /// Defaults for everything but the devices and lcores.
    #[must_use]
    pub fn new(file_prefix: &str, outside: &str, inside: &str, memory: Memory) -> Self {
        Self {
            file_prefix: file_prefix.to_owned(),
            main_lcore: 0,
            worker_lcores: vec![1],
            lcore_map: None,
            memory,
            outside: outside.to_owned(),
            inside: inside.to_owned(),
            kernel: None,
            sa_capacity: 16 * 1024,
            mbufs: 8191,
            crypto_backend: BackendPreference::Auto,
        }
    }

    /// Workers to run (at least one).
    #[must_use]
    pub fn workers(&self) -> usize {
        self.worker_lcores.len().max(1)
    }

    /// The EAL arguments: virtual devices with `--vdev` (an
    /// `net_af_packet` without `qpairs=` gets one queue pair per worker),
    /// PCI devices with `-a` (and then without `--no-pci`).
    #[must_use]
    pub fn eal_args(&self) -> Vec<String> {
        let devices: Vec<&String> = [&self.outside, &self.inside]
            .into_iter()
            .chain(self.kernel.as_ref())
            .collect();
        let vdevs: Vec<String> = devices
            .iter()
            .filter(|d| !is_pci(d))
            .map(|d| with_queue_pairs(d, self.workers()))
            .collect();
        let lcores: Vec<String> = std::iter::once(self.main_lcore)
            .chain(self.worker_lcores.iter().copied())
            .map(|l| l.to_string())
            .collect();
        let mut args = eal_args::build(
            &self.file_prefix,
            &lcores.join(","),
            Some(self.main_lcore),
            &self.memory,
            &vdevs,
        );
        if let Some(map) = &self.lcore_map
            && let Some(i) = args.iter().position(|a| a == "-l")
            && i + 1 < args.len()
        {
            args[i] = "--lcores".to_owned();
            args[i + 1].clone_from(map);
        }
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

/// `net_af_packet` creates its queue pairs at probe time (`qpairs=`,
/// default 1): give it one per worker unless the device names a number.
fn with_queue_pairs(device: &str, workers: usize) -> String {
    let af_packet = ["net_af_packet", "eth_af_packet"]
        .iter()
        .any(|p| device.starts_with(p));
    if af_packet && workers > 1 && !device.split(',').any(|kv| kv.starts_with("qpairs=")) {
        format!("{device},qpairs={workers}")
    } else {
        device.to_owned()
    }
}

/// A PCI address (`0000:01:00.0` or `01:00.0`), as opposed to a vdev.
fn is_pci(device: &str) -> bool {
    crate::nics::PciAddress::of_device(device).is_some()
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
    /// A port has fewer queues than there are workers.
    #[error(
        "{role} port {device:?} offers {offered} rx/tx queue pair(s) but {workers} workers need one each \
         (net_af_packet: qpairs={workers})"
    )]
    Queues {
        /// outside / inside / kernel.
        role: &'static str,
        /// Its device.
        device: String,
        /// Queue pairs the driver offers.
        offered: u16,
        /// Workers configured.
        workers: usize,
    },
    /// `dataplane.crypto_backend = "ipsec-mb"` on a CPU or system where
    /// intel-ipsec-mb cannot run.
    #[error("dataplane.crypto_backend = \"ipsec-mb\": {0}")]
    CryptoBackend(ipsec_mb::Error),
    /// The mbuf pool could not be created.
    #[error("mbuf pool of {count} mbufs: {source}")]
    Mempool {
        /// Its size.
        count: u32,
        /// DPDK's error.
        source: dpdk::Error,
    },
    /// The rings between workers could not be created.
    #[error("hand-off rings between {workers} workers: {source}")]
    HandoffRings {
        /// Workers configured.
        workers: usize,
        /// DPDK's error.
        source: dpdk::Error,
    },
    /// A worker lcore could not be launched.
    #[error("launching the worker on lcore {lcore}: {source}")]
    Launch {
        /// The lcore.
        lcore: u32,
        /// DPDK's error.
        source: dpdk::Error,
    },
    /// A worker's command ring is full (or, from
    /// [`Runtime::send_to`], there is no such worker).
    #[error("a worker's command ring is full")]
    RingFull,
    /// A command that carries per-worker state (an SA, a policer share, a
    /// snapshot buffer) cannot be copied to several workers.
    #[error(
        "{what} holds per-worker state and {workers} workers run: use Runtime::{instead} instead"
    )]
    NotReplicable {
        /// The command.
        what: &'static str,
        /// Workers running.
        workers: usize,
        /// The method that builds one per worker.
        instead: &'static str,
    },
    /// An SA could not be built from its configuration.
    #[error("SA {spi:#x}: {reason}")]
    Sa {
        /// Its SPI.
        spi: u32,
        /// Why.
        reason: String,
    },
    /// A worker refused a command.
    #[error("worker {worker} refused command {seq}: {reason}")]
    Refused {
        /// The worker.
        worker: usize,
        /// Its sequence number on that worker's ring.
        seq: u64,
        /// The worker's reason.
        reason: &'static str,
    },
    /// A worker did not acknowledge in time.
    #[error("worker {worker} did not acknowledge command {seq} within {timeout:?}")]
    Timeout {
        /// The worker.
        worker: usize,
        /// Its sequence number on that worker's ring.
        seq: u64,
        /// How long we waited.
        timeout: Duration,
    },
}

/// One command as sent to every worker: its sequence number on each
/// worker's ring (index = worker). [`Runtime::wait`] completes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Ticket {
    seqs: Vec<u64>,
}

impl Ticket {
    /// The command's sequence number on worker `worker`'s ring.
    #[must_use]
    pub fn seq(&self, worker: usize) -> Option<u64> {
        self.seqs.get(worker).copied()
    }
}

/// What a worker publishes: its counters plus what the loop around it
/// counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// The pipeline's counters.
    pub worker: WorkerStats,
    /// Packets freed because a tx ring was full: outside, inside, kernel.
    pub tx_full: [u64; 3],
    /// Packets the pipeline sent to the kernel while no kernel port exists.
    pub no_kernel_port: u64,
    /// Inbound ESP handed to or from other workers ([`handoff`]).
    pub handoff: HandoffCounts,
    /// TSC cycles spent on bursts that held packets, from the rx burst to
    /// the last tx burst (empty polls, commands and timers excluded):
    /// divided by the packets handled, the worker's cost per packet
    /// whatever the offered load (see `bench/`).
    pub busy_cycles: u64,
    /// Packets received from the ports and the other workers.
    pub rx_packets: u64,
    /// Seconds the worker has been running (its SA ageing clock).
    pub uptime_secs: u64,
}

impl std::ops::AddAssign<&Self> for WorkerSnapshot {
    fn add_assign(&mut self, o: &Self) {
        self.worker += &o.worker;
        for (a, b) in self.tx_full.iter_mut().zip(o.tx_full) {
            *a = a.wrapping_add(b);
        }
        self.no_kernel_port = self.no_kernel_port.wrapping_add(o.no_kernel_port);
        self.handoff += &o.handoff;
        self.busy_cycles = self.busy_cycles.wrapping_add(o.busy_cycles);
        self.rx_packets = self.rx_packets.wrapping_add(o.rx_packets);
        self.uptime_secs = self.uptime_secs.max(o.uptime_secs);
    }
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

/// How a port spreads packets over the workers' queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortQueues {
    /// outside / inside / kernel.
    pub role: &'static str,
    /// Its device.
    pub device: String,
    /// Rx/tx queue pairs (one per worker).
    pub queues: u16,
    /// The RSS hash functions enabled (`rss_hf`); 0 with one queue or
    /// when the driver spreads by its own means (af_packet fanout, tap).
    pub rss_hf: u64,
    /// The checksum offloads the driver offered and the port uses; the
    /// rest is done in software.
    pub offloads: dpdk::Offloads,
}

impl std::fmt::Display for PortQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} port {}: {} queue(s)",
            self.role, self.device, self.queues
        )?;
        match (self.queues, self.rss_hf) {
            (1, _) => {}
            (_, 0) => write!(f, ", spread by the driver (no RSS offload)")?,
            (_, hf) => write!(f, ", RSS hash functions {hf:#x}")?,
        }
        write!(f, ", checksum offloads: {}", self.offloads)
    }
}

/// The NUMA sockets that have workers, each with how many, in the order
/// of the workers' first appearance.
fn workers_per_socket(worker_sockets: &[u32]) -> Vec<(u32, usize)> {
    let mut out: Vec<(u32, usize)> = Vec::new();
    for &s in worker_sockets {
        match out.iter_mut().find(|(socket, _)| *socket == s) {
            Some((_, n)) => *n += 1,
            None => out.push((s, 1)),
        }
    }
    out
}

/// Waits for a worker lcore's job.
type Join = Box<dyn FnOnce() -> i32 + Send>;

/// The control core's view of one worker.
struct WorkerHandle {
    lcore: u32,
    control: ControlEnd,
    stats_rx: rtrb::Consumer<WorkerSnapshot>,
    last: WorkerSnapshot,
    counters: CountersHandle,
    acked: u64,
    failures: VecDeque<(u64, &'static str)>,
    failed_total: u64,
    sa_snapshot: Vec<SaSnapshot>,
    sa_snapshot_pending: bool,
}

/// How often [`Runtime::watch_links`] reads the ports' link state.
pub const LINK_READ_PERIOD: Duration = Duration::from_secs(1);

/// A port's device and its link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortLink {
    /// The device specification (PCI address or vdev).
    pub device: String,
    /// The link as last read (`None`: not read yet, or the driver cannot say).
    pub status: Option<dpdk::LinkStatus>,
    /// Changes seen after the first reading.
    pub changes: u64,
}

/// The running dataplane. Drop (or [`Runtime::shutdown`]) stops it.
pub struct Runtime {
    workers: Vec<WorkerHandle>,
    stop: Arc<AtomicBool>,
    jobs: Vec<Join>,
    total: WorkerSnapshot,
    ports: Vec<(&'static str, Port)>,
    /// The outside port fills outer IPv4 header checksums.
    outside_tx_checksum: bool,
    /// Each port's device and link as last read, in the order of `ports`.
    links: Vec<PortLink>,
    links_read_at: Instant,
    port_queues: Vec<PortQueues>,
    steering: Steering,
    macs: PortMacs,
    lifetime_events: Vec<Event>,
    /// Lifetime events already reported (every worker's copy of an SA
    /// reports the same one), newest last, bounded.
    lifetime_seen: VecDeque<(u32, bool, LifetimeEvent)>,
    sa_capacity: usize,
    sa_merged: Vec<SaSnapshot>,
    sa_snapshot_at: Instant,
    started: Instant,
    prefix: String,
    /// The ESP crypto library every SA of this process is built on, and
    /// why it was chosen.
    crypto: BackendChoice,
    eal: Option<Eal>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("prefix", &self.prefix)
            .field("workers", &self.worker_lcores())
            .field("running", &!self.jobs.is_empty())
            .field("ports", &self.ports)
            .field("commands", &self.commands())
            .finish_non_exhaustive()
    }
}

/// One worker's queues: queue `i` of every port for worker `i`.
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

/// A copy of `c` for another worker, or, for a command that holds
/// per-worker state, its name and the method that builds one per worker.
fn replicate(c: &Command) -> Result<Command, (&'static str, &'static str)> {
    Ok(match c {
        Command::RemoveInbound { spi } => Command::RemoveInbound { spi: *spi },
        Command::RemoveOutbound { tunnel } => Command::RemoveOutbound { tunnel: *tunnel },
        Command::SetFib(f) => Command::SetFib(f.clone()),
        Command::SetAddresses(a) => Command::SetAddresses(a.clone()),
        Command::SetMtuOptions(m) => Command::SetMtuOptions(m.clone()),
        Command::ClearTunnelPolicy { tunnel } => Command::ClearTunnelPolicy { tunnel: *tunnel },
        Command::SetPolicing { enabled } => Command::SetPolicing { enabled: *enabled },
        Command::SetInboundOwners(o) => Command::SetInboundOwners(o.clone()),
        Command::AddInbound(_) | Command::AddInboundForTunnel { .. } => {
            return Err(("AddInbound", "add_inbound"));
        }
        Command::SetOutbound { .. } => return Err(("SetOutbound", "set_outbound")),
        Command::SetTunnelPolicy { .. } => return Err(("SetTunnelPolicy", "set_tunnel_caps")),
        Command::SnapshotSas(_) => return Err(("SnapshotSas", "poll")),
        Command::SetOvpnPort { port } => Command::SetOvpnPort { port: *port },
        // A client's keys live on one worker (two copies of a sealing
        // key would reuse AES-GCM nonces): sent to its owner only.
        Command::AddClient(_)
        | Command::SetClientKey { .. }
        | Command::RetireClientKey { .. }
        | Command::RemoveClient { .. } => {
            return Err(("an OpenVPN client command", "its owner worker's ring"));
        }
    })
}

impl Runtime {
    /// Initialise the EAL, start the ports and launch the workers.
    ///
    /// # Errors
    /// [`RuntimeError`] naming the step that failed. The EAL can be
    /// initialised once per process: a second `start` fails.
    pub fn start(config: &RuntimeConfig) -> Result<Self, RuntimeError> {
        let crypto = select_backend(config.crypto_backend).map_err(RuntimeError::CryptoBackend)?;
        let args = config.eal_args();
        let eal = Eal::init(&args).map_err(|source| RuntimeError::Eal {
            args: args.clone(),
            source,
        })?;
        let mut rt = Self {
            workers: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            jobs: Vec::new(),
            total: WorkerSnapshot::default(),
            ports: Vec::new(),
            outside_tx_checksum: false,
            links: Vec::new(),
            links_read_at: Instant::now(),
            port_queues: Vec::new(),
            steering: Steering::single(),
            macs: PortMacs::default(),
            lifetime_events: Vec::new(),
            lifetime_seen: VecDeque::new(),
            sa_capacity: config.sa_capacity,
            sa_merged: Vec::new(),
            sa_snapshot_at: Instant::now(),
            started: Instant::now(),
            prefix: config.file_prefix.clone(),
            crypto,
            eal: None,
        };
        match rt.start_on(&eal, config) {
            Ok(()) => {
                rt.eal = Some(eal);
                Ok(rt)
            }
            Err(e) => {
                // Workers already launched stop; ports close before the EAL.
                rt.stop_workers();
                drop(eal);
                remove_runtime_dir(&config.file_prefix);
                Err(e)
            }
        }
    }

    fn start_on(&mut self, eal: &Eal, config: &RuntimeConfig) -> Result<(), RuntimeError> {
        let n = config.workers();
        let nq = u16::try_from(n).unwrap_or(u16::MAX);
        // Each worker's rx rings and bursts hold mbufs: one pool share
        // each. The mbufs live on their worker's NUMA socket (they touch
        // every byte of every packet): one pool per socket that has
        // workers, each worker's rx queues drawing from its socket's (a
        // port on another socket is warned about below).
        let worker_sockets: Vec<u32> = config
            .worker_lcores
            .iter()
            .map(|&l| eal.lcore_socket(l))
            .collect();
        let mut socket_pools: Vec<(u32, Mempool)> = Vec::new();
        for (socket, workers) in workers_per_socket(&worker_sockets) {
            let count = config
                .mbufs
                .saturating_mul(u32::try_from(workers).unwrap_or(u32::MAX));
            let name = if socket_pools.is_empty() {
                "vpn_pool".to_owned()
            } else {
                format!("vpn_pool_s{socket}")
            };
            let pool = Mempool::new_on(
                eal,
                &name,
                count,
                256,
                Mempool::DEFAULT_DATA_ROOM,
                Some(socket),
            )
            .map_err(|source| RuntimeError::Mempool { count, source })?;
            socket_pools.push((socket, pool));
        }
        if socket_pools.is_empty() {
            // No worker lcores named: one worker on lcore 1, socket unknown.
            let pool = Mempool::new_on(
                eal,
                "vpn_pool",
                config.mbufs,
                256,
                Mempool::DEFAULT_DATA_ROOM,
                None,
            )
            .map_err(|source| RuntimeError::Mempool {
                count: config.mbufs,
                source,
            })?;
            socket_pools.push((0, pool));
        }
        // Worker i's pool (and so the pool of rx queue i of every port).
        let worker_pools: Vec<Mempool> = (0..n)
            .map(|i| {
                let socket = worker_sockets.get(i).copied();
                socket_pools
                    .iter()
                    .find(|(s, _)| Some(*s) == socket)
                    .unwrap_or(&socket_pools[0])
                    .1
                    .clone()
            })
            .collect();
        let queue_pools: Vec<&Mempool> = worker_pools.iter().collect();
        let start = |role: &'static str, device: &str, rss_extra: u64| {
            let err = |what, source| RuntimeError::Port {
                role,
                device: device.to_owned(),
                what,
                source,
            };
            let id = dpdk::port_by_name(eal, ethdev_name(device)).map_err(|e| err("find", e))?;
            let (max_rx, max_tx) = dpdk::max_queues(eal, id).map_err(|e| err("device info", e))?;
            if max_rx < nq || max_tx < nq {
                return Err(RuntimeError::Queues {
                    role,
                    device: device.to_owned(),
                    offered: max_rx.min(max_tx),
                    workers: n,
                });
            }
            let pc = PortConfig {
                rx_queues: nq,
                tx_queues: nq,
                rss_extra,
                ..PortConfig::default()
            };
            let port = Port::configure_per_queue(eal, id, &pc, &queue_pools)
                .map_err(|e| err("configure", e))?;
            port.start().map_err(|e| err("start", e))?;
            let mut queues = Vec::with_capacity(n);
            for q in 0..nq {
                let rx = port.rx_queue(q).map_err(|e| err("rx queue", e))?;
                let tx = port.tx_queue(q).map_err(|e| err("tx queue", e))?;
                queues.push((rx, tx));
            }
            let mac = port.mac().map_err(|e| err("MAC address", e))?;
            let info = PortQueues {
                role,
                device: device.to_owned(),
                queues: nq,
                rss_hf: port.rss_hf(),
                offloads: port.offloads(),
            };
            Ok::<_, RuntimeError>((port, queues, mac, info))
        };
        let (outside, o_q, o_mac, o_info) = start("outside", &config.outside, dpdk::RSS_ESP)?;
        let (inside, i_q, i_mac, i_info) = start("inside", &config.inside, 0)?;
        let kernel = config
            .kernel
            .as_deref()
            .map(|k| start("kernel", k, 0))
            .transpose()?;
        self.macs = PortMacs {
            outside: o_mac,
            inside: i_mac,
            kernel: kernel.as_ref().map(|k| {
                config
                    .kernel
                    .as_deref()
                    .and_then(kernel_iface_mac)
                    .unwrap_or(k.2)
            }),
        };
        self.steering = Steering::probe(&outside, &config.outside, n);
        let mut handoffs = if matches!(self.steering.mode(), SteeringMode::Handoff { .. }) {
            Handoff::rings(eal, n)
                .map_err(|source| RuntimeError::HandoffRings { workers: n, source })?
        } else {
            Vec::new()
        }
        .into_iter();
        // Outbound SAs leave the outer IPv4 header checksum to the NIC
        // where the outside port can fill it (`set_outbound`).
        self.outside_tx_checksum = outside.offloads().tx_ipv4_checksum;
        self.ports = vec![("outside", outside), ("inside", inside)];
        self.port_queues = vec![o_info, i_info];
        let mut k_q = None;
        if let Some((port, q, _, info)) = kernel {
            self.ports.push(("kernel", port));
            self.port_queues.push(info);
            k_q = Some(q);
        }
        for (role, port) in &self.ports {
            let Some(port_socket) = port.socket() else {
                continue;
            };
            for &lcore in &config.worker_lcores {
                let worker = eal.lcore_socket(lcore);
                if worker != port_socket {
                    tracing::warn!(
                        "NUMA: worker lcore {lcore} is on socket {worker} but the {role} port is on socket \
                         {port_socket}: every packet crosses between sockets; choose worker lcores on socket {port_socket}"
                    );
                }
            }
        }
        self.links = [
            Some(&config.outside),
            Some(&config.inside),
            config.kernel.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|device| PortLink {
            device: device.clone(),
            status: None,
            changes: 0,
        })
        .collect();
        self.watch_links();
        let mut o_q = o_q.into_iter();
        let mut i_q = i_q.into_iter();
        let mut k_q = k_q.map(Vec::into_iter);

        let lcores: Vec<u32> = if config.worker_lcores.is_empty() {
            vec![1]
        } else {
            config.worker_lcores.clone()
        };
        for (i, lcore) in lcores.into_iter().enumerate() {
            let (Some(outside), Some(inside)) = (o_q.next(), i_q.next()) else {
                break;
            };
            let queues = Queues {
                outside,
                inside,
                kernel: k_q.as_mut().and_then(Iterator::next),
            };
            // Where the pipeline's extra packets (fragments, ICMP errors)
            // come from.
            let worker_pool = worker_pools[i % worker_pools.len()].clone();
            let (control, end) = worker::channel(COMMAND_RING);
            let w = Worker::new(end, config.sa_capacity);
            let counters = w.counters();
            let (mut stats_tx, stats_rx) = rtrb::RingBuffer::new(4);
            let stop = self.stop.clone();
            let handoff = handoffs.next();
            let job = eal
                .launch(dpdk::LcoreId(lcore), move || {
                    let (mut w, mut queues, mut handoff) = (w, queues, handoff);
                    let snapshot = worker_loop(
                        &mut w,
                        &mut queues,
                        handoff.as_mut(),
                        &worker_pool,
                        &stop,
                        &mut stats_tx,
                    );
                    // The final counters; the control core is waiting for them.
                    let _ = stats_tx.push(snapshot);
                    0
                })
                .map_err(|source| RuntimeError::Launch { lcore, source })?;
            self.jobs.push(Box::new(move || job.join()));
            self.workers.push(WorkerHandle {
                lcore,
                control,
                stats_rx,
                last: WorkerSnapshot::default(),
                counters,
                acked: 0,
                failures: VecDeque::new(),
                failed_total: 0,
                sa_snapshot: Vec::new(),
                sa_snapshot_pending: false,
            });
        }
        Ok(())
    }

    /// The ports' MAC addresses.
    #[must_use]
    pub fn macs(&self) -> PortMacs {
        self.macs
    }

    /// How each port spreads packets over the workers' queues.
    #[must_use]
    pub fn port_queues(&self) -> &[PortQueues] {
        &self.port_queues
    }

    /// The ESP crypto library this process chose at start (see
    /// [`::dataplane::crypto::select_backend`]).
    #[must_use]
    pub fn crypto_backend(&self) -> CryptoBackend {
        self.crypto.backend
    }

    /// Why [`Self::crypto_backend`] was chosen (for the log).
    #[must_use]
    pub fn crypto_backend_reason(&self) -> &str {
        &self.crypto.reason
    }

    /// How the outside port spreads inbound ESP over the workers
    /// (decided at start, see [`steering`]).
    #[must_use]
    pub fn steering_mode(&self) -> &SteeringMode {
        self.steering.mode()
    }

    /// Steer each tunnel's inbound ESP and NAT-T to its queue (worker),
    /// replacing the previous set: by flow rules on the outside port
    /// ([`SteeringMode::Flow`]; rules of tunnels gone or changed are
    /// removed), or by hand-off between workers
    /// ([`SteeringMode::Handoff`]: every worker gets the new owner
    /// table). With one worker nothing happens. Returns the rules the
    /// driver refused (their tunnels stay on RSS), or why the owner
    /// table could not be sent.
    pub fn steer(&mut self, tunnels: &[SteerTunnel]) -> Vec<String> {
        let mut problems = self.steering.steer(tunnels);
        self.send_owners(&mut problems);
        problems
    }

    /// [`steer`](Self::steer) for some tunnels only: `remove` lose their
    /// steering, `add` get theirs (replacing what they had), the others
    /// keep theirs. Queues the new owner table in hand-off mode without
    /// waiting.
    pub fn steer_update(&mut self, add: &[SteerTunnel], remove: &[TunnelId]) -> Vec<String> {
        if add.is_empty() && remove.is_empty() {
            return Vec::new();
        }
        let mut problems = self.steering.update(add, remove);
        self.send_owners(&mut problems);
        problems
    }

    /// In hand-off mode, queue the owner table for every worker (no
    /// waiting: a full ring is a problem reported, the next change sends
    /// the table again).
    fn send_owners(&mut self, problems: &mut Vec<String>) {
        if matches!(self.steering.mode(), SteeringMode::Handoff { .. }) {
            let owners: Arc<[u16]> = self.steering.owners().into();
            let n = owners.len();
            if let Err(e) = self.send(Command::SetInboundOwners(owners)) {
                problems.push(format!("hand-off table for {n} tunnels: {e}"));
            }
        }
    }

    /// The worker whose queue `tunnel`'s inbound ESP is steered to, when
    /// a rule does.
    #[must_use]
    pub fn steered_worker(&self, tunnel: TunnelId) -> Option<usize> {
        self.steering.queue_of(tunnel).map(usize::from)
    }

    /// Flow rules the driver refused since start.
    #[must_use]
    pub fn steering_failures(&self) -> u64 {
        self.steering.failures()
    }

    /// Workers running.
    #[must_use]
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The lcore of each worker.
    #[must_use]
    pub fn worker_lcores(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.lcore).collect()
    }

    /// Seconds since the workers started: the clock SAs are installed at
    /// (`InboundSa::new(cfg, rt.now_secs())`).
    #[must_use]
    pub fn now_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Sends what `make(i)` builds to every worker `i`, once every ring has
    /// room (waiting up to `patience`, polling events), so the command
    /// reaches all workers or none.
    fn broadcast(
        &mut self,
        patience: Duration,
        make: &mut dyn FnMut(usize) -> Result<Command, RuntimeError>,
    ) -> Result<Ticket, RuntimeError> {
        let deadline = Instant::now() + patience;
        loop {
            let full = self
                .workers
                .iter()
                .position(|w| w.control.free_slots() == 0);
            match full {
                None => break,
                Some(_) if Instant::now() >= deadline => return Err(RuntimeError::RingFull),
                Some(_) => {
                    self.poll();
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        let mut commands = Vec::with_capacity(self.workers.len());
        for i in 0..self.workers.len() {
            commands.push(make(i)?);
        }
        let mut seqs = Vec::with_capacity(commands.len());
        for (w, c) in self.workers.iter_mut().zip(commands) {
            // Cannot fail: the ring had room and only we push.
            seqs.push(w.control.send(c).map_err(|_| RuntimeError::RingFull)?);
        }
        Ok(Ticket { seqs })
    }

    /// Queue a command for every worker. Commands that carry per-worker
    /// state go through [`add_inbound`](Self::add_inbound),
    /// [`set_outbound`](Self::set_outbound) and
    /// [`set_tunnel_caps`](Self::set_tunnel_caps) when several workers run
    /// (with one worker any command is sent as it is).
    ///
    /// # Errors
    /// [`RuntimeError::RingFull`] (the command is dropped: SAs in it are
    /// zeroised and freed here), [`RuntimeError::NotReplicable`].
    pub fn send(&mut self, command: Command) -> Result<Ticket, RuntimeError> {
        self.send_waiting(command, Duration::ZERO)
    }

    /// [`send`](Self::send), waiting (polling events, 1 ms at a time)
    /// while a ring is full, up to `patience`: for bulk loads such as
    /// `vpn-dp`'s start-up with a large static configuration. Never call
    /// it while holding a lock others wait for (`vpnd` does not).
    ///
    /// # Errors
    /// [`RuntimeError::RingFull`] when a ring stayed full for `patience`
    /// (its worker is not draining it), [`RuntimeError::NotReplicable`].
    pub fn send_waiting(
        &mut self,
        command: Command,
        patience: Duration,
    ) -> Result<Ticket, RuntimeError> {
        let workers = self.workers.len();
        let mut command = Some(command);
        self.broadcast(patience, &mut |i| {
            let c = command.as_ref().ok_or(RuntimeError::RingFull)?;
            if i + 1 == workers {
                return command.take().ok_or(RuntimeError::RingFull);
            }
            replicate(c).map_err(|(what, instead)| RuntimeError::NotReplicable {
                what,
                workers,
                instead,
            })
        })
    }

    /// Queue a command for worker `worker` only.
    ///
    /// # Errors
    /// [`RuntimeError::RingFull`] (also for a worker that does not exist).
    pub fn send_to(&mut self, worker: usize, command: Command) -> Result<u64, RuntimeError> {
        self.workers
            .get_mut(worker)
            .ok_or(RuntimeError::RingFull)?
            .control
            .send(command)
            .map_err(|_| RuntimeError::RingFull)
    }

    /// Install (or replace, same SPI) an inbound SA on every worker,
    /// counted under `tunnel`; with several workers the copies share one
    /// anti-replay window.
    ///
    /// # Errors
    /// [`RuntimeError::Sa`] for a configuration the SA refuses, and as
    /// for [`send_waiting`](Self::send_waiting).
    pub fn add_inbound(
        &mut self,
        tunnel: Option<TunnelId>,
        cfg: &SaConfig,
        patience: Duration,
    ) -> Result<Ticket, RuntimeError> {
        let now = self.now_secs();
        let backend = self.crypto.backend;
        let shared =
            (self.workers.len() > 1).then(|| SharedReplayWindow::new(cfg.replay_window, cfg.esn));
        self.broadcast(patience, &mut |_| {
            let mut sa = InboundSa::new_with(cfg, now, backend).map_err(|e| RuntimeError::Sa {
                spi: cfg.spi,
                reason: e.to_string(),
            })?;
            if let Some(w) = &shared {
                sa = sa.with_shared_replay(w.clone());
            }
            let sa = Box::new(sa);
            Ok(match tunnel {
                Some(tunnel) => Command::AddInboundForTunnel { tunnel, sa },
                None => Command::AddInbound(sa),
            })
        })
    }

    /// Install or atomically replace `tunnel`'s outbound SA on every
    /// worker; with several workers the copies share one sequence counter
    /// (reserved per burst).
    ///
    /// # Errors
    /// As for [`add_inbound`](Self::add_inbound).
    pub fn set_outbound(
        &mut self,
        tunnel: TunnelId,
        cfg: &SaConfig,
        patience: Duration,
    ) -> Result<Ticket, RuntimeError> {
        let now = self.now_secs();
        let backend = self.crypto.backend;
        let shared = (self.workers.len() > 1).then(shared_seq);
        let tx_checksum = self.outside_tx_checksum;
        self.broadcast(patience, &mut |_| {
            let mut sa = OutboundSa::new_with(cfg, now, backend).map_err(|e| RuntimeError::Sa {
                spi: cfg.spi,
                reason: e.to_string(),
            })?;
            if let Some(c) = &shared {
                sa = sa.with_shared_seq(c.clone());
            }
            sa = sa.with_tx_checksum_offload(tx_checksum);
            Ok(Command::SetOutbound {
                tunnel,
                sa: Box::new(sa),
            })
        })
    }

    /// Police `tunnel` at `caps` (each direction): worker `i` of `N` gets
    /// [`RatePolicy::share`]`(caps, N, i)`, so the shares add up to the
    /// caps exactly.
    ///
    /// # Errors
    /// As for [`send`](Self::send); a worker refuses a tunnel id beyond
    /// its capacity (seen by [`wait`](Self::wait)).
    pub fn set_tunnel_caps(
        &mut self,
        tunnel: TunnelId,
        caps: Caps,
    ) -> Result<Ticket, RuntimeError> {
        let n = u32::try_from(self.workers.len()).unwrap_or(u32::MAX);
        self.broadcast(Duration::ZERO, &mut |i| {
            Ok(Command::SetTunnelPolicy {
                tunnel,
                policy: RatePolicy::share(caps, n, u32::try_from(i).unwrap_or(u32::MAX)),
            })
        })
    }

    /// Collect events from every worker: acknowledgements, failures,
    /// retired objects (freed here, on the control core), lifetime events
    /// (once per SA, kept for
    /// [`take_lifetime_events`](Self::take_lifetime_events)), and the
    /// newest counters (summed over the workers).
    pub fn poll(&mut self) {
        let running = !self.jobs.is_empty();
        let mut merged = false;
        for w in &mut self.workers {
            while let Some(ev) = w.control.poll_event() {
                match ev {
                    Event::Done { seq } => w.acked = w.acked.max(seq + 1),
                    Event::Failed { seq, reason } => {
                        w.acked = w.acked.max(seq + 1);
                        w.failed_total += 1;
                        if w.failures.len() == FAILURES_KEPT {
                            w.failures.pop_front();
                        }
                        w.failures.push_back((seq, reason));
                    }
                    Event::Lifetime {
                        spi,
                        inbound,
                        event,
                    } => {
                        let key = (spi, inbound, event);
                        if self.lifetime_seen.contains(&key) {
                            continue;
                        }
                        if self.lifetime_seen.len() == LIFETIME_SEEN_KEPT {
                            self.lifetime_seen.pop_front();
                        }
                        self.lifetime_seen.push_back(key);
                        // Bounded (nobody may be taking them yet); beyond
                        // the bound they are dropped like retired objects.
                        if self.lifetime_events.len() < 4096 {
                            self.lifetime_events.push(ev);
                        }
                    }
                    Event::SaSnapshot { sas, .. } => {
                        w.sa_snapshot = *sas;
                        w.sa_snapshot_pending = false;
                        merged = true;
                    }
                    // Retired SAs and tables: dropping them here frees them.
                    _ => {}
                }
            }
            while let Ok(s) = w.stats_rx.pop() {
                w.last = s;
            }
        }
        let mut total = WorkerSnapshot::default();
        for w in &self.workers {
            total += &w.last;
        }
        self.total = total;
        if merged {
            self.merge_sa_snapshots();
        }
        // Per-SA counters: one request in flight per worker; the buffer is
        // allocated here, the worker only fills it.
        if running && self.sa_snapshot_at.elapsed() >= SA_SNAPSHOT_PERIOD {
            self.sa_snapshot_at = Instant::now();
            let cap = self.sa_capacity;
            for w in &mut self.workers {
                if w.sa_snapshot_pending {
                    continue;
                }
                // Room for twice the SAs seen last time (at least 64),
                // never more than both tables can hold.
                let room = (w.sa_snapshot.len() * 2)
                    .max(64)
                    .min(cap.saturating_mul(2).max(64));
                let buf = Box::new(Vec::with_capacity(room));
                if w.control.send(Command::SnapshotSas(buf)).is_ok() {
                    w.sa_snapshot_pending = true;
                }
            }
        }
    }

    /// Sum the workers' per-SA counters by SPI and direction.
    fn merge_sa_snapshots(&mut self) {
        let mut merged: Vec<SaSnapshot> = Vec::new();
        for w in &self.workers {
            for s in &w.sa_snapshot {
                match merged
                    .iter_mut()
                    .find(|m| m.spi == s.spi && m.inbound == s.inbound)
                {
                    Some(m) => {
                        m.counters.packets = m.counters.packets.wrapping_add(s.counters.packets);
                        m.counters.bytes = m.counters.bytes.wrapping_add(s.counters.bytes);
                        m.tunnel = m.tunnel.or(s.tunnel);
                    }
                    None => merged.push(*s),
                }
            }
        }
        self.sa_merged = merged;
    }

    /// One tunnel's counters (`TunnelDataIn`/`TunnelDataOut`, packets,
    /// drops), read lock-free from the workers' counter blocks and summed.
    #[must_use]
    pub fn tunnel_counters(&self, tunnel: TunnelId) -> Option<TunnelSnapshot> {
        if tunnel.0 as usize >= self.tunnel_capacity() {
            return None;
        }
        let mut total = TunnelSnapshot::default();
        for w in &self.workers {
            if let Some(s) = w.counters.tunnel(tunnel) {
                total += &s;
            }
        }
        Some(total)
    }

    /// One tunnel's counters on worker `worker` alone.
    #[must_use]
    pub fn tunnel_counters_of(&self, worker: usize, tunnel: TunnelId) -> Option<TunnelSnapshot> {
        self.workers.get(worker)?.counters.tunnel(tunnel)
    }

    /// Tunnel ids the workers count (`0..capacity`).
    #[must_use]
    pub fn tunnel_capacity(&self) -> usize {
        self.workers
            .iter()
            .map(|w| w.counters.capacity())
            .min()
            .unwrap_or(0)
    }

    /// The newest per-SA counters, summed over the workers (refreshed
    /// about once a second by [`poll`](Self::poll)).
    #[must_use]
    pub fn sa_counters(&self) -> &[SaSnapshot] {
        &self.sa_merged
    }

    /// Wait (polling) until every worker has applied the command.
    ///
    /// # Errors
    /// [`RuntimeError::Refused`] with the first refusing worker's reason,
    /// or [`RuntimeError::Timeout`].
    pub fn wait(&mut self, ticket: Ticket, timeout: Duration) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll();
            let pending = self
                .workers
                .iter()
                .zip(&ticket.seqs)
                .position(|(w, &seq)| w.acked <= seq);
            match pending {
                None => break,
                Some(worker) if Instant::now() >= deadline => {
                    return Err(RuntimeError::Timeout {
                        worker,
                        seq: ticket.seqs[worker],
                        timeout,
                    });
                }
                Some(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        for (worker, (w, &seq)) in self.workers.iter().zip(&ticket.seqs).enumerate() {
            if let Some((_, reason)) = w.failures.iter().find(|(s, _)| *s == seq) {
                return Err(RuntimeError::Refused {
                    worker,
                    seq,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Where a queued command stands, without waiting (call
    /// [`poll`](Self::poll) first): `None` while a worker has not
    /// applied it, then `Ok` or the first refusing worker's reason.
    /// Workers apply their commands in order, so a command whose outcome
    /// is known was preceded by every command queued before it.
    #[must_use]
    pub fn outcome(&self, ticket: &Ticket) -> Option<Result<(), RuntimeError>> {
        let pending = self
            .workers
            .iter()
            .zip(&ticket.seqs)
            .any(|(w, &seq)| w.acked <= seq);
        if pending {
            return None;
        }
        for (worker, (w, &seq)) in self.workers.iter().zip(&ticket.seqs).enumerate() {
            if let Some((_, reason)) = w.failures.iter().find(|(s, _)| *s == seq) {
                return Some(Err(RuntimeError::Refused {
                    worker,
                    seq,
                    reason,
                }));
            }
        }
        Some(Ok(()))
    }

    /// Free slots in the fullest worker's command ring: a caller about to
    /// queue several commands checks there is room for all of them.
    #[must_use]
    pub fn free_slots(&self) -> usize {
        self.workers
            .iter()
            .map(|w| w.control.free_slots())
            .min()
            .unwrap_or(0)
    }

    /// SAs per direction each worker's tables hold.
    #[must_use]
    pub fn sa_capacity(&self) -> usize {
        self.sa_capacity
    }

    /// Commands applied so far and how many of them failed, counted per
    /// worker (a command sent to N workers counts N times).
    #[must_use]
    pub fn commands(&self) -> (u64, u64) {
        self.workers.iter().fold((0, 0), |(a, f), w| {
            (a.wrapping_add(w.acked), f.wrapping_add(w.failed_total))
        })
    }

    /// SA lifetime events reported since the last call.
    pub fn take_lifetime_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.lifetime_events)
    }

    /// The newest counters the workers published, summed (call
    /// [`poll`](Self::poll) first).
    #[must_use]
    pub fn worker_stats(&self) -> &WorkerSnapshot {
        &self.total
    }

    /// The newest counters of worker `worker` alone.
    #[must_use]
    pub fn worker_snapshot(&self, worker: usize) -> Option<&WorkerSnapshot> {
        self.workers.get(worker).map(|w| &w.last)
    }

    /// Read every port's link state (at most once per
    /// [`LINK_READ_PERIOD`]; `rte_eth_link_get_nowait` reads the NIC's
    /// registers, it does not wait for autonegotiation) and log each change
    /// with the port's device: a cable pulled or a peer port down is seen
    /// within a second, counted per port and shown by `vpnctl show ports`.
    pub fn watch_links(&mut self) {
        if !self.links.iter().all(|l| l.status.is_none())
            && self.links_read_at.elapsed() < LINK_READ_PERIOD
        {
            return;
        }
        self.links_read_at = Instant::now();
        for ((role, port), link) in self.ports.iter().zip(&mut self.links) {
            let Ok(now) = port.link() else { continue };
            if link.status == Some(now) {
                continue;
            }
            let first = link.status.is_none();
            link.status = Some(now);
            if now.up {
                tracing::info!(
                    "{role} port {}: link up, {} Mbit/s",
                    link.device,
                    now.speed_mbps
                );
            } else if first {
                tracing::warn!("{role} port {}: link down", link.device);
            } else {
                tracing::warn!("{role} port {}: link went down", link.device);
            }
            if !first {
                link.changes += 1;
            }
        }
    }

    /// Each port's device and link as last read, by role.
    #[must_use]
    pub fn port_links(&self) -> Vec<(&'static str, &PortLink)> {
        self.ports
            .iter()
            .map(|(r, _)| *r)
            .zip(&self.links)
            .collect()
    }

    /// The ports' counters, by role (`outside`, `inside`, `kernel`).
    #[must_use]
    pub fn port_stats(&self) -> Vec<(&'static str, PortStats)> {
        self.ports
            .iter()
            .map(|(role, p)| (*role, p.stats().unwrap_or_default()))
            .collect()
    }

    /// Stop the workers, wait for them, free what they held, release the
    /// ports and the mempool, clean the EAL up and remove its runtime
    /// directory. Returns the workers' final counters, summed.
    pub fn shutdown(mut self) -> WorkerSnapshot {
        self.stop_workers();
        self.total.clone()
    }

    /// [`shutdown`](Self::shutdown), returning each worker's final
    /// counters and their sum.
    pub fn shutdown_per_worker(mut self) -> (Vec<WorkerSnapshot>, WorkerSnapshot) {
        self.stop_workers();
        let each = self.workers.iter().map(|w| w.last.clone()).collect();
        (each, self.total.clone())
    }

    fn stop_workers(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for join in self.jobs.drain(..) {
            let _ = join();
        }
        self.poll();
        // Flow rules go before their port, ports (and with them the
        // mempool) before the EAL.
        self.steering.clear();
        self.ports.clear();
        if let Some(eal) = self.eal.take() {
            drop(eal);
            remove_runtime_dir(&self.prefix);
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

/// DPDK leaves `/var/run/dpdk/<prefix>` behind; remove it.
fn remove_runtime_dir(prefix: &str) {
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
}

/// rx → pipeline → tx for every port, commands between bursts, SA ageing
/// once a second, counters published every [`STATS_PERIOD_MS`]. With
/// `handoff`, ESP received for another worker goes onto its ring, and what
/// the others handed over is one more input. Returns the final counters.
fn worker_loop(
    w: &mut Worker,
    q: &mut Queues,
    mut handoff: Option<&mut Handoff>,
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
    let (mut busy_cycles, mut rx_packets) = (0u64, 0u64);
    let snapshot = |w: &Worker, out: &TxSide, h: Option<&Handoff>, secs, busy, rx| WorkerSnapshot {
        worker: w.stats().clone(),
        tx_full: out.tx_full,
        no_kernel_port: out.no_kernel_port,
        handoff: h.map(|h| h.counts).unwrap_or_default(),
        busy_cycles: busy,
        rx_packets: rx,
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
                let _ = stats_tx.push(snapshot(
                    w,
                    &out,
                    handoff.as_deref(),
                    secs,
                    busy_cycles,
                    rx_packets,
                ));
            }
        }
        // Inputs: 0 outside, 1 inside, 2 kernel port, 3 what the other
        // workers handed over (ESP of tunnels this worker owns that
        // arrived on their queues).
        for side in 0..4 {
            let polled = dpdk::rdtsc();
            let n = match side {
                0 => q.outside.0.rx_burst_max(&mut rx, 32),
                1 => q.inside.0.rx_burst_max(&mut rx, 32),
                2 => match &mut q.kernel {
                    Some(k) => k.0.rx_burst_max(&mut rx, 32),
                    None => continue,
                },
                _ => match handoff.as_deref_mut() {
                    Some(h) => h.receive(&mut rx),
                    None => continue,
                },
            };
            if n == 0 {
                continue;
            }
            rx_packets += n as u64;
            let ingress = match side {
                0 | 3 => Ingress::Outside,
                1 => Ingress::Inside,
                _ => Ingress::Kernel,
            };
            // Received ESP of tunnels other workers own leaves for them
            // first; this worker handles the rest.
            let burst = match handoff.as_deref_mut() {
                Some(h) if side == 0 => {
                    h.split(w, &mut rx);
                    &mut h.local
                }
                _ => &mut rx,
            };
            if burst.is_empty() {
                busy_cycles += dpdk::rdtsc().saturating_sub(polled);
                continue;
            }
            w.begin_burst(burst.len());
            // Every packet, and the extra ones it produces, leaves
            // through `io` onto the tx burst of its port; the worker
            // prefetches the state of the packets ahead (see
            // `Worker::handle_burst_io`).
            let mut io = FnIo(|| pool.alloc(), |a, m| out.emit(q, a, m));
            w.handle_burst_io(ingress, burst.drain(), &mut io);
            out.flush(q);
            busy_cycles += dpdk::rdtsc().saturating_sub(polled);
        }
    }
    snapshot(w, &out, handoff.as_deref(), secs, busy_cycles, rx_packets)
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
    fn one_pool_per_socket_with_workers_sized_by_its_workers() {
        assert_eq!(workers_per_socket(&[]), vec![]);
        assert_eq!(workers_per_socket(&[0, 0]), vec![(0, 2)]);
        // Workers on two sockets, interleaved: two pools, in order of
        // first appearance (worker 0's socket keeps the name vpn_pool).
        assert_eq!(workers_per_socket(&[1, 0, 1, 1]), vec![(1, 3), (0, 1)]);
    }

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

    #[test]
    fn several_workers_get_queue_pairs_and_an_lcore_map() {
        let mut c = RuntimeConfig::new(
            "p",
            "net_af_packet0,iface=a",
            "net_af_packet1,iface=b,qpairs=4",
            Memory::NoHuge { reason: "t".into() },
        );
        c.worker_lcores = vec![1, 2];
        let a = c.eal_args();
        assert!(a.contains(&"--vdev=net_af_packet0,iface=a,qpairs=2".to_owned()));
        assert!(a.contains(&"--vdev=net_af_packet1,iface=b,qpairs=4".to_owned()));
        assert!(a.windows(2).any(|w| w == ["-l", "0,1,2"]));
        c.lcore_map = Some("0@0,1@0,2@1".into());
        let a = c.eal_args();
        assert!(a.windows(2).any(|w| w == ["--lcores", "0@0,1@0,2@1"]));
        assert!(!a.contains(&"-l".to_owned()));
        // One worker: the device is left alone.
        c.worker_lcores = vec![1];
        assert_eq!(
            with_queue_pairs("net_af_packet0,iface=a", 1),
            "net_af_packet0,iface=a"
        );
        assert_eq!(with_queue_pairs("net_tap0,iface=k", 2), "net_tap0,iface=k");
    }

    #[test]
    fn only_stateless_commands_are_replicated() {
        assert!(replicate(&Command::RemoveInbound { spi: 7 }).is_ok());
        assert!(replicate(&Command::SetPolicing { enabled: false }).is_ok());
        assert_eq!(
            replicate(&Command::SnapshotSas(Box::default())).err(),
            Some(("SnapshotSas", "poll"))
        );
    }
}
