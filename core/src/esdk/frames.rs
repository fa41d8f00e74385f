//! The body: framed or single block. Walked once by `parse` to check its structure and
//! again by `decrypt` to open it; both walks are this one function.
//!
//! ```text
//! regular frame: seq u32 | IV [12] | ciphertext [frame length] | tag [16]
//! final frame:   FF FF FF FF | seq u32 | IV [12] | len u32 | ciphertext [len] | tag [16]
//! single block:  IV [12] | len u64 | ciphertext [len] | tag [16]
//! ```
//!
//! Sequence numbers start at 1 and go up by one; the final frame comes exactly once, last,
//! and holds at most the frame length. An IV's last four bytes must be its frame's sequence
//! number (the first eight are used as written: some SDKs write `ff…ff` there).

use super::error::EsdkError;
use super::header::{Cursor, Header};
use super::{ContentType, FINAL_FRAME_MARKER, IV_LEN, MAX_SINGLE_BLOCK_LEN, TAG_LEN};

/// Which AAD content string a frame is authenticated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    Regular,
    Final,
    SingleBlock,
}

impl FrameKind {
    pub(crate) fn content_string(self) -> &'static [u8] {
        match self {
            FrameKind::Regular => b"AWSKMSEncryptionClient Frame",
            FrameKind::Final => b"AWSKMSEncryptionClient Final Frame",
            FrameKind::SingleBlock => b"AWSKMSEncryptionClient Single Block",
        }
    }
}

/// One frame, pointing into the message.
pub(crate) struct FrameRef<'a> {
    pub(crate) seq: u32,
    /// Where the frame starts.
    pub(crate) offset: usize,
    pub(crate) kind: FrameKind,
    pub(crate) iv: [u8; IV_LEN],
    pub(crate) ciphertext: &'a [u8],
    pub(crate) tag: &'a [u8],
}

/// What the walk found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodySummary {
    pub(crate) frames: u32,
    pub(crate) plaintext_len: u64,
}

struct FrameReader<'c, 'a> {
    cur: &'c mut Cursor<'a>,
    frame: u32,
}

impl<'a> FrameReader<'_, 'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], EsdkError> {
        let offset = self.cur.pos;
        self.cur
            .try_take(n)
            .map_err(|needed| EsdkError::FrameTruncated {
                frame: self.frame.into(),
                field,
                offset,
                needed,
            })
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, EsdkError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }

    fn iv(&mut self) -> Result<[u8; IV_LEN], EsdkError> {
        let offset = self.cur.pos;
        let iv: [u8; IV_LEN] = self.take(IV_LEN, "IV")?.try_into().expect("IV_LEN bytes");
        let found = u32::from_be_bytes(iv[IV_LEN - 4..].try_into().expect("4 bytes"));
        if found != self.frame {
            return Err(EsdkError::IvMismatch {
                frame: self.frame.into(),
                offset,
                found,
            });
        }
        Ok(iv)
    }
}

/// Walks the body from `cur`'s position, calling `visit` on each frame in order, and leaves
/// `cur` after the body.
pub(crate) fn walk<'a>(
    cur: &mut Cursor<'a>,
    header: &Header,
    max_frames: u32,
    mut visit: impl FnMut(&FrameRef<'a>) -> Result<(), EsdkError>,
) -> Result<BodySummary, EsdkError> {
    match header.content_type {
        ContentType::SingleBlock => {
            let offset = cur.pos;
            let mut r = FrameReader { cur, frame: 1 };
            let iv = r.iv()?;
            let len_bytes = r.take(8, "content length")?;
            let len = u64::from_be_bytes(len_bytes.try_into().expect("8 bytes"));
            if len > MAX_SINGLE_BLOCK_LEN {
                return Err(EsdkError::SingleBlockTooLong { offset, len });
            }
            // Past the remaining bytes (whatever usize is) means truncated.
            let n = usize::try_from(len).unwrap_or(usize::MAX);
            let ciphertext = r.take(n, "ciphertext")?;
            let tag = r.take(TAG_LEN, "authentication tag")?;
            visit(&FrameRef {
                seq: 1,
                offset,
                kind: FrameKind::SingleBlock,
                iv,
                ciphertext,
                tag,
            })?;
            Ok(BodySummary {
                frames: 1,
                plaintext_len: len,
            })
        }
        ContentType::Framed => {
            let frame_length = header.frame_length;
            let mut plaintext_len: u64 = 0;
            let mut seq: u32 = 1;
            loop {
                let offset = cur.pos;
                if seq > max_frames {
                    return Err(EsdkError::TooManyFrames {
                        frame: seq.into(),
                        offset,
                        limit: max_frames,
                    });
                }
                let mut r = FrameReader {
                    cur: &mut *cur,
                    frame: seq,
                };
                let first = r.u32("sequence number")?;
                if first == FINAL_FRAME_MARKER {
                    let seq_offset = r.cur.pos;
                    let found = r.u32("final sequence number")?;
                    if found != seq {
                        return Err(EsdkError::SequenceMismatch {
                            frame: seq.into(),
                            offset: seq_offset,
                            found,
                        });
                    }
                    let iv = r.iv()?;
                    let len = r.u32("content length")?;
                    if len > frame_length {
                        return Err(EsdkError::FinalFrameTooLong {
                            frame: seq.into(),
                            offset,
                            len,
                            frame_length,
                        });
                    }
                    let ciphertext = r.take(len as usize, "ciphertext")?;
                    let tag = r.take(TAG_LEN, "authentication tag")?;
                    visit(&FrameRef {
                        seq,
                        offset,
                        kind: FrameKind::Final,
                        iv,
                        ciphertext,
                        tag,
                    })?;
                    return Ok(BodySummary {
                        frames: seq,
                        plaintext_len: plaintext_len + u64::from(len),
                    });
                }
                if first != seq {
                    return Err(EsdkError::SequenceMismatch {
                        frame: seq.into(),
                        offset,
                        found: first,
                    });
                }
                let iv = r.iv()?;
                let ciphertext = r.take(frame_length as usize, "ciphertext")?;
                let tag = r.take(TAG_LEN, "authentication tag")?;
                visit(&FrameRef {
                    seq,
                    offset,
                    kind: FrameKind::Regular,
                    iv,
                    ciphertext,
                    tag,
                })?;
                plaintext_len += u64::from(frame_length);
                // A regular frame cannot carry FF FF FF FF (it reads as the final marker), so
                // `seq` stays below u32::MAX here.
                seq += 1;
            }
        }
    }
}
