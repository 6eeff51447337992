//! Tunnel MTU and TCP MSS clamping (spec § 14.3, § 25.3).
//!
//! The tunnel MTU is the largest inner IP packet whose ESP tunnel-mode
//! encapsulation still fits the 1500-byte outer MTU (the spec forbids
//! jumbo frames and relying on PMTUD):
//!
//! ```text
//!   outer IP (20 | 40) + [UDP 8] + ESP 8 + IV + roundup(inner + 2, align) + ICV ≤ 1500
//! ```
//!
//! so `mtu = floor(avail / align) × align − 2` with
//! `avail = 1500 − outer IP − UDP − 8 − IV − ICV`. Over an IPv4 outer
//! header this reproduces every row of the spec's table (tested below);
//! over IPv6 it is the same formula with 20 more bytes of header.
//!
//! MSS clamping rewrites the MSS option of transit TCP SYNs so that the
//! resulting segments fit the tunnel without fragmentation: IPv4 MSS =
//! MTU − 40, IPv6 MSS = MTU − 60 (spec § 14.3). Nothing at the IP level
//! changes (the option is rewritten in place, lengths stay), so only the
//! TCP checksum is updated, incrementally.
//!
//! Per-packet functions here never allocate, panic or read the clock.

use super::sa::{InboundSa, OutboundSa};
use crate::crypto::{ESP_HEADER_LEN, EspAlgorithm, EspTransform};
use crate::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, ipv4, ipv6, tcp};

// Spec § 22: "Large bandwidth tunnels keep the 1500-byte (outer) MTU
// limit"; § 21: "Jumbo frames not supported. PMTUD not supported."
/// The outer (physical) MTU every tunnel is sized for.
pub const OUTER_MTU: u16 = 1500;

/// IPv4 + TCP header without options: IPv4 MSS = MTU − 40 (spec § 14.3).
pub const V4_TCP_OVERHEAD: u16 = 40;
/// IPv6 + TCP header without options: IPv6 MSS = MTU − 60 (spec § 14.3).
pub const V6_TCP_OVERHEAD: u16 = 60;

const IPV4_OUTER: usize = 20;
const IPV6_OUTER: usize = 40;
const UDP_LEN: usize = 8;

/// Largest inner packet for the given transform sizes.
fn mtu_from_sizes(outer_ip: usize, udp: bool, iv: usize, icv: usize, align: usize) -> u16 {
    let fixed = outer_ip + if udp { UDP_LEN } else { 0 } + ESP_HEADER_LEN + iv + icv;
    let avail = usize::from(OUTER_MTU).saturating_sub(fixed);
    let align = align.max(1);
    let mtu = (avail / align * align).saturating_sub(2);
    u16::try_from(mtu).unwrap_or(0)
}

/// The tunnel MTU (largest inner IP packet) for an algorithm suite, with
/// or without NAT-T UDP encapsulation, over an IPv4 or IPv6 outer header
/// (spec § 14.3).
#[must_use]
pub fn tunnel_mtu(alg: EspAlgorithm, nat_t: bool, outer_v6: bool) -> u16 {
    let outer = if outer_v6 { IPV6_OUTER } else { IPV4_OUTER };
    mtu_from_sizes(outer, nat_t, alg.iv_len(), alg.icv_len(), alg.pad_align())
}

/// The tunnel MTU of a runtime SA (its transform and outer template).
#[must_use]
pub fn sa_tunnel_mtu(sa: &OutboundSa) -> u16 {
    mtu_from_sizes(
        usize::from(sa.template.ip_len),
        sa.template.udp,
        sa.transform.iv_len(),
        sa.transform.icv_len(),
        sa.transform.pad_align(),
    )
}

/// The tunnel MTU of an inbound SA, i.e. of the peer's encapsulation
/// (same transform sizes, NAT-T and outer family): used to clamp the MSS
/// of SYNs that arrive through the tunnel.
#[must_use]
pub fn inbound_sa_tunnel_mtu(sa: &InboundSa) -> u16 {
    mtu_from_sizes(
        if sa.outer_v6 { IPV6_OUTER } else { IPV4_OUTER },
        sa.nat_t,
        sa.transform.iv_len(),
        sa.transform.icv_len(),
        sa.transform.pad_align(),
    )
}

/// The MSS for inner IPv4 TCP over a tunnel of this MTU (MTU − 40).
#[must_use]
pub const fn mss_v4(tunnel_mtu: u16) -> u16 {
    tunnel_mtu.saturating_sub(V4_TCP_OVERHEAD)
}

/// The MSS for inner IPv6 TCP over a tunnel of this MTU (MTU − 60; the
/// spec's "IPv6-in-IPv4" column).
#[must_use]
pub const fn mss_v6(tunnel_mtu: u16) -> u16 {
    tunnel_mtu.saturating_sub(V6_TCP_OVERHEAD)
}

/// Clamps the MSS option of an inner TCP SYN (IPv4 or IPv6) to
/// `max_mss_v4` / `max_mss_v6` (normally [`mss_v4`] / [`mss_v6`] of the
/// tunnel MTU); returns whether the packet changed.
///
/// `inner` is the inner IP packet from its first header byte (trailing
/// bytes past the IP length are ignored). Non-TCP packets, non-SYNs,
/// non-first fragments, SYNs without an MSS option and malformed packets
/// are left alone: this is an optimisation on transit traffic, never a
/// reason to drop. Steps:
///
/// 1. IPv4: lengths checked ([`Ipv4Packet::new_checked`]); protocol TCP;
///    fragment offset 0 (the TCP header is in the first fragment).
/// 2. IPv6: the extension chain is walked
///    ([`Ipv6Packet::upper_layer`]); upper layer TCP, not a non-first
///    fragment.
/// 3. [`TcpPacket::clamp_mss`] rewrites the option and updates the TCP
///    checksum incrementally ([RFC 1624]); the IP header is untouched.
///
/// [RFC 1624]: https://www.rfc-editor.org/rfc/rfc1624
pub fn mss_clamp(inner: &mut [u8], max_mss_v4: u16, max_mss_v6: u16) -> bool {
    let (start, end, max) = match inner.first().map(|b| b >> 4) {
        Some(4) => {
            // 1.
            let Ok(ip) = Ipv4Packet::new_checked(&*inner) else {
                return false;
            };
            if ip.version() != 4 || ip.protocol() != IpProtocol::Tcp || ip.frag_offset_bytes() != 0
            {
                return false;
            }
            (
                usize::from(ip.header_len()),
                usize::from(ip.total_len()),
                max_mss_v4,
            )
        }
        Some(6) => {
            // 2.
            let Ok(ip) = Ipv6Packet::new_checked(&*inner) else {
                return false;
            };
            let Ok(ul) = ip.upper_layer() else {
                return false;
            };
            if ul.protocol != IpProtocol::Tcp || ul.fragment.is_some_and(|f| !f.is_first()) {
                return false;
            }
            (
                ul.offset,
                ipv6::HEADER_LEN + usize::from(ip.payload_len()),
                max_mss_v6,
            )
        }
        _ => return false,
    };
    // 3.
    let Some(segment) = inner.get_mut(start..end) else {
        return false;
    };
    if segment.len() < tcp::HEADER_LEN {
        return false;
    }
    match TcpPacket::new_checked(segment) {
        Ok(mut t) => t.clamp_mss(max),
        Err(_) => false,
    }
}

// Keep the IPv4 constant referenced for the reader: the MSS overhead is
// the option-less IPv4 header plus the option-less TCP header.
const _: () = assert!(ipv4::HEADER_LEN + tcp::HEADER_LEN == V4_TCP_OVERHEAD as usize);
const _: () = assert!(ipv6::HEADER_LEN + tcp::HEADER_LEN == V6_TCP_OVERHEAD as usize);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Integrity::{HmacSha1_96, HmacSha256_128, HmacSha384_192, HmacSha512_256};
    use crate::esp::sa::Direction;
    use crate::esp::tests::cfg;
    use crate::wire::IpPair;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Spec § 14.3, verbatim: (alg, NAT-T, MTU, MSS v4, MSS v6-in-v4).
    const TABLE: &[(EspAlgorithm, bool, u16, u16, u16)] = &[
        (EspAlgorithm::Aes128Gcm16, false, 1446, 1406, 1386),
        (EspAlgorithm::Aes256Gcm16, false, 1446, 1406, 1386),
        (EspAlgorithm::Aes128Gcm16, true, 1438, 1398, 1378),
        (EspAlgorithm::Aes256Gcm16, true, 1438, 1398, 1378),
        (
            EspAlgorithm::Aes128Cbc(HmacSha1_96),
            false,
            1438,
            1398,
            1378,
        ),
        (
            EspAlgorithm::Aes256Cbc(HmacSha256_128),
            false,
            1438,
            1398,
            1378,
        ),
        (EspAlgorithm::Aes128Cbc(HmacSha1_96), true, 1422, 1382, 1362),
        (
            EspAlgorithm::Aes256Cbc(HmacSha256_128),
            true,
            1422,
            1382,
            1362,
        ),
        (
            EspAlgorithm::Aes128Cbc(HmacSha384_192),
            false,
            1422,
            1382,
            1362,
        ),
        (
            EspAlgorithm::Aes256Cbc(HmacSha384_192),
            true,
            1422,
            1382,
            1362,
        ),
        (
            EspAlgorithm::Aes128Cbc(HmacSha512_256),
            false,
            1422,
            1382,
            1362,
        ),
        (
            EspAlgorithm::Aes256Cbc(HmacSha512_256),
            true,
            1406,
            1366,
            1346,
        ),
    ];

    #[test]
    fn spec_table_14_3() {
        for &(alg, nat_t, mtu, v4, v6) in TABLE {
            let m = tunnel_mtu(alg, nat_t, false);
            assert_eq!(m, mtu, "{alg:?} nat_t={nat_t}");
            assert_eq!(mss_v4(m), v4, "{alg:?} nat_t={nat_t}");
            assert_eq!(mss_v6(m), v6, "{alg:?} nat_t={nat_t}");
        }
        // Outer IPv6: 20 more bytes of header.
        assert_eq!(tunnel_mtu(EspAlgorithm::Aes128Gcm16, false, true), 1426);
        assert_eq!(
            tunnel_mtu(EspAlgorithm::Aes256Cbc(HmacSha512_256), true, true),
            1390
        );
    }

    /// The MTU is exact: an inner packet of `mtu` bytes encapsulates to at
    /// most 1500 bytes, one of `mtu + 1` to more.
    #[test]
    fn mtu_is_tight_against_real_encap() {
        for alg in EspAlgorithm::ALL {
            for nat_t in [false, true] {
                for v6 in [false, true] {
                    let c = cfg(alg, v6, nat_t, false, Direction::Outbound);
                    let mut sa = OutboundSa::new(&c, 0).unwrap();
                    let mtu = tunnel_mtu(alg, nat_t, v6);
                    assert_eq!(sa_tunnel_mtu(&sa), mtu);
                    let ci = cfg(alg, v6, nat_t, false, Direction::Inbound);
                    let inb = InboundSa::new(&ci, 0).unwrap();
                    assert_eq!(
                        inbound_sa_tunnel_mtu(&inb),
                        mtu,
                        "inbound {alg:?} {nat_t} {v6}"
                    );
                    for (len, fits) in [(mtu, true), (mtu + 1, false)] {
                        let inner = crate::esp::tests::inner_v4(usize::from(len) - 28, 0);
                        let mut b = netbuf::TestBuffer::from_slice(&inner);
                        crate::esp::encap(&mut sa, &mut b).unwrap();
                        assert_eq!(b.len() <= 1500, fits, "{alg:?} {nat_t} {v6} {len}");
                    }
                }
            }
        }
    }

    fn syn(v6: bool, options: &[u8], flags: u8) -> Vec<u8> {
        let hl = 20 + options.len();
        let mut t = vec![0u8; hl + 4];
        t[0..2].copy_from_slice(&1234u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[12] = u8::try_from(hl / 4).unwrap() << 4;
        t[13] = flags;
        t[20..hl].copy_from_slice(options);
        let ips;
        let mut p = if v6 {
            let (s, d): (Ipv6Addr, Ipv6Addr) = (
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            );
            ips = IpPair::V6 { src: s, dst: d };
            let mut h = vec![0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&u16::try_from(t.len()).unwrap().to_be_bytes());
            h[6] = 6;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            h
        } else {
            let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
            ips = IpPair::V4 { src: s, dst: d };
            let mut h = vec![0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&u16::try_from(20 + t.len()).unwrap().to_be_bytes());
            h[8] = 64;
            h[9] = 6;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            crate::esp::hdr::ipv4_fill_checksum(&mut h);
            h
        };
        TcpPacket::new_unchecked(&mut t[..]).fill_checksum(&ips);
        p.extend_from_slice(&t);
        p
    }

    fn tcp_ok(p: &[u8]) -> (Option<u16>, bool) {
        if p[0] >> 4 == 4 {
            let ip = Ipv4Packet::new_checked(p).unwrap();
            assert!(ip.verify_checksum());
            let ips = IpPair::V4 {
                src: ip.src_addr(),
                dst: ip.dst_addr(),
            };
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            (t.max_seg_size(), t.verify_checksum(&ips))
        } else {
            let ip = Ipv6Packet::new_checked(p).unwrap();
            let ips = IpPair::V6 {
                src: ip.src_addr(),
                dst: ip.dst_addr(),
            };
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            (t.max_seg_size(), t.verify_checksum(&ips))
        }
    }

    #[test]
    fn clamp_syn_v4_and_v6() {
        let mtu = tunnel_mtu(EspAlgorithm::Aes128Gcm16, false, false);
        let (m4, m6) = (mss_v4(mtu), mss_v6(mtu));
        // MSS 1460 at an even offset; MSS after a NOP (odd offset).
        for opts in [
            &[2u8, 4, 0x05, 0xb4][..],
            &[1, 2, 4, 0x05, 0xb4, 0, 0, 0][..],
        ] {
            for v6 in [false, true] {
                let mut p = syn(v6, opts, 0x02);
                assert!(mss_clamp(&mut p, m4, m6));
                let want = if v6 { 1386 } else { 1406 };
                assert_eq!(tcp_ok(&p), (Some(want), true), "v6={v6} {opts:?}");
                // Idempotent.
                assert!(!mss_clamp(&mut p, m4, m6));
                // SYN-ACK is clamped too.
                let mut p = syn(v6, opts, 0x12);
                assert!(mss_clamp(&mut p, m4, m6));
                assert_eq!(tcp_ok(&p), (Some(want), true));
            }
        }
    }

    #[test]
    fn clamp_leaves_alone() {
        for v6 in [false, true] {
            // No MSS option.
            let mut p = syn(v6, &[], 0x02);
            let before = p.clone();
            assert!(!mss_clamp(&mut p, 1000, 1000));
            assert_eq!(p, before);
            // Already small.
            let mut p = syn(v6, &[2, 4, 0x01, 0xf4], 0x02);
            assert!(!mss_clamp(&mut p, 1000, 1000));
            assert_eq!(tcp_ok(&p), (Some(500), true));
            // Not a SYN.
            let mut p = syn(v6, &[2, 4, 0x05, 0xb4], 0x10);
            assert!(!mss_clamp(&mut p, 1000, 1000));
        }
        // Non-TCP, truncated, garbage.
        let mut p = syn(false, &[2, 4, 0x05, 0xb4], 0x02);
        p[9] = 17;
        crate::esp::hdr::ipv4_fill_checksum(&mut p);
        assert!(!mss_clamp(&mut p, 1000, 1000));
        assert!(!mss_clamp(&mut [], 1000, 1000));
        assert!(!mss_clamp(&mut [0x45, 0, 0], 1000, 1000));
        // IPv4 non-first fragment is skipped.
        let mut p = syn(false, &[2, 4, 0x05, 0xb4], 0x02);
        p[7] = 1;
        assert!(!mss_clamp(&mut p, 1000, 1000));
    }

    proptest::proptest! {
        #[test]
        fn clamp_arbitrary_bytes_never_panics(mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), v6 in proptest::bool::ANY) {
            if let Some(b) = bytes.first_mut() {
                *b = if v6 { 0x60 | (*b & 0xf) } else { 0x45 };
            }
            let _ = mss_clamp(&mut bytes, 1000, 1000);
        }
    }
}
