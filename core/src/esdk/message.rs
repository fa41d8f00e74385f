//! A whole message: header, body, footer; parsed and signature-checked first, decrypted
//! second.

use super::derive::derive;
use super::error::EsdkError;
use super::frames::{self, FrameKind};
use super::header::{self, Cursor, DataKey, Header};
use super::{
    ContentType, IV_LEN, Limits, MESSAGE_ID_LEN, PUBLIC_KEY_CONTEXT_KEY, Plaintext, Suite,
};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1, ParsedPublicKey};
use base64::Engine;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Length of a compressed P-384 point: `02`/`03` then the 48-byte x coordinate.
const COMPRESSED_P384_LEN: usize = 49;

/// A message whose structure, limits and (suite 0x0578) signature have been checked. It
/// borrows the bytes it was parsed from; [`Message::decrypt`] opens it with the data key.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    bytes: &'a [u8],
    header: Header,
    /// Where the body starts and ends (the footer, if any, follows).
    body_start: usize,
    body_end: usize,
    frames: u32,
    plaintext_len: u64,
}

impl<'a> Message<'a> {
    /// Checks everything that can be checked without the data key: the header, every frame's
    /// framing, the limits, no trailing bytes, and for suite 0x0578 the footer's ECDSA P-384
    /// signature over all the bytes before it, with the key in `aws-crypto-public-key`.
    pub fn parse(bytes: &'a [u8], limits: &Limits) -> Result<Message<'a>, EsdkError> {
        if bytes.len() > limits.max_message_bytes {
            return Err(EsdkError::MessageTooLarge {
                len: bytes.len(),
                limit: limits.max_message_bytes,
            });
        }
        let mut cur = Cursor::new(bytes);
        let header = header::parse(&mut cur, limits)?;
        // The key is read before the body so that a malformed one is refused first.
        let verifier = match header.suite.is_signed() {
            true => Some(public_key(&header.context)?),
            false => None,
        };
        let body_start = cur.pos;
        let summary = frames::walk(&mut cur, &header, limits.max_frames, |_| Ok(()))?;
        let body_end = cur.pos;
        if let Some(key) = verifier {
            let offset = cur.pos;
            let signature = cur.sized_footer()?;
            if cur.remaining() != 0 {
                return Err(EsdkError::TrailingBytes {
                    offset: cur.pos,
                    count: cur.remaining(),
                });
            }
            key.verify_sig(&bytes[..offset], signature)
                .map_err(|_| EsdkError::SignatureInvalid { offset })?;
        } else if cur.remaining() != 0 {
            return Err(EsdkError::TrailingBytes {
                offset: cur.pos,
                count: cur.remaining(),
            });
        }
        Ok(Message {
            bytes,
            header,
            body_start,
            body_end,
            frames: summary.frames,
            plaintext_len: summary.plaintext_len,
        })
    }

    pub fn suite(&self) -> Suite {
        self.header.suite
    }

    pub fn content_type(&self) -> ContentType {
        self.header.content_type
    }

    pub fn message_id(&self) -> &[u8; MESSAGE_ID_LEN] {
        &self.header.message_id
    }

    /// The encryption context, `aws-crypto-public-key` included: KMS needs all of it to
    /// decrypt the data key.
    pub fn context(&self) -> &BTreeMap<String, String> {
        &self.header.context
    }

    pub fn data_keys(&self) -> &[DataKey] {
        &self.header.data_keys
    }

    /// The header's frame length (0 for a single block).
    pub fn frame_length(&self) -> u32 {
        self.header.frame_length
    }

    /// Frames in the body, the final one included (1 for a single block).
    pub fn frame_count(&self) -> u32 {
        self.frames
    }

    /// The plaintext's length, as the frames declare it.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Whether a footer signature was verified (suite 0x0578; parse refuses a bad one).
    pub fn signature_verified(&self) -> bool {
        self.header.suite.is_signed()
    }

    /// Header (with its tag), body and footer lengths in bytes.
    pub fn section_lengths(&self) -> (usize, usize, usize) {
        (
            self.body_start,
            self.body_end - self.body_start,
            self.bytes.len() - self.body_end,
        )
    }

    /// Opens the message with its plaintext data key: key commitment (constant time), header
    /// tag, then every frame in order. Nothing is returned unless all of them verify; on a
    /// failure the partial plaintext is zeroed.
    pub fn decrypt(&self, data_key: &[u8]) -> Result<Plaintext, EsdkError> {
        let h = &self.header;
        let derived = derive(h.suite, &h.message_id, data_key)?;
        if !crate::ct_eq(&derived.commitment, &h.commitment) {
            return Err(EsdkError::CommitmentMismatch);
        }
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &derived.content_key[..])
                .map_err(|_| EsdkError::Crypto("AES-256-GCM key"))?,
        );
        key.open_separate_gather(
            Nonce::assume_unique_for_key([0; IV_LEN]),
            Aad::from(&self.bytes[..h.body_end]),
            &[],
            &h.tag,
            &mut [],
        )
        .map_err(|_| EsdkError::HeaderTagInvalid)?;

        let len = usize::try_from(self.plaintext_len)
            .map_err(|_| EsdkError::Crypto("plaintext larger than memory"))?;
        let mut out = Zeroizing::new(vec![0u8; len]);
        let mut cur = Cursor::new(&self.bytes[..self.body_end]);
        cur.pos = self.body_start;
        let mut written = 0usize;
        let mut aad = Vec::with_capacity(MESSAGE_ID_LEN + 64);
        frames::walk(&mut cur, h, u32::MAX, |f| {
            let n = f.ciphertext.len();
            aad.clear();
            aad.extend_from_slice(&h.message_id);
            aad.extend_from_slice(f.kind.content_string());
            aad.extend_from_slice(&f.seq.to_be_bytes());
            aad.extend_from_slice(&(n as u64).to_be_bytes());
            key.open_separate_gather(
                Nonce::assume_unique_for_key(f.iv),
                Aad::from(&aad[..]),
                f.ciphertext,
                f.tag,
                &mut out[written..written + n],
            )
            .map_err(|_| match f.kind {
                FrameKind::SingleBlock => EsdkError::SingleBlockTagInvalid { offset: f.offset },
                _ => EsdkError::FrameTagInvalid {
                    frame: f.seq.into(),
                    offset: f.offset,
                },
            })?;
            written += n;
            Ok(())
        })?;
        debug_assert_eq!(written, len);
        Ok(Plaintext::new(out))
    }
}

/// A checked message that owns its bytes, for a holder that must wait (one KMS call) between
/// [`Message::parse`] and [`Message::decrypt`] without parsing, and verifying the signature,
/// twice. The bytes never change after the checks: they are private and only lent out.
#[derive(Clone)]
pub struct OwnedMessage {
    bytes: Vec<u8>,
    header: Header,
    body_start: usize,
    body_end: usize,
    frames: u32,
    plaintext_len: u64,
}

impl std::fmt::Debug for OwnedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedMessage")
            .field("len", &self.bytes.len())
            .field("suite", &self.header.suite)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl OwnedMessage {
    /// [`Message::parse`], keeping the bytes. On an error the bytes are dropped.
    pub fn parse(bytes: Vec<u8>, limits: &Limits) -> Result<OwnedMessage, EsdkError> {
        let m = Message::parse(&bytes, limits)?;
        let (header, body_start, body_end, frames, plaintext_len) = (
            m.header,
            m.body_start,
            m.body_end,
            m.frames,
            m.plaintext_len,
        );
        Ok(OwnedMessage {
            bytes,
            header,
            body_start,
            body_end,
            frames,
            plaintext_len,
        })
    }

    /// The checked message, borrowed (its header is copied: a few hundred bytes).
    pub fn message(&self) -> Message<'_> {
        Message {
            bytes: &self.bytes,
            header: self.header.clone(),
            body_start: self.body_start,
            body_end: self.body_end,
            frames: self.frames,
            plaintext_len: self.plaintext_len,
        }
    }

    /// The encryption context (see [`Message::context`]).
    pub fn context(&self) -> &BTreeMap<String, String> {
        &self.header.context
    }

    pub fn data_keys(&self) -> &[DataKey] {
        &self.header.data_keys
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// The footer: u16 length, then a DER ECDSA signature.
impl<'a> Cursor<'a> {
    fn sized_footer(&mut self) -> Result<&'a [u8], EsdkError> {
        let mut take = |n: usize, field| {
            let offset = self.pos;
            self.try_take(n)
                .map_err(|needed| EsdkError::FooterTruncated {
                    field,
                    offset,
                    needed,
                })
        };
        let len = take(2, "signature length")?;
        let len = u16::from_be_bytes([len[0], len[1]]);
        take(len.into(), "signature")
    }
}

/// The signing key named in the context: base64 of a compressed P-384 point.
pub(super) fn public_key(context: &BTreeMap<String, String>) -> Result<ParsedPublicKey, EsdkError> {
    let text = context
        .get(PUBLIC_KEY_CONTEXT_KEY)
        .ok_or(EsdkError::MissingPublicKey)?;
    let point = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| EsdkError::InvalidPublicKey("base64"))?;
    if point.len() != COMPRESSED_P384_LEN || !matches!(point[0], 0x02 | 0x03) {
        return Err(EsdkError::InvalidPublicKey(
            "a compressed P-384 point (49 bytes)",
        ));
    }
    ParsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, &point)
        .map_err(|_| EsdkError::InvalidPublicKey("a point on the P-384 curve"))
}
