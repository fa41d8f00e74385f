//! Both bid-file parsers over arbitrary bytes.
#![no_main]
use bidding_core::bidfile::{Limits, parse_encrypted, parse_plaintext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_bytes: 1 << 16, max_rows: 512 };
    if let Ok(rows) = parse_encrypted("f", data, limits) {
        assert!(rows.len() <= 512);
        assert!(rows.iter().all(|r| !r.ciphertext.is_empty()));
    }
    let _ = parse_plaintext("f", data, limits);
});
