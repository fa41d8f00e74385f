//! `bidctl dev-stack`: the local stand-ins for AWS and a dev enclave, kept running for a user
//! (or a script) to drive by hand with the AWS CLI, `bidctl` and the parent, the way buyers and
//! the operator work on AWS.
//!
//! It stands on [`Stack`]: a local S3 (s3s-fs over TLS, SigV4 checked on every request, bucket
//! policies enforced across accounts), the KMS emulator (key policies across accounts; it
//! trusts the software NSM's dev root, so Recipient requests from the dev enclave verify with no
//! `--attestation-root` to find), and one dev enclave (`bidctl __enclave`). One AWS account per
//! role: the operator's, and each buyer's own. Each buyer gets credentials, a bucket the
//! operator's role may read and a key whose policy (`bidctl key-policy --document`'s) lets only
//! that role, for an enclave attesting to the dev enclave's PCR0, decrypt; the auction's buyers
//! may read its manifest and results in the output bucket. With a kept directory the
//! credentials and keys are the same on every run (`dev-stack.json`), and so are the auction
//! id, reveal policy, `allow_no_context` and any `key_arn` edited into `auction.toml`, unless a
//! flag says otherwise; the ports are new each run, so the environment and `auction.toml` are
//! written again each time.
//!
//! One image, one rule set (DESIGN §2): the dev enclave is the sealed image's unless
//! `--unsealed` asks for the unsealed one, which has a PCR0 of its own; a buyer's keys for the
//! two are separate keys, each trusting only its image, so a key that made sealed bids never
//! trusts the unsealed image.
//!
//! More accounts fit the same way: a buyer is a name, an account derived from it, credentials,
//! a bucket and keys; another enclave is another `start_enclave` with its own PCR0.

use crate::kms_emulator;
use crate::stack::{
    ACCOUNT, Accounts, EnclaveProcess, OPERATOR_ROLE, OPERATOR_SESSION, OUTPUT_BUCKET, REGION,
    Stack, StackOptions, buyer_arn, buyer_key_policy, dev_pcr0, new_credentials,
};
use anyhow::{Context, Result, anyhow, bail};
use bidding_core::auction::RevealPolicy;
use bidding_core::config::Mode;
use bidding_core::credentials::{Credentials, Secret};
use bidding_core::names::{AuctionId, BuyerName, KeyArn, Region};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// What a kept directory remembers between runs (mode 0600): the emulators' dev credentials,
/// the buyers' keys and the PCR0 their policies name.
pub const STATE_FILE: &str = "dev-stack.json";
/// The running dev-stack's process id (for `bidctl dev-stack restart-enclave`).
pub const PID_FILE: &str = "dev-stack.pid";
/// The running dev enclave's process id, written anew at each (re)start.
pub const ENCLAVE_PID_FILE: &str = "enclave.pid";
pub const CONFIG_FILE: &str = "auction.toml";
const ENCLAVE: &str = "enclave";
const DEFAULT_BUYERS: [&str; 2] = ["Buyer1", "Buyer2"];

pub struct Options {
    pub dir: PathBuf,
    /// The directory is a scratch one, removed at stop: say so wherever a path in it is shown.
    pub temporary: bool,
    /// Buyers; empty: those of the kept directory, or Buyer1 and Buyer2.
    pub buyers: Vec<BuyerName>,
    /// `None`: the kept `auction.toml`'s, else `dev-auction`.
    pub auction: Option<AuctionId>,
    /// `None`: the kept `auction.toml`'s, else `none`.
    pub reveal: Option<RevealPolicy>,
    /// `None`: the kept `auction.toml`'s, else false. Unsealed only.
    pub allow_no_context: Option<bool>,
    /// The dev enclave's rule set: the sealed image's, or (asked for) the unsealed one's.
    pub rules: Mode,
    /// The executable that runs the dev enclave (bidctl itself); its SHA-384 is the PCR0.
    pub exe: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    /// The sealed dev enclave's PCR0 that the buyers' sealed keys name, once it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pcr0: Option<String>,
    /// The unsealed dev enclave's, once it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unsealed_pcr0: Option<String>,
    operator: SavedCredentials,
    buyers: Vec<SavedBuyer>,
}

#[derive(Serialize, Deserialize)]
struct SavedCredentials {
    access_key_id: String,
    secret_access_key: String,
}

#[derive(Serialize, Deserialize)]
struct SavedBuyer {
    name: BuyerName,
    #[serde(flatten)]
    credentials: SavedCredentials,
    /// The buyer's key for the sealed image, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_arn: Option<KeyArn>,
    /// The buyer's key for the unsealed image, once made: a separate key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unsealed_key_arn: Option<KeyArn>,
}

impl SavedBuyer {
    fn key(&self, rules: Mode) -> Option<&KeyArn> {
        match rules {
            Mode::Sealed => self.key_arn.as_ref(),
            Mode::Unsealed => self.unsealed_key_arn.as_ref(),
        }
    }
}

impl Saved {
    fn pcr0(&self, rules: Mode) -> Option<&str> {
        match rules {
            Mode::Sealed => self.pcr0.as_deref(),
            Mode::Unsealed => self.unsealed_pcr0.as_deref(),
        }
    }
}

impl SavedCredentials {
    fn of(c: &Credentials) -> SavedCredentials {
        SavedCredentials {
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.expose().to_owned(),
        }
    }
    fn credentials(&self) -> Credentials {
        Credentials {
            access_key_id: self.access_key_id.clone(),
            secret_access_key: Secret::new(self.secret_access_key.clone()),
            session_token: None,
            expiration: None,
            region: Region::new(REGION).expect("valid region"),
        }
    }
}

pub struct DevStack {
    pub stack: Stack,
    pub enclave: EnclaveProcess,
    pub config_path: PathBuf,
    opts: Options,
    /// What happened at start that the user should know (policies updated, files moved).
    notes: Vec<String>,
    /// The enclave's exit has been reported.
    exit_reported: bool,
}

impl DevStack {
    pub fn start(mut opts: Options) -> Result<DevStack> {
        check_buyer_names(&opts.buyers)?;
        let rules = opts.rules;
        if rules == Mode::Sealed && opts.allow_no_context == Some(true) {
            bail!(
                "--allow-no-context needs --unsealed: a sealed auction takes only bids made with rules=sealed in their encryption context (a bid without one opens under every image its key ever trusted)"
            );
        }
        let dir = opts.dir.clone();
        let dir = &dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Some(pid) = running_dev_stack(dir) {
            bail!(
                "a dev-stack (PID {pid}) already runs on {}: use it, or stop it first (kill -INT {pid})",
                dir.display()
            );
        }
        let mut notes = Vec::new();
        if let Some(pid) = stop_leftover_enclave(dir) {
            notes.push(format!(
                "a dev enclave (PID {pid}) of an earlier dev-stack that did not stop cleanly was still running; it was stopped"
            ));
        }
        // What the operator set last time, unless a flag says otherwise now.
        let kept_toml = kept_config(&dir.join(CONFIG_FILE));
        let kept_terms = kept_toml.as_ref().map(|k| &k.terms);
        if opts.auction.is_none() {
            opts.auction = kept_terms.and_then(|t| t.auction.clone());
        }
        if opts.reveal.is_none() {
            opts.reveal = kept_terms.and_then(|t| t.reveal);
        }
        if opts.allow_no_context.is_none() {
            opts.allow_no_context = kept_terms.and_then(|t| t.allow_no_context);
            if rules == Mode::Sealed && opts.allow_no_context == Some(true) {
                opts.allow_no_context = Some(false);
                notes.push(format!(
                    "the kept {CONFIG_FILE} allowed bids without a context; a sealed auction takes none, so this one does not (dev-stack --unsealed runs the unsealed image)"
                ));
            }
        }
        let auction = opts
            .auction
            .clone()
            .unwrap_or_else(|| AuctionId::new("dev-auction").expect("valid"));
        let pcr0 = dev_pcr0(&opts.exe, rules)?;
        let state_path = dir.join(STATE_FILE);
        let saved: Option<Saved> = match std::fs::read(&state_path) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not a dev-stack state file (move it away, or use another --dir)",
                    state_path.display()
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(anyhow!("reading {}: {e}", state_path.display())),
        };
        let kms_dir = dir.join("kms");
        let names: Vec<BuyerName> = if !opts.buyers.is_empty() {
            opts.buyers.clone()
        } else if let Some(s) = &saved {
            s.buyers.iter().map(|b| b.name.clone()).collect()
        } else {
            DEFAULT_BUYERS
                .iter()
                .map(|n| BuyerName::new(*n).expect("valid"))
                .collect()
        };
        let mut accounts = match &saved {
            Some(s) => Accounts {
                operator: s.operator.credentials(),
                buyers: Vec::new(),
            },
            None => Accounts {
                operator: new_credentials()?,
                buyers: Vec::new(),
            },
        };
        let pcr0_hex = hex::encode(pcr0);
        // A buyer's saved account, and its key for this rule set while the emulator still has
        // it (else the key is made again).
        let saved_buyer = |name: &BuyerName| {
            saved
                .as_ref()
                .and_then(|s| s.buyers.iter().find(|b| &b.name == name))
        };
        let kept_key = |name: &BuyerName| {
            saved_buyer(name)
                .and_then(|b| b.key(rules))
                .filter(|k| kms_emulator::find_key(&kms_dir, k.as_str()).is_ok())
        };
        if let Some(s) = saved
            .as_ref()
            .filter(|s| s.pcr0(rules).is_some_and(|p| p != pcr0_hex))
        {
            // bidctl was rebuilt: the dev enclave has a new PCR0. A buyer would put the new
            // policy on their key; the stack does it for its own keys of this rule set.
            let mut repinned = Vec::new();
            for b in &s.buyers {
                let Some(key) = kept_key(&b.name) else {
                    continue;
                };
                kms_emulator::set_policy(
                    &kms_dir,
                    key.as_str(),
                    &buyer_key_policy(&buyer_arn(&b.name), &pcr0),
                )
                .map_err(|e| anyhow!(e))?;
                repinned.push(b.name.to_string());
            }
            if !repinned.is_empty() {
                notes.push(format!(
                    "bidctl changed since the last run, and so did the dev enclave's PCR0: the stack's keys ({}) now name the new one. Keys you made yourself need `aws kms put-key-policy` with the new PCR0.",
                    repinned.join(", ")
                ));
            }
        }
        for name in names {
            let credentials = match saved_buyer(&name) {
                Some(b) => b.credentials.credentials(),
                None => new_credentials()?,
            };
            let key = kept_key(&name).cloned();
            accounts.buyers.push((name, credentials, key));
        }
        let mut stack = Stack::start_with(
            dir,
            accounts,
            &opts.exe,
            StackOptions {
                enforce_policies: true,
                rules,
                ..StackOptions::default()
            },
        )?;
        stack.enclave_dies_with_parent = true;
        stack.share_auction(&auction)?;
        // This rule set's PCR0 and keys are recorded; the other's stay as they were.
        let old_saved = saved;
        let other = |name: &BuyerName| {
            old_saved
                .as_ref()
                .and_then(|s| s.buyers.iter().find(|b| &b.name == name))
        };
        let mut saved = Saved {
            pcr0: match rules {
                Mode::Sealed => Some(pcr0_hex.clone()),
                Mode::Unsealed => old_saved.as_ref().and_then(|s| s.pcr0.clone()),
            },
            unsealed_pcr0: match rules {
                Mode::Unsealed => Some(pcr0_hex),
                Mode::Sealed => old_saved.as_ref().and_then(|s| s.unsealed_pcr0.clone()),
            },
            operator: SavedCredentials::of(&stack.operator),
            buyers: stack
                .buyers
                .iter()
                .map(|b| {
                    let before = other(&b.name);
                    let (sealed, unsealed) = match rules {
                        Mode::Sealed => (
                            Some(b.key.clone()),
                            before.and_then(|o| o.unsealed_key_arn.clone()),
                        ),
                        Mode::Unsealed => {
                            (before.and_then(|o| o.key_arn.clone()), Some(b.key.clone()))
                        }
                    };
                    SavedBuyer {
                        name: b.name.clone(),
                        credentials: SavedCredentials::of(&b.credentials),
                        key_arn: sealed,
                        unsealed_key_arn: unsealed,
                    }
                })
                .collect(),
        };
        // Buyers of earlier runs that are not in this one keep their keys for the next.
        if let Some(old) = old_saved {
            for b in old.buyers {
                if !saved.buyers.iter().any(|s| s.name == b.name) {
                    saved.buyers.push(b);
                }
            }
        }
        kms_emulator::state::write_atomic(&state_path, &serde_json::to_vec_pretty(&saved)?, 0o600)
            .map_err(|e| anyhow!(e))?;

        let enclave = stack.start_enclave(&opts.exe, ENCLAVE, &[])?;
        write_pid(&dir.join(ENCLAVE_PID_FILE), enclave.child.id())?;
        let config_path = dir.join(CONFIG_FILE);
        let mut config = stack.parent_config_mode(
            &auction,
            &enclave.endpoint,
            &opts.reveal.unwrap_or_default().to_string(),
            opts.allow_no_context.unwrap_or(false),
            rules == Mode::Sealed,
        );
        // A key a buyer made and the operator put in auction.toml stays there, for the image it
        // was made for.
        let same_image = kept_toml.iter().filter(|k| k.rules == rules);
        for (name, arn) in same_image.flat_map(|k| &k.key_arns) {
            if let Some(b) = stack.buyers.iter().find(|b| b.name.as_str() == name)
                && b.key.as_str() != arn
            {
                config = config.replace(
                    &format!("key_arn = \"{}\"", b.key),
                    &format!("key_arn = \"{arn}\""),
                );
                notes.push(format!(
                    "{name}'s key_arn in {CONFIG_FILE} is the one you set, {arn}, not the stack's"
                ));
            }
        }
        if let Ok(old) = std::fs::read_to_string(&config_path)
            && old != config
        {
            let previous = dir.join(format!("{CONFIG_FILE}.previous"));
            std::fs::rename(&config_path, &previous)
                .with_context(|| format!("moving {}", config_path.display()))?;
            notes.push(format!(
                "the ports change on every run, so {CONFIG_FILE} was written anew (auction id, reveal policy, allow_no_context and key_arn kept); the last one is {}",
                previous.display()
            ));
        }
        std::fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        opts.auction = Some(auction);
        let ds = DevStack {
            stack,
            enclave,
            config_path,
            opts,
            notes,
            exit_reported: false,
        };
        let env_dir = ds.opts.dir.join("env");
        std::fs::create_dir_all(&env_dir)?;
        let mut files = vec![("operator".to_owned(), ds.operator_env())];
        for b in &ds.stack.buyers {
            files.push((b.name.to_string(), ds.env(&b.credentials)));
        }
        for (who, env) in files {
            // A shell with an assumed role or a profile would sign with those instead.
            let text = format!("unset AWS_SESSION_TOKEN AWS_PROFILE\n{}", exports(&env));
            kms_emulator::state::write_atomic(
                &env_dir.join(format!("{who}.sh")),
                text.as_bytes(),
                0o600,
            )
            .map_err(|e| anyhow!(e))?;
        }
        write_pid(&ds.opts.dir.join(PID_FILE), std::process::id())?;
        Ok(ds)
    }

    /// The environment of a shell acting with these credentials: the AWS CLI, boto3, `bidctl`
    /// and the parent all read it.
    fn env(&self, c: &Credentials) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL_S3", self.stack.s3.endpoint().to_owned()),
            ("AWS_ENDPOINT_URL_KMS", self.stack.kms.endpoint()),
            ("AWS_CA_BUNDLE", path_string(&self.stack.kms.ca_pem())),
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", c.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY",
                c.secret_access_key.expose().to_owned(),
            ),
        ]
    }

    fn operator_env(&self) -> Vec<(&'static str, String)> {
        self.env(&self.stack.operator)
    }

    pub fn pcr0_hex(&self) -> String {
        hex::encode(self.stack.pcr0)
    }

    /// Everything a user or a script needs, as one JSON object.
    pub fn info(&self) -> Value {
        let env_obj = |env: Vec<(&'static str, String)>| {
            Value::Object(
                env.into_iter()
                    .map(|(k, v)| (k.to_owned(), Value::String(v)))
                    .collect(),
            )
        };
        let dir = &self.opts.dir;
        let buyers: Vec<Value> = self
            .stack
            .buyers
            .iter()
            .map(|b| {
                json!({
                    "name": b.name.as_str(),
                    "arn": buyer_arn(&b.name),
                    "access_key_id": b.credentials.access_key_id,
                    "secret_access_key": b.credentials.secret_access_key.expose(),
                    "key_arn": b.key.as_str(),
                    "bucket": b.bucket,
                    "env": env_obj(self.env(&b.credentials)),
                    "env_file": path_string(&dir.join("env").join(format!("{}.sh", b.name))),
                })
            })
            .collect();
        json!({
            "pid": std::process::id(),
            "dir": path_string(dir),
            "temporary": self.opts.temporary,
            "region": REGION,
            "account": ACCOUNT,
            "s3_endpoint": self.stack.s3.endpoint(),
            "kms_endpoint": self.stack.kms.endpoint(),
            "ca_bundle": path_string(&self.stack.kms.ca_pem()),
            "attestation_root": path_string(&self.stack.dev_root_pem),
            "enclave": {
                "endpoint": self.enclave.endpoint.to_string(),
                "rules": self.stack.rules.to_string(),
                "pcr0": self.pcr0_hex(),
                "pid": self.enclave.child.id(),
                "log": path_string(&self.enclave.log),
            },
            "auction_id": self.auction().as_str(),
            "manifest_url": self.manifest_url(),
            "auction_toml": path_string(&self.config_path),
            "operator": {
                "role_arn": OPERATOR_ROLE,
                "principal_arn": OPERATOR_SESSION,
                "access_key_id": self.stack.operator.access_key_id,
                "secret_access_key": self.stack.operator.secret_access_key.expose(),
                "output_bucket": OUTPUT_BUCKET,
                "env": env_obj(self.operator_env()),
                "env_file": path_string(&dir.join("env").join("operator.sh")),
            },
            "buyers": buyers,
            "notes": self.notes,
        })
    }

    /// The same for a person: what runs where, then each role's `export` lines and next steps.
    pub fn human(&self) -> String {
        let dir = &self.opts.dir;
        let pid = std::process::id();
        let mut t = String::new();
        let mut line = |s: String| {
            t.push_str(&s);
            t.push('\n');
        };
        line("bidctl dev-stack is running. Ctrl-C (or SIGTERM) stops it.".into());
        if self.opts.temporary {
            line(format!(
                "  state     {} -- TEMPORARY: removed when dev-stack stops, and every path below with it (--dir DIR keeps it)",
                dir.display()
            ));
        } else {
            line(format!(
                "  state     {} (kept: the same credentials and keys next time)",
                dir.display()
            ));
        }
        line(format!(
            "  S3        {} (s3s-fs, every request's SigV4 signature checked)",
            self.stack.s3.endpoint()
        ));
        line(format!(
            "  KMS       {} (the emulator; CA {}; Recipient attestations must chain to the dev enclave's root {})",
            self.stack.kms.endpoint(),
            self.stack.kms.ca_pem().display(),
            self.stack.dev_root_pem.display()
        ));
        line(format!(
            "  enclave   {} (dev enclave, software NSM, PID {}, log {})",
            self.enclave.endpoint,
            self.enclave.child.id(),
            self.enclave.log.display()
        ));
        line(format!(
            "  PCR0      {} ({}; the buyers' keys trust this one alone)",
            self.pcr0_hex(),
            self.stack.rules.image()
        ));
        line(format!(
            "  restart the enclave (a fresh boot): kill -USR1 {pid}   or   bidctl dev-stack restart-enclave --dir {}",
            sh_quote(&path_string(dir))
        ));
        for n in &self.notes {
            line(format!("  note: {n}"));
        }
        line(String::new());
        for b in &self.stack.buyers {
            line(format!(
                "# {} (IAM user {}): key {}, bucket s3://{}",
                b.name,
                buyer_arn(&b.name),
                b.key,
                b.bucket
            ));
            line("unset AWS_SESSION_TOKEN AWS_PROFILE".into());
            t_push(&mut line, &exports(&self.env(&b.credentials)));
            line(String::new());
        }
        line(format!(
            "# The operator (role {OPERATOR_ROLE}), output bucket s3://{OUTPUT_BUCKET}"
        ));
        line("unset AWS_SESSION_TOKEN AWS_PROFILE".into());
        t_push(&mut line, &exports(&self.operator_env()));
        line(String::new());
        let first = self
            .stack
            .buyers
            .first()
            .map(|b| b.name.to_string())
            .unwrap_or_else(|| "operator".into());
        line(format!(
            "# Or: source {}/env/<{first}|operator>.sh",
            sh_quote(&path_string(dir))
        ));
        line(format!(
            "# auction.toml (auction {}, the stack's keys; a buyer who makes their own key sends its ARN for key_arn): {}",
            self.auction(),
            self.config_path.display()
        ));
        line(format!(
            "# A buyer's own key: aws kms create-key, then\n#   bidctl key-policy --document --role-arn {OPERATOR_ROLE} --pcr0 {} --admin-arn {} > policy.json\n#   aws kms put-key-policy --key-id <KeyId> --policy-name default --policy file://policy.json",
            self.pcr0_hex(),
            buyer_arn(
                &self
                    .stack
                    .buyers
                    .first()
                    .map(|b| b.name.clone())
                    .unwrap_or_else(|| BuyerName::new("Buyer1").expect("valid"))
            )
        ));
        let config = sh_quote(&path_string(&self.config_path));
        let prefix = format!("s3://{OUTPUT_BUCKET}/{}", self.auction());
        line(format!(
            "# The operator, after the bids: bidctl __parent manifest --config {config}\n#   every buyer: bidctl seal --manifest {} --buyer <name> --key-id <key ARN> --bids encrypted.csv --upload\n#   then: bidctl __parent --config {config}   (bidctl __parent is bidding-parent; the parent binary works the same)",
            self.manifest_url()
        ));
        line(format!(
            "# Anyone (each buyer adds --buyer <name> --key-id <key ARN> --bids encrypted.csv): for f in manifest.json output.csv output.json output.csv.attestation;\n#   do aws s3 cp {prefix}/$f result/$f; done   (buyers may read these objects, not list the bucket), then\n#   bidctl verify --output result/output.csv --attestation result/output.csv.attestation --manifest result/manifest.json \\\n#     --expect-pcr0 {} --root {}",
            self.pcr0_hex(),
            sh_quote(&path_string(&self.stack.dev_root_pem))
        ));
        t
    }

    /// Stops the dev enclave and starts a fresh one (a new boot: new RSA key, empty per-boot
    /// state) on the same socket; the previous log is kept as `enclave.previous.log`.
    pub fn restart_enclave(&mut self) -> Result<()> {
        terminate(&mut self.enclave);
        let _ = std::fs::rename(
            &self.enclave.log,
            self.opts.dir.join(format!("{ENCLAVE}.previous.log")),
        );
        let fresh = self.stack.start_enclave(&self.opts.exe, ENCLAVE, &[])?;
        // The old process is reaped already: dropping it kills nothing.
        self.enclave = fresh;
        self.exit_reported = false;
        write_pid(
            &self.opts.dir.join(ENCLAVE_PID_FILE),
            self.enclave.child.id(),
        )
    }

    /// The enclave's exit status the first time it is seen to have exited on its own.
    pub fn enclave_exited(&mut self) -> Option<ExitStatus> {
        if self.exit_reported {
            return None;
        }
        match self.enclave.child.try_wait() {
            Ok(Some(status)) => {
                self.exit_reported = true;
                Some(status)
            }
            _ => None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    /// The auction id `auction.toml` names.
    pub fn auction(&self) -> AuctionId {
        self.opts
            .auction
            .clone()
            .unwrap_or_else(|| AuctionId::new("dev-auction").expect("valid"))
    }

    /// Where the operator's manifest goes and the buyers read it.
    pub fn manifest_url(&self) -> String {
        format!("s3://{OUTPUT_BUCKET}/{}/manifest.json", self.auction())
    }

    pub fn temporary(&self) -> bool {
        self.opts.temporary
    }

    /// Stops the enclave (SIGTERM, then SIGKILL after 5 s), S3 and KMS; removes the pid files,
    /// and the whole directory when it is a temporary one.
    pub fn stop(mut self) {
        terminate(&mut self.enclave);
        let DevStack { stack, opts, .. } = self;
        drop(stack);
        let _ = std::fs::remove_file(opts.dir.join(PID_FILE));
        let _ = std::fs::remove_file(opts.dir.join(ENCLAVE_PID_FILE));
        let _ = std::fs::remove_file(opts.dir.join(format!("{ENCLAVE}.sock")));
        if opts.temporary {
            let _ = std::fs::remove_dir_all(&opts.dir);
        }
    }
}

fn t_push(line: &mut impl FnMut(String), text: &str) {
    for l in text.lines() {
        line(l.to_owned());
    }
}

/// SIGTERM to the enclave process (ours, by PID), then SIGKILL if it has not exited in 5 s.
fn terminate(p: &mut EnclaveProcess) {
    if let Ok(None) = p.child.try_wait() {
        if let Ok(pid) = libc::pid_t::try_from(p.child.id()) {
            // SAFETY: a signal to a child process we started and have not reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(None) = p.child.try_wait() {
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    p.kill();
}

fn write_pid(path: &Path, pid: u32) -> Result<()> {
    std::fs::write(path, format!("{pid}\n")).with_context(|| format!("writing {}", path.display()))
}

fn path_string(p: &Path) -> String {
    p.display().to_string()
}

/// `export NAME=VALUE` lines, values quoted for sh.
pub fn exports(env: &[(&'static str, String)]) -> String {
    env.iter()
        .map(|(k, v)| format!("export {k}={}\n", sh_quote(v)))
        .collect()
}

/// A word for sh: as is when it is plain, else in single quotes.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:+=,@%".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The PID in `DIR/dev-stack.pid` when that process runs and is a `bidctl dev-stack`.
fn running_dev_stack(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    cmdline
        .split(|b| *b == 0)
        .any(|w| w == b"dev-stack")
        .then_some(pid)
}

/// Two buyers whose names differ only in case would share a bucket and an account.
fn check_buyer_names(names: &[BuyerName]) -> Result<()> {
    for (i, a) in names.iter().enumerate() {
        if let Some(b) = names[..i]
            .iter()
            .find(|b| b.as_str().eq_ignore_ascii_case(a.as_str()))
        {
            if a == b {
                bail!("--buyer {a} is given twice");
            }
            bail!(
                "--buyer {b} and --buyer {a} differ only in case: they would share the bucket s3://{} (give buyers names that differ in more than case)",
                crate::stack::buyer_bucket(a)
            );
        }
    }
    Ok(())
}

/// What a kept `auction.toml` says that the operator may have set: the terms, and each buyer's
/// `key_arn`.
struct KeptConfig {
    terms: KeptTerms,
    key_arns: Vec<(String, String)>,
    /// The rule set it was written for: its keys are that image's.
    rules: Mode,
}

#[derive(Default)]
struct KeptTerms {
    auction: Option<AuctionId>,
    reveal: Option<RevealPolicy>,
    allow_no_context: Option<bool>,
}

fn kept_config(path: &Path) -> Option<KeptConfig> {
    let file = bidding_parent::config::read_file(path).ok()?;
    Some(KeptConfig {
        terms: KeptTerms {
            auction: file.auction_id.and_then(|a| AuctionId::new(a).ok()),
            reveal: file.reveal,
            allow_no_context: file.allow_no_context,
        },
        key_arns: file
            .buyers
            .into_iter()
            .map(|b| (b.name, b.key_arn))
            .collect(),
        rules: if file.sealed.unwrap_or(true) {
            Mode::Sealed
        } else {
            Mode::Unsealed
        },
    })
}

/// A dev enclave that an earlier dev-stack on DIR left running (killed with SIGKILL, say):
/// the PID in `DIR/enclave.pid`, when that process is a `bidctl __enclave` listening on this
/// directory's socket. It is stopped (SIGTERM); returns its PID.
fn stop_leftover_enclave(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join(ENCLAVE_PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let socket = dir.join(format!("{ENCLAVE}.sock"));
    let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = words.contains(&&b"__enclave"[..])
        && words
            .iter()
            .any(|w| w.ends_with(socket.as_os_str().as_encoded_bytes()));
    if !ours {
        return None;
    }
    let target = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: a signal to the enclave process checked above to be this directory's.
    unsafe {
        libc::kill(target, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(dir.join(ENCLAVE_PID_FILE));
    Some(pid)
}

/// `bidctl dev-stack restart-enclave --dir DIR`: asks the dev-stack running on DIR (SIGUSR1 to
/// the PID in `DIR/dev-stack.pid`, checked to be a `bidctl dev-stack`) to restart its enclave,
/// and waits until the new one runs. Returns the new enclave's PID.
pub fn request_restart(dir: &Path) -> Result<u32> {
    let read_pid = |name: &str| -> Option<u32> {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    };
    let Some(pid) = running_dev_stack(dir) else {
        bail!(
            "no dev-stack runs on {} (no {PID_FILE} there naming a running `bidctl dev-stack`)",
            dir.display()
        );
    };
    let before = read_pid(ENCLAVE_PID_FILE);
    let target = libc::pid_t::try_from(pid).map_err(|_| anyhow!("bad PID {pid}"))?;
    // SAFETY: a signal to the dev-stack process checked above; SIGUSR1 only restarts its enclave.
    if unsafe { libc::kill(target, libc::SIGUSR1) } != 0 {
        bail!(
            "signalling dev-stack (PID {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(now) = read_pid(ENCLAVE_PID_FILE)
            && Some(now) != before
        {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!(
                "dev-stack (PID {pid}) did not restart its enclave within 30 s; see its output and {}",
                dir.join(format!("{ENCLAVE}.log")).display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
