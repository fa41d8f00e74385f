//! The sealed auction's documents over arbitrary bytes: the manifest (the enclave parses it
//! from the parent) and output.json's header (the parent and bidctl verify parse it from the
//! enclave). A manifest that parses is canonical: encoding it again gives the same bytes; a
//! header that parses keeps its set-aside lot lists bounded.
#![no_main]
use bidding_core::manifest::{FileFormat, Manifest};
use bidding_core::output::{MAX_LISTED_LOTS, OutputHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        assert_eq!(m.canonical_bytes(), data);
        assert_eq!(m.files().len(), m.terms().buyers().len());
    }
    // A header that parses lists at most MAX_LISTED_LOTS lots per set-aside record, and never
    // more lots than the record has bids.
    if let Ok(h) = OutputHeader::parse(data) {
        for s in &h.set_aside {
            if let Some(l) = &s.lots {
                assert!(l.first.len() <= MAX_LISTED_LOTS);
                assert!(l.first.len() as u64 + l.more <= s.count);
            }
        }
    }
    let _ = FileFormat::detect(data);
});
