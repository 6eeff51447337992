//! The OpenVPN data channel ("Client VPN") for the workers: AES-GCM
//! `P_DATA_V2` packets keyed from the control channel's TLS session by
//! TLS-EKM, a packet-id replay window, and encap/decap in place on a
//! [`netbuf::PacketBuffer`].
//!
//! Layer: the per-packet half of the OpenVPN 2.6–compatible server whose
//! control channel lives in `control::openvpn` (which re-exports this
//! module as `control::openvpn::data`, so there is one implementation).
//! Sans-IO; nothing here reads a clock, allocates or locks.
//!
//! Guarantees on the per-packet path ([`DataChannel::seal_in_place`],
//! [`DataChannel::open_in_place`], [`encap`], [`decap`]): no allocation,
//! no syscall, no lock, no panic on any input. Every failure is a
//! [`DataDrop`] the caller counts; a failed open changes nothing (the
//! replay window moves only after the tag verified). Encap never copies
//! the payload: the 24 bytes of header, packet id and tag go into the
//! headroom and the plaintext is encrypted where it lies.
//!
//! Wire format (OpenVPN 2.6 AEAD, tag before the ciphertext):
//!
//! ```text
//! P_DATA_V2  [op|key_id 1][peer_id 3][packet_id 4][tag 16][ciphertext]
//!            AAD = the first 8 bytes (header and packet_id)
//! P_DATA_V1  [op|key_id 1][packet_id 4][tag 16][ciphertext]
//!            AAD = packet_id
//! nonce      = packet_id (4 bytes) || implicit IV (8 bytes)
//! ```
//!
//! Keys: OpenVPN 2.6 with `key-derivation tls-ekm` exports 256 bytes with
//! the TLS exporter (RFC 5705 / RFC 8446 § 7.5), label
//! `EXPORTER-OpenVPN-datakeys`, no context. They are two key records of
//! 64 cipher bytes and 64 "HMAC" bytes; the client encrypts with record
//! 0, the server with record 1. AES uses the first 16 or 32 cipher bytes,
//! the implicit IV the first 8 HMAC bytes.
//!
//! Packet ids start at 1 and never wrap: at `u32::MAX` sealing stops
//! ([`DataDrop::PacketIdExhausted`]) and the session must renegotiate.
//! The receive side keeps a sliding bitmap window ([`ReplayWindow`]): a
//! cheap check before decryption, the update only after the tag verified
//! (the RFC 4303 Appendix A discipline the ESP path follows too).
//!
//! Protocol sources read (never copied): OpenVPN's
//! `doc/doxygen/doc_protocol_overview.h`, `ssl_pkt.h`, `crypto.c`
//! (AEAD layout), `ssl.c` (key directions, EKM label).

mod buffer;
mod channel;
mod replay;
#[cfg(test)]
mod tests;

pub use buffer::{decap, encap};
pub use channel::{DataChannel, DataKeys};
pub use replay::ReplayWindow;

/// The TLS exporter label OpenVPN's TLS-EKM key derivation uses.
pub const EKM_LABEL: &[u8] = b"EXPORTER-OpenVPN-datakeys";
/// Bytes exported: two key records of 128 bytes.
pub const EKM_LEN: usize = 256;
/// The opcode of `P_DATA_V1` (high 5 bits of the first byte, `ssl_pkt.h`).
pub const OP_DATA_V1: u8 = 6;
/// The opcode of `P_DATA_V2`.
pub const OP_DATA_V2: u8 = 9;
/// `P_DATA_V2`'s opcode/key-id byte and 24-bit peer-id.
pub const DATA_V2_HEADER_LEN: usize = 4;
/// The packet-id field.
pub const PACKET_ID_LEN: usize = 4;
/// The AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes in front of the plaintext in a P_DATA_V2 packet.
pub const DATA_V2_OVERHEAD: usize = DATA_V2_HEADER_LEN + PACKET_ID_LEN + TAG_LEN;
/// Replay window width in packets (OpenVPN's default `--replay-window 64`).
pub const REPLAY_WINDOW: u32 = 64;
/// The largest peer-id: OpenVPN reserves `0xFFFFFF` for "no peer-id".
pub const MAX_PEER_ID: u32 = 0x00FF_FFFE;

/// The keepalive payload (OpenVPN's `ping_string`): never a tunnel packet.
pub const PING: [u8; 16] = [
    0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7, 0x48,
];
/// The OCC message prefix (OpenVPN's `occ_magic`).
pub const OCC_MAGIC: [u8; 16] = [
    0x28, 0x7f, 0x34, 0x6b, 0xd4, 0xef, 0x7a, 0x81, 0x2d, 0x56, 0xb8, 0xd3, 0xaf, 0xc5, 0x45, 0x9c,
];
/// The OCC opcode for explicit-exit-notify.
pub const OCC_EXIT: u8 = 6;

/// The opcode (high 5 bits) and key id (low 3 bits) of a first byte.
#[inline]
#[must_use]
pub fn split_first_byte(b: u8) -> (u8, u8) {
    (b >> 3, b & 0x07)
}

/// The first byte for `opcode` and `key_id` (only the low 3 bits of the
/// key id count).
#[inline]
#[must_use]
pub fn first_byte(opcode: u8, key_id: u8) -> u8 {
    (opcode << 3) | (key_id & 0x07)
}

/// What a worker needs from a packet's first four bytes before it picks
/// a key: `(key_id, peer_id)` of a `P_DATA_V2` packet, `None` for
/// anything else (another opcode, shorter than the header).
#[inline]
#[must_use]
pub fn peek_data_v2(packet: &[u8]) -> Option<(u8, u32)> {
    let [b0, p0, p1, p2, ..] = *packet else {
        return None;
    };
    let (op, key_id) = split_first_byte(b0);
    (op == OP_DATA_V2).then(|| (key_id, u32::from_be_bytes([0, p0, p1, p2])))
}

/// The data-channel ciphers we negotiate (`--data-ciphers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataCipher {
    /// AES-128-GCM.
    Aes128Gcm,
    /// AES-256-GCM.
    Aes256Gcm,
}

impl DataCipher {
    /// OpenVPN's name for the cipher.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Aes128Gcm => "AES-128-GCM",
            Self::Aes256Gcm => "AES-256-GCM",
        }
    }

    /// The cipher OpenVPN names `name` (case-insensitive).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Aes256Gcm, Self::Aes128Gcm]
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// The AES key length in bytes.
    #[must_use]
    pub fn key_len(self) -> usize {
        match self {
            Self::Aes128Gcm => 16,
            Self::Aes256Gcm => 32,
        }
    }

    fn algorithm(self) -> &'static ring::aead::Algorithm {
        match self {
            Self::Aes128Gcm => &ring::aead::AES_128_GCM,
            Self::Aes256Gcm => &ring::aead::AES_256_GCM,
        }
    }
}

/// Why a data packet was dropped or could not be sealed: one counter each
/// (the discriminant indexes a `[u64; DataDrop::COUNT]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
#[non_exhaustive]
pub enum DataDrop {
    /// Shorter than header, packet id and tag.
    #[error("data packet too short")]
    TooShort = 0,
    /// Not P_DATA_V1/V2.
    #[error("not a data packet")]
    NotData,
    /// A key id this channel does not hold.
    #[error("unknown data key id")]
    UnknownKeyId,
    /// A P_DATA_V2 peer-id that is not this session's.
    #[error("wrong peer-id")]
    WrongPeerId,
    /// Packet id 0, seen already, or left of the window.
    #[error("replayed or too old packet id")]
    Replay,
    /// The AES-GCM tag does not verify.
    #[error("data packet authentication failed")]
    AuthFailed,
    /// The sending packet id space is used up: renegotiate.
    #[error("packet ids exhausted")]
    PacketIdExhausted,
    /// The buffer has no room for the header in front of the payload.
    #[error("no room for the data header")]
    NoHeadroom,
}

impl DataDrop {
    /// Number of variants, for counter arrays.
    pub const COUNT: usize = Self::NoHeadroom as usize + 1;
    /// All reasons in order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::TooShort,
        Self::NotData,
        Self::UnknownKeyId,
        Self::WrongPeerId,
        Self::Replay,
        Self::AuthFailed,
        Self::PacketIdExhausted,
        Self::NoHeadroom,
    ];

    /// Counter index.
    #[must_use]
    pub fn index(self) -> usize {
        self as usize
    }

    /// A stable name for logs and metrics.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::NotData => "not_data",
            Self::UnknownKeyId => "unknown_key_id",
            Self::WrongPeerId => "wrong_peer_id",
            Self::Replay => "replay",
            Self::AuthFailed => "auth_failed",
            Self::PacketIdExhausted => "packet_id_exhausted",
            Self::NoHeadroom => "no_headroom",
        }
    }
}

/// What a decrypted data-channel payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// A keepalive ping.
    Ping,
    /// explicit-exit-notify: the client is leaving.
    Exit,
    /// Another OCC message (ignored).
    Occ(u8),
    /// A tunnel packet (IPv4/IPv6).
    Packet(&'a [u8]),
}

/// Classifies a decrypted payload.
#[must_use]
pub fn classify(plain: &[u8]) -> Payload<'_> {
    if plain == PING {
        return Payload::Ping;
    }
    if let Some((magic, rest)) = plain.split_at_checked(OCC_MAGIC.len())
        && magic == OCC_MAGIC
        && let Some(&op) = rest.first()
    {
        return if op == OCC_EXIT {
            Payload::Exit
        } else {
            Payload::Occ(op)
        };
    }
    Payload::Packet(plain)
}
