//! Unit tests for the BGP modules: byte fixtures, property round-trips,
//! RFC 7606 cases, a deterministic two-speaker harness with virtual time,
//! and RIB selection.

mod harness;
mod peer_tests;
mod rib_tests;
mod session_tests;
mod wire_tests;
