//! Cross-check of inner IPv4 pre-fragmentation and reassembly against
//! scapy, both ways: scapy's `defragment` reassembles the fragments our
//! [`fit_to_mtu`] produced into the original datagram, and our
//! [`Reassembler`] reassembles the fragments scapy's `fragment` produced.
//! If python3 or scapy is missing the test says so on stderr and passes
//! as skipped (outside CI).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use dataplane::esp::frag::{Fit, FragConfig, fit_to_mtu};
use dataplane::esp::reassembly::{Reassembler, Reassembly, ReassemblyConfig};
use dataplane::esp::{DropCounters, DropReason};
use netbuf::TestBuffer;

const SCRIPT: &str = r#"
import sys
from scapy.layers.inet import IP, defragment, fragment
out = []
for line in sys.stdin:
    f = line.split()
    if f[0] == "defrag":
        pkts = [IP(bytes.fromhex(h)) for h in f[1:]]
        d = defragment(pkts)
        out.append(" ".join(bytes(p).hex() for p in d))
    elif f[0] == "frag":
        size = int(f[1])
        frags = fragment(IP(bytes.fromhex(f[2])), fragsize=size)
        out.append(" ".join(bytes(p).hex() for p in frags))
print("\n".join(out))
"#;

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn checksum(h: &mut [u8]) {
    h[10] = 0;
    h[11] = 0;
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    let c = !u16::try_from(s).unwrap();
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

fn datagram(payload_len: usize, options: &[u8], id: u16) -> Vec<u8> {
    let hl = 20 + options.len();
    let total = u16::try_from(hl + payload_len).unwrap();
    let mut p = vec![0x40 | u8::try_from(hl / 4).unwrap(), 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 1, 0, 2]);
    p.extend_from_slice(options);
    checksum(&mut p[..hl]);
    p.extend((0..payload_len).map(|i| u8::try_from((i * 13 + 5) % 256).unwrap()));
    p
}

fn ours(p: &[u8], mtu: u16) -> Vec<Vec<u8>> {
    let cfg = FragConfig {
        mtu,
        ignore_df: false,
        icmp_src_v4: "169.254.0.1".parse().unwrap(),
        icmp_src_v6: "fd00::1".parse().unwrap(),
    };
    let mut buf = TestBuffer::from_slice(p);
    let mut alloc = || Some(TestBuffer::new());
    let mut out: [Option<TestBuffer>; 64] = std::array::from_fn(|_| None);
    let mut icmp = None;
    let fit = fit_to_mtu(&mut buf, &cfg, &mut alloc, &mut out, &mut icmp).unwrap();
    let Fit::Fragmented { extra } = fit else {
        panic!("expected fragments")
    };
    let mut v = vec![buf.as_ref().to_vec()];
    v.extend(
        out[..extra]
            .iter()
            .map(|b| b.as_ref().unwrap().as_ref().to_vec()),
    );
    v
}

#[test]
fn scapy_fragments_both_ways() {
    if !testkit::scapy_available() {
        return;
    }
    // Router Alert (copied) and Record Route (not copied) + NOP.
    let opts = [0x94, 0x04, 0, 0, 0x07, 0x07, 0x04, 0, 0, 0, 0, 0x01];
    let mut cases = Vec::new();
    for (i, &(len, mtu, with_opts)) in [
        (1480usize, 576u16, false),
        (1900, 1438, false),
        (1900, 1000, true),
        (1200, 68, false),
        (333, 100, true),
        (1999, 1406, true),
    ]
    .iter()
    .enumerate()
    {
        let o: &[u8] = if with_opts { &opts } else { &[] };
        let p = datagram(len, o, u16::try_from(i).unwrap() + 100);
        cases.push((p, mtu));
    }
    let mut input = String::new();
    let mut our_frags = Vec::new();
    for (p, mtu) in &cases {
        let f = ours(p, *mtu);
        let _ = writeln!(
            input,
            "defrag {}",
            f.iter().map(|x| hex(x)).collect::<Vec<_>>().join(" ")
        );
        our_frags.push(f);
    }
    for (p, mtu) in &cases {
        // scapy's fragsize is the data bytes per fragment (multiple of 8).
        let size = ((usize::from(*mtu) - 60) / 8 * 8).max(32);
        let _ = writeln!(input, "frag {size} {}", hex(p));
    }
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 * cases.len());

    // 1. scapy reassembles our fragments into the original.
    for ((p, mtu), line) in cases.iter().zip(&lines) {
        let d: Vec<Vec<u8>> = line.split_whitespace().map(unhex).collect();
        assert_eq!(d.len(), 1, "mtu {mtu}: scapy left {} packets", d.len());
        assert_eq!(&d[0], p, "mtu {mtu}");
    }
    // 2. We reassemble scapy's fragments into the original.
    let mut r = Reassembler::new(ReassemblyConfig {
        max_fragments: 64,
        ..ReassemblyConfig::default()
    });
    let mut drops = DropCounters::default();
    for ((p, _), line) in cases.iter().zip(&lines[cases.len()..]) {
        let frags: Vec<Vec<u8>> = line.split_whitespace().map(unhex).collect();
        assert!(frags.len() > 1);
        let mut done = None;
        for f in frags.iter().rev() {
            let mut b = TestBuffer::from_slice(f);
            match r.handle_fragment(0, &mut b, &mut drops) {
                Ok(Reassembly::Complete) => done = Some(b.as_ref().to_vec()),
                Ok(Reassembly::Held) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(done.as_ref(), Some(p));
    }
    assert_eq!(drops.total(), 0);
    assert_eq!(drops.get(DropReason::ReassemblyOverlap), 0);
}
