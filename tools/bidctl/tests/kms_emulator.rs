//! The KMS emulator against clients: operations, persistence, ciphertext and signature errors,
//! key policies with Nitro attestation conditions, Recipient answers opened by core and by
//! OpenSSL, the verification cache, injected faults, hostile input and the command line.

#[path = "../../test-support/common/mod.rs"]
mod common;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use bidding_core::attestation::{VerifyAt, VerifyOptions};
use common::*;
use enclave_init::nsm::{Nsm, NsmRequest, NsmResponse};
use enclave_init::soft_nsm::{SoftNsm, SoftNsmOptions};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime};

const PCR0: [u8; 48] = [0x0a; 48];

/// The enclave's recipient key, made once: RSA-2048 generation is slow.
static RSA: LazyLock<(PrivateDecryptingKey, Vec<u8>)> = LazyLock::new(|| {
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let spki = key.public_key().as_der().unwrap().as_ref().to_vec();
    (key, spki)
});

fn attest(nsm: &SoftNsm, public_key: &[u8]) -> Vec<u8> {
    match nsm.process(NsmRequest::Attestation {
        user_data: None,
        nonce: None,
        public_key: Some(public_key.to_vec()),
    }) {
        NsmResponse::Attestation { document } => document,
        other => panic!("{other:?}"),
    }
}

fn open_envelope(envelope: &[u8]) -> Vec<u8> {
    let (key, spki) = &*RSA;
    let rid = bidding_core::cms::recipient_key_id(spki);
    bidding_core::cms::open(envelope, key, &rid)
        .unwrap()
        .to_vec()
}

fn recipient(doc: &[u8]) -> serde_json::Value {
    json!({"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": b64(doc)})
}

/// A policy in the proof of concept's form: alice administers, the parent role may Decrypt
/// only with the enclave's attestation meeting `condition` (`key` → hex value).
fn enclave_policy(conditions: &[(&str, String)]) -> String {
    let cond: serde_json::Map<String, serde_json::Value> = conditions
        .iter()
        .map(|(k, v)| (format!("kms:RecipientAttestation:{k}"), json!(v)))
        .collect();
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Enable IAM User Permissions", "Effect": "Allow", "Principal": {"AWS": ALICE_ARN}, "Action": "kms:*", "Resource": "*"},
            {"Sid": "Enable enclave data processing", "Effect": "Allow", "Principal": {"AWS": PARENT_ROLE}, "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"StringEqualsIgnoreCase": cond}}
        ]
    })
    .to_string()
}

fn encrypt(c: &Client, key: &str, plaintext: &[u8], ctx: Option<serde_json::Value>) -> Vec<u8> {
    let mut body = json!({"KeyId": key, "Plaintext": b64(plaintext)});
    if let Some(ctx) = ctx {
        body["EncryptionContext"] = ctx;
    }
    let v = c.call("Encrypt", &body).ok();
    let arn = v["KeyId"].as_str().unwrap();
    assert!(
        arn.starts_with("arn:aws:kms:") && arn.ends_with(key.rsplit('/').next().unwrap()),
        "{arn}"
    );
    assert_eq!(v["EncryptionAlgorithm"], "SYMMETRIC_DEFAULT");
    unb64(&v["CiphertextBlob"])
}

fn soft_nsm_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn keys_encrypt_decrypt_and_persist_across_restart() {
    let mut emu = Emu::start(None);
    let c = emu.client(alice());
    let v = c.call("CreateKey", &json!({"Description": "buyer 1"})).ok();
    let md = &v["KeyMetadata"];
    let arn = md["Arn"].as_str().unwrap().to_owned();
    let id = md["KeyId"].as_str().unwrap();
    assert_eq!(arn, format!("arn:aws:kms:us-east-1:111122223333:key/{id}"));
    assert_eq!(
        (md["KeyState"].as_str(), md["Enabled"].as_bool()),
        (Some("Enabled"), Some(true))
    );
    assert_eq!(md["KeySpec"], "SYMMETRIC_DEFAULT");

    let ctx = json!({"auction": "a1", "lot": "7", "buyer": "Buyer1"});
    let blob = encrypt(&c, &arn, b"100000", Some(ctx.clone()));
    // By key id too, and Decrypt needs no KeyId: the blob names its key.
    let blob2 = encrypt(&c, id, b"250000.50", None);
    let d = c
        .call(
            "Decrypt",
            &json!({"CiphertextBlob": b64(&blob), "EncryptionContext": ctx}),
        )
        .ok();
    assert_eq!(
        (unb64(&d["Plaintext"]), d["KeyId"].as_str()),
        (b"100000".to_vec(), Some(arn.as_str()))
    );
    assert!(d.get("CiphertextForRecipient").is_none());

    let described = c.call("DescribeKey", &json!({"KeyId": id})).ok();
    assert_eq!(described["KeyMetadata"]["Arn"], arn);
    let listed = c.call("ListKeys", &json!({})).ok();
    assert_eq!(listed["Keys"][0]["KeyArn"], arn);

    emu.restart();
    let c = emu.client(alice());
    let d = c
        .call(
            "Decrypt",
            &json!({"CiphertextBlob": b64(&blob2), "KeyId": arn}),
        )
        .ok();
    assert_eq!(unb64(&d["Plaintext"]), b"250000.50");
    let d = c
        .call(
            "Decrypt",
            &json!({"CiphertextBlob": b64(&blob), "EncryptionContext": ctx}),
        )
        .ok();
    assert_eq!(unb64(&d["Plaintext"]), b"100000");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(emu.dir.path().join("keys.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn ciphertext_errors_are_kms_errors() {
    let emu = Emu::start(None);
    let c = emu.client(alice());
    let k1 = create_key(&c, None);
    let k2 = create_key(&c, None);
    let ctx = json!({"auction": "a1", "lot": "7"});
    let blob = encrypt(&c, &k1, b"100000", Some(ctx.clone()));
    let dec = |body: serde_json::Value| c.call("Decrypt", &body);

    // Tampered anywhere, a wrong or missing context: InvalidCiphertextException.
    for i in [0, 1, 20, 30, blob.len() - 1] {
        let mut b = blob.clone();
        b[i] ^= 0x40;
        dec(json!({"CiphertextBlob": b64(&b), "EncryptionContext": ctx}))
            .err(400, "InvalidCiphertextException");
    }
    dec(json!({"CiphertextBlob": b64(&blob), "EncryptionContext": {"auction": "a1", "lot": "8"}}))
        .err(400, "InvalidCiphertextException");
    dec(json!({"CiphertextBlob": b64(&blob)})).err(400, "InvalidCiphertextException");
    dec(json!({"CiphertextBlob": b64(b"not a blob")})).err(400, "InvalidCiphertextException");
    // Another key's id: IncorrectKeyException, with KMS's wording.
    let a = dec(json!({"CiphertextBlob": b64(&blob), "EncryptionContext": ctx, "KeyId": k2}));
    a.err(400, "IncorrectKeyException");
    assert!(
        a.message().contains("does not identify a CMK"),
        "{}",
        a.message()
    );
    // Keys that are not there, or are named in ways the emulator does not know.
    let missing = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000000";
    dec(json!({"CiphertextBlob": b64(&blob), "KeyId": missing})).err(400, "NotFoundException");
    dec(json!({"CiphertextBlob": b64(&blob), "KeyId": k1.replace("111122223333", "444455556666")}))
        .err(400, "NotFoundException");
    dec(json!({"CiphertextBlob": b64(&blob), "KeyId": "alias/bids"})).err(400, "NotFoundException");
    c.call(
        "Encrypt",
        &json!({"KeyId": "not-a-key", "Plaintext": b64(b"1")}),
    )
    .err(400, "NotFoundException");
    // Request constraints.
    dec(json!({"CiphertextBlob": ""})).err(400, "ValidationException");
    c.call("Encrypt", &json!({"KeyId": k1, "Plaintext": ""}))
        .err(400, "ValidationException");
    c.call(
        "Encrypt",
        &json!({"KeyId": k1, "Plaintext": b64(&[1; 4097])}),
    )
    .err(400, "ValidationException");
    c.call(
        "Encrypt",
        &json!({"KeyId": k1, "Plaintext": b64(b"1"), "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}),
    )
    .err(400, "InvalidKeyUsageException");
    c.call("GenerateDataKey", &json!({"KeyId": k1}))
        .err(400, "ValidationException");
    c.call(
        "GenerateDataKey",
        &json!({"KeyId": k1, "KeySpec": "AES_256", "NumberOfBytes": 32}),
    )
    .err(400, "ValidationException");
    let a = c.call("Encrypt", &json!({"Plaintext": b64(b"1")}));
    a.err(400, "ValidationException");
    assert!(a.message().contains("'keyId'"), "{}", a.message());
    c.call("Encrypt", &json!({"KeyId": 5, "Plaintext": b64(b"1")}))
        .err(400, "SerializationException");
    c.call("Encrypt", &json!({"KeyId": k1, "Plaintext": "***"}))
        .err(400, "SerializationException");
    c.call_at("Encrypt", b"{not json", SystemTime::now())
        .err(400, "SerializationException");
    c.call("CreateKey", &json!({"KeySpec": "RSA_2048"}))
        .err(400, "UnsupportedOperationException");

    // A disabled key refuses use with DisabledException, and can be enabled again.
    assert_eq!(
        c.call("DisableKey", &json!({"KeyId": k1})).ok(),
        serde_json::Value::Null
    );
    dec(json!({"CiphertextBlob": b64(&blob), "EncryptionContext": ctx}))
        .err(400, "DisabledException");
    assert_eq!(
        c.call("DescribeKey", &json!({"KeyId": k1})).ok()["KeyMetadata"]["KeyState"],
        "Disabled"
    );
    c.call("EnableKey", &json!({"KeyId": k1})).ok();
    dec(json!({"CiphertextBlob": b64(&blob), "EncryptionContext": ctx})).ok();
}

#[test]
fn signatures_are_checked_like_aws() {
    let emu = Emu::start_with(None, |_| {});
    // Temporary credentials that have expired.
    let mut expired = principal(
        "ASIAEXPIREDEXPIRED00",
        "expired-secret",
        Some("tok"),
        "arn:aws:iam::111122223333:user/old",
    );
    expired.expiration = Some(1_000_000_000);
    bidding_standins::kms_emulator::state::add_principal(emu.dir.path(), expired).unwrap();

    let ok = emu.client(alice());
    let key = create_key(&ok, None);
    let body = json!({"KeyId": key, "Plaintext": b64(b"1")});
    ok.call("Encrypt", &body).ok();
    // Session credentials work with their token.
    emu.client(parent()).call("Encrypt", &body).ok();

    let a = emu
        .client(creds(ALICE, "wrong secret", None))
        .call("Encrypt", &body);
    a.err(400, "InvalidSignatureException");
    assert!(
        a.message()
            .starts_with("The request signature we calculated does not match")
    );
    // Namespaced as the AWS front end sends it.
    assert_eq!(
        a.body["__type"],
        "com.amazon.coral.service#InvalidSignatureException"
    );
    emu.client(creds("AKIAUNKNOWNUNKNOWN00", "x", None))
        .call("Encrypt", &body)
        .err(400, "UnrecognizedClientException");
    // Temporary credentials without (or with a wrong) session token.
    emu.client(creds(PARENT, PARENT_SECRET, None))
        .call("Encrypt", &body)
        .err(400, "UnrecognizedClientException");
    emu.client(creds(PARENT, PARENT_SECRET, Some("other")))
        .call("Encrypt", &body)
        .err(400, "UnrecognizedClientException");
    emu.client(creds("ASIAEXPIREDEXPIRED00", "expired-secret", Some("tok")))
        .call("Encrypt", &body)
        .err(400, "ExpiredTokenException");

    let text = body.to_string();
    let skew = Duration::from_secs(301);
    let a = ok.call_at("Encrypt", text.as_bytes(), SystemTime::now() - skew);
    a.err(400, "InvalidSignatureException");
    assert!(
        a.message().starts_with("Signature expired"),
        "{}",
        a.message()
    );
    let a = ok.call_at("Encrypt", text.as_bytes(), SystemTime::now() + skew);
    assert!(
        a.message().starts_with("Signature not yet current"),
        "{}",
        a.message()
    );
    ok.call_at(
        "Encrypt",
        text.as_bytes(),
        SystemTime::now() - Duration::from_secs(240),
    )
    .ok();

    // Headers missing or altered after signing.
    let headers = ok.signed_headers("TrentService.Encrypt", text.as_bytes(), SystemTime::now());
    let without = |name: &str| {
        headers
            .iter()
            .filter(|(k, _)| k != name)
            .cloned()
            .collect::<Vec<_>>()
    };
    ok.send(without("authorization"), text.clone().into_bytes())
        .err(400, "MissingAuthenticationTokenException");
    ok.send(without("x-amz-date"), text.clone().into_bytes())
        .err(400, "IncompleteSignatureException");
    let mut other_target = headers.clone();
    for (k, v) in &mut other_target {
        if k == "x-amz-target" {
            *v = "TrentService.Decrypt".into();
        }
    }
    ok.send(other_target, text.clone().into_bytes())
        .err(400, "InvalidSignatureException");
    ok.send(headers.clone(), br#"{"KeyId":"x"}"#.to_vec())
        .err(400, "InvalidSignatureException");
    // Signed for another region.
    let mut west = alice();
    west.region = bidding_core::names::Region::new("us-west-2").unwrap();
    let mut w = Client::new(emu.running(), west);
    w.sni = bidding_core::kms::endpoint_host("us-east-1");
    w.call("Encrypt", &body)
        .err(400, "InvalidSignatureException");

    // Correctly signed, but not a KMS operation or not its content type.
    ok.call("Frobnicate", &json!({}))
        .err(400, "UnknownOperationException");
    let mut ct = ok.signed_headers("TrentService.Encrypt", text.as_bytes(), SystemTime::now());
    for (k, v) in &mut ct {
        if k == "content-type" {
            *v = "application/json".into();
        }
    }
    // The content type is signed here, so the signature still verifies and the type is judged.
    let mut signed_ct = ct.clone();
    signed_ct.retain(|(k, _)| k != "authorization" && k != "x-amz-date");
    let host = bidding_core::kms::endpoint_host("us-east-1");
    let req = bidding_core::sigv4::Request {
        method: "POST",
        url: &format!("https://{host}/"),
        headers: &[
            ("content-type", "application/json"),
            ("x-amz-target", "TrentService.Encrypt"),
        ],
        body: text.as_bytes(),
    };
    let mut h: Vec<(String, String)> = vec![
        ("content-type".into(), "application/json".into()),
        ("x-amz-target".into(), "TrentService.Encrypt".into()),
        ("host".into(), host.clone()),
    ];
    h.extend(
        bidding_core::sigv4::sign(
            &req,
            "kms",
            "us-east-1",
            &alice(),
            bidding_core::sigv4::Payload::Default,
            SystemTime::now(),
        )
        .unwrap(),
    );
    ok.send(h, text.into_bytes())
        .err(400, "SerializationException");
}

#[test]
fn software_nsm_documents_verify_against_the_dev_root_only() {
    let nsm_dir = soft_nsm_dir();
    let nsm = SoftNsm::open(nsm_dir.path()).unwrap();
    let doc = attest(&nsm, &RSA.1);
    let root = enclave_init::soft_nsm::dev_root_der(nsm_dir.path()).unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let v = bidding_core::attestation::verify(
        &doc,
        &VerifyOptions {
            root_der: &root,
            at: VerifyAt::UnixMillis(now),
        },
    )
    .unwrap();
    assert_eq!(v.cabundle.len(), 4);
    assert_eq!(v.public_key(), Some(RSA.1.as_slice()));
    // PCR0 measures this very test binary.
    let exe = std::fs::read("/proc/self/exe").unwrap();
    assert_eq!(
        v.pcr(0),
        Some(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, &exe).as_ref())
    );
    assert!(matches!(
        bidding_core::attestation::verify(&doc, &VerifyOptions::aws(VerifyAt::UnixMillis(now))),
        Err(bidding_core::attestation::AttestationError::RootMismatch)
    ));

    // And so does the emulator: with AWS's root a dev document is no attestation at all.
    let emu = Emu::start(None);
    let c = emu.client(alice());
    let key = create_key(&c, None);
    let blob = encrypt(&c, &key, b"1", None);
    let a = c.call(
        "Decrypt",
        &json!({"CiphertextBlob": b64(&blob), "Recipient": recipient(&doc)}),
    );
    a.err(400, "ValidationException");
    assert!(
        a.message().contains("not the trusted root"),
        "{}",
        a.message()
    );
}

#[test]
fn recipient_flow_end_to_end_with_policy_on_pcr0() {
    let nsm_dir = soft_nsm_dir();
    let root = enclave_init::soft_nsm::dev_root_der(nsm_dir.path()).unwrap();
    let emu = Emu::start(Some(root));
    let admin = emu.client(alice());
    let key = create_key(
        &admin,
        Some(&enclave_policy(&[("ImageSha384", hex::encode(PCR0))])),
    );
    let ctx = json!({"auction": "a1", "lot": "7", "buyer": "Buyer1"});
    let blob = encrypt(&admin, &key, b"100000", Some(ctx.clone()));
    let parent_client = emu.client(parent());

    let good = SoftNsm::open_with_pcr0(nsm_dir.path(), PCR0).unwrap();
    let doc = attest(&good, &RSA.1);
    let body = json!({"CiphertextBlob": b64(&blob), "KeyId": key, "EncryptionContext": ctx, "Recipient": recipient(&doc)});
    let before = emu.running().attestation_verifications();
    let v = parent_client.call("Decrypt", &body).ok();
    assert!(v.get("Plaintext").is_none(), "{v:?}");
    assert_eq!(v["KeyId"], key);
    let envelope = unb64(&v["CiphertextForRecipient"]);
    assert_eq!(open_envelope(&envelope), b"100000");
    // KMS's shape: BER with indefinite lengths, EnvelopedData v2, rid = SHA-256 of the SPKI.
    assert_eq!(&envelope[..2], &[0x30, 0x80]);
    let parsed = bidding_core::cms::parse(&envelope).unwrap();
    assert_eq!(parsed.rid, bidding_core::cms::recipient_key_id(&RSA.1));
    openssl_opens(&envelope, b"100000");

    // The same document again costs no verification.
    for _ in 0..5 {
        parent_client.call("Decrypt", &body).ok();
    }
    assert_eq!(emu.running().attestation_verifications(), before + 1);

    // Another image: AccessDeniedException in AWS's words.
    let other = SoftNsm::open_with_pcr0(nsm_dir.path(), [0x0b; 48]).unwrap();
    let bad = json!({"CiphertextBlob": b64(&blob), "EncryptionContext": ctx, "Recipient": recipient(&attest(&other, &RSA.1))});
    let a = parent_client.call("Decrypt", &bad);
    a.err(400, "AccessDeniedException");
    assert_eq!(
        a.message(),
        format!(
            "User: {PARENT_ARN} is not authorized to perform: kms:Decrypt on resource: {key} because no resource-based policy allows the kms:Decrypt action"
        )
    );
    // No Recipient: the parent alone cannot read a bid.
    parent_client
        .call(
            "Decrypt",
            &json!({"CiphertextBlob": b64(&blob), "EncryptionContext": ctx}),
        )
        .err(400, "AccessDeniedException");
    // Nor may another principal of the account, attested or not.
    emu.client(bob())
        .call("Decrypt", &body)
        .err(400, "AccessDeniedException");

    // Freshness: four minutes old is fine, six is stale.
    let aged = |mins: u64| {
        let n = SoftNsm::open_with(
            nsm_dir.path(),
            SoftNsmOptions {
                pcrs: BTreeMap::from([(0, PCR0)]),
                clock_behind: Duration::from_secs(mins * 60),
                ..SoftNsmOptions::default()
            },
        )
        .unwrap();
        json!({"CiphertextBlob": b64(&blob), "EncryptionContext": ctx, "Recipient": recipient(&attest(&n, &RSA.1))})
    };
    parent_client.call("Decrypt", &aged(4)).ok();
    let a = parent_client.call("Decrypt", &aged(6));
    a.err(400, "ValidationException");
    assert!(a.message().contains("stale"), "{}", a.message());
    // A document from another dev root, a mangled one, a missing key, a wrong algorithm.
    let stranger_dir = soft_nsm_dir();
    let stranger = SoftNsm::open_with_pcr0(stranger_dir.path(), PCR0).unwrap();
    let mut b = body.clone();
    b["Recipient"] = recipient(&attest(&stranger, &RSA.1));
    parent_client
        .call("Decrypt", &b)
        .err(400, "ValidationException");
    let mut mangled = doc.clone();
    let last = mangled.len() - 1;
    mangled[last] ^= 1;
    b["Recipient"] = recipient(&mangled);
    parent_client
        .call("Decrypt", &b)
        .err(400, "ValidationException");
    b["Recipient"] = recipient(&match good.process(NsmRequest::Attestation {
        user_data: None,
        nonce: None,
        public_key: None,
    }) {
        NsmResponse::Attestation { document } => document,
        other => panic!("{other:?}"),
    });
    parent_client
        .call("Decrypt", &b)
        .err(400, "ValidationException");
    b["Recipient"] =
        json!({"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_1", "AttestationDocument": b64(&doc)});
    parent_client
        .call("Decrypt", &b)
        .err(400, "ValidationException");
    b["Recipient"] = recipient(&attest(&good, b"not an RSA key"));
    parent_client
        .call("Decrypt", &b)
        .err(400, "ValidationException");

    // GenerateDataKey with a Recipient: the data key only in the envelope.
    let gen_policy = enclave_policy(&[("PCR0", hex::encode(PCR0))]).replace(
        "\"kms:Decrypt\"",
        "[\"kms:Decrypt\",\"kms:GenerateDataKey\"]",
    );
    admin
        .call(
            "PutKeyPolicy",
            &json!({"KeyId": key, "PolicyName": "default", "Policy": gen_policy}),
        )
        .ok();
    let v = parent_client
        .call(
            "GenerateDataKey",
            &json!({"KeyId": key, "KeySpec": "AES_256", "Recipient": recipient(&doc)}),
        )
        .ok();
    assert!(v.get("Plaintext").is_none());
    let data_key = open_envelope(&unb64(&v["CiphertextForRecipient"]));
    assert_eq!(data_key.len(), 32);
    let d = admin
        .call("Decrypt", &json!({"CiphertextBlob": v["CiphertextBlob"]}))
        .ok();
    assert_eq!(unb64(&d["Plaintext"]), data_key);
    let v = admin
        .call(
            "GenerateDataKey",
            &json!({"KeyId": key, "NumberOfBytes": 7}),
        )
        .ok();
    assert_eq!(unb64(&v["Plaintext"]).len(), 7);
}

/// `openssl cms -decrypt` opens the emulator's envelope with the recipient's PEM key.
fn openssl_opens(envelope: &[u8], want: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = RSA.0.as_der().unwrap();
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64(pkcs8.as_ref()).as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let key = dir.path().join("key.pem");
    std::fs::write(&key, pem).unwrap();
    let input = dir.path().join("envelope.der");
    std::fs::write(&input, envelope).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["cms", "-decrypt", "-inform", "DER", "-binary", "-in"])
        .arg(&input)
        .arg("-inkey")
        .arg(&key)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, want);
}

#[test]
fn policy_conditions_on_each_pcr() {
    let nsm_dir = soft_nsm_dir();
    let root = enclave_init::soft_nsm::dev_root_der(nsm_dir.path()).unwrap();
    let emu = Emu::start(Some(root));
    let admin = emu.client(alice());
    let key = create_key(&admin, None);
    let blob = encrypt(&admin, &key, b"42", None);
    let pcr8 = [0x88; 48];
    let nsm = SoftNsm::open_with(
        nsm_dir.path(),
        SoftNsmOptions {
            pcrs: BTreeMap::from([(0, PCR0), (8, pcr8)]),
            ..Default::default()
        },
    )
    .unwrap();
    let doc = attest(&nsm, &RSA.1);
    let body = json!({"CiphertextBlob": b64(&blob), "Recipient": recipient(&doc)});
    let parent_client = emu.client(parent());
    for (name, index) in [
        ("ImageSha384", 0u8),
        ("PCR0", 0),
        ("PCR1", 1),
        ("PCR2", 2),
        ("PCR8", 8),
    ] {
        let actual = hex::encode(nsm.pcr(index).unwrap());
        // Set through the operator's side door, which a running emulator picks up at once.
        bidding_standins::kms_emulator::set_policy(
            emu.dir.path(),
            &key,
            &enclave_policy(&[(name, actual.to_uppercase())]),
        )
        .unwrap();
        let v = parent_client.call("Decrypt", &body).ok();
        assert_eq!(
            open_envelope(&unb64(&v["CiphertextForRecipient"])),
            b"42",
            "{name}"
        );
        bidding_standins::kms_emulator::set_policy(
            emu.dir.path(),
            &key,
            &enclave_policy(&[(name, hex::encode([0xee; 48]))]),
        )
        .unwrap();
        parent_client
            .call("Decrypt", &body)
            .err(400, "AccessDeniedException");
    }
    // All conditions of a statement must hold.
    let both = enclave_policy(&[("PCR0", hex::encode(PCR0)), ("PCR8", hex::encode([0; 48]))]);
    bidding_standins::kms_emulator::set_policy(emu.dir.path(), &key, &both).unwrap();
    parent_client
        .call("Decrypt", &body)
        .err(400, "AccessDeniedException");

    // An explicit Deny wins over the Allow.
    let deny = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "111122223333"}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": PARENT_ROLE}, "Action": "kms:Decrypt", "Resource": "*"}
    ]});
    admin
        .call(
            "PutKeyPolicy",
            &json!({"KeyId": key, "Policy": deny.to_string()}),
        )
        .ok();
    let a = parent_client.call("Decrypt", &body);
    a.err(400, "AccessDeniedException");
    assert!(
        a.message()
            .ends_with("with an explicit deny in a resource-based policy"),
        "{}",
        a.message()
    );

    // Policies the emulator cannot enforce are refused, not half-applied.
    let like = enclave_policy(&[("ImageSha384", hex::encode(PCR0))])
        .replace("StringEqualsIgnoreCase", "NumericLessThan");
    admin
        .call("PutKeyPolicy", &json!({"KeyId": key, "Policy": like}))
        .err(400, "MalformedPolicyDocumentException");
    assert!(bidding_standins::kms_emulator::set_policy(emu.dir.path(), &key, &like).is_err());
    let ctx_key = deny.to_string().replace(
        "\"Deny\",",
        "\"Deny\",\"Condition\":{\"StringEquals\":{\"kms:CallerAccount\":\"7\"}},",
    );
    admin
        .call("PutKeyPolicy", &json!({"KeyId": key, "Policy": ctx_key}))
        .err(400, "MalformedPolicyDocumentException");
    // The lockout safety check: a policy that would lock alice out needs the bypass flag.
    let lockout = enclave_policy(&[("PCR0", hex::encode(PCR0))]).replace(ALICE_ARN, BOB_ARN);
    let a = admin.call("PutKeyPolicy", &json!({"KeyId": key, "Policy": lockout}));
    a.err(400, "MalformedPolicyDocumentException");
    assert!(
        a.message()
            .contains("will not allow you to update the key policy")
    );
    admin
        .call(
            "PutKeyPolicy",
            &json!({"KeyId": key, "Policy": lockout, "BypassPolicyLockoutSafetyCheck": true}),
        )
        .ok();
    admin
        .call("GetKeyPolicy", &json!({"KeyId": key}))
        .err(400, "AccessDeniedException");
    let got = emu
        .client(bob())
        .call(
            "GetKeyPolicy",
            &json!({"KeyId": key, "PolicyName": "default"}),
        )
        .ok();
    assert_eq!(got["Policy"], lockout);
}

fn plain_emulator(faults: &[&str], seed: u64) -> Emu {
    let faults = faults.iter().map(|f| f.parse().unwrap()).collect();
    Emu::start_with(None, |c| {
        c.plain_http = true;
        c.faults = faults;
        c.fault_seed = Some(seed);
        c.log = false;
    })
}

#[test]
fn throttling_and_500_faults_are_seeded() {
    let run = |seed| {
        let emu = plain_emulator(&["Encrypt:throttle=0.3", "Encrypt:error500=0.2"], seed);
        let c = emu.client(alice());
        let key = create_key(&c, None);
        (0..60)
            .map(|_| {
                let a = c.call("Encrypt", &json!({"KeyId": key, "Plaintext": b64(b"1")}));
                match (a.status, a.code()) {
                    (200, _) => 'o',
                    (400, "ThrottlingException") => {
                        assert_eq!(a.message(), "Rate exceeded");
                        't'
                    }
                    (500, "InternalFailure") => 'e',
                    other => panic!("{other:?} {:?}", a.body),
                }
            })
            .collect::<String>()
    };
    let a = run(42);
    assert_eq!(a, run(42));
    assert_ne!(a, run(7));
    let throttled = a.matches('t').count();
    assert!((8..=30).contains(&throttled), "{a}");
    assert!(a.contains('e') && a.contains('o'), "{a}");
}

#[test]
fn latency_is_added() {
    let emu = plain_emulator(&["Encrypt:latency=150ms"], 1);
    let c = emu.client(alice());
    let key = create_key(&c, None);
    let t = Instant::now();
    c.call("ListKeys", &json!({})).ok();
    let quick = t.elapsed();
    let t = Instant::now();
    c.call("Encrypt", &json!({"KeyId": key, "Plaintext": b64(b"1")}))
        .ok();
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    assert!(quick < Duration::from_millis(150));
}

#[test]
fn reset_cuts_the_response_mid_body() {
    let emu = plain_emulator(&["Encrypt:reset=1"], 1);
    let c = emu.client(alice());
    let key = create_key(&c, None);
    let body = json!({"KeyId": key, "Plaintext": b64(b"1")}).to_string();
    let headers = c.signed_headers("TrentService.Encrypt", body.as_bytes(), SystemTime::now());
    let mut s = std::net::TcpStream::connect(emu.running().addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = String::from("POST / HTTP/1.1\r\n");
    for (k, v) in &headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        match s.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break Some(e.kind()),
        }
    };
    assert_eq!(
        end,
        Some(std::io::ErrorKind::ConnectionReset),
        "got {:?}",
        String::from_utf8_lossy(&got)
    );
    let text = String::from_utf8_lossy(&got);
    let (head, partial) = text.split_once("\r\n\r\n").expect("the head arrives whole");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        !partial.is_empty() && partial.len() < length,
        "{} of {length} body bytes",
        partial.len()
    );

    // Over TLS the client sees the connection die too.
    let tls = Emu::start_with(None, |c| {
        c.faults = vec!["Encrypt:reset=1".parse().unwrap()];
        c.log = false;
    });
    let c = tls.client(alice());
    let key = create_key(&c, None);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.call("Encrypt", &json!({"KeyId": key, "Plaintext": b64(b"1")}))
    }));
    assert!(r.is_err(), "a reset response must not read as complete");
}

#[test]
fn hostile_requests_get_errors_and_the_server_keeps_serving() {
    let emu = plain_emulator(&[], 1);
    let c = emu.client(alice());
    let addr = emu.running().addr();
    let raw = |bytes: &[u8]| -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let get = raw(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    assert!(get.contains("UnknownOperationException"), "{get}");
    assert!(
        raw(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
            .contains("MissingAuthenticationTokenException")
    );
    assert!(raw(b"POST / HTTP/1.1\r\nhost: x\r\nauthorization: AWS4-HMAC-SHA256 garbage\r\ncontent-length: 0\r\n\r\n").contains("IncompleteSignatureException"));
    let big = format!(
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{}",
        70_000,
        "a".repeat(70_000)
    );
    assert!(raw(big.as_bytes()).contains(" 413 "));
    raw(b"\x16\x03\x01\x00\xff garbage that is not HTTP\r\n\r\n");
    raw(&[0xff; 3000]);
    let auth = "AWS4-HMAC-SHA256 Credential=AKIAALICEALICEALICE0/2026\u{e9}/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00";
    raw(format!("POST / HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\nx-amz-date: 99999999T999999Z\r\ncontent-length: 0\r\n\r\n").as_bytes());
    let key = create_key(&c, None);
    for body in [
        json!(null),
        json!([]),
        json!({"KeyId": null, "Plaintext": "AA=="}),
        json!({"KeyId": key, "Plaintext": "AA==", "EncryptionContext": {"a": 1}}),
        json!({"KeyId": "x".repeat(3000), "Plaintext": "AA=="}),
        json!({"KeyId": key, "Plaintext": "AA==", "EncryptionContext": []}),
    ] {
        let a = c.call("Encrypt", &body);
        assert_eq!(a.status, 400, "{body}: {:?}", a.body);
    }
    let blob = encrypt(&c, &key, b"still fine", None);
    let d = c.call("Decrypt", &json!({"CiphertextBlob": b64(&blob), "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": b64(&[0xa0; 100])}}));
    d.err(400, "ValidationException");
    assert_eq!(
        unb64(
            &c.call("Decrypt", &json!({"CiphertextBlob": b64(&blob)}))
                .ok()["Plaintext"]
        ),
        b"still fine"
    );
}

fn bidctl() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_bidctl"))
}

/// Starts `bidctl kms-emulator` as a user would and returns it with its endpoint.
fn start_cli(state: &Path, extra: &[&str]) -> (std::process::Child, String) {
    let mut child = bidctl()
        .args(["kms-emulator", "--listen", "127.0.0.1:0", "--state"])
        .arg(state)
        .args(extra)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split(" on ").nth(1)
                && line.contains("serving")
            {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    });
    let endpoint = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the emulator says where it serves");
    (child, endpoint)
}

#[test]
fn command_line_serves_and_edits_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, endpoint) = start_cli(dir.path(), &["--region", "eu-west-1"]);
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    // First start: a CA for clients and one generated principal.
    assert!(dir.path().join("ca.pem").exists());
    let generated = bidding_standins::kms_emulator::state::read_principals(dir.path()).unwrap();
    assert_eq!(generated.len(), 1);
    assert!(generated[0].access_key_id.starts_with("AKIA"));
    let out = bidctl()
        .args(["kms-emulator", "add-principal", "--state"])
        .arg(dir.path())
        .args(["--access-key-id", ALICE, "--arn", ALICE_ARN])
        .env("AWS_SECRET_ACCESS_KEY", ALICE_SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Talk to it over HTTPS with the CA it wrote, signed for its region.
    let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let running_like = RemoteEmu {
        port,
        dir: dir.path(),
    };
    let mut creds = alice();
    creds.region = bidding_core::names::Region::new("eu-west-1").unwrap();
    let c = running_like.client(creds);
    let v = c.call("CreateKey", &json!({})).ok();
    let arn = v["KeyMetadata"]["Arn"].as_str().unwrap().to_owned();
    assert!(
        arn.starts_with("arn:aws:kms:eu-west-1:111122223333:key/"),
        "{arn}"
    );

    // set-policy refuses what it cannot enforce, and applies what it can at once.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        enclave_policy(&[("ImageSha384", "ab".into())])
            .replace("StringEqualsIgnoreCase", "NumericLessThan"),
    )
    .unwrap();
    let out = bidctl()
        .args(["kms-emulator", "set-policy", "--state"])
        .arg(dir.path())
        .args(["--key-id", &arn, "--policy"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NumericLessThan"));
    let good = dir.path().join("good.json");
    let deny_alice = json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Principal": {"AWS": BOB_ARN}, "Action": "kms:*", "Resource": "*"}});
    std::fs::write(&good, deny_alice.to_string()).unwrap();
    let out = bidctl()
        .args(["kms-emulator", "set-policy", "--state"])
        .arg(dir.path())
        .args(["--key-id", &arn, "--policy"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.call("DescribeKey", &json!({"KeyId": arn}))
        .err(400, "AccessDeniedException");
    let out = bidctl()
        .args(["kms-emulator", "get-policy", "--state"])
        .arg(dir.path())
        .args(["--key-id", &arn])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(BOB_ARN));

    // One emulator per state directory.
    let out = bidctl()
        .args(["kms-emulator", "--listen", "127.0.0.1:0", "--state"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another KMS emulator"));
    child.kill().unwrap();
    let _ = child.wait();

    let help = bidctl().args(["kms-emulator", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("throttle=RATE") && help.contains("--fault-seed"),
        "{help}"
    );
}

/// A `Client` for an emulator in another process.
struct RemoteEmu<'a> {
    port: u16,
    dir: &'a Path,
}

impl RemoteEmu<'_> {
    fn client(&self, creds: bidding_core::credentials::Credentials) -> Client {
        Client::remote(
            ([127, 0, 0, 1], self.port).into(),
            &self.dir.join("ca.pem"),
            creds,
        )
    }
}

/// A document in the shape QEMU's `nitro-enclave` NSM writes (`[h'A10120', {}, payload,
/// h'00'*64]`: not signed), made `age` ago for `pcr0` and `public_key`.
fn qemu_document(pcr0: [u8; 48], public_key: Option<&[u8]>, age: Duration) -> Vec<u8> {
    let fields = bidding_core::attestation::DocumentFields {
        module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
        timestamp: (SystemTime::now() - age)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        pcrs: (0..16u8)
            .map(|i| (i, if i == 0 { pcr0.to_vec() } else { vec![0; 48] }))
            .collect(),
        certificate: vec![0; 64],
        cabundle: vec![vec![0; 64]],
        public_key: public_key.map(<[u8]>::to_vec),
        user_data: None,
        nonce: None,
    };
    // encode_document writes [h'A1013822', {}, payload, h'…'*96]; keep the payload item.
    let signed = bidding_core::attestation::encode_document(&fields, |_| {
        Ok::<_, std::convert::Infallible>([0x5a; 96])
    })
    .unwrap();
    let head = [0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0];
    assert_eq!(signed[..head.len()], head);
    let payload_item = &signed[head.len()..signed.len() - 2 - 96];
    let mut doc = vec![0x84, 0x43, 0xa1, 0x01, 0x20, 0xa0];
    doc.extend_from_slice(payload_item);
    doc.extend_from_slice(&[0x58, 0x40]);
    doc.extend_from_slice(&[0; 64]);
    assert_eq!(
        bidding_core::attestation::parse_qemu_unsigned(&doc).unwrap(),
        fields
    );
    doc
}

#[test]
fn qemu_unsigned_documents_only_with_the_option_that_names_qemu() {
    let doc = qemu_document(PCR0, Some(&RSA.1), Duration::ZERO);
    let ctx = json!({"auction": "a1", "lot": "7", "buyer": "Buyer1"});
    let policy = enclave_policy(&[("PCR0", hex::encode(PCR0))]);

    // Default: an unsigned document is no attestation at all.
    let emu = Emu::start(None);
    let admin = emu.client(alice());
    let key = create_key(&admin, Some(&policy));
    let blob = encrypt(&admin, &key, b"100000", Some(ctx.clone()));
    let body = |doc: &[u8]| json!({"CiphertextBlob": b64(&blob), "EncryptionContext": ctx, "Recipient": recipient(doc)});
    let a = emu.client(parent()).call("Decrypt", &body(&doc));
    a.err(400, "ValidationException");
    assert!(a.message().contains("not valid"), "{}", a.message());
    drop(emu);

    // With the option: decoded, and everything else still checked.
    let emu = Emu::start_with(None, |c| c.accept_qemu_unsigned_attestation = true);
    let admin = emu.client(alice());
    let key = create_key(&admin, Some(&policy));
    let blob = encrypt(&admin, &key, b"100000", Some(ctx.clone()));
    let body = |doc: &[u8]| json!({"CiphertextBlob": b64(&blob), "EncryptionContext": ctx, "Recipient": recipient(doc)});
    let parent_client = emu.client(parent());
    let v = parent_client.call("Decrypt", &body(&doc)).ok();
    assert!(v.get("Plaintext").is_none(), "{v:?}");
    assert_eq!(
        open_envelope(&unb64(&v["CiphertextForRecipient"])),
        b"100000"
    );
    // The policy's PCR0 condition.
    parent_client
        .call(
            "Decrypt",
            &body(&qemu_document([0x0b; 48], Some(&RSA.1), Duration::ZERO)),
        )
        .err(400, "AccessDeniedException");
    // Freshness.
    let a = parent_client.call(
        "Decrypt",
        &body(&qemu_document(PCR0, Some(&RSA.1), Duration::from_secs(360))),
    );
    a.err(400, "ValidationException");
    assert!(a.message().contains("stale"), "{}", a.message());
    // The key.
    parent_client
        .call("Decrypt", &body(&qemu_document(PCR0, None, Duration::ZERO)))
        .err(400, "ValidationException");
    // Not signed means exactly QEMU's envelope: a forged signature is still verified (and fails).
    let mut forged = doc.clone();
    let last = forged.len() - 1;
    forged[last] = 1;
    parent_client
        .call("Decrypt", &body(&forged))
        .err(400, "ValidationException");
    // And a software-NSM document still needs its own root, which this emulator does not trust.
    let nsm_dir = soft_nsm_dir();
    let soft = SoftNsm::open_with_pcr0(nsm_dir.path(), PCR0).unwrap();
    parent_client
        .call("Decrypt", &body(&attest(&soft, &RSA.1)))
        .err(400, "ValidationException");
}

/// `bidctl key-policy --document`'s OnlyTheAdministratorSeals, evaluated as AWS does: the
/// administrator still encrypts bids and seals; another principal that a statement lets
/// kms:Encrypt encrypts bids but cannot seal (Encrypt with a `manifest` context, whatever its
/// case); with the account root as administrator, the exception is the account, and a
/// principal of another account cannot seal. Across accounts an IAM policy must allow too.
#[test]
fn only_the_administrator_seals() {
    use bidding_client::key_policy::{Administrator, Measurements, RoleArn, document};
    let emu = Emu::start(None);
    let outsider_arn = "arn:aws:iam::444455556666:user/mallory";
    let outsider = creds(
        "AKIAMALLORYMALLORY00",
        "mallory/secret/mallory/secret/000000",
        None,
    );
    bidding_standins::kms_emulator::state::add_principal(
        emu.dir.path(),
        principal(
            "AKIAMALLORYMALLORY00",
            "mallory/secret/mallory/secret/000000",
            None,
            outsider_arn,
        ),
    )
    .unwrap();
    let pcr0 = hex::encode(PCR0);
    let role = RoleArn::new(PARENT_ROLE).unwrap();
    let pcrs = Measurements::new(&[(0, &pcr0)]).unwrap();
    let with_encrypt = |admin: &str, who: &str| {
        let mut p = document(&Administrator::new(admin).unwrap(), &role, &pcrs);
        p["Statement"].as_array_mut().unwrap().push(json!({
            "Sid": "AlsoEncrypts", "Effect": "Allow", "Principal": {"AWS": who},
            "Action": "kms:Encrypt", "Resource": "*"}));
        p.to_string()
    };
    let a = emu.client(alice());
    let key = a
        .call(
            "CreateKey",
            &json!({"Policy": with_encrypt(ALICE_ARN, BOB_ARN)}),
        )
        .ok()["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap()
        .to_owned();
    let bid = json!({"auction": "a1", "lot": "1", "buyer": "alice"});
    let seal = json!({"auction": "a1", "buyer": "alice", "manifest": "ab".repeat(32)});
    let enc = |c: &Client, ctx: &serde_json::Value| {
        c.call(
            "Encrypt",
            &json!({"KeyId": key, "Plaintext": b64(b"x"), "EncryptionContext": ctx}),
        )
    };
    enc(&a, &bid).ok();
    enc(&a, &seal).ok();
    let b = emu.client(bob());
    enc(&b, &bid).ok();
    let denied = enc(&b, &seal);
    denied.err(400, "AccessDeniedException");
    assert!(
        denied.message().contains("explicit deny"),
        "{}",
        denied.message()
    );
    // The context key is matched without regard to case, as KMS's condition keys are.
    enc(&b, &json!({"Manifest": "ab"})).err(400, "AccessDeniedException");

    // The account root administers: anyone of the account (IAM decides) seals; a principal of
    // another account that a statement lets kms:Encrypt does not.
    let root = "arn:aws:iam::111122223333:root";
    a.call(
        "PutKeyPolicy",
        &json!({"KeyId": key, "Policy": with_encrypt(root, outsider_arn)}),
    )
    .ok();
    enc(&b, &seal).ok();
    let m = emu.client(outsider);
    enc(&m, &bid).ok();
    let denied = enc(&m, &seal);
    denied.err(400, "AccessDeniedException");
    assert!(
        denied.message().contains("explicit deny"),
        "{}",
        denied.message()
    );
    // Across accounts the caller's own IAM policies must allow it too.
    bidding_standins::kms_emulator::state::write_identity_policies(
        emu.dir.path(),
        &[(
            outsider_arn.to_owned(),
            vec![
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Action": "kms:Decrypt", "Resource": "*"}]}),
            ],
        )]
        .into_iter()
        .collect(),
    )
    .unwrap();
    let denied = enc(&m, &bid);
    denied.err(400, "AccessDeniedException");
    assert!(
        denied.message().contains("no identity-based policy"),
        "{}",
        denied.message()
    );
}
