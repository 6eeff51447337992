//! Unit tests: RFC 2409 known answers (computed independently by
//! `kat.py` with Python's hashlib / hmac / `cryptography`), codec byte
//! fixtures and property tests, and a deterministic two-peer harness
//! (initiator ↔ responder, virtual time, an optional NAT, lost messages).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hex_literal::hex;
use proptest::prelude::*;
use zeroize::Zeroizing;

use crate::config::{
    DhGroup, EncryptionAlgorithm, IntegrityAlgorithm, PreSharedKey, TunnelOptions,
};
use crate::ike::sa::{Datagram, DownReason, Event, IkeConfig, Transmit};
use crate::ike::tests::TestRng;

use super::crypto::{
    Phase1Cipher, Prf, keymat, main_mode_hash, phase1_iv, phase1_keys, phase2_iv, qm_hash,
    qm_hash3, skeyid_psk,
};
use super::sa::Ikev1Sa;
use super::wire::{Attribute, Body, Header, Message, Payload, PayloadType, Reader, parse_chain};

// ---- known answers (kat.py) ----

const PSK: &[u8] = b"vt-kat-pre-shared-key";
const CKY_I: u64 = 0x0102_0304_0506_0708;
const CKY_R: u64 = 0x1112_1314_1516_1718;
const SAI_B: [u8; 52] = hex!(
    "00000001000000010000002c010100010000002401010000800b0001800c7080800100078002000480030001800e0080800400 0e"
);
const IDII_B: [u8; 8] = hex!("01000000c0000201");
const MID: u32 = 0xa1b2_c3d4;
const SPI: u32 = 0xc0ff_ee01;
const REST: [u8; 12] = hex!("0a0000240102030405060708");

/// `f(i) mod 256` for `i` in `0..n` (the patterns of `kat.py`).
fn pattern(n: u32, f: impl Fn(u32) -> u32) -> Vec<u8> {
    (0..n).map(|i| (f(i) % 256).to_be_bytes()[3]).collect()
}

fn ni() -> Vec<u8> {
    (0..32).collect()
}
fn nr() -> Vec<u8> {
    (32..64).collect()
}
fn g_xy() -> Vec<u8> {
    pattern(256, |i| i * 7 + 3)
}
fn g_qm() -> Vec<u8> {
    pattern(256, |i| i * 13 + 5)
}
fn ke_i() -> Vec<u8> {
    pattern(64, |i| i * 3)
}
fn ke_r() -> Vec<u8> {
    pattern(64, |i| i * 5 + 1)
}

const SHA1_SKEYID: [u8; 20] = hex!("80554f7c698ace67e8f3f21c4edbb493f374c268");
const SHA1_SKEYID_D: [u8; 20] = hex!("86b5a6e1c6c6619f7762e67f8ce19d09b09ae79f");
const SHA1_SKEYID_A: [u8; 20] = hex!("b54fb95462cb6413466bc4bd6c9c33edf68aef02");
const SHA1_SKEYID_E: [u8; 20] = hex!("5d69b3b72767e2079142cada0b4cf4c8288e7131");
const SHA1_ENC_KEY_256: [u8; 32] =
    hex!("b67f644708488ab05e802b7d18b73181a86543f95e9f8dc5c66509f24e6054b5");
const SHA1_HASH_I: [u8; 20] = hex!("67e08ce1cbf74589fc5538d3d205b84973a743b9");
const SHA1_HASH_R: [u8; 20] = hex!("53fce920b2f27f74e6e6f2f1e6eb68ba89942ce9");
const SHA1_IV1: [u8; 16] = hex!("e12d0a3a64e033f3a2aa59ed2f69b290");
const SHA1_IV2: [u8; 16] = hex!("694e876f92cab30ce6e98a6735fbf11d");
const SHA1_KEYMAT_96: [u8; 96] = hex!(
    "b2aa678e06a0eb7b7c22003cfb0d779cb2d6576db4190c316ff779c5ae9ed8c837d5d2d5fbb54ccdb72dc6ad9f3a3668c3831b6695a01d66aa56f36d4a6b44d2638cfca970427f166c9b0f49a4cc18a85191519d516bd58a387068f067e9a086"
);
const SHA1_KEYMAT_PFS_36: [u8; 36] =
    hex!("a5b360bba00be41ceaa1b0bc419a251f1c1d2d3a08877b50ad40dffc57fd5896663bc0f4");
const SHA1_QM_HASH1: [u8; 20] = hex!("22c34865de3d9c4a0a41f52d3be67a300302ef96");
const SHA1_QM_HASH2: [u8; 20] = hex!("2a99a7f87b7d75d174cf033f6959ed746a30616c");
const SHA1_QM_HASH3: [u8; 20] = hex!("4089384169bf9b13ebf4e19415bd91fb033208a7");
const SHA1_CT: [u8; 48] = hex!(
    "c89e1e986895b82e920459ee2d531f9a56fd7e19967efc34086c3f3797cd9617f99b464aea454fb3268eedf1777da3a8"
);
const SHA256_SKEYID: [u8; 32] =
    hex!("14a73cf828ffc105245319210b1238b0709bfa378824e3ab9945fc31bb2f7c64");
const SHA256_SKEYID_D: [u8; 32] =
    hex!("c256f964704b0045d529a0fe068c0e86e8356d316fc03b96f48e8157ca2a0232");
const SHA256_SKEYID_A: [u8; 32] =
    hex!("6861262ed09eef3d91564d421a394b2bbdd19dc589d05ecf3b938045d47e5d8d");
const SHA256_SKEYID_E: [u8; 32] =
    hex!("53a5ac32bdc07618d694371410d27ce6c6d3ccf73119e81ffacaaa5136e1b5d2");
const SHA256_ENC_KEY_256: [u8; 32] =
    hex!("53a5ac32bdc07618d694371410d27ce6c6d3ccf73119e81ffacaaa5136e1b5d2");
const SHA256_HASH_I: [u8; 32] =
    hex!("1dee7133c3d1671b4116e5e379ecea380e75f471350df6c20c2ed211dc4c872d");
const SHA256_HASH_R: [u8; 32] =
    hex!("795c91ac7e80f457040fb8302bad07089760bed9f910e5bbe29d96a69190fe0a");
const SHA256_IV1: [u8; 16] = hex!("50fa9927cb71a9e04b339f6be6668fcc");
const SHA256_IV2: [u8; 16] = hex!("ee166dfd9086847e965d7accec8bda04");
const SHA256_KEYMAT_96: [u8; 96] = hex!(
    "d077efba5ea2be55284764debb4b684b0e23651109ed5347fb381822ceeff271fc293b43f7f5bfc8bc83963c6423e42fbd65cfda64858a98224ca93957d7b51e91e4483784e68ad4eed325f7f91e011ff916e441d0edc36507c9eed0a0d4178a"
);
const SHA256_KEYMAT_PFS_36: [u8; 36] =
    hex!("00471ebab62046bf9b9c631e6ccf072bfd47d0c647d55fd8716a9757b93b48e53d9314b5");
const SHA256_QM_HASH1: [u8; 32] =
    hex!("4699bcd89faabbc9dded3e3c5b1b1a1538a162af0fb1b4506904ae7453931026");
const SHA256_QM_HASH2: [u8; 32] =
    hex!("e7e1e25265a2498afde36efa7a662dd73c9a3193204e9d5714819d92c8b85e07");
const SHA256_QM_HASH3: [u8; 32] =
    hex!("71a1bfe0b1797526e5cc44433d31307928150ca5ad2efe1c860a15dbf014626a");
const SHA256_CT: [u8; 48] = hex!(
    "9fdd4b930198dca0c10161344f7fd5453d1fbfdd4b2d1010c63031543b9bf9737fcd933da7d6b3e5e2b2a1f5b465d4ec"
);

struct Kat {
    prf: Prf,
    skeyid: &'static [u8],
    d: &'static [u8],
    a: &'static [u8],
    e: &'static [u8],
    enc256: &'static [u8],
    hash_i: &'static [u8],
    hash_r: &'static [u8],
    iv1: &'static [u8],
    iv2: &'static [u8],
    keymat_96: &'static [u8],
    keymat_pfs_36: &'static [u8],
    qm1: &'static [u8],
    qm2: &'static [u8],
    qm3: &'static [u8],
    ct: &'static [u8],
}

const KATS: [Kat; 2] = [
    Kat {
        prf: Prf::HmacSha1,
        skeyid: &SHA1_SKEYID,
        d: &SHA1_SKEYID_D,
        a: &SHA1_SKEYID_A,
        e: &SHA1_SKEYID_E,
        enc256: &SHA1_ENC_KEY_256,
        hash_i: &SHA1_HASH_I,
        hash_r: &SHA1_HASH_R,
        iv1: &SHA1_IV1,
        iv2: &SHA1_IV2,
        keymat_96: &SHA1_KEYMAT_96,
        keymat_pfs_36: &SHA1_KEYMAT_PFS_36,
        qm1: &SHA1_QM_HASH1,
        qm2: &SHA1_QM_HASH2,
        qm3: &SHA1_QM_HASH3,
        ct: &SHA1_CT,
    },
    Kat {
        prf: Prf::HmacSha256,
        skeyid: &SHA256_SKEYID,
        d: &SHA256_SKEYID_D,
        a: &SHA256_SKEYID_A,
        e: &SHA256_SKEYID_E,
        enc256: &SHA256_ENC_KEY_256,
        hash_i: &SHA256_HASH_I,
        hash_r: &SHA256_HASH_R,
        iv1: &SHA256_IV1,
        iv2: &SHA256_IV2,
        keymat_96: &SHA256_KEYMAT_96,
        keymat_pfs_36: &SHA256_KEYMAT_PFS_36,
        qm1: &SHA256_QM_HASH1,
        qm2: &SHA256_QM_HASH2,
        qm3: &SHA256_QM_HASH3,
        ct: &SHA256_CT,
    },
];

/// RFC 2409 § 5: SKEYID for pre-shared keys and its three children;
/// Appendix B: the encryption key (SHA-1's 20 bytes expanded to AES-256's
/// 32, SHA-256's taken as they are) and the IVs; HASH_I / HASH_R.
#[test]
fn phase1_key_schedule_known_answers() {
    for k in &KATS {
        let skeyid = skeyid_psk(k.prf, PSK, &ni(), &nr());
        assert_eq!(skeyid.as_slice(), k.skeyid, "{:?}", k.prf);
        let keys = phase1_keys(k.prf, skeyid, &g_xy(), CKY_I, CKY_R, 32);
        assert_eq!(keys.skeyid_d.as_slice(), k.d);
        assert_eq!(keys.skeyid_a.as_slice(), k.a);
        assert_eq!(keys.skeyid_e.as_slice(), k.e);
        assert_eq!(keys.enc_key.as_slice(), k.enc256, "{:?}", k.prf);
        let h_i = main_mode_hash(
            k.prf,
            k.skeyid,
            &ke_i(),
            &ke_r(),
            CKY_I,
            CKY_R,
            &SAI_B,
            &IDII_B,
        );
        assert_eq!(h_i.as_slice(), k.hash_i);
        let h_r = main_mode_hash(
            k.prf,
            k.skeyid,
            &ke_r(),
            &ke_i(),
            CKY_R,
            CKY_I,
            &SAI_B,
            &IDII_B,
        );
        assert_eq!(h_r.as_slice(), k.hash_r);
        assert_eq!(phase1_iv(k.prf, &ke_i(), &ke_r()).as_slice(), k.iv1);
        let last: [u8; 16] = pattern(16, |i| 100 + i).try_into().unwrap();
        assert_eq!(phase2_iv(k.prf, &last, MID).as_slice(), k.iv2);
    }
}

/// RFC 2409 § 5.5: KEYMAT over several PRF blocks (AES-256-CBC with
/// HMAC-SHA2-512: 96 bytes) and with PFS (AES-256-GCM + salt: 36 bytes);
/// HASH(1), HASH(2), HASH(3).
#[test]
fn quick_mode_known_answers() {
    for k in &KATS {
        let km = keymat(k.prf, k.d, None, 3, SPI, &ni(), &nr(), 96);
        assert_eq!(km.as_slice(), k.keymat_96, "{:?}", k.prf);
        let km = keymat(k.prf, k.d, Some(&g_qm()), 3, SPI, &ni(), &nr(), 36);
        assert_eq!(km.as_slice(), k.keymat_pfs_36, "{:?}", k.prf);
        assert_eq!(qm_hash(k.prf, k.a, MID, None, &REST), k.qm1);
        assert_eq!(qm_hash(k.prf, k.a, MID, Some(&ni()), &REST), k.qm2);
        assert_eq!(qm_hash3(k.prf, k.a, MID, &ni(), &nr()), k.qm3);
    }
}

/// Appendix B: AES-CBC under the phase 1 key and IV, padded with zeros
/// and the pad count in the last byte; decrypting gives the padded
/// plaintext back.
#[test]
fn phase1_encryption_known_answer() {
    for k in &KATS {
        let c = Phase1Cipher::new(Zeroizing::new(k.enc256.to_vec()));
        let iv: [u8; 16] = k.iv1.try_into().unwrap();
        let plain: Vec<u8> = (0..40).collect();
        let ct = c.encrypt(&iv, &plain).unwrap();
        assert_eq!(ct, k.ct, "{:?}", k.prf);
        let back = c.decrypt(&iv, &ct).unwrap();
        assert_eq!(&back[..40], plain.as_slice());
        assert_eq!(back[47], 7);
        assert!(c.decrypt(&iv, &ct[..47]).is_err());
        assert!(c.decrypt(&iv, &[]).is_err());
    }
}

// ---- codec ----

/// Main Mode message 1 as strongSwan 5.9.8 sends it (one AES-128 /
/// SHA2-256 / PSK / MODP-2048 transform, the NAT-T and DPD vendor IDs),
/// with cookies and attribute values of our choosing.
fn mm1_bytes() -> Vec<u8> {
    let mut v = hex!(
        "0102030405060708 0000000000000000 01 10 02 00 00000000 00000000"
        // SA: next VID, len 60; DOI 1, SIT 1
        "0d00003c 00000001 00000001"
        // Proposal: last, len 48; #1 ISAKMP, SPI size 0, 1 transform
        "00000030 01010001"
        // Transform: last, len 40; #1 KEY_IKE
        "00000028 01010000"
        "800100 07 800e0080 80020004 80030001 80040 00e 800b0001 000c0004 00007080"
        // VID NAT-T, then VID DPD
        "0d000014 4a131c81070358455c5728f20e95452f"
        "00000014 afcad71368a1f1c96b8696fc77570100"
    )
    .to_vec();
    let len = u32::try_from(v.len()).unwrap();
    v[24..28].copy_from_slice(&len.to_be_bytes());
    v
}

#[test]
fn mm1_fixture_parses_and_reemits() {
    let b = mm1_bytes();
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.header.cky_i, CKY_I);
    assert_eq!(
        m.header.exchange,
        super::wire::ExchangeType::IdentityProtection
    );
    let Body::Plain(c) = &m.body else { panic!() };
    assert_eq!(c.payloads.len(), 3);
    let Payload::Sa(sa) = &c.payloads[0] else {
        panic!()
    };
    let t = &sa.proposals[0].transforms[0];
    assert_eq!(t.attr(1), Some(7));
    assert_eq!(t.attr(14), Some(128));
    assert_eq!(t.attr(2), Some(4));
    assert_eq!(t.attr(4), Some(14));
    // Life Duration as a TLV of 4 bytes.
    assert_eq!(t.attributes[5], Attribute::Basic(11, 1));
    assert_eq!(
        t.attributes[6],
        Attribute::Variable(12, vec![0, 0, 0x70, 0x80])
    );
    assert_eq!(t.attr(12), Some(28800));
    assert_eq!(
        c.payloads[1],
        Payload::Vendor(super::sa::VID_NAT_T.to_vec())
    );
    assert_eq!(c.payloads[2], Payload::Vendor(super::sa::VID_DPD.to_vec()));
    assert_eq!(m.emit(), b);
    // Every truncation is an error, never a panic.
    for n in 0..b.len() {
        assert!(Message::parse(&b[..n]).is_err(), "{n}");
    }
}

#[test]
fn bad_lengths_are_errors() {
    let mut b = mm1_bytes();
    // Proposal length past the SA body.
    b[28 + 12 + 3] = 0xff;
    assert!(Message::parse(&b).is_err());
    let mut b = mm1_bytes();
    // Transform count says 2, one present.
    b[28 + 12 + 7] = 2;
    assert!(Message::parse(&b).is_err());
    let mut b = mm1_bytes();
    // Major version 2 is IKEv2's.
    b[17] = 0x20;
    assert!(matches!(
        Message::parse(&b),
        Err(super::wire::WireError::Version(2))
    ));
    // A generic header shorter than itself.
    assert!(parse_chain(PayloadType::Nonce, &hex!("00000003")).is_err());
    // Delete with 2 SPIs of 4 bytes but 5 bytes of SPI data.
    assert!(
        parse_chain(
            PayloadType::Delete,
            &hex!("00000015 00000001 03 04 0002 0102030405")
        )
        .is_err()
    );
}

fn arb_attr() -> impl Strategy<Value = Attribute> {
    prop_oneof![
        (0u16..0x7fff, any::<u16>()).prop_map(|(k, v)| Attribute::Basic(k, v)),
        (0u16..0x7fff, proptest::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(k, v)| Attribute::Variable(k, v)),
    ]
}

fn arb_payload() -> impl Strategy<Value = Payload> {
    use super::wire::{Delete, Id, Notify, Proposal, ProtocolId, Sa, Transform};
    let bytes = || proptest::collection::vec(any::<u8>(), 0..40);
    let transform = (
        any::<u8>(),
        any::<u8>(),
        proptest::collection::vec(arb_attr(), 0..5),
    )
        .prop_map(|(number, id, attributes)| Transform {
            number,
            id,
            attributes,
        });
    let proposal = (
        any::<u8>(),
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..17),
        proptest::collection::vec(transform, 0..4),
    )
        .prop_map(|(number, p, spi, transforms)| Proposal {
            number,
            protocol: ProtocolId::from(p),
            spi,
            transforms,
        });
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(proposal, 0..3)
        )
            .prop_map(|(doi, situation, proposals)| Payload::Sa(Sa {
                doi,
                situation,
                proposals
            })),
        bytes().prop_map(Payload::Ke),
        bytes().prop_map(Payload::Nonce),
        bytes().prop_map(Payload::Hash),
        bytes().prop_map(Payload::Vendor),
        bytes().prop_map(|b| Payload::NatD(PayloadType::NatD, b)),
        (any::<u8>(), any::<u8>(), any::<u16>(), bytes()).prop_map(|(t, p, port, data)| {
            Payload::Id(Id {
                id_type: t.into(),
                protocol: p,
                port,
                data,
            })
        }),
        (
            any::<u32>(),
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..17),
            any::<u16>(),
            bytes()
        )
            .prop_map(|(doi, p, spi, k, data)| Payload::Notify(Notify {
                doi,
                protocol: ProtocolId::from(p),
                spi,
                kind: k.into(),
                data
            })),
        (any::<u32>(), any::<u8>(), 1usize..17, 0usize..4).prop_map(|(doi, p, n, k)| {
            Payload::Delete(Delete {
                doi,
                protocol: ProtocolId::from(p),
                spis: (0..k).map(|i| vec![u8::try_from(i).unwrap(); n]).collect(),
            })
        }),
    ]
}

proptest! {
    /// parse(emit(x)) == x for whole messages.
    #[test]
    fn message_round_trip(
        payloads in proptest::collection::vec(arb_payload(), 0..6),
        cky_i in any::<u64>(),
        mid in any::<u32>(),
    ) {
        let h = Header {
            cky_i,
            cky_r: 7,
            next: PayloadType::None,
            version: super::wire::VERSION,
            exchange: super::wire::ExchangeType::QuickMode,
            flags: 0,
            message_id: mid,
            length: 0,
        };
        let b = Message::emit_plain(&h, &payloads);
        let m = Message::parse(&b).unwrap();
        let Body::Plain(c) = &m.body else { panic!() };
        prop_assert_eq!(&c.payloads, &payloads);
        prop_assert_eq!(m.emit(), b);
    }

    /// Arbitrary bytes never panic the parsers.
    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Message::parse(&b);
        let _ = Header::parse(&mut Reader::new(&b));
        for first in [PayloadType::Sa, PayloadType::Id, PayloadType::Notify, PayloadType::Delete, PayloadType::NatOa, PayloadType::Hash] {
            let _ = parse_chain(first, &b);
        }
    }
}

// ---- two peers ----

const US: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

fn config(local: IpAddr, remote: IpAddr, psk: &str, pfs: bool) -> IkeConfig {
    let opts = TunnelOptions {
        pre_shared_key: Some(PreSharedKey::new(psk.to_owned()).unwrap()),
        phase1_encryption_algorithms: vec![EncryptionAlgorithm::Aes256],
        phase2_encryption_algorithms: vec![
            EncryptionAlgorithm::Aes256Gcm16,
            EncryptionAlgorithm::Aes128,
        ],
        phase1_integrity_algorithms: vec![IntegrityAlgorithm::Sha2_256],
        phase2_integrity_algorithms: vec![IntegrityAlgorithm::Sha2_256],
        phase1_dh_groups: vec![DhGroup::Ecp256],
        phase2_dh_groups: if pfs { vec![DhGroup::Ecp256] } else { vec![] },
        ..TunnelOptions::default()
    };
    let any = vec!["0.0.0.0/0".parse().unwrap()];
    let mut c = IkeConfig::from_tunnel(&opts, local, remote, any.clone(), any);
    c.dpd_timeout = Duration::from_secs(10);
    c
}

/// Initiator ↔ responder on a virtual wire. With `nat`, the initiator's
/// datagrams reach the responder from 198.51.100.9 (ports mapped), and
/// the responder's answers to that address reach the initiator.
struct Pair {
    now: Instant,
    rng: TestRng,
    i: Ikev1Sa,
    r: Option<Ikev1Sa>,
    r_cfg: IkeConfig,
    nat: bool,
    /// Drop the n-th datagram (0-based, either direction).
    drop: Option<usize>,
    sent: usize,
    i_events: Vec<Event>,
    r_events: Vec<Event>,
}

const NAT_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));

impl Pair {
    fn new(pfs: bool, nat: bool, psk_r: &str) -> Self {
        let now = Instant::now();
        let mut rng = TestRng::new(7);
        let i = Ikev1Sa::initiate(config(US, PEER, "pairpsk.123456789", pfs), now, &mut rng);
        Self {
            now,
            rng,
            i,
            r: None,
            r_cfg: config(PEER, US, psk_r, pfs),
            nat,
            drop: None,
            sent: 0,
            i_events: Vec::new(),
            r_events: Vec::new(),
        }
    }

    fn deliver_to_r(&mut self, t: Transmit) {
        let remote = if self.nat {
            SocketAddr::new(NAT_ADDR, t.local.port() + 10_000)
        } else {
            t.local
        };
        let d = Datagram {
            local: t.remote,
            remote,
            payload: &t.payload,
        };
        match &mut self.r {
            Some(r) => r.handle_datagram(self.now, &mut self.rng, d),
            None => {
                let mut cfg = self.r_cfg.clone();
                if self.nat {
                    cfg.remote = NAT_ADDR;
                }
                self.r = Ikev1Sa::accept(cfg, self.now, &mut self.rng, d).ok();
            }
        }
    }

    fn deliver_to_i(&mut self, t: Transmit) {
        let local = if self.nat {
            SocketAddr::new(US, t.remote.port() - 10_000)
        } else {
            t.remote
        };
        let d = Datagram {
            local,
            remote: t.local,
            payload: &t.payload,
        };
        self.i.handle_datagram(self.now, &mut self.rng, d);
    }

    fn deliver(&mut self) -> bool {
        let mut busy = false;
        while let Some(t) = self.i.poll_transmit() {
            busy = true;
            self.sent += 1;
            if self.drop != Some(self.sent - 1) {
                self.deliver_to_r(t);
            }
        }
        if let Some(r) = &mut self.r {
            let mut out = Vec::new();
            while let Some(t) = r.poll_transmit() {
                out.push(t);
            }
            for t in out {
                busy = true;
                self.sent += 1;
                if self.drop != Some(self.sent - 1) {
                    self.deliver_to_i(t);
                }
            }
        }
        while let Some(e) = self.i.poll_event() {
            self.i_events.push(e);
        }
        if let Some(r) = &mut self.r {
            while let Some(e) = r.poll_event() {
                self.r_events.push(e);
            }
        }
        busy
    }

    /// Runs until quiet, then advances virtual time to the next timer,
    /// for `limit` of virtual time.
    fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        while self.now < end {
            while self.deliver() {}
            let next = [
                self.i.poll_timeout(),
                self.r.as_ref().and_then(Ikev1Sa::poll_timeout),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(t) = next.filter(|t| *t <= end) else {
                break;
            };
            self.now = self.now.max(t);
            self.i.handle_timeout(self.now, &mut self.rng);
            if let Some(r) = &mut self.r {
                r.handle_timeout(self.now, &mut self.rng);
            }
        }
    }

    fn children(ev: &[Event]) -> Vec<&crate::ike::sa::ChildSa> {
        ev.iter()
            .filter_map(|e| match e {
                Event::ChildSaUp(c) => Some(&**c),
                _ => None,
            })
            .collect()
    }
}

fn check_up(p: &Pair, nat: bool) {
    let (ci, cr) = (Pair::children(&p.i_events), Pair::children(&p.r_events));
    assert_eq!(ci.len(), 1, "{:?}", p.i_events);
    assert_eq!(cr.len(), 1, "{:?}", p.r_events);
    let (a, b) = (ci[0], cr[0]);
    assert_eq!(a.outbound.spi, b.inbound.spi);
    assert_eq!(a.inbound.spi, b.outbound.spi);
    assert_eq!(*a.outbound.enc_key, *b.inbound.enc_key);
    assert_eq!(*a.inbound.enc_key, *b.outbound.enc_key);
    assert_eq!(*a.outbound.auth_key, *b.inbound.auth_key);
    assert_ne!(*a.outbound.enc_key, *a.inbound.enc_key);
    assert_eq!(a.nat_t, nat);
    assert_eq!(b.nat_t, nat);
    // AES-256-GCM first in both lists: 32-byte key + 4-byte salt.
    assert_eq!(a.outbound.enc_key.len(), 36);
    if nat {
        assert_eq!(a.remote.port(), 4500);
        assert_eq!(b.remote, SocketAddr::new(NAT_ADDR, 14500));
    }
}

#[test]
fn main_mode_and_quick_mode_between_two_peers() {
    for (pfs, nat) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut p = Pair::new(pfs, nat, "pairpsk.123456789");
        p.run(Duration::from_secs(5));
        assert!(p.i.is_established() && p.r.as_ref().unwrap().is_established());
        check_up(&p, nat);
        let c = Pair::children(&p.i_events)[0];
        assert_eq!(c.suite.dh, pfs.then_some(19));
        // Our DELETE reaches the peer: both sides down.
        p.i.close(&mut p.rng);
        p.run(Duration::from_secs(1));
        assert!(p.r.as_ref().unwrap().is_closed());
        assert!(
            p.r_events
                .iter()
                .any(|e| matches!(e, Event::ChildSaDown { .. }))
        );
        assert!(p.r_events.iter().any(|e| matches!(
            e,
            Event::IkeSaDown {
                reason: DownReason::DeletedByPeer
            }
        )));
    }
}

/// Each of the 9 messages of Main Mode + Quick Mode lost once: the
/// sender's retransmission (or the responder's cached answer to the
/// retransmitted request) completes the exchange.
#[test]
fn every_lost_message_is_recovered() {
    for n in 0..9 {
        let mut p = Pair::new(true, true, "pairpsk.123456789");
        p.drop = Some(n);
        p.run(Duration::from_secs(20));
        eprintln!("lost message {n}");
        check_up(&p, true);
    }
}

#[test]
fn wrong_psk_fails_on_both_sides() {
    let mut p = Pair::new(false, false, "another.psk.123456789");
    p.run(Duration::from_secs(60));
    assert!(!p.i.is_established());
    assert!(p.r_events.iter().any(|e| matches!(
        e,
        Event::Log(l) if l == "AWS tunnel payload decryption failed due to invalid pre-shared key"
    )));
    assert!(p.r_events.iter().any(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::AuthenticationFailed
        }
    )));
    // The initiator gives up after its retransmissions.
    assert!(p.i.is_closed());
}

/// DPD: a silent peer is probed after the DPD timeout and declared dead
/// one timeout later; a live one answers every probe.
#[test]
fn dpd_probes_and_declares_dead() {
    let mut p = Pair::new(false, false, "pairpsk.123456789");
    p.run(Duration::from_secs(1));
    check_up(&p, false);
    p.run(Duration::from_secs(60));
    assert!(p.i.is_established(), "{:?}", p.i_events);
    // The responder goes away.
    p.r = None;
    p.r_cfg.psk = Zeroizing::new(b"gone".to_vec());
    let t0 = p.now;
    p.run(Duration::from_secs(60));
    assert!(p.i_events.iter().any(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::DpdTimeout
        }
    )));
    assert!(p.now - t0 <= Duration::from_secs(21), "{:?}", p.now - t0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary datagrams at an endpoint (the fuzz target's odd path)
    /// and, with an established SA's cookies and any exchange type and
    /// flags, at that SA: no panic, and the SA stays up.
    #[test]
    fn arbitrary_datagrams_never_panic_the_engine(
        body in proptest::collection::vec(any::<u8>(), 0..200),
        exchange in prop_oneof![Just(2u8), Just(4), Just(5), Just(32), any::<u8>()],
        flags in any::<u8>(),
        mid in any::<u32>(),
        first in any::<u8>(),
        on_4500 in any::<bool>(),
    ) {
        let port = if on_4500 { 4500 } else { 500 };
        let mut ep = super::endpoint::Endpoint::new();
        ep.add_tunnel(config(US, PEER, "pairpsk.123456789", false));
        let mut rng = TestRng::new(3);
        let now = Instant::now();
        ep.handle_datagram(now, &mut rng, Datagram {
            local: SocketAddr::new(US, port),
            remote: SocketAddr::new(PEER, port),
            payload: &body,
        });
        while ep.poll_transmit().is_some() {}

        let mut p = Pair::new(false, true, "pairpsk.123456789");
        p.run(Duration::from_secs(1));
        let r = p.r.as_mut().unwrap();
        prop_assert!(r.is_established());
        let h = Header {
            cky_i: r.cky_i(),
            cky_r: r.cky_r(),
            next: PayloadType::from(first),
            version: super::wire::VERSION,
            exchange: exchange.into(),
            flags,
            message_id: mid,
            length: u32::try_from(28 + body.len()).unwrap(),
        };
        let mut msg = vec![0, 0, 0, 0];
        h.emit(&mut msg);
        msg.extend_from_slice(&body);
        r.handle_datagram(p.now, &mut p.rng, Datagram {
            local: SocketAddr::new(PEER, 4500),
            remote: SocketAddr::new(NAT_ADDR, 14500),
            payload: &msg,
        });
        prop_assert!(r.is_established());
    }
}

/// RFC 2407 § 4.6.3.3 / RFC 2409: the lifetime the responder keeps is
/// the smaller of the proposed (SA Life Duration attribute) and its own;
/// at expiry it deletes the IPsec SA and tells the initiator.
#[test]
fn proposed_lifetime_is_kept_and_enforced() {
    let mut p = Pair::new(false, false, "pairpsk.123456789");
    let mut cfg = config(US, PEER, "pairpsk.123456789", false);
    cfg.phase2_lifetime = Duration::from_secs(10);
    // Expiry alone: neither side rekeys.
    cfg.rekey_margin = Duration::ZERO;
    p.r_cfg.rekey_margin = Duration::ZERO;
    p.i = Ikev1Sa::initiate(cfg, p.now, &mut p.rng);
    p.run(Duration::from_secs(1));
    check_up(&p, false);
    let r_child = Pair::children(&p.r_events)[0];
    assert_eq!(r_child.lifetime, Duration::from_secs(10));
    let (r_in, r_out) = (r_child.inbound.spi, r_child.outbound.spi);
    let t0 = p.now;
    p.run(Duration::from_secs(12));
    let down = |ev: &[Event], i: u32, o: u32| {
        ev.iter().any(|e| {
            matches!(e, Event::ChildSaDown { inbound_spi, outbound_spi }
                if *inbound_spi == i && *outbound_spi == o)
        })
    };
    assert!(down(&p.r_events, r_in, r_out), "{:?}", p.r_events);
    // Whichever side's timer fires first, both end without the SA.
    assert!(down(&p.i_events, r_out, r_in), "{:?}", p.i_events);
    assert!(p.now - t0 <= Duration::from_secs(11));
    assert!(p.i.is_established());
}

/// Phase 2 rekey by us: `rekey_margin` before the IPsec SA expires the
/// SA starts a Quick Mode, the peer answers, both hold the successor
/// (same keys), and the rekeyed SA is deleted [`REKEYED_GRACE`] after the
/// successor is up, on both sides, well before it would have expired.
///
/// [`REKEYED_GRACE`]: super::sa::REKEYED_GRACE
#[test]
fn phase2_rekey_before_expiry_retires_the_old_sa() {
    let mut p = Pair::new(true, true, "pairpsk.123456789");
    let mut cfg = config(US, PEER, "pairpsk.123456789", true);
    cfg.phase2_lifetime = Duration::from_secs(60);
    cfg.rekey_margin = Duration::from_secs(10);
    p.i = Ikev1Sa::initiate(cfg, p.now, &mut p.rng);
    // Only we rekey here.
    p.r_cfg.rekey_margin = Duration::ZERO;
    p.run(Duration::from_secs(1));
    check_up(&p, true);
    let (old_in, old_out) = {
        let c = Pair::children(&p.i_events)[0];
        (c.inbound.spi, c.outbound.spi)
    };
    let down = |ev: &[Event], i: u32| {
        ev.iter()
            .any(|e| matches!(e, Event::ChildSaDown { inbound_spi, .. } if *inbound_spi == i))
    };
    // Virtual time up to `t` (run stops at the last timer before it).
    let until = |p: &mut Pair, t: Instant| {
        p.run(t.saturating_duration_since(p.now));
        p.now = p.now.max(t);
    };
    let t0 = p.now;
    until(&mut p, t0 + Duration::from_secs(48));
    assert_eq!(
        Pair::children(&p.i_events).len(),
        1,
        "not yet: {:?}",
        p.i_events
    );
    until(&mut p, t0 + Duration::from_secs(51));
    let (ci, cr) = (Pair::children(&p.i_events), Pair::children(&p.r_events));
    assert_eq!((ci.len(), cr.len()), (2, 2), "{:?}", p.i_events);
    let (a, b) = (ci[1], cr[1]);
    assert!(a.initiator && !b.initiator);
    // We receive with the successor at once and send with it a moment
    // later (the peer installs it on message 3).
    assert!(a.outbound_deferred && !b.outbound_deferred);
    assert_eq!(
        (a.outbound.spi, a.inbound.spi),
        (b.inbound.spi, b.outbound.spi)
    );
    assert_eq!(*a.outbound.enc_key, *b.inbound.enc_key);
    assert_ne!(a.inbound.spi, old_in);
    // Both still hold the old SA: make before break.
    assert!(!down(&p.i_events, old_in) && !down(&p.r_events, old_out));
    let (new_a, new_b) = (a.inbound.spi, b.inbound.spi);
    until(&mut p, t0 + Duration::from_secs(57));
    assert!(
        p.i_events.iter().any(|e| matches!(e,
            Event::ChildSaOutbound { inbound_spi, .. } if *inbound_spi == new_a)),
        "{:?}",
        p.i_events
    );
    assert!(down(&p.i_events, old_in), "{:?}", p.i_events);
    assert!(down(&p.r_events, old_out), "{:?}", p.r_events);
    assert!(!down(&p.i_events, new_a) && !down(&p.r_events, new_b));
    assert!(p.i.is_established() && p.r.as_ref().unwrap().is_established());
}

/// A second Main Mode from the same peer with INITIAL-CONTACT replaces
/// the first ISAKMP SA and its IPsec SA at the endpoint.
#[test]
fn initial_contact_replaces_older_sas() {
    let mut ep = super::endpoint::Endpoint::new();
    ep.add_tunnel(config(PEER, US, "pairpsk.123456789", false));
    let mut rng = TestRng::new(11);
    let now = Instant::now();
    let mut events = Vec::new();
    for round in 0..2 {
        let mut i = Ikev1Sa::initiate(config(US, PEER, "pairpsk.123456789", false), now, &mut rng);
        for _ in 0..10 {
            while let Some(t) = i.poll_transmit() {
                ep.handle_datagram(
                    now,
                    &mut rng,
                    Datagram {
                        local: t.remote,
                        remote: t.local,
                        payload: &t.payload,
                    },
                );
            }
            while let Some(t) = ep.poll_transmit() {
                i.handle_datagram(
                    now,
                    &mut rng,
                    Datagram {
                        local: t.remote,
                        remote: t.local,
                        payload: &t.payload,
                    },
                );
            }
        }
        while let Some((_, e)) = ep.poll_event() {
            events.push((round, e));
        }
        assert!(i.is_established(), "round {round}");
    }
    let ups = events
        .iter()
        .filter(|(_, e)| matches!(e, Event::ChildSaUp(_)))
        .count();
    assert_eq!(ups, 2);
    assert!(events.iter().any(|(r, e)| *r == 1
        && matches!(
            e,
            Event::IkeSaDown {
                reason: DownReason::Replaced
            }
        )));
    assert!(
        events
            .iter()
            .any(|(r, e)| *r == 1 && matches!(e, Event::ChildSaDown { .. }))
    );
}

/// A retransmitted Main Mode message 1 gets the same message 2 from the
/// SA it created (same responder cookie), not a second SA.
#[test]
fn retransmitted_mm1_is_answered_from_the_cache() {
    let mut ep = super::endpoint::Endpoint::new();
    ep.add_tunnel(config(PEER, US, "pairpsk.123456789", false));
    let mut rng = TestRng::new(5);
    let now = Instant::now();
    let mut i = Ikev1Sa::initiate(config(US, PEER, "pairpsk.123456789", false), now, &mut rng);
    let mm1 = i.poll_transmit().unwrap();
    let d = Datagram {
        local: mm1.remote,
        remote: mm1.local,
        payload: &mm1.payload,
    };
    ep.handle_datagram(now, &mut rng, d);
    let first = ep.poll_transmit().unwrap();
    ep.handle_datagram(now, &mut rng, d);
    let again = ep.poll_transmit().unwrap();
    assert_eq!(first, again);
    assert!(ep.poll_transmit().is_none());
}

/// A replayed protected Informational (the peer's DELETE of an IPsec
/// SA, delivered twice) is dropped by its Message ID.
#[test]
fn replayed_informational_is_dropped() {
    let mut p = Pair::new(false, false, "pairpsk.123456789");
    p.run(Duration::from_secs(1));
    check_up(&p, false);
    // Some DPD traffic both ways first (Message IDs remembered).
    p.run(Duration::from_secs(25));
    assert!(p.i.is_established());
    let before = p.i_events.len();
    // The responder deletes: an ESP DELETE, then the ISAKMP DELETE.
    let r = p.r.as_mut().unwrap();
    r.close(&mut p.rng);
    let mut sent = Vec::new();
    while let Some(t) = r.poll_transmit() {
        sent.push(t);
    }
    let (first_delete, isakmp_delete) = (sent[0].clone(), sent[1].clone());
    p.deliver_to_i(first_delete.clone());
    let downs = |ev: &[Event]| {
        ev.iter()
            .filter(|e| matches!(e, Event::ChildSaDown { .. }))
            .count()
    };
    while let Some(e) = p.i.poll_event() {
        p.i_events.push(e);
    }
    assert_eq!(downs(&p.i_events[before..]), 1);
    p.deliver_to_i(first_delete);
    while let Some(e) = p.i.poll_event() {
        p.i_events.push(e);
    }
    assert!(
        p.i_events
            .iter()
            .any(|e| matches!(e, Event::Log(l) if l == "dropped a replayed Informational"))
    );
    assert!(p.i.is_established());
    p.deliver_to_i(isakmp_delete);
    assert!(p.i.is_closed());
}
