//! Pre-fragmentation ([`super::frag`]) and reassembly
//! ([`super::reassembly`]) tests: byte-level fragment checks, ICMP
//! errors, reassembly rules and limits, round-trip properties, arbitrary
//! bytes, and a cross-check of our fragments against scapy's
//! `defragment` (kinds (a), (c) and end-to-end of conventions § 12).

use std::net::{Ipv4Addr, Ipv6Addr};

use netbuf::TestBuffer;
use proptest::prelude::*;

use super::frag::{Fit, FragConfig, fit_to_mtu};
use super::reassembly::{Reassembler, Reassembly, ReassemblyConfig};
use super::sa::DfPolicy;
use super::{DropCounters, DropReason};
use crate::esp::hdr::{ipv4_checksum_ok, ipv4_fill_checksum};
use crate::wire::{Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, Ipv4Packet};

const SRC4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const DST4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const ME4: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);

fn src6() -> Ipv6Addr {
    "2001:db8:1::1".parse().unwrap()
}
fn dst6() -> Ipv6Addr {
    "2001:db8:2::2".parse().unwrap()
}
fn me6() -> Ipv6Addr {
    "fd00::1".parse().unwrap()
}

fn fcfg(mtu: u16, ignore_df: bool) -> FragConfig {
    FragConfig {
        mtu,
        ignore_df,
        icmp_src_v4: ME4,
        icmp_src_v6: me6(),
    }
}

/// An IPv4 UDP-protocol datagram: header with `options`, `payload_len`
/// pattern bytes.
fn v4(payload_len: usize, options: &[u8], df: bool, id: u16) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let hl = 20 + options.len();
    let total = hl + payload_len;
    let mut p = vec![0u8; total];
    p[0] = 0x40 | u8::try_from(hl / 4).unwrap();
    p[1] = 0x2e;
    p[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6] = if df { 0x40 } else { 0 };
    p[8] = 63;
    p[9] = 17;
    p[12..16].copy_from_slice(&SRC4.octets());
    p[16..20].copy_from_slice(&DST4.octets());
    p[20..hl].copy_from_slice(options);
    for (i, b) in p[hl..].iter_mut().enumerate() {
        *b = u8::try_from((i * 7 + 3) % 251).unwrap();
    }
    let mut h = Ipv4Packet::new_unchecked(&mut p[..]);
    h.fill_checksum();
    p
}

/// An IPv6 datagram (next header UDP) of `payload_len` pattern bytes.
fn v6(payload_len: usize) -> Vec<u8> {
    let mut p = vec![0u8; 40 + payload_len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&u16::try_from(payload_len).unwrap().to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src6().octets());
    p[24..40].copy_from_slice(&dst6().octets());
    for (i, b) in p[40..].iter_mut().enumerate() {
        *b = u8::try_from(i % 253).unwrap();
    }
    p
}

/// An IPv6 fragment of `id` carrying `data` at `offset`, with an
/// optional Destination Options header before the Fragment header.
fn v6_frag(id: u32, offset: usize, more: bool, data: &[u8], dest_opts: bool) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[7] = 64;
    p[8..24].copy_from_slice(&src6().octets());
    p[24..40].copy_from_slice(&dst6().octets());
    if dest_opts {
        p[6] = 60;
        p.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]); // PadN
    } else {
        p[6] = 44;
    }
    let off_m = u16::try_from(offset).unwrap() | u16::from(more);
    p.extend_from_slice(&[17, 0]);
    p.extend_from_slice(&off_m.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(data);
    let plen = u16::try_from(p.len() - 40).unwrap();
    p[4..6].copy_from_slice(&plen.to_be_bytes());
    p
}

/// An IPv4 fragment of the datagram `id` carrying `data` at `offset`.
fn v4_frag(id: u16, offset: usize, more: bool, data: &[u8]) -> Vec<u8> {
    let mut p = v4(data.len(), &[], false, id);
    p[20..].copy_from_slice(data);
    let mut h = Ipv4Packet::new_unchecked(&mut p[..]);
    h.set_more_frags(more);
    h.set_frag_offset_bytes(u16::try_from(offset).unwrap());
    h.fill_checksum();
    p
}

/// Runs [`fit_to_mtu`] with a `TestBuffer` pool; returns all packets in
/// order (one if it fits).
/// A drop and the ICMP error produced with it.
type Dropped = (DropReason, Option<Vec<u8>>);

fn fragment(pkt: &[u8], cfg: &FragConfig) -> Result<Vec<Vec<u8>>, Dropped> {
    let mut buf = TestBuffer::from_slice(pkt);
    let mut alloc = || Some(TestBuffer::new());
    let mut out: [Option<TestBuffer>; 64] = std::array::from_fn(|_| None);
    let mut icmp = None;
    match fit_to_mtu(&mut buf, cfg, &mut alloc, &mut out, &mut icmp) {
        Ok(Fit::Fits) => Ok(vec![buf.as_ref().to_vec()]),
        Ok(Fit::Fragmented { extra }) => {
            let mut v = vec![buf.as_ref().to_vec()];
            for o in &out[..extra] {
                v.push(o.as_ref().unwrap().as_ref().to_vec());
            }
            assert!(out[extra..].iter().all(Option::is_none));
            Ok(v)
        }
        Err(e) => {
            assert!(out.iter().all(Option::is_none));
            Err((e, icmp.map(|b| b.as_ref().to_vec())))
        }
    }
}

fn reasm() -> Reassembler {
    Reassembler::new(ReassemblyConfig {
        contexts: 4,
        max_datagram_len: 2048,
        max_fragments: 64,
        timeout_ms: 1000,
    })
}

/// Feeds `frags` in order; returns the reassembled datagram if the last
/// one completed it.
fn feed(
    r: &mut Reassembler,
    now: u64,
    frags: &[Vec<u8>],
    drops: &mut DropCounters,
) -> Option<Vec<u8>> {
    let mut done = None;
    for f in frags {
        let mut b = TestBuffer::from_slice(f);
        match r.handle_fragment(now, &mut b, drops) {
            Ok(Reassembly::Complete) => done = Some(b.as_ref().to_vec()),
            Ok(Reassembly::Held) => assert!(done.is_none()),
            Ok(Reassembly::NotFragment) => done = Some(b.as_ref().to_vec()),
            Err(e) => drops.count(e),
        }
    }
    done
}

// ---------------------------------------------------------------- frag

#[test]
fn fits_is_untouched() {
    let p = v4(1000, &[], true, 1);
    assert_eq!(fragment(&p, &fcfg(1446, false)).unwrap(), vec![p.clone()]);
    let p = v6(1000);
    assert_eq!(fragment(&p, &fcfg(1446, false)).unwrap(), vec![p.clone()]);
    // Exactly the MTU fits.
    let p = v4(1446 - 20, &[], true, 1);
    assert_eq!(fragment(&p, &fcfg(1446, false)).unwrap().len(), 1);
}

/// Byte-level check of a two-fragment split with options: Record Route
/// (not copied) + NOP, Router Alert (copied).
#[test]
fn fragment_v4_bytes_and_options() {
    let rr = [0x07, 0x07, 0x04, 0, 0, 0, 0, 0x01];
    let ra = [0x94, 0x04, 0x00, 0x00];
    let opts: Vec<u8> = rr.iter().chain(ra.iter()).copied().collect();
    let p = v4(1468, &opts, false, 0x4242);
    assert_eq!(p.len(), 1500);
    let f = fragment(&p, &fcfg(1000, false)).unwrap();
    assert_eq!(f.len(), 2);

    // First: the whole original header, 968 data bytes, MF, offset 0.
    let a = &f[0];
    assert_eq!(a.len(), 32 + 968);
    assert_eq!(a[0], 0x48);
    assert_eq!(&a[2..4], &1000u16.to_be_bytes());
    assert_eq!(&a[4..6], &0x4242u16.to_be_bytes());
    assert_eq!(&a[6..8], &[0x20, 0x00]);
    assert!(ipv4_checksum_ok(&a[..32]));
    assert_eq!(&a[20..32], &opts[..]);
    assert_eq!(&a[32..], &p[32..32 + 968]);

    // Second: only Router Alert copied, IHL 6, offset 968 (121 units).
    let b = &f[1];
    assert_eq!(b.len(), 24 + 500);
    assert_eq!(b[0], 0x46);
    assert_eq!(b[1], 0x2e);
    assert_eq!(&b[2..4], &524u16.to_be_bytes());
    assert_eq!(&b[4..6], &0x4242u16.to_be_bytes());
    assert_eq!(u16::from_be_bytes([b[6], b[7]]), 968 / 8);
    assert_eq!(
        &b[8..20],
        {
            let mut x = p[8..20].to_vec();
            x[2] = b[10];
            x[3] = b[11];
            x
        }
        .as_slice()
    );
    assert!(ipv4_checksum_ok(&b[..24]));
    assert_eq!(&b[20..24], &ra);
    assert_eq!(&b[24..], &p[32 + 968..]);

    // Every fragment fits the MTU.
    assert!(f.iter().all(|x| x.len() <= 1000));

    // And reassembles to the original, in either order.
    let mut d = DropCounters::default();
    let mut r = reasm();
    assert_eq!(feed(&mut r, 0, &f, &mut d), Some(p.clone()));
    let rev: Vec<_> = f.iter().rev().cloned().collect();
    assert_eq!(feed(&mut r, 0, &rev, &mut d), Some(p.clone()));
    assert_eq!(d.total(), 0);
    assert_eq!(r.in_progress(), 0);
}

#[test]
fn fragment_of_a_fragment_keeps_offsets_and_last_mf() {
    // A middle fragment (offset 800, MF) of some bigger datagram.
    let data: Vec<u8> = (0..1200u32)
        .map(|i| u8::try_from(i % 256).unwrap())
        .collect();
    let p = v4_frag(9, 800, true, &data);
    let f = fragment(&p, &fcfg(500, false)).unwrap();
    let mut expect_off = 800;
    for (i, x) in f.iter().enumerate() {
        let ip = Ipv4Packet::new_checked(&x[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(usize::from(ip.frag_offset_bytes()), expect_off);
        assert!(ip.more_frags(), "fragment {i}: the original had MF");
        expect_off += ip.payload().len();
    }
    assert_eq!(expect_off, 800 + 1200);
}

#[test]
fn df_set_gives_frag_needed() {
    let p = v4(1600, &[], true, 7);
    let (e, icmp) = fragment(&p, &fcfg(1438, false)).unwrap_err();
    assert_eq!(e, DropReason::TooBig);
    let icmp = icmp.unwrap();
    let ip = Ipv4Packet::new_checked(&icmp[..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.src_addr(), ME4);
    assert_eq!(ip.dst_addr(), SRC4);
    assert_eq!(usize::from(ip.total_len()), 576);
    let m = Icmpv4Repr::parse(&Icmpv4Packet::new_checked(ip.payload()).unwrap()).unwrap();
    assert_eq!(m, Icmpv4Repr::frag_needed(1438, &p));
    assert_eq!(m.data(), &p[..548]);

    // The SA policy "clear DF" fragments instead, DF cleared everywhere.
    let f = fragment(&p, &fcfg(1438, FragConfig::ignore_df_for(DfPolicy::Clear))).unwrap();
    assert_eq!(f.len(), 2);
    assert!(f.iter().all(|x| x[6] & 0x40 == 0 && x.len() <= 1438));
    assert!(!FragConfig::ignore_df_for(DfPolicy::CopyFromInner));

    // No ICMP about an ICMP error, nor to a multicast/zero source.
    let mut q = v4(1600, &[], true, 7);
    q[9] = 1;
    q[20] = 3;
    ipv4_fill_checksum(&mut q);
    assert_eq!(
        fragment(&q, &fcfg(1438, false)),
        Err((DropReason::TooBig, None))
    );
    let mut q = v4(1600, &[], true, 7);
    q[12..16].copy_from_slice(&[0, 0, 0, 0]);
    ipv4_fill_checksum(&mut q);
    assert_eq!(
        fragment(&q, &fcfg(1438, false)),
        Err((DropReason::TooBig, None))
    );
    // An echo request does get one.
    let mut q = v4(1600, &[], true, 7);
    q[9] = 1;
    q[20] = 8;
    ipv4_fill_checksum(&mut q);
    assert!(fragment(&q, &fcfg(1438, false)).unwrap_err().1.is_some());
}

#[test]
fn ipv6_gets_packet_too_big() {
    let p = v6(1500);
    let (e, icmp) = fragment(&p, &fcfg(1426, false)).unwrap_err();
    assert_eq!(e, DropReason::TooBig);
    let icmp = icmp.unwrap();
    assert_eq!(icmp.len(), 1280);
    assert_eq!(icmp[6], 58);
    assert_eq!(&icmp[8..24], &me6().octets());
    assert_eq!(&icmp[24..40], &src6().octets());
    let m = Icmpv6Repr::parse(
        &Icmpv6Packet::new_checked(&icmp[40..]).unwrap(),
        me6(),
        src6(),
    )
    .unwrap();
    assert_eq!(m, Icmpv6Repr::packet_too_big(1426, &p));
    // ignore_df does not apply to IPv6.
    assert_eq!(
        fragment(&p, &fcfg(1426, true)).unwrap_err().0,
        DropReason::TooBig
    );
    // Below 1280 the reported MTU is 1280 and 1280-byte packets pass.
    assert_eq!(fragment(&v6(1240), &fcfg(1000, false)).unwrap().len(), 1);
    let (_, icmp) = fragment(&v6(1300), &fcfg(1000, false)).unwrap_err();
    assert_eq!(&icmp.unwrap()[44..48], &1280u32.to_be_bytes());
    // No PTB about an ICMPv6 error.
    let mut q = v6(1500);
    q[6] = 58;
    q[40] = 1;
    assert_eq!(
        fragment(&q, &fcfg(1426, false)),
        Err((DropReason::TooBig, None))
    );
}

#[test]
fn pool_exhaustion_and_small_output_fail_cleanly() {
    let p = v4(1900, &[], false, 3);
    // Pool gives one buffer, three are needed.
    let mut buf = TestBuffer::from_slice(&p);
    let mut n = 0;
    let mut alloc = || {
        n += 1;
        (n <= 1).then(TestBuffer::new)
    };
    let mut out: [Option<TestBuffer>; 8] = std::array::from_fn(|_| None);
    let mut icmp = None;
    let r = fit_to_mtu(&mut buf, &fcfg(600, false), &mut alloc, &mut out, &mut icmp);
    assert_eq!(r, Err(DropReason::FragmentFailed));
    assert!(out.iter().all(Option::is_none));
    // Output array too small: nothing allocated at all.
    let mut buf = TestBuffer::from_slice(&p);
    let mut out: [Option<TestBuffer>; 2] = std::array::from_fn(|_| None);
    let mut never = || -> Option<TestBuffer> { unreachable!() };
    let r = fit_to_mtu(&mut buf, &fcfg(600, false), &mut never, &mut out, &mut icmp);
    assert_eq!(r, Err(DropReason::FragmentFailed));
    // A buffer without room for a fragment.
    let mut buf = TestBuffer::from_slice(&p);
    let mut tiny = || Some(TestBuffer::with_room(100, 10));
    let mut out: [Option<TestBuffer>; 8] = std::array::from_fn(|_| None);
    let r = fit_to_mtu(&mut buf, &fcfg(600, false), &mut tiny, &mut out, &mut icmp);
    assert_eq!(r, Err(DropReason::FragmentFailed));
    assert!(out.iter().all(Option::is_none));
    // Malformed options.
    let bad = v4(1500, &[0x83, 0x09, 0, 0], false, 1);
    assert_eq!(
        fragment(&bad, &fcfg(600, false)).unwrap_err().0,
        DropReason::InnerMalformed
    );
    // Garbage.
    assert_eq!(
        fragment(&[0x45, 0, 0], &fcfg(600, false)).unwrap_err().0,
        DropReason::InnerMalformed
    );
    assert_eq!(
        fragment(&[], &fcfg(600, false)).unwrap_err().0,
        DropReason::InnerMalformed
    );
}

// ---------------------------------------------------------- reassembly

#[test]
fn not_a_fragment_passes() {
    let mut r = reasm();
    let mut d = DropCounters::default();
    for p in [v4(100, &[], true, 1), v6(100)] {
        let mut b = TestBuffer::from_slice(&p);
        assert_eq!(
            r.handle_fragment(0, &mut b, &mut d),
            Ok(Reassembly::NotFragment)
        );
        assert_eq!(b.as_ref(), &p[..]);
    }
    // A whole datagram is not the reassembler's to judge, even with a bad
    // checksum; the forwarding path checks it.
    let mut whole = v4(100, &[], false, 1);
    whole[10] ^= 1;
    let mut b = TestBuffer::from_slice(&whole);
    assert_eq!(
        r.handle_fragment(0, &mut b, &mut d),
        Ok(Reassembly::NotFragment)
    );
    // A first fragment with a bad checksum is refused before it is held.
    let mut frag = v4(96, &[], false, 1);
    frag[6] |= 0x20;
    Ipv4Packet::new_unchecked(&mut frag[..]).fill_checksum();
    frag[10] ^= 1;
    let mut b = TestBuffer::from_slice(&frag);
    assert_eq!(
        r.handle_fragment(0, &mut b, &mut d),
        Err(DropReason::InnerMalformed)
    );
}

#[test]
fn v4_out_of_order_and_duplicates() {
    let data: Vec<u8> = (0..300u32)
        .map(|i| u8::try_from(i % 256).unwrap())
        .collect();
    let f0 = v4_frag(5, 0, true, &data[..104]);
    let f1 = v4_frag(5, 104, true, &data[104..200]);
    let f2 = v4_frag(5, 200, false, &data[200..]);
    let mut r = reasm();
    let mut d = DropCounters::default();
    let want = v4(300, &[], false, 5);
    let mut w = want.clone();
    w[20..].copy_from_slice(&data);
    ipv4_fill_checksum(&mut w);
    let out = feed(
        &mut r,
        0,
        &[f2.clone(), f0.clone(), f0.clone(), f1.clone()],
        &mut d,
    );
    assert_eq!(out, Some(w));
    assert_eq!(d.get(DropReason::ReassemblyDuplicate), 1);
    assert_eq!(d.total(), 1);
}

#[test]
fn v4_and_v6_overlaps_drop_the_datagram() {
    let data = [0x11u8; 64];
    for v6 in [false, true] {
        let mk = |off: usize, more: bool, len: usize| {
            if v6 {
                v6_frag(77, off, more, &data[..len], false)
            } else {
                v4_frag(77, off, more, &data[..len])
            }
        };
        let mut r = reasm();
        let mut d = DropCounters::default();
        // [0,32) then [24,40): overlap → everything dropped.
        assert!(feed(&mut r, 0, &[mk(0, true, 32), mk(24, true, 16)], &mut d).is_none());
        assert_eq!(d.get(DropReason::ReassemblyOverlap), 1);
        assert_eq!(r.in_progress(), 0);
        // The rest then cannot complete the old datagram: a new one starts.
        assert!(feed(&mut r, 0, &[mk(32, false, 8)], &mut d).is_none());
        assert_eq!(r.in_progress(), 1);
        // Two different ends.
        let mut r = reasm();
        let mut d = DropCounters::default();
        assert!(feed(&mut r, 0, &[mk(8, false, 8), mk(16, false, 8)], &mut d).is_none());
        assert_eq!(d.get(DropReason::ReassemblyOverlap), 1);
        // Data beyond the end.
        let mut r = reasm();
        assert!(feed(&mut r, 0, &[mk(8, false, 8), mk(16, true, 8)], &mut d).is_none());
        assert_eq!(d.get(DropReason::ReassemblyOverlap), 2);
        // Non-last fragment not a multiple of 8.
        let mut b = TestBuffer::from_slice(&mk(0, true, 12));
        assert_eq!(
            r.handle_fragment(0, &mut b, &mut d),
            Err(DropReason::InnerMalformed)
        );
    }
}

#[test]
fn v6_reassembly_with_unfragmentable_part() {
    let payload: Vec<u8> = (0..1000u32)
        .map(|i| u8::try_from(i % 256).unwrap())
        .collect();
    for dest_opts in [false, true] {
        let frags = [
            v6_frag(0xdead_beef, 512, false, &payload[512..], dest_opts),
            v6_frag(0xdead_beef, 0, true, &payload[..512], dest_opts),
        ];
        let mut r = reasm();
        let mut d = DropCounters::default();
        let out = feed(&mut r, 0, &frags, &mut d).unwrap();
        let hl = if dest_opts { 48 } else { 40 };
        assert_eq!(out.len(), hl + 1000);
        assert_eq!(
            usize::from(u16::from_be_bytes([out[4], out[5]])),
            hl - 40 + 1000
        );
        if dest_opts {
            assert_eq!(out[6], 60);
            assert_eq!(out[40], 17, "Destination Options now names UDP");
        } else {
            assert_eq!(out[6], 17);
        }
        assert_eq!(&out[hl..], &payload[..]);
        assert_eq!(d.total(), 0);
    }
}

#[test]
fn v6_atomic_fragment_is_unwrapped() {
    let mut r = reasm();
    let mut d = DropCounters::default();
    for dest_opts in [false, true] {
        let f = v6_frag(1, 0, false, b"hello, world", dest_opts);
        let mut b = TestBuffer::from_slice(&f);
        assert_eq!(
            r.handle_fragment(0, &mut b, &mut d),
            Ok(Reassembly::Complete)
        );
        let o = b.as_ref();
        assert_eq!(o.len(), f.len() - 8);
        assert_eq!(&o[o.len() - 12..], b"hello, world");
        assert_eq!(usize::from(u16::from_be_bytes([o[4], o[5]])), o.len() - 40);
        if dest_opts {
            assert_eq!((o[6], o[40]), (60, 17));
        } else {
            assert_eq!(o[6], 17);
        }
    }
    assert_eq!(r.in_progress(), 0);
}

#[test]
fn timeouts() {
    let data = [7u8; 16];
    let mut r = reasm();
    let mut d = DropCounters::default();
    assert!(feed(&mut r, 100, &[v4_frag(1, 0, true, &data[..8])], &mut d).is_none());
    assert!(feed(&mut r, 500, &[v4_frag(2, 0, true, &data[..8])], &mut d).is_none());
    assert_eq!(r.poll_timeout(), Some(1100));
    r.handle_timeout(1099, &mut d);
    assert_eq!(r.in_progress(), 2);
    r.handle_timeout(1100, &mut d);
    assert_eq!(r.in_progress(), 1);
    assert_eq!(d.get(DropReason::ReassemblyTimeout), 1);
    assert_eq!(r.poll_timeout(), Some(1500));
    // Lazily: the late second half of datagram 2 finds it expired and
    // starts over instead of completing it.
    assert!(feed(&mut r, 1500, &[v4_frag(2, 8, false, &data[8..])], &mut d).is_none());
    assert_eq!(d.get(DropReason::ReassemblyTimeout), 2);
    assert_eq!(r.in_progress(), 1);
    // Within the timeout it completes.
    let out = feed(&mut r, 2000, &[v4_frag(2, 0, true, &data[..8])], &mut d);
    assert!(out.is_some());
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn limits() {
    let data = [1u8; 2048];
    // Too many fragments.
    let mut r = Reassembler::new(ReassemblyConfig {
        max_fragments: 3,
        ..ReassemblyConfig::default()
    });
    let mut d = DropCounters::default();
    let frags: Vec<_> = (0..4)
        .map(|i| v4_frag(1, i * 8, true, &data[..8]))
        .collect();
    assert!(feed(&mut r, 0, &frags, &mut d).is_none());
    assert_eq!(d.get(DropReason::ReassemblyTooManyFragments), 1);
    assert_eq!(r.in_progress(), 0);
    // Too big for the configured maximum.
    let mut r = Reassembler::new(ReassemblyConfig {
        max_datagram_len: 1000,
        ..ReassemblyConfig::default()
    });
    let frags = [
        v4_frag(2, 0, true, &data[..976]),
        v4_frag(2, 976, false, &data[..8]),
    ];
    assert!(feed(&mut r, 0, &frags, &mut d).is_none());
    assert_eq!(d.get(DropReason::ReassemblyTooBig), 1);
    assert_eq!(r.in_progress(), 0);
    // Too big for the completing buffer.
    let mut r = Reassembler::new(ReassemblyConfig {
        max_datagram_len: 4096,
        ..ReassemblyConfig::default()
    });
    let mut b = TestBuffer::from_slice(&v4_frag(3, 0, true, &data[..1600]));
    assert_eq!(r.handle_fragment(0, &mut b, &mut d), Ok(Reassembly::Held));
    let mut b = TestBuffer::from_slice(&v4_frag(3, 1600, false, &data[..1000]));
    assert_eq!(
        r.handle_fragment(0, &mut b, &mut d),
        Err(DropReason::ReassemblyTooBig)
    );
    // Table full: the oldest is evicted.
    let mut r = Reassembler::new(ReassemblyConfig {
        contexts: 2,
        ..ReassemblyConfig::default()
    });
    let mut d = DropCounters::default();
    for (t, id) in [(0, 10), (1, 11), (2, 12)] {
        assert!(feed(&mut r, t, &[v4_frag(id, 0, true, &data[..8])], &mut d).is_none());
    }
    assert_eq!(d.get(DropReason::ReassemblyEvicted), 1);
    assert_eq!(r.in_progress(), 2);
    // 11 and 12 survive; 10 was evicted.
    assert!(feed(&mut r, 3, &[v4_frag(11, 8, false, &data[..8])], &mut d).is_some());
    assert!(feed(&mut r, 3, &[v4_frag(12, 8, false, &data[..8])], &mut d).is_some());
    assert!(feed(&mut r, 3, &[v4_frag(10, 8, false, &data[..8])], &mut d).is_none());
}

#[test]
fn ecn_is_combined_rfc3168() {
    let data = [9u8; 16];
    let with_ecn = |mut f: Vec<u8>, ecn: u8, v6: bool| {
        if v6 {
            f[1] = (f[1] & 0xcf) | (ecn << 4);
        } else {
            f[1] = (f[1] & 0xfc) | ecn;
            ipv4_fill_checksum(&mut f);
        }
        f
    };
    for v6 in [false, true] {
        let mk = |off: usize, more: bool, ecn: u8| {
            let f = if v6 {
                v6_frag(3, off, more, &data[off..off + 8], false)
            } else {
                v4_frag(3, off, more, &data[off..off + 8])
            };
            with_ecn(f, ecn, v6)
        };
        let ecn_of = |p: &[u8]| if v6 { (p[1] >> 4) & 3 } else { p[1] & 3 };
        let mut d = DropCounters::default();
        // ECT(0) + CE → CE.
        let mut r = reasm();
        let out = feed(&mut r, 0, &[mk(0, true, 2), mk(8, false, 3)], &mut d).unwrap();
        assert_eq!(ecn_of(&out), 3);
        if !v6 {
            assert!(ipv4_checksum_ok(&out[..20]));
        }
        // Not-ECT + ECT(1) → dropped.
        let out = feed(&mut r, 0, &[mk(0, true, 0), mk(8, false, 1)], &mut d);
        assert!(out.is_none());
        assert_eq!(d.get(DropReason::InnerMalformed), 1);
        assert_eq!(r.in_progress(), 0);
        // All Not-ECT → Not-ECT.
        let out = feed(&mut r, 0, &[mk(8, false, 0), mk(0, true, 0)], &mut d).unwrap();
        assert_eq!(ecn_of(&out), 0);
    }
}

/// Inner packets fragmented before encryption, each fragment
/// encapsulated and decapsulated separately, then reassembled: the
/// whole RFC 4459 § 5.2 path, for every algorithm and NAT-T setting.
#[test]
fn prefragment_encap_decap_reassemble() {
    use super::mtu::sa_tunnel_mtu;
    use crate::crypto::EspAlgorithm;
    for alg in EspAlgorithm::ALL {
        for nat_t in [false, true] {
            let (mut out_sa, mut in_sa) = super::tests::pair(alg, false, nat_t, false);
            let mtu = sa_tunnel_mtu(&out_sa);
            let p = v4(1900, &[], false, 0x77);
            let frags = fragment(&p, &fcfg(mtu, false)).unwrap();
            assert_eq!(frags.len(), 2);
            let mut r = reasm();
            let mut d = DropCounters::default();
            let mut done = None;
            for f in &frags {
                let mut b = TestBuffer::from_slice(f);
                super::encap(&mut out_sa, &mut b).unwrap();
                assert!(b.len() <= 1500, "{alg:?} nat_t={nat_t}: {}", b.len());
                let off = 20 + if nat_t { 8 } else { 0 };
                super::decap(&mut in_sa, &mut b, off).unwrap();
                assert_eq!(b.as_ref(), &f[..]);
                if r.handle_fragment(0, &mut b, &mut d) == Ok(Reassembly::Complete) {
                    done = Some(b.as_ref().to_vec());
                }
            }
            assert_eq!(done, Some(p));
        }
    }
}

/// A deterministic shuffle (xorshift), so failures reproduce.
fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut s = seed | 1;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let j = usize::try_from(s % (u64::try_from(i).unwrap() + 1)).unwrap();
        v.swap(i, j);
    }
}

proptest! {
    /// fragment(p) then reassemble == p, for random sizes, MTUs, options
    /// and arrival orders.
    #[test]
    fn fragment_then_reassemble_is_identity(
        payload_len in 1usize..2000,
        mtu in 68u16..1500,
        with_options in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let opts: &[u8] = if with_options {
            &[0x07, 0x07, 0x04, 0, 0, 0, 0, 0x01, 0x94, 0x04, 0x00, 0x00]
        } else {
            &[]
        };
        let p = v4(payload_len, opts, false, 0x1234);
        let mut f = match fragment(&p, &fcfg(mtu, false)) {
            Ok(f) => f,
            Err((e, icmp)) => {
                // More than 64 fragments (tiny MTU, big packet).
                prop_assert_eq!(e, DropReason::FragmentFailed);
                prop_assert!(icmp.is_none());
                prop_assert!(usize::from(mtu) < 68 + 40);
                return Ok(());
            }
        };
        for x in &f {
            prop_assert!(x.len() <= usize::from(mtu));
            prop_assert!(ipv4_checksum_ok(&x[..usize::from(x[0] & 0xf) * 4]));
        }
        shuffle(&mut f, seed);
        let mut r = Reassembler::new(ReassemblyConfig { max_fragments: 64, ..ReassemblyConfig::default() });
        let mut d = DropCounters::default();
        prop_assert_eq!(feed(&mut r, 0, &f, &mut d), Some(p));
        prop_assert_eq!(d.total(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        version in prop_oneof![Just(0x45u8), Just(0x46), Just(0x60), any::<u8>()],
        frag_bits in any::<u16>(),
    ) {
        let mut b = bytes;
        if let Some(x) = b.first_mut() {
            *x = version;
        }
        if b.len() >= 20 && version == 0x45 {
            // Make the header consistent half the time, so the fragment
            // paths are reached.
            if frag_bits & 0x8000 != 0 {
                let len = u16::try_from(b.len()).unwrap();
                b[2..4].copy_from_slice(&len.to_be_bytes());
            }
            b[6..8].copy_from_slice(&(frag_bits & 0x3fff).to_be_bytes());
            ipv4_fill_checksum(&mut b);
        }
        if b.len() >= 40 && version >> 4 == 6 {
            b[6] = 44;
        }
        let mut r = Reassembler::new(ReassemblyConfig { contexts: 2, ..ReassemblyConfig::default() });
        let mut d = DropCounters::default();
        for now in [0, 10, 100_000] {
            let mut buf = TestBuffer::from_slice(&b);
            let _ = r.handle_fragment(now, &mut buf, &mut d);
            r.handle_timeout(now, &mut d);
        }
        let mut buf = TestBuffer::from_slice(&b);
        let mut alloc = || Some(TestBuffer::new());
        let mut out: [Option<TestBuffer>; 4] = std::array::from_fn(|_| None);
        let mut icmp = None;
        let _ = fit_to_mtu(&mut buf, &fcfg(100, false), &mut alloc, &mut out, &mut icmp);
    }
}
