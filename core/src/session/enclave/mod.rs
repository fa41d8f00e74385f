//! The enclave's end of a session: hello → credentials → open (a sealed manifest, or, in the
//! unsealed image, unsealed terms) → every buyer's seal → every buyer's file, streamed, in the
//! terms' buyer order → close, when the whole result leaves at once, rendered as it goes.
//!
//! Every rule the enclave enforces on an untrusted parent lives here (DESIGN §2), each with
//! the test or fuzz target that covers it:
//! - one image, one rule set: the image opens only the mode it was built for
//!   (`simulation.rs::each_image_opens_only_its_own_rule_set`), and its hello says which;
//! - the terms come only from the manifest; every buyer's seal must open, under the buyer's
//!   key and the manifest's digest, before any bid is opened (`sealed_attacks_are_refused`);
//! - each file must be exactly the one the manifest names (size and SHA-256, checked at its
//!   end: acting on a file before then is safe because nothing leaves before close and a
//!   mismatch fails the whole auction);
//! - the enclave, not the parent, parses bid files, and keeps neither a file nor its
//!   plaintext: rows are taken as their bytes arrive;
//! - in a sealed auction a bid not under the key the manifest registers, or an envelope file
//!   naming another auction, buyer or key, fails the auction (`KeyBinding`): the manifest's
//!   buyer→key binding is the operator's word;
//! - a failure the operator could cause fails the whole auction; only what the sealed file
//!   alone causes sets a bid aside, as a deterministic function of that file;
//! - memory and failure points do not depend on what a file names: everything the image's
//!   limits need is reserved, and written, when the auction opens (or the open fails), files
//!   are read in the terms' buyer order, and a crossed limit is reported only at close, after
//!   every file has been read the same way (`core/tests/infoflow.rs`, which searches operator
//!   strategies against two worlds with a counting allocator);
//! - **nothing about any lot leaves before close** (`random_interactions`, the
//!   `enclave_session` fuzz target). A rerun of the same manifest gives the same bytes.
//!
//! # Using it (the quinn-proto shape)
//!
//! - Input: [`handle_input`](EnclaveSession::handle_input) (bytes from the parent),
//!   [`handle_eof`](EnclaveSession::handle_eof), [`handle_timeout`](EnclaveSession::handle_timeout),
//!   and the results of work it asked for: [`attested`](EnclaveSession::attested) and
//!   [`decrypted`](EnclaveSession::decrypted).
//! - Output: [`poll_action`](EnclaveSession::poll_action) (work for the driver),
//!   [`poll_transmit`](EnclaveSession::poll_transmit) (bytes for the parent),
//!   [`poll_timeout`](EnclaveSession::poll_timeout) (when to call `handle_timeout`),
//!   [`wants_input`](EnclaveSession::wants_input) and [`is_ended`](EnclaveSession::is_ended).
//! - After every input, drain: `poll_action` until `None` (doing each), then `poll_transmit`
//!   until `None`, and again while either yields (the result's last chunk asks for the
//!   attestation). Then `is_ended`, `wants_input`, `poll_timeout`.
//! - Time is milliseconds since the Unix epoch, passed in. If it goes backwards, deadlines
//!   simply come later; nothing else depends on it.

mod batch;
mod lots;
mod render;
mod replay;

pub use super::decrypt::{BidTicket, DecryptJob, DecryptOutcome};
pub use lots::bytes_per_lot;
pub use replay::ReplayGuard;

use super::Millis;
use crate::amount::Amount;
use crate::auction::Reason;
use crate::bidfile::{
    self, ENCRYPTED_HEADER, MAX_CIPHERTEXT_LEN, PLAINTEXT_HEADER, Row, RowFields, RowReader,
};
use crate::config::{AuctionConfig, Mode, ResultCommitment};
use crate::credentials::Credentials;
use crate::esdk::{self, Pushed, StreamDecoder};
use crate::kms;
use crate::manifest::{self, FileFormat, Manifest, SEAL_MARKER};
use crate::names::{BuyerName, LotId};
use crate::output::FileSummary;
use crate::wire::{
    AuctionOpened, ChunkAccepted, Closed, CredentialsReply, ErrorCode, ErrorReply, FileChunk,
    FrameDecoder, FromEnclave, HelloReply, MAX_NONCE_LEN, MIN_NONCE_LEN, PROTOCOL_VERSION, Request,
    Response, ResultChunk, Seal, SealAccepted, ToEnclave, decode_request, encode_frame,
    encode_response,
};
use aws_lc_rs::digest;
use batch::RowBatch;
use lots::{Pending, Tally};
use render::Output;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Limits and identity of this enclave build.
#[derive(Debug, Clone)]
pub struct EnclaveSettings {
    /// Shown to the parent in the hello reply.
    pub build: String,
    /// True in builds with the software NSM.
    pub dev: bool,
    /// The image's rule set: the one mode it serves (DESIGN §2). The release image is
    /// `Sealed`; `Unsealed` is honoured only in builds with the `unsealed` feature.
    pub rules: Mode,
    pub max_frame: usize,
    /// Ciphertexts being opened at once before the session stops asking for input
    /// (backpressure).
    pub max_pending_bids: usize,
    /// Distinct lots per auction: what is reserved at open, [`bytes_per_lot`] each.
    pub max_lots: usize,
    /// Rows naming a lot in per-bid files, over every buyer (each is one KMS call), with 12
    /// bytes reserved at open for each. Envelope files' rows cost no memory but their lots.
    pub max_bids: usize,
    /// Largest bid file. Files are streamed; this only bounds how long one may be.
    pub max_file_bytes: u64,
    /// File chunks the parent may send ahead while a file's bids are being opened (its window;
    /// the parent's default is 16 chunks of under 1 MiB). More ends the session.
    pub max_held_bytes: usize,
    /// A session with nothing in progress ends after this long without input.
    pub idle_timeout: Millis,
}

impl Default for EnclaveSettings {
    fn default() -> Self {
        EnclaveSettings {
            build: concat!("enclave-init ", env!("CARGO_PKG_VERSION")).to_owned(),
            dev: false,
            rules: Mode::Sealed,
            max_frame: crate::wire::DEFAULT_MAX_FRAME,
            max_pending_bids: 4096,
            // Reserved at open: 2,000,000 × 130 bytes and 1,000,000 × 12 bytes, about 270 MiB,
            // within the 448 MiB an enclave of 512 MiB leaves (`bidctl bench --memory`).
            max_lots: 2_000_000,
            max_bids: 1_000_000,
            max_file_bytes: 1 << 30,
            max_held_bytes: 32 * 1024 * 1024,
            idle_timeout: 10 * 60 * 1000,
        }
    }
}

/// Work for the driver.
#[derive(Debug)]
pub enum Action {
    /// Ask the NSM for an attestation document with these fields and the enclave's public key,
    /// then call [`EnclaveSession::attested`].
    Attest {
        ticket: u64,
        user_data: Vec<u8>,
        nonce: Vec<u8>,
    },
    /// Open a ciphertext, then call [`EnclaveSession::decrypted`].
    Decrypt(DecryptJob),
    /// New credentials arrived: sign every KMS call from now on with them, including calls
    /// queued before (a long auction outlives one set of temporary credentials).
    UseCredentials(Arc<Credentials>),
}

/// Counts for the driver's logs. Deliberately nothing about amounts or lots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub lots_decided: u64,
    pub bids_opened: u64,
    pub bids_set_aside: u64,
}

enum AttestPurpose {
    Hello { id: u64 },
    Close { id: u64, closed: Closed },
}

/// What a ciphertext being opened is.
#[derive(Debug, Clone, Copy)]
enum Job {
    Seal {
        request: u64,
        buyer: usize,
    },
    Bid {
        lot: u32,
        buyer: usize,
    },
    /// The data key of the envelope file being read.
    EnvelopeKey {
        buyer: usize,
    },
}

/// A per-bid row waiting for room among the ciphertexts being opened.
struct QueuedBid {
    lot: u32,
    buyer: usize,
    ciphertext: Vec<u8>,
}

/// The chunk being read: what is left of it.
struct Work {
    id: u64,
    data: Vec<u8>,
    at: usize,
    last: bool,
}

/// How a file is being read.
enum Reader {
    /// Fewer than three bytes so far: the format is not known yet.
    Undetected,
    PerBid(Box<PerBid>),
    Envelope(Box<Envelope>),
    /// Set aside whole: the rest is only hashed.
    Skip,
}

struct PerBid {
    rows: RowReader,
    header: HeaderRow,
}

struct Envelope {
    decoder: StreamDecoder,
    rows: RowReader,
    header: HeaderRow,
    /// The data key is at KMS: bytes wait.
    waiting: bool,
    /// A NUL byte was seen: the padding has begun.
    padding: bool,
    /// A byte other than NUL came after the padding began (counted once, as a row).
    after_padding: bool,
    /// A row reached the lots: from here a broken frame cannot be set aside.
    counted: bool,
    /// Rows on their way to the lots.
    batch: RowBatch,
}

/// A file being received.
struct Incoming {
    buyer: usize,
    sha: digest::Context,
    received: u64,
    /// Its first bytes, which tell its format.
    head: Vec<u8>,
    reader: Reader,
    work: Option<Work>,
    /// The last chunk was read; its answer waits until every bid of the file is opened.
    last: Option<(u64, ChunkAccepted)>,
    /// Ciphertexts of this file at KMS.
    in_flight: usize,
}

struct Auction {
    mode: Mode,
    config: AuctionConfig,
    terms_sha256: [u8; 32],
    manifest: Option<Manifest>,
    credentials: Arc<Credentials>,
    sealed: Vec<bool>,
    tally: Tally,
    /// The output order's array, reserved with the lots.
    order: Box<[u32]>,
    files: Vec<Option<FileSummary>>,
    /// The buyer whose file comes next: files come in the terms' buyer order.
    next_file: usize,
    incoming: Option<Incoming>,
    queue: VecDeque<QueuedBid>,
    held: VecDeque<(u64, FileChunk)>,
    held_bytes: usize,
    /// Per-bid rows naming a lot so far, against `max_bids`.
    per_bid_rows: u64,
}

impl Auction {
    fn buyer_index(&self, name: &BuyerName) -> Option<usize> {
        self.config.buyers().iter().position(|b| &b.name == name)
    }
    fn buyer_name(&self, i: usize) -> &BuyerName {
        &self.config.buyers()[i].name
    }
    /// The file being read is doing nothing it could go on with by itself.
    fn idle(&self) -> bool {
        self.queue.is_empty()
            && self
                .incoming
                .as_ref()
                .is_none_or(|inc| inc.work.is_none() && inc.in_flight == 0 && inc.last.is_none())
    }
}

enum Phase {
    AwaitHello,
    AwaitCredentials,
    Ready,
    /// Sealed: waiting for every buyer's seal to be opened.
    Sealing(Box<Auction>),
    Files(Box<Auction>),
    /// The result is being rendered and sent, then attested.
    Closing(Box<Auction>, Box<Output>),
    Ended,
}

/// One parent session. See the module documentation.
pub struct EnclaveSession {
    settings: EnclaveSettings,
    decoder: FrameDecoder,
    outbox: Vec<u8>,
    actions: VecDeque<Action>,
    phase: Phase,
    last_id: Option<u64>,
    nonce: Vec<u8>,
    credentials: Option<Arc<Credentials>>,
    #[cfg_attr(not(feature = "unsealed"), allow(dead_code))]
    guard: ReplayGuard,
    attesting: Option<(u64, AttestPurpose)>,
    next_ticket: u64,
    /// Ciphertexts at KMS, by slot.
    jobs: Vec<Option<(u64, Job)>>,
    free: Vec<usize>,
    /// The lot index's hash key: the driver's randomness, so no buyer can flood it.
    hash_key: (u64, u64),
    /// The close request the result answers.
    closing_id: Option<u64>,
    idle_deadline: Millis,
    /// Why the session ended, for the driver's log.
    end_reason: Option<String>,
    stats: SessionStats,
}

impl EnclaveSession {
    /// A session for one parent connection. `guard` is the unsealed image's per-boot memory
    /// (the driver keeps it between sessions); `seed` is 16 random bytes for the lot index's
    /// hash key.
    pub fn new(settings: EnclaveSettings, guard: ReplayGuard, now: Millis, seed: [u8; 16]) -> Self {
        let slots = settings.max_pending_bids.max(crate::config::MAX_BUYERS) + 1;
        EnclaveSession {
            decoder: FrameDecoder::new(settings.max_frame),
            idle_deadline: now.saturating_add(settings.idle_timeout),
            settings,
            outbox: Vec::new(),
            actions: VecDeque::new(),
            phase: Phase::AwaitHello,
            last_id: None,
            nonce: Vec::new(),
            credentials: None,
            guard,
            attesting: None,
            next_ticket: 1,
            jobs: (0..slots).map(|_| None).collect(),
            free: (0..slots).rev().collect(),
            hash_key: (
                u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(seed[8..].try_into().expect("8 bytes")),
            ),
            closing_id: None,
            end_reason: None,
            stats: SessionStats::default(),
        }
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Hands the replay guard back for the next session.
    pub fn into_guard(self) -> ReplayGuard {
        self.guard
    }

    /// Bytes from the parent. Always consumes all of them.
    pub fn handle_input(&mut self, mut data: &[u8], now: Millis) {
        self.idle_deadline = now.saturating_add(self.settings.idle_timeout);
        while !self.is_ended() && !data.is_empty() {
            let number = self.decoder.frame_number();
            match self.decoder.decode(&mut data) {
                Ok(Some(frame)) => self.handle_frame(number, &frame, now),
                Ok(None) => {}
                Err(e) => {
                    // Framing is lost: nothing after this can be trusted to line up.
                    let code = match e {
                        crate::wire::FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                        _ => ErrorCode::MalformedFrame,
                    };
                    self.fail(None, code, e.to_string());
                }
            }
        }
    }

    /// The parent closed its side.
    pub fn handle_eof(&mut self) {
        if self.is_ended() {
            return;
        }
        let why = match self.decoder.finish() {
            Err(e) => format!("parent disconnected: {e}"),
            Ok(()) => "parent disconnected".to_owned(),
        };
        self.end(why);
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        if !self.is_ended() && self.is_idle() && now >= self.idle_deadline {
            self.fail(
                None,
                ErrorCode::IdleTimeout,
                format!(
                    "no request for {} s; ending the session",
                    self.settings.idle_timeout / 1000
                ),
            );
        }
    }

    /// When to call [`handle_timeout`](Self::handle_timeout): while nothing is in progress,
    /// the idle deadline. Changes with every input and every answer to work asked for.
    pub fn poll_timeout(&self) -> Option<Millis> {
        (!self.is_ended() && self.is_idle()).then_some(self.idle_deadline)
    }

    fn is_idle(&self) -> bool {
        self.jobs.len() == self.free.len()
            && self.attesting.is_none()
            && match &self.phase {
                Phase::Files(a) => a.queue.is_empty(),
                Phase::Closing(..) => false,
                _ => true,
            }
    }

    /// False while the enclave has enough to do: stop reading from the parent. Chunks sent
    /// ahead while a file's bids are opened are held, up to `max_held_bytes`, which bounds
    /// memory; reading goes on meanwhile, so a credentials refresh is never stuck behind them.
    pub fn wants_input(&self) -> bool {
        match &self.phase {
            Phase::Ended | Phase::Closing(..) => false,
            Phase::Files(a) => a.held_bytes < self.settings.max_held_bytes,
            _ => true,
        }
    }

    /// True once the session is over: flush [`poll_transmit`](Self::poll_transmit), then close.
    pub fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Ended)
    }

    pub fn end_reason(&self) -> Option<&str> {
        self.end_reason.as_deref()
    }

    /// The next piece of work for the driver. New work comes with inputs, with answers to
    /// earlier work, and with the result's last chunk (its attestation).
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Bytes to send to the parent, if any. While the result is leaving, each call renders
    /// the next chunk of it: call until `None`.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.outbox.is_empty() && matches!(self.phase, Phase::Closing(..)) {
            self.render_next();
        }
        (!self.outbox.is_empty()).then(|| std::mem::take(&mut self.outbox))
    }

    /// Number of ciphertexts being opened now.
    pub fn pending_bids(&self) -> usize {
        self.jobs.len() - self.free.len()
    }

    /// The NSM's answer to an [`Action::Attest`].
    pub fn attested(&mut self, ticket: u64, document: Result<Vec<u8>, String>) {
        let Some((expected, purpose)) = self.attesting.take() else {
            return;
        };
        if expected != ticket || self.is_ended() {
            return;
        }
        let id = match &purpose {
            AttestPurpose::Hello { id } | AttestPurpose::Close { id, .. } => *id,
        };
        let attestation = match document {
            Ok(doc) => doc,
            Err(e) => {
                self.fail(
                    Some(id),
                    ErrorCode::Attestation,
                    format!("NSM attestation failed: {e}"),
                );
                return;
            }
        };
        match purpose {
            AttestPurpose::Hello { id } => self.reply(
                Some(id),
                Response::Hello(HelloReply {
                    protocol: PROTOCOL_VERSION,
                    build: self.settings.build.clone(),
                    dev: self.settings.dev,
                    attestation,
                }),
            ),
            AttestPurpose::Close { id, mut closed } => {
                closed.attestation = attestation;
                self.reply(Some(id), Response::Closed(closed));
                self.end("auction closed".to_owned());
            }
        }
    }

    /// The driver's result for a [`DecryptJob`].
    pub fn decrypted(&mut self, ticket: BidTicket, outcome: DecryptOutcome) {
        if self.is_ended() {
            return;
        }
        let Some(slot) = self.jobs.get_mut(ticket.index) else {
            return;
        };
        let job = match slot.take() {
            Some((serial, job)) if serial == ticket.request => job,
            other => {
                *slot = other;
                return;
            }
        };
        self.free.push(ticket.index);
        match job {
            Job::Seal { request, buyer } => self.seal_opened(request, buyer, outcome),
            Job::EnvelopeKey { buyer } => {
                if let Phase::Files(a) = &mut self.phase
                    && let Some(inc) = &mut a.incoming
                {
                    inc.in_flight -= 1;
                }
                if let Err((code, message)) = self.envelope_key(buyer, outcome) {
                    let request = self.file_request();
                    self.fail(request, code, message);
                    return;
                }
                self.advance();
            }
            Job::Bid { lot, buyer } => {
                if let Err((code, message)) = self.bid_opened(lot, buyer, outcome) {
                    let request = self.file_request();
                    self.fail(request, code, message);
                    return;
                }
                self.advance();
            }
        }
    }

    /// The request a file's failure answers: its last chunk's, when it came.
    fn file_request(&self) -> Option<u64> {
        match &self.phase {
            Phase::Files(a) => a
                .incoming
                .as_ref()
                .and_then(|i| i.last.as_ref())
                .map(|l| l.0),
            _ => None,
        }
    }

    fn bid_opened(
        &mut self,
        lot: u32,
        buyer: usize,
        outcome: DecryptOutcome,
    ) -> Result<(), Failure> {
        let Phase::Files(a) = &mut self.phase else {
            return Ok(());
        };
        if let Some(inc) = &mut a.incoming {
            inc.in_flight -= 1;
        }
        let name = a.buyer_name(buyer).to_string();
        let pending = match outcome {
            DecryptOutcome::Plaintext(plaintext) => match Amount::parse(&plaintext) {
                Ok(amount) => {
                    if a.tally.lots.state(lot).pending() == (buyer, Pending::Awaiting) {
                        a.tally.set_valid(lot, buyer, amount);
                    }
                    return Ok(());
                }
                Err(_) => Pending::SetAside(Reason::InvalidAmount),
            },
            DecryptOutcome::Disqualified(Reason::WrongKey) if a.mode == Mode::Sealed => {
                return Err(wrong_key(&name));
            }
            DecryptOutcome::Disqualified(reason) => Pending::SetAside(reason),
            DecryptOutcome::Fatal { code, message } => {
                return Err((
                    code,
                    format!("opening buyer `{name}`'s bids: {message}; nothing is decided"),
                ));
            }
        };
        // A lot the file named again meanwhile stays a duplicate: none of its rows count.
        if a.tally.lots.state(lot).pending() == (buyer, Pending::Awaiting) {
            a.tally.set_pending(lot, buyer, pending);
        }
        Ok(())
    }

    fn seal_opened(&mut self, request: u64, buyer: usize, outcome: DecryptOutcome) {
        let Phase::Sealing(auction) = &mut self.phase else {
            return;
        };
        let name = auction.buyer_name(buyer).clone();
        let refusal = match outcome {
            DecryptOutcome::Plaintext(p) if crate::ct_eq(&p, SEAL_MARKER) => None,
            DecryptOutcome::Plaintext(_) => Some((
                ErrorCode::SealRefused,
                format!("buyer `{name}`'s seal decrypts, but not to the seal marker"),
            )),
            DecryptOutcome::Disqualified(reason) => Some((
                ErrorCode::SealRefused,
                format!(
                    "buyer `{name}`'s seal does not decrypt under its key with this manifest's context ({reason}): the buyer has not consented to this manifest"
                ),
            )),
            DecryptOutcome::Fatal { code, message } => {
                Some((code, format!("opening buyer `{name}`'s seal: {message}")))
            }
        };
        if let Some((code, message)) = refusal {
            self.fail(Some(request), code, message);
            return;
        }
        auction.sealed[buyer] = true;
        if auction.sealed.iter().all(|&s| s) {
            let Phase::Sealing(a) = std::mem::replace(&mut self.phase, Phase::Ended) else {
                unreachable!("matched above")
            };
            self.phase = Phase::Files(a);
        }
        self.reply(
            Some(request),
            Response::SealAccepted(SealAccepted { buyer: name }),
        );
    }

    fn handle_frame(&mut self, number: u64, frame: &[u8], now: Millis) {
        let msg = match decode_request(number, frame) {
            Ok(m) => m,
            Err(e) => {
                self.error(e.id, ErrorCode::MalformedFrame, e.to_string());
                return;
            }
        };
        let ToEnclave { id, msg } = msg;
        if self.last_id.is_some_and(|last| id <= last) {
            self.error(
                Some(id),
                ErrorCode::DuplicateId,
                format!(
                    "frame {number}: request id {id} is not above the previous id {}",
                    self.last_id.unwrap_or_default()
                ),
            );
            return;
        }
        self.last_id = Some(id);
        let kind = msg.kind();
        match (&self.phase, msg) {
            (Phase::AwaitHello, Request::Hello(h)) => {
                if h.protocol != PROTOCOL_VERSION {
                    self.fail(
                        Some(id),
                        ErrorCode::UnsupportedProtocol,
                        format!(
                            "protocol version {} is not supported (this enclave speaks {PROTOCOL_VERSION})",
                            h.protocol
                        ),
                    );
                    return;
                }
                if !(MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&h.nonce.len()) {
                    self.fail(
                        Some(id),
                        ErrorCode::InvalidNonce,
                        format!(
                            "hello nonce is {} bytes; it must be {MIN_NONCE_LEN} to {MAX_NONCE_LEN}",
                            h.nonce.len()
                        ),
                    );
                    return;
                }
                self.nonce = h.nonce.clone();
                self.phase = Phase::AwaitCredentials;
                self.attest(
                    AttestPurpose::Hello { id },
                    self.settings.rules.hello_tag().to_vec(),
                    h.nonce,
                );
            }
            (
                Phase::AwaitCredentials | Phase::Ready | Phase::Sealing(_) | Phase::Files(_),
                Request::Credentials(c),
            ) => self.credentials_frame(id, c, now),
            (Phase::Ready, Request::OpenSealed(_) | Request::OpenUnsealed(_))
                if !self.serves(kind) =>
            {
                self.fail(
                    Some(id),
                    ErrorCode::WrongRuleSet,
                    format!(
                        "`{kind}` is refused: this enclave is {}; one image serves one rule set, so that no buyer's protection depends on which mode the operator asks for",
                        self.rule_set_text()
                    ),
                );
            }
            (Phase::Ready, Request::OpenSealed(o)) => match Manifest::parse(&o.manifest) {
                Ok(m) => {
                    let terms = m.terms().clone();
                    self.open(id, Mode::Sealed, terms, Some(m));
                }
                Err(e) => self.fail(Some(id), ErrorCode::InvalidManifest, e.to_string()),
            },
            #[cfg(feature = "unsealed")]
            (Phase::Ready, Request::OpenUnsealed(config)) => {
                self.open(id, Mode::Unsealed, config, None)
            }
            (Phase::Sealing(_), Request::Seal(seal)) => self.seal(id, seal),
            (Phase::Files(_), Request::FileChunk(chunk)) => self.chunk_or_hold(id, chunk),
            (Phase::Files(_), Request::Close(_)) => self.close(id),
            (phase, _) => {
                let when = match phase {
                    Phase::AwaitHello => "before hello",
                    Phase::AwaitCredentials => "before credentials",
                    Phase::Ready => "before an auction is open",
                    Phase::Sealing(_) => "before every buyer's seal is accepted",
                    Phase::Files(_) => "while bid files are being received",
                    Phase::Closing(..) | Phase::Ended => "after close",
                };
                self.error(
                    Some(id),
                    ErrorCode::OutOfOrder,
                    format!("frame {number}: `{kind}` is not allowed {when}"),
                );
            }
        }
    }

    /// Whether this image opens an auction with this request: its own rule set only.
    fn serves(&self, kind: &str) -> bool {
        match self.settings.rules {
            Mode::Sealed => kind == "open_sealed",
            Mode::Unsealed => cfg!(feature = "unsealed") && kind == "open_unsealed",
        }
    }

    fn rule_set_text(&self) -> &'static str {
        match self.settings.rules {
            Mode::Unsealed if !cfg!(feature = "unsealed") => {
                "a build without unsealed mode configured for it, and serves no auctions"
            }
            rules => rules.image(),
        }
    }

    fn credentials_frame(&mut self, id: u64, c: Credentials, now: Millis) {
        if let Err(e) = c.validate(now / 1000) {
            self.error(Some(id), ErrorCode::InvalidCredentials, e.to_string());
            return;
        }
        let auction = match &mut self.phase {
            Phase::Sealing(a) | Phase::Files(a) => Some(a),
            _ => None,
        };
        if let Some(a) = &auction
            && c.region != a.credentials.region
        {
            let message = format!(
                "auction {} runs in region {}; new credentials may not move it to {}",
                a.config.auction_id(),
                a.credentials.region,
                c.region
            );
            self.error(Some(id), ErrorCode::InvalidCredentials, message);
            return;
        }
        let reply = CredentialsReply {
            region: c.region.clone(),
            expiration: c.expiration,
        };
        let c = Arc::new(c);
        if let Some(a) = auction {
            a.credentials = c.clone();
        }
        self.credentials = Some(c.clone());
        self.actions.push_back(Action::UseCredentials(c));
        if matches!(self.phase, Phase::AwaitCredentials) {
            self.phase = Phase::Ready;
        }
        self.reply(Some(id), Response::Credentials(reply));
    }

    fn open(&mut self, id: u64, mode: Mode, config: AuctionConfig, manifest: Option<Manifest>) {
        let Some(credentials) = self.credentials.clone() else {
            return;
        };
        let region = credentials.region.as_str();
        if let Some(b) = config
            .buyers()
            .iter()
            .find(|b| b.key_arn.region() != region)
        {
            let message = format!(
                "buyer `{}`'s key {} is not in the credentials' region {region}",
                b.name, b.key_arn
            );
            self.fail(Some(id), ErrorCode::InvalidAuction, message);
            return;
        }
        if let Some(f) = manifest.as_ref().and_then(|m| {
            m.files()
                .iter()
                .find(|f| f.size > self.settings.max_file_bytes)
        }) {
            let message = format!(
                "buyer `{}`'s file is {} bytes; this enclave takes files of at most {}",
                f.buyer, f.size, self.settings.max_file_bytes
            );
            self.fail(Some(id), ErrorCode::FileTooLarge, message);
            return;
        }
        // Everything the image's limits need, now: what the files name can change neither
        // how much memory the session takes nor where it could run out.
        let reserved = Tally::reserve(
            self.settings.max_lots,
            self.settings.max_bids,
            self.hash_key,
        )
        .and_then(|t| {
            lots::filled(self.settings.max_lots, u32::MAX)
                .map(|order| (t, order))
                .map_err(|_| lots::OutOfMemory {
                    bytes: self.settings.max_lots * 4,
                })
        });
        let (tally, order) = match reserved {
            Ok(r) => r,
            Err(e) => {
                self.fail(
                    Some(id),
                    ErrorCode::OutOfMemory,
                    format!(
                        "this enclave cannot reserve the {} MiB its limits need ({} lots, {} per-bid rows); give it more memory",
                        e.bytes / (1 << 20),
                        self.settings.max_lots,
                        self.settings.max_bids
                    ),
                );
                return;
            }
        };
        let terms_sha256 = match &manifest {
            Some(m) => m.digest(),
            None => config.digest(),
        };
        let buyers = config.buyers().len();
        let auction_id = config.auction_id().clone();
        let auction = Box::new(Auction {
            mode,
            config,
            terms_sha256,
            manifest,
            credentials,
            sealed: vec![mode == Mode::Unsealed; buyers],
            tally,
            order,
            files: vec![None; buyers],
            next_file: 0,
            incoming: None,
            queue: VecDeque::new(),
            held: VecDeque::new(),
            held_bytes: 0,
            per_bid_rows: 0,
        });
        self.phase = match mode {
            Mode::Sealed => Phase::Sealing(auction),
            Mode::Unsealed => Phase::Files(auction),
        };
        self.reply(
            Some(id),
            Response::AuctionOpened(AuctionOpened {
                auction_id,
                mode,
                terms_sha256,
            }),
        );
    }

    fn seal(&mut self, id: u64, seal: Seal) {
        let Phase::Sealing(auction) = &self.phase else {
            return;
        };
        let Some(buyer) = auction.buyer_index(&seal.buyer) else {
            let message = format!(
                "seal from `{}`, who is not a buyer in auction {}",
                seal.buyer,
                auction.config.auction_id()
            );
            self.fail(Some(id), ErrorCode::UnknownBuyer, message);
            return;
        };
        let twice = auction.sealed[buyer]
            || self
                .jobs
                .iter()
                .flatten()
                .any(|(_, j)| matches!(j, Job::Seal { buyer: b, .. } if *b == buyer));
        if twice {
            self.fail(
                Some(id),
                ErrorCode::DuplicateSeal,
                format!("buyer `{}` sent a second seal", seal.buyer),
            );
            return;
        }
        if seal.ciphertext.is_empty() || seal.ciphertext.len() > MAX_CIPHERTEXT_LEN {
            self.fail(
                Some(id),
                ErrorCode::SealRefused,
                format!(
                    "buyer `{}`'s seal is {} bytes (KMS ciphertexts are 1 to {MAX_CIPHERTEXT_LEN})",
                    seal.buyer,
                    seal.ciphertext.len()
                ),
            );
            return;
        }
        let spec = &auction.config.buyers()[buyer];
        let context = manifest::seal_context(
            auction.config.auction_id(),
            &spec.name,
            &auction.terms_sha256,
        );
        let (key_arn, credentials) = (spec.key_arn.clone(), auction.credentials.clone());
        self.dispatch(
            Job::Seal { request: id, buyer },
            key_arn,
            seal.ciphertext,
            context,
            false,
            credentials,
        );
    }

    /// Hands a ciphertext to the driver.
    fn dispatch(
        &mut self,
        job: Job,
        key_arn: crate::names::KeyArn,
        ciphertext: Vec<u8>,
        context: BTreeMap<String, String>,
        retry_without_context: bool,
        credentials: Arc<Credentials>,
    ) {
        let Some(slot) = self.free.pop() else {
            // The slots are sized for the limits; the callers keep within them.
            self.fail(None, ErrorCode::Internal, "no slot for a KMS job".into());
            return;
        };
        let serial = self.next_ticket;
        self.next_ticket += 1;
        self.jobs[slot] = Some((serial, job));
        self.actions.push_back(Action::Decrypt(DecryptJob {
            ticket: BidTicket {
                request: serial,
                index: slot,
            },
            key_arn,
            ciphertext,
            context,
            retry_without_context,
            credentials,
        }));
    }

    fn chunk_or_hold(&mut self, id: u64, chunk: FileChunk) {
        let cap = self.settings.max_held_bytes;
        let Phase::Files(a) = &mut self.phase else {
            return;
        };
        if !a.idle() || !a.held.is_empty() {
            a.held_bytes += chunk.data.len();
            a.held.push_back((id, chunk));
            if a.held_bytes > cap {
                self.fail(
                    Some(id),
                    ErrorCode::FileTooLarge,
                    format!(
                        "the parent sent more than {cap} bytes of files ahead while bids were being opened; wait for the answer to each chunk"
                    ),
                );
            }
            return;
        }
        if let Err((code, message)) = self.chunk(id, chunk) {
            self.fail(Some(id), code, message);
            return;
        }
        self.advance();
    }

    /// Takes a chunk into the file it belongs to (which must be the next one's in the terms'
    /// order): checks where it belongs, hashes it, and reads it as far as it can.
    fn chunk(&mut self, id: u64, chunk: FileChunk) -> Result<(), Failure> {
        let max_file = self.settings.max_file_bytes;
        let Phase::Files(a) = &mut self.phase else {
            return Ok(());
        };
        let buyer = a.buyer_index(&chunk.buyer).ok_or_else(|| {
            (
                ErrorCode::UnknownBuyer,
                format!(
                    "file from `{}`, who is not a buyer in auction {}",
                    chunk.buyer,
                    a.config.auction_id()
                ),
            )
        })?;
        if a.files[buyer].is_some() {
            return Err((
                ErrorCode::DuplicateFile,
                format!("buyer `{}`'s file was already received", chunk.buyer),
            ));
        }
        if buyer != a.next_file {
            return Err((
                ErrorCode::OutOfOrder,
                format!(
                    "a chunk of `{}`'s file arrived, but `{}`'s comes first: files are taken in the terms' buyer order, one at a time",
                    chunk.buyer,
                    a.buyer_name(a.next_file)
                ),
            ));
        }
        let inc = a.incoming.get_or_insert_with(|| Incoming {
            buyer,
            sha: digest::Context::new(&digest::SHA256),
            received: 0,
            head: Vec::with_capacity(3),
            reader: Reader::Undetected,
            work: None,
            last: None,
            in_flight: 0,
        });
        let limit = match &a.manifest {
            Some(m) => m.files()[buyer].size,
            None => max_file,
        };
        let received = inc.received + chunk.data.len() as u64;
        if received > limit {
            return Err(match a.mode {
                Mode::Sealed => (
                    ErrorCode::FileMismatch,
                    format!(
                        "buyer `{}`'s file is longer than the {limit} bytes the manifest names",
                        chunk.buyer
                    ),
                ),
                Mode::Unsealed => (
                    ErrorCode::FileTooLarge,
                    format!(
                        "buyer `{}`'s file is over this enclave's limit of {limit} bytes",
                        chunk.buyer
                    ),
                ),
            });
        }
        inc.sha.update(&chunk.data);
        inc.received = received;
        inc.work = Some(Work {
            id,
            data: chunk.data,
            at: 0,
            last: chunk.last,
        });
        self.read();
        Ok(())
    }

    /// Reads the current chunk as far as it goes; a file's end completes it. A failure
    /// answers the chunk being read.
    fn read(&mut self) {
        let request = match &self.phase {
            Phase::Files(a) => a.incoming.as_ref().and_then(|i| {
                i.work
                    .as_ref()
                    .map(|w| w.id)
                    .or(i.last.as_ref().map(|l| l.0))
            }),
            _ => None,
        };
        if let Err((code, message)) = self.read_inner() {
            self.fail(request, code, message);
        }
    }

    fn read_inner(&mut self) -> Result<(), Failure> {
        let max_bids = self.settings.max_bids as u64;
        let Phase::Files(a) = &mut self.phase else {
            return Ok(());
        };
        let Some(mut inc) = a.incoming.take() else {
            return Ok(());
        };
        let result = read_chunk(a, &mut inc, &mut self.guard, max_bids);
        let key_job = match result {
            Ok(job) => job,
            Err(e) => {
                a.incoming = Some(inc);
                return Err(e);
            }
        };
        // A chunk read to its end is answered (the last one once its bids are opened); one
        // whose envelope header ended in it waits for the data key first.
        let waiting = matches!(&inc.reader, Reader::Envelope(e) if e.waiting);
        let mut ack = None;
        if let Some(w) = &inc.work
            && w.at == w.data.len()
            && !waiting
        {
            let w = inc.work.take().expect("checked above");
            let accepted = ChunkAccepted {
                buyer: a.buyer_name(inc.buyer).clone(),
                received: inc.received,
            };
            if w.last {
                finish_file(a, &mut inc, &mut self.guard, max_bids)?;
                inc.last = Some((w.id, accepted));
            } else {
                ack = Some((w.id, accepted));
            }
        }
        let buyer = inc.buyer;
        a.incoming = Some(inc);
        if let Some((id, accepted)) = ack {
            self.reply(Some(id), Response::ChunkAccepted(accepted));
        }
        if let Some((ciphertext, context)) = key_job {
            let Phase::Files(a) = &mut self.phase else {
                unreachable!("still reading files")
            };
            let spec = &a.config.buyers()[buyer];
            let (key_arn, credentials) = (spec.key_arn.clone(), a.credentials.clone());
            if let Some(inc) = &mut a.incoming {
                inc.in_flight += 1;
            }
            self.dispatch(
                Job::EnvelopeKey { buyer },
                key_arn,
                ciphertext,
                context,
                false,
                credentials,
            );
        }
        Ok(())
    }

    /// KMS's answer for the envelope file's data key.
    fn envelope_key(&mut self, buyer: usize, outcome: DecryptOutcome) -> Result<(), Failure> {
        let Phase::Files(a) = &mut self.phase else {
            return Ok(());
        };
        let name = a.buyer_name(buyer).to_string();
        let Some(inc) = &mut a.incoming else {
            return Ok(());
        };
        let Reader::Envelope(env) = &mut inc.reader else {
            return Ok(());
        };
        env.waiting = false;
        let data_key = match outcome {
            DecryptOutcome::Plaintext(key) => key,
            DecryptOutcome::Disqualified(Reason::WrongKey) if a.mode == Mode::Sealed => {
                return Err(wrong_key(&name));
            }
            DecryptOutcome::Disqualified(reason) => {
                inc.reader = Reader::Skip;
                a.tally.count(buyer, reason, 1);
                return Ok(());
            }
            DecryptOutcome::Fatal { code, message } => {
                return Err((
                    code,
                    format!(
                        "opening buyer `{name}`'s envelope file: {message}; nothing is decided"
                    ),
                ));
            }
        };
        if env.decoder.open(&data_key).is_err() {
            // A commitment or header tag that does not hold under the key KMS gave for this
            // very message: only its maker can have done that. No frame was read yet.
            inc.reader = Reader::Skip;
            a.tally.count(buyer, Reason::Undecryptable, 1);
        }
        Ok(())
    }

    /// Dispatches queued bids, reads on where the file can go on, completes a file once its
    /// bids are all opened, and takes held chunks when nothing is in progress.
    fn advance(&mut self) {
        loop {
            if self.is_ended() {
                return;
            }
            self.dispatch_queued();
            let Phase::Files(a) = &mut self.phase else {
                return;
            };
            // The chunk being read, when the file can go on (its data key came).
            let blocked = a
                .incoming
                .as_ref()
                .is_some_and(|inc| matches!(&inc.reader, Reader::Envelope(e) if e.waiting));
            if a.incoming.as_ref().is_some_and(|i| i.work.is_some()) && !blocked {
                self.read();
                continue;
            }
            // A file whose last chunk was read, with every bid opened: answered, complete.
            let done = a.queue.is_empty()
                && a.incoming
                    .as_ref()
                    .is_some_and(|i| i.last.is_some() && i.in_flight == 0 && i.work.is_none());
            if done {
                let inc = a.incoming.take().expect("checked above");
                a.next_file += 1;
                let (id, accepted) = inc.last.expect("checked above");
                self.reply(Some(id), Response::ChunkAccepted(accepted));
                continue;
            }
            if !a.idle() {
                return;
            }
            let Some((id, chunk)) = a.held.pop_front() else {
                return;
            };
            a.held_bytes -= chunk.data.len();
            if let Err((code, message)) = self.chunk(id, chunk) {
                self.fail(Some(id), code, message);
                return;
            }
        }
    }

    /// Starts opening queued bids while there is room at KMS.
    fn dispatch_queued(&mut self) {
        loop {
            if self.pending_bids() >= self.settings.max_pending_bids {
                return;
            }
            let Phase::Files(a) = &mut self.phase else {
                return;
            };
            let Some(q) = a.queue.pop_front() else {
                return;
            };
            let spec = &a.config.buyers()[q.buyer];
            let context = kms::bid_context(
                a.mode,
                a.config.auction_id(),
                &LotId::from_checked(a.tally.lots.id(q.lot)),
                &spec.name,
            );
            let retry = a.config.allow_no_context();
            let (key_arn, credentials) = (spec.key_arn.clone(), a.credentials.clone());
            if let Some(inc) = &mut a.incoming {
                inc.in_flight += 1;
            }
            self.stats.bids_opened += 1;
            self.dispatch(
                Job::Bid {
                    lot: q.lot,
                    buyer: q.buyer,
                },
                key_arn,
                q.ciphertext,
                context,
                retry,
                credentials,
            );
        }
    }

    fn close(&mut self, id: u64) {
        let Phase::Files(a) = &mut self.phase else {
            return;
        };
        if a.incoming.is_some() || !a.queue.is_empty() || !a.held.is_empty() {
            self.error(
                Some(id),
                ErrorCode::OutOfOrder,
                "close while a file is being received or bids are being opened; wait for every chunk's answer".into(),
            );
            return;
        }
        if let Some(i) = a.files.iter().position(Option::is_none) {
            let message = format!(
                "buyer `{}`'s file was never sent; an auction is decided on every buyer's file or not at all",
                a.buyer_name(i)
            );
            self.fail(Some(id), ErrorCode::MissingFile, message);
            return;
        }
        // Limits are reported here, once every file has been read the same way.
        if a.tally.lots.overflowed() {
            let message = format!(
                "the files name more than {} lots; this enclave image takes at most that many per auction",
                a.tally.lots.capacity()
            );
            self.fail(Some(id), ErrorCode::TooManyLots, message);
            return;
        }
        if a.per_bid_rows > self.settings.max_bids as u64 {
            let message = format!(
                "the per-bid files hold more than {} bids; this enclave image opens at most that many per auction",
                self.settings.max_bids
            );
            self.fail(Some(id), ErrorCode::TooManyBids, message);
            return;
        }
        a.tally.settle_all();
        let files: Vec<FileSummary> = a.files.iter().flatten().cloned().collect();
        let order = std::mem::take(&mut a.order);
        let output = render::Output::start(
            &a.tally,
            order,
            &render::Terms {
                config: &a.config,
                mode: a.mode,
                terms_sha256: a.terms_sha256,
                files: &files,
            },
            chunk_len_for(self.settings.max_frame),
        );
        let Phase::Files(a) = std::mem::replace(&mut self.phase, Phase::Ended) else {
            unreachable!("matched above")
        };
        self.phase = Phase::Closing(a, Box::new(output));
        self.closing_id = Some(id);
    }

    /// Renders and queues the next result chunk; after the last, asks for the attestation.
    fn render_next(&mut self) {
        let Phase::Closing(a, out) = &mut self.phase else {
            return;
        };
        if let Some((file, data)) = out.next_chunk(&a.tally, &a.config) {
            let id = self.closing_id;
            self.reply(id, Response::ResultChunk(ResultChunk { file, data }));
            return;
        }
        if self.attesting.is_some() {
            return;
        }
        let Some(d) = out.digests(&a.tally) else {
            return;
        };
        let commitment = ResultCommitment {
            mode: a.mode,
            terms_sha256: a.terms_sha256,
            csv_sha256: d.csv,
            json_sha256: d.json,
        };
        let closed = Closed {
            mode: a.mode,
            lots: d.lots,
            terms_sha256: a.terms_sha256,
            csv_sha256: d.csv,
            json_sha256: d.json,
            attestation: Vec::new(),
        };
        self.stats.lots_decided = d.lots;
        self.stats.bids_set_aside = d.set_aside_on_lots;
        let id = self.closing_id.unwrap_or_default();
        let nonce = self.nonce.clone();
        self.attest(
            AttestPurpose::Close { id, closed },
            commitment.to_bytes(),
            nonce,
        );
    }

    fn attest(&mut self, purpose: AttestPurpose, user_data: Vec<u8>, nonce: Vec<u8>) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.attesting = Some((ticket, purpose));
        self.actions.push_back(Action::Attest {
            ticket,
            user_data,
            nonce,
        });
    }

    fn reply(&mut self, id: Option<u64>, msg: Response) {
        let bytes = encode_response(&FromEnclave { id, msg });
        if let Err(e) = encode_frame(&bytes, usize::MAX, &mut self.outbox) {
            // Only a reply over 4 GiB could get here; say so instead of sending a broken frame.
            self.error(id, ErrorCode::Internal, e.to_string());
        }
    }

    /// A non-fatal error reply: the request is refused, the session goes on.
    fn error(&mut self, id: Option<u64>, code: ErrorCode, message: String) {
        self.reply(
            id,
            Response::Error(ErrorReply {
                code,
                message,
                fatal: false,
            }),
        );
    }

    /// A fatal error reply, then the end of the session. Whatever was decided so far is
    /// dropped with the session: nothing about it ever leaves.
    fn fail(&mut self, id: Option<u64>, code: ErrorCode, message: String) {
        self.reply(
            id,
            Response::Error(ErrorReply {
                code,
                message: message.clone(),
                fatal: true,
            }),
        );
        self.end(format!("{code}: {message}"));
    }

    fn end(&mut self, why: String) {
        self.phase = Phase::Ended;
        self.actions.clear();
        for j in &mut self.jobs {
            *j = None;
        }
        self.free = (0..self.jobs.len()).rev().collect();
        self.end_reason.get_or_insert(why);
    }
}

/// A sealed buyer's ciphertext that KMS says is not under the key the manifest registers. The
/// manifest's buyer→key binding is the operator's word, so this is what a buyer registered
/// under someone else's key looks like: it ends the auction instead of setting bids aside.
fn wrong_key(buyer: &str) -> Failure {
    (
        ErrorCode::KeyBinding,
        format!(
            "opening buyer `{buyer}`'s bids: KMS says one was not made under the key the manifest registers (IncorrectKeyException); a sealed auction is decided on every buyer's bids under the key they sealed with, or not at all; nothing is decided"
        ),
    )
}

/// Why the session fails: the code and the sentence for the parent.
type Failure = (ErrorCode, String);
/// An envelope file's data key to ask KMS for, with the header's encryption context.
type KeyJob = (Vec<u8>, BTreeMap<String, String>);

/// What reading a piece of a file gave.
struct Read {
    /// Bytes taken: all of them, unless an envelope file's header ended inside them.
    taken: usize,
    /// An envelope file's header is read: its data key to ask KMS for, with its context.
    key: Option<KeyJob>,
}

/// Reads what is left of the current chunk of `inc`.
fn read_chunk(
    a: &mut Auction,
    inc: &mut Incoming,
    guard: &mut ReplayGuard,
    max_bids: u64,
) -> Result<Option<KeyJob>, Failure> {
    let Some(mut w) = inc.work.take() else {
        return Ok(None);
    };
    let result = (|| {
        if matches!(inc.reader, Reader::Undetected) {
            let n = (3 - inc.head.len()).min(w.data.len() - w.at);
            inc.head.extend_from_slice(&w.data[w.at..w.at + n]);
            w.at += n;
            if inc.head.len() < 3 && !(w.last && w.at == w.data.len()) {
                return Ok(None);
            }
            start_reading(a, inc)?;
            // The head stays: it tells the file's format when the summary is written.
            let head = inc.head.clone();
            read_bytes(a, inc, &head, guard, max_bids)?;
        }
        let r = read_bytes(a, inc, &w.data[w.at..], guard, max_bids)?;
        w.at += r.taken;
        Ok(r.key)
    })();
    inc.work = Some(w);
    result
}

/// The file's first bytes tell its format (in a sealed auction it must be the manifest's).
fn start_reading(a: &mut Auction, inc: &mut Incoming) -> Result<(), Failure> {
    let format = FileFormat::detect(&inc.head);
    if let Some(m) = &a.manifest {
        let named = m.files()[inc.buyer].format;
        if named != format {
            return Err((
                ErrorCode::FileMismatch,
                format!(
                    "buyer `{}`'s file is {format}, but the manifest names a {named} file; nothing is decided",
                    a.buyer_name(inc.buyer)
                ),
            ));
        }
    }
    inc.reader = match format {
        FileFormat::PerBid => {
            a.tally.per_bid_file(inc.buyer);
            Reader::PerBid(Box::new(PerBid {
                rows: RowReader::new(),
                header: HeaderRow::default(),
            }))
        }
        FileFormat::Envelope => Reader::Envelope(Box::new(Envelope {
            decoder: StreamDecoder::new(esdk::Limits {
                max_message_bytes: usize::MAX,
                ..esdk::Limits::default()
            }),
            rows: RowReader::new(),
            header: HeaderRow::default(),
            waiting: false,
            padding: false,
            after_padding: false,
            counted: false,
            batch: RowBatch::new(),
        })),
    };
    Ok(())
}

/// Reads `bytes` of `inc`'s file with its reader.
fn read_bytes(
    a: &mut Auction,
    inc: &mut Incoming,
    bytes: &[u8],
    guard: &mut ReplayGuard,
    max_bids: u64,
) -> Result<Read, Failure> {
    let buyer = inc.buyer;
    let all = Read {
        taken: bytes.len(),
        key: None,
    };
    match &mut inc.reader {
        Reader::Undetected | Reader::Skip => Ok(all),
        Reader::PerBid(p) => {
            let PerBid { rows, header } = &mut **p;
            let mut failed = None;
            rows.feed(bytes, |row| {
                if failed.is_none()
                    && header.take(row, ENCRYPTED_HEADER)
                    && let Err(e) = per_bid_row(a, buyer, row, guard, max_bids)
                {
                    failed = Some(e);
                }
            });
            header.count_malformed(&mut a.tally, buyer);
            failed.map_or(Ok(all), Err)
        }
        Reader::Envelope(env) => {
            if env.waiting {
                return Ok(Read {
                    taken: 0,
                    key: None,
                });
            }
            let Envelope {
                decoder,
                rows,
                header,
                padding,
                after_padding,
                counted,
                batch,
                ..
            } = &mut **env;
            let tally = &mut a.tally;
            let mut sink = |plain: &[u8]| {
                plaintext(
                    tally,
                    buyer,
                    Text {
                        rows,
                        header,
                        batch,
                        counted,
                    },
                    padding,
                    after_padding,
                    plain,
                )
            };
            let pushed = decoder.push(bytes, &mut sink);
            header.count_malformed(&mut a.tally, buyer);
            match pushed {
                Ok(Pushed::All) => Ok(all),
                Ok(Pushed::HeaderDone(taken)) => {
                    let view = decoder.header().expect("the header is done");
                    let spec = &a.config.buyers()[buyer];
                    if let Err(e) = esdk::check_bid_header(
                        &view,
                        a.mode,
                        a.config.auction_id().as_str(),
                        spec.name.as_str(),
                        spec.key_arn.as_str(),
                    ) {
                        let reason = envelope_policy_reason(&e);
                        if a.mode == Mode::Sealed && reason != Reason::MalformedFile {
                            // The manifest's buyer→key binding is the operator's word: a file
                            // made for another key, auction or buyer is what a forged
                            // registration looks like, so it ends the auction rather than
                            // dropping the buyer's bids (DESIGN §2).
                            return Err((
                                ErrorCode::KeyBinding,
                                format!(
                                    "buyer `{}`'s envelope file does not fit the manifest: {e}; a sealed auction is decided on every buyer's bids under the key and names they sealed, or not at all",
                                    spec.name
                                ),
                            ));
                        }
                        a.tally.count(buyer, reason, 1);
                        inc.reader = Reader::Skip;
                        return Ok(all);
                    }
                    let encrypted_key = view.data_keys[0].encrypted_key.clone();
                    if !(1..=MAX_CIPHERTEXT_LEN).contains(&encrypted_key.len()) {
                        a.tally.count(buyer, Reason::MalformedFile, 1);
                        inc.reader = Reader::Skip;
                        return Ok(all);
                    }
                    #[cfg(feature = "unsealed")]
                    if a.mode == Mode::Unsealed {
                        // As for per-bid ciphertexts: in an unsealed auction a buyer's data key
                        // counts once per boot, whatever message carries it.
                        guard
                            .admit(crate::config::sha256(&encrypted_key))
                            .map_err(|r| {
                                r.error(
                                    &format!("buyer `{}`'s envelope file", spec.name),
                                    "a data key",
                                )
                            })?;
                    }
                    let context = view.context.clone();
                    env.waiting = true;
                    Ok(Read {
                        taken,
                        key: Some((encrypted_key, context)),
                    })
                }
                Err(e) => {
                    if env.counted {
                        // Rows of the file reached the lots already and cannot be taken back.
                        return Err(broken(a.buyer_name(buyer), &e));
                    }
                    a.tally.count(buyer, envelope_reason(&e), 1);
                    inc.reader = Reader::Skip;
                    Ok(all)
                }
            }
        }
    }
}

/// The first row of a bid file: its header, which must be the format's.
#[derive(Default)]
struct HeaderRow {
    seen: bool,
    /// The first row was not the header: the file is set aside whole (counted once).
    bad: bool,
    /// Rows that are not bids since the last count, counted per buyer in one go.
    malformed: u64,
}

impl HeaderRow {
    /// Whether `row` is a data row to take: the header row is checked, and everything after a
    /// bad header is ignored.
    fn take(&mut self, row: Row<'_>, expected: [&str; 2]) -> bool {
        if self.bad {
            return false;
        }
        if self.seen {
            return true;
        }
        self.seen = true;
        let ok = match row.fields {
            RowFields::Two(x, y) => {
                bidfile::trimmed(x) == Some(expected[0]) && bidfile::trimmed(y) == Some(expected[1])
            }
            RowFields::Other(_) => false,
        };
        self.bad = !ok;
        false
    }

    fn count_malformed(&mut self, tally: &mut Tally, buyer: usize) {
        if self.malformed > 0 {
            tally.count(
                buyer,
                Reason::MalformedRow,
                std::mem::take(&mut self.malformed),
            );
        }
    }
}

/// One row of a per-bid file (not its header).
fn per_bid_row(
    a: &mut Auction,
    buyer: usize,
    row: Row<'_>,
    guard: &mut ReplayGuard,
    max_bids: u64,
) -> Result<(), Failure> {
    let _ = &guard;
    let RowFields::Two(lot, bid) = row.fields else {
        a.tally.count(buyer, Reason::MalformedRow, 1);
        return Ok(());
    };
    let (Some(lot), Some(bid)) = (bidfile::trimmed(lot), bidfile::trimmed(bid)) else {
        a.tally.count(buyer, Reason::MalformedRow, 1);
        return Ok(());
    };
    if LotId::check(lot).is_err() {
        a.tally.count(buyer, Reason::MalformedRow, 1);
        return Ok(());
    }
    a.per_bid_rows += 1;
    if a.per_bid_rows > max_bids {
        // Reported at close; past the limit no row is opened.
        return Ok(());
    }
    let Some(slot) = a.tally.lots.slot(lot) else {
        return Ok(());
    };
    if a.tally.pending(slot, buyer) != Pending::None {
        a.tally.named_again(slot, buyer);
        return Ok(());
    }
    let Ok(ciphertext) = bidfile::decode_ciphertext(bid) else {
        a.tally.count(buyer, Reason::MalformedRow, 1);
        a.tally.set_pending(slot, buyer, Pending::Seen);
        return Ok(());
    };
    #[cfg(feature = "unsealed")]
    if a.mode == Mode::Unsealed {
        guard
            .admit(crate::config::sha256(&ciphertext))
            .map_err(|r| {
                r.error(
                    &format!("buyer `{}`'s file", a.buyer_name(buyer)),
                    "a ciphertext",
                )
            })?;
    }
    a.tally.set_pending(slot, buyer, Pending::Awaiting);
    a.queue.push_back(QueuedBid {
        lot: slot,
        buyer,
        ciphertext,
    });
    Ok(())
}

/// Plaintext of an envelope file, as frames open: rows up to the padding, which is skipped.
#[allow(clippy::too_many_arguments)]
fn plaintext(
    tally: &mut Tally,
    buyer: usize,
    t: Text<'_>,
    padding: &mut bool,
    after_padding: &mut bool,
    mut plain: &[u8],
) {
    let Text {
        rows,
        header,
        batch,
        counted,
    } = t;
    if !*padding {
        let end = bidfile::padding_start(plain);
        let text = &plain[..end.unwrap_or(plain.len())];
        rows.feed(text, |row| {
            if header.take(row, PLAINTEXT_HEADER) {
                envelope_row(tally, buyer, row, header, batch, counted);
            }
        });
        batch.apply(tally, buyer, counted);
        match end {
            None => return,
            Some(at) => {
                *padding = true;
                plain = &plain[at..];
            }
        }
    }
    if !*after_padding && !bidfile::all_padding(plain) {
        // Text after the padding began: the rest of the file is one malformed row.
        *after_padding = true;
        header.malformed += 1;
    }
}

/// An envelope file's row reader and what its rows go to.
struct Text<'a> {
    rows: &'a mut RowReader,
    header: &'a mut HeaderRow,
    batch: &'a mut RowBatch,
    counted: &'a mut bool,
}

/// One row of an envelope file's plaintext (not its header): a malformed one is counted now, a
/// well-formed one goes to the lots through `batch`. Set-aside rows are only counted, never
/// recorded with their lot: the operator must not learn which lots an envelope file names.
fn envelope_row(
    tally: &mut Tally,
    buyer: usize,
    row: Row<'_>,
    header: &mut HeaderRow,
    batch: &mut RowBatch,
    counted: &mut bool,
) {
    let RowFields::Two(lot, bid) = row.fields else {
        header.malformed += 1;
        return;
    };
    let (Some(lot), Some(bid)) = (bidfile::trimmed_bytes(lot), bidfile::trimmed_bytes(bid)) else {
        header.malformed += 1;
        return;
    };
    if !LotId::is_valid(lot) {
        header.malformed += 1;
        return;
    }
    batch.push(tally, buyer, lot, bid, counted);
}

/// The file's last chunk is read: its digest must be the manifest's, and its reader must end
/// cleanly.
fn finish_file(
    a: &mut Auction,
    inc: &mut Incoming,
    guard: &mut ReplayGuard,
    max_bids: u64,
) -> Result<(), Failure> {
    let buyer = inc.buyer;
    let name = a.buyer_name(buyer).clone();
    let sha256: [u8; 32] = std::mem::replace(&mut inc.sha, digest::Context::new(&digest::SHA256))
        .finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes");
    let size = inc.received;
    let format = FileFormat::detect(&inc.head);
    if let Some(m) = &a.manifest {
        let f = &m.files()[buyer];
        if f.size != size || f.sha256 != sha256 {
            return Err((
                ErrorCode::FileMismatch,
                format!(
                    "buyer `{name}`'s file ({size} bytes, SHA-256 {}) is not the one the manifest names ({} bytes, SHA-256 {}); nothing is decided",
                    hex::encode(sha256),
                    f.size,
                    hex::encode(f.sha256),
                ),
            ));
        }
    }
    match &mut inc.reader {
        Reader::Undetected | Reader::Skip => {}
        Reader::PerBid(p) => {
            let PerBid { rows, header } = &mut **p;
            let mut failed = None;
            rows.finish(|row| {
                if failed.is_none()
                    && header.take(row, ENCRYPTED_HEADER)
                    && let Err(e) = per_bid_row(a, buyer, row, guard, max_bids)
                {
                    failed = Some(e);
                }
            });
            header.count_malformed(&mut a.tally, buyer);
            if let Some(e) = failed {
                return Err(e);
            }
            if !header.seen || header.bad {
                a.tally.count(buyer, Reason::MalformedFile, 1);
            }
        }
        Reader::Envelope(env) => {
            if let Err(e) = env.decoder.finish() {
                if env.counted {
                    return Err(broken(&name, &e));
                }
                a.tally.count(buyer, envelope_reason(&e), 1);
            } else {
                let Envelope {
                    rows,
                    header,
                    counted,
                    batch,
                    ..
                } = &mut **env;
                rows.finish(|row| {
                    if header.take(row, PLAINTEXT_HEADER) {
                        envelope_row(&mut a.tally, buyer, row, header, batch, counted);
                    }
                });
                batch.apply(&mut a.tally, buyer, counted);
                header.count_malformed(&mut a.tally, buyer);
                if !header.seen || header.bad {
                    a.tally.count(buyer, Reason::MalformedFile, 1);
                }
            }
        }
    }
    a.files[buyer] = Some(FileSummary {
        buyer: name,
        format,
        size,
        sha256,
    });
    Ok(())
}

/// An envelope file that fails a check after some of its rows reached the lots: they cannot
/// be taken back, so the auction fails.
fn broken(buyer: &BuyerName, e: &esdk::EsdkError) -> Failure {
    (
        ErrorCode::BrokenFile,
        format!(
            "buyer `{buyer}`'s envelope file fails after some of its rows were read ({e}): it is not the file the manifest names, or the buyer's file is broken; nothing is decided"
        ),
    )
}

/// Why an envelope file that fails before any of its rows is set aside: a commitment, tag or
/// signature that does not hold is undecryptable; anything else is not a bid file.
fn envelope_reason(e: &esdk::EsdkError) -> Reason {
    match e.stage() {
        esdk::Stage::Commitment | esdk::Stage::HeaderTag | esdk::Stage::Content => {
            Reason::Undecryptable
        }
        _ => Reason::MalformedFile,
    }
}

/// Why an envelope file that is a well-formed message is not this buyer's bid file for this
/// auction. Another auction or buyer in the context is what a KMS context mismatch would say
/// (undecryptable); another key is a wrong key; the rest is not a bid file.
fn envelope_policy_reason(e: &esdk::EsdkError) -> Reason {
    match e {
        esdk::EsdkError::BidFileKeyArn { .. } => Reason::WrongKey,
        esdk::EsdkError::BidFileAuction { .. } | esdk::EsdkError::BidFileBuyer { .. } => {
            Reason::Undecryptable
        }
        _ => Reason::MalformedFile,
    }
}

/// Raw bytes per chunk (of a file or a result) whose bulk frame fits within `max_frame`; at
/// most 512 KiB, which is what the enclave holds of a file at a time.
pub fn chunk_len_for(max_frame: usize) -> usize {
    max_frame
        .saturating_sub(crate::wire::bulk::FILE_CHUNK_HEADER_MAX)
        .clamp(1, 512 * 1024)
}
