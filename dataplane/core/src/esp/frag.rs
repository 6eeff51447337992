//! Fitting inner packets to the tunnel MTU before encryption
//! ([RFC 4459 § 5.2] pre-fragmentation; spec § 14.2, § 25.3).
//!
//! [`fit_to_mtu`] runs between routing and [`encap`](fn@super::encap) on an
//! inner packet:
//!
//! ```text
//!   inner ≤ MTU ──────────────────────────────► Fit::Fits        → encap(buf)
//!   IPv4, DF clear (or ignore_df) ────────────► Fit::Fragmented  → encap(buf), encap(out[..extra])
//!   IPv4 DF set / IPv6 ───────────────────────► Err(TooBig)      + ICMP in `icmp` → back to the source
//! ```
//!
//! Fragments are inner IPv4 fragments ([RFC 791 § 3.2]): each carries a
//! multiple of 8 data bytes (except the last), the right offset and MF,
//! a fresh header checksum, and only the options whose *copied* flag is
//! set (all options in the first fragment). DF is cleared in every
//! fragment. An inner packet that already is a fragment is split further
//! with offsets relative to the original datagram, the last piece keeping
//! its MF.
//!
//! IPv6 packets are never fragmented on the way ([RFC 8200 § 5]: only
//! sources fragment); they get an ICMPv6 "packet too big"
//! ([RFC 4443 § 3.2]). IPv4 packets with DF set get a "fragmentation
//! needed" ([RFC 1191 § 4]) unless the SA's policy ignores DF (spec
//! § 14.2: "ignore DF and fragment unconditionally"). ICMP errors are not
//! sent about ICMP errors, from or to non-unicast addresses
//! ([RFC 1812 § 4.3.2.7], [RFC 4443 § 2.4 (e)]); rate limiting them is the
//! caller's.
//!
//! No allocation: the caller lends a pool (`alloc`, e.g. an mbuf mempool)
//! and a fixed output array. On failure every buffer taken from the pool
//! is dropped (returned to its pool) before returning, and `out` holds
//! only `None`.
//!
//! [RFC 4459 § 5.2]: https://www.rfc-editor.org/rfc/rfc4459#section-5.2
//! [RFC 791 § 3.2]: https://www.rfc-editor.org/rfc/rfc791#section-3.2
//! [RFC 8200 § 5]: https://www.rfc-editor.org/rfc/rfc8200#section-5
//! [RFC 4443 § 3.2]: https://www.rfc-editor.org/rfc/rfc4443#section-3.2
//! [RFC 1191 § 4]: https://www.rfc-editor.org/rfc/rfc1191#section-4
//! [RFC 1812 § 4.3.2.7]: https://www.rfc-editor.org/rfc/rfc1812#section-4.3.2.7
//! [RFC 4443 § 2.4 (e)]: https://www.rfc-editor.org/rfc/rfc4443#section-2.4

use std::net::{Ipv4Addr, Ipv6Addr};

use netbuf::PacketBuffer;

use super::DropReason;
use super::sa::DfPolicy;
use crate::wire::{
    Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
    Ipv6Packet, Ipv6Repr, ipv4, ipv6,
};

/// TTL / hop limit of the ICMP errors we originate.
const ICMP_TTL: u8 = 64;

/// What [`fit_to_mtu`] needs to know about the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragConfig {
    /// The tunnel MTU ([`super::mtu::tunnel_mtu`]).
    pub mtu: u16,
    /// Fragment IPv4 packets even when DF is set (spec § 14.2).
    pub ignore_df: bool,
    /// Source address of the ICMPv4 errors we send (our inside address).
    pub icmp_src_v4: Ipv4Addr,
    /// Source address of the ICMPv6 errors we send.
    pub icmp_src_v6: Ipv6Addr,
}

impl FragConfig {
    /// DF is ignored when the SA's outer DF policy clears it anyway.
    #[must_use]
    pub fn ignore_df_for(policy: DfPolicy) -> bool {
        matches!(policy, DfPolicy::Clear)
    }
}

/// The outcome for a packet [`fit_to_mtu`] did not drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Fit {
    /// The packet fits; encapsulate it unchanged.
    Fits,
    /// The buffer now holds the first fragment and `out[..extra]` the
    /// others, in order; encapsulate each.
    Fragmented {
        /// Number of fragments placed in `out` (the total is `extra + 1`).
        extra: usize,
    },
}

/// Makes the inner packet in `buf` fit the tunnel MTU (see the module
/// doc).
///
/// `alloc` hands out empty buffers (from the worker's mempool); `out`
/// receives the fragments after the first and must hold `None`s.
///
/// # Errors
/// * [`DropReason::TooBig`]: IPv4 with DF set (and DF not ignored) or
///   IPv6; `icmp` then holds the ICMP error for the packet's source if
///   one is due and a buffer was available.
/// * [`DropReason::FragmentFailed`]: `alloc` ran dry, `out` is too small,
///   or a fragment buffer lacks room; nothing is kept.
/// * [`DropReason::InnerMalformed`]: not a consistent IP packet, or
///   malformed IPv4 options.
///
/// The caller counts the reason and frees `buf`, as for
/// [`encap`](fn@super::encap).
pub fn fit_to_mtu<B, F>(
    buf: &mut B,
    cfg: &FragConfig,
    alloc: &mut F,
    out: &mut [Option<B>],
    icmp: &mut Option<B>,
) -> Result<Fit, DropReason>
where
    B: PacketBuffer,
    F: FnMut() -> Option<B>,
{
    let p = buf.as_ref();
    match p.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(p).map_err(|_| DropReason::InnerMalformed)?;
            let total = usize::from(ip.total_len());
            let mtu = cfg.mtu.max(ipv4::MIN_MTU);
            if total <= usize::from(mtu) {
                return Ok(Fit::Fits);
            }
            if ip.dont_frag() && !cfg.ignore_df {
                *icmp = icmpv4_frag_needed(&p[..total], mtu, cfg.icmp_src_v4, alloc);
                return Err(DropReason::TooBig);
            }
            let extra = fragment_v4(buf, mtu, alloc, out)?;
            Ok(Fit::Fragmented { extra })
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(p).map_err(|_| DropReason::InnerMalformed)?;
            let total = ipv6::HEADER_LEN + usize::from(ip.payload_len());
            // A link below 1280 cannot exist for IPv6 (RFC 8200 § 5); the
            // outer path fragments what is left.
            let mtu = cfg.mtu.max(ipv6::MIN_MTU);
            if total <= usize::from(mtu) {
                return Ok(Fit::Fits);
            }
            *icmp = icmpv6_too_big(&p[..total], mtu, cfg.icmp_src_v6, alloc);
            Err(DropReason::TooBig)
        }
        _ => Err(DropReason::InnerMalformed),
    }
}

/// Clears DF in an inner IPv4 packet (the tunnel's "clear DF" option,
/// spec § 14.2 "Reset the Don't Fragment flag") and refreshes its header
/// checksum; returns whether the packet changed. IPv6 and malformed
/// packets are left alone.
pub fn clear_df(inner: &mut [u8]) -> bool {
    let Ok(mut ip) = Ipv4Packet::new_checked(&mut *inner) else {
        return false;
    };
    if ip.version() != 4 || !ip.dont_frag() {
        return false;
    }
    ip.set_dont_frag(false);
    ip.fill_checksum();
    true
}

/// Splits the IPv4 packet in `buf` into fragments of at most `mtu`
/// bytes; returns the number placed in `out`.
fn fragment_v4<B, F>(
    buf: &mut B,
    mtu: u16,
    alloc: &mut F,
    out: &mut [Option<B>],
) -> Result<usize, DropReason>
where
    B: PacketBuffer,
    F: FnMut() -> Option<B>,
{
    let p = buf.as_ref();
    let ip = Ipv4Packet::new_checked(p).map_err(|_| DropReason::InnerMalformed)?;
    let hl = usize::from(ip.header_len());
    let total = usize::from(ip.total_len());
    let orig_off = usize::from(ip.frag_offset_bytes());
    let orig_mf = ip.more_frags();
    let payload = &p[hl..total];

    // Header of the second and later fragments: the fixed header plus the
    // options with the copied flag (RFC 791 § 3.1).
    let mut hdr = [0u8; ipv4::MAX_HEADER_LEN];
    hdr[..ipv4::HEADER_LEN].copy_from_slice(&p[..ipv4::HEADER_LEN]);
    let hl_rest = ipv4::HEADER_LEN + copy_options(ip.options(), &mut hdr[ipv4::HEADER_LEN..])?;

    // RFC 791 § 3.2: every fragment but the last carries a multiple of 8
    // data bytes. mtu ≥ 68 and hl ≤ 60 guarantee at least 8.
    let mtu = usize::from(mtu);
    let first = (mtu.saturating_sub(hl)) / 8 * 8;
    let step = (mtu.saturating_sub(hl_rest)) / 8 * 8;
    if first == 0 || step == 0 || first >= payload.len() {
        return Err(DropReason::FragmentFailed);
    }
    let extra = (payload.len() - first).div_ceil(step);
    if extra > out.len() {
        return Err(DropReason::FragmentFailed);
    }

    for k in 0..extra {
        let start = first + k * step;
        let len = step.min(payload.len() - start);
        let last = start + len == payload.len();
        let Some(nb) = build_fragment(
            alloc,
            &hdr[..hl_rest],
            &payload[start..start + len],
            orig_off + start,
            if last { orig_mf } else { true },
        ) else {
            out[..k].iter_mut().for_each(|o| *o = None);
            return Err(DropReason::FragmentFailed);
        };
        out[k] = Some(nb);
    }

    // The first fragment stays in `buf`, all options kept.
    let cut = buf.as_ref().len() - (hl + first);
    if buf.trim_from_end(cut).is_err() {
        out[..extra].iter_mut().for_each(|o| *o = None);
        return Err(DropReason::FragmentFailed);
    }
    let mut h = Ipv4Packet::new_unchecked(buf.as_mut());
    set_frag_fields(&mut h, hl + first, orig_off, true);
    Ok(extra)
}

/// Copies the options whose copied flag is set into `dst`, padded with
/// End of Option List to a multiple of 4; returns the bytes written.
fn copy_options(opts: &[u8], dst: &mut [u8]) -> Result<usize, DropReason> {
    const EOL: u8 = 0;
    const NOP: u8 = 1;
    const COPIED: u8 = 0x80;
    let mut i = 0;
    let mut n = 0;
    while i < opts.len() {
        match opts[i] {
            EOL => break,
            NOP => i += 1,
            t => {
                let len = usize::from(*opts.get(i + 1).ok_or(DropReason::InnerMalformed)?);
                if len < 2 || i + len > opts.len() {
                    return Err(DropReason::InnerMalformed);
                }
                if t & COPIED != 0 {
                    let d = dst.get_mut(n..n + len).ok_or(DropReason::InnerMalformed)?;
                    d.copy_from_slice(&opts[i..i + len]);
                    n += len;
                }
                i += len;
            }
        }
    }
    let padded = n.next_multiple_of(4);
    dst.get_mut(n..padded)
        .ok_or(DropReason::InnerMalformed)?
        .fill(EOL);
    Ok(padded)
}

/// Writes total length, IHL-independent fragment fields (DF clear) and
/// the checksum of a fragment header.
fn set_frag_fields<T: AsRef<[u8]> + AsMut<[u8]>>(
    h: &mut Ipv4Packet<T>,
    total: usize,
    offset: usize,
    mf: bool,
) {
    h.set_total_len(u16::try_from(total).unwrap_or(u16::MAX));
    h.clear_flags();
    h.set_more_frags(mf);
    h.set_frag_offset_bytes(u16::try_from(offset).unwrap_or(u16::MAX));
    h.fill_checksum();
}

fn build_fragment<B, F>(
    alloc: &mut F,
    hdr: &[u8],
    data: &[u8],
    offset: usize,
    mf: bool,
) -> Option<B>
where
    B: PacketBuffer,
    F: FnMut() -> Option<B>,
{
    let mut nb = empty(alloc)?;
    let total = hdr.len() + data.len();
    let dst = nb.append(total).ok()?;
    dst[..hdr.len()].copy_from_slice(hdr);
    dst[hdr.len()..].copy_from_slice(data);
    let mut h = Ipv4Packet::new_unchecked(dst);
    h.set_header_len(u8::try_from(hdr.len()).unwrap_or(0));
    set_frag_fields(&mut h, total, offset, mf);
    Some(nb)
}

/// A buffer from the pool, emptied (a pool should hand out empty ones).
fn empty<B: PacketBuffer, F: FnMut() -> Option<B>>(alloc: &mut F) -> Option<B> {
    let mut nb = alloc()?;
    let len = nb.as_ref().len();
    nb.trim_from_end(len).ok()?;
    Some(nb)
}

/// Whether an IPv4 address may be the destination of an ICMP error
/// (RFC 1812 § 4.3.2.7: not to a broadcast, multicast, zero, loopback or
/// Class E source).
fn v4_unicast(a: Ipv4Addr) -> bool {
    !(a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_loopback()
        || a.octets()[0] >= 240)
}

/// Builds "fragmentation needed" for `invoking` into a pool buffer, or
/// `None` when none is due or no buffer is available.
fn icmpv4_frag_needed<B, F>(invoking: &[u8], mtu: u16, src: Ipv4Addr, alloc: &mut F) -> Option<B>
where
    B: PacketBuffer,
    F: FnMut() -> Option<B>,
{
    let ip = Ipv4Packet::new_checked(invoking).ok()?;
    // RFC 1812 § 4.3.2.7: not about a non-unicast datagram, a non-first
    // fragment, or an ICMP error message.
    if !v4_unicast(ip.src_addr()) || !v4_unicast(ip.dst_addr()) || ip.frag_offset_bytes() != 0 {
        return None;
    }
    if ip.protocol() == IpProtocol::Icmp {
        // Types 0, 8, 13–18 are queries; everything else in the
        // original registry (3, 4, 5, 11, 12) is an error.
        let t = *ip.payload().first()?;
        if matches!(t, 3 | 4 | 5 | 11 | 12) {
            return None;
        }
    }
    let msg = Icmpv4Repr::frag_needed(mtu, invoking);
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: ip.src_addr(),
        protocol: IpProtocol::Icmp,
        payload_len: msg.buffer_len(),
        ttl: ICMP_TTL,
        dscp: 0,
        ecn: 0,
        ident: 0,
        dont_frag: false,
    };
    let mut nb = empty(alloc)?;
    let dst = nb.append(repr.buffer_len() + msg.buffer_len()).ok()?;
    let (h, m) = dst.split_at_mut(repr.buffer_len());
    repr.emit(&mut Ipv4Packet::new_unchecked(h));
    msg.emit(&mut Icmpv4Packet::new_unchecked(m));
    Some(nb)
}

/// Builds "packet too big" for `invoking` into a pool buffer, or `None`
/// when none is due or no buffer is available.
fn icmpv6_too_big<B, F>(invoking: &[u8], mtu: u16, src: Ipv6Addr, alloc: &mut F) -> Option<B>
where
    B: PacketBuffer,
    F: FnMut() -> Option<B>,
{
    let ip = Ipv6Packet::new_checked(invoking).ok()?;
    let s = ip.src_addr();
    // RFC 4443 § 2.4 (e): not to an unspecified or multicast source;
    // "packet too big" is the one error also sent for a multicast
    // destination (e.2).
    if s.is_unspecified() || s.is_multicast() || s.is_loopback() {
        return None;
    }
    // § 2.4 (e.1): not about an ICMPv6 error message (types 0–127).
    if let Ok(ul) = ip.upper_layer()
        && ul.protocol == IpProtocol::Icmpv6
        && ul.fragment.is_none_or(|f| f.is_first())
        && invoking.get(ul.offset).is_some_and(|&t| t < 128)
    {
        return None;
    }
    let msg = Icmpv6Repr::packet_too_big(u32::from(mtu), invoking);
    let repr = Ipv6Repr {
        src_addr: src,
        dst_addr: s,
        next_header: IpProtocol::Icmpv6,
        payload_len: msg.buffer_len(),
        hop_limit: ICMP_TTL,
        dscp: 0,
        ecn: 0,
        flow_label: 0,
    };
    let mut nb = empty(alloc)?;
    let dst = nb.append(repr.buffer_len() + msg.buffer_len()).ok()?;
    let (h, m) = dst.split_at_mut(repr.buffer_len());
    repr.emit(&mut Ipv6Packet::new_unchecked(h));
    msg.emit(&mut Icmpv6Packet::new_unchecked(m), src, s);
    Some(nb)
}
