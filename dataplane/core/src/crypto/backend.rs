//! Which library does the ESP crypto: `ring` (+ `aws-lc-rs` for CBC) or
//! intel-ipsec-mb, chosen once per process at start from the CPU.
//!
//! intel-ipsec-mb picks its own code path per CPU (`init_mb_mgr_auto`:
//! SSE, AVX, AVX2, AVX-512 with VAES). On the Xeon (AVX-512/VAES) it
//! seals AES-GCM far faster than `ring` at small sizes; below AVX2 its
//! advantage is gone, so [`BackendPreference::Auto`] takes it only when
//! its path is AVX2 or better and falls back to `ring` otherwise (or when
//! the library cannot be initialised), saying why in [`BackendChoice`].
//!
//! Both backends produce identical bytes on the wire (cross-checked by
//! this crate's tests, and each against scapy).

use ipsec_mb::{Arch, Direct, Manager};

/// The library a [`super::Transform`] uses.
#[derive(Debug, Clone, Copy)]
pub enum CryptoBackend {
    /// `ring` for AES-GCM and HMAC, `aws-lc-rs` for AES-CBC.
    Ring,
    /// intel-ipsec-mb: AES-GCM through its direct API, per packet;
    /// AES-CBC with HMAC through its job API, per burst (single packets on
    /// `aws-lc-rs` and `ring`).
    IpsecMb(Direct),
}

impl CryptoBackend {
    /// Short name, as logged and shown by `show stats`: `ring` or
    /// `ipsec-mb`.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Ring => "ring",
            Self::IpsecMb(_) => "ipsec-mb",
        }
    }

    /// intel-ipsec-mb's code path, if that is the backend.
    #[must_use]
    pub const fn arch(&self) -> Option<Arch> {
        match self {
            Self::Ring => None,
            Self::IpsecMb(d) => Some(d.arch()),
        }
    }

    /// intel-ipsec-mb, whatever its code path (tests, benches, a forced
    /// configuration).
    ///
    /// # Errors
    /// The library's error if it cannot build a manager on this CPU.
    pub fn ipsec_mb() -> Result<Self, ipsec_mb::Error> {
        Manager::new().map(|m| Self::IpsecMb(m.direct()))
    }
}

impl core::fmt::Display for CryptoBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Ring => f.write_str("ring"),
            Self::IpsecMb(d) => write!(f, "ipsec-mb/{}", d.arch()),
        }
    }
}

/// What the configuration asks for (`dataplane.crypto_backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendPreference {
    /// intel-ipsec-mb if its code path on this CPU is AVX2 or better,
    /// else `ring`.
    #[default]
    Auto,
    /// intel-ipsec-mb; an error if it cannot run here.
    IpsecMb,
    /// `ring`.
    Ring,
}

impl BackendPreference {
    /// Parses the configuration value: `auto`, `ipsec-mb` or `ring`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "ipsec-mb" => Some(Self::IpsecMb),
            "ring" => Some(Self::Ring),
            _ => None,
        }
    }
}

/// The backend chosen at start and why.
#[derive(Debug, Clone)]
pub struct BackendChoice {
    /// The backend.
    pub backend: CryptoBackend,
    /// One line for the log: what decided.
    pub reason: String,
}

/// The weakest intel-ipsec-mb code path `Auto` takes.
const MIN_AUTO_ARCH: Arch = Arch::Avx2;

/// Chooses the backend for `pref` on this CPU (cold path, once at start).
///
/// # Errors
/// With [`BackendPreference::IpsecMb`], the library's error if it cannot
/// run here. `Auto` never fails: it falls back to `ring`.
pub fn select_backend(pref: BackendPreference) -> Result<BackendChoice, ipsec_mb::Error> {
    match pref {
        BackendPreference::Ring => Ok(BackendChoice {
            backend: CryptoBackend::Ring,
            reason: "configured (dataplane.crypto_backend = \"ring\")".into(),
        }),
        BackendPreference::IpsecMb => {
            let b = CryptoBackend::ipsec_mb()?;
            Ok(BackendChoice {
                backend: b,
                reason: format!(
                    "configured (dataplane.crypto_backend = \"ipsec-mb\"); intel-ipsec-mb {} path {}",
                    Manager::version(),
                    b.arch().map_or("?", Arch::as_str)
                ),
            })
        }
        BackendPreference::Auto => Ok(match Manager::new() {
            Ok(m) if m.arch() >= MIN_AUTO_ARCH => BackendChoice {
                backend: CryptoBackend::IpsecMb(m.direct()),
                reason: format!(
                    "auto: intel-ipsec-mb {} chose its {} path for this CPU (>= {MIN_AUTO_ARCH})",
                    Manager::version(),
                    m.arch()
                ),
            },
            Ok(m) => BackendChoice {
                backend: CryptoBackend::Ring,
                reason: format!(
                    "auto: intel-ipsec-mb's path for this CPU is {}, below {MIN_AUTO_ARCH}",
                    m.arch()
                ),
            },
            Err(e) => BackendChoice {
                backend: CryptoBackend::Ring,
                reason: format!("auto: intel-ipsec-mb unavailable ({e})"),
            },
        }),
    }
}
