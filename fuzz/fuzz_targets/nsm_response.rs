//! NSM responses (`bidding_core::nsm::decode_response`), the bytes the enclave reads back from
//! `/dev/nsm`: arbitrary input never panics; whatever decodes re-encodes to canonical bytes that
//! decode to the same response; and AWS's own crate (aws-nitro-enclaves-nsm-api with
//! serde_cbor, the codec's reference) reads the same input as the same response, compared
//! through the canonical bytes both write.
#![no_main]
use aws_nitro_enclaves_nsm_api::api;
use bidding_core::nsm::{decode_response, encode_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(response) = decode_response(data) else {
        return;
    };
    let canonical = encode_response(&response);
    assert_eq!(decode_response(&canonical).as_ref(), Ok(&response));
    let theirs: api::Response =
        serde_cbor::from_slice(data).expect("the crate reads what the codec accepts");
    assert_eq!(
        serde_cbor::to_vec(&theirs).expect("serde_cbor writes every response"),
        canonical,
        "the crate reads another response: {theirs:?}"
    );
});
