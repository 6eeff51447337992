//! The OpenVPN data channel in memory on one core: `seal_in_place` and
//! `open_in_place` of P_DATA_V2 packets (what a worker will call per
//! packet), against ring's AES-GCM alone over the same bytes (the
//! ceiling: the difference is header, nonce and replay-window work).
//!
//! ```text
//! cargo bench -p control --bench ovpn_data [-- --ms 300]
//! ```
//!
//! Each cell runs for `--ms` (default 300) after a warm-up; Gbps counts
//! plaintext bytes. Sealing and opening alternate on one buffer, so every
//! packet id is fresh for the replay window.

use std::hint::black_box;
use std::time::{Duration, Instant};

use control::openvpn::data::{DATA_V2_OVERHEAD, DataCipher, DataKeys, EKM_LEN};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

fn run(ms: u64, mut f: impl FnMut()) -> f64 {
    for _ in 0..1000 {
        f();
    }
    let limit = Duration::from_millis(ms);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < limit {
        for _ in 0..256 {
            f();
        }
        n += 256;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let mut ms = 300u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--ms" {
            ms = args.next().and_then(|v| v.parse().ok()).unwrap_or(ms);
        }
    }
    let mut ekm = [0u8; EKM_LEN];
    for (i, b) in ekm.iter_mut().enumerate() {
        *b = u8::try_from(i % 256).expect("byte").wrapping_mul(29);
    }
    println!(
        "| cipher | plaintext B | seal+open ns/pkt | Gbps (one direction each) | ring seal+open ns/pkt | ratio |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for cipher in [DataCipher::Aes128Gcm, DataCipher::Aes256Gcm] {
        for size in [64usize, 512, 1420] {
            let keys = DataKeys::from_ekm(cipher, &ekm);
            let mut server = keys.server_channel(0, 7);
            let mut client = keys.client_channel(0, 7);
            let mut buf = vec![0x45u8; DATA_V2_OVERHEAD + size];
            let ours = run(ms, || {
                server.seal_in_place(&mut buf).expect("seal");
                let r = client.open_in_place(&mut buf).expect("open");
                black_box(r);
            });
            let alg = match cipher {
                DataCipher::Aes128Gcm => &AES_128_GCM,
                DataCipher::Aes256Gcm => &AES_256_GCM,
            };
            let key = LessSafeKey::new(UnboundKey::new(alg, &ekm[..alg.key_len()]).expect("key"));
            let mut data = vec![0x45u8; size + 16];
            let mut ctr = 0u32;
            let raw = run(ms, || {
                ctr = ctr.wrapping_add(1);
                let mut n = [0u8; 12];
                n[..4].copy_from_slice(&ctr.to_be_bytes());
                let (body, tag_out) = data.split_at_mut(size);
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(n),
                        Aad::from([0u8; 8]),
                        body,
                    )
                    .expect("seal");
                tag_out.copy_from_slice(tag.as_ref());
                let p = key
                    .open_in_place(
                        Nonce::assume_unique_for_key(n),
                        Aad::from([0u8; 8]),
                        &mut data,
                    )
                    .expect("open");
                black_box(p.len());
            });
            let gbps = (size * 8) as f64 / (ours / 2.0);
            println!(
                "| {} | {size} | {ours:.0} | {gbps:.1} | {raw:.0} | {:.2} |",
                cipher.name(),
                raw / ours
            );
        }
    }
}
