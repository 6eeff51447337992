//! Packet buffers, abstractly.
//!
//! Protocol code in `dataplane` (ESP encap/decap, the wire views) is generic
//! over [`PacketBuffer`], so the same code runs on a DPDK `rte_mbuf` (through
//! `dpdk::Mbuf`, which implements these traits with DPDK's own
//! `rte_pktmbuf_prepend/append/adj/trim`) and on [`TestBuffer`] in plain
//! `cargo test` and in-memory benchmarks.
//!
//! The model is DPDK's single-segment mbuf: one contiguous allocation with
//! *headroom* before the packet data and *tailroom* after it. Encapsulation
//! grows the packet into the headroom (outer headers) and the tailroom
//! (trailer, ICV) and never moves the payload.
//!
//! None of these operations allocates or panics: running out of room is an
//! error value the caller counts as a drop.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

mod test_buffer;

pub use test_buffer::TestBuffer;

/// A buffer operation asked for more room than there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BufferError {
    /// Not enough headroom to prepend `wanted` bytes (`available` left).
    #[error("not enough headroom: wanted {wanted} bytes, {available} available")]
    NoHeadroom {
        /// Bytes requested.
        wanted: usize,
        /// Headroom left.
        available: usize,
    },
    /// Not enough tailroom to append `wanted` bytes (`available` left).
    #[error("not enough tailroom: wanted {wanted} bytes, {available} available")]
    NoTailroom {
        /// Bytes requested.
        wanted: usize,
        /// Tailroom left.
        available: usize,
    },
    /// Cannot trim `wanted` bytes from a packet of `len` bytes.
    #[error("cannot trim {wanted} bytes from a {len}-byte packet")]
    TooShort {
        /// Bytes requested.
        wanted: usize,
        /// Packet length.
        len: usize,
    },
}

/// Free bytes in front of the packet data.
pub trait Headroom {
    /// Bytes that [`Prepend::prepend`] can still add.
    fn headroom(&self) -> usize;
}

/// Free bytes after the packet data.
pub trait Tailroom {
    /// Bytes that [`Append::append`] can still add.
    fn tailroom(&self) -> usize;
}

/// Grow the packet at the front (into the headroom).
pub trait Prepend {
    /// Extends the packet by `len` bytes at the front and returns them.
    ///
    /// The returned bytes hold whatever was in the headroom: the caller
    /// writes every one of them.
    ///
    /// # Errors
    /// [`BufferError::NoHeadroom`] when `len > headroom()`; the packet is
    /// unchanged.
    fn prepend(&mut self, len: usize) -> Result<&mut [u8], BufferError>;
}

/// Grow the packet at the back (into the tailroom).
pub trait Append {
    /// Extends the packet by `len` bytes at the end and returns them.
    ///
    /// # Errors
    /// [`BufferError::NoTailroom`] when `len > tailroom()`; the packet is
    /// unchanged.
    fn append(&mut self, len: usize) -> Result<&mut [u8], BufferError>;
}

/// Shrink the packet at the front.
pub trait TrimFromStart {
    /// Removes `len` bytes from the front (they become headroom).
    ///
    /// # Errors
    /// [`BufferError::TooShort`] when the packet is shorter than `len`; the
    /// packet is unchanged.
    fn trim_from_start(&mut self, len: usize) -> Result<(), BufferError>;
}

/// Shrink the packet at the back.
pub trait TrimFromEnd {
    /// Removes `len` bytes from the end (they become tailroom).
    ///
    /// # Errors
    /// [`BufferError::TooShort`] when the packet is shorter than `len`; the
    /// packet is unchanged.
    fn trim_from_end(&mut self, len: usize) -> Result<(), BufferError>;
}

/// What the NIC found when it checked the IPv4 header checksum of a
/// received packet (DPDK's `RTE_MBUF_F_RX_IP_CKSUM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RxChecksum {
    /// Not checked (no offload, or not an IPv4 packet): check in software.
    #[default]
    Unknown,
    /// The NIC verified it.
    Good,
    /// The NIC found it wrong.
    Bad,
}

/// Checksum work the NIC does for us, where the port offers it.
///
/// Buffers with no NIC behind them keep the defaults: nothing checked on
/// receive, nothing offloaded on transmit, so the protocol code does both
/// in software.
pub trait ChecksumOffload {
    /// The NIC's verdict on this received packet's (outer) IPv4 header
    /// checksum.
    fn rx_ipv4_checksum(&self) -> RxChecksum {
        RxChecksum::Unknown
    }

    /// Leaves the checksum of the IPv4 header that starts the packet data
    /// (`header_len` bytes) to the NIC when the packet is sent; the caller
    /// writes 0 into the checksum field. Returns false (and changes
    /// nothing) when the buffer cannot: the caller then computes it.
    ///
    /// Call it only for a packet that will leave through a port with the
    /// transmit offload enabled, and after the last change to the header.
    fn offload_tx_ipv4_checksum(&mut self, header_len: usize) -> bool {
        let _ = header_len;
        false
    }
}

/// Everything the ESP pipeline needs from a packet buffer.
///
/// `as_ref()`/`as_mut()` are the packet bytes (from the first byte of data
/// to the last), never the head- or tailroom.
pub trait PacketBuffer:
    AsRef<[u8]>
    + AsMut<[u8]>
    + Headroom
    + Tailroom
    + Prepend
    + Append
    + TrimFromStart
    + TrimFromEnd
    + ChecksumOffload
{
}

impl<T> PacketBuffer for T where
    T: AsRef<[u8]>
        + AsMut<[u8]>
        + Headroom
        + Tailroom
        + Prepend
        + Append
        + TrimFromStart
        + TrimFromEnd
        + ChecksumOffload
{
}
