//! AES-CBC ([RFC 3602]) + HMAC-SHA1/SHA2 through the job API: keys
//! ([`CbcHmacKey`]: expanded AES schedules and precomputed HMAC
//! inner/outer states) and [`Manager::run_cbc_hmac`].
//!
//! [RFC 3602]: https://www.rfc-editor.org/rfc/rfc3602

use ipsec_mb_sys as sys;

use crate::gcm::MAX_JOB_BURST;
use crate::{Direct, Error, Manager};

/// AES block and CBC IV length.
const BLOCK: usize = 16;
/// Largest HMAC tag (SHA-512).
const MAX_TAG: usize = 64;

/// The HMAC hash functions ESP uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// SHA-1 (HMAC-SHA1-96, RFC 2404).
    Sha1,
    /// SHA-256 (HMAC-SHA2-256-128, RFC 4868).
    Sha256,
    /// SHA-384 (HMAC-SHA2-384-192, RFC 4868).
    Sha384,
    /// SHA-512 (HMAC-SHA2-512-256, RFC 4868).
    Sha512,
}

impl HashAlg {
    /// Hash block size in bytes (the HMAC key is padded to it).
    #[must_use]
    pub const fn block_len(self) -> usize {
        match self {
            Self::Sha1 | Self::Sha256 => 64,
            Self::Sha384 | Self::Sha512 => 128,
        }
    }

    /// Full digest length in bytes.
    #[must_use]
    pub const fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// The truncated tag length IPsec uses (RFC 2404, RFC 4868), which the
    /// library supports besides the full digest.
    #[must_use]
    pub const fn ipsec_tag_len(self) -> usize {
        match self {
            Self::Sha1 => 12,
            Self::Sha256 => 16,
            Self::Sha384 => 24,
            Self::Sha512 => 32,
        }
    }

    const fn imb(self) -> sys::IMB_HASH_ALG::Type {
        match self {
            Self::Sha1 => sys::IMB_HASH_ALG::IMB_AUTH_HMAC_SHA_1,
            Self::Sha256 => sys::IMB_HASH_ALG::IMB_AUTH_HMAC_SHA_256,
            Self::Sha384 => sys::IMB_HASH_ALG::IMB_AUTH_HMAC_SHA_384,
            Self::Sha512 => sys::IMB_HASH_ALG::IMB_AUTH_HMAC_SHA_512,
        }
    }
}

/// Expanded AES schedules and HMAC states, in one aligned block.
#[repr(C, align(64))]
struct KeyData {
    /// AES encryption round keys (up to 15 × 16 bytes for AES-256).
    enc: [u8; 240],
    /// AES decryption round keys (equivalent inverse cipher).
    dec: [u8; 240],
    /// Hash state after one block of `key ^ ipad`.
    ipad: [u8; MAX_TAG],
    /// Hash state after one block of `key ^ opad`.
    opad: [u8; MAX_TAG],
}

/// An AES-128/256-CBC key and an HMAC key, prepared for the job API.
/// Zeroised on drop. `Send + Sync` (plain data).
pub struct CbcHmacKey {
    data: Box<KeyData>,
    key_len: usize,
    hash: HashAlg,
    tag_len: usize,
}

impl core::fmt::Debug for CbcHmacKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CbcHmacKey")
            .field("key_len", &self.key_len)
            .field("hash", &self.hash)
            .field("tag_len", &self.tag_len)
            .finish_non_exhaustive()
    }
}

impl Drop for CbcHmacKey {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.data.enc.zeroize();
        self.data.dec.zeroize();
        self.data.ipad.zeroize();
        self.data.opad.zeroize();
    }
}

impl CbcHmacKey {
    /// Expands `aes_key` (16 or 32 bytes) and precomputes the HMAC states
    /// of `hmac_key` (at most one hash block) for tags of `tag_len` bytes
    /// (the IPsec truncation or the full digest).
    ///
    /// # Errors
    /// [`Error::BadKeyLength`], [`Error::BadLength`] for an unsupported
    /// tag length.
    pub fn new(
        api: &Direct,
        aes_key: &[u8],
        hash: HashAlg,
        hmac_key: &[u8],
        tag_len: usize,
    ) -> Result<Self, Error> {
        let keyexp = match aes_key.len() {
            16 => api.keyexp_128,
            32 => api.keyexp_256,
            _ => return Err(Error::BadKeyLength),
        };
        if hmac_key.len() > hash.block_len() {
            return Err(Error::BadKeyLength);
        }
        if tag_len != hash.ipsec_tag_len() && tag_len != hash.digest_len() {
            return Err(Error::BadLength);
        }
        let one_block = match hash {
            HashAlg::Sha1 => api.sha1_one_block,
            HashAlg::Sha256 => api.sha256_one_block,
            HashAlg::Sha384 => api.sha384_one_block,
            HashAlg::Sha512 => api.sha512_one_block,
        };
        let mut data = Box::new(KeyData {
            enc: [0; 240],
            dec: [0; 240],
            ipad: [0; MAX_TAG],
            opad: [0; MAX_TAG],
        });
        // SAFETY: `aes_key` has the length `keyexp` expects; `enc` and
        // `dec` hold 240 bytes, the AES-256 schedule size, 16-byte aligned
        // (the struct is 64-byte aligned and both sit at multiples of 16).
        unsafe {
            keyexp(
                aes_key.as_ptr().cast(),
                data.enc.as_mut_ptr().cast(),
                data.dec.as_mut_ptr().cast(),
            );
        }
        // RFC 2104 § 2: H(K ^ opad, H(K ^ ipad, text)); K zero-padded to
        // the block. The library takes the hash states after the first
        // block of each.
        let mut block = zeroize::Zeroizing::new([0u8; 128]);
        let bl = hash.block_len();
        for (pad, out) in [(0x36u8, &mut data.ipad), (0x5c, &mut data.opad)] {
            block[..bl].fill(pad);
            for (b, k) in block.iter_mut().zip(hmac_key) {
                *b ^= k;
            }
            // SAFETY: `block` holds a full block (64 or 128 bytes) for
            // this hash; `out` has room for the largest state (64 bytes).
            unsafe { one_block(block.as_ptr().cast(), out.as_mut_ptr().cast()) };
        }
        Ok(Self {
            data,
            key_len: aes_key.len(),
            hash,
            tag_len,
        })
    }

    /// Tag length in bytes.
    #[must_use]
    pub const fn tag_len(&self) -> usize {
        self.tag_len
    }

    /// The hash function.
    #[must_use]
    pub const fn hash(&self) -> HashAlg {
        self.hash
    }
}

/// One encrypt-then-MAC (seal) or MAC-then-decrypt (open) operation for
/// [`Manager::run_cbc_hmac`], in place in `buf`.
///
/// Seal: `buf[cipher]` is CBC-encrypted under `iv`, then `buf[hash]` (which
/// normally starts before and covers the ciphertext) is authenticated and
/// the tag written to `tag[..tag_len]`. Open: `buf[hash]` is authenticated
/// and compared (constant time) with `tag[..tag_len]`, and `buf[cipher]`
/// decrypted.
#[derive(Debug)]
pub struct CbcHmacJob<'a> {
    /// The keys.
    pub key: &'a CbcHmacKey,
    /// CBC IV.
    pub iv: [u8; BLOCK],
    /// The buffer.
    pub buf: &'a mut [u8],
    /// Offset of the CBC data in `buf`.
    pub cipher_offset: usize,
    /// Length of the CBC data (a multiple of 16; 0 for an HMAC-only job).
    pub cipher_len: usize,
    /// Offset of the authenticated data in `buf`.
    pub hash_offset: usize,
    /// Length of the authenticated data.
    pub hash_len: usize,
    /// Seal: receives the tag. Open: the tag to verify.
    pub tag: [u8; MAX_TAG],
    /// `true` to verify and decrypt, `false` to encrypt and authenticate.
    pub open: bool,
    /// Outcome, written by [`Manager::run_cbc_hmac`]. After a failed open
    /// the CBC data is unspecified (the library decrypts in the same pass);
    /// the caller drops it.
    pub result: Result<(), Error>,
}

impl CbcHmacJob<'_> {
    fn ranges_ok(&self) -> bool {
        let fits =
            |off: usize, len: usize| off.checked_add(len).is_some_and(|e| e <= self.buf.len());
        self.cipher_len.is_multiple_of(BLOCK)
            && fits(self.cipher_offset, self.cipher_len)
            && fits(self.hash_offset, self.hash_len)
    }
}

/// A place holding at most one [`CbcHmacJob`]: the job itself, or an
/// `Option` of it (a fixed array of slots, filled per burst, needs no
/// allocation and no `MaybeUninit`).
pub trait CbcHmacSlot<'a> {
    /// The job in this slot, if any.
    fn job(&mut self) -> Option<&mut CbcHmacJob<'a>>;
}

impl<'a> CbcHmacSlot<'a> for CbcHmacJob<'a> {
    #[inline]
    fn job(&mut self) -> Option<&mut Self> {
        Some(self)
    }
}

impl<'a> CbcHmacSlot<'a> for Option<CbcHmacJob<'a>> {
    #[inline]
    fn job(&mut self) -> Option<&mut CbcHmacJob<'a>> {
        self.as_mut()
    }
}

impl Manager {
    /// Runs every job of `jobs` through the job API (multi-buffer: the
    /// library interleaves up to 8/16 buffers per SIMD lane set). Each
    /// job's `result` says how it went.
    pub fn run_cbc_hmac(&mut self, jobs: &mut [CbcHmacJob<'_>]) {
        self.run_cbc_hmac_slots(jobs);
    }

    /// [`Manager::run_cbc_hmac`] over slots: empty slots (`None`) are
    /// skipped, so a caller can fill a fixed array of
    /// `Option<CbcHmacJob>` per burst.
    pub fn run_cbc_hmac_slots<'a, S: CbcHmacSlot<'a>>(&mut self, jobs: &mut [S]) {
        for j in jobs.iter_mut().filter_map(CbcHmacSlot::job) {
            j.result = if j.ranges_ok() {
                Ok(())
            } else {
                Err(Error::BadLength)
            };
        }
        let n = jobs.len();
        let base = jobs.as_mut_ptr();
        let mut computed = [[0u8; MAX_TAG]; MAX_JOB_BURST];
        for chunk_start in (0..n).step_by(MAX_JOB_BURST) {
            let chunk_len = (n - chunk_start).min(MAX_JOB_BURST);
            let cbase = computed.as_mut_ptr();
            let mut idx = [0usize; MAX_JOB_BURST];
            let mut m = 0;
            for k in 0..chunk_len {
                // SAFETY: `chunk_start + k < n`.
                let slot = unsafe { &mut *base.add(chunk_start + k) };
                if slot.job().is_some_and(|j| j.result.is_ok()) {
                    idx[m] = chunk_start + k;
                    m += 1;
                }
            }
            let fill = |i: usize, job: &mut sys::IMB_JOB| {
                // SAFETY: `idx[i] < n`; each slot is touched only here and
                // in `done`, never at the same time.
                let Some(j) = (unsafe { &mut *base.add(idx[i]) }).job() else {
                    return;
                };
                let k = &*j.key.data;
                job.enc_keys = k.enc.as_ptr().cast();
                job.dec_keys = k.dec.as_ptr().cast();
                job.key_len_in_bytes = j.key.key_len as u64;
                let p = j.buf.as_mut_ptr();
                job.__bindgen_anon_1.src = p;
                // The library writes the output at `dst` itself (the
                // offset applies to `src` only); in place, so `dst` is the
                // data's first byte.
                job.__bindgen_anon_2.dst = p.wrapping_add(j.cipher_offset);
                job.__bindgen_anon_3.cipher_start_src_offset_in_bytes = j.cipher_offset as u64;
                job.__bindgen_anon_4.msg_len_to_cipher_in_bytes = j.cipher_len as u64;
                job.hash_start_src_offset_in_bytes = j.hash_offset as u64;
                job.__bindgen_anon_5.msg_len_to_hash_in_bytes = j.hash_len as u64;
                job.iv = j.iv.as_ptr();
                job.iv_len_in_bytes = BLOCK as u64;
                job.auth_tag_output = if j.open {
                    // SAFETY: `i < MAX_JOB_BURST`.
                    unsafe { (*cbase.add(i)).as_mut_ptr() }
                } else {
                    j.tag.as_mut_ptr()
                };
                job.auth_tag_output_len_in_bytes = j.key.tag_len as u64;
                job.u.HMAC._hashed_auth_key_xor_ipad = k.ipad.as_ptr();
                job.u.HMAC._hashed_auth_key_xor_opad = k.opad.as_ptr();
                // No data to encrypt: authentication only (the library
                // rejects a zero-length CBC job).
                job.cipher_mode = if j.cipher_len == 0 {
                    sys::IMB_CIPHER_MODE::IMB_CIPHER_NULL
                } else {
                    sys::IMB_CIPHER_MODE::IMB_CIPHER_CBC
                };
                job.hash_alg = j.key.hash.imb();
                (job.cipher_direction, job.chain_order) = if j.open {
                    (
                        sys::IMB_CIPHER_DIRECTION::IMB_DIR_DECRYPT,
                        sys::IMB_CHAIN_ORDER::IMB_ORDER_HASH_CIPHER,
                    )
                } else {
                    (
                        sys::IMB_CIPHER_DIRECTION::IMB_DIR_ENCRYPT,
                        sys::IMB_CHAIN_ORDER::IMB_ORDER_CIPHER_HASH,
                    )
                };
            };
            let done = |i: usize, r: Result<(), Error>| {
                // SAFETY: as in `fill`.
                let Some(j) = (unsafe { &mut *base.add(idx[i]) }).job() else {
                    return;
                };
                j.result = r.and_then(|()| {
                    if !j.open {
                        return Ok(());
                    }
                    let tl = j.key.tag_len;
                    // SAFETY: `i < MAX_JOB_BURST`; the job is complete.
                    let c = unsafe { &*cbase.add(i) };
                    if crate::tag_eq(&c[..tl], &j.tag[..tl]) {
                        Ok(())
                    } else {
                        Err(Error::AuthFailed)
                    }
                });
            };
            // SAFETY: every pointer stored by `fill` designates memory
            // borrowed exclusively by `jobs` (buffers, IVs, tags), the keys
            // they borrow, or the local `computed`, all alive until
            // `run_jobs` returns; ranges were validated above.
            unsafe { self.run_jobs(m, fill, done) };
        }
    }
}
