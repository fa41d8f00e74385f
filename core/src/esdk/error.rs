//! Every way a message can be refused, one variant each. Offsets are from the start of the
//! message; frames are numbered from 1 as in their sequence numbers. Values shown are header
//! fields (public on the wire), escaped and cut short; no variant carries plaintext.

/// Which step refused a message: the family of an [`EsdkError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// A configured limit, before anything else is read.
    Limit,
    /// The header's structure (parse).
    Header,
    /// The body's or footer's structure (parse).
    Body,
    /// The signing key in the context, or the footer signature (parse, suite 0x0578).
    Signature,
    /// The data key given to `decrypt`, or the key commitment it derives.
    Commitment,
    /// The header authentication tag (decrypt).
    HeaderTag,
    /// A frame's or the single block's authentication tag (decrypt).
    Content,
    /// The auction's bid-file policy (`check_bid_file`).
    Policy,
    /// Building a message (`Encryptor`).
    Encode,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EsdkError {
    // --- limits ---
    #[error("the message is {len} bytes; the limit is {limit}")]
    MessageTooLarge { len: usize, limit: usize },
    #[error("the encryption context at byte {offset} has {count} pairs; the limit is {limit}")]
    TooManyContextPairs {
        offset: usize,
        count: u16,
        limit: u16,
    },
    #[error("the header at byte {offset} lists {count} encrypted data keys; the limit is {limit}")]
    TooManyDataKeys {
        offset: usize,
        count: u16,
        limit: u16,
    },
    #[error("the frame length at byte {offset} is {found}; the limit is {limit}")]
    FrameLengthOverLimit {
        offset: usize,
        found: u32,
        limit: u32,
    },
    #[error("frame {frame} at byte {offset} is past the limit of {limit} frames")]
    TooManyFrames {
        frame: u64,
        offset: usize,
        limit: u32,
    },

    #[error("the header is longer than {limit} bytes")]
    HeaderTooLong { limit: usize },

    // --- header structure ---
    #[error("the {field} at byte {offset} runs {needed} bytes past the end of the message")]
    Truncated {
        field: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("message format version is {found:#04x} at byte 0; only version 2 (0x02) is accepted")]
    UnsupportedVersion { found: u8 },
    #[error(
        "algorithm suite {found:#06x} at byte 1 is not accepted; expected 0x0578 or 0x0478 \
         (HKDF-SHA512 with key commitment, AES-256-GCM)"
    )]
    UnsupportedSuite { found: u16 },
    #[error(
        "the encryption context at byte {offset} declares pairs but a pair count of 0 (an \
         empty context has length 0)"
    )]
    ContextCountZero { offset: usize },
    #[error(
        "encryption context pair {pair} at byte {offset} runs past the context's declared \
         length ({declared} bytes)"
    )]
    ContextOverrun {
        pair: u16,
        offset: usize,
        declared: u16,
    },
    #[error(
        "the encryption context declares {declared} bytes but its pairs use {used} (at byte \
         {offset})"
    )]
    ContextLengthMismatch {
        offset: usize,
        declared: u16,
        used: usize,
    },
    #[error("the {part} of encryption context pair {pair} at byte {offset} is not UTF-8")]
    ContextNotUtf8 {
        pair: u16,
        part: &'static str,
        offset: usize,
    },
    #[error("encryption context pair {pair} at byte {offset} repeats the key {key}")]
    DuplicateContextKey {
        pair: u16,
        offset: usize,
        key: String,
    },
    #[error("the header lists no encrypted data key (count 0 at byte {offset})")]
    NoDataKeys { offset: usize },
    #[error("the provider id of encrypted data key {key} at byte {offset} is not UTF-8")]
    ProviderIdNotUtf8 { key: u16, offset: usize },
    #[error(
        "content type {found:#04x} at byte {offset} is neither 0x01 (single block) nor 0x02 \
         (framed)"
    )]
    UnsupportedContentType { offset: usize, found: u8 },
    #[error("a single-block message has frame length {found} at byte {offset}; it must be 0")]
    SingleBlockFrameLength { offset: usize, found: u32 },
    #[error("a framed message has frame length 0 at byte {offset}")]
    FrameLengthZero { offset: usize },

    // --- signing key (header) ---
    #[error("suite 0x0578 is signed but the encryption context has no aws-crypto-public-key")]
    MissingPublicKey,
    #[error("suite 0x0478 is not signed but the encryption context has an aws-crypto-public-key")]
    UnexpectedPublicKey,
    #[error("aws-crypto-public-key is not {0}")]
    InvalidPublicKey(&'static str),

    // --- body structure ---
    #[error(
        "the {field} of frame {frame} at byte {offset} runs {needed} bytes past the end of the \
         message"
    )]
    FrameTruncated {
        frame: u64,
        field: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("frame {frame} at byte {offset} has sequence number {found}")]
    SequenceMismatch {
        frame: u64,
        offset: usize,
        found: u32,
    },
    #[error(
        "the IV of frame {frame} at byte {offset} does not end with its sequence number \
         (found {found:#010x})"
    )]
    IvMismatch {
        frame: u64,
        offset: usize,
        found: u32,
    },
    #[error(
        "the final frame ({frame}) at byte {offset} holds {len} bytes, more than the frame \
         length {frame_length}"
    )]
    FinalFrameTooLong {
        frame: u64,
        offset: usize,
        len: u32,
        frame_length: u32,
    },
    #[error(
        "the single block at byte {offset} declares {len} bytes, more than AES-GCM allows \
         (2^36 - 32)"
    )]
    SingleBlockTooLong { offset: usize, len: u64 },
    #[error(
        "the footer's {field} at byte {offset} runs {needed} bytes past the end of the message"
    )]
    FooterTruncated {
        field: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("{count} bytes follow the end of the message at byte {offset}")]
    TrailingBytes { offset: usize, count: usize },

    // --- signature ---
    #[error(
        "the footer signature at byte {offset} does not verify with aws-crypto-public-key \
         over the header and body"
    )]
    SignatureInvalid { offset: usize },

    // --- decryption ---
    #[error("the data key is {len} bytes; this suite's data keys are 32")]
    DataKeyLength { len: usize },
    #[error(
        "the key commitment does not match this data key (wrong data key, or a message made \
         to open differently under different keys)"
    )]
    CommitmentMismatch,
    #[error("the header authentication tag does not verify")]
    HeaderTagInvalid,
    #[error("the authentication tag of frame {frame} at byte {offset} does not verify")]
    FrameTagInvalid { frame: u64, offset: usize },
    #[error("the authentication tag of the single block at byte {offset} does not verify")]
    SingleBlockTagInvalid { offset: usize },

    // --- bid-file policy ---
    #[error("a bid file must use suite 0x0578 (signed); this message uses {found:#06x}")]
    BidFileSuite { found: u16 },
    #[error("a bid file must have exactly one encrypted data key; this one has {found}")]
    BidFileDataKeyCount { found: usize },
    #[error("the bid file's data key is from provider {found}; expected aws-kms")]
    BidFileProvider { found: String },
    #[error("the bid file's data key is for KMS key {found}, not the buyer's key {expected}")]
    BidFileKeyArn { expected: String, found: String },
    #[error("the bid file's encryption context lacks the key {key}")]
    BidFileMissingContextKey { key: &'static str },
    #[error(
        "the bid file's encryption context has the key {key}; {} allowed",
        match rules {
            crate::config::Mode::Sealed =>
                "for the sealed image only auction, buyer, rules and aws-crypto-public-key are",
            crate::config::Mode::Unsealed =>
                "for the unsealed image only auction, buyer and aws-crypto-public-key are \
                 (a file with rules=sealed is for the sealed image)",
        }
    )]
    BidFileExtraContextKey {
        key: String,
        rules: crate::config::Mode,
    },
    #[error(
        "the bid file's encryption context says rules={found}; the sealed image takes rules=sealed"
    )]
    BidFileRules { found: String },
    #[error(
        "the bid file is a single-block message; a bid file must be framed (as aws-encryption-cli \
         and bidctl make them), so that the enclave can open it frame by frame"
    )]
    BidFileSingleBlock,
    #[error("the bid file is for auction {found}, not {expected}")]
    BidFileAuction { expected: String, found: String },
    #[error("the bid file is from buyer {found}, not {expected}")]
    BidFileBuyer { expected: String, found: String },

    // --- streaming ---
    #[error(
        "a single-block message cannot be read frame by frame (its one tag covers the whole \
         plaintext)"
    )]
    SingleBlockNotStreamed,
    #[error("bytes after the header came before the data key was given")]
    NoDataKeyYet,

    // --- encoding ---
    #[error("the frame length must be at least 1 byte")]
    EncodeFrameLength,
    #[error("the encryption context key {key} is reserved to the Encryption SDK")]
    EncodeReservedContextKey { key: String },
    #[error("the {field} is {len} bytes; the message format allows at most 65535")]
    EncodeFieldTooLong { field: &'static str, len: usize },
    #[error("{len} bytes at frame length {frame_length} need more than 2^32 - 1 frames")]
    EncodeTooManyFrames { len: usize, frame_length: u32 },
    #[error("the cryptographic library failed: {0}")]
    Crypto(&'static str),
}

impl EsdkError {
    /// The step that refused: lets callers (and tests) tell a structural refusal from a bad
    /// signature, a wrong data key or a tampered frame without matching every variant.
    pub fn stage(&self) -> Stage {
        use EsdkError::*;
        match self {
            MessageTooLarge { .. }
            | TooManyContextPairs { .. }
            | TooManyDataKeys { .. }
            | FrameLengthOverLimit { .. }
            | HeaderTooLong { .. }
            | TooManyFrames { .. } => Stage::Limit,
            Truncated { .. }
            | UnsupportedVersion { .. }
            | UnsupportedSuite { .. }
            | ContextCountZero { .. }
            | ContextOverrun { .. }
            | ContextLengthMismatch { .. }
            | ContextNotUtf8 { .. }
            | DuplicateContextKey { .. }
            | NoDataKeys { .. }
            | ProviderIdNotUtf8 { .. }
            | UnsupportedContentType { .. }
            | SingleBlockFrameLength { .. }
            | SingleBlockNotStreamed
            | FrameLengthZero { .. } => Stage::Header,
            FrameTruncated { .. }
            | SequenceMismatch { .. }
            | IvMismatch { .. }
            | FinalFrameTooLong { .. }
            | SingleBlockTooLong { .. }
            | FooterTruncated { .. }
            | NoDataKeyYet
            | TrailingBytes { .. } => Stage::Body,
            MissingPublicKey
            | UnexpectedPublicKey
            | InvalidPublicKey(_)
            | SignatureInvalid { .. } => Stage::Signature,
            DataKeyLength { .. } | CommitmentMismatch => Stage::Commitment,
            HeaderTagInvalid => Stage::HeaderTag,
            FrameTagInvalid { .. } | SingleBlockTagInvalid { .. } => Stage::Content,
            BidFileSuite { .. }
            | BidFileDataKeyCount { .. }
            | BidFileProvider { .. }
            | BidFileKeyArn { .. }
            | BidFileMissingContextKey { .. }
            | BidFileExtraContextKey { .. }
            | BidFileRules { .. }
            | BidFileSingleBlock
            | BidFileAuction { .. }
            | BidFileBuyer { .. } => Stage::Policy,
            EncodeFrameLength
            | EncodeReservedContextKey { .. }
            | EncodeFieldTooLong { .. }
            | EncodeTooManyFrames { .. }
            | Crypto(_) => Stage::Encode,
        }
    }
}

/// A header string for an error message: escaped, at most 80 characters.
pub(crate) fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}
