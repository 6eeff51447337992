//! Metrics in the Prometheus text exposition format (version 0.0.4).
//!
//! Design: the workers keep lock-free per-worker counters (the dataplane's
//! per-SA and `DropReason` arrays); the control core sums them when asked
//! ([`Dataplane::stats`]) and this module renders one snapshot per scrape.
//! Nothing here keeps state, so a scrape never blocks a worker and two
//! scrapes cannot disagree about what a counter means.
//!
//! The spec's metrics (`site-to-site-vpn.md` §20.7, §25.6) map as follows:
//!
//! | spec | exposed as | labels |
//! | --- | --- | --- |
//! | `TunnelState` per tunnel (0/1) | `vpn_tunnel_state` gauge | `vpn_id`, `tunnel_ip_address` |
//! | `TunnelState` per connection (mean, 0..1) | `vpn_connection_tunnel_state` gauge | `vpn_id` |
//! | `TunnelDataIn` (after decryption) | `vpn_tunnel_data_in_bytes_total` counter | `vpn_id`, `tunnel_ip_address` |
//! | `TunnelDataOut` (before encryption) | `vpn_tunnel_data_out_bytes_total` counter | `vpn_id`, `tunnel_ip_address` |
//!
//! plus `vpn_tunnel_state_changes_total` / `vpn_tunnel_flaps_total` and
//! `vpn_tunnel_last_status_change_timestamp_seconds` per tunnel,
//! `vpn_tunnel_negotiated_info` (value 1, the negotiated suite as labels),
//! `vpn_health_events_total{kind}`,
//! packet counters per tunnel, drops per tunnel and per reason, and
//! port totals. CloudWatch's "bytes since the last data point" is
//! `increase()` over the counter.
//!
//! `TunnelState` is 1 for a static tunnel when its child SA is up, and for
//! a BGP tunnel only when its BGP session is Established (§20.7); the
//! connection value is the mean of its two tunnels, so 0.5 means one tunnel
//! is down (§24 item 22: fractions only at connection level).

use std::fmt::Write as _;

use crate::config::ApplianceConfig;
use crate::dataplane::{
    Dataplane, DataplaneStats, TunnelCounters, TunnelKey, TunnelRuntimeState, TunnelUpDown,
};
use crate::visibility::{HealthEventKind, HealthMonitor};

/// Reads one counter out of a tunnel's counters.
type CounterGetter = fn(&TunnelCounters) -> u64;

/// Content type of the rendered text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escape a label value (backslash, double quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A control-plane metric a daemon thread publishes (e.g. the IKE
/// service's cookie and drop counters), rendered after the dataplane's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMetric {
    /// Full metric name (`vpn_ike_…`).
    pub name: &'static str,
    /// `# HELP` text.
    pub help: &'static str,
    /// A gauge (else a counter).
    pub gauge: bool,
    /// The value.
    pub value: u64,
}

/// Append `metrics` to `out` in the exposition format.
pub fn render_control(out: &mut String, metrics: &[ControlMetric]) {
    for m in metrics {
        header(
            out,
            m.name,
            if m.gauge { "gauge" } else { "counter" },
            m.help,
        );
        let _ = writeln!(out, "{} {}", m.name, m.value);
    }
}

/// Status changes, flaps and the negotiated suite of each tunnel
/// (issue 21 item 6).
fn render_tunnel_visibility(
    out: &mut String,
    tunnels: &[(String, String, usize, bool)],
    states: &[TunnelRuntimeState],
) {
    type StateGetter = fn(&TunnelRuntimeState) -> u64;
    let counters: [(&str, &str, StateGetter); 2] = [
        (
            "vpn_tunnel_state_changes_total",
            "UP/DOWN changes of the tunnel since the daemon started.",
            |s| s.status_changes,
        ),
        (
            "vpn_tunnel_flaps_total",
            "UP to DOWN changes (flaps) of the tunnel since the daemon started.",
            |s| s.flaps,
        ),
    ];
    for (name, help, get) in counters {
        header(out, name, "counter", help);
        for ((vpn, ip, _, _), st) in tunnels.iter().zip(states) {
            let _ = writeln!(
                out,
                "{name}{{vpn_id=\"{}\",tunnel_ip_address=\"{}\"}} {}",
                esc(vpn),
                esc(ip),
                get(st)
            );
        }
    }
    header(
        out,
        "vpn_tunnel_last_status_change_timestamp_seconds",
        "gauge",
        "When the tunnel's UP/DOWN status last changed, seconds since the epoch.",
    );
    for ((vpn, ip, _, _), st) in tunnels.iter().zip(states) {
        if let Some(ms) = st.last_status_change_ms {
            let _ = writeln!(
                out,
                "vpn_tunnel_last_status_change_timestamp_seconds{{vpn_id=\"{}\",tunnel_ip_address=\"{}\"}} {}.{:03}",
                esc(vpn),
                esc(ip),
                ms / 1000,
                ms % 1000
            );
        }
    }
    header(
        out,
        "vpn_tunnel_negotiated_info",
        "gauge",
        "1 per tunnel with an established IKE SA; the labels are what IKE negotiated (GetActiveVpnTunnelStatus).",
    );
    for ((vpn, ip, _, _), st) in tunnels.iter().zip(states) {
        let Some(n) = &st.negotiated else {
            continue;
        };
        let opt = |v: Option<String>| v.unwrap_or_default();
        let _ = writeln!(
            out,
            "vpn_tunnel_negotiated_info{{vpn_id=\"{}\",tunnel_ip_address=\"{}\",ike_version=\"{}\",\
             phase1_encryption=\"{}\",phase1_integrity=\"{}\",phase1_prf=\"{}\",phase1_dh_group=\"{}\",\
             phase2_encryption=\"{}\",phase2_integrity=\"{}\",phase2_pfs_dh_group=\"{}\"}} 1",
            esc(vpn),
            esc(ip),
            n.ike_version,
            n.phase1_encryption,
            opt(n.phase1_integrity.map(|i| i.to_string())),
            n.phase1_prf,
            n.phase1_dh_group,
            opt(n.phase2_encryption.map(|e| e.to_string())),
            opt(n.phase2_integrity.map(|i| i.to_string())),
            opt(n.phase2_pfs_dh_group.map(|g| g.to_string())),
        );
    }
}

/// Health events raised since start, by kind (spec §20.9).
pub fn render_health(out: &mut String, health: &HealthMonitor) {
    header(
        out,
        "vpn_health_events_total",
        "counter",
        "Health events raised since the daemon started, by kind (tunnel_unhealthy: DOWN longer than the threshold).",
    );
    for kind in HealthEventKind::ALL {
        let _ = writeln!(
            out,
            "vpn_health_events_total{{kind=\"{}\"}} {}",
            kind.as_str(),
            health.total(kind)
        );
    }
}

/// Render every metric for `config` from `dataplane`'s state and counters.
#[must_use]
pub fn render(config: &ApplianceConfig, dataplane: &dyn Dataplane) -> String {
    let stats = dataplane.stats();
    let mut out = String::with_capacity(4096);

    // (vpn_id, tunnel_ip, key, up)
    let mut tunnels = Vec::new();
    let mut states = Vec::new();
    for c in &config.connections {
        for (i, t) in c.tunnels.iter().enumerate() {
            let key = TunnelKey {
                connection_id: c.id.clone(),
                tunnel: i,
            };
            let state = dataplane.tunnel_state(&key);
            let up = state.up_down(c.routing) == TunnelUpDown::Up;
            states.push(state);
            let ip = t
                .outside_ip_address
                .map_or_else(|| format!("tunnel{i}"), |a| a.to_string());
            tunnels.push((c.id.clone(), ip, i, up));
        }
    }

    header(
        &mut out,
        "vpn_tunnel_state",
        "gauge",
        "TunnelState: 1 when the tunnel is UP (static: child SA up; BGP: session Established), else 0.",
    );
    for (vpn, ip, _, up) in &tunnels {
        let _ = writeln!(
            out,
            "vpn_tunnel_state{{vpn_id=\"{}\",tunnel_ip_address=\"{}\"}} {}",
            esc(vpn),
            esc(ip),
            u8::from(*up)
        );
    }

    header(
        &mut out,
        "vpn_connection_tunnel_state",
        "gauge",
        "TunnelState per connection: mean of its tunnels; between 0 and 1 means at least one tunnel is not UP.",
    );
    for c in &config.connections {
        let ups = tunnels
            .iter()
            .filter(|(v, _, _, up)| *v == c.id && *up)
            .count();
        let value = match ups {
            0 => "0",
            1 => "0.5",
            _ => "1",
        };
        let _ = writeln!(
            out,
            "vpn_connection_tunnel_state{{vpn_id=\"{}\"}} {value}",
            esc(&c.id)
        );
    }

    render_tunnel_visibility(&mut out, &tunnels, &states);

    let per_tunnel: [(&str, &str, CounterGetter); 5] = [
        (
            "vpn_tunnel_data_in_bytes_total",
            "TunnelDataIn: bytes received from the customer gateway, counted after decryption.",
            |c| c.data_in_bytes,
        ),
        (
            "vpn_tunnel_data_out_bytes_total",
            "TunnelDataOut: bytes sent to the customer gateway, counted before encryption.",
            |c| c.data_out_bytes,
        ),
        (
            "vpn_tunnel_packets_in_total",
            "Packets decrypted on the tunnel.",
            |c| c.packets_in,
        ),
        (
            "vpn_tunnel_packets_out_total",
            "Packets encrypted on the tunnel.",
            |c| c.packets_out,
        ),
        (
            "vpn_tunnel_drops_total",
            "Packets of the tunnel dropped, any reason.",
            |c| c.drops,
        ),
    ];
    for (name, help, get) in per_tunnel {
        header(&mut out, name, "counter", help);
        for (vpn, ip, i, _) in &tunnels {
            let counters = stats
                .tunnels
                .get(&DataplaneStats::tunnel_key(vpn, *i))
                .copied()
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{name}{{vpn_id=\"{}\",tunnel_ip_address=\"{}\"}} {}",
                esc(vpn),
                esc(ip),
                get(&counters)
            );
        }
    }

    header(
        &mut out,
        "vpn_dataplane_drops_total",
        "counter",
        "Packets dropped by the dataplane, by reason.",
    );
    for (reason, n) in &stats.drops {
        let _ = writeln!(
            out,
            "vpn_dataplane_drops_total{{reason=\"{}\"}} {n}",
            esc(reason)
        );
    }
    header(
        &mut out,
        "vpn_port_rx_packets_total",
        "counter",
        "Packets received on all ports.",
    );
    let _ = writeln!(out, "vpn_port_rx_packets_total {}", stats.rx_packets);
    header(
        &mut out,
        "vpn_port_tx_packets_total",
        "counter",
        "Packets sent on all ports.",
    );
    let _ = writeln!(out, "vpn_port_tx_packets_total {}", stats.tx_packets);
    type PortField = fn(&crate::dataplane::PortCounters) -> u64;
    let per_port: [(&str, &str, PortField); 6] = [
        (
            "vpn_port_packets_received_total",
            "Packets received, per port.",
            |p| p.rx_packets,
        ),
        (
            "vpn_port_packets_sent_total",
            "Packets sent, per port.",
            |p| p.tx_packets,
        ),
        (
            "vpn_port_bytes_received_total",
            "Bytes received, per port.",
            |p| p.rx_bytes,
        ),
        ("vpn_port_bytes_sent_total", "Bytes sent, per port.", |p| {
            p.tx_bytes
        }),
        (
            "vpn_port_rx_dropped_total",
            "Packets the NIC dropped on receive (no descriptor, no mbuf, error), per port.",
            |p| p.rx_dropped,
        ),
        (
            "vpn_port_tx_errors_total",
            "Transmit errors, per port.",
            |p| p.tx_errors,
        ),
    ];
    if !stats.ports.is_empty() {
        for (name, help, get) in per_port {
            header(&mut out, name, "counter", help);
            for (port, c) in &stats.ports {
                let _ = writeln!(out, "{name}{{port=\"{}\"}} {}", esc(port), get(c));
            }
        }
    }
    if stats.ports.values().any(|p| p.link_up.is_some()) {
        header(
            &mut out,
            "vpn_port_link_up",
            "gauge",
            "1 when the port's link is up, 0 when down, per port (ports whose driver reports no link state are left out).",
        );
        for (port, c) in &stats.ports {
            if let Some(up) = c.link_up {
                let _ = writeln!(
                    out,
                    "vpn_port_link_up{{port=\"{}\"}} {}",
                    esc(port),
                    u8::from(up)
                );
            }
        }
        header(
            &mut out,
            "vpn_port_link_changes_total",
            "counter",
            "Link state changes seen since start, per port.",
        );
        for (port, c) in &stats.ports {
            let _ = writeln!(
                out,
                "vpn_port_link_changes_total{{port=\"{}\"}} {}",
                esc(port),
                c.link_changes
            );
        }
    }
    if !stats.worker.is_empty() {
        header(
            &mut out,
            "vpn_worker_counter",
            "gauge",
            "Worker pipeline counters by name (encap_packets, decap_packets, punted, commands_applied, ...), summed over workers.",
        );
        for (counter, n) in &stats.worker {
            let _ = writeln!(
                out,
                "vpn_worker_counter{{counter=\"{}\"}} {n}",
                esc(counter)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_metrics_render_with_help_and_type() {
        let mut out = String::new();
        render_control(
            &mut out,
            &[ControlMetric {
                name: "vpn_ike_cookies_sent_total",
                help: "COOKIE notifications sent.",
                gauge: false,
                value: 7,
            }],
        );
        assert_eq!(
            out,
            "# HELP vpn_ike_cookies_sent_total COOKIE notifications sent.\n# TYPE vpn_ike_cookies_sent_total counter\nvpn_ike_cookies_sent_total 7\n"
        );
    }

    use super::*;
    use crate::config::RoutingType;
    use crate::dataplane::{InMemoryDataplane, TunnelRuntimeState};
    use crate::logs::IkePhaseState;

    fn example() -> ApplianceConfig {
        ApplianceConfig::from_toml_str(include_str!("../examples/appliance.toml")).unwrap()
    }

    #[test]
    fn tunnel_state_follows_bgp_for_dynamic_connections() {
        let cfg = example();
        assert_eq!(cfg.connections[0].routing, RoutingType::Dynamic);
        let mut dp = InMemoryDataplane::new();
        let up_ipsec = TunnelRuntimeState {
            ike_phase1_state: IkePhaseState::Established,
            ike_phase2_state: IkePhaseState::Established,
            ..TunnelRuntimeState::default()
        };
        let key0 = TunnelKey {
            connection_id: "vpn-branch1".into(),
            tunnel: 0,
        };
        dp.set_tunnel_state(key0.clone(), up_ipsec.clone());
        let text = render(&cfg, &dp);
        assert!(text.contains(
            "vpn_tunnel_state{vpn_id=\"vpn-branch1\",tunnel_ip_address=\"198.51.100.10\"} 0"
        ));
        dp.set_tunnel_state(
            key0,
            TunnelRuntimeState {
                bgp_state: Some("Established".into()),
                ..up_ipsec
            },
        );
        let text = render(&cfg, &dp);
        assert!(text.contains(
            "vpn_tunnel_state{vpn_id=\"vpn-branch1\",tunnel_ip_address=\"198.51.100.10\"} 1"
        ));
        assert!(text.contains("vpn_connection_tunnel_state{vpn_id=\"vpn-branch1\"} 0.5"));
    }

    #[test]
    fn counters_are_rendered_with_help_and_type() {
        let cfg = example();
        let mut dp = InMemoryDataplane::new();
        let mut stats = DataplaneStats::default();
        stats.tunnels.insert(
            DataplaneStats::tunnel_key("vpn-branch1", 1),
            TunnelCounters {
                data_in_bytes: 1500,
                data_out_bytes: 3000,
                packets_in: 1,
                packets_out: 2,
                drops: 0,
                worker: None,
            },
        );
        stats.drops.insert("replay".into(), 7);
        stats.ports.insert(
            "wan".into(),
            crate::dataplane::PortCounters {
                rx_packets: 11,
                link_up: Some(true),
                link_changes: 1,
                ..Default::default()
            },
        );
        stats.worker.insert("encap_packets".into(), 2);
        dp.set_stats(stats);
        let text = render(&cfg, &dp);
        assert!(text.contains("vpn_port_packets_received_total{port=\"wan\"} 11"));
        assert!(text.contains("vpn_port_link_up{port=\"wan\"} 1"));
        assert!(text.contains("vpn_port_link_changes_total{port=\"wan\"} 1"));
        assert!(text.contains("vpn_worker_counter{counter=\"encap_packets\"} 2"));
        assert!(text.contains("# TYPE vpn_tunnel_data_in_bytes_total counter"));
        assert!(text.contains(
            "vpn_tunnel_data_in_bytes_total{vpn_id=\"vpn-branch1\",tunnel_ip_address=\"198.51.100.11\"} 1500"
        ));
        assert!(text.contains(
            "vpn_tunnel_data_out_bytes_total{vpn_id=\"vpn-branch1\",tunnel_ip_address=\"198.51.100.11\"} 3000"
        ));
        assert!(text.contains("vpn_dataplane_drops_total{reason=\"replay\"} 7"));
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').unwrap();
            v.parse::<f64>().unwrap();
        }
    }
}
