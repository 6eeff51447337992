//! The generic text sheet: every value a device needs, one per line.

use std::fmt::Write as _;

use super::Ctx;
use crate::config::{IkeVersion, RoutingType};

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn render(ctx: &Ctx<'_>) -> String {
    let (config, conn, tunnels) = (ctx.config, ctx.conn, &ctx.tunnels);
    let cgw_ip = ctx.cgw_ip_or_any();
    let cgw_asn = ctx.cgw_asn;
    let (local_ts, remote_ts) = ctx.selectors();
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
