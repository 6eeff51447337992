//! Software prefetch hints for the workers' hot path.
//!
//! A worker handles a burst of packets that (with many tunnels) each need
//! a different SA, key schedule, GHASH table, counter block and policer,
//! all cold in memory. Looking the next packets up first and asking the
//! CPU to start loading their state while the current packet is being
//! encrypted hides that latency (VPP and DPDK's examples do the same with
//! `clib_prefetch_load` / `rte_prefetch0`). This crate is the hint and
//! nothing else: it never changes what a program computes.
//!
//! Why a crate of its own under `ffi/`: the prefetch instruction is only
//! reachable through `core::arch` intrinsics, which need an `unsafe`
//! block, and the project keeps every `unsafe` block in `ffi/` with a
//! `// SAFETY:` note. The pure dataplane crates (`worker`, `dataplane`,
//! `fib`) stay `#![forbid(unsafe_code)]` and call the safe functions
//! here; unlike `dpdk`'s `rte_prefetch0` shim, these need no DPDK and
//! compile to one instruction each, inlined.
//!
//! Guarantees: every function takes a reference (so the address is that
//! of a live object), never reads or writes through it, never faults,
//! allocates, locks or panics. On targets other than x86-64 they do
//! nothing.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

/// Bytes of a cache line on the targets we run on (x86-64).
pub const CACHE_LINE: usize = 64;

/// Asks the CPU to bring the cache line holding `addr` into all cache
/// levels (a hint: it may be ignored).
#[inline(always)]
fn line(addr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only needs SSE, which every x86-64 CPU has
    // (it is part of the x86-64 baseline the crate is compiled for).
    // PREFETCHT0 is a hint: it never dereferences `addr` in the
    // language's sense, never faults (not even on an unmapped address)
    // and changes no architectural state, so there is no memory-safety
    // condition for the caller to uphold; our callers pass addresses
    // inside live objects anyway.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(addr.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Prefetches the cache line holding the start of `*r` (enough for a
/// value that fits in one line, or whose first line is what is read
/// first).
#[inline(always)]
pub fn read<T: ?Sized>(r: &T) {
    line((r as *const T).cast::<u8>());
}

/// Prefetches every cache line `*r` spans (`size_of_val(r)` bytes from
/// its address; a 1 KiB SA is 16 hints).
#[inline(always)]
pub fn read_all<T: ?Sized>(r: &T) {
    let start = (r as *const T).cast::<u8>();
    read_bytes(start, size_of_val(r));
}

/// Prefetches the first `len` bytes of `*r` (clamped to its size): for a
/// struct whose hot part is at its start.
#[inline(always)]
pub fn read_prefix<T: ?Sized>(r: &T, len: usize) {
    let start = (r as *const T).cast::<u8>();
    read_bytes(start, len.min(size_of_val(r)));
}

/// One hint per cache line of `[start, start + len)`.
#[inline(always)]
fn read_bytes(start: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    // From the line holding the first byte to the line holding the last
    // (`wrapping_` arithmetic: a hint address carries no pointer-offset
    // precondition).
    let misalign = start as usize & (CACHE_LINE - 1);
    let mut off = 0;
    while off < len + misalign {
        line(start.wrapping_add(off).wrapping_sub(misalign));
        off += CACHE_LINE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(64))]
    struct Big([u8; 1000]);

    #[test]
    fn hints_change_nothing() {
        let b = Big([7; 1000]);
        read(&b);
        read_all(&b);
        read_prefix(&b, 200);
        read_prefix(&b, 5000);
        read_all(&b.0[3..900]);
        read_all(&[0u8; 0][..]);
        let v = vec![1u32; 4096];
        read_all(&v[..]);
        read(&v[4095]);
        assert!(b.0.iter().all(|&x| x == 7));
        assert_eq!(v.iter().map(|&x| u64::from(x)).sum::<u64>(), 4096);
    }
}
