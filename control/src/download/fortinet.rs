//! Fortinet FortiGate, FortiOS CLI: interface-mode IPsec (`config vpn
//! ipsec phase1-interface` / `phase2-interface`), the tunnel interfaces'
//! addresses and MTU (`config system interface`), BGP or static routes, and
//! the firewall policies that let traffic through the tunnels.
//!
//! Keywords as the FortiOS CLI reference spells them: proposals
//! `aes256gcm-prfsha256` (AEAD, IKEv2 only), `aes256-sha256`, phase 2
//! `aes256gcm`; `dhgrp` numbers 1, 2, 5, 14–21 (22, 23, 24 are not offered).
//! FortiOS names are at most 15 characters, so the tunnels are named from
//! the first 12 characters of the connection id plus `-tN`.

use super::{Ctx, Device, TunnelView, groups_left_out, line, map_groups, net_and_mask};
use crate::config::{DhGroup, EncryptionAlgorithm, IkeVersion, IntegrityAlgorithm};

const C: &str = "#";
const VENDOR: &str = "FortiOS";
/// Proposals written per phase.
const MAX_PROPOSALS: usize = 10;
const WAN: &str = "wan1";
const LAN: &str = "internal";

fn group(g: DhGroup) -> Option<u16> {
    matches!(g.number(), 1 | 2 | 5 | 14..=21).then_some(g.number())
}

fn enc(a: EncryptionAlgorithm) -> &'static str {
    match a {
        EncryptionAlgorithm::Aes128 => "aes128",
        EncryptionAlgorithm::Aes256 => "aes256",
        EncryptionAlgorithm::Aes128Gcm16 => "aes128gcm",
        _ => "aes256gcm",
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

/// The tunnel's FortiOS name (≤ 15 characters).
pub(crate) fn name(ctx: &Ctx<'_>, t: &TunnelView<'_>) -> String {
    let id: String = ctx.conn.id.chars().take(12).collect();
    format!("{id}-t{}", t.n)
}

fn capped(s: &mut String, phase: &str, t: &TunnelView<'_>, v: Vec<String>) -> String {
    if v.len() > MAX_PROPOSALS {
        line(
            s,
            format!(
                "{C} Left out (tunnel {}): {phase} proposals {}: at most {MAX_PROPOSALS} are written per phase.",
                t.n,
                v[MAX_PROPOSALS..].join(" ")
            ),
        );
    }
    v.into_iter()
        .take(MAX_PROPOSALS)
        .collect::<Vec<_>>()
        .join(" ")
}

fn groups_text(g: &[u16]) -> String {
    g.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn render(ctx: &Ctx<'_>) -> String {
    let mut s = ctx.header(C, Device::Fortinet);
    line(
        &mut s,
        format!(
            "{C} {WAN} is the outside interface and {LAN} the LAN side; adjust to your FortiGate."
        ),
    );
    line(
        &mut s,
        format!(
            "{C} IKE and ESP to the FortiGate itself are accepted once the phase 1 exists; no local-in policy is needed."
        ),
    );
    if ctx.conn.id.chars().count() > 12 {
        line(
            &mut s,
            format!("{C} The connection id is cut to 12 characters in names (FortiOS allows 15)."),
        );
    }
    line(&mut s, "config vpn ipsec phase1-interface");
    for t in &ctx.tunnels {
        let o = t.opts;
        let ikev2 = o.ike_versions.contains(&IkeVersion::Ikev2);
        let mut props = Vec::new();
        for &e in &o.phase1_encryption_algorithms {
            if e.is_aead() && !ikev2 {
                continue;
            }
            for &i in &o.phase1_integrity_algorithms {
                let p = if e.is_aead() {
                    format!("{}-prf{}", enc(e), hash(i))
                } else {
                    format!("{}-{}", enc(e), hash(i))
                };
                props.push(p);
            }
        }
        if !ikev2 && o.phase1_encryption_algorithms.iter().any(|e| e.is_aead()) {
            line(
                &mut s,
                format!(
                    "    {C} Left out (tunnel {}): AES-GCM in phase 1: FortiOS offers it with IKEv2 only.",
                    t.n
                ),
            );
        }
        let (groups, dropped) = map_groups(&o.phase1_dh_groups, group);
        groups_left_out(
            &mut s,
            &format!("    {C}"),
            &format!("tunnel {} phase 1", t.n),
            VENDOR,
            &dropped,
        );
        let props = capped(&mut s, "phase 1", t, props);
        let (interval, misses) = t.dpd();
        line(&mut s, format!("    edit \"{}\"", name(ctx, t)));
        line(&mut s, format!("        set interface \"{WAN}\""));
        line(
            &mut s,
            format!("        set ike-version {}", if ikev2 { 2 } else { 1 }),
        );
        if !ikev2 {
            line(&mut s, "        set mode main");
        }
        line(
            &mut s,
            format!("        set keylife {}", o.phase1_lifetime_secs),
        );
        line(&mut s, "        set peertype any");
        line(&mut s, "        set net-device disable");
        line(&mut s, format!("        set proposal {props}"));
        line(
            &mut s,
            format!("        set dhgrp {}", groups_text(&groups)),
        );
        line(&mut s, "        set nattraversal enable");
        line(&mut s, format!("        {C} {}", t.dpd_comment()));
        line(&mut s, "        set dpd on-idle");
        line(&mut s, format!("        set dpd-retryinterval {interval}"));
        line(&mut s, format!("        set dpd-retrycount {misses}"));
        line(&mut s, format!("        set remote-gw {}", t.outside));
        line(&mut s, format!("        set psksecret {}", t.psk));
        line(&mut s, "    next");
    }
    line(&mut s, "end");

    let (local_ts, remote_ts) = ctx.selectors();
    line(&mut s, "config vpn ipsec phase2-interface");
    for t in &ctx.tunnels {
        let o = t.opts;
        let mut props = Vec::new();
        for &e in &o.phase2_encryption_algorithms {
            if e.is_aead() {
                props.push(enc(e).to_owned());
            } else {
                for &i in &o.phase2_integrity_algorithms {
                    props.push(format!("{}-{}", enc(e), hash(i)));
                }
            }
        }
        let (groups, dropped) = map_groups(&o.phase2_dh_groups, group);
        groups_left_out(
            &mut s,
            &format!("    {C}"),
            &format!("tunnel {} phase 2", t.n),
            VENDOR,
            &dropped,
        );
        let props = capped(&mut s, "phase 2", t, props);
        line(&mut s, format!("    edit \"{}\"", name(ctx, t)));
        line(
            &mut s,
            format!("        set phase1name \"{}\"", name(ctx, t)),
        );
        line(&mut s, format!("        set proposal {props}"));
        line(&mut s, "        set pfs enable");
        line(
            &mut s,
            format!("        set dhgrp {}", groups_text(&groups)),
        );
        line(&mut s, "        set replay enable");
        line(&mut s, "        set auto-negotiate enable");
        line(
            &mut s,
            format!("        set keylifeseconds {}", o.phase2_lifetime_secs),
        );
        if local_ts.prefix_len() != 0 || remote_ts.prefix_len() != 0 {
            if local_ts.addr().is_ipv4() {
                let (n, m) = net_and_mask(&local_ts);
                line(&mut s, format!("        set src-subnet {n} {m}"));
                let (n, m) = net_and_mask(&remote_ts);
                line(&mut s, format!("        set dst-subnet {n} {m}"));
            } else {
                line(&mut s, "        set src-addr-type subnet6");
                line(&mut s, format!("        set src-subnet6 {local_ts}"));
                line(&mut s, "        set dst-addr-type subnet6");
                line(&mut s, format!("        set dst-subnet6 {remote_ts}"));
            }
        } else if local_ts.addr().is_ipv6() {
            line(&mut s, "        set src-addr-type subnet6");
            line(&mut s, "        set dst-addr-type subnet6");
        }
        line(&mut s, "    next");
    }
    line(&mut s, "end");

    line(&mut s, "config system interface");
    for t in &ctx.tunnels {
        line(&mut s, format!("    edit \"{}\"", name(ctx, t)));
        line(&mut s, "        set vdom \"root\"");
        line(&mut s, "        set type tunnel");
        line(&mut s, format!("        set interface \"{WAN}\""));
        if let Some(i) = t.inside_v4 {
            line(
                &mut s,
                format!("        set ip {} 255.255.255.255", i.customer),
            );
            line(
                &mut s,
                format!("        set remote-ip {} {}", i.appliance, i.netmask()),
            );
        }
        line(&mut s, "        set allowaccess ping");
        line(&mut s, format!("        set tcp-mss {}", ctx.mtu.mss_v4));
        line(&mut s, "        set mtu-override enable");
        line(&mut s, format!("        set mtu {}", ctx.mtu.mtu));
        if let Some(i) = t.inside_v6 {
            line(&mut s, "        config ipv6");
            line(
                &mut s,
                format!("            set ip6-address {}", i.customer_cidr()),
            );
            line(&mut s, "        end");
        }
        line(&mut s, "    next");
    }
    line(&mut s, "end");

    routing(ctx, &mut s);

    line(&mut s, "config firewall policy");
    for t in &ctx.tunnels {
        for (dir, src, dst) in [
            ("out", LAN.to_owned(), name(ctx, t)),
            ("in", name(ctx, t), LAN.to_owned()),
        ] {
            line(&mut s, "    edit 0");
            line(
                &mut s,
                format!("        set name \"{}-{dir}\"", name(ctx, t)),
            );
            line(&mut s, format!("        set srcintf \"{src}\""));
            line(&mut s, format!("        set dstintf \"{dst}\""));
            line(&mut s, "        set srcaddr \"all\"");
            line(&mut s, "        set dstaddr \"all\"");
            if ctx.inside_v6() {
                line(&mut s, "        set srcaddr6 \"all\"");
                line(&mut s, "        set dstaddr6 \"all\"");
            }
            line(&mut s, "        set action accept");
            line(&mut s, "        set schedule \"always\"");
            line(&mut s, "        set service \"ALL\"");
            line(&mut s, "    next");
        }
    }
    line(&mut s, "end");
    s
}

fn routing(ctx: &Ctx<'_>, s: &mut String) {
    if ctx.dynamic() {
        let b = ctx.bgp();
        line(s, "config router bgp");
        line(s, format!("    set as {}", ctx.cgw_asn_text()));
        line(
            s,
            format!("    {C} announce your networks under config network"),
        );
        line(s, "    config neighbor");
        for t in &ctx.tunnels {
            for i in t.inside_v4.iter().chain(t.inside_v6.iter()) {
                line(s, format!("        edit \"{}\"", i.appliance));
                line(
                    s,
                    format!("            set remote-as {}", ctx.appliance_asn()),
                );
                line(
                    s,
                    format!("            set keep-alive-timer {}", b.keepalive_secs),
                );
                line(
                    s,
                    format!("            set holdtime-timer {}", b.hold_time_secs),
                );
                line(s, "        next");
            }
        }
        line(s, "    end");
        line(s, "end");
    } else {
        line(
            s,
            format!(
                "{C} Static routing: the appliance's networks via tunnel 1, tunnel 2 as backup (priority)."
            ),
        );
        for (v6, block) in [
            (false, "config router static"),
            (true, "config router static6"),
        ] {
            let nets: Vec<_> = ctx
                .appliance_networks()
                .into_iter()
                .filter(|n| n.addr().is_ipv6() == v6)
                .collect();
            if nets.is_empty() {
                continue;
            }
            line(s, block);
            for n in nets {
                for t in &ctx.tunnels {
                    line(s, "    edit 0");
                    if v6 {
                        line(s, format!("        set dst {n}"));
                    } else {
                        let (net, mask) = net_and_mask(&n);
                        line(s, format!("        set dst {net} {mask}"));
                    }
                    line(s, format!("        set device \"{}\"", name(ctx, t)));
                    line(s, format!("        set priority {}", t.n));
                    line(s, "    next");
                }
            }
            line(s, "end");
        }
    }
}
