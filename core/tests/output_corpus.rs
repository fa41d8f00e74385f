//! The existing-output corpus (issue 23): a fixed set of auctions, each run through the
//! enclave session sans-IO, whose `output.csv` and `output.json` must be, byte for byte, the
//! files in `tests/output-corpus/<case>/`. Those files were written by the session as it was
//! before it streamed bid files (commit 94abd3d, which held whole files and rendered outputs
//! whole; branch `output-corpus-before` holds this test with its driver adapted to that
//! session's API), so a match means the streaming session decides and renders as it did.
//!
//! Everything an auction is made of is fixed: the model KMS's ciphertexts are JSON naming
//! their key, context, plaintext and a serial number, so every per-bid file, manifest and
//! seal is the same bytes every run. Envelope files cannot be made that way: the Encryption
//! SDK message's id and signing key are random (`Encryptor` takes no seed, and aws-lc signs
//! ECDSA with a random nonce). Each is therefore made once and kept as an input beside its
//! case's outputs (`<case>/<buyer>.envelope`); the test refuses a kept file that no longer
//! holds what its case describes (context, key, data key, frame length, plaintext). Faults
//! that break a message (a truncated header, a flipped frame byte) are applied to the kept
//! file as it is read.
//!
//! Regenerating: `REGENERATE_OUTPUT_CORPUS=1 cargo test -p bidding-core --test output_corpus`
//! writes every case's outputs instead of comparing them (and makes any envelope file that is
//! missing). That is right only when an output change is intended and reviewed: the corpus
//! exists to show that the outputs do NOT change when the code does. Adding a case is also a
//! regeneration; make its files with the old session (branch `output-corpus-before`) where it
//! can run it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bidding_core::amount::Amount;
use bidding_core::auction::{Reason, RevealPolicy};
use bidding_core::bidfile::{self, PlaintextRow};
use bidding_core::cms::Plaintext;
use bidding_core::config::{self, AuctionConfig, BuyerSpec, Mode};
use bidding_core::credentials::{Credentials, Secret};
use bidding_core::esdk::{
    BID_FILE_PROVIDER_ID, CONTEXT_AUCTION, CONTEXT_BUYER, DataKey, Encryptor, Limits, Message,
    PUBLIC_KEY_CONTEXT_KEY,
};
use bidding_core::kms::{self, RULES_CONTEXT_KEY, SEALED_RULES};
use bidding_core::manifest::{self, FileEntry, FileFormat, Manifest, SEAL_MARKER};
use bidding_core::names::{AuctionId, BuyerName, KeyArn, LotId, Region};
use bidding_core::session::enclave::{
    Action, DecryptJob, DecryptOutcome, EnclaveSession, EnclaveSettings, ReplayGuard,
};
use bidding_core::wire::{
    self, Close, FileChunk, FrameDecoder, Hello, OpenSealed, OutputFile, Request, Response, Seal,
    ToEnclave,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const NOW: u64 = 1_900_000_000_000;
const REGENERATE: &str = "REGENERATE_OUTPUT_CORPUS";
/// A key no buyer registered.
const STRANGER: &str = "Stranger";
const PER_BID_HEADER: &str = "[].contract,[].bid\n";

#[test]
fn every_case_gives_the_outputs_in_the_corpus() {
    let regenerate = std::env::var(REGENERATE).is_ok_and(|v| v == "1");
    let cases = cases();
    let mut problems = Vec::new();
    for case in &cases {
        let (csv, json) = match run(case) {
            Ok(outputs) => outputs,
            Err(e) => {
                problems.push(format!("{}: the session did not close: {e}", case.name));
                continue;
            }
        };
        for (file, found) in [("output.csv", csv), ("output.json", json)] {
            let path = case_dir(&case.name).join(file);
            if regenerate {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &found).unwrap();
                continue;
            }
            match std::fs::read(&path) {
                Err(e) => problems.push(format!("{}/{file}: cannot read it: {e}", case.name)),
                Ok(expected) => {
                    if let Some(d) = first_difference(&expected, &found) {
                        problems.push(format!("{}/{file} differs: {d}", case.name));
                    }
                }
            }
        }
    }
    // A case that was dropped or renamed leaves its directory behind: say so.
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    for entry in std::fs::read_dir(corpus()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !names.contains(&name.as_str()) {
            problems.push(format!("{name}: a directory of the corpus that is no case"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s); regenerate with {REGENERATE}=1 only if the change is intended:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Every auction of the corpus.
/// Issue 23: a file is acted on before its digest and signature are known, so a check that
/// fails at the file's end must still undo everything. An envelope file whose footer
/// signature fails, after all its frames opened and its rows went into the lot table as they
/// came, fails the whole auction (`broken_file`), and nothing of a result leaves; the same
/// file with its signature intact wins every lot.
#[test]
fn an_envelope_whose_signature_fails_at_its_end_fails_the_auction() {
    let mut m = Maker::new("late-signature".to_owned(), Mode::Sealed);
    let alice = [
        PER_BID_HEADER.to_owned(),
        m.row("Alice", "1", Ct::Good("100")),
        m.row("Alice", "2", Ct::Good("200")),
    ]
    .concat()
    .into_bytes();
    let rows = [("1", "9999"), ("2", "9999"), ("3", "9999")];
    // Small frames and chunks: every frame has opened, and its rows been taken, long before
    // the footer arrives.
    let honest = m.fresh_envelope("Mallory", Envelope::padded(&rows).frame(256));
    let late = m.fresh_envelope(
        "Mallory",
        Envelope::padded(&rows)
            .frame(256)
            .fault(Fault::LateSignature),
    );
    let case = |file: Vec<u8>| {
        m.clone_case(
            RevealPolicy::WinningBid,
            300,
            vec![("Alice", alice.clone()), ("Mallory", file)],
        )
    };
    let (csv, _) = run(&case(honest)).expect("the auction closes");
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result,Price\n1,Mallory Wins,9999\n2,Mallory Wins,9999\n3,Mallory Wins,9999\n"
    );
    // `run` refuses any result chunk from a session that did not close.
    let err = run(&case(late)).expect_err("the auction must fail");
    assert!(err.starts_with("broken_file:"), "{err}");
    assert!(
        err.contains("`Mallory`") && err.contains("footer signature"),
        "{err}"
    );
}

/// Issue 23: a per-bid file's bids go to KMS as its rows complete, before its digest is
/// known. A file whose last chunk makes it another file than the manifest names fails the
/// whole auction after its bids were opened, and nothing of any result leaves.
#[test]
fn a_file_that_turns_out_not_to_be_the_manifests_fails_after_its_bids_were_opened() {
    let mut m = Maker::new("late-mismatch".to_owned(), Mode::Sealed);
    let alice = [
        PER_BID_HEADER.to_owned(),
        m.row("Alice", "1", Ct::Good("100")),
        m.row("Alice", "2", Ct::Good("200")),
        m.row("Alice", "3", Ct::Good("300")),
    ]
    .concat()
    .into_bytes();
    let bob = [
        PER_BID_HEADER.to_owned(),
        m.row("Bob", "1", Ct::Good("150")),
    ]
    .concat()
    .into_bytes();
    let case = m.clone_case(
        RevealPolicy::WinningBid,
        64,
        vec![("Alice", alice), ("Bob", bob)],
    );
    assert!(run(&case).is_ok(), "the files as sealed close the auction");
    // The same length, one byte of the last row changed: the parent's word against the
    // manifest's digest, known only at the end.
    let (outcome, opened) = run_sending(&case, &|buyer, file| {
        let mut file = file.to_vec();
        if buyer == "Alice" {
            let n = file.len();
            file[n - 3] ^= 0x01;
        }
        file
    });
    let err = outcome.expect_err("the auction must fail");
    assert!(err.starts_with("file_mismatch:"), "{err}");
    assert!(err.contains("`Alice`"), "{err}");
    // Alice's first two bids were at KMS before her last chunk was sent (2 seals first).
    assert!(
        opened[0] >= 2 + 2,
        "opened before the last chunk: {opened:?}"
    );
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for mode in [Mode::Unsealed, Mode::Sealed] {
        for reveal in [
            RevealPolicy::None,
            RevealPolicy::WinningBid,
            RevealPolicy::SecondPrice,
        ] {
            cases.push(mixed(mode, reveal));
        }
        cases.push(whole_files(mode));
    }
    cases.push(lot_ids());
    cases.push(no_context());
    cases.push(many_lots());
    cases
}

// ---------------------------------------------------------------------------------------
// The cases.

/// Per-bid and envelope files side by side: a win, ties (one amount written three ways),
/// single bids, lots only one buyer names, a lot with no valid bid, the extreme amounts, and
/// every reason a single row is set aside.
fn mixed(mode: Mode, reveal: RevealPolicy) -> Case {
    let mut m = Maker::new(format!("{}-{reveal}", mode_name(mode)), mode);
    let mut alice = vec![
        PER_BID_HEADER.to_owned(),
        m.row("Alice", "1", Ct::Good("100")),
        m.row("Alice", "2", Ct::Good("300")),
        m.row("Alice", "3", Ct::Good("1e5")),
        m.row("Alice", "4", Ct::Good("10")),
        m.row("Alice", "5", Ct::Good("500")),
        m.row("Alice", "5", Ct::Good("600")),
        m.row("Alice", "7", Ct::NoContext("700")),
        m.row("Alice", "8", Ct::Good("80")),
        // `echo 100 > bid.txt` leaves a newline: still 100.
        m.row("Alice", "10", Ct::Good("100\n")),
        m.row("Alice", "11", Ct::Good("0")),
        m.row("Alice", "12", Ct::Good("999999999999999999.98")),
        "-5,QUJD\n".to_owned(),
        "13,QUJD,extra\n".to_owned(),
        "14,@@@@\n".to_owned(),
        "15,\n".to_owned(),
        // A lot named twice whose first row is malformed.
        "16,@@@@\n".to_owned(),
        m.row("Alice", "16", Ct::Good("1")),
        m.row("Alice", "18", Ct::Good("-5")),
    ];
    if mode == Mode::Unsealed {
        // A sealed auction fails on a bid under another key (the key binding is the
        // operator's word); an unsealed one sets it aside.
        alice.push(m.row("Alice", "19", Ct::OtherKey("900")));
    }
    // A byte-order mark, a header with spaces, CRLF line ends, a blank line, quoted fields.
    let bob = [
        "\u{feff} [].contract , [].bid \r\n".to_owned(),
        crlf(m.row("Bob", "1", Ct::Good("250"))),
        crlf(m.row("Bob", "3", Ct::OtherLot("30"))),
        crlf(m.row("Bob", "4", Ct::Good("20"))),
        "\r\n".to_owned(),
        crlf(m.row("Bob", "5", Ct::Good("50"))),
        crlf(m.row("Bob", "6", Ct::Garbage)),
        crlf(m.row("Bob", "9", Ct::Good("90"))),
        crlf(m.row("Bob", "10", Ct::Good("0100"))),
        crlf(m.row("Bob", "11", Ct::Good("0.00"))),
        crlf(m.row("Bob", "17", Ct::Good("12.345"))),
        quoted(m.row("Bob", "19", Ct::Good("19"))),
    ]
    .concat();
    let carol = m.envelope(
        "Carol",
        Envelope::padded(&[
            ("1", "250.00"),
            ("4", "30"),
            ("6", "70"),
            ("12", "999999999999999999.99"),
            ("20", "5"),
        ]),
    );
    let dave = m.envelope(
        "Dave",
        Envelope::unpadded(
            b"contract,bid\r\n4,40\r\n8,1\r\n8,2\r\n9,9.999\r\nnot a row\r\n-x,5\r\n21,21\r\n22, 0022.50 \r\n\"23\",\"23\"\r\n24,\xff\r\n25,\r\n",
        ),
    );
    m.case(
        reveal,
        false,
        997,
        vec![
            ("Alice", alice.concat().into_bytes()),
            ("Bob", bob.into_bytes()),
            ("Carol", carol),
            ("Dave", dave),
        ],
    )
}

/// Files set aside whole, or that add nothing, each for a reason in the file itself. The
/// envelope files bid high on lots 1 and 2: had any of their rows counted, the result would
/// show it.
fn whole_files(mode: Mode) -> Case {
    let mut m = Maker::new(format!("{}-whole-files", mode_name(mode)), mode);
    let high = [("1", "9999"), ("2", "9999")];
    let mut after_padding = bidfile_padded(&[("2", "250")]);
    after_padding[4000..4006].copy_from_slice(b"1,9999");
    let mut files = vec![
        (
            "Alice",
            [
                PER_BID_HEADER.to_owned(),
                m.row("Alice", "1", Ct::Good("100")),
                m.row("Alice", "2", Ct::Good("200")),
            ]
            .concat()
            .into_bytes(),
        ),
        ("EmptyFile", Vec::new()),
        (
            "GarbageText",
            b"Dear auctioneer,\nplease find my bids enclosed.\n".to_vec(),
        ),
        (
            "BinaryGarbage",
            (0..=255u8).rev().cycle().take(700).collect(),
        ),
        ("HeaderOnly", PER_BID_HEADER.as_bytes().to_vec()),
        ("PlaintextHeader", b"contract,bid\n1,9999\n".to_vec()),
        (
            "EnvelopeMagic",
            [&[0x02, 0x05, 0x78][..], &[0xab; 300][..]].concat(),
        ),
    ];
    let envelopes = [
        ("EnvelopeHeaderOnly", Envelope::padded(&[])),
        ("EnvelopeEmpty", Envelope::unpadded(b"")),
        (
            "EnvelopeBadHeader",
            Envelope::unpadded(b"lot,amount\n1,9999\n"),
        ),
        ("AfterPadding", Envelope::unpadded(&after_padding)),
        (
            "KeyRefused",
            Envelope::padded(&high).fault(Fault::KeyRefused),
        ),
        (
            "OtherDataKey",
            Envelope::padded(&high).fault(Fault::OtherDataKey),
        ),
        (
            "TruncatedHeader",
            Envelope::padded(&high).fault(Fault::TruncatedHeader),
        ),
        (
            "CorruptFirstFrame",
            Envelope::padded(&high).fault(Fault::CorruptFirstFrame),
        ),
    ];
    for (buyer, e) in envelopes {
        files.push((buyer, m.envelope(buyer, e)));
    }
    if mode == Mode::Unsealed {
        // A sealed auction fails on either (the manifest's buyer→key binding).
        for (buyer, fault) in [
            ("OtherAuction", Fault::OtherAuction),
            ("OtherKey", Fault::OtherKey),
        ] {
            files.push((
                buyer,
                m.envelope(buyer, Envelope::padded(&high).fault(fault)),
            ));
        }
    }
    m.case(RevealPolicy::WinningBid, false, 1500, files)
}

/// Lot ids at the corners of the output's natural order: numbers and leading zeros, digits
/// and letters mixed, separators, the longest ids, digit runs longer than any integer type;
/// some named only in an envelope file, and ids that are not lot ids.
fn lot_ids() -> Case {
    let mut m = Maker::new("lot-ids".to_owned(), Mode::Sealed);
    let long_a = format!("{}a", "7".repeat(63));
    let long_b = format!("a{}", "b".repeat(63));
    let ids: Vec<&str> = vec![
        "2",
        "10",
        "1a",
        "01",
        "1",
        "001",
        "1A",
        "a1",
        "A1",
        "a",
        "B",
        "b",
        "0",
        "00",
        "9",
        "09",
        "1.5",
        "1.10",
        "1-2",
        "1/2",
        "1:2",
        "x_1",
        "1a2",
        "1a10",
        "lot2",
        "lot10",
        "Lot2",
        "LOT-2026/7",
        "123456789012345678901234567890",
        "123456789012345678901234567891",
        "0123456789012345678901234567890",
        long_a.as_str(),
        long_b.as_str(),
    ];
    let mut alice = vec![PER_BID_HEADER.to_owned()];
    let mut carol = vec![PER_BID_HEADER.to_owned()];
    for (i, id) in ids.iter().enumerate() {
        alice.push(m.row("Alice", id, Ct::Good(&format!("{}", 100 + i))));
        if i.is_multiple_of(3) {
            // Ties with Alice on every third lot.
            carol.push(m.row("Carol", id, Ct::Good(&format!("{}.00", 100 + i))));
        }
    }
    // Not lot ids: 65 characters, a non-ASCII letter, a leading separator.
    for bad in ["9".repeat(65), "é".to_owned(), "_1".to_owned()] {
        alice.push(format!("{bad},QUJD\n"));
    }
    let bob = m.envelope(
        "Bob",
        Envelope::padded(&[
            ("1", "500"),
            ("010", "5"),
            ("1b", "6"),
            (long_a.as_str(), "7"),
            ("only-bob", "8"),
            ("99999999999999999999999999999999", "9"),
        ]),
    );
    m.case(
        RevealPolicy::WinningBid,
        false,
        333,
        vec![
            ("Alice", alice.concat().into_bytes()),
            ("Bob", bob),
            ("Carol", carol.concat().into_bytes()),
        ],
    )
}

/// An unsealed auction whose terms allow bids made without an encryption context.
fn no_context() -> Case {
    let mut m = Maker::new("unsealed-no-context".to_owned(), Mode::Unsealed);
    let alice = [
        PER_BID_HEADER.to_owned(),
        m.row("Alice", "1", Ct::NoContext("100")),
        m.row("Alice", "2", Ct::Good("50")),
        m.row("Alice", "3", Ct::NoContext("abc")),
    ]
    .concat();
    let bob = [
        PER_BID_HEADER.to_owned(),
        m.row("Bob", "1", Ct::Good("100")),
        // Made for another lot: refused with the context, and without it.
        m.row("Bob", "2", Ct::OtherLot("500")),
        m.row("Bob", "3", Ct::NoContext("30")),
    ]
    .concat();
    let carol = m.envelope("Carol", Envelope::unpadded(b"contract,bid\n1,99.99\n4,1\n"));
    m.case(
        RevealPolicy::SecondPrice,
        true,
        64,
        vec![
            ("Alice", alice.into_bytes()),
            ("Bob", bob.into_bytes()),
            ("Carol", carol),
        ],
    )
}

/// A few thousand lots and five buyers: rows in an order unlike the output's, most lots
/// named by several buyers, ties, invalid amounts and a lot named twice now and then.
fn many_lots() -> Case {
    const LOTS: u64 = 3000;
    let mut m = Maker::new("sealed-many-lots".to_owned(), Mode::Sealed);
    let id = |n: u64| {
        if n.is_multiple_of(7) {
            format!("lot-{n}")
        } else {
            n.to_string()
        }
    };
    // Every lot once, in a scrambled order (1847 is prime to 3000).
    let order: Vec<u64> = (0..LOTS).map(|k| k * 1847 % LOTS + 1).collect();
    let amount = |n: u64, b: u64| format!("{}.{:02}", (n * 37 + b * 101) % 500, n % 3 * 25);
    let mut files = Vec::new();
    for (b, buyer) in (1u64..).zip(["Alice", "Bob", "Carol"]) {
        let mut rows = vec![PER_BID_HEADER.to_owned()];
        for &n in order.iter().filter(|&&n| !(n + b).is_multiple_of(4)) {
            let plaintext = match (n * b).is_multiple_of(97) {
                true => "a lot".to_owned(),
                false => amount(n, b),
            };
            rows.push(m.row(buyer, &id(n), Ct::Good(&plaintext)));
            if n % 499 == b {
                rows.push(m.row(buyer, &id(n), Ct::Good("1")));
            }
        }
        files.push((buyer, rows.concat().into_bytes()));
    }
    let dave: Vec<(String, String)> = order
        .iter()
        .filter(|&&n| n.is_multiple_of(3))
        .map(|&n| (id(n), amount(n, 4)))
        .collect();
    let dave: Vec<(&str, &str)> = dave.iter().map(|(l, a)| (&l[..], &a[..])).collect();
    let mut erin = b"contract,bid\n".to_vec();
    for &n in order.iter().filter(|&&n| n.is_multiple_of(5)) {
        erin.extend_from_slice(format!("{},{}\n", id(n), amount(n, 5)).as_bytes());
    }
    files.push(("Dave", m.envelope("Dave", Envelope::padded(&dave))));
    files.push((
        "Erin",
        m.envelope("Erin", Envelope::unpadded(&erin).frame(512)),
    ));
    m.case(RevealPolicy::SecondPrice, false, 16_381, files)
}

// ---------------------------------------------------------------------------------------
// Making the files.

/// One auction: its terms and every buyer's file, in the terms' order (the order files are
/// sent in).
struct Case {
    name: String,
    mode: Mode,
    reveal: RevealPolicy,
    allow_no_context: bool,
    /// Bytes per file chunk, so that chunks end inside rows and frames.
    chunk: usize,
    files: Vec<(&'static str, Vec<u8>)>,
}

impl Case {
    fn terms(&self) -> AuctionConfig {
        let buyers = self
            .files
            .iter()
            .map(|(b, _)| BuyerSpec {
                name: BuyerName::new(*b).unwrap(),
                key_arn: arn(b),
            })
            .collect();
        let auction = AuctionId::new(self.name.clone()).unwrap();
        AuctionConfig::new(auction, buyers, self.reveal, self.allow_no_context).unwrap()
    }

    fn manifest(&self) -> Manifest {
        let files = self
            .files
            .iter()
            .map(|(b, file)| FileEntry {
                buyer: BuyerName::new(*b).unwrap(),
                bucket: "corpus-bids".into(),
                key: format!("{b}/bids"),
                size: file.len() as u64,
                sha256: config::sha256(file),
                format: FileFormat::detect(file),
            })
            .collect();
        Manifest::new(self.terms(), files).unwrap()
    }
}

fn arn(buyer: &str) -> KeyArn {
    let id = buyer.to_ascii_lowercase();
    KeyArn::new(format!("arn:aws:kms:us-east-1:111122223333:key/{id}")).unwrap()
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Sealed => "sealed",
        Mode::Unsealed => "unsealed",
    }
}

/// A model KMS ciphertext: what it was made under and of, in the clear. Only the model KMS
/// looks inside; to the enclave it is an opaque blob, as a real one is.
#[derive(Serialize, Deserialize)]
struct ModelCiphertext {
    key: String,
    context: Option<BTreeMap<String, String>>,
    /// Hex.
    plaintext: String,
    /// Tells apart ciphertexts of one plaintext, as KMS's random IVs do (an unsealed auction
    /// refuses a ciphertext seen twice).
    serial: u64,
}

fn model_ciphertext(
    key: &KeyArn,
    context: Option<&BTreeMap<String, String>>,
    plaintext: &[u8],
    serial: u64,
) -> Vec<u8> {
    serde_json::to_vec(&ModelCiphertext {
        key: key.to_string(),
        context: context.cloned(),
        plaintext: hex::encode(plaintext),
        serial,
    })
    .unwrap()
}

/// The model KMS: Decrypt as KMS judges it from the request's KeyId and context.
fn model_kms(job: &DecryptJob) -> DecryptOutcome {
    let Ok(ct) = serde_json::from_slice::<ModelCiphertext>(&job.ciphertext) else {
        return DecryptOutcome::Disqualified(Reason::Undecryptable);
    };
    if ct.key != job.key_arn.as_str() {
        return DecryptOutcome::Disqualified(Reason::WrongKey);
    }
    let opens = match &ct.context {
        Some(context) => *context == job.context,
        // Only the retry without a context opens a ciphertext made without one.
        None => job.retry_without_context,
    };
    if !opens {
        return DecryptOutcome::Disqualified(Reason::Undecryptable);
    }
    DecryptOutcome::Plaintext(Plaintext::new(hex::decode(ct.plaintext).unwrap().into()))
}

/// How a per-bid row's ciphertext was made.
#[derive(Clone, Copy)]
enum Ct<'a> {
    /// Of this plaintext, under the buyer's key, with the lot's context.
    Good(&'a str),
    /// Under a key that is not the buyer's.
    OtherKey(&'a str),
    /// With the context of another lot.
    OtherLot(&'a str),
    /// Without a context (`aws kms encrypt` without `--encryption-context`).
    NoContext(&'a str),
    /// Bytes that are no KMS ciphertext.
    Garbage,
}

/// An envelope file: the buyer's plaintext CSV in one Encryption SDK message.
struct Envelope {
    plaintext: Vec<u8>,
    frame: u32,
    fault: Fault,
}

/// What is wrong with an envelope file, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Its context names another auction.
    OtherAuction,
    /// Its data key is under a key that is not the buyer's.
    OtherKey,
    /// Its encrypted data key is no KMS ciphertext.
    KeyRefused,
    /// KMS opens its encrypted data key to another key than the one the file is made with.
    OtherDataKey,
    /// Cut inside the header.
    TruncatedHeader,
    /// One bit of the first frame's ciphertext flipped.
    CorruptFirstFrame,
    /// One bit of the footer's signature flipped: every frame opens, the message does not
    /// verify.
    LateSignature,
}

impl Envelope {
    /// Rows as `bidctl encrypt --format envelope` writes them: amounts at one width, padding.
    fn padded(rows: &[(&str, &str)]) -> Envelope {
        Envelope::unpadded(&bidfile_padded(rows))
    }

    /// Any plaintext, as `aws-encryption-cli` would encrypt a buyer's own CSV.
    fn unpadded(plaintext: &[u8]) -> Envelope {
        Envelope {
            plaintext: plaintext.to_vec(),
            frame: 4096,
            fault: Fault::None,
        }
    }

    fn frame(self, frame: u32) -> Envelope {
        Envelope { frame, ..self }
    }

    fn fault(self, fault: Fault) -> Envelope {
        Envelope { fault, ..self }
    }
}

fn bidfile_padded(rows: &[(&str, &str)]) -> Vec<u8> {
    let rows: Vec<PlaintextRow> = (2..)
        .zip(rows)
        .map(|(line, (lot, amount))| PlaintextRow {
            line,
            lot: LotId::new(*lot).unwrap(),
            amount: Amount::parse(amount.as_bytes()).unwrap(),
        })
        .collect();
    bidfile::padded_plaintext(&rows, None)
}

fn crlf(row: String) -> String {
    row.replace('\n', "\r\n")
}

/// `lot,bid` as `"lot","bid"`.
fn quoted(row: String) -> String {
    let (lot, bid) = row.trim_end().split_once(',').unwrap();
    format!("\"{lot}\",\"{bid}\"\n")
}

/// Makes one case's ciphertexts and files.
struct Maker {
    case: String,
    auction: AuctionId,
    mode: Mode,
    serial: u64,
}

impl Maker {
    fn new(case: String, mode: Mode) -> Maker {
        Maker {
            auction: AuctionId::new(case.clone()).unwrap(),
            case,
            mode,
            serial: 0,
        }
    }

    fn case(
        self,
        reveal: RevealPolicy,
        allow_no_context: bool,
        chunk: usize,
        files: Vec<(&'static str, Vec<u8>)>,
    ) -> Case {
        Case {
            name: self.case,
            mode: self.mode,
            reveal,
            allow_no_context,
            chunk,
            files,
        }
    }

    /// [`case`](Self::case), keeping the maker for more files of the same auction.
    fn clone_case(
        &self,
        reveal: RevealPolicy,
        chunk: usize,
        files: Vec<(&'static str, Vec<u8>)>,
    ) -> Case {
        Case {
            name: self.case.clone(),
            mode: self.mode,
            reveal,
            allow_no_context: false,
            chunk,
            files,
        }
    }

    fn bid_context(&self, lot: &str, buyer: &str) -> BTreeMap<String, String> {
        let (lot, buyer) = (LotId::new(lot).unwrap(), BuyerName::new(buyer).unwrap());
        kms::bid_context(self.mode, &self.auction, &lot, &buyer)
    }

    /// One per-bid row, `lot,<base64 ciphertext>` and a line end.
    fn row(&mut self, buyer: &str, lot: &str, ct: Ct<'_>) -> String {
        self.serial += 1;
        let context = self.bid_context(lot, buyer);
        let make = |key: &KeyArn, context: Option<&BTreeMap<_, _>>, plaintext: &str| {
            model_ciphertext(key, context, plaintext.as_bytes(), self.serial)
        };
        let bytes = match ct {
            Ct::Good(p) => make(&arn(buyer), Some(&context), p),
            Ct::OtherKey(p) => make(&arn(STRANGER), Some(&context), p),
            Ct::OtherLot(p) => make(&arn(buyer), Some(&self.bid_context("elsewhere", buyer)), p),
            Ct::NoContext(p) => make(&arn(buyer), None, p),
            Ct::Garbage => b"no KMS ciphertext".to_vec(),
        };
        format!("{lot},{}\n", B64.encode(bytes))
    }

    /// The buyer's envelope file: kept in the corpus (see the module documentation), checked
    /// against `e`, then `e`'s fault applied.
    fn envelope(&mut self, buyer: &str, e: Envelope) -> Vec<u8> {
        self.make_envelope(buyer, e, true)
    }

    /// An envelope file made afresh and kept nowhere, for tests that assert what happens
    /// rather than compare outputs with the corpus.
    fn fresh_envelope(&mut self, buyer: &str, e: Envelope) -> Vec<u8> {
        self.make_envelope(buyer, e, false)
    }

    fn make_envelope(&mut self, buyer: &str, e: Envelope, kept: bool) -> Vec<u8> {
        let key = match e.fault {
            Fault::OtherKey => arn(STRANGER),
            _ => arn(buyer),
        };
        let auction = match e.fault {
            Fault::OtherAuction => "another-auction",
            _ => self.auction.as_str(),
        };
        let mut context = BTreeMap::from([
            (CONTEXT_AUCTION.to_owned(), auction.to_owned()),
            (CONTEXT_BUYER.to_owned(), buyer.to_owned()),
        ]);
        if self.mode == Mode::Sealed {
            context.insert(RULES_CONTEXT_KEY.to_owned(), SEALED_RULES.to_owned());
        }
        let data_key = config::sha256(format!("{}/{buyer}", self.case).as_bytes());
        let path = case_dir(&self.case).join(format!("{buyer}.envelope"));
        let read = if kept {
            std::fs::read(&path)
        } else {
            Err(std::io::ErrorKind::NotFound.into())
        };
        let mut file = match read {
            Ok(kept) => {
                let holds = kept_envelope_holds(&kept, &context, &key, &data_key, &e);
                assert!(
                    holds,
                    "{} does not hold what its case describes; delete it and run with {REGENERATE}=1 (which changes the case's outputs: they name the file's digest)",
                    path.display()
                );
                kept
            }
            Err(_) => {
                let regenerating = std::env::var(REGENERATE).is_ok_and(|v| v == "1");
                assert!(
                    regenerating || !kept,
                    "{} is missing: it is one of the corpus's inputs",
                    path.display()
                );
                let enc = Encryptor::new(context).unwrap();
                let edk = encrypted_data_key(e.fault, &key, enc.context(), &data_key);
                let bytes = enc
                    .encrypt(&data_key, &edk, key.as_str(), &e.plaintext, e.frame)
                    .unwrap();
                if kept {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, &bytes).unwrap();
                }
                bytes
            }
        };
        match e.fault {
            Fault::TruncatedHeader => file.truncate(60),
            Fault::CorruptFirstFrame => {
                let (header, _, _) = Message::parse(&file, &Limits::default())
                    .unwrap()
                    .section_lengths();
                // Past the frame's sequence number (4 bytes) and IV (12).
                file[header + 16] ^= 1;
            }
            Fault::LateSignature => {
                // Inside the DER signature's last integer, the footer's final bytes.
                let n = file.len();
                file[n - 8] ^= 1;
            }
            _ => {}
        }
        file
    }
}

/// The envelope file's encrypted data key: a model KMS ciphertext of the data key under the
/// message's whole context (the signing key's public half included, as GenerateDataKey gets
/// it), or what the fault says.
fn encrypted_data_key(
    fault: Fault,
    key: &KeyArn,
    context: &BTreeMap<String, String>,
    data_key: &[u8],
) -> Vec<u8> {
    match fault {
        Fault::KeyRefused => b"no KMS ciphertext".to_vec(),
        Fault::OtherDataKey => model_ciphertext(key, Some(context), &[0x5a; 32], 0),
        _ => model_ciphertext(key, Some(context), data_key, 0),
    }
}

/// Whether a kept envelope file is still the one `e` describes: a valid, signed message with
/// this context (besides its public key), this data key and frame length, and this plaintext.
fn kept_envelope_holds(
    kept: &[u8],
    context: &BTreeMap<String, String>,
    key: &KeyArn,
    data_key: &[u8],
    e: &Envelope,
) -> bool {
    let Ok(message) = Message::parse(kept, &Limits::default()) else {
        return false;
    };
    let mut own = message.context().clone();
    own.remove(PUBLIC_KEY_CONTEXT_KEY);
    let expected_key = DataKey {
        provider_id: BID_FILE_PROVIDER_ID.to_owned(),
        provider_info: key.as_str().as_bytes().to_vec(),
        encrypted_key: encrypted_data_key(e.fault, key, message.context(), data_key),
    };
    own == *context
        && message.data_keys() == [expected_key]
        && message.frame_length() == e.frame
        && message
            .decrypt(data_key)
            .is_ok_and(|p| *p == e.plaintext[..])
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/output-corpus")
}

fn case_dir(case: &str) -> PathBuf {
    corpus().join(case)
}

// ---------------------------------------------------------------------------------------
// The driver: the parent's requests in order, the session drained after each.

/// The session under test, with roomy limits. (On branch `output-corpus-before`, the one
/// place this test differs: the old `EnclaveSession::new` takes no hash seed.)
fn session(mode: Mode) -> EnclaveSession {
    let settings = EnclaveSettings {
        rules: mode,
        max_pending_bids: 32,
        max_lots: 8192,
        max_bids: 1 << 16,
        ..EnclaveSettings::default()
    };
    EnclaveSession::new(settings, ReplayGuard::new(1 << 20), NOW, [9; 16])
}

/// Runs a case: hello, credentials, open, seals, every file in chunks, close. Returns
/// output.csv and output.json, or why the session did not close.
fn run(case: &Case) -> Result<(Vec<u8>, Vec<u8>), String> {
    run_sending(case, &|_, file| file.to_vec()).0
}

/// [`run`], with what the parent sends for each buyer's file chosen by `send` (the manifest
/// still names the case's files). Also returns how many bids had been opened at KMS when each
/// file's last chunk was sent.
#[allow(clippy::type_complexity)]
fn run_sending(
    case: &Case,
    send: &dyn Fn(&str, &[u8]) -> Vec<u8>,
) -> (Result<(Vec<u8>, Vec<u8>), String>, Vec<u64>) {
    let mut d = Driver::new(session(case.mode));
    d.send(Request::Hello(Hello {
        protocol: wire::PROTOCOL_VERSION,
        nonce: vec![7; 32],
    }));
    d.send(Request::Credentials(credentials()));
    match case.mode {
        Mode::Sealed => {
            let m = case.manifest();
            d.send(Request::OpenSealed(OpenSealed {
                manifest: m.canonical_bytes(),
            }));
            for b in m.terms().buyers() {
                let context = manifest::seal_context(m.terms().auction_id(), &b.name, &m.digest());
                let ciphertext = model_ciphertext(&b.key_arn, Some(&context), SEAL_MARKER, 0);
                d.send(Request::Seal(Seal {
                    buyer: b.name.clone(),
                    ciphertext,
                }));
            }
        }
        Mode::Unsealed => d.send(Request::OpenUnsealed(case.terms())),
    }
    let mut opened_before_last = Vec::new();
    for (buyer, file) in &case.files {
        let file = send(buyer, file);
        // An empty file is one empty last chunk.
        let chunks: Vec<&[u8]> = if file.is_empty() {
            vec![&file[..]]
        } else {
            file.chunks(case.chunk).collect()
        };
        for (i, data) in chunks.iter().enumerate() {
            if i + 1 == chunks.len() {
                opened_before_last.push(d.decrypts);
            }
            d.send(Request::FileChunk(FileChunk {
                buyer: BuyerName::new(*buyer).unwrap(),
                data: data.to_vec(),
                last: i + 1 == chunks.len(),
            }));
        }
    }
    d.send(Request::Close(Close {}));
    let outcome = match (d.closed, d.errors.is_empty()) {
        (true, true) => Ok((d.csv, d.json)),
        // Nothing of a result may have left a session that did not close.
        _ if !d.csv.is_empty() || !d.json.is_empty() => Err(format!(
            "a result chunk left a session that failed: {}",
            d.errors.join("; ")
        )),
        _ => Err(d.errors.join("; ")),
    };
    (outcome, opened_before_last)
}

fn credentials() -> Credentials {
    Credentials {
        access_key_id: "ASIACORPUS0000000001".into(),
        secret_access_key: Secret::new("corpus-secret"),
        session_token: Some(Secret::new("corpus-token")),
        expiration: Some(NOW / 1000 + 3600),
        region: Region::new("us-east-1").unwrap(),
    }
}

/// The enclave's driver with a model NSM and KMS, and the parent's reading of its replies.
struct Driver {
    session: EnclaveSession,
    last_id: u64,
    decoder: FrameDecoder,
    frames: u64,
    csv: Vec<u8>,
    json: Vec<u8>,
    closed: bool,
    errors: Vec<String>,
    /// Bids (and seals and data keys) sent to the model KMS so far.
    decrypts: u64,
}

impl Driver {
    fn new(session: EnclaveSession) -> Driver {
        Driver {
            session,
            last_id: 0,
            decoder: FrameDecoder::new(usize::MAX),
            frames: 0,
            csv: Vec::new(),
            json: Vec::new(),
            closed: false,
            errors: Vec::new(),
            decrypts: 0,
        }
    }

    fn send(&mut self, msg: Request) {
        self.last_id += 1;
        let request = wire::encode_request(&ToEnclave {
            id: self.last_id,
            msg,
        });
        let mut frame = Vec::new();
        wire::encode_frame(&request, usize::MAX, &mut frame).unwrap();
        self.session.handle_input(&frame, NOW);
        self.settle();
    }

    /// Does what the session asks and takes what it sends until neither yields: the result
    /// is rendered as `poll_transmit` is drained, and its last chunk asks for the attestation.
    fn settle(&mut self) {
        loop {
            let mut busy = false;
            while let Some(action) = self.session.poll_action() {
                busy = true;
                match action {
                    // The outputs do not depend on the document.
                    Action::Attest { ticket, .. } => self
                        .session
                        .attested(ticket, Ok(b"model document".to_vec())),
                    Action::Decrypt(job) => {
                        self.decrypts += 1;
                        self.session.decrypted(job.ticket, model_kms(&job))
                    }
                    Action::UseCredentials(_) => {}
                }
            }
            while let Some(bytes) = self.session.poll_transmit() {
                busy = true;
                self.receive(&bytes);
            }
            if !busy {
                return;
            }
        }
    }

    fn receive(&mut self, mut bytes: &[u8]) {
        while let Some(frame) = self.decoder.decode(&mut bytes).unwrap() {
            self.frames += 1;
            match wire::decode_response(self.frames, &frame).unwrap().msg {
                Response::ResultChunk(c) => match c.file {
                    OutputFile::Csv => self.csv.extend_from_slice(&c.data),
                    OutputFile::Json => self.json.extend_from_slice(&c.data),
                },
                Response::Closed(_) => self.closed = true,
                Response::Error(e) => self.errors.push(format!("{}: {}", e.code, e.message)),
                _ => {}
            }
        }
    }
}

/// Where `found` first differs from `expected`: the line, and both versions of it around the
/// first differing byte (output.json's lots can make one long line).
fn first_difference(expected: &[u8], found: &[u8]) -> Option<String> {
    if expected == found {
        return None;
    }
    let a: Vec<&[u8]> = expected.split(|&c| c == b'\n').collect();
    let b: Vec<&[u8]> = found.split(|&c| c == b'\n').collect();
    let i = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i))?;
    let (x, y) = (
        a.get(i).copied().unwrap_or(b""),
        b.get(i).copied().unwrap_or(b""),
    );
    let at = x
        .iter()
        .zip(y)
        .position(|(p, q)| p != q)
        .unwrap_or(x.len().min(y.len()));
    let around = |l: &[u8]| {
        let from = at.saturating_sub(80);
        let to = (at + 80).min(l.len());
        let cut = |c: bool| if c { "…" } else { "" };
        format!(
            "{}{}{}",
            cut(from > 0),
            String::from_utf8_lossy(&l[from.min(l.len())..to]),
            cut(to < l.len())
        )
    };
    Some(format!(
        "first at line {} (byte {} of the line)\n  expected: {}\n  found:    {}",
        i + 1,
        at + 1,
        around(x),
        around(y)
    ))
}
