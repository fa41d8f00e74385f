//! `bidctl demo`: see [`bidding_standins::demo`].

use anyhow::{Result, anyhow};
use bidding_core::auction::RevealPolicy;
use bidding_core::names::BuyerName;
use bidding_standins::demo::{self, DemoOptions};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct DemoArgs {
    /// A buyer and their plaintext bid file (`contract,bid`), NAME=FILE. Repeat per buyer.
    /// Without any, the proof of concept's two-buyer, three-property scenario runs.
    #[arg(long = "buyer", value_name = "NAME=FILE")]
    pub buyers: Vec<String>,
    /// What the output reveals: none, winning-bid or second-price.
    #[arg(long, default_value = "none")]
    pub reveal: RevealPolicy,
    /// Where output.csv, its attestation and the dev root are copied.
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    /// How the buyers encrypt their files: per-bid (one KMS ciphertext per bid) or envelope
    /// (one AWS Encryption SDK message per buyer, one KMS data key).
    #[arg(long, value_enum, default_value_t = super::FormatArg::PerBid)]
    pub format: super::FormatArg,
}

pub fn run(a: DemoArgs) -> Result<ExitCode> {
    let mut buyers = Vec::new();
    for b in &a.buyers {
        let (name, file) = b
            .split_once('=')
            .ok_or_else(|| anyhow!("--buyer `{b}`: expected NAME=FILE"))?;
        let name = BuyerName::new(name).map_err(|e| anyhow!("--buyer `{b}`: {e}"))?;
        buyers.push((name, PathBuf::from(file)));
    }
    let work = std::env::temp_dir().join(format!("bidctl-demo-{}", std::process::id()));
    bidding_standins::cleanup::on_interrupt(work.clone());
    let opts = DemoOptions {
        buyers,
        reveal: a.reveal,
        out: a.out,
        work: work.clone(),
        exe: std::env::current_exe()?,
        format: a.format.into(),
    };
    let result = demo::run(&opts, &mut std::io::stdout());
    let _ = std::fs::remove_dir_all(&work);
    result.map(|_| ExitCode::SUCCESS)
}
