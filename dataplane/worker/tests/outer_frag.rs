//! Reassembly of outer fragments before decap (spec § 25.3: "MUST
//! reassemble … outer fragments before decryption"). ESP and NAT-T ESP
//! frames from `conc` are fragmented on the way (as a router with a small
//! MTU would) and delivered to `cgw` in various orders; every drop reason
//! of the outer table is provoked and counted. Each test checks the bytes
//! that come out, not only the counters.

#![allow(
    clippy::cast_possible_truncation,
    reason = "test packets are built with deliberate narrowing"
)]

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::*;
use dataplane::crypto::EspAlgorithm;
use dataplane::esp::DropReason;
use dataplane::esp::reassembly::ReassemblyConfig;
use netbuf::TestBuffer;
use worker::{Action, Addresses, Command, Drop, OUTER_REASSEMBLY};

const VPC_HOST: [u8; 4] = [198, 51, 100, 2];
const REMOTE_HOST: [u8; 4] = [203, 0, 113, 5];

/// Splits the IPv4 packet `ip` (no options) into fragments of at most
/// `data` payload bytes (a multiple of 8), each framed for cgw.
fn fragment(ip: &[u8], data: usize) -> Vec<Vec<u8>> {
    assert!(data.is_multiple_of(8));
    let payload = &ip[20..];
    let n = payload.len().div_ceil(data);
    (0..n)
        .map(|i| {
            let chunk = &payload[i * data..payload.len().min((i + 1) * data)];
            let mut f = ip[..20].to_vec();
            f.extend_from_slice(chunk);
            f[2..4].copy_from_slice(&((20 + chunk.len()) as u16).to_be_bytes());
            let mut fo = (i * data / 8) as u16;
            if i + 1 < n {
                fo |= 0x2000;
            }
            f[6..8].copy_from_slice(&fo.to_be_bytes());
            fix_v4_checksum(&mut f);
            f
        })
        .collect()
}

fn to_cgw(ip: &[u8]) -> TestBuffer {
    frame(CGW_MAC, CONC_MAC, 0x0800, ip)
}

/// An ESP (or NAT-T ESP) packet from conc to cgw carrying `inner`, as
/// IPv4 bytes with identification `id`.
fn esp_packet(conc: &mut Side, inner: &[u8], id: u16) -> Vec<u8> {
    let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, inner);
    assert_eq!(conc.worker.handle_inside(&mut b), Action::ToOutside);
    let mut ip = b.as_ref()[14..].to_vec();
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[6] &= !0x40; // the router fragments: DF clear
    fix_v4_checksum(&mut ip);
    ip
}

fn inner_packet() -> Vec<u8> {
    udp_v4(VPC_HOST, REMOTE_HOST, 1200)
}

#[test]
fn fragments_in_order_and_out_of_order_are_reassembled_then_decrypted() {
    for nat_t in [false, true] {
        for reverse in [false, true] {
            let (mut conc, mut cgw) = pair(EspAlgorithm::Aes128Gcm16, nat_t);
            let inner = inner_packet();
            let ip = esp_packet(&mut conc, &inner, 0x1234);
            let mut frags = fragment(&ip, 512);
            assert_eq!(frags.len(), 3);
            if reverse {
                frags.reverse();
            }
            let last = frags.pop().unwrap();
            for f in &frags {
                assert_eq!(cgw.worker.handle_outside(&mut to_cgw(f)), Action::Drop);
            }
            assert_eq!(cgw.worker.outer_reassembler().in_progress(), 1);
            let mut b = to_cgw(&last);
            assert_eq!(cgw.worker.handle_outside(&mut b), Action::ToInside);
            assert_eq!(&b.as_ref()[14..], &inner[..], "nat_t {nat_t} rev {reverse}");
            let s = cgw.worker.stats();
            assert_eq!((s.outer_fragments_held, s.outer_reassembled), (2, 1));
            assert_eq!(s.decap_packets, 1);
            assert_eq!(s.total_dropped(), 0);
            assert_eq!(s.punted, 0);
            assert_eq!(cgw.worker.outer_reassembler().in_progress(), 0);
        }
    }
}

#[test]
fn duplicate_fragment_is_dropped_alone_and_counted() {
    let (mut conc, mut cgw) = pair(EspAlgorithm::Aes128Gcm16, true);
    let inner = inner_packet();
    let frags = fragment(&esp_packet(&mut conc, &inner, 7), 512);
    assert_eq!(
        cgw.worker.handle_outside(&mut to_cgw(&frags[1])),
        Action::Drop
    );
    assert_eq!(
        cgw.worker.handle_outside(&mut to_cgw(&frags[1])),
        Action::Drop
    );
    let s = cgw.worker.stats();
    assert_eq!(s.outer.get(DropReason::ReassemblyDuplicate), 1);
    assert_eq!(s.dropped(Drop::OuterFragment), 1);
    assert_eq!(
        cgw.worker.handle_outside(&mut to_cgw(&frags[0])),
        Action::Drop
    );
    let mut b = to_cgw(&frags[2]);
    assert_eq!(cgw.worker.handle_outside(&mut b), Action::ToInside);
    assert_eq!(&b.as_ref()[14..], &inner[..]);
}

#[test]
fn overlapping_fragment_drops_the_datagram() {
    let (mut conc, mut cgw) = pair(EspAlgorithm::Aes128Gcm16, false);
    let ip = esp_packet(&mut conc, &inner_packet(), 9);
    let frags = fragment(&ip, 512);
    // A 768-byte fragment at offset 256 overlaps the held first piece.
    let overlapping = {
        let mut f = ip[..20].to_vec();
        f.extend_from_slice(&ip[20 + 256..20 + 256 + 768]);
        f[2..4].copy_from_slice(&(20u16 + 768).to_be_bytes());
        f[6..8].copy_from_slice(&(0x2000u16 | 32).to_be_bytes());
        fix_v4_checksum(&mut f);
        f
    };
    assert_eq!(
        cgw.worker.handle_outside(&mut to_cgw(&frags[0])),
        Action::Drop
    );
    assert_eq!(
        cgw.worker.handle_outside(&mut to_cgw(&overlapping)),
        Action::Drop
    );
    let s = cgw.worker.stats();
    assert_eq!(s.outer.get(DropReason::ReassemblyOverlap), 1);
    assert_eq!(s.dropped(Drop::OuterFragment), 1);
    assert_eq!(cgw.worker.outer_reassembler().in_progress(), 0);
    // What is left of the datagram never completes: nothing is decrypted.
    for f in &frags[1..] {
        assert_eq!(cgw.worker.handle_outside(&mut to_cgw(f)), Action::Drop);
    }
    assert_eq!(cgw.worker.stats().decap_packets, 0);
    assert_eq!(cgw.worker.outer_reassembler().in_progress(), 1);
}

#[test]
fn missing_fragment_times_out_and_is_counted_once() {
    let (mut conc, mut cgw) = pair(EspAlgorithm::Aes128Gcm16, false);
    let frags = fragment(&esp_packet(&mut conc, &inner_packet(), 11), 512);
    for f in &frags[..2] {
        assert_eq!(cgw.worker.handle_outside(&mut to_cgw(f)), Action::Drop);
    }
    cgw.worker.handle_time_ms(OUTER_REASSEMBLY.timeout_ms - 1);
    assert_eq!(cgw.worker.outer_reassembler().in_progress(), 1);
    cgw.worker.handle_time_ms(OUTER_REASSEMBLY.timeout_ms);
    let s = cgw.worker.stats();
    assert_eq!(s.outer.get(DropReason::ReassemblyTimeout), 1);
    assert_eq!(
        s.esp.get(DropReason::ReassemblyTimeout),
        0,
        "not the inner table"
    );
    assert_eq!(cgw.worker.outer_reassembler().in_progress(), 0);
    // The late last fragment starts a datagram of its own.
    assert_eq!(
        cgw.worker.handle_outside(&mut to_cgw(&frags[2])),
        Action::Drop
    );
    assert_eq!(cgw.worker.stats().decap_packets, 0);
}

#[test]
fn full_table_evicts_the_oldest_and_counts_it() {
    let (mut conc, mut cgw) = pair(EspAlgorithm::Aes128Gcm16, false);
    cgw.worker.set_outer_reassembly(ReassemblyConfig {
        contexts: 2,
        ..OUTER_REASSEMBLY
    });
    let inner = inner_packet();
    let datagrams: Vec<_> = (0..3u16)
        .map(|id| fragment(&esp_packet(&mut conc, &inner, 100 + id), 512))
        .collect();
    for (t, d) in datagrams.iter().enumerate() {
        cgw.worker.handle_time_ms(t as u64 + 1);
        assert_eq!(cgw.worker.handle_outside(&mut to_cgw(&d[0])), Action::Drop);
    }
    assert_eq!(
        cgw.worker.stats().outer.get(DropReason::ReassemblyEvicted),
        1
    );
    assert_eq!(cgw.worker.outer_reassembler().in_progress(), 2);
    // The newest two complete; the evicted first does not.
    for d in &datagrams[1..] {
        assert_eq!(cgw.worker.handle_outside(&mut to_cgw(&d[1])), Action::Drop);
        let mut b = to_cgw(&d[2]);
        assert_eq!(cgw.worker.handle_outside(&mut b), Action::ToInside);
        assert_eq!(&b.as_ref()[14..], &inner[..]);
    }
    assert_eq!(
        cgw.worker.handle_outside(&mut to_cgw(&datagrams[0][1])),
        Action::Drop
    );
    assert_eq!(cgw.worker.stats().decap_packets, 2);
}

#[test]
fn datagram_over_the_limit_is_dropped_as_too_big() {
    let (mut conc, mut cgw) = pair(EspAlgorithm::Aes128Gcm16, false);
    let ip = esp_packet(&mut conc, &inner_packet(), 13);
    // A last fragment ending past 2048 bytes.
    let mut f = ip[..20].to_vec();
    f.extend_from_slice(&[0u8; 64]);
    f[2..4].copy_from_slice(&(20u16 + 64).to_be_bytes());
    f[6..8].copy_from_slice(&(2048u16 / 8).to_be_bytes());
    fix_v4_checksum(&mut f);
    assert_eq!(cgw.worker.handle_outside(&mut to_cgw(&f)), Action::Drop);
    assert_eq!(
        cgw.worker.stats().outer.get(DropReason::ReassemblyTooBig),
        1
    );
    assert_eq!(cgw.worker.stats().dropped(Drop::OuterFragment), 1);
}

#[test]
fn non_esp_fragments_are_punted_untouched() {
    let (_, mut cgw) = pair(EspAlgorithm::Aes128Gcm16, false);
    // An ICMP echo to cgw, 1000 bytes of data, in two fragments.
    let mut icmp = udp_v4(CONC.octets(), CGW.octets(), 1000);
    icmp[9] = 1;
    fix_v4_checksum(&mut icmp);
    for f in fragment(&icmp, 512) {
        let mut b = to_cgw(&f);
        assert_eq!(cgw.worker.handle_outside(&mut b), Action::ToKernel);
        assert_eq!(&b.as_ref()[14..], &f[..]);
        assert_eq!(&b.as_ref()[..6], &KERNEL_MAC);
    }
    let s = cgw.worker.stats();
    assert_eq!((s.punted, s.outer_fragments_held), (2, 0));
    assert_eq!(cgw.worker.outer_reassembler().in_progress(), 0);
}

#[test]
fn fragmented_ike_is_reassembled_and_punted_whole() {
    let (_, mut cgw) = pair(EspAlgorithm::Aes128Gcm16, true);
    for dport in [500u16, 4500] {
        // UDP to the IKE port; on 4500 the non-ESP marker (zero SPI).
        let mut ike = udp_v4(CONC.octets(), CGW.octets(), 1200);
        ike[20..22].copy_from_slice(&dport.to_be_bytes());
        ike[22..24].copy_from_slice(&dport.to_be_bytes());
        ike[28..32].fill(0);
        fix_v4_checksum(&mut ike);
        let frags = fragment(&ike, 512);
        for f in &frags[1..] {
            assert_eq!(cgw.worker.handle_outside(&mut to_cgw(f)), Action::Drop);
        }
        let mut b = to_cgw(&frags[0]);
        assert_eq!(cgw.worker.handle_outside(&mut b), Action::ToKernel);
        let got = &b.as_ref()[14..];
        assert_eq!(&b.as_ref()[..6], &KERNEL_MAC);
        assert_eq!(&b.as_ref()[12..14], &[0x08, 0x00]);
        assert_eq!(inet_checksum(&got[..20]), 0);
        assert_eq!(u16::from_be_bytes([got[6], got[7]]) & 0x3fff, 0, "whole");
        assert_eq!(&got[20..], &ike[20..]);
        assert_eq!(got.len(), ike.len());
    }
    let s = cgw.worker.stats();
    assert_eq!((s.punted, s.outer_reassembled), (2, 2));
    assert_eq!(s.total_dropped(), 0);
}

#[test]
fn garbage_fragments_never_panic() {
    let (mut conc, mut cgw) = pair(EspAlgorithm::Aes128Gcm16, true);
    let ip = esp_packet(&mut conc, &inner_packet(), 17);
    let frags = fragment(&ip, 512);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..20_000u64 {
        let mut f = frags[(rnd() % 3) as usize].clone();
        // Mutate a few header bytes (length, flags/offset, id, protocol)
        // and sometimes truncate.
        for _ in 0..(rnd() % 4) {
            let at = [2, 3, 6, 7, 4, 9, 0, 28][(rnd() % 8) as usize];
            f[at] = rnd() as u8;
        }
        if rnd() % 4 == 0 {
            f.truncate((rnd() as usize) % f.len());
        }
        if rnd() % 2 == 0 && f.len() >= 20 && usize::from(f[0] & 0xf) * 4 <= f.len() {
            fix_v4_checksum(&mut f);
        }
        let _ = cgw.worker.handle_outside(&mut to_cgw(&f));
        if round % 1000 == 0 {
            cgw.worker.handle_time_ms(round * 10);
        }
    }
    assert!(cgw.worker.stats().dropped(Drop::OuterFragment) > 0);
}

/// IPv6 fragments of `payload` (next header `nh`) from `src` to `dst`,
/// `data` bytes each (a multiple of 8), last fragment first.
fn fragment_v6(src: Ipv6Addr, dst: Ipv6Addr, nh: u8, payload: &[u8], data: usize) -> Vec<Vec<u8>> {
    let n = payload.len().div_ceil(data);
    let mut out: Vec<_> = (0..n)
        .map(|i| {
            let chunk = &payload[i * data..payload.len().min((i + 1) * data)];
            let mut p = vec![0x60, 0, 0, 0];
            p.extend_from_slice(&((8 + chunk.len()) as u16).to_be_bytes());
            p.extend_from_slice(&[44, 64]);
            p.extend_from_slice(&src.octets());
            p.extend_from_slice(&dst.octets());
            let off = ((i * data) as u16) | u16::from(i + 1 < n);
            p.extend_from_slice(&[nh, 0]);
            p.extend_from_slice(&off.to_be_bytes());
            p.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
            p.extend_from_slice(chunk);
            p
        })
        .collect();
    out.reverse();
    out
}

#[test]
fn ipv6_esp_fragments_are_reassembled_and_other_v6_fragments_punted() {
    let (_, mut cgw) = pair(EspAlgorithm::Aes128Gcm16, false);
    let me: Ipv6Addr = "2001:db8::2".parse().unwrap();
    let peer: Ipv6Addr = "2001:db8::1".parse().unwrap();
    cgw.send(Command::SetAddresses(Box::new(Addresses {
        outside_mac: CGW_MAC,
        outside_gateway_mac: CONC_MAC,
        inside_mac: INSIDE_MAC,
        inside_gateway_mac: VPC_ROUTER_MAC,
        kernel_mac: KERNEL_MAC,
        outside_v4: vec![CGW],
        outside_v6: vec![me],
        inside_v4: vec![Ipv4Addr::new(198, 51, 100, 1)],
    })));
    // ESP for an SPI nobody has: reassembled, then classified as ESP and
    // dropped as an unknown SPI (not punted, not an outer drop).
    let mut esp = vec![0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1];
    esp.extend((0..1200u32).map(|i| i as u8));
    let frags = fragment_v6(peer, me, 50, &esp, 512);
    assert_eq!(frags.len(), 3);
    for f in &frags[..2] {
        let mut b = frame(CGW_MAC, CONC_MAC, 0x86dd, f);
        assert_eq!(cgw.worker.handle_outside(&mut b), Action::Drop);
    }
    assert_eq!(cgw.worker.stats().outer_fragments_held, 2);
    let mut b = frame(CGW_MAC, CONC_MAC, 0x86dd, &frags[2]);
    assert_eq!(cgw.worker.handle_outside(&mut b), Action::Drop);
    let s = cgw.worker.stats();
    assert_eq!(s.outer_reassembled, 1);
    assert_eq!(s.dropped(Drop::UnknownSpi), 1);
    assert_eq!((s.dropped(Drop::OuterFragment), s.punted), (0, 0));
    // ICMPv6 fragments are the kernel's, untouched.
    for f in fragment_v6(peer, me, 58, &[7u8; 1000], 512) {
        let mut b = frame(CGW_MAC, CONC_MAC, 0x86dd, &f);
        assert_eq!(cgw.worker.handle_outside(&mut b), Action::ToKernel);
        assert_eq!(&b.as_ref()[14..], &f[..]);
    }
    assert_eq!(cgw.worker.stats().punted, 2);
}
