//! An owned packet buffer (`rte_mbuf`).

use std::ptr::NonNull;

use netbuf::{
    Append, BufferError, ChecksumOffload, Headroom, Prepend, RxChecksum, Tailroom, TrimFromEnd,
    TrimFromStart,
};

/// One packet in an `rte_mbuf`, owned: dropping it frees it to its pool.
///
/// `#[repr(transparent)]` over the mbuf pointer, so a `[Mbuf]` has the
/// layout of the `struct rte_mbuf **` arrays DPDK's burst calls take.
/// `Send` (a packet may move between lcores through a ring) but not `Sync`.
///
/// All data access goes through DPDK's own helpers (`rte_pktmbuf_mtod`,
/// `_prepend`, `_append`, `_adj`, `_trim`); the data is the first segment's
/// (packets from our pools are single-segment; [`Mbuf::linearize`] makes
/// a chained packet so).
#[derive(Debug)]
#[repr(transparent)]
pub struct Mbuf {
    raw: NonNull<dpdk_sys::rte_mbuf>,
}

// SAFETY: an mbuf is owned by exactly one Mbuf value; moving that value to
// another thread moves the ownership, and mempool put/get is thread-safe.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `raw` must be a valid mbuf that nothing else owns or frees.
    #[inline]
    #[must_use]
    pub unsafe fn from_raw(raw: NonNull<dpdk_sys::rte_mbuf>) -> Self {
        Self { raw }
    }

    /// Gives up ownership: the caller (usually DPDK) must free the mbuf.
    #[inline]
    #[must_use]
    pub fn into_raw(self) -> NonNull<dpdk_sys::rte_mbuf> {
        let raw = self.raw;
        std::mem::forget(self);
        raw
    }

    /// The raw pointer, still owned by `self`.
    #[inline]
    #[must_use]
    pub fn as_ptr(&self) -> *mut dpdk_sys::rte_mbuf {
        self.raw.as_ptr()
    }

    /// Bytes of data in the first segment.
    #[inline]
    #[must_use]
    pub fn data_len(&self) -> usize {
        // SAFETY: self owns a valid mbuf.
        usize::from(unsafe { dpdk_sys::rte_pktmbuf_data_len_w(self.as_ptr()) })
    }

    /// Bytes of data in the whole packet (all segments).
    #[inline]
    #[must_use]
    pub fn pkt_len(&self) -> usize {
        // SAFETY: self owns a valid mbuf.
        unsafe { dpdk_sys::rte_pktmbuf_pkt_len_w(self.as_ptr()) as usize }
    }

    /// Whether the packet is one segment.
    #[inline]
    #[must_use]
    pub fn is_contiguous(&self) -> bool {
        // SAFETY: self owns a valid mbuf.
        unsafe { dpdk_sys::rte_pktmbuf_is_contiguous_w(self.as_ptr()) != 0 }
    }

    /// Copies a chained packet into one segment.
    ///
    /// # Errors
    /// [`BufferError::NoTailroom`] when the packet does not fit the first
    /// segment's room.
    pub fn linearize(&mut self) -> Result<(), BufferError> {
        // SAFETY: self owns a valid mbuf.
        if unsafe { dpdk_sys::rte_pktmbuf_linearize_w(self.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(BufferError::NoTailroom {
                wanted: self.pkt_len(),
                available: self.data_len() + self.tailroom(),
            })
        }
    }

    /// The port the packet was received on.
    #[inline]
    #[must_use]
    pub fn port(&self) -> u16 {
        // SAFETY: self owns a valid mbuf.
        unsafe { dpdk_sys::rte_mbuf_port_w(self.as_ptr()) }
    }

    /// The NIC's RSS hash, or 0 when the driver did not provide one.
    #[inline]
    #[must_use]
    pub fn rss_hash(&self) -> u32 {
        // SAFETY: self owns a valid mbuf.
        unsafe { dpdk_sys::rte_mbuf_rss_hash_w(self.as_ptr()) }
    }

    /// Replaces the packet with `data` (headroom reset to the default).
    ///
    /// # Errors
    /// [`BufferError::NoTailroom`] when `data` does not fit.
    pub fn set_data(&mut self, data: &[u8]) -> Result<(), BufferError> {
        let len = self.data_len();
        self.trim_from_end(len)?;
        let room = self.append(data.len())?;
        room.copy_from_slice(data);
        Ok(())
    }
}

impl ChecksumOffload for Mbuf {
    #[inline]
    fn rx_ipv4_checksum(&self) -> RxChecksum {
        // SAFETY: self owns a valid mbuf.
        match unsafe { dpdk_sys::rte_mbuf_rx_ip_cksum_w(self.as_ptr()) } {
            1 => RxChecksum::Good,
            2 => RxChecksum::Bad,
            _ => RxChecksum::Unknown,
        }
    }

    /// Sets `RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM` with an
    /// Ethernet header of [`ETHERNET_HEADER_LEN`] bytes in front (the
    /// worker prepends it after encapsulation). Only for a packet that
    /// leaves through a port configured with the offload
    /// ([`crate::Port::offloads`]).
    #[inline]
    fn offload_tx_ipv4_checksum(&mut self, header_len: usize) -> bool {
        let Ok(l3) = u16::try_from(header_len) else {
            return false;
        };
        // SAFETY: self owns a valid mbuf; only its offload metadata is
        // written.
        unsafe { dpdk_sys::rte_mbuf_tx_ipv4_cksum_w(self.as_ptr(), ETHERNET_HEADER_LEN, l3) };
        true
    }
}

impl Mbuf {
    /// Whether the NIC was asked to fill the IPv4 header checksum of
    /// this packet ([`ChecksumOffload::offload_tx_ipv4_checksum`]).
    #[must_use]
    pub fn tx_ipv4_checksum_requested(&self) -> bool {
        // SAFETY: self owns a valid mbuf.
        unsafe { dpdk_sys::rte_mbuf_tx_ipv4_cksum_requested_w(self.as_ptr()) != 0 }
    }
}

/// The link-layer header in front of the IP header of every packet the
/// workers send: Ethernet without VLAN tags.
pub(crate) const ETHERNET_HEADER_LEN: u16 = 14;

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: self owns the mbuf and is dropped once.
        unsafe { dpdk_sys::rte_pktmbuf_free_w(self.as_ptr()) }
    }
}

impl AsRef<[u8]> for Mbuf {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        // SAFETY: mtod points at data_len initialised bytes of the first
        // segment, borrowed for as long as &self.
        unsafe {
            std::slice::from_raw_parts(
                dpdk_sys::rte_pktmbuf_mtod_w(self.as_ptr()).cast::<u8>(),
                self.data_len(),
            )
        }
    }
}

impl AsMut<[u8]> for Mbuf {
    #[inline]
    fn as_mut(&mut self) -> &mut [u8] {
        let len = self.data_len();
        // SAFETY: as in as_ref, and &mut self makes the borrow exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(
                dpdk_sys::rte_pktmbuf_mtod_w(self.as_ptr()).cast::<u8>(),
                len,
            )
        }
    }
}

impl Headroom for Mbuf {
    #[inline]
    fn headroom(&self) -> usize {
        // SAFETY: self owns a valid mbuf.
        usize::from(unsafe { dpdk_sys::rte_pktmbuf_headroom_w(self.as_ptr()) })
    }
}

impl Tailroom for Mbuf {
    #[inline]
    fn tailroom(&self) -> usize {
        // SAFETY: self owns a valid mbuf.
        usize::from(unsafe { dpdk_sys::rte_pktmbuf_tailroom_w(self.as_ptr()) })
    }
}

impl Prepend for Mbuf {
    #[inline]
    fn prepend(&mut self, len: usize) -> Result<&mut [u8], BufferError> {
        let available = self.headroom();
        let fail = BufferError::NoHeadroom {
            wanted: len,
            available,
        };
        let len16 = u16::try_from(len).map_err(|_| fail)?;
        // SAFETY: self owns a valid mbuf; prepend checks the headroom.
        let p = unsafe { dpdk_sys::rte_pktmbuf_prepend_w(self.as_ptr(), len16) };
        if p.is_null() {
            return Err(fail);
        }
        // SAFETY: DPDK returned the start of `len` bytes now part of the
        // packet data, exclusively ours through &mut self.
        Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) })
    }
}

impl Append for Mbuf {
    #[inline]
    fn append(&mut self, len: usize) -> Result<&mut [u8], BufferError> {
        let available = self.tailroom();
        let fail = BufferError::NoTailroom {
            wanted: len,
            available,
        };
        let len16 = u16::try_from(len).map_err(|_| fail)?;
        // SAFETY: self owns a valid mbuf; append checks the tailroom.
        let p = unsafe { dpdk_sys::rte_pktmbuf_append_w(self.as_ptr(), len16) };
        if p.is_null() {
            return Err(fail);
        }
        // SAFETY: DPDK returned the start of the `len` appended bytes,
        // exclusively ours through &mut self.
        Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) })
    }
}

impl TrimFromStart for Mbuf {
    #[inline]
    fn trim_from_start(&mut self, len: usize) -> Result<(), BufferError> {
        let fail = BufferError::TooShort {
            wanted: len,
            len: self.data_len(),
        };
        let len16 = u16::try_from(len).map_err(|_| fail)?;
        // SAFETY: self owns a valid mbuf; adj checks the length.
        if unsafe { dpdk_sys::rte_pktmbuf_adj_w(self.as_ptr(), len16) }.is_null() {
            return Err(fail);
        }
        Ok(())
    }
}

impl TrimFromEnd for Mbuf {
    #[inline]
    fn trim_from_end(&mut self, len: usize) -> Result<(), BufferError> {
        let fail = BufferError::TooShort {
            wanted: len,
            len: self.data_len(),
        };
        let len16 = u16::try_from(len).map_err(|_| fail)?;
        // SAFETY: self owns a valid mbuf; trim checks the length.
        if unsafe { dpdk_sys::rte_pktmbuf_trim_w(self.as_ptr(), len16) } != 0 {
            return Err(fail);
        }
        Ok(())
    }
}
