//! `parse_qemu_unsigned`: documents from QEMU's emulated NSM (nitro-enclave machine), which
//! signs nothing, decode for tests; they never pass `parse`/`verify`, and real (ES384)
//! documents never pass `parse_qemu_unsigned`.

use bidding_core::attestation::{
    AttestationError, DocumentFields, VerifyAt, VerifyOptions, encode_document, parse,
    parse_qemu_unsigned, verify,
};
use ciborium::value::Value;
use std::convert::Infallible;

fn fields() -> DocumentFields {
    DocumentFields {
        module_id: "i-234-enc1".into(),
        timestamp: 1_764_590_000_000,
        pcrs: (0..16u8).map(|i| (i, vec![i; 48])).collect(),
        certificate: vec![0; 64],
        cabundle: vec![vec![0; 64]],
        public_key: Some(vec![0x30; 294]),
        user_data: Some(b"SBH1".to_vec()),
        nonce: Some(vec![7; 32]),
    }
}

/// A document as QEMU 10.0's virtio-nsm writes it: `[h'A10120', {}, payload, h'00'*64]`.
fn qemu_envelope(
    payload: Vec<u8>,
    protected: Vec<u8>,
    unprotected: Value,
    sig: Vec<u8>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let doc = Value::Array(vec![
        Value::Bytes(protected),
        unprotected,
        Value::Bytes(payload),
        Value::Bytes(sig),
    ]);
    ciborium::ser::into_writer(&doc, &mut out).unwrap();
    out
}

/// The payload of an ES384 document that encode_document made from `fields()`.
fn payload_and_signed() -> (Vec<u8>, Vec<u8>) {
    let signed = encode_document(&fields(), |_| Ok::<_, Infallible>([0x5a; 96])).unwrap();
    let Value::Array(items) = ciborium::de::from_reader::<Value, _>(signed.as_slice()).unwrap()
    else {
        panic!("not an array")
    };
    let Value::Bytes(payload) = items[2].clone() else {
        panic!("no payload")
    };
    (payload, signed)
}

#[test]
fn qemus_unsigned_document_decodes_with_its_fields() {
    let (payload, _) = payload_and_signed();
    let doc = qemu_envelope(
        payload,
        vec![0xa1, 0x01, 0x20],
        Value::Map(vec![]),
        vec![0; 64],
    );
    assert_eq!(parse_qemu_unsigned(&doc).unwrap(), fields());
}

#[test]
fn qemus_unsigned_document_is_refused_by_parse_and_verify() {
    let (payload, _) = payload_and_signed();
    let doc = qemu_envelope(
        payload,
        vec![0xa1, 0x01, 0x20],
        Value::Map(vec![]),
        vec![0; 64],
    );
    let parsed = parse(&doc).unwrap_err();
    assert!(
        matches!(
            parsed,
            AttestationError::Cose {
                part: "protected header",
                ..
            }
        ),
        "{parsed}"
    );
    let verified = verify(&doc, &VerifyOptions::aws(VerifyAt::Document)).unwrap_err();
    assert_eq!(verified, parsed);
}

#[test]
fn anything_but_qemus_envelope_is_refused() {
    let (payload, signed) = payload_and_signed();
    let refused = |doc: Vec<u8>, part: &str| {
        let e = parse_qemu_unsigned(&doc).unwrap_err();
        assert!(
            matches!(&e, AttestationError::Cose { part: p, .. } if *p == part),
            "expected a {part} error, got {e}"
        );
    };
    // A real NSM's document (ES384 header, 96-byte signature).
    refused(signed, "protected header");
    // ES384 header with QEMU's zero signature; another alg; an extra header parameter.
    let p = payload.clone();
    refused(
        qemu_envelope(
            p.clone(),
            vec![0xa1, 0x01, 0x38, 0x22],
            Value::Map(vec![]),
            vec![0; 64],
        ),
        "protected header",
    );
    refused(
        qemu_envelope(
            p.clone(),
            vec![0xa1, 0x01, 0x21],
            Value::Map(vec![]),
            vec![0; 64],
        ),
        "protected header",
    );
    refused(
        qemu_envelope(
            p.clone(),
            vec![0xa2, 0x01, 0x20, 0x04, 0x40],
            Value::Map(vec![]),
            vec![0; 64],
        ),
        "protected header",
    );
    // Something in the unprotected header.
    let kid = Value::Map(vec![(Value::Integer(4.into()), Value::Bytes(vec![1]))]);
    refused(
        qemu_envelope(p.clone(), vec![0xa1, 0x01, 0x20], kid, vec![0; 64]),
        "unprotected header",
    );
    // Any signature but 64 zero bytes.
    let mut one = vec![0; 64];
    one[63] = 1;
    refused(
        qemu_envelope(p.clone(), vec![0xa1, 0x01, 0x20], Value::Map(vec![]), one),
        "signature",
    );
    refused(
        qemu_envelope(
            p.clone(),
            vec![0xa1, 0x01, 0x20],
            Value::Map(vec![]),
            vec![0; 96],
        ),
        "signature",
    );
    // The payload is decoded as strictly as a real one's.
    let mut junk = p;
    junk.push(0);
    refused(
        qemu_envelope(
            junk,
            vec![0xa1, 0x01, 0x20],
            Value::Map(vec![]),
            vec![0; 64],
        ),
        "payload",
    );
}
