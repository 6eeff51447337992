//! `vpnd`'s one event loop: every socket of the daemon wired to the
//! control core ([`control::core::Core`]), which owns the whole control
//! plane. No other thread touches the core's state (the log writer of
//! [`crate::logging`] is the only other thread besides the dataplane's
//! worker lcores).
//!
//! ```text
//!                  poll(2) over every fd, timeout = the earliest of
//!                  Core::poll_timeout, socket retries, client deadlines
//!   signal pipes (SIGTERM, SIGINT) ──► Event::Shutdown (STOPPING=1)
//!   IKE UDP <outside>:500/4500 ──────► Event::IkeDatagram
//!   BGP listeners/connections ───────► handle_bgp_accept, Event::BgpConnected
//!                                      / BgpBytes / BgpClosed
//!   management socket, clients ──────► Event::Api{token = client}
//!     (peer credentials checked at accept; lines bounded by LineFramer)
//!   metrics listener, clients ───────► Manager::render_metrics
//!   deadline passed ─────────────────► Event::Timeout (IKE, BGP timers,
//!                                      dataplane acks and SA events)
//!                          │
//!                          ▼ Core
//!   poll_transmit ──► IKE send_to        Output::Reply   ──► client's buffer
//!   Output::Bgp   ──► BgpSockets         Output::IkeListen ─► IkeSockets::ensure
//!   Output::KernelPort ─► kernel_port    Output::Stopped ──► dataplane shutdown, exit
//! ```
//!
//! Why a plain `poll(2)` loop (through `rustix`, already a dependency)
//! rather than an async runtime or epoll: the set of descriptors is small
//! (two per outside address, one or two per BGP session, the management
//! and metrics clients) and rebuilt per wake-up at a cost linear in it,
//! every handler is non-blocking and short, and the core is one `&mut`
//! value with no `Send`/`'static` constraints to satisfy. An async
//! runtime would add a scheduler, tasks and shared state to do what one
//! loop does here; epoll would save the per-wake rebuild only at
//! descriptor counts this daemon does not reach.
//!
//! What it never does: sleep (the only wait is `poll(2)`), block on a
//! client (every socket is non-blocking; a client that sends more than
//! [`MAX_MESSAGE_BYTES`] per line has the line discarded, one that does
//! not read its replies stops being read and is closed after
//! [`CLIENT_WRITE_TIMEOUT`]), or keep unbounded buffers.
//!
//! One exception to "never blocks": the kernel port's addresses are set
//! with `ip` (a few milliseconds, only when the configuration changes or
//! a failed entry is retried).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control::api::{self, ApiError, ErrorCode, MAX_MESSAGE_BYTES};
use control::core::{Core, Event, Now, Output};
use control::dataplane::Dataplane;
use control::ike::sa::Datagram;
use rustix::event::{PollFd, PollFlags, Timespec};

use crate::bgp_service::{BgpSockets, SocketEvent};
use crate::ike_service::{IkeSockets, MAX_DATAGRAM};
use crate::kernel_port::KernelPort;
use crate::mgmt::{self, Framed, LineFramer, PeerPolicy};

/// Connections served at once; more are answered `internal` and closed.
pub const MAX_CLIENTS: usize = 64;
/// A management client that sends nothing for this long is closed.
pub const CLIENT_IDLE: Duration = Duration::from_secs(300);
/// A management client that does not take its replies within this long
/// is closed.
pub const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Replies queued for a client before its requests stop being read.
const CLIENT_OUT_HIGH: usize = 4 << 20;
/// A refused client may finish sending its request for this long (so it
/// reads the refusal rather than a broken pipe).
const REFUSED_DRAIN: Duration = Duration::from_secs(1);
/// A metrics client must send its request head within this long.
const METRICS_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest metrics request head.
const METRICS_HEAD: usize = 8192;
/// Datagrams read per IKE socket per wake-up (so a flood on one cannot
/// starve the rest).
const IKE_READS_PER_WAKE: usize = 64;
/// Reads per management client per wake-up.
const CLIENT_READS_PER_WAKE: usize = 16;

/// Both clocks, read now.
#[must_use]
pub fn clock() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// A management client.
#[derive(Debug)]
struct Client {
    stream: UnixStream,
    framer: LineFramer,
    out: Vec<u8>,
    /// Refused: its input is drained (bounded) until this instant, then it
    /// is closed.
    refused_until: Option<Instant>,
    drained: usize,
    /// Last input, for [`CLIENT_IDLE`].
    last_read: Instant,
    /// Since when replies wait for the client.
    blocked_since: Option<Instant>,
    eof: bool,
}

impl Client {
    /// Write what the socket takes; `Err` when the client is gone.
    fn flush(&mut self, now: Instant) -> std::io::Result<()> {
        while !self.out.is_empty() {
            match (&self.stream).write(&self.out) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => drop(self.out.drain(..n)),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.blocked_since.get_or_insert(now);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        self.blocked_since = None;
        if self.refused_until.is_some() {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }

    /// Whether the client is done with (and can be closed).
    fn finished(&self, now: Instant) -> bool {
        (self.eof && self.out.is_empty())
            || self.refused_until.is_some_and(|t| {
                now >= t || (self.out.is_empty() && (self.eof || self.drained >= MAX_MESSAGE_BYTES))
            })
            || now >= self.last_read + CLIENT_IDLE
            || self
                .blocked_since
                .is_some_and(|t| now >= t + CLIENT_WRITE_TIMEOUT)
    }
}

/// A metrics client.
#[derive(Debug)]
struct MetricsClient {
    stream: TcpStream,
    head: Vec<u8>,
    out: Option<Vec<u8>>,
    deadline: Instant,
}

/// Which descriptor a poll entry is.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Signal(usize),
    Mgmt,
    Client(u64),
    Metrics,
    MetricsClient(u64),
    Ike(SocketAddr),
    Bgp(crate::bgp_service::Slot),
}

/// What the loop is set up with.
#[derive(Debug)]
pub struct Setup {
    /// The management socket, bound.
    pub mgmt: UnixListener,
    /// Its path (removed on exit).
    pub mgmt_path: PathBuf,
    /// Who may use it.
    pub policy: PeerPolicy,
    /// The metrics listener, when enabled.
    pub metrics: Option<TcpListener>,
    /// Read ends of the signal pipes, and the signal each stands for.
    pub signals: Vec<(UnixStream, i32)>,
}

/// The loop's state around the core.
#[derive(Debug)]
pub struct EventLoop<D: Dataplane> {
    core: Core<D>,
    setup: Setup,
    ike: IkeSockets,
    bgp: BgpSockets,
    clients: BTreeMap<u64, Client>,
    metrics_clients: BTreeMap<u64, MetricsClient>,
    next_client: u64,
    /// Requests in the core: token → (client, request id).
    requests: BTreeMap<u64, (u64, u64)>,
    next_token: u64,
    kernel: Option<KernelPort>,
    kernel_retry: Option<Instant>,
    stopping: bool,
    /// The core said [`Output::Stopped`].
    stopped: bool,
}

impl<D: Dataplane> EventLoop<D> {
    /// A loop over a started core ([`Core::start`] called) and its sockets.
    pub fn new(core: Core<D>, setup: Setup) -> Self {
        for s in &setup.signals {
            let _ = s.0.set_nonblocking(true);
        }
        let _ = setup.mgmt.set_nonblocking(true);
        if let Some(m) = &setup.metrics {
            let _ = m.set_nonblocking(true);
        }
        let mut l = Self {
            core,
            setup,
            ike: IkeSockets::new(),
            bgp: BgpSockets::new(),
            clients: BTreeMap::new(),
            metrics_clients: BTreeMap::new(),
            next_client: 1,
            requests: BTreeMap::new(),
            next_token: 1,
            kernel: None,
            kernel_retry: None,
            stopping: false,
            stopped: false,
        };
        l.drain(clock());
        l
    }

    /// Run until a signal stops the daemon (its DELETEs sent, the
    /// dataplane stopped, the socket removed); returns the exit code, 0.
    pub fn run(mut self) -> i32 {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let ready = self.wait(Instant::now());
            let now = clock();
            for (slot, revents) in ready {
                self.service(now, slot, revents, &mut buf);
                if self.drain(now) {
                    return self.finish();
                }
            }
            let now = clock();
            if self.core.poll_timeout().is_some_and(|t| t <= now.instant) {
                self.core.handle(now, Event::Timeout);
            }
            self.housekeeping(now.instant);
            if self.drain(now) {
                return self.finish();
            }
        }
    }

    fn finish(&mut self) -> i32 {
        let _ = std::fs::remove_file(&self.setup.mgmt_path);
        self.core.shutdown_dataplane();
        tracing::info!("stopped");
        0
    }

    /// The earliest thing to wake for.
    fn deadline(&self) -> Option<Instant> {
        let clients = self.clients.values().flat_map(|c| {
            [
                c.refused_until,
                Some(c.last_read + CLIENT_IDLE),
                c.blocked_since.map(|t| t + CLIENT_WRITE_TIMEOUT),
            ]
        });
        [
            self.core.poll_timeout(),
            self.bgp.next_retry(),
            self.ike.next_retry(),
            self.kernel_retry,
        ]
        .into_iter()
        .chain(clients)
        .chain(self.metrics_clients.values().map(|c| Some(c.deadline)))
        .flatten()
        .min()
    }

    /// `poll(2)` until something is ready or the deadline passes.
    fn wait(&self, now: Instant) -> Vec<(Slot, PollFlags)> {
        let mut slots = Vec::new();
        let mut fds = Vec::new();
        for (i, (s, _)) in self.setup.signals.iter().enumerate() {
            slots.push(Slot::Signal(i));
            fds.push(PollFd::new(s, PollFlags::IN));
        }
        slots.push(Slot::Mgmt);
        fds.push(PollFd::new(&self.setup.mgmt, PollFlags::IN));
        for (id, c) in &self.clients {
            let mut ev = PollFlags::empty();
            if !c.eof && c.out.len() < CLIENT_OUT_HIGH {
                ev |= PollFlags::IN;
            }
            if !c.out.is_empty() {
                ev |= PollFlags::OUT;
            }
            slots.push(Slot::Client(*id));
            fds.push(PollFd::new(&c.stream, ev));
        }
        if let Some(m) = &self.setup.metrics {
            slots.push(Slot::Metrics);
            fds.push(PollFd::new(m, PollFlags::IN));
        }
        for (id, c) in &self.metrics_clients {
            let ev = if c.out.is_some() {
                PollFlags::OUT
            } else {
                PollFlags::IN
            };
            slots.push(Slot::MetricsClient(*id));
            fds.push(PollFd::new(&c.stream, ev));
        }
        let mut ike = Vec::new();
        self.ike.poll_set(&mut ike, &mut fds);
        slots.extend(ike.into_iter().map(Slot::Ike));
        let mut bgp = Vec::new();
        self.bgp.poll_set(&mut bgp, &mut fds);
        slots.extend(bgp.into_iter().map(Slot::Bgp));
        let timeout = self
            .deadline()
            .map(|d| d.saturating_duration_since(now))
            .map(|d| {
                Timespec::try_from(d).unwrap_or(Timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                })
            });
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) | Err(rustix::io::Errno::INTR) => Vec::new(),
            Ok(_) => slots
                .into_iter()
                .zip(fds.iter().map(PollFd::revents))
                .filter(|(_, r)| !r.is_empty())
                .collect(),
            Err(e) => {
                // EINVAL/ENOMEM: nothing to wait on; the deadlines still run.
                tracing::error!("poll: {e}");
                Vec::new()
            }
        }
    }

    fn service(&mut self, now: Now, slot: Slot, revents: PollFlags, buf: &mut [u8]) {
        match slot {
            Slot::Signal(i) => {
                let (s, sig) = &self.setup.signals[i];
                let mut b = [0u8; 16];
                while matches!((&*s).read(&mut b), Ok(1..)) {}
                if !self.stopping {
                    self.stopping = true;
                    let _ = mgmt::sd_notify("STOPPING=1");
                    tracing::info!("signal {sig}, stopping");
                    self.core.handle(now, Event::Shutdown);
                }
            }
            Slot::Mgmt => self.accept_clients(now.instant),
            Slot::Client(id) => self.service_client(now, id, revents),
            Slot::Metrics => self.accept_metrics(now.instant),
            Slot::MetricsClient(id) => self.service_metrics(id, revents),
            Slot::Ike(local) => {
                let core = &mut self.core;
                self.ike
                    .receive(local, IKE_READS_PER_WAKE, buf, |local, remote, payload| {
                        core.handle(
                            now,
                            Event::IkeDatagram(Datagram {
                                local,
                                remote,
                                payload,
                            }),
                        );
                    });
            }
            Slot::Bgp(s) => {
                let mut events = Vec::new();
                self.bgp.service(s, revents, &mut events);
                self.feed_bgp(now, events);
            }
        }
    }

    /// Socket events to the core.
    fn feed_bgp(&mut self, now: Now, events: Vec<SocketEvent>) {
        for e in events {
            match e {
                SocketEvent::Accepted {
                    stream,
                    local,
                    remote,
                } => {
                    if let Some(id) = self.core.handle_bgp_accept(now, local, remote) {
                        self.bgp.adopt(id, stream);
                    }
                }
                SocketEvent::Connected(conn) => self.core.handle(now, Event::BgpConnected { conn }),
                SocketEvent::Data(conn, data) => {
                    self.core.handle(now, Event::BgpBytes { conn, data: &data });
                }
                SocketEvent::Closed(conn) => self.core.handle(now, Event::BgpClosed { conn }),
            }
        }
    }

    /// Perform the core's outputs until it has none; `true` once the core
    /// has stopped.
    fn drain(&mut self, now: Now) -> bool {
        loop {
            while let Some(t) = self.core.poll_transmit() {
                self.ike.send(&t);
            }
            let mut events = Vec::new();
            let mut any = false;
            while let Some(o) = self.core.poll_action() {
                any = true;
                match o {
                    Output::Reply { token, result } => {
                        if let Some((client, id)) = self.requests.remove(&token)
                            && let Some(c) = self.clients.get_mut(&client)
                        {
                            c.out.extend(api::encode_reply(Some(id), result));
                        }
                    }
                    Output::Bgp(a) => self.bgp.perform(now.instant, a, &mut events),
                    Output::IkeListen(locals) => self.ike.ensure(&locals, now.instant),
                    Output::KernelPort => self.kernel_port(now.instant),
                    Output::Log(line) => tracing::info!("{line}"),
                    Output::Warn(line) => tracing::warn!("{line}"),
                    Output::Stopped => self.stopped = true,
                }
            }
            if !events.is_empty() {
                self.feed_bgp(now, events);
            } else if !any {
                return self.stopped;
            }
        }
    }

    /// The kernel port's addresses, routes and neighbours for the current
    /// configuration.
    fn kernel_port(&mut self, now: Instant) {
        let config = self.core.manager().config();
        let Some(iface) = crate::kernel_port::kernel_iface(config) else {
            self.kernel_retry = None;
            return;
        };
        let want = crate::kernel_port::desired(config);
        if self.kernel.as_ref().is_none_or(|k| k.iface() != iface) {
            self.kernel = Some(KernelPort::new(&iface));
        }
        if let Some(k) = self.kernel.as_mut() {
            k.reconcile(&want, now);
            self.kernel_retry = (!k.settled(&want)).then_some(now + KERNEL_RETRY);
        }
    }

    /// Deadlines of sockets and clients.
    fn housekeeping(&mut self, now: Instant) {
        if self.ike.next_retry().is_some_and(|t| t <= now) {
            self.ike.retry(now);
        }
        if self.bgp.next_retry().is_some_and(|t| t <= now) {
            self.bgp.retry_listeners(now);
        }
        if self.kernel_retry.is_some_and(|t| t <= now) {
            self.kernel_port(now);
        }
        self.clients.retain(|_, c| !c.finished(now));
        self.metrics_clients.retain(|_, c| now < c.deadline);
    }

    fn accept_clients(&mut self, now: Instant) {
        loop {
            let stream = match self.setup.mgmt.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            if self.clients.len() >= MAX_CLIENTS {
                let reply = api::encode_reply(
                    None,
                    Err(ApiError::new(
                        ErrorCode::Internal,
                        format!("{MAX_CLIENTS} clients are connected; try again later"),
                    )),
                );
                let _ = (&stream).write(&reply);
                continue;
            }
            let mut client = Client {
                stream,
                framer: LineFramer::new(MAX_MESSAGE_BYTES),
                out: Vec::new(),
                refused_until: None,
                drained: 0,
                last_read: now,
                blocked_since: None,
                eof: false,
            };
            match rustix::net::sockopt::socket_peercred(&client.stream) {
                Ok(cred) => {
                    let pid = rustix::process::Pid::as_raw(Some(cred.pid));
                    let groups = mgmt::supplementary_groups(pid);
                    let (uid, gid) = (cred.uid.as_raw(), cred.gid.as_raw());
                    if !self.setup.policy.allows(uid, gid, &groups) {
                        tracing::warn!("refused client pid {pid} uid {uid} gid {gid}");
                        client.out = api::encode_reply(
                            None,
                            Err(ApiError::new(
                                ErrorCode::PermissionDenied,
                                format!(
                                    "uid {uid} is not allowed to use the management socket (root, the daemon's user or the socket group only)"
                                ),
                            )),
                        );
                        // Let it finish sending its request (bounded), so it
                        // reads the refusal instead of a broken pipe.
                        client.refused_until = Some(now + REFUSED_DRAIN);
                        let _ = client.flush(now);
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot read peer credentials: {e}");
                    continue;
                }
            }
            let id = self.next_client;
            self.next_client += 1;
            self.clients.insert(id, client);
        }
    }

    fn service_client(&mut self, now: Now, id: u64, revents: PollFlags) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if revents.contains(PollFlags::OUT) && c.flush(now.instant).is_err() {
            self.clients.remove(&id);
            return;
        }
        let mut frames = Vec::new();
        if revents.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            let mut buf = [0u8; 65_536];
            for _ in 0..CLIENT_READS_PER_WAKE {
                match (&c.stream).read(&mut buf) {
                    Ok(0) => {
                        c.eof = true;
                        frames.extend(c.framer.finish());
                        break;
                    }
                    Ok(n) => {
                        c.last_read = now.instant;
                        if c.refused_until.is_some() {
                            c.drained += n;
                        } else {
                            c.framer.push(&buf[..n], &mut frames);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        c.eof = true;
                        c.out.clear();
                        break;
                    }
                }
            }
        }
        for f in frames {
            let reply = match f {
                Framed::TooLong(n) => Some(api::encode_reply(
                    None,
                    Err(ApiError::new(
                        ErrorCode::TooLarge,
                        format!(
                            "message of {n} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes; discarded"
                        ),
                    )),
                )),
                Framed::Line(line) if line.iter().all(u8::is_ascii_whitespace) => None,
                Framed::Line(line) => match api::decode_request(&line) {
                    Ok(env) => {
                        let token = self.next_token;
                        self.next_token += 1;
                        self.requests.insert(token, (id, env.id));
                        self.core.handle(
                            now,
                            Event::Api {
                                token,
                                request: env.request,
                            },
                        );
                        // The reply goes into the client's buffer now, in
                        // order with the error replies of later lines.
                        self.drain(now);
                        None
                    }
                    Err(e) => Some(api::encode_reply(e.id, Err(e.error))),
                },
            };
            if let (Some(r), Some(c)) = (reply, self.clients.get_mut(&id)) {
                c.out.extend(r);
            }
        }
        if let Some(c) = self.clients.get_mut(&id) {
            if !c.out.is_empty() && c.flush(now.instant).is_err() {
                self.clients.remove(&id);
                return;
            }
            if c.finished(now.instant) {
                self.clients.remove(&id);
            }
        }
    }

    fn accept_metrics(&mut self, now: Instant) {
        let Some(l) = &self.setup.metrics else {
            return;
        };
        loop {
            match l.accept() {
                Ok((s, _)) => {
                    if s.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let id = self.next_client;
                    self.next_client += 1;
                    self.metrics_clients.insert(
                        id,
                        MetricsClient {
                            stream: s,
                            head: Vec::new(),
                            out: None,
                            deadline: now + METRICS_TIMEOUT,
                        },
                    );
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn service_metrics(&mut self, id: u64, revents: PollFlags) {
        let Some(c) = self.metrics_clients.get_mut(&id) else {
            return;
        };
        if c.out.is_none() && revents.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            let mut buf = [0u8; 1024];
            let mut done = false;
            loop {
                match (&c.stream).read(&mut buf) {
                    Ok(0) => {
                        done = true;
                        break;
                    }
                    Ok(n) => {
                        c.head.extend_from_slice(&buf[..n]);
                        if c.head.windows(4).any(|w| w == b"\r\n\r\n")
                            || c.head.len() >= METRICS_HEAD
                        {
                            done = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        done = true;
                        break;
                    }
                }
            }
            if done {
                c.out = Some(metrics_response(&c.head, || {
                    self.core.manager().render_metrics()
                }));
            }
        }
        let Some(c) = self.metrics_clients.get_mut(&id) else {
            return;
        };
        if let Some(out) = &mut c.out {
            loop {
                match (&c.stream).write(out) {
                    Ok(n) if n > 0 => drop(out.drain(..n)),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    _ => break,
                }
                if out.is_empty() {
                    break;
                }
            }
            self.metrics_clients.remove(&id);
        }
    }
}

/// How often the kernel port is looked at again while something it should
/// have is missing (the tap not there yet, an `ip` that failed).
const KERNEL_RETRY: Duration = Duration::from_secs(1);

/// The HTTP response to a metrics request head.
fn metrics_response(head: &[u8], render: impl FnOnce() -> String) -> Vec<u8> {
    let head = String::from_utf8_lossy(head);
    let first = head.lines().next().unwrap_or_default();
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = if method == "GET" && (target == "/metrics" || target == "/") {
        ("200 OK", control::metrics::CONTENT_TYPE, render())
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "GET /metrics\n".to_owned(),
        )
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
