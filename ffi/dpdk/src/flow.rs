//! Flow rules (`rte_flow`): steer matching packets of a port to one of its
//! rx queues.
//!
//! Only what the appliance needs: "IPv4/IPv6 packets from `src` to `dst`
//! that are ESP (optionally with one SPI) or UDP to one port go to rx queue
//! `q`". A rule is a [`Flow`] that destroys itself on drop and keeps its
//! [`Port`] open until then.
//!
//! The header structures inside DPDK's flow items are packed wire headers,
//! opaque in the bindings: their bytes are written here in wire format
//! (network byte order), at the offsets of RFC 791 / RFC 8200 / RFC 768 /
//! RFC 4303.
//!
//! Drivers differ in what they accept: ESP with an SPI is matched only by
//! some NICs; `net_tap` does rules as kernel TC flower filters under a
//! `multiq` qdisc (no ESP item: match the IP protocol instead, see
//! [`FlowL4::Esp`]); drivers without `rte_flow` (`net_af_packet`,
//! `net_memif`, `net_null`, `net_ring`) refuse every rule. Every refusal
//! is an [`Error::Flow`] carrying the driver's own message.

use std::ffi::CStr;
use std::net::IpAddr;
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::port::Port;

/// What follows the IP header in a [`FlowMatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowL4 {
    /// ESP (IP protocol 50). `Some(spi)`: only that SPI, with DPDK's ESP
    /// item (not every driver has it); `None`: any SPI, by the IP
    /// protocol field alone.
    Esp {
        /// The SPI to match, if any.
        spi: Option<u32>,
    },
    /// UDP to a destination port (NAT-T: 4500).
    Udp {
        /// The destination port.
        dst_port: u16,
    },
}

/// The packets a rule matches: IPv4 or IPv6 from `src` (any source when
/// `None`) to `dst`, with `l4`. `src` and `dst` must be of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowMatch {
    /// Source address (the peer).
    pub src: Option<IpAddr>,
    /// Destination address (ours).
    pub dst: IpAddr,
    /// ESP or UDP.
    pub l4: FlowL4,
}

impl std::fmt::Display for FlowMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.src {
            Some(s) => write!(f, "{s} -> {}", self.dst)?,
            None => write!(f, "any -> {}", self.dst)?,
        }
        match self.l4 {
            FlowL4::Esp { spi: Some(spi) } => write!(f, " esp spi {spi:#x}"),
            FlowL4::Esp { spi: None } => write!(f, " esp"),
            FlowL4::Udp { dst_port } => write!(f, " udp dport {dst_port}"),
        }
    }
}

const IPPROTO_UDP: u8 = 17;
const IPPROTO_ESP: u8 = 50;

/// One installed flow rule of a port. Destroyed on drop.
#[derive(Debug)]
pub struct Flow {
    port: Port,
    raw: NonNull<dpdk_sys::rte_flow>,
    matched: FlowMatch,
    queue: u16,
}

// SAFETY: an rte_flow handle is an opaque token owned by this value; the
// ethdev flow API may be called from any thread (it is not a datapath
// call and we never call it concurrently for one handle: Flow is not Sync
// and `destroy` takes it by value).
unsafe impl Send for Flow {}

impl Flow {
    /// What the rule matches.
    #[must_use]
    pub fn matched(&self) -> &FlowMatch {
        &self.matched
    }

    /// The rx queue it steers to.
    #[must_use]
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Destroys the rule, reporting the driver's error (drop ignores it).
    ///
    /// # Errors
    /// [`Error::Flow`] from `rte_flow_destroy`.
    pub fn destroy(self) -> Result<()> {
        let r = destroy_raw(&self.port, self.raw);
        std::mem::forget(self);
        r
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        let _ = destroy_raw(&self.port, self.raw);
    }
}

fn destroy_raw(port: &Port, raw: NonNull<dpdk_sys::rte_flow>) -> Result<()> {
    let mut err = dpdk_sys::rte_flow_error::default();
    // SAFETY: raw was returned by rte_flow_create on this port and has not
    // been destroyed (each Flow destroys it exactly once: in `destroy`,
    // which forgets the value, or in Drop); err is a valid out-pointer.
    let rc = unsafe { dpdk_sys::rte_flow_destroy(port.id().0, raw.as_ptr(), &mut err) };
    if rc < 0 {
        return Err(flow_error("rte_flow_destroy", rc, &err));
    }
    Ok(())
}

/// The DPDK error of a failed flow call: the driver's message, or
/// `rte_strerror` when it gave none.
fn flow_error(op: &'static str, rc: i32, err: &dpdk_sys::rte_flow_error) -> Error {
    let errno = if rc < 0 {
        rc.saturating_abs()
    } else {
        // SAFETY: rte_errno_w reads this thread's TLS errno.
        unsafe { dpdk_sys::rte_errno_w() }.saturating_abs()
    };
    let message = if err.message.is_null() {
        None
    } else {
        // SAFETY: a non-null message is a NUL-terminated string owned by
        // the driver (static, or valid until the next flow call on this
        // thread); it is copied out at once.
        Some(
            unsafe { CStr::from_ptr(err.message) }
                .to_string_lossy()
                .into_owned(),
        )
    };
    let message = match message {
        Some(m) if !m.is_empty() => m,
        _ => strerror(errno),
    };
    Error::Flow {
        op,
        errno,
        message: format!("{message} (errno {errno})"),
    }
}

/// `rte_strerror(errno)`.
fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a NUL-terminated string that stays
    // valid until the next call on this thread; it is copied out at once.
    unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(errno)) }
        .to_string_lossy()
        .into_owned()
}

/// The spec and mask bytes of one item, kept alive for the create call.
#[derive(Default)]
struct Items {
    ipv4: [dpdk_sys::rte_flow_item_ipv4; 2],
    ipv6: [dpdk_sys::rte_flow_item_ipv6; 2],
    udp: [dpdk_sys::rte_flow_item_udp; 2],
    esp: [dpdk_sys::rte_flow_item_esp; 2],
}

/// A flow item's spec/mask or an action's conf, as DPDK takes it.
fn ptr<T>(r: &T) -> *const core::ffi::c_void {
    std::ptr::from_ref(r).cast()
}

/// Writes `value` at `offset` of a header blob and all-ones in the mask.
fn set(spec: &mut [u8], mask: &mut [u8], offset: usize, value: &[u8]) {
    let end = offset + value.len();
    if let (Some(s), Some(m)) = (spec.get_mut(offset..end), mask.get_mut(offset..end)) {
        s.copy_from_slice(value);
        m.fill(0xff);
    }
}

impl Port {
    /// Installs a rule sending what `m` matches to rx queue `queue`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a queue the port does not have or
    /// addresses of two families; [`Error::Flow`] with the driver's
    /// message when it refuses the rule (no `rte_flow` support, a pattern
    /// it cannot match, the kernel refusing the TC filter of `net_tap`).
    pub fn flow_to_queue(&self, m: &FlowMatch, queue: u16) -> Result<Flow> {
        if queue >= self.config().rx_queues {
            return Err(Error::InvalidArgument {
                op: "rte_flow_create: queue beyond the configured rx queues",
            });
        }
        let v6 = m.dst.is_ipv6();
        if m.src.is_some_and(|s| s.is_ipv6() != v6) {
            return Err(Error::InvalidArgument {
                op: "rte_flow_create: source and destination of two families",
            });
        }
        let proto = match m.l4 {
            FlowL4::Esp { .. } => IPPROTO_ESP,
            FlowL4::Udp { .. } => IPPROTO_UDP,
        };
        let mut it = Items::default();
        {
            let [spec, mask] = &mut it.ipv4;
            let (s, k) = (
                &mut spec.hdr._bindgen_opaque_blob,
                &mut mask.hdr._bindgen_opaque_blob,
            );
            // RFC 791: protocol at byte 9, source 12..16, destination 16..20.
            set(s, k, 9, &[proto]);
            if let Some(IpAddr::V4(src)) = m.src {
                set(s, k, 12, &src.octets());
            }
            if let IpAddr::V4(dst) = m.dst {
                set(s, k, 16, &dst.octets());
            }
        }
        {
            let [spec, mask] = &mut it.ipv6;
            let (s, k) = (
                &mut spec.hdr._bindgen_opaque_blob,
                &mut mask.hdr._bindgen_opaque_blob,
            );
            // RFC 8200: next header at byte 6, source 8..24, destination 24..40.
            set(s, k, 6, &[proto]);
            if let Some(IpAddr::V6(src)) = m.src {
                set(s, k, 8, &src.octets());
            }
            if let IpAddr::V6(dst) = m.dst {
                set(s, k, 24, &dst.octets());
            }
        }
        {
            let [spec, mask] = &mut it.udp;
            // RFC 768: destination port at bytes 2..4.
            if let FlowL4::Udp { dst_port } = m.l4 {
                set(
                    &mut spec.hdr._bindgen_opaque_blob,
                    &mut mask.hdr._bindgen_opaque_blob,
                    2,
                    &dst_port.to_be_bytes(),
                );
            }
        }
        {
            let [spec, mask] = &mut it.esp;
            // RFC 4303: the SPI is the first four bytes.
            if let FlowL4::Esp { spi: Some(spi) } = m.l4 {
                set(
                    &mut spec.hdr._bindgen_opaque_blob,
                    &mut mask.hdr._bindgen_opaque_blob,
                    0,
                    &spi.to_be_bytes(),
                );
            }
        }
        let item = |ty, spec: *const core::ffi::c_void, mask: *const core::ffi::c_void| {
            dpdk_sys::rte_flow_item {
                type_: ty,
                spec,
                last: std::ptr::null(),
                mask,
            }
        };
        let null = std::ptr::null();
        use dpdk_sys::rte_flow_item_type as t;
        let mut pattern = Vec::with_capacity(4);
        pattern.push(item(t::RTE_FLOW_ITEM_TYPE_ETH, null, null));
        if v6 {
            pattern.push(item(
                t::RTE_FLOW_ITEM_TYPE_IPV6,
                ptr(&it.ipv6[0]),
                ptr(&it.ipv6[1]),
            ));
        } else {
            pattern.push(item(
                t::RTE_FLOW_ITEM_TYPE_IPV4,
                ptr(&it.ipv4[0]),
                ptr(&it.ipv4[1]),
            ));
        }
        match m.l4 {
            FlowL4::Udp { .. } => pattern.push(item(
                t::RTE_FLOW_ITEM_TYPE_UDP,
                ptr(&it.udp[0]),
                ptr(&it.udp[1]),
            )),
            FlowL4::Esp { spi: Some(_) } => pattern.push(item(
                t::RTE_FLOW_ITEM_TYPE_ESP,
                ptr(&it.esp[0]),
                ptr(&it.esp[1]),
            )),
            FlowL4::Esp { spi: None } => {}
        }
        pattern.push(item(t::RTE_FLOW_ITEM_TYPE_END, null, null));

        let action_queue = dpdk_sys::rte_flow_action_queue { index: queue };
        use dpdk_sys::rte_flow_action_type as a;
        let actions = [
            dpdk_sys::rte_flow_action {
                type_: a::RTE_FLOW_ACTION_TYPE_QUEUE,
                conf: ptr(&action_queue),
            },
            dpdk_sys::rte_flow_action {
                type_: a::RTE_FLOW_ACTION_TYPE_END,
                conf: null,
            },
        ];
        let mut attr = dpdk_sys::rte_flow_attr::default();
        attr.set_ingress(1);
        let mut err = dpdk_sys::rte_flow_error::default();
        // SAFETY: attr, the END-terminated pattern and actions arrays and
        // every spec/mask/conf they point to live until the call returns
        // (DPDK copies what it keeps); err is a valid out-pointer.
        let raw = unsafe {
            dpdk_sys::rte_flow_create(
                self.id().0,
                &attr,
                pattern.as_ptr(),
                actions.as_ptr(),
                &mut err,
            )
        };
        match NonNull::new(raw) {
            Some(raw) => Ok(Flow {
                port: self.clone(),
                raw,
                matched: *m,
                queue,
            }),
            None => Err(flow_error("rte_flow_create", 0, &err)),
        }
    }
}
