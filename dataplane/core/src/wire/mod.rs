//! Zero-copy views of the headers the dataplane reads and writes.
//!
//! This is the lowest layer of the dataplane: it knows byte layouts and the
//! rules of the RFCs that define them, and nothing about SAs, routing or
//! buffers beyond `AsRef<[u8]>` / `AsMut<[u8]>`. It never allocates and
//! never copies a packet.
//!
//! Every header has two faces, after smoltcp's `wire` module:
//!
//! * a **packet view** (`Ipv4Packet<T>`, `UdpPacket<T>`, `EspPacket<T>`, …)
//!   wrapping any byte buffer `T`, with RFC-named getters and `set_*`
//!   setters that read and write the bytes in place;
//! * a **`Repr`** (`Ipv4Repr`, `UdpRepr`, `EspRepr`, …), a plain value
//!   holding the fields we act on, with `parse` (view → value, validating
//!   the rules that matter), `buffer_len` (how many bytes `emit` writes) and
//!   `emit` (value → bytes through the view).
//!
//! Registry numbers (IP protocol, EtherType, ICMP types) are enums with an
//! `Unknown(raw)` variant, so reading an unassigned value never fails: the
//! `Repr` or the caller decides whether it matters.
//!
//! # The no-panic contract
//!
//! Bytes that arrive from a port are hostile. The rules that keep every
//! function in this module from panicking on them are:
//!
//! 1. **Untrusted bytes enter only through `new_checked`.** It calls
//!    `check_len`, which proves that every fixed field *and* every length
//!    the header itself announces (IPv4 IHL and Total Length, UDP Length,
//!    TCP Data Offset, IPv6 Payload Length) lies inside the buffer. A buffer
//!    that fails gets an [`Error`], never a view.
//! 2. **Accessors on a checked view never panic**, whatever the field values
//!    are. Accessors that follow a length field (`payload`, `options`) stay
//!    in bounds even after a setter has rewritten that field: they return a
//!    shorter (possibly empty) slice instead of indexing out of range.
//! 3. **Walking variable-length structures is bounded and checked.** IPv6
//!    extension headers, TCP options and the ESP trailer are read with
//!    explicit length checks and a fixed iteration limit; a chain that does
//!    not fit yields an [`Error`].
//! 4. **Emitting is the only use of `new_unchecked`.** The caller sizes the
//!    buffer with the `Repr`'s `buffer_len` (or a known constant header
//!    length), wraps it with `new_unchecked`, and calls `emit`. Using
//!    `new_unchecked` on bytes that were not sized this way voids rule 2:
//!    fixed-offset accessors index the buffer directly and panic if it is
//!    too short.
//!
//! Every `Repr::parse` re-runs `check_len` itself, so it is safe on any
//! view. Views of headers that carry no length of their own (TCP, ICMP,
//! ESP, NAT-T) span the whole buffer: slice it to the IP payload first, as
//! the checksum and `payload()` run to its end.
//!
//! `parse` and `new_checked` are exercised with arbitrary and with
//! corrupted-fixture bytes by the property tests in each file, and by the
//! `wire_parsers` cargo-fuzz target (`dataplane/core/fuzz`).
//!
//! # Example
//!
//! The receive side of UDP-encapsulated ESP: each layer is checked before
//! the next is looked at, and nothing is copied.
//!
//! ```
//! use dataplane::wire::{
//!     EspRepr, IpPair, IpProtocol, Ipv4Packet, Ipv4Repr, NatTPacket, NatTRepr, UdpPacket,
//!     UdpRepr, nat_t::NAT_T_PORT,
//! };
//!
//! # fn main() -> Result<(), dataplane::wire::Error> {
//! # let mut frame = [0xa5_u8; 20 + 8 + 8 + 16];
//! # let (src, dst) = ("192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap());
//! # let esp = EspRepr { spi: 0xc0ff_ee01, seq: 7 };
//! # let udp = UdpRepr { src_port: NAT_T_PORT, dst_port: NAT_T_PORT, payload_len: 8 + 16 };
//! # let ip = Ipv4Repr {
//! #     src_addr: src, dst_addr: dst, protocol: IpProtocol::Udp, payload_len: udp.buffer_len(),
//! #     ttl: 64, dscp: 0, ecn: 0, ident: 1, dont_frag: true,
//! # };
//! # ip.emit(&mut Ipv4Packet::new_unchecked(&mut frame[..]));
//! # NatTRepr::Esp(esp).emit(&mut NatTPacket::new_unchecked(&mut frame[28..]));
//! # udp.emit(&mut UdpPacket::new_unchecked(&mut frame[20..]), None);
//! let bytes: &[u8] = &frame; // as received
//! let ip = Ipv4Packet::new_checked(bytes)?;
//! let ip_repr = Ipv4Repr::parse(&ip)?;
//! assert_eq!(ip_repr.protocol, IpProtocol::Udp);
//!
//! let ips = IpPair::V4 { src: ip_repr.src_addr, dst: ip_repr.dst_addr };
//! let udp = UdpPacket::new_checked(ip.payload())?;
//! let udp_repr = UdpRepr::parse(&udp, &ips)?; // checksum 0 is legal over IPv4
//! assert_eq!(udp_repr.dst_port, NAT_T_PORT);
//!
//! match NatTRepr::parse(&NatTPacket::new_checked(udp.payload())?)? {
//!     NatTRepr::Esp(esp) => assert_eq!(esp, EspRepr { spi: 0xc0ff_ee01, seq: 7 }),
//!     NatTRepr::Ike { .. } => { /* to the control plane */ }
//!     NatTRepr::Keepalive => { /* count and drop */ }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Contents
//!
//! | file          | view                                | value                | RFC            |
//! |---------------|-------------------------------------|----------------------|----------------|
//! | [`ethernet`]  | [`EthernetFrame`]                   | [`EthernetRepr`]     | IEEE 802.3, 894|
//! | [`ipv4`]      | [`Ipv4Packet`]                      | [`Ipv4Repr`]         | 791, 2474, 3168|
//! | [`ipv6`]      | [`Ipv6Packet`] (+ extension walk)   | [`Ipv6Repr`]         | 8200           |
//! | [`udp`]       | [`UdpPacket`]                       | [`UdpRepr`]          | 768            |
//! | [`tcp`]       | [`TcpPacket`] (+ MSS clamping)      | [`TcpRepr`]          | 9293           |
//! | [`icmp`]      | [`Icmpv4Packet`], [`Icmpv6Packet`]  | [`Icmpv4Repr`], [`Icmpv6Repr`] | 792, 1191, 4443 |
//! | [`esp`]       | [`EspPacket`], [`EspTrailer`]       | [`EspRepr`]          | 4303           |
//! | [`nat_t`]     | [`NatTPacket`]                      | [`NatTRepr`]         | 3948           |
//! | [`checksum`]  | Internet checksum, pseudo-headers, incremental update | | 1071, 1624 |

use core::net::{Ipv4Addr, Ipv6Addr};

/// Declares a registry number as an enum with an `Unknown(raw)` variant.
///
/// Generates `From<raw>` (never fails: unassigned values become
/// `Unknown(raw)`) and `From<enum> for raw`. Note that `Unknown(6)` and the
/// assigned variant for 6 are different enum values; always convert from
/// the raw number with `From` rather than constructing `Unknown` by hand.
macro_rules! enum_with_unknown {
    (
        $( #[$enum_attr:meta] )*
        pub enum $name:ident($ty:ty) {
            $(
                $( #[$variant_attr:meta] )*
                $variant:ident = $value:expr
            ),+ $(,)?
        }
    ) => {
        #[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Clone, Copy)]
        $( #[$enum_attr] )*
        pub enum $name {
            $(
                $( #[$variant_attr] )*
                $variant
            ),+,
            /// A value this enum does not name; carried through unchanged.
            Unknown($ty),
        }

        impl From<$ty> for $name {
            fn from(value: $ty) -> Self {
                match value {
                    $( $value => Self::$variant ),+,
                    other => Self::Unknown(other),
                }
            }
        }

        impl From<$name> for $ty {
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value ),+,
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

pub mod checksum;
pub mod esp;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod nat_t;
pub mod tcp;
pub mod udp;

pub use esp::{EspPacket, EspRepr, EspTrailer};
pub use ethernet::{EthernetAddress, EthernetFrame, EthernetRepr};
pub use icmp::{Icmpv4Message, Icmpv4Packet, Icmpv4Repr, Icmpv6Message, Icmpv6Packet, Icmpv6Repr};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6FragmentInfo, Ipv6Packet, Ipv6Repr, Ipv6UpperLayer};
pub use nat_t::{NatTKind, NatTPacket, NatTRepr};
pub use tcp::{TcpFlags, TcpOption, TcpOptions, TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};

enum_with_unknown! {
    /// IP protocol numbers: the IPv4 Protocol and IPv6 Next Header field.
    ///
    /// See the [IANA Assigned Internet Protocol Numbers] registry.
    ///
    /// [IANA Assigned Internet Protocol Numbers]: https://www.iana.org/assignments/protocol-numbers/
    pub enum IpProtocol(u8) {
        /// IPv6 Hop-by-Hop Options ([RFC 8200 § 4.3]).
        ///
        /// [RFC 8200 § 4.3]: https://www.rfc-editor.org/rfc/rfc8200#section-4.3
        Ipv6Hop = 0,
        /// Internet Control Message Protocol ([RFC 792]).
        ///
        /// [RFC 792]: https://www.rfc-editor.org/rfc/rfc792
        Icmp = 1,
        /// IPv4 encapsulation ([RFC 2003]); ESP tunnel mode carries it as its next header.
        ///
        /// [RFC 2003]: https://www.rfc-editor.org/rfc/rfc2003
        Ipip = 4,
        /// Transmission Control Protocol ([RFC 9293]).
        ///
        /// [RFC 9293]: https://www.rfc-editor.org/rfc/rfc9293
        Tcp = 6,
        /// User Datagram Protocol ([RFC 768]).
        ///
        /// [RFC 768]: https://www.rfc-editor.org/rfc/rfc768
        Udp = 17,
        /// IPv6 encapsulation ([RFC 2473]).
        ///
        /// [RFC 2473]: https://www.rfc-editor.org/rfc/rfc2473
        Ipv6 = 41,
        /// IPv6 Routing header ([RFC 8200 § 4.4]).
        ///
        /// [RFC 8200 § 4.4]: https://www.rfc-editor.org/rfc/rfc8200#section-4.4
        Ipv6Route = 43,
        /// IPv6 Fragment header ([RFC 8200 § 4.5]).
        ///
        /// [RFC 8200 § 4.5]: https://www.rfc-editor.org/rfc/rfc8200#section-4.5
        Ipv6Frag = 44,
        /// Encapsulating Security Payload ([RFC 4303]).
        ///
        /// [RFC 4303]: https://www.rfc-editor.org/rfc/rfc4303
        Esp = 50,
        /// Authentication Header ([RFC 4302]).
        ///
        /// [RFC 4302]: https://www.rfc-editor.org/rfc/rfc4302
        Ah = 51,
        /// ICMP for IPv6 ([RFC 4443]).
        ///
        /// [RFC 4443]: https://www.rfc-editor.org/rfc/rfc4443
        Icmpv6 = 58,
        /// No Next Header ([RFC 8200 § 4.7]); also the ESP "dummy packet"
        /// marker ([RFC 4303 § 2.6]).
        ///
        /// [RFC 8200 § 4.7]: https://www.rfc-editor.org/rfc/rfc8200#section-4.7
        /// [RFC 4303 § 2.6]: https://www.rfc-editor.org/rfc/rfc4303#section-2.6
        Ipv6NoNxt = 59,
        /// IPv6 Destination Options ([RFC 8200 § 4.6]).
        ///
        /// [RFC 8200 § 4.6]: https://www.rfc-editor.org/rfc/rfc8200#section-4.6
        Ipv6Opts = 60,
    }
}

enum_with_unknown! {
    /// Ethernet II EtherType values ([IEEE 802 numbers] registry).
    ///
    /// [IEEE 802 numbers]: https://www.iana.org/assignments/ieee-802-numbers/
    pub enum EtherType(u16) {
        /// Internet Protocol version 4.
        Ipv4 = 0x0800,
        /// Address Resolution Protocol ([RFC 826]).
        ///
        /// [RFC 826]: https://www.rfc-editor.org/rfc/rfc826
        Arp = 0x0806,
        /// IEEE 802.1Q VLAN tag. Recognised so it can be counted and dropped;
        /// tagged frames are not parsed further.
        Vlan = 0x8100,
        /// Internet Protocol version 6.
        Ipv6 = 0x86DD,
    }
}

/// Which header an [`Error`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Header {
    /// Ethernet II frame header.
    Ethernet,
    /// IPv4 header.
    Ipv4,
    /// IPv6 fixed header.
    Ipv6,
    /// An IPv6 extension header.
    Ipv6Extension,
    /// UDP header.
    Udp,
    /// TCP header.
    Tcp,
    /// ICMPv4 message.
    Icmpv4,
    /// ICMPv6 message.
    Icmpv6,
    /// ESP header.
    Esp,
    /// ESP trailer (Padding, Pad Length, Next Header) of a decrypted payload.
    EspTrailer,
    /// UDP-encapsulated ESP / IKE payload on port 4500.
    NatT,
}

impl core::fmt::Display for Header {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Ethernet => "Ethernet",
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
            Self::Ipv6Extension => "IPv6 extension header",
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Icmpv4 => "ICMPv4",
            Self::Icmpv6 => "ICMPv6",
            Self::Esp => "ESP",
            Self::EspTrailer => "ESP trailer",
            Self::NatT => "NAT-T",
        })
    }
}

/// Why bytes were rejected by a `new_checked`, `check_len` or `parse`.
///
/// Every variant names the header and the rule that failed, so the caller
/// can map it to a drop counter without formatting anything. The type is
/// `Copy` and carries only `'static` text: building one never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer ends before a field or a length the header announces.
    #[error("{header}: truncated, {what} needs {needed} bytes but {available} are available")]
    Truncated {
        /// The header being read.
        header: Header,
        /// What did not fit (e.g. "fixed header", "Total Length").
        what: &'static str,
        /// Bytes required.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// A field holds a value the RFC forbids.
    #[error("{header}: malformed, {what}")]
    Malformed {
        /// The header being read.
        header: Header,
        /// The rule that was broken (e.g. "IHL below 5").
        what: &'static str,
    },
    /// The checksum does not match the data.
    #[error("{header}: checksum mismatch")]
    Checksum {
        /// The header whose checksum failed.
        header: Header,
    },
    /// Well-formed, but a case this code does not handle (e.g. a `Repr` of
    /// an IPv4 fragment, an IPv6 extension header chain over the limit).
    #[error("{header}: unsupported, {what}")]
    Unsupported {
        /// The header being read.
        header: Header,
        /// The case that is not handled.
        what: &'static str,
    },
}

impl Error {
    /// The header this error is about.
    #[must_use]
    pub const fn header(&self) -> Header {
        match *self {
            Self::Truncated { header, .. }
            | Self::Malformed { header, .. }
            | Self::Checksum { header }
            | Self::Unsupported { header, .. } => header,
        }
    }
}

/// The result type of this module.
pub type Result<T> = core::result::Result<T, Error>;

/// Returns `Ok(())` if `available >= needed`, else [`Error::Truncated`].
#[inline]
pub(crate) const fn need(
    header: Header,
    what: &'static str,
    needed: usize,
    available: usize,
) -> Result<()> {
    if available < needed {
        Err(Error::Truncated {
            header,
            what,
            needed,
            available,
        })
    } else {
        Ok(())
    }
}

/// The source and destination addresses of an IP packet, as needed for the
/// pseudo-header of a UDP, TCP or ICMPv6 checksum.
///
/// One enum rather than two address arguments so that a mixed-family pair
/// cannot be expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpPair {
    /// Addresses of an IPv4 header.
    V4 {
        /// Source Address.
        src: Ipv4Addr,
        /// Destination Address.
        dst: Ipv4Addr,
    },
    /// Addresses of an IPv6 header.
    V6 {
        /// Source Address.
        src: Ipv6Addr,
        /// Destination Address.
        dst: Ipv6Addr,
    },
}

impl IpPair {
    /// The one's-complement sum of the pseudo-header for `protocol` and an
    /// upper-layer length of `length` bytes (see [`checksum`]).
    #[must_use]
    pub fn pseudo_header_sum(&self, protocol: IpProtocol, length: u32) -> u16 {
        match *self {
            Self::V4 { src, dst } => checksum::pseudo_header_v4(src, dst, protocol, length),
            Self::V6 { src, dst } => checksum::pseudo_header_v6(src, dst, protocol, length),
        }
    }

    /// The one's-complement sum of the pseudo-header and `segment`, the
    /// whole upper-layer message as covered by a UDP, TCP or ICMPv6
    /// checksum (checksum field included as it stands). The field verifies
    /// when this is `0xffff`; filled, it holds the complement of this sum
    /// taken with the field zero. `None` for a segment longer than the
    /// pseudo-header's 32-bit length can say.
    #[must_use]
    pub fn upper_layer_sum(&self, protocol: IpProtocol, segment: &[u8]) -> Option<u16> {
        let len = u32::try_from(segment.len()).ok()?;
        Some(checksum::combine(&[
            self.pseudo_header_sum(protocol, len),
            checksum::data(segment),
        ]))
    }

    /// True for an IPv4 pair.
    #[must_use]
    pub const fn is_v4(&self) -> bool {
        matches!(self, Self::V4 { .. })
    }
}

/// Reads a big-endian `u16` at `at` (the caller has proven the range).
#[inline]
pub(crate) fn read_u16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

/// Reads a big-endian `u32` at `at` (the caller has proven the range).
#[inline]
pub(crate) fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// Writes a big-endian `u16` at `at` (the caller has proven the range).
#[inline]
pub(crate) fn write_u16(data: &mut [u8], at: usize, value: u16) {
    data[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Writes a big-endian `u32` at `at` (the caller has proven the range).
#[inline]
pub(crate) fn write_u32(data: &mut [u8], at: usize, value: u32) {
    data[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// Converts a length to the `u16` of a length field, saturating.
///
/// Callers keep lengths within the field's range (documented on each
/// `Repr`); saturating rather than truncating keeps a misuse visible to the
/// receiver's length checks instead of wrapping to a small valid length.
#[inline]
pub(crate) fn len_u16(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_protocol_round_trips_every_value() {
        for raw in 0..=u8::MAX {
            let p = IpProtocol::from(raw);
            assert_eq!(u8::from(p), raw);
        }
        assert_eq!(IpProtocol::from(50), IpProtocol::Esp);
        assert_eq!(IpProtocol::from(253), IpProtocol::Unknown(253));
    }

    #[test]
    fn ether_type_values() {
        assert_eq!(EtherType::from(0x0800), EtherType::Ipv4);
        assert_eq!(EtherType::from(0x86dd), EtherType::Ipv6);
        assert_eq!(EtherType::from(0x8100), EtherType::Vlan);
        assert_eq!(u16::from(EtherType::Unknown(0x88cc)), 0x88cc);
    }

    /// The DNS query of the UDP fixture (192.168.1.10 → 8.8.8.8, checksum
    /// 0xde3f computed by hand): with its checksum the sum is all ones;
    /// with the field zero its complement is the checksum.
    #[test]
    fn upper_layer_sum_verifies_and_fills() {
        let ips = IpPair::V4 {
            src: Ipv4Addr::new(192, 168, 1, 10),
            dst: Ipv4Addr::new(8, 8, 8, 8),
        };
        let mut dns = hex_literal::hex!(
            "d431 0035 0025 de3f"
            "abcd 0100 0001 0000 0000 0000"
            "07 6578616d706c65 03 636f6d 00 0001 0001"
        );
        assert_eq!(ips.upper_layer_sum(IpProtocol::Udp, &dns), Some(0xffff));
        assert_ne!(ips.upper_layer_sum(IpProtocol::Tcp, &dns), Some(0xffff));
        dns[6..8].fill(0);
        assert_eq!(
            ips.upper_layer_sum(IpProtocol::Udp, &dns).map(|s| !s),
            Some(0xde3f)
        );
    }

    #[test]
    fn error_messages_say_what() {
        let e = Error::Truncated {
            header: Header::Ipv4,
            what: "Total Length",
            needed: 60,
            available: 40,
        };
        assert_eq!(
            e.to_string(),
            "IPv4: truncated, Total Length needs 60 bytes but 40 are available"
        );
        assert_eq!(e.header(), Header::Ipv4);
        let e = Error::Checksum {
            header: Header::Udp,
        };
        assert_eq!(e.to_string(), "UDP: checksum mismatch");
    }
}
