//! IKE for `vpnd`'s tunnels, the socket half: the UDP sockets (500 and
//! 4500 on each outside address the tunnels use) that the event loop
//! (`crate::event_loop`) reads and writes for the control core (each
//! registered with its epoll instance, `crate::poller`, while open), whose
//! [`control::ike::tunnels::TunnelSet`] runs the tunnels. Only I/O lives
//! here.
//!
//! Sockets are non-blocking and bound with `IP_FREEBIND`, so the address
//! may appear on the kernel port after vpnd starts; a failed bind is
//! retried after [`BIND_RETRY`] ([`IkeSockets::next_retry`] tells the loop
//! when). Test-mode knobs for the tunnel set come from the environment
//! ([`tunnel_set_from_env`]).
//!
//! What it never does: block (reads stop at `EWOULDBLOCK`; a send the
//! kernel refuses is counted and logged, not retried), or interpret a
//! datagram (the core does).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use control::ike::sa::{IKE_PORT, NAT_T_PORT, Transmit};
use control::ike::tunnels::TunnelSet;

use crate::poller::{Interest, Registry, Source, Token};

/// Largest IKE datagram read.
pub const MAX_DATAGRAM: usize = 65_535;
/// Test mode: an integer > 1 in this environment variable divides every
/// tunnel's IKE and Child SA lifetimes and rekey margin (the spec's
/// minimum Child SA lifetime is 900 s; rekey tests need seconds). vpnd
/// logs it at start; never set it in production.
pub const LIFETIME_DIVISOR_ENV: &str = "VPND_IKE_LIFETIME_DIVISOR";
/// Test mode: a packet count in this environment variable becomes the
/// soft packet lifetime of every installed Child SA (rekey tests need
/// small numbers; production uses [`control::ike::sa::SEQ_REKEY_PACKETS`] for SAs without
/// ESN and no packet limit otherwise). Logged at start.
pub const REKEY_PACKETS_ENV: &str = "VPND_IKE_REKEY_PACKETS";
/// A failed bind is retried after this long.
pub const BIND_RETRY: Duration = Duration::from_secs(5);

/// The tunnel set, with the test-mode settings of the environment
/// applied (and logged).
#[must_use]
pub fn tunnel_set_from_env() -> TunnelSet {
    let mut set = TunnelSet::new();
    if let Some(d) = std::env::var(LIFETIME_DIVISOR_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|d| *d > 1)
    {
        tracing::warn!(
            "ike: TEST MODE: lifetimes and rekey margins divided by {d} ({LIFETIME_DIVISOR_ENV})"
        );
        set.set_lifetime_divisor(d);
    }
    if let Some(n) = std::env::var(REKEY_PACKETS_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| *n > 0)
    {
        tracing::warn!("ike: TEST MODE: Child SAs rekeyed every {n} packets ({REKEY_PACKETS_ENV})");
        set.set_rekey_packets(n);
    }
    set
}

/// A UDP socket on `addr`, bound even when the address is not (yet) on
/// an interface (`IP_FREEBIND`): the kernel port's address may be set up
/// after vpnd starts.
fn bind_freebind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use rustix::net::{AddressFamily, SocketType, ipproto, sockopt};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket(family, SocketType::DGRAM, Some(ipproto::UDP))?;
    if addr.is_ipv4() {
        sockopt::set_ip_freebind(&fd, true)?;
    } else {
        sockopt::set_ipv6_v6only(&fd, true)?;
        sockopt::set_ipv6_freebind(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    Ok(UdpSocket::from(fd))
}

/// The IKE sockets (UDP 500 and 4500 on each outside address in use),
/// each registered with the event loop's epoll instance while it is open.
#[derive(Debug)]
pub struct IkeSockets {
    registry: Registry,
    /// By local address and port: the socket's number (its token's id)
    /// and the socket.
    sockets: BTreeMap<SocketAddr, (u64, UdpSocket)>,
    /// Socket number → local address and port.
    by_id: HashMap<u64, SocketAddr>,
    next_id: u64,
    wanted: BTreeSet<IpAddr>,
    failed: BTreeMap<IpAddr, Instant>,
    send_errors: u64,
}

impl IkeSockets {
    /// No sockets yet; those bound are registered with `registry`.
    #[must_use]
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            sockets: BTreeMap::new(),
            by_id: HashMap::new(),
            next_id: 1,
            wanted: BTreeSet::new(),
            failed: BTreeMap::new(),
            send_errors: 0,
        }
    }

    /// Have sockets on exactly `locals`: bind those not bound yet (a failed
    /// bind is retried after [`BIND_RETRY`]), close the others.
    pub fn ensure(&mut self, locals: &BTreeSet<IpAddr>, now: Instant) {
        self.wanted.clone_from(locals);
        let (registry, by_id) = (&self.registry, &mut self.by_id);
        self.sockets.retain(|a, (id, s)| {
            let keep = locals.contains(&a.ip());
            if !keep {
                let _ = registry.delete(&*s);
                by_id.remove(id);
            }
            keep
        });
        self.failed.retain(|a, _| locals.contains(a));
        self.retry(now);
    }

    /// Bind what is wanted and not bound, unless it failed less than
    /// [`BIND_RETRY`] ago.
    pub fn retry(&mut self, now: Instant) {
        let wanted: Vec<IpAddr> = self.wanted.iter().copied().collect();
        for a in wanted {
            let (ike, nat_t) = (SocketAddr::new(a, IKE_PORT), SocketAddr::new(a, NAT_T_PORT));
            if self.sockets.contains_key(&ike)
                || self.failed.get(&a).is_some_and(|t| now < *t + BIND_RETRY)
            {
                continue;
            }
            let bound = bind_freebind(ike).and_then(|i| {
                let n = bind_freebind(nat_t)?;
                i.set_nonblocking(true)?;
                n.set_nonblocking(true)?;
                Ok((i, n))
            });
            let registered = bound.and_then(|(i, n)| {
                let (ii, ni) = (self.next_id, self.next_id + 1);
                self.registry
                    .add(&i, Token::new(Source::Ike, ii), Interest::READ)?;
                if let Err(e) = self
                    .registry
                    .add(&n, Token::new(Source::Ike, ni), Interest::READ)
                {
                    let _ = self.registry.delete(&i);
                    return Err(e);
                }
                self.next_id += 2;
                Ok(((ii, i), (ni, n)))
            });
            match registered {
                Ok((i, n)) => {
                    tracing::info!("ike: listening on {a} ports {IKE_PORT} and {NAT_T_PORT}");
                    self.failed.remove(&a);
                    self.by_id.insert(i.0, ike);
                    self.by_id.insert(n.0, nat_t);
                    self.sockets.insert(ike, i);
                    self.sockets.insert(nat_t, n);
                }
                Err(e) => {
                    tracing::warn!("ike: cannot bind {a} ports {IKE_PORT}/{NAT_T_PORT}: {e}");
                    self.failed.insert(a, now);
                }
            }
        }
    }

    /// When a failed bind is next tried (one entry per outside address,
    /// a handful).
    #[must_use]
    pub fn next_retry(&self) -> Option<Instant> {
        self.failed.values().map(|t| *t + BIND_RETRY).min()
    }

    /// The local address and port of the socket a token of source
    /// [`Source::Ike`] names.
    #[must_use]
    pub fn local_of(&self, token: Token) -> Option<SocketAddr> {
        (token.source() == Some(Source::Ike))
            .then(|| self.by_id.get(&token.id()).copied())
            .flatten()
    }

    /// Read up to `max` datagrams from the socket of `local` into `buf`,
    /// each handed to `f(local, remote, payload)`.
    pub fn receive(
        &self,
        local: SocketAddr,
        max: usize,
        buf: &mut [u8],
        mut f: impl FnMut(SocketAddr, SocketAddr, &[u8]),
    ) {
        let Some((_, s)) = self.sockets.get(&local) else {
            return;
        };
        for _ in 0..max {
            match s.recv_from(buf) {
                Ok((n, remote)) => f(local, remote, &buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("ike: receive on {local}: {e}");
                    return;
                }
            }
        }
    }

    /// Send one datagram from the socket its source names.
    pub fn send(&mut self, t: &Transmit) {
        let port = if t.local.port() == NAT_T_PORT {
            NAT_T_PORT
        } else {
            IKE_PORT
        };
        let Some((_, sock)) = self.sockets.get(&SocketAddr::new(t.local.ip(), port)) else {
            self.send_errors += 1;
            return;
        };
        if let Err(e) = sock.send_to(&t.payload, t.remote) {
            self.send_errors += 1;
            tracing::warn!("ike: send {} -> {}: {e}", t.local, t.remote);
        }
    }

    /// Datagrams that could not be sent.
    #[must_use]
    pub fn send_errors(&self) -> u64 {
        self.send_errors
    }
}
