//! The multi-buffer manager (`IMB_MGR`): allocation, CPU dispatch, and the
//! in-order job loop shared by the CBC+HMAC and GCM job front-ends.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr::NonNull;

use ipsec_mb_sys as sys;

use crate::Error;
use crate::gcm::{EncDecFn, PreFn};

/// The code path `init_mb_mgr_auto` picked for this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    /// No AES-NI: the library's software emulation (slow).
    NoAesNi,
    /// SSE4.2 + AES-NI.
    Sse,
    /// AVX.
    Avx,
    /// AVX2 (e.g. AMD Zen 2/3, Intel Haswell..Skylake client).
    Avx2,
    /// AVX-512 (with VAES/VPCLMULQDQ where the CPU has them).
    Avx512,
}

impl Arch {
    /// Lower-case name as logged and shown by `show stats`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoAesNi => "no-aesni",
            Self::Sse => "sse",
            Self::Avx => "avx",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }
}

impl core::fmt::Display for Arch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One intel-ipsec-mb manager, initialised for this CPU.
///
/// Holds the job API's per-thread scratch state (the multi-buffer lanes
/// of jobs in flight): `Send`, not `Sync`; create one per worker.
pub struct Manager {
    mgr: NonNull<sys::IMB_MGR>,
    arch: Arch,
    /// The stateless functions, captured at the end of `new`.
    direct: Option<Direct>,
    /// `!Sync` (the job API mutates the manager through `&mut self`
    /// only, but keep the type honest should a `&self` method ever reach
    /// the scratch state).
    _not_sync: PhantomData<core::cell::Cell<()>>,
}

// SAFETY: the manager is plain heap memory owned by this value; the library
// keeps no thread-local state tied to the allocating thread, so moving the
// owner to another thread is sound. It stays `!Sync`.
unsafe impl Send for Manager {}

impl core::fmt::Debug for Manager {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Manager")
            .field("arch", &self.arch)
            .finish_non_exhaustive()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        // SAFETY: `mgr` came from `alloc_mb_mgr` and is freed exactly once,
        // here; no job is in flight (every job function flushes before it
        // returns).
        unsafe { sys::free_mb_mgr(self.mgr.as_ptr()) };
    }
}

/// Version 1.3.0 as `imb_get_version` encodes it (`IMB_VERSION(1, 3, 0)`).
const MIN_VERSION: u32 = (1 << 16) | (3 << 8);

impl Manager {
    /// Allocates a manager and initialises it for the best code path of
    /// this CPU (`init_mb_mgr_auto`).
    ///
    /// # Errors
    /// [`Error::OldVersion`], [`Error::Alloc`], [`Error::NoAesNi`] if the
    /// CPU has no AES-NI (the library would emulate it, far slower than
    /// any alternative), [`Error::MissingFunction`].
    pub fn new() -> Result<Self, Error> {
        // SAFETY: plain query of a constant.
        let version = unsafe { sys::imb_get_version() };
        if version < MIN_VERSION {
            return Err(Error::OldVersion(version));
        }
        // SAFETY: flags 0 = defaults; returns NULL or an owned manager.
        let raw = unsafe { sys::alloc_mb_mgr(0) };
        let mgr = NonNull::new(raw).ok_or(Error::Alloc)?;
        let mut arch: sys::IMB_ARCH::Type = sys::IMB_ARCH::IMB_ARCH_NONE;
        // SAFETY: `mgr` is a freshly allocated manager; `arch` is a valid
        // out-pointer for the duration of the call.
        unsafe { sys::init_mb_mgr_auto(mgr.as_ptr(), &raw mut arch) };
        // From here on `this` frees the manager on every error path.
        let mut this = Self {
            mgr,
            arch: Arch::NoAesNi,
            direct: None,
            _not_sync: PhantomData,
        };
        // SAFETY: valid manager.
        let errno = unsafe { sys::imb_get_errno(mgr.as_ptr()) };
        if errno != 0 {
            return Err(Error::Job(errno));
        }
        this.arch = match arch {
            sys::IMB_ARCH::IMB_ARCH_SSE => Arch::Sse,
            sys::IMB_ARCH::IMB_ARCH_AVX => Arch::Avx,
            sys::IMB_ARCH::IMB_ARCH_AVX2 => Arch::Avx2,
            sys::IMB_ARCH::IMB_ARCH_AVX512 => Arch::Avx512,
            _ => return Err(Error::NoAesNi),
        };
        let t = this.table();
        if t.get_next_job.is_none()
            || t.submit_job.is_none()
            || t.get_completed_job.is_none()
            || t.flush_job.is_none()
        {
            return Err(Error::MissingFunction("job API"));
        }
        let direct = Direct::from_table(t, this.arch)?;
        this.direct = Some(direct);
        Ok(this)
    }

    /// The code path the library chose for this CPU.
    #[must_use]
    pub const fn arch(&self) -> Arch {
        self.arch
    }

    /// The manager's stateless functions (key expansion, one-block
    /// hashes, the GCM direct API), captured into a plain `Copy` value that
    /// outlives the manager and may be shared between threads.
    #[must_use]
    pub fn direct(&self) -> Direct {
        // `Some` from the end of `new` on: a `Manager` is only handed out
        // by a successful `new`.
        match self.direct {
            Some(d) => d,
            None => unreachable_direct(),
        }
    }

    /// The library's version string (`imb_get_version_str`).
    #[must_use]
    pub fn version() -> &'static str {
        // SAFETY: returns a pointer to a static NUL-terminated string.
        let p = unsafe { sys::imb_get_version_str() };
        if p.is_null() {
            return "?";
        }
        // SAFETY: non-null, NUL-terminated, static lifetime.
        unsafe { core::ffi::CStr::from_ptr(p) }
            .to_str()
            .unwrap_or("?")
    }

    /// The manager's function table (read-only view).
    pub(crate) fn table(&self) -> &sys::IMB_MGR {
        // SAFETY: `mgr` is valid for our lifetime; the table is only
        // written by `init_mb_mgr_auto`, before this point.
        unsafe { self.mgr.as_ref() }
    }

    /// Runs `n` jobs through the in-order job API and waits for all of
    /// them: `fill(i, job)` describes job `i`, `done(i, ok)` reports its
    /// completion (`ok`: status `IMB_STATUS_COMPLETED`). Jobs may complete
    /// in any order relative to the calls of `fill`, but each exactly once,
    /// before this returns.
    ///
    /// # Safety
    /// Every pointer `fill` stores in a job must stay valid (and the
    /// memory it designates unaliased by Rust references) until this
    /// function returns.
    pub(crate) unsafe fn run_jobs(
        &mut self,
        n: usize,
        mut fill: impl FnMut(usize, &mut sys::IMB_JOB),
        mut done: impl FnMut(usize, Result<(), Error>),
    ) {
        let m = self.mgr.as_ptr();
        let t = self.table();
        // Checked in `new`.
        let (Some(next), Some(submit), Some(completed), Some(flush)) = (
            t.get_next_job,
            t.submit_job,
            t.get_completed_job,
            t.flush_job,
        ) else {
            for i in 0..n {
                done(i, Err(Error::MissingFunction("job API")));
            }
            return;
        };
        let mut report = |job: *mut sys::IMB_JOB| {
            // SAFETY: a non-null job returned by the library points into
            // the manager's job array, valid until the next job call.
            let job = unsafe { &*job };
            let i = job.user_data as usize;
            let r = if job.status == sys::IMB_STATUS::IMB_STATUS_COMPLETED {
                Ok(())
            } else {
                // SAFETY: valid manager.
                Err(Error::Job(unsafe { sys::imb_get_errno(m) }))
            };
            done(i, r);
        };
        for i in 0..n {
            // SAFETY: valid manager; `get_next_job` always returns a free
            // slot (it flushes internally when the ring is full).
            let job = unsafe { next(m) };
            // SAFETY: the slot is ours until `submit_job`.
            let job_ref = unsafe { &mut *job };
            fill(i, job_ref);
            job_ref.user_data = i as *mut c_void;
            // SAFETY: the job was filled; the caller guarantees its
            // pointers stay valid until we return.
            let mut c = unsafe { submit(m) };
            while !c.is_null() {
                report(c);
                // SAFETY: valid manager.
                c = unsafe { completed(m) };
            }
        }
        loop {
            // SAFETY: valid manager; returns NULL once nothing is in flight.
            let c = unsafe { flush(m) };
            if c.is_null() {
                break;
            }
            report(c);
        }
    }
}

/// Never called: every `Manager` handed out has its `Direct`.
#[cold]
fn unreachable_direct() -> Direct {
    std::process::abort()
}

/// The stateless functions of a manager's table, for the CPU path it
/// chose: they take no manager argument (the key schedules and a stack
/// context carry all state), so this is `Copy + Send + Sync` and remains
/// valid after the manager is freed (they are code in the shared library).
#[derive(Clone, Copy)]
pub struct Direct {
    arch: Arch,
    pub(crate) gcm128_pre: PreFn,
    pub(crate) gcm256_pre: PreFn,
    pub(crate) gcm128_enc: EncDecFn,
    pub(crate) gcm256_enc: EncDecFn,
    pub(crate) gcm128_dec: EncDecFn,
    pub(crate) gcm256_dec: EncDecFn,
    pub(crate) keyexp_128: KeyExpFn,
    pub(crate) keyexp_256: KeyExpFn,
    pub(crate) sha1_one_block: OneBlockFn,
    pub(crate) sha256_one_block: OneBlockFn,
    pub(crate) sha384_one_block: OneBlockFn,
    pub(crate) sha512_one_block: OneBlockFn,
}

pub(crate) type KeyExpFn = unsafe extern "C" fn(*const c_void, *mut c_void, *mut c_void);
pub(crate) type OneBlockFn = unsafe extern "C" fn(*const c_void, *mut c_void);

impl core::fmt::Debug for Direct {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Direct")
            .field("arch", &self.arch)
            .finish_non_exhaustive()
    }
}

impl Direct {
    fn from_table(t: &sys::IMB_MGR, arch: Arch) -> Result<Self, Error> {
        let miss = Error::MissingFunction;
        Ok(Self {
            arch,
            gcm128_pre: t.gcm128_pre.ok_or(miss("gcm128_pre"))?,
            gcm256_pre: t.gcm256_pre.ok_or(miss("gcm256_pre"))?,
            gcm128_enc: t.gcm128_enc.ok_or(miss("gcm128_enc"))?,
            gcm256_enc: t.gcm256_enc.ok_or(miss("gcm256_enc"))?,
            gcm128_dec: t.gcm128_dec.ok_or(miss("gcm128_dec"))?,
            gcm256_dec: t.gcm256_dec.ok_or(miss("gcm256_dec"))?,
            keyexp_128: t.keyexp_128.ok_or(miss("keyexp_128"))?,
            keyexp_256: t.keyexp_256.ok_or(miss("keyexp_256"))?,
            sha1_one_block: t.sha1_one_block.ok_or(miss("sha1_one_block"))?,
            sha256_one_block: t.sha256_one_block.ok_or(miss("sha256_one_block"))?,
            sha384_one_block: t.sha384_one_block.ok_or(miss("sha384_one_block"))?,
            sha512_one_block: t.sha512_one_block.ok_or(miss("sha512_one_block"))?,
        })
    }

    /// The code path these functions belong to.
    #[must_use]
    pub const fn arch(&self) -> Arch {
        self.arch
    }
}
