//! The RIB: routes from every tunnel, the spec's selection, and the result
//! as prefix → tunnel / ECMP group for the workers' [`fib::Fib`].
//!
//! Selection for one prefix (spec §10.2, §25.4 "path selection", and
//! `interop-and-remote-access.md` §6.6), in this order:
//!
//! 1. **Tunnel health first**: only routes through tunnels that are up take
//!    part; a tunnel going down drops its BGP routes at once
//!    ([`Rib::set_tunnel_up`]) and its static routes stop counting.
//! 2. **Longest prefix match** is the FIB's job; the RIB selects per prefix.
//!    The appliance's own (local) networks are never overridden: a learned
//!    route equal to or more specific than a local network is not installed.
//! 3. For the same prefix: **static > BGP** (the spec's "DX BGP" source
//!    does not exist on this appliance).
//! 4. BGP: **shortest AS_PATH**; then lowest ORIGIN (RFC 4271 § 9.1.2.2 b,
//!    which the spec's list leaves out); then **lowest MED among routes
//!    whose first AS is the same** (routes from different neighbour ASes
//!    are not compared on MED).
//! 5. Ties: in ECMP mode (transit-gateway-like) every remaining tunnel is
//!    used, as one ECMP group; otherwise (virtual-private-gateway-like) the
//!    preferred tunnel — the lowest [`TunnelId`] — carries the traffic.
//!    Static routes never use ECMP (spec §21: ECMP needs BGP).
//!
//! Installing is rebuilding: [`Rib::fib_builder`] produces the whole table,
//! and the worker runtime swaps the built [`fib::Fib`] in atomically, so
//! traffic never sees a half-updated table.

use std::collections::{BTreeMap, BTreeSet};

use fib::{FibBuilder, FibError, Target, TunnelId};
use ipnet::IpNet;

use super::session::{Action, Advert, PeerRoute};
use super::wire::Origin;

/// Where a selected route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// One of the appliance's own networks (the "local route").
    Local,
    /// A static route of a static-routing connection.
    Static,
    /// Learned over BGP.
    Bgp,
}

/// Where the selected route sends traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteTarget {
    /// Out of the inside port (local networks).
    Inside,
    /// One tunnel.
    Tunnel(TunnelId),
    /// Several tunnels, one chosen per flow (sorted, at least two).
    Ecmp(Vec<TunnelId>),
}

/// A selected route, for the FIB and for `show routes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// Where it goes.
    pub target: RouteTarget,
    /// Where it came from.
    pub source: Source,
    /// The chosen BGP path (the first ECMP member's), for `show routes`.
    pub path: Option<PeerRoute>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TunnelEntry {
    up: bool,
}

/// The routing information base of the appliance.
#[derive(Debug, Clone, Default)]
pub struct Rib {
    ecmp: bool,
    tunnels: BTreeMap<TunnelId, TunnelEntry>,
    local: BTreeSet<IpNet>,
    statics: BTreeMap<IpNet, BTreeSet<TunnelId>>,
    bgp: BTreeMap<IpNet, BTreeMap<TunnelId, PeerRoute>>,
}

impl Rib {
    /// An empty RIB; `ecmp` selects the transit-gateway-like behaviour.
    #[must_use]
    pub fn new(ecmp: bool) -> Self {
        Self {
            ecmp,
            ..Self::default()
        }
    }

    /// Registers a tunnel (down until [`Rib::set_tunnel_up`]).
    pub fn add_tunnel(&mut self, id: TunnelId) {
        self.tunnels.entry(id).or_insert(TunnelEntry { up: false });
    }

    /// Removes a tunnel and everything learned or configured through it.
    pub fn remove_tunnel(&mut self, id: TunnelId) {
        self.tunnels.remove(&id);
        self.withdraw_all(id);
        for set in self.statics.values_mut() {
            set.remove(&id);
        }
        self.statics.retain(|_, s| !s.is_empty());
    }

    /// Tunnel up (IPsec SA installed) or down (DPD clear, IKE delete). Down
    /// withdraws the tunnel's BGP routes at once.
    pub fn set_tunnel_up(&mut self, id: TunnelId, up: bool) {
        self.tunnels.entry(id).or_insert(TunnelEntry { up }).up = up;
        if !up {
            self.withdraw_all(id);
        }
    }

    /// Whether a tunnel is up.
    #[must_use]
    pub fn tunnel_up(&self, id: TunnelId) -> bool {
        self.tunnels.get(&id).is_some_and(|t| t.up)
    }

    /// The appliance's own networks (the VPC-CIDR role), routed inside.
    pub fn set_local_networks(&mut self, nets: impl IntoIterator<Item = IpNet>) {
        self.local = nets.into_iter().map(|n| n.trunc()).collect();
    }

    /// Sets the static routes of a tunnel (replacing its previous ones).
    pub fn set_static_routes(
        &mut self,
        tunnel: TunnelId,
        prefixes: impl IntoIterator<Item = IpNet>,
    ) {
        for set in self.statics.values_mut() {
            set.remove(&tunnel);
        }
        for p in prefixes {
            self.statics.entry(p.trunc()).or_default().insert(tunnel);
        }
        self.statics.retain(|_, s| !s.is_empty());
    }

    /// A BGP route learned on `tunnel` (replaces that tunnel's previous path
    /// for the prefix). Ignored while the tunnel is down.
    pub fn announce(&mut self, tunnel: TunnelId, prefix: IpNet, route: PeerRoute) {
        if !self.tunnel_up(tunnel) {
            return;
        }
        self.bgp
            .entry(prefix.trunc())
            .or_default()
            .insert(tunnel, route);
    }

    /// A BGP route withdrawn on `tunnel`.
    pub fn withdraw(&mut self, tunnel: TunnelId, prefix: IpNet) {
        let p = prefix.trunc();
        if let Some(m) = self.bgp.get_mut(&p) {
            m.remove(&tunnel);
            if m.is_empty() {
                self.bgp.remove(&p);
            }
        }
    }

    /// Every BGP route of `tunnel` withdrawn (session down, tunnel down).
    pub fn withdraw_all(&mut self, tunnel: TunnelId) {
        self.bgp.retain(|_, m| {
            m.remove(&tunnel);
            !m.is_empty()
        });
    }

    /// Applies a session's route action for `tunnel`; returns whether the
    /// RIB changed (the caller then rebuilds the FIB).
    pub fn apply(&mut self, tunnel: TunnelId, action: &Action) -> bool {
        match action {
            Action::Announce { prefix, route } => {
                self.announce(tunnel, *prefix, route.clone());
                true
            }
            Action::Withdraw { prefix } => {
                self.withdraw(tunnel, *prefix);
                true
            }
            Action::WithdrawAll => {
                self.withdraw_all(tunnel);
                true
            }
            Action::Connect | Action::Close(_) | Action::EndOfRib(_) => false,
        }
    }

    /// Number of BGP paths held (all tunnels).
    #[must_use]
    pub fn bgp_paths(&self) -> usize {
        self.bgp.values().map(BTreeMap::len).sum()
    }

    fn covered_by_local(&self, p: IpNet) -> bool {
        self.local.iter().any(|l| l.contains(&p))
    }

    /// The selected route for one prefix.
    #[must_use]
    pub fn best(&self, prefix: IpNet) -> Option<Selected> {
        self.best_excluding(prefix, &[])
    }

    /// The route that would be selected for `prefix` if the tunnels in
    /// `excluded` went down: the backup of a selected route, which the
    /// dataplane can switch to the moment IKE takes the selected tunnels
    /// down, before the sessions' withdrawals arrive.
    #[must_use]
    pub fn best_excluding(&self, prefix: IpNet, excluded: &[TunnelId]) -> Option<Selected> {
        let usable = |t: TunnelId| self.tunnel_up(t) && !excluded.contains(&t);
        let p = prefix.trunc();
        if self.local.contains(&p) {
            return Some(Selected {
                target: RouteTarget::Inside,
                source: Source::Local,
                path: None,
            });
        }
        if self.covered_by_local(p) {
            return None;
        }
        if let Some(t) = self
            .statics
            .get(&p)
            .and_then(|s| s.iter().find(|t| usable(**t)))
        {
            return Some(Selected {
                target: RouteTarget::Tunnel(*t),
                source: Source::Static,
                path: None,
            });
        }
        let paths = self.bgp.get(&p)?;
        let mut cands: Vec<(TunnelId, &PeerRoute)> = paths
            .iter()
            .filter(|(t, _)| usable(**t))
            .map(|(t, r)| (*t, r))
            .collect();
        // Shortest AS_PATH.
        let min_len = cands.iter().map(|(_, r)| r.as_path.path_len()).min()?;
        cands.retain(|(_, r)| r.as_path.path_len() == min_len);
        // Lowest ORIGIN.
        let origin_rank = |o: Origin| u16::from(u8::from(o));
        let min_origin = cands.iter().map(|(_, r)| origin_rank(r.origin)).min()?;
        cands.retain(|(_, r)| origin_rank(r.origin) == min_origin);
        // Lowest MED among paths from the same neighbour AS.
        let mut min_med: BTreeMap<Option<u32>, u32> = BTreeMap::new();
        for (_, r) in &cands {
            let m = r.med.unwrap_or(0);
            min_med
                .entry(r.as_path.first_as())
                .and_modify(|x| *x = (*x).min(m))
                .or_insert(m);
        }
        cands.retain(|(_, r)| min_med.get(&r.as_path.first_as()) == Some(&r.med.unwrap_or(0)));
        let (first, path) = *cands.first()?;
        let target = if self.ecmp && cands.len() > 1 {
            RouteTarget::Ecmp(cands.iter().map(|(t, _)| *t).collect())
        } else {
            RouteTarget::Tunnel(first)
        };
        Some(Selected {
            target,
            source: Source::Bgp,
            path: Some(path.clone()),
        })
    }

    /// Every selected route, in prefix order.
    #[must_use]
    pub fn selected(&self) -> BTreeMap<IpNet, Selected> {
        let prefixes: BTreeSet<IpNet> = self
            .local
            .iter()
            .chain(self.statics.keys())
            .chain(self.bgp.keys())
            .copied()
            .collect();
        prefixes
            .into_iter()
            .filter_map(|p| self.best(p).map(|s| (p, s)))
            .collect()
    }

    /// The selected routes as a FIB (identical ECMP member sets share one
    /// group).
    ///
    /// # Errors
    /// [`FibError`] when a tunnel index is beyond what the FIB encodes.
    pub fn fib_builder(&self) -> Result<FibBuilder, FibError> {
        let mut b = FibBuilder::new();
        let mut groups: BTreeMap<Vec<TunnelId>, fib::GroupId> = BTreeMap::new();
        for (p, s) in self.selected() {
            let target = match s.target {
                RouteTarget::Inside => Target::Inside,
                RouteTarget::Tunnel(t) => Target::Tunnel(t),
                RouteTarget::Ecmp(members) => {
                    let g = match groups.get(&members) {
                        Some(g) => *g,
                        None => {
                            let g = b.add_group(&members)?;
                            groups.insert(members, g);
                            g
                        }
                    };
                    Target::Ecmp(g)
                }
            };
            b.insert(p, target)?;
        }
        Ok(b)
    }
}

/// How we steer the peer's choice between a connection's two tunnels
/// (spec §10.2, §10.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Steering {
    /// Both tunnels advertise the same MED (transit-gateway behaviour; the
    /// peer may use both).
    #[default]
    Equal,
    /// The preferred tunnel (0 or 1) advertises a lower MED: what the spec
    /// does before maintenance on the other tunnel. The right choice for
    /// peers that support asymmetric routing.
    LowerMed {
        /// Index of the preferred tunnel in the connection.
        preferred: usize,
    },
    /// The other tunnel prepends our AS `count` extra times: for peers that
    /// cannot route asymmetrically (spec §10.2).
    Prepend {
        /// Index of the preferred tunnel in the connection.
        preferred: usize,
        /// Extra copies of our AS on the other tunnel.
        count: u8,
    },
}

/// The MED the preferred tunnel advertises under [`Steering::LowerMed`]:
/// half the base (the spec only says "lower"; 50 for the default 100).
#[must_use]
pub fn lowered_med(base_med: u32) -> u32 {
    base_med / 2
}

/// What tunnel `index` (0 or 1) of a connection advertises: the networks
/// with MED `base_med` (spec: 100), adjusted by `steering`.
#[must_use]
pub fn connection_adverts(
    networks: &[IpNet],
    base_med: u32,
    steering: Steering,
    index: usize,
) -> Vec<Advert> {
    let (med, prepend) = match steering {
        Steering::Equal => (base_med, 0),
        Steering::LowerMed { preferred } if preferred == index => (lowered_med(base_med), 0),
        Steering::LowerMed { .. } => (base_med, 0),
        Steering::Prepend { preferred, .. } if preferred == index => (base_med, 0),
        Steering::Prepend { count, .. } => (base_med, count),
    };
    networks
        .iter()
        .map(|p| Advert {
            prefix: p.trunc(),
            med: Some(med),
            prepend,
            communities: Vec::new(),
        })
        .collect()
}
