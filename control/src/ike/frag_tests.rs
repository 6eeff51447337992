//! RFC 7383 fragmentation: split / reassemble round trips for every SK
//! suite, and the reassembly bounds.

use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::super::crypto::{Encr, Integ, SkKeys};
use super::super::wire::{
    ExchangeType, Header, Message, Payload, PayloadType, emit_chain, flags, parse_chain,
};
use super::*;

fn keys(encr: Encr, integ: Option<Integ>) -> SkKeys {
    let e = Zeroizing::new(
        (0..encr.keymat_len())
            .map(|i| u8::try_from(i * 7 % 256).unwrap())
            .collect(),
    );
    let a = Zeroizing::new(vec![3u8; integ.map_or(0, Integ::key_len)]);
    SkKeys::new(encr, integ, e, a)
}

const SUITES: [(Encr, Option<Integ>); 4] = [
    (Encr::AesGcm16 { key_len: 16 }, None),
    (Encr::AesGcm16 { key_len: 32 }, None),
    (Encr::AesCbc { key_len: 16 }, Some(Integ::HmacSha1_96)),
    (Encr::AesCbc { key_len: 32 }, Some(Integ::HmacSha512_256)),
];

fn header() -> Header {
    Header {
        spi_i: 0x1111,
        spi_r: 0x2222,
        exchange: ExchangeType::IkeAuth,
        flags: flags::INITIATOR,
        message_id: 1,
    }
}

fn inner() -> (PayloadType, Vec<u8>, Vec<Payload>) {
    let payloads = vec![
        Payload::Other {
            kind: PayloadType::Cert,
            critical: false,
            data: (0..3000u32).map(|i| (i % 251) as u8).collect(),
        },
        Payload::Nonce(vec![9; 32]),
    ];
    let mut bytes = Vec::new();
    let first = emit_chain(&payloads, &mut bytes);
    (first, bytes, payloads)
}

/// Opens each fragment as the receiver does and reassembles.
fn receive(k: &SkKeys, frags: &[Vec<u8>], order: &[usize]) -> FragOutcome {
    let mut r = Reassembly::default();
    let now = Instant::now();
    let mut last = FragOutcome::Incomplete;
    for &i in order {
        let raw = &frags[i];
        let m = Message::parse(raw).unwrap();
        let Some(Payload::Skf {
            first,
            number,
            total,
            data,
        }) = m.payloads.last()
        else {
            panic!("not SKF")
        };
        let plain = k.open(raw, raw.len() - data.len()).unwrap();
        last = r.add(
            now,
            m.header.message_id,
            false,
            *number,
            *total,
            *first,
            plain,
        );
    }
    last
}

#[test]
fn split_and_reassemble_every_suite_in_any_order() {
    let (first, bytes, payloads) = inner();
    for (encr, integ) in SUITES {
        let k = keys(encr, integ);
        for max in [300, 548, 1252] {
            let mut n = 0u8;
            let frags = fragment(&k, &header(), first, &bytes, max, &mut || {
                n = n.wrapping_add(1);
                vec![n; 16]
            })
            .unwrap();
            assert!(frags.len() >= 3, "{encr:?} {max}");
            for f in &frags {
                assert!(f.len() <= max, "{encr:?}: {} > {max}", f.len());
            }
            let mut order: Vec<usize> = (0..frags.len()).rev().collect();
            order.rotate_left(1);
            let FragOutcome::Complete(f, whole) = receive(&k, &frags, &order) else {
                panic!("incomplete")
            };
            assert_eq!(f, first);
            assert_eq!(parse_chain(f, &whole).unwrap(), payloads);
            // split_messages recovers the fragments from their concatenation.
            let cat = frags.concat();
            let back: Vec<Vec<u8>> = split_messages(&cat)
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect();
            assert_eq!(back, frags);
        }
    }
}

#[test]
fn fragment_header_fields_are_authenticated() {
    let (first, bytes, _) = inner();
    for (encr, integ) in SUITES {
        let k = keys(encr, integ);
        let frags = fragment(&k, &header(), first, &bytes, 548, &mut || vec![5; 16]).unwrap();
        let f = &frags[1];
        // Fragment Number (offset 32) and Total Fragments (34).
        for pos in [32, 33, 34, 35, 29] {
            let mut bad = f.clone();
            bad[pos] ^= 1;
            let m = Message::parse(&bad).unwrap();
            let Some(Payload::Skf { data, .. }) = m.payloads.last() else {
                panic!()
            };
            assert!(
                k.open(&bad, bad.len() - data.len()).is_err(),
                "{encr:?} byte {pos}"
            );
        }
    }
}

#[test]
fn too_many_fragments_is_an_error() {
    let k = keys(Encr::AesGcm16 { key_len: 16 }, None);
    let big = vec![0u8; 100_000];
    assert!(
        fragment(&k, &header(), PayloadType::Cert, &big, 576, &mut || vec![
            0;
            16
        ])
        .is_err()
    );
    assert!(
        fragment(&k, &header(), PayloadType::Cert, &[1; 10], 40, &mut || {
            vec![0; 16]
        })
        .is_err()
    );
}

#[test]
fn reassembly_bounds() {
    let now = Instant::now();
    let mut r = Reassembly::default();
    let c = PayloadType::Cert;
    let n = PayloadType::None;
    // Rule 2.
    assert!(matches!(
        r.add(now, 1, false, 0, 2, c, vec![1]),
        FragOutcome::Dropped(_)
    ));
    assert!(matches!(
        r.add(now, 1, false, 3, 2, n, vec![1]),
        FragOutcome::Dropped(_)
    ));
    assert!(matches!(
        r.add(now, 1, false, 1, MAX_FRAGMENTS + 1, c, vec![1]),
        FragOutcome::Dropped("more fragments than allowed")
    ));
    assert!(matches!(
        r.add(now, 1, false, 1, 2, n, vec![1]),
        FragOutcome::Dropped(_)
    ));
    // Duplicates are ignored, completion needs every number.
    assert_eq!(
        r.add(now, 1, false, 2, 3, n, vec![2]),
        FragOutcome::Incomplete
    );
    assert_eq!(
        r.add(now, 1, false, 2, 3, n, vec![2]),
        FragOutcome::Duplicate
    );
    // Rule 3: a smaller total for the same message is dropped ...
    assert!(matches!(
        r.add(now, 1, false, 1, 2, c, vec![1]),
        FragOutcome::Dropped(_)
    ));
    // ... a larger one restarts the collection.
    assert_eq!(
        r.add(now, 1, false, 1, 4, c, vec![1]),
        FragOutcome::Incomplete
    );
    assert_eq!(
        r.add(now, 1, false, 2, 4, n, vec![2]),
        FragOutcome::Incomplete
    );
    assert_eq!(
        r.add(now, 1, false, 4, 4, n, vec![4]),
        FragOutcome::Incomplete
    );
    assert_eq!(
        r.add(now, 1, false, 3, 4, n, vec![3]),
        FragOutcome::Complete(c, vec![1, 2, 3, 4])
    );
    assert!(!r.is_collecting());
    // Another message replaces an incomplete one.
    assert_eq!(
        r.add(now, 5, false, 1, 2, c, vec![1]),
        FragOutcome::Incomplete
    );
    assert_eq!(
        r.add(now, 6, true, 2, 2, n, vec![2]),
        FragOutcome::Incomplete
    );
    assert_eq!(
        r.add(now, 5, false, 2, 2, n, vec![2]),
        FragOutcome::Incomplete
    );
    // Rule 4: the timeout.
    let later = now + REASSEMBLY_TIMEOUT + Duration::from_secs(1);
    assert_eq!(
        r.add(later, 5, false, 1, 2, c, vec![1]),
        FragOutcome::Incomplete
    );
    // Rule 4: the size bound.
    let mut r = Reassembly::default();
    let half = vec![0u8; MAX_REASSEMBLED_BYTES / 2 + 1];
    assert_eq!(
        r.add(now, 9, false, 1, 3, c, half.clone()),
        FragOutcome::Incomplete
    );
    assert_eq!(
        r.add(now, 9, false, 2, 3, n, half),
        FragOutcome::Dropped("reassembled message too large")
    );
    assert!(!r.is_collecting());
}

#[test]
fn max_message_accounts_for_headers() {
    let c = FragmentConfig::default();
    assert_eq!(c.max_message(false, false), 1280 - 28);
    assert_eq!(c.max_message(false, true), 1280 - 32);
    assert_eq!(c.max_message(true, true), 1280 - 52);
}

#[test]
fn split_messages_keeps_odd_buffers_whole() {
    assert_eq!(split_messages(b"short"), vec![&b"short"[..]]);
    let mut m = vec![0u8; 40];
    m[27] = 40;
    let mut two = m.clone();
    two.extend_from_slice(&m);
    assert_eq!(split_messages(&two).len(), 2);
    two.push(0);
    assert_eq!(split_messages(&two).len(), 1);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any sequence of fragments: never a panic, never more than the
    /// bound kept, and a completed message is exactly its parts in order.
    #[test]
    fn arbitrary_fragment_sequences_stay_bounded(
        frags in proptest::collection::vec(
            (0..3u32, proptest::prelude::any::<bool>(), 0..6u16, 0..6u16, 0..3000usize, 0..40u64),
            0..60,
        )
    ) {
        let start = Instant::now();
        let mut r = Reassembly::default();
        for (id, resp, number, total, len, secs) in frags {
            let first = if number == 1 { PayloadType::Cert } else { PayloadType::None };
            let plain = vec![u8::try_from(number).unwrap_or(0); len];
            let now = start + Duration::from_secs(secs);
            if let FragOutcome::Complete(f, whole) = r.add(now, id, resp, number, total, first, plain) {
                proptest::prop_assert_eq!(f, PayloadType::Cert);
                proptest::prop_assert!(whole.len() <= MAX_REASSEMBLED_BYTES);
                // Parts in order: fragment numbers never decrease.
                proptest::prop_assert!(whole.windows(2).all(|w| w[0] <= w[1]));
            }
        }
    }
}
