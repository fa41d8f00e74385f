//! The NSM codec (`bidding_core::nsm`) against its reference peer, AWS's
//! `aws-nitro-enclaves-nsm-api` 0.5 with serde_cbor, which is what its /dev/nsm driver sends and
//! reads: every request encodes to the crate's bytes, every response the crate writes decodes to
//! the same value, whatever the codec accepts the crate reads the same way, and no input panics.

use aws_nitro_enclaves_nsm_api::api;
use bidding_core::nsm::{
    Digest, ErrorCode, MAX_RESPONSE_LEN, NsmDecodeError, Request, Response, decode_response,
    encode_request, encode_response,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_bytes::ByteBuf;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn their_request(r: &Request) -> api::Request {
    let buf = |b: &Option<Vec<u8>>| b.clone().map(ByteBuf::from);
    match r {
        Request::DescribePCR { index } => api::Request::DescribePCR { index: *index },
        Request::ExtendPCR { index, data } => api::Request::ExtendPCR {
            index: *index,
            data: data.clone(),
        },
        Request::LockPCR { index } => api::Request::LockPCR { index: *index },
        Request::LockPCRs { range } => api::Request::LockPCRs { range: *range },
        Request::DescribeNSM => api::Request::DescribeNSM,
        Request::Attestation {
            user_data,
            nonce,
            public_key,
        } => api::Request::Attestation {
            user_data: buf(user_data),
            nonce: buf(nonce),
            public_key: buf(public_key),
        },
        Request::GetRandom => api::Request::GetRandom,
    }
}

fn their_code(c: ErrorCode) -> api::ErrorCode {
    match c {
        ErrorCode::Success => api::ErrorCode::Success,
        ErrorCode::InvalidArgument => api::ErrorCode::InvalidArgument,
        ErrorCode::InvalidIndex => api::ErrorCode::InvalidIndex,
        ErrorCode::InvalidResponse => api::ErrorCode::InvalidResponse,
        ErrorCode::ReadOnlyIndex => api::ErrorCode::ReadOnlyIndex,
        ErrorCode::InvalidOperation => api::ErrorCode::InvalidOperation,
        ErrorCode::BufferTooSmall => api::ErrorCode::BufferTooSmall,
        ErrorCode::InputTooLarge => api::ErrorCode::InputTooLarge,
        ErrorCode::InternalError => api::ErrorCode::InternalError,
    }
}

fn our_code(c: &api::ErrorCode) -> ErrorCode {
    match c {
        api::ErrorCode::Success => ErrorCode::Success,
        api::ErrorCode::InvalidArgument => ErrorCode::InvalidArgument,
        api::ErrorCode::InvalidIndex => ErrorCode::InvalidIndex,
        api::ErrorCode::InvalidResponse => ErrorCode::InvalidResponse,
        api::ErrorCode::ReadOnlyIndex => ErrorCode::ReadOnlyIndex,
        api::ErrorCode::InvalidOperation => ErrorCode::InvalidOperation,
        api::ErrorCode::BufferTooSmall => ErrorCode::BufferTooSmall,
        api::ErrorCode::InputTooLarge => ErrorCode::InputTooLarge,
        api::ErrorCode::InternalError => ErrorCode::InternalError,
    }
}

fn their_digest(d: Digest) -> api::Digest {
    match d {
        Digest::Sha256 => api::Digest::SHA256,
        Digest::Sha384 => api::Digest::SHA384,
        Digest::Sha512 => api::Digest::SHA512,
    }
}

fn their_response(r: &Response) -> api::Response {
    match r.clone() {
        Response::DescribePCR { lock, data } => api::Response::DescribePCR { lock, data },
        Response::ExtendPCR { data } => api::Response::ExtendPCR { data },
        Response::LockPCR => api::Response::LockPCR,
        Response::LockPCRs => api::Response::LockPCRs,
        Response::DescribeNSM {
            version_major,
            version_minor,
            version_patch,
            module_id,
            max_pcrs,
            locked_pcrs,
            digest,
        } => api::Response::DescribeNSM {
            version_major,
            version_minor,
            version_patch,
            module_id,
            max_pcrs,
            locked_pcrs,
            digest: their_digest(digest),
        },
        Response::Attestation { document } => api::Response::Attestation { document },
        Response::GetRandom { random } => api::Response::GetRandom { random },
        Response::Error(c) => api::Response::Error(their_code(c)),
    }
}

/// The crate's response as ours (its types have no `PartialEq`).
fn our_response(r: api::Response) -> Response {
    match r {
        api::Response::DescribePCR { lock, data } => Response::DescribePCR { lock, data },
        api::Response::ExtendPCR { data } => Response::ExtendPCR { data },
        api::Response::LockPCR => Response::LockPCR,
        api::Response::LockPCRs => Response::LockPCRs,
        api::Response::DescribeNSM {
            version_major,
            version_minor,
            version_patch,
            module_id,
            max_pcrs,
            locked_pcrs,
            digest,
        } => Response::DescribeNSM {
            version_major,
            version_minor,
            version_patch,
            module_id,
            max_pcrs,
            locked_pcrs,
            digest: match digest {
                api::Digest::SHA256 => Digest::Sha256,
                api::Digest::SHA384 => Digest::Sha384,
                api::Digest::SHA512 => Digest::Sha512,
            },
        },
        api::Response::Attestation { document } => Response::Attestation { document },
        api::Response::GetRandom { random } => Response::GetRandom { random },
        api::Response::Error(c) => Response::Error(our_code(&c)),
        other => panic!("a response type newer than this test: {other:?}"),
    }
}

fn theirs_encoded(r: &Response) -> Vec<u8> {
    serde_cbor::to_vec(&their_response(r)).expect("serde_cbor writes every response")
}

/// What the crate's driver makes of `bytes`, or `None` where it would answer InternalError.
fn theirs_decoded(bytes: &[u8]) -> Option<Response> {
    serde_cbor::from_slice::<api::Response>(bytes)
        .ok()
        .map(our_response)
}

/// The requests enclave-init makes (`nsm::attest` from the session and the Recipient key,
/// `nsm::get_random` for entropy) and the rest of the API, which the software NSM answers.
fn project_requests() -> Vec<Request> {
    let spki = vec![0x30; 294];
    vec![
        Request::Attestation {
            user_data: Some(b"SBH1 and 64 bytes of digests".to_vec()),
            nonce: Some(vec![7; 32]),
            public_key: Some(spki.clone()),
        },
        Request::Attestation {
            user_data: None,
            nonce: None,
            public_key: Some(spki),
        },
        Request::Attestation {
            user_data: None,
            nonce: None,
            public_key: None,
        },
        Request::GetRandom,
        Request::DescribeNSM,
        Request::DescribePCR { index: 0 },
        Request::DescribePCR { index: 65535 },
        Request::ExtendPCR {
            index: 16,
            data: b"x".to_vec(),
        },
        Request::ExtendPCR {
            index: 300,
            data: vec![],
        },
        Request::LockPCR { index: 16 },
        Request::LockPCRs { range: 32 },
    ]
}

#[test]
fn the_projects_requests_are_the_crates_bytes() {
    for r in project_requests() {
        let theirs = serde_cbor::to_vec(&their_request(&r)).unwrap();
        assert_eq!(encode_request(&r), theirs, "{r:?}");
    }
    // The shape by hand, once, so a change on both sides cannot go unnoticed.
    assert_eq!(encode_request(&Request::GetRandom), b"\x69GetRandom");
    let mut want = b"\xa1\x6bAttestation\xa3\x69user_data\xf6\x65nonce\x41\x07".to_vec();
    want.extend_from_slice(b"\x6apublic_key\xf6");
    assert_eq!(
        encode_request(&Request::Attestation {
            user_data: None,
            nonce: Some(vec![7]),
            public_key: None
        }),
        want
    );
}

#[test]
fn every_error_code_and_digest_decodes() {
    for c in ErrorCode::ALL {
        let r = Response::Error(c);
        let bytes = theirs_encoded(&r);
        assert_eq!(decode_response(&bytes), Ok(r.clone()), "{c:?}");
        assert_eq!(encode_response(&r), bytes);
        assert_eq!(format!("{:?}", their_code(c)), c.name());
    }
    for d in Digest::ALL {
        assert_eq!(format!("{:?}", their_digest(d)), d.name());
    }
}

fn fixture(name: &str) -> Option<Vec<u8>> {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/attestation"
    ))
    .join(name);
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) => {
            println!("skipping the real document: {}: {e}", path.display());
            None
        }
    }
}

/// A real attestation document, in the Attestation response the crate writes around it.
#[test]
fn a_real_document_comes_through_whole() {
    let Some(document) = fixture("evervault-valid-2022-10-13.cbor") else {
        return;
    };
    let r = Response::Attestation {
        document: document.clone(),
    };
    let bytes = theirs_encoded(&r);
    assert!(bytes.len() <= MAX_RESPONSE_LEN);
    let Ok(Response::Attestation { document: got }) = decode_response(&bytes) else {
        panic!("the real document's response does not decode");
    };
    assert_eq!(got, document);
    bidding_core::attestation::parse(&got).expect("the document still parses");
}

/// What QEMU 10's virtio-nsm writes (hw/virtio/virtio-nsm.c, through libcbor): DescribeNSM's
/// fields in its own order, a bare `LockPCR`, DescribePCR with `data` before `lock`.
#[test]
fn qemus_virtio_nsm_responses_decode() {
    let mut describe = b"\xa1\x6bDescribeNSM\xa7\x66digest\x66SHA384\x68max_pcrs\x18\x20".to_vec();
    describe.extend_from_slice(b"\x69module_id\x6ei-1234-enc5678\x6blocked_pcrs\x83\x00\x01\x02");
    describe.extend_from_slice(b"\x6dversion_major\x01\x6dversion_minor\x00\x6dversion_patch\x00");
    let want = Response::DescribeNSM {
        version_major: 1,
        version_minor: 0,
        version_patch: 0,
        module_id: "i-1234-enc5678".into(),
        max_pcrs: 32,
        locked_pcrs: BTreeSet::from([0, 1, 2]),
        digest: Digest::Sha384,
    };
    let mut pcr = b"\xa1\x6bDescribePCR\xa2\x64data\x58\x30".to_vec();
    pcr.extend_from_slice(&[9; 48]);
    pcr.extend_from_slice(b"\x64lock\xf5");
    for (bytes, want) in [
        (describe, want),
        (b"\x67LockPCR".to_vec(), Response::LockPCR),
        (b"\x68LockPCRs".to_vec(), Response::LockPCRs),
        (
            pcr,
            Response::DescribePCR {
                lock: true,
                data: vec![9; 48],
            },
        ),
        (
            b"\xa1\x65Error\x6cInvalidIndex".to_vec(),
            Response::Error(ErrorCode::InvalidIndex),
        ),
    ] {
        assert_eq!(decode_response(&bytes).as_ref(), Ok(&want));
        assert_eq!(theirs_decoded(&bytes).as_ref(), Some(&want));
    }
}

/// Forms the crate reads and so do we: wide heads, unknown fields (tagged, nested, negative),
/// repeated locked PCRs.
#[test]
fn tolerated_forms_read_as_the_crate_reads_them() {
    let cases: [&[u8]; 5] = [
        b"\xa1\x69GetRandom\xa1\x66random\x5a\0\0\0\x02\x01\x02",
        b"\xa1\x69GetRandom\xa2\x61x\xc2\x41\x01\x66random\x41\x01",
        b"\xa1\x69GetRandom\xa2\x61x\xa1\x61y\x82\x20\xf9\0\0\x66random\x40",
        b"\xa1\x69GetRandom\xa2\x66random\x40\x63new\x3b\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\xa1\x69GetRandom\xa2\x61x\xf7\x66random\x40",
    ];
    for bytes in cases {
        let ours = decode_response(bytes);
        assert!(ours.is_ok(), "{bytes:02x?}: {ours:?}");
        assert_eq!(ours.ok(), theirs_decoded(bytes), "{bytes:02x?}");
    }
    let mut nsm = b"\xa1\x6bDescribeNSM\xa7\x6dversion_major\x19\x00\x01".to_vec();
    nsm.extend_from_slice(b"\x6dversion_minor\x1b\0\0\0\0\0\0\0\x02\x6dversion_patch\x00");
    nsm.extend_from_slice(b"\x69module_id\x61m\x68max_pcrs\x1a\0\0\0\x20");
    nsm.extend_from_slice(b"\x6blocked_pcrs\x84\x03\x01\x03\x19\x00\x01\x66digest\x66SHA512");
    let want = Response::DescribeNSM {
        version_major: 1,
        version_minor: 2,
        version_patch: 0,
        module_id: "m".into(),
        max_pcrs: 32,
        locked_pcrs: BTreeSet::from([1, 3]),
        digest: Digest::Sha512,
    };
    assert_eq!(decode_response(&nsm).as_ref(), Ok(&want));
    assert_eq!(theirs_decoded(&nsm).as_ref(), Some(&want));
}

/// Forms serde_cbor reads that no NSM writes: refused on purpose (see the module doc).
#[test]
fn forms_only_serde_cbor_reads_are_refused() {
    let cases: [(&str, &[u8]); 12] = [
        ("indefinite map", b"\xa1\x69GetRandom\xbf\x66random\x40\xff"),
        (
            "indefinite bytes",
            b"\xa1\x69GetRandom\xa1\x66random\x5f\x41\x01\x41\x02\xff",
        ),
        (
            "tag on a value",
            b"\xa1\x69GetRandom\xa1\x66random\xc2\x41\x01",
        ),
        ("packed variant and field", b"\xa1\x05\xa1\x00\x41\x01"),
        ("packed bare variant", b"\x02"),
        (
            "legacy array enum",
            b"\x82\x6bAttestation\xa1\x68document\x41\x01",
        ),
        ("fields as an array", b"\xa1\x6bAttestation\x81\x41\x01"),
        ("bytes as text", b"\xa1\x69GetRandom\xa1\x66random\x61a"),
        (
            "bytes as an array",
            b"\xa1\x69GetRandom\xa1\x66random\x82\x01\x02",
        ),
        ("bare variant as a map to null", b"\xa1\x67LockPCR\xf6"),
        (
            "field name as bytes",
            b"\xa1\x69GetRandom\xa1\x46random\x40",
        ),
        ("error code as bytes", b"\xa1\x65Error\x4cInvalidIndex"),
    ];
    for (what, bytes) in cases {
        assert!(
            theirs_decoded(bytes).is_some(),
            "{what}: the crate reads it"
        );
        assert!(decode_response(bytes).is_err(), "{what}: we refuse it");
    }
}

/// Forms both refuse.
#[test]
fn forms_the_crate_refuses_are_refused() {
    let cases: [&[u8]; 9] = [
        b"\xb9\0\x01\x65Error\x6dInternalError",
        b"\xa1\x69GetRandom\xa2\x66random\x40\x66random\x40",
        b"\xa1\x6bDescribePCR\xa2\x64lock\x01\x64data\x40",
        b"\xa1\x69GetRandom\xa2\x61x\xf8\x10\x66random\x40",
        b"\xa1\x69GetRandom\xa2\x61x\x61\xff\x66random\x40",
        b"\xa2\x69GetRandom\xa1\x66random\x40\x61x\x01",
        b"\xa1\x67LockPCR\x80",
        b"\x6bAttestation",
        b"\xa1\x69GetRandom\xa1\x66random\x40\x00",
    ];
    for bytes in cases {
        assert!(theirs_decoded(bytes).is_none(), "{bytes:02x?}");
        assert!(decode_response(bytes).is_err(), "{bytes:02x?}");
    }
    assert!(matches!(
        decode_response(&theirs_encoded(&Response::GetRandom {
            random: vec![0; MAX_RESPONSE_LEN]
        })),
        Err(NsmDecodeError::TooLarge { .. })
    ));
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn arb_request() -> impl Strategy<Value = Request> {
    let opt = || prop::option::of(bytes(1100));
    prop_oneof![
        any::<u16>().prop_map(|index| Request::DescribePCR { index }),
        (any::<u16>(), bytes(4200)).prop_map(|(index, data)| Request::ExtendPCR { index, data }),
        any::<u16>().prop_map(|index| Request::LockPCR { index }),
        any::<u16>().prop_map(|range| Request::LockPCRs { range }),
        Just(Request::DescribeNSM),
        (opt(), opt(), opt()).prop_map(|(user_data, nonce, public_key)| {
            Request::Attestation {
                user_data,
                nonce,
                public_key,
            }
        }),
        Just(Request::GetRandom),
    ]
}

fn arb_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (any::<bool>(), bytes(100)).prop_map(|(lock, data)| Response::DescribePCR { lock, data }),
        bytes(100).prop_map(|data| Response::ExtendPCR { data }),
        Just(Response::LockPCR),
        Just(Response::LockPCRs),
        (
            any::<[u16; 4]>(),
            ".{0,40}",
            prop::collection::btree_set(any::<u16>(), 0..40),
            prop::sample::select(Digest::ALL.to_vec()),
        )
            .prop_map(
                |([major, minor, patch, max], module_id, locked_pcrs, digest)| {
                    Response::DescribeNSM {
                        version_major: major,
                        version_minor: minor,
                        version_patch: patch,
                        module_id,
                        max_pcrs: max,
                        locked_pcrs,
                        digest,
                    }
                }
            ),
        bytes(12_000).prop_map(|document| Response::Attestation { document }),
        bytes(600).prop_map(|random| Response::GetRandom { random }),
        prop::sample::select(ErrorCode::ALL.to_vec()).prop_map(Response::Error),
    ]
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Whatever we accept, the crate reads as the same value; what we accept re-encodes to bytes
/// we read the same way. Bytes the crate writes itself (its canonical form) we must accept.
fn agrees_with_the_crate(bytes: &[u8]) {
    let ours = decode_response(bytes);
    let theirs = theirs_decoded(bytes);
    if let Ok(r) = &ours {
        assert_eq!(theirs.as_ref(), Some(r), "{bytes:02x?}");
        assert_eq!(decode_response(&encode_response(r)).as_ref(), Ok(r));
    }
    if let Some(t) = &theirs
        && bytes.len() <= MAX_RESPONSE_LEN
        && theirs_encoded(t) == bytes
    {
        assert_eq!(ours.as_ref(), Ok(t), "{bytes:02x?}");
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn requests_encode_as_the_crate_writes_them(r in arb_request()) {
        prop_assert_eq!(encode_request(&r), serde_cbor::to_vec(&their_request(&r)).unwrap());
    }

    #[test]
    fn responses_the_crate_writes_decode_to_the_same_value(r in arb_response()) {
        let bytes = theirs_encoded(&r);
        prop_assume!(bytes.len() <= MAX_RESPONSE_LEN);
        prop_assert_eq!(decode_response(&bytes), Ok(r.clone()));
        prop_assert_eq!(encode_response(&r), bytes);
    }
}

proptest! {
    #![proptest_config(config(5000))]

    #[test]
    fn arbitrary_bytes_never_panic_and_agree(b in bytes(200)) {
        agrees_with_the_crate(&b);
    }
}

/// Edits of real responses (overwrite, insert or cut bytes) get far into the decoder.
#[test]
fn edited_responses_never_panic_and_agree() {
    let edit = (any::<prop::sample::Index>(), any::<u8>(), 0u8..3);
    let strategy = (arb_response(), prop::collection::vec(edit, 1..6));
    let mut runner = TestRunner::new(config(5000));
    runner
        .run(&strategy, |(r, edits)| {
            let mut b = encode_response(&r);
            for (at, byte, how) in edits {
                match how {
                    0 if !b.is_empty() => {
                        let i = at.index(b.len());
                        b[i] = byte;
                    }
                    1 => b.insert(at.index(b.len() + 1), byte),
                    _ => b.truncate(at.index(b.len() + 1)),
                }
            }
            agrees_with_the_crate(&b);
            Ok(())
        })
        .unwrap();
}

/// The `nsm_response` fuzz target's seeds are responses that both sides read alike.
#[test]
fn the_fuzz_seeds_decode() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/nsm_response");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("fuzz/seeds/nsm_response") {
        let path = entry.unwrap().path();
        let b = std::fs::read(&path).unwrap();
        assert!(decode_response(&b).is_ok(), "{}", path.display());
        agrees_with_the_crate(&b);
        seen += 1;
    }
    assert!(seen >= 10);
}
