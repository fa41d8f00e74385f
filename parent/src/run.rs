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
use bidding_core::names::{AuctionId, BuyerName};
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
    /// The result is written (or was already, verified), or there is nothing to do yet: a
    /// sealed auction without its manifest.
    Success = 0,
    Internal = 1,
    Config = 2,
    /// A buyer's input is missing or wrong: a bid file or seal not there or not readable
    /// (NoSuchKey or AccessDenied on that object, which real S3 does not tell apart), a seal
    /// of another manifest, a file changed since the manifest, an input the enclave refused.
    Input = 3,
    Enclave = 4,
    /// Every other S3 failure: the manifest or the output bucket, refused credentials,
    /// throttling, no answer.
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

/// Credentials and an S3 client, as both commands need them. The lines that say how the run is
/// set up (where the credentials came from, an S3 endpoint taken from the environment) go to
/// `setup`, for the caller to log once it is clear there is something to do.
fn connect_aws(
    settings: &Settings,
    env: Env,
    setup: &mut Vec<String>,
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
    setup.push(format!(
        "auction {}: credentials from {provider}, region {}",
        settings.auction.auction_id(),
        settings.region
    ));
    if let Some(note) = &settings.s3_endpoint_note {
        setup.push(note.clone());
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

/// Whether S3's answer for a buyer's object means it is not there or may not be read: an
/// input the auction lacks (exit 3), not a failure of S3 (exit 5). Real S3 answers
/// AccessDenied, not NoSuchKey, for a missing key when the reader may not list the bucket, so
/// the two cannot be told apart and are treated alike.
fn is_missing(e: &S3Error) -> bool {
    e.is_not_found() || e.is_access_denied()
}

/// The sentence for a buyer's bid file or seal that cannot be read: where it should be, what
/// S3 said, and both possible causes, `not_there` (what the buyer still has to do) and the
/// operator's role not being allowed to read it.
fn unreadable(
    buyer: &BuyerName,
    what: &str,
    bucket: &str,
    key: &str,
    e: &S3Error,
    not_there: &str,
) -> String {
    let code = e
        .service_error()
        .and_then(|x| x.code.clone())
        .unwrap_or_else(|| "not found".into());
    if matches!(e, S3Error::NoSuchBucket { .. }) {
        return format!(
            "buyer `{buyer}`'s {what} s3://{bucket}/{key} cannot be read: the bucket `{bucket}` does not exist ({code}); check buyer `{buyer}`'s bucket in the configuration"
        );
    }
    format!(
        "buyer `{buyer}`'s {what} s3://{bucket}/{key} cannot be read ({code}): either {not_there}, or the operator's role may not read it (the buyer's bucket policy and this role's IAM policy must both allow s3:GetObject on it{})",
        if e.is_access_denied() {
            "; S3 answers AccessDenied for both when the role may not list the bucket"
        } else {
            ""
        }
    )
}

/// Reads a buyer's bid file: `Ok(Err(sentence))` when it is not there or may not be read
/// ([`unreadable`]), so that every such file can be named at once.
fn read_bid_file(
    settings: &Settings,
    s3: &S3Client,
    input: &BuyerLocation,
) -> Result<Result<Vec<u8>, String>, RunError> {
    match s3.get_object(
        &input.bucket,
        &input.key,
        settings.max_bid_file_bytes as u64,
    ) {
        Ok(bytes) => Ok(Ok(bytes)),
        Err(e) if is_missing(&e) => Ok(Err(unreadable(
            &input.name,
            "bid file",
            &input.bucket,
            &input.key,
            &e,
            &format!(
                "it is not there yet (buyer `{}` uploads it before the bid deadline)",
                input.name
            ),
        ))),
        Err(e) => Err(fail(
            Exit::S3,
            format!("reading buyer `{}`'s bids: {e}", input.name),
        )),
    }
}

/// The user metadata `bidctl seal --upload` gives a seal object: the SHA-256 (hex) of the
/// manifest it seals, and that manifest's auction id. It lets the parent tell, before it sends
/// anything to the enclave and with no KMS call, a seal that is not for this manifest (an
/// earlier auction's at the same key, or one made before this auction's manifest was made
/// again). Only a hint: a seal without it (uploaded with `aws s3 cp`) is sent as it is, and
/// the enclave's own check (the seal must open under this manifest's context) decides.
pub const SEAL_METADATA_MANIFEST: &str = "bidding-manifest-sha256";
/// See [`SEAL_METADATA_MANIFEST`].
pub const SEAL_METADATA_AUCTION: &str = "bidding-auction";

/// Reads a buyer's seal of `manifest`: `Ok(Err(sentence))` when it is not there, may not be
/// read, or says it seals another manifest, so that every such seal can be named at once.
fn read_seal(
    s3: &S3Client,
    input: &BuyerLocation,
    manifest: &Manifest,
) -> Result<Result<Vec<u8>, String>, RunError> {
    let name = &input.name;
    match s3.get_object_with_metadata(&input.bucket, &input.seal_key, 64 * 1024) {
        Ok(object) => {
            let this = hex::encode(manifest.digest());
            // Only a well-formed digest is judged (and shown): the metadata is the buyer's.
            if let Some(other) = object
                .metadata(SEAL_METADATA_MANIFEST)
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .filter(|h| !h.eq_ignore_ascii_case(&this))
            {
                let of = object
                    .metadata(SEAL_METADATA_AUCTION)
                    .and_then(|a| AuctionId::new(a).ok())
                    .map(|a| format!(" of auction {a}"))
                    .unwrap_or_default();
                return Ok(Err(format!(
                    "buyer `{name}`'s seal s3://{}/{} seals another manifest{of} (SHA-256 {}, its object metadata says), not this one ({this}): buyer `{name}` has not sealed this manifest yet (`bidctl seal --upload` replaces it)",
                    input.bucket,
                    input.seal_key,
                    other.to_ascii_lowercase()
                )));
            }
            decode_seal(&object.body).map(Ok).map_err(|e| {
                fail(
                    Exit::Input,
                    format!(
                        "buyer `{name}`'s seal s3://{}/{}: {e}",
                        input.bucket, input.seal_key
                    ),
                )
            })
        }
        Err(e) if is_missing(&e) => Ok(Err(unreadable(
            name,
            "seal",
            &input.bucket,
            &input.seal_key,
            &e,
            &format!(
                "buyer `{name}` has not sealed the manifest yet (`bidctl seal --upload` puts it there)"
            ),
        ))),
        Err(e) => Err(fail(
            Exit::S3,
            format!("reading buyer `{name}`'s seal: {e}"),
        )),
    }
}

/// Every buyer object that cannot be read, at once: each sentence but the last logged as an
/// error, the last the command's error (exit 3), saying how many in all and `outcome` (what
/// was not done).
fn unreadable_inputs(
    log: &Logger,
    mut sentences: Vec<String>,
    files: usize,
    seals: usize,
    outcome: &str,
) -> RunError {
    let last = sentences.pop().expect("at least one");
    for why in &sentences {
        log.error(why);
    }
    let mut what = Vec::new();
    if files > 0 {
        what.push(count(files as u64, "bid file", "bid files"));
    }
    if seals > 0 {
        what.push(count(seals as u64, "seal", "seals"));
    }
    fail(
        Exit::Input,
        if sentences.is_empty() {
            format!("{last}; {outcome}")
        } else {
            format!(
                "{last} ({} cannot be read in all; {outcome})",
                what.join(" and ")
            )
        },
    )
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
    let mut setup = Vec::new();
    let (_, _, s3) = connect_aws(settings, env, &mut setup)?;
    for line in &setup {
        log.info(line);
    }
    let mut files = Vec::with_capacity(settings.inputs.len());
    let mut missing = Vec::new();
    for input in &settings.inputs {
        let bytes = match read_bid_file(settings, &s3, input)? {
            Ok(bytes) => bytes,
            Err(why) => {
                missing.push(why);
                continue;
            }
        };
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
    if !missing.is_empty() {
        let n = missing.len();
        return Err(unreadable_inputs(
            log,
            missing,
            n,
            0,
            "no manifest was written",
        ));
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

/// The manifest at the output keys: `None` when there is none yet, which for a sealed auction
/// means its bid deadline has not passed (`bidding-parent manifest` makes it then). Any other
/// failure to read it is an S3 error (exit 5), with no advice about making one: it may well be
/// there.
fn read_manifest(
    settings: &Settings,
    s3: &S3Client,
) -> Result<Option<(Manifest, Vec<u8>)>, RunError> {
    let out = &settings.output;
    let bytes = match s3.get_object(&out.bucket, &out.manifest_key, MAX_MANIFEST_BYTES as u64) {
        Ok(bytes) => bytes,
        // A missing bucket is a configuration to fix, not an auction still taking bids.
        Err(e) if e.is_not_found() && !matches!(e, S3Error::NoSuchBucket { .. }) => {
            return Ok(None);
        }
        Err(e) => {
            let hint = if e.is_access_denied() {
                " (the role needs s3:GetObject on the output bucket's objects, and s3:ListBucket on the bucket so that a manifest not made yet reads as missing rather than AccessDenied)"
            } else {
                ""
            };
            return Err(fail(Exit::S3, format!("reading the manifest: {e}{hint}")));
        }
    };
    let manifest = Manifest::parse(&bytes).map_err(|e| {
        fail(
            Exit::Input,
            format!("s3://{}/{}: {e}", out.bucket, out.manifest_key),
        )
    })?;
    check_manifest_matches(settings, &manifest)?;
    Ok(Some((manifest, bytes)))
}

/// Stand-in terms for a dry run before the manifest exists: the configured auction and file
/// locations, with no sizes or digests. Only the enclave's hello sees their rule set (sealed);
/// nothing is opened, decided or sent under them.
fn terms_before_the_manifest(settings: &Settings) -> Result<Terms, RunError> {
    let files = settings
        .inputs
        .iter()
        .map(|i| FileEntry {
            buyer: i.name.clone(),
            bucket: i.bucket.clone(),
            key: i.key.clone(),
            size: 0,
            sha256: [0; 32],
            format: FileFormat::PerBid,
        })
        .collect();
    let manifest = Manifest::new(settings.auction.clone(), files)
        .map_err(|e| fail(Exit::Config, e.to_string()))?;
    let bytes = manifest.canonical_bytes();
    Ok(Terms::Sealed { manifest, bytes })
}

/// Runs the auction `settings` describes. `env` is the process environment.
///
/// A run with nothing to do logs one line and exits 0, so the timer can stay on for an
/// auction's whole life: before the bid deadline (a sealed auction with no manifest yet), and
/// once the auction is decided (a verified result of these terms is published; `--rerun` runs
/// it again). The lines that describe the run's setup are held back until there is work.
pub fn run(settings: &Settings, env: Env, log: &Logger) -> Result<Summary, RunError> {
    let started = Instant::now();
    let _lock = lock(settings)?;

    let root_der = match &settings.attestation_root {
        None => AWS_NITRO_ROOT_G1_DER.to_vec(),
        Some(p) => read_root(p).map_err(|e| fail(Exit::Config, e))?,
    };
    let mut setup = Vec::new();
    let (source, credentials, s3) = connect_aws(settings, env, &mut setup)?;
    let out = &settings.output;
    let id = settings.auction.auction_id();
    let nothing_to_do = || Summary {
        files: 0,
        bytes: 0,
        finished: None,
    };

    // The terms: the manifest the buyers sealed, or (unsealed) the configuration.
    let mut before_manifest = false;
    let terms = if settings.sealed {
        match read_manifest(settings, &s3)? {
            Some((manifest, bytes)) => {
                setup.push(format!(
                    "sealed auction: manifest s3://{}/{} SHA-256 {}",
                    out.bucket,
                    out.manifest_key,
                    hex::encode(manifest.digest())
                ));
                Terms::Sealed { manifest, bytes }
            }
            None if settings.dry_run => {
                before_manifest = true;
                terms_before_the_manifest(settings)?
            }
            None => {
                log.info(&format!(
                    "auction {id} has no manifest at s3://{}/{} yet: nothing to do until the bid deadline, when `bidding-parent manifest` makes it and every buyer seals it; nothing else was read, nothing decrypted",
                    out.bucket, out.manifest_key
                ));
                return Ok(nothing_to_do());
            }
        }
    } else {
        Terms::Unsealed(settings.auction.clone())
    };

    let mut replacing = None;
    if !settings.rerun && !settings.dry_run {
        let trust = published::Trust {
            root_der: &root_der,
            expected_pcr0: settings.expected_pcr0.as_deref(),
            accept_qemu_unsigned: settings.accept_qemu_unsigned_attestation,
        };
        match published::check(&s3, out, &terms, &trust)
            .map_err(|e| fail(Exit::S3, format!("checking for a published result: {e}")))?
        {
            Published::Nothing => {}
            Published::Verified { lots } => {
                log.info(&format!(
                    "auction {id} is decided already: s3://{}/{} is its verified result ({}); nothing to do, nothing decrypted (--rerun runs it again{})",
                    out.bucket,
                    out.key,
                    count(lots, "lot", "lots"),
                    if settings.sealed {
                        ""
                    } else {
                        "; an unsealed auction's rerun also needs a freshly started enclave"
                    }
                ));
                return Ok(nothing_to_do());
            }
            Published::NotVerified(why) => {
                replacing = Some(format!(
                    "s3://{}/{} is there but is not the verified result of these terms ({why}); running the auction, which replaces it",
                    out.bucket, out.key
                ));
            }
        }
    }
    for line in &setup {
        log.info(line);
    }
    if !settings.sealed {
        log.warn("UNSEALED auction: the buyers did not seal these terms, so nothing stops the operator from running it again with other terms; the result says so");
    }
    if let Some(line) = &replacing {
        log.warn(line);
    }

    let mut inputs = Vec::with_capacity(settings.inputs.len());
    let mut total = 0usize;
    let mut bids = 0usize;
    let mut unread = Vec::new();
    let (mut unread_files, mut unread_seals, mut not_yet) = (0usize, 0usize, 0u64);
    for input in &settings.inputs {
        let bytes = match read_bid_file(settings, &s3, input)? {
            Ok(bytes) => bytes,
            // Before the bid deadline a bid file may well not be there yet.
            Err(why) if before_manifest => {
                log.warn(&format!(
                    "dry run: {why}. Not an error before the manifest: `bidding-parent manifest` needs it after the bid deadline"
                ));
                not_yet += 1;
                continue;
            }
            Err(why) => {
                unread.push(why);
                unread_files += 1;
                continue;
            }
        };
        let url = format!("s3://{}/{}", input.bucket, input.key);
        let (_, what, n) = describe_file(&url, &bytes, settings);
        bids += n;
        if what.contains("NO BIDS") || what.contains("NOT A BID FILE") {
            log.warn(&format!("buyer `{}`: {url}: {what}", input.name));
        } else {
            log.info(&format!("buyer `{}`: {url}: {what}", input.name));
        }
        total += bytes.len();
        let seal = match &terms {
            Terms::Sealed { manifest, .. } if !before_manifest => {
                match read_seal(&s3, input, manifest)? {
                    Ok(seal) => Some(seal),
                    Err(why) => {
                        unread.push(why);
                        unread_seals += 1;
                        None
                    }
                }
            }
            _ => None,
        };
        inputs.push(BuyerInput {
            buyer: input.name.clone(),
            file: bytes,
            seal,
        });
    }
    // Every missing file and seal at once: the operator tells each of those buyers.
    if !unread.is_empty() {
        return Err(unreadable_inputs(
            log,
            unread,
            unread_files,
            unread_seals,
            "nothing was sent to the enclave",
        ));
    }
    let inputs = if before_manifest {
        inputs
    } else {
        order_inputs(&terms, inputs).map_err(|e| fail(Exit::Input, e.to_string()))?
    };
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
        let files = count(inputs.len() as u64, "bid file", "bid files");
        if before_manifest {
            log.info(&format!(
                "dry run: configuration, credentials, {files} ({total} bytes), the output bucket and the enclave are fine; not checked yet: the manifest (none at s3://{}/{} until `bidding-parent manifest` after the bid deadline), the seals{}; nothing was written and the enclave got no credentials",
                out.bucket,
                out.manifest_key,
                if not_yet > 0 {
                    format!(
                        ", and {} not there yet or not readable (above)",
                        count(not_yet, "bid file", "bid files")
                    )
                } else {
                    String::new()
                }
            ));
        } else {
            log.info(&format!(
                "dry run: configuration, credentials, {}, {files} ({total} bytes), the output bucket and the enclave are fine; nothing was written and the enclave got no credentials",
                if settings.sealed {
                    "the manifest, every seal"
                } else {
                    "the terms"
                },
            ));
        }
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
    if settings.fail_on_set_aside && !h.set_aside.is_empty() {
        return Err(fail(
            Exit::SetAside,
            format!(
                "{} set aside and --fail-on-set-aside is given, so nothing was written to s3://{}; the enclave's result was verified",
                set_aside_total(&h.set_aside),
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
    // A file set aside whole is one file, however many bids it held (`Reason::counted`).
    let mut line = format!(
        "buyer `{}`: {} set aside ({})",
        s.buyer,
        s.reason.counted(s.count),
        s.reason
    );
    if let Some(lots) = &s.lots {
        let on = lots.describe();
        if !on.is_empty() {
            line.push(' ');
            line.push_str(&on);
        }
    }
    line
}

/// Everything set aside, in one phrase: `29 bids`, `3 bids and the whole file` (files set aside
/// whole are counted as files, [`Reason::counted`](bidding_core::auction::Reason::counted)).
fn set_aside_total(list: &[bidding_core::output::SetAside]) -> String {
    let (files, bids): (Vec<_>, Vec<_>) = list.iter().partition(|s| s.reason.is_whole_file());
    let mut parts = Vec::new();
    let bids: u64 = bids.iter().map(|s| s.count).sum();
    if bids > 0 {
        parts.push(count(bids, "bid", "bids"));
    }
    let files: u64 = files.iter().map(|s| s.count).sum();
    if files > 0 {
        parts.push(if files == 1 {
            "a whole file".to_owned()
        } else {
            format!("{files} whole files")
        });
    }
    parts.join(" and ")
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
        // --fail-on-set-aside's total counts files as files too.
        let s = |reason, count| SetAside {
            buyer: BuyerName::new("B").unwrap(),
            reason,
            count,
            lots: None,
        };
        assert_eq!(
            set_aside_total(&[s(Reason::InvalidAmount, 3), s(Reason::MalformedRow, 1)]),
            "4 bids"
        );
        assert_eq!(
            set_aside_total(&[s(Reason::MalformedFile, 1), s(Reason::InvalidAmount, 2)]),
            "2 bids and a whole file"
        );
        assert_eq!(
            set_aside_total(&[s(Reason::MalformedFile, 1), s(Reason::MalformedFile, 1)]),
            "2 whole files"
        );
    }
}
