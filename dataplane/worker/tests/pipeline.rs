//! Two pipelines back to back (see `common`): the basic paths.

mod common;

use std::sync::Arc;

use common::*;
use dataplane::crypto::{EspAlgorithm, Integrity};
use dataplane::esp::sa::Direction;
use dataplane::esp::{DropReason, InboundSa, OutboundSa};
use fib::{Target, TunnelId};
use netbuf::TestBuffer;
use worker::{Action, Command, Drop, Event};

#[test]
fn traffic_crosses_the_tunnel_both_ways_for_every_algorithm() {
    let algs = [
        EspAlgorithm::Aes128Gcm16,
        EspAlgorithm::Aes256Gcm16,
        EspAlgorithm::Aes128Cbc(Integrity::HmacSha1_96),
        EspAlgorithm::Aes256Cbc(Integrity::HmacSha512_256),
    ];
    for alg in algs {
        for nat_t in [false, true] {
            let (mut conc, mut cgw) = pair(alg, nat_t);
            // VPC host → remote site: enters conc's inside port.
            let inner = udp_v4([198, 51, 100, 2], [203, 0, 113, 5], 300);
            let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
            assert_eq!(
                conc.worker.handle_inside(&mut b),
                Action::ToOutside,
                "{alg:?}"
            );
            assert_eq!(&b.as_ref()[0..12], &[CGW_MAC, CONC_MAC].concat()[..]);
            let proto = b.as_ref()[14 + 9];
            assert_eq!(
                proto,
                if nat_t { 17 } else { 50 },
                "ESP, raw or in UDP 4500"
            );
            // ... and the customer gateway decapsulates it to its inside.
            assert_eq!(
                cgw.worker.handle_outside(&mut b),
                Action::ToInside,
                "{alg:?} nat_t={nat_t}"
            );
            assert_eq!(&b.as_ref()[14..], &inner[..], "inner packet intact");
            // The reply comes back the other way.
            let reply = udp_v4([203, 0, 113, 5], [198, 51, 100, 2], 1200);
            let mut r = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &reply);
            assert_eq!(cgw.worker.handle_inside(&mut r), Action::ToOutside);
            assert_eq!(conc.worker.handle_outside(&mut r), Action::ToInside);
            assert_eq!(&r.as_ref()[0..6], &VPC_ROUTER_MAC, "to the VPC router");
            assert_eq!(&r.as_ref()[14..], &reply[..]);
            assert_eq!(conc.worker.stats().encap_packets, 1);
            assert_eq!(conc.worker.stats().decap_packets, 1);
            assert_eq!(conc.worker.stats().total_dropped(), 0);
        }
    }
}

#[test]
fn replayed_and_unknown_esp_is_dropped_and_counted() {
    let (mut conc, mut cgw) = pair(EspAlgorithm::Aes128Gcm16, false);
    let inner = udp_v4([203, 0, 113, 5], [198, 51, 100, 2], 100);
    let mut b = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
    assert_eq!(cgw.worker.handle_inside(&mut b), Action::ToOutside);
    let copy = b.duplicate();
    assert_eq!(conc.worker.handle_outside(&mut b), Action::ToInside);
    let mut replay = copy.duplicate();
    assert_eq!(conc.worker.handle_outside(&mut replay), Action::Drop);
    assert_eq!(conc.worker.stats().esp.get(DropReason::ReplayDuplicate), 1);
    // Unknown SPI.
    let mut unknown = copy.duplicate();
    unknown.as_mut()[14 + 20] ^= 0xff;
    assert_eq!(conc.worker.handle_outside(&mut unknown), Action::Drop);
    assert_eq!(
        conc.worker.stats().dropped(Drop::UnknownSpi),
        1,
        "{:?}",
        conc.worker.stats()
    );
    // Tampered ciphertext of a fresh packet (a tampered copy of a received
    // one is already stopped by the replay pre-check).
    let mut bad = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
    assert_eq!(cgw.worker.handle_inside(&mut bad), Action::ToOutside);
    let n = bad.len();
    bad.as_mut()[n - 20] ^= 1;
    assert_eq!(conc.worker.handle_outside(&mut bad), Action::Drop);
    assert_eq!(conc.worker.stats().esp.get(DropReason::IcvFail), 1);
    // Truncated frames of every length never panic.
    for len in 0..copy.len() {
        let mut t = TestBuffer::from_slice(&copy.as_ref()[..len]);
        assert_eq!(conc.worker.handle_outside(&mut t), Action::Drop);
    }
    // Not for us.
    let mut other = copy.duplicate();
    other.as_mut()[14 + 19] = 99;
    assert_eq!(conc.worker.handle_outside(&mut other), Action::Drop);
    assert!(conc.worker.stats().dropped(Drop::NotLocal) >= 1);
}

#[test]
fn ike_and_nat_t_markers_are_punted_keepalives_counted() {
    let (mut conc, _) = pair(EspAlgorithm::Aes128Gcm16, true);
    let udp = |dport: u16, payload: &[u8]| {
        let mut p = udp_v4([192, 0, 2, 2], [192, 0, 2, 1], payload.len());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[28..].copy_from_slice(payload);
        frame(CONC_MAC, CGW_MAC, 0x0800, &p)
    };
    let mut ike = udp(500, &[1; 40]);
    assert_eq!(conc.worker.handle_outside(&mut ike), Action::ToKernel);
    assert_eq!(
        &ike.as_ref()[0..6],
        &KERNEL_MAC,
        "addressed to the kernel's tap MAC"
    );
    let mut marker = udp(4500, &[0, 0, 0, 0, 1, 2, 3, 4]);
    assert_eq!(conc.worker.handle_outside(&mut marker), Action::ToKernel);
    let mut keepalive = udp(4500, &[0xff]);
    assert_eq!(conc.worker.handle_outside(&mut keepalive), Action::Drop);
    assert_eq!(conc.worker.stats().dropped(Drop::NatKeepalive), 1);
    assert_eq!(conc.worker.stats().punted, 2);
}

#[test]
fn arp_for_our_addresses_is_answered_in_place() {
    let (mut conc, _) = pair(EspAlgorithm::Aes128Gcm16, false);
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&CGW_MAC);
    arp.extend_from_slice(&CGW.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&CONC.octets());
    let mut f = frame([0xff; 6], CGW_MAC, 0x0806, &arp);
    assert_eq!(conc.worker.handle_outside(&mut f), Action::ToOutside);
    let r = f.as_ref();
    assert_eq!(&r[0..6], &CGW_MAC);
    assert_eq!(r[14 + 7], 2, "a reply");
    assert_eq!(&r[14 + 8..14 + 14], &CONC_MAC, "with our MAC");
    assert_eq!(&r[14 + 14..14 + 18], &CONC.octets());
    assert_eq!(&r[14 + 24..14 + 28], &CGW.octets());
    // A request for someone else is ignored.
    let mut other = vec![0, 1, 8, 0, 6, 4, 0, 1];
    other.extend_from_slice(&CGW_MAC);
    other.extend_from_slice(&CGW.octets());
    other.extend_from_slice(&[0; 6]);
    other.extend_from_slice(&[192, 0, 2, 77]);
    let mut f = frame([0xff; 6], CGW_MAC, 0x0806, &other);
    assert_eq!(conc.worker.handle_outside(&mut f), Action::Drop);
}

/// An IPv6 Neighbor Solicitation (no options, so the answer is longer
/// than the question) for `target`, from 2001:db8::2 to the solicited-node
/// address.
fn neighbor_solicitation(target: std::net::Ipv6Addr) -> TestBuffer {
    use dataplane::wire::{IpProtocol, checksum};
    let src: std::net::Ipv6Addr = "2001:db8::2".parse().unwrap();
    let o = target.octets();
    let dst = std::net::Ipv6Addr::from([
        0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ]);
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    let sum = checksum::combine(&[
        checksum::pseudo_header_v6(src, dst, IpProtocol::Icmpv6, 24),
        checksum::data(&icmp),
    ]);
    icmp[2..4].copy_from_slice(&(!sum).to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0, 0, 24, 58, 255];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&icmp);
    frame(
        [0x33, 0x33, 0xff, o[13], o[14], o[15]],
        CGW_MAC,
        0x86dd,
        &ip,
    )
}

#[test]
fn neighbor_solicitations_for_our_outside_ipv6_addresses_are_answered() {
    let (mut conc, _) = pair(EspAlgorithm::Aes128Gcm16, false);
    let ours: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    conc.send(Command::SetAddresses(Box::new(worker::Addresses {
        outside_mac: CONC_MAC,
        outside_gateway_mac: CGW_MAC,
        inside_mac: INSIDE_MAC,
        inside_gateway_mac: VPC_ROUTER_MAC,
        kernel_mac: KERNEL_MAC,
        outside_v4: vec![CONC],
        outside_v6: vec![ours],
        inside_v4: vec![],
    })));
    let mut f = neighbor_solicitation(ours);
    assert_eq!(conc.worker.handle_outside(&mut f), Action::ToOutside);
    let r = f.as_ref();
    assert_eq!(r.len(), 14 + 40 + 32, "header, target and our MAC option");
    assert_eq!(&r[0..12], &[CGW_MAC, CONC_MAC].concat()[..]);
    assert_eq!(r[14 + 40], 136, "a Neighbor Advertisement");
    assert_eq!(&r[14 + 8..14 + 24], &ours.octets(), "from the target");
    assert_eq!(&r[14 + 40 + 26..14 + 40 + 32], &CONC_MAC);
    assert_eq!(conc.worker.stats().arp_replies, 1);
    // Someone else's address: not answered, counted.
    let mut f = neighbor_solicitation("2001:db8::77".parse().unwrap());
    assert_eq!(conc.worker.handle_outside(&mut f), Action::Drop);
    assert_eq!(conc.worker.stats().dropped(Drop::NdIgnored), 1);
}

#[test]
fn rekey_is_make_before_break_and_old_sas_return_to_control() {
    let alg = EspAlgorithm::Aes128Gcm16;
    let (mut conc, mut cgw) = pair(alg, false);
    let _ = conc.events();
    // New inbound SA first; traffic on the old one still flows.
    let new_in = InboundSa::new(
        &sa_config(0x3003, alg, Direction::Inbound, CONC, CGW, false),
        0,
    )
    .unwrap();
    conc.send(Command::AddInbound(Box::new(new_in)));
    let send = |cgw: &mut Side, conc: &mut Side| {
        let mut b = frame(
            INSIDE_MAC,
            VPC_ROUTER_MAC,
            0x0800,
            &udp_v4([203, 0, 113, 5], [198, 51, 100, 2], 64),
        );
        assert_eq!(cgw.worker.handle_inside(&mut b), Action::ToOutside);
        conc.worker.handle_outside(&mut b)
    };
    assert_eq!(
        send(&mut cgw, &mut conc),
        Action::ToInside,
        "old SA still accepted"
    );
    // The peer switches its outbound SA atomically.
    let new_out = OutboundSa::new(
        &sa_config(0x3003, alg, Direction::Outbound, CGW, CONC, false),
        0,
    )
    .unwrap();
    cgw.send(Command::SetOutbound {
        tunnel: TunnelId(0),
        sa: Box::new(new_out),
    });
    assert!(
        matches!(cgw.events().as_slice(), [.., Event::RetiredOutbound(old), Event::Done { .. }] if old.spi() == 0x2002)
    );
    assert_eq!(
        send(&mut cgw, &mut conc),
        Action::ToInside,
        "new SA accepted"
    );
    // Only now the old inbound SA goes; it comes back to the control core.
    conc.send(Command::RemoveInbound { spi: 0x2002 });
    let ev = conc.events();
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::RetiredInbound(sa) if sa.spi() == 0x2002))
    );
    assert_eq!(conc.worker.tables().inbound_len(), 1);
    assert_eq!(
        conc.worker.stats().total_dropped(),
        0,
        "nothing lost during the rekey"
    );
    // Removing it again fails, and says so.
    conc.send(Command::RemoveInbound { spi: 0x2002 });
    assert!(
        conc.events()
            .iter()
            .any(|e| matches!(e, Event::Failed { .. }))
    );
}

#[test]
fn routes_to_missing_tunnels_and_local_addresses() {
    let (mut conc, _) = pair(EspAlgorithm::Aes128Gcm16, false);
    conc.routes(&[
        ("203.0.113.0/24", Target::Tunnel(TunnelId(0))),
        ("203.0.114.0/24", Target::Tunnel(TunnelId(7))),
        ("169.254.21.1/32", Target::Local),
        ("100.64.0.0/10", Target::Blackhole),
    ]);
    let go = |conc: &mut Side, dst: [u8; 4]| {
        let mut b = frame(
            INSIDE_MAC,
            VPC_ROUTER_MAC,
            0x0800,
            &udp_v4([198, 51, 100, 2], dst, 10),
        );
        conc.worker.handle_inside(&mut b)
    };
    assert_eq!(go(&mut conc, [203, 0, 114, 1]), Action::Drop);
    assert_eq!(conc.worker.stats().dropped(Drop::NoOutboundSa), 1);
    assert_eq!(go(&mut conc, [8, 8, 8, 8]), Action::Drop);
    assert_eq!(conc.worker.stats().dropped(Drop::NoRoute), 1);
    assert_eq!(go(&mut conc, [100, 64, 0, 1]), Action::Drop);
    assert_eq!(conc.worker.stats().dropped(Drop::Blackhole), 1);
    assert_eq!(go(&mut conc, [169, 254, 21, 1]), Action::ToKernel);
}

#[test]
fn lifetimes_are_reported_to_the_control_core() {
    let alg = EspAlgorithm::Aes128Gcm16;
    let (mut conc, _) = pair(alg, false);
    let mut cfg = sa_config(0x4004, alg, Direction::Inbound, CONC, CGW, false);
    cfg.lifetimes.soft.secs = Some(10);
    cfg.lifetimes.hard.secs = Some(20);
    conc.send(Command::AddInbound(Box::new(
        InboundSa::new(&cfg, 100).unwrap(),
    )));
    let _ = conc.events();
    conc.worker.handle_timeout(105);
    assert!(conc.events().is_empty());
    conc.worker.handle_timeout(111);
    let ev = conc.events();
    assert!(
        matches!(ev.as_slice(), [Event::Lifetime { spi: 0x4004, inbound: true, event }] if *event == dataplane::esp::sa::LifetimeEvent::SoftExpired),
        "{ev:?}"
    );
    conc.worker.handle_timeout(121);
    assert!(matches!(
        conc.events().as_slice(),
        [Event::Lifetime {
            event: dataplane::esp::sa::LifetimeEvent::HardExpired,
            ..
        }]
    ));
    conc.worker.handle_timeout(130);
    assert!(conc.events().is_empty(), "each limit reported once");
}

#[test]
fn a_slow_control_core_delays_commands_but_loses_no_ack() {
    let (mut control, end) = worker::channel(8);
    let mut w = worker::Worker::new(end, 16);
    // Each SetFib produces two events (the retired table, the ack); the
    // event ring holds 32.
    let mut sent = 0;
    let mut events = 0;
    let mut acks = Vec::new();
    for round in 0..10 {
        while control
            .send(Command::SetFib(Arc::new(fib::FibBuilder::new().build())))
            .is_ok()
        {
            sent += 1;
        }
        w.apply_commands();
        if round % 3 == 2 {
            // The control core catches up only now and then.
            while let Some(e) = control.poll_event() {
                events += 1;
                if let Event::Done { seq } = e {
                    acks.push(seq);
                }
            }
        }
    }
    for _ in 0..20 {
        w.apply_commands();
        while let Some(e) = control.poll_event() {
            events += 1;
            if let Event::Done { seq } = e {
                acks.push(seq);
            }
        }
    }
    assert_eq!(acks, (0..sent).collect::<Vec<u64>>(), "every ack, in order");
    assert_eq!(events, 2 * sent);
}
