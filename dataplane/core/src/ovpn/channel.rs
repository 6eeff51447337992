//! Keys and one session's data channel over plain byte slices.

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::Zeroizing;

use super::{
    DATA_V2_HEADER_LEN, DATA_V2_OVERHEAD, DataCipher, DataDrop, EKM_LEN, OP_DATA_V1, OP_DATA_V2,
    PACKET_ID_LEN, ReplayWindow, TAG_LEN, first_byte, split_first_byte,
};

/// One direction's key material: the AES key (the cipher's length of it
/// used) and the implicit IV.
struct DirectionKey {
    key: Zeroizing<[u8; 32]>,
    iv: [u8; 8],
}

/// Direction keys derived from the TLS-EKM export, before use. Built on
/// the control core; the channels it makes travel to a worker.
pub struct DataKeys {
    cipher: DataCipher,
    /// Server → client.
    server_out: DirectionKey,
    /// Client → server.
    client_out: DirectionKey,
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
            let mut key = Zeroizing::new([0u8; 32]);
            let n = cipher.key_len();
            key[..n].copy_from_slice(&r[..n]);
            let mut iv = [0u8; 8];
            iv.copy_from_slice(&r[64..72]);
            DirectionKey { key, iv }
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

    /// The client's channel (tests, tools and benchmarks).
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

/// One session's data channel for one key id: a sealing and an opening
/// key, the next packet id and the replay window. Owned by one thread (a
/// worker, or the control core's engine); no locks.
///
/// Two copies of one sealing key would reuse AES-GCM nonces: a channel
/// is neither `Clone` nor shared, and the control core installs a
/// client's channel on one worker.
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

#[inline]
fn nonce(id: u32, iv: &[u8; 8]) -> Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&id.to_be_bytes());
    n[4..].copy_from_slice(iv);
    Nonce::assume_unique_for_key(n)
}

fn aead_key(cipher: DataCipher, key: &[u8; 32]) -> LessSafeKey {
    // The key is cut to the cipher's own length: ring cannot refuse it.
    match UnboundKey::new(cipher.algorithm(), &key[..cipher.key_len()]) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable!("AES-GCM key of the algorithm's own length"),
    }
}

impl DataChannel {
    fn new(
        cipher: DataCipher,
        seal: &DirectionKey,
        open: &DirectionKey,
        key_id: u8,
        peer_id: u32,
    ) -> Self {
        Self {
            key_id: key_id & 7,
            peer_id,
            seal_key: aead_key(cipher, &seal.key),
            seal_iv: seal.iv,
            next_id: 1,
            open_key: aead_key(cipher, &open.key),
            open_iv: open.iv,
            replay: ReplayWindow::default(),
        }
    }

    /// The peer-id this channel seals with and expects.
    #[must_use]
    pub fn peer_id(&self) -> u32 {
        self.peer_id
    }

    /// The key id (0..=7) this channel seals with and expects.
    #[must_use]
    pub fn key_id(&self) -> u8 {
        self.key_id
    }

    /// The packet id the next sealed packet gets.
    #[must_use]
    pub fn next_packet_id(&self) -> u32 {
        self.next_id
    }

    /// Test hook: jump the sending packet id (packet-id exhaustion).
    #[cfg(test)]
    pub(super) fn set_next_packet_id(&mut self, id: u32) {
        self.next_id = id;
    }

    /// Whether sealing can go on (packet ids left).
    #[inline]
    #[must_use]
    pub fn can_seal(&self) -> bool {
        self.next_id != u32::MAX
    }

    /// Seals a P_DATA_V2 packet in place. `packet` holds
    /// [`DATA_V2_OVERHEAD`] bytes of room followed by the plaintext; the
    /// room is overwritten with header, packet id and tag, the plaintext
    /// with ciphertext.
    ///
    /// # Errors
    /// [`DataDrop::NoHeadroom`], [`DataDrop::PacketIdExhausted`]; the
    /// channel is unchanged then.
    pub fn seal_in_place(&mut self, packet: &mut [u8]) -> Result<(), DataDrop> {
        let Some((head, body)) = packet.split_at_mut_checked(DATA_V2_OVERHEAD) else {
            return Err(DataDrop::NoHeadroom);
        };
        let id = self.next_id;
        if id == u32::MAX {
            return Err(DataDrop::PacketIdExhausted);
        }
        let p = self.peer_id.to_be_bytes();
        head[0] = first_byte(OP_DATA_V2, self.key_id);
        head[1..4].copy_from_slice(&p[1..4]);
        head[4..8].copy_from_slice(&id.to_be_bytes());
        // ring refuses only a plaintext beyond GCM's 64 GiB limit.
        let tag = self
            .seal_key
            .seal_in_place_separate_tag(nonce(id, &self.seal_iv), Aad::from(&head[..8]), body)
            .map_err(|_| DataDrop::NoHeadroom)?;
        head[8..DATA_V2_OVERHEAD].copy_from_slice(tag.as_ref());
        self.next_id += 1;
        Ok(())
    }

    /// Opens a P_DATA_V1/V2 packet in place; returns the plaintext's
    /// range within `packet`. The replay window moves only when the tag
    /// verified.
    ///
    /// # Errors
    /// The [`DataDrop`] reason; nothing changes then (but the bytes of a
    /// packet whose tag failed are undefined).
    pub fn open_in_place(&mut self, packet: &mut [u8]) -> Result<std::ops::Range<usize>, DataDrop> {
        let Some(&b0) = packet.first() else {
            return Err(DataDrop::TooShort);
        };
        let (op, key_id) = split_first_byte(b0);
        let (aad_start, pid_at) = match op {
            OP_DATA_V2 => (0, DATA_V2_HEADER_LEN),
            OP_DATA_V1 => (1, 1),
            _ => return Err(DataDrop::NotData),
        };
        let ct_at = pid_at + PACKET_ID_LEN + TAG_LEN;
        let Some((head, body)) = packet.split_at_mut_checked(ct_at) else {
            return Err(DataDrop::TooShort);
        };
        if key_id != self.key_id {
            return Err(DataDrop::UnknownKeyId);
        }
        if op == OP_DATA_V2 && u32::from_be_bytes([0, head[1], head[2], head[3]]) != self.peer_id {
            return Err(DataDrop::WrongPeerId);
        }
        let id = u32::from_be_bytes([
            head[pid_at],
            head[pid_at + 1],
            head[pid_at + 2],
            head[pid_at + 3],
        ]);
        if !self.replay.check(id) {
            return Err(DataDrop::Replay);
        }
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
