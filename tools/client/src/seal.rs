//! A buyer's seal of a sealed auction's manifest (`bidctl seal`, DESIGN §2): the buyer's
//! consent to exactly one manifest, given only once the buyer has checked that the manifest
//! registers their own key, holds their own file, and would let that file open.
//!
//! The operator writes the manifest, including the buyer→key map and each file's terms
//! (auction id, buyer name), so before sealing [`seal`] refuses a manifest under which the
//! buyer's file would not open: for an envelope file it compares the header's `auction`,
//! `buyer`, `rules` and wrapping key with the manifest ([`esdk::check_bid_file`], no KMS); for a
//! per-bid file it decrypts the first row with the buyer's own credentials under the context
//! the sealed image will pass (`kms::bid_context(Mode::Sealed, ..)`), where KMS lets the buyer.
//! It warns about what the buyer can see in their own file and the enclave would set aside
//! (malformed rows, a header-only file) or what the file's size tells (ciphertexts of
//! different lengths, an unpadded envelope). Each seal is kept in the buyer's
//! [`SealRecord`] by auction and by the file's SHA-256, so a second, different manifest
//! holding the same file under any auction id is refused unless forced.
//!
//! The command line (`cmd/seal.rs`) fetches the manifest, prints its terms and these notes,
//! and writes or uploads the seal; the rules are here.

use crate::kms_client::{KmsClient, KmsError};
use bidding_core::bidfile::{self, EncryptedRow, Limits, is_padded_len};
use bidding_core::config::{Mode, sha256};
use bidding_core::esdk::{self, EsdkError, Message};
use bidding_core::kms::bid_context;
use bidding_core::manifest::{self, FileEntry, FileFormat, Manifest, ManifestError, SEAL_MARKER};
use bidding_core::names::{BuyerName, KeyArn, LotId};
use bidding_core::seal_record::{SealEntry, SealRecord, SecondSeal};
use bidding_parent::aws::Env;
use std::path::{Path, PathBuf};

/// The seal record's file in the state directory.
pub const RECORD_FILE: &str = "seals.json";

/// What a buyer seals with.
pub struct SealRequest<'a> {
    /// The manifest's bytes as published (H is their SHA-256).
    pub manifest: &'a [u8],
    pub buyer: &'a BuyerName,
    /// The buyer's own key, as they made it.
    pub key: &'a KeyArn,
    /// The buyer's own bid file, exactly as uploaded.
    pub bids: &'a [u8],
    /// Seal even when the record shows another manifest of this auction or with this file.
    pub force: bool,
    /// The seal record (`<state dir>/seals.json`), read, checked and written back.
    pub record: &'a Path,
}

/// Something the buyer should know, reported as [`seal`] goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A problem the buyer can see in their own file: the enclave will set the rows (or the
    /// file) aside, or the file's size tells the operator more than it should.
    Warning(String),
    /// The first row of a per-bid file opened with the buyer's credentials under the
    /// manifest's context.
    Opened { lot: LotId },
    /// KMS did not let the buyer check a row (AccessDenied, or another error that says
    /// nothing about the file): the check was skipped.
    NotChecked(String),
    /// `--force` overrode the record.
    Forced(SecondSeal),
}

/// A seal made.
#[derive(Debug)]
pub struct Sealed {
    /// H, the manifest's SHA-256.
    pub manifest_sha256: [u8; 32],
    /// The manifest's entry for the buyer's file (where the seal goes with `--upload`).
    pub file: FileEntry,
    /// The seal: KMS's ciphertext of [`SEAL_MARKER`] under the buyer's key with the context
    /// `{auction, buyer, manifest: hex(H)}`.
    pub ciphertext: Vec<u8>,
}

/// Why nothing was sealed. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("`{0}` is not a buyer in this manifest; nothing was sealed")]
    NotABuyer(BuyerName),
    #[error(
        "the manifest registers key {registered} for `{buyer}`, not your key {yours}; nothing was sealed"
    )]
    OtherKey {
        buyer: BuyerName,
        registered: KeyArn,
        yours: KeyArn,
    },
    #[error(
        "the manifest does not hold your file: it names s3://{bucket}/{key} with {size} bytes and SHA-256 {sha256}, but yours has {your_size} bytes and SHA-256 {your_sha256}. Do not seal: ask the operator why"
    )]
    NotYourFile {
        bucket: String,
        key: String,
        size: u64,
        sha256: String,
        your_size: u64,
        your_sha256: String,
    },
    #[error(
        "your envelope file would not open under this manifest: {0}. The enclave would fail the auction on it; nothing was sealed (ask the operator why the terms differ from the ones you encrypted for)"
    )]
    EnvelopeTerms(EsdkError),
    #[error(
        "your file would be set aside whole (malformed_file): {0}; nothing was sealed. This is your file, not the manifest: only a corrected upload fixes it"
    )]
    Malformed(String),
    #[error(
        "your bid on lot {lot} does not open under this manifest's context {context}: KMS says {code}: {message}. Were your bids made for another auction id or buyer name, under another key, or without rules=sealed? Nothing was sealed"
    )]
    WouldNotOpen {
        lot: LotId,
        context: String,
        code: String,
        message: String,
    },
    #[error(
        "{0}; nothing was sealed (--force if the first manifest was withdrawn and you accept that both could be run)"
    )]
    SecondSeal(#[from] SecondSeal),
    #[error("{path}: not bidctl's seal record: {cause}")]
    RecordFormat { path: PathBuf, cause: String },
    #[error("{what} {path}: {cause}")]
    RecordIo {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("sealing with KMS: {0}; nothing was sealed")]
    Kms(#[from] KmsError),
}

/// Where `bidctl` keeps what a buyer sealed: `explicit` (`--state-dir`), else
/// `$XDG_DATA_HOME/bidctl`, else `~/.local/share/bidctl`. `bidctl verify --buyer` reads the
/// record from the same place.
pub fn state_dir(explicit: Option<&Path>, env: &Env) -> Option<PathBuf> {
    if let Some(d) = explicit {
        return Some(d.to_owned());
    }
    if let Some(d) = env.get("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("bidctl"));
    }
    let home = env.get("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".local/share/bidctl"))
}

/// The seal record at `path`: empty when there is none yet. Reads the first format
/// (`{"sealed": {"<auction>/<buyer>": hex(H)}}`) too; [`write_record`] keeps its entries.
pub fn read_record(path: &Path) -> Result<Option<SealRecord>, SealError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| SealError::RecordFormat {
                    path: path.to_owned(),
                    cause: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SealError::RecordIo {
            what: "reading",
            path: path.to_owned(),
            cause: e,
        }),
    }
}

/// Writes the record atomically (a temporary file renamed over it).
pub fn write_record(path: &Path, record: &SealRecord) -> Result<(), SealError> {
    let io = |what, cause| SealError::RecordIo {
        what,
        path: path.to_owned(),
        cause,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
    }
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(record).expect("the record serialises");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| io("writing", e))
}

/// What [`check_file`] found in the buyer's own file, before any KMS call.
#[derive(Debug, Default)]
pub struct FileCheck {
    pub warnings: Vec<String>,
    /// A per-bid file's first well-formed row, to decrypt under the manifest's context.
    pub probe: Option<EncryptedRow>,
}

/// Checks the manifest's terms for `buyer` against the buyer's own key and file, without KMS:
/// the key registered for the buyer is theirs, the manifest holds their file, and the file
/// would open under the manifest's terms (an envelope header naming this auction, buyer,
/// `rules=sealed` and key, exactly). Returns the warnings about the file and, for a per-bid
/// file, the row to decrypt.
pub fn check_file(
    manifest: &Manifest,
    buyer: &BuyerName,
    key: &KeyArn,
    bids: &[u8],
) -> Result<FileCheck, SealError> {
    let terms = manifest.terms();
    let spec = terms
        .buyer(buyer)
        .ok_or_else(|| SealError::NotABuyer(buyer.clone()))?;
    if &spec.key_arn != key {
        return Err(SealError::OtherKey {
            buyer: buyer.clone(),
            registered: spec.key_arn.clone(),
            yours: key.clone(),
        });
    }
    let file = manifest.file(buyer).expect("every buyer has a file");
    let digest = sha256(bids);
    if digest != file.sha256 || bids.len() as u64 != file.size {
        return Err(SealError::NotYourFile {
            bucket: file.bucket.clone(),
            key: file.key.clone(),
            size: file.size,
            sha256: hex::encode(file.sha256),
            your_size: bids.len() as u64,
            your_sha256: hex::encode(digest),
        });
    }
    match FileFormat::detect(bids) {
        FileFormat::Envelope => check_envelope(manifest, buyer, key, bids),
        FileFormat::PerBid => check_per_bid(bids),
    }
}

fn check_envelope(
    manifest: &Manifest,
    buyer: &BuyerName,
    key: &KeyArn,
    bids: &[u8],
) -> Result<FileCheck, SealError> {
    let message = Message::parse(bids, &esdk::Limits::default())
        .map_err(|e| SealError::Malformed(e.to_string()))?;
    esdk::check_bid_file(
        &message,
        Mode::Sealed,
        manifest.terms().auction_id().as_str(),
        buyer.as_str(),
        key.as_str(),
    )
    .map_err(SealError::EnvelopeTerms)?;
    let mut check = FileCheck::default();
    let len = message.plaintext_len();
    if !is_padded_len(len) {
        check.warnings.push(format!(
            "your envelope file's plaintext is {len} bytes, which its framing shows to anyone: it is not padded, so its size can tell how many rows it holds and how many digits your amounts have (bidctl encrypt --format envelope pads; for aws-encryption-cli, pad with bidctl envelope pad first)"
        ));
    }
    Ok(check)
}

fn check_per_bid(bids: &[u8]) -> Result<FileCheck, SealError> {
    let limits = Limits::default();
    let lenient = bidfile::parse_encrypted_lenient("your file", bids, limits)
        .map_err(|e| SealError::Malformed(e.to_string()))?;
    let mut check = FileCheck::default();
    if lenient.malformed_rows > 0 {
        // The strict parser stops at the first problem: it says where and what.
        let first = bidfile::parse_encrypted("your file", bids, limits)
            .err()
            .map(|e| format!("; the first: {e}"))
            .unwrap_or_default();
        check.warnings.push(format!(
            "{} of your file {} not `<lot>,<ciphertext>` (a line of spaces counts too): the enclave will set {} aside as malformed_row{first}",
            bidding_core::count(lenient.malformed_rows, "row", "rows"),
            if lenient.malformed_rows == 1 { "is" } else { "are" },
            if lenient.malformed_rows == 1 { "it" } else { "them" },
        ));
    }
    if !lenient.duplicate_lots.is_empty() {
        let lots: Vec<&str> = lenient
            .duplicate_lots
            .iter()
            .take(20)
            .map(LotId::as_str)
            .collect();
        check.warnings.push(format!(
            "your file names {} more than once ({}): the enclave will set every bid on {} aside as duplicate_lot",
            bidding_core::count(lenient.duplicate_lots.len() as u64, "lot", "lots"),
            lots.join(", "),
            if lenient.duplicate_lots.len() == 1 { "it" } else { "them" },
        ));
    }
    if lenient.rows.is_empty() {
        check.warnings.push(
            "your file holds no bids (a header and nothing else): it bids on no lot".to_owned(),
        );
    }
    let mut lengths: Vec<usize> = lenient.rows.iter().map(|r| r.ciphertext.len()).collect();
    lengths.sort_unstable();
    lengths.dedup();
    if lengths.len() > 1 {
        check.warnings.push(format!(
            "your ciphertexts have {} different lengths ({} to {} bytes): a ciphertext's length can tell the operator how many digits an amount has (bidctl encrypt writes every amount at one width, 000000000000100000.00)",
            lengths.len(),
            lengths[0],
            lengths[lengths.len() - 1]
        ));
    }
    check.probe = lenient.rows.into_iter().next();
    Ok(check)
}

/// Decrypts a per-bid file's first row with the buyer's own credentials under the context the
/// sealed image passes for this manifest. A refusal that says the row would not open there
/// (KMS's `InvalidCiphertextException`, `IncorrectKeyException`) is an error; one that says
/// only that the buyer may not check (AccessDenied) or that KMS could not answer is a note.
pub fn probe_row(
    kms: &KmsClient,
    manifest: &Manifest,
    buyer: &BuyerName,
    key: &KeyArn,
    row: &EncryptedRow,
) -> Result<Note, SealError> {
    let context = bid_context(Mode::Sealed, manifest.terms().auction_id(), &row.lot, buyer);
    let shown = || {
        context
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match kms.decrypt_check(key.as_str(), &row.ciphertext, Some(context.clone())) {
        Ok(_) => Ok(Note::Opened {
            lot: row.lot.clone(),
        }),
        Err(KmsError::Service { code, message, .. })
            if code == "InvalidCiphertextException" || code == "IncorrectKeyException" =>
        {
            Err(SealError::WouldNotOpen {
                lot: row.lot.clone(),
                context: format!("{{{}}}", shown()),
                code,
                message,
            })
        }
        Err(KmsError::Service { code, .. }) if code.contains("AccessDenied") => {
            Ok(Note::NotChecked(format!(
                "KMS does not let you Decrypt with your key ({code}), so your bids were not test-opened under this manifest's context; the other checks passed"
            )))
        }
        Err(e) => Ok(Note::NotChecked(format!(
            "your bids were not test-opened under this manifest's context ({e}); the other checks passed"
        ))),
    }
}

/// The whole seal: checks the buyer's key and file against the manifest ([`check_file`]),
/// checks the record for a second seal of this auction or of this file, test-opens a per-bid
/// file's first row ([`probe_row`]), has KMS encrypt the seal marker under the buyer's key,
/// and records the seal. Notes go to `note` as they come.
pub fn seal(
    req: &SealRequest<'_>,
    kms: &KmsClient,
    note: &mut dyn FnMut(Note),
) -> Result<Sealed, SealError> {
    let m = Manifest::parse(req.manifest)?;
    let h = m.digest();
    let check = check_file(&m, req.buyer, req.key, req.bids)?;
    for w in check.warnings {
        note(Note::Warning(w));
    }
    let auction = m.terms().auction_id();
    let file_sha256 = sha256(req.bids);
    let mut record = read_record(req.record)?.unwrap_or_default();
    if let Err(second) = record.check(auction, req.buyer, &h, &file_sha256) {
        if !req.force {
            return Err(second.into());
        }
        note(Note::Forced(second));
    }
    if let Some(row) = &check.probe {
        note(probe_row(kms, &m, req.buyer, req.key, row)?);
    }
    let context = manifest::seal_context(auction, req.buyer, &h);
    let ciphertext = kms.encrypt(req.key.as_str(), SEAL_MARKER, Some(context))?;
    record.add(SealEntry {
        auction: auction.clone(),
        buyer: req.buyer.clone(),
        manifest: h,
        file: file_sha256,
    });
    write_record(req.record, &record)?;
    Ok(Sealed {
        manifest_sha256: h,
        file: m.file(req.buyer).expect("checked above").clone(),
        ciphertext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use bidding_core::auction::RevealPolicy;
    use bidding_core::config::{AuctionConfig, BuyerSpec};
    use bidding_core::esdk::Encryptor;
    use bidding_core::names::AuctionId;
    use std::collections::BTreeMap;

    const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/v";
    const OTHER: &str = "arn:aws:kms:us-east-1:111122223333:key/p";

    fn manifest(auction: &str, v_file: &[u8]) -> Manifest {
        let terms = AuctionConfig::new(
            AuctionId::new(auction).unwrap(),
            vec![
                BuyerSpec {
                    name: BuyerName::new("V").unwrap(),
                    key_arn: KeyArn::new(KEY).unwrap(),
                },
                BuyerSpec {
                    name: BuyerName::new("P").unwrap(),
                    key_arn: KeyArn::new(OTHER).unwrap(),
                },
            ],
            RevealPolicy::None,
            false,
        )
        .unwrap();
        let entry = |buyer: &str, f: &[u8]| FileEntry {
            buyer: BuyerName::new(buyer).unwrap(),
            bucket: format!("{}-bids", buyer.to_lowercase()),
            key: "encrypted.csv".into(),
            size: f.len() as u64,
            sha256: sha256(f),
            format: FileFormat::detect(f),
        };
        Manifest::new(terms, vec![entry("V", v_file), entry("P", b"x")]).unwrap()
    }

    fn envelope(context: &[(&str, &str)], key: &str, plaintext: &[u8]) -> Vec<u8> {
        let ctx: BTreeMap<String, String> = context
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Encryptor::new(ctx)
            .unwrap()
            .encrypt(&[7u8; 32], b"edk", key, plaintext, 4096)
            .unwrap()
    }

    fn v() -> BuyerName {
        BuyerName::new("V").unwrap()
    }

    fn key() -> KeyArn {
        KeyArn::new(KEY).unwrap()
    }

    #[test]
    fn an_envelope_header_must_name_the_manifests_terms() {
        let good = [("auction", "a1"), ("buyer", "V"), ("rules", "sealed")];
        let padded = vec![0u8; 4096];
        let file = envelope(&good, KEY, &padded);
        let c = check_file(&manifest("a1", &file), &v(), &key(), &file).unwrap();
        assert!(c.warnings.is_empty() && c.probe.is_none(), "{c:?}");
        // Unpadded: a warning, not a refusal.
        let file = envelope(&good, KEY, b"contract,bid\n1,5\n");
        let c = check_file(&manifest("a1", &file), &v(), &key(), &file).unwrap();
        assert!(c.warnings[0].contains("not padded"), "{:?}", c.warnings);
        // Another auction id in the manifest than in the header, a header without rules
        // (made for today's release), one with an extra key, one under another wrapping key.
        for (ctx, wrap, auction, what) in [
            (&good[..], KEY, "renamed", "is for auction a1, not renamed"),
            (&good[..2], KEY, "a1", "lacks the key rules"),
            (
                &[
                    ("auction", "a1"),
                    ("buyer", "V"),
                    ("rules", "sealed"),
                    ("x", "1"),
                ][..],
                KEY,
                "a1",
                "has the key x",
            ),
            (&good[..], OTHER, "a1", OTHER),
        ] {
            let file = envelope(ctx, wrap, &padded);
            let e = check_file(&manifest(auction, &file), &v(), &key(), &file).unwrap_err();
            assert!(
                matches!(e, SealError::EnvelopeTerms(_)) && e.to_string().contains(what),
                "{what}: {e}"
            );
        }
    }

    #[test]
    fn a_manifest_must_register_your_key_and_hold_your_file() {
        let file = b"[].contract,[].bid\n1,AAAA\n".to_vec();
        let m = manifest("a1", &file);
        let e = check_file(&m, &v(), &KeyArn::new(OTHER).unwrap(), &file).unwrap_err();
        assert!(matches!(e, SealError::OtherKey { .. }), "{e}");
        let e = check_file(&m, &v(), &key(), b"[].contract,[].bid\n").unwrap_err();
        assert!(matches!(e, SealError::NotYourFile { .. }), "{e}");
        let e = check_file(&m, &BuyerName::new("W").unwrap(), &key(), &file).unwrap_err();
        assert!(matches!(e, SealError::NotABuyer(_)), "{e}");
    }

    #[test]
    fn per_bid_files_warn_about_what_the_enclave_would_set_aside() {
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![1u8; n]);
        let text = format!(
            "[].contract,[].bid\n1,{}\n   \n2,{}\n3,{}\n3,{}\n4,{}\n",
            b64(180),
            b64(180),
            b64(180),
            b64(180),
            b64(190)
        );
        let file = text.into_bytes();
        let c = check_file(&manifest("a1", &file), &v(), &key(), &file).unwrap();
        let all = c.warnings.join("\n");
        assert!(all.contains("1 row of your file is not"), "{all}");
        assert!(all.contains("line 3"), "{all}");
        assert!(all.contains("names 1 lot more than once (3)"), "{all}");
        assert!(
            all.contains("2 different lengths (180 to 190 bytes)"),
            "{all}"
        );
        assert_eq!(c.probe.unwrap().lot.as_str(), "1");
        // Header only.
        let file = b"[].contract,[].bid\n".to_vec();
        let c = check_file(&manifest("a1", &file), &v(), &key(), &file).unwrap();
        assert!(c.warnings[0].contains("holds no bids"), "{:?}", c.warnings);
        assert!(c.probe.is_none());
        // Not a bid file at all.
        let file = b"hello\n".to_vec();
        let e = check_file(&manifest("a1", &file), &v(), &key(), &file).unwrap_err();
        assert!(matches!(e, SealError::Malformed(_)), "{e}");
    }

    #[test]
    fn the_record_keeps_the_first_format_and_adds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(RECORD_FILE);
        assert!(read_record(&path).unwrap().is_none());
        let old = format!(r#"{{"sealed":{{"a1/V":"{}"}}}}"#, hex::encode([5u8; 32]));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, old).unwrap();
        let mut r = read_record(&path).unwrap().unwrap();
        let a1 = AuctionId::new("a1").unwrap();
        assert!(r.sealed(&a1, &v(), &[5; 32]));
        r.add(SealEntry {
            auction: AuctionId::new("a2").unwrap(),
            buyer: v(),
            manifest: [6; 32],
            file: [7; 32],
        });
        write_record(&path, &r).unwrap();
        let back = read_record(&path).unwrap().unwrap();
        assert_eq!(back, r);
        assert!(back.sealed(&a1, &v(), &[5; 32]), "the old entry is kept");
        std::fs::write(&path, b"[1,2]").unwrap();
        assert!(matches!(
            read_record(&path),
            Err(SealError::RecordFormat { .. })
        ));
    }
}
