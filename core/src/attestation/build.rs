//! Writing attestation documents, for the software NSM and the KMS emulator: byte for byte the
//! shape the real NSM produces, so that both sides of every test exercise the real format.

use super::cose::{self, MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, PROTECTED_ES384, SIGNATURE_LEN};
use super::document::{self, DocumentFields};
use super::{AttestationError, MAX_DOCUMENT_LEN};

#[derive(Debug, thiserror::Error)]
pub enum EncodeError<E> {
    #[error("attestation document not written: {0}")]
    Invalid(AttestationError),
    #[error("signing the attestation document failed: {0}")]
    Sign(E),
}

/// Encodes `fields` as an untagged COSE_Sign1 with the NSM's key order and null optionals.
/// `sign` receives the Sig_structure bytes and returns the ES384 signature r||s
/// (aws-lc-rs `ECDSA_P384_SHA384_FIXED_SIGNING` produces exactly that).
///
/// Fields that `parse` would refuse are refused here, before `sign` is called.
pub fn encode_document<E>(
    fields: &DocumentFields,
    sign: impl FnOnce(&[u8]) -> Result<[u8; SIGNATURE_LEN], E>,
) -> Result<Vec<u8>, EncodeError<E>> {
    let payload = document::encode_payload(fields);
    // One set of rules: whatever we write must be what the parser accepts.
    document::parse_payload(&payload).map_err(EncodeError::Invalid)?;

    let mut doc = Vec::with_capacity(payload.len() + 16 + SIGNATURE_LEN);
    cose::head(&mut doc, MAJOR_ARRAY, 4);
    cose::bytes(&mut doc, &PROTECTED_ES384);
    cose::head(&mut doc, MAJOR_MAP, 0);
    cose::bytes(&mut doc, &payload);
    cose::head(&mut doc, MAJOR_BYTES, SIGNATURE_LEN as u64);
    let size = doc.len() + SIGNATURE_LEN;
    if size > MAX_DOCUMENT_LEN {
        return Err(EncodeError::Invalid(AttestationError::TooLarge {
            size,
            limit: MAX_DOCUMENT_LEN,
        }));
    }

    let signature =
        sign(&cose::sig_structure(&PROTECTED_ES384, &payload)).map_err(EncodeError::Sign)?;
    doc.extend_from_slice(&signature);
    Ok(doc)
}
