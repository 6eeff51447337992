//! BGP for `vpnd`'s dynamic-routing tunnels, the socket half: kernel TCP
//! between the tunnels' inside addresses, for the pure half,
//! [`control::bgp::speaker::Speaker`] inside the control core (every
//! session, the RIB, what is published to the FIB). Only I/O lives here.
//!
//! ```text
//!   event loop (crate::event_loop), poll(2) over BgpSockets::poll_set:
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
//! What it never does: block (every socket is non-blocking), or keep
//! unbounded state: bytes queued per connection and bytes read per
//! wake-up are capped.

use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use control::bgp::ConnId;
use control::bgp::speaker::SpeakerAction;
use rustix::event::{PollFd, PollFlags};
use rustix::net::{AddressFamily, SocketFlags, SocketType, ipproto, sockopt};

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

/// One TCP connection of a session.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    /// Bytes the kernel did not take yet.
    queued: VecDeque<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        // Small messages (KEEPALIVE, UPDATE) must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            queued: VecDeque::new(),
        }
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

/// A listener on one inside address.
#[derive(Debug)]
struct Listener {
    socket: Option<TcpListener>,
    failed_at: Option<Instant>,
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

/// Which socket a poll entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A listener.
    Listener(SocketAddr),
    /// A connect in progress.
    Connecting(ConnId),
    /// An open connection.
    Conn(ConnId),
}

/// The BGP sockets: listeners by address, connections by the speaker's
/// ids. Performs [`SpeakerAction`]s; reports [`SocketEvent`]s.
#[derive(Debug, Default)]
pub struct BgpSockets {
    listeners: BTreeMap<SocketAddr, Listener>,
    conns: BTreeMap<ConnId, Conn>,
    connecting: BTreeMap<ConnId, TcpStream>,
}

impl BgpSockets {
    /// No sockets.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Do what the speaker asks; failures are reported in `out`.
    pub fn perform(&mut self, now: Instant, action: SpeakerAction, out: &mut Vec<SocketEvent>) {
        match action {
            SpeakerAction::Listen(addr) => {
                self.listeners.insert(
                    addr,
                    Listener {
                        socket: None,
                        failed_at: None,
                    },
                );
                self.retry_listeners(now);
            }
            SpeakerAction::Unlisten(addr) => {
                self.listeners.remove(&addr);
            }
            SpeakerAction::Connect {
                conn,
                local,
                remote,
            } => match start_connect(local, remote) {
                Ok((stream, true)) => {
                    self.conns.insert(conn, Conn::new(stream));
                    out.push(SocketEvent::Connected(conn));
                }
                Ok((stream, false)) => {
                    self.connecting.insert(conn, stream);
                }
                Err(e) => {
                    tracing::warn!("bgp: connect {local} -> {remote}: {e}");
                    out.push(SocketEvent::Closed(conn));
                }
            },
            SpeakerAction::Send { conn, data } => {
                let Some(c) = self.conns.get_mut(&conn) else {
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
                    c.flush().is_err()
                };
                if failed {
                    self.conns.remove(&conn);
                    out.push(SocketEvent::Closed(conn));
                }
            }
            SpeakerAction::Close(conn) => {
                if let Some(mut c) = self.conns.remove(&conn) {
                    let _ = c.flush();
                    let _ = c.stream.shutdown(std::net::Shutdown::Both);
                }
                self.connecting.remove(&conn);
            }
        }
    }

    /// Take an accepted connection the speaker gave `conn`.
    pub fn adopt(&mut self, conn: ConnId, stream: TcpStream) {
        self.conns.insert(conn, Conn::new(stream));
    }

    /// Bind the listeners not bound yet whose retry time has come.
    pub fn retry_listeners(&mut self, now: Instant) {
        for (addr, l) in &mut self.listeners {
            if l.socket.is_some() || l.failed_at.is_some_and(|t| now < t + LISTEN_RETRY) {
                continue;
            }
            match listen_on(*addr) {
                Ok(s) => {
                    tracing::info!("bgp: listening on {addr}");
                    l.socket = Some(s);
                    l.failed_at = None;
                }
                Err(e) => {
                    tracing::warn!("bgp: cannot listen on {addr}: {e}");
                    l.failed_at = Some(now);
                }
            }
        }
    }

    /// When a listener is next retried.
    #[must_use]
    pub fn next_retry(&self) -> Option<Instant> {
        self.listeners
            .values()
            .filter(|l| l.socket.is_none())
            .filter_map(|l| l.failed_at.map(|t| t + LISTEN_RETRY))
            .min()
    }

    /// The sockets to wait on, with what to wait for.
    pub fn poll_set<'a>(&'a self, slots: &mut Vec<Slot>, fds: &mut Vec<PollFd<'a>>) {
        for (addr, l) in &self.listeners {
            if let Some(s) = &l.socket {
                slots.push(Slot::Listener(*addr));
                fds.push(PollFd::new(s, PollFlags::IN));
            }
        }
        for (id, s) in &self.connecting {
            slots.push(Slot::Connecting(*id));
            fds.push(PollFd::new(s, PollFlags::OUT));
        }
        for (id, c) in &self.conns {
            let mut events = PollFlags::IN;
            if !c.queued.is_empty() {
                events |= PollFlags::OUT;
            }
            slots.push(Slot::Conn(*id));
            fds.push(PollFd::new(&c.stream, events));
        }
    }

    /// Serve one ready socket.
    pub fn service(&mut self, slot: Slot, revents: PollFlags, out: &mut Vec<SocketEvent>) {
        match slot {
            Slot::Listener(addr) => self.accept(addr, out),
            Slot::Connecting(id) => self.finish_connect(id, out),
            Slot::Conn(id) => self.service_conn(id, revents, out),
        }
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
        let Some(stream) = self.connecting.remove(&id) else {
            return;
        };
        let peer = stream.peer_addr().ok();
        match sockopt::socket_error(stream.as_fd()) {
            Ok(Ok(())) => {
                self.conns.insert(id, Conn::new(stream));
                out.push(SocketEvent::Connected(id));
            }
            Ok(Err(e)) => {
                let e = std::io::Error::from(e);
                tracing::warn!("bgp: connect to {peer:?}: {e}");
                out.push(SocketEvent::Closed(id));
            }
            Err(e) => {
                tracing::warn!("bgp: connect: SO_ERROR: {e}");
                out.push(SocketEvent::Closed(id));
            }
        }
    }

    fn service_conn(&mut self, id: ConnId, revents: PollFlags, out: &mut Vec<SocketEvent>) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let mut failed = revents.contains(PollFlags::OUT) && c.flush().is_err();
        if !failed && revents.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            let mut buf = vec![0u8; READ_CHUNK];
            for _ in 0..READS_PER_WAKE {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        failed = true;
                        break;
                    }
                    Ok(n) => out.push(SocketEvent::Data(id, buf[..n].to_vec())),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
        }
        if failed && self.conns.remove(&id).is_some() {
            out.push(SocketEvent::Closed(id));
        }
    }
}
