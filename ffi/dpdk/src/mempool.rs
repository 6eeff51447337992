//! Packet-buffer pools.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::eal::Eal;
use crate::error::{Error, Result};
use crate::mbuf::Mbuf;

/// A pool of packet buffers (`rte_pktmbuf_pool_create`).
///
/// Cloning is cheap (an `Arc`). The pool is freed when the last clone is
/// dropped *and* no mbuf of it is still out; if mbufs are still out at that
/// moment the pool is deliberately leaked rather than freed under them.
#[derive(Debug, Clone)]
pub struct Mempool {
    inner: Arc<MempoolInner>,
}

#[derive(Debug)]
struct MempoolInner {
    raw: NonNull<dpdk_sys::rte_mempool>,
    name: String,
    _eal: Eal,
}

// SAFETY: an rte_mempool created with default flags is multi-producer /
// multi-consumer: any thread may get and put mbufs concurrently.
unsafe impl Send for MempoolInner {}
// SAFETY: as above; the only &self operations are thread-safe DPDK calls.
unsafe impl Sync for MempoolInner {}

impl Mempool {
    /// Default data room of an mbuf: 2048 bytes plus the 128-byte headroom.
    pub const DEFAULT_DATA_ROOM: u16 = 2176;

    /// Creates a pool of `count` mbufs with a per-lcore cache of `cache`
    /// and `data_room` bytes of data room (headroom included), on any
    /// NUMA socket.
    ///
    /// # Errors
    /// What `rte_pktmbuf_pool_create` reported (a taken name, no memory).
    pub fn new(eal: &Eal, name: &str, count: u32, cache: u32, data_room: u16) -> Result<Self> {
        Self::new_on(eal, name, count, cache, data_room, None)
    }

    /// [`new`](Self::new) with the pool's memory on NUMA socket `socket`
    /// (`None`: any), e.g. the socket of the workers that use the mbufs.
    ///
    /// # Errors
    /// What `rte_pktmbuf_pool_create` reported (a taken name, no memory on
    /// that socket).
    pub fn new_on(
        eal: &Eal,
        name: &str,
        count: u32,
        cache: u32,
        data_room: u16,
        socket: Option<u32>,
    ) -> Result<Self> {
        let socket = socket.map_or(dpdk_sys::SOCKET_ID_ANY, |s| {
            i32::try_from(s).unwrap_or(dpdk_sys::SOCKET_ID_ANY)
        });
        let cname = CString::new(name).map_err(|_| Error::NulInArgument {
            op: "rte_pktmbuf_pool_create",
        })?;
        // SAFETY: cname is a valid C string for the call; the EAL is
        // initialised (we hold an Eal).
        let raw = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(cname.as_ptr(), count, cache, 0, data_room, socket)
        };
        let raw = NonNull::new(raw).ok_or_else(|| Error::last("rte_pktmbuf_pool_create"))?;
        Ok(Self {
            inner: Arc::new(MempoolInner {
                raw,
                name: name.to_owned(),
                _eal: eal.clone(),
            }),
        })
    }

    /// The pool's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// One mbuf, reset and empty, or `None` when the pool is exhausted.
    #[inline]
    #[must_use]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool pointer is valid while self lives.
        let raw = unsafe { dpdk_sys::rte_pktmbuf_alloc_w(self.as_ptr()) };
        // SAFETY: a non-null result is a fresh mbuf we now own.
        NonNull::new(raw).map(|raw| unsafe { Mbuf::from_raw(raw) })
    }

    /// Mbufs free in the pool (including per-lcore caches).
    #[must_use]
    pub fn available(&self) -> u32 {
        // SAFETY: the pool pointer is valid while self lives.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.as_ptr()) }
    }

    /// Mbufs currently out of the pool (in queues, bursts or owned).
    #[must_use]
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool pointer is valid while self lives.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.as_ptr()) }
    }

    /// The raw pool, for a DPDK call that takes one (queue setup).
    #[must_use]
    pub fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.inner.raw.as_ptr()
    }
}

impl Drop for MempoolInner {
    fn drop(&mut self) {
        // SAFETY: the pointer is valid; counting is a read.
        let in_use = unsafe { dpdk_sys::rte_mempool_in_use_count(self.raw.as_ptr()) };
        if in_use == 0 {
            // SAFETY: no mbuf of the pool is out and no clone of the pool
            // is left, so nothing can reach its memory any more.
            unsafe { dpdk_sys::rte_mempool_free(self.raw.as_ptr()) };
        } else {
            // Freeing would leave `in_use` mbufs dangling: keep the memory
            // (and the EAL) alive instead.
            eprintln!(
                "dpdk: mempool {} dropped with {in_use} mbufs still out; leaking it",
                self.name
            );
            std::mem::forget(self._eal.clone());
        }
    }
}
