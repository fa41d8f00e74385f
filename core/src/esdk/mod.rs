//! AWS Encryption SDK messages, format version 2: envelope bid files (DESIGN §4, issue 13).
//!
//! A buyer's plaintext `contract,bid` CSV arrives as one message made by `aws-encryption-cli`
//! or by `bidctl encrypt --format envelope` ([`Encryptor`]): a header naming one KMS-encrypted
//! data key and the encryption context, AES-256-GCM frames under a key derived with
//! HKDF-SHA512, a key commitment, and (suite 0x0578) an ECDSA P-384 signature over everything.
//!
//! Two phases, so that a file costs no KMS call until it has been checked as far as it can be
//! without the data key:
//! 1. [`Message::parse`] bounds-checks every length and count against [`Limits`], walks every
//!    frame (sequence numbers, IVs, exactly one final frame) and, for 0x0578, verifies the
//!    footer signature with the public key in the encryption context.
//! 2. [`Message::decrypt`], given the plaintext data key (from one KMS Decrypt of
//!    [`DataKey::encrypted_key`] with [`Message::context`]), checks the key commitment in
//!    constant time, the header tag, then every frame's tag, and releases the plaintext only
//!    when all of them hold. The plaintext lives in a zeroizing buffer and is redacted in
//!    `Debug`.
//!
//! [`check_bid_file`] then applies the auction's policy on top of the format: suite 0x0578,
//! one `aws-kms` data key for the buyer's registered key ARN, and the context exactly
//! `{auction, buyer, aws-crypto-public-key}`.
//!
//! Errors name the byte offset, field or frame; none holds a plaintext byte. Everything here
//! is sans-IO and uses aws-lc-rs only.

mod derive;
mod encrypt;
mod error;
mod frames;
mod header;
mod message;
mod policy;
mod stream;

pub use crate::cms::Plaintext;
pub use encrypt::Encryptor;
pub use error::{EsdkError, Stage};
pub use header::DataKey;
pub use message::{Message, OwnedMessage};
pub use policy::{
    BID_FILE_PROVIDER_ID, CONTEXT_AUCTION, CONTEXT_BUYER, check_bid_file, check_bid_header,
};
pub use stream::{HeaderView, MAX_HEADER_BYTES, Pushed, StreamDecoder};

/// The one message format version accepted.
pub const VERSION: u8 = 0x02;
/// Length of a version-2 message id.
pub const MESSAGE_ID_LEN: usize = 32;
/// Length of a data key, of the derived content key and of the commitment.
pub const KEY_LEN: usize = 32;
/// AES-GCM IV and tag lengths of both suites.
pub const IV_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// The encryption context key that carries the signing public key (base64 of the compressed
/// P-384 point) in signed suites. Keys starting with `aws-crypto-` are reserved to the SDK.
pub const PUBLIC_KEY_CONTEXT_KEY: &str = "aws-crypto-public-key";
pub const RESERVED_CONTEXT_PREFIX: &str = "aws-crypto-";
/// The final frame's first four bytes.
pub const FINAL_FRAME_MARKER: u32 = 0xFFFF_FFFF;
/// The largest non-framed content the AES-GCM construction allows (2^36 - 32 bytes).
pub const MAX_SINGLE_BLOCK_LEN: u64 = (1 << 36) - 32;

/// The algorithm suites of format version 2 that this decoder opens. Both use HKDF-SHA512
/// with key commitment and AES-256-GCM; only 0x0578 signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// 0x0478 `AES_256_GCM_HKDF_SHA512_COMMIT_KEY`: no signature, no footer.
    AesGcmHkdfSha512CommitKey,
    /// 0x0578 `AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384`, the SDK's default.
    AesGcmHkdfSha512CommitKeyEcdsaP384,
}

impl Suite {
    pub fn from_id(id: u16) -> Option<Suite> {
        match id {
            0x0478 => Some(Suite::AesGcmHkdfSha512CommitKey),
            0x0578 => Some(Suite::AesGcmHkdfSha512CommitKeyEcdsaP384),
            _ => None,
        }
    }

    pub fn id(self) -> u16 {
        match self {
            Suite::AesGcmHkdfSha512CommitKey => 0x0478,
            Suite::AesGcmHkdfSha512CommitKeyEcdsaP384 => 0x0578,
        }
    }

    pub fn is_signed(self) -> bool {
        self == Suite::AesGcmHkdfSha512CommitKeyEcdsaP384
    }

    pub fn name(self) -> &'static str {
        match self {
            Suite::AesGcmHkdfSha512CommitKey => "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
            Suite::AesGcmHkdfSha512CommitKeyEcdsaP384 => {
                "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384"
            }
        }
    }
}

/// How the body holds the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// 0x01: one IV, one ciphertext, one tag.
    SingleBlock,
    /// 0x02: frames of the header's frame length, the last one marked final.
    Framed,
}

impl ContentType {
    pub fn byte(self) -> u8 {
        match self {
            ContentType::SingleBlock => 0x01,
            ContentType::Framed => 0x02,
        }
    }
}

/// Refusal thresholds, all checked while parsing, before any allocation they protect and
/// before any decryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole message, header to footer.
    pub max_message_bytes: usize,
    /// Frames in a framed body, the final one included.
    pub max_frames: u32,
    /// Key-value pairs in the encryption context.
    pub max_context_pairs: u16,
    /// Encrypted data keys in the header.
    pub max_data_keys: u16,
    /// The header's frame length.
    pub max_frame_length: u32,
}

impl Default for Limits {
    /// Room for a 1,000,000-lot bid file many times over; the SDKs' default frame length is
    /// 4096 and their encryption contexts hold a handful of pairs.
    fn default() -> Self {
        Limits {
            max_message_bytes: 512 * 1024 * 1024,
            max_frames: 1 << 24,
            max_context_pairs: 32,
            max_data_keys: 16,
            max_frame_length: 1 << 20,
        }
    }
}

/// Whether `bytes` start like a version-2 message of a suite this module opens: `02` then
/// `04 78` or `05 78`. Tells envelope bid files from the per-bid CSV format (which is text).
pub fn is_message(bytes: &[u8]) -> bool {
    match bytes {
        [VERSION, hi, lo, ..] => Suite::from_id(u16::from_be_bytes([*hi, *lo])).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_message_wants_version_2_and_a_known_suite() {
        assert!(is_message(&[0x02, 0x05, 0x78]));
        assert!(is_message(&[0x02, 0x04, 0x78, 0xff]));
        assert!(!is_message(&[0x02, 0x05]));
        assert!(!is_message(&[0x01, 0x05, 0x78]));
        assert!(!is_message(&[0x02, 0x01, 0x78]));
        assert!(!is_message(&[0x02, 0x03, 0x78]));
        assert!(!is_message(b"[].contract,[].bid\n"));
        assert!(!is_message(b"contract,bid\n"));
        assert!(!is_message(b""));
    }

    #[test]
    fn suite_ids_round_trip() {
        for id in 0..=u16::MAX {
            if let Some(s) = Suite::from_id(id) {
                assert_eq!(s.id(), id);
            }
        }
        assert!(Suite::from_id(0x0578).unwrap().is_signed());
        assert!(!Suite::from_id(0x0478).unwrap().is_signed());
        assert_eq!(Suite::from_id(0x0378), None);
    }
}
