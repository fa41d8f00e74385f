//! The frame decoder over arbitrary bytes, fed in chunks whose sizes the input also picks.
#![no_main]
use bidding_core::wire::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut dec = FrameDecoder::new(4096);
    for piece in rest.chunks(chunk) {
        let mut input = piece;
        loop {
            match dec.decode(&mut input) {
                Ok(Some(frame)) => assert!(!frame.is_empty() && frame.len() <= 4096),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = dec.finish();
});
