//! The tunnel BGP log entries a session produces (spec §20.3, §20.4).
//!
//! Two kinds, as the spec names them: `BGPStatus` (state changes, OPEN
//! sent/received, prefix-limit warnings, notifications, End-of-RIB,
//! attribute updates; status `UP`/`DOWN`) and `RouteStatus` (a route the
//! peer advertised, updated or withdrawn, with `prefix`, `asPath`,
//! `localPref`, `med`, `nextHopIp`, `weight` and `details` when the route
//! was denied). The texts are the spec's catalogue, word for word,
//! including its "AWS-side peer" wording so existing log parsers keep
//! working. Entries carry no time and no resource id: the daemon stamps
//! them and writes them with the tunnel's `resource_id`.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::session::PeerRoute;

/// `RouteStatus` status values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteLogStatus {
    /// Route advertised by the peer.
    Advertised,
    /// Existing route updated by the peer.
    Updated,
    /// Route withdrawn by the peer.
    Withdrawn,
}

impl RouteLogStatus {
    /// `ADVERTISED`, `UPDATED` or `WITHDRAWN`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Advertised => "ADVERTISED",
            Self::Updated => "UPDATED",
            Self::Withdrawn => "WITHDRAWN",
        }
    }
}

/// The fields of a `RouteStatus` record (spec §20.3, JSON keys in docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLog {
    /// `status`.
    pub status: RouteLogStatus,
    /// `prefix`.
    pub prefix: IpNet,
    /// `asPath`, space separated.
    pub as_path: String,
    /// `localPref` (100 when the peer sent none, as BGP implementations
    /// default it).
    pub local_pref: u32,
    /// `med` (0 when absent).
    pub med: u32,
    /// `nextHopIp`.
    pub next_hop: IpAddr,
    /// `weight`: 0 for every learned route (the spec's 32768 is the value
    /// Cisco gives locally originated routes).
    pub weight: u32,
    /// `details`, only when the route had an error (`DENIED due to: …`).
    pub details: Option<String>,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BgpLogEvent {
    /// `type = BGPStatus`.
    Status {
        /// `status`: `UP` when true, else `DOWN`.
        up: bool,
        /// `message.details`.
        details: String,
    },
    /// `type = RouteStatus`.
    Route(RouteLog),
}

impl BgpLogEvent {
    pub(crate) fn status(up: bool, details: String) -> Self {
        Self::Status { up, details }
    }

    pub(crate) fn route(
        status: RouteLogStatus,
        prefix: IpNet,
        r: &PeerRoute,
        details: Option<String>,
    ) -> Self {
        Self::Route(RouteLog {
            status,
            prefix,
            as_path: r.as_path.to_string(),
            local_pref: r.local_pref.unwrap_or(100),
            med: r.med.unwrap_or(0),
            next_hop: r.next_hop,
            weight: 0,
            details,
        })
    }

    /// `BGPStatus` or `RouteStatus`.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Status { .. } => "BGPStatus",
            Self::Route(_) => "RouteStatus",
        }
    }

    /// `UP`/`DOWN` or the route status.
    #[must_use]
    pub const fn status_str(&self) -> &'static str {
        match self {
            Self::Status { up: true, .. } => "UP",
            Self::Status { up: false, .. } => "DOWN",
            Self::Route(r) => r.status.as_str(),
        }
    }
}

impl fmt::Display for BgpLogEvent {
    /// The `text` format: `type=… status=… key=value …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "type={} status={}", self.kind(), self.status_str())?;
        match self {
            Self::Status { details, .. } => write!(f, " details=\"{details}\""),
            Self::Route(r) => {
                write!(
                    f,
                    " prefix={} asPath=\"{}\" localPref={} med={} nextHopIp={} weight={}",
                    r.prefix, r.as_path, r.local_pref, r.med, r.next_hop, r.weight
                )?;
                if let Some(d) = &r.details {
                    write!(f, " details=\"{d}\"")?;
                }
                Ok(())
            }
        }
    }
}

/// The message texts (spec §20.4).
pub mod msg {
    use std::net::IpAddr;

    use super::super::session::State;
    use super::super::wire::AsPath;
    use super::super::wire::{Notification, Open};

    /// Route denied: AS_PATH holds our AS.
    pub const DENIED_OWN_AS: &str = "DENIED due to: as-path contains our own AS";
    /// Route denied: next hop not on the tunnel's inside network.
    pub const DENIED_NEXTHOP: &str = "DENIED due to: nexthop not connected";

    /// FSM transition.
    #[must_use]
    pub fn state_changed(from: State, to: State, ip: IpAddr) -> String {
        format!(
            "AWS-side peer BGP session state has changed from {from} to {to} with neighbor {ip}"
        )
    }

    /// Received-prefix count near the limit.
    #[must_use]
    pub fn max_prefix_warning(count: usize, ip: IpAddr, limit: u32) -> String {
        format!(
            "AWS-side peer reported maximum-prefix limit warning - received {count} prefixes from neighbor {ip}, limit {limit}"
        )
    }

    /// Received-prefix count past the limit.
    #[must_use]
    pub fn max_prefix_exceeded(count: usize, ip: IpAddr, limit: u32) -> String {
        format!(
            "AWS-side peer detected maximum-prefix limit exceeded - received {count} prefixes from neighbor {ip}, limit {limit}"
        )
    }

    /// Advertised-prefix limit (ours; not in the spec's catalogue, worded
    /// like its neighbours).
    #[must_use]
    pub fn advertised_limit(count: usize, ip: IpAddr, limit: u32) -> String {
        format!(
            "AWS-side peer reached the advertised-prefix limit - {count} prefixes for neighbor {ip}, limit {limit}; the rest are not advertised"
        )
    }

    /// NOTIFICATION we sent. Hold timer expiry has its own text.
    #[must_use]
    pub fn notification_sent(n: &Notification, ip: IpAddr) -> String {
        format!(
            "AWS-side peer sent notification {}/{} ({}) to neighbor {ip}",
            u8::from(n.code),
            n.subcode,
            n.name()
        )
    }

    /// NOTIFICATION the peer sent.
    #[must_use]
    pub fn notification_received(n: &Notification, ip: IpAddr) -> String {
        format!(
            "AWS-side peer received notification {}/{} ({}) from neighbor {ip}",
            u8::from(n.code),
            n.subcode,
            n.name()
        )
    }

    /// Hold timer expired.
    #[must_use]
    pub fn hold_timer_expired_sent(ip: IpAddr) -> String {
        format!("AWS-side peer sent Hold Timer Expired notification to neighbor {ip}")
    }

    /// OPEN with the wrong AS.
    #[must_use]
    pub fn bad_open(got: u32, expected: u32, ip: IpAddr) -> String {
        format!(
            "AWS-side peer detected bad OPEN message from neighbor {ip} - remote AS is {got}, expected {expected}"
        )
    }

    /// OPEN received.
    #[must_use]
    pub fn open_received(o: &Open, ip: IpAddr) -> String {
        format!(
            "AWS-side peer received OPEN message from neighbor {ip} - version {}, AS {}, hold time {}, router-id {}",
            o.version,
            o.asn(),
            o.hold_time,
            o.bgp_id
        )
    }

    /// OPEN sent.
    #[must_use]
    pub fn open_sent(o: &Open, ip: IpAddr) -> String {
        format!(
            "AWS-side peer sent OPEN message to neighbor {ip} - version {}, AS {}, hold time {}, router-id {}",
            o.version,
            o.asn(),
            o.hold_time,
            o.bgp_id
        )
    }

    /// Active open.
    #[must_use]
    pub fn initiating(ip: IpAddr) -> String {
        format!("AWS-side peer is initiating connection (via Connect) to neighbor {ip}")
    }

    /// End-of-RIB sent.
    #[must_use]
    pub fn eor_sent(ip: IpAddr) -> String {
        format!("AWS-side peer sent an End-of-RIB message to neighbor {ip}")
    }

    /// UPDATE with reachable routes.
    #[must_use]
    pub fn attribute_update(p: &AsPath, ip: IpAddr) -> String {
        format!("AWS-side peer received attribute update from neighbor {ip} - AS path: {p}")
    }

    /// Session down, peer restarting: routes kept stale (RFC 4724).
    #[must_use]
    pub fn gr_retained(count: usize, ip: IpAddr) -> String {
        format!(
            "AWS-side peer retained {count} routes from neighbor {ip} as stale while it restarts (graceful restart)"
        )
    }

    /// Collision detected (the NOTIFICATION 6/7 line follows).
    #[must_use]
    pub fn collision(ip: IpAddr) -> String {
        format!("AWS-side peer detected a connection collision with neighbor {ip}")
    }
}
