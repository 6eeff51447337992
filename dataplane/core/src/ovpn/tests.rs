//! Unit tests: replay table, round trips, typed drops, known answers
//! (computed with Python's `cryptography` AESGCM, an independent
//! implementation), a property test against RustCrypto's `aes-gcm`, and
//! "arbitrary bytes never panic".

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce};
use hex_literal::hex;
use netbuf::{Append, Headroom, TestBuffer};
use proptest::prelude::*;

use super::*;

/// The EKM the known answers use: byte i is `i × 29 mod 256`.
fn ekm29() -> [u8; EKM_LEN] {
    let mut ekm = [0u8; EKM_LEN];
    for (i, b) in ekm.iter_mut().enumerate() {
        *b = u8::try_from((i * 29) & 0xff).unwrap();
    }
    ekm
}

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

/// A 20-byte IPv4 header and 8 zero bytes: the known answers' plaintext.
const KAT_PLAIN: [u8; 28] = hex!("4500001c000100004001f6d10a080001c0a80101 0000000000000000");

#[test]
fn known_answer_p_data_v2_seal() {
    // Server → client, key id 2, peer-id 0x123456, packet id 1.
    let cases: [(DataCipher, &[u8]); 2] = [
        (
            DataCipher::Aes128Gcm,
            &hex!(
                "4a12345600000001 73b3d17dfe553b50b247ee32f36d5ec4"
                "3a1c5ebc1d57834a700203b7c53c2ef5173cee4e69d1a81e265a74c2"
            ),
        ),
        (
            DataCipher::Aes256Gcm,
            &hex!(
                "4a12345600000001 dedc665c374d41a9a587769ead17d0c5"
                "d0f2e61c154b8bbc264d5e92cd445c7fdaa88f644931184b8fecb1a9"
            ),
        ),
    ];
    for (cipher, want) in cases {
        let k = DataKeys::from_ekm(cipher, &ekm29());
        let mut server = k.server_channel(2, 0x12_3456);
        assert_eq!(sealed(&mut server, &KAT_PLAIN), want, "{cipher:?}");
        // And on a buffer, through the headroom.
        let mut server = k.server_channel(2, 0x12_3456);
        let mut buf = TestBuffer::from_slice(&KAT_PLAIN);
        encap(&mut server, &mut buf).unwrap();
        assert_eq!(buf.as_ref(), want);
        let mut client = k.client_channel(2, 0x12_3456);
        decap(&mut client, &mut buf).unwrap();
        assert_eq!(buf.as_ref(), KAT_PLAIN);
    }
}

#[test]
fn known_answer_p_data_v1_open() {
    // Client → server, P_DATA_V1, key id 2, packet id 7 (AAD: the packet id).
    let cases: [(DataCipher, &[u8]); 2] = [
        (
            DataCipher::Aes128Gcm,
            &hex!(
                "32 00000007 bfa574e45f4d7a405bde85b1cd4d29ca"
                "06beaf2d44abe7a103386412fbd7094d6e5f7bf026be1996e9d2a205"
            ),
        ),
        (
            DataCipher::Aes256Gcm,
            &hex!(
                "32 00000007 1e89217a55195725476a4d2cf26ccf12"
                "53214f2f63fe1dc73660adc3a22726418dbb37a555fd8bedb405a8cc"
            ),
        ),
    ];
    for (cipher, packet) in cases {
        let k = DataKeys::from_ekm(cipher, &ekm29());
        let mut server = k.server_channel(2, 9);
        let mut p = packet.to_vec();
        let r = server.open_in_place(&mut p).unwrap();
        assert_eq!(&p[r], KAT_PLAIN, "{cipher:?}");
    }
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
    p[0] = first_byte(OP_DATA_V2, 1);
    assert_eq!(server.open_in_place(&mut p), Err(DataDrop::UnknownKeyId));
    let mut p = good.clone();
    p[3] = 2;
    assert_eq!(server.open_in_place(&mut p), Err(DataDrop::WrongPeerId));
    let mut p = good.clone();
    p[0] = first_byte(4, 0);
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
fn buffer_encap_needs_headroom_and_leaves_the_buffer_alone() {
    let k = keys(DataCipher::Aes128Gcm);
    let mut server = k.server_channel(1, 3);
    let mut buf = TestBuffer::with_room(256, DATA_V2_OVERHEAD - 1);
    buf.append(10).unwrap().fill(0x45);
    assert_eq!(encap(&mut server, &mut buf), Err(DataDrop::NoHeadroom));
    assert_eq!(buf.as_ref(), &[0x45; 10]);
    assert_eq!(server.next_packet_id(), 1);
    let mut buf = TestBuffer::with_room(256, DATA_V2_OVERHEAD);
    buf.append(10).unwrap().fill(0x45);
    encap(&mut server, &mut buf).unwrap();
    assert_eq!(buf.headroom(), 0);
    assert_eq!(peek_data_v2(buf.as_ref()), Some((1, 3)));
    let mut client = k.client_channel(1, 3);
    decap(&mut client, &mut buf).unwrap();
    assert_eq!(buf.as_ref(), &[0x45; 10]);
    // Replayed: dropped, counted by the caller.
    let mut again = TestBuffer::with_room(256, 64);
    let mut server = k.server_channel(1, 3);
    again.append(1).unwrap()[0] = 0;
    encap(&mut server, &mut again).unwrap();
    let copy = again.as_ref().to_vec();
    decap(&mut client, &mut again).unwrap_err();
    let mut replay = TestBuffer::from_slice(&copy);
    assert_eq!(decap(&mut client, &mut replay), Err(DataDrop::Replay));
}

#[test]
fn packet_ids_never_wrap() {
    let k = keys(DataCipher::Aes128Gcm);
    let mut server = k.server_channel(0, 1);
    server.set_next_packet_id(u32::MAX - 1);
    let mut buf = TestBuffer::from_slice(b"a");
    encap(&mut server, &mut buf).unwrap();
    let mut buf = TestBuffer::from_slice(b"a");
    assert_eq!(
        encap(&mut server, &mut buf),
        Err(DataDrop::PacketIdExhausted)
    );
    assert_eq!(buf.as_ref(), b"a");
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
fn cipher_names_and_drop_names() {
    assert_eq!(
        DataCipher::from_name("aes-256-gcm"),
        Some(DataCipher::Aes256Gcm)
    );
    assert_eq!(
        DataCipher::from_name("AES-128-GCM"),
        Some(DataCipher::Aes128Gcm)
    );
    assert_eq!(DataCipher::from_name("CHACHA20-POLY1305"), None);
    for (i, d) in DataDrop::ALL.iter().enumerate() {
        assert_eq!(d.index(), i);
        assert!(!d.name().is_empty());
    }
}

/// P_DATA_V2 sealed by RustCrypto's AES-GCM from the same EKM, built by
/// hand from the wire format above.
fn oracle_seal(
    cipher: DataCipher,
    ekm: &[u8; EKM_LEN],
    key_id: u8,
    peer_id: u32,
    id: u32,
    plain: &[u8],
) -> Vec<u8> {
    let server = &ekm[128..256];
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&id.to_be_bytes());
    nonce[4..].copy_from_slice(&server[64..72]);
    let mut head = vec![first_byte(OP_DATA_V2, key_id)];
    head.extend_from_slice(&peer_id.to_be_bytes()[1..]);
    head.extend_from_slice(&id.to_be_bytes());
    let mut body = plain.to_vec();
    let tag = match cipher {
        DataCipher::Aes128Gcm => Aes128Gcm::new_from_slice(&server[..16])
            .unwrap()
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &head, &mut body),
        DataCipher::Aes256Gcm => Aes256Gcm::new_from_slice(&server[..32])
            .unwrap()
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &head, &mut body),
    }
    .unwrap();
    head.extend_from_slice(&tag);
    head.extend_from_slice(&body);
    head
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn seal_matches_an_independent_aes_gcm(
        ekm in proptest::collection::vec(any::<u8>(), EKM_LEN),
        aes256 in any::<bool>(),
        key_id in 0u8..8,
        peer_id in 0u32..=MAX_PEER_ID,
        skip in 0u32..5,
        plain in proptest::collection::vec(any::<u8>(), 0..1500),
    ) {
        let cipher = if aes256 { DataCipher::Aes256Gcm } else { DataCipher::Aes128Gcm };
        let ekm: [u8; EKM_LEN] = ekm.try_into().unwrap();
        let k = DataKeys::from_ekm(cipher, &ekm);
        let mut server = k.server_channel(key_id, peer_id);
        for _ in 0..skip {
            let _ = sealed(&mut server, b"");
        }
        let mut buf = TestBuffer::from_slice(&plain);
        encap(&mut server, &mut buf).unwrap();
        let want = oracle_seal(cipher, &ekm, key_id, peer_id, skip + 1, &plain);
        prop_assert_eq!(buf.as_ref(), &want[..]);
        let mut client = k.client_channel(key_id, peer_id);
        decap(&mut client, &mut buf).unwrap();
        prop_assert_eq!(buf.as_ref(), &plain[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        headroom in 0usize..64,
    ) {
        let k = keys(DataCipher::Aes128Gcm);
        let mut server = k.server_channel(bytes.first().map_or(0, |b| b & 7), 0);
        let mut p = bytes.clone();
        prop_assert!(server.open_in_place(&mut p).is_err());
        let _ = peek_data_v2(&bytes);
        let _ = classify(&bytes);
        let mut buf = TestBuffer::with_room(512, headroom);
        buf.append(bytes.len()).unwrap().copy_from_slice(&bytes);
        prop_assert!(decap(&mut server, &mut buf).is_err());
        let mut buf = TestBuffer::with_room(512, headroom);
        buf.append(bytes.len()).unwrap().copy_from_slice(&bytes);
        let r = encap(&mut server, &mut buf);
        prop_assert_eq!(r.is_ok(), headroom >= DATA_V2_OVERHEAD);
    }
}
