//! Windows Server RRAS (2012 R2 and later), PowerShell: one IKEv2
//! site-to-site interface per tunnel with `Add-VpnS2SInterface
//! -CustomPolicy` (spec §15.4), BGP with `Add-BgpRouter`/`Add-BgpPeer` or
//! static routes through `-IPv4Subnet`/`-IPv6Subnet`.
//!
//! A custom policy holds one value per setting, in the names the cmdlet
//! documents: `-EncryptionMethod AES256|GCMAES256`, `-IntegrityCheckMethod
//! SHA256` (no SHA-512), `-DHGroup Group2|Group14|ECP256|ECP384|Group24`,
//! `-CipherTransformConstants`, `-AuthenticationTransformConstants
//! SHA196|SHA256128|GCMAES256`, `-PfsGroup PFS2|PFS2048|ECP256|ECP384|PFS24`.
//! The file takes the first of each of the tunnel's lists that Windows has
//! and names what that leaves out.

use super::{Ctx, Device, TunnelView, line};
use crate::config::{DhGroup, EncryptionAlgorithm, IntegrityAlgorithm};

const C: &str = "#";

fn enc(a: EncryptionAlgorithm) -> &'static str {
    match a {
        EncryptionAlgorithm::Aes128 => "AES128",
        EncryptionAlgorithm::Aes256 => "AES256",
        EncryptionAlgorithm::Aes128Gcm16 => "GCMAES128",
        _ => "GCMAES256",
    }
}

fn ike_integ(a: IntegrityAlgorithm) -> Option<&'static str> {
    match a {
        IntegrityAlgorithm::Sha1 => Some("SHA1"),
        IntegrityAlgorithm::Sha2_256 => Some("SHA256"),
        IntegrityAlgorithm::Sha2_384 => Some("SHA384"),
        _ => None,
    }
}

fn esp_auth(a: IntegrityAlgorithm) -> Option<&'static str> {
    match a {
        IntegrityAlgorithm::Sha1 => Some("SHA196"),
        IntegrityAlgorithm::Sha2_256 => Some("SHA256128"),
        _ => None,
    }
}

fn dh(g: DhGroup) -> Option<&'static str> {
    Some(match g.number() {
        2 => "Group2",
        14 => "Group14",
        19 => "ECP256",
        20 => "ECP384",
        24 => "Group24",
        _ => return None,
    })
}

fn pfs(g: DhGroup) -> Option<&'static str> {
    Some(match g.number() {
        2 => "PFS2",
        14 => "PFS2048",
        19 => "ECP256",
        20 => "ECP384",
        24 => "PFS24",
        _ => return None,
    })
}

/// The first value `f` maps, and a note naming every other value.
fn pick<T: Copy + std::fmt::Display>(
    s: &mut String,
    t: &TunnelView<'_>,
    what: &str,
    values: &[T],
    f: impl Fn(T) -> Option<&'static str>,
) -> Option<&'static str> {
    let chosen = values.iter().position(|v| f(*v).is_some());
    let rest: Vec<String> = values
        .iter()
        .enumerate()
        .filter(|(k, _)| Some(*k) != chosen)
        .map(|(_, v)| v.to_string())
        .collect();
    if !rest.is_empty() {
        line(
            s,
            format!(
                "{C} Left out (tunnel {}): {what} {}: a custom policy takes one value, one Windows has.",
                t.n,
                rest.join(", ")
            ),
        );
    }
    chosen.and_then(|k| f(values[k]))
}

#[derive(Clone, Copy)]
struct Group(DhGroup);
impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.number())
    }
}

pub(super) fn render(ctx: &Ctx<'_>) -> String {
    let mut s = ctx.header(C, Device::Windows);
    let conn = ctx.conn;
    line(
        &mut s,
        format!(
            "{C} Run in an elevated PowerShell on the Windows Server that is the customer gateway."
        ),
    );
    line(
        &mut s,
        format!(
            "{C} Windows keeps its own IKE SA lifetime and dead-peer timers; they are not set per interface."
        ),
    );
    line(
        &mut s,
        "Install-WindowsFeature RemoteAccess, Routing, RSAT-RemoteAccess-PowerShell",
    );
    line(&mut s, "Install-RemoteAccess -VpnType VpnS2S");
    line(
        &mut s,
        format!("{C} Windows Firewall: allow IKE, NAT-T and ESP from the appliance."),
    );
    for t in &ctx.tunnels {
        line(
            &mut s,
            format!(
                "New-NetFirewallRule -DisplayName \"{}-t{} IKE\" -Direction Inbound -Protocol UDP -LocalPort 500,4500 -RemoteAddress {} -Action Allow",
                conn.id, t.n, t.outside
            ),
        );
        line(
            &mut s,
            format!(
                "New-NetFirewallRule -DisplayName \"{}-t{} ESP\" -Direction Inbound -Protocol 50 -RemoteAddress {} -Action Allow",
                conn.id, t.n, t.outside
            ),
        );
    }
    for t in &ctx.tunnels {
        let o = t.opts;
        let name = format!("{}-t{}", conn.id, t.n);
        line(&mut s, format!("{C} ---- Tunnel {} ----", t.n));
        line(&mut s, format!("{C} {}", t.dpd_comment()));
        let enc1 = pick(
            &mut s,
            t,
            "phase 1 encryption",
            &o.phase1_encryption_algorithms,
            |a| Some(enc(a)),
        );
        let integ1 = pick(
            &mut s,
            t,
            "phase 1 integrity",
            &o.phase1_integrity_algorithms,
            ike_integ,
        );
        let g1: Vec<Group> = o.phase1_dh_groups.iter().map(|g| Group(*g)).collect();
        let dh1 = pick(&mut s, t, "phase 1 DH group", &g1, |g| dh(g.0));
        let enc2 = pick(
            &mut s,
            t,
            "phase 2 encryption",
            &o.phase2_encryption_algorithms,
            |a| Some(enc(a)),
        );
        let auth2 = if o
            .phase2_encryption_algorithms
            .first()
            .is_some_and(|a| a.is_aead())
        {
            enc2
        } else {
            pick(
                &mut s,
                t,
                "phase 2 integrity",
                &o.phase2_integrity_algorithms,
                esp_auth,
            )
        };
        let g2: Vec<Group> = o.phase2_dh_groups.iter().map(|g| Group(*g)).collect();
        let pfs2 = pick(&mut s, t, "phase 2 (PFS) DH group", &g2, |g| pfs(g.0));
        let mut subnets: Vec<String> = Vec::new();
        let mut subnets6: Vec<String> = Vec::new();
        let metric = 10 * t.n;
        if ctx.dynamic() {
            if let Some(i) = t.inside_v4 {
                subnets.push(format!("\"{}/32:{metric}\"", i.appliance));
            }
            if let Some(i) = t.inside_v6 {
                subnets6.push(format!("\"{}/128:{metric}\"", i.appliance));
            }
        } else {
            for n in ctx.appliance_networks() {
                if n.addr().is_ipv4() {
                    subnets.push(format!("\"{n}:{metric}\""));
                } else {
                    subnets6.push(format!("\"{n}:{metric}\""));
                }
            }
        }
        let mut cmd = format!(
            "Add-VpnS2SInterface -Name \"{name}\" -Destination {} -Protocol IKEv2 -AuthenticationMethod PSKOnly -SharedSecret \"{}\"",
            t.outside, t.psk
        );
        if !subnets.is_empty() {
            cmd.push_str(&format!(" -IPv4Subnet @({})", subnets.join(",")));
        }
        if !subnets6.is_empty() {
            cmd.push_str(&format!(" -IPv6Subnet @({})", subnets6.join(",")));
        }
        cmd.push_str(" -CustomPolicy");
        for (flag, v) in [
            ("EncryptionMethod", enc1),
            ("IntegrityCheckMethod", integ1),
            ("DHGroup", dh1),
            ("CipherTransformConstants", enc2),
            ("AuthenticationTransformConstants", auth2),
            ("PfsGroup", pfs2),
        ] {
            if let Some(v) = v {
                cmd.push_str(&format!(" -{flag} {v}"));
            }
        }
        cmd.push_str(&format!(" -SALifeTimeSeconds {}", o.phase2_lifetime_secs));
        line(&mut s, cmd);
        line(
            &mut s,
            format!("Set-VpnS2SInterface -Name \"{name}\" -InitiateConfigPayload $false -Force"),
        );
        line(&mut s, format!("Connect-VpnS2SInterface -Name \"{name}\""));
        line(
            &mut s,
            format!(
                "{C} MSS: Windows clamps TCP MSS on demand-dial interfaces from the interface MTU; tunnel MTU {}.",
                ctx.mtu.mtu
            ),
        );
    }
    line(&mut s, format!("{C} ---- Routing ----"));
    if ctx.dynamic() {
        let b = ctx.bgp();
        line(
            &mut s,
            format!(
                "{C} BGP is sourced from the customer inside addresses: add them to this server (e.g. on a loopback adapter) first:"
            ),
        );
        for t in &ctx.tunnels {
            for i in t.inside_v4.iter().chain(t.inside_v6.iter()) {
                line(
                    &mut s,
                    format!(
                        "{C}   New-NetIPAddress -InterfaceAlias <loopback> -IPAddress {} -PrefixLength {}",
                        i.customer, i.prefix_len
                    ),
                );
            }
        }
        let id = ctx
            .tunnels
            .first()
            .and_then(|t| t.inside_v4)
            .map_or_else(|| "ROUTER_ID".to_owned(), |i| i.customer.to_string());
        line(
            &mut s,
            format!(
                "Add-BgpRouter -BgpIdentifier {id} -LocalASN {}",
                ctx.cgw_asn_text()
            ),
        );
        line(
            &mut s,
            format!("{C} announce your networks with Add-BgpCustomRoute -Network <prefix>"),
        );
        for t in &ctx.tunnels {
            for (k, i) in t.inside_v4.iter().chain(t.inside_v6.iter()).enumerate() {
                line(
                    &mut s,
                    format!(
                        "Add-BgpPeer -Name \"{}-t{}-{}\" -LocalIPAddress {} -PeerIPAddress {} -PeerASN {} -HoldTimeSec {}",
                        conn.id,
                        t.n,
                        k + 1,
                        i.customer,
                        i.appliance,
                        ctx.appliance_asn(),
                        b.hold_time_secs
                    ),
                );
            }
        }
    } else {
        line(
            &mut s,
            format!(
                "{C} Static routing: -IPv4Subnet/-IPv6Subnet above route the appliance's networks into tunnel 1 (metric 10), tunnel 2 (metric 20)."
            ),
        );
    }
    s
}
