//! State for `vpnctl show bgp` and `show routes` (the CLI renders it).

use std::net::IpAddr;
use std::time::Instant;

use ipnet::IpNet;

use super::rib::{Rib, RouteTarget, Source};
use super::session::{Session, State};
use super::wire::Afi;

/// One neighbour, as `show bgp` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborSnapshot {
    /// The neighbour's address.
    pub neighbor: IpAddr,
    /// Our AS.
    pub local_asn: u32,
    /// The neighbour's AS.
    pub peer_asn: u32,
    /// FSM state.
    pub state: State,
    /// Seconds in Established (0 otherwise).
    pub uptime_secs: u64,
    /// Times the session became Established.
    pub established_transitions: u32,
    /// Negotiated hold time, seconds.
    pub hold_time_secs: Option<u64>,
    /// Prefixes accepted from the neighbour.
    pub prefixes_received: usize,
    /// Prefixes advertised to it.
    pub prefixes_advertised: usize,
    /// Routes denied by policy since start.
    pub denied: u64,
    /// Whether End-of-RIB arrived for IPv4 / IPv6.
    pub eor_received: (bool, bool),
    /// Last NOTIFICATION sent, rendered (`6/1 (Cease/…)`).
    pub last_sent_notification: Option<String>,
    /// Last NOTIFICATION received, rendered.
    pub last_received_notification: Option<String>,
}

impl NeighborSnapshot {
    /// The snapshot of `s` at `now`.
    #[must_use]
    pub fn of(s: &Session, now: Instant) -> Self {
        let c = s.config();
        let st = s.stats();
        Self {
            neighbor: c.peer_addr,
            local_asn: c.local_asn,
            peer_asn: c.peer_asn,
            state: s.state(),
            uptime_secs: st
                .established_at
                .map_or(0, |t| now.saturating_duration_since(t).as_secs()),
            established_transitions: st.established_transitions,
            hold_time_secs: s.negotiated_hold_time().map(|d| d.as_secs()),
            prefixes_received: s.received().len(),
            prefixes_advertised: s.advertised().len(),
            denied: st.denied,
            eor_received: (
                st.eor_received.contains(&Afi::Ipv4),
                st.eor_received.contains(&Afi::Ipv6),
            ),
            last_sent_notification: st.last_sent_notification.as_ref().map(ToString::to_string),
            last_received_notification: st
                .last_received_notification
                .as_ref()
                .map(ToString::to_string),
        }
    }
}

/// One line of `show routes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSnapshot {
    /// Prefix.
    pub prefix: IpNet,
    /// Source.
    pub source: Source,
    /// Target: `inside`, `tunnel N` or the ECMP members.
    pub target: RouteTarget,
    /// AS path of the chosen BGP path.
    pub as_path: Option<String>,
    /// MED of the chosen BGP path.
    pub med: Option<u32>,
    /// Next hop of the chosen BGP path.
    pub next_hop: Option<IpAddr>,
}

/// The selected routes of `rib`, for `show routes`.
#[must_use]
pub fn routes(rib: &Rib) -> Vec<RouteSnapshot> {
    rib.selected()
        .into_iter()
        .map(|(prefix, s)| RouteSnapshot {
            prefix,
            source: s.source,
            target: s.target,
            as_path: s.path.as_ref().map(|p| p.as_path.to_string()),
            med: s.path.as_ref().and_then(|p| p.med),
            next_hop: s.path.as_ref().map(|p| p.next_hop),
        })
        .collect()
}
