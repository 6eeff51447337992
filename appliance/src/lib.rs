//! Appliance plumbing shared by the binaries: boot-time hugepage set-up and
//! the EAL arguments built from it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bgp_service;
pub mod deadlines;
pub mod eal_args;
pub mod event_loop;
pub mod hugepages;
pub mod ike_service;
pub mod kernel_port;
pub mod logging;
pub mod mgmt;
pub mod nics;
pub mod poller;
pub mod runtime;
pub mod static_mode;
