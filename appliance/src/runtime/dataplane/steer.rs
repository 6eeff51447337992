//! Inbound steering from the configuration: each tunnel's ESP and NAT-T
//! from its customer gateway to its outside address goes to one worker,
//! the two tunnels of a connection to different ones
//! ([`queue_for`]`(lowest tunnel id of the connection, tunnel index,
//! workers)`), by flow rules where the outside port's driver has them
//! ([`Runtime::steer`](crate::runtime::Runtime::steer); elsewhere a
//! no-op, the runtime's steering mode says why).
//!
//! ```text
//!   apply(config) ──► SteerTunnel per tunnel (with its addresses if known) ──► Runtime::steer
//!                     (rules of changed/removed tunnels go, new ones come)
//! ```

use control::config::ApplianceConfig;
use control::dataplane::TunnelKey;

use super::DpdkDataplane;
use crate::runtime::steering::{SteerTunnel, queue_for};

/// The steering wanted for `config` given its tunnel ids: every tunnel
/// with an id. Those whose customer gateway has no configured address
/// (certificate peers) or whose outside address is unset carry no
/// address: flow rules cannot match them (they stay on RSS where rules
/// steer), hand-off places them by SPI.
pub(super) fn wanted(
    config: &ApplianceConfig,
    ids: &std::collections::BTreeMap<TunnelKey, fib::TunnelId>,
    workers: usize,
) -> Vec<SteerTunnel> {
    let mut out = Vec::new();
    for c in &config.connections {
        let remote = config
            .customer_gateways
            .iter()
            .find(|g| g.id == c.customer_gateway_id)
            .and_then(|g| g.ip_address);
        let tid = |tunnel| {
            ids.get(&TunnelKey {
                connection_id: c.id.clone(),
                tunnel,
            })
            .copied()
        };
        let (Some(t0), Some(t1)) = (tid(0), tid(1)) else {
            continue;
        };
        let base = t0.0.min(t1.0);
        for (i, (tunnel, t)) in [t0, t1].into_iter().zip(&c.tunnels).enumerate() {
            out.push(SteerTunnel {
                tunnel,
                local: t.outside_ip_address,
                remote,
                queue: queue_for(base, i, workers),
            });
        }
    }
    out
}

impl DpdkDataplane {
    /// Install the flow rules `config` calls for (tunnel ids assigned).
    /// Refused rules are logged and counted as apply errors; their
    /// tunnels stay on RSS and the next `apply` tries again.
    pub(super) fn apply_steering(&mut self, config: &ApplianceConfig) {
        let Some(rt) = self.rt.as_mut() else {
            return;
        };
        let ids: std::collections::BTreeMap<TunnelKey, fib::TunnelId> =
            self.model.ids().map(|(k, t)| (k.clone(), t)).collect();
        let wanted = wanted(config, &ids, rt.workers());
        for p in rt.steer(&wanted) {
            self.log_apply_error("steering", &p);
        }
    }

    /// Steer one connection's two tunnels (after a change to it or to its
    /// customer gateway's address); the others keep their rules.
    pub(super) fn steer_connection(&mut self, connection_id: &str) {
        let (Some(info), Some(ids)) = (
            self.conns.get(connection_id),
            self.model.connection_ids(connection_id),
        ) else {
            return;
        };
        let Some(rt) = self.rt.as_mut() else {
            return;
        };
        if rt.workers() < 2 {
            return;
        }
        let remote = self
            .gateways
            .get(&info.customer_gateway_id)
            .copied()
            .flatten();
        let base = ids[0].0.min(ids[1].0);
        let add: Vec<SteerTunnel> = ids
            .into_iter()
            .zip(info.outside)
            .enumerate()
            .map(|(i, (tunnel, local))| SteerTunnel {
                tunnel,
                local,
                remote,
                queue: queue_for(base, i, rt.workers()),
            })
            .collect();
        let problems = rt.steer_update(&add, &[]);
        for p in problems {
            self.log_apply_error("steering", &p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_s_tunnels_go_to_two_workers() {
        let cfg = ApplianceConfig::from_toml_str(include_str!(
            "../../../../control/examples/appliance.toml"
        ))
        .unwrap();
        let c = &cfg.connections[0];
        let mut ids = std::collections::BTreeMap::new();
        for (i, id) in [(0, 4), (1, 5)] {
            ids.insert(
                TunnelKey {
                    connection_id: c.id.clone(),
                    tunnel: i,
                },
                fib::TunnelId(id),
            );
        }
        let w = wanted(&cfg, &ids, 2);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_ne!(w[0].queue, w[1].queue);
        assert_eq!(w[0].local, c.tunnels[0].outside_ip_address);
        assert_eq!(w[1].local, c.tunnels[1].outside_ip_address);
        assert!(w[0].remote.is_some() && w[0].remote == w[1].remote);
        // Without ids (not applied yet) nothing is steered.
        assert!(wanted(&cfg, &std::collections::BTreeMap::new(), 2).is_empty());
        // A certificate peer without an address: both tunnels still get
        // their workers (hand-off places them by SPI), with no remote
        // address for a flow rule.
        let mut cert = cfg.clone();
        cert.customer_gateways[0].ip_address = None;
        let w = wanted(&cert, &ids, 2);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_ne!(w[0].queue, w[1].queue);
        assert_eq!((w[0].remote, w[1].remote), (None, None));
    }
}
