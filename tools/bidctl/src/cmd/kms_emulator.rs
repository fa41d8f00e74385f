//! `bidctl kms-emulator`: a local AWS KMS, and the operator's commands for its state.

use anyhow::{Context, Result, anyhow, bail};
use bidding_core::credentials::Secret;
use bidding_standins::kms_emulator::{self, Config, FaultRule, Principal, state};
use clap::{Args, Subcommand};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const AFTER_HELP: &str = "\
Serves the KMS JSON protocol (CreateKey, DescribeKey, ListKeys, Encrypt, Decrypt,
GenerateDataKey, GetKeyPolicy, PutKeyPolicy, EnableKey, DisableKey) with SigV4 checked
against DIR/principals.json. On first start DIR gets a TLS CA (DIR/ca.pem, for clients) and,
without a principals.json, one principal with random credentials (read them there).

Use it with the AWS CLI:
  AWS_CA_BUNDLE=DIR/ca.pem aws --endpoint-url https://127.0.0.1:PORT kms create-key

Faults (--fault, repeatable): OP:KIND=VALUE, OP an operation name or * for all.
  latency=DURATION  wait before answering (10ms, 1s); matching latencies add up
  throttle=RATE     400 ThrottlingException \"Rate exceeded\" with probability RATE (0 to 1)
  error500=RATE     500 InternalFailure
  reset=RATE        do the operation, then reset the connection in the middle of the answer
Example: --fault Decrypt:throttle=0.3 --fault '*:latency=10ms' --fault Decrypt:reset=0.05
         --fault-seed 42 (the same seed and request sequence fault the same requests)";

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, after_help = AFTER_HELP)]
pub struct Command {
    #[command(subcommand)]
    sub: Option<Sub>,
    #[command(flatten)]
    serve: Serve,
}

#[derive(Args)]
struct Serve {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4000")]
    listen: SocketAddr,
    /// State directory: keys, principals, policies, TLS CA.
    #[arg(long)]
    state: Option<PathBuf>,
    #[arg(long, default_value = kms_emulator::DEFAULT_REGION)]
    region: String,
    /// Account of key ARNs and of the default key policy.
    #[arg(long, default_value = kms_emulator::DEFAULT_ACCOUNT)]
    account: String,
    /// Serve plain HTTP (for clients that cannot be given a CA).
    #[arg(long)]
    plain_http: bool,
    /// Latency added to every answer, in milliseconds (same as --fault '*:latency=Nms').
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Injected fault, OP:KIND=VALUE (see below).
    #[arg(long = "fault", value_name = "SPEC")]
    faults: Vec<FaultRule>,
    /// Seed for the fault draws [default: random].
    #[arg(long)]
    fault_seed: Option<u64>,
    /// Root certificate (PEM or DER) that Recipient attestation documents must chain to,
    /// e.g. the software NSM's DIR/root.pem [default: the AWS Nitro root G1].
    #[arg(long, value_name = "FILE")]
    attestation_root: Option<PathBuf>,
    /// Also accept Recipient documents from QEMU's nitro-enclave machine, whose emulated NSM
    /// signs nothing. For tests under that VM only: anyone can write such a document.
    #[arg(long)]
    accept_qemu_unsigned_attestation: bool,
    /// No per-request log lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Sub {
    /// Set a key's policy (AWS key-policy JSON, the supported subset) from FILE or - (stdin).
    /// Takes effect at once, also in a running emulator.
    SetPolicy {
        #[arg(long)]
        state: PathBuf,
        /// Key id or key ARN.
        #[arg(long)]
        key_id: String,
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
    },
    /// Print a key's policy.
    GetPolicy {
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        key_id: String,
    },
    /// Add a principal (or replace the one with the same access key id).
    AddPrincipal {
        #[arg(long)]
        state: PathBuf,
        #[arg(long, env = "AWS_ACCESS_KEY_ID")]
        access_key_id: String,
        #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
        secret_access_key: String,
        /// For temporary credentials: requests must carry this X-Amz-Security-Token.
        #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true)]
        session_token: Option<String>,
        /// When the credentials stop working (RFC 3339), answered with ExpiredTokenException.
        #[arg(long)]
        expiration: Option<String>,
        /// The caller's ARN: arn:aws:iam::ACCOUNT:user/NAME, …:role/NAME, …:root, or
        /// arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION.
        #[arg(long)]
        arn: String,
    },
}

pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd.sub {
        Some(Sub::SetPolicy {
            state,
            key_id,
            policy,
        }) => {
            let mut text = String::new();
            if policy.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the policy from stdin")?;
            } else {
                text = std::fs::read_to_string(&policy)
                    .with_context(|| format!("reading {}", policy.display()))?;
            }
            kms_emulator::set_policy(&state, &key_id, &text).map_err(|e| anyhow!(e))?;
            eprintln!("bidctl: policy of {key_id} set");
            Ok(ExitCode::SUCCESS)
        }
        Some(Sub::GetPolicy { state, key_id }) => {
            let key = kms_emulator::find_key(&state, &key_id).map_err(|e| anyhow!(e))?;
            let path = state::policy_path(&state, &key.key_id);
            match std::fs::read_to_string(&path) {
                Ok(t) => println!("{t}"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!(
                        "{}",
                        kms_emulator::policy::default_policy(
                            key.arn.split(':').nth(4).unwrap_or_default()
                        )
                    )
                }
                Err(e) => bail!("reading {}: {e}", path.display()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Sub::AddPrincipal {
            state,
            access_key_id,
            secret_access_key,
            session_token,
            expiration,
            arn,
        }) => {
            let expiration = expiration
                .map(|t| {
                    humantime::parse_rfc3339_weak(&t)
                        .map_err(|e| anyhow!("--expiration {t:?}: {e}"))
                        .and_then(|t| Ok(t.duration_since(std::time::UNIX_EPOCH)?.as_secs()))
                })
                .transpose()?;
            let p = Principal {
                access_key_id,
                secret_access_key: Secret::new(secret_access_key),
                session_token: session_token.map(Secret::new),
                expiration,
                arn,
            };
            let arn = p.arn.clone();
            state::add_principal(&state, p).map_err(|e| anyhow!(e))?;
            eprintln!(
                "bidctl: principal {arn} added to {}",
                state.join(state::PRINCIPALS_FILE).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        None => serve(cmd.serve),
    }
}

fn serve(args: Serve) -> Result<ExitCode> {
    let state = args
        .state
        .ok_or_else(|| anyhow!("--state DIR is required to run the emulator"))?;
    let mut config = Config::new(state);
    config.listen = args.listen;
    config.region = bidding_core::names::Region::new(args.region)?.to_string();
    if args.account.len() != 12 || !args.account.bytes().all(|b| b.is_ascii_digit()) {
        bail!("--account must be 12 digits");
    }
    config.account = args.account;
    config.plain_http = args.plain_http;
    if let Some(root) = &args.attestation_root {
        config.attestation_root_der = super::read_certificate(root)?;
    }
    if args.latency_ms > 0 {
        config.faults.push(FaultRule {
            operation: None,
            kind: kms_emulator::faults::FaultKind::Latency(Duration::from_millis(args.latency_ms)),
        });
    }
    config.accept_qemu_unsigned_attestation = args.accept_qemu_unsigned_attestation;
    config.faults.extend(args.faults);
    config.fault_seed = args.fault_seed;
    config.log = !args.quiet;
    let running = kms_emulator::spawn(config)?;
    // Always, even with --quiet: scripts started with port 0 read the address from here.
    eprintln!("kms-emulator: listening on {}", running.endpoint());
    if args.accept_qemu_unsigned_attestation {
        eprintln!(
            "kms-emulator: accepting QEMU's UNSIGNED attestation documents (test only; they prove nothing)"
        );
    }
    if !running.endpoint().starts_with("http:") {
        eprintln!("kms-emulator: clients trust {}", running.ca_pem().display());
    }
    running.wait();
    Ok(ExitCode::SUCCESS)
}
