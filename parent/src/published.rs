//! What a run finds already published at its output keys. A verified result of exactly these
//! terms (a sealed auction's manifest, or an unsealed auction's configuration) means the
//! auction is decided: the run says so and decrypts nothing, so the timer can stay on (DESIGN
//! §2: a rerun of the same manifest gives the same bytes, and is only a cost; an unsealed
//! auction's rerun would even fail, its ciphertexts being refused as replayed until the enclave
//! restarts). A result that does not verify against the terms is not taken for one.

use crate::aws::s3::{S3Client, S3Error};
use crate::config::OutputLocation;
use bidding_core::attestation::{self, VerifyAt, VerifyOptions};
use bidding_core::config::{ResultCommitment, sha256};
use bidding_core::output::OutputHeader;
use bidding_core::session::parent::Terms;

/// Largest output object read back for the check.
const MAX_OUTPUT_BYTES: u64 = 1 << 30;

/// What is at the output keys.
#[derive(Debug, PartialEq, Eq)]
pub enum Published {
    /// No `output.csv`: the auction has not been decided (or its run did not finish).
    Nothing,
    /// The result of exactly these terms, attested by an enclave with the expected PCR0.
    Verified { lots: u64 },
    /// Something is there, but it is not that: why, in one sentence.
    NotVerified(String),
}

/// How a published result is checked: the parent's own trust settings.
pub struct Trust<'a> {
    pub root_der: &'a [u8],
    /// `None` only for dev runs (`--allow-dev-enclave` without `expected_pcr0`).
    pub expected_pcr0: Option<&'a [u8]>,
    /// Also QEMU's unsigned documents (tests of an image under QEMU only).
    pub accept_qemu_unsigned: bool,
}

/// Reads `output.csv`, `output.json` and the attestation at `out` and checks them against the
/// terms. An S3 error other than "not found" on `output.csv` is returned as it is.
pub fn check(
    s3: &S3Client,
    out: &OutputLocation,
    terms: &Terms,
    trust: &Trust,
) -> Result<Published, S3Error> {
    let csv = match s3.get_object(&out.bucket, &out.key, MAX_OUTPUT_BYTES) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(Published::Nothing),
        Err(e) => return Err(e),
    };
    let read = |key: &str| {
        s3.get_object(&out.bucket, key, MAX_OUTPUT_BYTES)
            .map_err(|e| format!("s3://{}/{key} cannot be read: {e}", out.bucket))
    };
    let verdict = read(&out.json_key).and_then(|json| {
        let doc = read(&out.attestation_key)?;
        verify(&csv, &json, &doc, terms, trust)
    });
    Ok(match verdict {
        Ok(lots) => Published::Verified { lots },
        Err(why) => Published::NotVerified(why),
    })
}

fn verify(
    csv: &[u8],
    json: &[u8],
    doc: &[u8],
    terms: &Terms,
    trust: &Trust,
) -> Result<u64, String> {
    let fields = match attestation::verify(
        doc,
        &VerifyOptions {
            root_der: trust.root_der,
            at: VerifyAt::Document,
        },
    ) {
        Ok(v) => v.into_fields(),
        Err(e) if trust.accept_qemu_unsigned => attestation::parse_qemu_unsigned(doc)
            .map_err(|_| format!("the attestation does not verify: {e}"))?,
        Err(e) => return Err(format!("the attestation does not verify: {e}")),
    };
    if fields.debug_mode() {
        return Err("the attestation is a debug-mode enclave's".into());
    }
    if let Some(expected) = trust.expected_pcr0
        && !fields.pcr0_matches(expected)
    {
        return Err("the attestation is from an enclave with another PCR0".into());
    }
    let c = fields
        .user_data()
        .and_then(ResultCommitment::parse)
        .ok_or("the attestation is not a result attestation")?;
    if c.mode != terms.mode() || c.terms_sha256 != terms.digest() {
        return Err(format!(
            "the attestation commits to other terms than {}",
            match terms {
                Terms::Sealed { .. } => "this manifest",
                Terms::Unsealed(_) => "this configuration",
            }
        ));
    }
    if c.csv_sha256 != sha256(csv) || c.json_sha256 != sha256(json) {
        return Err(
            "output.csv or output.json differs from what the attestation commits to".into(),
        );
    }
    let header = OutputHeader::parse(json)?;
    if &header.auction_id != terms.config().auction_id() {
        return Err(format!("output.json is for auction {}", header.auction_id));
    }
    Ok(header.lot_count)
}
