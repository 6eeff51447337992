//! `vpn-fwd`: an io-mode forwarder on the safe DPDK layer.
//!
//! Ports are paired in probe order (0↔1, 2↔3, …; an odd last port sends
//! back out of itself) and one worker lcore moves every received burst
//! unchanged to the paired port, like `dpdk-testpmd --forward-mode=io`.
//! The main lcore prints rates every `--stats-period` seconds and a final
//! `summary:` line that the benchmarks parse.
//!
//! Exit codes: 0 done, 1 bad arguments or set-up failure, 2 the worker
//! failed.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use appliance::eal_args::{self, Memory};
use appliance::hugepages::HugepageConfig;
use clap::Parser;
use crossbeam_utils::CachePadded;
use dpdk::{Burst, Eal, Mempool, Port, PortConfig, PortId, RxQueue, TxQueue};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "io-mode packet forwarder between DPDK ports (0<->1, 2<->3, ...)"
)]
struct Args {
    /// A DPDK virtual device, repeatable (e.g. `net_af_packet0,iface=veth1`).
    #[arg(long = "vdev", value_name = "DEVARGS")]
    vdevs: Vec<String>,
    /// EAL lcore list: the main lcore prints statistics, the first other
    /// lcore forwards.
    #[arg(long, default_value = "0,1")]
    lcores: String,
    /// Which lcore of --lcores is the main one (default: the lowest).
    #[arg(long)]
    main_lcore: Option<u32>,
    /// EAL file prefix (the process id is appended).
    #[arg(long, default_value = "vpn-fwd")]
    file_prefix: String,
    /// Use ordinary memory instead of hugepages.
    #[arg(long)]
    no_huge: bool,
    /// Hugepage configuration (falls back to --no-huge when unusable).
    #[arg(long, default_value = "hugepages.conf")]
    hugepages_conf: PathBuf,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Seconds between rate lines (0: no periodic lines).
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    stats_period: f64,
    /// Seconds at the start left out of the summary's rate.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    warmup: f64,
    /// Packets per rx burst (1..=64).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=64))]
    burst: u16,
    /// Mbufs in the pool.
    #[arg(long, default_value_t = 8191)]
    mbufs: u32,
}

/// Counters of one direction, written by the worker only.
#[derive(Debug, Default)]
struct StreamCounters {
    rx: CachePadded<AtomicU64>,
    tx: CachePadded<AtomicU64>,
    dropped: CachePadded<AtomicU64>,
}

impl StreamCounters {
    /// Single-writer add: a plain load and store, no locked instruction.
    fn add(counter: &AtomicU64, n: usize) {
        counter.store(
            counter.load(Ordering::Relaxed) + n as u64,
            Ordering::Relaxed,
        );
    }
}

struct Stream {
    rx: RxQueue,
    tx: TxQueue,
    counters: Arc<StreamCounters>,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("vpn-fwd: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> anyhow::Result<i32> {
    let memory = if args.no_huge {
        Memory::NoHuge {
            reason: "--no-huge given".into(),
        }
    } else {
        let conf = HugepageConfig::load(&args.hugepages_conf)
            .map_err(|e| eprintln!("vpn-fwd: {e}"))
            .ok();
        eal_args::choose_memory(conf.as_ref(), 256)
    };
    if let Memory::NoHuge { reason } = &memory {
        eprintln!("vpn-fwd: running without hugepages (--no-huge): {reason}");
    }
    let prefix = format!("{}-{}", args.file_prefix, std::process::id());
    let eal_argv = eal_args::build(&prefix, &args.lcores, args.main_lcore, &memory, &args.vdevs);
    let eal = Eal::init(&eal_argv).context("EAL initialisation")?;
    let result = forward(args, &eal);
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
    result
}

fn forward(args: &Args, eal: &Eal) -> anyhow::Result<i32> {
    let nports = dpdk::port_count(eal);
    if nports == 0 {
        bail!("no ports: give at least one --vdev");
    }
    let Some(&worker) = eal.worker_lcores().first() else {
        bail!("no worker lcore: --lcores needs two lcores");
    };
    let pool = Mempool::new(eal, "fwd_pool", args.mbufs, 256, Mempool::DEFAULT_DATA_ROOM)
        .context("mbuf pool")?;
    let config = PortConfig {
        rx_descriptors: 1024,
        tx_descriptors: 1024,
        ..PortConfig::default()
    };
    let ports = (0..nports)
        .map(|id| {
            let port = Port::configure(eal, PortId(id), &config, &pool)
                .with_context(|| format!("configure port {id}"))?;
            port.start().with_context(|| format!("start port {id}"))?;
            Ok(port)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut txs: Vec<Option<TxQueue>> = ports.iter().map(|p| p.tx_queue(0).ok()).collect();
    let mut streams = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let peer = if i % 2 == 0 {
            (i + 1).min(ports.len() - 1)
        } else {
            i - 1
        };
        let tx = txs[peer].take().context("tx queue")?;
        let rx = port.rx_queue(0)?;
        eprintln!("vpn-fwd: stream {} -> {}", port.id(), ports[peer].id());
        streams.push(Stream {
            rx,
            tx,
            counters: Arc::new(StreamCounters::default()),
        });
    }
    let counters: Vec<_> = streams.iter().map(|s| s.counters.clone()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let burst_size = usize::from(args.burst);
    let job = {
        let stop = stop.clone();
        eal.launch(worker, move || {
            worker_loop(&mut streams, burst_size, &stop);
            0
        })?
    };

    let started = Instant::now();
    let total = |c: &[Arc<StreamCounters>]| -> (u64, u64, u64) {
        c.iter().fold((0, 0, 0), |(r, t, d), s| {
            (
                r + s.rx.load(Ordering::Relaxed),
                t + s.tx.load(Ordering::Relaxed),
                d + s.dropped.load(Ordering::Relaxed),
            )
        })
    };
    let mut last = (started, total(&counters));
    let mut warm: Option<(Instant, (u64, u64, u64))> = None;
    let tick = Duration::from_millis(50);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        let now = Instant::now();
        let elapsed = now.duration_since(started).as_secs_f64();
        if warm.is_none() && elapsed >= args.warmup {
            warm = Some((now, total(&counters)));
        }
        if args.stats_period > 0.0 && now.duration_since(last.0).as_secs_f64() >= args.stats_period
        {
            let cur = total(&counters);
            let secs = now.duration_since(last.0).as_secs_f64();
            println!(
                "rx {:>8.3} Mpps  tx {:>8.3} Mpps  dropped {}",
                (cur.0 - last.1.0) as f64 / secs / 1e6,
                (cur.1 - last.1.1) as f64 / secs / 1e6,
                cur.2
            );
            last = (now, cur);
        }
        if args.duration.is_some_and(|d| elapsed >= d) {
            stop.store(true, Ordering::Relaxed);
        }
    }
    let end = Instant::now();
    let code = job.join();
    let fin = total(&counters);
    let (t0, base) = warm.unwrap_or((started, (0, 0, 0)));
    let secs = end.duration_since(t0).as_secs_f64().max(1e-9);
    println!(
        "summary: seconds={:.3} rx_packets={} tx_packets={} dropped={} tx_mpps={:.3}",
        secs,
        fin.0,
        fin.1,
        fin.2,
        (fin.1 - base.1) as f64 / secs / 1e6
    );
    for port in &ports {
        if let Ok(s) = port.stats() {
            eprintln!(
                "vpn-fwd: {}: rx {} tx {} missed {} rx_errors {} tx_errors {}",
                port.id(),
                s.rx_packets,
                s.tx_packets,
                s.rx_missed,
                s.rx_errors,
                s.tx_errors
            );
        }
    }
    Ok(if code == 0 { 0 } else { 2 })
}

/// The forwarding loop: rx burst, tx burst, count; nothing else.
fn worker_loop(streams: &mut [Stream], burst_size: usize, stop: &AtomicBool) {
    let mut burst = Burst::new();
    while !stop.load(Ordering::Relaxed) {
        for s in streams.iter_mut() {
            let n = s.rx.rx_burst_max(&mut burst, burst_size);
            if n == 0 {
                continue;
            }
            let sent = s.tx.tx_burst(&mut burst);
            StreamCounters::add(&s.counters.rx, n);
            StreamCounters::add(&s.counters.tx, sent.sent);
            StreamCounters::add(&s.counters.dropped, sent.dropped);
        }
    }
}
