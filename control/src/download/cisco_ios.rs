//! Cisco IOS-XE (CSR1000v, Catalyst 8000v): IKEv2 proposals, one policy,
//! a keyring and a profile per tunnel, transform sets and an IPsec profile
//! per tunnel, and a VTI (`interface Tunnel`, `tunnel mode ipsec`).
//!
//! Keywords as Cisco's IKEv2/IPsec configuration guides spell them:
//! `aes-gcm-256`/`aes-cbc-256` in IKEv2 proposals, `esp-gcm 256`,
//! `esp-aes 256`, `esp-sha256-hmac` in transform sets, groups
//! 1, 2, 5, 14, 15, 16, 19, 20, 21, 24 (17, 18, 22, 23 are not offered), one
//! PFS group per IPsec profile, at most six transform sets per profile.
//! IKEv2 forbids AEAD and non-AEAD ciphers in one proposal, so GCM and CBC
//! get separate proposals; a GCM proposal names PRFs instead of integrity.

use std::net::IpAddr;

use super::{
    Ctx, Device, TunnelView, groups_left_out, line, map_groups, net_and_mask, pfs_left_out,
    split_aead,
};
use crate::config::{DhGroup, EncryptionAlgorithm, IntegrityAlgorithm};

const C: &str = "!";
const VENDOR: &str = "IOS-XE";
/// Transform sets an IPsec profile takes.
const MAX_TRANSFORM_SETS: usize = 6;

fn group(g: DhGroup) -> Option<u16> {
    matches!(g.number(), 1 | 2 | 5 | 14 | 15 | 16 | 19 | 20 | 21 | 24).then_some(g.number())
}

fn ike_enc(a: EncryptionAlgorithm) -> &'static str {
    match a {
        EncryptionAlgorithm::Aes128 => "aes-cbc-128",
        EncryptionAlgorithm::Aes256 => "aes-cbc-256",
        EncryptionAlgorithm::Aes128Gcm16 => "aes-gcm-128",
        _ => "aes-gcm-256",
    }
}

fn hash(a: IntegrityAlgorithm) -> &'static str {
    match a {
        IntegrityAlgorithm::Sha1 => "sha1",
        IntegrityAlgorithm::Sha2_256 => "sha256",
        IntegrityAlgorithm::Sha2_384 => "sha384",
        _ => "sha512",
    }
}

fn esp_enc(a: EncryptionAlgorithm) -> &'static str {
    match a {
        EncryptionAlgorithm::Aes128 => "esp-aes 128",
        EncryptionAlgorithm::Aes256 => "esp-aes 256",
        EncryptionAlgorithm::Aes128Gcm16 => "esp-gcm 128",
        _ => "esp-gcm 256",
    }
}

fn esp_integ(a: IntegrityAlgorithm) -> &'static str {
    match a {
        IntegrityAlgorithm::Sha1 => "esp-sha-hmac",
        IntegrityAlgorithm::Sha2_256 => "esp-sha256-hmac",
        IntegrityAlgorithm::Sha2_384 => "esp-sha384-hmac",
        _ => "esp-sha512-hmac",
    }
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The IKEv2 proposals of one tunnel as (name, body).
fn proposals(base: &str, t: &TunnelView<'_>) -> Vec<(String, String)> {
    let o = t.opts;
    let (groups, _) = map_groups(&o.phase1_dh_groups, group);
    let integ: Vec<&str> = o
        .phase1_integrity_algorithms
        .iter()
        .map(|a| hash(*a))
        .collect();
    let (aead, cbc) = split_aead(&o.phase1_encryption_algorithms);
    let mut v = Vec::new();
    if !aead.is_empty() {
        let enc: Vec<&str> = aead.iter().map(|a| ike_enc(*a)).collect();
        v.push((
            format!("{base}-gcm"),
            format!(
                " encryption {}\n prf {}\n group {}\n",
                enc.join(" "),
                integ.join(" "),
                join(&groups)
            ),
        ));
    }
    if !cbc.is_empty() {
        let enc: Vec<&str> = cbc.iter().map(|a| ike_enc(*a)).collect();
        v.push((
            format!("{base}-cbc"),
            format!(
                " encryption {}\n integrity {}\n group {}\n",
                enc.join(" "),
                integ.join(" "),
                join(&groups)
            ),
        ));
    }
    v
}

/// Transform sets of one tunnel as (name, transforms), preference order.
fn transform_sets(base: &str, t: &TunnelView<'_>) -> Vec<(String, String)> {
    let o = t.opts;
    let mut v = Vec::new();
    for &e in &o.phase2_encryption_algorithms {
        if e.is_aead() {
            v.push(esp_enc(e).to_owned());
        } else {
            for &i in &o.phase2_integrity_algorithms {
                v.push(format!("{} {}", esp_enc(e), esp_integ(i)));
            }
        }
    }
    v.into_iter()
        .enumerate()
        .map(|(k, x)| (format!("{base}-ts{}", k + 1), x))
        .collect()
}

pub(super) fn render(ctx: &Ctx<'_>) -> String {
    let mut s = ctx.header(C, Device::CiscoIos);
    let conn = ctx.conn;
    let cgw = ctx.cgw_ip_or_placeholder();
    line(
        &mut s,
        format!("{C} Replace GigabitEthernet1 with the interface that holds {cgw}."),
    );
    line(&mut s, C);

    // IKEv2 proposals, deduplicated across the tunnels.
    let mut all: Vec<(String, String)> = Vec::new();
    for t in &ctx.tunnels {
        let base = format!("{}-t{}", conn.id, t.n);
        let (_, dropped) = map_groups(&t.opts.phase1_dh_groups, group);
        groups_left_out(
            &mut s,
            C,
            &format!("tunnel {} phase 1", t.n),
            VENDOR,
            &dropped,
        );
        for (name, body) in proposals(&base, t) {
            if !all.iter().any(|(_, b)| *b == body) {
                line(&mut s, format!("crypto ikev2 proposal {name}"));
                s.push_str(&body);
                all.push((name, body));
            }
        }
    }
    line(
        &mut s,
        format!(
            "{C} IOS picks the IKEv2 policy by local address, not by peer: one policy offers every tunnel's proposals."
        ),
    );
    line(&mut s, format!("crypto ikev2 policy {}", conn.id));
    for (name, _) in &all {
        line(&mut s, format!(" proposal {name}"));
    }
    line(&mut s, C);

    for t in &ctx.tunnels {
        let o = t.opts;
        let base = format!("{}-t{}", conn.id, t.n);
        let remote_id = match t.outside_addr {
            IpAddr::V4(a) => format!("{a} 255.255.255.255"),
            IpAddr::V6(a) => format!("ipv6 {a}/128"),
        };
        line(&mut s, format!("{C} ---- Tunnel {} ----", t.n));
        line(&mut s, format!("crypto ikev2 keyring {base}"));
        line(&mut s, format!(" peer appliance-t{}", t.n));
        line(&mut s, format!("  address {}", t.outside));
        line(&mut s, format!("  pre-shared-key {}", t.psk));
        line(&mut s, format!("crypto ikev2 profile {base}"));
        line(
            &mut s,
            format!(" match identity remote address {remote_id}"),
        );
        line(&mut s, format!(" identity local address {cgw}"));
        line(&mut s, " authentication remote pre-share");
        line(&mut s, " authentication local pre-share");
        line(&mut s, format!(" keyring local {base}"));
        line(&mut s, format!(" lifetime {}", o.phase1_lifetime_secs));
        let (interval, _) = t.dpd();
        line(&mut s, format!(" {C} {}", t.dpd_comment()));
        line(&mut s, format!(" dpd {interval} {interval} periodic"));
        let sets = transform_sets(&base, t);
        for (name, x) in sets.iter().take(MAX_TRANSFORM_SETS) {
            line(&mut s, format!("crypto ipsec transform-set {name} {x}"));
            line(&mut s, " mode tunnel");
        }
        if sets.len() > MAX_TRANSFORM_SETS {
            let rest: Vec<&str> = sets[MAX_TRANSFORM_SETS..]
                .iter()
                .map(|(_, x)| x.as_str())
                .collect();
            line(
                &mut s,
                format!(
                    "{C} Left out: phase 2 transforms {}: an IPsec profile takes {MAX_TRANSFORM_SETS} transform sets.",
                    rest.join(", ")
                ),
            );
        }
        line(&mut s, format!("crypto ipsec profile {base}"));
        let names: Vec<&str> = sets
            .iter()
            .take(MAX_TRANSFORM_SETS)
            .map(|(n, _)| n.as_str())
            .collect();
        line(&mut s, format!(" set transform-set {}", names.join(" ")));
        let (pfs, dropped) = map_groups(&o.phase2_dh_groups, group);
        groups_left_out(
            &mut s,
            C,
            &format!("tunnel {} phase 2", t.n),
            VENDOR,
            &dropped,
        );
        if let Some(first) = pfs.first() {
            let rest: Vec<DhGroup> = o
                .phase2_dh_groups
                .iter()
                .copied()
                .filter(|g| group(*g).is_some() && g.number() != *first)
                .collect();
            pfs_left_out(&mut s, C, t.n, VENDOR, &rest);
            line(&mut s, format!(" set pfs group{first}"));
        }
        line(
            &mut s,
            format!(
                " set security-association lifetime seconds {}",
                o.phase2_lifetime_secs
            ),
        );
        line(&mut s, format!(" set ikev2-profile {base}"));
        line(&mut s, format!("interface Tunnel{}", t.n));
        line(
            &mut s,
            format!(" description {} tunnel {} to {}", conn.id, t.n, t.outside),
        );
        if let Some(i) = t.inside_v4 {
            line(
                &mut s,
                format!(" ip address {} {}", i.customer, i.netmask()),
            );
            line(&mut s, format!(" ip mtu {}", ctx.mtu.mtu));
            line(&mut s, format!(" ip tcp adjust-mss {}", ctx.mtu.mss_v4));
        }
        if let Some(i) = t.inside_v6 {
            line(&mut s, format!(" ipv6 address {}", i.customer_cidr()));
            line(&mut s, format!(" ipv6 mtu {}", ctx.mtu.mtu));
            line(&mut s, format!(" ipv6 tcp adjust-mss {}", ctx.mtu.mss_v6));
        }
        line(&mut s, " tunnel source GigabitEthernet1");
        let mode = match (t.outside_addr, t.inside_v6.is_some()) {
            (IpAddr::V6(_), _) => "ipsec ipv6",
            (IpAddr::V4(_), true) => "ipsec ipv4 v6-overlay",
            (IpAddr::V4(_), false) => "ipsec ipv4",
        };
        line(&mut s, format!(" tunnel mode {mode}"));
        line(&mut s, format!(" tunnel destination {}", t.outside));
        line(&mut s, format!(" tunnel protection ipsec profile {base}"));
        line(&mut s, C);
    }

    routing(ctx, &mut s);
    line(
        &mut s,
        format!("{C} Merge into the ACL applied inbound on GigabitEthernet1, if there is one."),
    );
    line(
        &mut s,
        format!("ip access-list extended {}-outside-in", conn.id),
    );
    for t in &ctx.tunnels {
        let src = format!("host {}", t.outside);
        let dst = format!("host {cgw}");
        line(&mut s, format!(" permit udp {src} {dst} eq isakmp"));
        line(&mut s, format!(" permit udp {src} {dst} eq non500-isakmp"));
        line(&mut s, format!(" permit esp {src} {dst}"));
    }
    line(&mut s, "end");
    s
}

fn routing(ctx: &Ctx<'_>, s: &mut String) {
    if ctx.dynamic() {
        let b = ctx.bgp();
        line(s, format!("router bgp {}", ctx.cgw_asn_text()));
        line(s, " bgp log-neighbor-changes");
        for t in &ctx.tunnels {
            for i in t.inside_v4.iter().chain(t.inside_v6.iter()) {
                line(
                    s,
                    format!(
                        " neighbor {} remote-as {}",
                        i.appliance,
                        ctx.appliance_asn()
                    ),
                );
                line(
                    s,
                    format!(
                        " neighbor {} timers {} {}",
                        i.appliance, b.keepalive_secs, b.hold_time_secs
                    ),
                );
            }
        }
        for (af, v6) in [("ipv4", false), ("ipv6", true)] {
            let peers: Vec<IpAddr> = ctx
                .tunnels
                .iter()
                .filter_map(|t| if v6 { t.inside_v6 } else { t.inside_v4 })
                .map(|i| i.appliance)
                .collect();
            if peers.is_empty() {
                continue;
            }
            line(s, format!(" address-family {af} unicast"));
            line(
                s,
                format!("  {C} announce your networks here (network ... mask ...)"),
            );
            for p in peers {
                line(s, format!("  neighbor {p} activate"));
            }
            line(s, " exit-address-family");
        }
    } else {
        line(
            s,
            format!(
                "{C} Static routing: the appliance's networks via tunnel 1, tunnel 2 as backup."
            ),
        );
        for n in ctx.appliance_networks() {
            for t in &ctx.tunnels {
                let distance = 10 * t.n;
                let (net, mask) = net_and_mask(&n);
                if n.addr().is_ipv4() {
                    line(s, format!("ip route {net} {mask} Tunnel{} {distance}", t.n));
                } else {
                    line(s, format!("ipv6 route {n} Tunnel{} {distance}", t.n));
                }
            }
        }
    }
    line(s, C);
}
