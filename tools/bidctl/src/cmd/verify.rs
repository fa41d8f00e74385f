//! `bidctl verify`: does this attestation prove this result of these terms? Says what it
//! checked, so a reader knows what the result does and does not guarantee. With `--buyer
//! --key-id --bids`, also the buyer's own check (`bidding_core::verify::check_buyer`): the
//! manifest binds the buyer's own key to their name and counts their file, none of their bids
//! was set aside for a reason the operator could cause, and the buyer's seal record (when
//! there is one) names this manifest.

use anyhow::{Context, Result, anyhow, bail};
use bidding_client::seal::{RECORD_FILE, read_record, state_dir};
use bidding_core::attestation::{AWS_NITRO_ROOT_G1_DER, VerifyAt};
use bidding_core::config::{AuctionConfig, Mode, sha256};
use bidding_core::manifest::Manifest;
use bidding_core::names::{BuyerName, KeyArn};
use bidding_core::verify::{
    BuyerCheckError, BuyerView, Expected, RecordCheck, check_buyer, verify_result,
};
use bidding_parent::aws::Env;
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
    /// Your buyer name, for your own check (with --key-id and --bids): the manifest registers
    /// YOUR key for this name and counts your file, none of your bids was set aside as
    /// undecryptable, wrong_key or malformed_file, and your seal record names this manifest.
    #[arg(long, requires_all = ["bids", "key_id"])]
    pub buyer: Option<String>,
    /// Your own KMS key's full ARN, as you made it (not as the manifest says).
    #[arg(long, requires = "buyer")]
    pub key_id: Option<String>,
    /// Your own bid file (the encrypted one you uploaded).
    #[arg(long, requires = "buyer")]
    pub bids: Option<PathBuf>,
    /// Where `bidctl seal` keeps what you sealed [default: as bidctl seal: $XDG_DATA_HOME/bidctl
    /// or ~/.local/share/bidctl].
    #[arg(long, requires = "buyer")]
    pub state_dir: Option<PathBuf>,
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
    // Optional: the buyer's own check.
    let mine = match (&a.buyer, &a.key_id, &a.bids) {
        (Some(name), Some(key), Some(path)) => {
            let name = BuyerName::new(name.as_str()).map_err(|e| anyhow!("--buyer: {e}"))?;
            let key = KeyArn::new(key.as_str()).map_err(|e| anyhow!("--key-id: {e}"))?;
            let bytes = read(path)?;
            let record_path =
                state_dir(a.state_dir.as_deref(), &Env::process()).map(|d| d.join(RECORD_FILE));
            let record = match &record_path {
                Some(p) => read_record(p)?,
                None => None,
            };
            let checked_buyer = match &expected {
                Expected::Sealed { manifest, .. } => check_buyer(
                    &checked,
                    manifest,
                    &BuyerView {
                        buyer: &name,
                        key: &key,
                        file: &bytes,
                        record: record.as_ref(),
                    },
                ),
                Expected::Unsealed { .. } => Err(BuyerCheckError::Unsealed(name.clone())),
            };
            match checked_buyer {
                Ok(report) => Some((name, path.clone(), sha256(&bytes), report, record_path)),
                Err(e) => {
                    eprintln!("bidctl: verification failed: {e}");
                    return Ok(ExitCode::FAILURE);
                }
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
    // The result attestation's tag is the rule set of the image that made it.
    println!(
        "  rule set     {} ({}: made by {})",
        c.mode,
        match c.mode {
            Mode::Sealed => "SBRS",
            Mode::Unsealed => "SBRU",
        },
        c.mode.image()
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
            // A file set aside whole is counted as a file, as in the parent's log.
            println!(
                "    {:<16} {} ({}){}{on}",
                s.buyer.as_str(),
                s.reason.counted(s.count),
                s.reason,
                if on.is_empty() { "" } else { " " },
            );
        }
    }
    if let Some((name, path, digest, report, record_path)) = mine {
        println!(
            "  your file    {} (SHA-256 {}) is the one counted for `{name}`, under your key",
            path.display(),
            hex::encode(digest)
        );
        if report.set_aside.is_empty() {
            println!("  your bids    none set aside");
        } else {
            println!("  your bids    set aside, by reason (each one your file alone causes)");
            for s in &report.set_aside {
                println!(
                    "    {:<16} {}",
                    s.reason.to_string(),
                    s.reason.counted(s.count)
                );
            }
        }
        let where_ = record_path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(no state directory)".to_owned());
        match report.record {
            RecordCheck::Matches => println!(
                "  your seal    your seal record {where_} names this manifest: it is the one you sealed"
            ),
            RecordCheck::NoRecord => println!(
                "  your seal    no seal record at {where_}: not checked against what you sealed (--state-dir where bidctl seal kept it)"
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
