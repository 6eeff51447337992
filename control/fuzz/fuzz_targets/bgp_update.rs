//! BGP UPDATEs (and any message) from untrusted bytes: the codec and an
//! established session never panic, and whatever parses re-emits to bytes
//! that parse to the same value, as passed on ([`as_passed_on`]).
//!
//! The first input byte picks the codec (bit 0: 4-octet AS, bit 1:
//! external peer) and the path (bit 2): the rest is either an UPDATE body
//! for `Update::parse_body` and a whole message for `Message::parse`, or a
//! byte stream fed to an established `Session`.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use control::bgp::session::{ConnId, Direction, PeerConfig, Session};
use control::bgp::wire::{Capability, Codec, Message, Open, Update, flags};
use libfuzzer_sys::fuzz_target;

/// A parsed UPDATE as the codec emits it again: RFC 7606 discards are not
/// emitted, and unrecognized optional transitive attributes are passed on
/// with the Partial bit set ([RFC 4271 § 5]: such an attribute "MUST be
/// passed, along with the path, to other BGP peers with the Partial bit in
/// the Attribute Flags octet set to 1").
///
/// [RFC 4271 § 5]: https://www.rfc-editor.org/rfc/rfc4271#section-5
fn as_passed_on(u: Update) -> Update {
    let mut u = Update {
        discarded: Vec::new(),
        ..u
    };
    for a in &mut u.attributes.other {
        a.flags |= flags::PARTIAL;
    }
    u
}

fn established() -> (Session, Instant) {
    let now = Instant::now();
    let cfg = PeerConfig::new(
        64512,
        65000,
        IpAddr::V4(Ipv4Addr::new(169, 254, 21, 1)),
        IpAddr::V4(Ipv4Addr::new(169, 254, 21, 2)),
    );
    let mut s = Session::new(cfg);
    s.handle_start(now);
    s.handle_connected(now, ConnId(1), Direction::Outgoing);
    let open = Message::Open(Open {
        version: 4,
        my_as: 65000,
        hold_time: 30,
        bgp_id: Ipv4Addr::new(10, 0, 0, 2),
        capabilities: vec![Capability::FourOctetAs(65000)],
    });
    let codec = Codec::default();
    s.handle_data(now, ConnId(1), &open.to_bytes(codec));
    s.handle_data(now, ConnId(1), &Message::Keepalive.to_bytes(codec));
    (s, now)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let codec = Codec {
        four_octet_as: sel & 1 != 0,
        external: sel & 2 != 0,
    };
    if sel & 4 == 0 {
        if let Ok(u) = Update::parse_body(rest, codec) {
            let m = Message::Update(as_passed_on(u));
            let b = m.to_bytes(codec);
            if b.len() <= control::bgp::wire::MAX_MESSAGE_LEN {
                assert_eq!(Message::parse(&b, codec), Ok(m));
            }
        }
        if let Ok(m) = Message::parse(rest, codec) {
            let m = match m {
                Message::Update(u) => Message::Update(as_passed_on(u)),
                other => other,
            };
            let b = m.to_bytes(codec);
            if b.len() <= control::bgp::wire::MAX_MESSAGE_LEN {
                let _ = Message::parse(&b, codec);
            }
        }
    } else {
        let (mut s, now) = established();
        s.handle_data(now, ConnId(1), rest);
        while s.poll_transmit().is_some() {}
        while s.poll_action().is_some() {}
        while s.poll_log().is_some() {}
    }
});
