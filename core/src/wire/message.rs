//! The parent↔enclave messages (DESIGN §4).
//!
//! Each frame is one JSON object `{"id": N, "msg": {"<type>": {...}}}`, but for file and result
//! chunks, which are bulk frames of raw bytes ([`super::bulk`]). Decoding is strict: an
//! unknown type or field is an error that names it. Error texts are scrubbed of quoted string
//! values, because a malformed credentials frame would otherwise have its secret echoed back
//! into an error reply and the logs.

use super::bulk;
use crate::config::{AuctionConfig, Mode};
use crate::credentials::Credentials;
use crate::names::{AuctionId, BuyerName, Region};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Version 3: sealed auctions, whole files in and nothing out before close (2), with file and
/// result chunks as raw bytes in bulk frames rather than base64 in JSON ([`super::bulk`]).
pub const PROTOCOL_VERSION: u32 = 3;
/// NSM limit for an attestation nonce.
pub const MAX_NONCE_LEN: usize = 512;
pub const MIN_NONCE_LEN: usize = 16;

/// A parent → enclave frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToEnclave {
    pub id: u64,
    pub msg: Request,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Hello(Hello),
    Credentials(Credentials),
    /// Opens a sealed auction: the manifest's canonical bytes. Every buyer's seal follows.
    OpenSealed(OpenSealed),
    /// Opens an auction the buyers did not seal (they trust the operator).
    OpenUnsealed(AuctionConfig),
    Seal(Seal),
    /// A bulk frame, never JSON.
    #[serde(skip)]
    FileChunk(FileChunk),
    Close(Close),
}

impl Request {
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Hello(_) => "hello",
            Request::Credentials(_) => "credentials",
            Request::OpenSealed(_) => "open_sealed",
            Request::OpenUnsealed(_) => "open_unsealed",
            Request::Seal(_) => "seal",
            Request::FileChunk(_) => "file_chunk",
            Request::Close(_) => "close",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub protocol: u32,
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenSealed {
    #[serde(with = "b64")]
    pub manifest: Vec<u8>,
}

/// A buyer's seal: KMS's ciphertext of the seal marker under the buyer's key, with the context
/// naming the auction, the buyer and the manifest's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    pub buyer: BuyerName,
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
}

/// The next bytes of one buyer's bid file. A file is sent whole, in order, one file at a
/// time; `last` ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChunk {
    pub buyer: BuyerName,
    pub data: Vec<u8>,
    pub last: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Close {}

/// An enclave → parent frame. `id` is the request's, or `None` when the request could not
/// be read far enough to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromEnclave {
    pub id: Option<u64>,
    pub msg: Response,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    Hello(HelloReply),
    Credentials(CredentialsReply),
    AuctionOpened(AuctionOpened),
    /// The seal decrypted under the buyer's key with the manifest's context.
    SealAccepted(SealAccepted),
    /// The chunk was taken (hashed and kept); for the last one, the whole file checked out.
    ChunkAccepted(ChunkAccepted),
    /// Part of the result, before [`Response::Closed`]; answers the close request. A bulk
    /// frame, never JSON.
    #[serde(skip)]
    ResultChunk(ResultChunk),
    Closed(Closed),
    Error(ErrorReply),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelloReply {
    pub protocol: u32,
    /// Name and version of the enclave build.
    pub build: String,
    /// True for builds with the software NSM; a parent refuses these unless told otherwise.
    pub dev: bool,
    /// NSM attestation document: `nonce` = the hello's, `user_data` = the image's rule set
    /// (`SBHS` sealed, `SBHU` unsealed), `public_key` = the enclave's RSA key for KMS
    /// Recipient answers.
    #[serde(with = "b64")]
    pub attestation: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsReply {
    pub region: Region,
    pub expiration: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuctionOpened {
    pub auction_id: AuctionId,
    pub mode: Mode,
    /// SHA-256 of the manifest (sealed) or of the configuration's canonical bytes (unsealed).
    #[serde(with = "hex32")]
    pub terms_sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealAccepted {
    pub buyer: BuyerName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkAccepted {
    pub buyer: BuyerName,
    /// Bytes of this buyer's file received so far.
    pub received: u64,
}

/// Which output a [`ResultChunk`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFile {
    Csv,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultChunk {
    pub file: OutputFile,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Closed {
    pub mode: Mode,
    pub lots: u64,
    #[serde(with = "hex32")]
    pub terms_sha256: [u8; 32],
    #[serde(with = "hex32")]
    pub csv_sha256: [u8; 32],
    #[serde(with = "hex32")]
    pub json_sha256: [u8; 32],
    /// NSM attestation document whose `user_data` is the
    /// [`crate::config::ResultCommitment`] and whose `nonce` is the hello's.
    #[serde(with = "b64")]
    pub attestation: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
    /// True when the enclave ends the session after this error.
    pub fatal: bool,
}

/// What went wrong, for programs; `message` says it for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    FrameTooLarge,
    MalformedFrame,
    UnsupportedProtocol,
    OutOfOrder,
    DuplicateId,
    InvalidNonce,
    InvalidCredentials,
    InvalidAuction,
    InvalidManifest,
    /// The open request is for a mode this image does not serve (one image, one rule set).
    WrongRuleSet,
    UnknownBuyer,
    DuplicateSeal,
    /// A seal did not decrypt to the marker under the buyer's key and the manifest's context.
    SealRefused,
    DuplicateFile,
    /// A file's size or SHA-256 differs from the manifest's.
    FileMismatch,
    /// An envelope file fails a check (a frame tag, its signature, its end) after some of its
    /// rows were read: they cannot be taken back, so the auction fails.
    BrokenFile,
    /// The enclave cannot reserve the memory its limits need: give it more.
    OutOfMemory,
    MissingFile,
    FileTooLarge,
    ReplayedCiphertext,
    TooManyLots,
    TooManyBids,
    KmsCredentials,
    /// KMS refused the enclave access to a buyer's key: the operator's role or the enclave's
    /// measurement is not allowed by the key policy. Fatal: a bid left out changes a winner.
    KmsAccessDenied,
    /// Sealed: a buyer's bids are not under the key (or for the auction and buyer) the manifest
    /// registers. The manifest's binding is the operator's word, so this fails the auction.
    KeyBinding,
    /// A buyer's key is disabled, pending deletion or gone.
    KeyUnavailable,
    KmsUnavailable,
    KmsFailure,
    Attestation,
    AuctionFailed,
    IdleTimeout,
    Busy,
    Internal,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = serde_json::to_value(self).map_err(|_| fmt::Error)?;
        f.write_str(v.as_str().unwrap_or("unknown"))
    }
}

/// A frame that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame {frame}: {detail}")]
pub struct MessageError {
    pub frame: u64,
    /// The request id, when the frame got that far.
    pub id: Option<u64>,
    pub detail: String,
}

/// Decodes a parent → enclave frame. `frame` is its 1-based number on the connection.
pub fn decode_request(frame: u64, payload: &[u8]) -> Result<ToEnclave, MessageError> {
    if payload.first() == Some(&bulk::FILE_CHUNK) {
        return bulk::decode_file_chunk(payload)
            .map(|(id, c)| ToEnclave {
                id,
                msg: Request::FileChunk(c),
            })
            .map_err(|e| e.in_frame(frame));
    }
    decode(frame, payload)
}

/// Decodes an enclave → parent frame.
pub fn decode_response(frame: u64, payload: &[u8]) -> Result<FromEnclave, MessageError> {
    if payload.first() == Some(&bulk::RESULT_CHUNK) {
        return bulk::decode_result_chunk(payload)
            .map(|(id, c)| FromEnclave {
                id,
                msg: Response::ResultChunk(c),
            })
            .map_err(|e| e.in_frame(frame));
    }
    decode(frame, payload)
}

fn decode<T: serde::de::DeserializeOwned>(frame: u64, payload: &[u8]) -> Result<T, MessageError> {
    serde_json::from_slice(payload).map_err(|e| MessageError {
        frame,
        id: salvage_id(payload),
        detail: scrub(&e.to_string()),
    })
}

/// Best effort: the top-level `id` of a frame that failed to decode, for the error reply.
fn salvage_id(payload: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: u64,
    }
    serde_json::from_slice::<IdOnly>(payload).ok().map(|x| x.id)
}

/// Replaces every double-quoted string in a serde message with `"…"`. Field and variant names
/// are quoted with backticks by serde and survive; values (which could be secrets) do not.
pub fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_quote = false;
    for c in message.chars() {
        match (c, in_quote) {
            ('"', false) => {
                in_quote = true;
                out.push_str("\"…");
            }
            ('"', true) => {
                in_quote = false;
                out.push('"');
            }
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    if in_quote {
        out.push('"');
    }
    out
}

pub fn encode_request(msg: &ToEnclave) -> Vec<u8> {
    match &msg.msg {
        Request::FileChunk(c) => bulk::encode_file_chunk(msg.id, c),
        _ => serde_json::to_vec(msg).expect("messages always serialise"),
    }
}

pub fn encode_response(msg: &FromEnclave) -> Vec<u8> {
    match &msg.msg {
        Response::ResultChunk(c) => bulk::encode_result_chunk(msg.id, c),
        _ => serde_json::to_vec(msg).expect("messages always serialise"),
    }
}

/// Base64 (standard alphabet, padded) for byte fields.
pub mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    /// Decodes the string where it lies in the frame: as bytes, since base64 is ASCII and a
    /// string that is not fails as base64 anyway, so serde_json neither copies it nor checks
    /// it as UTF-8 first.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_bytes(Base64)
    }

    struct Base64;

    impl<'de> serde::de::Visitor<'de> for Base64 {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a base64 string")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            STANDARD
                .decode(v)
                .map_err(|e| E::custom(format_args!("invalid base64: {e}")))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            self.visit_bytes(v.as_bytes())
        }
    }
}

/// Lowercase hex for 32-byte digests.
pub mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.as_bytes(), &mut out)
            .map_err(|_| serde::de::Error::custom("expected 64 lowercase hex digits"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Secret;
    use proptest::prelude::*;

    fn round_trip(m: ToEnclave) {
        let bytes = encode_request(&m);
        assert_eq!(decode_request(1, &bytes).unwrap(), m);
    }

    #[test]
    fn shapes_on_the_wire() {
        let m = ToEnclave {
            id: 1,
            msg: Request::Hello(Hello {
                protocol: 2,
                nonce: vec![1, 2, 3],
            }),
        };
        assert_eq!(
            String::from_utf8(encode_request(&m)).unwrap(),
            r#"{"id":1,"msg":{"hello":{"protocol":2,"nonce":"AQID"}}}"#
        );
        round_trip(m);
        round_trip(ToEnclave {
            id: 9,
            msg: Request::Close(Close {}),
        });
        round_trip(ToEnclave {
            id: 2,
            msg: Request::FileChunk(FileChunk {
                buyer: BuyerName::new("B").unwrap(),
                data: vec![0; 40],
                last: true,
            }),
        });
        round_trip(ToEnclave {
            id: 3,
            msg: Request::Seal(Seal {
                buyer: BuyerName::new("B").unwrap(),
                ciphertext: vec![7; 9],
            }),
        });
        let r = FromEnclave {
            id: Some(3),
            msg: Response::ChunkAccepted(ChunkAccepted {
                buyer: BuyerName::new("B").unwrap(),
                received: 40,
            }),
        };
        assert_eq!(
            String::from_utf8(encode_response(&r)).unwrap(),
            r#"{"id":3,"msg":{"chunk_accepted":{"buyer":"B","received":40}}}"#
        );
        assert_eq!(decode_response(1, &encode_response(&r)).unwrap(), r);
    }

    #[test]
    fn strict_decoding_names_the_problem() {
        let e = decode_request(4, br#"{"id":5,"msg":{"helo":{}}}"#).unwrap_err();
        assert_eq!(e.id, Some(5));
        assert!(
            e.to_string()
                .starts_with("frame 4: unknown variant `helo`, expected one of `hello`"),
            "{e}"
        );
        let e = decode_request(1, br#"{"id":5,"msg":{"close":{"x":1}}}"#).unwrap_err();
        assert!(e.detail.contains("unknown field `x`"), "{e}");
        let e = decode_request(1, br#"{"id":5,"msg":{"close":{}},"extra":0}"#).unwrap_err();
        assert!(e.detail.contains("unknown field `extra`"), "{e}");
        let e = decode_request(1, b"not json").unwrap_err();
        assert_eq!(e.id, None);
    }

    #[test]
    fn errors_never_echo_secret_values() {
        let frame = br#"{"id":2,"msg":{"credentials":{"access_key_id":"AKIA","secret_access_key":12,"session_token":"TOPSECRETTOKEN","region":7}}}"#;
        let e = decode_request(1, frame).unwrap_err().to_string();
        assert!(!e.contains("TOPSECRETTOKEN"), "{e}");
        let frame = br#"{"id":2,"msg":{"credentials":{"access_key_id":"AKIA","secret_access_key":"SECRETKEYVALUE","region":"BAD REGION"}}}"#;
        let e = decode_request(1, frame).unwrap_err().to_string();
        assert!(!e.contains("SECRETKEYVALUE"), "{e}");
        assert_eq!(
            scrub(r#"invalid type: string "abc", expected u64"#),
            r#"invalid type: string "…", expected u64"#
        );
        let c = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Secret::new("s"),
            session_token: None,
            expiration: None,
            region: Region::new("eu-west-1").unwrap(),
        };
        round_trip(ToEnclave {
            id: 3,
            msg: Request::Credentials(c),
        });
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(1, &data);
            let _ = decode_response(1, &data);
        }

        #[test]
        fn chunk_frames_round_trip(id in any::<u64>(), buyer in "[0-9A-Za-z][0-9A-Za-z._-]{0,20}", data in proptest::collection::vec(any::<u8>(), 0..256), last in any::<bool>()) {
            round_trip(ToEnclave { id, msg: Request::FileChunk(FileChunk { buyer: BuyerName::new(buyer).unwrap(), data, last }) });
        }
    }
}
