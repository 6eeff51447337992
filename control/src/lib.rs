//! The control plane: configuration, IKE, DPD, BGP, the OpenVPN remote-access
//! engine, the management API, and the control core ([`core`]) that owns
//! them as one sans-IO state machine.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod bgp;
pub mod client_vpn;
pub mod config;
pub mod core;
pub mod dataplane;
pub mod download;
pub mod ike;
pub mod ikev1;
pub mod logs;
pub mod manager;
pub mod metrics;
pub mod openvpn;
pub mod visibility;
