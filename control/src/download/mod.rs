//! Customer gateway configuration download (spec §12.3 step "download the
//! configuration file", §15): the settings the *customer* device needs for
//! both tunnels of one connection, in that device's own syntax.
//!
//! | [`Device`] | output |
//! | --- | --- |
//! | `generic` | a plain text sheet with every value a device needs |
//! | `strongswan` | `swanctl.conf` (strongSwan ≥ 5.8), XFRM interfaces |
//! | `cisco-ios` | IOS-XE (CSR1000v / Catalyst 8000v): IKEv2 proposal/policy/keyring/profile, IPsec profile, `interface Tunnel` (VTI) |
//! | `cisco-asa` | ASA 9.8+: IKEv2 policies, IPsec proposal/profile, tunnel-group, `interface Tunnel` (route-based VTI) |
//! | `juniper-srx` | Junos `set` commands: `security ike/ipsec`, `st0` units, zones |
//! | `fortinet` | FortiOS CLI: `vpn ipsec phase1-interface/phase2-interface`, `system interface`, firewall policies |
//! | `palo-alto` | PAN-OS `set` commands: crypto profiles, IKE gateway, tunnel interface, virtual router |
//! | `mikrotik` | RouterOS 7: `/ip ipsec profile/peer/identity/proposal/policy` (policy-based: RouterOS has no VTI) |
//! | `windows` | Windows Server RRAS PowerShell: `Add-VpnS2SInterface -CustomPolicy` (spec §15.4) |
//!
//! Every file is rendered from the connection's real values: both tunnels'
//! outside addresses, pre-shared keys and inside addresses, the IKE
//! version, the phase 1 / phase 2 algorithm and DH group lists in the
//! tunnel's preference order (strongest first, as our proposals are),
//! lifetimes, the DPD settings, BGP (dynamic routing) or static routes
//! (static routing), the tunnel MTU / TCP MSS (spec §14.1, §14.3) and the
//! firewall openings for IKE, ESP and NAT-T (spec §14.4). A value a vendor
//! cannot express (a DH group it lacks, a second PFS group where it takes
//! one) is left out with a comment line in the output saying so, never
//! silently.
//!
//! Pure: renders text from the configuration, reads nothing. The output
//! contains the pre-shared keys; callers decide who may see it.

mod cisco_asa;
mod cisco_ios;
mod fortinet;
mod generic;
mod juniper;
mod mikrotik;
mod palo_alto;
mod strongswan;
#[cfg(test)]
mod tests;
mod windows;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use strongswan::{
    esp_proposals, ike_proposals, ikev1_proposals, strongswan_dh, strongswan_encryption,
    strongswan_integrity,
};

use crate::config::{
    ApplianceConfig, BgpOptions, DhGroup, EncryptionAlgorithm, IkeVersion, IntegrityAlgorithm,
    RoutingType, TunnelInsideIpVersion, TunnelOptions, VpnConnection,
    inside::{inside_ipv4_hosts, inside_ipv6_hosts},
};

/// Which device the configuration is for. Spelled on the wire and the
/// command line as [`Device::as_str`] gives (`cisco-ios`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Device {
    /// Plain text sheet.
    Generic,
    /// strongSwan `swanctl.conf`.
    Strongswan,
    /// Cisco IOS-XE (CSR1000v, Catalyst 8000v), IKEv2 + VTI.
    CiscoIos,
    /// Cisco ASA 9.8+, IKEv2 + route-based VTI.
    CiscoAsa,
    /// Juniper SRX (Junos `set` commands), `st0` interfaces.
    JuniperSrx,
    /// Fortinet FortiGate (FortiOS CLI), interface-mode IPsec.
    Fortinet,
    /// Palo Alto Networks firewall (PAN-OS `set` commands).
    PaloAlto,
    /// MikroTik RouterOS 7, policy-based.
    Mikrotik,
    /// Windows Server RRAS (PowerShell).
    Windows,
}

impl Device {
    /// Every device, in the order the help lists them.
    pub const ALL: &'static [Self] = &[
        Self::Generic,
        Self::Strongswan,
        Self::CiscoIos,
        Self::CiscoAsa,
        Self::JuniperSrx,
        Self::Fortinet,
        Self::PaloAlto,
        Self::Mikrotik,
        Self::Windows,
    ];

    /// The spelling on the wire and the command line.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::Strongswan => "strongswan",
            Self::CiscoIos => "cisco-ios",
            Self::CiscoAsa => "cisco-asa",
            Self::JuniperSrx => "juniper-srx",
            Self::Fortinet => "fortinet",
            Self::PaloAlto => "palo-alto",
            Self::Mikrotik => "mikrotik",
            Self::Windows => "windows",
        }
    }

    /// One line saying what the output is, for help texts.
    #[must_use]
    pub const fn description(self) -> &'static str {
        match self {
            Self::Generic => "plain text sheet with every value",
            Self::Strongswan => "strongSwan swanctl.conf (XFRM interfaces)",
            Self::CiscoIos => "Cisco IOS-XE / CSR1000v: IKEv2, VTI (interface Tunnel)",
            Self::CiscoAsa => "Cisco ASA 9.8+: IKEv2, route-based VTI",
            Self::JuniperSrx => "Juniper SRX: Junos set commands, st0 units",
            Self::Fortinet => "Fortinet FortiGate: FortiOS CLI, interface-mode IPsec",
            Self::PaloAlto => "Palo Alto PAN-OS: set commands",
            Self::Mikrotik => "MikroTik RouterOS 7: policy-based IPsec",
            Self::Windows => "Windows Server RRAS: PowerShell Add-VpnS2SInterface",
        }
    }

    /// The valid spellings, comma separated.
    #[must_use]
    pub fn names() -> String {
        Self::ALL
            .iter()
            .map(|d| d.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device name that is not one of [`Device::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device {0:?}; valid devices: {names}", names = Device::names())]
pub struct UnknownDevice(pub String);

impl FromStr for Device {
    type Err = UnknownDevice;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|d| d.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownDevice(s.to_owned()))
    }
}

/// Why a configuration cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The connection does not exist.
    #[error("connection {0:?} does not exist")]
    UnknownConnection(String),
    /// A value the device needs is not assigned yet.
    #[error("connection {connection}: {what} is not assigned")]
    Unassigned {
        /// Connection id.
        connection: String,
        /// What is missing.
        what: String,
    },
    /// The tunnel options need something this device's file cannot say.
    #[error("connection {connection}, device {device}: {why}")]
    Unsupported {
        /// Connection id.
        connection: String,
        /// The device asked for.
        device: Device,
        /// What and what to do instead.
        why: String,
    },
}

/// Render the configuration of `connection_id` for `device`.
///
/// # Errors
/// Unknown connection; a value the device needs (tunnel outside address,
/// pre-shared key) is not assigned; or the tunnel allows only IKEv1 and the
/// device's file is written for IKEv2 (Cisco IOS, Cisco ASA, Windows).
pub fn render(
    config: &ApplianceConfig,
    connection_id: &str,
    device: Device,
) -> Result<String, RenderError> {
    let ctx = Ctx::new(config, connection_id)?;
    if matches!(
        device,
        Device::CiscoIos | Device::CiscoAsa | Device::Windows
    ) && let Some(t) = ctx.tunnels.iter().find(|t| !t.ikev2())
    {
        return Err(RenderError::Unsupported {
            connection: connection_id.to_owned(),
            device,
            why: format!(
                "tunnel {} allows only IKEv1; this device's file is written for IKEv2 \
                 (spec §14.2: use IKEv2): add ikev2 to the tunnel's ike_versions, \
                 or use --device generic",
                t.n
            ),
        });
    }
    if device == Device::Strongswan
        && let Some(t) = ctx
            .tunnels
            .iter()
            .find(|t| !t.ikev2() && ikev1_proposals(t.opts).is_none())
    {
        return Err(RenderError::Unsupported {
            connection: connection_id.to_owned(),
            device,
            why: format!(
                "tunnel {} allows only IKEv1 and no AES-CBC cipher, integrity algorithm and \
                 DH group strongSwan can name in phase 1 (IKEv1 has no AES-GCM there): add \
                 aes128 or aes256 to its phase1_encryption_algorithms, or ikev2 to its ike_versions",
                t.n
            ),
        });
    }
    Ok(match device {
        Device::Generic => generic::render(&ctx),
        Device::Strongswan => strongswan::render(&ctx),
        Device::CiscoIos => cisco_ios::render(&ctx),
        Device::CiscoAsa => cisco_asa::render(&ctx),
        Device::JuniperSrx => juniper::render(&ctx),
        Device::Fortinet => fortinet::render(&ctx),
        Device::PaloAlto => palo_alto::render(&ctx),
        Device::Mikrotik => mikrotik::render(&ctx),
        Device::Windows => windows::render(&ctx),
    })
}

/// Everything a renderer needs, resolved once.
pub(crate) struct Ctx<'a> {
    pub(crate) config: &'a ApplianceConfig,
    pub(crate) conn: &'a VpnConnection,
    /// The customer gateway's outside address, when known.
    pub(crate) cgw_addr: Option<IpAddr>,
    /// The customer gateway's ASN (dynamic routing).
    pub(crate) cgw_asn: Option<u32>,
    pub(crate) tunnels: Vec<TunnelView<'a>>,
    /// Tunnel MTU and TCP MSS for the customer device.
    pub(crate) mtu: Mtu,
}

impl<'a> Ctx<'a> {
    fn new(config: &'a ApplianceConfig, connection_id: &str) -> Result<Self, RenderError> {
        let conn = config
            .connections
            .iter()
            .find(|c| c.id == connection_id)
            .ok_or_else(|| RenderError::UnknownConnection(connection_id.to_owned()))?;
        let unassigned = |what: String| RenderError::Unassigned {
            connection: connection_id.to_owned(),
            what,
        };
        let cgw = config
            .customer_gateways
            .iter()
            .find(|g| g.id == conn.customer_gateway_id);
        let mut tunnels = Vec::new();
        for (i, t) in conn.tunnels.iter().enumerate() {
            let outside = t
                .outside_ip_address
                .ok_or_else(|| unassigned(format!("tunnels[{i}].outside_ip_address")))?;
            let psk = t
                .pre_shared_key
                .as_ref()
                .ok_or_else(|| unassigned(format!("tunnels[{i}].pre_shared_key")))?;
            let inside_v4 = t.inside_ipv4_cidr.map(|n| {
                let (a, c) = inside_ipv4_hosts(n);
                Inside {
                    appliance: a.into(),
                    customer: c.into(),
                    prefix_len: n.prefix_len(),
                }
            });
            let inside_v6 = (conn.tunnel_inside_ip_version == TunnelInsideIpVersion::Ipv6)
                .then_some(t.inside_ipv6_cidr)
                .flatten()
                .map(|n| {
                    let (a, c) = inside_ipv6_hosts(n);
                    Inside {
                        appliance: a.into(),
                        customer: c.into(),
                        prefix_len: n.prefix_len(),
                    }
                });
            let inside = inside_v4
                .iter()
                .chain(inside_v6.iter())
                .map(|x| {
                    (
                        x.appliance.to_string(),
                        x.customer.to_string(),
                        x.prefix_len,
                    )
                })
                .collect();
            tunnels.push(TunnelView {
                index: i,
                n: i + 1,
                opts: t,
                outside_addr: outside,
                outside: outside.to_string(),
                psk: psk.dangerous_as_str(),
                inside,
                inside_v4,
                inside_v6,
            });
        }
        let mtu = Mtu::for_tunnels(&conn.tunnels);
        Ok(Self {
            config,
            conn,
            cgw_addr: cgw.and_then(|g| g.ip_address),
            cgw_asn: cgw.and_then(|g| g.bgp_asn),
            tunnels,
            mtu,
        })
    }

    /// The customer gateway's address as strongSwan spells "any".
    pub(crate) fn cgw_ip_or_any(&self) -> String {
        self.cgw_addr
            .map_or_else(|| "%any".to_owned(), |a| a.to_string())
    }

    /// The customer gateway's address, or a placeholder to replace.
    pub(crate) fn cgw_ip_or_placeholder(&self) -> String {
        self.cgw_addr
            .map_or_else(|| "CUSTOMER_OUTSIDE_IP".to_owned(), |a| a.to_string())
    }

    /// The customer gateway's ASN, or a placeholder to replace.
    pub(crate) fn cgw_asn_text(&self) -> String {
        self.cgw_asn
            .map_or_else(|| "CUSTOMER_ASN".to_owned(), |a| a.to_string())
    }

    pub(crate) fn dynamic(&self) -> bool {
        self.conn.routing == RoutingType::Dynamic
    }

    pub(crate) fn bgp(&self) -> BgpOptions {
        self.conn.bgp_options()
    }

    pub(crate) fn appliance_asn(&self) -> u32 {
        self.config.gateway.asn
    }

    pub(crate) fn inside_v6(&self) -> bool {
        self.conn.tunnel_inside_ip_version == TunnelInsideIpVersion::Ipv6
    }

    /// The networks behind the appliance, of the connection's inside
    /// family: what a static-routing customer device routes into the
    /// tunnels.
    pub(crate) fn appliance_networks(&self) -> Vec<IpNet> {
        let v6 = self.inside_v6();
        self.config
            .gateway
            .local_networks
            .iter()
            .copied()
            .filter(|n| matches!(n, IpNet::V6(_)) == v6)
            .collect()
    }

    /// Traffic selectors as (customer side, appliance side). The
    /// customer's side is `local_*` in the connection (spec §3.4); on the
    /// customer device it is the local side.
    pub(crate) fn selectors(&self) -> (IpNet, IpNet) {
        let c = self.conn;
        match c.tunnel_inside_ip_version {
            TunnelInsideIpVersion::Ipv4 => (
                c.local_ipv4_network_cidr.into(),
                c.remote_ipv4_network_cidr.into(),
            ),
            TunnelInsideIpVersion::Ipv6 => (
                c.local_ipv6_network_cidr.into(),
                c.remote_ipv6_network_cidr.into(),
            ),
        }
    }

    /// The header every vendor file starts with (in the vendor's comment
    /// syntax `c`).
    pub(crate) fn header(&self, c: &str, device: Device) -> String {
        let mut s = String::new();
        let conn = self.conn;
        line(
            &mut s,
            format!(
                "{c} {} configuration for customer gateway {} ({})",
                device.description(),
                conn.customer_gateway_id,
                self.cgw_ip_or_placeholder()
            ),
        );
        line(
            &mut s,
            format!(
                "{c} VPN connection {} to gateway {} (ASN {}), {} routing",
                conn.id,
                self.config.gateway.id,
                self.appliance_asn(),
                conn.routing
            ),
        );
        line(
            &mut s,
            format!("{c} Contains the pre-shared keys: keep this file private."),
        );
        for t in &self.tunnels {
            let inside = t
                .inside_v4
                .iter()
                .chain(t.inside_v6.iter())
                .map(|i| format!("customer {}, appliance {}", i.customer_cidr(), i.appliance))
                .collect::<Vec<_>>()
                .join("; ");
            line(
                &mut s,
                format!(
                    "{c} Tunnel {}: appliance outside {}, inside {inside}",
                    t.n, t.outside
                ),
            );
        }
        line(&mut s, format!("{c} {}", self.mtu.comment()));
        line(
            &mut s,
            format!(
                "{c} Allow between this device and both appliance outside addresses: \
                 UDP 500 (IKE), UDP 4500 (NAT-T), IP protocol 50 (ESP) (spec §14.4)."
            ),
        );
        s
    }
}

/// One tunnel, resolved.
pub(crate) struct TunnelView<'a> {
    pub(crate) index: usize,
    /// Tunnel number, 1 or 2.
    pub(crate) n: usize,
    pub(crate) opts: &'a TunnelOptions,
    pub(crate) outside_addr: IpAddr,
    pub(crate) outside: String,
    pub(crate) psk: &'a str,
    /// (appliance side, customer side, prefix length) per family.
    pub(crate) inside: Vec<(String, String, u8)>,
    pub(crate) inside_v4: Option<Inside>,
    pub(crate) inside_v6: Option<Inside>,
}

impl TunnelView<'_> {
    pub(crate) fn ikev2(&self) -> bool {
        self.opts.ike_versions.contains(&IkeVersion::Ikev2)
    }

    /// Seconds between DPD probes on the customer side, and the misses
    /// after which it declares the appliance dead: probes every 10 s (the
    /// interval strongSwan's file uses), as many misses as fit in the
    /// appliance's DPD timeout, at least 3.
    pub(crate) fn dpd(&self) -> (u32, u32) {
        (
            DPD_INTERVAL_SECS,
            self.opts
                .dpd_timeout_secs
                .div_ceil(DPD_INTERVAL_SECS)
                .max(3),
        )
    }

    /// A comment stating the appliance's DPD behaviour.
    pub(crate) fn dpd_comment(&self) -> String {
        format!(
            "appliance side: DPD timeout {} s, action {}",
            self.opts.dpd_timeout_secs, self.opts.dpd_timeout_action
        )
    }
}

/// Customer-side DPD probe interval.
pub(crate) const DPD_INTERVAL_SECS: u32 = 10;

/// Inside addresses of one family in one tunnel.
#[derive(Clone, Copy)]
pub(crate) struct Inside {
    pub(crate) appliance: IpAddr,
    pub(crate) customer: IpAddr,
    pub(crate) prefix_len: u8,
}

impl Inside {
    pub(crate) fn customer_cidr(&self) -> String {
        format!("{}/{}", self.customer, self.prefix_len)
    }

    /// The netmask (IPv4 only).
    pub(crate) fn netmask(&self) -> String {
        match self.customer {
            IpAddr::V4(_) => {
                let bits = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                std::net::Ipv4Addr::from(bits).to_string()
            }
            IpAddr::V6(_) => self.prefix_len.to_string(),
        }
    }
}

/// Dotted netmask of an IPv4 prefix, prefix length of an IPv6 one.
pub(crate) fn net_and_mask(n: &IpNet) -> (String, String) {
    match n {
        IpNet::V4(v) => (v.network().to_string(), v.netmask().to_string()),
        IpNet::V6(v) => (v.network().to_string(), v.prefix_len().to_string()),
    }
}

/// Tunnel MTU and TCP MSS for the customer device.
///
/// Spec §14.1 asks for a tunnel interface MTU of 1399 bytes; §14.3 gives,
/// per algorithm and NAT-T, the largest inner MTU an outer 1500 bytes
/// allows (1446 for GCM without NAT-T down to 1406 for CBC/SHA2-512 with
/// NAT-T). The device does not know which algorithm will be negotiated or
/// whether NAT-T will be in use, so the limit is the smallest over every
/// allowed phase 2 combination with NAT-T; the MTU is 1399 unless that
/// limit is lower (it never is with the spec's algorithms), and the MSS is
/// MTU − 40 (IPv4) / MTU − 60 (IPv6), as §14.3 derives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mtu {
    pub(crate) mtu: u16,
    /// The smallest §14.3 MTU over the allowed phase 2 algorithms, NAT-T.
    pub(crate) algorithm_limit: u16,
    pub(crate) mss_v4: u16,
    pub(crate) mss_v6: u16,
}

/// Spec §14.1: "The interface MTU should be set to 1399 bytes."
pub(crate) const TUNNEL_INTERFACE_MTU: u16 = 1399;

/// Spec §14.3 table: the MTU for one algorithm pair.
pub(crate) const fn spec_mtu(
    enc: EncryptionAlgorithm,
    integ: Option<IntegrityAlgorithm>,
    nat_t: bool,
) -> u16 {
    if enc.is_aead() {
        return if nat_t { 1438 } else { 1446 };
    }
    match (integ, nat_t) {
        (Some(IntegrityAlgorithm::Sha2_384), _) => 1422,
        (Some(IntegrityAlgorithm::Sha2_512), false) => 1422,
        (Some(IntegrityAlgorithm::Sha2_512), true) => 1406,
        (_, false) => 1438,
        (_, true) => 1422,
    }
}

impl Mtu {
    fn for_tunnels(tunnels: &[TunnelOptions]) -> Self {
        let mut limit = 1446;
        for t in tunnels {
            for &e in &t.phase2_encryption_algorithms {
                if e.is_aead() {
                    limit = limit.min(spec_mtu(e, None, true));
                } else {
                    for &i in &t.phase2_integrity_algorithms {
                        limit = limit.min(spec_mtu(e, Some(i), true));
                    }
                }
            }
        }
        let mtu = TUNNEL_INTERFACE_MTU.min(limit);
        Self {
            mtu,
            algorithm_limit: limit,
            mss_v4: mtu - 40,
            mss_v6: mtu - 60,
        }
    }

    fn comment(&self) -> String {
        format!(
            "Tunnel MTU {} (spec §14.1; the allowed phase 2 algorithms fit {} with NAT-T, §14.3), \
             TCP MSS {} (IPv4) / {} (IPv6).",
            self.mtu, self.algorithm_limit, self.mss_v4, self.mss_v6
        )
    }
}

/// Append `text` and a newline.
pub(crate) fn line(s: &mut String, text: impl AsRef<str>) {
    s.push_str(text.as_ref());
    s.push('\n');
}

/// Split `groups` into those `name` maps and those it does not, keeping
/// the order.
pub(crate) fn map_groups<T>(
    groups: &[DhGroup],
    name: impl Fn(DhGroup) -> Option<T>,
) -> (Vec<T>, Vec<DhGroup>) {
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for &g in groups {
        match name(g) {
            Some(n) => kept.push(n),
            None => dropped.push(g),
        }
    }
    (kept, dropped)
}

/// "DH groups 17, 18 are not supported by <vendor>; left out" (or nothing).
pub(crate) fn groups_left_out(
    s: &mut String,
    c: &str,
    what: &str,
    vendor: &str,
    dropped: &[DhGroup],
) {
    if dropped.is_empty() {
        return;
    }
    let nums = dropped
        .iter()
        .map(|g| g.number().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    line(
        s,
        format!("{c} Left out ({what}): DH group(s) {nums}: {vendor} does not support them."),
    );
}

/// A note that only the first PFS group can be configured.
pub(crate) fn pfs_left_out(s: &mut String, c: &str, tunnel: usize, vendor: &str, rest: &[DhGroup]) {
    if rest.is_empty() {
        return;
    }
    let nums = rest
        .iter()
        .map(|g| g.number().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    line(
        s,
        format!(
            "{c} Left out (tunnel {tunnel}): phase 2 (PFS) DH group(s) {nums}: {vendor} takes one \
             PFS group; the appliance's first is used."
        ),
    );
}

/// The encryption algorithms split into (AEAD, CBC), order kept.
pub(crate) fn split_aead(
    algs: &[EncryptionAlgorithm],
) -> (Vec<EncryptionAlgorithm>, Vec<EncryptionAlgorithm>) {
    algs.iter().partition(|a| a.is_aead())
}
