//! The per-tunnel rate policy from the configuration (spec § 21.3,
//! § 11.2): each tunnel's caps by its bandwidth option, installed on the
//! workers as per-worker shares
//! ([`Runtime::set_tunnel_caps`](crate::runtime::Runtime::set_tunnel_caps)), and
//! policing switched on or off for the appliance by
//! `dataplane.tunnel_policing`.
//!
//! ```text
//!   apply(config) ──► caps per tunnel id (changed ones only) ──► SetTunnelPolicy × workers
//!                └──► tunnel_policing changed ──────────────────► SetPolicing × workers
//!   tunnel removed ──► ClearTunnelPolicy (its id may be reused)
//! ```

use std::collections::BTreeMap;

use control::config::{ApplianceConfig, GatewayKind, TunnelBandwidth};
use fib::TunnelId;
use worker::Command;
use worker::policy::{Bandwidth, Caps, caps_for};

use super::{ACK_TIMEOUT, DpdkDataplane};

/// The bandwidth class of a tunnel of `kind`'s gateway with option
/// `bandwidth`: a concentrator's tunnels are capped at the site figure
/// whatever the option says (validation refuses `large` there).
#[must_use]
pub(crate) fn bandwidth_class(kind: GatewayKind, bandwidth: TunnelBandwidth) -> Bandwidth {
    match (kind, bandwidth) {
        (GatewayKind::Concentrator, _) => Bandwidth::ConcentratorSite,
        (_, TunnelBandwidth::Large) => Bandwidth::Large,
        _ => Bandwidth::Standard,
    }
}

/// What the workers police now.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Caps installed per tunnel id.
    caps: BTreeMap<TunnelId, Caps>,
    /// Policing switched on (`None`: never sent; the workers start on).
    enabled: Option<bool>,
}

impl DpdkDataplane {
    /// Bring the workers' rate policy in line with `config` (tunnel ids
    /// already assigned). Failures are logged and counted as apply errors;
    /// the next `apply` retries what did not take.
    pub(super) fn apply_rate_policy(&mut self, config: &ApplianceConfig) {
        let mut wanted: BTreeMap<TunnelId, Caps> = BTreeMap::new();
        for c in &config.connections {
            for (i, t) in c.tunnels.iter().enumerate() {
                let key = control::dataplane::TunnelKey {
                    connection_id: c.id.clone(),
                    tunnel: i,
                };
                if let Some(id) = self.ids.get(&key) {
                    let class = bandwidth_class(config.gateway.kind, t.tunnel_bandwidth);
                    wanted.insert(*id, caps_for(class));
                }
            }
        }
        let gone: Vec<TunnelId> = self
            .policies
            .caps
            .keys()
            .filter(|t| !wanted.contains_key(t))
            .copied()
            .collect();
        for tunnel in gone {
            self.policies.caps.remove(&tunnel);
            if let Err(e) = self.run("ClearTunnelPolicy", Command::ClearTunnelPolicy { tunnel }) {
                self.log_apply_error(&format!("rate policy of tunnel {}", tunnel.0), &e);
            }
        }
        for (tunnel, caps) in wanted {
            if self.policies.caps.get(&tunnel) == Some(&caps) {
                continue;
            }
            let Some(rt) = self.rt.as_mut() else {
                return;
            };
            let result = rt
                .set_tunnel_caps(tunnel, caps)
                .and_then(|ticket| rt.wait(ticket, ACK_TIMEOUT));
            match result {
                Ok(()) => {
                    self.policies.caps.insert(tunnel, caps);
                }
                Err(e) => self.log_apply_error(&format!("rate policy of tunnel {}", tunnel.0), &e),
            }
        }
        let enabled = config.dataplane.tunnel_policing;
        if self.policies.enabled != Some(enabled) {
            match self.run("SetPolicing", Command::SetPolicing { enabled }) {
                Ok(()) => self.policies.enabled = Some(enabled),
                Err(e) => self.log_apply_error("tunnel policing", &e),
            }
        }
    }

    /// The caps installed for `tunnel`, if it is policed.
    #[must_use]
    pub fn tunnel_caps(&self, tunnel: TunnelId) -> Option<Caps> {
        self.policies.caps.get(&tunnel).copied()
    }

    /// Whether the workers police (as last applied).
    #[must_use]
    pub fn policing(&self) -> Option<bool> {
        self.policies.enabled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_gateway_kind_and_the_option() {
        use GatewayKind::{Concentrator, TransitGateway, VirtualPrivateGateway};
        use TunnelBandwidth::{Large, Standard};
        assert_eq!(bandwidth_class(TransitGateway, Large), Bandwidth::Large);
        assert_eq!(
            bandwidth_class(TransitGateway, Standard),
            Bandwidth::Standard
        );
        assert_eq!(
            bandwidth_class(VirtualPrivateGateway, Standard),
            Bandwidth::Standard
        );
        assert_eq!(
            bandwidth_class(Concentrator, Standard),
            Bandwidth::ConcentratorSite
        );
        assert_eq!(
            caps_for(bandwidth_class(Concentrator, Standard)).packets_per_sec,
            10_000
        );
    }
}
