//! `bidctl verify`: does this attestation prove this result of these terms? Says what it
//! checked, so a reader knows what the result does and does not guarantee.

use anyhow::{Context, Result, anyhow, bail};
use bidding_core::attestation::{AWS_NITRO_ROOT_G1_DER, VerifyAt};
use bidding_core::config::{AuctionConfig, Mode, sha256};
use bidding_core::manifest::Manifest;
use bidding_core::names::BuyerName;
use bidding_core::verify::{Expected, verify_result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Args)]
#[command(group(clap::ArgGroup::new("terms").required(true).args(["manifest", "config"])))]
pub struct VerifyArgs {
    /// The output.csv as published.
    #[arg(long)]
    pub output: PathBuf,
    /// The output.json published beside it [default: output.csv's name with .json].
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Its attestation document (output.csv.attestation).
    #[arg(long)]
    pub attestation: PathBuf,
    /// The enclave measurement the buyers trusted (96 hex digits).
    #[arg(long)]
    pub expect_pcr0: String,
    /// Trust anchor, PEM or DER [default: the AWS Nitro Enclaves root G1, built in].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// A sealed auction's manifest.json, the one every buyer sealed.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// An unsealed auction's configuration: the parent's TOML file, or the canonical
    /// output.csv.config.json written beside the output.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// With --bids: confirm that this buyer's file is the one the result counted.
    #[arg(long, requires = "bids")]
    pub buyer: Option<String>,
    /// Your own bid file (the encrypted one you uploaded).
    #[arg(long, requires = "buyer")]
    pub bids: Option<PathBuf>,
    /// Check certificate validity now instead of at the document's own time. Enclave
    /// certificates live about three hours, so results are normally checked as of then.
    #[arg(long)]
    pub now: bool,
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

pub fn run(a: VerifyArgs) -> Result<ExitCode> {
    let output = read(&a.output)?;
    let json_path = a.json.clone().unwrap_or_else(|| {
        let stem = a.output.file_stem().unwrap_or_default().to_string_lossy();
        a.output.with_file_name(format!("{stem}.json"))
    });
    let json = read(&json_path)?;
    let doc = read(&a.attestation)?;
    let root = match &a.root {
        Some(p) => super::read_certificate(p)?,
        None => AWS_NITRO_ROOT_G1_DER.to_vec(),
    };
    let expected_pcr0 = match hex::decode(a.expect_pcr0.trim()) {
        Ok(v) if v.len() == 48 => v,
        _ => bail!("--expect-pcr0 must be 96 hex digits"),
    };
    let manifest_bytes;
    let manifest;
    let config: AuctionConfig;
    let expected = match (&a.manifest, &a.config) {
        (Some(p), _) => {
            manifest_bytes = read(p)?;
            manifest =
                Manifest::parse(&manifest_bytes).map_err(|e| anyhow!("{}: {e}", p.display()))?;
            Expected::Sealed {
                manifest: &manifest,
                bytes: &manifest_bytes,
            }
        }
        (None, Some(p)) if p.extension().is_some_and(|e| e == "json") => {
            config = serde_json::from_slice(&read(p)?)
                .map_err(|e| anyhow!("{}: not an auction configuration: {e}", p.display()))?;
            Expected::Unsealed { config: &config }
        }
        (None, Some(p)) => {
            config = bidding_parent::config::auction_from_file(p)
                .map_err(|e| anyhow!("{}: {}", p.display(), e.join("; ")))?;
            Expected::Unsealed { config: &config }
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let at = if a.now {
        VerifyAt::UnixMillis(
            std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)?
                .as_millis() as u64,
        )
    } else {
        VerifyAt::Document
    };
    let checked = match verify_result(&output, &json, &doc, &root, &expected_pcr0, at, &expected) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bidctl: verification failed: {e}");
            if e.to_string().contains("is not the trusted root") && a.root.is_none() {
                eprintln!(
                    "bidctl: (a local dev enclave's documents chain to its software NSM's root: pass --root with that root's PEM)"
                );
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    // Optional: this buyer's own file is the one counted.
    let mine = match (&a.buyer, &a.bids) {
        (Some(name), Some(path)) => {
            let name = BuyerName::new(name.as_str()).map_err(|e| anyhow!("--buyer: {e}"))?;
            let bytes = read(path)?;
            let digest = sha256(&bytes);
            let counted = checked.header.files.iter().find(|f| f.buyer == name);
            match counted {
                None => {
                    eprintln!(
                        "bidctl: verification failed: `{name}` is not a buyer of this result"
                    );
                    return Ok(ExitCode::FAILURE);
                }
                Some(f) if f.sha256 != digest || f.size != bytes.len() as u64 => {
                    eprintln!(
                        "bidctl: verification failed: the result counted a different file for `{name}` ({} bytes, SHA-256 {}) than {} ({} bytes, SHA-256 {})",
                        f.size,
                        hex::encode(f.sha256),
                        path.display(),
                        bytes.len(),
                        hex::encode(digest)
                    );
                    return Ok(ExitCode::FAILURE);
                }
                Some(_) => Some((name, path.clone(), digest)),
            }
        }
        _ => None,
    };

    let c = &checked.commitment;
    let h = &checked.header;
    let when =
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(checked.timestamp_ms));
    println!("verified: this result is genuine and complete");
    println!(
        "  output.csv   {} ({} bytes, SHA-256 {})",
        a.output.display(),
        output.len(),
        hex::encode(c.csv_sha256)
    );
    println!(
        "  output.json  {} ({} bytes, SHA-256 {})",
        json_path.display(),
        json.len(),
        hex::encode(c.json_sha256)
    );
    println!(
        "  enclave      {} with PCR0 {}, attested at {when}",
        checked.module_id,
        hex::encode(&checked.pcr0)
    );
    let cfg = match &expected {
        Expected::Sealed { manifest, .. } => manifest.terms(),
        Expected::Unsealed { config } => config,
    };
    println!("  auction      {}", cfg.auction_id());
    println!("  reveal       {}", cfg.reveal());
    println!(
        "  no-context bids {}",
        if cfg.allow_no_context() {
            "accepted"
        } else {
            "refused"
        }
    );
    match c.mode {
        Mode::Sealed => println!(
            "  mode         SEALED: manifest SHA-256 {}; every buyer's seal of exactly this manifest opened inside the enclave, and each file's digest matched it",
            hex::encode(c.terms_sha256)
        ),
        Mode::Unsealed => println!(
            "  mode         UNSEALED: configuration SHA-256 {}. The buyers did not seal these terms: this result does NOT stop the operator from running the auction again with other terms, or leaving bids out, and publishing whichever result it likes",
            hex::encode(c.terms_sha256)
        ),
    }
    println!("  buyers");
    for b in cfg.buyers() {
        let file = h.files.iter().find(|f| f.buyer == b.name);
        match file {
            Some(f) => println!(
                "    {:<16} key {}\n    {:<16} file {} bytes, {}, SHA-256 {}",
                b.name.as_str(),
                b.key_arn,
                "",
                f.size,
                f.format,
                hex::encode(f.sha256)
            ),
            None => println!("    {:<16} key {} (no file)", b.name.as_str(), b.key_arn),
        }
    }
    println!("  lots         {}", h.lot_count);
    if h.set_aside.is_empty() {
        println!("  set aside    none");
    } else {
        println!("  set aside");
        for s in &h.set_aside {
            let on = s.lots.as_ref().map(|l| l.describe()).unwrap_or_default();
            println!(
                "    {:<16} {} {} ({}){}{on}",
                s.buyer.as_str(),
                s.count,
                if s.count == 1 { "bid" } else { "bids" },
                s.reason,
                if on.is_empty() { "" } else { " " },
            );
        }
    }
    if let Some((name, path, digest)) = mine {
        println!(
            "  your file    {} (SHA-256 {}) is the one counted for `{name}`",
            path.display(),
            hex::encode(digest)
        );
    }
    Ok(ExitCode::SUCCESS)
}
