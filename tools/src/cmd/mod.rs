//! One module per `bidctl` subcommand.

pub mod attestation;
pub mod bench;
pub mod cms;
pub mod demo;
pub mod encrypt;
pub mod envelope;
pub mod initramfs;
pub mod key_policy;
pub mod kms_emulator;
pub mod pcr;
pub mod verify;

use anyhow::{Context, Result};
use std::path::Path;

/// Reads a file that holds one certificate, PEM or DER, and returns the DER.
pub fn read_certificate(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    bidding_tools::pem_certificate(&bytes).with_context(|| path.display().to_string())
}
