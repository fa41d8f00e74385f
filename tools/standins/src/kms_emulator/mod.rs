//! A local AWS KMS for the demo, the tests and the benchmarks: the KMS JSON protocol over
//! HTTPS, SigV4 checked like AWS checks it, keys that persist, key policies with Nitro
//! attestation conditions, Recipient answers in KMS's CMS shape, and injectable faults.
//!
//! It must refuse whatever real KMS refuses, with the same error names and status codes,
//! because a stand-in that accepts more hides bugs that only production would find.
//!
//! In process: [`spawn`] a [`Config`] and use the [`Running`] server's endpoint; from the
//! command line: `bidctl kms-emulator --listen 127.0.0.1:PORT --state DIR`.
//! The state directory is described in [`state`]; the policy subset in [`policy`]; the fault
//! syntax in [`faults`].

pub mod blob;
pub mod error;
pub mod faults;
pub mod policy;
pub mod recipient;
mod server;
pub mod service;
pub mod state;
pub mod tls;

pub use error::KmsError;
pub use faults::FaultRule;
pub use state::Principal;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use bidding_core::credentials::Secret;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub const DEFAULT_ACCOUNT: &str = "111122223333";
pub const DEFAULT_REGION: &str = "us-east-1";
const SERVER_LOCK: &str = ".server.lock";
const INIT_LOCK: &str = ".lock";

#[derive(Debug, thiserror::Error)]
#[error("KMS emulator: {0}")]
pub struct Error(pub String);

/// How to run an emulator.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free one (see [`Running::addr`]).
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub region: String,
    /// The account of key ARNs and of the default key policy.
    pub account: String,
    /// Serve plain HTTP instead of HTTPS, for clients that cannot be given a CA.
    pub plain_http: bool,
    /// DER of the root that Recipient attestation documents must chain to: AWS's by default,
    /// the software NSM's dev root (`enclave_init::soft_nsm::dev_root_der`) for dev enclaves.
    pub attestation_root_der: Vec<u8>,
    /// Also accept Recipient documents from QEMU's `nitro-enclave` machine, whose emulated NSM
    /// signs nothing (`attestation::parse_qemu_unsigned`). Off by default; for the test that
    /// runs an auction through that VM. Such a document proves nothing about who made it.
    pub accept_qemu_unsigned_attestation: bool,
    pub faults: Vec<FaultRule>,
    /// Seed of the fault draws; random when `None`.
    pub fault_seed: Option<u64>,
    /// One line per request on stderr: operation, caller ARN, status and error code (never a
    /// secret, plaintext or key material).
    pub log: bool,
}

impl Config {
    /// Loopback on a free port, HTTPS, us-east-1, account 111122223333, AWS's attestation
    /// root, no faults, logging on.
    pub fn new(state_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: state_dir.into(),
            region: DEFAULT_REGION.into(),
            account: DEFAULT_ACCOUNT.into(),
            plain_http: false,
            attestation_root_der: bidding_core::attestation::AWS_NITRO_ROOT_G1_DER.to_vec(),
            accept_qemu_unsigned_attestation: false,
            faults: Vec::new(),
            fault_seed: None,
            log: true,
        }
    }
}

/// A running emulator. Dropping it stops the server.
pub struct Running {
    addr: SocketAddr,
    plain_http: bool,
    dir: PathBuf,
    region: String,
    account: String,
    shared: Arc<server::Shared>,
    shutdown: Option<watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Held while serving: two emulators writing one keys.json would lose keys.
    _lock: File,
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT` (or `http://…` with `plain_http`), for `endpoint_url`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA certificate clients must trust (absent with `plain_http`).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join(tls::CA_CERT)
    }

    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// Full verifications of Recipient documents so far; cache hits do not count.
    pub fn attestation_verifications(&self) -> u64 {
        self.shared.service.recipients.verifications()
    }

    /// Stops accepting, ends open connections and waits for the server thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Blocks until the server stops (it does not stop by itself: for the command line).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts an emulator on its own thread. On first use of the state directory it creates the
/// TLS CA (`ca.pem`) and, when there is no `principals.json`, one principal with random
/// credentials (read them from that file).
pub fn spawn(config: Config) -> Result<Running, Error> {
    let err = |e: String| Error(e);
    let dir = config.state_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| Error(format!("creating {}: {e}", dir.display())))?;
    let server_lock = File::create(dir.join(SERVER_LOCK))
        .map_err(|e| Error(format!("creating {}: {e}", dir.join(SERVER_LOCK).display())))?;
    server_lock
        .try_lock()
        .map_err(|_| Error(format!("another KMS emulator is serving {}", dir.display())))?;
    let tls_config = with_init_lock(&dir, || {
        if !dir.join(state::PRINCIPALS_FILE).exists() {
            let p = generated_principal(&config.account)?;
            if config.log {
                eprintln!(
                    "kms-emulator: created {} with principal {} (its credentials are in that file)",
                    dir.join(state::PRINCIPALS_FILE).display(),
                    p.arn
                );
            }
            state::write_principals(&dir, &[p])?;
        }
        if config.plain_http {
            Ok(None)
        } else {
            tls::server_config(&dir, &config.region).map(Some)
        }
    })
    .map_err(err)?;
    let seed = match config.fault_seed {
        Some(s) => s,
        None => {
            let mut b = [0u8; 8];
            SystemRandom::new()
                .fill(&mut b)
                .map_err(|_| Error("the random generator failed".into()))?;
            u64::from_le_bytes(b)
        }
    };
    let mut service = service::Service::new(
        dir.clone(),
        config.region.clone(),
        config.account.clone(),
        config.attestation_root_der.clone(),
        faults::Faults::new(config.faults.clone(), seed),
    )
    .map_err(err)?;
    if config.accept_qemu_unsigned_attestation {
        service.accept_qemu_unsigned_attestation();
    }
    let shared = Arc::new(server::Shared {
        service,
        log: config.log,
    });

    let listener = std::net::TcpListener::bind(config.listen)
        .map_err(|e| Error(format!("listening on {}: {e}", config.listen)))?;
    let addr = listener.local_addr().map_err(|e| Error(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kms-emulator")
        .enable_all()
        .build()
        .map_err(|e| Error(format!("starting the runtime: {e}")))?;
    let (tx, rx) = watch::channel(false);
    let acceptor = tls_config.map(tokio_rustls::TlsAcceptor::from);
    let shared2 = shared.clone();
    let thread = std::thread::Builder::new()
        .name("kms-emulator".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => server::serve(l, acceptor, shared2, rx).await,
                    Err(e) => eprintln!("kms-emulator: {e}"),
                }
            });
            // Open connections end here rather than outliving the emulator.
            runtime.shutdown_timeout(Duration::from_millis(500));
        })
        .map_err(|e| Error(format!("starting the server thread: {e}")))?;
    if config.log {
        let faults: Vec<String> = config.faults.iter().map(ToString::to_string).collect();
        eprintln!(
            "kms-emulator: serving {} on {}://{addr} (state {}, account {}){}",
            config.region,
            if config.plain_http { "http" } else { "https" },
            dir.display(),
            config.account,
            if faults.is_empty() {
                String::new()
            } else {
                format!(", faults {} with seed {seed}", faults.join(" "))
            }
        );
    }
    Ok(Running {
        addr,
        plain_http: config.plain_http,
        dir,
        region: config.region,
        account: config.account,
        shared,
        shutdown: Some(tx),
        thread: Some(thread),
        _lock: server_lock,
    })
}

/// Runs `f` holding the directory's init lock, so concurrent first starts (or a start and a
/// CLI edit) cannot make two CAs.
fn with_init_lock<T>(dir: &Path, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let path = dir.join(INIT_LOCK);
    let lock = File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", path.display()))?;
    let r = f();
    let _ = lock.unlock();
    r
}

fn random_chars(n: usize, alphabet: &[u8]) -> Result<String, String> {
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut b = [0u8; 1];
        rng.fill(&mut b)
            .map_err(|_| "the random generator failed".to_owned())?;
        // Rejection sampling keeps every character equally likely.
        let limit = 256 - 256 % alphabet.len();
        if usize::from(b[0]) < limit {
            out.push(char::from(alphabet[usize::from(b[0]) % alphabet.len()]));
        }
    }
    Ok(out)
}

/// A principal with fresh credentials shaped like IAM's: `AKIA` and 16 characters of
/// base32, and a 40-character secret.
pub fn generated_principal(account: &str) -> Result<Principal, String> {
    const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    Ok(Principal {
        access_key_id: format!("AKIA{}", random_chars(16, BASE32)?),
        secret_access_key: Secret::new(random_chars(40, SECRET)?),
        session_token: None,
        expiration: None,
        arn: format!("arn:aws:iam::{account}:user/kms-emulator"),
    })
}

/// Finds a key in `dir/keys.json` by key id or ARN.
pub fn find_key(dir: &Path, key_id: &str) -> Result<state::KeyRecord, String> {
    state::read_keys(dir)?
        .into_iter()
        .find(|k| k.key_id == key_id || k.arn == key_id)
        .ok_or_else(|| {
            format!(
                "no key {key_id:?} in {}",
                dir.join(state::KEYS_FILE).display()
            )
        })
}

/// Sets the policy of a key (the operator's side door: no lockout check, as with
/// `BypassPolicyLockoutSafetyCheck`). A running emulator picks it up on the next request.
pub fn set_policy(dir: &Path, key_id: &str, policy_json: &str) -> Result<(), String> {
    let key = find_key(dir, key_id)?;
    state::write_policy(dir, &key.key_id, &key.arn, policy_json)
}
