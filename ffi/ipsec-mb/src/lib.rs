//! A thin safe layer over intel-ipsec-mb 1.3 (through `ipsec-mb-sys`).
//!
//! Layer: below the dataplane's ESP transforms, beside `ring`/`aws-lc-rs`.
//! It knows AES-GCM, AES-CBC and HMAC-SHA1/SHA2 on byte slices; it knows
//! nothing about ESP, SAs or packet buffers.
//!
//! Three parts:
//! * [`Manager`]: one `IMB_MGR`, allocated and initialised for the best
//!   code path of this CPU (`init_mb_mgr_auto`: SSE, AVX, AVX2 or
//!   AVX-512, see [`Arch`]). It carries the job API's scratch state (the
//!   out-of-order multi-buffer lanes), so it is `Send` but not `Sync`: one
//!   per worker thread.
//! * [`Direct`]: the manager's stateless functions (key expansion,
//!   one-block hashes, the GCM *direct API*) captured once into a `Copy`
//!   value, usable from any thread and after the manager is gone.
//! * [`GcmKey`]: an expanded AES-GCM key (`gcm_key_data`, 64-byte aligned,
//!   boxed, zeroised on drop) holding its [`Direct`] functions, so
//!   [`GcmKey::seal`] / [`GcmKey::open`] need no manager and work from any
//!   thread (`Send + Sync`).
//! * The job API ([`Manager::run_cbc_hmac`], [`Manager::run_gcm`]): up to
//!   any number of independent operations submitted in one call; the
//!   library interleaves them across its SIMD lanes (multi-buffer), which
//!   is what makes CBC encryption and HMAC fast (both are serial within a
//!   buffer). Keys for it: [`CbcHmacKey`] (expanded AES encrypt/decrypt
//!   schedules and the HMAC inner/outer hash states, zeroised on drop).
//!
//! Guarantees: no allocation, lock or syscall per operation (keys and the
//! manager allocate once, at setup); no panic on any input length; tags
//! are compared in constant time ([`subtle`]); on an authentication failure
//! in [`GcmKey::open`] the ciphertext is restored, so no unauthenticated
//! plaintext is left behind.
//!
//! All `unsafe` code of this binding lives here, each block with a
//! `// SAFETY:` comment naming the invariants it relies on.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

mod cbc;
mod gcm;
mod mgr;

pub use cbc::{CbcHmacJob, CbcHmacKey, CbcHmacSlot, HashAlg};
pub use gcm::{GCM_IV_LEN, GCM_TAG_LEN, GcmJob, GcmKey};
pub use mgr::{Arch, Direct, Manager};

/// Constant-time equality of two tags of the same length (up to 64
/// bytes; different lengths are unequal). The bytes are folded with XOR/OR
/// eight at a time, without branching on them, and only the folded word
/// goes through [`subtle`]: `subtle`'s slice comparison puts every byte
/// through an optimisation barrier, which costs more than a 16-byte tag
/// comparison should on the decap path.
#[inline]
pub(crate) fn tag_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    if a.len() != b.len() {
        return false;
    }
    let mut acc = 0u64;
    let (ac, ar) = a.as_chunks::<8>();
    let (bc, br) = b.as_chunks::<8>();
    for (x, y) in ac.iter().zip(bc) {
        acc |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in ar.iter().zip(br) {
        acc |= u64::from(x ^ y);
    }
    acc.ct_eq(&0).into()
}

/// What failed in the binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `alloc_mb_mgr` returned NULL (out of memory).
    #[error("intel-ipsec-mb: alloc_mb_mgr failed")]
    Alloc,
    /// The installed library is older than the 1.3 we were built for.
    #[error("intel-ipsec-mb: library version {0:#x} is older than 1.3")]
    OldVersion(u32),
    /// `init_mb_mgr_auto` found no usable code path (no AES-NI).
    #[error("intel-ipsec-mb: no AES-NI code path on this CPU")]
    NoAesNi,
    /// The manager's table lacks a function we need.
    #[error("intel-ipsec-mb: the manager has no `{0}` function")]
    MissingFunction(&'static str),
    /// A key has the wrong length for the algorithm.
    #[error("intel-ipsec-mb: key has the wrong length")]
    BadKeyLength,
    /// A buffer, range or tag length is invalid for the operation.
    #[error("intel-ipsec-mb: invalid length or range")]
    BadLength,
    /// A tag did not verify.
    #[error("intel-ipsec-mb: authentication tag did not verify")]
    AuthFailed,
    /// The library rejected a job (its `imb_get_errno`, or the job status).
    #[error("intel-ipsec-mb: job failed (error {0})")]
    Job(i32),
}

#[cfg(test)]
mod tests {
    use super::tag_eq;

    #[test]
    fn tag_eq_finds_every_differing_byte_and_length() {
        for len in [0usize, 1, 7, 8, 12, 16, 24, 32, 33, 64] {
            let a: Vec<u8> = (0..len)
                .map(|i| u8::try_from(i * 37 % 251).unwrap())
                .collect();
            assert!(tag_eq(&a, &a.clone()), "len {len}");
            for i in 0..len {
                for bit in 0..8 {
                    let mut b = a.clone();
                    b[i] ^= 1 << bit;
                    assert!(!tag_eq(&a, &b), "len {len} byte {i} bit {bit}");
                }
            }
            assert!(!tag_eq(&a, &a[..len.saturating_sub(1)]) || len == 0);
        }
    }
}
