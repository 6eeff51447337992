//! Deterministic harnesses with virtual time (conventions §12 e): two
//! [`Session`]s joined by in-memory "TCP" links, and one session facing a
//! scripted peer that sends hand-built messages.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::bgp::log::BgpLogEvent;
use crate::bgp::session::{Action, ConnId, Direction, PeerConfig, Session, State};
use crate::bgp::wire::{Capability, Codec, Message, Open};

pub(super) const A_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 21, 1);
pub(super) const B_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 21, 2);
pub(super) const A_ASN: u32 = 64512;
pub(super) const B_ASN: u32 = 65000;

/// Our side (the appliance) and the customer gateway, spec defaults.
pub(super) fn configs() -> (PeerConfig, PeerConfig) {
    let a = PeerConfig::new(A_ASN, B_ASN, IpAddr::V4(A_ADDR), IpAddr::V4(B_ADDR));
    let b = PeerConfig::new(B_ASN, A_ASN, IpAddr::V4(B_ADDR), IpAddr::V4(A_ADDR));
    (a, b)
}

#[derive(Debug)]
struct Link {
    id: ConnId,
    /// Which side initiated (true: A).
    from_a: bool,
    open: bool,
}

/// Which side of a [`Pair`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    A,
    B,
}

/// Two speakers and the links between them.
#[derive(Debug)]
pub(super) struct Pair {
    pub now: Instant,
    pub a: Session,
    pub b: Session,
    links: Vec<Link>,
    next_id: u64,
    /// Route actions each side produced (Connect/Close left out).
    pub a_routes: Vec<Action>,
    pub b_routes: Vec<Action>,
    pub a_logs: Vec<BgpLogEvent>,
    pub b_logs: Vec<BgpLogEvent>,
    /// While set, bytes are lost (a dead path under live TCP sockets).
    pub blackhole: bool,
    /// While set, B does not accept connections (nothing listens).
    pub b_refuses: bool,
    /// Events on the wire, delivered after [`LATENCY`] in order.
    inflight: std::collections::VecDeque<(Instant, Wire)>,
}

/// One-way delay of the virtual links: SYNs and OPENs cross in flight, as
/// on a real network.
pub(super) const LATENCY: Duration = Duration::from_millis(1);

#[derive(Debug)]
enum Wire {
    Connect(Side),
    Data(Side, ConnId, Vec<u8>),
    Closed(Side, ConnId),
}

impl Pair {
    pub(super) fn new(a: PeerConfig, b: PeerConfig) -> Self {
        let now = Instant::now();
        Self {
            now,
            a: Session::new(a),
            b: Session::new(b),
            links: Vec::new(),
            next_id: 1,
            a_routes: Vec::new(),
            b_routes: Vec::new(),
            a_logs: Vec::new(),
            b_logs: Vec::new(),
            blackhole: false,
            b_refuses: false,
            inflight: std::collections::VecDeque::new(),
        }
    }

    fn session(&mut self, side: Side) -> &mut Session {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn connect(&mut self, from: Side) {
        let id = ConnId(self.next_id);
        self.next_id += 1;
        let now = self.now;
        if self.b_refuses && from == Side::A {
            self.a.handle_closed(now, id);
            return;
        }
        self.links.push(Link {
            id,
            from_a: from == Side::A,
            open: true,
        });
        let (init, acc) = match from {
            Side::A => (Side::A, Side::B),
            Side::B => (Side::B, Side::A),
        };
        self.session(init)
            .handle_connected(now, id, Direction::Outgoing);
        self.session(acc)
            .handle_connected(now, id, Direction::Incoming);
    }

    fn close(&mut self, by: Side, id: ConnId) {
        let now = self.now;
        if self.links.iter().any(|l| l.id == id && l.open) {
            let other = match by {
                Side::A => Side::B,
                Side::B => Side::A,
            };
            self.inflight
                .push_back((now + LATENCY, Wire::Closed(other, id)));
        }
    }

    fn deliver_due(&mut self) -> bool {
        let mut any = false;
        while let Some((t, _)) = self.inflight.front() {
            if *t > self.now {
                break;
            }
            any = true;
            let Some((_, w)) = self.inflight.pop_front() else {
                break;
            };
            let now = self.now;
            match w {
                Wire::Connect(side) => self.connect(side),
                Wire::Data(to, id, data) => {
                    if self.links.iter().any(|l| l.id == id && l.open) && !self.blackhole {
                        self.session(to).handle_data(now, id, &data);
                    }
                }
                Wire::Closed(to, id) => {
                    if let Some(l) = self.links.iter_mut().find(|l| l.id == id && l.open) {
                        l.open = false;
                        self.session(to).handle_closed(now, id);
                    }
                }
            }
        }
        any
    }

    /// Delivers everything queued until both sides are quiet.
    pub(super) fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut progress = self.deliver_due();
            let due = self.now + LATENCY;
            for side in [Side::A, Side::B] {
                while let Some(t) = self.session(side).poll_transmit() {
                    progress = true;
                    let other = if side == Side::A { Side::B } else { Side::A };
                    self.inflight
                        .push_back((due, Wire::Data(other, t.conn, t.data)));
                }
                while let Some(act) = self.session(side).poll_action() {
                    progress = true;
                    match act {
                        Action::Connect => self.inflight.push_back((due, Wire::Connect(side))),
                        Action::Close(id) => self.close(side, id),
                        other => match side {
                            Side::A => self.a_routes.push(other),
                            Side::B => self.b_routes.push(other),
                        },
                    }
                }
                while let Some(l) = self.session(side).poll_log() {
                    progress = true;
                    match side {
                        Side::A => self.a_logs.push(l),
                        Side::B => self.b_logs.push(l),
                    }
                }
            }
            if !progress {
                return;
            }
        }
        panic!("the two speakers never went quiet");
    }

    /// Runs virtual time forward by `d`, firing timers in order.
    pub(super) fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.pump();
            let next = [
                self.a.poll_timeout(),
                self.b.poll_timeout(),
                self.inflight.front().map(|(t, _)| *t),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    self.a.handle_timeout(now);
                    self.b.handle_timeout(now);
                }
                _ => {
                    self.now = end;
                    self.pump();
                    return;
                }
            }
        }
    }

    /// Runs until both are Established (at most `limit`); returns the time
    /// it took.
    pub(super) fn establish(&mut self, limit: Duration) -> Duration {
        let t0 = self.now;
        let end = self.now + limit;
        while self.now < end {
            self.run_for(Duration::from_millis(100));
            if self.a.state() == State::Established && self.b.state() == State::Established {
                return self.now - t0;
            }
        }
        panic!(
            "not established after {limit:?}: A {} B {}; A logs {:#?}",
            self.a.state(),
            self.b.state(),
            self.a_logs
        );
    }

    /// Links still open.
    pub(super) fn open_links(&self) -> Vec<(ConnId, bool)> {
        self.links
            .iter()
            .filter(|l| l.open)
            .map(|l| (l.id, l.from_a))
            .collect()
    }
}

/// Status texts of a log list.
pub(super) fn texts(logs: &[BgpLogEvent]) -> Vec<String> {
    logs.iter()
        .map(|l| match l {
            BgpLogEvent::Status { details, .. } => details.clone(),
            BgpLogEvent::Route(r) => format!(
                "{} {} {}",
                r.status.as_str(),
                r.prefix,
                r.details.clone().unwrap_or_default()
            ),
        })
        .collect()
}

/// One session facing a scripted peer.
#[derive(Debug)]
pub(super) struct Scripted {
    pub now: Instant,
    pub s: Session,
    pub conn: ConnId,
    /// Messages the session sent, parsed.
    pub sent: Vec<Message>,
    pub actions: Vec<Action>,
    pub logs: Vec<BgpLogEvent>,
    pub codec: Codec,
}

impl Scripted {
    /// Starts `cfg`, accepts its connection and returns it in OpenSent.
    pub(super) fn new(cfg: PeerConfig) -> Self {
        let now = Instant::now();
        let mut s = Session::new(cfg);
        s.handle_start(now);
        let mut me = Self {
            now,
            s,
            conn: ConnId(7),
            sent: Vec::new(),
            actions: Vec::new(),
            logs: Vec::new(),
            codec: Codec::default(),
        };
        me.drain();
        assert!(me.actions.contains(&Action::Connect));
        me.s.handle_connected(now, ConnId(7), Direction::Outgoing);
        me.drain();
        assert!(matches!(me.sent.last(), Some(Message::Open(_))));
        me
    }

    /// The OPEN a peer with `asn`/`hold` would send.
    pub(super) fn peer_open(asn: u32, hold: u16) -> Open {
        Open {
            version: 4,
            my_as: u16::try_from(asn).unwrap_or(23456),
            hold_time: hold,
            bgp_id: Ipv4Addr::new(10, 9, 9, 9),
            capabilities: vec![
                Capability::Multiprotocol {
                    afi: crate::bgp::wire::Afi::Ipv4,
                    safi: crate::bgp::wire::Safi::Unicast,
                },
                Capability::Multiprotocol {
                    afi: crate::bgp::wire::Afi::Ipv6,
                    safi: crate::bgp::wire::Safi::Unicast,
                },
                Capability::FourOctetAs(asn),
            ],
        }
    }

    /// Feeds a message from the peer.
    pub(super) fn recv(&mut self, m: &Message) {
        let b = m.to_bytes(self.codec);
        self.recv_bytes(&b);
    }

    /// Feeds raw bytes from the peer.
    pub(super) fn recv_bytes(&mut self, b: &[u8]) {
        let now = self.now;
        self.s.handle_data(now, self.conn, b);
        self.drain();
    }

    /// Advances time, firing timers.
    pub(super) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.s.poll_timeout().filter(|t| *t <= end) {
            self.now = self.now.max(t);
            let now = self.now;
            self.s.handle_timeout(now);
            self.drain();
        }
        self.now = end;
    }

    /// Collects what the session produced.
    pub(super) fn drain(&mut self) {
        while let Some(t) = self.s.poll_transmit() {
            let mut buf = &t.data[..];
            while !buf.is_empty() {
                let len = Message::frame_len(buf).unwrap().unwrap();
                self.sent
                    .push(Message::parse(&buf[..len], self.codec).unwrap());
                buf = &buf[len..];
            }
        }
        while let Some(a) = self.s.poll_action() {
            self.actions.push(a);
        }
        while let Some(l) = self.s.poll_log() {
            self.logs.push(l);
        }
    }

    /// OPEN + KEEPALIVE from the peer: the session is Established.
    pub(super) fn establish(cfg: PeerConfig) -> Self {
        let peer_asn = cfg.peer_asn;
        let mut me = Self::new(cfg);
        me.recv(&Message::Open(Self::peer_open(peer_asn, 30)));
        assert_eq!(me.s.state(), State::OpenConfirm);
        me.recv(&Message::Keepalive);
        assert_eq!(me.s.state(), State::Established);
        me
    }
}
