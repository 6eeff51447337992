//! `change-scale`: the management plane's cost per change as the
//! configuration grows (issue 16 item 4).
//!
//! ```text
//!   change-scale ──► writes <dir>/vpnd.toml (net_null ports, one worker)
//!                ──► vpnd --config <dir>/vpnd.toml --no-huge
//!                ──unix socket, one JSON request per line (as vpnctl)──► vpnd
//!   fill:   customer gateway + dynamic connection, one pair after another
//!   levels: at 10 / 1,000 / 10,000 tunnels (or --levels), SAMPLES changes
//!           that leave the size where it is (create gateway, create
//!           connection, delete connection, delete gateway), each timed
//!           from writing the request to reading the reply
//!   end:    show tunnels (timed), RSS, SIGTERM, restart to serving (timed)
//! ```
//!
//! One client connection is kept open for the whole run (vpnctl opens one
//! per command; that adds the daemon's thread spawn, the same at every
//! size). Latencies go into hdrhistogram (µs); the report gives p50, p99
//! and max per level and the ratio of the largest level's p99 to the
//! smallest's.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use control::config::{RoutingType, VpnConnection};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Per-change latency of vpnd's management API as the configuration grows")]
struct Args {
    /// The vpnd binary.
    #[arg(long, default_value = "target/release/vpnd")]
    vpnd: PathBuf,
    /// Connections to create (two tunnels each).
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// Tunnel counts at which to measure (each ≤ 2 × connections).
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000")]
    levels: Vec<usize>,
    /// Measured changes per level (a multiple of 4).
    #[arg(long, default_value_t = 400)]
    samples: usize,
    /// Working directory (created; removed at the end unless --keep).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the working directory.
    #[arg(long)]
    keep: bool,
    /// Run vpnd with --no-dataplane (the in-memory stand-in) instead of
    /// DPDK on net_null ports.
    #[arg(long)]
    no_dataplane: bool,
    /// The worker lcore of the DPDK dataplane.
    #[arg(long, default_value_t = 1)]
    worker_lcore: u32,
}

/// A management-socket client speaking the API's line protocol.
struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    line: String,
}

impl Client {
    fn connect(socket: &Path) -> Result<Self> {
        let s = UnixStream::connect(socket).with_context(|| socket.display().to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Self {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
            next_id: 1,
            line: String::new(),
        })
    }

    /// Send `request`, return the `response` member (error replies fail).
    fn call(&mut self, request: &Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = serde_json::to_vec(&json!({"version": 1, "id": id, "request": request}))?;
        msg.push(b'\n');
        self.writer.write_all(&msg)?;
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
            bail!("vpnd closed the connection");
        }
        let mut reply: Value = serde_json::from_str(&self.line)?;
        if let Some(e) = reply.get("error") {
            bail!("request {request} failed: {e}");
        }
        Ok(reply["response"].take())
    }

    /// `call`, timed in µs.
    fn timed(&mut self, request: &Value) -> Result<u64> {
        let t = Instant::now();
        self.call(request)?;
        Ok(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))
    }
}

fn create_gateway(i: usize, prefix: &str) -> Value {
    // Distinct public addresses from 20.0.0.1 up.
    let n = u32::try_from(i).unwrap_or(u32::MAX) + 1;
    let ip = std::net::Ipv4Addr::from(0x1400_0000 + n);
    json!({"type": "create_customer_gateway", "customer_gateway": {
        "id": format!("{prefix}cgw-{i}"), "ip_address": ip.to_string(), "bgp_asn": 65000}})
}

/// A dynamic-routing connection with every option at its default, as
/// `vpnctl connection create ID --customer-gateway CGW --routing dynamic`
/// sends it.
fn create_connection(i: usize, prefix: &str) -> Value {
    let mut c = VpnConnection::new(format!("{prefix}vpn-{i}"), format!("{prefix}cgw-{i}"), "");
    c.routing = RoutingType::Dynamic;
    json!({"type": "create_connection", "connection": c})
}

fn write_config(dir: &Path, args: &Args, prefix: &str) -> Result<()> {
    let config = format!(
        r#"[gateway]
id = "tgw-bench"
asn = 64512
outside_addresses = ["198.51.100.10", "198.51.100.11"]

[dataplane]
file_prefix = "{prefix}"
main_lcore = 0
worker_lcores = [{lcore}]

[[dataplane.ports]]
name = "outside"
device = "net_null0"
role = "outside"

[[dataplane.ports]]
name = "inside"
device = "net_null1"
role = "inside"

[management]
socket_path = "{socket}"

[metrics]
enabled = false
"#,
        lcore = args.worker_lcore,
        socket = dir.join("control.sock").display(),
    );
    std::fs::write(dir.join("vpnd.toml"), config)?;
    Ok(())
}

struct Vpnd {
    child: Child,
}

impl Vpnd {
    /// Start vpnd; return it with the time until it answered a ping.
    fn start(args: &Args, dir: &Path, n: usize) -> Result<(Self, Duration)> {
        let log = std::fs::File::create(dir.join(format!("vpnd-{n}.log")))?;
        let mut cmd = Command::new(&args.vpnd);
        cmd.arg("--config").arg(dir.join("vpnd.toml"));
        if args.no_dataplane {
            cmd.arg("--no-dataplane");
        } else {
            cmd.arg("--no-huge");
        }
        let t = Instant::now();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| args.vpnd.display().to_string())?;
        let mut d = Self { child };
        let socket = dir.join("control.sock");
        loop {
            if let Some(st) = d.child.try_wait()? {
                bail!("vpnd exited: {st}; see {}/vpnd-{n}.log", dir.display());
            }
            if let Ok(mut c) = Client::connect(&socket)
                && c.call(&json!({"type": "ping"})).is_ok()
            {
                return Ok((d, t.elapsed()));
            }
            if t.elapsed() > Duration::from_secs(300) {
                bail!("vpnd did not answer within 300 s");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("VmRSS")
    }

    /// CPU time (user + system, in clock ticks) of vpnd's threads other
    /// than the DPDK worker lcores (`rte-worker-*` in DPDK 22.11,
    /// `lcore-worker-*` in later releases), which poll without
    /// rest by design: the control core, its log writer and the EAL's
    /// service threads.
    fn control_ticks(&self) -> Result<u64> {
        let mut ticks = 0;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.child.id()))? {
            let task = task?.path();
            let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if comm.starts_with("rte-worker") || comm.starts_with("lcore-worker") {
                continue;
            }
            let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
            // Fields after the parenthesised name: state is field 3,
            // utime 14 and stime 15 (1-based).
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            let field = |i: usize| {
                f.get(i - 3)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            ticks += field(14) + field(15);
        }
        Ok(ticks)
    }

    fn stop(mut self) -> Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let t = Instant::now();
        while self.child.try_wait()?.is_none() {
            if t.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("vpnd did not stop on SIGTERM within 30 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for Vpnd {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

fn ms(us: u64) -> f64 {
    // Latencies are far below 2^52 µs.
    #[allow(clippy::cast_precision_loss)]
    let v = us as f64;
    v / 1000.0
}

/// How long the idle control CPU is measured.
const IDLE: Duration = Duration::from_secs(10);

fn main() -> Result<()> {
    let args = Args::parse();
    if args.samples % 4 != 0 || args.samples == 0 {
        bail!("--samples must be a positive multiple of 4");
    }
    let max_tunnels = 2 * args.connections;
    if let Some(l) = args
        .levels
        .iter()
        .find(|l| **l > max_tunnels || **l % 2 != 0)
    {
        bail!("level {l}: levels are even tunnel counts up to {max_tunnels}");
    }
    let tag = std::process::id();
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("change-scale-{tag}")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    write_config(&dir, &args, &format!("change-scale-{tag}"))?;

    let (vpnd, first_start) = Vpnd::start(&args, &dir, 0)?;
    let rss_empty = vpnd.rss_kib()?;
    let socket = dir.join("control.sock");
    let mut client = Client::connect(&socket)?;
    eprintln!(
        "vpnd up in {:.0} ms (empty configuration), RSS {rss_empty} KiB",
        first_start.as_secs_f64() * 1000.0
    );

    let mut levels: Vec<(usize, Histogram<u64>)> = Vec::new();
    let mut fill = hist();
    let fill_start = Instant::now();
    let mut next_level = args.levels.iter().copied().peekable();
    for i in 0..=args.connections {
        let tunnels = 2 * i;
        while next_level.peek() == Some(&tunnels) {
            let level = next_level.next().unwrap_or_default();
            let mut h = hist();
            for j in 0..args.samples / 4 {
                let p = "probe-";
                h.record(client.timed(&create_gateway(1_000_000 + j, p))?)?;
                h.record(client.timed(&create_connection(1_000_000 + j, p))?)?;
                h.record(client.timed(&json!({"type": "delete_connection",
                    "id": format!("{p}vpn-{}", 1_000_000 + j)}))?)?;
                h.record(client.timed(&json!({"type": "delete_customer_gateway",
                    "id": format!("{p}cgw-{}", 1_000_000 + j)}))?)?;
            }
            eprintln!(
                "{level} tunnels: p50 {:.2} ms p99 {:.2} ms max {:.2} ms ({} changes)",
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max()),
                h.len()
            );
            levels.push((level, h));
        }
        if i == args.connections {
            break;
        }
        fill.record(client.timed(&create_gateway(i, ""))?)?;
        fill.record(client.timed(&create_connection(i, ""))?)?;
        if (i + 1) % 500 == 0 {
            eprintln!(
                "{} connections in {:.1} s",
                i + 1,
                fill_start.elapsed().as_secs_f64()
            );
        }
    }
    let fill_secs = fill_start.elapsed().as_secs_f64();

    let mut show = hist();
    let mut shown = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let r = client.call(&json!({"type": "show_tunnels"}))?;
        show.record(u64::try_from(t.elapsed().as_micros())?)?;
        shown = r["tunnels"].as_array().map_or(0, Vec::len);
    }
    if shown != max_tunnels {
        bail!("show tunnels listed {shown} tunnels, expected {max_tunnels}");
    }
    let rss_full = vpnd.rss_kib()?;
    // Idle: nothing asked for IDLE_SECS; the control threads' CPU time.
    let idle_before = vpnd.control_ticks()?;
    std::thread::sleep(IDLE);
    let idle_ticks = vpnd.control_ticks()?.saturating_sub(idle_before);
    // USER_HZ is 100 on Linux x86-64.
    let idle_pct = idle_ticks as f64 / IDLE.as_secs_f64();
    drop(client);
    vpnd.stop()?;
    let config_bytes = std::fs::metadata(dir.join("vpnd.toml"))?.len();
    let store_bytes: u64 = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with("vpnd-"))
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    let mut restart = hist();
    for n in 1..=3 {
        let (d, took) = Vpnd::start(&args, &dir, n)?;
        restart.record(u64::try_from(took.as_micros())?)?;
        let mut c = Client::connect(&socket)?;
        let r = c.call(&json!({"type": "show_tunnels"}))?;
        let listed = r["tunnels"].as_array().map_or(0, Vec::len);
        if listed != max_tunnels {
            bail!("after restart {n}: {listed} tunnels, expected {max_tunnels}");
        }
        drop(c);
        d.stop()?;
    }

    println!(
        "change-scale: {} connections ({max_tunnels} tunnels), vpnd {}{}",
        args.connections,
        args.vpnd.display(),
        if args.no_dataplane {
            " --no-dataplane"
        } else {
            " --no-huge (net_null ports)"
        }
    );
    println!("| tunnels | changes | p50 ms | p99 ms | max ms |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for (level, h) in &levels {
        println!(
            "| {level} | {} | {:.2} | {:.2} | {:.2} |",
            h.len(),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max())
        );
    }
    if let (Some((lo, first)), Some((hi, last))) = (levels.first(), levels.last()) {
        #[allow(clippy::cast_precision_loss)]
        let ratio = last.value_at_quantile(0.99) as f64 / first.value_at_quantile(0.99) as f64;
        println!("p99 ratio {hi}/{lo} tunnels: {ratio:.2}");
    }
    println!(
        "fill: {} changes in {fill_secs:.1} s, p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        fill.len(),
        ms(fill.value_at_quantile(0.5)),
        ms(fill.value_at_quantile(0.99)),
        ms(fill.max())
    );
    println!(
        "show tunnels ({max_tunnels}): median {:.1} ms, max {:.1} ms of 5",
        ms(show.value_at_quantile(0.5)),
        ms(show.max())
    );
    println!(
        "restart to serving: median {:.0} ms, max {:.0} ms of 3 (empty configuration: {:.0} ms)",
        ms(restart.value_at_quantile(0.5)),
        ms(restart.max()),
        first_start.as_secs_f64() * 1000.0
    );
    let per_tunnel = (rss_full.saturating_sub(rss_empty)) * 1024 / max_tunnels.max(1) as u64;
    println!(
        "RSS: {rss_empty} KiB empty, {rss_full} KiB with {max_tunnels} tunnels: {per_tunnel} B per tunnel"
    );
    println!(
        "on disk: {config_bytes} B vpnd.toml, {store_bytes} B in all (config and store files)"
    );
    println!(
        "idle control CPU with {max_tunnels} tunnels configured: {idle_pct:.1} % of a core over {} s (threads other than the worker lcores)",
        IDLE.as_secs()
    );
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    // The EAL's runtime directory of the vpnd runs (DPDK leaves it when the
    // process exits).
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/change-scale-{tag}"));
    Ok(())
}
