//! Hugepage reservation from `hugepages.conf`.
//!
//! Applying the file is idempotent: it raises the kernel's
//! `nr_hugepages` for the configured size to at least `count` (it never
//! lowers it: other processes may use pages) and mounts hugetlbfs at
//! `mount` unless something is already mounted there. Where either step
//! is impossible (no permission, no such page size, a container) the
//! caller falls back to `--no-huge` and says so in the log.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

/// The contents of `hugepages.conf`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HugepageConfig {
    /// Page size: `"2M"` or `"1G"`.
    pub size: PageSize,
    /// Pages to reserve.
    pub count: u32,
    /// Where hugetlbfs is mounted for the EAL.
    #[serde(default = "default_mount")]
    pub mount: PathBuf,
}

fn default_mount() -> PathBuf {
    PathBuf::from("/dev/hugepages")
}

/// A hugepage size the kernel offers on x86-64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PageSize {
    /// 2 MiB pages.
    #[serde(rename = "2M")]
    Size2M,
    /// 1 GiB pages.
    #[serde(rename = "1G")]
    Size1G,
}

impl PageSize {
    /// Size in KiB, as sysfs names it.
    #[must_use]
    pub fn kib(self) -> u64 {
        match self {
            Self::Size2M => 2048,
            Self::Size1G => 1024 * 1024,
        }
    }

    /// The `pagesize=` mount option.
    #[must_use]
    pub fn mount_option(self) -> &'static str {
        match self {
            Self::Size2M => "pagesize=2M",
            Self::Size1G => "pagesize=1G",
        }
    }
}

/// Why hugepages could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HugepageError {
    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration file is not valid.
    #[error("invalid {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        source: toml::de::Error,
    },
    /// The kernel has no pool for this page size.
    #[error("the kernel offers no {0} KiB hugepages ({1} missing)")]
    NoSuchSize(u64, PathBuf),
    /// Writing `nr_hugepages` failed.
    #[error("cannot reserve hugepages through {path}: {source}")]
    Reserve {
        /// The sysfs file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Mounting hugetlbfs failed.
    #[error("cannot mount hugetlbfs on {mount}: {detail}")]
    Mount {
        /// The mount point.
        mount: PathBuf,
        /// What mount(8) said.
        detail: String,
    },
}

/// What the system has after [`apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HugepageStatus {
    /// Pages reserved in the pool (`nr_hugepages`).
    pub total: u64,
    /// Pages still free (`free_hugepages`).
    pub free: u64,
    /// Page size in KiB.
    pub page_kib: u64,
    /// Whether hugetlbfs is mounted at the configured mount point.
    pub mounted: bool,
}

impl HugepageStatus {
    /// Free hugepage memory in MiB.
    #[must_use]
    pub fn free_mib(&self) -> u64 {
        self.free * self.page_kib / 1024
    }
}

impl HugepageConfig {
    /// Reads and parses `hugepages.conf`.
    ///
    /// # Errors
    /// [`HugepageError::Read`] or [`HugepageError::Parse`], naming the file.
    pub fn load(path: &Path) -> Result<Self, HugepageError> {
        let text = fs::read_to_string(path).map_err(|source| HugepageError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| HugepageError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    fn sysfs_dir(&self) -> PathBuf {
        PathBuf::from(format!(
            "/sys/kernel/mm/hugepages/hugepages-{}kB",
            self.size.kib()
        ))
    }
}

/// Reserves the pages and mounts hugetlbfs (idempotent).
///
/// # Errors
/// What prevented either step; nothing is undone (a partial reservation
/// is still usable by the EAL).
pub fn apply(config: &HugepageConfig) -> Result<HugepageStatus, HugepageError> {
    let dir = config.sysfs_dir();
    let nr = dir.join("nr_hugepages");
    if !nr.exists() {
        return Err(HugepageError::NoSuchSize(config.size.kib(), nr));
    }
    let current = read_u64(&nr).unwrap_or(0);
    if current < u64::from(config.count) {
        fs::write(&nr, config.count.to_string()).map_err(|source| HugepageError::Reserve {
            path: nr.clone(),
            source,
        })?;
    }
    if !is_hugetlbfs_mounted(&config.mount) {
        fs::create_dir_all(&config.mount).map_err(|e| HugepageError::Mount {
            mount: config.mount.clone(),
            detail: e.to_string(),
        })?;
        let out = Command::new("mount")
            .args(["-t", "hugetlbfs", "-o", config.size.mount_option(), "nodev"])
            .arg(&config.mount)
            .output()
            .map_err(|e| HugepageError::Mount {
                mount: config.mount.clone(),
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(HugepageError::Mount {
                mount: config.mount.clone(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
    }
    Ok(status(config))
}

/// The current state, without changing anything.
#[must_use]
pub fn status(config: &HugepageConfig) -> HugepageStatus {
    let dir = config.sysfs_dir();
    HugepageStatus {
        total: read_u64(&dir.join("nr_hugepages")).unwrap_or(0),
        free: read_u64(&dir.join("free_hugepages")).unwrap_or(0),
        page_kib: config.size.kib(),
        mounted: is_hugetlbfs_mounted(&config.mount),
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether a hugetlbfs is mounted exactly at `mount` (per /proc/mounts).
#[must_use]
pub fn is_hugetlbfs_mounted(mount: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/mounts") else {
        return false;
    };
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_dev, dir, fstype) = (fields.next(), fields.next(), fields.next());
        fstype == Some("hugetlbfs") && dir.map(Path::new) == Some(mount)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hugepages.conf");
        let conf = HugepageConfig::load(&path).unwrap();
        assert_eq!(conf.size, PageSize::Size2M);
        assert!(conf.count >= 256);
        assert_eq!(conf.mount, PathBuf::from("/dev/hugepages"));
    }

    #[test]
    fn bad_files_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hugepages.conf");
        fs::write(&path, "size = \"3M\"\ncount = 4\n").unwrap();
        let err = HugepageConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("hugepages.conf") && err.contains("3M"),
            "{err}"
        );
        fs::write(&path, "size = \"2M\"\ncount = -1\n").unwrap();
        assert!(HugepageConfig::load(&path).is_err());
        fs::write(&path, "size = \"2M\"\ncount = 4\nextra = 1\n").unwrap();
        let err = HugepageConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("extra"), "{err}");
        let err = HugepageConfig::load(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, HugepageError::Read { .. }));
    }
}
