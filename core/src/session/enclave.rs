//! The enclave's end of a session: hello → credentials → open (a sealed manifest, or unsealed
//! terms) → every buyer's seal → every buyer's file, whole → close.
//!
//! The driver feeds it bytes from the parent and the results of the work it asked for
//! (attestation documents from the NSM, opened ciphertexts from KMS), and sends what it hands
//! back. Every rule the enclave enforces on an untrusted parent lives here (DESIGN §2): the
//! terms come only from the manifest; every buyer's seal must decrypt, under the buyer's key
//! and the manifest's digest, before any bid is opened; each file must be exactly the one the
//! manifest names; the enclave, not the parent, parses bid files; a failure the operator could
//! cause fails the whole auction; and **nothing about any lot leaves before close**, when the
//! whole result leaves at once, attested. A rerun of the same manifest gives the same bytes.

use super::Millis;
use crate::amount::Amount;
use crate::auction::{self, LotResult, Reason, Verdict};
use crate::bidfile::{self, MAX_CIPHERTEXT_LEN};
use crate::config::{self, AuctionConfig, Mode, ResultCommitment};
use crate::credentials::Credentials;
use crate::esdk;
use crate::kms;
use crate::manifest::{self, FileFormat, Manifest, SEAL_MARKER};
use crate::names::{BuyerName, KeyArn, LotId};
use crate::output::{self, FileSummary, ListedLots, SetAside};
use crate::wire::{
    AuctionOpened, ChunkAccepted, Closed, CredentialsReply, ErrorCode, ErrorReply, FileChunk,
    FrameDecoder, FromEnclave, HelloReply, MAX_NONCE_LEN, MIN_NONCE_LEN, OutputFile,
    PROTOCOL_VERSION, Request, Response, ResultChunk, Seal, SealAccepted, ToEnclave,
    decode_request, encode_frame, encode_response,
};
use aws_lc_rs::digest;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
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
    /// Distinct lots per auction.
    pub max_lots: usize,
    /// Bids (rows) per auction, over every buyer's file.
    pub max_bids: usize,
    /// Largest bid file. A file is held whole until its digest is checked.
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
            // At these maximums (and 64 MiB files) the auction state peaks at about 350 MiB,
            // within the enclave's 512 MiB (`bidctl bench --memory`, README).
            max_lots: 500_000,
            max_bids: 1_000_000,
            max_file_bytes: 64 * 1024 * 1024,
            max_held_bytes: 32 * 1024 * 1024,
            idle_timeout: 10 * 60 * 1000,
        }
    }
}

/// SHA-256 digests of every ciphertext accepted since boot in **unsealed** auctions. Kept by
/// the driver across sessions, because a parent can reconnect and try again. Sealed auctions
/// need none: their reruns are harmless by construction (same manifest, same bytes).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashSet<[u8; 32]>,
    capacity: usize,
}

impl ReplayGuard {
    /// At most `capacity` ciphertexts per boot (32 bytes each plus table overhead).
    pub fn new(capacity: usize) -> Self {
        ReplayGuard {
            seen: HashSet::new(),
            capacity,
        }
    }
    pub fn len(&self) -> usize {
        self.seen.len()
    }
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Admits the ciphertexts of one file whole, or none of them: each must be new since boot
    /// and appear once in `digests`, and all must fit.
    fn admit(&mut self, digests: Vec<[u8; 32]>) -> Result<(), Refused> {
        let distinct: HashSet<&[u8; 32]> = digests.iter().collect();
        if distinct.len() != digests.len() || digests.iter().any(|d| self.seen.contains(d)) {
            return Err(Refused::Replayed);
        }
        if self.seen.len() + digests.len() > self.capacity {
            return Err(Refused::Full(self.capacity));
        }
        self.seen.extend(digests);
        Ok(())
    }
}

/// Why [`ReplayGuard::admit`] refused a file.
enum Refused {
    Replayed,
    /// At capacity: this many ciphertexts per boot.
    Full(usize),
}

impl Refused {
    /// The session's error for a refused file; `what` names it (buyer `B`'s file).
    fn error(self, what: &str, holds: &str) -> (ErrorCode, String) {
        match self {
            Refused::Replayed => (
                ErrorCode::ReplayedCiphertext,
                format!(
                    "{what} holds {holds} already used since this enclave started; in an unsealed auction a ciphertext counts once per boot (restart the enclave to rerun, or seal the auction)"
                ),
            ),
            Refused::Full(capacity) => (
                ErrorCode::TooManyBids,
                format!("this enclave opens at most {capacity} unsealed ciphertexts per boot"),
            ),
        }
    }
}

/// Identifies one ciphertext being opened: the request that brought it, and its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BidTicket {
    pub request: u64,
    pub index: usize,
}

/// A ciphertext for the driver to open with KMS Decrypt (Recipient = the enclave's key).
#[derive(Debug, Clone)]
pub struct DecryptJob {
    pub ticket: BidTicket,
    /// Passed to Decrypt as `KeyId`; the answer's `KeyId` must equal it.
    pub key_arn: KeyArn,
    pub ciphertext: Vec<u8>,
    /// The encryption context: {auction, lot, buyer} for a bid, {auction, buyer, manifest}
    /// for a seal.
    pub context: BTreeMap<String, String>,
    /// When KMS refuses the ciphertext with the context, try once more without it (bids made
    /// with plain `aws kms encrypt`, allowed by the auction's terms). Never for seals.
    pub retry_without_context: bool,
    pub credentials: Arc<Credentials>,
}

/// What the driver reports for a [`DecryptJob`].
pub enum DecryptOutcome {
    /// The plaintext, opened from KMS's CiphertextForRecipient inside the enclave.
    Plaintext(crate::cms::Plaintext),
    /// KMS refused this ciphertext for a reason only its maker can cause.
    Disqualified(Reason),
    /// Nothing can be decided (credentials refused, access denied, a key made unusable, KMS
    /// unreachable within the deadline, an answer that makes no sense). Ends the auction.
    Fatal { code: ErrorCode, message: String },
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    AwaitCredentials,
    Ready,
    /// Sealed: waiting for every buyer's seal to be opened.
    Sealing,
    Files,
    Closing,
    Ended,
}

enum AttestPurpose {
    Hello {
        id: u64,
    },
    Close {
        id: u64,
        closed: Closed,
        csv: Vec<u8>,
        json: Vec<u8>,
    },
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
    /// The data key of the envelope file held in [`Auction::envelope`].
    EnvelopeKey {
        buyer: usize,
    },
}

/// A file being received.
struct Incoming {
    buyer: usize,
    hash: digest::Context,
    bytes: Vec<u8>,
}

/// A parsed row waiting for room among the ciphertexts being opened.
struct QueuedBid {
    ticket: BidTicket,
    lot: u32,
    buyer: usize,
    ciphertext: Vec<u8>,
}

struct Auction {
    mode: Mode,
    config: AuctionConfig,
    terms_sha256: [u8; 32],
    manifest: Option<Manifest>,
    sealed: Vec<bool>,
    incoming: Option<Incoming>,
    files: Vec<Option<FileSummary>>,
    queue: VecDeque<QueuedBid>,
    lot_index: HashMap<LotId, u32>,
    lot_ids: Vec<LotId>,
    /// The bids as they are decided; grouped by lot at close.
    verdicts: Vec<Decided>,
    set_aside: BTreeMap<(usize, Reason), u64>,
    rows: usize,
    /// The answer to a file's last chunk, held until every bid of the file is opened: so the
    /// parent's close can never overtake bids still at KMS, and files are opened one at a time.
    pending_acks: Vec<(u64, ChunkAccepted)>,
    /// Chunks that arrived while a file's bids were being opened, handled once they are.
    /// Reading goes on meanwhile, so a credentials refresh is never stuck behind them.
    held: VecDeque<(u64, FileChunk)>,
    held_bytes: usize,
    /// An envelope file whose message is checked (signature included) and whose data key is
    /// at KMS: opened when the key comes back. At most one: files are opened one at a time.
    envelope: Option<esdk::OwnedMessage>,
}

impl Auction {
    /// True while a file's bids are queued or being opened.
    fn busy(&self, jobs: usize) -> bool {
        !self.queue.is_empty() || jobs > 0 || !self.pending_acks.is_empty()
    }
}

impl Auction {
    fn buyer_index(&self, name: &BuyerName) -> Option<usize> {
        self.config.buyers().iter().position(|b| &b.name == name)
    }
    fn buyer_name(&self, i: usize) -> &BuyerName {
        &self.config.buyers()[i].name
    }
    fn set_aside(&mut self, buyer: usize, reason: Reason, count: u64) {
        if count > 0 {
            *self.set_aside.entry((buyer, reason)).or_default() += count;
        }
    }
}

pub struct EnclaveSession {
    settings: EnclaveSettings,
    decoder: FrameDecoder,
    outbox: Vec<u8>,
    actions: VecDeque<Action>,
    phase: Phase,
    last_id: Option<u64>,
    nonce: Vec<u8>,
    credentials: Option<Arc<Credentials>>,
    auction: Option<Auction>,
    guard: ReplayGuard,
    attesting: Option<(u64, AttestPurpose)>,
    next_ticket: u64,
    jobs: HashMap<BidTicket, Job>,
    idle_deadline: Millis,
    /// Why the session ended, for the driver's log.
    end_reason: Option<String>,
    stats: SessionStats,
}

/// Counts for the driver's logs. Deliberately nothing about amounts or lots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub lots_decided: u64,
    pub bids_opened: u64,
    pub bids_set_aside: u64,
}

impl EnclaveSession {
    pub fn new(settings: EnclaveSettings, guard: ReplayGuard, now: Millis) -> Self {
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
            auction: None,
            guard,
            attesting: None,
            next_ticket: 1,
            jobs: HashMap::new(),
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
        while self.phase != Phase::Ended && !data.is_empty() {
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
        if self.phase == Phase::Ended {
            return;
        }
        let why = match self.decoder.finish() {
            Err(e) => format!("parent disconnected: {e}"),
            Ok(()) => "parent disconnected".to_owned(),
        };
        self.end(why);
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        if self.phase != Phase::Ended && self.is_idle() && now >= self.idle_deadline {
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

    /// When to call [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Millis> {
        (self.phase != Phase::Ended && self.is_idle()).then_some(self.idle_deadline)
    }

    fn is_idle(&self) -> bool {
        self.jobs.is_empty() && self.attesting.is_none() && self.queued() == 0
    }

    fn queued(&self) -> usize {
        self.auction.as_ref().map_or(0, |a| a.queue.len())
    }

    /// False while the enclave has enough to do: stop reading from the parent until ciphertexts
    /// being opened make room. Bounds the enclave's memory whatever the parent sends.
    pub fn wants_input(&self) -> bool {
        // Reading goes on while bids are opened (a credentials refresh must get through);
        // chunks sent ahead are held, up to `max_held_bytes`, which bounds memory.
        self.phase != Phase::Ended
            && self
                .auction
                .as_ref()
                .is_none_or(|a| a.held_bytes < self.settings.max_held_bytes)
    }

    /// True once the session is over: flush [`poll_transmit`](Self::poll_transmit), then close.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    pub fn end_reason(&self) -> Option<&str> {
        self.end_reason.as_deref()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Bytes to send to the parent, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.outbox.is_empty()).then(|| std::mem::take(&mut self.outbox))
    }

    /// Number of ciphertexts being opened now.
    pub fn pending_bids(&self) -> usize {
        self.jobs.len()
    }

    /// The NSM's answer to an [`Action::Attest`].
    pub fn attested(&mut self, ticket: u64, document: Result<Vec<u8>, String>) {
        let Some((expected, purpose)) = self.attesting.take() else {
            return;
        };
        if expected != ticket || self.phase == Phase::Ended {
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
            AttestPurpose::Close {
                id,
                mut closed,
                csv,
                json,
            } => {
                // The result leaves here, whole and at once, and only here.
                for (file, bytes) in [(OutputFile::Csv, csv), (OutputFile::Json, json)] {
                    for part in bytes.chunks(self.result_chunk_len()) {
                        self.reply(
                            Some(id),
                            Response::ResultChunk(ResultChunk {
                                file,
                                data: part.to_vec(),
                            }),
                        );
                    }
                }
                closed.attestation = attestation;
                self.reply(Some(id), Response::Closed(closed));
                self.end("auction closed".to_owned());
            }
        }
    }

    /// Raw bytes per result chunk so that a chunk's frame (base64 plus a little JSON) stays
    /// within the frame limit.
    fn result_chunk_len(&self) -> usize {
        chunk_len_for(self.settings.max_frame)
    }

    /// The driver's result for a [`DecryptJob`].
    pub fn decrypted(&mut self, ticket: BidTicket, outcome: DecryptOutcome) {
        if self.phase == Phase::Ended {
            return;
        }
        let Some(job) = self.jobs.remove(&ticket) else {
            return;
        };
        match job {
            Job::Seal { request, buyer } => self.seal_opened(request, buyer, outcome),
            Job::EnvelopeKey { buyer } => self.envelope_opened(buyer, outcome),
            Job::Bid { lot, buyer } => {
                let sealed = self.auction.as_ref().map(|a| a.mode) == Some(Mode::Sealed);
                let outcome = match outcome {
                    DecryptOutcome::Disqualified(Reason::WrongKey) if sealed => wrong_key_fatal(),
                    other => other,
                };
                let verdict = match outcome {
                    DecryptOutcome::Plaintext(plaintext) => match Amount::parse(&plaintext) {
                        Ok(amount) => Verdict::Valid(amount),
                        Err(_) => Verdict::Disqualified(Reason::InvalidAmount),
                    },
                    DecryptOutcome::Disqualified(reason) => Verdict::Disqualified(reason),
                    DecryptOutcome::Fatal { code, message } => {
                        let (who, request) = self
                            .auction
                            .as_ref()
                            .map(|a| {
                                (
                                    a.buyer_name(buyer).to_string(),
                                    // The file's last chunk waits for this answer.
                                    a.pending_acks.first().map(|(id, _)| *id),
                                )
                            })
                            .unwrap_or_default();
                        self.fail(
                            request,
                            code,
                            format!("opening buyer `{who}`'s bids: {message}; nothing is decided"),
                        );
                        return;
                    }
                };
                let auction = self
                    .auction
                    .as_mut()
                    .expect("bids exist only in an auction");
                if let Verdict::Disqualified(reason) = verdict {
                    auction.set_aside(buyer, reason, 1);
                }
                auction
                    .verdicts
                    .push(Decided::new(lot, buyer as u8, verdict));
                self.pump();
            }
        }
    }

    fn seal_opened(&mut self, request: u64, buyer: usize, outcome: DecryptOutcome) {
        let auction = self
            .auction
            .as_mut()
            .expect("seals exist only in an auction");
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
            self.phase = Phase::Files;
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
        match (self.phase, msg) {
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
                Phase::AwaitCredentials | Phase::Ready | Phase::Sealing | Phase::Files,
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
            (Phase::Sealing, Request::Seal(seal)) => self.seal(id, seal),
            (Phase::Files, Request::FileChunk(chunk)) => self.chunk_or_hold(id, chunk),
            (Phase::Files, Request::Close(_)) => self.close(id),
            (phase, _) => self.error(
                Some(id),
                ErrorCode::OutOfOrder,
                format!(
                    "frame {number}: `{kind}` is not allowed {}",
                    match phase {
                        Phase::AwaitHello => "before hello",
                        Phase::AwaitCredentials => "before credentials",
                        Phase::Ready => "before an auction is open",
                        Phase::Sealing => "before every buyer's seal is accepted",
                        Phase::Files => "while bid files are being received",
                        Phase::Closing | Phase::Ended => "after close",
                    }
                ),
            ),
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
        if let (Some(auction), Some(old)) = (&self.auction, &self.credentials)
            && c.region != old.region
        {
            self.error(
                Some(id),
                ErrorCode::InvalidCredentials,
                format!(
                    "auction {} runs in region {}; new credentials may not move it to {}",
                    auction.config.auction_id(),
                    old.region,
                    c.region
                ),
            );
            return;
        }
        let reply = CredentialsReply {
            region: c.region.clone(),
            expiration: c.expiration,
        };
        let c = Arc::new(c);
        self.credentials = Some(c.clone());
        self.actions.push_back(Action::UseCredentials(c));
        if self.phase == Phase::AwaitCredentials {
            self.phase = Phase::Ready;
        }
        self.reply(Some(id), Response::Credentials(reply));
    }

    fn open(&mut self, id: u64, mode: Mode, config: AuctionConfig, manifest: Option<Manifest>) {
        let region = self
            .credentials
            .as_ref()
            .map(|c| c.region.as_str().to_owned())
            .unwrap_or_default();
        if let Some(b) = config
            .buyers()
            .iter()
            .find(|b| b.key_arn.region() != region)
        {
            self.fail(
                Some(id),
                ErrorCode::InvalidAuction,
                format!(
                    "buyer `{}`'s key {} is not in the credentials' region {region}",
                    b.name, b.key_arn
                ),
            );
            return;
        }
        if let Some(f) = manifest.as_ref().and_then(|m| {
            m.files()
                .iter()
                .find(|f| f.size > self.settings.max_file_bytes)
        }) {
            self.fail(
                Some(id),
                ErrorCode::FileTooLarge,
                format!(
                    "buyer `{}`'s file is {} bytes; this enclave takes files of at most {}",
                    f.buyer, f.size, self.settings.max_file_bytes
                ),
            );
            return;
        }
        let terms_sha256 = match &manifest {
            Some(m) => m.digest(),
            None => config.digest(),
        };
        let buyers = config.buyers().len();
        let auction_id = config.auction_id().clone();
        self.auction = Some(Auction {
            mode,
            config,
            terms_sha256,
            manifest,
            sealed: vec![mode == Mode::Unsealed; buyers],
            incoming: None,
            files: vec![None; buyers],
            queue: VecDeque::new(),
            lot_index: HashMap::new(),
            lot_ids: Vec::new(),
            verdicts: Vec::new(),
            set_aside: BTreeMap::new(),
            rows: 0,
            pending_acks: Vec::new(),
            held: VecDeque::new(),
            held_bytes: 0,
            envelope: None,
        });
        self.phase = match mode {
            Mode::Sealed => Phase::Sealing,
            Mode::Unsealed => Phase::Files,
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
        let auction = self.auction.as_ref().expect("phase Sealing has an auction");
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
                .values()
                .any(|j| matches!(j, Job::Seal { buyer: b, .. } if *b == buyer));
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
        let job = DecryptJob {
            ticket: BidTicket {
                request: id,
                index: 0,
            },
            key_arn: spec.key_arn.clone(),
            ciphertext: seal.ciphertext,
            context: manifest::seal_context(
                auction.config.auction_id(),
                &spec.name,
                &auction.terms_sha256,
            ),
            retry_without_context: false,
            credentials: self
                .credentials
                .clone()
                .expect("phase Sealing has credentials"),
        };
        self.jobs
            .insert(job.ticket, Job::Seal { request: id, buyer });
        self.actions.push_back(Action::Decrypt(job));
    }

    fn chunk_or_hold(&mut self, id: u64, chunk: FileChunk) {
        let jobs = self.jobs.len();
        let cap = self.settings.max_held_bytes;
        let auction = self.auction.as_mut().expect("phase Files has an auction");
        if auction.busy(jobs) || !auction.held.is_empty() {
            auction.held_bytes += chunk.data.len();
            auction.held.push_back((id, chunk));
            if auction.held_bytes > cap {
                self.fail(
                    Some(id),
                    ErrorCode::FileTooLarge,
                    format!(
                        "the parent sent more than {cap} bytes of files ahead while bids were being opened; wait for the answer to each file's last chunk"
                    ),
                );
            }
            return;
        }
        self.chunk(id, chunk);
    }

    fn chunk(&mut self, id: u64, chunk: FileChunk) {
        let max_file = self.settings.max_file_bytes;
        let auction = self.auction.as_mut().expect("phase Files has an auction");
        let Some(buyer) = auction.buyer_index(&chunk.buyer) else {
            let message = format!(
                "file from `{}`, who is not a buyer in auction {}",
                chunk.buyer,
                auction.config.auction_id()
            );
            self.fail(Some(id), ErrorCode::UnknownBuyer, message);
            return;
        };
        match &auction.incoming {
            Some(inc) if inc.buyer != buyer => {
                let message = format!(
                    "a chunk of `{}`'s file arrived while `{}`'s is not finished; files are sent one at a time",
                    chunk.buyer,
                    auction.buyer_name(inc.buyer)
                );
                self.fail(Some(id), ErrorCode::OutOfOrder, message);
                return;
            }
            Some(_) => {}
            None if auction.files[buyer].is_some() => {
                self.fail(
                    Some(id),
                    ErrorCode::DuplicateFile,
                    format!("buyer `{}`'s file was already received", chunk.buyer),
                );
                return;
            }
            None => {
                let expected = auction
                    .manifest
                    .as_ref()
                    .and_then(|m| m.file(&chunk.buyer))
                    .map_or(0, |f| f.size);
                auction.incoming = Some(Incoming {
                    buyer,
                    hash: digest::Context::new(&digest::SHA256),
                    bytes: Vec::with_capacity(expected as usize),
                });
            }
        }
        let inc = auction.incoming.as_mut().expect("set above");
        let limit = match &auction.manifest {
            Some(m) => m.files()[buyer].size,
            None => max_file,
        };
        let received = inc.bytes.len() as u64 + chunk.data.len() as u64;
        if received > limit {
            let (code, message) = match auction.mode {
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
            };
            self.fail(Some(id), code, message);
            return;
        }
        inc.hash.update(&chunk.data);
        inc.bytes.extend_from_slice(&chunk.data);
        let ack = ChunkAccepted {
            buyer: chunk.buyer,
            received,
        };
        if !chunk.last {
            self.reply(Some(id), Response::ChunkAccepted(ack));
            return;
        }
        let inc = auction.incoming.take().expect("set above");
        auction.pending_acks.push((id, ack));
        if let Err((code, message)) = self.complete_file(id, inc) {
            self.fail(Some(id), code, message);
            return;
        }
        self.pump();
    }

    /// A whole file arrived: check it against the manifest, parse it, queue its bids.
    fn complete_file(&mut self, id: u64, inc: Incoming) -> Result<(), (ErrorCode, String)> {
        let settings = &self.settings;
        let auction = self.auction.as_mut().expect("phase Files has an auction");
        let buyer = inc.buyer;
        let name = auction.buyer_name(buyer).clone();
        let sha256: [u8; 32] = inc
            .hash
            .finish()
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        let size = inc.bytes.len() as u64;
        let format = FileFormat::detect(&inc.bytes);
        if let Some(m) = &auction.manifest {
            let f = &m.files()[buyer];
            if f.size != size || f.sha256 != sha256 || f.format != format {
                return Err((
                    ErrorCode::FileMismatch,
                    format!(
                        "buyer `{name}`'s file ({size} bytes, SHA-256 {}, {format}) is not the one the manifest names ({} bytes, SHA-256 {}, {}); nothing is decided",
                        hex::encode(sha256),
                        f.size,
                        hex::encode(f.sha256),
                        f.format
                    ),
                ));
            }
        }
        auction.files[buyer] = Some(FileSummary {
            buyer: name.clone(),
            format,
            size,
            sha256,
        });
        let limits = bidfile::Limits {
            max_bytes: settings.max_file_bytes as usize,
            max_rows: settings.max_bids.saturating_sub(auction.rows),
        };
        let file = match format {
            FileFormat::PerBid => {
                bidfile::parse_encrypted_lenient(name.as_str(), &inc.bytes, limits)
            }
            FileFormat::Envelope => return self.envelope_file(id, buyer, inc.bytes),
        };
        drop(inc.bytes);
        let file = match file {
            Ok(f) => f,
            Err(e) if matches!(e.kind, bidfile::BidFileErrorKind::TooManyRows { .. }) => {
                return Err((
                    ErrorCode::TooManyBids,
                    format!(
                        "buyer `{name}`'s file takes the auction over this enclave's limit of {} bids",
                        settings.max_bids
                    ),
                ));
            }
            Err(_) => {
                // Not a bid file at all. The buyer sealed it (or, unsealed, the operator is
                // trusted): set it aside whole, never guessing at a part of it.
                auction.set_aside(buyer, Reason::MalformedFile, 1);
                return Ok(());
            }
        };
        auction.set_aside(buyer, Reason::MalformedRow, file.malformed_rows);
        auction.rows += file.rows.len();
        if auction.mode == Mode::Unsealed {
            let digests = file
                .rows
                .iter()
                .map(|row| config::sha256(&row.ciphertext))
                .collect();
            self.guard
                .admit(digests)
                .map_err(|r| r.error(&format!("buyer `{name}`'s file"), "a ciphertext"))?;
        }
        for lot in &file.duplicate_lots {
            let l = lot_slot(auction, lot.as_str(), settings.max_lots)?;
            auction.set_aside(buyer, Reason::DuplicateLot, 1);
            auction.verdicts.push(Decided::new(
                l,
                buyer as u8,
                Verdict::Disqualified(Reason::DuplicateLot),
            ));
        }
        for (index, row) in file.rows.into_iter().enumerate() {
            let lot = lot_slot(auction, row.lot.as_str(), settings.max_lots)?;
            auction.queue.push_back(QueuedBid {
                ticket: BidTicket { request: id, index },
                lot,
                buyer,
                ciphertext: row.ciphertext,
            });
        }
        Ok(())
    }

    /// An envelope file (DESIGN §4): everything that can be checked without the data key is
    /// checked first, the ECDSA signature included, so a garbage file costs no KMS call; then
    /// **one** KMS Decrypt of its data key (KeyId = the buyer's registered key, the header's
    /// whole encryption context, Recipient = this enclave), answered in
    /// [`envelope_opened`](Self::envelope_opened). A file that fails a check is set aside
    /// whole, once, under its buyer: never with a lot.
    fn envelope_file(
        &mut self,
        id: u64,
        buyer: usize,
        bytes: Vec<u8>,
    ) -> Result<(), (ErrorCode, String)> {
        let limits = esdk::Limits {
            max_message_bytes: self.settings.max_file_bytes as usize,
            ..esdk::Limits::default()
        };
        let auction = self.auction.as_mut().expect("phase Files has an auction");
        let message = match esdk::OwnedMessage::parse(bytes, &limits) {
            Ok(m) => m,
            Err(_) => {
                auction.set_aside(buyer, Reason::MalformedFile, 1);
                return Ok(());
            }
        };
        let spec = &auction.config.buyers()[buyer];
        if let Err(e) = esdk::check_bid_file(
            &message.message(),
            auction.mode,
            auction.config.auction_id().as_str(),
            spec.name.as_str(),
            spec.key_arn.as_str(),
        ) {
            let reason = envelope_policy_reason(&e);
            if auction.mode == Mode::Sealed && reason != Reason::MalformedFile {
                // The manifest's buyer→key binding is the operator's word: a file made for
                // another key, auction or buyer is what a forged registration looks like, so
                // it ends the auction rather than dropping the buyer's bids (DESIGN §2).
                return Err((
                    ErrorCode::KeyBinding,
                    format!(
                        "buyer `{}`'s envelope file does not fit the manifest: {e}; a sealed auction is decided on every buyer's bids under the key and names they sealed, or not at all",
                        spec.name
                    ),
                ));
            }
            auction.set_aside(buyer, reason, 1);
            return Ok(());
        }
        let encrypted_key = match message.data_keys() {
            [key] if (1..=MAX_CIPHERTEXT_LEN).contains(&key.encrypted_key.len()) => {
                key.encrypted_key.clone()
            }
            _ => {
                auction.set_aside(buyer, Reason::MalformedFile, 1);
                return Ok(());
            }
        };
        if auction.mode == Mode::Unsealed {
            // As for per-bid ciphertexts: in an unsealed auction a buyer's data key counts
            // once per boot, whatever message carries it.
            let d = config::sha256(&encrypted_key);
            self.guard.admit(vec![d]).map_err(|r| {
                r.error(
                    &format!("buyer `{}`'s envelope file", spec.name),
                    "a data key",
                )
            })?;
        }
        let job = DecryptJob {
            ticket: BidTicket {
                request: id,
                index: 0,
            },
            key_arn: spec.key_arn.clone(),
            ciphertext: encrypted_key,
            context: message.context().clone(),
            retry_without_context: false,
            credentials: self
                .credentials
                .clone()
                .expect("phase Files has credentials"),
        };
        auction.envelope = Some(message);
        self.jobs.insert(job.ticket, Job::EnvelopeKey { buyer });
        self.actions.push_back(Action::Decrypt(job));
        Ok(())
    }

    /// KMS's answer for an envelope file's data key: open the frames (key commitment, header
    /// tag, every frame tag; nothing is released unless all hold), then parse the buyer's
    /// `contract,bid` CSV with the per-bid rules. Only valid bids reach the lots.
    ///
    /// Privacy: the operator must not learn which lots a buyer bid on in an envelope file.
    /// Rows set aside here (malformed, invalid amount, duplicated lot) are therefore only
    /// counted per buyer and reason, never recorded with a lot, and register no lot: any
    /// per-lot record of set-aside bids must stay out of this path.
    fn envelope_opened(&mut self, buyer: usize, outcome: DecryptOutcome) {
        let max_bids = self.settings.max_bids;
        let max_lots = self.settings.max_lots;
        let max_file = self.settings.max_file_bytes as usize;
        let Some(auction) = self.auction.as_mut() else {
            return;
        };
        let Some(message) = auction.envelope.take() else {
            return;
        };
        let outcome = match outcome {
            DecryptOutcome::Disqualified(Reason::WrongKey) if auction.mode == Mode::Sealed => {
                wrong_key_fatal()
            }
            other => other,
        };
        let data_key = match outcome {
            DecryptOutcome::Plaintext(key) => key,
            DecryptOutcome::Disqualified(reason) => {
                auction.set_aside(buyer, reason, 1);
                self.pump();
                return;
            }
            DecryptOutcome::Fatal { code, message } => {
                let who = auction.buyer_name(buyer).to_string();
                let request = auction.pending_acks.first().map(|(id, _)| *id);
                self.fail(
                    request,
                    code,
                    format!("opening buyer `{who}`'s envelope file: {message}; nothing is decided"),
                );
                return;
            }
        };
        let opened = message.message().decrypt(&data_key);
        drop(data_key);
        drop(message);
        let plaintext = match opened {
            Ok(p) => p,
            Err(_) => {
                // A commitment, header tag or frame tag that does not hold under the key KMS
                // gave for this very message: only its maker can have done that.
                auction.set_aside(buyer, Reason::Undecryptable, 1);
                self.pump();
                return;
            }
        };
        let name = auction.buyer_name(buyer).clone();
        let limits = bidfile::Limits {
            max_bytes: max_file,
            max_rows: max_bids.saturating_sub(auction.rows),
        };
        // Rows go straight into the auction's lot table and verdicts (no per-file copy of
        // every lot: at 1,000,000 lots that copy was the largest thing in memory). What this
        // file adds is at the ends of `lot_ids` and `verdicts`, so it can be undone.
        let lots_before = auction.lot_ids.len();
        let verdicts_before = auction.verdicts.len();
        // Per lot slot: 1 seen in this file, 2 seen twice or more.
        let mut seen: Vec<u8> = Vec::new();
        let mut invalid_slots: Vec<u32> = Vec::new();
        let mut too_many_lots = false;
        let walked = bidfile::walk_plaintext(name.as_str(), &plaintext, limits, |lot, amount| {
            if too_many_lots {
                return;
            }
            let Ok(slot) = lot_slot(auction, lot, max_lots) else {
                too_many_lots = true;
                return;
            };
            let i = slot as usize;
            if seen.len() <= i {
                seen.resize(i + 1, 0);
            }
            if seen[i] > 0 {
                seen[i] = 2;
                return;
            }
            seen[i] = 1;
            match amount {
                Ok(amount) => {
                    auction
                        .verdicts
                        .push(Decided::new(slot, buyer as u8, Verdict::Valid(amount)))
                }
                Err(_) => invalid_slots.push(slot),
            }
        });
        drop(plaintext);
        let request = auction.pending_acks.first().map(|(id, _)| *id);
        if too_many_lots {
            self.fail(
                request,
                ErrorCode::TooManyLots,
                format!("this enclave takes at most {max_lots} lots per auction"),
            );
            return;
        }
        let malformed_rows = match walked {
            Ok(n) => n,
            Err(e) if matches!(e.kind, bidfile::BidFileErrorKind::TooManyRows { .. }) => {
                self.fail(
                    request,
                    ErrorCode::TooManyBids,
                    format!(
                        "buyer `{name}`'s file takes the auction over this enclave's limit of {max_bids} bids"
                    ),
                );
                return;
            }
            Err(_) => {
                // Not a bid file after all (say, invalid UTF-8 halfway): undo its rows and
                // set it aside whole.
                auction.verdicts.truncate(verdicts_before);
                for lot in auction.lot_ids.drain(lots_before..) {
                    auction.lot_index.remove(&lot);
                }
                auction.set_aside(buyer, Reason::MalformedFile, 1);
                self.pump();
                return;
            }
        };
        // A lot named twice: none of its rows count (the first one's verdict goes again).
        let duplicates = seen.iter().filter(|&&s| s == 2).count() as u64;
        if duplicates > 0 {
            let mut tail = auction.verdicts.split_off(verdicts_before);
            tail.retain(|v| seen[v.lot as usize] != 2);
            auction.verdicts.append(&mut tail);
            invalid_slots.retain(|&l| seen[l as usize] != 2);
        }
        let count = (auction.verdicts.len() - verdicts_before) as u64;
        auction.rows += (count + invalid_slots.len() as u64 + duplicates) as usize;
        auction.set_aside(buyer, Reason::MalformedRow, malformed_rows);
        auction.set_aside(buyer, Reason::InvalidAmount, invalid_slots.len() as u64);
        auction.set_aside(buyer, Reason::DuplicateLot, duplicates);
        // Lots that only this file's set-aside rows named were registered but have no
        // verdict: `close` leaves lots without any verdict out, so they never show.
        self.stats.bids_opened += count;
        self.pump();
    }

    /// Starts opening queued bids while there is room; answers a file's last chunk once all
    /// its bids are opened.
    fn pump(&mut self) {
        let Some(auction) = self.auction.as_mut() else {
            return;
        };
        if auction.queue.is_empty() && self.jobs.is_empty() {
            for (id, ack) in std::mem::take(&mut auction.pending_acks) {
                self.reply(Some(id), Response::ChunkAccepted(ack));
            }
            // Now the chunks sent ahead, until one starts opening bids again.
            loop {
                let Some(auction) = self.auction.as_mut() else {
                    return;
                };
                if auction.busy(self.jobs.len()) || self.phase != Phase::Files {
                    return;
                }
                let Some((id, chunk)) = auction.held.pop_front() else {
                    return;
                };
                auction.held_bytes -= chunk.data.len();
                // `chunk` pumps again when a file completes; that call handles the rest.
                self.chunk(id, chunk);
            }
        }
        while self.jobs.len() < self.settings.max_pending_bids {
            let Some(q) = auction.queue.pop_front() else {
                break;
            };
            let spec = &auction.config.buyers()[q.buyer];
            let job = DecryptJob {
                ticket: q.ticket,
                key_arn: spec.key_arn.clone(),
                ciphertext: q.ciphertext,
                context: kms::bid_context(
                    auction.mode,
                    auction.config.auction_id(),
                    &auction.lot_ids[q.lot as usize],
                    &spec.name,
                ),
                retry_without_context: auction.config.allow_no_context(),
                credentials: self
                    .credentials
                    .clone()
                    .expect("phase Files has credentials"),
            };
            self.jobs.insert(
                q.ticket,
                Job::Bid {
                    lot: q.lot,
                    buyer: q.buyer,
                },
            );
            self.stats.bids_opened += 1;
            self.actions.push_back(Action::Decrypt(job));
        }
    }

    fn close(&mut self, id: u64) {
        let auction = self.auction.as_mut().expect("phase Files has an auction");
        if auction.incoming.is_some()
            || !auction.queue.is_empty()
            || !self.jobs.is_empty()
            || !auction.held.is_empty()
            || !auction.pending_acks.is_empty()
        {
            self.error(
                Some(id),
                ErrorCode::OutOfOrder,
                "close while a file is being received or bids are being opened; wait for every chunk's answer".into(),
            );
            return;
        }
        if let Some(i) = auction.files.iter().position(Option::is_none) {
            let message = format!(
                "buyer `{}`'s file was never sent; an auction is decided on every buyer's file or not at all",
                auction.buyer_name(i)
            );
            self.fail(Some(id), ErrorCode::MissingFile, message);
            return;
        }
        let reveal = auction.config.reveal();
        // The lot index is not needed any more: free it before the results are built.
        drop(std::mem::take(&mut auction.lot_index));
        let verdicts = std::mem::take(&mut auction.verdicts);
        // Grouped by lot with a counting sort (linear, stable): `order` lists the verdicts'
        // indices lot by lot, lot `l`'s from `start[l]` to `start[l + 1]`.
        let lots = auction.lot_ids.len();
        let mut start = vec![0usize; lots + 1];
        for v in &verdicts {
            start[v.lot as usize + 1] += 1;
        }
        for l in 0..lots {
            start[l + 1] += start[l];
        }
        let mut order = vec![0usize; verdicts.len()];
        let mut next = start.clone();
        for (i, v) in verdicts.iter().enumerate() {
            let at = &mut next[v.lot as usize];
            order[*at] = i;
            *at += 1;
        }
        drop(next);
        let buyers = auction.config.buyers();
        let mut mine: Vec<(u8, Verdict)> = Vec::new();
        let mut results: Vec<LotResult> = Vec::with_capacity(lots);
        for (lot, lot_id) in auction.lot_ids.iter().enumerate() {
            let group = &order[start[lot]..start[lot + 1]];
            if group.is_empty() {
                // Only an envelope file's set-aside rows named this lot (every per-bid row
                // leaves a verdict): the operator must not learn that anyone bid on it.
                continue;
            }
            mine.clear();
            mine.extend(
                group
                    .iter()
                    .map(|&i| (verdicts[i].buyer, verdicts[i].verdict())),
            );
            mine.sort_by_key(|&(buyer, _)| buyer);
            let bids = mine.iter().map(|&(b, v)| (&buyers[b as usize].name, v));
            results.push(auction::decide(lot_id.clone(), bids, reveal));
        }
        drop(order);
        drop(start);
        drop(verdicts);
        output::sort_results(&mut results);
        self.stats.lots_decided = results.len() as u64;
        self.stats.bids_set_aside = results
            .iter()
            .map(|r: &LotResult| r.disqualified.len() as u64)
            .sum();
        let csv = output::render_csv(&results, reveal);
        let files: Vec<FileSummary> = auction.files.iter().flatten().cloned().collect();
        let set_aside: Vec<SetAside> = auction
            .set_aside
            .iter()
            .map(|(&(buyer, reason), &count)| {
                let name = &auction.config.buyers()[buyer].name;
                // Lots are named only for a per-bid file: its contract column is plain text
                // to the operator anyway. Any other format's lots are secret from the
                // operator, so its records list none; and a malformed row or file names no
                // lot at all.
                let per_bid = matches!(
                    auction.files[buyer].as_ref().map(|f| f.format),
                    Some(FileFormat::PerBid)
                );
                let names_lot = !matches!(reason, Reason::MalformedRow | Reason::MalformedFile);
                SetAside {
                    buyer: name.clone(),
                    reason,
                    count,
                    lots: (per_bid && names_lot)
                        .then(|| ListedLots::from_results(&results, name, reason, count)),
                }
            })
            .collect();
        let json = output::render_json(&output::Report {
            config: &auction.config,
            mode: auction.mode,
            terms_sha256: auction.terms_sha256,
            files: &files,
            set_aside: &set_aside,
            results: &results,
        });
        let commitment = ResultCommitment {
            mode: auction.mode,
            terms_sha256: auction.terms_sha256,
            csv_sha256: config::sha256(&csv),
            json_sha256: config::sha256(&json),
        };
        let closed = Closed {
            mode: auction.mode,
            lots: results.len() as u64,
            terms_sha256: auction.terms_sha256,
            csv_sha256: commitment.csv_sha256,
            json_sha256: commitment.json_sha256,
            attestation: Vec::new(),
        };
        drop(results);
        self.phase = Phase::Closing;
        let nonce = self.nonce.clone();
        self.attest(
            AttestPurpose::Close {
                id,
                closed,
                csv,
                json,
            },
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
        self.jobs.clear();
        self.auction = None;
        self.end_reason.get_or_insert(why);
    }
}

/// KMS said a sealed buyer's ciphertext is not under the buyer's registered key. The manifest's
/// buyer→key binding is the operator's word, so this is what a buyer registered under someone
/// else's key looks like: it ends the auction instead of setting the buyer's bids aside.
fn wrong_key_fatal() -> DecryptOutcome {
    DecryptOutcome::Fatal {
        code: ErrorCode::KeyBinding,
        message: "KMS says it was not made under the key the manifest registers (IncorrectKeyException); a sealed auction is decided on every buyer's bids under the key they sealed with, or not at all".into(),
    }
}

/// Why an envelope file that is a well-formed, signed message is not this buyer's bid file
/// for this auction. Another auction or buyer in the context is what a KMS context mismatch
/// would say (undecryptable); another key is a wrong key; the rest is not a bid file.
fn envelope_policy_reason(e: &esdk::EsdkError) -> Reason {
    match e {
        esdk::EsdkError::BidFileKeyArn { .. } => Reason::WrongKey,
        esdk::EsdkError::BidFileAuction { .. } | esdk::EsdkError::BidFileBuyer { .. } => {
            Reason::Undecryptable
        }
        _ => Reason::MalformedFile,
    }
}

/// A decided bid in 16 bytes (a `(u32, u8, Verdict)` takes 48, `Verdict` holding a `u128`
/// amount): 4,000,000 bids take 64 MB instead of 192 MB.
#[derive(Clone, Copy)]
struct Decided {
    /// The amount's minor units, bits 0 to 63 (0 for a disqualified bid).
    low: u64,
    lot: u32,
    buyer: u8,
    kind: DecidedKind,
}

#[derive(Clone, Copy)]
enum DecidedKind {
    /// Valid; the amount's minor units from bit 64 on.
    Valid {
        high: u8,
    },
    Disqualified(Reason),
}

// An amount is below 10^(18 + 2) minor units < 2^72: its bits above 64 fit a `u8`.
const _: () = assert!(
    10u128.pow((crate::amount::MAX_INTEGER_DIGITS + crate::amount::MAX_FRACTION_DIGITS) as u32)
        <= 1 << 72
);
const _: () = assert!(std::mem::size_of::<Decided>() == 16);

impl Decided {
    fn new(lot: u32, buyer: u8, verdict: Verdict) -> Decided {
        match verdict {
            Verdict::Valid(amount) => {
                let minor = amount.minor_units();
                Decided {
                    low: minor as u64,
                    lot,
                    buyer,
                    kind: DecidedKind::Valid {
                        high: (minor >> 64) as u8,
                    },
                }
            }
            Verdict::Disqualified(reason) => Decided {
                low: 0,
                lot,
                buyer,
                kind: DecidedKind::Disqualified(reason),
            },
        }
    }

    fn verdict(self) -> Verdict {
        match self.kind {
            DecidedKind::Valid { high } => Verdict::Valid(Amount::from_minor_units(
                (high as u128) << 64 | self.low as u128,
            )),
            DecidedKind::Disqualified(reason) => Verdict::Disqualified(reason),
        }
    }
}

/// The lot's slot in the auction, registering it on first sight.
fn lot_slot(auction: &mut Auction, lot: &str, max_lots: usize) -> Result<u32, (ErrorCode, String)> {
    // Looked up by `&str`: an existing lot costs no allocation.
    if let Some(&i) = auction.lot_index.get(lot) {
        return Ok(i);
    }
    if auction.lot_ids.len() >= max_lots {
        return Err((
            ErrorCode::TooManyLots,
            format!("this enclave takes at most {max_lots} lots per auction"),
        ));
    }
    let i = auction.lot_ids.len() as u32;
    let lot = LotId::from_checked(lot);
    auction.lot_ids.push(lot.clone());
    auction.lot_index.insert(lot, i);
    Ok(i)
}

/// Raw bytes per chunk (of a file or a result) whose frame, base64 and a little JSON, fits
/// within `max_frame`.
pub fn chunk_len_for(max_frame: usize) -> usize {
    (max_frame.saturating_sub(512) / 4 * 3).clamp(1, 512 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_guard_admits_a_file_whole_or_not_at_all() {
        let mut g = ReplayGuard::new(4);
        assert!(g.admit(vec![[1; 32], [2; 32]]).is_ok());
        // A replayed digest refuses the whole file: [3; 32] is not remembered either.
        assert!(matches!(
            g.admit(vec![[3; 32], [2; 32]]),
            Err(Refused::Replayed)
        ));
        // So is one that appears twice in the same file.
        assert!(matches!(
            g.admit(vec![[4; 32], [4; 32]]),
            Err(Refused::Replayed)
        ));
        assert_eq!(g.len(), 2);
        // Three more would make five: refused whole; two fit exactly.
        assert!(matches!(
            g.admit(vec![[3; 32], [4; 32], [5; 32]]),
            Err(Refused::Full(4))
        ));
        assert!(g.admit(vec![[3; 32], [4; 32]]).is_ok());
        assert!(matches!(g.admit(vec![[5; 32]]), Err(Refused::Full(4))));
        assert_eq!(g.len(), 4);
        let (code, message) = Refused::Full(4).error("buyer `B`'s file", "a ciphertext");
        assert_eq!(code, ErrorCode::TooManyBids);
        assert_eq!(
            message,
            "this enclave opens at most 4 unsealed ciphertexts per boot"
        );
    }

    #[test]
    fn decided_keeps_every_verdict() {
        let amounts = [
            "0",
            "0.01",
            "184467440737095516.15",
            "184467440737095516.16",
            "999999999999999999.99",
        ];
        for text in amounts {
            let amount = Amount::parse(text.as_bytes()).unwrap();
            let d = Decided::new(7, 3, Verdict::Valid(amount));
            assert_eq!((d.lot, d.buyer), (7, 3));
            assert!(d.verdict() == Verdict::Valid(amount), "{text}");
        }
        for reason in [
            Reason::InvalidAmount,
            Reason::Undecryptable,
            Reason::WrongKey,
            Reason::DuplicateLot,
            Reason::MalformedRow,
            Reason::MalformedFile,
        ] {
            let d = Decided::new(u32::MAX, u8::MAX, Verdict::Disqualified(reason));
            assert!(d.verdict() == Verdict::Disqualified(reason));
        }
    }
}
