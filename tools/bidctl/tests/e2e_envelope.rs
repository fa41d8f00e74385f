//! Envelope bid files (issue 13) end to end, as separate processes: S3, the KMS emulator (a
//! process of its own, with its request log), a dev enclave and the parent.
//!
//! - Files made by AWS's own `aws-encryption-cli --encrypt` (through the emulator's
//!   GenerateDataKey) and by `bidctl encrypt --format envelope` win a sealed auction beside a
//!   per-bid buyer; the emulator answers exactly ONE Decrypt per envelope file (plus one per
//!   seal, plus one per per-bid bid); bad rows of an envelope file are counted per buyer and
//!   never named with a lot; no amount appears anywhere outside.
//! - `aws-encryption-cli --decrypt` opens bidctl's file to the buyer's rows, every amount at
//!   one width and padded, exactly as `bidctl envelope pad` writes them.
//! - Files that are well-formed messages but not this buyer's bid file for this auction (other
//!   auction or buyer in the context, two data keys, another buyer's key) and a file with a
//!   flipped byte are set aside whole, and cost no KMS call.
//!
//! Needs `BIDDING_PYTHON` pointing into a venv holding `aws-encryption-cli` (tools/test.sh
//! makes one); without it the tests say they are skipped, unless `BIDDING_REQUIRE_PEERS=1`.

#[path = "../../test-support/peers/mod.rs"]
mod peers;
#[path = "../../test-support/support/mod.rs"]
mod support;

use bidding_core::config::Mode;
use bidding_core::esdk::{self, Encryptor, Limits, Message};
use bidding_core::names::{AuctionId, BuyerName};
use bidding_standins::stack::{Buyer, REGION, StackOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::*;

fn encryption_cli() -> Option<PathBuf> {
    peers::peer_tool(
        "aws-encryption-cli",
        "AWS's Encryption SDK CLI",
        "e2e_envelope",
    )
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A command with the buyer's credentials for the stack's KMS emulator and nothing else from
/// the environment's AWS configuration.
fn as_buyer(program: &Path, w: &World, b: &Buyer, dir: &Path) -> Command {
    let mut c = Command::new(program);
    c.current_dir(dir)
        .env("AWS_ENDPOINT_URL_KMS", w.stack.kms.endpoint())
        .env("AWS_CA_BUNDLE", w.stack.kms.ca_pem())
        .env("AWS_ACCESS_KEY_ID", &b.credentials.access_key_id)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            b.credentials.secret_access_key.expose(),
        )
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_REGION", REGION)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_S3");
    match &b.credentials.session_token {
        Some(t) => c.env("AWS_SESSION_TOKEN", t.expose()),
        None => c.env_remove("AWS_SESSION_TOKEN"),
    };
    c
}

/// `aws-encryption-cli --encrypt -i bids.csv -o encrypted.bids -w key=ARN… -c auction=ID
/// buyer=NAME`, as the README tells buyers; the encrypted file's bytes.
fn cli_encrypt(
    cli: &Path,
    w: &World,
    b: &Buyer,
    dir: &Path,
    plaintext: &[u8],
    keys: &[&str],
    context: &[String],
) -> Vec<u8> {
    std::fs::write(dir.join("bids.csv"), plaintext).unwrap();
    let _ = std::fs::remove_file(dir.join("encrypted.bids"));
    let wrapping: Vec<String> = keys.iter().map(|k| format!("key={k}")).collect();
    let mut cmd = as_buyer(cli, w, b, dir);
    cmd.args(["--encrypt", "-i", "bids.csv", "-o", "encrypted.bids", "-w"])
        .args(&wrapping)
        .arg("-c")
        .args(context)
        .args(["--suppress-metadata"]);
    let o = cmd.output().expect("running aws-encryption-cli");
    assert!(
        o.status.success(),
        "aws-encryption-cli --encrypt: {}",
        show(&o)
    );
    std::fs::read(dir.join("encrypted.bids")).unwrap()
}

/// Decrypt calls the emulator has answered so far (its request log).
fn decrypts(w: &World) -> usize {
    let log = std::fs::read_to_string(w.stack.kms.log().expect("emulator as a process")).unwrap();
    log.lines()
        .filter(|l| l.starts_with("kms-emulator: Decrypt by "))
        .count()
}

fn options() -> StackOptions {
    StackOptions {
        kms_log: true,
        kms_process: Some(exe()),
        ..StackOptions::default()
    }
}

/// A distinctive amount for (lot, buyer), searched for in every output afterwards.
fn amount(lot: u64, buyer: u64) -> String {
    format!(
        "{}.{:02}",
        731_000 + lot * 97 + buyer * 13_001,
        (lot * 7 + buyer) % 100
    )
}

#[test]
fn official_cli_and_bidctl_envelope_files_win_beside_a_per_bid_buyer() {
    let Some(cli) = encryption_cli() else { return };
    let w = world(&["Alice", "Bob", "Carol"], options());
    let id = "envelope-2026-12";
    let plain = tempfile::tempdir().unwrap();
    let p = plain.path();
    let mut fates: BTreeMap<u64, Vec<(String, Fate)>> = BTreeMap::new();
    let mut amounts = Vec::new();

    // Alice: the official CLI. Lots 1..=40, plus rows the enclave sets aside one by one: an
    // invalid amount on a lot nobody else bids on (which must then not appear at all), a row
    // that is not `<lot>,<bid>`, and a lot named twice.
    let mut alice = String::from("contract,bid\n");
    for lot in 1..=40u64 {
        let a = amount(lot, 1);
        alice.push_str(&format!("{lot},{a}\n"));
        fates
            .entry(lot)
            .or_default()
            .push(("Alice".into(), Fate::Valid(cents(&a).unwrap())));
        amounts.push(a);
    }
    alice.push_str("ghost-lot,12.345\nnot a row\ndup-lot,5\ndup-lot,6\n");
    let alice_b = w.stack.buyer("Alice").unwrap();
    let alice_file = cli_encrypt(
        &cli,
        &w,
        alice_b,
        p,
        alice.as_bytes(),
        &[alice_b.key.as_str()],
        &[
            format!("auction={id}"),
            "buyer=Alice".into(),
            "rules=sealed".into(),
        ],
    );
    assert!(esdk::is_message(&alice_file));
    upload(&w, "Alice", &alice_file);

    // Bob: `bidctl encrypt --format envelope --upload`, lots 21..=60 (a tie on lot 30).
    let mut bob = String::from("contract,bid\n");
    for lot in 21..=60u64 {
        let a = if lot == 30 {
            amount(30, 1)
        } else {
            amount(lot, 2)
        };
        bob.push_str(&format!("{lot},{a}\n"));
        fates
            .entry(lot)
            .or_default()
            .push(("Bob".into(), Fate::Valid(cents(&a).unwrap())));
        amounts.push(a);
    }
    std::fs::write(p.join("bob.csv"), &bob).unwrap();
    let bob_b = w.stack.buyer("Bob").unwrap();
    let o = as_buyer(&exe(), &w, bob_b, p)
        .args([
            "encrypt",
            "--format",
            "envelope",
            "--key-id",
            bob_b.key.as_str(),
        ])
        .args(["--auction", id, "--buyer", "Bob", "bob.csv"])
        .output()
        .unwrap();
    assert!(o.status.success(), "bidctl encrypt: {}", show(&o));
    let bob_file = o.stdout.clone();
    let m = Message::parse(&bob_file, &Limits::default()).unwrap();
    esdk::check_bid_file(&m, Mode::Sealed, id, "Bob", bob_b.key.as_str()).unwrap();
    upload(&w, "Bob", &bob_file);

    // (b) The official CLI opens bidctl's file to Bob's exact bytes.
    std::fs::write(p.join("bob.bin"), &bob_file).unwrap();
    let o = as_buyer(&cli, &w, bob_b, p)
        .args(["--decrypt", "-i", "bob.bin", "-o", "bob.out", "-w"])
        .arg(format!("key={}", bob_b.key))
        .args(["--commitment-policy", "require-encrypt-require-decrypt"])
        .args(["--suppress-metadata", "--encryption-context"])
        .args([format!("auction={id}"), "buyer=Bob".into()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "aws-encryption-cli --decrypt: {}",
        show(&o)
    );
    // bidctl encrypts Bob's rows with every amount at one width, padded: what `bidctl
    // envelope pad` writes for aws-encryption-cli users.
    let bob_plain = std::fs::read(p.join("bob.out")).unwrap();
    let bob_rows =
        bidding_core::bidfile::parse_plaintext("bob", bob.as_bytes(), Default::default()).unwrap();
    assert_eq!(
        bob_plain,
        *bidding_client::encrypt::envelope_plaintext(&bob_rows, None)
    );
    assert!(bidding_core::bidfile::is_padded_len(bob_plain.len() as u64));
    let o = Command::new(exe())
        .args(["envelope", "pad", "bob.csv", "bob.padded"])
        .current_dir(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "bidctl envelope pad: {}", show(&o));
    assert_eq!(std::fs::read(p.join("bob.padded")).unwrap(), bob_plain);

    // Carol: per-bid, lots 55..=70.
    let mut carol = Vec::new();
    for lot in 55..=70u64 {
        let a = amount(lot, 3);
        carol.push(bid(lot, &a));
        fates
            .entry(lot)
            .or_default()
            .push(("Carol".into(), Fate::Valid(cents(&a).unwrap())));
        amounts.push(a);
    }
    upload(&w, "Carol", &csv(&seal(&w, "Carol", id, &carol)));

    let a = Auction::new(id, "none");
    let enclave = w
        .stack
        .start_enclave(&exe(), "enclave-envelope", &[])
        .unwrap();
    let config = write_config(&w, &a, &enclave);
    seal_round(&w, &config);
    let before = decrypts(&w);
    let out = run_parent(&w, &a, &enclave, config);
    assert_eq!(
        out.run.code,
        Some(0),
        "{}\n{}",
        out.run.stderr,
        out.enclave_log
    );
    // One Decrypt per seal (3), per envelope file (2) and per per-bid bid.
    assert_eq!(decrypts(&w) - before, 3 + 2 + carol.len());

    let got = String::from_utf8(fetch(&w, "output.csv")).unwrap();
    assert_eq!(got, expected_csv(&fates, "none"));
    for ghost in ["ghost-lot", "dup-lot"] {
        assert!(!got.contains(ghost), "{got}");
    }
    let json = output_json(&w);
    let text = json.to_string();
    for ghost in ["ghost-lot", "dup-lot"] {
        assert!(
            !text.contains(ghost),
            "an envelope file's set-aside lot left: {text}"
        );
    }
    let counts: BTreeMap<(String, String), u64> = [
        ("invalid_amount", 1),
        ("malformed_row", 1),
        ("duplicate_lot", 1),
    ]
    .into_iter()
    .map(|(r, n)| (("Alice".to_owned(), r.to_owned()), n))
    .collect();
    assert_eq!(set_aside(&json), counts);
    let formats: BTreeMap<String, String> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["buyer"].as_str().unwrap().to_owned(),
                f["format"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(formats["Alice"], "envelope");
    assert_eq!(formats["Bob"], "envelope");
    assert_eq!(formats["Carol"], "per-bid");
    // The manifest records each file's format too.
    let manifest: serde_json::Value = serde_json::from_slice(&fetch(&w, "manifest.json")).unwrap();
    assert!(manifest.to_string().contains("\"envelope\""), "{manifest}");

    // No amount anywhere outside: outputs, the parent's output, the enclave's and the
    // emulator's logs.
    let kms_log = std::fs::read(w.stack.kms.log().unwrap()).unwrap();
    let places: Vec<(&str, Vec<u8>)> = vec![
        ("output.csv", fetch(&w, "output.csv")),
        ("output.json", fetch(&w, "output.json")),
        ("parent stderr", out.run.stderr.clone().into_bytes()),
        ("enclave log", out.enclave_log.clone().into_bytes()),
        ("kms log", kms_log),
    ];
    for a in &amounts {
        for (name, bytes) in &places {
            assert!(!contains(bytes, a), "amount {a} in {name}");
        }
    }
}

/// A well-formed, signed message made with `b`'s real key and a data key from KMS, under the
/// given context: KMS itself would open it.
fn made(w: &World, b: &Buyer, ctx: &[(&str, &str)], plaintext: &[u8]) -> Vec<u8> {
    let client = w.stack.kms_client(&b.credentials).unwrap();
    let context: BTreeMap<String, String> = ctx
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let enc = Encryptor::new(context).unwrap();
    let key = client
        .generate_data_key(b.key.as_str(), enc.context())
        .unwrap();
    enc.encrypt(
        &key.plaintext,
        &key.ciphertext_blob,
        &key.key_id,
        plaintext,
        4096,
    )
    .unwrap()
}

/// Buyer `buyer`'s `contract,bid` rows for lots 1 to 5.
fn five_rows(buyer: u64) -> Vec<u8> {
    let mut s = String::from("contract,bid\n");
    for lot in 1..=5u64 {
        s.push_str(&format!("{lot},{}\n", amount(lot, buyer)));
    }
    s.into_bytes()
}

/// Files that are not bid files at all (two data keys), or whose first frame does not hold,
/// are the buyer's own doing: each is set aside whole, once (the two data keys cost no KMS
/// call).
#[test]
fn bad_envelope_files_are_set_aside_whole_before_any_kms_call() {
    let Some(cli) = encryption_cli() else { return };
    let names = ["Good", "TwoKeys", "Flipped"];
    let w = world(&names, options());
    let id = "envelope-bad";
    let plain = tempfile::tempdir().unwrap();
    let p = plain.path();
    let auction = AuctionId::new(id).unwrap();

    let good = w.stack.buyer("Good").unwrap();
    let good_file = bidding_client::encrypt::envelope_file(
        &w.stack.kms_client(&good.credentials).unwrap(),
        &good.key,
        &auction,
        &good.name,
        w.stack.rules,
        &five_rows(1),
    )
    .unwrap();
    upload(&w, "Good", &good_file);

    // Two data keys: the official CLI with two of the buyer's keys.
    let b = w.stack.buyer("TwoKeys").unwrap();
    let client = w.stack.kms_client(&b.credentials).unwrap();
    let second = client
        .create_key(
            "TwoKeys's second key",
            Some(bidding_standins::stack::buyer_key_policy(
                &bidding_standins::stack::buyer_arn(&b.name),
                &w.stack.pcr0,
            )),
        )
        .map(|m| m.arn);
    let second = match second {
        Ok(arn) => arn,
        Err(e) => panic!("creating a second key: {e}"),
    };
    let two = cli_encrypt(
        &cli,
        &w,
        b,
        p,
        &five_rows(4),
        &[b.key.as_str(), &second],
        &[
            format!("auction={id}"),
            "buyer=TwoKeys".into(),
            "rules=sealed".into(),
        ],
    );
    assert_eq!(
        Message::parse(&two, &Limits::default())
            .unwrap()
            .data_keys()
            .len(),
        2
    );
    upload(&w, "TwoKeys", &two);

    // A byte flipped in the body of an otherwise good file: the signature no longer holds.
    let b = w.stack.buyer("Flipped").unwrap();
    let mut flipped = bidding_client::encrypt::envelope_file(
        &w.stack.kms_client(&b.credentials).unwrap(),
        &b.key,
        &auction,
        &BuyerName::new("Flipped").unwrap(),
        w.stack.rules,
        &five_rows(6),
    )
    .unwrap();
    let n = flipped.len();
    flipped[n - 150] ^= 0x01;
    assert!(esdk::is_message(&flipped));
    upload(&w, "Flipped", &flipped);

    let a = Auction::new(id, "none");
    let enclave = w
        .stack
        .start_enclave(&exe(), "enclave-envelope-bad", &[])
        .unwrap();
    let config = write_config(&w, &a, &enclave);
    seal_round(&w, &config);
    let before = decrypts(&w);
    let out = run_parent(&w, &a, &enclave, config);
    assert_eq!(
        out.run.code,
        Some(0),
        "{}\n{}",
        out.run.stderr,
        out.enclave_log
    );
    // Every buyer's seal, Good's data key and Flipped's: a file with two data keys costs no KMS
    // call, but a flipped byte in a frame is found only when the frame is opened.
    assert_eq!(decrypts(&w) - before, names.len() + 2);

    let mut fates: BTreeMap<u64, Vec<(String, Fate)>> = BTreeMap::new();
    for lot in 1..=5u64 {
        fates.insert(
            lot,
            vec![("Good".into(), Fate::Valid(cents(&amount(lot, 1)).unwrap()))],
        );
    }
    assert_eq!(
        String::from_utf8(fetch(&w, "output.csv")).unwrap(),
        expected_csv(&fates, "none")
    );
    // The flipped byte is in Flipped's only frame: its tag does not hold, so none of its rows
    // was counted, and the file is set aside whole.
    let expected: BTreeMap<(String, String), u64> =
        [("TwoKeys", "malformed_file"), ("Flipped", "undecryptable")]
            .into_iter()
            .map(|(b, r)| ((b.to_owned(), r.to_owned()), 1))
            .collect();
    assert_eq!(set_aside(&output_json(&w)), expected);
    for buyer in [1u64, 4, 6] {
        for lot in 1..=5u64 {
            let a = amount(lot, buyer);
            for (name, bytes) in [
                ("output.json", fetch(&w, "output.json")),
                ("parent stderr", out.run.stderr.clone().into_bytes()),
                ("enclave log", out.enclave_log.clone().into_bytes()),
            ] {
                assert!(!contains(&bytes, &a), "amount {a} in {name}");
            }
        }
    }
}

/// An envelope file whose header names another auction, another buyer or another key than the
/// manifest registers fails a sealed auction whole (the manifest's buyer→key binding is the
/// operator's word, DESIGN §2), before its data key reaches KMS; nothing is written.
#[test]
fn envelope_files_for_another_auction_buyer_or_key_fail_a_sealed_auction() {
    let id = "envelope-binding";
    for case in ["OtherAuction", "OtherBuyer", "WrongKey"] {
        let w = world(&["Good", case], options());
        let good = w.stack.buyer("Good").unwrap();
        let bad = w.stack.buyer(case).unwrap();
        let file = match case {
            "OtherAuction" => made(
                &w,
                bad,
                &[
                    ("auction", "another-auction"),
                    ("buyer", case),
                    ("rules", "sealed"),
                ],
                &five_rows(2),
            ),
            "OtherBuyer" => made(
                &w,
                bad,
                &[("auction", id), ("buyer", "Good"), ("rules", "sealed")],
                &five_rows(3),
            ),
            // Made with Good's key, for this buyer's auction and name.
            _ => made(
                &w,
                good,
                &[("auction", id), ("buyer", case), ("rules", "sealed")],
                &five_rows(5),
            ),
        };
        upload(&w, case, &file);
        let good_file = bidding_client::encrypt::envelope_file(
            &w.stack.kms_client(&good.credentials).unwrap(),
            &good.key,
            &AuctionId::new(id).unwrap(),
            &good.name,
            w.stack.rules,
            &five_rows(1),
        )
        .unwrap();
        upload(&w, "Good", &good_file);
        let a = Auction::new(id, "none");
        let enclave = w
            .stack
            .start_enclave(&exe(), "enclave-envelope-binding", &[])
            .unwrap();
        let config = write_config(&w, &a, &enclave);
        seal_round(&w, &config);
        let before = decrypts(&w);
        let out = run_parent(&w, &a, &enclave, config);
        assert_eq!(out.run.code, Some(3), "{case}: {}", out.run.stderr);
        assert!(
            out.run.stderr.contains("key_binding"),
            "{case}: {}",
            out.run.stderr
        );
        // Both seals and Good's data key; the bad file's never.
        assert_eq!(decrypts(&w) - before, 3, "{case}");
        assert!(!output_exists(&w), "{case}: nothing is written");
    }
}

/// The README's recipe for `aws-encryption-cli` users: `bidctl envelope pad --lots N` first,
/// then `--encrypt` with the context `auction`, `buyer` and `rules=sealed`. Such a file wins a
/// sealed auction, and `bidctl seal` takes it without a warning; the same rows unpadded draw
/// the warning, and a context with an extra key is refused by `bidctl seal` (the enclave would
/// set the file aside whole), before anything is sealed.
#[test]
fn padded_aws_encryption_cli_files_and_what_bidctl_seal_says_about_envelopes() {
    let Some(cli) = encryption_cli() else { return };
    let w = world(&["Dave", "Erin"], options());
    let plain = tempfile::tempdir().unwrap();
    let p = plain.path();
    let dave = w.stack.buyer("Dave").unwrap();
    let rows = [
        ("1", amount(1, 4)),
        ("2", amount(2, 4)),
        ("3", amount(3, 4)),
    ];
    let mut text = String::from("contract,bid\n");
    for (lot, a) in &rows {
        text.push_str(&format!("{lot},{a}\n"));
    }
    std::fs::write(p.join("dave.csv"), &text).unwrap();
    let o = Command::new(exe())
        .args(["envelope", "pad", "--lots", "3", "dave.csv", "dave.padded"])
        .current_dir(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let padded = std::fs::read(p.join("dave.padded")).unwrap();
    assert!(bidding_core::bidfile::is_padded_len(padded.len() as u64));
    assert!(
        padded
            .windows(21)
            .any(|x| x == format!("{:0>21}", rows[0].1).as_bytes())
    );
    let context = |id: &str, extra: &[&str]| -> Vec<String> {
        [
            format!("auction={id}"),
            "buyer=Dave".into(),
            "rules=sealed".into(),
        ]
        .into_iter()
        .chain(extra.iter().map(|e| e.to_string()))
        .collect()
    };
    let state = p.join("state");
    let seal = |manifest: &[u8], file: &[u8]| {
        std::fs::write(p.join("manifest.json"), manifest).unwrap();
        std::fs::write(p.join("mine.bin"), file).unwrap();
        let o = as_buyer(&exe(), &w, dave, p)
            .args(["seal", "--manifest", "manifest.json", "--buyer", "Dave"])
            .args([
                "--key-id",
                dave.key.as_str(),
                "--bids",
                "mine.bin",
                "--state-dir",
            ])
            .arg(&state)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        for (_, a) in &rows {
            assert!(!err.contains(a.as_str()), "{err}");
        }
        (o.status.success(), err)
    };
    let erin = csv(&support::seal(
        &w,
        "Erin",
        "pad-1",
        &[bid(1, "1"), bid(4, "1")],
    ));
    upload(&w, "Erin", &erin);

    // Padded: sealed without a warning, and it wins.
    let file = cli_encrypt(
        &cli,
        &w,
        dave,
        p,
        &padded,
        &[dave.key.as_str()],
        &context("pad-1", &[]),
    );
    upload(&w, "Dave", &file);
    let a = Auction::new("pad-1", "none");
    let enclave = w.stack.start_enclave(&exe(), "enclave-pad", &[]).unwrap();
    let config = write_config(&w, &a, &enclave);
    let manifest = w.stack.make_manifest(&exe(), &config).unwrap();
    let (ok, err) = seal(&manifest, &file);
    assert!(ok && !err.contains("WARNING"), "{err}");
    let m = bidding_core::manifest::Manifest::parse(&manifest).unwrap();
    let seal_text = std::fs::read(p.join("mine.bin.seal")).unwrap();
    w.stack
        .s3_client(&dave.credentials)
        .put_object(&dave.bucket, "encrypted.csv.seal", &seal_text, "text/plain")
        .unwrap();
    w.stack
        .seal(w.stack.buyer("Erin").unwrap(), &manifest)
        .unwrap();
    let out = run_parent(&w, &a, &enclave, config);
    assert_eq!(
        out.run.code,
        Some(0),
        "{}\n{}",
        out.run.stderr,
        out.enclave_log
    );
    assert_eq!(
        String::from_utf8(fetch(&w, "output.csv")).unwrap(),
        "Property,Result\n1,Dave Wins\n2,Dave Wins\n3,Dave Wins\n4,Erin Wins\n"
    );
    assert!(set_aside(&output_json(&w)).is_empty());
    assert_eq!(m.digest(), bidding_core::config::sha256(&manifest));

    // The same rows unpadded: a warning, and the seal is still made.
    let file = cli_encrypt(
        &cli,
        &w,
        dave,
        p,
        text.as_bytes(),
        &[dave.key.as_str()],
        &context("pad-2", &[]),
    );
    upload(&w, "Dave", &file);
    let config = write_config(&w, &Auction::new("pad-2", "none"), &enclave);
    let (ok, err) = seal(&w.stack.make_manifest(&exe(), &config).unwrap(), &file);
    assert!(ok, "{err}");
    assert!(
        err.contains("WARNING") && err.contains("not padded"),
        "{err}"
    );

    // A context with an extra key: refused, nothing sealed.
    let file = cli_encrypt(
        &cli,
        &w,
        dave,
        p,
        &padded,
        &[dave.key.as_str()],
        &context("pad-3", &["note=x"]),
    );
    upload(&w, "Dave", &file);
    let config = write_config(&w, &Auction::new("pad-3", "none"), &enclave);
    let _ = std::fs::remove_file(p.join("mine.bin.seal"));
    let (ok, err) = seal(&w.stack.make_manifest(&exe(), &config).unwrap(), &file);
    assert!(!ok, "{err}");
    assert!(
        err.contains("would not open under this manifest") && err.contains("has the key note"),
        "{err}"
    );
    assert!(!p.join("mine.bin.seal").exists());
}
