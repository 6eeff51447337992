//! A rough in-memory measure of the whole pipeline per packet (classify,
//! MSS clamp, MTU check, encap or decap + reassembly check, FIB, counters)
//! on `TestBuffer`s. Not a benchmark (those live in `bench/`): a quick
//! number for the worker's own changes. Run with
//! `cargo test --release -p worker --test throughput -- --ignored --nocapture`.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "a measurement printout"
)]

mod common;

use std::time::Instant;

use common::*;
use dataplane::crypto::EspAlgorithm;
use netbuf::TestBuffer;
use worker::Action;

#[test]
#[ignore = "a measurement, run in release by hand"]
fn pipeline_ns_per_packet() {
    for (alg, len) in [
        (EspAlgorithm::Aes128Gcm16, 64usize),
        (EspAlgorithm::Aes128Gcm16, 1420),
        (EspAlgorithm::Aes256Gcm16, 1420),
    ] {
        let (mut conc, mut cgw) = pair(alg, false);
        let inner = udp_v4([198, 51, 100, 2], [203, 0, 113, 5], len - 28);
        let template = frame(INSIDE_MAC, VPC_ROUTER_MAC, 0x0800, &inner);
        const N: usize = 200_000;
        // Encap on conc; keep a slice of the output to decap on cgw.
        let mut sealed: Vec<TestBuffer> = Vec::with_capacity(4096);
        let mut b = template.duplicate();
        let t = Instant::now();
        for i in 0..N {
            if i % 32 == 0 {
                conc.worker.begin_burst(32);
            }
            b.reset(template.as_ref()).unwrap();
            assert_eq!(conc.worker.handle_inside(&mut b), Action::ToOutside);
            if sealed.len() < sealed.capacity() {
                sealed.push(b.duplicate());
            }
        }
        let enc = t.elapsed().as_nanos() as f64 / N as f64;
        let frames: Vec<Vec<u8>> = sealed.iter().map(|b| b.as_ref().to_vec()).collect();
        let t = Instant::now();
        for f in &frames {
            let mut b = TestBuffer::from_slice(f);
            assert_eq!(cgw.worker.handle_outside(&mut b), Action::ToInside);
        }
        let dec = t.elapsed().as_nanos() as f64 / frames.len() as f64;
        println!(
            "{alg:?} {len} B: encap {enc:.0} ns/pkt ({:.2} Gbps inner), decap {dec:.0} ns/pkt ({:.2} Gbps)",
            len as f64 * 8.0 / enc,
            len as f64 * 8.0 / dec
        );
    }
}
