//! The adversarial review's attacks (issue 12), each played by a hostile parent against the
//! real dev enclave over its Unix socket and the KMS emulator over TLS. Under protocol 1 each
//! of them worked: the parent learnt amounts, or one comparison bit per boot, or got an
//! attested result that left bids out. Each test here passes because the enclave refuses, or
//! because what the parent sees says nothing it was not entitled to.

mod harness;

use bidding_core::auction::RevealPolicy;
use bidding_core::config::{AuctionConfig, BuyerSpec, Mode};
use bidding_core::names::{AuctionId, BuyerName, KeyArn};
use bidding_core::wire::{ErrorCode, Request, Response, Seal};
use bidding_tools::stack::StackOptions;
use harness::*;

const A: &str = "sealed-attacks";
/// Distinctive amounts, searched for in everything the enclave sends.
const V_BIDS: [(&str, &str); 3] = [("1", "7314159"), ("2", "7271828"), ("3", "7161803")];

/// V and P (the operator's accomplice, or the operator itself bidding) bid on three lots.
fn files(world: &World, sealer: &Sealer) -> Vec<Vec<u8>> {
    let v: Vec<(&str, Vec<u8>)> = V_BIDS
        .iter()
        .map(|(l, amount)| (*l, sealer.seal("V", amount, A, l)))
        .collect();
    let p: Vec<(&str, Vec<u8>)> = ["1", "2", "3"]
        .iter()
        .map(|l| (*l, sealer.seal("P", "5000000", A, l)))
        .collect();
    let _ = world;
    vec![bid_file(&v), bid_file(&p)]
}

fn seal_msg(buyer: &str, ciphertext: Vec<u8>) -> Request {
    Request::Seal(Seal {
        buyer: BuyerName::new(buyer).unwrap(),
        ciphertext,
    })
}

/// A parent on a new connection once the enclave has ended `ended` sessions (it serves one
/// at a time and answers `busy` until the last one is over).
fn parent_after(world: &World, enclave: &Enclave, ended: usize) -> Parent {
    enclave.wait_sessions_ended(ended);
    world.parent(enclave)
}

/// Every frame the enclave sent on this connection must be free of V's amounts.
#[track_caller]
fn assert_no_amounts(received: &[u8]) {
    let text = String::from_utf8_lossy(received);
    for (_, amount) in V_BIDS {
        assert!(
            !text.contains(amount),
            "V's amount {amount} left the enclave"
        );
    }
}

/// Attack 1: every amount in one boot. The parent opens the auction with `winning-bid` and
/// sends each ciphertext alone in a lot of its own. Now the reveal policy is part of the
/// manifest the buyers sealed (reveal = none): a manifest with another policy has another
/// digest, and the buyers' seals do not open under it. And even the honest run lets nothing
/// out before close.
#[test]
fn attack1_reveal_policy_and_single_bid_lots_are_not_the_parents_to_choose() {
    let world = World::start(&["V", "P"], StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    let sealer = world.sealer();
    let files = files(&world, &sealer);
    let honest = world.config(A, RevealPolicy::None);
    let manifest = world.manifest(&honest, &files);
    let seals = [
        ("V", sealer.seal_manifest("V", &manifest)),
        ("P", sealer.seal_manifest("P", &manifest)),
    ];

    // The hostile manifest: same buyers and files, but the winning bid revealed.
    let greedy = world.config(A, RevealPolicy::WinningBid);
    let hostile = world.manifest(&greedy, &files);
    let mut parent = world.parent(&enclave);
    parent.hello();
    parent.credentials(&world.stack.operator);
    parent.open_sealed(&hostile);
    let id = parent.send(seal_msg("V", seals[0].1.clone()));
    let message = parent
        .client
        .expect_error(Some(id), ErrorCode::SealRefused, true);
    assert!(
        message.contains("has not consented to this manifest"),
        "{message}"
    );
    parent.client.expect_eof();
    assert_no_amounts(&parent.client.received);

    // The honest manifest, file by file: no frame about any lot until the whole result.
    let mut parent = parent_after(&world, &enclave, 1);
    parent.start_sealed(&world.stack.operator, &manifest, &seals);
    parent.send_file("V", &files[0]);
    parent.send_file("P", &files[1]);
    assert_no_amounts(&parent.client.received);
    let (csv, json) = parent.close(Mode::Sealed, &manifest);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result\n1,V Wins\n2,V Wins\n3,V Wins\n"
    );
    assert_no_amounts(&json);
}

/// Attack 1b: single-bid lots. A parent that sends only V's file (the lots then hold one bid
/// each) gets no result at all: an auction is decided on every buyer's file or not at all.
#[test]
fn attack1b_a_file_left_out_gives_no_result() {
    let world = World::start(&["V", "P"], StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    let sealer = world.sealer();
    let files = files(&world, &sealer);
    let manifest = world.manifest(&world.config(A, RevealPolicy::WinningBid), &files);
    let seals = [
        ("V", sealer.seal_manifest("V", &manifest)),
        ("P", sealer.seal_manifest("P", &manifest)),
    ];
    let mut parent = world.parent(&enclave);
    parent.start_sealed(&world.stack.operator, &manifest, &seals);
    parent.send_file("V", &files[0]);
    let id = parent.send(Request::Close(Default::default()));
    let message = parent
        .client
        .expect_error(Some(id), ErrorCode::MissingFile, true);
    assert!(message.contains("`P`'s file was never sent"), "{message}");
    parent.client.expect_eof();
    assert_no_amounts(&parent.client.received);
}

/// Attack 2: a comparison oracle across restarts. P (with the operator) changes its own bid
/// and reruns, reading one bit per boot. Now a changed file is another manifest, which V has
/// not sealed; and rerunning the same manifest, in the same boot or a new one, gives the same
/// bytes: nothing new to read.
#[test]
fn attack2_no_oracle_across_runs_or_boots() {
    let world = World::start(&["V", "P"], StackOptions::default());
    let sealer = world.sealer();
    let files = files(&world, &sealer);
    let config = world.config(A, RevealPolicy::None);
    let manifest = world.manifest(&config, &files);
    let seals = [
        ("V", sealer.seal_manifest("V", &manifest)),
        ("P", sealer.seal_manifest("P", &manifest)),
    ];
    let run = |enclave: &Enclave, ended: usize| {
        let mut parent = parent_after(&world, enclave, ended);
        parent.start_sealed(&world.stack.operator, &manifest, &seals);
        parent.send_file("V", &files[0]);
        parent.send_file("P", &files[1]);
        parent.close(Mode::Sealed, &manifest)
    };
    let first_boot = world.enclave("boot1", &[]);
    let first = run(&first_boot, 0);
    assert_eq!(run(&first_boot, 1), first, "a rerun in the same boot");
    drop(first_boot);
    let second_boot = world.enclave("boot2", &[]);
    assert_eq!(run(&second_boot, 0), first, "a rerun in a new boot");

    // P probes with a new bid of 7300000 on lot 1: a new file, so a new manifest. P seals it
    // gladly; V's seal is for the old one.
    let mut probe = vec![("1", sealer.seal("P", "7300000", A, "1"))];
    probe.extend(["2", "3"].iter().map(|l| (*l, sealer.seal("P", "1", A, l))));
    let probe_files = vec![files[0].clone(), bid_file(&probe)];
    let probe_manifest = world.manifest(&config, &probe_files);
    let mut parent = parent_after(&world, &second_boot, 1);
    parent.hello();
    parent.credentials(&world.stack.operator);
    parent.open_sealed(&probe_manifest);
    let id = parent.send(seal_msg("V", seals[0].1.clone()));
    parent
        .client
        .expect_error(Some(id), ErrorCode::SealRefused, true);
    parent.client.expect_eof();

    // Nor can the parent keep the old manifest and swap P's file under it.
    let mut parent = parent_after(&world, &second_boot, 2);
    parent.start_sealed(&world.stack.operator, &manifest, &seals);
    parent.send_file("V", &files[0]);
    let id = parent.send(file_chunk("P", probe_files[1].clone(), true));
    let message = parent
        .client
        .expect_error(Some(id), ErrorCode::FileMismatch, true);
    assert!(
        message.contains("is not the one the manifest names"),
        "{message}"
    );
    parent.client.expect_eof();
    assert_no_amounts(&parent.client.received);
}

/// Attack 3a: bids left out, result still verifies. The parent drops V's rows from V's file:
/// the file's digest no longer matches the manifest V sealed.
#[test]
fn attack3a_rows_dropped_from_a_file_are_refused() {
    let world = World::start(&["V", "P"], StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    let sealer = world.sealer();
    let files = files(&world, &sealer);
    let manifest = world.manifest(&world.config(A, RevealPolicy::None), &files);
    let seals = [
        ("V", sealer.seal_manifest("V", &manifest)),
        ("P", sealer.seal_manifest("P", &manifest)),
    ];
    // V's file without its bid on lot 2: a prefix and a suffix of the real bytes.
    let text = String::from_utf8(files[0].clone()).unwrap();
    let trimmed: String = text
        .lines()
        .filter(|l| !l.starts_with("2,"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut parent = world.parent(&enclave);
    parent.start_sealed(&world.stack.operator, &manifest, &seals);
    let id = parent.send(file_chunk("V", trimmed.into_bytes(), true));
    parent
        .client
        .expect_error(Some(id), ErrorCode::FileMismatch, true);
    parent.client.expect_eof();
}

/// Attack 3b: credentials whose policy denies V's key. KMS answers AccessDenied: protocol 1
/// set V's bids aside as `access_denied` and published a result without them. Now it fails
/// the whole auction, before any bid is opened (V's seal is under the same key).
#[test]
fn attack3b_access_denied_fails_the_auction() {
    let world = World::start(&["V", "P"], StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    // V's key as a careless (or tricked) policy leaves it: only V may use it.
    let v = world.buyer("V");
    let v_arn = bidding_tools::stack::buyer_arn(&v.name);
    let locked = world
        .stack
        .kms_client(&v.credentials)
        .unwrap()
        .create_key(
            "V's key, operator not allowed",
            Some(
                serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": v_arn}, "Action": "kms:*", "Resource": "*"}]})
                    .to_string(),
            ),
        )
        .unwrap();
    let locked = KeyArn::new(locked.arn).unwrap();
    let p = world.buyer("P");
    let config = AuctionConfig::new(
        AuctionId::new(A).unwrap(),
        vec![
            BuyerSpec {
                name: BuyerName::new("V").unwrap(),
                key_arn: locked.clone(),
            },
            BuyerSpec {
                name: p.name.clone(),
                key_arn: p.key.clone(),
            },
        ],
        RevealPolicy::None,
        false,
    )
    .unwrap();
    let v_client = world.stack.kms_client(&v.credentials).unwrap();
    let v_file = bid_file(
        &V_BIDS
            .iter()
            .map(|(l, amount)| {
                let ctx = bidding_core::kms::bid_context(
                    config.auction_id(),
                    &lot(l),
                    &BuyerName::new("V").unwrap(),
                );
                (
                    *l,
                    v_client
                        .encrypt(locked.as_str(), amount.as_bytes(), Some(ctx))
                        .unwrap(),
                )
            })
            .collect::<Vec<_>>(),
    );
    let sealer = world.sealer();
    let p_file = bid_file(&[("1", sealer.seal("P", "5", A, "1"))]);
    let files = vec![v_file, p_file];
    let manifest = world.manifest(&config, &files);
    let m = bidding_core::manifest::Manifest::parse(&manifest).unwrap();
    let v_seal = v_client
        .encrypt(
            locked.as_str(),
            bidding_core::manifest::SEAL_MARKER,
            Some(bidding_core::manifest::seal_context(
                config.auction_id(),
                &BuyerName::new("V").unwrap(),
                &m.digest(),
            )),
        )
        .unwrap();

    let mut parent = world.parent(&enclave);
    parent.hello();
    parent.credentials(&world.stack.operator);
    parent.open_sealed(&manifest);
    let id = parent.send(seal_msg("V", v_seal));
    let message = parent
        .client
        .expect_error(Some(id), ErrorCode::KmsAccessDenied, true);
    assert!(message.contains(locked.as_str()), "{message}");
    parent.client.expect_eof();

    // Unsealed, the same: access denied on a bid ends the auction, never a set-aside.
    let mut parent = parent_after(&world, &enclave, 1);
    parent.start(&world.stack.operator, &config);
    let id = parent.send(file_chunk("V", files[0].clone(), true));
    let (got, e) = parent.client.recv_error();
    assert!(got.is_none() || got == Some(id));
    assert_eq!(
        (e.code, e.fatal),
        (ErrorCode::KmsAccessDenied, true),
        "{e:?}"
    );
    assert_no_amounts(&parent.client.received);
}

/// Attack 5: a ciphertext's length gave away the amount's digit count. `bidctl encrypt` now
/// seals every amount at one width.
#[test]
fn attack5_ciphertexts_of_any_amount_have_one_length() {
    let world = World::start(&["V"], StackOptions::default());
    let v = world.buyer("V");
    let rows = bidding_core::bidfile::parse_plaintext(
        "bids.csv",
        b"contract,bid\n1,99999\n2,100000.50\n3,0.01\n4,999999999999999999.99\n",
        Default::default(),
    )
    .unwrap();
    let csv = world
        .stack
        .seal_and_upload(v, &AuctionId::new(A).unwrap(), &rows, true)
        .unwrap();
    let lens: Vec<usize> = String::from_utf8(csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().len())
        .collect();
    assert_eq!(lens.len(), 4);
    assert!(
        lens.iter().all(|&l| l == lens[0]),
        "lengths differ: {lens:?}"
    );
}

/// A seal made under another buyer's key (the operator's accomplice sealing for V) does not
/// open under V's registered key.
#[test]
fn a_seal_under_another_key_is_refused() {
    let world = World::start(&["V", "P"], StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    let sealer = world.sealer();
    let files = files(&world, &sealer);
    let manifest = world.manifest(&world.config(A, RevealPolicy::None), &files);
    let forged = sealer.seal_manifest_as("P", "V", &manifest);
    let mut parent = world.parent(&enclave);
    parent.hello();
    parent.credentials(&world.stack.operator);
    parent.open_sealed(&manifest);
    let id = parent.send(seal_msg("V", forged));
    parent
        .client
        .expect_error(Some(id), ErrorCode::SealRefused, true);
    parent.client.expect_eof();
    // And files cannot come before every seal is accepted.
    let mut parent = parent_after(&world, &enclave, 1);
    parent.hello();
    parent.credentials(&world.stack.operator);
    parent.open_sealed(&manifest);
    let id = parent.send(file_chunk("V", files[0].clone(), true));
    let (got, e) = parent.client.recv_error();
    assert_eq!((got, e.code), (Some(id), ErrorCode::OutOfOrder));
    assert!(matches!(
        parent.call(seal_msg("V", sealer.seal_manifest("V", &manifest))),
        Response::SealAccepted(_)
    ));
}
