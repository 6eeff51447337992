//! DPDK's negative-errno returns as a typed error.

use std::ffi::CStr;

/// What a DPDK call reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `EINVAL`: an argument DPDK rejected.
    #[error("{op}: invalid argument")]
    InvalidArgument {
        /// The DPDK call that failed.
        op: &'static str,
    },
    /// `ENOMEM`/`ENOSPC`: no memory (hugepages, memzones, mbufs).
    #[error("{op}: out of memory")]
    NoMemory {
        /// The DPDK call that failed.
        op: &'static str,
    },
    /// `ENODEV`: no such port or device.
    #[error("{op}: no such device")]
    NoDevice {
        /// The DPDK call that failed.
        op: &'static str,
    },
    /// `ENOTSUP`/`EOPNOTSUPP`: the driver does not support it.
    #[error("{op}: not supported by the driver")]
    NotSupported {
        /// The DPDK call that failed.
        op: &'static str,
    },
    /// `EEXIST`: a name is taken (mempool, ring, memzone).
    #[error("{op}: already exists")]
    AlreadyExists {
        /// The DPDK call that failed.
        op: &'static str,
    },
    /// `EALREADY`/`EBUSY`: the EAL is already initialised, or the object is busy.
    #[error("{op}: busy or already done")]
    Busy {
        /// The DPDK call that failed.
        op: &'static str,
    },
    /// Any other errno, with DPDK's own message.
    #[error("{op}: {message} (errno {errno})")]
    Other {
        /// The DPDK call that failed.
        op: &'static str,
        /// The positive errno value.
        errno: i32,
        /// `rte_strerror(errno)`.
        message: String,
    },
    /// A flow rule refused by the driver (`rte_flow_*`), with its message.
    #[error("{op}: {message}")]
    Flow {
        /// The DPDK call that failed.
        op: &'static str,
        /// The positive errno value (`rte_errno`).
        errno: i32,
        /// The driver's message and the errno's meaning.
        message: String,
    },
    /// A string argument holds a NUL byte.
    #[error("{op}: argument contains a NUL byte")]
    NulInArgument {
        /// The call that could not be made.
        op: &'static str,
    },
}

/// Result of a DPDK operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps an errno (positive or negative, as DPDK returns either) of `op`.
    #[must_use]
    pub fn from_errno(op: &'static str, errno: i32) -> Self {
        let errno = errno.saturating_abs();
        match errno {
            libc::EINVAL => Self::InvalidArgument { op },
            libc::ENOMEM | libc::ENOSPC | libc::ENOBUFS => Self::NoMemory { op },
            libc::ENODEV => Self::NoDevice { op },
            libc::ENOTSUP => Self::NotSupported { op },
            libc::EEXIST => Self::AlreadyExists { op },
            libc::EALREADY | libc::EBUSY => Self::Busy { op },
            _ => Self::Other {
                op,
                errno,
                message: strerror(errno),
            },
        }
    }

    /// The error of `op`, read from `rte_errno` after a call that returned
    /// NULL or -1.
    #[must_use]
    pub fn last(op: &'static str) -> Self {
        // SAFETY: rte_errno_w reads the calling thread's TLS errno; no
        // preconditions.
        let errno = unsafe { dpdk_sys::rte_errno_w() };
        Self::from_errno(op, errno)
    }
}

/// Maps a DPDK return code (`< 0` is `-errno`) to a `Result`.
pub(crate) fn check(op: &'static str, rc: i32) -> Result<i32> {
    if rc < 0 {
        Err(Error::from_errno(op, rc))
    } else {
        Ok(rc)
    }
}

fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string that stays valid until the next call on this
    // thread; we copy it out at once.
    let msg = unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(errno)) };
    msg.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_names_the_operation() {
        assert_eq!(
            Error::from_errno("rte_eth_dev_configure", -libc::EINVAL),
            Error::InvalidArgument {
                op: "rte_eth_dev_configure"
            }
        );
        assert_eq!(
            Error::from_errno("x", libc::ENOMEM),
            Error::NoMemory { op: "x" }
        );
        let other = Error::from_errno("rte_eal_init", -libc::EACCES);
        assert!(matches!(other, Error::Other { errno, .. } if errno == libc::EACCES));
        assert!(other.to_string().starts_with("rte_eal_init: "));
    }
}
