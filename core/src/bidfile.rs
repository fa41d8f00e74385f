//! Bid files: the proof of concept's `encrypted.csv` and the buyers' plaintext input.
//!
//! Encrypted: header `[].contract,[].bid`, rows `<lot id>,<base64 CiphertextBlob>`.
//! Plaintext: header `contract,bid`, rows `<lot id>,<amount>`.
//!
//! Tolerated, because real files have them: a UTF-8 BOM, CRLF line ends, a missing final
//! newline, blank lines, spaces around fields, quoted fields. Everything else is an error that
//! names the file and the line. Plaintext errors never show the amount.
//!
//! **Padding** (plaintext only, the content of an envelope file; DESIGN §2 "Sizes"): the CSV
//! may be followed by any number of NUL bytes (0x00) to the end. The first NUL ends the line
//! it is on and starts the padding; the enclave skips it, and never counts or reports it. A
//! byte other than NUL after padding has started makes the rest of the file one malformed
//! row. `bidctl encrypt --format envelope` pads every plaintext to [`padded_len`], so a file's
//! size says neither its amounts (every amount is written at
//! [`PADDED_WIDTH`](crate::amount::PADDED_WIDTH)) nor its exact
//! number of rows. (`truncate -s SIZE bids.csv` pads a file by hand the same way.)

use crate::amount::{Amount, AmountError};
use crate::names::{LotId, NameError};
use base64::Engine;
use std::collections::HashMap;
use std::fmt;

pub const ENCRYPTED_HEADER: [&str; 2] = ["[].contract", "[].bid"];
pub const PLAINTEXT_HEADER: [&str; 2] = ["contract", "bid"];
/// KMS ciphertext blobs are 1 to 6144 bytes.
pub const MAX_CIPHERTEXT_LEN: usize = 6144;
/// The padding byte of a plaintext bid file.
pub const PADDING_BYTE: u8 = 0x00;
/// The smallest padded plaintext: one Encryption SDK frame of `aws-encryption-cli`'s default
/// length, so every small file looks the same.
pub const MIN_PADDED_LEN: usize = 4096;

/// The length a plaintext bid file of `content_len` bytes is padded to: the next power of two,
/// at least [`MIN_PADDED_LEN`]. With the auction's public lot count (`lots`) and the file's
/// longest row (`longest_row`, its line end included), at least the size of a file with one
/// such row per lot, so that every buyer's file of one auction comes out the same size
/// whatever lots it names.
pub fn padded_len(content_len: usize, lots: Option<u64>, longest_row: usize) -> usize {
    let full = lots.map_or(0, |n| {
        (PLAINTEXT_HEADER.join(",").len() + 1).saturating_add(
            usize::try_from(n)
                .unwrap_or(usize::MAX)
                .saturating_mul(longest_row),
        )
    });
    content_len
        .max(full)
        .max(MIN_PADDED_LEN)
        .checked_next_power_of_two()
        .unwrap_or(usize::MAX)
}

/// A plaintext's CSV and whether anything but padding follows it: the bytes before the first
/// NUL, and `true` when a byte other than NUL comes after that NUL (the rest of the file then
/// counts as one malformed row).
pub fn split_padding(bytes: &[u8]) -> (&[u8], bool) {
    match padding_start(bytes) {
        None => (bytes, false),
        Some(at) => (&bytes[..at], !all_padding(&bytes[at..])),
    }
}

/// Where padding starts in `bytes`: its first NUL (memchr: every plaintext byte of an
/// envelope file passes here).
pub fn padding_start(bytes: &[u8]) -> Option<usize> {
    memchr::memchr(PADDING_BYTE, bytes)
}

/// Whether `bytes` are all padding. ORs every byte, without stopping early, so that the
/// compiler can do it 32 bytes at a time (the padding is most of a small file).
pub fn all_padding(bytes: &[u8]) -> bool {
    const _: () = assert!(PADDING_BYTE == 0);
    bytes.iter().fold(0u8, |acc, &b| acc | b) == 0
}

/// Whether a plaintext of `len` bytes has a length [`padded_len`] gives: a power of two of at
/// least [`MIN_PADDED_LEN`]. (`bidctl seal` warns about an envelope file that is not.)
pub fn is_padded_len(len: u64) -> bool {
    len >= MIN_PADDED_LEN as u64 && len.is_power_of_two()
}

/// A buyer's plaintext rows as the file `bidctl encrypt --format envelope` encrypts: the
/// header, each row with its amount at [`PADDED_WIDTH`](crate::amount::PADDED_WIDTH), then
/// padding to [`padded_len`].
pub fn padded_plaintext(rows: &[PlaintextRow], lots: Option<u64>) -> Vec<u8> {
    let header = PLAINTEXT_HEADER.join(",");
    let mut out = Vec::with_capacity(header.len() + 1 + rows.len() * 32);
    out.extend_from_slice(header.as_bytes());
    out.push(b'\n');
    let mut longest_row = 0;
    for row in rows {
        let start = out.len();
        out.extend_from_slice(row.lot.as_str().as_bytes());
        out.push(b',');
        out.extend_from_slice(row.amount.to_padded().as_bytes());
        out.push(b'\n');
        longest_row = longest_row.max(out.len() - start);
    }
    let target = padded_len(out.len(), lots, longest_row);
    out.resize(target, PADDING_BYTE);
    out
}

/// Refusal thresholds, checked before the work they protect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // 1,000,000 lots of ~400-byte ciphertexts fit; anything bigger is a mistake or an attack.
        Limits {
            max_bytes: 512 * 1024 * 1024,
            max_rows: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedRow {
    pub line: u64,
    pub lot: LotId,
    pub ciphertext: Vec<u8>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct PlaintextRow {
    pub line: u64,
    pub lot: LotId,
    pub amount: Amount,
}

impl fmt::Debug for PlaintextRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlaintextRow")
            .field("line", &self.line)
            .field("lot", &self.lot)
            .finish_non_exhaustive()
    }
}

/// One problem at one place in one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {kind}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct BidFileError {
    pub file: String,
    pub line: Option<u64>,
    pub kind: BidFileErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BidFileErrorKind {
    #[error("file is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("more than {limit} rows")]
    TooManyRows { limit: usize },
    #[error("file is empty (expected the header `{expected}`)")]
    Empty { expected: String },
    #[error("header is `{found}`, expected `{expected}`")]
    BadHeader { found: String, expected: String },
    #[error("expected 2 fields ({expected}), found {found}")]
    FieldCount { expected: String, found: usize },
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("malformed CSV: {0}")]
    Csv(String),
    #[error("contract: {0}")]
    Lot(NameError),
    #[error("lot `{lot}` already appears on line {first_line}")]
    DuplicateLot { lot: LotId, first_line: u64 },
    #[error("bid: empty ciphertext")]
    EmptyCiphertext,
    #[error("bid: invalid base64 ({0})")]
    Base64(String),
    #[error("bid: ciphertext is {len} bytes, KMS ciphertexts are at most {MAX_CIPHERTEXT_LEN}")]
    CiphertextTooLong { len: usize },
    #[error("bid: {0}")]
    Amount(AmountError),
    #[error("text after the padding (NUL bytes end a plaintext bid file's rows)")]
    AfterPadding,
    #[error("the row is longer than {MAX_ROW_BYTES} bytes")]
    RowTooLong,
}

/// All the problems found in a plaintext file, so a buyer can fix them in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BidFileErrors(pub Vec<BidFileError>);

impl fmt::Display for BidFileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
impl std::error::Error for BidFileErrors {}

/// One `encrypted.csv` row, decoded and kept.
fn push_encrypted(
    rows: &mut Vec<EncryptedRow>,
    line: u64,
    lot: &str,
    bid: &str,
) -> Result<(), BidFileErrorKind> {
    let ciphertext = decode_ciphertext(bid)?;
    rows.push(EncryptedRow {
        line,
        lot: LotId::from_checked(lot),
        ciphertext,
    });
    Ok(())
}

/// One plaintext row, or why its amount is not one.
fn plaintext_row(line: u64, lot: &str, bid: &str) -> Result<PlaintextRow, AmountError> {
    Ok(PlaintextRow {
        line,
        lot: LotId::from_checked(lot),
        amount: Amount::parse(bid.as_bytes())?,
    })
}

/// The lots a lenient walk found named more than once, each once, in the order found. A set
/// beside the list: a file of many repeated lots must not cost n².
#[derive(Default)]
struct Duplicates {
    lots: Vec<LotId>,
    seen: std::collections::HashSet<LotId>,
}

impl Duplicates {
    fn add(&mut self, lot: LotId) {
        if self.seen.insert(lot.clone()) {
            self.lots.push(lot);
        }
    }

    fn contains(&self, lot: &LotId) -> bool {
        self.seen.contains(lot)
    }

    /// A duplicated lot's first row was taken before its second was seen: it goes too. (No
    /// lookups at all in the usual file, which has no duplicates.)
    fn drop_rows<R>(&self, rows: &mut Vec<R>, lot: impl Fn(&R) -> &LotId) {
        if !self.lots.is_empty() {
            rows.retain(|r| !self.seen.contains(lot(r)));
        }
    }
}

/// Parses an `encrypted.csv`. Stops at the first problem: a partial bid file must never be used.
pub fn parse_encrypted(
    file: &str,
    bytes: &[u8],
    limits: Limits,
) -> Result<Vec<EncryptedRow>, BidFileError> {
    let mut rows = Vec::new();
    parse_rows(
        file,
        bytes,
        limits,
        ENCRYPTED_HEADER,
        true,
        true,
        |line, lot, bid| push_encrypted(&mut rows, line, lot, bid),
    )
    .map_err(|mut errors| errors.0.swap_remove(0))?;
    Ok(rows)
}

/// Parses a plaintext bid file, collecting every bad line.
pub fn parse_plaintext(
    file: &str,
    bytes: &[u8],
    limits: Limits,
) -> Result<Vec<PlaintextRow>, BidFileErrors> {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let (bytes, after_padding) = split_padding(bytes);
    if after_padding {
        errors.push(BidFileError {
            file: file.to_owned(),
            line: Some(bytes.iter().filter(|&&b| b == b'\n').count() as u64 + 1),
            kind: BidFileErrorKind::AfterPadding,
        });
    }
    let structural = parse_rows(
        file,
        bytes,
        limits,
        PLAINTEXT_HEADER,
        false,
        true,
        |line, lot, bid| {
            match plaintext_row(line, lot, bid) {
                Ok(row) => rows.push(row),
                Err(e) => errors.push(BidFileError {
                    file: file.to_owned(),
                    line: Some(line),
                    kind: BidFileErrorKind::Amount(e),
                }),
            }
            Ok(())
        },
    );
    if let Err(BidFileErrors(mut more)) = structural {
        errors.append(&mut more);
        errors.sort_by_key(|e| e.line);
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(BidFileErrors(errors))
    }
}

/// A buyer's file as the enclave judges it: the rows that count, and what was set aside.
#[derive(Debug, Default)]
pub struct LenientFile<R> {
    /// Rows with a valid lot id named once in the file, in file order.
    pub rows: Vec<R>,
    /// Lots named on more than one row: none of their rows count (which one the buyer meant
    /// is not for the enclave to guess).
    pub duplicate_lots: Vec<LotId>,
    /// Rows that are not `<lot id>,<bid>` or whose bid is malformed; they name no usable lot.
    pub malformed_rows: u64,
    /// Plaintext files only: rows with a valid lot whose amount is not a valid amount.
    pub invalid_amounts: u64,
}

/// Parses a sealed `encrypted.csv` inside the enclave. Unlike [`parse_encrypted`], a bad row is
/// set aside on its own (the buyer sealed the file; its other bids still count). Only a file
/// that is not a bid file at all (empty, wrong header, not UTF-8, over the limits) is an error.
pub fn parse_encrypted_lenient(
    file: &str,
    bytes: &[u8],
    limits: Limits,
) -> Result<LenientFile<EncryptedRow>, BidFileError> {
    let mut rows = Vec::new();
    let mut malformed_rows = 0u64;
    let walked = parse_rows(
        file,
        bytes,
        limits,
        ENCRYPTED_HEADER,
        false,
        true,
        |line, lot, bid| push_encrypted(&mut rows, line, lot, bid),
    );
    let mut duplicates = Duplicates::default();
    if let Err(BidFileErrors(errors)) = walked {
        for e in errors {
            match e.kind {
                BidFileErrorKind::DuplicateLot { lot, .. } => duplicates.add(lot),
                BidFileErrorKind::FieldCount { .. }
                | BidFileErrorKind::RowTooLong
                | BidFileErrorKind::NotUtf8
                | BidFileErrorKind::Lot(_)
                | BidFileErrorKind::EmptyCiphertext
                | BidFileErrorKind::Base64(_)
                | BidFileErrorKind::CiphertextTooLong { .. }
                | BidFileErrorKind::Amount(_) => malformed_rows += 1,
                _ => return Err(e),
            }
        }
    }
    duplicates.drop_rows(&mut rows, |r| &r.lot);
    Ok(LenientFile {
        rows,
        duplicate_lots: duplicates.lots,
        malformed_rows,
        invalid_amounts: 0,
    })
}

/// Parses a buyer's plaintext `contract,bid` file inside the enclave (the content of an
/// envelope bid file), with the rules of [`parse_encrypted_lenient`]: a row that is not
/// `<lot id>,<bid>` counts in `malformed_rows`, a row whose amount is invalid in
/// `invalid_amounts`, a lot named twice in `duplicate_lots` (none of its rows count). Only a
/// file that is not a bid file at all is an error. Errors never hold an amount.
pub fn parse_plaintext_lenient(
    file: &str,
    bytes: &[u8],
    limits: Limits,
) -> Result<LenientFile<PlaintextRow>, BidFileError> {
    let mut rows = Vec::new();
    let (bytes, after_padding) = split_padding(bytes);
    let mut malformed_rows = u64::from(after_padding);
    let mut invalid_amounts = 0u64;
    // Lots whose amount was invalid: a later row for one of them is still a duplicate.
    let mut invalid_lots: Vec<LotId> = Vec::new();
    let walked = parse_rows(
        file,
        bytes,
        limits,
        PLAINTEXT_HEADER,
        false,
        true,
        |line, lot, bid| {
            match plaintext_row(line, lot, bid) {
                Ok(row) => rows.push(row),
                Err(e) => {
                    invalid_lots.push(LotId::from_checked(lot));
                    return Err(BidFileErrorKind::Amount(e));
                }
            }
            Ok(())
        },
    );
    let mut duplicates = Duplicates::default();
    if let Err(BidFileErrors(errors)) = walked {
        for e in errors {
            match e.kind {
                BidFileErrorKind::DuplicateLot { lot, .. } => duplicates.add(lot),
                BidFileErrorKind::Amount(_) => invalid_amounts += 1,
                BidFileErrorKind::FieldCount { .. }
                | BidFileErrorKind::RowTooLong
                | BidFileErrorKind::NotUtf8
                | BidFileErrorKind::Lot(_) => malformed_rows += 1,
                _ => return Err(e),
            }
        }
    }
    duplicates.drop_rows(&mut rows, |r| &r.lot);
    // If a duplicated lot's first row had an invalid amount, that row counts as part of the
    // duplicate, not on its own.
    let gone = invalid_lots
        .iter()
        .filter(|l| duplicates.contains(l))
        .count() as u64;
    invalid_amounts = invalid_amounts.saturating_sub(gone);
    Ok(LenientFile {
        rows,
        duplicate_lots: duplicates.lots,
        malformed_rows,
        invalid_amounts,
    })
}

/// Walks a plaintext `contract,bid` file without collecting it: `each(lot, amount)` for every
/// row with a valid lot id, in file order, **repeated lots included** (the caller keeps its
/// own lot table and applies [`parse_plaintext_lenient`]'s duplicate rule with it, which
/// saves a second table of every lot). Returns the number of rows that are not
/// `<lot id>,<bid>`. A file-level error can come after rows were delivered: the caller must
/// then undo them (the file is set aside whole).
pub fn walk_plaintext(
    file: &str,
    bytes: &[u8],
    limits: Limits,
    mut each: impl FnMut(&str, Result<Amount, AmountError>),
) -> Result<u64, BidFileError> {
    let (bytes, after_padding) = split_padding(bytes);
    let walked = parse_rows(
        file,
        bytes,
        limits,
        PLAINTEXT_HEADER,
        false,
        false,
        |_, lot, bid| {
            each(lot, Amount::parse(bid.as_bytes()));
            Ok(())
        },
    );
    let mut malformed_rows = u64::from(after_padding);
    if let Err(BidFileErrors(errors)) = walked {
        for e in errors {
            match e.kind {
                BidFileErrorKind::FieldCount { .. }
                | BidFileErrorKind::RowTooLong
                | BidFileErrorKind::NotUtf8
                | BidFileErrorKind::Lot(_) => malformed_rows += 1,
                _ => return Err(e),
            }
        }
    }
    Ok(malformed_rows)
}

/// A bid's base64 KMS ciphertext, decoded (its length checked before and after).
pub fn decode_ciphertext(bid: &str) -> Result<Vec<u8>, BidFileErrorKind> {
    if bid.is_empty() {
        return Err(BidFileErrorKind::EmptyCiphertext);
    }
    // Checked before decoding so an absurd field costs nothing.
    if bid.len() > MAX_CIPHERTEXT_LEN.div_ceil(3) * 4 {
        return Err(BidFileErrorKind::CiphertextTooLong {
            len: bid.len() / 4 * 3,
        });
    }
    let ciphertext = base64::engine::general_purpose::STANDARD
        .decode(bid)
        .map_err(|e| BidFileErrorKind::Base64(e.to_string()))?;
    if ciphertext.len() > MAX_CIPHERTEXT_LEN {
        return Err(BidFileErrorKind::CiphertextTooLong {
            len: ciphertext.len(),
        });
    }
    Ok(ciphertext)
}

/// The longest row [`RowReader`] takes apart: longer rows are malformed (a lot id, a
/// ciphertext of 6 KiB in base64 and any sensible padding fit many times over).
pub const MAX_ROW_BYTES: usize = 64 * 1024;

/// The fields of one row as [`RowReader`] found them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowFields<'a> {
    /// Exactly two fields, unescaped and untrimmed.
    Two(&'a [u8], &'a [u8]),
    /// Another number of fields (`usize::MAX`: more than fit, or a row over
    /// [`MAX_ROW_BYTES`]).
    Other(usize),
}

/// One row (the header included), with the 1-based line it starts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row<'a> {
    pub line: u64,
    pub fields: RowFields<'a>,
}

/// Splits a bid file into rows as its bytes arrive, a push parser that never holds the file:
/// the enclave feeds it chunk by chunk (issue 23), `bidctl` and the parent the whole file at
/// once, so every reader of a bid file splits rows the same way. The CSV rules are the csv
/// crate's (its `csv-core` state machine, quoted fields, `\n`, `\r\n` or `\r` line ends, blank
/// lines skipped) after a UTF-8 BOM is removed. Allocates its row buffer once.
pub struct RowReader {
    csv: csv_core::Reader,
    out: Box<[u8]>,
    ends: [usize; 3],
    nout: usize,
    nend: usize,
    /// The row so far did not fit (longer than [`MAX_ROW_BYTES`]).
    overflow: bool,
    /// Fields of the current row already counted and dropped from `ends`.
    more_fields: usize,
    /// Newlines seen before the current position.
    newlines: u64,
    /// The current row's first line, once its first byte is seen.
    row_line: Option<u64>,
    /// The first bytes, held until a BOM can be told from data.
    prefix: Vec<u8>,
    started: bool,
    ended: bool,
    /// csv-core has been called: its BOM check, which only its first read makes, is behind
    /// it, so lines may bypass it ([`RowReader::plain_line`]).
    fed: bool,
}

impl Default for RowReader {
    fn default() -> Self {
        RowReader::new()
    }
}

impl RowReader {
    pub fn new() -> RowReader {
        RowReader {
            csv: csv_core::Reader::new(),
            out: vec![0u8; MAX_ROW_BYTES].into_boxed_slice(),
            ends: [0; 3],
            nout: 0,
            nend: 0,
            overflow: false,
            more_fields: 0,
            newlines: 0,
            row_line: None,
            prefix: Vec::with_capacity(6),
            started: false,
            ended: false,
            fed: false,
        }
    }

    /// Takes the next bytes of the file, calling `each` for every row they complete.
    pub fn feed(&mut self, mut input: &[u8], mut each: impl FnMut(Row<'_>)) {
        if !self.started {
            // csv-core drops a BOM itself only when its first read sees three bytes; holding
            // the first six makes a chunked file read exactly like a whole one.
            let take = (6 - self.prefix.len()).min(input.len());
            self.prefix.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.prefix.len() < 6 {
                return;
            }
            self.start(&mut each);
        }
        self.push(input, &mut each);
    }

    /// The end of the file: the last row, if it has no line end.
    pub fn finish(&mut self, mut each: impl FnMut(Row<'_>)) {
        if !self.started {
            self.start(&mut each);
        }
        while !self.ended {
            self.step(&[], &mut each);
        }
    }

    fn start(&mut self, each: &mut impl FnMut(Row<'_>)) {
        self.started = true;
        let prefix = std::mem::take(&mut self.prefix);
        let body = prefix.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&prefix);
        self.push(body, each);
    }

    fn push(&mut self, mut input: &[u8], each: &mut impl FnMut(Row<'_>)) {
        while !input.is_empty() {
            let used = self.step(input, each);
            input = &input[used..];
        }
    }

    /// One call into csv-core; returns the bytes it consumed.
    fn step(&mut self, input: &[u8], each: &mut impl FnMut(Row<'_>)) -> usize {
        if self.row_line.is_none() && !input.is_empty() {
            // Line ends before a row are blank lines, which csv-core skips too: counted here,
            // so a row's line is the one its first byte is on.
            let blank = input
                .iter()
                .position(|&b| b != b'\n' && b != b'\r')
                .unwrap_or(input.len());
            self.newlines += input[..blank].iter().filter(|&&b| b == b'\n').count() as u64;
            if blank > 0 {
                // Fed through csv-core as well, so that its state sees them.
                let mut rest = &input[..blank];
                while !rest.is_empty() {
                    let (res, n, _, _) =
                        self.csv
                            .read_record(rest, &mut self.out[..], &mut self.ends[..]);
                    debug_assert!(!matches!(res, csv_core::ReadRecordResult::Record));
                    rest = &rest[n..];
                }
                self.fed = true;
                return blank;
            }
            if self.fed
                && let Some(n) = self.plain_line(input, each)
            {
                return n;
            }
            self.row_line = Some(self.newlines + 1);
        }
        let (res, nin, nout, nend) = if self.overflow {
            // Only looking for the row's end: fields go nowhere.
            let (res, nin, _, _) =
                self.csv
                    .read_record(input, &mut self.out[..], &mut self.ends[..]);
            (res, nin, 0, 0)
        } else if self.nend == self.ends.len() {
            // Ends full right at a record's end: there is nothing more to store.
            self.more_fields += self.nend;
            self.nend = 0;
            return 0;
        } else {
            self.csv.read_record(
                input,
                &mut self.out[self.nout..],
                &mut self.ends[self.nend..],
            )
        };
        self.fed = true;
        self.newlines += input[..nin].iter().filter(|&&b| b == b'\n').count() as u64;
        self.nout += nout;
        self.nend += nend;
        use csv_core::ReadRecordResult as R;
        match res {
            R::InputEmpty => {}
            R::OutputFull => {
                self.overflow = true;
                self.nout = 0;
                self.nend = 0;
            }
            R::OutputEndsFull => {
                // More fields than a bid row has: count them, keep none.
                self.more_fields += self.nend;
                self.nend = 0;
            }
            R::Record => {
                let line = self.row_line.take().unwrap_or(self.newlines + 1);
                let fields = if self.overflow {
                    RowFields::Other(usize::MAX)
                } else if self.nend == 2 && self.more_fields == 0 {
                    let (a, b) = (self.ends[0], self.ends[1]);
                    RowFields::Two(&self.out[..a], &self.out[a..b])
                } else {
                    RowFields::Other(self.more_fields + self.nend)
                };
                each(Row { line, fields });
                self.overflow = false;
                self.more_fields = 0;
                self.nout = 0;
                self.nend = 0;
            }
            R::End => self.ended = true,
        }
        nin
    }
}

impl RowReader {
    /// A whole line in `input` with no quote and no carriage return, at a row's start, is its
    /// bytes split at the commas: exactly what csv-core makes of it, without copying it out
    /// (every row `bidctl` writes is one). Returns the bytes taken, or `None` to leave the
    /// line to csv-core. csv-core's state is not fed such a line, and need not be: at a row's
    /// start it is either ready for one or just past a `\r`, which the next byte leaves
    /// whatever it is.
    fn plain_line(&mut self, input: &[u8], each: &mut impl FnMut(Row<'_>)) -> Option<usize> {
        // Each step is one vectorised pass (memchr) over a row of a few dozen bytes.
        let reach = &input[..input.len().min(MAX_ROW_BYTES + 1)];
        // No line end within reach: a row split across chunks, or one over the limit.
        let end = memchr::memchr(b'\n', reach)?;
        let line = &input[..end];
        if memchr::memchr2(b'"', b'\r', line).is_some() {
            return None;
        }
        self.newlines += 1;
        let fields = match memchr::memchr(b',', line) {
            Some(comma) if !line[comma + 1..].contains(&b',') => {
                RowFields::Two(&line[..comma], &line[comma + 1..])
            }
            Some(_) => RowFields::Other(line.iter().filter(|&&b| b == b',').count() + 1),
            None => RowFields::Other(1),
        };
        each(Row {
            line: self.newlines,
            fields,
        });
        Some(end + 1)
    }
}

/// [`trimmed`]'s bytes, the common case (ASCII) without checking UTF-8 or asking Unicode
/// tables: `str::trim` trims White_Space, which within ASCII is `\t`, `\n`, `\x0B`, `\x0C`,
/// `\r` and space.
#[inline]
pub fn trimmed_bytes(field: &[u8]) -> Option<&[u8]> {
    if !field.is_ascii() {
        return trimmed(field).map(str::as_bytes);
    }
    let white = |c: &u8| matches!(c, b'\t'..=b'\r' | b' ');
    let start = field.iter().position(|c| !white(c)).unwrap_or(field.len());
    let end = field
        .iter()
        .rposition(|c| !white(c))
        .map_or(start, |e| e + 1);
    Some(&field[start..end])
}

/// A field as text with surrounding whitespace trimmed (what `csv::Trim::All` does), or `None`
/// when it is not UTF-8.
pub fn trimmed(field: &[u8]) -> Option<&str> {
    std::str::from_utf8(field).ok().map(str::trim)
}

/// The shared row walk. Row-level errors from `each` are collected (the encrypted parser stops
/// at the first); file-level ones end the walk.
fn parse_rows(
    file: &str,
    bytes: &[u8],
    limits: Limits,
    header: [&str; 2],
    stop_at_first: bool,
    detect_duplicates: bool,
    mut each: impl FnMut(u64, &str, &str) -> Result<(), BidFileErrorKind>,
) -> Result<(), BidFileErrors> {
    let at = |line: Option<u64>, kind| BidFileError {
        file: file.to_owned(),
        line,
        kind,
    };
    let fail = |line, kind| Err(BidFileErrors(vec![at(line, kind)]));
    if bytes.len() > limits.max_bytes {
        return fail(
            None,
            BidFileErrorKind::TooLarge {
                size: bytes.len(),
                limit: limits.max_bytes,
            },
        );
    }
    let expected = header.join(",");
    let mut first_line: HashMap<LotId, u64> = HashMap::new();
    let mut errors = Vec::new();
    let mut saw_header = false;
    let mut fatal: Option<BidFileError> = None;
    let mut rows = 0usize;
    let mut reader = RowReader::new();
    let mut visit = |row: Row<'_>| {
        if fatal.is_some() || (stop_at_first && !errors.is_empty()) {
            return;
        }
        let line = row.line;
        if !saw_header {
            saw_header = true;
            let found: Vec<String> = match row.fields {
                RowFields::Two(a, b) => [a, b]
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).trim().to_owned())
                    .collect(),
                RowFields::Other(_) => vec![],
            };
            if found != header {
                let found = match row.fields {
                    RowFields::Two(..) => found.join(","),
                    RowFields::Other(n) if n <= 3 => "(not two fields)".to_owned(),
                    RowFields::Other(_) => "(too long)".to_owned(),
                };
                fatal = Some(at(
                    Some(line),
                    BidFileErrorKind::BadHeader {
                        found,
                        expected: expected.clone(),
                    },
                ));
            }
            return;
        }
        rows += 1;
        if rows > limits.max_rows {
            fatal = Some(at(
                Some(line),
                BidFileErrorKind::TooManyRows {
                    limit: limits.max_rows,
                },
            ));
            return;
        }
        let RowFields::Two(lot, bid) = row.fields else {
            let RowFields::Other(found) = row.fields else {
                unreachable!()
            };
            errors.push(at(
                Some(line),
                if found == usize::MAX {
                    BidFileErrorKind::RowTooLong
                } else {
                    BidFileErrorKind::FieldCount {
                        expected: expected.clone(),
                        found,
                    }
                },
            ));
            return;
        };
        let (Some(lot), Some(bid)) = (trimmed(lot), trimmed(bid)) else {
            errors.push(at(Some(line), BidFileErrorKind::NotUtf8));
            return;
        };
        // Checked in place: a `LotId` is allocated only where one is kept.
        if let Err(e) = LotId::check(lot) {
            errors.push(at(Some(line), BidFileErrorKind::Lot(e)));
            return;
        }
        if detect_duplicates {
            if let Some(&first) = first_line.get(lot) {
                errors.push(at(
                    Some(line),
                    BidFileErrorKind::DuplicateLot {
                        lot: LotId::from_checked(lot),
                        first_line: first,
                    },
                ));
                return;
            }
            first_line.insert(LotId::from_checked(lot), line);
        }
        if let Err(kind) = each(line, lot, bid) {
            errors.push(at(Some(line), kind));
        }
    };
    reader.feed(bytes, &mut visit);
    reader.finish(&mut visit);
    if let Some(e) = fatal {
        return Err(BidFileErrors(vec![e]));
    }
    if !saw_header {
        return fail(None, BidFileErrorKind::Empty { expected });
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(BidFileErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(text: &str) -> Result<Vec<EncryptedRow>, String> {
        parse_encrypted("b1/encrypted.csv", text.as_bytes(), Limits::default())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn plaintext_lenient_parse_counts_each_kind_of_bad_row() {
        let text = "contract,bid\nA,10\nB,-1\nC\nbad lot!,5\nD,7\nD,8\nE,x\nE,9\nF, 3.50 \n";
        let f = parse_plaintext_lenient("f", text.as_bytes(), Limits::default()).unwrap();
        let lots: Vec<&str> = f.rows.iter().map(|r| r.lot.as_str()).collect();
        assert_eq!(lots, ["A", "F"]);
        assert_eq!(f.rows[1].amount, Amount::parse(b"3.5").unwrap());
        // B's amount is invalid; C and `bad lot!` are not rows; D and E are duplicated (E's
        // first row's bad amount goes with the duplicate).
        assert_eq!(f.invalid_amounts, 1);
        assert_eq!(f.malformed_rows, 2);
        assert_eq!(f.duplicate_lots.len(), 2);
        assert!(parse_plaintext_lenient("f", b"[].contract,[].bid\n", Limits::default()).is_err());
        assert!(parse_plaintext_lenient("f", b"\xff\xfe", Limits::default()).is_err());
        let limits = Limits {
            max_bytes: 1 << 20,
            max_rows: 1,
        };
        let e = parse_plaintext_lenient("f", b"contract,bid\nA,1\nB,2\n", limits).unwrap_err();
        assert!(matches!(e.kind, BidFileErrorKind::TooManyRows { .. }));
    }

    #[test]
    fn lenient_parse_sets_rows_aside_one_by_one() {
        let text = "[].contract,[].bid\n1,AQID\n2,!!\n3,BAUG\n1,BAUG\n,AQID\n4\n5,CQ==\n";
        let f = parse_encrypted_lenient("f", text.as_bytes(), Limits::default()).unwrap();
        let lots: Vec<&str> = f.rows.iter().map(|r| r.lot.as_str()).collect();
        assert_eq!(lots, ["3", "5"]);
        assert_eq!(f.duplicate_lots, [LotId::new("1").unwrap()]);
        assert_eq!(f.malformed_rows, 3);
        let e =
            parse_encrypted_lenient("f", b"contract,bid\n1,2\n", Limits::default()).unwrap_err();
        assert!(matches!(e.kind, BidFileErrorKind::BadHeader { .. }), "{e}");
        let f = parse_encrypted_lenient("f", b"[].contract,[].bid\n", Limits::default()).unwrap();
        assert!(f.rows.is_empty() && f.malformed_rows == 0);
    }

    #[test]
    fn reads_the_proof_of_concept_format() {
        let rows = enc("[].contract,[].bid\n1,AQID\n2,BAUG\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].lot.as_str(), "1");
        assert_eq!(rows[0].ciphertext, [1, 2, 3]);
        assert_eq!(rows[1].line, 3);
    }

    #[test]
    fn tolerates_bom_crlf_spaces_quotes_blank_lines_and_no_final_newline() {
        let rows =
            enc("\u{feff}[].contract , [].bid\r\n 1 ,  AQID \r\n\r\n\"2\",\"BAUG\"").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].lot.as_str(), "2");
        assert_eq!(rows[1].line, 4);
    }

    #[test]
    fn exact_error_messages() {
        let cases = [
            (
                "",
                "b1/encrypted.csv: file is empty (expected the header `[].contract,[].bid`)",
            ),
            (
                "contract,bid\n1,AQID\n",
                "b1/encrypted.csv line 1: header is `contract,bid`, expected `[].contract,[].bid`",
            ),
            (
                "[].contract,[].bid\n1,AQID,x\n",
                "b1/encrypted.csv line 2: expected 2 fields ([].contract,[].bid), found 3",
            ),
            (
                "[].contract,[].bid\n1,AQID\n1,BAUG\n",
                "b1/encrypted.csv line 3: lot `1` already appears on line 2",
            ),
            (
                "[].contract,[].bid\n1,AQI*\n",
                "b1/encrypted.csv line 2: bid: invalid base64 (Invalid symbol 42, offset 3.)",
            ),
            (
                "[].contract,[].bid\n1,AQI\n",
                "b1/encrypted.csv line 2: bid: invalid base64 (Invalid padding)",
            ),
            (
                "[].contract,[].bid\n1,\n",
                "b1/encrypted.csv line 2: bid: empty ciphertext",
            ),
            (
                "[].contract,[].bid\n=1+1,AQID\n",
                "b1/encrypted.csv line 2: contract: lot id `=1+1` must start with a letter or digit and contain only letters, digits and - _ . : /",
            ),
        ];
        for (input, want) in cases {
            let got = parse_encrypted("b1/encrypted.csv", input.as_bytes(), Limits::default())
                .map(|r| r.len())
                .map_err(|e| e.to_string());
            assert_eq!(got, Err(want.to_owned()), "{input:?}");
        }
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let e = parse_encrypted(
            "f",
            b"[].contract,[].bid\n1,AQID\n\xff,AQID\n",
            Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "f line 3: not valid UTF-8");
    }

    #[test]
    fn limits_are_checked_up_front() {
        let limits = Limits {
            max_bytes: 10,
            max_rows: 1,
        };
        let e = parse_encrypted("f", b"[].contract,[].bid\n", limits).unwrap_err();
        assert_eq!(e.to_string(), "f: file is 19 bytes, over the limit of 10");
        let limits = Limits {
            max_bytes: 1000,
            max_rows: 1,
        };
        let e = parse_encrypted("f", b"[].contract,[].bid\n1,AQID\n2,AQID\n", limits).unwrap_err();
        assert_eq!(e.to_string(), "f line 3: more than 1 rows");
        let huge = format!("[].contract,[].bid\n1,{}\n", "A".repeat(9000));
        let e = parse_encrypted("f", huge.as_bytes(), Limits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f line 2: bid: ciphertext is 6750 bytes, KMS ciphertexts are at most 6144"
        );
    }

    #[test]
    fn plaintext_lists_every_bad_line_without_amounts() {
        let input = "contract,bid\n1,100000\n2,-31337\n3,1e5\n3,200\n4,12.345\n5,7\n";
        let e = parse_plaintext("plain.csv", input.as_bytes(), Limits::default()).unwrap_err();
        let text = e.to_string();
        assert_eq!(
            text,
            "plain.csv line 3: bid: a sign is not allowed in an amount\n\
             plain.csv line 4: bid: an amount may contain only the digits 0-9 and one decimal point\n\
             plain.csv line 5: lot `3` already appears on line 4\n\
             plain.csv line 6: bid: an amount may have at most 2 digits after the decimal point"
        );
        for secret in ["31337", "12.345", "1e5"] {
            assert!(!text.contains(secret));
        }
        let ok =
            parse_plaintext("p", b"contract,bid\n1, 100000 \n2,1.5", Limits::default()).unwrap();
        assert_eq!(ok[1].amount.minor_units(), 150);
        assert!(!format!("{ok:?}").contains("100000"));
    }

    #[test]
    fn padding_is_skipped_never_counted_and_hides_row_counts() {
        let rows: Vec<PlaintextRow> = (1..=3)
            .map(|i| PlaintextRow {
                line: i + 1,
                lot: LotId::new(i.to_string()).unwrap(),
                amount: Amount::parse(format!("{}", i * 1000).as_bytes()).unwrap(),
            })
            .collect();
        let padded = padded_plaintext(&rows, None);
        assert_eq!(padded.len(), MIN_PADDED_LEN);
        assert!(is_padded_len(padded.len() as u64));
        assert!(padded.ends_with(&[PADDING_BYTE; 64]));
        // Every amount at one width, and the padding is invisible to every parser.
        let strict = parse_plaintext("p", &padded, Limits::default()).unwrap();
        assert_eq!(
            strict,
            rows.iter()
                .map(|r| PlaintextRow {
                    line: r.line,
                    ..r.clone()
                })
                .collect::<Vec<_>>()
        );
        let lenient = parse_plaintext_lenient("p", &padded, Limits::default()).unwrap();
        assert_eq!(
            (
                lenient.rows.len(),
                lenient.malformed_rows,
                lenient.invalid_amounts
            ),
            (3, 0, 0)
        );
        let mut walked = Vec::new();
        let malformed = walk_plaintext("p", &padded, Limits::default(), |lot, a| {
            walked.push((lot.to_owned(), a.unwrap()))
        })
        .unwrap();
        assert_eq!((walked.len(), malformed), (3, 0));
        // One row or thirty: the same size.
        let more: Vec<PlaintextRow> = (1..=30)
            .map(|i| PlaintextRow {
                line: i + 1,
                lot: LotId::new(i.to_string()).unwrap(),
                amount: Amount::parse(b"5").unwrap(),
            })
            .collect();
        assert_eq!(padded_plaintext(&more, None).len(), padded.len());
        // With the auction's lot count, a file of 3 rows is as long as one of every lot.
        let row = "1000000,".len() + crate::amount::PADDED_WIDTH + 1;
        let all = padded_len(0, Some(1_000_000), row);
        assert_eq!(all, padded_len(13 + 1_000_000 * row, None, row));
        assert_eq!(padded_len(100, Some(1_000_000), row), all);
        // Padding by hand (`truncate -s`) after a last row without its newline.
        let mut by_hand = b"contract,bid\n1,5".to_vec();
        by_hand.resize(MIN_PADDED_LEN, 0);
        assert_eq!(
            parse_plaintext("p", &by_hand, Limits::default())
                .unwrap()
                .len(),
            1
        );
        // Text after the padding: one malformed row to the enclave, an error to the buyer.
        let mut after = padded.clone();
        after.extend_from_slice(b"4,100\n");
        let lenient = parse_plaintext_lenient("p", &after, Limits::default()).unwrap();
        assert_eq!((lenient.rows.len(), lenient.malformed_rows), (3, 1));
        let e = parse_plaintext("p", &after, Limits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p line 5: text after the padding (NUL bytes end a plaintext bid file's rows)"
        );
        assert_eq!(split_padding(b"a\0\0"), (&b"a"[..], false));
        assert_eq!(split_padding(b"a\0b"), (&b"a"[..], true));
        assert_eq!(split_padding(b"ab"), (&b"ab"[..], false));
    }

    /// Rows as (line, fields), with `RowReader` fed in the given chunk sizes (cycled).
    fn rows_of(bytes: &[u8], chunks: &[usize]) -> Vec<(u64, Vec<Vec<u8>>)> {
        let mut out = Vec::new();
        let mut r = RowReader::new();
        let mut visit = |row: Row<'_>| {
            let fields = match row.fields {
                RowFields::Two(a, b) => vec![a.to_vec(), b.to_vec()],
                RowFields::Other(n) => vec![format!("<{n} fields>").into_bytes()],
            };
            out.push((row.line, fields));
        };
        let mut rest = bytes;
        let mut i = 0;
        while !rest.is_empty() {
            let n = chunks
                .get(i % chunks.len().max(1))
                .copied()
                .unwrap_or(rest.len());
            let n = n.clamp(1, rest.len());
            r.feed(&rest[..n], &mut visit);
            rest = &rest[n..];
            i += 1;
        }
        r.finish(&mut visit);
        out
    }

    /// The csv crate's records of the same bytes (BOM dropped as parse_rows always did).
    fn csv_crate_rows(bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(bytes);
        r.byte_records()
            .map(|rec| {
                let rec = rec.unwrap();
                if rec.len() == 2 {
                    rec.iter().map(<[u8]>::to_vec).collect()
                } else {
                    vec![format!("<{} fields>", rec.len()).into_bytes()]
                }
            })
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn trimmed_bytes_is_trimmed(field in proptest::collection::vec(proptest::sample::select(vec![
            b'a', b'1', b' ', b'\t', b'\n', 0x0B, 0x0C, b'\r', 0x1F, 0x7F, 0xC2, 0x85, 0xA0, 0xE3, 0x80,
        ]), 0..12)) {
            proptest::prop_assert_eq!(trimmed_bytes(&field), trimmed(&field).map(str::as_bytes));
        }

        /// However a file is cut into chunks, the same rows come out, and they are the csv
        /// crate's records of the whole file; each row's line is the one its first byte is on.
        #[test]
        fn rows_do_not_depend_on_chunking_and_match_the_csv_crate(
            bytes in proptest::collection::vec(proptest::sample::select(vec![
                b'a', b'1', b'2', b',', b'"', b' ', b'\n', b'\r', 0xEF, 0xBB, 0xBF, 0xFF, b'.',
            ]), 0..120),
            chunks in proptest::collection::vec(1usize..9, 1..6),
        ) {
            let whole = rows_of(&bytes, &[bytes.len().max(1)]);
            proptest::prop_assert_eq!(&rows_of(&bytes, &chunks), &whole);
            let fields: Vec<Vec<Vec<u8>>> = whole.iter().map(|(_, f)| f.clone()).collect();
            proptest::prop_assert_eq!(fields, csv_crate_rows(&bytes));
            // The first row's line is the one its first byte (after blank lines) is on.
            let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
            if let (Some((line, _)), Some(at)) = (
                whole.first(),
                body.iter().position(|&b| b != b'\n' && b != b'\r'),
            ) {
                let expected = 1 + body[..at].iter().filter(|&&b| b == b'\n').count() as u64;
                proptest::prop_assert_eq!(*line, expected);
            }
        }
    }

    #[test]
    fn a_row_over_the_limit_is_malformed_and_the_next_one_reads() {
        let mut text = b"[].contract,[].bid\n1,".to_vec();
        text.extend(std::iter::repeat_n(b'A', MAX_ROW_BYTES + 10));
        text.extend_from_slice(b"\n2,AQID\n");
        let f = parse_encrypted_lenient("f", &text, Limits::default()).unwrap();
        assert_eq!(f.malformed_rows, 1);
        assert_eq!(f.rows.len(), 1);
        assert_eq!(f.rows[0].line, 3);
        let e = parse_encrypted("f", &text, Limits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("f line 2: the row is longer than {MAX_ROW_BYTES} bytes")
        );
    }
}
