//! Known-answer tests and cross-checks of the intel-ipsec-mb binding.
//!
//! * AES-GCM: test cases 2–4 and 14–16 of McGrew & Viega, "The
//!   Galois/Counter Mode of Operation (GCM)", Appendix B (the vectors
//!   RFC 4106 § 6 points to), through the direct API and the job API.
//! * HMAC: RFC 2202 § 3 (SHA-1) and RFC 4231 § 4.2/4.3 (SHA-2) test cases.
//! * AES-CBC: RFC 3602 § 4 cases 1 and 2.
//! * proptest: ipsec-mb against `ring` (GCM, HMAC) and `aws-lc-rs` (CBC)
//!   on random keys, lengths (0 and odd included), AAD of 8/12 bytes, in
//!   mixed bursts through the job API.

#![allow(
    clippy::cast_possible_truncation,
    reason = "test patterns wrap on purpose"
)]

use aws_lc_rs::cipher::{AES_128, AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use hex_literal::hex;
use ipsec_mb::{CbcHmacJob, CbcHmacKey, Error, GcmJob, GcmKey, HashAlg, Manager};
use proptest::prelude::*;
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

fn mgr() -> Manager {
    Manager::new().expect("intel-ipsec-mb manager (AES-NI CPU)")
}

const P: [u8; 64] = hex!(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
);
const A: [u8; 20] = hex!("feedfacedeadbeeffeedfacedeadbeefabaddad2");
const K: [u8; 16] = hex!("feffe9928665731c6d6a8f9467308308");
const IV: [u8; 12] = hex!("cafebabefacedbaddecaf888");

fn gcm_check(m: &mut Manager, key: &[u8], iv: &[u8; 12], aad: &[u8], p: &[u8], c: &[u8], t: &[u8]) {
    let k = GcmKey::new(&m.direct(), key).unwrap();
    // Direct API.
    let mut buf = p.to_vec();
    let tag = k.seal(iv, aad, &mut buf);
    assert_eq!(buf, c, "direct seal ciphertext");
    assert_eq!(tag, t, "direct seal tag");
    k.open(iv, aad, &mut buf, &tag).unwrap();
    assert_eq!(buf, p, "direct open");
    // Job API, with the data at an offset.
    let mut buf = [&[0xAAu8; 5][..], p].concat();
    let mut jobs = [GcmJob {
        key: &k,
        iv: *iv,
        aad,
        buf: &mut buf,
        offset: 5,
        len: p.len(),
        tag: [0; 16],
        open: false,
        result: Err(Error::BadLength),
    }];
    m.run_gcm(&mut jobs);
    jobs[0].result.unwrap();
    assert_eq!(jobs[0].tag, t, "job seal tag");
    let tag = jobs[0].tag;
    assert_eq!(&buf[5..], c, "job seal ciphertext");
    assert_eq!(&buf[..5], &[0xAA; 5], "bytes before the offset untouched");
    let mut jobs = [GcmJob {
        key: &k,
        iv: *iv,
        aad,
        buf: &mut buf,
        offset: 5,
        len: p.len(),
        tag,
        open: true,
        result: Err(Error::BadLength),
    }];
    m.run_gcm(&mut jobs);
    jobs[0].result.unwrap();
    assert_eq!(&buf[5..], p, "job open");
}

#[test]
fn gcm_spec_test_cases_2_3_4() {
    let mut m = mgr();
    gcm_check(
        &mut m,
        &[0; 16],
        &[0; 12],
        &[],
        &[0; 16],
        &hex!("0388dace60b6a392f328c2b971b2fe78"),
        &hex!("ab6e47d42cec13bdf53a67b21257bddf"),
    );
    gcm_check(
        &mut m,
        &K,
        &IV,
        &[],
        &P,
        &hex!(
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
            "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
        ),
        &hex!("4d5c2af327cd64a62cf35abd2ba6fab4"),
    );
    gcm_check(
        &mut m,
        &K,
        &IV,
        &A,
        &P[..60],
        &hex!(
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
            "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"
        ),
        &hex!("5bc94fbc3221a5db94fae95ae7121a47"),
    );
}

#[test]
fn gcm_spec_test_cases_14_15_16() {
    let mut m = mgr();
    let k256 = [K, K].concat();
    gcm_check(
        &mut m,
        &[0; 32],
        &[0; 12],
        &[],
        &[0; 16],
        &hex!("cea7403d4d606b6e074ec5d3baf39d18"),
        &hex!("d0d1c8a799996bf0265b98b5d48ab919"),
    );
    gcm_check(
        &mut m,
        &k256,
        &IV,
        &[],
        &P,
        &hex!(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
            "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
        ),
        &hex!("b094dac5d93471bdec1a502270e3cc6c"),
    );
    gcm_check(
        &mut m,
        &k256,
        &IV,
        &A,
        &P[..60],
        &hex!(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
            "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
        ),
        &hex!("76fc6ece0f4e1768cddf8853bb2d551b"),
    );
}

#[test]
fn gcm_bad_tag_fails_and_restores_ciphertext() {
    let mut m = mgr();
    let k = GcmKey::new(&m.direct(), &K).unwrap();
    let mut buf = P.to_vec();
    let mut tag = k.seal(&IV, &A, &mut buf);
    let ct = buf.clone();
    tag[15] ^= 1;
    assert_eq!(k.open(&IV, &A, &mut buf, &tag), Err(Error::AuthFailed));
    assert_eq!(buf, ct, "ciphertext restored after a failed open");
    tag[15] ^= 1;
    buf[3] ^= 0x80;
    assert_eq!(k.open(&IV, &A, &mut buf, &tag), Err(Error::AuthFailed));
    // Through the job API too.
    let mut jobs = [GcmJob {
        key: &k,
        iv: IV,
        aad: &A,
        buf: &mut buf,
        offset: 0,
        len: 64,
        tag,
        open: true,
        result: Ok(()),
    }];
    m.run_gcm(&mut jobs);
    assert_eq!(jobs[0].result, Err(Error::AuthFailed));
    assert!(matches!(
        GcmKey::new(&m.direct(), &[0; 24]),
        Err(Error::BadKeyLength)
    ));
}

#[test]
fn manager_reports_an_arch() {
    let m = mgr();
    // This project's machines have at least AVX2 (Zen 3) or AVX-512.
    eprintln!("intel-ipsec-mb {} arch {}", Manager::version(), m.arch());
    assert!(Manager::version().starts_with("1."));
}

fn hmac_only(m: &mut Manager, hash: HashAlg, key: &[u8], data: &[u8]) -> Vec<u8> {
    let k = CbcHmacKey::new(&m.direct(), &[0; 16], hash, key, hash.digest_len()).unwrap();
    let mut buf = data.to_vec();
    let len = buf.len();
    let mut jobs = [CbcHmacJob {
        key: &k,
        iv: [0; 16],
        buf: &mut buf,
        cipher_offset: 0,
        cipher_len: 0,
        hash_offset: 0,
        hash_len: len,
        tag: [0; 64],
        open: false,
        result: Err(Error::BadLength),
    }];
    m.run_cbc_hmac(&mut jobs);
    jobs[0].result.unwrap();
    jobs[0].tag[..hash.digest_len()].to_vec()
}

/// RFC 2202 § 3 test case 2; RFC 4231 § 4.3 test case 2 ("Jefe") and
/// § 4.2 test case 1.
#[test]
fn hmac_rfc2202_rfc4231() {
    let mut m = mgr();
    let jefe = b"Jefe";
    let what = b"what do ya want for nothing?";
    assert_eq!(
        hmac_only(&mut m, HashAlg::Sha1, jefe, what),
        hex!("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
    );
    assert_eq!(
        hmac_only(&mut m, HashAlg::Sha256, jefe, what),
        hex!("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
    assert_eq!(
        hmac_only(&mut m, HashAlg::Sha384, jefe, what),
        hex!(
            "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
            "8e2240ca5e69e2c78b3239ecfab21649"
        )
    );
    assert_eq!(
        hmac_only(&mut m, HashAlg::Sha512, jefe, what),
        hex!(
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
            "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        )
    );
    assert_eq!(
        hmac_only(&mut m, HashAlg::Sha256, &[0x0b; 20], b"Hi There"),
        hex!("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
    );
}

/// RFC 3602 § 4, cases 1 and 2 (AES-128-CBC), with an HMAC riding along.
#[test]
fn cbc_rfc3602_cases_1_2() {
    let mut m = mgr();
    for (key, iv, p, c) in [
        (
            hex!("06a9214036b8a15b512e03d534120006"),
            hex!("3dafba429d9eb430b422da802c9fac41"),
            b"Single block msg".to_vec(),
            hex!("e353779c1079aeb82708942dbe77181a").to_vec(),
        ),
        (
            hex!("c286696d887c9aa0611bbb3e2025a45a"),
            hex!("562e17996d093d28ddb3ba695a2e6f58"),
            hex!("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f").to_vec(),
            hex!("d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1").to_vec(),
        ),
    ] {
        let k = CbcHmacKey::new(&m.direct(), &key, HashAlg::Sha256, &[9; 32], 16).unwrap();
        let mut buf = p.clone();
        let len = buf.len();
        let mut jobs = [CbcHmacJob {
            key: &k,
            iv,
            buf: &mut buf,
            cipher_offset: 0,
            cipher_len: len,
            hash_offset: 0,
            hash_len: len,
            tag: [0; 64],
            open: false,
            result: Err(Error::BadLength),
        }];
        m.run_cbc_hmac(&mut jobs);
        jobs[0].result.unwrap();
        let tag = jobs[0].tag;
        assert_eq!(buf, c);
        let want = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[9; 32]), &c);
        assert_eq!(&tag[..16], &want.as_ref()[..16]);
        let mut jobs = [CbcHmacJob {
            key: &k,
            iv,
            buf: &mut buf,
            cipher_offset: 0,
            cipher_len: len,
            hash_offset: 0,
            hash_len: len,
            tag,
            open: true,
            result: Err(Error::BadLength),
        }];
        m.run_cbc_hmac(&mut jobs);
        jobs[0].result.unwrap();
        assert_eq!(buf, p);
    }
}

fn ring_hmac(hash: HashAlg) -> ring::hmac::Algorithm {
    match hash {
        HashAlg::Sha1 => ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        HashAlg::Sha256 => ring::hmac::HMAC_SHA256,
        HashAlg::Sha384 => ring::hmac::HMAC_SHA384,
        HashAlg::Sha512 => ring::hmac::HMAC_SHA512,
    }
}

fn arb_hash() -> impl Strategy<Value = HashAlg> {
    prop_oneof![
        Just(HashAlg::Sha1),
        Just(HashAlg::Sha256),
        Just(HashAlg::Sha384),
        Just(HashAlg::Sha512)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Direct and job GCM against ring, random key/IV/AAD (8 or 12
    /// bytes, as ESP uses) and lengths 0..=300 (odd ones included).
    #[test]
    fn gcm_matches_ring(
        k256 in any::<bool>(),
        key in proptest::collection::vec(any::<u8>(), 32),
        iv in any::<[u8; 12]>(),
        esn in any::<bool>(),
        aad12 in any::<[u8; 12]>(),
        p in proptest::collection::vec(any::<u8>(), 0..=300),
    ) {
        let mut m = mgr();
        let key = if k256 { &key[..] } else { &key[..16] };
        let aad = if esn { &aad12[..] } else { &aad12[..8] };
        let alg = if k256 { &AES_256_GCM } else { &AES_128_GCM };
        let r = LessSafeKey::new(UnboundKey::new(alg, key).unwrap());
        let mut want = p.clone();
        let want_tag = r
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), &mut want)
            .unwrap();

        let k = GcmKey::new(&m.direct(), key).unwrap();
        let mut got = p.clone();
        let tag = k.seal(&iv, aad, &mut got);
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(&tag[..], want_tag.as_ref());

        let mut got2 = p.clone();
        let len = got2.len();
        let mut jobs = [GcmJob { key: &k, iv, aad, buf: &mut got2, offset: 0, len, tag: [0; 16], open: false, result: Ok(()) }];
        m.run_gcm(&mut jobs);
        prop_assert!(jobs[0].result.is_ok());
        prop_assert_eq!(&jobs[0].tag[..], want_tag.as_ref());
        prop_assert_eq!(&got2, &want);

        k.open(&iv, aad, &mut got, &tag).unwrap();
        prop_assert_eq!(&got, &p);
    }

    /// A mixed burst of CBC+HMAC jobs (both key sizes, all four hashes,
    /// seal and open, different lengths) against aws-lc-rs CBC and ring
    /// HMAC, the way ESP lays a packet out: header+IV authenticated but
    /// not encrypted, the tag truncated.
    #[test]
    fn cbc_hmac_burst_matches_aws_lc_and_ring(
        specs in proptest::collection::vec(
            (any::<bool>(), arb_hash(), 0usize..24, any::<[u8; 16]>(), any::<u8>(), 1usize..40),
            1..40,
        ),
    ) {
        let mut m = mgr();
        let mut keys = Vec::new();
        let mut bufs = Vec::new();
        let mut wants = Vec::new();
        for (i, &(k256, hash, blocks, iv, seed, hdr)) in specs.iter().enumerate() {
            let aes: Vec<u8> = (0..if k256 { 32 } else { 16 }).map(|b| seed.wrapping_add(b)).collect();
            let mac: Vec<u8> = (0..hash.digest_len()).map(|b| seed ^ (b as u8)).collect();
            keys.push((CbcHmacKey::new(&m.direct(), &aes, hash, &mac, hash.ipsec_tag_len()).unwrap(), iv, hdr, blocks * 16));
            let buf: Vec<u8> = (0..hdr + blocks * 16).map(|b| (b as u8) ^ (i as u8)).collect();
            // Oracle.
            let mut c = buf.clone();
            if blocks > 0 {
                let alg = if k256 { &AES_256 } else { &AES_128 };
                let ek = EncryptingKey::cbc(UnboundCipherKey::new(alg, &aes).unwrap()).unwrap();
                ek.less_safe_encrypt(&mut c[hdr..], EncryptionContext::Iv128(FixedLength::from(&iv))).unwrap();
            }
            let t = ring::hmac::sign(&ring::hmac::Key::new(ring_hmac(hash), &mac), &c);
            wants.push((c, t.as_ref()[..hash.ipsec_tag_len()].to_vec()));
            bufs.push(buf);
        }
        let mut jobs: Vec<CbcHmacJob<'_>> = keys.iter().zip(bufs.iter_mut()).map(|((k, iv, hdr, clen), b)| {
            let hl = b.len();
            CbcHmacJob { key: k, iv: *iv, buf: b, cipher_offset: *hdr, cipher_len: *clen, hash_offset: 0, hash_len: hl, tag: [0; 64], open: false, result: Err(Error::BadLength) }
        }).collect();
        m.run_cbc_hmac(&mut jobs);
        let tags: Vec<[u8; 64]> = jobs.iter().map(|j| { j.result.unwrap(); j.tag }).collect();
        drop(jobs);
        for (i, (c, t)) in wants.iter().enumerate() {
            prop_assert_eq!(&bufs[i], c);
            prop_assert_eq!(&tags[i][..t.len()], &t[..]);
        }
        // Open them all back, one with a flipped tag bit.
        let mut jobs: Vec<CbcHmacJob<'_>> = keys.iter().zip(bufs.iter_mut()).zip(&tags).map(|(((k, iv, hdr, clen), b), t)| {
            let hl = b.len();
            CbcHmacJob { key: k, iv: *iv, buf: b, cipher_offset: *hdr, cipher_len: *clen, hash_offset: 0, hash_len: hl, tag: *t, open: true, result: Err(Error::BadLength) }
        }).collect();
        jobs[0].tag[0] ^= 1;
        m.run_cbc_hmac(&mut jobs);
        prop_assert_eq!(jobs[0].result, Err(Error::AuthFailed));
        for j in &jobs[1..] {
            prop_assert!(j.result.is_ok());
        }
    }
}
