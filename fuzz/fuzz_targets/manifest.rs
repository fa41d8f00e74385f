//! The sealed auction's documents over arbitrary bytes: the manifest (the enclave parses it
//! from the parent) and output.json's header (the parent and bidctl verify parse it from the
//! enclave). A manifest that parses is canonical: encoding it again gives the same bytes.
#![no_main]
use bidding_core::manifest::{FileFormat, Manifest};
use bidding_core::output::OutputHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        assert_eq!(m.canonical_bytes(), data);
        assert_eq!(m.files().len(), m.terms().buyers().len());
    }
    let _ = OutputHeader::parse(data);
    let _ = FileFormat::detect(data);
});
