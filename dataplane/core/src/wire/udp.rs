//! UDP header ([RFC 768]), with the IPv6 checksum rules of
//! [RFC 8200 § 8.1].
//!
//! The checksum covers an IPv4 or IPv6 pseudo-header ([`IpPair`]), the UDP
//! header and the payload. Over IPv4 a transmitted checksum of zero means
//! "no checksum" and is accepted; RFC 3948 § 3.1 has UDP-encapsulated ESP
//! sent with zero. Over IPv6 a zero checksum is invalid and rejected.
//!
//! ```text
//!  0      7 8     15 16    23 24    31
//! +--------+--------+--------+--------+
//! |     Source      |   Destination   |
//! |      Port       |      Port       |
//! +--------+--------+--------+--------+
//! |     Length      |    Checksum     |
//! +--------+--------+--------+--------+
//! |          data octets ...
//! +---------------- ...
//! ```
//!
//! [RFC 768]: https://www.rfc-editor.org/rfc/rfc768
//! [RFC 8200 § 8.1]: https://www.rfc-editor.org/rfc/rfc8200#section-8.1

use super::{Error, Header, IpPair, IpProtocol, Result, len_u16, need, read_u16, write_u16};

/// Byte ranges of the header.
mod field {
    use core::ops::Range;

    pub(super) const SRC_PORT: Range<usize> = 0..2;
    pub(super) const DST_PORT: Range<usize> = 2..4;
    pub(super) const LENGTH: Range<usize> = 4..6;
    pub(super) const CHECKSUM: Range<usize> = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A zero-copy view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking it. Only for emitting into a buffer
    /// of at least [`HEADER_LEN`] bytes (see the module's no-panic contract).
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps untrusted bytes, after [`check_len`](Self::check_len).
    ///
    /// # Errors
    ///
    /// Those of [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the 8-byte header, that Length is at
    /// least 8 and that the buffer holds Length bytes (it may hold more;
    /// [`payload`](Self::payload) ends at Length).
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the header or Length does not fit,
    /// [`Error::Malformed`] for a Length below 8.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        need(Header::Udp, "header", HEADER_LEN, len)?;
        let udp_len = usize::from(self.len());
        if udp_len < HEADER_LEN {
            return Err(Error::Malformed {
                header: Header::Udp,
                what: "Length below 8",
            });
        }
        need(Header::Udp, "Length", udp_len, len)
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source Port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination Port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// Length: header plus data, in bytes.
    #[inline]
    #[allow(clippy::len_without_is_empty, reason = "the RFC 768 field name")]
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Checksum field (0 over IPv4 means none was computed).
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// True if the checksum is correct for the addresses in `ips`, or, over
    /// IPv4 only, if it is zero (not computed). Covers Length bytes; false
    /// if Length no longer fits the buffer.
    pub fn verify_checksum(&self, ips: &IpPair) -> bool {
        let stored = self.checksum();
        if stored == 0 {
            return ips.is_v4();
        }
        self.datagram_sum(ips) == Some(0xffff)
    }

    /// The checksum sum over the pseudo-header and Length bytes (`None` if
    /// Length no longer fits the buffer).
    fn datagram_sum(&self, ips: &IpPair) -> Option<u16> {
        let datagram = self.buffer.as_ref().get(..usize::from(self.len()))?;
        ips.upper_layer_sum(IpProtocol::Udp, datagram)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpPacket<&'a T> {
    /// The payload: from byte 8 to Length (empty if Length no longer fits).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let range = HEADER_LEN..usize::from(self.len());
        self.buffer.as_ref().get(range).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets Source Port.
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT.start, port);
    }

    /// Sets Destination Port.
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT.start, port);
    }

    /// Sets Length.
    #[inline]
    pub fn set_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    /// Sets the Checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Computes and stores the checksum over Length bytes for the addresses
    /// in `ips`. A computed zero is sent as `0xffff` ([RFC 768]: "If the
    /// computed checksum is zero, it is transmitted as all ones"). Does
    /// nothing if Length no longer fits the buffer.
    ///
    /// [RFC 768]: https://www.rfc-editor.org/rfc/rfc768
    pub fn fill_checksum(&mut self, ips: &IpPair) {
        self.set_checksum(0);
        let Some(sum) = self.datagram_sum(ips) else {
            return;
        };
        let computed = !sum;
        self.set_checksum(if computed == 0 { 0xffff } else { computed });
    }

    /// The payload, mutably (empty if Length no longer fits the buffer).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = HEADER_LEN..usize::from(self.len());
        self.buffer.as_mut().get_mut(range).unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    /// Source Port.
    pub src_port: u16,
    /// Destination Port (nonzero).
    pub dst_port: u16,
    /// Payload length in bytes; at most `65535 - 8` for [`emit`](Self::emit).
    pub payload_len: usize,
}

impl UdpRepr {
    /// Parses and validates a datagram:
    ///
    /// 1. lengths, as [`UdpPacket::check_len`];
    /// 2. Destination Port is not zero (port 0 is reserved and cannot be
    ///    listened on);
    /// 3. the checksum verifies against `ips` (zero accepted over IPv4 only).
    ///
    /// # Errors
    ///
    /// The error of the first step that fails.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &UdpPacket<&T>, ips: &IpPair) -> Result<Self> {
        // 1.
        packet.check_len()?;
        // 2.
        if packet.dst_port() == 0 {
            return Err(Error::Malformed {
                header: Header::Udp,
                what: "Destination Port is zero",
            });
        }
        // 3.
        if !packet.verify_checksum(ips) {
            return Err(Error::Checksum {
                header: Header::Udp,
            });
        }
        Ok(Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()) - HEADER_LEN,
        })
    }

    /// Bytes of the whole datagram: the 8-byte header plus `payload_len`.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header into `packet`, which must hold
    /// [`buffer_len`](Self::buffer_len) bytes with the payload already in
    /// place after the header (the payload is never copied).
    ///
    /// With `Some(ips)` the checksum is computed over that payload; with
    /// `None` it is left zero, which is legal over IPv4 only (and what
    /// RFC 3948 § 3.1 recommends for UDP-encapsulated ESP).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut UdpPacket<T>,
        ips: Option<&IpPair>,
    ) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len_u16(self.buffer_len()));
        match ips {
            Some(ips) => packet.fill_checksum(ips),
            None => packet.set_checksum(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use hex_literal::hex;
    use proptest::prelude::*;

    const V4: IpPair = IpPair::V4 {
        src: Ipv4Addr::new(192, 168, 1, 10),
        dst: Ipv4Addr::new(8, 8, 8, 8),
    };

    fn v6() -> IpPair {
        IpPair::V6 {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
        }
    }

    /// A DNS query for "example.com" A from 192.168.1.10:54321 to
    /// 8.8.8.8:53, checksum computed by hand (0xde3f).
    const DNS_BYTES: [u8; 37] = hex!(
        "d431 0035 0025 de3f"
        "abcd 0100 0001 0000 0000 0000"
        "07 6578616d706c65 03 636f6d 00 0001 0001"
    );

    const PAYLOAD: [u8; 29] = hex!(
        "abcd 0100 0001 0000 0000 0000"
        "07 6578616d706c65 03 636f6d 00 0001 0001"
    );

    fn repr() -> UdpRepr {
        UdpRepr {
            src_port: 54321,
            dst_port: 53,
            payload_len: 29,
        }
    }

    #[test]
    fn deconstruct() {
        let packet = UdpPacket::new_checked(&DNS_BYTES[..]).unwrap();
        assert_eq!(packet.src_port(), 54321);
        assert_eq!(packet.dst_port(), 53);
        assert_eq!(packet.len(), 37);
        assert_eq!(packet.checksum(), 0xde3f);
        assert_eq!(packet.payload(), &PAYLOAD);
        assert!(packet.verify_checksum(&V4));
        assert!(!packet.verify_checksum(&v6()));
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5; 37];
        let mut packet = UdpPacket::new_unchecked(&mut bytes[..]);
        packet.set_src_port(54321);
        packet.set_dst_port(53);
        packet.set_len(37);
        packet.payload_mut().copy_from_slice(&PAYLOAD);
        packet.fill_checksum(&V4);
        assert_eq!(bytes, DNS_BYTES);
    }

    #[test]
    fn check_len() {
        assert!(matches!(
            UdpPacket::new_checked(&DNS_BYTES[..7]),
            Err(Error::Truncated { needed: 8, .. })
        ));
        assert!(matches!(
            UdpPacket::new_checked(&DNS_BYTES[..36]),
            Err(Error::Truncated {
                what: "Length",
                needed: 37,
                available: 36,
                ..
            })
        ));
        assert!(matches!(
            UdpPacket::new_checked(&hex!("d4310035 0007 0000")[..]),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn parse() {
        let packet = UdpPacket::new_checked(&DNS_BYTES[..]).unwrap();
        assert_eq!(UdpRepr::parse(&packet, &V4).unwrap(), repr());
        assert_eq!(
            UdpRepr::parse(&packet, &v6()),
            Err(Error::Checksum {
                header: Header::Udp
            })
        );
    }

    #[test]
    fn zero_checksum_is_ipv4_only() {
        let mut bytes = DNS_BYTES;
        bytes[6] = 0;
        bytes[7] = 0;
        let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert!(UdpRepr::parse(&packet, &V4).is_ok());
        assert!(matches!(
            UdpRepr::parse(&packet, &v6()),
            Err(Error::Checksum { .. })
        ));
    }

    #[test]
    fn zero_destination_port_rejected() {
        let mut bytes = hex!("d431 0000 0008 0000");
        let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert!(matches!(
            UdpRepr::parse(&packet, &V4),
            Err(Error::Malformed { .. })
        ));
        bytes[3] = 1;
        let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert!(UdpRepr::parse(&packet, &V4).is_ok());
    }

    #[test]
    fn emit() {
        let mut bytes = [0xa5; 37];
        bytes[8..].copy_from_slice(&PAYLOAD);
        repr().emit(&mut UdpPacket::new_unchecked(&mut bytes[..]), Some(&V4));
        assert_eq!(bytes, DNS_BYTES);

        let mut bytes = [0xa5; 37];
        bytes[8..].copy_from_slice(&PAYLOAD);
        repr().emit(&mut UdpPacket::new_unchecked(&mut bytes[..]), None);
        assert_eq!(&bytes[6..8], &[0, 0]);
        assert_eq!(&bytes[..6], &DNS_BYTES[..6]);
    }

    #[test]
    fn buffer_len() {
        assert_eq!(repr().buffer_len(), 37);
    }

    #[test]
    fn computed_zero_is_sent_as_all_ones() {
        // Find a payload word that makes the computed checksum zero.
        let mut bytes = [0u8; 10];
        let mut packet = UdpPacket::new_unchecked(&mut bytes[..]);
        packet.set_src_port(4500);
        packet.set_dst_port(4500);
        packet.set_len(10);
        packet.fill_checksum(&V4);
        let c = packet.checksum();
        // Adding the checksum value as the payload word makes the total sum
        // 0xffff, so the computed checksum becomes zero.
        packet.payload_mut().copy_from_slice(&c.to_be_bytes());
        packet.fill_checksum(&V4);
        assert_eq!(packet.checksum(), 0xffff);
        assert!(packet.verify_checksum(&V4));
    }

    fn arb_ips() -> impl Strategy<Value = IpPair> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(s, d)| IpPair::V4 {
                src: Ipv4Addr::from(s),
                dst: Ipv4Addr::from(d)
            }),
            (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(s, d)| IpPair::V6 {
                src: Ipv6Addr::from(s),
                dst: Ipv6Addr::from(d)
            }),
        ]
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(
            src_port in any::<u16>(),
            dst_port in 1..=u16::MAX,
            payload in proptest::collection::vec(any::<u8>(), 0..600),
            ips in arb_ips(),
        ) {
            let repr = UdpRepr { src_port, dst_port, payload_len: payload.len() };
            let mut bytes = vec![0xa5; repr.buffer_len()];
            bytes[HEADER_LEN..].copy_from_slice(&payload);
            repr.emit(&mut UdpPacket::new_unchecked(&mut bytes[..]), Some(&ips));
            let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(UdpRepr::parse(&packet, &ips).unwrap(), repr);
            prop_assert_eq!(packet.payload(), &payload[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            ips in arb_ips(),
        ) {
            if let Ok(packet) = UdpPacket::new_checked(&bytes[..]) {
                let _ = (packet.src_port(), packet.dst_port(), packet.payload());
                let _ = packet.verify_checksum(&ips);
                let _ = UdpRepr::parse(&packet, &ips);
            }
        }

        #[test]
        fn mutated_packets_never_panic(
            flips in proptest::collection::vec((0..37usize, any::<u8>()), 1..4),
            cut in 0..=37usize,
            ips in arb_ips(),
        ) {
            let mut bytes = DNS_BYTES.to_vec();
            for (at, value) in flips {
                bytes[at] = value;
            }
            bytes.truncate(cut);
            if let Ok(packet) = UdpPacket::new_checked(&bytes[..]) {
                let _ = (packet.payload(), UdpRepr::parse(&packet, &ips));
            }
        }
    }
}
