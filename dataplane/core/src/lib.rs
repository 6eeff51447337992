//! The ESP dataplane core: wire formats, security associations, encap/decap.
//!
//! Pure Rust with no DPDK dependency: protocol code is generic over
//! [`netbuf::PacketBuffer`], which `dpdk::Mbuf` implements for the workers
//! and `netbuf::TestBuffer` implements for tests and in-memory benchmarks.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

// Modules are added here by their owners once they compile:
//   wire   — zero-copy header views (Ethernet, IPv4, IPv6, UDP, TCP, ICMP, ESP, NAT-T)
//   crypto — ESP transforms (AES-GCM-16, AES-CBC + HMAC)
//   esp    — SAs, anti-replay/ESN, encap/decap, burst API, drop reasons
//   ovpn   — the OpenVPN data channel (P_DATA_V2, AES-GCM, packet-id replay window)
pub mod wire;

pub mod crypto;
pub mod esp;
pub mod ovpn;
