//! The worker: what one poll-mode lcore does to every packet, and how the
//! control core changes its tables.
//!
//! ```text
//!   control core ── Command ──► [SPSC ring] ──► worker: applies between bursts
//!        ▲                                         │
//!        └──────── Event (acks, retired SAs) ◄─────┘
//!
//!   outside port ─► Worker::handle_outside ─► decap ─► FIB ─► inside port
//!                                             (IKE, NAT-T marker, ICMP to us) ─► kernel (tap)
//!   inside port  ─► Worker::handle_inside  ─► FIB ─► encap ─► outside port
//!   kernel (tap) ─► Worker::handle_kernel  ─► outside (IKE from our address) or FIB ─► encap
//! ```
//!
//! The pipeline is generic over [`netbuf::PacketBuffer`], so it runs on
//! DPDK mbufs in the appliance and on `TestBuffer`s in tests. Per packet it
//! never allocates, locks, makes a syscall or panics: every packet ends in
//! an [`Action`], drops carry a reason counted in [`WorkerStats`].
//!
//! Tables are owned by the worker. The control core never touches them: it
//! sends [`Command`]s; SAs and tables that leave the worker travel back as
//! [`Event`]s so their memory is freed on the control core, and the ack
//! tells the control core when an old SA can no longer be referenced.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

mod command;
mod pipeline;
mod stats;
mod tables;

pub use command::{Command, ControlEnd, Event, WorkerEnd, channel};
pub use pipeline::{Action, Addresses, Worker};
pub use stats::{Drop, WorkerStats};
pub use tables::SaTables;
