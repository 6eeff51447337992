//! IKEv2 tunnel set-up rate on one core: our initiator against our
//! responder in one process (two [`Endpoint`]s, datagrams handed across
//! in memory, no sockets), a full IKE_SA_INIT + IKE_AUTH (PSK,
//! AES-128-GCM-16 / PRF-HMAC-SHA2-256, one Child SA with its keys) per
//! set-up, fresh endpoints each time. Both sides' work is counted: two DH
//! key generations and two DH agreements, two AUTH computations and
//! checks, the key derivations, randomness from the system CSPRNG.
//!
//! Per round, each DH group (14 = MODP-2048, 19 = ECP-256, 31 = X25519)
//! runs for `round-ms`, in turn, so the machine's noise spreads over all
//! of them; the median of the rounds is reported with the ratio to
//! group 14.
//!
//! ```text
//! cargo bench -p bench --bench ike_setup -- [rounds] [round-ms]
//! ```
//!
//! Results: `bench/README.md`.

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use control::config::{PreSharedKey, TunnelOptions};
use control::ike::SystemRng;
use control::ike::endpoint::Endpoint;
use control::ike::sa::{Datagram, Event, IkeConfig};

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
const GROUPS: [(u16, &str); 3] = [(14, "MODP-2048"), (19, "ECP-256"), (31, "X25519")];

fn config(group: u16, local: IpAddr, remote: IpAddr) -> Result<IkeConfig, Box<dyn Error>> {
    let o = TunnelOptions {
        pre_shared_key: Some(PreSharedKey::new("bench.psk_0123456789")?),
        ..TunnelOptions::default()
    };
    let any = vec!["0.0.0.0/0".parse()?];
    let mut c = IkeConfig::from_tunnel(&o, local, remote, any.clone(), any);
    c.phase1.dh = vec![group];
    c.phase1.encr.truncate(0);
    let gcm = control::ike::crypto::Encr::AesGcm16 { key_len: 16 };
    c.phase1.encr.push(gcm);
    c.phase2.encr = vec![gcm];
    c.phase1
        .integ
        .retain(|i| *i == control::ike::crypto::Integ::HmacSha256_128);
    Ok(c)
}

/// One full set-up; `true` when both sides report the Child SA.
fn setup(ca: &IkeConfig, cb: &IkeConfig, rng: &mut SystemRng) -> bool {
    let now = Instant::now();
    let mut a = Endpoint::new(rng, 32);
    let mut b = Endpoint::new(rng, 32);
    a.add_tunnel(ca.clone());
    b.add_tunnel(cb.clone());
    if !a.initiate(now, rng, B) {
        return false;
    }
    let (mut up_a, mut up_b) = (false, false);
    // Four messages; the bound only stops a broken exchange.
    for _ in 0..16 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            moved = true;
            let d = Datagram {
                local: t.remote,
                remote: t.local,
                payload: &t.payload,
            };
            b.handle_datagram(now, rng, d);
        }
        while let Some(t) = b.poll_transmit() {
            moved = true;
            let d = Datagram {
                local: t.remote,
                remote: t.local,
                payload: &t.payload,
            };
            a.handle_datagram(now, rng, d);
        }
        while let Some((_, e)) = a.poll_event() {
            up_a |= matches!(e, Event::ChildSaUp(_));
        }
        while let Some((_, e)) = b.poll_event() {
            up_b |= matches!(e, Event::ChildSaUp(_));
        }
        if !moved {
            break;
        }
    }
    up_a && up_b
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn Error>> {
    // `cargo bench` passes `--bench`; numbers are ours.
    let nums: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = usize::try_from(nums.first().copied().unwrap_or(5))?.max(1);
    let round = Duration::from_millis(nums.get(1).copied().unwrap_or(2000));
    let mut rng = SystemRng;
    let cfgs: Vec<(u16, &str, IkeConfig, IkeConfig)> = GROUPS
        .iter()
        .map(|&(g, n)| Ok((g, n, config(g, A, B)?, config(g, B, A)?)))
        .collect::<Result<_, Box<dyn Error>>>()?;
    for (g, _, ca, cb) in &cfgs {
        if !setup(ca, cb, &mut rng) {
            return Err(format!("group {g}: the set-up does not complete").into());
        }
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cfgs.len()];
    println!(
        "round  {}",
        GROUPS.map(|(g, _)| format!("group {g:>2}/s")).join("  ")
    );
    for r in 0..rounds {
        let mut line = format!("{:>5}", r + 1);
        for (i, (g, _, ca, cb)) in cfgs.iter().enumerate() {
            let start = Instant::now();
            let mut n = 0u32;
            while start.elapsed() < round {
                if !setup(ca, cb, &mut rng) {
                    return Err(format!("group {g}: a set-up failed").into());
                }
                n += 1;
            }
            let rate = f64::from(n) / start.elapsed().as_secs_f64();
            rates[i].push(rate);
            line.push_str(&format!("  {rate:>11.1}"));
        }
        println!("{line}");
    }
    let medians: Vec<f64> = rates.iter_mut().map(|v| median(v)).collect();
    println!();
    println!(
        "| DH group | set-ups/s (median of {rounds} x {} ms) | ms per set-up | vs group 14 |",
        round.as_millis()
    );
    println!("| --- | ---: | ---: | ---: |");
    for ((g, name, _, _), m) in cfgs.iter().zip(&medians) {
        println!(
            "| {g} ({name}) | {m:.1} | {:.2} | {:.2} |",
            1000.0 / m,
            m / medians[0]
        );
    }
    Ok(())
}
