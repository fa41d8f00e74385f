//! `bidctl key-policy`: the KMS key policy statement that lets only the attested enclave
//! (run by the operator's role) decrypt a buyer's bids, and with `--document` the whole policy,
//! which gives the operator nothing else and keeps seals to the buyer's administrator: see
//! [`bidding_client::key_policy`].

use anyhow::{Context, Result, anyhow, bail};
use bidding_client::key_policy::{self, Administrator, Measurements, RoleArn};
use clap::Args;
use serde_json::Value;
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
    /// Print a whole key policy document, ready for `aws kms put-key-policy`: this statement,
    /// full use and administration of the key for --admin-arn, and a deny that keeps seals
    /// (Encrypt with a `manifest` context) to --admin-arn alone.
    #[arg(long, requires = "admin_arn")]
    pub document: bool,
    /// With --document: YOUR administrator principal (for example
    /// arn:aws:iam::<your account>:root, or a role of yours). It keeps every right on the key:
    /// administration, Encrypt for bids and seals, GenerateDataKey for envelope files.
    #[arg(long)]
    pub admin_arn: Option<String>,
}

pub fn run(a: KeyPolicyArgs) -> Result<ExitCode> {
    let role = RoleArn::new(&a.role_arn).map_err(|e| anyhow!("--role-arn {e}"))?;
    let mut pcrs: Vec<(u8, String)> = Vec::new();
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
        for (i, name) in [(0, "PCR0"), (1, "PCR1"), (2, "PCR2"), (8, "PCR8")] {
            if let Some(h) = m.get(name).and_then(Value::as_str) {
                pcrs.push((i, h.to_owned()));
            }
        }
        if !pcrs.iter().any(|(i, _)| *i == 0) {
            bail!("{}: Measurements has no PCR0", path.display());
        }
    } else {
        for (i, v) in [(0, &a.pcr0), (1, &a.pcr1), (2, &a.pcr2), (8, &a.pcr8)] {
            if let Some(h) = v {
                pcrs.push((i, h.clone()));
            }
        }
    }
    let pairs: Vec<(u8, &str)> = pcrs.iter().map(|(i, h)| (*i, h.as_str())).collect();
    let measurements = Measurements::new(&pairs).map_err(|e| anyhow!("{e}"))?;
    let admin = match (&a.admin_arn, a.document) {
        (Some(arn), true) => Some(Administrator::new(arn).map_err(|e| anyhow!("--admin-arn {e}"))?),
        _ => None,
    };
    for w in key_policy::warnings(admin.as_ref(), &role, &measurements) {
        eprintln!("bidctl: WARNING: {w}");
    }
    let out = match &admin {
        Some(admin) => key_policy::document(admin, &role, &measurements),
        None => key_policy::enclave_statement(&role, &measurements),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    eprintln!("bidctl: {}", key_policy::explanation(a.document));
    Ok(ExitCode::SUCCESS)
}
