//! strongSwan `swanctl.conf` (strongSwan ≥ 5.8): IKEv2, or IKEv1 Main
//! Mode (`version = 1`) for a tunnel whose `ike_versions` allow only
//! IKEv1, PSK, proposals from the tunnel options in strongSwan syntax, route-based (XFRM
//! interfaces, `if_id` per tunnel) with the connection's traffic selectors
//! (default 0.0.0.0/0 both ways), the inside addresses in comments. The e2e
//! test `downloaded_strongswan_config_brings_both_tunnels_up` loads it into
//! charon.

use std::fmt::Write as _;

use super::Ctx;
use crate::config::{
    DhGroup, EncryptionAlgorithm, IntegrityAlgorithm, RoutingType, StartupAction, TunnelOptions,
};

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

/// IKEv1 IKE proposals: the classic proposal of [`ike_proposals`] only
/// (ISAKMP has no AEAD cipher for phase 1, RFC 2409 Appendix A); `None`
/// when the tunnel allows no CBC cipher in phase 1.
#[must_use]
pub fn ikev1_proposals(t: &TunnelOptions) -> Option<String> {
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
    let cbc: Vec<&str> = t
        .phase1_encryption_algorithms
        .iter()
        .filter(|a| !a.is_aead())
        .map(|a| strongswan_encryption(*a))
        .collect();
    (!cbc.is_empty() && !integ.is_empty() && !groups.is_empty())
        .then(|| join(&[cbc.as_slice(), &integ, &groups].concat()))
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

/// The IKE SA's `proposals` for its version.
fn proposals(t: &TunnelOptions, ikev2: bool) -> String {
    if ikev2 {
        ike_proposals(t)
    } else {
        ikev1_proposals(t).unwrap_or_default()
    }
}

pub(super) fn render(ctx: &Ctx<'_>) -> String {
    let (config, conn, tunnels) = (ctx.config, ctx.conn, &ctx.tunnels);
    let cgw_ip = ctx.cgw_ip_or_any();
    let cgw_asn = ctx.cgw_asn;
    let (local_ts, remote_ts) = ctx.selectors();
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
        if t.ikev2() {
            s.push_str("        version = 2\n");
        } else {
            s.push_str(
                "        # IKEv1 Main Mode (the appliance refuses Aggressive Mode)\n        version = 1\n",
            );
        }
        let _ = writeln!(s, "        local_addrs = {cgw_ip}");
        let _ = writeln!(s, "        remote_addrs = {}", t.outside);
        let _ = writeln!(s, "        proposals = {}", proposals(o, t.ikev2()));
        // The appliance runs DPD with its own timeout; the customer side
        // probes every 10 s (spec §3.1 default interval).
        let _ = writeln!(s, "        dpd_delay = 10s");
        let _ = writeln!(
            s,
            "        # appliance DPD timeout: {} s",
            o.dpd_timeout_secs
        );
        if t.ikev2() {
            let _ = writeln!(s, "        rekey_time = {}s", o.phase1_lifetime_secs);
            s.push_str("        encap = no\n        mobike = no\n");
        } else {
            let _ = writeln!(s, "        reauth_time = {}s", o.phase1_lifetime_secs);
            s.push_str("        encap = no\n");
        }
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
