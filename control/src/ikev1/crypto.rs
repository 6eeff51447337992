//! IKEv1 key material ([RFC 2409 § 5]): SKEYID for pre-shared keys and
//! its three children, the phase 1 encryption key (expanded per
//! [Appendix B]), HASH_I / HASH_R, the Quick Mode and Informational
//! hashes, KEYMAT for ESP (§ 5.5, expanded the same way), and phase 1
//! message protection: AES-CBC with the IV chained from message to
//! message (Appendix B).
//!
//! The PRF is the HMAC of the negotiated hash ([`Prf`] of the IKEv2 code:
//! RFC 2409 § 4 "the HMAC version of the negotiated hash algorithm is used
//! as a pseudo-random function"). Keys live in [`Zeroizing`] buffers; hash
//! comparisons are constant-time ([`ct_eq`]).
//!
//! [RFC 2409 § 5]: https://www.rfc-editor.org/rfc/rfc2409#section-5
//! [Appendix B]: https://www.rfc-editor.org/rfc/rfc2409#appendix-B

use aws_lc_rs::cipher::{
    AES_128, AES_256, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
    UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use ring::digest;
use zeroize::Zeroizing;

pub use crate::ike::crypto::{Prf, ct_eq};

/// AES block size, and the IV length of phase 1 encryption.
pub const BLOCK: usize = 16;

/// The plain hash behind a PRF, for the IVs (RFC 2409 Appendix B: "the
/// initial IV is derived from a hash (the hash algorithm negotiated in
/// phase 1) of the concatenation of the public values").
#[must_use]
pub fn hash(prf: Prf, data: &[&[u8]]) -> Vec<u8> {
    let alg = match prf {
        Prf::HmacSha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        Prf::HmacSha256 => &digest::SHA256,
        Prf::HmacSha384 => &digest::SHA384,
        Prf::HmacSha512 => &digest::SHA512,
    };
    let mut ctx = digest::Context::new(alg);
    for d in data {
        ctx.update(d);
    }
    ctx.finish().as_ref().to_vec()
}

/// The phase 1 key schedule (RFC 2409 § 5).
#[derive(Debug)]
pub struct Phase1Keys {
    /// SKEYID.
    pub skeyid: Zeroizing<Vec<u8>>,
    /// SKEYID_d: phase 2 keying material.
    pub skeyid_d: Zeroizing<Vec<u8>>,
    /// SKEYID_a: phase 2 and Informational authentication.
    pub skeyid_a: Zeroizing<Vec<u8>>,
    /// SKEYID_e: phase 1 encryption (before expansion).
    pub skeyid_e: Zeroizing<Vec<u8>>,
    /// The encryption key: SKEYID_e, expanded when too short
    /// (Appendix B), truncated to the cipher's key length.
    pub enc_key: Zeroizing<Vec<u8>>,
}

/// `SKEYID = prf(pre-shared-key, Ni_b | Nr_b)` (RFC 2409 § 5 for
/// pre-shared key authentication).
#[must_use]
pub fn skeyid_psk(prf: Prf, psk: &[u8], ni: &[u8], nr: &[u8]) -> Zeroizing<Vec<u8>> {
    prf.prf(psk, &[ni, nr])
}

/// The rest of the phase 1 schedule from SKEYID:
///
/// ```text
/// SKEYID_d = prf(SKEYID, g^xy | CKY-I | CKY-R | 0)
/// SKEYID_a = prf(SKEYID, SKEYID_d | g^xy | CKY-I | CKY-R | 1)
/// SKEYID_e = prf(SKEYID, SKEYID_a | g^xy | CKY-I | CKY-R | 2)
/// ```
///
/// and the encryption key of `key_len` bytes from SKEYID_e
/// (Appendix B: `Ka = K1 | K2 | …`, `K1 = prf(SKEYID_e, 0)`,
/// `Kn = prf(SKEYID_e, Kn-1)`, used only when SKEYID_e is too short).
#[must_use]
pub fn phase1_keys(
    prf: Prf,
    skeyid: Zeroizing<Vec<u8>>,
    g_xy: &[u8],
    cky_i: u64,
    cky_r: u64,
    key_len: usize,
) -> Phase1Keys {
    let (ci, cr) = (cky_i.to_be_bytes(), cky_r.to_be_bytes());
    let d = prf.prf(&skeyid, &[g_xy, &ci, &cr, &[0]]);
    let a = prf.prf(&skeyid, &[&d, g_xy, &ci, &cr, &[1]]);
    let e = prf.prf(&skeyid, &[&a, g_xy, &ci, &cr, &[2]]);
    let enc_key = if e.len() >= key_len {
        Zeroizing::new(e[..key_len].to_vec())
    } else {
        let mut ka = Zeroizing::new(Vec::with_capacity(key_len + prf.out_len()));
        let mut k = prf.prf(&e, &[&[0]]);
        loop {
            ka.extend_from_slice(&k);
            if ka.len() >= key_len {
                break;
            }
            k = prf.prf(&e, &[&k]);
        }
        ka.truncate(key_len);
        ka
    };
    Phase1Keys {
        skeyid,
        skeyid_d: d,
        skeyid_a: a,
        skeyid_e: e,
        enc_key,
    }
}

/// `HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b)`
/// and, with the roles swapped, `HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R
/// | CKY-I | SAi_b | IDir_b)` (RFC 2409 § 5). Pass the sender's values
/// first: `own_ke`, `peer_ke`, `own_cky`, `peer_cky`. `sai_b` is always
/// the initiator's SA payload body; `id_b` the sender's ID payload body.
#[must_use]
#[allow(clippy::too_many_arguments, reason = "the RFC's inputs, in its order")]
pub fn main_mode_hash(
    prf: Prf,
    skeyid: &[u8],
    own_ke: &[u8],
    peer_ke: &[u8],
    own_cky: u64,
    peer_cky: u64,
    sai_b: &[u8],
    id_b: &[u8],
) -> Zeroizing<Vec<u8>> {
    prf.prf(
        skeyid,
        &[
            own_ke,
            peer_ke,
            &own_cky.to_be_bytes(),
            &peer_cky.to_be_bytes(),
            sai_b,
            id_b,
        ],
    )
}

/// The Quick Mode hashes (RFC 2409 § 5.5), `rest` being the message's
/// payloads after the HASH payload (generic headers included):
///
/// ```text
/// HASH(1) = prf(SKEYID_a, M-ID | SA | Ni [ | KE ] [ | IDci | IDcr ])
/// HASH(2) = prf(SKEYID_a, M-ID | Ni_b | SA | Nr [ | KE ] [ | IDci | IDcr ])
/// HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b)
/// ```
///
/// HASH(1) is also the Informational hash (§ 5.7: `prf(SKEYID_a, M-ID |
/// N/D)`). `ni_b` is `None` for HASH(1).
#[must_use]
pub fn qm_hash(prf: Prf, skeyid_a: &[u8], mid: u32, ni_b: Option<&[u8]>, rest: &[u8]) -> Vec<u8> {
    let m = mid.to_be_bytes();
    match ni_b {
        None => prf.prf(skeyid_a, &[&m, rest]).to_vec(),
        Some(n) => prf.prf(skeyid_a, &[&m, n, rest]).to_vec(),
    }
}

/// `HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b)`.
#[must_use]
pub fn qm_hash3(prf: Prf, skeyid_a: &[u8], mid: u32, ni_b: &[u8], nr_b: &[u8]) -> Vec<u8> {
    prf.prf(skeyid_a, &[&[0], &mid.to_be_bytes(), ni_b, nr_b])
        .to_vec()
}

/// KEYMAT for one SA (RFC 2409 § 5.5) of `len` bytes:
///
/// ```text
/// KEYMAT = K1 | K2 | …
/// K1 = prf(SKEYID_d, [ g(qm)^xy | ] protocol | SPI | Ni_b | Nr_b)
/// Kn = prf(SKEYID_d, Kn-1 | [ g(qm)^xy | ] protocol | SPI | Ni_b | Nr_b)
/// ```
///
/// `spi` is the SPI its receiver chose: the SA that carries traffic to
/// the side that chose `spi`. `g_qm` is the PFS shared secret.
#[must_use]
#[allow(clippy::too_many_arguments, reason = "the RFC's inputs, in its order")]
pub fn keymat(
    prf: Prf,
    skeyid_d: &[u8],
    g_qm: Option<&[u8]>,
    protocol: u8,
    spi: u32,
    ni_b: &[u8],
    nr_b: &[u8],
    len: usize,
) -> Zeroizing<Vec<u8>> {
    let spi = spi.to_be_bytes();
    let g = g_qm.unwrap_or(&[]);
    let mut out = Zeroizing::new(Vec::with_capacity(len + prf.out_len()));
    let mut prev: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::new());
    while out.len() < len {
        prev = prf.prf(skeyid_d, &[&prev, g, &[protocol], &spi, ni_b, nr_b]);
        out.extend_from_slice(&prev);
    }
    out.truncate(len);
    out
}

/// The initial phase 1 IV: `hash(g^xi | g^xr)` truncated to the block
/// size (RFC 2409 Appendix B).
#[must_use]
pub fn phase1_iv(prf: Prf, ke_i: &[u8], ke_r: &[u8]) -> [u8; BLOCK] {
    let h = hash(prf, &[ke_i, ke_r]);
    let mut iv = [0u8; BLOCK];
    iv.copy_from_slice(&h[..BLOCK]);
    iv
}

/// The first IV of a phase 2 or Informational exchange: `hash(last
/// phase 1 CBC output block | M-ID)` truncated (RFC 2409 Appendix B).
#[must_use]
pub fn phase2_iv(prf: Prf, phase1_last: &[u8; BLOCK], mid: u32) -> [u8; BLOCK] {
    let h = hash(prf, &[phase1_last, &mid.to_be_bytes()]);
    let mut iv = [0u8; BLOCK];
    iv.copy_from_slice(&h[..BLOCK]);
    iv
}

/// Why a phase 1 encrypted body could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CipherError {
    /// Empty or not a whole number of blocks.
    #[error("encrypted ISAKMP body is not a whole number of AES blocks")]
    Length,
    /// The cipher refused the key.
    #[error("phase 1 key setup failed")]
    Key,
}

/// AES-CBC of phase 1 (RFC 2409 Appendix B: no integrity of its own; the
/// hashes inside the messages authenticate them).
#[derive(Debug)]
pub struct Phase1Cipher {
    key: Zeroizing<Vec<u8>>,
}

impl Phase1Cipher {
    /// From the expanded encryption key (16 or 32 bytes).
    #[must_use]
    pub fn new(key: Zeroizing<Vec<u8>>) -> Self {
        Self { key }
    }

    fn unbound(&self) -> Result<UnboundCipherKey, CipherError> {
        let alg = match self.key.len() {
            16 => &AES_128,
            32 => &AES_256,
            _ => return Err(CipherError::Key),
        };
        UnboundCipherKey::new(alg, &self.key).map_err(|_| CipherError::Key)
    }

    /// Encrypts `plain` padded to whole blocks; returns the
    /// ciphertext. The caller's next IV is its last block.
    ///
    /// # Errors
    /// [`CipherError::Key`].
    pub fn encrypt(&self, iv: &[u8; BLOCK], plain: &[u8]) -> Result<Vec<u8>, CipherError> {
        let key = EncryptingKey::cbc(self.unbound()?).map_err(|_| CipherError::Key)?;
        let mut buf = plain.to_vec();
        // RFC 2409 Appendix B: "All padding bytes, except for the last
        // one, contain 0x00. The last byte of the padding contains the
        // number of the padding bytes used, excluding the last one. Note
        // that this means there will always be padding."
        let pad = BLOCK - plain.len() % BLOCK;
        buf.extend(std::iter::repeat_n(0u8, pad - 1));
        buf.push(u8::try_from(pad - 1).unwrap_or(0));
        key.less_safe_encrypt(&mut buf, EncryptionContext::Iv128(FixedLength::from(iv)))
            .map_err(|_| CipherError::Length)?;
        Ok(buf)
    }

    /// Decrypts `ct` (whole blocks) with `iv`; padding is left in place
    /// (the payload chain says where the payloads end).
    ///
    /// # Errors
    /// [`CipherError`].
    pub fn decrypt(&self, iv: &[u8; BLOCK], ct: &[u8]) -> Result<Vec<u8>, CipherError> {
        if ct.is_empty() || !ct.len().is_multiple_of(BLOCK) {
            return Err(CipherError::Length);
        }
        let key = DecryptingKey::cbc(self.unbound()?).map_err(|_| CipherError::Key)?;
        let mut buf = ct.to_vec();
        key.decrypt(&mut buf, DecryptionContext::Iv128(FixedLength::from(iv)))
            .map_err(|_| CipherError::Length)?;
        Ok(buf)
    }
}

/// The last block of a ciphertext: the next IV of the exchange.
#[must_use]
pub fn last_block(ct: &[u8]) -> Option<[u8; BLOCK]> {
    let start = ct.len().checked_sub(BLOCK)?;
    let mut b = [0u8; BLOCK];
    b.copy_from_slice(&ct[start..]);
    Some(b)
}
