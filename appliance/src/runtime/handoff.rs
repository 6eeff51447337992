//! Hand-off between workers: the software form of inbound steering.
//!
//! Where the outside port has no `rte_flow` (see [`super::steering`]),
//! RSS or the driver puts a tunnel's ESP on whichever queue its hash
//! picks, so the two tunnels of a connection may share a worker. With
//! hand-off, the worker that receives an ESP packet asks its own tables
//! which worker the packet's tunnel belongs to
//! ([`Worker::inbound_owner`], filled by
//! [`Command::SetInboundOwners`](worker::Command::SetInboundOwners)) and,
//! when that is another worker, moves the mbuf onto an SPSC ring toward
//! it instead of decrypting it; each worker drains the rings toward it
//! as one more input. The same idea as VPP's IPsec hand-off nodes for an
//! SA bound to a thread.
//!
//! ```text
//!   outside queue i ─► worker i ─┬─ own / no owner / not ESP ─► pipeline
//!                                └─ owner j ─► ring i→j ─► worker j ─► pipeline
//! ```
//!
//! One ring per ordered pair of workers (N × (N − 1), [`RING_SIZE`] each),
//! created at start. Per packet: the SPI lookup, and for a packet handed
//! on one enqueue and one dequeue of its pointer; the mbuf goes back to
//! the pool from whichever lcore frees it. A ring that is full (its
//! worker stalled) drops the packet, counted as
//! [`HandoffCounts::full`]. A tunnel's packets keep their order: all of
//! them leave the receiving worker through the same ring, and a tunnel's
//! outer 5-tuple (addresses, SPI or the NAT-T ports) hashes to one queue.

use dpdk::{Burst, Eal, MbufRing, RingConsumer, RingProducer};
use worker::Worker;

/// Packets each ring holds (a power of two; one slot stays empty).
pub const RING_SIZE: u32 = 1024;

/// What one worker counted of hand-off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandoffCounts {
    /// Packets moved onto another worker's ring.
    pub sent: u64,
    /// Packets taken from the other workers' rings.
    pub received: u64,
    /// Packets freed because the ring toward their worker was full.
    pub full: u64,
}

impl std::ops::AddAssign<&Self> for HandoffCounts {
    fn add_assign(&mut self, o: &Self) {
        self.sent = self.sent.wrapping_add(o.sent);
        self.received = self.received.wrapping_add(o.received);
        self.full = self.full.wrapping_add(o.full);
    }
}

/// One worker's ends of the hand-off rings.
#[derive(Debug)]
pub(super) struct Handoff {
    me: usize,
    /// Toward worker `j` (none toward itself): the ring and the packets
    /// gathered for it from the current burst.
    to: Vec<Option<(RingProducer, Burst)>>,
    /// From every other worker.
    from: Vec<RingConsumer>,
    /// The packets of the current burst this worker keeps.
    pub(super) local: Burst,
    pub(super) counts: HandoffCounts,
}

impl Handoff {
    /// The rings of `workers` workers, one [`Handoff`] per worker (index =
    /// worker). Names are `vpn_ho_<from>_<to>` in the EAL's namespace.
    ///
    /// # Errors
    /// What `rte_ring_create` reported.
    pub(super) fn rings(eal: &Eal, workers: usize) -> dpdk::Result<Vec<Self>> {
        let mut ends: Vec<Self> = (0..workers)
            .map(|me| Self {
                me,
                to: (0..workers).map(|_| None).collect(),
                from: Vec::with_capacity(workers.saturating_sub(1)),
                local: Burst::new(),
                counts: HandoffCounts::default(),
            })
            .collect();
        for i in 0..workers {
            for j in (0..workers).filter(|&j| j != i) {
                let (tx, rx) = MbufRing::spsc(eal, &format!("vpn_ho_{i}_{j}"), RING_SIZE)?;
                ends[i].to[j] = Some((tx, Burst::new()));
                ends[j].from.push(rx);
            }
        }
        Ok(ends)
    }

    /// Moves every packet of `rx` that another worker owns onto the ring
    /// toward it and keeps the rest in [`Handoff::local`], in order.
    pub(super) fn split(&mut self, w: &Worker, rx: &mut Burst) {
        for m in rx.drain() {
            let owner = w
                .inbound_owner(m.as_ref())
                .map(usize::from)
                .filter(|&o| o != self.me);
            match owner
                .and_then(|o| self.to.get_mut(o))
                .and_then(Option::as_mut)
            {
                Some((ring, pending)) => {
                    if let Err(m) = pending.push(m) {
                        Self::flush(ring, pending, &mut self.counts);
                        // Cannot fail: the burst was just emptied.
                        let _ = pending.push(m);
                    }
                }
                // A burst has room for a whole rx burst.
                None => {
                    let _ = self.local.push(m);
                }
            }
        }
        for (ring, pending) in self.to.iter_mut().flatten() {
            Self::flush(ring, pending, &mut self.counts);
        }
    }

    /// Enqueues `pending`; what the ring cannot take is freed and counted.
    fn flush(ring: &mut RingProducer, pending: &mut Burst, counts: &mut HandoffCounts) {
        if pending.is_empty() {
            return;
        }
        counts.sent += ring.enqueue_burst(pending) as u64;
        counts.full += pending.len() as u64;
        pending.clear();
    }

    /// Takes up to a burst of packets handed to this worker, from the
    /// other workers' rings in turn, into `rx`; returns how many.
    pub(super) fn receive(&mut self, rx: &mut Burst) -> usize {
        let mut n = 0;
        for ring in &mut self.from {
            if rx.spare() == 0 {
                break;
            }
            n += ring.dequeue_burst(rx);
        }
        self.counts.received += n as u64;
        n
    }
}
