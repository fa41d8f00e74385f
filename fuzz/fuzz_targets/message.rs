//! Both message decoders over arbitrary frame payloads; anything decoded must re-encode and
//! decode to the same value.
#![no_main]
use bidding_core::wire::{decode_request, decode_response, encode_request, encode_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode_request(1, data) {
        assert_eq!(decode_request(1, &encode_request(&m)).unwrap(), m);
    }
    if let Ok(m) = decode_response(1, data) {
        assert_eq!(decode_response(1, &encode_response(&m)).unwrap(), m);
    }
});
