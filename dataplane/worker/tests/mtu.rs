//! Tunnel MTU handling in the pipeline (spec § 14.2, § 14.3, § 25.3):
//! MSS clamping both ways, pre-fragmentation before encryption, ICMP
//! "fragmentation needed" / "packet too big" back to the source, the
//! clear-DF option, and reassembly of inner fragments after decap. Every
//! test checks the bytes that come out, not only the counters.

#![allow(
    clippy::cast_possible_truncation,
    reason = "test packets are built with deliberate narrowing"
)]

mod common;

use std::net::Ipv6Addr;

use common::*;
use dataplane::crypto::{EspAlgorithm, Integrity};
use dataplane::esp::sa::{DfPolicy, Direction};
use dataplane::esp::{DropReason, OutboundSa};
use fib::{Target, TunnelId};
use netbuf::TestBuffer;
use worker::{Action, Command, MtuOptions};

const VPC_HOST: [u8; 4] = [198, 51, 100, 2];
const REMOTE_HOST: [u8; 4] = [203, 0, 113, 5];
const INSIDE_ADDR: [u8; 4] = [198, 51, 100, 1];

/// A TCP SYN (flags 0x02) or SYN-ACK (0x12) with an MSS option, IPv4.
fn syn_v4(src: [u8; 4], dst: [u8; 4], mss: u16, flags: u8) -> Vec<u8> {
    let mut p = vec![0u8; 20 + 24];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&44u16.to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    fix_v4_checksum(&mut p);
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&443u16.to_be_bytes());
    t[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    t[12] = 6 << 4; // 24-byte header
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
    let c = tcp_checksum_v4(&p);
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

/// The TCP checksum of an IPv4 packet computed with the checksum field
/// zeroed: equal to the field when the segment is intact.
fn tcp_checksum_v4(p: &[u8]) -> u16 {
    let hl = usize::from(p[0] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let mut seg = p[hl..total].to_vec();
    seg[16] = 0;
    seg[17] = 0;
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&p[12..20]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&((total - hl) as u16).to_be_bytes());
    pseudo.extend_from_slice(&seg);
    inet_checksum(&pseudo)
}

fn mss_of(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[20 + 22], p[20 + 23]])
}

/// conc's outside → cgw, or cgw → conc: one ESP frame through `to`.
fn deliver(to: &mut Side, b: &mut TestBuffer) -> Action {
    to.worker.handle_outside(b)
}

/// A UDP packet with DF as given, of `total` bytes.
fn udp_sized(src: [u8; 4], dst: [u8; 4], total: usize, df: bool) -> Vec<u8> {
    let mut p = udp_v4(src, dst, total - 28);
    p[6] = if df { 0x40 } else { 0 };
    p[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
    fix_v4_checksum(&mut p);
    p
}

/// The receiving side's inside network takes 9000-byte packets, so a
/// reassembled datagram leaves whole (see
/// `reassembled_datagrams_above_the_inside_mtu_are_fragmented_again`).
fn jumbo_inside(side: &mut Side) {
    side.send(Command::SetMtuOptions(Box::new(MtuOptions {
        inside_mtu: 9000,
        ..MtuOptions::default()
    })));
}

#[test]
fn syn_mss_is_clamped_in_both_directions_to_the_tunnel_mss() {
    // (algorithm, NAT-T, MSS from the spec's table § 14.3)
    let cases = [
        (EspAlgorithm::Aes128Gcm16, false, 1406),
        (EspAlgorithm::Aes256Gcm16, true, 1398),
        (
            EspAlgorithm::Aes256Cbc(Integrity::HmacSha512_256),
            true,
            1366,
        ),
    ];
    for (alg, nat_t, want) in cases {
        let (mut conc, mut cgw) = pair(alg, nat_t);
        // cgw does not clamp, so what reaches conc is the peer's 1460.
        cgw.send(Command::SetMtuOptions(Box::new(MtuOptions {
            mss_clamp: false,
            ..MtuOptions::default()
        })));
        // Outbound: VPC host's SYN with MSS 1460.
        let syn = syn_v4(VPC_HOST, REMOTE_HOST, 1460, 0x02);
        let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &syn);
        assert_eq!(conc.worker.handle_inside(&mut b), Action::ToOutside);
        assert_eq!(deliver(&mut cgw, &mut b), Action::ToInside);
        let got = &b.as_ref()[14..];
        assert_eq!(mss_of(got), want, "{alg:?} nat_t={nat_t}");
        assert_eq!(
            u16::from_be_bytes([got[36], got[37]]),
            tcp_checksum_v4(got),
            "TCP checksum updated"
        );
        // Only the MSS bytes and the checksum changed.
        let mut expect = syn.clone();
        expect[42..44].copy_from_slice(&want.to_be_bytes());
        expect[36..38].copy_from_slice(&got[36..38]);
        assert_eq!(got, &expect[..]);
        assert_eq!(conc.worker.stats().mss_clamped, 1);

        // Inbound: the remote's SYN-ACK arrives with 1460, leaves with the MSS.
        let synack = syn_v4(REMOTE_HOST, VPC_HOST, 1460, 0x12);
        let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &synack);
        assert_eq!(cgw.worker.handle_inside(&mut b), Action::ToOutside);
        assert_eq!(deliver(&mut conc, &mut b), Action::ToInside);
        let got = &b.as_ref()[14..];
        assert_eq!(mss_of(got), want);
        assert_eq!(u16::from_be_bytes([got[36], got[37]]), tcp_checksum_v4(got));
        assert_eq!(conc.worker.stats().mss_clamped, 2);

        // A small MSS and a non-SYN are left alone.
        let small = syn_v4(VPC_HOST, REMOTE_HOST, 536, 0x02);
        let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &small);
        assert_eq!(conc.worker.handle_inside(&mut b), Action::ToOutside);
        assert_eq!(deliver(&mut cgw, &mut b), Action::ToInside);
        assert_eq!(&b.as_ref()[14..], &small[..]);
        let ack = syn_v4(VPC_HOST, REMOTE_HOST, 1460, 0x10);
        let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &ack);
        assert_eq!(conc.worker.handle_inside(&mut b), Action::ToOutside);
        assert_eq!(deliver(&mut cgw, &mut b), Action::ToInside);
        assert_eq!(&b.as_ref()[14..], &ack[..]);
        assert_eq!(conc.worker.stats().mss_clamped, 2);
    }
}

#[test]
fn oversized_packet_is_fragmented_before_encryption_and_reassembled_by_the_peer() {
    for alg in [
        EspAlgorithm::Aes128Gcm16,
        EspAlgorithm::Aes128Cbc(Integrity::HmacSha256_128),
    ] {
        let (mut conc, mut cgw) = pair(alg, true);
        jumbo_inside(&mut cgw);
        let inner = udp_sized(VPC_HOST, REMOTE_HOST, 1900, false);
        let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
        let mut io = TestIo::with_pool(8);
        assert_eq!(
            conc.worker.handle_inside_io(&mut b, &mut io),
            Action::ToOutside
        );
        assert_eq!(io.sent.len(), 1, "one extra fragment");
        let (action, mut second) = io.sent.pop().unwrap();
        assert_eq!(action, Action::ToOutside);
        // Both are ESP-in-UDP frames to the gateway, each within 1500 bytes
        // of IP.
        for f in [&b, &second] {
            assert_eq!(&f.as_ref()[0..12], &[CGW_MAC, CONC_MAC].concat()[..]);
            assert_eq!(f.as_ref()[14 + 9], 17);
            assert!(f.len() - 14 <= 1500, "outer {}", f.len() - 14);
        }
        let s = conc.worker.stats();
        assert_eq!((s.fragmented, s.fragments_out, s.encap_packets), (1, 1, 2));
        // The customer gateway holds the first, completes with the second
        // (delivered in reverse order here) and forwards the original bytes.
        assert_eq!(deliver(&mut cgw, &mut second), Action::Drop);
        assert_eq!(cgw.worker.stats().fragments_held, 1);
        assert_eq!(cgw.worker.stats().total_dropped(), 0);
        assert_eq!(cgw.worker.reassembler().in_progress(), 1);
        assert_eq!(deliver(&mut cgw, &mut b), Action::ToInside);
        assert_eq!(&b.as_ref()[14..], &inner[..], "{alg:?}: reassembled intact");
        assert_eq!(cgw.worker.stats().reassembled, 1);
        assert_eq!(cgw.worker.reassembler().in_progress(), 0);
    }
}

#[test]
fn fragments_inside_the_tunnel_are_checked_byte_for_byte() {
    // Decrypt conc's output at cgw without its reassembler's help: look at
    // the fragments themselves through a cgw that forwards them as they
    // come (each is routed as a fragment only after reassembly, so decap
    // them with a raw SA instead).
    let alg = EspAlgorithm::Aes128Gcm16;
    let (mut conc, _) = pair(alg, false);
    let mut raw_in = dataplane::esp::InboundSa::new(
        &sa_config(0x1001, alg, Direction::Inbound, CGW, CONC, false),
        0,
    )
    .unwrap();
    let inner = udp_sized(VPC_HOST, REMOTE_HOST, 1600, false);
    let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
    // The runtime's way: a pool closure and a tx closure.
    let mut tx = Vec::new();
    let mut io = worker::FnIo(|| Some(TestBuffer::new()), |a, b| tx.push((a, b)));
    assert_eq!(
        conc.worker.handle_inside_io(&mut b, &mut io),
        Action::ToOutside
    );
    let (action, mut second) = tx.pop().unwrap();
    assert_eq!(action, Action::ToOutside);
    assert!(tx.is_empty());
    for f in [&mut b, &mut second] {
        netbuf::TrimFromStart::trim_from_start(f, 14).unwrap();
        dataplane::esp::decap(&mut raw_in, f, 20).unwrap();
    }
    let (f1, f2) = (b.as_ref(), second.as_ref());
    // First fragment: 1446-byte tunnel MTU → 20 + 1424 data (multiple of 8).
    assert_eq!(f1.len(), 1444);
    assert_eq!(u16::from_be_bytes([f1[2], f1[3]]), 1444);
    assert_eq!(u16::from_be_bytes([f1[6], f1[7]]), 0x2000, "MF, offset 0");
    assert_eq!(&f1[4..6], &inner[4..6], "same identification");
    assert_eq!(inet_checksum(&f1[..20]), 0);
    assert_eq!(&f1[20..], &inner[20..1444]);
    // Second: the rest at offset 1424 / 8 = 178.
    assert_eq!(f2.len(), 20 + 1600 - 1444);
    assert_eq!(u16::from_be_bytes([f2[6], f2[7]]), 178);
    assert_eq!(inet_checksum(&f2[..20]), 0);
    assert_eq!(&f2[20..], &inner[1444..]);
}

#[test]
fn df_set_too_big_gets_icmp_fragmentation_needed_through_the_inside_port() {
    let (mut conc, _) = pair(EspAlgorithm::Aes128Gcm16, false);
    let inner = udp_sized(VPC_HOST, REMOTE_HOST, 1500, true);
    let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
    let mut io = TestIo::with_pool(8);
    assert_eq!(conc.worker.handle_inside_io(&mut b, &mut io), Action::Drop);
    assert_eq!(conc.worker.stats().esp.get(DropReason::TooBig), 1);
    assert_eq!(conc.worker.stats().icmp_sent, 1);
    assert_eq!(conc.worker.stats().encap_packets, 0);
    let (action, icmp) = io.sent.pop().unwrap();
    assert_eq!(action, Action::ToInside);
    let f = icmp.as_ref();
    assert_eq!(&f[0..6], &VPC_ROUTER_MAC, "back to the VPC router");
    assert_eq!(&f[6..12], &INSIDE_MAC);
    assert_eq!(&f[12..14], &[0x08, 0x00]);
    let ip = &f[14..];
    assert_eq!(ip[9], 1, "ICMP");
    assert_eq!(&ip[12..16], &INSIDE_ADDR, "from our inside address");
    assert_eq!(&ip[16..20], &VPC_HOST, "to the source");
    assert_eq!(inet_checksum(&ip[..20]), 0);
    let icmp = &ip[20..];
    assert_eq!(
        (icmp[0], icmp[1]),
        (3, 4),
        "destination unreachable, frag needed"
    );
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1446, "next-hop MTU");
    assert_eq!(inet_checksum(icmp), 0);
    assert_eq!(&icmp[8..36], &inner[..28], "quotes the header + 8 bytes");
    // Without a pool the packet is dropped just the same, no ICMP.
    let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
    assert_eq!(conc.worker.handle_inside(&mut b), Action::Drop);
    assert_eq!(conc.worker.stats().esp.get(DropReason::TooBig), 2);
    assert_eq!(conc.worker.stats().icmp_sent, 1);
    // A packet of exactly the MTU passes.
    let fits = udp_sized(VPC_HOST, REMOTE_HOST, 1446, true);
    let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &fits);
    assert_eq!(
        conc.worker.handle_inside_io(&mut b, &mut io),
        Action::ToOutside
    );
    assert!(io.sent.is_empty());
}

#[test]
fn icmp_errors_are_rate_limited_on_the_worker_clock() {
    let (mut conc, _) = pair(EspAlgorithm::Aes128Gcm16, false);
    conc.send(Command::SetMtuOptions(Box::new(MtuOptions {
        icmp_per_sec: 10,
        icmp_burst: 2,
        ..MtuOptions::default()
    })));
    let inner = udp_sized(VPC_HOST, REMOTE_HOST, 1500, true);
    let mut io = TestIo::with_pool(64);
    let send = |conc: &mut Side, io: &mut TestIo| {
        let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
        assert_eq!(conc.worker.handle_inside_io(&mut b, io), Action::Drop);
    };
    for _ in 0..5 {
        send(&mut conc, &mut io);
    }
    assert_eq!(io.sent.len(), 2, "burst of 2");
    assert_eq!(conc.worker.stats().icmp_suppressed, 3);
    conc.worker.handle_time_ms(100); // 10/s → one more token
    send(&mut conc, &mut io);
    send(&mut conc, &mut io);
    assert_eq!(io.sent.len(), 3);
    assert_eq!(conc.worker.stats().esp.get(DropReason::TooBig), 7);
}

#[test]
fn clear_df_option_fragments_df_packets_and_clears_df() {
    let alg = EspAlgorithm::Aes256Gcm16;
    let (mut conc, mut cgw) = pair(alg, false);
    jumbo_inside(&mut cgw);
    let mut cfg = sa_config(0x1001, alg, Direction::Outbound, CONC, CGW, false);
    cfg.df = DfPolicy::Clear;
    conc.send(Command::SetOutbound {
        tunnel: TunnelId(0),
        sa: Box::new(OutboundSa::new(&cfg, 0).unwrap()),
    });
    let _ = conc.events();
    // A DF packet that fits: DF cleared inside and outside.
    let small = udp_sized(VPC_HOST, REMOTE_HOST, 400, true);
    let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &small);
    let mut io = TestIo::with_pool(8);
    assert_eq!(
        conc.worker.handle_inside_io(&mut b, &mut io),
        Action::ToOutside
    );
    assert_eq!(b.as_ref()[14 + 6] & 0x40, 0, "outer DF clear");
    assert_eq!(deliver(&mut cgw, &mut b), Action::ToInside);
    let got = &b.as_ref()[14..];
    let mut expect = small.clone();
    expect[6] = 0;
    fix_v4_checksum(&mut expect);
    assert_eq!(got, &expect[..], "inner DF cleared, checksum fixed");
    // A DF packet above the MTU: fragmented instead of an ICMP error.
    let big = udp_sized(VPC_HOST, REMOTE_HOST, 1800, true);
    let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &big);
    assert_eq!(
        conc.worker.handle_inside_io(&mut b, &mut io),
        Action::ToOutside
    );
    assert_eq!(io.sent.len(), 1);
    let mut second = io.sent.pop().unwrap().1;
    assert_eq!(deliver(&mut cgw, &mut b), Action::Drop, "held");
    assert_eq!(deliver(&mut cgw, &mut second), Action::ToInside);
    let mut expect = big.clone();
    expect[6] = 0;
    fix_v4_checksum(&mut expect);
    assert_eq!(&second.as_ref()[14..], &expect[..]);
    let s = conc.worker.stats();
    assert_eq!((s.df_cleared, s.fragmented, s.icmp_sent), (2, 1, 0));
    assert_eq!(s.esp.get(DropReason::TooBig), 0);
}

fn udp_v6(src: Ipv6Addr, dst: Ipv6Addr, total: usize) -> Vec<u8> {
    let mut p = vec![0u8; total];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..42].copy_from_slice(&4000u16.to_be_bytes());
    p[42..44].copy_from_slice(&5000u16.to_be_bytes());
    p[44..46].copy_from_slice(&((total - 40) as u16).to_be_bytes());
    for (i, b) in p[48..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

#[test]
fn ipv6_too_big_gets_packet_too_big_and_is_never_fragmented() {
    let (mut conc, _) = pair(EspAlgorithm::Aes128Gcm16, false);
    conc.routes(&[
        ("2001:db8:2::/48", Target::Tunnel(TunnelId(0))),
        ("2001:db8:1::/48", Target::Inside),
    ]);
    let me: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
    conc.send(Command::SetMtuOptions(Box::new(MtuOptions {
        icmp_src_v6: Some(me),
        ..MtuOptions::default()
    })));
    let (src, dst): (Ipv6Addr, Ipv6Addr) = (
        "2001:db8:1::2".parse().unwrap(),
        "2001:db8:2::5".parse().unwrap(),
    );
    let inner = udp_v6(src, dst, 1500);
    let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x86dd, &inner);
    let mut io = TestIo::with_pool(8);
    assert_eq!(conc.worker.handle_inside_io(&mut b, &mut io), Action::Drop);
    assert_eq!(conc.worker.stats().esp.get(DropReason::TooBig), 1);
    assert_eq!(conc.worker.stats().fragmented, 0);
    let (action, icmp) = io.sent.pop().unwrap();
    assert_eq!(action, Action::ToInside);
    let f = icmp.as_ref();
    assert_eq!(&f[0..6], &VPC_ROUTER_MAC);
    assert_eq!(&f[12..14], &[0x86, 0xdd]);
    let ip = &f[14..];
    assert_eq!(ip[6], 58, "ICMPv6");
    assert_eq!(&ip[8..24], &me.octets());
    assert_eq!(&ip[24..40], &src.octets());
    let icmp = &ip[40..];
    assert_eq!((icmp[0], icmp[1]), (2, 0), "packet too big");
    assert_eq!(
        u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
        1446
    );
    // Checksum over the pseudo-header.
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[8..40]);
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(icmp);
    assert_eq!(inet_checksum(&pseudo), 0);
    assert_eq!(&icmp[8..48], &inner[..40], "quotes the invoking packet");
}

#[test]
fn incomplete_datagrams_time_out_on_the_worker_clock() {
    let (mut conc, mut cgw) = pair(EspAlgorithm::Aes128Gcm16, false);
    let inner = udp_sized(VPC_HOST, REMOTE_HOST, 1700, false);
    let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
    let mut io = TestIo::with_pool(8);
    cgw.worker.handle_time_ms(1_000);
    assert_eq!(
        conc.worker.handle_inside_io(&mut b, &mut io),
        Action::ToOutside
    );
    // Only the first fragment arrives.
    assert_eq!(deliver(&mut cgw, &mut b), Action::Drop);
    assert_eq!(cgw.worker.reassembler().in_progress(), 1);
    cgw.worker.handle_time_ms(30_999);
    assert_eq!(cgw.worker.reassembler().in_progress(), 1, "not yet");
    cgw.worker.handle_time_ms(31_000);
    assert_eq!(cgw.worker.reassembler().in_progress(), 0);
    assert_eq!(cgw.worker.stats().esp.get(DropReason::ReassemblyTimeout), 1);
    // The late second fragment starts a new datagram that times out too
    // (driven by handle_timeout's seconds as well).
    let mut second = io.sent.pop().unwrap().1;
    assert_eq!(deliver(&mut cgw, &mut second), Action::Drop);
    cgw.worker.handle_timeout(62);
    assert_eq!(cgw.worker.stats().esp.get(DropReason::ReassemblyTimeout), 2);
}

#[test]
fn pool_exhaustion_drops_the_packet_and_counts_it() {
    let (mut conc, _) = pair(EspAlgorithm::Aes128Gcm16, false);
    let inner = udp_sized(VPC_HOST, REMOTE_HOST, 1900, false);
    let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
    let mut io = TestIo::with_pool(0);
    assert_eq!(conc.worker.handle_inside_io(&mut b, &mut io), Action::Drop);
    assert_eq!(conc.worker.stats().esp.get(DropReason::FragmentFailed), 1);
    assert!(io.sent.is_empty());
    assert_eq!(conc.worker.stats().encap_packets, 0);
}

#[test]
fn icmp_goes_back_to_the_kernel_or_through_the_source_tunnel() {
    let (mut conc, mut cgw) = pair(EspAlgorithm::Aes128Gcm16, false);
    // The kernel (BGP on the tunnel's inside address) sends too big with DF.
    let mut p = udp_sized([169, 254, 21, 1], REMOTE_HOST, 1500, true);
    p[12..16].copy_from_slice(&[169, 254, 21, 1]);
    fix_v4_checksum(&mut p);
    let mut b = frame(CONC_MAC, KERNEL_MAC, 0x0800, &p);
    let mut io = TestIo::with_pool(4);
    assert_eq!(conc.worker.handle_kernel_io(&mut b, &mut io), Action::Drop);
    let (action, icmp) = io.sent.pop().unwrap();
    assert_eq!(action, Action::ToKernel);
    assert_eq!(&icmp.as_ref()[0..6], &KERNEL_MAC);
    assert_eq!(&icmp.as_ref()[14 + 16..14 + 20], &[169, 254, 21, 1]);
    assert_eq!((icmp.as_ref()[34], icmp.as_ref()[35]), (3, 4));

    // Transit: a packet from the remote site through tunnel 0 toward a
    // second tunnel with a smaller MTU (CBC + SHA-512 + NAT-T: 1406) is too
    // big: the ICMP error is routed back into tunnel 0.
    let alg2 = EspAlgorithm::Aes256Cbc(Integrity::HmacSha512_256);
    let cfg2 = sa_config(0x5005, alg2, Direction::Outbound, CONC, CGW, true);
    conc.send(Command::SetOutbound {
        tunnel: TunnelId(1),
        sa: Box::new(OutboundSa::new(&cfg2, 0).unwrap()),
    });
    conc.routes(&[
        ("203.0.113.0/24", Target::Tunnel(TunnelId(0))),
        ("192.0.2.128/25", Target::Tunnel(TunnelId(1))),
        ("198.51.100.0/24", Target::Inside),
    ]);
    let inner = udp_sized(REMOTE_HOST, [192, 0, 2, 200], 1420, true);
    let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
    cgw.routes(&[
        ("192.0.2.128/25", Target::Tunnel(TunnelId(0))),
        ("203.0.113.0/24", Target::Inside),
    ]);
    assert_eq!(cgw.worker.handle_inside(&mut b), Action::ToOutside);
    let mut io = TestIo::with_pool(4);
    assert_eq!(conc.worker.handle_outside_io(&mut b, &mut io), Action::Drop);
    assert_eq!(
        conc.worker.stats().esp.get(DropReason::TooBig),
        2,
        "one each"
    );
    let (action, mut icmp) = io.sent.pop().unwrap();
    assert_eq!(action, Action::ToOutside, "encapsulated into tunnel 0");
    // The customer gateway decapsulates an ICMP error for its host.
    assert_eq!(cgw.worker.handle_outside(&mut icmp), Action::ToInside);
    let ip = &icmp.as_ref()[14..];
    assert_eq!(&ip[16..20], &REMOTE_HOST);
    assert_eq!((ip[20], ip[21]), (3, 4));
    assert_eq!(
        u16::from_be_bytes([ip[26], ip[27]]),
        1406,
        "the second tunnel's MTU"
    );
}

#[test]
fn reassembled_datagrams_above_the_inside_mtu_are_fragmented_again() {
    let (mut conc, mut cgw) = pair(EspAlgorithm::Aes128Gcm16, false);
    // The remote site sends 1900 bytes; cgw fragments before encryption.
    let inner = udp_sized(REMOTE_HOST, VPC_HOST, 1900, false);
    let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
    let mut io = TestIo::with_pool(4);
    assert_eq!(
        cgw.worker.handle_inside_io(&mut b, &mut io),
        Action::ToOutside
    );
    let mut second = io.sent.pop().unwrap().1;
    // conc reassembles, then fragments to the inside port's 1500.
    let mut io = TestIo::with_pool(4);
    assert_eq!(conc.worker.handle_outside_io(&mut b, &mut io), Action::Drop);
    assert_eq!(
        conc.worker.handle_outside_io(&mut second, &mut io),
        Action::ToInside
    );
    assert_eq!(conc.worker.stats().reassembled, 1);
    assert_eq!(conc.worker.stats().inside_fragmented, 1);
    let (action, rest) = io.sent.pop().unwrap();
    assert_eq!(action, Action::ToInside);
    let (f1, f2) = (&second.as_ref()[14..], &rest.as_ref()[14..]);
    assert_eq!(&second.as_ref()[0..6], &VPC_ROUTER_MAC);
    assert_eq!(&rest.as_ref()[0..6], &VPC_ROUTER_MAC);
    assert_eq!(f1.len(), 1500);
    assert_eq!(u16::from_be_bytes([f1[6], f1[7]]), 0x2000, "MF, offset 0");
    assert_eq!(inet_checksum(&f1[..20]), 0);
    assert_eq!(&f1[20..], &inner[20..1500]);
    assert_eq!(u16::from_be_bytes([f2[6], f2[7]]), 1480 / 8);
    assert_eq!(inet_checksum(&f2[..20]), 0);
    assert_eq!(&f2[20..], &inner[1500..]);
    // Without a pool the datagram cannot be forwarded: dropped, counted.
    let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
    let mut io = TestIo::with_pool(4);
    assert_eq!(
        cgw.worker.handle_inside_io(&mut b, &mut io),
        Action::ToOutside
    );
    let mut second = io.sent.pop().unwrap().1;
    assert_eq!(conc.worker.handle_outside(&mut b), Action::Drop);
    assert_eq!(conc.worker.handle_outside(&mut second), Action::Drop);
    assert_eq!(conc.worker.stats().esp.get(DropReason::FragmentFailed), 1);
}
