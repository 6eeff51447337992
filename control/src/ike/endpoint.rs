//! Datagram dispatch for several tunnels, and COOKIE under load
//! (RFC 7296 § 2.6).
//!
//! An [`Endpoint`] owns the IKE SAs of every configured tunnel. A new
//! IKE_SA_INIT request from a configured peer creates a responder
//! [`IkeSa`]; while more than `half_open_threshold` responder SAs are
//! half-open, new requests must echo a COOKIE first (stateless: nothing
//! is kept for a request without a valid cookie).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use std::time::Duration;

use super::Rng;
use super::sa::{Datagram, DownReason, Event, IkeConfig, IkeSa, PhaseState, Transmit};
use super::wire::{ExchangeType, Header, Reader};
use crate::config::{DpdTimeoutAction, StartupAction};

/// Default number of half-open SAs above which cookies are required.
pub const DEFAULT_HALF_OPEN_THRESHOLD: usize = 32;

/// The IKE endpoint of the appliance (see the module docs).
#[derive(Debug)]
pub struct Endpoint {
    tunnels: Vec<IkeConfig>,
    sas: Vec<IkeSa>,
    secret: [u8; 32],
    half_open_threshold: usize,
    transmits: VecDeque<Transmit>,
    events: VecDeque<(IpAddr, Event)>,
    cookies_sent: u64,
    /// Scheduled (re-)initiations: when, peer, consecutive failures.
    restarts: Vec<(Instant, IpAddr)>,
    failures: Vec<(IpAddr, u32)>,
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
            cookies_sent: 0,
            restarts: Vec::new(),
            failures: Vec::new(),
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

    /// COOKIE notifications sent so far.
    #[must_use]
    pub fn cookies_sent(&self) -> u64 {
        self.cookies_sent
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
                return;
            };
            let busy = self.half_open() >= self.half_open_threshold;
            let cookie_fn = |ni: &[u8], ip: SocketAddr, spi: u64| self.cookie(ni, ip, spi);
            let r = IkeSa::accept(cfg, now, rng, d, if busy { Some(&cookie_fn) } else { None });
            match r {
                Ok(sa) => self.sas.push(sa),
                Err(refused) => {
                    for l in refused.logs {
                        self.events.push_back((d.remote.ip(), Event::Log(l)));
                    }
                    if let Some(t) = refused.transmit {
                        if busy {
                            self.cookies_sent += 1;
                        }
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
            // The peer may have re-initiated meanwhile.
            let busy = self
                .sas
                .iter()
                .any(|s| s.config().remote == p && !s.is_closed());
            if !busy {
                self.events
                    .push_back((p, Event::Log("re-initiating IKE_SA".to_owned())));
                self.initiate(now, rng, p);
            }
        }
        for s in &mut self.sas {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now, rng);
            }
        }
        self.drain();
    }

    /// Earliest timer.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas
            .iter()
            .filter_map(IkeSa::poll_timeout)
            .chain(self.restarts.iter().map(|(t, _)| *t))
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

    /// Tunnel behaviour from the options (spec § 3.1, § 6): DPD action
    /// restart re-initiates (until the tunnel is up again); a `start` tunnel re-initiates whenever its
    /// IKE SA goes away (peer DELETE, failure), retrying forever with a
    /// backoff up to [`MAX_RETRY_DELAY`].
    fn schedule_restarts(&mut self, seen: usize) {
        let Some(now) = self.now else { return };
        let mut add = Vec::new();
        for (peer, e) in self.events.iter().skip(seen) {
            match e {
                Event::IkeSaUp { .. } => self.failures.retain(|(p, _)| p != peer),
                Event::IkeSaDown { reason } => {
                    let Some(cfg) = self.tunnels.iter().find(|t| t.remote == *peer) else {
                        continue;
                    };
                    // A restart in progress (not yet up again) keeps
                    // retrying like a `start` tunnel.
                    let start = cfg.startup_action == StartupAction::Start
                        || self.failures.iter().any(|(p, _)| p == peer);
                    let again = match reason {
                        DownReason::Rekeyed | DownReason::Closed => false,
                        DownReason::DpdTimeout => {
                            cfg.dpd_action == DpdTimeoutAction::Restart || start
                        }
                        _ => start,
                    };
                    if again {
                        add.push(*peer);
                    }
                }
                _ => {}
            }
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
