//! The command line and start-up sequence, shared by the `enclave-init` binary and by
//! `bidctl`, which runs a dev enclave as a child process of itself.

use crate::kms::KmsSettings;
use crate::nsm::Nsm;
use crate::{keys, log, nsm, pid1, server, transport};
use bidding_core::endpoint::Endpoint;
use bidding_core::session::enclave::EnclaveSettings;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The sealed-bid auction enclave. Production defaults need no arguments.
#[derive(Parser)]
#[command(name = "enclave-init", version, about)]
pub struct Args {
    /// Where the parent connects.
    #[arg(long, default_value = "vsock:any:5005")]
    listen: Endpoint,
    /// The vsock-proxy forwarding to kms.<region>.amazonaws.com:443.
    #[arg(long, default_value = "vsock:3:8000")]
    kms_proxy: Endpoint,
    /// Parallel persistent KMS connections.
    #[arg(long, default_value_t = 8)]
    kms_connections: usize,
    /// Seconds one bid may take at KMS, retries included, before the auction fails.
    #[arg(long, default_value_t = 60)]
    kms_deadline_secs: u64,
    /// Largest frame accepted from the parent, in bytes.
    #[arg(long, default_value_t = bidding_core::wire::DEFAULT_MAX_FRAME)]
    max_frame: usize,
    /// Bids being opened at once before the enclave stops reading (bounds memory).
    #[arg(long, default_value_t = 4096)]
    max_pending_bids: usize,
    /// Lots per auction.
    #[arg(long, default_value_t = 1_000_000)]
    max_lots: usize,
    /// Ciphertexts remembered per boot to refuse replays (32 bytes each).
    #[arg(long, default_value_t = 2_000_000)]
    replay_capacity: usize,
    /// As PID 1: skip the boot heartbeat (for tests outside an enclave).
    #[arg(long)]
    no_heartbeat: bool,
    /// As PID 1: the NSM driver module to load when present.
    #[arg(long, default_value = "/nsm.ko")]
    nsm_ko: PathBuf,
    /// Dev builds only: use the software NSM with its chain in this directory.
    #[arg(long, hide = !cfg!(feature = "dev"))]
    soft_nsm: Option<PathBuf>,
    /// Dev builds only: also trust this CA (PEM) for KMS, e.g. the KMS emulator's.
    #[arg(long, hide = !cfg!(feature = "dev"))]
    kms_ca: Option<PathBuf>,
    /// Dev builds only: start this command after init (tests of PID 1 reaping).
    #[arg(long, hide = !cfg!(feature = "dev"), num_args = 1.., allow_hyphen_values = true)]
    spawn: Vec<String>,
}

/// Runs the enclave with these command-line arguments (the first is the program name); never
/// returns. Call it before starting any thread: it blocks signals for the whole process.
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ! {
    let pid1 = pid1::is_pid1();
    // Before any thread exists, so all of them inherit the mask.
    let signals = pid1::block_signals();
    let mut argv: Vec<std::ffi::OsString> = args.into_iter().collect();
    if pid1 {
        // The kernel hands words of its command line it does not know (nitro-cli's
        // `nomodules`, say) to /init as arguments.
        let (ours, kernel_words) = pid1::split_kernel_words(argv);
        if !kernel_words.is_empty() {
            log!("ignoring the kernel's boot words {kernel_words:?}");
        }
        argv = ours;
    }
    let args = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) if !pid1 => e.exit(),
        Err(e) => pid1::finish(&format!("bad arguments: {e}"), 2, pid1),
    };
    pid1::spawn_signal_thread(signals, pid1);
    if let Err(e) = run(args, pid1) {
        pid1::finish(&format!("fatal: {e}"), 1, pid1);
    }
    pid1::finish("stopped", 0, pid1);
}

fn run(args: Args, pid1: bool) -> Result<(), String> {
    log!(
        "{} starting (pid {}, {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        if cfg!(feature = "dev") {
            "DEV build"
        } else {
            "release build"
        }
    );
    transport::check_supported(&args.listen).map_err(|e| e.to_string())?;
    transport::check_supported(&args.kms_proxy).map_err(|e| e.to_string())?;
    if pid1 {
        pid1::mount_filesystems()?;
        pid1::load_nsm_driver(&args.nsm_ko)?;
        if args.no_heartbeat {
            log!("heartbeat skipped (--no-heartbeat)");
        } else {
            pid1::heartbeat()?;
        }
    }
    let nsm = open_nsm(&args)?;
    match nsm::seed_entropy(&*nsm) {
        Ok(0) => {}
        Ok(n) => log!("seeded the kernel entropy pool with {n} bytes from NSM GetRandom"),
        Err(e) => return Err(format!("seeding entropy from the NSM: {e}")),
    }
    let key = keys::PendingKey::spawn();
    let extra_ca_pem = match &args.kms_ca {
        None => None,
        Some(p) if cfg!(feature = "dev") => {
            Some(std::fs::read(p).map_err(|e| format!("--kms-ca {}: {e}", p.display()))?)
        }
        Some(_) => return Err("--kms-ca exists only in dev builds".into()),
    };
    if !args.spawn.is_empty() {
        spawn(&args.spawn)?;
    }
    let settings = EnclaveSettings {
        dev: cfg!(feature = "dev"),
        max_frame: args.max_frame,
        max_pending_bids: args.max_pending_bids,
        max_lots: args.max_lots,
        ..EnclaveSettings::default()
    };
    let kms_settings = KmsSettings {
        proxy: args.kms_proxy.clone(),
        connections: args.kms_connections,
        bid_deadline: Duration::from_secs(args.kms_deadline_secs),
        io_timeout: Duration::from_secs(15),
        extra_ca_pem,
    };
    let ctx = server::Context::new(settings, nsm, key, kms_settings, args.replay_capacity);
    let listener =
        transport::listen(&args.listen).map_err(|e| format!("listen on {}: {e}", args.listen))?;
    log!(
        "listening on {}; KMS via {} ({} connections)",
        args.listen,
        args.kms_proxy,
        args.kms_connections
    );
    server::serve(listener, ctx).map_err(|e| format!("accept on {}: {e}", args.listen))
}

#[cfg(feature = "dev")]
fn open_nsm(args: &Args) -> Result<Arc<dyn Nsm>, String> {
    match &args.soft_nsm {
        Some(dir) => {
            let soft = crate::soft_nsm::SoftNsm::open(dir)?;
            log!(
                "using the SOFTWARE NSM from {} (dev only; not an attestation anyone should trust)",
                dir.display()
            );
            Ok(Arc::new(soft))
        }
        None => Ok(Arc::new(
            nsm::HardwareNsm::open().map_err(|e| e.to_string())?,
        )),
    }
}

#[cfg(not(feature = "dev"))]
fn open_nsm(args: &Args) -> Result<Arc<dyn Nsm>, String> {
    if args.soft_nsm.is_some() {
        return Err("--soft-nsm exists only in dev builds; a release enclave uses /dev/nsm".into());
    }
    Ok(Arc::new(
        nsm::HardwareNsm::open().map_err(|e| e.to_string())?,
    ))
}

fn spawn(cmd: &[String]) -> Result<(), String> {
    if !cfg!(feature = "dev") {
        return Err("--spawn exists only in dev builds".into());
    }
    let child = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .spawn()
        .map_err(|e| format!("--spawn {}: {e}", cmd[0]))?;
    log!("spawned pid {} ({})", child.id(), cmd[0]);
    Ok(())
}
