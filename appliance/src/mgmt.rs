//! Plumbing for the management socket shared by `vpnd` and `vpnctl`:
//! bounded line framing, the peer-credential policy, group lookup and the
//! systemd readiness notification.
//!
//! The protocol itself (messages, codec) is `control::api`; this module
//! only moves bytes and decides who may talk.

use std::io::{self, BufRead};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// The outcome of reading one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineRead {
    /// A line is in the buffer (without its `\n`). The last line of a
    /// stream may lack the `\n`.
    Line,
    /// A line longer than the limit was read and discarded up to its
    /// `\n` (or the end of the stream); the value is its length.
    TooLong(usize),
    /// The stream ended with no further data.
    Eof,
}

/// Read one `\n`-terminated line into `buf` (cleared first), keeping at
/// most `max` bytes: a longer line is consumed and dropped, so memory stays
/// bounded whatever the peer sends.
///
/// # Errors
/// I/O errors of `reader` (including a read timeout).
pub fn read_bounded_line(
    reader: &mut impl BufRead,
    max: usize,
    buf: &mut Vec<u8>,
) -> io::Result<LineRead> {
    buf.clear();
    let mut total = 0usize;
    let mut overflow = false;
    loop {
        let avail = match reader.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(if overflow {
                LineRead::TooLong(total)
            } else if total == 0 {
                LineRead::Eof
            } else {
                LineRead::Line
            });
        }
        let (chunk, found) = match avail.iter().position(|b| *b == b'\n') {
            Some(i) => (&avail[..i], true),
            None => (avail, false),
        };
        total += chunk.len();
        if !overflow {
            if total > max {
                overflow = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = chunk.len() + usize::from(found);
        reader.consume(used);
        if found {
            return Ok(if overflow {
                LineRead::TooLong(total)
            } else {
                LineRead::Line
            });
        }
    }
}

/// One framed unit of a [`LineFramer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// A line (without its `\n`).
    Line(Vec<u8>),
    /// A line longer than the limit, discarded; the value is its length.
    TooLong(usize),
}

/// [`read_bounded_line`] for a non-blocking reader: bytes are pushed as
/// they arrive, whole lines come out, at most `max` bytes of a line are
/// kept (a longer one is dropped up to its `\n` and reported as
/// [`Framed::TooLong`]), so memory stays bounded whatever the peer sends.
#[derive(Debug)]
pub struct LineFramer {
    buf: Vec<u8>,
    max: usize,
    /// Length of the current line, when it is past the limit.
    overflow: Option<usize>,
}

impl LineFramer {
    /// Lines of at most `max` bytes.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
            overflow: None,
        }
    }

    /// Take `data`; whole lines (and discarded long ones) go to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Framed>) {
        while !data.is_empty() {
            let (chunk, found) = match data.iter().position(|b| *b == b'\n') {
                Some(i) => (&data[..i], true),
                None => (data, false),
            };
            match &mut self.overflow {
                Some(n) => *n += chunk.len(),
                None if self.buf.len() + chunk.len() > self.max => {
                    self.overflow = Some(self.buf.len() + chunk.len());
                    self.buf = Vec::new();
                }
                None => self.buf.extend_from_slice(chunk),
            }
            data = &data[chunk.len() + usize::from(found)..];
            if found {
                out.push(self.take());
            }
        }
    }

    /// The stream ended: the last line, if it lacked its `\n`.
    pub fn finish(&mut self) -> Option<Framed> {
        (self.overflow.is_some() || !self.buf.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Framed {
        match self.overflow.take() {
            Some(n) => Framed::TooLong(n),
            None => Framed::Line(std::mem::take(&mut self.buf)),
        }
    }
}

/// Who may use the management socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPolicy {
    /// The daemon's effective uid (always allowed).
    pub daemon_uid: u32,
    /// The configured socket group, if it exists on this host.
    pub group_gid: Option<u32>,
}

impl PeerPolicy {
    /// Root, the daemon's own user, and members (primary or supplementary)
    /// of the socket group are allowed.
    #[must_use]
    pub fn allows(&self, uid: u32, gid: u32, supplementary: &[u32]) -> bool {
        uid == 0
            || uid == self.daemon_uid
            || self
                .group_gid
                .is_some_and(|g| g == gid || supplementary.contains(&g))
    }
}

/// The gid of group `name` from `/etc/group`, if it exists.
#[must_use]
pub fn lookup_group_gid(name: &str) -> Option<u32> {
    lookup_group_gid_in(Path::new("/etc/group"), name)
}

fn lookup_group_gid_in(path: &Path, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

/// The supplementary groups of process `pid` (from `/proc/<pid>/status`);
/// empty if unreadable.
#[must_use]
pub fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// Tell systemd (`Type=notify`) about a state change, e.g. `READY=1`.
/// Does nothing when `NOTIFY_SOCKET` is unset.
///
/// # Errors
/// The notification socket cannot be reached.
pub fn sd_notify(state: &str) -> io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), Path::new(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The framer gives what `read_bounded_line` gives, however the bytes
    /// are split into reads.
    #[test]
    fn the_framer_agrees_with_the_blocking_reader() {
        let mut data = b"short\n\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 40));
        data.extend(b"\nafter\n");
        data.extend(std::iter::repeat_n(b'y', 11));
        data.extend(b"\nlast-without-newline");
        let max = 10;
        let mut want = Vec::new();
        let mut reader = io::BufReader::with_capacity(7, &data[..]);
        let mut line = Vec::new();
        loop {
            match read_bounded_line(&mut reader, max, &mut line).unwrap() {
                LineRead::Eof => break,
                LineRead::Line => want.push(Framed::Line(line.clone())),
                LineRead::TooLong(n) => want.push(Framed::TooLong(n)),
            }
        }
        assert_eq!(want[2], Framed::TooLong(40));
        for split in 1..data.len() {
            let mut f = LineFramer::new(max);
            let mut got = Vec::new();
            for chunk in data.chunks(split) {
                f.push(chunk, &mut got);
            }
            got.extend(f.finish());
            assert_eq!(got, want, "reads of {split} bytes");
        }
    }

    #[test]
    fn lines_are_bounded_and_the_stream_resyncs() {
        let mut data = b"short\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 100));
        data.extend(b"\nnext\npartial");
        let mut r = io::BufReader::with_capacity(16, &data[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_bounded_line(&mut r, 10, &mut buf).unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"short");
        assert_eq!(
            read_bounded_line(&mut r, 10, &mut buf).unwrap(),
            LineRead::TooLong(100)
        );
        assert_eq!(
            read_bounded_line(&mut r, 10, &mut buf).unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"next");
        assert_eq!(
            read_bounded_line(&mut r, 10, &mut buf).unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"partial");
        assert_eq!(
            read_bounded_line(&mut r, 10, &mut buf).unwrap(),
            LineRead::Eof
        );
    }

    #[test]
    fn policy() {
        let p = PeerPolicy {
            daemon_uid: 0,
            group_gid: Some(990),
        };
        assert!(p.allows(0, 0, &[]));
        assert!(p.allows(1000, 990, &[]));
        assert!(p.allows(1000, 1000, &[4, 990]));
        assert!(!p.allows(65534, 65534, &[]));
        let none = PeerPolicy {
            daemon_uid: 0,
            group_gid: None,
        };
        assert!(!none.allows(1000, 990, &[990]));
    }

    #[test]
    fn group_file_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("group");
        std::fs::write(&p, "root:x:0:\nvpnd:x:991:alice,bob\n").unwrap();
        assert_eq!(lookup_group_gid_in(&p, "vpnd"), Some(991));
        assert_eq!(lookup_group_gid_in(&p, "root"), Some(0));
        assert_eq!(lookup_group_gid_in(&p, "nope"), None);
    }
}
