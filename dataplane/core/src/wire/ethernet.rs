//! Ethernet II frame header ([IEEE 802.3] clause 3, with the EtherType
//! interpretation of the Length/Type field, [RFC 894]).
//!
//! Only untagged frames are parsed: an 802.1Q tag shows up as
//! [`EtherType::Vlan`] and is the caller's to count and drop. The frame
//! check sequence is stripped by the NIC and is not part of the buffer.
//!
//! ```text
//! +-----------------+-----------------+-----------+--------- …
//! | Destination (6) |   Source (6)    | Type (2)  | payload
//! +-----------------+-----------------+-----------+--------- …
//! ```
//!
//! [IEEE 802.3]: https://standards.ieee.org/ieee/802.3/10422/
//! [RFC 894]: https://www.rfc-editor.org/rfc/rfc894

use core::fmt;

use super::{EtherType, Header, Result, need, read_u16, write_u16};

/// Byte ranges of the header.
mod field {
    use core::ops::Range;

    pub(super) const DESTINATION: Range<usize> = 0..6;
    pub(super) const SOURCE: Range<usize> = 6..12;
    pub(super) const ETHERTYPE: Range<usize> = 12..14;
}

/// Length of the Ethernet II header.
pub const HEADER_LEN: usize = field::ETHERTYPE.end;

/// A 48-bit IEEE MAC address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// The broadcast address ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Self = Self([0xff; 6]);

    /// The address from its six octets; `None` if `bytes` is not 6 long.
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(bytes).ok().map(Self)
    }

    /// The six octets.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// True for the broadcast address.
    #[must_use]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// True for a group address (I/G bit set), broadcast included.
    #[must_use]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// True for an individual (unicast) address.
    #[must_use]
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// True for a locally administered address (U/L bit set).
    #[must_use]
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A zero-copy view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
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
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds the 14-byte header.
    ///
    /// # Errors
    ///
    /// [`super::Error::Truncated`] if it does not.
    pub fn check_len(&self) -> Result<()> {
        need(
            Header::Ethernet,
            "header",
            HEADER_LEN,
            self.buffer.as_ref().len(),
        )
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> EthernetAddress {
        let mut octets = [0; 6];
        octets.copy_from_slice(&self.buffer.as_ref()[field::DESTINATION]);
        EthernetAddress(octets)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> EthernetAddress {
        let mut octets = [0; 6];
        octets.copy_from_slice(&self.buffer.as_ref()[field::SOURCE]);
        EthernetAddress(octets)
    }

    /// EtherType.
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(read_u16(self.buffer.as_ref(), field::ETHERTYPE.start))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EthernetFrame<&'a T> {
    /// Everything after the header (may include padding up to the 60-byte
    /// minimum frame; the network header's own length says where it ends).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Sets the EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        write_u16(
            self.buffer.as_mut(),
            field::ETHERTYPE.start,
            ethertype.into(),
        );
    }

    /// Everything after the header, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..)
            .unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for EthernetFrame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    /// Source address.
    pub src_addr: EthernetAddress,
    /// Destination address.
    pub dst_addr: EthernetAddress,
    /// EtherType.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Parses the header (its length only: every address and EtherType
    /// value is representable).
    ///
    /// # Errors
    ///
    /// [`super::Error::Truncated`] for a buffer shorter than 14 bytes.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(frame: &EthernetFrame<&T>) -> Result<Self> {
        frame.check_len()?;
        Ok(Self {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    /// Bytes [`emit`](Self::emit) writes: the 14-byte header.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into `frame`, which must hold at least
    /// [`buffer_len`](Self::buffer_len) bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) {
        frame.set_src_addr(self.src_addr);
        frame.set_dst_addr(self.dst_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Error;
    use hex_literal::hex;
    use proptest::prelude::*;

    /// An IPv4 frame from 52:54:00:12:34:56 to 02:00:00:00:00:01, carrying
    /// the start of an IPv4 header.
    const FRAME_BYTES: [u8; 18] = hex!("020000000001 525400123456 0800 45000073");

    fn repr() -> EthernetRepr {
        EthernetRepr {
            src_addr: EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
            dst_addr: EthernetAddress([0x02, 0, 0, 0, 0, 0x01]),
            ethertype: EtherType::Ipv4,
        }
    }

    #[test]
    fn deconstruct() {
        let frame = EthernetFrame::new_checked(&FRAME_BYTES[..]).unwrap();
        assert_eq!(frame.dst_addr(), repr().dst_addr);
        assert_eq!(frame.src_addr(), repr().src_addr);
        assert_eq!(frame.ethertype(), EtherType::Ipv4);
        assert_eq!(frame.payload(), &hex!("45000073"));
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5; 18];
        let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
        frame.set_dst_addr(repr().dst_addr);
        frame.set_src_addr(repr().src_addr);
        frame.set_ethertype(EtherType::Ipv4);
        frame.payload_mut().copy_from_slice(&hex!("45000073"));
        assert_eq!(bytes, FRAME_BYTES);
    }

    #[test]
    fn check_len() {
        assert!(matches!(
            EthernetFrame::new_checked(&FRAME_BYTES[..13]),
            Err(Error::Truncated { needed: 14, .. })
        ));
        assert!(
            EthernetFrame::new_checked(&FRAME_BYTES[..14])
                .unwrap()
                .payload()
                .is_empty()
        );
    }

    #[test]
    fn parse() {
        let frame = EthernetFrame::new_checked(&FRAME_BYTES[..]).unwrap();
        assert_eq!(EthernetRepr::parse(&frame).unwrap(), repr());
        let vlan = hex!("ffffffffffff 525400123456 8100 0064 0800");
        let frame = EthernetFrame::new_checked(&vlan[..]).unwrap();
        assert_eq!(frame.ethertype(), EtherType::Vlan);
        assert!(frame.dst_addr().is_broadcast());
    }

    #[test]
    fn emit() {
        let mut bytes = [0xa5; 14];
        repr().emit(&mut EthernetFrame::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, FRAME_BYTES[..14]);
    }

    #[test]
    fn buffer_len() {
        assert_eq!(repr().buffer_len(), 14);
    }

    #[test]
    fn address_properties() {
        let a = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert!(a.is_unicast() && a.is_local() && !a.is_multicast());
        assert_eq!(a.to_string(), "52:54:00:12:34:56");
        assert_eq!(format!("{a:?}"), "52:54:00:12:34:56");
        let m = EthernetAddress([0x01, 0x00, 0x5e, 0, 0, 0xfb]);
        assert!(m.is_multicast() && !m.is_broadcast());
        assert!(EthernetAddress::BROADCAST.is_multicast());
        assert_eq!(EthernetAddress::from_bytes(&[1, 2, 3]), None);
        assert_eq!(EthernetAddress::from_bytes(a.as_bytes()), Some(a));
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(src in any::<[u8; 6]>(), dst in any::<[u8; 6]>(), ty in any::<u16>()) {
            let repr = EthernetRepr {
                src_addr: EthernetAddress(src),
                dst_addr: EthernetAddress(dst),
                ethertype: EtherType::from(ty),
            };
            let mut bytes = [0xa5; HEADER_LEN];
            repr.emit(&mut EthernetFrame::new_unchecked(&mut bytes[..]));
            let frame = EthernetFrame::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(EthernetRepr::parse(&frame).unwrap(), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(frame) = EthernetFrame::new_checked(&bytes[..]) {
                let _ = (frame.dst_addr(), frame.src_addr(), frame.ethertype(), frame.payload());
                let _ = EthernetRepr::parse(&frame);
            }
        }
    }
}
