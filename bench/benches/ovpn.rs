//! The OpenVPN data channel in memory on one core: `P_DATA_V2` encap and
//! decap (`dataplane::ovpn`, what the workers call per packet) and the
//! whole worker path (`Worker::handle_inside` → seal → IPv4/UDP →
//! outside; `Worker::handle_outside` → classify → open → source check →
//! FIB → inside), against `ring`'s raw AES-GCM seal/open of the same
//! bytes in the same run.
//!
//! ```text
//! taskset -c 1 cargo bench -p bench --bench ovpn -- [--rounds N] [--round-ms MS]
//! ```
//!
//! Per batch of 32 packets (buffers allocated once): *dp encap* seals 32
//! inner packets into their buffers' headroom (server key), *dp decap*
//! opens them again (client key: the plaintext is back, every packet id
//! fresh); *ring seal* / *ring open* do the same with `LessSafeKey`
//! (nonce = 4-byte id || 8-byte IV, 8-byte AAD, tag separate) over the
//! same bytes. *worker out* times `handle_inside` on 32 Ethernet frames
//! to a client (refilled untimed); *worker in* times `handle_outside` on
//! 32 frames the client sealed (untimed) toward a VPC host. Rounds
//! interleave every cell; the table gives the median over rounds. Time is
//! the TSC (`dpdk::rdtsc`), converted with the TSC rate calibrated over
//! the run; Gbps counts inner (plaintext) bytes.

use std::error::Error;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::ovpn::{self, DataChannel, DataCipher, DataKeys, EKM_LEN};
use fib::{ClientId, FibBuilder, Target};
use netbuf::{Prepend, TestBuffer};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use worker::{Action, Addresses, Command, Worker, channel};

type Res<T> = Result<T, Box<dyn Error>>;

const BATCH: usize = 32;
const ME: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 2);
const VPC_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const PUBLIC: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 7), 51_000);
const PORT: u16 = 1194;
const CELLS: [&str; 6] = [
    "dp encap",
    "dp decap",
    "ring seal",
    "ring open",
    "worker out",
    "worker in",
];

fn main() -> Res<()> {
    let mut rounds = 5usize;
    let mut round_ms = 200u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().ok_or("--rounds N")?.parse()?,
            "--round-ms" => round_ms = args.next().ok_or("--round-ms MS")?.parse()?,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let load0 = loadavg();
    let t_start = Instant::now();
    let c_start = dpdk::rdtsc();
    let configs: Vec<(DataCipher, usize)> = [DataCipher::Aes128Gcm, DataCipher::Aes256Gcm]
        .into_iter()
        .flat_map(|c| [64usize, 1420].map(|s| (c, s)))
        .collect();
    let mut benches: Vec<Bench> = configs
        .iter()
        .map(|&(c, s)| Bench::new(c, s))
        .collect::<Res<_>>()?;
    // cycles per packet, per config, per cell, per round
    let mut samples = vec![[const { Vec::new() }; CELLS.len()]; configs.len()];
    let hz0 = calibrate(Duration::from_millis(50));
    let budget = hz0 * round_ms / 1000 / CELLS.len() as u64;
    for _ in 0..rounds {
        for (b, s) in benches.iter_mut().zip(&mut samples) {
            for (cell, out) in s.iter_mut().enumerate() {
                out.push(b.run(cell, budget)?);
            }
        }
    }
    let ns = t_start.elapsed().as_nanos().max(1) as f64;
    let hz = dpdk::rdtsc().wrapping_sub(c_start) as f64 * 1e9 / ns;
    println!(
        "CPU: {}; TSC {:.3} GHz; load average {} (start) / {} (end); {rounds} rounds x {round_ms} ms, median",
        cpu_model(),
        hz / 1e9,
        load0,
        loadavg()
    );
    println!();
    print!("| cipher | inner B |");
    for c in CELLS {
        print!(" {c} cyc/pkt | Gbps |");
    }
    println!(" dp encap / ring seal | dp decap / ring open |");
    print!("| --- | ---: |");
    for _ in CELLS {
        print!(" ---: | ---: |");
    }
    println!(" ---: | ---: |");
    for ((cipher, size), s) in configs.iter().zip(&samples) {
        print!("| {} | {size} |", cipher.name());
        let med: Vec<f64> = s.iter().map(|v| median(v)).collect();
        for m in &med {
            let gbps = *size as f64 * 8.0 * hz / m / 1e9;
            print!(" {m:.0} | {gbps:.2} |");
        }
        println!(" {:.2} | {:.2} |", med[0] / med[2], med[1] / med[3]);
    }
    Ok(())
}

/// One (cipher, size) configuration and its state.
struct Bench {
    size: usize,
    inner: Vec<u8>,
    server: DataChannel,
    client: DataChannel,
    bufs: Vec<TestBuffer>,
    seal: LessSafeKey,
    open: LessSafeKey,
    ring_id: u32,
    raw: Vec<Vec<u8>>,
    tags: Vec<[u8; 16]>,
    worker: Worker,
    /// The worker's client's own channel (seals what `worker in` opens).
    peer: DataChannel,
    frame_out: Vec<u8>,
}

impl Bench {
    fn new(cipher: DataCipher, size: usize) -> Res<Self> {
        let mut ekm = [0u8; EKM_LEN];
        for (i, b) in ekm.iter_mut().enumerate() {
            *b = u8::try_from(i % 251)?.wrapping_mul(29);
        }
        let keys = DataKeys::from_ekm(cipher, &ekm);
        let alg = match cipher {
            DataCipher::Aes128Gcm => &AES_128_GCM,
            DataCipher::Aes256Gcm => &AES_256_GCM,
        };
        let key = |k: &[u8]| -> Res<LessSafeKey> {
            Ok(LessSafeKey::new(
                UnboundKey::new(alg, k).map_err(|_| "ring key")?,
            ))
        };
        let kb = &ekm[..cipher.key_len()];
        let inner = ip_udp(VPC_HOST, CLIENT, size);
        // The worker: one client (peer-id 1), routes to it and to the VPC.
        let (mut ctl, end) = channel(16);
        let mut worker = Worker::new(end, 16);
        ctl.send(Command::SetAddresses(Box::new(Addresses {
            outside_mac: [2, 0, 0, 0, 0, 1],
            outside_gateway_mac: [2, 0, 0, 0, 0, 2],
            inside_mac: [2, 0, 0, 0, 1, 2],
            inside_gateway_mac: [2, 0, 0, 0, 1, 1],
            kernel_mac: [2, 0, 0, 0, 9, 9],
            outside_v4: vec![ME],
            outside_v6: vec![],
            inside_v4: vec![],
        })))
        .map_err(|_| "ring")?;
        ctl.send(Command::SetOvpnPort { port: Some(PORT) })
            .map_err(|_| "ring")?;
        ctl.send(Command::AddClient(Box::new(worker::ovpn::OvpnClient::new(
            Box::new(keys.server_channel(0, 1)),
            CLIENT,
            PUBLIC,
            SocketAddrV4::new(ME, PORT),
        ))))
        .map_err(|_| "ring")?;
        let mut fib = FibBuilder::new();
        fib.insert("10.8.0.2/32".parse()?, Target::Client(ClientId(1)))?;
        fib.insert("198.51.100.0/24".parse()?, Target::Inside)?;
        ctl.send(Command::SetFib(Arc::new(fib.build())))
            .map_err(|_| "ring")?;
        worker.apply_commands();
        while let Some(e) = ctl.poll_event() {
            if let worker::Event::Failed { reason, .. } = e {
                return Err(reason.into());
            }
        }
        let mut frame_out = vec![2, 0, 0, 0, 1, 2, 2, 0, 0, 0, 1, 1, 8, 0];
        frame_out.extend_from_slice(&inner);
        Ok(Self {
            size,
            server: keys.server_channel(0, 7),
            client: keys.client_channel(0, 7),
            bufs: (0..BATCH).map(|_| TestBuffer::from_slice(&inner)).collect(),
            seal: key(kb)?,
            open: key(kb)?,
            ring_id: 0,
            raw: (0..BATCH).map(|_| inner.clone()).collect(),
            tags: vec![[0; 16]; BATCH],
            worker,
            peer: keys.client_channel(0, 1),
            frame_out,
            inner,
        })
    }

    /// Runs `cell` for about `budget` TSC cycles; returns cycles/packet.
    fn run(&mut self, cell: usize, budget: u64) -> Res<f64> {
        let mut spent = 0u64;
        let mut packets = 0u64;
        while spent < budget {
            spent += match cell {
                0 => self.dp(true)?,
                1 => self.dp(false)?,
                2 => self.ring(true)?,
                3 => self.ring(false)?,
                4 => self.worker_out()?,
                _ => self.worker_in()?,
            };
            packets += BATCH as u64;
        }
        Ok(spent as f64 / packets as f64)
    }

    /// `dp encap` (and, untimed, the decap that restores the plaintext)
    /// or `dp decap` (and, untimed, the encap before it).
    fn dp(&mut self, time_encap: bool) -> Res<u64> {
        // The worker cells leave frames in the buffers: the inner packet
        // back (untimed).
        if self.bufs[0].as_ref().len() != self.size {
            for b in &mut self.bufs {
                b.reset(&self.inner).map_err(|e| e.to_string())?;
            }
        }
        let t0 = dpdk::rdtsc();
        for b in &mut self.bufs {
            ovpn::encap(&mut self.server, b).map_err(|e| e.to_string())?;
        }
        let t1 = dpdk::rdtsc();
        for b in &mut self.bufs {
            ovpn::decap(&mut self.client, b).map_err(|e| e.to_string())?;
            black_box(b.as_ref());
        }
        let t2 = dpdk::rdtsc();
        if self.bufs[0].as_ref().len() != self.size {
            return Err("decap did not restore the packet".into());
        }
        Ok(if time_encap { t1 - t0 } else { t2 - t1 })
    }

    fn nonce(id: u32) -> Nonce {
        let mut n = [0x5au8; 12];
        n[..4].copy_from_slice(&id.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    fn ring(&mut self, time_seal: bool) -> Res<u64> {
        let first = self.ring_id;
        let t0 = dpdk::rdtsc();
        for (p, tag) in self.raw.iter_mut().zip(&mut self.tags) {
            self.ring_id += 1;
            let aad = [0u8; 8];
            let t = self
                .seal
                .seal_in_place_separate_tag(Self::nonce(self.ring_id), Aad::from(&aad), p)
                .map_err(|_| "seal")?;
            tag.copy_from_slice(t.as_ref());
        }
        let t1 = dpdk::rdtsc();
        for (i, (p, tag)) in self.raw.iter_mut().zip(&self.tags).enumerate() {
            let id = first + 1 + u32::try_from(i)?;
            let aad = [0u8; 8];
            self.open
                .open_in_place_separate_tag(
                    Self::nonce(id),
                    Aad::from(&aad),
                    Tag::from(*tag),
                    p,
                    0..,
                )
                .map_err(|_| "open")?;
            black_box(&p[..]);
        }
        let t2 = dpdk::rdtsc();
        if self.raw[0] != self.inner {
            return Err("ring open did not restore the packet".into());
        }
        Ok(if time_seal { t1 - t0 } else { t2 - t1 })
    }

    fn worker_out(&mut self) -> Res<u64> {
        for b in &mut self.bufs {
            b.reset(&self.frame_out).map_err(|e| e.to_string())?;
        }
        let t0 = dpdk::rdtsc();
        for b in &mut self.bufs {
            if self.worker.handle_inside(b) != Action::ToOutside {
                return Err("worker out: not sent".into());
            }
        }
        Ok(dpdk::rdtsc() - t0)
    }

    fn worker_in(&mut self) -> Res<u64> {
        let up = ip_udp(CLIENT, VPC_HOST, self.size);
        for b in &mut self.bufs {
            b.reset(&up).map_err(|e| e.to_string())?;
            ovpn::encap(&mut self.peer, b).map_err(|e| e.to_string())?;
            let len = u16::try_from(b.as_ref().len() + 8)?;
            let udp = b.prepend(8).map_err(|e| e.to_string())?;
            udp[0..2].copy_from_slice(&PUBLIC.port().to_be_bytes());
            udp[2..4].copy_from_slice(&PORT.to_be_bytes());
            udp[4..6].copy_from_slice(&len.to_be_bytes());
            udp[6..8].copy_from_slice(&[0, 0]);
            let ip = ipv4_header(*PUBLIC.ip(), ME, 17, usize::from(len));
            b.prepend(20)
                .map_err(|e| e.to_string())?
                .copy_from_slice(&ip);
            b.prepend(14)
                .map_err(|e| e.to_string())?
                .copy_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0]);
        }
        let t0 = dpdk::rdtsc();
        for b in &mut self.bufs {
            if self.worker.handle_outside(b) != Action::ToInside {
                return Err(format!("worker in: not forwarded: {:?}", self.worker.stats()).into());
            }
        }
        Ok(dpdk::rdtsc() - t0)
    }
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: usize) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(
        &u16::try_from(20 + payload)
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    h[10..12].copy_from_slice(&(!u16::try_from(sum).unwrap_or(0)).to_be_bytes());
    h
}

/// An IPv4/UDP packet of `size` bytes in all.
fn ip_udp(src: Ipv4Addr, dst: Ipv4Addr, size: usize) -> Vec<u8> {
    let mut p = ipv4_header(src, dst, 17, size - 20).to_vec();
    let udp_len = u16::try_from(size - 20).unwrap_or(u16::MAX);
    p.extend_from_slice(&[0x13, 0x88, 0x0f, 0xa0]);
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend((0..size - 28).map(|i| u8::try_from(i % 256).unwrap_or(0)));
    p
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn calibrate(d: Duration) -> u64 {
    let t0 = Instant::now();
    let c0 = dpdk::rdtsc();
    while t0.elapsed() < d {
        std::hint::spin_loop();
    }
    let dc = dpdk::rdtsc().wrapping_sub(c0);
    let ns = u64::try_from(t0.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    dc.saturating_mul(1_000_000_000) / ns
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}
