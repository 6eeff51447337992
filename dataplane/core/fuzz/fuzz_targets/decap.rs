//! ESP decapsulation on untrusted bytes: none may panic, and nothing but
//! what was sealed may come out.
//!
//! The first input byte picks the algorithm, NAT-T, ESN, the outer family
//! and the mode; the rest is used in one of two ways:
//!
//! * raw: the bytes are an outer packet (IPv4/IPv6 [+ UDP] + ESP) handed
//!   to `decap` as they are, with the ESP offset the outer header implies;
//! * sealed then mutated: the bytes become an inner packet, which is
//!   encapsulated by the matching outbound SA, then a few bytes of the
//!   result are overwritten at input-chosen positions (and the packet may
//!   be cut) before `decap`. This reaches the replay, ICV, padding and
//!   inner-header steps, which random bytes almost never do. When nothing
//!   was changed the inner packet must come back intact, and when
//!   something was it must be rejected (the ICV covers every byte after
//!   the outer headers).
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use dataplane::crypto::EspAlgorithm;
use dataplane::esp::sa::{DfPolicy, Direction, Lifetimes, NatT, TunnelEndpoints};
use dataplane::esp::{InboundSa, OutboundSa, SaConfig, decap, encap};
use libfuzzer_sys::fuzz_target;
use netbuf::TestBuffer;
use zeroize::Zeroizing;

fn config(alg: EspAlgorithm, dir: Direction, nat_t: bool, esn: bool, v6: bool) -> SaConfig {
    let (a, b) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
    let (a6, b6) = (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
    );
    // The inbound SA's "local" is the outbound SA's "remote".
    let tunnel = match (v6, dir) {
        (false, Direction::Outbound) => TunnelEndpoints::V4 {
            local: a,
            remote: b,
        },
        (false, Direction::Inbound) => TunnelEndpoints::V4 {
            local: b,
            remote: a,
        },
        (true, Direction::Outbound) => TunnelEndpoints::V6 {
            local: a6,
            remote: b6,
        },
        (true, Direction::Inbound) => TunnelEndpoints::V6 {
            local: b6,
            remote: a6,
        },
    };
    SaConfig {
        spi: 0x1234,
        direction: dir,
        algorithm: alg,
        enc_key: Zeroizing::new((0..alg.enc_key_len()).map(|i| i as u8).collect()),
        auth_key: Zeroizing::new((0..alg.auth_key_len()).map(|i| (i * 3) as u8).collect()),
        iv_seed: Zeroizing::new([9; 16]),
        tunnel,
        nat_t: nat_t.then_some(NatT {
            local_port: 4500,
            remote_port: 4500,
        }),
        esn,
        replay_window: 64,
        lifetimes: Lifetimes::default(),
        df: DfPolicy::CopyFromInner,
    }
}

/// An IPv4 packet around `payload` (at most 1400 bytes of it).
fn inner_v4(payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(1400)];
    let total = 20 + payload.len();
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    p.extend_from_slice(payload);
    p
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let alg = EspAlgorithm::ALL[usize::from(sel & 0x0f) % EspAlgorithm::ALL.len()];
    let (nat_t, esn, v6, sealed) = (
        sel & 0x10 != 0,
        sel & 0x20 != 0,
        sel & 0x40 != 0,
        sel & 0x80 != 0,
    );
    let Ok(mut inb) = InboundSa::new(&config(alg, Direction::Inbound, nat_t, esn, v6), 0) else {
        return;
    };
    let esp_offset = if v6 { 40 } else { 20 } + if nat_t { 8 } else { 0 };
    if !sealed {
        let mut b = TestBuffer::from_slice(rest);
        let _ = decap(&mut inb, &mut b, esp_offset);
        let mut b = TestBuffer::from_slice(rest);
        let _ = decap(&mut inb, &mut b, 0);
        return;
    }
    // Sealed then mutated: [n_edits, cut, (pos_hi, pos_lo, value) × n, payload…]
    let Some((&[n, cut], tail)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let edits = usize::from(n % 4);
    let Some((edit_bytes, payload)) = tail.split_at_checked(edits * 3) else {
        return;
    };
    let Ok(mut out) = OutboundSa::new(&config(alg, Direction::Outbound, nat_t, esn, v6), 0) else {
        return;
    };
    let inner = inner_v4(payload);
    let mut b = TestBuffer::from_slice(&inner);
    if encap(&mut out, &mut b).is_err() {
        return;
    }
    let sealed_bytes = b.as_ref().to_vec();
    for e in edit_bytes.chunks_exact(3) {
        let pos = usize::from(u16::from_be_bytes([e[0], e[1]])) % sealed_bytes.len();
        b.as_mut()[pos] = e[2];
    }
    let mut pkt = b.as_ref().to_vec();
    pkt.truncate(pkt.len().saturating_sub(usize::from(cut)));
    // What the ICV covers (everything from the ESP header on) changed, or
    // the packet lost bytes: it must be rejected. Changes confined to the
    // outer headers may be tolerated (IPv6 hop limit) or not (IPv4
    // checksum): no claim either way.
    let changed =
        pkt.len() != sealed_bytes.len() || pkt[esp_offset..] != sealed_bytes[esp_offset..];
    let outer_edit = !changed && pkt[..esp_offset] != sealed_bytes[..esp_offset];
    let mut b = TestBuffer::from_slice(&pkt);
    let r = decap(&mut inb, &mut b, esp_offset);
    if changed {
        assert!(r.is_err(), "a modified ESP packet was accepted");
    } else if !outer_edit {
        assert_eq!(r, Ok(()), "an intact packet was rejected");
        assert_eq!(b.as_ref(), &inner[..], "the inner packet changed");
    }
});
