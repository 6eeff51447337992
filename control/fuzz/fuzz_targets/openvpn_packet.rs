//! OpenVPN packets from untrusted bytes: the codec, key-method parser and
//! the server never panic, and control bodies that parse re-emit to bytes
//! that parse to the same value.
//!
//! The first input byte picks the path:
//!
//! * even: the rest goes to every decoder (control header and body, data
//!   header, TCP deframer, key method 2, peer info, static key file) and
//!   to tls-crypt unwrapping;
//! * odd: the rest is a sequence of datagrams (`[len][flags][bytes]`) for
//!   a `Server`; flag bit 0 wraps the bytes with the right tls-crypt key
//!   (first byte as opcode, the rest as the body) so they pass
//!   authentication and reach the sessions, bits 1-2 pick one of four
//!   client addresses, bit 3 advances time by 10 s first.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use control::ike::Rng;
use control::openvpn::key_method::{ClientKeyMethod2, PeerInfo};
use control::openvpn::push::PushConfig;
use control::openvpn::server::{Server, ServerConfig};
use control::openvpn::session::SessionConfig;
use control::openvpn::tls_crypt::{Role, StaticKey, TlsCrypt};
use control::openvpn::wire::{
    ControlBody, ControlHeader, DataHeader, Opcode, SessionId, TcpDeframer,
};
use libfuzzer_sys::fuzz_target;

struct CountingRng(u8);

impl Rng for CountingRng {
    fn fill(&mut self, dst: &mut [u8]) {
        for b in dst {
            self.0 = self.0.wrapping_mul(31).wrapping_add(7);
            *b = self.0;
        }
    }
}

fn key() -> StaticKey {
    let mut b = [0u8; 256];
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(13);
    }
    StaticKey::from_bytes(b)
}

/// The TLS configuration, built once (key generation is slow).
fn tls() -> Arc<rustls::ServerConfig> {
    static TLS: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    TLS.get_or_init(|| {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["vpn.example".to_owned()])
            .expect("params")
            .signed_by(&key, &rcgen::Issuer::from_params(&ca, &ca_key))
            .expect("leaf");
        control::openvpn::tls::server_config(&ca_cert.pem(), &leaf.pem(), &key.serialize_pem())
            .expect("tls")
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel & 1 == 0 {
        let _ = ControlHeader::parse(rest);
        for op in [Opcode::ControlV1, Opcode::AckV1] {
            if let Ok(b) = ControlBody::parse(op, rest) {
                let mut out = Vec::new();
                b.emit(&mut out);
                assert_eq!(ControlBody::parse(op, &out).expect("re-parses"), b);
            }
        }
        let _ = DataHeader::parse(rest);
        let _ = TcpDeframer::new().feed(rest, |_| ());
        let _ = ClientKeyMethod2::parse(rest);
        let text = String::from_utf8_lossy(rest);
        let _ = PeerInfo::parse(&text);
        let _ = StaticKey::parse(&text);
        let _ = TlsCrypt::new(&key(), Role::Server).unwrap(rest);
        return;
    }
    let k = key();
    let client = TlsCrypt::new(&k, Role::Client);
    let mut server = Server::new(ServerConfig {
        session: SessionConfig {
            tls: tls(),
            tls_crypt: Arc::new(TlsCrypt::new(&k, Role::Server)),
            push: PushConfig {
                pool: "10.8.0.0/29".parse().expect("pool"),
                ..PushConfig::default()
            },
            tcp: false,
            handshake_timeout: Duration::from_secs(60),
            initial_retransmit: Duration::from_secs(1),
            max_retransmit: Duration::from_secs(8),
            net_time: 1,
            // Short, so the 10 s time steps reach server-initiated soft resets.
            reneg: Some(Duration::from_secs(30)),
            transition_window: Duration::from_secs(60),
            session_timeout: Duration::from_secs(24 * 3600),
        },
        max_sessions: 3,
    });
    let mut rng = CountingRng(sel);
    let mut now = Instant::now();
    let mut packet_id = 0u32;
    let mut cookies: [Option<SessionId>; 4] = [None; 4];
    let mut r = rest;
    while let [len, flags, tail @ ..] = r {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        r = next;
        if flags & 8 != 0 {
            now += Duration::from_secs(10);
        }
        let port = 1000 + u16::from((flags >> 1) & 3);
        let src = SocketAddr::from(([198, 51, 100, 1], port));
        let datagram = match (flags & 1, bytes.split_first()) {
            // Echo the server's cookie for this port (the third packet of
            // the handshake) around a fuzzed payload: reaches a session.
            (1, Some((&op, body)))
                if flags & 16 != 0 && cookies[usize::from(port - 1000)].is_some() =>
            {
                packet_id = packet_id.wrapping_add(1);
                let echo = ControlBody {
                    acks: [0].into_iter().collect(),
                    remote_session_id: cookies[usize::from(port - 1000)],
                    message_id: (op & 4 == 0).then_some(1),
                    payload: body,
                };
                let mut plain = Vec::new();
                echo.emit(&mut plain);
                client.wrap(
                    &ControlHeader {
                        opcode: if op & 4 == 0 {
                            Opcode::ControlV1
                        } else {
                            Opcode::AckV1
                        },
                        key_id: 0,
                        session_id: SessionId([port as u8; 8]),
                        packet_id,
                        net_time: 1,
                    },
                    &plain,
                )
            }
            (1, Some((&op, body))) => {
                packet_id = packet_id.wrapping_add(1);
                client.wrap(
                    &ControlHeader {
                        opcode: Opcode::from(op >> 3),
                        key_id: op & 7,
                        session_id: SessionId([port as u8; 8]),
                        packet_id,
                        net_time: 1,
                    },
                    body,
                )
            }
            _ => bytes.to_vec(),
        };
        server.handle_datagram(now, &mut rng, src, &datagram);
        server.handle_timeout(now);
        while let Some(t) = server.poll_transmit(now) {
            // Remember the cookie the server gave each port.
            if let Ok((h, _)) = client.unwrap(&t.payload)
                && h.opcode == Opcode::HardResetServerV2
                && let Some(c) = cookies.get_mut(usize::from(t.dst.port().wrapping_sub(1000)))
            {
                *c = Some(h.session_id);
            }
        }
        while server.poll_event().is_some() {}
    }
});
