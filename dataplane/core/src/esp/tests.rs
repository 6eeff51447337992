//! Encap/decap round trips, tamper, sequence exhaustion, lifetimes,
//! drop reasons and bursts (kind (c) and unit tests of conventions § 12).

use std::net::{Ipv4Addr, Ipv6Addr};

use netbuf::{Headroom, RxChecksum, TestBuffer};
use zeroize::Zeroizing;

use super::burst::{MAX_BURST, Verdict, decap_burst, encap_burst};
use super::hdr::{ipv4_checksum_ok, ipv4_fill_checksum, v6_addrs};
use super::sa::{
    DfPolicy, Direction, LifetimeEvent, LifetimeLimits, Lifetimes, NatT, TunnelEndpoints,
};
use super::*;
use crate::crypto::{EspAlgorithm, EspTransform};
use crate::wire::{IpProtocol, checksum};

const SPI: u32 = 0x1234_5678;

pub(crate) fn tunnel(v6: bool, dir: Direction) -> TunnelEndpoints {
    let (a4, b4) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 7));
    let (a6, b6): (Ipv6Addr, Ipv6Addr) = (
        "2001:db8::1".parse().unwrap(),
        "2001:db8:ffff::7".parse().unwrap(),
    );
    match (v6, dir) {
        (false, Direction::Outbound) => TunnelEndpoints::V4 {
            local: a4,
            remote: b4,
        },
        (false, Direction::Inbound) => TunnelEndpoints::V4 {
            local: b4,
            remote: a4,
        },
        (true, Direction::Outbound) => TunnelEndpoints::V6 {
            local: a6,
            remote: b6,
        },
        (true, Direction::Inbound) => TunnelEndpoints::V6 {
            local: b6,
            remote: a6,
        },
    }
}

pub(crate) fn cfg(
    alg: EspAlgorithm,
    outer_v6: bool,
    nat_t: bool,
    esn: bool,
    dir: Direction,
) -> SaConfig {
    let enc: Vec<u8> = (0..alg.enc_key_len())
        .map(|i| u8::try_from(i * 7 % 251).unwrap())
        .collect();
    let auth: Vec<u8> = (0..alg.auth_key_len())
        .map(|i| u8::try_from(i * 13 % 251).unwrap())
        .collect();
    SaConfig {
        spi: SPI,
        direction: dir,
        algorithm: alg,
        enc_key: Zeroizing::new(enc),
        auth_key: Zeroizing::new(auth),
        iv_seed: Zeroizing::new([0x5a; 16]),
        tunnel: tunnel(outer_v6, dir),
        nat_t: nat_t.then_some(NatT {
            local_port: 4500,
            remote_port: 4500,
        }),
        esn,
        replay_window: replay::DEFAULT_WINDOW,
        lifetimes: Lifetimes::default(),
        df: DfPolicy::CopyFromInner,
    }
}

pub(crate) fn pair(
    alg: EspAlgorithm,
    outer_v6: bool,
    nat_t: bool,
    esn: bool,
) -> (OutboundSa, InboundSa) {
    (
        OutboundSa::new(&cfg(alg, outer_v6, nat_t, esn, Direction::Outbound), 0).unwrap(),
        InboundSa::new(&cfg(alg, outer_v6, nat_t, esn, Direction::Inbound), 0).unwrap(),
    )
}

/// An inner IPv4 UDP packet with `len` payload bytes, TOS `tos`, DF set.
pub(crate) fn inner_v4(len: usize, tos: u8) -> Vec<u8> {
    let total = 28 + len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[1] = tos;
    p[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
    p[4..6].copy_from_slice(&0xbeefu16.to_be_bytes());
    p[6] = 0x40;
    p[8] = 63;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 1, 0, 2]);
    ipv4_fill_checksum(&mut p);
    p[20..22].copy_from_slice(&1234u16.to_be_bytes());
    p[22..24].copy_from_slice(&5678u16.to_be_bytes());
    p[24..26].copy_from_slice(&u16::try_from(8 + len).unwrap().to_be_bytes());
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = u8::try_from(i % 256).unwrap();
    }
    p
}

/// An inner IPv6 UDP packet with `len` payload bytes, traffic class `tc`.
pub(crate) fn inner_v6(len: usize, tc: u8) -> Vec<u8> {
    let mut p = vec![0u8; 48 + len];
    p[0] = 0x60 | (tc >> 4);
    p[1] = (tc << 4) | 0x0a;
    p[2] = 0xbc;
    p[3] = 0xde;
    p[4..6].copy_from_slice(&u16::try_from(8 + len).unwrap().to_be_bytes());
    p[6] = 17;
    p[7] = 63;
    p[8..24].copy_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
    p[24..40].copy_from_slice(&"fd00:1::2".parse::<Ipv6Addr>().unwrap().octets());
    p[44..46].copy_from_slice(&u16::try_from(8 + len).unwrap().to_be_bytes());
    for (i, b) in p[48..].iter_mut().enumerate() {
        *b = u8::try_from((i * 3) % 256).unwrap();
    }
    p
}

fn esp_offset(outer_v6: bool, nat_t: bool) -> usize {
    (if outer_v6 { 40 } else { 20 }) + if nat_t { 8 } else { 0 }
}

/// Checks the outer headers encap wrote.
fn check_outer(pkt: &[u8], inner: &[u8], outer_v6: bool, nat_t: bool, alg: EspAlgorithm) {
    let inner_tos = if inner[0] >> 4 == 4 {
        inner[1]
    } else {
        (inner[0] << 4) | (inner[1] >> 4)
    };
    let ip_len = if outer_v6 { 40 } else { 20 };
    if outer_v6 {
        assert_eq!(pkt[0] >> 4, 6);
        assert_eq!(
            (pkt[0] << 4) | (pkt[1] >> 4),
            inner_tos,
            "TC = DSCP+ECN copied"
        );
        assert_eq!(
            usize::from(u16::from_be_bytes([pkt[4], pkt[5]])),
            pkt.len() - 40
        );
        assert_eq!(pkt[6], if nat_t { 17 } else { 50 });
        assert_eq!(pkt[7], 64);
    } else {
        assert_eq!(pkt[0], 0x45);
        assert_eq!(pkt[1], inner_tos, "DSCP+ECN copied (RFC 6040 normal mode)");
        assert_eq!(usize::from(u16::from_be_bytes([pkt[2], pkt[3]])), pkt.len());
        let inner_df = inner[0] >> 4 == 4 && inner[6] & 0x40 != 0;
        assert_eq!(pkt[6] & 0x40 != 0, inner_df, "DF copied from inner IPv4");
        assert_eq!(pkt[8], 64);
        assert_eq!(pkt[9], if nat_t { 17 } else { 50 });
        assert!(ipv4_checksum_ok(&pkt[..20]), "IPv4 header checksum");
    }
    if nat_t {
        let udp = &pkt[ip_len..];
        assert_eq!(&udp[..4], &[0x11, 0x94, 0x11, 0x94]);
        assert_eq!(usize::from(u16::from_be_bytes([udp[4], udp[5]])), udp.len());
        if outer_v6 {
            let (src, dst) = v6_addrs(pkt);
            let len = u32::try_from(udp.len()).unwrap();
            let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::Udp, len);
            assert_eq!(
                checksum::combine(&[pseudo, checksum::data(udp)]),
                0xffff,
                "UDP/IPv6 checksum verifies"
            );
        } else {
            assert_eq!(&udp[6..8], &[0, 0], "UDP/IPv4 checksum 0 (RFC 3948 § 2.1)");
        }
    }
    let esp = &pkt[esp_offset(outer_v6, nat_t)..];
    assert_eq!(&esp[..4], &SPI.to_be_bytes());
    let ct = esp.len() - 8 - alg.iv_len() - alg.icv_len();
    assert_eq!(ct % alg.pad_align(), 0);
    assert!(ct >= inner.len() + 2 && ct < inner.len() + 2 + alg.pad_align());
}

#[test]
fn round_trip_every_algorithm_and_ip_combination() {
    for alg in EspAlgorithm::ALL {
        for outer_v6 in [false, true] {
            for nat_t in [false, true] {
                for esn in [false, true] {
                    let (mut out, mut inb) = pair(alg, outer_v6, nat_t, esn);
                    let mut n = 0u64;
                    for inner_v6_ in [false, true] {
                        for len in [0usize, 1, 2, 3, 13, 14, 15, 16, 17, 100, 1373] {
                            let inner = if inner_v6_ {
                                inner_v6(len, 0xb9)
                            } else {
                                inner_v4(len, 0xb9)
                            };
                            let mut b = TestBuffer::from_slice(&inner);
                            encap(&mut out, &mut b).unwrap();
                            n += 1;
                            assert_eq!(out.seq(), n);
                            check_outer(b.as_ref(), &inner, outer_v6, nat_t, alg);
                            assert_eq!(b.headroom(), TestBuffer::HEADROOM - out.header_overhead());
                            decap(&mut inb, &mut b, esp_offset(outer_v6, nat_t)).unwrap();
                            assert_eq!(
                                b.as_ref(),
                                &inner[..],
                                "{alg:?} v6out={outer_v6} natt={nat_t} esn={esn} len={len}"
                            );
                        }
                    }
                    assert_eq!(out.counters().packets, n);
                    assert_eq!(inb.counters(), out.counters());
                }
            }
        }
    }
}

#[test]
fn decap_with_outer_already_stripped_and_trailing_padding() {
    let (mut out, mut inb) = pair(EspAlgorithm::Aes128Gcm16, false, true, false);
    let inner = inner_v4(10, 0);
    // Ethernet padding after the inner packet is trimmed by encap.
    let mut padded = inner.clone();
    padded.extend_from_slice(&[0; 6]);
    let mut b = TestBuffer::from_slice(&padded);
    encap(&mut out, &mut b).unwrap();
    let mut v = b.as_ref()[28..].to_vec();
    let mut c = TestBuffer::from_slice(&v);
    decap(&mut inb, &mut c, 0).unwrap();
    assert_eq!(c.as_ref(), &inner[..]);
    // Replayed copy.
    v.truncate(v.len());
    let mut d = TestBuffer::from_slice(&v);
    assert_eq!(decap(&mut inb, &mut d, 0), Err(DropReason::ReplayDuplicate));
}

#[test]
fn tamper_every_byte_is_rejected_or_harmless() {
    for alg in EspAlgorithm::ALL {
        for (i, (outer_v6, nat_t)) in [(false, false), (false, true), (true, false), (true, true)]
            .into_iter()
            .enumerate()
        {
            let (mut out, _) = pair(alg, outer_v6, nat_t, i % 2 == 0);
            let inner = if i % 2 == 0 {
                inner_v4(21, 0x02)
            } else {
                inner_v6(21, 0x02)
            };
            let mut b = TestBuffer::from_slice(&inner);
            encap(&mut out, &mut b).unwrap();
            let wire = b.as_ref().to_vec();
            let esp_off = esp_offset(outer_v6, nat_t);
            for pos in 0..wire.len() {
                let mut t = wire.clone();
                t[pos] ^= 0x01;
                let mut inb = InboundSa::new(
                    &cfg(alg, outer_v6, nat_t, i % 2 == 0, Direction::Inbound),
                    0,
                )
                .unwrap();
                let mut drops = DropCounters::default();
                let mut buf = TestBuffer::from_slice(&t);
                match decap(&mut inb, &mut buf, esp_off) {
                    Err(r) => drops.count(r),
                    Ok(()) => {
                        assert!(pos < esp_off, "{alg:?}: flipped ESP byte {pos} accepted");
                        // Unauthenticated outer bytes (e.g. TTL, flow
                        // label) may be accepted; the inner packet is
                        // then intact except for an ECN change.
                        assert_eq!(buf.as_ref().len(), inner.len());
                    }
                }
                if pos >= esp_off {
                    assert_eq!(drops.total(), 1);
                }
            }
        }
    }
}

#[test]
fn sequence_exhaustion() {
    let (mut out, _) = pair(EspAlgorithm::Aes128Gcm16, false, false, false);
    out.set_seq(u64::from(u32::MAX) - 1);
    let mut b = TestBuffer::from_slice(&inner_v4(10, 0));
    encap(&mut out, &mut b).unwrap();
    assert_eq!(out.seq(), u64::from(u32::MAX));
    let mut b = TestBuffer::from_slice(&inner_v4(10, 0));
    assert_eq!(encap(&mut out, &mut b), Err(DropReason::SeqExhausted));
    assert_eq!(
        out.seq(),
        u64::from(u32::MAX),
        "no sequence number consumed"
    );

    let (mut out, _) = pair(EspAlgorithm::Aes128Gcm16, false, false, true);
    out.set_seq(u64::MAX);
    let mut b = TestBuffer::from_slice(&inner_v4(10, 0));
    assert_eq!(encap(&mut out, &mut b), Err(DropReason::SeqExhausted));
}

#[test]
fn esn_round_trip_across_2_pow_32() {
    for alg in [
        EspAlgorithm::Aes256Gcm16,
        EspAlgorithm::Aes128Cbc(crate::crypto::Integrity::HmacSha256_128),
    ] {
        let (mut out, mut inb) = pair(alg, true, false, true);
        let start = (1u64 << 32) - 3;
        out.set_seq(start);
        inb.replay.commit(start).unwrap();
        let mut held = Vec::new();
        for k in 0..6 {
            let inner = inner_v4(40 + k, 0);
            let mut b = TestBuffer::from_slice(&inner);
            encap(&mut out, &mut b).unwrap();
            if k == 1 {
                held.push((b, inner)); // delivered late, after the boundary
                continue;
            }
            decap(&mut inb, &mut b, 40).unwrap();
            assert_eq!(b.as_ref(), &inner[..]);
        }
        assert_eq!(inb.replay().top(), (1 << 32) + 3);
        for (mut b, inner) in held {
            decap(&mut inb, &mut b, 40).unwrap();
            assert_eq!(b.as_ref(), &inner[..]);
        }
    }
}

#[test]
fn lifetimes_soft_and_hard() {
    let mut c = cfg(
        EspAlgorithm::Aes128Gcm16,
        false,
        false,
        false,
        Direction::Outbound,
    );
    c.lifetimes = Lifetimes {
        soft: LifetimeLimits {
            packets: Some(3),
            ..Default::default()
        },
        hard: LifetimeLimits {
            packets: Some(5),
            secs: Some(3600),
            ..Default::default()
        },
    };
    let mut out = OutboundSa::new(&c, 100).unwrap();
    for k in 1..=5 {
        let mut b = TestBuffer::from_slice(&inner_v4(10, 0));
        encap(&mut out, &mut b).unwrap();
        if k == 3 {
            assert!(out.soft_expired());
            assert_eq!(out.poll_lifetime(), Some(LifetimeEvent::SoftExpired));
            assert_eq!(out.poll_lifetime(), None);
        }
    }
    let mut b = TestBuffer::from_slice(&inner_v4(10, 0));
    assert_eq!(encap(&mut out, &mut b), Err(DropReason::LifetimeExpired));
    assert!(out.hard_expired());
    assert_eq!(out.poll_lifetime(), Some(LifetimeEvent::HardExpired));
    assert_eq!(out.poll_lifetime(), None);

    // Time-based: hard at installed + 3600.
    let mut c = cfg(
        EspAlgorithm::Aes128Gcm16,
        false,
        false,
        false,
        Direction::Inbound,
    );
    c.lifetimes.soft.secs = Some(3000);
    c.lifetimes.hard.secs = Some(3600);
    let mut inb = InboundSa::new(&c, 100).unwrap();
    inb.handle_timeout(3099);
    assert_eq!(inb.poll_lifetime(), None);
    inb.handle_timeout(3100);
    assert_eq!(inb.poll_lifetime(), Some(LifetimeEvent::SoftExpired));
    inb.handle_timeout(3700);
    assert_eq!(inb.poll_lifetime(), Some(LifetimeEvent::HardExpired));
    let (mut out, _) = pair(EspAlgorithm::Aes128Gcm16, false, false, false);
    let mut b = TestBuffer::from_slice(&inner_v4(10, 0));
    encap(&mut out, &mut b).unwrap();
    assert_eq!(
        decap(&mut inb, &mut b, 20),
        Err(DropReason::LifetimeExpired)
    );
}

/// Seals a hand-made ESP packet (after an IPv4 outer header) so decap's
/// post-ICV checks can be exercised.
fn handmade(alg: EspAlgorithm, plaintext: &[u8], seq: u64) -> TestBuffer {
    let (out, _) = pair(alg, false, false, false);
    let iv = alg.iv_len();
    let icv = alg.icv_len();
    let total = 20 + 8 + iv + plaintext.len() + icv;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
    p[8] = 64;
    p[9] = 50;
    ipv4_fill_checksum(&mut p);
    p[20..24].copy_from_slice(&SPI.to_be_bytes());
    p[24..28].copy_from_slice(&u32::try_from(seq).unwrap().to_be_bytes());
    p[28 + iv..28 + iv + plaintext.len()].copy_from_slice(plaintext);
    out.transform.seal(seq, false, &mut p[20..]).unwrap();
    TestBuffer::from_slice(&p)
}

#[test]
fn post_icv_drop_reasons() {
    let alg = EspAlgorithm::Aes128Cbc(crate::crypto::Integrity::HmacSha1_96);
    let inner = inner_v4(10, 0); // 38 bytes
    let mk = |pad: &[u8], nh: u8| {
        let mut pt = inner.clone();
        pt.extend_from_slice(pad);
        pt.push(u8::try_from(pad.len()).unwrap());
        pt.push(nh);
        pt
    };
    let (_, mut inb) = pair(alg, false, false, false);
    let mut seq = 0;
    let mut run = |pt: Vec<u8>| {
        seq += 1;
        let mut b = handmade(alg, &pt, seq);
        decap(&mut inb, &mut b, 20).map(|()| b.as_ref().to_vec())
    };
    let good_pad: Vec<u8> = (1..=8).collect();
    assert_eq!(run(mk(&good_pad, 4)), Ok(inner.clone()));
    assert_eq!(
        run(mk(&[1, 2, 3, 4, 5, 6, 7, 9], 4)),
        Err(DropReason::BadPadding)
    );
    assert_eq!(run(mk(&good_pad, 59)), Err(DropReason::DummyPacket));
    assert_eq!(run(mk(&good_pad, 6)), Err(DropReason::BadNextHeader));
    assert_eq!(
        run(mk(&good_pad, 41)),
        Err(DropReason::InnerMalformed),
        "version mismatch"
    );
    // Pad length larger than the plaintext.
    let mut pt = mk(&good_pad, 4);
    let l = pt.len();
    pt[l - 2] = 200;
    assert_eq!(run(pt), Err(DropReason::BadPadding));
    // TFC padding after the inner packet (RFC 4303 § 2.7) is stripped.
    let mut tfc = inner.clone();
    tfc.extend_from_slice(&[0xEE; 16]);
    tfc.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    tfc.push(8);
    tfc.push(4);
    assert_eq!(run(tfc), Ok(inner.clone()));
}

#[test]
fn ecn_egress_rfc6040() {
    let (mut out, mut inb) = pair(EspAlgorithm::Aes128Gcm16, false, false, false);
    // Inner ECT(0), outer marked CE on the path -> inner CE.
    let inner = inner_v4(10, 0x02);
    let mut b = TestBuffer::from_slice(&inner);
    encap(&mut out, &mut b).unwrap();
    let mut w = b.as_ref().to_vec();
    w[1] |= 3;
    ipv4_fill_checksum(&mut w);
    let mut b = TestBuffer::from_slice(&w);
    decap(&mut inb, &mut b, 20).unwrap();
    assert_eq!(b.as_ref()[1] & 3, 3);
    assert!(
        ipv4_checksum_ok(&b.as_ref()[..20]),
        "inner checksum updated"
    );
    // Inner Not-ECT with outer CE -> drop.
    let inner = inner_v6(10, 0x00);
    let mut b = TestBuffer::from_slice(&inner);
    encap(&mut out, &mut b).unwrap();
    let mut w = b.as_ref().to_vec();
    w[1] |= 3;
    ipv4_fill_checksum(&mut w);
    let mut b = TestBuffer::from_slice(&w);
    assert_eq!(decap(&mut inb, &mut b, 20), Err(DropReason::EcnNotEct));
}

#[test]
fn df_policy_and_ip_id() {
    let mut c = cfg(
        EspAlgorithm::Aes128Gcm16,
        false,
        false,
        false,
        Direction::Outbound,
    );
    c.df = DfPolicy::Clear;
    let mut out = OutboundSa::new(&c, 0).unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut b = TestBuffer::from_slice(&inner_v4(10, 0));
        encap(&mut out, &mut b).unwrap();
        assert_eq!(b.as_ref()[6] & 0x40, 0);
        ids.push(u16::from_be_bytes([b.as_ref()[4], b.as_ref()[5]]));
    }
    assert_eq!(ids, [0, 1, 2]);
}

#[test]
fn room_and_malformed_inputs() {
    let (mut out, mut inb) = pair(
        EspAlgorithm::Aes256Cbc(crate::crypto::Integrity::HmacSha512_256),
        true,
        true,
        false,
    );
    let mut b = TestBuffer::with_room(200, 10);
    netbuf::Append::append(&mut b, 60)
        .unwrap()
        .copy_from_slice(&inner_v4(32, 0));
    assert_eq!(encap(&mut out, &mut b), Err(DropReason::NoHeadroom));
    let mut b = TestBuffer::with_room(200, 128);
    netbuf::Append::append(&mut b, 60)
        .unwrap()
        .copy_from_slice(&inner_v4(32, 0));
    assert_eq!(encap(&mut out, &mut b), Err(DropReason::NoTailroom));
    assert_eq!(out.seq(), 0, "room failures consume no sequence number");
    let mut b = TestBuffer::from_slice(&[0x45, 0, 0]);
    assert_eq!(encap(&mut out, &mut b), Err(DropReason::InnerMalformed));
    let mut b = TestBuffer::from_slice(&[]);
    assert_eq!(decap(&mut inb, &mut b, 0), Err(DropReason::Truncated));
    for n in 0..200 {
        let junk: Vec<u8> = (0..n)
            .map(|i| u8::try_from((i * 37 + n) % 256).unwrap())
            .collect();
        for off in [0, 20, 48, 300] {
            let mut b = TestBuffer::from_slice(&junk);
            assert!(decap(&mut inb, &mut b, off).is_err());
        }
    }
}

#[test]
fn drop_reason_table_is_dense() {
    for (i, r) in DropReason::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i);
    }
}

#[test]
fn burst_groups_runs_and_counts() {
    let alg = EspAlgorithm::Aes128Gcm16;
    let (o1, i1) = pair(alg, false, false, false);
    let mut c2 = cfg(alg, false, false, false, Direction::Outbound);
    c2.spi = SPI + 1;
    let o2 = OutboundSa::new(&c2, 0).unwrap();
    c2.direction = Direction::Inbound;
    c2.tunnel = tunnel(false, Direction::Inbound);
    let i2 = InboundSa::new(&c2, 0).unwrap();
    let mut outs = [o1, o2];
    let mut ins = [i1, i2];
    let idx: Vec<u32> = (0..MAX_BURST + 6).map(|k| u32::from(k % 10 >= 6)).collect();
    let inners: Vec<Vec<u8>> = (0..MAX_BURST + 6).map(|k| inner_v4(k, 0)).collect();
    let mut pkts: Vec<TestBuffer> = inners.iter().map(|p| TestBuffer::from_slice(p)).collect();
    let mut verdicts: Vec<Verdict> = vec![Ok(()); MAX_BURST + 6];
    let mut drops = DropCounters::default();
    let n = encap_burst(&mut outs, &mut pkts, &idx, &mut verdicts, &mut drops);
    assert_eq!(n, MAX_BURST);
    assert!(verdicts[..n].iter().all(Result::is_ok));
    let n0 = idx[..n].iter().filter(|&&i| i == 0).count() as u64;
    assert_eq!(outs[0].counters().packets, n0);
    assert_eq!(outs[1].counters().packets, n as u64 - n0);
    // Corrupt one, replay one, unknown SA for one.
    let l = pkts[5].as_ref().len();
    pkts[5].as_mut()[l - 1] ^= 0xff;
    let dup = pkts[7].duplicate();
    pkts[9] = dup;
    let mut idx_in = idx.clone();
    idx_in[11] = 9;
    let offs = vec![20usize; n];
    let n2 = decap_burst(
        &mut ins,
        &mut pkts[..n],
        &idx_in[..n],
        &offs,
        &mut verdicts,
        &mut drops,
    );
    assert_eq!(n2, n);
    assert_eq!(verdicts[5], Err(DropReason::IcvFail));
    assert_eq!(verdicts[9], Err(DropReason::ReplayDuplicate));
    assert_eq!(verdicts[11], Err(DropReason::UnknownSpi));
    assert_eq!(drops.total(), 3);
    for k in (0..n).filter(|k| ![5, 9, 11].contains(k)) {
        assert_eq!(pkts[k].as_ref(), &inners[k][..], "packet {k}");
    }
    assert_eq!(
        ins[0].counters().packets + ins[1].counters().packets,
        n as u64 - 3
    );
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Arbitrary bytes at any offset never panic decap, for every
        /// algorithm (and are never accepted: they carry no valid ICV).
        #[test]
        fn arbitrary_bytes_never_panic_decap(
            alg_i in 0usize..EspAlgorithm::ALL.len(),
            nat_t in any::<bool>(),
            outer_v6 in any::<bool>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            off in 0usize..80,
        ) {
            let alg = EspAlgorithm::ALL[alg_i];
            let (_, mut inb) = pair(alg, outer_v6, nat_t, true);
            let mut b = TestBuffer::from_slice(&bytes);
            prop_assert!(decap(&mut inb, &mut b, off).is_err());
        }

        /// Round trip with random inner sizes, TOS/TC and DF, any suite.
        #[test]
        fn round_trip_random(
            alg_i in 0usize..EspAlgorithm::ALL.len(),
            nat_t in any::<bool>(),
            outer_v6 in any::<bool>(),
            inner6 in any::<bool>(),
            len in 0usize..1400,
            tos in any::<u8>(),
        ) {
            let alg = EspAlgorithm::ALL[alg_i];
            let (mut out, mut inb) = pair(alg, outer_v6, nat_t, false);
            let inner = if inner6 { inner_v6(len, tos) } else { inner_v4(len, tos) };
            let mut b = TestBuffer::from_slice(&inner);
            encap(&mut out, &mut b).unwrap();
            check_outer(b.as_ref(), &inner, outer_v6, nat_t, alg);
            decap(&mut inb, &mut b, esp_offset(outer_v6, nat_t)).unwrap();
            prop_assert_eq!(b.as_ref(), &inner[..]);
        }
    }
}

/// Both crypto backends produce the same packets, and each decapsulates
/// the other's, with a tampered packet an `IcvFail` drop either way and
/// the replay window untouched by it.
#[test]
fn backends_are_interchangeable_on_the_wire() {
    use crate::crypto::CryptoBackend;
    let mb = CryptoBackend::ipsec_mb().unwrap();
    for alg in EspAlgorithm::ALL {
        for (outer_v6, nat_t, esn) in [(false, false, false), (true, true, true)] {
            let o = cfg(alg, outer_v6, nat_t, esn, Direction::Outbound);
            let i = cfg(alg, outer_v6, nat_t, esn, Direction::Inbound);
            let mut out_ring = OutboundSa::new_with(&o, 0, CryptoBackend::Ring).unwrap();
            let mut out_mb = OutboundSa::new_with(&o, 0, mb).unwrap();
            let mut in_ring = InboundSa::new_with(&i, 0, CryptoBackend::Ring).unwrap();
            let mut in_mb = InboundSa::new_with(&i, 0, mb).unwrap();
            if esn {
                out_ring.set_seq((1 << 32) - 2);
                out_mb.set_seq((1 << 32) - 2);
                in_ring.resume_replay((1 << 32) - 2);
                in_mb.resume_replay((1 << 32) - 2);
            }
            let off = (if outer_v6 { 40 } else { 20 }) + if nat_t { 8 } else { 0 };
            for len in [0usize, 1, 3, 17, 200, 1371] {
                let inner = inner_v4(len, 0);
                let mut a = TestBuffer::from_slice(&inner);
                let mut b = TestBuffer::from_slice(&inner);
                encap(&mut out_ring, &mut a).unwrap();
                encap(&mut out_mb, &mut b).unwrap();
                assert_eq!(a.as_ref(), b.as_ref(), "{alg:?} len {len}: same bytes");
                let mut bad = TestBuffer::from_slice(b.as_ref());
                let last = bad.as_ref().len() - 1;
                bad.as_mut()[last] ^= 1;
                assert_eq!(decap(&mut in_mb, &mut bad, off), Err(DropReason::IcvFail));
                decap(&mut in_mb, &mut a, off).unwrap();
                decap(&mut in_ring, &mut b, off).unwrap();
                assert_eq!(a.as_ref(), &inner[..]);
                assert_eq!(b.as_ref(), &inner[..]);
            }
        }
    }
}

/// The batched burst (intel-ipsec-mb job API for CBC + HMAC) against the
/// one-packet-at-a-time path on `ring`/`aws-lc-rs`: identical packets out
/// of encap, each side opens the other's, and in a mixed burst of CBC and
/// GCM SAs a tampered packet, a replay of a packet of the same burst and
/// an unknown SA are each dropped and counted, alone.
mod batched {
    use super::*;
    use crate::crypto::{CryptoBackend, Integrity};
    use crate::esp::burst::{decap_burst_mb, encap_burst_mb};
    use ipsec_mb::Manager;
    use proptest::prelude::*;

    fn mb() -> CryptoBackend {
        CryptoBackend::ipsec_mb().unwrap()
    }

    fn sas(
        alg: EspAlgorithm,
        outer_v6: bool,
        nat_t: bool,
        esn: bool,
        backend: CryptoBackend,
        spi: u32,
    ) -> (OutboundSa, InboundSa) {
        let mut o = cfg(alg, outer_v6, nat_t, esn, Direction::Outbound);
        let mut i = cfg(alg, outer_v6, nat_t, esn, Direction::Inbound);
        o.spi = spi;
        i.spi = spi;
        let mut out = OutboundSa::new_with(&o, 0, backend).unwrap();
        let mut inb = InboundSa::new_with(&i, 0, backend).unwrap();
        if esn {
            out.set_seq((1 << 32) - 5);
            inb.resume_replay((1 << 32) - 5);
        }
        (out, inb)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn batched_cbc_matches_single_packets(
            alg_i in 2usize..EspAlgorithm::ALL.len(),
            nat_t in any::<bool>(),
            outer_v6 in any::<bool>(),
            esn in any::<bool>(),
            lens in proptest::collection::vec(0usize..1450, 1..=MAX_BURST),
        ) {
            let alg = EspAlgorithm::ALL[alg_i];
            let mut mgr = Manager::new().unwrap();
            let (o_ring, i_ring) = sas(alg, outer_v6, nat_t, esn, CryptoBackend::Ring, SPI);
            let (o_mb, i_mb) = sas(alg, outer_v6, nat_t, esn, mb(), SPI);
            let (mut o_ring, mut i_ring, mut o_mb, mut i_mb) =
                ([o_ring], [i_ring], [o_mb], [i_mb]);
            let n = lens.len();
            let inners: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(k, &l)| if k % 3 == 1 { inner_v6(l, 0) } else { inner_v4(l, 0) })
                .collect();
            let mut a: Vec<TestBuffer> = inners.iter().map(|p| TestBuffer::from_slice(p)).collect();
            let mut b: Vec<TestBuffer> = inners.iter().map(|p| TestBuffer::from_slice(p)).collect();
            let idx = vec![0u32; n];
            let mut va = vec![Ok(()); n];
            let mut vb = vec![Ok(()); n];
            let mut da = DropCounters::default();
            let mut db = DropCounters::default();
            encap_burst(&mut o_ring, &mut a, &idx, &mut va, &mut da);
            encap_burst_mb(&mut mgr, &mut o_mb, &mut b, &idx, &mut vb, &mut db);
            prop_assert!(va.iter().chain(&vb).all(Result::is_ok));
            for k in 0..n {
                prop_assert_eq!(a[k].as_ref(), b[k].as_ref(), "packet {} of {}", k, n);
            }
            prop_assert_eq!(o_ring[0].counters(), o_mb[0].counters());
            // Each side opens the other's: ring's packets through the job
            // API, the job API's through ring.
            let offs = vec![esp_offset(outer_v6, nat_t); n];
            decap_burst_mb(&mut mgr, &mut i_mb, &mut a, &idx, &offs, &mut va, &mut da);
            decap_burst(&mut i_ring, &mut b, &idx, &offs, &mut vb, &mut db);
            prop_assert!(va.iter().chain(&vb).all(Result::is_ok), "{:?} {:?}", va, vb);
            for k in 0..n {
                prop_assert_eq!(a[k].as_ref(), &inners[k][..]);
                prop_assert_eq!(b[k].as_ref(), &inners[k][..]);
            }
            prop_assert_eq!(i_ring[0].counters(), i_mb[0].counters());
            prop_assert_eq!(da.total() + db.total(), 0);
        }
    }

    #[test]
    fn mixed_burst_drops_only_the_bad_packets() {
        let mut mgr = Manager::new().unwrap();
        let algs = [
            EspAlgorithm::Aes256Cbc(Integrity::HmacSha256_128),
            EspAlgorithm::Aes128Gcm16,
            EspAlgorithm::Aes128Cbc(Integrity::HmacSha1_96),
        ];
        let (mut outs, mut ins): (Vec<_>, Vec<_>) = algs
            .iter()
            .zip(0u32..)
            .map(|(&a, k)| sas(a, false, false, true, mb(), SPI + k))
            .unzip();
        let n = 40;
        let idx: Vec<u32> = (0..n).map(|k| [0, 0, 1, 2, 2][k % 5]).collect();
        let inners: Vec<Vec<u8>> = (0..n).map(|k| inner_v4(k * 37, 0)).collect();
        let mut pkts: Vec<TestBuffer> = inners.iter().map(|p| TestBuffer::from_slice(p)).collect();
        let mut verdicts = vec![Ok(()); n];
        let mut drops = DropCounters::default();
        encap_burst_mb(
            &mut mgr,
            &mut outs,
            &mut pkts,
            &idx,
            &mut verdicts,
            &mut drops,
        );
        assert!(verdicts.iter().all(Result::is_ok));
        // Tamper with a CBC packet (ciphertext) and a GCM one, replay a CBC
        // packet within the burst, and point one at no SA.
        let l = pkts[3].as_ref().len();
        pkts[3].as_mut()[l - 20] ^= 4;
        let l = pkts[7].as_ref().len();
        pkts[7].as_mut()[l - 1] ^= 1;
        pkts[20] = pkts[0].duplicate();
        let mut idx_in = idx.clone();
        idx_in[20] = 0;
        idx_in[11] = 7;
        let offs = vec![20; n];
        decap_burst_mb(
            &mut mgr,
            &mut ins,
            &mut pkts,
            &idx_in,
            &offs,
            &mut verdicts,
            &mut drops,
        );
        assert_eq!(verdicts[3], Err(DropReason::IcvFail));
        assert_eq!(verdicts[7], Err(DropReason::IcvFail));
        assert_eq!(verdicts[20], Err(DropReason::ReplayDuplicate));
        assert_eq!(verdicts[11], Err(DropReason::UnknownSpi));
        assert_eq!(drops.get(DropReason::IcvFail), 2);
        assert_eq!(drops.total(), 4);
        for k in (0..n).filter(|k| ![3, 7, 11, 20].contains(k)) {
            assert_eq!(verdicts[k], Ok(()), "packet {k}");
            assert_eq!(pkts[k].as_ref(), &inners[k][..], "packet {k}");
        }
        let accepted: u64 = ins.iter().map(|s| s.counters().packets).sum();
        assert_eq!(accepted, n as u64 - 4);
    }
}

/// Issue 20: the outer IPv4 header checksum is left to the NIC only when
/// both the SA (its worker's outside port offers the offload) and the
/// buffer (an mbuf) agree; an IPv6 outer header never asks.
#[test]
fn outer_ipv4_checksum_left_to_the_nic_only_when_both_agree() {
    for (sa_offload, nic_capable, outer_v6) in [
        (true, true, false),
        (true, false, false),
        (false, true, false),
        (true, true, true),
    ] {
        let (out, mut inb) = pair(EspAlgorithm::Aes128Gcm16, outer_v6, true, false);
        let mut out = out.with_tx_checksum_offload(sa_offload);
        let inner = inner_v4(100, 0);
        let mut b = TestBuffer::from_slice(&inner);
        if nic_capable {
            b.enable_tx_ipv4_checksum_offload();
        }
        encap(&mut out, &mut b).unwrap();
        let case = format!("sa {sa_offload} nic {nic_capable} v6 {outer_v6}");
        if sa_offload && nic_capable && !outer_v6 {
            assert_eq!(b.tx_ipv4_checksum_requested(), Some(20), "{case}");
            assert_eq!(&b.as_ref()[10..12], &[0, 0], "{case}: the NIC fills it");
            // What the NIC does before the wire.
            let mut wire = b.as_ref().to_vec();
            ipv4_fill_checksum(&mut wire);
            b.reset(&wire).unwrap();
        } else {
            assert_eq!(b.tx_ipv4_checksum_requested(), None, "{case}");
            if !outer_v6 {
                assert!(ipv4_checksum_ok(&b.as_ref()[..20]), "{case}");
            }
        }
        decap(&mut inb, &mut b, esp_offset(outer_v6, true)).unwrap();
        assert_eq!(b.as_ref(), &inner[..], "{case}");
    }
}

/// The NIC's receive verdict on the outer IPv4 header replaces the
/// software check: bad is dropped for it, good is trusted; with no
/// verdict the dataplane checks itself.
#[test]
fn outer_ipv4_checksum_verdict_of_the_nic_or_ours() {
    let sealed = |corrupt: bool| {
        let (mut out, inb) = pair(EspAlgorithm::Aes128Gcm16, false, false, false);
        let mut b = TestBuffer::from_slice(&inner_v4(64, 0));
        encap(&mut out, &mut b).unwrap();
        if corrupt {
            b.as_mut()[10] ^= 0x5a;
        }
        (inb, b)
    };
    for (verdict, corrupt, want) in [
        (RxChecksum::Unknown, false, None),
        (
            RxChecksum::Unknown,
            true,
            Some(DropReason::OuterBadChecksum),
        ),
        (RxChecksum::Bad, false, Some(DropReason::OuterBadChecksum)),
        (RxChecksum::Good, true, None),
    ] {
        let (mut inb, mut b) = sealed(corrupt);
        b.set_rx_ipv4_checksum(verdict);
        let got = decap(&mut inb, &mut b, 20).err();
        assert_eq!(got, want, "{verdict:?}, header corrupted: {corrupt}");
    }
}
