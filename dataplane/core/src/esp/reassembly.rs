//! Reassembly of inner IP fragments after decapsulation (spec § 25.3:
//! "MUST reassemble fragmented packets received from the peer before
//! forwarding"; the CGW fragments before encryption, [RFC 4459 § 5.2]).
//!
//! A [`Reassembler`] is owned by one worker. Everything it needs is
//! allocated once, in [`Reassembler::new`]: a fixed table of contexts,
//! each with a data area of `max_datagram_len` bytes, a header area and
//! room for `max_fragments` received ranges. Per fragment it copies the
//! fragment's data into its context, never allocates, never reads the
//! clock (time is the `now_ms` parameter, as everywhere in the
//! dataplane) and never panics; lookups are a bounded linear scan.
//!
//! Rules, numbered as [`Reassembler::handle_fragment`] applies them:
//!
//! 1. Parse. IPv4: a datagram is a fragment if MF is set or the offset
//!    is non-zero ([RFC 791 § 3.2]); a fragment's lengths and header
//!    checksum must verify. Non-fragments pass untouched.
//!    IPv6: the extension chain is walked to a Fragment header
//!    ([RFC 8200 § 4.5]); an *atomic fragment* (offset 0, M clear) is
//!    processed in isolation ([RFC 6946 § 4]), its Fragment header
//!    removed in place. Every fragment but the last must carry a
//!    multiple of 8 bytes.
//! 2. Find the context by key: (source, destination, protocol,
//!    identification) for IPv4, (source, destination, identification)
//!    for IPv6. An expired context is dropped first
//!    ([`DropReason::ReassemblyTimeout`]). A new datagram takes a free
//!    context, else an expired one, else evicts the oldest
//!    ([`DropReason::ReassemblyEvicted`]).
//! 3. Limits: the datagram may not exceed `max_datagram_len`
//!    ([`DropReason::ReassemblyTooBig`]) nor have more than
//!    `max_fragments` fragments
//!    ([`DropReason::ReassemblyTooManyFragments`]); both drop the whole
//!    datagram.
//! 4. Overlaps: an exact duplicate of a held fragment is dropped alone
//!    ([`DropReason::ReassemblyDuplicate`]); any other overlap, or two
//!    different last fragments, drops the whole datagram
//!    ([`DropReason::ReassemblyOverlap`]). This is [RFC 5722] for IPv6
//!    and the same rule for IPv4 (as Linux does since 2018): overlapping
//!    IPv4 fragments have no legitimate use and are the classic vehicle
//!    of filter evasion.
//! 5. When every byte from 0 to the end given by the last fragment has
//!    arrived, the datagram is written into the buffer of the fragment
//!    that completed it: the first fragment's header (IPv4: with all its
//!    options, MF and offset cleared, new length and checksum; IPv6: the
//!    unfragmentable part, with the Fragment header's Next Header put in
//!    its place and the Payload Length updated).
//! 6. ECN ([RFC 3168 § 5.3]): if any fragment is CE the datagram is CE;
//!    a mix of Not-ECT and ECT/CE fragments drops the datagram
//!    ([`DropReason::InnerMalformed`]).
//!
//! Errors for the fragment being handled are returned for the caller to
//! count (as [`decap`](fn@super::decap) errors are); drops of *other*
//! datagrams (timeouts, evictions) are counted into the `drops` argument,
//! once per datagram.
//!
//! The same reassembler serves outer fragments before decryption (spec
//! § 25.3 asks for both): the worker has one instance per purpose so
//! that a flood of one kind cannot evict the other.
//!
//! [RFC 4459 § 5.2]: https://www.rfc-editor.org/rfc/rfc4459#section-5.2
//! [RFC 791 § 3.2]: https://www.rfc-editor.org/rfc/rfc791#section-3.2
//! [RFC 8200 § 4.5]: https://www.rfc-editor.org/rfc/rfc8200#section-4.5
//! [RFC 6946 § 4]: https://www.rfc-editor.org/rfc/rfc6946#section-4
//! [RFC 5722]: https://www.rfc-editor.org/rfc/rfc5722
//! [RFC 3168 § 5.3]: https://www.rfc-editor.org/rfc/rfc3168#section-5.3

use std::net::{Ipv4Addr, Ipv6Addr};

use netbuf::PacketBuffer;

use super::{DropCounters, DropReason};
use crate::wire::{Ipv4Packet, ipv4, ipv6};

/// Largest header kept from a first fragment: the IPv6 fixed header plus
/// an unfragmentable part (Hop-by-Hop, Routing, Destination Options) of
/// up to 216 bytes; an IPv4 header with options is at most 60.
pub const MAX_HEADER_LEN: usize = 256;

/// IPv6 extension headers walked to find the Fragment header.
const MAX_EXT_HEADERS: usize = ipv6::MAX_EXTENSION_HEADERS;

const PROTO_HOP: u8 = 0;
const PROTO_ROUTE: u8 = 43;
const PROTO_FRAG: u8 = 44;
const PROTO_OPTS: u8 = 60;
const FRAG_HDR_LEN: usize = 8;

const ECN_NOT_ECT: u8 = 0;
const ECN_CE: u8 = 3;

/// Sizing and timing of a [`Reassembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// Datagrams reassembled at the same time.
    pub contexts: usize,
    /// Largest reassembled datagram, headers included. It must also fit
    /// the buffer of the completing fragment (an mbuf's data room).
    pub max_datagram_len: usize,
    /// Most fragments per datagram.
    pub max_fragments: usize,
    // RFC 791 suggests a 15 s lower bound for the reassembly timer and
    // RFC 8200 § 4.5 a 60 s timeout; Linux uses 30 s for both families.
    /// Milliseconds from a datagram's first fragment until it is dropped.
    pub timeout_ms: u64,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        Self {
            contexts: 256,
            max_datagram_len: 2048,
            max_fragments: 32,
            timeout_ms: 30_000,
        }
    }
}

/// The outcome for a packet [`Reassembler::handle_fragment`] did not drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Reassembly {
    /// Not a fragment: forward the buffer unchanged.
    NotFragment,
    /// Held for reassembly: the data was copied, free the buffer.
    Held,
    /// The buffer now holds the whole reassembled datagram.
    Complete,
}

/// What identifies the fragments of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        id: u16,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        id: u32,
    },
}

/// One parsed fragment: where its parts are in the buffer.
#[derive(Debug, Clone, Copy)]
struct Frag {
    key: Key,
    /// Offset of the data in the original datagram's payload.
    offset: usize,
    more: bool,
    /// The data, as a range of the buffer.
    data: (usize, usize),
    /// Header to keep if this is the first fragment: `..hdr_len`.
    hdr_len: usize,
    /// IPv6: position of the Next Header byte that names the Fragment
    /// header, and the Fragment header's Next Header.
    v6_next: Option<(usize, u8)>,
    /// The ECN field.
    ecn: u8,
}

/// Per-datagram state; its data, header and ranges live in the arenas.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: Option<Key>,
    deadline_ms: u64,
    nfrags: usize,
    received: usize,
    total: Option<usize>,
    hdr_len: usize,
    v6_next: Option<(usize, u8)>,
    /// Bit `1 << ecn` for each ECN codepoint seen (6.).
    ecn_seen: u8,
}

impl Slot {
    const FREE: Self = Self {
        key: None,
        deadline_ms: 0,
        nfrags: 0,
        received: 0,
        total: None,
        hdr_len: 0,
        v6_next: None,
        ecn_seen: 0,
    };
}

/// A bounded IPv4/IPv6 fragment reassembler (see the module doc).
pub struct Reassembler {
    cfg: ReassemblyConfig,
    slots: Box<[Slot]>,
    /// `contexts × max_datagram_len` bytes of payload.
    data: Box<[u8]>,
    /// `contexts × MAX_HEADER_LEN` bytes of first-fragment headers.
    headers: Box<[u8]>,
    /// `contexts × max_fragments` received `[start, end)` ranges.
    ranges: Box<[(usize, usize)]>,
}

// Not derived: the arenas are hundreds of kilobytes.
impl std::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler")
            .field("cfg", &self.cfg)
            .field("in_progress", &self.in_progress())
            .finish_non_exhaustive()
    }
}

impl Reassembler {
    /// Allocates the table and arenas (cold path, once per worker).
    /// Zero limits are raised to 1.
    #[must_use]
    pub fn new(cfg: ReassemblyConfig) -> Self {
        let cfg = ReassemblyConfig {
            contexts: cfg.contexts.max(1),
            max_datagram_len: cfg.max_datagram_len.max(1),
            max_fragments: cfg.max_fragments.max(1),
            timeout_ms: cfg.timeout_ms,
        };
        Self {
            slots: vec![Slot::FREE; cfg.contexts].into_boxed_slice(),
            data: vec![0; cfg.contexts * cfg.max_datagram_len].into_boxed_slice(),
            headers: vec![0; cfg.contexts * MAX_HEADER_LEN].into_boxed_slice(),
            ranges: vec![(0, 0); cfg.contexts * cfg.max_fragments].into_boxed_slice(),
            cfg,
        }
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &ReassemblyConfig {
        &self.cfg
    }

    /// Datagrams currently under reassembly.
    #[must_use]
    pub fn in_progress(&self) -> usize {
        self.slots.iter().filter(|s| s.key.is_some()).count()
    }

    /// The earliest deadline of a datagram under reassembly, for the
    /// worker's timer.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter(|s| s.key.is_some())
            .map(|s| s.deadline_ms)
            .min()
    }

    /// Drops every datagram whose deadline is reached, counting
    /// [`DropReason::ReassemblyTimeout`] once per datagram.
    pub fn handle_timeout(&mut self, now_ms: u64, drops: &mut DropCounters) {
        for s in &mut *self.slots {
            if s.key.is_some() && now_ms >= s.deadline_ms {
                *s = Slot::FREE;
                drops.count(DropReason::ReassemblyTimeout);
            }
        }
    }

    /// Handles one inner packet (see the module doc for the rules).
    ///
    /// # Errors
    /// The [`DropReason`] for this packet: [`DropReason::InnerMalformed`]
    /// for an inconsistent header or fragment, or one of the
    /// `Reassembly*` reasons. The caller counts it and frees the buffer.
    pub fn handle_fragment<B: PacketBuffer>(
        &mut self,
        now_ms: u64,
        buf: &mut B,
        drops: &mut DropCounters,
    ) -> Result<Reassembly, DropReason> {
        // 1.
        let Some(f) = parse(buf.as_ref())? else {
            return Ok(Reassembly::NotFragment);
        };
        if !f.more && f.offset == 0 {
            // RFC 6946 § 4: an atomic fragment is reassembled alone.
            remove_atomic_fragment_header(buf, &f)?;
            return Ok(Reassembly::Complete);
        }
        // 2.
        let i = self.slot_for(f.key, now_ms, drops);
        // 3., 4.
        match self.insert(i, buf.as_ref(), &f) {
            Ok(()) => {}
            Err(DropReason::ReassemblyDuplicate) => return Err(DropReason::ReassemblyDuplicate),
            Err(e) => {
                self.slots[i] = Slot::FREE;
                return Err(e);
            }
        }
        // 5.
        let s = self.slots[i];
        match s.total {
            Some(t) if s.received == t => {
                let r = self.emit(i, buf);
                self.slots[i] = Slot::FREE;
                r.map(|()| Reassembly::Complete)
            }
            _ => Ok(Reassembly::Held),
        }
    }

    /// The slot of `key`, a new one if needed (2.).
    fn slot_for(&mut self, key: Key, now_ms: u64, drops: &mut DropCounters) -> usize {
        if let Some(i) = self.slots.iter().position(|s| s.key == Some(key)) {
            if now_ms < self.slots[i].deadline_ms {
                return i;
            }
            self.slots[i] = Slot::FREE;
            drops.count(DropReason::ReassemblyTimeout);
        }
        let i = match self.slots.iter().position(|s| s.key.is_none()) {
            Some(i) => i,
            None => {
                // Oldest = earliest deadline (all have the same timeout).
                let mut oldest = 0;
                for (j, s) in self.slots.iter().enumerate() {
                    if s.deadline_ms < self.slots[oldest].deadline_ms {
                        oldest = j;
                    }
                }
                drops.count(if now_ms >= self.slots[oldest].deadline_ms {
                    DropReason::ReassemblyTimeout
                } else {
                    DropReason::ReassemblyEvicted
                });
                oldest
            }
        };
        self.slots[i] = Slot {
            key: Some(key),
            deadline_ms: now_ms.saturating_add(self.cfg.timeout_ms),
            ..Slot::FREE
        };
        i
    }

    /// Adds fragment `f` (bytes in `p`) to slot `i` (3., 4.). Any error
    /// but `ReassemblyDuplicate` means the datagram is to be dropped.
    fn insert(&mut self, i: usize, p: &[u8], f: &Frag) -> Result<(), DropReason> {
        let len = f.data.1 - f.data.0;
        let (start, end) = (f.offset, f.offset + len);
        let s = self.slots[i];
        let max_hdr = if matches!(f.key, Key::V4 { .. }) {
            ipv4::HEADER_LEN
        } else {
            ipv6::HEADER_LEN
        };
        // 3. Size.
        if max_hdr + end > self.cfg.max_datagram_len {
            return Err(DropReason::ReassemblyTooBig);
        }
        // 4. Last fragment consistency.
        if !f.more {
            if s.total.is_some_and(|t| t != end) {
                return Err(DropReason::ReassemblyOverlap);
            }
        } else if s.total.is_some_and(|t| end > t) {
            return Err(DropReason::ReassemblyOverlap);
        }
        let base = i * self.cfg.max_fragments;
        let held = &self.ranges[base..base + s.nfrags];
        if !f.more && held.iter().any(|&(_, e)| e > end) {
            return Err(DropReason::ReassemblyOverlap);
        }
        // 4. Overlaps (RFC 5722).
        for &(a, b) in held {
            if (a, b) == (start, end) {
                return Err(DropReason::ReassemblyDuplicate);
            }
            if start < b && a < end {
                return Err(DropReason::ReassemblyOverlap);
            }
        }
        // 3. Fragment count.
        if s.nfrags >= self.cfg.max_fragments {
            return Err(DropReason::ReassemblyTooManyFragments);
        }
        // Store.
        let d = i * self.cfg.max_datagram_len;
        self.data[d + start..d + end].copy_from_slice(&p[f.data.0..f.data.1]);
        self.ranges[base + s.nfrags] = (start, end);
        let s = &mut self.slots[i];
        s.nfrags += 1;
        s.received += len;
        s.ecn_seen |= 1 << f.ecn;
        if !f.more {
            s.total = Some(end);
        }
        if start == 0 {
            if f.hdr_len > MAX_HEADER_LEN {
                return Err(DropReason::InnerMalformed);
            }
            let h = i * MAX_HEADER_LEN;
            self.headers[h..h + f.hdr_len].copy_from_slice(&p[..f.hdr_len]);
            s.hdr_len = f.hdr_len;
            s.v6_next = f.v6_next;
        }
        Ok(())
    }

    /// Writes the complete datagram of slot `i` into `buf` (5.).
    fn emit<B: PacketBuffer>(&self, i: usize, buf: &mut B) -> Result<(), DropReason> {
        let s = &self.slots[i];
        let total = s.total.unwrap_or(0);
        let hl = s.hdr_len;
        let len = hl + total;
        if hl == 0 || len > self.cfg.max_datagram_len {
            return Err(DropReason::ReassemblyTooBig);
        }
        let field_len = match s.key {
            Some(Key::V6 { .. }) => len - ipv6::HEADER_LEN,
            _ => len,
        };
        let field_len = u16::try_from(field_len).map_err(|_| DropReason::ReassemblyTooBig)?;
        // 6.
        let not_ect = s.ecn_seen & (1 << ECN_NOT_ECT) != 0;
        let ce = s.ecn_seen & (1 << ECN_CE) != 0;
        if not_ect && s.ecn_seen != 1 << ECN_NOT_ECT {
            return Err(DropReason::InnerMalformed);
        }
        let cur = buf.as_ref().len();
        buf.trim_from_end(cur)
            .map_err(|_| DropReason::ReassemblyTooBig)?;
        let out = buf.append(len).map_err(|_| DropReason::ReassemblyTooBig)?;
        let h = i * MAX_HEADER_LEN;
        out[..hl].copy_from_slice(&self.headers[h..h + hl]);
        let d = i * self.cfg.max_datagram_len;
        out[hl..].copy_from_slice(&self.data[d..d + total]);
        match s.v6_next {
            None => {
                if ce {
                    out[1] |= ECN_CE;
                }
                let mut ip = Ipv4Packet::new_unchecked(out);
                ip.set_total_len(field_len);
                ip.set_more_frags(false);
                ip.set_frag_offset_bytes(0);
                ip.fill_checksum();
            }
            Some((nh_pos, next)) => {
                out[4..6].copy_from_slice(&field_len.to_be_bytes());
                if ce {
                    // ECN is the low two bits of the Traffic Class:
                    // bits 4-5 of byte 1.
                    out[1] |= ECN_CE << 4;
                }
                // The unfragmentable part ends where the Fragment header
                // was: the header naming it now names the payload.
                if let Some(b) = out.get_mut(nh_pos) {
                    *b = next;
                }
            }
        }
        Ok(())
    }
}

/// Parses an inner packet; `Ok(None)` if it is not a fragment (1.).
fn parse(p: &[u8]) -> Result<Option<Frag>, DropReason> {
    match p.first().map(|b| b >> 4) {
        Some(4) => parse_v4(p),
        Some(6) => parse_v6(p),
        _ => Err(DropReason::InnerMalformed),
    }
}

fn parse_v4(p: &[u8]) -> Result<Option<Frag>, DropReason> {
    let ip = Ipv4Packet::new_checked(p).map_err(|_| DropReason::InnerMalformed)?;
    if !ip.is_fragment() {
        // Not ours: the forwarding path judges the rest of the header.
        return Ok(None);
    }
    if ip.version() != 4 || !ip.verify_checksum() {
        return Err(DropReason::InnerMalformed);
    }
    let hl = usize::from(ip.header_len());
    let end = usize::from(ip.total_len());
    let more = ip.more_frags();
    if hl == end || (more && !(end - hl).is_multiple_of(8)) {
        return Err(DropReason::InnerMalformed);
    }
    Ok(Some(Frag {
        key: Key::V4 {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            proto: u8::from(ip.protocol()),
            id: ip.ident(),
        },
        offset: usize::from(ip.frag_offset_bytes()),
        more,
        data: (hl, end),
        hdr_len: hl,
        v6_next: None,
        ecn: ip.ecn(),
    }))
}

fn parse_v6(p: &[u8]) -> Result<Option<Frag>, DropReason> {
    if p.len() < ipv6::HEADER_LEN {
        return Err(DropReason::InnerMalformed);
    }
    let end = ipv6::HEADER_LEN + usize::from(u16::from_be_bytes([p[4], p[5]]));
    if end > p.len() {
        return Err(DropReason::InnerMalformed);
    }
    // Walk Hop-by-Hop / Routing / Destination Options to the Fragment
    // header, remembering which byte names the next header.
    let mut nh_pos = 6;
    let mut off = ipv6::HEADER_LEN;
    let mut found = false;
    for _ in 0..MAX_EXT_HEADERS {
        match p[nh_pos] {
            PROTO_FRAG => {
                found = true;
                break;
            }
            PROTO_HOP | PROTO_ROUTE | PROTO_OPTS => {
                let len_at = off + 1;
                if len_at >= end {
                    return Err(DropReason::InnerMalformed);
                }
                nh_pos = off;
                off += (usize::from(p[len_at]) + 1) * 8;
            }
            _ => return Ok(None),
        }
    }
    if !found {
        // Over the limit without a Fragment header: not ours to judge.
        return Ok(None);
    }
    if off + FRAG_HDR_LEN > end {
        return Err(DropReason::InnerMalformed);
    }
    let next = p[off];
    let off_m = u16::from_be_bytes([p[off + 2], p[off + 3]]);
    let more = off_m & 1 != 0;
    let id = u32::from_be_bytes([p[off + 4], p[off + 5], p[off + 6], p[off + 7]]);
    let data = (off + FRAG_HDR_LEN, end);
    // RFC 8200 § 4.5: non-last fragments are a multiple of 8 long.
    if more && !(data.1 - data.0).is_multiple_of(8) {
        return Err(DropReason::InnerMalformed);
    }
    if more && data.0 == data.1 {
        return Err(DropReason::InnerMalformed);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&p[8..24]);
    dst.copy_from_slice(&p[24..40]);
    Ok(Some(Frag {
        key: Key::V6 {
            src: Ipv6Addr::from(src),
            dst: Ipv6Addr::from(dst),
            id,
        },
        offset: usize::from(off_m & 0xfff8),
        more,
        data,
        hdr_len: off,
        v6_next: Some((nh_pos, next)),
        ecn: (p[1] >> 4) & 3,
    }))
}

/// Removes the Fragment header of an IPv6 atomic fragment in place:
/// the unfragmentable part moves 8 bytes forward.
fn remove_atomic_fragment_header<B: PacketBuffer>(buf: &mut B, f: &Frag) -> Result<(), DropReason> {
    let Some((nh_pos, next)) = f.v6_next else {
        // IPv4 offset 0 without MF is not a fragment; parse never
        // returns it.
        return Err(DropReason::InnerMalformed);
    };
    let hl = f.hdr_len;
    let end = f.data.1;
    let extra = buf.as_ref().len() - end;
    buf.trim_from_end(extra)
        .map_err(|_| DropReason::InnerMalformed)?;
    let p = buf.as_mut();
    p[nh_pos] = next;
    let plen = u16::try_from(end - FRAG_HDR_LEN - ipv6::HEADER_LEN)
        .map_err(|_| DropReason::InnerMalformed)?;
    p[4..6].copy_from_slice(&plen.to_be_bytes());
    p.copy_within(..hl, FRAG_HDR_LEN);
    buf.trim_from_start(FRAG_HDR_LEN)
        .map_err(|_| DropReason::InnerMalformed)
}
