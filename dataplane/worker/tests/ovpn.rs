//! The OpenVPN data channel in the worker: `P_DATA_V2` from a client
//! opened and routed (inside, into a site-to-site tunnel, to another
//! client), inner packets toward a client sealed and sent to where it was
//! last seen, the control channel punted, renegotiation with two key
//! slots, and every drop counted by reason. The "client" is the same
//! `dataplane::ovpn` channel with the client's keys (its byte
//! compatibility with OpenVPN 2.6 is shown by the e2e test
//! `openvpn_client` and the KATs in `dataplane::ovpn`).

#![allow(
    clippy::cast_possible_truncation,
    reason = "test key material and packets are built with deliberate narrowing"
)]

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::{CGW_MAC, CONC, CONC_MAC, KERNEL_MAC, Side, TestIo, VPC_ROUTER_MAC, frame, pair};
use dataplane::crypto::EspAlgorithm;
use dataplane::ovpn::{
    DATA_V2_OVERHEAD, DataChannel, DataCipher, DataDrop, DataKeys, EKM_LEN, OCC_EXIT, OCC_MAGIC,
    OP_DATA_V2, PING, first_byte,
};
use fib::{ClientId, Target, TunnelId};
use netbuf::TestBuffer;
use worker::{Action, Command, Drop, Event, Ingress, OVPN_TUNNEL_MTU, Worker};

const PORT: u16 = 1194;
const CLIENT_A: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 2);
const CLIENT_B: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 3);
const PUBLIC_A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 7), 51_000);
const PUBLIC_B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 8), 40_000);
const VPC_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const SITE_HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);

fn keys(seed: u8) -> DataKeys {
    let mut ekm = [0u8; EKM_LEN];
    for (i, b) in ekm.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13) ^ seed;
    }
    DataKeys::from_ekm(DataCipher::Aes256Gcm, &ekm)
}

/// An inner IPv4/UDP packet with a valid header checksum.
fn inner(src: Ipv4Addr, dst: Ipv4Addr, payload: usize) -> Vec<u8> {
    common::udp_v4(src.octets(), dst.octets(), payload)
}

/// `payload` sealed by the client and framed as it reaches the outside
/// port from `from`.
fn from_client(ch: &mut DataChannel, payload: &[u8], from: SocketAddrV4) -> TestBuffer {
    let mut p = vec![0u8; DATA_V2_OVERHEAD];
    p.extend_from_slice(payload);
    ch.seal_in_place(&mut p).unwrap();
    udp_frame(&p, from)
}

fn udp_frame(payload: &[u8], from: SocketAddrV4) -> TestBuffer {
    let mut ip = common::udp_v4(from.ip().octets(), CONC.octets(), payload.len());
    ip[20..22].copy_from_slice(&from.port().to_be_bytes());
    ip[22..24].copy_from_slice(&PORT.to_be_bytes());
    ip[28..].copy_from_slice(payload);
    frame(CONC_MAC, CGW_MAC, 0x0800, &ip)
}

/// The concentrator of `common::pair` (tunnel 0 to the customer gateway,
/// the VPC inside) with the OpenVPN endpoint on `PORT`, clients A
/// (peer-id 5) and B (peer-id 6), and routes to them; returns the
/// clients' own channels.
fn endpoint() -> (Side, Side, DataChannel, DataChannel) {
    let (mut conc, cgw) = pair(EspAlgorithm::Aes128Gcm16, false);
    conc.send(Command::SetOvpnPort { port: Some(PORT) });
    let local = SocketAddrV4::new(CONC, PORT);
    for (peer, addr, public) in [(5, CLIENT_A, PUBLIC_A), (6, CLIENT_B, PUBLIC_B)] {
        let k = keys(peer as u8);
        conc.send(Command::AddClient(Box::new(worker::ovpn::OvpnClient::new(
            Box::new(k.server_channel(0, peer)),
            addr,
            public,
            local,
        ))));
    }
    conc.routes(&[
        ("203.0.113.0/24", Target::Tunnel(TunnelId(0))),
        ("198.51.100.0/24", Target::Inside),
        ("10.8.0.2/32", Target::Client(ClientId(5))),
        ("10.8.0.3/32", Target::Client(ClientId(6))),
        ("10.8.0.4/32", Target::Client(ClientId(7))),
    ]);
    assert!(
        conc.events()
            .iter()
            .all(|e| !matches!(e, Event::Failed { .. }))
    );
    let a = keys(5).client_channel(0, 5);
    let b = keys(6).client_channel(0, 6);
    (conc, cgw, a, b)
}

/// Checks the Ethernet/IPv4/UDP around a packet sent to a client and
/// opens it with the client's channel; returns the plaintext.
fn to_client(buf: &TestBuffer, ch: &mut DataChannel, to: SocketAddrV4) -> Vec<u8> {
    let f = buf.as_ref();
    assert_eq!(&f[0..6], &CGW_MAC, "to the outside gateway");
    assert_eq!(&f[6..12], &CONC_MAC);
    assert_eq!(&f[12..14], &[0x08, 0x00]);
    let ip = &f[14..];
    assert_eq!(ip[0], 0x45);
    assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
    assert_eq!(ip[9], 17);
    assert_eq!(common::inet_checksum(&ip[..20]), 0, "IPv4 header checksum");
    assert_eq!(&ip[12..16], &CONC.octets());
    assert_eq!(&ip[16..20], &to.ip().octets());
    let udp = &ip[20..];
    assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), PORT);
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), to.port());
    assert_eq!(usize::from(u16::from_be_bytes([udp[4], udp[5]])), udp.len());
    let mut p = udp[8..].to_vec();
    assert_eq!(p[0], first_byte(OP_DATA_V2, ch.key_id()));
    let r = ch.open_in_place(&mut p).unwrap();
    p[r].to_vec()
}

fn ovpn_drops(w: &Worker, r: DataDrop) -> u64 {
    w.stats().ovpn[r.index()]
}

#[test]
fn client_reaches_the_vpc_and_the_reply_goes_back_sealed() {
    let (mut conc, _, mut a, _) = endpoint();
    let up = inner(CLIENT_A, VPC_HOST, 100);
    let mut buf = from_client(&mut a, &up, PUBLIC_A);
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::ToInside);
    assert_eq!(&buf.as_ref()[0..6], &VPC_ROUTER_MAC);
    assert_eq!(&buf.as_ref()[14..], &up[..]);
    let c = conc.worker.ovpn_client(5).unwrap().counters();
    assert_eq!((c.packets_in, c.bytes_in), (1, up.len() as u64));

    let down = inner(VPC_HOST, CLIENT_A, 1400);
    let mut buf = frame(common::INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &down);
    assert_eq!(conc.worker.handle_inside(&mut buf), Action::ToOutside);
    assert_eq!(to_client(&buf, &mut a, PUBLIC_A), down);
    let s = conc.worker.stats();
    assert_eq!((s.ovpn_decap_packets, s.ovpn_encap_packets), (1, 1));
    assert_eq!(s.total_dropped(), 0);
}

#[test]
fn client_reaches_a_site_behind_the_site_to_site_tunnel_and_back() {
    // The seed scenario in memory: client → endpoint → ESP tunnel 0 →
    // customer gateway → its site, and the answer the whole way back.
    let (mut conc, mut cgw, mut a, _) = endpoint();
    let up = inner(CLIENT_A, SITE_HOST, 300);
    let mut buf = from_client(&mut a, &up, PUBLIC_A);
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::ToOutside);
    assert_eq!(buf.as_ref()[14 + 9], 50, "ESP toward the customer gateway");
    assert_eq!(cgw.worker.handle_outside(&mut buf), Action::ToInside);
    assert_eq!(&buf.as_ref()[14..], &up[..]);

    // The site answers; the customer gateway routes 10.8.0.0/16 into the tunnel.
    cgw.routes(&[("10.8.0.0/16", Target::Tunnel(TunnelId(0)))]);
    let down = inner(SITE_HOST, CLIENT_A, 300);
    let mut buf = frame(CGW_MAC, VPC_ROUTER_MAC, 0x0800, &down);
    assert_eq!(cgw.worker.handle_inside(&mut buf), Action::ToOutside);
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::ToOutside);
    assert_eq!(to_client(&buf, &mut a, PUBLIC_A), down);
}

#[test]
fn client_to_client_through_the_local_route() {
    let (mut conc, _, mut a, mut b) = endpoint();
    let p = inner(CLIENT_A, CLIENT_B, 64);
    let mut buf = from_client(&mut a, &p, PUBLIC_A);
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::ToOutside);
    assert_eq!(to_client(&buf, &mut b, PUBLIC_B), p);
    let back = inner(CLIENT_B, CLIENT_A, 64);
    let mut buf = from_client(&mut b, &back, PUBLIC_B);
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::ToOutside);
    assert_eq!(to_client(&buf, &mut a, PUBLIC_A), back);
}

#[test]
fn control_channel_goes_to_the_kernel() {
    let (mut conc, _, _, _) = endpoint();
    // P_CONTROL_HARD_RESET_CLIENT_V2 and P_CONTROL_V1 (any bytes after).
    for op in [7u8, 4, 5, 10] {
        let mut buf = udp_frame(&[first_byte(op, 0), 1, 2, 3, 4, 5, 6, 7, 8], PUBLIC_A);
        assert_eq!(conc.worker.handle_outside(&mut buf), Action::ToKernel);
        assert_eq!(&buf.as_ref()[0..6], &KERNEL_MAC);
    }
    // A datagram too short for the header is the control core's to judge too.
    let mut buf = udp_frame(&[first_byte(OP_DATA_V2, 0), 0], PUBLIC_A);
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::ToKernel);
    assert_eq!(conc.worker.stats().ovpn_control_punted, 5);
    assert_eq!(conc.worker.stats().punted, 5);
    // No endpoint port: P_DATA_V2 is ordinary UDP to us (the kernel's).
    conc.send(Command::SetOvpnPort { port: None });
    let mut a = keys(5).client_channel(0, 5);
    let mut buf = from_client(&mut a, &inner(CLIENT_A, VPC_HOST, 10), PUBLIC_A);
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::ToKernel);
    assert_eq!(conc.worker.stats().ovpn_decap_packets, 0);
}

#[test]
fn keepalive_and_exit_notify_are_consumed_not_dropped() {
    let (mut conc, _, mut a, _) = endpoint();
    let mut buf = from_client(&mut a, &PING, PUBLIC_A);
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::Drop);
    let mut exit = OCC_MAGIC.to_vec();
    exit.push(OCC_EXIT);
    let mut buf = from_client(&mut a, &exit, PUBLIC_A);
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::Drop);
    let s = conc.worker.stats();
    assert_eq!((s.ovpn_keepalives, s.total_dropped()), (2, 0));
    assert!(
        conc.events()
            .iter()
            .any(|e| matches!(e, Event::ClientExit { peer_id: 5 }))
    );
    assert_eq!(conc.worker.ovpn_client(5).unwrap().counters().keepalives, 2);
}

#[test]
fn every_drop_is_counted_by_reason() {
    let (mut conc, _, mut a, _) = endpoint();
    let up = inner(CLIENT_A, VPC_HOST, 20);
    let mut good = from_client(&mut a, &up, PUBLIC_A);
    let replay = good.duplicate();
    assert_eq!(conc.worker.handle_outside(&mut good), Action::ToInside);
    // Replay.
    let mut buf = replay;
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::Drop);
    assert_eq!(ovpn_drops(&conc.worker, DataDrop::Replay), 1);
    // A flipped ciphertext bit.
    let mut buf = from_client(&mut a, &up, PUBLIC_A);
    let n = buf.as_ref().len();
    buf.as_mut()[n - 1] ^= 1;
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::Drop);
    assert_eq!(ovpn_drops(&conc.worker, DataDrop::AuthFailed), 1);
    // A key id the client does not hold.
    let mut other = keys(5).client_channel(3, 5);
    let mut buf = from_client(&mut other, &up, PUBLIC_A);
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::Drop);
    assert_eq!(ovpn_drops(&conc.worker, DataDrop::UnknownKeyId), 1);
    // A peer-id nobody has (and one beyond the table).
    for peer in [9, 0x00ff_fffe] {
        let mut stranger = keys(9).client_channel(0, peer);
        let mut buf = from_client(&mut stranger, &up, PUBLIC_A);
        assert_eq!(conc.worker.handle_outside(&mut buf), Action::Drop);
    }
    assert_eq!(conc.worker.stats().dropped(Drop::OvpnUnknownPeer), 2);
    // Header and packet id, no tag.
    let mut buf = udp_frame(&[first_byte(OP_DATA_V2, 0), 0, 0, 5, 0, 0, 0, 9], PUBLIC_A);
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::Drop);
    assert_eq!(ovpn_drops(&conc.worker, DataDrop::TooShort), 1);
    // Another client's address as the inner source.
    let mut buf = from_client(&mut a, &inner(CLIENT_B, VPC_HOST, 20), PUBLIC_A);
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::Drop);
    assert_eq!(conc.worker.stats().dropped(Drop::OvpnSpoofedSource), 1);
    // A UDP length beyond the datagram.
    let mut buf = from_client(&mut a, &up, PUBLIC_A);
    buf.as_mut()[14 + 24..14 + 26].copy_from_slice(&2000u16.to_be_bytes());
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::Drop);
    assert_eq!(conc.worker.stats().dropped(Drop::Malformed), 1);
    // A bad outer IPv4 header checksum (the source would steer replies).
    let mut buf = from_client(&mut a, &up, PUBLIC_A);
    buf.as_mut()[14 + 10] ^= 0x40;
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::Drop);
    assert_eq!(conc.worker.stats().dropped(Drop::OvpnOuterBadChecksum), 1);
    // Routed to a client this worker does not hold.
    let mut buf = frame(
        common::INSIDE_MAC,
        VPC_ROUTER_MAC,
        0x0800,
        &inner(VPC_HOST, Ipv4Addr::new(10, 8, 0, 4), 20),
    );
    assert_eq!(conc.worker.handle_inside(&mut buf), Action::Drop);
    assert_eq!(conc.worker.stats().dropped(Drop::OvpnNoClient), 1);
    // Each data-channel reason also counts once as Drop::Ovpn.
    let s = conc.worker.stats();
    assert_eq!(s.dropped(Drop::Ovpn), s.ovpn.iter().sum::<u64>());
    assert_eq!(s.dropped(Drop::Ovpn), 4);
    // Nothing of that moved the client's address or counters.
    let c = conc.worker.ovpn_client(5).unwrap();
    assert_eq!(c.remote(), PUBLIC_A);
    assert_eq!(c.counters().packets_in, 1);
}

#[test]
fn the_client_floats_only_on_authenticated_packets() {
    let (mut conc, _, mut a, _) = endpoint();
    let moved = SocketAddrV4::new(Ipv4Addr::new(100, 64, 9, 9), 61_000);
    // A forgery from elsewhere does not move it.
    let mut buf = from_client(&mut a, &inner(CLIENT_A, VPC_HOST, 20), moved);
    let n = buf.as_ref().len();
    buf.as_mut()[n - 1] ^= 1;
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::Drop);
    assert_eq!(conc.worker.ovpn_client(5).unwrap().remote(), PUBLIC_A);
    // A genuine packet (NAT rebinding) does; replies follow.
    let mut buf = from_client(&mut a, &inner(CLIENT_A, VPC_HOST, 20), moved);
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::ToInside);
    assert_eq!(conc.worker.ovpn_client(5).unwrap().remote(), moved);
    let down = inner(VPC_HOST, CLIENT_A, 20);
    let mut buf = frame(common::INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &down);
    assert_eq!(conc.worker.handle_inside(&mut buf), Action::ToOutside);
    assert_eq!(to_client(&buf, &mut a, moved), down);
}

#[test]
fn renegotiation_keeps_both_keys_until_the_old_one_retires() {
    let (mut conc, _, mut a0, _) = endpoint();
    let k1 = keys(55);
    let mut a1 = k1.client_channel(1, 5);
    conc.send(Command::SetClientKey {
        peer_id: 5,
        key: Box::new(k1.server_channel(1, 5)),
    });
    assert_eq!(
        conc.worker.ovpn_client(5).unwrap().key_ids(),
        [Some(1), Some(0)]
    );
    // Packets on both keys, interleaved (in flight across the switch): none lost.
    for i in 0..10 {
        let ch = if i % 2 == 0 { &mut a0 } else { &mut a1 };
        let mut buf = from_client(ch, &inner(CLIENT_A, VPC_HOST, 40), PUBLIC_A);
        assert_eq!(
            conc.worker.handle_outside(&mut buf),
            Action::ToInside,
            "{i}"
        );
    }
    // The endpoint seals with the new key at once.
    let down = inner(VPC_HOST, CLIENT_A, 40);
    let mut buf = frame(common::INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &down);
    assert_eq!(conc.worker.handle_inside(&mut buf), Action::ToOutside);
    assert_eq!(to_client(&buf, &mut a1, PUBLIC_A), down);
    // End of the transition window.
    conc.events();
    conc.send(Command::RetireClientKey {
        peer_id: 5,
        key_id: 0,
    });
    let ev = conc.events();
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::RetiredClientKey(k) if k.key_id() == 0))
    );
    assert!(ev.iter().any(|e| matches!(e, Event::Done { .. })));
    let mut buf = from_client(&mut a0, &inner(CLIENT_A, VPC_HOST, 40), PUBLIC_A);
    assert_eq!(conc.worker.handle_outside(&mut buf), Action::Drop);
    assert_eq!(ovpn_drops(&conc.worker, DataDrop::UnknownKeyId), 1);
    // The next renegotiation (key id 2) pushes key 1 to the previous slot.
    let k2 = keys(77);
    conc.send(Command::SetClientKey {
        peer_id: 5,
        key: Box::new(k2.server_channel(2, 5)),
    });
    assert_eq!(
        conc.worker.ovpn_client(5).unwrap().key_ids(),
        [Some(2), Some(1)]
    );
    assert_eq!(conc.worker.stats().total_dropped(), 1);
}

#[test]
fn client_commands_are_acked_or_refused_with_what_they_carried() {
    let (mut conc, _, _, _) = endpoint();
    conc.events();
    let k = keys(1);
    let local = SocketAddrV4::new(CONC, PORT);
    // Beyond the client table (the worker's capacity, 1024).
    conc.send(Command::AddClient(Box::new(worker::ovpn::OvpnClient::new(
        Box::new(k.server_channel(0, 5000)),
        CLIENT_A,
        PUBLIC_A,
        local,
    ))));
    let ev = conc.events();
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::RetiredClient(c) if c.peer_id() == 5000))
    );
    assert!(ev.iter().any(|e| matches!(e, Event::Failed { .. })));
    // A key for another peer-id, a key for nobody.
    for (peer, key_peer) in [(5, 6), (9, 9)] {
        conc.send(Command::SetClientKey {
            peer_id: peer,
            key: Box::new(k.server_channel(1, key_peer)),
        });
        let ev = conc.events();
        assert!(ev.iter().any(|e| matches!(e, Event::RetiredClientKey(_))));
        assert!(ev.iter().any(|e| matches!(e, Event::Failed { .. })));
    }
    // Removal hands the client back with its counters.
    assert_eq!(conc.worker.ovpn_clients(), 2);
    conc.send(Command::RemoveClient { peer_id: 6 });
    let ev = conc.events();
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::RetiredClient(c) if c.peer_id() == 6))
    );
    assert_eq!(conc.worker.ovpn_clients(), 1);
    conc.send(Command::RemoveClient { peer_id: 6 });
    assert!(
        conc.events()
            .iter()
            .any(|e| matches!(e, Event::Failed { .. }))
    );
}

#[test]
fn tcp_syn_to_and_from_a_client_is_clamped() {
    let (mut conc, _, mut a, _) = endpoint();
    // An IPv4 TCP SYN with MSS 1460.
    let mut syn = vec![0u8; 44];
    syn[0] = 0x45;
    syn[2..4].copy_from_slice(&44u16.to_be_bytes());
    syn[8] = 64;
    syn[9] = 6;
    syn[12..16].copy_from_slice(&VPC_HOST.octets());
    syn[16..20].copy_from_slice(&CLIENT_A.octets());
    syn[32] = 6 << 4;
    syn[33] = 0x02;
    syn[40..44].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    common::fix_v4_checksum(&mut syn);
    let mut buf = frame(common::INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &syn);
    assert_eq!(conc.worker.handle_inside(&mut buf), Action::ToOutside);
    let plain = to_client(&buf, &mut a, PUBLIC_A);
    let mss = u16::from_be_bytes([plain[42], plain[43]]);
    assert_eq!(mss, OVPN_TUNNEL_MTU - 40);
    assert_eq!(conc.worker.stats().mss_clamped, 1);
}

#[test]
fn a_burst_of_client_packets_through_the_burst_loop() {
    let (mut conc, _, mut a, mut b) = endpoint();
    let mut bufs = Vec::new();
    for i in 0..20 {
        bufs.push(if i % 3 == 0 {
            from_client(&mut b, &inner(CLIENT_B, VPC_HOST, 64 + i), PUBLIC_B)
        } else {
            from_client(&mut a, &inner(CLIENT_A, CLIENT_B, 64 + i), PUBLIC_A)
        });
    }
    let mut io = TestIo::default();
    conc.worker.begin_burst(bufs.len());
    conc.worker.handle_burst_io(Ingress::Outside, bufs, &mut io);
    assert_eq!(io.sent.len(), 20);
    for (i, (action, buf)) in io.sent.iter().enumerate() {
        if i % 3 == 0 {
            assert_eq!(*action, Action::ToInside);
        } else {
            assert_eq!(*action, Action::ToOutside);
            let p = to_client(buf, &mut b, PUBLIC_B);
            assert_eq!(p, inner(CLIENT_A, CLIENT_B, 64 + i));
        }
    }
    assert_eq!(conc.worker.stats().total_dropped(), 0);
}
