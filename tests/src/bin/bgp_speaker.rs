//! A test driver: one `control::bgp::Session` over kernel TCP, with a
//! [`Rib`] behind it, writing what happens as lines to a file.
//!
//! This is the I/O shell the sans-IO session needs (the appliance daemon
//! has its own): it listens on `<local-addr>:179`, connects to
//! `<peer-addr>:179` when the session asks, feeds bytes and timeouts in,
//! and writes out transmits. Output lines (`--out FILE`, flushed per line):
//!
//! ```text
//! LOG type=BGPStatus status=UP details="…"          every log entry
//! STATE Established                                  state changes
//! RIB ADD 10.1.0.0/16 via 169.254.21.2 as-path 65000 selected routes appearing/changing
//! RIB DEL 10.1.1.0/24                                selected routes disappearing
//! EOR ipv4                                           End-of-RIB received
//! ```
//!
//! Usage: `bgp_speaker --local-addr A --peer-addr B --local-as N --peer-as N
//! [--local-v6 A6] [--connected NET]… [--advertise NET]… [--max-prefixes N]
//! [--hold SECS] [--ipv6] --out FILE`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use control::bgp::rib::{RouteTarget, Selected};
use control::bgp::session::{Action, Advert, ConnId, Direction, PeerConfig, Session, State};
use control::bgp::wire::Afi;
use control::bgp::{Rib, TunnelId};
use ipnet::IpNet;

/// The one tunnel this driver's session runs in.
const TUNNEL: TunnelId = TunnelId(1);

struct Args {
    cfg: PeerConfig,
    advertise: Vec<IpNet>,
    out: String,
}

fn parse_args() -> Result<Args, String> {
    let mut kv: Vec<(String, String)> = Vec::new();
    let mut flags: Vec<String> = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--ipv6" | "--passive" => flags.push(a),
            k if k.starts_with("--") => {
                let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
                kv.push((k.to_owned(), v));
            }
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    let get = |k: &str| kv.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let all = |k: &str| {
        kv.iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let need = |k: &str| get(k).ok_or_else(|| format!("missing {k}"));
    let p =
        |k: &str, v: String| -> Result<u32, String> { v.parse().map_err(|e| format!("{k}: {e}")) };
    let local: IpAddr = need("--local-addr")?
        .parse()
        .map_err(|e| format!("--local-addr: {e}"))?;
    let peer: IpAddr = need("--peer-addr")?
        .parse()
        .map_err(|e| format!("--peer-addr: {e}"))?;
    let mut cfg = PeerConfig::new(
        p("--local-as", need("--local-as")?)?,
        p("--peer-as", need("--peer-as")?)?,
        local,
        peer,
    );
    for c in all("--connected") {
        cfg.connected
            .push(c.parse().map_err(|e| format!("--connected {c}: {e}"))?);
    }
    if let Some(v) = get("--local-v6") {
        cfg.local_addr_v6 = Some(v.parse().map_err(|e| format!("--local-v6: {e}"))?);
    }
    if let Some(v) = get("--max-prefixes") {
        cfg.max_prefixes = p("--max-prefixes", v)?;
    }
    if let Some(v) = get("--hold") {
        cfg.hold_time_secs = u16::try_from(p("--hold", v)?).map_err(|e| e.to_string())?;
        cfg.keepalive_secs = (cfg.hold_time_secs / 3).max(1);
    }
    cfg.ipv6 = flags.iter().any(|f| f == "--ipv6");
    cfg.passive = flags.iter().any(|f| f == "--passive");
    cfg.connect_retry_secs = 2;
    cfg.idle_hold_secs = 2;
    let advertise = all("--advertise")
        .into_iter()
        .map(|a| a.parse().map_err(|e| format!("--advertise {a}: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(Args {
        cfg,
        advertise,
        out: need("--out")?,
    })
}

struct Out(File);

impl Out {
    fn line(&mut self, s: &str) {
        // A lost line only weakens the test's evidence; keep running.
        let _ = writeln!(self.0, "{s}");
        let _ = self.0.flush();
    }
}

fn describe(s: &Selected) -> String {
    let target = match &s.target {
        RouteTarget::Inside => "inside".to_owned(),
        RouteTarget::Tunnel(t) => format!("tunnel {}", t.0),
        RouteTarget::Ecmp(m) => format!("ecmp {m:?}"),
    };
    match &s.path {
        Some(p) => format!(
            "via {} as-path {} med {} {target}",
            p.next_hop,
            p.as_path,
            p.med.unwrap_or(0)
        ),
        None => target,
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bgp_speaker: {e}");
            std::process::exit(2);
        }
    };
    let mut out = match File::create(&args.out) {
        Ok(f) => Out(f),
        Err(e) => {
            eprintln!("bgp_speaker: {}: {e}", args.out);
            std::process::exit(2);
        }
    };
    let peer = SocketAddr::new(args.cfg.peer_addr, 179);
    let listener = match TcpListener::bind(SocketAddr::new(args.cfg.local_addr, 179)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bgp_speaker: bind {}:179: {e}", args.cfg.local_addr);
            std::process::exit(1);
        }
    };
    if let Err(e) = listener.set_nonblocking(true) {
        eprintln!("bgp_speaker: {e}");
        std::process::exit(1);
    }
    let tunnel = TUNNEL;
    let mut rib = Rib::new(true);
    rib.set_tunnel_up(tunnel, true);
    let mut shown: BTreeMap<IpNet, String> = BTreeMap::new();
    let mut session = Session::new(args.cfg.clone());
    let now = Instant::now();
    session.set_advertised(
        now,
        args.advertise.iter().map(|p| Advert {
            prefix: *p,
            med: Some(100),
            prepend: 0,
            communities: Vec::new(),
        }),
    );
    session.handle_start(now);
    let mut conns: BTreeMap<ConnId, TcpStream> = BTreeMap::new();
    let mut next_id = 1u64;
    let mut last_state = State::Idle;
    let mut buf = vec![0u8; 65_536];
    loop {
        let now = Instant::now();
        // Outputs first (call order: transmit, action, log, timeout).
        let mut rib_changed = false;
        loop {
            let mut progress = false;
            while let Some(t) = session.poll_transmit() {
                progress = true;
                if let Some(s) = conns.get_mut(&t.conn) {
                    let _ = s.set_nonblocking(false);
                    if s.write_all(&t.data).is_err() {
                        conns.remove(&t.conn);
                        session.handle_closed(now, t.conn);
                        continue;
                    }
                    let _ = s.set_nonblocking(true);
                }
            }
            while let Some(a) = session.poll_action() {
                progress = true;
                match a {
                    Action::Connect => {
                        let id = ConnId(next_id);
                        next_id += 1;
                        match TcpStream::connect_timeout(&peer, Duration::from_secs(1)) {
                            Ok(s) => {
                                let _ = s.set_nodelay(true);
                                let _ = s.set_nonblocking(true);
                                conns.insert(id, s);
                                session.handle_connected(now, id, Direction::Outgoing);
                            }
                            Err(_) => session.handle_closed(now, id),
                        }
                    }
                    Action::Close(id) => {
                        if let Some(s) = conns.remove(&id) {
                            let _ = s.shutdown(std::net::Shutdown::Both);
                        }
                    }
                    Action::EndOfRib(afi) => {
                        out.line(if afi == Afi::Ipv6 {
                            "EOR ipv6"
                        } else {
                            "EOR ipv4"
                        });
                    }
                    other => rib_changed |= rib.apply(tunnel, &other),
                }
            }
            while let Some(l) = session.poll_log() {
                progress = true;
                out.line(&format!("LOG {l}"));
            }
            if !progress {
                break;
            }
        }
        if session.state() != last_state {
            last_state = session.state();
            out.line(&format!("STATE {last_state}"));
        }
        if rib_changed {
            let now_sel: BTreeMap<IpNet, String> = rib
                .selected()
                .iter()
                .map(|(p, s)| (*p, describe(s)))
                .collect();
            for (p, d) in &now_sel {
                if shown.get(p) != Some(d) {
                    out.line(&format!("RIB ADD {p} {d}"));
                }
            }
            for p in shown.keys() {
                if !now_sel.contains_key(p) {
                    out.line(&format!("RIB DEL {p}"));
                }
            }
            shown = now_sel;
            if let Err(e) = rib.fib_builder() {
                out.line(&format!("FIB ERROR {e}"));
            }
        }
        // Inputs.
        match listener.accept() {
            Ok((s, from)) => {
                let id = ConnId(next_id);
                next_id += 1;
                if from.ip() == args.cfg.peer_addr {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_nonblocking(true);
                    conns.insert(id, s);
                    session.handle_connected(now, id, Direction::Incoming);
                }
                continue;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => out.line(&format!("ACCEPT ERROR {e}")),
        }
        let ids: Vec<ConnId> = conns.keys().copied().collect();
        let mut any = false;
        for id in ids {
            let Some(s) = conns.get_mut(&id) else {
                continue;
            };
            match s.read(&mut buf) {
                Ok(0) => {
                    conns.remove(&id);
                    session.handle_closed(now, id);
                    any = true;
                }
                Ok(n) => {
                    session.handle_data(now, id, &buf[..n]);
                    any = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {
                    conns.remove(&id);
                    session.handle_closed(now, id);
                    any = true;
                }
            }
        }
        if session.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            session.handle_timeout(Instant::now());
            any = true;
        }
        if !any {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
