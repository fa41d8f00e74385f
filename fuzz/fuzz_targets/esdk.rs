//! AWS Encryption SDK v2 messages: `Message::parse` over arbitrary bytes and, when it accepts
//! them, `decrypt` with a fixed data key. An input starting with 0 instead drives the encoder:
//! `[0, frame length u16, position u16, xor, plaintext…]` encrypts the plaintext under a fixed
//! key; unchanged, the message must open to the same bytes; with the byte at `position`
//! changed by `xor`, it must be refused (it is signed, and every byte is covered).
//!
//! Seeds (fuzz/seeds/esdk) are five of the official test vectors from
//! aws-encryption-sdk-python's `test/resources/commitment-test-vectors.json` (Apache-2.0; see
//! ../shared/fixtures/README.md): 0x0478 framed, 0x0578 framed, one-byte frames, and single
//! blocks of both suites; plus one encoder-mode input.
#![no_main]
use bidding_core::esdk::{self, Encryptor, Limits, Message};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

const KEY: [u8; 32] = [0x42; 32];
const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000";

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let [0, fl_hi, fl_lo, at_hi, at_lo, xor, plaintext @ ..] = data {
        let frame_length = u32::from(u16::from_be_bytes([*fl_hi, *fl_lo])).max(1);
        let context = BTreeMap::from([("auction".to_owned(), "fuzz".to_owned())]);
        let mut message = Encryptor::new(context)
            .expect("signing key")
            .encrypt(&KEY, b"encrypted data key", ARN, plaintext, frame_length)
            .expect("encrypting");
        if *xor == 0 {
            let m = Message::parse(&message, &limits).expect("parsing our own message");
            let opened = m.decrypt(&KEY).expect("opening our own message");
            assert_eq!(&opened[..], plaintext);
        } else {
            let at = usize::from(u16::from_be_bytes([*at_hi, *at_lo])) % message.len();
            message[at] ^= xor;
            let refused = match Message::parse(&message, &limits) {
                Ok(m) => m.decrypt(&KEY).is_err(),
                Err(_) => true,
            };
            assert!(refused, "a changed byte at {at} went through");
        }
        return;
    }
    let parsed = Message::parse(data, &limits);
    // The enclave's owning form (it holds the message across the KMS call) decides alike.
    let owned = esdk::OwnedMessage::parse(data.to_vec(), &limits);
    assert_eq!(parsed.is_ok(), owned.is_ok());
    if let (Ok(m), Ok(o)) = (parsed, owned) {
        assert!(esdk::is_message(data));
        assert_eq!(o.context(), m.context());
        assert_eq!(o.message().plaintext_len(), m.plaintext_len());
        if let Ok(p) = m.decrypt(&KEY) {
            assert_eq!(p.len() as u64, m.plaintext_len());
        }
    }
});
