//! What the workers should hold, kept up to date one object at a time:
//! tunnel ids, and the forwarding table as a log of [`FibChange`]s.
//!
//! ```text
//!   put_connection(c) ─┐                    per prefix: every route asking for it,
//!   delete_connection ─┤   contributions    by rank (BGP < local network <
//!   set_local_networks ┼─► (prefix, rank, ─► connection in config order: static
//!   set_state(key, s) ─┤    target)          routes < tunnel 0 inside < tunnel 1)
//!   set_dynamic(routes)┘                     the winner changed? ─► FibChange::Insert/Remove
//!                            ECMP groups ──────────────────────────► FibChange::Group
//! ```
//!
//! The rule is the one a full build of the table follows (routes inserted
//! BGP first, then local networks, then each connection in configuration
//! order, a later insert replacing an earlier one for the same prefix):
//! the highest rank wins a prefix. Keeping every contribution per prefix
//! lets a change withdraw its own routes and reveal what they hid,
//! without looking at any other connection. Each connection's static
//! routes share one group holding its primary tunnel (spec § 10.2: no
//! ECMP on static VPNs; one tunnel is the egress path, here the first UP
//! one), so a tunnel going UP or DOWN changes the group's member, not the
//! routes; while neither tunnel is UP the static routes are withdrawn
//! (spec § 10.5: static prefixes are routed while the connection is UP),
//! revealing any route they hid. BGP routes share groups by member list
//! (reference counted).
//!
//! Tunnel ids: one per (connection, tunnel) while the connection exists,
//! never renumbered when others change, the lowest free one for a new
//! tunnel (ids index the workers' bounded tables); a hash map each way,
//! so a look-up is O(1). An id given up stays out of use until
//! [`Model::release_ids`] (the runtime calls it once the table that no
//! longer names the id is in every worker), so a packet is never sent
//! into another connection's tunnel by a table still naming the old one.
//!
//! Nothing here touches DPDK; the cost of each call is its object's size
//! (its routes, the BGP routes through its tunnels), never the number of
//! connections.

use std::collections::{BTreeSet, HashMap, HashSet};

use control::config::{RoutingType, VpnConnection};
use control::dataplane::{DynamicRoute, TunnelKey, TunnelRuntimeState, TunnelUpDown};
use fib::{FibChange, GroupId, Target, TunnelId};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Who asks for a route: the highest rank wins a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Rank {
    /// A route BGP selected.
    Bgp,
    /// `gateway.local_networks`.
    Local,
    /// A connection's route: its order key, then 0 for static routes,
    /// 1 + tunnel index for inside routes.
    Conn(u64, u8),
}

/// One connection as the model holds it.
#[derive(Debug)]
struct Conn {
    /// Order key (configuration order).
    seq: u64,
    routing: RoutingType,
    ids: [TunnelId; 2],
    /// The routes it asks for.
    routes: Vec<(IpNet, Rank, Target)>,
    /// The group of its static routes (its primary tunnel).
    static_group: Option<GroupId>,
    /// The primary tunnel last given to `static_group`; empty while no
    /// tunnel is UP (the static routes are then withdrawn).
    static_members: Vec<TunnelId>,
    /// Its static routes (deduplicated), contributed while a tunnel is UP.
    static_prefixes: Vec<IpNet>,
}

/// The model (see the module doc).
#[derive(Debug, Default)]
pub(super) struct Model {
    ids: HashMap<TunnelKey, TunnelId>,
    keys: Vec<Option<TunnelKey>>,
    free_ids: BTreeSet<u32>,
    retiring_ids: Vec<u32>,
    conns: HashMap<String, Conn>,
    next_seq: u64,
    states: HashMap<TunnelKey, TunnelRuntimeState>,
    local: Vec<IpNet>,
    /// Per prefix, every contribution, by rank ascending.
    routes: HashMap<IpNet, Vec<(Rank, Target)>>,
    next_group: u32,
    free_groups: Vec<u32>,
    /// BGP groups by member list: id and references.
    shared_groups: HashMap<Vec<TunnelId>, (GroupId, usize)>,
    dynamic: HashMap<IpNet, DynamicRoute>,
    /// What each BGP route is installed through (its members).
    dynamic_members: HashMap<IpNet, Vec<TunnelId>>,
    /// BGP prefixes by tunnel named (selected or backup).
    dynamic_by_tunnel: HashMap<TunnelKey, HashSet<IpNet>>,
    changes: Vec<FibChange>,
}

/// The appliance's own address in an inside CIDR: the first host (the
/// customer gateway takes the second, as the downloaded configuration
/// says).
pub(super) fn first_host_v4(n: Ipv4Net) -> Option<IpNet> {
    let a = u32::from(n.network()).checked_add(1)?;
    Ipv4Net::new(a.into(), 32).ok().map(IpNet::V4)
}

/// [`first_host_v4`] for IPv6.
pub(super) fn first_host_v6(n: Ipv6Net) -> Option<IpNet> {
    let a = u128::from(n.network()).checked_add(1)?;
    Ipv6Net::new(a.into(), 128).ok().map(IpNet::V6)
}

fn key(connection_id: &str, tunnel: usize) -> TunnelKey {
    TunnelKey {
        connection_id: connection_id.to_owned(),
        tunnel,
    }
}

impl Model {
    /// The id of a configured tunnel.
    pub(super) fn id(&self, key: &TunnelKey) -> Option<TunnelId> {
        self.ids.get(key).copied()
    }

    /// The tunnel an id stands for.
    pub(super) fn key_of(&self, id: TunnelId) -> Option<&TunnelKey> {
        self.keys.get(id.0 as usize)?.as_ref()
    }

    /// Every configured tunnel and its id (unordered).
    pub(super) fn ids(&self) -> impl Iterator<Item = (&TunnelKey, TunnelId)> {
        self.ids.iter().map(|(k, t)| (k, *t))
    }

    /// The ids of a connection's two tunnels.
    pub(super) fn connection_ids(&self, id: &str) -> Option<[TunnelId; 2]> {
        self.conns.get(id).map(|c| c.ids)
    }

    /// The connections' ids.
    pub(super) fn connections(&self) -> impl Iterator<Item = &String> {
        self.conns.keys()
    }

    /// The state last set for a tunnel.
    pub(super) fn state(&self, key: &TunnelKey) -> Option<&TunnelRuntimeState> {
        self.states.get(key)
    }

    /// Whether a tunnel is UP by its connection's routing rule.
    pub(super) fn is_up(&self, key: &TunnelKey) -> bool {
        let Some(c) = self.conns.get(&key.connection_id) else {
            return false;
        };
        self.states
            .get(key)
            .is_some_and(|s| s.up_down(c.routing) == TunnelUpDown::Up)
    }

    /// The BGP routes as set (unordered).
    pub(super) fn dynamic(&self) -> impl Iterator<Item = &DynamicRoute> {
        self.dynamic.values()
    }

    /// The table changes since the last call, in order.
    pub(super) fn take_changes(&mut self) -> Vec<FibChange> {
        std::mem::take(&mut self.changes)
    }

    /// Whether changes wait to be taken.
    pub(super) fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Ids given up since the last call become free for new tunnels.
    pub(super) fn release_ids(&mut self) {
        self.free_ids.extend(self.retiring_ids.drain(..));
    }

    // --- contributions -------------------------------------------------

    fn contribute(&mut self, prefix: IpNet, rank: Rank, target: Target) {
        let prefix = prefix.trunc();
        let list = self.routes.entry(prefix).or_default();
        let before = list.last().map(|(_, t)| *t);
        match list.binary_search_by_key(&rank, |(r, _)| *r) {
            Ok(i) => list[i].1 = target,
            Err(i) => list.insert(i, (rank, target)),
        }
        let after = list.last().map(|(_, t)| *t);
        if before != after
            && let Some(t) = after
        {
            self.changes.push(FibChange::Insert(prefix, t));
        }
    }

    fn withdraw(&mut self, prefix: IpNet, rank: Rank) {
        let prefix = prefix.trunc();
        let Some(list) = self.routes.get_mut(&prefix) else {
            return;
        };
        let before = list.last().map(|(_, t)| *t);
        if let Ok(i) = list.binary_search_by_key(&rank, |(r, _)| *r) {
            list.remove(i);
        }
        let after = list.last().map(|(_, t)| *t);
        if list.is_empty() {
            self.routes.remove(&prefix);
        }
        if before != after {
            self.changes.push(match after {
                Some(t) => FibChange::Insert(prefix, t),
                None => FibChange::Remove(prefix),
            });
        }
    }

    fn new_group(&mut self, members: &[TunnelId]) -> GroupId {
        let g = match self.free_groups.pop() {
            Some(g) => g,
            None => {
                self.next_group += 1;
                self.next_group - 1
            }
        };
        self.changes
            .push(FibChange::Group(GroupId(g), members.to_vec()));
        GroupId(g)
    }

    fn free_group(&mut self, g: GroupId) {
        self.changes.push(FibChange::Group(g, Vec::new()));
        self.free_groups.push(g.0);
    }

    // --- configuration -------------------------------------------------

    /// `gateway.local_networks` → the inside port.
    pub(super) fn set_local_networks(&mut self, networks: &[IpNet]) {
        let mut new: Vec<IpNet> = networks.iter().map(IpNet::trunc).collect();
        new.sort_unstable();
        new.dedup();
        for p in std::mem::take(&mut self.local) {
            if new.binary_search(&p).is_err() {
                self.withdraw(p, Rank::Local);
            }
        }
        for p in &new {
            self.contribute(*p, Rank::Local, Target::Inside);
        }
        self.local = new;
    }

    /// Add or replace a connection. `seq` orders it among the others
    /// (configuration order); `None` keeps its place, or puts a new one
    /// after every other. Returns its tunnel ids.
    pub(super) fn put_connection(&mut self, c: &VpnConnection, seq: Option<u64>) -> [TunnelId; 2] {
        let ids = match self.conns.get(&c.id) {
            Some(old) => old.ids,
            None => [self.alloc_id(key(&c.id, 0)), self.alloc_id(key(&c.id, 1))],
        };
        let seq = seq
            .or_else(|| self.conns.get(&c.id).map(|o| o.seq))
            .unwrap_or(self.next_seq);
        self.next_seq = self.next_seq.max(seq + 1);
        let (old_routes, old_group) = match self.conns.get_mut(&c.id) {
            Some(o) => (std::mem::take(&mut o.routes), o.static_group.take()),
            None => (Vec::new(), None),
        };
        self.conns.insert(
            c.id.clone(),
            Conn {
                seq,
                routing: c.routing,
                ids,
                routes: Vec::new(),
                static_group: None,
                static_members: Vec::new(),
                static_prefixes: Vec::new(),
            },
        );
        // The static routes' group first (routes name it). While no
        // tunnel is UP the group keeps tunnel 0 and no route names it.
        let wants_group = c.routing == RoutingType::Static && !c.static_routes.is_empty();
        let members = self.static_members(&c.id, c.routing, ids);
        let group_members = if members.is_empty() {
            vec![ids[0]]
        } else {
            members.clone()
        };
        let group = match (wants_group, old_group) {
            (true, Some(g)) => {
                self.changes.push(FibChange::Group(g, group_members));
                Some(g)
            }
            (true, None) => Some(self.new_group(&group_members)),
            (false, _) => None,
        };
        let mut static_prefixes: Vec<IpNet> = Vec::new();
        if group.is_some() {
            static_prefixes = c.static_routes.iter().map(IpNet::trunc).collect();
            static_prefixes.sort_unstable();
            static_prefixes.dedup();
        }
        let mut routes: Vec<(IpNet, Rank, Target)> = Vec::new();
        if let Some(g) = group
            && !members.is_empty()
        {
            for p in &static_prefixes {
                routes.push((*p, Rank::Conn(seq, 0), Target::Ecmp(g)));
            }
        }
        for (i, (t, tunnel)) in ids.into_iter().zip(&c.tunnels).enumerate() {
            let rank = Rank::Conn(seq, 1 + u8::try_from(i).unwrap_or(1));
            if let Some(n) = tunnel.inside_ipv4_cidr {
                routes.push((IpNet::V4(n).trunc(), rank, Target::Tunnel(t)));
                routes.extend(first_host_v4(n).map(|h| (h, rank, Target::Local)));
            }
            if let Some(n) = tunnel.inside_ipv6_cidr {
                routes.push((IpNet::V6(n).trunc(), rank, Target::Tunnel(t)));
                routes.extend(first_host_v6(n).map(|h| (h, rank, Target::Local)));
            }
        }
        // Within one rank a later route replaces an earlier one.
        let mut seen = HashSet::new();
        let mut deduped: Vec<(IpNet, Rank, Target)> = routes
            .into_iter()
            .rev()
            .filter(|(p, r, _)| seen.insert((*p, *r)))
            .collect();
        deduped.reverse();
        for (p, r, _) in &old_routes {
            if !seen.contains(&(*p, *r)) {
                self.withdraw(*p, *r);
            }
        }
        for (p, r, t) in &deduped {
            self.contribute(*p, *r, *t);
        }
        if let (Some(g), None) = (old_group, group) {
            self.free_group(g);
        }
        if let Some(conn) = self.conns.get_mut(&c.id) {
            conn.routes = deduped;
            conn.static_group = group;
            conn.static_members = members;
            conn.static_prefixes = static_prefixes;
        }
        // Its routing type decides whether its tunnels are UP.
        for i in 0..2 {
            self.refresh_dynamic_of(&key(&c.id, i));
        }
        ids
    }

    /// Remove a connection: its routes, its group, its tunnels' ids and
    /// states. Returns the ids it had.
    pub(super) fn delete_connection(&mut self, id: &str) -> Option<[TunnelId; 2]> {
        let c = self.conns.remove(id)?;
        for (p, r, _) in &c.routes {
            self.withdraw(*p, *r);
        }
        if let Some(g) = c.static_group {
            self.free_group(g);
        }
        for (i, t) in c.ids.into_iter().enumerate() {
            let k = key(id, i);
            self.states.remove(&k);
            self.ids.remove(&k);
            if let Some(slot) = self.keys.get_mut(t.0 as usize) {
                *slot = None;
            }
            self.retiring_ids.push(t.0);
            self.refresh_dynamic_of(&k);
        }
        Some(c.ids)
    }

    fn alloc_id(&mut self, k: TunnelKey) -> TunnelId {
        let id = match self.free_ids.pop_first() {
            Some(i) => i,
            None => u32::try_from(self.keys.len()).unwrap_or(u32::MAX),
        };
        let i = id as usize;
        if i >= self.keys.len() {
            self.keys.resize(i + 1, None);
        }
        self.keys[i] = Some(k.clone());
        self.ids.insert(k, TunnelId(id));
        TunnelId(id)
    }

    /// A static connection's primary tunnel (spec § 10.2: one egress
    /// tunnel, no ECMP): its first UP tunnel; none while neither is.
    fn static_members(&self, id: &str, routing: RoutingType, ids: [TunnelId; 2]) -> Vec<TunnelId> {
        ids.into_iter()
            .enumerate()
            .find(|(i, _)| {
                self.states
                    .get(&key(id, *i))
                    .is_some_and(|s| s.up_down(routing) == TunnelUpDown::Up)
            })
            .map(|(_, t)| vec![t])
            .unwrap_or_default()
    }

    // --- runtime state -------------------------------------------------

    /// Record a tunnel's state; returns whether it went UP or DOWN (the
    /// table then follows: its static group, the BGP routes through it).
    pub(super) fn set_state(&mut self, k: TunnelKey, state: TunnelRuntimeState) -> bool {
        let Some(c) = self.conns.get(&k.connection_id) else {
            return false;
        };
        let routing = c.routing;
        let was = self
            .states
            .get(&k)
            .map_or(TunnelUpDown::Down, |s| s.up_down(routing));
        let changed = was != state.up_down(routing);
        self.states.insert(k.clone(), state);
        if changed {
            self.refresh_static_group(&k.connection_id);
            self.refresh_dynamic_of(&k);
        }
        changed
    }

    fn refresh_static_group(&mut self, id: &str) {
        let Some(c) = self.conns.get(id) else {
            return;
        };
        let Some(g) = c.static_group else {
            return;
        };
        let members = self.static_members(id, c.routing, c.ids);
        if members == c.static_members {
            return;
        }
        let (seq, was_routed) = (c.seq, !c.static_members.is_empty());
        let prefixes = c.static_prefixes.clone();
        let rank = Rank::Conn(seq, 0);
        if !members.is_empty() {
            self.changes.push(FibChange::Group(g, members.clone()));
        }
        match (was_routed, !members.is_empty()) {
            // A first tunnel came UP: the static routes are routed again.
            (false, true) => {
                for p in &prefixes {
                    self.contribute(*p, rank, Target::Ecmp(g));
                }
                if let Some(c) = self.conns.get_mut(id) {
                    c.routes
                        .extend(prefixes.iter().map(|p| (*p, rank, Target::Ecmp(g))));
                }
            }
            // The last UP tunnel went DOWN: withdrawn, revealing what
            // they hid.
            (true, false) => {
                for p in &prefixes {
                    self.withdraw(*p, rank);
                }
                if let Some(c) = self.conns.get_mut(id) {
                    c.routes.retain(|(_, r, _)| *r != rank);
                }
            }
            _ => {}
        }
        if let Some(c) = self.conns.get_mut(id) {
            c.static_members = members;
        }
    }

    /// Replace the BGP routes (the whole set; a prefix listed twice: the
    /// last). Only routes that changed touch the table.
    pub(super) fn set_dynamic(&mut self, routes: Vec<DynamicRoute>) {
        let mut new: HashMap<IpNet, DynamicRoute> = HashMap::with_capacity(routes.len());
        for r in routes {
            new.insert(r.prefix.trunc(), r);
        }
        let old = std::mem::take(&mut self.dynamic);
        for (p, r) in &old {
            if new.get(p) != Some(r) {
                self.unindex(*p, r);
                self.set_dynamic_members(*p, Vec::new());
            }
        }
        let changed: Vec<IpNet> = new
            .iter()
            .filter(|(p, r)| old.get(*p) != Some(*r))
            .map(|(p, _)| *p)
            .collect();
        self.dynamic = new;
        for p in changed {
            if let Some(r) = self.dynamic.get(&p) {
                for k in r.tunnels.iter().chain(&r.backup) {
                    self.dynamic_by_tunnel
                        .entry(k.clone())
                        .or_default()
                        .insert(p);
                }
            }
            self.refresh_dynamic(p);
        }
    }

    fn unindex(&mut self, p: IpNet, r: &DynamicRoute) {
        for k in r.tunnels.iter().chain(&r.backup) {
            if let Some(set) = self.dynamic_by_tunnel.get_mut(k) {
                set.remove(&p);
                if set.is_empty() {
                    self.dynamic_by_tunnel.remove(k);
                }
            }
        }
    }

    fn refresh_dynamic_of(&mut self, k: &TunnelKey) {
        let prefixes: Vec<IpNet> = self
            .dynamic_by_tunnel
            .get(k)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for p in prefixes {
            self.refresh_dynamic(p);
        }
    }

    /// A BGP route through those of its tunnels that are UP, else those of
    /// its backup, else not at all.
    fn refresh_dynamic(&mut self, p: IpNet) {
        let members = match self.dynamic.get(&p) {
            Some(r) => {
                let up = |keys: &[TunnelKey]| -> Vec<TunnelId> {
                    keys.iter()
                        .filter(|k| self.is_up(k))
                        .filter_map(|k| self.ids.get(k).copied())
                        .collect()
                };
                let m = up(&r.tunnels);
                if m.is_empty() { up(&r.backup) } else { m }
            }
            None => Vec::new(),
        };
        self.set_dynamic_members(p, members);
    }

    fn set_dynamic_members(&mut self, p: IpNet, members: Vec<TunnelId>) {
        let old = self.dynamic_members.get(&p).cloned().unwrap_or_default();
        if old == members {
            return;
        }
        // The new group before the route names it, the old one released
        // after the route left it.
        let target = match members.as_slice() {
            [] => None,
            [t] => Some(Target::Tunnel(*t)),
            _ => Some(Target::Ecmp(self.hold_group(&members))),
        };
        match target {
            Some(t) => self.contribute(p, Rank::Bgp, t),
            None => self.withdraw(p, Rank::Bgp),
        }
        if old.len() > 1 {
            self.release_group(&old);
        }
        if members.is_empty() {
            self.dynamic_members.remove(&p);
        } else {
            self.dynamic_members.insert(p, members);
        }
    }

    fn hold_group(&mut self, members: &[TunnelId]) -> GroupId {
        if let Some((g, refs)) = self.shared_groups.get_mut(members) {
            *refs += 1;
            return *g;
        }
        let g = self.new_group(members);
        self.shared_groups.insert(members.to_vec(), (g, 1));
        g
    }

    fn release_group(&mut self, members: &[TunnelId]) {
        let Some((g, refs)) = self.shared_groups.get_mut(members) else {
            return;
        };
        *refs -= 1;
        if *refs == 0 {
            let g = *g;
            self.shared_groups.remove(members);
            self.free_group(g);
        }
    }
}

#[cfg(test)]
mod tests;
