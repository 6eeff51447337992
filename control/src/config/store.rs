//! Crash-safe persistence of the configuration file.
//!
//! Save protocol (one writer per file — the control core):
//!
//! ```text
//!   1. serialize, and refuse to save a configuration that fails validate()
//!   2. write  .<name>.tmp.<pid>.<n>      (same directory, O_EXCL, mode 0600)
//!   3. fsync  the temp file
//!   4. link   <name> -> .<name>.prev.tmp  (hard link; copy+fsync if the
//!      rename .<name>.prev.tmp -> <name>.prev   filesystem has no links)
//!   5. rename temp -> <name>               (atomic replace)
//!   6. fsync  the directory                (makes 4 and 5 durable)
//! ```
//!
//! A crash at any point leaves `<name>` either the old complete file or the
//! new complete file: `<name>` is only ever replaced by `rename(2)` of a
//! file that was fully written and fsynced. A crash may leave stray
//! `.<name>.tmp.*` files; they are never read, and
//! [`ConfigStore::remove_stale_temp_files`] deletes them.
//!
//! Loading never falls back silently: [`ConfigStore::load`] reads `<name>`
//! only; [`ConfigStore::load_or_prev`] is the explicit "use the previous
//! version if the current one is unreadable" path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::appliance::ApplianceConfig;
use super::error::ConfigError;

/// A TOML syntax or type error, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
#[non_exhaustive]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl ParseError {
    pub(crate) fn from_toml(text: &str, e: &toml::de::Error) -> Self {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        Self {
            line,
            column,
            // What toml quotes of the input, bounded (issue 17 item 7).
            message: super::error::bounded_quoted(e.message().trim(), 1024),
        }
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Errors of [`ConfigStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}", path = path.display())]
    Io {
        /// What was being done ("read", "write", "rename", …).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is not valid TOML for the configuration model (truncated,
    /// corrupt, unknown field, wrong type, …).
    #[error("{path}:{line}:{column}: {message}", path = path.display(), line = error.line, column = error.column, message = error.message)]
    Parse {
        /// The file.
        path: PathBuf,
        /// Position and message.
        error: ParseError,
    },
    /// The file parses but breaks configuration rules (on load), or the
    /// configuration to save does.
    #[error("{path}: {} configuration error(s); first: {}", errors.len(), errors.first().map(ToString::to_string).unwrap_or_default(), path = path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every broken rule.
        errors: Vec<ConfigError>,
    },
    /// The configuration could not be rendered as TOML.
    #[error("render {path} as TOML: {source}", path = path.display())]
    Serialize {
        /// The file.
        path: PathBuf,
        /// The serializer's error.
        #[source]
        source: toml::ser::Error,
    },
    /// [`ConfigStore::load_or_prev`]: both versions are unusable.
    #[error("{current}; previous version: {previous}")]
    BothUnusable {
        /// Why the current file failed.
        current: Box<Self>,
        /// Why `<name>.prev` failed.
        previous: Box<Self>,
    },
}

/// Which file [`ConfigStore::load_or_prev`] used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadedFrom {
    /// The configuration file itself.
    Current,
    /// `<name>.prev`, because the current file was unusable.
    Previous,
}

/// Steps of [`ConfigStore::save`], for crash simulation in tests: the
/// save "crashes" right after the named step.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SaveStep {
    /// Temp file created, half the bytes written, not synced.
    PartialWrite,
    /// Temp file complete and fsynced.
    TempSynced,
    /// `<name>.prev` updated.
    PrevKept,
    /// Target replaced.
    Renamed,
}

/// The configuration file and its `.prev` sibling.
#[derive(Debug)]
pub struct ConfigStore {
    path: PathBuf,
}

/// Mode of the written file: owner read/write only, because it holds the
/// tunnels' pre-shared keys.
pub const FILE_MODE: u32 = 0o600;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

impl ConfigStore {
    /// A store for the file at `path` (which need not exist yet).
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The configuration file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<name>.prev`.
    #[must_use]
    pub fn prev_path(&self) -> PathBuf {
        self.sibling(&format!("{}.prev", self.file_name()))
    }

    fn file_name(&self) -> String {
        self.path
            .file_name()
            .map_or_else(|| "config".to_owned(), |n| n.to_string_lossy().into_owned())
    }

    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        }
    }

    fn sibling(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    fn temp_prefix(&self) -> String {
        format!(".{}.tmp.", self.file_name())
    }

    /// Load and validate the configuration file.
    ///
    /// # Errors
    /// [`StoreError::Io`] if it cannot be read, [`StoreError::Parse`] with
    /// file, line and column if it is not valid TOML for the model (for
    /// example truncated), [`StoreError::Invalid`] if it breaks rules.
    pub fn load(&self) -> Result<ApplianceConfig, StoreError> {
        Self::load_file(&self.path)
    }

    /// Load the configuration file, or — only if that fails — `<name>.prev`.
    ///
    /// # Errors
    /// [`StoreError::BothUnusable`] with both reasons.
    pub fn load_or_prev(&self) -> Result<(ApplianceConfig, LoadedFrom), StoreError> {
        match self.load() {
            Ok(c) => Ok((c, LoadedFrom::Current)),
            Err(current) => match Self::load_file(&self.prev_path()) {
                Ok(c) => Ok((c, LoadedFrom::Previous)),
                Err(previous) => Err(StoreError::BothUnusable {
                    current: Box::new(current),
                    previous: Box::new(previous),
                }),
            },
        }
    }

    fn load_file(path: &Path) -> Result<ApplianceConfig, StoreError> {
        let text = fs::read_to_string(path).map_err(io_err("read", path))?;
        let config = ApplianceConfig::from_toml_str(&text).map_err(|error| StoreError::Parse {
            path: path.to_owned(),
            error,
        })?;
        config.validate().map_err(|errors| StoreError::Invalid {
            path: path.to_owned(),
            errors,
        })?;
        Ok(config)
    }

    /// Validate and save `config` crash-safely (see the module docs),
    /// keeping the replaced file as `<name>.prev`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] (nothing is written), or the I/O error of the
    /// step that failed. The target file is then unchanged, except when the
    /// last step (directory fsync) fails: the new file is in place but its
    /// rename may not survive a power loss.
    pub fn save(&self, config: &ApplianceConfig) -> Result<(), StoreError> {
        self.save_steps(config, None)
    }

    /// The save protocol; with `stop_after`, "crash" after that step.
    pub(crate) fn save_steps(
        &self,
        config: &ApplianceConfig,
        stop_after: Option<SaveStep>,
    ) -> Result<(), StoreError> {
        config.validate().map_err(|errors| StoreError::Invalid {
            path: self.path.clone(),
            errors,
        })?;
        let text = config
            .to_toml_string()
            .map_err(|source| StoreError::Serialize {
                path: self.path.clone(),
                source,
            })?;
        let text = format!(
            "# Appliance configuration. Written by vpnd; edits are validated on load.\n{text}"
        );

        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self.sibling(&format!("{}{}.{n}", self.temp_prefix(), std::process::id()));

        if stop_after == Some(SaveStep::PartialWrite) {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            f.write_all(&text.as_bytes()[..text.len() / 2])
                .map_err(io_err("write", &tmp))?;
            return Ok(());
        }

        let result = self.write_and_replace(&tmp, text.as_bytes(), stop_after);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn write_and_replace(
        &self,
        tmp: &Path,
        bytes: &[u8],
        stop_after: Option<SaveStep>,
    ) -> Result<(), StoreError> {
        // 2–3: write and fsync the temp file.
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(tmp)
                .map_err(io_err("create", tmp))?;
            f.write_all(bytes).map_err(io_err("write", tmp))?;
            f.sync_all().map_err(io_err("fsync", tmp))?;
        }
        if stop_after == Some(SaveStep::TempSynced) {
            return Ok(());
        }

        // 4: keep the current version as <name>.prev (atomically replaced).
        if self.path.exists() {
            let prev = self.prev_path();
            let prev_tmp = self.sibling(&format!(".{}.prev.tmp", self.file_name()));
            let _ = fs::remove_file(&prev_tmp);
            if fs::hard_link(&self.path, &prev_tmp).is_err() {
                fs::copy(&self.path, &prev_tmp).map_err(io_err("copy", &prev_tmp))?;
                File::open(&prev_tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("fsync", &prev_tmp))?;
            }
            fs::rename(&prev_tmp, &prev).map_err(io_err("rename", &prev))?;
            // rename(2) is a no-op when both names are links to one file
            // (an interrupted save already linked <name> as .prev).
            let _ = fs::remove_file(&prev_tmp);
        }
        if stop_after == Some(SaveStep::PrevKept) {
            return Ok(());
        }

        // 5: atomically replace the target.
        fs::rename(tmp, &self.path).map_err(io_err("rename", &self.path))?;
        if stop_after == Some(SaveStep::Renamed) {
            return Ok(());
        }

        // 6: make the renames durable.
        let dir = self.dir();
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", &dir))?;
        Ok(())
    }

    /// Delete temp files left by interrupted saves. Returns how many were
    /// removed. Call at start-up, before the first save.
    ///
    /// # Errors
    /// If the directory cannot be listed or a file cannot be removed.
    pub fn remove_stale_temp_files(&self) -> Result<usize, StoreError> {
        let dir = self.dir();
        let prefix = self.temp_prefix();
        let prev_tmp = format!(".{}.prev.tmp", self.file_name());
        let mut removed = 0;
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) || name == prev_tmp {
                let p = entry.path();
                fs::remove_file(&p).map_err(io_err("remove", &p))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
