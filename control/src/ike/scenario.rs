//! Stateful IKE fuzzing (issue 17): two [`Endpoint`]s in memory, A the
//! initiator (startup action `start`, DPD `restart`) and B the responder
//! under attack, run a valid tunnel in virtual time — IKE_SA_INIT,
//! IKE_AUTH, Child SA and IKE SA rekeys by CREATE_CHILD_SA, DPD by
//! INFORMATIONAL — while a list of [`Action`]s perturbs the wire: flip a
//! byte of, truncate, duplicate, reorder or drop the next datagram in
//! either direction, replay any earlier one, inject arbitrary bytes.
//!
//! [`run`] checks, and panics when one fails (a fuzz crash, a proptest
//! failure):
//!
//! 1. nothing panics;
//! 2. once both sides have a Child SA, and no datagram is dropped or cut
//!    short, each side keeps at least one Child SA at every step (rekeys
//!    make before they break; DPD keeps the IKE SA up): corrupted,
//!    replayed, reordered and injected datagrams never take an
//!    established tunnel down;
//! 3. after the actions, with a clean wire, the tunnel is (again) up on
//!    both sides within [`HEAL`], and A's outbound Child SA is B's inbound
//!    one with the same keys (a subsequent valid exchange works).
//!
//! Used by the cargo-fuzz target `ike_session` (`control/fuzz`) and by the
//! proptest `ike::tests::stateful_ike_sessions_survive_perturbation`.
//! Only in test and fuzzing builds.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::Rng;
use super::endpoint::Endpoint;
use super::sa::{ChildSa, Datagram, Event, IkeConfig, Transmit};
use crate::config::{
    DhGroup, DpdTimeoutAction, EncryptionAlgorithm, IntegrityAlgorithm, PreSharedKey,
    StartupAction, TunnelOptions,
};

/// A clean wire brings the tunnel up within this long after the actions
/// (A's restart backoff is at most 60 s, a half-open SA times out, DPD
/// declares a dead IKE SA in 30 s).
pub const HEAL: Duration = Duration::from_secs(600);

/// Longest run of [`Action::Advance`] in all, so a run stays short.
const MAX_ADVANCE: Duration = Duration::from_secs(3600);

/// One perturbation; `to_b` picks the direction (A → B or B → A).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Deliver everything and let `secs` seconds of virtual time pass
    /// (timers: retransmissions, rekeys, DPD).
    Advance(u8),
    /// XOR `xor` into byte `offset` (modulo its length) of the next
    /// datagram.
    Mutate {
        /// Direction.
        to_b: bool,
        /// Byte to change.
        offset: u16,
        /// Bits to flip (0 is taken as 0x01).
        xor: u8,
    },
    /// Cut the next datagram to `len` bytes (modulo its length).
    Truncate {
        /// Direction.
        to_b: bool,
        /// New length.
        len: u16,
    },
    /// Deliver the next datagram twice.
    Duplicate {
        /// Direction.
        to_b: bool,
    },
    /// Deliver the next datagram after the one that follows it.
    Reorder {
        /// Direction.
        to_b: bool,
    },
    /// Lose the next datagram.
    Drop {
        /// Direction.
        to_b: bool,
    },
    /// Deliver again the `index`-th (modulo) datagram delivered so far.
    Replay {
        /// Which one.
        index: u16,
    },
    /// Deliver these bytes to B from A's address, on port 500 or 4500.
    Inject {
        /// NAT-T port.
        nat_t: bool,
        /// The datagram.
        bytes: Vec<u8>,
    },
}

/// What happens to the next datagram of one direction.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Mutate(u16, u8),
    Truncate(u16),
    Duplicate,
    Reorder,
    Drop,
}

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

struct XorShift(u64);

impl Rng for XorShift {
    fn fill(&mut self, dst: &mut [u8]) {
        for b in dst {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0.to_le_bytes()[0];
        }
    }
}

fn config(local: IpAddr, remote: IpAddr, initiator: bool) -> IkeConfig {
    let o = TunnelOptions {
        pre_shared_key: Some(PreSharedKey::new("scenario.psk.0123").expect("psk")),
        phase1_encryption_algorithms: vec![EncryptionAlgorithm::Aes128Gcm16],
        phase2_encryption_algorithms: vec![EncryptionAlgorithm::Aes128Gcm16],
        phase1_integrity_algorithms: vec![IntegrityAlgorithm::Sha2_256],
        phase2_integrity_algorithms: vec![IntegrityAlgorithm::Sha2_256],
        phase1_dh_groups: vec![DhGroup::Ecp256],
        phase2_dh_groups: vec![DhGroup::Ecp256],
        ..TunnelOptions::default()
    };
    let any = vec!["0.0.0.0/0".parse().expect("net")];
    let mut c = IkeConfig::from_tunnel(&o, local, remote, any.clone(), any);
    // Short lifetimes: Child SA and IKE SA rekeys happen within a run.
    c.phase1_lifetime = Duration::from_secs(900);
    c.phase2_lifetime = Duration::from_secs(300);
    c.rekey_margin = Duration::from_secs(60);
    c.dpd_timeout = Duration::from_secs(30);
    if initiator {
        c.startup_action = StartupAction::Start;
        c.dpd_action = DpdTimeoutAction::Restart;
    }
    c
}

/// What a [`run`] went through (for tests that the scenario did what it
/// says).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Child SAs A brought up (the first and every rekey or re-creation).
    pub child_sas: usize,
    /// IKE SAs A brought up or rekeyed.
    pub ike_sas: usize,
    /// Both sides had a Child SA before the clean-wire phase.
    pub established_under_actions: bool,
}

/// One side: its endpoint and the Child SAs it has up (by inbound SPI).
struct Side {
    ep: Endpoint,
    children: BTreeMap<u32, Box<ChildSa>>,
    report: Report,
}

impl Side {
    fn drain(&mut self) {
        while let Some((_, e)) = self.ep.poll_event() {
            match e {
                Event::ChildSaUp(c) => {
                    self.report.child_sas += 1;
                    self.children.insert(c.inbound.spi, c);
                }
                Event::IkeSaUp { .. } | Event::IkeSaRekeyed { .. } => self.report.ike_sas += 1,
                Event::ChildSaDown { inbound_spi, .. } => {
                    self.children.remove(&inbound_spi);
                }
                _ => {}
            }
        }
    }
}

struct World {
    a: Side,
    b: Side,
    rng: XorShift,
    start: Instant,
    now: Instant,
    /// Next fate per direction: [to A, to B].
    fate: [Option<Fate>; 2],
    held: [Option<Transmit>; 2],
    /// Delivered datagrams (to B?, datagram), the last 64.
    history: VecDeque<(bool, Transmit)>,
    /// A datagram was lost or cut: invariant 2 no longer holds.
    lossy: bool,
    /// Both sides had a Child SA.
    established: bool,
}

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = XorShift(seed | 1);
        let mut a = Endpoint::new(&mut rng, 32);
        let mut b = Endpoint::new(&mut rng, 32);
        a.add_tunnel(config(A, B, true));
        b.add_tunnel(config(B, A, false));
        let now = Instant::now();
        a.start(now, &mut rng);
        Self {
            a: Side {
                ep: a,
                children: BTreeMap::new(),
                report: Report::default(),
            },
            b: Side {
                ep: b,
                children: BTreeMap::new(),
                report: Report::default(),
            },
            rng,
            start: now,
            now,
            fate: [None, None],
            held: [None, None],
            history: VecDeque::new(),
            lossy: false,
            established: false,
        }
    }

    fn deliver(&mut self, to_b: bool, t: &Transmit) {
        let d = Datagram {
            local: t.remote,
            remote: t.local,
            payload: &t.payload,
        };
        if to_b {
            self.b.ep.handle_datagram(self.now, &mut self.rng, d);
        } else {
            self.a.ep.handle_datagram(self.now, &mut self.rng, d);
        }
        if self.history.len() == 64 {
            self.history.pop_front();
        }
        self.history.push_back((to_b, t.clone()));
    }

    /// Sends one datagram through its direction's fate.
    fn send(&mut self, to_b: bool, mut t: Transmit) {
        let i = usize::from(to_b);
        match self.fate[i].take() {
            None => self.deliver(to_b, &t),
            Some(Fate::Mutate(off, xor)) => {
                if !t.payload.is_empty() {
                    let n = usize::from(off) % t.payload.len();
                    t.payload[n] ^= if xor == 0 { 1 } else { xor };
                }
                self.deliver(to_b, &t);
            }
            Some(Fate::Truncate(len)) => {
                let n = usize::from(len) % t.payload.len().max(1);
                t.payload.truncate(n);
                self.lossy = true;
                self.deliver(to_b, &t);
            }
            Some(Fate::Duplicate) => {
                self.deliver(to_b, &t);
                self.deliver(to_b, &t);
            }
            Some(Fate::Reorder) => {
                self.held[i] = Some(t);
                return;
            }
            Some(Fate::Drop) => self.lossy = true,
        }
        if let Some(h) = self.held[i].take() {
            self.deliver(to_b, &h);
        }
    }

    /// Moves datagrams until both sides are quiet, checking invariant 2.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(t) = self.a.ep.poll_transmit() {
                moved = true;
                self.send(true, t);
            }
            while let Some(t) = self.b.ep.poll_transmit() {
                moved = true;
                self.send(false, t);
            }
            self.a.drain();
            self.b.drain();
            self.check_up();
            if !moved {
                return;
            }
        }
        panic!("the endpoints never go quiet");
    }

    fn check_up(&mut self) {
        let both = !self.a.children.is_empty() && !self.b.children.is_empty();
        if self.established && !self.lossy {
            assert!(
                both,
                "an established tunnel lost its Child SA at {:?} without any loss on the wire \
                 (A has {}, B has {})",
                self.now - self.start,
                self.a.children.len(),
                self.b.children.len()
            );
        }
        self.established |= both;
    }

    /// Runs timers up to `until`, delivering everything.
    fn advance(&mut self, until: Instant) {
        self.pump();
        loop {
            let next = [self.a.ep.poll_timeout(), self.b.ep.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.a.ep.handle_timeout(self.now, &mut self.rng);
                    self.b.ep.handle_timeout(self.now, &mut self.rng);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    /// Whether A sends with a Child SA that B receives with, same keys,
    /// and the other way round.
    fn agree(&self) -> bool {
        let matches = |from: &Side, to: &Side| {
            from.children.values().any(|c| {
                to.children.get(&c.outbound.spi).is_some_and(|d| {
                    d.inbound.enc_key == c.outbound.enc_key
                        && d.inbound.auth_key == c.outbound.auth_key
                })
            })
        };
        matches(&self.a, &self.b) && matches(&self.b, &self.a)
    }
}

/// Runs `actions` against a fresh pair of endpoints (randomness from
/// `seed`) and checks the invariants of the module docs.
///
/// # Panics
/// When an invariant does not hold (or the engine panics).
pub fn run(seed: u64, actions: &[Action]) -> Report {
    let mut w = World::new(seed);
    let mut advanced = Duration::ZERO;
    for a in actions {
        match a {
            Action::Advance(secs) => {
                let d = Duration::from_secs(u64::from(*secs));
                if advanced + d <= MAX_ADVANCE {
                    advanced += d;
                    let until = w.now + d;
                    w.advance(until);
                }
            }
            Action::Mutate { to_b, offset, xor } => {
                w.fate[usize::from(*to_b)] = Some(Fate::Mutate(*offset, *xor));
            }
            Action::Truncate { to_b, len } => {
                w.fate[usize::from(*to_b)] = Some(Fate::Truncate(*len));
            }
            Action::Duplicate { to_b } => w.fate[usize::from(*to_b)] = Some(Fate::Duplicate),
            Action::Reorder { to_b } => w.fate[usize::from(*to_b)] = Some(Fate::Reorder),
            Action::Drop { to_b } => w.fate[usize::from(*to_b)] = Some(Fate::Drop),
            Action::Replay { index } => {
                if !w.history.is_empty() {
                    let i = usize::from(*index) % w.history.len();
                    let (to_b, t) = w.history[i].clone();
                    w.deliver(to_b, &t);
                    w.pump();
                }
            }
            Action::Inject { nat_t, bytes } => {
                let port = if *nat_t { 4500 } else { 500 };
                let t = Transmit {
                    local: SocketAddr::new(A, port),
                    remote: SocketAddr::new(B, port),
                    payload: bytes.clone(),
                };
                w.deliver(true, &t);
                w.pump();
            }
        }
    }
    let established_under_actions = w.established;
    // A held-back datagram whose successor never came is lost.
    if w.held.iter().any(Option::is_some) {
        w.lossy = true;
    }
    w.fate = [None, None];
    w.held = [None, None];
    // Invariant 3: a clean wire brings (or keeps) the tunnel up.
    let deadline = w.now + HEAL;
    while w.now < deadline && !(w.established && w.agree()) {
        let until = w.now + Duration::from_secs(5);
        w.advance(until);
    }
    assert!(
        w.agree(),
        "no working Child SA {:?} after the actions on a clean wire (A has {}, B has {})",
        HEAL,
        w.a.children.len(),
        w.b.children.len()
    );
    // And it stays up for a while (DPD, rekeys) on the clean wire.
    w.lossy = false;
    let until = w.now + Duration::from_secs(400);
    w.advance(until);
    assert!(w.agree(), "the healed tunnel did not stay up");
    Report {
        established_under_actions,
        ..w.a.report
    }
}
