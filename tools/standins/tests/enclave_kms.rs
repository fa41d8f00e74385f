//! The enclave's own KMS client (enclave-init, dev build) against the emulator over TLS, with
//! Recipient documents from the software NSM whose PCR0 is this test binary's hash: the path
//! a bid takes in production, with only the two stand-ins swapped in.
//!
//! Protocol 2: only what the buyer alone can cause comes back as `Disqualified` (a ciphertext
//! made for another lot, a bid under another key). Whatever the operator could cause is
//! `Fatal`: AccessDenied (a key policy that does not let the operator's role Decrypt, or that
//! names another enclave measurement) is `KmsAccessDenied`, and a key that is disabled or does
//! not exist is `KeyUnavailable`; the enclave then fails the auction instead of leaving a bid
//! out.

#[path = "../../test-support/common/mod.rs"]
mod common;

use bidding_core::auction::Reason;
use bidding_core::names::KeyArn;
use bidding_core::session::enclave::{BidTicket, DecryptJob, DecryptOutcome};
use bidding_core::wire::ErrorCode;
use common::*;
use enclave_init::keys::{RecipientAttestation, RecipientKey};
use enclave_init::kms::{KmsClient, KmsSettings};
use enclave_init::soft_nsm::SoftNsm;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// What the client reported for one job.
#[derive(Debug, PartialEq)]
enum Seen {
    Plaintext(Vec<u8>),
    Disqualified(Reason),
    Fatal(ErrorCode, String),
}

/// A key policy that lets only its administrator use the key: the operator's role may not
/// Decrypt, whatever the enclave's measurement.
fn policy_admin_only() -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Enable IAM User Permissions", "Effect": "Allow", "Principal": {"AWS": ALICE_ARN}, "Action": "kms:*", "Resource": "*"}
        ]
    })
    .to_string()
}

fn policy_for_image(pcr0: &[u8]) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Enable IAM User Permissions", "Effect": "Allow", "Principal": {"AWS": ALICE_ARN}, "Action": "kms:*", "Resource": "*"},
            {"Sid": "Enable enclave data processing", "Effect": "Allow", "Principal": {"AWS": PARENT_ROLE}, "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": hex::encode(pcr0)}}}
        ]
    })
    .to_string()
}

#[test]
fn enclave_client_opens_bids_through_the_emulator() {
    let nsm_dir = tempfile::tempdir().unwrap();
    let nsm = Arc::new(SoftNsm::open(nsm_dir.path()).unwrap());
    let root = enclave_init::soft_nsm::dev_root_der(nsm_dir.path()).unwrap();
    // Every third Decrypt is throttled: the client must retry through it.
    let emu = Emu::start_with(Some(root), |c| {
        c.faults = vec!["Decrypt:throttle=0.3".parse().unwrap()];
        c.fault_seed = Some(3);
        c.log = false;
    });
    let admin = emu.client(alice());
    let good_key = create_key(&admin, Some(&policy_for_image(&nsm.pcr(0).unwrap())));
    let other_key = create_key(&admin, Some(&policy_for_image(&[0x11; 48])));
    let admin_only_key = create_key(&admin, Some(&policy_admin_only()));
    let disabled_key = create_key(&admin, Some(&policy_for_image(&nsm.pcr(0).unwrap())));
    // A key ARN of this account and region that names no key (the last digit changed).
    let missing_key = {
        let last = good_key.chars().last().unwrap();
        let other = if last == '0' { '1' } else { '0' };
        format!("{}{other}", &good_key[..good_key.len() - 1])
    };
    let context = BTreeMap::from([
        ("auction".to_owned(), "a1".to_owned()),
        ("buyer".to_owned(), "Buyer1".to_owned()),
        ("lot".to_owned(), "7".to_owned()),
    ]);
    let encrypt = |key: &str, amount: &[u8], ctx: &BTreeMap<String, String>| {
        let v = admin
            .call(
                "Encrypt",
                &json!({"KeyId": key, "Plaintext": b64(amount), "EncryptionContext": ctx}),
            )
            .ok();
        unb64(&v["CiphertextBlob"])
    };

    let key = Arc::new(RecipientKey::generate().unwrap());
    let attestation = Arc::new(RecipientAttestation::new(nsm.clone(), key));
    let settings = KmsSettings {
        proxy: format!("tcp:{}", emu.running().addr()).parse().unwrap(),
        connections: 2,
        bid_deadline: Duration::from_secs(30),
        io_timeout: Duration::from_secs(10),
        extra_ca_pem: Some(std::fs::read(emu.running().ca_pem()).unwrap()),
    };
    let client = KmsClient::start(settings, attestation).unwrap();
    let credentials = Arc::new(parent());
    let (tx, rx) = mpsc::channel();
    let submit = |index: usize, key: &str, ciphertext: Vec<u8>, ctx: BTreeMap<String, String>| {
        let tx = tx.clone();
        client.submit(
            DecryptJob {
                ticket: BidTicket { request: 1, index },
                key_arn: KeyArn::new(key).unwrap(),
                ciphertext,
                context: ctx,
                retry_without_context: false,
                credentials: credentials.clone(),
            },
            Arc::new(AtomicBool::new(false)),
            move |ticket, outcome| {
                let summary = match outcome {
                    DecryptOutcome::Plaintext(p) => Seen::Plaintext(p.to_vec()),
                    DecryptOutcome::Disqualified(r) => Seen::Disqualified(r),
                    DecryptOutcome::Fatal { code, message } => Seen::Fatal(code, message),
                };
                let _ = tx.send((ticket.index, summary));
            },
        );
    };

    let mut other_lot = context.clone();
    other_lot.insert("lot".into(), "8".into());
    for i in 0..6 {
        submit(
            i,
            &good_key,
            encrypt(&good_key, format!("10000{i}").as_bytes(), &context),
            context.clone(),
        );
    }
    // A bid moved to another lot, a bid under another buyer's key: the buyer's doing.
    submit(
        10,
        &good_key,
        encrypt(&good_key, b"5", &context),
        other_lot.clone(),
    );
    submit(
        11,
        &other_key,
        encrypt(&good_key, b"5", &context),
        context.clone(),
    );
    // What the operator could cause, each fatal: a key whose policy names another image
    // (PCR0 mismatch), a key whose policy does not allow the operator's role at all.
    submit(
        12,
        &other_key,
        encrypt(&other_key, b"5", &context),
        context.clone(),
    );
    submit(
        13,
        &admin_only_key,
        encrypt(&admin_only_key, b"5", &context),
        context.clone(),
    );
    // A key made unusable: disabled after the bid was made, or gone (NotFoundException).
    let on_disabled = encrypt(&disabled_key, b"5", &context);
    admin
        .call("DisableKey", &json!({ "KeyId": disabled_key }))
        .ok();
    submit(14, &disabled_key, on_disabled, context.clone());
    submit(
        15,
        &missing_key,
        encrypt(&good_key, b"5", &context),
        context.clone(),
    );

    let mut results: BTreeMap<usize, Seen> = BTreeMap::new();
    for _ in 0..12 {
        let (i, r) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("every bid gets an outcome");
        assert!(results.insert(i, r).is_none(), "two outcomes for job {i}");
    }
    for i in 0..6 {
        assert_eq!(
            results[&i],
            Seen::Plaintext(format!("10000{i}").into_bytes()),
            "bid {i}"
        );
    }
    assert_eq!(results[&10], Seen::Disqualified(Reason::Undecryptable));
    assert_eq!(results[&11], Seen::Disqualified(Reason::WrongKey));
    let fatal = |i: usize, want: ErrorCode, key: &str, kms_code: &str| match &results[&i] {
        Seen::Fatal(code, message) => {
            assert_eq!(*code, want, "job {i}: {message}");
            assert!(message.contains(kms_code), "job {i}: {message}");
            assert!(message.contains(key), "job {i} names the key: {message}");
        }
        other => panic!("job {i}: expected a fatal {want:?}, got {other:?}"),
    };
    fatal(
        12,
        ErrorCode::KmsAccessDenied,
        &other_key,
        "AccessDeniedException",
    );
    fatal(
        13,
        ErrorCode::KmsAccessDenied,
        &admin_only_key,
        "AccessDeniedException",
    );
    fatal(
        14,
        ErrorCode::KeyUnavailable,
        &disabled_key,
        "DisabledException",
    );
    fatal(
        15,
        ErrorCode::KeyUnavailable,
        &missing_key,
        "NotFoundException",
    );
    // One document served every call: the emulator verified it once, or once per connection
    // when the first calls of both connections arrived before either check finished.
    let verifications = emu.running().attestation_verifications();
    assert!(
        (1..=2).contains(&verifications),
        "{verifications} verifications"
    );
}
