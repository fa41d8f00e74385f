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
    /// Print the document as JSON without verifying anything.
    Inspect { file: PathBuf },
}

pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Inspect { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let doc = attestation::parse(&bytes).with_context(|| file.display().to_string())?;
            println!("{}", doc.fields().summary_json());
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
                    return Ok(ExitCode::FAILURE);
                }
            };
            println!("{}", doc.summary_json());
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
