//! IPv4 header ([RFC 791]), with DSCP/ECN ([RFC 2474], [RFC 3168]).
//!
//! [`Ipv4Packet`] reads and writes a header in place, options included
//! (IHL > 5); [`Ipv4Repr`] is the value the dataplane builds outer headers
//! from. `Ipv4Repr` represents unfragmented datagrams only: a fragment is
//! handled through the packet view ([`Ipv4Packet::is_fragment`] and the
//! fragment fields).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |   DSCP    |ECN|          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |Flags|      Fragment Offset    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options (IHL > 5)                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [RFC 791]: https://www.rfc-editor.org/rfc/rfc791
//! [RFC 2474]: https://www.rfc-editor.org/rfc/rfc2474
//! [RFC 3168]: https://www.rfc-editor.org/rfc/rfc3168

use core::net::Ipv4Addr;

use super::{Error, Header, IpProtocol, Result, checksum, len_u16, need, read_u16, write_u16};

/// Byte ranges of the fixed header.
mod field {
    use core::ops::Range;

    pub(super) const VER_IHL: usize = 0;
    pub(super) const DSCP_ECN: usize = 1;
    pub(super) const LENGTH: Range<usize> = 2..4;
    pub(super) const IDENT: Range<usize> = 4..6;
    pub(super) const FLG_OFF: Range<usize> = 6..8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: Range<usize> = 10..12;
    pub(super) const SRC_ADDR: Range<usize> = 12..16;
    pub(super) const DST_ADDR: Range<usize> = 16..20;
}

/// Length of a header without options (IHL = 5).
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// Length of the largest header (IHL = 15).
pub const MAX_HEADER_LEN: usize = 60;

// RFC 791 § 3.2: "Every internet module must be able to forward a datagram
// of 68 octets without further fragmentation. This is because an internet
// header may be up to 60 octets, and the minimum fragment is 8 octets."
/// The smallest MTU an IPv4 link may have ([RFC 791 § 3.2]); the floor for
/// the Next-Hop MTU the dataplane reports in "fragmentation needed".
///
/// [RFC 791 § 3.2]: https://www.rfc-editor.org/rfc/rfc791#section-3.2
pub const MIN_MTU: u16 = 68;

/// Don't Fragment flag bit in the Flags/Fragment Offset word.
const FLAG_DF: u16 = 0x4000;
/// More Fragments flag bit in the Flags/Fragment Offset word.
const FLAG_MF: u16 = 0x2000;
/// Fragment Offset mask (in 8-octet units).
const OFFSET_MASK: u16 = 0x1fff;

/// A zero-copy view of an IPv4 header and the datagram it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
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

    /// Checks that the header and the datagram it announces fit the buffer:
    ///
    /// 1. the buffer holds the 20-byte fixed header;
    /// 2. IHL ≥ 5 ([RFC 791 § 3.1]: "the minimum value for a correct header
    ///    is 5");
    /// 3. the buffer holds IHL × 4 bytes;
    /// 4. Total Length ≥ IHL × 4;
    /// 5. the buffer holds Total Length bytes (it may hold more, e.g.
    ///    Ethernet padding; [`payload`](Self::payload) ends at Total
    ///    Length).
    ///
    /// The Version field and the checksum are checked by
    /// [`Ipv4Repr::parse`], not here.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] for 1, 3 and 5, [`Error::Malformed`] for 2 and 4.
    ///
    /// [RFC 791 § 3.1]: https://www.rfc-editor.org/rfc/rfc791#section-3.1
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        need(Header::Ipv4, "fixed header", HEADER_LEN, len)?;
        let header_len = usize::from(self.header_len());
        if header_len < HEADER_LEN {
            return Err(Error::Malformed {
                header: Header::Ipv4,
                what: "IHL below 5",
            });
        }
        need(Header::Ipv4, "IHL", header_len, len)?;
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::Malformed {
                header: Header::Ipv4,
                what: "Total Length shorter than the header",
            });
        }
        need(Header::Ipv4, "Total Length", total_len, len)
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (4 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Differentiated Services Code Point (upper six bits of the former
    /// TOS byte, [RFC 2474 § 3]).
    ///
    /// [RFC 2474 § 3]: https://www.rfc-editor.org/rfc/rfc2474#section-3
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit Congestion Notification codepoint (lower two bits,
    /// [RFC 3168 § 5]).
    ///
    /// [RFC 3168 § 5]: https://www.rfc-editor.org/rfc/rfc3168#section-5
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total Length: header plus data, in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT.start)
    }

    /// Don't Fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF.start) & FLAG_DF != 0
    }

    /// More Fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF.start) & FLAG_MF != 0
    }

    /// Fragment Offset, converted from 8-octet units to bytes.
    #[inline]
    pub fn frag_offset_bytes(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLG_OFF.start) & OFFSET_MASK) << 3
    }

    /// True if this datagram is a fragment: More Fragments set or a nonzero
    /// Fragment Offset.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF.start) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to Live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Header Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Source Address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    /// Destination Address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    /// True if the Header Checksum is correct over the IHL × 4 header bytes.
    ///
    /// Returns false if IHL is out of range for the buffer.
    pub fn verify_checksum(&self) -> bool {
        self.buffer
            .as_ref()
            .get(..usize::from(self.header_len()))
            .is_some_and(|header| checksum::data(header) == 0xffff)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The options: bytes 20 to IHL × 4 (empty when IHL = 5, or if the
    /// header length no longer fits the buffer).
    #[inline]
    pub fn options(&self) -> &'a [u8] {
        let header_len = usize::from(self.header_len());
        self.buffer
            .as_ref()
            .get(HEADER_LEN..header_len)
            .unwrap_or(&[])
    }

    /// The payload: from the end of the header to Total Length (empty if
    /// the lengths no longer fit the buffer).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let range = usize::from(self.header_len())..usize::from(self.total_len());
        self.buffer.as_ref().get(range).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets Version.
    #[inline]
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets IHL from a header length in bytes (rounded down to a multiple
    /// of 4; values above 60 are clamped).
    #[inline]
    pub fn set_header_len(&mut self, len: u8) {
        let ihl = (len.min(60)) / 4;
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ihl;
    }

    /// Sets DSCP (six bits; higher bits are ignored). Does not update the
    /// checksum; see [`rewrite_dscp`](Self::rewrite_dscp).
    #[inline]
    pub fn set_dscp(&mut self, dscp: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (dscp << 2);
    }

    /// Sets ECN (two bits; higher bits are ignored). Does not update the
    /// checksum; see [`rewrite_ecn`](Self::rewrite_ecn).
    #[inline]
    pub fn set_ecn(&mut self, ecn: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xfc) | (ecn & 0x03);
    }

    /// Sets Total Length.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    /// Sets Identification.
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT.start, ident);
    }

    /// Clears the Flags and Fragment Offset.
    #[inline]
    pub fn clear_flags(&mut self) {
        write_u16(self.buffer.as_mut(), field::FLG_OFF.start, 0);
    }

    fn set_flag(&mut self, flag: u16, value: bool) {
        let raw = read_u16(self.buffer.as_ref(), field::FLG_OFF.start);
        let raw = if value { raw | flag } else { raw & !flag };
        write_u16(self.buffer.as_mut(), field::FLG_OFF.start, raw);
    }

    /// Sets or clears Don't Fragment.
    #[inline]
    pub fn set_dont_frag(&mut self, value: bool) {
        self.set_flag(FLAG_DF, value);
    }

    /// Sets or clears More Fragments.
    #[inline]
    pub fn set_more_frags(&mut self, value: bool) {
        self.set_flag(FLAG_MF, value);
    }

    /// Sets Fragment Offset from a byte offset (must be a multiple of 8;
    /// the low three bits are dropped).
    #[inline]
    pub fn set_frag_offset_bytes(&mut self, offset: u16) {
        let raw = read_u16(self.buffer.as_ref(), field::FLG_OFF.start);
        let raw = (raw & !OFFSET_MASK) | (offset >> 3);
        write_u16(self.buffer.as_mut(), field::FLG_OFF.start, raw);
    }

    /// Sets Time to Live. Does not update the checksum; see
    /// [`decrement_ttl`](Self::decrement_ttl).
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets Protocol.
    #[inline]
    pub fn set_protocol(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.into();
    }

    /// Sets the Header Checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Sets Source Address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets Destination Address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes and stores the Header Checksum over IHL × 4 bytes.
    ///
    /// Does nothing if IHL is out of range for the buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = usize::from(self.header_len());
        if let Some(header) = self.buffer.as_ref().get(..header_len) {
            let sum = !checksum::data(header);
            self.set_checksum(sum);
        }
    }

    /// Decrements Time to Live and updates the checksum incrementally
    /// ([RFC 1624]), as a forwarding router does ([RFC 1812 § 5.3.1]).
    /// Returns the new TTL; a TTL of 0 is left unchanged and 0 returned,
    /// so the caller drops the packet and may send Time Exceeded.
    ///
    /// [RFC 1624]: https://www.rfc-editor.org/rfc/rfc1624
    /// [RFC 1812 § 5.3.1]: https://www.rfc-editor.org/rfc/rfc1812#section-5.3.1
    pub fn decrement_ttl(&mut self) -> u8 {
        let old_ttl = self.ttl();
        let Some(new_ttl) = old_ttl.checked_sub(1) else {
            return 0;
        };
        let proto = self.buffer.as_ref()[field::PROTOCOL];
        let old = u16::from_be_bytes([old_ttl, proto]);
        let new = u16::from_be_bytes([new_ttl, proto]);
        self.set_ttl(new_ttl);
        let sum = checksum::update(self.checksum(), old, new);
        self.set_checksum(sum);
        new_ttl
    }

    fn rewrite_tos_byte(&mut self, tos: u8) {
        let b = self.buffer.as_ref();
        let (ver_ihl, old_tos) = (b[field::VER_IHL], b[field::DSCP_ECN]);
        self.buffer.as_mut()[field::DSCP_ECN] = tos;
        let sum = checksum::update(
            self.checksum(),
            u16::from_be_bytes([ver_ihl, old_tos]),
            u16::from_be_bytes([ver_ihl, tos]),
        );
        self.set_checksum(sum);
    }

    /// Sets DSCP and updates the checksum incrementally ([RFC 1624]).
    ///
    /// [RFC 1624]: https://www.rfc-editor.org/rfc/rfc1624
    pub fn rewrite_dscp(&mut self, dscp: u8) {
        let tos = (dscp << 2) | self.ecn();
        self.rewrite_tos_byte(tos);
    }

    /// Sets ECN and updates the checksum incrementally ([RFC 1624]); used
    /// when decapsulation propagates CE to the inner header ([RFC 6040]).
    ///
    /// [RFC 1624]: https://www.rfc-editor.org/rfc/rfc1624
    /// [RFC 6040]: https://www.rfc-editor.org/rfc/rfc6040
    pub fn rewrite_ecn(&mut self, ecn: u8) {
        let tos = (self.dscp() << 2) | (ecn & 0x03);
        self.rewrite_tos_byte(tos);
    }

    /// The options, mutably (empty if IHL = 5 or out of range).
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = usize::from(self.header_len());
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..header_len)
            .unwrap_or(&mut [])
    }

    /// The payload, mutably: from the end of the header to Total Length
    /// (empty if the lengths no longer fit the buffer).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = usize::from(self.header_len())..usize::from(self.total_len());
        self.buffer.as_mut().get_mut(range).unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of an unfragmented IPv4 header that the dataplane acts on.
///
/// Options are skipped by [`parse`](Self::parse) and never emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source Address.
    pub src_addr: Ipv4Addr,
    /// Destination Address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: IpProtocol,
    /// Payload length in bytes (Total Length minus the header length).
    /// At most `65535 - 20` for [`emit`](Self::emit).
    pub payload_len: usize,
    /// Time to Live.
    pub ttl: u8,
    /// DSCP (six bits).
    pub dscp: u8,
    /// ECN (two bits).
    pub ecn: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment.
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Parses and validates a header:
    ///
    /// 1. lengths, as [`Ipv4Packet::check_len`];
    /// 2. Version = 4;
    /// 3. the Header Checksum verifies ([RFC 1812 § 5.2.2]);
    /// 4. not a fragment (the `Repr` has no fragment fields).
    ///
    /// # Errors
    ///
    /// The error of the first step that fails; a fragment gives
    /// [`Error::Unsupported`].
    ///
    /// [RFC 1812 § 5.2.2]: https://www.rfc-editor.org/rfc/rfc1812#section-5.2.2
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Ipv4Packet<&T>) -> Result<Self> {
        // 1.
        packet.check_len()?;
        // 2.
        if packet.version() != 4 {
            return Err(Error::Malformed {
                header: Header::Ipv4,
                what: "Version is not 4",
            });
        }
        // 3.
        if !packet.verify_checksum() {
            return Err(Error::Checksum {
                header: Header::Ipv4,
            });
        }
        // 4.
        if packet.is_fragment() {
            return Err(Error::Unsupported {
                header: Header::Ipv4,
                what: "fragment",
            });
        }
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - usize::from(packet.header_len()),
            ttl: packet.ttl(),
            dscp: packet.dscp(),
            ecn: packet.ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        })
    }

    /// Bytes [`emit`](Self::emit) writes: the 20-byte header. The payload
    /// (`payload_len` bytes) follows it and is the caller's.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header (no options, not a fragment) with a correct
    /// checksum into `packet`, which must hold at least
    /// [`buffer_len`](Self::buffer_len) bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>) {
        packet.set_version(4);
        packet.set_header_len(5 * 4);
        packet.buffer.as_mut()[field::DSCP_ECN] = (self.dscp << 2) | (self.ecn & 0x03);
        packet.set_total_len(len_u16(HEADER_LEN + self.payload_len));
        packet.set_ident(self.ident);
        packet.clear_flags();
        packet.set_dont_frag(self.dont_frag);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    /// A UDP datagram 192.168.0.1 → 192.168.0.199, Total Length 115, DF,
    /// TTL 64, Header Checksum 0xb861 (the classic worked example).
    const HEADER_BYTES: [u8; 20] = hex!("45 00 00 73 0000 4000 40 11 b861 c0a80001 c0a800c7");

    fn packet_bytes() -> Vec<u8> {
        let mut bytes = HEADER_BYTES.to_vec();
        bytes.extend((0..95u8).map(|i| i.wrapping_mul(7)));
        bytes
    }

    /// An IGMPv2 report to 224.0.0.251 with the Router Alert option
    /// (IHL 6), DSCP 48 (CS6), ECN 0, Identification 0x1234, TTL 1.
    const OPTIONS_BYTES: [u8; 32] = hex!(
        "46 c0 0020 1234 0000 01 02 703f c0a80001 e00000fb 94040000"
        "16 00 0904 e00000fb"
    );

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src_addr: Ipv4Addr::new(192, 168, 0, 1),
            dst_addr: Ipv4Addr::new(192, 168, 0, 199),
            protocol: IpProtocol::Udp,
            payload_len: 95,
            ttl: 64,
            dscp: 0,
            ecn: 0,
            ident: 0,
            dont_frag: true,
        }
    }

    #[test]
    fn deconstruct() {
        let bytes = packet_bytes();
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.dscp(), 0);
        assert_eq!(packet.ecn(), 0);
        assert_eq!(packet.total_len(), 115);
        assert_eq!(packet.ident(), 0);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset_bytes(), 0);
        assert!(!packet.is_fragment());
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), IpProtocol::Udp);
        assert_eq!(packet.checksum(), 0xb861);
        assert_eq!(packet.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert!(packet.verify_checksum());
        assert!(packet.options().is_empty());
        assert_eq!(packet.payload(), &bytes[20..]);
    }

    #[test]
    fn deconstruct_with_options() {
        let packet = Ipv4Packet::new_checked(&OPTIONS_BYTES[..]).unwrap();
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.dscp(), 48);
        assert_eq!(packet.ident(), 0x1234);
        assert_eq!(packet.ttl(), 1);
        assert_eq!(packet.protocol(), IpProtocol::Unknown(2));
        assert!(packet.verify_checksum());
        assert_eq!(packet.options(), &hex!("94040000"));
        assert_eq!(packet.payload(), &hex!("16000904e00000fb"));
        let repr = Ipv4Repr::parse(&packet).unwrap();
        assert_eq!(repr.payload_len, 8);
        assert_eq!(repr.dscp, 48);
        assert!(!repr.dont_frag);
    }

    #[test]
    fn construct() {
        let mut bytes = vec![0xa5; 115];
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(4);
        packet.set_header_len(20);
        packet.set_dscp(0);
        packet.set_ecn(0);
        packet.set_total_len(115);
        packet.set_ident(0);
        packet.clear_flags();
        packet.set_dont_frag(true);
        packet.set_more_frags(false);
        packet.set_frag_offset_bytes(0);
        packet.set_ttl(64);
        packet.set_protocol(IpProtocol::Udp);
        packet.set_src_addr(Ipv4Addr::new(192, 168, 0, 1));
        packet.set_dst_addr(Ipv4Addr::new(192, 168, 0, 199));
        packet.fill_checksum();
        packet.payload_mut().copy_from_slice(&packet_bytes()[20..]);
        assert_eq!(bytes, packet_bytes());
    }

    #[test]
    fn check_len() {
        let bytes = packet_bytes();
        // Shorter than the fixed header.
        assert!(matches!(
            Ipv4Packet::new_checked(&bytes[..19]),
            Err(Error::Truncated { needed: 20, .. })
        ));
        // Shorter than Total Length.
        assert!(matches!(
            Ipv4Packet::new_checked(&bytes[..114]),
            Err(Error::Truncated {
                what: "Total Length",
                needed: 115,
                available: 114,
                ..
            })
        ));
        // IHL below 5.
        let mut bad = bytes.clone();
        bad[0] = 0x44;
        assert!(matches!(
            Ipv4Packet::new_checked(&bad[..]),
            Err(Error::Malformed { .. })
        ));
        // IHL beyond the buffer.
        assert!(matches!(
            Ipv4Packet::new_checked(&hex!("4f000014000000004011 0000 0a000001 0a000002")[..]),
            Err(Error::Truncated { what: "IHL", .. })
        ));
        // Total Length shorter than the header.
        let mut bad = bytes.clone();
        bad[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert!(matches!(
            Ipv4Packet::new_checked(&bad[..]),
            Err(Error::Malformed { .. })
        ));
        // Trailing bytes (Ethernet padding) are fine.
        let mut padded = bytes.clone();
        padded.extend([0; 6]);
        let packet = Ipv4Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(packet.payload().len(), 95);
    }

    #[test]
    fn parse() {
        let bytes = packet_bytes();
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&packet).unwrap(), repr());
    }

    #[test]
    fn parse_rejects() {
        let mut bad = packet_bytes();
        bad[11] ^= 1;
        let packet = Ipv4Packet::new_unchecked(&bad[..]);
        assert_eq!(
            Ipv4Repr::parse(&packet),
            Err(Error::Checksum {
                header: Header::Ipv4
            })
        );

        let mut v6 = packet_bytes();
        v6[0] = 0x65;
        let packet = Ipv4Packet::new_unchecked(&v6[..]);
        assert!(matches!(
            Ipv4Repr::parse(&packet),
            Err(Error::Malformed { .. })
        ));

        let mut frag = packet_bytes();
        let mut packet = Ipv4Packet::new_unchecked(&mut frag[..]);
        packet.set_more_frags(true);
        packet.fill_checksum();
        assert!(packet.is_fragment());
        let packet = Ipv4Packet::new_unchecked(&frag[..]);
        assert!(matches!(
            Ipv4Repr::parse(&packet),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn emit() {
        let repr = repr();
        let mut bytes = vec![0xa5; repr.buffer_len() + repr.payload_len];
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&mut packet);
        packet.payload_mut().copy_from_slice(&packet_bytes()[20..]);
        assert_eq!(bytes, packet_bytes());
    }

    #[test]
    fn buffer_len() {
        assert_eq!(repr().buffer_len(), 20);
    }

    #[test]
    fn fragment_fields() {
        let mut bytes = packet_bytes();
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_dont_frag(false);
        packet.set_frag_offset_bytes(1480);
        assert!(packet.is_fragment());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset_bytes(), 1480);
        packet.set_more_frags(true);
        assert_eq!(packet.frag_offset_bytes(), 1480);
        assert!(packet.more_frags());
        assert_eq!(&bytes[6..8], &hex!("20b9"));
    }

    #[test]
    fn incremental_rewrites_keep_checksum_valid() {
        let mut bytes = OPTIONS_BYTES;
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        assert_eq!(packet.decrement_ttl(), 0);
        assert!(packet.verify_checksum());
        assert_eq!(packet.decrement_ttl(), 0, "TTL 0 stays 0");
        packet.set_ttl(1);
        packet.fill_checksum();
        packet.rewrite_dscp(46);
        assert_eq!(packet.dscp(), 46);
        assert!(packet.verify_checksum());
        packet.rewrite_ecn(3);
        assert_eq!(packet.ecn(), 3);
        assert_eq!(packet.dscp(), 46);
        assert!(packet.verify_checksum());

        let mut bytes = packet_bytes();
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        assert_eq!(packet.decrement_ttl(), 63);
        assert!(packet.verify_checksum());
        // 0xb861 + 0x0100 (TTL is the high byte of its word).
        assert_eq!(packet.checksum(), 0xb961);
    }

    #[test]
    fn setters_after_check_do_not_make_accessors_panic() {
        let mut bytes = packet_bytes();
        let mut packet = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_header_len(60);
        packet.set_total_len(u16::MAX);
        assert!(packet.payload_mut().is_empty());
        packet.set_total_len(30);
        assert!(packet.options_mut().len() == 40);
        let packet = Ipv4Packet::new_unchecked(&bytes[..]);
        assert!(packet.payload().is_empty());
        assert!(!packet.verify_checksum());
    }

    fn arb_repr() -> impl Strategy<Value = Ipv4Repr> {
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u8>(),
            0..=(usize::from(u16::MAX) - HEADER_LEN),
            any::<u8>(),
            0..64u8,
            0..4u8,
            any::<u16>(),
            any::<bool>(),
        )
            .prop_map(
                |(src, dst, proto, payload_len, ttl, dscp, ecn, ident, dont_frag)| Ipv4Repr {
                    src_addr: Ipv4Addr::from(src),
                    dst_addr: Ipv4Addr::from(dst),
                    protocol: IpProtocol::from(proto),
                    payload_len,
                    ttl,
                    dscp,
                    ecn,
                    ident,
                    dont_frag,
                },
            )
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(repr in arb_repr()) {
            let mut bytes = vec![0xa5; repr.buffer_len() + repr.payload_len];
            repr.emit(&mut Ipv4Packet::new_unchecked(&mut bytes[..]));
            let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Ipv4Repr::parse(&packet).unwrap(), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            if let Ok(packet) = Ipv4Packet::new_checked(&bytes[..]) {
                let _ = (packet.version(), packet.dscp(), packet.ecn(), packet.ident());
                let _ = (packet.frag_offset_bytes(), packet.is_fragment(), packet.protocol());
                let _ = (packet.src_addr(), packet.dst_addr(), packet.verify_checksum());
                let _ = (packet.options(), packet.payload());
                let _ = Ipv4Repr::parse(&packet);
            }
            // `parse` re-checks lengths itself, so even an unchecked view is safe.
            let _ = Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&bytes[..]));
        }

        /// Random corruption of a valid packet (reaching the paths random
        /// bytes rarely do: plausible IHL and Total Length).
        #[test]
        fn mutated_packets_never_panic(
            flips in proptest::collection::vec((0..115usize, any::<u8>()), 1..6),
            cut in 0..=115usize,
        ) {
            let mut bytes = packet_bytes();
            for (at, value) in flips {
                bytes[at] = value;
            }
            bytes.truncate(cut);
            if let Ok(packet) = Ipv4Packet::new_checked(&bytes[..]) {
                prop_assert!(packet.payload().len() <= bytes.len());
                let _ = (packet.options(), packet.verify_checksum(), Ipv4Repr::parse(&packet));
            }
            if let Ok(mut packet) = Ipv4Packet::new_checked(&mut bytes[..]) {
                let _ = packet.decrement_ttl();
                packet.rewrite_dscp(10);
            }
        }
    }
}
