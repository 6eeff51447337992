//! The control plane: configuration, IKE, DPD, BGP and the management API.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
