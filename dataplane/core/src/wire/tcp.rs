//! TCP header ([RFC 9293]), as far as the dataplane needs it: ports, flags,
//! options, checksum, and in-place MSS clamping.
//!
//! The dataplane does not terminate TCP. It rewrites the Maximum Segment
//! Size option of SYNs crossing a tunnel so that the peers' segments fit
//! the tunnel MTU after ESP overhead ([`TcpPacket::clamp_mss`]), updating
//! the checksum incrementally ([RFC 1624]).
//!
//! A TCP header has no length field for the segment, so a [`TcpPacket`]
//! buffer must be exactly the segment (the IP payload): the checksum and
//! [`TcpPacket::payload`] run to the end of the buffer.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Sequence Number                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Acknowledgment Number                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Data |       |C|E|U|A|P|R|S|F|                               |
//! | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//! |       |       |R|E|G|K|H|T|N|N|                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Checksum            |         Urgent Pointer        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           [Options]                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [RFC 9293]: https://www.rfc-editor.org/rfc/rfc9293
//! [RFC 1624]: https://www.rfc-editor.org/rfc/rfc1624

use super::{
    Error, Header, IpPair, IpProtocol, Result, checksum, need, read_u16, read_u32, write_u16,
    write_u32,
};

/// Byte ranges of the fixed header.
mod field {
    use core::ops::Range;

    pub(super) const SRC_PORT: Range<usize> = 0..2;
    pub(super) const DST_PORT: Range<usize> = 2..4;
    pub(super) const SEQ_NUM: Range<usize> = 4..8;
    pub(super) const ACK_NUM: Range<usize> = 8..12;
    pub(super) const DATA_OFFSET: usize = 12;
    pub(super) const FLAGS: usize = 13;
    pub(super) const WINDOW: Range<usize> = 14..16;
    pub(super) const CHECKSUM: Range<usize> = 16..18;
    pub(super) const URGENT: Range<usize> = 18..20;
}

/// Length of a header without options (Data Offset 5).
pub const HEADER_LEN: usize = field::URGENT.end;

/// Option kinds ([IANA TCP Option Kind Numbers]).
///
/// [IANA TCP Option Kind Numbers]: https://www.iana.org/assignments/tcp-parameters/
mod kind {
    pub(super) const END: u8 = 0;
    pub(super) const NOP: u8 = 1;
    pub(super) const MSS: u8 = 2;
    pub(super) const WINDOW_SCALE: u8 = 3;
    pub(super) const SACK_PERMITTED: u8 = 4;
    pub(super) const TIMESTAMPS: u8 = 8;
}

/// The eight control bits of the TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u8);

impl TcpFlags {
    /// FIN: no more data from sender.
    pub const FIN: Self = Self(0x01);
    /// SYN: synchronize sequence numbers.
    pub const SYN: Self = Self(0x02);
    /// RST: reset the connection.
    pub const RST: Self = Self(0x04);
    /// PSH: push function.
    pub const PSH: Self = Self(0x08);
    /// ACK: the Acknowledgment Number is significant.
    pub const ACK: Self = Self(0x10);
    /// URG: the Urgent Pointer is significant.
    pub const URG: Self = Self(0x20);
    /// ECE: ECN-Echo ([RFC 3168]).
    ///
    /// [RFC 3168]: https://www.rfc-editor.org/rfc/rfc3168
    pub const ECE: Self = Self(0x40);
    /// CWR: Congestion Window Reduced ([RFC 3168]).
    ///
    /// [RFC 3168]: https://www.rfc-editor.org/rfc/rfc3168
    pub const CWR: Self = Self(0x80);

    /// Flags from the raw control-bits byte.
    #[must_use]
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    /// The raw control-bits byte.
    #[must_use]
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// True if every flag in `other` is set in `self`.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// One TCP option ([RFC 9293 § 3.2]).
///
/// [RFC 9293 § 3.2]: https://www.rfc-editor.org/rfc/rfc9293#section-3.2
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpOption<'a> {
    /// End of Option List (kind 0); iteration stops after it.
    EndOfList,
    /// No-Operation (kind 1).
    NoOperation,
    /// Maximum Segment Size (kind 2, length 4).
    MaxSegmentSize(u16),
    /// Window Scale (kind 3, length 3, [RFC 7323 § 2]).
    ///
    /// [RFC 7323 § 2]: https://www.rfc-editor.org/rfc/rfc7323#section-2
    WindowScale(u8),
    /// SACK-Permitted (kind 4, length 2, [RFC 2018]).
    ///
    /// [RFC 2018]: https://www.rfc-editor.org/rfc/rfc2018
    SackPermitted,
    /// Timestamps (kind 8, length 10, [RFC 7323 § 3]).
    ///
    /// [RFC 7323 § 3]: https://www.rfc-editor.org/rfc/rfc7323#section-3
    Timestamps {
        /// TSval.
        tsval: u32,
        /// TSecr.
        tsecr: u32,
    },
    /// Any other option (SACK blocks, TCP-AO, …), with its data.
    Other {
        /// Option kind.
        kind: u8,
        /// The bytes after the kind and length octets.
        data: &'a [u8],
    },
}

/// An iterator over the options of a TCP header.
///
/// Yields `Err` once and stops if an option runs past the header or has an
/// impossible length; stops after End of Option List. At most one item per
/// option byte, so at most 40 items.
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> TcpOptions<'a> {
    /// Iterates over `options` (the bytes after the 20-byte fixed header).
    #[must_use]
    pub const fn new(options: &'a [u8]) -> Self {
        Self {
            data: options,
            pos: 0,
        }
    }

    /// The next option and its offset within the options.
    fn next_with_offset(&mut self) -> Option<Result<(usize, TcpOption<'a>)>> {
        let start = self.pos;
        let kind = *self.data.get(start)?;
        let malformed = |what| {
            Err(Error::Malformed {
                header: Header::Tcp,
                what,
            })
        };
        let option = match kind {
            kind::END => {
                self.pos = self.data.len();
                TcpOption::EndOfList
            }
            kind::NOP => {
                self.pos = start + 1;
                TcpOption::NoOperation
            }
            _ => {
                // Every error ends the iteration.
                self.pos = self.data.len();
                let Some(&len) = self.data.get(start + 1) else {
                    return Some(Err(Error::Truncated {
                        header: Header::Tcp,
                        what: "option length",
                        needed: start + 2,
                        available: self.data.len(),
                    }));
                };
                let len = usize::from(len);
                if len < 2 {
                    return Some(malformed("option length below 2"));
                }
                let Some(body) = self.data.get(start + 2..start + len) else {
                    return Some(Err(Error::Truncated {
                        header: Header::Tcp,
                        what: "option",
                        needed: start + len,
                        available: self.data.len(),
                    }));
                };
                self.pos = start + len;
                match (kind, body) {
                    (kind::MSS, &[hi, lo]) => {
                        TcpOption::MaxSegmentSize(u16::from_be_bytes([hi, lo]))
                    }
                    (kind::WINDOW_SCALE, &[shift]) => TcpOption::WindowScale(shift),
                    (kind::SACK_PERMITTED, &[]) => TcpOption::SackPermitted,
                    (kind::TIMESTAMPS, &[a0, a1, a2, a3, b0, b1, b2, b3]) => {
                        TcpOption::Timestamps {
                            tsval: u32::from_be_bytes([a0, a1, a2, a3]),
                            tsecr: u32::from_be_bytes([b0, b1, b2, b3]),
                        }
                    }
                    (
                        kind::MSS | kind::WINDOW_SCALE | kind::SACK_PERMITTED | kind::TIMESTAMPS,
                        _,
                    ) => {
                        self.pos = self.data.len();
                        return Some(malformed("option length wrong for its kind"));
                    }
                    (kind, data) => TcpOption::Other { kind, data },
                }
            }
        };
        Some(Ok((start, option)))
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<TcpOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_with_offset().map(|r| r.map(|(_, option)| option))
    }
}

/// A zero-copy view of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
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

    /// Checks that the buffer holds the 20-byte fixed header, that Data
    /// Offset is at least 5 and that the buffer holds Data Offset × 4
    /// bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if a length does not fit, [`Error::Malformed`]
    /// for a Data Offset below 5.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        need(Header::Tcp, "fixed header", HEADER_LEN, len)?;
        let header_len = usize::from(self.header_len());
        if header_len < HEADER_LEN {
            return Err(Error::Malformed {
                header: Header::Tcp,
                what: "Data Offset below 5",
            });
        }
        need(Header::Tcp, "Data Offset", header_len, len)
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

    /// Sequence Number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM.start)
    }

    /// Acknowledgment Number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM.start)
    }

    /// Header length in bytes (Data Offset × 4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// The control bits.
    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    /// True if SYN is set.
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags().contains(TcpFlags::SYN)
    }

    /// Window.
    #[inline]
    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW.start)
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Urgent Pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT.start)
    }

    /// The option bytes (empty if Data Offset no longer fits the buffer).
    #[inline]
    pub fn options(&self) -> &[u8] {
        let header_len = usize::from(self.header_len());
        self.buffer
            .as_ref()
            .get(HEADER_LEN..header_len)
            .unwrap_or(&[])
    }

    /// An iterator over the options.
    pub fn options_iter(&self) -> TcpOptions<'_> {
        TcpOptions::new(self.options())
    }

    /// The Maximum Segment Size option's value, if present and the options
    /// before it are well-formed.
    pub fn max_seg_size(&self) -> Option<u16> {
        self.options_iter()
            .map_while(|o| o.ok())
            .find_map(|o| match o {
                TcpOption::MaxSegmentSize(mss) => Some(mss),
                _ => None,
            })
    }

    /// True if the checksum is correct over the whole buffer (which must be
    /// exactly the segment) for the addresses in `ips`.
    pub fn verify_checksum(&self, ips: &IpPair) -> bool {
        ips.upper_layer_sum(IpProtocol::Tcp, self.buffer.as_ref()) == Some(0xffff)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> TcpPacket<&'a T> {
    /// The payload: after the options to the end of the buffer (empty if
    /// Data Offset no longer fits the buffer).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let header_len = usize::from(self.header_len());
        self.buffer.as_ref().get(header_len..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Sets Sequence Number.
    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM.start, seq);
    }

    /// Sets Acknowledgment Number.
    #[inline]
    pub fn set_ack_number(&mut self, ack: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM.start, ack);
    }

    /// Sets Data Offset from a header length in bytes (rounded down to a
    /// multiple of 4, clamped to 60). Clears the reserved bits.
    #[inline]
    pub fn set_header_len(&mut self, len: u8) {
        self.buffer.as_mut()[field::DATA_OFFSET] = (len.min(60) / 4) << 4;
    }

    /// Sets the control bits.
    #[inline]
    pub fn set_flags(&mut self, flags: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = flags.bits();
    }

    /// Sets Window.
    #[inline]
    pub fn set_window_len(&mut self, window: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW.start, window);
    }

    /// Sets the Checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Sets Urgent Pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, urgent: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT.start, urgent);
    }

    /// Computes and stores the checksum over the whole buffer (which must
    /// be exactly the segment) for the addresses in `ips`.
    pub fn fill_checksum(&mut self, ips: &IpPair) {
        self.set_checksum(0);
        if let Some(sum) = ips.upper_layer_sum(IpProtocol::Tcp, self.buffer.as_ref()) {
            self.set_checksum(!sum);
        }
    }

    /// The option bytes, mutably (empty if Data Offset no longer fits).
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = usize::from(self.header_len());
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..header_len)
            .unwrap_or(&mut [])
    }

    /// The payload, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = usize::from(self.header_len());
        self.buffer
            .as_mut()
            .get_mut(header_len..)
            .unwrap_or(&mut [])
    }

    /// Lowers the Maximum Segment Size option of a SYN to `max` if it is
    /// larger, updating the checksum incrementally ([RFC 1624]); returns
    /// whether the segment changed.
    ///
    /// Only SYN segments are touched ([RFC 9293 § 3.7.1]: MSS "MUST only be
    /// sent in the initial connection request (i.e., in segments with the
    /// SYN control bit set)"). A SYN without an MSS option, or with
    /// malformed options before it, is left alone: the peer then assumes
    /// the default of 536 (IPv4) / 1220 (IPv6), which fits any tunnel. The
    /// checksum stays valid whether or not it was valid before (a bad one
    /// stays bad for the receiver to drop).
    ///
    /// [RFC 1624]: https://www.rfc-editor.org/rfc/rfc1624
    /// [RFC 9293 § 3.7.1]: https://www.rfc-editor.org/rfc/rfc9293#section-3.7.1
    pub fn clamp_mss(&mut self, max: u16) -> bool {
        if !self.syn() {
            return false;
        }
        let mut options = TcpOptions::new(self.options());
        let found = loop {
            match options.next_with_offset() {
                Some(Ok((offset, TcpOption::MaxSegmentSize(mss)))) => break Some((offset, mss)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            }
        };
        let Some((offset, mss)) = found else {
            return false;
        };
        if mss <= max {
            return false;
        }
        // The value follows the kind and length octets.
        let at = HEADER_LEN + offset + 2;
        write_u16(self.buffer.as_mut(), at, max);
        // A value at an odd offset straddles two checksum words; its
        // contribution is then byte-swapped (RFC 1071 § 2(B)).
        let (old, new) = if at.is_multiple_of(2) {
            (mss, max)
        } else {
            (mss.swap_bytes(), max.swap_bytes())
        };
        let sum = checksum::update(self.checksum(), old, new);
        self.set_checksum(sum);
        true
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for TcpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The TCP header fields the dataplane builds or inspects. The Urgent
/// Pointer is emitted as zero; of the options only MSS is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpRepr {
    /// Source Port (nonzero).
    pub src_port: u16,
    /// Destination Port (nonzero).
    pub dst_port: u16,
    /// Sequence Number.
    pub seq_number: u32,
    /// Acknowledgment Number.
    pub ack_number: u32,
    /// Control bits.
    pub flags: TcpFlags,
    /// Window.
    pub window_len: u16,
    /// Maximum Segment Size option, if any.
    pub max_seg_size: Option<u16>,
    /// Payload length in bytes.
    pub payload_len: usize,
}

/// Length of the MSS option.
const MSS_OPTION_LEN: usize = 4;

impl TcpRepr {
    /// Parses and validates a segment (the buffer must be exactly the
    /// segment):
    ///
    /// 1. lengths, as [`TcpPacket::check_len`];
    /// 2. neither port is zero;
    /// 3. the checksum verifies against `ips`;
    /// 4. the options are well-formed.
    ///
    /// # Errors
    ///
    /// The error of the first step that fails.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &TcpPacket<&T>, ips: &IpPair) -> Result<Self> {
        // 1.
        packet.check_len()?;
        // 2.
        if packet.src_port() == 0 || packet.dst_port() == 0 {
            return Err(Error::Malformed {
                header: Header::Tcp,
                what: "port is zero",
            });
        }
        // 3.
        if !packet.verify_checksum(ips) {
            return Err(Error::Checksum {
                header: Header::Tcp,
            });
        }
        // 4.
        let mut max_seg_size = None;
        for option in packet.options_iter() {
            if let TcpOption::MaxSegmentSize(mss) = option? {
                max_seg_size.get_or_insert(mss);
            }
        }
        Ok(Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window_len: packet.window_len(),
            max_seg_size,
            payload_len: packet.payload().len(),
        })
    }

    /// Length of the header `emit` writes: 20 bytes, plus 4 with MSS.
    #[must_use]
    pub const fn header_len(&self) -> usize {
        if self.max_seg_size.is_some() {
            HEADER_LEN + MSS_OPTION_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Bytes of the whole segment: header plus `payload_len`.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    /// Writes the header and the checksum into `packet`, which must be
    /// exactly [`buffer_len`](Self::buffer_len) bytes with the payload
    /// already in place after the header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut TcpPacket<T>, ips: &IpPair) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        packet.set_header_len(if self.max_seg_size.is_some() { 24 } else { 20 });
        packet.set_flags(self.flags);
        packet.set_window_len(self.window_len);
        packet.set_urgent_at(0);
        if let Some(mss) = self.max_seg_size {
            let [hi, lo] = mss.to_be_bytes();
            packet
                .options_mut()
                .copy_from_slice(&[kind::MSS, 4, hi, lo]);
        }
        packet.fill_checksum(ips);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;
    use hex_literal::hex;
    use proptest::prelude::*;

    const IPS: IpPair = IpPair::V4 {
        src: Ipv4Addr::new(10, 0, 0, 2),
        dst: Ipv4Addr::new(10, 0, 0, 1),
    };

    /// A Linux SYN, 10.0.0.2:45678 → 10.0.0.1:80: MSS 1460, SACK-Permitted,
    /// Timestamps, NOP, Window Scale 7; checksum [`CHECKSUM`].
    const SYN_BYTES: [u8; 40] = hex!(
        "b26e 0050 3a1b2c3d 00000000 a0 02 faf0 3db4 0000"
        "020405b4 0402 080a 0001e240 00000000 01 030307"
    );

    fn repr() -> TcpRepr {
        TcpRepr {
            src_port: 45678,
            dst_port: 80,
            seq_number: 0x3a1b_2c3d,
            ack_number: 0,
            flags: TcpFlags::SYN,
            window_len: 64240,
            max_seg_size: Some(1460),
            payload_len: 0,
        }
    }

    #[test]
    fn deconstruct() {
        let bytes = SYN_BYTES;
        let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.src_port(), 45678);
        assert_eq!(packet.dst_port(), 80);
        assert_eq!(packet.seq_number(), 0x3a1b_2c3d);
        assert_eq!(packet.ack_number(), 0);
        assert_eq!(packet.header_len(), 40);
        assert_eq!(packet.flags(), TcpFlags::SYN);
        assert!(packet.syn());
        assert_eq!(packet.window_len(), 64240);
        assert_eq!(packet.urgent_at(), 0);
        assert_eq!(packet.checksum(), CHECKSUM);
        assert!(packet.verify_checksum(&IPS));
        assert!(packet.payload().is_empty());
        let options: Vec<_> = packet.options_iter().map(|o| o.unwrap()).collect();
        assert_eq!(
            options,
            [
                TcpOption::MaxSegmentSize(1460),
                TcpOption::SackPermitted,
                TcpOption::Timestamps {
                    tsval: 123_456,
                    tsecr: 0
                },
                TcpOption::NoOperation,
                TcpOption::WindowScale(7),
            ]
        );
        assert_eq!(packet.max_seg_size(), Some(1460));
    }

    /// The checksum of `SYN_BYTES`, computed by hand over the pseudo-header
    /// and segment.
    const CHECKSUM: u16 = 0x3db4;

    #[test]
    fn construct() {
        let mut bytes = [0xa5; 40];
        let mut packet = TcpPacket::new_unchecked(&mut bytes[..]);
        packet.set_src_port(45678);
        packet.set_dst_port(80);
        packet.set_seq_number(0x3a1b_2c3d);
        packet.set_ack_number(0);
        packet.set_header_len(40);
        packet.set_flags(TcpFlags::SYN);
        packet.set_window_len(64240);
        packet.set_urgent_at(0);
        packet.options_mut().copy_from_slice(&SYN_BYTES[20..40]);
        packet.fill_checksum(&IPS);
        assert_eq!(bytes, SYN_BYTES);
    }

    #[test]
    fn check_len() {
        let bytes = SYN_BYTES;
        assert!(matches!(
            TcpPacket::new_checked(&bytes[..19]),
            Err(Error::Truncated { needed: 20, .. })
        ));
        assert!(matches!(
            TcpPacket::new_checked(&bytes[..39]),
            Err(Error::Truncated {
                what: "Data Offset",
                ..
            })
        ));
        let mut bad = bytes;
        bad[12] = 0x40;
        assert!(matches!(
            TcpPacket::new_checked(&bad[..]),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn parse() {
        let bytes = SYN_BYTES;
        let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(TcpRepr::parse(&packet, &IPS).unwrap(), repr());
        let mut bad = bytes;
        bad[17] ^= 1;
        assert!(matches!(
            TcpRepr::parse(&TcpPacket::new_checked(&bad[..]).unwrap(), &IPS),
            Err(Error::Checksum { .. })
        ));
    }

    #[test]
    fn emit() {
        let repr = repr();
        let mut bytes = vec![0xa5; repr.buffer_len()];
        repr.emit(&mut TcpPacket::new_unchecked(&mut bytes[..]), &IPS);
        let mut expected = hex!("b26e 0050 3a1b2c3d 00000000 60 02 faf0 0000 0000 020405b4");
        TcpPacket::new_unchecked(&mut expected[..]).fill_checksum(&IPS);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn buffer_len() {
        assert_eq!(repr().buffer_len(), 24);
        let no_mss = TcpRepr {
            max_seg_size: None,
            payload_len: 100,
            ..repr()
        };
        assert_eq!(no_mss.buffer_len(), 120);
    }

    #[test]
    fn clamp_mss_aligned() {
        let mut bytes = SYN_BYTES;
        let mut packet = TcpPacket::new_checked(&mut bytes[..]).unwrap();
        assert!(packet.clamp_mss(1360));
        assert_eq!(packet.max_seg_size(), Some(1360));
        assert!(packet.verify_checksum(&IPS));
        assert!(!packet.clamp_mss(1400), "already below");
        assert!(!packet.clamp_mss(1360), "equal");
    }

    #[test]
    fn clamp_mss_odd_offset() {
        // NOP before MSS puts its value at an odd offset (23).
        let mut bytes = hex!("b26e 0050 3a1b2c3d 00000000 70 02 faf0 0000 0000 01 020405b4 000000");
        TcpPacket::new_unchecked(&mut bytes[..]).fill_checksum(&IPS);
        let mut packet = TcpPacket::new_checked(&mut bytes[..]).unwrap();
        assert!(packet.clamp_mss(1200));
        assert_eq!(packet.max_seg_size(), Some(1200));
        assert!(packet.verify_checksum(&IPS));
    }

    #[test]
    fn clamp_mss_only_on_syn() {
        let mut bytes = SYN_BYTES;
        let mut packet = TcpPacket::new_checked(&mut bytes[..]).unwrap();
        packet.set_flags(TcpFlags::ACK);
        assert!(!packet.clamp_mss(500));
        assert_eq!(packet.max_seg_size(), Some(1460));
        packet.set_flags(TcpFlags::SYN | TcpFlags::ACK);
        assert!(packet.clamp_mss(500));
    }

    #[test]
    fn malformed_options() {
        // Length 1.
        let mut it = TcpOptions::new(&[2, 1, 0, 0]);
        assert!(matches!(it.next(), Some(Err(Error::Malformed { .. }))));
        assert!(it.next().is_none());
        // Runs past the header.
        let mut it = TcpOptions::new(&[1, 8, 10]);
        assert_eq!(it.next(), Some(Ok(TcpOption::NoOperation)));
        assert!(matches!(it.next(), Some(Err(Error::Truncated { .. }))));
        assert!(it.next().is_none());
        // MSS with the wrong length.
        let mut it = TcpOptions::new(&[2, 3, 5]);
        assert!(matches!(it.next(), Some(Err(Error::Malformed { .. }))));
        // End of list stops the iteration.
        let mut it = TcpOptions::new(&[0, 2, 4, 5, 180]);
        assert_eq!(it.next(), Some(Ok(TcpOption::EndOfList)));
        assert!(it.next().is_none());
        // Unknown kinds are carried through.
        let mut it = TcpOptions::new(&[5, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(
            it.next(),
            Some(Ok(TcpOption::Other {
                kind: 5,
                data: &[0, 0, 0, 1, 0, 0, 0, 2]
            }))
        );
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(
            src_port in 1..=u16::MAX,
            dst_port in 1..=u16::MAX,
            seq_number in any::<u32>(),
            ack_number in any::<u32>(),
            flags in any::<u8>(),
            window_len in any::<u16>(),
            max_seg_size in proptest::option::of(any::<u16>()),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let repr = TcpRepr {
                src_port, dst_port, seq_number, ack_number,
                flags: TcpFlags::from_bits(flags), window_len, max_seg_size,
                payload_len: payload.len(),
            };
            let mut bytes = vec![0xa5; repr.buffer_len()];
            bytes[repr.header_len()..].copy_from_slice(&payload);
            repr.emit(&mut TcpPacket::new_unchecked(&mut bytes[..]), &IPS);
            let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(TcpRepr::parse(&packet, &IPS).unwrap(), repr);
        }

        /// Clamping keeps the checksum valid for any SYN with an MSS option
        /// anywhere in the options.
        #[test]
        fn clamp_mss_keeps_checksum(
            nops in 0usize..8,
            mss in any::<u16>(),
            max in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..9),
        ) {
            let mut options = vec![1u8; nops];
            options.extend([2, 4]);
            options.extend(mss.to_be_bytes());
            while !options.len().is_multiple_of(4) { options.push(0); }
            let header_len = HEADER_LEN + options.len();
            let mut bytes = vec![0u8; header_len];
            bytes[HEADER_LEN..].copy_from_slice(&options);
            bytes.extend(&payload);
            let mut packet = TcpPacket::new_unchecked(&mut bytes[..]);
            packet.set_header_len(u8::try_from(header_len).unwrap());
            packet.set_flags(TcpFlags::SYN);
            packet.fill_checksum(&IPS);
            let changed = packet.clamp_mss(max);
            prop_assert_eq!(changed, mss > max);
            prop_assert_eq!(packet.max_seg_size(), Some(mss.min(max)));
            prop_assert!(packet.verify_checksum(&IPS));
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(packet) = TcpPacket::new_checked(&bytes[..]) {
                let _ = (packet.flags(), packet.options(), packet.payload(), packet.max_seg_size());
                prop_assert!(packet.options_iter().count() <= 40);
                let _ = TcpRepr::parse(&packet, &IPS);
            }
            if let Ok(mut packet) = TcpPacket::new_checked(&mut bytes[..]) {
                let _ = packet.clamp_mss(1000);
            }
        }

        #[test]
        fn mutated_packets_never_panic(
            flips in proptest::collection::vec((0..40usize, any::<u8>()), 1..6),
            cut in 0..=40usize,
        ) {
            let mut bytes = SYN_BYTES.to_vec();
            for (at, value) in flips {
                bytes[at] = value;
            }
            bytes.truncate(cut);
            if let Ok(packet) = TcpPacket::new_checked(&bytes[..]) {
                let _ = packet.options_iter().count();
                let _ = TcpRepr::parse(&packet, &IPS);
            }
            if let Ok(mut packet) = TcpPacket::new_checked(&mut bytes[..]) {
                let _ = packet.clamp_mss(536);
            }
        }
    }
}
