//! CMS envelopes against code nobody here wrote: the aws-nitro-enclaves-sdk-c byte arrays in
//! `../shared/fixtures` and the OpenSSL 3 command line, plus hand-built variants for every
//! refusal and never-panic properties.

use aws_lc_rs::cipher::{AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey,
};
use bidding_core::ber::{self, BerError};
use bidding_core::cms::{self, CmsError};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");

/// rids as the fixtures README states them, independent of `sdkc-expected.txt`.
const README_RIDS: [(&str, &str); 2] = [
    (
        "sdkc-constructed.ber",
        "7087b55df94ba3255cdf3c01840a2aa3ec93620625d601cf56f97bde7a3d2eb1",
    ),
    (
        "sdkc-primitive.ber",
        "4e61df69e443b8e25c8ae83318cfc72d9b6a5176d2167790fdf819c086e6967a",
    ),
];

/// The CMS fixture directory, or `None` after printing the one line that says why `test` skips.
fn cms_fixtures(test: &str) -> Option<PathBuf> {
    let dir = Path::new(FIXTURES);
    if dir.is_dir() {
        Some(dir.join("cms"))
    } else {
        println!("{test}: skipped, fixture directory {FIXTURES} does not exist");
        None
    }
}

struct Expected {
    blob: String,
    encrypted_key: Vec<u8>,
    iv: Vec<u8>,
    encrypted_content: Vec<u8>,
}

/// Reads `sdkc-expected.txt`: `blob: <file>` starts a group, then `name: hex` lines.
fn expected(dir: &Path) -> Vec<Expected> {
    let text = fs::read_to_string(dir.join("sdkc-expected.txt")).unwrap();
    let mut groups: Vec<Expected> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (name, value) = line.split_once(':').expect("`name: value` line");
        let value = value.trim();
        if name == "blob" {
            groups.push(Expected {
                blob: value.to_owned(),
                encrypted_key: Vec::new(),
                iv: Vec::new(),
                encrypted_content: Vec::new(),
            });
            continue;
        }
        let group = groups.last_mut().expect("a `blob:` line first");
        let bytes = hex::decode(value).unwrap();
        match name {
            "encrypted_key" => group.encrypted_key = bytes,
            "iv" => group.iv = bytes,
            "encrypted_content" => group.encrypted_content = bytes,
            other => panic!("unknown field {other} in sdkc-expected.txt"),
        }
    }
    groups
}

#[test]
fn sdk_c_fixtures_parse_to_the_expected_fields() {
    let Some(dir) = cms_fixtures("sdk_c_fixtures_parse_to_the_expected_fields") else {
        return;
    };
    let groups = expected(&dir);
    assert_eq!(groups.len(), 2);
    // Any key will do: the rid check comes first, and nobody has the fixtures' key.
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    for group in groups {
        let blob = fs::read(dir.join(&group.blob)).unwrap();
        let env = cms::parse(&blob).unwrap_or_else(|e| panic!("{}: {e}", group.blob));
        let rid = README_RIDS
            .iter()
            .find(|(f, _)| *f == group.blob)
            .unwrap()
            .1;
        assert_eq!(hex::encode(&env.rid), rid, "{}", group.blob);
        assert_eq!(env.encrypted_key, group.encrypted_key, "{}", group.blob);
        assert_eq!(env.iv[..], group.iv[..], "{}", group.blob);
        assert_eq!(
            env.encrypted_content, group.encrypted_content,
            "{}",
            group.blob
        );

        let ours = [0x11; 32];
        assert_eq!(
            cms::open(&blob, &key, &ours).unwrap_err(),
            CmsError::RidMismatch {
                expected: hex::encode(ours),
                found: rid.to_owned()
            }
        );
    }
}

#[test]
fn seal_has_the_kms_byte_layout() {
    let Some(dir) = cms_fixtures("seal_has_the_kms_byte_layout") else {
        return;
    };
    let kms = fs::read(dir.join("sdkc-constructed.ber")).unwrap();
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let spki = key.public_key().as_der().unwrap();
    // 40 bytes pad to the fixture's 48 bytes of content.
    let sealed = cms::seal(spki.as_ref(), &[b'7'; 40]).unwrap();
    assert_eq!(sealed.len(), kms.len());
    // Everything but rid, encryptedKey, IV and content is the same, byte for byte.
    for (from, to) in [(0, 33), (65, 131), (387, 415), (431, 435), (483, 493)] {
        assert_eq!(sealed[from..to], kms[from..to], "bytes {from}..{to}");
    }
    let env = cms::parse(&sealed).unwrap();
    assert_eq!(env.rid, cms::recipient_key_id(spki.as_ref()));
    assert_eq!(sealed[33..65], env.rid[..]);
}

#[test]
fn seal_then_open_round_trips() {
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let spki = key.public_key().as_der().unwrap();
    let rid = cms::recipient_key_id(spki.as_ref());
    for len in [0, 1, 15, 16, 17, 4096] {
        let plaintext = pattern(len);
        let sealed = cms::seal(spki.as_ref(), &plaintext).unwrap();
        assert_eq!(sealed[..2], [0x30, 0x80], "indefinite lengths, as KMS");
        assert_eq!(*cms::open(&sealed, &key, &rid).unwrap(), plaintext, "{len}");
    }
    let opened = cms::open(&cms::seal(spki.as_ref(), b"100000").unwrap(), &key, &rid);
    assert_eq!(format!("{opened:?}"), "Ok(Plaintext(<redacted>))");
    // Fresh key and IV every time.
    let a = cms::parse(&cms::seal(spki.as_ref(), b"100000").unwrap()).unwrap();
    let b = cms::parse(&cms::seal(spki.as_ref(), b"100000").unwrap()).unwrap();
    assert_ne!(a.iv, b.iv);
    assert_ne!(a.encrypted_key, b.encrypted_key);
    assert_eq!(
        cms::seal(b"not a key", b"1").unwrap_err(),
        CmsError::InvalidRecipientKey
    );
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// A temporary directory with an RSA-2048 key (aws-lc made, so both sides read the same key)
/// and a self-signed certificate whose subjectKeyIdentifier is the KMS-style rid.
struct Openssl {
    dir: tempfile::TempDir,
    key: PrivateDecryptingKey,
    rid: [u8; 32],
}

impl Openssl {
    fn new() -> Openssl {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let spki = key.public_key().as_der().unwrap();
        let rid = cms::recipient_key_id(spki.as_ref());
        fs::write(dir.path().join("key.der"), key.as_der().unwrap().as_ref()).unwrap();
        let ski: Vec<String> = rid.iter().map(|b| format!("{b:02x}")).collect();
        fs::write(
            dir.path().join("cert.cnf"),
            format!(
                "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = enclave\n\
                 [v3]\nbasicConstraints = CA:FALSE\nsubjectKeyIdentifier = {}\n",
                ski.join(":")
            ),
        )
        .unwrap();
        let ssl = Openssl { dir, key, rid };
        ssl.run(&[
            "pkey", "-inform", "DER", "-in", "key.der", "-out", "key.pem",
        ]);
        ssl.run(&[
            "pkey", "-in", "key.pem", "-pubout", "-outform", "DER", "-out", "pub.der",
        ]);
        assert_eq!(
            ssl.read("pub.der"),
            spki.as_ref(),
            "OpenSSL and aws-lc agree on the SPKI"
        );
        ssl.run(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "key.pem",
            "-config",
            "cert.cnf",
            "-extensions",
            "v3",
            "-days",
            "1",
            "-out",
            "cert.pem",
        ]);
        ssl
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("the openssl command line tool (OpenSSL 3) must be installed");
        assert!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.dir.path().join(name)).unwrap()
    }

    /// `openssl cms -encrypt -keyid` to our certificate. `stream` gives BER with indefinite
    /// lengths, otherwise DER; `oaep` adds the KMS key-transport options.
    fn encrypt(&self, plaintext: &[u8], stream: bool, cipher: &str, oaep: bool) -> Vec<u8> {
        fs::write(self.dir.path().join("plain.bin"), plaintext).unwrap();
        let mut args = vec!["cms", "-encrypt", "-binary"];
        if stream {
            args.push("-stream");
        }
        args.extend(["-keyid", cipher, "-in", "plain.bin", "-recip", "cert.pem"]);
        // Each -keyopt applies to the -recip before it.
        if oaep {
            args.extend([
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
                "-keyopt",
                "rsa_mgf1_md:sha256",
            ]);
        }
        args.extend(["-outform", "DER", "-out", "envelope.der"]);
        self.run(&args);
        self.read("envelope.der")
    }
}

#[test]
fn openssl_envelopes_open() {
    let ssl = Openssl::new();
    for stream in [true, false] {
        for len in [0, 1, 15, 16, 17, 4096] {
            let plaintext = pattern(len);
            let blob = ssl.encrypt(&plaintext, stream, "-aes256", true);
            let what = format!("{} bytes, {}", len, if stream { "BER" } else { "DER" });
            assert_eq!(blob[1] == 0x80, stream, "{what}: length form");
            let env = cms::parse(&blob).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(env.encrypted_content.len(), (len / 16 + 1) * 16, "{what}");
            let opened = cms::open(&blob, &ssl.key, &ssl.rid);
            assert_eq!(
                *opened.unwrap_or_else(|e| panic!("{what}: {e}")),
                plaintext,
                "{what}"
            );
        }
    }
}

#[test]
fn openssl_envelopes_fail_each_with_its_own_error() {
    let ssl = Openssl::new();
    let good = ssl.encrypt(b"100000", true, "-aes256", true);

    let other = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    assert_eq!(
        cms::open(&good, &other, &ssl.rid).unwrap_err(),
        CmsError::KeyDecryptFailed
    );

    let wrong_rid = [0xab; 32];
    assert_eq!(
        cms::open(&good, &ssl.key, &wrong_rid).unwrap_err(),
        CmsError::RidMismatch {
            expected: hex::encode(wrong_rid),
            found: hex::encode(ssl.rid)
        }
    );

    let pkcs1 = ssl.encrypt(b"100000", true, "-aes256", false);
    let err = cms::open(&pkcs1, &ssl.key, &ssl.rid).unwrap_err();
    assert_eq!(
        err.to_string(),
        "key transport algorithm is 1.2.840.113549.1.1.1 (rsaEncryption, PKCS#1 v1.5); \
         expected RSAES-OAEP (1.2.840.113549.1.1.7)"
    );
    assert!(matches!(err, CmsError::UnsupportedKeyTransport { .. }));

    let aes128 = ssl.encrypt(b"100000", true, "-aes128", true);
    let err = cms::open(&aes128, &ssl.key, &ssl.rid).unwrap_err();
    assert_eq!(
        err,
        CmsError::UnsupportedContentCipher {
            found: "2.16.840.1.101.3.4.1.2 (AES-128-CBC)".into()
        }
    );

    // Bad padding, made on purpose: recover the content key, encrypt two blocks whose last
    // byte says "2 bytes of padding" after a 0x01, and put them where OpenSSL's were.
    let der = ssl.encrypt(&[b'9'; 16], false, "-aes256", true);
    let env = cms::parse(&der).unwrap();
    assert_eq!(env.encrypted_content.len(), 32);
    let oaep = OaepPrivateDecryptingKey::new(ssl.key.clone()).unwrap();
    let mut key_buf = vec![0; oaep.min_output_size()];
    let content_key = oaep
        .decrypt(
            &OAEP_SHA256_MGF1SHA256,
            &env.encrypted_key,
            &mut key_buf,
            None,
        )
        .unwrap();
    let mut blocks = [b'9'; 32];
    blocks[30..].copy_from_slice(&[0x01, 0x02]);
    EncryptingKey::cbc(UnboundCipherKey::new(&AES_256, content_key).unwrap())
        .unwrap()
        .less_safe_encrypt(&mut blocks, EncryptionContext::Iv128(env.iv.into()))
        .unwrap();
    let at = find_once(&der, &env.encrypted_content);
    let mut bad = der.clone();
    bad[at..at + 32].copy_from_slice(&blocks);
    assert_eq!(
        cms::open(&bad, &ssl.key, &ssl.rid).unwrap_err(),
        CmsError::ContentDecryptFailed
    );
    // The untouched envelope still opens, so it was the padding and nothing else.
    assert_eq!(*cms::open(&der, &ssl.key, &ssl.rid).unwrap(), [b'9'; 16]);
}

fn find_once(haystack: &[u8], needle: &[u8]) -> usize {
    let hits: Vec<usize> = haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1);
    hits[0]
}

#[test]
fn sealed_envelopes_decrypt_with_openssl() {
    let ssl = Openssl::new();
    let spki = ssl.read("pub.der");
    for len in [0, 17, 4096] {
        let plaintext = pattern(len);
        fs::write(
            ssl.dir.path().join("sealed.ber"),
            cms::seal(&spki, &plaintext).unwrap(),
        )
        .unwrap();
        ssl.run(&[
            "cms",
            "-decrypt",
            "-binary",
            "-inform",
            "DER",
            "-in",
            "sealed.ber",
            "-inkey",
            "key.pem",
            "-recip",
            "cert.pem",
            "-out",
            "opened.bin",
        ]);
        assert_eq!(ssl.read("opened.bin"), plaintext, "{len} bytes");
    }
}

// Hand-built envelopes: one valid DER baseline and one change per refusal.

const ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
const DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OAEP: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07];
const MGF1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
const P_SPECIFIED: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x09];
const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const AES_256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];

fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let body = parts.concat();
    let mut out = vec![tag];
    match body.len() {
        n @ 0..0x80 => out.push(n as u8),
        n @ 0x80..0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend(body);
    out
}

fn sha256_id(null: bool) -> Vec<u8> {
    let oid = tlv(0x06, &[SHA256]);
    if null {
        tlv(0x30, &[&oid, &[0x05, 0x00]])
    } else {
        tlv(0x30, &[&oid])
    }
}

fn oaep_algorithm(params: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &[&tlv(0x06, &[OAEP]), &tlv(0x30, params)])
}

fn mgf1(hash: &[u8]) -> Vec<u8> {
    tlv(0xa1, &[&tlv(0x30, &[&tlv(0x06, &[MGF1]), hash])])
}

struct Spec {
    ed_version: u8,
    recipients: usize,
    ktri_version: u8,
    rid: Vec<u8>,
    key_algorithm: Vec<u8>,
    content_type: &'static [u8],
    content_algorithm: Vec<u8>,
    content: Vec<u8>,
    trailing: Vec<u8>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            ed_version: 2,
            recipients: 1,
            ktri_version: 2,
            rid: tlv(0x80, &[&[0x5a; 32]]),
            // OpenSSL's form: no NULL after the hash OIDs.
            key_algorithm: oaep_algorithm(&[
                &tlv(0xa0, &[&sha256_id(false)]),
                &mgf1(&sha256_id(false)),
            ]),
            content_type: DATA,
            content_algorithm: tlv(
                0x30,
                &[&tlv(0x06, &[AES_256_CBC]), &tlv(0x04, &[&[0x1b; 16]])],
            ),
            content: tlv(0x80, &[&[0xcc; 32]]),
            trailing: Vec::new(),
        }
    }
}

impl Spec {
    fn build(&self) -> Vec<u8> {
        let ktri = tlv(
            0x30,
            &[
                &tlv(0x02, &[&[self.ktri_version]]),
                &self.rid,
                &self.key_algorithm,
                &tlv(0x04, &[&[0xee; 256]]),
            ],
        );
        let recipients = tlv(0x31, &vec![&ktri[..]; self.recipients]);
        let eci = tlv(
            0x30,
            &[
                &tlv(0x06, &[self.content_type]),
                &self.content_algorithm,
                &self.content,
            ],
        );
        let ed = tlv(
            0x30,
            &[&tlv(0x02, &[&[self.ed_version]]), &recipients, &eci],
        );
        let ci = tlv(0x30, &[&tlv(0x06, &[ENVELOPED_DATA]), &tlv(0xa0, &[&ed])]);
        [ci, self.trailing.clone()].concat()
    }
}

#[test]
fn hand_built_variants_are_accepted_or_refused_precisely() {
    let base = cms::parse(&Spec::default().build()).unwrap();
    assert_eq!(base.rid, [0x5a; 32]);
    assert_eq!(base.encrypted_content, [0xcc; 32]);

    let accepted = [
        (
            "KMS-style NULL hash parameters",
            Spec {
                key_algorithm: oaep_algorithm(&[
                    &tlv(0xa0, &[&sha256_id(true)]),
                    &mgf1(&sha256_id(true)),
                ]),
                ..Spec::default()
            },
        ),
        (
            "explicit empty pSpecified label",
            Spec {
                key_algorithm: oaep_algorithm(&[
                    &tlv(0xa0, &[&sha256_id(false)]),
                    &mgf1(&sha256_id(false)),
                    &tlv(
                        0xa2,
                        &[&tlv(0x30, &[&tlv(0x06, &[P_SPECIFIED]), &[0x04, 0x00]])],
                    ),
                ]),
                ..Spec::default()
            },
        ),
        (
            "constructed encryptedContent in two segments",
            Spec {
                content: tlv(
                    0xa0,
                    &[&tlv(0x04, &[&[0xcc; 16]]), &tlv(0x04, &[&[0xcc; 16]])],
                ),
                ..Spec::default()
            },
        ),
    ];
    for (what, spec) in accepted {
        let env = cms::parse(&spec.build()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(env, base, "{what}");
    }

    let sha1_hash = CmsError::UnsupportedOaepHash {
        found: "SHA-1 (1.3.14.3.2.26, the default when hashAlgorithm is absent)".into(),
    };
    let refused = [
        (
            Spec {
                ed_version: 0,
                ..Spec::default()
            },
            CmsError::UnsupportedVersion {
                structure: "EnvelopedData",
                found: "0".into(),
            },
        ),
        (
            Spec {
                recipients: 2,
                ..Spec::default()
            },
            CmsError::RecipientCount { found: 2 },
        ),
        (
            Spec {
                recipients: 0,
                ..Spec::default()
            },
            CmsError::RecipientCount { found: 0 },
        ),
        (
            Spec {
                ktri_version: 0,
                ..Spec::default()
            },
            CmsError::UnsupportedVersion {
                structure: "KeyTransRecipientInfo",
                found: "0".into(),
            },
        ),
        (
            Spec {
                ktri_version: 0,
                rid: tlv(0x30, &[&tlv(0x30, &[]), &[0x02, 0x01, 0x01]]),
                ..Spec::default()
            },
            CmsError::RidNotSubjectKeyIdentifier,
        ),
        (
            Spec {
                key_algorithm: tlv(0x30, &[&tlv(0x06, &[OAEP])]),
                ..Spec::default()
            },
            sha1_hash.clone(),
        ),
        (
            Spec {
                key_algorithm: oaep_algorithm(&[&mgf1(&sha256_id(false))]),
                ..Spec::default()
            },
            sha1_hash,
        ),
        (
            Spec {
                key_algorithm: oaep_algorithm(&[
                    &tlv(0xa0, &[&tlv(0x30, &[&tlv(0x06, &[SHA384])])]),
                    &mgf1(&sha256_id(false)),
                ]),
                ..Spec::default()
            },
            CmsError::UnsupportedOaepHash {
                found: "2.16.840.1.101.3.4.2.2 (SHA-384)".into(),
            },
        ),
        (
            Spec {
                key_algorithm: oaep_algorithm(&[&tlv(0xa0, &[&sha256_id(false)])]),
                ..Spec::default()
            },
            CmsError::UnsupportedOaepMgf {
                found: "MGF1 with SHA-1 (the default when maskGenAlgorithm is absent)".into(),
            },
        ),
        (
            Spec {
                key_algorithm: oaep_algorithm(&[
                    &tlv(0xa0, &[&sha256_id(false)]),
                    &mgf1(&tlv(0x30, &[&tlv(0x06, &[SHA1])])),
                ]),
                ..Spec::default()
            },
            CmsError::UnsupportedOaepMgf {
                found: "MGF1 with 1.3.14.3.2.26 (SHA-1)".into(),
            },
        ),
        (
            Spec {
                key_algorithm: oaep_algorithm(&[
                    &tlv(0xa0, &[&sha256_id(false)]),
                    &mgf1(&sha256_id(false)),
                    &tlv(
                        0xa2,
                        &[&tlv(
                            0x30,
                            &[&tlv(0x06, &[P_SPECIFIED]), &[0x04, 0x01, b'x']],
                        )],
                    ),
                ]),
                ..Spec::default()
            },
            CmsError::UnsupportedOaepLabel {
                found: "a 1-byte label".into(),
            },
        ),
        (
            Spec {
                key_algorithm: oaep_algorithm(&[
                    &tlv(
                        0xa0,
                        &[&tlv(0x30, &[&tlv(0x06, &[SHA256]), &[0x05, 0x01, 0x00]])],
                    ),
                    &mgf1(&sha256_id(false)),
                ]),
                ..Spec::default()
            },
            CmsError::UnexpectedParameters {
                algorithm: "SHA-256",
            },
        ),
        (
            Spec {
                content_type: ENVELOPED_DATA,
                ..Spec::default()
            },
            CmsError::UnsupportedContentType {
                found: "1.2.840.113549.1.7.3 (envelopedData)".into(),
            },
        ),
        (
            Spec {
                content_algorithm: tlv(0x30, &[&tlv(0x06, &[AES_256_CBC]), &tlv(0x04, &[&[1; 8]])]),
                ..Spec::default()
            },
            CmsError::IvLength { len: 8 },
        ),
        (
            Spec {
                content: Vec::new(),
                ..Spec::default()
            },
            CmsError::MissingEncryptedContent,
        ),
        (
            Spec {
                content: tlv(0x80, &[&[0xcc; 31]]),
                ..Spec::default()
            },
            CmsError::ContentLength { len: 31 },
        ),
        (
            Spec {
                content: tlv(0x80, &[]),
                ..Spec::default()
            },
            CmsError::ContentLength { len: 0 },
        ),
        (
            Spec {
                trailing: vec![0x00],
                ..Spec::default()
            },
            CmsError::Malformed(BerError::TrailingData {
                offset: Spec::default().build().len(),
                count: 1,
                after: "the ContentInfo",
            }),
        ),
    ];
    for (spec, want) in refused {
        assert_eq!(cms::parse(&spec.build()), Err(want));
    }
}

/// No failure file: from an integration test proptest cannot place one next to the source
/// and says so on every run. A failing case is printed with its seed anyway.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn never_panics(bytes: &[u8]) {
    let _ = ber::walk(bytes, |_| {});
    let _ = cms::parse(bytes);
}

proptest! {
    #![proptest_config(config(2000))]
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        never_panics(&bytes);
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let Some(dir) = cms_fixtures("mutated_fixtures_never_panic") else {
        return;
    };
    let blobs: Vec<Vec<u8>> = README_RIDS
        .iter()
        .map(|(file, _)| fs::read(dir.join(file)).unwrap())
        .collect();
    let edit = (any::<Index>(), any::<u8>(), 0u8..3);
    let strategy = (
        any::<Index>(),
        prop::collection::vec(edit, 1..8),
        prop::option::of(any::<Index>()),
    );
    let mut runner = TestRunner::new(config(4000));
    runner
        .run(&strategy, |(which, edits, cut)| {
            let mut bytes = blobs[which.index(blobs.len())].clone();
            for (at, byte, kind) in edits {
                let i = at.index(bytes.len() + 1);
                match kind {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => {}
                }
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            never_panics(&bytes);
            Ok(())
        })
        .unwrap();
}
