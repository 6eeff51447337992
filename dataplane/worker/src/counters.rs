//! Per-tunnel counters: written by one worker without locks, read and
//! summed by the control core at any time (the basis of the spec's
//! `TunnelDataIn` / `TunnelDataOut` metrics, spec § 20.7).
//!
//! ```text
//!   worker 0 ── Arc<TunnelCounterBlock> ──┐
//!   worker 1 ── Arc<TunnelCounterBlock> ──┼──► control: CountersHandle::tunnel(t) per worker,
//!   worker N ── Arc<TunnelCounterBlock> ──┘             summed with `+=` (sum_tunnel)
//! ```
//!
//! Design (Firecracker `logger/metrics.rs`, VPP per-thread counters): each
//! worker owns a block with one cache-aligned [`TunnelCounters`] per
//! tunnel id. The worker is the only writer, so an update is a relaxed
//! load and a relaxed store of the same `AtomicU64` (no read-modify-write,
//! no lock, the same instructions as a plain `u64` on x86); the control
//! core reads with relaxed loads. A reader may see one counter of a
//! packet updated and the other not yet: each counter is exact and
//! monotonic, the set is not a transaction. The block is allocated once,
//! when the worker is built, and never grows.
//!
//! Per-SA packet and byte counts live in the SA itself
//! ([`InboundSa::counters`](dataplane::esp::InboundSa::counters)) and
//! reach the control core with the SA when it is retired, or on request
//! through [`Command::SnapshotSas`](crate::Command::SnapshotSas).

use std::ops::AddAssign;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dataplane::esp::{DropCounters, DropReason};
use fib::TunnelId;

/// One tunnel's counters on one worker.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub(crate) struct TunnelCounters {
    /// Packets decapsulated from the tunnel.
    in_packets: AtomicU64,
    /// Inner bytes after decryption (`TunnelDataIn`).
    in_bytes: AtomicU64,
    /// Packets encapsulated into the tunnel (fragments count each).
    out_packets: AtomicU64,
    /// Inner bytes before encryption (`TunnelDataOut`).
    out_bytes: AtomicU64,
    /// Packets routed to the tunnel while it had no outbound SA.
    no_sa: AtomicU64,
    /// Packets from the peer dropped by the tunnel's rate policy.
    policed_in: AtomicU64,
    /// Packets to the peer dropped by the tunnel's rate policy.
    policed_out: AtomicU64,
    /// Drops by ESP reason, both directions.
    drops: [AtomicU64; DropReason::COUNT],
}

/// Single-writer add: the worker is the only one writing its block.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl TunnelCounters {
    #[inline]
    pub(crate) fn count_in(&self, bytes: usize) {
        bump(&self.in_packets, 1);
        bump(&self.in_bytes, u64::try_from(bytes).unwrap_or(0));
    }

    #[inline]
    pub(crate) fn count_out(&self, bytes: usize) {
        bump(&self.out_packets, 1);
        bump(&self.out_bytes, u64::try_from(bytes).unwrap_or(0));
    }

    #[inline]
    pub(crate) fn count_drop(&self, reason: DropReason) {
        bump(&self.drops[reason as usize], 1);
    }

    #[inline]
    pub(crate) fn count_no_sa(&self) {
        bump(&self.no_sa, 1);
    }

    #[inline]
    pub(crate) fn count_policed(&self, inbound: bool) {
        bump(
            if inbound {
                &self.policed_in
            } else {
                &self.policed_out
            },
            1,
        );
    }

    fn snapshot(&self) -> TunnelSnapshot {
        let mut drops = DropCounters::default();
        for (d, c) in drops.0.iter_mut().zip(&self.drops) {
            *d = c.load(Ordering::Relaxed);
        }
        TunnelSnapshot {
            in_packets: self.in_packets.load(Ordering::Relaxed),
            in_bytes: self.in_bytes.load(Ordering::Relaxed),
            out_packets: self.out_packets.load(Ordering::Relaxed),
            out_bytes: self.out_bytes.load(Ordering::Relaxed),
            no_sa: self.no_sa.load(Ordering::Relaxed),
            policed_in: self.policed_in.load(Ordering::Relaxed),
            policed_out: self.policed_out.load(Ordering::Relaxed),
            drops,
        }
    }
}

/// One worker's counters for every tunnel id below its capacity.
#[derive(Debug)]
pub(crate) struct TunnelCounterBlock {
    tunnels: Box<[TunnelCounters]>,
    /// Traffic of inbound SAs installed without a tunnel
    /// ([`Command::AddInbound`](crate::Command::AddInbound)).
    unattributed: TunnelCounters,
}

impl TunnelCounterBlock {
    pub(crate) fn new(tunnels: usize) -> Arc<Self> {
        Arc::new(Self {
            tunnels: (0..tunnels).map(|_| TunnelCounters::default()).collect(),
            unattributed: TunnelCounters::default(),
        })
    }

    /// The counters of `tunnel`, or of unattributed traffic.
    #[inline]
    pub(crate) fn get(&self, tunnel: Option<TunnelId>) -> &TunnelCounters {
        tunnel
            .and_then(|t| self.tunnels.get(t.0 as usize))
            .unwrap_or(&self.unattributed)
    }
}

/// A point-in-time copy of one tunnel's counters (one worker's, or the
/// sum over workers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelSnapshot {
    /// Packets decapsulated from the tunnel.
    pub in_packets: u64,
    /// Inner bytes after decryption: the spec's `TunnelDataIn`.
    pub in_bytes: u64,
    /// Packets encapsulated into the tunnel.
    pub out_packets: u64,
    /// Inner bytes before encryption: the spec's `TunnelDataOut`.
    pub out_bytes: u64,
    /// Packets routed to the tunnel while it had no outbound SA.
    pub no_sa: u64,
    /// Packets from the peer dropped by the tunnel's rate policy.
    pub policed_in: u64,
    /// Packets to the peer dropped by the tunnel's rate policy.
    pub policed_out: u64,
    /// Drops by ESP reason.
    pub drops: DropCounters,
}

impl TunnelSnapshot {
    /// All drops, including `no_sa` and the policed ones.
    #[must_use]
    pub fn total_dropped(&self) -> u64 {
        self.drops
            .total()
            .wrapping_add(self.no_sa)
            .wrapping_add(self.policed_in)
            .wrapping_add(self.policed_out)
    }
}

impl AddAssign<&Self> for TunnelSnapshot {
    fn add_assign(&mut self, o: &Self) {
        self.in_packets = self.in_packets.wrapping_add(o.in_packets);
        self.in_bytes = self.in_bytes.wrapping_add(o.in_bytes);
        self.out_packets = self.out_packets.wrapping_add(o.out_packets);
        self.out_bytes = self.out_bytes.wrapping_add(o.out_bytes);
        self.no_sa = self.no_sa.wrapping_add(o.no_sa);
        self.policed_in = self.policed_in.wrapping_add(o.policed_in);
        self.policed_out = self.policed_out.wrapping_add(o.policed_out);
        for (a, b) in self.drops.0.iter_mut().zip(o.drops.0) {
            *a = a.wrapping_add(b);
        }
    }
}

/// The control core's read-only view of one worker's tunnel counters.
#[derive(Debug, Clone)]
pub struct CountersHandle(pub(crate) Arc<TunnelCounterBlock>);

impl CountersHandle {
    /// Tunnel ids this worker counts (`0..capacity`).
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.0.tunnels.len()
    }

    /// A snapshot of `tunnel` on this worker (`None` beyond its capacity).
    #[must_use]
    pub fn tunnel(&self, tunnel: TunnelId) -> Option<TunnelSnapshot> {
        self.0
            .tunnels
            .get(tunnel.0 as usize)
            .map(TunnelCounters::snapshot)
    }

    /// Traffic of inbound SAs installed without a tunnel.
    #[must_use]
    pub fn unattributed(&self) -> TunnelSnapshot {
        self.0.unattributed.snapshot()
    }
}

/// The sum of `tunnel`'s counters over the workers (what the metrics
/// export per tunnel).
#[must_use]
pub fn sum_tunnel(workers: &[CountersHandle], tunnel: TunnelId) -> TunnelSnapshot {
    let mut total = TunnelSnapshot::default();
    for w in workers {
        if let Some(s) = w.tunnel(tunnel) {
            total += &s;
        }
    }
    total
}
