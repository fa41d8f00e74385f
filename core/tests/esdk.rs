//! AWS Encryption SDK v2 messages against code nobody here wrote: the 46 official test vectors
//! in `../shared/fixtures/esdk` (C, JavaScript, Python and Java SDKs). Then every flipped byte
//! and every truncation of those and of our own encoder's messages, each limit, the bid-file
//! policy, and encoder round trips. Messages the encoder cannot make (suite 0x0478, two data
//! keys, other providers) come from a second, independent encoder written here from the
//! format description.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::{AsBigEndian, EcPublicKeyCompressedBin};
use aws_lc_rs::hkdf::{HKDF_SHA512, KeyType, Salt};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use bidding_core::config::Mode;
use bidding_core::esdk::{
    self, ContentType, Encryptor, EsdkError, Limits, Message, Pushed, Stage, StreamDecoder, Suite,
    check_bid_file,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");
const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/0b5f3e4c-6d1a-4c38-9d2e-8f7a6b5c4d3e";

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

struct Vector {
    name: String,
    message: Vec<u8>,
    data_key: Vec<u8>,
    message_id: Vec<u8>,
    context: BTreeMap<String, String>,
    plaintext: Option<Vec<u8>>,
    good: bool,
}

/// The official vectors, or `None` after one line saying why `test` skips.
fn vectors(test: &str) -> Option<Vec<Vector>> {
    let path = Path::new(FIXTURES).join("esdk/commitment-test-vectors.json");
    if !Path::new(FIXTURES).is_dir() {
        println!("{test}: skipped, fixture directory {FIXTURES} does not exist");
        return None;
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("esdk vectors")).unwrap();
    let tests = json["tests"].as_array().expect("tests array");
    Some(
        tests
            .iter()
            .map(|t| Vector {
                name: t["comment"].as_str().unwrap().to_owned(),
                message: b64(t["ciphertext"].as_str().unwrap()),
                data_key: b64(t["decrypted-dek"].as_str().unwrap()),
                message_id: b64(t["message-id"].as_str().unwrap()),
                context: serde_json::from_value(t["encryption-context"].clone()).unwrap(),
                plaintext: t["plaintext-frames"].as_array().map(|frames| {
                    frames
                        .iter()
                        .flat_map(|f| f.as_str().unwrap().bytes())
                        .collect()
                }),
                good: t["status"].as_bool().unwrap(),
            })
            .collect(),
    )
}

#[test]
fn official_vectors_open_or_fail_at_the_commitment() {
    let Some(vectors) = vectors("official_vectors_open_or_fail_at_the_commitment") else {
        return;
    };
    assert_eq!(vectors.len(), 46);
    let (mut opened, mut refused) = (0, 0);
    let mut suites = std::collections::HashSet::new();
    let mut content_types = std::collections::HashSet::new();
    for v in &vectors {
        assert!(esdk::is_message(&v.message), "{}", v.name);
        let m = Message::parse(&v.message, &Limits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        suites.insert(m.suite());
        content_types.insert(m.content_type());
        assert_eq!(&m.message_id()[..], &v.message_id[..], "{}", v.name);
        assert_eq!(m.context(), &v.context, "{}", v.name);
        assert_eq!(m.signature_verified(), m.suite().is_signed());
        assert!(!m.data_keys().is_empty());
        match m.decrypt(&v.data_key) {
            Ok(p) => {
                assert!(v.good, "{}: a bad commitment opened", v.name);
                assert_eq!(&p[..], &v.plaintext.as_ref().unwrap()[..], "{}", v.name);
                assert_eq!(p.len() as u64, m.plaintext_len());
                opened += 1;
            }
            Err(e) => {
                assert!(!v.good, "{}: {e}", v.name);
                assert_eq!(e, EsdkError::CommitmentMismatch, "{}", v.name);
                refused += 1;
            }
        }
    }
    assert_eq!((opened, refused), (41, 5));
    assert_eq!(suites.len(), 2);
    assert_eq!(content_types.len(), 2);
}

// ---------------------------------------------------------------------------------------
// An independent layout of a message, from the format description, to say which step a
// flipped byte must be refused at.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    Version,
    Suite,
    MessageId,
    /// A length or count that frames other fields.
    Structure,
    /// Key or value text of the context, or a provider id.
    HeaderText,
    /// Bytes only the header tag or signature covers (provider info, encrypted keys).
    HeaderBytes,
    ContentType,
    FrameLength,
    Commitment,
    HeaderTag,
    /// Sequence numbers, final marker, final/single-block lengths, the IV's sequence part.
    FrameStructure,
    /// The IV's first eight bytes, ciphertext and tags.
    FrameSealed,
    FooterLength,
    Signature,
}

fn layout(m: &[u8]) -> Vec<Region> {
    use Region::*;
    let mut r = Vec::with_capacity(m.len());
    // The region vector's length is the position reached.
    let push = |r: &mut Vec<Region>, region: Region, n: usize| {
        r.extend(std::iter::repeat_n(region, n));
    };
    let u16_at = |i: usize| u16::from_be_bytes([m[i], m[i + 1]]) as usize;
    let u32_at = |i: usize| u32::from_be_bytes(m[i..i + 4].try_into().unwrap()) as usize;
    push(&mut r, Version, 1);
    push(&mut r, Suite, 2);
    let signed = m[1] == 0x05;
    push(&mut r, MessageId, 32);
    let ctx_len = u16_at(r.len());
    push(&mut r, Structure, 2);
    if ctx_len > 0 {
        let count = u16_at(r.len());
        push(&mut r, Structure, 2);
        for _ in 0..count * 2 {
            let n = u16_at(r.len());
            push(&mut r, Structure, 2);
            push(&mut r, HeaderText, n);
        }
    }
    let keys = u16_at(r.len());
    push(&mut r, Structure, 2);
    for _ in 0..keys {
        for region in [HeaderText, HeaderBytes, HeaderBytes] {
            let n = u16_at(r.len());
            push(&mut r, Structure, 2);
            push(&mut r, region, n);
        }
    }
    let content_type = m[r.len()];
    push(&mut r, ContentType, 1);
    let frame_length = u32_at(r.len());
    push(&mut r, FrameLength, 4);
    push(&mut r, Commitment, 32);
    push(&mut r, HeaderTag, 16);
    if content_type == 1 {
        push(&mut r, FrameSealed, 8);
        push(&mut r, FrameStructure, 4);
        let len = u64::from_be_bytes(m[r.len()..r.len() + 8].try_into().unwrap()) as usize;
        push(&mut r, FrameStructure, 8);
        push(&mut r, FrameSealed, len + 16);
    } else {
        loop {
            let fin = u32_at(r.len()) == 0xffff_ffff;
            push(&mut r, FrameStructure, if fin { 8 } else { 4 });
            push(&mut r, FrameSealed, 8);
            push(&mut r, FrameStructure, 4);
            let len = if fin {
                let len = u32_at(r.len());
                push(&mut r, FrameStructure, 4);
                len
            } else {
                frame_length
            };
            push(&mut r, FrameSealed, len + 16);
            if fin {
                break;
            }
        }
    }
    if signed {
        let n = u16_at(r.len());
        push(&mut r, FooterLength, 2);
        push(&mut r, Signature, n);
    }
    assert_eq!(r.len(), m.len(), "the test's own layout walk");
    r
}

/// The steps a message with one byte changed in `region` may be refused at.
fn allowed(region: Region, signed: bool, flipped_suite_known: bool) -> &'static [Stage] {
    use Region::*;
    use Stage as S;
    match (region, signed) {
        (Version, _) => &[S::Header],
        (Suite, _) if flipped_suite_known => &[S::Signature],
        (Suite, _) => &[S::Header],
        // A length or count: the structure no longer holds, or (signed) the bytes it now
        // frames differ.
        (Structure, true) => &[S::Limit, S::Header, S::Body, S::Signature],
        (Structure, false) => &[S::Limit, S::Header, S::Body],
        (HeaderText, true) => &[S::Header, S::Signature],
        (HeaderText, false) => &[S::Header, S::HeaderTag],
        (ContentType, _) => &[S::Header],
        (FrameLength, true) => &[S::Limit, S::Header, S::Body, S::Signature],
        (FrameLength, false) => &[S::Limit, S::Header, S::Body, S::HeaderTag],
        (MessageId | HeaderBytes | Commitment | HeaderTag | FrameSealed | Signature, true) => {
            &[S::Signature]
        }
        (MessageId | Commitment, false) => &[S::Commitment],
        (HeaderBytes | HeaderTag, false) => &[S::HeaderTag],
        (FrameSealed, false) => &[S::Content],
        (FrameStructure, true) => &[S::Body, S::Signature],
        (FrameStructure, false) => &[S::Body],
        (FooterLength, _) => &[S::Body],
        (Signature, false) => unreachable!("no footer without a signature"),
    }
}

fn open(m: &[u8], key: &[u8]) -> Result<Vec<u8>, EsdkError> {
    let msg = Message::parse(m, &Limits::default())?;
    Ok(msg.decrypt(key)?.to_vec())
}

/// Flips each byte of `m` (a different bit per position, all eight over eight positions) and
/// checks it is refused at the step its region says.
fn every_flip_is_refused_where_it_breaks(name: &str, m: &[u8], key: &[u8]) {
    let regions = layout(m);
    let signed = m[1] == 0x05;
    let mut seen = std::collections::HashMap::new();
    for (i, region) in regions.iter().enumerate() {
        let mut bad = m.to_vec();
        bad[i] ^= 1 << (i % 8);
        let known_suite =
            i > 0 && i < 3 && Suite::from_id(u16::from_be_bytes([bad[1], bad[2]])).is_some();
        let err = match open(&bad, key) {
            Ok(_) => panic!("{name}: byte {i} ({region:?}) flipped and the message still opened"),
            Err(e) => e,
        };
        let ok = allowed(*region, signed, known_suite);
        assert!(
            ok.contains(&err.stage()),
            "{name}: byte {i} ({region:?}) refused at {:?} ({err}); expected one of {ok:?}",
            err.stage()
        );
        *seen.entry(err.stage()).or_insert(0) += 1;
    }
    // The message itself opens, so the refusals are the flips' doing.
    open(m, key).unwrap();
    let expected = if signed {
        vec![Stage::Header, Stage::Body, Stage::Signature]
    } else {
        vec![
            Stage::Header,
            Stage::Body,
            Stage::Commitment,
            Stage::HeaderTag,
            Stage::Content,
        ]
    };
    for s in expected {
        assert!(
            seen.contains_key(&s),
            "{name}: no flip refused at {s:?}: {seen:?}"
        );
    }
}

#[test]
fn every_flipped_byte_of_the_official_vectors_is_refused_where_it_breaks() {
    let Some(vectors) = vectors("every_flipped_byte_of_the_official_vectors") else {
        return;
    };
    for v in vectors.iter().filter(|v| v.good) {
        every_flip_is_refused_where_it_breaks(&v.name, &v.message, &v.data_key);
    }
}

fn context(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn bid_context(auction: &str, buyer: &str) -> BTreeMap<String, String> {
    context(&[("auction", auction), ("buyer", buyer)])
}

/// A message from our encoder with a random data key; returns it and the key.
fn ours(ctx: BTreeMap<String, String>, plaintext: &[u8], frame_length: u32) -> (Vec<u8>, [u8; 32]) {
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).unwrap();
    let enc = Encryptor::new(ctx).unwrap();
    let m = enc
        .encrypt(
            &key,
            b"encrypted data key from KMS",
            ARN,
            plaintext,
            frame_length,
        )
        .unwrap();
    (m, key)
}

#[test]
fn every_flipped_byte_of_our_messages_is_refused_where_it_breaks() {
    let csv = b"contract,bid\n1,100000\n2,250000.50\n3,99\n";
    for fl in [1, 7, 16, 4096] {
        let (m, key) = ours(bid_context("A-1", "buyer-1"), csv, fl);
        every_flip_is_refused_where_it_breaks(&format!("ours, frame length {fl}"), &m, &key);
    }
    let (m, key) = ours(BTreeMap::new(), b"", 4096);
    every_flip_is_refused_where_it_breaks("ours, empty", &m, &key);
    // Unsigned and single-block messages from the independent encoder.
    for single in [false, true] {
        let spec = Spec {
            suite: 0x0478,
            single_block: single,
            ..Spec::bid_file()
        };
        let (m, key) = build(&spec);
        every_flip_is_refused_where_it_breaks(&format!("0x0478, single {single}"), &m, &key);
    }
    let (m, key) = build(&Spec {
        single_block: true,
        ..Spec::bid_file()
    });
    every_flip_is_refused_where_it_breaks("0x0578 single block", &m, &key);
}

#[test]
fn every_truncation_and_any_trailing_byte_is_refused() {
    let mut messages = vec![
        ours(bid_context("A", "B"), b"contract,bid\n1,5\n", 4).0,
        ours(BTreeMap::new(), b"", 16).0,
        build(&Spec {
            suite: 0x0478,
            ..Spec::bid_file()
        })
        .0,
        build(&Spec {
            single_block: true,
            ..Spec::bid_file()
        })
        .0,
    ];
    if let Some(v) = vectors("every_truncation (official part)") {
        messages.extend(v.into_iter().map(|v| v.message));
    }
    for m in &messages {
        Message::parse(m, &Limits::default()).unwrap();
        for len in 0..m.len() {
            let err = Message::parse(&m[..len], &Limits::default()).unwrap_err();
            assert!(
                matches!(
                    err,
                    EsdkError::Truncated { .. }
                        | EsdkError::FrameTruncated { .. }
                        | EsdkError::FooterTruncated { .. }
                ),
                "prefix of {len} of {} bytes: {err}",
                m.len()
            );
        }
        let mut longer = m.clone();
        longer.push(0);
        assert_eq!(
            Message::parse(&longer, &Limits::default()).unwrap_err(),
            EsdkError::TrailingBytes {
                offset: m.len(),
                count: 1
            }
        );
    }
}

// ---------------------------------------------------------------------------------------
// The streaming decoder the enclave reads envelope files with: the same messages, the same
// plaintext, the same refusals, whatever the chunks.

/// Opens `m` with [`StreamDecoder`], fed in chunks of the given sizes (cycled): the plaintext
/// handed out, or the first error.
fn stream_open(m: &[u8], key: &[u8], chunks: &[usize]) -> Result<Vec<u8>, EsdkError> {
    let mut d = StreamDecoder::new(Limits::default());
    let mut out = Vec::new();
    let mut rest = m;
    let mut i = 0;
    while !rest.is_empty() {
        let n = chunks[i % chunks.len()].clamp(1, rest.len());
        let mut part = &rest[..n];
        rest = &rest[n..];
        i += 1;
        loop {
            match d.push(part, &mut |p| out.extend_from_slice(p))? {
                Pushed::All => break,
                Pushed::HeaderDone(taken) => {
                    d.open(key)?;
                    part = &part[taken..];
                }
            }
        }
    }
    d.finish()?;
    Ok(out)
}

const CHUNKINGS: [&[usize]; 5] = [&[usize::MAX], &[1], &[3, 7], &[64, 1, 5000], &[4096]];

#[test]
fn streaming_opens_what_the_whole_message_opens() {
    let mut cases: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    let csv = b"contract,bid\n1,100000\n2,250000.50\n3,99\n";
    for fl in [1, 7, 16, 4096] {
        let (m, key) = ours(bid_context("A-1", "buyer-1"), csv, fl);
        cases.push((format!("ours, frame length {fl}"), m, key.to_vec()));
    }
    let (m, key) = ours(BTreeMap::new(), b"", 4096);
    cases.push(("ours, empty".into(), m, key.to_vec()));
    let (m, key) = build(&Spec {
        suite: 0x0478,
        ..Spec::bid_file()
    });
    cases.push(("0x0478".into(), m, key.to_vec()));
    if let Some(v) = vectors("streaming_opens_what_the_whole_message_opens (official part)") {
        cases.extend(v.into_iter().map(|v| (v.name, v.message, v.data_key)));
    }
    let mut single = 0;
    for (name, m, key) in &cases {
        let whole = open(m, key);
        let framed = Message::parse(m, &Limits::default())
            .map(|msg| msg.content_type() == ContentType::Framed)
            .unwrap_or(true);
        for chunks in CHUNKINGS {
            let streamed = stream_open(m, key, chunks);
            match (&whole, &streamed) {
                (_, Err(EsdkError::SingleBlockNotStreamed)) => {
                    assert!(!framed, "{name}: a framed message refused as single-block");
                    single += 1;
                }
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{name}, chunks {chunks:?}"),
                (Err(a), Err(b)) => assert_eq!(a.stage(), b.stage(), "{name}: {a} / {b}"),
                (a, b) => panic!("{name}, chunks {chunks:?}: whole {a:?}, streamed {b:?}"),
            }
        }
    }
    assert!(
        single > 0,
        "the official vectors hold single-block messages"
    );
}

#[test]
fn streaming_refuses_every_flipped_byte_truncation_and_trailing_byte() {
    let csv = b"contract,bid\n1,100000\n2,250000.50\n3,99\n";
    let mut messages = vec![
        ours(bid_context("A-1", "buyer-1"), csv, 7),
        ours(bid_context("A", "B"), b"contract,bid\n1,5\n", 4),
        ours(BTreeMap::new(), b"", 16),
    ];
    let (m, k) = build(&Spec::bid_file());
    messages.push((m, k));
    for (m, key) in &messages {
        assert!(stream_open(m, key, &[usize::MAX]).is_ok());
        for i in 0..m.len() {
            let mut bad = m.clone();
            bad[i] ^= 1 << (i % 8);
            for chunks in [&[usize::MAX][..], &[5]] {
                let e = stream_open(&bad, key, chunks)
                    .expect_err(&format!("byte {i} flipped and the stream still opened"));
                // The whole-message decoder walks the body and checks the signature before it
                // takes the key; the stream checks the header tag first and each frame as it
                // comes. So a header problem is refused by both at the header; anything else
                // by the stream at whichever check it reaches first.
                let whole = open(&bad, key).unwrap_err();
                if matches!(whole.stage(), Stage::Header | Stage::Limit) {
                    assert!(
                        matches!(e.stage(), Stage::Header | Stage::Limit | Stage::Signature),
                        "byte {i}: whole {whole}, streamed {e}"
                    );
                }
            }
        }
        for len in 0..m.len() {
            assert!(
                stream_open(&m[..len], key, &[3]).is_err(),
                "prefix of {len}"
            );
        }
        let mut longer = m.clone();
        longer.push(0);
        assert!(matches!(
            stream_open(&longer, key, &[usize::MAX]),
            Err(EsdkError::TrailingBytes { .. })
        ));
    }
}

#[test]
fn each_limit_refuses_one_past_what_it_allows() {
    let spec = Spec {
        context: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
        data_keys: vec![
            ("aws-kms".into(), ARN.into(), b"k1".to_vec()),
            ("aws-kms".into(), ARN.into(), b"k2".to_vec()),
        ],
        frame_length: 10,
        plaintext: vec![b'x'; 35],
        ..Spec::bid_file()
    };
    let (m, key) = build(&spec);
    let exact = Limits {
        max_message_bytes: m.len(),
        max_frames: 4,
        max_context_pairs: 3,
        max_data_keys: 2,
        max_frame_length: 10,
    };
    let msg = Message::parse(&m, &exact).unwrap();
    assert_eq!(msg.frame_count(), 4);
    assert_eq!(&msg.decrypt(&key).unwrap()[..], &spec.plaintext[..]);
    type Expect = fn(&EsdkError) -> bool;
    let cases: [(Limits, Expect); 5] = [
        (
            Limits {
                max_message_bytes: m.len() - 1,
                ..exact
            },
            |e| matches!(e, EsdkError::MessageTooLarge { .. }),
        ),
        (
            Limits {
                max_frames: 3,
                ..exact
            },
            |e| {
                matches!(
                    e,
                    EsdkError::TooManyFrames {
                        frame: 4,
                        limit: 3,
                        ..
                    }
                )
            },
        ),
        (
            Limits {
                max_context_pairs: 2,
                ..exact
            },
            |e| {
                matches!(
                    e,
                    EsdkError::TooManyContextPairs {
                        count: 3,
                        limit: 2,
                        ..
                    }
                )
            },
        ),
        (
            Limits {
                max_data_keys: 1,
                ..exact
            },
            |e| {
                matches!(
                    e,
                    EsdkError::TooManyDataKeys {
                        count: 2,
                        limit: 1,
                        ..
                    }
                )
            },
        ),
        (
            Limits {
                max_frame_length: 9,
                ..exact
            },
            |e| {
                matches!(
                    e,
                    EsdkError::FrameLengthOverLimit {
                        found: 10,
                        limit: 9,
                        ..
                    }
                )
            },
        ),
    ];
    for (limits, expected) in cases {
        let err = Message::parse(&m, &limits).unwrap_err();
        assert!(expected(&err), "{limits:?}: {err}");
        assert_eq!(err.stage(), Stage::Limit);
    }
}

#[test]
fn structural_refusals_name_their_field() {
    // Each built by the independent encoder, which writes what it is told.
    let case = |spec: Spec| Message::parse(&build(&spec).0, &Limits::default()).unwrap_err();
    // Unsorted pairs are read (official JavaScript-SDK vectors put aws-crypto-public-key
    // last); the header tag and signature cover them as written.
    let unsorted = Spec {
        context: vec![("b".into(), "1".into()), ("a".into(), "2".into())],
        public_key: PublicKey::Last,
        ..Spec::bid_file()
    };
    let (m, key) = build(&unsorted);
    let msg = Message::parse(&m, &Limits::default()).unwrap();
    assert_eq!(msg.context().len(), 3);
    assert_eq!(msg.context()["b"], "1");
    assert_eq!(&msg.decrypt(&key).unwrap()[..], &unsorted.plaintext[..]);
    assert!(matches!(
        case(Spec {
            context: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            ..Spec::bid_file()
        }),
        EsdkError::DuplicateContextKey { pair: 2, .. }
    ));
    assert!(matches!(
        case(Spec {
            data_keys: vec![],
            ..Spec::bid_file()
        }),
        EsdkError::NoDataKeys { .. }
    ));
    assert_eq!(
        case(Spec {
            public_key: PublicKey::Omit,
            ..Spec::bid_file()
        }),
        EsdkError::MissingPublicKey
    );
    assert_eq!(
        case(Spec {
            suite: 0x0478,
            public_key: PublicKey::Add,
            ..Spec::bid_file()
        }),
        EsdkError::UnexpectedPublicKey
    );
    assert_eq!(
        case(Spec {
            public_key: PublicKey::Text("not base64!".into()),
            ..Spec::bid_file()
        }),
        EsdkError::InvalidPublicKey("base64")
    );
    assert!(matches!(
        case(Spec {
            public_key: PublicKey::Text(
                base64::engine::general_purpose::STANDARD.encode([4u8; 97])
            ),
            ..Spec::bid_file()
        }),
        EsdkError::InvalidPublicKey(_)
    ));
    // Signed by another key than the one in the context.
    assert!(matches!(
        case(Spec {
            sign_with_other_key: true,
            ..Spec::bid_file()
        }),
        EsdkError::SignatureInvalid { .. }
    ));
    // Hand edits of a good message.
    let (good, _) = build(&Spec::bid_file());
    let mut v1 = good.clone();
    v1[0] = 1;
    assert_eq!(
        Message::parse(&v1, &Limits::default()).unwrap_err(),
        EsdkError::UnsupportedVersion { found: 1 }
    );
    let mut suite = good.clone();
    suite[1..3].copy_from_slice(&[0x03, 0x78]);
    assert_eq!(
        Message::parse(&suite, &Limits::default()).unwrap_err(),
        EsdkError::UnsupportedSuite { found: 0x0378 }
    );
}

// ---------------------------------------------------------------------------------------
// The bid-file policy.

#[test]
fn bid_file_policy_accepts_exactly_the_registered_shape() {
    let csv = b"contract,bid\n1,100\n";
    let (m, key) = ours(bid_context("auction-7", "alice"), csv, 4096);
    let msg = Message::parse(&m, &Limits::default()).unwrap();
    check_bid_file(&msg, Mode::Unsealed, "auction-7", "alice", ARN).unwrap();
    assert_eq!(&msg.decrypt(&key).unwrap()[..], csv);

    let refuse_in = |rules: Mode, m: &[u8]| {
        let msg = Message::parse(m, &Limits::default()).unwrap();
        let err = check_bid_file(&msg, rules, "auction-7", "alice", ARN).unwrap_err();
        assert_eq!(err.stage(), Stage::Policy);
        err
    };
    let refuse = |m: &[u8]| refuse_in(Mode::Unsealed, m);

    // The sealed image takes exactly {auction, buyer, rules=sealed} (plus the signing key),
    // and the unsealed image refuses that very file: each rule set's files are its own.
    let mut sealed_context = bid_context("auction-7", "alice");
    sealed_context.insert("rules".into(), "sealed".into());
    let (sealed_file, sealed_key) = ours(sealed_context.clone(), csv, 4096);
    let msg = Message::parse(&sealed_file, &Limits::default()).unwrap();
    check_bid_file(&msg, Mode::Sealed, "auction-7", "alice", ARN).unwrap();
    assert_eq!(&msg.decrypt(&sealed_key).unwrap()[..], csv);
    let e = refuse_in(Mode::Unsealed, &sealed_file);
    assert!(
        matches!(e, EsdkError::BidFileExtraContextKey { ref key, rules: Mode::Unsealed } if key == "rules")
    );
    assert!(
        e.to_string()
            .contains("a file with rules=sealed is for the sealed image"),
        "{e}"
    );
    assert!(matches!(
        refuse_in(Mode::Sealed, &m),
        EsdkError::BidFileMissingContextKey { key: "rules" }
    ));
    let mut other_rules = sealed_context.clone();
    other_rules.insert("rules".into(), "unsealed".into());
    assert!(matches!(
        refuse_in(Mode::Sealed, &ours(other_rules, csv, 4096).0),
        EsdkError::BidFileRules { .. }
    ));
    let mut sealed_extra = sealed_context;
    sealed_extra.insert("lot".into(), "1".into());
    assert!(matches!(
        refuse_in(Mode::Sealed, &ours(sealed_extra, csv, 4096).0),
        EsdkError::BidFileExtraContextKey {
            rules: Mode::Sealed,
            ..
        }
    ));
    assert!(matches!(
        refuse(&ours(bid_context("auction-8", "alice"), csv, 4096).0),
        EsdkError::BidFileAuction { .. }
    ));
    assert!(matches!(
        refuse(&ours(bid_context("auction-7", "bob"), csv, 4096).0),
        EsdkError::BidFileBuyer { .. }
    ));
    assert!(matches!(
        refuse(&ours(context(&[("auction", "auction-7")]), csv, 4096).0),
        EsdkError::BidFileMissingContextKey { key: "buyer" }
    ));
    assert!(matches!(
        refuse(&ours(context(&[("buyer", "alice")]), csv, 4096).0),
        EsdkError::BidFileMissingContextKey { key: "auction" }
    ));
    let mut extra = bid_context("auction-7", "alice");
    extra.insert("lot".into(), "1".into());
    assert!(matches!(
        refuse(&ours(extra, csv, 4096).0),
        EsdkError::BidFileExtraContextKey { .. }
    ));
    let foreign = {
        let key = [9u8; 32];
        let enc = Encryptor::new(bid_context("auction-7", "alice")).unwrap();
        let other = "arn:aws:kms:us-east-1:444455556666:key/11111111-2222-3333-4444-555555555555";
        enc.encrypt(&key, b"edk", other, csv, 4096).unwrap()
    };
    assert!(matches!(refuse(&foreign), EsdkError::BidFileKeyArn { .. }));
    assert!(matches!(
        refuse(
            &build(&Spec {
                suite: 0x0478,
                public_key: PublicKey::Omit,
                ..Spec::bid_file()
            })
            .0
        ),
        EsdkError::BidFileSuite { found: 0x0478 }
    ));
    assert!(matches!(
        refuse(
            &build(&Spec {
                data_keys: vec![
                    ("aws-kms".into(), ARN.into(), b"k1".to_vec()),
                    ("aws-kms".into(), ARN.into(), b"k2".to_vec()),
                ],
                ..Spec::bid_file()
            })
            .0
        ),
        EsdkError::BidFileDataKeyCount { found: 2 }
    ));
    assert!(matches!(
        refuse(
            &build(&Spec {
                data_keys: vec![("raw-aes".into(), ARN.into(), b"k1".to_vec())],
                ..Spec::bid_file()
            })
            .0
        ),
        EsdkError::BidFileProvider { .. }
    ));
    // The independent encoder's bid file passes, so the refusals above are each one change.
    let (m, key) = build(&Spec::bid_file());
    let msg = Message::parse(&m, &Limits::default()).unwrap();
    check_bid_file(&msg, Mode::Unsealed, "auction-7", "alice", ARN).unwrap();
    assert_eq!(
        &msg.decrypt(&key).unwrap()[..],
        &Spec::bid_file().plaintext[..]
    );
}

#[test]
fn encoder_refuses_reserved_context_keys_and_zero_frames() {
    assert!(matches!(
        Encryptor::new(context(&[("aws-crypto-public-key", "x")])),
        Err(EsdkError::EncodeReservedContextKey { .. })
    ));
    let enc = Encryptor::new(BTreeMap::new()).unwrap();
    assert_eq!(
        enc.encrypt(&[0; 32], b"k", ARN, b"x", 0).unwrap_err(),
        EsdkError::EncodeFrameLength
    );
    let enc = Encryptor::new(BTreeMap::new()).unwrap();
    assert_eq!(
        enc.encrypt(&[0; 16], b"k", ARN, b"x", 1).unwrap_err(),
        EsdkError::DataKeyLength { len: 16 }
    );
}

#[test]
fn errors_and_debug_never_show_plaintext() {
    let secret = b"contract,bid\nL-1,987654321.99\n";
    let (m, key) = ours(bid_context("A", "B"), secret, 8);
    let msg = Message::parse(&m, &Limits::default()).unwrap();
    let p = msg.decrypt(&key).unwrap();
    assert_eq!(format!("{p:?}"), "Plaintext(<redacted>)");
    assert!(!format!("{msg:?}").contains("987654321"));
    let mut wrong = key;
    wrong[0] ^= 1;
    let e = msg.decrypt(&wrong).unwrap_err();
    assert!(!format!("{e} {e:?}").contains("987654321"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn encoder_round_trips(
        plaintext in prop::collection::vec(any::<u8>(), 0..3000),
        frame_length in prop_oneof![Just(1u32), 1u32..64, 64u32..5000],
        pairs in prop::collection::btree_map("[a-z][a-z0-9-]{0,10}", "\\PC{0,20}", 0..4),
    ) {
        let (m, key) = ours(pairs.clone(), &plaintext, frame_length);
        prop_assert!(esdk::is_message(&m));
        let msg = Message::parse(&m, &Limits::default()).unwrap();
        prop_assert_eq!(msg.suite(), Suite::AesGcmHkdfSha512CommitKeyEcdsaP384);
        prop_assert_eq!(msg.content_type(), ContentType::Framed);
        prop_assert_eq!(msg.frame_length(), frame_length);
        // Whole frames, then a final frame shorter than one (empty for a whole number).
        let frames = plaintext.len() / frame_length as usize + 1;
        prop_assert_eq!(msg.frame_count() as usize, frames);
        let mut expected = pairs;
        expected.insert(esdk::PUBLIC_KEY_CONTEXT_KEY.into(), msg.context()[esdk::PUBLIC_KEY_CONTEXT_KEY].clone());
        prop_assert_eq!(msg.context(), &expected);
        prop_assert_eq!(msg.data_keys().len(), 1);
        prop_assert_eq!(msg.data_keys()[0].provider_info_str(), Some(ARN));
        prop_assert_eq!(&msg.decrypt(&key).unwrap()[..], &plaintext[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), prefix in any::<bool>()) {
        let mut bytes = bytes;
        if prefix && bytes.len() >= 3 {
            bytes[..3].copy_from_slice(&[2, 5, 0x78]);
        }
        if let Ok(m) = Message::parse(&bytes, &Limits::default()) {
            let _ = m.decrypt(&[0; 32]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The independent encoder: writes exactly the fields it is given, in the order given.

#[derive(Clone)]
enum PublicKey {
    /// For suite 0x0578, add the signing key's compressed point (base64) under
    /// aws-crypto-public-key, sorted in.
    Auto,
    /// Add it whatever the suite.
    Add,
    /// Add it after the other pairs, unsorted (as some official vectors do).
    Last,
    Omit,
    Text(String),
}

#[derive(Clone)]
struct Spec {
    suite: u16,
    /// Written in this order (so unsorted or duplicate keys can be made).
    context: Vec<(String, String)>,
    public_key: PublicKey,
    data_keys: Vec<(String, String, Vec<u8>)>,
    single_block: bool,
    frame_length: u32,
    plaintext: Vec<u8>,
    sign_with_other_key: bool,
}

impl Spec {
    fn bid_file() -> Spec {
        Spec {
            suite: 0x0578,
            context: vec![
                ("auction".into(), "auction-7".into()),
                ("buyer".into(), "alice".into()),
            ],
            public_key: PublicKey::Auto,
            data_keys: vec![("aws-kms".into(), ARN.into(), b"encrypted".to_vec())],
            single_block: false,
            frame_length: 5,
            plaintext: b"contract,bid\n1,10\n2,20\n".to_vec(),
            sign_with_other_key: false,
        }
    }
}

struct L(usize);
impl KeyType for L {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    Salt::new(HKDF_SHA512, salt)
        .extract(ikm)
        .expand(&[info], L(32))
        .unwrap()
        .fill(&mut out)
        .unwrap();
    out
}

fn build(spec: &Spec) -> (Vec<u8>, [u8; 32]) {
    let signer = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING).unwrap();
    let other = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING).unwrap();
    let point: EcPublicKeyCompressedBin = signer.public_key().as_be_bytes().unwrap();
    let mut ctx = spec.context.clone();
    let point = base64::engine::general_purpose::STANDARD.encode(point.as_ref());
    match &spec.public_key {
        PublicKey::Auto if spec.suite != 0x0578 => {}
        PublicKey::Auto | PublicKey::Add => {
            ctx.push(("aws-crypto-public-key".into(), point));
            ctx.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        }
        PublicKey::Last => ctx.push(("aws-crypto-public-key".into(), point)),
        PublicKey::Omit => {}
        PublicKey::Text(t) => {
            ctx.push(("aws-crypto-public-key".into(), t.clone()));
            ctx.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        }
    }
    let mut data_key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut data_key).unwrap();
    let mut id = [0u8; 32];
    aws_lc_rs::rand::fill(&mut id).unwrap();
    let mut suite_info = spec.suite.to_be_bytes().to_vec();
    suite_info.extend_from_slice(b"DERIVEKEY");
    let content_key = hkdf(&id, &data_key, &suite_info);
    let commitment = hkdf(&id, &data_key, b"COMMITKEY");
    let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &content_key).unwrap());

    let u16b = |n: usize| (n as u16).to_be_bytes();
    let mut h = vec![2u8];
    h.extend_from_slice(&spec.suite.to_be_bytes());
    h.extend_from_slice(&id);
    if ctx.is_empty() {
        h.extend_from_slice(&[0, 0]);
    } else {
        let mut kv = u16b(ctx.len()).to_vec();
        for (k, v) in &ctx {
            kv.extend_from_slice(&u16b(k.len()));
            kv.extend_from_slice(k.as_bytes());
            kv.extend_from_slice(&u16b(v.len()));
            kv.extend_from_slice(v.as_bytes());
        }
        h.extend_from_slice(&u16b(kv.len()));
        h.extend_from_slice(&kv);
    }
    h.extend_from_slice(&u16b(spec.data_keys.len()));
    for (pid, info, edk) in &spec.data_keys {
        for f in [pid.as_bytes(), info.as_bytes(), &edk[..]] {
            h.extend_from_slice(&u16b(f.len()));
            h.extend_from_slice(f);
        }
    }
    h.push(if spec.single_block { 1 } else { 2 });
    let fl = if spec.single_block {
        0
    } else {
        spec.frame_length
    };
    h.extend_from_slice(&fl.to_be_bytes());
    h.extend_from_slice(&commitment);
    let tag = aead
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(&h[..]),
            &mut [],
        )
        .unwrap();
    h.extend_from_slice(tag.as_ref());

    let seal = |label: &str, seq: u32, chunk: &[u8]| {
        let mut iv = [0u8; 12];
        iv[8..].copy_from_slice(&seq.to_be_bytes());
        let mut aad = id.to_vec();
        aad.extend_from_slice(label.as_bytes());
        aad.extend_from_slice(&seq.to_be_bytes());
        aad.extend_from_slice(&(chunk.len() as u64).to_be_bytes());
        let mut ct = chunk.to_vec();
        let tag = aead
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), &mut ct)
            .unwrap();
        (iv, ct, tag)
    };
    if spec.single_block {
        let (iv, ct, tag) = seal("AWSKMSEncryptionClient Single Block", 1, &spec.plaintext);
        h.extend_from_slice(&iv);
        h.extend_from_slice(&(ct.len() as u64).to_be_bytes());
        h.extend_from_slice(&ct);
        h.extend_from_slice(tag.as_ref());
    } else {
        let chunks: Vec<&[u8]> = if spec.plaintext.is_empty() {
            vec![&[]]
        } else {
            spec.plaintext.chunks(fl as usize).collect()
        };
        for (i, chunk) in chunks.iter().enumerate() {
            let seq = i as u32 + 1;
            let last = i + 1 == chunks.len();
            let label = if last {
                "AWSKMSEncryptionClient Final Frame"
            } else {
                "AWSKMSEncryptionClient Frame"
            };
            let (iv, ct, tag) = seal(label, seq, chunk);
            if last {
                h.extend_from_slice(&[0xff; 4]);
            }
            h.extend_from_slice(&seq.to_be_bytes());
            h.extend_from_slice(&iv);
            if last {
                h.extend_from_slice(&(ct.len() as u32).to_be_bytes());
            }
            h.extend_from_slice(&ct);
            h.extend_from_slice(tag.as_ref());
        }
    }
    if spec.suite == 0x0578 {
        let by = if spec.sign_with_other_key {
            &other
        } else {
            &signer
        };
        let sig = by.sign(&SystemRandom::new(), &h).unwrap();
        h.extend_from_slice(&u16b(sig.as_ref().len()));
        h.extend_from_slice(sig.as_ref());
    }
    (h, data_key)
}
