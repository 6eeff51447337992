//! Enumerated option values, spelled exactly as the requirements spell them.
//!
//! Every enum here has one canonical spelling per value (the spec's, e.g.
//! `AES128-GCM-16`, `SHA2-256`, `ikev2`, `PublicIpv4`). `Display` prints it,
//! `FromStr` parses it (ASCII case-insensitively, so `aes128-gcm-16` is
//! accepted on the CLI and in files, and printed back canonically), and serde
//! uses the same pair, so a value round-trips through TOML unchanged.
//!
//! Diffie-Hellman groups are IANA registry numbers and follow the workspace
//! rule for registry numbers: [`DhGroup::Unknown`] keeps a number we do not
//! know, so parsing never fails on it; validation then reports it with the
//! field path and the allowed set.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Error from parsing an enumerated option value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {what}; allowed: {allowed}")]
#[non_exhaustive]
pub struct UnknownValue {
    /// What was being parsed, e.g. "encryption algorithm".
    pub what: &'static str,
    /// The text given.
    pub value: String,
    /// The canonical spellings, comma separated.
    pub allowed: String,
}

/// Declares a closed enum with canonical spellings and the
/// `Display`/`FromStr`/serde implementations that use them.
macro_rules! spelled_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident : $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $spelling:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in the order the spec lists them.
            pub const ALL: &'static [Self] = &[ $( Self::$variant, )+ ];

            /// The canonical spelling.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $spelling, )+
                }
            }

            /// The canonical spellings of every value, comma separated.
            #[must_use]
            pub fn allowed() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str().eq_ignore_ascii_case(s))
                    .ok_or_else(|| UnknownValue {
                        what: $what,
                        value: s.to_owned(),
                        allowed: Self::allowed(),
                    })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "one of: {}", $name::allowed())
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(|e: UnknownValue| E::custom(e))
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

spelled_enum! {
    /// Phase 1 / phase 2 encryption algorithm (spec §3.6). `AES128`/`AES256`
    /// are AES-CBC (RFC 3602); the GCM variants have a 16-byte ICV
    /// (RFC 4106 / RFC 5282) and need no separate integrity algorithm.
    pub enum EncryptionAlgorithm : "encryption algorithm" {
        /// AES-128-CBC.
        Aes128 => "AES128",
        /// AES-256-CBC.
        Aes256 => "AES256",
        /// AES-128-GCM with a 16-byte ICV.
        Aes128Gcm16 => "AES128-GCM-16",
        /// AES-256-GCM with a 16-byte ICV.
        Aes256Gcm16 => "AES256-GCM-16",
    }
}

impl EncryptionAlgorithm {
    /// Every value in the default preference order: the AEADs first, the
    /// longer key first within each kind.
    pub const PREFERENCE: &'static [Self] = &[
        Self::Aes256Gcm16,
        Self::Aes128Gcm16,
        Self::Aes256,
        Self::Aes128,
    ];

    /// Whether the algorithm is an AEAD (GCM), which needs no integrity
    /// algorithm.
    #[must_use]
    pub const fn is_aead(self) -> bool {
        matches!(self, Self::Aes128Gcm16 | Self::Aes256Gcm16)
    }
}

spelled_enum! {
    /// Phase 1 / phase 2 integrity algorithm (spec §3.6): HMAC with the
    /// named hash, truncated as RFC 2404 / RFC 4868 define.
    pub enum IntegrityAlgorithm : "integrity algorithm" {
        /// HMAC-SHA1-96.
        Sha1 => "SHA1",
        /// HMAC-SHA2-256-128.
        Sha2_256 => "SHA2-256",
        /// HMAC-SHA2-384-192.
        Sha2_384 => "SHA2-384",
        /// HMAC-SHA2-512-256.
        Sha2_512 => "SHA2-512",
    }
}

impl IntegrityAlgorithm {
    /// Every value in the default preference order: SHA2-256 (the usual
    /// pairing, and the PRF every IKEv2 peer has), the longer SHA-2
    /// digests, SHA-1 last.
    pub const PREFERENCE: &'static [Self] =
        &[Self::Sha2_256, Self::Sha2_384, Self::Sha2_512, Self::Sha1];
}

spelled_enum! {
    /// IKE protocol version (spec §3.2). IKEv1 is Main Mode only.
    pub enum IkeVersion : "IKE version" {
        /// IKEv1 (RFC 2409), Main Mode only.
        Ikev1 => "ikev1",
        /// IKEv2 (RFC 7296).
        Ikev2 => "ikev2",
    }
}

spelled_enum! {
    /// What to do when dead peer detection times out (spec §3.1).
    #[derive(Default)]
    pub enum DpdTimeoutAction : "DPD timeout action" {
        /// End the IKE session, stop the tunnel and clear its routes (default).
        #[default]
        Clear => "clear",
        /// Take no action.
        None => "none",
        /// Restart the IKE session.
        Restart => "restart",
    }
}

spelled_enum! {
    /// What the appliance does when a tunnel is set up (spec §3.9, §6).
    #[derive(Default)]
    pub enum StartupAction : "startup action" {
        /// The customer gateway must initiate IKE; we only respond (default).
        #[default]
        Add => "add",
        /// We initiate IKE (IKEv2 only, needs the peer's IP address), and
        /// keep retrying until the tunnel is established.
        Start => "start",
    }
}

spelled_enum! {
    /// Per-tunnel bandwidth class (spec §3.11, §4).
    #[derive(Default)]
    pub enum TunnelBandwidth : "tunnel bandwidth" {
        /// Up to 1.25 Gbps and 140,000 packets/s per tunnel (default).
        #[default]
        Standard => "standard",
        /// Up to 5 Gbps and 400,000 packets/s per tunnel.
        Large => "large",
    }
}

impl TunnelBandwidth {
    /// Maximum bandwidth of the class in bits per second (spec §21.3).
    #[must_use]
    pub const fn max_bits_per_sec(self) -> u64 {
        match self {
            Self::Standard => 1_250_000_000,
            Self::Large => 5_000_000_000,
        }
    }

    /// Maximum packets per second of the class (spec §21.3).
    #[must_use]
    pub const fn max_packets_per_sec(self) -> u32 {
        match self {
            Self::Standard => 140_000,
            Self::Large => 400_000,
        }
    }
}

spelled_enum! {
    /// Output format of a tunnel log (spec §3.12) or of the daemon log.
    pub enum LogFormat : "log format" {
        /// One JSON object per line.
        Json => "json",
        /// Human-readable text.
        Text => "text",
    }
}

spelled_enum! {
    /// Address family of the outside (tunnel) addresses (spec §3.5).
    #[derive(Default)]
    pub enum OutsideIpAddressType : "outside IP address type" {
        /// RFC 1918 / RFC 6598 outside addresses over a private underlay
        /// (Direct Connect-style private IP VPN).
        PrivateIpv4 => "PrivateIpv4",
        /// Public IPv4 outside addresses (default).
        #[default]
        PublicIpv4 => "PublicIpv4",
        /// IPv6 outside addresses.
        Ipv6 => "Ipv6",
    }
}

spelled_enum! {
    /// Address family of the traffic inside a connection's tunnels (spec §3.14).
    #[derive(Default)]
    pub enum TunnelInsideIpVersion : "tunnel inside IP version" {
        /// IPv4 inside (default).
        #[default]
        Ipv4 => "ipv4",
        /// IPv6 inside.
        Ipv6 => "ipv6",
    }
}

spelled_enum! {
    /// Where a connection's pre-shared keys are stored (spec §3.10, §19.1).
    #[derive(Default)]
    pub enum PreSharedKeyStorage : "pre-shared key storage" {
        /// In this configuration file (default).
        #[default]
        Standard => "Standard",
        /// In an external secret store; the keys are not in this file.
        SecretsManager => "SecretsManager",
    }
}

spelled_enum! {
    /// How a connection's routes are exchanged (spec §10.1).
    #[derive(Default)]
    pub enum RoutingType : "routing type" {
        /// Static prefixes configured on the connection.
        Static => "static",
        /// eBGP inside each tunnel (default).
        #[default]
        Dynamic => "dynamic",
    }
}

spelled_enum! {
    /// Which AWS-side gateway's rules the appliance applies (spec §2, §11,
    /// §25.1 "gateway objects as routing-instance profiles").
    ///
    /// Default `transit-gateway`: the kind with the fewest restrictions, and
    /// the one whose per-tunnel bandwidth classes (1.25 / 5 Gbps) are the
    /// appliance's design targets. Operators opt into the stricter
    /// virtual-private-gateway or concentrator rule sets explicitly.
    #[derive(Default)]
    pub enum GatewayKind : "gateway kind" {
        /// Virtual-private-gateway rules: IPv4 only, public outside
        /// addresses, standard bandwidth, no acceleration, static or BGP.
        VirtualPrivateGateway => "virtual-private-gateway",
        /// Transit-gateway rules: IPv4 or IPv6 inside and outside, private
        /// IPv4 outside, large bandwidth, acceleration, static or BGP.
        #[default]
        TransitGateway => "transit-gateway",
        /// VPN concentrator rules (spec §11): BGP only, no private IP VPN,
        /// 100 Mbps per tunnel (standard class only), IPv6 allowed.
        Concentrator => "concentrator",
    }
}

spelled_enum! {
    /// Role of a dataplane port.
    pub enum PortRole : "port role" {
        /// Faces the customer gateways (IKE, ESP, NAT-T).
        Outside => "outside",
        /// Faces the protected networks.
        Inside => "inside",
        /// The exception path into the appliance's kernel (a `net_tap`
        /// device): IKE, BGP and ICMP for our own addresses.
        Kernel => "kernel",
    }
}

spelled_enum! {
    /// Daemon log level.
    #[derive(Default)]
    pub enum LogLevel : "log level" {
        /// Errors only.
        Error => "error",
        /// Warnings and errors.
        Warn => "warn",
        /// Informational (default).
        #[default]
        Info => "info",
        /// Debugging.
        Debug => "debug",
        /// Everything.
        Trace => "trace",
    }
}

/// A Diffie-Hellman group, by its number in the IANA "Transform Type 4 -
/// Key Exchange Method Transform IDs" registry (spec §3.6).
///
/// Names follow RFC 3526 (MODP), RFC 5903 (ECP) and RFC 5114 (MODP with
/// prime-order subgroup, 22–24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DhGroup {
    /// 2: 1024-bit MODP.
    Modp1024,
    /// 5: 1536-bit MODP (phase 2 only).
    Modp1536,
    /// 14: 2048-bit MODP.
    Modp2048,
    /// 15: 3072-bit MODP.
    Modp3072,
    /// 16: 4096-bit MODP.
    Modp4096,
    /// 17: 6144-bit MODP.
    Modp6144,
    /// 18: 8192-bit MODP.
    Modp8192,
    /// 19: 256-bit random ECP.
    Ecp256,
    /// 20: 384-bit random ECP.
    Ecp384,
    /// 21: 521-bit random ECP.
    Ecp521,
    /// 22: 1024-bit MODP with 160-bit prime-order subgroup.
    Modp1024S160,
    /// 23: 2048-bit MODP with 224-bit prime-order subgroup.
    Modp2048S224,
    /// 24: 2048-bit MODP with 256-bit prime-order subgroup.
    Modp2048S256,
    /// A registry number this build does not know.
    Unknown(u16),
}

impl DhGroup {
    /// Groups allowed in phase 1, in spec order: 2, 14–24.
    pub const PHASE1_ALLOWED: &'static [Self] = &[
        Self::Modp1024,
        Self::Modp2048,
        Self::Modp3072,
        Self::Modp4096,
        Self::Modp6144,
        Self::Modp8192,
        Self::Ecp256,
        Self::Ecp384,
        Self::Ecp521,
        Self::Modp1024S160,
        Self::Modp2048S224,
        Self::Modp2048S256,
    ];

    /// Groups allowed in phase 2 (PFS), in spec order: 2, 5, 14–24.
    pub const PHASE2_ALLOWED: &'static [Self] = &[
        Self::Modp1024,
        Self::Modp1536,
        Self::Modp2048,
        Self::Modp3072,
        Self::Modp4096,
        Self::Modp6144,
        Self::Modp8192,
        Self::Ecp256,
        Self::Ecp384,
        Self::Ecp521,
        Self::Modp1024S160,
        Self::Modp2048S224,
        Self::Modp2048S256,
    ];

    /// [`Self::PHASE1_ALLOWED`] in the default preference order: the
    /// NIST curves and 2048-bit MODP first, the larger MODP groups, the
    /// RFC 5114 groups, MODP-1024 last.
    pub const PHASE1_PREFERENCE: &'static [Self] = &[
        Self::Ecp256,
        Self::Ecp384,
        Self::Ecp521,
        Self::Modp2048,
        Self::Modp3072,
        Self::Modp4096,
        Self::Modp6144,
        Self::Modp8192,
        Self::Modp2048S256,
        Self::Modp2048S224,
        Self::Modp1024S160,
        Self::Modp1024,
    ];

    /// [`Self::PHASE2_ALLOWED`] in the default preference order (as
    /// phase 1, with MODP-1536 before MODP-1024).
    pub const PHASE2_PREFERENCE: &'static [Self] = &[
        Self::Ecp256,
        Self::Ecp384,
        Self::Ecp521,
        Self::Modp2048,
        Self::Modp3072,
        Self::Modp4096,
        Self::Modp6144,
        Self::Modp8192,
        Self::Modp2048S256,
        Self::Modp2048S224,
        Self::Modp1024S160,
        Self::Modp1536,
        Self::Modp1024,
    ];

    /// The registry number.
    #[must_use]
    pub const fn number(self) -> u16 {
        match self {
            Self::Modp1024 => 2,
            Self::Modp1536 => 5,
            Self::Modp2048 => 14,
            Self::Modp3072 => 15,
            Self::Modp4096 => 16,
            Self::Modp6144 => 17,
            Self::Modp8192 => 18,
            Self::Ecp256 => 19,
            Self::Ecp384 => 20,
            Self::Ecp521 => 21,
            Self::Modp1024S160 => 22,
            Self::Modp2048S224 => 23,
            Self::Modp2048S256 => 24,
            Self::Unknown(n) => n,
        }
    }

    /// Allowed set rendered for error messages.
    pub(crate) fn render(set: &[Self]) -> String {
        set.iter()
            .map(|g| g.number().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl From<u16> for DhGroup {
    fn from(n: u16) -> Self {
        match n {
            2 => Self::Modp1024,
            5 => Self::Modp1536,
            14 => Self::Modp2048,
            15 => Self::Modp3072,
            16 => Self::Modp4096,
            17 => Self::Modp6144,
            18 => Self::Modp8192,
            19 => Self::Ecp256,
            20 => Self::Ecp384,
            21 => Self::Ecp521,
            22 => Self::Modp1024S160,
            23 => Self::Modp2048S224,
            24 => Self::Modp2048S256,
            n => Self::Unknown(n),
        }
    }
}

impl From<DhGroup> for u16 {
    fn from(g: DhGroup) -> Self {
        g.number()
    }
}

impl fmt::Display for DhGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

impl FromStr for DhGroup {
    type Err = UnknownValue;

    /// Parses the registry number, e.g. `"14"`. Numbers we do not know give
    /// [`DhGroup::Unknown`]; only non-numbers are an error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<u16>()
            .map(Self::from)
            .map_err(|_| UnknownValue {
                what: "Diffie-Hellman group number",
                value: s.to_owned(),
                allowed: Self::render(Self::PHASE2_ALLOWED),
            })
    }
}

impl Serialize for DhGroup {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.number())
    }
}

impl<'de> Deserialize<'de> for DhGroup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for v in EncryptionAlgorithm::ALL {
            assert_eq!(v.to_string().parse::<EncryptionAlgorithm>().unwrap(), *v);
        }
        for v in IntegrityAlgorithm::ALL {
            assert_eq!(v.to_string().parse::<IntegrityAlgorithm>().unwrap(), *v);
        }
        for v in IkeVersion::ALL {
            assert_eq!(v.to_string().parse::<IkeVersion>().unwrap(), *v);
        }
        for v in OutsideIpAddressType::ALL {
            assert_eq!(v.to_string().parse::<OutsideIpAddressType>().unwrap(), *v);
        }
        for n in 0..=u16::MAX {
            let g = DhGroup::from(n);
            assert_eq!(g.number(), n);
            assert_eq!(g.to_string().parse::<DhGroup>().unwrap(), g);
        }
    }

    #[test]
    fn spec_spellings() {
        assert_eq!(
            EncryptionAlgorithm::Aes128Gcm16.to_string(),
            "AES128-GCM-16"
        );
        assert_eq!(IntegrityAlgorithm::Sha2_256.to_string(), "SHA2-256");
        assert_eq!(
            "aes256-gcm-16".parse::<EncryptionAlgorithm>().unwrap(),
            EncryptionAlgorithm::Aes256Gcm16
        );
        let e = "3DES".parse::<EncryptionAlgorithm>().unwrap_err();
        assert!(
            e.to_string()
                .contains("AES128, AES256, AES128-GCM-16, AES256-GCM-16"),
            "{e}"
        );
        assert!("x".parse::<DhGroup>().is_err());
        assert_eq!("31".parse::<DhGroup>().unwrap(), DhGroup::Unknown(31));
    }
}
