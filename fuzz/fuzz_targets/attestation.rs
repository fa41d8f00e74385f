//! Attestation documents: parse arbitrary bytes, and verify them against the AWS root at a
//! fixed instant (inside the fixtures' windows, so mutated real chains get far into the checks).
//! Whatever parses must re-encode to a document that parses to the same fields. QEMU's unsigned
//! documents (which the parent and the KMS emulator decode only when told to expect QEMU) are
//! decoded too, and no input is both kinds.
#![no_main]
use bidding_core::attestation::{
    VerifyAt, VerifyOptions, encode_document, parse, parse_qemu_unsigned, verify,
};
use libfuzzer_sys::fuzz_target;
use std::convert::Infallible;

/// 2022-10-13T08:58:02.136Z, the timestamp of the valid fixture.
const AT_MS: u64 = 1_665_651_482_136;

fuzz_target!(|data: &[u8]| {
    let qemu = parse_qemu_unsigned(data);
    let Ok(doc) = parse(data) else { return };
    assert!(
        qemu.is_err(),
        "both a signed document and QEMU's unsigned one"
    );
    let again = encode_document(doc.fields(), |_| Ok::<_, Infallible>(*doc.signature()))
        .expect("parsed fields re-encode");
    assert_eq!(parse(&again).unwrap().fields(), doc.fields());
    let _ = verify(data, &VerifyOptions::aws(VerifyAt::UnixMillis(AT_MS)));
    let _ = verify(data, &VerifyOptions::aws(VerifyAt::Document));
});
