//! `bidctl attestation verify|inspect FILE`: what a Nitro attestation document says, and
//! whether it is genuine.

use anyhow::{Context, Result, bail};
use bidding_core::attestation::{self, AWS_NITRO_ROOT_G1_DER, VerifyAt, VerifyOptions};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Subcommand)]
pub enum Command {
    /// Verify signature, certificate chain, validity and root; print the document as JSON.
    /// Exits 0 only when the document verifies.
    Verify {
        /// The attestation document (CBOR COSE_Sign1).
        file: PathBuf,
        /// Trust anchor, PEM or DER [default: the AWS Nitro Enclaves root G1, built in].
        #[arg(long)]
        root: Option<PathBuf>,
        /// Instant to check certificate validity at: `now`, `document` (its own timestamp)
        /// or an RFC 3339 time such as 2022-10-13T09:00:00Z.
        #[arg(long, default_value = "now")]
        at: String,
        /// Also require this PCR0 (96 hex digits).
        #[arg(long)]
        expect_pcr0: Option<String>,
    },
    /// Print what the document says, one labelled field a line, without verifying anything.
    Inspect {
        file: PathBuf,
        /// Print one JSON object instead (what `verify` prints).
        #[arg(long)]
        json: bool,
    },
}

/// The document for people: labelled fields, one a line, bytes as hex, the time in RFC 3339.
pub fn pretty(f: &attestation::DocumentFields) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(f.timestamp);
    let opt = |b: Option<&[u8]>| match b {
        Some(b) if !b.is_empty() => printable_or_hex(b),
        Some(_) => "(empty)".to_owned(),
        None => "(none)".to_owned(),
    };
    let mut out = String::new();
    let mut line = |label: &str, value: &str| {
        out.push_str(&format!("{label:<12} {value}\n"));
    };
    line("module id", &f.module_id);
    line(
        "timestamp",
        &format!(
            "{} ({} ms since the epoch)",
            humantime::format_rfc3339_millis(time),
            f.timestamp
        ),
    );
    line("digest", attestation::DIGEST);
    line(
        "debug mode",
        if f.debug_mode() {
            "YES: every PCR is zero; the enclave's memory and console are open to its host"
        } else {
            "no"
        },
    );
    for (i, value) in &f.pcrs {
        if attestation::SUMMARY_PCRS.contains(i) || value.iter().any(|&b| b != 0) {
            line(&format!("PCR{i}"), &hex::encode(value));
        }
    }
    line(
        "certificate",
        &format!(
            "{} bytes, with {} in the CA bundle",
            f.certificate.len(),
            f.cabundle.len()
        ),
    );
    line("public key", &opt(f.public_key.as_deref()));
    line("user data", &opt(f.user_data.as_deref()));
    line("nonce", &opt(f.nonce.as_deref()));
    out
}

/// Hex, with the text beside it when the bytes are printable ASCII.
fn printable_or_hex(b: &[u8]) -> String {
    let hex = hex::encode(b);
    if b.iter().all(|c| (0x20..0x7f).contains(c)) {
        format!("{hex} (text: {:?})", String::from_utf8_lossy(b))
    } else {
        hex
    }
}

/// `summary_json` with the time in RFC 3339 beside the epoch milliseconds.
fn summary(f: &attestation::DocumentFields) -> serde_json::Value {
    let mut v = f.summary_json();
    v["time"] = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(f.timestamp),
    )
    .to_string()
    .into();
    v
}

pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Inspect { file, json } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let doc = attestation::parse(&bytes).with_context(|| file.display().to_string())?;
            if json {
                println!("{}", summary(doc.fields()));
            } else {
                print!("{}", pretty(doc.fields()));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            file,
            root,
            at,
            expect_pcr0,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let root_der = match &root {
                Some(p) => super::read_certificate(p)?,
                None => AWS_NITRO_ROOT_G1_DER.to_vec(),
            };
            let at = parse_at(&at)?;
            let expected = expect_pcr0
                .map(|h| match hex::decode(h.trim()) {
                    Ok(v) if v.len() == 48 => Ok(v),
                    _ => Err(anyhow::anyhow!("--expect-pcr0 must be 96 hex digits")),
                })
                .transpose()?;
            let doc = match attestation::verify(
                &bytes,
                &VerifyOptions {
                    root_der: &root_der,
                    at,
                },
            ) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("bidctl: {}: verification failed: {e}", file.display());
                    if matches!(e, attestation::AttestationError::RootMismatch) && root.is_none() {
                        eprintln!(
                            "bidctl: (a local dev enclave's documents chain to its software NSM's root, not AWS's: pass --root with that root's PEM)"
                        );
                    }
                    return Ok(ExitCode::FAILURE);
                }
            };
            println!("{}", summary(doc.fields()));
            if let Some(expected) = expected
                && !doc.pcr0_matches(&expected)
            {
                eprintln!(
                    "bidctl: {}: verification failed: PCR0 is {}, expected {}",
                    file.display(),
                    hex::encode(doc.pcr(0).unwrap_or_default()),
                    hex::encode(&expected)
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn parse_at(at: &str) -> Result<VerifyAt> {
    Ok(match at {
        "now" => {
            VerifyAt::UnixMillis(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64)
        }
        "document" => VerifyAt::Document,
        other => {
            let t = humantime::parse_rfc3339_weak(other).map_err(|e| {
                anyhow::anyhow!("--at `{other}`: expected now, document or an RFC 3339 time ({e})")
            })?;
            let ms = t
                .duration_since(UNIX_EPOCH)
                .map_err(|_| anyhow::anyhow!("--at before 1970"))?;
            if ms.as_millis() == 0 {
                bail!("--at `{other}` is the epoch");
            }
            VerifyAt::UnixMillis(ms.as_millis() as u64)
        }
    })
}
