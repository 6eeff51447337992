//! UDP encapsulation of ESP for NAT traversal ([RFC 3948]).
//!
//! On UDP port 4500 one socket carries three kinds of payload, told apart
//! by their first bytes ([RFC 3948 § 2.2], § 2.3):
//!
//! ```text
//!  ESP:           | SPI (≠ 0) | Sequence Number | … |
//!  IKE:           | 00 00 00 00 (non-ESP marker) | IKE header … |
//!  NAT-keepalive: | FF |
//! ```
//!
//! [`NatTPacket`] classifies a UDP payload; IKE goes to the control plane,
//! keepalives are counted and dropped, ESP continues to decapsulation
//! through [`NatTPacket::esp`].
//!
//! [RFC 3948]: https://www.rfc-editor.org/rfc/rfc3948
//! [RFC 3948 § 2.2]: https://www.rfc-editor.org/rfc/rfc3948#section-2.2

use super::esp::{self, EspPacket, EspRepr};
use super::{Error, Header, Result, need};

/// UDP port of IKE and of UDP-encapsulated ESP after NAT detection
/// ([RFC 7296 § 2.23], [RFC 3948 § 1]).
///
/// [RFC 7296 § 2.23]: https://www.rfc-editor.org/rfc/rfc7296#section-2.23
/// [RFC 3948 § 1]: https://www.rfc-editor.org/rfc/rfc3948#section-1
pub const NAT_T_PORT: u16 = 4500;

/// UDP port of IKE before NAT detection moves it to [`NAT_T_PORT`]
/// ([RFC 7296 § 2]).
///
/// [RFC 7296 § 2]: https://www.rfc-editor.org/rfc/rfc7296#section-2
pub const IKE_PORT: u16 = 500;

// RFC 3948 § 2.2: "The Non-ESP Marker is 4 bytes of zero aligning with the
// SPI field of an ESP packet."
/// The non-ESP marker that precedes an IKE message on port 4500.
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];

// RFC 3948 § 2.3: "The sender SHOULD use a one-octet-long payload with the
// value 0xFF."
/// The one-byte payload of a NAT-keepalive.
pub const NAT_KEEPALIVE: u8 = 0xff;

/// Byte ranges of the payload's first word.
mod field {
    use core::ops::Range;

    /// The SPI of ESP, or the non-ESP marker.
    pub(super) const SPI_OR_MARKER: Range<usize> = 0..4;
}

/// What a UDP/4500 payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatTKind {
    /// An ESP packet (first four bytes nonzero).
    Esp,
    /// An IKE message behind the non-ESP marker.
    Ike,
    /// A NAT-keepalive (the single byte 0xFF).
    Keepalive,
}

/// A zero-copy view of the payload of a UDP datagram on port 4500.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatTPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NatTPacket<T> {
    /// Wraps a buffer without checking it. Only for emitting (see the
    /// module's no-panic contract).
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

    /// Checks that the payload is one of the three kinds:
    ///
    /// 1. exactly one byte: it must be 0xFF (keepalive);
    /// 2. otherwise at least four bytes (marker or SPI);
    /// 3. four zero bytes: IKE (the IKE header is the control plane's
    ///    check);
    /// 4. otherwise ESP: at least the 8-byte ESP header.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] for a one-byte payload other than 0xFF,
    /// [`Error::Truncated`] for 0, 2 or 3 bytes or a short ESP header.
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        match data {
            // 1.
            [NAT_KEEPALIVE] => Ok(()),
            [_] => Err(Error::Malformed {
                header: Header::NatT,
                what: "one-byte payload is not a NAT-keepalive (0xFF)",
            }),
            _ => {
                // 2.
                need(
                    Header::NatT,
                    "non-ESP marker or SPI",
                    field::SPI_OR_MARKER.end,
                    data.len(),
                )?;
                // 3.
                if data[field::SPI_OR_MARKER] == NON_ESP_MARKER {
                    Ok(())
                } else {
                    // 4.
                    need(Header::Esp, "header", esp::HEADER_LEN, data.len())
                }
            }
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The kind of payload ([RFC 3948 § 2.2], § 2.3).
    ///
    /// [RFC 3948 § 2.2]: https://www.rfc-editor.org/rfc/rfc3948#section-2.2
    pub fn kind(&self) -> NatTKind {
        let data = self.buffer.as_ref();
        if data == [NAT_KEEPALIVE] {
            NatTKind::Keepalive
        } else if data.get(field::SPI_OR_MARKER) == Some(&NON_ESP_MARKER[..]) {
            NatTKind::Ike
        } else {
            NatTKind::Esp
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> NatTPacket<&'a T> {
    /// The ESP packet, if this payload is ESP with a complete header.
    pub fn esp(&self) -> Option<EspPacket<&'a [u8]>> {
        if self.kind() != NatTKind::Esp {
            return None;
        }
        EspPacket::new_checked(self.buffer.as_ref()).ok()
    }

    /// The IKE message after the non-ESP marker, if this payload is IKE.
    pub fn ike_message(&self) -> Option<&'a [u8]> {
        if self.kind() != NatTKind::Ike {
            return None;
        }
        self.buffer.as_ref().get(field::SPI_OR_MARKER.end..)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NatTPacket<T> {
    /// Writes the non-ESP marker into the first four bytes.
    pub fn set_non_esp_marker(&mut self) {
        self.buffer.as_mut()[field::SPI_OR_MARKER].copy_from_slice(&NON_ESP_MARKER);
    }

    /// The bytes after the non-ESP marker, mutably (for writing an IKE
    /// message).
    pub fn ike_message_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(field::SPI_OR_MARKER.end..)
            .unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for NatTPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A classified UDP/4500 payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatTRepr {
    /// ESP, with its header.
    Esp(EspRepr),
    /// IKE: the non-ESP marker followed by `message_len` bytes of IKE.
    Ike {
        /// Length of the IKE message after the marker.
        message_len: usize,
    },
    /// A NAT-keepalive.
    Keepalive,
}

impl NatTRepr {
    /// Classifies and parses a payload: lengths as
    /// [`NatTPacket::check_len`], and for ESP also [`EspRepr::parse`].
    ///
    /// # Errors
    ///
    /// Those of [`NatTPacket::check_len`] and [`EspRepr::parse`].
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &NatTPacket<&T>) -> Result<Self> {
        packet.check_len()?;
        Ok(match packet.kind() {
            NatTKind::Keepalive => Self::Keepalive,
            NatTKind::Ike => Self::Ike {
                message_len: packet.buffer.as_ref().len() - NON_ESP_MARKER.len(),
            },
            NatTKind::Esp => Self::Esp(EspRepr::parse(&EspPacket::new_unchecked(packet.buffer))?),
        })
    }

    /// Bytes [`emit`](Self::emit) writes: the ESP header, the marker, or the
    /// keepalive byte. An IKE message's own bytes (`message_len`) follow the
    /// marker and are the caller's.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        match self {
            Self::Esp(esp) => esp.buffer_len(),
            Self::Ike { .. } => NON_ESP_MARKER.len(),
            Self::Keepalive => 1,
        }
    }

    /// Writes the ESP header, the non-ESP marker, or the keepalive byte into
    /// `packet`, which must hold at least [`buffer_len`](Self::buffer_len)
    /// bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut NatTPacket<T>) {
        match self {
            Self::Esp(esp) => esp.emit(&mut EspPacket::new_unchecked(packet.buffer.as_mut())),
            Self::Ike { .. } => packet.set_non_esp_marker(),
            Self::Keepalive => packet.buffer.as_mut()[0] = NAT_KEEPALIVE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    /// ESP: SPI 0xc0ffee01, Sequence Number 7, then ciphertext.
    const ESP_BYTES: [u8; 12] = hex!("c0ffee01 00000007 deadbeef");
    /// IKE behind the marker: the start of an IKE_SA_INIT header (initiator
    /// SPI, zero responder SPI).
    const IKE_BYTES: [u8; 20] = hex!("00000000 0123456789abcdef 0000000000000000");

    #[test]
    fn deconstruct() {
        let esp = NatTPacket::new_checked(&ESP_BYTES[..]).unwrap();
        assert_eq!(esp.kind(), NatTKind::Esp);
        assert_eq!(esp.esp().unwrap().spi(), 0xc0ff_ee01);
        assert_eq!(esp.ike_message(), None);

        let ike = NatTPacket::new_checked(&IKE_BYTES[..]).unwrap();
        assert_eq!(ike.kind(), NatTKind::Ike);
        assert_eq!(ike.ike_message(), Some(&IKE_BYTES[4..]));
        assert!(ike.esp().is_none());

        let keepalive = NatTPacket::new_checked(&[0xff][..]).unwrap();
        assert_eq!(keepalive.kind(), NatTKind::Keepalive);
        assert!(keepalive.esp().is_none() && keepalive.ike_message().is_none());
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5; 20];
        let mut packet = NatTPacket::new_unchecked(&mut bytes[..]);
        packet.set_non_esp_marker();
        packet.ike_message_mut().copy_from_slice(&IKE_BYTES[4..]);
        assert_eq!(bytes, IKE_BYTES);
    }

    #[test]
    fn check_len() {
        assert!(matches!(
            NatTPacket::new_checked(&[][..]),
            Err(Error::Truncated { .. })
        ));
        assert!(matches!(
            NatTPacket::new_checked(&[0x00][..]),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            NatTPacket::new_checked(&[0xff, 0xff][..]),
            Err(Error::Truncated { .. })
        ));
        // Marker alone: an empty IKE message is the control plane's problem.
        assert!(NatTPacket::new_checked(&[0, 0, 0, 0][..]).is_ok());
        // A nonzero SPI without the Sequence Number.
        assert!(matches!(
            NatTPacket::new_checked(&ESP_BYTES[..7]),
            Err(Error::Truncated {
                header: Header::Esp,
                ..
            })
        ));
    }

    #[test]
    fn parse() {
        let p = |b: &[u8]| NatTRepr::parse(&NatTPacket::new_unchecked(b));
        assert_eq!(
            p(&ESP_BYTES),
            Ok(NatTRepr::Esp(EspRepr {
                spi: 0xc0ff_ee01,
                seq: 7
            }))
        );
        assert_eq!(p(&IKE_BYTES), Ok(NatTRepr::Ike { message_len: 16 }));
        assert_eq!(p(&[0xff]), Ok(NatTRepr::Keepalive));
        assert!(p(&[0x01]).is_err());
    }

    #[test]
    fn emit() {
        let mut bytes = [0xa5; 8];
        NatTRepr::Esp(EspRepr {
            spi: 0xc0ff_ee01,
            seq: 7,
        })
        .emit(&mut NatTPacket::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, ESP_BYTES[..8]);

        let mut bytes = [0xa5; 4];
        NatTRepr::Ike { message_len: 0 }.emit(&mut NatTPacket::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, NON_ESP_MARKER);

        let mut bytes = [0xa5; 1];
        NatTRepr::Keepalive.emit(&mut NatTPacket::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, [0xff]);
    }

    #[test]
    fn buffer_len() {
        assert_eq!(NatTRepr::Esp(EspRepr { spi: 1, seq: 0 }).buffer_len(), 8);
        assert_eq!(NatTRepr::Ike { message_len: 28 }.buffer_len(), 4);
        assert_eq!(NatTRepr::Keepalive.buffer_len(), 1);
    }

    fn arb_repr() -> impl Strategy<Value = NatTRepr> {
        prop_oneof![
            (1..=u32::MAX, any::<u32>()).prop_map(|(spi, seq)| NatTRepr::Esp(EspRepr { spi, seq })),
            (0..200usize).prop_map(|message_len| NatTRepr::Ike { message_len }),
            Just(NatTRepr::Keepalive),
        ]
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(repr in arb_repr()) {
            let extra = match repr {
                NatTRepr::Ike { message_len } => message_len,
                _ => 0,
            };
            let mut bytes = vec![0xa5; repr.buffer_len() + extra];
            repr.emit(&mut NatTPacket::new_unchecked(&mut bytes[..]));
            let packet = NatTPacket::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(NatTRepr::parse(&packet).unwrap(), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Ok(packet) = NatTPacket::new_checked(&bytes[..]) {
                let _ = (packet.kind(), packet.esp(), packet.ike_message());
                let _ = NatTRepr::parse(&packet);
            }
            let _ = NatTRepr::parse(&NatTPacket::new_unchecked(&bytes[..]));
        }
    }
}
