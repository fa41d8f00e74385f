//! `bidctl seal`: a buyer's consent to exactly one manifest.
//!
//! Fetches the manifest, prints every term, and calls [`bidding_client::seal::seal`], which
//! checks the manifest against the buyer's own key and file (and refuses one under which the
//! file would not open), keeps the one-seal-per-auction-and-per-file record, and has KMS make
//! the seal. This writes the seal beside the bid file and, with `--upload`, next to the bid
//! file in S3.

use anyhow::{Context, Result, anyhow};
use base64::Engine;
use bidding_client::seal::{self, Note, RECORD_FILE, SealRequest};
use bidding_core::manifest::{self, Manifest};
use bidding_core::names::{BuyerName, KeyArn};
use bidding_parent::aws::Env;
use bidding_parent::config::parse_s3_url;
use clap::Args;
use std::path::PathBuf;
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
    /// Seal even though you already sealed a different manifest of this auction, or one that
    /// holds this very bid file under any auction id. Each seal lets the operator run an
    /// auction on its manifest: only do this if the first manifest was withdrawn and you
    /// accept that both could be run.
    #[arg(long)]
    pub force: bool,
    /// Where bidctl remembers what you sealed [default: $XDG_DATA_HOME/bidctl or
    /// ~/.local/share/bidctl].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub aws: super::AwsArgs,
}

pub fn run(a: SealArgs) -> Result<ExitCode> {
    let env = Env::process();
    let key = KeyArn::new(&a.key_id).map_err(|e| anyhow!("--key-id: {e}"))?;
    let buyer = BuyerName::new(&a.buyer).map_err(|e| anyhow!("--buyer: {e}"))?;
    let dir = seal::state_dir(a.state_dir.as_deref(), &env)
        .ok_or_else(|| anyhow!("neither --state-dir, XDG_DATA_HOME nor HOME is set"))?;
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
    print_terms(&a.manifest, &m);
    let mine = std::fs::read(&a.bids).with_context(|| format!("reading {}", a.bids.display()))?;

    let sealed = seal::seal(
        &SealRequest {
            manifest: &manifest_bytes,
            buyer: &buyer,
            key: &key,
            bids: &mine,
            force: a.force,
            record: &dir.join(RECORD_FILE),
        },
        &aws.kms,
        &mut |note| match note {
            Note::Warning(w) => eprintln!("bidctl: WARNING: {}: {w}", a.bids.display()),
            Note::Opened { lot } => eprintln!(
                "bidctl: your bid on lot {lot} opens with your key under this manifest's context"
            ),
            Note::NotChecked(why) => eprintln!("bidctl: {why}"),
            Note::Forced(second) => eprintln!("bidctl: --force: {second}"),
        },
    )?;
    let text = format!(
        "{}\n",
        base64::engine::general_purpose::STANDARD.encode(&sealed.ciphertext)
    );
    let out = a.out.clone().unwrap_or_else(|| {
        let mut p = a.bids.clone().into_os_string();
        p.push(".seal");
        PathBuf::from(p)
    });
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "bidctl: sealed manifest {} for `{buyer}`: {}",
        hex::encode(sealed.manifest_sha256),
        out.display()
    );
    if let Some(target) = &a.upload {
        let (bucket, object) = if target.is_empty() {
            (
                sealed.file.bucket.clone(),
                format!("{}.seal", sealed.file.key),
            )
        } else {
            parse_s3_url(target).map_err(|e| anyhow!("--upload: {e}"))?
        };
        // The object says which manifest it seals, so the operator's run can tell a seal of
        // another manifest at this key before it sends anything (the parent's
        // SEAL_METADATA_MANIFEST); the seal itself is what the enclave checks.
        let digest = hex::encode(sealed.manifest_sha256);
        let auction = m.terms().auction_id().to_string();
        aws.s3(&env)
            .put_object_with_metadata(
                &bucket,
                &object,
                text.as_bytes(),
                "text/plain",
                &[
                    (bidding_parent::run::SEAL_METADATA_MANIFEST, &digest),
                    (bidding_parent::run::SEAL_METADATA_AUCTION, &auction),
                ],
            )
            .with_context(|| format!("uploading the seal to s3://{bucket}/{object}"))?;
        eprintln!("bidctl: seal uploaded to s3://{bucket}/{object}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Every term the buyer consents to.
fn print_terms(source: &str, m: &Manifest) {
    let terms = m.terms();
    eprintln!(
        "bidctl: manifest {source} (SHA-256 {})",
        hex::encode(m.digest())
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
}
