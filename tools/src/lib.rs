//! The library behind `bidctl`: local stand-ins for AWS and the tools buyers and operators run.

pub mod bench;
pub mod cleanup;
pub mod demo;
pub mod dev_stack;
pub mod encrypt;
pub mod iam;
pub mod key_policy;
pub mod kms_client;
pub mod kms_emulator;
pub mod memory;
pub mod s3_server;
pub mod seal;
pub mod stack;

/// The DER of a certificate given as PEM (or already DER).
pub fn pem_certificate(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(bytes.to_vec());
    }
    let cert = rustls_pki_types::CertificateDer::from_pem_slice(bytes)
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    Ok(cert.as_ref().to_vec())
}
pub mod initramfs;
pub mod pcr;
