//! `bidctl cms open --key KEY FILE`: opens a KMS CiphertextForRecipient the way the enclave
//! does, for debugging a deployment with a key of one's own.

use anyhow::{Context, Result, anyhow};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::PrivateDecryptingKey;
use clap::Subcommand;
use rustls_pki_types::pem::PemObject;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum Command {
    /// Decrypt an envelope and write the plaintext to stdout.
    Open {
        /// PKCS#8 RSA private key, PEM or DER.
        #[arg(long)]
        key: PathBuf,
        /// Expected recipient identifier (hex) [default: SHA-256 of the key's DER
        /// SubjectPublicKeyInfo, as KMS makes it].
        #[arg(long)]
        expect_rid: Option<String>,
        /// The envelope, BER or DER.
        file: PathBuf,
    },
}

pub fn run(cmd: Command) -> Result<ExitCode> {
    let Command::Open {
        key,
        expect_rid,
        file,
    } = cmd;
    let key_bytes = std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?;
    let pkcs8 = if key_bytes.starts_with(b"-----BEGIN") {
        rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(&key_bytes)
            .map_err(|e| anyhow!("{}: not a PEM PKCS#8 private key: {e}", key.display()))?
            .secret_pkcs8_der()
            .to_vec()
    } else {
        key_bytes
    };
    let private = PrivateDecryptingKey::from_pkcs8(&pkcs8)
        .map_err(|_| anyhow!("{}: not a PKCS#8 RSA private key", key.display()))?;
    let rid = match expect_rid {
        Some(h) => hex::decode(h.trim()).map_err(|_| anyhow!("--expect-rid: not hex"))?,
        None => {
            let spki = private
                .public_key()
                .as_der()
                .map_err(|_| anyhow!("cannot encode the public key"))?;
            bidding_core::cms::recipient_key_id(spki.as_ref()).to_vec()
        }
    };
    let envelope = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let plaintext = bidding_core::cms::open(&envelope, &private, &rid)
        .with_context(|| file.display().to_string())?;
    std::io::stdout().write_all(&plaintext)?;
    Ok(ExitCode::SUCCESS)
}
