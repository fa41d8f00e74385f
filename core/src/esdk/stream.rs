//! A message read as its bytes arrive, for the enclave, which keeps neither a bid file nor its
//! plaintext whole (DESIGN §8). [`Message`](super::Message) checks a whole message before the
//! data key is asked for; this decoder instead:
//!
//! 1. takes bytes until the header is complete ([`Pushed::HeaderDone`]), then waits for the
//!    data key: its caller checks [`StreamDecoder::header`] against the auction's policy and
//!    asks KMS for the key;
//! 2. [`StreamDecoder::open`] checks the key commitment (constant time) and the header tag;
//! 3. takes frames one at a time: each frame's tag is checked before its plaintext is handed
//!    to the caller's sink, so no unauthenticated byte ever reaches it;
//! 4. checks the footer's ECDSA P-384 signature over SHA-384 of every byte before it, hashed
//!    as they passed, and refuses bytes after the footer.
//!
//! A signature or frame that fails after earlier frames were handed out cannot take them back:
//! the caller must treat such an error as fatal for whatever it built from them (the enclave
//! fails the auction). Single-block messages are refused at the header: their one tag covers
//! the whole plaintext, which would have to be held whole. Offsets in errors are from the
//! start of the message, as in [`Message`](super::Message)'s.

use super::derive::derive;
use super::error::EsdkError;
use super::frames::FrameKind;
use super::header::{self, Cursor, DataKey, Header};
use super::{ContentType, FINAL_FRAME_MARKER, IV_LEN, Limits, MESSAGE_ID_LEN, Suite, TAG_LEN};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest;
use aws_lc_rs::signature::ParsedPublicKey;
use std::collections::BTreeMap;
use zeroize::Zeroize;

/// The longest header the decoder assembles: a bid file's is under 1 KiB.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// A final frame's fixed part: marker, sequence number, IV, content length.
const FINAL_PREFIX: usize = 4 + 4 + IV_LEN + 4;

/// What [`StreamDecoder::push`] did with its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Every byte was taken.
    All,
    /// The header is complete after the first `n` bytes of the input; the rest was not
    /// taken. Check [`StreamDecoder::header`], then call [`StreamDecoder::open`] with the data
    /// key before pushing more.
    HeaderDone(usize),
}

/// What the header says: everything the policy and the KMS call need.
pub struct HeaderView<'a> {
    pub suite: Suite,
    pub content_type: ContentType,
    pub frame_length: u32,
    pub context: &'a BTreeMap<String, String>,
    pub data_keys: &'a [DataKey],
}

enum State {
    Header,
    /// The header is read; the data key has not come yet.
    Keyless,
    Frames {
        key: LessSafeKey,
        seq: u32,
    },
    Footer,
    Done,
}

/// The incremental decoder; see the module documentation.
pub struct StreamDecoder {
    limits: Limits,
    state: State,
    header: Option<Header>,
    /// The unit being assembled: the header, then each frame, then the footer.
    buf: Vec<u8>,
    /// Bytes of the message taken so far (for limits and error offsets).
    taken: u64,
    /// Where the unit in `buf` starts in the message.
    unit_offset: u64,
    /// SHA-384 of every byte before the footer: what the footer signs.
    signed: digest::Context,
    verifier: Option<ParsedPublicKey>,
    frames: u32,
    plaintext_len: u64,
    aad: Vec<u8>,
}

impl StreamDecoder {
    pub fn new(limits: Limits) -> StreamDecoder {
        StreamDecoder {
            limits,
            state: State::Header,
            header: None,
            buf: Vec::with_capacity(1024),
            taken: 0,
            unit_offset: 0,
            signed: digest::Context::new(&digest::SHA384),
            verifier: None,
            frames: 0,
            plaintext_len: 0,
            aad: Vec::with_capacity(MESSAGE_ID_LEN + 64),
        }
    }

    /// The header, once [`Pushed::HeaderDone`] was returned.
    pub fn header(&self) -> Option<HeaderView<'_>> {
        self.header.as_ref().map(|h| HeaderView {
            suite: h.suite,
            content_type: h.content_type,
            frame_length: h.frame_length,
            context: &h.context,
            data_keys: &h.data_keys,
        })
    }

    /// Frames whose plaintext was handed out so far.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Plaintext bytes handed out so far.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Takes the next bytes of the message; plaintext of each authenticated frame goes to
    /// `sink`, in order. An error ends the decoder: nothing after it is taken.
    pub fn push(&mut self, input: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<Pushed, EsdkError> {
        let mut rest = input;
        while !rest.is_empty() {
            match self.state {
                State::Header => {
                    let before = self.buf.len();
                    let room = MAX_HEADER_BYTES.saturating_sub(before);
                    let n = room.min(rest.len());
                    self.buf.extend_from_slice(&rest[..n]);
                    match self.try_header()? {
                        Some(header_len) => {
                            let used = header_len - before;
                            self.taken += used as u64;
                            let done = input.len() - rest.len() + used;
                            return Ok(Pushed::HeaderDone(done));
                        }
                        None if self.buf.len() >= MAX_HEADER_BYTES => {
                            return Err(EsdkError::HeaderTooLong {
                                limit: MAX_HEADER_BYTES,
                            });
                        }
                        None => {
                            self.taken += n as u64;
                            rest = &rest[n..];
                        }
                    }
                }
                State::Keyless => return Err(EsdkError::NoDataKeyYet),
                State::Frames { .. } => {
                    let n = self.frame_bytes(rest, sink)?;
                    rest = &rest[n..];
                }
                State::Footer => {
                    let n = self.footer_bytes(rest)?;
                    rest = &rest[n..];
                }
                State::Done => {
                    return Err(EsdkError::TrailingBytes {
                        offset: self.taken as usize,
                        count: rest.len(),
                    });
                }
            }
        }
        Ok(Pushed::All)
    }

    /// The header, if `buf` holds all of it: its length. More bytes are needed while the
    /// parse runs out of them; any other error is the header's.
    fn try_header(&mut self) -> Result<Option<usize>, EsdkError> {
        let mut cur = Cursor::new(&self.buf);
        let header = match header::parse(&mut cur, &self.limits) {
            Ok(h) => h,
            Err(EsdkError::Truncated { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = cur.pos;
        if header.content_type == ContentType::SingleBlock {
            return Err(EsdkError::SingleBlockNotStreamed);
        }
        if header.suite.is_signed() {
            self.verifier = Some(super::message::public_key(&header.context)?);
        }
        self.signed.update(&self.buf[..len]);
        self.buf.truncate(len);
        self.header = Some(header);
        self.state = State::Keyless;
        Ok(Some(len))
    }

    /// Opens the message with its plaintext data key (from KMS): the key commitment, in
    /// constant time, then the header tag. Only then are frames taken.
    pub fn open(&mut self, data_key: &[u8]) -> Result<(), EsdkError> {
        let (State::Keyless, Some(h)) = (&self.state, &self.header) else {
            return Err(EsdkError::NoDataKeyYet);
        };
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
            Aad::from(&self.buf[..h.body_end]),
            &[],
            &h.tag,
            &mut [],
        )
        .map_err(|_| EsdkError::HeaderTagInvalid)?;
        let frame = FINAL_PREFIX + h.frame_length as usize + TAG_LEN;
        self.buf.clear();
        self.buf.reserve(frame);
        self.unit_offset = self.taken;
        self.state = State::Frames { key, seq: 1 };
        Ok(())
    }

    /// Takes bytes of the current frame; when it is whole, checks and opens it. Returns how
    /// many bytes of `input` it took.
    fn frame_bytes(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, EsdkError> {
        let mut used = 0;
        loop {
            // How many bytes the frame has, or how many tell that.
            let (target, whole) = self.frame_target()?;
            let n = (target - self.buf.len()).min(input.len() - used);
            if self.taken + n as u64 > self.limits.max_message_bytes as u64 {
                return Err(EsdkError::MessageTooLarge {
                    len: (self.taken + n as u64) as usize,
                    limit: self.limits.max_message_bytes,
                });
            }
            self.buf.extend_from_slice(&input[used..used + n]);
            self.taken += n as u64;
            used += n;
            if self.buf.len() < target {
                return Ok(used);
            }
            if whole {
                self.open_frame(sink)?;
                return Ok(used);
            }
        }
    }

    /// The bytes the frame in `buf` needs, and whether that is the whole frame (`false`: only
    /// the part that tells its length).
    fn frame_target(&self) -> Result<(usize, bool), EsdkError> {
        let frame_length = self.header.as_ref().map_or(0, |h| h.frame_length);
        if self.buf.len() < 4 {
            return Ok((4, false));
        }
        if self.buf[..4] != FINAL_FRAME_MARKER.to_be_bytes() {
            return Ok((4 + IV_LEN + frame_length as usize + TAG_LEN, true));
        }
        if self.buf.len() < FINAL_PREFIX {
            return Ok((FINAL_PREFIX, false));
        }
        let len = u32::from_be_bytes(self.buf[20..24].try_into().expect("4 bytes"));
        if len > frame_length {
            return Err(EsdkError::FinalFrameTooLong {
                frame: self.seq().into(),
                offset: self.unit_offset as usize,
                len,
                frame_length,
            });
        }
        Ok((FINAL_PREFIX + len as usize + TAG_LEN, true))
    }

    fn seq(&self) -> u32 {
        match self.state {
            State::Frames { seq, .. } => seq,
            _ => 0,
        }
    }

    /// `buf` holds one whole frame: check its sequence number and IV, open it, hand its
    /// plaintext out, then forget it.
    fn open_frame(&mut self, sink: &mut dyn FnMut(&[u8])) -> Result<(), EsdkError> {
        let State::Frames { key, seq } = &mut self.state else {
            unreachable!("frames are read only in the Frames state")
        };
        let h = self.header.as_ref().expect("frames come after the header");
        let offset = self.unit_offset as usize;
        let frame = u64::from(*seq);
        if *seq > self.limits.max_frames {
            return Err(EsdkError::TooManyFrames {
                frame,
                offset,
                limit: self.limits.max_frames,
            });
        }
        let final_frame = self.buf[..4] == FINAL_FRAME_MARKER.to_be_bytes();
        let (kind, seq_at, iv_at, content_at) = match final_frame {
            true => (FrameKind::Final, 4, 8, FINAL_PREFIX),
            false => (FrameKind::Regular, 0, 4, 4 + IV_LEN),
        };
        let found = u32::from_be_bytes(self.buf[seq_at..seq_at + 4].try_into().expect("4"));
        if found != *seq {
            return Err(EsdkError::SequenceMismatch {
                frame,
                offset: offset + seq_at,
                found,
            });
        }
        let iv: [u8; IV_LEN] = self.buf[iv_at..iv_at + IV_LEN].try_into().expect("IV");
        let iv_seq = u32::from_be_bytes(iv[IV_LEN - 4..].try_into().expect("4 bytes"));
        if iv_seq != *seq {
            return Err(EsdkError::IvMismatch {
                frame,
                offset: offset + iv_at,
                found: iv_seq,
            });
        }
        let tag_at = self.buf.len() - TAG_LEN;
        let n = tag_at - content_at;
        self.aad.clear();
        self.aad.extend_from_slice(&h.message_id);
        self.aad.extend_from_slice(kind.content_string());
        self.aad.extend_from_slice(&seq.to_be_bytes());
        self.aad.extend_from_slice(&(n as u64).to_be_bytes());
        // What the footer signs is the frame as it came, so it is hashed before it is opened
        // in place.
        self.signed.update(&self.buf);
        let (head, tag) = self.buf.split_at_mut(tag_at);
        let content = &mut head[content_at..];
        key.open_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(&self.aad[..]),
            tag,
            content,
        )
        .map_err(|_| EsdkError::FrameTagInvalid { frame, offset })?;
        sink(content);
        content.zeroize();
        self.frames = *seq;
        self.plaintext_len += n as u64;
        self.buf.clear();
        self.unit_offset = self.taken;
        if final_frame {
            self.state = match h.suite.is_signed() {
                true => State::Footer,
                false => State::Done,
            };
        } else if *seq == u32::MAX - 1 {
            // The next sequence number would read as the final frame's marker.
            return Err(EsdkError::TooManyFrames {
                frame: frame + 1,
                offset: self.taken as usize,
                limit: self.limits.max_frames,
            });
        } else {
            *seq += 1;
        }
        Ok(())
    }

    /// Takes bytes of the footer (u16 length, then the signature); when it is whole, checks
    /// the signature over everything before the footer.
    fn footer_bytes(&mut self, input: &[u8]) -> Result<usize, EsdkError> {
        let mut used = 0;
        loop {
            let target = match self.buf.len() {
                0 | 1 => 2,
                _ => 2 + usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]])),
            };
            if target == 2 && self.buf.len() == 2 {
                // A signature of no bytes is never valid.
                return Err(EsdkError::SignatureInvalid {
                    offset: self.unit_offset as usize,
                });
            }
            let n = (target - self.buf.len()).min(input.len() - used);
            self.buf.extend_from_slice(&input[used..used + n]);
            self.taken += n as u64;
            used += n;
            if self.buf.len() < target {
                return Ok(used);
            }
            if target > 2 {
                let offset = self.unit_offset as usize;
                let signed =
                    std::mem::replace(&mut self.signed, digest::Context::new(&digest::SHA384));
                let key = self.verifier.as_ref().ok_or(EsdkError::MissingPublicKey)?;
                key.verify_digest_sig(&signed.finish(), &self.buf[2..])
                    .map_err(|_| EsdkError::SignatureInvalid { offset })?;
                self.buf.clear();
                self.state = State::Done;
                return Ok(used);
            }
        }
    }

    /// The end of the message's bytes: everything must have come, footer included.
    pub fn finish(&self) -> Result<(), EsdkError> {
        let field = match self.state {
            State::Done => return Ok(()),
            State::Header => "header",
            State::Keyless | State::Frames { .. } => "frame",
            State::Footer => "signature",
        };
        Err(EsdkError::Truncated {
            field,
            offset: self.unit_offset as usize,
            needed: 1,
        })
    }
}

impl Drop for StreamDecoder {
    fn drop(&mut self) {
        // The buffer held plaintext in place while a frame was handed out.
        self.buf.zeroize();
    }
}
