//! The Internet checksum: [RFC 1071] one's-complement sums, [RFC 1624]
//! incremental updates, and the IPv4 ([RFC 768]) and IPv6
//! ([RFC 8200 § 8.1]) pseudo-headers.
//!
//! Functions here return the *sum* (folded to 16 bits, not inverted)
//! unless their name says otherwise. A header's checksum field holds the
//! complement of the sum over the covered data with the field itself zero;
//! a received header verifies when the sum over the covered data *including*
//! the checksum field is `0xffff`.
//!
//! ```text
//!  fill:    field = !combine(&[pseudo, data(header_with_zero_field)])
//!  verify:  combine(&[pseudo, data(header_as_received)]) == 0xffff
//! ```
//!
//! [RFC 1071]: https://www.rfc-editor.org/rfc/rfc1071
//! [RFC 1624]: https://www.rfc-editor.org/rfc/rfc1624
//! [RFC 768]: https://www.rfc-editor.org/rfc/rfc768
//! [RFC 8200 § 8.1]: https://www.rfc-editor.org/rfc/rfc8200#section-8.1

use core::net::{Ipv4Addr, Ipv6Addr};

use super::IpProtocol;

/// Folds a wide one's-complement accumulator to 16 bits.
#[inline]
const fn fold(mut acc: u64) -> u16 {
    // Each fold adds the carries back in (end-around carry, RFC 1071 § 2(C)).
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    let [.., hi, lo] = acc.to_be_bytes();
    u16::from_be_bytes([hi, lo])
}

/// The one's-complement sum of `data` as a sequence of big-endian 16-bit
/// words, an odd final byte padded with a zero low byte ([RFC 1071 § 4.1]).
///
/// Sums 32-bit words into a 64-bit accumulator and folds once at the end;
/// this is the same sum because 2¹⁶ ≡ 1 modulo 2¹⁶ − 1 ([RFC 1071 § 2(B)]).
///
/// [RFC 1071 § 4.1]: https://www.rfc-editor.org/rfc/rfc1071#section-4.1
/// [RFC 1071 § 2(B)]: https://www.rfc-editor.org/rfc/rfc1071#section-2
#[must_use]
pub fn data(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut rest = words.remainder().chunks_exact(2);
    for w in &mut rest {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = rest.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    fold(acc)
}

/// Adds partial sums (each from [`data`] over an *even*-length span, or a
/// pseudo-header sum) in one's-complement arithmetic.
#[must_use]
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// The pseudo-header sum for an upper-layer checksum over IPv4
/// ([RFC 768], [RFC 9293 § 3.1]): source, destination, zero, protocol,
/// and the upper-layer length.
///
/// [RFC 768]: https://www.rfc-editor.org/rfc/rfc768
/// [RFC 9293 § 3.1]: https://www.rfc-editor.org/rfc/rfc9293#section-3.1
#[must_use]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, length: u32) -> u16 {
    let mut acc = u64::from(src.to_bits()) + u64::from(dst.to_bits());
    acc += u64::from(u8::from(protocol));
    acc += u64::from(length);
    fold(acc)
}

/// The pseudo-header sum for an upper-layer checksum over IPv6
/// ([RFC 8200 § 8.1]): source, destination, 32-bit upper-layer packet
/// length, three zero bytes and the Next Header value of the upper layer.
///
/// [RFC 8200 § 8.1]: https://www.rfc-editor.org/rfc/rfc8200#section-8.1
#[must_use]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: IpProtocol, length: u32) -> u16 {
    let mut acc: u64 = src
        .segments()
        .iter()
        .chain(dst.segments().iter())
        .map(|&w| u64::from(w))
        .sum();
    acc += u64::from(length);
    acc += u64::from(u8::from(next_header));
    fold(acc)
}

/// Incrementally updates a *checksum field* (the complemented value as it
/// sits in the header) after one 16-bit word of the covered data changed
/// from `old` to `new`, using equation 3 of [RFC 1624 § 3]:
///
/// ```text
///   HC' = ~(~HC + ~m + m')
/// ```
///
/// Equation 3 (rather than RFC 1141's equation 2) never produces `0x0000`
/// from a nonzero sum, so it is correct for the IPv4 header, TCP and UDP.
/// `old` and `new` must be the word as it is aligned in the checksummed
/// data; for a 16-bit value that starts at an *odd* offset (a TCP option
/// after a single NOP), pass both values byte-swapped
/// ([RFC 1071 § 2(B)], byte-order independence).
///
/// Used for TTL/Hop Limit decrements, DSCP rewrites and TCP MSS clamping.
///
/// [RFC 1624 § 3]: https://www.rfc-editor.org/rfc/rfc1624#section-3
/// [RFC 1071 § 2(B)]: https://www.rfc-editor.org/rfc/rfc1071#section-2
#[must_use]
pub fn update(checksum_field: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!checksum_field) + u64::from(!old) + u64::from(new))
}

/// [`update`] for a 32-bit value (e.g. an IPv4 address rewrite) aligned on
/// a 16-bit boundary in the checksummed data.
#[must_use]
pub fn update_u32(checksum_field: u16, old: u32, new: u32) -> u16 {
    let [o0, o1, o2, o3] = old.to_be_bytes();
    let [n0, n1, n2, n3] = new.to_be_bytes();
    let c = update(
        checksum_field,
        u16::from_be_bytes([o0, o1]),
        u16::from_be_bytes([n0, n1]),
    );
    update(
        c,
        u16::from_be_bytes([o2, o3]),
        u16::from_be_bytes([n2, n3]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    /// The example from RFC 1071 § 3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to
    /// 0xddf2.
    #[test]
    fn rfc1071_example() {
        assert_eq!(data(&hex!("0001f203f4f5f6f7")), 0xddf2);
    }

    #[test]
    fn odd_length_pads_low_byte() {
        assert_eq!(data(&[0xab]), 0xab00);
        assert_eq!(data(&[0x12, 0x34, 0x56]), 0x6834);
        assert_eq!(data(&[]), 0);
    }

    /// A real IPv4 header (the well-known 192.168.0.1 → 192.168.0.199 UDP
    /// example) whose checksum field is 0xb861.
    #[test]
    fn ipv4_header_example() {
        let mut header = hex!("450000730000400040 11 b861 c0a80001 c0a800c7");
        assert_eq!(data(&header), 0xffff, "verifies as received");
        header[10] = 0;
        header[11] = 0;
        assert_eq!(!data(&header), 0xb861);
    }

    /// RFC 1624 § 4 example: HC = 0xdd2f, m = 0x5555 → m' = 0x3285 gives
    /// HC' = 0x0000 under equation 3 (vs 0xffff from equation 2).
    #[test]
    fn rfc1624_example() {
        assert_eq!(update(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn pseudo_header_v4_matches_bytes() {
        let src = Ipv4Addr::new(192, 168, 0, 1);
        let dst = Ipv4Addr::new(192, 168, 0, 199);
        let bytes = hex!("c0a80001 c0a800c7 0011 005f");
        assert_eq!(
            pseudo_header_v4(src, dst, IpProtocol::Udp, 0x5f),
            data(&bytes)
        );
    }

    #[test]
    fn pseudo_header_v6_matches_bytes() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "fe80::ffff:1234:5678".parse().unwrap();
        let mut bytes = [0u8; 40];
        bytes[..16].copy_from_slice(&src.octets());
        bytes[16..32].copy_from_slice(&dst.octets());
        bytes[32..36].copy_from_slice(&0x0001_0020u32.to_be_bytes());
        bytes[39] = 58;
        assert_eq!(
            pseudo_header_v6(src, dst, IpProtocol::Icmpv6, 0x0001_0020),
            data(&bytes)
        );
    }

    proptest! {
        /// Summing 32-bit words equals the textbook 16-bit word loop.
        #[test]
        fn data_matches_reference(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut acc: u32 = 0;
            for pair in bytes.chunks(2) {
                let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
                acc += u32::from(word);
                acc = (acc & 0xffff) + (acc >> 16);
            }
            prop_assert_eq!(u32::from(data(&bytes)), acc);
        }

        /// An incremental update gives a field that verifies, like a full
        /// recomputation does.
        #[test]
        fn update_matches_recompute(
            mut bytes in proptest::collection::vec(any::<u8>(), 4..64),
            word_index in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            if bytes.len() % 2 == 1 { bytes.push(0); }
            // The first word is the checksum field.
            bytes[0] = 0;
            bytes[1] = 0;
            let field = !data(&bytes);
            bytes[..2].copy_from_slice(&field.to_be_bytes());
            let at = 2 + 2 * word_index.index((bytes.len() - 2) / 2);
            let old = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
            bytes[at..at + 2].copy_from_slice(&new.to_be_bytes());
            let updated = update(field, old, new);
            bytes[..2].copy_from_slice(&updated.to_be_bytes());
            prop_assert_eq!(data(&bytes), 0xffff);
        }

        /// Byte-swapped update handles a value at an odd offset.
        #[test]
        fn update_odd_offset(
            mut bytes in proptest::collection::vec(any::<u8>(), 8..64),
            pos in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            if bytes.len() % 2 == 1 { bytes.push(0); }
            bytes[0] = 0;
            bytes[1] = 0;
            let field = !data(&bytes);
            bytes[..2].copy_from_slice(&field.to_be_bytes());
            // An odd offset in 3..len-1.
            let at = 3 + 2 * pos.index((bytes.len() - 4) / 2);
            let old = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
            bytes[at..at + 2].copy_from_slice(&new.to_be_bytes());
            let updated = update(field, old.swap_bytes(), new.swap_bytes());
            bytes[..2].copy_from_slice(&updated.to_be_bytes());
            prop_assert_eq!(data(&bytes), 0xffff);
        }

        #[test]
        fn update_u32_matches_recompute(
            mut bytes in proptest::collection::vec(any::<u8>(), 12..=12),
            new in any::<u32>(),
        ) {
            bytes[0] = 0;
            bytes[1] = 0;
            let field = !data(&bytes);
            let old = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            bytes[4..8].copy_from_slice(&new.to_be_bytes());
            bytes[..2].copy_from_slice(&update_u32(field, old, new).to_be_bytes());
            prop_assert_eq!(data(&bytes), 0xffff);
        }
    }
}
