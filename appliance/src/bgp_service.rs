//! BGP for `vpnd`'s dynamic-routing tunnels, the socket half: kernel TCP
//! between the tunnels' inside addresses, for the pure half,
//! [`control::bgp::speaker::Speaker`] inside the control core (every
//! session, the RIB, what is published to the FIB). Only I/O lives here.
//!
//! ```text
//!   event loop (crate::event_loop), epoll (crate::poller): every socket
//!   registered when made, deregistered when closed; ready ones served:
//!     listeners <inside-ip>:179 (IP_FREEBIND) ── accept ─► SocketEvent::Accepted
//!                                                          ─► Core::handle_bgp_accept ─► adopt
//!     connects <inside-ip> → <peer-ip>:179    ── ready ─► SocketEvent::Connected
//!     streams ── bytes ─► SocketEvent::Data, EOF/error ─► SocketEvent::Closed
//!   Output::Bgp(SpeakerAction) ─► BgpSockets::perform: Listen / Unlisten /
//!                                 Connect / Send (bounded queue) / Close
//! ```
//!
//! The inside addresses live on the kernel (tap) port like the outside
//! ones ([`crate::kernel_port`] puts them there, with a route and a
//! neighbour for the peer): the kernel's TCP reaches the peer through the
//! worker, which routes the inside /30 into the tunnel and punts our
//! inside address to the kernel. Sockets are bound with `IP_FREEBIND`, so
//! the address may appear on the tap after vpnd starts (a connect before
//! it fails and is retried by the session's ConnectRetryTimer; a listener
//! that cannot be bound is retried every [`LISTEN_RETRY`]).
//!
//! Costs: a wake-up costs the sockets that are ready (epoll), not the
//! number of sessions; a connection waits for writable only while bytes
//! are queued (one `epoll_ctl` when that changes); the listeners that
//! could not be bound are a [`DeadlineIndex`], so the next retry is the
//! first entry, not a scan.
//!
//! What it never does: block (every socket is non-blocking), keep a
//! closed socket registered, or keep unbounded state: bytes queued per
//! connection and bytes read per wake-up are capped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use control::bgp::ConnId;
use control::bgp::speaker::SpeakerAction;
use rustix::net::{AddressFamily, SocketFlags, SocketType, ipproto, sockopt};

use crate::deadlines::DeadlineIndex;
use crate::poller::{Interest, Readiness, Registry, Source, Token};

/// Bytes queued for a connection the peer does not read; beyond this the
/// connection is closed (TcpConnectionFails).
const MAX_QUEUED_BYTES: usize = 4 << 20;
/// Reads per connection per wake-up (so one busy peer cannot starve the
/// others), each up to [`READ_CHUNK`] bytes.
const READS_PER_WAKE: usize = 8;
/// Largest read.
const READ_CHUNK: usize = 65_536;
/// Connections accepted per listener per wake-up.
const ACCEPTS_PER_WAKE: usize = 4;
/// A listener that could not be bound is tried again after this long.
pub const LISTEN_RETRY: Duration = Duration::from_secs(5);
/// Pending connections on a listener.
const LISTEN_BACKLOG: i32 = 8;

/// A non-blocking TCP socket of `addr`'s family, bound with `IP_FREEBIND`
/// (the inside address may not be on the kernel port yet).
fn freebind_socket(addr: SocketAddr) -> std::io::Result<rustix::fd::OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        Some(ipproto::TCP),
    )?;
    if addr.is_ipv4() {
        sockopt::set_ip_freebind(&fd, true)?;
    } else {
        sockopt::set_ipv6_v6only(&fd, true)?;
        sockopt::set_ipv6_freebind(&fd, true)?;
    }
    sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    Ok(fd)
}

fn listen_on(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let fd = freebind_socket(addr)?;
    rustix::net::listen(&fd, LISTEN_BACKLOG)?;
    Ok(TcpListener::from(fd))
}

/// Starts a non-blocking connect from `local` (any port) to `peer`.
/// `Ok(true)`: connected already; `Ok(false)`: in progress.
fn start_connect(local: IpAddr, peer: SocketAddr) -> std::io::Result<(TcpStream, bool)> {
    let fd = freebind_socket(SocketAddr::new(local, 0))?;
    let done = match rustix::net::connect(&fd, &peer) {
        Ok(()) => true,
        Err(rustix::io::Errno::INPROGRESS) => false,
        Err(e) => return Err(e.into()),
    };
    Ok((TcpStream::from(fd), done))
}

/// One TCP connection of a session, connecting or open.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    /// A non-blocking connect is in progress (waiting for writable).
    connecting: bool,
    /// Bytes the kernel did not take yet.
    queued: VecDeque<u8>,
    /// What it is registered to wait for.
    interest: Interest,
}

impl Conn {
    /// Registered with `registry` as `conn` (waiting for the connect when
    /// `connecting`, else for bytes).
    fn register(
        registry: &Registry,
        conn: ConnId,
        stream: TcpStream,
        connecting: bool,
    ) -> std::io::Result<Self> {
        let mut c = Self {
            stream,
            connecting,
            queued: VecDeque::new(),
            interest: Interest::NONE,
        };
        if !connecting {
            // Small messages (KEEPALIVE, UPDATE) must not wait for Nagle.
            let _ = c.stream.set_nodelay(true);
        }
        c.interest = c.wanted();
        registry.add(&c.stream, token(conn), c.interest)?;
        Ok(c)
    }

    /// What it should wait for: the connect; else bytes, and room to write
    /// while bytes are queued.
    fn wanted(&self) -> Interest {
        if self.connecting {
            Interest::WRITE
        } else {
            Interest {
                read: true,
                write: !self.queued.is_empty(),
            }
        }
    }

    /// Re-register when what it waits for changed (only then).
    fn sync(&mut self, registry: &Registry, conn: ConnId) -> std::io::Result<()> {
        let want = self.wanted();
        if want != self.interest {
            registry.modify(&self.stream, token(conn), want)?;
            self.interest = want;
        }
        Ok(())
    }

    /// Writes what the kernel takes; `Err` when the connection failed.
    fn flush(&mut self) -> std::io::Result<()> {
        while !self.queued.is_empty() {
            let (head, _) = self.queued.as_slices();
            match self.stream.write(head) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => drop(self.queued.drain(..n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The epoll token of connection `conn`.
fn token(conn: ConnId) -> Token {
    Token::new(Source::BgpConn, conn.0)
}

/// A listener on one inside address.
#[derive(Debug)]
struct Listener {
    /// Its number (the id of its token).
    id: u64,
    /// Bound and registered; `None` while a retry is pending.
    socket: Option<TcpListener>,
}

/// What the sockets report, for the speaker.
#[derive(Debug)]
pub enum SocketEvent {
    /// A connection was accepted on `local` from `remote`: give it to
    /// [`control::core::Core::handle_bgp_accept`], then [`BgpSockets::adopt`] or drop it.
    Accepted {
        /// The socket.
        stream: TcpStream,
        /// Our address.
        local: SocketAddr,
        /// The peer's.
        remote: SocketAddr,
    },
    /// An outgoing connection is established.
    Connected(ConnId),
    /// Bytes read.
    Data(ConnId, Vec<u8>),
    /// The connection closed or failed (or could not be opened).
    Closed(ConnId),
}

/// The BGP sockets: listeners by address, connections by the speaker's
/// ids, each registered with the event loop's epoll instance from when it
/// is made until it is closed. Performs [`SpeakerAction`]s; reports
/// [`SocketEvent`]s.
#[derive(Debug)]
pub struct BgpSockets {
    registry: Registry,
    listeners: BTreeMap<SocketAddr, Listener>,
    /// Listener token id → address.
    listener_ids: HashMap<u64, SocketAddr>,
    next_listener: u64,
    /// Listeners waiting to be bound again, by when.
    retries: DeadlineIndex<SocketAddr>,
    conns: BTreeMap<ConnId, Conn>,
    /// One read buffer for every connection.
    buf: Vec<u8>,
}

impl BgpSockets {
    /// No sockets; those made are registered with `registry`.
    #[must_use]
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            listeners: BTreeMap::new(),
            listener_ids: HashMap::new(),
            next_listener: 1,
            retries: DeadlineIndex::new(),
            conns: BTreeMap::new(),
            buf: vec![0u8; READ_CHUNK],
        }
    }

    /// Do what the speaker asks; failures are reported in `out`.
    pub fn perform(&mut self, now: Instant, action: SpeakerAction, out: &mut Vec<SocketEvent>) {
        match action {
            SpeakerAction::Listen(addr) => {
                self.unlisten(addr);
                let id = self.next_listener;
                self.next_listener += 1;
                self.listeners.insert(addr, Listener { id, socket: None });
                self.listener_ids.insert(id, addr);
                self.bind_listener(now, addr);
            }
            SpeakerAction::Unlisten(addr) => self.unlisten(addr),
            SpeakerAction::Connect {
                conn,
                local,
                remote,
            } => {
                self.close(conn);
                let opened = start_connect(local, remote).and_then(|(stream, done)| {
                    let c = Conn::register(&self.registry, conn, stream, !done)?;
                    Ok((c, done))
                });
                match opened {
                    Ok((c, done)) => {
                        self.conns.insert(conn, c);
                        if done {
                            out.push(SocketEvent::Connected(conn));
                        }
                    }
                    Err(e) => {
                        tracing::warn!("bgp: connect {local} -> {remote}: {e}");
                        out.push(SocketEvent::Closed(conn));
                    }
                }
            }
            SpeakerAction::Send { conn, data } => {
                let Some(c) = self.conns.get_mut(&conn).filter(|c| !c.connecting) else {
                    return;
                };
                c.queued.extend(&data);
                let failed = if c.queued.len() > MAX_QUEUED_BYTES {
                    tracing::warn!(
                        "bgp: connection {} has {} bytes queued: the peer does not read; closing",
                        conn.0,
                        c.queued.len()
                    );
                    true
                } else {
                    c.flush().is_err() || c.sync(&self.registry, conn).is_err()
                };
                if failed {
                    self.close(conn);
                    out.push(SocketEvent::Closed(conn));
                }
            }
            SpeakerAction::Close(conn) => {
                if let Some(mut c) = self.close(conn)
                    && !c.connecting
                {
                    let _ = c.flush();
                    let _ = c.stream.shutdown(std::net::Shutdown::Both);
                }
            }
        }
    }

    /// Take an accepted connection the speaker gave `conn`. A connection
    /// that cannot be registered is reported closed in `out`.
    pub fn adopt(&mut self, conn: ConnId, stream: TcpStream, out: &mut Vec<SocketEvent>) {
        self.close(conn);
        match Conn::register(&self.registry, conn, stream, false) {
            Ok(c) => {
                self.conns.insert(conn, c);
            }
            Err(e) => {
                tracing::warn!("bgp: connection {}: epoll: {e}", conn.0);
                out.push(SocketEvent::Closed(conn));
            }
        }
    }

    /// Stop listening on `addr` (its socket deregistered and closed, its
    /// retry cancelled).
    fn unlisten(&mut self, addr: SocketAddr) {
        if let Some(l) = self.listeners.remove(&addr) {
            self.listener_ids.remove(&l.id);
            if let Some(s) = &l.socket {
                let _ = self.registry.delete(s);
            }
        }
        self.retries.remove(&addr);
    }

    /// Deregister and forget connection `conn` (the caller closes it by
    /// dropping it).
    fn close(&mut self, conn: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&conn)?;
        let _ = self.registry.delete(&c.stream);
        Some(c)
    }

    /// Bind (and register) the listener of `addr`; on failure it is tried
    /// again after [`LISTEN_RETRY`].
    fn bind_listener(&mut self, now: Instant, addr: SocketAddr) {
        let Some(l) = self.listeners.get_mut(&addr) else {
            return;
        };
        if l.socket.is_some() {
            return;
        }
        let id = l.id;
        let bound = listen_on(addr).and_then(|s| {
            self.registry
                .add(&s, Token::new(Source::BgpListener, id), Interest::READ)?;
            Ok(s)
        });
        match bound {
            Ok(s) => {
                tracing::info!("bgp: listening on {addr}");
                l.socket = Some(s);
            }
            Err(e) => {
                tracing::warn!("bgp: cannot listen on {addr}: {e}");
                self.retries.insert(addr, now + LISTEN_RETRY);
            }
        }
    }

    /// Bind the listeners whose retry time has come (only those: the
    /// retries are an index by time).
    pub fn retry_listeners(&mut self, now: Instant) {
        while let Some(addr) = self.retries.pop_due(now) {
            self.bind_listener(now, addr);
        }
    }

    /// When a listener is next retried.
    #[must_use]
    pub fn next_retry(&self) -> Option<Instant> {
        self.retries.next()
    }

    /// Serve one ready socket (a token of source
    /// [`Source::BgpListener`] or [`Source::BgpConn`]).
    pub fn service(&mut self, token: Token, ready: Readiness, out: &mut Vec<SocketEvent>) {
        match token.source() {
            Some(Source::BgpListener) => {
                if let Some(addr) = self.listener_ids.get(&token.id()).copied() {
                    self.accept(addr, out);
                }
            }
            Some(Source::BgpConn) => {
                let id = ConnId(token.id());
                match self.conns.get(&id).map(|c| c.connecting) {
                    Some(true) => self.finish_connect(id, out),
                    Some(false) => self.service_conn(id, ready, out),
                    None => {}
                }
            }
            _ => {}
        }
    }

    /// Sockets open now (listeners bound and connections), for tests.
    #[must_use]
    pub fn open_sockets(&self) -> usize {
        self.conns.len()
            + self
                .listeners
                .values()
                .filter(|l| l.socket.is_some())
                .count()
    }

    fn accept(&mut self, addr: SocketAddr, out: &mut Vec<SocketEvent>) {
        let Some(l) = self.listeners.get(&addr).and_then(|l| l.socket.as_ref()) else {
            return;
        };
        for _ in 0..ACCEPTS_PER_WAKE {
            match l.accept() {
                Ok((stream, remote)) => {
                    if let Err(e) = stream.set_nonblocking(true) {
                        tracing::warn!("bgp: accepted socket on {addr}: {e}");
                        continue;
                    }
                    out.push(SocketEvent::Accepted {
                        stream,
                        local: addr,
                        remote,
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("bgp: accept on {addr}: {e}");
                    return;
                }
            }
        }
    }

    fn finish_connect(&mut self, id: ConnId, out: &mut Vec<SocketEvent>) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let peer = c.stream.peer_addr().ok();
        let failed = match sockopt::socket_error(c.stream.as_fd()) {
            Ok(Ok(())) => {
                c.connecting = false;
                let _ = c.stream.set_nodelay(true);
                match c.sync(&self.registry, id) {
                    Ok(()) => {
                        out.push(SocketEvent::Connected(id));
                        false
                    }
                    Err(e) => {
                        tracing::warn!("bgp: connection {}: epoll: {e}", id.0);
                        true
                    }
                }
            }
            Ok(Err(e)) => {
                let e = std::io::Error::from(e);
                tracing::warn!("bgp: connect to {peer:?}: {e}");
                true
            }
            Err(e) => {
                tracing::warn!("bgp: connect: SO_ERROR: {e}");
                true
            }
        };
        if failed {
            self.close(id);
            out.push(SocketEvent::Closed(id));
        }
    }

    fn service_conn(&mut self, id: ConnId, ready: Readiness, out: &mut Vec<SocketEvent>) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let mut failed = ready.writable() && c.flush().is_err();
        if !failed && ready.readable() {
            for _ in 0..READS_PER_WAKE {
                match c.stream.read(&mut self.buf) {
                    Ok(0) => {
                        failed = true;
                        break;
                    }
                    Ok(n) => out.push(SocketEvent::Data(id, self.buf[..n].to_vec())),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
        }
        if !failed {
            failed = c.sync(&self.registry, id).is_err();
        }
        if failed && self.close(id).is_some() {
            out.push(SocketEvent::Closed(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::poller::Poller;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// A loopback port free a moment ago.
    fn free_port() -> u16 {
        TcpListener::bind((LO, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Wait and serve, adding to `events`, until `done(events)`.
    fn pump(
        poller: &mut Poller,
        sockets: &mut BgpSockets,
        events: &mut Vec<SocketEvent>,
        done: impl Fn(&[SocketEvent]) -> bool,
    ) {
        let mut ready = Vec::new();
        let start = Instant::now();
        while !done(events) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out with {events:?}"
            );
            poller
                .wait(Some(Duration::from_millis(100)), &mut ready)
                .unwrap();
            for &(t, r) in &ready {
                sockets.service(t, r, events);
            }
        }
    }

    fn has(events: &[SocketEvent], f: impl Fn(&SocketEvent) -> bool) -> bool {
        events.iter().any(f)
    }

    /// Every socket is registered while open and deregistered when closed
    /// (by the speaker, by the peer, or by Unlisten); bytes flow.
    #[test]
    fn sockets_are_registered_while_open_only() {
        let mut poller = Poller::new().unwrap();
        let registry = poller.registry().clone();
        let mut s = BgpSockets::new(registry.clone());
        let now = Instant::now();
        let addr = SocketAddr::new(LO, free_port());
        let mut ev = Vec::new();
        s.perform(now, SpeakerAction::Listen(addr), &mut ev);
        assert!(ev.is_empty(), "{ev:?}");
        assert_eq!((registry.registered(), s.open_sockets()), (1, 1));
        assert_eq!(s.next_retry(), None);

        let (a, b) = (ConnId(1), ConnId(2));
        s.perform(
            now,
            SpeakerAction::Connect {
                conn: a,
                local: LO,
                remote: addr,
            },
            &mut ev,
        );
        assert_eq!(registry.registered(), 2);
        pump(&mut poller, &mut s, &mut ev, |e| {
            has(e, |e| matches!(e, SocketEvent::Accepted { .. }))
                && has(e, |e| matches!(e, SocketEvent::Connected(c) if *c == a))
        });
        let stream = ev
            .drain(..)
            .find_map(|e| match e {
                SocketEvent::Accepted { stream, .. } => Some(stream),
                _ => None,
            })
            .unwrap();
        s.adopt(b, stream, &mut ev);
        assert!(ev.is_empty(), "{ev:?}");
        assert_eq!((registry.registered(), s.open_sockets()), (3, 3));

        s.perform(
            now,
            SpeakerAction::Send {
                conn: a,
                data: b"open".to_vec(),
            },
            &mut ev,
        );
        pump(&mut poller, &mut s, &mut ev, |e| {
            has(
                e,
                |e| matches!(e, SocketEvent::Data(c, d) if *c == b && d == b"open"),
            )
        });
        ev.clear();

        // The speaker closes a: deregistered at once; b sees the end and
        // is deregistered too.
        s.perform(now, SpeakerAction::Close(a), &mut ev);
        assert_eq!(registry.registered(), 2);
        pump(&mut poller, &mut s, &mut ev, |e| {
            has(e, |e| matches!(e, SocketEvent::Closed(c) if *c == b))
        });
        assert_eq!((registry.registered(), s.open_sockets()), (1, 1));

        s.perform(now, SpeakerAction::Unlisten(addr), &mut ev);
        assert_eq!((registry.registered(), s.open_sockets()), (0, 0));
        // Nothing left to report.
        let mut ready = Vec::new();
        poller.wait(Some(Duration::ZERO), &mut ready).unwrap();
        assert!(ready.is_empty(), "{ready:?}");
    }

    /// A listener that cannot be bound is retried at its deadline (the
    /// index's earliest), not before; Unlisten cancels the retry.
    #[test]
    fn listener_retries_are_indexed_and_cancelled() {
        let poller = Poller::new().unwrap();
        let registry = poller.registry().clone();
        let mut s = BgpSockets::new(registry.clone());
        let t0 = Instant::now();
        let busy = TcpListener::bind((LO, 0)).unwrap();
        let addr = busy.local_addr().unwrap();
        let other = SocketAddr::new(LO, free_port());
        let mut ev = Vec::new();

        s.perform(t0, SpeakerAction::Listen(addr), &mut ev);
        assert_eq!(registry.registered(), 0);
        assert_eq!(s.next_retry(), Some(t0 + LISTEN_RETRY));
        // Cancelled by Unlisten.
        s.perform(t0, SpeakerAction::Unlisten(addr), &mut ev);
        assert_eq!(s.next_retry(), None);

        let t1 = t0 + Duration::from_secs(1);
        s.perform(t1, SpeakerAction::Listen(addr), &mut ev);
        s.perform(t1, SpeakerAction::Listen(other), &mut ev);
        assert_eq!(registry.registered(), 1);
        assert_eq!(s.next_retry(), Some(t1 + LISTEN_RETRY));
        drop(busy);
        s.retry_listeners(t1 + LISTEN_RETRY - Duration::from_millis(1));
        assert_eq!(registry.registered(), 1, "retried before its time");
        s.retry_listeners(t1 + LISTEN_RETRY);
        assert_eq!(registry.registered(), 2);
        assert_eq!(s.next_retry(), None);
        assert!(ev.is_empty(), "{ev:?}");
    }
}
