//! IKEv2 key material: PRFs and prf+ ([RFC 7296 § 2.13]), SKEYSEED and
//! the SK_* keys (§ 2.14), Child SA KEYMAT (§ 2.17), the PSK AUTH value
//! (§ 2.15) and SK payload protection: AES-CBC + HMAC (§ 3.14) and
//! AES-GCM-16 ([RFC 5282]).
//!
//! Keys live in [`Zeroizing`] buffers; ICV and AUTH comparisons are
//! constant-time (`subtle`).
//!
//! [RFC 7296 § 2.13]: https://www.rfc-editor.org/rfc/rfc7296#section-2.13
//! [RFC 5282]: https://www.rfc-editor.org/rfc/rfc5282

use aws_lc_rs::cipher::{
    AES_128, AES_256, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
    UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::wire::{GENERIC_LEN, HEADER_LEN, Header, PayloadType};

/// PRF transform IDs (RFC 7296 § 3.3.2, RFC 4868).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prf {
    /// `PRF_HMAC_SHA1` (2).
    HmacSha1,
    /// `PRF_HMAC_SHA2_256` (5).
    HmacSha256,
    /// `PRF_HMAC_SHA2_384` (6).
    HmacSha384,
    /// `PRF_HMAC_SHA2_512` (7).
    HmacSha512,
}

impl Prf {
    /// Every PRF, in transform-ID order.
    pub const ALL: [Self; 4] = [
        Self::HmacSha1,
        Self::HmacSha256,
        Self::HmacSha384,
        Self::HmacSha512,
    ];
    /// Transform ID.
    #[must_use]
    pub const fn id(self) -> u16 {
        match self {
            Self::HmacSha1 => 2,
            Self::HmacSha256 => 5,
            Self::HmacSha384 => 6,
            Self::HmacSha512 => 7,
        }
    }
    /// From a transform ID.
    #[must_use]
    pub fn from_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.id() == id)
    }
    fn alg(self) -> hmac::Algorithm {
        match self {
            Self::HmacSha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Self::HmacSha256 => hmac::HMAC_SHA256,
            Self::HmacSha384 => hmac::HMAC_SHA384,
            Self::HmacSha512 => hmac::HMAC_SHA512,
        }
    }
    /// Output (and preferred key) length in bytes.
    #[must_use]
    pub const fn out_len(self) -> usize {
        match self {
            Self::HmacSha1 => 20,
            Self::HmacSha256 => 32,
            Self::HmacSha384 => 48,
            Self::HmacSha512 => 64,
        }
    }
    /// `prf(key, data)`.
    #[must_use]
    pub fn prf(self, key: &[u8], data: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        let k = hmac::Key::new(self.alg(), key);
        let mut ctx = hmac::Context::with_key(&k);
        for d in data {
            ctx.update(d);
        }
        Zeroizing::new(ctx.sign().as_ref().to_vec())
    }
    /// `prf+(key, seed)` truncated to `len` bytes (RFC 7296 § 2.13):
    /// `T1 = prf(K, S | 0x01)`, `Tn = prf(K, Tn-1 | S | n)`.
    #[must_use]
    pub fn prf_plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> Zeroizing<Vec<u8>> {
        let k = hmac::Key::new(self.alg(), key);
        let mut out = Zeroizing::new(Vec::with_capacity(len + self.out_len()));
        let mut prev: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::new());
        let mut n: u8 = 1;
        while out.len() < len {
            let mut ctx = hmac::Context::with_key(&k);
            ctx.update(&prev);
            for s in seed {
                ctx.update(s);
            }
            ctx.update(&[n]);
            let t = ctx.sign();
            prev = Zeroizing::new(t.as_ref().to_vec());
            out.extend_from_slice(&prev);
            // RFC 7296 § 2.13: prf+ is defined for at most 255 blocks.
            n = n.wrapping_add(1);
            if n == 0 {
                break;
            }
        }
        out.truncate(len);
        out
    }
}

/// Integrity transform IDs (RFC 7296 § 3.3.2, RFC 4868).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Integ {
    /// `AUTH_HMAC_SHA1_96` (2).
    HmacSha1_96,
    /// `AUTH_HMAC_SHA2_256_128` (12).
    HmacSha256_128,
    /// `AUTH_HMAC_SHA2_384_192` (13).
    HmacSha384_192,
    /// `AUTH_HMAC_SHA2_512_256` (14).
    HmacSha512_256,
}

impl Integ {
    /// Every integrity algorithm.
    pub const ALL: [Self; 4] = [
        Self::HmacSha1_96,
        Self::HmacSha256_128,
        Self::HmacSha384_192,
        Self::HmacSha512_256,
    ];
    /// Transform ID.
    #[must_use]
    pub const fn id(self) -> u16 {
        match self {
            Self::HmacSha1_96 => 2,
            Self::HmacSha256_128 => 12,
            Self::HmacSha384_192 => 13,
            Self::HmacSha512_256 => 14,
        }
    }
    /// From a transform ID.
    #[must_use]
    pub fn from_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.id() == id)
    }
    /// Key length, bytes.
    #[must_use]
    pub const fn key_len(self) -> usize {
        match self {
            Self::HmacSha1_96 => 20,
            Self::HmacSha256_128 => 32,
            Self::HmacSha384_192 => 48,
            Self::HmacSha512_256 => 64,
        }
    }
    /// Truncated ICV length, bytes.
    #[must_use]
    pub const fn icv_len(self) -> usize {
        match self {
            Self::HmacSha1_96 => 12,
            Self::HmacSha256_128 => 16,
            Self::HmacSha384_192 => 24,
            Self::HmacSha512_256 => 32,
        }
    }
    fn alg(self) -> hmac::Algorithm {
        match self {
            Self::HmacSha1_96 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Self::HmacSha256_128 => hmac::HMAC_SHA256,
            Self::HmacSha384_192 => hmac::HMAC_SHA384,
            Self::HmacSha512_256 => hmac::HMAC_SHA512,
        }
    }
    /// The dataplane's name for this algorithm.
    #[must_use]
    pub const fn to_dataplane(self) -> dataplane::crypto::Integrity {
        use dataplane::crypto::Integrity as I;
        match self {
            Self::HmacSha1_96 => I::HmacSha1_96,
            Self::HmacSha256_128 => I::HmacSha256_128,
            Self::HmacSha384_192 => I::HmacSha384_192,
            Self::HmacSha512_256 => I::HmacSha512_256,
        }
    }
}

/// `ENCR_AES_CBC` transform ID.
pub const ENCR_AES_CBC: u16 = 12;
/// `ENCR_AES_GCM_16` transform ID (RFC 5282).
pub const ENCR_AES_GCM_16: u16 = 20;

/// Encryption transforms the appliance supports (spec § 3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encr {
    /// AES-CBC with a 16- or 32-byte key.
    AesCbc {
        /// Key length in bytes (16 or 32).
        key_len: usize,
    },
    /// AES-GCM with a 16-byte ICV, 16- or 32-byte key (+ 4-byte salt).
    AesGcm16 {
        /// Key length in bytes (16 or 32), salt not included.
        key_len: usize,
    },
}

impl Encr {
    /// From transform ID and Key Length attribute (bits).
    #[must_use]
    pub fn from_transform(id: u16, key_bits: Option<u16>) -> Option<Self> {
        let key_len = match key_bits? {
            128 => 16,
            256 => 32,
            _ => return None,
        };
        match id {
            ENCR_AES_CBC => Some(Self::AesCbc { key_len }),
            ENCR_AES_GCM_16 => Some(Self::AesGcm16 { key_len }),
            _ => None,
        }
    }
    /// Transform ID.
    #[must_use]
    pub const fn id(self) -> u16 {
        match self {
            Self::AesCbc { .. } => ENCR_AES_CBC,
            Self::AesGcm16 { .. } => ENCR_AES_GCM_16,
        }
    }
    /// Key Length attribute value, bits.
    #[must_use]
    pub fn key_bits(self) -> u16 {
        match self {
            Self::AesCbc { key_len } | Self::AesGcm16 { key_len } => {
                u16::try_from(key_len * 8).unwrap_or(0)
            }
        }
    }
    /// Whether this is an AEAD (no INTEG transform).
    #[must_use]
    pub const fn is_aead(self) -> bool {
        matches!(self, Self::AesGcm16 { .. })
    }
    /// Key material taken from prf+ for SK_e / ESP: the AES key, plus the
    /// 4-byte salt for GCM (RFC 5282 § 7.1, RFC 4106 § 8.1).
    #[must_use]
    pub const fn keymat_len(self) -> usize {
        match self {
            Self::AesCbc { key_len } => key_len,
            Self::AesGcm16 { key_len } => key_len + 4,
        }
    }
}

/// A negotiated IKE SA suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeSuite {
    /// Encryption.
    pub encr: Encr,
    /// PRF.
    pub prf: Prf,
    /// Integrity (None with GCM).
    pub integ: Option<Integ>,
    /// DH group number.
    pub dh: u16,
}

/// SK_* keys of an IKE SA (RFC 7296 § 2.14).
#[derive(Debug)]
pub struct IkeKeys {
    /// SK_d: Child SA key derivation.
    pub sk_d: Zeroizing<Vec<u8>>,
    /// SK_ai: integrity, initiator → responder.
    pub sk_ai: Zeroizing<Vec<u8>>,
    /// SK_ar.
    pub sk_ar: Zeroizing<Vec<u8>>,
    /// SK_ei: encryption (+ salt), initiator → responder.
    pub sk_ei: Zeroizing<Vec<u8>>,
    /// SK_er.
    pub sk_er: Zeroizing<Vec<u8>>,
    /// SK_pi: AUTH of the initiator.
    pub sk_pi: Zeroizing<Vec<u8>>,
    /// SK_pr.
    pub sk_pr: Zeroizing<Vec<u8>>,
}

/// `SKEYSEED = prf(Ni | Nr, g^ir)` (RFC 7296 § 2.14; HMAC PRFs take the
/// whole nonces as the key).
#[must_use]
pub fn skeyseed(prf: Prf, ni: &[u8], nr: &[u8], g_ir: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut key = Zeroizing::new(Vec::with_capacity(ni.len() + nr.len()));
    key.extend_from_slice(ni);
    key.extend_from_slice(nr);
    prf.prf(&key, &[g_ir])
}

/// `SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)` for an IKE SA
/// rekey (RFC 7296 § 2.18).
#[must_use]
pub fn skeyseed_rekey(
    prf_old: Prf,
    sk_d_old: &[u8],
    g_ir: &[u8],
    ni: &[u8],
    nr: &[u8],
) -> Zeroizing<Vec<u8>> {
    prf_old.prf(sk_d_old, &[g_ir, ni, nr])
}

/// `{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} =
/// prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)`.
#[must_use]
pub fn derive_ike_keys(
    suite: &IkeSuite,
    skeyseed: &[u8],
    ni: &[u8],
    nr: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> IkeKeys {
    let p = suite.prf.out_len();
    let a = suite.integ.map_or(0, Integ::key_len);
    let e = suite.encr.keymat_len();
    let total = 3 * p + 2 * a + 2 * e;
    let km = suite.prf.prf_plus(
        skeyseed,
        &[ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()],
        total,
    );
    let mut off = 0;
    let mut take = |n: usize| {
        let v = Zeroizing::new(km[off..off + n].to_vec());
        off += n;
        v
    };
    IkeKeys {
        sk_d: take(p),
        sk_ai: take(a),
        sk_ar: take(a),
        sk_ei: take(e),
        sk_er: take(e),
        sk_pi: take(p),
        sk_pr: take(p),
    }
}

/// Child SA KEYMAT (RFC 7296 § 2.17): `prf+(SK_d, [g^ir (new) |] Ni | Nr)`
/// of `2 × (encr keymat + integ key)` bytes, initiator → responder first.
#[must_use]
pub fn child_keymat(
    prf: Prf,
    sk_d: &[u8],
    g_ir: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    len: usize,
) -> Zeroizing<Vec<u8>> {
    match g_ir {
        Some(g) => prf.prf_plus(sk_d, &[g, ni, nr], len),
        None => prf.prf_plus(sk_d, &[ni, nr], len),
    }
}

/// The PSK AUTH value (RFC 7296 § 2.15):
/// `prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)` where
/// `SignedOctets = RealMessage | Nonce | prf(SK_p, RestOfIDPayload)`.
#[must_use]
pub fn psk_auth(
    prf: Prf,
    psk: &[u8],
    real_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &[u8],
    id_body: &[u8],
) -> Zeroizing<Vec<u8>> {
    let maced_id = prf.prf(sk_p, &[id_body]);
    let key = prf.prf(psk, &[b"Key Pad for IKEv2"]);
    prf.prf(&key, &[real_message, peer_nonce, &maced_id])
}

/// Constant-time equality.
#[must_use]
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Why an SK payload could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SkError {
    /// Too short for IV + ICV or not block-aligned.
    #[error("bad SK payload length")]
    Length,
    /// ICV mismatch (wrong keys or tampering).
    #[error("integrity check failed")]
    Integrity,
    /// Padding length beyond the plaintext.
    #[error("bad padding")]
    Padding,
    /// Key setup failed.
    #[error("key setup failed")]
    Key,
}

/// One direction of SK protection.
#[derive(Debug)]
pub struct SkKeys {
    encr: Encr,
    integ: Option<Integ>,
    enc_key: Zeroizing<Vec<u8>>,
    integ_key: Zeroizing<Vec<u8>>,
}

const BLOCK: usize = 16;

impl SkKeys {
    /// Builds from SK_e (+ salt) and SK_a.
    #[must_use]
    pub fn new(
        encr: Encr,
        integ: Option<Integ>,
        enc_key: Zeroizing<Vec<u8>>,
        integ_key: Zeroizing<Vec<u8>>,
    ) -> Self {
        Self {
            encr,
            integ,
            enc_key,
            integ_key,
        }
    }

    /// IV length on the wire.
    #[must_use]
    pub fn iv_len(&self) -> usize {
        match self.encr {
            Encr::AesCbc { .. } => BLOCK,
            Encr::AesGcm16 { .. } => 8,
        }
    }
    /// ICV length.
    #[must_use]
    pub fn icv_len(&self) -> usize {
        match self.encr {
            Encr::AesCbc { .. } => self.integ.map_or(0, Integ::icv_len),
            Encr::AesGcm16 { .. } => 16,
        }
    }

    fn padded_len(&self, plain: usize) -> usize {
        match self.encr {
            // Pad Length byte included; CBC needs whole blocks.
            Encr::AesCbc { .. } => (plain + 1).div_ceil(BLOCK) * BLOCK,
            Encr::AesGcm16 { .. } => plain + 1,
        }
    }

    /// Builds a whole protected message: `header | SK header | IV |
    /// E(inner | pad | pad len) | ICV`. `iv` must come from the RNG and be
    /// at least [`iv_len`](Self::iv_len) bytes.
    ///
    /// # Errors
    /// [`SkError::Key`] if the cipher refuses the key.
    pub fn seal(
        &self,
        header: &Header,
        first: PayloadType,
        inner: &[u8],
        iv: &[u8],
    ) -> Result<Vec<u8>, SkError> {
        self.seal_as(header, PayloadType::Sk, first, &[], inner, iv)
    }

    /// Builds one SKF fragment message ([RFC 7383 § 2.5]): like
    /// [`seal`](Self::seal) with the Fragment Number and Total Fragments
    /// fields after the generic header, both covered by the ICV. `first`
    /// is the first inner payload's type in fragment 1 and `None` in the
    /// others.
    ///
    /// [RFC 7383 § 2.5]: https://www.rfc-editor.org/rfc/rfc7383#section-2.5
    ///
    /// # Errors
    /// [`SkError::Key`] if the cipher refuses the key.
    pub fn seal_fragment(
        &self,
        header: &Header,
        first: PayloadType,
        number: u16,
        total: u16,
        inner: &[u8],
        iv: &[u8],
    ) -> Result<Vec<u8>, SkError> {
        let mut nt = [0u8; 4];
        nt[..2].copy_from_slice(&number.to_be_bytes());
        nt[2..].copy_from_slice(&total.to_be_bytes());
        self.seal_as(header, PayloadType::Skf, first, &nt, inner, iv)
    }

    /// Bytes a message grows by when `plain` inner bytes are protected
    /// in an SK payload (header not included): generic header, IV,
    /// padding and pad length, ICV.
    #[must_use]
    pub fn overhead(&self, plain: usize) -> usize {
        GENERIC_LEN + self.iv_len() + self.padded_len(plain) - plain + self.icv_len()
    }

    /// Largest inner length whose SKF payload (with its 4 extra bytes)
    /// fits `room` bytes after the IKE header; 0 if nothing fits.
    #[must_use]
    pub fn max_fragment_plain(&self, room: usize) -> usize {
        let fixed = GENERIC_LEN + 4 + self.iv_len() + self.icv_len();
        let Some(avail) = room.checked_sub(fixed) else {
            return 0;
        };
        match self.encr {
            Encr::AesCbc { .. } => (avail / BLOCK * BLOCK).saturating_sub(1),
            Encr::AesGcm16 { .. } => avail.saturating_sub(1),
        }
    }

    fn seal_as(
        &self,
        header: &Header,
        kind: PayloadType,
        first: PayloadType,
        extra: &[u8],
        inner: &[u8],
        iv: &[u8],
    ) -> Result<Vec<u8>, SkError> {
        let iv_len = self.iv_len();
        let icv_len = self.icv_len();
        let padded = self.padded_len(inner.len());
        let sk_len = GENERIC_LEN + extra.len() + iv_len + padded + icv_len;
        let total = HEADER_LEN + sk_len;
        let mut out = Vec::with_capacity(total);
        header.emit(
            kind,
            u32::try_from(total).map_err(|_| SkError::Length)?,
            &mut out,
        );
        out.push(first.into());
        out.push(0);
        out.extend_from_slice(
            &u16::try_from(sk_len)
                .map_err(|_| SkError::Length)?
                .to_be_bytes(),
        );
        out.extend_from_slice(extra);
        let aad_end = out.len();
        let iv = iv.get(..iv_len).ok_or(SkError::Length)?;
        out.extend_from_slice(iv);
        let ct_start = out.len();
        out.extend_from_slice(inner);
        let pad = padded - inner.len() - 1;
        out.extend(std::iter::repeat_n(0u8, pad));
        out.push(u8::try_from(pad).map_err(|_| SkError::Padding)?);
        match self.encr {
            Encr::AesCbc { key_len } => {
                let alg = if key_len == 16 { &AES_128 } else { &AES_256 };
                let key = EncryptingKey::cbc(
                    UnboundCipherKey::new(alg, &self.enc_key).map_err(|_| SkError::Key)?,
                )
                .map_err(|_| SkError::Key)?;
                let mut ivb = [0u8; BLOCK];
                ivb.copy_from_slice(iv);
                key.less_safe_encrypt(
                    &mut out[ct_start..],
                    EncryptionContext::Iv128(FixedLength::from(&ivb)),
                )
                .map_err(|_| SkError::Length)?;
                let integ = self.integ.ok_or(SkError::Key)?;
                let tag = hmac::sign(&hmac::Key::new(integ.alg(), &self.integ_key), &out);
                out.extend_from_slice(&tag.as_ref()[..icv_len]);
            }
            Encr::AesGcm16 { .. } => {
                let (key, nonce) = self.gcm(iv)?;
                let (aad, rest) = out.split_at_mut(aad_end);
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::from(&*aad), &mut rest[iv_len..])
                    .map_err(|_| SkError::Key)?;
                out.extend_from_slice(tag.as_ref());
            }
        }
        Ok(out)
    }

    fn gcm(&self, iv: &[u8]) -> Result<(LessSafeKey, Nonce), SkError> {
        let Encr::AesGcm16 { key_len } = self.encr else {
            return Err(SkError::Key);
        };
        let alg = if key_len == 16 {
            &AES_128_GCM
        } else {
            &AES_256_GCM
        };
        let key = self.enc_key.get(..key_len).ok_or(SkError::Key)?;
        let salt = self.enc_key.get(key_len..key_len + 4).ok_or(SkError::Key)?;
        let k = LessSafeKey::new(UnboundKey::new(alg, key).map_err(|_| SkError::Key)?);
        // RFC 5282 § 3.1 / RFC 4106 § 4: nonce = salt (4) | IV (8).
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(salt);
        n[4..].copy_from_slice(iv.get(..8).ok_or(SkError::Length)?);
        Ok((k, Nonce::assume_unique_for_key(n)))
    }

    /// Opens a protected message. `msg` is the whole IKE message and
    /// `body_start` the offset of the SK/SKF payload's IV (everything
    /// before it is authenticated). Returns the decrypted inner payload
    /// bytes (padding removed).
    ///
    /// # Errors
    /// [`SkError`]; integrity is checked before any decryption.
    pub fn open(&self, msg: &[u8], body_start: usize) -> Result<Vec<u8>, SkError> {
        let iv_len = self.iv_len();
        let icv_len = self.icv_len();
        let body = msg.get(body_start..).ok_or(SkError::Length)?;
        if body.len() < iv_len + icv_len + 1 {
            return Err(SkError::Length);
        }
        let mut plain = match self.encr {
            Encr::AesCbc { key_len } => {
                let integ = self.integ.ok_or(SkError::Key)?;
                let covered = &msg[..msg.len() - icv_len];
                let icv = &msg[msg.len() - icv_len..];
                let tag = hmac::sign(&hmac::Key::new(integ.alg(), &self.integ_key), covered);
                if !ct_eq(&tag.as_ref()[..icv_len], icv) {
                    return Err(SkError::Integrity);
                }
                let ct = &body[iv_len..body.len() - icv_len];
                if ct.is_empty() || !ct.len().is_multiple_of(BLOCK) {
                    return Err(SkError::Length);
                }
                let alg = if key_len == 16 { &AES_128 } else { &AES_256 };
                let key = DecryptingKey::cbc(
                    UnboundCipherKey::new(alg, &self.enc_key).map_err(|_| SkError::Key)?,
                )
                .map_err(|_| SkError::Key)?;
                let mut ivb = [0u8; BLOCK];
                ivb.copy_from_slice(&body[..iv_len]);
                let mut buf = ct.to_vec();
                key.decrypt(&mut buf, DecryptionContext::Iv128(FixedLength::from(&ivb)))
                    .map_err(|_| SkError::Length)?;
                buf
            }
            Encr::AesGcm16 { .. } => {
                let (key, nonce) = self.gcm(&body[..iv_len])?;
                let aad = &msg[..body_start];
                let mut buf = body[iv_len..].to_vec();
                let n = key
                    .open_in_place(nonce, Aad::from(aad), &mut buf)
                    .map_err(|_| SkError::Integrity)?
                    .len();
                buf.truncate(n);
                buf
            }
        };
        let pad = usize::from(*plain.last().ok_or(SkError::Padding)?);
        if pad + 1 > plain.len() {
            return Err(SkError::Padding);
        }
        plain.truncate(plain.len() - pad - 1);
        Ok(plain)
    }
}
