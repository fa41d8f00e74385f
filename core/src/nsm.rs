//! The Nitro Secure Module's messages: requests written and responses read in the CBOR that the
//! NSM speaks through `/dev/nsm`. The ioctl that carries them is enclave-init's (`nsm.rs`).
//!
//! The wire format is the serde shape of `aws-nitro-enclaves-nsm-api` 0.5 (its `api::Request`
//! and `api::Response`) as serde_cbor writes it, which is what AWS's NSM and QEMU's virtio-nsm
//! speak:
//! - a variant with fields is a one-entry map from its name to a map of its fields by name:
//!   `{"DescribePCR": {"index": 3}}`; `Error` maps to its code's name:
//!   `{"Error": "InvalidIndex"}`;
//! - a variant without fields is its bare name: `"GetRandom"`, `"LockPCR"`;
//! - bytes are byte strings, an absent optional field is `null`, integers take their shortest
//!   head, `locked_pcrs` is an array in ascending order, and `Attestation`'s request fields come
//!   in the order `user_data`, `nonce`, `public_key`.
//!
//! Why by hand and not with serde over a CBOR crate: this is the smallest correct codec. The
//! release enclave links no CBOR decoder once serde_cbor is gone (bidding-core's ciborium is
//! reached only by parsing attestation documents, which the enclave never does), so a
//! serde-derived codec would bring ciborium's deserializer and serde's generated visitors for
//! seven types into PCR0. Two fixed shapes need a head reader and a few hundred lines.
//!
//! Reading is tolerant where a real peer may differ and strict where leniency buys nothing:
//! - accepted, as the crate accepts them: fields in any order; fields it does not know, skipped
//!   (nested at most [`MAX_SKIP_DEPTH`] deep, tags allowed there); integers and lengths in
//!   wider heads than needed (CBOR allows them, and fixed-width encoders such as libcbor's
//!   `cbor_build_uint16` write them); repeated entries in `locked_pcrs`, merged as the crate's
//!   `BTreeSet` merges them;
//! - refused, though serde_cbor would take them: indefinite lengths, tags on the values read,
//!   serde_cbor's packed form (numbered variants and fields), its legacy array form of enums,
//!   fields given as an array, names given as byte strings, bytes given as text or as an array
//!   of integers, and a field-less variant written as a map to `null`. No NSM writes these, and
//!   each would be code in PCR0 for nothing;
//! - refused, as the crate refuses them: unknown response types, error codes and digests,
//!   missing or repeated fields, integers out of range, invalid UTF-8 (in skipped fields too),
//!   unassigned simple values, a wide head on the response's own map, trailing bytes.
//!
//! Each refusal is an [`NsmDecodeError`] naming the byte and what was wrong there. A response
//! over [`MAX_RESPONSE_LEN`] (the driver's buffer) is refused unread; nothing is allocated
//! beyond the input's size, and every loop consumes input, so hostile bytes cost time linear
//! in their length. Tests: this module's (one per refusal), `core/tests/nsm.rs` (byte for byte
//! against the crate, property tests, arbitrary bytes), and the `nsm_response` fuzz target.

use crate::cbor::{
    self, FALSE, MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_NEGATIVE, MAJOR_SIMPLE, MAJOR_TAG,
    MAJOR_TEXT, MAJOR_UINT, NULL, TRUE,
};
use std::collections::BTreeSet;

/// The driver's request buffer (`NSM_REQUEST_MAX_SIZE`): a longer request cannot be sent.
pub const MAX_REQUEST_LEN: usize = 0x1000;
/// The driver's response buffer (`NSM_RESPONSE_MAX_SIZE`): no response is longer.
pub const MAX_RESPONSE_LEN: usize = 0x3000;
/// How deep a field this module does not know may nest before it is refused. NSM fields nest
/// two levels at most; the bound keeps hostile nesting off the stack.
pub const MAX_SKIP_DEPTH: usize = 16;

/// What the enclave can ask the NSM (the crate's `api::Request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The value of PCR `index` and whether it is locked.
    DescribePCR { index: u16 },
    /// Extends PCR `index` with `data`.
    ExtendPCR { index: u16, data: Vec<u8> },
    /// Locks PCR `index` against further extension.
    LockPCR { index: u16 },
    /// Locks PCRs `0..range`.
    LockPCRs { range: u16 },
    /// The module's version, id, PCR count and locked PCRs.
    DescribeNSM,
    /// A signed attestation document carrying the given fields.
    Attestation {
        user_data: Option<Vec<u8>>,
        nonce: Option<Vec<u8>>,
        public_key: Option<Vec<u8>>,
    },
    /// Random bytes from the module.
    GetRandom,
}

/// What the NSM answers (the crate's `api::Response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    DescribePCR {
        lock: bool,
        data: Vec<u8>,
    },
    /// The PCR's new value.
    ExtendPCR {
        data: Vec<u8>,
    },
    LockPCR,
    LockPCRs,
    DescribeNSM {
        version_major: u16,
        version_minor: u16,
        version_patch: u16,
        module_id: String,
        max_pcrs: u16,
        locked_pcrs: BTreeSet<u16>,
        digest: Digest,
    },
    /// A COSE_Sign1 attestation document (`crate::attestation` parses it).
    Attestation {
        document: Vec<u8>,
    },
    GetRandom {
        random: Vec<u8>,
    },
    /// The module refused the request.
    Error(ErrorCode),
}

/// Why the NSM refused a request (the crate's `api::ErrorCode`; on the wire, the name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Success,
    InvalidArgument,
    InvalidIndex,
    InvalidResponse,
    ReadOnlyIndex,
    InvalidOperation,
    BufferTooSmall,
    InputTooLarge,
    InternalError,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::Success,
        ErrorCode::InvalidArgument,
        ErrorCode::InvalidIndex,
        ErrorCode::InvalidResponse,
        ErrorCode::ReadOnlyIndex,
        ErrorCode::InvalidOperation,
        ErrorCode::BufferTooSmall,
        ErrorCode::InputTooLarge,
        ErrorCode::InternalError,
    ];

    /// The name on the wire, which is also the crate's variant name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Success => "Success",
            ErrorCode::InvalidArgument => "InvalidArgument",
            ErrorCode::InvalidIndex => "InvalidIndex",
            ErrorCode::InvalidResponse => "InvalidResponse",
            ErrorCode::ReadOnlyIndex => "ReadOnlyIndex",
            ErrorCode::InvalidOperation => "InvalidOperation",
            ErrorCode::BufferTooSmall => "BufferTooSmall",
            ErrorCode::InputTooLarge => "InputTooLarge",
            ErrorCode::InternalError => "InternalError",
        }
    }
}

/// The hash of the module's PCR bank (the crate's `api::Digest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Digest {
    Sha256,
    Sha384,
    Sha512,
}

impl Digest {
    pub const ALL: [Digest; 3] = [Digest::Sha256, Digest::Sha384, Digest::Sha512];

    /// The name on the wire (the crate's variant names `SHA256`, `SHA384`, `SHA512`).
    pub fn name(self) -> &'static str {
        match self {
            Digest::Sha256 => "SHA256",
            Digest::Sha384 => "SHA384",
            Digest::Sha512 => "SHA512",
        }
    }
}

/// A response that is not one the NSM could have sent. `at` is a byte offset in the response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NsmDecodeError {
    #[error("NSM response is {size} bytes, over the driver's limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("NSM response ends early: the item at byte {at} is cut off")]
    Truncated { at: usize },
    #[error("NSM response has {count} bytes after its end at byte {at}")]
    TrailingBytes { at: usize, count: usize },
    #[error("NSM response: {item} at byte {at} is {found}, expected {expected}")]
    WrongType {
        at: usize,
        item: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("NSM response: byte {at} starts {what}, which the NSM does not write")]
    Unsupported { at: usize, what: &'static str },
    #[error("NSM response: the text string at byte {at} is not UTF-8")]
    NotUtf8 { at: usize },
    #[error("NSM response: the top-level map at byte {at} has {entries} entries, expected 1")]
    NotOneEntry { at: usize, entries: u64 },
    #[error("NSM response: unknown {kind} {name:?} at byte {at}")]
    UnknownName {
        at: usize,
        kind: &'static str,
        /// The name as sent, cut to 64 characters.
        name: String,
    },
    #[error("NSM response: {response} at byte {at} is not in its shape: expected {expected}")]
    WrongShape {
        at: usize,
        response: &'static str,
        expected: &'static str,
    },
    #[error("NSM response: {response} lacks its field {field}")]
    MissingField {
        response: &'static str,
        field: &'static str,
    },
    #[error("NSM response: {response} has its field {field} twice (again at byte {at})")]
    DuplicateField {
        at: usize,
        response: &'static str,
        field: &'static str,
    },
    #[error("NSM response: {item} at byte {at} is {value}, over 65535")]
    OutOfRange {
        at: usize,
        item: &'static str,
        value: u64,
    },
    #[error("NSM response: an unknown field nests deeper than {limit} levels at byte {at}")]
    TooDeep { at: usize, limit: usize },
}

type Result<T> = std::result::Result<T, NsmDecodeError>;

/// `request` as the crate's serde_cbor writes it, byte for byte.
pub fn encode_request(request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    match request {
        Request::DescribePCR { index } => {
            variant(&mut out, "DescribePCR", 1);
            uint_field(&mut out, "index", *index);
        }
        Request::ExtendPCR { index, data } => {
            variant(&mut out, "ExtendPCR", 2);
            uint_field(&mut out, "index", *index);
            bytes_field(&mut out, "data", data);
        }
        Request::LockPCR { index } => {
            variant(&mut out, "LockPCR", 1);
            uint_field(&mut out, "index", *index);
        }
        Request::LockPCRs { range } => {
            variant(&mut out, "LockPCRs", 1);
            uint_field(&mut out, "range", *range);
        }
        Request::DescribeNSM => cbor::text(&mut out, "DescribeNSM"),
        Request::Attestation {
            user_data,
            nonce,
            public_key,
        } => {
            variant(&mut out, "Attestation", 3);
            for (name, value) in [
                ("user_data", user_data),
                ("nonce", nonce),
                ("public_key", public_key),
            ] {
                cbor::text(&mut out, name);
                match value {
                    Some(b) => cbor::bytes(&mut out, b),
                    None => out.push(NULL),
                }
            }
        }
        Request::GetRandom => cbor::text(&mut out, "GetRandom"),
    }
    out
}

/// `response` as the crate's serde_cbor writes it, byte for byte: what a software NSM would
/// send, and the canonical form [`decode_response`] round-trips to.
pub fn encode_response(response: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    match response {
        Response::DescribePCR { lock, data } => {
            variant(&mut out, "DescribePCR", 2);
            cbor::text(&mut out, "lock");
            out.push(if *lock { TRUE } else { FALSE });
            bytes_field(&mut out, "data", data);
        }
        Response::ExtendPCR { data } => {
            variant(&mut out, "ExtendPCR", 1);
            bytes_field(&mut out, "data", data);
        }
        Response::LockPCR => cbor::text(&mut out, "LockPCR"),
        Response::LockPCRs => cbor::text(&mut out, "LockPCRs"),
        Response::DescribeNSM {
            version_major,
            version_minor,
            version_patch,
            module_id,
            max_pcrs,
            locked_pcrs,
            digest,
        } => {
            variant(&mut out, "DescribeNSM", 7);
            uint_field(&mut out, "version_major", *version_major);
            uint_field(&mut out, "version_minor", *version_minor);
            uint_field(&mut out, "version_patch", *version_patch);
            cbor::text(&mut out, "module_id");
            cbor::text(&mut out, module_id);
            uint_field(&mut out, "max_pcrs", *max_pcrs);
            cbor::text(&mut out, "locked_pcrs");
            cbor::head(&mut out, MAJOR_ARRAY, locked_pcrs.len() as u64);
            for &i in locked_pcrs {
                cbor::head(&mut out, MAJOR_UINT, u64::from(i));
            }
            cbor::text(&mut out, "digest");
            cbor::text(&mut out, digest.name());
        }
        Response::Attestation { document } => {
            variant(&mut out, "Attestation", 1);
            bytes_field(&mut out, "document", document);
        }
        Response::GetRandom { random } => {
            variant(&mut out, "GetRandom", 1);
            bytes_field(&mut out, "random", random);
        }
        Response::Error(code) => {
            cbor::head(&mut out, MAJOR_MAP, 1);
            cbor::text(&mut out, "Error");
            cbor::text(&mut out, code.name());
        }
    }
    out
}

/// `{name: {` with `fields` entries to follow.
fn variant(out: &mut Vec<u8>, name: &str, fields: u64) {
    cbor::head(out, MAJOR_MAP, 1);
    cbor::text(out, name);
    cbor::head(out, MAJOR_MAP, fields);
}

fn uint_field(out: &mut Vec<u8>, name: &str, value: u16) {
    cbor::text(out, name);
    cbor::head(out, MAJOR_UINT, u64::from(value));
}

fn bytes_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    cbor::text(out, name);
    cbor::bytes(out, value);
}

/// Reads one NSM response that must fill `bytes` (see the module doc for what is accepted).
pub fn decode_response(bytes: &[u8]) -> Result<Response> {
    if bytes.len() > MAX_RESPONSE_LEN {
        return Err(NsmDecodeError::TooLarge {
            size: bytes.len(),
            limit: MAX_RESPONSE_LEN,
        });
    }
    let mut r = Reader { bytes, pos: 0 };
    let response = r.response()?;
    if r.pos < bytes.len() {
        return Err(NsmDecodeError::TrailingBytes {
            at: r.pos,
            count: bytes.len() - r.pos,
        });
    }
    Ok(response)
}

/// Response types with fields (or, for `Error`, a code): written as one-entry maps.
const WITH_FIELDS: [&str; 6] = [
    "DescribePCR",
    "ExtendPCR",
    "DescribeNSM",
    "Attestation",
    "GetRandom",
    "Error",
];
/// Response types without fields: written as their bare names.
const BARE: [&str; 2] = ["LockPCR", "LockPCRs"];

const DESCRIBE_NSM_FIELDS: [&str; 7] = [
    "version_major",
    "version_minor",
    "version_patch",
    "module_id",
    "max_pcrs",
    "locked_pcrs",
    "digest",
];

/// A CBOR head: its offset, its initial byte and its argument (a value, a length or a count).
struct Head {
    at: usize,
    initial: u8,
    arg: u64,
}

impl Head {
    fn major(&self) -> u8 {
        self.initial >> 5
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn response(&mut self) -> Result<Response> {
        let h = self.head()?;
        match h.major() {
            MAJOR_TEXT => {
                let name = self.utf8(&h)?;
                match name {
                    "LockPCR" => Ok(Response::LockPCR),
                    "LockPCRs" => Ok(Response::LockPCRs),
                    _ => Err(match WITH_FIELDS.iter().find(|&&n| n == name) {
                        Some(&response) => NsmDecodeError::WrongShape {
                            at: h.at,
                            response,
                            expected: "a one-entry map from its name to its fields",
                        },
                        None => unknown(h.at, "response type", name),
                    }),
                }
            }
            // serde_cbor takes an enum's map form only from this exact byte, not from a wider
            // head that also means "one entry".
            MAJOR_MAP if h.initial == 0xa1 => {
                let (at, name) = self.text("the response type")?;
                match name {
                    "Error" => {
                        let (at, code) = self.text("Error's code")?;
                        ErrorCode::ALL
                            .into_iter()
                            .find(|c| c.name() == code)
                            .map(Response::Error)
                            .ok_or_else(|| unknown(at, "error code", code))
                    }
                    "DescribePCR" => self.describe_pcr(),
                    "ExtendPCR" => {
                        let mut data = None;
                        self.fields("ExtendPCR", &["data"], &mut |r, _| {
                            data = Some(r.byte_string("ExtendPCR's data")?);
                            Ok(())
                        })?;
                        Ok(Response::ExtendPCR {
                            data: required(data, "ExtendPCR", "data")?,
                        })
                    }
                    "DescribeNSM" => self.describe_nsm(),
                    "Attestation" => {
                        let mut document = None;
                        self.fields("Attestation", &["document"], &mut |r, _| {
                            document = Some(r.byte_string("Attestation's document")?);
                            Ok(())
                        })?;
                        Ok(Response::Attestation {
                            document: required(document, "Attestation", "document")?,
                        })
                    }
                    "GetRandom" => {
                        let mut random = None;
                        self.fields("GetRandom", &["random"], &mut |r, _| {
                            random = Some(r.byte_string("GetRandom's random")?);
                            Ok(())
                        })?;
                        Ok(Response::GetRandom {
                            random: required(random, "GetRandom", "random")?,
                        })
                    }
                    _ => Err(match BARE.iter().find(|&&n| n == name) {
                        Some(&response) => NsmDecodeError::WrongShape {
                            at,
                            response,
                            expected: "its bare name",
                        },
                        None => unknown(at, "response type", name),
                    }),
                }
            }
            MAJOR_MAP if h.arg == 1 => Err(NsmDecodeError::Unsupported {
                at: h.at,
                what: "the response map with a wider head than 0xa1",
            }),
            MAJOR_MAP => Err(NsmDecodeError::NotOneEntry {
                at: h.at,
                entries: h.arg,
            }),
            _ => Err(wrong_type(
                &h,
                "the response",
                "a map or a response type's name",
            )),
        }
    }

    fn describe_pcr(&mut self) -> Result<Response> {
        let (mut lock, mut data) = (None, None);
        self.fields("DescribePCR", &["lock", "data"], &mut |r, i| {
            if i == 0 {
                lock = Some(r.bool("DescribePCR's lock")?);
            } else {
                data = Some(r.byte_string("DescribePCR's data")?);
            }
            Ok(())
        })?;
        Ok(Response::DescribePCR {
            lock: required(lock, "DescribePCR", "lock")?,
            data: required(data, "DescribePCR", "data")?,
        })
    }

    fn describe_nsm(&mut self) -> Result<Response> {
        let mut versions = [None; 3];
        let (mut module_id, mut max_pcrs, mut locked_pcrs, mut digest) = (None, None, None, None);
        self.fields("DescribeNSM", &DESCRIBE_NSM_FIELDS, &mut |r, i| {
            match i {
                0..=2 => versions[i] = Some(r.u16("a DescribeNSM version")?),
                3 => module_id = Some(r.text("DescribeNSM's module_id")?.1.to_owned()),
                4 => max_pcrs = Some(r.u16("DescribeNSM's max_pcrs")?),
                5 => locked_pcrs = Some(r.u16_set("DescribeNSM's locked_pcrs")?),
                _ => {
                    let (at, name) = r.text("DescribeNSM's digest")?;
                    let d = Digest::ALL.into_iter().find(|d| d.name() == name);
                    digest = Some(d.ok_or_else(|| unknown(at, "digest", name))?);
                }
            }
            Ok(())
        })?;
        let [major, minor, patch] = versions;
        let field = |v, name| required(v, "DescribeNSM", name);
        Ok(Response::DescribeNSM {
            version_major: field(major, "version_major")?,
            version_minor: field(minor, "version_minor")?,
            version_patch: field(patch, "version_patch")?,
            module_id: required(module_id, "DescribeNSM", "module_id")?,
            max_pcrs: field(max_pcrs, "max_pcrs")?,
            locked_pcrs: required(locked_pcrs, "DescribeNSM", "locked_pcrs")?,
            digest: required(digest, "DescribeNSM", "digest")?,
        })
    }

    /// A map of `response`'s fields: calls `each` with the index in `names` of every known
    /// field, once each, and skips the others.
    fn fields(
        &mut self,
        response: &'static str,
        names: &[&'static str],
        each: &mut dyn FnMut(&mut Self, usize) -> Result<()>,
    ) -> Result<()> {
        let h = self.head()?;
        if h.major() != MAJOR_MAP {
            return Err(wrong_type(&h, response, "a map of its fields"));
        }
        let mut seen = 0u32;
        // Each pass reads at least one byte or fails, so a hostile count ends with the input.
        for _ in 0..h.arg {
            let (at, key) = self.text("a field name")?;
            match names.iter().position(|&n| n == key) {
                Some(i) if seen & (1 << i) != 0 => {
                    return Err(NsmDecodeError::DuplicateField {
                        at,
                        response,
                        field: names[i],
                    });
                }
                Some(i) => {
                    seen |= 1 << i;
                    each(self, i)?;
                }
                // The crate ignores fields it does not know; a newer NSM may add some.
                None => self.skip(1)?,
            }
        }
        Ok(())
    }

    fn head(&mut self) -> Result<Head> {
        let at = self.pos;
        let initial = *self.bytes.get(at).ok_or(NsmDecodeError::Truncated { at })?;
        let width = match initial & 0x1f {
            0..=23 => 0,
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            28..=30 => {
                return Err(NsmDecodeError::Unsupported {
                    at,
                    what: "a reserved head (additional information 28 to 30)",
                });
            }
            _ => {
                return Err(NsmDecodeError::Unsupported {
                    at,
                    what: "an indefinite-length item or a break",
                });
            }
        };
        let arg = match self.bytes.get(at + 1..at + 1 + width) {
            Some([]) => u64::from(initial & 0x1f),
            Some(be) => be.iter().fold(0, |n, &b| n << 8 | u64::from(b)),
            None => return Err(NsmDecodeError::Truncated { at }),
        };
        self.pos = at + 1 + width;
        Ok(Head { at, initial, arg })
    }

    /// The content of the byte or text string whose head is `h`.
    fn content(&mut self, h: &Head) -> Result<&'a [u8]> {
        let end = usize::try_from(h.arg)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&end| end <= self.bytes.len())
            .ok_or(NsmDecodeError::Truncated { at: h.at })?;
        let content = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(content)
    }

    fn utf8(&mut self, h: &Head) -> Result<&'a str> {
        let content = self.content(h)?;
        std::str::from_utf8(content).map_err(|_| NsmDecodeError::NotUtf8 { at: h.at })
    }

    /// A text string and its offset.
    fn text(&mut self, item: &'static str) -> Result<(usize, &'a str)> {
        let h = self.head()?;
        if h.major() != MAJOR_TEXT {
            return Err(wrong_type(&h, item, "a text string"));
        }
        Ok((h.at, self.utf8(&h)?))
    }

    fn byte_string(&mut self, item: &'static str) -> Result<Vec<u8>> {
        let h = self.head()?;
        if h.major() != MAJOR_BYTES {
            return Err(wrong_type(&h, item, "a byte string"));
        }
        Ok(self.content(&h)?.to_vec())
    }

    fn u16(&mut self, item: &'static str) -> Result<u16> {
        let h = self.head()?;
        if h.major() != MAJOR_UINT {
            return Err(wrong_type(&h, item, "an unsigned integer"));
        }
        u16::try_from(h.arg).map_err(|_| NsmDecodeError::OutOfRange {
            at: h.at,
            item,
            value: h.arg,
        })
    }

    fn u16_set(&mut self, item: &'static str) -> Result<BTreeSet<u16>> {
        let h = self.head()?;
        if h.major() != MAJOR_ARRAY {
            return Err(wrong_type(&h, item, "an array"));
        }
        let mut set = BTreeSet::new();
        for _ in 0..h.arg {
            set.insert(self.u16(item)?);
        }
        Ok(set)
    }

    fn bool(&mut self, item: &'static str) -> Result<bool> {
        let h = self.head()?;
        match h.initial {
            FALSE => Ok(false),
            TRUE => Ok(true),
            _ => Err(wrong_type(&h, item, "true or false")),
        }
    }

    /// Skips one item of a field this module does not read, `depth` levels below the fields.
    fn skip(&mut self, depth: usize) -> Result<()> {
        let h = self.head()?;
        if depth > MAX_SKIP_DEPTH {
            return Err(NsmDecodeError::TooDeep {
                at: h.at,
                limit: MAX_SKIP_DEPTH,
            });
        }
        match h.major() {
            MAJOR_BYTES => {
                self.content(&h)?;
            }
            // serde_cbor checks text it ignores too: refuse what the crate refuses.
            MAJOR_TEXT => {
                self.utf8(&h)?;
            }
            MAJOR_ARRAY => {
                for _ in 0..h.arg {
                    self.skip(depth + 1)?;
                }
            }
            MAJOR_MAP => {
                for _ in 0..h.arg {
                    self.skip(depth + 1)?;
                    self.skip(depth + 1)?;
                }
            }
            MAJOR_TAG => self.skip(depth + 1)?,
            // Of the simple values, serde_cbor reads false, true, null, undefined and floats.
            MAJOR_SIMPLE if !matches!(h.initial, 0xf4..=0xf7 | 0xf9..=0xfb) => {
                return Err(NsmDecodeError::Unsupported {
                    at: h.at,
                    what: "an unassigned simple value",
                });
            }
            // Integers, the simple values above and floats are all head.
            _ => {}
        }
        Ok(())
    }
}

fn required<T>(value: Option<T>, response: &'static str, field: &'static str) -> Result<T> {
    value.ok_or(NsmDecodeError::MissingField { response, field })
}

fn unknown(at: usize, kind: &'static str, name: &str) -> NsmDecodeError {
    NsmDecodeError::UnknownName {
        at,
        kind,
        name: name.chars().take(64).collect(),
    }
}

fn wrong_type(h: &Head, item: &'static str, expected: &'static str) -> NsmDecodeError {
    let found = match h.major() {
        MAJOR_UINT => "an unsigned integer",
        MAJOR_NEGATIVE => "a negative integer",
        MAJOR_BYTES => "a byte string",
        MAJOR_TEXT => "a text string",
        MAJOR_ARRAY => "an array",
        MAJOR_MAP => "a map",
        MAJOR_TAG => "a tag",
        _ => match h.initial {
            FALSE | TRUE => "a boolean",
            NULL => "null",
            0xf9..=0xfb => "a float",
            _ => "a simple value",
        },
    };
    NsmDecodeError::WrongType {
        at: h.at,
        item,
        expected,
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(bytes: &[u8]) -> NsmDecodeError {
        decode_response(bytes).unwrap_err()
    }

    /// `{"Attestation": {"document": h'0102'}}`, with the head of the document's length wide.
    #[test]
    fn reads_the_shapes_and_wide_heads() {
        let mut b = vec![0xa1, 0x6b];
        b.extend_from_slice(b"Attestation");
        b.extend_from_slice(&[0xb9, 0, 1, 0x68]);
        b.extend_from_slice(b"document");
        b.extend_from_slice(&[0x5a, 0, 0, 0, 2, 1, 2]);
        assert_eq!(
            decode_response(&b).unwrap(),
            Response::Attestation {
                document: vec![1, 2]
            }
        );
        assert_eq!(decode_response(b"\x67LockPCR").unwrap(), Response::LockPCR);
    }

    /// One case per refusal, each naming the byte at fault.
    #[test]
    fn every_refusal_names_the_problem() {
        let too_long = vec![0; MAX_RESPONSE_LEN + 1];
        assert_eq!(
            err(&too_long),
            NsmDecodeError::TooLarge {
                size: MAX_RESPONSE_LEN + 1,
                limit: MAX_RESPONSE_LEN
            }
        );
        assert_eq!(err(&[]), NsmDecodeError::Truncated { at: 0 });
        assert_eq!(
            err(&[0xa1, 0x65, b'E']),
            NsmDecodeError::Truncated { at: 1 }
        );
        assert_eq!(
            err(&[0xa1, 0x7b, 0xff]),
            NsmDecodeError::Truncated { at: 1 }
        );
        // A length of 2^64 - 1 must not overflow anything.
        assert_eq!(
            err(&[0xa1, 0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            NsmDecodeError::Truncated { at: 1 }
        );
        assert_eq!(
            err(b"\x67LockPCR\x00"),
            NsmDecodeError::TrailingBytes { at: 8, count: 1 }
        );
        assert_eq!(
            err(&[0x05]),
            NsmDecodeError::WrongType {
                at: 0,
                item: "the response",
                expected: "a map or a response type's name",
                found: "an unsigned integer"
            }
        );
        for (bytes, what) in [
            (&[0xbf][..], "an indefinite-length item or a break"),
            (&[0x7f], "an indefinite-length item or a break"),
            (&[0xff], "an indefinite-length item or a break"),
            (&[0x1c], "a reserved head (additional information 28 to 30)"),
        ] {
            assert_eq!(err(bytes), NsmDecodeError::Unsupported { at: 0, what });
        }
        assert_eq!(
            err(&[0xb8, 1]),
            NsmDecodeError::Unsupported {
                at: 0,
                what: "the response map with a wider head than 0xa1"
            }
        );
        assert_eq!(err(&[0x62, 0xc3, 0x28]), NsmDecodeError::NotUtf8 { at: 0 });
        assert_eq!(
            err(&[0xa2]),
            NsmDecodeError::NotOneEntry { at: 0, entries: 2 }
        );
        assert_eq!(
            err(b"\x64Gone"),
            NsmDecodeError::UnknownName {
                at: 0,
                kind: "response type",
                name: "Gone".into()
            }
        );
        assert_eq!(
            err(b"\xa1\x65Error\x64Oops"),
            NsmDecodeError::UnknownName {
                at: 7,
                kind: "error code",
                name: "Oops".into()
            }
        );
        assert_eq!(
            err(b"\x6bAttestation"),
            NsmDecodeError::WrongShape {
                at: 0,
                response: "Attestation",
                expected: "a one-entry map from its name to its fields"
            }
        );
        assert_eq!(
            err(b"\xa1\x67LockPCR\xf6"),
            NsmDecodeError::WrongShape {
                at: 1,
                response: "LockPCR",
                expected: "its bare name"
            }
        );
        assert_eq!(
            err(b"\xa1\x69GetRandom\xa0"),
            NsmDecodeError::MissingField {
                response: "GetRandom",
                field: "random"
            }
        );
        assert_eq!(
            err(b"\xa1\x69GetRandom\xa2\x66random\x40\x66random\x40"),
            NsmDecodeError::DuplicateField {
                at: 20,
                response: "GetRandom",
                field: "random"
            }
        );
        let mut nsm = b"\xa1\x6bDescribeNSM\xa1\x68max_pcrs\x1a\x00\x01\x00\x00".to_vec();
        assert_eq!(
            err(&nsm),
            NsmDecodeError::OutOfRange {
                at: 23,
                item: "DescribeNSM's max_pcrs",
                value: 65536
            }
        );
        // An unknown field nested past the limit, then one just inside it.
        nsm.truncate(13);
        nsm.extend_from_slice(b"\xa1\x61x");
        let mut deep = nsm.clone();
        deep.extend(std::iter::repeat_n(0x81, MAX_SKIP_DEPTH + 1));
        deep.push(0);
        assert_eq!(
            err(&deep),
            NsmDecodeError::TooDeep {
                at: 16 + MAX_SKIP_DEPTH,
                limit: MAX_SKIP_DEPTH
            }
        );
        nsm.extend(std::iter::repeat_n(0x81, MAX_SKIP_DEPTH - 1));
        nsm.push(0);
        assert!(matches!(
            err(&nsm),
            NsmDecodeError::MissingField {
                field: "version_major",
                ..
            }
        ));
    }

    #[test]
    fn errors_read_as_sentences() {
        let e = err(b"\xa1\x6bDescribePCR\xa2\x64lock\x01");
        assert_eq!(
            e.to_string(),
            "NSM response: DescribePCR's lock at byte 19 is an unsigned integer, expected true or false"
        );
        let mut long = vec![0x78, 0x80];
        long.extend_from_slice(&[b'x'; 128]);
        let NsmDecodeError::UnknownName { name, .. } = err(&long) else {
            panic!("not an unknown name");
        };
        assert_eq!(name.len(), 64);
    }
}
