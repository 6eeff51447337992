//! ESP transforms: the per-SA-direction cipher and integrity contexts.
//!
//! Layer: below [`crate::esp`], above the crypto libraries. A transform
//! seals and opens one ESP packet *in place*; it knows the ESP layout
//! ([RFC 4303 § 2]: SPI, sequence number, IV, ciphertext, ICV) but nothing
//! about IP headers, SAs or buffers.
//!
//! | suite | RFC | engine |
//! | --- | --- | --- |
//! | AES-128/256-GCM-16 | [RFC 4106] | `ring` `LessSafeKey` (~38 Gbps/core on Zen 3), or intel-ipsec-mb's direct API ([`MbGcm`]) |
//! | AES-128/256-CBC | [RFC 3602] | `aws-lc-rs` unpadded CBC with an explicit IV, or intel-ipsec-mb's job API over a burst ([`MbCbcHmac`], [`run_cbc_batch`]) |
//! | HMAC-SHA1-96 | [RFC 2404] | `ring::hmac`, or intel-ipsec-mb with the CBC |
//! | HMAC-SHA2-256-128/-384-192/-512-256 | [RFC 4868] | `ring::hmac`, or intel-ipsec-mb with the CBC |
//!
//! The engine is chosen once per process by [`select_backend`]
//! ([`CryptoBackend`]: intel-ipsec-mb where its code path is AVX2 or
//! better, else `ring`); both give identical bytes. On intel-ipsec-mb,
//! AES-CBC + HMAC runs through the job API for whole bursts (the caller
//! holds a per-worker [`ipsec_mb::Manager`]); single packets outside a
//! burst use the `aws-lc-rs` + `ring` engine the transform also carries.
//!
//! Guarantees: no allocation, no syscall, no lock and no panic per packet;
//! ICVs are compared in constant time (`ring` verifies the GCM tag itself,
//! intel-ipsec-mb's GCM tags and HMAC tags go through
//! [`subtle::ConstantTimeEq`]).
//!
//! Key material: the cold SA record keeps raw keys in
//! [`zeroize::Zeroizing`]. The expanded key objects of `ring` and
//! `aws-lc-rs` are opaque and cannot be zeroised by us; `aws-lc-rs` clears
//! its own key schedules on drop, `ring` does not. Accepted (same position
//! as rustls). intel-ipsec-mb's key schedules are ours
//! ([`ipsec_mb::GcmKey`]) and are zeroised on drop.
//!
//! [RFC 4303 § 2]: https://www.rfc-editor.org/rfc/rfc4303#section-2
//! [RFC 4106]: https://www.rfc-editor.org/rfc/rfc4106
//! [RFC 3602]: https://www.rfc-editor.org/rfc/rfc3602
//! [RFC 2404]: https://www.rfc-editor.org/rfc/rfc2404
//! [RFC 4868]: https://www.rfc-editor.org/rfc/rfc4868

mod backend;
mod cbc;
mod gcm;
mod mb_cbc;
mod mb_gcm;

pub use backend::{BackendChoice, BackendPreference, CryptoBackend, select_backend};
pub use cbc::{AesCbcHmac, CbcIvGenerator};
pub use gcm::AesGcm;
pub use mb_cbc::{CBC_BATCH, CbcOp, MbCbcHmac, run_cbc_batch};
pub use mb_gcm::MbGcm;

/// Length of the ESP header in front of the IV: SPI (4) + sequence number (4).
pub const ESP_HEADER_LEN: usize = 8;

/// A transform failed; the ESP layer maps this to a drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The key has the wrong length for the algorithm (cold path only).
    #[error("key has the wrong length for the algorithm")]
    BadKeyLength,
    /// The crypto library refused to build a key (cold path only).
    #[error("the crypto library rejected the key")]
    KeySetup,
    /// The ESP region is too short or not aligned to the cipher block.
    #[error("ESP region has an invalid length for this transform")]
    BadLength,
    /// The ICV (GCM tag or truncated HMAC) did not verify.
    #[error("integrity check value did not verify")]
    AuthFailed,
    /// The crypto library failed the operation for another reason (a
    /// job-API status other than completed).
    #[error("the crypto library failed the operation")]
    Engine,
}

/// Encryption algorithms of the ESP phase 2 proposal (spec § 3.6:
/// AES128, AES256, AES128-GCM-16, AES256-GCM-16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encryption {
    /// AES-128-CBC, [RFC 3602](https://www.rfc-editor.org/rfc/rfc3602).
    Aes128Cbc,
    /// AES-256-CBC, [RFC 3602](https://www.rfc-editor.org/rfc/rfc3602).
    Aes256Cbc,
    /// AES-128-GCM with a 16-byte ICV, [RFC 4106](https://www.rfc-editor.org/rfc/rfc4106).
    Aes128Gcm16,
    /// AES-256-GCM with a 16-byte ICV, [RFC 4106](https://www.rfc-editor.org/rfc/rfc4106).
    Aes256Gcm16,
}

/// Integrity algorithms of the ESP phase 2 proposal (spec § 3.6: SHA1,
/// SHA2-256, SHA2-384, SHA2-512). Only used with the CBC ciphers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Integrity {
    /// HMAC-SHA1-96, [RFC 2404](https://www.rfc-editor.org/rfc/rfc2404).
    HmacSha1_96,
    /// HMAC-SHA2-256-128, [RFC 4868](https://www.rfc-editor.org/rfc/rfc4868).
    HmacSha256_128,
    /// HMAC-SHA2-384-192, [RFC 4868](https://www.rfc-editor.org/rfc/rfc4868).
    HmacSha384_192,
    /// HMAC-SHA2-512-256, [RFC 4868](https://www.rfc-editor.org/rfc/rfc4868).
    HmacSha512_256,
}

impl Integrity {
    /// Key length in bytes (RFC 2404 § 3: 160 bits; RFC 4868 § 2.1.1: the
    /// hash output length).
    #[must_use]
    pub const fn key_len(self) -> usize {
        match self {
            Self::HmacSha1_96 => 20,
            Self::HmacSha256_128 => 32,
            Self::HmacSha384_192 => 48,
            Self::HmacSha512_256 => 64,
        }
    }

    /// Truncated ICV length in bytes.
    #[must_use]
    pub const fn icv_len(self) -> usize {
        match self {
            Self::HmacSha1_96 => 12,
            Self::HmacSha256_128 => 16,
            Self::HmacSha384_192 => 24,
            Self::HmacSha512_256 => 32,
        }
    }

    pub(crate) fn ring_algorithm(self) -> ring::hmac::Algorithm {
        match self {
            Self::HmacSha1_96 => ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Self::HmacSha256_128 => ring::hmac::HMAC_SHA256,
            Self::HmacSha384_192 => ring::hmac::HMAC_SHA384,
            Self::HmacSha512_256 => ring::hmac::HMAC_SHA512,
        }
    }
}

/// An ESP algorithm suite: exactly the spec's phase 2 set. GCM is an AEAD
/// and takes no integrity algorithm (spec § 3.6), so the type cannot
/// express "GCM + HMAC".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EspAlgorithm {
    /// AES-128-GCM-16.
    Aes128Gcm16,
    /// AES-256-GCM-16.
    Aes256Gcm16,
    /// AES-128-CBC with an HMAC.
    Aes128Cbc(Integrity),
    /// AES-256-CBC with an HMAC.
    Aes256Cbc(Integrity),
}

impl EspAlgorithm {
    /// Every suite the dataplane supports (2 AEAD + 2 × 4 CBC/HMAC).
    pub const ALL: [Self; 10] = [
        Self::Aes128Gcm16,
        Self::Aes256Gcm16,
        Self::Aes128Cbc(Integrity::HmacSha1_96),
        Self::Aes128Cbc(Integrity::HmacSha256_128),
        Self::Aes128Cbc(Integrity::HmacSha384_192),
        Self::Aes128Cbc(Integrity::HmacSha512_256),
        Self::Aes256Cbc(Integrity::HmacSha1_96),
        Self::Aes256Cbc(Integrity::HmacSha256_128),
        Self::Aes256Cbc(Integrity::HmacSha384_192),
        Self::Aes256Cbc(Integrity::HmacSha512_256),
    ];

    /// The encryption half of the suite.
    #[must_use]
    pub const fn encryption(self) -> Encryption {
        match self {
            Self::Aes128Gcm16 => Encryption::Aes128Gcm16,
            Self::Aes256Gcm16 => Encryption::Aes256Gcm16,
            Self::Aes128Cbc(_) => Encryption::Aes128Cbc,
            Self::Aes256Cbc(_) => Encryption::Aes256Cbc,
        }
    }

    /// The integrity half, `None` for the AEAD suites.
    #[must_use]
    pub const fn integrity(self) -> Option<Integrity> {
        match self {
            Self::Aes128Gcm16 | Self::Aes256Gcm16 => None,
            Self::Aes128Cbc(i) | Self::Aes256Cbc(i) => Some(i),
        }
    }

    /// Encryption key length in bytes, including the 4-byte GCM salt
    /// (RFC 4106 § 8.1: "KEYMAT ... key || salt").
    #[must_use]
    pub const fn enc_key_len(self) -> usize {
        match self {
            Self::Aes128Gcm16 => 16 + gcm::SALT_LEN,
            Self::Aes256Gcm16 => 32 + gcm::SALT_LEN,
            Self::Aes128Cbc(_) => 16,
            Self::Aes256Cbc(_) => 32,
        }
    }

    /// Integrity key length in bytes (0 for AEAD suites).
    #[must_use]
    pub const fn auth_key_len(self) -> usize {
        match self.integrity() {
            Some(i) => i.key_len(),
            None => 0,
        }
    }

    /// IV length on the wire: 8 for GCM (RFC 4106 § 3.1), 16 for CBC
    /// (RFC 3602 § 3).
    #[must_use]
    pub const fn iv_len(self) -> usize {
        match self {
            Self::Aes128Gcm16 | Self::Aes256Gcm16 => gcm::IV_LEN,
            Self::Aes128Cbc(_) | Self::Aes256Cbc(_) => cbc::IV_LEN,
        }
    }

    /// ICV length on the wire.
    #[must_use]
    pub const fn icv_len(self) -> usize {
        match self {
            Self::Aes128Gcm16 | Self::Aes256Gcm16 => gcm::ICV_LEN,
            Self::Aes128Cbc(i) | Self::Aes256Cbc(i) => i.icv_len(),
        }
    }

    /// Alignment of payload + padding + trailer: the cipher block for
    /// CBC, 4 bytes for GCM (RFC 4303 § 2.4, RFC 4106 § 3.2).
    #[must_use]
    pub const fn pad_align(self) -> usize {
        match self {
            Self::Aes128Gcm16 | Self::Aes256Gcm16 => 4,
            Self::Aes128Cbc(_) | Self::Aes256Cbc(_) => 16,
        }
    }
}

/// Sealing and opening one ESP packet for one SA direction.
///
/// `esp` is always the whole ESP packet, from the SPI to the last ICV
/// byte: `SPI | seq-low | IV | plaintext-or-ciphertext | ICV`, where the
/// plaintext is `payload | padding | pad length | next header` and its
/// length is a multiple of [`EspTransform::pad_align`]. The ESP header
/// (SPI and the low 32 bits of `seq`) is written by the caller before
/// [`EspTransform::seal`]; it is authenticated, never encrypted.
///
/// `seq` is the full 64-bit sequence number; with `esn` the high 32 bits
/// take part in authentication (RFC 4303 § 2.2.1, RFC 4106 § 5) without
/// being sent.
pub trait EspTransform {
    /// IV bytes after the ESP header.
    fn iv_len(&self) -> usize;
    /// ICV bytes at the end of the packet.
    fn icv_len(&self) -> usize;
    /// Alignment the plaintext length must have.
    fn pad_align(&self) -> usize;

    /// Writes the IV, encrypts the plaintext in place and writes the ICV.
    ///
    /// # Errors
    /// [`CryptoError::BadLength`] if `esp` is shorter than header + IV +
    /// ICV or the plaintext is not aligned.
    fn seal(&self, seq: u64, esn: bool, esp: &mut [u8]) -> Result<(), CryptoError>;

    /// Verifies the ICV, then decrypts the ciphertext in place (IV and
    /// ICV bytes are left as they were; for GCM the ICV bytes are
    /// unspecified after a successful open).
    ///
    /// # Errors
    /// [`CryptoError::BadLength`] for a malformed length,
    /// [`CryptoError::AuthFailed`] if the ICV does not verify (nothing
    /// was decrypted).
    fn open(&self, seq: u64, esn: bool, esp: &mut [u8]) -> Result<(), CryptoError>;
}

/// One SA direction's transform, dispatched by `match` (no `dyn`, no
/// allocation).
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "GCM is the hot suite: its key schedule stays inline in the SA, no pointer chase"
)]
pub enum Transform {
    /// AES-GCM-16 (RFC 4106) on `ring`.
    Gcm(AesGcm),
    /// AES-GCM-16 (RFC 4106) on intel-ipsec-mb (key schedule on the heap,
    /// 64-byte aligned; the SA holds its pointer).
    GcmMb(MbGcm),
    /// AES-CBC (RFC 3602) + HMAC (RFC 2404 / RFC 4868). Boxed (allocated
    /// once, at SA setup): its two AES key schedules and two HMAC states
    /// would otherwise make every SA, GCM ones included, several cache
    /// lines larger; CBC is not the hot suite and pays one indirection.
    CbcHmac(Box<AesCbcHmac>),
    /// AES-CBC + HMAC on intel-ipsec-mb's job API, for bursts
    /// ([`run_cbc_batch`]); single packets through its `aws-lc-rs` +
    /// `ring` twin. Boxed for the same reason as [`Transform::CbcHmac`].
    CbcHmacMb(Box<MbCbcHmac>),
}

impl Transform {
    /// Builds the transform for `alg` from raw keys on the `ring` backend
    /// (cold path); see [`Transform::with_backend`].
    ///
    /// # Errors
    /// [`CryptoError::BadKeyLength`] / [`CryptoError::KeySetup`].
    pub fn new(
        alg: EspAlgorithm,
        enc_key: &[u8],
        auth_key: &[u8],
        iv_seed: &[u8; 16],
    ) -> Result<Self, CryptoError> {
        Self::with_backend(CryptoBackend::Ring, alg, enc_key, auth_key, iv_seed)
    }

    /// Builds the transform for `alg` from raw keys on `backend` (cold path).
    ///
    /// `enc_key` is `key || salt` for GCM; `auth_key` is ignored for GCM.
    /// `iv_seed` keys the CBC IV generator (see [`CbcIvGenerator`]); the
    /// control plane draws it from its RNG once per SA.
    ///
    /// # Errors
    /// [`CryptoError::BadKeyLength`] / [`CryptoError::KeySetup`].
    pub fn with_backend(
        backend: CryptoBackend,
        alg: EspAlgorithm,
        enc_key: &[u8],
        auth_key: &[u8],
        iv_seed: &[u8; 16],
    ) -> Result<Self, CryptoError> {
        match alg {
            EspAlgorithm::Aes128Gcm16 | EspAlgorithm::Aes256Gcm16 => {
                if enc_key.len() != alg.enc_key_len() {
                    return Err(CryptoError::BadKeyLength);
                }
                match backend {
                    CryptoBackend::Ring => AesGcm::new(enc_key).map(Self::Gcm),
                    CryptoBackend::IpsecMb(api) => MbGcm::new(&api, enc_key).map(Self::GcmMb),
                }
            }
            EspAlgorithm::Aes128Cbc(integ) | EspAlgorithm::Aes256Cbc(integ) => {
                if enc_key.len() != alg.enc_key_len() {
                    return Err(CryptoError::BadKeyLength);
                }
                match backend {
                    CryptoBackend::Ring => AesCbcHmac::new(enc_key, integ, auth_key, iv_seed)
                        .map(|t| Self::CbcHmac(Box::new(t))),
                    CryptoBackend::IpsecMb(api) => {
                        MbCbcHmac::new(&api, enc_key, integ, auth_key, iv_seed)
                            .map(|t| Self::CbcHmacMb(Box::new(t)))
                    }
                }
            }
        }
    }
}

impl EspTransform for Transform {
    #[inline]
    fn iv_len(&self) -> usize {
        match self {
            Self::Gcm(t) => t.iv_len(),
            Self::GcmMb(t) => t.iv_len(),
            Self::CbcHmac(t) => t.iv_len(),
            Self::CbcHmacMb(t) => t.iv_len(),
        }
    }
    #[inline]
    fn icv_len(&self) -> usize {
        match self {
            Self::Gcm(t) => t.icv_len(),
            Self::GcmMb(t) => t.icv_len(),
            Self::CbcHmac(t) => t.icv_len(),
            Self::CbcHmacMb(t) => t.icv_len(),
        }
    }
    #[inline]
    fn pad_align(&self) -> usize {
        match self {
            Self::Gcm(t) => t.pad_align(),
            Self::GcmMb(t) => t.pad_align(),
            Self::CbcHmac(t) => t.pad_align(),
            Self::CbcHmacMb(t) => t.pad_align(),
        }
    }
    #[inline]
    fn seal(&self, seq: u64, esn: bool, esp: &mut [u8]) -> Result<(), CryptoError> {
        match self {
            Self::Gcm(t) => t.seal(seq, esn, esp),
            Self::GcmMb(t) => t.seal(seq, esn, esp),
            Self::CbcHmac(t) => t.seal(seq, esn, esp),
            Self::CbcHmacMb(t) => t.seal(seq, esn, esp),
        }
    }
    #[inline]
    fn open(&self, seq: u64, esn: bool, esp: &mut [u8]) -> Result<(), CryptoError> {
        match self {
            Self::Gcm(t) => t.open(seq, esn, esp),
            Self::GcmMb(t) => t.open(seq, esn, esp),
            Self::CbcHmac(t) => t.open(seq, esn, esp),
            Self::CbcHmacMb(t) => t.open(seq, esn, esp),
        }
    }
}

impl Transform {
    /// The intel-ipsec-mb CBC + HMAC context if this transform has one:
    /// its packets can go through [`run_cbc_batch`] with a burst.
    #[inline]
    #[must_use]
    pub fn cbc_mb(&self) -> Option<&MbCbcHmac> {
        match self {
            Self::CbcHmacMb(t) => Some(t),
            _ => None,
        }
    }
}

/// High 32 bits of a 64-bit sequence number.
#[inline]
pub(crate) fn seq_hi(seq: u64) -> u32 {
    u32::try_from(seq >> 32).unwrap_or(u32::MAX)
}

/// Low 32 bits of a 64-bit sequence number (truncation intended).
#[inline]
pub(crate) fn seq_lo(seq: u64) -> u32 {
    u32::try_from(seq & 0xFFFF_FFFF).unwrap_or(0)
}
