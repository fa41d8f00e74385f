//! Attestation documents: the real AWS fixtures (shared/fixtures/attestation, see its README),
//! and documents built here with a throwaway P-384 chain.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use bidding_core::attestation::{
    AWS_NITRO_ROOT_G1_DER, AttestationError, CertPosition, DocumentFields, EncodeError,
    MAX_DOCUMENT_LEN, PROTECTED_ES384, VerifyAt, VerifyOptions, encode_document, parse,
    sig_structure, verify,
};
use ciborium::value::Value;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};
use x509_cert::Certificate;
use x509_cert::der::Decode;

// ---------------------------------------------------------------------------------------------
// Fixtures

const VALID: &str = "evervault-valid-2022-10-13.cbor";
const DEBUG: &str = "evervault-debug-2022-10-12.cbor";
const ROOT_PEM: &str = "aws-nitro-root-g1.pem";
const VALID_TS: u64 = 1_665_651_482_136;
const DEBUG_TS: u64 = 1_665_582_606_081;

fn fixture_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/attestation"
    ))
}

/// The named fixture files, or `None` (after saying so once) when the fixtures are absent.
fn fixtures<const N: usize>(test: &str, names: [&str; N]) -> Option<[Vec<u8>; N]> {
    let dir = fixture_dir();
    let mut out = Vec::with_capacity(N);
    for name in names {
        match std::fs::read(dir.join(name)) {
            Ok(b) => out.push(b),
            Err(e) => {
                println!(
                    "{test}: skipping, fixture {} unavailable: {e}",
                    dir.join(name).display()
                );
                return None;
            }
        }
    }
    out.try_into().ok()
}

fn now_ms() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(d.as_millis()).expect("ms fit u64")
}

fn aws_at_doc() -> VerifyOptions<'static> {
    VerifyOptions::aws(VerifyAt::Document)
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b))
}

/// Offset of `needle` in `hay`, which must contain it once.
fn offset_of(hay: &[u8], needle: &[u8]) -> usize {
    let hits: Vec<usize> = hay
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "needle found {} times", hits.len());
    hits[0]
}

#[test]
fn builtin_root_is_the_published_pem() {
    let Some([pem]) = fixtures("builtin_root_is_the_published_pem", [ROOT_PEM]) else {
        return;
    };
    assert_eq!(pem.len(), 777);
    assert_eq!(
        sha256_hex(&pem),
        "6eb9688305e4bbca67f44b59c29a0661ae930f09b5945b5d1d9ae01125c8d6c0"
    );
    let (label, der) = x509_cert::der::pem::decode_vec(&pem).expect("PEM");
    assert_eq!(label, "CERTIFICATE");
    assert_eq!(der, AWS_NITRO_ROOT_G1_DER);
}

#[test]
fn builtin_root_has_the_published_fingerprint_and_names() {
    assert_eq!(
        sha256_hex(&AWS_NITRO_ROOT_G1_DER),
        "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
    );
    let cert = Certificate::from_der(&AWS_NITRO_ROOT_G1_DER).expect("root parses");
    let tbs = &cert.tbs_certificate;
    assert_eq!(
        tbs.subject.to_string(),
        "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US"
    );
    assert_eq!(tbs.issuer, tbs.subject);
    assert_eq!(
        hex::encode(tbs.serial_number.as_bytes()),
        "00f93175681b90afe11d46ccb4e4e7f856"
    );
}

/// What the fixture README states about one document.
struct Expected {
    file: &'static str,
    len: usize,
    sha256: &'static str,
    payload_len: usize,
    module_id: &'static str,
    timestamp: u64,
    /// Non-zero PCRs; every other index 0..=15 is 48 zero bytes.
    pcrs: &'static [(u8, &'static str)],
    public_key: Option<&'static [u8]>,
    user_data: Option<&'static [u8]>,
    nonce_len_and_start: Option<(usize, &'static str)>,
    leaf_cn: &'static str,
    /// Leaf validity, Unix seconds.
    leaf_window: (u64, u64),
    cabundle_lens: [usize; 4],
    debug: bool,
}

const PCR3: &str = "4a9329d69c836267b18abbf9f4a38889124490453419e426818626348d21f989dc930b1562682a9082887454e53425aa";

const EXPECTED: [Expected; 2] = [
    Expected {
        file: VALID,
        len: 4654,
        sha256: "a72552688ab6de06b9039ebda2bd5ae9285860ec886f841da94351681dfb3eb6",
        payload_len: 4546,
        module_id: "i-020b6af9246d90e92-enc0183d09086c24190",
        timestamp: VALID_TS,
        pcrs: &[
            (
                0,
                "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b",
            ),
            (
                1,
                "bcdf05fefccaa8e55bf2c8d6dee9e79bbff31e34bf28a99aa19e6b29c37ee80b214a414b7607236edf26fcb78654e63f",
            ),
            (
                2,
                "d8f114da658de5481f8d9ec73907feb553560787522f705c92d7d96beed8e15e2aa611984e098c576832c292e8dc469a",
            ),
            (3, PCR3),
            (
                4,
                "1f442c86d494a88185642086d904ed89f62fb66ee9997d7b1a4f040faab3bba4244c768a584e5778195b3afc715637c6",
            ),
            (
                8,
                "8790eb3cce6c83d07e84b126dc61ca923333d6f66615c4a79157de48c5ab2418bdc60746ea7b7afbff03a1c6210201cb",
            ),
        ],
        public_key: None,
        user_data: None,
        nonce_len_and_start: Some((256, "cb3dc2eb76c0c1344adf10cc4868591e")),
        leaf_cn: "i-020b6af9246d90e92-enc0183d09086c24190.us-east-1.aws",
        // 2022-10-13 08:57:59 to 11:58:02
        leaf_window: (1_665_651_479, 1_665_662_282),
        cabundle_lens: [533, 706, 792, 644],
        debug: false,
    },
    Expected {
        file: DEBUG,
        len: 4426,
        sha256: "46591b92f9abefaace22a6d7ea4ca9c7007dfdbe788fbe8634b230ec2043a789",
        payload_len: 4318,
        module_id: "i-03ad7cdb817437eeb-enc0183cc7569b3f6e1",
        timestamp: DEBUG_TS,
        pcrs: &[
            (3, PCR3),
            (
                4,
                "615fa5b1a8838d392d8e54aacc3d9ac0db87d63cb826516c4cc94307c986fe465b29f3f54a55a2f121265528ae0aa6a7",
            ),
        ],
        public_key: Some(b"my super secret key"),
        user_data: Some(b"hello, world!"),
        nonce_len_and_start: None,
        leaf_cn: "i-03ad7cdb817437eeb-enc0183cc7569b3f6e1.us-east-1.aws",
        // 2022-10-12 13:49:51 to 16:49:54
        leaf_window: (1_665_582_591, 1_665_593_394),
        cabundle_lens: [533, 706, 792, 642],
        debug: true,
    },
];

#[test]
fn fixtures_verify_at_own_time_with_readme_values() {
    let Some(docs) = fixtures(
        "fixtures_verify_at_own_time_with_readme_values",
        [VALID, DEBUG],
    ) else {
        return;
    };
    for (bytes, want) in docs.iter().zip(&EXPECTED) {
        let file = want.file;
        assert_eq!(bytes.len(), want.len, "{file}");
        assert_eq!(sha256_hex(bytes), want.sha256, "{file}");
        assert_eq!(bytes[..6], [0x84, 0x44, 0xa1, 0x01, 0x38, 0x22], "{file}");

        let parsed = parse(bytes).expect(file);
        assert_eq!(parsed.payload().len(), want.payload_len, "{file}");
        let v = verify(bytes, &aws_at_doc()).expect(file);
        assert_eq!(v.verified_at_ms(), want.timestamp, "{file}");
        assert_eq!(v.fields(), parsed.fields(), "{file}");

        assert_eq!(v.module_id(), want.module_id, "{file}");
        assert_eq!(v.timestamp(), want.timestamp, "{file}");
        assert_eq!(v.pcrs.len(), 16, "{file}");
        for i in 0..16u8 {
            let expected = want
                .pcrs
                .iter()
                .find(|(j, _)| *j == i)
                .map_or_else(|| "00".repeat(48), |(_, h)| (*h).to_owned());
            assert_eq!(v.pcr(i).map(hex::encode), Some(expected), "{file} PCR{i}");
        }
        assert_eq!(v.pcr(16), None);
        assert_eq!(v.public_key(), want.public_key, "{file}");
        assert_eq!(v.user_data(), want.user_data, "{file}");
        match want.nonce_len_and_start {
            None => assert_eq!(v.nonce(), None, "{file}"),
            Some((len, start)) => {
                let nonce = v.nonce().expect("nonce");
                assert_eq!(nonce.len(), len, "{file}");
                assert_eq!(hex::encode(&nonce[..16]), start, "{file}");
            }
        }
        assert_eq!(v.debug_mode(), want.debug, "{file}");

        assert_eq!(v.certificate.len(), 639, "{file}");
        let leaf = Certificate::from_der(&v.certificate).expect("leaf");
        let subject = leaf.tbs_certificate.subject.to_string();
        assert!(
            subject.contains(&format!("CN={}", want.leaf_cn)),
            "{file}: {subject}"
        );
        let validity = &leaf.tbs_certificate.validity;
        assert_eq!(
            (
                validity.not_before.to_unix_duration().as_secs(),
                validity.not_after.to_unix_duration().as_secs()
            ),
            want.leaf_window,
            "{file}"
        );
        let lens: Vec<usize> = v.cabundle.iter().map(Vec::len).collect();
        assert_eq!(lens, want.cabundle_lens, "{file}");
        assert_eq!(v.cabundle[0], AWS_NITRO_ROOT_G1_DER, "{file}");
    }
}

#[test]
fn summary_json_is_exact() {
    let Some([valid, debug]) = fixtures("summary_json_is_exact", [VALID, DEBUG]) else {
        return;
    };
    let v = verify(&valid, &aws_at_doc()).expect("valid");
    let pcr = |i: u8| {
        EXPECTED[0]
            .pcrs
            .iter()
            .find(|(j, _)| *j == i)
            .map(|(_, h)| *h)
    };
    assert_eq!(
        v.summary_json(),
        serde_json::json!({
            "module_id": "i-020b6af9246d90e92-enc0183d09086c24190",
            "timestamp": VALID_TS,
            "digest": "SHA384",
            "pcrs": {
                "0": pcr(0), "1": pcr(1), "2": pcr(2), "3": pcr(3), "4": pcr(4), "8": pcr(8),
            },
            "public_key": null,
            "user_data": null,
            "nonce": hex::encode(v.nonce().expect("nonce")),
            "debug_mode": false,
        })
    );

    let d = verify(&debug, &aws_at_doc()).expect("debug");
    let zero = "00".repeat(48);
    assert_eq!(
        d.summary_json(),
        serde_json::json!({
            "module_id": "i-03ad7cdb817437eeb-enc0183cc7569b3f6e1",
            "timestamp": DEBUG_TS,
            "digest": "SHA384",
            "pcrs": {
                "0": zero, "1": zero, "2": zero, "3": PCR3, "4": EXPECTED[1].pcrs[1].1, "8": zero,
            },
            "public_key": hex::encode("my super secret key"),
            "user_data": hex::encode("hello, world!"),
            "nonce": null,
            "debug_mode": true,
        })
    );
}

#[test]
fn debug_mode_and_pcr0_matching() {
    let Some([valid, debug]) = fixtures("debug_mode_and_pcr0_matching", [VALID, DEBUG]) else {
        return;
    };
    let v = verify(&valid, &aws_at_doc()).expect("valid");
    let d = verify(&debug, &aws_at_doc()).expect("debug");
    assert!(!v.debug_mode());
    assert!(d.debug_mode());
    let pcr0 = hex::decode(EXPECTED[0].pcrs[0].1).expect("hex");
    assert!(v.pcr0_matches(&pcr0));
    assert!(!v.pcr0_matches(&pcr0[..47]));
    assert!(!d.pcr0_matches(&pcr0));
    // A debug enclave's zeros never match, not even an expectation of zeros.
    assert!(!d.pcr0_matches(&[0; 48]));
}

#[test]
fn fixtures_expired_now_and_not_yet_valid_early() {
    let Some([valid, debug]) = fixtures(
        "fixtures_expired_now_and_not_yet_valid_early",
        [VALID, DEBUG],
    ) else {
        return;
    };
    let now = now_ms();
    for doc in [&valid, &debug] {
        let err = verify(doc, &VerifyOptions::aws(VerifyAt::UnixMillis(now))).unwrap_err();
        // The root lasts until 2049; the first intermediate expired in October 2022.
        let AttestationError::Expired {
            cert: CertPosition::Bundle(1),
            not_after,
            at_ms,
        } = err
        else {
            panic!("expected cabundle[1] expired, got {err}");
        };
        assert_eq!(at_ms, now);
        assert!(not_after * 1000 < now);
        assert!(
            err.to_string()
                .contains("cabundle[1] expired at 2022-10-28T13:32:56Z"),
            "{err}"
        );
    }

    // One second before the valid document's leaf begins: 2022-10-13T08:57:58Z.
    let before = 1_665_651_478_999;
    let err = verify(&valid, &VerifyOptions::aws(VerifyAt::UnixMillis(before))).unwrap_err();
    assert!(
        matches!(
            err,
            AttestationError::NotYetValid {
                cert: CertPosition::Leaf,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "attestation certificate is not valid before 2022-10-13T08:57:59Z, checked at \
         2022-10-13T08:57:58.999Z"
    );
    // The leaf's last second, inclusive, still verifies; the next one does not.
    let last = EXPECTED[0].leaf_window.1 * 1000 + 999;
    verify(&valid, &VerifyOptions::aws(VerifyAt::UnixMillis(last))).expect("last second");
    let err = verify(&valid, &VerifyOptions::aws(VerifyAt::UnixMillis(last + 1))).unwrap_err();
    assert!(
        matches!(
            err,
            AttestationError::Expired {
                cert: CertPosition::Leaf,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn fixtures_fail_with_another_root() {
    let Some([valid, debug]) = fixtures("fixtures_fail_with_another_root", [VALID, DEBUG]) else {
        return;
    };
    let chain = TestChain::new();
    for doc in [&valid, &debug] {
        let opts = VerifyOptions {
            root_der: &chain.root,
            at: VerifyAt::Document,
        };
        assert_eq!(verify(doc, &opts), Err(AttestationError::RootMismatch));
    }
}

#[test]
fn tagged_fixture_verifies_and_other_tags_do_not() {
    let Some([valid]) = fixtures("tagged_fixture_verifies_and_other_tags_do_not", [VALID]) else {
        return;
    };
    let mut tagged = vec![0xd2];
    tagged.extend_from_slice(&valid);
    let v = verify(&tagged, &aws_at_doc()).expect("tag 18");
    assert_eq!(v.timestamp(), VALID_TS);

    tagged[0] = 0xd1; // tag 17, COSE_Mac0
    let err = verify(&tagged, &aws_at_doc()).unwrap_err();
    assert!(
        matches!(err, AttestationError::Cose { part: "tag", .. }),
        "{err}"
    );
}

#[test]
fn fixture_reencodes_byte_for_byte() {
    let Some([valid, debug]) = fixtures("fixture_reencodes_byte_for_byte", [VALID, DEBUG]) else {
        return;
    };
    for doc in [valid, debug] {
        let parsed = parse(&doc).expect("parse");
        let signature = *parsed.signature();
        let mut signed = None;
        let again = encode_document(parsed.fields(), |tbs| {
            signed = Some(tbs.to_vec());
            Ok::<_, Infallible>(signature)
        })
        .expect("encode");
        assert_eq!(again, doc);
        assert_eq!(
            signed,
            Some(sig_structure(&PROTECTED_ES384, parsed.payload()))
        );
    }
}

#[test]
fn trailing_bytes_and_oversize_are_refused() {
    let Some([valid]) = fixtures("trailing_bytes_and_oversize_are_refused", [VALID]) else {
        return;
    };
    let mut longer = valid.clone();
    longer.push(0);
    let err = parse(&longer).unwrap_err();
    assert!(
        matches!(
            err,
            AttestationError::Cose {
                part: "COSE_Sign1",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("has 1 byte after its end"),
        "{err}"
    );

    longer.resize(MAX_DOCUMENT_LEN + 1, 0);
    assert_eq!(
        parse(&longer).unwrap_err(),
        AttestationError::TooLarge {
            size: MAX_DOCUMENT_LEN + 1,
            limit: MAX_DOCUMENT_LEN
        }
    );
}

/// Every byte of the signature, payload and cabundle is covered: flipping any one must fail
/// verification, and never panic.
#[test]
fn flipped_bytes_fail_verification() {
    let Some([valid, debug]) = fixtures("flipped_bytes_fail_verification", [VALID, DEBUG]) else {
        return;
    };
    for doc in [valid, debug] {
        let parsed = parse(&doc).expect("parse");
        let sig_start = doc.len() - 96;
        let payload_start = offset_of(&doc, parsed.payload());
        let payload_end = payload_start + parsed.payload().len();
        let bundle: Vec<(usize, usize)> = parsed
            .fields()
            .cabundle
            .iter()
            .map(|c| (offset_of(&doc, c), c.len()))
            .collect();

        let mut positions: Vec<usize> = (sig_start..doc.len()).collect();
        // The payload contains the cabundle; step through it with a stride coprime to 8 so
        // that every byte offset within words is hit, and add every cabundle byte below.
        positions.extend((payload_start..payload_end).step_by(7));
        positions.push(payload_end - 1);
        for &(start, len) in &bundle {
            positions.extend(start..start + len);
        }
        // The envelope before the payload.
        positions.extend(0..payload_start);
        positions.sort_unstable();
        positions.dedup();

        for pos in positions {
            for mask in [0x01, 0x80] {
                let mut bad = doc.clone();
                bad[pos] ^= mask;
                assert!(
                    verify(&bad, &aws_at_doc()).is_err(),
                    "flip {mask:#04x} at {pos} verified"
                );
            }
        }
    }
}

#[test]
fn flips_fail_at_the_step_they_break() {
    let Some([valid]) = fixtures("flips_fail_at_the_step_they_break", [VALID]) else {
        return;
    };
    let parsed = parse(&valid).expect("parse");
    let flip = |pos: usize| {
        let mut bad = valid.clone();
        bad[pos] ^= 0x01;
        verify(&bad, &aws_at_doc()).unwrap_err()
    };
    // Last byte of the signature.
    assert_eq!(flip(valid.len() - 1), AttestationError::CoseSignature);
    // Inside the root certificate's bytes.
    let root = offset_of(&valid, &AWS_NITRO_ROOT_G1_DER);
    assert_eq!(flip(root + 100), AttestationError::RootMismatch);
    // Inside cabundle[2]'s signature value, near its end.
    let c2 = &parsed.fields().cabundle[2];
    let err = flip(offset_of(&valid, c2) + c2.len() - 3);
    assert_eq!(
        err,
        AttestationError::ChainSignature {
            cert: CertPosition::Bundle(2),
            issuer: CertPosition::Bundle(1)
        }
    );
    // Inside the nonce: only the COSE signature notices.
    let nonce = parsed.fields().nonce().expect("nonce");
    assert_eq!(
        flip(offset_of(&valid, nonce) + 10),
        AttestationError::CoseSignature
    );
}

// ---------------------------------------------------------------------------------------------
// Documents built here

/// A root → intermediate → leaf P-384 chain, valid 2020 to 2040, and the leaf's COSE signer.
struct TestChain {
    root: Vec<u8>,
    intermediate: Vec<u8>,
    leaf: Vec<u8>,
    leaf_key: EcdsaKeyPair,
}

const T_2030: u64 = 1_893_456_000_000;

fn ca_params(cn: &str, is_ca: IsCa) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::new()).expect("params");
    p.distinguished_name.push(DnType::OrganizationName, "Test");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = is_ca;
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2040, 1, 1);
    p
}

fn p384() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("keygen")
}

fn leaf_cert(issuer: &Issuer<'static, KeyPair>) -> (Vec<u8>, EcdsaKeyPair) {
    let key = p384();
    let mut p = ca_params("leaf", IsCa::ExplicitNoCa);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let der = p.signed_by(&key, issuer).expect("leaf").der().to_vec();
    let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &key.serialize_der())
        .expect("leaf key");
    (der, signer)
}

/// Signs `params` by `issuer` (or itself) and returns its DER and an issuer for the next one.
fn issue(
    params: CertificateParams,
    issuer: Option<&Issuer<'static, KeyPair>>,
) -> (Vec<u8>, Issuer<'static, KeyPair>) {
    let key = p384();
    let cert = match issuer {
        Some(i) => params.signed_by(&key, i),
        None => params.self_signed(&key),
    }
    .expect("certificate");
    (cert.der().to_vec(), Issuer::new(params, key))
}

impl TestChain {
    fn new() -> TestChain {
        let (root, root_issuer) = issue(
            ca_params("test root", IsCa::Ca(BasicConstraints::Unconstrained)),
            None,
        );
        let (intermediate, inter_issuer) = issue(
            ca_params(
                "test intermediate",
                IsCa::Ca(BasicConstraints::Constrained(0)),
            ),
            Some(&root_issuer),
        );
        let (leaf, leaf_key) = leaf_cert(&inter_issuer);
        TestChain {
            root,
            intermediate,
            leaf,
            leaf_key,
        }
    }

    fn fields(&self) -> DocumentFields {
        DocumentFields {
            module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
            timestamp: T_2030,
            pcrs: (0..16u8).map(|i| (i, vec![i; 48])).collect(),
            certificate: self.leaf.clone(),
            cabundle: vec![self.root.clone(), self.intermediate.clone()],
            public_key: Some(vec![0x30; 294]),
            user_data: Some(b"SBH1".to_vec()),
            nonce: None,
        }
    }

    fn sign(&self, fields: &DocumentFields) -> Vec<u8> {
        sign_with(&self.leaf_key, fields)
    }

    fn opts(&self, at: VerifyAt) -> VerifyOptions<'_> {
        VerifyOptions {
            root_der: &self.root,
            at,
        }
    }
}

fn sign_with(key: &EcdsaKeyPair, fields: &DocumentFields) -> Vec<u8> {
    encode_document(fields, |tbs| {
        let sig = key.sign(&SystemRandom::new(), tbs)?;
        <[u8; 96]>::try_from(sig.as_ref()).map_err(|_| aws_lc_rs::error::Unspecified)
    })
    .expect("encode")
}

static CHAIN: LazyLock<TestChain> = LazyLock::new(TestChain::new);
static BUILT: LazyLock<Vec<u8>> = LazyLock::new(|| CHAIN.sign(&CHAIN.fields()));

#[test]
fn built_document_round_trips_and_verifies_against_its_root_only() {
    let fields = CHAIN.fields();
    let doc = &*BUILT;
    assert_eq!(doc[..7], [0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0]);
    assert_eq!(parse(doc).expect("parse").into_fields(), fields);

    let v = verify(doc, &CHAIN.opts(VerifyAt::Document)).expect("verify at doc time");
    assert_eq!(v.into_fields(), fields);
    verify(doc, &CHAIN.opts(VerifyAt::UnixMillis(now_ms()))).expect("verify now");

    assert_eq!(
        verify(doc, &aws_at_doc()),
        Err(AttestationError::RootMismatch)
    );

    let mut tagged = vec![0xd2];
    tagged.extend_from_slice(doc);
    verify(&tagged, &CHAIN.opts(VerifyAt::Document)).expect("tagged");
}

#[test]
fn built_document_with_empty_optionals_and_all_pcr_sizes_round_trips() {
    let mut fields = CHAIN.fields();
    fields.public_key = None;
    fields.user_data = Some(Vec::new());
    fields.nonce = Some(vec![7; 512]);
    fields.pcrs = BTreeMap::from([(0, vec![1; 32]), (31, vec![2; 64]), (8, vec![3; 48])]);
    let doc = CHAIN.sign(&fields);
    let v = verify(&doc, &CHAIN.opts(VerifyAt::Document)).expect("verify");
    assert_eq!(*v.fields(), fields);
    assert_eq!(
        v.summary_json()["pcrs"],
        serde_json::json!({"0": "01".repeat(32), "8": "03".repeat(48)})
    );
    assert_eq!(v.summary_json()["user_data"], "");
}

#[test]
fn built_document_fails_at_each_step() {
    let opts = CHAIN.opts(VerifyAt::Document);

    // Signed by a key other than the leaf's.
    let other = TestChain::new();
    let doc = sign_with(&other.leaf_key, &CHAIN.fields());
    assert_eq!(verify(&doc, &opts), Err(AttestationError::CoseSignature));

    // The leaf from another chain: issuer names equal, signature not.
    let mut f = CHAIN.fields();
    f.certificate = other.leaf.clone();
    let doc = sign_with(&other.leaf_key, &f);
    assert_eq!(
        verify(&doc, &opts),
        Err(AttestationError::ChainSignature {
            cert: CertPosition::Leaf,
            issuer: CertPosition::Bundle(1)
        })
    );

    // The intermediate left out: the root did not issue the leaf.
    let mut f = CHAIN.fields();
    f.cabundle.truncate(1);
    assert_eq!(
        verify(&CHAIN.sign(&f), &opts),
        Err(AttestationError::IssuerMismatch {
            cert: CertPosition::Leaf,
            issuer: CertPosition::Bundle(0)
        })
    );

    // Outside the chain's 2020–2040 window.
    let mut f = CHAIN.fields();
    f.timestamp = 2_240_000_000_000; // 2040-12-25
    let err = verify(&CHAIN.sign(&f), &opts).unwrap_err();
    assert!(
        matches!(
            err,
            AttestationError::Expired {
                cert: CertPosition::Bundle(0),
                ..
            }
        ),
        "{err}"
    );
    let err = verify(
        &CHAIN.sign(&CHAIN.fields()),
        &CHAIN.opts(VerifyAt::UnixMillis(0)),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            AttestationError::NotYetValid {
                cert: CertPosition::Bundle(0),
                ..
            }
        ),
        "{err}"
    );

    // Garbage where a certificate should be.
    let mut f = CHAIN.fields();
    f.cabundle.push(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
    let err = verify(&CHAIN.sign(&f), &opts).unwrap_err();
    assert!(
        matches!(
            err,
            AttestationError::CertificateParse {
                cert: CertPosition::Bundle(2),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn chain_refuses_non_ca_issuers_and_path_length_overruns() {
    let (root, root_issuer) = issue(
        ca_params("root", IsCa::Ca(BasicConstraints::Unconstrained)),
        None,
    );
    let root_opts = VerifyOptions {
        root_der: &root,
        at: VerifyAt::Document,
    };
    let doc_with = |cabundle: Vec<Vec<u8>>, leaf: (Vec<u8>, EcdsaKeyPair)| {
        let mut f = CHAIN.fields();
        f.cabundle = cabundle;
        f.certificate = leaf.0;
        sign_with(&leaf.1, &f)
    };

    // An intermediate with CA:FALSE signs the leaf.
    let (not_ca, not_ca_issuer) = issue(
        ca_params("not a CA", IsCa::ExplicitNoCa),
        Some(&root_issuer),
    );
    let doc = doc_with(vec![root.clone(), not_ca], leaf_cert(&not_ca_issuer));
    let err = verify(&doc, &root_opts).unwrap_err();
    assert_not_ca(err, CertPosition::Leaf, CertPosition::Bundle(1), "not a CA");

    // A CA without keyCertSign.
    let mut p = ca_params("no certsign", IsCa::Ca(BasicConstraints::Unconstrained));
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let (no_sign, no_sign_issuer) = issue(p, Some(&root_issuer));
    let doc = doc_with(vec![root.clone(), no_sign], leaf_cert(&no_sign_issuer));
    let err = verify(&doc, &root_opts).unwrap_err();
    assert_not_ca(
        err,
        CertPosition::Leaf,
        CertPosition::Bundle(1),
        "keyCertSign",
    );

    // pathLen 0 on the first intermediate, yet another intermediate follows it.
    let (i1, i1_issuer) = issue(
        ca_params("i1", IsCa::Ca(BasicConstraints::Constrained(0))),
        Some(&root_issuer),
    );
    let (i2, i2_issuer) = issue(
        ca_params("i2", IsCa::Ca(BasicConstraints::Constrained(0))),
        Some(&i1_issuer),
    );
    let doc = doc_with(vec![root.clone(), i1, i2], leaf_cert(&i2_issuer));
    let err = verify(&doc, &root_opts).unwrap_err();
    assert_not_ca(
        err,
        CertPosition::Bundle(2),
        CertPosition::Bundle(1),
        "path length",
    );

    // A leaf whose keyUsage does not cover signing.
    let key = p384();
    let mut p = ca_params("leaf", IsCa::ExplicitNoCa);
    p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let der = p
        .signed_by(&key, &root_issuer)
        .expect("leaf")
        .der()
        .to_vec();
    let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &key.serialize_der())
        .expect("leaf key");
    let err = verify(&doc_with(vec![root.clone()], (der, signer)), &root_opts).unwrap_err();
    assert!(
        matches!(
            err,
            AttestationError::CertificateUnsupported {
                cert: CertPosition::Leaf,
                ..
            }
        ),
        "{err}"
    );
}

fn assert_not_ca(err: AttestationError, cert: CertPosition, issuer: CertPosition, why: &str) {
    let AttestationError::NotCa {
        cert: c,
        issuer: i,
        reason,
    } = &err
    else {
        panic!("expected NotCa, got {err}");
    };
    assert_eq!((*c, *i), (cert, issuer), "{err}");
    assert!(reason.contains(why), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Strict decoding

/// The built document's payload as a CBOR map, to be edited and re-wrapped.
fn payload_entries() -> Vec<(Value, Value)> {
    let parsed = parse(&BUILT).expect("parse");
    let value: Value = ciborium::from_reader(parsed.payload()).expect("cbor");
    let Value::Map(entries) = value else {
        panic!("payload map")
    };
    entries
}

/// A COSE_Sign1 around `payload` with a zero signature: enough for `parse`.
fn wrap(payload: &Value) -> Vec<u8> {
    let mut p = Vec::new();
    ciborium::into_writer(payload, &mut p).expect("encode payload");
    let doc = Value::Array(vec![
        Value::Bytes(PROTECTED_ES384.to_vec()),
        Value::Map(Vec::new()),
        Value::Bytes(p),
        Value::Bytes(vec![0; 96]),
    ]);
    let mut out = Vec::new();
    ciborium::into_writer(&doc, &mut out).expect("encode doc");
    out
}

fn with_field(key: &str, value: Option<Value>) -> Vec<u8> {
    let mut entries = payload_entries();
    entries.retain(|(k, _)| k.as_text() != Some(key));
    if let Some(v) = value {
        entries.push((Value::Text(key.into()), v));
    }
    wrap(&Value::Map(entries))
}

fn field_error(doc: &[u8]) -> (&'static str, String) {
    match parse(doc) {
        Err(AttestationError::Field { field, problem }) => (field, problem),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn wrap_of_unchanged_payload_parses() {
    let doc = wrap(&Value::Map(payload_entries()));
    assert_eq!(parse(&doc).expect("parse").into_fields(), CHAIN.fields());
}

#[test]
fn every_field_error_names_its_field() {
    let b = |n: usize| Some(Value::Bytes(vec![1; n]));
    let t = |s: &str| Some(Value::Text(s.into()));
    let i = |n: i64| Some(Value::Integer(n.into()));
    // PCR maps from (index, length); length 0 stands for a null value.
    let pcrs = |entries: &[(i64, usize)]| {
        let m = entries.iter().map(|&(k, n)| {
            let v = if n == 0 {
                Value::Null
            } else {
                Value::Bytes(vec![1; n])
            };
            (Value::Integer(k.into()), v)
        });
        Some(Value::Map(m.collect()))
    };
    let certs = |v: Vec<Value>| Some(Value::Array(v));
    let all: Vec<(i64, usize)> = (0..33).map(|k| (k % 32, 48)).collect();
    let cases: Vec<(&str, Option<Value>, &str)> = vec![
        ("module_id", None, "is missing"),
        ("module_id", t(""), "is empty"),
        ("module_id", b(3), "is not text"),
        ("digest", t("SHA256"), "\"SHA256\", expected SHA384"),
        ("digest", None, "is missing"),
        ("timestamp", i(-1), "not an unsigned integer"),
        (
            "timestamp",
            Some(Value::Float(1.0)),
            "not an unsigned integer",
        ),
        ("timestamp", None, "is missing"),
        ("pcrs", pcrs(&[]), "0 entries"),
        ("pcrs", certs(Vec::new()), "not a map"),
        ("pcrs", pcrs(&[(32, 48)]), "index 0 to 31"),
        ("pcrs", pcrs(&[(-1, 48)]), "index 0 to 31"),
        ("pcrs", pcrs(&[(0, 47)]), "PCR0 is 47 bytes"),
        ("pcrs", pcrs(&[(5, 0)]), "PCR5 is not a byte string"),
        (
            "pcrs",
            pcrs(&[(1, 48), (1, 48)]),
            "PCR1 appears more than once",
        ),
        ("pcrs", pcrs(&all), "33 entries"),
        ("certificate", b(0), "0 bytes, expected 1 to 1024"),
        ("certificate", b(1025), "1025 bytes"),
        ("certificate", Some(Value::Null), "not a byte string"),
        ("certificate", None, "is missing"),
        ("cabundle", certs(Vec::new()), "0 certificates"),
        (
            "cabundle",
            certs(vec![Value::Bytes(vec![1; 10]); 9]),
            "9 certificates",
        ),
        (
            "cabundle",
            certs(vec![Value::Bytes(vec![1; 1025])]),
            "1025 bytes",
        ),
        (
            "cabundle",
            certs(vec![Value::Text("x".into())]),
            "not a byte string",
        ),
        ("cabundle", b(3), "not an array"),
        ("public_key", b(1025), "at most 1024 bytes"),
        ("public_key", Some(Value::Bool(false)), "at most 1024 bytes"),
        ("user_data", b(513), "at most 512 bytes"),
        ("nonce", b(513), "at most 512 bytes"),
        ("nonce", i(0), "at most 512 bytes"),
    ];
    for (field, value, problem) in cases {
        let (f, p) = field_error(&with_field(field, value.clone()));
        assert_eq!(f, field, "{field} = {value:?}: {p}");
        assert!(p.contains(problem), "{field} = {value:?}: {p}");
    }

    // Absent optionals are fine.
    let mut entries = payload_entries();
    entries.retain(|(k, _)| !matches!(k.as_text(), Some("public_key" | "user_data" | "nonce")));
    let f = parse(&wrap(&Value::Map(entries)))
        .expect("parse")
        .into_fields();
    assert_eq!((f.public_key, f.user_data, f.nonce), (None, None, None));
}

#[test]
fn unknown_duplicate_and_non_text_keys_are_refused() {
    let mut entries = payload_entries();
    entries.push((Value::Text("evil".into()), Value::Null));
    assert_eq!(
        parse(&wrap(&Value::Map(entries))),
        Err(AttestationError::UnknownField("\"evil\"".into()))
    );

    let mut entries = payload_entries();
    entries.push((Value::Text("x".repeat(100)), Value::Null));
    let Err(AttestationError::UnknownField(name)) = parse(&wrap(&Value::Map(entries))) else {
        panic!("unknown field");
    };
    assert!(name.len() < 50, "{name}");

    for key in ["module_id", "nonce", "cabundle"] {
        let mut entries = payload_entries();
        let dup = entries
            .iter()
            .find(|(k, _)| k.as_text() == Some(key))
            .cloned()
            .expect("present");
        entries.push(dup);
        let (f, p) = field_error(&wrap(&Value::Map(entries)));
        assert_eq!((f, p.as_str()), (key, "appears more than once"));
    }

    let mut entries = payload_entries();
    entries.push((Value::Integer(1.into()), Value::Null));
    let err = parse(&wrap(&Value::Map(entries))).unwrap_err();
    assert!(
        matches!(
            err,
            AttestationError::Cose {
                part: "payload",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn envelope_errors_name_the_part() {
    let payload = Value::Map(payload_entries());
    let mut p = Vec::new();
    ciborium::into_writer(&payload, &mut p).expect("payload");
    let sign1 = |items: Vec<Value>| {
        let mut out = Vec::new();
        ciborium::into_writer(&Value::Array(items), &mut out).expect("doc");
        parse(&out).unwrap_err()
    };
    let prot = || Value::Bytes(PROTECTED_ES384.to_vec());
    let empty = || Value::Map(Vec::new());
    let pl = || Value::Bytes(p.clone());
    let sig = |n: usize| Value::Bytes(vec![0; n]);
    let cases = [
        (vec![prot(), empty(), pl()], "COSE_Sign1"),
        (
            vec![Value::Bytes(vec![0xa1, 0x01, 0x26]), empty(), pl(), sig(96)],
            "protected header",
        ),
        (
            vec![Value::Map(Vec::new()), empty(), pl(), sig(96)],
            "protected header",
        ),
        (
            vec![prot(), Value::Array(Vec::new()), pl(), sig(96)],
            "unprotected header",
        ),
        (vec![prot(), empty(), Value::Null, sig(96)], "payload"),
        (
            vec![prot(), empty(), Value::Bytes(vec![0x80]), sig(96)],
            "payload",
        ),
        (vec![prot(), empty(), pl(), sig(95)], "signature"),
        (vec![prot(), empty(), pl(), sig(97)], "signature"),
        (
            vec![prot(), empty(), pl(), Value::Text("x".into())],
            "signature",
        ),
    ];
    for (items, part) in cases {
        let err = sign1(items);
        assert!(
            matches!(err, AttestationError::Cose { part: p, .. } if p == part),
            "{part}: {err}"
        );
    }
    // An unprotected header with content is a map, and accepted.
    let mut out = Vec::new();
    let unprot = Value::Map(vec![(
        Value::Integer(4.into()),
        Value::Bytes(b"kid".to_vec()),
    )]);
    ciborium::into_writer(&Value::Array(vec![prot(), unprot, pl(), sig(96)]), &mut out)
        .expect("doc");
    parse(&out).expect("non-empty unprotected header");
}

#[test]
fn hostile_cbor_is_refused_without_crashing() {
    // Nesting far past any sane depth.
    assert!(parse(&vec![0x81; MAX_DOCUMENT_LEN]).is_err());
    assert!(parse(&[0xd2; 1000]).is_err());
    // Lengths far past the input.
    for doc in [
        &[0x84, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
        &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        &[0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        &[0x84, 0x5f, 0x41, 0x00],
        &[],
    ] {
        assert!(parse(doc).is_err(), "{doc:02x?}");
    }
}

#[test]
fn encode_refuses_what_parse_would() {
    let sign = |_: &[u8]| -> Result<[u8; 96], Infallible> { panic!("must not sign") };
    let mut f = CHAIN.fields();
    f.pcrs.insert(32, vec![0; 48]);
    let err = encode_document(&f, sign).unwrap_err();
    assert!(
        matches!(
            err,
            EncodeError::Invalid(AttestationError::Field { field: "pcrs", .. })
        ),
        "{err}"
    );

    let mut f = CHAIN.fields();
    f.module_id.clear();
    assert!(encode_document(&f, sign).is_err());

    // Every field at its limit still fits the document limit, so a valid document is never
    // refused for its size alone.
    let mut f = CHAIN.fields();
    f.module_id = "m".repeat(100);
    f.pcrs = (0..32u8).map(|i| (i, vec![i; 64])).collect();
    f.cabundle = vec![vec![0x30; 1024]; 8];
    f.certificate = vec![0x30; 1024];
    f.public_key = Some(vec![0; 1024]);
    f.user_data = Some(vec![0; 512]);
    f.nonce = Some(vec![0; 512]);
    let doc = encode_document(&f, |_| Ok::<_, Infallible>([0; 96])).expect("largest document");
    assert!(doc.len() <= MAX_DOCUMENT_LEN, "{}", doc.len());
    assert_eq!(parse(&doc).expect("parse").into_fields(), f);
}

// ---------------------------------------------------------------------------------------------
// Never panic

fn check_no_panic(doc: &[u8]) {
    let _ = parse(doc);
    let _ = verify(doc, &aws_at_doc());
    let _ = verify(doc, &CHAIN.opts(VerifyAt::UnixMillis(T_2030)));
}

/// Random edits: up to 8 byte overwrites, then maybe a cut or an insertion.
/// Byte overwrites (position, value), a cut, an insertion (position, value).
type Mutation = (Vec<(usize, u8)>, Option<usize>, Option<(usize, u8)>);

fn mutations() -> impl Strategy<Value = Mutation> {
    (
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        any::<Option<usize>>(),
        any::<Option<(usize, u8)>>(),
    )
}

fn mutate(doc: &[u8], (edits, cut, insert): &Mutation) -> Vec<u8> {
    let mut d = doc.to_vec();
    for &(pos, b) in edits {
        let i = pos % d.len();
        d[i] = b;
    }
    if let Some(c) = cut {
        d.truncate(c % (d.len() + 1));
    }
    if let Some((pos, b)) = insert {
        d.insert(pos % (d.len() + 1), *b);
    }
    d
}

/// Integration tests have no lib.rs beside them for proptest's regression files.
fn proptest_config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(
        doc in proptest::collection::vec(any::<u8>(), 0..4096)
    ) {
        check_no_panic(&doc);
    }

    #[test]
    fn parse_never_panics_on_mutated_built_documents(m in mutations()) {
        check_no_panic(&mutate(&BUILT, &m));
    }
}

#[test]
fn parse_never_panics_on_mutated_fixtures() {
    let Some(docs) = fixtures("parse_never_panics_on_mutated_fixtures", [VALID, DEBUG]) else {
        return;
    };
    let mut runner = TestRunner::new(proptest_config());
    runner
        .run(&(0..docs.len(), mutations()), |(which, m)| {
            check_no_panic(&mutate(&docs[which], &m));
            Ok(())
        })
        .expect("no failures");
}

/// A real document's payload in the envelope QEMU's emulated NSM writes (`{1: -1}`, `{}`, 64
/// zero bytes): `parse_qemu_unsigned` gives the real document's fields, and `parse` refuses it.
/// fuzz/seeds/attestation holds these bytes.
#[test]
fn real_payload_in_qemus_unsigned_envelope() {
    let Some([real]) = fixtures("real_payload_in_qemus_unsigned_envelope", [VALID]) else {
        return;
    };
    let mut value: Value = ciborium::de::from_reader(real.as_slice()).unwrap();
    if let Value::Tag(18, inner) = value {
        value = *inner;
    }
    let Value::Array(mut items) = value else {
        panic!("not a COSE_Sign1 array")
    };
    items[0] = Value::Bytes(vec![0xa1, 0x01, 0x20]);
    items[1] = Value::Map(Vec::new());
    items[3] = Value::Bytes(vec![0; 64]);
    let mut qemu = Vec::new();
    ciborium::ser::into_writer(&Value::Array(items), &mut qemu).unwrap();
    let fields = bidding_core::attestation::parse_qemu_unsigned(&qemu).unwrap();
    assert_eq!(&fields, parse(&real).unwrap().fields());
    assert!(parse(&qemu).is_err());
    assert!(bidding_core::attestation::parse_qemu_unsigned(&real).is_err());
    let seed = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/seeds/attestation/qemu-unsigned-from-evervault-valid.cbor"
    ));
    assert_eq!(std::fs::read(seed).unwrap(), qemu);
}
