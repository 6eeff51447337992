//! Palo Alto Networks PAN-OS `set` commands: IKE and IPsec crypto
//! profiles, an IKE gateway and a tunnel interface per tunnel, the
//! `default` virtual router (BGP or static routes), a zone and security
//! rules for the tunnel traffic.
//!
//! Keywords as PAN-OS documents them: `aes-256-gcm` (IKE: PAN-OS 10.0.3+),
//! `aes-256-cbc`, hashes `sha256`, DH groups `group1/2/5/14/19/20` and
//! `group15/16/21` (PAN-OS 10.2+); 17, 18, 22, 23, 24 are not offered. An
//! IPsec crypto profile with GCM takes authentication `none`, and a tunnel
//! takes one profile, so when both GCM and CBC are allowed in phase 2 the
//! profile offers GCM and the file says CBC is left out.

use super::{Ctx, Device, groups_left_out, line, map_groups, pfs_left_out, split_aead};
use crate::config::{DhGroup, EncryptionAlgorithm, IkeVersion, IntegrityAlgorithm};

const C: &str = "#";
const VENDOR: &str = "PAN-OS";
const UNTRUST_IF: &str = "ethernet1/1";
const ZONE: &str = "appliance-vpn";

fn group(g: DhGroup) -> Option<String> {
    matches!(g.number(), 1 | 2 | 5 | 14 | 15 | 16 | 19 | 20 | 21)
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

fn hash(a: IntegrityAlgorithm) -> &'static str {
    match a {
        IntegrityAlgorithm::Sha1 => "sha1",
        IntegrityAlgorithm::Sha2_256 => "sha256",
        IntegrityAlgorithm::Sha2_384 => "sha384",
        _ => "sha512",
    }
}

fn list<T: Copy>(v: &[T], f: impl Fn(T) -> &'static str) -> String {
    format!(
        "[ {} ]",
        v.iter().map(|x| f(*x)).collect::<Vec<_>>().join(" ")
    )
}

pub(super) fn render(ctx: &Ctx<'_>) -> String {
    let mut s = ctx.header(C, Device::PaloAlto);
    let conn = ctx.conn;
    line(
        &mut s,
        format!(
            "{C} Lines starting with {C} are notes, not commands. {UNTRUST_IF} is the outside interface; adjust to your firewall."
        ),
    );
    line(
        &mut s,
        format!(
            "{C} IKE (UDP 500/4500) and ESP from the appliance arrive on the outside zone; the default intrazone rule allows them (applications ike, ipsec-esp, ipsec-esp-udp)."
        ),
    );
    line(
        &mut s,
        format!(
            "{C} AES-GCM in an IKE crypto profile needs PAN-OS 10.0.3 or later; DH groups 15, 16, 21 need 10.2 or later."
        ),
    );
    for t in &ctx.tunnels {
        let o = t.opts;
        let base = format!("{}-t{}", conn.id, t.n);
        let ikev2 = o.ike_versions.contains(&IkeVersion::Ikev2);
        let proto = if ikev2 { "ikev2" } else { "ikev1" };
        line(&mut s, format!("{C} ---- Tunnel {} ----", t.n));
        // IKE crypto profile.
        let ike = format!("set network ike crypto-profiles ike-crypto-profiles {base}");
        let (groups, dropped) = map_groups(&o.phase1_dh_groups, group);
        groups_left_out(
            &mut s,
            C,
            &format!("tunnel {} phase 1", t.n),
            VENDOR,
            &dropped,
        );
        let mut p1enc = o.phase1_encryption_algorithms.clone();
        if !ikev2 && p1enc.iter().any(|e| e.is_aead()) {
            line(
                &mut s,
                format!(
                    "{C} Left out (tunnel {}): AES-GCM in phase 1: PAN-OS offers it with IKEv2 only.",
                    t.n
                ),
            );
            p1enc.retain(|e| !e.is_aead());
        }
        line(&mut s, format!("{ike} dh-group [ {} ]", groups.join(" ")));
        line(&mut s, format!("{ike} encryption {}", list(&p1enc, enc)));
        line(
            &mut s,
            format!("{ike} hash {}", list(&o.phase1_integrity_algorithms, hash)),
        );
        line(
            &mut s,
            format!("{ike} lifetime seconds {}", o.phase1_lifetime_secs),
        );
        // IPsec crypto profile.
        let ips = format!("set network ike crypto-profiles ipsec-crypto-profiles {base}");
        let (aead, cbc) = split_aead(&o.phase2_encryption_algorithms);
        if !aead.is_empty() {
            if !cbc.is_empty() {
                line(
                    &mut s,
                    format!(
                        "{C} Left out (tunnel {}): phase 2 {}: a GCM profile takes authentication none and a tunnel takes one profile.",
                        t.n,
                        cbc.iter()
                            .map(|e| e.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            line(&mut s, format!("{ips} esp encryption {}", list(&aead, enc)));
            line(&mut s, format!("{ips} esp authentication none"));
        } else {
            line(&mut s, format!("{ips} esp encryption {}", list(&cbc, enc)));
            line(
                &mut s,
                format!(
                    "{ips} esp authentication {}",
                    list(&o.phase2_integrity_algorithms, hash)
                ),
            );
        }
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
                .filter(|g| group(*g).is_some_and(|n| n != *first))
                .collect();
            pfs_left_out(&mut s, C, t.n, VENDOR, &rest);
            line(&mut s, format!("{ips} dh-group {first}"));
        }
        line(
            &mut s,
            format!("{ips} lifetime seconds {}", o.phase2_lifetime_secs),
        );
        // IKE gateway.
        let gw = format!("set network ike gateway {base}");
        line(
            &mut s,
            format!("{gw} authentication pre-shared-key key {}", t.psk),
        );
        line(&mut s, format!("{gw} protocol version {proto}"));
        line(
            &mut s,
            format!("{gw} protocol {proto} ike-crypto-profile {base}"),
        );
        if !ikev2 {
            line(&mut s, format!("{gw} protocol ikev1 exchange-mode main"));
        }
        let (interval, misses) = t.dpd();
        line(&mut s, format!("{C} {}", t.dpd_comment()));
        line(&mut s, format!("{gw} protocol {proto} dpd enable yes"));
        line(
            &mut s,
            format!("{gw} protocol {proto} dpd interval {interval}"),
        );
        if !ikev2 {
            line(&mut s, format!("{gw} protocol ikev1 dpd retry {misses}"));
        }
        line(
            &mut s,
            format!("{gw} protocol-common nat-traversal enable yes"),
        );
        line(&mut s, format!("{gw} local-address interface {UNTRUST_IF}"));
        line(&mut s, format!("{gw} peer-address ip {}", t.outside));
        line(
            &mut s,
            format!(
                "{gw} local-id type ipaddr id {}",
                ctx.cgw_ip_or_placeholder()
            ),
        );
        line(&mut s, format!("{gw} peer-id type ipaddr id {}", t.outside));
        // Tunnel interface.
        let tif = format!("set network interface tunnel units tunnel.{}", t.n);
        if let Some(i) = t.inside_v4 {
            line(&mut s, format!("{tif} ip {}", i.customer_cidr()));
        }
        if let Some(i) = t.inside_v6 {
            line(&mut s, format!("{tif} ipv6 enabled yes"));
            line(&mut s, format!("{tif} ipv6 address {}", i.customer_cidr()));
        }
        line(&mut s, format!("{tif} mtu {}", ctx.mtu.mtu));
        line(&mut s, format!("{tif} adjust-tcp-mss enable yes"));
        let tun = format!("set network tunnel ipsec {base}");
        line(&mut s, format!("{tun} auto-key ike-gateway {base}"));
        line(
            &mut s,
            format!("{tun} auto-key ipsec-crypto-profile {base}"),
        );
        line(&mut s, format!("{tun} tunnel-interface tunnel.{}", t.n));
        line(&mut s, format!("{tun} anti-replay yes"));
        line(
            &mut s,
            format!("set zone {ZONE} network layer3 tunnel.{}", t.n),
        );
        line(
            &mut s,
            format!(
                "set network virtual-router default interface tunnel.{}",
                t.n
            ),
        );
    }
    line(&mut s, format!("{C} ---- Routing ----"));
    let vr = "set network virtual-router default";
    if ctx.dynamic() {
        let b = ctx.bgp();
        let bgp = format!("{vr} protocol bgp");
        line(&mut s, format!("{bgp} enable yes"));
        if let Some(i) = ctx.tunnels.first().and_then(|t| t.inside_v4) {
            line(&mut s, format!("{bgp} router-id {}", i.customer));
        }
        line(&mut s, format!("{bgp} local-as {}", ctx.cgw_asn_text()));
        line(
            &mut s,
            format!("{C} announce your networks with a redistribution profile or export rule"),
        );
        let pg = format!("{bgp} peer-group appliance");
        line(&mut s, format!("{pg} type ebgp"));
        for t in &ctx.tunnels {
            for (k, i) in t.inside_v4.iter().chain(t.inside_v6.iter()).enumerate() {
                let peer = format!("{pg} peer {}-t{}-{}", conn.id, t.n, k + 1);
                line(&mut s, format!("{peer} peer-as {}", ctx.appliance_asn()));
                line(
                    &mut s,
                    format!(
                        "{peer} local-address interface tunnel.{} ip {}",
                        t.n,
                        i.customer_cidr()
                    ),
                );
                line(&mut s, format!("{peer} peer-address ip {}", i.appliance));
                line(
                    &mut s,
                    format!(
                        "{peer} connection-options keep-alive-interval {} hold-time {}",
                        b.keepalive_secs, b.hold_time_secs
                    ),
                );
            }
        }
    } else {
        line(
            &mut s,
            format!(
                "{C} Static routing: the appliance's networks via tunnel 1 (metric 10), tunnel 2 as backup (metric 20)."
            ),
        );
        for (k, n) in ctx.appliance_networks().iter().enumerate() {
            for t in &ctx.tunnels {
                let (table, hop) = if n.addr().is_ipv4() {
                    ("ip", t.inside_v4.map(|i| i.appliance))
                } else {
                    ("ipv6", t.inside_v6.map(|i| i.appliance))
                };
                let r = format!(
                    "{vr} routing-table {table} static-route {}-r{}-t{}",
                    conn.id,
                    k + 1,
                    t.n
                );
                let nexthop = hop.map_or_else(String::new, |h| {
                    let kw = if table == "ip" {
                        "ip-address"
                    } else {
                        "ipv6-address"
                    };
                    format!(" nexthop {kw} {h}")
                });
                line(
                    &mut s,
                    format!(
                        "{r} destination {n} interface tunnel.{}{nexthop} metric {}",
                        t.n,
                        10 * t.n
                    ),
                );
            }
        }
    }
    line(
        &mut s,
        format!("{C} ---- Security rules: trust <-> {ZONE} ----"),
    );
    for (name, from, to) in [("out", "trust", ZONE), ("in", ZONE, "trust")] {
        let r = format!("set rulebase security rules {}-{name}", conn.id);
        line(
            &mut s,
            format!(
                "{r} from {from} to {to} source any destination any application any service any action allow"
            ),
        );
    }
    s
}
