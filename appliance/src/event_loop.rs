//! `vpnd`'s one event loop: every socket of the daemon wired to the
//! control core ([`control::core::Core`]), which owns the whole control
//! plane. No other thread touches the core's state (the log writer of
//! [`crate::logging`] is the only other thread besides the dataplane's
//! worker lcores).
//!
//! ```text
//!                  epoll (crate::poller): every fd registered when made,
//!                  removed when closed; a wake-up serves the ready ones;
//!                  timeout = the earliest of Core::poll_timeout, socket
//!                  retries (an index by time), client deadlines
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
//! Why a plain loop over `epoll(7)` (through `rustix`, already a
//! dependency) rather than an async runtime: every handler is
//! non-blocking and short, and the core is one `&mut` value with no
//! `Send`/`'static` constraints to satisfy; an async runtime would add a
//! scheduler, tasks and shared state to do what one loop does here. Why
//! epoll rather than `poll(2)` (the first version): every dynamic-routing
//! tunnel has a BGP socket, so at 10,000 tunnels each `poll(2)` wake-up
//! (at least every [`control::core::DATAPLANE_POLL`]) walked 10,000
//! sockets in the kernel and rebuilt the array here — 30 % of a core with
//! nothing happening. With epoll a wake-up costs the ready sockets; each
//! socket costs one `epoll_ctl` when made, when closed, and when what it
//! waits for changes (a client or BGP connection waits for writable only
//! while bytes are queued). Level-triggered, with bounded reads per
//! readiness ([`IKE_READS_PER_WAKE`], [`CLIENT_READS_PER_WAKE`], the BGP
//! module's), so one busy socket cannot starve the rest.
//!
//! What it never does: sleep (the only wait is `epoll_wait`), block on a
//! client (every socket is non-blocking; a client that sends more than
//! [`MAX_MESSAGE_BYTES`] per line has the line discarded, one that does
//! not read its replies stops being read and is closed after
//! [`CLIENT_WRITE_TIMEOUT`]), or keep unbounded buffers.
//!
//! One exception to "never blocks": the kernel port's addresses are set
//! with `ip` (a few milliseconds, only when the configuration changes or
//! a failed entry is retried).

use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control::api::{self, ApiError, ErrorCode, MAX_MESSAGE_BYTES};
use control::core::{Core, Event, Now, Output};
use control::dataplane::Dataplane;
use control::ike::sa::Datagram;

use crate::bgp_service::{BgpSockets, SocketEvent};
use crate::ike_service::{IkeSockets, MAX_DATAGRAM};
use crate::kernel_port::KernelPort;
use crate::mgmt::{self, Framed, LineFramer, PeerPolicy};
use crate::poller::{Interest, Poller, Readiness, Registry, Source, Token};

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
    /// What it is registered to wait for.
    interest: Interest,
}

impl Client {
    /// What it should wait for: requests while it reads its replies, room
    /// for replies while some are queued.
    fn wanted(&self) -> Interest {
        Interest {
            read: !self.eof && self.out.len() < CLIENT_OUT_HIGH,
            write: !self.out.is_empty(),
        }
    }

    /// Re-register when what it waits for changed (only then).
    fn sync(&mut self, registry: &Registry, id: u64) -> std::io::Result<()> {
        let want = self.wanted();
        if want != self.interest {
            registry.modify(&self.stream, Token::new(Source::Client, id), want)?;
            self.interest = want;
        }
        Ok(())
    }

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
    poller: Poller,
    /// The last wait's ready sockets.
    ready: Vec<(Token, Readiness)>,
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
    ///
    /// # Errors
    /// The epoll instance cannot be made, or a socket of `setup` cannot be
    /// registered with it.
    pub fn new(core: Core<D>, setup: Setup) -> std::io::Result<Self> {
        let poller = Poller::new()?;
        let registry = poller.registry().clone();
        for (i, s) in setup.signals.iter().enumerate() {
            s.0.set_nonblocking(true)?;
            registry.add(&s.0, Token::new(Source::Signal, i as u64), Interest::READ)?;
        }
        setup.mgmt.set_nonblocking(true)?;
        registry.add(&setup.mgmt, Token::new(Source::Mgmt, 0), Interest::READ)?;
        if let Some(m) = &setup.metrics {
            m.set_nonblocking(true)?;
            registry.add(m, Token::new(Source::Metrics, 0), Interest::READ)?;
        }
        let mut l = Self {
            core,
            setup,
            ike: IkeSockets::new(registry.clone()),
            bgp: BgpSockets::new(registry),
            poller,
            ready: Vec::new(),
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
        Ok(l)
    }

    /// Run until a signal stops the daemon (its DELETEs sent, the
    /// dataplane stopped, the socket removed); returns the exit code, 0.
    pub fn run(mut self) -> i32 {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let mut ready = std::mem::take(&mut self.ready);
            self.wait(Instant::now(), &mut ready);
            let now = clock();
            for &(token, readiness) in &ready {
                self.service(now, token, readiness, &mut buf);
                if self.drain(now) {
                    return self.finish();
                }
            }
            self.ready = ready;
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

    /// Wait until a socket is ready or the deadline passes; the ready
    /// ones go to `ready`.
    fn wait(&mut self, now: Instant, ready: &mut Vec<(Token, Readiness)>) {
        let timeout = self.deadline().map(|d| d.saturating_duration_since(now));
        if let Err(e) = self.poller.wait(timeout, ready) {
            // Nothing to wait on; the deadlines still run.
            tracing::error!("epoll_wait: {e}");
        }
    }

    /// Sockets registered with the loop's epoll instance (for tests).
    #[must_use]
    pub fn registered(&self) -> usize {
        self.poller.registry().registered()
    }

    fn service(&mut self, now: Now, token: Token, ready: Readiness, buf: &mut [u8]) {
        let Some(source) = token.source() else {
            return;
        };
        match source {
            Source::Signal => {
                let Some((s, sig)) = usize::try_from(token.id())
                    .ok()
                    .and_then(|i| self.setup.signals.get(i))
                else {
                    return;
                };
                let mut b = [0u8; 16];
                while matches!((&*s).read(&mut b), Ok(1..)) {}
                if !self.stopping {
                    self.stopping = true;
                    let _ = mgmt::sd_notify("STOPPING=1");
                    tracing::info!("signal {sig}, stopping");
                    self.core.handle(now, Event::Shutdown);
                }
            }
            Source::Mgmt => self.accept_clients(now.instant),
            Source::Client => self.service_client(now, token.id(), ready),
            Source::Metrics => self.accept_metrics(now.instant),
            Source::MetricsClient => self.service_metrics(token.id(), ready),
            Source::Ike => {
                let Some(local) = self.ike.local_of(token) else {
                    return;
                };
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
            Source::BgpListener | Source::BgpConn => {
                let mut events = Vec::new();
                self.bgp.service(token, ready, &mut events);
                self.feed_bgp(now, events);
            }
        }
    }

    /// Socket events to the core.
    fn feed_bgp(&mut self, now: Now, events: Vec<SocketEvent>) {
        let mut queue = VecDeque::from(events);
        while let Some(e) = queue.pop_front() {
            match e {
                SocketEvent::Accepted {
                    stream,
                    local,
                    remote,
                } => {
                    if let Some(id) = self.core.handle_bgp_accept(now, local, remote) {
                        let mut failed = Vec::new();
                        self.bgp.adopt(id, stream, &mut failed);
                        queue.extend(failed);
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
        let done: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.finished(now))
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            self.close_client(id);
        }
        let late: Vec<u64> = self
            .metrics_clients
            .iter()
            .filter(|(_, c)| now >= c.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.close_metrics_client(id);
        }
    }

    /// Deregister and close management client `id`.
    fn close_client(&mut self, id: u64) {
        if let Some(c) = self.clients.remove(&id) {
            let _ = self.poller.registry().delete(&c.stream);
        }
    }

    /// Deregister and close metrics client `id`.
    fn close_metrics_client(&mut self, id: u64) {
        if let Some(c) = self.metrics_clients.remove(&id) {
            let _ = self.poller.registry().delete(&c.stream);
        }
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
                interest: Interest::NONE,
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
            client.interest = client.wanted();
            if let Err(e) = self.poller.registry().add(
                &client.stream,
                Token::new(Source::Client, id),
                client.interest,
            ) {
                tracing::warn!("management client: epoll: {e}");
                continue;
            }
            self.clients.insert(id, client);
        }
    }

    fn service_client(&mut self, now: Now, id: u64, ready: Readiness) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if ready.writable() && c.flush(now.instant).is_err() {
            self.close_client(id);
            return;
        }
        let mut frames = Vec::new();
        if ready.readable() {
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
        if let Some(c) = self.clients.get_mut(&id)
            && ((!c.out.is_empty() && c.flush(now.instant).is_err())
                || c.finished(now.instant)
                || c.sync(self.poller.registry(), id).is_err())
        {
            self.close_client(id);
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
                    let token = Token::new(Source::MetricsClient, id);
                    if let Err(e) = self.poller.registry().add(&s, token, Interest::READ) {
                        tracing::warn!("metrics client: epoll: {e}");
                        continue;
                    }
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

    fn service_metrics(&mut self, id: u64, ready: Readiness) {
        let Some(c) = self.metrics_clients.get_mut(&id) else {
            return;
        };
        if c.out.is_none() && ready.readable() {
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
                let token = Token::new(Source::MetricsClient, id);
                if self
                    .poller
                    .registry()
                    .modify(&c.stream, token, Interest::WRITE)
                    .is_err()
                {
                    self.close_metrics_client(id);
                    return;
                }
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
            self.close_metrics_client(id);
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
