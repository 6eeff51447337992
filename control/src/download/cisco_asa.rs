//! Cisco ASA 9.8+: route-based VTI (`interface Tunnel`, `tunnel protection
//! ipsec profile`), IKEv2 policies, IKEv2 IPsec proposals, a tunnel-group
//! per tunnel with its pre-shared key.
//!
//! Keywords as the ASA command reference spells them: IKEv2 `encryption
//! aes-gcm-256 aes-gcm aes-256 aes`, `integrity null` with GCM, `prf
//! sha256`, ESP `protocol esp integrity sha-256`; DH groups 2, 5, 14, 15,
//! 16, 19, 20, 21, 24 (17, 18, 22, 23 are not offered); one PFS group per
//! IPsec profile.

use std::net::IpAddr;

use super::{
    Ctx, Device, groups_left_out, line, map_groups, net_and_mask, pfs_left_out, split_aead,
};
use crate::config::{DhGroup, EncryptionAlgorithm, IntegrityAlgorithm};

const C: &str = "!";
const VENDOR: &str = "ASA";

fn group(g: DhGroup) -> Option<u16> {
    matches!(g.number(), 2 | 5 | 14 | 15 | 16 | 19 | 20 | 21 | 24).then_some(g.number())
}

fn enc(a: EncryptionAlgorithm) -> &'static str {
    match a {
        EncryptionAlgorithm::Aes128 => "aes",
        EncryptionAlgorithm::Aes256 => "aes-256",
        EncryptionAlgorithm::Aes128Gcm16 => "aes-gcm",
        _ => "aes-gcm-256",
    }
}

fn ike_hash(a: IntegrityAlgorithm) -> &'static str {
    match a {
        IntegrityAlgorithm::Sha1 => "sha",
        IntegrityAlgorithm::Sha2_256 => "sha256",
        IntegrityAlgorithm::Sha2_384 => "sha384",
        _ => "sha512",
    }
}

fn esp_hash(a: IntegrityAlgorithm) -> &'static str {
    match a {
        IntegrityAlgorithm::Sha1 => "sha-1",
        IntegrityAlgorithm::Sha2_256 => "sha-256",
        IntegrityAlgorithm::Sha2_384 => "sha-384",
        _ => "sha-512",
    }
}

fn words<T: Copy>(v: &[T], f: impl Fn(T) -> &'static str) -> String {
    v.iter().map(|x| f(*x)).collect::<Vec<_>>().join(" ")
}

pub(super) fn render(ctx: &Ctx<'_>) -> String {
    let mut s = ctx.header(C, Device::CiscoAsa);
    let conn = ctx.conn;
    line(
        &mut s,
        format!(
            "{C} \"outside\" is the nameif of the interface that holds {}.",
            ctx.cgw_ip_or_placeholder()
        ),
    );
    line(&mut s, C);

    // IKEv2 policies are global: one per distinct body, in tunnel order.
    let mut bodies: Vec<String> = Vec::new();
    for t in &ctx.tunnels {
        let o = t.opts;
        let (groups, dropped) = map_groups(&o.phase1_dh_groups, group);
        groups_left_out(
            &mut s,
            C,
            &format!("tunnel {} phase 1", t.n),
            VENDOR,
            &dropped,
        );
        let groups = groups
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let prf = words(&o.phase1_integrity_algorithms, ike_hash);
        let (aead, cbc) = split_aead(&o.phase1_encryption_algorithms);
        for (list, integ) in [(aead, "null".to_owned()), (cbc, prf.clone())] {
            if list.is_empty() {
                continue;
            }
            let body = format!(
                " encryption {}\n integrity {integ}\n group {groups}\n prf {prf}\n lifetime seconds {}\n",
                words(&list, enc),
                o.phase1_lifetime_secs
            );
            if !bodies.contains(&body) {
                bodies.push(body);
            }
        }
    }
    for (k, body) in bodies.iter().enumerate() {
        line(&mut s, format!("crypto ikev2 policy {}", 10 * (k + 1)));
        s.push_str(body);
    }
    line(&mut s, "crypto ikev2 enable outside");
    line(&mut s, format!("group-policy {} internal", conn.id));
    line(&mut s, format!("group-policy {} attributes", conn.id));
    line(&mut s, " vpn-tunnel-protocol ikev2");
    line(&mut s, C);

    for t in &ctx.tunnels {
        let o = t.opts;
        let base = format!("{}-t{}", conn.id, t.n);
        line(&mut s, format!("{C} ---- Tunnel {} ----", t.n));
        let (aead, cbc) = split_aead(&o.phase2_encryption_algorithms);
        let mut proposals = Vec::new();
        if !aead.is_empty() {
            let name = format!("{base}-gcm");
            line(&mut s, format!("crypto ipsec ikev2 ipsec-proposal {name}"));
            line(
                &mut s,
                format!(" protocol esp encryption {}", words(&aead, enc)),
            );
            line(&mut s, " protocol esp integrity null");
            proposals.push(name);
        }
        if !cbc.is_empty() && !o.phase2_integrity_algorithms.is_empty() {
            let name = format!("{base}-cbc");
            line(&mut s, format!("crypto ipsec ikev2 ipsec-proposal {name}"));
            line(
                &mut s,
                format!(" protocol esp encryption {}", words(&cbc, enc)),
            );
            line(
                &mut s,
                format!(
                    " protocol esp integrity {}",
                    words(&o.phase2_integrity_algorithms, esp_hash)
                ),
            );
            proposals.push(name);
        }
        line(&mut s, format!("crypto ipsec profile {base}"));
        line(
            &mut s,
            format!(" set ikev2 ipsec-proposal {}", proposals.join(" ")),
        );
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
        line(
            &mut s,
            " set security-association lifetime kilobytes unlimited",
        );
        line(&mut s, format!("tunnel-group {} type ipsec-l2l", t.outside));
        line(
            &mut s,
            format!("tunnel-group {} general-attributes", t.outside),
        );
        line(&mut s, format!(" default-group-policy {}", conn.id));
        line(
            &mut s,
            format!("tunnel-group {} ipsec-attributes", t.outside),
        );
        let (interval, _) = t.dpd();
        line(&mut s, format!(" {C} {}", t.dpd_comment()));
        line(
            &mut s,
            format!(" isakmp keepalive threshold {interval} retry {interval}"),
        );
        line(
            &mut s,
            format!(" ikev2 remote-authentication pre-shared-key {}", t.psk),
        );
        line(
            &mut s,
            format!(" ikev2 local-authentication pre-shared-key {}", t.psk),
        );
        line(&mut s, format!("interface Tunnel{}", t.n));
        line(&mut s, format!(" nameif {base}"));
        if let Some(i) = t.inside_v4 {
            line(
                &mut s,
                format!(" ip address {} {}", i.customer, i.netmask()),
            );
        }
        if let Some(i) = t.inside_v6 {
            line(
                &mut s,
                format!(
                    " {C} IPv6 inside: ipv6 address {} (needs an ASA release with IPv6 on VTI)",
                    i.customer_cidr()
                ),
            );
        }
        line(&mut s, " tunnel source interface outside");
        line(&mut s, format!(" tunnel destination {}", t.outside));
        let mode = if t.outside_addr.is_ipv6() {
            "ipv6"
        } else {
            "ipv4"
        };
        line(&mut s, format!(" tunnel mode ipsec {mode}"));
        line(&mut s, format!(" tunnel protection ipsec profile {base}"));
        line(&mut s, C);
    }
    line(
        &mut s,
        format!("{C} The VTI takes its MTU from the outside interface; clamp TCP MSS instead."),
    );
    line(
        &mut s,
        format!("sysopt connection tcpmss {}", ctx.mtu.mss_v4),
    );
    line(
        &mut s,
        format!(
            "{C} IKE (UDP 500/4500) and ESP to the ASA itself need no access-list; keep sysopt connection permit-vpn."
        ),
    );
    routing(ctx, &mut s);
    s
}

fn routing(ctx: &Ctx<'_>, s: &mut String) {
    if ctx.dynamic() {
        let b = ctx.bgp();
        line(s, format!("router bgp {}", ctx.cgw_asn_text()));
        line(s, " bgp log-neighbor-changes");
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
                line(
                    s,
                    format!("  neighbor {p} remote-as {}", ctx.appliance_asn()),
                );
                line(
                    s,
                    format!(
                        "  neighbor {p} timers {} {} {}",
                        b.keepalive_secs, b.hold_time_secs, b.hold_time_secs
                    ),
                );
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
                let base = format!("{}-t{}", ctx.conn.id, t.n);
                let metric = t.n;
                if n.addr().is_ipv4() {
                    let (net, mask) = net_and_mask(&n);
                    if let Some(i) = t.inside_v4 {
                        line(
                            s,
                            format!("route {base} {net} {mask} {} {metric}", i.appliance),
                        );
                    }
                } else if let Some(i) = t.inside_v6 {
                    line(s, format!("ipv6 route {base} {n} {} {metric}", i.appliance));
                }
            }
        }
    }
    line(s, C);
}
