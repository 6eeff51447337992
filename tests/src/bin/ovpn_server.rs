//! A tiny OpenVPN server for the interop test: our sans-IO engine
//! (`control::openvpn`) over one kernel UDP socket, or a TCP listener
//! (2-byte length framing). It answers ICMP echo requests that arrive
//! through the data channel itself, addressed to any tunnel address.
//!
//! ```text
//! ovpn_server --listen IP:PORT --ca FILE --cert FILE --key FILE --tls-crypt FILE
//!             [--pool CIDR] [--route CIDR]… [--dns IP]… [--tcp] [--secs 60] [--lose N]
//!             [--reneg-sec N] [--tran-window N] [--crl FILE] [--session-timeout N]
//! ovpn_server --client-vpn APPLIANCE.toml ENDPOINT-ID [--secs 60] [--lose N] [--reneg-sec N] …
//! ```
//!
//! `--crl FILE` (PEM or DER) is read at start and again whenever the
//! file's modification time changes: `CRL_RELOADED entries=N closed=M`.
//! At the end of `--secs` the server shuts down, telling clients
//! `RESTART`, and lingers a second for their acks.
//!
//! `--reneg-sec N` renegotiates each client's data keys every N seconds
//! (0: never, the default here, so only the client's `reneg-sec` counts).
//!
//! `--client-vpn` takes everything from a Client VPN endpoint of an
//! appliance configuration (`vpnctl config export`): listen address
//! (its outside address and port), transport, files, and the push set
//! (`control::client_vpn::push_options`).
//!
//! `--lose N` drops every N-th datagram in each direction (UDP), to
//! exercise both sides' retransmission.
//!
//! Prints one line per event on stdout (`ESTABLISHED`, `RENEGOTIATED`, `CLOSED`, `ECHO`)
//! and a `COUNTERS` line whenever a counter changed; exits after `--secs`.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control::ike::SystemRng;
use control::openvpn::push::PushConfig;
use control::openvpn::server::{Counters, DropReason, Server, ServerConfig};
use control::openvpn::session::{Event, SessionConfig};
use control::openvpn::tls_crypt::{Role, StaticKey, TlsCrypt};
use control::openvpn::wire::{TcpDeframer, tcp_frame};

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        let w = u32::from(c[0]) << 8 | u32::from(c.get(1).copied().unwrap_or(0));
        sum += w;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0)
}

/// The echo reply to an IPv4 ICMP echo request, if `p` is one.
fn echo_reply(p: &[u8]) -> Option<Vec<u8>> {
    if p.len() < 28 || p[0] >> 4 != 4 || p[9] != 1 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if p.len() < ihl + 8 || p[ihl] != 8 {
        return None;
    }
    let mut r = p.to_vec();
    r[12..16].copy_from_slice(&p[16..20]);
    r[16..20].copy_from_slice(&p[12..16]);
    r[8] = 64;
    r[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&r[..ihl]);
    r[10..12].copy_from_slice(&c.to_be_bytes());
    r[ihl] = 0;
    r[ihl + 2..ihl + 4].copy_from_slice(&[0, 0]);
    let c = checksum(&r[ihl..]);
    r[ihl + 2..ihl + 4].copy_from_slice(&c.to_be_bytes());
    Some(r)
}

fn counters_line(c: &Counters, sessions: usize) -> String {
    use DropReason as D;
    format!(
        "COUNTERS malformed={} unauthenticated={} replay={} unknown_session={} wrong_session={} \
         unsupported={} wrong_key_id={} bad_cookie={} data_rejected={} cookies_sent={} \
         sessions_created={} sessions={sessions} established={} renegotiations={} \
         revoked_refused={} revoked_disconnected={} data_rx={} data_tx={}",
        c.drop(D::Malformed),
        c.drop(D::Unauthenticated),
        c.drop(D::Replay),
        c.drop(D::UnknownSession),
        c.drop(D::WrongSession),
        c.drop(D::Unsupported),
        c.drop(D::WrongKeyId),
        c.drop(D::BadCookie),
        c.drop(D::DataRejected),
        c.cookies_sent,
        c.sessions_created,
        c.sessions_established,
        c.renegotiations,
        c.revoked_refused,
        c.revoked_disconnected,
        c.data_rx,
        c.data_tx,
    )
}

enum Transport {
    Udp(UdpSocket),
    Tcp {
        listener: TcpListener,
        conns: HashMap<SocketAddr, (TcpStream, TcpDeframer)>,
    },
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut ca, mut cert, mut key, mut tc) = (None, None, None, None, None);
    let mut push = PushConfig::default();
    let (mut tcp, mut secs, mut lose) = (false, 60u64, 0u64);
    let (mut reneg, mut tran_window) = (0u64, 60u64);
    let (mut crl_path, mut session_timeout) = (None, 24 * 3600u64);
    let (mut rx_n, mut tx_n) = (0u64, 0u64);
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = Some(v().parse::<SocketAddr>().expect("listen")),
            "--ca" => ca = Some(v()),
            "--cert" => cert = Some(v()),
            "--key" => key = Some(v()),
            "--tls-crypt" => tc = Some(v()),
            "--pool" => push.pool = v().parse().expect("pool"),
            "--route" => push.routes.push(v().parse().expect("route")),
            "--dns" => push.dns.push(v().parse().expect("dns")),
            "--tcp" => tcp = true,
            "--secs" => secs = v().parse().expect("secs"),
            "--lose" => lose = v().parse().expect("lose"),
            "--reneg-sec" => reneg = v().parse().expect("reneg-sec"),
            "--tran-window" => tran_window = v().parse().expect("tran-window"),
            "--crl" => crl_path = Some(v()),
            "--session-timeout" => session_timeout = v().parse().expect("session-timeout"),
            "--client-vpn" => {
                let (file, id) = (v(), v());
                let config = control::config::ApplianceConfig::from_toml_str(&read(&file))
                    .expect("appliance configuration");
                let ep = config
                    .client_vpn_endpoints
                    .iter()
                    .find(|e| e.id == id)
                    .unwrap_or_else(|| panic!("no client VPN endpoint {id}"));
                let addr = ep
                    .effective_outside_address(&config)
                    .expect("outside address");
                listen = Some(SocketAddr::new(addr, ep.vpn_port));
                let path = |p: &std::path::Path| p.display().to_string();
                ca = Some(path(&ep.client_ca_chain_file));
                cert = Some(path(&ep.server_certificate_file));
                key = Some(path(&ep.server_private_key_file));
                tc = Some(path(&ep.tls_crypt_key_file));
                push = control::client_vpn::PushOptions::push_config(ep);
                tcp = ep.transport_protocol == control::client_vpn::TransportProtocol::Tcp;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let listen = listen.expect("--listen");
    let (ca, cert, key) = (
        read(&ca.expect("--ca")),
        read(&cert.expect("--cert")),
        read(&key.expect("--key")),
    );
    let load_crl = |path: &str| {
        let crl = std::fs::read(path)
            .ok()
            .and_then(|b| control::openvpn::tls::Crl::parse(&b).ok());
        let tls = control::openvpn::tls::server_config_with_crl(&ca, &cert, &key, crl.as_ref())
            .expect("TLS configuration");
        (tls, crl)
    };
    let mtime = |path: &Option<String>| {
        path.as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .and_then(|m| m.modified().ok())
    };
    let (tls, _) = match &crl_path {
        Some(p) => load_crl(p),
        None => (
            control::openvpn::tls::server_config(&ca, &cert, &key).expect("TLS configuration"),
            None,
        ),
    };
    let mut crl_mtime = mtime(&crl_path);
    let static_key = StaticKey::parse(&read(&tc.expect("--tls-crypt"))).expect("tls-crypt key");
    let net_time = u32::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
    .unwrap_or(0);
    let mut server = Server::new(ServerConfig {
        session: SessionConfig {
            tls,
            tls_crypt: Arc::new(TlsCrypt::new(&static_key, Role::Server)),
            push,
            tcp,
            handshake_timeout: Duration::from_secs(60),
            initial_retransmit: Duration::from_secs(1),
            max_retransmit: Duration::from_secs(8),
            net_time,
            reneg: (reneg > 0).then(|| Duration::from_secs(reneg)),
            transition_window: Duration::from_secs(tran_window),
            session_timeout: Duration::from_secs(session_timeout),
        },
        max_sessions: 64,
    });
    let mut transport = if tcp {
        let listener = TcpListener::bind(listen).expect("bind TCP");
        listener.set_nonblocking(true).expect("nonblocking");
        Transport::Tcp {
            listener,
            conns: HashMap::new(),
        }
    } else {
        Transport::Udp(UdpSocket::bind(listen).expect("bind UDP"))
    };
    println!("LISTENING {listen} {}", if tcp { "tcp" } else { "udp" });
    let _ = std::io::stdout().flush();

    let mut rng = SystemRng;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut last_counters = String::new();
    let mut buf = vec![0u8; 4096];
    let mut shutdown_at = None;
    loop {
        let now = Instant::now();
        if now >= end && shutdown_at.is_none() {
            server.shutdown(now);
            shutdown_at = Some(now);
        }
        if shutdown_at.is_some_and(|t| now >= t + Duration::from_secs(1)) {
            break;
        }
        if let Some(p) = &crl_path
            && mtime(&crl_path) != crl_mtime
        {
            crl_mtime = mtime(&crl_path);
            let (tls, crl) = load_crl(p);
            let closed = server.reload_tls(now, tls, crl.as_ref());
            println!(
                "CRL_RELOADED entries={} closed={closed}",
                crl.as_ref().map_or(0, control::openvpn::tls::Crl::len)
            );
        }
        let wait = server
            .poll_timeout()
            .map_or(Duration::from_millis(200), |t| {
                t.saturating_duration_since(now)
            })
            .clamp(Duration::from_millis(1), Duration::from_millis(200));
        match &mut transport {
            Transport::Udp(sock) => {
                sock.set_read_timeout(Some(wait)).expect("timeout");
                if let Ok((n, src)) = sock.recv_from(&mut buf) {
                    rx_n += 1;
                    if lose == 0 || rx_n % lose != 0 {
                        server.handle_datagram(Instant::now(), &mut rng, src, &buf[..n]);
                    }
                }
            }
            Transport::Tcp { listener, conns } => {
                if let Ok((s, peer)) = listener.accept() {
                    s.set_nonblocking(true).expect("nonblocking");
                    conns.insert(peer, (s, TcpDeframer::new()));
                }
                std::thread::sleep(wait.min(Duration::from_millis(5)));
                let mut gone = Vec::new();
                for (peer, (s, d)) in conns.iter_mut() {
                    match s.read(&mut buf) {
                        Ok(0) => gone.push(*peer),
                        Ok(n) => {
                            let mut packets = Vec::new();
                            if d.feed(&buf[..n], |p| packets.push(p.to_vec())).is_err() {
                                gone.push(*peer);
                            }
                            for p in packets {
                                server.handle_datagram(Instant::now(), &mut rng, *peer, &p);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => gone.push(*peer),
                    }
                }
                for g in gone {
                    conns.remove(&g);
                }
            }
        }
        let now = Instant::now();
        server.handle_timeout(now);
        while let Some((peer, ev)) = server.poll_event() {
            match ev {
                Event::Established {
                    common_name,
                    address,
                    peer_id,
                    cipher,
                    client_version,
                } => println!(
                    "ESTABLISHED peer={peer} cn={common_name} address={address} peer_id={peer_id} \
                     cipher={} version={}",
                    cipher.name(),
                    client_version.unwrap_or_default()
                ),
                Event::Packet(p) => {
                    if let Some(r) = echo_reply(&p) {
                        let dst = Ipv4Addr::new(r[16], r[17], r[18], r[19]);
                        match server.send_packet(now, dst, &r) {
                            Ok(()) => println!(
                                "ECHO {dst} -> {}",
                                Ipv4Addr::new(r[12], r[13], r[14], r[15])
                            ),
                            Err(e) => println!("ECHO_FAILED {dst}: {e}"),
                        }
                    }
                }
                Event::Renegotiated { key_id, by_server } => println!(
                    "RENEGOTIATED peer={peer} key_id={key_id} by={}",
                    if by_server { "server" } else { "client" }
                ),
                Event::Closed(reason) => println!("CLOSED peer={peer} reason={reason}"),
                _ => {}
            }
        }
        while let Some(t) = server.poll_transmit(now) {
            match &mut transport {
                Transport::Udp(sock) => {
                    tx_n += 1;
                    if lose == 0 || tx_n % lose != 0 {
                        let _ = sock.send_to(&t.payload, t.dst);
                    }
                }
                Transport::Tcp { conns, .. } => {
                    if let (Some((s, _)), Ok(f)) = (conns.get_mut(&t.dst), tcp_frame(&t.payload)) {
                        // Whole frames only: a partial one would break the stream.
                        let mut off = 0;
                        while off < f.len() {
                            match s.write(&f[off..]) {
                                Ok(n) => off += n,
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                    std::thread::sleep(Duration::from_millis(1));
                                }
                                Err(_) => break,
                            }
                        }
                    }
                }
            }
        }
        let line = format!(
            "{} retransmits={}",
            counters_line(server.counters(), server.session_count()),
            server.retransmits()
        );
        if line != last_counters {
            println!("{line}");
            last_counters = line;
        }
        let _ = std::io::stdout().flush();
    }
}
