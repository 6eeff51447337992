//! ESP tunnel-mode encapsulation ([RFC 4303 § 3.1.2], § 3.3).
//!
//! Input: a buffer holding exactly one inner IPv4 or IPv6 packet
//! (trailing bytes beyond its length, e.g. Ethernet padding, are
//! trimmed). Output: the same buffer holding
//! `outer IP | [UDP] | ESP | IV | inner | padding | pad len | next hdr | ICV`.
//! The inner packet is never moved: headers go into the headroom, the
//! trailer and ICV into the tailroom, and encryption is in place.
//!
//! Outer header rules (RFC 4301 § 5.1.2.1 as updated by RFC 6040):
//! * TTL / hop limit 64 (a fresh header, not copied).
//! * DSCP copied from the inner header.
//! * ECN: RFC 6040 § 4.1 *normal mode*, i.e. the whole ECN field is
//!   copied, CE included. RFC 6040 replaced RFC 4301's rules with this
//!   one; the older RFC 3168 "limited functionality" (clear ECN) and the
//!   habit of resetting CE to ECT(0) are not used, because the
//!   decapsulator (ours and any RFC 6040 peer) re-derives CE correctly
//!   and the CE copy carries no information the inner header does not
//!   already expose.
//! * DF per [`DfPolicy`]: copied from an inner IPv4 packet by default.
//! * IPv4 identification from a per-SA counter; header checksum filled,
//!   or left to the NIC where the outside port offers that
//!   ([`OutboundSa::with_tx_checksum_offload`]).
//! * NAT-T ([RFC 3948]): UDP checksum 0 over IPv4 (§ 2.1); over IPv6 a
//!   zero UDP checksum is not allowed by default (RFC 8200 § 8.1), so it
//!   is computed.
//!
//! [RFC 4303 § 3.1.2]: https://www.rfc-editor.org/rfc/rfc4303#section-3.1.2
//! [RFC 3948]: https://www.rfc-editor.org/rfc/rfc3948

use netbuf::PacketBuffer;

use super::DropReason;
use super::hdr::{
    IPV4_LEN, IPV6_LEN, PROTO_IPIP, PROTO_IPV6, UDP_LEN, ipv4_fill_checksum, parse_ip, v6_addrs,
    v6_set_tc,
};
use super::sa::{DfPolicy, OutboundSa, SaCounters};
use crate::crypto::{CbcOp, CryptoError, EspTransform, seq_lo};
use crate::wire::{IpPair, UdpPacket};

/// Encapsulates the inner IP packet in `buf` for `sa` and updates the
/// SA's counters.
///
/// # Errors
/// A [`DropReason`]; the buffer content is then unspecified and the
/// caller frees it and counts the reason.
pub fn encap<B: PacketBuffer>(sa: &mut OutboundSa, buf: &mut B) -> Result<(), DropReason> {
    let mut pending = SaCounters::default();
    let r = encap_pending(sa, buf, &mut pending);
    sa.life.flush(&pending);
    r
}

/// [`encap`] accumulating counters in `pending` (flushed by the caller,
/// once per run of same-SA packets in a burst).
pub(crate) fn encap_pending<B: PacketBuffer>(
    sa: &mut OutboundSa,
    buf: &mut B,
    pending: &mut SaCounters,
) -> Result<(), DropReason> {
    let t = encap_begin_pending(sa, buf, pending)?;
    t.seal_inline(sa, buf)
}

/// What [`encap_begin`] leaves for the crypto step and [`EncapTicket::finish`]:
/// where the ESP packet starts and the sequence number it carries.
#[derive(Debug, Clone, Copy)]
pub struct EncapTicket {
    esp_off: usize,
    seq: u64,
    esn: bool,
    /// NAT-T over IPv6: the UDP checksum covers the ciphertext, so it is
    /// filled after the crypto.
    udp_v6: bool,
}

impl EncapTicket {
    /// Seals the packet with the SA's transform, one packet at a time,
    /// and finishes it.
    ///
    /// # Errors
    /// [`DropReason::CryptoFailure`].
    #[inline]
    pub fn seal_inline<B: PacketBuffer>(
        &self,
        sa: &OutboundSa,
        buf: &mut B,
    ) -> Result<(), DropReason> {
        sa.transform
            .seal(self.seq, self.esn, &mut buf.as_mut()[self.esp_off..])
            .map_err(|_| DropReason::CryptoFailure)?;
        self.finish(buf, Ok(()))
    }

    /// The sealing operation for a burst through the job API
    /// ([`run_cbc_batch`](crate::crypto::run_cbc_batch)), if the SA's transform is intel-ipsec-mb's
    /// CBC + HMAC; `pkt` is the buffer's bytes (`buf.as_mut()`).
    #[inline]
    #[must_use]
    pub fn op<'a>(&self, sa: &'a OutboundSa, pkt: &'a mut [u8]) -> Option<CbcOp<'a>> {
        Some(CbcOp {
            transform: sa.transform.cbc_mb()?,
            esp: pkt.get_mut(self.esp_off..)?,
            seq: self.seq,
            esn: self.esn,
            open: false,
        })
    }

    /// Completes the packet after the crypto step whose outcome is
    /// `sealed` (the IPv6 NAT-T UDP checksum covers the ciphertext).
    ///
    /// # Errors
    /// [`DropReason::CryptoFailure`] if `sealed` is an error.
    pub fn finish<B: PacketBuffer>(
        &self,
        buf: &mut B,
        sealed: Result<(), CryptoError>,
    ) -> Result<(), DropReason> {
        sealed.map_err(|_| DropReason::CryptoFailure)?;
        if self.udp_v6 {
            let pkt = buf.as_mut();
            let (iph, udp) = pkt.split_at_mut(IPV6_LEN);
            let (src, dst) = v6_addrs(iph);
            UdpPacket::new_unchecked(udp).fill_checksum(&IpPair::V6 { src, dst });
        }
        Ok(())
    }
}

/// The first half of [`encap`]: everything but the crypto (and the IPv6
/// NAT-T UDP checksum, which covers the ciphertext), for the worker that
/// submits a whole burst to the job API; the SA's counters are updated.
/// Then [`EncapTicket::seal_inline`], or [`EncapTicket::op`] in a
/// [`run_cbc_batch`](crate::crypto::run_cbc_batch) followed by [`EncapTicket::finish`].
///
/// # Errors
/// As [`encap`].
pub fn encap_begin<B: PacketBuffer>(
    sa: &mut OutboundSa,
    buf: &mut B,
) -> Result<EncapTicket, DropReason> {
    let mut pending = SaCounters::default();
    let r = encap_begin_pending(sa, buf, &mut pending);
    sa.life.flush(&pending);
    r
}

/// [`encap_begin`] accumulating counters in `pending`.
pub(crate) fn encap_begin_pending<B: PacketBuffer>(
    sa: &mut OutboundSa,
    buf: &mut B,
    pending: &mut SaCounters,
) -> Result<EncapTicket, DropReason> {
    // 1. The inner packet.
    let inner = parse_ip(buf.as_ref()).ok_or(DropReason::InnerMalformed)?;
    let extra = buf.as_ref().len() - inner.total_len;
    if extra > 0 {
        buf.trim_from_end(extra)
            .map_err(|_| DropReason::InnerMalformed)?;
    }
    let payload_len = inner.total_len;

    // 2. Hard lifetime (RFC 4301 § 4.4.2.1).
    if !sa.life.admits(pending) {
        return Err(DropReason::LifetimeExpired);
    }

    // 3. Sizes (RFC 4303 § 2.4: payload + pad + 2 aligned to the block,
    //    and to 4 bytes in any case).
    let align = sa.transform.pad_align();
    let iv_len = sa.transform.iv_len();
    let icv_len = sa.transform.icv_len();
    let pad_len = (align - (payload_len + 2) % align) % align;
    let tail = pad_len + 2 + icv_len;
    let tlen = usize::from(sa.template.len);
    let ip_len = usize::from(sa.template.ip_len);
    let head = tlen + iv_len;
    if buf.headroom() < head {
        return Err(DropReason::NoHeadroom);
    }
    if buf.tailroom() < tail {
        return Err(DropReason::NoTailroom);
    }
    let outer_total = head + payload_len + tail;
    let outer_len_field = if ip_len == IPV4_LEN {
        outer_total
    } else {
        outer_total - ip_len
    };
    let outer_len_field = u16::try_from(outer_len_field).map_err(|_| DropReason::NoTailroom)?;

    // 4. Sequence number (RFC 4303 § 3.3.3): never cycles; exhaustion
    //    means the SA must be rekeyed.
    //    With a counter shared between workers, from this worker's
    //    reservation ([`super::shared`]).
    let next = sa.next_seq()?;

    // 5. Trailer: monotonic padding 1, 2, 3, … (RFC 4303 § 2.4), pad
    //    length, next header (4 = IPv4, 41 = IPv6).
    let tr = buf.append(tail).map_err(|_| DropReason::NoTailroom)?;
    for (i, b) in tr[..pad_len].iter_mut().enumerate() {
        *b = u8::try_from(i + 1).unwrap_or(0);
    }
    tr[pad_len] = u8::try_from(pad_len).unwrap_or(0);
    tr[pad_len + 1] = if inner.version == 4 {
        PROTO_IPIP
    } else {
        PROTO_IPV6
    };

    // 6. Outer headers + ESP header from the template.
    let h = buf.prepend(head).map_err(|_| DropReason::NoHeadroom)?;
    h[..tlen].copy_from_slice(&sa.template.bytes[..tlen]);
    h[tlen - 4..tlen].copy_from_slice(&seq_lo(next).to_be_bytes());

    // 7. Outer IP fields (the crypto comes after them, in
    //    `EncapTicket`). DSCP and ECN: copied (RFC 6040 normal mode).
    let esp_off = ip_len + if sa.template.udp { UDP_LEN } else { 0 };
    let nic_checksum = ip_len == IPV4_LEN
        && sa.template.tx_checksum_offload
        && buf.offload_tx_ipv4_checksum(IPV4_LEN);
    let pkt = buf.as_mut();
    let tos = inner.tos;
    if ip_len == IPV4_LEN {
        pkt[1] = tos;
        pkt[2..4].copy_from_slice(&outer_len_field.to_be_bytes());
        pkt[4..6].copy_from_slice(&sa.ip_id.to_be_bytes());
        sa.ip_id = sa.ip_id.wrapping_add(1);
        let df = match sa.df {
            DfPolicy::CopyFromInner => inner.df,
            DfPolicy::Clear => false,
            DfPolicy::Set => true,
        };
        pkt[6] = if df { 0x40 } else { 0 };
        pkt[7] = 0;
        if nic_checksum {
            pkt[10..12].fill(0);
        } else {
            ipv4_fill_checksum(pkt);
        }
    } else {
        v6_set_tc(pkt, tos);
        pkt[4..6].copy_from_slice(&outer_len_field.to_be_bytes());
    }
    if sa.template.udp {
        let udp_len = u16::try_from(outer_total - ip_len).map_err(|_| DropReason::NoTailroom)?;
        let mut udp = UdpPacket::new_unchecked(&mut pkt[ip_len..]);
        udp.set_len(udp_len);
        // Over IPv6 the checksum is computed in `EncapTicket::finish`,
        // once the payload is ciphertext.
        udp.set_checksum(0);
    }

    pending.packets += 1;
    pending.bytes += u64::try_from(payload_len).unwrap_or(0);
    Ok(EncapTicket {
        esp_off,
        seq: next,
        esn: sa.esn,
        udp_v6: sa.template.udp && ip_len != IPV4_LEN,
    })
}
