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
    /// Write the reproducible initramfs (newc cpio) of an enclave image whose PID 1 is
    /// enclave-init.
    Initramfs(cmd::initramfs::Args),
    /// Print the PCR0, PCR1 and PCR2 of the enclave image made of a kernel, a cmdline and
    /// ramdisks.
    Pcr(cmd::pcr::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Attestation(c) => cmd::attestation::run(c),
        Command::Cms(c) => cmd::cms::run(c),
        Command::Initramfs(a) => cmd::initramfs::run(a),
        Command::Pcr(a) => cmd::pcr::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bidctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
