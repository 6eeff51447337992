//! ICMPv4 ([RFC 792]) and ICMPv6 ([RFC 4443]) messages.
//!
//! The dataplane answers echo requests to its own addresses and emits the
//! path-MTU signals when an inner packet does not fit the tunnel:
//! "fragmentation needed and DF set" (ICMPv4 type 3 code 4, with the
//! Next-Hop MTU of [RFC 1191 § 4]) and "packet too big" (ICMPv6 type 2,
//! [RFC 4443 § 3.2]).
//!
//! Both versions share the first word (Type, Code, Checksum) and a second
//! word whose meaning depends on the type:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Identifier (echo) / unused  | Sequence (echo) / Next-Hop MTU|  v4
//! |             MTU (v6 packet too big) / unused                  |  v6
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   data: echo data, or as much of the invoking packet as fits  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The ICMPv4 checksum covers the message only; the ICMPv6 checksum also
//! covers the IPv6 pseudo-header ([RFC 4443 § 2.3]). A view's buffer must
//! be exactly the message (the IP payload).
//!
//! [RFC 792]: https://www.rfc-editor.org/rfc/rfc792
//! [RFC 4443]: https://www.rfc-editor.org/rfc/rfc4443
//! [RFC 1191 § 4]: https://www.rfc-editor.org/rfc/rfc1191#section-4
//! [RFC 4443 § 3.2]: https://www.rfc-editor.org/rfc/rfc4443#section-3.2
//! [RFC 4443 § 2.3]: https://www.rfc-editor.org/rfc/rfc4443#section-2.3

use core::net::Ipv6Addr;

use super::{
    Error, Header, IpPair, IpProtocol, Result, checksum, need, read_u16, read_u32, write_u16,
    write_u32,
};

/// Byte ranges of the header, common to both versions.
mod field {
    use core::ops::Range;

    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const CHECKSUM: Range<usize> = 2..4;
    /// The second word, whose meaning depends on the type.
    pub(super) const REST: Range<usize> = 4..8;
    pub(super) const ECHO_IDENT: Range<usize> = 4..6;
    pub(super) const ECHO_SEQNO: Range<usize> = 6..8;
    /// ICMPv4 destination unreachable, code 4 (RFC 1191 § 4).
    pub(super) const NEXT_HOP_MTU: Range<usize> = 6..8;
    /// ICMPv6 packet too big (RFC 4443 § 3.2).
    pub(super) const MTU: Range<usize> = 4..8;
}

/// Length of the header (Type, Code, Checksum and the second word).
pub const HEADER_LEN: usize = field::REST.end;

// RFC 1812 § 4.3.2.3: "the ICMP datagram SHOULD contain as much of the
// original datagram as possible without the length of the ICMP datagram
// exceeding 576 bytes."
/// The most bytes of an invoking datagram an ICMPv4 error quotes:
/// 576 − 20 (IPv4 header) − 8 (ICMP header).
pub const ICMPV4_MAX_QUOTE: usize = 576 - 20 - HEADER_LEN;

// RFC 4443 § 2.4 (c): "Every ICMPv6 error message … MUST include as much
// of the IPv6 offending (invoking) packet … as possible without making the
// error message packet exceed the minimum IPv6 MTU."
/// The most bytes of an invoking packet an ICMPv6 error quotes:
/// 1280 − 40 (IPv6 header) − 8 (ICMPv6 header).
pub const ICMPV6_MAX_QUOTE: usize = 1280 - 40 - HEADER_LEN;

/// ICMPv4 Destination Unreachable code: "fragmentation needed and DF set".
pub const CODE_FRAG_NEEDED: u8 = 4;

enum_with_unknown! {
    /// ICMPv4 message types ([IANA ICMP Parameters]).
    ///
    /// [IANA ICMP Parameters]: https://www.iana.org/assignments/icmp-parameters/
    pub enum Icmpv4Message(u8) {
        /// Echo Reply.
        EchoReply = 0,
        /// Destination Unreachable.
        DstUnreachable = 3,
        /// Redirect.
        Redirect = 5,
        /// Echo Request.
        EchoRequest = 8,
        /// Time Exceeded.
        TimeExceeded = 11,
        /// Parameter Problem.
        ParamProblem = 12,
    }
}

enum_with_unknown! {
    /// ICMPv6 message types ([IANA ICMPv6 Parameters]).
    ///
    /// [IANA ICMPv6 Parameters]: https://www.iana.org/assignments/icmpv6-parameters/
    pub enum Icmpv6Message(u8) {
        /// Destination Unreachable.
        DstUnreachable = 1,
        /// Packet Too Big.
        PacketTooBig = 2,
        /// Time Exceeded.
        TimeExceeded = 3,
        /// Parameter Problem.
        ParamProblem = 4,
        /// Echo Request.
        EchoRequest = 128,
        /// Echo Reply.
        EchoReply = 129,
        /// Router Solicitation ([RFC 4861]).
        ///
        /// [RFC 4861]: https://www.rfc-editor.org/rfc/rfc4861
        RouterSolicit = 133,
        /// Router Advertisement ([RFC 4861]).
        ///
        /// [RFC 4861]: https://www.rfc-editor.org/rfc/rfc4861
        RouterAdvert = 134,
        /// Neighbor Solicitation ([RFC 4861]).
        ///
        /// [RFC 4861]: https://www.rfc-editor.org/rfc/rfc4861
        NeighborSolicit = 135,
        /// Neighbor Advertisement ([RFC 4861]).
        ///
        /// [RFC 4861]: https://www.rfc-editor.org/rfc/rfc4861
        NeighborAdvert = 136,
        /// Redirect ([RFC 4861]).
        ///
        /// [RFC 4861]: https://www.rfc-editor.org/rfc/rfc4861
        Redirect = 137,
    }
}

/// Defines the accessors common to [`Icmpv4Packet`] and [`Icmpv6Packet`].
macro_rules! icmp_packet_common {
    ($packet:ident, $message:ident, $header:expr) => {
        impl<T: AsRef<[u8]>> $packet<T> {
            /// Wraps a buffer without checking it. Only for emitting into a
            /// buffer of at least [`HEADER_LEN`] bytes (see the module's
            /// no-panic contract).
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

            /// Checks that the buffer holds the 8-byte header.
            ///
            /// # Errors
            ///
            /// [`Error::Truncated`] if it does not.
            pub fn check_len(&self) -> Result<()> {
                need($header, "header", HEADER_LEN, self.buffer.as_ref().len())
            }

            /// Returns the underlying buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }

            /// Type.
            #[inline]
            pub fn msg_type(&self) -> $message {
                $message::from(self.buffer.as_ref()[field::TYPE])
            }

            /// Code.
            #[inline]
            pub fn msg_code(&self) -> u8 {
                self.buffer.as_ref()[field::CODE]
            }

            /// Checksum field.
            #[inline]
            pub fn checksum(&self) -> u16 {
                read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
            }

            /// The second word, raw (its meaning depends on the type).
            #[inline]
            pub fn rest_of_header(&self) -> u32 {
                read_u32(self.buffer.as_ref(), field::REST.start)
            }

            /// Identifier of an echo request or reply.
            #[inline]
            pub fn echo_ident(&self) -> u16 {
                read_u16(self.buffer.as_ref(), field::ECHO_IDENT.start)
            }

            /// Sequence Number of an echo request or reply.
            #[inline]
            pub fn echo_seq_no(&self) -> u16 {
                read_u16(self.buffer.as_ref(), field::ECHO_SEQNO.start)
            }
        }

        impl<'a, T: AsRef<[u8]> + ?Sized> $packet<&'a T> {
            /// The data after the 8-byte header: echo data, or the quoted
            /// invoking packet of an error.
            #[inline]
            pub fn data(&self) -> &'a [u8] {
                self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $packet<T> {
            /// Sets Type.
            #[inline]
            pub fn set_msg_type(&mut self, value: $message) {
                self.buffer.as_mut()[field::TYPE] = value.into();
            }

            /// Sets Code.
            #[inline]
            pub fn set_msg_code(&mut self, value: u8) {
                self.buffer.as_mut()[field::CODE] = value;
            }

            /// Sets the Checksum field.
            #[inline]
            pub fn set_checksum(&mut self, value: u16) {
                write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
            }

            /// Sets the second word, raw.
            #[inline]
            pub fn set_rest_of_header(&mut self, value: u32) {
                write_u32(self.buffer.as_mut(), field::REST.start, value);
            }

            /// Sets the echo Identifier.
            #[inline]
            pub fn set_echo_ident(&mut self, value: u16) {
                write_u16(self.buffer.as_mut(), field::ECHO_IDENT.start, value);
            }

            /// Sets the echo Sequence Number.
            #[inline]
            pub fn set_echo_seq_no(&mut self, value: u16) {
                write_u16(self.buffer.as_mut(), field::ECHO_SEQNO.start, value);
            }

            /// The data after the header, mutably.
            #[inline]
            pub fn data_mut(&mut self) -> &mut [u8] {
                self.buffer
                    .as_mut()
                    .get_mut(HEADER_LEN..)
                    .unwrap_or(&mut [])
            }

            /// Writes everything a `Repr` emits but the checksum (which
            /// covers different bytes per version): Type, Code, the second
            /// word and the data, of which what fits the buffer (the caller
            /// sized it with `buffer_len`; a mismatch never panics).
            fn emit_fields(&mut self, msg_type: $message, code: u8, rest: u32, data: &[u8]) {
                self.set_msg_type(msg_type);
                self.set_msg_code(code);
                self.set_rest_of_header(rest);
                for (d, s) in self.data_mut().iter_mut().zip(data) {
                    *d = *s;
                }
            }
        }

        impl<T: AsRef<[u8]>> AsRef<[u8]> for $packet<T> {
            fn as_ref(&self) -> &[u8] {
                self.buffer.as_ref()
            }
        }
    };
}

/// A zero-copy view of an ICMPv4 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

icmp_packet_common!(Icmpv4Packet, Icmpv4Message, Header::Icmpv4);

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Next-Hop MTU of a "fragmentation needed" message ([RFC 1191 § 4]).
    ///
    /// [RFC 1191 § 4]: https://www.rfc-editor.org/rfc/rfc1191#section-4
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::NEXT_HOP_MTU.start)
    }

    /// True if the checksum over the whole message is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Sets the Next-Hop MTU (and clears the unused half-word before it).
    #[inline]
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        self.set_rest_of_header(u32::from(mtu));
    }

    /// Computes and stores the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = !checksum::data(self.buffer.as_ref());
        self.set_checksum(sum);
    }
}

/// A zero-copy view of an ICMPv6 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

icmp_packet_common!(Icmpv6Packet, Icmpv6Message, Header::Icmpv6);

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// MTU of a "packet too big" message ([RFC 4443 § 3.2]).
    ///
    /// [RFC 4443 § 3.2]: https://www.rfc-editor.org/rfc/rfc4443#section-3.2
    #[inline]
    pub fn mtu(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::MTU.start)
    }

    fn sum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> Option<u16> {
        IpPair::V6 { src, dst }.upper_layer_sum(IpProtocol::Icmpv6, self.buffer.as_ref())
    }

    /// True if the checksum over the pseudo-header and the whole message is
    /// correct.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        self.sum(src, dst) == Some(0xffff)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Sets the MTU of a "packet too big" message.
    #[inline]
    pub fn set_mtu(&mut self, mtu: u32) {
        write_u32(self.buffer.as_mut(), field::MTU.start, mtu);
    }

    /// Computes and stores the checksum over the pseudo-header and the
    /// whole message.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        if let Some(sum) = self.sum(src, dst) {
            self.set_checksum(!sum);
        }
    }
}

/// The second word of an echo request or reply: Identifier, then
/// Sequence Number (the same layout in both versions).
fn echo_word(ident: u16, seq_no: u16) -> u32 {
    (u32::from(ident) << 16) | u32::from(seq_no)
}

/// The leading `max` bytes of an invoking packet an error quotes (all of
/// it if shorter).
fn quote(invoking: &[u8], max: usize) -> &[u8] {
    invoking.get(..max).unwrap_or(invoking)
}

/// An ICMPv4 message the dataplane handles, borrowing its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Icmpv4Repr<'a> {
    /// Echo Request (type 8).
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence Number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// Echo Reply (type 0).
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence Number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// Destination Unreachable, fragmentation needed and DF set (type 3,
    /// code 4, [RFC 1191 § 4]).
    ///
    /// [RFC 1191 § 4]: https://www.rfc-editor.org/rfc/rfc1191#section-4
    FragNeeded {
        /// Next-Hop MTU.
        next_hop_mtu: u16,
        /// The invoking datagram's header and leading data.
        data: &'a [u8],
    },
    /// Destination Unreachable with any other code (type 3).
    DstUnreachable {
        /// Code.
        code: u8,
        /// The invoking datagram's header and leading data.
        data: &'a [u8],
    },
    /// Time Exceeded (type 11).
    TimeExceeded {
        /// Code (0: TTL exceeded in transit).
        code: u8,
        /// The invoking datagram's header and leading data.
        data: &'a [u8],
    },
    /// Any other type, fields kept raw.
    Other {
        /// Type.
        msg_type: Icmpv4Message,
        /// Code.
        code: u8,
        /// The second header word.
        rest_of_header: u32,
        /// Data.
        data: &'a [u8],
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// A "fragmentation needed" message quoting `invoking` (the dropped
    /// datagram from its IPv4 header on), truncated to
    /// [`ICMPV4_MAX_QUOTE`] bytes.
    #[must_use]
    pub fn frag_needed(next_hop_mtu: u16, invoking: &'a [u8]) -> Self {
        Self::FragNeeded {
            next_hop_mtu,
            data: quote(invoking, ICMPV4_MAX_QUOTE),
        }
    }

    /// Parses a message after verifying its checksum.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] for a buffer shorter than the header,
    /// [`Error::Checksum`] if the checksum does not verify.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Icmpv4Packet<&'a T>) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::Checksum {
                header: Header::Icmpv4,
            });
        }
        let data = packet.data();
        let code = packet.msg_code();
        Ok(match (packet.msg_type(), code) {
            (Icmpv4Message::EchoRequest, 0) => Self::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            (Icmpv4Message::EchoReply, 0) => Self::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            (Icmpv4Message::DstUnreachable, CODE_FRAG_NEEDED) => Self::FragNeeded {
                next_hop_mtu: packet.next_hop_mtu(),
                data,
            },
            (Icmpv4Message::DstUnreachable, code) => Self::DstUnreachable { code, data },
            (Icmpv4Message::TimeExceeded, code) => Self::TimeExceeded { code, data },
            (msg_type, code) => Self::Other {
                msg_type,
                code,
                rest_of_header: packet.rest_of_header(),
                data,
            },
        })
    }

    /// The data this message carries.
    #[must_use]
    pub const fn data(&self) -> &'a [u8] {
        match *self {
            Self::EchoRequest { data, .. }
            | Self::EchoReply { data, .. }
            | Self::FragNeeded { data, .. }
            | Self::DstUnreachable { data, .. }
            | Self::TimeExceeded { data, .. }
            | Self::Other { data, .. } => data,
        }
    }

    /// Bytes of the whole message: the 8-byte header plus the data.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.data().len()
    }

    /// Writes the message, data included, with its checksum into `packet`,
    /// which must be exactly [`buffer_len`](Self::buffer_len) bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Icmpv4Packet<T>) {
        let (msg_type, code, rest) = match *self {
            Self::EchoRequest { ident, seq_no, .. } => {
                (Icmpv4Message::EchoRequest, 0, echo_word(ident, seq_no))
            }
            Self::EchoReply { ident, seq_no, .. } => {
                (Icmpv4Message::EchoReply, 0, echo_word(ident, seq_no))
            }
            Self::FragNeeded { next_hop_mtu, .. } => (
                Icmpv4Message::DstUnreachable,
                CODE_FRAG_NEEDED,
                u32::from(next_hop_mtu),
            ),
            Self::DstUnreachable { code, .. } => (Icmpv4Message::DstUnreachable, code, 0),
            Self::TimeExceeded { code, .. } => (Icmpv4Message::TimeExceeded, code, 0),
            Self::Other {
                msg_type,
                code,
                rest_of_header,
                ..
            } => (msg_type, code, rest_of_header),
        };
        packet.emit_fields(msg_type, code, rest, self.data());
        packet.fill_checksum();
    }
}

/// An ICMPv6 message the dataplane handles, borrowing its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Icmpv6Repr<'a> {
    /// Echo Request (type 128).
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence Number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// Echo Reply (type 129).
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence Number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// Packet Too Big (type 2, [RFC 4443 § 3.2]).
    ///
    /// [RFC 4443 § 3.2]: https://www.rfc-editor.org/rfc/rfc4443#section-3.2
    PacketTooBig {
        /// The MTU of the next-hop link.
        mtu: u32,
        /// As much of the invoking packet as fits.
        data: &'a [u8],
    },
    /// Destination Unreachable (type 1).
    DstUnreachable {
        /// Code.
        code: u8,
        /// As much of the invoking packet as fits.
        data: &'a [u8],
    },
    /// Time Exceeded (type 3).
    TimeExceeded {
        /// Code (0: hop limit exceeded in transit).
        code: u8,
        /// As much of the invoking packet as fits.
        data: &'a [u8],
    },
    /// Any other type (Neighbor Discovery included), fields kept raw.
    Other {
        /// Type.
        msg_type: Icmpv6Message,
        /// Code.
        code: u8,
        /// The second header word.
        rest_of_header: u32,
        /// Data.
        data: &'a [u8],
    },
}

impl<'a> Icmpv6Repr<'a> {
    /// A "packet too big" message quoting `invoking` (the dropped packet
    /// from its IPv6 header on), truncated to [`ICMPV6_MAX_QUOTE`] bytes.
    #[must_use]
    pub fn packet_too_big(mtu: u32, invoking: &'a [u8]) -> Self {
        Self::PacketTooBig {
            mtu,
            data: quote(invoking, ICMPV6_MAX_QUOTE),
        }
    }

    /// Parses a message after verifying its checksum against the IPv6
    /// source and destination addresses.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] for a buffer shorter than the header,
    /// [`Error::Checksum`] if the checksum does not verify.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Icmpv6Packet<&'a T>,
        src: Ipv6Addr,
        dst: Ipv6Addr,
    ) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error::Checksum {
                header: Header::Icmpv6,
            });
        }
        let data = packet.data();
        Ok(match (packet.msg_type(), packet.msg_code()) {
            (Icmpv6Message::EchoRequest, 0) => Self::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            (Icmpv6Message::EchoReply, 0) => Self::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            (Icmpv6Message::PacketTooBig, 0) => Self::PacketTooBig {
                mtu: packet.mtu(),
                data,
            },
            (Icmpv6Message::DstUnreachable, code) => Self::DstUnreachable { code, data },
            (Icmpv6Message::TimeExceeded, code) => Self::TimeExceeded { code, data },
            (msg_type, code) => Self::Other {
                msg_type,
                code,
                rest_of_header: packet.rest_of_header(),
                data,
            },
        })
    }

    /// The data this message carries.
    #[must_use]
    pub const fn data(&self) -> &'a [u8] {
        match *self {
            Self::EchoRequest { data, .. }
            | Self::EchoReply { data, .. }
            | Self::PacketTooBig { data, .. }
            | Self::DstUnreachable { data, .. }
            | Self::TimeExceeded { data, .. }
            | Self::Other { data, .. } => data,
        }
    }

    /// Bytes of the whole message: the 8-byte header plus the data.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.data().len()
    }

    /// Writes the message, data included, with its checksum for the given
    /// IPv6 addresses into `packet`, which must be exactly
    /// [`buffer_len`](Self::buffer_len) bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Icmpv6Packet<T>,
        src: Ipv6Addr,
        dst: Ipv6Addr,
    ) {
        let (msg_type, code, rest) = match *self {
            Self::EchoRequest { ident, seq_no, .. } => {
                (Icmpv6Message::EchoRequest, 0, echo_word(ident, seq_no))
            }
            Self::EchoReply { ident, seq_no, .. } => {
                (Icmpv6Message::EchoReply, 0, echo_word(ident, seq_no))
            }
            Self::PacketTooBig { mtu, .. } => (Icmpv6Message::PacketTooBig, 0, mtu),
            Self::DstUnreachable { code, .. } => (Icmpv6Message::DstUnreachable, code, 0),
            Self::TimeExceeded { code, .. } => (Icmpv6Message::TimeExceeded, code, 0),
            Self::Other {
                msg_type,
                code,
                rest_of_header,
                ..
            } => (msg_type, code, rest_of_header),
        };
        packet.emit_fields(msg_type, code, rest, self.data());
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    /// A Linux `ping` echo request: id 0x1c46, seq 1, 8 bytes of data.
    /// Checksum computed by hand.
    const ECHO_V4: [u8; 16] = hex!("0800 4a23 1c46 0001 6162636465666768");

    /// Fragmentation needed, Next-Hop MTU 1400, quoting a 20-byte IPv4
    /// header and 8 bytes of its payload.
    const FRAG_NEEDED: [u8; 36] = hex!(
        "0304 22be 0000 0578"
        "45000073000040004011b861c0a80001c0a800c7"
        "d4310035005f0000"
    );

    fn v6_addrs() -> (Ipv6Addr, Ipv6Addr) {
        (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        )
    }

    /// Packet Too Big, MTU 1280, quoting the first 8 bytes of an IPv6
    /// header, 2001:db8::1 → 2001:db8::2. Checksum computed by hand.
    const PTB_V6: [u8; 16] = hex!("0200 2638 00000500 6000000005c81140");

    #[test]
    fn deconstruct_v4() {
        let packet = Icmpv4Packet::new_checked(&ECHO_V4[..]).unwrap();
        assert_eq!(packet.msg_type(), Icmpv4Message::EchoRequest);
        assert_eq!(packet.msg_code(), 0);
        assert_eq!(packet.checksum(), 0x4a23);
        assert_eq!(packet.echo_ident(), 0x1c46);
        assert_eq!(packet.echo_seq_no(), 1);
        assert_eq!(packet.data(), b"abcdefgh");
        assert!(packet.verify_checksum());

        let packet = Icmpv4Packet::new_checked(&FRAG_NEEDED[..]).unwrap();
        assert_eq!(packet.msg_type(), Icmpv4Message::DstUnreachable);
        assert_eq!(packet.msg_code(), CODE_FRAG_NEEDED);
        assert_eq!(packet.next_hop_mtu(), 1400);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn deconstruct_v6() {
        let (src, dst) = v6_addrs();
        let packet = Icmpv6Packet::new_checked(&PTB_V6[..]).unwrap();
        assert_eq!(packet.msg_type(), Icmpv6Message::PacketTooBig);
        assert_eq!(packet.msg_code(), 0);
        assert_eq!(packet.mtu(), 1280);
        assert_eq!(packet.data(), &PTB_V6[8..]);
        assert!(packet.verify_checksum(src, dst));
        assert!(!packet.verify_checksum(dst, Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5; 16];
        let mut packet = Icmpv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(Icmpv4Message::EchoRequest);
        packet.set_msg_code(0);
        packet.set_echo_ident(0x1c46);
        packet.set_echo_seq_no(1);
        packet.data_mut().copy_from_slice(b"abcdefgh");
        packet.fill_checksum();
        assert_eq!(bytes, ECHO_V4);

        let (src, dst) = v6_addrs();
        let mut bytes = [0xa5; 16];
        let mut packet = Icmpv6Packet::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(Icmpv6Message::PacketTooBig);
        packet.set_msg_code(0);
        packet.set_mtu(1280);
        packet.data_mut().copy_from_slice(&PTB_V6[8..]);
        packet.fill_checksum(src, dst);
        assert_eq!(bytes, PTB_V6);
    }

    #[test]
    fn check_len() {
        assert!(matches!(
            Icmpv4Packet::new_checked(&ECHO_V4[..7]),
            Err(Error::Truncated {
                header: Header::Icmpv4,
                needed: 8,
                ..
            })
        ));
        assert!(matches!(
            Icmpv6Packet::new_checked(&PTB_V6[..7]),
            Err(Error::Truncated {
                header: Header::Icmpv6,
                ..
            })
        ));
        assert!(Icmpv4Packet::new_checked(&ECHO_V4[..8]).is_ok());
    }

    #[test]
    fn parse() {
        let packet = Icmpv4Packet::new_checked(&ECHO_V4[..]).unwrap();
        assert_eq!(
            Icmpv4Repr::parse(&packet).unwrap(),
            Icmpv4Repr::EchoRequest {
                ident: 0x1c46,
                seq_no: 1,
                data: b"abcdefgh"
            }
        );
        let packet = Icmpv4Packet::new_checked(&FRAG_NEEDED[..]).unwrap();
        assert_eq!(
            Icmpv4Repr::parse(&packet).unwrap(),
            Icmpv4Repr::FragNeeded {
                next_hop_mtu: 1400,
                data: &FRAG_NEEDED[8..]
            }
        );
        let (src, dst) = v6_addrs();
        let packet = Icmpv6Packet::new_checked(&PTB_V6[..]).unwrap();
        assert_eq!(
            Icmpv6Repr::parse(&packet, src, dst).unwrap(),
            Icmpv6Repr::PacketTooBig {
                mtu: 1280,
                data: &PTB_V6[8..]
            }
        );
        let mut bad = ECHO_V4;
        bad[15] ^= 0xff;
        assert!(matches!(
            Icmpv4Repr::parse(&Icmpv4Packet::new_checked(&bad[..]).unwrap()),
            Err(Error::Checksum { .. })
        ));
    }

    #[test]
    fn emit() {
        let invoking = &FRAG_NEEDED[8..];
        let repr = Icmpv4Repr::frag_needed(1400, invoking);
        let mut bytes = vec![0xa5; repr.buffer_len()];
        repr.emit(&mut Icmpv4Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, FRAG_NEEDED);

        let (src, dst) = v6_addrs();
        let repr = Icmpv6Repr::packet_too_big(1280, &PTB_V6[8..]);
        let mut bytes = vec![0xa5; repr.buffer_len()];
        repr.emit(&mut Icmpv6Packet::new_unchecked(&mut bytes[..]), src, dst);
        assert_eq!(bytes, PTB_V6);
    }

    #[test]
    fn buffer_len() {
        let big = [0u8; 2000];
        assert_eq!(Icmpv4Repr::frag_needed(1400, &big).buffer_len(), 576 - 20);
        assert_eq!(
            Icmpv6Repr::packet_too_big(1280, &big).buffer_len(),
            1280 - 40
        );
        assert_eq!(Icmpv4Repr::frag_needed(1400, &big[..28]).buffer_len(), 36);
    }

    fn arb_v4<'a>(data: &'a [u8], choice: u8, a: u16, b: u16, code: u8, t: u8) -> Icmpv4Repr<'a> {
        match choice % 6 {
            0 => Icmpv4Repr::EchoRequest {
                ident: a,
                seq_no: b,
                data,
            },
            1 => Icmpv4Repr::EchoReply {
                ident: a,
                seq_no: b,
                data,
            },
            2 => Icmpv4Repr::FragNeeded {
                next_hop_mtu: a,
                data,
            },
            3 => Icmpv4Repr::DstUnreachable {
                code: if code == CODE_FRAG_NEEDED { 0 } else { code },
                data,
            },
            4 => Icmpv4Repr::TimeExceeded { code, data },
            _ => Icmpv4Repr::Other {
                // Avoid the types parsed into other variants.
                msg_type: Icmpv4Message::from(if matches!(t, 0 | 3 | 8 | 11) { 42 } else { t }),
                code,
                rest_of_header: (u32::from(a) << 16) | u32::from(b),
                data,
            },
        }
    }

    fn arb_v6<'a>(data: &'a [u8], choice: u8, a: u16, b: u16, code: u8, t: u8) -> Icmpv6Repr<'a> {
        match choice % 6 {
            0 => Icmpv6Repr::EchoRequest {
                ident: a,
                seq_no: b,
                data,
            },
            1 => Icmpv6Repr::EchoReply {
                ident: a,
                seq_no: b,
                data,
            },
            2 => Icmpv6Repr::PacketTooBig {
                mtu: (u32::from(a) << 16) | u32::from(b),
                data,
            },
            3 => Icmpv6Repr::DstUnreachable { code, data },
            4 => Icmpv6Repr::TimeExceeded { code, data },
            _ => Icmpv6Repr::Other {
                msg_type: Icmpv6Message::from(if matches!(t, 1..=3 | 128 | 129) {
                    200
                } else {
                    t
                }),
                code,
                rest_of_header: (u32::from(a) << 16) | u32::from(b),
                data,
            },
        }
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip_v4(
            data in proptest::collection::vec(any::<u8>(), 0..64),
            choice in any::<u8>(), a in any::<u16>(), b in any::<u16>(),
            code in any::<u8>(), t in any::<u8>(),
        ) {
            let repr = arb_v4(&data, choice, a, b, code, t);
            let mut bytes = vec![0xa5; repr.buffer_len()];
            repr.emit(&mut Icmpv4Packet::new_unchecked(&mut bytes[..]));
            let packet = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Icmpv4Repr::parse(&packet).unwrap(), repr);
        }

        #[test]
        fn parse_emit_round_trip_v6(
            data in proptest::collection::vec(any::<u8>(), 0..64),
            choice in any::<u8>(), a in any::<u16>(), b in any::<u16>(),
            code in any::<u8>(), t in any::<u8>(),
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
        ) {
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let repr = arb_v6(&data, choice, a, b, code, t);
            let mut bytes = vec![0xa5; repr.buffer_len()];
            repr.emit(&mut Icmpv6Packet::new_unchecked(&mut bytes[..]), src, dst);
            let packet = Icmpv6Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Icmpv6Repr::parse(&packet, src, dst).unwrap(), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(packet) = Icmpv4Packet::new_checked(&bytes[..]) {
                let _ = (packet.msg_type(), packet.next_hop_mtu(), packet.data());
                let _ = Icmpv4Repr::parse(&packet);
            }
            if let Ok(packet) = Icmpv6Packet::new_checked(&bytes[..]) {
                let _ = (packet.msg_type(), packet.mtu(), packet.data());
                let _ = Icmpv6Repr::parse(&packet, Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
            }
        }
    }
}
