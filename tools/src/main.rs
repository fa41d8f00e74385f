//! bidctl: the sealed-bid auction's command line for buyers and operators.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod cmd;

#[derive(Parser)]
#[command(
    name = "bidctl",
    version,
    about = "Sealed-bid auctions in AWS Nitro Enclaves: tools for buyers and operators"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect or verify an AWS Nitro attestation document.
    #[command(subcommand)]
    Attestation(cmd::attestation::Command),
    /// Open a KMS CiphertextForRecipient (CMS EnvelopedData) with an RSA private key.
    #[command(subcommand)]
    Cms(cmd::cms::Command),
    /// Run a local AWS KMS (HTTPS, SigV4, key policies, Nitro Recipient), or edit its state.
    KmsEmulator(Box<cmd::kms_emulator::Command>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Attestation(c) => cmd::attestation::run(c),
        Command::Cms(c) => cmd::cms::run(c),
        Command::KmsEmulator(c) => cmd::kms_emulator::run(*c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bidctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
