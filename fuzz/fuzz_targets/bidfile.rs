//! The bid-file parsers over arbitrary bytes, the enclave's lenient ones included.
#![no_main]
use bidding_core::bidfile::{
    Limits, parse_encrypted, parse_encrypted_lenient, parse_plaintext, parse_plaintext_lenient,
    walk_plaintext,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_bytes: 1 << 16, max_rows: 512 };
    if let Ok(rows) = parse_encrypted("f", data, limits) {
        assert!(rows.len() <= 512);
        assert!(rows.iter().all(|r| !r.ciphertext.is_empty()));
    }
    let _ = parse_plaintext("f", data, limits);
    if let Ok(f) = parse_encrypted_lenient("f", data, limits) {
        assert!(f.rows.len() <= 512);
        // A lot set aside as repeated never also counts as a row.
        assert!(f.rows.iter().all(|r| !f.duplicate_lots.contains(&r.lot)));
    }
    // The enclave's parser for an envelope file's plaintext.
    if let Ok(f) = parse_plaintext_lenient("f", data, limits) {
        let counted = f.rows.len() as u64 + f.malformed_rows + f.invalid_amounts;
        assert!(counted <= 512);
        assert!(f.rows.iter().all(|r| !f.duplicate_lots.contains(&r.lot)));
        // The enclave's streaming walk sees the same rows (duplicates included).
        let mut walked = 0u64;
        let malformed = walk_plaintext("f", data, limits, |_, _| walked += 1).unwrap();
        assert_eq!(malformed, f.malformed_rows);
        assert!(walked >= f.rows.len() as u64 + f.invalid_amounts);
    }
});
