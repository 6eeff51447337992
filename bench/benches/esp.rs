//! ESP pipeline in memory: encap and decap bursts of 32 packets on one
//! core, against the raw crypto ceilings measured in the same process.
//!
//! `harness = false` bench; run it through `bench/scripts/esp-bench.sh`,
//! which pins it to one CPU, adds the `dpdk-test-crypto-perf` ceiling and
//! prints one table. Direct use:
//!
//! ```text
//! cargo bench -p bench --bench esp -- [--rounds N] [--round-ms MS] [--only SUBSTR]
//!     [--dpdk-csv FILE] [--hook CMD]
//! ```
//!
//! Per burst (32 `TestBuffer`s from a pool allocated once):
//!
//! 1. *copy*: `TestBuffer::reset` copies the inner packet template back
//!    into each buffer (no allocation). Timed on its own and reported; it
//!    is **not** included in encap or decap.
//! 2. *encap*: `encap_burst` (IPv4 outer, no NAT-T, no ESN, one SA); on
//!    intel-ipsec-mb `encap_burst_mb` (AES-CBC + HMAC batched through the
//!    job API, AES-GCM one packet per call on the direct API).
//! 3. *decap*: `decap_burst` (`decap_burst_mb`) of exactly those packets (ESP at offset 20),
//!    so every sequence number is fresh for the replay window and the
//!    data is warm in cache as it is after a NIC's DMA + first touch.
//!
//! The ring ceilings run the same loop with `seal_in_place_separate_tag`
//! (tag stored after the data, as ESP does) and `open_in_place`, nonce =
//! salt || 64-bit counter, 8-byte AAD, over exactly the inner bytes.
//!
//! `--dpdk-csv` names the file of `dpdk-test-crypto-perf` results the
//! script collects (read when the table is printed); `--hook` is the
//! command that appends to it, run half-way and after the last round so
//! the DPDK ceiling is sampled while this bench runs (medians are used).
//!
//! Each (suite, size) is run for `--round-ms` per round, rounds interleave
//! all configurations, the table reports the **median over rounds**. Time
//! is read with the TSC (`dpdk::rdtsc`, no EAL needed); cycles are TSC
//! cycles, converted to ns with the TSC rate calibrated against the
//! monotonic clock over the whole run. Gbps counts inner (plaintext) bytes.

use std::error::Error;
use std::fmt::Write as _;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dataplane::crypto::{AesCbcHmac, CryptoBackend, EspAlgorithm, Integrity};
use dataplane::esp::burst::{Verdict, decap_burst, decap_burst_mb, encap_burst, encap_burst_mb};
use dataplane::esp::replay::DEFAULT_WINDOW;
use dataplane::esp::sa::{DfPolicy, Direction, Lifetimes, TunnelEndpoints};
use dataplane::esp::{DropCounters, InboundSa, OutboundSa, SaConfig};
use hdrhistogram::Histogram;
use ipsec_mb::{CbcHmacJob, CbcHmacKey, GcmJob, GcmKey, HashAlg, Manager};
use netbuf::{Append, Prepend, TestBuffer, TrimFromEnd, TrimFromStart};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use zeroize::Zeroizing;

type Res<T> = Result<T, Box<dyn Error>>;

const BURST: usize = 32;
const SPI: u32 = 0x0001_0001;
/// ESP header offset for an IPv4 outer header without NAT-T.
const ESP_OFF: usize = 20;
/// IMIX: 7 × 64, 4 × 576, 1 × 1500 bytes of inner IP packet, interleaved.
const IMIX: [usize; 12] = [64, 576, 64, 64, 576, 64, 1500, 64, 576, 64, 64, 576];

fn main() -> Res<()> {
    let opts = Opts::parse()?;
    let t_start = Instant::now();
    let c_start = dpdk::rdtsc();
    // A short calibration for the loop deadlines; the final conversion
    // uses the whole run.
    let hz0 = calibrate(Duration::from_millis(50));
    let load0 = loadavg();

    let sizes = [
        Size::Fixed(64),
        Size::Fixed(512),
        Size::Fixed(1420),
        Size::Imix,
    ];
    let suites = [
        EspAlgorithm::Aes128Gcm16,
        EspAlgorithm::Aes256Gcm16,
        EspAlgorithm::Aes128Cbc(Integrity::HmacSha256_128),
    ];
    let mut cases: Vec<Case> = Vec::new();
    for &alg in &suites {
        for &size in &sizes {
            cases.push(Case::new(Kind::Esp(alg), size)?);
            cases.push(Case::new(Kind::EspMb(alg), size)?);
            cases.push(Case::new(Kind::Raw(alg), size)?);
            cases.push(Case::new(Kind::RawMbBurst(alg), size)?);
            if alg.integrity().is_none() {
                cases.push(Case::new(Kind::RawMb(alg), size)?);
                cases.push(Case::new(Kind::RawEspLen(alg), size)?);
                cases.push(Case::new(Kind::RawAlign16(alg), size)?);
            }
        }
    }
    cases.retain(|c| opts.only.as_ref().is_none_or(|s| c.label().contains(s)));

    let mut pool: Vec<TestBuffer> = (0..BURST).map(|_| TestBuffer::new()).collect();
    // Correctness first (untimed): every packet must survive the round trip.
    for c in &mut cases {
        c.verify(&mut pool)?;
    }
    let round_cycles = hz0 * opts.round_ms / 1000;
    // Warm-up: one short round of everything.
    for c in &mut cases {
        c.run(&mut pool, round_cycles / 4, false)?;
    }
    for round in 1..=opts.rounds {
        for c in &mut cases {
            c.run(&mut pool, round_cycles, true)?;
        }
        // The external ceiling runs between our rounds: half-way and at the end.
        if let Some(h) = &opts.hook
            && (round == opts.rounds.div_ceil(2) || round == opts.rounds)
        {
            let st = std::process::Command::new("sh").arg("-c").arg(h).status()?;
            if !st.success() {
                eprintln!("hook failed: {st}");
            }
        }
    }
    let hz = {
        let dc = dpdk::rdtsc().wrapping_sub(c_start);
        let dt = t_start.elapsed().as_secs_f64();
        dc as f64 / dt
    };
    let dpdk_ceiling = match &opts.dpdk_csv {
        Some(p) => DpdkCeiling::load(p)?,
        None => DpdkCeiling::default(),
    };
    print_report(
        &cases,
        hz,
        hz0,
        &dpdk_ceiling,
        &opts,
        &load0,
        t_start.elapsed(),
    );
    Ok(())
}

#[derive(Debug)]
struct Opts {
    rounds: usize,
    round_ms: u64,
    dpdk_csv: Option<String>,
    only: Option<String>,
    hook: Option<String>,
}

impl Opts {
    fn parse() -> Res<Self> {
        let mut o = Self {
            rounds: 7,
            round_ms: 120,
            dpdk_csv: None,
            only: None,
            hook: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
            match a.as_str() {
                "--rounds" => o.rounds = val()?.parse()?,
                "--round-ms" => o.round_ms = val()?.parse()?,
                "--dpdk-csv" => o.dpdk_csv = Some(val()?),
                "--only" => o.only = Some(val()?),
                "--hook" => o.hook = Some(val()?),
                // `cargo bench` passes `--bench`; ignore it.
                "--bench" => {}
                "-h" | "--help" => {
                    println!(
                        "esp bench: --rounds N (7) --round-ms MS per case and round (120) \
                         --dpdk-csv FILE (from esp-bench.sh) --only SUBSTR \
                         --hook CMD (run by sh half-way and after the last round)"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other}").into()),
            }
        }
        if o.rounds == 0 {
            return Err("--rounds must be at least 1".into());
        }
        Ok(o)
    }
}

/// TSC ticks per second over `d` of wall time.
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

#[derive(Debug, Clone, Copy)]
enum Size {
    Fixed(usize),
    Imix,
}

impl Size {
    fn label(self) -> String {
        match self {
            Self::Fixed(n) => n.to_string(),
            Self::Imix => "IMIX".into(),
        }
    }

    /// Inner packet sizes of the slots of each burst phase (IMIX: 96
    /// packets = 3 bursts cover 8 whole 7:4:1 cycles).
    fn phases(self) -> Vec<[usize; BURST]> {
        match self {
            Self::Fixed(n) => vec![[n; BURST]],
            Self::Imix => (0..3)
                .map(|p| std::array::from_fn(|i| IMIX[(p * BURST + i) % IMIX.len()]))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// The ESP pipeline: encap_burst + decap_burst (`ring` backend).
    Esp(EspAlgorithm),
    /// The same pipeline with the SAs on intel-ipsec-mb.
    EspMb(EspAlgorithm),
    /// intel-ipsec-mb AES-GCM, direct API, one packet per call (tag
    /// after the data, as `Raw`).
    RawMb(EspAlgorithm),
    /// intel-ipsec-mb through its job API, the whole burst submitted at
    /// once: AES-GCM, or AES-CBC + HMAC-SHA256 over an ESP-like layout
    /// (8 header bytes + IV authenticated, data padded to 16, 16-byte tag).
    RawMbBurst(EspAlgorithm),
    /// The raw crypto of the same suite: ring AES-GCM, or aws-lc CBC + ring HMAC.
    Raw(EspAlgorithm),
    /// ring AES-GCM over exactly the bytes ESP encrypts: inner + padding
    /// + 2 trailer bytes, a multiple of 4 (RFC 4106 § 3.2).
    RawEspLen(EspAlgorithm),
    /// As `RawEspLen` with the padding taken to a multiple of 16 bytes
    /// (whole AES blocks; RFC 4303 § 2.4 allows more than the minimum).
    RawAlign16(EspAlgorithm),
}

fn alg_name(a: EspAlgorithm) -> &'static str {
    match a {
        EspAlgorithm::Aes128Gcm16 => "AES-128-GCM",
        EspAlgorithm::Aes256Gcm16 => "AES-256-GCM",
        EspAlgorithm::Aes128Cbc(Integrity::HmacSha256_128) => "AES-128-CBC+SHA256",
        _ => "other",
    }
}

/// Per-round sums.
#[derive(Debug, Default, Clone, Copy)]
struct Round {
    packets: u64,
    bytes: u64,
    copy: u64,
    fwd: u64,
    back: u64,
}

#[derive(Debug)]
struct Case {
    kind: Kind,
    size: Size,
    /// `phases[p][i]`: inner packet of slot `i` in burst phase `p`.
    phases: Vec<Vec<Vec<u8>>>,
    phase_bytes: Vec<u64>,
    rounds: Vec<Round>,
    /// Cycles per packet of single bursts (timed rounds only).
    hist_fwd: Histogram<u64>,
    hist_back: Histogram<u64>,
}

impl Case {
    fn new(kind: Kind, size: Size) -> Res<Self> {
        let phases: Vec<Vec<Vec<u8>>> = size
            .phases()
            .iter()
            .enumerate()
            .map(|(p, sizes)| {
                sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| inner_v4(n, p * BURST + i))
                    .collect()
            })
            .collect();
        let phase_bytes = phases
            .iter()
            .map(|ph| ph.iter().map(|t| t.len() as u64).sum())
            .collect();
        Ok(Self {
            kind,
            size,
            phases,
            phase_bytes,
            rounds: Vec::new(),
            hist_fwd: Histogram::new_with_bounds(1, 100_000_000, 3)?,
            hist_back: Histogram::new_with_bounds(1, 100_000_000, 3)?,
        })
    }

    fn alg(&self) -> EspAlgorithm {
        match self.kind {
            Kind::Esp(a)
            | Kind::EspMb(a)
            | Kind::Raw(a)
            | Kind::RawMb(a)
            | Kind::RawMbBurst(a)
            | Kind::RawEspLen(a)
            | Kind::RawAlign16(a) => a,
        }
    }

    fn key_bits(&self) -> Option<u32> {
        match self.alg() {
            EspAlgorithm::Aes128Gcm16 => Some(128),
            EspAlgorithm::Aes256Gcm16 => Some(256),
            _ => None,
        }
    }

    fn label(&self) -> String {
        let (k, a) = match self.kind {
            Kind::Esp(a) => ("esp", a),
            Kind::EspMb(a) => ("esp-mb", a),
            Kind::Raw(a) => ("raw", a),
            Kind::RawMb(a) => ("raw-mb", a),
            Kind::RawMbBurst(a) => ("raw-mb-burst", a),
            Kind::RawEspLen(a) => ("raw-esplen", a),
            Kind::RawAlign16(a) => ("raw-align16", a),
        };
        format!("{k} {} {}", alg_name(a), self.size.label())
    }

    /// One untimed burst per phase; checks verdicts and the round trip.
    fn verify(&mut self, pool: &mut [TestBuffer]) -> Res<()> {
        let mut eng = Engine::new(self.kind)?;
        for ph in &self.phases {
            for (b, t) in pool.iter_mut().zip(ph) {
                b.reset(t)?;
            }
            eng.forward(pool)?;
            if let Engine::Esp { .. } = eng {
                // (both backends)
                // The outer packet must be bigger than the inner one.
                for (b, t) in pool.iter().zip(ph) {
                    if b.len() <= t.len() + ESP_OFF {
                        return Err(
                            format!("{}: encap did not grow the packet", self.label()).into()
                        );
                    }
                }
            }
            eng.back(pool)?;
            for (i, (b, t)) in pool.iter().zip(ph).enumerate() {
                if b.as_ref() != t.as_slice() {
                    return Err(format!("{}: slot {i} did not round-trip", self.label()).into());
                }
            }
        }
        Ok(())
    }

    /// Runs bursts for about `budget` TSC cycles with a fresh SA pair / key.
    fn run(&mut self, pool: &mut [TestBuffer], budget: u64, record: bool) -> Res<()> {
        let mut eng = Engine::new(self.kind)?;
        let mut r = Round::default();
        let start = dpdk::rdtsc();
        let mut phase = 0;
        loop {
            let t0 = dpdk::rdtsc();
            if t0.wrapping_sub(start) >= budget {
                break;
            }
            for (b, t) in pool.iter_mut().zip(&self.phases[phase]) {
                b.reset(t)?;
            }
            let t1 = dpdk::rdtsc();
            eng.forward(pool)?;
            let t2 = dpdk::rdtsc();
            eng.back(pool)?;
            let t3 = dpdk::rdtsc();
            black_box(&mut *pool);
            r.copy += t1.wrapping_sub(t0);
            r.fwd += t2.wrapping_sub(t1);
            r.back += t3.wrapping_sub(t2);
            r.packets += BURST as u64;
            r.bytes += self.phase_bytes[phase];
            if record {
                self.hist_fwd
                    .saturating_record(t2.wrapping_sub(t1) / BURST as u64);
                self.hist_back
                    .saturating_record(t3.wrapping_sub(t2) / BURST as u64);
            }
            phase = (phase + 1) % self.phases.len();
        }
        eng.check_drops(&self.label())?;
        if record {
            self.rounds.push(r);
        }
        Ok(())
    }
}

/// What one burst step runs.
enum Engine {
    Esp {
        out: Vec<OutboundSa>,
        inb: Vec<InboundSa>,
        verdicts: [Verdict; BURST],
        drops: DropCounters,
        /// On intel-ipsec-mb: the burst functions that batch AES-CBC +
        /// HMAC through its job API (`encap_burst_mb` / `decap_burst_mb`).
        mgr: Option<Box<Manager>>,
    },
    Gcm {
        key: Box<LessSafeKey>,
        salt: [u8; 4],
        seq: u64,
        seqs: [u64; BURST],
        /// If not 0: append padding + 2 trailer bytes up to this alignment
        /// before sealing, as ESP does.
        esp_align: usize,
    },
    Cbc {
        cbc: Box<AesCbcHmac>,
        mac: hmac::Key,
        seq: u64,
        lens: [usize; BURST],
    },
    /// intel-ipsec-mb GCM; `mgr`: through the job API, else direct.
    MbGcm {
        key: Box<GcmKey>,
        mgr: Option<Box<Manager>>,
        salt: [u8; 4],
        seq: u64,
        seqs: [u64; BURST],
    },
    /// intel-ipsec-mb CBC + HMAC-SHA256 through the job API.
    MbCbc {
        key: Box<CbcHmacKey>,
        mgr: Box<Manager>,
        seq: u64,
        lens: [usize; BURST],
    },
}

const SA_IDX: [u32; BURST] = [0; BURST];
const ESP_OFFS: [usize; BURST] = [ESP_OFF; BURST];

impl Engine {
    fn new(kind: Kind) -> Res<Self> {
        Ok(match kind {
            Kind::Esp(alg) | Kind::EspMb(alg) => {
                let backend = match kind {
                    Kind::EspMb(_) => CryptoBackend::ipsec_mb()?,
                    _ => CryptoBackend::Ring,
                };
                Self::Esp {
                    out: vec![OutboundSa::new_with(
                        &sa_cfg(alg, Direction::Outbound),
                        0,
                        backend,
                    )?],
                    inb: vec![InboundSa::new_with(
                        &sa_cfg(alg, Direction::Inbound),
                        0,
                        backend,
                    )?],
                    verdicts: [Ok(()); BURST],
                    drops: DropCounters::default(),
                    mgr: match kind {
                        Kind::EspMb(_) => Some(Box::new(Manager::new()?)),
                        _ => None,
                    },
                }
            }
            Kind::RawMb(alg @ (EspAlgorithm::Aes128Gcm16 | EspAlgorithm::Aes256Gcm16))
            | Kind::RawMbBurst(alg @ (EspAlgorithm::Aes128Gcm16 | EspAlgorithm::Aes256Gcm16)) => {
                let k = key_bytes(alg.enc_key_len(), 7);
                let n = alg.enc_key_len() - 4;
                let mgr = Manager::new()?;
                let key = Box::new(GcmKey::new(&mgr.direct(), &k[..n])?);
                let mut salt = [0u8; 4];
                salt.copy_from_slice(&k[n..]);
                Self::MbGcm {
                    key,
                    mgr: matches!(kind, Kind::RawMbBurst(_)).then(|| Box::new(mgr)),
                    salt,
                    seq: 0,
                    seqs: [0; BURST],
                }
            }
            Kind::RawMbBurst(alg) => {
                let mgr = Manager::new()?;
                let key = CbcHmacKey::new(
                    &mgr.direct(),
                    &key_bytes(alg.enc_key_len(), 7),
                    HashAlg::Sha256,
                    &key_bytes(32, 13),
                    16,
                )?;
                Self::MbCbc {
                    key: Box::new(key),
                    mgr: Box::new(mgr),
                    seq: 0,
                    lens: [0; BURST],
                }
            }
            Kind::RawMb(_) => return Err("raw-mb: GCM only".into()),
            Kind::Raw(alg @ (EspAlgorithm::Aes128Gcm16 | EspAlgorithm::Aes256Gcm16))
            | Kind::RawEspLen(alg)
            | Kind::RawAlign16(alg) => {
                let k = key_bytes(alg.enc_key_len(), 7);
                let (aead, n) = if matches!(alg, EspAlgorithm::Aes128Gcm16) {
                    (&AES_128_GCM, 16)
                } else {
                    (&AES_256_GCM, 32)
                };
                let key = UnboundKey::new(aead, &k[..n]).map_err(|_| "ring key")?;
                let mut salt = [0u8; 4];
                salt.copy_from_slice(&k[n..]);
                Self::Gcm {
                    key: Box::new(LessSafeKey::new(key)),
                    salt,
                    seq: 0,
                    seqs: [0; BURST],
                    esp_align: match kind {
                        Kind::RawEspLen(_) => 4,
                        Kind::RawAlign16(_) => 16,
                        _ => 0,
                    },
                }
            }
            Kind::Raw(alg) => {
                let Some(integ) = alg.integrity() else {
                    return Err("raw: unsupported suite".into());
                };
                let cbc = AesCbcHmac::new(
                    &key_bytes(alg.enc_key_len(), 7),
                    integ,
                    &key_bytes(alg.auth_key_len(), 13),
                    &[0x5a; 16],
                )?;
                Self::Cbc {
                    cbc: Box::new(cbc),
                    mac: hmac::Key::new(hmac::HMAC_SHA256, &key_bytes(32, 13)),
                    seq: 0,
                    lens: [0; BURST],
                }
            }
        })
    }

    /// Encap / seal / encrypt+MAC the burst.
    #[inline(never)]
    fn forward(&mut self, pool: &mut [TestBuffer]) -> Res<()> {
        match self {
            Self::Esp {
                out,
                verdicts,
                drops,
                mgr,
                ..
            } => match mgr {
                Some(m) => {
                    encap_burst_mb(m, out, pool, &SA_IDX, verdicts, drops);
                }
                None => {
                    encap_burst(out, pool, &SA_IDX, verdicts, drops);
                }
            },
            Self::Gcm {
                key,
                salt,
                seq,
                seqs,
                esp_align,
            } => {
                for (b, s) in pool.iter_mut().zip(seqs.iter_mut()) {
                    *seq += 1;
                    *s = *seq;
                    if *esp_align != 0 {
                        let n = (b.len() + 2).next_multiple_of(*esp_align) - b.len();
                        b.append(n)?;
                    }
                    let (nonce, aad) = gcm_nonce_aad(salt, *seq);
                    let tag = key
                        .seal_in_place_separate_tag(nonce, Aad::from(aad), b.as_mut())
                        .map_err(|_| "seal")?;
                    b.append(16)?.copy_from_slice(tag.as_ref());
                }
            }
            Self::Cbc {
                cbc,
                mac,
                seq,
                lens,
            } => {
                // ESP's crypto for CBC+HMAC: pad to the block, CBC-encrypt,
                // HMAC over SPI|seq|IV|ciphertext (24 header bytes), store 16.
                for (b, l) in pool.iter_mut().zip(lens.iter_mut()) {
                    *seq += 1;
                    *l = b.len();
                    let padded = (b.len() + 2).next_multiple_of(16);
                    b.append(padded - b.len())?;
                    let mut iv = [0u8; 16];
                    iv[8..].copy_from_slice(&seq.to_be_bytes());
                    cbc.encrypt_with_iv(&iv, b.as_mut())?;
                    let mut ctx = hmac::Context::with_key(mac);
                    ctx.update(&[0u8; 8]);
                    ctx.update(&iv);
                    ctx.update(b.as_ref());
                    let tag = ctx.sign();
                    b.append(16)?.copy_from_slice(&tag.as_ref()[..16]);
                }
            }
            Self::MbGcm {
                key,
                mgr: None,
                salt,
                seq,
                seqs,
            } => {
                for (b, s) in pool.iter_mut().zip(seqs.iter_mut()) {
                    *seq += 1;
                    *s = *seq;
                    let (iv, aad) = mb_iv_aad(salt, *seq);
                    let tag = key.seal(&iv, &aad, b.as_mut());
                    b.append(16)?.copy_from_slice(&tag);
                }
            }
            Self::MbGcm {
                key,
                mgr: Some(mgr),
                salt,
                seq,
                seqs,
            } => {
                let mut ivs = [[0u8; 12]; BURST];
                let mut aads = [[0u8; 8]; BURST];
                for i in 0..BURST {
                    *seq += 1;
                    seqs[i] = *seq;
                    (ivs[i], aads[i]) = mb_iv_aad(salt, *seq);
                }
                for b in pool.iter_mut() {
                    b.append(16)?;
                }
                let mut it = pool.iter_mut().zip(ivs.iter().zip(aads.iter()));
                let mut jobs: [GcmJob<'_>; BURST] = std::array::from_fn(|_| {
                    let (b, (iv, aad)) = it.next().expect("pool holds BURST buffers");
                    let len = b.len() - 16;
                    GcmJob {
                        key,
                        iv: *iv,
                        aad,
                        buf: b.as_mut(),
                        offset: 0,
                        len,
                        tag: [0; 16],
                        open: false,
                        result: Ok(()),
                    }
                });
                mgr.run_gcm(&mut jobs);
                for j in jobs {
                    j.result?;
                    j.buf[j.len..].copy_from_slice(&j.tag);
                }
            }
            Self::MbCbc {
                key,
                mgr,
                seq,
                lens,
            } => {
                let mut ivs = [[0u8; 16]; BURST];
                for ((b, l), iv) in pool.iter_mut().zip(lens.iter_mut()).zip(ivs.iter_mut()) {
                    *seq += 1;
                    *l = b.len();
                    let padded = (b.len() + 2).next_multiple_of(16);
                    b.append(padded - b.len() + 16)?;
                    iv[8..].copy_from_slice(&seq.to_be_bytes());
                    let h = b.prepend(24)?;
                    h[..8].fill(0);
                    h[8..].copy_from_slice(iv);
                }
                let mut it = pool.iter_mut().zip(ivs.iter());
                let mut jobs: [CbcHmacJob<'_>; BURST] = std::array::from_fn(|_| {
                    let (b, iv) = it.next().expect("pool holds BURST buffers");
                    let covered = b.len() - 16;
                    CbcHmacJob {
                        key,
                        iv: *iv,
                        buf: b.as_mut(),
                        cipher_offset: 24,
                        cipher_len: covered - 24,
                        hash_offset: 0,
                        hash_len: covered,
                        tag: [0; 64],
                        open: false,
                        result: Ok(()),
                    }
                });
                mgr.run_cbc_hmac(&mut jobs);
                for j in jobs {
                    j.result?;
                    let c = j.hash_len;
                    j.buf[c..].copy_from_slice(&j.tag[..16]);
                }
            }
        }
        Ok(())
    }

    /// Decap / open / MAC+decrypt the burst `forward` produced.
    #[inline(never)]
    fn back(&mut self, pool: &mut [TestBuffer]) -> Res<()> {
        match self {
            Self::Esp {
                inb,
                verdicts,
                drops,
                mgr,
                ..
            } => match mgr {
                Some(m) => {
                    decap_burst_mb(m, inb, pool, &SA_IDX, &ESP_OFFS, verdicts, drops);
                }
                None => {
                    decap_burst(inb, pool, &SA_IDX, &ESP_OFFS, verdicts, drops);
                }
            },
            Self::Gcm {
                key,
                salt,
                seqs,
                esp_align,
                ..
            } => {
                for (b, s) in pool.iter_mut().zip(seqs.iter()) {
                    let (nonce, aad) = gcm_nonce_aad(salt, *s);
                    let n = key
                        .open_in_place(nonce, Aad::from(aad), b.as_mut())
                        .map_err(|_| "open")?
                        .len();
                    // Back to the inner length (the IPv4 total length).
                    let inner = usize::from(u16::from_be_bytes([b.as_ref()[2], b.as_ref()[3]]));
                    b.trim_from_end(16 + if *esp_align != 0 { n - inner } else { 0 })?;
                }
            }
            Self::Cbc {
                cbc,
                mac,
                lens,
                seq,
            } => {
                let first = *seq - BURST as u64;
                for (i, (b, l)) in pool.iter_mut().zip(lens.iter()).enumerate() {
                    let s = first + 1 + i as u64;
                    let mut iv = [0u8; 16];
                    iv[8..].copy_from_slice(&s.to_be_bytes());
                    let ct_len = b.len() - 16;
                    let mut ctx = hmac::Context::with_key(mac);
                    ctx.update(&[0u8; 8]);
                    ctx.update(&iv);
                    ctx.update(&b.as_ref()[..ct_len]);
                    let tag = ctx.sign();
                    if tag.as_ref()[..16] != b.as_ref()[ct_len..] {
                        return Err("raw cbc: MAC mismatch".into());
                    }
                    b.trim_from_end(16)?;
                    cbc.decrypt_with_iv(&iv, b.as_mut())?;
                    let pad = b.len() - l;
                    b.trim_from_end(pad)?;
                }
            }
            Self::MbGcm {
                key,
                mgr: None,
                salt,
                seqs,
                ..
            } => {
                for (b, s) in pool.iter_mut().zip(seqs.iter()) {
                    let (iv, aad) = mb_iv_aad(salt, *s);
                    let n = b.len() - 16;
                    let (body, t) = b.as_mut().split_at_mut(n);
                    let mut tag = [0u8; 16];
                    tag.copy_from_slice(t);
                    key.open(&iv, &aad, body, &tag).map_err(|_| "mb open")?;
                    b.trim_from_end(16)?;
                }
            }
            Self::MbGcm {
                key,
                mgr: Some(mgr),
                salt,
                seqs,
                ..
            } => {
                let mut it = pool.iter_mut().zip(seqs.iter());
                let mut aads = [[0u8; 8]; BURST];
                for (a, s) in aads.iter_mut().zip(seqs.iter()) {
                    *a = mb_iv_aad(salt, *s).1;
                }
                let mut ai = aads.iter();
                let mut jobs: [GcmJob<'_>; BURST] = std::array::from_fn(|_| {
                    let (b, s) = it.next().expect("pool holds BURST buffers");
                    let len = b.len() - 16;
                    let mut tag = [0u8; 16];
                    tag.copy_from_slice(&b.as_ref()[len..]);
                    GcmJob {
                        key,
                        iv: mb_iv_aad(salt, *s).0,
                        aad: ai.next().expect("BURST aads"),
                        buf: b.as_mut(),
                        offset: 0,
                        len,
                        tag,
                        open: true,
                        result: Ok(()),
                    }
                });
                mgr.run_gcm(&mut jobs);
                for j in jobs {
                    j.result?;
                }
                for b in pool.iter_mut() {
                    b.trim_from_end(16)?;
                }
            }
            Self::MbCbc { key, mgr, lens, .. } => {
                let mut it = pool.iter_mut();
                let mut jobs: [CbcHmacJob<'_>; BURST] = std::array::from_fn(|_| {
                    let b = it.next().expect("pool holds BURST buffers");
                    let covered = b.len() - 16;
                    let mut tag = [0u8; 64];
                    tag[..16].copy_from_slice(&b.as_ref()[covered..]);
                    let mut iv = [0u8; 16];
                    iv.copy_from_slice(&b.as_ref()[8..24]);
                    CbcHmacJob {
                        key,
                        iv,
                        buf: b.as_mut(),
                        cipher_offset: 24,
                        cipher_len: covered - 24,
                        hash_offset: 0,
                        hash_len: covered,
                        tag,
                        open: true,
                        result: Ok(()),
                    }
                });
                mgr.run_cbc_hmac(&mut jobs);
                for j in jobs {
                    j.result?;
                }
                for (b, l) in pool.iter_mut().zip(lens.iter()) {
                    b.trim_from_start(24)?;
                    let extra = b.len() - l;
                    b.trim_from_end(extra)?;
                }
            }
        }
        Ok(())
    }

    fn check_drops(&self, label: &str) -> Res<()> {
        if let Self::Esp {
            drops, verdicts, ..
        } = self
            && (drops.total() != 0 || verdicts.iter().any(Result::is_err))
        {
            return Err(format!("{label}: packets dropped: {drops:?}").into());
        }
        Ok(())
    }
}

fn gcm_nonce_aad(salt: &[u8; 4], seq: u64) -> (Nonce, [u8; 8]) {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(salt);
    n[4..].copy_from_slice(&seq.to_be_bytes());
    let mut aad = [0u8; 8];
    aad[..4].copy_from_slice(&SPI.to_be_bytes());
    aad[4..].copy_from_slice(&seq.to_be_bytes()[4..]);
    (Nonce::assume_unique_for_key(n), aad)
}

/// intel-ipsec-mb's 12-byte IV (salt || 64-bit sequence number) and the
/// 8-byte ESP AAD, as `gcm_nonce_aad`.
fn mb_iv_aad(salt: &[u8; 4], seq: u64) -> ([u8; 12], [u8; 8]) {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(salt);
    n[4..].copy_from_slice(&seq.to_be_bytes());
    let mut aad = [0u8; 8];
    aad[..4].copy_from_slice(&SPI.to_be_bytes());
    aad[4..].copy_from_slice(&seq.to_be_bytes()[4..]);
    (n, aad)
}

fn key_bytes(len: usize, mul: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * mul) % 251).unwrap_or(0))
        .collect()
}

fn sa_cfg(alg: EspAlgorithm, direction: Direction) -> SaConfig {
    let (a, b) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 7));
    let tunnel = match direction {
        Direction::Outbound => TunnelEndpoints::V4 {
            local: a,
            remote: b,
        },
        Direction::Inbound => TunnelEndpoints::V4 {
            local: b,
            remote: a,
        },
    };
    SaConfig {
        spi: SPI,
        direction,
        algorithm: alg,
        enc_key: Zeroizing::new(key_bytes(alg.enc_key_len(), 7)),
        auth_key: Zeroizing::new(key_bytes(alg.auth_key_len(), 13)),
        iv_seed: Zeroizing::new([0x5a; 16]),
        tunnel,
        nat_t: None,
        esn: false,
        replay_window: DEFAULT_WINDOW,
        lifetimes: Lifetimes::default(),
        df: DfPolicy::CopyFromInner,
    }
}

/// An inner IPv4/UDP packet of `total` bytes (at least 28), DF set.
fn inner_v4(total: usize, salt: usize) -> Vec<u8> {
    let total = total.max(28);
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
    p[6] = 0x40;
    p[8] = 63;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 1, 0, 2]);
    let c = !ipv4_sum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&1234u16.to_be_bytes());
    p[22..24].copy_from_slice(&5678u16.to_be_bytes());
    p[24..26].copy_from_slice(&u16::try_from(total - 20).unwrap_or(0).to_be_bytes());
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = u8::try_from((i + salt) % 256).unwrap_or(0);
    }
    p
}

fn ipv4_sum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    u16::try_from(s).unwrap_or(0xffff)
}

// ---------------------------------------------------------------- report

#[derive(Debug, Default)]
struct DpdkCeiling {
    /// (key bits, size label) → Gbps samples.
    samples: Vec<(u32, String, f64)>,
}

impl DpdkCeiling {
    /// Lines `KEYBITS,SIZELABEL,<dpdk-test-crypto-perf --csv-friendly line>`.
    fn load(path: &str) -> Res<Self> {
        let mut d = Self::default();
        for line in std::fs::read_to_string(path)?.lines() {
            let f: Vec<&str> = line.split(',').collect();
            // key, label, lcore, size, burst, enq, deq, fenq, fdeq, mops, gbps, cyc
            if f.len() >= 12
                && let (Ok(k), Ok(g)) = (f[0].parse(), f[10].parse())
            {
                d.samples.push((k, f[1].to_string(), g));
            }
        }
        Ok(d)
    }

    fn gbps(&self, key_bits: u32, size: &str) -> Option<(f64, usize)> {
        let v: Vec<f64> = self
            .samples
            .iter()
            .filter(|(k, s, _)| *k == key_bits && s == size)
            .map(|s| s.2)
            .collect();
        median(&v).map(|m| (m, v.len()))
    }
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    })
}

/// Medians over rounds of one direction: (Gbps, Mpps, ns/pkt, cycles/pkt).
#[derive(Debug, Clone, Copy)]
struct Stat {
    gbps: f64,
    mpps: f64,
    ns: f64,
    cyc: f64,
}

fn stat(rounds: &[Round], hz: f64, pick: fn(&Round) -> u64) -> Stat {
    let per = |f: &dyn Fn(&Round) -> f64| {
        median(&rounds.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    };
    let secs = |r: &Round| pick(r) as f64 / hz;
    Stat {
        gbps: per(&|r| r.bytes as f64 * 8.0 / secs(r) / 1e9),
        mpps: per(&|r| r.packets as f64 / secs(r) / 1e6),
        ns: per(&|r| secs(r) * 1e9 / r.packets as f64),
        cyc: per(&|r| pick(r) as f64 / r.packets as f64),
    }
}

/// Median over rounds of (bytes/cycles of `a`) / (bytes/cycles of `b`):
/// the two ran back to back in each round, so a slow period on the shared
/// machine hits both sides of a ratio.
fn paired_ratio(a: &Case, b: &Case, pa: fn(&Round) -> u64, pb: fn(&Round) -> u64) -> f64 {
    let v: Vec<f64> = a
        .rounds
        .iter()
        .zip(&b.rounds)
        .map(|(x, y)| (x.bytes as f64 / pa(x) as f64) / (y.bytes as f64 / pb(y) as f64))
        .collect();
    median(&v).unwrap_or(f64::NAN)
}

/// Two tables (seal/encap, open/decap): per suite and size, the raw
/// rates of each engine (ring one packet per call, intel-ipsec-mb direct
/// one per call, intel-ipsec-mb job API one burst per call, and DPDK's
/// aesni_gcm PMD when measured), the fastest of them, the pipeline on each
/// backend, and the two target ratios: pipeline on ipsec-mb over the
/// fastest raw rate (Gbps) and over ipsec-mb's raw burst rate (packets/s).
fn backend_tables(s: &mut String, cases: &[Case], hz: f64, dpdk: &DpdkCeiling) {
    let find = |want: Kind, size: &str| {
        cases.iter().find(|c| {
            std::mem::discriminant(&c.kind) == std::mem::discriminant(&want)
                && c.alg() == want_alg(want)
                && c.size.label() == size
        })
    };
    for (dir, pick, step, hist) in [
        (
            "seal",
            (|r: &Round| r.fwd) as fn(&Round) -> u64,
            "encap",
            (|c: &Case| c.hist_fwd.value_at_quantile(0.5)) as fn(&Case) -> u64,
        ),
        (
            "open",
            |r: &Round| r.back,
            "decap",
            |c: &Case| c.hist_back.value_at_quantile(0.5),
        ),
    ] {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| suite | inner B | raw ring {dir} Gbps | raw mb {dir} | raw mb burst {dir} | dpdk | fastest raw | {step} ring Gbps | {step} mb Gbps | {step} mb Mpps | mb burst Mpps | {step} ring / fastest | {step} mb / fastest | {step} mb / mb burst (pps) | {step} mb cyc/pkt p50 | fastest raw cyc/pkt p50 | {step} mb / fastest, p50 |"
        );
        let _ = writeln!(
            s,
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for c in cases.iter().filter(|c| matches!(c.kind, Kind::Esp(_))) {
            let alg = c.alg();
            let size = c.size.label();
            let g = |k: Kind| find(k, &size).map(|x| stat(&x.rounds, hz, pick));
            let ring = g(Kind::Raw(alg));
            let mb = g(Kind::RawMb(alg));
            let burst = g(Kind::RawMbBurst(alg));
            let dp = (dir == "seal")
                .then(|| c.key_bits().and_then(|k| dpdk.gbps(k, &size)))
                .flatten()
                .map(|d| d.0);
            let fastest = [
                ring.map(|x| x.gbps),
                mb.map(|x| x.gbps),
                burst.map(|x| x.gbps),
                dp,
            ]
            .into_iter()
            .flatten()
            .fold(f64::NAN, f64::max);
            let esp_ring = stat(&c.rounds, hz, pick);
            let esp_mb = g(Kind::EspMb(alg));
            // Per-burst medians (cycles per packet): a burst is a few
            // microseconds, so unlike the per-round rates they are hardly
            // touched by the other tenants' preemptions.
            let p50 = |k: Kind| find(k, &size).map(hist);
            let raw_p50 = [
                p50(Kind::Raw(alg)),
                p50(Kind::RawMb(alg)),
                p50(Kind::RawMbBurst(alg)),
            ]
            .into_iter()
            .flatten()
            .min();
            let mb_p50 = p50(Kind::EspMb(alg));
            let f = |x: Option<f64>| x.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
            let _ = writeln!(
                s,
                "| {} | {size} | {} | {} | {} | {} | {fastest:.2} | {:.2} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} |",
                alg_name(alg),
                f(ring.map(|x| x.gbps)),
                f(mb.map(|x| x.gbps)),
                f(burst.map(|x| x.gbps)),
                f(dp),
                esp_ring.gbps,
                f(esp_mb.map(|x| x.gbps)),
                f(esp_mb.map(|x| x.mpps)),
                f(burst.map(|x| x.mpps)),
                esp_ring.gbps / fastest,
                f(esp_mb.map(|x| x.gbps / fastest)),
                f(esp_mb.zip(burst).map(|(e, b)| e.mpps / b.mpps)),
                mb_p50.map_or_else(|| "-".into(), |v| v.to_string()),
                raw_p50.map_or_else(|| "-".into(), |v| v.to_string()),
                f(mb_p50.zip(raw_p50).map(|(e, r)| r as f64 / e as f64)),
            );
        }
    }
}

fn want_alg(k: Kind) -> EspAlgorithm {
    match k {
        Kind::Esp(a)
        | Kind::EspMb(a)
        | Kind::Raw(a)
        | Kind::RawMb(a)
        | Kind::RawMbBurst(a)
        | Kind::RawEspLen(a)
        | Kind::RawAlign16(a) => a,
    }
}

fn print_report(
    cases: &[Case],
    hz: f64,
    hz0: u64,
    dpdk: &DpdkCeiling,
    opts: &Opts,
    load0: &str,
    elapsed: Duration,
) {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ESP pipeline in memory: burst {BURST}, one SA, IPv4 outer, no NAT-T/ESN, TestBuffer pool; \
         median of {} rounds x {} ms per case; TSC {:.3} GHz (50 ms calibration {:.3}); \
         loadavg {} -> {}; bench {:.1} s",
        opts.rounds,
        opts.round_ms,
        hz / 1e9,
        hz0 as f64 / 1e9,
        load0,
        loadavg(),
        elapsed.as_secs_f64()
    );
    let find = |kind: fn(EspAlgorithm) -> Kind, alg: EspAlgorithm, size: &str| {
        let want = kind(alg);
        cases.iter().find(|c| {
            std::mem::discriminant(&c.kind) == std::mem::discriminant(&want)
                && c.alg() == alg
                && c.size.label() == size
        })
    };
    let ratio = |x: f64, y: Option<f64>| y.map_or_else(|| "-".into(), |y| format!("{:.2}", x / y));

    // Summary: one row per suite and size.
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| suite | inner B | encap Gbps | Mpps | cyc/pkt | decap Gbps | Mpps | cyc/pkt \
         | ring seal Gbps | dpdk Gbps | encap/seal | decap/seal | encap/dpdk | decap/dpdk |"
    );
    let _ = writeln!(
        s,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for c in cases.iter().filter(|c| matches!(c.kind, Kind::Esp(_))) {
        let alg = c.alg();
        let size = c.size.label();
        let enc = stat(&c.rounds, hz, |r| r.fwd);
        let dec = stat(&c.rounds, hz, |r| r.back);
        let raw = find(Kind::Raw, alg, &size);
        let seal = raw.map(|r| stat(&r.rounds, hz, |x| x.fwd).gbps);
        let paired = |pick: fn(&Round) -> u64| {
            raw.map_or_else(
                || "-".into(),
                |r| format!("{:.2}", paired_ratio(c, r, pick, |x| x.fwd)),
            )
        };
        let dp = c.key_bits().and_then(|k| dpdk.gbps(k, &size)).map(|d| d.0);
        let (seal_s, dp_s) = match c.key_bits() {
            Some(_) => (
                seal.map_or_else(|| "-".into(), |g| format!("{g:.2}")),
                dp.map_or_else(|| "-".into(), |g| format!("{g:.2}")),
            ),
            None => ("n/a".into(), "n/a".into()),
        };
        let gcm = |r: String| {
            if c.key_bits().is_some() {
                r
            } else {
                "n/a".into()
            }
        };
        let _ = writeln!(
            s,
            "| {} | {size} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {seal_s} | {dp_s} | {} | {} | {} | {} |",
            alg_name(alg),
            enc.gbps,
            enc.mpps,
            enc.cyc,
            dec.gbps,
            dec.mpps,
            dec.cyc,
            gcm(paired(|x| x.fwd)),
            gcm(paired(|x| x.back)),
            gcm(ratio(enc.gbps, dp)),
            gcm(ratio(dec.gbps, dp)),
        );
    }

    // Backends: ring vs intel-ipsec-mb, raw and through the pipeline.
    backend_tables(&mut s, cases, hz, dpdk);

    // Detail: every timed step.
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| suite | inner B | step | Gbps | Mpps | ns/pkt | cyc/pkt | burst p50 / p99 cyc/pkt | x ESP step |"
    );
    let _ = writeln!(
        s,
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let pct = |h: &Histogram<u64>| {
        format!(
            "{} / {}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99)
        )
    };
    for c in cases.iter().filter(|c| matches!(c.kind, Kind::Esp(_))) {
        let alg = c.alg();
        let name = alg_name(alg);
        let size = c.size.label();
        let enc = stat(&c.rounds, hz, |r| r.fwd);
        let dec = stat(&c.rounds, hz, |r| r.back);
        let row = |s: &mut String, step: &str, st: Stat, pct: &str, vs: String| {
            let _ = writeln!(
                s,
                "| {name} | {size} | {step} | {:.2} | {:.2} | {:.1} | {:.0} | {pct} | {vs} |",
                st.gbps, st.mpps, st.ns, st.cyc
            );
        };
        row(&mut s, "encap", enc, &pct(&c.hist_fwd), String::new());
        row(&mut s, "decap", dec, &pct(&c.hist_back), String::new());
        let gcm = c.key_bits().is_some();
        for (kind, fwd, back) in [
            (
                Kind::Raw as fn(EspAlgorithm) -> Kind,
                if gcm {
                    "ring seal"
                } else {
                    "raw cbc enc + hmac"
                },
                if gcm {
                    "ring open"
                } else {
                    "raw hmac + cbc dec"
                },
            ),
            (
                Kind::RawEspLen,
                "ring seal, ESP length (pad to 4)",
                "ring open, ESP length (pad to 4)",
            ),
            (
                Kind::RawAlign16,
                "ring seal, pad to 16",
                "ring open, pad to 16",
            ),
        ] {
            if let Some(r) = find(kind, alg, &size) {
                let f = stat(&r.rounds, hz, |x| x.fwd);
                let b = stat(&r.rounds, hz, |x| x.back);
                row(
                    &mut s,
                    fwd,
                    f,
                    &pct(&r.hist_fwd),
                    format!("encap {:.2}", paired_ratio(c, r, |x| x.fwd, |x| x.fwd)),
                );
                row(
                    &mut s,
                    back,
                    b,
                    &pct(&r.hist_back),
                    format!("decap {:.2}", paired_ratio(c, r, |x| x.back, |x| x.back)),
                );
            }
        }
        if let Some((g, n)) = c.key_bits().and_then(|k| dpdk.gbps(k, &size)) {
            let _ = writeln!(
                s,
                "| {name} | {size} | dpdk aesni_gcm encrypt (median of {n}) | {g:.2} | | | | | encap {:.2} |",
                enc.gbps / g
            );
        }
        let copy = stat(&c.rounds, hz, |r| r.copy);
        row(
            &mut s,
            "copy = reset (not in encap)",
            copy,
            "",
            String::new(),
        );
    }
    print!("{s}");
}
