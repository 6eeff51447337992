//! Readiness for `vpnd`'s event loop: one level-triggered `epoll(7)`
//! instance (through `rustix`) that every socket of the daemon is
//! registered with once, when it is made, under a [`Token`] that names its
//! owner, and removed from when it is closed.
//!
//! ```text
//!   owner makes a socket ──► Registry::add(fd, Token{source, id}, Interest)
//!   what it waits for changes (e.g. bytes queued) ──► Registry::modify
//!   owner closes it ──► Registry::delete, then drop
//!   event loop ──► Poller::wait(timeout) ──► [(Token, Readiness)] of the
//!                  ready sockets only; the token's source picks the owner,
//!                  its id the socket inside the owner (a map lookup)
//! ```
//!
//! Why epoll rather than `poll(2)`: each dynamic-routing tunnel has a BGP
//! socket, so at 10,000 tunnels a `poll(2)` wake-up walked 10,000 sockets
//! in the kernel (and the loop rebuilt the array each time): 30 % of a
//! core with nothing happening. With epoll a wake-up costs the sockets
//! that are ready; registration costs one `epoll_ctl` per socket made,
//! closed or changing what it waits for.
//!
//! Level-triggered on purpose: an owner may stop reading a socket part-way
//! (bounded reads per wake-up, so one busy socket cannot starve the
//! others) and is woken again on the next wait, with no re-arming.
//!
//! What it never does: own a socket (the owners do; they must
//! [`Registry::delete`] before dropping one, which [`Registry::registered`]
//! lets the tests check), or block beyond the timeout it is given.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use rustix::event::Timespec;
use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};

/// Events taken from the kernel per wait (more ready sockets are reported
/// by the next wait: level-triggered).
pub const EVENTS_PER_WAIT: usize = 256;
/// Longest single wait (epoll's millisecond timeout must fit an `i32`).
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Who owns a registered socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Source {
    /// A signal pipe (id: its index).
    Signal = 1,
    /// The management listener.
    Mgmt = 2,
    /// A management client (id: the client's number).
    Client = 3,
    /// The metrics listener.
    Metrics = 4,
    /// A metrics client (id: the client's number).
    MetricsClient = 5,
    /// An IKE UDP socket (id: the socket's number in `IkeSockets`).
    Ike = 6,
    /// A BGP listener (id: the listener's number in `BgpSockets`).
    BgpListener = 7,
    /// A BGP connection, connecting or open (id: its `ConnId`).
    BgpConn = 8,
}

impl Source {
    const ALL: [Self; 8] = [
        Self::Signal,
        Self::Mgmt,
        Self::Client,
        Self::Metrics,
        Self::MetricsClient,
        Self::Ike,
        Self::BgpListener,
        Self::BgpConn,
    ];
}

/// A registered socket's name in the epoll instance: its [`Source`] in the
/// top 8 bits, an id inside that source in the low 56.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Token(u64);

impl Token {
    const ID_BITS: u32 = 56;
    const ID_MASK: u64 = (1 << Self::ID_BITS) - 1;

    /// The token of socket `id` of `source`; ids beyond 56 bits are
    /// truncated (the owners count from 1, one per socket made).
    #[must_use]
    pub const fn new(source: Source, id: u64) -> Self {
        Self(((source as u64) << Self::ID_BITS) | (id & Self::ID_MASK))
    }

    /// Its source (`None` for a value no [`Token::new`] made).
    #[must_use]
    pub fn source(self) -> Option<Source> {
        let tag = self.0 >> Self::ID_BITS;
        Source::ALL.into_iter().find(|s| *s as u64 == tag)
    }

    /// Its id inside the source.
    #[must_use]
    pub const fn id(self) -> u64 {
        self.0 & Self::ID_MASK
    }
}

/// What a socket waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interest {
    /// Readable (or a connection to accept).
    pub read: bool,
    /// Writable (or a connect finished).
    pub write: bool,
}

impl Interest {
    /// Readable only.
    pub const READ: Self = Self {
        read: true,
        write: false,
    };
    /// Writable only.
    pub const WRITE: Self = Self {
        read: false,
        write: true,
    };
    /// Nothing but errors and hang-ups (which epoll always reports).
    pub const NONE: Self = Self {
        read: false,
        write: false,
    };

    fn flags(self) -> EventFlags {
        let mut f = EventFlags::empty();
        if self.read {
            f |= EventFlags::IN;
        }
        if self.write {
            f |= EventFlags::OUT;
        }
        f
    }
}

/// What a ready socket is ready for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness(EventFlags);

impl Readiness {
    /// Readiness from `poll`-style flags (for owners' tests).
    #[must_use]
    pub const fn from_flags(flags: EventFlags) -> Self {
        Self(flags)
    }

    /// Data (or a connection, or end of stream) to read.
    #[must_use]
    pub fn readable(self) -> bool {
        self.0
            .intersects(EventFlags::IN | EventFlags::HUP | EventFlags::ERR)
    }

    /// Room to write (or a connect finished).
    #[must_use]
    pub fn writable(self) -> bool {
        self.0.contains(EventFlags::OUT)
    }

    /// An error or hang-up is pending.
    #[must_use]
    pub fn failed(self) -> bool {
        self.0.intersects(EventFlags::HUP | EventFlags::ERR)
    }
}

#[derive(Debug)]
struct Inner {
    epoll: OwnedFd,
    registered: Cell<usize>,
}

/// The handle owners register their sockets through (cheap to clone; all
/// clones are the same epoll instance). Single-threaded, like the loop.
#[derive(Debug, Clone)]
pub struct Registry(Rc<Inner>);

impl Registry {
    /// Wait for `interest` on `fd`, reported as `token`.
    ///
    /// # Errors
    /// `epoll_ctl` failed (e.g. `EEXIST`: `fd` is registered already).
    pub fn add(&self, fd: impl AsFd, token: Token, interest: Interest) -> io::Result<()> {
        epoll::add(
            &self.0.epoll,
            fd,
            EventData::new_u64(token.0),
            interest.flags(),
        )?;
        self.0.registered.set(self.0.registered.get() + 1);
        Ok(())
    }

    /// Change what a registered `fd` waits for (and its token).
    ///
    /// # Errors
    /// `epoll_ctl` failed (e.g. `ENOENT`: `fd` is not registered).
    pub fn modify(&self, fd: impl AsFd, token: Token, interest: Interest) -> io::Result<()> {
        epoll::modify(
            &self.0.epoll,
            fd,
            EventData::new_u64(token.0),
            interest.flags(),
        )?;
        Ok(())
    }

    /// Stop waiting on `fd` (call before closing it).
    ///
    /// # Errors
    /// `epoll_ctl` failed (e.g. `ENOENT`: `fd` is not registered).
    pub fn delete(&self, fd: impl AsFd) -> io::Result<()> {
        epoll::delete(&self.0.epoll, fd)?;
        self.0
            .registered
            .set(self.0.registered.get().saturating_sub(1));
        Ok(())
    }

    /// Sockets registered now (added and not deleted).
    #[must_use]
    pub fn registered(&self) -> usize {
        self.0.registered.get()
    }
}

/// The epoll instance and its event buffer.
pub struct Poller {
    registry: Registry,
    events: Vec<Event>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("registry", &self.registry)
            .field("events", &self.events.len())
            .finish()
    }
}

impl Poller {
    /// A new epoll instance with nothing registered.
    ///
    /// # Errors
    /// `epoll_create1` failed (out of file descriptors).
    pub fn new() -> io::Result<Self> {
        let epoll = epoll::create(CreateFlags::CLOEXEC)?;
        Ok(Self {
            registry: Registry(Rc::new(Inner {
                epoll,
                registered: Cell::new(0),
            })),
            events: Vec::with_capacity(EVENTS_PER_WAIT),
        })
    }

    /// The handle to register sockets through.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Wait until a registered socket is ready or `timeout` passes (`None`:
    /// no timeout); the ready ones (at most [`EVENTS_PER_WAIT`]) replace
    /// the contents of `ready`. `EINTR` is an empty wait.
    ///
    /// # Errors
    /// `epoll_wait` failed otherwise.
    pub fn wait(
        &mut self,
        timeout: Option<Duration>,
        ready: &mut Vec<(Token, Readiness)>,
    ) -> io::Result<()> {
        ready.clear();
        self.events.clear();
        let timeout = timeout.map(|d| {
            let d = d.min(MAX_WAIT);
            Timespec {
                tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(d.subsec_nanos()),
            }
        });
        match epoll::wait(
            &self.registry.0.epoll,
            rustix::buffer::spare_capacity(&mut self.events),
            timeout.as_ref(),
        ) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        ready.extend(self.events.iter().map(|e| {
            // Copies out of the (packed) event.
            let (flags, data) = (e.flags, e.data);
            (Token(data.u64()), Readiness(flags))
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn tokens_round_trip() {
        for s in Source::ALL {
            for id in [0, 1, 42, Token::ID_MASK] {
                let t = Token::new(s, id);
                assert_eq!((t.source(), t.id()), (Some(s), id));
            }
        }
        assert_eq!(Token(0).source(), None);
        assert_eq!(Token(u64::MAX).source(), None);
    }

    /// Only ready sockets are reported, under their tokens; interest
    /// changes and deletion take effect; the count follows.
    #[test]
    fn reports_ready_sockets_by_token() {
        let mut p = Poller::new().unwrap();
        let r = p.registry().clone();
        let (a, a_peer) = UnixStream::pair().unwrap();
        let (b, _b_peer) = UnixStream::pair().unwrap();
        r.add(&a, Token::new(Source::Client, 1), Interest::READ)
            .unwrap();
        r.add(&b, Token::new(Source::Client, 2), Interest::READ)
            .unwrap();
        assert_eq!(r.registered(), 2);
        let mut ready = Vec::new();
        p.wait(Some(Duration::ZERO), &mut ready).unwrap();
        assert!(ready.is_empty(), "{ready:?}");

        (&a_peer).write_all(b"x").unwrap();
        p.wait(Some(Duration::from_secs(5)), &mut ready).unwrap();
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].0, Token::new(Source::Client, 1));
        assert!(ready[0].1.readable() && !ready[0].1.writable());
        // Level-triggered: still readable, reported again.
        p.wait(Some(Duration::ZERO), &mut ready).unwrap();
        assert_eq!(ready.len(), 1);

        // Writable interest on b: b is reported (and a still is).
        r.modify(&b, Token::new(Source::Client, 2), Interest::WRITE)
            .unwrap();
        p.wait(Some(Duration::ZERO), &mut ready).unwrap();
        ready.sort_by_key(|(t, _)| *t);
        assert_eq!(ready.len(), 2);
        assert!(ready[1].1.writable());

        r.delete(&a).unwrap();
        r.delete(&b).unwrap();
        assert_eq!(r.registered(), 0);
        p.wait(Some(Duration::ZERO), &mut ready).unwrap();
        assert!(ready.is_empty(), "{ready:?}");
        assert!(r.delete(&a).is_err());
        assert_eq!(r.registered(), 0);
    }
}
