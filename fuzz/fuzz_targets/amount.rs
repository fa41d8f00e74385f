//! The amount parser over arbitrary bytes: accepted amounts render and re-parse to themselves.
#![no_main]
use bidding_core::amount::Amount;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Amount::parse(data) {
        assert_eq!(Amount::parse(a.to_string().as_bytes()), Ok(a));
    }
});
