//! IPv6 neighbour discovery for the outside port's addresses ([RFC 4861]):
//! the IPv6 counterpart of the worker's ARP replies. A Neighbor
//! Solicitation for one of [`Addresses::outside_v6`](crate::Addresses) is
//! validated (§ 7.1.1) and rewritten in place into the solicited Neighbor
//! Advertisement (§ 7.2.4) with our MAC as target link-layer address; the
//! router toward the customer gateways can then resolve our outside
//! IPv6 addresses. Nothing else of ND is done here: the worker never
//! solicits (its next hop's MAC is configured), and router/redirect
//! messages go to the kernel like any other ICMPv6 to our addresses.
//!
//! No allocation, no panic: a frame that is not a well-formed
//! solicitation for one of our addresses is refused with the reason the
//! caller counts.
//!
//! [RFC 4861]: https://www.rfc-editor.org/rfc/rfc4861

use std::net::Ipv6Addr;

use dataplane::wire::IpProtocol;
use dataplane::wire::checksum;
use dataplane::wire::ethernet::HEADER_LEN as ETH_LEN;

use crate::stats::Drop;

/// IPv6 header length.
const IP6_LEN: usize = 40;
/// ICMPv6 Neighbor Solicitation / Advertisement type values (§ 4.3, 4.4).
const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// Type, code, checksum, reserved/flags, target address.
const NS_LEN: usize = 24;
/// Source / Target Link-Layer Address option types (§ 4.6.1).
const OPT_SOURCE_LLA: u8 = 1;
const OPT_TARGET_LLA: u8 = 2;
/// Our advertisement: header, target and one 8-byte TLLA option.
const NA_ICMP_LEN: usize = NS_LEN + 8;
/// The whole frame we send.
pub(crate) const NA_FRAME_LEN: usize = ETH_LEN + IP6_LEN + NA_ICMP_LEN;
/// Flags of a solicited advertisement: Solicited and Override (§ 7.2.4);
/// we are not a router.
const FLAGS_SOLICITED_OVERRIDE: u8 = 0x60;
/// Override only, for an answer to an unspecified source (DAD).
const FLAGS_OVERRIDE: u8 = 0x20;

/// Whether `frame` is IPv6 carrying ICMPv6 type 135 directly after the
/// fixed header (where § 7.1.1 wants it: no extension header has a
/// reason to precede a solicitation, and we do not look further).
#[must_use]
pub(crate) fn is_solicitation(frame: &[u8]) -> bool {
    frame.len() >= ETH_LEN + IP6_LEN + NS_LEN
        && frame[12..14] == [0x86, 0xdd]
        && frame[ETH_LEN] >> 4 == 6
        && frame[ETH_LEN + 6] == 58
        && frame[ETH_LEN + IP6_LEN] == NEIGHBOR_SOLICITATION
}

/// What a valid solicitation for one of our addresses asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Solicitation {
    /// Our address it asks about.
    pub(crate) target: Ipv6Addr,
    /// Its IPv6 source (unspecified for duplicate address detection).
    pub(crate) source: Ipv6Addr,
    /// Where to send the answer at layer 2.
    pub(crate) source_mac: [u8; 6],
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

/// The solicited-node multicast address of `a` (RFC 4291 § 2.7.1).
fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// Validates a Neighbor Solicitation (`frame` passed [`is_solicitation`])
/// as RFC 4861 § 7.1.1 numbers it, and checks its target is in `ours`.
///
/// # Errors
/// [`Drop::Malformed`] for an invalid message, [`Drop::NdIgnored`] for a
/// valid one about an address that is not ours.
pub(crate) fn parse(frame: &[u8], ours: &[Ipv6Addr]) -> Result<Solicitation, Drop> {
    let ip = frame.get(ETH_LEN..).ok_or(Drop::Malformed)?;
    if ip.len() < IP6_LEN {
        return Err(Drop::Malformed);
    }
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let icmp = ip
        .get(IP6_LEN..IP6_LEN + payload_len)
        .ok_or(Drop::Malformed)?;
    let (src, dst) = (addr(&ip[8..24]), addr(&ip[24..40]));
    // 1. The IP Hop Limit is 255 (the sender is on this link).
    // 3. ICMP Code is 0.  4. ICMP length is 24 or more octets.
    if ip[7] != 255 || icmp.len() < NS_LEN || icmp[1] != 0 {
        return Err(Drop::Malformed);
    }
    // 2. ICMP Checksum is valid.
    let len = u32::try_from(icmp.len()).map_err(|_| Drop::Malformed)?;
    let sum = checksum::combine(&[
        checksum::pseudo_header_v6(src, dst, IpProtocol::Icmpv6, len),
        checksum::data(icmp),
    ]);
    if sum != 0xffff {
        return Err(Drop::Malformed);
    }
    // 5. Target Address is not a multicast address.
    let target = addr(&icmp[8..24]);
    if target.is_multicast() {
        return Err(Drop::Malformed);
    }
    // 6. All included options have a length that is greater than zero.
    let mut source_mac = [frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]];
    let mut has_slla = false;
    let mut opts = &icmp[NS_LEN..];
    while !opts.is_empty() {
        let olen = usize::from(*opts.get(1).ok_or(Drop::Malformed)?) * 8;
        if olen == 0 || olen > opts.len() {
            return Err(Drop::Malformed);
        }
        if opts[0] == OPT_SOURCE_LLA && olen == 8 {
            has_slla = true;
            source_mac.copy_from_slice(&opts[2..8]);
        }
        opts = &opts[olen..];
    }
    // 7. If the IP source address is the unspecified address, the IP
    //    destination address is a solicited-node multicast address, and
    //    there is no source link-layer address option.
    if src.is_unspecified() && (dst != solicited_node(target) || has_slla) {
        return Err(Drop::Malformed);
    }
    if !ours.contains(&target) {
        return Err(Drop::NdIgnored);
    }
    Ok(Solicitation {
        target,
        source: src,
        source_mac,
    })
}

/// Writes our Neighbor Advertisement for `s` into `frame`, which must be
/// exactly [`NA_FRAME_LEN`] bytes (the caller resizes the buffer): sent
/// from `mac` and the target address, to the solicitation's source (or,
/// for duplicate address detection, to all nodes, unsolicited).
pub(crate) fn write_advertisement(frame: &mut [u8], mac: [u8; 6], s: &Solicitation) {
    if frame.len() != NA_FRAME_LEN {
        return;
    }
    let (dst, dst_mac, flags) = if s.source.is_unspecified() {
        // § 7.2.4: to the all-nodes multicast address, Solicited clear.
        (
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
            [0x33, 0x33, 0, 0, 0, 1],
            FLAGS_OVERRIDE,
        )
    } else {
        (s.source, s.source_mac, FLAGS_SOLICITED_OVERRIDE)
    };
    frame[0..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&[0x86, 0xdd]);
    let ip = &mut frame[ETH_LEN..];
    ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    ip[4..6].copy_from_slice(&u16::try_from(NA_ICMP_LEN).unwrap_or(0).to_be_bytes());
    ip[6] = 58;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&s.target.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    let icmp = &mut ip[IP6_LEN..];
    icmp[0] = NEIGHBOR_ADVERTISEMENT;
    icmp[1] = 0;
    icmp[2..4].copy_from_slice(&[0, 0]);
    icmp[4..8].copy_from_slice(&[flags, 0, 0, 0]);
    icmp[8..24].copy_from_slice(&s.target.octets());
    icmp[24] = OPT_TARGET_LLA;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&mac);
    let len = u32::try_from(NA_ICMP_LEN).unwrap_or(0);
    let sum = checksum::combine(&[
        checksum::pseudo_header_v6(s.target, dst, IpProtocol::Icmpv6, len),
        checksum::data(icmp),
    ]);
    icmp[2..4].copy_from_slice(&(!sum).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const PEER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    /// A solicitation as a host sends it: to the solicited-node address,
    /// hop limit 255, with a source link-layer address option unless
    /// `src` is unspecified.
    fn solicitation(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let dst = solicited_node(target);
        let with_slla = !src.is_unspecified();
        let icmp_len = NS_LEN + if with_slla { 8 } else { 0 };
        let mut f = vec![0u8; ETH_LEN + IP6_LEN + icmp_len];
        f[0..6].copy_from_slice(&[0x33, 0x33, 0xff, 0, 0, 1]);
        f[6..12].copy_from_slice(&PEER_MAC);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        let ip = &mut f[ETH_LEN..];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&u16::try_from(icmp_len).unwrap().to_be_bytes());
        ip[6] = 58;
        ip[7] = 255;
        ip[8..24].copy_from_slice(&src.octets());
        ip[24..40].copy_from_slice(&dst.octets());
        let icmp = &mut ip[IP6_LEN..];
        icmp[0] = NEIGHBOR_SOLICITATION;
        icmp[8..24].copy_from_slice(&target.octets());
        if with_slla {
            icmp[24] = OPT_SOURCE_LLA;
            icmp[25] = 1;
            icmp[26..32].copy_from_slice(&PEER_MAC);
        }
        let sum = checksum::combine(&[
            checksum::pseudo_header_v6(
                src,
                dst,
                IpProtocol::Icmpv6,
                u32::try_from(icmp_len).unwrap(),
            ),
            checksum::data(icmp),
        ]);
        icmp[2..4].copy_from_slice(&(!sum).to_be_bytes());
        f
    }

    fn answer(f: &[u8]) -> Vec<u8> {
        let s = parse(f, &[OURS]).unwrap();
        let mut out = vec![0xa5; NA_FRAME_LEN];
        write_advertisement(&mut out, OUR_MAC, &s);
        out
    }

    #[test]
    fn a_solicitation_for_our_address_gets_a_solicited_advertisement() {
        let f = solicitation(PEER, OURS);
        assert!(is_solicitation(&f));
        let na = answer(&f);
        assert_eq!(&na[0..6], &PEER_MAC);
        assert_eq!(&na[6..12], &OUR_MAC);
        let ip = &na[ETH_LEN..];
        assert_eq!((ip[6], ip[7]), (58, 255));
        assert_eq!(addr(&ip[8..24]), OURS);
        assert_eq!(addr(&ip[24..40]), PEER);
        let icmp = &ip[IP6_LEN..];
        assert_eq!((icmp[0], icmp[1], icmp[4]), (136, 0, 0x60));
        assert_eq!(addr(&icmp[8..24]), OURS);
        assert_eq!(&icmp[24..32], &[2, 1, 2, 0, 0, 0, 0, 1]);
        // The checksum verifies.
        let sum = checksum::combine(&[
            checksum::pseudo_header_v6(OURS, PEER, IpProtocol::Icmpv6, 32),
            checksum::data(icmp),
        ]);
        assert_eq!(sum, 0xffff);
    }

    #[test]
    fn duplicate_address_detection_is_answered_to_all_nodes() {
        let f = solicitation(Ipv6Addr::UNSPECIFIED, OURS);
        let na = answer(&f);
        assert_eq!(&na[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(
            addr(&na[ETH_LEN + 24..ETH_LEN + 40]),
            "ff02::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(na[ETH_LEN + IP6_LEN + 4], 0x20);
    }

    #[test]
    fn invalid_or_foreign_solicitations_are_refused_by_reason() {
        let other = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9);
        assert_eq!(
            parse(&solicitation(PEER, other), &[OURS]),
            Err(Drop::NdIgnored)
        );
        // Hop limit below 255 (forwarded from elsewhere).
        let mut f = solicitation(PEER, OURS);
        f[ETH_LEN + 7] = 64;
        assert_eq!(parse(&f, &[OURS]), Err(Drop::Malformed));
        // Bad checksum.
        let mut f = solicitation(PEER, OURS);
        f[ETH_LEN + IP6_LEN + 2] ^= 1;
        assert_eq!(parse(&f, &[OURS]), Err(Drop::Malformed));
        // Zero-length option.
        let mut f = solicitation(PEER, OURS);
        f[ETH_LEN + IP6_LEN + 25] = 0;
        assert_eq!(parse(&f, &[OURS]), Err(Drop::Malformed));
        // Truncated: the payload length promises more than the frame has.
        let f = solicitation(PEER, OURS);
        assert_eq!(parse(&f[..f.len() - 4], &[OURS]), Err(Drop::Malformed));
        // Every truncation is refused or parsed, never a panic.
        for n in 0..f.len() {
            if is_solicitation(&f[..n]) {
                let _ = parse(&f[..n], &[OURS]);
            }
        }
    }
}
