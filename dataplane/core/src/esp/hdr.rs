//! Minimal private header helpers for encap/decap.
//!
//! Checksums use [`crate::wire::checksum`]. The header parsing below is
//! to replace with `wire::ipv4::Ipv4Packet::new_checked` /
//! `wire::ipv6::Ipv6Packet::new_checked` and the header writes with their
//! setters once those views are settled; kept here (a few offsets) so the
//! ESP core did not depend on a module still being written.

use std::net::Ipv6Addr;

use crate::wire::{IpProtocol, checksum};

/// IPv4 header without options.
pub(crate) const IPV4_LEN: usize = 20;
/// IPv6 fixed header.
pub(crate) const IPV6_LEN: usize = 40;
/// UDP header.
pub(crate) const UDP_LEN: usize = 8;
/// IP protocol numbers.
pub(crate) const PROTO_IPIP: u8 = 4;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const PROTO_IPV6: u8 = 41;
pub(crate) const PROTO_ESP: u8 = 50;
pub(crate) const PROTO_NONE: u8 = 59;

/// Fills the checksum of the IPv4 header at `h[..20]` (no options: our
/// outer headers never carry any).
pub(crate) fn ipv4_fill_checksum(h: &mut [u8]) {
    h[10] = 0;
    h[11] = 0;
    let c = !checksum::data(&h[..IPV4_LEN]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Whether an IPv4 header (with options) verifies.
pub(crate) fn ipv4_checksum_ok(h: &[u8]) -> bool {
    checksum::data(h) == 0xffff
}

/// RFC 1624 incremental update of an IPv4 header checksum after the
/// 16-bit word at `h[0..2]` (version/IHL + TOS) changed from `old`.
pub(crate) fn ipv4_update_first_word(h: &mut [u8], old: u16) {
    let new = u16::from_be_bytes([h[0], h[1]]);
    let field = u16::from_be_bytes([h[10], h[11]]);
    h[10..12].copy_from_slice(&checksum::update(field, old, new).to_be_bytes());
}

/// UDP checksum over IPv6 (RFC 8200 § 8.1); `udp` is header + payload
/// with the checksum field zero. A computed 0 is sent as 0xFFFF.
pub(crate) fn udp6_checksum(src: Ipv6Addr, dst: Ipv6Addr, udp: &[u8]) -> u16 {
    let len = u32::try_from(udp.len()).unwrap_or(u32::MAX);
    let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::Udp, len);
    match !checksum::combine(&[pseudo, checksum::data(udp)]) {
        0 => 0xFFFF,
        c => c,
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
/// Ethernet padding, are allowed; the caller trims them).
pub(crate) fn parse_ip(p: &[u8]) -> Option<IpInfo> {
    let v = p.first()? >> 4;
    match v {
        4 => {
            if p.len() < IPV4_LEN {
                return None;
            }
            let ihl = usize::from(p[0] & 0x0F) * 4;
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            if ihl < IPV4_LEN || total < ihl || total > p.len() {
                return None;
            }
            Some(IpInfo {
                version: 4,
                header_len: ihl,
                total_len: total,
                tos: p[1],
                df: p[6] & 0x40 != 0,
                proto: p[9],
            })
        }
        6 => {
            if p.len() < IPV6_LEN {
                return None;
            }
            // Payload length 0 = jumbogram (RFC 2675): not supported.
            let plen = usize::from(u16::from_be_bytes([p[4], p[5]]));
            let total = IPV6_LEN + plen;
            if plen == 0 || total > p.len() {
                return None;
            }
            Some(IpInfo {
                version: 6,
                header_len: IPV6_LEN,
                total_len: total,
                tos: (p[0] << 4) | (p[1] >> 4),
                df: false,
                proto: p[6],
            })
        }
        _ => None,
    }
}

/// Reads IPv6 addresses at the usual offsets.
pub(crate) fn v6_addrs(h: &[u8]) -> (Ipv6Addr, Ipv6Addr) {
    let mut s = [0u8; 16];
    let mut d = [0u8; 16];
    s.copy_from_slice(&h[8..24]);
    d.copy_from_slice(&h[24..40]);
    (Ipv6Addr::from(s), Ipv6Addr::from(d))
}

/// Writes the IPv6 traffic class (keeping version and flow label).
pub(crate) fn v6_set_tc(h: &mut [u8], tc: u8) {
    h[0] = 0x60 | (tc >> 4);
    h[1] = (h[1] & 0x0F) | (tc << 4);
}
