//! OpenVPN packet codec: the opcode/key-id byte, control packets (session
//! ids, ack arrays, message packet-ids), the data-packet header with its
//! peer-id, and the 2-byte length framing of OpenVPN over TCP.
//!
//! Layouts (OpenVPN's `doc/doxygen/doc_protocol_overview.h`, read with
//! `--tls-crypt` in mind; numbers are network byte order):
//!
//! ```text
//! any packet     [opcode:5 | key_id:3] ...
//! control, tls-crypt
//!                [op] [session_id 8] [packet_id 4] [net_time 4]   header, authenticated
//!                [tag 32]                                          HMAC-SHA256, first 16 bytes = CTR IV
//!                --- AES-256-CTR encrypted from here (see tls_crypt.rs) ---
//!                [n_acks 1] [ack id 4]*n [remote session_id 8 if n > 0]
//!                [message packet_id 4 unless P_ACK_V1] [payload]
//! P_DATA_V2      [op] [peer_id 3] [packet_id 4] [tag 16] [AES-GCM ciphertext]
//! P_DATA_V1      [op] [packet_id 4] [tag 16] [AES-GCM ciphertext]
//! TCP            [length 2] [packet]   per packet
//! ```
//!
//! # No-panic contract
//!
//! Every parser here reads untrusted bytes through the bounded [`Reader`],
//! which checks each length against what remains before using it. Any
//! input of any length yields a value or a [`WireError`]; never a panic,
//! an out-of-bounds index or an allocation larger than the input. Opcodes
//! we do not know parse as [`Opcode::Unknown`]; the caller decides.

use arrayvec::ArrayVec;

/// Length of a session id (a random 64-bit value per side of a TLS session).
pub const SESSION_ID_LEN: usize = 8;
/// The most acks one control packet may carry: OpenVPN's `reliable_ack_read`
/// rejects larger arrays (`RELIABLE_ACK_SIZE`).
pub const MAX_ACKS: usize = 8;
/// Acks we put in one packet: OpenVPN's own senders use 4
/// (`CONTROL_SEND_ACK_MAX`).
pub const SEND_ACKS: usize = 4;
/// The P_DATA_V2 header: opcode byte and 24-bit peer-id.
pub const DATA_V2_HEADER_LEN: usize = 4;
/// Largest peer-id: 24 bits, `0xFFFFFF` means "none" in OpenVPN.
pub const MAX_PEER_ID: u32 = 0x00FF_FFFE;
/// Largest packet accepted from a TCP stream (OpenVPN's own limit is the
/// 16-bit length; we bound buffers far below it).
pub const MAX_TCP_PACKET: usize = 2048;

/// Why bytes are not a well-formed OpenVPN packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the named field needs.
    #[error("truncated OpenVPN packet: {0}")]
    Truncated(&'static str),
    /// An ack array longer than [`MAX_ACKS`].
    #[error("ack array of {0} entries (at most {MAX_ACKS})")]
    TooManyAcks(u8),
    /// An opcode that does not carry a control packet.
    #[error("opcode {0} is not a control opcode")]
    NotControl(u8),
    /// A TCP length prefix of zero or above [`MAX_TCP_PACKET`].
    #[error("TCP packet length {0} out of range")]
    TcpLength(u16),
}

/// A bounded reader over untrusted bytes: every read names its field.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `buf` from its start.
    #[must_use]
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    /// Bytes not yet read.
    #[must_use]
    pub fn left(&self) -> usize {
        self.buf.len()
    }
    /// Takes `n` bytes.
    ///
    /// # Errors
    /// [`WireError::Truncated`] naming `what`.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    /// Takes exactly `N` bytes as an array.
    ///
    /// # Errors
    /// [`WireError::Truncated`] naming `what`.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    /// Takes the rest.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
    /// Reads a `u8`.
    ///
    /// # Errors
    /// [`WireError::Truncated`].
    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }
    /// Reads a big-endian `u16`.
    ///
    /// # Errors
    /// [`WireError::Truncated`].
    pub fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    /// Reads a big-endian `u32`.
    ///
    /// # Errors
    /// [`WireError::Truncated`].
    pub fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
}

/// Opcodes (the high 5 bits of the first byte), OpenVPN's `ssl_pkt.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// P_CONTROL_HARD_RESET_CLIENT_V1 (key method 1, gone since 2.5).
    HardResetClientV1,
    /// P_CONTROL_HARD_RESET_SERVER_V1.
    HardResetServerV1,
    /// P_CONTROL_SOFT_RESET_V1: renegotiation under a new key id.
    SoftResetV1,
    /// P_CONTROL_V1: TLS ciphertext.
    ControlV1,
    /// P_ACK_V1: acknowledgements only.
    AckV1,
    /// P_DATA_V1: data packet without peer-id.
    DataV1,
    /// P_CONTROL_HARD_RESET_CLIENT_V2: a client starts a session.
    HardResetClientV2,
    /// P_CONTROL_HARD_RESET_SERVER_V2: the server's answer.
    HardResetServerV2,
    /// P_DATA_V2: data packet with a 24-bit peer-id.
    DataV2,
    /// P_CONTROL_HARD_RESET_CLIENT_V3: a client starts a session (tls-crypt-v2).
    HardResetClientV3,
    /// P_CONTROL_WKC_V1: a control packet carrying a tls-crypt-v2 client key.
    ControlWkcV1,
    /// A value this codec does not name.
    Unknown(u8),
}

impl From<u8> for Opcode {
    fn from(v: u8) -> Self {
        match v {
            1 => Self::HardResetClientV1,
            2 => Self::HardResetServerV1,
            3 => Self::SoftResetV1,
            4 => Self::ControlV1,
            5 => Self::AckV1,
            6 => Self::DataV1,
            7 => Self::HardResetClientV2,
            8 => Self::HardResetServerV2,
            9 => Self::DataV2,
            10 => Self::HardResetClientV3,
            11 => Self::ControlWkcV1,
            other => Self::Unknown(other),
        }
    }
}

impl From<Opcode> for u8 {
    fn from(v: Opcode) -> Self {
        match v {
            Opcode::HardResetClientV1 => 1,
            Opcode::HardResetServerV1 => 2,
            Opcode::SoftResetV1 => 3,
            Opcode::ControlV1 => 4,
            Opcode::AckV1 => 5,
            Opcode::DataV1 => 6,
            Opcode::HardResetClientV2 => 7,
            Opcode::HardResetServerV2 => 8,
            Opcode::DataV2 => 9,
            Opcode::HardResetClientV3 => 10,
            Opcode::ControlWkcV1 => 11,
            Opcode::Unknown(v) => v,
        }
    }
}

impl Opcode {
    /// Whether packets with this opcode go through the control channel
    /// (tls-crypt wrapped, with session ids).
    #[must_use]
    pub fn is_control(self) -> bool {
        matches!(
            self,
            Self::HardResetClientV1
                | Self::HardResetServerV1
                | Self::SoftResetV1
                | Self::ControlV1
                | Self::AckV1
                | Self::HardResetClientV2
                | Self::HardResetServerV2
                | Self::HardResetClientV3
                | Self::ControlWkcV1
        )
    }
    /// Whether this is a data-channel opcode.
    #[must_use]
    pub fn is_data(self) -> bool {
        matches!(self, Self::DataV1 | Self::DataV2)
    }
}

/// Splits the first byte into opcode and key id.
#[must_use]
pub fn split_first_byte(b: u8) -> (Opcode, u8) {
    (Opcode::from(b >> 3), b & 0x07)
}

/// Joins opcode and key id (only the low 3 bits of `key_id` are used).
#[must_use]
pub fn first_byte(op: Opcode, key_id: u8) -> u8 {
    (u8::from(op) << 3) | (key_id & 0x07)
}

/// A session id: one side's random 64-bit name for a TLS session.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SessionId(pub [u8; SESSION_ID_LEN]);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({:016x})", u64::from_be_bytes(self.0))
    }
}

/// The authenticated, cleartext header of a tls-crypt control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlHeader {
    /// Opcode.
    pub opcode: Opcode,
    /// Key id (0..=7).
    pub key_id: u8,
    /// The sender's session id.
    pub session_id: SessionId,
    /// tls-crypt replay counter.
    pub packet_id: u32,
    /// tls-crypt replay epoch (seconds, fixed per sender in practice).
    pub net_time: u32,
}

/// Length of [`ControlHeader`] on the wire.
pub const CONTROL_HEADER_LEN: usize = 1 + SESSION_ID_LEN + 4 + 4;

impl ControlHeader {
    /// Parses the header from the start of a packet.
    ///
    /// # Errors
    /// [`WireError::Truncated`]; [`WireError::NotControl`] for a data or
    /// unknown opcode.
    pub fn parse(packet: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(packet);
        let (opcode, key_id) = split_first_byte(r.u8("opcode")?);
        if !opcode.is_control() {
            return Err(WireError::NotControl(u8::from(opcode)));
        }
        Ok(Self {
            opcode,
            key_id,
            session_id: SessionId(r.array("session id")?),
            packet_id: r.u32("packet id")?,
            net_time: r.u32("net time")?,
        })
    }

    /// The header's bytes.
    #[must_use]
    pub fn emit(&self) -> [u8; CONTROL_HEADER_LEN] {
        let mut b = [0u8; CONTROL_HEADER_LEN];
        b[0] = first_byte(self.opcode, self.key_id);
        b[1..9].copy_from_slice(&self.session_id.0);
        b[9..13].copy_from_slice(&self.packet_id.to_be_bytes());
        b[13..17].copy_from_slice(&self.net_time.to_be_bytes());
        b
    }
}

/// The encrypted part of a control packet, decrypted: acks, the message's
/// reliability packet-id and its payload (TLS records).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ControlBody<'a> {
    /// Message packet-ids the sender acknowledges.
    pub acks: ArrayVec<u32, MAX_ACKS>,
    /// Our session id as the sender knows it (present iff `acks` is not empty).
    pub remote_session_id: Option<SessionId>,
    /// This message's reliability packet-id (`None` for P_ACK_V1).
    pub message_id: Option<u32>,
    /// The message's payload.
    pub payload: &'a [u8],
}

impl<'a> ControlBody<'a> {
    /// Parses a decrypted body; `opcode` says whether a message id follows.
    ///
    /// # Errors
    /// [`WireError::Truncated`], [`WireError::TooManyAcks`].
    pub fn parse(opcode: Opcode, plain: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(plain);
        let n = r.u8("ack count")?;
        if usize::from(n) > MAX_ACKS {
            return Err(WireError::TooManyAcks(n));
        }
        let mut acks = ArrayVec::new();
        for _ in 0..n {
            acks.push(r.u32("ack id")?);
        }
        let remote_session_id = if n > 0 {
            Some(SessionId(r.array("remote session id")?))
        } else {
            None
        };
        let message_id = if opcode == Opcode::AckV1 {
            None
        } else {
            Some(r.u32("message packet id")?)
        };
        Ok(Self {
            acks,
            remote_session_id,
            message_id,
            payload: r.rest(),
        })
    }

    /// Bytes [`Self::emit`] writes.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        1 + 4 * self.acks.len()
            + if self.acks.is_empty() {
                0
            } else {
                SESSION_ID_LEN
            }
            + if self.message_id.is_some() { 4 } else { 0 }
            + self.payload.len()
    }

    /// Appends the body to `out`. A missing `remote_session_id` with acks
    /// present is written as zeros (callers always set it).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.reserve(self.buffer_len());
        // At most MAX_ACKS (8) entries: the cast cannot truncate.
        out.push(u8::try_from(self.acks.len()).unwrap_or(u8::MAX));
        for a in &self.acks {
            out.extend_from_slice(&a.to_be_bytes());
        }
        if !self.acks.is_empty() {
            out.extend_from_slice(&self.remote_session_id.unwrap_or_default().0);
        }
        if let Some(id) = self.message_id {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out.extend_from_slice(self.payload);
    }
}

/// The cleartext header of a data packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// [`Opcode::DataV1`] or [`Opcode::DataV2`].
    pub opcode: Opcode,
    /// Key id of the data channel key.
    pub key_id: u8,
    /// The peer-id (P_DATA_V2 only).
    pub peer_id: Option<u32>,
}

impl DataHeader {
    /// Parses the header of a data packet.
    ///
    /// # Errors
    /// [`WireError::Truncated`]; [`WireError::NotControl`] is never
    /// returned; a non-data opcode yields `Ok(None)`.
    pub fn parse(packet: &[u8]) -> Result<Option<Self>, WireError> {
        let mut r = Reader::new(packet);
        let (opcode, key_id) = split_first_byte(r.u8("opcode")?);
        match opcode {
            Opcode::DataV1 => Ok(Some(Self {
                opcode,
                key_id,
                peer_id: None,
            })),
            Opcode::DataV2 => {
                let p = r.array::<3>("peer id")?;
                Ok(Some(Self {
                    opcode,
                    key_id,
                    peer_id: Some(u32::from_be_bytes([0, p[0], p[1], p[2]])),
                }))
            }
            _ => Ok(None),
        }
    }

    /// Header length on the wire.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        if self.opcode == Opcode::DataV2 {
            DATA_V2_HEADER_LEN
        } else {
            1
        }
    }
}

/// Splits a TCP byte stream into OpenVPN packets (each preceded by a
/// 16-bit length). Bounded: holds at most one partial packet.
#[derive(Debug, Default)]
pub struct TcpDeframer {
    buf: Vec<u8>,
}

impl TcpDeframer {
    /// An empty deframer.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds stream bytes; calls `each` for every whole packet.
    ///
    /// # Errors
    /// [`WireError::TcpLength`] for a zero or oversized length: the stream
    /// cannot be resynchronised and must be closed.
    pub fn feed(&mut self, mut bytes: &[u8], mut each: impl FnMut(&[u8])) -> Result<(), WireError> {
        loop {
            // Complete the buffered packet first, else parse straight from `bytes`.
            if self.buf.len() < 2 {
                let need = 2 - self.buf.len();
                let n = need.min(bytes.len());
                self.buf.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                if self.buf.len() < 2 {
                    return Ok(());
                }
            }
            let len = u16::from_be_bytes([self.buf[0], self.buf[1]]);
            if len == 0 || usize::from(len) > MAX_TCP_PACKET {
                return Err(WireError::TcpLength(len));
            }
            let want = 2 + usize::from(len);
            let n = (want - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.buf.len() < want {
                return Ok(());
            }
            each(&self.buf[2..]);
            self.buf.clear();
        }
    }
}

/// Prefixes `packet` with its 16-bit length for a TCP stream.
///
/// # Errors
/// [`WireError::TcpLength`] when the packet is empty or longer than
/// [`MAX_TCP_PACKET`].
pub fn tcp_frame(packet: &[u8]) -> Result<Vec<u8>, WireError> {
    let len = u16::try_from(packet.len()).unwrap_or(u16::MAX);
    if packet.is_empty() || packet.len() > MAX_TCP_PACKET {
        return Err(WireError::TcpLength(len));
    }
    let mut v = Vec::with_capacity(2 + packet.len());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(packet);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_byte_round_trips_every_value() {
        for b in 0..=u8::MAX {
            let (op, key) = split_first_byte(b);
            assert_eq!(first_byte(op, key), b);
        }
        assert_eq!(split_first_byte(0x38), (Opcode::HardResetClientV2, 0));
        assert_eq!(split_first_byte(0x40), (Opcode::HardResetServerV2, 0));
        assert_eq!(split_first_byte(0x4a), (Opcode::DataV2, 2));
    }

    #[test]
    fn control_header_fixture() {
        let bytes = [
            0x38, 1, 2, 3, 4, 5, 6, 7, 8, 0x0f, 0, 0, 1, 0x65, 0x43, 0x21, 0x10,
        ];
        let h = ControlHeader::parse(&bytes).unwrap();
        assert_eq!(h.opcode, Opcode::HardResetClientV2);
        assert_eq!(h.key_id, 0);
        assert_eq!(h.session_id, SessionId([1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(h.packet_id, 0x0f00_0001);
        assert_eq!(h.net_time, 0x6543_2110);
        assert_eq!(h.emit(), bytes);
        for n in 0..bytes.len() {
            assert!(matches!(
                ControlHeader::parse(&bytes[..n]),
                Err(WireError::Truncated(_))
            ));
        }
        let mut data = bytes;
        data[0] = 0x48;
        assert_eq!(ControlHeader::parse(&data), Err(WireError::NotControl(9)));
    }

    #[test]
    fn control_body_fixture_with_acks() {
        let bytes = [
            2, 0, 0, 0, 0, 0, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9, 0, 0, 0, 2, 0x16, 0x03,
        ];
        let b = ControlBody::parse(Opcode::ControlV1, &bytes).unwrap();
        assert_eq!(b.acks.as_slice(), &[0, 1]);
        assert_eq!(b.remote_session_id, Some(SessionId([9; 8])));
        assert_eq!(b.message_id, Some(2));
        assert_eq!(b.payload, &[0x16, 0x03]);
        assert_eq!(b.buffer_len(), bytes.len());
        let mut out = vec![0xAA; 3];
        b.emit(&mut out);
        assert_eq!(&out[3..], &bytes);
        // An ack packet has no message id.
        let ack = ControlBody::parse(Opcode::AckV1, &bytes[..17]).unwrap();
        assert_eq!(ack.message_id, None);
        assert!(ack.payload.is_empty());
        for n in 0..21 {
            assert!(ControlBody::parse(Opcode::ControlV1, &bytes[..n]).is_err());
        }
        assert_eq!(
            ControlBody::parse(Opcode::ControlV1, &[9]),
            Err(WireError::TooManyAcks(9))
        );
    }

    #[test]
    fn data_header_fixture() {
        let h = DataHeader::parse(&[0x48, 0x00, 0x01, 0x02, 0xff])
            .unwrap()
            .unwrap();
        assert_eq!(h.opcode, Opcode::DataV2);
        assert_eq!(h.peer_id, Some(0x0102));
        assert_eq!(h.buffer_len(), 4);
        assert_eq!(
            DataHeader::parse(&[0x48, 0]),
            Err(WireError::Truncated("peer id"))
        );
        let v1 = DataHeader::parse(&[0x31]).unwrap().unwrap();
        assert_eq!(
            (v1.opcode, v1.key_id, v1.peer_id),
            (Opcode::DataV1, 1, None)
        );
        assert_eq!(DataHeader::parse(&[0x20]).unwrap(), None);
        assert!(DataHeader::parse(&[]).is_err());
    }

    #[test]
    fn tcp_framing_splits_across_reads() {
        let a = tcp_frame(&[1, 2, 3]).unwrap();
        let b = tcp_frame(&[4]).unwrap();
        let stream: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        for cut in 0..=stream.len() {
            let mut d = TcpDeframer::new();
            let mut got = Vec::new();
            d.feed(&stream[..cut], |p| got.push(p.to_vec())).unwrap();
            d.feed(&stream[cut..], |p| got.push(p.to_vec())).unwrap();
            assert_eq!(got, vec![vec![1, 2, 3], vec![4]], "cut at {cut}");
        }
        let mut d = TcpDeframer::new();
        assert_eq!(d.feed(&[0, 0], |_| ()), Err(WireError::TcpLength(0)));
        assert_eq!(
            TcpDeframer::new().feed(&[0xff, 0xff], |_| ()),
            Err(WireError::TcpLength(0xffff))
        );
        assert!(tcp_frame(&[]).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ControlHeader::parse(&bytes);
            let _ = DataHeader::parse(&bytes);
            for op in [Opcode::ControlV1, Opcode::AckV1] {
                if let Ok(b) = ControlBody::parse(op, &bytes) {
                    let mut out = Vec::new();
                    b.emit(&mut out);
                    prop_assert_eq!(ControlBody::parse(op, &out).unwrap(), b);
                }
            }
            let _ = TcpDeframer::new().feed(&bytes, |_| ());
        }
    }
}
