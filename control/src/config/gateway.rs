//! Customer gateways (spec §8, §14), ASN rules and address classes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::error::{ConfigError, Errors, finish};

/// Private ASN ranges allowed for the appliance (spec §12.3 step 2, §3.15):
/// 64512–65534 and 4200000000–4294967294.
pub const GATEWAY_ASN_RANGES: [(u32, u32); 2] = [(64_512, 65_534), (4_200_000_000, 4_294_967_294)];

/// Default appliance ASN (spec §2, §3.15).
pub const DEFAULT_GATEWAY_ASN: u32 = 64_512;

/// ASNs a customer gateway may not use (spec §8): 7224 (all regions), 9059,
/// 10124 and 17943 (one region each).
///
/// The appliance has no notion of region, so all four are refused: they are
/// the legacy Amazon-side ASNs, and a peer claiming one would collide with
/// set-ups that mirror the service.
pub const RESERVED_CUSTOMER_ASNS: [u32; 4] = [7224, 9059, 10124, 17943];

/// Whether `asn` is an allowed appliance ASN.
#[must_use]
pub fn is_gateway_asn(asn: u32) -> bool {
    GATEWAY_ASN_RANGES
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&asn))
}

/// Why a customer gateway ASN is refused, if it is.
///
/// \[AMBIGUOUS\] §1.2 says 1–65535, §8 says 1–4,294,967,295. 4-byte ASNs are
/// needed (private 4200000000+ ASNs are common), so the range is the 32-bit
/// one minus what the registries forbid on the wire: 0 (RFC 7607), 23456
/// AS_TRANS (RFC 6793), 65535 and 4294967295 (RFC 7300), plus the spec's
/// reserved [`RESERVED_CUSTOMER_ASNS`].
pub(crate) fn customer_asn_problem(asn: u32) -> Option<&'static str> {
    match asn {
        0 => Some("ASN 0 is reserved (RFC 7607); allowed 1..=4294967294"),
        23_456 => Some("ASN 23456 is AS_TRANS (RFC 6793); allowed 1..=4294967294"),
        65_535 | 4_294_967_295 => {
            Some("last ASNs of the 16- and 32-bit spaces are reserved (RFC 7300)")
        }
        a if RESERVED_CUSTOMER_ASNS.contains(&a) => {
            Some("7224, 9059, 10124 and 17943 are reserved for the provider side")
        }
        _ => None,
    }
}

/// Class of an IP address, as far as the configuration rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddrClass {
    /// Usable on the internet.
    Public,
    /// RFC 1918 or RFC 6598 (shared address space) IPv4.
    Private,
    /// Never a valid tunnel endpoint (unspecified, loopback, multicast,
    /// broadcast, link-local, "this network", reserved 240/4, IPv6 ULA,
    /// IPv4-mapped IPv6).
    Unusable(&'static str),
}

/// Classify an address.
///
/// Documentation prefixes (RFC 5737, RFC 3849) count as public: they never
/// reach the internet, so real deployments never meet them, and accepting
/// them lets examples and lab namespaces use them.
pub(crate) fn classify(addr: IpAddr) -> AddrClass {
    match addr {
        IpAddr::V4(a) => classify_v4(a),
        IpAddr::V6(a) => classify_v6(a),
    }
}

fn classify_v4(a: Ipv4Addr) -> AddrClass {
    let o = a.octets();
    if a.is_unspecified() || o[0] == 0 {
        AddrClass::Unusable("\"this network\" 0.0.0.0/8")
    } else if a.is_loopback() {
        AddrClass::Unusable("loopback 127.0.0.0/8")
    } else if a.is_link_local() {
        AddrClass::Unusable("link-local 169.254.0.0/16")
    } else if a.is_multicast() {
        AddrClass::Unusable("multicast 224.0.0.0/4")
    } else if a.is_broadcast() || o[0] >= 240 {
        AddrClass::Unusable("reserved 240.0.0.0/4")
    } else if a.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        AddrClass::Private
    } else {
        AddrClass::Public
    }
}

fn classify_v6(a: Ipv6Addr) -> AddrClass {
    let s = a.segments();
    if a.is_unspecified() {
        AddrClass::Unusable("unspecified ::")
    } else if a.is_loopback() {
        AddrClass::Unusable("loopback ::1")
    } else if a.is_multicast() {
        AddrClass::Unusable("multicast ff00::/8")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        AddrClass::Unusable("link-local fe80::/10")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        AddrClass::Unusable("unique local fc00::/7 (not internet-routable)")
    } else if a.to_ipv4_mapped().is_some() {
        AddrClass::Unusable("IPv4-mapped ::ffff:0:0/96; write the IPv4 address")
    } else {
        AddrClass::Public
    }
}

/// The customer gateway resource: what the appliance knows about a peer
/// device (spec §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerGateway {
    /// Identifier, referenced by connections (e.g. `cgw-0a1b2c`): 1–64
    /// characters from `[A-Za-z0-9-]`.
    pub id: String,
    /// Static outside address of the device (or of the NAT in front of
    /// it). IPv4 or IPv6. Public unless every connection using it has
    /// outside IP type `PrivateIpv4`, which requires RFC 1918 / RFC 6598.
    /// May be absent only when `certificate` is set (spec §8: "either an IP
    /// address or a private certificate"); the peer is then matched by its
    /// certificate identity and can only initiate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<IpAddr>,
    /// BGP ASN of the device, required by dynamic-routing connections.
    ///
    /// \[AMBIGUOUS\] §8 gives a "default ASN 64512" for customer gateways,
    /// which would always collide with the appliance's default ASN 64512
    /// (the two must differ); so there is no default here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_asn: Option<u32>,
    /// Name or ARN of the private certificate (issued under the CA chain the
    /// appliance trusts) the device authenticates with (spec §5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Name of the device, for operators (spec §8 "Device").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
}

/// Longest free-text name accepted (device names, certificate names).
pub(crate) const MAX_NAME_LEN: usize = 255;

/// Check an object identifier: 1–64 characters from `[A-Za-z0-9-]`. The
/// underscore is excluded because log resource ids join the connection id
/// and the tunnel address with one (`vpn-1234abcd_1.2.3.4`, spec §20.3).
pub(crate) fn check_id(errs: &mut Errors<'_>, field: &str, id: &str) {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !ok {
        errs.invalid(
            field,
            format!("{id:?}"),
            "1..=64 characters from [A-Za-z0-9-]",
        );
    }
}

/// Check an optional free-text name: 1–255 printable characters.
pub(crate) fn check_name(errs: &mut Errors<'_>, field: &str, name: Option<&str>) {
    if let Some(n) = name
        && (n.is_empty() || n.chars().count() > MAX_NAME_LEN || n.chars().any(char::is_control))
    {
        errs.invalid(
            field,
            format!("{n:?}"),
            "1..=255 characters, no control characters",
        );
    }
}

impl CustomerGateway {
    /// Check this gateway's own rules.
    ///
    /// # Errors
    /// Every broken rule.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut out = Vec::new();
        self.validate_into(&mut Errors::new("", &mut out));
        finish(out)
    }

    pub(crate) fn validate_into(&self, errs: &mut Errors<'_>) {
        check_id(errs, "id", &self.id);
        match self.ip_address {
            None if self.certificate.is_none() => errs.missing(
                "ip_address",
                "a customer gateway needs an IP address, a certificate, or both",
            ),
            None => {}
            Some(a) => {
                if let AddrClass::Unusable(why) = classify(a) {
                    errs.invalid(
                        "ip_address",
                        a,
                        format!("{why} is not a usable peer address; use the device's static (or NAT) address"),
                    );
                }
            }
        }
        if let Some(asn) = self.bgp_asn
            && let Some(why) = customer_asn_problem(asn)
        {
            errs.not_allowed("bgp_asn", asn, why);
        }
        check_name(errs, "certificate", self.certificate.as_deref());
        check_name(errs, "device_name", self.device_name.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes() {
        let c = |s: &str| classify(s.parse().unwrap());
        assert_eq!(c("198.51.100.7"), AddrClass::Public);
        assert_eq!(c("8.8.8.8"), AddrClass::Public);
        assert_eq!(c("10.1.2.3"), AddrClass::Private);
        assert_eq!(c("172.16.0.1"), AddrClass::Private);
        assert_eq!(c("192.168.1.1"), AddrClass::Private);
        assert_eq!(c("100.64.0.1"), AddrClass::Private);
        assert_eq!(c("100.127.255.254"), AddrClass::Private);
        assert_eq!(c("100.128.0.1"), AddrClass::Public);
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "169.254.1.1",
            "224.0.0.5",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "ff02::1",
            "fd00::1",
            "::ffff:1.2.3.4",
        ] {
            assert!(matches!(c(bad), AddrClass::Unusable(_)), "{bad}");
        }
        assert_eq!(c("2001:db8::1"), AddrClass::Public);
    }

    #[test]
    fn asn_rules() {
        assert!(is_gateway_asn(64_512));
        assert!(is_gateway_asn(65_534));
        assert!(!is_gateway_asn(65_535));
        assert!(!is_gateway_asn(64_511));
        assert!(is_gateway_asn(4_200_000_000));
        assert!(is_gateway_asn(4_294_967_294));
        assert!(!is_gateway_asn(4_199_999_999));
        assert!(!is_gateway_asn(4_294_967_295));
        for ok in [1, 65_000, 65_534, 64_512, 4_294_967_294, 7225] {
            assert_eq!(customer_asn_problem(ok), None, "{ok}");
        }
        for bad in [0, 7224, 9059, 10124, 17943, 23_456, 65_535, 4_294_967_295] {
            assert!(customer_asn_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn gateway_rules() {
        let mut g = CustomerGateway {
            id: "cgw-1".into(),
            ip_address: None,
            bgp_asn: Some(7224),
            certificate: None,
            device_name: Some(String::new()),
        };
        let errs = g.validate().unwrap_err();
        let fields: Vec<_> = errs.iter().map(ConfigError::field).collect();
        assert_eq!(fields, ["ip_address", "bgp_asn", "device_name"]);
        g.certificate = Some("arn:aws:acm:eu-west-1:123:certificate/abc".into());
        g.bgp_asn = Some(65_000);
        g.device_name = None;
        g.validate().unwrap();
        g.id = "cgw_1".into();
        assert_eq!(g.validate().unwrap_err()[0].field(), "id");
    }
}
