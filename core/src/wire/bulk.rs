//! Bulk frames: a file chunk or a result chunk is a tag byte, a fixed header and the raw
//! bytes, not JSON. Nearly every byte on the wire is a chunk's, and base64 inside JSON cost
//! the enclave more than the envelope floor's crypto (decode, encode, and serde_json scanning
//! every base64 string for escapes; issue 23). The other messages stay JSON: they are few and
//! small, and their strictness and scrubbed errors are worth more than their cost.
//!
//! ```text
//! file chunk    01 | flags (bit 0: last) | id u64 BE | n u8 | buyer (n bytes) | data
//! result chunk  02 | flags (bit 0: has id, bit 1: json) | id u64 BE (0 without one) | data
//! ```
//!
//! A JSON frame starts with `{` or whitespace, never with a tag byte, so one byte tells the
//! two apart. Decoding is as strict as the JSON side: unknown flag bits, a short header, an id
//! without its flag and an invalid buyer name are errors that name the field, and each message
//! has exactly one encoding (the fuzz target checks the round trip).

use super::message::{FileChunk, OutputFile, ResultChunk};
use crate::names::BuyerName;

pub(super) const FILE_CHUNK: u8 = 0x01;
pub(super) const RESULT_CHUNK: u8 = 0x02;

const LAST: u8 = 0x01;
const HAS_ID: u8 = 0x01;
const JSON: u8 = 0x02;

/// What every bulk frame starts with: tag, flags, id.
const HEAD: usize = 1 + 1 + 8;
/// Header bytes before a file chunk's data at the most: the head, the buyer's name and length.
pub const FILE_CHUNK_HEADER_MAX: usize = HEAD + 1 + crate::names::MAX_BUYER_NAME_LEN;

/// What went wrong, and the request id once the frame got that far.
pub(super) struct BulkError {
    pub id: Option<u64>,
    pub detail: String,
}

impl BulkError {
    pub(super) fn in_frame(self, frame: u64) -> super::message::MessageError {
        super::message::MessageError {
            frame,
            id: self.id,
            detail: self.detail,
        }
    }
}

fn err(id: Option<u64>, detail: String) -> BulkError {
    BulkError { id, detail }
}

pub(super) fn encode_file_chunk(id: u64, c: &FileChunk) -> Vec<u8> {
    let buyer = c.buyer.as_str().as_bytes();
    let mut out = Vec::with_capacity(HEAD + 1 + buyer.len() + c.data.len());
    out.push(FILE_CHUNK);
    out.push(if c.last { LAST } else { 0 });
    out.extend_from_slice(&id.to_be_bytes());
    // A buyer name is at most 64 bytes (names::MAX_BUYER_NAME_LEN): it fits its length byte.
    out.push(buyer.len() as u8);
    out.extend_from_slice(buyer);
    out.extend_from_slice(&c.data);
    out
}

pub(super) fn encode_result_chunk(id: Option<u64>, c: &ResultChunk) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + c.data.len());
    out.push(RESULT_CHUNK);
    let json = if c.file == OutputFile::Json { JSON } else { 0 };
    out.push(json | if id.is_some() { HAS_ID } else { 0 });
    out.extend_from_slice(&id.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&c.data);
    out
}

/// The tag, flags and id every bulk frame starts with; `what` names the frame in errors.
fn head(payload: &[u8], what: &str, known: u8) -> Result<(u8, u64), BulkError> {
    let Some((fixed, _)) = payload.split_first_chunk::<HEAD>() else {
        return Err(err(
            None,
            format!(
                "a {what} frame of {} bytes is shorter than its {HEAD}-byte header",
                payload.len()
            ),
        ));
    };
    let flags = fixed[1];
    let id = u64::from_be_bytes(fixed[2..].try_into().expect("8 bytes"));
    if flags & !known != 0 {
        return Err(err(
            Some(id),
            format!("{what}: unknown flags 0x{:02x}", flags & !known),
        ));
    }
    Ok((flags, id))
}

pub(super) fn decode_file_chunk(payload: &[u8]) -> Result<(u64, FileChunk), BulkError> {
    let (flags, id) = head(payload, "file chunk", LAST)?;
    let rest = &payload[HEAD..];
    let Some((&n, rest)) = rest.split_first() else {
        return Err(err(Some(id), "file chunk: no buyer name length".into()));
    };
    let n = usize::from(n);
    if rest.len() < n {
        return Err(err(
            Some(id),
            format!(
                "file chunk: the buyer name is {n} bytes but only {} follow",
                rest.len()
            ),
        ));
    }
    let (name, data) = rest.split_at(n);
    let buyer = std::str::from_utf8(name)
        .map_err(|_| err(Some(id), "file chunk: the buyer name is not UTF-8".into()))
        .and_then(|s| {
            BuyerName::new(s).map_err(|e| err(Some(id), format!("file chunk: buyer: {e}")))
        })?;
    Ok((
        id,
        FileChunk {
            buyer,
            data: data.to_vec(),
            last: flags & LAST != 0,
        },
    ))
}

pub(super) fn decode_result_chunk(payload: &[u8]) -> Result<(Option<u64>, ResultChunk), BulkError> {
    let (flags, id) = head(payload, "result chunk", HAS_ID | JSON)?;
    let id = if flags & HAS_ID != 0 {
        Some(id)
    } else if id != 0 {
        return Err(err(
            None,
            "result chunk: an id without the flag that says it has one".into(),
        ));
    } else {
        None
    };
    let file = if flags & JSON != 0 {
        OutputFile::Json
    } else {
        OutputFile::Csv
    };
    Ok((
        id,
        ResultChunk {
            file,
            data: payload[HEAD..].to_vec(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::super::message::*;
    use proptest::prelude::*;

    fn chunk(id: u64, buyer: &str, data: &[u8], last: bool) -> ToEnclave {
        ToEnclave {
            id,
            msg: Request::FileChunk(FileChunk {
                buyer: crate::names::BuyerName::new(buyer).unwrap(),
                data: data.to_vec(),
                last,
            }),
        }
    }

    #[test]
    fn shapes_on_the_wire() {
        assert_eq!(
            encode_request(&chunk(0x0102, "B1", b"ab", true)),
            b"\x01\x01\0\0\0\0\0\0\x01\x02\x02B1ab"
        );
        let r = FromEnclave {
            id: Some(7),
            msg: Response::ResultChunk(ResultChunk {
                file: OutputFile::Json,
                data: b"{}".to_vec(),
            }),
        };
        assert_eq!(encode_response(&r), b"\x02\x03\0\0\0\0\0\0\0\x07{}");
        assert_eq!(decode_response(1, &encode_response(&r)).unwrap(), r);
        let r = FromEnclave {
            id: None,
            msg: Response::ResultChunk(ResultChunk {
                file: OutputFile::Csv,
                data: Vec::new(),
            }),
        };
        assert_eq!(encode_response(&r), b"\x02\0\0\0\0\0\0\0\0\0");
        assert_eq!(decode_response(1, &encode_response(&r)).unwrap(), r);
    }

    #[test]
    fn errors_name_the_field_and_keep_the_id() {
        let e = |frame: &[u8]| decode_request(3, frame).unwrap_err();
        let short = e(b"\x01\x01\0\0");
        assert_eq!(
            short.to_string(),
            "frame 3: a file chunk frame of 4 bytes is shorter than its 10-byte header"
        );
        assert_eq!(short.id, None);
        let flags = e(b"\x01\x05\0\0\0\0\0\0\0\x09\x01B");
        assert_eq!(flags.detail, "file chunk: unknown flags 0x04");
        assert_eq!(flags.id, Some(9));
        assert_eq!(
            e(b"\x01\0\0\0\0\0\0\0\0\x09").detail,
            "file chunk: no buyer name length"
        );
        assert_eq!(
            e(b"\x01\0\0\0\0\0\0\0\0\x09\x05B").detail,
            "file chunk: the buyer name is 5 bytes but only 1 follow"
        );
        assert_eq!(
            e(b"\x01\0\0\0\0\0\0\0\0\x09\x01\xff").detail,
            "file chunk: the buyer name is not UTF-8"
        );
        assert!(
            e(b"\x01\0\0\0\0\0\0\0\0\x09\0")
                .detail
                .starts_with("file chunk: buyer: buyer name is empty"),
        );
        let e = |frame: &[u8]| decode_response(3, frame).unwrap_err();
        assert_eq!(
            e(b"\x02\x04\0\0\0\0\0\0\0\x01").detail,
            "result chunk: unknown flags 0x04"
        );
        assert_eq!(
            e(b"\x02\0\0\0\0\0\0\0\0\x01").detail,
            "result chunk: an id without the flag that says it has one"
        );
        // A result chunk is no request, and a file chunk no response.
        assert!(decode_request(1, b"\x02\x01\0\0\0\0\0\0\0\x01").is_err());
        assert!(decode_response(1, &encode_request(&chunk(1, "B", b"", false))).is_err());
    }

    #[test]
    fn chunks_have_no_json_spelling() {
        let e = decode_request(
            1,
            br#"{"id":7,"msg":{"file_chunk":{"buyer":"B","data":"","last":true}}}"#,
        )
        .unwrap_err();
        assert!(e.detail.contains("unknown variant `file_chunk`"), "{e}");
        assert_eq!(e.id, Some(7));
        let e = decode_response(
            1,
            br#"{"id":7,"msg":{"result_chunk":{"file":"csv","data":""}}}"#,
        )
        .unwrap_err();
        assert!(e.detail.contains("unknown variant `result_chunk`"), "{e}");
    }

    proptest! {
        #[test]
        fn result_chunks_round_trip(id in any::<Option<u64>>(), json in any::<bool>(), data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let file = if json { OutputFile::Json } else { OutputFile::Csv };
            let r = FromEnclave { id, msg: Response::ResultChunk(ResultChunk { file, data }) };
            prop_assert_eq!(decode_response(1, &encode_response(&r)).unwrap(), r);
        }

        #[test]
        fn any_bulk_frame_decodes_to_its_one_encoding(tag in 1u8..=2, data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut frame = vec![tag];
            frame.extend_from_slice(&data);
            if let Ok(m) = decode_request(1, &frame) {
                prop_assert_eq!(encode_request(&m), frame.clone());
            }
            if let Ok(m) = decode_response(1, &frame) {
                prop_assert_eq!(encode_response(&m), frame);
            }
        }
    }
}
