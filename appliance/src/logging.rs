//! vpnd's log: one `tracing` subscriber, installed once from `[logging]`
//! ([`LoggingConfig`]), for every thread of the daemon.
//!
//! ```text
//!  any thread: tracing event ──► EnvFilter (level, or RUST_LOG)
//!                                  ├─► journald layer ──► /run/systemd/journal/socket   (when chosen)
//!                                  └─► line layer: format on the caller's thread (text or JSON;
//!                                      a tunnel record is its own line, as rendered)
//!                                        │ try_send, bounded queue (LINE_QUEUE lines);
//!                                        │ full: the line is dropped and counted
//!                                        ▼
//!  "log-writer" thread: stderr (unless journald) + the log file, rotated by size
//! ```
//!
//! What it guarantees:
//!
//! * No thread that logs waits on a disk or a pipe for the stderr and file
//!   outputs: it formats the line and hands it to the writer thread without
//!   blocking. When the writer falls behind (slow disk, a stderr reader
//!   that stopped reading) lines are dropped, counted, and the count is
//!   written as soon as the writer catches up
//!   (`vpnd: log: N line(s) dropped …`). The journald output writes one
//!   datagram per event from the calling thread (`tracing-journald`); the
//!   kernel's socket buffer absorbs bursts and journald's own rate limit
//!   applies.
//! * The text format keeps the daemon's historical line: `<UTC time>
//!   <LEVEL> vpnd: <message> <fields> <span fields>`, so the message text
//!   is exactly what `eprintln!("vpnd: …")` used to print (operators' and
//!   tests' greps keep working). JSON: one object per line (`timestamp`,
//!   `level`, `target`, `fields`, `spans`).
//! * Tunnel activity and BGP records (targets
//!   [`control::logs::ACTIVITY_TARGET`] and [`control::logs::BGP_TARGET`],
//!   emitted only for tunnels whose `log` options enable the stream) are
//!   written as their own line, the record in its tunnel's format, not
//!   wrapped in the daemon's format.
//! * The file is rotated before a line would take it past
//!   `file_max_bytes`: `vpnd.log` → `vpnd.log.1` → … → `vpnd.log.N`
//!   (`file_keep`), the oldest removed. A line is never split, so a file
//!   is over the bound only when one line alone is. A small writer of our
//!   own: `tracing-appender` rotates by time only, and the size rule is a
//!   few renames.
//! * [`flush`] waits (bounded) until every queued line is written: vpnd
//!   calls it before it exits.
//!
//! What it never does: block a logging thread on I/O of the stderr or file
//! outputs, or write anywhere before [`init`] is called (events before it
//! are discarded: vpnd calls it first thing).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use control::config::{LogFormat, LoggingConfig};
use control::logs::{ACTIVITY_TARGET, BGP_TARGET};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{DefaultFields, Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Lines the writer thread may have queued; more are dropped and counted.
pub const LINE_QUEUE: usize = 8192;

/// Why the log could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// The log file cannot be opened (or its directory created).
    #[error("cannot open the log file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The journald socket cannot be used.
    #[error("cannot log to journald: {0}")]
    Journald(#[source] io::Error),
    /// The writer thread cannot be started.
    #[error("cannot start the log writer thread: {0}")]
    Thread(#[source] io::Error),
    /// A subscriber was installed already.
    #[error("the log is set up already")]
    AlreadySet,
}

/// Where the log goes, resolved from [`LoggingConfig`] and the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outputs {
    /// The filter directive (`info`, or `RUST_LOG`'s value).
    pub filter: String,
    /// Daemon lines' format.
    pub format: LogFormat,
    /// journald instead of stderr.
    pub journald: bool,
    /// The file output.
    pub file: Option<FileOutput>,
}

/// The rotated file output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutput {
    /// The file.
    pub path: PathBuf,
    /// Rotate before the file would pass this size.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
}

impl Outputs {
    /// Resolve `cfg`: `RUST_LOG` (when set and not empty) replaces the
    /// level; journald when asked, or, when `journald` is absent, when
    /// stderr is the journal (`JOURNAL_STREAM`).
    #[must_use]
    pub fn resolve(cfg: &LoggingConfig) -> Self {
        let filter = std::env::var("RUST_LOG")
            .ok()
            .filter(|f| !f.trim().is_empty())
            .unwrap_or_else(|| cfg.level.as_str().to_owned());
        Self {
            filter,
            format: cfg.format,
            journald: cfg.journald.unwrap_or_else(stderr_is_journal),
            file: cfg.file.as_ref().map(|p| FileOutput {
                path: p.clone(),
                max_bytes: cfg.file_max_bytes,
                keep: cfg.file_keep,
            }),
        }
    }
}

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM` to the
/// `<device>:<inode>` of the stream it connected stdout/stderr to.
fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    rustix::fs::fstat(io::stderr().as_fd()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

struct Queue {
    tx: SyncSender<Msg>,
    dropped: AtomicU64,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();

/// Install the subscriber for `outputs` and start the writer thread.
///
/// # Errors
/// The file or journald cannot be opened, the thread cannot start, or a
/// subscriber is installed already.
pub fn init(outputs: &Outputs) -> Result<(), InitError> {
    let file = match &outputs.file {
        Some(f) => Some(RotatingFile::open(f).map_err(|source| InitError::File {
            path: f.path.clone(),
            source,
        })?),
        None => None,
    };
    let journald = if outputs.journald {
        Some(
            tracing_journald::layer()
                .map_err(InitError::Journald)?
                .with_syslog_identifier("vpnd".to_owned()),
        )
    } else {
        None
    };
    let to_stderr = !outputs.journald;
    let lines: Option<Box<dyn Layer<Registry> + Send + Sync>> = if to_stderr || file.is_some() {
        let (tx, rx) = sync_channel(LINE_QUEUE);
        std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || write_lines(&rx, to_stderr, file))
            .map_err(InitError::Thread)?;
        if QUEUE
            .set(Queue {
                tx,
                dropped: AtomicU64::new(0),
            })
            .is_err()
        {
            return Err(InitError::AlreadySet);
        }
        Some(if outputs.format == LogFormat::Text {
            tracing_subscriber::fmt::layer()
                .event_format(TextLine)
                .fmt_fields(DefaultFields::new())
                .with_writer(QueueWriter)
                .with_ansi(false)
                .boxed()
        } else {
            tracing_subscriber::fmt::layer()
                .event_format(JsonLine(
                    tracing_subscriber::fmt::format()
                        .json()
                        .with_current_span(false)
                        .with_span_list(true),
                ))
                .fmt_fields(JsonFields::new())
                .with_writer(QueueWriter)
                .with_ansi(false)
                .boxed()
        })
    } else {
        None
    };
    let filter = EnvFilter::try_new(&outputs.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(lines)
        .with(journald)
        .with(filter)
        .try_init()
        .map_err(|_| InitError::AlreadySet)
}

/// Wait until the lines queued so far are written (at most `timeout`).
/// Returns whether they were. Without [`init`] there is nothing to wait for.
pub fn flush(timeout: Duration) -> bool {
    let Some(q) = QUEUE.get() else {
        return true;
    };
    let deadline = Instant::now() + timeout;
    let (ack_tx, ack_rx) = sync_channel(1);
    let mut msg = Msg::Flush(ack_tx);
    loop {
        match q.tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(m)) => {
                if Instant::now() >= deadline {
                    return false;
                }
                msg = m;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    ack_rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .is_ok()
}

/// The writer thread: every queued line to stderr and/or the file.
fn write_lines(rx: &Receiver<Msg>, to_stderr: bool, mut file: Option<RotatingFile>) {
    let mut file_error_reported = false;
    let mut out = |file: &mut Option<RotatingFile>, line: &[u8]| {
        if to_stderr {
            let _ = io::stderr().write_all(line);
        }
        if let Some(f) = file
            && let Err(e) = f.write_line(line)
            && !file_error_reported
        {
            // Once: a full disk would otherwise double every line.
            file_error_reported = true;
            let _ = writeln!(
                io::stderr(),
                "vpnd: log: cannot write {}: {e} (further errors not shown)",
                f.path.display()
            );
        }
    };
    while let Ok(msg) = rx.recv() {
        if let Some(q) = QUEUE.get() {
            let n = q.dropped.swap(0, Ordering::Relaxed);
            if n > 0 {
                let note = format!(
                    "vpnd: log: {n} line(s) dropped: the log writer fell behind (slow disk or stderr reader)\n"
                );
                out(&mut file, note.as_bytes());
            }
        }
        match msg {
            Msg::Line(l) => out(&mut file, &l),
            Msg::Flush(ack) => {
                if let Some(f) = &mut file {
                    let _ = f.file.flush();
                }
                let _ = ack.try_send(());
            }
        }
    }
}

/// The line layer's writer: collects one formatted event, queues it on
/// drop.
struct QueueWriter;

struct QueuedLine(Vec<u8>);

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = QueuedLine;

    fn make_writer(&'a self) -> Self::Writer {
        QueuedLine(Vec::new())
    }
}

impl Write for QueuedLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let Some(q) = QUEUE.get() else { return };
        match q.tx.try_send(Msg::Line(std::mem::take(&mut self.0))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                q.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The writer thread is gone (it never exits while the process
            // runs): nothing to do but lose the line.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn is_record(target: &str) -> bool {
    target == ACTIVITY_TARGET || target == BGP_TARGET
}

/// The `message` field of an event, as text.
#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            use std::fmt::Write as _;
            let _ = write!(self.0, "{value:?}");
        }
    }
}

/// A tunnel record: its message, as is, on its own line.
fn write_record(mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
    let mut m = Message::default();
    event.record(&mut m);
    writeln!(w, "{}", m.0)
}

/// `2026-12-06T05:40:29.641123Z  INFO vpnd: <message> <fields> <span
/// fields, outermost first>`.
struct TextLine;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if is_record(meta.target()) {
            return write_record(w, event);
        }
        SystemTime.format_time(&mut w)?;
        write!(w, " {:>5} vpnd: ", meta.level())?;
        ctx.format_fields(w.by_ref(), event)?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<N>>()
                    && !f.is_empty()
                {
                    write!(w, " {f}")?;
                }
            }
        }
        writeln!(w)
    }
}

/// `tracing-subscriber`'s JSON lines, except tunnel records (their own
/// line, as rendered).
struct JsonLine(Format<Json>);

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if is_record(event.metadata().target()) {
            return write_record(w, event);
        }
        self.0.format_event(ctx, w, event)
    }
}

/// A file rotated by size: `path`, then `path.1` (newest) … `path.keep`.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl RotatingFile {
    /// Open (append) or create `out.path`, creating its directory.
    ///
    /// # Errors
    /// The directory or the file cannot be created or opened.
    pub fn open(out: &FileOutput) -> io::Result<Self> {
        if let Some(dir) = out.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(&out.path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: out.path.clone(),
            file,
            size,
            max_bytes: out.max_bytes,
            keep: out.keep.max(1),
        })
    }

    /// Append one line, rotating first when it would take the file past
    /// its bound (an empty file takes the line whatever its length).
    ///
    /// # Errors
    /// Renaming, reopening or writing failed.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let _ = std::fs::remove_file(numbered(&self.path, self.keep));
        for i in (1..self.keep).rev() {
            let from = numbered(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, numbered(&self.path, i + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `path.n`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(dir: &Path, max_bytes: u64, keep: u32) -> FileOutput {
        FileOutput {
            path: dir.join("log").join("vpnd.log"),
            max_bytes,
            keep,
        }
    }

    #[test]
    fn rotation_bounds_size_and_file_count_and_keeps_the_newest_lines() {
        let dir = tempfile::tempdir().unwrap();
        let o = out(dir.path(), 100, 3);
        let mut f = RotatingFile::open(&o).unwrap();
        // 40 lines of 28 bytes: 3 lines (84 bytes) per file.
        for i in 0..40 {
            f.write_line(format!("line {i:04} .................\n").as_bytes())
                .unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let mut files = vec![o.path.clone()];
        files.extend((1..=3).map(|n| numbered(&o.path, n)));
        for p in &files {
            let len = std::fs::metadata(p).unwrap().len();
            assert!(len <= 100, "{}: {len} bytes", p.display());
        }
        assert!(!numbered(&o.path, 4).exists(), "more than 3 rotated files");
        let names: Vec<_> = std::fs::read_dir(o.path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        // Oldest to newest: .3, .2, .1, the file; lines in order, the
        // last 10 written (3 full files and the current one with 1).
        let all: String = files.iter().rev().map(|p| read(p)).collect();
        let got: Vec<u32> = all.lines().map(|l| l[5..9].parse().unwrap()).collect();
        assert_eq!(got, (30..40).collect::<Vec<_>>());
        assert_eq!(read(&o.path).lines().count(), 1);
    }

    #[test]
    fn reopening_appends_and_counts_the_existing_size() {
        let dir = tempfile::tempdir().unwrap();
        let o = out(dir.path(), 64, 1);
        RotatingFile::open(&o)
            .unwrap()
            .write_line(&[b'a'; 40])
            .unwrap();
        let mut f = RotatingFile::open(&o).unwrap();
        // 40 + 30 > 64: the existing file is rotated away first.
        f.write_line(&[b'b'; 30]).unwrap();
        assert_eq!(std::fs::read(&o.path).unwrap(), vec![b'b'; 30]);
        assert_eq!(std::fs::read(numbered(&o.path, 1)).unwrap(), vec![b'a'; 40]);
        // A line longer than the bound goes alone into a fresh file.
        f.write_line(&[b'c'; 100]).unwrap();
        assert_eq!(std::fs::read(&o.path).unwrap(), vec![b'c'; 100]);
        assert_eq!(std::fs::read(numbered(&o.path, 1)).unwrap(), vec![b'b'; 30]);
        assert!(!numbered(&o.path, 2).exists());
    }

    /// Lines formatted by `TextLine` or `JsonLine`, captured.
    fn capture(json: bool, f: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let layer = if json {
            tracing_subscriber::fmt::layer()
                .event_format(JsonLine(
                    tracing_subscriber::fmt::format()
                        .json()
                        .with_current_span(false)
                        .with_span_list(true),
                ))
                .fmt_fields(JsonFields::new())
                .with_writer(move || w.clone())
                .with_ansi(false)
                .boxed()
        } else {
            tracing_subscriber::fmt::layer()
                .event_format(TextLine)
                .fmt_fields(DefaultFields::new())
                .with_writer(move || w.clone())
                .with_ansi(false)
                .boxed()
        };
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    fn events() {
        let span = tracing::info_span!("bgp", connection = "vpn-1", tunnel = 0_usize);
        span.in_scope(|| tracing::warn!("bgp: vpn-1/0 cannot listen on 169.254.21.1: busy"));
        tracing::info!(target: "vpn::tunnel::activity", "{}", "2025-11-08 05:40:29.641Z vpn-1_1.2.3.4 details=\"x\"");
    }

    #[test]
    fn text_lines_keep_the_vpnd_prefix_and_records_are_their_own_line() {
        let out = capture(false, events);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].ends_with(
                " WARN vpnd: bgp: vpn-1/0 cannot listen on 169.254.21.1: busy connection=\"vpn-1\" tunnel=0"
            ),
            "{out}"
        );
        assert_eq!(
            lines[1],
            "2025-11-08 05:40:29.641Z vpn-1_1.2.3.4 details=\"x\""
        );
        let out = capture(true, events);
        let lines: Vec<&str> = out.lines().collect();
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["spans"][0]["connection"], "vpn-1", "{out}");
        assert_eq!(
            lines[1],
            "2025-11-08 05:40:29.641Z vpn-1_1.2.3.4 details=\"x\""
        );
    }

    #[test]
    fn rust_log_replaces_the_level_and_journald_follows_the_setting() {
        let mut cfg = LoggingConfig {
            journald: Some(false),
            ..LoggingConfig::default()
        };
        // RUST_LOG is only read here (the test environment may set it).
        let from_env = std::env::var("RUST_LOG")
            .ok()
            .filter(|f| !f.trim().is_empty());
        let o = Outputs::resolve(&cfg);
        assert_eq!(o.filter, from_env.unwrap_or_else(|| "info".to_owned()));
        assert!(!o.journald);
        assert_eq!(o.file, None);
        cfg.journald = Some(true);
        cfg.file = Some("/var/log/vpnd.log".into());
        let o = Outputs::resolve(&cfg);
        assert!(o.journald);
        assert_eq!(
            o.file,
            Some(FileOutput {
                path: "/var/log/vpnd.log".into(),
                max_bytes: cfg.file_max_bytes,
                keep: cfg.file_keep
            })
        );
    }
}
