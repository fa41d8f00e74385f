//! One module per `bidctl` subcommand.

pub mod attestation;
pub mod cms;
pub mod initramfs;
pub mod pcr;

use anyhow::{Context, Result};
use rustls_pki_types::pem::PemObject;
use std::path::Path;

/// Reads a file that holds one certificate, PEM or DER, and returns the DER.
pub fn read_certificate(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.starts_with(b"-----BEGIN") {
        let cert = rustls_pki_types::CertificateDer::from_pem_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", path.display()))?;
        Ok(cert.as_ref().to_vec())
    } else {
        Ok(bytes)
    }
}
