//! BGP-4 over the tunnels: codec, per-peer session FSM, RIB and selection.
//!
//! Layer: pure control-plane logic, sans-IO (conventions §4). Nothing here
//! opens a socket, reads the clock or spawns a task: the daemon owns the
//! kernel TCP connections (reached through the dataplane's exception path)
//! and feeds bytes, connection events and `now` into a [`Session`]; it takes
//! bytes, actions and log entries out. Parsers never panic on untrusted
//! input (see [`wire`]).
//!
//! ```text
//!  kernel TCP ──bytes──► Session (one per tunnel) ──Announce/Withdraw──► Rib
//!      ▲                    │  FSM (RFC 4271 § 8), policy, prefix limits    │
//!      └──Transmit/Close────┘  poll_log → BGPStatus/RouteStatus             ▼
//!                                                             fib_builder() → fib::Fib
//! ```
//!
//! * [`wire`]: messages, RFC 4760 / 6793 / 2918 / 4724 / 7606.
//! * [`session`]: the FSM, collision resolution, policy (own-AS, next hop
//!   connected, prefix limits), Adj-RIB-In/Out, End-of-RIB.
//! * [`rib`]: the spec's route priority, best path, ECMP, tunnel failover,
//!   MED / AS_PATH-prepend steering of what we advertise.
//! * [`log`]: the spec's BGP log entries and texts.
//! * [`peer`]: a session's settings from the configuration model.
//! * [`snapshot`]: what `vpnctl show bgp` prints.
//! * [`speaker`]: every session of the appliance and the RIB, fed by the
//!   control core ([`crate::core`]); routes out as deltas.

pub mod log;
pub mod peer;
pub mod rib;
pub mod session;
pub mod snapshot;
pub mod speaker;
pub mod wire;

#[cfg(test)]
mod tests;

/// The FIB's tunnel handle, which RIB routes point at.
pub use fib::TunnelId;
pub use log::{BgpLogEvent, RouteLog, RouteLogStatus};
pub use rib::{Rib, RouteTarget, Selected, Source, Steering, connection_adverts};
pub use session::{
    Action, Advert, ConnId, Direction, PeerConfig, PeerRoute, Session, State, Transmit,
};
pub use snapshot::NeighborSnapshot;
pub use speaker::{BgpSpec, RoutingSink, Speaker, SpeakerAction, bgp_specs};
