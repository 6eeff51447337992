//! `esp-loadgen`: traffic source and sink of the end-to-end benchmark.
//!
//! Runs on one core next to `vpn-dp` (static-SA mode, one worker core),
//! connected to it by two `net_memif` ports (the loadgen is the memif
//! client, `vpn-dp` the server):
//!
//! ```text
//!   esp-loadgen port 0 ══ memif ══ vpn-dp inside    (plaintext)
//!   esp-loadgen port 1 ══ memif ══ vpn-dp outside   (ESP)
//! ```
//!
//! * `--mode encap`: plaintext IPv4/UDP toward the tunnels' prefixes
//!   (`10.H.L.0/24` for tunnel `H*256+L`, round robin) leaves port 0, ESP
//!   comes back on port 1.
//! * `--mode decap`: ESP made in advance with the customer gateways' SAs
//!   (the mirror of `vpn-dp`'s inbound SAs, taken from the same static
//!   file; fresh sequence numbers, so nothing is a replay) leaves port 1,
//!   plaintext comes back on port 0.
//!
//! `--write-config FILE` writes the static file `vpn-dp` runs with (the
//! memif ports, `--tunnels` tunnels with keys derived from the tunnel
//! number, their routes) and exits; the run then derives the same keys.
//!
//! Without `--rate-mpps` the source offers as fast as the memif ring
//! takes packets (what the ring refuses is retried, never skipped), so the
//! rate received is the worker's. With `--rate-mpps` bursts of 32 are
//! paced and the latency of every packet is recorded: decap packets carry
//! their index in the inner payload; encap packets are matched by their
//! ESP sequence number (one SA, a freshly started `vpn-dp`).
//!
//! With `--alternate N` the traffic alternates blocks of `N` packets to
//! tunnel 0 alone and blocks round robin over the other tunnels, so one
//! SA and many are measured in the same run, milliseconds apart: the
//! sink tells the blocks apart (decap: the inner source is the tunnel's
//! address; encap: the SPI), times each, and reports the median ratio of
//! each "many" block's rate to the mean of the "one" blocks around it.
//! On a shared machine whose speed drifts by the second this ratio holds
//! still where separate runs do not.
//!
//! Prints one JSON line: offered, sent, received, Mpps, Gbps of inner bytes,
//! latency percentiles in ns, and with `--alternate` the blocks' figures.
//!
//! `--capture FILE` writes a sample of the received frames (every
//! `--capture-every`-th, at most `--capture-count`) to a pcap file, for an
//! independent check of what the gateway under test sent (the anchor
//! benchmark decrypts it with scapy).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::fmt::Write as _;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use dataplane::crypto::EspAlgorithm;
use dataplane::esp::sa::{DfPolicy, Direction, Lifetimes, TunnelEndpoints};
use dataplane::esp::{OutboundSa, SaConfig, encap::encap};
use dpdk::{Burst, Eal, Mempool, Port, PortConfig, PortId, RxQueue, TxQueue};
use hdrhistogram::Histogram;
use netbuf::TestBuffer;

/// The IMIX of the in-memory bench: 7:4:1 of 64/576/1500 B.
const IMIX: [usize; 12] = [64, 576, 64, 64, 576, 64, 1500, 64, 576, 64, 64, 576];
const BURST: usize = 32;
const ETH: usize = 14;
/// Inner source/destination on the inside (the "VPC").
const VPC_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// Where the 64-bit packet index sits in the inner packet (IPv4 + UDP).
const INDEX_AT: usize = 28;
/// Outer addresses: vpn-dp's outside and the customer gateways'.
const DP_OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CGW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// MAC addresses given to the memif ports.
const DP_OUTSIDE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const DP_INSIDE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const LG_INSIDE_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const LG_OUTSIDE_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Encap,
    Decap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Algorithm {
    Aes128gcm16,
    Aes256gcm16,
}

#[derive(Debug, Parser)]
#[command(about = "Traffic source/sink for the end-to-end ESP benchmark")]
struct Args {
    /// Directory of the memif sockets (shared with vpn-dp).
    #[arg(long)]
    dir: PathBuf,
    /// Number of tunnels (one SA pair and one /24 route each).
    #[arg(long, default_value_t = 1)]
    tunnels: usize,
    #[arg(long, value_enum, default_value = "aes128gcm16")]
    algorithm: Algorithm,
    /// Write vpn-dp's static file and exit.
    #[arg(long, value_name = "FILE")]
    write_config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "encap")]
    mode: Mode,
    /// Inner IP packet size in bytes (>= 40), or 0 for IMIX.
    #[arg(long, default_value_t = 1420)]
    size: usize,
    /// Encap: seconds of traffic. Decap: upper bound on the run.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Decap: packets made in advance (memory: packets x (size + 80) B).
    #[arg(long, default_value_t = 1_000_000)]
    packets: usize,
    /// Paced offered load in Mpps (0 = as fast as the ring takes them).
    #[arg(long, default_value_t = 0.0)]
    rate_mpps: f64,
    /// Alternate blocks of this many packets to tunnel 0 alone and round
    /// robin over tunnels 1.. (0: round robin over all, no blocks).
    #[arg(long, default_value_t = 0)]
    alternate: usize,
    /// EAL lcore of the loadgen.
    #[arg(long, default_value = "0")]
    lcore: String,
    #[arg(long, default_value = "esp-loadgen")]
    file_prefix: String,
    /// Write a sample of the received frames to this pcap file.
    #[arg(long, value_name = "FILE")]
    capture: Option<PathBuf>,
    /// Sample every this many received frames.
    #[arg(long, default_value_t = 1)]
    capture_every: u64,
    /// At most this many frames in the sample.
    #[arg(long, default_value_t = 256)]
    capture_count: usize,
    /// Decap: keep the prepared ESP in this file and take it from there
    /// when it exists (same tunnels, size and count: the caller names the
    /// file after them). Every run of a fresh gateway may replay the same
    /// sequence numbers.
    #[arg(long, value_name = "FILE")]
    esp_cache: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("esp-loadgen: error: {e:#}");
        std::process::exit(1);
    }
}

fn mac(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// A memif vdev on a socket in `dir`.
fn memif(args: &Args, n: u8, role: &str, sock: &str, m: [u8; 6]) -> String {
    format!(
        "net_memif{n},role={role},socket={}/{sock},socket-abstract=no,mac={}",
        args.dir.display(),
        mac(m)
    )
}

/// Key material (key || salt) of tunnel `t`, `inbound` as vpn-dp sees it.
fn key(args: &Args, t: usize, inbound: bool) -> Vec<u8> {
    let len = match args.algorithm {
        Algorithm::Aes128gcm16 => 20,
        Algorithm::Aes256gcm16 => 36,
    };
    let seed = t
        .wrapping_mul(2_654_435_761)
        .wrapping_add(usize::from(inbound) * 977);
    (0..len)
        .map(|j| u8::try_from((seed >> (j % 24)).wrapping_add(j * 29) & 0xff).unwrap_or(0))
        .collect()
}

fn spi(t: usize, inbound: bool) -> u32 {
    let t = u32::try_from(t).unwrap_or(0);
    if inbound {
        0x2000_0000 + t
    } else {
        0x1000_0000 + t
    }
}

fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Aes128gcm16 => "aes128gcm16",
        Algorithm::Aes256gcm16 => "aes256gcm16",
    }
}

/// vpn-dp's static file: memif servers, the tunnels and their routes.
fn write_config(args: &Args, path: &PathBuf) -> anyhow::Result<()> {
    let hex = |v: Vec<u8>| {
        v.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    };
    let mut f = String::new();
    let _ = writeln!(
        f,
        "[ports]\noutside = \"{}\"\ninside = \"{}\"\n",
        memif(args, 0, "server", "out.sock", DP_OUTSIDE_MAC),
        memif(args, 1, "server", "in.sock", DP_INSIDE_MAC)
    );
    let _ = writeln!(
        f,
        "[addresses]\noutside = [\"{DP_OUTSIDE}\"]\ninside = [\"198.51.100.1\"]\n\
         outside_gateway_mac = \"{}\"\ninside_gateway_mac = \"{}\"\n",
        mac(LG_OUTSIDE_MAC),
        mac(LG_INSIDE_MAC)
    );
    for t in 0..args.tunnels {
        let _ = writeln!(
            f,
            "[[tunnels]]\nid = {t}\nalgorithm = \"{}\"\nlocal = \"{DP_OUTSIDE}\"\n\
             remote = \"{CGW}\"\noutbound = {{ spi = {}, key = \"{}\" }}\n\
             inbound = {{ spi = {}, key = \"{}\" }}\n\n\
             [[routes]]\nprefix = \"{}/24\"\ntarget = \"tunnel:{t}\"\n",
            algorithm_name(args.algorithm),
            spi(t, false),
            hex(key(args, t, false)),
            spi(t, true),
            hex(key(args, t, true)),
            {
                let [a, b, c, _] = tunnel_dst(t).octets();
                Ipv4Addr::new(a, b, c, 0)
            },
        );
    }
    let _ = writeln!(
        f,
        "[[routes]]\nprefix = \"198.51.100.0/24\"\ntarget = \"inside\""
    );
    std::fs::write(path, f).with_context(|| format!("write {}", path.display()))
}

/// Sizes of the packets, in order (one size, or the IMIX pattern).
fn size_at(size: usize, i: usize) -> usize {
    if size == 0 {
        IMIX[i % IMIX.len()]
    } else {
        size
    }
}

fn mean_size(size: usize) -> f64 {
    if size == 0 {
        #[expect(clippy::cast_precision_loss, reason = "small sums")]
        let mean = IMIX.iter().sum::<usize>() as f64 / IMIX.len() as f64;
        mean
    } else {
        #[expect(clippy::cast_precision_loss, reason = "packet sizes")]
        let s = size as f64;
        s
    }
}

/// An Ethernet + IPv4 + UDP frame of `size` inner bytes carrying `index`.
fn inner_frame(
    out: &mut Vec<u8>,
    eth: ([u8; 6], [u8; 6]),
    src: Ipv4Addr,
    dst: Ipv4Addr,
    size: usize,
    index: u64,
) {
    out.clear();
    out.extend_from_slice(&eth.0);
    out.extend_from_slice(&eth.1);
    out.extend_from_slice(&[0x08, 0x00]);
    let total = u16::try_from(size).unwrap_or(u16::MAX);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    out.extend_from_slice(&ip);
    let udp_len = total.saturating_sub(20);
    out.extend_from_slice(&[0x30, 0x39, 0x30, 0x39]);
    out.extend_from_slice(&udp_len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.resize(ETH + size, 0);
    out[ETH + INDEX_AT..ETH + INDEX_AT + 8].copy_from_slice(&index.to_be_bytes());
}

fn checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !u16::try_from(s).unwrap_or(0)
}

/// The tunnel of packet `i`: round robin over the tunnels, or with
/// `--alternate N` (`alternate > 0`, two tunnels or more) blocks of `N`
/// packets to tunnel 0 and to the others round robin, in turn.
fn tunnel_of(alternate: usize, tunnels: usize, i: usize) -> usize {
    if alternate == 0 || tunnels < 2 {
        return i % tunnels.max(1);
    }
    let (block, k) = (i / alternate, i % alternate);
    if block % 2 == 0 {
        0
    } else {
        1 + ((block / 2) * alternate + k) % (tunnels - 1)
    }
}

fn tunnel_dst(t: usize) -> Ipv4Addr {
    let [_, _, h, l] = u32::try_from(t).unwrap_or(0).to_be_bytes();
    Ipv4Addr::new(10, h, l, 1)
}

/// The customer gateways' outbound SAs: the mirror of vpn-dp's inbound.
fn peer_sas(args: &Args) -> anyhow::Result<Vec<OutboundSa>> {
    let algorithm = match args.algorithm {
        Algorithm::Aes128gcm16 => EspAlgorithm::Aes128Gcm16,
        Algorithm::Aes256gcm16 => EspAlgorithm::Aes256Gcm16,
    };
    (0..args.tunnels)
        .map(|t| {
            let cfg = SaConfig {
                spi: spi(t, true),
                direction: Direction::Outbound,
                algorithm,
                enc_key: key(args, t, true).into(),
                auth_key: Vec::new().into(),
                iv_seed: [0; 16].into(),
                tunnel: TunnelEndpoints::V4 {
                    local: CGW,
                    remote: DP_OUTSIDE,
                },
                nat_t: None,
                esn: false,
                replay_window: 1024,
                lifetimes: Lifetimes::default(),
                df: DfPolicy::CopyFromInner,
            };
            OutboundSa::new(&cfg, 0).with_context(|| format!("peer SA of tunnel {t}"))
        })
        .collect()
}

/// Decap: `count` ESP frames, round robin over the tunnels, in one arena.
struct Prepared {
    arena: Vec<u8>,
    /// (offset, length) of each frame.
    frames: Vec<(usize, usize)>,
}

impl Prepared {
    /// File layout: the frames' (offset, length) pairs as little-endian
    /// u64, preceded by their count, then the arena.
    fn save(&self, path: &PathBuf) -> anyhow::Result<()> {
        let mut out = Vec::with_capacity(8 + self.frames.len() * 16 + self.arena.len());
        out.extend_from_slice(&(self.frames.len() as u64).to_le_bytes());
        for &(off, len) in &self.frames {
            out.extend_from_slice(&(off as u64).to_le_bytes());
            out.extend_from_slice(&(len as u64).to_le_bytes());
        }
        out.extend_from_slice(&self.arena);
        std::fs::write(path, out).with_context(|| format!("write {}", path.display()))
    }

    fn load(path: &PathBuf) -> anyhow::Result<Self> {
        let mut data = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        let word = |d: &[u8], i: usize| -> anyhow::Result<usize> {
            let b = d.get(i * 8..i * 8 + 8).context("ESP cache truncated")?;
            Ok(usize::try_from(u64::from_le_bytes(b.try_into()?))?)
        };
        let count = word(&data, 0)?;
        let frames = (0..count)
            .map(|k| Ok((word(&data, 1 + 2 * k)?, word(&data, 2 + 2 * k)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let arena = data.split_off(8 + count * 16);
        if frames.iter().any(|&(off, len)| off + len > arena.len()) {
            bail!("ESP cache {} is damaged", path.display());
        }
        Ok(Self { arena, frames })
    }
}

fn prepare_esp(args: &Args, eth: ([u8; 6], [u8; 6])) -> anyhow::Result<Prepared> {
    let mut sas = peer_sas(args)?;
    let largest = if args.size == 0 { 1500 } else { args.size };
    let mut arena = Vec::with_capacity(args.packets * (largest + 100));
    let mut frames = Vec::with_capacity(args.packets);
    let mut frame = Vec::with_capacity(2048);
    let mut buf = TestBuffer::with_room(2048, 128);
    for i in 0..args.packets {
        let t = tunnel_of(args.alternate, sas.len(), i);
        inner_frame(
            &mut frame,
            eth,
            tunnel_dst(t),
            VPC_HOST,
            size_at(args.size, i),
            i as u64,
        );
        buf.reset(&frame[ETH..])
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        encap(&mut sas[t], &mut buf).map_err(|e| anyhow::anyhow!("encap: {e}"))?;
        let start = arena.len();
        arena.extend_from_slice(&frame[..ETH]);
        arena.extend_from_slice(buf.as_ref());
        frames.push((start, arena.len() - start));
    }
    Ok(Prepared { arena, frames })
}

struct Run {
    offered: u64,
    sent: u64,
    received: u64,
    first_rx: Option<u64>,
    last_rx: u64,
    hist: Histogram<u64>,
    /// With `--alternate`: the received stream cut where it changes
    /// between tunnel 0 and the others.
    blocks: Vec<Block>,
    /// With `--capture`: the sampled frames.
    sample: Vec<Vec<u8>>,
}

/// A run of received packets all of tunnel 0 (`one`) or all of others.
#[derive(Debug, Clone, Copy)]
struct Block {
    one: bool,
    packets: u64,
    /// TSC of the rx bursts of its first and last packet.
    first: u64,
    last: u64,
}

impl Block {
    fn mpps(&self, hz: u64) -> Option<f64> {
        #[expect(clippy::cast_precision_loss, reason = "counters and cycles")]
        let pps = (self.packets.checked_sub(1)? as f64) * hz as f64
            / (self.last.checked_sub(self.first).filter(|&c| c > 0)? as f64);
        Some(pps / 1e6)
    }
}

/// The `--alternate` figures: medians of the "one" and "many" blocks'
/// Mpps, and the median over "many" blocks of their rate over the mean
/// rate of the "one" blocks before and after (which cancels a drift
/// slower than a block). The first two blocks (warm-up) and the last
/// (drain) are left out, and any cut short (under half a block: a
/// stray packet of the other kind).
fn alternate_figures(blocks: &[Block], block: usize, hz: u64) -> Option<(f64, f64, f64, usize)> {
    let half = u64::try_from(block / 2).unwrap_or(u64::MAX);
    let kept: Vec<(bool, f64)> = blocks
        .get(2..blocks.len().checked_sub(1)?)?
        .iter()
        .filter(|b| b.packets >= half)
        .filter_map(|b| Some((b.one, b.mpps(hz)?)))
        .collect();
    let mut ratios = Vec::new();
    for w in kept.windows(3) {
        if let [(true, a), (false, m), (true, b)] = w {
            ratios.push(m / ((a + b) / 2.0));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let one = median(kept.iter().filter(|k| k.0).map(|k| k.1).collect())?;
    let many = median(kept.iter().filter(|k| !k.0).map(|k| k.1).collect())?;
    let n = ratios.len();
    Some((one, many, median(ratios)?, n))
}

fn run(args: &Args) -> anyhow::Result<()> {
    if let Some(path) = &args.write_config {
        return write_config(args, path);
    }
    let tunnels = args.tunnels;
    if tunnels == 0 || tunnels > 65_536 {
        bail!("--tunnels must be 1 ..= 65536");
    }

    let prepared = match args.mode {
        Mode::Decap => {
            let t0 = Instant::now();
            let p = match &args.esp_cache {
                Some(path) if path.exists() => Prepared::load(path)?,
                Some(path) => {
                    let p = prepare_esp(args, (DP_OUTSIDE_MAC, LG_OUTSIDE_MAC))?;
                    p.save(path)?;
                    p
                }
                None => prepare_esp(args, (DP_OUTSIDE_MAC, LG_OUTSIDE_MAC))?,
            };
            eprintln!(
                "esp-loadgen: {} ESP packets prepared in {:.2} s",
                p.frames.len(),
                t0.elapsed().as_secs_f64()
            );
            Some(p)
        }
        Mode::Encap => None,
    };

    let prefix = format!("{}-{}", args.file_prefix, std::process::id());
    let eal = Eal::init([
        "esp-loadgen".to_owned(),
        "--no-pci".to_owned(),
        "--no-huge".to_owned(),
        "-m".to_owned(),
        "512".to_owned(),
        "-l".to_owned(),
        args.lcore.clone(),
        format!("--file-prefix={prefix}"),
        "--log-level=warning".to_owned(),
        format!(
            "--vdev={}",
            memif(args, 0, "client", "in.sock", LG_INSIDE_MAC)
        ),
        format!(
            "--vdev={}",
            memif(args, 1, "client", "out.sock", LG_OUTSIDE_MAC)
        ),
    ])
    .context("EAL initialisation")?;
    let result = traffic(
        args,
        &eal,
        tunnels,
        prepared.as_ref(),
        (DP_INSIDE_MAC, LG_INSIDE_MAC),
    );
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
    result
}

/// Prints the run's JSON line (flushed: the script reads it before it
/// stops vpn-dp).
fn report(args: &Args, tunnels: usize, r: &Run) {
    let hz = dpdk::tsc_hz().max(1);
    #[expect(clippy::cast_precision_loss, reason = "counters and cycles")]
    let (mpps, gbps, secs) = match r.first_rx {
        Some(first) if r.last_rx > first && r.received > 1 => {
            let secs = (r.last_rx - first) as f64 / hz as f64;
            let pps = (r.received - 1) as f64 / secs;
            (pps / 1e6, pps * mean_size(args.size) * 8.0 / 1e9, secs)
        }
        _ => (0.0, 0.0, 0.0),
    };
    let alt = alternate_figures(&r.blocks, args.alternate, hz).map_or_else(String::new, |f| {
        format!(
            ",\"alternate\":{},\"one_mpps\":{:.3},\"many_mpps\":{:.3},\
             \"alt_ratio\":{:.3},\"alt_pairs\":{}",
            args.alternate, f.0, f.1, f.2, f.3
        )
    });
    let pct = |q: f64| {
        if r.hist.is_empty() {
            0
        } else {
            r.hist.value_at_quantile(q)
        }
    };
    println!(
        "{{\"mode\":\"{:?}\",\"size\":{},\"tunnels\":{tunnels},\"offered\":{},\"sent\":{},\
         \"received\":{},\"seconds\":{secs:.3},\"mpps\":{mpps:.3},\"gbps\":{gbps:.3},\
         \"rate_mpps\":{},\"latency_samples\":{},\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{}{alt}}}",
        args.mode,
        args.size,
        r.offered,
        r.sent,
        r.received,
        args.rate_mpps,
        r.hist.len(),
        pct(0.5),
        pct(0.99),
        pct(0.999),
    );
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

/// A classic pcap file (microsecond format, Ethernet) of `frames`.
fn write_pcap(path: &PathBuf, frames: &[Vec<u8>]) -> anyhow::Result<()> {
    let mut out = Vec::new();
    for word in [0xa1b2_c3d4_u32, 0x0004_0002, 0, 0, 65_535, 1] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    for f in frames {
        let len = u32::try_from(f.len()).unwrap_or(u32::MAX);
        for word in [0, 0, len, len] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).with_context(|| format!("write {}", path.display()))
}

fn start_port(eal: &Eal, id: u16, pool: &Mempool) -> anyhow::Result<(Port, RxQueue, TxQueue)> {
    let port = Port::configure(eal, PortId(id), &PortConfig::default(), pool)
        .with_context(|| format!("configure port {id}"))?;
    port.start().with_context(|| format!("start port {id}"))?;
    let rx = port.rx_queue(0)?;
    let tx = port.tx_queue(0)?;
    Ok((port, rx, tx))
}

#[expect(
    clippy::too_many_lines,
    reason = "one loop: the source, the sink and the pacing read best together"
)]
fn traffic(
    args: &Args,
    eal: &Eal,
    tunnels: usize,
    prepared: Option<&Prepared>,
    inside_eth: ([u8; 6], [u8; 6]),
) -> anyhow::Result<()> {
    let pool = Mempool::new(eal, "lg_pool", 16383, 256, Mempool::DEFAULT_DATA_ROOM)
        .context("mbuf pool")?;
    let (p_in, mut rx_in, mut tx_in) = start_port(eal, 0, &pool)?;
    let (p_out, mut rx_out, mut tx_out) = start_port(eal, 1, &pool)?;
    // memif: wait for vpn-dp (the server) to connect both.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(p_in.link()?.up && p_out.link()?.up) {
        if Instant::now() > deadline {
            bail!("memif links not up after 20 s (is vpn-dp running?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));

    let hz = dpdk::tsc_hz().max(1);
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "seconds and rates to TSC cycles"
    )]
    let (run_cycles, gap) = (
        (args.seconds * hz as f64) as u64,
        if args.rate_mpps > 0.0 {
            (BURST as f64 / (args.rate_mpps * 1e6) * hz as f64) as u64
        } else {
            0
        },
    );
    let paced = gap > 0;
    let (tx, rx_port_is_inside) = match args.mode {
        Mode::Encap => (&mut tx_in, false),
        Mode::Decap => (&mut tx_out, true),
    };
    let total = prepared.map_or(usize::MAX, |p| p.frames.len());
    let mut sent_at: Vec<u64> = if paced {
        vec![0; if total == usize::MAX { 1 << 24 } else { total }]
    } else {
        Vec::new()
    };
    let mut r = Run {
        offered: 0,
        sent: 0,
        received: 0,
        first_rx: None,
        last_rx: 0,
        hist: Histogram::new_with_bounds(1, 60_000_000_000, 3)?,
        blocks: Vec::with_capacity(if args.alternate > 0 { 4096 } else { 0 }),
        sample: Vec::new(),
    };
    let (capture_every, capture_count) = (
        args.capture_every.max(1),
        if args.capture.is_some() {
            args.capture_count
        } else {
            0
        },
    );
    let alternate = args.alternate > 0 && tunnels > 1;
    // What tells tunnel 0's packets from the others' on the way back.
    let (one_src, one_spi) = (tunnel_dst(0).octets(), spi(0, false).to_be_bytes());
    let mut frame = Vec::with_capacity(2048);
    let mut burst = Burst::new();
    let mut rx = Burst::new();
    let mut next = 0usize; // index of the next packet to build
    let mut first_seq: Option<u32> = None;
    let start = dpdk::rdtsc();
    let mut next_send = start;
    let end = start + run_cycles;
    let sink = |rx: &mut Burst, r: &mut Run, sent_at: &[u64], first_seq: &mut Option<u32>| {
        let now = dpdk::rdtsc();
        let n = rx.len() as u64;
        if n == 0 {
            return;
        }
        r.first_rx.get_or_insert(now);
        r.last_rx = now;
        let first = r.received;
        r.received += n;
        for (i, m) in rx.drain().enumerate() {
            let d = m.as_ref();
            if r.sample.len() < capture_count && (first + i as u64).is_multiple_of(capture_every) {
                r.sample.push(d.to_vec());
            }
            if alternate {
                // Decap: the inner source; encap: the SPI after
                // Ethernet + IPv4.
                let one = if rx_port_is_inside {
                    d.get(ETH + 12..ETH + 16) == Some(&one_src[..])
                } else {
                    d.get(ETH + 20..ETH + 24) == Some(&one_spi[..])
                };
                match r.blocks.last_mut() {
                    Some(b) if b.one == one => {
                        b.packets += 1;
                        b.last = now;
                    }
                    _ => r.blocks.push(Block {
                        one,
                        packets: 1,
                        first: now,
                        last: now,
                    }),
                }
            }
            if !paced {
                continue;
            }
            let k = if rx_port_is_inside {
                d.get(ETH + INDEX_AT..ETH + INDEX_AT + 8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .and_then(|i| usize::try_from(i).ok())
            } else {
                // ESP sequence number after Ethernet + IPv4 + SPI.
                d.get(ETH + 24..ETH + 28)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes)
                    .map(|seq| {
                        let base = *first_seq.get_or_insert(seq);
                        seq.wrapping_sub(base) as usize
                    })
            };
            if let Some(&t) = k.and_then(|k| sent_at.get(k))
                && t != 0
                && now > t
            {
                let _ = r.hist.record((now - t) * 1_000_000_000 / hz);
            }
        }
    };
    loop {
        let now = dpdk::rdtsc();
        if (next >= total && burst.is_empty()) || (prepared.is_none() && now >= end) {
            break;
        }
        if prepared.is_some() && now >= start + run_cycles * 10 {
            break;
        }
        if paced && now < next_send {
            let port = if rx_port_is_inside {
                &mut rx_in
            } else {
                &mut rx_out
            };
            port.rx_burst_max(&mut rx, BURST);
            sink(&mut rx, &mut r, &sent_at, &mut first_seq);
            continue;
        }
        if burst.is_empty() {
            next_send += gap;
        }
        // Fill the burst up to 32; what the ring refused last time is
        // still at its front and goes first.
        while burst.len() < BURST && next < total {
            let Some(mut m) = pool.alloc() else { break };
            let ok = match prepared {
                Some(p) => {
                    let (off, len) = p.frames[next];
                    m.set_data(&p.arena[off..off + len])
                }
                None => {
                    inner_frame(
                        &mut frame,
                        inside_eth,
                        VPC_HOST,
                        tunnel_dst(tunnel_of(args.alternate, tunnels, next)),
                        size_at(args.size, next),
                        next as u64,
                    );
                    m.set_data(&frame)
                }
            };
            if ok.is_err() || burst.push(m).is_err() {
                break;
            }
            next += 1;
            r.offered += 1;
        }
        let front = next - burst.len();
        let stamp = dpdk::rdtsc();
        let sent = tx.tx_burst_retain(&mut burst);
        if paced {
            for s in sent_at.iter_mut().skip(front).take(sent) {
                *s = stamp;
            }
        }
        r.sent += sent as u64;
        let port = if rx_port_is_inside {
            &mut rx_in
        } else {
            &mut rx_out
        };
        while port.rx_burst_max(&mut rx, BURST) > 0 {
            sink(&mut rx, &mut r, &sent_at, &mut first_seq);
        }
    }
    burst.clear();
    // Drain what is still in flight.
    let quiet_until = Instant::now() + Duration::from_millis(300);
    let port = if rx_port_is_inside {
        &mut rx_in
    } else {
        &mut rx_out
    };
    while Instant::now() < quiet_until {
        if port.rx_burst_max(&mut rx, BURST) > 0 {
            sink(&mut rx, &mut r, &sent_at, &mut first_seq);
        }
    }
    if let Some(path) = &args.capture {
        write_pcap(path, &r.sample)?;
    }
    report(args, tunnels, &r);
    // net_memif can crash the side still polling when its peer goes away
    // (see the lab notes): stop polling, let vpn-dp (stopped by the script
    // once it has our line) close first, then close.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && p_in.link()?.up && p_out.link()?.up {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop((rx_in, tx_in, rx_out, tx_out, p_in, p_out));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_go_round_robin_or_in_alternating_blocks() {
        let order = |alternate, tunnels| -> Vec<usize> {
            (0..12).map(|i| tunnel_of(alternate, tunnels, i)).collect()
        };
        assert_eq!(order(0, 3), [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
        // Blocks of 3: tunnel 0 alone, then tunnels 1..=4 round robin,
        // carrying on where the previous "many" block stopped.
        assert_eq!(order(3, 5), [0, 0, 0, 1, 2, 3, 0, 0, 0, 4, 1, 2]);
        assert_eq!(order(3, 1), [0; 12], "one tunnel: no blocks");
    }

    #[test]
    fn the_esp_cache_gives_back_the_frames_and_refuses_a_damaged_file() {
        let dir = std::env::temp_dir().join(format!("esp-cache-test-{}", std::process::id()));
        let p = Prepared {
            arena: (0..=255).collect(),
            frames: vec![(0, 14), (14, 100), (114, 142)],
        };
        p.save(&dir).unwrap();
        let q = Prepared::load(&dir).unwrap();
        assert_eq!((q.arena, q.frames), (p.arena, p.frames));
        let mut bytes = std::fs::read(&dir).unwrap();
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&dir, bytes).unwrap();
        assert!(
            Prepared::load(&dir).is_err(),
            "last frame runs past the arena"
        );
        std::fs::remove_file(&dir).unwrap();
    }

    fn block(one: bool, packets: u64, first: u64, mpps: f64) -> Block {
        // hz = 1e9: (packets - 1) packets in (packets - 1) / mpps µs.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "test figures"
        )]
        let cycles = ((packets - 1) as f64 / mpps * 1e3) as u64;
        Block {
            one,
            packets,
            first,
            last: first + cycles,
        }
    }

    #[test]
    fn the_ratio_is_each_many_block_over_the_one_blocks_around_it() {
        let hz = 1_000_000_000;
        // The machine slows down steadily (one-SA blocks 3.0, 2.8, 2.6,
        // 2.4 Mpps); each many-SA block runs at 0.9 of the mean of its
        // neighbours. A warm-up pair and a drain block at the ends, and a
        // stray short block, are left out.
        let blocks = [
            block(true, 1000, 0, 1.0),
            block(false, 1000, 0, 0.1),
            block(true, 1000, 0, 3.0),
            block(false, 1000, 0, 0.9 * 2.9),
            block(true, 1000, 0, 2.8),
            block(false, 1000, 0, 0.9 * 2.7),
            block(true, 3, 0, 0.1),
            block(true, 1000, 0, 2.6),
            block(false, 1000, 0, 0.9 * 2.5),
            block(true, 1000, 0, 2.4),
            block(false, 10, 0, 0.1),
        ];
        let (one, many, ratio, pairs) = alternate_figures(&blocks, 1000, hz).unwrap();
        assert_eq!(pairs, 3);
        assert!((ratio - 0.9).abs() < 0.005, "{ratio}");
        assert!(
            (one - 2.7).abs() < 0.11 && (many - 0.9 * 2.7).abs() < 0.01,
            "{one} {many}"
        );
        assert!(
            alternate_figures(&blocks[..3], 1000, hz).is_none(),
            "nothing to pair"
        );
    }
}
