//! The pre-shared key store (spec §3.10 "Pre-shared key storage", §19.1;
//! issue 21 item 9): tunnels' keys kept apart from the configuration,
//! encrypted at rest, referenced from the tunnel options by name
//! (`pre_shared_key_ref`), so that the configuration, its store, its
//! export and every `show_*` reply carry a name, never the secret.
//!
//! # Files
//!
//! Next to the configuration file (`/etc/vpn/vpnd.toml`):
//!
//! * `vpnd.psk`: the store. `"vpnpsk01"`, a 12-byte random nonce, then the
//!   AES-256-GCM sealing (RFC 5116, 16-byte tag) of the store's JSON
//!   (`{"secrets":{"<name>":{"key":…,"version":n,"updated_ms":t}}}`), with
//!   the 8-byte magic as associated data. Any change to any byte (or a
//!   wrong key) fails the tag: [`SecretStoreError::Tampered`]. Written as
//!   the configuration snapshot is (mode 0600, temp file, `fsync`,
//!   `rename`, directory `fsync`), with a fresh nonce each time, so a crash
//!   leaves the old store or the new one, never a torn one.
//! * The 32-byte key (raw, or 64 hex digits and an optional newline) comes
//!   from the systemd credential `vpnd-psk-key` when
//!   `$CREDENTIALS_DIRECTORY` holds one (`LoadCredential=` /
//!   `LoadCredentialEncrypted=`), else from `vpnd.psk.key` next to the
//!   configuration. The key file must be readable by its owner alone: a
//!   file with any group or other permission bit is refused
//!   ([`SecretStoreError::KeyPermissions`]) rather than used.
//!   When neither exists the first write creates `vpnd.psk.key` (mode
//!   0600, random).
//!
//! # Guarantees
//!
//! * Keys in memory are [`Zeroizing`] (the decrypted JSON, every key, the
//!   store key), wiped when dropped; [`Debug`] shows names only.
//! * A write is durable before it returns; a failed write leaves the
//!   store as it was, in memory and on disk.
//! * Nothing here logs or formats a key.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::psk::PreSharedKey;

const MAGIC: &[u8; 8] = b"vpnpsk01";
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// The systemd credential name of the store key.
pub const CREDENTIAL_NAME: &str = "vpnd-psk-key";
/// Longest secret name.
pub const SECRET_NAME_MAX: usize = 128;

/// Why the store cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretStoreError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}", path = path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The key file may be read by others than its owner.
    #[error(
        "{path}: mode {mode:04o} lets group or others read the pre-shared key store's key; \
         it must be 0600 or 0400 (chmod 600 {path})",
        path = path.display()
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold a 32-byte key.
    #[error("{path}: not a 32-byte key (32 raw bytes or 64 hex digits)", path = path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
    },
    /// The store exists but no key does.
    #[error("{path} exists but its key does not ({key})", path = path.display(), key = key.display())]
    NoKey {
        /// The store.
        path: PathBuf,
        /// Where the key was looked for.
        key: PathBuf,
    },
    /// The store does not authenticate: it was changed, truncated, or the
    /// key is not the one it was written with.
    #[error(
        "{path}: the pre-shared key store does not authenticate (modified, truncated, or \
         another key)",
        path = path.display()
    )]
    Tampered {
        /// The store.
        path: PathBuf,
    },
    /// Encoding the store failed (should not happen).
    #[error("encoding the pre-shared key store: {0}")]
    Encode(String),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SecretStoreError + 'a {
    move |source| SecretStoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Whether `name` may name a secret: 1 to [`SECRET_NAME_MAX`] characters
/// from `[A-Za-z0-9._/-]`.
#[must_use]
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= SECRET_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
}

/// One stored key.
#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    key: PreSharedKey,
    version: u64,
    updated_ms: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Contents {
    secrets: BTreeMap<String, Entry>,
}

/// What `psk_list` shows of a secret: never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// The name tunnels reference.
    pub name: String,
    /// 1 when set, +1 per rotation.
    pub version: u64,
    /// Last set or rotated, ms since the epoch.
    pub updated_ms: u64,
    /// The tunnels that reference it (`<connection>/<i>`).
    #[serde(default)]
    pub used_by: Vec<String>,
}

/// Where the store and its key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPaths {
    /// The encrypted store (`<stem>.psk`).
    pub store: PathBuf,
    /// The key file used when no systemd credential holds the key
    /// (`<stem>.psk.key`).
    pub key_file: PathBuf,
    /// `$CREDENTIALS_DIRECTORY/vpnd-psk-key`, when that directory is set.
    pub credential: Option<PathBuf>,
    dir: PathBuf,
}

impl SecretPaths {
    /// The store next to the configuration file `config` (`vpnd.toml` →
    /// `vpnd.psk`, `vpnd.psk.key`), and the credential in
    /// `credentials_dir` (the daemon passes `$CREDENTIALS_DIRECTORY`).
    #[must_use]
    pub fn next_to(config: &Path, credentials_dir: Option<&Path>) -> Self {
        let dir = match config.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let stem = config
            .file_stem()
            .map_or_else(|| "config".to_owned(), |s| s.to_string_lossy().into_owned());
        Self {
            store: dir.join(format!("{stem}.psk")),
            key_file: dir.join(format!("{stem}.psk.key")),
            credential: credentials_dir.map(|d| d.join(CREDENTIAL_NAME)),
            dir,
        }
    }

    /// The key's file: the credential when it exists, else the key file.
    #[must_use]
    pub fn key_source(&self) -> &Path {
        match &self.credential {
            Some(c) if c.exists() => c,
            _ => &self.key_file,
        }
    }
}

/// The store key, wiped on drop.
struct StoreKey(Zeroizing<[u8; KEY_LEN]>);

impl StoreKey {
    /// Read the key at `path`, refusing a file others may read.
    fn read(path: &Path) -> Result<Self, SecretStoreError> {
        let mut f = fs::File::open(path).map_err(io_err("open", path))?;
        let meta = f.metadata().map_err(io_err("stat", path))?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretStoreError::KeyPermissions {
                path: path.to_owned(),
                mode,
            });
        }
        let mut raw = Zeroizing::new(Vec::with_capacity(80));
        f.read_to_end(&mut raw).map_err(io_err("read", path))?;
        let bad = || SecretStoreError::BadKey {
            path: path.to_owned(),
        };
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if raw.len() == KEY_LEN {
            key.copy_from_slice(&raw);
            return Ok(Self(key));
        }
        let text = raw.strip_suffix(b"\n").unwrap_or(&raw);
        if text.len() != 2 * KEY_LEN {
            return Err(bad());
        }
        for (i, pair) in text.chunks(2).enumerate() {
            let digit = |c: u8| char::from(c).to_digit(16);
            let (Some(h), Some(l)) = (digit(pair[0]), digit(pair[1])) else {
                return Err(bad());
            };
            key[i] = u8::try_from(h * 16 + l).map_err(|_| bad())?;
        }
        Ok(Self(key))
    }

    /// Create a random key file at `path` (mode 0600; fails if it exists).
    fn create(path: &Path, fill: &mut dyn FnMut(&mut [u8])) -> Result<Self, SecretStoreError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        fill(&mut key[..]);
        let mut hex = Zeroizing::new(String::with_capacity(2 * KEY_LEN + 1));
        for b in key.iter() {
            hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        hex.push('\n');
        let dir = path.parent().unwrap_or(Path::new("."));
        write_atomically(dir, path, hex.as_bytes())?;
        Ok(Self(key))
    }

    fn aead(&self) -> LessSafeKey {
        // A 32-byte key is always a valid AES-256 key.
        let unbound = UnboundKey::new(&AES_256_GCM, &self.0[..])
            .unwrap_or_else(|_| unreachable!("AES-256 takes 32-byte keys"));
        LessSafeKey::new(unbound)
    }
}

/// Write `bytes` to `path` atomically and durably, mode 0600 (the
/// configuration journal's way: temp file, `fsync`, `rename`, directory
/// `fsync`).
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), SecretStoreError> {
    use std::io::Write as _;
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
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
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

/// The pre-shared key store (see the module docs).
pub struct SecretStore {
    paths: SecretPaths,
    key: Option<StoreKey>,
    contents: Contents,
    /// [`SecretStore::empty`]: no file behind it.
    detached: bool,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStore")
            .field("store", &self.paths.store)
            .field("names", &self.contents.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SecretStore {
    /// A store with no file (a manager built without
    /// [`SecretStore::open`]): it holds nothing and refuses writes.
    #[must_use]
    pub fn empty() -> Self {
        Self {
            paths: SecretPaths::next_to(Path::new("/nonexistent/vpnd.toml"), None),
            key: None,
            contents: Contents::default(),
            detached: true,
        }
    }

    /// Open the store at `paths`: empty when its file does not exist (no
    /// key needed until the first write), else read, authenticated and
    /// decrypted with the key.
    ///
    /// # Errors
    /// The key is missing, unreadable, too widely readable or malformed;
    /// the store does not authenticate ([`SecretStoreError::Tampered`]);
    /// I/O errors.
    pub fn open(paths: SecretPaths) -> Result<Self, SecretStoreError> {
        let sealed = match fs::read(&paths.store) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The key is read now if it exists, so that a key with bad
                // permissions is refused at start, not at the first write.
                let key_path = paths.key_source().to_owned();
                let key = key_path
                    .exists()
                    .then(|| StoreKey::read(&key_path))
                    .transpose()?;
                return Ok(Self {
                    paths,
                    key,
                    contents: Contents::default(),
                    detached: false,
                });
            }
            Err(e) => return Err(io_err("read", &paths.store)(e)),
        };
        let key_path = paths.key_source().to_owned();
        if !key_path.exists() {
            return Err(SecretStoreError::NoKey {
                path: paths.store.clone(),
                key: key_path,
            });
        }
        let key = StoreKey::read(&key_path)?;
        let contents = open_sealed(&key, &sealed).ok_or_else(|| SecretStoreError::Tampered {
            path: paths.store.clone(),
        })?;
        Ok(Self {
            paths,
            key: Some(key),
            contents,
            detached: false,
        })
    }

    /// Where the store lives.
    #[must_use]
    pub fn paths(&self) -> &SecretPaths {
        &self.paths
    }

    /// The key named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&PreSharedKey> {
        self.contents.secrets.get(name).map(|e| &e.key)
    }

    /// Whether `name` is stored.
    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.contents.secrets.contains_key(name)
    }

    /// Every secret's name, version and time (no key); `used_by` empty.
    #[must_use]
    pub fn list(&self) -> Vec<SecretInfo> {
        self.contents
            .secrets
            .iter()
            .map(|(name, e)| SecretInfo {
                name: name.clone(),
                version: e.version,
                updated_ms: e.updated_ms,
                used_by: Vec::new(),
            })
            .collect()
    }

    /// Store `key` under `name` (a new secret is version 1, a replaced
    /// one's version goes up) and write the store durably. `fill`
    /// supplies the nonce (and the key file's key when none exists yet).
    ///
    /// # Errors
    /// I/O errors; nothing changed, in memory or on disk.
    pub fn put(
        &mut self,
        name: &str,
        key: PreSharedKey,
        now_ms: u64,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<SecretInfo, SecretStoreError> {
        let version = self.contents.secrets.get(name).map_or(1, |e| e.version + 1);
        let previous = self.contents.secrets.insert(
            name.to_owned(),
            Entry {
                key,
                version,
                updated_ms: now_ms,
            },
        );
        if let Err(e) = self.save(fill) {
            match previous {
                Some(p) => self.contents.secrets.insert(name.to_owned(), p),
                None => self.contents.secrets.remove(name),
            };
            return Err(e);
        }
        Ok(SecretInfo {
            name: name.to_owned(),
            version,
            updated_ms: now_ms,
            used_by: Vec::new(),
        })
    }

    /// Remove `name` and write the store; `false` when it was not stored.
    ///
    /// # Errors
    /// I/O errors; nothing changed.
    pub fn remove(
        &mut self,
        name: &str,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<bool, SecretStoreError> {
        let Some(previous) = self.contents.secrets.remove(name) else {
            return Ok(false);
        };
        if let Err(e) = self.save(fill) {
            self.contents.secrets.insert(name.to_owned(), previous);
            return Err(e);
        }
        Ok(true)
    }

    fn save(&mut self, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), SecretStoreError> {
        if self.detached {
            return Err(SecretStoreError::Io {
                op: "write",
                path: self.paths.store.clone(),
                source: io::Error::other("no key store was opened"),
            });
        }
        if self.key.is_none() {
            let source = self.paths.key_source().to_owned();
            self.key = Some(if source.exists() {
                StoreKey::read(&source)?
            } else {
                StoreKey::create(&self.paths.key_file, fill)?
            });
        }
        let Some(key) = &self.key else {
            unreachable!("set above");
        };
        let json = Zeroizing::new(
            serde_json::to_vec(&self.contents)
                .map_err(|e| SecretStoreError::Encode(e.to_string()))?,
        );
        let mut nonce = [0u8; NONCE_LEN];
        fill(&mut nonce);
        let mut out = Zeroizing::new(Vec::with_capacity(
            MAGIC.len() + NONCE_LEN + json.len() + TAG_LEN,
        ));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&json);
        let tag = key
            .aead()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(MAGIC),
                &mut out[MAGIC.len() + NONCE_LEN..],
            )
            .map_err(|_| SecretStoreError::Encode("AES-GCM sealing failed".to_owned()))?;
        out.extend_from_slice(tag.as_ref());
        write_atomically(&self.paths.dir, &self.paths.store, &out)
    }
}

/// Authenticate and decrypt a store file; `None` when it does not
/// authenticate or does not decode.
fn open_sealed(key: &StoreKey, sealed: &[u8]) -> Option<Contents> {
    let rest = sealed.strip_prefix(MAGIC.as_slice())?;
    if rest.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = Zeroizing::new(body.to_vec());
    let plain = key
        .aead()
        .open_in_place(nonce, Aad::from(MAGIC), &mut buf[..])
        .ok()?;
    serde_json::from_slice(plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter_fill() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |b: &mut [u8]| {
            for x in b {
                n = n.wrapping_add(37);
                *x = n;
            }
        }
    }

    fn key(s: &str) -> PreSharedKey {
        PreSharedKey::new(s).unwrap()
    }

    fn paths(dir: &Path) -> SecretPaths {
        SecretPaths::next_to(&dir.join("vpnd.toml"), None)
    }

    #[test]
    fn round_trip_versions_and_no_plaintext_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut fill = counter_fill();
        let mut s = SecretStore::open(paths(dir.path())).unwrap();
        assert!(s.list().is_empty());
        let a = s
            .put("vpn-1/0", key("firstKey.123"), 10, &mut fill)
            .unwrap();
        assert_eq!((a.version, a.updated_ms), (1, 10));
        let b = s
            .put("vpn-1/0", key("secondKey.456"), 20, &mut fill)
            .unwrap();
        assert_eq!(b.version, 2);
        s.put("vpn-1/1", key("otherKey_789"), 30, &mut fill)
            .unwrap();
        // The key file was created 0600.
        let p = paths(dir.path());
        let mode = fs::metadata(&p.key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::metadata(&p.store).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let raw = fs::read(&p.store).unwrap();
        for secret in ["firstKey", "secondKey", "otherKey", "vpn-1"] {
            assert!(
                !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} in clear"
            );
        }
        let again = SecretStore::open(p).unwrap();
        assert_eq!(
            again.get("vpn-1/0").unwrap().dangerous_as_str(),
            "secondKey.456"
        );
        assert_eq!(
            again.get("vpn-1/1").unwrap().dangerous_as_str(),
            "otherKey_789"
        );
        let names: Vec<_> = again
            .list()
            .into_iter()
            .map(|i| (i.name, i.version))
            .collect();
        assert_eq!(
            names,
            [("vpn-1/0".to_owned(), 2), ("vpn-1/1".to_owned(), 1)]
        );
        assert!(!format!("{again:?}").contains("Key"));
    }

    #[test]
    fn any_changed_byte_or_another_key_is_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let mut fill = counter_fill();
        let mut s = SecretStore::open(p.clone()).unwrap();
        s.put("t", key("abcdefgh12"), 1, &mut fill).unwrap();
        let good = fs::read(&p.store).unwrap();
        for i in [0, 8, 12, 20, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            fs::write(&p.store, &bad).unwrap();
            let e = SecretStore::open(p.clone()).unwrap_err();
            assert!(
                matches!(e, SecretStoreError::Tampered { .. }),
                "byte {i}: {e}"
            );
        }
        fs::write(&p.store, &good[..good.len() - 1]).unwrap();
        assert!(matches!(
            SecretStore::open(p.clone()).unwrap_err(),
            SecretStoreError::Tampered { .. }
        ));
        fs::write(&p.store, &good).unwrap();
        SecretStore::open(p.clone()).unwrap();
        // Another key: the store does not authenticate.
        fs::write(&p.key_file, [7u8; 32]).unwrap();
        assert!(matches!(
            SecretStore::open(p.clone()).unwrap_err(),
            SecretStoreError::Tampered { .. }
        ));
        // No key at all.
        fs::remove_file(&p.key_file).unwrap();
        assert!(matches!(
            SecretStore::open(p).unwrap_err(),
            SecretStoreError::NoKey { .. }
        ));
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let mut fill = counter_fill();
        SecretStore::open(p.clone())
            .unwrap()
            .put("t", key("abcdefgh12"), 1, &mut fill)
            .unwrap();
        for mode in [0o640, 0o604, 0o644, 0o660] {
            fs::set_permissions(&p.key_file, fs::Permissions::from_mode(mode)).unwrap();
            let e = SecretStore::open(p.clone()).unwrap_err();
            assert!(
                matches!(e, SecretStoreError::KeyPermissions { mode: m, .. } if m == mode),
                "{mode:o}: {e}"
            );
            assert!(e.to_string().contains("chmod 600"));
        }
        fs::set_permissions(&p.key_file, fs::Permissions::from_mode(0o400)).unwrap();
        SecretStore::open(p.clone()).unwrap();
        // Also before any store exists.
        fs::remove_file(&p.store).unwrap();
        fs::set_permissions(&p.key_file, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SecretStore::open(p).unwrap_err(),
            SecretStoreError::KeyPermissions { .. }
        ));
    }

    #[test]
    fn the_systemd_credential_wins_and_hex_or_raw_keys_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        fs::create_dir(&creds).unwrap();
        let cred = creds.join(CREDENTIAL_NAME);
        fs::write(&cred, format!("{}\n", "ab".repeat(32))).unwrap();
        fs::set_permissions(&cred, fs::Permissions::from_mode(0o400)).unwrap();
        let p = SecretPaths::next_to(&dir.path().join("vpnd.toml"), Some(&creds));
        assert_eq!(p.key_source(), cred.as_path());
        let mut fill = counter_fill();
        let mut s = SecretStore::open(p.clone()).unwrap();
        s.put("t", key("abcdefgh12"), 1, &mut fill).unwrap();
        assert!(!p.key_file.exists(), "no key file made beside a credential");
        // The same key, raw, in the key file opens it too.
        fs::write(&p.key_file, [0xab; 32]).unwrap();
        fs::set_permissions(&p.key_file, fs::Permissions::from_mode(0o600)).unwrap();
        let raw = SecretPaths::next_to(&dir.path().join("vpnd.toml"), None);
        assert_eq!(
            SecretStore::open(raw)
                .unwrap()
                .get("t")
                .unwrap()
                .dangerous_as_str(),
            "abcdefgh12"
        );
        // A malformed key.
        fs::write(&cred, "not a key").unwrap();
        assert!(matches!(
            SecretStore::open(p).unwrap_err(),
            SecretStoreError::BadKey { .. }
        ));
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let mut fill = counter_fill();
        let mut s = SecretStore::open(p.clone()).unwrap();
        s.put("t", key("abcdefgh12"), 1, &mut fill).unwrap();
        // A directory where the temp file would go makes the write fail.
        let tmp = dir
            .path()
            .join(format!(".vpnd.psk.tmp.{}", std::process::id()));
        fs::create_dir(&tmp).unwrap();
        fs::write(tmp.join("x"), b"x").unwrap();
        assert!(s.put("t", key("zzzzzzzz99"), 2, &mut fill).is_err());
        assert!(s.put("u", key("zzzzzzzz99"), 2, &mut fill).is_err());
        assert_eq!(s.get("t").unwrap().dangerous_as_str(), "abcdefgh12");
        assert!(!s.contains("u"));
        fs::remove_dir_all(&tmp).unwrap();
        assert_eq!(
            SecretStore::open(p)
                .unwrap()
                .get("t")
                .unwrap()
                .dangerous_as_str(),
            "abcdefgh12"
        );
    }

    #[test]
    fn names() {
        assert!(valid_secret_name("vpn-1/0"));
        assert!(valid_secret_name("branch_1.tunnel-2"));
        assert!(!valid_secret_name(""));
        assert!(!valid_secret_name("a b"));
        assert!(!valid_secret_name(&"a".repeat(129)));
    }
}
