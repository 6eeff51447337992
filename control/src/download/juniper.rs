//! Juniper SRX, Junos `set` commands: `security ike proposal/policy/
//! gateway`, `security ipsec proposal/policy/vpn` bound to `st0` units,
//! zones and host-inbound services, BGP or static routes.
//!
//! A Junos proposal carries one cipher, one hash and one DH group, so the
//! file writes one IKE and one IPsec proposal per cipher (in preference
//! order) with the tunnel's first hash and first group Junos has, and says
//! which values that leaves out. Keywords: `aes-256-gcm`, `aes-256-cbc`,
//! `sha-256`, `hmac-sha-256-128`, `group19`; groups 1, 2, 5, 14, 15, 16,
//! 19, 20, 21, 24. GCM proposals carry no authentication algorithm.

use std::fmt::Write as _;

use super::{Ctx, Device, TunnelView, line};
use crate::config::{DhGroup, EncryptionAlgorithm, IkeVersion, IntegrityAlgorithm};

const C: &str = "#";
const VENDOR: &str = "Junos";

fn group(g: DhGroup) -> Option<String> {
    matches!(g.number(), 1 | 2 | 5 | 14 | 15 | 16 | 19 | 20 | 21 | 24)
        .then(|| format!("group{}", g.number()))
}

fn enc(a: EncryptionAlgorithm) -> &'static str {
    match a {
        EncryptionAlgorithm::Aes128 => "aes-128-cbc",
        EncryptionAlgorithm::Aes256 => "aes-256-cbc",
        EncryptionAlgorithm::Aes128Gcm16 => "aes-128-gcm",
        _ => "aes-256-gcm",
    }
}

fn ike_hash(a: IntegrityAlgorithm) -> &'static str {
    match a {
        IntegrityAlgorithm::Sha1 => "sha1",
        IntegrityAlgorithm::Sha2_256 => "sha-256",
        IntegrityAlgorithm::Sha2_384 => "sha-384",
        _ => "sha-512",
    }
}

fn esp_hash(a: IntegrityAlgorithm) -> &'static str {
    match a {
        IntegrityAlgorithm::Sha1 => "hmac-sha1-96",
        IntegrityAlgorithm::Sha2_256 => "hmac-sha-256-128",
        IntegrityAlgorithm::Sha2_384 => "hmac-sha-384",
        _ => "hmac-sha-512",
    }
}

/// Say which values of a list beyond the first one (or unsupported) are
/// not offered.
fn left_out(s: &mut String, t: &TunnelView<'_>, what: &str, rest: &[String]) {
    if !rest.is_empty() {
        line(
            s,
            format!(
                "{C} Left out (tunnel {}): {what} {}: a {VENDOR} proposal carries one; the first is used.",
                t.n,
                rest.join(", ")
            ),
        );
    }
}

fn unsupported(s: &mut String, t: &TunnelView<'_>, phase: &str, groups: &[DhGroup]) {
    let dropped: Vec<String> = groups
        .iter()
        .filter(|g| group(**g).is_none())
        .map(|g| g.number().to_string())
        .collect();
    if !dropped.is_empty() {
        line(
            s,
            format!(
                "{C} Left out (tunnel {}): {phase} DH group(s) {}: {VENDOR} does not support them.",
                t.n,
                dropped.join(", ")
            ),
        );
    }
}

pub(super) fn render(ctx: &Ctx<'_>) -> String {
    let mut s = ctx.header(C, Device::JuniperSrx);
    let conn = ctx.conn;
    let ext = "ge-0/0/0.0";
    line(
        &mut s,
        format!(
            "{C} {ext} is the outside interface (zone untrust); st0.N go into zone trust. Adjust to your device."
        ),
    );
    for t in &ctx.tunnels {
        let o = t.opts;
        let base = format!("{}-t{}", conn.id, t.n);
        line(&mut s, format!("{C} ---- Tunnel {} ----", t.n));
        // IKE.
        unsupported(&mut s, t, "phase 1", &o.phase1_dh_groups);
        let groups1: Vec<String> = o
            .phase1_dh_groups
            .iter()
            .filter_map(|g| group(*g))
            .collect();
        left_out(
            &mut s,
            t,
            "phase 1 DH groups",
            groups1.get(1..).unwrap_or_default(),
        );
        let hashes: Vec<String> = o
            .phase1_integrity_algorithms
            .iter()
            .map(|a| ike_hash(*a).to_owned())
            .collect();
        left_out(
            &mut s,
            t,
            "phase 1 integrity",
            hashes.get(1..).unwrap_or_default(),
        );
        let mut ike_names = Vec::new();
        for &e in &o.phase1_encryption_algorithms {
            let p = format!("{base}-ike-{}", enc(e));
            let pre = format!("set security ike proposal {p}");
            line(
                &mut s,
                format!("{pre} authentication-method pre-shared-keys"),
            );
            if let Some(g) = groups1.first() {
                line(&mut s, format!("{pre} dh-group {g}"));
            }
            if !e.is_aead()
                && let Some(h) = hashes.first()
            {
                line(&mut s, format!("{pre} authentication-algorithm {h}"));
            }
            line(&mut s, format!("{pre} encryption-algorithm {}", enc(e)));
            line(
                &mut s,
                format!("{pre} lifetime-seconds {}", o.phase1_lifetime_secs),
            );
            ike_names.push(p);
        }
        let pol = format!("set security ike policy {base}");
        line(
            &mut s,
            format!("{pol} proposals [ {} ]", ike_names.join(" ")),
        );
        line(
            &mut s,
            format!("{pol} pre-shared-key ascii-text \"{}\"", t.psk),
        );
        let gw = format!("set security ike gateway {base}");
        line(&mut s, format!("{gw} ike-policy {base}"));
        line(&mut s, format!("{gw} address {}", t.outside));
        let (interval, misses) = t.dpd();
        line(&mut s, format!("{C} {}", t.dpd_comment()));
        line(
            &mut s,
            format!("{gw} dead-peer-detection interval {interval}"),
        );
        line(
            &mut s,
            format!("{gw} dead-peer-detection threshold {misses}"),
        );
        line(&mut s, format!("{gw} external-interface {ext}"));
        line(
            &mut s,
            format!("{gw} local-identity inet {}", ctx.cgw_ip_or_placeholder()),
        );
        let version = if o.ike_versions.contains(&IkeVersion::Ikev2) {
            "v2-only"
        } else {
            "v1-only"
        };
        line(&mut s, format!("{gw} version {version}"));
        if version == "v1-only" {
            line(&mut s, format!("{pol} mode main"));
        }
        // IPsec.
        let esp_hashes: Vec<String> = o
            .phase2_integrity_algorithms
            .iter()
            .map(|a| esp_hash(*a).to_owned())
            .collect();
        left_out(
            &mut s,
            t,
            "phase 2 integrity",
            esp_hashes.get(1..).unwrap_or_default(),
        );
        let mut esp_names = Vec::new();
        for &e in &o.phase2_encryption_algorithms {
            if !e.is_aead() && esp_hashes.is_empty() {
                continue;
            }
            let p = format!("{base}-esp-{}", enc(e));
            let pre = format!("set security ipsec proposal {p}");
            line(&mut s, format!("{pre} protocol esp"));
            if !e.is_aead() {
                line(
                    &mut s,
                    format!("{pre} authentication-algorithm {}", esp_hashes[0]),
                );
            }
            line(&mut s, format!("{pre} encryption-algorithm {}", enc(e)));
            line(
                &mut s,
                format!("{pre} lifetime-seconds {}", o.phase2_lifetime_secs),
            );
            esp_names.push(p);
        }
        unsupported(&mut s, t, "phase 2", &o.phase2_dh_groups);
        let groups2: Vec<String> = o
            .phase2_dh_groups
            .iter()
            .filter_map(|g| group(*g))
            .collect();
        left_out(
            &mut s,
            t,
            "phase 2 (PFS) DH groups",
            groups2.get(1..).unwrap_or_default(),
        );
        let ipol = format!("set security ipsec policy {base}");
        if let Some(g) = groups2.first() {
            line(&mut s, format!("{ipol} perfect-forward-secrecy keys {g}"));
        }
        line(
            &mut s,
            format!("{ipol} proposals [ {} ]", esp_names.join(" ")),
        );
        let vpn = format!("set security ipsec vpn {base}");
        line(&mut s, format!("{vpn} bind-interface st0.{}", t.n));
        line(&mut s, format!("{vpn} ike gateway {base}"));
        line(&mut s, format!("{vpn} ike ipsec-policy {base}"));
        line(&mut s, format!("{vpn} df-bit clear"));
        line(&mut s, format!("{vpn} establish-tunnels immediately"));
        // Interface.
        let unit = format!("set interfaces st0 unit {}", t.n);
        if let Some(i) = t.inside_v4 {
            line(
                &mut s,
                format!("{unit} family inet address {}", i.customer_cidr()),
            );
            line(&mut s, format!("{unit} family inet mtu {}", ctx.mtu.mtu));
        }
        if let Some(i) = t.inside_v6 {
            line(
                &mut s,
                format!("{unit} family inet6 address {}", i.customer_cidr()),
            );
            line(&mut s, format!("{unit} family inet6 mtu {}", ctx.mtu.mtu));
        }
        line(
            &mut s,
            format!(
                "set security zones security-zone trust interfaces st0.{}",
                t.n
            ),
        );
    }
    line(&mut s, format!("{C} ---- Zones, MSS ----"));
    let untrust = format!("set security zones security-zone untrust interfaces {ext}");
    line(
        &mut s,
        format!("{untrust} host-inbound-traffic system-services ike"),
    );
    line(
        &mut s,
        format!("set security flow tcp-mss ipsec-vpn mss {}", ctx.mtu.mss_v4),
    );
    routing(ctx, &mut s);
    s
}

fn routing(ctx: &Ctx<'_>, s: &mut String) {
    line(s, format!("{C} ---- Routing ----"));
    if ctx.dynamic() {
        let b = ctx.bgp();
        line(
            s,
            format!(
                "set routing-options autonomous-system {}",
                ctx.cgw_asn_text()
            ),
        );
        for t in &ctx.tunnels {
            line(
                s,
                format!(
                    "set security zones security-zone trust interfaces st0.{} host-inbound-traffic protocols bgp",
                    t.n
                ),
            );
        }
        let grp = "set protocols bgp group appliance";
        line(s, format!("{grp} type external"));
        if ctx.tunnels.iter().any(|t| t.inside_v6.is_some()) {
            line(s, format!("{grp} family inet unicast"));
            line(s, format!("{grp} family inet6 unicast"));
        }
        line(s, format!("{grp} peer-as {}", ctx.appliance_asn()));
        line(s, format!("{grp} hold-time {}", b.hold_time_secs));
        line(
            s,
            format!("{C} export a policy announcing your networks: {grp} export <policy>"),
        );
        for t in &ctx.tunnels {
            for i in t.inside_v4.iter().chain(t.inside_v6.iter()) {
                let mut l = String::new();
                let _ = write!(
                    l,
                    "{grp} neighbor {} local-address {}",
                    i.appliance, i.customer
                );
                line(s, l);
            }
        }
    } else {
        line(
            s,
            format!("{C} Static routing: the appliance's networks via st0.1, st0.2 as backup."),
        );
        for n in ctx.appliance_networks() {
            let rib = if n.addr().is_ipv4() {
                ""
            } else {
                "rib inet6.0 "
            };
            for t in &ctx.tunnels {
                if t.n == 1 {
                    line(
                        s,
                        format!(
                            "set routing-options {rib}static route {n} next-hop st0.{}",
                            t.n
                        ),
                    );
                } else {
                    line(
                        s,
                        format!(
                            "set routing-options {rib}static route {n} qualified-next-hop st0.{} preference 10",
                            t.n
                        ),
                    );
                }
            }
        }
    }
}
