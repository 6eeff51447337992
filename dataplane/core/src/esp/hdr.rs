//! The few header facts encap/decap need, read and written through the
//! [`crate::wire`] views ([`Ipv4Packet`], [`Ipv6Packet`]) so that length
//! rules and field layouts live in one place. What stays here is the
//! ESP-specific glue: [`IpInfo`] (one struct for both families, which the
//! per-packet code branches on once) and the protocol numbers as `u8`
//! constants for `match` patterns.

use std::net::Ipv6Addr;

use crate::wire::{Ipv4Packet, Ipv6Packet, checksum, ipv4, ipv6, udp};

/// IPv4 header without options.
pub(crate) const IPV4_LEN: usize = ipv4::HEADER_LEN;
/// IPv6 fixed header.
pub(crate) const IPV6_LEN: usize = ipv6::HEADER_LEN;
/// UDP header.
pub(crate) const UDP_LEN: usize = udp::HEADER_LEN;
/// IP protocol numbers.
pub(crate) const PROTO_IPIP: u8 = 4;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const PROTO_IPV6: u8 = 41;
pub(crate) const PROTO_ESP: u8 = 50;
pub(crate) const PROTO_NONE: u8 = 59;
const _: () = assert!(IPV4_LEN == 20 && IPV6_LEN == 40 && UDP_LEN == 8);

/// Fills the checksum of the IPv4 header at the start of `h` (over IHL × 4
/// bytes; our outer headers carry no options).
pub(crate) fn ipv4_fill_checksum(h: &mut [u8]) {
    Ipv4Packet::new_unchecked(h).fill_checksum();
}

/// Whether an IPv4 header (with options) verifies.
pub(crate) fn ipv4_checksum_ok(h: &[u8]) -> bool {
    checksum::data(h) == 0xffff
}

/// Rewrites the ECN field of the IPv4 (`version` 4) or IPv6 header at
/// the start of `h`; IPv4 updates its checksum incrementally (RFC 1624).
pub(crate) fn set_ecn(h: &mut [u8], version: u8, ecn: u8) {
    if version == 4 {
        Ipv4Packet::new_unchecked(h).rewrite_ecn(ecn);
    } else {
        Ipv6Packet::new_unchecked(h).set_ecn(ecn);
    }
}

/// What encap/decap need from an inner (or outer) IP header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IpInfo {
    /// 4 or 6.
    pub(crate) version: u8,
    /// Header length (IPv4 IHL × 4, IPv6 40).
    pub(crate) header_len: usize,
    /// Total packet length claimed by the header.
    pub(crate) total_len: usize,
    /// DSCP (6 bits) and ECN (2 bits) as one byte.
    pub(crate) tos: u8,
    /// IPv4 DF bit (false for IPv6).
    pub(crate) df: bool,
    /// IPv4 protocol / IPv6 next header.
    pub(crate) proto: u8,
}

/// Parses an IPv4/IPv6 header at the start of `p`, checking that the
/// header fits and the claimed length fits in `p` (trailing bytes, e.g.
/// Ethernet padding, are allowed; the caller trims them): the
/// `new_checked` rules of [`Ipv4Packet`] / [`Ipv6Packet`], plus no IPv6
/// jumbogram (Payload Length 0, RFC 2675: not supported).
pub(crate) fn parse_ip(p: &[u8]) -> Option<IpInfo> {
    match p.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(p).ok()?;
            Some(IpInfo {
                version: 4,
                header_len: usize::from(ip.header_len()),
                total_len: usize::from(ip.total_len()),
                tos: (ip.dscp() << 2) | ip.ecn(),
                df: ip.dont_frag(),
                proto: u8::from(ip.protocol()),
            })
        }
        6 => {
            let ip = Ipv6Packet::new_checked(p).ok()?;
            if ip.payload_len() == 0 {
                return None;
            }
            Some(IpInfo {
                version: 6,
                header_len: IPV6_LEN,
                total_len: IPV6_LEN + usize::from(ip.payload_len()),
                tos: ip.traffic_class(),
                df: false,
                proto: u8::from(ip.next_header()),
            })
        }
        _ => None,
    }
}

/// The source and destination of the IPv6 header at the start of `h`.
pub(crate) fn v6_addrs(h: &[u8]) -> (Ipv6Addr, Ipv6Addr) {
    let ip = Ipv6Packet::new_unchecked(h);
    (ip.src_addr(), ip.dst_addr())
}

/// Writes the IPv6 traffic class (keeping version and flow label).
pub(crate) fn v6_set_tc(h: &mut [u8], tc: u8) {
    Ipv6Packet::new_unchecked(h).set_traffic_class(tc);
}
