//! `bidctl seal`: a buyer's consent to exactly one manifest.
//!
//! The buyer checks the terms and that the manifest holds their own file, then has KMS
//! encrypt the seal marker under their own key with the context {auction, buyer, manifest:
//! hex(H)}. Only the key's owner can make that ciphertext; the enclave decides nothing until
//! every buyer's seal opens under the manifest it was given. Two seals for one auction are two
//! runs the operator could compare, so a second, different manifest is refused unless forced.

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use bidding_core::config::sha256;
use bidding_core::manifest::{self, Manifest, SEAL_MARKER};
use bidding_core::names::{BuyerName, KeyArn};
use bidding_parent::aws::Env;
use bidding_parent::config::parse_s3_url;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct SealArgs {
    /// The manifest the operator published: a file, or s3://BUCKET/KEY.
    #[arg(long)]
    pub manifest: String,
    /// Your buyer name in the auction.
    #[arg(long)]
    pub buyer: String,
    /// Your KMS key's full ARN; it must be the one the manifest registers for you.
    #[arg(long)]
    pub key_id: String,
    /// Your own bid file, exactly as you uploaded it (its SHA-256 must be the manifest's).
    #[arg(long)]
    pub bids: PathBuf,
    /// Where to write the seal [default: the bid file's path with `.seal` added].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also upload the seal: to s3://BUCKET/KEY, or with no value next to your bid file as
    /// the manifest names it (`<key>.seal`, where the operator looks by default).
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pub upload: Option<String>,
    /// Seal even though you already sealed a different manifest of this auction. Each seal
    /// lets the operator run the auction once more on its manifest: only do this if the
    /// first manifest was withdrawn and you accept that both could be run.
    #[arg(long)]
    pub force: bool,
    /// Where bidctl remembers what you sealed [default: $XDG_DATA_HOME/bidctl or
    /// ~/.local/share/bidctl].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub aws: super::AwsArgs,
}

/// What this buyer has sealed, per auction.
#[derive(Default, Serialize, Deserialize)]
struct Record {
    /// "<auction>/<buyer>" → hex(H).
    sealed: BTreeMap<String, String>,
}

fn state_dir(a: &SealArgs, env: &Env) -> Result<PathBuf> {
    if let Some(d) = &a.state_dir {
        return Ok(d.clone());
    }
    if let Some(d) = env.get("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("bidctl"));
    }
    let home = env
        .get("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("neither --state-dir, XDG_DATA_HOME nor HOME is set"))?;
    Ok(PathBuf::from(home).join(".local/share/bidctl"))
}

fn read_record(path: &Path) -> Result<Record> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not bidctl's seal record", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn run(a: SealArgs) -> Result<ExitCode> {
    let env = Env::process();
    let key = KeyArn::new(&a.key_id).map_err(|e| anyhow!("--key-id: {e}"))?;
    let buyer = BuyerName::new(&a.buyer).map_err(|e| anyhow!("--buyer: {e}"))?;
    let aws = super::Aws::connect(&env, &key, &a.aws)?;
    let manifest_bytes = if a.manifest.starts_with("s3://") {
        let (bucket, object) = parse_s3_url(&a.manifest).map_err(|e| anyhow!("--manifest: {e}"))?;
        aws.s3(&env)
            .get_object(&bucket, &object, manifest::MAX_MANIFEST_BYTES as u64)
            .with_context(|| format!("reading the manifest {}", a.manifest))?
    } else {
        std::fs::read(&a.manifest).with_context(|| format!("reading {}", a.manifest))?
    };
    let m = Manifest::parse(&manifest_bytes).map_err(|e| anyhow!("{}: {e}", a.manifest))?;
    let h = m.digest();
    let terms = m.terms();

    // Show the buyer what they consent to, every term of it.
    eprintln!(
        "bidctl: manifest {} (SHA-256 {})",
        a.manifest,
        hex::encode(h)
    );
    eprintln!("  auction          {}", terms.auction_id());
    eprintln!("  reveal           {}", terms.reveal());
    eprintln!(
        "  no-context bids  {}",
        if terms.allow_no_context() {
            "accepted"
        } else {
            "refused"
        }
    );
    for (b, f) in terms.buyers().iter().zip(m.files()) {
        eprintln!(
            "  buyer {:<16} key {}  file s3://{}/{} ({} bytes, {}, SHA-256 {})",
            b.name.as_str(),
            b.key_arn,
            f.bucket,
            f.key,
            f.size,
            f.format,
            hex::encode(f.sha256)
        );
    }

    let Some(spec) = terms.buyer(&buyer) else {
        bail!("`{buyer}` is not a buyer in this manifest; nothing was sealed");
    };
    if spec.key_arn != key {
        bail!(
            "the manifest registers key {} for `{buyer}`, not {key}; nothing was sealed",
            spec.key_arn
        );
    }
    let file = m.file(&buyer).expect("every buyer has a file");
    let mine = std::fs::read(&a.bids).with_context(|| format!("reading {}", a.bids.display()))?;
    let digest = sha256(&mine);
    if digest != file.sha256 || mine.len() as u64 != file.size {
        bail!(
            "the manifest does not hold your file: it names s3://{}/{} with {} bytes and SHA-256 {}, but {} has {} bytes and SHA-256 {}. Do not seal: ask the operator why",
            file.bucket,
            file.key,
            file.size,
            hex::encode(file.sha256),
            a.bids.display(),
            mine.len(),
            hex::encode(digest)
        );
    }

    let dir = state_dir(&a, &env)?;
    let record_path = dir.join("seals.json");
    let mut record = read_record(&record_path)?;
    let slot = format!("{}/{buyer}", terms.auction_id());
    if let Some(previous) = record.sealed.get(&slot)
        && previous != &hex::encode(h)
        && !a.force
    {
        bail!(
            "you already sealed another manifest of auction {} (SHA-256 {previous}). Each seal lets the operator run the auction on its manifest, and comparing two results can reveal more than one; nothing was sealed (--force if the first manifest was withdrawn and you accept that)",
            terms.auction_id()
        );
    }

    let context = manifest::seal_context(terms.auction_id(), &buyer, &h);
    let seal = aws.kms.encrypt(key.as_str(), SEAL_MARKER, Some(context))?;
    let text = format!(
        "{}\n",
        base64::engine::general_purpose::STANDARD.encode(&seal)
    );
    let out = a.out.clone().unwrap_or_else(|| {
        let mut p = a.bids.clone().into_os_string();
        p.push(".seal");
        PathBuf::from(p)
    });
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    record.sealed.insert(slot, hex::encode(h));
    let tmp = record_path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&record)?)
        .and_then(|_| std::fs::rename(&tmp, &record_path))
        .with_context(|| format!("writing {}", record_path.display()))?;
    eprintln!(
        "bidctl: sealed manifest {} for `{buyer}`: {}",
        hex::encode(h),
        out.display()
    );
    if let Some(target) = &a.upload {
        let (bucket, object) = if target.is_empty() {
            (file.bucket.clone(), format!("{}.seal", file.key))
        } else {
            parse_s3_url(target).map_err(|e| anyhow!("--upload: {e}"))?
        };
        aws.s3(&env)
            .put_object(&bucket, &object, text.as_bytes(), "text/plain")
            .with_context(|| format!("uploading the seal to s3://{bucket}/{object}"))?;
        eprintln!("bidctl: seal uploaded to s3://{bucket}/{object}");
    }
    Ok(ExitCode::SUCCESS)
}
