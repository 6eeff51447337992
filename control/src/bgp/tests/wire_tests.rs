//! Codec: byte fixtures (kind a), round-trips and no-panic properties
//! (kind c), RFC 7606 error handling.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hex_literal::hex;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

use crate::bgp::wire::{
    AS_TRANS, Afi, AsPath, AsSegment, Capability, Codec, ErrorCode, Message, MessageError, MpReach,
    MpUnreach, Notification, Open, Origin, PathAttributes, RawAttribute, RouteRefresh, Safi,
    SegmentType, Update, UpdateError, header_subcode, update_subcode,
};

const EBGP4: Codec = Codec {
    four_octet_as: true,
    external: true,
};
const EBGP2: Codec = Codec {
    four_octet_as: false,
    external: true,
};
const IBGP4: Codec = Codec {
    four_octet_as: true,
    external: false,
};

fn v4(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}
fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// KEEPALIVE is a bare header ([RFC 4271 § 4.4]).
#[test]
fn keepalive_fixture() {
    let bytes = hex!("ffffffffffffffffffffffffffffffff 0013 04");
    assert_eq!(Message::parse(&bytes, EBGP4), Ok(Message::Keepalive));
    let mut out = vec![0xaa; 3]; // garbage before: emit appends only
    Message::Keepalive.emit(&mut out, EBGP4);
    assert_eq!(&out[3..], &bytes);
    assert_eq!(Message::Keepalive.buffer_len(EBGP4), 19);
}

/// OPEN from AS 64512, hold 30, id 169.254.21.1, with MP IPv4 unicast,
/// route refresh and 4-octet AS (one capability per parameter, as BIRD).
const OPEN_FIXTURE: [u8; 49] = hex!(
    "ffffffffffffffffffffffffffffffff 0031 01"
    "04 fc00 001e a9fe1501 14"
    "02 06 01 04 0001 00 01"
    "02 02 02 00"
    "02 06 41 04 0000fc00"
);

#[test]
fn open_fixture() {
    let o = Open {
        version: 4,
        my_as: 64512,
        hold_time: 30,
        bgp_id: Ipv4Addr::new(169, 254, 21, 1),
        capabilities: vec![
            Capability::Multiprotocol {
                afi: Afi::Ipv4,
                safi: Safi::Unicast,
            },
            Capability::RouteRefresh,
            Capability::FourOctetAs(64512),
        ],
    };
    let m = Message::Open(o.clone());
    assert_eq!(m.to_bytes(EBGP4), OPEN_FIXTURE);
    assert_eq!(m.buffer_len(EBGP4), OPEN_FIXTURE.len());
    assert_eq!(Message::parse(&OPEN_FIXTURE, EBGP4), Ok(m));
    assert_eq!(o.asn(), 64512);
    assert!(o.four_octet_as() && o.multiprotocol(Afi::Ipv4) && !o.multiprotocol(Afi::Ipv6));
}

/// Several capabilities in one optional parameter (as some stacks send)
/// parse the same; a 4-octet AS hides behind AS_TRANS.
#[test]
fn open_capabilities_in_one_parameter_and_as_trans() {
    let bytes = hex!(
        "ffffffffffffffffffffffffffffffff 002b 01"
        "04 5ba0 00b4 01020304 0e"
        "02 0c 01 04 0002 00 01 41 04 fa56ea00"
    );
    let Ok(Message::Open(o)) = Message::parse(&bytes, EBGP4) else {
        panic!("OPEN expected");
    };
    assert_eq!(o.my_as, AS_TRANS);
    assert_eq!(o.asn(), 4_200_000_000);
    assert!(o.multiprotocol(Afi::Ipv6));
}

#[test]
fn open_unsupported_optional_parameter() {
    // Parameter type 1 (authentication, deprecated).
    let bytes = hex!("ffffffffffffffffffffffffffffffff 0020 01 04 fc00 001e a9fe1501 03 01 01 00");
    assert_eq!(
        Message::parse(&bytes, EBGP4),
        Err(MessageError::Notify(Notification::new(ErrorCode::Open, 4)))
    );
}

/// UPDATE: ORIGIN IGP, AS_PATH 65000 (4-octet), NEXT_HOP 169.254.21.2,
/// MED 100, NLRI 10.1.0.0/24.
const UPDATE_FIXTURE: [u8; 54] = hex!(
    "ffffffffffffffffffffffffffffffff 0036 02"
    "0000 001b"
    "40 01 01 00"
    "40 02 06 02 01 0000fde8"
    "40 03 04 a9fe1502"
    "80 04 04 00000064"
    "18 0a0100"
);

fn fixture_update() -> Update {
    Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(&[65000])),
            next_hop: Some(Ipv4Addr::new(169, 254, 21, 2)),
            med: Some(100),
            ..PathAttributes::default()
        },
        nlri: vec![v4("10.1.0.0/24")],
        ..Update::default()
    }
}

#[test]
fn update_fixture() {
    let m = Message::Update(fixture_update());
    assert_eq!(m.to_bytes(EBGP4), UPDATE_FIXTURE);
    assert_eq!(m.buffer_len(EBGP4), UPDATE_FIXTURE.len());
    assert_eq!(Message::parse(&UPDATE_FIXTURE, EBGP4), Ok(m));
}

/// The same UPDATE on a 2-octet session: AS 65000 fits, no AS4_PATH.
#[test]
fn update_two_octet_fixture() {
    let bytes = Message::Update(fixture_update()).to_bytes(EBGP2);
    assert_eq!(&bytes[27..36], &hex!("40 02 04 02 01 fde8 40 03"));
    assert_eq!(
        Message::parse(&bytes, EBGP2),
        Ok(Message::Update(fixture_update()))
    );
}

/// RFC 6793 § 4.2.2/4.2.3: a 4-octet AS towards an OLD speaker becomes
/// AS_TRANS plus an AS4_PATH, and is rebuilt on receipt.
#[test]
fn as4_path_round_trip_on_two_octet_session() {
    let mut u = fixture_update();
    u.attributes.as_path = Some(AsPath::sequence(&[65000, 4_200_000_001, 7]));
    let bytes = Message::Update(u.clone()).to_bytes(EBGP2);
    // AS_PATH carries 65000 23456 7.
    assert!(
        bytes
            .windows(11)
            .any(|w| w == &hex!("40 02 08 02 03 fde8 5ba0 0007")[..])
    );
    // AS4_PATH (type 17, optional transitive) is there.
    assert!(bytes.windows(2).any(|w| w == [0xc0, 17]));
    assert_eq!(Message::parse(&bytes, EBGP2), Ok(Message::Update(u)));
}

/// RFC 6793 § 4.2.3: AS_PATH longer than AS4_PATH keeps its leading ASes
/// (an OLD speaker prepended after the NEW one).
#[test]
fn as4_path_reconciliation_keeps_old_speaker_prepends() {
    // AS_PATH: 100 23456 200; AS4_PATH: 4200000001 200.
    let a = attrs(&[
        &ORIGIN,
        &hex!("40 02 08 02 03 0064 5ba0 00c8"),
        &NEXT_HOP,
        &hex!("c0 11 0a 02 02 fa56ea01 000000c8"),
    ]);
    let bytes = with_header(2, &update_bytes(&a, &hex!("08 0a")));
    let Ok(Message::Update(u)) = Message::parse(&bytes, EBGP2) else {
        panic!("UPDATE expected");
    };
    assert_eq!(
        u.attributes.as_path,
        Some(AsPath::sequence(&[100, 4_200_000_001, 200]))
    );
    // On a 4-octet session AS4_PATH is discarded (and the 4-octet AS_PATH
    // above would be malformed: 8 bytes are two ASes).
}

#[test]
fn end_of_rib_markers() {
    let v4eor = Message::Update(Update::end_of_rib(Afi::Ipv4, Safi::Unicast)).to_bytes(EBGP4);
    assert_eq!(
        v4eor,
        hex!("ffffffffffffffffffffffffffffffff 0017 02 0000 0000")
    );
    let v6eor = Message::Update(Update::end_of_rib(Afi::Ipv6, Safi::Unicast)).to_bytes(EBGP4);
    assert_eq!(
        v6eor,
        hex!("ffffffffffffffffffffffffffffffff 001d 02 0000 0006 80 0f 03 0002 01")
    );
    for (b, afi) in [(v4eor, Afi::Ipv4), (v6eor, Afi::Ipv6)] {
        let Ok(Message::Update(u)) = Message::parse(&b, EBGP4) else {
            panic!("UPDATE expected");
        };
        assert_eq!(u.as_end_of_rib(), Some((afi, Safi::Unicast)));
    }
    assert_eq!(fixture_update().as_end_of_rib(), None);
}

#[test]
fn notification_and_route_refresh_fixtures() {
    let n = Notification::with_data(ErrorCode::Cease, 1, &hex!("0001 01 000003e8"));
    let b = Message::Notification(n.clone()).to_bytes(EBGP4);
    assert_eq!(
        b,
        hex!("ffffffffffffffffffffffffffffffff 001c 03 06 01 0001 01 000003e8")
    );
    assert_eq!(
        Message::parse(&b, EBGP4),
        Ok(Message::Notification(n.clone()))
    );
    assert_eq!(n.name(), "Cease/Maximum Number of Prefixes Reached");
    assert_eq!(
        Notification::new(ErrorCode::HoldTimerExpired, 0).name(),
        "Hold Timer Expired"
    );
    assert_eq!(
        n.to_string(),
        "6/1 (Cease/Maximum Number of Prefixes Reached)"
    );
    let rr = Message::RouteRefresh(RouteRefresh {
        afi: Afi::Ipv6,
        subtype: 0,
        safi: Safi::Unicast,
    });
    let b = rr.to_bytes(EBGP4);
    assert_eq!(
        b,
        hex!("ffffffffffffffffffffffffffffffff 0017 05 0002 00 01")
    );
    assert_eq!(Message::parse(&b, EBGP4), Ok(rr));
}

#[test]
fn mp_reach_ipv6_with_link_local_fixture() {
    let u = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(&[65000])),
            mp_reach: Some(MpReach {
                afi: Afi::Ipv6,
                safi: Safi::Unicast,
                next_hops: vec![
                    IpAddr::V6("fd00::2".parse().unwrap()),
                    IpAddr::V6("fe80::1".parse().unwrap()),
                ],
                nlri: vec![net("2001:db8:1::/48")],
            }),
            ..PathAttributes::default()
        },
        ..Update::default()
    };
    let b = Message::Update(u.clone()).to_bytes(EBGP4);
    // MP_REACH header: flags 0x80, type 14, AFI 2, SAFI 1, NH length 32.
    assert!(b.windows(7).any(|w| w == hex!("80 0e 2c 0002 01 20")));
    assert_eq!(Message::parse(&b, EBGP4), Ok(Message::Update(u)));
}

// ---- header errors (RFC 4271 § 6.1)

#[test]
fn header_errors() {
    let mut bad_marker = hex!("ffffffffffffffffffffffffffffffff 0013 04");
    bad_marker[3] = 0;
    let n = |sub, data: &[u8]| {
        MessageError::Notify(Notification::with_data(ErrorCode::MessageHeader, sub, data))
    };
    let e = |sub, data: &[u8]| Err(n(sub, data));
    assert_eq!(
        Message::parse(&bad_marker, EBGP4),
        e(header_subcode::CONNECTION_NOT_SYNCHRONIZED, &[])
    );
    assert_eq!(
        Message::frame_len(&hex!("ffffffffffffffffffffffffffffffff 1001 04")),
        Err(n(header_subcode::BAD_MESSAGE_LENGTH, &hex!("1001")))
    );
    assert_eq!(
        Message::parse(&hex!("ffffffffffffffffffffffffffffffff 0013 09"), EBGP4),
        e(header_subcode::BAD_MESSAGE_TYPE, &[9])
    );
    assert_eq!(
        Message::parse(&hex!("ffffffffffffffffffffffffffffffff 0014 04 00"), EBGP4),
        e(header_subcode::BAD_MESSAGE_LENGTH, &hex!("0014"))
    );
    assert_eq!(Message::frame_len(&hex!("ffffffffffffffff")), Ok(None));
}

// ---- RFC 7606

/// A whole message from a type and a body.
fn with_header(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0xff; 16];
    b.extend_from_slice(&u16::try_from(body.len() + 19).unwrap().to_be_bytes());
    b.push(ty);
    b.extend_from_slice(body);
    b
}

/// Builds an UPDATE body from raw attributes and NLRI bytes.
fn update_bytes(attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 0];
    body.extend_from_slice(&u16::try_from(attrs.len()).unwrap().to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    body
}

const ORIGIN: [u8; 4] = hex!("40 01 01 00");
const AS_PATH: [u8; 9] = hex!("40 02 06 02 01 0000fde8");
const NEXT_HOP: [u8; 7] = hex!("40 03 04 a9fe1502");
const NLRI: [u8; 4] = hex!("18 0a0100");

fn attrs(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn twa(res: &Result<Update, UpdateError>, sub: u8) {
    match res {
        Err(UpdateError::TreatAsWithdraw {
            withdrawn,
            notification,
        }) => {
            assert_eq!(withdrawn, &vec![net("10.1.0.0/24")]);
            assert_eq!(
                (notification.code, notification.subcode),
                (ErrorCode::Update, sub)
            );
        }
        other => panic!("treat-as-withdraw expected, got {other:?}"),
    }
}

fn reset(res: &Result<Update, UpdateError>, sub: u8) {
    match res {
        Err(UpdateError::SessionReset(n)) => {
            assert_eq!((n.code, n.subcode), (ErrorCode::Update, sub))
        }
        other => panic!("session reset expected, got {other:?}"),
    }
}

#[test]
fn rfc7606_malformed_origin_is_treat_as_withdraw() {
    let a = attrs(&[&hex!("40 01 01 05"), &AS_PATH, &NEXT_HOP]);
    twa(
        &Update::parse_body(&update_bytes(&a, &NLRI), EBGP4),
        update_subcode::INVALID_ORIGIN,
    );
}

#[test]
fn rfc7606_malformed_as_path_is_treat_as_withdraw() {
    // Zero-length segment (§ 7.2).
    let a = attrs(&[&ORIGIN, &hex!("40 02 02 02 00"), &NEXT_HOP]);
    twa(
        &Update::parse_body(&update_bytes(&a, &NLRI), EBGP4),
        update_subcode::MALFORMED_AS_PATH,
    );
    // Confederation segment from an external peer (§ 7.2).
    let a = attrs(&[&ORIGIN, &hex!("40 02 06 03 01 0000fde8"), &NEXT_HOP]);
    twa(
        &Update::parse_body(&update_bytes(&a, &NLRI), EBGP4),
        update_subcode::MALFORMED_AS_PATH,
    );
    // ... accepted from an internal one.
    assert!(Update::parse_body(&update_bytes(&a, &NLRI), IBGP4).is_ok());
}

#[test]
fn rfc7606_missing_mandatory_attribute_is_treat_as_withdraw() {
    let a = attrs(&[&ORIGIN, &AS_PATH]);
    twa(
        &Update::parse_body(&update_bytes(&a, &NLRI), EBGP4),
        update_subcode::MISSING_WELL_KNOWN,
    );
    // Without NLRI nothing is missing (a pure withdrawal).
    assert!(Update::parse_body(&update_bytes(&[], &[]), EBGP4).is_ok());
}

#[test]
fn rfc7606_bad_next_hop_med_communities_are_treat_as_withdraw() {
    let a = attrs(&[&ORIGIN, &AS_PATH, &hex!("40 03 03 a9fe15")]);
    twa(
        &Update::parse_body(&update_bytes(&a, &NLRI), EBGP4),
        update_subcode::ATTRIBUTE_LENGTH,
    );
    let a = attrs(&[&ORIGIN, &AS_PATH, &NEXT_HOP, &hex!("80 04 02 0064")]);
    twa(
        &Update::parse_body(&update_bytes(&a, &NLRI), EBGP4),
        update_subcode::ATTRIBUTE_LENGTH,
    );
    let a = attrs(&[&ORIGIN, &AS_PATH, &NEXT_HOP, &hex!("c0 08 03 000001")]);
    twa(
        &Update::parse_body(&update_bytes(&a, &NLRI), EBGP4),
        update_subcode::OPTIONAL_ATTRIBUTE,
    );
    // MED flagged well-known: flags conflict with the type (§ 3 c).
    let a = attrs(&[&ORIGIN, &AS_PATH, &NEXT_HOP, &hex!("40 04 04 00000064")]);
    twa(
        &Update::parse_body(&update_bytes(&a, &NLRI), EBGP4),
        update_subcode::ATTRIBUTE_LENGTH,
    );
}

#[test]
fn rfc7606_attribute_discard() {
    // ATOMIC_AGGREGATE with a value, AGGREGATOR with a bad length,
    // LOCAL_PREF from an external peer, a repeated MED.
    let a = attrs(&[
        &ORIGIN,
        &AS_PATH,
        &NEXT_HOP,
        &hex!("40 06 01 00"),
        &hex!("c0 07 03 000000"),
        &hex!("40 05 04 00000064"),
        &hex!("80 04 04 00000001"),
        &hex!("80 04 04 00000002"),
    ]);
    let u = Update::parse_body(&update_bytes(&a, &NLRI), EBGP4).unwrap();
    assert_eq!(u.discarded, vec![6, 7, 5, 4]);
    assert_eq!(u.attributes.med, Some(1));
    assert_eq!(u.attributes.local_pref, None);
    assert!(!u.attributes.atomic_aggregate);
    assert_eq!(u.nlri, vec![v4("10.1.0.0/24")]);
}

#[test]
fn rfc7606_session_reset_cases() {
    // Attribute length overruns the attribute field.
    let a = attrs(&[&ORIGIN, &hex!("40 02 20 02 01")]);
    reset(
        &Update::parse_body(&update_bytes(&a, &NLRI), EBGP4),
        update_subcode::MALFORMED_ATTRIBUTE_LIST,
    );
    // Withdrawn routes length overruns.
    reset(
        &Update::parse_body(&hex!("0010 0000"), EBGP4),
        update_subcode::MALFORMED_ATTRIBUTE_LIST,
    );
    // NLRI prefix length 33 (§ 5.3).
    let a = attrs(&[&ORIGIN, &AS_PATH, &NEXT_HOP]);
    reset(
        &Update::parse_body(&update_bytes(&a, &hex!("21 0a010000 00")), EBGP4),
        update_subcode::INVALID_NETWORK_FIELD,
    );
    // Repeated MP_REACH_NLRI (§ 3 g).
    let mp = hex!("80 0e 0d 0001 01 04 a9fe1502 00 18 0a0200");
    let a = attrs(&[&ORIGIN, &AS_PATH, &mp, &mp]);
    reset(
        &Update::parse_body(&update_bytes(&a, &[]), EBGP4),
        update_subcode::MALFORMED_ATTRIBUTE_LIST,
    );
    // Malformed MP_REACH (next hop length 5 for IPv4).
    let a = attrs(&[
        &ORIGIN,
        &AS_PATH,
        &hex!("80 0e 0c 0001 01 05 a9fe150200 00 08 0a"),
    ]);
    reset(
        &Update::parse_body(&update_bytes(&a, &[]), EBGP4),
        update_subcode::OPTIONAL_ATTRIBUTE,
    );
    // Unrecognized well-known attribute.
    let a = attrs(&[&ORIGIN, &AS_PATH, &NEXT_HOP, &hex!("40 63 00")]);
    reset(
        &Update::parse_body(&update_bytes(&a, &NLRI), EBGP4),
        update_subcode::UNRECOGNIZED_WELL_KNOWN,
    );
}

#[test]
fn unknown_optional_transitive_is_kept_with_partial() {
    let a = attrs(&[
        &ORIGIN,
        &AS_PATH,
        &NEXT_HOP,
        &hex!("c0 63 02 abcd"),
        &hex!("80 64 01 00"),
    ]);
    let u = Update::parse_body(&update_bytes(&a, &NLRI), EBGP4).unwrap();
    assert_eq!(
        u.attributes.other,
        vec![RawAttribute {
            flags: 0xc0,
            type_code: 0x63,
            value: vec![0xab, 0xcd]
        }]
    );
    let b = Message::Update(u).to_bytes(EBGP4);
    assert!(b.windows(5).any(|w| w == hex!("e0 63 02 abcd")));
}

#[test]
fn treat_as_withdraw_lists_mp_prefixes_too() {
    let mp = hex!("80 0e 1c 0002 01 10 fd000000000000000000000000000002 00 30 20010db80001");
    let a = attrs(&[
        &hex!("40 01 01 07"),
        &AS_PATH,
        &mp,
        &hex!("80 0f 05 0002 01 08 20"),
    ]);
    match Update::parse_body(&update_bytes(&a, &[]), EBGP4) {
        Err(UpdateError::TreatAsWithdraw { withdrawn, .. }) => {
            assert_eq!(withdrawn, vec![net("2001:db8:1::/48"), net("2000::/8")]);
        }
        other => panic!("treat-as-withdraw expected, got {other:?}"),
    }
}

// ---- properties

fn asn() -> impl Strategy<Value = u32> {
    prop_oneof![1u32..65_536, any::<u32>()]
}

fn as_path() -> impl Strategy<Value = AsPath> {
    prop::collection::vec(
        (
            prop_oneof![
                Just(SegmentType::Sequence),
                Just(SegmentType::Set),
                Just(SegmentType::ConfedSequence)
            ],
            prop::collection::vec(asn(), 1..8),
        )
            .prop_map(|(kind, asns)| AsSegment { kind, asns }),
        0..4,
    )
    .prop_map(|segments| AsPath { segments })
}

fn v4net() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc())
}

fn v6net() -> impl Strategy<Value = Ipv6Net> {
    (any::<u128>(), 0u8..=128)
        .prop_map(|(a, l)| Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc())
}

fn mp_reach() -> impl Strategy<Value = MpReach> {
    prop_oneof![
        (any::<u32>(), prop::collection::vec(v4net(), 0..10)).prop_map(|(nh, n)| MpReach {
            afi: Afi::Ipv4,
            safi: Safi::Unicast,
            next_hops: vec![IpAddr::V4(Ipv4Addr::from(nh))],
            nlri: n.into_iter().map(IpNet::V4).collect(),
        }),
        (
            prop::collection::vec(any::<u128>(), 1..=2),
            prop::collection::vec(v6net(), 0..10)
        )
            .prop_map(|(nh, n)| MpReach {
                afi: Afi::Ipv6,
                safi: Safi::Unicast,
                next_hops: nh
                    .into_iter()
                    .map(|a| IpAddr::V6(Ipv6Addr::from(a)))
                    .collect(),
                nlri: n.into_iter().map(IpNet::V6).collect(),
            }),
    ]
}

fn mp_unreach() -> impl Strategy<Value = MpUnreach> {
    prop_oneof![
        prop::collection::vec(v4net(), 0..10).prop_map(|n| MpUnreach {
            afi: Afi::Ipv4,
            safi: Safi::Unicast,
            withdrawn: n.into_iter().map(IpNet::V4).collect(),
        }),
        prop::collection::vec(v6net(), 0..10).prop_map(|n| MpUnreach {
            afi: Afi::Ipv6,
            safi: Safi::Unicast,
            withdrawn: n.into_iter().map(IpNet::V6).collect(),
        }),
    ]
}

prop_compose! {
    fn attributes(with_aggregator: bool)(
        origin in 0u8..3,
        path in as_path(),
        nh in any::<u32>(),
        med in prop::option::of(any::<u32>()),
        local_pref in prop::option::of(any::<u32>()),
        atomic in any::<bool>(),
        aggr in prop::option::of((asn(), any::<u32>())),
        communities in prop::collection::vec(any::<u32>(), 0..5),
        reach in prop::option::of(mp_reach()),
        unreach in prop::option::of(mp_unreach()),
        other in prop::collection::vec((100u8..250, prop::collection::vec(any::<u8>(), 0..300)), 0..2),
    ) -> PathAttributes {
        let mut other: Vec<RawAttribute> = other
            .into_iter()
            .map(|(t, value)| RawAttribute { flags: 0xe0, type_code: t, value })
            .collect();
        other.sort_by_key(|a| a.type_code);
        other.dedup_by_key(|a| a.type_code);
        PathAttributes {
            origin: Some(Origin::from(origin)),
            as_path: Some(path),
            next_hop: Some(Ipv4Addr::from(nh)),
            med,
            local_pref,
            atomic_aggregate: atomic,
            aggregator: if with_aggregator { aggr.map(|(a, b)| (a, Ipv4Addr::from(b))) } else { None },
            communities,
            mp_reach: reach,
            mp_unreach: unreach,
            other,
        }
    }
}

fn update(with_aggregator: bool) -> impl Strategy<Value = Update> {
    (
        prop::collection::vec(v4net(), 0..20),
        attributes(with_aggregator),
        prop::collection::vec(v4net(), 0..20),
    )
        .prop_map(|(withdrawn, attributes, nlri)| Update {
            withdrawn,
            attributes,
            nlri,
            discarded: Vec::new(),
        })
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        (any::<u16>(), any::<u8>()).prop_map(|(a, s)| Capability::Multiprotocol {
            afi: Afi::from(a),
            safi: Safi::from(s)
        }),
        Just(Capability::RouteRefresh),
        (
            any::<bool>(),
            0u16..4096,
            prop::collection::vec((any::<u16>(), any::<u8>(), any::<u8>()), 0..3)
        )
            .prop_map(|(r, t, f)| Capability::GracefulRestart {
                restarting: r,
                time_secs: t,
                families: f
                    .into_iter()
                    .map(|(a, s, x)| (Afi::from(a), Safi::from(s), x))
                    .collect(),
            }),
        any::<u32>().prop_map(Capability::FourOctetAs),
        (70u8..=255, prop::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(code, value)| Capability::Unknown { code, value }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            prop::collection::vec(capability(), 0..6)
        )
            .prop_map(|(my_as, hold_time, id, capabilities)| Message::Open(Open {
                version: 4,
                my_as,
                hold_time,
                bgp_id: Ipv4Addr::from(id),
                capabilities
            })),
        update(true).prop_map(Message::Update),
        (
            any::<u8>(),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(c, s, d)| Message::Notification(Notification::with_data(
                ErrorCode::from(c),
                s,
                &d
            ))),
        Just(Message::Keepalive),
        (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(a, t, s)| Message::RouteRefresh(
            RouteRefresh {
                afi: Afi::from(a),
                subtype: t,
                safi: Safi::from(s)
            }
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// `parse(emit(x)) == x` on an internal 4-octet session (every
    /// attribute allowed).
    #[test]
    fn round_trip_four_octet(m in message()) {
        let b = m.to_bytes(IBGP4);
        prop_assert_eq!(b.len(), m.buffer_len(IBGP4));
        prop_assert_eq!(Message::parse(&b, IBGP4), Ok(m));
    }

    /// The same on a 2-octet session: AS_TRANS + AS4_PATH on the wire, the
    /// original path after parsing.
    #[test]
    fn round_trip_two_octet(u in update(false)) {
        let codec = Codec { four_octet_as: false, external: false };
        let m = Message::Update(u);
        let b = m.to_bytes(codec);
        prop_assert_eq!(Message::parse(&b, codec), Ok(m));
    }

    /// Arbitrary bytes never panic, behind a valid header or not.
    #[test]
    fn arbitrary_bytes_never_panic(ty in 0u8..8, body in prop::collection::vec(any::<u8>(), 0..600), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut b = vec![0xff; 16];
        b.extend_from_slice(&u16::try_from(body.len() + 19).unwrap().to_be_bytes());
        b.push(ty);
        b.extend_from_slice(&body);
        for codec in [EBGP4, EBGP2, IBGP4] {
            let _ = Message::parse(&b, codec);
            let _ = Message::parse(&raw, codec);
            let _ = Update::parse_body(&body, codec);
        }
    }

    /// Mutating one byte of a valid UPDATE never panics, and an error is
    /// always one of the two RFC 7606 outcomes or a header error.
    #[test]
    fn mutated_updates_never_panic(u in update(true), pos in any::<prop::sample::Index>(), val in any::<u8>()) {
        let mut b = Message::Update(u).to_bytes(EBGP4);
        let i = pos.index(b.len());
        b[i] = val;
        let _ = Message::parse(&b, EBGP4);
        let _ = Message::parse(&b, EBGP2);
    }
}
