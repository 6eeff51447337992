//! AES-GCM: key expansion (`IMB_AESxxx_GCM_PRE`), the direct single-buffer
//! API (`gcmxxx_enc` / `gcmxxx_dec`, called through pointers captured from
//! the manager) and the job-API front-end [`Manager::run_gcm`].

use core::ptr;

use ipsec_mb_sys as sys;

use crate::{Direct, Error, Manager};

/// GCM IV length: salt (4) || explicit IV (8), RFC 4106 § 4; the library
/// appends the 32-bit block counter itself.
pub const GCM_IV_LEN: usize = 12;
/// GCM tag length (the only one we use: RFC 4106's "-16").
pub const GCM_TAG_LEN: usize = 16;

pub(crate) type EncDecFn = unsafe extern "C" fn(
    *const sys::gcm_key_data,
    *mut sys::gcm_context_data,
    *mut u8,
    *const u8,
    u64,
    *const u8,
    *const u8,
    u64,
    *mut u8,
    u64,
);

/// An expanded AES-128/256-GCM key plus the direct-API functions of the
/// manager it was expanded with.
///
/// The key schedule and GHASH powers (`gcm_key_data`, up to 1 KiB) live in
/// one 64-byte aligned heap block, zeroised on drop. `Send + Sync`: the
/// direct API keeps its per-call state in a stack `gcm_context_data`.
pub struct GcmKey {
    data: Box<sys::gcm_key_data>,
    enc: EncDecFn,
    dec: EncDecFn,
    key_len: usize,
}

impl core::fmt::Debug for GcmKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material.
        f.debug_struct("GcmKey")
            .field("key_len", &self.key_len)
            .finish_non_exhaustive()
    }
}

impl Drop for GcmKey {
    fn drop(&mut self) {
        let p: *mut sys::gcm_key_data = &raw mut *self.data;
        // SAFETY: `p` points to our own boxed, initialised `gcm_key_data`
        // of `size_of` bytes; any byte pattern is valid for it (arrays of
        // u8 and a union of arrays of u8).
        let bytes = unsafe {
            core::slice::from_raw_parts_mut(p.cast::<u8>(), size_of::<sys::gcm_key_data>())
        };
        zeroize::Zeroize::zeroize(bytes);
    }
}

impl GcmKey {
    /// Expands a 16- or 32-byte AES key for GCM with the code path of
    /// the manager `api` was taken from.
    ///
    /// # Errors
    /// [`Error::BadKeyLength`].
    pub fn new(api: &Direct, key: &[u8]) -> Result<Self, Error> {
        let (pre, enc, dec) = match key.len() {
            16 => (api.gcm128_pre, api.gcm128_enc, api.gcm128_dec),
            32 => (api.gcm256_pre, api.gcm256_enc, api.gcm256_dec),
            _ => return Err(Error::BadKeyLength),
        };
        let mut data = Box::<sys::gcm_key_data>::default();
        // SAFETY: `key` holds `key.len()` bytes matching the chosen
        // function's key size; `data` is a valid, 64-byte aligned
        // `gcm_key_data` to write the schedule into.
        unsafe { pre(key.as_ptr().cast(), &raw mut *data) };
        Ok(Self {
            data,
            enc,
            dec,
            key_len: key.len(),
        })
    }

    /// AES key length in bytes (16 or 32).
    #[must_use]
    pub const fn key_len(&self) -> usize {
        self.key_len
    }

    pub(crate) fn raw(&self) -> *const sys::gcm_key_data {
        &raw const *self.data
    }

    /// Encrypts `in_out` in place under `iv` (salt || explicit IV),
    /// authenticating `aad` too, and returns the tag.
    #[inline]
    #[must_use]
    pub fn seal(&self, iv: &[u8; GCM_IV_LEN], aad: &[u8], in_out: &mut [u8]) -> [u8; GCM_TAG_LEN] {
        let mut tag = [0u8; GCM_TAG_LEN];
        // SAFETY: see `crypt`.
        unsafe { self.crypt(self.enc, iv, aad, in_out, &mut tag) };
        tag
    }

    /// Verifies `tag` over `aad` and the ciphertext `in_out` and decrypts
    /// it in place. The tag is compared in constant time; on a mismatch
    /// the ciphertext is restored (CTR mode is its own inverse), so no
    /// unauthenticated plaintext is left in `in_out`.
    ///
    /// # Errors
    /// [`Error::AuthFailed`].
    #[inline]
    pub fn open(
        &self,
        iv: &[u8; GCM_IV_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; GCM_TAG_LEN],
    ) -> Result<(), Error> {
        let mut computed = [0u8; GCM_TAG_LEN];
        // SAFETY: see `crypt`.
        unsafe { self.crypt(self.dec, iv, aad, in_out, &mut computed) };
        if crate::tag_eq(&computed, tag) {
            return Ok(());
        }
        // Re-encrypt: the keystream is the same, so this gives back the
        // ciphertext exactly. Failure path only.
        let mut scratch = [0u8; GCM_TAG_LEN];
        // SAFETY: see `crypt`.
        unsafe { self.crypt(self.enc, iv, aad, in_out, &mut scratch) };
        Err(Error::AuthFailed)
    }

    /// # Safety
    /// `f` must be `self.enc` or `self.dec` (functions of the key size of
    /// `self.data`).
    #[inline]
    unsafe fn crypt(
        &self,
        f: EncDecFn,
        iv: &[u8; GCM_IV_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &mut [u8; GCM_TAG_LEN],
    ) {
        let mut ctx = sys::gcm_context_data::default();
        let p = in_out.as_mut_ptr();
        // SAFETY: the key data was expanded for `f`'s key size; `ctx` is a
        // fresh context on our stack; in-place operation (dst == src) is
        // allowed by the library; `in_out`, `iv` (12 bytes), `aad` and
        // `tag` (16 bytes) are valid for the lengths passed; usize -> u64
        // is lossless on the 64-bit targets the library exists for.
        unsafe {
            f(
                self.raw(),
                &raw mut ctx,
                p,
                p,
                in_out.len() as u64,
                iv.as_ptr(),
                aad.as_ptr(),
                aad.len() as u64,
                tag.as_mut_ptr(),
                GCM_TAG_LEN as u64,
            );
        }
    }
}

pub(crate) type PreFn = unsafe extern "C" fn(*const core::ffi::c_void, *mut sys::gcm_key_data);

/// Direction of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Seal,
    Open,
}

/// One AES-GCM operation for [`Manager::run_gcm`]: `buf[range]` is
/// encrypted or decrypted in place.
#[derive(Debug)]
pub struct GcmJob<'a> {
    /// The expanded key.
    pub key: &'a GcmKey,
    /// Salt || explicit IV.
    pub iv: [u8; GCM_IV_LEN],
    /// Additional authenticated data (8 or 12 bytes in ESP).
    pub aad: &'a [u8],
    /// The buffer holding the data.
    pub buf: &'a mut [u8],
    /// Offset of the data in `buf`.
    pub offset: usize,
    /// Length of the data.
    pub len: usize,
    /// Seal: receives the tag. Open: the tag to verify.
    pub tag: [u8; GCM_TAG_LEN],
    /// `true` to decrypt and verify `tag`, `false` to encrypt and write it.
    pub open: bool,
    /// Outcome, written by [`Manager::run_gcm`].
    pub result: Result<(), Error>,
}

impl Manager {
    /// Seals or opens every job of `jobs` through the job API. Each job's
    /// `result` says how it went; an open whose tag does not verify is
    /// [`Error::AuthFailed`] (tags compared in constant time) and its
    /// data is then unspecified (decrypted but not authentic: the caller
    /// drops it).
    pub fn run_gcm(&mut self, jobs: &mut [GcmJob<'_>]) {
        // Validate first; only valid jobs are submitted.
        for j in jobs.iter_mut() {
            j.result = if j
                .offset
                .checked_add(j.len)
                .is_some_and(|e| e <= j.buf.len())
            {
                Ok(())
            } else {
                Err(Error::BadLength)
            };
        }
        let n = jobs.len();
        let base = jobs.as_mut_ptr();
        // Computed tags of opens go to a side array so the expected tag
        // stays intact for the comparison; sized to the burst.
        let mut computed = [[0u8; GCM_TAG_LEN]; MAX_JOB_BURST];
        for chunk_start in (0..n).step_by(MAX_JOB_BURST) {
            let chunk_len = (n - chunk_start).min(MAX_JOB_BURST);
            let cbase = computed.as_mut_ptr();
            let mut idx = [0usize; MAX_JOB_BURST];
            let mut m = 0;
            for k in 0..chunk_len {
                // SAFETY: `chunk_start + k < n`.
                if unsafe { (*base.add(chunk_start + k)).result.is_ok() } {
                    idx[m] = chunk_start + k;
                    m += 1;
                }
            }
            let fill = |i: usize, job: &mut sys::IMB_JOB| {
                // SAFETY: `idx[i]` < n; jobs are distinct elements, each
                // touched only here and in `done`, never concurrently.
                let j = unsafe { &mut *base.add(idx[i]) };
                let dir = if j.open { Dir::Open } else { Dir::Seal };
                let kp = j.key.raw().cast::<core::ffi::c_void>();
                job.enc_keys = kp;
                job.dec_keys = kp;
                job.key_len_in_bytes = j.key.key_len() as u64;
                let p = j.buf.as_mut_ptr();
                job.__bindgen_anon_1.src = p;
                // The library writes the output at `dst` itself (the
                // offset applies to `src` only); in place, so `dst` is the
                // data's first byte.
                job.__bindgen_anon_2.dst = p.wrapping_add(j.offset);
                job.__bindgen_anon_3.cipher_start_src_offset_in_bytes = j.offset as u64;
                job.__bindgen_anon_4.msg_len_to_cipher_in_bytes = j.len as u64;
                job.hash_start_src_offset_in_bytes = j.offset as u64;
                job.__bindgen_anon_5.msg_len_to_hash_in_bytes = j.len as u64;
                job.iv = j.iv.as_ptr();
                job.iv_len_in_bytes = GCM_IV_LEN as u64;
                job.auth_tag_output = match dir {
                    Dir::Seal => j.tag.as_mut_ptr(),
                    // SAFETY: `i < MAX_JOB_BURST`.
                    Dir::Open => unsafe { (*cbase.add(i)).as_mut_ptr() },
                };
                job.auth_tag_output_len_in_bytes = GCM_TAG_LEN as u64;
                job.u.GCM.aad = j.aad.as_ptr().cast();
                job.u.GCM.aad_len_in_bytes = j.aad.len() as u64;
                job.u.GCM.ctx = ptr::null_mut();
                job.cipher_mode = sys::IMB_CIPHER_MODE::IMB_CIPHER_GCM;
                job.hash_alg = sys::IMB_HASH_ALG::IMB_AUTH_AES_GMAC;
                (job.cipher_direction, job.chain_order) = match dir {
                    Dir::Seal => (
                        sys::IMB_CIPHER_DIRECTION::IMB_DIR_ENCRYPT,
                        sys::IMB_CHAIN_ORDER::IMB_ORDER_CIPHER_HASH,
                    ),
                    Dir::Open => (
                        sys::IMB_CIPHER_DIRECTION::IMB_DIR_DECRYPT,
                        sys::IMB_CHAIN_ORDER::IMB_ORDER_HASH_CIPHER,
                    ),
                };
            };
            let done = |i: usize, r: Result<(), Error>| {
                // SAFETY: as in `fill`.
                let j = unsafe { &mut *base.add(idx[i]) };
                j.result = r.and_then(|()| {
                    if !j.open {
                        return Ok(());
                    }
                    // SAFETY: `i < MAX_JOB_BURST`; the job is complete.
                    let c = unsafe { &*cbase.add(i) };
                    if crate::tag_eq(c, &j.tag) {
                        Ok(())
                    } else {
                        Err(Error::AuthFailed)
                    }
                });
            };
            // SAFETY: every pointer stored by `fill` designates memory
            // borrowed by `jobs` (exclusively, through `&mut`) or the local
            // `computed`, both alive until `run_jobs` returns; ranges were
            // validated above.
            unsafe { self.run_jobs(m, fill, done) };
        }
    }
}

/// Jobs handed to the library per round (the library's own burst limit).
pub(crate) const MAX_JOB_BURST: usize = sys::IMB_MAX_BURST_SIZE as usize;
