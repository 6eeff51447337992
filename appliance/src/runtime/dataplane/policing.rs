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
//!   apply_change(connection) ──► its two tunnels' caps (changed ones only)
//!   tunnel removed ──► ClearTunnelPolicy (its id may be reused)
//! ```

use std::collections::BTreeMap;

use control::config::{ApplianceConfig, GatewayKind, TunnelBandwidth};
use fib::TunnelId;
use worker::Command;
use worker::policy::{Bandwidth, Caps, caps_for};

use super::{DpdkDataplane, Kind};

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

impl Applied {
    /// Forget a tunnel's caps (a worker refused them: the next `apply`
    /// sends them again).
    pub(super) fn forget(&mut self, tunnel: TunnelId) {
        self.caps.remove(&tunnel);
    }
}

impl DpdkDataplane {
    /// Bring the workers' rate policy in line with `config` (every
    /// tunnel; the gateway kind decides them all) and switch policing on
    /// or off. Commands are queued, not waited for; a refusal comes back
    /// through `poll` and the next `apply` retries.
    pub(super) fn apply_rate_policy(&mut self, config: &ApplianceConfig) {
        let ids: Vec<(String, [TunnelId; 2])> = config
            .connections
            .iter()
            .filter_map(|c| Some((c.id.clone(), self.model.connection_ids(&c.id)?)))
            .collect();
        for (id, tunnels) in ids {
            self.apply_caps_of(&id, tunnels);
        }
        let enabled = config.dataplane.tunnel_policing;
        if self.policies.enabled != Some(enabled) {
            let cmd = Command::SetPolicing { enabled };
            match self.queue_command("SetPolicing".to_owned(), None, Kind::Reported, cmd) {
                Ok(()) => self.policies.enabled = Some(enabled),
                Err(e) => self.log_apply_error("tunnel policing", &e),
            }
        }
    }

    /// The caps of one connection's tunnels, by their bandwidth option
    /// and the gateway kind (changed ones only).
    pub(super) fn apply_caps_of(&mut self, connection_id: &str, tunnels: [TunnelId; 2]) {
        let Some(info) = self.conns.get(connection_id) else {
            return;
        };
        let kind = self.gateway_kind;
        let wanted: Vec<(TunnelId, Caps)> = tunnels
            .into_iter()
            .zip(info.bandwidth)
            .map(|(t, b)| (t, caps_for(bandwidth_class(kind, b))))
            .collect();
        for (tunnel, caps) in wanted {
            if self.policies.caps.get(&tunnel) == Some(&caps) {
                continue;
            }
            let key = self.model.key_of(tunnel).cloned();
            let r = self.queue(
                format!("SetTunnelPolicy {}", tunnel.0),
                key.as_ref(),
                Kind::Caps(tunnel),
                |rt| rt.set_tunnel_caps(tunnel, caps),
            );
            match r {
                Ok(()) => {
                    self.policies.caps.insert(tunnel, caps);
                }
                Err(e) => self.log_apply_error(&format!("rate policy of tunnel {}", tunnel.0), &e),
            }
        }
    }

    /// Stop policing a tunnel that is gone (its id may be reused).
    pub(super) fn clear_caps(&mut self, tunnel: TunnelId) {
        if self.policies.caps.remove(&tunnel).is_none() {
            return;
        }
        let cmd = Command::ClearTunnelPolicy { tunnel };
        if let Err(e) = self.queue_command(
            format!("ClearTunnelPolicy {}", tunnel.0),
            None,
            Kind::Quiet,
            cmd,
        ) {
            self.log_apply_error(&format!("rate policy of tunnel {}", tunnel.0), &e);
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
