//! AES-CBC + HMAC for ESP on intel-ipsec-mb's job API, one burst at a
//! time ([`run_cbc_batch`]).
//!
//! CBC encryption and HMAC are serial within a packet, so one packet at a
//! time leaves most of the SIMD lanes idle; the job API interleaves up to
//! 8/16 packets per lane set (multi-buffer). The worker therefore prepares
//! every packet of a burst (padding, IV, header), submits all of them in
//! one pass, then finishes each (ICV placed or checked).
//!
//! Same construction as [`super::AesCbcHmac`], byte for byte: the IV comes
//! from the same per-SA [`super::CbcIvGenerator`], the ICV covers
//! `SPI | seq-low | IV | ciphertext` and, with ESN, the high 32 bits of the
//! sequence number ([RFC 4303 § 3.3.2.1]). The job API hashes one
//! contiguous range, so those 4 bytes are written where the ICV goes (the
//! ICV is at least 12 bytes) and the range extended over them: on seal the
//! tag then overwrites them, on open the received ICV is copied out first.
//!
//! A transform of this kind also carries the `aws-lc-rs` + `ring` engine
//! ([`super::AesCbcHmac`]) for single packets outside a burst
//! ([`EspTransform::seal`] / [`EspTransform::open`]: fragments,
//! originated packets, tests), so it needs no manager there.
//!
//! [RFC 4303 § 3.3.2.1]: https://www.rfc-editor.org/rfc/rfc4303#section-3.3.2.1

use ipsec_mb::{CbcHmacJob, CbcHmacKey, Direct, HashAlg, Manager};

use super::cbc::IV_LEN;
use super::{AesCbcHmac, CryptoError, ESP_HEADER_LEN, EspTransform, Integrity, seq_hi};

const BLOCK: usize = 16;

/// Packets submitted to the library per pass of [`run_cbc_batch`] (a
/// burst of up to this many jobs lives on the stack).
pub const CBC_BATCH: usize = 32;

/// AES-128/256-CBC + truncated HMAC for one SA direction on
/// intel-ipsec-mb (bursts) with the `aws-lc-rs`/`ring` engine beside it
/// (single packets).
pub struct MbCbcHmac {
    key: CbcHmacKey,
    soft: AesCbcHmac,
    icv_len: usize,
}

impl core::fmt::Debug for MbCbcHmac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MbCbcHmac")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl MbCbcHmac {
    /// Expands the AES key (16 or 32 bytes) and precomputes the HMAC
    /// states for `integ`, for both engines.
    ///
    /// # Errors
    /// [`CryptoError::BadKeyLength`] / [`CryptoError::KeySetup`].
    pub fn new(
        api: &Direct,
        enc_key: &[u8],
        integ: Integrity,
        auth_key: &[u8],
        iv_seed: &[u8; 16],
    ) -> Result<Self, CryptoError> {
        let soft = AesCbcHmac::new(enc_key, integ, auth_key, iv_seed)?;
        let hash = match integ {
            Integrity::HmacSha1_96 => HashAlg::Sha1,
            Integrity::HmacSha256_128 => HashAlg::Sha256,
            Integrity::HmacSha384_192 => HashAlg::Sha384,
            Integrity::HmacSha512_256 => HashAlg::Sha512,
        };
        let key = CbcHmacKey::new(api, enc_key, hash, auth_key, integ.icv_len())
            .map_err(|_| CryptoError::KeySetup)?;
        Ok(Self {
            key,
            soft,
            icv_len: integ.icv_len(),
        })
    }

    /// The job for sealing or opening the whole ESP packet `esp` (SPI to
    /// last ICV byte). Seal: writes the IV. Both: with `esn`, writes the
    /// high sequence bits over the ICV's first 4 bytes (open copies the
    /// received ICV out first).
    fn job<'a>(
        &'a self,
        seq: u64,
        esn: bool,
        open: bool,
        esp: &'a mut [u8],
    ) -> Result<CbcHmacJob<'a>, CryptoError> {
        let icv_len = self.icv_len;
        let min = ESP_HEADER_LEN + IV_LEN + icv_len;
        if esp.len() < min + BLOCK || !(esp.len() - min).is_multiple_of(BLOCK) {
            return Err(CryptoError::BadLength);
        }
        let covered = esp.len() - icv_len;
        let mut iv = [0u8; IV_LEN];
        let mut tag = [0u8; 64];
        if open {
            iv.copy_from_slice(&esp[ESP_HEADER_LEN..ESP_HEADER_LEN + IV_LEN]);
            tag[..icv_len].copy_from_slice(&esp[covered..]);
        } else {
            iv = self.soft.iv(seq)?;
            esp[ESP_HEADER_LEN..ESP_HEADER_LEN + IV_LEN].copy_from_slice(&iv);
        }
        let hash_len = if esn {
            esp[covered..covered + 4].copy_from_slice(&seq_hi(seq).to_be_bytes());
            covered + 4
        } else {
            covered
        };
        Ok(CbcHmacJob {
            key: &self.key,
            iv,
            buf: esp,
            cipher_offset: ESP_HEADER_LEN + IV_LEN,
            cipher_len: covered - ESP_HEADER_LEN - IV_LEN,
            hash_offset: 0,
            hash_len,
            tag,
            open,
            result: Ok(()),
        })
    }
}

impl EspTransform for MbCbcHmac {
    fn iv_len(&self) -> usize {
        IV_LEN
    }
    fn icv_len(&self) -> usize {
        self.icv_len
    }
    fn pad_align(&self) -> usize {
        BLOCK
    }
    #[inline]
    fn seal(&self, seq: u64, esn: bool, esp: &mut [u8]) -> Result<(), CryptoError> {
        self.soft.seal(seq, esn, esp)
    }
    #[inline]
    fn open(&self, seq: u64, esn: bool, esp: &mut [u8]) -> Result<(), CryptoError> {
        self.soft.open(seq, esn, esp)
    }
}

/// One packet's operation for [`run_cbc_batch`].
#[derive(Debug)]
pub struct CbcOp<'a> {
    /// The SA direction's transform.
    pub transform: &'a MbCbcHmac,
    /// The whole ESP packet, SPI to the last ICV byte: sealed (IV, ciphertext,
    /// ICV written) or opened (ICV checked, then decrypted) in place.
    pub esp: &'a mut [u8],
    /// The full 64-bit sequence number.
    pub seq: u64,
    /// Extended sequence numbers on the SA.
    pub esn: bool,
    /// `true`: verify and decrypt; `false`: encrypt and authenticate.
    pub open: bool,
}

/// Seals or opens every operation of `ops` through `mgr`'s job API,
/// [`CBC_BATCH`] at a time, and writes the outcome of the `i`-th into
/// `out[i]` (operations past `out.len()` are not run; a `None` is a
/// [`CryptoError::BadLength`], so the `i`-th outcome always belongs to
/// the `i`-th item). Returns how many ran.
///
/// Outcomes as [`EspTransform::seal`] / [`EspTransform::open`]:
/// [`CryptoError::BadLength`] for a malformed length (nothing touched),
/// [`CryptoError::AuthFailed`] when the ICV does not verify (compared in
/// constant time; the library decrypts in the same pass, so the data is
/// then unspecified and the caller drops the packet), and
/// [`CryptoError::Engine`] if the library failed a job.
///
/// No allocation: the jobs of one pass live in a fixed array.
pub fn run_cbc_batch<'a>(
    mgr: &mut Manager,
    ops: impl IntoIterator<Item = Option<CbcOp<'a>>>,
    out: &mut [Result<(), CryptoError>],
) -> usize {
    let mut ops = ops.into_iter();
    let mut done = 0;
    while done < out.len() {
        let mut jobs: [Option<CbcHmacJob<'a>>; CBC_BATCH] = Default::default();
        let mut n = 0;
        for op in ops.by_ref() {
            match op.map(|op| op.transform.job(op.seq, op.esn, op.open, op.esp)) {
                Some(Ok(j)) => jobs[n] = Some(j),
                Some(Err(e)) => out[done + n] = Err(e),
                None => out[done + n] = Err(CryptoError::BadLength),
            }
            n += 1;
            if n == CBC_BATCH || done + n == out.len() {
                break;
            }
        }
        if n == 0 {
            break;
        }
        mgr.run_cbc_hmac_slots(&mut jobs[..n]);
        for (slot, o) in jobs[..n].iter_mut().zip(&mut out[done..done + n]) {
            let Some(j) = slot else { continue };
            *o = match j.result {
                Ok(()) if !j.open => {
                    // RFC 2404 § 2 / RFC 4868 § 2.1.1: the leftmost bits.
                    let tl = j.key.tag_len();
                    let at = j.buf.len() - tl;
                    j.buf[at..].copy_from_slice(&j.tag[..tl]);
                    Ok(())
                }
                Ok(()) => Ok(()),
                Err(ipsec_mb::Error::AuthFailed) => Err(CryptoError::AuthFailed),
                Err(ipsec_mb::Error::BadLength) => Err(CryptoError::BadLength),
                Err(_) => Err(CryptoError::Engine),
            };
        }
        done += n;
    }
    done
}
