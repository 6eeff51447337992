//! A Vec-backed [`PacketBuffer`](crate::PacketBuffer) shaped like a DPDK mbuf.

use crate::{
    Append, BufferError, ChecksumOffload, Headroom, Prepend, RxChecksum, Tailroom, TrimFromEnd,
    TrimFromStart,
};

/// A single-segment packet buffer in ordinary memory, laid out like a DPDK
/// mbuf data room: [`TestBuffer::CAPACITY`] bytes of which the first
/// [`TestBuffer::HEADROOM`] are headroom when it is created.
///
/// The whole room is pre-filled with a byte pattern, so code that forgets
/// to write a byte it prepended or appended produces visibly wrong output
/// instead of accidentally-correct zeros.
///
/// It is deliberately not `Clone`: like an mbuf, a packet has one owner.
/// Use [`TestBuffer::duplicate`] when a test needs a copy.
#[derive(Debug, PartialEq, Eq)]
pub struct TestBuffer {
    room: Box<[u8]>,
    start: usize,
    end: usize,
    offload: Offload,
}

/// A NIC's checksum offloads, as a test sets them up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Offload {
    /// What [`ChecksumOffload::rx_ipv4_checksum`] reports.
    rx: RxChecksum,
    /// Whether [`ChecksumOffload::offload_tx_ipv4_checksum`] accepts.
    tx_capable: bool,
    /// The header length it was last asked to checksum.
    tx_requested: Option<usize>,
}

impl TestBuffer {
    /// Bytes of data room, as a DPDK mbuf created with
    /// `RTE_MBUF_DEFAULT_BUF_SIZE` (2048 + 128).
    pub const CAPACITY: usize = 2176;
    /// Default headroom (`RTE_PKTMBUF_HEADROOM`).
    pub const HEADROOM: usize = 128;
    /// The filler byte of unwritten room.
    pub const FILL: u8 = 0xA5;

    /// An empty buffer with the default headroom.
    #[must_use]
    pub fn new() -> Self {
        Self::with_room(Self::CAPACITY, Self::HEADROOM)
    }

    /// An empty buffer of `capacity` bytes whose data starts at `headroom`
    /// (clamped to the capacity).
    #[must_use]
    pub fn with_room(capacity: usize, headroom: usize) -> Self {
        let headroom = headroom.min(capacity);
        Self {
            room: vec![Self::FILL; capacity].into_boxed_slice(),
            start: headroom,
            end: headroom,
            offload: Offload::default(),
        }
    }

    /// A buffer holding `data` after the default headroom.
    ///
    /// Data longer than the room after the headroom is truncated to fit,
    /// as a NIC truncates a frame to its mbuf.
    #[must_use]
    pub fn from_slice(data: &[u8]) -> Self {
        let mut buf = Self::new();
        let len = data.len().min(Self::CAPACITY - Self::HEADROOM);
        buf.room[buf.start..buf.start + len].copy_from_slice(&data[..len]);
        buf.end = buf.start + len;
        buf
    }

    /// A copy with the same layout (headroom, data, tailroom).
    #[must_use]
    pub fn duplicate(&self) -> Self {
        Self {
            room: self.room.clone(),
            start: self.start,
            end: self.end,
            offload: self.offload,
        }
    }

    /// Acts as a packet received by a NIC that checked the IPv4 header
    /// checksum and found it `verdict`.
    pub fn set_rx_ipv4_checksum(&mut self, verdict: RxChecksum) {
        self.offload.rx = verdict;
    }

    /// Acts as a packet bound for a port with the IPv4 header checksum
    /// transmit offload: [`ChecksumOffload::offload_tx_ipv4_checksum`]
    /// accepts and records the request.
    pub fn enable_tx_ipv4_checksum_offload(&mut self) {
        self.offload.tx_capable = true;
    }

    /// The header length the NIC was asked to checksum on transmit, if
    /// it was.
    #[must_use]
    pub fn tx_ipv4_checksum_requested(&self) -> Option<usize> {
        self.offload.tx_requested
    }

    /// Packet length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the packet holds no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Replaces the packet with `data`, keeping the default headroom.
    ///
    /// # Errors
    /// [`BufferError::NoTailroom`] when `data` does not fit.
    pub fn reset(&mut self, data: &[u8]) -> Result<(), BufferError> {
        let available = self.room.len().saturating_sub(Self::HEADROOM);
        if data.len() > available {
            return Err(BufferError::NoTailroom {
                wanted: data.len(),
                available,
            });
        }
        self.start = Self::HEADROOM.min(self.room.len());
        self.end = self.start + data.len();
        self.room[self.start..self.end].copy_from_slice(data);
        Ok(())
    }
}

impl Default for TestBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl AsRef<[u8]> for TestBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.room[self.start..self.end]
    }
}

impl AsMut<[u8]> for TestBuffer {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.room[self.start..self.end]
    }
}

impl Headroom for TestBuffer {
    fn headroom(&self) -> usize {
        self.start
    }
}

impl Tailroom for TestBuffer {
    fn tailroom(&self) -> usize {
        self.room.len() - self.end
    }
}

impl Prepend for TestBuffer {
    fn prepend(&mut self, len: usize) -> Result<&mut [u8], BufferError> {
        if len > self.start {
            return Err(BufferError::NoHeadroom {
                wanted: len,
                available: self.start,
            });
        }
        self.start -= len;
        Ok(&mut self.room[self.start..self.start + len])
    }
}

impl Append for TestBuffer {
    fn append(&mut self, len: usize) -> Result<&mut [u8], BufferError> {
        let available = self.room.len() - self.end;
        if len > available {
            return Err(BufferError::NoTailroom {
                wanted: len,
                available,
            });
        }
        let old_end = self.end;
        self.end += len;
        Ok(&mut self.room[old_end..self.end])
    }
}

impl TrimFromStart for TestBuffer {
    fn trim_from_start(&mut self, len: usize) -> Result<(), BufferError> {
        if len > self.len() {
            return Err(BufferError::TooShort {
                wanted: len,
                len: self.len(),
            });
        }
        self.start += len;
        Ok(())
    }
}

impl ChecksumOffload for TestBuffer {
    fn rx_ipv4_checksum(&self) -> RxChecksum {
        self.offload.rx
    }

    fn offload_tx_ipv4_checksum(&mut self, header_len: usize) -> bool {
        if self.offload.tx_capable {
            self.offload.tx_requested = Some(header_len);
        }
        self.offload.tx_capable
    }
}

impl TrimFromEnd for TestBuffer {
    fn trim_from_end(&mut self, len: usize) -> Result<(), BufferError> {
        if len > self.len() {
            return Err(BufferError::TooShort {
                wanted: len,
                len: self.len(),
            });
        }
        self.end -= len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_append_trim_round_trip() {
        let mut b = TestBuffer::from_slice(b"payload");
        assert_eq!(b.headroom(), TestBuffer::HEADROOM);
        let head = b.prepend(4).unwrap();
        assert_eq!(
            head,
            &[TestBuffer::FILL; 4],
            "prepended bytes are unwritten filler"
        );
        head.copy_from_slice(b"HDR:");
        b.append(3).unwrap().copy_from_slice(b"END");
        assert_eq!(b.as_ref(), b"HDR:payloadEND");
        assert_eq!(b.headroom(), TestBuffer::HEADROOM - 4);
        b.trim_from_start(4).unwrap();
        b.trim_from_end(3).unwrap();
        assert_eq!(b.as_ref(), b"payload");
    }

    #[test]
    fn out_of_room_is_an_error_and_changes_nothing() {
        let mut b = TestBuffer::with_room(16, 4);
        b.append(10).unwrap();
        assert_eq!(
            b.prepend(5),
            Err(BufferError::NoHeadroom {
                wanted: 5,
                available: 4
            })
        );
        assert_eq!(
            b.append(3),
            Err(BufferError::NoTailroom {
                wanted: 3,
                available: 2
            })
        );
        assert_eq!(
            b.trim_from_end(11),
            Err(BufferError::TooShort {
                wanted: 11,
                len: 10
            })
        );
        assert_eq!(b.len(), 10);
        assert_eq!(b.headroom(), 4);
    }
}
