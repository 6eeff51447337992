//! `vpn-dp`: the dataplane in static-SA mode.
//!
//! Reads SAs, addresses and routes from a TOML file (see
//! `appliance::static_mode`), starts the outside, inside (and optional
//! kernel) ports, and runs one worker lcore:
//!
//! ```text
//!   main lcore (control)                       worker lcore
//!   load file → SaConfig → Command ──ring──►  apply between bursts
//!   wait for SIGTERM, print counters ◄──────  rx outside/inside/kernel
//!                                              → Worker::handle_* → tx
//! ```
//!
//! Exit codes: 0 stopped by a signal or `--duration`, 1 bad configuration
//! or set-up failure.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use appliance::eal_args::{self, Memory};
use appliance::static_mode::{self, StaticConfig};
use clap::Parser;
use dataplane::esp::{InboundSa, OutboundSa};
use dpdk::{Burst, Eal, Mempool, Port, PortConfig, RxQueue, TxQueue};
use fib::TunnelId;
use worker::{Action, Addresses, Command, Drop, Event, Worker, WorkerStats};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "The VPN dataplane with SAs and routes from a file (static-SA mode)"
)]
struct Args {
    /// The static configuration (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// EAL lcores: the main one runs the control loop, the next the worker.
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
}

struct Ports {
    outside: (RxQueue, TxQueue),
    inside: (RxQueue, TxQueue),
    kernel: Option<(RxQueue, TxQueue)>,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("vpn-dp: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config = StaticConfig::load(&args.config)?;
    let addresses = Addresses {
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
        let out =
            OutboundSa::new(&out, 0).with_context(|| format!("tunnel {} outbound SA", t.id))?;
        let inb = InboundSa::new(&inb, 0).with_context(|| format!("tunnel {} inbound SA", t.id))?;
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
    let mut vdevs = vec![config.ports.outside.clone(), config.ports.inside.clone()];
    vdevs.extend(config.ports.kernel.clone());
    let prefix = format!("{}-{}", args.file_prefix, std::process::id());
    let eal = Eal::init(eal_args::build(
        &prefix,
        &args.lcores,
        args.main_lcore,
        &memory,
        &vdevs,
    ))
    .context("EAL initialisation")?;
    let result = serve(
        args,
        &eal,
        addresses,
        fib,
        sas,
        config.ports.kernel.is_some(),
    );
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
    result
}

fn serve(
    args: &Args,
    eal: &Eal,
    mut addresses: Addresses,
    fib: fib::FibBuilder,
    sas: Vec<(TunnelId, OutboundSa, InboundSa)>,
    with_kernel: bool,
) -> anyhow::Result<()> {
    let Some(&lcore) = eal.worker_lcores().first() else {
        bail!("no worker lcore: --lcores needs two lcores");
    };
    let pool =
        Mempool::new(eal, "dp_pool", 8191, 256, Mempool::DEFAULT_DATA_ROOM).context("mbuf pool")?;
    let start = |id: u16| -> anyhow::Result<(Port, RxQueue, TxQueue)> {
        let port = Port::configure(eal, dpdk::PortId(id), &PortConfig::default(), &pool)
            .with_context(|| format!("configure port {id}"))?;
        port.start().with_context(|| format!("start port {id}"))?;
        let rx = port.rx_queue(0)?;
        let tx = port.tx_queue(0)?;
        Ok((port, rx, tx))
    };
    let (outside, o_rx, o_tx) = start(0)?;
    let (inside, i_rx, i_tx) = start(1)?;
    let kernel = if with_kernel { Some(start(2)?) } else { None };
    addresses.outside_mac = outside.mac()?;
    addresses.inside_mac = inside.mac()?;
    if let Some((k, _, _)) = &kernel {
        addresses.kernel_mac = k.mac()?;
    }
    let ports = Ports {
        outside: (o_rx, o_tx),
        inside: (i_rx, i_tx),
        kernel: kernel.map(|(_, rx, tx)| (rx, tx)),
    };

    // Everything reaches the worker as commands, exactly as IKE will later.
    let (mut control, end) = worker::channel(4096);
    let mut w = Worker::new(end, 16 * 1024);
    let mut commands = vec![Command::SetAddresses(Box::new(addresses))];
    for (tunnel, out, inb) in sas {
        commands.push(Command::AddInbound(Box::new(inb)));
        commands.push(Command::SetOutbound {
            tunnel,
            sa: Box::new(out),
        });
    }
    commands.push(Command::SetFib(Arc::new(fib.build())));
    for c in commands {
        if control.send(c).is_err() {
            bail!("command ring full at start-up");
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let (stats_tx, stats_rx) = std::sync::mpsc::channel::<WorkerStats>();
    let job = {
        let stop = stop.clone();
        eal.launch(lcore, move || {
            let mut ports = ports;
            worker_loop(&mut w, &mut ports, &stop);
            let _ = stats_tx.send(w.stats().clone());
            0
        })?
    };
    eprintln!("vpn-dp: running on {lcore}");
    let started = Instant::now();
    let (mut done, mut failed) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        while let Some(ev) = control.poll_event() {
            match ev {
                Event::Done { .. } => done += 1,
                Event::Failed { seq, reason } => {
                    failed += 1;
                    eprintln!("vpn-dp: command {seq} failed: {reason}");
                }
                Event::Lifetime {
                    spi,
                    inbound,
                    event,
                } => {
                    eprintln!("vpn-dp: SA {spi:#x} (inbound: {inbound}) {event:?}");
                }
                // Retired SAs and tables are freed here, on the control core.
                _ => {}
            }
        }
        if args
            .duration
            .is_some_and(|d| started.elapsed().as_secs_f64() >= d)
        {
            stop.store(true, Ordering::Relaxed);
        }
    }
    let _ = job.join();
    println!("commands: applied {done} failed {failed}");
    if let Ok(s) = stats_rx.recv_timeout(Duration::from_secs(1)) {
        print_stats(&s);
    }
    Ok(())
}

fn print_stats(s: &WorkerStats) {
    println!(
        "stats: encap={} decap={} punted={} arp_replies={} dropped={}",
        s.encap_packets,
        s.decap_packets,
        s.punted,
        s.arp_replies,
        s.total_dropped()
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
    }
}

/// rx → pipeline → tx for every port, commands between bursts, SA ageing
/// once a second.
fn worker_loop(w: &mut Worker, ports: &mut Ports, stop: &AtomicBool) {
    let mut rx = Burst::new();
    let mut to_outside = Burst::new();
    let mut to_inside = Burst::new();
    let mut to_kernel = Burst::new();
    let hz = dpdk::tsc_hz().max(1);
    let mut next_tick = dpdk::rdtsc() + hz;
    let mut secs = 0u64;
    while !stop.load(Ordering::Relaxed) {
        w.apply_commands();
        let now = dpdk::rdtsc();
        if now >= next_tick {
            secs += 1;
            next_tick = now + hz;
            w.handle_timeout(secs);
        }
        for side in 0..3 {
            let queue = match side {
                0 => &mut ports.outside.0,
                1 => &mut ports.inside.0,
                _ => match &mut ports.kernel {
                    Some(k) => &mut k.0,
                    None => continue,
                },
            };
            if queue.rx_burst_max(&mut rx, 32) == 0 {
                continue;
            }
            for mut m in rx.drain() {
                let action = match side {
                    0 => w.handle_outside(&mut m),
                    1 => w.handle_inside(&mut m),
                    _ => w.handle_kernel(&mut m),
                };
                let out = match action {
                    Action::ToOutside => &mut to_outside,
                    Action::ToInside => &mut to_inside,
                    Action::ToKernel if ports.kernel.is_some() => &mut to_kernel,
                    Action::ToKernel | Action::Drop => continue,
                };
                // Bursts of 32 in, 64 slots out: a push cannot fail.
                let _ = out.push(m);
            }
            if !to_outside.is_empty() {
                let _ = ports.outside.1.tx_burst(&mut to_outside);
            }
            if !to_inside.is_empty() {
                let _ = ports.inside.1.tx_burst(&mut to_inside);
            }
            if let Some(k) = &mut ports.kernel
                && !to_kernel.is_empty()
            {
                let _ = k.1.tx_burst(&mut to_kernel);
            }
            to_kernel.clear();
        }
    }
}
