//! The forwarding information base of the workers.
//!
//! Route-based tunnels: the inner destination address of a packet selects,
//! by longest-prefix match, a [`Target`]: a tunnel, an ECMP group of
//! tunnels (one member chosen per flow by hash), the inside port, the
//! kernel (punt), a blackhole, or an OpenVPN client.
//!
//! A [`Fib`] is built on the control core by a [`FibBuilder`]; workers
//! read it without locks and the control core publishes a new one by
//! swapping a pointer (the worker runtime's job). Building is the
//! expensive part (milliseconds for tens of thousands of routes); a lookup
//! is at most three dependent memory reads for IPv4 (DIR-16-8-8) and one
//! hash probe per distinct prefix length for IPv6.
//!
//! A table no worker reads any more can also be changed in place, one
//! [`FibChange`] at a time ([`Fib::apply`]), at the cost of the changed
//! prefix's span rather than of the whole table: the control core keeps
//! two tables and replays each publication's changes into the one the
//! workers retired (see the appliance's `runtime::dataplane::fib_sync`).
//! A table changed so always answers as one built from scratch from the
//! same routes and groups would.
//!
//! Lookups never allocate, lock or panic.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

mod v4;
mod v6;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Index of a tunnel in the workers' tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TunnelId(pub u32);

/// An OpenVPN client of the remote-access endpoint, by its peer-id (the
/// index of the workers' client tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u32);

/// Index of an ECMP group in a [`Fib`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u32);

/// Where a route sends packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Encapsulate into this tunnel.
    Tunnel(TunnelId),
    /// One of the group's tunnels, chosen per flow.
    Ecmp(GroupId),
    /// Out of the inside (VPC-side) port.
    Inside,
    /// To the kernel through the exception path (the appliance's own
    /// addresses: BGP, ICMP to inside-tunnel addresses).
    Local,
    /// Drop (and count).
    Blackhole,
    /// Seal into this OpenVPN client's data channel (a /32 per client
    /// in the endpoint's client CIDR).
    Client(ClientId),
}

/// Targets packed in 32 bits for the lookup tables: bit 31 is reserved for
/// the tables' own block pointers, bits 28..=30 hold the kind, bits 0..=27
/// the index. Value 0 means "no route".
mod packed {
    use super::{ClientId, GroupId, Target, TunnelId};

    pub(crate) const NONE: u32 = 0;
    const KIND_SHIFT: u32 = 28;
    const INDEX_MASK: u32 = (1 << KIND_SHIFT) - 1;
    /// The largest tunnel or group index a table can hold.
    pub(crate) const MAX_INDEX: u32 = INDEX_MASK;

    pub(crate) fn pack(t: Target) -> u32 {
        let (kind, index) = match t {
            Target::Tunnel(TunnelId(i)) => (1, i),
            Target::Ecmp(GroupId(i)) => (2, i),
            Target::Inside => (3, 0),
            Target::Local => (4, 0),
            Target::Blackhole => (5, 0),
            Target::Client(ClientId(i)) => (6, i),
        };
        let v = (kind << KIND_SHIFT) | (index & INDEX_MASK);
        debug_assert!(v & (1 << 31) == 0, "bit 31 belongs to the tables");
        v
    }

    pub(crate) fn unpack(v: u32) -> Option<Target> {
        let index = v & INDEX_MASK;
        Some(match v >> KIND_SHIFT {
            1 => Target::Tunnel(TunnelId(index)),
            2 => Target::Ecmp(GroupId(index)),
            3 => Target::Inside,
            4 => Target::Local,
            5 => Target::Blackhole,
            6 => Target::Client(ClientId(index)),
            _ => return None,
        })
    }
}

/// Why a route cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FibError {
    /// A tunnel or group index beyond what the tables encode.
    #[error("index {0} is beyond the FIB's limit of {max}", max = packed::MAX_INDEX)]
    IndexTooLarge(u32),
    /// An ECMP route names a group that was not defined.
    #[error("ECMP group {0} is not defined")]
    UnknownGroup(u32),
    /// An ECMP group without members.
    #[error("ECMP group {0} has no members")]
    EmptyGroup(u32),
}

/// Builds a [`Fib`] from routes (on the control core).
///
/// Routes are keyed by prefix: adding a prefix again replaces its target.
/// Prefixes are normalised (host bits cleared).
#[derive(Debug, Clone, Default)]
pub struct FibBuilder {
    v4: BTreeMap<Ipv4Net, Target>,
    v6: BTreeMap<Ipv6Net, Target>,
    groups: Vec<Vec<TunnelId>>,
}

impl FibBuilder {
    /// An empty builder.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Defines an ECMP group and returns its id.
    ///
    /// # Errors
    /// [`FibError::EmptyGroup`] for no members, [`FibError::IndexTooLarge`]
    /// for a member index the tables cannot encode.
    pub fn add_group(&mut self, members: &[TunnelId]) -> Result<GroupId, FibError> {
        let id = u32::try_from(self.groups.len()).unwrap_or(u32::MAX);
        if members.is_empty() {
            return Err(FibError::EmptyGroup(id));
        }
        if let Some(m) = members.iter().find(|m| m.0 > packed::MAX_INDEX) {
            return Err(FibError::IndexTooLarge(m.0));
        }
        if id > packed::MAX_INDEX {
            return Err(FibError::IndexTooLarge(id));
        }
        self.groups.push(members.to_vec());
        Ok(GroupId(id))
    }

    /// Adds (or replaces) a route.
    ///
    /// # Errors
    /// [`FibError::IndexTooLarge`] or [`FibError::UnknownGroup`].
    pub fn insert(&mut self, prefix: IpNet, target: Target) -> Result<(), FibError> {
        match target {
            Target::Tunnel(TunnelId(i)) | Target::Client(ClientId(i)) if i > packed::MAX_INDEX => {
                return Err(FibError::IndexTooLarge(i));
            }
            Target::Ecmp(GroupId(g)) if g as usize >= self.groups.len() => {
                return Err(FibError::UnknownGroup(g));
            }
            _ => {}
        }
        match prefix.trunc() {
            IpNet::V4(p) => self.v4.insert(p, target),
            IpNet::V6(p) => self.v6.insert(p, target),
        };
        Ok(())
    }

    /// Removes a route; returns its target if it was there.
    pub fn remove(&mut self, prefix: IpNet) -> Option<Target> {
        match prefix.trunc() {
            IpNet::V4(p) => self.v4.remove(&p),
            IpNet::V6(p) => self.v6.remove(&p),
        }
    }

    /// Number of routes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether there are no routes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The routes, IPv4 first, each family in prefix order.
    pub fn routes(&self) -> impl Iterator<Item = (IpNet, Target)> + '_ {
        self.v4
            .iter()
            .map(|(p, t)| (IpNet::V4(*p), *t))
            .chain(self.v6.iter().map(|(p, t)| (IpNet::V6(*p), *t)))
    }

    /// Builds the lookup tables.
    #[must_use]
    pub fn build(&self) -> Fib {
        Fib {
            v4: v4::Table::build(self.v4.iter().map(|(p, t)| (*p, packed::pack(*t)))),
            v6: v6::Table::build(self.v6.iter().map(|(p, t)| (*p, packed::pack(*t)))),
            groups: self.groups.clone(),
        }
    }
}

/// One change to a [`Fib`] ([`Fib::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibChange {
    /// Add or replace the route of a prefix.
    Insert(IpNet, Target),
    /// Remove the route of a prefix (none is not an error).
    Remove(IpNet),
    /// Define or redefine an ECMP group (growing the group table as
    /// needed); no members makes it resolve to [`Target::Blackhole`].
    Group(GroupId, Vec<TunnelId>),
}

/// A forwarding table (what the workers read). Immutable while published;
/// see [`Fib::apply`].
#[derive(Debug, Clone)]
pub struct Fib {
    v4: v4::Table,
    v6: v6::Table,
    groups: Vec<Vec<TunnelId>>,
}

impl Default for Fib {
    fn default() -> Self {
        FibBuilder::new().build()
    }
}

impl Fib {
    /// Longest-prefix match of an IPv4 destination.
    #[inline]
    #[must_use]
    pub fn lookup_v4(&self, dst: Ipv4Addr) -> Option<Target> {
        packed::unpack(self.v4.lookup(u32::from(dst)))
    }

    /// Longest-prefix match of an IPv6 destination.
    #[inline]
    #[must_use]
    pub fn lookup_v6(&self, dst: Ipv6Addr) -> Option<Target> {
        packed::unpack(self.v6.lookup(u128::from(dst)))
    }

    /// Longest-prefix match of either family.
    #[inline]
    #[must_use]
    pub fn lookup(&self, dst: IpAddr) -> Option<Target> {
        match dst {
            IpAddr::V4(a) => self.lookup_v4(a),
            IpAddr::V6(a) => self.lookup_v6(a),
        }
    }

    /// Resolves an ECMP group to one member by the flow's hash (any other
    /// target is returned as is). The same hash always picks the same
    /// member while the group is unchanged, so a flow is never reordered
    /// across tunnels.
    #[inline]
    #[must_use]
    pub fn resolve(&self, target: Target, flow_hash: u32) -> Target {
        let Target::Ecmp(GroupId(g)) = target else {
            return target;
        };
        match self.groups.get(g as usize) {
            Some(members) if !members.is_empty() => {
                // Multiply-shift maps the hash onto the members without a
                // division and without favouring the first ones.
                let i = (u64::from(flow_hash) * members.len() as u64) >> 32;
                members
                    .get(usize::try_from(i).unwrap_or(0))
                    .map_or(Target::Blackhole, |t| Target::Tunnel(*t))
            }
            _ => Target::Blackhole,
        }
    }

    /// Number of routes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether it has no routes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The routes: IPv4 in prefix order, then IPv6 (unordered).
    pub fn routes(&self) -> impl Iterator<Item = (IpNet, Target)> + '_ {
        let v4 = self.v4.routes().map(|(p, v)| (IpNet::V4(p), v));
        let v6 = self.v6.routes().map(|(p, v)| (IpNet::V6(p), v));
        v4.chain(v6)
            .filter_map(|(p, v)| packed::unpack(v).map(|t| (p, t)))
    }

    /// The members of an ECMP group (empty for an unknown or cleared one).
    #[must_use]
    pub fn group(&self, id: GroupId) -> &[TunnelId] {
        self.groups.get(id.0 as usize).map_or(&[], Vec::as_slice)
    }

    /// ECMP group slots (defined or cleared).
    #[must_use]
    pub fn group_slots(&self) -> usize {
        self.groups.len()
    }

    /// Bytes of the IPv4 lookup tables (they do not shrink: folded blocks
    /// are reused).
    #[must_use]
    pub fn v4_table_bytes(&self) -> usize {
        self.v4.table_bytes()
    }

    /// Level-2 and level-3 IPv4 blocks in use (256 entries each).
    #[must_use]
    pub fn v4_blocks_in_use(&self) -> usize {
        self.v4.blocks_in_use()
    }

    /// Changes the table in place, at the cost of the change: for a route,
    /// the prefix's span and the routes nested in it (IPv4) or one hash
    /// update (IPv6); for a group, its members. Never call it on a table
    /// a worker may be reading: publish tables through a pointer swap and
    /// change only one that came back.
    ///
    /// # Errors
    /// As for [`FibBuilder::insert`] and [`FibBuilder::add_group`]; on
    /// error nothing changed.
    pub fn apply(&mut self, change: &FibChange) -> Result<(), FibError> {
        match change {
            FibChange::Insert(prefix, target) => {
                match *target {
                    Target::Tunnel(TunnelId(i)) | Target::Client(ClientId(i))
                        if i > packed::MAX_INDEX =>
                    {
                        return Err(FibError::IndexTooLarge(i));
                    }
                    Target::Ecmp(GroupId(g)) if g as usize >= self.groups.len() => {
                        return Err(FibError::UnknownGroup(g));
                    }
                    _ => {}
                }
                let v = packed::pack(*target);
                match prefix.trunc() {
                    IpNet::V4(p) => self.v4.insert(p, v),
                    IpNet::V6(p) => self.v6.insert(p, v),
                };
            }
            FibChange::Remove(prefix) => {
                match prefix.trunc() {
                    IpNet::V4(p) => self.v4.remove(p),
                    IpNet::V6(p) => self.v6.remove(p),
                };
            }
            FibChange::Group(GroupId(g), members) => {
                if *g > packed::MAX_INDEX {
                    return Err(FibError::IndexTooLarge(*g));
                }
                if let Some(m) = members.iter().find(|m| m.0 > packed::MAX_INDEX) {
                    return Err(FibError::IndexTooLarge(m.0));
                }
                let g = *g as usize;
                if g >= self.groups.len() {
                    self.groups.resize_with(g + 1, Vec::new);
                }
                self.groups[g].clone_from(members);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
