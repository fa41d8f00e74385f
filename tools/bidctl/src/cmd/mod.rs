//! One module per `bidctl` subcommand.

pub mod attestation;
pub mod bench;
pub mod cms;
pub mod demo;
pub mod dev_stack;
pub mod encrypt;
pub mod envelope;
pub mod initramfs;
pub mod key_policy;
pub mod kms_emulator;
pub mod pcr;
pub mod seal;
pub mod verify;

use anyhow::{Context, Result, anyhow};
use bidding_client::kms_client::KmsClient;
use bidding_core::credentials::Credentials;
use bidding_core::names::{KeyArn, Region};
use bidding_parent::aws::Env;
use bidding_parent::aws::credentials::CredentialSource;
use bidding_parent::aws::s3::{S3Client, endpoint_from_env};
use std::path::{Path, PathBuf};

/// Where a buyer's KMS and credentials are, when not where the AWS CLI would look.
#[derive(clap::Args)]
pub struct AwsArgs {
    /// AWS region [env: AWS_REGION; default: the key's region].
    #[arg(long)]
    pub region: Option<String>,
    /// KMS endpoint URL [env: AWS_ENDPOINT_URL_KMS, AWS_ENDPOINT_URL].
    #[arg(long)]
    pub kms_endpoint: Option<String>,
    /// PEM bundle of CAs to trust instead of the public roots [env: AWS_CA_BUNDLE].
    #[arg(long)]
    pub ca_bundle: Option<PathBuf>,
}

/// A buyer's AWS clients, set up the way the AWS CLI does: credentials from the usual chain,
/// endpoints from `AWS_ENDPOINT_URL_KMS` / `_S3`, CAs from `AWS_CA_BUNDLE`.
pub struct Aws {
    pub region: Region,
    pub credentials: Credentials,
    pub kms: KmsClient,
    /// `--ca-bundle` / `AWS_CA_BUNDLE`: trusted for S3 too, as the AWS CLI does.
    ca: Option<Vec<u8>>,
}

impl Aws {
    pub fn connect(env: &Env, key: &KeyArn, args: &AwsArgs) -> Result<Aws> {
        let region = args
            .region
            .clone()
            .or_else(|| bidding_parent::aws::env::region(env))
            .unwrap_or_else(|| key.region().to_owned());
        let region = Region::new(region).map_err(|e| anyhow!("region: {e}"))?;
        let credentials = CredentialSource::chain(env.clone(), region.clone())
            .fetch()
            .map_err(|e| anyhow!("{e}"))?;
        let ca = match args
            .ca_bundle
            .clone()
            .or_else(|| env.get("AWS_CA_BUNDLE").map(PathBuf::from))
        {
            Some(p) => Some(
                std::fs::read(&p).with_context(|| format!("reading CA bundle {}", p.display()))?,
            ),
            None => None,
        };
        let endpoint = args
            .kms_endpoint
            .clone()
            .or_else(|| bidding_parent::aws::env::endpoint_url(env, "KMS"));
        let kms =
            KmsClient::new(credentials.clone(), endpoint, ca.as_deref()).map_err(|e| anyhow!(e))?;
        Ok(Aws {
            region,
            credentials,
            kms,
            ca,
        })
    }

    pub fn s3(&self, env: &Env) -> S3Client {
        let endpoint = endpoint_from_env(env);
        let path_style = endpoint.is_some();
        let client = S3Client::new(self.region.clone(), self.credentials.clone())
            .with_endpoint(endpoint)
            .with_force_path_style(path_style);
        match self
            .ca
            .as_deref()
            .map(bidding_parent::aws::http::HttpClient::with_ca_bundle)
        {
            Some(Ok(http)) => client.with_http(http),
            // The KMS client already refused a bad bundle; S3 then keeps the public roots.
            _ => client,
        }
    }
}

/// A buyer's plaintext `contract,bid` file, checked with the enclave's rules. With problems,
/// prints every one of them (so the buyer can fix them all at once) and that `nothing` was
/// done, and returns `None`; a file with no rows is an error.
pub fn read_plaintext_bids(
    path: &Path,
    nothing: &str,
) -> Result<Option<Vec<bidding_core::bidfile::PlaintextRow>>> {
    use bidding_core::bidfile::{Limits, parse_plaintext};
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    );
    match parse_plaintext(&path.display().to_string(), &bytes, Limits::default()) {
        Ok(rows) if rows.is_empty() => Err(anyhow!("{}: no bids", path.display())),
        Ok(rows) => Ok(Some(rows)),
        Err(errors) => {
            eprintln!(
                "bidctl: {} has {} problem(s); {nothing}:",
                path.display(),
                errors.0.len()
            );
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            Ok(None)
        }
    }
}

/// Reads a file that holds one certificate, PEM or DER, and returns the DER.
pub fn read_certificate(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    bidding_client::pem_certificate(&bytes).with_context(|| path.display().to_string())
}

/// A bid file format on the command line (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FormatArg {
    /// The proof of concept's `encrypted.csv`: one KMS ciphertext per bid.
    #[default]
    PerBid,
    /// One AWS Encryption SDK message holding the whole `contract,bid` CSV: one KMS data key
    /// per file (what `aws-encryption-cli --encrypt` makes).
    Envelope,
}

impl From<FormatArg> for bidding_core::manifest::FileFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::PerBid => bidding_core::manifest::FileFormat::PerBid,
            FormatArg::Envelope => bidding_core::manifest::FileFormat::Envelope,
        }
    }
}
