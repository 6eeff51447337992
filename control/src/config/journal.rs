//! Persistence whose cost per change is the change's size: an append-only
//! journal of changes on top of a snapshot of the whole configuration.
//!
//! Files, next to the TOML configuration file `<dir>/<stem>.toml`:
//!
//! ```text
//!   <dir>/<stem>.snapshot   header (magic "vpnsnap1", generation g) + one frame:
//!                           the whole ApplianceConfig as JSON
//!   <dir>/<stem>.journal    header (magic "vpnjrnl1", generation g) + frames:
//!                           one Change per acknowledged change, in order
//!   frame:                  len u32 LE | crc32 u32 LE | payload (len bytes)
//!                           crc32 (IEEE) over the len bytes and the payload
//! ```
//!
//! Protocol (one writer: the control core, under the manager's lock):
//!
//! * change: append one frame to the journal, `fdatasync`, then
//!   acknowledge. Cost: the change's bytes and one sync, whatever the size
//!   of the configuration.
//! * compaction, when the journal is longer than the snapshot (and at
//!   least [`MIN_COMPACT_BYTES`]): write snapshot g+1 to a temp file,
//!   fsync, rename over `<stem>.snapshot`, fsync the directory; then an
//!   empty journal of generation g+1 the same way. Each compaction writes
//!   the whole configuration once after at least as many journal bytes, so
//!   its cost per change stays bounded by a constant (amortised).
//! * start: read the snapshot, replay the journal's frames if its
//!   generation is the snapshot's. A journal of an older generation (a
//!   crash between the two renames of a compaction) holds only changes the
//!   snapshot already has: it is replaced by an empty one.
//!
//! Crash safety: the snapshot and the journal header are only ever
//! replaced by `rename(2)` of a complete, fsynced file, so they are never
//! torn. A crash in the middle of an append leaves a short or partly
//! written last frame: its length or checksum does not match, and
//! [`Journal::open`] drops it (and anything after it), truncates the file
//! to the last whole frame and reports the dropped bytes in
//! [`OpenReport::dropped_tail`] for the daemon to log. That change was
//! never acknowledged (the acknowledgement follows the sync), so every
//! acknowledged change is kept. Start never fails because of a torn tail.
//!
//! What it never does: read the clock, or write anything but these two
//! files and their temp files in the same directory.
//!
//! # Why a journal and not an embedded store (redb)
//!
//! Both make a change cost its own size plus a sync. redb (a copy-on-write
//! B-tree with checksummed commit slots) would write a few 4 KiB pages and
//! sync per commit; the journal writes the record (~1.5 KiB for a
//! connection) and issues one `fdatasync`. Both survive a torn write: redb
//! falls back to the previous commit slot, the journal cuts the tail at the
//! first frame whose length or CRC does not hold (tested at every byte
//! offset of the last record). The configuration is a document in which
//! order matters (connections are shown and exported in creation order) and
//! every change replaces one whole object, which maps onto one record
//! directly; in a key-value store it needs ordered sequence keys and a
//! second index by id. The journal is about 600 lines of our own code (docs included)
//! using `crc32fast` and the serde types we already have, against a
//! ~20,000-line dependency whose file also needs compaction. redb was not
//! measured here; the journal's figures are in `bench/README.md`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::appliance::ApplianceConfig;
use super::connection::VpnConnection;
use super::gateway::CustomerGateway;
use super::store::FILE_MODE;

const SNAPSHOT_MAGIC: &[u8; 8] = b"vpnsnap1";
const JOURNAL_MAGIC: &[u8; 8] = b"vpnjrnl1";
const HEADER_LEN: u64 = 16;
const FRAME_HEADER_LEN: usize = 8;
/// Largest frame accepted; a length above it is a corrupt frame (and
/// keeps a garbage length from allocating gigabytes).
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
/// The journal is compacted once it is longer than the snapshot and at
/// least this long.
pub const MIN_COMPACT_BYTES: u64 = 1024 * 1024;

/// One acknowledged change, as the journal records it: the new state of
/// the one object changed (or its removal), never the whole
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Change {
    /// Add a customer gateway, or replace the one with its id.
    PutCustomerGateway {
        /// The gateway.
        customer_gateway: CustomerGateway,
    },
    /// Remove a customer gateway.
    DeleteCustomerGateway {
        /// Its id.
        id: String,
    },
    /// Add a connection (at the end), or replace the one with its id.
    PutConnection {
        /// The connection, with its generated values.
        connection: Box<VpnConnection>,
    },
    /// Remove a connection.
    DeleteConnection {
        /// Its id.
        id: String,
    },
    /// Add a Client VPN endpoint (at the end), or replace the one with
    /// its id.
    PutClientVpnEndpoint {
        /// The endpoint.
        endpoint: Box<crate::client_vpn::ClientVpnEndpoint>,
    },
    /// Remove a Client VPN endpoint.
    DeleteClientVpnEndpoint {
        /// Its id.
        id: String,
    },
}

impl ApplianceConfig {
    /// Apply `change` in place (no validation: the manager validated it
    /// before it was journaled). Deleting what does not exist does
    /// nothing.
    pub fn apply_change(&mut self, change: &Change) {
        match change {
            Change::PutCustomerGateway { customer_gateway } => {
                match self
                    .customer_gateways
                    .iter_mut()
                    .find(|g| g.id == customer_gateway.id)
                {
                    Some(g) => g.clone_from(customer_gateway),
                    None => self.customer_gateways.push(customer_gateway.clone()),
                }
            }
            Change::DeleteCustomerGateway { id } => {
                self.customer_gateways.retain(|g| g.id != *id);
            }
            Change::PutConnection { connection } => {
                match self.connections.iter_mut().find(|c| c.id == connection.id) {
                    Some(c) => c.clone_from(connection),
                    None => self.connections.push((**connection).clone()),
                }
            }
            Change::DeleteConnection { id } => {
                if let Some(i) = self.connections.iter().position(|c| c.id == *id) {
                    self.connections.remove(i);
                }
            }
            Change::PutClientVpnEndpoint { endpoint } => {
                match self
                    .client_vpn_endpoints
                    .iter_mut()
                    .find(|e| e.id == endpoint.id)
                {
                    Some(e) => e.clone_from(endpoint),
                    None => self.client_vpn_endpoints.push((**endpoint).clone()),
                }
            }
            Change::DeleteClientVpnEndpoint { id } => {
                if let Some(i) = self.client_vpn_endpoints.iter().position(|e| e.id == *id) {
                    self.client_vpn_endpoints.remove(i);
                }
            }
        }
    }
}

/// Errors of the [`Journal`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}", path = path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The snapshot is unreadable (it is written atomically, so this is
    /// damage from outside, not a crash).
    #[error("{path}: {what}", path = path.display())]
    CorruptSnapshot {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The journal's header is unreadable or of a later generation than
    /// the snapshot (not something a crash can produce).
    #[error("{path}: {what}", path = path.display())]
    CorruptJournal {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A value could not be encoded.
    #[error("encode a journal record: {0}")]
    Encode(#[source] serde_json::Error),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// A tail of the journal that was dropped at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DroppedTail {
    /// Where the first bad frame started.
    pub offset: u64,
    /// How many bytes were dropped (the file was truncated at `offset`).
    pub bytes: u64,
    /// Why the frame at `offset` was bad.
    pub reason: TailProblem,
}

/// What was wrong with the first dropped frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TailProblem {
    /// Fewer bytes than a frame header.
    ShortHeader,
    /// The length is larger than [`MAX_FRAME_BYTES`].
    BadLength,
    /// Fewer bytes than the frame's length.
    ShortPayload,
    /// The checksum does not match.
    Checksum,
    /// The checksum matches but the payload is not a [`Change`].
    Undecodable,
}

/// What [`Journal::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenReport {
    /// The snapshot's generation.
    pub generation: u64,
    /// Changes replayed on top of the snapshot.
    pub replayed: usize,
    /// A torn or corrupt tail that was dropped.
    pub dropped_tail: Option<DroppedTail>,
    /// The journal was missing or of an older generation (a crash during
    /// a compaction) and was replaced by an empty one.
    pub journal_reset: bool,
}

/// Where the store's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePaths {
    /// `<stem>.snapshot`.
    pub snapshot: PathBuf,
    /// `<stem>.journal`.
    pub journal: PathBuf,
    dir: PathBuf,
}

impl StorePaths {
    /// The store next to the configuration file `config` (`vpnd.toml` →
    /// `vpnd.snapshot`, `vpnd.journal`).
    #[must_use]
    pub fn next_to(config: &Path) -> Self {
        let dir = match config.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let stem = config
            .file_stem()
            .map_or_else(|| "config".to_owned(), |s| s.to_string_lossy().into_owned());
        Self {
            snapshot: dir.join(format!("{stem}.snapshot")),
            journal: dir.join(format!("{stem}.journal")),
            dir,
        }
    }

    /// Whether a store exists (its snapshot does).
    #[must_use]
    pub fn exists(&self) -> bool {
        self.snapshot.exists()
    }
}

/// The open journal: appends changes, compacts into the snapshot.
#[derive(Debug)]
pub struct Journal {
    paths: StorePaths,
    file: File,
    generation: u64,
    /// Bytes in the journal file (header included).
    len: u64,
    /// Bytes of the snapshot file.
    snapshot_len: u64,
    records: usize,
    /// [`Self::wants_compaction`]'s lower bound.
    compact_min_bytes: u64,
    /// A compaction wrote the next snapshot but not its journal: the open
    /// file is of the old generation and must not take appends.
    stale: bool,
    #[cfg(test)]
    fail_appends: bool,
}

/// `len | crc | payload`, crc over the len bytes and the payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The frame at the start of `bytes`: its payload and total length.
fn read_frame(bytes: &[u8]) -> Result<(&[u8], usize), TailProblem> {
    let header: &[u8; FRAME_HEADER_LEN] = bytes
        .get(..FRAME_HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(TailProblem::ShortHeader)?;
    let len_bytes = [header[0], header[1], header[2], header[3]];
    let len = usize::try_from(u32::from_le_bytes(len_bytes)).map_err(|_| TailProblem::BadLength)?;
    if len > MAX_FRAME_BYTES {
        return Err(TailProblem::BadLength);
    }
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let payload = bytes
        .get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len)
        .ok_or(TailProblem::ShortPayload)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&len_bytes);
    h.update(payload);
    if h.finalize() != crc {
        return Err(TailProblem::Checksum);
    }
    Ok((payload, FRAME_HEADER_LEN + len))
}

fn header(magic: &[u8; 8], generation: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(magic);
    h[8..].copy_from_slice(&generation.to_le_bytes());
    h
}

fn parse_header(bytes: &[u8], magic: &[u8; 8]) -> Option<u64> {
    let h = bytes.get(..16)?;
    (&h[..8] == magic).then(|| u64::from_le_bytes(h[8..16].try_into().unwrap_or_default()))
}

/// Write `bytes` to `path` atomically: temp file, fsync, rename, fsync
/// of the directory.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(bytes).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename", path))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

impl Journal {
    /// Create a new store holding `config` (generation 1, empty journal),
    /// replacing any store at `paths`.
    ///
    /// # Errors
    /// I/O errors; [`JournalError::Encode`].
    pub fn create(paths: StorePaths, config: &ApplianceConfig) -> Result<Self, JournalError> {
        let snapshot_len = Self::write_snapshot(&paths, 1, config)?;
        Self::fresh_journal(paths, 1, snapshot_len)
    }

    fn write_snapshot(
        paths: &StorePaths,
        generation: u64,
        config: &ApplianceConfig,
    ) -> Result<u64, JournalError> {
        let payload = serde_json::to_vec(config).map_err(JournalError::Encode)?;
        let mut bytes = header(SNAPSHOT_MAGIC, generation).to_vec();
        bytes.extend_from_slice(&frame(&payload));
        write_atomically(&paths.dir, &paths.snapshot, &bytes)?;
        Ok(bytes.len() as u64)
    }

    /// Atomically put an empty journal of `generation` in place and open it.
    fn fresh_journal(
        paths: StorePaths,
        generation: u64,
        snapshot_len: u64,
    ) -> Result<Self, JournalError> {
        write_atomically(
            &paths.dir,
            &paths.journal,
            &header(JOURNAL_MAGIC, generation),
        )?;
        let file = OpenOptions::new()
            .append(true)
            .open(&paths.journal)
            .map_err(io_err("open", &paths.journal))?;
        Ok(Self {
            paths,
            file,
            generation,
            len: HEADER_LEN,
            snapshot_len,
            records: 0,
            stale: false,
            compact_min_bytes: MIN_COMPACT_BYTES,
            #[cfg(test)]
            fail_appends: false,
        })
    }

    /// Open the store at `paths`: the configuration of the snapshot with
    /// the journal's changes applied. `None` when there is no snapshot.
    ///
    /// A torn or corrupt tail is dropped (the file is truncated to the
    /// last whole frame) and reported; a journal that is missing or of an
    /// older generation is replaced by an empty one.
    ///
    /// # Errors
    /// I/O errors; [`JournalError::CorruptSnapshot`] if the snapshot is
    /// unreadable; [`JournalError::CorruptJournal`] if the journal's header
    /// is damaged or names a later generation than the snapshot.
    pub fn open(
        paths: StorePaths,
    ) -> Result<Option<(Self, ApplianceConfig, OpenReport)>, JournalError> {
        let Some((mut config, snapshot_len, generation)) = Self::load_snapshot(&paths)? else {
            return Ok(None);
        };
        Self::remove_temp_files(&paths);
        let mut report = OpenReport {
            generation,
            replayed: 0,
            dropped_tail: None,
            journal_reset: false,
        };
        let journal = match fs::read(&paths.journal) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("read", &paths.journal)(e)),
        };
        let Some(journal) = journal else {
            report.journal_reset = true;
            let j = Self::fresh_journal(paths, generation, snapshot_len)?;
            return Ok(Some((j, config, report)));
        };
        let jcorrupt = |what: String| JournalError::CorruptJournal {
            path: paths.journal.clone(),
            what,
        };
        // Journals are put in place by rename of a complete file, so a
        // short header is not a crash's doing; still, nothing in it can be
        // an acknowledged change: start it again rather than refuse to start.
        if journal.len() < 16 {
            report.journal_reset = true;
            let j = Self::fresh_journal(paths, generation, snapshot_len)?;
            return Ok(Some((j, config, report)));
        }
        let jgen = parse_header(&journal, JOURNAL_MAGIC)
            .ok_or_else(|| jcorrupt("not a configuration journal (bad header)".to_owned()))?;
        if jgen < generation {
            report.journal_reset = true;
            let j = Self::fresh_journal(paths, generation, snapshot_len)?;
            return Ok(Some((j, config, report)));
        }
        if jgen > generation {
            return Err(jcorrupt(format!(
                "generation {jgen} is later than the snapshot's {generation}"
            )));
        }

        let mut at = 16usize;
        while at < journal.len() {
            let problem = match read_frame(&journal[at..]) {
                Ok((payload, used)) => match serde_json::from_slice::<Change>(payload) {
                    Ok(change) => {
                        config.apply_change(&change);
                        report.replayed += 1;
                        at += used;
                        continue;
                    }
                    Err(_) => TailProblem::Undecodable,
                },
                Err(p) => p,
            };
            report.dropped_tail = Some(DroppedTail {
                offset: at as u64,
                bytes: (journal.len() - at) as u64,
                reason: problem,
            });
            break;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&paths.journal)
            .map_err(io_err("open", &paths.journal))?;
        if report.dropped_tail.is_some() {
            file.set_len(at as u64)
                .and_then(|()| file.sync_all())
                .map_err(io_err("truncate", &paths.journal))?;
        }
        let j = Self {
            paths,
            file,
            generation,
            len: at as u64,
            snapshot_len,
            records: report.replayed,
            stale: false,
            compact_min_bytes: MIN_COMPACT_BYTES,
            #[cfg(test)]
            fail_appends: false,
        };
        Ok(Some((j, config, report)))
    }

    /// The appliance-wide sections vpnd starts with (dataplane ports,
    /// lcores, logging): the store's snapshot when the store next to
    /// `toml` exists, else the TOML file (or its `.prev`). Reads, never
    /// writes or repairs (opening the store is the manager's job). For
    /// vpnd's early set-up and for `vpn-setup nics`.
    ///
    /// # Errors
    /// What reading the snapshot or the file reported, as text.
    pub fn startup_config(toml: &crate::config::ConfigStore) -> Result<ApplianceConfig, String> {
        let paths = StorePaths::next_to(toml.path());
        if paths.exists() {
            return Self::read_snapshot(&paths).map_err(|e| e.to_string());
        }
        toml.load_or_prev()
            .map(|(c, _)| c)
            .map_err(|e| e.to_string())
    }

    /// The snapshot's configuration alone (without the journal's changes,
    /// so only its appliance-wide sections are current: changes touch
    /// customer gateways and connections only). Reads, never writes.
    ///
    /// # Errors
    /// As [`Self::open`]; a missing snapshot is an I/O error here.
    pub fn read_snapshot(paths: &StorePaths) -> Result<ApplianceConfig, JournalError> {
        match Self::load_snapshot(paths)? {
            Some((c, _, _)) => Ok(c),
            None => Err(io_err("read", &paths.snapshot)(
                io::ErrorKind::NotFound.into(),
            )),
        }
    }

    /// The snapshot's configuration, size and generation; `None` if absent.
    fn load_snapshot(
        paths: &StorePaths,
    ) -> Result<Option<(ApplianceConfig, u64, u64)>, JournalError> {
        let snapshot = match fs::read(&paths.snapshot) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &paths.snapshot)(e)),
        };
        let corrupt = |what: String| JournalError::CorruptSnapshot {
            path: paths.snapshot.clone(),
            what,
        };
        let generation = parse_header(&snapshot, SNAPSHOT_MAGIC)
            .ok_or_else(|| corrupt("not a configuration snapshot (bad header)".to_owned()))?;
        let body = &snapshot[16..];
        let (payload, used) =
            read_frame(body).map_err(|p| corrupt(format!("damaged snapshot frame: {p:?}")))?;
        if used != body.len() {
            return Err(corrupt(format!(
                "{} bytes after the snapshot frame",
                body.len() - used
            )));
        }
        let config: ApplianceConfig = serde_json::from_slice(payload)
            .map_err(|e| corrupt(format!("snapshot is not a configuration: {e}")))?;
        Ok(Some((config, snapshot.len() as u64, generation)))
    }

    /// Remove temp files interrupted writes left (best effort).
    fn remove_temp_files(paths: &StorePaths) {
        let prefixes: Vec<String> = [&paths.snapshot, &paths.journal]
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| format!(".{}.tmp.", n.to_string_lossy()))
            .collect();
        let Ok(entries) = fs::read_dir(&paths.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// The store's files.
    #[must_use]
    pub fn paths(&self) -> &StorePaths {
        &self.paths
    }

    /// Records in the journal since the last compaction.
    #[must_use]
    pub fn records(&self) -> usize {
        self.records
    }

    /// The snapshot's generation.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Append `change` and make it durable (`fdatasync`). On error the
    /// journal is as before (a partly written frame is cut off again).
    ///
    /// # Errors
    /// I/O errors (the change must then not be acknowledged).
    pub fn append(&mut self, change: &Change) -> Result<(), JournalError> {
        let payload = serde_json::to_vec(change).map_err(JournalError::Encode)?;
        let bytes = frame(&payload);
        #[cfg(test)]
        if self.fail_appends {
            return Err(io_err("write", &self.paths.journal)(io::Error::other(
                "injected failure",
            )));
        }
        if self.stale {
            let min = self.compact_min_bytes;
            *self = Self::fresh_journal(self.paths.clone(), self.generation, self.snapshot_len)?;
            self.compact_min_bytes = min;
        }
        let path = &self.paths.journal;
        let written = self
            .file
            .write_all(&bytes)
            .map_err(io_err("write", path))
            .and_then(|()| self.file.sync_data().map_err(io_err("fdatasync", path)));
        if let Err(e) = written {
            // Do not leave a partial frame for later appends to follow.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += bytes.len() as u64;
        self.records += 1;
        Ok(())
    }

    /// Whether the journal has grown past the point where rewriting the
    /// snapshot pays (longer than the snapshot, and at least
    /// [`MIN_COMPACT_BYTES`]).
    #[must_use]
    pub fn wants_compaction(&self) -> bool {
        self.len >= self.compact_min_bytes && self.len > self.snapshot_len
    }

    /// Write `config` (the current one: snapshot plus every journaled
    /// change) as the next snapshot and start an empty journal.
    ///
    /// # Errors
    /// I/O errors. A crash or error at any step leaves a store that opens
    /// to `config` (the old snapshot and journal, or the new snapshot).
    pub fn compact(&mut self, config: &ApplianceConfig) -> Result<(), JournalError> {
        let generation = self.generation + 1;
        let snapshot_len = Self::write_snapshot(&self.paths, generation, config)?;
        // From here the old journal is stale whatever happens next: the
        // snapshot has its changes, and at open a journal of an older
        // generation is discarded.
        self.generation = generation;
        self.snapshot_len = snapshot_len;
        self.stale = true;
        let min = self.compact_min_bytes;
        *self = Self::fresh_journal(self.paths.clone(), generation, snapshot_len)?;
        self.compact_min_bytes = min;
        Ok(())
    }

    /// Set [`Self::wants_compaction`]'s lower bound (default
    /// [`MIN_COMPACT_BYTES`]).
    pub fn set_compact_min_bytes(&mut self, bytes: u64) {
        self.compact_min_bytes = bytes;
    }

    /// Test hook: make every later append fail.
    #[cfg(test)]
    pub(crate) fn fail_appends(&mut self) {
        self.fail_appends = true;
    }
}

#[cfg(test)]
mod tests;
