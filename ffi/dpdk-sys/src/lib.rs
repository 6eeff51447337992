//! Raw bindings to the system DPDK (22.11, found with `pkg-config libdpdk`).
//!
//! Two parts:
//! * everything bindgen generates from DPDK's headers (functions, config
//!   structs, constants), restricted by an allowlist to what we use;
//! * the `*_w` functions of our C shim (`src/shim.c`), one per DPDK
//!   `static inline` function or macro we need (rx/tx burst, mbuf helpers,
//!   ring bursts, `rte_errno`, `rte_lcore_id`, `rte_rdtsc`, …).
//!
//! `rte_mbuf`, `rte_mempool` and `rte_ring` are opaque here: their fields are
//! only ever reached through shim helpers, never through bindgen's
//! anonymous unions, whose paths change when DPDK reorders them.
//!
//! Nothing here is safe to call without reading DPDK's documentation; the
//! safe layer is the `dpdk` crate beside this one.
#![no_std]
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    unreachable_pub,
    missing_debug_implementations,
    unused_qualifications,
    elided_lifetimes_in_paths,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::undocumented_unsafe_blocks,
    rustdoc::all
)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
