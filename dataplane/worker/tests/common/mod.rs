//! The back-to-back harness shared by the worker's integration tests:
//! "conc" (the concentrator) and "cgw" (a customer gateway built from the
//! same code with mirrored SAs). Frames leave one worker's outside port
//! and enter the other's.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]
#![allow(
    clippy::cast_possible_truncation,
    reason = "test packets are built with deliberate narrowing"
)]

use std::net::Ipv4Addr;
use std::sync::Arc;

use dataplane::crypto::EspAlgorithm;
use dataplane::esp::sa::{DfPolicy, Direction, Lifetimes, NatT, TunnelEndpoints};
use dataplane::esp::{InboundSa, OutboundSa, SaConfig};
use fib::{FibBuilder, Target, TunnelId};
use netbuf::TestBuffer;
use worker::{Action, Addresses, Command, ControlEnd, Event, PacketIo, Worker, channel};
use zeroize::Zeroizing;

pub(crate) const CONC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub(crate) const CGW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub(crate) const CONC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub(crate) const CGW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub(crate) const VPC_ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
pub(crate) const INSIDE_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];
pub(crate) const KERNEL_MAC: [u8; 6] = [2, 0, 0, 0, 9, 9];

pub(crate) fn sa_config(
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

pub(crate) struct Side {
    pub(crate) worker: Worker,
    pub(crate) control: ControlEnd,
}

impl Side {
    pub(crate) fn new(me: Ipv4Addr, my_mac: [u8; 6], gw_mac: [u8; 6]) -> Self {
        Self::with_capacity(me, my_mac, gw_mac, 1024)
    }

    /// A side whose worker holds `capacity` SAs each way.
    pub(crate) fn with_capacity(
        me: Ipv4Addr,
        my_mac: [u8; 6],
        gw_mac: [u8; 6],
        capacity: usize,
    ) -> Self {
        let (mut control, end) = channel(64);
        let mut worker = Worker::new(end, capacity);
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

    pub(crate) fn send(&mut self, c: Command) {
        self.control.send(c).unwrap();
        self.worker.apply_commands();
    }

    pub(crate) fn routes(&mut self, routes: &[(&str, Target)]) {
        let mut b = FibBuilder::new();
        for (p, t) in routes {
            b.insert(p.parse().unwrap(), *t).unwrap();
        }
        self.send(Command::SetFib(Arc::new(b.build())));
    }

    pub(crate) fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.control.poll_event()).collect()
    }
}

/// conc ⇄ cgw with tunnel 0: conc→cgw SPI 0x1001, cgw→conc SPI 0x2002.
pub(crate) fn pair(alg: EspAlgorithm, nat_t: bool) -> (Side, Side) {
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

pub(crate) fn udp_v4(src: [u8; 4], dst: [u8; 4], payload: usize) -> Vec<u8> {
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

pub(crate) fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> TestBuffer {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    TestBuffer::from_slice(&f)
}

/// A [`PacketIo`] with a pool of `pool` test buffers that records what the
/// pipeline sends.
#[derive(Debug, Default)]
pub(crate) struct TestIo {
    pub(crate) pool: usize,
    pub(crate) sent: Vec<(Action, TestBuffer)>,
}

impl TestIo {
    pub(crate) fn with_pool(pool: usize) -> Self {
        Self {
            pool,
            sent: Vec::new(),
        }
    }
}

impl PacketIo<TestBuffer> for TestIo {
    fn alloc(&mut self) -> Option<TestBuffer> {
        self.pool = self.pool.checked_sub(1)?;
        Some(TestBuffer::new())
    }
    fn send(&mut self, action: Action, buf: TestBuffer) {
        self.sent.push((action, buf));
    }
}

/// Internet checksum of `data` (valid when it folds to 0xffff... i.e. 0 after !).
pub(crate) fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Rewrites the IPv4 header checksum of `p`.
pub(crate) fn fix_v4_checksum(p: &mut [u8]) {
    let hl = usize::from(p[0] & 0xf) * 4;
    p[10] = 0;
    p[11] = 0;
    let c = inet_checksum(&p[..hl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}
