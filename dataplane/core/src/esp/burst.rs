//! Burst API: up to [`MAX_BURST`] packets per call for one direction.
//!
//! Consecutive packets of the same SA form a *run*; the SA's packet/byte
//! counters are accumulated locally over the run and flushed once when
//! the SA changes or the burst ends (VPP `esp_decrypt_inline`). Hard
//! lifetime checks still see the pending counts, so a run cannot overshoot
//! a hard limit. Drops are counted in the worker's [`DropCounters`] and
//! reported per packet in `verdicts`; the caller frees dropped buffers.
//!
//! SAs are addressed by index into the worker's SA slice (the caller's SA
//! lookup produced it); an index out of range is an
//! [`DropReason::UnknownSpi`] drop.
//!
//! [`encap_burst_mb`] / [`decap_burst_mb`] take the worker's
//! intel-ipsec-mb [`Manager`] as well: packets of SAs whose transform runs
//! on its job API (AES-CBC + HMAC) are prepared one after the other
//! (header, padding, IV; replay pre-check), submitted together
//! ([`run_cbc_batch`]), then finished one after the other (ICV placed, or
//! checked and the trailer stripped); the other packets go through as in
//! [`encap_burst`] / [`decap_burst`]. Same bytes, same verdicts; one
//! difference in accounting: a batched decap counts its packet when it is
//! finished, so the hard lifetime check of the packets prepared in the
//! same burst does not see them yet (a hard packet/byte limit can be
//! overshot by at most one burst; encap counts when it prepares, as
//! before).

use ipsec_mb::Manager;
use netbuf::PacketBuffer;

use super::decap::{DecapTicket, decap_begin_pending, decap_pending};
use super::encap::{EncapTicket, encap_begin_pending, encap_pending};
use super::sa::{InboundSa, OutboundSa, SaCounters};
use super::{DropCounters, DropReason};
use crate::crypto::{CryptoError, run_cbc_batch};

/// Largest burst processed per call.
pub const MAX_BURST: usize = 64;

/// What happened to one packet of a burst.
pub type Verdict = Result<(), DropReason>;

/// Encapsulates `pkts[i]` with `sas[sa_idx[i]]` for the first
/// `n = min(MAX_BURST, pkts.len(), sa_idx.len(), verdicts.len())`
/// packets; returns `n`.
pub fn encap_burst<B: PacketBuffer>(
    sas: &mut [OutboundSa],
    pkts: &mut [B],
    sa_idx: &[u32],
    verdicts: &mut [Verdict],
    drops: &mut DropCounters,
) -> usize {
    let n = MAX_BURST
        .min(pkts.len())
        .min(sa_idx.len())
        .min(verdicts.len());
    let mut run: Option<usize> = None;
    let mut pending = SaCounters::default();
    for i in 0..n {
        let idx = usize::try_from(sa_idx[i]).unwrap_or(usize::MAX);
        if run != Some(idx) {
            flush_out(sas, run, &mut pending);
            run = Some(idx);
        }
        let v = match sas.get_mut(idx) {
            Some(sa) => encap_pending(sa, &mut pkts[i], &mut pending),
            None => Err(DropReason::UnknownSpi),
        };
        if let Err(r) = v {
            drops.count(r);
        }
        verdicts[i] = v;
    }
    flush_out(sas, run, &mut pending);
    n
}

/// Decapsulates `pkts[i]` (ESP header at `esp_offsets[i]`) with
/// `sas[sa_idx[i]]`; same conventions as [`encap_burst`].
pub fn decap_burst<B: PacketBuffer>(
    sas: &mut [InboundSa],
    pkts: &mut [B],
    sa_idx: &[u32],
    esp_offsets: &[usize],
    verdicts: &mut [Verdict],
    drops: &mut DropCounters,
) -> usize {
    let n = MAX_BURST
        .min(pkts.len())
        .min(sa_idx.len())
        .min(esp_offsets.len())
        .min(verdicts.len());
    let mut run: Option<usize> = None;
    let mut pending = SaCounters::default();
    for i in 0..n {
        let idx = usize::try_from(sa_idx[i]).unwrap_or(usize::MAX);
        if run != Some(idx) {
            flush_in(sas, run, &mut pending);
            run = Some(idx);
        }
        let v = match sas.get_mut(idx) {
            Some(sa) => decap_pending(sa, &mut pkts[i], esp_offsets[i], &mut pending),
            None => Err(DropReason::UnknownSpi),
        };
        if let Err(r) = v {
            drops.count(r);
        }
        verdicts[i] = v;
    }
    flush_in(sas, run, &mut pending);
    n
}

/// [`encap_burst`] with AES-CBC + HMAC on intel-ipsec-mb submitted as one
/// batch through `mgr` (see the module doc).
pub fn encap_burst_mb<B: PacketBuffer>(
    mgr: &mut Manager,
    sas: &mut [OutboundSa],
    pkts: &mut [B],
    sa_idx: &[u32],
    verdicts: &mut [Verdict],
    drops: &mut DropCounters,
) -> usize {
    let n = MAX_BURST
        .min(pkts.len())
        .min(sa_idx.len())
        .min(verdicts.len());
    let mut tickets: [Option<EncapTicket>; MAX_BURST] = [None; MAX_BURST];
    let mut m = 0;
    // 1. Prepare: everything but the crypto; SAs not on the job API are
    //    done here.
    let mut run: Option<usize> = None;
    let mut pending = SaCounters::default();
    for i in 0..n {
        let idx = usize::try_from(sa_idx[i]).unwrap_or(usize::MAX);
        if run != Some(idx) {
            flush_out(sas, run, &mut pending);
            run = Some(idx);
        }
        let v = match sas.get_mut(idx) {
            Some(sa) => encap_begin_pending(sa, &mut pkts[i], &mut pending).and_then(|t| {
                if sa.transform.cbc_mb().is_some() {
                    tickets[i] = Some(t);
                    m += 1;
                    Ok(())
                } else {
                    t.seal_inline(sa, &mut pkts[i])
                }
            }),
            None => Err(DropReason::UnknownSpi),
        };
        if let Err(r) = v {
            drops.count(r);
        }
        verdicts[i] = v;
    }
    flush_out(sas, run, &mut pending);
    if m == 0 {
        return n;
    }
    // 2. One pass through the job API.
    let mut sealed = [Ok(()); MAX_BURST];
    let shared: &[OutboundSa] = sas;
    let ops = pkts[..n]
        .iter_mut()
        .zip(&tickets[..n])
        .zip(sa_idx)
        .filter_map(|((b, t), &idx)| Some((b, t.as_ref()?, idx)))
        .map(|(b, t, idx)| {
            let sa = shared.get(usize::try_from(idx).ok()?)?;
            t.op(sa, b.as_mut())
        });
    run_cbc_batch(mgr, ops, &mut sealed[..m]);
    // 3. Finish, in order.
    let mut k = 0;
    for i in 0..n {
        let Some(t) = &tickets[i] else { continue };
        let v = t.finish(&mut pkts[i], sealed[k]);
        k += 1;
        if let Err(r) = v {
            drops.count(r);
        }
        verdicts[i] = v;
    }
    n
}

/// [`decap_burst`] with AES-CBC + HMAC on intel-ipsec-mb submitted as one
/// batch through `mgr` (see the module doc).
pub fn decap_burst_mb<B: PacketBuffer>(
    mgr: &mut Manager,
    sas: &mut [InboundSa],
    pkts: &mut [B],
    sa_idx: &[u32],
    esp_offsets: &[usize],
    verdicts: &mut [Verdict],
    drops: &mut DropCounters,
) -> usize {
    let n = MAX_BURST
        .min(pkts.len())
        .min(sa_idx.len())
        .min(esp_offsets.len())
        .min(verdicts.len());
    let mut tickets: [Option<DecapTicket>; MAX_BURST] = [None; MAX_BURST];
    let mut m = 0;
    // 1. Prepare: outer header, lengths, SPI, replay pre-check; SAs not
    //    on the job API are done here.
    let mut run: Option<usize> = None;
    let mut pending = SaCounters::default();
    for i in 0..n {
        let idx = usize::try_from(sa_idx[i]).unwrap_or(usize::MAX);
        if run != Some(idx) {
            flush_in(sas, run, &mut pending);
            run = Some(idx);
        }
        let v = match sas.get_mut(idx) {
            Some(sa) if sa.transform.cbc_mb().is_some() => {
                decap_begin_pending(sa, &mut pkts[i], esp_offsets[i], &pending).map(|t| {
                    tickets[i] = Some(t);
                    m += 1;
                })
            }
            Some(sa) => decap_pending(sa, &mut pkts[i], esp_offsets[i], &mut pending),
            None => Err(DropReason::UnknownSpi),
        };
        if let Err(r) = v {
            drops.count(r);
        }
        verdicts[i] = v;
    }
    flush_in(sas, run, &mut pending);
    if m == 0 {
        return n;
    }
    // 2. One pass through the job API.
    let mut opened: [Result<(), CryptoError>; MAX_BURST] = [Ok(()); MAX_BURST];
    let shared: &[InboundSa] = sas;
    let ops = pkts[..n]
        .iter_mut()
        .zip(&tickets[..n])
        .zip(sa_idx)
        .filter_map(|((b, t), &idx)| Some((b, t.as_ref()?, idx)))
        .map(|(b, t, idx)| {
            let sa = shared.get(usize::try_from(idx).ok()?)?;
            t.op(sa, b.as_mut())
        });
    run_cbc_batch(mgr, ops, &mut opened[..m]);
    // 3. Finish, in order: replay commit, trailer, strip.
    let mut run: Option<usize> = None;
    let mut k = 0;
    for i in 0..n {
        let Some(t) = &tickets[i] else { continue };
        let idx = usize::try_from(sa_idx[i]).unwrap_or(usize::MAX);
        if run != Some(idx) {
            flush_in(sas, run, &mut pending);
            run = Some(idx);
        }
        let r = opened[k];
        k += 1;
        let v = match sas.get_mut(idx) {
            Some(sa) => t.finish_pending(sa, &mut pkts[i], r, &mut pending),
            None => Err(DropReason::UnknownSpi),
        };
        if let Err(r) = v {
            drops.count(r);
        }
        verdicts[i] = v;
    }
    flush_in(sas, run, &mut pending);
    n
}

fn flush_out(sas: &mut [OutboundSa], run: Option<usize>, pending: &mut SaCounters) {
    if let Some(sa) = run.and_then(|i| sas.get_mut(i)) {
        sa.life.flush(pending);
    }
    *pending = SaCounters::default();
}

fn flush_in(sas: &mut [InboundSa], run: Option<usize>, pending: &mut SaCounters) {
    if let Some(sa) = run.and_then(|i| sas.get_mut(i)) {
        sa.life.flush(pending);
    }
    *pending = SaCounters::default();
}
