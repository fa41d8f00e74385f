//! The BER reader and CMS parser over arbitrary bytes, and `open` with a fixed key. An input
//! starting with 0 instead seals the rest to that key, so the fuzzer also reaches the RSA and
//! AES paths it could never reach by guessing an encryptedKey: unchanged, the envelope must
//! open to the same bytes; with one byte changed, `open` must fail or succeed without panicking.
#![no_main]
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use bidding_core::{ber, cms};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

struct Recipient {
    key: PrivateDecryptingKey,
    spki: Vec<u8>,
    rid: [u8; 32],
}

fn recipient() -> &'static Recipient {
    static RECIPIENT: OnceLock<Recipient> = OnceLock::new();
    RECIPIENT.get_or_init(|| {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).expect("RSA key generation");
        let spki = key.public_key().as_der().expect("SPKI").as_ref().to_vec();
        let rid = cms::recipient_key_id(&spki);
        Recipient { key, spki, rid }
    })
}

fuzz_target!(|data: &[u8]| {
    let r = recipient();
    if let [0, hi, lo, xor, plaintext @ ..] = data {
        let mut sealed = cms::seal(&r.spki, plaintext).expect("sealing to our own key");
        if *xor == 0 {
            let opened = cms::open(&sealed, &r.key, &r.rid).expect("opening our own envelope");
            assert_eq!(&opened[..], plaintext);
        } else {
            let at = usize::from(u16::from_be_bytes([*hi, *lo])) % sealed.len();
            sealed[at] ^= xor;
            let _ = cms::open(&sealed, &r.key, &r.rid);
        }
        return;
    }
    let _ = ber::walk(data, |_| {});
    if let Ok(envelope) = cms::parse(data) {
        let _ = cms::open(data, &r.key, &r.rid);
        // Past the rid check whatever the input claims, into the private-key operation.
        let _ = cms::open(data, &r.key, &envelope.rid);
    }
});
