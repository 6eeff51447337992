//! Pre-fragmentation and reassembly on arbitrary packet sequences: none
//! may panic. The input is split into packets by a one-byte length
//! prefix (times 8, so multi-fragment datagrams are reachable), fed to a
//! small `Reassembler` with a clock that advances per packet, and each
//! packet is also offered to `fit_to_mtu` with a small MTU.
#![no_main]

use dataplane::esp::frag::{FragConfig, fit_to_mtu};
use dataplane::esp::reassembly::{Reassembler, ReassemblyConfig};
use dataplane::esp::DropCounters;
use libfuzzer_sys::fuzz_target;
use netbuf::TestBuffer;

fuzz_target!(|data: &[u8]| {
    let mut r = Reassembler::new(ReassemblyConfig {
        contexts: 4,
        max_datagram_len: 2048,
        max_fragments: 8,
        timeout_ms: 100,
    });
    let mut drops = DropCounters::default();
    let cfg = FragConfig {
        mtu: 96,
        ignore_df: data.first().is_some_and(|b| b & 1 == 1),
        icmp_src_v4: [169, 254, 0, 1].into(),
        icmp_src_v6: [0xfd00, 0, 0, 0, 0, 0, 0, 1].into(),
    };
    let mut rest = data;
    let mut now = 0u64;
    while let Some((&n, tail)) = rest.split_first() {
        let len = (usize::from(n) * 8).min(tail.len());
        let (pkt, tail) = tail.split_at(len);
        rest = tail;
        now += u64::from(n % 64);
        let mut b = TestBuffer::from_slice(pkt);
        let _ = r.handle_fragment(now, &mut b, &mut drops);
        r.handle_timeout(now, &mut drops);
        let mut b = TestBuffer::from_slice(pkt);
        let mut alloc = || Some(TestBuffer::new());
        let mut out: [Option<TestBuffer>; 32] = std::array::from_fn(|_| None);
        let mut icmp = None;
        let _ = fit_to_mtu(&mut b, &cfg, &mut alloc, &mut out, &mut icmp);
    }
});
