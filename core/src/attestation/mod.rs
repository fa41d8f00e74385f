//! AWS Nitro Enclaves attestation documents: parse, verify, build.
//!
//! A document is a COSE_Sign1 (ES384) whose payload names the enclave (PCRs), carries caller
//! data (`public_key`, `user_data`, `nonce`) and a certificate chain from the AWS Nitro root to
//! the key that signed it. [`verify`] trusts a document only after checking the root by its
//! bytes, every link of the chain, every validity window at a caller-chosen instant and the
//! signature; until then its fields are claims by whoever handed it over.

mod build;
#[cfg(feature = "verify")]
mod chain;
mod cose;
mod document;
mod root;

pub use build::{EncodeError, encode_document};
pub use cose::{PROTECTED_ES384, SIGNATURE_LEN, sig_structure};
pub use document::{
    DIGEST, DocumentFields, MAX_CABUNDLE, MAX_CERT_LEN, MAX_NONCE_LEN, MAX_PCR_INDEX,
    MAX_PUBLIC_KEY_LEN, MAX_USER_DATA_LEN, SUMMARY_PCRS,
};
pub use root::AWS_NITRO_ROOT_G1_DER;

#[cfg(feature = "verify")]
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
use std::fmt;
#[cfg(feature = "verify")]
use std::ops::Deref;

/// Refused before decoding. Real documents are under 5 KiB; every field at its limit makes
/// under 14 KiB.
pub const MAX_DOCUMENT_LEN: usize = 16 * 1024;

/// Which certificate of a document an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertPosition {
    /// `cabundle[i]`; 0 is the root.
    Bundle(usize),
    /// The leaf `certificate`.
    Leaf,
}

impl fmt::Display for CertPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertPosition::Bundle(i) => write!(f, "cabundle[{i}]"),
            CertPosition::Leaf => f.write_str("certificate"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    #[error("attestation document is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("attestation document: {part} {problem}")]
    Cose { part: &'static str, problem: String },
    #[error("attestation field {field} {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
    #[error("attestation payload has an unknown field {0}")]
    UnknownField(String),
    #[error("attestation cabundle[0] is not the trusted root certificate")]
    RootMismatch,
    #[error("attestation {cert} cannot be parsed: {problem}")]
    CertificateParse { cert: CertPosition, problem: String },
    #[error("attestation {cert} cannot be used: {problem}")]
    CertificateUnsupported { cert: CertPosition, problem: String },
    #[error("attestation {cert} is not issued by {issuer}: the names differ")]
    IssuerMismatch {
        cert: CertPosition,
        issuer: CertPosition,
    },
    #[error("attestation {issuer} may not issue {cert}: {reason}")]
    NotCa {
        cert: CertPosition,
        issuer: CertPosition,
        reason: String,
    },
    #[error("attestation {cert}: signature by {issuer} does not verify")]
    ChainSignature {
        cert: CertPosition,
        issuer: CertPosition,
    },
    #[error(
        "attestation {cert} is not valid before {}, checked at {}",
        utc(*.not_before),
        utc_ms(*.at_ms)
    )]
    NotYetValid {
        cert: CertPosition,
        /// Unix seconds.
        not_before: u64,
        at_ms: u64,
    },
    #[error(
        "attestation {cert} expired at {}, checked at {}",
        utc(*.not_after),
        utc_ms(*.at_ms)
    )]
    Expired {
        cert: CertPosition,
        /// Unix seconds.
        not_after: u64,
        at_ms: u64,
    },
    #[error("attestation COSE signature does not verify with the leaf certificate's key")]
    CoseSignature,
}

/// A document that decoded; nothing in it is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationDocument {
    fields: DocumentFields,
    protected: Vec<u8>,
    payload: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
}

impl AttestationDocument {
    /// The claimed content, for display (`bidctl attestation inspect`); trust it only through
    /// [`verify`].
    pub fn fields(&self) -> &DocumentFields {
        &self.fields
    }

    pub fn into_fields(self) -> DocumentFields {
        self.fields
    }

    /// The payload byte string as received (what the signature covers).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }
}

/// Decodes a COSE_Sign1 attestation document (tagged with 18 or not) without verifying it.
pub fn parse(doc: &[u8]) -> Result<AttestationDocument, AttestationError> {
    if doc.len() > MAX_DOCUMENT_LEN {
        return Err(AttestationError::TooLarge {
            size: doc.len(),
            limit: MAX_DOCUMENT_LEN,
        });
    }
    let sign1 = cose::parse_sign1(doc)?;
    let fields = document::parse_payload(&sign1.payload)?;
    Ok(AttestationDocument {
        fields,
        protected: sign1.protected,
        payload: sign1.payload,
        signature: sign1.signature,
    })
}

/// What QEMU's emulated NSM (its `nitro-enclave` machine) writes where a real NSM puts the
/// ES384 header: `{1: -1}`, an `alg` that names no algorithm, because it signs nothing.
const QEMU_UNSIGNED_ALG: i128 = -1;
/// QEMU's stand-in signature: 64 zero bytes.
const QEMU_UNSIGNED_SIGNATURE_LEN: usize = 64;

/// Decodes an attestation document from QEMU's emulated NSM, for tests of a real enclave image
/// under QEMU's `nitro-enclave` machine. Such a document is not signed and cannot be verified:
/// its envelope must be exactly QEMU's (protected header `{1: -1}`, empty unprotected header,
/// a signature of 64 zero bytes) and its payload is decoded as strictly as [`parse`] decodes a
/// real one. A document signed by a real NSM is refused here, and this one is refused by
/// [`parse`] and [`verify`]: nothing but a test that knows it talks to QEMU can call this.
pub fn parse_qemu_unsigned(doc: &[u8]) -> Result<DocumentFields, AttestationError> {
    use ciborium::value::Value;
    if doc.len() > MAX_DOCUMENT_LEN {
        return Err(AttestationError::TooLarge {
            size: doc.len(),
            limit: MAX_DOCUMENT_LEN,
        });
    }
    let qemu = |part: &'static str, problem: &str| AttestationError::Cose {
        part,
        problem: format!("{problem} (not QEMU's unsigned document)"),
    };
    let value = cose::decode_one(doc).map_err(|p| qemu("COSE_Sign1", &p))?;
    let Value::Array(items) = value else {
        return Err(qemu("COSE_Sign1", "is not an array"));
    };
    let Ok([protected, unprotected, payload, signature]) = <[Value; 4]>::try_from(items) else {
        return Err(qemu("COSE_Sign1", "is not an array of 4 items"));
    };
    let Value::Bytes(protected) = protected else {
        return Err(qemu("protected header", "is not a byte string"));
    };
    let header = cose::decode_one(&protected).map_err(|p| qemu("protected header", &p))?;
    let alg_is_qemus = matches!(&header, Value::Map(e) if matches!(e.as_slice(),
        [(Value::Integer(k), Value::Integer(v))]
            if i128::from(*k) == 1 && i128::from(*v) == QEMU_UNSIGNED_ALG));
    if !alg_is_qemus {
        return Err(qemu("protected header", "is not {1: -1}"));
    }
    if !matches!(&unprotected, Value::Map(m) if m.is_empty()) {
        return Err(qemu("unprotected header", "is not an empty map"));
    }
    let Value::Bytes(payload) = payload else {
        return Err(qemu("payload", "is not a byte string"));
    };
    match signature {
        Value::Bytes(s) if s.len() == QEMU_UNSIGNED_SIGNATURE_LEN && s.iter().all(|&b| b == 0) => {}
        _ => return Err(qemu("signature", "is not 64 zero bytes")),
    }
    document::parse_payload(&payload)
}

#[cfg(feature = "verify")]
/// The instant at which every certificate must be valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyAt {
    /// The document's own `timestamp`: proves it was genuine when made, however old it is.
    Document,
    /// Unix time in milliseconds, normally the caller's "now".
    UnixMillis(u64),
}

#[cfg(feature = "verify")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions<'a> {
    /// DER of the trust anchor, which must equal `cabundle[0]` byte for byte.
    pub root_der: &'a [u8],
    pub at: VerifyAt,
}

#[cfg(feature = "verify")]
impl VerifyOptions<'static> {
    /// Trusting the AWS Nitro root, the only root of real enclaves.
    pub fn aws(at: VerifyAt) -> Self {
        VerifyOptions {
            root_der: &AWS_NITRO_ROOT_G1_DER,
            at,
        }
    }
}

#[cfg(feature = "verify")]
/// A document whose chain and signature verified. Derefs to its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDocument {
    fields: DocumentFields,
    verified_at_ms: u64,
}

#[cfg(feature = "verify")]
impl VerifiedDocument {
    pub fn fields(&self) -> &DocumentFields {
        &self.fields
    }

    pub fn into_fields(self) -> DocumentFields {
        self.fields
    }

    /// The instant (Unix ms) at which the certificates were found valid.
    pub fn verified_at_ms(&self) -> u64 {
        self.verified_at_ms
    }
}

#[cfg(feature = "verify")]
impl Deref for VerifiedDocument {
    type Target = DocumentFields;

    fn deref(&self) -> &DocumentFields {
        &self.fields
    }
}

#[cfg(feature = "verify")]
/// Parses `doc` and verifies, in this order: root, chain links, validity of every certificate
/// at `opts.at`, COSE signature by the leaf key. The first failure is returned.
pub fn verify(doc: &[u8], opts: &VerifyOptions) -> Result<VerifiedDocument, AttestationError> {
    let parsed = parse(doc)?;
    let at_ms = match opts.at {
        VerifyAt::Document => parsed.fields.timestamp,
        VerifyAt::UnixMillis(ms) => ms,
    };
    let leaf_key = chain::verify_chain(opts.root_der, &parsed.fields, at_ms)?;
    let signed = sig_structure(&parsed.protected, &parsed.payload);
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &leaf_key)
        .verify(&signed, &parsed.signature)
        .map_err(|_| AttestationError::CoseSignature)?;
    Ok(VerifiedDocument {
        fields: parsed.fields,
        verified_at_ms: at_ms,
    })
}

/// `2022-10-13T08:57:59Z`, for messages (proleptic Gregorian calendar, years up to 9999).
fn utc(secs: u64) -> String {
    // Days since 1970-01-01 to a civil date (H. Hinnant's `civil_from_days`), era-based so
    // that no leap-year rule is missed.
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    if year > 9999 {
        return format!("{secs} s after the epoch");
    }
    let (h, m, s) = (rem / 3_600, rem / 60 % 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

/// `2022-10-13T08:58:02.136Z`, for messages.
fn utc_ms(ms: u64) -> String {
    let s = utc(ms / 1000);
    match s.strip_suffix('Z') {
        Some(base) => format!("{base}.{:03}Z", ms % 1000),
        None => format!("{ms} ms after the epoch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_messages_are_readable() {
        assert_eq!(utc_ms(1_665_651_482_136), "2022-10-13T08:58:02.136Z");
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        // Past der's year 9999 bound: still a message, not a panic.
        assert_eq!(utc_ms(u64::MAX), format!("{} ms after the epoch", u64::MAX));
        // Leap days and century rules (checked against `date -u -d @N`).
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(utc(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(utc(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(utc(253_402_300_800), "253402300800 s after the epoch");
    }
}
