//! `vpn-dp`: the dataplane in static-SA mode.
//!
//! Reads SAs, addresses and routes from a TOML file (see
//! `appliance::static_mode`) and starts the dataplane runtime
//! (`appliance::runtime`: EAL, the outside, inside and optional kernel
//! ports, one worker lcore per queue):
//!
//! ```text
//!   main lcore (control)                       worker lcores (one per queue)
//!   load file → SaConfig → Command ──rings──► apply between bursts
//!   wait for SIGTERM, print counters ◄──────  rx queue i of outside/inside/kernel
//!                                              → Worker::handle_* → tx queue i
//! ```
//!
//! `--lcores 0,1,2` (or `0-2`) runs the control loop on the first and a
//! worker on each other lcore; `--lcores 0@0,1@1,2@1` is passed to the
//! EAL as `--lcores` (several lcores on one cpu, for functional tests on
//! small machines). The counters printed at exit are the workers' sums
//! (`stats:`), then each worker's (`worker N:`). `--crypto-backend`
//! picks the ESP crypto library (default `auto`); the choice and its
//! reason are printed at start (`vpn-dp: crypto: ipsec-mb/avx512 (…)`).
//!
//! Exit codes: 0 stopped by a signal or `--duration`, 1 bad configuration
//! or set-up failure.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use appliance::eal_args::{self, Memory};
use appliance::runtime::steering::{SteerTunnel, queue_for};
use appliance::runtime::{Runtime, RuntimeConfig};
use appliance::static_mode::{self, StaticConfig};
use clap::Parser;
use dataplane::crypto::BackendPreference;
use fib::TunnelId;
use worker::{Addresses, Command, Drop, Event, WorkerStats};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "The VPN dataplane with SAs and routes from a file (static-SA mode)"
)]
struct Args {
    /// The static configuration (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// EAL lcores: the main one runs the control loop, every other one a
    /// worker (a list `0,1,2`, a range `0-2`, or an EAL map `0@0,1@1,2@1`).
    #[arg(long, default_value = "0,1")]
    lcores: String,
    /// The main lcore (default: the lowest of --lcores).
    #[arg(long)]
    main_lcore: Option<u32>,
    /// EAL file prefix (the process id is appended).
    #[arg(long, default_value = "vpn-dp")]
    file_prefix: String,
    /// Use ordinary memory instead of hugepages.
    #[arg(long)]
    no_huge: bool,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// The ESP crypto library: `auto` (intel-ipsec-mb where its code path
    /// for this CPU is AVX2 or better, else ring), `ipsec-mb` or `ring`.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    crypto_backend: BackendPreference,
}

fn parse_backend(s: &str) -> Result<BackendPreference, String> {
    BackendPreference::parse(s).ok_or_else(|| format!("{s:?}: one of auto, ipsec-mb, ring"))
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("vpn-dp: error: {e:#}");
        std::process::exit(1);
    }
}

/// `0,1,2`, `0-2` or `0@0,1@1,2@1` → the main lcore and the worker
/// lcores.
fn split_lcores(lcores: &str, main: Option<u32>) -> anyhow::Result<(u32, Vec<u32>)> {
    let mut ids = Vec::new();
    for part in lcores.split(',') {
        // `lcore@cpu`: the lcore is what comes before the `@`.
        let part = part.split('@').next().unwrap_or(part).trim();
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (u32, u32) = (a.parse()?, b.parse()?);
            ids.extend(a..=b);
        } else {
            ids.push(part.parse()?);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let main = main.or_else(|| ids.first().copied());
    let Some(main) = main else {
        bail!("--lcores {lcores:?} names no lcore");
    };
    let workers: Vec<u32> = ids.iter().copied().filter(|&l| l != main).collect();
    if workers.is_empty() {
        bail!("no worker lcore: --lcores needs two lcores");
    }
    Ok((main, workers))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config = StaticConfig::load(&args.config)?;
    let mut addresses = Addresses {
        outside_mac: [0; 6],
        outside_gateway_mac: static_mode::parse_mac(&config.addresses.outside_gateway_mac)
            .map_err(anyhow::Error::msg)?,
        inside_mac: [0; 6],
        inside_gateway_mac: static_mode::parse_mac(&config.addresses.inside_gateway_mac)
            .map_err(anyhow::Error::msg)?,
        kernel_mac: [0; 6],
        outside_v4: static_mode::v4_only(&config.addresses.outside),
        outside_v6: static_mode::v6_only(&config.addresses.outside),
        inside_v4: config.addresses.inside.clone(),
    };
    let fib = static_mode::build_fib(&config.routes).map_err(anyhow::Error::msg)?;
    let mut sas = Vec::new();
    for t in &config.tunnels {
        let (out, inb) = t.sa_configs().map_err(anyhow::Error::msg)?;
        // Checked here so that a bad file fails before the EAL starts.
        dataplane::esp::OutboundSa::new(&out, 0)
            .with_context(|| format!("tunnel {} outbound SA", t.id))?;
        dataplane::esp::InboundSa::new(&inb, 0)
            .with_context(|| format!("tunnel {} inbound SA", t.id))?;
        sas.push((TunnelId(t.id), out, inb));
    }

    let memory = if args.no_huge {
        Memory::NoHuge {
            reason: "--no-huge given".into(),
        }
    } else {
        let conf =
            appliance::hugepages::HugepageConfig::load(std::path::Path::new("hugepages.conf")).ok();
        eal_args::choose_memory(conf.as_ref(), 256)
    };
    if let Memory::NoHuge { reason } = &memory {
        eprintln!("vpn-dp: running without hugepages (--no-huge): {reason}");
    }
    let (main_lcore, worker_lcores) = split_lcores(&args.lcores, args.main_lcore)?;
    let prefix = format!("{}-{}", args.file_prefix, std::process::id());
    let mut rc = RuntimeConfig::new(&prefix, &config.ports.outside, &config.ports.inside, memory);
    rc.kernel.clone_from(&config.ports.kernel);
    rc.main_lcore = main_lcore;
    rc.worker_lcores = worker_lcores;
    if args.lcores.contains('@') {
        rc.lcore_map = Some(args.lcores.clone());
    }
    rc.crypto_backend = args.crypto_backend;
    let mut rt = Runtime::start(&rc)?;
    eprintln!(
        "vpn-dp: crypto: {} ({})",
        rt.crypto_backend(),
        rt.crypto_backend_reason()
    );
    for p in rt.port_queues() {
        eprintln!("vpn-dp: {p}");
    }
    let macs = rt.macs();
    addresses.outside_mac = macs.outside;
    addresses.inside_mac = macs.inside;
    addresses.kernel_mac = macs.kernel.unwrap_or_default();

    // Everything reaches the workers as commands, exactly as from IKE. A
    // large file (thousands of tunnels) is more than a ring holds at
    // once: wait for the workers to drain it.
    let patience = Duration::from_secs(10);
    let _ = rt
        .send_waiting(Command::SetAddresses(Box::new(addresses)), patience)
        .context("at start-up")?;
    let tunnels: Vec<TunnelId> = sas.iter().map(|(t, _, _)| *t).collect();
    // Each tunnel's inbound ESP to worker `id mod workers` where the
    // outside port has flow rules (consecutive tunnels, e.g. the two of a
    // connection, on different workers); said once either way.
    if rt.workers() > 1 {
        eprintln!("vpn-dp: dataplane: {}", rt.steering_mode());
        let steer: Vec<SteerTunnel> = config
            .tunnels
            .iter()
            .map(|t| SteerTunnel {
                tunnel: TunnelId(t.id),
                local: Some(t.local),
                remote: Some(t.remote),
                queue: queue_for(t.id, 0, rt.workers()),
            })
            .collect();
        for p in rt.steer(&steer) {
            eprintln!("vpn-dp: steering refused: {p}");
        }
    }
    for (tunnel, out, inb) in &sas {
        let _ = rt
            .add_inbound(Some(*tunnel), inb, patience)
            .context("at start-up")?;
        let _ = rt
            .set_outbound(*tunnel, out, patience)
            .context("at start-up")?;
    }
    drop(sas);
    let last = rt
        .send_waiting(Command::SetFib(Arc::new(fib.build())), patience)
        .context("at start-up")?;
    // Commands apply in order: the FIB acknowledged, everything is.
    rt.wait(last, Duration::from_secs(30))
        .context("at start-up")?;

    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    eprintln!("vpn-dp: running on lcores {:?}", rt.worker_lcores());
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        rt.poll();
        for ev in rt.take_lifetime_events() {
            if let Event::Lifetime {
                spi,
                inbound,
                event,
            } = ev
            {
                eprintln!("vpn-dp: SA {spi:#x} (inbound: {inbound}) {event:?}");
            }
        }
        if args
            .duration
            .is_some_and(|d| started.elapsed().as_secs_f64() >= d)
        {
            stop.store(true, Ordering::Relaxed);
        }
    }
    let (acked, failed) = rt.commands();
    // Per tunnel: the counters, the worker its inbound ESP is steered to,
    // and the packets each worker decrypted for it.
    type PerTunnel = (TunnelId, worker::TunnelSnapshot, Option<usize>, Vec<u64>);
    let per_tunnel: Vec<PerTunnel> = tunnels
        .iter()
        .filter_map(|t| {
            let by_worker = (0..rt.workers())
                .map(|w| rt.tunnel_counters_of(w, *t).map_or(0, |c| c.in_packets))
                .collect();
            rt.tunnel_counters(*t)
                .map(|c| (*t, c, rt.steered_worker(*t), by_worker))
        })
        .collect();
    let (each, last) = rt.shutdown_per_worker();
    println!("commands: applied {} failed {failed}", acked - failed);
    print_stats("stats:", &last.worker);
    for (t, c, steered, by_worker) in per_tunnel {
        let mut steered = steered
            .map(|w| format!(" steered_worker={w}"))
            .unwrap_or_default();
        if by_worker.len() > 1 {
            let each: Vec<String> = by_worker.iter().map(u64::to_string).collect();
            steered.push_str(&format!(" in_by_worker={}", each.join(",")));
        }
        println!(
            "tunnel {}: in_packets={} in_bytes={} out_packets={} out_bytes={} dropped={}{steered}",
            t.0,
            c.in_packets,
            c.in_bytes,
            c.out_packets,
            c.out_bytes,
            c.total_dropped()
        );
    }
    if last.tx_full.iter().any(|&n| n > 0) || last.no_kernel_port > 0 || last.handoff.full > 0 {
        println!(
            "drop tx_full={} no_kernel_port={} handoff_full={}",
            last.tx_full.iter().sum::<u64>(),
            last.no_kernel_port,
            last.handoff.full
        );
    }
    // Each worker's share (a line per worker even with one).
    for (i, w) in each.iter().enumerate() {
        println!(
            "worker {i}: encap={} decap={} punted={} arp_replies={} dropped={} \
             handed_off={} handoff_received={} handoff_full={} rx={} busy_cycles={}",
            w.worker.encap_packets,
            w.worker.decap_packets,
            w.worker.punted,
            w.worker.arp_replies,
            w.worker.total_dropped(),
            w.handoff.sent,
            w.handoff.received,
            w.handoff.full,
            w.rx_packets,
            w.busy_cycles
        );
    }
    Ok(())
}

fn print_stats(label: &str, s: &WorkerStats) {
    println!(
        "{label} encap={} decap={} punted={} arp_replies={} dropped={}",
        s.encap_packets,
        s.decap_packets,
        s.punted,
        s.arp_replies,
        s.total_dropped()
    );
    println!(
        "reassembly outer_reassembled={} outer_held={} inner_reassembled={} inner_held={}",
        s.outer_reassembled, s.outer_fragments_held, s.reassembled, s.fragments_held
    );
    for reason in Drop::ALL {
        let n = s.dropped(reason);
        if n > 0 {
            println!("drop {}={n}", reason.name());
        }
    }
    for reason in dataplane::esp::DropReason::ALL {
        let n = s.esp.get(reason);
        if n > 0 {
            println!("esp_drop {reason:?}={n}");
        }
        let n = s.outer.get(reason);
        if n > 0 {
            println!("outer_drop {reason:?}={n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_lcores;

    #[test]
    fn lcore_lists_and_ranges() {
        assert_eq!(split_lcores("0,1", None).unwrap(), (0, vec![1]));
        assert_eq!(split_lcores("2-3", None).unwrap(), (2, vec![3]));
        assert_eq!(split_lcores("0-3", Some(2)).unwrap(), (2, vec![0, 1, 3]));
        assert_eq!(split_lcores("0@0,1@1,2@1", None).unwrap(), (0, vec![1, 2]));
        assert!(split_lcores("1", None).is_err());
    }
}
