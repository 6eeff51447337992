//! Inbound steering: which worker decrypts a tunnel's ESP.
//!
//! Every worker carries every tunnel (see the runtime's "Several
//! workers"), so steering is about spreading load, not correctness: where
//! the outside port's driver has `rte_flow`, each tunnel's ESP (IP
//! protocol 50) and NAT-T (UDP 4500) from its customer gateway to its
//! outside address is sent by a flow rule to one rx queue, chosen so that
//! the two tunnels of one connection land on different workers
//! ([`queue_for`]). Packets no rule matches (a peer behind a NAT whose
//! address differs from the configured one, a certificate peer without
//! an address) are spread by RSS as before.
//!
//! Where the driver has no `rte_flow` (`net_af_packet`, `net_memif`,
//! `net_null`: "Function not implemented"), or refuses the rules, the port
//! stays on RSS / the driver's spreading and the workers steer in
//! software instead: [`SteeringMode::Handoff`] says why, and the worker
//! that receives a tunnel's ESP hands it to the tunnel's worker over a
//! ring ([`super::handoff`]), which also places peers behind a NAT and
//! certificate peers without a configured address (it goes by SPI, not
//! addresses). `net_tap` refuses them on a kernel built
//! without `CONFIG_NET_SCH_MULTIQ`, `CONFIG_NET_CLS_FLOWER` and
//! `CONFIG_NET_ACT_SKBEDIT` (the PMD turns a rule into a TC flower filter
//! with an skbedit `queue_mapping` action under a `multiq` root qdisc of
//! the tap interface, which selects the tun queue of what the kernel
//! sends): at probe the PMD logs "Could not add multiq qdisc (2): No such
//! file or directory … Disabling rte flow support", validates rules all
//! the same, and `rte_flow_create` fails with "Kernel refused TC filter
//! rule creation (22)" / "overlapping rules or Kernel too old for flower
//! support". That is the case of the test machines' 6.18 kernel, so the
//! rule path is tested there only up to this fallback (and hand-off
//! end to end).
//! That is decided once at start by installing and removing a probe rule
//! (`rte_flow_validate` is not enough: the tap PMD validates rules its
//! kernel then refuses).
//!
//! Rules follow the tunnels ([`Runtime::steer`](super::Runtime::steer)
//! installs what is new or changed and removes what is gone) and are
//! destroyed before the port closes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use dpdk::{Flow, FlowL4, FlowMatch, Port};
use fib::TunnelId;

/// NAT-T's UDP port (RFC 3948).
const NAT_T_PORT: u16 = 4500;

/// One tunnel's inbound traffic and the rx queue (= worker) it should go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteerTunnel {
    /// The tunnel.
    pub tunnel: TunnelId,
    /// Our outside address of the tunnel, when configured.
    pub local: Option<IpAddr>,
    /// The customer gateway's address, when configured (a certificate
    /// peer may have none). A flow rule needs both addresses, so without
    /// them the tunnel stays on RSS where rules steer; hand-off, which
    /// goes by SPI, places it all the same.
    pub remote: Option<IpAddr>,
    /// The rx queue, i.e. the worker.
    pub queue: u16,
}

/// How the outside port spreads inbound ESP over the workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SteeringMode {
    /// One worker: nothing to steer.
    Single,
    /// Per-tunnel `rte_flow` rules.
    Flow,
    /// No rules (why: the driver's refusal of the probe rule); RSS or the
    /// driver spreads, and the workers hand each tunnel's ESP to its
    /// worker ([`super::handoff`]).
    Handoff {
        /// The driver's refusal of the probe rule.
        reason: String,
    },
}

impl std::fmt::Display for SteeringMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single => write!(f, "one worker, no steering"),
            Self::Flow => write!(
                f,
                "each tunnel's ESP and UDP 4500 steered to one worker by rte_flow rules"
            ),
            Self::Handoff { reason } => write!(
                f,
                "no rte_flow steering, each tunnel's ESP handed to its worker by the worker \
                 that receives it: {reason}"
            ),
        }
    }
}

/// The rx queue of tunnel `index` (0 or 1) of a connection whose first
/// tunnel id is `base`, with `workers` queues: consecutive for the two
/// tunnels of one connection (different queues whenever there are
/// several), starting where the connection's ids fall, so connections
/// spread over the workers too.
#[must_use]
pub fn queue_for(base: u32, index: usize, workers: usize) -> u16 {
    let w = u64::try_from(workers.max(1)).unwrap_or(1);
    let i = u64::try_from(index).unwrap_or(0);
    u16::try_from((u64::from(base) + i) % w).unwrap_or(0)
}

/// The steering state of the outside port.
#[derive(Debug)]
pub(super) struct Steering {
    mode: SteeringMode,
    port: Option<Port>,
    installed: BTreeMap<TunnelId, (SteerTunnel, Vec<Flow>)>,
    failures: u64,
}

impl Steering {
    /// Nothing to steer (one worker, or not started).
    pub(super) fn single() -> Self {
        Self {
            mode: SteeringMode::Single,
            port: None,
            installed: BTreeMap::new(),
            failures: 0,
        }
    }

    /// Decide for `port` with `workers` rx queues: a probe rule (matching
    /// nothing that can arrive: ESP from and to 255.255.255.255) is
    /// installed and removed.
    pub(super) fn probe(port: &Port, device: &str, workers: usize) -> Self {
        if workers < 2 {
            return Self::single();
        }
        let probe = FlowMatch {
            src: Some(IpAddr::V4(Ipv4Addr::BROADCAST)),
            dst: IpAddr::V4(Ipv4Addr::BROADCAST),
            l4: FlowL4::Esp { spi: None },
        };
        let result = port.flow_to_queue(&probe, 0).and_then(Flow::destroy);
        let mut s = Self::single();
        match result {
            Ok(()) => {
                s.mode = SteeringMode::Flow;
                s.port = Some(port.clone());
            }
            Err(e) => {
                s.mode = SteeringMode::Handoff {
                    reason: format!("outside port {device}: {e}"),
                };
            }
        }
        s
    }

    pub(super) fn mode(&self) -> &SteeringMode {
        &self.mode
    }

    /// The queue `tunnel`'s rules steer to, if it has rules.
    pub(super) fn queue_of(&self, tunnel: TunnelId) -> Option<u16> {
        self.installed.get(&tunnel).map(|(t, _)| t.queue)
    }

    /// Rules the driver refused since start.
    pub(super) fn failures(&self) -> u64 {
        self.failures
    }

    /// Make the rules those of `tunnels`: unchanged tunnels keep theirs,
    /// changed or gone ones lose them, new ones get them. Returns the
    /// refusals (those tunnels stay on RSS). With hand-off only the
    /// queues are recorded (the runtime sends the workers their table).
    pub(super) fn steer(&mut self, tunnels: &[SteerTunnel]) -> Vec<String> {
        if matches!(self.mode, SteeringMode::Handoff { .. }) {
            self.installed = tunnels
                .iter()
                .map(|t| (t.tunnel, (*t, Vec::new())))
                .collect();
            return Vec::new();
        }
        let Some(port) = self.port.clone() else {
            return Vec::new();
        };
        let wanted: BTreeMap<TunnelId, &SteerTunnel> =
            tunnels.iter().map(|t| (t.tunnel, t)).collect();
        self.installed
            .retain(|id, (t, _)| wanted.get(id).is_some_and(|n| *n == t));
        let mut problems = Vec::new();
        for t in tunnels {
            if self.installed.contains_key(&t.tunnel) {
                continue;
            }
            if let Some(flows) = self.rules_for(&port, t, &mut problems) {
                self.installed.insert(t.tunnel, (*t, flows));
            }
        }
        problems
    }

    /// The two rules (ESP, NAT-T) of one tunnel, or none when it has no
    /// addresses to match or the driver refused one (counted).
    fn rules_for(
        &mut self,
        port: &Port,
        t: &SteerTunnel,
        problems: &mut Vec<String>,
    ) -> Option<Vec<Flow>> {
        let (Some(local), Some(remote)) = (t.local, t.remote) else {
            return None;
        };
        if local.is_ipv4() != remote.is_ipv4() {
            return None;
        }
        let mut flows = Vec::with_capacity(2);
        for l4 in [
            FlowL4::Esp { spi: None },
            FlowL4::Udp {
                dst_port: NAT_T_PORT,
            },
        ] {
            let m = FlowMatch {
                src: Some(remote),
                dst: local,
                l4,
            };
            match port.flow_to_queue(&m, t.queue) {
                Ok(f) => flows.push(f),
                Err(e) => {
                    self.failures += 1;
                    problems.push(format!("tunnel {} ({m}): {e}", t.tunnel.0));
                }
            }
        }
        (flows.len() == 2).then_some(flows)
    }

    /// Changes the steering of some tunnels only: `remove` lose theirs,
    /// `add` get theirs (replacing what they had); the others keep
    /// their rules. Returns the rules the driver refused.
    pub(super) fn update(&mut self, add: &[SteerTunnel], remove: &[TunnelId]) -> Vec<String> {
        for id in remove {
            self.installed.remove(id);
        }
        for t in add {
            if self
                .installed
                .get(&t.tunnel)
                .is_some_and(|(old, _)| old != t)
            {
                self.installed.remove(&t.tunnel);
            }
        }
        if matches!(self.mode, SteeringMode::Handoff { .. }) {
            for t in add {
                self.installed.insert(t.tunnel, (*t, Vec::new()));
            }
            return Vec::new();
        }
        let Some(port) = self.port.clone() else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        for t in add {
            if self.installed.contains_key(&t.tunnel) {
                continue;
            }
            if let Some(flows) = self.rules_for(&port, t, &mut problems) {
                self.installed.insert(t.tunnel, (*t, flows));
            }
        }
        problems
    }

    /// The owner table of hand-off: each steered tunnel's queue by id.
    pub(super) fn owners(&self) -> Vec<u16> {
        let len = self
            .installed
            .keys()
            .next_back()
            .map_or(0, |t| t.0 as usize + 1);
        let mut owners = vec![worker::NO_OWNER; len];
        for (id, (t, _)) in &self.installed {
            if let Some(o) = owners.get_mut(id.0 as usize) {
                *o = t.queue;
            }
        }
        owners
    }

    pub(super) fn clear(&mut self) {
        self.installed.clear();
        self.port = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_tunnels_of_a_connection_get_different_queues() {
        for workers in 2..=8 {
            for base in 0..64 {
                assert_ne!(
                    queue_for(base, 0, workers),
                    queue_for(base, 1, workers),
                    "base {base} workers {workers}"
                );
                assert!(usize::from(queue_for(base, 1, workers)) < workers);
            }
        }
        // Connections with ids (0,1), (2,3), (4,5) on four workers use all
        // four queues; on one worker everything is queue 0.
        let q: Vec<u16> = [0, 2, 4]
            .iter()
            .flat_map(|&b| [queue_for(b, 0, 4), queue_for(b, 1, 4)])
            .collect();
        assert_eq!(q, [0, 1, 2, 3, 0, 1]);
        assert_eq!(queue_for(7, 1, 1), 0);
    }

    #[test]
    fn modes_say_what_they_mean() {
        let m = SteeringMode::Handoff {
            reason: "outside port net_null0: rte_flow_create: not supported".into(),
        };
        assert!(m.to_string().contains("no rte_flow steering"));
        assert!(m.to_string().contains("handed to its worker"));
        assert!(m.to_string().contains("net_null0"));
        assert!(SteeringMode::Flow.to_string().contains("rte_flow rules"));
    }
}
