//! One auction run, start to finish, and what each way of failing means for cron.
//!
//! Order matters: nothing is written until the enclave's result has been checked, and
//! `output.csv` is written last, so a run that fails anywhere leaves no new `output.csv`.

use crate::aws::Env;
use crate::aws::credentials::{AssumeRole, CredentialSource};
use crate::aws::s3::{S3Client, S3Error};
use crate::config::{BuyerInput as BuyerLocation, Settings};
use crate::enclave::{self, DriveError, Observer};
use crate::log::Logger;
use crate::published::{self, Published};
use bidding_core::attestation::AWS_NITRO_ROOT_G1_DER;
use bidding_core::bidfile::{self, Limits};
use bidding_core::config::Mode;
use bidding_core::count;
use bidding_core::manifest::{FileEntry, FileFormat, MAX_MANIFEST_BYTES, Manifest};
use bidding_core::session::parent::{
    BuyerInput, EnclaveInfo, Finished, ParentSettings, SessionError, Terms, order_inputs,
};
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
    /// `--fail-on-set-aside` and at least one bid was set aside: the result was verified,
    /// nothing was written.
    SetAside = 8,
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

/// What this process has started writing to S3, for the interrupt handler's one line:
/// [`NOTHING_WRITTEN`], [`WRITING_MANIFEST`] or [`WRITING_RESULTS`].
pub static WRITING: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
pub const NOTHING_WRITTEN: u8 = 0;
pub const WRITING_MANIFEST: u8 = 1;
pub const WRITING_RESULTS: u8 = 2;

/// What a successful run did.
#[derive(Debug)]
pub struct Summary {
    pub files: usize,
    pub bytes: usize,
    pub finished: Option<Finished>,
}

/// Credentials and an S3 client, as both commands need them.
fn connect_aws(
    settings: &Settings,
    env: Env,
    log: &Logger,
) -> Result<
    (
        CredentialSource,
        bidding_core::credentials::Credentials,
        S3Client,
    ),
    RunError,
> {
    let ca_bundle = env.get("AWS_CA_BUNDLE").filter(|p| !p.is_empty());
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
    if let Some(note) = &settings.s3_endpoint_note {
        log.info(note);
    }
    let mut s3 = S3Client::new(settings.region.clone(), credentials.clone())
        .with_endpoint(settings.s3_endpoint.clone())
        .with_force_path_style(settings.s3_path_style);
    // As for the AWS CLI: AWS_CA_BUNDLE replaces the public roots (a local S3 over TLS).
    if let Some(path) = ca_bundle {
        let pem = std::fs::read(&path)
            .map_err(|e| fail(Exit::Config, format!("AWS_CA_BUNDLE {path}: {e}")))?;
        let http = crate::aws::http::HttpClient::with_ca_bundle(&pem)
            .map_err(|e| fail(Exit::Config, format!("AWS_CA_BUNDLE {path}: {e}")))?;
        s3 = s3.with_http(http);
    }
    Ok((source, credentials, s3))
}

fn read_bid_file(
    settings: &Settings,
    s3: &S3Client,
    input: &BuyerLocation,
) -> Result<Vec<u8>, RunError> {
    s3.get_object(
        &input.bucket,
        &input.key,
        settings.max_bid_file_bytes as u64,
    )
    .map_err(|e| {
        let why = if e.is_not_found() || e.is_access_denied() {
            format!(" {}", missing_or_unreadable("bid file", &e))
        } else {
            String::new()
        };
        fail(
            Exit::S3,
            format!("reading buyer `{}`'s bids: {e}.{why}", input.name),
        )
    })
}

/// The two causes a missing or refused buyer object can have, in one sentence: on real S3 a
/// reader without `s3:ListBucket` gets AccessDenied, not NoSuchKey, for a key that is not there.
pub fn missing_or_unreadable(what: &str, e: &S3Error) -> String {
    format!(
        "Either the {what} is not there yet, or the operator's role may not read s3://{}/{} (the buyer's bucket policy and this role's IAM policy must both allow s3:GetObject on it{})",
        e.bucket(),
        e.key(),
        if e.is_access_denied() {
            "; S3 answers AccessDenied for both"
        } else {
            ""
        }
    )
}

/// Reads a buyer's seal: `Ok(None)` when it is missing or unreadable (with the sentence why).
fn read_seal(s3: &S3Client, input: &BuyerLocation) -> Result<Result<Vec<u8>, String>, RunError> {
    match s3.get_object(&input.bucket, &input.seal_key, 64 * 1024) {
        Ok(text) => decode_seal(&text).map(Ok).map_err(|e| {
            fail(
                Exit::Input,
                format!(
                    "buyer `{}`'s seal s3://{}/{}: {e}",
                    input.name, input.bucket, input.seal_key
                ),
            )
        }),
        Err(e) if e.is_not_found() || e.is_access_denied() => Ok(Err(format!(
            "buyer `{name}`'s seal s3://{}/{} cannot be read ({}): either buyer `{name}` has not sealed the manifest yet (`bidctl seal --upload` puts it there), or the operator's role may not read it (the buyer's bucket policy and this role's IAM policy must both allow s3:GetObject on it{})",
            input.bucket,
            input.seal_key,
            e.service_error()
                .and_then(|x| x.code.clone())
                .unwrap_or_else(|| "not found".into()),
            if e.is_access_denied() {
                "; S3 answers AccessDenied for both when the role may not list the bucket"
            } else {
                ""
            },
            name = input.name,
        ))),
        Err(e) => Err(fail(
            Exit::S3,
            format!("reading buyer `{}`'s seal: {e}", input.name),
        )),
    }
}

/// What a bid file looks like from outside: what the operator may know (its format and, for
/// per-bid files, how many rows and whether they are well formed), never an amount.
fn describe_file(name: &str, bytes: &[u8], settings: &Settings) -> (FileFormat, String, usize) {
    let format = FileFormat::detect(bytes);
    let mut bids = 0;
    let text = match format {
        FileFormat::Envelope => format!("{} bytes, envelope", bytes.len()),
        FileFormat::PerBid => {
            let limits = Limits {
                max_bytes: settings.max_bid_file_bytes,
                ..Limits::default()
            };
            match bidfile::parse_encrypted_lenient(name, bytes, limits) {
                Ok(f) if f.rows.is_empty() && f.duplicate_lots.is_empty() => format!(
                    "{} bytes, per-bid, NO BIDS (a header and nothing else)",
                    bytes.len()
                ),
                Ok(f) => {
                    let n = f.rows.len();
                    bids = n;
                    let mut t = format!(
                        "{} bytes, per-bid, {n} {}",
                        bytes.len(),
                        if n == 1 { "bid" } else { "bids" }
                    );
                    if f.malformed_rows > 0 || !f.duplicate_lots.is_empty() {
                        t.push_str(&format!(
                            "; {} and {} named twice will be set aside",
                            count(f.malformed_rows, "malformed row", "malformed rows"),
                            count(f.duplicate_lots.len() as u64, "lot", "lots")
                        ));
                    }
                    t
                }
                Err(e) => format!(
                    "{} bytes, NOT A BID FILE ({e}); it will be set aside whole",
                    bytes.len()
                ),
            }
        }
    };
    (format, text, bids)
}

/// `bidding-parent manifest`: after the bid deadline, reads every buyer's file and writes the
/// manifest the buyers will seal. Prints its digest, H, on stdout.
pub fn make_manifest(settings: &Settings, env: Env, log: &Logger) -> Result<Manifest, RunError> {
    let (_, _, s3) = connect_aws(settings, env, log)?;
    let mut files = Vec::with_capacity(settings.inputs.len());
    for input in &settings.inputs {
        let bytes = read_bid_file(settings, &s3, input)?;
        let url = format!("s3://{}/{}", input.bucket, input.key);
        let (format, what, _) = describe_file(&url, &bytes, settings);
        if what.contains("NO BIDS") || what.contains("NOT A BID FILE") {
            log.warn(&format!("buyer `{}`: {url}: {what}", input.name));
        } else {
            log.info(&format!("buyer `{}`: {url}: {what}", input.name));
        }
        files.push(FileEntry {
            buyer: input.name.clone(),
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            size: bytes.len() as u64,
            sha256: bidding_core::config::sha256(&bytes),
            format,
        });
    }
    let manifest = Manifest::new(settings.auction.clone(), files)
        .map_err(|e| fail(Exit::Input, e.to_string()))?;
    let bytes = manifest.canonical_bytes();
    let out = &settings.output;
    check_manifest_replaceable(settings, &s3, &bytes, log)?;
    WRITING.store(WRITING_MANIFEST, std::sync::atomic::Ordering::SeqCst);
    s3.put_object(&out.bucket, &out.manifest_key, &bytes, "application/json")
        .map_err(|e| fail(Exit::S3, format!("writing the manifest: {e}")))?;
    log.info(&format!(
        "manifest for auction {} written to s3://{}/{}: SHA-256 {}. Every buyer now checks and seals it (bidctl seal); then run the auction",
        settings.auction.auction_id(),
        out.bucket,
        out.manifest_key,
        hex::encode(manifest.digest())
    ));
    println!(
        "{}  s3://{}/{}",
        hex::encode(manifest.digest()),
        out.bucket,
        out.manifest_key
    );
    Ok(manifest)
}

/// One auction never overwrites another: the manifest step refuses to replace a manifest of
/// another auction at its key, or any manifest whose auction already has a result (a new
/// manifest would orphan the published result); replacing this auction's own undecided
/// manifest is allowed, with a warning that every seal must be made again.
fn check_manifest_replaceable(
    settings: &Settings,
    s3: &S3Client,
    new: &[u8],
    log: &Logger,
) -> Result<(), RunError> {
    let out = &settings.output;
    let old = match s3.get_object(&out.bucket, &out.manifest_key, MAX_MANIFEST_BYTES as u64) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => {
            return Err(fail(
                Exit::S3,
                format!("checking for an earlier manifest: {e}"),
            ));
        }
    };
    if old == new {
        return Ok(());
    }
    let id = settings.auction.auction_id();
    if let Ok(m) = Manifest::parse(&old)
        && m.terms().auction_id() != id
    {
        return Err(fail(
            Exit::Input,
            format!(
                "s3://{}/{} holds the manifest of auction {}, not {id}; nothing was written (give each auction its own [output] prefix: the default is the auction id)",
                out.bucket,
                out.manifest_key,
                m.terms().auction_id()
            ),
        ));
    }
    match s3.get_object(&out.bucket, &out.key, 1) {
        Err(e) if e.is_not_found() => {}
        Ok(_) | Err(S3Error::TooLarge { .. }) => {
            return Err(fail(
                Exit::Input,
                format!(
                    "auction {id} already has a result at s3://{}/{}, made from the manifest there; a new manifest would orphan it, so nothing was written (a new auction takes a new auction id)",
                    out.bucket, out.key
                ),
            ));
        }
        Err(e) => {
            return Err(fail(
                Exit::S3,
                format!("checking for an earlier result: {e}"),
            ));
        }
    }
    log.warn(&format!(
        "replacing auction {id}'s earlier manifest at s3://{}/{} (its files changed): seals of the earlier one no longer count, every buyer seals the new one",
        out.bucket, out.manifest_key
    ));
    Ok(())
}

/// Runs the auction `settings` describes. `env` is the process environment.
pub fn run(settings: &Settings, env: Env, log: &Logger) -> Result<Summary, RunError> {
    let started = Instant::now();
    let _lock = lock(settings)?;

    let root_der = match &settings.attestation_root {
        None => AWS_NITRO_ROOT_G1_DER.to_vec(),
        Some(p) => read_root(p).map_err(|e| fail(Exit::Config, e))?,
    };
    let (source, credentials, s3) = connect_aws(settings, env, log)?;
    let out = &settings.output;

    let terms = if settings.sealed {
        let bytes = s3
            .get_object(&out.bucket, &out.manifest_key, MAX_MANIFEST_BYTES as u64)
            .map_err(|e| {
                // Advice about making the manifest only when it is not there.
                let advice = if e.is_not_found() {
                    " (make it with `bidding-parent manifest` after the bid deadline, and have every buyer seal it)"
                } else {
                    ""
                };
                fail(Exit::S3, format!("reading the manifest{advice}: {e}"))
            })?;
        let manifest = Manifest::parse(&bytes).map_err(|e| {
            fail(
                Exit::Input,
                format!("s3://{}/{}: {e}", out.bucket, out.manifest_key),
            )
        })?;
        check_manifest_matches(settings, &manifest)?;
        log.info(&format!(
            "sealed auction: manifest s3://{}/{} SHA-256 {}",
            out.bucket,
            out.manifest_key,
            hex::encode(manifest.digest())
        ));
        if !settings.rerun && !settings.dry_run {
            let trust = published::Trust {
                root_der: &root_der,
                expected_pcr0: settings.expected_pcr0.as_deref(),
                accept_qemu_unsigned: settings.accept_qemu_unsigned_attestation,
            };
            match published::check(&s3, out, &manifest, &bytes, &trust)
                .map_err(|e| fail(Exit::S3, format!("checking for a published result: {e}")))?
            {
                Published::Nothing => {}
                Published::Verified { lots } => {
                    log.info(&format!(
                        "auction {} is decided already: s3://{}/{} is its verified result ({}); nothing to do, nothing decrypted (--rerun runs it again)",
                        settings.auction.auction_id(),
                        out.bucket,
                        out.key,
                        count(lots, "lot", "lots")
                    ));
                    return Ok(Summary {
                        files: 0,
                        bytes: 0,
                        finished: None,
                    });
                }
                Published::NotVerified(why) => log.warn(&format!(
                    "s3://{}/{} is there but is not this manifest's verified result ({why}); running the auction, which replaces it",
                    out.bucket, out.key
                )),
            }
        }
        Terms::Sealed { manifest, bytes }
    } else {
        log.warn("UNSEALED auction: the buyers did not seal these terms, so nothing stops the operator from running it again with other terms; the result says so");
        Terms::Unsealed(settings.auction.clone())
    };

    let mut inputs = Vec::with_capacity(settings.inputs.len());
    let mut total = 0usize;
    let mut bids = 0usize;
    let mut missing_seals = Vec::new();
    for input in &settings.inputs {
        let bytes = read_bid_file(settings, &s3, input)?;
        let url = format!("s3://{}/{}", input.bucket, input.key);
        let (_, what, n) = describe_file(&url, &bytes, settings);
        bids += n;
        if what.contains("NO BIDS") || what.contains("NOT A BID FILE") {
            log.warn(&format!("buyer `{}`: {url}: {what}", input.name));
        } else {
            log.info(&format!("buyer `{}`: {url}: {what}", input.name));
        }
        total += bytes.len();
        let seal = if settings.sealed {
            match read_seal(&s3, input)? {
                Ok(seal) => Some(seal),
                Err(why) => {
                    missing_seals.push(why);
                    None
                }
            }
        } else {
            None
        };
        inputs.push(BuyerInput {
            buyer: input.name.clone(),
            file: bytes,
            seal,
        });
    }
    // Every missing seal at once: the operator tells each of those buyers.
    if let Some(last) = missing_seals.pop() {
        for why in &missing_seals {
            log.error(why);
        }
        return Err(fail(
            Exit::Input,
            format!(
                "{last}{}",
                if missing_seals.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} seals cannot be read in all; nothing was sent to the enclave)",
                        missing_seals.len() + 1
                    )
                }
            ),
        ));
    }
    let inputs = order_inputs(&terms, inputs).map_err(|e| fail(Exit::Input, e.to_string()))?;
    let mut parent = ParentSettings::new(root_der);
    parent.window = settings.window;
    parent.allow_dev = settings.allow_dev_enclave;
    parent.accept_qemu_unsigned = settings.accept_qemu_unsigned_attestation;
    parent.expected_pcr0 = settings.expected_pcr0.clone();
    parent.reply_timeout = settings.enclave_timeout_secs * 1000;
    parent.close_timeout = settings.enclave_timeout_secs * 1000;
    parent.hello_timeout = settings.enclave_timeout_secs.min(60) * 1000;
    parent.refresh_margin = settings.credentials_refresh_secs * 1000;
    if settings.dry_run {
        dry_run_checks(settings, &s3, parent, terms, log)?;
        log.info(&format!(
            "dry run: configuration, credentials, {}, {} ({total} bytes), the output bucket and the enclave are fine; nothing was written and the enclave got no credentials",
            if settings.sealed { "the manifest, every seal" } else { "the terms" },
            count(settings.inputs.len() as u64, "bid file", "bid files"),
        ));
        return Ok(Summary {
            files: inputs.len(),
            bytes: total,
            finished: None,
        });
    }

    log.info(&format!(
        "connecting to the enclave at {} ({}, {total} bytes, window {})",
        settings.enclave,
        count(inputs.len() as u64, "file", "files"),
        settings.window
    ));
    let mut refresh = || {
        let fresh = source.fetch().map_err(|e| e.to_string())?;
        s3.set_credentials(fresh.clone());
        log.info("credentials refreshed before expiry");
        Ok(fresh)
    };
    let mut observer = LogObserver { log };
    let session_started = Instant::now();
    let files = inputs.len();
    let finished = enclave::drive(
        &settings.enclave,
        parent,
        terms,
        inputs,
        credentials,
        &mut refresh,
        &mut observer,
    )
    .map_err(drive_error)?;
    let session_secs = session_started.elapsed().as_secs_f64();

    // The result is checked (attestation, digests, header): say what was set aside, from
    // the attested output.json, before anything is written.
    let h = &finished.header;
    for s in &h.set_aside {
        log.warn(&set_aside_line(s));
    }
    let set_aside_bids: u64 = h.set_aside.iter().map(|s| s.count).sum();
    if settings.fail_on_set_aside && set_aside_bids > 0 {
        return Err(fail(
            Exit::SetAside,
            format!(
                "{} set aside and --fail-on-set-aside is given, so nothing was written to s3://{}; the enclave's result was verified",
                count(set_aside_bids, "bid", "bids"),
                out.bucket
            ),
        ));
    }

    let mut writes: Vec<(&str, &[u8], &str)> =
        vec![(&out.json_key, &finished.output_json, "application/json")];
    if finished.mode == Mode::Unsealed {
        writes.push((&out.config_key, &finished.terms_json, "application/json"));
    }
    writes.push((
        &out.attestation_key,
        &finished.attestation,
        "application/cbor",
    ));
    // Last: its presence means the run completed.
    writes.push((&out.key, &finished.output_csv, "text/csv"));
    WRITING.store(WRITING_RESULTS, std::sync::atomic::Ordering::SeqCst);
    for (key, body, content_type) in writes {
        s3.put_object(&out.bucket, key, body, content_type)
            .map_err(|e| fail(Exit::S3, format!("writing results: {e}")))?;
    }
    log.info_with(
        &format!(
            "auction {} ({}) done in {:.1} s ({} from {}, {total} bytes; enclave session {session_secs:.1} s); wrote s3://{}/{} and its attestation s3://{}/{}",
            settings.auction.auction_id(),
            finished.mode,
            started.elapsed().as_secs_f64(),
            count(h.lot_count, "lot", "lots"),
            count(files as u64, "file", "files"),
            out.bucket,
            out.key,
            out.bucket,
            out.attestation_key
        ),
        serde_json::json!({
            "event": "done",
            "mode": finished.mode,
            "lots": h.lot_count,
            "files": files,
            "bytes": total,
            "bids": bids,
            "session_secs": session_secs,
            "set_aside": h.set_aside.iter().map(|s| serde_json::json!({"buyer": s.buyer, "reason": s.reason, "count": s.count, "lots": s.lots})).collect::<Vec<_>>(),
        }),
    );
    Ok(Summary {
        files,
        bytes: total,
        finished: Some(finished),
    })
}

/// What a dry run checks beyond the inputs: that the output bucket exists and may be written
/// (without writing: a multipart upload, aborted), and that the enclave answers and attests to
/// the expected PCR0 (hello only: it gets no credentials, terms or files). Both are checked
/// even when one fails; each failure is logged as one sentence naming the bucket or endpoint,
/// and the first decides the exit code.
fn dry_run_checks(
    settings: &Settings,
    s3: &S3Client,
    parent: ParentSettings,
    terms: Terms,
    log: &Logger,
) -> Result<(), RunError> {
    let out = &settings.output;
    let mut failures = Vec::new();
    match s3.check_writable(&out.bucket, &out.key) {
        Ok(()) => log.info(&format!(
            "dry run: the output bucket `{}` exists and these credentials may write to it (a multipart upload of {} was started and aborted; nothing was written)",
            out.bucket, out.key
        )),
        Err(e) => {
            let detail = e
                .service_error()
                .map(|x| x.to_string())
                .unwrap_or_else(|| e.to_string());
            let message = match &e {
                S3Error::NoSuchBucket { .. } => format!(
                    "dry run: the output bucket `{}` does not exist ({detail})",
                    out.bucket
                ),
                S3Error::Credentials { .. } => format!(
                    "dry run: these credentials may not write to the output bucket `{}`; the role needs s3:PutObject and s3:AbortMultipartUpload on {} ({detail})",
                    out.bucket, out.key
                ),
                _ => format!(
                    "dry run: could not check that the output bucket `{}` may be written: {e}",
                    out.bucket
                ),
            };
            failures.push(fail(Exit::S3, message));
        }
    }
    let endpoint = &settings.enclave;
    match enclave::probe(endpoint, parent, terms, settings.region.clone()) {
        Ok(info) => log.info(&format!(
            "dry run: the enclave at {endpoint} ({}{}) attested, PCR0 {}{}; it got no credentials",
            info.build,
            if info.dev { ", DEV build" } else { "" },
            hex::encode(&info.pcr0),
            if settings.expected_pcr0.is_some() {
                " as expected"
            } else {
                " (dev run: no PCR0 is expected)"
            }
        )),
        Err(e) => {
            let message = match &e {
                DriveError::Connect { source, .. } => {
                    format!("dry run: cannot reach the enclave at {endpoint} ({source})")
                }
                DriveError::Session(SessionError::Pcr0Mismatch { expected, found }) => format!(
                    "dry run: the enclave at {endpoint} attests to PCR0 {found}, not the expected {expected}"
                ),
                other => format!("dry run: the enclave at {endpoint} failed its check: {other}"),
            };
            failures.push(fail(Exit::Enclave, message));
        }
    }
    let mut failures = failures.into_iter();
    match failures.next() {
        None => Ok(()),
        Some(first) => {
            for other in failures {
                log.error(&other.message);
            }
            Err(first)
        }
    }
}

/// `buyer `Buyer1`: 3 bids set aside (invalid_amount) on lots 1, 2, 3`: lot ids from the
/// attested output.json where the enclave listed them (per-bid files only), never amounts.
pub fn set_aside_line(s: &bidding_core::output::SetAside) -> String {
    // A file set aside whole is one file, however many bids it held.
    let what = if s.reason == bidding_core::auction::Reason::MalformedFile {
        if s.count == 1 {
            "the whole file".to_owned()
        } else {
            format!("{} whole files", s.count)
        }
    } else {
        count(s.count, "bid", "bids")
    };
    let mut line = format!("buyer `{}`: {what} set aside ({})", s.buyer, s.reason);
    if let Some(lots) = &s.lots {
        let on = lots.describe();
        if !on.is_empty() {
            line.push(' ');
            line.push_str(&on);
        }
    }
    line
}

/// The manifest must be for exactly the configured auction: the same terms, and each buyer's
/// file where the configuration says it is.
fn check_manifest_matches(settings: &Settings, manifest: &Manifest) -> Result<(), RunError> {
    if manifest.terms() != &settings.auction {
        return Err(fail(
            Exit::Config,
            format!(
                "the manifest's terms differ from the configuration (manifest: {}; configuration: {}); make a new manifest, and every buyer seals it again",
                String::from_utf8_lossy(&manifest.terms().canonical_bytes()),
                String::from_utf8_lossy(&settings.auction.canonical_bytes())
            ),
        ));
    }
    for input in &settings.inputs {
        let f = manifest.file(&input.name).expect("same terms, same buyers");
        if f.bucket != input.bucket || f.key != input.key {
            return Err(fail(
                Exit::Config,
                format!(
                    "buyer `{}`: the manifest names s3://{}/{}, the configuration s3://{}/{}",
                    input.name, f.bucket, f.key, input.bucket, input.key
                ),
            ));
        }
    }
    Ok(())
}

/// A seal as `bidctl seal` writes it: base64 of KMS's ciphertext, surrounding whitespace
/// allowed.
pub fn decode_seal(text: &[u8]) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let text = text.trim_ascii();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("not base64 ({e})"))
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
            code: ErrorCode::KmsAccessDenied,
            request,
            message,
        }) => fail(
            Exit::Credentials,
            format!(
                "KMS denied access while the enclave opened {request}: {message}; nothing was decided or written"
            ),
        ),
        DriveError::Session(SessionError::Enclave {
            code:
                code @ (ErrorCode::SealRefused
                | ErrorCode::FileMismatch
                | ErrorCode::MissingFile
                | ErrorCode::InvalidManifest
                | ErrorCode::KeyBinding
                | ErrorCode::KeyUnavailable),
            request,
            message,
        }) => fail(
            Exit::Input,
            format!("enclave refused {request}: {code}: {message}; nothing was decided or written"),
        ),
        DriveError::Session(SessionError::Enclave {
            code: ErrorCode::ReplayedCiphertext,
            request,
            message,
        }) => fail(
            Exit::Enclave,
            format!(
                "enclave refused {request}: {message}. In an unsealed auction the enclave opens a ciphertext once per boot; restart it (nitro-cli terminate-enclave / run-enclave) to run this auction again, or seal the auction (reruns of a sealed auction need no restart)"
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
}

impl Observer for LogObserver<'_> {
    fn connected(&mut self, info: &EnclaveInfo) {
        self.log.info(&format!(
            "enclave {} ({}{}) attested, PCR0 {}{}",
            info.module_id,
            info.build,
            if info.dev { ", DEV build" } else { "" },
            hex::encode(&info.pcr0),
            if info.dev {
                " (dev run: no PCR0 is trusted)"
            } else {
                " as expected"
            }
        ));
        if info.dev {
            self.log.warn(
                "this is a dev enclave with a software NSM: its results prove nothing to anyone",
            );
        }
    }
    fn sealed(&mut self) {
        self.log
            .info("every buyer's seal opened inside the enclave: they consented to this manifest");
    }
    fn progress(&mut self, done: u64, total: u64) {
        self.log.progress(done as usize, total as usize);
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

#[cfg(test)]
mod tests {
    use super::*;
    use bidding_core::auction::Reason;
    use bidding_core::names::BuyerName;
    use bidding_core::output::SetAside;

    #[test]
    fn a_file_set_aside_whole_is_called_a_file() {
        let line = |reason, count| {
            set_aside_line(&SetAside {
                buyer: BuyerName::new("B").unwrap(),
                reason,
                count,
                lots: None,
            })
        };
        assert_eq!(
            line(Reason::MalformedFile, 1),
            "buyer `B`: the whole file set aside (malformed_file)"
        );
        assert_eq!(
            line(Reason::InvalidAmount, 1),
            "buyer `B`: 1 bid set aside (invalid_amount)"
        );
    }
}
