//! MikroTik RouterOS 7: `/ip ipsec profile/peer/identity/proposal/policy`.
//!
//! RouterOS has no VTI, and the spec forbids extra encapsulation on the
//! tunnel (§14.1: no GRE, no IP-in-IP), so this file is policy-based, the
//! way RouterOS documents site-to-site IPsec: one tunnel-mode policy per
//! tunnel with the connection's traffic selectors (default 0.0.0.0/0 both
//! ways, one SA per tunnel as §14 requires). Two policies with the same
//! selectors cannot both be active, so tunnel 2's policy is written
//! disabled: it is the standby, enabled (and tunnel 1's disabled) to fail
//! over. The file says so in its comments.
//!
//! Keywords as RouterOS documents them: profile `enc-algorithm=aes-256-gcm,aes-256`
//! (GCM with IKEv2 only), `hash-algorithm=sha256` and `prf-algorithm` (one value each), `dh-group=ecp256,modp2048`;
//! proposal `enc-algorithms=aes-256-gcm,aes-256-cbc`, `auth-algorithms`,
//! one `pfs-group`; groups 1, 2, 5, 14–21 (22, 23, 24 are not offered).

use super::{Ctx, Device, groups_left_out, line, map_groups, pfs_left_out};
use crate::config::{DhGroup, EncryptionAlgorithm, IkeVersion, IntegrityAlgorithm};

const C: &str = "#";
const VENDOR: &str = "RouterOS";

fn group(g: DhGroup) -> Option<&'static str> {
    Some(match g.number() {
        1 => "modp768",
        2 => "modp1024",
        5 => "modp1536",
        14 => "modp2048",
        15 => "modp3072",
        16 => "modp4096",
        17 => "modp6144",
        18 => "modp8192",
        19 => "ecp256",
        20 => "ecp384",
        21 => "ecp521",
        _ => return None,
    })
}

fn profile_enc(a: EncryptionAlgorithm) -> &'static str {
    match a {
        EncryptionAlgorithm::Aes128 => "aes-128",
        EncryptionAlgorithm::Aes256 => "aes-256",
        EncryptionAlgorithm::Aes128Gcm16 => "aes-128-gcm",
        _ => "aes-256-gcm",
    }
}

fn esp_enc(a: EncryptionAlgorithm) -> &'static str {
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

/// RouterOS time: whole hours or minutes when exact, else seconds.
fn duration(secs: u32) -> String {
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

pub(super) fn render(ctx: &Ctx<'_>) -> String {
    let mut s = ctx.header(C, Device::Mikrotik);
    let conn = ctx.conn;
    let cgw = ctx.cgw_ip_or_placeholder();
    let (local_ts, remote_ts) = ctx.selectors();
    line(
        &mut s,
        format!(
            "{C} Routing: RouterOS has no VTI, and the appliance accepts no extra encapsulation"
        ),
    );
    line(
        &mut s,
        format!(
            "{C} (GRE or IP-in-IP, spec §14.1), so this is policy-based IPsec: one tunnel-mode policy"
        ),
    );
    line(
        &mut s,
        format!(
            "{C} per tunnel, {local_ts} <-> {remote_ts}. Two policies with the same selectors cannot both be"
        ),
    );
    line(
        &mut s,
        format!(
            "{C} active: tunnel 2's policy is added disabled as the standby; to fail over, disable"
        ),
    );
    line(
        &mut s,
        format!(
            "{C} tunnel 1's policy and enable tunnel 2's. Traffic needs only a route out of the WAN"
        ),
    );
    line(
        &mut s,
        format!("{C} interface (the default route); the policy encrypts it after routing."),
    );
    line(
        &mut s,
        format!(
            "{C} place-before=0 puts the rules ahead of any drop rule; leave it out on an empty chain."
        ),
    );
    line(&mut s, "/ip firewall filter");
    for t in &ctx.tunnels {
        line(
            &mut s,
            format!(
                "add chain=input action=accept protocol=udp dst-port=500,4500 src-address={} place-before=0 comment=\"{} tunnel {} IKE, NAT-T\"",
                t.outside, conn.id, t.n
            ),
        );
        line(
            &mut s,
            format!(
                "add chain=input action=accept protocol=ipsec-esp src-address={} place-before=0 comment=\"{} tunnel {} ESP\"",
                t.outside, conn.id, t.n
            ),
        );
    }
    line(
        &mut s,
        "add chain=forward action=accept ipsec-policy=in,ipsec place-before=0",
    );
    line(&mut s, "/ip firewall nat");
    line(
        &mut s,
        format!(
            "add chain=srcnat action=accept src-address={local_ts} dst-address={remote_ts} ipsec-policy=out,ipsec place-before=0 comment=\"{} no NAT into the tunnels\"",
            conn.id
        ),
    );
    line(&mut s, "/ip firewall mangle");
    line(
        &mut s,
        format!(
            "add chain=forward action=change-mss new-mss={} protocol=tcp tcp-flags=syn tcp-mss={}-65535 ipsec-policy=out,ipsec",
            ctx.mtu.mss_v4,
            ctx.mtu.mss_v4 + 1
        ),
    );

    for t in &ctx.tunnels {
        let o = t.opts;
        let base = format!("{}-t{}", conn.id, t.n);
        line(&mut s, format!("{C} ---- Tunnel {} ----", t.n));
        let (groups, dropped) = map_groups(&o.phase1_dh_groups, group);
        groups_left_out(
            &mut s,
            C,
            &format!("tunnel {} phase 1", t.n),
            VENDOR,
            &dropped,
        );
        let ikev2 = o.ike_versions.contains(&IkeVersion::Ikev2);
        let encs: Vec<&str> = o
            .phase1_encryption_algorithms
            .iter()
            .filter(|a| ikev2 || !a.is_aead())
            .map(|a| profile_enc(*a))
            .collect();
        if !ikev2 && o.phase1_encryption_algorithms.iter().any(|a| a.is_aead()) {
            line(
                &mut s,
                format!(
                    "{C} Left out (tunnel {}): AES-GCM in phase 1: RouterOS offers it with IKEv2 only.",
                    t.n
                ),
            );
        }
        let hashes: Vec<&str> = o
            .phase1_integrity_algorithms
            .iter()
            .map(|a| hash(*a))
            .collect();
        if hashes.len() > 1 {
            line(
                &mut s,
                format!(
                    "{C} Left out (tunnel {}): phase 1 integrity {}: a RouterOS profile takes one hash-algorithm and one prf-algorithm.",
                    t.n,
                    hashes[1..].join(", ")
                ),
            );
        }
        let (interval, misses) = t.dpd();
        let h = hashes.first().copied().unwrap_or("sha256");
        line(&mut s, format!("{C} {}", t.dpd_comment()));
        line(&mut s, "/ip ipsec profile");
        line(
            &mut s,
            format!(
                "add name={base} enc-algorithm={} hash-algorithm={h} prf-algorithm={h} dh-group={} lifetime={} dpd-interval={interval}s dpd-maximum-failures={misses} nat-traversal=yes",
                encs.join(","),
                groups.join(","),
                duration(o.phase1_lifetime_secs)
            ),
        );
        let mode = if ikev2 { "ike2" } else { "main" };
        line(&mut s, "/ip ipsec peer");
        line(
            &mut s,
            format!(
                "add name={base} address={}/{} local-address={cgw} profile={base} exchange-mode={mode} send-initial-contact=yes",
                t.outside,
                if t.outside_addr.is_ipv4() { 32 } else { 128 }
            ),
        );
        line(&mut s, "/ip ipsec identity");
        line(
            &mut s,
            format!(
                "add peer={base} auth-method=pre-shared-key secret=\"{}\" my-id=address:{cgw} remote-id=address:{}",
                t.psk, t.outside
            ),
        );
        let (pfs, dropped) = map_groups(&o.phase2_dh_groups, group);
        groups_left_out(
            &mut s,
            C,
            &format!("tunnel {} phase 2", t.n),
            VENDOR,
            &dropped,
        );
        let rest: Vec<DhGroup> = o
            .phase2_dh_groups
            .iter()
            .copied()
            .filter(|g| group(*g).is_some())
            .skip(1)
            .collect();
        pfs_left_out(&mut s, C, t.n, VENDOR, &rest);
        let esp: Vec<&str> = o
            .phase2_encryption_algorithms
            .iter()
            .map(|a| esp_enc(*a))
            .collect();
        let auth: Vec<&str> = o
            .phase2_integrity_algorithms
            .iter()
            .map(|a| hash(*a))
            .collect();
        line(&mut s, "/ip ipsec proposal");
        line(
            &mut s,
            format!(
                "add name={base} enc-algorithms={} auth-algorithms={} pfs-group={} lifetime={}",
                esp.join(","),
                auth.join(","),
                pfs.first().copied().unwrap_or("none"),
                duration(o.phase2_lifetime_secs)
            ),
        );
        line(&mut s, "/ip ipsec policy");
        let disabled = if t.n == 1 { "no" } else { "yes" };
        line(
            &mut s,
            format!(
                "add peer={base} tunnel=yes src-address={local_ts} dst-address={remote_ts} protocol=all action=encrypt level=unique proposal={base} disabled={disabled} comment=\"{} tunnel {}\"",
                conn.id, t.n
            ),
        );
        if let Some(i) = t.inside_v4 {
            line(&mut s, format!("/interface bridge add name={base}"));
            line(
                &mut s,
                format!(
                    "/ip address add address={} interface={base}",
                    i.customer_cidr()
                ),
            );
        }
        if let Some(i) = t.inside_v6 {
            if t.inside_v4.is_none() {
                line(&mut s, format!("/interface bridge add name={base}"));
            }
            line(
                &mut s,
                format!(
                    "/ipv6 address add address={} interface={base} advertise=no",
                    i.customer_cidr()
                ),
            );
        }
    }
    line(&mut s, format!("{C} ---- Routing ----"));
    if ctx.dynamic() {
        let b = ctx.bgp();
        line(
            &mut s,
            format!(
                "{C} BGP runs over the inside addresses inside the active tunnel's policy; the standby tunnel's session comes up when its policy is enabled."
            ),
        );
        line(
            &mut s,
            format!("{C} announce your networks with output.network= (an address list)"),
        );
        line(&mut s, "/routing bgp connection");
        for t in &ctx.tunnels {
            for (k, i) in t.inside_v4.iter().chain(t.inside_v6.iter()).enumerate() {
                line(
                    &mut s,
                    format!(
                        "add name={}-t{}-{} as={} remote.address={} remote.as={} local.address={} local.role=ebgp hold-time={}s keepalive-time={}s",
                        conn.id,
                        t.n,
                        k + 1,
                        ctx.cgw_asn_text(),
                        i.appliance,
                        ctx.appliance_asn(),
                        i.customer,
                        b.hold_time_secs,
                        b.keepalive_secs
                    ),
                );
            }
        }
    } else {
        let nets: Vec<String> = ctx
            .appliance_networks()
            .iter()
            .map(ToString::to_string)
            .collect();
        line(
            &mut s,
            format!(
                "{C} Static routing: the appliance's networks ({}) are reached through the active tunnel's policy; no route to a tunnel is needed.",
                nets.join(", ")
            ),
        );
        if remote_ts.prefix_len() != 0 {
            line(
                &mut s,
                format!("{C} The appliance-side selector {remote_ts} must cover them."),
            );
        }
    }
    s
}
