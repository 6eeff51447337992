//! The data channel: AES-GCM over tunnel packets, keyed from the TLS
//! session by TLS-EKM, with a packet-id replay window. Sans-IO and
//! allocation-free, in place: the functions a worker calls per packet.
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

use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::Zeroizing;

use super::wire::{DATA_V2_HEADER_LEN, Opcode, first_byte, split_first_byte};

/// The TLS exporter label OpenVPN's TLS-EKM key derivation uses.
pub const EKM_LABEL: &[u8] = b"EXPORTER-OpenVPN-datakeys";
/// Bytes exported: two key records of 128 bytes.
pub const EKM_LEN: usize = 256;
/// The packet-id field.
pub const PACKET_ID_LEN: usize = 4;
/// The AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes in front of the plaintext in a P_DATA_V2 packet.
pub const DATA_V2_OVERHEAD: usize = DATA_V2_HEADER_LEN + PACKET_ID_LEN + TAG_LEN;
/// Replay window width in packets (OpenVPN's default `--replay-window 64`).
pub const REPLAY_WINDOW: u32 = 64;

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
    fn key_len(self) -> usize {
        match self {
            Self::Aes128Gcm => 16,
            Self::Aes256Gcm => 32,
        }
    }
    fn algorithm(self) -> &'static ring::aead::Algorithm {
        match self {
            Self::Aes128Gcm => &AES_128_GCM,
            Self::Aes256Gcm => &AES_256_GCM,
        }
    }
}

/// Why a data packet was dropped or could not be sealed: one counter each.
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
    pub const COUNT: usize = 8;
    /// Counter index.
    #[must_use]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Sliding-window replay protection over 32-bit packet ids.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// Highest id accepted (0: none yet).
    top: u32,
    /// Bit i set: `top - i` was accepted.
    bits: u64,
}

impl ReplayWindow {
    /// The pre-decryption check: would `id` be accepted?
    #[must_use]
    pub fn check(&self, id: u32) -> bool {
        if id == 0 {
            return false;
        }
        if id > self.top {
            return true;
        }
        let back = self.top - id;
        back < REPLAY_WINDOW && self.bits & (1u64 << back) == 0
    }

    /// The post-authentication update: marks `id` seen. Call only after
    /// [`Self::check`] passed and the packet authenticated.
    pub fn commit(&mut self, id: u32) {
        if id > self.top {
            let shift = id - self.top;
            self.bits = if shift >= 64 { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.top = id;
        } else {
            let back = self.top - id;
            if back < 64 {
                self.bits |= 1u64 << back;
            }
        }
    }
}

/// Direction keys derived from the TLS-EKM export, before use.
pub struct DataKeys {
    cipher: DataCipher,
    /// Server → client: (key, implicit IV).
    server_out: (Zeroizing<Vec<u8>>, [u8; 8]),
    /// Client → server.
    client_out: (Zeroizing<Vec<u8>>, [u8; 8]),
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys")
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl DataKeys {
    /// Splits the 256 exported bytes into the two directions.
    #[must_use]
    pub fn from_ekm(cipher: DataCipher, ekm: &[u8; EKM_LEN]) -> Self {
        let record = |i: usize| {
            let r = &ekm[i * 128..(i + 1) * 128];
            let key = Zeroizing::new(r[..cipher.key_len()].to_vec());
            let mut iv = [0u8; 8];
            iv.copy_from_slice(&r[64..72]);
            (key, iv)
        };
        Self {
            cipher,
            client_out: record(0),
            server_out: record(1),
        }
    }

    /// The negotiated cipher.
    #[must_use]
    pub fn cipher(&self) -> DataCipher {
        self.cipher
    }

    /// The server's channel: seals with the server key, opens the client's.
    #[must_use]
    pub fn server_channel(&self, key_id: u8, peer_id: u32) -> DataChannel {
        DataChannel::new(
            self.cipher,
            &self.server_out,
            &self.client_out,
            key_id,
            peer_id,
        )
    }

    /// The client's channel (tests and tools).
    #[must_use]
    pub fn client_channel(&self, key_id: u8, peer_id: u32) -> DataChannel {
        DataChannel::new(
            self.cipher,
            &self.client_out,
            &self.server_out,
            key_id,
            peer_id,
        )
    }
}

/// One session's data channel: a sealing and an opening key, the next
/// packet id and the replay window. Owned by one thread; no locks.
pub struct DataChannel {
    key_id: u8,
    peer_id: u32,
    seal_key: LessSafeKey,
    seal_iv: [u8; 8],
    next_id: u32,
    open_key: LessSafeKey,
    open_iv: [u8; 8],
    replay: ReplayWindow,
}

impl std::fmt::Debug for DataChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataChannel")
            .field("key_id", &self.key_id)
            .field("peer_id", &self.peer_id)
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

fn nonce(id: u32, iv: &[u8; 8]) -> Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&id.to_be_bytes());
    n[4..].copy_from_slice(iv);
    Nonce::assume_unique_for_key(n)
}

fn aead_key(cipher: DataCipher, key: &[u8]) -> LessSafeKey {
    // The key length comes from the cipher itself: ring cannot refuse it.
    match UnboundKey::new(cipher.algorithm(), key) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable!("AES-GCM key of the algorithm's own length"),
    }
}

impl DataChannel {
    fn new(
        cipher: DataCipher,
        seal: &(Zeroizing<Vec<u8>>, [u8; 8]),
        open: &(Zeroizing<Vec<u8>>, [u8; 8]),
        key_id: u8,
        peer_id: u32,
    ) -> Self {
        Self {
            key_id: key_id & 7,
            peer_id,
            seal_key: aead_key(cipher, &seal.0),
            seal_iv: seal.1,
            next_id: 1,
            open_key: aead_key(cipher, &open.0),
            open_iv: open.1,
            replay: ReplayWindow::default(),
        }
    }

    /// The peer-id this channel seals with and expects.
    #[must_use]
    pub fn peer_id(&self) -> u32 {
        self.peer_id
    }

    /// Seals a P_DATA_V2 packet in place. `packet` holds
    /// [`DATA_V2_OVERHEAD`] bytes of room followed by the plaintext; the
    /// room is overwritten with header, packet id and tag, the plaintext
    /// with ciphertext.
    ///
    /// # Errors
    /// [`DataDrop::NoHeadroom`], [`DataDrop::PacketIdExhausted`].
    pub fn seal_in_place(&mut self, packet: &mut [u8]) -> Result<(), DataDrop> {
        if packet.len() < DATA_V2_OVERHEAD {
            return Err(DataDrop::NoHeadroom);
        }
        let id = self.next_id;
        if id == u32::MAX {
            return Err(DataDrop::PacketIdExhausted);
        }
        self.next_id += 1;
        let (head, body) = packet.split_at_mut(DATA_V2_OVERHEAD);
        let p = self.peer_id.to_be_bytes();
        head[0] = first_byte(Opcode::DataV2, self.key_id);
        head[1..4].copy_from_slice(&p[1..4]);
        head[4..8].copy_from_slice(&id.to_be_bytes());
        let tag = self
            .seal_key
            .seal_in_place_separate_tag(nonce(id, &self.seal_iv), Aad::from(&head[..8]), body)
            .map_err(|_| DataDrop::NoHeadroom)?;
        head[8..DATA_V2_OVERHEAD].copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens a P_DATA_V1/V2 packet in place; returns the plaintext's
    /// range within `packet`. The replay window moves only when the tag
    /// verified.
    ///
    /// # Errors
    /// The [`DataDrop`] reason; nothing changes then.
    pub fn open_in_place(&mut self, packet: &mut [u8]) -> Result<std::ops::Range<usize>, DataDrop> {
        let Some(&b0) = packet.first() else {
            return Err(DataDrop::TooShort);
        };
        let (op, key_id) = split_first_byte(b0);
        let aad_start = match op {
            Opcode::DataV2 => 0,
            Opcode::DataV1 => 1,
            _ => return Err(DataDrop::NotData),
        };
        let pid_at = if op == Opcode::DataV2 {
            DATA_V2_HEADER_LEN
        } else {
            1
        };
        let ct_at = pid_at + PACKET_ID_LEN + TAG_LEN;
        if packet.len() < ct_at {
            return Err(DataDrop::TooShort);
        }
        if key_id != self.key_id {
            return Err(DataDrop::UnknownKeyId);
        }
        if op == Opcode::DataV2 {
            let p = u32::from_be_bytes([0, packet[1], packet[2], packet[3]]);
            if p != self.peer_id {
                return Err(DataDrop::WrongPeerId);
            }
        }
        let id = u32::from_be_bytes([
            packet[pid_at],
            packet[pid_at + 1],
            packet[pid_at + 2],
            packet[pid_at + 3],
        ]);
        if !self.replay.check(id) {
            return Err(DataDrop::Replay);
        }
        let (head, body) = packet.split_at_mut(ct_at);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&head[pid_at + PACKET_ID_LEN..]);
        self.open_key
            .open_in_place_separate_tag(
                nonce(id, &self.open_iv),
                Aad::from(&head[aad_start..pid_at + PACKET_ID_LEN]),
                Tag::from(tag),
                body,
                0..,
            )
            .map_err(|_| DataDrop::AuthFailed)?;
        self.replay.commit(id);
        Ok(ct_at..packet.len())
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
    if plain.len() > OCC_MAGIC.len() && plain[..OCC_MAGIC.len()] == OCC_MAGIC {
        let op = plain[OCC_MAGIC.len()];
        return if op == OCC_EXIT {
            Payload::Exit
        } else {
            Payload::Occ(op)
        };
    }
    Payload::Packet(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(c: DataCipher) -> DataKeys {
        let mut ekm = [0u8; EKM_LEN];
        for (i, b) in ekm.iter_mut().enumerate() {
            *b = u8::try_from(i & 0xff).unwrap();
        }
        DataKeys::from_ekm(c, &ekm)
    }

    fn sealed(ch: &mut DataChannel, plain: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; DATA_V2_OVERHEAD];
        p.extend_from_slice(plain);
        ch.seal_in_place(&mut p).unwrap();
        p
    }

    #[test]
    fn replay_window_table() {
        // (id, accepted) in order, like boringtun's test_replay_counter.
        let steps: &[(u32, bool)] = &[
            (0, false),
            (1, true),
            (1, false),
            (3, true),
            (2, true),
            (2, false),
            (66, true),
            (4, true),  // 62 behind, not seen
            (3, false), // 63 behind: last slot of the window, seen
            (2, false), // 64 behind: left of the window
            (1000, true),
            (937, true),
            (936, false),
            (u32::MAX, true),
            (u32::MAX, false),
        ];
        let mut w = ReplayWindow::default();
        for &(id, ok) in steps {
            assert_eq!(w.check(id), ok, "id {id}");
            if ok {
                w.commit(id);
            }
        }
    }

    #[test]
    fn seal_open_both_ciphers_and_directions() {
        for c in [DataCipher::Aes128Gcm, DataCipher::Aes256Gcm] {
            let k = keys(c);
            let mut server = k.server_channel(0, 5);
            let mut client = k.client_channel(0, 5);
            let mut p = sealed(&mut server, b"ip packet");
            assert_eq!(p[0], 0x48);
            assert_eq!(&p[1..4], &[0, 0, 5]);
            assert_eq!(&p[4..8], &[0, 0, 0, 1]);
            // The server cannot open its own direction.
            let mut copy = p.clone();
            assert_eq!(server.open_in_place(&mut copy), Err(DataDrop::AuthFailed));
            let r = client.open_in_place(&mut p).unwrap();
            assert_eq!(&p[r], b"ip packet");
            assert_eq!(client.open_in_place(&mut p.clone()), Err(DataDrop::Replay));
            let mut q = sealed(&mut client, &PING);
            let r = server.open_in_place(&mut q).unwrap();
            assert_eq!(classify(&q[r]), Payload::Ping);
        }
    }

    #[test]
    fn drops_are_typed_and_leave_no_trace() {
        let k = keys(DataCipher::Aes256Gcm);
        let mut server = k.server_channel(0, 1);
        let mut client = k.client_channel(0, 1);
        let good = sealed(&mut client, b"x");
        for n in 0..DATA_V2_OVERHEAD {
            assert_eq!(
                server.open_in_place(&mut good[..n].to_vec()),
                Err(DataDrop::TooShort)
            );
        }
        let mut p = good.clone();
        p[0] = first_byte(Opcode::DataV2, 1);
        assert_eq!(server.open_in_place(&mut p), Err(DataDrop::UnknownKeyId));
        let mut p = good.clone();
        p[3] = 2;
        assert_eq!(server.open_in_place(&mut p), Err(DataDrop::WrongPeerId));
        let mut p = good.clone();
        p[0] = first_byte(Opcode::ControlV1, 0);
        assert_eq!(server.open_in_place(&mut p), Err(DataDrop::NotData));
        for i in 4..good.len() {
            let mut p = good.clone();
            p[i] ^= 0x80;
            assert!(server.open_in_place(&mut p).is_err(), "byte {i}");
        }
        // None of that moved the window: the genuine packet still opens.
        let mut p = good.clone();
        assert!(server.open_in_place(&mut p).is_ok());
        let mut tiny = [0u8; 3];
        assert_eq!(server.seal_in_place(&mut tiny), Err(DataDrop::NoHeadroom));
    }

    #[test]
    fn classify_magic() {
        let mut exit = OCC_MAGIC.to_vec();
        exit.push(OCC_EXIT);
        assert_eq!(classify(&exit), Payload::Exit);
        exit[16] = 1;
        assert_eq!(classify(&exit), Payload::Occ(1));
        assert_eq!(classify(&[0x45, 0]), Payload::Packet(&[0x45, 0]));
        assert_eq!(classify(&OCC_MAGIC), Payload::Packet(&OCC_MAGIC));
    }

    #[test]
    fn cipher_names() {
        assert_eq!(
            DataCipher::from_name("aes-256-gcm"),
            Some(DataCipher::Aes256Gcm)
        );
        assert_eq!(
            DataCipher::from_name("AES-128-GCM"),
            Some(DataCipher::Aes128Gcm)
        );
        assert_eq!(DataCipher::from_name("CHACHA20-POLY1305"), None);
    }
}
