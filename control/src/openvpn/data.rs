//! The data channel: AES-GCM `P_DATA_V2` over tunnel packets, keyed from
//! the TLS session by TLS-EKM, with a packet-id replay window.
//!
//! One implementation for the control core and the DPDK workers: this
//! module re-exports [`dataplane::ovpn`] (wire format, key layout, replay
//! window and the no-panic, no-allocation contract are documented
//! there). The engine ([`super::session`]) uses the same
//! [`DataChannel`] the workers hold per client.

pub use dataplane::ovpn::{
    DATA_V2_OVERHEAD, DataChannel, DataCipher, DataDrop, DataKeys, EKM_LABEL, EKM_LEN, OCC_EXIT,
    OCC_MAGIC, PACKET_ID_LEN, PING, Payload, REPLAY_WINDOW, ReplayWindow, TAG_LEN, classify,
};

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::wire::{DATA_V2_HEADER_LEN, Opcode, first_byte};
    use super::*;

    #[test]
    fn wire_constants_agree_with_the_control_channel_codec() {
        assert_eq!(dataplane::ovpn::OP_DATA_V1, u8::from(Opcode::DataV1));
        assert_eq!(dataplane::ovpn::OP_DATA_V2, u8::from(Opcode::DataV2));
        assert_eq!(dataplane::ovpn::DATA_V2_HEADER_LEN, DATA_V2_HEADER_LEN);
        for k in 0..8 {
            assert_eq!(
                dataplane::ovpn::first_byte(dataplane::ovpn::OP_DATA_V2, k),
                first_byte(Opcode::DataV2, k)
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The moved data channel is byte-identical to the one the
        /// engine used before (kept below as `previous`), both ways, for
        /// a run of packets with a replayed one in between.
        #[test]
        fn byte_identical_to_the_previous_implementation(
            ekm in proptest::collection::vec(any::<u8>(), EKM_LEN),
            aes256 in any::<bool>(),
            key_id in 0u8..8,
            peer_id in 0u32..0x00ff_ffff,
            packets in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..1500), 1..6),
        ) {
            let cipher = if aes256 { DataCipher::Aes256Gcm } else { DataCipher::Aes128Gcm };
            let ekm: [u8; EKM_LEN] = ekm.try_into().unwrap();
            let new = DataKeys::from_ekm(cipher, &ekm);
            let old = previous::DataKeys::from_ekm(cipher, &ekm);
            let (mut new_s, mut new_c) =
                (new.server_channel(key_id, peer_id), new.client_channel(key_id, peer_id));
            let (mut old_s, mut old_c) =
                (old.server_channel(key_id, peer_id), old.client_channel(key_id, peer_id));
            for plain in &packets {
                one_way(&mut new_s, &mut old_s, &mut new_c, &mut old_c, plain)?;
                one_way(&mut new_c, &mut old_c, &mut new_s, &mut old_s, plain)?;
            }
        }
    }

    /// Seals `plain` with both implementations (same bytes), opens each
    /// with its peer, replays it, and a bit-flipped copy: the same result.
    fn one_way(
        n: &mut DataChannel,
        o: &mut previous::DataChannel,
        peer_n: &mut DataChannel,
        peer_o: &mut previous::DataChannel,
        plain: &[u8],
    ) -> Result<(), TestCaseError> {
        let mut a = vec![0u8; DATA_V2_OVERHEAD];
        a.extend_from_slice(plain);
        let mut b = a.clone();
        prop_assert_eq!(n.seal_in_place(&mut a), Ok(()));
        prop_assert_eq!(o.seal_in_place(&mut b), Ok(()));
        prop_assert_eq!(&a, &b);
        let sealed = a.clone();
        let ra = peer_n.open_in_place(&mut a).unwrap();
        let rb = peer_o.open_in_place(&mut b).unwrap();
        prop_assert_eq!(&a[ra], &b[rb]);
        prop_assert_eq!(
            peer_n.open_in_place(&mut sealed.clone()),
            peer_o.open_in_place(&mut sealed.clone())
        );
        let mut x = sealed;
        let i = plain.len() % x.len();
        x[i] ^= 1;
        prop_assert_eq!(
            peer_n.open_in_place(&mut x.clone()),
            peer_o.open_in_place(&mut x)
        );
        Ok(())
    }

    /// The engine's data channel as it was before it moved to
    /// `dataplane::ovpn` (commit 7a7f756), kept as the oracle the
    /// property test above compares against.
    #[allow(clippy::unwrap_used, reason = "test oracle")]
    mod previous {
        use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
        use zeroize::Zeroizing;

        use super::super::super::wire::{DATA_V2_HEADER_LEN, Opcode, first_byte, split_first_byte};
        use super::{DATA_V2_OVERHEAD, DataCipher, DataDrop, EKM_LEN, PACKET_ID_LEN, TAG_LEN};

        fn key_len(c: DataCipher) -> usize {
            c.key_len()
        }

        fn algorithm(c: DataCipher) -> &'static ring::aead::Algorithm {
            match c {
                DataCipher::Aes128Gcm => &AES_128_GCM,
                DataCipher::Aes256Gcm => &AES_256_GCM,
            }
        }

        #[derive(Debug, Clone, Default)]
        struct ReplayWindow {
            top: u32,
            bits: u64,
        }

        impl ReplayWindow {
            fn check(&self, id: u32) -> bool {
                if id == 0 {
                    return false;
                }
                if id > self.top {
                    return true;
                }
                let back = self.top - id;
                back < super::REPLAY_WINDOW && self.bits & (1u64 << back) == 0
            }

            fn commit(&mut self, id: u32) {
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
        pub(super) struct DataKeys {
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
            pub(super) fn from_ekm(cipher: DataCipher, ekm: &[u8; EKM_LEN]) -> Self {
                let record = |i: usize| {
                    let r = &ekm[i * 128..(i + 1) * 128];
                    let key = Zeroizing::new(r[..key_len(cipher)].to_vec());
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

            /// The server's channel: seals with the server key, opens the client's.
            #[must_use]
            pub(super) fn server_channel(&self, key_id: u8, peer_id: u32) -> DataChannel {
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
            pub(super) fn client_channel(&self, key_id: u8, peer_id: u32) -> DataChannel {
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
        pub(super) struct DataChannel {
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
            match UnboundKey::new(algorithm(cipher), key) {
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

            /// Seals a P_DATA_V2 packet in place. `packet` holds
            /// [`DATA_V2_OVERHEAD`] bytes of room followed by the plaintext; the
            /// room is overwritten with header, packet id and tag, the plaintext
            /// with ciphertext.
            ///
            /// # Errors
            /// [`DataDrop::NoHeadroom`], [`DataDrop::PacketIdExhausted`].
            pub(super) fn seal_in_place(&mut self, packet: &mut [u8]) -> Result<(), DataDrop> {
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
                    .seal_in_place_separate_tag(
                        nonce(id, &self.seal_iv),
                        Aad::from(&head[..8]),
                        body,
                    )
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
            pub(super) fn open_in_place(
                &mut self,
                packet: &mut [u8],
            ) -> Result<std::ops::Range<usize>, DataDrop> {
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
    }
}
