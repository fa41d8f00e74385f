//! One auction run, start to finish, and what each way of failing means for cron.
//!
//! Order matters: nothing is written until the enclave's result has been checked, and
//! `output.csv` is written last, so a run that fails anywhere leaves no new `output.csv`.

use crate::aws::Env;
use crate::aws::credentials::{AssumeRole, CredentialSource};
use crate::aws::s3::S3Client;
use crate::config::Settings;
use crate::enclave::{self, DriveError, Observer};
use crate::log::Logger;
use bidding_core::attestation::AWS_NITRO_ROOT_G1_DER;
use bidding_core::bidfile::{self, Limits};
use bidding_core::lots::{self, BuyerFile};
use bidding_core::session::parent::{EnclaveInfo, Finished, ParentSettings, SessionError};
use bidding_core::wire::ErrorCode;
use std::fmt;
use std::fs::{File, TryLockError};
use std::time::Instant;

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Internal = 1,
    Config = 2,
    Input = 3,
    Enclave = 4,
    S3 = 5,
    Credentials = 6,
    Locked = 7,
}

#[derive(Debug)]
pub struct RunError {
    pub exit: Exit,
    pub message: String,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn fail(exit: Exit, message: impl Into<String>) -> RunError {
    RunError {
        exit,
        message: message.into(),
    }
}

/// What a successful run did.
#[derive(Debug)]
pub struct Summary {
    pub lots: usize,
    pub bids: usize,
    pub finished: Option<Finished>,
}

/// Runs the auction `settings` describes. `env` is the process environment.
pub fn run(settings: &Settings, env: Env, log: &Logger) -> Result<Summary, RunError> {
    let started = Instant::now();
    let _lock = lock(settings)?;

    let root_der = match &settings.attestation_root {
        None => AWS_NITRO_ROOT_G1_DER.to_vec(),
        Some(p) => read_root(p).map_err(|e| fail(Exit::Config, e))?,
    };

    let mut source = match &settings.profile {
        Some(name) => CredentialSource::profile(env, settings.region.clone(), Some(name.clone())),
        None => CredentialSource::chain(env, settings.region.clone()),
    };
    if let Some(role) = &settings.assume_role {
        let session = format!("bidding-parent-{}", settings.auction.auction_id());
        source = source.assume_role(AssumeRole::new(role.clone(), session));
    }
    let (credentials, provider) = source
        .fetch_with_provider()
        .map_err(|e| fail(Exit::Credentials, e.to_string()))?;
    log.info(&format!(
        "auction {}: credentials from {provider}, region {}",
        settings.auction.auction_id(),
        settings.region
    ));

    let s3 = S3Client::new(settings.region.clone(), credentials.clone())
        .with_endpoint(settings.s3_endpoint.clone())
        .with_force_path_style(settings.s3_path_style);

    let mut files = Vec::with_capacity(settings.inputs.len());
    let mut bids = 0;
    for input in &settings.inputs {
        let name = format!("s3://{}/{}", input.bucket, input.key);
        let bytes = s3
            .get_object(
                &input.bucket,
                &input.key,
                settings.max_bid_file_bytes as u64,
            )
            .map_err(|e| {
                fail(
                    Exit::S3,
                    format!("reading buyer `{}`'s bids: {e}", input.name),
                )
            })?;
        let limits = Limits {
            max_bytes: settings.max_bid_file_bytes,
            ..Limits::default()
        };
        let rows = bidfile::parse_encrypted(&name, &bytes, limits)
            .map_err(|e| fail(Exit::Input, format!("buyer `{}`: {e}", input.name)))?;
        log.info(&format!(
            "buyer `{}`: {} bids in {name}",
            input.name,
            rows.len()
        ));
        bids += rows.len();
        files.push(BuyerFile {
            buyer: input.name.clone(),
            file: name,
            rows,
        });
    }
    let lots = lots::assemble(files).map_err(|e| fail(Exit::Input, e.to_string()))?;
    if lots.is_empty() {
        return Err(fail(
            Exit::Input,
            "no bids in any buyer's file: nothing to decide",
        ));
    }
    if settings.dry_run {
        log.info(&format!(
            "dry run: configuration, credentials and {} bid files are fine ({} lots, {bids} bids); the enclave was not contacted",
            settings.inputs.len(),
            lots.len()
        ));
        return Ok(Summary {
            lots: lots.len(),
            bids,
            finished: None,
        });
    }

    let mut parent = ParentSettings::new(root_der);
    parent.window = settings.window;
    parent.allow_dev = settings.allow_dev_enclave;
    parent.expected_pcr0 = settings.expected_pcr0.clone();
    parent.reply_timeout = settings.enclave_timeout_secs * 1000;
    parent.close_timeout = settings.enclave_timeout_secs * 1000;
    parent.hello_timeout = settings.enclave_timeout_secs.min(60) * 1000;
    parent.refresh_margin = settings.credentials_refresh_secs * 1000;
    let lot_count = lots.len();
    log.info(&format!(
        "connecting to the enclave at {} ({lot_count} lots, {bids} bids, window {})",
        settings.enclave, settings.window
    ));
    let mut refresh = || {
        let fresh = source.fetch().map_err(|e| e.to_string())?;
        s3.set_credentials(fresh.clone());
        log.info("credentials refreshed before expiry");
        Ok(fresh)
    };
    let mut observer = LogObserver {
        log,
        expected_pcr0: settings.expected_pcr0.is_some(),
    };
    let session_started = Instant::now();
    let finished = enclave::drive(
        &settings.enclave,
        parent,
        settings.auction.clone(),
        lots,
        credentials,
        &mut refresh,
        &mut observer,
    )
    .map_err(drive_error)?;
    let session_secs = session_started.elapsed().as_secs_f64();

    let out = &settings.output;
    let writes: [(&str, &[u8], &str); 4] = [
        (&out.json_key, &finished.output_json, "application/json"),
        (&out.config_key, &finished.config_json, "application/json"),
        (
            &out.attestation_key,
            &finished.attestation,
            "application/cbor",
        ),
        // Last: its presence means the run completed.
        (&out.key, &finished.output_csv, "text/csv"),
    ];
    for (key, body, content_type) in writes {
        s3.put_object(&out.bucket, key, body, content_type)
            .map_err(|e| fail(Exit::S3, format!("writing results: {e}")))?;
    }
    let (p50, p99) = percentiles(&finished.lot_latency_ms);
    log.info_with(
        &format!(
            "auction {} done in {:.1} s ({lot_count} lots, {bids} bids; enclave session {session_secs:.1} s, {:.0} bids/s, lot latency p50 {p50} ms, p99 {p99} ms); wrote s3://{}/{} and its attestation s3://{}/{}",
            settings.auction.auction_id(),
            started.elapsed().as_secs_f64(),
            bids as f64 / session_secs.max(1e-9),
            out.bucket,
            out.key,
            out.bucket,
            out.attestation_key
        ),
        serde_json::json!({
            "event": "done",
            "lots": lot_count,
            "bids": bids,
            "session_secs": session_secs,
            "p50_ms": p50,
            "p99_ms": p99,
        }),
    );
    Ok(Summary {
        lots: lot_count,
        bids,
        finished: Some(finished),
    })
}

/// Median and 99th percentile (nearest rank).
fn percentiles(values: &[u64]) -> (u64, u64) {
    let mut v = values.to_vec();
    v.sort_unstable();
    let at = |q: f64| -> u64 {
        if v.is_empty() {
            return 0;
        }
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    };
    (at(0.50), at(0.99))
}

fn drive_error(e: DriveError) -> RunError {
    match e {
        DriveError::Credentials(m) => fail(Exit::Credentials, m),
        DriveError::Session(SessionError::Enclave {
            code: ErrorCode::KmsCredentials,
            request,
            message,
        }) => fail(
            Exit::Credentials,
            format!("KMS refused the credentials while the enclave opened {request}: {message}"),
        ),
        DriveError::Session(SessionError::Enclave {
            code: ErrorCode::ReplayedCiphertext,
            request,
            message,
        }) => fail(
            Exit::Enclave,
            format!(
                "enclave refused {request}: {message}. The enclave has already opened these bids since it started; restart it (nitro-cli terminate-enclave / run-enclave) to run this auction again"
            ),
        ),
        DriveError::Session(SessionError::Enclave {
            code: ErrorCode::Busy,
            ..
        }) => fail(
            Exit::Enclave,
            "the enclave is serving another parent session; try again later",
        ),
        other => fail(Exit::Enclave, format!("{other}; nothing was written")),
    }
}

struct LogObserver<'a> {
    log: &'a Logger,
    expected_pcr0: bool,
}

impl Observer for LogObserver<'_> {
    fn connected(&mut self, info: &EnclaveInfo) {
        self.log.info(&format!(
            "enclave {} ({}{}) attested, PCR0 {}{}",
            info.module_id,
            info.build,
            if info.dev { ", DEV build" } else { "" },
            hex::encode(&info.pcr0),
            if self.expected_pcr0 {
                " as expected"
            } else {
                " (no expected PCR0 configured)"
            }
        ));
        if info.dev {
            self.log.warn(
                "this is a dev enclave with a software NSM: its results prove nothing to anyone",
            );
        }
    }
    fn progress(&mut self, done: usize, total: usize) {
        self.log.progress(done, total);
    }
}

fn lock(settings: &Settings) -> Result<File, RunError> {
    let path = &settings.lock_file;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| fail(Exit::Config, format!("lock file {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(fail(
            Exit::Locked,
            format!(
                "another bidding-parent run holds {}; not starting",
                path.display()
            ),
        )),
        Err(TryLockError::Error(e)) => Err(fail(
            Exit::Config,
            format!("lock file {}: {e}", path.display()),
        )),
    }
}

fn read_root(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let bytes =
        std::fs::read(path).map_err(|e| format!("attestation root {}: {e}", path.display()))?;
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(bytes);
    }
    CertificateDer::from_pem_slice(&bytes)
        .map(|c| c.as_ref().to_vec())
        .map_err(|e| {
            format!(
                "attestation root {}: not a PEM certificate ({e})",
                path.display()
            )
        })
}
