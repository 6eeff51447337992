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

use netbuf::PacketBuffer;

use super::decap::decap_pending;
use super::encap::encap_pending;
use super::sa::{InboundSa, OutboundSa, SaCounters};
use super::{DropCounters, DropReason};

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
