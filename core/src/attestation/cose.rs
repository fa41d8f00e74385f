//! The COSE_Sign1 envelope (RFC 9052 §4.2) as the NSM writes it. The CBOR heads it emits come
//! from `crate::cbor`, which the NSM messages share.

use super::AttestationError;
pub(super) use crate::cbor::{
    MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_UINT, NULL, bytes, head, text,
};
use ciborium::value::Value;

/// The protected header the NSM writes: `{1: -35}` (alg: ES384), as the bstr's content.
pub const PROTECTED_ES384: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];
/// ES384 signatures are r||s, each 48 bytes.
pub const SIGNATURE_LEN: usize = 96;
/// CBOR tag for COSE_Sign1; the NSM omits it but RFC 9052 allows it.
const TAG_COSE_SIGN1: u64 = 18;
/// COSE_Algorithm ES384.
const ALG_ES384: i128 = -35;
/// Our items nest three deep at most; a small limit keeps hostile nesting off the stack.
const RECURSION_LIMIT: usize = 16;

/// The parts of a COSE_Sign1 that the signature covers, plus the signature.
pub(super) struct Sign1 {
    pub protected: Vec<u8>,
    pub payload: Vec<u8>,
    pub signature: [u8; SIGNATURE_LEN],
}

/// Decodes exactly one CBOR item that must fill `bytes`.
pub(super) fn decode_one(bytes: &[u8]) -> Result<Value, String> {
    let mut rest = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut rest, RECURSION_LIMIT)
        .map_err(|e| describe_cbor_error(&e, bytes.len()))?;
    if !rest.is_empty() {
        let n = rest.len();
        return Err(format!(
            "has {n} {} after its end",
            if n == 1 { "byte" } else { "bytes" }
        ));
    }
    Ok(value)
}

/// A plain sentence for a CBOR decoding error (the decoder's own `Display` shows Rust debug
/// output such as `Io(Error { kind: UnexpectedEof, .. })`). Reading from memory, the only I/O
/// error is running out of bytes.
fn describe_cbor_error<E>(e: &ciborium::de::Error<E>, len: usize) -> String {
    use ciborium::de::Error;
    match e {
        Error::Io(_) => {
            format!("ends early: the {len} bytes stop in the middle of an item (a truncated file?)")
        }
        Error::Syntax(at) => format!("is not valid CBOR (byte {at} of {len})"),
        Error::Semantic(Some(at), what) => {
            format!("is not valid CBOR (byte {at} of {len}: {what})")
        }
        Error::Semantic(None, what) => format!("is not valid CBOR ({what})"),
        Error::RecursionLimitExceeded => {
            format!(
                "nests more than {RECURSION_LIMIT} levels deep, far deeper than any attestation document"
            )
        }
    }
}

pub(super) fn parse_sign1(doc: &[u8]) -> Result<Sign1, AttestationError> {
    let value = decode_one(doc).map_err(|problem| cose("COSE_Sign1", problem))?;
    let value = match value {
        Value::Tag(TAG_COSE_SIGN1, inner) => *inner,
        Value::Tag(tag, _) => return Err(cose("tag", format!("is {tag}, expected 18 or none"))),
        other => other,
    };
    let Value::Array(items) = value else {
        return Err(cose("COSE_Sign1", "is not an array".into()));
    };
    let Ok([protected, unprotected, payload, signature]) = <[Value; 4]>::try_from(items) else {
        return Err(cose("COSE_Sign1", "is not an array of 4 items".into()));
    };

    let Value::Bytes(protected) = protected else {
        return Err(cose("protected header", "is not a byte string".into()));
    };
    check_protected(&protected)?;
    if !matches!(unprotected, Value::Map(_)) {
        return Err(cose("unprotected header", "is not a map".into()));
    }
    let Value::Bytes(payload) = payload else {
        return Err(cose("payload", "is not a byte string".into()));
    };
    let Value::Bytes(signature) = signature else {
        return Err(cose("signature", "is not a byte string".into()));
    };
    let len = signature.len();
    let signature = <[u8; SIGNATURE_LEN]>::try_from(signature)
        .map_err(|_| cose("signature", format!("is {len} bytes, expected 96")))?;
    Ok(Sign1 {
        protected,
        payload,
        signature,
    })
}

/// The header must say ES384 and nothing else: the verifier acts on no other parameter, so
/// any other would be unverified data riding along under the signature.
fn check_protected(bytes: &[u8]) -> Result<(), AttestationError> {
    let value = decode_one(bytes).map_err(|p| cose("protected header", p))?;
    let ok = match &value {
        Value::Map(entries) => match entries.as_slice() {
            [(Value::Integer(k), Value::Integer(v))] => {
                i128::from(*k) == 1 && i128::from(*v) == ALG_ES384
            }
            _ => false,
        },
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(cose(
            "protected header",
            "is not exactly {1: -35} (ES384)".into(),
        ))
    }
}

fn cose(part: &'static str, problem: String) -> AttestationError {
    AttestationError::Cose { part, problem }
}

/// The bytes an ES384 COSE_Sign1 signature covers: `["Signature1", protected, h'', payload]`
/// (RFC 9052 §4.4), with `protected` and `payload` the contents of their byte strings.
pub fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(protected.len() + payload.len() + 32);
    head(&mut out, MAJOR_ARRAY, 4);
    text(&mut out, "Signature1");
    bytes(&mut out, protected);
    bytes(&mut out, b"");
    bytes(&mut out, payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sig_structure_matches_rfc_shape() {
        let s = sig_structure(&PROTECTED_ES384, b"hi");
        let mut want = vec![0x84, 0x6a];
        want.extend_from_slice(b"Signature1");
        want.extend_from_slice(&[0x44, 0xa1, 0x01, 0x38, 0x22, 0x40, 0x42, b'h', b'i']);
        assert_eq!(s, want);
    }

    #[test]
    fn cbor_errors_are_sentences() {
        // A truncated array, garbage, hostile nesting, trailing bytes.
        let cases: [(&[u8], &str); 4] = [
            (
                &[0x84, 0x40],
                "ends early: the 2 bytes stop in the middle of an item",
            ),
            (&[0xff], "is not valid CBOR"),
            (&[0x81; 40], "nests more than 16 levels deep"),
            (&[0x40, 0x00], "has 1 byte after its end"),
        ];
        for (bytes, want) in cases {
            let e = decode_one(bytes).unwrap_err();
            assert!(e.starts_with(want), "{bytes:02x?}: {e}");
            assert!(!e.contains("Io(") && !e.contains("kind:"), "{e}");
        }
        let e = parse_sign1(&[0x84, 0x40]).err().unwrap().to_string();
        assert!(
            e.starts_with("attestation document: COSE_Sign1 ends early"),
            "{e}"
        );
    }

    #[test]
    fn protected_header_must_be_exactly_es384() {
        assert!(check_protected(&PROTECTED_ES384).is_ok());
        // ES256, an extra parameter, an empty map, trailing bytes, not a map.
        for bad in [
            &[0xa1, 0x01, 0x26][..],
            &[0xa2, 0x01, 0x38, 0x22, 0x04, 0x40],
            &[0xa0],
            &[0xa1, 0x01, 0x38, 0x22, 0x00],
            &[0x80],
            &[],
        ] {
            assert!(check_protected(bad).is_err(), "{bad:02x?}");
        }
    }
}
