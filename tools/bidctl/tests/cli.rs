//! bidctl's commands as users run them: the binary, its exit codes, stdout and stderr.

#[path = "../../test-support/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::*;

fn bidctl(args: &[&str]) -> Output {
    Command::new(exe()).args(args).output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: ../shared/fixtures not found (the AWS fixtures live beside the clone in CI)"
        );
        None
    }
}

#[test]
fn attestation_verify_and_inspect_on_the_aws_fixtures() {
    let Some(f) = fixtures() else { return };
    let valid = f.join("attestation/evervault-valid-2022-10-13.cbor");
    let debug = f.join("attestation/evervault-debug-2022-10-12.cbor");
    let (v, d) = (valid.to_str().unwrap(), debug.to_str().unwrap());
    let pcr0 = "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b";

    let o = bidctl(&["attestation", "verify", v, "--at", "document"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["module_id"], "i-020b6af9246d90e92-enc0183d09086c24190");
    assert_eq!(json["timestamp"], 1665651482136u64);
    assert_eq!(json["time"], "2022-10-13T08:58:02.136Z");
    assert_eq!(json["pcrs"]["0"], pcr0);
    assert_eq!(json["debug_mode"], false);
    assert!(json["public_key"].is_null() && json["user_data"].is_null());

    let o = bidctl(&[
        "attestation",
        "verify",
        v,
        "--at",
        "document",
        "--expect-pcr0",
        pcr0,
    ]);
    assert!(o.status.success());
    let o = bidctl(&[
        "attestation",
        "verify",
        v,
        "--at",
        "2022-10-13T09:00:00Z",
        "--root",
        f.join("attestation/aws-nitro-root-g1.pem")
            .to_str()
            .unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));

    // Default `--at now`: long expired. One line on stderr naming the failed step.
    let o = bidctl(&["attestation", "verify", v]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("expired"), "{err}");

    // Debug mode is reported, and a PCR0 of zeros does not match the real one.
    let o = bidctl(&[
        "attestation",
        "verify",
        d,
        "--at",
        "document",
        "--expect-pcr0",
        pcr0,
    ]);
    assert!(!o.status.success());
    let o = bidctl(&["attestation", "inspect", "--json", d]);
    assert!(o.status.success());
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["debug_mode"], true);
    assert_eq!(json["user_data"], hex::encode("hello, world!"));
    assert!(json["nonce"].is_null());

    // Pretty by default: one labelled field a line, the time in RFC 3339, PCRs in hex.
    let o = bidctl(&["attestation", "inspect", v]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("module id    i-020b6af9246d90e92-enc0183d09086c24190\n"),
        "{out}"
    );
    assert!(
        out.contains("timestamp    2022-10-13T08:58:02.136Z (1665651482136 ms since the epoch)\n"),
        "{out}"
    );
    assert!(out.contains(&format!("PCR0         {pcr0}\n")), "{out}");
    assert!(out.contains("debug mode   no\n"), "{out}");
    assert!(out.contains("public key   (none)\n"), "{out}");
    assert!(out.lines().count() >= 10, "{out}");
    let o = bidctl(&["attestation", "inspect", d]);
    let (out, _) = text(&o);
    assert!(out.contains("debug mode   YES"), "{out}");
    assert!(out.contains("nonce        (none)\n"), "{out}");
    assert!(
        out.contains(&format!(
            "user data    {} (text: \"hello, world!\")",
            hex::encode("hello, world!")
        )),
        "{out}"
    );

    // A truncated document: one plain sentence, no Rust debug output.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&valid).unwrap();
    let cut = dir.path().join("cut.cbor");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    for args in [
        vec!["attestation", "inspect", cut.to_str().unwrap()],
        vec!["attestation", "verify", cut.to_str().unwrap()],
    ] {
        let o = bidctl(&args);
        let (_, err) = text(&o);
        assert!(!o.status.success());
        assert!(
            err.contains("COSE_Sign1 ends early: the ") && err.contains("(a truncated file?)"),
            "{err}"
        );
        assert!(
            !err.contains("Io(") && !err.contains("UnexpectedEof"),
            "{err}"
        );
        assert!(err.lines().count() <= 2, "{err}");
    }

    // A document with one flipped byte, and another root.
    let mut bytes = std::fs::read(&valid).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let flipped = dir.path().join("flipped.cbor");
    std::fs::write(&flipped, &bytes).unwrap();
    let o = bidctl(&[
        "attestation",
        "verify",
        flipped.to_str().unwrap(),
        "--at",
        "document",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("signature"), "{:?}", text(&o));
}

#[test]
fn cms_open_with_an_openssl_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "key.pem",
    ]);
    run(&[
        "pkey", "-in", "key.pem", "-pubout", "-outform", "DER", "-out", "pub.der",
    ]);
    let spki = std::fs::read(d.join("pub.der")).unwrap();
    let rid = bidding_core::cms::recipient_key_id(&spki);
    std::fs::write(
        d.join("ext.cnf"),
        format!(
            "[req]\ndistinguished_name=dn\nprompt=no\n[dn]\nCN=recipient\n[v3]\nsubjectKeyIdentifier={}\n",
            rid.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
        ),
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "key.pem",
        "-config",
        "ext.cnf",
        "-extensions",
        "v3",
        "-days",
        "1",
        "-out",
        "cert.pem",
    ]);
    std::fs::write(d.join("plain.txt"), "131415.92").unwrap();
    run(&[
        "cms",
        "-encrypt",
        "-binary",
        "-stream",
        "-keyid",
        "-aes256",
        "-in",
        "plain.txt",
        "-recip",
        "cert.pem",
        "-keyopt",
        "rsa_padding_mode:oaep",
        "-keyopt",
        "rsa_oaep_md:sha256",
        "-keyopt",
        "rsa_mgf1_md:sha256",
        "-outform",
        "DER",
        "-out",
        "env.ber",
    ]);
    let key = d.join("key.pem");
    let env = d.join("env.ber");
    let o = bidctl(&[
        "cms",
        "open",
        "--key",
        key.to_str().unwrap(),
        env.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(o.stdout, b"131415.92");
    // A wrong expected rid is refused before any decryption.
    let o = bidctl(&[
        "cms",
        "open",
        "--key",
        key.to_str().unwrap(),
        "--expect-rid",
        &"00".repeat(32),
        env.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    assert!(text(&o).1.contains("recipient key id"), "{:?}", text(&o));
    // Another key.
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "other.pem",
    ]);
    let other = d.join("other.pem");
    let o = bidctl(&[
        "cms",
        "open",
        "--key",
        other.to_str().unwrap(),
        env.to_str().unwrap(),
    ]);
    assert!(!o.status.success() && o.stdout.is_empty());
}

/// The official AWS Encryption SDK vectors (signed, unsigned, a bad commitment) and a message
/// of our own encoder, through `bidctl envelope inspect|open`.
#[test]
fn envelope_open_and_inspect() {
    use base64::Engine;
    use bidding_core::esdk::Encryptor;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = |name: &str| d.join(name).to_str().unwrap().to_owned();

    // Ours, with a raw 32-byte key file and with its base64.
    let key = [0x5au8; 32];
    let arn = "arn:aws:kms:us-east-1:111122223333:key/0b5f3e4c-6d1a-4c38-9d2e-8f7a6b5c4d3e";
    let ctx = [("auction", "A-1"), ("buyer", "alice")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    let csv = b"contract,bid\n1,100\n2,200.50\n";
    let m = Encryptor::new(ctx)
        .unwrap()
        .encrypt(&key, b"edk", arn, csv, 8)
        .unwrap();
    std::fs::write(path("ours.bin"), &m).unwrap();
    std::fs::write(path("key.raw"), key).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    std::fs::write(path("key.b64"), format!("{b64}\n")).unwrap();
    for k in ["key.raw", "key.b64"] {
        let o = bidctl(&[
            "envelope",
            "open",
            "--data-key",
            &path(k),
            &path("ours.bin"),
        ]);
        assert!(o.status.success(), "{:?}", text(&o));
        assert_eq!(o.stdout, csv);
    }
    let o = bidctl(&["envelope", "inspect", &path("ours.bin")]);
    assert!(o.status.success(), "{:?}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["suite"], "0x0578");
    assert_eq!(j["signature"], "verified");
    assert_eq!(j["encryption_context"]["auction"], "A-1");
    assert_eq!(j["encryption_context"]["buyer"], "alice");
    assert!(j["encryption_context"]["aws-crypto-public-key"].is_string());
    assert_eq!(j["data_keys"][0]["provider_id"], "aws-kms");
    assert_eq!(j["data_keys"][0]["provider_info"], arn);
    assert_eq!(j["frames"], 4);
    assert_eq!(j["plaintext_bytes"], csv.len());

    // Refusals: a wrong key, a bad key file, a flipped byte, not a message at all.
    std::fs::write(path("wrong.raw"), [0x5bu8; 32]).unwrap();
    let o = bidctl(&[
        "envelope",
        "open",
        "--data-key",
        &path("wrong.raw"),
        &path("ours.bin"),
    ]);
    assert!(!o.status.success() && o.stdout.is_empty());
    assert!(text(&o).1.contains("key commitment"), "{:?}", text(&o));
    std::fs::write(path("short.key"), [1u8; 16]).unwrap();
    let o = bidctl(&[
        "envelope",
        "open",
        "--data-key",
        &path("short.key"),
        &path("ours.bin"),
    ]);
    assert!(
        !o.status.success() && text(&o).1.contains("32 raw bytes"),
        "{:?}",
        text(&o)
    );
    let mut bad = m.clone();
    let n = bad.len();
    bad[n - 30] ^= 1;
    std::fs::write(path("bad.bin"), &bad).unwrap();
    for args in [
        vec!["envelope", "inspect", &path("bad.bin")],
        vec![
            "envelope",
            "open",
            "--data-key",
            &path("key.raw"),
            &path("bad.bin"),
        ],
    ] {
        let o = bidctl(&args);
        assert!(!o.status.success() && o.stdout.is_empty());
        assert!(text(&o).1.contains("signature"), "{:?}", text(&o));
    }
    let o = bidctl(&["envelope", "inspect", &path("key.b64")]);
    assert!(!o.status.success() && text(&o).1.contains("not an AWS Encryption SDK message"));

    let Some(f) = fixtures() else { return };
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.join("esdk/commitment-test-vectors.json")).unwrap(),
    )
    .unwrap();
    let tests = json["tests"].as_array().unwrap();
    // 3: KMS provider, signed; 1: raw provider, unsigned; 2: bad commitment.
    for (i, expect) in [
        (2usize, Some("Plaintext")),
        (0, Some("GoodCommitment")),
        (1, None),
    ] {
        let t = &tests[i];
        let decode = |k: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(t[k].as_str().unwrap())
                .unwrap()
        };
        std::fs::write(path("v.bin"), decode("ciphertext")).unwrap();
        std::fs::write(path("v.key"), t["decrypted-dek"].as_str().unwrap()).unwrap();
        let o = bidctl(&["envelope", "inspect", &path("v.bin")]);
        assert!(o.status.success(), "{:?}", text(&o));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["message_id"], hex::encode(decode("message-id")));
        let o = bidctl(&[
            "envelope",
            "open",
            "--data-key",
            &path("v.key"),
            &path("v.bin"),
        ]);
        match expect {
            Some(p) => {
                assert!(o.status.success(), "{:?}", text(&o));
                assert_eq!(o.stdout, p.as_bytes());
            }
            None => {
                assert!(!o.status.success() && o.stdout.is_empty());
                assert!(text(&o).1.contains("key commitment"), "{:?}", text(&o));
            }
        }
        if i == 2 {
            assert_eq!(j["suite"], "0x0578");
            assert_eq!(j["signature"], "verified");
            assert_eq!(j["data_keys"][0]["provider_id"], "aws-kms");
            assert!(
                j["data_keys"][0]["provider_info"]
                    .as_str()
                    .unwrap()
                    .starts_with("arn:aws:kms:")
            );
        }
        if i == 0 {
            assert_eq!(j["suite"], "0x0478");
            assert_eq!(j["signature"], "none (unsigned suite)");
            // The raw keyring's provider info is binary.
            assert!(j["data_keys"][0]["provider_info_hex"].is_string());
        }
    }
}

#[test]
fn key_policy_statement() {
    let role = "arn:aws:iam::111122223333:role/bidding-parent";
    let pcr0 = "ab".repeat(48);
    let o = bidctl(&[
        "key-policy",
        "--role-arn",
        role,
        "--pcr0",
        &pcr0,
        "--pcr8",
        &"cd".repeat(48),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Effect"], "Allow");
    assert_eq!(v["Action"], "kms:Decrypt");
    assert_eq!(v["Principal"]["AWS"], role);
    let cond = &v["Condition"]["StringEqualsIgnoreCase"];
    assert_eq!(cond["kms:RecipientAttestation:ImageSha384"], pcr0);
    assert_eq!(cond["kms:RecipientAttestation:PCR8"], "cd".repeat(48));
    // The note on stderr: the buyer's own use (Encrypt, GenerateDataKey) is another statement.
    assert!(text(&o).1.contains("kms:GenerateDataKey"), "{:?}", text(&o));

    // From `nitro-cli describe-eif`, with all-zero (debug-mode) measurements: a warning.
    let dir = tempfile::tempdir().unwrap();
    let eif = dir.path().join("describe.json");
    let zero = "0".repeat(96);
    std::fs::write(
        &eif,
        serde_json::json!({"EifVersion": 4, "Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": zero, "PCR1": zero, "PCR2": zero}}).to_string(),
    )
    .unwrap();
    let o = bidctl(&[
        "key-policy",
        "--role-arn",
        role,
        "--describe-eif",
        eif.to_str().unwrap(),
        "--document",
        "--admin-arn",
        "arn:aws:iam::444455556666:root",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).1.contains("debug-mode enclave"), "{:?}", text(&o));
    assert!(text(&o).1.contains("kms:GenerateDataKey"), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Statement"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["Statement"][1]["Condition"]["StringEqualsIgnoreCase"]["kms:RecipientAttestation:PCR2"],
        zero
    );

    let o = bidctl(&["key-policy", "--role-arn", "not-an-arn", "--pcr0", &pcr0]);
    assert!(!o.status.success());
    let o = bidctl(&["key-policy", "--role-arn", role, "--pcr0", "abc"]);
    assert!(!o.status.success());
}

/// Issue 12, attack 6: `--document` gives the buyer's key to the buyer's own administrator
/// and the operator's role nothing but Decrypt under the attestation condition; it warns when
/// both are in one AWS account; and it will not guess the administrator.
#[test]
fn key_policy_document_keeps_the_key_the_buyers() {
    let role = "arn:aws:iam::111122223333:role/bidding-parent";
    let pcr0 = "ab".repeat(48);
    let document = |admin: &str| {
        bidctl(&[
            "key-policy",
            "--document",
            "--admin-arn",
            admin,
            "--role-arn",
            role,
            "--pcr0",
            &pcr0,
        ])
    };
    let admin = "arn:aws:iam::444455556666:role/buyer-admin";
    let o = document(admin);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        !text(&o).1.contains("WARNING"),
        "no warning across accounts: {:?}",
        text(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let statements = v["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 3, "{v:#}");
    // Only the administrator makes seals (KMS Encrypt with a `manifest` context): whoever may
    // Encrypt under the key could consent in the buyer's name.
    assert_eq!(
        statements[2],
        serde_json::json!({"Sid":"OnlyTheAdministratorSeals","Effect":"Deny","Principal":{"AWS":"*"},
            "Action":"kms:Encrypt","Resource":"*","Condition":{"Null":{"kms:EncryptionContext:manifest":"false"},
            "ArnNotEquals":{"aws:PrincipalArn":admin}}})
    );
    assert!(
        text(&o).1.contains("OnlyTheAdministratorSeals"),
        "{:?}",
        text(&o)
    );
    for st in &statements[..2] {
        assert_eq!(st["Effect"], "Allow");
        assert_eq!(st["Resource"], "*");
        let principal = st["Principal"]["AWS"].as_str().unwrap();
        match principal {
            p if p == admin => {
                assert_eq!(st["Action"], "kms:*");
                assert!(st.get("Condition").is_none());
            }
            p if p == role => {
                // Exactly Decrypt, as a string (not a list that could hold more), and only
                // for the attested enclave.
                assert_eq!(st["Action"], "kms:Decrypt");
                assert_eq!(
                    st["Condition"]["StringEqualsIgnoreCase"]["kms:RecipientAttestation:ImageSha384"],
                    pcr0
                );
            }
            other => panic!("a statement for {other}: {v:#}"),
        }
    }
    // Nothing for the operator's account as a whole.
    assert!(!String::from_utf8_lossy(&o.stdout).contains("111122223333:root"));

    // The administrator in the operator's account: still the same document, and a warning.
    let o = document("arn:aws:iam::111122223333:root");
    assert!(o.status.success(), "{:?}", text(&o));
    let (_, err) = text(&o);
    assert!(
        err.contains("WARNING") && err.contains("same AWS account") && err.contains("111122223333"),
        "{err}"
    );
    // The account root as administrator: the exception is its account, not an ARN.
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["Statement"][2]["Condition"],
        serde_json::json!({"Null":{"kms:EncryptionContext:manifest":"false"},"StringNotEquals":{"aws:PrincipalAccount":"111122223333"}})
    );

    // --document without --admin-arn: refused by the command line, nothing printed.
    let o = bidctl(&[
        "key-policy",
        "--document",
        "--role-arn",
        role,
        "--pcr0",
        &pcr0,
    ]);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    assert!(text(&o).1.contains("--admin-arn"), "{:?}", text(&o));
    // An administrator that is not an IAM principal.
    let o = document("buyer-admin");
    assert!(!o.status.success() && o.stdout.is_empty(), "{:?}", text(&o));
}

#[test]
fn encrypt_seals_and_refuses_bad_files_whole() {
    let w = world(
        &["Buyer1"],
        bidding_standins::stack::StackOptions::default(),
    );
    let b = w.stack.buyer("Buyer1").unwrap();
    let dir = w.dir.path();
    let envs = |cmd: &mut Command| {
        cmd.env("AWS_ACCESS_KEY_ID", &b.credentials.access_key_id)
            .env(
                "AWS_SECRET_ACCESS_KEY",
                b.credentials.secret_access_key.expose(),
            )
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL_KMS", w.stack.kms.endpoint())
            .env("AWS_CA_BUNDLE", w.stack.kms.ca_pem())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("HOME", dir);
    };
    let good = dir.join("bids.csv");
    std::fs::write(&good, "contract,bid\n1,100000\n2, 2500.5 \n10,007\n").unwrap();
    let mut cmd = Command::new(exe());
    cmd.args([
        "encrypt",
        "--key-id",
        b.key.as_str(),
        "--auction",
        "a-1",
        "--buyer",
        "Buyer1",
        good.to_str().unwrap(),
    ]);
    envs(&mut cmd);
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    let rows =
        bidding_core::bidfile::parse_encrypted("stdout", &o.stdout, Default::default()).unwrap();
    let lots: Vec<&str> = rows.iter().map(|r| r.lot.as_str()).collect();
    assert_eq!(lots, ["1", "2", "10"]);
    // Amounts are sealed at one width: every ciphertext of the file has the same length, so
    // none says how many digits its amount has (issue 12, attack 5).
    let lengths: std::collections::BTreeSet<usize> =
        rows.iter().map(|r| r.ciphertext.len()).collect();
    assert_eq!(lengths.len(), 1, "ciphertext lengths {lengths:?}");
    // Each bid opens, with its context (the sealed image's: `rules=sealed` included), to the
    // amount padded to the fixed width.
    let client = w.stack.kms_client(&b.credentials).unwrap();
    let auction = bidding_core::names::AuctionId::new("a-1").unwrap();
    for (row, want) in rows.iter().zip([
        "000000000000100000.00",
        "000000000000002500.50",
        "000000000000000007.00",
    ]) {
        let ctx = bidding_core::kms::bid_context(
            bidding_core::config::Mode::Sealed,
            &auction,
            &row.lot,
            &b.name,
        );
        assert_eq!(ctx["rules"], "sealed");
        let answer: bidding_core::kms::DecryptResponse = client
            .call(
                "Decrypt",
                &bidding_core::kms::DecryptRequest {
                    ciphertext_blob: row.ciphertext.clone(),
                    key_id: Some(b.key.to_string()),
                    encryption_context: Some(ctx),
                    encryption_algorithm: None,
                    recipient: None,
                },
            )
            .unwrap();
        assert_eq!(answer.plaintext.unwrap(), want.as_bytes());
    }
    // --upload puts the same format into the buyer's bucket.
    let mut cmd = Command::new(exe());
    cmd.args([
        "encrypt",
        "--key-id",
        b.key.as_str(),
        "--auction",
        "a-1",
        "--buyer",
        "Buyer1",
        "--upload",
        &format!("s3://{}/encrypted.csv", b.bucket),
        good.to_str().unwrap(),
    ]);
    envs(&mut cmd);
    cmd.env("AWS_ENDPOINT_URL_S3", w.stack.s3.endpoint());
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(o.stdout.is_empty());
    let uploaded = std::fs::read(w.stack.s3.object_path(&b.bucket, "encrypted.csv")).unwrap();
    assert_eq!(
        bidding_core::bidfile::parse_encrypted("s3", &uploaded, Default::default())
            .unwrap()
            .len(),
        3
    );

    // A file with bad rows: every bad line listed, no amount shown, nothing written.
    let bad = dir.join("bad.csv");
    std::fs::write(
        &bad,
        "contract,bid\n1,100000\n2,-4242\n3,1e5\n3,17\n4,99.999\n",
    )
    .unwrap();
    let mut cmd = Command::new(exe());
    cmd.args([
        "encrypt",
        "--key-id",
        b.key.as_str(),
        "--auction",
        "a-1",
        "--buyer",
        "Buyer1",
        bad.to_str().unwrap(),
    ]);
    envs(&mut cmd);
    let o = cmd.output().unwrap();
    let (out, err) = text(&o);
    assert!(!o.status.success());
    assert!(out.is_empty(), "nothing may be written: {out}");
    for line in [
        "line 3: bid: a sign",
        "line 4: bid: an amount may contain only",
        "line 5: lot `3` already appears on line 4",
        "line 6: bid: an amount may have at most 2 digits",
    ] {
        assert!(err.contains(line), "missing {line:?} in {err}");
    }
    for amount in ["4242", "99.999", "1e5"] {
        assert!(!err.contains(amount), "{err}");
    }
}

#[test]
fn demo_runs_the_proof_of_concept_scenario() {
    let out = tempfile::tempdir().unwrap();
    let o = bidctl(&["demo", "--out", out.path().to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(
        std::fs::read_to_string(out.path().join("output.csv")).unwrap(),
        "Property,Result\n1,Buyer1 Wins\n2,Buyer2 Wins\n3,\"Tie: Buyer1, Buyer2\"\n"
    );
    let (stdout, _) = text(&o);
    assert!(stdout.contains("Verified:"), "{stdout}");
    // Its scratch directory is gone at the end: no path inside it is printed.
    assert!(!stdout.contains("bidctl-demo-"), "{stdout}");
    // The command it prints to check the result works as printed.
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("bidctl verify"))
        .unwrap();
    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
    assert!(args.contains(&"--manifest"), "{line}");
    let o = bidctl(&args);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("mode         SEALED"), "{:?}", text(&o));
    // The demo runs the sealed flow: a manifest, no unsealed configuration.
    for f in [
        "output.csv.attestation",
        "output.json",
        "manifest.json",
        "dev-root.pem",
    ] {
        assert!(out.path().join(f).exists(), "{f}");
    }
    assert!(!out.path().join("output.csv.config.json").exists());
}

/// `bidctl seal`, as a buyer runs it against the operator's manifest: it refuses a manifest
/// that does not hold the buyer's own file, a key other than the one the manifest registers,
/// and a second, different manifest of the same auction unless forced; otherwise it writes
/// `<bids>.seal`, which opens under the buyer's key with the seal context of exactly this
/// manifest, and uploads it next to the bid file.
#[test]
fn seal_checks_the_manifest_before_consenting() {
    let w = world(
        &["Buyer1", "Buyer2"],
        bidding_standins::stack::StackOptions::default(),
    );
    let dir = w.dir.path();
    let mut files = Vec::new();
    for (name, amounts) in [("Buyer1", ["100", "200"]), ("Buyer2", ["300", "400"])] {
        let body = csv(&seal(
            &w,
            name,
            "s-1",
            &[bid(1, amounts[0]), bid(2, amounts[1])],
        ));
        upload(&w, name, &body);
        let path = dir.join(format!("{name}-encrypted.csv"));
        std::fs::write(&path, &body).unwrap();
        files.push(path);
    }
    // The operator's manifest (and, later, another one of the same auction).
    let nowhere =
        bidding_core::endpoint::Endpoint::Unix(dir.join("none.sock").display().to_string());
    let auction = bidding_core::names::AuctionId::new("s-1").unwrap();
    let manifest_of = |reveal: &str, name: &str| {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            w.stack.parent_config(&auction, &nowhere, reveal, false),
        )
        .unwrap();
        let bytes = w.stack.make_manifest(&exe(), &config).unwrap();
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes)
    };
    let (manifest, manifest_bytes) = manifest_of("none", "manifest");
    let state = tempfile::tempdir().unwrap();
    let b1 = w.stack.buyer("Buyer1").unwrap();
    let b2 = w.stack.buyer("Buyer2").unwrap();
    let seal_cmd = |manifest: &Path, key: &str, bids: &Path, extra: &[&str]| {
        let mut cmd = Command::new(exe());
        cmd.args(["seal", "--manifest"])
            .arg(manifest)
            .args(["--buyer", "Buyer1", "--key-id", key, "--bids"])
            .arg(bids)
            .arg("--state-dir")
            .arg(state.path())
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ACCESS_KEY_ID", &b1.credentials.access_key_id)
            .env(
                "AWS_SECRET_ACCESS_KEY",
                b1.credentials.secret_access_key.expose(),
            )
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL_KMS", w.stack.kms.endpoint())
            .env("AWS_ENDPOINT_URL_S3", w.stack.s3.endpoint())
            .env("AWS_CA_BUNDLE", w.stack.kms.ca_pem())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("HOME", dir);
        cmd.output().unwrap()
    };
    let seal_path = |bids: &Path| {
        let mut p = bids.as_os_str().to_owned();
        p.push(".seal");
        PathBuf::from(p)
    };

    // Another file than the one the manifest holds for Buyer1 (Buyer2's).
    let o = seal_cmd(&manifest, b1.key.as_str(), &files[1], &[]);
    let (_, err) = text(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("does not hold your file"), "{err}");
    assert!(!seal_path(&files[1]).exists());
    // The manifest's terms are shown before anything is decided.
    assert!(
        err.contains("auction          s-1") && err.contains(b2.key.as_str()),
        "{err}"
    );

    // Another key than the one the manifest registers for Buyer1.
    let o = seal_cmd(&manifest, b2.key.as_str(), &files[0], &[]);
    let (_, err) = text(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("registers key"), "{err}");
    assert!(!seal_path(&files[0]).exists());

    // The right file and key: <bids>.seal, uploaded next to the bid file.
    let o = seal_cmd(&manifest, b1.key.as_str(), &files[0], &["--upload"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let written = std::fs::read(seal_path(&files[0])).unwrap();
    let uploaded = std::fs::read(w.stack.s3.object_path(&b1.bucket, "encrypted.csv.seal")).unwrap();
    assert_eq!(written, uploaded);
    let blob = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        written.trim_ascii(),
    )
    .unwrap();
    // It is KMS's encryption of the seal marker under Buyer1's key, with this manifest's
    // context: the buyer's consent to exactly this manifest and no other.
    let m = bidding_core::manifest::Manifest::parse(&manifest_bytes).unwrap();
    let open = |digest: &[u8; 32]| {
        w.stack
            .kms_client(&b1.credentials)
            .unwrap()
            .call::<_, bidding_core::kms::DecryptResponse>(
                "Decrypt",
                &bidding_core::kms::DecryptRequest {
                    ciphertext_blob: blob.clone(),
                    key_id: Some(b1.key.to_string()),
                    encryption_context: Some(bidding_core::manifest::seal_context(
                        &auction, &b1.name, digest,
                    )),
                    encryption_algorithm: None,
                    recipient: None,
                },
            )
    };
    assert_eq!(
        open(&m.digest()).unwrap().plaintext.unwrap(),
        bidding_core::manifest::SEAL_MARKER
    );
    assert!(open(&[0u8; 32]).is_err(), "the context binds the manifest");
    // Sealing the same manifest again is harmless.
    let o = seal_cmd(&manifest, b1.key.as_str(), &files[0], &[]);
    assert!(o.status.success(), "{:?}", text(&o));

    // A second, different manifest of the same auction: refused without --force.
    let (other, _) = manifest_of("winning-bid", "other");
    std::fs::remove_file(seal_path(&files[0])).unwrap();
    let o = seal_cmd(&other, b1.key.as_str(), &files[0], &[]);
    let (_, err) = text(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("already sealed another manifest"), "{err}");
    assert!(!seal_path(&files[0]).exists());
    // --force: the buyer accepts that both manifests could be run.
    let o = seal_cmd(&other, b1.key.as_str(), &files[0], &["--force"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(seal_path(&files[0]).exists());
}

/// `bidctl seal` and the buyer's own file (issue 21, and issue 22's friction item): it warns
/// about what it can see there (a line of spaces, ciphertexts of different lengths, a
/// header-only file), test-opens the first bid under the manifest's context, says in one line
/// when KMS does not let the buyer Decrypt, refuses a second manifest holding the same file
/// under a renamed auction without `--force` (finding 4; with it, the renamed manifest's
/// context does not open the bids), and keeps the first record format's entries.
#[test]
fn seal_warns_about_the_buyers_file_and_refuses_a_renamed_auction() {
    let w = world(
        &["Buyer1"],
        bidding_standins::stack::StackOptions::default(),
    );
    let dir = w.dir.path();
    let b1 = w.stack.buyer("Buyer1").unwrap();
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    // The first record format, for another auction: kept.
    let old = format!(
        r#"{{"sealed":{{"old-auction/Buyer1":"{}"}}}}"#,
        hex::encode([5u8; 32])
    );
    std::fs::write(state.join("seals.json"), &old).unwrap();
    let nowhere =
        bidding_core::endpoint::Endpoint::Unix(dir.join("none.sock").display().to_string());
    // The operator's manifest of `auction` over Buyer1's uploaded file.
    let manifest_of = |auction: &str| {
        let config = dir.join(format!("{auction}.toml"));
        let id = bidding_core::names::AuctionId::new(auction).unwrap();
        std::fs::write(&config, w.stack.parent_config(&id, &nowhere, "none", false)).unwrap();
        let bytes = w.stack.make_manifest(&exe(), &config).unwrap();
        let path = dir.join(format!("{auction}.json"));
        std::fs::write(&path, &bytes).unwrap();
        path
    };
    let seal_cmd = |manifest: &Path, bids: &Path, extra: &[&str]| {
        let o = Command::new(exe())
            .args(["seal", "--manifest"])
            .arg(manifest)
            .args(["--buyer", "Buyer1", "--key-id", b1.key.as_str(), "--bids"])
            .arg(bids)
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ACCESS_KEY_ID", &b1.credentials.access_key_id)
            .env(
                "AWS_SECRET_ACCESS_KEY",
                b1.credentials.secret_access_key.expose(),
            )
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL_KMS", w.stack.kms.endpoint())
            .env("AWS_CA_BUNDLE", w.stack.kms.ca_pem())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap();
        let (out, err) = text(&o);
        for amount in ["4711", "2000000"] {
            assert!(!out.contains(amount) && !err.contains(amount), "{err}");
        }
        (o.status.success(), err)
    };

    // A file with a line of spaces and amounts of different widths (not bidctl's).
    let mut body = String::from_utf8(csv(&seal(
        &w,
        "Buyer1",
        "s-1",
        &[bid(1, "4711"), bid(2, "2000000")],
    )))
    .unwrap();
    body.push_str("   \n");
    upload(&w, "Buyer1", body.as_bytes());
    let bids = dir.join("encrypted.csv");
    std::fs::write(&bids, &body).unwrap();
    let manifest = manifest_of("s-1");
    let (ok, err) = seal_cmd(&manifest, &bids, &[]);
    assert!(ok, "{err}");
    for want in [
        "WARNING",
        "1 row of your file is not `<lot>,<ciphertext>`",
        "line 4",
        "malformed_row",
        "2 different lengths",
        "your bid on lot 1 opens with your key under this manifest's context",
        "sealed manifest",
    ] {
        assert!(err.contains(want), "missing {want:?}: {err}");
    }
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("seals.json")).unwrap()).unwrap();
    assert!(
        record["sealed"]["old-auction/Buyer1"].is_string(),
        "{record}"
    );
    assert_eq!(record["seals"][0]["auction"], "s-1", "{record}");
    assert_eq!(
        record["seals"][0]["file"],
        hex::encode(bidding_core::config::sha256(body.as_bytes()))
    );

    // Finding 4: the same file in a "renamed" auction.
    let renamed = manifest_of("s-1-renamed");
    let (ok, err) = seal_cmd(&renamed, &bids, &[]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("holds this very bid file") && err.contains("under any auction id"),
        "{err}"
    );
    assert!(err.contains("nothing was sealed"), "{err}");
    // Forced, it still does not seal: the bids do not open under the renamed context.
    let (ok, err) = seal_cmd(&renamed, &bids, &["--force"]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("your bid on lot 1 does not open under this manifest's context")
            && err.contains("auction=s-1-renamed")
            && err.contains("rules=sealed"),
        "{err}"
    );

    // A header-only file, in another auction: a warning, no test-open.
    upload(&w, "Buyer1", b"[].contract,[].bid\n");
    std::fs::write(&bids, b"[].contract,[].bid\n").unwrap();
    let (ok, err) = seal_cmd(&manifest_of("s-2"), &bids, &[]);
    assert!(ok, "{err}");
    assert!(err.contains("holds no bids"), "{err}");
    assert!(!err.contains("opens with your key"), "{err}");

    // A key that lets its owner Encrypt but not Decrypt: one line, and the seal is made.
    let body = csv(&seal(
        &w,
        "Buyer1",
        "s-3",
        &[bid(1, "000000000000004711.00")],
    ));
    upload(&w, "Buyer1", &body);
    std::fs::write(&bids, &body).unwrap();
    let manifest = manifest_of("s-3");
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": bidding_standins::stack::buyer_arn(&b1.name)},
        "Action": ["kms:Encrypt", "kms:PutKeyPolicy"], "Resource": "*"}]});
    w.stack
        .kms_client(&b1.credentials)
        .unwrap()
        .put_key_policy(b1.key.as_str(), &policy.to_string())
        .unwrap();
    let (ok, err) = seal_cmd(&manifest, &bids, &[]);
    assert!(ok, "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("does not let you Decrypt"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("AccessDenied"), "{line}");
    assert!(!err.contains("WARNING"), "a bidctl-made file: {err}");
}

/// Configuration and command-line errors of the parent: JSON lines under `--log-format json`
/// (asked for by flag or by the config file), one sentence each naming the file, line or field.
#[test]
fn parent_configuration_errors_follow_the_log_format() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "auction_id = \"a\"\nregion = \"us-east-1\"\nwindw = 4\n",
    )
    .unwrap();
    let parent = |args: &[&str]| {
        let mut all = vec!["__parent"];
        all.extend_from_slice(args);
        Command::new(exe()).args(&all).env_clear().output().unwrap()
    };
    let b = bad.to_str().unwrap();
    let o = parent(&["--config", b, "--log-format", "json"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let line: serde_json::Value = serde_json::from_str(err.trim()).unwrap();
    assert_eq!(line["level"], "error");
    let msg = line["msg"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "configuration error: config file {b}, line 3: unknown field `windw`"
        )),
        "{msg}"
    );
    // Human: the same sentence on one line.
    let o = parent(&["--config", b]);
    let (_, err) = text(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("config file {b}, line 3: unknown field `windw`")),
        "{err}"
    );

    // The format from the file, for errors found after reading it.
    let json_file = dir.path().join("json.toml");
    std::fs::write(&json_file, "log_format = \"json\"\nwindow = 0\n").unwrap();
    let o = parent(&["--config", json_file.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for l in err.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert!(
            v["msg"]
                .as_str()
                .unwrap()
                .starts_with("configuration error: "),
            "{l}"
        );
    }
    assert!(err.contains("window: 0 is outside 1..=4096"), "{err}");

    // An unknown flag under --log-format json.
    let o = parent(&["--log-format", "json", "--bogus"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let v: serde_json::Value = serde_json::from_str(err.trim()).unwrap();
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .contains("unexpected argument '--bogus'"),
        "{err}"
    );
}
