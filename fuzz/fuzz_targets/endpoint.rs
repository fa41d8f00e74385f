//! The endpoint parser (`unix:`, `tcp:`, `vsock:`, `vsock-uds:`) over arbitrary text: what it
//! accepts prints back to the same endpoint.
#![no_main]
use bidding_core::endpoint::Endpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(e) = text.parse::<Endpoint>() {
            assert_eq!(e.to_string().parse::<Endpoint>().ok(), Some(e));
        }
    }
});
