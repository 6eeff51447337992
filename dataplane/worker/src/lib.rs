//! The worker: what one poll-mode lcore does to every packet, and how the
//! control core changes its tables.
//!
//! ```text
//!   control core ── Command ──► [SPSC ring] ──► worker: applies between bursts
//!        ▲                                         │
//!        └──────── Event (acks, retired SAs) ◄─────┘
//!
//!   outside port ─► Worker::handle_outside ─► decap ─► reassemble ─► MSS clamp ─► FIB ─► inside port
//!                     │                       ▲ │                (above the inside MTU: fragment again)
//!                     │                       │ (IKE, NAT-T marker, ICMP to us) ─► kernel (tap)
//!                     └─ ESP/UDP fragment to us ─► reassemble (outer table) ─┘ (or non-ESP: kernel, whole)
//!   inside port  ─► Worker::handle_inside  ─► FIB ─► MSS clamp ─► clear DF ─► fit to MTU ─► encap ─► outside port
//!                                                                  └─ too big, DF ─► ICMP ─► inside port
//!   kernel (tap) ─► Worker::handle_kernel  ─► outside (IKE from our address) or FIB ─► encap
//!
//!   outside UDP to the OpenVPN port, P_DATA_V2 ─► ovpn decap ─► FIB (inside, tunnel, client)
//!                                   other opcodes (control channel) ─► kernel
//!   FIB Target::Client ─► ovpn encap (P_DATA_V2, IPv4/UDP to the client) ─► outside port
//! ```
//!
//! OpenVPN clients ("Client VPN") are in [`ovpn`]: per-client keys
//! arrive as commands like SAs, drops count in [`WorkerStats::ovpn`].
//!
//! The runtime hands each received burst to [`Worker::handle_burst_io`],
//! which runs the matching `handle_*_io` on every packet in order while
//! it looks the packets ahead up and prefetches, stage by stage, the SPI
//! table's line, then their SA, counters and policer (with thousands of
//! tunnels each packet's state is cold; see [`PREFETCH_AHEAD`]).
//!
//! The `handle_*_io` variants take a [`PacketIo`]: the worker's buffer
//! pool and a way to send the extra packets the pipeline produces (the
//! second and later fragments of a packet fragmented before encryption,
//! ICMP "fragmentation needed" / "packet too big"). The plain `handle_*`
//! use [`NoIo`] and so can neither fragment nor originate ICMP.
//!
//! MTU handling follows the spec (§ 14.2, § 14.3, § 25.3): the tunnel MTU
//! is derived from the outbound SA ([`dataplane::esp::mtu`]); TCP SYNs
//! are clamped to its MSS both ways (inbound with the MTU of the SA they
//! came through); an inner IPv4 packet above the MTU is fragmented before
//! encryption ([`dataplane::esp::frag`], RFC 4459) when its DF bit is
//! clear or the tunnel's clear-DF option ([`DfPolicy::Clear`]) is on,
//! otherwise (and always for IPv6) it is dropped as
//! [`DropReason::TooBig`] and an ICMP error goes back toward its source,
//! rate-limited by [`MtuOptions`]. Inner fragments from a peer are
//! reassembled after decap by a per-worker
//! [`Reassembler`](dataplane::esp::reassembly::Reassembler), whose
//! timeouts run on the worker's clock ([`Worker::handle_time_ms`]).
//! Outer fragments (IPv4 or IPv6 ESP, or UDP, to one of our outside
//! addresses) are reassembled before decap by a second one, sized by
//! [`OUTER_REASSEMBLY`], and the whole datagram is classified again; its
//! drops are counted in [`WorkerStats::outer`].
//!
//! [`DfPolicy::Clear`]: dataplane::esp::sa::DfPolicy::Clear
//! [`DropReason::TooBig`]: dataplane::esp::DropReason::TooBig
//!
//! The pipeline is generic over [`netbuf::PacketBuffer`], so it runs on
//! DPDK mbufs in the appliance and on `TestBuffer`s in tests. Per packet it
//! never allocates, locks, makes a syscall or panics: every packet ends in
//! an [`Action`], drops carry a reason counted in [`WorkerStats`].
//!
//! # One tunnel on several workers
//!
//! A tunnel too big for one core is installed on several workers, each
//! with its own copy of the SA pair built from the same `SaConfig`:
//!
//! * outbound copies share one sequence counter
//!   ([`OutboundSa::with_shared_seq`], one `Arc<AtomicU64>` per outbound
//!   SA): each worker reserves numbers once per burst
//!   ([`Worker::begin_burst`]), abandons what it did not use at the end
//!   of the burst, and the counter never wraps;
//! * inbound copies share one lock-free anti-replay window
//!   ([`InboundSa::with_shared_replay`]) rather than being steered to one
//!   worker: the NIC's RSS cannot be relied on to bring every packet of
//!   an SA to one queue (it hashes what the PMD supports, usually not the
//!   SPI, and the NAT-T source port changes), and per-worker windows for
//!   one SA would let a replay with a modified outer header through on
//!   another queue. The reasoning and the algorithm are in
//!   [`dataplane::esp::shared`]. An SA on one worker keeps its private,
//!   cheaper window.
//!
//! On top of that the runtime places each tunnel's inbound ESP on one
//! worker, the two tunnels of a connection on different ones: by the
//! NIC's flow rules where it has them, otherwise by hand-off — the
//! receiving worker asks [`Worker::inbound_owner`] (SPI → tunnel → the
//! owner table of [`Command::SetInboundOwners`]) and passes the packet to
//! that worker. The shared window stays the safety net for what still
//! lands elsewhere (a tunnel not placed yet, a rule that does not match).
//!
//! [`OutboundSa::with_shared_seq`]: dataplane::esp::OutboundSa::with_shared_seq
//! [`InboundSa::with_shared_replay`]: dataplane::esp::InboundSa::with_shared_replay
//!
//! # Per-tunnel rate policy
//!
//! A policer per tunnel and direction caps inner bytes and packets at the
//! spec's figures for the tunnel's bandwidth class
//! ([`policy::caps_for`]); the control core installs a worker's share with
//! [`Command::SetTunnelPolicy`] and switches policing for the whole worker
//! with [`Command::SetPolicing`]. Its drops are [`Drop::Policed`] per
//! worker and `policed_in` / `policed_out` per tunnel. See [`policy`].
//!
//! # Counters
//!
//! [`WorkerStats`] holds the worker's totals and drops by reason (read by
//! the runtime that owns the worker). Per tunnel, packets and inner bytes
//! each way (the spec's `TunnelDataIn` / `TunnelDataOut`) and drops by
//! reason are kept in a block the worker writes without locks and the
//! control core reads at any time through [`Worker::counters`] and sums
//! with [`sum_tunnel`]; per-SA packets and bytes come back with retired
//! SAs and on [`Command::SnapshotSas`].
//!
//! Tables are owned by the worker. The control core never touches them: it
//! sends [`Command`]s; SAs and tables that leave the worker travel back as
//! [`Event`]s so their memory is freed on the control core, and the ack
//! tells the control core when an old SA can no longer be referenced.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

mod command;
mod counters;
mod nd;
pub mod ovpn;
mod pipeline;
pub mod policy;
mod spi_map;
mod stats;
mod tables;

pub use command::{Command, ControlEnd, Event, NO_OWNER, SaSnapshot, WorkerEnd, channel};
pub use counters::{CountersHandle, TunnelSnapshot, sum_tunnel};
pub use pipeline::{
    Action, Addresses, EVENTS_PER_COMMAND, FnIo, Ingress, MAX_FRAGMENTS, MtuOptions, NoIo,
    OUTER_REASSEMBLY, OVPN_TUNNEL_MTU, PREFETCH_AHEAD, PREFETCH_SA_AHEAD, PREFETCH_TABLE_AHEAD,
    PacketIo, Worker,
};
pub use stats::{Drop, WorkerStats};
pub use tables::SaTables;
