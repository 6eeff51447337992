//! Dispatch of ISAKMP datagrams to [`Ikev1Sa`]s by cookie pair, for the
//! tunnels allowed to speak IKEv1: Main Mode message 1 from a configured
//! peer creates a responder SA, Aggressive Mode is refused, anything else
//! unknown is dropped and counted. INITIAL-CONTACT in a new SA's Main
//! Mode deletes the peer's older SAs (RFC 2407 § 4.6.3.3).
//!
//! Same call order as [`Ikev1Sa`]; events carry the tunnel index.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Instant;

use crate::ike::Rng;
use crate::ike::sa::{Datagram, Event, IkeConfig, PhaseState, Transmit};

use super::sa::{Ikev1Sa, strip_marker};
use super::wire::{ExchangeType, Header, Reader};

/// Datagrams dropped, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drops {
    /// Not an ISAKMP header (or ESP / keepalive on 4500).
    pub malformed: u64,
    /// From an address no IKEv1 tunnel is configured for.
    pub unknown_peer: u64,
    /// Cookies of no SA we hold.
    pub unknown_sa: u64,
    /// Refused Main Mode message 1 (no proposal, Aggressive Mode, …).
    pub refused: u64,
}

/// The IKEv1 side of the tunnels (see the module docs).
#[derive(Debug, Default)]
pub struct Endpoint {
    tunnels: Vec<IkeConfig>,
    sas: Vec<(usize, Ikev1Sa)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<(usize, Event)>,
    drops: Drops,
}

impl Endpoint {
    /// An endpoint without tunnels.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tunnel; returns its index.
    pub fn add_tunnel(&mut self, cfg: IkeConfig) -> usize {
        self.tunnels.push(cfg);
        self.tunnels.len() - 1
    }

    /// Drop counters.
    #[must_use]
    pub fn drops(&self) -> Drops {
        self.drops
    }

    /// Starts Main Mode as initiator with the tunnel of `remote`.
    pub fn initiate(&mut self, now: Instant, rng: &mut dyn Rng, remote: IpAddr) -> bool {
        let Some(t) = self.tunnels.iter().position(|c| c.remote == remote) else {
            return false;
        };
        let sa = Ikev1Sa::initiate(self.tunnels[t].clone(), now, rng);
        self.sas.push((t, sa));
        self.collect();
        true
    }

    /// `ike_phase1_state` / `ike_phase2_state` of the tunnel (spec
    /// § 20.3), from its most advanced ISAKMP SA; `Down` when it has none.
    #[must_use]
    pub fn tunnel_state(&self) -> (PhaseState, PhaseState) {
        let rank = |p: PhaseState| match p {
            PhaseState::Down => 0,
            PhaseState::Negotiating => 1,
            PhaseState::Rekeying => 2,
            PhaseState::Established => 3,
        };
        let best = |f: fn(&Ikev1Sa) -> PhaseState| {
            self.sas
                .iter()
                .map(|(_, s)| f(s))
                .max_by_key(|p| rank(*p))
                .unwrap_or(PhaseState::Down)
        };
        (best(Ikev1Sa::phase1_state), best(Ikev1Sa::phase2_state))
    }

    /// Responder SAs whose Main Mode has not completed.
    #[must_use]
    pub fn half_open(&self) -> usize {
        self.sas.iter().filter(|(_, s)| s.is_half_open()).count()
    }

    /// Whether an ISAKMP SA is established.
    #[must_use]
    pub fn is_established(&self) -> bool {
        self.sas.iter().any(|(_, s)| s.is_established())
    }

    /// Closes every SA (DELETE sent).
    pub fn close_all(&mut self, rng: &mut dyn Rng) {
        for (_, sa) in &mut self.sas {
            sa.close(rng);
        }
        self.collect();
    }

    /// Handles one datagram received on port 500 or 4500.
    pub fn handle_datagram(&mut self, now: Instant, rng: &mut dyn Rng, d: Datagram<'_>) {
        let Some(bytes) = strip_marker(d) else {
            // ESP or a NAT-T keepalive: not ours.
            return;
        };
        let Ok(h) = Header::parse(&mut Reader::new(bytes)) else {
            self.drops.malformed += 1;
            return;
        };
        if let Some((_, sa)) = self.sas.iter_mut().find(|(_, s)| {
            // A retransmitted message 1 (responder cookie still 0)
            // goes to the SA it created, which answers from its cache;
            // message 2 reaches our initiator before it knows cky_r.
            s.cky_i() == h.cky_i && (s.cky_r() == h.cky_r || h.cky_r == 0 || s.cky_r() == 0)
        }) {
            sa.handle_datagram(now, rng, d);
            self.collect();
            return;
        }
        if h.cky_r != 0 {
            self.drops.unknown_sa += 1;
            return;
        }
        let Some(t) = self.tunnels.iter().position(|c| c.remote == d.remote.ip()) else {
            self.drops.unknown_peer += 1;
            return;
        };
        if !matches!(
            h.exchange,
            ExchangeType::IdentityProtection | ExchangeType::Aggressive
        ) {
            self.drops.unknown_sa += 1;
            return;
        }
        match Ikev1Sa::accept(self.tunnels[t].clone(), now, rng, d) {
            Ok(sa) => self.sas.push((t, sa)),
            Err(r) => {
                self.drops.refused += 1;
                for l in r.log {
                    self.events.push_back((t, Event::Log(l)));
                }
                if let Some(a) = r.answer {
                    self.transmits.push_back(a);
                }
            }
        }
        self.collect();
    }

    /// Runs due timers.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut dyn Rng) {
        for (_, sa) in &mut self.sas {
            if sa.poll_timeout().is_some_and(|t| t <= now) {
                sa.handle_timeout(now, rng);
            }
        }
        self.collect();
    }

    /// The earliest timer of any SA.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas.iter().filter_map(|(_, s)| s.poll_timeout()).min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, with its tunnel index.
    pub fn poll_event(&mut self) -> Option<(usize, Event)> {
        self.events.pop_front()
    }

    /// Moves the SAs' output here; applies INITIAL-CONTACT; forgets
    /// closed SAs.
    fn collect(&mut self) {
        let mut contact: Vec<(usize, u64, u64)> = Vec::new();
        for (t, sa) in &mut self.sas {
            while let Some(x) = sa.poll_transmit() {
                self.transmits.push_back(x);
            }
            let mut up = false;
            while let Some(e) = sa.poll_event() {
                up |= matches!(e, Event::IkeSaUp { .. });
                self.events.push_back((*t, e));
            }
            if up && sa.initial_contact() {
                contact.push((*t, sa.cky_i(), sa.cky_r()));
            }
        }
        // IPsec SAs of an ISAKMP SA the peer deleted move to its newer
        // ISAKMP SA (a phase 1 rekey), or are reported down.
        let mut orphans: Vec<(usize, Vec<super::sa::HeldSa>)> = Vec::new();
        for (t, sa) in &mut self.sas {
            let o = sa.take_orphans();
            if !o.is_empty() {
                orphans.push((*t, o));
            }
        }
        for (t, o) in orphans {
            let heir = self
                .sas
                .iter_mut()
                .find(|(u, s)| *u == t && s.is_established());
            let left = match heir {
                Some((_, s)) => {
                    let n = o.len();
                    let left = s.adopt(o);
                    if left.is_empty() {
                        self.events.push_back((
                            t,
                            Event::Log(format!(
                                "{n} phase 2 SA(s) kept on the newer ISAKMP SA with the peer"
                            )),
                        ));
                    }
                    left
                }
                None => o,
            };
            for c in left {
                self.events.push_back((
                    t,
                    Event::ChildSaDown {
                        inbound_spi: c.inbound_spi,
                        outbound_spi: c.outbound_spi,
                    },
                ));
            }
        }
        for (t, ci, cr) in contact {
            for (u, sa) in &mut self.sas {
                if *u == t && (sa.cky_i(), sa.cky_r()) != (ci, cr) && !sa.is_closed() {
                    self.events.push_back((
                        t,
                        Event::Log("INITIAL-CONTACT: deleting the peer's older ISAKMP SA".into()),
                    ));
                    sa.replaced();
                    while let Some(e) = sa.poll_event() {
                        self.events.push_back((t, e));
                    }
                }
            }
        }
        self.sas.retain(|(_, s)| !s.is_closed());
    }
}
