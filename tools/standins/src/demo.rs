//! `bidctl demo`: the whole auction on one machine, end to end, with real cryptography and the
//! local stand-ins for AWS: buyers seal their bids under their own KMS keys, the parent runs
//! the auction through a dev enclave, and the result is verified like anyone would verify it.

use crate::stack::{OUTPUT_BUCKET, Stack, StackOptions};
use anyhow::{Context, Result, anyhow, bail};
use bidding_core::attestation::VerifyAt;
use bidding_core::auction::RevealPolicy;
use bidding_core::bidfile::{Limits, PlaintextRow, parse_plaintext};
use bidding_core::manifest::{FileFormat, Manifest};
use bidding_core::names::{AuctionId, BuyerName};
use bidding_core::verify::{Expected, verify_result};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct DemoOptions {
    /// (buyer, plaintext `contract,bid` file); empty for the proof of concept's scenario.
    pub buyers: Vec<(BuyerName, PathBuf)>,
    pub reveal: RevealPolicy,
    pub out: PathBuf,
    /// Where the servers keep their state; removed at the end.
    pub work: PathBuf,
    /// The executable that runs the dev enclave and the parent (bidctl itself).
    pub exe: PathBuf,
    /// How the buyers encrypt their files.
    pub format: FileFormat,
}

/// The proof of concept's scenario: Buyer1 bids 100000, 200000 and 150000 on properties 1 to
/// 3; Buyer2 bids other amounts, tying property 3 (the proof of concept gave ties to Buyer1).
pub const DEFAULT_SCENARIO: [(&str, &str); 2] = [
    ("Buyer1", "contract,bid\n1,100000\n2,200000\n3,150000\n"),
    ("Buyer2", "contract,bid\n1,95000\n2,250000\n3,150000\n"),
];

pub fn run(opts: &DemoOptions, say: &mut dyn Write) -> Result<()> {
    let mut inputs: Vec<(BuyerName, Vec<PlaintextRow>)> = Vec::new();
    if opts.buyers.is_empty() {
        for (name, text) in DEFAULT_SCENARIO {
            let rows = parse_plaintext(name, text.as_bytes(), Limits::default())
                .map_err(|e| anyhow!("{e}"))?;
            inputs.push((BuyerName::new(name).expect("valid"), rows));
        }
    } else {
        for (name, path) in &opts.buyers {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let rows = parse_plaintext(&path.display().to_string(), &bytes, Limits::default())
                .map_err(|e| {
                    anyhow!("{} is refused; nothing was encrypted:\n{e}", path.display())
                })?;
            inputs.push((name.clone(), rows));
        }
    }
    let names: Vec<BuyerName> = inputs.iter().map(|(n, _)| n.clone()).collect();
    let auction = AuctionId::new("demo-auction").expect("valid");

    // The work directory is removed at the end: no path inside it is shown as if it stayed.
    writeln!(
        say,
        "Starting a local S3 (s3s-fs), the KMS emulator and the software NSM in a scratch directory (removed at the end; `bidctl dev-stack` keeps a stack running)"
    )?;
    let stack = Stack::start(&opts.work, &names, &opts.exe, StackOptions::default())?;
    writeln!(
        say,
        "Each buyer has a KMS key whose policy lets only an enclave with PCR0 {}… decrypt",
        &hex::encode(stack.pcr0)[..16]
    )?;
    for (name, rows) in &inputs {
        let buyer = stack.buyer(name.as_str())?;
        match opts.format {
            FileFormat::PerBid => {
                stack.seal_and_upload(buyer, &auction, rows, true)?;
                writeln!(
                    say,
                    "  {name}: {} sealed with {} and uploaded to s3://{}/encrypted.csv",
                    bidding_core::count(rows.len() as u64, "bid", "bids"),
                    buyer.key,
                    buyer.bucket
                )?;
            }
            FileFormat::Envelope => {
                let file = stack.envelope_and_upload(buyer, &auction, rows)?;
                writeln!(
                    say,
                    "  {name}: {} in one envelope file ({} bytes, one data key from {}) uploaded to s3://{}/encrypted.csv",
                    bidding_core::count(rows.len() as u64, "bid", "bids"),
                    file.len(),
                    buyer.key,
                    buyer.bucket
                )?;
            }
        }
    }

    let enclave = stack.start_enclave(&opts.exe, "enclave", &[])?;
    writeln!(
        say,
        "Dev enclave listening (on a Unix socket in the scratch directory)"
    )?;
    let config_path = opts.work.join("auction.toml");
    std::fs::write(
        &config_path,
        stack.parent_config(&auction, &enclave.endpoint, &opts.reveal.to_string(), false),
    )?;
    writeln!(
        say,
        "The operator makes the manifest after the deadline (bidding-parent manifest --config auction.toml)"
    )?;
    let manifest = stack.seal_round(&opts.exe, &config_path)?;
    writeln!(
        say,
        "  manifest SHA-256 {}; every buyer checked it holds their file and sealed it with their own key",
        hex::encode(bidding_core::config::sha256(&manifest))
    )?;
    writeln!(
        say,
        "Running the parent (bidding-parent --config auction.toml)"
    )?;
    let run = stack.run_parent(&opts.exe, &config_path, &["--log-format", "human"])?;
    if run.code != Some(0) {
        bail!(
            "the parent failed (exit {:?}):\n{}\nenclave log:\n{}",
            run.code,
            run.stderr,
            enclave.log_text()
        );
    }
    drop(enclave);

    let output = stack.fetch_output("output.csv")?;
    let attestation = stack.fetch_output("output.csv.attestation")?;
    let json = stack.fetch_output("output.json")?;
    let root = std::fs::read(&stack.dev_root_pem)?;
    let root_der = bidding_client::pem_certificate(&root)?;
    let parsed = Manifest::parse(&manifest).map_err(|e| anyhow!("{e}"))?;
    let checked = verify_result(
        &output,
        &json,
        &attestation,
        &root_der,
        &stack.pcr0,
        VerifyAt::Document,
        &Expected::Sealed {
            manifest: &parsed,
            bytes: &manifest,
        },
    )
    .map_err(|e| anyhow!("the result does not verify: {e}"))?;

    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let files = [
        ("output.csv", &output),
        ("output.csv.attestation", &attestation),
        ("manifest.json", &manifest),
        ("output.json", &json),
        ("dev-root.pem", &root),
    ];
    for (name, bytes) in files {
        std::fs::write(opts.out.join(name), bytes)?;
    }
    writeln!(say, "\nOutcome (s3://{OUTPUT_BUCKET}/output.csv):\n")?;
    print_table(say, &output)?;
    let out = absolute(&opts.out);
    writeln!(
        say,
        "\nVerified: the attestation (enclave {}, PCR0 {}…) commits to exactly this output and the manifest every buyer sealed.",
        checked.module_id,
        &hex::encode(&checked.pcr0)[..16]
    )?;
    writeln!(say, "  output:      {}", out.join("output.csv").display())?;
    writeln!(
        say,
        "  attestation: {}",
        out.join("output.csv.attestation").display()
    )?;
    writeln!(
        say,
        "Check it yourself:\n  bidctl verify --output {} --attestation {} --manifest {} --root {} --expect-pcr0 {}",
        out.join("output.csv").display(),
        out.join("output.csv.attestation").display(),
        out.join("manifest.json").display(),
        out.join("dev-root.pem").display(),
        hex::encode(stack.pcr0)
    )?;
    writeln!(
        say,
        "(A dev enclave's software NSM signs with a local root: this shows the mechanism, it proves nothing to third parties.)"
    )?;
    Ok(())
}

fn print_table(say: &mut dyn Write, csv_bytes: &[u8]) -> Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(csv_bytes);
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.map(|r| r.iter().map(str::to_owned).collect()))
        .collect::<Result<_, _>>()?;
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, v)| format!("{v:<w$}", w = widths[c]))
            .collect();
        writeln!(say, "  {}", line.join("  ").trim_end())?;
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            writeln!(say, "  {}", rule.join("  "))?;
        }
    }
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}
