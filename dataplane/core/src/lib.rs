//! The ESP dataplane core: wire formats, security associations, encap/decap.
//!
//! Pure Rust with no DPDK dependency: generic over [`netbuf::PacketBuffer`].
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]
