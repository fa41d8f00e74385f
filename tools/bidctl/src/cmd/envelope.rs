//! `bidctl envelope open|inspect|pad`: AWS Encryption SDK messages (envelope bid files) as the
//! enclave reads them, for debugging and test vectors, and the plaintext a buyer gives
//! `aws-encryption-cli`.
//!
//! `open` needs the plaintext data key, which only KMS gives out (GenerateDataKey, or Decrypt
//! of the header's encrypted data key with the header's encryption context); `inspect` needs
//! nothing and checks everything the enclave checks before its KMS call. `pad` writes a
//! buyer's `contract,bid` file as `bidctl encrypt --format envelope` encrypts it: every amount
//! at one width, then the padding the enclave skips (DESIGN §2, "Sizes").

use anyhow::{Context, Result, bail};
use base64::Engine;
use bidding_core::esdk::{self, ContentType, Limits, Message};
use clap::Subcommand;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum Command {
    /// Decrypt a message with its plaintext data key and write the plaintext to stdout.
    Open {
        /// The 32-byte plaintext data key: a file of exactly 32 raw bytes, or the key in
        /// base64 (as in KMS's `Plaintext` field; surrounding whitespace ignored).
        #[arg(long)]
        data_key: PathBuf,
        /// The message (format version 2, suite 0x0578 or 0x0478).
        message: PathBuf,
    },
    /// Check a message without its key and print its header, frames and signature as JSON.
    Inspect {
        /// The message (format version 2, suite 0x0578 or 0x0478).
        message: PathBuf,
    },
    /// Write a plaintext `contract,bid` file padded for `aws-encryption-cli --encrypt`: every
    /// amount at one width (000000000000100000.00) and NUL bytes to a padded length, so the
    /// encrypted file's size tells neither an amount's digits nor the exact number of rows.
    Pad {
        /// The auction's public number of lots: pad to at least one row per lot, so every
        /// buyer's file of the auction has the same size.
        #[arg(long, value_name = "N")]
        lots: Option<u64>,
        /// Your plaintext bid file (header `contract,bid`), checked with the enclave's rules.
        input: PathBuf,
        /// Where to write the padded plaintext (encrypt this file, then delete it).
        output: PathBuf,
    },
}

pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Open { data_key, message } => {
            let key = read_data_key(&data_key)?;
            let bytes = read(&message)?;
            let m = parse(&bytes, &message)?;
            let plaintext = m
                .decrypt(&key)
                .with_context(|| message.display().to_string())?;
            std::io::stdout().write_all(&plaintext)?;
        }
        Command::Inspect { message } => {
            let bytes = read(&message)?;
            let m = parse(&bytes, &message)?;
            println!("{}", serde_json::to_string_pretty(&describe(&m))?);
        }
        Command::Pad {
            lots,
            input,
            output,
        } => {
            let Some(rows) = super::read_plaintext_bids(&input, "nothing was written")? else {
                return Ok(ExitCode::FAILURE);
            };
            let padded = bidding_client::encrypt::envelope_plaintext(&rows, lots);
            std::fs::write(&output, &*padded)
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!(
                "bidctl: {}: {} rows, padded to {} bytes",
                output.display(),
                rows.len(),
                padded.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<Message<'a>> {
    if !esdk::is_message(bytes) {
        bail!(
            "{}: not an AWS Encryption SDK message of format version 2 (it must start with \
             02 05 78 or 02 04 78)",
            path.display()
        );
    }
    Message::parse(bytes, &Limits::default()).with_context(|| path.display().to_string())
}

/// 32 raw bytes, or base64 of 32 bytes.
fn read_data_key(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let raw = Zeroizing::new(read(path)?);
    if raw.len() == esdk::KEY_LEN {
        return Ok(raw);
    }
    let text = std::str::from_utf8(&raw)
        .ok()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let decoded = text
        .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
        .map(Zeroizing::new);
    match decoded {
        Some(key) if key.len() == esdk::KEY_LEN => Ok(key),
        _ => bail!(
            "{}: a data key file holds exactly 32 raw bytes or their base64 ({} bytes here)",
            path.display(),
            raw.len()
        ),
    }
}

fn describe(m: &Message<'_>) -> serde_json::Value {
    let (header, body, footer) = m.section_lengths();
    let data_keys: Vec<_> = m
        .data_keys()
        .iter()
        .map(|k| {
            let mut v = json!({
                "provider_id": k.provider_id,
                "encrypted_key_bytes": k.encrypted_key.len(),
            });
            match k.provider_info_str() {
                Some(s) => v["provider_info"] = s.into(),
                None => v["provider_info_hex"] = hex::encode(&k.provider_info).into(),
            }
            v
        })
        .collect();
    json!({
        "format_version": esdk::VERSION,
        "suite": format!("{:#06x}", m.suite().id()),
        "suite_name": m.suite().name(),
        "message_id": hex::encode(m.message_id()),
        "encryption_context": m.context(),
        "data_keys": data_keys,
        "content_type": match m.content_type() {
            ContentType::Framed => "framed",
            ContentType::SingleBlock => "single-block",
        },
        "frame_length": m.frame_length(),
        "frames": m.frame_count(),
        "plaintext_bytes": m.plaintext_len(),
        "signature": if m.signature_verified() { "verified" } else { "none (unsigned suite)" },
        "bytes": { "header": header, "body": body, "footer": footer },
    })
}
