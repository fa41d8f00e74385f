//! Checking a published result offline: the attestation, the terms and both output files
//! ([`verify_result`]), and a buyer's own check on top ([`check_buyer`]): that the manifest
//! binds *their* key to their name, counts *their* file, and set none of their bids aside for a
//! reason the operator could have caused by writing terms that do not fit the file.
//!
//! `bidctl verify` prints what these return; the information-flow search in
//! `core/tests/infoflow.rs` uses [`check_buyer`] as the honest buyer's acceptance test.

use crate::attestation::{self, VerifyAt, VerifyOptions};
use crate::auction::Reason;
use crate::config::{AuctionConfig, Mode, ResultCommitment, sha256};
use crate::manifest::Manifest;
use crate::names::{BuyerName, KeyArn};
use crate::output::{OutputHeader, SetAside};
use crate::seal_record::SealRecord;

/// What the result is checked against: the manifest every buyer sealed, or the configuration
/// of an unsealed auction.
pub enum Expected<'a> {
    Sealed {
        manifest: &'a Manifest,
        bytes: &'a [u8],
    },
    Unsealed {
        config: &'a AuctionConfig,
    },
}

impl Expected<'_> {
    fn mode(&self) -> Mode {
        match self {
            Expected::Sealed { .. } => Mode::Sealed,
            Expected::Unsealed { .. } => Mode::Unsealed,
        }
    }
    pub fn config(&self) -> &AuctionConfig {
        match self {
            Expected::Sealed { manifest, .. } => manifest.terms(),
            Expected::Unsealed { config } => config,
        }
    }
    fn digest(&self) -> [u8; 32] {
        match self {
            Expected::Sealed { bytes, .. } => sha256(bytes),
            Expected::Unsealed { config } => config.digest(),
        }
    }
}

/// What a verified result proves.
#[derive(Debug)]
pub struct Checked {
    pub module_id: String,
    pub pcr0: Vec<u8>,
    pub timestamp_ms: u64,
    /// Its tag is the rule set of the image that made the result (one image, one rule set).
    pub commitment: ResultCommitment,
    pub header: OutputHeader,
}

/// Why a result does not verify. Each says what was found and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("attestation does not verify: {0}")]
    Attestation(String),
    #[error(
        "attestation comes from a debug-mode enclave (PCR0 is all zero): anyone could have produced its result"
    )]
    DebugMode,
    #[error("enclave PCR0 is {found}, expected {expected}")]
    Pcr0 { expected: String, found: String },
    #[error(
        "attestation is not a result attestation (its user_data is not an SBRS or SBRU commitment)"
    )]
    NotAResult,
    #[error(
        "the result is from an UNSEALED run, but a manifest was given: the buyers' seals were not checked for it"
    )]
    UnsealedResult,
    #[error("the result is from a sealed run; verify it with --manifest")]
    SealedResult,
    #[error(
        "the result is for other terms: the attestation commits to {what} SHA-256 {committed}, the one given has {given}"
    )]
    OtherTerms {
        what: &'static str,
        committed: String,
        given: String,
    },
    #[error(
        "{file} does not match the attestation: its SHA-256 is {actual}, the attestation commits to {committed}"
    )]
    Output {
        file: &'static str,
        actual: String,
        committed: String,
    },
    #[error("{0}")]
    Header(String),
    #[error("output.json is for auction {found}, not {expected}")]
    OtherAuction { expected: String, found: String },
    #[error("output.json does not count buyer `{0}`'s file as the manifest names it")]
    FileNotCounted(BuyerName),
}

/// Verifies that `attestation_doc` is a genuine result attestation of an enclave with
/// `expected_pcr0` that commits to exactly these terms, this `output.csv` and this
/// `output.json`.
pub fn verify_result(
    output_csv: &[u8],
    output_json: &[u8],
    attestation_doc: &[u8],
    root_der: &[u8],
    expected_pcr0: &[u8],
    at: VerifyAt,
    expected: &Expected<'_>,
) -> Result<Checked, VerifyError> {
    let doc = attestation::verify(attestation_doc, &VerifyOptions { root_der, at })
        .map_err(|e| VerifyError::Attestation(e.to_string()))?;
    let pcr0 = doc.pcr(0).unwrap_or_default().to_vec();
    if doc.debug_mode() {
        return Err(VerifyError::DebugMode);
    }
    if pcr0 != expected_pcr0 {
        return Err(VerifyError::Pcr0 {
            expected: hex::encode(expected_pcr0),
            found: hex::encode(&pcr0),
        });
    }
    let c = doc
        .user_data()
        .and_then(ResultCommitment::parse)
        .ok_or(VerifyError::NotAResult)?;
    if c.mode != expected.mode() {
        return Err(match c.mode {
            Mode::Unsealed => VerifyError::UnsealedResult,
            Mode::Sealed => VerifyError::SealedResult,
        });
    }
    let terms = expected.digest();
    if c.terms_sha256 != terms {
        return Err(VerifyError::OtherTerms {
            what: if c.mode == Mode::Sealed {
                "a manifest with"
            } else {
                "a configuration with"
            },
            committed: hex::encode(c.terms_sha256),
            given: hex::encode(terms),
        });
    }
    for (file, bytes, committed) in [
        ("output.csv", output_csv, c.csv_sha256),
        ("output.json", output_json, c.json_sha256),
    ] {
        let actual = sha256(bytes);
        if actual != committed {
            return Err(VerifyError::Output {
                file,
                actual: hex::encode(actual),
                committed: hex::encode(committed),
            });
        }
    }
    let header = OutputHeader::parse(output_json).map_err(VerifyError::Header)?;
    if &header.auction_id != expected.config().auction_id() {
        return Err(VerifyError::OtherAuction {
            expected: expected.config().auction_id().to_string(),
            found: header.auction_id.to_string(),
        });
    }
    if let Expected::Sealed { manifest, .. } = expected {
        for f in manifest.files() {
            let counted = header.files.iter().find(|h| h.buyer == f.buyer);
            if counted.is_none_or(|h| h.sha256 != f.sha256 || h.size != f.size) {
                return Err(VerifyError::FileNotCounted(f.buyer.clone()));
            }
        }
    }
    Ok(Checked {
        module_id: doc.module_id().to_owned(),
        pcr0,
        timestamp_ms: doc.timestamp(),
        commitment: c,
        header,
    })
}

/// Reasons for which a buyer's own check fails: each can be caused by an operator who writes
/// terms that do not fit the buyer's file (another auction id or buyer name, another key), so
/// a result that sets a buyer's bids aside for one of them is not a result the buyer can
/// accept as "my bids counted as I wrote them".
pub const OPERATOR_CAUSABLE: [Reason; 3] = [
    Reason::Undecryptable,
    Reason::WrongKey,
    Reason::MalformedFile,
];

/// A buyer's own file, key and record, for [`check_buyer`].
pub struct BuyerView<'a> {
    pub buyer: &'a BuyerName,
    /// The buyer's own key, as they made it (not as the manifest says).
    pub key: &'a KeyArn,
    /// The buyer's own bid file, exactly as uploaded.
    pub file: &'a [u8],
    /// What the buyer's `bidctl seal` remembers, if the buyer has its record at hand.
    pub record: Option<&'a SealRecord>,
}

/// What a buyer's own check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuyerReport {
    /// The buyer's set-aside records, by reason (reasons the buyer alone causes: an invalid
    /// amount, a malformed row, a lot named twice).
    pub set_aside: Vec<SetAside>,
    /// Whether the buyer's seal record was at hand, and it names this manifest.
    pub record: RecordCheck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordCheck {
    /// The record names this manifest as sealed by this buyer for this auction.
    Matches,
    /// No record was given, or it has no seal of this auction (sealed on another machine).
    NoRecord,
}

/// Why a buyer must not accept a verified result as their auction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuyerCheckError {
    #[error(
        "the result is from an unsealed run: nothing binds it to terms `{0}` consented to; only a sealed result can be checked for a buyer"
    )]
    Unsealed(BuyerName),
    #[error("`{0}` is not a buyer in this manifest")]
    NotABuyer(BuyerName),
    #[error(
        "the manifest registers key {registered} for `{buyer}`, not your key {yours}: your bids were run under someone else's key"
    )]
    OtherKey {
        buyer: BuyerName,
        registered: KeyArn,
        yours: KeyArn,
    },
    #[error(
        "the manifest names another file for `{buyer}` ({size} bytes, SHA-256 {sha256}) than yours ({your_size} bytes, SHA-256 {your_sha256})"
    )]
    OtherFile {
        buyer: BuyerName,
        size: u64,
        sha256: String,
        your_size: u64,
        your_sha256: String,
    },
    #[error(
        "`{buyer}`: {} set aside as {reason}: terms that do not fit your file can cause that, so this result does not count your bids as you wrote them",
        reason.counted(*count)
    )]
    SetAside {
        buyer: BuyerName,
        reason: Reason,
        count: u64,
    },
    #[error(
        "your seal record does not name this manifest (SHA-256 {manifest}) for auction {auction}: you did not seal it{}",
        match sealed { Some(h) => format!(" (you sealed {h})"), None => String::new() }
    )]
    NotSealed {
        auction: String,
        manifest: String,
        sealed: Option<String>,
    },
}

/// A buyer's own check of a verified sealed result (`bidctl verify --buyer NAME --key-id ARN
/// --bids FILE`): the manifest registers the buyer's own key for their name and names their
/// own file; the result counted that file; none of their bids was set aside for a reason an
/// operator could cause ([`OPERATOR_CAUSABLE`]); and, with the buyer's seal record, the buyer
/// sealed this very manifest.
pub fn check_buyer(
    checked: &Checked,
    manifest: &Manifest,
    me: &BuyerView<'_>,
) -> Result<BuyerReport, BuyerCheckError> {
    if checked.commitment.mode != Mode::Sealed {
        return Err(BuyerCheckError::Unsealed(me.buyer.clone()));
    }
    let spec = manifest
        .terms()
        .buyer(me.buyer)
        .ok_or_else(|| BuyerCheckError::NotABuyer(me.buyer.clone()))?;
    if &spec.key_arn != me.key {
        return Err(BuyerCheckError::OtherKey {
            buyer: me.buyer.clone(),
            registered: spec.key_arn.clone(),
            yours: me.key.clone(),
        });
    }
    let file = manifest.file(me.buyer).expect("every buyer has a file");
    let mine = sha256(me.file);
    if file.sha256 != mine || file.size != me.file.len() as u64 {
        return Err(BuyerCheckError::OtherFile {
            buyer: me.buyer.clone(),
            size: file.size,
            sha256: hex::encode(file.sha256),
            your_size: me.file.len() as u64,
            your_sha256: hex::encode(mine),
        });
    }
    let set_aside: Vec<SetAside> = checked
        .header
        .set_aside
        .iter()
        .filter(|s| &s.buyer == me.buyer)
        .cloned()
        .collect();
    if let Some(s) = set_aside
        .iter()
        .find(|s| OPERATOR_CAUSABLE.contains(&s.reason))
    {
        return Err(BuyerCheckError::SetAside {
            buyer: me.buyer.clone(),
            reason: s.reason,
            count: s.count,
        });
    }
    // A record that has this auction must name this manifest; one without it (a buyer who
    // sealed on another machine) says nothing either way.
    let h = sha256(&manifest.canonical_bytes());
    let auction = manifest.terms().auction_id();
    let record = match me.record.map(|r| (r, r.manifest_for(auction, me.buyer))) {
        None | Some((_, None)) => RecordCheck::NoRecord,
        Some((r, Some(_))) if r.sealed(auction, me.buyer, &h) => RecordCheck::Matches,
        Some((_, Some(sealed))) => {
            return Err(BuyerCheckError::NotSealed {
                auction: auction.to_string(),
                manifest: hex::encode(h),
                sealed: Some(hex::encode(sealed)),
            });
        }
    };
    Ok(BuyerReport { set_aside, record })
}
