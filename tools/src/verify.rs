//! Checking a published result: the output bytes, the attestation that commits to them, and
//! the enclave measurement the buyers trusted.

use bidding_core::attestation::{self, VerifyAt, VerifyOptions};
use bidding_core::config::{parse_result_commitment, sha256};

/// What a verified result proves.
#[derive(Debug)]
pub struct Checked {
    pub module_id: String,
    pub pcr0: Vec<u8>,
    pub timestamp_ms: u64,
    pub config_sha256: [u8; 32],
    pub output_sha256: [u8; 32],
}

/// Verifies that `attestation` is a genuine result attestation of an enclave with
/// `expected_pcr0` and commits to exactly `output` (and to `config`, the canonical
/// configuration bytes, when given). Each failed check has its own message.
pub fn verify_result(
    output: &[u8],
    attestation_doc: &[u8],
    root_der: &[u8],
    expected_pcr0: &[u8],
    at: VerifyAt,
    config: Option<&[u8]>,
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
    let (config_sha256, output_sha256) = doc.user_data().and_then(parse_result_commitment).ok_or(
        "attestation is not a result attestation (its user_data is not an SBR1 commitment)",
    )?;
    let actual = sha256(output);
    if actual != output_sha256 {
        return Err(format!(
            "output does not match the attestation: its SHA-256 is {}, the attestation commits to {}",
            hex::encode(actual),
            hex::encode(output_sha256)
        ));
    }
    if let Some(config) = config {
        let actual = sha256(config);
        if actual != config_sha256 {
            return Err(format!(
                "configuration does not match the attestation: its SHA-256 is {}, the attestation commits to {}",
                hex::encode(actual),
                hex::encode(config_sha256)
            ));
        }
    }
    Ok(Checked {
        module_id: doc.module_id().to_owned(),
        pcr0,
        timestamp_ms: doc.timestamp(),
        config_sha256,
        output_sha256,
    })
}
