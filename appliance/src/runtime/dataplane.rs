//! [`control::dataplane::Dataplane`] on the DPDK [`Runtime`]: what `vpnd`
//! runs unless started with `--no-dataplane`.
//!
//! ```text
//!   Manager::commit ──► apply(config) ──► tunnel ids (stable per connection/tunnel)
//!                                    ├──► Command::SetAddresses  (only when they change)
//!                                    └──► Command::SetFib        (local networks → inside,
//!                                                                 static routes → ECMP over the
//!                                                                 connection's two tunnels,
//!                                                                 inside /30 (/126) → its tunnel,
//!                                                                 our inside address → local)
//!   BGP ──► set_dynamic_routes ──► Command::SetFib    (the selected BGP routes through
//!                                                      their UP tunnels, under the above)
//!   IKE ──► add_child_inbound ──► AddInbound(new)       (we answered the peer's rekey)
//!   IKE ──► install_child_sa ──► AddInbound(new) ─ack─► SetOutbound(new) ─ack
//!                                (the old inbound SA stays an "extra" one)
//!   IKE ──► remove_child_inbound(old) ──► RemoveInbound(old)   (its DELETE done)
//!   vpnd tick ──► poll() ──► acks, retired SAs freed, counters
//! ```
//!
//! Tunnel state is what IKE/BGP report through `set_tunnel_state`; until
//! they do, every tunnel is DOWN (routes to it drop as `no_outbound_sa`).
//! A tunnel going DOWN takes its BGP routes out of the FIB in the same
//! call (the BGP thread's withdrawal follows), so traffic moves at once to
//! the other ECMP members or, when none is left, to the route's backup
//! (the path BGP selects without it).
//! Per-tunnel counters (`TunnelDataIn`/`TunnelDataOut`, packets, drops)
//! are read lock-free from the worker's counter block by tunnel id; per-SA
//! counters (`show sas`) come from a snapshot the runtime asks the worker
//! for about once a second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::config::{ApplianceConfig, PortRole, RoutingType, parse_mac};
use control::dataplane::{
    ChildSaPair, Dataplane, DataplaneError, DataplaneStats, DynamicRoute, PortCounters, RouteEntry,
    SaDirection, SaInfo, SaLifetimeEvent, TunnelCounters, TunnelKey, TunnelRuntimeState,
    TunnelUpDown, sa_info,
};
use dataplane::esp::{InboundSa, OutboundSa, SaConfig};
use fib::{FibBuilder, Target, TunnelId};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use worker::{Addresses, Command, Drop};

use super::{Runtime, RuntimeError, Ticket, v4_only, v6_only};

mod policing;
mod steer;

/// How long a command may take to be acknowledged by the worker.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// The pair installed for one tunnel.
#[derive(Debug)]
struct Installed {
    inbound: SaInfo,
    outbound: SaInfo,
    at: Instant,
}

/// The DPDK dataplane behind `vpnd`.
#[derive(Debug)]
pub struct DpdkDataplane {
    rt: Option<Runtime>,
    ids: BTreeMap<TunnelKey, TunnelId>,
    installed: BTreeMap<TunnelKey, Installed>,
    /// Inbound SAs besides the installed pairs', by SPI: a rekeyed SA
    /// until its DELETE is done, the next SA until its outbound switch.
    extra_inbound: BTreeMap<u32, (TunnelKey, SaInfo, Instant)>,
    states: BTreeMap<TunnelKey, TunnelRuntimeState>,
    addresses: Option<Addresses>,
    port_names: BTreeMap<&'static str, String>,
    apply_errors: u64,
    sa_events: Vec<SaLifetimeEvent>,
    /// The configuration last applied (the FIB is rebuilt from it when a
    /// tunnel goes UP or DOWN).
    config: Option<ApplianceConfig>,
    /// The routes BGP selected.
    dynamic: Vec<DynamicRoute>,
    /// The per-tunnel rate policy the workers hold.
    policies: policing::Applied,
}

/// SA lifetime events kept for IKE before the oldest are dropped.
const SA_EVENTS_KEPT: usize = 4096;

impl DpdkDataplane {
    /// Wrap a started runtime. Nothing is sent until [`Dataplane::apply`].
    #[must_use]
    pub fn new(rt: Runtime) -> Self {
        Self {
            rt: Some(rt),
            ids: BTreeMap::new(),
            installed: BTreeMap::new(),
            extra_inbound: BTreeMap::new(),
            states: BTreeMap::new(),
            addresses: None,
            port_names: BTreeMap::new(),
            apply_errors: 0,
            sa_events: Vec::new(),
            config: None,
            dynamic: Vec::new(),
            policies: policing::Applied::default(),
        }
    }

    /// The runtime (for its counters), while running.
    #[must_use]
    pub fn runtime(&self) -> Option<&Runtime> {
        self.rt.as_ref()
    }

    /// The runtime, mutably (to send commands of its own), while running.
    pub fn runtime_mut(&mut self) -> Option<&mut Runtime> {
        self.rt.as_mut()
    }

    /// The FIB tunnel id of a configured tunnel.
    #[must_use]
    pub fn tunnel_id(&self, key: &TunnelKey) -> Option<TunnelId> {
        self.ids.get(key).copied()
    }

    /// Send one command to every worker and wait for their
    /// acknowledgements.
    fn run(&mut self, what: &str, command: Command) -> Result<(), DataplaneError> {
        self.run_with(what, |rt| rt.send(command))
    }

    /// Send what `send` queues (one command per worker) and wait for the
    /// acknowledgements.
    fn run_with(
        &mut self,
        what: &str,
        send: impl FnOnce(&mut Runtime) -> Result<Ticket, RuntimeError>,
    ) -> Result<(), DataplaneError> {
        let Some(rt) = self.rt.as_mut() else {
            return Err(DataplaneError::Refused {
                what: what.to_owned(),
                reason: "the dataplane is shut down".to_owned(),
            });
        };
        let err = |e| match e {
            RuntimeError::RingFull => DataplaneError::RingFull,
            RuntimeError::Refused { reason, .. } => DataplaneError::Refused {
                what: what.to_owned(),
                reason: reason.to_owned(),
            },
            RuntimeError::Timeout { timeout, .. } => DataplaneError::Timeout {
                what: what.to_owned(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            },
            other => DataplaneError::Refused {
                what: what.to_owned(),
                reason: other.to_string(),
            },
        };
        let ticket = send(rt).map_err(err)?;
        rt.wait(ticket, ACK_TIMEOUT).map_err(err)
    }

    /// Shut the runtime down (workers stopped, EAL cleaned up); returns
    /// a one-line summary of the final counters.
    pub fn shutdown_runtime(&mut self) -> Option<String> {
        let rt = self.rt.take()?;
        let (applied, failed) = rt.commands();
        let s = rt.shutdown();
        Some(format!(
            "commands applied {applied} failed {failed}; encap {} decap {} punted {} dropped {}",
            s.worker.encap_packets,
            s.worker.decap_packets,
            s.worker.punted,
            s.worker.total_dropped()
        ))
    }

    fn log_apply_error(&mut self, what: &str, e: &dyn std::fmt::Display) {
        self.apply_errors += 1;
        tracing::warn!("dataplane: {what}: {e}");
    }

    /// Whether `key` is UP by its connection's routing rule.
    fn is_up(&self, key: &TunnelKey) -> bool {
        let routing = self
            .config
            .as_ref()
            .and_then(|c| c.connections.iter().find(|c| c.id == key.connection_id))
            .map_or(RoutingType::Static, |c| c.routing);
        self.states
            .get(key)
            .is_some_and(|s| s.up_down(routing) == TunnelUpDown::Up)
    }

    /// Rebuild the FIB from the applied configuration, the tunnel states
    /// and the BGP routes, and hand it to the worker.
    fn install_fib(&mut self) {
        let Some(config) = self.config.as_ref() else {
            return;
        };
        let up: Vec<TunnelKey> = self.ids.keys().filter(|k| self.is_up(k)).cloned().collect();
        let (fib, problems) = build_fib(config, &self.ids, &self.states, &self.dynamic, &up);
        let fib = Arc::new(fib.build());
        for p in problems {
            self.log_apply_error("route", &p);
        }
        if let Err(e) = self.run("SetFib", Command::SetFib(fib)) {
            self.log_apply_error("forwarding table", &e);
        }
    }
}

/// The appliance's own address in an inside CIDR: the first host (the
/// customer gateway takes the second, as the downloaded configuration
/// says).
fn first_host_v4(n: Ipv4Net) -> Option<IpNet> {
    let a = u32::from(n.network()).checked_add(1)?;
    Ipv4Net::new(a.into(), 32).ok().map(IpNet::V4)
}

fn first_host_v6(n: Ipv6Net) -> Option<IpNet> {
    let a = u128::from(n.network()).checked_add(1)?;
    Ipv6Net::new(a.into(), 128).ok().map(IpNet::V6)
}

/// The forwarding table of `config`; problems (not expected for a
/// validated configuration) are returned as messages. A static
/// connection's routes go to ECMP over its UP tunnels (by `states`); while
/// neither is UP, over both (dropped there as `no_outbound_sa`, counted
/// per tunnel). BGP routes (`dynamic`) go over those of their tunnels that
/// are in `up`, or else over the UP tunnels of their backup (none: the
/// route is left out); they are inserted first, so a configured route for
/// the same prefix replaces them.
fn build_fib(
    config: &ApplianceConfig,
    ids: &BTreeMap<TunnelKey, TunnelId>,
    states: &BTreeMap<TunnelKey, TunnelRuntimeState>,
    dynamic: &[DynamicRoute],
    up: &[TunnelKey],
) -> (FibBuilder, Vec<String>) {
    let mut b = FibBuilder::new();
    let mut problems = Vec::new();
    let mut groups: BTreeMap<Vec<TunnelId>, fib::GroupId> = BTreeMap::new();
    let up_ids = |keys: &[TunnelKey]| -> Vec<TunnelId> {
        keys.iter()
            .filter(|k| up.contains(k))
            .filter_map(|k| ids.get(k).copied())
            .collect()
    };
    for r in dynamic {
        let mut members = up_ids(&r.tunnels);
        if members.is_empty() {
            members = up_ids(&r.backup);
        }
        let target = match members.as_slice() {
            [] => continue,
            [t] => Ok(Target::Tunnel(*t)),
            _ => match groups.get(&members) {
                Some(g) => Ok(Target::Ecmp(*g)),
                None => b.add_group(&members).map(|g| {
                    groups.insert(members.clone(), g);
                    Target::Ecmp(g)
                }),
            },
        };
        if let Err(e) = target.and_then(|t| b.insert(r.prefix, t)) {
            problems.push(format!("BGP route {}: {e}", r.prefix));
        }
    }
    for n in &config.gateway.local_networks {
        if let Err(e) = b.insert(*n, Target::Inside) {
            problems.push(format!("local network {n}: {e}"));
        }
    }
    for c in &config.connections {
        let tid = |i| {
            ids.get(&TunnelKey {
                connection_id: c.id.clone(),
                tunnel: i,
            })
            .copied()
        };
        let (Some(t0), Some(t1)) = (tid(0), tid(1)) else {
            continue;
        };
        if c.routing == RoutingType::Static && !c.static_routes.is_empty() {
            let up: Vec<TunnelId> = [t0, t1]
                .into_iter()
                .enumerate()
                .filter(|(i, _)| {
                    let k = TunnelKey {
                        connection_id: c.id.clone(),
                        tunnel: *i,
                    };
                    states
                        .get(&k)
                        .is_some_and(|s| s.up_down(c.routing) == TunnelUpDown::Up)
                })
                .map(|(_, t)| t)
                .collect();
            let members = if up.is_empty() { vec![t0, t1] } else { up };
            match b.add_group(&members) {
                Ok(g) => {
                    for p in &c.static_routes {
                        if let Err(e) = b.insert(*p, Target::Ecmp(g)) {
                            problems.push(format!("{}: static route {p}: {e}", c.id));
                        }
                    }
                }
                Err(e) => problems.push(format!("{}: ECMP group: {e}", c.id)),
            }
        }
        for (t, tunnel) in [t0, t1].into_iter().zip(&c.tunnels) {
            let mut routes = Vec::new();
            if let Some(n) = tunnel.inside_ipv4_cidr {
                routes.push((IpNet::V4(n), Target::Tunnel(t)));
                routes.extend(first_host_v4(n).map(|h| (h, Target::Local)));
            }
            if let Some(n) = tunnel.inside_ipv6_cidr {
                routes.push((IpNet::V6(n), Target::Tunnel(t)));
                routes.extend(first_host_v6(n).map(|h| (h, Target::Local)));
            }
            for (p, target) in routes {
                if let Err(e) = b.insert(p, target) {
                    problems.push(format!("{}: inside route {p}: {e}", c.id));
                }
            }
        }
    }
    (b, problems)
}

/// `UnknownSpi` → `unknown_spi`.
fn snake(debug_name: &str) -> String {
    let mut out = String::with_capacity(debug_name.len() + 4);
    for (i, ch) in debug_name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

impl Dataplane for DpdkDataplane {
    fn apply(&mut self, config: &ApplianceConfig) {
        if self.rt.is_none() {
            return;
        }
        // 1. Tunnel ids: stable while the tunnel exists; removed tunnels
        //    lose their SAs first.
        let keys: Vec<TunnelKey> = config
            .connections
            .iter()
            .flat_map(|c| {
                (0..2).map(|tunnel| TunnelKey {
                    connection_id: c.id.clone(),
                    tunnel,
                })
            })
            .collect();
        let wanted: std::collections::HashSet<&TunnelKey> = keys.iter().collect();
        let gone: Vec<TunnelKey> = self
            .ids
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        for k in gone {
            if let Err(e) = self.remove_child_sa(&k) {
                self.log_apply_error(&format!("removing the SAs of {k:?}"), &e);
            }
            self.ids.remove(&k);
            self.states.remove(&k);
        }
        // New tunnels take the lowest free ids: ids index the worker's
        // counter block and the FIB's tunnel table, both bounded.
        let mut used: Option<std::collections::HashSet<u32>> = None;
        let mut next = 0u32;
        for k in keys {
            if !self.ids.contains_key(&k) {
                let used = used.get_or_insert_with(|| self.ids.values().map(|t| t.0).collect());
                while used.contains(&next) {
                    next += 1;
                }
                used.insert(next);
                self.ids.insert(k, TunnelId(next));
            }
        }
        self.port_names = config
            .dataplane
            .ports
            .iter()
            .map(|p| {
                let role = match p.role {
                    PortRole::Outside => "outside",
                    PortRole::Inside => "inside",
                    _ => "kernel",
                };
                (role, p.name.clone())
            })
            .collect();

        // 2. Addresses.
        let Some(macs) = self.rt.as_ref().map(Runtime::macs) else {
            return;
        };
        let mac = |m: &Option<String>| {
            m.as_deref()
                .and_then(|m| parse_mac(m).ok())
                .unwrap_or([0xff; 6])
        };
        let d = &config.dataplane;
        let addresses = Addresses {
            outside_mac: macs.outside,
            outside_gateway_mac: mac(&d.outside_next_hop_mac),
            inside_mac: macs.inside,
            inside_gateway_mac: mac(&d.inside_next_hop_mac),
            kernel_mac: macs.kernel.unwrap_or_default(),
            outside_v4: v4_only(&config.gateway.outside_addresses),
            outside_v6: v6_only(&config.gateway.outside_addresses),
            inside_v4: d.inside_addresses.clone(),
        };
        if self.addresses.as_ref() != Some(&addresses) {
            match self.run(
                "SetAddresses",
                Command::SetAddresses(Box::new(addresses.clone())),
            ) {
                Ok(()) => self.addresses = Some(addresses),
                Err(e) => self.log_apply_error("addresses", &e),
            }
        }

        // 3. Routes (BGP routes of removed tunnels stay out: they have
        //    no id).
        self.config = Some(config.clone());
        self.install_fib();

        // 4. Rate policy by each tunnel's bandwidth option.
        self.apply_rate_policy(config);

        // 5. Inbound steering of each tunnel to a worker (flow rules).
        self.apply_steering(config);
    }

    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState {
        self.states.get(key).cloned().unwrap_or_default()
    }

    fn sas(&self) -> Vec<SaInfo> {
        let counters = self.rt.as_ref().map_or(&[][..], Runtime::sa_counters);
        let mut out = Vec::new();
        for i in self.installed.values() {
            let age = i.at.elapsed().as_secs();
            for s in [&i.inbound, &i.outbound] {
                let mut s = s.clone();
                s.age_secs = age;
                let inbound = s.direction == SaDirection::Inbound;
                if let Some(c) = counters
                    .iter()
                    .find(|c| c.spi == s.spi && c.inbound == inbound)
                {
                    s.packets = c.counters.packets;
                    s.bytes = c.counters.bytes;
                }
                out.push(s);
            }
        }
        for (_, s, at) in self.extra_inbound.values() {
            let mut s = s.clone();
            s.age_secs = at.elapsed().as_secs();
            if let Some(c) = counters.iter().find(|c| c.spi == s.spi && c.inbound) {
                s.packets = c.counters.packets;
                s.bytes = c.counters.bytes;
            }
            out.push(s);
        }
        out
    }

    fn dynamic_routes(&self) -> Vec<RouteEntry> {
        self.dynamic
            .iter()
            .map(|r| r.entry(r.tunnels.iter().chain(&r.backup).any(|k| self.is_up(k))))
            .collect()
    }

    fn set_dynamic_routes(&mut self, routes: Vec<DynamicRoute>) {
        if routes == self.dynamic {
            return;
        }
        self.dynamic = routes;
        self.install_fib();
    }

    fn stats(&self) -> DataplaneStats {
        let mut st = DataplaneStats::default();
        for (k, t) in &self.ids {
            let c = self
                .rt
                .as_ref()
                .and_then(|rt| rt.tunnel_counters(*t))
                .unwrap_or_default();
            st.tunnels.insert(
                DataplaneStats::tunnel_key(&k.connection_id, k.tunnel),
                TunnelCounters {
                    data_in_bytes: c.in_bytes,
                    data_out_bytes: c.out_bytes,
                    packets_in: c.in_packets,
                    packets_out: c.out_packets,
                    drops: c.total_dropped(),
                    worker: self
                        .rt
                        .as_ref()
                        .and_then(|rt| rt.steered_worker(*t))
                        .and_then(|w| u32::try_from(w).ok()),
                },
            );
        }
        let Some(rt) = &self.rt else {
            return st;
        };
        if rt.workers() > 1 {
            st.steering = rt.steering_mode().to_string();
        }
        st.crypto_backend = rt.crypto_backend().to_string();
        let snap = rt.worker_stats();
        let w = &snap.worker;
        for reason in Drop::ALL {
            if reason != Drop::Esp {
                st.drops.insert(reason.name().to_owned(), w.dropped(reason));
            }
        }
        for reason in dataplane::esp::DropReason::ALL {
            st.drops.insert(
                format!("esp_{}", snake(&format!("{reason:?}"))),
                w.esp.get(reason),
            );
        }
        for (i, role) in ["outside", "inside", "kernel"].into_iter().enumerate() {
            st.drops.insert(format!("tx_full_{role}"), snap.tx_full[i]);
        }
        st.drops
            .insert("no_kernel_port".to_owned(), snap.no_kernel_port);
        st.drops
            .insert("handoff_full".to_owned(), snap.handoff.full);
        let (applied, failed) = rt.commands();
        for (name, v) in [
            ("encap_packets", w.encap_packets),
            ("decap_packets", w.decap_packets),
            ("punted", w.punted),
            ("arp_replies", w.arp_replies),
            ("handed_off", snap.handoff.sent),
            ("handoff_received", snap.handoff.received),
            ("dropped", w.total_dropped()),
            ("commands_applied", applied),
            ("commands_failed", failed),
            ("uptime_secs", snap.uptime_secs),
            ("apply_errors", self.apply_errors),
        ] {
            st.worker.insert(name.to_owned(), v);
        }
        for (role, p) in rt.port_stats() {
            let name = self
                .port_names
                .get(role)
                .cloned()
                .unwrap_or_else(|| role.to_owned());
            st.rx_packets += p.rx_packets;
            st.tx_packets += p.tx_packets;
            st.ports.insert(
                name,
                PortCounters {
                    rx_packets: p.rx_packets,
                    tx_packets: p.tx_packets,
                    rx_bytes: p.rx_bytes,
                    tx_bytes: p.tx_bytes,
                    rx_dropped: p.rx_missed + p.rx_no_mbuf + p.rx_errors,
                    tx_errors: p.tx_errors,
                },
            );
        }
        st
    }

    fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState) {
        if !self.ids.contains_key(&key) {
            return;
        }
        let routing = self
            .config
            .as_ref()
            .and_then(|c| c.connections.iter().find(|c| c.id == key.connection_id))
            .map_or(RoutingType::Static, |c| c.routing);
        let was = self
            .states
            .get(&key)
            .map_or(TunnelUpDown::Down, |s| s.up_down(routing));
        let up_changed = was != state.up_down(routing);
        self.states.insert(key, state);
        // Routes follow the UP tunnels.
        if up_changed {
            self.install_fib();
        }
    }

    fn install_child_sa(
        &mut self,
        key: &TunnelKey,
        pair: &ChildSaPair,
    ) -> Result<(), DataplaneError> {
        let tunnel = *self
            .ids
            .get(key)
            .ok_or_else(|| DataplaneError::UnknownTunnel(key.clone()))?;
        let now = self.rt.as_ref().map_or(0, Runtime::now_secs);
        let invalid = |direction, spi, e: &dyn std::fmt::Display| DataplaneError::InvalidSa {
            tunnel: key.clone(),
            direction,
            spi,
            reason: e.to_string(),
        };
        // Checked here for an error naming tunnel and direction; the
        // runtime builds one copy per worker from the same configuration.
        InboundSa::new(&pair.inbound, now)
            .map_err(|e| invalid(SaDirection::Inbound, pair.inbound.spi, &e))?;
        OutboundSa::new(&pair.outbound, now)
            .map_err(|e| invalid(SaDirection::Outbound, pair.outbound.spi, &e))?;
        let new_spi = pair.inbound.spi;
        // (1) The new inbound SA: from now on both decrypt. Added already
        // when we answered the peer's rekey (add_child_inbound).
        let added_before = self
            .extra_inbound
            .get(&new_spi)
            .is_some_and(|(k, _, _)| k == key);
        if !added_before {
            self.run_with(&format!("AddInbound {new_spi:#x}"), |rt| {
                rt.add_inbound(Some(tunnel), &pair.inbound, Duration::ZERO)
            })?;
        }
        // (2) Switch the outbound SA; the old one comes back retired.
        if let Err(e) = self.run_with(&format!("SetOutbound {:#x}", pair.outbound.spi), |rt| {
            rt.set_outbound(tunnel, &pair.outbound, Duration::ZERO)
        }) {
            // Undo (1) unless it replaced the installed SA of the same SPI
            // or was there before.
            let same = self
                .installed
                .get(key)
                .is_some_and(|i| i.inbound.spi == new_spi);
            if !same && !added_before {
                let _ = self.run(
                    "RemoveInbound (undo)",
                    Command::RemoveInbound { spi: new_spi },
                );
            }
            return Err(e);
        }
        let previous = self.installed.insert(
            key.clone(),
            Installed {
                inbound: sa_info(key, SaDirection::Inbound, &pair.inbound),
                outbound: sa_info(key, SaDirection::Outbound, &pair.outbound),
                at: Instant::now(),
            },
        );
        self.extra_inbound.remove(&new_spi);
        // The previous inbound SA decrypts until IKE removes it.
        if let Some(old) = previous
            && old.inbound.spi != new_spi
        {
            self.extra_inbound
                .insert(old.inbound.spi, (key.clone(), old.inbound, old.at));
        }
        Ok(())
    }

    fn add_child_inbound(&mut self, key: &TunnelKey, sa: &SaConfig) -> Result<(), DataplaneError> {
        let tunnel = *self
            .ids
            .get(key)
            .ok_or_else(|| DataplaneError::UnknownTunnel(key.clone()))?;
        let now = self.rt.as_ref().map_or(0, Runtime::now_secs);
        InboundSa::new(sa, now).map_err(|e| DataplaneError::InvalidSa {
            tunnel: key.clone(),
            direction: SaDirection::Inbound,
            spi: sa.spi,
            reason: e.to_string(),
        })?;
        self.run_with(&format!("AddInbound {:#x}", sa.spi), |rt| {
            rt.add_inbound(Some(tunnel), sa, Duration::ZERO)
        })?;
        self.extra_inbound.insert(
            sa.spi,
            (
                key.clone(),
                sa_info(key, SaDirection::Inbound, sa),
                Instant::now(),
            ),
        );
        Ok(())
    }

    fn remove_child_inbound(&mut self, key: &TunnelKey, spi: u32) -> Result<(), DataplaneError> {
        if self
            .extra_inbound
            .get(&spi)
            .is_none_or(|(k, _, _)| k != key)
        {
            return Ok(());
        }
        self.extra_inbound.remove(&spi);
        self.run(
            &format!("RemoveInbound {spi:#x}"),
            Command::RemoveInbound { spi },
        )
    }

    fn remove_child_sa(&mut self, key: &TunnelKey) -> Result<(), DataplaneError> {
        let extra: Vec<u32> = self
            .extra_inbound
            .iter()
            .filter(|(_, (k, _, _))| k == key)
            .map(|(spi, _)| *spi)
            .collect();
        for spi in extra {
            self.remove_child_inbound(key, spi)?;
        }
        let Some(old) = self.installed.remove(key) else {
            return Ok(());
        };
        if let Some(&tunnel) = self.ids.get(key) {
            self.run("RemoveOutbound", Command::RemoveOutbound { tunnel })?;
        }
        self.run(
            &format!("RemoveInbound {:#x}", old.inbound.spi),
            Command::RemoveInbound {
                spi: old.inbound.spi,
            },
        )
    }

    fn poll(&mut self) {
        if let Some(rt) = self.rt.as_mut() {
            rt.poll();
            for ev in rt.take_lifetime_events() {
                let worker::Event::Lifetime {
                    spi,
                    inbound,
                    event,
                } = ev
                else {
                    continue;
                };
                let direction = if inbound {
                    SaDirection::Inbound
                } else {
                    SaDirection::Outbound
                };
                let tunnel = self
                    .installed
                    .iter()
                    .find(|(_, i)| {
                        let s = if inbound { &i.inbound } else { &i.outbound };
                        s.spi == spi
                    })
                    .map(|(k, _)| k.clone())
                    .or_else(|| {
                        self.extra_inbound
                            .get(&spi)
                            .filter(|_| inbound)
                            .map(|(k, _, _)| k.clone())
                    });
                tracing::info!(
                    "dataplane: SA {spi:#x} ({direction:?}, tunnel {tunnel:?}) {event:?}"
                );
                if self.sa_events.len() == SA_EVENTS_KEPT {
                    self.sa_events.remove(0);
                }
                self.sa_events.push(SaLifetimeEvent {
                    tunnel,
                    spi,
                    direction,
                    event,
                });
            }
        }
    }

    fn poll_sa_events(&mut self) -> Vec<SaLifetimeEvent> {
        std::mem::take(&mut self.sa_events)
    }

    fn shutdown(&mut self) {
        if let Some(summary) = self.shutdown_runtime() {
            tracing::info!("dataplane stopped: {summary}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tunnel: usize) -> TunnelKey {
        TunnelKey {
            connection_id: "vpn-d".to_owned(),
            tunnel,
        }
    }

    fn bgp(prefix: &str, tunnels: &[usize]) -> DynamicRoute {
        DynamicRoute {
            prefix: prefix.parse().unwrap(),
            tunnels: tunnels.iter().map(|t| key(*t)).collect(),
            backup: Vec::new(),
            as_path: "65001".to_owned(),
            med: None,
            next_hop: "169.254.21.2".parse().unwrap(),
        }
    }

    /// BGP routes go through their UP tunnels (one, or an ECMP group of
    /// the UP members), disappear while none is UP, and never replace a
    /// route of the configuration (local network, inside /30).
    #[test]
    fn bgp_routes_follow_up_tunnels_under_configured_routes() {
        let config = ApplianceConfig::from_toml_str(
            r#"
[gateway]
id = "tgw-d"
outside_addresses = ["192.0.2.1", "192.0.2.3"]
local_networks = ["198.51.100.0/24"]

[dataplane]
worker_lcores = [1]
ports = []

[[customer_gateways]]
id = "cgw-d"
ip_address = "192.0.2.2"
bgp_asn = 65001

[[connections]]
id = "vpn-d"
customer_gateway_id = "cgw-d"
target = "tgw-d"
routing = "dynamic"

[[connections.tunnels]]
outside_ip_address = "192.0.2.1"
inside_ipv4_cidr = "169.254.21.0/30"

[[connections.tunnels]]
outside_ip_address = "192.0.2.3"
inside_ipv4_cidr = "169.254.22.0/30"
"#,
        )
        .unwrap();
        let ids: BTreeMap<TunnelKey, TunnelId> =
            [(key(0), TunnelId(0)), (key(1), TunnelId(1))].into();
        let states = BTreeMap::new();
        let dynamic = [
            bgp("10.1.0.0/16", &[0, 1]),
            bgp("10.2.0.0/16", &[1]),
            bgp("10.3.0.0/16", &[0]),
            DynamicRoute {
                backup: vec![key(1)],
                ..bgp("10.4.0.0/16", &[0])
            },
            // Equal to our local network and to the inside /30: ignored.
            bgp("198.51.100.0/24", &[0]),
            bgp("169.254.22.0/30", &[0]),
        ];
        let lookup = |up: &[TunnelKey]| {
            let (b, problems) = build_fib(&config, &ids, &states, &dynamic, up);
            assert!(problems.is_empty(), "{problems:?}");
            let fib = b.build();
            let at = |a: &str| {
                let t = fib.lookup(a.parse().unwrap());
                // Every ECMP member, by trying hashes spread over the range.
                let mut members: Vec<Target> = (0..16u32)
                    .filter_map(|i| t.map(|t| fib.resolve(t, i << 28)))
                    .collect();
                members.dedup();
                members
            };
            [
                at("10.1.2.3"),
                at("10.2.2.3"),
                at("10.3.2.3"),
                at("198.51.100.9"),
                at("169.254.22.2"),
                at("10.4.2.3"),
            ]
        };
        let [both, two, three, local, inside, backed] = lookup(&[key(0), key(1)]);
        assert_eq!(backed, [Target::Tunnel(TunnelId(0))]);
        assert_eq!(
            both,
            [Target::Tunnel(TunnelId(0)), Target::Tunnel(TunnelId(1))]
        );
        assert_eq!(two, [Target::Tunnel(TunnelId(1))]);
        assert_eq!(three, [Target::Tunnel(TunnelId(0))]);
        assert_eq!(local, [Target::Inside]);
        assert_eq!(inside, [Target::Tunnel(TunnelId(1))]);
        // Tunnel 0 down: its routes go, the ECMP route keeps tunnel 1, the
        // route with a backup moves to it.
        let [both, two, three, _, _, backed] = lookup(&[key(1)]);
        assert_eq!(both, [Target::Tunnel(TunnelId(1))]);
        assert_eq!(two, [Target::Tunnel(TunnelId(1))]);
        assert!(three.is_empty());
        assert_eq!(backed, [Target::Tunnel(TunnelId(1))]);
        // Both down: no BGP route at all.
        let [both, two, ..] = lookup(&[]);
        assert!(both.is_empty() && two.is_empty());
    }

    #[test]
    fn names_and_inside_hosts() {
        assert_eq!(snake("UnknownSpi"), "unknown_spi");
        assert_eq!(snake("Replay"), "replay");
        assert_eq!(
            first_host_v4("169.254.10.0/30".parse().unwrap()),
            Some("169.254.10.1/32".parse().unwrap())
        );
        assert_eq!(
            first_host_v6("fd00::4/126".parse().unwrap()),
            Some("fd00::5/128".parse().unwrap())
        );
    }
}
