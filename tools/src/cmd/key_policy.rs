//! `bidctl key-policy`: the KMS key policy statement that lets only the attested enclave
//! (run by the operator's role) decrypt a buyer's bids, and with `--document` the whole policy,
//! which gives the operator nothing else: the key stays the buyer's.

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct KeyPolicyArgs {
    /// The IAM role the parent instance runs as (it makes the Decrypt calls for the enclave).
    #[arg(long)]
    pub role_arn: String,
    /// The enclave image's PCR0 (from `nitro-cli build-enclave` or `describe-eif`).
    #[arg(long, required_unless_present = "describe_eif")]
    pub pcr0: Option<String>,
    #[arg(long)]
    pub pcr1: Option<String>,
    #[arg(long)]
    pub pcr2: Option<String>,
    #[arg(long)]
    pub pcr8: Option<String>,
    /// Take the measurements from `nitro-cli describe-eif` JSON output instead.
    #[arg(long, conflicts_with_all = ["pcr0", "pcr1", "pcr2", "pcr8"])]
    pub describe_eif: Option<PathBuf>,
    /// Print a whole key policy document, ready for `aws kms put-key-policy`: this statement
    /// plus full use and administration of the key for --admin-arn, and nothing else.
    #[arg(long, requires = "admin_arn")]
    pub document: bool,
    /// With --document: YOUR administrator principal (for example
    /// arn:aws:iam::<your account>:root, or a role of yours). It keeps every right on the key:
    /// administration, Encrypt for bids and seals, GenerateDataKey for envelope files.
    #[arg(long)]
    pub admin_arn: Option<String>,
}

pub fn run(a: KeyPolicyArgs) -> Result<ExitCode> {
    if !(a.role_arn.starts_with("arn:")
        && a.role_arn.contains(":iam::")
        && a.role_arn.contains(":role/"))
    {
        bail!(
            "--role-arn `{}` is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)",
            a.role_arn
        );
    }
    let mut pcrs: Vec<(&str, String)> = Vec::new();
    if let Some(path) = &a.describe_eif {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let m = v.get("Measurements").ok_or_else(|| {
            anyhow!(
                "{}: no `Measurements` (is this `nitro-cli describe-eif` output?)",
                path.display()
            )
        })?;
        for name in ["PCR0", "PCR1", "PCR2", "PCR8"] {
            if let Some(h) = m.get(name).and_then(Value::as_str) {
                pcrs.push((name, h.to_owned()));
            }
        }
        if !pcrs.iter().any(|(n, _)| *n == "PCR0") {
            bail!("{}: Measurements has no PCR0", path.display());
        }
    } else {
        for (name, v) in [
            ("PCR0", &a.pcr0),
            ("PCR1", &a.pcr1),
            ("PCR2", &a.pcr2),
            ("PCR8", &a.pcr8),
        ] {
            if let Some(h) = v {
                pcrs.push((name, h.clone()));
            }
        }
    }
    let mut condition = Map::new();
    for (name, h) in &pcrs {
        let h = h.trim().to_ascii_lowercase();
        if h.len() != 96 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("{name} must be 96 hex digits (a SHA-384)");
        }
        // PCR0 is the image hash; KMS also names it ImageSha384.
        let key = if *name == "PCR0" {
            "kms:RecipientAttestation:ImageSha384".to_owned()
        } else {
            format!("kms:RecipientAttestation:{name}")
        };
        condition.insert(key, Value::String(h));
    }
    if pcrs
        .iter()
        .all(|(_, h)| h.trim().bytes().all(|b| b == b'0'))
    {
        eprintln!(
            "bidctl: WARNING: every measurement is zero. That is a debug-mode enclave (nitro-cli run-enclave --debug-mode): its console is visible to the operator and anyone can build one with these values. Never use this policy for real bids."
        );
    }
    let statement = json!({
        "Sid": "AllowDecryptOnlyByTheAttestedSealedBidEnclave",
        "Effect": "Allow",
        "Principal": { "AWS": a.role_arn },
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": { "StringEqualsIgnoreCase": Value::Object(condition) }
    });
    let out = if a.document {
        let admin = a.admin_arn.clone().unwrap_or_default();
        if !(admin.starts_with("arn:") && admin.contains(":iam::")) {
            bail!(
                "--admin-arn `{admin}` is not an IAM principal ARN (arn:aws:iam::<account>:root, :role/<name> or :user/<name>)"
            );
        }
        let account = |arn: &str| arn.split(':').nth(4).unwrap_or_default().to_owned();
        if account(&admin) == account(&a.role_arn) {
            eprintln!(
                "bidctl: WARNING: your administrator and the operator's role are in the same AWS account ({}). That account's administrators can rewrite any key policy in it, so the operator could give itself your key. Keep your key in an account the operator does not administer.",
                account(&admin)
            );
        }
        json!({
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "KeyAdministrationAndTheBuyersOwnUse",
                    "Effect": "Allow",
                    "Principal": { "AWS": admin },
                    "Action": "kms:*",
                    "Resource": "*"
                },
                statement
            ]
        })
    } else {
        statement
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    // The operator's role gets Decrypt only; making bid files is the buyer's own use.
    if a.document {
        eprintln!(
            "bidctl: your administrator principal keeps kms:*, which covers kms:Encrypt (per-bid files and seals) and kms:GenerateDataKey (envelope files: bidctl encrypt --format envelope, aws-encryption-cli --encrypt)."
        );
    } else {
        eprintln!(
            "bidctl: add this statement to your key's policy. Whoever makes your bid files needs, in another statement, kms:Encrypt (per-bid files and seals) and kms:GenerateDataKey (envelope files: bidctl encrypt --format envelope, aws-encryption-cli --encrypt)."
        );
    }
    Ok(ExitCode::SUCCESS)
}
