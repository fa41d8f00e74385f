//! `bidctl encrypt`: a buyer's plaintext `contract,bid` file in, `encrypted.csv` (per-bid) or
//! one AWS Encryption SDK message (`--format envelope`) out.

use crate::encrypt::{Sealing, envelope_file, seal_rows};
use anyhow::{Context, Result, anyhow, bail};
use bidding_core::bidfile::{Limits, parse_plaintext};
use bidding_core::names::{AuctionId, BuyerName, KeyArn};
use bidding_parent::aws::Env;
use bidding_parent::config::parse_s3_url;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct EncryptArgs {
    /// Your KMS key's full ARN (the one registered for you in the auction).
    #[arg(long)]
    pub key_id: String,
    /// The auction id, as the operator announced it.
    #[arg(long)]
    pub auction: String,
    /// Your buyer name, as registered in the auction.
    #[arg(long)]
    pub buyer: String,
    /// Encrypt without an encryption context, like `aws kms encrypt` (only for auctions that
    /// accept such bids; a context binds each bid to its auction, lot and buyer).
    #[arg(long)]
    pub no_context: bool,
    /// per-bid: one KMS Encrypt per bid (`encrypted.csv`). envelope: the whole file as one
    /// AWS Encryption SDK message under one data key from GenerateDataKey with the context
    /// {auction, buyer}, as `aws-encryption-cli --encrypt` makes it (the operator does not
    /// see which lots you bid on, and the enclave makes one KMS call for your file).
    #[arg(long, value_enum, default_value_t = super::FormatArg::PerBid)]
    pub format: super::FormatArg,
    /// Upload the result to s3://BUCKET/KEY instead of writing it to stdout.
    #[arg(long)]
    pub upload: Option<String>,
    #[command(flatten)]
    pub aws: super::AwsArgs,
    /// KMS calls in parallel.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// The plaintext bid file: header `contract,bid`, one row per lot.
    pub file: PathBuf,
}

pub fn run(a: EncryptArgs) -> Result<ExitCode> {
    let env = Env::process();
    let key = KeyArn::new(&a.key_id).map_err(|e| anyhow!("--key-id: {e}"))?;
    let auction = AuctionId::new(&a.auction).map_err(|e| anyhow!("--auction: {e}"))?;
    let buyer = BuyerName::new(&a.buyer).map_err(|e| anyhow!("--buyer: {e}"))?;
    if a.no_context && a.format == super::FormatArg::Envelope {
        bail!(
            "--no-context is for per-bid files; an envelope file's context is always {{auction, buyer}}"
        );
    }
    let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let rows = match parse_plaintext(&a.file.display().to_string(), &bytes, Limits::default()) {
        Ok(rows) => rows,
        Err(errors) => {
            // Every bad line, so the buyer can fix them all at once; nothing is encrypted.
            eprintln!(
                "bidctl: {} has {} problem(s); nothing was encrypted:",
                a.file.display(),
                errors.0.len()
            );
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    if rows.is_empty() {
        bail!("{}: no bids", a.file.display());
    }
    let aws = super::Aws::connect(&env, &key, &a.aws)?;
    let client = &aws.kms;
    let sealing = Sealing {
        key: &key,
        auction: &auction,
        buyer: &buyer,
        context: !a.no_context,
    };
    let (csv, content_type) = match a.format {
        super::FormatArg::PerBid => (seal_rows(client, &sealing, &rows, a.parallel)?, "text/csv"),
        // The file as the buyer wrote it (checked above): the same bytes come out of
        // `aws-encryption-cli --decrypt`.
        super::FormatArg::Envelope => (
            envelope_file(client, &key, &auction, &buyer, &bytes)?,
            "application/octet-stream",
        ),
    };
    match a.upload {
        None => std::io::stdout().write_all(&csv)?,
        Some(url) => {
            let (bucket, object) = parse_s3_url(&url).map_err(|e| anyhow!("--upload: {e}"))?;
            aws.s3(&env)
                .put_object(&bucket, &object, &csv, content_type)?;
            eprintln!(
                "bidctl: {} encrypted bids uploaded to s3://{bucket}/{object}",
                rows.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
