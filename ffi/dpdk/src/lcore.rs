//! Lcores and the time-stamp counter.

/// An EAL logical core id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LcoreId(pub u32);

impl LcoreId {
    /// The lcore id of the calling thread (`u32::MAX` for a non-EAL thread).
    #[must_use]
    pub fn current() -> Self {
        // SAFETY: reads a thread-local; no preconditions.
        Self(unsafe { dpdk_sys::rte_lcore_id_w() })
    }
}

impl std::fmt::Display for LcoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lcore {}", self.0)
    }
}

/// The time-stamp counter (`rte_rdtsc`).
#[inline]
#[must_use]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no preconditions.
    unsafe { dpdk_sys::rte_rdtsc_w() }
}

/// TSC ticks per second, as the EAL measured them at start-up.
#[must_use]
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value the EAL computed; returns 0 before init.
    unsafe { dpdk_sys::rte_get_tsc_hz() }
}
