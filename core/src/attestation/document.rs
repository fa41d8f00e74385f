//! The attestation payload: a CBOR map of nine fields (AWS NSM API, "Attestation document
//! specification"). Decoding is strict: a wrong type, size, unknown or repeated key is an error
//! naming the field, because every consumer acts on these values.

use super::AttestationError;
use super::cose::{self, MAJOR_ARRAY, MAJOR_MAP, MAJOR_UINT, NULL};
use ciborium::value::Value;
use std::collections::BTreeMap;

pub const DIGEST: &str = "SHA384";
pub const MAX_PCR_INDEX: u8 = 31;
pub const MAX_CERT_LEN: usize = 1024;
/// Real bundles hold the root and three intermediates; eight leaves room for a deeper AWS
/// hierarchy while keeping chain work bounded.
pub const MAX_CABUNDLE: usize = 8;
pub const MAX_PUBLIC_KEY_LEN: usize = 1024;
pub const MAX_USER_DATA_LEN: usize = 512;
pub const MAX_NONCE_LEN: usize = 512;
/// The PCRs a summary shows: image (0), kernel (1), application (2), IAM role (3), instance (4)
/// and signing certificate (8). The others are unused by Nitro and always zero.
pub const SUMMARY_PCRS: [u8; 6] = [0, 1, 2, 3, 4, 8];

/// The content of an attestation document, as decoded or as to be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentFields {
    pub module_id: String,
    /// Milliseconds since the Unix epoch, from the NSM's clock.
    pub timestamp: u64,
    /// Index → measurement. Encoded in ascending index order.
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// DER of the leaf certificate whose key signed the document.
    pub certificate: Vec<u8>,
    /// DER certificates, root first, each issuing the next; the last issues `certificate`.
    pub cabundle: Vec<Vec<u8>>,
    pub public_key: Option<Vec<u8>>,
    pub user_data: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
}

impl DocumentFields {
    pub fn pcr(&self, index: u8) -> Option<&[u8]> {
        self.pcrs.get(&index).map(Vec::as_slice)
    }

    /// A debug-mode enclave (started with `--debug-mode`) reports PCR0 as zeros: its memory
    /// is readable from the parent, so its measurements vouch for nothing.
    pub fn debug_mode(&self) -> bool {
        self.pcr(0).is_some_and(|p| p.iter().all(|&b| b == 0))
    }

    /// Whether PCR0 is `expected`. Never true for a debug-mode document, so an all-zero
    /// expectation cannot admit any debug enclave.
    pub fn pcr0_matches(&self, expected: &[u8]) -> bool {
        !self.debug_mode() && self.pcr(0) == Some(expected)
    }

    pub fn module_id(&self) -> &str {
        &self.module_id
    }

    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    pub fn public_key(&self) -> Option<&[u8]> {
        self.public_key.as_deref()
    }

    pub fn user_data(&self) -> Option<&[u8]> {
        self.user_data.as_deref()
    }

    pub fn nonce(&self) -> Option<&[u8]> {
        self.nonce.as_deref()
    }

    /// What `bidctl attestation inspect/verify` prints: identity, time, the meaningful PCRs and
    /// the caller-chosen fields, bytes as lowercase hex.
    pub fn summary_json(&self) -> serde_json::Value {
        let pcrs: serde_json::Map<String, serde_json::Value> = SUMMARY_PCRS
            .iter()
            .filter_map(|&i| Some((i.to_string(), hex::encode(self.pcr(i)?).into())))
            .collect();
        let opt = |b: Option<&[u8]>| b.map(hex::encode);
        serde_json::json!({
            "module_id": self.module_id,
            "timestamp": self.timestamp,
            "digest": DIGEST,
            "pcrs": pcrs,
            "public_key": opt(self.public_key()),
            "user_data": opt(self.user_data()),
            "nonce": opt(self.nonce()),
            "debug_mode": self.debug_mode(),
        })
    }
}

/// Decodes the payload byte string of a COSE_Sign1.
pub(super) fn parse_payload(payload: &[u8]) -> Result<DocumentFields, AttestationError> {
    let value = cose::decode_one(payload).map_err(|problem| AttestationError::Cose {
        part: "payload",
        problem,
    })?;
    let Value::Map(entries) = value else {
        return Err(AttestationError::Cose {
            part: "payload",
            problem: "is not a map".into(),
        });
    };

    let mut seen = Seen::default();
    for (key, value) in entries {
        let Value::Text(key) = key else {
            return Err(AttestationError::Cose {
                part: "payload",
                problem: "has a key that is not text".into(),
            });
        };
        let Some(field) = Field::from_key(&key) else {
            return Err(AttestationError::UnknownField(printable(&key)));
        };
        seen.take(field, value)?;
    }
    seen.finish()
}

#[derive(Clone, Copy)]
enum Field {
    ModuleId,
    Digest,
    Timestamp,
    Pcrs,
    Certificate,
    Cabundle,
    PublicKey,
    UserData,
    Nonce,
}

impl Field {
    fn from_key(key: &str) -> Option<Field> {
        Some(match key {
            "module_id" => Field::ModuleId,
            "digest" => Field::Digest,
            "timestamp" => Field::Timestamp,
            "pcrs" => Field::Pcrs,
            "certificate" => Field::Certificate,
            "cabundle" => Field::Cabundle,
            "public_key" => Field::PublicKey,
            "user_data" => Field::UserData,
            "nonce" => Field::Nonce,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Field::ModuleId => "module_id",
            Field::Digest => "digest",
            Field::Timestamp => "timestamp",
            Field::Pcrs => "pcrs",
            Field::Certificate => "certificate",
            Field::Cabundle => "cabundle",
            Field::PublicKey => "public_key",
            Field::UserData => "user_data",
            Field::Nonce => "nonce",
        }
    }
}

/// Fields seen so far; an optional one seen as null is `Some(None)`.
#[derive(Default)]
struct Seen {
    module_id: Option<String>,
    digest: Option<()>,
    timestamp: Option<u64>,
    pcrs: Option<BTreeMap<u8, Vec<u8>>>,
    certificate: Option<Vec<u8>>,
    cabundle: Option<Vec<Vec<u8>>>,
    public_key: Option<Option<Vec<u8>>>,
    user_data: Option<Option<Vec<u8>>>,
    nonce: Option<Option<Vec<u8>>>,
}

impl Seen {
    fn take(&mut self, field: Field, value: Value) -> Result<(), AttestationError> {
        let name = field.name();
        let dup = || bad(name, "appears more than once");
        match field {
            Field::ModuleId => {
                let Value::Text(s) = value else {
                    return Err(bad(name, "is not text"));
                };
                if s.is_empty() {
                    return Err(bad(name, "is empty"));
                }
                put(&mut self.module_id, s).ok_or_else(dup)
            }
            Field::Digest => {
                match value {
                    Value::Text(s) if s == DIGEST => {}
                    Value::Text(s) => {
                        return Err(bad(name, format!("is {}, expected SHA384", printable(&s))));
                    }
                    _ => return Err(bad(name, "is not text")),
                }
                put(&mut self.digest, ()).ok_or_else(dup)
            }
            Field::Timestamp => {
                let t = match value {
                    Value::Integer(i) => u64::try_from(i).ok(),
                    _ => None,
                }
                .ok_or_else(|| bad(name, "is not an unsigned integer"))?;
                put(&mut self.timestamp, t).ok_or_else(dup)
            }
            Field::Pcrs => put(&mut self.pcrs, pcrs(value)?).ok_or_else(dup),
            Field::Certificate => {
                let c = bytes_within(name, value, 1, MAX_CERT_LEN)?;
                put(&mut self.certificate, c).ok_or_else(dup)
            }
            Field::Cabundle => put(&mut self.cabundle, cabundle(value)?).ok_or_else(dup),
            Field::PublicKey => {
                let v = optional(name, value, MAX_PUBLIC_KEY_LEN)?;
                put(&mut self.public_key, v).ok_or_else(dup)
            }
            Field::UserData => {
                let v = optional(name, value, MAX_USER_DATA_LEN)?;
                put(&mut self.user_data, v).ok_or_else(dup)
            }
            Field::Nonce => {
                let v = optional(name, value, MAX_NONCE_LEN)?;
                put(&mut self.nonce, v).ok_or_else(dup)
            }
        }
    }

    fn finish(self) -> Result<DocumentFields, AttestationError> {
        let missing = |f: Field| bad(f.name(), "is missing");
        self.digest.ok_or_else(|| missing(Field::Digest))?;
        Ok(DocumentFields {
            module_id: self.module_id.ok_or_else(|| missing(Field::ModuleId))?,
            timestamp: self.timestamp.ok_or_else(|| missing(Field::Timestamp))?,
            pcrs: self.pcrs.ok_or_else(|| missing(Field::Pcrs))?,
            certificate: self
                .certificate
                .ok_or_else(|| missing(Field::Certificate))?,
            cabundle: self.cabundle.ok_or_else(|| missing(Field::Cabundle))?,
            public_key: self.public_key.flatten(),
            user_data: self.user_data.flatten(),
            nonce: self.nonce.flatten(),
        })
    }
}

/// Stores `v` in an empty slot; `None` when the slot was already filled.
fn put<T>(slot: &mut Option<T>, v: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(v);
    Some(())
}

fn pcrs(value: Value) -> Result<BTreeMap<u8, Vec<u8>>, AttestationError> {
    let Value::Map(entries) = value else {
        return Err(bad("pcrs", "is not a map"));
    };
    if entries.is_empty() || entries.len() > usize::from(MAX_PCR_INDEX) + 1 {
        return Err(bad(
            "pcrs",
            format!("has {} entries, expected 1 to 32", entries.len()),
        ));
    }
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        let index = match k {
            Value::Integer(i) => u8::try_from(i).ok().filter(|&i| i <= MAX_PCR_INDEX),
            _ => None,
        }
        .ok_or_else(|| bad("pcrs", "has a key that is not an index 0 to 31"))?;
        let Value::Bytes(m) = v else {
            return Err(bad("pcrs", format!("PCR{index} is not a byte string")));
        };
        if ![32, 48, 64].contains(&m.len()) {
            return Err(bad(
                "pcrs",
                format!("PCR{index} is {} bytes, expected 32, 48 or 64", m.len()),
            ));
        }
        if out.insert(index, m).is_some() {
            return Err(bad("pcrs", format!("PCR{index} appears more than once")));
        }
    }
    Ok(out)
}

fn cabundle(value: Value) -> Result<Vec<Vec<u8>>, AttestationError> {
    let Value::Array(items) = value else {
        return Err(bad("cabundle", "is not an array"));
    };
    if items.is_empty() || items.len() > MAX_CABUNDLE {
        return Err(bad(
            "cabundle",
            format!(
                "has {} certificates, expected 1 to {MAX_CABUNDLE}",
                items.len()
            ),
        ));
    }
    items
        .into_iter()
        .map(|item| bytes_within("cabundle", item, 1, MAX_CERT_LEN))
        .collect()
}

fn bytes_within(
    name: &'static str,
    value: Value,
    min: usize,
    max: usize,
) -> Result<Vec<u8>, AttestationError> {
    let Value::Bytes(b) = value else {
        return Err(bad(name, "is not a byte string"));
    };
    if !(min..=max).contains(&b.len()) {
        return Err(bad(
            name,
            format!("is {} bytes, expected {min} to {max}", b.len()),
        ));
    }
    Ok(b)
}

fn optional(
    name: &'static str,
    value: Value,
    max: usize,
) -> Result<Option<Vec<u8>>, AttestationError> {
    match value {
        Value::Null => Ok(None),
        other => bytes_within(name, other, 0, max).map(Some).map_err(|_| {
            bad(
                name,
                format!("is not null or a byte string of at most {max} bytes"),
            )
        }),
    }
}

fn bad(field: &'static str, problem: impl Into<String>) -> AttestationError {
    AttestationError::Field {
        field,
        problem: problem.into(),
    }
}

/// Input text quoted and cut short, so an error message stays one readable line.
fn printable(s: &str) -> String {
    const MAX: usize = 40;
    let cut: String = s.chars().take(MAX).collect();
    let ellipsis = if cut.len() < s.len() { "…" } else { "" };
    format!("{cut:?}{ellipsis}")
}

/// The payload map, keys in the NSM's order, absent optionals as null.
pub(super) fn encode_payload(f: &DocumentFields) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        256 + f.certificate.len() + f.cabundle.iter().map(Vec::len).sum::<usize>(),
    );
    cose::head(&mut out, MAJOR_MAP, 9);
    cose::text(&mut out, "module_id");
    cose::text(&mut out, &f.module_id);
    cose::text(&mut out, "digest");
    cose::text(&mut out, DIGEST);
    cose::text(&mut out, "timestamp");
    cose::head(&mut out, MAJOR_UINT, f.timestamp);
    cose::text(&mut out, "pcrs");
    cose::head(&mut out, MAJOR_MAP, f.pcrs.len() as u64);
    for (&i, m) in &f.pcrs {
        cose::head(&mut out, MAJOR_UINT, u64::from(i));
        cose::bytes(&mut out, m);
    }
    cose::text(&mut out, "certificate");
    cose::bytes(&mut out, &f.certificate);
    cose::text(&mut out, "cabundle");
    cose::head(&mut out, MAJOR_ARRAY, f.cabundle.len() as u64);
    for c in &f.cabundle {
        cose::bytes(&mut out, c);
    }
    for (key, v) in [
        ("public_key", &f.public_key),
        ("user_data", &f.user_data),
        ("nonce", &f.nonce),
    ] {
        cose::text(&mut out, key);
        match v {
            Some(b) => cose::bytes(&mut out, b),
            None => out.push(NULL),
        }
    }
    out
}
