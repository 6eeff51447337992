//! The kernel port's addresses: vpnd puts them on the tap itself.
//!
//! The kernel port (`role = "kernel"`, a DPDK `net_tap`) is the exception
//! path: the worker punts IKE (UDP 500/4500 to an outside address) and
//! traffic for the tunnel inside addresses (BGP) to it, and routes out of
//! the tunnels or the outside port whatever the kernel sends into it. For
//! the kernel to take those packets and answer them, the tap needs:
//!
//! | what | why |
//! | --- | --- |
//! | link up | |
//! | each running tunnel's outside address, `/32` | vpnd's IKE sockets are bound there |
//! | each customer gateway's address: a `/32` route via the tap and a permanent neighbour | the kernel cannot ARP through the worker; the worker rewrites the MACs, so the neighbour's MAC is a fixed placeholder ([`PEER_MAC`]) |
//! | each tunnel's inside address (network + 1), `/32` (IPv4) or `/126` (IPv6), and the peer's (network + 2) as route and neighbour | BGP over the tunnel (kernel TCP) |
//!
//! Host prefixes (`/32`) rather than the outside subnet: the appliance does
//! not know the outside subnet, and they coexist with an address an
//! operator (or an older test) adds by hand with a shorter prefix.
//!
//! [`KernelPort::reconcile`] makes the tap match the configuration: it
//! runs `ip` (iproute2) only for what changed since the last call, so the
//! IKE thread calls it on every configuration check. Entries that fail
//! are logged and tried again after [`RETRY`]; entries no longer wanted
//! are removed. Nothing here runs on a worker.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use control::config::inside::{inside_ipv4_hosts, inside_ipv6_hosts};
use control::config::{ApplianceConfig, PortRole};

/// The neighbour MAC the kernel uses toward peers: any unicast address
/// works, the worker rewrites the Ethernet header.
pub const PEER_MAC: &str = "02:00:00:00:00:02";
/// A failed entry is tried again after this long.
pub const RETRY: Duration = Duration::from_secs(5);

/// One thing the tap must have.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Entry {
    /// The link is up.
    Up,
    /// A local address with its prefix length.
    Address(IpAddr, u8),
    /// A host route via the tap and a permanent neighbour entry.
    Peer(IpAddr),
}

impl Entry {
    fn add(&self, iface: &str) -> Vec<Vec<String>> {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        match self {
            Self::Up => vec![v(&["link", "set", iface, "up"])],
            Self::Address(a, len) => {
                let mut c = v(&["addr", "replace", &format!("{a}/{len}"), "dev", iface]);
                if a.is_ipv6() {
                    c.push("nodad".to_owned());
                }
                vec![c]
            }
            Self::Peer(a) => {
                let len = if a.is_ipv4() { 32 } else { 128 };
                vec![
                    v(&["route", "replace", &format!("{a}/{len}"), "dev", iface]),
                    v(&[
                        "neigh",
                        "replace",
                        &a.to_string(),
                        "lladdr",
                        PEER_MAC,
                        "dev",
                        iface,
                        "nud",
                        "permanent",
                    ]),
                ]
            }
        }
    }

    fn remove(&self, iface: &str) -> Vec<Vec<String>> {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        match self {
            Self::Up => Vec::new(),
            Self::Address(a, len) => vec![v(&["addr", "del", &format!("{a}/{len}"), "dev", iface])],
            Self::Peer(a) => {
                let len = if a.is_ipv4() { 32 } else { 128 };
                vec![
                    v(&["neigh", "del", &a.to_string(), "dev", iface]),
                    v(&["route", "del", &format!("{a}/{len}"), "dev", iface]),
                ]
            }
        }
    }
}

/// The kernel interface of the `role = "kernel"` port: the `iface=`
/// argument of its `net_tap` device (DPDK's default name `dtap0`
/// otherwise). `None` without a kernel port.
#[must_use]
pub fn kernel_iface(config: &ApplianceConfig) -> Option<String> {
    let port = config
        .dataplane
        .ports
        .iter()
        .find(|p| p.role == PortRole::Kernel)?;
    let named = port
        .device
        .split(',')
        .find_map(|kv| kv.strip_prefix("iface="))
        .map(str::to_owned);
    Some(named.unwrap_or_else(|| "dtap0".to_owned()))
}

/// What the tap must have for `config` (see the module docs).
#[must_use]
pub fn desired(config: &ApplianceConfig) -> BTreeSet<Entry> {
    let mut want = BTreeSet::from([Entry::Up]);
    // One pass over the gateways, not one per connection (that was
    // quadratic: 25 million comparisons per change at 5,000 connections).
    let gateways: HashMap<&str, Option<IpAddr>> = config
        .customer_gateways
        .iter()
        .map(|g| (g.id.as_str(), g.ip_address))
        .collect();
    for c in &config.connections {
        let cgw = gateways
            .get(c.customer_gateway_id.as_str())
            .copied()
            .flatten();
        for t in &c.tunnels {
            let Some(outside) = t.outside_ip_address else {
                continue;
            };
            want.insert(Entry::Address(
                outside,
                if outside.is_ipv4() { 32 } else { 128 },
            ));
            if let Some(peer) = cgw {
                want.insert(Entry::Peer(peer));
            }
            if let Some(n) = t.inside_ipv4_cidr {
                let (ours, theirs) = inside_ipv4_hosts(n);
                want.insert(Entry::Address(IpAddr::V4(ours), 32));
                want.insert(Entry::Peer(IpAddr::V4(theirs)));
            }
            if let Some(n) = t.inside_ipv6_cidr {
                let (ours, theirs) = inside_ipv6_hosts(n);
                want.insert(Entry::Address(IpAddr::V6(ours), n.prefix_len()));
                want.insert(Entry::Peer(IpAddr::V6(theirs)));
            }
        }
    }
    want
}

/// The tap as vpnd configured it (see the module docs).
#[derive(Debug)]
pub struct KernelPort {
    iface: String,
    applied: BTreeSet<Entry>,
    failed: BTreeMap<Entry, Instant>,
}

impl KernelPort {
    /// Nothing configured yet on `iface`.
    #[must_use]
    pub fn new(iface: &str) -> Self {
        Self {
            iface: iface.to_owned(),
            applied: BTreeSet::new(),
            failed: BTreeMap::new(),
        }
    }

    /// Whether the tap has everything `want` asks for (nothing to retry).
    #[must_use]
    pub fn settled(&self, want: &BTreeSet<Entry>) -> bool {
        want.iter().all(|e| self.applied.contains(e))
    }

    /// The interface.
    #[must_use]
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Add what `want` has and the tap lacks, remove what it no longer
    /// wants. Until the interface exists (the dataplane creates it),
    /// nothing is done.
    pub fn reconcile(&mut self, want: &BTreeSet<Entry>, now: Instant) {
        if !std::path::Path::new("/sys/class/net")
            .join(&self.iface)
            .exists()
        {
            return;
        }
        let stale: Vec<Entry> = self.applied.difference(want).cloned().collect();
        for e in stale {
            for args in e.remove(&self.iface) {
                let _ = ip(&args);
            }
            self.applied.remove(&e);
        }
        self.failed.retain(|e, _| want.contains(e));
        // `Up` sorts first: routes need the link up.
        for e in want {
            if self.applied.contains(e) || self.failed.get(e).is_some_and(|t| now < *t + RETRY) {
                continue;
            }
            let result = e.add(&self.iface).iter().try_for_each(|args| ip(args));
            match result {
                Ok(()) => {
                    tracing::info!("kernel port {}: {e:?}", self.iface);
                    self.failed.remove(e);
                    self.applied.insert(e.clone());
                }
                Err(why) => {
                    tracing::warn!(
                        "kernel port {}: cannot set {e:?} (retrying in {} s): {why}",
                        self.iface,
                        RETRY.as_secs()
                    );
                    self.failed.insert(e.clone(), now);
                }
            }
        }
    }
}

/// Runs `ip <args>`; the error says what failed.
fn ip(args: &[String]) -> Result<(), String> {
    match Command::new("ip").args(args).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("ip {}: {e}", args.join(" "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_entries_from_a_connection() {
        let toml = r#"
[gateway]
id = "tgw"
outside_addresses = ["192.0.2.1", "192.0.2.3"]

[dataplane]
file_prefix = "x"
worker_lcores = [1]

[[dataplane.ports]]
name = "wan"
device = "net_af_packet0,iface=o"
role = "outside"

[[dataplane.ports]]
name = "lan"
device = "net_af_packet1,iface=i"
role = "inside"

[[dataplane.ports]]
name = "kernel"
device = "net_tap0,iface=kk9"
role = "kernel"

[[customer_gateways]]
id = "cgw-1"
ip_address = "198.51.100.7"
bgp_asn = 65000

[[connections]]
id = "vpn-1"
customer_gateway_id = "cgw-1"
target = "tgw"
[[connections.tunnels]]
outside_ip_address = "192.0.2.1"
inside_ipv4_cidr = "169.254.10.0/30"
[[connections.tunnels]]
outside_ip_address = "192.0.2.3"
"#;
        let config = ApplianceConfig::from_toml_str(toml).unwrap();
        assert_eq!(kernel_iface(&config).as_deref(), Some("kk9"));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let want = desired(&config);
        assert_eq!(
            want,
            BTreeSet::from([
                Entry::Up,
                Entry::Address(ip("192.0.2.1"), 32),
                Entry::Address(ip("192.0.2.3"), 32),
                Entry::Address(ip("169.254.10.1"), 32),
                Entry::Peer(ip("198.51.100.7")),
                Entry::Peer(ip("169.254.10.2")),
            ])
        );
        assert_eq!(
            Entry::Peer(ip("198.51.100.7")).add("kk9")[1].join(" "),
            "neigh replace 198.51.100.7 lladdr 02:00:00:00:00:02 dev kk9 nud permanent"
        );
    }
}
