//! `bidctl encrypt`: a buyer's plaintext `contract,bid` file in, `encrypted.csv` (per-bid) or
//! one AWS Encryption SDK message (`--format envelope`) out.

use anyhow::{Result, anyhow, bail};
use bidding_client::encrypt::{Sealing, envelope_file, envelope_plaintext, seal_rows};
use bidding_core::config::Mode;
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
    /// Make the bids for the unsealed image (the proof of concept's flow, no seal round):
    /// their context leaves out `rules=sealed`, so the sealed image never opens them, and
    /// they open only in an image that trusts the operator with the terms.
    #[arg(long)]
    pub unsealed: bool,
    /// With --unsealed: encrypt without an encryption context, like `aws kms encrypt` (only
    /// for unsealed auctions that accept such bids; such a ciphertext opens under every image
    /// its key ever trusted).
    #[arg(long, requires = "unsealed")]
    pub no_context: bool,
    /// per-bid: one KMS Encrypt per bid (`encrypted.csv`). envelope: the whole file as one
    /// AWS Encryption SDK message under one data key from GenerateDataKey with the context
    /// {auction, buyer, rules=sealed}, as `aws-encryption-cli --encrypt` makes it (the
    /// operator does not see which lots you bid on, and the enclave makes one KMS call for
    /// your file). Every amount is written at one width and the plaintext is padded, so the
    /// file's size tells neither an amount's digits nor the exact number of rows.
    #[arg(long, value_enum, default_value_t = super::FormatArg::PerBid)]
    pub format: super::FormatArg,
    /// With --format envelope: the auction's public number of lots. The plaintext is then
    /// padded to at least the size of a file with one row per lot, so every buyer's file of
    /// the auction has the same size whatever lots it names.
    #[arg(long, value_name = "N")]
    pub lots: Option<u64>,
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
    if a.lots.is_some() && a.format != super::FormatArg::Envelope {
        bail!("--lots is for --format envelope; per-bid ciphertexts all have one length already");
    }
    let Some(rows) = super::read_plaintext_bids(&a.file, "nothing was encrypted")? else {
        return Ok(ExitCode::FAILURE);
    };
    let aws = super::Aws::connect(&env, &key, &a.aws)?;
    let client = &aws.kms;
    let rules = if a.unsealed {
        Mode::Unsealed
    } else {
        Mode::Sealed
    };
    let sealing = Sealing {
        key: &key,
        auction: &auction,
        buyer: &buyer,
        rules,
        context: !a.no_context,
    };
    let (csv, content_type) = match a.format {
        super::FormatArg::PerBid => (seal_rows(client, &sealing, &rows, a.parallel)?, "text/csv"),
        // The rows checked above, every amount at one width, padded (bidfile's padding form,
        // which the enclave skips): what `bidctl envelope pad` writes for aws-encryption-cli.
        super::FormatArg::Envelope => (
            envelope_file(
                client,
                &key,
                &auction,
                &buyer,
                rules,
                &envelope_plaintext(&rows, a.lots),
            )?,
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
