//! IKEv2 message codec ([RFC 7296 § 3]): header, payload chain and every
//! payload the appliance uses, plus SK ([RFC 7296 § 3.14]) and SKF
//! ([RFC 7383 § 2.5]) as opaque encrypted bodies.
//!
//! # No-panic contract
//!
//! [`Message::parse`] and [`parse_chain`] read untrusted bytes only
//! through a bounded [`Reader`] that names the structure being read; every
//! length field is checked against the bytes that remain before it is
//! used. Any input, of any length, yields `Ok` or a [`WireError`]: never
//! a panic, an out-of-bounds index or an allocation larger than the input.
//! Registry numbers we do not know (payload types, notify types, transform
//! IDs, ID types) parse as `Unknown(raw)`; the state machine decides
//! whether they matter (an unknown payload with the critical bit set is
//! the one case rejected here, RFC 7296 § 2.5).
//!
//! Emitting is infallible for values built by the state machine: length
//! fields are computed from the contents; values that cannot be encoded
//! (a payload body above 65531 bytes) are truncated by the type system's
//! absence — callers keep payloads far below that.
//!
//! [RFC 7296 § 3]: https://www.rfc-editor.org/rfc/rfc7296#section-3
//! [RFC 7296 § 3.14]: https://www.rfc-editor.org/rfc/rfc7296#section-3.14
//! [RFC 7383 § 2.5]: https://www.rfc-editor.org/rfc/rfc7383#section-2.5

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IKE header length (RFC 7296 § 3.1).
pub const HEADER_LEN: usize = 28;
/// Generic payload header length (RFC 7296 § 3.2).
pub const GENERIC_LEN: usize = 4;

/// Why bytes are not a well-formed IKEv2 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the named structure needs.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A length field that does not fit the surrounding structure.
    #[error("bad length in {0}")]
    BadLength(&'static str),
    /// Major version other than 2 (RFC 7296 § 3.1).
    #[error("unsupported IKE major version {0}")]
    Version(u8),
    /// An unknown payload with the critical bit (RFC 7296 § 2.5).
    #[error("unsupported critical payload type {0}")]
    UnsupportedCritical(u8),
    /// SK/SKF not the last payload, or nested.
    #[error("encrypted payload not last")]
    EncryptedNotLast,
    /// A traffic selector type other than IPv4/IPv6 range.
    #[error("unsupported traffic selector type {0}")]
    TsType(u8),
}

/// A bounded reader over untrusted bytes (rustls `msgs/codec.rs` style):
/// every read names what it reads, for the error.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf` from its start.
    #[must_use]
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    /// Bytes not yet read.
    #[must_use]
    pub fn left(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Takes `n` bytes.
    ///
    /// # Errors
    /// [`WireError::Truncated`] naming `what`.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if n > self.left() {
            return Err(WireError::Truncated(what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// Takes the rest.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    /// Reads a `u8`.
    ///
    /// # Errors
    /// [`WireError::Truncated`].
    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    /// Reads a big-endian `u16`.
    ///
    /// # Errors
    /// [`WireError::Truncated`].
    pub fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// Reads a big-endian `u32`.
    ///
    /// # Errors
    /// [`WireError::Truncated`].
    pub fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// Reads a big-endian `u64`.
    ///
    /// # Errors
    /// [`WireError::Truncated`].
    pub fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

macro_rules! enum_with_unknown {
    (
        $(#[$meta:meta])*
        pub enum $name:ident($ty:ty) {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this codec does not name.
            Unknown($ty),
        }
        impl From<$ty> for $name {
            fn from(v: $ty) -> Self {
                match v {
                    $( $value => Self::$variant, )+
                    other => Self::Unknown(other),
                }
            }
        }
        impl From<$name> for $ty {
            fn from(v: $name) -> Self {
                match v {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}
/// Shared with the IKEv1 codec (`crate::ikev1::wire`).
pub(crate) use enum_with_unknown;

enum_with_unknown! {
    /// Exchange types (RFC 7296 § 3.1).
    pub enum ExchangeType(u8) {
        /// IKE_SA_INIT.
        IkeSaInit = 34,
        /// IKE_AUTH.
        IkeAuth = 35,
        /// CREATE_CHILD_SA.
        CreateChildSa = 36,
        /// INFORMATIONAL.
        Informational = 37,
    }
}

enum_with_unknown! {
    /// Payload types (RFC 7296 § 3.2, RFC 7383).
    pub enum PayloadType(u8) {
        /// No next payload.
        None = 0,
        /// Security Association.
        Sa = 33,
        /// Key Exchange.
        Ke = 34,
        /// Identification — Initiator.
        IdI = 35,
        /// Identification — Responder.
        IdR = 36,
        /// Certificate.
        Cert = 37,
        /// Certificate Request.
        CertReq = 38,
        /// Authentication.
        Auth = 39,
        /// Nonce.
        Nonce = 40,
        /// Notify.
        Notify = 41,
        /// Delete.
        Delete = 42,
        /// Vendor ID.
        Vendor = 43,
        /// Traffic Selector — Initiator.
        TsI = 44,
        /// Traffic Selector — Responder.
        TsR = 45,
        /// Encrypted and Authenticated.
        Sk = 46,
        /// Configuration.
        Cp = 47,
        /// EAP.
        Eap = 48,
        /// Encrypted and Authenticated Fragment (RFC 7383).
        Skf = 53,
    }
}

enum_with_unknown! {
    /// Notify message types (RFC 7296 § 3.10.1, RFC 7383).
    pub enum NotifyType(u16) {
        /// UNSUPPORTED_CRITICAL_PAYLOAD.
        UnsupportedCriticalPayload = 1,
        /// INVALID_IKE_SPI.
        InvalidIkeSpi = 4,
        /// INVALID_MAJOR_VERSION.
        InvalidMajorVersion = 5,
        /// INVALID_SYNTAX.
        InvalidSyntax = 7,
        /// INVALID_MESSAGE_ID.
        InvalidMessageId = 9,
        /// INVALID_SPI.
        InvalidSpi = 11,
        /// NO_PROPOSAL_CHOSEN.
        NoProposalChosen = 14,
        /// INVALID_KE_PAYLOAD.
        InvalidKePayload = 17,
        /// AUTHENTICATION_FAILED.
        AuthenticationFailed = 24,
        /// SINGLE_PAIR_REQUIRED.
        SinglePairRequired = 34,
        /// NO_ADDITIONAL_SAS.
        NoAdditionalSas = 35,
        /// INTERNAL_ADDRESS_FAILURE.
        InternalAddressFailure = 36,
        /// FAILED_CP_REQUIRED.
        FailedCpRequired = 37,
        /// TS_UNACCEPTABLE.
        TsUnacceptable = 38,
        /// INVALID_SELECTORS.
        InvalidSelectors = 39,
        /// TEMPORARY_FAILURE.
        TemporaryFailure = 43,
        /// CHILD_SA_NOT_FOUND.
        ChildSaNotFound = 44,
        /// INITIAL_CONTACT.
        InitialContact = 16384,
        /// SET_WINDOW_SIZE.
        SetWindowSize = 16385,
        /// ADDITIONAL_TS_POSSIBLE.
        AdditionalTsPossible = 16386,
        /// IPCOMP_SUPPORTED.
        IpcompSupported = 16387,
        /// NAT_DETECTION_SOURCE_IP.
        NatDetectionSourceIp = 16388,
        /// NAT_DETECTION_DESTINATION_IP.
        NatDetectionDestinationIp = 16389,
        /// COOKIE.
        Cookie = 16390,
        /// USE_TRANSPORT_MODE.
        UseTransportMode = 16391,
        /// REKEY_SA.
        RekeySa = 16393,
        /// ESP_TFC_PADDING_NOT_SUPPORTED.
        EspTfcPaddingNotSupported = 16394,
        /// NON_FIRST_FRAGMENTS_ALSO.
        NonFirstFragmentsAlso = 16395,
        /// MOBIKE_SUPPORTED.
        MobikeSupported = 16396,
        /// IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383).
        FragmentationSupported = 16430,
        /// SIGNATURE_HASH_ALGORITHMS (RFC 7427).
        SignatureHashAlgorithms = 16431,
    }
}

impl NotifyType {
    /// Error types are below 16384 (RFC 7296 § 3.10.1).
    #[must_use]
    pub fn is_error(self) -> bool {
        u16::from(self) < 16384
    }
}

enum_with_unknown! {
    /// Security protocol IDs (RFC 7296 § 3.3.1).
    pub enum ProtocolId(u8) {
        /// None (notifies about the IKE SA itself).
        None = 0,
        /// IKE.
        Ike = 1,
        /// AH.
        Ah = 2,
        /// ESP.
        Esp = 3,
    }
}

enum_with_unknown! {
    /// Transform types (RFC 7296 § 3.3.2).
    pub enum TransformType(u8) {
        /// Encryption algorithm (ENCR).
        Encr = 1,
        /// Pseudorandom function (PRF).
        Prf = 2,
        /// Integrity algorithm (INTEG).
        Integ = 3,
        /// Diffie-Hellman group (D-H).
        Dh = 4,
        /// Extended sequence numbers (ESN).
        Esn = 5,
    }
}

enum_with_unknown! {
    /// Identification types (RFC 7296 § 3.5).
    pub enum IdType(u8) {
        /// ID_IPV4_ADDR.
        Ipv4Addr = 1,
        /// ID_FQDN.
        Fqdn = 2,
        /// ID_RFC822_ADDR.
        Rfc822Addr = 3,
        /// ID_IPV6_ADDR.
        Ipv6Addr = 5,
        /// ID_DER_ASN1_DN.
        DerAsn1Dn = 9,
        /// ID_DER_ASN1_GN.
        DerAsn1Gn = 10,
        /// ID_KEY_ID.
        KeyId = 11,
    }
}

enum_with_unknown! {
    /// Authentication methods (RFC 7296 § 3.8, RFC 7427).
    pub enum AuthMethod(u8) {
        /// RSA Digital Signature.
        RsaSig = 1,
        /// Shared Key Message Integrity Code.
        SharedKeyMic = 2,
        /// DSS Digital Signature.
        DssSig = 3,
        /// ECDSA with SHA-256 on the P-256 curve (RFC 4754).
        EcdsaSha256P256 = 9,
        /// ECDSA with SHA-384 on the P-384 curve (RFC 4754).
        EcdsaSha384P384 = 10,
        /// ECDSA with SHA-512 on the P-521 curve (RFC 4754).
        EcdsaSha512P521 = 11,
        /// Digital Signature (RFC 7427).
        DigitalSignature = 14,
    }
}

/// Header flags (RFC 7296 § 3.1).
pub mod flags {
    /// Initiator: set by the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// Version: a higher version is supported.
    pub const VERSION: u8 = 0x10;
    /// Response.
    pub const RESPONSE: u8 = 0x20;
}

/// The IKE header, less the fields the codec computes (next payload,
/// version, length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// IKE SA initiator's SPI.
    pub spi_i: u64,
    /// IKE SA responder's SPI (0 in the first request).
    pub spi_r: u64,
    /// Exchange type.
    pub exchange: ExchangeType,
    /// Flags ([`flags`]).
    pub flags: u8,
    /// Message ID.
    pub message_id: u32,
}

impl Header {
    /// Whether the R flag is set.
    #[must_use]
    pub fn is_response(&self) -> bool {
        self.flags & flags::RESPONSE != 0
    }
    /// Whether the I flag is set.
    #[must_use]
    pub fn is_initiator(&self) -> bool {
        self.flags & flags::INITIATOR != 0
    }

    /// Writes the 28-byte header with the given next payload and total
    /// length.
    pub fn emit(&self, next: PayloadType, length: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i.to_be_bytes());
        out.extend_from_slice(&self.spi_r.to_be_bytes());
        out.push(next.into());
        out.push(0x20);
        out.push(self.exchange.into());
        out.push(self.flags);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&length.to_be_bytes());
    }

    /// Parses the header; returns it with the first payload type and the
    /// length field.
    ///
    /// # Errors
    /// [`WireError::Truncated`] or [`WireError::Version`].
    pub fn parse(r: &mut Reader<'_>) -> Result<(Self, PayloadType, u32), WireError> {
        let spi_i = r.u64("IKE header")?;
        let spi_r = r.u64("IKE header")?;
        let next = PayloadType::from(r.u8("IKE header")?);
        let version = r.u8("IKE header")?;
        if version >> 4 != 2 {
            return Err(WireError::Version(version >> 4));
        }
        let exchange = ExchangeType::from(r.u8("IKE header")?);
        let flags = r.u8("IKE header")?;
        let message_id = r.u32("IKE header")?;
        let length = r.u32("IKE header")?;
        Ok((
            Self {
                spi_i,
                spi_r,
                exchange,
                flags,
                message_id,
            },
            next,
            length,
        ))
    }
}

/// A transform attribute (RFC 7296 § 3.3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// TV format (AF bit set): type and a 2-byte value.
    Tv(u16, u16),
    /// TLV format: type and a variable value.
    Tlv(u16, Vec<u8>),
}

/// Key Length attribute type (RFC 7296 § 3.3.5).
pub const ATTR_KEY_LENGTH: u16 = 14;

/// One transform (RFC 7296 § 3.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    /// Transform type.
    pub kind: TransformType,
    /// Transform ID (meaning depends on `kind`).
    pub id: u16,
    /// Attributes.
    pub attributes: Vec<Attribute>,
}

impl Transform {
    /// A transform without attributes.
    #[must_use]
    pub fn new(kind: TransformType, id: u16) -> Self {
        Self {
            kind,
            id,
            attributes: Vec::new(),
        }
    }
    /// A transform with a Key Length attribute (bits).
    #[must_use]
    pub fn with_key_len(kind: TransformType, id: u16, bits: u16) -> Self {
        Self {
            kind,
            id,
            attributes: vec![Attribute::Tv(ATTR_KEY_LENGTH, bits)],
        }
    }
    /// The Key Length attribute, if present.
    #[must_use]
    pub fn key_len(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Tv(ATTR_KEY_LENGTH, v) => Some(*v),
            _ => None,
        })
    }
}

/// One proposal (RFC 7296 § 3.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal number (1, 2, … in the request; echoed in the response).
    pub number: u8,
    /// Protocol (IKE or ESP here).
    pub protocol: ProtocolId,
    /// SPI: empty (IKE_SA_INIT), 8 bytes (IKE rekey) or 4 bytes (ESP).
    pub spi: Vec<u8>,
    /// Transforms.
    pub transforms: Vec<Transform>,
}

/// Identification payload body (RFC 7296 § 3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identification {
    /// ID type.
    pub id_type: IdType,
    /// Identification data.
    pub data: Vec<u8>,
}

impl Identification {
    /// An `ID_IPV4_ADDR` / `ID_IPV6_ADDR` identity.
    #[must_use]
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Self {
                id_type: IdType::Ipv4Addr,
                data: a.octets().to_vec(),
            },
            IpAddr::V6(a) => Self {
                id_type: IdType::Ipv6Addr,
                data: a.octets().to_vec(),
            },
        }
    }
    /// The bytes the AUTH computation MACs: ID type, 3 reserved bytes,
    /// data ("RestOfInitIDPayload", RFC 7296 § 2.15).
    #[must_use]
    pub fn body(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + self.data.len());
        v.push(self.id_type.into());
        v.extend_from_slice(&[0, 0, 0]);
        v.extend_from_slice(&self.data);
        v
    }
}

impl std::fmt::Display for Identification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.id_type, self.data.len()) {
            (IdType::Ipv4Addr, 4) => {
                let mut a = [0u8; 4];
                a.copy_from_slice(&self.data);
                write!(f, "{}", Ipv4Addr::from(a))
            }
            (IdType::Ipv6Addr, 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&self.data);
                write!(f, "{}", Ipv6Addr::from(a))
            }
            (IdType::Fqdn | IdType::Rfc822Addr, _) => {
                write!(f, "{}", String::from_utf8_lossy(&self.data))
            }
            _ => {
                for b in &self.data {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// Notify payload body (RFC 7296 § 3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Protocol of the SA concerned (None for the IKE SA itself).
    pub protocol: ProtocolId,
    /// SPI of the SA concerned (often empty).
    pub spi: Vec<u8>,
    /// Notify message type.
    pub kind: NotifyType,
    /// Notification data.
    pub data: Vec<u8>,
}

impl Notify {
    /// A notify about the IKE SA with data.
    #[must_use]
    pub fn new(kind: NotifyType, data: Vec<u8>) -> Self {
        Self {
            protocol: ProtocolId::None,
            spi: Vec::new(),
            kind,
            data,
        }
    }
}

/// Delete payload body (RFC 7296 § 3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Protocol: IKE (no SPIs) or ESP.
    pub protocol: ProtocolId,
    /// SPI size (0 for IKE, 4 for ESP).
    pub spi_size: u8,
    /// SPIs, each `spi_size` bytes.
    pub spis: Vec<Vec<u8>>,
}

/// TS types (RFC 7296 § 3.13.1).
pub const TS_IPV4_ADDR_RANGE: u8 = 7;
/// TS type for IPv6.
pub const TS_IPV6_ADDR_RANGE: u8 = 8;

/// One traffic selector (RFC 7296 § 3.13.1); the TS type follows from the
/// address family of `start` (both ends have the same family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficSelector {
    /// IP protocol (0: any).
    pub ip_protocol: u8,
    /// First port.
    pub start_port: u16,
    /// Last port.
    pub end_port: u16,
    /// First address.
    pub start: IpAddr,
    /// Last address.
    pub end: IpAddr,
}

impl TrafficSelector {
    /// All ports and protocols between two addresses.
    #[must_use]
    pub fn range(start: IpAddr, end: IpAddr) -> Self {
        Self {
            ip_protocol: 0,
            start_port: 0,
            end_port: 0xffff,
            start,
            end,
        }
    }
}

/// Payloads. Anything the appliance does not interpret is kept as
/// [`Payload::Other`] so emit reproduces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// SA (RFC 7296 § 3.3).
    Sa(Vec<Proposal>),
    /// KE (§ 3.4): DH group and public value.
    Ke {
        /// DH group number.
        group: u16,
        /// Public value.
        data: Vec<u8>,
    },
    /// IDi (§ 3.5).
    IdI(Identification),
    /// IDr (§ 3.5).
    IdR(Identification),
    /// AUTH (§ 3.8).
    Auth {
        /// Method.
        method: AuthMethod,
        /// Authentication data.
        data: Vec<u8>,
    },
    /// Ni/Nr (§ 3.9).
    Nonce(Vec<u8>),
    /// N (§ 3.10).
    Notify(Notify),
    /// D (§ 3.11).
    Delete(Delete),
    /// V (§ 3.12).
    Vendor(Vec<u8>),
    /// TSi (§ 3.13).
    TsI(Vec<TrafficSelector>),
    /// TSr (§ 3.13).
    TsR(Vec<TrafficSelector>),
    /// SK (§ 3.14): the first inner payload's type and IV‖ciphertext‖ICV.
    Sk {
        /// Type of the first payload inside.
        first: PayloadType,
        /// IV, ciphertext and ICV.
        data: Vec<u8>,
    },
    /// SKF (RFC 7383 § 2.5).
    Skf {
        /// Type of the first inner payload (fragment 1 only, else None).
        first: PayloadType,
        /// Fragment number, from 1.
        number: u16,
        /// Total fragments.
        total: u16,
        /// IV, ciphertext and ICV.
        data: Vec<u8>,
    },
    /// Any other payload, kept verbatim.
    Other {
        /// Payload type.
        kind: PayloadType,
        /// Critical bit.
        critical: bool,
        /// Body.
        data: Vec<u8>,
    },
}

impl Payload {
    /// This payload's type number.
    #[must_use]
    pub fn kind(&self) -> PayloadType {
        match self {
            Self::Sa(_) => PayloadType::Sa,
            Self::Ke { .. } => PayloadType::Ke,
            Self::IdI(_) => PayloadType::IdI,
            Self::IdR(_) => PayloadType::IdR,
            Self::Auth { .. } => PayloadType::Auth,
            Self::Nonce(_) => PayloadType::Nonce,
            Self::Notify(_) => PayloadType::Notify,
            Self::Delete(_) => PayloadType::Delete,
            Self::Vendor(_) => PayloadType::Vendor,
            Self::TsI(_) => PayloadType::TsI,
            Self::TsR(_) => PayloadType::TsR,
            Self::Sk { .. } => PayloadType::Sk,
            Self::Skf { .. } => PayloadType::Skf,
            Self::Other { kind, .. } => *kind,
        }
    }

    fn next_field(&self, next: PayloadType) -> PayloadType {
        match self {
            Self::Sk { first, .. } | Self::Skf { first, .. } => *first,
            _ => next,
        }
    }

    /// Writes generic header + body.
    fn emit(&self, next: PayloadType, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(self.next_field(next).into());
        out.push(match self {
            Self::Other { critical: true, .. } => 0x80,
            _ => 0,
        });
        out.extend_from_slice(&[0, 0]);
        self.emit_body(out);
        let len = u16::try_from(out.len() - start).unwrap_or(u16::MAX);
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn emit_body(&self, out: &mut Vec<u8>) {
        match self {
            Self::Sa(proposals) => emit_sa(proposals, out),
            Self::Ke { group, data } => {
                out.extend_from_slice(&group.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(data);
            }
            Self::IdI(id) | Self::IdR(id) => out.extend_from_slice(&id.body()),
            Self::Auth { method, data } => {
                out.push((*method).into());
                out.extend_from_slice(&[0, 0, 0]);
                out.extend_from_slice(data);
            }
            Self::Nonce(d) | Self::Vendor(d) | Self::Other { data: d, .. } => {
                out.extend_from_slice(d);
            }
            Self::Notify(n) => {
                out.push(n.protocol.into());
                out.push(u8::try_from(n.spi.len()).unwrap_or(0));
                out.extend_from_slice(&u16::from(n.kind).to_be_bytes());
                if n.spi.len() <= usize::from(u8::MAX) {
                    out.extend_from_slice(&n.spi);
                }
                out.extend_from_slice(&n.data);
            }
            Self::Delete(d) => {
                out.push(d.protocol.into());
                out.push(d.spi_size);
                out.extend_from_slice(&u16::try_from(d.spis.len()).unwrap_or(0).to_be_bytes());
                for s in &d.spis {
                    out.extend_from_slice(s);
                }
            }
            Self::TsI(ts) | Self::TsR(ts) => emit_ts(ts, out),
            Self::Sk { data, .. } => out.extend_from_slice(data),
            Self::Skf {
                number,
                total,
                data,
                ..
            } => {
                out.extend_from_slice(&number.to_be_bytes());
                out.extend_from_slice(&total.to_be_bytes());
                out.extend_from_slice(data);
            }
        }
    }

    fn parse_body(
        kind: PayloadType,
        next: PayloadType,
        critical: bool,
        body: &[u8],
    ) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        Ok(match kind {
            PayloadType::Sa => Self::Sa(parse_sa(&mut r)?),
            PayloadType::Ke => {
                let group = r.u16("KE payload")?;
                r.take(2, "KE payload")?;
                Self::Ke {
                    group,
                    data: r.rest().to_vec(),
                }
            }
            PayloadType::IdI | PayloadType::IdR => {
                let id_type = IdType::from(r.u8("ID payload")?);
                r.take(3, "ID payload")?;
                let id = Identification {
                    id_type,
                    data: r.rest().to_vec(),
                };
                if kind == PayloadType::IdI {
                    Self::IdI(id)
                } else {
                    Self::IdR(id)
                }
            }
            PayloadType::Auth => {
                let method = AuthMethod::from(r.u8("AUTH payload")?);
                r.take(3, "AUTH payload")?;
                Self::Auth {
                    method,
                    data: r.rest().to_vec(),
                }
            }
            PayloadType::Nonce => Self::Nonce(r.rest().to_vec()),
            PayloadType::Notify => {
                let protocol = ProtocolId::from(r.u8("Notify payload")?);
                let spi_size = r.u8("Notify payload")?;
                let kind = NotifyType::from(r.u16("Notify payload")?);
                let spi = r.take(usize::from(spi_size), "Notify SPI")?.to_vec();
                Self::Notify(Notify {
                    protocol,
                    spi,
                    kind,
                    data: r.rest().to_vec(),
                })
            }
            PayloadType::Delete => {
                let protocol = ProtocolId::from(r.u8("Delete payload")?);
                let spi_size = r.u8("Delete payload")?;
                let n = r.u16("Delete payload")?;
                let need = usize::from(n) * usize::from(spi_size);
                if need != r.left() {
                    return Err(WireError::BadLength("Delete payload"));
                }
                let mut spis = Vec::with_capacity(usize::from(n).min(r.left()));
                for _ in 0..n {
                    spis.push(r.take(usize::from(spi_size), "Delete SPI")?.to_vec());
                }
                Self::Delete(Delete {
                    protocol,
                    spi_size,
                    spis,
                })
            }
            PayloadType::Vendor => Self::Vendor(r.rest().to_vec()),
            PayloadType::TsI => Self::TsI(parse_ts(&mut r)?),
            PayloadType::TsR => Self::TsR(parse_ts(&mut r)?),
            PayloadType::Sk => Self::Sk {
                first: next,
                data: r.rest().to_vec(),
            },
            PayloadType::Skf => {
                let number = r.u16("SKF payload")?;
                let total = r.u16("SKF payload")?;
                Self::Skf {
                    first: next,
                    number,
                    total,
                    data: r.rest().to_vec(),
                }
            }
            PayloadType::Unknown(raw) if critical => {
                return Err(WireError::UnsupportedCritical(raw));
            }
            other => Self::Other {
                kind: other,
                critical,
                data: r.rest().to_vec(),
            },
        })
    }
}

fn emit_sa(proposals: &[Proposal], out: &mut Vec<u8>) {
    for (i, p) in proposals.iter().enumerate() {
        let start = out.len();
        out.push(if i + 1 == proposals.len() { 0 } else { 2 });
        out.push(0);
        out.extend_from_slice(&[0, 0]);
        out.push(p.number);
        out.push(p.protocol.into());
        out.push(u8::try_from(p.spi.len()).unwrap_or(0));
        out.push(u8::try_from(p.transforms.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&p.spi);
        for (j, t) in p.transforms.iter().enumerate() {
            let ts = out.len();
            out.push(if j + 1 == p.transforms.len() { 0 } else { 3 });
            out.push(0);
            out.extend_from_slice(&[0, 0]);
            out.push(t.kind.into());
            out.push(0);
            out.extend_from_slice(&t.id.to_be_bytes());
            for a in &t.attributes {
                match a {
                    Attribute::Tv(ty, v) => {
                        out.extend_from_slice(&(0x8000 | ty).to_be_bytes());
                        out.extend_from_slice(&v.to_be_bytes());
                    }
                    Attribute::Tlv(ty, v) => {
                        out.extend_from_slice(&(ty & 0x7fff).to_be_bytes());
                        out.extend_from_slice(&u16::try_from(v.len()).unwrap_or(0).to_be_bytes());
                        out.extend_from_slice(v);
                    }
                }
            }
            let tl = u16::try_from(out.len() - ts).unwrap_or(u16::MAX);
            out[ts + 2..ts + 4].copy_from_slice(&tl.to_be_bytes());
        }
        let pl = u16::try_from(out.len() - start).unwrap_or(u16::MAX);
        out[start + 2..start + 4].copy_from_slice(&pl.to_be_bytes());
    }
}

fn parse_sa(r: &mut Reader<'_>) -> Result<Vec<Proposal>, WireError> {
    let mut proposals = Vec::new();
    loop {
        let last = r.u8("proposal header")?;
        r.u8("proposal header")?;
        let len = usize::from(r.u16("proposal header")?);
        if len < 8 {
            return Err(WireError::BadLength("proposal"));
        }
        let mut p = Reader::new(r.take(len - 4, "proposal")?);
        let number = p.u8("proposal")?;
        let protocol = ProtocolId::from(p.u8("proposal")?);
        let spi_size = p.u8("proposal")?;
        let count = p.u8("proposal")?;
        let spi = p.take(usize::from(spi_size), "proposal SPI")?.to_vec();
        let mut transforms = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            p.u8("transform header")?;
            p.u8("transform header")?;
            let tlen = usize::from(p.u16("transform header")?);
            if tlen < 8 {
                return Err(WireError::BadLength("transform"));
            }
            let mut t = Reader::new(p.take(tlen - 4, "transform")?);
            let kind = TransformType::from(t.u8("transform")?);
            t.u8("transform")?;
            let id = t.u16("transform")?;
            let mut attributes = Vec::new();
            while t.left() > 0 {
                let ty = t.u16("transform attribute")?;
                if ty & 0x8000 != 0 {
                    attributes.push(Attribute::Tv(ty & 0x7fff, t.u16("transform attribute")?));
                } else {
                    let l = usize::from(t.u16("transform attribute")?);
                    attributes.push(Attribute::Tlv(
                        ty,
                        t.take(l, "transform attribute")?.to_vec(),
                    ));
                }
            }
            transforms.push(Transform {
                kind,
                id,
                attributes,
            });
        }
        if p.left() != 0 {
            return Err(WireError::BadLength("proposal"));
        }
        proposals.push(Proposal {
            number,
            protocol,
            spi,
            transforms,
        });
        if last == 0 {
            break;
        }
    }
    if r.left() != 0 {
        return Err(WireError::BadLength("SA payload"));
    }
    Ok(proposals)
}

fn emit_ts(ts: &[TrafficSelector], out: &mut Vec<u8>) {
    out.push(u8::try_from(ts.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&[0, 0, 0]);
    for t in ts {
        let (ty, len) = match t.start {
            IpAddr::V4(_) => (TS_IPV4_ADDR_RANGE, 16u16),
            IpAddr::V6(_) => (TS_IPV6_ADDR_RANGE, 40u16),
        };
        out.push(ty);
        out.push(t.ip_protocol);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&t.start_port.to_be_bytes());
        out.extend_from_slice(&t.end_port.to_be_bytes());
        for a in [t.start, t.end] {
            match (a, t.start) {
                (IpAddr::V4(a), _) => out.extend_from_slice(&a.octets()),
                (IpAddr::V6(a), IpAddr::V6(_)) => out.extend_from_slice(&a.octets()),
                // A mixed-family selector is unrepresentable: write the
                // v6 end as its v4-mapped tail so the length stays right.
                (IpAddr::V6(a), IpAddr::V4(_)) => out.extend_from_slice(&a.octets()[12..]),
            }
        }
    }
}

fn parse_ts(r: &mut Reader<'_>) -> Result<Vec<TrafficSelector>, WireError> {
    let n = r.u8("TS payload")?;
    r.take(3, "TS payload")?;
    let mut out = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let ty = r.u8("traffic selector")?;
        let ip_protocol = r.u8("traffic selector")?;
        let len = r.u16("traffic selector")?;
        let start_port = r.u16("traffic selector")?;
        let end_port = r.u16("traffic selector")?;
        let (start, end) = match (ty, len) {
            (TS_IPV4_ADDR_RANGE, 16) => {
                let s = r.take(4, "traffic selector")?;
                let e = r.take(4, "traffic selector")?;
                (
                    IpAddr::V4(Ipv4Addr::new(s[0], s[1], s[2], s[3])),
                    IpAddr::V4(Ipv4Addr::new(e[0], e[1], e[2], e[3])),
                )
            }
            (TS_IPV6_ADDR_RANGE, 40) => {
                let mut s = [0u8; 16];
                s.copy_from_slice(r.take(16, "traffic selector")?);
                let mut e = [0u8; 16];
                e.copy_from_slice(r.take(16, "traffic selector")?);
                (IpAddr::V6(s.into()), IpAddr::V6(e.into()))
            }
            (TS_IPV4_ADDR_RANGE | TS_IPV6_ADDR_RANGE, _) => {
                return Err(WireError::BadLength("traffic selector"));
            }
            (other, _) => return Err(WireError::TsType(other)),
        };
        out.push(TrafficSelector {
            ip_protocol,
            start_port,
            end_port,
            start,
            end,
        });
    }
    if r.left() != 0 {
        return Err(WireError::BadLength("TS payload"));
    }
    Ok(out)
}

/// Emits a payload chain (no IKE header); returns the first payload's
/// type (the value for the preceding "next payload" field).
pub fn emit_chain(payloads: &[Payload], out: &mut Vec<u8>) -> PayloadType {
    for (i, p) in payloads.iter().enumerate() {
        let next = payloads.get(i + 1).map_or(PayloadType::None, Payload::kind);
        p.emit(next, out);
    }
    payloads.first().map_or(PayloadType::None, Payload::kind)
}

/// Parses a payload chain starting with a payload of type `first`.
///
/// # Errors
/// Any [`WireError`]; an SK/SKF payload must be the last one.
pub fn parse_chain(first: PayloadType, bytes: &[u8]) -> Result<Vec<Payload>, WireError> {
    let mut r = Reader::new(bytes);
    let mut kind = first;
    let mut out = Vec::new();
    while kind != PayloadType::None {
        let next = PayloadType::from(r.u8("payload header")?);
        let critical = r.u8("payload header")? & 0x80 != 0;
        let len = usize::from(r.u16("payload header")?);
        if len < GENERIC_LEN {
            return Err(WireError::BadLength("payload header"));
        }
        let body = r.take(len - GENERIC_LEN, "payload body")?;
        let p = Payload::parse_body(kind, next, critical, body)?;
        let encrypted = matches!(p, Payload::Sk { .. } | Payload::Skf { .. });
        out.push(p);
        if encrypted {
            // The SK/SKF "next payload" is the first inner payload: the
            // outer chain ends here (RFC 7296 § 3.14).
            if r.left() != 0 {
                return Err(WireError::EncryptedNotLast);
            }
            return Ok(out);
        }
        kind = next;
    }
    if r.left() != 0 {
        return Err(WireError::BadLength("payload chain"));
    }
    Ok(out)
}

/// A whole IKE message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Header.
    pub header: Header,
    /// Payloads in order (an SK payload, if any, last).
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Parses a message (no non-ESP marker).
    ///
    /// # Errors
    /// Any [`WireError`]; the header length must equal `bytes.len()`.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let (header, first, length) = Header::parse(&mut r)?;
        if usize::try_from(length).ok() != Some(bytes.len()) {
            return Err(WireError::BadLength("IKE header"));
        }
        let payloads = parse_chain(first, r.rest())?;
        Ok(Self { header, payloads })
    }

    /// Emits the message.
    #[must_use]
    pub fn emit(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let first = emit_chain(&self.payloads, &mut body);
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        let len = u32::try_from(HEADER_LEN + body.len()).unwrap_or(u32::MAX);
        self.header.emit(first, len, &mut out);
        out.extend_from_slice(&body);
        out
    }

    /// The first notify of a type.
    #[must_use]
    pub fn notify(&self, kind: NotifyType) -> Option<&Notify> {
        find_notify(&self.payloads, kind)
    }
}

/// The first notify of a type in a payload list.
#[must_use]
pub fn find_notify(payloads: &[Payload], kind: NotifyType) -> Option<&Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind == kind => Some(n),
        _ => None,
    })
}

/// The first error notify in a payload list.
#[must_use]
pub fn first_error_notify(payloads: &[Payload]) -> Option<&Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind.is_error() => Some(n),
        _ => None,
    })
}
