//! The version-2 header: body fields, then the 16-byte authentication tag.
//!
//! ```text
//! 02 | suite u16 | message id [32]
//! | context: u16 length, and when non-zero: u16 count, count × (u16 len, key, u16 len, value)
//!   (UTF-8, keys unique; writers sort them by key, readers accept any order)
//! | data keys: u16 count, count × (u16 len, provider id, u16 len, provider info, u16 len, key)
//! | content type u8 | frame length u32 | commitment [32]
//! | header tag [16]      (AES-256-GCM over nothing, zero IV, AAD = everything before it)
//! ```

use super::error::{EsdkError, shown};
use super::{
    ContentType, IV_LEN, KEY_LEN, Limits, MESSAGE_ID_LEN, PUBLIC_KEY_CONTEXT_KEY, Suite, TAG_LEN,
    VERSION,
};
use std::collections::BTreeMap;

/// A bounds-checked reader over the message; every shortfall is [`EsdkError::Truncated`]
/// naming the field, unless a frame is being read (see `frames`).
pub(crate) struct Cursor<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// `n` bytes, or how many are missing.
    pub(crate) fn try_take(&mut self, n: usize) -> Result<&'a [u8], usize> {
        if n > self.remaining() {
            return Err(n - self.remaining());
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], EsdkError> {
        let offset = self.pos;
        self.try_take(n).map_err(|needed| EsdkError::Truncated {
            field,
            offset,
            needed,
        })
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], EsdkError> {
        Ok(self.take(N, field)?.try_into().expect("N bytes"))
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, EsdkError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, EsdkError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, EsdkError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// A u16 length, then that many bytes.
    fn sized(
        &mut self,
        len_field: &'static str,
        field: &'static str,
    ) -> Result<&'a [u8], EsdkError> {
        let len = self.u16(len_field)?;
        self.take(len.into(), field)
    }
}

/// One encrypted data key entry. For KMS keys (`aws-kms`) the provider info is the key ARN
/// and the encrypted key a KMS `CiphertextBlob`; raw keyrings put binary data in the provider
/// info, hence bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKey {
    pub provider_id: String,
    pub provider_info: Vec<u8>,
    pub encrypted_key: Vec<u8>,
}

impl DataKey {
    /// The provider info as text (a key ARN for `aws-kms`), when it is UTF-8.
    pub fn provider_info_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.provider_info).ok()
    }
}

/// The parsed header. `body_end` is the end of the header body (the header tag's AAD).
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) suite: Suite,
    pub(crate) message_id: [u8; MESSAGE_ID_LEN],
    pub(crate) context: BTreeMap<String, String>,
    pub(crate) data_keys: Vec<DataKey>,
    pub(crate) content_type: ContentType,
    pub(crate) frame_length: u32,
    pub(crate) commitment: [u8; KEY_LEN],
    pub(crate) body_end: usize,
    pub(crate) tag: [u8; TAG_LEN],
}

/// Reads the header from the start of `cur`, leaving `cur` after the header tag.
pub(crate) fn parse(cur: &mut Cursor<'_>, limits: &Limits) -> Result<Header, EsdkError> {
    let version = cur.u8("version")?;
    if version != VERSION {
        return Err(EsdkError::UnsupportedVersion { found: version });
    }
    let suite_id = cur.u16("algorithm suite id")?;
    let suite = Suite::from_id(suite_id).ok_or(EsdkError::UnsupportedSuite { found: suite_id })?;
    let message_id = cur.array("message id")?;
    let context = parse_context(cur, limits)?;
    let data_keys = parse_data_keys(cur, limits)?;

    let offset = cur.pos;
    let content_type = match cur.u8("content type")? {
        0x01 => ContentType::SingleBlock,
        0x02 => ContentType::Framed,
        found => return Err(EsdkError::UnsupportedContentType { offset, found }),
    };
    let offset = cur.pos;
    let frame_length = cur.u32("frame length")?;
    match content_type {
        ContentType::SingleBlock if frame_length != 0 => {
            return Err(EsdkError::SingleBlockFrameLength {
                offset,
                found: frame_length,
            });
        }
        ContentType::Framed if frame_length == 0 => {
            return Err(EsdkError::FrameLengthZero { offset });
        }
        ContentType::Framed if frame_length > limits.max_frame_length => {
            return Err(EsdkError::FrameLengthOverLimit {
                offset,
                found: frame_length,
                limit: limits.max_frame_length,
            });
        }
        _ => {}
    }
    let commitment = cur.array("key commitment")?;
    let body_end = cur.pos;
    let tag = cur.array("header authentication tag")?;

    match (
        suite.is_signed(),
        context.contains_key(PUBLIC_KEY_CONTEXT_KEY),
    ) {
        (true, false) => return Err(EsdkError::MissingPublicKey),
        (false, true) => return Err(EsdkError::UnexpectedPublicKey),
        _ => {}
    }
    Ok(Header {
        suite,
        message_id,
        context,
        data_keys,
        content_type,
        frame_length,
        commitment,
        body_end,
        tag,
    })
}

fn parse_context(
    cur: &mut Cursor<'_>,
    limits: &Limits,
) -> Result<BTreeMap<String, String>, EsdkError> {
    let mut context = BTreeMap::new();
    let declared = cur.u16("encryption context length")?;
    if declared == 0 {
        return Ok(context);
    }
    let start = cur.pos;
    let region = cur.take(declared.into(), "encryption context")?;
    // Offsets inside `region` are reported relative to the whole message.
    let mut inner = Cursor::new(region);
    let at = |inner: &Cursor<'_>| start + inner.pos;
    let count = inner.u16("").map_err(|_| EsdkError::ContextOverrun {
        pair: 0,
        offset: start,
        declared,
    })?;
    if count == 0 {
        return Err(EsdkError::ContextCountZero { offset: start });
    }
    if count > limits.max_context_pairs {
        return Err(EsdkError::TooManyContextPairs {
            offset: start,
            count,
            limit: limits.max_context_pairs,
        });
    }
    for pair in 1..=count {
        let offset = at(&inner);
        let overrun = |_| EsdkError::ContextOverrun {
            pair,
            offset,
            declared,
        };
        let key = inner.sized("", "").map_err(overrun)?;
        let value_offset = at(&inner);
        let value = inner.sized("", "").map_err(overrun)?;
        let key_str = std::str::from_utf8(key).map_err(|_| EsdkError::ContextNotUtf8 {
            pair,
            part: "key",
            offset,
        })?;
        let value_str = std::str::from_utf8(value).map_err(|_| EsdkError::ContextNotUtf8 {
            pair,
            part: "value",
            offset: value_offset,
        })?;
        // The format asks writers to sort pairs by key, but official messages from the
        // JavaScript SDK put aws-crypto-public-key last, and the SDKs read any order. The
        // header tag and signature cover the bytes as written, so order is not checked; a
        // repeated key would leave the context ambiguous and is refused.
        if context
            .insert(key_str.to_owned(), value_str.to_owned())
            .is_some()
        {
            return Err(EsdkError::DuplicateContextKey {
                pair,
                offset,
                key: shown(key_str),
            });
        }
    }
    if inner.remaining() != 0 {
        return Err(EsdkError::ContextLengthMismatch {
            offset: start,
            declared,
            used: inner.pos,
        });
    }
    Ok(context)
}

fn parse_data_keys(cur: &mut Cursor<'_>, limits: &Limits) -> Result<Vec<DataKey>, EsdkError> {
    let offset = cur.pos;
    let count = cur.u16("encrypted data key count")?;
    if count == 0 {
        return Err(EsdkError::NoDataKeys { offset });
    }
    if count > limits.max_data_keys {
        return Err(EsdkError::TooManyDataKeys {
            offset,
            count,
            limit: limits.max_data_keys,
        });
    }
    let mut keys = Vec::with_capacity(count.into());
    for key in 1..=count {
        let offset = cur.pos;
        let id = cur.sized("key provider id length", "key provider id")?;
        let provider_id = std::str::from_utf8(id)
            .map_err(|_| EsdkError::ProviderIdNotUtf8 { key, offset })?
            .to_owned();
        let provider_info = cur
            .sized("key provider info length", "key provider info")?
            .to_vec();
        let encrypted_key = cur
            .sized("encrypted data key length", "encrypted data key")?
            .to_vec();
        keys.push(DataKey {
            provider_id,
            provider_info,
            encrypted_key,
        });
    }
    Ok(keys)
}

/// The header body as the encoder writes it (the decoder never re-serialises: it
/// authenticates the bytes it was given).
pub(crate) fn serialize_body(
    suite: Suite,
    message_id: &[u8; MESSAGE_ID_LEN],
    context: &BTreeMap<String, String>,
    data_keys: &[DataKey],
    content_type: ContentType,
    frame_length: u32,
    commitment: &[u8; KEY_LEN],
) -> Result<Vec<u8>, EsdkError> {
    fn put(out: &mut Vec<u8>, field: &'static str, bytes: &[u8]) -> Result<(), EsdkError> {
        let len = u16::try_from(bytes.len()).map_err(|_| EsdkError::EncodeFieldTooLong {
            field,
            len: bytes.len(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
        Ok(())
    }
    let mut out = vec![VERSION];
    out.extend_from_slice(&suite.id().to_be_bytes());
    out.extend_from_slice(message_id);
    if context.is_empty() {
        out.extend_from_slice(&[0, 0]);
    } else {
        let mut pairs = Vec::new();
        let count = u16::try_from(context.len()).map_err(|_| EsdkError::EncodeFieldTooLong {
            field: "encryption context pair count",
            len: context.len(),
        })?;
        pairs.extend_from_slice(&count.to_be_bytes());
        // BTreeMap<String, _> iterates in byte order of the UTF-8 keys, the order required.
        for (k, v) in context {
            put(&mut pairs, "encryption context key", k.as_bytes())?;
            put(&mut pairs, "encryption context value", v.as_bytes())?;
        }
        put(&mut out, "encryption context", &pairs)?;
    }
    let count = u16::try_from(data_keys.len()).map_err(|_| EsdkError::EncodeFieldTooLong {
        field: "encrypted data key count",
        len: data_keys.len(),
    })?;
    out.extend_from_slice(&count.to_be_bytes());
    for k in data_keys {
        put(&mut out, "key provider id", k.provider_id.as_bytes())?;
        put(&mut out, "key provider info", &k.provider_info)?;
        put(&mut out, "encrypted data key", &k.encrypted_key)?;
    }
    out.push(content_type.byte());
    out.extend_from_slice(&frame_length.to_be_bytes());
    out.extend_from_slice(commitment);
    Ok(out)
}

/// The IV the SDKs write for frame `seq`: eight zero bytes, then the sequence number.
pub(crate) fn frame_iv(seq: u32) -> [u8; IV_LEN] {
    let mut iv = [0u8; IV_LEN];
    iv[IV_LEN - 4..].copy_from_slice(&seq.to_be_bytes());
    iv
}
