//! BGP-4 message codec: OPEN (with capabilities), UPDATE, NOTIFICATION,
//! KEEPALIVE and ROUTE-REFRESH.
//!
//! # Contract
//!
//! Parsing takes untrusted bytes and never panics, never allocates more than
//! a small multiple of its input, and never reads past the input: every read
//! goes through a bounded [`Reader`] that names what it was reading when the
//! input ran out. A message that breaks the rules is reported as a
//! [`MessageError`] carrying the NOTIFICATION RFC 4271 § 6 prescribes, or,
//! for UPDATE, as the RFC 7606 action to take ([`UpdateError`]):
//!
//! * **session reset** — the NLRI cannot be located any more (withdrawn
//!   routes or attribute lengths overrun their fields, a malformed NLRI
//!   field, a malformed or repeated `MP_REACH_NLRI` / `MP_UNREACH_NLRI`,
//!   an unrecognized well-known attribute);
//! * **treat-as-withdraw** — an attribute that affects route selection is
//!   malformed (ORIGIN, AS_PATH, NEXT_HOP, MED, COMMUNITIES, flags that
//!   conflict with the type, a missing well-known mandatory attribute): every
//!   prefix of the message is withdrawn and the session stays up;
//! * **attribute discard** — an attribute that does not affect selection is
//!   malformed or not allowed here (ATOMIC_AGGREGATE, AGGREGATOR,
//!   AS4_PATH/AS4_AGGREGATOR, LOCAL_PREF from an external peer, a repeated
//!   attribute): it is dropped and noted in [`Update::discarded`].
//!
//! Emission writes exactly [`Message::buffer_len`] bytes and is the inverse
//! of parsing: `parse(emit(x)) == x` for every value the types can express
//! (property-tested). Registry numbers are enums with an `Unknown(raw)`
//! variant, so parsing never fails on a code point we do not know.
//!
//! [RFC 4271]: https://www.rfc-editor.org/rfc/rfc4271
//! [RFC 7606]: https://www.rfc-editor.org/rfc/rfc7606

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Length of the fixed message header (marker, length, type).
pub const HEADER_LEN: usize = 19;
/// Largest BGP message ([RFC 4271 § 4.1]; RFC 8654 extended messages are
/// not negotiated).
///
/// [RFC 4271 § 4.1]: https://www.rfc-editor.org/rfc/rfc4271#section-4.1
pub const MAX_MESSAGE_LEN: usize = 4096;
/// The BGP version we speak.
pub const BGP_VERSION: u8 = 4;
/// AS_TRANS, the 2-octet stand-in for a 4-octet AS ([RFC 6793 § 9]).
///
/// [RFC 6793 § 9]: https://www.rfc-editor.org/rfc/rfc6793#section-9
pub const AS_TRANS: u16 = 23_456;

macro_rules! registry {
    (
        $(#[$m:meta])*
        pub enum $name:ident : $repr:ty {
            $( $(#[$vm:meta])* $variant:ident = $value:expr ),+ $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vm])* $variant, )+
            /// A value this implementation does not know.
            Unknown($repr),
        }
        impl From<$repr> for $name {
            fn from(v: $repr) -> Self {
                match v {
                    $( $value => Self::$variant, )+
                    other => Self::Unknown(other),
                }
            }
        }
        impl From<$name> for $repr {
            fn from(v: $name) -> Self {
                match v {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

registry! {
    /// Message type ([RFC 4271 § 4.1], RFC 2918).
    pub enum MessageType: u8 {
        /// OPEN.
        Open = 1,
        /// UPDATE.
        Update = 2,
        /// NOTIFICATION.
        Notification = 3,
        /// KEEPALIVE.
        Keepalive = 4,
        /// ROUTE-REFRESH (RFC 2918).
        RouteRefresh = 5,
    }
}

registry! {
    /// Address family identifier (IANA).
    pub enum Afi: u16 {
        /// IPv4.
        Ipv4 = 1,
        /// IPv6.
        Ipv6 = 2,
    }
}

registry! {
    /// Subsequent address family identifier (IANA).
    pub enum Safi: u8 {
        /// Unicast forwarding.
        Unicast = 1,
    }
}

registry! {
    /// NOTIFICATION error code ([RFC 4271 § 4.5], RFC 7313).
    pub enum ErrorCode: u8 {
        /// Message Header Error.
        MessageHeader = 1,
        /// OPEN Message Error.
        Open = 2,
        /// UPDATE Message Error.
        Update = 3,
        /// Hold Timer Expired.
        HoldTimerExpired = 4,
        /// Finite State Machine Error.
        Fsm = 5,
        /// Cease.
        Cease = 6,
        /// ROUTE-REFRESH Message Error (RFC 7313).
        RouteRefresh = 7,
    }
}

registry! {
    /// Cease subcodes ([RFC 4486], RFC 8203).
    ///
    /// [RFC 4486]: https://www.rfc-editor.org/rfc/rfc4486
    pub enum CeaseSubcode: u8 {
        /// 1: Maximum Number of Prefixes Reached.
        MaxPrefixes = 1,
        /// 2: Administrative Shutdown.
        AdministrativeShutdown = 2,
        /// 3: Peer De-configured.
        PeerDeconfigured = 3,
        /// 4: Administrative Reset.
        AdministrativeReset = 4,
        /// 5: Connection Rejected.
        ConnectionRejected = 5,
        /// 6: Other Configuration Change.
        OtherConfigurationChange = 6,
        /// 7: Connection Collision Resolution.
        ConnectionCollisionResolution = 7,
        /// 8: Out of Resources.
        OutOfResources = 8,
    }
}

registry! {
    /// Path attribute type codes.
    pub enum AttrType: u8 {
        /// ORIGIN (well-known mandatory).
        Origin = 1,
        /// AS_PATH (well-known mandatory).
        AsPath = 2,
        /// NEXT_HOP (well-known mandatory for IPv4 NLRI).
        NextHop = 3,
        /// MULTI_EXIT_DISC (optional non-transitive).
        Med = 4,
        /// LOCAL_PREF (well-known, iBGP only).
        LocalPref = 5,
        /// ATOMIC_AGGREGATE (well-known discretionary).
        AtomicAggregate = 6,
        /// AGGREGATOR (optional transitive).
        Aggregator = 7,
        /// COMMUNITIES (optional transitive, RFC 1997).
        Communities = 8,
        /// MP_REACH_NLRI (optional non-transitive, RFC 4760).
        MpReachNlri = 14,
        /// MP_UNREACH_NLRI (optional non-transitive, RFC 4760).
        MpUnreachNlri = 15,
        /// AS4_PATH (optional transitive, RFC 6793).
        As4Path = 17,
        /// AS4_AGGREGATOR (optional transitive, RFC 6793).
        As4Aggregator = 18,
    }
}

registry! {
    /// ORIGIN values.
    pub enum Origin: u8 {
        /// Learned from an IGP (`i`).
        Igp = 0,
        /// Learned from EGP (`e`).
        Egp = 1,
        /// Incomplete (`?`).
        Incomplete = 2,
    }
}

registry! {
    /// AS_PATH segment types (RFC 4271, RFC 5065).
    pub enum SegmentType: u8 {
        /// AS_SET.
        Set = 1,
        /// AS_SEQUENCE.
        Sequence = 2,
        /// AS_CONFED_SEQUENCE.
        ConfedSequence = 3,
        /// AS_CONFED_SET.
        ConfedSet = 4,
    }
}

/// Attribute flag bits ([RFC 4271 § 4.3]).
pub mod flags {
    /// Optional (1) or well-known (0).
    pub const OPTIONAL: u8 = 0x80;
    /// Transitive.
    pub const TRANSITIVE: u8 = 0x40;
    /// Partial.
    pub const PARTIAL: u8 = 0x20;
    /// Two-octet attribute length.
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// OPEN error subcodes ([RFC 4271 § 6.2]).
pub mod open_subcode {
    /// Unsupported Version Number.
    pub const UNSUPPORTED_VERSION: u8 = 1;
    /// Bad Peer AS.
    pub const BAD_PEER_AS: u8 = 2;
    /// Bad BGP Identifier.
    pub const BAD_BGP_ID: u8 = 3;
    /// Unsupported Optional Parameter.
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    /// Unacceptable Hold Time.
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    /// Unsupported Capability (RFC 5492).
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
}

/// Message header error subcodes ([RFC 4271 § 6.1]).
pub mod header_subcode {
    /// Connection Not Synchronized (bad marker).
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    /// Bad Message Length.
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    /// Bad Message Type.
    pub const BAD_MESSAGE_TYPE: u8 = 3;
}

/// UPDATE error subcodes ([RFC 4271 § 6.3]).
pub mod update_subcode {
    /// Malformed Attribute List.
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    /// Unrecognized Well-known Attribute.
    pub const UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    /// Missing Well-known Attribute.
    pub const MISSING_WELL_KNOWN: u8 = 3;
    /// Attribute Flags Error.
    pub const ATTRIBUTE_FLAGS: u8 = 4;
    /// Attribute Length Error.
    pub const ATTRIBUTE_LENGTH: u8 = 5;
    /// Invalid ORIGIN Attribute.
    pub const INVALID_ORIGIN: u8 = 6;
    /// Invalid NEXT_HOP Attribute.
    pub const INVALID_NEXT_HOP: u8 = 8;
    /// Optional Attribute Error.
    pub const OPTIONAL_ATTRIBUTE: u8 = 9;
    /// Invalid Network Field.
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    /// Malformed AS_PATH.
    pub const MALFORMED_AS_PATH: u8 = 11;
}

/// FSM error subcodes (RFC 6608).
pub mod fsm_subcode {
    /// Receive Unexpected Message in OpenSent State.
    pub const UNEXPECTED_IN_OPENSENT: u8 = 1;
    /// Receive Unexpected Message in OpenConfirm State.
    pub const UNEXPECTED_IN_OPENCONFIRM: u8 = 2;
    /// Receive Unexpected Message in Established State.
    pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
}

/// A bounded reader over untrusted bytes; every read names what it was
/// reading, so a short input reports where it ended.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// The input ended while reading `what`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("input ended while reading {what}")]
pub struct Truncated {
    /// What was being read.
    pub what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    #[must_use]
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes left.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether everything was read.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes.
    ///
    /// # Errors
    /// [`Truncated`] when fewer than `n` are left.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Truncated> {
        let end = self.pos.checked_add(n).ok_or(Truncated { what })?;
        let s = self.buf.get(self.pos..end).ok_or(Truncated { what })?;
        self.pos = end;
        Ok(s)
    }

    /// The rest of the input.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    /// One byte.
    ///
    /// # Errors
    /// [`Truncated`].
    pub fn u8(&mut self, what: &'static str) -> Result<u8, Truncated> {
        Ok(self.take(1, what)?[0])
    }

    /// A big-endian `u16`.
    ///
    /// # Errors
    /// [`Truncated`].
    pub fn u16(&mut self, what: &'static str) -> Result<u16, Truncated> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian `u32`.
    ///
    /// # Errors
    /// [`Truncated`].
    pub fn u32(&mut self, what: &'static str) -> Result<u32, Truncated> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An IPv4 address.
    ///
    /// # Errors
    /// [`Truncated`].
    pub fn ipv4(&mut self, what: &'static str) -> Result<Ipv4Addr, Truncated> {
        Ok(Ipv4Addr::from(self.u32(what)?))
    }

    /// An IPv6 address.
    ///
    /// # Errors
    /// [`Truncated`].
    pub fn ipv6(&mut self, what: &'static str) -> Result<Ipv6Addr, Truncated> {
        let b = self.take(16, what)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ok(Ipv6Addr::from(a))
    }
}

/// A NOTIFICATION message ([RFC 4271 § 4.5]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Error code.
    pub code: ErrorCode,
    /// Error subcode (meaning depends on the code).
    pub subcode: u8,
    /// Diagnostic data.
    pub data: Vec<u8>,
}

impl Notification {
    /// A notification without data.
    #[must_use]
    pub fn new(code: ErrorCode, subcode: u8) -> Self {
        Self {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    /// A Cease notification.
    #[must_use]
    pub fn cease(sub: CeaseSubcode) -> Self {
        Self::new(ErrorCode::Cease, sub.into())
    }

    /// A notification with diagnostic data.
    #[must_use]
    pub fn with_data(code: ErrorCode, subcode: u8, data: &[u8]) -> Self {
        Self {
            code,
            subcode,
            data: data.to_vec(),
        }
    }

    /// The name the logs use, e.g. `Cease/Maximum Number of Prefixes
    /// Reached` (spec §20.4).
    #[must_use]
    pub fn name(&self) -> String {
        let code = match self.code {
            ErrorCode::MessageHeader => "Message Header Error",
            ErrorCode::Open => "OPEN Message Error",
            ErrorCode::Update => "UPDATE Message Error",
            ErrorCode::HoldTimerExpired => return "Hold Timer Expired".to_owned(),
            ErrorCode::Fsm => "Finite State Machine Error",
            ErrorCode::Cease => "Cease",
            ErrorCode::RouteRefresh => "ROUTE-REFRESH Message Error",
            ErrorCode::Unknown(_) => "Unknown Error",
        };
        if self.code != ErrorCode::Cease {
            return format!("{code}/{}", self.subcode);
        }
        let sub = match CeaseSubcode::from(self.subcode) {
            CeaseSubcode::MaxPrefixes => "Maximum Number of Prefixes Reached",
            CeaseSubcode::AdministrativeShutdown => "Administrative Shutdown",
            CeaseSubcode::PeerDeconfigured => "Peer De-configured",
            CeaseSubcode::AdministrativeReset => "Administrative Reset",
            CeaseSubcode::ConnectionRejected => "Connection Rejected",
            CeaseSubcode::OtherConfigurationChange => "Other Configuration Change",
            CeaseSubcode::ConnectionCollisionResolution => "Connection Collision Resolution",
            CeaseSubcode::OutOfResources => "Out of Resources",
            CeaseSubcode::Unknown(_) => "Unknown",
        };
        format!("{code}/{sub}")
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} ({})",
            u8::from(self.code),
            self.subcode,
            self.name()
        )
    }
}

/// A capability advertised in OPEN ([RFC 5492]).
///
/// [RFC 5492]: https://www.rfc-editor.org/rfc/rfc5492
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Multiprotocol extensions for one AFI/SAFI (code 1, RFC 4760).
    Multiprotocol {
        /// Address family.
        afi: Afi,
        /// Subsequent address family.
        safi: Safi,
    },
    /// Route refresh (code 2, RFC 2918).
    RouteRefresh,
    /// Graceful restart (code 64, RFC 4724).
    GracefulRestart {
        /// Restart State bit (R).
        restarting: bool,
        /// Restart time, seconds (12 bits).
        time_secs: u16,
        /// Families whose forwarding state is preserved, with their flags.
        families: Vec<(Afi, Safi, u8)>,
    },
    /// Support for 4-octet AS numbers (code 65, RFC 6793), carrying our AS.
    FourOctetAs(u32),
    /// Anything else, kept raw.
    Unknown {
        /// Capability code.
        code: u8,
        /// Capability value.
        value: Vec<u8>,
    },
}

impl Capability {
    fn value_len(&self) -> usize {
        match self {
            Self::Multiprotocol { .. } | Self::FourOctetAs(_) => 4,
            Self::RouteRefresh => 0,
            Self::GracefulRestart { families, .. } => 2 + 4 * families.len(),
            Self::Unknown { value, .. } => value.len(),
        }
    }

    fn code(&self) -> u8 {
        match self {
            Self::Multiprotocol { .. } => 1,
            Self::RouteRefresh => 2,
            Self::GracefulRestart { .. } => 64,
            Self::FourOctetAs(_) => 65,
            Self::Unknown { code, .. } => *code,
        }
    }

    fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.code());
        out.push(u8::try_from(self.value_len()).unwrap_or(u8::MAX));
        match self {
            Self::Multiprotocol { afi, safi } => {
                out.extend_from_slice(&u16::from(*afi).to_be_bytes());
                out.push(0);
                out.push((*safi).into());
            }
            Self::RouteRefresh => {}
            Self::GracefulRestart {
                restarting,
                time_secs,
                families,
            } => {
                let v = (u16::from(*restarting) << 15) | (time_secs & 0x0fff);
                out.extend_from_slice(&v.to_be_bytes());
                for (afi, safi, f) in families {
                    out.extend_from_slice(&u16::from(*afi).to_be_bytes());
                    out.push((*safi).into());
                    out.push(*f);
                }
            }
            Self::FourOctetAs(asn) => out.extend_from_slice(&asn.to_be_bytes()),
            Self::Unknown { value, .. } => out.extend_from_slice(value),
        }
    }

    fn parse(code: u8, value: &[u8]) -> Result<Self, Truncated> {
        let mut r = Reader::new(value);
        Ok(match code {
            1 if value.len() == 4 => {
                let afi = Afi::from(r.u16("multiprotocol AFI")?);
                let _reserved = r.u8("multiprotocol reserved")?;
                let safi = Safi::from(r.u8("multiprotocol SAFI")?);
                Self::Multiprotocol { afi, safi }
            }
            2 if value.is_empty() => Self::RouteRefresh,
            64 if value.len() >= 2 && (value.len() - 2).is_multiple_of(4) => {
                let v = r.u16("graceful restart flags/time")?;
                let mut families = Vec::new();
                while !r.is_empty() {
                    let afi = Afi::from(r.u16("graceful restart AFI")?);
                    let safi = Safi::from(r.u8("graceful restart SAFI")?);
                    let f = r.u8("graceful restart AFI flags")?;
                    families.push((afi, safi, f));
                }
                Self::GracefulRestart {
                    restarting: v & 0x8000 != 0,
                    time_secs: v & 0x0fff,
                    families,
                }
            }
            65 if value.len() == 4 => Self::FourOctetAs(r.u32("4-octet AS")?),
            _ => Self::Unknown {
                code,
                value: value.to_vec(),
            },
        })
    }
}

/// An OPEN message ([RFC 4271 § 4.2]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Protocol version (4).
    pub version: u8,
    /// The sender's AS, or [`AS_TRANS`] when it does not fit 2 octets.
    pub my_as: u16,
    /// Proposed hold time, seconds (0 or ≥ 3).
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities, one per capability parameter TLV on emission.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// The sender's real AS: the 4-octet AS capability when present
    /// (RFC 6793 § 4.1), otherwise `my_as`.
    #[must_use]
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    /// Whether a capability of this kind is present.
    #[must_use]
    pub fn has(&self, pred: impl Fn(&Capability) -> bool) -> bool {
        self.capabilities.iter().any(pred)
    }

    /// Whether the sender supports 4-octet AS numbers.
    #[must_use]
    pub fn four_octet_as(&self) -> bool {
        self.has(|c| matches!(c, Capability::FourOctetAs(_)))
    }

    /// Whether the sender announced multiprotocol support for `afi`/unicast.
    #[must_use]
    pub fn multiprotocol(&self, afi: Afi) -> bool {
        self.has(
            |c| matches!(c, Capability::Multiprotocol { afi: a, safi: Safi::Unicast } if *a == afi),
        )
    }

    fn body_len(&self) -> usize {
        10 + self
            .capabilities
            .iter()
            .map(|c| 4 + c.value_len())
            .sum::<usize>()
    }

    fn emit_body(&self, out: &mut Vec<u8>) {
        out.push(self.version);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        let opt_len = self.body_len() - 10;
        out.push(u8::try_from(opt_len).unwrap_or(u8::MAX));
        for c in &self.capabilities {
            // One capability per optional parameter, like BIRD and FRR.
            out.push(2);
            out.push(u8::try_from(2 + c.value_len()).unwrap_or(u8::MAX));
            c.emit(out);
        }
    }

    fn parse_body(body: &[u8]) -> Result<Self, MessageError> {
        let bad_len = || MessageError::bad_length(body.len() + HEADER_LEN);
        let mut r = Reader::new(body);
        let version = r.u8("OPEN version").map_err(|_| bad_len())?;
        let my_as = r.u16("OPEN my AS").map_err(|_| bad_len())?;
        let hold_time = r.u16("OPEN hold time").map_err(|_| bad_len())?;
        let bgp_id = r.ipv4("OPEN BGP identifier").map_err(|_| bad_len())?;
        let opt_len = r
            .u8("OPEN optional parameters length")
            .map_err(|_| bad_len())?;
        let malformed = || MessageError::Notify(Notification::new(ErrorCode::Open, 0));
        let params = r
            .take(usize::from(opt_len), "OPEN optional parameters")
            .map_err(|_| malformed())?;
        if !r.is_empty() {
            return Err(malformed());
        }
        let mut capabilities = Vec::new();
        let mut p = Reader::new(params);
        while !p.is_empty() {
            let ty = p.u8("optional parameter type").map_err(|_| malformed())?;
            let len = p.u8("optional parameter length").map_err(|_| malformed())?;
            let val = p
                .take(usize::from(len), "optional parameter value")
                .map_err(|_| malformed())?;
            if ty != 2 {
                return Err(MessageError::Notify(Notification::new(
                    ErrorCode::Open,
                    open_subcode::UNSUPPORTED_OPTIONAL_PARAMETER,
                )));
            }
            let mut c = Reader::new(val);
            while !c.is_empty() {
                let code = c.u8("capability code").map_err(|_| malformed())?;
                let len = c.u8("capability length").map_err(|_| malformed())?;
                let v = c
                    .take(usize::from(len), "capability value")
                    .map_err(|_| malformed())?;
                capabilities.push(Capability::parse(code, v).map_err(|_| malformed())?);
            }
        }
        Ok(Self {
            version,
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        })
    }
}

/// One AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsSegment {
    /// Segment type.
    pub kind: SegmentType,
    /// The AS numbers (1..=255 of them on the wire).
    pub asns: Vec<u32>,
}

/// An AS_PATH, always held with 4-octet AS numbers (RFC 6793 reconciliation
/// happens while parsing).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    /// Segments in wire order (the first is the neighbour's end).
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// A path of one AS_SEQUENCE.
    #[must_use]
    pub fn sequence(asns: &[u32]) -> Self {
        if asns.is_empty() {
            return Self::default();
        }
        Self {
            segments: vec![AsSegment {
                kind: SegmentType::Sequence,
                asns: asns.to_vec(),
            }],
        }
    }

    /// The path length for best-path selection ([RFC 4271 § 9.1.2.2] a): an
    /// AS_SET counts 1, confederation segments count 0.
    #[must_use]
    pub fn path_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentType::Set => 1,
                SegmentType::Sequence => s.asns.len(),
                _ => 0,
            })
            .sum()
    }

    /// Whether `asn` appears anywhere in the path.
    #[must_use]
    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// The first AS of the leading AS_SEQUENCE (the neighbour AS).
    #[must_use]
    pub fn first_as(&self) -> Option<u32> {
        match self.segments.first() {
            Some(s) if s.kind == SegmentType::Sequence => s.asns.first().copied(),
            _ => None,
        }
    }

    /// Prepends `asn` `count` times (what a speaker does on eBGP export).
    pub fn prepend(&mut self, asn: u32, count: usize) {
        if count == 0 {
            return;
        }
        match self.segments.first_mut() {
            Some(s) if s.kind == SegmentType::Sequence && s.asns.len() + count <= 255 => {
                s.asns.splice(0..0, std::iter::repeat_n(asn, count));
            }
            _ => self.segments.insert(
                0,
                AsSegment {
                    kind: SegmentType::Sequence,
                    asns: vec![asn; count],
                },
            ),
        }
    }

    fn needs_as4(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.asns.iter().any(|a| *a > u32::from(u16::MAX)))
    }

    fn emit(&self, out: &mut Vec<u8>, four: bool) {
        for s in &self.segments {
            out.push(s.kind.into());
            out.push(u8::try_from(s.asns.len()).unwrap_or(u8::MAX));
            for a in &s.asns {
                if four {
                    out.extend_from_slice(&a.to_be_bytes());
                } else {
                    let a2 = u16::try_from(*a).unwrap_or(AS_TRANS);
                    out.extend_from_slice(&a2.to_be_bytes());
                }
            }
        }
    }

    /// Parses segments; `None` when malformed (RFC 7606 § 7.2: unknown
    /// segment type, zero-length segment, overrun).
    fn parse(v: &[u8], four: bool) -> Option<Self> {
        let mut r = Reader::new(v);
        let mut segments = Vec::new();
        while !r.is_empty() {
            let kind = SegmentType::from(r.u8("AS_PATH segment type").ok()?);
            if matches!(kind, SegmentType::Unknown(_)) {
                return None;
            }
            let n = r.u8("AS_PATH segment length").ok()?;
            if n == 0 {
                return None;
            }
            let mut asns = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                asns.push(if four {
                    r.u32("AS_PATH AS").ok()?
                } else {
                    u32::from(r.u16("AS_PATH AS").ok()?)
                });
            }
            segments.push(AsSegment { kind, asns });
        }
        Some(Self { segments })
    }

    /// Merges a 2-octet AS_PATH with an AS4_PATH ([RFC 6793 § 4.2.3]):
    /// take as many leading ASes from AS_PATH as AS_PATH is longer than
    /// AS4_PATH, then AS4_PATH. If AS4_PATH is longer, it is ignored.
    fn reconcile(self, as4: Self) -> Self {
        let n2 = self.count_all();
        let n4 = as4.count_all();
        if n4 > n2 {
            return self;
        }
        let mut keep = n2 - n4;
        let mut segments = Vec::new();
        for s in self.segments {
            if keep == 0 {
                break;
            }
            if s.kind == SegmentType::Sequence && s.asns.len() > keep {
                segments.push(AsSegment {
                    kind: s.kind,
                    asns: s.asns[..keep].to_vec(),
                });
                keep = 0;
            } else {
                keep = keep.saturating_sub(if s.kind == SegmentType::Set {
                    1
                } else {
                    s.asns.len()
                });
                segments.push(s);
            }
        }
        let mut rest = as4.segments.into_iter().peekable();
        if let (Some(last), Some(first)) = (segments.last_mut(), rest.peek())
            && last.kind == SegmentType::Sequence
            && first.kind == SegmentType::Sequence
            && last.asns.len() + first.asns.len() <= 255
        {
            last.asns.extend_from_slice(&first.asns);
            rest.next();
        }
        segments.extend(rest);
        Self { segments }
    }

    fn count_all(&self) -> usize {
        self.segments
            .iter()
            .map(|s| {
                if s.kind == SegmentType::Set {
                    1
                } else {
                    s.asns.len()
                }
            })
            .sum()
    }
}

impl fmt::Display for AsPath {
    /// `64512 65000 {1 2}`, as the logs' `asPath` field shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.segments {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let list = s
                .asns
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ");
            match s.kind {
                SegmentType::Sequence => f.write_str(&list)?,
                SegmentType::Set => write!(f, "{{{list}}}")?,
                SegmentType::ConfedSequence => write!(f, "({list})")?,
                _ => write!(f, "[{list}]")?,
            }
        }
        Ok(())
    }
}

/// MP_REACH_NLRI ([RFC 4760 § 3]) for IPv4 or IPv6 unicast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    /// Address family.
    pub afi: Afi,
    /// Subsequent address family.
    pub safi: Safi,
    /// Next hop: one address, or for IPv6 a global and a link-local one
    /// (RFC 2545 § 3).
    pub next_hops: Vec<IpAddr>,
    /// Reachable prefixes.
    pub nlri: Vec<IpNet>,
}

/// MP_UNREACH_NLRI ([RFC 4760 § 4]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    /// Address family.
    pub afi: Afi,
    /// Subsequent address family.
    pub safi: Safi,
    /// Withdrawn prefixes.
    pub withdrawn: Vec<IpNet>,
}

/// An attribute we do not interpret, kept to pass on (optional transitive).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    /// Flags as received (the Partial bit is set when passing it on).
    pub flags: u8,
    /// Type code.
    pub type_code: u8,
    /// Value.
    pub value: Vec<u8>,
}

/// The path attributes of an UPDATE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathAttributes {
    /// ORIGIN.
    pub origin: Option<Origin>,
    /// AS_PATH (merged with AS4_PATH on 2-octet sessions).
    pub as_path: Option<AsPath>,
    /// NEXT_HOP for IPv4 NLRI.
    pub next_hop: Option<Ipv4Addr>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (internal peers only).
    pub local_pref: Option<u32>,
    /// ATOMIC_AGGREGATE.
    pub atomic_aggregate: bool,
    /// AGGREGATOR: AS and address.
    pub aggregator: Option<(u32, Ipv4Addr)>,
    /// COMMUNITIES (RFC 1997).
    pub communities: Vec<u32>,
    /// MP_REACH_NLRI.
    pub mp_reach: Option<MpReach>,
    /// MP_UNREACH_NLRI.
    pub mp_unreach: Option<MpUnreach>,
    /// Optional attributes we do not interpret.
    pub other: Vec<RawAttribute>,
}

/// How UPDATE bodies are read and written on one session: decided by the
/// capabilities both sides sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    /// 4-octet AS numbers in AS_PATH / AGGREGATOR (RFC 6793).
    pub four_octet_as: bool,
    /// The peer is external (eBGP): LOCAL_PREF is discarded, confederation
    /// segments are malformed (RFC 7606 § 7.2, § 7.5).
    pub external: bool,
}

impl Default for Codec {
    fn default() -> Self {
        Self {
            four_octet_as: true,
            external: true,
        }
    }
}

/// An UPDATE message ([RFC 4271 § 4.3]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// Withdrawn IPv4 routes.
    pub withdrawn: Vec<Ipv4Net>,
    /// Path attributes.
    pub attributes: PathAttributes,
    /// IPv4 NLRI.
    pub nlri: Vec<Ipv4Net>,
    /// Attributes dropped by RFC 7606 attribute discard while parsing (type
    /// codes). Never emitted.
    pub discarded: Vec<u8>,
}

/// What RFC 7606 says to do with a bad UPDATE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// Send this NOTIFICATION and reset the session.
    #[error("session reset: {0}")]
    SessionReset(Notification),
    /// Withdraw every prefix the message names; keep the session (RFC 7606
    /// § 2). `notification` is what RFC 4271 alone would have sent.
    #[error("treat-as-withdraw ({} prefixes): {notification}", withdrawn.len())]
    TreatAsWithdraw {
        /// Every prefix in the message (withdrawn, NLRI, MP reach/unreach).
        withdrawn: Vec<IpNet>,
        /// The RFC 4271 error this replaces, for the log.
        notification: Notification,
    },
}

/// An error in a received message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Send this NOTIFICATION and close.
    #[error("bad message, notify {0}")]
    Notify(Notification),
    /// A bad UPDATE (RFC 7606 action).
    #[error("bad UPDATE: {0}")]
    Update(UpdateError),
}

impl MessageError {
    fn header(sub: u8, data: &[u8]) -> Self {
        Self::Notify(Notification::with_data(ErrorCode::MessageHeader, sub, data))
    }

    fn bad_length(len: usize) -> Self {
        let l = u16::try_from(len).unwrap_or(u16::MAX);
        Self::header(header_subcode::BAD_MESSAGE_LENGTH, &l.to_be_bytes())
    }
}

/// A ROUTE-REFRESH message (RFC 2918).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    /// Address family.
    pub afi: Afi,
    /// Subtype (RFC 7313; 0 = normal request).
    pub subtype: u8,
    /// Subsequent address family.
    pub safi: Safi,
}

/// Any BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "UPDATE is the common message; boxing it would allocate once more per UPDATE"
)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH.
    RouteRefresh(RouteRefresh),
}

fn prefix_wire_len(len: u8) -> usize {
    1 + usize::from(len).div_ceil(8)
}

fn emit_prefix(out: &mut Vec<u8>, net: IpNet) {
    let len = net.prefix_len();
    out.push(len);
    let n = usize::from(len).div_ceil(8);
    match net.network() {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..n]),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..n]),
    }
}

/// Parses a run of prefixes of one family; `None` when malformed (prefix
/// length beyond the family's, or overrun), which RFC 7606 § 5.3 makes a
/// session reset.
fn parse_prefixes(buf: &[u8], afi: Afi) -> Option<Vec<IpNet>> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while !r.is_empty() {
        let len = r.u8("prefix length").ok()?;
        let bytes = r.take(usize::from(len).div_ceil(8), "prefix").ok()?;
        let net = match afi {
            Afi::Ipv4 => {
                let mut a = [0u8; 4];
                a.get_mut(..bytes.len())?.copy_from_slice(bytes);
                IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len).ok()?.trunc())
            }
            Afi::Ipv6 => {
                let mut a = [0u8; 16];
                a.get_mut(..bytes.len())?.copy_from_slice(bytes);
                IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), len).ok()?.trunc())
            }
            Afi::Unknown(_) => return None,
        };
        out.push(net);
    }
    Some(out)
}

fn v4_only(nets: Vec<IpNet>) -> Vec<Ipv4Net> {
    nets.into_iter()
        .filter_map(|n| match n {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        })
        .collect()
}

fn emit_attr(out: &mut Vec<u8>, mut fl: u8, ty: AttrType, value: &[u8]) {
    if value.len() > 255 {
        fl |= flags::EXTENDED_LENGTH;
    } else {
        fl &= !flags::EXTENDED_LENGTH;
    }
    out.push(fl);
    out.push(ty.into());
    if fl & flags::EXTENDED_LENGTH != 0 {
        out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
    } else {
        out.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
    }
    out.extend_from_slice(value);
}

const WELL_KNOWN: u8 = flags::TRANSITIVE;
const OPT_TRANS: u8 = flags::OPTIONAL | flags::TRANSITIVE;
const OPT_NON_TRANS: u8 = flags::OPTIONAL;

impl PathAttributes {
    fn emit(&self, out: &mut Vec<u8>, codec: Codec) {
        let mut v = Vec::new();
        if let Some(o) = self.origin {
            emit_attr(out, WELL_KNOWN, AttrType::Origin, &[o.into()]);
        }
        let mut as4: Option<&AsPath> = None;
        if let Some(p) = &self.as_path {
            v.clear();
            p.emit(&mut v, codec.four_octet_as);
            emit_attr(out, WELL_KNOWN, AttrType::AsPath, &v);
            if !codec.four_octet_as && p.needs_as4() {
                as4 = Some(p);
            }
        }
        if let Some(nh) = self.next_hop {
            emit_attr(out, WELL_KNOWN, AttrType::NextHop, &nh.octets());
        }
        if let Some(m) = self.med {
            emit_attr(out, OPT_NON_TRANS, AttrType::Med, &m.to_be_bytes());
        }
        if let Some(lp) = self.local_pref {
            emit_attr(out, WELL_KNOWN, AttrType::LocalPref, &lp.to_be_bytes());
        }
        if self.atomic_aggregate {
            emit_attr(out, WELL_KNOWN, AttrType::AtomicAggregate, &[]);
        }
        let mut as4_aggr = None;
        if let Some((asn, addr)) = self.aggregator {
            v.clear();
            if codec.four_octet_as {
                v.extend_from_slice(&asn.to_be_bytes());
            } else {
                v.extend_from_slice(&u16::try_from(asn).unwrap_or(AS_TRANS).to_be_bytes());
                if asn > u32::from(u16::MAX) {
                    as4_aggr = Some((asn, addr));
                }
            }
            v.extend_from_slice(&addr.octets());
            emit_attr(out, OPT_TRANS, AttrType::Aggregator, &v);
        }
        if !self.communities.is_empty() {
            v.clear();
            for c in &self.communities {
                v.extend_from_slice(&c.to_be_bytes());
            }
            emit_attr(out, OPT_TRANS, AttrType::Communities, &v);
        }
        if let Some(mp) = &self.mp_reach {
            v.clear();
            v.extend_from_slice(&u16::from(mp.afi).to_be_bytes());
            v.push(mp.safi.into());
            let nh_len: usize = mp
                .next_hops
                .iter()
                .map(|a| if a.is_ipv4() { 4 } else { 16 })
                .sum();
            v.push(u8::try_from(nh_len).unwrap_or(u8::MAX));
            for a in &mp.next_hops {
                match a {
                    IpAddr::V4(a) => v.extend_from_slice(&a.octets()),
                    IpAddr::V6(a) => v.extend_from_slice(&a.octets()),
                }
            }
            v.push(0); // reserved
            for n in &mp.nlri {
                emit_prefix(&mut v, *n);
            }
            emit_attr(out, OPT_NON_TRANS, AttrType::MpReachNlri, &v);
        }
        if let Some(mp) = &self.mp_unreach {
            v.clear();
            v.extend_from_slice(&u16::from(mp.afi).to_be_bytes());
            v.push(mp.safi.into());
            for n in &mp.withdrawn {
                emit_prefix(&mut v, *n);
            }
            emit_attr(out, OPT_NON_TRANS, AttrType::MpUnreachNlri, &v);
        }
        if let Some(p) = as4 {
            v.clear();
            p.emit(&mut v, true);
            emit_attr(out, OPT_TRANS, AttrType::As4Path, &v);
        }
        if let Some((asn, addr)) = as4_aggr {
            v.clear();
            v.extend_from_slice(&asn.to_be_bytes());
            v.extend_from_slice(&addr.octets());
            emit_attr(out, OPT_TRANS, AttrType::As4Aggregator, &v);
        }
        for a in &self.other {
            emit_attr(
                out,
                a.flags | flags::PARTIAL,
                AttrType::from(a.type_code),
                &a.value,
            );
        }
    }

    fn wire_len(&self, codec: Codec) -> usize {
        let mut v = Vec::new();
        self.emit(&mut v, codec);
        v.len()
    }
}

/// Every prefix a (possibly malformed) UPDATE names, for treat-as-withdraw.
fn all_prefixes(u: &Update) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = u.withdrawn.iter().map(|n| IpNet::V4(*n)).collect();
    out.extend(u.nlri.iter().map(|n| IpNet::V4(*n)));
    if let Some(mp) = &u.attributes.mp_reach {
        out.extend(mp.nlri.iter().copied());
    }
    if let Some(mp) = &u.attributes.mp_unreach {
        out.extend(mp.withdrawn.iter().copied());
    }
    out
}

impl Update {
    /// The End-of-RIB marker for a family (RFC 4724 § 2): an empty UPDATE
    /// for IPv4 unicast, an empty `MP_UNREACH_NLRI` otherwise.
    #[must_use]
    pub fn end_of_rib(afi: Afi, safi: Safi) -> Self {
        if afi == Afi::Ipv4 && safi == Safi::Unicast {
            return Self::default();
        }
        Self {
            attributes: PathAttributes {
                mp_unreach: Some(MpUnreach {
                    afi,
                    safi,
                    withdrawn: Vec::new(),
                }),
                ..PathAttributes::default()
            },
            ..Self::default()
        }
    }

    /// The family this UPDATE marks End-of-RIB for, if it is such a marker.
    #[must_use]
    pub fn as_end_of_rib(&self) -> Option<(Afi, Safi)> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        let a = &self.attributes;
        if *a == PathAttributes::default() {
            return Some((Afi::Ipv4, Safi::Unicast));
        }
        match &a.mp_unreach {
            Some(mp)
                if mp.withdrawn.is_empty()
                    && *a
                        == (PathAttributes {
                            mp_unreach: a.mp_unreach.clone(),
                            ..PathAttributes::default()
                        }) =>
            {
                Some((mp.afi, mp.safi))
            }
            _ => None,
        }
    }

    /// Body length when emitted with `codec`.
    #[must_use]
    pub fn body_len(&self, codec: Codec) -> usize {
        4 + self
            .withdrawn
            .iter()
            .map(|n| prefix_wire_len(n.prefix_len()))
            .sum::<usize>()
            + self.attributes.wire_len(codec)
            + self
                .nlri
                .iter()
                .map(|n| prefix_wire_len(n.prefix_len()))
                .sum::<usize>()
    }

    fn emit_body(&self, out: &mut Vec<u8>, codec: Codec) {
        let mut w = Vec::new();
        for n in &self.withdrawn {
            emit_prefix(&mut w, IpNet::V4(*n));
        }
        out.extend_from_slice(&u16::try_from(w.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&w);
        let mut a = Vec::new();
        self.attributes.emit(&mut a, codec);
        out.extend_from_slice(&u16::try_from(a.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&a);
        for n in &self.nlri {
            emit_prefix(out, IpNet::V4(*n));
        }
    }

    /// Parses an UPDATE body (after the header) with the RFC 7606 rules.
    ///
    /// # Errors
    /// The [`UpdateError`] action to take.
    pub fn parse_body(body: &[u8], codec: Codec) -> Result<Self, UpdateError> {
        let reset = |sub: u8| UpdateError::SessionReset(Notification::new(ErrorCode::Update, sub));
        let mut r = Reader::new(body);
        let wlen = r
            .u16("withdrawn routes length")
            .map_err(|_| reset(update_subcode::MALFORMED_ATTRIBUTE_LIST))?;
        let wbuf = r
            .take(usize::from(wlen), "withdrawn routes")
            .map_err(|_| reset(update_subcode::MALFORMED_ATTRIBUTE_LIST))?;
        let alen = r
            .u16("total path attribute length")
            .map_err(|_| reset(update_subcode::MALFORMED_ATTRIBUTE_LIST))?;
        let abuf = r
            .take(usize::from(alen), "path attributes")
            .map_err(|_| reset(update_subcode::MALFORMED_ATTRIBUTE_LIST))?;
        let nbuf = r.rest();
        // RFC 7606 § 5.3: a malformed prefix in either field resets.
        let withdrawn = v4_only(
            parse_prefixes(wbuf, Afi::Ipv4)
                .ok_or_else(|| reset(update_subcode::INVALID_NETWORK_FIELD))?,
        );
        let nlri = v4_only(
            parse_prefixes(nbuf, Afi::Ipv4)
                .ok_or_else(|| reset(update_subcode::INVALID_NETWORK_FIELD))?,
        );
        let mut u = Self {
            withdrawn,
            nlri,
            ..Self::default()
        };
        // Attribute errors that only need treat-as-withdraw are collected
        // while parsing continues, so MP_REACH/MP_UNREACH prefixes are known.
        let mut twa: Option<Notification> = None;
        let mut seen = [false; 256];
        let mut as4_path: Option<AsPath> = None;
        let mut as4_aggr: Option<(u32, Ipv4Addr)> = None;
        let mut a = Reader::new(abuf);
        while !a.is_empty() {
            // RFC 7606 § 4: if the attribute header or value overruns the
            // attribute field, the NLRI cannot be located: session reset.
            let overrun = || reset(update_subcode::MALFORMED_ATTRIBUTE_LIST);
            let fl = a.u8("attribute flags").map_err(|_| overrun())?;
            let ty_raw = a.u8("attribute type").map_err(|_| overrun())?;
            let len = if fl & flags::EXTENDED_LENGTH != 0 {
                usize::from(a.u16("attribute length").map_err(|_| overrun())?)
            } else {
                usize::from(a.u8("attribute length").map_err(|_| overrun())?)
            };
            let v = a.take(len, "attribute value").map_err(|_| overrun())?;
            let ty = AttrType::from(ty_raw);
            let mp = matches!(ty, AttrType::MpReachNlri | AttrType::MpUnreachNlri);
            // RFC 7606 § 3 g: repeated attributes: MP_* reset, others keep
            // the first.
            if seen[usize::from(ty_raw)] {
                if mp {
                    return Err(reset(update_subcode::MALFORMED_ATTRIBUTE_LIST));
                }
                u.discarded.push(ty_raw);
                continue;
            }
            seen[usize::from(ty_raw)] = true;
            // Flags check (RFC 4271 § 6.3, RFC 7606 § 3 c): the optional and
            // transitive bits must match the type.
            let expected = match ty {
                AttrType::Origin
                | AttrType::AsPath
                | AttrType::NextHop
                | AttrType::LocalPref
                | AttrType::AtomicAggregate => Some(WELL_KNOWN),
                AttrType::Med | AttrType::MpReachNlri | AttrType::MpUnreachNlri => {
                    Some(OPT_NON_TRANS)
                }
                AttrType::Aggregator
                | AttrType::Communities
                | AttrType::As4Path
                | AttrType::As4Aggregator => Some(OPT_TRANS),
                AttrType::Unknown(_) => None,
            };
            let mask = flags::OPTIONAL | flags::TRANSITIVE;
            let flags_ok = expected.is_none_or(|e| fl & mask == e);
            let bad = |sub: u8| Notification::with_data(ErrorCode::Update, sub, &[fl, ty_raw]);
            match ty {
                AttrType::Origin => match v {
                    [o] if flags_ok && *o <= 2 => u.attributes.origin = Some(Origin::from(*o)),
                    _ => {
                        twa.get_or_insert(bad(update_subcode::INVALID_ORIGIN));
                    }
                },
                AttrType::AsPath => match AsPath::parse(v, codec.four_octet_as) {
                    Some(p)
                        if flags_ok
                            && !(codec.external
                                && p.segments.iter().any(|s| {
                                    matches!(
                                        s.kind,
                                        SegmentType::ConfedSequence | SegmentType::ConfedSet
                                    )
                                })) =>
                    {
                        u.attributes.as_path = Some(p);
                    }
                    _ => {
                        twa.get_or_insert(bad(update_subcode::MALFORMED_AS_PATH));
                    }
                },
                AttrType::NextHop => match v {
                    [a, b, c, d] if flags_ok => {
                        u.attributes.next_hop = Some(Ipv4Addr::new(*a, *b, *c, *d));
                    }
                    _ => {
                        twa.get_or_insert(bad(update_subcode::ATTRIBUTE_LENGTH));
                    }
                },
                AttrType::Med => match <[u8; 4]>::try_from(v) {
                    Ok(b) if flags_ok => u.attributes.med = Some(u32::from_be_bytes(b)),
                    _ => {
                        twa.get_or_insert(bad(update_subcode::ATTRIBUTE_LENGTH));
                    }
                },
                AttrType::LocalPref => match <[u8; 4]>::try_from(v) {
                    // RFC 7606 § 7.5: from an external peer, discard.
                    _ if codec.external => u.discarded.push(ty_raw),
                    Ok(b) if flags_ok => u.attributes.local_pref = Some(u32::from_be_bytes(b)),
                    _ => {
                        twa.get_or_insert(bad(update_subcode::ATTRIBUTE_LENGTH));
                    }
                },
                AttrType::AtomicAggregate => {
                    if v.is_empty() && flags_ok {
                        u.attributes.atomic_aggregate = true;
                    } else {
                        u.discarded.push(ty_raw);
                    }
                }
                AttrType::Aggregator => {
                    let alen = if codec.four_octet_as { 8 } else { 6 };
                    if v.len() == alen && flags_ok {
                        let mut r = Reader::new(v);
                        let asn = if codec.four_octet_as {
                            r.u32("AGGREGATOR AS").ok()
                        } else {
                            r.u16("AGGREGATOR AS").ok().map(u32::from)
                        };
                        let addr = r.ipv4("AGGREGATOR address").ok();
                        u.attributes.aggregator = asn.zip(addr);
                    } else {
                        u.discarded.push(ty_raw);
                    }
                }
                AttrType::Communities => {
                    if v.len() % 4 == 0 && flags_ok {
                        u.attributes.communities = v
                            .chunks_exact(4)
                            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                            .collect();
                    } else {
                        twa.get_or_insert(bad(update_subcode::OPTIONAL_ATTRIBUTE));
                    }
                }
                AttrType::MpReachNlri => {
                    if !flags_ok {
                        return Err(UpdateError::SessionReset(bad(
                            update_subcode::ATTRIBUTE_FLAGS,
                        )));
                    }
                    match parse_mp_reach(v) {
                        Some(Some(mp)) => u.attributes.mp_reach = Some(mp),
                        // A family we did not negotiate: ignore it.
                        Some(None) => u.discarded.push(ty_raw),
                        None => {
                            return Err(UpdateError::SessionReset(bad(
                                update_subcode::OPTIONAL_ATTRIBUTE,
                            )));
                        }
                    }
                }
                AttrType::MpUnreachNlri => {
                    if !flags_ok {
                        return Err(UpdateError::SessionReset(bad(
                            update_subcode::ATTRIBUTE_FLAGS,
                        )));
                    }
                    match parse_mp_unreach(v) {
                        Some(Some(mp)) => u.attributes.mp_unreach = Some(mp),
                        Some(None) => u.discarded.push(ty_raw),
                        None => {
                            return Err(UpdateError::SessionReset(bad(
                                update_subcode::OPTIONAL_ATTRIBUTE,
                            )));
                        }
                    }
                }
                AttrType::As4Path => {
                    // RFC 6793 § 4.1: a NEW speaker ignores AS4_PATH from a
                    // NEW speaker; malformed ones are discarded (RFC 7606 §
                    // 7.2 via RFC 6793 § 6).
                    match AsPath::parse(v, true) {
                        Some(p) if flags_ok && !codec.four_octet_as => as4_path = Some(p),
                        _ => u.discarded.push(ty_raw),
                    }
                }
                AttrType::As4Aggregator => match <[u8; 8]>::try_from(v) {
                    Ok(b) if flags_ok && !codec.four_octet_as => {
                        as4_aggr = Some((
                            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                            Ipv4Addr::new(b[4], b[5], b[6], b[7]),
                        ));
                    }
                    _ => u.discarded.push(ty_raw),
                },
                AttrType::Unknown(_) => {
                    if fl & flags::OPTIONAL == 0 {
                        // Unrecognized well-known attribute (RFC 4271 § 6.3).
                        return Err(UpdateError::SessionReset(Notification::with_data(
                            ErrorCode::Update,
                            update_subcode::UNRECOGNIZED_WELL_KNOWN,
                            &[fl, ty_raw],
                        )));
                    }
                    if fl & flags::TRANSITIVE != 0 {
                        u.attributes.other.push(RawAttribute {
                            flags: fl & !flags::EXTENDED_LENGTH,
                            type_code: ty_raw,
                            value: v.to_vec(),
                        });
                    }
                    // Unknown optional non-transitive: quietly ignored.
                }
            }
        }
        // RFC 6793 § 4.2.3: merge AS4_PATH / AS4_AGGREGATOR on a 2-octet
        // session. AS4_AGGREGATOR only applies with AGGREGATOR = AS_TRANS.
        if let Some(p4) = as4_path {
            let trans_aggr = u
                .attributes
                .aggregator
                .is_some_and(|(a, _)| a == u32::from(AS_TRANS));
            if (u.attributes.aggregator.is_none() || trans_aggr)
                && let Some(p) = u.attributes.as_path.take()
            {
                u.attributes.as_path = Some(p.reconcile(p4));
            }
        }
        if let Some(ag) = as4_aggr
            && u.attributes
                .aggregator
                .is_some_and(|(a, _)| a == u32::from(AS_TRANS))
        {
            u.attributes.aggregator = Some(ag);
        }
        // RFC 4271 § 6.3 / RFC 7606 § 3 d: mandatory attributes when there
        // is NLRI to install.
        let a = &u.attributes;
        let has_nlri =
            !u.nlri.is_empty() || a.mp_reach.as_ref().is_some_and(|m| !m.nlri.is_empty());
        if twa.is_none() && has_nlri {
            let missing = if a.origin.is_none() {
                Some(AttrType::Origin)
            } else if a.as_path.is_none() {
                Some(AttrType::AsPath)
            } else if !u.nlri.is_empty() && a.next_hop.is_none() {
                Some(AttrType::NextHop)
            } else {
                None
            };
            if let Some(m) = missing {
                twa = Some(Notification::with_data(
                    ErrorCode::Update,
                    update_subcode::MISSING_WELL_KNOWN,
                    &[m.into()],
                ));
            }
        }
        if let Some(notification) = twa {
            return Err(UpdateError::TreatAsWithdraw {
                withdrawn: all_prefixes(&u),
                notification,
            });
        }
        Ok(u)
    }
}

/// `None`: malformed (reset); `Some(None)`: a family we do not handle.
fn parse_mp_reach(v: &[u8]) -> Option<Option<MpReach>> {
    let mut r = Reader::new(v);
    let afi = Afi::from(r.u16("MP_REACH AFI").ok()?);
    let safi = Safi::from(r.u8("MP_REACH SAFI").ok()?);
    let nh_len = r.u8("MP_REACH next hop length").ok()?;
    let nh = r.take(usize::from(nh_len), "MP_REACH next hop").ok()?;
    let _reserved = r.u8("MP_REACH reserved").ok()?;
    if safi != Safi::Unicast || matches!(afi, Afi::Unknown(_)) {
        return Some(None);
    }
    let mut h = Reader::new(nh);
    let next_hops = match (afi, nh_len) {
        (Afi::Ipv4, 4) => vec![IpAddr::V4(h.ipv4("next hop").ok()?)],
        (Afi::Ipv6, 16) => vec![IpAddr::V6(h.ipv6("next hop").ok()?)],
        (Afi::Ipv6, 32) => vec![
            IpAddr::V6(h.ipv6("global next hop").ok()?),
            IpAddr::V6(h.ipv6("link-local next hop").ok()?),
        ],
        _ => return None,
    };
    let nlri = parse_prefixes(r.rest(), afi)?;
    Some(Some(MpReach {
        afi,
        safi,
        next_hops,
        nlri,
    }))
}

fn parse_mp_unreach(v: &[u8]) -> Option<Option<MpUnreach>> {
    let mut r = Reader::new(v);
    let afi = Afi::from(r.u16("MP_UNREACH AFI").ok()?);
    let safi = Safi::from(r.u8("MP_UNREACH SAFI").ok()?);
    if safi != Safi::Unicast || matches!(afi, Afi::Unknown(_)) {
        return Some(None);
    }
    let withdrawn = parse_prefixes(r.rest(), afi)?;
    Some(Some(MpUnreach {
        afi,
        safi,
        withdrawn,
    }))
}

impl Message {
    /// The message type.
    #[must_use]
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Open(_) => MessageType::Open,
            Self::Update(_) => MessageType::Update,
            Self::Notification(_) => MessageType::Notification,
            Self::Keepalive => MessageType::Keepalive,
            Self::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }

    /// Total length on the wire, header included.
    #[must_use]
    pub fn buffer_len(&self, codec: Codec) -> usize {
        HEADER_LEN
            + match self {
                Self::Open(o) => o.body_len(),
                Self::Update(u) => u.body_len(codec),
                Self::Notification(n) => 2 + n.data.len(),
                Self::Keepalive => 0,
                Self::RouteRefresh(_) => 4,
            }
    }

    /// Appends the message to `out`. The caller keeps messages within
    /// [`MAX_MESSAGE_LEN`] (the session splits UPDATEs).
    pub fn emit(&self, out: &mut Vec<u8>, codec: Codec) {
        let start = out.len();
        out.extend_from_slice(&[0xff; 16]);
        out.extend_from_slice(&[0, 0]);
        out.push(self.message_type().into());
        match self {
            Self::Open(o) => o.emit_body(out),
            Self::Update(u) => u.emit_body(out, codec),
            Self::Notification(n) => {
                out.push(n.code.into());
                out.push(n.subcode);
                out.extend_from_slice(&n.data);
            }
            Self::Keepalive => {}
            Self::RouteRefresh(rr) => {
                out.extend_from_slice(&u16::from(rr.afi).to_be_bytes());
                out.push(rr.subtype);
                out.push(rr.safi.into());
            }
        }
        let len = u16::try_from(out.len() - start).unwrap_or(u16::MAX);
        out[start + 16..start + 18].copy_from_slice(&len.to_be_bytes());
    }

    /// The message as bytes.
    #[must_use]
    pub fn to_bytes(&self, codec: Codec) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.buffer_len(codec));
        self.emit(&mut v, codec);
        v
    }

    /// How many bytes the message at the start of `buf` occupies, once its
    /// header is complete: `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// A header error (bad marker, bad length).
    pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, MessageError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        if buf[..16].iter().any(|b| *b != 0xff) {
            return Err(MessageError::header(
                header_subcode::CONNECTION_NOT_SYNCHRONIZED,
                &[],
            ));
        }
        let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
        if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
            return Err(MessageError::bad_length(len));
        }
        Ok(Some(len))
    }

    /// Parses one complete message (header included).
    ///
    /// # Errors
    /// [`MessageError`] with the NOTIFICATION to send or the RFC 7606 action.
    pub fn parse(buf: &[u8], codec: Codec) -> Result<Self, MessageError> {
        let len = Self::frame_len(buf)?.ok_or_else(|| MessageError::bad_length(buf.len()))?;
        if len != buf.len() {
            return Err(MessageError::bad_length(buf.len()));
        }
        let ty = MessageType::from(buf[18]);
        let body = &buf[HEADER_LEN..];
        // RFC 4271 § 6.1: per-type minimum (and KEEPALIVE exact) lengths.
        let min = match ty {
            MessageType::Open => 29,
            MessageType::Update => 23,
            MessageType::Notification => 21,
            MessageType::Keepalive => 19,
            MessageType::RouteRefresh => 23,
            MessageType::Unknown(t) => {
                return Err(MessageError::header(header_subcode::BAD_MESSAGE_TYPE, &[t]));
            }
        };
        if len < min
            || (ty == MessageType::Keepalive && len != 19)
            || (ty == MessageType::RouteRefresh && len != 23)
        {
            return Err(MessageError::bad_length(len));
        }
        Ok(match ty {
            MessageType::Open => Self::Open(Open::parse_body(body)?),
            MessageType::Update => {
                Self::Update(Update::parse_body(body, codec).map_err(MessageError::Update)?)
            }
            MessageType::Notification => Self::Notification(Notification {
                code: ErrorCode::from(body[0]),
                subcode: body[1],
                data: body[2..].to_vec(),
            }),
            MessageType::Keepalive => Self::Keepalive,
            MessageType::RouteRefresh => Self::RouteRefresh(RouteRefresh {
                afi: Afi::from(u16::from_be_bytes([body[0], body[1]])),
                subtype: body[2],
                safi: Safi::from(body[3]),
            }),
            MessageType::Unknown(t) => {
                return Err(MessageError::header(header_subcode::BAD_MESSAGE_TYPE, &[t]));
            }
        })
    }
}
