//! A thin safe layer over DPDK (the system's 22.11, through `dpdk-sys`).
//!
//! What it guarantees:
//! * every DPDK object has one Rust owner that frees it on `Drop`
//!   ([`Mempool`], [`Mbuf`], [`MbufRing`], ports are stopped by [`Port`]);
//! * packets move by value: [`RxQueue::rx_burst`] fills a [`Burst`],
//!   [`TxQueue::tx_burst`] hands the accepted prefix to the NIC and frees and
//!   counts the rest, so an mbuf is never leaked nor freed twice;
//! * the fast path (`rx_burst`, `tx_burst`, mbuf data access) never
//!   allocates, locks or panics;
//! * DPDK's negative-errno returns become the typed [`Error`];
//! * a flow rule ([`Flow`], steering packets to an rx queue) is destroyed
//!   on drop and keeps its port open until then.
//!
//! What it does not do: touch the PCI bus (the appliance's EAL arguments are
//! built by the caller; tests always pass `--no-pci`), or hide DPDK's
//! threading model — an [`RxQueue`]/[`TxQueue`] is `Send` but not `Sync`,
//! so exactly one lcore polls it.
//!
//! All `unsafe` code of the project outside the raw bindings lives here,
//! each block with a `// SAFETY:` comment naming the invariants it relies on.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

mod burst;
mod eal;
mod error;
mod flow;
mod lcore;
mod mbuf;
mod mempool;
mod port;
mod ring;
pub mod testing;

pub use burst::{Burst, Drain, MAX_BURST};
pub use eal::Eal;
pub use error::{Error, Result};
pub use flow::{Flow, FlowL4, FlowMatch};
pub use lcore::{LcoreId, rdtsc, tsc_hz};
pub use mbuf::Mbuf;
pub use mempool::Mempool;
pub use port::{
    LinkStatus, Offloads, Port, PortConfig, PortId, PortStats, RSS_ESP, RxQueue, TxQueue, TxStats,
    max_queues, port_by_name, port_count,
};
pub use ring::{MbufRing, RingConsumer, RingProducer};

/// Re-export of the raw bindings, for the rare call the safe layer lacks.
pub use dpdk_sys as sys;
