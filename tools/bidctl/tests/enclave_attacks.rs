//! The adversarial reviews' attacks (issues 12 and 21), each played by a hostile parent
//! against the real dev enclaves (sealed and unsealed) over their Unix sockets and the KMS
//! emulator over TLS. Under protocol 1 each of issue 12's worked: the parent learnt amounts, or
//! one comparison bit per boot, or got an attested result that left bids out; issue 21's (an
//! unsealed run of sealed bids, a buyer registered under the operator's key, sizes, bids made
//! for another image) worked on the image that served both modes. Each test here passes
//! because the enclave (or KMS) refuses, or because what the parent sees says nothing it was
//! not entitled to. `e2e_attacks.rs` plays issue 21's with the stock parent.

#[path = "../../test-support/harness/mod.rs"]
mod harness;

use bidding_core::auction::RevealPolicy;
use bidding_core::config::{AuctionConfig, BuyerSpec, Mode};
use bidding_core::names::{AuctionId, BuyerName, KeyArn};
use bidding_core::wire::{ErrorCode, Request, Response, Seal};
use bidding_standins::stack::StackOptions;
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
    let v_arn = bidding_standins::stack::buyer_arn(&v.name);
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
                    bidding_core::config::Mode::Sealed,
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

/// The unsealed dev enclave of this world's executable (`--rules unsealed`, its own PCR0),
/// reaching the same KMS emulator.
fn unsealed_enclave(world: &World, name: &str) -> (Enclave, [u8; 48]) {
    let proxy = format!("tcp:{}", world.stack.kms.addr());
    let enclave = Enclave::start(
        world.dir(),
        name,
        &world.stack.nsm_dir,
        &proxy,
        Some(&world.stack.kms.ca_pem()),
        &["--rules", "unsealed"],
    );
    let pcr0 = bidding_standins::stack::dev_pcr0(&exe(), Mode::Unsealed).unwrap();
    (enclave, pcr0)
}

/// `name`'s key made to trust both dev images (the buyer talked into it, or an old image left
/// in the policy), with the buyer's own credentials.
fn trust_both_images(world: &World, name: &str) {
    let b = world.buyer(name);
    let pcr0s = [Mode::Sealed, Mode::Unsealed]
        .map(|m| hex::encode(bidding_standins::stack::dev_pcr0(&exe(), m).unwrap()));
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": bidding_standins::stack::buyer_arn(&b.name)},
             "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": bidding_standins::stack::OPERATOR_ROLE},
             "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": pcr0s}}}
        ]
    });
    world
        .stack
        .kms_client(&b.credentials)
        .unwrap()
        .put_key_policy(b.key.as_str(), &policy.to_string())
        .unwrap();
}

/// V's plaintext rows (the distinctive amounts).
fn v_rows() -> Vec<bidding_core::bidfile::PlaintextRow> {
    let text: String = std::iter::once("contract,bid\n".to_owned())
        .chain(V_BIDS.iter().map(|(l, a)| format!("{l},{a}\n")))
        .collect();
    bidding_core::bidfile::parse_plaintext("v", text.as_bytes(), Default::default()).unwrap()
}

/// An unsealed configuration of V alone, under `auction`, revealing the winning bid.
fn v_alone(world: &World, auction: &str) -> AuctionConfig {
    let v = world.buyer("V");
    AuctionConfig::new(
        AuctionId::new(auction).unwrap(),
        vec![BuyerSpec {
            name: v.name.clone(),
            key_arn: v.key.clone(),
        }],
        RevealPolicy::WinningBid,
        false,
    )
    .unwrap()
}

/// Issue 21, finding 1, with a hand-written parent. The operator takes V's sealed file as soon
/// as it is uploaded and asks for an unsealed run with `winning-bid` and V's file alone.
/// The sealed image refuses `open_unsealed` (after hello and credentials, before anything is
/// opened). The unsealed image, even with V's key trusting it too, opens none of V's sealed
/// per-bid bids (the sealed image's context has `rules=sealed`, which the unsealed image never
/// passes, so KMS refuses) and refuses V's sealed envelope file by its header before KMS.
/// No amount leaves either enclave.
#[test]
fn issue21_finding1_an_unsealed_run_opens_no_sealed_bid() {
    let world = World::start(&["V", "P"], StackOptions::default());
    let sealer = world.sealer();
    let v_file = bid_file(
        &V_BIDS
            .iter()
            .map(|(l, a)| (*l, sealer.seal("V", a, A, l)))
            .collect::<Vec<_>>(),
    );
    let v_envelope = world
        .stack
        .envelope_and_upload(world.buyer("V"), &AuctionId::new(A).unwrap(), &v_rows())
        .unwrap();

    // The sealed image.
    let sealed = world.enclave("sealed", &[]);
    let mut parent = world.parent(&sealed);
    parent.hello();
    parent.credentials(&world.stack.operator);
    let id = parent.send(Request::OpenUnsealed(v_alone(&world, A)));
    let message = parent
        .client
        .expect_error(Some(id), ErrorCode::WrongRuleSet, true);
    assert!(
        message.contains("the sealed image (it serves sealed auctions only)"),
        "{message}"
    );
    parent.client.expect_eof();
    assert_no_amounts(&parent.client.received);
    assert_no_amounts(sealed.log_text().as_bytes());

    // The unsealed image, trusted by V's key as well.
    trust_both_images(&world, "V");
    let (unsealed, pcr0) = unsealed_enclave(&world, "unsealed");
    assert_ne!(pcr0, world.stack.pcr0, "two images, two PCR0s");
    let config = v_alone(&world, A);
    let mut parent =
        Parent::new(Client::connect(&unsealed), world.root_der(), pcr0).with_rules(Mode::Unsealed);
    let (csv, json) = parent.run_unsealed(&world.stack.operator, &config, &[v_file]);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result,Price\n1,No valid bids,\n2,No valid bids,\n3,No valid bids,\n"
    );
    let header = bidding_core::output::OutputHeader::parse(&json).unwrap();
    assert_eq!(
        header
            .set_aside
            .iter()
            .map(|s| (s.buyer.as_str(), s.reason.to_string(), s.count))
            .collect::<Vec<_>>(),
        [("V", "undecryptable".to_owned(), 3)]
    );
    assert_no_amounts(&parent.client.received);
    let mut parent = Parent::new(
        parent_after(&world, &unsealed, 1).client,
        world.root_der(),
        pcr0,
    )
    .with_rules(Mode::Unsealed);
    let (csv, json) = parent.run_unsealed(&world.stack.operator, &config, &[v_envelope]);
    assert_eq!(String::from_utf8(csv).unwrap(), "Property,Result,Price\n");
    let header = bidding_core::output::OutputHeader::parse(&json).unwrap();
    assert_eq!(
        header
            .set_aside
            .iter()
            .map(|s| (s.buyer.as_str(), s.reason.to_string(), s.count))
            .collect::<Vec<_>>(),
        [("V", "malformed_file".to_owned(), 1)]
    );
    assert_no_amounts(&parent.client.received);
    assert_no_amounts(unsealed.log_text().as_bytes());
}

/// Issue 21, finding 2, with a hand-written parent: V registered under a key the operator
/// holds (O's), V's seal forged under it, V's genuine file listed. The forged seal opens (it is
/// under the registered key), but KMS says V's bids are not: the enclave fails the auction
/// with `key_binding` and releases nothing.
#[test]
fn issue21_finding2_a_forged_registration_fails_the_auction() {
    let world = World::start(&["V", "P", "O"], StackOptions::default());
    let sealer = world.sealer();
    let v_file = bid_file(
        &V_BIDS
            .iter()
            .map(|(l, a)| (*l, sealer.seal("V", a, A, l)))
            .collect::<Vec<_>>(),
    );
    let p_file = bid_file(&[("1", sealer.seal("P", "5", A, "1"))]);
    let (v, p, o) = (world.buyer("V"), world.buyer("P"), world.buyer("O"));
    let forged = AuctionConfig::new(
        AuctionId::new(A).unwrap(),
        vec![
            BuyerSpec {
                name: v.name.clone(),
                key_arn: o.key.clone(),
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
    let files = vec![v_file, p_file];
    let manifest = world.manifest(&forged, &files);
    let seals = [
        ("V", sealer.seal_manifest_as("O", "V", &manifest)),
        ("P", sealer.seal_manifest("P", &manifest)),
    ];
    let enclave = world.enclave("enclave", &[]);
    let mut parent = world.parent(&enclave);
    parent.start_sealed(&world.stack.operator, &manifest, &seals);
    let id = parent.send(file_chunk("V", files[0].clone(), true));
    let message = parent
        .client
        .expect_error(Some(id), ErrorCode::KeyBinding, true);
    assert!(message.contains("IncorrectKeyException"), "{message}");
    parent.client.expect_eof();
    assert_no_amounts(&parent.client.received);
    assert_no_amounts(enclave.log_text().as_bytes());
}

/// Bids made for today's release (context `{auction, lot, buyer}`, which is also the unsealed
/// image's) are refused by the sealed image, and bids made with `rules=sealed` by the unsealed
/// image, per-bid (KMS refuses the context) and envelope (the header's context, before KMS),
/// with a hand-written parent against each dev enclave.
#[test]
fn issue21_each_image_refuses_bids_made_for_the_other() {
    for (image, made_for) in [
        (Mode::Sealed, Mode::Unsealed),
        (Mode::Unsealed, Mode::Sealed),
    ] {
        let world = World::start(
            &["V", "W", "P"],
            StackOptions {
                rules: image,
                ..StackOptions::default()
            },
        );
        let mut other = world.sealer();
        other.rules = made_for;
        let own = world.sealer();
        let v_file = bid_file(
            &V_BIDS
                .iter()
                .map(|(l, a)| (*l, other.seal("V", a, A, l)))
                .collect::<Vec<_>>(),
        );
        let w = world.buyer("W");
        let w_file = bidding_client::encrypt::envelope_file(
            &world.stack.kms_client(&w.credentials).unwrap(),
            &w.key,
            &AuctionId::new(A).unwrap(),
            &w.name,
            made_for,
            &bidding_client::encrypt::envelope_plaintext(&v_rows(), None),
        )
        .unwrap();
        let p_file = bid_file(&[("1", own.seal("P", "5", A, "1"))]);
        let files = vec![v_file, w_file, p_file];
        let config = world.config(A, RevealPolicy::WinningBid);
        let enclave = world.enclave("enclave", &[]);
        let mut parent = world.parent(&enclave);
        let (csv, json) = match image {
            Mode::Sealed => {
                let manifest = world.manifest(&config, &files);
                let seals: Vec<(&str, Vec<u8>)> = ["V", "W", "P"]
                    .iter()
                    .map(|b| (*b, own.seal_manifest(b, &manifest)))
                    .collect();
                parent.start_sealed(&world.stack.operator, &manifest, &seals);
                for (b, f) in ["V", "W", "P"].iter().zip(&files) {
                    parent.send_file(b, f);
                }
                parent.close(Mode::Sealed, &manifest)
            }
            Mode::Unsealed => parent.run_unsealed(&world.stack.operator, &config, &files),
        };
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "Property,Result,Price\n1,P Wins,5\n2,No valid bids,\n3,No valid bids,\n",
            "{image}"
        );
        let header = bidding_core::output::OutputHeader::parse(&json).unwrap();
        let mut got: Vec<(String, String, u64)> = header
            .set_aside
            .iter()
            .map(|s| (s.buyer.to_string(), s.reason.to_string(), s.count))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("V".to_owned(), "undecryptable".to_owned(), 3),
                ("W".to_owned(), "malformed_file".to_owned(), 1)
            ],
            "{image}"
        );
        assert_no_amounts(&parent.client.received);
        assert_no_amounts(enclave.log_text().as_bytes());
    }
}

/// Issue 21, finding 3, with a hand-written parent: V's envelope file padded (as `bidctl
/// encrypt --format envelope` pads) and the same rows unpadded decide the same result; the
/// padding is never counted, listed or reported.
#[test]
fn issue21_finding3_padding_decides_nothing() {
    let world = World::start(&["V", "P"], StackOptions::default());
    let sealer = world.sealer();
    let v = world.buyer("V");
    let client = world.stack.kms_client(&v.credentials).unwrap();
    let auction = AuctionId::new(A).unwrap();
    let make = |plaintext: &[u8]| {
        bidding_client::encrypt::envelope_file(
            &client,
            &v.key,
            &auction,
            &v.name,
            Mode::Sealed,
            plaintext,
        )
        .unwrap()
    };
    let padded = make(&bidding_client::encrypt::envelope_plaintext(
        &v_rows(),
        None,
    ));
    let unpadded = make(&bidding_client::encrypt::plaintext_csv(&v_rows()));
    assert!(
        padded.len() > unpadded.len() + 3000,
        "padded to 4096 bytes of plaintext"
    );
    let p_file = bid_file(&[
        ("1", sealer.seal("P", "7314159", A, "1")),
        ("4", sealer.seal("P", "5", A, "4")),
    ]);
    let enclave = world.enclave("enclave", &[]);
    let config = world.config(A, RevealPolicy::None);
    let mut results = Vec::new();
    for (i, v_file) in [padded, unpadded].into_iter().enumerate() {
        let files = vec![v_file, p_file.clone()];
        let manifest = world.manifest(&config, &files);
        let seals = [
            ("V", sealer.seal_manifest("V", &manifest)),
            ("P", sealer.seal_manifest("P", &manifest)),
        ];
        let mut parent = parent_after(&world, &enclave, i);
        parent.start_sealed(&world.stack.operator, &manifest, &seals);
        parent.send_file("V", &files[0]);
        parent.send_file("P", &files[1]);
        let (csv, json) = parent.close(Mode::Sealed, &manifest);
        let header = bidding_core::output::OutputHeader::parse(&json).unwrap();
        assert!(header.set_aside.is_empty(), "{:?}", header.set_aside);
        assert_no_amounts(&parent.client.received);
        results.push((csv, json_lots(&json), header.lot_count));
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(
        String::from_utf8(results[0].0.clone()).unwrap(),
        "Property,Result\n1,\"Tie: P, V\"\n2,V Wins\n3,V Wins\n4,P Wins\n"
    );
    assert_eq!(results[0].2, 4);
}
