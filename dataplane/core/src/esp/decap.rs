//! ESP tunnel-mode decapsulation ([RFC 4303 § 3.4]).
//!
//! The caller has classified the outer header and looked up the SA by
//! SPI; it passes the offset of the ESP header (0 if the outer headers
//! are already stripped). Steps, numbered after RFC 4303 § 3.4:
//!
//! 0. Outer header (if present): IPv4 checksum and lengths; bytes past the
//!    outer length (Ethernet padding) are trimmed.
//! 1. § 3.4.2: SPI matches the SA; lengths are well-formed.
//! 2. § 3.4.3: cheap anti-replay pre-check, which also infers the ESN
//!    high bits (Appendix A2.2).
//! 3. § 3.4.4: ICV verification (constant time), then decryption.
//! 4. § 3.4.3: replay window commit (only after the ICV verified).
//! 5. § 2.4: padding is 1, 2, 3, …; § 2.6: next header 59 is a dummy
//!    packet (dropped and counted); tunnel mode accepts only 4 and 41.
//! 6. Inner header sanity: version matches the next header, the inner
//!    length fits the payload (TFC padding after it, RFC 4303 § 2.7, is
//!    trimmed).
//! 7. ECN at egress per RFC 6040 § 4.2 (outer CE → inner CE; CE on a
//!    Not-ECT inner packet → drop).
//! 8. Strip outer headers, ESP header, IV and trailer in place: the
//!    buffer then holds exactly the inner IP packet.
//!
//! [RFC 4303 § 3.4]: https://www.rfc-editor.org/rfc/rfc4303#section-3.4

use netbuf::{PacketBuffer, RxChecksum};

use super::DropReason;
use super::hdr::{
    PROTO_ESP, PROTO_IPIP, PROTO_IPV6, PROTO_NONE, PROTO_UDP, UDP_LEN, ipv4_checksum_ok, parse_ip,
    set_ecn,
};
use super::sa::{InboundSa, SaCounters};
use crate::crypto::{CbcOp, CryptoError, ESP_HEADER_LEN, EspTransform};

const ECN_CE: u8 = 3;
const ECN_ECT1: u8 = 1;
const ECN_ECT0: u8 = 2;
const ECN_NOT_ECT: u8 = 0;

/// Decapsulates the ESP packet starting at `esp_offset` in `buf` with
/// `sa` and updates the SA's counters and replay window.
///
/// # Errors
/// A [`DropReason`]; the buffer content is then unspecified.
pub fn decap<B: PacketBuffer>(
    sa: &mut InboundSa,
    buf: &mut B,
    esp_offset: usize,
) -> Result<(), DropReason> {
    let mut pending = SaCounters::default();
    let r = decap_pending(sa, buf, esp_offset, &mut pending);
    sa.life.flush(&pending);
    r
}

/// [`decap`] accumulating counters in `pending`.
pub(crate) fn decap_pending<B: PacketBuffer>(
    sa: &mut InboundSa,
    buf: &mut B,
    esp_offset: usize,
    pending: &mut SaCounters,
) -> Result<(), DropReason> {
    let t = decap_begin_pending(sa, buf, esp_offset, pending)?;
    let opened = sa
        .transform
        .open(t.seq, sa.esn, &mut buf.as_mut()[t.esp_offset..]);
    t.finish_pending(sa, buf, opened, pending)
}

/// What [`decap_begin`] leaves for the crypto step and
/// [`DecapTicket::finish`]: where the ESP packet starts, its full sequence
/// number (ESN inferred) and the outer ECN field.
#[derive(Debug, Clone, Copy)]
pub struct DecapTicket {
    esp_offset: usize,
    seq: u64,
    esn: bool,
    outer_ecn: u8,
}

impl DecapTicket {
    /// The opening operation for a burst through the job API
    /// ([`run_cbc_batch`](crate::crypto::run_cbc_batch)), if the SA's transform is intel-ipsec-mb's
    /// CBC + HMAC; `pkt` is the buffer's bytes (`buf.as_mut()`).
    #[inline]
    #[must_use]
    pub fn op<'a>(&self, sa: &'a InboundSa, pkt: &'a mut [u8]) -> Option<CbcOp<'a>> {
        Some(CbcOp {
            transform: sa.transform.cbc_mb()?,
            esp: pkt.get_mut(self.esp_offset..)?,
            seq: self.seq,
            esn: self.esn,
            open: true,
        })
    }

    /// Opens the packet with the SA's transform, one packet at a time, and
    /// finishes it.
    ///
    /// # Errors
    /// As [`decap`].
    #[inline]
    pub fn open_inline<B: PacketBuffer>(
        &self,
        sa: &mut InboundSa,
        buf: &mut B,
    ) -> Result<(), DropReason> {
        let opened = sa
            .transform
            .open(self.seq, self.esn, &mut buf.as_mut()[self.esp_offset..]);
        self.finish(sa, buf, opened)
    }

    /// The second half of [`decap`], after the crypto step whose outcome is
    /// `opened`: replay window commit, trailer and inner checks, ECN, strip;
    /// the SA's counters are updated.
    ///
    /// # Errors
    /// As [`decap`]; a failed `opened` is [`DropReason::IcvFail`],
    /// [`DropReason::Truncated`] or [`DropReason::CryptoFailure`].
    pub fn finish<B: PacketBuffer>(
        &self,
        sa: &mut InboundSa,
        buf: &mut B,
        opened: Result<(), CryptoError>,
    ) -> Result<(), DropReason> {
        let mut pending = SaCounters::default();
        let r = self.finish_pending(sa, buf, opened, &mut pending);
        sa.life.flush(&pending);
        r
    }

    /// [`DecapTicket::finish`] accumulating counters in `pending`.
    #[inline(always)]
    pub(crate) fn finish_pending<B: PacketBuffer>(
        &self,
        sa: &mut InboundSa,
        buf: &mut B,
        opened: Result<(), CryptoError>,
        pending: &mut SaCounters,
    ) -> Result<(), DropReason> {
        let &Self {
            esp_offset,
            seq,
            outer_ecn,
            ..
        } = self;
        let iv_len = sa.transform.iv_len();
        let icv_len = sa.transform.icv_len();
        // 3. (cont.) The ICV verified and the data was decrypted, or not.
        opened.map_err(|e| match e {
            CryptoError::AuthFailed => DropReason::IcvFail,
            CryptoError::BadLength => DropReason::Truncated,
            _ => DropReason::CryptoFailure,
        })?;

        // 4. Commit to the window now that the packet is authentic.
        match &sa.shared_replay {
            Some(w) => w.commit(seq)?,
            None => sa.replay.commit(seq)?,
        }

        // 5. Trailer.
        let pkt = buf.as_mut();
        let esp = &pkt[esp_offset..];
        let pt_start = ESP_HEADER_LEN + iv_len;
        let pt_end = esp.len() - icv_len;
        let next_header = esp[pt_end - 1];
        let pad_len = usize::from(esp[pt_end - 2]);
        if pt_start + pad_len + 2 > pt_end {
            return Err(DropReason::BadPadding);
        }
        let payload_end = pt_end - 2 - pad_len;
        // RFC 4303 § 2.4: the padding is 1, 2, 3, … and the receiver SHOULD
        // check it.
        let monotonic = esp[payload_end..pt_end - 2]
            .iter()
            .enumerate()
            .all(|(i, &b)| usize::from(b) == i + 1);
        if !monotonic {
            return Err(DropReason::BadPadding);
        }
        let expected_version = match next_header {
            PROTO_IPIP => 4,
            PROTO_IPV6 => 6,
            PROTO_NONE => return Err(DropReason::DummyPacket),
            _ => return Err(DropReason::BadNextHeader),
        };

        // 6. Inner header sanity.
        let payload = &esp[pt_start..payload_end];
        let inner = parse_ip(payload).ok_or(DropReason::InnerMalformed)?;
        if inner.version != expected_version {
            return Err(DropReason::InnerMalformed);
        }
        let tfc = payload.len() - inner.total_len;

        // 7. ECN egress (RFC 6040 § 4.2, Figure 4).
        let inner_ecn = inner.tos & 3;
        let new_ecn = match (inner_ecn, outer_ecn) {
            (ECN_NOT_ECT, ECN_CE) => return Err(DropReason::EcnNotEct),
            (ECN_ECT0 | ECN_ECT1, ECN_CE) => ECN_CE,
            (ECN_ECT0, ECN_ECT1) => ECN_ECT1,
            (e, _) => e,
        };
        let inner_off = esp_offset + pt_start;
        if new_ecn != inner_ecn {
            set_ecn(&mut pkt[inner_off..], inner.version, new_ecn);
        }

        // 8. Strip in place.
        let cut_end = icv_len + 2 + pad_len + tfc;
        buf.trim_from_end(cut_end)
            .map_err(|_| DropReason::Truncated)?;
        buf.trim_from_start(inner_off)
            .map_err(|_| DropReason::Truncated)?;

        pending.packets += 1;
        pending.bytes += u64::try_from(inner.total_len).unwrap_or(0);
        Ok(())
    }
}

/// The first half of [`decap`]: outer header, lengths, SPI, lifetime and
/// the anti-replay pre-check (steps 0-2), for the worker that submits a
/// whole burst to the job API. Then [`DecapTicket::open_inline`], or
/// [`DecapTicket::op`] in a [`run_cbc_batch`](crate::crypto::run_cbc_batch) followed by
/// [`DecapTicket::finish`]. Packets of one burst may all pass the
/// pre-check with the same sequence number: the commit in `finish`
/// re-checks, so only the first is accepted.
///
/// # Errors
/// As [`decap`].
pub fn decap_begin<B: PacketBuffer>(
    sa: &mut InboundSa,
    buf: &mut B,
    esp_offset: usize,
) -> Result<DecapTicket, DropReason> {
    let pending = SaCounters::default();
    decap_begin_pending(sa, buf, esp_offset, &pending)
}

/// [`decap_begin`], the hard lifetime seen with `pending` added.
#[inline(always)]
pub(crate) fn decap_begin_pending<B: PacketBuffer>(
    sa: &mut InboundSa,
    buf: &mut B,
    esp_offset: usize,
    pending: &SaCounters,
) -> Result<DecapTicket, DropReason> {
    // 0. Outer header.
    let mut outer_ecn = ECN_NOT_ECT;
    if esp_offset > 0 {
        let p = buf.as_ref();
        let outer = parse_ip(p).ok_or(DropReason::OuterMalformed)?;
        if outer.total_len < esp_offset || esp_offset < outer.header_len {
            return Err(DropReason::OuterMalformed);
        }
        if outer.version == 4 {
            // The NIC's verdict where the port checks it, else ours.
            let ok = match buf.rx_ipv4_checksum() {
                RxChecksum::Good => true,
                RxChecksum::Bad => false,
                RxChecksum::Unknown => ipv4_checksum_ok(&p[..outer.header_len]),
            };
            if !ok {
                return Err(DropReason::OuterBadChecksum);
            }
        }
        // The caller classified the packet; re-check the cheap part: with
        // no extension headers the protocol must be ESP (50) or, for
        // NAT-T, UDP (17) followed by 8 bytes of UDP header.
        let ok_proto = if esp_offset == outer.header_len {
            !sa.nat_t && outer.proto == PROTO_ESP
        } else if esp_offset == outer.header_len + UDP_LEN {
            sa.nat_t && outer.proto == PROTO_UDP
        } else {
            true // IPv6 extension headers: trust the classifier
        };
        if !ok_proto {
            return Err(DropReason::OuterMalformed);
        }
        outer_ecn = outer.tos & 3;
        let extra = p.len() - outer.total_len;
        if extra > 0 {
            buf.trim_from_end(extra)
                .map_err(|_| DropReason::OuterMalformed)?;
        }
    }

    // 1. Lengths and SPI (§ 3.4.2).
    let iv_len = sa.transform.iv_len();
    let icv_len = sa.transform.icv_len();
    let align = sa.transform.pad_align();
    let p = buf.as_ref();
    let esp_len = p.len().saturating_sub(esp_offset);
    let fixed = ESP_HEADER_LEN + iv_len + icv_len;
    if esp_len < fixed + align || !(esp_len - fixed).is_multiple_of(align) {
        return Err(DropReason::Truncated);
    }
    let esp = &p[esp_offset..];
    let spi = u32::from_be_bytes([esp[0], esp[1], esp[2], esp[3]]);
    if spi != sa.spi {
        return Err(DropReason::SpiMismatch);
    }
    if !sa.life.admits(pending) {
        return Err(DropReason::LifetimeExpired);
    }

    // 2. Anti-replay pre-check, ESN inference (§ 3.4.3, Appendix A2.2).
    let seq_low = u32::from_be_bytes([esp[4], esp[5], esp[6], esp[7]]);
    let seq = match &sa.shared_replay {
        Some(w) => w.check(seq_low)?,
        None => sa.replay.check(seq_low)?,
    };

    // 3. ICV, then decrypt (§ 3.4.4): the caller's crypto step, then
    //    `DecapTicket::finish`.
    Ok(DecapTicket {
        esp_offset,
        seq,
        esn: sa.esn,
        outer_ecn,
    })
}
