//! Two pipelines back to back: "conc" (the concentrator) and "cgw" (a
//! customer gateway built from the same code with mirrored SAs). Frames
//! leave one worker's outside port and enter the other's.

#![allow(clippy::cast_possible_truncation)] // test packets are built with deliberate narrowing

use std::net::Ipv4Addr;
use std::sync::Arc;

use dataplane::crypto::{EspAlgorithm, Integrity};
use dataplane::esp::sa::{DfPolicy, Direction, Lifetimes, NatT, TunnelEndpoints};
use dataplane::esp::{DropReason, InboundSa, OutboundSa, SaConfig};
use fib::{FibBuilder, Target, TunnelId};
use netbuf::TestBuffer;
use worker::{Action, Addresses, Command, ControlEnd, Drop, Event, Worker, channel};
use zeroize::Zeroizing;

const CONC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CGW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const CONC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const CGW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const VPC_ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const INSIDE_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];
const KERNEL_MAC: [u8; 6] = [2, 0, 0, 0, 9, 9];

fn sa_config(
    spi: u32,
    alg: EspAlgorithm,
    dir: Direction,
    local: Ipv4Addr,
    remote: Ipv4Addr,
    nat_t: bool,
) -> SaConfig {
    let key = |n: usize, salt: u8| {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31) ^ salt)
            .collect::<Vec<u8>>()
    };
    SaConfig {
        spi,
        direction: dir,
        algorithm: alg,
        enc_key: Zeroizing::new(key(alg.enc_key_len(), spi as u8)),
        auth_key: Zeroizing::new(key(alg.auth_key_len(), 0x77)),
        iv_seed: Zeroizing::new([7; 16]),
        tunnel: TunnelEndpoints::V4 { local, remote },
        nat_t: nat_t.then_some(NatT {
            local_port: 4500,
            remote_port: 4500,
        }),
        esn: false,
        replay_window: 1024,
        lifetimes: Lifetimes::default(),
        df: DfPolicy::CopyFromInner,
    }
}

struct Side {
    worker: Worker,
    control: ControlEnd,
}

impl Side {
    fn new(me: Ipv4Addr, my_mac: [u8; 6], gw_mac: [u8; 6]) -> Self {
        let (mut control, end) = channel(64);
        let mut worker = Worker::new(end, 1024);
        control
            .send(Command::SetAddresses(Box::new(Addresses {
                outside_mac: my_mac,
                outside_gateway_mac: gw_mac,
                inside_mac: INSIDE_MAC,
                inside_gateway_mac: VPC_ROUTER_MAC,
                kernel_mac: KERNEL_MAC,
                outside_v4: vec![me],
                outside_v6: vec![],
                inside_v4: vec![Ipv4Addr::new(198, 51, 100, 1)],
            })))
            .unwrap();
        worker.apply_commands();
        Self { worker, control }
    }

    fn send(&mut self, c: Command) {
        self.control.send(c).unwrap();
        self.worker.apply_commands();
    }

    fn routes(&mut self, routes: &[(&str, Target)]) {
        let mut b = FibBuilder::new();
        for (p, t) in routes {
            b.insert(p.parse().unwrap(), *t).unwrap();
        }
        self.send(Command::SetFib(Arc::new(b.build())));
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.control.poll_event()).collect()
    }
}

/// conc ⇄ cgw with tunnel 0: conc→cgw SPI 0x1001, cgw→conc SPI 0x2002.
fn pair(alg: EspAlgorithm, nat_t: bool) -> (Side, Side) {
    let mut conc = Side::new(CONC, CONC_MAC, CGW_MAC);
    let mut cgw = Side::new(CGW, CGW_MAC, CONC_MAC);
    let out = |spi, l, r| {
        Box::new(
            OutboundSa::new(&sa_config(spi, alg, Direction::Outbound, l, r, nat_t), 0).unwrap(),
        )
    };
    let inb = |spi, l, r| {
        Box::new(InboundSa::new(&sa_config(spi, alg, Direction::Inbound, l, r, nat_t), 0).unwrap())
    };
    conc.send(Command::SetOutbound {
        tunnel: TunnelId(0),
        sa: out(0x1001, CONC, CGW),
    });
    conc.send(Command::AddInbound(inb(0x2002, CONC, CGW)));
    cgw.send(Command::SetOutbound {
        tunnel: TunnelId(0),
        sa: out(0x2002, CGW, CONC),
    });
    cgw.send(Command::AddInbound(inb(0x1001, CGW, CONC)));
    // conc: the remote site 203.0.113.0/24 is behind tunnel 0, the VPC is inside.
    conc.routes(&[
        ("203.0.113.0/24", Target::Tunnel(TunnelId(0))),
        ("198.51.100.0/24", Target::Inside),
        ("169.254.21.1/32", Target::Local),
    ]);
    cgw.routes(&[
        ("198.51.100.0/24", Target::Tunnel(TunnelId(0))),
        ("203.0.113.0/24", Target::Inside),
    ]);
    (conc, cgw)
}

fn udp_v4(src: [u8; 4], dst: [u8; 4], payload: usize) -> Vec<u8> {
    let total = 28 + payload;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let mut sum: u32 = p[..20]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&4000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5000u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> TestBuffer {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    TestBuffer::from_slice(&f)
}

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
