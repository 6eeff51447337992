//! IPv6 header and extension header chain ([RFC 8200]).
//!
//! [`Ipv6Packet`] reads and writes the 40-byte fixed header in place and
//! walks the extension headers ([`Ipv6Packet::upper_layer`]) to find the
//! upper-layer protocol; [`Ipv6Repr`] is the value outer headers are built
//! from. The Traffic Class is exposed split into DSCP ([RFC 2474]) and ECN
//! ([RFC 3168]). Jumbograms ([RFC 2675]) are not supported: a Payload
//! Length of zero means an empty payload.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|   DSCP    |ECN|               Flow Label              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Source Address (128 bits)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |               Destination Address (128 bits)                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [RFC 8200]: https://www.rfc-editor.org/rfc/rfc8200
//! [RFC 2474]: https://www.rfc-editor.org/rfc/rfc2474
//! [RFC 3168]: https://www.rfc-editor.org/rfc/rfc3168
//! [RFC 2675]: https://www.rfc-editor.org/rfc/rfc2675

use core::net::Ipv6Addr;

use super::{Error, Header, IpProtocol, Result, len_u16, need, read_u16, read_u32, write_u16};

/// Byte ranges of the fixed header.
mod field {
    use core::ops::Range;

    pub(super) const VER_TC_FLOW: Range<usize> = 0..4;
    pub(super) const LENGTH: Range<usize> = 4..6;
    pub(super) const NXT_HDR: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC_ADDR: Range<usize> = 8..24;
    pub(super) const DST_ADDR: Range<usize> = 24..40;

    /// Byte ranges inside an extension header, from its start.
    pub(super) mod ext {
        /// Next Header, common to every extension header.
        pub(crate) const NXT_HDR: usize = 0;
        /// Hdr Ext Len of Hop-by-Hop, Routing and Destination Options, in
        /// 8-octet units not counting the first 8 octets.
        pub(crate) const LEN: usize = 1;
        /// Fragment header: Fragment Offset (13 bits), Res, M flag.
        pub(crate) const FRAG_OFF_M: usize = 2;
        /// Fragment header: Identification.
        pub(crate) const FRAG_IDENT: usize = 4;
        /// Fragment header length.
        pub(crate) const FRAG_LEN: usize = 8;
    }
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

// RFC 8200 § 5: "IPv6 requires that every link in the Internet have an MTU
// of 1280 octets or greater."
/// The smallest MTU an IPv6 link may have ([RFC 8200 § 5]); the floor for
/// the MTU the dataplane reports in "packet too big".
///
/// [RFC 8200 § 5]: https://www.rfc-editor.org/rfc/rfc8200#section-5
pub const MIN_MTU: u16 = 1280;

/// The most extension headers [`Ipv6Packet::upper_layer`] walks before
/// giving up. RFC 8200 § 4.1 recommends at most one of each kind (two of
/// Destination Options), i.e. five that this walk skips; eight tolerates
/// senders that repeat a header while bounding the per-packet work.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// A zero-copy view of an IPv6 header and the packet it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// The Fragment header of a packet ([RFC 8200 § 4.5]).
///
/// [RFC 8200 § 4.5]: https://www.rfc-editor.org/rfc/rfc8200#section-4.5
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6FragmentInfo {
    /// Identification.
    pub ident: u32,
    /// Fragment Offset, converted from 8-octet units to bytes.
    pub offset_bytes: u16,
    /// The M flag: more fragments follow.
    pub more_frags: bool,
}

impl Ipv6FragmentInfo {
    /// True for the first fragment (offset 0), the only one whose payload
    /// starts with the upper-layer header.
    #[must_use]
    pub const fn is_first(&self) -> bool {
        self.offset_bytes == 0
    }

    /// True for an "atomic fragment" ([RFC 6946]): offset 0 and M clear,
    /// the whole packet in one fragment.
    ///
    /// [RFC 6946]: https://www.rfc-editor.org/rfc/rfc6946
    #[must_use]
    pub const fn is_atomic(&self) -> bool {
        self.offset_bytes == 0 && !self.more_frags
    }
}

/// Where the extension header chain ends: the result of
/// [`Ipv6Packet::upper_layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6UpperLayer {
    /// The Next Header value that ended the walk: an upper-layer protocol
    /// (TCP, UDP, ICMPv6, ESP, AH, …), [`IpProtocol::Ipv6NoNxt`], or, for a
    /// non-first fragment, the protocol of the fragmented payload.
    pub protocol: IpProtocol,
    /// Offset of the upper-layer header (or of the fragment data) from the
    /// start of the IPv6 header.
    pub offset: usize,
    /// The Fragment header, if the chain had one.
    pub fragment: Option<Ipv6FragmentInfo>,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
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

    /// Checks that the buffer holds the 40-byte fixed header and the
    /// Payload Length bytes that follow it (it may hold more, e.g. Ethernet
    /// padding). The Version is checked by [`Ipv6Repr::parse`].
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if either does not fit.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        need(Header::Ipv6, "fixed header", HEADER_LEN, len)?;
        need(
            Header::Ipv6,
            "Payload Length",
            HEADER_LEN + usize::from(self.payload_len()),
            len,
        )
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (6 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic Class (DSCP and ECN together).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }

    /// DSCP: the upper six bits of the Traffic Class ([RFC 2474 § 3]).
    ///
    /// [RFC 2474 § 3]: https://www.rfc-editor.org/rfc/rfc2474#section-3
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.traffic_class() >> 2
    }

    /// ECN: the lower two bits of the Traffic Class ([RFC 3168 § 5]).
    ///
    /// [RFC 3168 § 5]: https://www.rfc-editor.org/rfc/rfc3168#section-5
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.traffic_class() & 0x03
    }

    /// Flow Label (20 bits, [RFC 6437]).
    ///
    /// [RFC 6437]: https://www.rfc-editor.org/rfc/rfc6437
    #[inline]
    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW.start) & 0x000f_ffff
    }

    /// Payload Length: bytes after the fixed header, extension headers
    /// included.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Next Header: the first extension header or the upper-layer protocol.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// Hop Limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source Address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut octets = [0; 16];
        octets.copy_from_slice(&self.buffer.as_ref()[field::SRC_ADDR]);
        Ipv6Addr::from(octets)
    }

    /// Destination Address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut octets = [0; 16];
        octets.copy_from_slice(&self.buffer.as_ref()[field::DST_ADDR]);
        Ipv6Addr::from(octets)
    }

    /// Walks the extension header chain ([RFC 8200 § 4]) and returns the
    /// upper-layer protocol, its offset and the Fragment header if any.
    ///
    /// 1. Hop-by-Hop Options, Routing and Destination Options headers are
    ///    skipped by their Hdr Ext Len ((len + 1) × 8 bytes); Hop-by-Hop is
    ///    accepted only directly after the fixed header (§ 4.1).
    /// 2. A Fragment header (§ 4.5) is recorded; a second one is an error.
    ///    For a non-first fragment (offset ≠ 0) the walk stops right after
    ///    it: what follows is the middle of the fragmented payload, and
    ///    `protocol` is the Fragment header's Next Header.
    /// 3. Any other Next Header ends the walk, including ESP (its payload is
    ///    encrypted), AH, and No Next Header (59).
    /// 4. At most [`MAX_EXTENSION_HEADERS`] are walked; every header must
    ///    end within Payload Length.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] (header [`Header::Ipv6Extension`]) if a header
    /// runs past Payload Length or the buffer, [`Error::Malformed`] for a
    /// misplaced Hop-by-Hop or a repeated Fragment header,
    /// [`Error::Unsupported`] for a chain longer than the limit.
    ///
    /// [RFC 8200 § 4]: https://www.rfc-editor.org/rfc/rfc8200#section-4
    pub fn upper_layer(&self) -> Result<Ipv6UpperLayer> {
        let data = self.buffer.as_ref();
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(data.len());
        let mut protocol = self.next_header();
        let mut offset = HEADER_LEN;
        let mut fragment = None;
        for index in 0..=MAX_EXTENSION_HEADERS {
            let is_extension = matches!(
                protocol,
                IpProtocol::Ipv6Hop
                    | IpProtocol::Ipv6Route
                    | IpProtocol::Ipv6Opts
                    | IpProtocol::Ipv6Frag
            );
            if !is_extension {
                // 3.
                break;
            }
            // 4.
            if index == MAX_EXTENSION_HEADERS {
                return Err(Error::Unsupported {
                    header: Header::Ipv6Extension,
                    what: "extension header chain longer than the limit",
                });
            }
            let header_len = if protocol == IpProtocol::Ipv6Frag {
                // 2.
                if fragment.is_some() {
                    return Err(Error::Malformed {
                        header: Header::Ipv6Extension,
                        what: "more than one Fragment header",
                    });
                }
                need(
                    Header::Ipv6Extension,
                    "Fragment header",
                    offset + field::ext::FRAG_LEN,
                    end,
                )?;
                let off_m = read_u16(data, offset + field::ext::FRAG_OFF_M);
                fragment = Some(Ipv6FragmentInfo {
                    ident: read_u32(data, offset + field::ext::FRAG_IDENT),
                    offset_bytes: off_m & 0xfff8,
                    more_frags: off_m & 0x0001 != 0,
                });
                field::ext::FRAG_LEN
            } else {
                // 1.
                if protocol == IpProtocol::Ipv6Hop && index != 0 {
                    return Err(Error::Malformed {
                        header: Header::Ipv6Extension,
                        what: "Hop-by-Hop Options header not first",
                    });
                }
                need(Header::Ipv6Extension, "extension header", offset + 2, end)?;
                let len = (usize::from(data[offset + field::ext::LEN]) + 1) * 8;
                need(Header::Ipv6Extension, "Hdr Ext Len", offset + len, end)?;
                len
            };
            protocol = IpProtocol::from(data[offset + field::ext::NXT_HDR]);
            offset += header_len;
            if fragment.is_some_and(|f| !f.is_first()) {
                break;
            }
        }
        Ok(Ipv6UpperLayer {
            protocol,
            offset,
            fragment,
        })
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv6Packet<&'a T> {
    /// The payload: Payload Length bytes after the fixed header, extension
    /// headers included (empty if the length no longer fits the buffer).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let range = HEADER_LEN..HEADER_LEN + usize::from(self.payload_len());
        self.buffer.as_ref().get(range).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets Version.
    #[inline]
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[0];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets the Traffic Class (DSCP and ECN together).
    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let b = self.buffer.as_mut();
        b[0] = (b[0] & 0xf0) | (tc >> 4);
        b[1] = (b[1] & 0x0f) | (tc << 4);
    }

    /// Sets DSCP (six bits; higher bits are ignored).
    #[inline]
    pub fn set_dscp(&mut self, dscp: u8) {
        self.set_traffic_class((dscp << 2) | self.ecn());
    }

    /// Sets ECN (two bits; higher bits are ignored).
    #[inline]
    pub fn set_ecn(&mut self, ecn: u8) {
        self.set_traffic_class((self.traffic_class() & 0xfc) | (ecn & 0x03));
    }

    /// Sets the Flow Label (20 bits; higher bits are ignored).
    #[inline]
    pub fn set_flow_label(&mut self, label: u32) {
        let b = self.buffer.as_mut();
        let [_, l1, l2, l3] = (label & 0x000f_ffff).to_be_bytes();
        b[1] = (b[1] & 0xf0) | l1;
        b[2] = l2;
        b[3] = l3;
    }

    /// Sets Payload Length.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    /// Sets Next Header.
    #[inline]
    pub fn set_next_header(&mut self, next_header: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = next_header.into();
    }

    /// Sets Hop Limit.
    #[inline]
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Decrements Hop Limit as a forwarding node does ([RFC 8200 § 3]) and
    /// returns the new value; 0 is left unchanged and 0 returned, so the
    /// caller drops the packet and may send Time Exceeded. IPv6 has no
    /// header checksum to update.
    ///
    /// [RFC 8200 § 3]: https://www.rfc-editor.org/rfc/rfc8200#section-3
    pub fn decrement_hop_limit(&mut self) -> u8 {
        let new = self.hop_limit().saturating_sub(1);
        self.set_hop_limit(new);
        new
    }

    /// Sets Source Address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets Destination Address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The payload, mutably (empty if Payload Length no longer fits).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = HEADER_LEN..HEADER_LEN + usize::from(self.payload_len());
        self.buffer.as_mut().get_mut(range).unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv6Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of an IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source Address.
    pub src_addr: Ipv6Addr,
    /// Destination Address.
    pub dst_addr: Ipv6Addr,
    /// Next Header (first extension header or upper-layer protocol).
    pub next_header: IpProtocol,
    /// Payload Length in bytes; at most 65535 for [`emit`](Self::emit).
    pub payload_len: usize,
    /// Hop Limit.
    pub hop_limit: u8,
    /// DSCP (six bits).
    pub dscp: u8,
    /// ECN (two bits).
    pub ecn: u8,
    /// Flow Label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Parses the fixed header: lengths as [`Ipv6Packet::check_len`], then
    /// Version = 6. Extension headers are part of the payload; walk them
    /// with [`Ipv6Packet::upper_layer`].
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] from the length check, [`Error::Malformed`] for
    /// a Version other than 6.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Ipv6Packet<&T>) -> Result<Self> {
        packet.check_len()?;
        if packet.version() != 6 {
            return Err(Error::Malformed {
                header: Header::Ipv6,
                what: "Version is not 6",
            });
        }
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            dscp: packet.dscp(),
            ecn: packet.ecn(),
            flow_label: packet.flow_label(),
        })
    }

    /// Bytes [`emit`](Self::emit) writes: the 40-byte fixed header. The
    /// payload (`payload_len` bytes) follows it and is the caller's.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header into `packet`, which must hold at least
    /// [`buffer_len`](Self::buffer_len) bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv6Packet<T>) {
        // Clear Version/Traffic Class/Flow Label first: the setters below
        // merge into the existing bits.
        packet.buffer.as_mut()[field::VER_TC_FLOW].fill(0);
        packet.set_version(6);
        packet.set_traffic_class((self.dscp << 2) | (self.ecn & 0x03));
        packet.set_flow_label(self.flow_label);
        packet.set_payload_len(len_u16(self.payload_len));
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    /// UDP 2001:db8::1 → 2001:db8::2, DSCP 46 (EF), ECN 0, Flow Label
    /// 0x12345, Hop Limit 64, 16 bytes of payload (a UDP header and 8 data
    /// bytes).
    const PACKET_BYTES: [u8; 56] = hex!(
        "6b812345 0010 11 40"
        "20010db8000000000000000000000001"
        "20010db8000000000000000000000002"
        "d4310035 0010 0000 6578616d706c6500"
    );

    /// Hop-by-Hop (PadN) → Routing (type 253, experimental) → Fragment
    /// (first fragment, M set, ident 0xdeadbeef) → Destination Options
    /// (PadN) → UDP.
    const CHAIN_BYTES: [u8; 80] = hex!(
        "60000000 0028 00 40"
        "20010db8000000000000000000000001"
        "20010db8000000000000000000000002"
        "2b00 010400000000"
        "2c00 fd00 00000000"
        "3c00 0001 deadbeef"
        "1100 010400000000"
        "d4310035 0008 0000"
    );

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src_addr: "2001:db8::1".parse().unwrap(),
            dst_addr: "2001:db8::2".parse().unwrap(),
            next_header: IpProtocol::Udp,
            payload_len: 16,
            hop_limit: 64,
            dscp: 46,
            ecn: 0,
            flow_label: 0x12345,
        }
    }

    #[test]
    fn deconstruct() {
        let packet = Ipv6Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0xb8);
        assert_eq!(packet.dscp(), 46);
        assert_eq!(packet.ecn(), 0);
        assert_eq!(packet.flow_label(), 0x12345);
        assert_eq!(packet.payload_len(), 16);
        assert_eq!(packet.next_header(), IpProtocol::Udp);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.src_addr(), repr().src_addr);
        assert_eq!(packet.dst_addr(), repr().dst_addr);
        assert_eq!(packet.payload(), &PACKET_BYTES[40..]);
        assert_eq!(
            packet.upper_layer().unwrap(),
            Ipv6UpperLayer {
                protocol: IpProtocol::Udp,
                offset: 40,
                fragment: None
            }
        );
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5; 56];
        let mut packet = Ipv6Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(6);
        packet.set_traffic_class(0);
        packet.set_dscp(46);
        packet.set_ecn(0);
        packet.set_flow_label(0x12345);
        packet.set_payload_len(16);
        packet.set_next_header(IpProtocol::Udp);
        packet.set_hop_limit(64);
        packet.set_src_addr(repr().src_addr);
        packet.set_dst_addr(repr().dst_addr);
        packet.payload_mut().copy_from_slice(&PACKET_BYTES[40..]);
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn check_len() {
        assert!(matches!(
            Ipv6Packet::new_checked(&PACKET_BYTES[..39]),
            Err(Error::Truncated { needed: 40, .. })
        ));
        assert!(matches!(
            Ipv6Packet::new_checked(&PACKET_BYTES[..55]),
            Err(Error::Truncated {
                what: "Payload Length",
                needed: 56,
                available: 55,
                ..
            })
        ));
        assert!(Ipv6Packet::new_checked(&PACKET_BYTES[..]).is_ok());
    }

    #[test]
    fn parse() {
        let packet = Ipv6Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&packet).unwrap(), repr());
        let mut v4 = PACKET_BYTES;
        v4[0] = 0x4b;
        assert!(matches!(
            Ipv6Repr::parse(&Ipv6Packet::new_unchecked(&v4[..])),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn emit() {
        let mut bytes = [0xa5; 56];
        let mut packet = Ipv6Packet::new_unchecked(&mut bytes[..]);
        repr().emit(&mut packet);
        packet.payload_mut().copy_from_slice(&PACKET_BYTES[40..]);
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn buffer_len() {
        assert_eq!(repr().buffer_len(), 40);
    }

    #[test]
    fn extension_chain() {
        let packet = Ipv6Packet::new_checked(&CHAIN_BYTES[..]).unwrap();
        assert_eq!(
            packet.upper_layer().unwrap(),
            Ipv6UpperLayer {
                protocol: IpProtocol::Udp,
                offset: 72,
                fragment: Some(Ipv6FragmentInfo {
                    ident: 0xdead_beef,
                    offset_bytes: 0,
                    more_frags: true,
                }),
            }
        );
    }

    #[test]
    fn non_first_fragment_stops_the_walk() {
        let mut bytes = CHAIN_BYTES;
        // Fragment offset 185 × 8 = 1480, M clear.
        bytes[58..60].copy_from_slice(&(185u16 << 3).to_be_bytes());
        let packet = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        let upper = packet.upper_layer().unwrap();
        assert_eq!(upper.protocol, IpProtocol::Ipv6Opts);
        assert_eq!(upper.offset, 64);
        let frag = upper.fragment.unwrap();
        assert_eq!(frag.offset_bytes, 1480);
        assert!(!frag.more_frags && !frag.is_first() && !frag.is_atomic());
    }

    #[test]
    fn extension_chain_errors() {
        // Hop-by-Hop after Routing.
        let mut bytes = CHAIN_BYTES;
        bytes[6] = 43;
        bytes[48] = 0;
        assert!(matches!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap().upper_layer(),
            Err(Error::Malformed { .. })
        ));
        // Two Fragment headers.
        let mut bytes = CHAIN_BYTES;
        bytes[64] = 44;
        assert!(matches!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap().upper_layer(),
            Err(Error::Malformed { .. })
        ));
        // Hdr Ext Len past Payload Length.
        let mut bytes = CHAIN_BYTES;
        bytes[65] = 2;
        assert!(matches!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap().upper_layer(),
            Err(Error::Truncated {
                header: Header::Ipv6Extension,
                ..
            })
        ));
        // Payload Length ends inside the Routing header.
        let mut bytes = CHAIN_BYTES;
        bytes[5] = 12;
        assert!(matches!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap().upper_layer(),
            Err(Error::Truncated { .. })
        ));
        // A chain of Destination Options headers longer than the limit.
        let mut bytes = [0u8; 40 + 8 * 10];
        let mut packet = Ipv6Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(6);
        packet.set_payload_len(80);
        packet.set_next_header(IpProtocol::Ipv6Opts);
        for i in 0..10 {
            bytes[40 + 8 * i] = 60;
        }
        assert!(matches!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap().upper_layer(),
            Err(Error::Unsupported { .. })
        ));
        // Exactly the limit is fine.
        bytes[40 + 8 * (MAX_EXTENSION_HEADERS - 1)] = 59;
        let upper = Ipv6Packet::new_checked(&bytes[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(upper.protocol, IpProtocol::Ipv6NoNxt);
        assert_eq!(upper.offset, 40 + 8 * MAX_EXTENSION_HEADERS);
    }

    #[test]
    fn esp_ends_the_walk() {
        let mut bytes = PACKET_BYTES;
        bytes[6] = 50;
        let upper = Ipv6Packet::new_checked(&bytes[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(upper.protocol, IpProtocol::Esp);
        assert_eq!(upper.offset, 40);
    }

    #[test]
    fn decrement_hop_limit() {
        let mut bytes = PACKET_BYTES;
        let mut packet = Ipv6Packet::new_unchecked(&mut bytes[..]);
        assert_eq!(packet.decrement_hop_limit(), 63);
        packet.set_hop_limit(0);
        assert_eq!(packet.decrement_hop_limit(), 0);
    }

    fn arb_repr() -> impl Strategy<Value = Ipv6Repr> {
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u8>(),
            0..=usize::from(u16::MAX),
            any::<u8>(),
            0..64u8,
            0..4u8,
            0..0x10_0000u32,
        )
            .prop_map(
                |(src, dst, nh, payload_len, hop_limit, dscp, ecn, flow_label)| Ipv6Repr {
                    src_addr: Ipv6Addr::from(src),
                    dst_addr: Ipv6Addr::from(dst),
                    next_header: IpProtocol::from(nh),
                    payload_len,
                    hop_limit,
                    dscp,
                    ecn,
                    flow_label,
                },
            )
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(repr in arb_repr()) {
            let mut bytes = vec![0xa5; repr.buffer_len() + repr.payload_len];
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut bytes[..]));
            let packet = Ipv6Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Ipv6Repr::parse(&packet).unwrap(), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(packet) = Ipv6Packet::new_checked(&bytes[..]) {
                let _ = (packet.traffic_class(), packet.flow_label(), packet.hop_limit());
                let _ = (packet.src_addr(), packet.dst_addr(), packet.payload());
                let _ = packet.upper_layer();
                let _ = Ipv6Repr::parse(&packet);
            }
        }

        /// Random extension chains behind a valid fixed header: the walk
        /// never panics and never reports an offset past the payload.
        #[test]
        fn random_extension_chains_never_panic(
            next in prop::sample::select(vec![0u8, 43, 44, 60, 17, 50]),
            body in proptest::collection::vec(
                prop_oneof![Just(0u8), Just(43), Just(44), Just(60), Just(59), any::<u8>()],
                0..160,
            ),
        ) {
            let mut bytes = vec![0u8; 40];
            bytes[0] = 0x60;
            bytes[4..6].copy_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
            bytes[6] = next;
            bytes.extend(&body);
            let packet = Ipv6Packet::new_checked(&bytes[..]).unwrap();
            if let Ok(upper) = packet.upper_layer() {
                prop_assert!(upper.offset <= bytes.len());
            }
        }
    }
}
