//! Checking a published result: both output files, the attestation that commits to them and
//! to the terms, and the enclave measurement the buyers trusted.

use bidding_core::attestation::{self, VerifyAt, VerifyOptions};
use bidding_core::config::{AuctionConfig, Mode, ResultCommitment, sha256};
use bidding_core::manifest::Manifest;
use bidding_core::output::OutputHeader;

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
    fn config(&self) -> &AuctionConfig {
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
    pub commitment: ResultCommitment,
    pub header: OutputHeader,
}

/// Verifies that `attestation_doc` is a genuine result attestation of an enclave with
/// `expected_pcr0` that commits to exactly these terms, this `output.csv` and this
/// `output.json`. Each failed check has its own message.
pub fn verify_result(
    output_csv: &[u8],
    output_json: &[u8],
    attestation_doc: &[u8],
    root_der: &[u8],
    expected_pcr0: &[u8],
    at: VerifyAt,
    expected: &Expected<'_>,
) -> Result<Checked, String> {
    let doc = attestation::verify(attestation_doc, &VerifyOptions { root_der, at })
        .map_err(|e| format!("attestation does not verify: {e}"))?;
    let pcr0 = doc.pcr(0).unwrap_or_default().to_vec();
    if doc.debug_mode() {
        return Err("attestation comes from a debug-mode enclave (PCR0 is all zero): anyone could have produced its result".into());
    }
    if pcr0 != expected_pcr0 {
        return Err(format!(
            "enclave PCR0 is {}, expected {}",
            hex::encode(&pcr0),
            hex::encode(expected_pcr0)
        ));
    }
    let c = doc.user_data().and_then(ResultCommitment::parse).ok_or(
        "attestation is not a result attestation (its user_data is not an SBRS or SBRU commitment)",
    )?;
    if c.mode != expected.mode() {
        return Err(match c.mode {
            Mode::Unsealed => "the result is from an UNSEALED run, but a manifest was given: the buyers' seals were not checked for it".into(),
            Mode::Sealed => "the result is from a sealed run; verify it with --manifest".into(),
        });
    }
    let terms = expected.digest();
    if c.terms_sha256 != terms {
        return Err(format!(
            "the result is for other terms: the attestation commits to {} SHA-256 {}, the one given has {}",
            if c.mode == Mode::Sealed {
                "a manifest with"
            } else {
                "a configuration with"
            },
            hex::encode(c.terms_sha256),
            hex::encode(terms)
        ));
    }
    for (name, bytes, committed) in [
        ("output.csv", output_csv, c.csv_sha256),
        ("output.json", output_json, c.json_sha256),
    ] {
        let actual = sha256(bytes);
        if actual != committed {
            return Err(format!(
                "{name} does not match the attestation: its SHA-256 is {}, the attestation commits to {}",
                hex::encode(actual),
                hex::encode(committed)
            ));
        }
    }
    let header = OutputHeader::parse(output_json)?;
    if &header.auction_id != expected.config().auction_id() {
        return Err(format!(
            "output.json is for auction {}, not {}",
            header.auction_id,
            expected.config().auction_id()
        ));
    }
    if let Expected::Sealed { manifest, .. } = expected {
        for f in manifest.files() {
            let counted = header.files.iter().find(|h| h.buyer == f.buyer);
            if counted.is_none_or(|h| h.sha256 != f.sha256 || h.size != f.size) {
                return Err(format!(
                    "output.json does not count buyer `{}`'s file as the manifest names it",
                    f.buyer
                ));
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
