//! Datagram dispatch for several tunnels, and COOKIE under load
//! (RFC 7296 § 2.6).
//!
//! An [`Endpoint`] owns the IKE SAs of every configured tunnel. A new
//! IKE_SA_INIT request from a configured peer creates a responder
//! [`IkeSa`]; while `half_open_threshold` or more responder SAs are
//! half-open — or while the caller says the whole appliance is under load
//! ([`Endpoint::set_cookies_required`]: the daemon runs one endpoint per
//! tunnel and counts half-open SAs across all of them) — new requests
//! must echo a COOKIE first (stateless: nothing is kept and no DH is
//! computed for a request without a valid cookie).
//!
//! IKE_SA_INIT from an address that is no configured peer is never
//! answered (counted in [`Counters::init_unknown_peer`]): a site-to-site
//! concentrator knows every customer gateway's address, so such a request
//! cannot lead to an SA, and any answer (even a COOKIE) would only tell a
//! scanner that an IKE responder listens here and make us a reflector for
//! spoofed sources. The flood cookies defend against is the one that
//! spoofs configured peers' addresses: each such request would otherwise
//! cost a DH computation and a half-open SA.
//!
//! # An IKE SA without its Child SA
//!
//! When the first Child SA is refused (TS_UNACCEPTABLE, NO_PROPOSAL_CHOSEN
//! in IKE_AUTH, either role) the IKE SA stays up without it (RFC 7296
//! § 1.2) and the tunnel stays down. The operator may fix the peer, so
//! the endpoint retries with a backoff ([`CHILD_RETRY_FIRST`] doubling to
//! [`CHILD_RETRY_MAX`]), alternating two ways: a CREATE_CHILD_SA for a new
//! Child SA on the existing IKE SA ([`IkeSa::create_child`]), and — when
//! we may initiate (a `start` tunnel, or an IKE SA we initiated) — a fresh
//! IKE SA (DELETE, then IKE_SA_INIT/IKE_AUTH with the Child SA), for a
//! peer that keeps the configuration an IKE SA was set up with until the
//! IKE SA is replaced (strongSwan 5.9.8 takes a `swanctl --load-conns` fix
//! on the existing IKE SA: the e2e test comes up on the first retry).
//! [`Endpoint::child_retry`] tells why the tunnel is down and when the next
//! attempt is; [`Counters::child_sa_failures`] and
//! [`Counters::child_sa_retries`] count them.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use std::time::Duration;

use super::Rng;
use super::sa::{Datagram, DownReason, Event, IkeConfig, IkeSa, PhaseState, Transmit};
use super::wire::{ExchangeType, Header, NotifyType, Reader};
use crate::config::{DpdTimeoutAction, StartupAction};

/// Default number of half-open SAs from which cookies are required.
pub const DEFAULT_HALF_OPEN_THRESHOLD: usize = 32;

/// What the endpoint did with IKE_SA_INIT requests it did not take (for
/// the daemon's counters and metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// COOKIE notifications sent (RFC 7296 § 2.6): a request without a
    /// valid cookie while cookies were required.
    pub cookies_sent: u64,
    /// Requests that carried a valid cookie and were taken while cookies
    /// were required.
    pub cookies_accepted: u64,
    /// IKE_SA_INIT requests from addresses that are no configured peer,
    /// dropped unanswered.
    pub init_unknown_peer: u64,
    /// IKE_SA_INIT requests refused with an error notify (no proposal,
    /// INVALID_KE_PAYLOAD, syntax) or dropped as malformed.
    pub init_refused: u64,
    /// New Child SAs not established ([`Event::ChildSaFailed`]).
    pub child_sa_failures: u64,
    /// Retries started for them (a CREATE_CHILD_SA or a fresh IKE SA).
    pub child_sa_retries: u64,
}

/// First retry of a Child SA that was not established, after this long.
pub const CHILD_RETRY_FIRST: Duration = Duration::from_secs(10);
/// Longest delay between Child SA retries.
pub const CHILD_RETRY_MAX: Duration = Duration::from_secs(300);

/// The delay before retry `attempt` (0-based) of a Child SA:
/// [`CHILD_RETRY_FIRST`] doubling up to [`CHILD_RETRY_MAX`].
#[must_use]
pub fn child_retry_delay(attempt: u32) -> Duration {
    CHILD_RETRY_FIRST
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(CHILD_RETRY_MAX)
}

/// A tunnel whose IKE SA is up without its Child SA, and the next retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildRetry {
    /// The tunnel's peer.
    pub peer: IpAddr,
    /// The last failure's error notify.
    pub reason: NotifyType,
    /// The peer refused ours (`true`) or we refused the peer's.
    pub by_peer: bool,
    /// Failures so far.
    pub failures: u32,
    /// When the next retry starts; `None` while one is in flight.
    pub next: Option<Instant>,
    /// The IKE SA is being replaced by the retry: its DELETE keeps this.
    replacing: bool,
}

/// The IKE endpoint of the appliance (see the module docs).
#[derive(Debug)]
pub struct Endpoint {
    tunnels: Vec<IkeConfig>,
    sas: Vec<IkeSa>,
    secret: [u8; 32],
    half_open_threshold: usize,
    transmits: VecDeque<Transmit>,
    events: VecDeque<(IpAddr, Event)>,
    cookies_required: bool,
    counters: Counters,
    /// Scheduled (re-)initiations: when, peer, consecutive failures.
    restarts: Vec<(Instant, IpAddr)>,
    failures: Vec<(IpAddr, u32)>,
    /// Tunnels up without their Child SA (see the module docs).
    child_retries: Vec<ChildRetry>,
    now: Option<Instant>,
}

/// Delay before re-initiating after a DPD restart or a peer's DELETE.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);
/// Longest delay between retries of a `start` tunnel that keeps failing.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

impl Endpoint {
    /// An endpoint with a fresh cookie secret.
    #[must_use]
    pub fn new(rng: &mut dyn Rng, half_open_threshold: usize) -> Self {
        let mut secret = [0u8; 32];
        rng.fill(&mut secret);
        Self {
            tunnels: Vec::new(),
            sas: Vec::new(),
            secret,
            half_open_threshold,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            cookies_required: false,
            counters: Counters::default(),
            restarts: Vec::new(),
            failures: Vec::new(),
            child_retries: Vec::new(),
            now: None,
        }
    }

    /// Adds a tunnel (keyed by its peer address).
    pub fn add_tunnel(&mut self, cfg: IkeConfig) {
        self.tunnels.retain(|t| t.remote != cfg.remote);
        self.tunnels.push(cfg);
    }

    /// Initiates every tunnel whose startup action is `start` (spec § 6).
    pub fn start(&mut self, now: Instant, rng: &mut dyn Rng) {
        let peers: Vec<IpAddr> = self
            .tunnels
            .iter()
            .filter(|t| t.startup_action == StartupAction::Start)
            .map(|t| t.remote)
            .collect();
        for p in peers {
            self.initiate(now, rng, p);
        }
    }

    /// Starts an IKE SA to a configured peer.
    ///
    /// # Errors
    /// `false` if the peer is not configured or the DH group is unusable.
    pub fn initiate(&mut self, now: Instant, rng: &mut dyn Rng, remote: IpAddr) -> bool {
        let Some(cfg) = self.tunnels.iter().find(|t| t.remote == remote).cloned() else {
            return false;
        };
        match IkeSa::initiate(cfg, now, rng) {
            Ok(sa) => {
                self.sas.push(sa);
                self.drain();
                true
            }
            Err(_) => false,
        }
    }

    /// Rekey Child SA `spi` (either direction) now: the dataplane reports
    /// a soft byte/packet lifetime ([`IkeSa::expedite_child_rekey`]).
    /// `false` when no SA here has it. The rekey itself starts in the next
    /// [`handle_timeout`](Self::handle_timeout), which
    /// [`poll_timeout`](Self::poll_timeout) now reports as due.
    pub fn expedite_child_rekey(&mut self, now: Instant, spi: u32) -> bool {
        self.sas
            .iter_mut()
            .any(|s| s.expedite_child_rekey(now, spi))
    }

    /// Deletes the IKE SAs of a peer (INFORMATIONAL DELETE).
    pub fn close(&mut self, now: Instant, rng: &mut dyn Rng, remote: IpAddr) {
        for s in self.sas.iter_mut().filter(|s| s.config().remote == remote) {
            s.close(now, rng);
        }
        self.drain();
    }

    /// Responder SAs still waiting for IKE_AUTH.
    #[must_use]
    pub fn half_open(&self) -> usize {
        self.sas
            .iter()
            .filter(|s| !s.is_initiator() && s.phase1_state() == PhaseState::Negotiating)
            .count()
    }

    /// `ike_phase1_state` / `ike_phase2_state` of a tunnel (spec § 20.3),
    /// from its most advanced IKE SA; `Down` when it has none.
    #[must_use]
    pub fn tunnel_state(&self, remote: IpAddr) -> (PhaseState, PhaseState) {
        let rank = |p: PhaseState| match p {
            PhaseState::Down => 0,
            PhaseState::Negotiating => 1,
            PhaseState::Rekeying => 2,
            PhaseState::Established => 3,
        };
        let best = |f: fn(&IkeSa) -> PhaseState| {
            self.sas
                .iter()
                .filter(|s| s.config().remote == remote)
                .map(f)
                .max_by_key(|p| rank(*p))
                .unwrap_or(PhaseState::Down)
        };
        (best(IkeSa::phase1_state), best(IkeSa::phase2_state))
    }

    /// Why the tunnel to `remote` has an IKE SA but no Child SA, and when
    /// the next retry is (see the module docs).
    #[must_use]
    pub fn child_retry(&self, remote: IpAddr) -> Option<&ChildRetry> {
        self.child_retries.iter().find(|r| r.peer == remote)
    }

    /// COOKIE notifications sent so far.
    #[must_use]
    pub fn cookies_sent(&self) -> u64 {
        self.counters.cookies_sent
    }

    /// What happened to IKE_SA_INIT requests that created no SA.
    #[must_use]
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Require cookies from every new IKE_SA_INIT regardless of this
    /// endpoint's own half-open count (the caller's load signal, e.g. the
    /// half-open SAs of all its endpoints together).
    pub fn set_cookies_required(&mut self, on: bool) {
        self.cookies_required = on;
    }

    /// Whether a new IKE_SA_INIT must carry a cookie now.
    #[must_use]
    pub fn cookies_required(&self) -> bool {
        self.cookies_required || self.half_open() >= self.half_open_threshold
    }

    /// The IKE SAs.
    #[must_use]
    pub fn sas(&self) -> &[IkeSa] {
        &self.sas
    }

    fn cookie(&self, ni: &[u8], ip: SocketAddr, spi_i: u64) -> Vec<u8> {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.secret);
        ctx.update(ni);
        match ip.ip() {
            IpAddr::V4(a) => ctx.update(&a.octets()),
            IpAddr::V6(a) => ctx.update(&a.octets()),
        }
        ctx.update(&spi_i.to_be_bytes());
        // Version ID of the secret (RFC 7296 § 2.6), then the hash.
        let mut v = vec![0, 0, 0, 1];
        v.extend_from_slice(ctx.finish().as_ref());
        v
    }

    /// Processes a datagram from any IKE socket.
    pub fn handle_datagram(&mut self, now: Instant, rng: &mut dyn Rng, d: Datagram<'_>) {
        self.now = Some(now);
        let body = if d.local.port() == super::sa::NAT_T_PORT {
            match d.payload {
                [0, 0, 0, 0, rest @ ..] => rest,
                _ => return,
            }
        } else {
            d.payload
        };
        let Ok((h, _, _)) = Header::parse(&mut Reader::new(body)) else {
            return;
        };
        let existing = self.sas.iter().position(|s| {
            s.spi_i() == h.spi_i
                && (s.spi_r() == h.spi_r || (s.spi_r() == 0 && h.is_response()) || h.spi_r == 0)
                && s.remote().ip() == d.remote.ip()
        });
        if let Some(i) = existing {
            self.sas[i].handle_datagram(now, rng, d);
        } else if h.exchange == ExchangeType::IkeSaInit && !h.is_response() && h.spi_r == 0 {
            let Some(cfg) = self
                .tunnels
                .iter()
                .find(|t| t.remote == d.remote.ip())
                .cloned()
            else {
                self.counters.init_unknown_peer += 1;
                return;
            };
            let busy = self.cookies_required();
            let cookie_fn = |ni: &[u8], ip: SocketAddr, spi: u64| self.cookie(ni, ip, spi);
            let r = IkeSa::accept(cfg, now, rng, d, if busy { Some(&cookie_fn) } else { None });
            match r {
                Ok(sa) => {
                    if busy {
                        self.counters.cookies_accepted += 1;
                    }
                    self.sas.push(sa);
                }
                Err(refused) => {
                    for l in refused.logs {
                        self.events.push_back((d.remote.ip(), Event::Log(l)));
                    }
                    if refused.cookie {
                        self.counters.cookies_sent += 1;
                    } else {
                        self.counters.init_refused += 1;
                    }
                    if let Some(t) = refused.transmit {
                        self.transmits.push_back(t);
                    }
                }
            }
        }
        self.drain();
    }

    /// Runs every SA's timers and the scheduled re-initiations.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut dyn Rng) {
        self.now = Some(now);
        let due: Vec<IpAddr> = self
            .restarts
            .iter()
            .filter(|(t, _)| *t <= now)
            .map(|(_, p)| *p)
            .collect();
        self.restarts.retain(|(t, _)| *t > now);
        for p in due {
            // The peer may have re-initiated meanwhile: an SA we started,
            // or one that got past IKE_SA_INIT, makes ours redundant. A
            // half-open responder SA does not: anyone can make one by
            // sending a single IKE_SA_INIT from the peer's address, and
            // it must not hold the tunnel down until it times out.
            let busy = self.sas.iter().any(|s| {
                s.config().remote == p
                    && !s.is_closed()
                    && (s.is_initiator() || s.phase1_state() != PhaseState::Negotiating)
            });
            if !busy {
                self.events
                    .push_back((p, Event::Log("re-initiating IKE_SA".to_owned())));
                self.initiate(now, rng, p);
            }
        }
        self.retry_children(now, rng);
        for s in &mut self.sas {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now, rng);
            }
        }
        self.drain();
    }

    /// Starts the Child SA retries that are due (see the module docs):
    /// odd-numbered attempts (1st, 3rd, …) a CREATE_CHILD_SA on the IKE
    /// SA, even-numbered ones a fresh IKE SA when we may initiate.
    fn retry_children(&mut self, now: Instant, rng: &mut dyn Rng) {
        let due: Vec<IpAddr> = self
            .child_retries
            .iter()
            .filter(|r| r.next.is_some_and(|t| t <= now))
            .map(|r| r.peer)
            .collect();
        for peer in due {
            let sa = self.sas.iter().position(|s| {
                s.config().remote == peer
                    && !s.is_closed()
                    && s.phase1_state() == PhaseState::Established
            });
            let Some(i) = sa else {
                // The IKE SA is gone: the tunnel's restart rules apply.
                self.child_retries.retain(|r| r.peer != peer);
                continue;
            };
            if self.sas[i].phase2_state() != PhaseState::Down {
                // A Child SA came up meanwhile (the peer made one).
                self.child_retries.retain(|r| r.peer != peer);
                continue;
            }
            let Some(r) = self.child_retries.iter_mut().find(|r| r.peer == peer) else {
                continue;
            };
            let fresh_ike = r.failures % 2 == 0
                && (self.sas[i].is_initiator()
                    || self.sas[i].config().startup_action == StartupAction::Start);
            if fresh_ike {
                r.next = None;
                r.replacing = true;
                self.counters.child_sa_retries += 1;
                self.events.push_back((
                    peer,
                    Event::Log(
                        "AWS tunnel retrying CHILD_SA: replacing the IKE_SA (a new IKE_SA_INIT and IKE_AUTH)"
                            .to_owned(),
                    ),
                ));
                self.sas[i].close(now, rng);
                self.initiate(now, rng, peer);
            } else if self.sas[i].create_child(now, rng) {
                r.next = None;
                self.counters.child_sa_retries += 1;
            } else {
                // A request in flight: try again shortly.
                r.next = Some(now + RESTART_DELAY);
            }
        }
    }

    /// Earliest timer.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas
            .iter()
            .filter_map(IkeSa::poll_timeout)
            .chain(self.restarts.iter().map(|(t, _)| *t))
            .chain(self.child_retries.iter().filter_map(|r| r.next))
            .min()
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event, with the tunnel's peer address.
    pub fn poll_event(&mut self) -> Option<(IpAddr, Event)> {
        self.events.pop_front()
    }

    fn drain(&mut self) {
        let seen = self.events.len();
        let mut spawned = Vec::new();
        for s in &mut self.sas {
            spawned.extend(s.take_spawned());
        }
        self.sas.extend(spawned);
        let mut fresh = Vec::new();
        for s in &mut self.sas {
            while let Some(t) = s.poll_transmit() {
                self.transmits.push_back(t);
            }
            let peer = s.config().remote;
            while let Some(e) = s.poll_event() {
                if matches!(e, Event::IkeSaUp { .. }) && s.initial_contact() {
                    fresh.push((peer, s.spi_i(), s.spi_r()));
                }
                self.events.push_back((peer, e));
            }
        }
        // INITIAL_CONTACT (RFC 7296 § 2.4): the peer lost every other IKE
        // SA it had with us; one IKE SA per tunnel (spec § 19).
        for (peer, i, r) in fresh {
            for s in &mut self.sas {
                if s.config().remote == peer && (s.spi_i(), s.spi_r()) != (i, r) && !s.is_closed() {
                    s.discard(DownReason::Replaced);
                    while let Some(e) = s.poll_event() {
                        self.events.push_back((peer, e));
                    }
                }
            }
        }
        self.sas.retain(|s| !s.is_closed());
        self.schedule_restarts(seen);
    }

    /// Tunnel behaviour from the options (spec § 3.1, § 6):
    ///
    /// * DPD timeout: `restart` re-initiates (until the tunnel is up
    ///   again); `clear` tears the tunnel down and leaves it down until
    ///   the peer initiates, also for a `start` tunnel (the startup action
    ///   says who brings a new or modified tunnel up; after `clear` our
    ///   side re-initiating would make it `restart`); `none` keeps the SA.
    /// * Otherwise a `start` tunnel re-initiates whenever its IKE SA goes
    ///   away (peer DELETE, failure), retrying forever with a backoff up
    ///   to [`MAX_RETRY_DELAY`].
    fn schedule_restarts(&mut self, seen: usize) {
        let Some(now) = self.now else { return };
        let mut add = Vec::new();
        let mut logs = Vec::new();
        for (peer, e) in self.events.iter().skip(seen) {
            match e {
                Event::IkeSaUp { .. } => self.failures.retain(|(p, _)| p != peer),
                Event::ChildSaUp(_) => self.child_retries.retain(|r| r.peer != *peer),
                Event::ChildSaFailed { reason, by_peer } => {
                    self.counters.child_sa_failures += 1;
                    let failures = match self.child_retries.iter_mut().find(|r| r.peer == *peer) {
                        Some(r) => {
                            r.failures += 1;
                            r.reason = *reason;
                            r.by_peer = *by_peer;
                            r.failures
                        }
                        None => {
                            self.child_retries.push(ChildRetry {
                                peer: *peer,
                                reason: *reason,
                                by_peer: *by_peer,
                                failures: 1,
                                next: None,
                                replacing: false,
                            });
                            1
                        }
                    };
                    let delay = child_retry_delay(failures - 1);
                    if let Some(r) = self.child_retries.iter_mut().find(|r| r.peer == *peer) {
                        r.next = Some(now + delay);
                    }
                    logs.push((
                        *peer,
                        format!(
                            "AWS tunnel has IKE_SA but no CHILD_SA ({reason:?}, {}): retry {failures} in {} s",
                            if *by_peer { "refused by the peer" } else { "refused by us" },
                            delay.as_secs()
                        ),
                    ));
                }
                Event::IkeSaDown { .. }
                    if self
                        .child_retries
                        .iter()
                        .any(|r| r.peer == *peer && r.replacing) =>
                {
                    // Our own retry closed it; the new IKE SA reports.
                    if let Some(r) = self.child_retries.iter_mut().find(|r| r.peer == *peer) {
                        r.replacing = false;
                    }
                }
                Event::IkeSaDown { reason } => {
                    self.child_retries.retain(|r| r.peer != *peer);
                    let Some(cfg) = self.tunnels.iter().find(|t| t.remote == *peer) else {
                        continue;
                    };
                    // A restart in progress (not yet up again) keeps
                    // retrying like a `start` tunnel.
                    let start = cfg.startup_action == StartupAction::Start
                        || self.failures.iter().any(|(p, _)| p == peer);
                    let again = match reason {
                        DownReason::Rekeyed | DownReason::Closed => false,
                        // `clear` ends the tunnel until the peer comes
                        // back on its own, `start` or not: otherwise it
                        // would be `restart` (spec § 3.1, § 6).
                        DownReason::DpdTimeout => cfg.dpd_action == DpdTimeoutAction::Restart,
                        _ => start,
                    };
                    if again {
                        add.push(*peer);
                    }
                }
                _ => {}
            }
        }
        for (peer, line) in logs {
            self.events.push_back((peer, Event::Log(line)));
        }
        for peer in add {
            if self.restarts.iter().any(|(_, p)| *p == peer) {
                continue;
            }
            let n = match self.failures.iter_mut().find(|(p, _)| *p == peer) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    self.failures.push((peer, 0));
                    0
                }
            };
            let delay = (RESTART_DELAY * 2u32.saturating_pow(n.min(6))).min(MAX_RETRY_DELAY);
            self.restarts.push((now + delay, peer));
        }
    }
}
