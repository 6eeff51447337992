//! ISAKMP message codec ([RFC 2408 § 3]) with the IPsec DOI's payload
//! contents ([RFC 2407 § 4]) and the NAT-T payloads ([RFC 3947 § 3]).
//!
//! # No-panic contract
//!
//! [`Header::parse`], [`parse_chain`] and [`Message::parse`] read
//! untrusted bytes only through the bounded [`Reader`] of the IKEv2 codec,
//! which names the structure being read; every length field is checked
//! against the bytes that remain before it is used. Any input, of any
//! length, yields `Ok` or a [`WireError`]: never a panic, an
//! out-of-bounds index or an allocation larger than the input. Registry
//! numbers we do not know (payload types, exchange types, notify types,
//! attribute types) parse as `Unknown(raw)`: the state machine decides
//! whether they matter. A payload of a type we do not know is kept as
//! [`Payload::Unknown`] (ISAKMP has no critical bit).
//!
//! An encrypted message (the `E` flag) carries ciphertext after the
//! header; [`Message::parse`] leaves it as [`Body::Encrypted`] and the
//! state machine parses the plaintext with [`parse_chain`] once it has
//! decrypted it. Phase 1 padding follows the last payload, so
//! [`parse_chain`] stops at the payload whose Next Payload is 0 and
//! reports where it ended ([`Chain::end`]).
//!
//! Emitting is infallible for values built by the state machine: length
//! fields are computed from the contents, which the callers keep far below
//! 65535 bytes per payload.
//!
//! [RFC 2408 § 3]: https://www.rfc-editor.org/rfc/rfc2408#section-3
//! [RFC 2407 § 4]: https://www.rfc-editor.org/rfc/rfc2407#section-4
//! [RFC 3947 § 3]: https://www.rfc-editor.org/rfc/rfc3947#section-3

use std::ops::Range;

use crate::ike::wire::enum_with_unknown;
pub use crate::ike::wire::{Reader, WireError};

/// ISAKMP header length ([RFC 2408 § 3.1]).
///
/// [RFC 2408 § 3.1]: https://www.rfc-editor.org/rfc/rfc2408#section-3.1
pub const HEADER_LEN: usize = 28;
/// Generic payload header length (RFC 2408 § 3.2).
pub const GENERIC_LEN: usize = 4;
/// Major/minor version byte of ISAKMP 1.0.
pub const VERSION: u8 = 0x10;
/// The IPsec DOI (RFC 2407 § 4.2).
pub const DOI_IPSEC: u32 = 1;
/// `SIT_IDENTITY_ONLY` (RFC 2407 § 4.2.1).
pub const SIT_IDENTITY_ONLY: u32 = 1;
/// Header flag: the payloads after the header are encrypted.
pub const FLAG_ENCRYPTION: u8 = 0x01;
/// Header flag: commit.
pub const FLAG_COMMIT: u8 = 0x02;
/// Header flag: authentication only.
pub const FLAG_AUTH_ONLY: u8 = 0x04;

enum_with_unknown! {
    /// Exchange types (RFC 2408 § 3.1, RFC 2409 § 5).
    pub enum ExchangeType(u8) {
        /// Base.
        Base = 1,
        /// Identity Protection (Main Mode).
        IdentityProtection = 2,
        /// Authentication Only.
        AuthOnly = 3,
        /// Aggressive Mode.
        Aggressive = 4,
        /// Informational.
        Informational = 5,
        /// Transaction (XAuth / Mode Config).
        Transaction = 6,
        /// Quick Mode (RFC 2409 § 5.5).
        QuickMode = 32,
        /// New Group Mode.
        NewGroup = 33,
    }
}

enum_with_unknown! {
    /// Payload types (RFC 2408 § 3.1, RFC 3947 § 3, draft NAT-T numbers).
    pub enum PayloadType(u8) {
        /// No next payload.
        None = 0,
        /// Security Association.
        Sa = 1,
        /// Proposal (inside SA only).
        Proposal = 2,
        /// Transform (inside Proposal only).
        Transform = 3,
        /// Key Exchange.
        Ke = 4,
        /// Identification.
        Id = 5,
        /// Certificate.
        Cert = 6,
        /// Certificate Request.
        CertReq = 7,
        /// Hash.
        Hash = 8,
        /// Signature.
        Sig = 9,
        /// Nonce.
        Nonce = 10,
        /// Notification.
        Notify = 11,
        /// Delete.
        Delete = 12,
        /// Vendor ID.
        Vendor = 13,
        /// NAT-D (RFC 3947).
        NatD = 20,
        /// NAT-OA (RFC 3947).
        NatOa = 21,
        /// NAT-D of the NAT-T drafts.
        NatDDraft = 130,
        /// NAT-OA of the NAT-T drafts.
        NatOaDraft = 131,
    }
}

enum_with_unknown! {
    /// Protocol IDs (RFC 2407 § 4.4.1).
    pub enum ProtocolId(u8) {
        /// PROTO_ISAKMP.
        Isakmp = 1,
        /// PROTO_IPSEC_AH.
        Ah = 2,
        /// PROTO_IPSEC_ESP.
        Esp = 3,
        /// PROTO_IPCOMP.
        IpComp = 4,
    }
}

enum_with_unknown! {
    /// Notify message types (RFC 2408 § 3.14.1, RFC 2407 § 4.6.3,
    /// RFC 3706 § 5).
    pub enum NotifyType(u16) {
        /// INVALID-PAYLOAD-TYPE.
        InvalidPayloadType = 1,
        /// DOI-NOT-SUPPORTED.
        DoiNotSupported = 2,
        /// SITUATION-NOT-SUPPORTED.
        SituationNotSupported = 3,
        /// INVALID-COOKIE.
        InvalidCookie = 4,
        /// INVALID-MAJOR-VERSION.
        InvalidMajorVersion = 5,
        /// INVALID-EXCHANGE-TYPE.
        InvalidExchangeType = 7,
        /// INVALID-FLAGS.
        InvalidFlags = 8,
        /// INVALID-MESSAGE-ID.
        InvalidMessageId = 9,
        /// INVALID-PROTOCOL-ID.
        InvalidProtocolId = 10,
        /// INVALID-SPI.
        InvalidSpi = 11,
        /// INVALID-TRANSFORM-ID.
        InvalidTransformId = 12,
        /// ATTRIBUTES-NOT-SUPPORTED.
        AttributesNotSupported = 13,
        /// NO-PROPOSAL-CHOSEN.
        NoProposalChosen = 14,
        /// BAD-PROPOSAL-SYNTAX.
        BadProposalSyntax = 15,
        /// PAYLOAD-MALFORMED.
        PayloadMalformed = 16,
        /// INVALID-KEY-INFORMATION.
        InvalidKeyInformation = 17,
        /// INVALID-ID-INFORMATION.
        InvalidIdInformation = 18,
        /// INVALID-HASH-INFORMATION.
        InvalidHashInformation = 23,
        /// AUTHENTICATION-FAILED.
        AuthenticationFailed = 24,
        /// INVALID-SIGNATURE.
        InvalidSignature = 25,
        /// RESPONDER-LIFETIME (RFC 2407 § 4.6.3.1).
        ResponderLifetime = 24576,
        /// REPLAY-STATUS.
        ReplayStatus = 24577,
        /// INITIAL-CONTACT (RFC 2407 § 4.6.3.3).
        InitialContact = 24578,
        /// R-U-THERE (RFC 3706 § 5).
        RUThere = 36136,
        /// R-U-THERE-ACK.
        RUThereAck = 36137,
    }
}

impl NotifyType {
    /// Error types are below 8192 (RFC 2408 § 3.14.1).
    #[must_use]
    pub fn is_error(self) -> bool {
        u16::from(self) < 8192
    }
}

enum_with_unknown! {
    /// Identification types (RFC 2407 § 4.6.2.1).
    pub enum IdType(u8) {
        /// ID_IPV4_ADDR.
        Ipv4Addr = 1,
        /// ID_FQDN.
        Fqdn = 2,
        /// ID_USER_FQDN.
        UserFqdn = 3,
        /// ID_IPV4_ADDR_SUBNET.
        Ipv4Subnet = 4,
        /// ID_IPV6_ADDR.
        Ipv6Addr = 5,
        /// ID_IPV6_ADDR_SUBNET.
        Ipv6Subnet = 6,
        /// ID_IPV4_ADDR_RANGE.
        Ipv4Range = 7,
        /// ID_IPV6_ADDR_RANGE.
        Ipv6Range = 8,
        /// ID_DER_ASN1_DN.
        DerAsn1Dn = 9,
        /// ID_KEY_ID.
        KeyId = 11,
    }
}

/// ISAKMP header ([RFC 2408 § 3.1]).
///
/// [RFC 2408 § 3.1]: https://www.rfc-editor.org/rfc/rfc2408#section-3.1
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Initiator cookie.
    pub cky_i: u64,
    /// Responder cookie (0 in the first message).
    pub cky_r: u64,
    /// First payload's type.
    pub next: PayloadType,
    /// Version byte (major in the high nibble).
    pub version: u8,
    /// Exchange type.
    pub exchange: ExchangeType,
    /// Flags ([`FLAG_ENCRYPTION`], …).
    pub flags: u8,
    /// Message ID (0 in phase 1).
    pub message_id: u32,
    /// Total length, header included.
    pub length: u32,
}

impl Header {
    /// Parses a header.
    ///
    /// # Errors
    /// [`WireError::Truncated`], or [`WireError::Version`] for a major
    /// version other than 1.
    pub fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let cky_i = r.u64("ISAKMP initiator cookie")?;
        let cky_r = r.u64("ISAKMP responder cookie")?;
        let next = PayloadType::from(r.u8("ISAKMP next payload")?);
        let version = r.u8("ISAKMP version")?;
        if version >> 4 != 1 {
            return Err(WireError::Version(version >> 4));
        }
        let exchange = ExchangeType::from(r.u8("ISAKMP exchange type")?);
        let flags = r.u8("ISAKMP flags")?;
        let message_id = r.u32("ISAKMP message ID")?;
        let length = r.u32("ISAKMP length")?;
        Ok(Self {
            cky_i,
            cky_r,
            next,
            version,
            exchange,
            flags,
            message_id,
            length,
        })
    }

    /// Whether the body is encrypted.
    #[must_use]
    pub fn encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPTION != 0
    }

    /// Emits the header with its `length` field as stored.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.cky_i.to_be_bytes());
        out.extend_from_slice(&self.cky_r.to_be_bytes());
        out.push(self.next.into());
        out.push(self.version);
        out.push(self.exchange.into());
        out.push(self.flags);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }
}

/// One data attribute ([RFC 2408 § 3.3]): TV form (AF bit set, 2-byte
/// value) or TLV form (variable value).
///
/// [RFC 2408 § 3.3]: https://www.rfc-editor.org/rfc/rfc2408#section-3.3
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// TV: type (15 bits) and a 16-bit value.
    Basic(u16, u16),
    /// TLV: type (15 bits) and its bytes.
    Variable(u16, Vec<u8>),
}

impl Attribute {
    /// The attribute type (AF bit stripped).
    #[must_use]
    pub fn kind(&self) -> u16 {
        match self {
            Self::Basic(k, _) | Self::Variable(k, _) => *k,
        }
    }
    /// The value as an integer: a TV value, or a TLV value of up to 8
    /// bytes (Life Duration may be long, RFC 2407 § 4.5).
    #[must_use]
    pub fn value(&self) -> Option<u64> {
        match self {
            Self::Basic(_, v) => Some(u64::from(*v)),
            Self::Variable(_, b) if !b.is_empty() && b.len() <= 8 => {
                Some(b.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x)))
            }
            Self::Variable(..) => None,
        }
    }
    /// An attribute for an integer value: TV when it fits 16 bits.
    #[must_use]
    pub fn number(kind: u16, v: u64) -> Self {
        match u16::try_from(v) {
            Ok(x) => Self::Basic(kind, x),
            Err(_) => Self::Variable(
                kind,
                v.to_be_bytes()
                    .iter()
                    .copied()
                    .skip_while(|b| *b == 0)
                    .collect(),
            ),
        }
    }
    fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let t = r.u16("data attribute type")?;
        let v = r.u16("data attribute value")?;
        if t & 0x8000 != 0 {
            Ok(Self::Basic(t & 0x7fff, v))
        } else {
            let b = r.take(usize::from(v), "data attribute value")?;
            Ok(Self::Variable(t, b.to_vec()))
        }
    }
    fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Self::Basic(k, v) => {
                out.extend_from_slice(&(k | 0x8000).to_be_bytes());
                out.extend_from_slice(&v.to_be_bytes());
            }
            Self::Variable(k, b) => {
                out.extend_from_slice(&(k & 0x7fff).to_be_bytes());
                out.extend_from_slice(&len16(b.len()).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
}

/// A Transform payload ([RFC 2408 § 3.6]).
///
/// [RFC 2408 § 3.6]: https://www.rfc-editor.org/rfc/rfc2408#section-3.6
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    /// Transform number.
    pub number: u8,
    /// Transform ID (`KEY_IKE` = 1 in phase 1; an ESP transform ID in
    /// phase 2, RFC 2407 § 4.4.4).
    pub id: u8,
    /// SA attributes.
    pub attributes: Vec<Attribute>,
}

impl Transform {
    /// The value of attribute `kind`, if present and numeric.
    #[must_use]
    pub fn attr(&self, kind: u16) -> Option<u64> {
        self.attributes
            .iter()
            .find(|a| a.kind() == kind)
            .and_then(Attribute::value)
    }
}

/// A Proposal payload ([RFC 2408 § 3.5]).
///
/// [RFC 2408 § 3.5]: https://www.rfc-editor.org/rfc/rfc2408#section-3.5
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal number.
    pub number: u8,
    /// Protocol.
    pub protocol: ProtocolId,
    /// SPI (empty or 16 bytes in phase 1, 4 bytes for ESP).
    pub spi: Vec<u8>,
    /// Transforms, in the peer's preference order.
    pub transforms: Vec<Transform>,
}

/// An SA payload ([RFC 2408 § 3.4], [RFC 2407 § 4.6.1]).
///
/// [RFC 2408 § 3.4]: https://www.rfc-editor.org/rfc/rfc2408#section-3.4
/// [RFC 2407 § 4.6.1]: https://www.rfc-editor.org/rfc/rfc2407#section-4.6.1
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sa {
    /// Domain of Interpretation ([`DOI_IPSEC`]).
    pub doi: u32,
    /// Situation ([`SIT_IDENTITY_ONLY`]).
    pub situation: u32,
    /// Proposals. Several with the same number form one AND-ed proposal
    /// (RFC 2408 § 4.2); we use one protocol per proposal.
    pub proposals: Vec<Proposal>,
}

/// An Identification payload ([RFC 2407 § 4.6.2]).
///
/// [RFC 2407 § 4.6.2]: https://www.rfc-editor.org/rfc/rfc2407#section-4.6.2
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id {
    /// ID type.
    pub id_type: IdType,
    /// IP protocol (0: any).
    pub protocol: u8,
    /// Port (0: any).
    pub port: u16,
    /// Identification data.
    pub data: Vec<u8>,
}

impl Id {
    /// The payload body (`IDii_b`, `IDir_b` of RFC 2409 § 5: the payload
    /// without its generic header).
    #[must_use]
    pub fn body(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + self.data.len());
        v.push(self.id_type.into());
        v.push(self.protocol);
        v.extend_from_slice(&self.port.to_be_bytes());
        v.extend_from_slice(&self.data);
        v
    }
}

/// A Notification payload ([RFC 2408 § 3.14]).
///
/// [RFC 2408 § 3.14]: https://www.rfc-editor.org/rfc/rfc2408#section-3.14
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// DOI.
    pub doi: u32,
    /// Protocol.
    pub protocol: ProtocolId,
    /// SPI (the cookie pair for ISAKMP, 16 bytes, or none).
    pub spi: Vec<u8>,
    /// Message type.
    pub kind: NotifyType,
    /// Notification data.
    pub data: Vec<u8>,
}

/// A Delete payload ([RFC 2408 § 3.15]).
///
/// [RFC 2408 § 3.15]: https://www.rfc-editor.org/rfc/rfc2408#section-3.15
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// DOI.
    pub doi: u32,
    /// Protocol.
    pub protocol: ProtocolId,
    /// SPIs, each of the same size (16 bytes for ISAKMP, 4 for ESP).
    pub spis: Vec<Vec<u8>>,
}

/// One payload.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload {
    /// Security Association.
    Sa(Sa),
    /// Key Exchange data.
    Ke(Vec<u8>),
    /// Identification.
    Id(Id),
    /// Hash data.
    Hash(Vec<u8>),
    /// Signature data.
    Sig(Vec<u8>),
    /// Certificate: encoding and data.
    Cert(u8, Vec<u8>),
    /// Certificate request: type and authority.
    CertReq(u8, Vec<u8>),
    /// Nonce data.
    Nonce(Vec<u8>),
    /// Notification.
    Notify(Notify),
    /// Delete.
    Delete(Delete),
    /// Vendor ID.
    Vendor(Vec<u8>),
    /// NAT-D hash (RFC 3947 § 3.2), in the RFC or a draft numbering.
    NatD(PayloadType, Vec<u8>),
    /// NAT-OA (RFC 3947 § 5.1): ID type and address.
    NatOa(PayloadType, IdType, Vec<u8>),
    /// A payload type we do not interpret.
    Unknown(u8, Vec<u8>),
}

impl Payload {
    /// The payload type.
    #[must_use]
    pub fn kind(&self) -> PayloadType {
        match self {
            Self::Sa(_) => PayloadType::Sa,
            Self::Ke(_) => PayloadType::Ke,
            Self::Id(_) => PayloadType::Id,
            Self::Hash(_) => PayloadType::Hash,
            Self::Sig(_) => PayloadType::Sig,
            Self::Cert(..) => PayloadType::Cert,
            Self::CertReq(..) => PayloadType::CertReq,
            Self::Nonce(_) => PayloadType::Nonce,
            Self::Notify(_) => PayloadType::Notify,
            Self::Delete(_) => PayloadType::Delete,
            Self::Vendor(_) => PayloadType::Vendor,
            Self::NatD(t, _) | Self::NatOa(t, ..) => *t,
            Self::Unknown(t, _) => PayloadType::from(*t),
        }
    }

    /// The payload body (without the generic header).
    #[must_use]
    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.emit_body(&mut out);
        out
    }

    fn emit_body(&self, out: &mut Vec<u8>) {
        match self {
            Self::Sa(sa) => emit_sa(sa, out),
            Self::Ke(b)
            | Self::Hash(b)
            | Self::Sig(b)
            | Self::Nonce(b)
            | Self::Vendor(b)
            | Self::NatD(_, b)
            | Self::Unknown(_, b) => out.extend_from_slice(b),
            Self::Id(id) => out.extend_from_slice(&id.body()),
            Self::Cert(e, b) | Self::CertReq(e, b) => {
                out.push(*e);
                out.extend_from_slice(b);
            }
            Self::Notify(n) => {
                out.extend_from_slice(&n.doi.to_be_bytes());
                out.push(n.protocol.into());
                out.push(len8(n.spi.len()));
                out.extend_from_slice(&u16::from(n.kind).to_be_bytes());
                out.extend_from_slice(&n.spi);
                out.extend_from_slice(&n.data);
            }
            Self::Delete(d) => {
                out.extend_from_slice(&d.doi.to_be_bytes());
                out.push(d.protocol.into());
                out.push(len8(d.spis.first().map_or(0, Vec::len)));
                out.extend_from_slice(&len16(d.spis.len()).to_be_bytes());
                for s in &d.spis {
                    out.extend_from_slice(s);
                }
            }
            Self::NatOa(_, t, b) => {
                out.push((*t).into());
                out.extend_from_slice(&[0, 0, 0]);
                out.extend_from_slice(b);
            }
        }
    }

    fn parse(kind: PayloadType, body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        Ok(match kind {
            PayloadType::Sa => Self::Sa(parse_sa(&mut r)?),
            PayloadType::Ke => Self::Ke(body.to_vec()),
            PayloadType::Id => Self::Id(Id {
                id_type: IdType::from(r.u8("ID type")?),
                protocol: r.u8("ID protocol")?,
                port: r.u16("ID port")?,
                data: r.rest().to_vec(),
            }),
            PayloadType::Hash => Self::Hash(body.to_vec()),
            PayloadType::Sig => Self::Sig(body.to_vec()),
            PayloadType::Cert => Self::Cert(r.u8("CERT encoding")?, r.rest().to_vec()),
            PayloadType::CertReq => Self::CertReq(r.u8("CR type")?, r.rest().to_vec()),
            PayloadType::Nonce => Self::Nonce(body.to_vec()),
            PayloadType::Notify => {
                let doi = r.u32("N DOI")?;
                let protocol = ProtocolId::from(r.u8("N protocol")?);
                let spi_len = r.u8("N SPI size")?;
                let kind = NotifyType::from(r.u16("N message type")?);
                let spi = r.take(usize::from(spi_len), "N SPI")?.to_vec();
                Self::Notify(Notify {
                    doi,
                    protocol,
                    spi,
                    kind,
                    data: r.rest().to_vec(),
                })
            }
            PayloadType::Delete => {
                let doi = r.u32("D DOI")?;
                let protocol = ProtocolId::from(r.u8("D protocol")?);
                let spi_len = usize::from(r.u8("D SPI size")?);
                let n = usize::from(r.u16("D number of SPIs")?);
                if spi_len == 0 && n != 0 {
                    return Err(WireError::BadLength("D SPI size"));
                }
                // Bounded by the body: n × spi_len bytes must be there.
                if n.saturating_mul(spi_len) != r.left() {
                    return Err(WireError::BadLength("D SPIs"));
                }
                let mut spis = Vec::with_capacity(n);
                for _ in 0..n {
                    spis.push(r.take(spi_len, "D SPI")?.to_vec());
                }
                Self::Delete(Delete {
                    doi,
                    protocol,
                    spis,
                })
            }
            PayloadType::Vendor => Self::Vendor(body.to_vec()),
            PayloadType::NatD | PayloadType::NatDDraft => Self::NatD(kind, body.to_vec()),
            PayloadType::NatOa | PayloadType::NatOaDraft => {
                let t = IdType::from(r.u8("NAT-OA ID type")?);
                r.take(3, "NAT-OA reserved")?;
                Self::NatOa(kind, t, r.rest().to_vec())
            }
            other => Self::Unknown(other.into(), body.to_vec()),
        })
    }
}

fn len16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn len8(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// Reads one generic payload header and its body; returns the next
/// payload type and the body.
fn generic<'a>(
    r: &mut Reader<'a>,
    what: &'static str,
) -> Result<(PayloadType, &'a [u8]), WireError> {
    let next = PayloadType::from(r.u8(what)?);
    let _reserved = r.u8(what)?;
    let len = usize::from(r.u16(what)?);
    if len < GENERIC_LEN {
        return Err(WireError::BadLength(what));
    }
    let body = r
        .take(len - GENERIC_LEN, what)
        .map_err(|_| WireError::BadLength(what))?;
    Ok((next, body))
}

fn parse_sa(r: &mut Reader<'_>) -> Result<Sa, WireError> {
    let doi = r.u32("SA DOI")?;
    let situation = r.u32("SA situation")?;
    let mut proposals = Vec::new();
    let mut next = if r.left() == 0 {
        PayloadType::None
    } else {
        PayloadType::Proposal
    };
    while next == PayloadType::Proposal {
        let (n, body) = generic(r, "proposal payload")?;
        next = n;
        let mut p = Reader::new(body);
        let number = p.u8("proposal number")?;
        let protocol = ProtocolId::from(p.u8("proposal protocol")?);
        let spi_len = p.u8("proposal SPI size")?;
        let count = p.u8("proposal transform count")?;
        let spi = p.take(usize::from(spi_len), "proposal SPI")?.to_vec();
        let mut transforms = Vec::new();
        let mut tnext = if count == 0 {
            PayloadType::None
        } else {
            PayloadType::Transform
        };
        while tnext == PayloadType::Transform {
            let (tn, tbody) = generic(&mut p, "transform payload")?;
            tnext = tn;
            let mut t = Reader::new(tbody);
            let number = t.u8("transform number")?;
            let id = t.u8("transform ID")?;
            t.take(2, "transform reserved")?;
            let mut attributes = Vec::new();
            while t.left() > 0 {
                attributes.push(Attribute::parse(&mut t)?);
            }
            transforms.push(Transform {
                number,
                id,
                attributes,
            });
        }
        if tnext != PayloadType::None || transforms.len() != usize::from(count) || p.left() != 0 {
            return Err(WireError::BadLength("proposal transforms"));
        }
        proposals.push(Proposal {
            number,
            protocol,
            spi,
            transforms,
        });
    }
    if next != PayloadType::None || r.left() != 0 {
        return Err(WireError::BadLength("SA proposals"));
    }
    Ok(Sa {
        doi,
        situation,
        proposals,
    })
}

fn emit_generic(out: &mut Vec<u8>, next: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[next, 0, 0, 0]);
    body(out);
    let len = len16(out.len() - start).to_be_bytes();
    out[start + 2..start + 4].copy_from_slice(&len);
}

fn emit_sa(sa: &Sa, out: &mut Vec<u8>) {
    out.extend_from_slice(&sa.doi.to_be_bytes());
    out.extend_from_slice(&sa.situation.to_be_bytes());
    for (i, p) in sa.proposals.iter().enumerate() {
        let next = if i + 1 < sa.proposals.len() { 2 } else { 0 };
        emit_generic(out, next, |out| {
            out.push(p.number);
            out.push(p.protocol.into());
            out.push(len8(p.spi.len()));
            out.push(len8(p.transforms.len()));
            out.extend_from_slice(&p.spi);
            for (j, t) in p.transforms.iter().enumerate() {
                let next = if j + 1 < p.transforms.len() { 3 } else { 0 };
                emit_generic(out, next, |out| {
                    out.push(t.number);
                    out.push(t.id);
                    out.extend_from_slice(&[0, 0]);
                    for a in &t.attributes {
                        a.emit(out);
                    }
                });
            }
        });
    }
}

/// A parsed payload chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The payloads, in order.
    pub payloads: Vec<Payload>,
    /// Each payload's whole extent (generic header included) in the
    /// parsed bytes, for the hashes over raw payloads (RFC 2409 § 5.5).
    pub spans: Vec<Range<usize>>,
    /// Where the last payload ended (phase 1 padding may follow).
    pub end: usize,
}

impl Chain {
    /// The first payload matching `f`.
    pub fn find<'a, T>(&'a self, f: impl FnMut(&'a Payload) -> Option<T>) -> Option<T> {
        self.payloads.iter().find_map(f)
    }
}

/// Parses a payload chain starting with a payload of type `first` from
/// `bytes`; stops after the payload whose Next Payload is 0, leaving any
/// bytes after it (padding) unread.
///
/// # Errors
/// [`WireError`] when a length does not fit or a payload body is
/// malformed.
pub fn parse_chain(first: PayloadType, bytes: &[u8]) -> Result<Chain, WireError> {
    let mut r = Reader::new(bytes);
    let mut next = first;
    let mut payloads = Vec::new();
    let mut spans = Vec::new();
    while next != PayloadType::None {
        let start = bytes.len() - r.left();
        let (n, body) = generic(&mut r, "payload")?;
        payloads.push(Payload::parse(next, body)?);
        spans.push(start..bytes.len() - r.left());
        next = n;
    }
    Ok(Chain {
        payloads,
        spans,
        end: bytes.len() - r.left(),
    })
}

/// Emits a payload chain; returns the first payload's type (for the
/// header).
pub fn emit_chain(payloads: &[Payload], out: &mut Vec<u8>) -> PayloadType {
    for (i, p) in payloads.iter().enumerate() {
        let next = payloads.get(i + 1).map_or(0, |n| u8::from(n.kind()));
        emit_generic(out, next, |out| p.emit_body(out));
    }
    payloads.first().map_or(PayloadType::None, Payload::kind)
}

/// A message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Plaintext payloads.
    Plain(Chain),
    /// Ciphertext (the `E` flag), to be decrypted by the state machine.
    Encrypted(Vec<u8>),
}

/// A whole ISAKMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Header.
    pub header: Header,
    /// Body.
    pub body: Body,
}

impl Message {
    /// Parses a datagram (without the non-ESP marker).
    ///
    /// # Errors
    /// [`WireError`]: the header's length must equal the datagram's.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let header = Header::parse(&mut r)?;
        if usize::try_from(header.length).ok() != Some(bytes.len()) {
            return Err(WireError::BadLength("ISAKMP length"));
        }
        let rest = r.rest();
        let body = if header.encrypted() {
            Body::Encrypted(rest.to_vec())
        } else {
            let chain = parse_chain(header.next, rest)?;
            if chain.end != rest.len() {
                return Err(WireError::BadLength("ISAKMP payloads"));
            }
            Body::Plain(chain)
        };
        Ok(Self { header, body })
    }

    /// Builds a plaintext message from `header` (its `next` and `length`
    /// fields are filled in) and `payloads`.
    #[must_use]
    pub fn emit_plain(header: &Header, payloads: &[Payload]) -> Vec<u8> {
        let mut body = Vec::new();
        let next = emit_chain(payloads, &mut body);
        let mut h = *header;
        h.next = next;
        h.flags &= !FLAG_ENCRYPTION;
        h.length = u32::try_from(HEADER_LEN + body.len()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        h.emit(&mut out);
        out.extend_from_slice(&body);
        out
    }

    /// Re-emits a parsed message.
    #[must_use]
    pub fn emit(&self) -> Vec<u8> {
        match &self.body {
            Body::Plain(c) => Self::emit_plain(&self.header, &c.payloads),
            Body::Encrypted(ct) => {
                let mut h = self.header;
                h.length = u32::try_from(HEADER_LEN + ct.len()).unwrap_or(u32::MAX);
                let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
                h.emit(&mut out);
                out.extend_from_slice(ct);
                out
            }
        }
    }
}
