//! A small, strict BER reader: just enough of X.690 to walk CMS as KMS and OpenSSL write it.
//!
//! Definite and indefinite lengths, primitive and constructed values, low and high tag numbers.
//! It hands out borrowed slices and never allocates except where a constructed string has to
//! be glued together. Everything an attacker controls is checked before use: each length
//! against the bytes left in the enclosing value, nesting against [`MAX_DEPTH`], and the search
//! for an indefinite length's end-of-contents is a loop with a depth counter, not recursion.
//!
//! What BER allows but nobody needs here is refused rather than half supported: length fields
//! of more than four octets, tag numbers above `u32`, and constructed strings nested inside
//! constructed strings (CER forbids those too). Non-minimal lengths are accepted because BER
//! allows them; a non-minimal tag number is refused because X.690 forbids it even in BER.
//!
//! Every error carries the byte offset from the start of the input and says what was expected,
//! so an operator can find the spot with `openssl asn1parse -i -inform DER`.

use std::borrow::Cow;
use std::fmt;

/// Deepest nesting accepted. CMS EnvelopedData with RSAES-OAEP parameters reaches depth 10.
pub const MAX_DEPTH: usize = 16;
/// Most octets in a long-form length: four cover 4 GiB, far beyond any envelope we open.
const MAX_LENGTH_OCTETS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Universal,
    Application,
    Context,
    Private,
}

/// An identifier: class, primitive/constructed, tag number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub class: Class,
    pub constructed: bool,
    pub number: u32,
}

impl Tag {
    pub const INTEGER: Tag = Tag::universal(2, false);
    pub const OCTET_STRING: Tag = Tag::universal(4, false);
    pub const NULL: Tag = Tag::universal(5, false);
    pub const OID: Tag = Tag::universal(6, false);
    pub const SEQUENCE: Tag = Tag::universal(16, true);
    pub const SET: Tag = Tag::universal(17, true);

    pub const fn universal(number: u32, constructed: bool) -> Tag {
        Tag {
            class: Class::Universal,
            constructed,
            number,
        }
    }

    pub const fn context(number: u32, constructed: bool) -> Tag {
        Tag {
            class: Class::Context,
            constructed,
            number,
        }
    }

    /// Same class and number, either form: BER may send any string type constructed.
    pub fn same_type(self, other: Tag) -> bool {
        self.class == other.class && self.number == other.number
    }

    fn is_end_of_contents(self) -> bool {
        self.class == Class::Universal && self.number == 0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match (self.class, self.number) {
            (Class::Universal, 0) => Some("end-of-contents"),
            (Class::Universal, 1) => Some("BOOLEAN"),
            (Class::Universal, 2) => Some("INTEGER"),
            (Class::Universal, 3) => Some("BIT STRING"),
            (Class::Universal, 4) => Some("OCTET STRING"),
            (Class::Universal, 5) => Some("NULL"),
            (Class::Universal, 6) => Some("OBJECT IDENTIFIER"),
            (Class::Universal, 16) => Some("SEQUENCE"),
            (Class::Universal, 17) => Some("SET"),
            _ => None,
        };
        match (name, self.class) {
            (Some(name), _) => f.write_str(name)?,
            (None, Class::Universal) => write!(f, "[UNIVERSAL {}]", self.number)?,
            (None, Class::Application) => write!(f, "[APPLICATION {}]", self.number)?,
            (None, Class::Context) => write!(f, "[{}]", self.number)?,
            (None, Class::Private) => write!(f, "[PRIVATE {}]", self.number)?,
        }
        f.write_str(if self.constructed {
            " (constructed)"
        } else {
            " (primitive)"
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BerError {
    #[error("BER: input ends at byte {offset} where {expected} was expected")]
    Truncated {
        offset: usize,
        expected: &'static str,
    },
    #[error("BER: the enclosing value ends at byte {offset} where {expected} was expected")]
    Missing {
        offset: usize,
        expected: &'static str,
    },
    #[error("BER: at byte {offset}: expected {expected}, found {found}")]
    UnexpectedTag {
        offset: usize,
        expected: &'static str,
        found: Tag,
    },
    #[error(
        "BER: at byte {offset}: length {len} runs past the end of the enclosing value \
         ({available} bytes left)"
    )]
    LengthOverrun {
        offset: usize,
        len: usize,
        available: usize,
    },
    #[error(
        "BER: at byte {offset}: length field of {octets} octets; at most {MAX_LENGTH_OCTETS} \
         are supported"
    )]
    LengthTooLong { offset: usize, octets: usize },
    #[error("BER: at byte {offset}: length octet 0xff is reserved by X.690")]
    ReservedLength { offset: usize },
    #[error("BER: at byte {offset}: indefinite length on a primitive value")]
    IndefinitePrimitive { offset: usize },
    #[error("BER: at byte {offset}: tag number is not in its shortest form")]
    NonMinimalTag { offset: usize },
    #[error("BER: at byte {offset}: tag number does not fit in 32 bits")]
    TagTooLarge { offset: usize },
    #[error("BER: at byte {offset}: nesting deeper than {MAX_DEPTH} levels")]
    TooDeep { offset: usize },
    #[error(
        "BER: at byte {offset}: end-of-contents marker (or universal tag 0) outside an \
         indefinite-length value"
    )]
    UnexpectedEndOfContents { offset: usize },
    #[error("BER: at byte {offset}: malformed end-of-contents marker, expected the bytes 00 00")]
    BadEndOfContents { offset: usize },
    #[error(
        "BER: the indefinite-length value at byte {offset} has no end-of-contents marker \
         before its enclosing value ends"
    )]
    MissingEndOfContents { offset: usize },
    #[error("BER: at byte {offset}: {count} unexpected bytes after {after}")]
    TrailingData {
        offset: usize,
        count: usize,
        after: &'static str,
    },
}

/// One value. For an indefinite length, `content` stops before the end-of-contents marker,
/// so callers never need to know which length form was used.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    pub tag: Tag,
    /// Offset of the identifier octet from the start of the input.
    pub offset: usize,
    pub content: &'a [u8],
    pub indefinite: bool,
    content_offset: usize,
    depth: usize,
}

impl<'a> Tlv<'a> {
    /// A reader over the values inside this constructed value.
    pub fn children(&self) -> Result<Reader<'a>, BerError> {
        if !self.tag.constructed {
            return Err(BerError::UnexpectedTag {
                offset: self.offset,
                expected: "a constructed value",
                found: self.tag,
            });
        }
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(BerError::TooDeep {
                offset: self.content_offset,
            });
        }
        Ok(Reader {
            data: self.content,
            offset: self.content_offset,
            depth,
        })
    }

    /// The octets of a string type in either form. A constructed string is the concatenation
    /// of primitive OCTET STRING segments; only then does this allocate, at most the size of
    /// the value itself.
    pub fn string_octets(&self) -> Result<Cow<'a, [u8]>, BerError> {
        if !self.tag.constructed {
            return Ok(Cow::Borrowed(self.content));
        }
        let mut segments = self.children()?;
        let mut out = Vec::with_capacity(self.content.len());
        while !segments.is_empty() {
            let segment =
                segments.read_tag(Tag::OCTET_STRING, "a primitive OCTET STRING segment")?;
            out.extend_from_slice(segment.content);
        }
        Ok(Cow::Owned(out))
    }
}

/// Reads consecutive values from one level of nesting.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    /// Offset of `data[0]` from the start of the input.
    offset: usize,
    /// Depth of the values this reader yields (0 for the top level).
    depth: usize,
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Reader {
            data: input,
            offset: 0,
            depth: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Offset of the next unread byte from the start of the input.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The next value's tag, without consuming it; `None` at the end.
    pub fn peek_tag(&self) -> Result<Option<Tag>, BerError> {
        if self.data.is_empty() {
            return Ok(None);
        }
        Ok(Some(header(self.data, self.offset)?.tag))
    }

    /// The next value, whatever it is.
    pub fn read(&mut self, expected: &'static str) -> Result<Tlv<'a>, BerError> {
        if self.data.is_empty() {
            return Err(BerError::Missing {
                offset: self.offset,
                expected,
            });
        }
        let h = header(self.data, self.offset)?;
        if h.tag.is_end_of_contents() {
            return Err(BerError::UnexpectedEndOfContents {
                offset: self.offset,
            });
        }
        let rest = self.data.get(h.len_octets_end..).unwrap_or_default();
        let content_offset = self.offset + h.len_octets_end;
        let (content, consumed) = match h.len {
            Some(len) => {
                let content = rest.get(..len).ok_or(BerError::LengthOverrun {
                    offset: self.offset,
                    len,
                    available: rest.len(),
                })?;
                (content, len)
            }
            None => {
                let end = find_end_of_contents(rest, content_offset, self.depth, self.offset)?;
                (rest.get(..end).unwrap_or_default(), end + 2)
            }
        };
        let tlv = Tlv {
            tag: h.tag,
            offset: self.offset,
            content,
            indefinite: h.len.is_none(),
            content_offset,
            depth: self.depth,
        };
        let advance = h.len_octets_end + consumed;
        self.data = self.data.get(advance..).unwrap_or_default();
        self.offset += advance;
        Ok(tlv)
    }

    /// The next value, which must carry exactly `tag` (form included).
    pub fn read_tag(&mut self, tag: Tag, expected: &'static str) -> Result<Tlv<'a>, BerError> {
        match self.peek_tag()? {
            Some(found) if found != tag => Err(BerError::UnexpectedTag {
                offset: self.offset,
                expected,
                found,
            }),
            _ => self.read(expected),
        }
    }

    /// The next value if it carries exactly `tag`; otherwise nothing is consumed.
    pub fn read_optional(&mut self, tag: Tag) -> Result<Option<Tlv<'a>>, BerError> {
        match self.peek_tag()? {
            Some(found) if found == tag => self.read("").map(Some),
            _ => Ok(None),
        }
    }

    /// The octets of the next value, a string type of `tag`'s class and number in either form.
    pub fn read_octets(
        &mut self,
        tag: Tag,
        expected: &'static str,
    ) -> Result<Cow<'a, [u8]>, BerError> {
        match self.peek_tag()? {
            Some(found) if !found.same_type(tag) => Err(BerError::UnexpectedTag {
                offset: self.offset,
                expected,
                found,
            }),
            _ => self.read(expected)?.string_octets(),
        }
    }

    /// Fails unless every byte has been read.
    pub fn finish(&self, after: &'static str) -> Result<(), BerError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(BerError::TrailingData {
                offset: self.offset,
                count: self.data.len(),
                after,
            })
        }
    }
}

/// Checks that `input` is exactly one or more well-formed values, descending into every
/// constructed one, and calls `visit` on each. The explicit stack is bounded by [`MAX_DEPTH`].
pub fn walk(input: &[u8], mut visit: impl FnMut(&Tlv<'_>)) -> Result<(), BerError> {
    let mut stack = vec![Reader::new(input)];
    while let Some(reader) = stack.last_mut() {
        if reader.is_empty() {
            stack.pop();
            continue;
        }
        let tlv = reader.read("a value")?;
        visit(&tlv);
        if tlv.tag.constructed {
            stack.push(tlv.children()?);
        }
    }
    Ok(())
}

struct Header {
    tag: Tag,
    /// Index just past the length octets, where the content starts.
    len_octets_end: usize,
    /// `None` for the indefinite form.
    len: Option<usize>,
}

/// Parses identifier and length octets at the start of `data`, which sits at `base`.
fn header(data: &[u8], base: usize) -> Result<Header, BerError> {
    let first = *data.first().ok_or(BerError::Truncated {
        offset: base,
        expected: "an identifier octet",
    })?;
    let class = match first >> 6 {
        0 => Class::Universal,
        1 => Class::Application,
        2 => Class::Context,
        _ => Class::Private,
    };
    let constructed = first & 0x20 != 0;
    let mut i = 1;
    let number = if first & 0x1f != 0x1f {
        u32::from(first & 0x1f)
    } else {
        let mut number: u32 = 0;
        loop {
            let b = *data.get(i).ok_or(BerError::Truncated {
                offset: base + i,
                expected: "a high tag number octet",
            })?;
            if i == 1 && b == 0x80 {
                return Err(BerError::NonMinimalTag { offset: base + i });
            }
            if number >> 25 != 0 {
                return Err(BerError::TagTooLarge { offset: base + i });
            }
            number = (number << 7) | u32::from(b & 0x7f);
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        if number < 0x1f {
            return Err(BerError::NonMinimalTag { offset: base + 1 });
        }
        number
    };
    let len_offset = base + i;
    let first_len = *data.get(i).ok_or(BerError::Truncated {
        offset: len_offset,
        expected: "a length octet",
    })?;
    i += 1;
    let len = match first_len {
        0x00..=0x7f => Some(usize::from(first_len)),
        0x80 if constructed => None,
        0x80 => return Err(BerError::IndefinitePrimitive { offset: base }),
        0xff => return Err(BerError::ReservedLength { offset: len_offset }),
        _ => {
            let octets = usize::from(first_len & 0x7f);
            if octets > MAX_LENGTH_OCTETS {
                return Err(BerError::LengthTooLong {
                    offset: len_offset,
                    octets,
                });
            }
            let bytes = data.get(i..i + octets).ok_or(BerError::Truncated {
                offset: base + i,
                expected: "the rest of a long-form length",
            })?;
            i += octets;
            // At most four octets, so this fits in u32 and therefore in usize.
            Some(bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b)))
        }
    };
    Ok(Header {
        tag: Tag {
            class,
            constructed,
            number,
        },
        len_octets_end: i,
        len,
    })
}

/// Finds where the end-of-contents marker closing an indefinite-length value sits in `data`
/// (the bytes after its header, at offset `base`). Nested definite values are skipped whole;
/// nested indefinite ones are counted, so the search needs no recursion. `depth` is the depth
/// of the value being closed, `start` its offset, for errors.
fn find_end_of_contents(
    data: &[u8],
    base: usize,
    depth: usize,
    start: usize,
) -> Result<usize, BerError> {
    let mut pos = 0;
    let mut open = 1usize;
    loop {
        let rest = data.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            return Err(BerError::MissingEndOfContents { offset: start });
        }
        let h = header(rest, base + pos)?;
        if h.tag.is_end_of_contents() {
            if h.tag.constructed || h.len != Some(0) {
                return Err(BerError::BadEndOfContents { offset: base + pos });
            }
            open -= 1;
            if open == 0 {
                return Ok(pos);
            }
            pos += 2;
            continue;
        }
        match h.len {
            Some(len) => {
                let available = rest.len() - h.len_octets_end;
                if len > available {
                    return Err(BerError::LengthOverrun {
                        offset: base + pos,
                        len,
                        available,
                    });
                }
                pos += h.len_octets_end + len;
            }
            None => {
                open += 1;
                if depth + open > MAX_DEPTH {
                    return Err(BerError::TooDeep { offset: base + pos });
                }
                pos += h.len_octets_end;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> Result<Tlv<'_>, BerError> {
        let mut r = Reader::new(input);
        let tlv = r.read("a value")?;
        r.finish("the value")?;
        Ok(tlv)
    }

    #[test]
    fn definite_and_indefinite_give_the_same_content_view() {
        let definite = one(&[0x30, 0x03, 0x02, 0x01, 0x05]).unwrap();
        let indefinite = one(&[0x30, 0x80, 0x02, 0x01, 0x05, 0x00, 0x00]).unwrap();
        assert_eq!(definite.content, indefinite.content);
        assert!(indefinite.indefinite && !definite.indefinite);
        let mut children = indefinite.children().unwrap();
        let int = children.read_tag(Tag::INTEGER, "INTEGER").unwrap();
        assert_eq!((int.offset, int.content), (2, &[5u8][..]));
        children.finish("INTEGER").unwrap();
    }

    #[test]
    fn nested_indefinite_values_close_at_the_right_marker() {
        // SEQUENCE(indef) { [0](indef) { OCTET STRING "ab" } NULL }
        let input = [
            0x30, 0x80, 0xa0, 0x80, 0x04, 0x02, b'a', b'b', 0x00, 0x00, 0x05, 0x00, 0x00, 0x00,
        ];
        let outer = one(&input).unwrap();
        let mut r = outer.children().unwrap();
        let inner = r.read_octets(Tag::context(0, false), "[0]").unwrap();
        assert_eq!(&*inner, b"ab");
        r.read_tag(Tag::NULL, "NULL").unwrap();
        r.finish("NULL").unwrap();
    }

    #[test]
    fn high_tag_numbers() {
        let tlv = one(&[0x9f, 0x81, 0x00, 0x00]).unwrap();
        assert_eq!(tlv.tag, Tag::context(128, false));
        let tlv = one(&[0x5f, 0x1f, 0x00]).unwrap();
        assert_eq!((tlv.tag.class, tlv.tag.number), (Class::Application, 31));
        // 30 must use the low form; a leading 0x80 is padding.
        assert_eq!(
            one(&[0x9f, 0x1e, 0x00]).unwrap_err(),
            BerError::NonMinimalTag { offset: 1 }
        );
        assert_eq!(
            one(&[0x9f, 0x80, 0x20, 0x00]).unwrap_err(),
            BerError::NonMinimalTag { offset: 1 }
        );
        assert!(matches!(
            one(&[0x9f, 0x90, 0x80, 0x80, 0x80, 0x00, 0x00]),
            Err(BerError::TagTooLarge { .. })
        ));
        assert!(matches!(
            one(&[0x9f, 0x81]),
            Err(BerError::Truncated { offset: 2, .. })
        ));
    }

    #[test]
    fn lengths_are_checked() {
        assert_eq!(
            one(&[0x04, 0x05, 1, 2]).unwrap_err(),
            BerError::LengthOverrun {
                offset: 0,
                len: 5,
                available: 2
            }
        );
        assert_eq!(
            one(&[0x04, 0x85, 0, 0, 0, 0, 1]).unwrap_err(),
            BerError::LengthTooLong {
                offset: 1,
                octets: 5
            }
        );
        assert_eq!(
            one(&[0x04, 0xff]).unwrap_err(),
            BerError::ReservedLength { offset: 1 }
        );
        assert_eq!(
            one(&[0x04, 0x80, 0x00, 0x00]).unwrap_err(),
            BerError::IndefinitePrimitive { offset: 0 }
        );
        // Non-minimal long form is legal BER.
        assert_eq!(one(&[0x04, 0x82, 0x00, 0x01, 7]).unwrap().content, &[7]);
        assert!(matches!(
            one(&[0x04, 0x82, 0x00]),
            Err(BerError::Truncated { offset: 2, .. })
        ));
    }

    #[test]
    fn end_of_contents_rules() {
        assert_eq!(
            one(&[0x30, 0x80, 0x05, 0x00]).unwrap_err(),
            BerError::MissingEndOfContents { offset: 0 }
        );
        assert_eq!(
            one(&[0x30, 0x80, 0x00, 0x01, 0x00]).unwrap_err(),
            BerError::BadEndOfContents { offset: 2 }
        );
        assert_eq!(
            one(&[0x00, 0x00]).unwrap_err(),
            BerError::UnexpectedEndOfContents { offset: 0 }
        );
        // An end-of-contents inside a definite value belongs to nothing.
        let outer = one(&[0x30, 0x02, 0x00, 0x00]).unwrap();
        assert_eq!(
            outer.children().unwrap().read("x").unwrap_err(),
            BerError::UnexpectedEndOfContents { offset: 2 }
        );
        // The marker of an indefinite value must lie inside its definite parent.
        let mut r = Reader::new(&[0x30, 0x02, 0x30, 0x80, 0x00, 0x00]);
        let outer = r.read("outer").unwrap();
        assert_eq!(
            outer.children().unwrap().read("inner").unwrap_err(),
            BerError::MissingEndOfContents { offset: 2 }
        );
    }

    #[test]
    fn depth_is_limited_for_both_length_forms() {
        let deep_indefinite: Vec<u8> = [0x30, 0x80].repeat(MAX_DEPTH + 2);
        let input = [&deep_indefinite[..], &[0x00, 0x00].repeat(MAX_DEPTH + 2)].concat();
        let err = one(&input);
        assert!(matches!(err, Err(BerError::TooDeep { .. })), "{err:?}");

        let mut deep_definite = vec![0x05, 0x00];
        for _ in 0..MAX_DEPTH + 2 {
            deep_definite = [&[0x30, deep_definite.len() as u8][..], &deep_definite].concat();
        }
        assert!(matches!(
            walk(&deep_definite, |_| {}),
            Err(BerError::TooDeep { .. })
        ));
        let mut ok = vec![0x05, 0x00];
        for _ in 0..MAX_DEPTH {
            ok = [&[0x30, ok.len() as u8][..], &ok].concat();
        }
        let mut count = 0;
        walk(&ok, |_| count += 1).unwrap();
        assert_eq!(count, MAX_DEPTH + 1);
    }

    #[test]
    fn nested_constructed_string_segments_are_refused() {
        let tlv = one(&[0x24, 0x80, 0x24, 0x80, 0x04, 0x01, 1, 0, 0, 0, 0]).unwrap();
        assert!(matches!(
            tlv.string_octets(),
            Err(BerError::UnexpectedTag { offset: 2, .. })
        ));
        let tlv = one(&[0x24, 0x80, 0x04, 0x01, 1, 0x04, 0x02, 2, 3, 0, 0]).unwrap();
        assert_eq!(&*tlv.string_octets().unwrap(), &[1, 2, 3]);
    }

    #[test]
    fn errors_name_offset_and_expectation() {
        let mut r = Reader::new(&[0x02, 0x01, 0x00, 0x31, 0x00]);
        r.read_tag(Tag::INTEGER, "the version INTEGER").unwrap();
        let err = r.read_tag(Tag::SEQUENCE, "the EncryptedContentInfo SEQUENCE");
        assert_eq!(
            err.unwrap_err().to_string(),
            "BER: at byte 3: expected the EncryptedContentInfo SEQUENCE, found SET (constructed)"
        );
        r.read("SET").unwrap();
        assert_eq!(
            r.read("the IV").unwrap_err().to_string(),
            "BER: the enclosing value ends at byte 5 where the IV was expected"
        );
    }
}
