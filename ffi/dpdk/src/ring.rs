//! Rings of mbufs (`rte_ring`) for handing packets between lcores, and
//! ring-backed ethdev ports.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::burst::Burst;
use crate::eal::Eal;
use crate::error::{Error, Result};
use crate::mbuf::Mbuf;
use crate::port::PortId;

#[derive(Debug)]
struct RingInner {
    raw: NonNull<dpdk_sys::rte_ring>,
    _eal: Eal,
}

// SAFETY: an rte_ring lives in shared memory; which threads may enqueue or
// dequeue concurrently is enforced by the handle types below (one producer
// and one consumer handle for SP/SC rings; MP/MC rings are fully shared).
unsafe impl Send for RingInner {}
// SAFETY: as above.
unsafe impl Sync for RingInner {}

impl RingInner {
    fn create(eal: &Eal, name: &str, size: u32, flags: u32) -> Result<Self> {
        let cname = CString::new(name).map_err(|_| Error::NulInArgument {
            op: "rte_ring_create",
        })?;
        // SAFETY: cname is valid for the call; the EAL is initialised.
        let raw = unsafe {
            dpdk_sys::rte_ring_create(cname.as_ptr(), size, dpdk_sys::SOCKET_ID_ANY, flags)
        };
        let raw = NonNull::new(raw).ok_or_else(|| Error::last("rte_ring_create"))?;
        Ok(Self {
            raw,
            _eal: eal.clone(),
        })
    }

    fn enqueue(&self, burst: &mut Burst) -> usize {
        let (pkts, len) = burst.live_raw();
        let len = u32::try_from(len).unwrap_or(0);
        // SAFETY: pkts holds len owned mbufs; the caller's handle type
        // guarantees the ring's producer discipline.
        let n = unsafe { dpdk_sys::rte_ring_enqueue_burst_w(self.raw.as_ptr(), pkts.cast(), len) }
            as usize;
        // SAFETY: the ring now owns exactly the first n packets.
        unsafe { burst.forget_front(n) };
        n
    }

    fn dequeue(&self, burst: &mut Burst) -> usize {
        let (slots, spare) = burst.spare_raw();
        let spare = u32::try_from(spare).unwrap_or(0);
        // SAFETY: slots has `spare` writable slots; consumer discipline is
        // guaranteed by the caller's handle type.
        let n =
            unsafe { dpdk_sys::rte_ring_dequeue_burst_w(self.raw.as_ptr(), slots.cast(), spare) }
                as usize;
        // SAFETY: only mbufs we enqueued (owned) travel on these rings.
        unsafe { burst.commit(n) };
        n
    }

    fn count(&self) -> usize {
        // SAFETY: valid ring.
        unsafe { dpdk_sys::rte_ring_count_w(self.raw.as_ptr()) as usize }
    }
}

impl Drop for RingInner {
    fn drop(&mut self) {
        // Free the packets still queued, then the ring.
        let mut burst = Burst::new();
        while self.dequeue(&mut burst) > 0 {
            burst.clear();
        }
        // SAFETY: no handle is left and the ring is empty.
        unsafe { dpdk_sys::rte_ring_free(self.raw.as_ptr()) };
    }
}

/// Constructors of mbuf rings.
#[derive(Debug)]
pub struct MbufRing;

impl MbufRing {
    /// A single-producer/single-consumer ring of `size` (a power of two;
    /// `size - 1` usable) split into its two ends.
    ///
    /// # Errors
    /// What `rte_ring_create` reported (size not a power of two, taken name).
    pub fn spsc(eal: &Eal, name: &str, size: u32) -> Result<(RingProducer, RingConsumer)> {
        let flags = dpdk_sys::RING_F_SP_ENQ | dpdk_sys::RING_F_SC_DEQ;
        let inner = Arc::new(RingInner::create(eal, name, size, flags)?);
        Ok((
            RingProducer {
                inner: inner.clone(),
            },
            RingConsumer { inner },
        ))
    }

    /// A multi-producer/multi-consumer ring: both ends may be cloned.
    ///
    /// # Errors
    /// As for [`MbufRing::spsc`].
    pub fn mpmc(eal: &Eal, name: &str, size: u32) -> Result<(RingProducer, RingConsumer)> {
        let inner = Arc::new(RingInner::create(eal, name, size, 0)?);
        Ok((
            RingProducer {
                inner: inner.clone(),
            },
            RingConsumer { inner },
        ))
    }

    /// A pair of ethdev ports joined back to back by two rings
    /// (`rte_eth_from_rings`): what one sends, the other receives. For
    /// tests and benchmarks.
    ///
    /// # Errors
    /// What `rte_ring_create`/`rte_eth_from_rings` reported.
    pub fn port_pair(eal: &Eal, name: &str, size: u32) -> Result<(PortId, PortId)> {
        let flags = dpdk_sys::RING_F_SP_ENQ | dpdk_sys::RING_F_SC_DEQ;
        let a_to_b = RingInner::create(eal, &format!("{name}_ab"), size, flags)?;
        let b_to_a = RingInner::create(eal, &format!("{name}_ba"), size, flags)?;
        let mut a_to_b_raw = a_to_b.raw.as_ptr();
        let mut b_to_a_raw = b_to_a.raw.as_ptr();
        let a = from_rings(&format!("{name}_a"), &mut b_to_a_raw, &mut a_to_b_raw)?;
        let b = from_rings(&format!("{name}_b"), &mut a_to_b_raw, &mut b_to_a_raw)?;
        // The ports use the rings until the EAL is torn down: keep them.
        std::mem::forget(a_to_b);
        std::mem::forget(b_to_a);
        Ok((a, b))
    }
}

fn from_rings(
    name: &str,
    rx: &mut *mut dpdk_sys::rte_ring,
    tx: &mut *mut dpdk_sys::rte_ring,
) -> Result<PortId> {
    let cname = CString::new(name).map_err(|_| Error::NulInArgument {
        op: "rte_eth_from_rings",
    })?;
    // SAFETY: rx and tx each point at one valid ring pointer; the rings
    // outlive the port (the caller leaks them).
    let rc = unsafe {
        dpdk_sys::rte_eth_from_rings(cname.as_ptr(), rx, 1, tx, 1, dpdk_sys::rte_socket_id())
    };
    if rc < 0 {
        return Err(Error::last("rte_eth_from_rings"));
    }
    u16::try_from(rc)
        .map(PortId)
        .map_err(|_| Error::InvalidArgument {
            op: "rte_eth_from_rings",
        })
}

/// The producer end of an mbuf ring. `Send`, not `Clone` for SP rings.
#[derive(Debug)]
pub struct RingProducer {
    inner: Arc<RingInner>,
}

/// The consumer end of an mbuf ring.
#[derive(Debug)]
pub struct RingConsumer {
    inner: Arc<RingInner>,
}

impl RingProducer {
    /// Moves as many packets of the burst as fit into the ring, from the
    /// front; the rest stay in the burst. Returns how many moved.
    #[inline]
    pub fn enqueue_burst(&mut self, burst: &mut Burst) -> usize {
        self.inner.enqueue(burst)
    }

    /// Moves one packet into the ring, or gives it back when it is full.
    ///
    /// # Errors
    /// The packet, when the ring is full.
    pub fn enqueue(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        let mut burst = Burst::new();
        burst.push(m)?;
        self.inner.enqueue(&mut burst);
        burst.pop().map_or(Ok(()), Err)
    }

    /// Packets in the ring.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.count()
    }

    /// Whether the ring is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RingConsumer {
    /// Moves up to the burst's free slots out of the ring; returns how many.
    #[inline]
    pub fn dequeue_burst(&mut self, burst: &mut Burst) -> usize {
        self.inner.dequeue(burst)
    }

    /// Packets in the ring.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.count()
    }

    /// Whether the ring is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
