//! Envelope bid files against the real dev enclave, driven by a hostile parent over its Unix
//! socket, with the KMS emulator over TLS: an unsealed auction counts an envelope file's data
//! key once per boot (a replay of the file is refused), and KMS denying the operator a buyer's
//! key ends the auction as it does for per-bid files, never a set-aside.

#[path = "../../test-support/harness/mod.rs"]
mod harness;

use bidding_client::encrypt::envelope_file;
use bidding_core::auction::RevealPolicy;
use bidding_core::config::{AuctionConfig, BuyerSpec};
use bidding_core::names::{AuctionId, BuyerName, KeyArn};
use bidding_core::wire::ErrorCode;
use bidding_standins::stack::StackOptions;
use harness::*;

/// Distinctive amounts, searched for in everything the enclave sends.
const AMOUNTS: [&str; 3] = ["8314159", "8271828", "8161803"];

fn plaintext() -> Vec<u8> {
    let mut s = String::from("contract,bid\n");
    for (i, a) in AMOUNTS.iter().enumerate() {
        s.push_str(&format!("{},{a}\n", i + 1));
    }
    s.into_bytes()
}

#[track_caller]
fn assert_no_amounts(received: &[u8]) {
    let text = String::from_utf8_lossy(received);
    for a in AMOUNTS {
        assert!(!text.contains(a), "amount {a} left the enclave");
    }
}

#[test]
fn unsealed_envelope_file_counts_once_per_boot() {
    let world = World::start(&["E", "P"], StackOptions::unsealed());
    let enclave = world.enclave("enclave", &[]);
    let config = world.config("envelope-unsealed", RevealPolicy::None);
    let e = world.buyer("E");
    let e_file = envelope_file(
        &world.stack.kms_client(&e.credentials).unwrap(),
        &e.key,
        config.auction_id(),
        &e.name,
        world.stack.rules,
        &plaintext(),
    )
    .unwrap();
    let sealer = world.sealer();
    let p_file = bid_file(&[("1", sealer.seal("P", "5", "envelope-unsealed", "1"))]);
    let files = vec![e_file.clone(), p_file];

    let mut parent = world.parent(&enclave);
    let (csv, _) = parent.run_unsealed(&world.stack.operator, &config, &files);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result\n1,E Wins\n2,E Wins\n3,E Wins\n"
    );
    assert_no_amounts(&parent.client.received);

    // The same file again in this boot: its data key was already used.
    enclave.wait_sessions_ended(1);
    let mut parent = world.parent(&enclave);
    parent.start(&world.stack.operator, &config);
    let id = parent.send(file_chunk("E", e_file, true));
    let m = parent
        .client
        .expect_error(Some(id), ErrorCode::ReplayedCiphertext, true);
    assert!(m.contains("already used since this enclave started"), "{m}");
    assert_no_amounts(&parent.client.received);
}

#[test]
fn access_denied_on_an_envelope_data_key_ends_the_auction() {
    let world = World::start(&["E"], StackOptions::unsealed());
    let enclave = world.enclave("enclave", &[]);
    let e = world.buyer("E");
    let client = world.stack.kms_client(&e.credentials).unwrap();
    // A key of E's that the operator's role may not use at all.
    let e_arn = bidding_standins::stack::buyer_arn(&e.name);
    let locked = client
        .create_key(
            "E's key, operator not allowed",
            Some(
                serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": e_arn}, "Action": "kms:*", "Resource": "*"}]})
                    .to_string(),
            ),
        )
        .unwrap();
    let locked = KeyArn::new(locked.arn).unwrap();
    let config = AuctionConfig::new(
        AuctionId::new("envelope-denied").unwrap(),
        vec![BuyerSpec {
            name: BuyerName::new("E").unwrap(),
            key_arn: locked.clone(),
        }],
        RevealPolicy::None,
        false,
    )
    .unwrap();
    let file = envelope_file(
        &client,
        &locked,
        config.auction_id(),
        &e.name,
        world.stack.rules,
        &plaintext(),
    )
    .unwrap();
    let mut parent = world.parent(&enclave);
    parent.start(&world.stack.operator, &config);
    let id = parent.send(file_chunk("E", file, true));
    let (got, err) = parent.client.recv_error();
    assert!(got.is_none() || got == Some(id));
    assert_eq!(
        (err.code, err.fatal),
        (ErrorCode::KmsAccessDenied, true),
        "{err:?}"
    );
    assert!(err.message.contains("envelope file"), "{}", err.message);
    assert_no_amounts(&parent.client.received);
}
