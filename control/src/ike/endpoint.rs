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

use super::Rng;
use super::sa::{Datagram, Event, IkeConfig, IkeSa, PhaseState, Transmit};
use super::wire::{ExchangeType, Header, Reader};

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
}

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
        }
    }

    /// Adds a tunnel (keyed by its peer address).
    pub fn add_tunnel(&mut self, cfg: IkeConfig) {
        self.tunnels.retain(|t| t.remote != cfg.remote);
        self.tunnels.push(cfg);
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

    /// Runs every SA's timers.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut dyn Rng) {
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
        self.sas.iter().filter_map(IkeSa::poll_timeout).min()
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
        let mut spawned = Vec::new();
        for s in &mut self.sas {
            spawned.extend(s.take_spawned());
        }
        self.sas.extend(spawned);
        for s in &mut self.sas {
            while let Some(t) = s.poll_transmit() {
                self.transmits.push_back(t);
            }
            let peer = s.config().remote;
            while let Some(e) = s.poll_event() {
                self.events.push_back((peer, e));
            }
        }
        self.sas.retain(|s| !s.is_closed());
    }
}
