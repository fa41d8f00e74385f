//! AWS's own Encryption SDK CLI (PyPI `aws-encryption-sdk-cli`, Python SDK 3.x) against the
//! KMS emulator and bidding-core's `esdk`, both ways:
//! - `aws-encryption-cli --encrypt` makes a bid file through the emulator (GenerateDataKey);
//!   a plain KMS Decrypt of its data key with the header's context, then `esdk` opens it to
//!   the exact bytes and the bid-file policy accepts it;
//! - `esdk::Encryptor` writes a message with a data key from the emulator's GenerateDataKey,
//!   and `aws-encryption-cli --decrypt` (through the emulator's Decrypt) gives the same bytes
//!   back, and refuses it under another encryption context.
//!
//! Needs `BIDDING_PYTHON` pointing into a venv holding `aws-encryption-cli` (tools/test.sh
//! makes one); without it the test says it is skipped, unless `BIDDING_REQUIRE_PEERS=1`.

#[path = "../../test-support/common/mod.rs"]
mod common;
#[path = "../../test-support/peers/mod.rs"]
mod peers;

use bidding_core::config::Mode;
use bidding_core::esdk::{self, Encryptor, Limits, Message};
use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const AUCTION: &str = "auction-2026-12";
const BUYER: &str = "alice";

fn encryption_cli() -> Option<PathBuf> {
    peers::peer_tool(
        "aws-encryption-cli",
        "AWS's Encryption SDK CLI",
        "esdk_interop",
    )
}

/// Runs the CLI against the emulator with alice's credentials and nothing else from the
/// environment's AWS configuration.
fn run_cli(cli: &Path, emu: &Emu, dir: &Path, args: &[&str]) -> Output {
    Command::new(cli)
        .args(args)
        .current_dir(dir)
        .env("AWS_ENDPOINT_URL_KMS", emu.running().endpoint())
        .env("AWS_CA_BUNDLE", emu.running().ca_pem())
        .env("AWS_ACCESS_KEY_ID", ALICE)
        .env("AWS_SECRET_ACCESS_KEY", ALICE_SECRET)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .expect("running aws-encryption-cli")
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A `contract,bid` file of `rows` rows.
fn bids(rows: usize) -> Vec<u8> {
    let mut s = String::from("contract,bid\n");
    for i in 0..rows {
        s.push_str(&format!(
            "lot-{i:06},{}.{:02}\n",
            1000 + i * 37 % 90_000,
            i % 100
        ));
    }
    s.into_bytes()
}

#[test]
fn aws_encryption_cli_and_esdk_open_each_others_files() {
    let Some(cli) = encryption_cli() else { return };
    let emu = Emu::start(None);
    let kms = emu.client(alice());
    let arn = create_key(&kms, None);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // 1. The CLI encrypts; we decrypt the data key with plain KMS Decrypt and open the file.
    for (rows, frame_length) in [(3000usize, None), (40, Some("128"))] {
        let plaintext = bids(rows);
        std::fs::write(d.join("bids.csv"), &plaintext).unwrap();
        let _ = std::fs::remove_file(d.join("bids.csv.encrypted"));
        let wrapping = format!("key={arn}");
        let auction = format!("auction={AUCTION}");
        let buyer = format!("buyer={BUYER}");
        let mut args = vec![
            "--encrypt",
            "-i",
            "bids.csv",
            "-o",
            "bids.csv.encrypted",
            "--wrapping-keys",
            &wrapping,
            "--encryption-context",
            &auction,
            &buyer,
            "rules=sealed",
            "--commitment-policy",
            "require-encrypt-require-decrypt",
            "--metadata-output",
            "metadata.json",
            "--overwrite-metadata",
        ];
        if let Some(fl) = frame_length {
            args.extend(["--frame-length", fl]);
        }
        let o = run_cli(&cli, &emu, d, &args);
        assert!(
            o.status.success(),
            "aws-encryption-cli --encrypt: {}",
            show(&o)
        );
        let file = std::fs::read(d.join("bids.csv.encrypted")).unwrap();
        assert!(esdk::is_message(&file));
        let m = Message::parse(&file, &Limits::default()).unwrap();
        // The README's recipe for the sealed image: `rules=sealed` beside auction and buyer.
        esdk::check_bid_file(&m, Mode::Sealed, AUCTION, BUYER, &arn).unwrap();
        assert_eq!(m.plaintext_len(), plaintext.len() as u64);
        if let Some(fl) = frame_length {
            assert_eq!(m.frame_length().to_string(), fl);
            assert_eq!(m.frame_count() as usize, plaintext.len().div_ceil(128));
        }
        // The CLI's metadata names the same message.
        let meta: serde_json::Value = serde_json::from_str(
            std::fs::read_to_string(d.join("metadata.json"))
                .unwrap()
                .trim(),
        )
        .unwrap();
        assert_eq!(meta["mode"], "encrypt", "{meta}");
        let [key] = m.data_keys() else { unreachable!() };
        let answer = kms
            .call(
                "Decrypt",
                &json!({
                    "CiphertextBlob": b64(&key.encrypted_key),
                    "EncryptionContext": m.context(),
                    "KeyId": arn,
                }),
            )
            .ok();
        assert_eq!(answer["KeyId"], arn.as_str());
        let data_key = unb64(&answer["Plaintext"]);
        let opened = m.decrypt(&data_key).unwrap();
        assert_eq!(&opened[..], &plaintext[..]);
        // Without aws-crypto-public-key in the context, KMS does not give the key back.
        let mut partial = m.context().clone();
        partial.remove(esdk::PUBLIC_KEY_CONTEXT_KEY);
        let refused = kms.call(
            "Decrypt",
            &json!({"CiphertextBlob": b64(&key.encrypted_key), "EncryptionContext": partial}),
        );
        refused.err(400, "InvalidCiphertextException");
    }

    // 2. We encrypt with a data key from GenerateDataKey; the CLI decrypts.
    let plaintext = bids(500);
    let context: BTreeMap<String, String> = [("auction", AUCTION), ("buyer", BUYER)]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    let enc = Encryptor::new(context).unwrap();
    let generated = kms
        .call(
            "GenerateDataKey",
            &json!({"KeyId": arn, "NumberOfBytes": 32, "EncryptionContext": enc.context()}),
        )
        .ok();
    let message = enc
        .encrypt(
            &unb64(&generated["Plaintext"]),
            &unb64(&generated["CiphertextBlob"]),
            generated["KeyId"].as_str().unwrap(),
            &plaintext,
            1000,
        )
        .unwrap();
    std::fs::write(d.join("ours.bin"), &message).unwrap();
    let wrapping = format!("key={arn}");
    let decrypt = |context: &[&str], out: &str| {
        let mut args = vec![
            "--decrypt",
            "-i",
            "ours.bin",
            "-o",
            out,
            "--wrapping-keys",
            &wrapping,
            "--commitment-policy",
            "require-encrypt-require-decrypt",
            "--suppress-metadata",
        ];
        if !context.is_empty() {
            args.push("--encryption-context");
            args.extend(context);
        }
        run_cli(&cli, &emu, d, &args)
    };
    let auction = format!("auction={AUCTION}");
    let buyer = format!("buyer={BUYER}");
    let o = decrypt(&[&auction, &buyer], "ours.csv");
    assert!(
        o.status.success(),
        "aws-encryption-cli --decrypt: {}",
        show(&o)
    );
    assert_eq!(std::fs::read(d.join("ours.csv")).unwrap(), plaintext);
    // The CLI checks the context it is told to expect against the header.
    // (It skips the file with a warning and deletes its output, exit status 0.)
    let o = decrypt(&["auction=another-auction"], "other.csv");
    assert!(!d.join("other.csv").exists(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("encryption context did not match"),
        "{}",
        show(&o)
    );
    // And a flipped byte of our message (in the last frame) is refused by the CLI as well.
    let mut bad = message.clone();
    let n = bad.len();
    bad[n - 120] ^= 0x40;
    std::fs::write(d.join("ours.bin"), &bad).unwrap();
    let o = decrypt(&[], "bad.csv");
    assert!(!o.status.success(), "{}", show(&o));
    assert!(!d.join("bad.csv").exists(), "{}", show(&o));
}
