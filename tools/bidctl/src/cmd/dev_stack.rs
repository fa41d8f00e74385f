//! `bidctl dev-stack`: see [`bidding_standins::dev_stack`].

use anyhow::{Result, anyhow};
use bidding_core::auction::RevealPolicy;
use bidding_core::names::{AuctionId, BuyerName};
use bidding_standins::dev_stack::{self, DevStack, Options};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

const AFTER_HELP: &str = "\
Runs until Ctrl-C, SIGTERM or SIGHUP (a closed terminal), then stops the enclave, S3 and KMS
(exit 0). SIGUSR1, or `bidctl dev-stack restart-enclave --dir DIR`, restarts the dev enclave: a
fresh boot, as after a run that used up its per-boot state. Killed outright (SIGKILL), it leaves
no enclave running, and the next dev-stack on DIR cleans up after it.

One AWS account per role: the operator's and each buyer's own. Every buyer gets credentials, a
bucket (s3://<name>-bids) that the operator's role may read, and a KMS key whose policy lets
only that role, for an enclave attesting to the dev enclave's PCR0, decrypt. The dev enclave
is the sealed image's; --unsealed runs the unsealed image's instead (its own PCR0), and every
buyer gets a second key for it, so no key trusts both. S3 (over TLS, the
same CA as KMS) enforces the bucket policies across accounts; the auction's buyers may read
s3://auction-results/<auction>/. The output holds each role's `export` lines (also in
DIR/env/<role>.sh) and DIR/auction.toml, ready for `bidctl __parent manifest --config` and
`bidctl __parent --config` (the parent). The credentials are the local emulators' own, valid
nowhere else.

With --dir the credentials and keys stay the same across runs (DIR/dev-stack.json), and so do
the auction id, reveal policy, allow_no_context and any key_arn in DIR/auction.toml unless a
flag sets them; the ports are new each run, so take the environment and auction.toml again.";

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, after_help = AFTER_HELP)]
pub struct Command {
    #[command(subcommand)]
    sub: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Keep the state here (credentials, keys, buckets, CA) across runs [default: a temporary
    /// directory, removed at stop].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Print everything as one JSON object on stdout (for scripts), instead of text.
    #[arg(long)]
    json: bool,
    /// A buyer (repeat per buyer) [default: those of --dir, else Buyer1 and Buyer2].
    #[arg(long = "buyer", value_name = "NAME")]
    buyers: Vec<String>,
    /// The auction id in auction.toml (and so in the encryption contexts) [default: the kept
    /// auction.toml's, else dev-auction].
    #[arg(long)]
    auction: Option<String>,
    /// auction.toml's reveal policy: none, winning-bid or second-price [default: the kept
    /// auction.toml's, else none].
    #[arg(long)]
    reveal: Option<RevealPolicy>,
    /// Run the unsealed image's dev enclave (the proof of concept's flow, no seal round),
    /// with a PCR0 of its own; every buyer gets a separate key that trusts it alone.
    #[arg(long)]
    unsealed: bool,
    /// With --unsealed: auction.toml accepts bids without an encryption context (plain `aws
    /// kms encrypt`).
    #[arg(long, requires = "unsealed")]
    allow_no_context: bool,
}

#[derive(Subcommand)]
enum Sub {
    /// Restart the dev enclave of the dev-stack running on DIR, and wait for the new one.
    RestartEnclave {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd.sub {
        Some(Sub::RestartEnclave { dir }) => {
            let pid = dev_stack::request_restart(&dir)?;
            eprintln!("bidctl: the dev enclave was restarted (PID {pid})");
            Ok(ExitCode::SUCCESS)
        }
        None => serve(cmd.run),
    }
}

static STOP: AtomicI32 = AtomicI32::new(0);
static RESTART: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only atomic stores: async-signal-safe.
    if sig == libc::SIGUSR1 {
        RESTART.store(true, Ordering::SeqCst);
    } else {
        STOP.store(sig, Ordering::SeqCst);
    }
}

/// SIGINT, SIGTERM and SIGHUP (the terminal closed) stop, SIGUSR1 restarts the enclave; from
/// here on the main loop acts on them (this replaces bidctl's interrupt handler, which is for
/// commands that just exit).
fn install_signal_handlers() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to atomics.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(anyhow!(
                "installing the handler of signal {sig}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn serve(a: RunArgs) -> Result<ExitCode> {
    let buyers = a
        .buyers
        .iter()
        .map(|b| BuyerName::new(b.as_str()).map_err(|e| anyhow!("--buyer `{b}`: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let auction = a
        .auction
        .as_deref()
        .map(|id| AuctionId::new(id).map_err(|e| anyhow!("--auction `{id}`: {e}")))
        .transpose()?;
    let (dir, temporary) = match a.dir {
        Some(d) => (std::path::absolute(&d).unwrap_or(d), false),
        None => {
            let d = std::env::temp_dir().join(format!("bidctl-dev-stack-{}", std::process::id()));
            // Ctrl-C while starting removes it (and stops what was started).
            bidding_standins::cleanup::on_interrupt(d.clone());
            (d, true)
        }
    };
    let opts = Options {
        dir: dir.clone(),
        temporary,
        buyers,
        auction,
        reveal: a.reveal,
        allow_no_context: a.allow_no_context.then_some(true),
        rules: if a.unsealed {
            bidding_core::config::Mode::Unsealed
        } else {
            bidding_core::config::Mode::Sealed
        },
        exe: std::env::current_exe()?,
    };
    let mut ds = match DevStack::start(opts) {
        Ok(ds) => ds,
        Err(e) => {
            if temporary {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Err(e);
        }
    };
    install_signal_handlers()?;
    let text = if a.json {
        format!("{}\n", ds.info())
    } else {
        ds.human()
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
    let pid = std::process::id();
    loop {
        if STOP.load(Ordering::SeqCst) != 0 {
            break;
        }
        if RESTART.swap(false, Ordering::SeqCst) {
            match ds.restart_enclave() {
                Ok(()) => say(&format!(
                    "dev-stack: the dev enclave was restarted (PID {}), same endpoint {}",
                    ds.enclave.child.id(),
                    ds.enclave.endpoint
                )),
                Err(e) => say(&format!(
                    "dev-stack: restarting the dev enclave failed: {e:#}\n  (kill -USR1 {pid} tries again)"
                )),
            }
        }
        if let Some(status) = ds.enclave_exited() {
            say(&format!(
                "dev-stack: the dev enclave exited ({status}); its log: {}\n  restart it: kill -USR1 {pid}",
                ds.enclave.log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let temporary = ds.temporary();
    let dir = ds.dir().to_owned();
    ds.stop();
    if temporary {
        say(&format!("dev-stack: stopped; removed {}", dir.display()));
    } else {
        say(&format!(
            "dev-stack: stopped; state kept in {}",
            dir.display()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line on stderr; a closed terminal (EIO) must not stop dev-stack before it cleans up,
/// as `eprintln!`'s panic would.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
