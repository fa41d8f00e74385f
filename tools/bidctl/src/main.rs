//! bidctl, the sealed-bid auction's command line: parse a command, call a library, print the
//! result. Each subcommand is a module of [`cmd`]; the work is done by `bidding-client` (what
//! buyers and operators do from their own machines) and `bidding-standins` (the local stand-ins
//! for AWS, the demo, the dev stack, the benchmarks). Nothing depends on this package: it is a
//! binary only, and its tests (tests/) are every test that runs it.

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
    /// Open or inspect an AWS Encryption SDK message (an envelope bid file).
    #[command(subcommand)]
    Envelope(cmd::envelope::Command),
    /// Encrypt a plaintext bid file (contract,bid) into encrypted.csv with your KMS key.
    Encrypt(cmd::encrypt::EncryptArgs),
    /// Seal a sealed auction's manifest: your consent to exactly its terms and files.
    Seal(cmd::seal::SealArgs),
    /// Check that an attestation proves a result of exactly these terms, and say what it
    /// guarantees.
    Verify(cmd::verify::VerifyArgs),
    /// Print the KMS key policy statement that lets only the attested enclave decrypt.
    KeyPolicy(cmd::key_policy::KeyPolicyArgs),
    /// Run a whole auction locally: S3, the KMS emulator, a dev enclave and the parent.
    Demo(cmd::demo::DemoArgs),
    /// Keep a local S3, the KMS emulator and a dev enclave running for the AWS CLI, bidctl and
    /// the parent; prints the environment, the enclave's PCR0 and a ready auction.toml.
    DevStack(cmd::dev_stack::Command),
    /// Measure throughput, latency, CPU and memory per process against the RSA floor.
    Bench(cmd::bench::BenchArgs),
    /// Run a local AWS KMS (HTTPS, SigV4, key policies, Nitro Recipient), or edit its state.
    KmsEmulator(Box<cmd::kms_emulator::Command>),
    /// Write the reproducible initramfs (newc cpio) of an enclave image whose PID 1 is
    /// enclave-init.
    Initramfs(cmd::initramfs::Args),
    /// Print the PCR0, PCR1 and PCR2 of the enclave image made of a kernel, a cmdline and
    /// ramdisks.
    Pcr(cmd::pcr::Args),
}

/// The enclave's allocator, for the dev enclave this binary runs (`__enclave`, the only role
/// that turns it on): large blocks are faulted in when made (`enclave_init::alloc`).
#[global_allocator]
static ALLOC: enclave_init::alloc::Prefaulting = enclave_init::alloc::Prefaulting;

fn main() -> ExitCode {
    // bidctl runs the dev enclave and the parent as child processes of itself, so that one
    // `cargo run` builds everything the demo needs and each process can be measured apart.
    let mut args = std::env::args_os();
    match args.nth(1).as_deref().and_then(|a| a.to_str()) {
        Some("__enclave") => {
            enclave_init::alloc::prefault_large_blocks();
            enclave_init::cli::main_from(std::iter::once("enclave-init".into()).chain(args))
        }
        Some("__parent") => {
            return bidding_parent::cli::main_from(
                std::iter::once("bidding-parent".into()).chain(args),
                bidding_parent::aws::Env::process(),
            );
        }
        _ => {}
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Attestation(c) => cmd::attestation::run(c),
        Command::Cms(c) => cmd::cms::run(c),
        Command::Envelope(c) => cmd::envelope::run(c),
        Command::Encrypt(a) => cmd::encrypt::run(a),
        Command::Seal(a) => cmd::seal::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::KeyPolicy(a) => cmd::key_policy::run(a),
        Command::Demo(a) => cmd::demo::run(a),
        Command::DevStack(c) => cmd::dev_stack::run(c),
        Command::Bench(a) => cmd::bench::run(a),
        Command::KmsEmulator(c) => cmd::kms_emulator::run(*c),
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
