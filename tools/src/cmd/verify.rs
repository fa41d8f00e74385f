//! `bidctl verify`: does this attestation prove this output.csv (and this configuration)?

use crate::verify::verify_result;
use anyhow::{Context, Result, anyhow};
use bidding_core::attestation::{AWS_NITRO_ROOT_G1_DER, VerifyAt};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct VerifyArgs {
    /// The output.csv as published.
    #[arg(long)]
    pub output: PathBuf,
    /// Its attestation document (output.csv.attestation).
    #[arg(long)]
    pub attestation: PathBuf,
    /// The enclave measurement the buyers trusted (96 hex digits).
    #[arg(long)]
    pub expect_pcr0: String,
    /// Trust anchor, PEM or DER [default: the AWS Nitro Enclaves root G1, built in].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// The auction's configuration: the parent's TOML file, or the canonical
    /// output.csv.config.json written beside the output.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Check certificate validity `now` instead of at the document's own time. Enclave
    /// certificates live about three hours, so results are normally checked as of then.
    #[arg(long)]
    pub now: bool,
}

pub fn run(a: VerifyArgs) -> Result<ExitCode> {
    let output =
        std::fs::read(&a.output).with_context(|| format!("reading {}", a.output.display()))?;
    let doc = std::fs::read(&a.attestation)
        .with_context(|| format!("reading {}", a.attestation.display()))?;
    let root = match &a.root {
        Some(p) => super::read_certificate(p)?,
        None => AWS_NITRO_ROOT_G1_DER.to_vec(),
    };
    let expected = match hex::decode(a.expect_pcr0.trim()) {
        Ok(v) if v.len() == 48 => v,
        _ => return Err(anyhow!("--expect-pcr0 must be 96 hex digits")),
    };
    let config = match &a.config {
        None => None,
        Some(p) if p.extension().is_some_and(|e| e == "json") => {
            Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
        }
        Some(p) => Some(
            bidding_parent::config::auction_from_file(p)
                .map_err(|e| anyhow!("{}: {}", p.display(), e.join("; ")))?
                .canonical_bytes(),
        ),
    };
    let at = if a.now {
        VerifyAt::UnixMillis(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as u64,
        )
    } else {
        VerifyAt::Document
    };
    match verify_result(&output, &doc, &root, &expected, at, config.as_deref()) {
        Ok(c) => {
            println!(
                "verified: {} ({} bytes, sha256 {}) is the result attested by enclave {} with PCR0 {} at {} ms{}",
                a.output.display(),
                output.len(),
                hex::encode(c.output_sha256),
                c.module_id,
                hex::encode(&c.pcr0),
                c.timestamp_ms,
                if config.is_some() {
                    ", for this configuration"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("bidctl: verification failed: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
