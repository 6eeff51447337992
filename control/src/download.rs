//! Customer gateway configuration download (spec §12.3 step "download the
//! configuration file", §15): the settings the *customer* device needs for
//! both tunnels of one connection.
//!
//! * [`Device::Strongswan`]: a `swanctl.conf` (strongSwan ≥ 5.8): IKEv2,
//!   PSK, proposals from the tunnel options in strongSwan syntax, route-based
//!   (XFRM interfaces, `if_id` per tunnel) with the connection's traffic
//!   selectors (default 0.0.0.0/0 both ways), the inside addresses in
//!   comments.
//! * [`Device::Generic`]: a plain text sheet with every value a device
//!   needs, for anything else.
//!
//! Pure: renders text from the configuration, reads nothing. The output
//! contains the pre-shared keys; callers decide who may see it.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::{
    ApplianceConfig, DhGroup, EncryptionAlgorithm, IkeVersion, IntegrityAlgorithm, RoutingType,
    StartupAction, TunnelInsideIpVersion, TunnelOptions, VpnConnection,
    inside::{inside_ipv4_hosts, inside_ipv6_hosts},
};

/// Which device the configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// strongSwan `swanctl.conf`.
    Strongswan,
    /// Plain text sheet.
    Generic,
}

impl Device {
    /// The spelling on the wire and the command line.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Strongswan => "strongswan",
            Self::Generic => "generic",
        }
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
}

/// strongSwan keyword of an encryption algorithm.
#[must_use]
pub const fn strongswan_encryption(a: EncryptionAlgorithm) -> &'static str {
    match a {
        EncryptionAlgorithm::Aes128 => "aes128",
        EncryptionAlgorithm::Aes256 => "aes256",
        EncryptionAlgorithm::Aes128Gcm16 => "aes128gcm16",
        EncryptionAlgorithm::Aes256Gcm16 => "aes256gcm16",
    }
}

/// strongSwan keyword of an integrity algorithm (the PRF is `prf` + this).
#[must_use]
pub const fn strongswan_integrity(a: IntegrityAlgorithm) -> &'static str {
    match a {
        IntegrityAlgorithm::Sha1 => "sha1",
        IntegrityAlgorithm::Sha2_256 => "sha256",
        IntegrityAlgorithm::Sha2_384 => "sha384",
        IntegrityAlgorithm::Sha2_512 => "sha512",
    }
}

/// strongSwan keyword of a DH group (`None` for a group it has no name for).
#[must_use]
pub const fn strongswan_dh(g: DhGroup) -> Option<&'static str> {
    Some(match g {
        DhGroup::Modp1024 => "modp1024",
        DhGroup::Modp1536 => "modp1536",
        DhGroup::Modp2048 => "modp2048",
        DhGroup::Modp3072 => "modp3072",
        DhGroup::Modp4096 => "modp4096",
        DhGroup::Modp6144 => "modp6144",
        DhGroup::Modp8192 => "modp8192",
        DhGroup::Ecp256 => "ecp256",
        DhGroup::Ecp384 => "ecp384",
        DhGroup::Ecp521 => "ecp521",
        DhGroup::Modp1024S160 => "modp1024s160",
        DhGroup::Modp2048S224 => "modp2048s224",
        DhGroup::Modp2048S256 => "modp2048s256",
        DhGroup::Unknown(_) => return None,
    })
}

fn join(parts: &[&str]) -> String {
    parts.join("-")
}

/// IKE proposals: one AEAD proposal (GCM ciphers + PRFs + groups) and one
/// classic proposal (CBC ciphers + integrity + groups); IKEv2 forbids
/// mixing AEAD and non-AEAD transforms in one proposal (RFC 7296 § 3.3).
#[must_use]
pub fn ike_proposals(t: &TunnelOptions) -> String {
    let groups: Vec<&str> = t
        .phase1_dh_groups
        .iter()
        .filter_map(|g| strongswan_dh(*g))
        .collect();
    let integ: Vec<&str> = t
        .phase1_integrity_algorithms
        .iter()
        .map(|a| strongswan_integrity(*a))
        .collect();
    let prfs: Vec<String> = integ.iter().map(|i| format!("prf{i}")).collect();
    let prfs: Vec<&str> = prfs.iter().map(String::as_str).collect();
    let mut proposals = Vec::new();
    let aead: Vec<&str> = t
        .phase1_encryption_algorithms
        .iter()
        .filter(|a| a.is_aead())
        .map(|a| strongswan_encryption(*a))
        .collect();
    if !aead.is_empty() {
        proposals.push(join(&[aead.as_slice(), &prfs, &groups].concat()));
    }
    let cbc: Vec<&str> = t
        .phase1_encryption_algorithms
        .iter()
        .filter(|a| !a.is_aead())
        .map(|a| strongswan_encryption(*a))
        .collect();
    if !cbc.is_empty() {
        proposals.push(join(&[cbc.as_slice(), &integ, &groups].concat()));
    }
    proposals.join(", ")
}

/// ESP proposals, with the phase 2 groups as PFS groups.
#[must_use]
pub fn esp_proposals(t: &TunnelOptions) -> String {
    let groups: Vec<&str> = t
        .phase2_dh_groups
        .iter()
        .filter_map(|g| strongswan_dh(*g))
        .collect();
    let integ: Vec<&str> = t
        .phase2_integrity_algorithms
        .iter()
        .map(|a| strongswan_integrity(*a))
        .collect();
    let mut proposals = Vec::new();
    let aead: Vec<&str> = t
        .phase2_encryption_algorithms
        .iter()
        .filter(|a| a.is_aead())
        .map(|a| strongswan_encryption(*a))
        .collect();
    if !aead.is_empty() {
        proposals.push(join(&[aead.as_slice(), &groups].concat()));
    }
    let cbc: Vec<&str> = t
        .phase2_encryption_algorithms
        .iter()
        .filter(|a| !a.is_aead())
        .map(|a| strongswan_encryption(*a))
        .collect();
    if !cbc.is_empty() && !integ.is_empty() {
        proposals.push(join(&[cbc.as_slice(), &integ, &groups].concat()));
    }
    proposals.join(", ")
}

/// Render the configuration of `connection_id` for `device`.
///
/// # Errors
/// Unknown connection, or a value the device needs (customer gateway
/// address, tunnel outside address, pre-shared key) is not assigned.
pub fn render(
    config: &ApplianceConfig,
    connection_id: &str,
    device: Device,
) -> Result<String, RenderError> {
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
    let cgw_ip = cgw
        .and_then(|g| g.ip_address)
        .map_or_else(|| "%any".to_owned(), |a| a.to_string());
    let mut tunnels = Vec::new();
    for (i, t) in conn.tunnels.iter().enumerate() {
        let outside = t
            .outside_ip_address
            .ok_or_else(|| unassigned(format!("tunnels[{i}].outside_ip_address")))?;
        let psk = t
            .pre_shared_key
            .as_ref()
            .ok_or_else(|| unassigned(format!("tunnels[{i}].pre_shared_key")))?;
        tunnels.push(TunnelView {
            index: i,
            opts: t,
            outside: outside.to_string(),
            psk: psk.dangerous_as_str(),
            inside: inside_lines(conn, t),
        });
    }
    let cgw_asn = cgw.and_then(|g| g.bgp_asn);
    Ok(match device {
        Device::Strongswan => render_strongswan(config, conn, &cgw_ip, cgw_asn, &tunnels),
        Device::Generic => render_generic(config, conn, &cgw_ip, cgw_asn, &tunnels),
    })
}

struct TunnelView<'a> {
    index: usize,
    opts: &'a TunnelOptions,
    outside: String,
    psk: &'a str,
    /// (appliance side, customer side, prefix length) per family.
    inside: Vec<(String, String, u8)>,
}

fn inside_lines(conn: &VpnConnection, t: &TunnelOptions) -> Vec<(String, String, u8)> {
    let mut v = Vec::new();
    if let Some(n) = t.inside_ipv4_cidr {
        let (a, c) = inside_ipv4_hosts(n);
        v.push((a.to_string(), c.to_string(), n.prefix_len()));
    }
    if conn.tunnel_inside_ip_version == TunnelInsideIpVersion::Ipv6
        && let Some(n) = t.inside_ipv6_cidr
    {
        let (a, c) = inside_ipv6_hosts(n);
        v.push((a.to_string(), c.to_string(), n.prefix_len()));
    }
    v
}

fn selectors(conn: &VpnConnection) -> (String, String) {
    // The customer's side is `local_*` in the connection (spec §3.4); on the
    // customer device it is the local side.
    match conn.tunnel_inside_ip_version {
        TunnelInsideIpVersion::Ipv4 => (
            conn.local_ipv4_network_cidr.to_string(),
            conn.remote_ipv4_network_cidr.to_string(),
        ),
        TunnelInsideIpVersion::Ipv6 => (
            conn.local_ipv6_network_cidr.to_string(),
            conn.remote_ipv6_network_cidr.to_string(),
        ),
    }
}

fn render_strongswan(
    config: &ApplianceConfig,
    conn: &VpnConnection,
    cgw_ip: &str,
    cgw_asn: Option<u32>,
    tunnels: &[TunnelView<'_>],
) -> String {
    let (local_ts, remote_ts) = selectors(conn);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# swanctl.conf for customer gateway {} — connection {} to gateway {}",
        conn.customer_gateway_id, conn.id, config.gateway.id
    );
    let _ = writeln!(
        s,
        "# Route-based: each tunnel uses an XFRM interface (if_id = tunnel number), e.g.\n#   ip link add ipsec1 type xfrm dev eth0 if_id 1\n# Contains the pre-shared keys: keep this file private (mode 0600)."
    );
    if conn.routing == RoutingType::Dynamic {
        let _ = writeln!(
            s,
            "# BGP: customer ASN {}, appliance ASN {}, hold time {} s.",
            cgw_asn.map_or_else(|| "(unset)".to_owned(), |a| a.to_string()),
            config.gateway.asn,
            conn.bgp_options().hold_time_secs
        );
    } else {
        let _ = writeln!(
            s,
            "# Static routing: route the appliance-side networks into the XFRM interfaces."
        );
    }
    s.push_str("connections {\n");
    for t in tunnels {
        let n = t.index + 1;
        let o = t.opts;
        let _ = writeln!(
            s,
            "    # Tunnel {n}: appliance outside address {}",
            t.outside
        );
        for (appl, cust, len) in &t.inside {
            let _ = writeln!(
                s,
                "    #   inside: customer gateway {cust}/{len}, appliance {appl}/{len}"
            );
        }
        let _ = writeln!(s, "    {}-tunnel{n} {{", conn.id);
        s.push_str("        version = 2\n");
        let _ = writeln!(s, "        local_addrs = {cgw_ip}");
        let _ = writeln!(s, "        remote_addrs = {}", t.outside);
        let _ = writeln!(s, "        proposals = {}", ike_proposals(o));
        // The appliance runs DPD with its own timeout; the customer side
        // probes every 10 s (spec §3.1 default interval).
        let _ = writeln!(s, "        dpd_delay = 10s");
        let _ = writeln!(
            s,
            "        # appliance DPD timeout: {} s",
            o.dpd_timeout_secs
        );
        let _ = writeln!(s, "        rekey_time = {}s", o.phase1_lifetime_secs);
        s.push_str("        encap = no\n        mobike = no\n");
        let _ = writeln!(s, "        if_id_in = {n}\n        if_id_out = {n}");
        s.push_str("        local {\n            auth = psk\n");
        let _ = writeln!(s, "            id = {cgw_ip}");
        s.push_str("        }\n        remote {\n            auth = psk\n");
        let _ = writeln!(s, "            id = {}", t.outside);
        s.push_str("        }\n        children {\n");
        let _ = writeln!(s, "            {}-tunnel{n} {{", conn.id);
        let _ = writeln!(s, "                local_ts = {local_ts}");
        let _ = writeln!(s, "                remote_ts = {remote_ts}");
        let _ = writeln!(s, "                esp_proposals = {}", esp_proposals(o));
        let rekey = o
            .phase2_lifetime_secs
            .saturating_sub(o.rekey_margin_time_secs);
        let _ = writeln!(s, "                rekey_time = {rekey}s");
        let _ = writeln!(s, "                life_time = {}s", o.phase2_lifetime_secs);
        let rand = u64::from(o.rekey_margin_time_secs) * u64::from(o.rekey_fuzz_percent) / 100;
        let _ = writeln!(s, "                rand_time = {rand}s");
        let _ = writeln!(
            s,
            "                replay_window = {}",
            o.replay_window_packets
        );
        let _ = writeln!(
            s,
            "                if_id_in = {n}\n                if_id_out = {n}"
        );
        s.push_str("                mode = tunnel\n                dpd_action = restart\n");
        let start = if o.startup_action == StartupAction::Start {
            "# the appliance initiates; the customer side may too\n                start_action = trap"
        } else {
            "start_action = start"
        };
        let _ = writeln!(s, "                {start}");
        s.push_str("            }\n        }\n    }\n");
    }
    s.push_str("}\n\nsecrets {\n");
    for t in tunnels {
        let n = t.index + 1;
        let _ = writeln!(s, "    ike-{}-tunnel{n} {{", conn.id);
        let _ = writeln!(s, "        id-1 = {cgw_ip}");
        let _ = writeln!(s, "        id-2 = {}", t.outside);
        let _ = writeln!(s, "        secret = \"{}\"", t.psk);
        s.push_str("    }\n");
    }
    s.push_str("}\n");
    s
}

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_generic(
    config: &ApplianceConfig,
    conn: &VpnConnection,
    cgw_ip: &str,
    cgw_asn: Option<u32>,
    tunnels: &[TunnelView<'_>],
) -> String {
    let (local_ts, remote_ts) = selectors(conn);
    let mut s = String::new();
    let _ = writeln!(s, "VPN connection        {}", conn.id);
    let _ = writeln!(
        s,
        "Customer gateway      {} ({cgw_ip})",
        conn.customer_gateway_id
    );
    let _ = writeln!(s, "Gateway               {}", config.gateway.id);
    let _ = writeln!(s, "Routing               {}", conn.routing);
    let _ = writeln!(
        s,
        "Traffic selectors     customer side {local_ts}, appliance side {remote_ts}"
    );
    if conn.routing == RoutingType::Dynamic {
        let b = conn.bgp_options();
        let _ = writeln!(
            s,
            "BGP                   customer ASN {}, appliance ASN {}, hold time {} s, keepalive {} s",
            cgw_asn.map_or_else(|| "(unset)".to_owned(), |a| a.to_string()),
            config.gateway.asn,
            b.hold_time_secs,
            b.keepalive_secs
        );
    } else {
        let _ = writeln!(s, "Static routes         {}", list(&conn.static_routes));
    }
    for t in tunnels {
        let o = t.opts;
        let _ = writeln!(s, "\nTunnel {}", t.index + 1);
        let _ = writeln!(s, "  Appliance outside address    {}", t.outside);
        let _ = writeln!(s, "  Customer outside address     {cgw_ip}");
        for (appl, cust, len) in &t.inside {
            let _ = writeln!(
                s,
                "  Inside addresses             customer {cust}/{len}, appliance {appl}/{len}"
            );
        }
        let _ = writeln!(s, "  Pre-shared key               {}", t.psk);
        let versions: Vec<&str> = o
            .ike_versions
            .iter()
            .map(|v| match v {
                IkeVersion::Ikev1 => "IKEv1",
                IkeVersion::Ikev2 => "IKEv2",
            })
            .collect();
        let _ = writeln!(s, "  IKE versions                 {}", versions.join(", "));
        let _ = writeln!(
            s,
            "  Phase 1 encryption           {}",
            list(&o.phase1_encryption_algorithms)
        );
        let _ = writeln!(
            s,
            "  Phase 1 integrity            {}",
            list(&o.phase1_integrity_algorithms)
        );
        let groups: Vec<u16> = o.phase1_dh_groups.iter().map(|g| g.number()).collect();
        let _ = writeln!(s, "  Phase 1 DH groups            {}", list(&groups));
        let _ = writeln!(
            s,
            "  Phase 1 lifetime             {} s",
            o.phase1_lifetime_secs
        );
        let _ = writeln!(
            s,
            "  Phase 2 encryption           {}",
            list(&o.phase2_encryption_algorithms)
        );
        let _ = writeln!(
            s,
            "  Phase 2 integrity            {}",
            list(&o.phase2_integrity_algorithms)
        );
        let groups: Vec<u16> = o.phase2_dh_groups.iter().map(|g| g.number()).collect();
        let _ = writeln!(s, "  Phase 2 DH groups (PFS)      {}", list(&groups));
        let _ = writeln!(
            s,
            "  Phase 2 lifetime             {} s",
            o.phase2_lifetime_secs
        );
        let _ = writeln!(
            s,
            "  Rekey margin / fuzz          {} s / {} %",
            o.rekey_margin_time_secs, o.rekey_fuzz_percent
        );
        let _ = writeln!(
            s,
            "  DPD timeout / action         {} s / {}",
            o.dpd_timeout_secs, o.dpd_timeout_action
        );
        let _ = writeln!(
            s,
            "  Replay window                {} packets",
            o.replay_window_packets
        );
        let _ = writeln!(
            s,
            "  Mode                         tunnel, route-based, NAT-T on UDP 4500 when NAT is detected"
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TunnelOptionsPatch;

    fn example() -> ApplianceConfig {
        ApplianceConfig::from_toml_str(include_str!("../examples/appliance.toml")).unwrap()
    }

    #[test]
    fn strongswan_renders_both_tunnels_with_the_options() {
        let cfg = example()
            .modify_tunnel_options(
                "vpn-branch1",
                1,
                TunnelOptionsPatch {
                    phase1_encryption_algorithms: Some(vec![EncryptionAlgorithm::Aes128Gcm16]),
                    phase1_integrity_algorithms: Some(vec![IntegrityAlgorithm::Sha2_256]),
                    phase1_dh_groups: Some(vec![DhGroup::Modp2048]),
                    phase2_encryption_algorithms: Some(vec![EncryptionAlgorithm::Aes128Gcm16]),
                    phase2_dh_groups: Some(vec![DhGroup::Modp2048]),
                    ..TunnelOptionsPatch::default()
                },
            )
            .unwrap();
        let text = render(&cfg, "vpn-branch1", Device::Strongswan).unwrap();
        assert!(text.contains("vpn-branch1-tunnel1 {"), "{text}");
        assert!(text.contains("vpn-branch1-tunnel2 {"), "{text}");
        assert!(text.contains("remote_addrs = 198.51.100.10"));
        assert!(text.contains("remote_addrs = 198.51.100.11"));
        assert!(text.contains("local_addrs = 203.0.113.20"));
        assert!(
            text.contains("proposals = aes128gcm16-prfsha256-modp2048\n"),
            "{text}"
        );
        assert!(
            text.contains("esp_proposals = aes128gcm16-modp2048\n"),
            "{text}"
        );
        // Tunnel 1 as in the example file.
        assert!(text.contains(
            "proposals = aes256gcm16-aes128gcm16-prfsha256-prfsha384-prfsha512-ecp256-ecp384-ecp521-modp2048\n"
        ), "{text}");
        assert!(text.contains("dpd_delay = 10s"));
        assert!(text.contains("rekey_time = 28800s"));
        assert!(text.contains("rekey_time = 3330s"));
        assert!(text.contains("local_ts = 0.0.0.0/0"));
        assert!(text.contains("remote_ts = 0.0.0.0/0"));
        assert!(
            text.contains(
                "#   inside: customer gateway 169.254.21.2/30, appliance 169.254.21.1/30"
            )
        );
        assert!(text.contains("secret = \"Example.key_for_tunnel_1\""));
        assert!(text.contains("secret = \"Example.key_for_tunnel_2\""));
        assert!(text.contains("version = 2"));
        // Balanced braces.
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn default_options_give_separate_aead_and_cbc_proposals() {
        let t = TunnelOptions::default();
        let p = ike_proposals(&t);
        let parts: Vec<&str> = p.split(", ").collect();
        assert_eq!(parts.len(), 2, "{p}");
        // The strongest first (issue 17): GCM, SHA2-256, the curves and
        // MODP-2048 before anything else, MODP-1024 and SHA-1 last.
        assert!(
            parts[0].starts_with("aes256gcm16-aes128gcm16-prfsha256-")
                && parts[0].contains("-ecp256-ecp384-ecp521-modp2048-"),
            "{p}"
        );
        assert!(
            !parts[1].contains("gcm") && parts[1].starts_with("aes256-aes128-sha256-"),
            "{p}"
        );
        assert!(parts[1].ends_with("-modp1024"), "{p}");
        let e = esp_proposals(&t);
        assert!(e.starts_with("aes256gcm16-aes128gcm16-ecp256-"), "{e}");
    }

    #[test]
    fn generic_sheet_and_errors() {
        let cfg = example();
        let text = render(&cfg, "vpn-branch1", Device::Generic).unwrap();
        assert!(text.contains("Tunnel 1") && text.contains("Tunnel 2"));
        assert!(text.contains("Pre-shared key               Example.key_for_tunnel_2"));
        assert!(text.contains("customer 169.254.22.2/30, appliance 169.254.22.1/30"));
        assert_eq!(
            render(&cfg, "vpn-nope", Device::Generic),
            Err(RenderError::UnknownConnection("vpn-nope".into()))
        );
    }
}
