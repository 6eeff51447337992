//! IKEv1 (ISAKMP) messages from untrusted bytes: the codec and the
//! responder never panic, and whatever parses re-emits to bytes that
//! parse to the same value.
//!
//! The first input byte picks the path:
//!
//! * even: the bytes are a whole message for `Message::parse`, and a
//!   payload chain for `parse_chain` starting with each payload type the
//!   engine interprets;
//! * odd: the bytes are a datagram handed to an IKEv1 `Endpoint` with one
//!   configured tunnel, on port 500 or 4500 (bit 1), which runs the
//!   responder's Main Mode message 1 handling (Aggressive Mode refusal,
//!   transform selection, vendor IDs) on them; bit 2 feeds the same bytes
//!   again, so a created SA handles them as its next message.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use control::config::{DhGroup, PreSharedKey, TunnelOptions};
use control::ike::Rng;
use control::ike::sa::{Datagram, IkeConfig};
use control::ikev1::endpoint::Endpoint;
use control::ikev1::wire::{Message, PayloadType, parse_chain};
use libfuzzer_sys::fuzz_target;

struct CountingRng(u8);

impl Rng for CountingRng {
    fn fill(&mut self, dst: &mut [u8]) {
        for b in dst {
            self.0 = self.0.wrapping_mul(31).wrapping_add(7);
            *b = self.0;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel & 1 == 0 {
        if let Ok(m) = Message::parse(rest) {
            let again = Message::parse(&m.emit()).expect("emitted message parses");
            assert_eq!(again, m);
        }
        for first in [
            PayloadType::Sa,
            PayloadType::Ke,
            PayloadType::Id,
            PayloadType::Hash,
            PayloadType::Nonce,
            PayloadType::Notify,
            PayloadType::Delete,
            PayloadType::Vendor,
            PayloadType::NatD,
            PayloadType::NatOa,
        ] {
            let _ = parse_chain(first, rest);
        }
    } else {
        let local = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        let remote = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let opts = TunnelOptions {
            pre_shared_key: Some(PreSharedKey::new("fuzzfuzz12345678").expect("psk")),
            phase1_dh_groups: vec![DhGroup::Ecp256],
            ..TunnelOptions::default()
        };
        let any = vec!["0.0.0.0/0".parse().expect("net")];
        let cfg = IkeConfig::from_tunnel(&opts, local, remote, any.clone(), any);
        let mut rng = CountingRng(sel);
        let mut ep = Endpoint::new();
        ep.add_tunnel(cfg);
        let port = if sel & 2 == 0 { 500 } else { 4500 };
        let d = Datagram {
            local: SocketAddr::new(local, port),
            remote: SocketAddr::new(remote, port),
            payload: rest,
        };
        let now = Instant::now();
        ep.handle_datagram(now, &mut rng, d);
        if sel & 4 != 0 {
            ep.handle_datagram(now, &mut rng, d);
        }
        ep.handle_timeout(now, &mut rng);
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
    }
});
