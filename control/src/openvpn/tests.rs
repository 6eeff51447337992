//! Two-peer harness with virtual time: the [`Server`] against a test
//! client built from the same codec pieces and rustls' client, over a
//! simulated link that can lose packets. Reads like a protocol script.

use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use super::data::{DataChannel, DataCipher, DataKeys, EKM_LABEL, EKM_LEN, Payload, classify};
use super::key_method::{ClientKeyMethod2, PeerInfo};
use super::push::PushConfig;
use super::reliable::{RecvQueue, SendQueue};
use super::server::{DropReason, Server, ServerConfig};
use super::session::{CloseReason, Event, SessionConfig};
use super::tls_crypt::{Role, STATIC_KEY_LEN, StaticKey, TlsCrypt};
use super::wire::{ControlBody, ControlHeader, Opcode, Reader, SEND_ACKS, SessionId};
use crate::ike::tests::TestRng;

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca(cn: &str) -> Ca {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let pem = p.self_signed(&key).unwrap().pem();
    Ca {
        params: p,
        key,
        pem,
    }
}

/// (certificate PEM, PKCS#8 key PEM)
fn leaf(cn: &str, server: bool, by: &Ca) -> (String, String) {
    let mut p = CertificateParams::new(vec![format!("{cn}.example")]).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = p
        .signed_by(&key, &Issuer::from_params(&by.params, &by.key))
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

fn static_key() -> StaticKey {
    let mut b = [0u8; STATIC_KEY_LEN];
    for (i, x) in b.iter_mut().enumerate() {
        *x = u8::try_from(i * 7 % 256).unwrap();
    }
    StaticKey::from_bytes(b)
}

struct Lab {
    ca: Ca,
    /// The server's (certificate, key) PEM, for reloads.
    server_cert: (String, String),
    server: Server,
    now: Instant,
    rng: TestRng,
}

fn lab_with(push: PushConfig, max_sessions: usize) -> Lab {
    let ca = ca("lab CA");
    let (cert, key) = leaf("vpn", true, &ca);
    let tls = super::tls::server_config(&ca.pem, &cert, &key).unwrap();
    let server = Server::new(ServerConfig {
        session: SessionConfig {
            tls,
            tls_crypt: Arc::new(TlsCrypt::new(&static_key(), Role::Server)),
            push,
            tcp: false,
            handshake_timeout: Duration::from_secs(60),
            initial_retransmit: Duration::from_secs(1),
            max_retransmit: Duration::from_secs(8),
            net_time: 1_800_000_000,
            reneg: Some(Duration::from_secs(3600)),
            transition_window: Duration::from_secs(60),
            session_timeout: Duration::from_secs(24 * 3600),
        },
        max_sessions,
    });
    Lab {
        ca,
        server_cert: (cert, key),
        server,
        now: Instant::now(),
        rng: TestRng::new(19),
    }
}

fn lab() -> Lab {
    lab_with(
        PushConfig {
            pool: "10.8.0.0/24".parse().unwrap(),
            ..PushConfig::default()
        },
        8,
    )
}

const PEER_INFO: &str =
    "IV_VER=2.6.14\nIV_PLAT=linux\nIV_PROTO=990\nIV_CIPHERS=AES-256-GCM:AES-128-GCM\n";

/// The client side, from the same pieces: enough of OpenVPN's client to
/// script the exchange.
struct Client {
    addr: SocketAddr,
    tc: TlsCrypt,
    sid: SessionId,
    remote_sid: Option<SessionId>,
    packet_id: u32,
    send: SendQueue,
    recv: RecvQueue,
    tls: rustls::ClientConnection,
    plain: Vec<u8>,
    km_sent: bool,
    server_km: bool,
    peer_info: String,
    push_reply: Option<String>,
    data: Option<DataChannel>,
    out: VecDeque<Vec<u8>>,
    packets: Vec<Vec<u8>>,
    pings: u32,
    alerted: bool,
    key_id: u8,
    lru_acks: Vec<u32>,
    /// Its certificate (DER).
    cert: Vec<u8>,
    /// Control-channel messages from the server.
    texts: Vec<String>,
}

impl Client {
    fn new(lab: &Lab, port: u16, issuer: Option<&Ca>, peer_info: &str) -> Self {
        let (cert, key) = leaf("alice", false, issuer.unwrap_or(&lab.ca));
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(
                pem::parse(&lab.ca.pem).unwrap().into_contents(),
            ))
            .unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(
                pem::parse(&cert).unwrap().into_contents(),
            )],
            PrivateKeyDer::from(PrivatePkcs8KeyDer::from(
                pem::parse(&key).unwrap().into_contents(),
            )),
        )
        .unwrap();
        let tls = rustls::ClientConnection::new(
            Arc::new(cfg),
            ServerName::try_from("vpn.example").unwrap(),
        )
        .unwrap();
        let mut send = SendQueue::new(0, Duration::from_secs(2), Duration::from_secs(8));
        send.push(Vec::new()); // the hard reset, message 0
        Self {
            addr: SocketAddr::from(([198, 51, 100, 7], port)),
            tc: TlsCrypt::new(&static_key(), Role::Client),
            sid: SessionId([
                port.to_be_bytes()[0],
                port.to_be_bytes()[1],
                1,
                2,
                3,
                4,
                5,
                6,
            ]),
            remote_sid: None,
            packet_id: 0x0f00_0000,
            send,
            recv: RecvQueue::new(0),
            tls,
            plain: Vec::new(),
            km_sent: false,
            server_km: false,
            peer_info: peer_info.to_owned(),
            push_reply: None,
            data: None,
            out: VecDeque::new(),
            packets: Vec::new(),
            pings: 0,
            alerted: false,
            key_id: 0,
            lru_acks: Vec::new(),
            cert: pem::parse(&cert).unwrap().into_contents(),
            texts: Vec::new(),
        }
    }

    fn handle(&mut self, pkt: &[u8]) {
        let op = Opcode::from(pkt[0] >> 3);
        if op.is_data() {
            let mut p = pkt.to_vec();
            let ch = self.data.as_mut().expect("data before keys");
            let r = ch.open_in_place(&mut p).expect("server data opens");
            match classify(&p[r.clone()]) {
                Payload::Ping => self.pings += 1,
                _ => self.packets.push(p[r].to_vec()),
            }
            return;
        }
        let (h, plain) = self.tc.unwrap(pkt).expect("server control authenticates");
        let body = ControlBody::parse(h.opcode, &plain).unwrap();
        self.remote_sid = Some(h.session_id);
        if let Some(r) = body.remote_session_id {
            assert_eq!(r, self.sid);
        }
        for &a in &body.acks {
            self.send.handle_ack(a);
        }
        if let Some(id) = body.message_id {
            let _ = self.recv.handle(id, body.payload);
        }
        while let Some(p) = self.recv.pop() {
            let mut s = p.as_slice();
            while !s.is_empty() {
                self.tls.read_tls(&mut s).unwrap();
                if self.tls.process_new_packets().is_err() {
                    self.alerted = true;
                    return;
                }
            }
        }
        if !self.tls.is_handshaking() && !self.km_sent {
            let km = ClientKeyMethod2 {
                key_source: zeroize::Zeroizing::new([9; 112]),
                options: "V4,dev-type tun,tls-client".into(),
                username: String::new(),
                password: zeroize::Zeroizing::new(String::new()),
                peer_info: PeerInfo::parse(&self.peer_info),
            };
            self.tls.writer().write_all(&km.emit()).unwrap();
            self.km_sent = true;
        }
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.tls.reader().read(&mut buf) {
            if n == 0 {
                break;
            }
            self.plain.extend_from_slice(&buf[..n]);
        }
        if !self.server_km && self.plain.len() >= 69 {
            let mut r = Reader::new(&self.plain[69..]);
            let mut ok = true;
            for _ in 0..4 {
                let Ok(len) = r.u16("len") else {
                    ok = false;
                    break;
                };
                if r.take(usize::from(len), "s").is_err() {
                    ok = false;
                    break;
                }
            }
            if ok {
                let used = self.plain.len() - r.left();
                assert_eq!(&self.plain[..5], &[0, 0, 0, 0, 2]);
                self.plain.drain(..used);
                self.server_km = true;
                self.tls.writer().write_all(b"PUSH_REQUEST\0").unwrap();
            }
        }
        while let Some(nul) = self.plain.iter().position(|&b| b == 0) {
            let m: Vec<u8> = self.plain.drain(..=nul).collect();
            let text = String::from_utf8(m[..m.len() - 1].to_vec()).unwrap();
            self.texts.push(text.clone());
            if text.starts_with("PUSH_REPLY") {
                let cipher = opt(&text, "cipher").unwrap();
                let peer_id: u32 = opt(&text, "peer-id").unwrap().parse().unwrap();
                let mut ekm = [0u8; EKM_LEN];
                self.tls
                    .export_keying_material(&mut ekm, EKM_LABEL, None)
                    .unwrap();
                let keys = DataKeys::from_ekm(DataCipher::from_name(&cipher).unwrap(), &ekm);
                self.data = Some(keys.client_channel(0, peer_id));
                self.push_reply = Some(text);
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        let mut out = Vec::new();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut out).unwrap();
        }
        for c in out.chunks(1000) {
            self.send.push(c.to_vec());
        }
    }

    fn send_text(&mut self, text: &str) {
        self.tls.writer().write_all(text.as_bytes()).unwrap();
        self.tls.writer().write_all(&[0]).unwrap();
        self.flush();
    }

    fn send_data(&mut self, payload: &[u8]) {
        let mut p = vec![0u8; super::data::DATA_V2_OVERHEAD];
        p.extend_from_slice(payload);
        self.data.as_mut().unwrap().seal_in_place(&mut p).unwrap();
        self.out.push_back(p);
    }

    fn wrap(&mut self, opcode: Opcode, body: &ControlBody<'_>) -> Vec<u8> {
        let mut plain = Vec::new();
        body.emit(&mut plain);
        self.packet_id += 1;
        self.tc.wrap(
            &ControlHeader {
                opcode,
                key_id: self.key_id,
                session_id: self.sid,
                packet_id: self.packet_id,
                net_time: 1_800_000_123,
            },
            &plain,
        )
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if let Some(p) = self.out.pop_front() {
            return Some(p);
        }
        let (op, id, payload) = match self.send.poll_due(now) {
            Some(d) => (
                if d.id == 0 {
                    Opcode::HardResetClientV2
                } else {
                    Opcode::ControlV1
                },
                Some(d.id),
                d.payload.to_vec(),
            ),
            None if self.recv.owes_acks() => (Opcode::AckV1, None, Vec::new()),
            None => return None,
        };
        let mut acks = self
            .recv
            .take_acks(SEND_ACKS)
            .collect::<arrayvec::ArrayVec<u32, 8>>();
        // Like OpenVPN 2.6 (`lru_acks`), fill free ack slots with acks
        // sent before: a lost ack of the server's cookie reset is resent
        // with the next packet, or the server never sees the cookie.
        for &a in &self.lru_acks {
            if acks.len() < SEND_ACKS && !acks.contains(&a) {
                acks.push(a);
            }
        }
        for &a in &acks {
            self.lru_acks.retain(|&x| x != a);
            self.lru_acks.insert(0, a);
            self.lru_acks.truncate(SEND_ACKS);
        }
        let body = ControlBody {
            remote_session_id: (!acks.is_empty()).then(|| self.remote_sid.unwrap()),
            acks,
            message_id: id,
            payload: &payload,
        };
        Some(self.wrap(op, &body))
    }
}

fn opt(reply: &str, name: &str) -> Option<String> {
    reply
        .split(',')
        .find_map(|o| o.strip_prefix(&format!("{name} ")))
        .map(str::to_owned)
}

impl Lab {
    /// Exchanges packets until `done` or `limit` of virtual time passes;
    /// `lose(n)` drops the n-th datagram on the link. Returns the events.
    fn run(
        &mut self,
        clients: &mut [&mut Client],
        limit: Duration,
        mut lose: impl FnMut(u64) -> bool,
        mut done: impl FnMut(&[(SocketAddr, Event)], &[&mut Client]) -> bool,
    ) -> Vec<(SocketAddr, Event)> {
        let end = self.now + limit;
        let mut events = Vec::new();
        let mut n = 0u64;
        while self.now < end {
            let mut moved = false;
            for c in clients.iter_mut() {
                while let Some(p) = c.poll_transmit(self.now) {
                    moved = true;
                    n += 1;
                    if !lose(n) {
                        self.server
                            .handle_datagram(self.now, &mut self.rng, c.addr, &p);
                    }
                }
            }
            self.server.handle_timeout(self.now);
            while let Some(t) = self.server.poll_transmit(self.now) {
                moved = true;
                n += 1;
                if lose(n) {
                    continue;
                }
                if let Some(c) = clients.iter_mut().find(|c| c.addr == t.dst) {
                    c.handle(&t.payload);
                }
            }
            while let Some(e) = self.server.poll_event() {
                events.push(e);
            }
            if done(&events, clients) {
                return events;
            }
            if !moved {
                self.now += Duration::from_millis(100);
            }
        }
        events
    }

    fn connect(&mut self, c: &mut Client) -> Vec<(SocketAddr, Event)> {
        self.run(
            &mut [c],
            Duration::from_secs(30),
            |_| false,
            |_, c| c[0].data.is_some(),
        )
    }
}

fn established(events: &[(SocketAddr, Event)]) -> Option<(Ipv4Addr, String, DataCipher)> {
    events.iter().find_map(|(_, e)| match e {
        Event::Established {
            address,
            common_name,
            cipher,
            ..
        } => Some((*address, common_name.clone(), *cipher)),
        _ => None,
    })
}

fn closed(events: &[(SocketAddr, Event)]) -> Option<CloseReason> {
    events.iter().find_map(|(_, e)| match e {
        Event::Closed(r) => Some(r.clone()),
        _ => None,
    })
}

#[test]
fn handshake_push_and_data_both_ways() {
    let mut lab = lab();
    let mut c = Client::new(&lab, 4000, None, PEER_INFO);
    let ev = lab.connect(&mut c);
    let (addr, cn, cipher) = established(&ev).expect("established");
    assert_eq!(
        (addr, cn.as_str(), cipher),
        (Ipv4Addr::new(10, 8, 0, 2), "alice", DataCipher::Aes256Gcm)
    );
    let reply = c.push_reply.clone().unwrap();
    assert!(
        reply.contains(",ifconfig 10.8.0.2 255.255.255.0,"),
        "{reply}"
    );
    assert!(reply.contains(",topology subnet,") && reply.contains(",route-gateway 10.8.0.1,"));
    assert!(reply.contains(",peer-id 0,cipher AES-256-GCM,key-derivation tls-ekm"));
    // Data both ways.
    c.send_data(b"\x45 from the client");
    let ev = lab.run(
        &mut [&mut c],
        Duration::from_secs(1),
        |_| false,
        |e, _| !e.is_empty(),
    );
    assert_eq!(
        ev,
        vec![(c.addr, Event::Packet(b"\x45 from the client".to_vec()))]
    );
    lab.server
        .send_packet(lab.now, addr, b"\x45 to the client")
        .unwrap();
    lab.run(
        &mut [&mut c],
        Duration::from_secs(1),
        |_| false,
        |_, c| !c[0].packets.is_empty(),
    );
    assert_eq!(c.packets, vec![b"\x45 to the client".to_vec()]);
    assert_eq!(
        lab.server
            .send_packet(lab.now, Ipv4Addr::new(10, 8, 0, 9), b"x"),
        Err(super::server::SendError::NoClient(Ipv4Addr::new(
            10, 8, 0, 9
        )))
    );
    let c2 = lab.server.counters();
    assert_eq!(
        (
            c2.sessions_created,
            c2.sessions_established,
            c2.data_rx,
            c2.data_tx
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(c2.drops, [0; DropReason::COUNT]);
}

#[test]
fn lossy_link_still_completes() {
    let mut lab = lab();
    let mut c = Client::new(&lab, 4001, None, PEER_INFO);
    // Every third datagram in either direction is lost.
    let ev = lab.run(
        &mut [&mut c],
        Duration::from_secs(60),
        |n| n % 3 == 0,
        |_, c| c[0].data.is_some(),
    );
    assert!(established(&ev).is_some(), "{ev:?}");
    assert!(lab.server.retransmits() > 0);
}

#[test]
fn client_from_another_ca_is_refused_with_an_alert() {
    let mut lab = lab();
    let other = ca("other CA");
    let mut c = Client::new(&lab, 4002, Some(&other), PEER_INFO);
    let ev = lab.run(
        &mut [&mut c],
        Duration::from_secs(10),
        |_| false,
        |e, c| closed(e).is_some() && c[0].alerted,
    );
    match closed(&ev) {
        Some(CloseReason::TlsFailed(e)) => assert!(e.contains("UnknownIssuer"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(c.alerted, "the client got the TLS alert");
    assert!(established(&ev).is_none());
    // The closed session goes away, and no address was taken.
    lab.now += Duration::from_secs(5);
    lab.server.handle_timeout(lab.now);
    assert_eq!(lab.server.session_count(), 0);
}

#[test]
fn client_without_tls_ekm_or_common_cipher_is_refused() {
    for (info, want) in [
        (
            "IV_VER=2.4.12\nIV_PROTO=2\nIV_CIPHERS=AES-256-GCM\n",
            "TLS-EKM",
        ),
        (
            "IV_VER=2.6.14\nIV_PROTO=990\nIV_CIPHERS=CHACHA20-POLY1305\n",
            "no common data cipher",
        ),
    ] {
        let mut lab = lab();
        let mut c = Client::new(&lab, 4003, None, info);
        let ev = lab.run(
            &mut [&mut c],
            Duration::from_secs(10),
            |_| false,
            |e, _| closed(e).is_some(),
        );
        match closed(&ev) {
            Some(CloseReason::Negotiation(e)) => assert!(e.contains(want), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn forged_replayed_and_stray_packets_are_counted() {
    let mut lab = lab();
    let mut c = Client::new(&lab, 4004, None, PEER_INFO);
    // Capture the client's hard reset as an eavesdropper would.
    let reset = c.poll_transmit(lab.now).unwrap();
    lab.server
        .handle_datagram(lab.now, &mut lab.rng, c.addr, &reset);
    lab.connect(&mut c);
    let t = lab.now;
    // Replayed from another address, it starts no second session: the
    // spoofed address gets a cookie it never echoes.
    let spoofed = SocketAddr::from(([203, 0, 113, 10], 1194));
    let cookies = lab.server.counters().cookies_sent;
    lab.server.handle_datagram(t, &mut lab.rng, spoofed, &reset);
    assert_eq!(lab.server.counters().cookies_sent, cookies + 1);
    assert_eq!(lab.server.poll_transmit(t).unwrap().dst, spoofed);
    // A control packet under another static key.
    let mut other = [0u8; STATIC_KEY_LEN];
    other[0] = 1;
    let forged = TlsCrypt::new(&StaticKey::from_bytes(other), Role::Client).wrap(
        &ControlHeader {
            opcode: Opcode::HardResetClientV2,
            key_id: 0,
            session_id: SessionId([5; 8]),
            packet_id: 1,
            net_time: 1,
        },
        &[0, 0, 0, 0, 0],
    );
    let stranger = SocketAddr::from(([203, 0, 113, 9], 1));
    lab.server
        .handle_datagram(t, &mut lab.rng, stranger, &forged);
    lab.server.handle_datagram(t, &mut lab.rng, stranger, &[]);
    lab.server
        .handle_datagram(t, &mut lab.rng, stranger, &[0x38, 1, 2]);
    lab.server
        .handle_datagram(t, &mut lab.rng, stranger, &[0xf8; 60]);
    // A genuine ack from the client, then the same packet again.
    let ack = c.wrap(Opcode::AckV1, &ControlBody::default());
    lab.server.handle_datagram(t, &mut lab.rng, c.addr, &ack);
    lab.server.handle_datagram(t, &mut lab.rng, c.addr, &ack);
    // A genuine ack of the server's reset from an address with no
    // session: the session id it echoes is another address's cookie.
    let echo = c.wrap(
        Opcode::AckV1,
        &ControlBody {
            acks: [0].into_iter().collect(),
            remote_session_id: c.remote_sid,
            ..ControlBody::default()
        },
    );
    lab.server.handle_datagram(t, &mut lab.rng, stranger, &echo);
    // A bare ack with no session id echoed.
    let mut bare = Client::new(&lab, 4011, None, PEER_INFO);
    let p = bare.wrap(Opcode::AckV1, &ControlBody::default());
    lab.server.handle_datagram(t, &mut lab.rng, bare.addr, &p);
    // Data: replayed, and from nowhere.
    c.send_data(b"\x45");
    let d = c.out.pop_front().unwrap();
    lab.server.handle_datagram(t, &mut lab.rng, c.addr, &d);
    lab.server.handle_datagram(t, &mut lab.rng, c.addr, &d);
    lab.server.handle_datagram(t, &mut lab.rng, stranger, &d);
    let k = lab.server.counters();
    assert_eq!(k.drop(DropReason::Unauthenticated), 1);
    assert_eq!(k.drop(DropReason::Malformed), 3);
    assert_eq!(k.drop(DropReason::Replay), 1);
    assert_eq!(k.drop(DropReason::BadCookie), 1);
    assert_eq!(k.drop(DropReason::UnknownSession), 1);
    assert_eq!(k.drop(DropReason::DataRejected), 1);
    assert_eq!(k.data_drops[super::data::DataDrop::Replay.index()], 1);
    assert_eq!(k.drop(DropReason::DataNoSession), 1);
    assert_eq!(k.sessions_created, 1);
    assert_eq!(k.data_rx, 1);
}

#[test]
fn keepalive_ping_timeout_and_address_reuse() {
    let mut lab = lab();
    let mut c = Client::new(&lab, 4005, None, PEER_INFO);
    lab.connect(&mut c);
    // Quiet client: the server pings every 10 s (pushed ping 10) ...
    lab.run(
        &mut [&mut c],
        Duration::from_secs(25),
        |_| false,
        |_, _| false,
    );
    assert!(c.pings >= 2, "{} pings", c.pings);
    // ... and gives up after twice ping-restart (2 x 60 s) without a word.
    let ev = lab.run(
        &mut [&mut c],
        Duration::from_secs(130),
        |_| false,
        |e, _| closed(e).is_some(),
    );
    assert_eq!(closed(&ev), Some(CloseReason::PingTimeout));
    lab.now += Duration::from_secs(5);
    lab.server.handle_timeout(lab.now);
    assert_eq!(lab.server.session_count(), 0);
}

#[test]
fn handshake_timeout_frees_the_session() {
    let mut lab = lab();
    let mut c = Client::new(&lab, 4006, None, PEER_INFO);
    // The three-way handshake gets through (reset, cookie reset, the
    // client's first TLS record echoing it); then the client goes silent.
    let ev = lab.run(
        &mut [&mut c],
        Duration::from_secs(70),
        |n| n > 3,
        |e, _| closed(e).is_some(),
    );
    assert_eq!(closed(&ev), Some(CloseReason::HandshakeTimeout));
}

#[test]
fn exit_notification_pool_exhaustion_and_session_limit() {
    let mut lab = lab_with(
        PushConfig {
            pool: "10.9.0.0/30".parse().unwrap(), // one client address
            ..PushConfig::default()
        },
        2,
    );
    let mut a = Client::new(&lab, 4007, None, PEER_INFO);
    assert!(established(&lab.connect(&mut a)).is_some());
    let mut b = Client::new(&lab, 4008, None, PEER_INFO);
    let ev = lab.run(
        &mut [&mut b],
        Duration::from_secs(10),
        |_| false,
        |e, _| closed(e).is_some(),
    );
    assert_eq!(closed(&ev), Some(CloseReason::PoolExhausted));
    // Two sessions are in the table (b lingers): a third is refused.
    // Its reset is answered statelessly; the packet echoing the cookie
    // would start the session and is refused.
    let mut x = Client::new(&lab, 4009, None, PEER_INFO);
    let p = x.poll_transmit(lab.now).unwrap();
    lab.server
        .handle_datagram(lab.now, &mut lab.rng, x.addr, &p);
    let reply = lab.server.poll_transmit(lab.now).unwrap();
    assert_eq!(reply.dst, x.addr);
    x.handle(&reply.payload);
    while let Some(p) = x.poll_transmit(lab.now) {
        lab.server
            .handle_datagram(lab.now, &mut lab.rng, x.addr, &p);
    }
    assert_eq!(lab.server.counters().drop(DropReason::SessionLimit), 1);
    assert_eq!(lab.server.session_count(), 2);
    // a leaves with EXIT; its address is free for the next client.
    a.send_text("EXIT");
    let ev = lab.run(
        &mut [&mut a],
        Duration::from_secs(5),
        |_| false,
        |e, _| closed(e).is_some(),
    );
    assert_eq!(closed(&ev), Some(CloseReason::ClientExit));
    lab.now += Duration::from_secs(5);
    lab.server.handle_timeout(lab.now);
    let mut d = Client::new(&lab, 4010, None, PEER_INFO);
    let ev = lab.connect(&mut d);
    assert_eq!(
        established(&ev).map(|e| e.0),
        Some(Ipv4Addr::new(10, 9, 0, 2))
    );
    // A client restarting from the same address replaces its session.
    let mut d2 = Client::new(&lab, 4010, None, PEER_INFO);
    d2.sid = SessionId([0xdd; 8]);
    let ev = lab.connect(&mut d2);
    assert_eq!(closed(&ev), Some(CloseReason::Replaced));
    assert!(established(&ev).is_some());
}

#[test]
fn key_ids_wrap_from_seven_to_one() {
    use super::session::next_key_id;
    let mut k = 0;
    let seq: Vec<u8> = (0..9)
        .map(|_| {
            k = next_key_id(k);
            k
        })
        .collect();
    assert_eq!(seq, [1, 2, 3, 4, 5, 6, 7, 1, 2]);
}

#[test]
fn soft_reset_opens_the_next_key_id_only() {
    let mut lab = lab();
    let mut c = Client::new(&lab, 4010, None, PEER_INFO);
    lab.connect(&mut c);
    let t = lab.now;
    let reset = |c: &mut Client| {
        c.wrap(
            Opcode::SoftResetV1,
            &ControlBody {
                message_id: Some(0),
                ..ControlBody::default()
            },
        )
    };
    // Out of sequence: key 3 after key 0.
    c.key_id = 3;
    let p = reset(&mut c);
    lab.server.handle_datagram(t, &mut lab.rng, c.addr, &p);
    assert_eq!(lab.server.counters().drop(DropReason::WrongKeyId), 1);
    // The next key id: the server answers with its own soft reset (its
    // message 0 under key 1) and acks ours.
    c.key_id = 1;
    let p = reset(&mut c);
    lab.server.handle_datagram(t, &mut lab.rng, c.addr, &p);
    let mut saw_reset = false;
    while let Some(tx) = lab.server.poll_transmit(t) {
        let Ok((h, plain)) = c.tc.unwrap(&tx.payload) else {
            continue;
        };
        let body = ControlBody::parse(h.opcode, &plain).unwrap();
        if h.opcode == Opcode::SoftResetV1 {
            assert_eq!((h.key_id, body.message_id), (1, Some(0)));
            assert!(body.acks.contains(&0));
            saw_reset = true;
        }
    }
    assert!(saw_reset);
    // Control packets under the old key id are stale now ...
    c.key_id = 0;
    let ack = c.wrap(Opcode::AckV1, &ControlBody::default());
    lab.server.handle_datagram(t, &mut lab.rng, c.addr, &ack);
    assert_eq!(lab.server.counters().drop(DropReason::WrongKeyId), 2);
    // ... but its data key still works until the new one is in place.
    c.send_data(b"\x45 old key");
    let d = c.out.pop_front().unwrap();
    lab.server.handle_datagram(t, &mut lab.rng, c.addr, &d);
    assert_eq!(lab.server.counters().data_rx, 1);
    assert_eq!(lab.server.counters().renegotiations, 0);
}

/// A CRL from the lab CA revoking the given certificates (DER).
fn crl_revoking(ca: &Ca, certs: &[&[u8]]) -> super::tls::Crl {
    let at = rcgen::date_time_ymd(2025, 6, 1);
    let revoked_certs = certs
        .iter()
        .map(|der| {
            let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
            rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(c.raw_serial()),
                revocation_time: at,
                reason_code: None,
                invalidity_date: None,
            }
        })
        .collect();
    let pem = rcgen::CertificateRevocationListParams {
        this_update: at,
        next_update: rcgen::date_time_ymd(2035, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&Issuer::from_params(&ca.params, &ca.key))
    .unwrap()
    .pem()
    .unwrap();
    super::tls::Crl::parse(pem.as_bytes()).unwrap()
}

#[test]
fn crl_refuses_the_revoked_and_a_reload_disconnects_only_them() {
    let mut lab = lab();
    let mut alice = Client::new(&lab, 4020, None, PEER_INFO);
    let mut bob = Client::new(&lab, 4021, None, PEER_INFO);
    let mut carol = Client::new(&lab, 4022, None, PEER_INFO);
    assert!(established(&lab.connect(&mut alice)).is_some());
    assert!(established(&lab.connect(&mut bob)).is_some());
    // Carol is on the list from the start: refused at the handshake.
    let crl = crl_revoking(&lab.ca, &[&carol.cert]);
    assert!(crl.revokes(&carol.cert) && !crl.revokes(&alice.cert));
    let (cert, key) = lab.server_cert.clone();
    let tls = super::tls::server_config_with_crl(&lab.ca.pem, &cert, &key, Some(&crl)).unwrap();
    assert_eq!(lab.server.reload_tls(lab.now, tls, Some(&crl)), 0);
    let ev = lab.run(
        &mut [&mut carol],
        Duration::from_secs(10),
        |_| false,
        |e, _| closed(e).is_some(),
    );
    assert_eq!(closed(&ev), Some(CloseReason::CertificateRevoked));
    assert_eq!(lab.server.counters().revoked_refused, 1);
    // Alice is added: she is told HALT and closed; Bob keeps going.
    let crl = crl_revoking(&lab.ca, &[&carol.cert, &alice.cert]);
    let tls = super::tls::server_config_with_crl(&lab.ca.pem, &cert, &key, Some(&crl)).unwrap();
    assert_eq!(lab.server.reload_tls(lab.now, tls, Some(&crl)), 1);
    let ev = lab.run(
        &mut [&mut alice, &mut bob],
        Duration::from_secs(2),
        |_| false,
        |_, c| c[0].texts.iter().any(|t| t == "HALT"),
    );
    assert!(
        ev.iter()
            .any(|(a, e)| *a == alice.addr && *e == Event::Closed(CloseReason::RevokedOnReload))
    );
    assert!(alice.texts.iter().any(|t| t == "HALT"));
    assert_eq!(lab.server.counters().revoked_disconnected, 1);
    bob.send_data(b"\x45 still here");
    let ev = lab.run(
        &mut [&mut bob],
        Duration::from_secs(1),
        |_| false,
        |e, _| !e.is_empty(),
    );
    assert_eq!(
        ev,
        vec![(bob.addr, Event::Packet(b"\x45 still here".to_vec()))]
    );
}

#[test]
fn crl_parses_pem_and_der_and_bounds_its_length() {
    let lab = lab();
    let c = Client::new(&lab, 4023, None, PEER_INFO);
    let crl = crl_revoking(&lab.ca, &[&c.cert]);
    assert_eq!(crl.len(), 1);
    assert!(super::tls::Crl::parse(b"not a crl").is_err());
    // 20,001 entries: over the limit.
    let at = rcgen::date_time_ymd(2025, 6, 1);
    let big = rcgen::CertificateRevocationListParams {
        this_update: at,
        next_update: rcgen::date_time_ymd(2035, 1, 1),
        crl_number: rcgen::SerialNumber::from(2u64),
        issuing_distribution_point: None,
        revoked_certs: (1..=20_001u64)
            .map(|i| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(i),
                revocation_time: at,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&Issuer::from_params(&lab.ca.params, &lab.ca.key))
    .unwrap();
    let err = super::tls::Crl::parse(big.der()).unwrap_err();
    assert!(err.to_string().contains("more than 20000"), "{err}");
}
