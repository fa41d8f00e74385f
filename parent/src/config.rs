//! The parent's settings: command-line flags over environment over the TOML file, resolved and
//! validated in one pass that reports every problem at once, before any I/O besides reading
//! the file itself.

use bidding_core::auction::RevealPolicy;
use bidding_core::config::{AuctionConfig, BuyerSpec};
use bidding_core::endpoint::Endpoint;
use bidding_core::names::{AuctionId, BuyerName, KeyArn, Region};
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_BID_KEY: &str = "encrypted.csv";
pub const DEFAULT_OUTPUT_KEY: &str = "output.csv";
pub const DEFAULT_ENCLAVE_PORT: u32 = 5005;

const EXIT_CODES: &str = "\
SEALED AUCTIONS (the default):
  1. After the bid deadline: `bidding-parent manifest --config auction.toml` reads every
     buyer's file, writes manifest.json to the output bucket and prints its SHA-256 (H).
     Until then a run finds no manifest, says so in one line and exits 0 (a dry run checks
     everything else and says what it could not check yet).
  2. Each buyer checks the manifest and seals it (`bidctl seal --upload`), which writes
     <bid key>.seal next to their bid file. Until every seal is in, a run names each missing
     one and exits 3, having sent nothing to the enclave.
  3. `bidding-parent --config auction.toml` runs the auction on exactly that manifest. Once
     its verified result is in the output bucket, a run says so in one line, exits 0 and
     decrypts nothing (--rerun, or `rerun = true`, runs it again: same bytes). A different
     manifest needs every buyer's seal again.
  `sealed = false` runs without seals, for buyers who trust the operator: the result says so.
  Such an auction too is decided once: a run that finds its verified result exits 0 at once.

CONFIG FILE (--config, TOML):
  Every flag is also a key of the same name with underscores (auction_id, region, enclave,
  expected_pcr0, reveal, sealed, window, ...). Buyers are [[buyers]] tables with name, bucket,
  key (default encrypted.csv; give each auction its own, e.g. bids/<auction id>/encrypted.csv),
  seal_key (default <key>.seal) and key_arn; the output is an [output] table with bucket,
  prefix (default <auction_id>/), and key (default output.csv), attestation_key (default
  <key>.attestation) and manifest_key (default manifest.json), each under the prefix. Unknown
  keys are errors. The environment's AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) overrides
  s3_endpoint from the file, as for the AWS CLI; the log says so.

WRITTEN TO THE OUTPUT BUCKET, under <prefix> (only after the enclave's result is verified):
  <key stem>.json, <key>.config.json (unsealed only; sealed auctions have manifest.json),
  <key>.attestation, then <key> (output.csv) last. Each auction has its own prefix, so one
  auction never overwrites another's; `bidding-parent manifest` refuses to replace a manifest
  of another auction, or one whose result is already written.

EXIT CODES (one rule: a buyer's missing input is 3, every other S3 failure 5):
  0  success: output.csv and its attestation are written (or were already, verified), or a
     sealed auction has no manifest yet (nothing to do before the bid deadline)
  1  unexpected internal error
  2  configuration error (nothing was read or written)
  3  input error: a buyer's bid file or seal is not there or may not be read (NoSuchKey or
     AccessDenied on that object: on S3 the two look the same), a file changed since the
     manifest, a seal of another manifest, a malformed manifest or seal, or the enclave
     refused an input (nothing was written)
  4  enclave error: unreachable, refused, failed attestation or vanished mid-auction (nothing was written)
  5  S3 error: any other S3 failure, reading or writing: the manifest or the output bucket,
     refused credentials, throttling, no answer (nothing was written unless it says so)
  6  credentials error: none could be found, or KMS refused them inside the enclave
  7  another run holds the lock (nothing was done)
  8  --fail-on-set-aside and bids were set aside (the result was verified; nothing was written)
  130 interrupted (Ctrl-C, SIGTERM or SIGHUP); one line says what was written: nothing,
      unless the manifest or the results were being written (it says which; output.csv is
      written last, so a result is never half published)";

/// Runs one sealed-bid auction: bid files from S3, decisions from the enclave, results to S3.
///
/// Every setting can come from the TOML file (`--config`), from a flag, or for AWS settings
/// from the usual environment variables; flags win over the environment, which wins over the
/// file. The proof of concept's `bidding-parent <CID> <PORT>` still works with the rest in
/// the file.
#[derive(Debug, Parser, Default)]
#[command(version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Enclave CID (proof-of-concept form; same as --enclave vsock:CID:PORT).
    pub cid: Option<u32>,
    /// Enclave port (proof-of-concept form).
    pub port: Option<u32>,
    /// TOML configuration file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Auction id (part of every bid's KMS encryption context).
    #[arg(long)]
    pub auction_id: Option<String>,
    /// A buyer: NAME,s3://BUCKET[/KEY],KMS_KEY_ARN (KEY defaults to encrypted.csv). Repeat
    /// per buyer; replaces the file's buyers.
    #[arg(long = "buyer", value_name = "NAME,S3URL,KEY_ARN")]
    pub buyers: Vec<String>,
    /// Bucket for output.csv and its attestation.
    #[arg(long)]
    pub output_bucket: Option<String>,
    /// Prefix of every object the auction writes to the output bucket [default:
    /// <auction id>/]; "" for the bucket's top level.
    #[arg(long)]
    pub output_prefix: Option<String>,
    /// Object key of the output CSV, under the prefix [default: output.csv].
    #[arg(long)]
    pub output_key: Option<String>,
    /// Object key of the result attestation [default: <output key>.attestation].
    #[arg(long)]
    pub attestation_key: Option<String>,
    /// AWS region [env: AWS_REGION, AWS_DEFAULT_REGION; default: the buyers' keys' region].
    #[arg(long)]
    pub region: Option<String>,
    /// Named profile for the shared credentials files [env: AWS_PROFILE].
    #[arg(long)]
    pub profile: Option<String>,
    /// Assume this IAM role through STS before doing anything else.
    #[arg(long)]
    pub assume_role: Option<String>,
    /// Enclave endpoint: vsock:CID:PORT, or unix:PATH / tcp:HOST:PORT for local runs, or
    /// vsock-uds:PATH:PORT for a test VM's vsock behind vhost-device-vsock's Unix socket.
    #[arg(long)]
    pub enclave: Option<String>,
    /// Expected PCR0 (96 hex digits, never all zero). Required: the enclave must prove it
    /// before it receives credentials, and the result attestation must carry it. Only a dev
    /// run (--allow-dev-enclave) may leave it out.
    #[arg(long)]
    pub expected_pcr0: Option<String>,
    /// Run without the buyers' seals (they trust the operator); the result records it.
    #[arg(long)]
    pub unsealed: bool,
    /// Object key of the manifest, under the prefix [default: manifest.json].
    #[arg(long)]
    pub manifest_key: Option<String>,
    /// Accept a dev enclave (software NSM). Never for real auctions.
    #[arg(long)]
    pub allow_dev_enclave: bool,
    /// Also accept the unsigned attestation documents of QEMU's emulated NSM (its
    /// nitro-enclave machine), for tests of an enclave image under QEMU. Only with
    /// --allow-dev-enclave. Never for real auctions.
    #[arg(long)]
    pub accept_qemu_unsigned_attestation: bool,
    /// Attestation trust anchor (PEM) instead of the built-in AWS Nitro root G1.
    #[arg(long)]
    pub attestation_root: Option<PathBuf>,
    /// What the output reveals besides winners.
    #[arg(long, value_enum)]
    pub reveal: Option<RevealArg>,
    /// Accept bids encrypted without an encryption context (plain `aws kms encrypt`).
    #[arg(long)]
    pub allow_no_context: bool,
    /// File chunks in flight at once [default: 16].
    #[arg(long)]
    pub window: Option<usize>,
    /// Largest bid file read from S3, in bytes [default: 268435456].
    #[arg(long)]
    pub max_bid_file_bytes: Option<usize>,
    /// Seconds to wait for any one enclave answer [default: 120].
    #[arg(long)]
    pub enclave_timeout_secs: Option<u64>,
    /// Fetch fresh credentials this many seconds before the current ones expire, and send
    /// them to the enclave [default: 300].
    #[arg(long)]
    pub credentials_refresh_secs: Option<u64>,
    /// S3 endpoint URL [env: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL]; implies path-style.
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// Path-style S3 addressing even on AWS.
    #[arg(long)]
    pub s3_path_style: bool,
    /// Lock file that keeps two runs from overlapping [default: <tmp>/bidding-parent.lock].
    #[arg(long)]
    pub lock_file: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Check configuration, credentials and inputs without contacting the enclave.
    #[arg(long)]
    pub dry_run: bool,
    /// Run the auction even when its verified result is already in the output bucket (a
    /// sealed rerun gives the same bytes; it costs the KMS calls again).
    #[arg(long)]
    pub rerun: bool,
    /// Exit 8 without writing anything when any bid was set aside (after the enclave's result
    /// is verified; the set-aside lines are logged first).
    #[arg(long)]
    pub fail_on_set_aside: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RevealArg {
    None,
    WinningBid,
    SecondPrice,
}

impl From<RevealArg> for RevealPolicy {
    fn from(r: RevealArg) -> Self {
        match r {
            RevealArg::None => RevealPolicy::None,
            RevealArg::WinningBid => RevealPolicy::WinningBid,
            RevealArg::SecondPrice => RevealPolicy::SecondPrice,
        }
    }
}

/// The TOML file. Unknown keys are errors: a misspelt setting must not be silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub auction_id: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub assume_role: Option<String>,
    pub enclave: Option<String>,
    pub expected_pcr0: Option<String>,
    pub allow_dev_enclave: Option<bool>,
    pub accept_qemu_unsigned_attestation: Option<bool>,
    pub attestation_root: Option<PathBuf>,
    pub reveal: Option<RevealPolicy>,
    pub allow_no_context: Option<bool>,
    pub sealed: Option<bool>,
    pub window: Option<usize>,
    pub max_bid_file_bytes: Option<usize>,
    pub enclave_timeout_secs: Option<u64>,
    pub credentials_refresh_secs: Option<u64>,
    pub s3_endpoint: Option<String>,
    pub s3_path_style: Option<bool>,
    pub lock_file: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub fail_on_set_aside: Option<bool>,
    pub rerun: Option<bool>,
    pub output: Option<FileOutput>,
    #[serde(default)]
    pub buyers: Vec<FileBuyer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOutput {
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub key: Option<String>,
    pub attestation_key: Option<String>,
    pub manifest_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBuyer {
    pub name: String,
    pub bucket: String,
    pub key: Option<String>,
    pub seal_key: Option<String>,
    pub key_arn: String,
}

/// Where one buyer's bids (and seal) are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuyerInput {
    pub name: BuyerName,
    pub bucket: String,
    pub key: String,
    pub seal_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLocation {
    pub bucket: String,
    /// Every key below is under it (`<auction id>/` by default).
    pub prefix: String,
    pub key: String,
    pub attestation_key: String,
    /// The JSON rendering with reason codes.
    pub json_key: String,
    /// The canonical configuration the attestation commits to (unsealed auctions).
    pub config_key: String,
    /// The manifest (sealed auctions).
    pub manifest_key: String,
}

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub auction: AuctionConfig,
    pub inputs: Vec<BuyerInput>,
    pub output: OutputLocation,
    pub region: Region,
    pub profile: Option<String>,
    pub assume_role: Option<String>,
    pub enclave: Endpoint,
    pub expected_pcr0: Option<Vec<u8>>,
    pub allow_dev_enclave: bool,
    /// QEMU's unsigned attestation documents are accepted too (only with allow_dev_enclave).
    pub accept_qemu_unsigned_attestation: bool,
    pub sealed: bool,
    pub attestation_root: Option<PathBuf>,
    pub window: usize,
    pub max_bid_file_bytes: usize,
    pub enclave_timeout_secs: u64,
    pub credentials_refresh_secs: u64,
    pub s3_endpoint: Option<String>,
    pub s3_path_style: bool,
    pub lock_file: PathBuf,
    pub log_format: LogFormat,
    pub dry_run: bool,
    pub fail_on_set_aside: bool,
    pub rerun: bool,
    /// Where the S3 endpoint came from when the environment overrode the file's.
    pub s3_endpoint_note: Option<String>,
}

/// Reads the file named by `--config` (if any) and resolves everything. `env` is the process
/// environment, injected so tests need not touch it.
pub fn load(cli: Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, Vec<String>> {
    let file = match &cli.config {
        None => FileConfig::default(),
        Some(path) => read_file(path).map_err(|e| vec![e])?,
    };
    resolve(cli, file, env)
}

pub fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))
}

/// `config file auction.toml, line 3: unknown field `windw`, expected …`: one sentence with
/// the line, rather than the TOML parser's multi-line excerpt.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let line = e.span().map(|s| {
        let end = s.start.min(text.len());
        text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    });
    let message = e.message().trim().replace('\n', "; ");
    match line {
        Some(n) => format!("config file {}, line {n}: {message}", path.display()),
        None => format!("config file {}: {message}", path.display()),
    }
}

/// Merges flags, environment and file, and validates the result, collecting every error.
pub fn resolve(
    cli: Cli,
    file: FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, Vec<String>> {
    let mut errors = Vec::new();
    let env_nonempty = |k: &str| env(k).filter(|v| !v.is_empty());

    let auction_id = match cli.auction_id.or(file.auction_id) {
        Some(id) => AuctionId::new(id)
            .map_err(|e| errors.push(format!("auction_id: {e}")))
            .ok(),
        None => {
            errors.push(
                "auction_id: missing (set `auction_id` in the config file or --auction-id)".into(),
            );
            None
        }
    };

    // Buyers: flags replace the file's list.
    if cli.buyers.is_empty() && file.buyers.is_empty() {
        errors.push(
            "buyers: none configured (add [[buyers]] to the config file or --buyer flags)".into(),
        );
    }
    let mut specs = Vec::new();
    let mut inputs = Vec::new();
    if cli.buyers.is_empty() {
        for (i, b) in file.buyers.into_iter().enumerate() {
            let at = format!("buyers[{i}]");
            let key = b.key.unwrap_or_else(|| DEFAULT_BID_KEY.to_owned());
            let seal_key = b.seal_key.unwrap_or_else(|| format!("{key}.seal"));
            push_buyer(
                &at,
                &b.name,
                &b.bucket,
                &key,
                &seal_key,
                &b.key_arn,
                &mut specs,
                &mut inputs,
                &mut errors,
            );
        }
    } else {
        for (i, flag) in cli.buyers.iter().enumerate() {
            let at = format!("--buyer #{}", i + 1);
            match parse_buyer_flag(flag) {
                Ok((name, bucket, key, arn)) => push_buyer(
                    &at,
                    &name,
                    &bucket,
                    &key,
                    &format!("{key}.seal"),
                    &arn,
                    &mut specs,
                    &mut inputs,
                    &mut errors,
                ),
                Err(e) => errors.push(format!("{at}: {e}")),
            }
        }
    }
    for (i, a) in inputs.iter().enumerate() {
        if inputs[..i]
            .iter()
            .any(|b| b.bucket == a.bucket && b.key == a.key)
        {
            errors.push(format!(
                "buyers `{}`: s3://{}/{} is also another buyer's bid file",
                a.name, a.bucket, a.key
            ));
        }
    }

    let reveal = cli
        .reveal
        .map(RevealPolicy::from)
        .or(file.reveal)
        .unwrap_or_default();
    let allow_no_context = cli.allow_no_context || file.allow_no_context.unwrap_or(false);
    let auction = match (
        &auction_id,
        specs.len() == inputs.len() && !specs.is_empty(),
    ) {
        (Some(id), true) => AuctionConfig::new(id.clone(), specs.clone(), reveal, allow_no_context)
            .map_err(|e| errors.push(format!("buyers: {e}")))
            .ok(),
        _ => None,
    };

    let region_text = cli
        .region
        .or_else(|| env_nonempty("AWS_REGION"))
        .or_else(|| env_nonempty("AWS_DEFAULT_REGION"))
        .or(file.region)
        .or_else(|| specs.first().map(|s| s.key_arn.region().to_owned()));
    let region = match region_text {
        Some(r) => Region::new(r)
            .map_err(|e| errors.push(format!("region: {e}")))
            .ok(),
        None => {
            errors.push(
                "region: missing (--region, AWS_REGION or `region` in the config file)".into(),
            );
            None
        }
    };
    if let Some(region) = &region {
        for s in &specs {
            if s.key_arn.region() != region.as_str() {
                errors.push(format!(
                    "buyers `{}`: key {} is in {}, but the auction runs in {region}; the enclave calls one regional KMS endpoint",
                    s.name,
                    s.key_arn,
                    s.key_arn.region()
                ));
            }
        }
    }

    let output = {
        let out = file.output.unwrap_or_default();
        let bucket = cli.output_bucket.or(out.bucket);
        let prefix = cli.output_prefix.or(out.prefix).unwrap_or_else(|| {
            auction_id
                .as_ref()
                .map(|id| format!("{id}/"))
                .unwrap_or_default()
        });
        if prefix.starts_with('/')
            || prefix
                .split('/')
                .rev()
                .skip(1)
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            errors.push(format!(
                "output prefix `{prefix}`: must not start with /, or hold an empty, . or .. part"
            ));
        }
        let key = cli
            .output_key
            .or(out.key)
            .unwrap_or_else(|| DEFAULT_OUTPUT_KEY.to_owned());
        let attestation_key = cli
            .attestation_key
            .or(out.attestation_key)
            .unwrap_or_else(|| format!("{key}.attestation"));
        if key.is_empty() {
            errors.push("output key: empty".into());
        }
        let stem = key.strip_suffix(".csv").unwrap_or(&key).to_owned();
        let manifest_key = cli
            .manifest_key
            .or(out.manifest_key)
            .unwrap_or_else(|| "manifest.json".to_owned());
        if manifest_key.is_empty() {
            errors.push("manifest key: empty".into());
        }
        match bucket {
            Some(bucket) if valid_bucket(&bucket) => Some(OutputLocation {
                bucket,
                json_key: format!("{prefix}{stem}.json"),
                config_key: format!("{prefix}{key}.config.json"),
                manifest_key: format!("{prefix}{manifest_key}"),
                key: format!("{prefix}{key}"),
                attestation_key: format!("{prefix}{attestation_key}"),
                prefix,
            }),
            Some(bucket) => {
                errors.push(format!(
                    "output bucket `{bucket}`: not a valid S3 bucket name"
                ));
                None
            }
            None => {
                errors.push("output bucket: missing ([output] bucket in the config file or --output-bucket)".into());
                None
            }
        }
    };

    let enclave = match (cli.cid, cli.port, cli.enclave.or(file.enclave)) {
        (Some(_), _, Some(_)) => {
            errors.push("enclave: give either CID PORT or --enclave, not both".into());
            None
        }
        (Some(cid), port, None) => Some(Endpoint::Vsock {
            cid,
            port: port.unwrap_or(DEFAULT_ENCLAVE_PORT),
        }),
        (None, _, Some(text)) => text
            .parse::<Endpoint>()
            .map_err(|e| errors.push(format!("enclave: {e}")))
            .ok(),
        (None, _, None) => {
            errors.push(
                "enclave: missing (CID PORT, --enclave or `enclave` in the config file)".into(),
            );
            None
        }
    };

    let allow_dev_enclave = cli.allow_dev_enclave || file.allow_dev_enclave.unwrap_or(false);
    let accept_qemu_unsigned_attestation = cli.accept_qemu_unsigned_attestation
        || file.accept_qemu_unsigned_attestation.unwrap_or(false);
    if accept_qemu_unsigned_attestation && !allow_dev_enclave {
        errors.push("accept_qemu_unsigned_attestation: only with --allow-dev-enclave (QEMU's documents are unsigned: a test of an image under QEMU, never a real auction)".into());
    }
    let expected_pcr0 = cli
        .expected_pcr0
        .or(file.expected_pcr0)
        .and_then(|hex_text| match hex::decode(hex_text.trim()) {
            Ok(v) if v.len() == 48 && v.iter().all(|&b| b == 0) => {
                errors.push("expected_pcr0: all zero is what a debug-mode enclave reports; its memory and console are open to the operator, so it is never accepted".into());
                None
            }
            Ok(v) if v.len() == 48 => Some(v),
            _ => {
                errors.push("expected_pcr0: must be 96 hex digits (a SHA-384), as `nitro-cli describe-eif` prints it".into());
                None
            }
        });
    if expected_pcr0.is_none()
        && !allow_dev_enclave
        && !errors.iter().any(|e| e.starts_with("expected_pcr0"))
    {
        errors.push("expected_pcr0: missing (the enclave image's PCR0 from `nitro-cli describe-eif` or `bidctl pcr`); only a dev run with --allow-dev-enclave may leave it out".into());
    }
    let sealed = !cli.unsealed && file.sealed.unwrap_or(true);
    if sealed && allow_no_context {
        errors.push("allow_no_context: a sealed auction takes only bids whose encryption context names it with rules=sealed (a bid without a context opens under every image its key ever trusted); allow_no_context is for unsealed auctions (sealed = false) on the unsealed image".into());
    }

    let window = cli.window.or(file.window).unwrap_or(16);
    if !(1..=4096).contains(&window) {
        errors.push(format!("window: {window} is outside 1..=4096"));
    }
    let max_bid_file_bytes = cli
        .max_bid_file_bytes
        .or(file.max_bid_file_bytes)
        .unwrap_or(256 * 1024 * 1024);
    if max_bid_file_bytes == 0 {
        errors.push("max_bid_file_bytes: must be positive".into());
    }
    let enclave_timeout_secs = cli
        .enclave_timeout_secs
        .or(file.enclave_timeout_secs)
        .unwrap_or(120);
    if enclave_timeout_secs == 0 {
        errors.push("enclave_timeout_secs: must be positive".into());
    }
    let env_endpoint = env_nonempty("AWS_ENDPOINT_URL_S3")
        .map(|e| ("AWS_ENDPOINT_URL_S3", e))
        .or_else(|| env_nonempty("AWS_ENDPOINT_URL").map(|e| ("AWS_ENDPOINT_URL", e)));
    let s3_endpoint_note = match (&cli.s3_endpoint, &env_endpoint, &file.s3_endpoint) {
        (None, Some((var, e)), Some(f)) if e != f => Some(format!(
            "S3 endpoint {e} from {var}, which overrides s3_endpoint = \"{f}\" in the config file"
        )),
        _ => None,
    };
    let s3_endpoint = cli
        .s3_endpoint
        .or(env_endpoint.map(|(_, e)| e))
        .or(file.s3_endpoint);
    if let Some(e) = &s3_endpoint
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        errors.push(format!(
            "s3 endpoint `{e}`: must start with http:// or https://"
        ));
    }
    let attestation_root = cli.attestation_root.or(file.attestation_root);
    if let Some(p) = &attestation_root
        && !p.is_file()
    {
        errors.push(format!("attestation_root {}: no such file", p.display()));
    }
    if let Some(arn) = cli.assume_role.as_ref().or(file.assume_role.as_ref())
        && !(arn.starts_with("arn:") && arn.contains(":role/"))
    {
        errors.push(format!("assume_role `{arn}`: not an IAM role ARN"));
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Settings {
        auction: auction.expect("no errors means it was built"),
        inputs,
        output: output.expect("no errors"),
        region: region.expect("no errors"),
        profile: cli
            .profile
            .or_else(|| env_nonempty("AWS_PROFILE"))
            .or(file.profile),
        assume_role: cli.assume_role.or(file.assume_role),
        enclave: enclave.expect("no errors"),
        expected_pcr0,
        allow_dev_enclave,
        accept_qemu_unsigned_attestation,
        sealed,
        attestation_root,
        window,
        max_bid_file_bytes,
        enclave_timeout_secs,
        credentials_refresh_secs: cli
            .credentials_refresh_secs
            .or(file.credentials_refresh_secs)
            .unwrap_or(300),
        s3_path_style: cli.s3_path_style
            || file.s3_path_style.unwrap_or(false)
            || s3_endpoint.is_some(),
        s3_endpoint,
        lock_file: cli
            .lock_file
            .or(file.lock_file)
            .unwrap_or_else(|| std::env::temp_dir().join("bidding-parent.lock")),
        log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
        dry_run: cli.dry_run,
        fail_on_set_aside: cli.fail_on_set_aside || file.fail_on_set_aside.unwrap_or(false),
        rerun: cli.rerun || file.rerun.unwrap_or(false),
        s3_endpoint_note,
    })
}

/// Just the auction configuration (id, buyers and keys, reveal policy, context rule) from a
/// config file, for verifying a result against the configuration it claims.
pub fn auction_from_file(path: &Path) -> Result<AuctionConfig, Vec<String>> {
    let file = read_file(path).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let id = match file.auction_id {
        Some(id) => AuctionId::new(id)
            .map_err(|e| errors.push(format!("auction_id: {e}")))
            .ok(),
        None => {
            errors.push("auction_id: missing".into());
            None
        }
    };
    let mut buyers = Vec::new();
    for (i, b) in file.buyers.iter().enumerate() {
        match (BuyerName::new(&b.name), KeyArn::new(&b.key_arn)) {
            (Ok(name), Ok(key_arn)) => buyers.push(BuyerSpec { name, key_arn }),
            (a, b) => {
                for e in [a.err(), b.err()].into_iter().flatten() {
                    errors.push(format!("buyers[{i}]: {e}"));
                }
            }
        }
    }
    let Some(id) = id.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    AuctionConfig::new(
        id,
        buyers,
        file.reveal.unwrap_or_default(),
        file.allow_no_context.unwrap_or(false),
    )
    .map_err(|e| vec![format!("buyers: {e}")])
}

#[allow(clippy::too_many_arguments)]
fn push_buyer(
    at: &str,
    name: &str,
    bucket: &str,
    key: &str,
    seal_key: &str,
    arn: &str,
    specs: &mut Vec<BuyerSpec>,
    inputs: &mut Vec<BuyerInput>,
    errors: &mut Vec<String>,
) {
    let name = BuyerName::new(name).map_err(|e| errors.push(format!("{at}: {e}")));
    let arn = KeyArn::new(arn).map_err(|e| errors.push(format!("{at}: {e}")));
    if !valid_bucket(bucket) {
        errors.push(format!(
            "{at}: bucket `{bucket}` is not a valid S3 bucket name"
        ));
    }
    if key.is_empty() {
        errors.push(format!("{at}: empty object key"));
    }
    if let (Ok(name), Ok(key_arn)) = (name, arn) {
        inputs.push(BuyerInput {
            name: name.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            seal_key: seal_key.to_owned(),
        });
        specs.push(BuyerSpec { name, key_arn });
    }
}

/// `NAME,s3://BUCKET[/KEY],ARN`.
fn parse_buyer_flag(s: &str) -> Result<(String, String, String, String), String> {
    let mut parts = s.splitn(3, ',');
    let (Some(name), Some(url), Some(arn)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("`{s}` is not NAME,s3://BUCKET[/KEY],KMS_KEY_ARN"));
    };
    let (bucket, key) = parse_s3_url(url.trim())?;
    Ok((name.trim().to_owned(), bucket, key, arn.trim().to_owned()))
}

/// `s3://BUCKET[/KEY]`, the key defaulting to `encrypted.csv`.
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("`{url}` is not an s3:// URL"))?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let key = if key.is_empty() { DEFAULT_BID_KEY } else { key };
    Ok((bucket.to_owned(), key.to_owned()))
}

/// S3's bucket naming rules (the common subset of what AWS and local servers accept).
pub fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
        && !b.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN1: &str = "arn:aws:kms:us-east-1:111122223333:key/k1";
    const ARN2: &str = "arn:aws:kms:us-east-1:111122223333:key/k2";
    const PCR: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    fn good_toml() -> String {
        format!(
            r#"
auction_id = "a-1"
enclave = "vsock:16:5005"
expected_pcr0 = "{PCR}"
[output]
bucket = "results"
[[buyers]]
name = "Buyer1"
bucket = "buyer1-bids"
key_arn = "{ARN1}"
[[buyers]]
name = "Buyer2"
bucket = "buyer2-bids"
key = "2026/encrypted.csv"
key_arn = "{ARN2}"
"#
        )
    }

    #[test]
    fn resolves_a_complete_file() {
        let s = resolve(Cli::default(), file(&good_toml()), &no_env).unwrap();
        assert_eq!(s.auction.auction_id().as_str(), "a-1");
        assert_eq!(s.region.as_str(), "us-east-1");
        assert_eq!(s.inputs[0].key, "encrypted.csv");
        assert_eq!(s.inputs[1].key, "2026/encrypted.csv");
        // Each auction under its own prefix, so the next auction overwrites nothing.
        assert_eq!(s.output.prefix, "a-1/");
        assert_eq!(s.output.key, "a-1/output.csv");
        assert_eq!(s.output.attestation_key, "a-1/output.csv.attestation");
        assert_eq!(s.output.json_key, "a-1/output.json");
        assert_eq!(s.output.manifest_key, "a-1/manifest.json");
        assert!(!s.rerun);
        let mut flat = file(&good_toml());
        flat.output.as_mut().unwrap().prefix = Some(String::new());
        flat.rerun = Some(true);
        let f = resolve(Cli::default(), flat, &no_env).unwrap();
        assert_eq!((f.output.key.as_str(), f.rerun), ("output.csv", true));
        let mut bad = file(&good_toml());
        bad.output.as_mut().unwrap().prefix = Some("../x/".into());
        assert!(resolve(Cli::default(), bad, &no_env).is_err());
        // The environment's S3 endpoint overrides the file's, and says so.
        let mut with = file(&good_toml());
        with.s3_endpoint = Some("http://127.0.0.1:1".into());
        let env = |k: &str| (k == "AWS_ENDPOINT_URL_S3").then(|| "http://127.0.0.1:2".to_owned());
        let e = resolve(Cli::default(), with, &env).unwrap();
        assert_eq!(e.s3_endpoint.as_deref(), Some("http://127.0.0.1:2"));
        assert!(
            e.s3_endpoint_note
                .as_deref()
                .is_some_and(|n| n.contains("AWS_ENDPOINT_URL_S3") && n.contains("127.0.0.1:1")),
            "{:?}",
            e.s3_endpoint_note
        );
        assert_eq!(
            s.enclave,
            Endpoint::Vsock {
                cid: 16,
                port: 5005
            }
        );
        assert_eq!(s.window, 16);
        assert!(!s.s3_path_style);
        assert!(s.sealed);
        assert_eq!(s.inputs[0].seal_key, "encrypted.csv.seal");
        assert_eq!(s.output.manifest_key, "a-1/manifest.json");
    }

    #[test]
    fn proof_of_concept_positional_form_and_flags_win() {
        let cli = Cli::try_parse_from([
            "bidding-parent",
            "17",
            "5006",
            "--window",
            "8",
            "--reveal",
            "second-price",
        ])
        .unwrap();
        let mut toml = good_toml();
        toml = toml.replace("enclave = \"vsock:16:5005\"\n", "");
        let s = resolve(cli, file(&toml), &|k| {
            (k == "AWS_ENDPOINT_URL").then(|| "http://127.0.0.1:9000".to_owned())
        })
        .unwrap();
        assert_eq!(
            s.enclave,
            Endpoint::Vsock {
                cid: 17,
                port: 5006
            }
        );
        assert_eq!(s.window, 8);
        assert_eq!(s.auction.reveal(), RevealPolicy::SecondPrice);
        assert_eq!(s.s3_endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(s.s3_path_style);
    }

    #[test]
    fn buyer_flags() {
        let cli = Cli::try_parse_from([
            "p",
            "--auction-id=x",
            "--enclave=unix:/tmp/e.sock",
            "--output-bucket=out",
            "--unsealed",
            &format!("--expected-pcr0={PCR}"),
            &format!("--buyer=A,s3://bucket-a,{ARN1}"),
            &format!("--buyer=B,s3://bucket-b/dir/bids.csv,{ARN2}"),
        ])
        .unwrap();
        let s = resolve(cli, FileConfig::default(), &no_env).unwrap();
        assert_eq!(s.inputs[0].key, "encrypted.csv");
        assert_eq!(s.inputs[1].bucket, "bucket-b");
        assert_eq!(s.inputs[1].key, "dir/bids.csv");
        assert_eq!(s.auction.buyers()[1].key_arn.as_str(), ARN2);
        assert!(!s.sealed);
    }

    #[test]
    fn expected_pcr0_is_required_and_never_all_zero() {
        let toml = good_toml().replace(&format!("expected_pcr0 = \"{PCR}\"\n"), "");
        let errors = resolve(Cli::default(), file(&toml), &no_env).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("expected_pcr0: missing")),
            "{errors:?}"
        );
        let dev = Cli::try_parse_from(["p", "--allow-dev-enclave"]).unwrap();
        assert!(resolve(dev, file(&toml), &no_env).is_ok());
        let zero = good_toml().replace(PCR, &"0".repeat(96));
        let errors = resolve(Cli::default(), file(&zero), &no_env).unwrap_err();
        assert!(errors.iter().any(|e| e.contains("all zero")), "{errors:?}");
    }

    #[test]
    fn qemu_unsigned_attestation_only_in_a_dev_run() {
        let cli = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("p").chain(args.iter().copied())).unwrap()
        };
        let alone = resolve(
            cli(&["--accept-qemu-unsigned-attestation"]),
            file(&good_toml()),
            &no_env,
        )
        .unwrap_err();
        assert!(
            alone.iter().any(|e| e
                .starts_with("accept_qemu_unsigned_attestation: only with --allow-dev-enclave")),
            "{alone:?}"
        );
        let in_file = format!("accept_qemu_unsigned_attestation = true\n{}", good_toml());
        assert!(resolve(Cli::default(), file(&in_file), &no_env).is_err());
        let s = resolve(
            cli(&["--accept-qemu-unsigned-attestation", "--allow-dev-enclave"]),
            file(&good_toml()),
            &no_env,
        )
        .unwrap();
        assert!(s.accept_qemu_unsigned_attestation && s.allow_dev_enclave);
        let s = resolve(cli(&["--allow-dev-enclave"]), file(&in_file), &no_env).unwrap();
        assert!(s.accept_qemu_unsigned_attestation);
        assert!(
            !resolve(Cli::default(), file(&good_toml()), &no_env)
                .unwrap()
                .accept_qemu_unsigned_attestation
        );
    }

    #[test]
    fn reports_every_problem_at_once() {
        let toml = format!(
            r#"
window = 0
expected_pcr0 = "abc"
[output]
bucket = "Bad_Bucket"
[[buyers]]
name = "Buyer 1"
bucket = "b1"
key_arn = "alias/x"
[[buyers]]
name = "Buyer2"
bucket = "buyer2"
key_arn = "{ARN1}"
[[buyers]]
name = "Buyer3"
bucket = "buyer3"
key_arn = "{ARN1}"
"#
        );
        let errors = resolve(Cli::default(), file(&toml), &no_env).unwrap_err();
        let all = errors.join("\n");
        for needle in [
            "auction_id: missing",
            "buyers[0]: buyer name `Buyer 1`",
            "buyers[0]: KMS key ARN `alias/x`",
            "buyers[0]: bucket `b1` is not a valid S3 bucket name",
            "output bucket `Bad_Bucket`",
            "enclave: missing",
            "expected_pcr0: must be 96 hex digits",
            "window: 0 is outside",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn shared_keys_and_regions() {
        let toml = good_toml().replace("key/k2", "key/k1");
        let e = resolve(Cli::default(), file(&toml), &no_env)
            .unwrap_err()
            .join("\n");
        assert!(e.contains("share the KMS key"), "{e}");
        let e = resolve(Cli::default(), file(&good_toml()), &|k| {
            (k == "AWS_REGION").then(|| "eu-west-1".into())
        })
        .unwrap_err()
        .join("\n");
        assert!(
            e.contains("is in us-east-1, but the auction runs in eu-west-1"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let e = toml::from_str::<FileConfig>("auction_idd = 'x'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `auction_idd`"), "{e}");
    }
}
