//! Throughput of the envelope bid-file decoder: `Message::parse` (header, frame walk, ECDSA
//! P-384 signature) plus `decrypt` (HKDF, commitment, header tag, AES-256-GCM frames) of a
//! 1,000,000-row `contract,bid` file, per row. CSV and amount parsing are not included.
//!
//! Run optimised, as the enclave is built:
//! `cargo run --release -p bidding-core --example esdk_bench [ROWS] [FRAME_LENGTH]`

use bidding_core::esdk::{Encryptor, Limits, Message};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().map_or(1_000_000, |a| a.parse().expect("ROWS"));
    let frame_length: u32 = args
        .next()
        .map_or(4096, |a| a.parse().expect("FRAME_LENGTH"));

    let mut csv = String::with_capacity(rows * 24 + 16);
    csv.push_str("contract,bid\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "lot-{i:07},{}.{:02}\n",
            100_000 + (i * 7919) % 900_000,
            i % 100
        ));
    }
    let key = [7u8; 32];
    let context = BTreeMap::from([
        ("auction".to_owned(), "bench".to_owned()),
        ("buyer".to_owned(), "alice".to_owned()),
    ]);
    let message = Encryptor::new(context)
        .expect("signing key")
        .encrypt(
            &key,
            b"edk",
            "arn:aws:kms:us-east-1:111122223333:key/bench",
            csv.as_bytes(),
            frame_length,
        )
        .expect("encrypting");

    let limits = Limits::default();
    let mut parse_times = Vec::new();
    let mut total_times = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        let m = Message::parse(&message, &limits).expect("parse");
        let parsed = start.elapsed();
        let plaintext = m.decrypt(&key).expect("decrypt");
        let total = start.elapsed();
        assert_eq!(plaintext.len(), csv.len());
        parse_times.push(parsed);
        total_times.push(total);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (parse, total) = (median(&mut parse_times), median(&mut total_times));
    let per_row = |d: Duration| d.as_nanos() as f64 / rows as f64;
    println!(
        "esdk_bench: {rows} rows, {} bytes plaintext, {} bytes message, frame length {frame_length}",
        csv.len(),
        message.len()
    );
    println!(
        "parse (header, frames, signature): {:.1} ms = {:.1} ns/row",
        parse.as_secs_f64() * 1e3,
        per_row(parse)
    );
    println!(
        "parse + decrypt: {:.1} ms = {:.1} ns/row, {:.0} MB/s (median of 7)",
        total.as_secs_f64() * 1e3,
        per_row(total),
        csv.len() as f64 / total.as_secs_f64() / 1e6
    );
}
