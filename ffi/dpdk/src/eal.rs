//! The Environment Abstraction Layer: initialised once per process.

use std::ffi::{CString, c_char, c_int};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::lcore::LcoreId;

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// The initialised EAL of this process.
///
/// Cloning is cheap (an `Arc`); every [`Mempool`](crate::Mempool) and
/// [`Port`](crate::Port) keeps a clone, so `rte_eal_cleanup` runs exactly
/// once, after the last of them is gone and every launched lcore returned.
#[derive(Debug, Clone)]
pub struct Eal {
    _inner: Arc<EalInner>,
}

#[derive(Debug)]
struct EalInner;

impl Eal {
    /// The NUMA socket of an lcore (0 on a machine with one).
    #[must_use]
    pub fn lcore_socket(&self, lcore: u32) -> u32 {
        // SAFETY: the EAL is initialised (we hold an Eal); an lcore id out
        // of range makes DPDK return 0, not read out of bounds.
        unsafe { dpdk_sys::rte_lcore_to_socket_id(lcore) }
    }

    /// Runs `rte_eal_init` with `args` (without the program name).
    ///
    /// Tests must pass `--no-pci` and a `--file-prefix` unique to the
    /// process; the appliance builds its arguments from its configuration.
    ///
    /// # Errors
    /// [`Error::Busy`] when the EAL of this process was initialised before
    /// (DPDK supports one initialisation per process), [`Error::NulInArgument`]
    /// for an argument holding a NUL byte, or what `rte_eal_init` reported.
    pub fn init<I, S>(args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(Error::Busy { op: "rte_eal_init" });
        }
        let mut argv: Vec<*mut c_char> = Vec::new();
        for arg in std::iter::once("vpn")
            .map(str::to_owned)
            .chain(args.into_iter().map(|a| a.as_ref().to_owned()))
        {
            let c = CString::new(arg).map_err(|_| Error::NulInArgument { op: "rte_eal_init" })?;
            // DPDK may keep pointers into argv (it parses in place), so the
            // strings live for the rest of the process: one small leak, once.
            argv.push(c.into_raw());
        }
        let argc = c_int::try_from(argv.len())
            .map_err(|_| Error::InvalidArgument { op: "rte_eal_init" })?;
        let argv = argv.leak();
        // SAFETY: argv holds argc valid, NUL-terminated, writable C strings
        // that are never freed; this is the only rte_eal_init call of the
        // process (guarded by INITIALISED).
        let rc = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if rc < 0 {
            return Err(Error::last("rte_eal_init"));
        }
        Ok(Self {
            _inner: Arc::new(EalInner),
        })
    }

    /// The lcore running `main` (the control thread).
    #[must_use]
    pub fn main_lcore(&self) -> LcoreId {
        // SAFETY: the EAL is initialised (we hold an Eal).
        LcoreId(unsafe { dpdk_sys::rte_get_main_lcore() })
    }

    /// Every enabled lcore except the main one, in id order.
    #[must_use]
    pub fn worker_lcores(&self) -> Vec<LcoreId> {
        let mut lcores = Vec::new();
        // SAFETY: the EAL is initialised; rte_get_next_lcore only reads the
        // lcore configuration. Starting from u32::MAX (-1) is DPDK's idiom.
        let mut id = unsafe { dpdk_sys::rte_get_next_lcore(u32::MAX, 1, 0) };
        while id < dpdk_sys::RTE_MAX_LCORE {
            lcores.push(LcoreId(id));
            // SAFETY: as above.
            id = unsafe { dpdk_sys::rte_get_next_lcore(id, 1, 0) };
        }
        lcores
    }

    /// Runs `work` on the worker `lcore` (pinned by the EAL).
    ///
    /// # Errors
    /// [`Error::Busy`] when that lcore is still running an earlier job.
    pub fn launch<F>(&self, lcore: LcoreId, work: F) -> Result<Launched>
    where
        F: FnOnce() -> i32 + Send + 'static,
    {
        type Job = Box<dyn FnOnce() -> i32 + Send>;
        unsafe extern "C" fn trampoline(arg: *mut std::ffi::c_void) -> c_int {
            // SAFETY: arg is the Box<Job> leaked by launch below, handed to
            // exactly one trampoline call.
            let job = unsafe { Box::from_raw(arg.cast::<Job>()) };
            job()
        }
        let job: Box<Job> = Box::new(Box::new(work));
        let arg = Box::into_raw(job);
        // SAFETY: trampoline has the lcore_function_t signature; arg stays
        // valid until the trampoline takes it back. On failure DPDK did not
        // start the job, so we reclaim arg ourselves.
        let rc = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg.cast(), lcore.0) };
        if rc < 0 {
            // SAFETY: the launch failed, so the trampoline never ran and
            // never will: arg is still ours.
            drop(unsafe { Box::from_raw(arg) });
            return Err(Error::from_errno("rte_eal_remote_launch", rc));
        }
        Ok(Launched {
            lcore,
            _eal: self.clone(),
        })
    }
}

impl Drop for EalInner {
    fn drop(&mut self) {
        // SAFETY: no Eal clone is left, so no Mempool or Port exists; wait
        // for launched lcores, then release the EAL's resources once.
        unsafe {
            dpdk_sys::rte_eal_mp_wait_lcore();
            dpdk_sys::rte_eal_cleanup();
        }
    }
}

/// A job running on a worker lcore; [`Launched::join`] waits for it.
#[derive(Debug)]
#[must_use = "join the lcore to get its return value"]
pub struct Launched {
    lcore: LcoreId,
    _eal: Eal,
}

impl Launched {
    /// The lcore the job runs on.
    #[must_use]
    pub fn lcore(&self) -> LcoreId {
        self.lcore
    }

    /// Waits for the job and returns its value.
    pub fn join(self) -> i32 {
        // SAFETY: the EAL is initialised and the lcore id came from it.
        unsafe { dpdk_sys::rte_eal_wait_lcore(self.lcore.0) }
    }
}
