//! KMS answers are untrusted bytes (they cross the proxy): both judges of them over arbitrary
//! input, and every KMS body type's decoder.
#![no_main]
use bidding_core::kms;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&status, body)) = data.split_first() else { return };
    let _ = kms::classify_error(400 + u16::from(status), body);
    let _ = kms::recipient_ciphertext(body, "arn:aws:kms:us-east-1:111122223333:key/k");
    let _ = serde_json::from_slice::<kms::DecryptRequest>(body);
    let _ = serde_json::from_slice::<kms::DecryptResponse>(body);
    let _ = serde_json::from_slice::<kms::EncryptRequest>(body);
    let _ = serde_json::from_slice::<kms::GenerateDataKeyRequest>(body);
    let _ = serde_json::from_slice::<kms::CreateKeyRequest>(body);
});
