//! ESP header and trailer ([RFC 4303]).
//!
//! [`EspPacket`] is the cleartext part of an ESP packet: SPI, Sequence
//! Number (the low 32 bits when ESN is in use, [RFC 4303 § 2.2.1]) and the
//! rest, which this module does not split, because where the IV ends and
//! the ICV starts depends on the SA's transform. [`EspTrailer`] reads and
//! writes the Padding / Pad Length / Next Header that end a *decrypted*
//! payload.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ ----
//! |               Security Parameters Index (SPI)                 | ^Int.
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ |Cov-
//! |                      Sequence Number                          | |ered
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ | ----
//! |                    Payload Data* (variable)                   | |   ^
//! ~                                                               ~ |   |
//! |                                                               | |Conf.
//! +               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ |Cov-
//! |               |     Padding (0-255 bytes)                     | |ered*
//! +-+-+-+-+-+-+-+-+               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ |   |
//! |                               |  Pad Length   | Next Header   | v   v
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ ------
//! |         Integrity Check Value-ICV   (variable)                |
//! ~                                                               ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [RFC 4303]: https://www.rfc-editor.org/rfc/rfc4303
//! [RFC 4303 § 2.2.1]: https://www.rfc-editor.org/rfc/rfc4303#section-2.2.1

use super::{Error, Header, IpProtocol, Result, need, read_u32, write_u32};

/// Byte ranges of the header.
mod field {
    use core::ops::Range;

    pub(super) const SPI: Range<usize> = 0..4;
    pub(super) const SEQ: Range<usize> = 4..8;
}

/// Length of the ESP header (SPI and Sequence Number).
pub const HEADER_LEN: usize = field::SEQ.end;

/// A zero-copy view of an ESP packet: header and the opaque rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
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

    /// Checks that the buffer holds the 8-byte header. Whether the rest is
    /// long enough for the SA's IV and ICV is the transform's check.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if it does not.
    pub fn check_len(&self) -> Result<()> {
        need(
            Header::Esp,
            "header",
            HEADER_LEN,
            self.buffer.as_ref().len(),
        )
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Security Parameters Index.
    #[inline]
    pub fn spi(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SPI.start)
    }

    /// Sequence Number (the low 32 bits of the 64-bit counter under ESN).
    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ.start)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EspPacket<&'a T> {
    /// Everything after the header: IV, ciphertext (payload and trailer)
    /// and ICV, as the transform lays them out.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EspPacket<T> {
    /// Sets the Security Parameters Index.
    #[inline]
    pub fn set_spi(&mut self, spi: u32) {
        write_u32(self.buffer.as_mut(), field::SPI.start, spi);
    }

    /// Sets the Sequence Number.
    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ.start, seq);
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

impl<T: AsRef<[u8]>> AsRef<[u8]> for EspPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The ESP header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EspRepr {
    /// Security Parameters Index (nonzero).
    pub spi: u32,
    /// Sequence Number (low 32 bits under ESN).
    pub seq: u32,
}

impl EspRepr {
    /// Parses the header: length as [`EspPacket::check_len`], then SPI ≠ 0.
    ///
    /// RFC 4303 § 2.1: "The SPI value of zero (0) is reserved for local,
    /// implementation-specific use and MUST NOT be sent on the wire." Over
    /// NAT-T a zero SPI position is the non-ESP marker instead
    /// ([`super::nat_t`]). A Sequence Number of zero is accepted: under ESN
    /// the low 32 bits wrap through zero, and anti-replay decides.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] for a short buffer, [`Error::Malformed`] for
    /// SPI 0.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &EspPacket<&T>) -> Result<Self> {
        packet.check_len()?;
        let spi = packet.spi();
        if spi == 0 {
            return Err(Error::Malformed {
                header: Header::Esp,
                what: "SPI is zero",
            });
        }
        Ok(Self {
            spi,
            seq: packet.seq_number(),
        })
    }

    /// Bytes [`emit`](Self::emit) writes: the 8-byte header.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes SPI and Sequence Number into `packet`, which must hold at
    /// least [`buffer_len`](Self::buffer_len) bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut EspPacket<T>) {
        packet.set_spi(self.spi);
        packet.set_seq_number(self.seq);
    }
}

/// The ESP trailer that ends the plaintext: Padding, Pad Length and Next
/// Header ([RFC 4303 § 2.4], § 2.5, § 2.6).
///
/// Work on the *decrypted* payload with the ICV already removed:
///
/// ```text
///  plaintext: | payload (payload_len) | 1 2 3 … pad_len | pad_len | next_header |
///                                     '---------- buffer_len() ----------------'
/// ```
///
/// [RFC 4303 § 2.4]: https://www.rfc-editor.org/rfc/rfc4303#section-2.4
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EspTrailer {
    /// Pad Length: bytes of Padding before this field.
    pub pad_len: u8,
    /// Next Header: the protocol of the payload (`Ipip` / `Ipv6` in tunnel
    /// mode; [`IpProtocol::Ipv6NoNxt`] marks a dummy packet).
    pub next_header: IpProtocol,
}

/// Length of the Pad Length and Next Header fields.
pub const TRAILER_FIXED_LEN: usize = 2;

impl EspTrailer {
    /// Reads Pad Length and Next Header from the last two bytes of
    /// `plaintext` and checks that the Padding fits before them.
    ///
    /// This does not check the padding bytes; call
    /// [`verify_default_padding`](Self::verify_default_padding) when the
    /// transform uses the RFC 4303 default padding.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if `plaintext` is shorter than 2 bytes,
    /// [`Error::Malformed`] if Pad Length exceeds the bytes before it.
    pub fn parse(plaintext: &[u8]) -> Result<Self> {
        let len = plaintext.len();
        need(
            Header::EspTrailer,
            "Pad Length and Next Header",
            TRAILER_FIXED_LEN,
            len,
        )?;
        let pad_len = plaintext[len - 2];
        let next_header = IpProtocol::from(plaintext[len - 1]);
        if usize::from(pad_len) + TRAILER_FIXED_LEN > len {
            return Err(Error::Malformed {
                header: Header::EspTrailer,
                what: "Pad Length exceeds the decrypted payload",
            });
        }
        Ok(Self {
            pad_len,
            next_header,
        })
    }

    /// The trailer for a payload of `payload_len` bytes, padded so that
    /// payload + trailer is a multiple of `block_len` (the cipher's block
    /// size, 1 for a stream mode like GCM) and of 4 ([RFC 4303 § 2.4]: the
    /// Pad Length and Next Header fields must be right-aligned within a
    /// 4-byte word). `block_len` is treated as at least 4; it must not
    /// exceed 256 for the Pad Length to fit.
    ///
    /// [RFC 4303 § 2.4]: https://www.rfc-editor.org/rfc/rfc4303#section-2.4
    #[must_use]
    pub fn for_payload(payload_len: usize, block_len: usize, next_header: IpProtocol) -> Self {
        let align = block_len.max(4);
        let used = (payload_len + TRAILER_FIXED_LEN) % align;
        let pad = if used == 0 { 0 } else { align - used };
        Self {
            pad_len: u8::try_from(pad).unwrap_or(u8::MAX),
            next_header,
        }
    }

    /// Bytes of the trailer: Padding, Pad Length and Next Header.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        self.pad_len as usize + TRAILER_FIXED_LEN
    }

    /// The length of the payload that precedes this trailer in a plaintext
    /// of `plaintext_len` bytes (0 if the trailer does not fit).
    #[must_use]
    pub const fn payload_len(&self, plaintext_len: usize) -> usize {
        plaintext_len.saturating_sub(self.buffer_len())
    }

    /// True for a dummy packet (Next Header 59, [RFC 4303 § 2.6]), which
    /// the receiver discards.
    ///
    /// [RFC 4303 § 2.6]: https://www.rfc-editor.org/rfc/rfc4303#section-2.6
    #[must_use]
    pub fn is_dummy(&self) -> bool {
        self.next_header == IpProtocol::Ipv6NoNxt
    }

    /// True if the Padding at the end of `plaintext` is the RFC 4303
    /// default, 1, 2, 3, … ([RFC 4303 § 2.4]: "the receiver SHOULD inspect
    /// the Padding field"). False if the trailer does not fit `plaintext`.
    ///
    /// [RFC 4303 § 2.4]: https://www.rfc-editor.org/rfc/rfc4303#section-2.4
    #[must_use]
    pub fn verify_default_padding(&self, plaintext: &[u8]) -> bool {
        let Some(start) = plaintext.len().checked_sub(self.buffer_len()) else {
            return false;
        };
        plaintext
            .get(start..start + usize::from(self.pad_len))
            .is_some_and(|padding| padding.iter().zip(1u8..).all(|(&b, want)| b == want))
    }

    /// Writes the trailer (default padding 1, 2, 3, …, Pad Length, Next
    /// Header) into `trailer`, which must be exactly
    /// [`buffer_len`](Self::buffer_len) bytes, typically the tailroom just
    /// appended after the payload. Extra bytes are left untouched.
    pub fn emit(&self, trailer: &mut [u8]) {
        let pad = usize::from(self.pad_len);
        for (b, value) in trailer.iter_mut().take(pad).zip(1u8..) {
            *b = value;
        }
        if let Some([pad_len, next_header]) = trailer.get_mut(pad..pad + TRAILER_FIXED_LEN) {
            *pad_len = self.pad_len;
            *next_header = self.next_header.into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    /// SPI 0x12345678, Sequence Number 1, an 8-byte IV and some
    /// ciphertext/ICV bytes.
    const PACKET_BYTES: [u8; 24] = hex!(
        "12345678 00000001"
        "0001020304050607"
        "a1b2c3d4e5f60718"
    );

    /// A decrypted tunnel-mode plaintext: a 5-byte "payload" followed by
    /// the default padding 1..5, Pad Length 5 and Next Header 4 (IPv4).
    const PLAINTEXT: [u8; 12] = hex!("4500000000 0102030405 05 04");

    #[test]
    fn deconstruct() {
        let packet = EspPacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.spi(), 0x1234_5678);
        assert_eq!(packet.seq_number(), 1);
        assert_eq!(packet.payload(), &PACKET_BYTES[8..]);
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5; 24];
        let mut packet = EspPacket::new_unchecked(&mut bytes[..]);
        packet.set_spi(0x1234_5678);
        packet.set_seq_number(1);
        packet.payload_mut().copy_from_slice(&PACKET_BYTES[8..]);
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn check_len() {
        assert!(matches!(
            EspPacket::new_checked(&PACKET_BYTES[..7]),
            Err(Error::Truncated { needed: 8, .. })
        ));
        let header_only = EspPacket::new_checked(&PACKET_BYTES[..8]).unwrap();
        assert!(header_only.payload().is_empty());
    }

    #[test]
    fn parse() {
        let packet = EspPacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(
            EspRepr::parse(&packet).unwrap(),
            EspRepr {
                spi: 0x1234_5678,
                seq: 1
            }
        );
        let zero_spi = hex!("00000000 00000001");
        assert!(matches!(
            EspRepr::parse(&EspPacket::new_checked(&zero_spi[..]).unwrap()),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn emit() {
        let repr = EspRepr {
            spi: 0x1234_5678,
            seq: 1,
        };
        let mut bytes = [0xa5; 8];
        repr.emit(&mut EspPacket::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, PACKET_BYTES[..8]);
    }

    #[test]
    fn buffer_len() {
        let repr = EspRepr { spi: 1, seq: 1 };
        assert_eq!(repr.buffer_len(), 8);
        let trailer = EspTrailer::parse(&PLAINTEXT).unwrap();
        assert_eq!(trailer.buffer_len(), 7);
    }

    #[test]
    fn trailer_parse() {
        let trailer = EspTrailer::parse(&PLAINTEXT).unwrap();
        assert_eq!(
            trailer,
            EspTrailer {
                pad_len: 5,
                next_header: IpProtocol::Ipip
            }
        );
        assert_eq!(trailer.payload_len(PLAINTEXT.len()), 5);
        assert!(trailer.verify_default_padding(&PLAINTEXT));
        assert!(!trailer.is_dummy());

        let mut bad = PLAINTEXT;
        bad[7] = 0;
        assert!(!trailer.verify_default_padding(&bad));

        // Pad Length 11 leaves no room: 11 + 2 > 12.
        let mut too_long = PLAINTEXT;
        too_long[10] = 11;
        assert!(matches!(
            EspTrailer::parse(&too_long),
            Err(Error::Malformed { .. })
        ));
        // Pad Length 10 exactly fits (an empty payload).
        too_long[10] = 10;
        let t = EspTrailer::parse(&too_long).unwrap();
        assert_eq!(t.payload_len(12), 0);

        assert!(matches!(
            EspTrailer::parse(&[4]),
            Err(Error::Truncated { .. })
        ));
        assert!(EspTrailer::parse(&hex!("003b")).unwrap().is_dummy());
    }

    #[test]
    fn trailer_emit() {
        let trailer = EspTrailer {
            pad_len: 5,
            next_header: IpProtocol::Ipip,
        };
        let mut bytes = [0xa5; 12];
        bytes[..5].copy_from_slice(&PLAINTEXT[..5]);
        trailer.emit(&mut bytes[5..]);
        assert_eq!(bytes, PLAINTEXT);
    }

    #[test]
    fn trailer_for_payload() {
        // 5 + 2 = 7 → pad to 8 with a 4-byte alignment: 1 byte of padding.
        assert_eq!(EspTrailer::for_payload(5, 1, IpProtocol::Ipip).pad_len, 1);
        // AES-CBC: 16-byte blocks. 100 + 2 = 102 → 112.
        assert_eq!(
            EspTrailer::for_payload(100, 16, IpProtocol::Ipv6).pad_len,
            10
        );
        assert_eq!(EspTrailer::for_payload(14, 16, IpProtocol::Ipip).pad_len, 0);
        assert_eq!(EspTrailer::for_payload(0, 4, IpProtocol::Ipip).pad_len, 2);
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(spi in 1..=u32::MAX, seq in any::<u32>()) {
            let repr = EspRepr { spi, seq };
            let mut bytes = [0xa5; HEADER_LEN];
            repr.emit(&mut EspPacket::new_unchecked(&mut bytes[..]));
            let packet = EspPacket::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(EspRepr::parse(&packet).unwrap(), repr);
        }

        #[test]
        fn trailer_round_trip(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            block_len in prop::sample::select(vec![1usize, 4, 8, 16]),
            next_header in any::<u8>(),
        ) {
            let trailer = EspTrailer::for_payload(payload.len(), block_len, IpProtocol::from(next_header));
            let mut plaintext = payload.clone();
            plaintext.resize(payload.len() + trailer.buffer_len(), 0xa5);
            trailer.emit(&mut plaintext[payload.len()..]);
            prop_assert_eq!(plaintext.len() % block_len.max(4), 0);
            let parsed = EspTrailer::parse(&plaintext).unwrap();
            prop_assert_eq!(parsed, trailer);
            prop_assert!(parsed.verify_default_padding(&plaintext));
            prop_assert_eq!(&plaintext[..parsed.payload_len(plaintext.len())], &payload[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(packet) = EspPacket::new_checked(&bytes[..]) {
                let _ = (packet.spi(), packet.seq_number(), packet.payload());
                let _ = EspRepr::parse(&packet);
            }
            if let Ok(trailer) = EspTrailer::parse(&bytes) {
                let _ = trailer.verify_default_padding(&bytes);
                prop_assert!(trailer.buffer_len() <= bytes.len());
            }
        }
    }
}
