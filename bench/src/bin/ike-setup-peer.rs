//! IKEv2 tunnel set-ups per second against a real responder (strongSwan's
//! charon, `bench/scripts/ike-setup-strongswan.sh`): our initiator
//! (`control::ike`) over kernel UDP sockets 500/4500, a window of
//! `--window` set-ups in flight from one address, each its own
//! [`Endpoint`] with a fresh initiator SPI. A set-up is a full
//! IKE_SA_INIT + IKE_AUTH (PSK, AES-128-GCM-16 / PRF-HMAC-SHA2-256, the
//! first Child SA) and counts when our side reports the Child SA up; the
//! IKE SA is then deleted (INFORMATIONAL DELETE) so the responder's SA
//! table stays small, and a new set-up takes the slot. A set-up that has
//! not completed after 10 s is abandoned and counted as failed.
//!
//! Per round, each DH group (14, 19, 31) runs for `--ms`, in turn; the
//! median of the rounds is printed as a markdown table.
//!
//! ```text
//! ike-setup-peer --local IP --remote IP --psk KEY [--rounds 3] [--ms 5000] [--window 16]
//! ```
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::error::Error;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use control::config::{PreSharedKey, TunnelOptions};
use control::ike::SystemRng;
use control::ike::crypto::{Encr, Integ};
use control::ike::endpoint::Endpoint;
use control::ike::sa::{Datagram, Event, IKE_PORT, IkeConfig, NAT_T_PORT};

const GROUPS: [(u16, &str); 3] = [(14, "MODP-2048"), (19, "ECP-256"), (31, "X25519")];
const GIVE_UP: Duration = Duration::from_secs(10);

fn config(
    group: u16,
    psk: &str,
    local: IpAddr,
    remote: IpAddr,
) -> Result<IkeConfig, Box<dyn Error>> {
    let o = TunnelOptions {
        pre_shared_key: Some(PreSharedKey::new(psk)?),
        ..TunnelOptions::default()
    };
    let any = vec!["0.0.0.0/0".parse()?];
    let mut c = IkeConfig::from_tunnel(&o, local, remote, any.clone(), any);
    c.phase1.dh = vec![group];
    let gcm = Encr::AesGcm16 { key_len: 16 };
    c.phase1.encr = vec![gcm];
    c.phase2.encr = vec![gcm];
    c.phase1.integ.retain(|i| *i == Integ::HmacSha256_128);
    Ok(c)
}

/// One set-up in flight.
struct Slot {
    ep: Endpoint,
    started: Instant,
}

/// Counts of one timed run.
#[derive(Default)]
struct Run {
    done: u32,
    failed: u32,
    logs: Vec<String>,
}

struct Peer {
    s500: UdpSocket,
    s4500: UdpSocket,
    local: IpAddr,
    remote: IpAddr,
    rng: SystemRng,
    buf: Vec<u8>,
}

impl Peer {
    fn send(&self, ep: &mut Endpoint) {
        while let Some(t) = ep.poll_transmit() {
            let s = if t.local.port() == NAT_T_PORT {
                &self.s4500
            } else {
                &self.s500
            };
            let _ = s.send_to(&t.payload, t.remote);
        }
    }

    fn start(&mut self, cfg: &IkeConfig) -> Result<(u64, Slot), Box<dyn Error>> {
        let now = Instant::now();
        let mut ep = Endpoint::new(&mut self.rng, 32);
        ep.add_tunnel(cfg.clone());
        if !ep.initiate(now, &mut self.rng, self.remote) {
            return Err("initiate failed".into());
        }
        let spi = ep.sas().first().map_or(0, control::ike::sa::IkeSa::spi_i);
        self.send(&mut ep);
        Ok((spi, Slot { ep, started: now }))
    }

    /// Set-ups for `dur` with `window` in flight.
    fn run(
        &mut self,
        cfg: &IkeConfig,
        window: usize,
        dur: Duration,
    ) -> Result<Run, Box<dyn Error>> {
        let mut run = Run::default();
        let mut slots: HashMap<u64, Slot> = HashMap::with_capacity(window);
        let begin = Instant::now();
        while slots.len() < window {
            let (spi, s) = self.start(cfg)?;
            slots.insert(spi, s);
        }
        // After `dur`, no new set-up starts; those in flight finish (each
        // deleted after AUTH, as in the timed part, not counted) so that
        // charon is left with no IKE SA (closing one whose IKE_AUTH is in
        // flight would leave charon's established side behind).
        loop {
            let draining = begin.elapsed() >= dur;
            if draining && slots.is_empty() {
                break;
            }
            let mut busy = false;
            let mut finished: Vec<(u64, bool)> = Vec::new();
            for (sock, port) in [(&self.s500, IKE_PORT), (&self.s4500, NAT_T_PORT)] {
                // A bounded batch per socket per turn.
                for _ in 0..64 {
                    let Ok((n, from)) = sock.recv_from(&mut self.buf) else {
                        break;
                    };
                    busy = true;
                    let p = &self.buf[..n];
                    let body = if port == NAT_T_PORT {
                        p.get(4..).unwrap_or_default()
                    } else {
                        p
                    };
                    let Some(spi) = body.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
                        continue;
                    };
                    let spi = u64::from_be_bytes(spi);
                    let Some(slot) = slots.get_mut(&spi) else {
                        continue; // e.g. the response to our DELETE
                    };
                    let d = Datagram {
                        local: SocketAddr::new(self.local, port),
                        remote: from,
                        payload: p,
                    };
                    slot.ep.handle_datagram(Instant::now(), &mut self.rng, d);
                    let mut up = false;
                    while let Some((_, e)) = slot.ep.poll_event() {
                        match e {
                            Event::ChildSaUp(_) => up = true,
                            Event::Log(l) if run.logs.len() < 8 => run.logs.push(l),
                            _ => {}
                        }
                    }
                    if up {
                        slot.ep.close(Instant::now(), &mut self.rng, self.remote);
                        finished.push((spi, true));
                    }
                    let ep = &mut slot.ep;
                    while let Some(t) = ep.poll_transmit() {
                        let s = if t.local.port() == NAT_T_PORT {
                            &self.s4500
                        } else {
                            &self.s500
                        };
                        let _ = s.send_to(&t.payload, t.remote);
                    }
                }
            }
            // Retransmissions and abandoned set-ups.
            let now = Instant::now();
            for (spi, slot) in &mut slots {
                if now.duration_since(slot.started) > GIVE_UP {
                    finished.push((*spi, false));
                } else if slot.ep.poll_timeout().is_some_and(|t| t <= now) {
                    slot.ep.handle_timeout(now, &mut self.rng);
                    while let Some(t) = slot.ep.poll_transmit() {
                        let s = if t.local.port() == NAT_T_PORT {
                            &self.s4500
                        } else {
                            &self.s500
                        };
                        let _ = s.send_to(&t.payload, t.remote);
                    }
                }
            }
            for (spi, ok) in finished {
                if slots.remove(&spi).is_some() && !draining {
                    if ok {
                        run.done += 1;
                    } else {
                        run.failed += 1;
                    }
                    let (spi, s) = self.start(cfg)?;
                    slots.insert(spi, s);
                }
            }
            if !busy {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        Ok(run)
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (mut local, mut remote, mut psk) = (None, None, String::new());
    let (mut rounds, mut ms, mut window) = (3usize, 5000u64, 16usize);
    while let Some(a) = args.next() {
        let mut v = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--local" => local = Some(v()?.parse::<IpAddr>()?),
            "--remote" => remote = Some(v()?.parse::<IpAddr>()?),
            "--psk" => psk = v()?,
            "--rounds" => rounds = v()?.parse::<usize>()?.max(1),
            "--ms" => ms = v()?.parse()?,
            "--window" => window = v()?.parse::<usize>()?.max(1),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let local = local.ok_or("--local")?;
    let remote = remote.ok_or("--remote")?;
    let s500 = UdpSocket::bind((local, IKE_PORT))?;
    let s4500 = UdpSocket::bind((local, NAT_T_PORT))?;
    s500.set_nonblocking(true)?;
    s4500.set_nonblocking(true)?;
    let mut peer = Peer {
        s500,
        s4500,
        local,
        remote,
        rng: SystemRng,
        buf: vec![0u8; 65536],
    };
    let cfgs: Vec<(u16, &str, IkeConfig)> = GROUPS
        .iter()
        .map(|&(g, n)| Ok((g, n, config(g, &psk, local, remote)?)))
        .collect::<Result<_, Box<dyn Error>>>()?;
    // One set-up per group first: a wrong configuration fails here.
    for (g, _, c) in &cfgs {
        let r = peer.run(c, 1, Duration::from_millis(500))?;
        if r.done == 0 {
            return Err(format!("group {g}: no set-up completed: {:?}", r.logs).into());
        }
    }
    let round = Duration::from_millis(ms);
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cfgs.len()];
    println!(
        "round  {}",
        GROUPS.map(|(g, _)| format!("group {g:>2}/s")).join("  ")
    );
    let mut failed = 0u32;
    for r in 0..rounds {
        let mut line = format!("{:>5}", r + 1);
        for (i, (_, _, c)) in cfgs.iter().enumerate() {
            let start = Instant::now();
            let run = peer.run(c, window, round)?;
            failed += run.failed;
            let rate = f64::from(run.done) / start.elapsed().as_secs_f64();
            rates[i].push(rate);
            line.push_str(&format!("  {rate:>11.1}"));
            // Let the DELETEs of the last window land before the next group.
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("{line}");
    }
    println!();
    println!(
        "| DH group | set-ups/s vs charon (median of {rounds} x {ms} ms, window {window}) | ms per set-up |"
    );
    println!("| --- | ---: | ---: |");
    for ((g, name, _), v) in cfgs.iter().zip(&mut rates) {
        let m = median(v);
        println!("| {g} ({name}) | {m:.1} | {:.2} |", 1000.0 / m);
    }
    println!();
    println!("abandoned set-ups: {failed}");
    Ok(())
}
