//! The enclave's end of a session: hello → credentials → open auction → lots → close.
//!
//! The driver feeds it bytes from the parent and the results of the work it asked for
//! (attestation documents from the NSM, opened bids from KMS), and sends what it hands back.
//! Every rule the enclave enforces on an untrusted parent lives here: message order, strictly
//! increasing request ids, known buyers, one bid per buyer per lot, unique lot ids, no
//! ciphertext used twice, nothing opened before an auction is open, nothing leaving but
//! outcomes and reason codes.

use super::Millis;
use crate::amount::Amount;
use crate::auction::{self, LotResult, Reason, Verdict};
use crate::bidfile::MAX_CIPHERTEXT_LEN;
use crate::config::{self, AuctionConfig, HELLO_USER_DATA};
use crate::credentials::Credentials;
use crate::kms;
use crate::names::{BuyerName, KeyArn, LotId};
use crate::output;
use crate::wire::{
    AuctionOpened, Closed, CredentialsReply, ErrorCode, ErrorReply, FrameDecoder, FromEnclave,
    HelloReply, LotBids, MAX_NONCE_LEN, MIN_NONCE_LEN, PROTOCOL_VERSION, Request, Response,
    ToEnclave, decode_request, encode_frame, encode_response,
};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Limits and identity of this enclave build.
#[derive(Debug, Clone)]
pub struct EnclaveSettings {
    /// Shown to the parent in the hello reply.
    pub build: String,
    /// True in builds with the software NSM.
    pub dev: bool,
    pub max_frame: usize,
    /// Bids being opened at once before the session stops asking for input (backpressure).
    pub max_pending_bids: usize,
    /// Lots per auction; with at most 64 buyers per lot this bounds the auction's memory.
    pub max_lots: usize,
    /// A session with nothing in progress ends after this long without input.
    pub idle_timeout: Millis,
}

impl Default for EnclaveSettings {
    fn default() -> Self {
        EnclaveSettings {
            build: concat!("enclave-init ", env!("CARGO_PKG_VERSION")).to_owned(),
            dev: false,
            max_frame: crate::wire::DEFAULT_MAX_FRAME,
            max_pending_bids: 4096,
            max_lots: 1_000_000,
            idle_timeout: 10 * 60 * 1000,
        }
    }
}

/// SHA-256 digests of every ciphertext accepted since boot. Kept by the driver across
/// sessions, because a parent can reconnect and try again.
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
}

/// Identifies one bid being opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BidTicket {
    pub request: u64,
    pub index: usize,
}

/// A bid for the driver to open with KMS Decrypt (Recipient = the enclave's key).
#[derive(Debug, Clone)]
pub struct DecryptJob {
    pub ticket: BidTicket,
    /// Passed to Decrypt as `KeyId`; the answer's `KeyId` must equal it.
    pub key_arn: KeyArn,
    pub ciphertext: Vec<u8>,
    /// The bid's encryption context {auction, lot, buyer}.
    pub context: BTreeMap<String, String>,
    /// When KMS refuses the ciphertext with the context, try once more without it (bids made
    /// with plain `aws kms encrypt`, allowed by the auction's configuration).
    pub retry_without_context: bool,
    pub credentials: Arc<Credentials>,
}

/// What the driver reports for a [`DecryptJob`].
pub enum DecryptOutcome {
    /// The bid's plaintext, opened from KMS's CiphertextForRecipient inside the enclave.
    Plaintext(crate::cms::Plaintext),
    /// KMS refused this bid for a reason attributable to the bid.
    Disqualified(Reason),
    /// No bid can be opened (credentials refused, KMS unreachable within the deadline, an
    /// answer that makes no sense). Ends the auction.
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
    /// Open a bid, then call [`EnclaveSession::decrypted`].
    Decrypt(DecryptJob),
    /// New credentials arrived: sign every KMS call from now on with them, including calls
    /// for bids queued before (a long auction outlives one set of temporary credentials).
    UseCredentials(Arc<Credentials>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    AwaitCredentials,
    Ready,
    Open,
    Closing,
    Ended,
}

enum AttestPurpose {
    Hello {
        id: u64,
    },
    Close {
        id: u64,
        lots: u64,
        config_sha256: [u8; 32],
        output_sha256: [u8; 32],
    },
}

struct PendingLot {
    lot: LotId,
    verdicts: Vec<(BuyerName, Option<Verdict>)>,
    remaining: usize,
}

struct Auction {
    config: AuctionConfig,
    config_sha256: [u8; 32],
    lots: HashSet<LotId>,
    results: Vec<LotResult>,
    pending: HashMap<u64, PendingLot>,
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
    pending_bids: usize,
    idle_deadline: Millis,
    /// Why the session ended, for the driver's log.
    end_reason: Option<String>,
    stats: SessionStats,
}

/// Counts for the driver's logs. Deliberately nothing about amounts.
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
            pending_bids: 0,
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
        self.pending_bids == 0 && self.attesting.is_none()
    }

    /// False while too many bids are being opened: stop reading from the parent until an
    /// outcome frees room. Bounds the enclave's memory whatever the parent sends.
    pub fn wants_input(&self) -> bool {
        self.phase != Phase::Ended && self.pending_bids < self.settings.max_pending_bids
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

    /// Number of bids being opened now.
    pub fn pending_bids(&self) -> usize {
        self.pending_bids
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
                lots,
                config_sha256,
                output_sha256,
            } => {
                self.reply(
                    Some(id),
                    Response::Closed(Closed {
                        lots,
                        config_sha256,
                        output_sha256,
                        attestation,
                    }),
                );
                self.end("auction closed".to_owned());
            }
        }
    }

    /// The driver's result for a [`DecryptJob`].
    pub fn decrypted(&mut self, ticket: BidTicket, outcome: DecryptOutcome) {
        let verdict = match outcome {
            DecryptOutcome::Plaintext(plaintext) => match Amount::parse(&plaintext) {
                Ok(amount) => Verdict::Valid(amount),
                Err(_) => Verdict::Disqualified(Reason::InvalidAmount),
            },
            DecryptOutcome::Disqualified(reason) => Verdict::Disqualified(reason),
            DecryptOutcome::Fatal { code, message } => {
                if self.phase != Phase::Ended {
                    self.fail(Some(ticket.request), code, message);
                }
                return;
            }
        };
        if self.phase == Phase::Ended {
            return;
        }
        let Some(auction) = self.auction.as_mut() else {
            return;
        };
        let Some(pending) = auction.pending.get_mut(&ticket.request) else {
            return;
        };
        let Some((_, slot)) = pending.verdicts.get_mut(ticket.index) else {
            return;
        };
        if slot.is_some() {
            return;
        }
        *slot = Some(verdict);
        pending.remaining -= 1;
        self.pending_bids -= 1;
        if pending.remaining > 0 {
            return;
        }
        let pending = auction
            .pending
            .remove(&ticket.request)
            .expect("looked up above");
        let bids = pending
            .verdicts
            .into_iter()
            .filter_map(|(buyer, v)| v.map(|v| (buyer, v)));
        let result = auction::decide(pending.lot, bids, auction.config.reveal());
        self.stats.lots_decided += 1;
        self.stats.bids_set_aside += result.disqualified.len() as u64;
        auction.results.push(result.clone());
        self.reply(Some(ticket.request), Response::Lot(result));
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
                    HELLO_USER_DATA.to_vec(),
                    h.nonce,
                );
            }
            (Phase::AwaitCredentials | Phase::Ready | Phase::Open, Request::Credentials(c)) => {
                self.credentials_frame(id, c, now)
            }
            (Phase::Ready, Request::OpenAuction(config)) => self.open(id, config),
            (Phase::Open, Request::Lot(lot)) => self.lot(id, lot),
            (Phase::Open, Request::Close(_)) => self.close(id),
            (phase, _) => self.error(
                Some(id),
                ErrorCode::OutOfOrder,
                format!(
                    "frame {number}: `{kind}` is not allowed {}",
                    match phase {
                        Phase::AwaitHello => "before hello",
                        Phase::AwaitCredentials => "before credentials",
                        Phase::Ready => "before an auction is open",
                        Phase::Open => "while an auction is open",
                        Phase::Closing | Phase::Ended => "after close",
                    }
                ),
            ),
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

    fn open(&mut self, id: u64, config: AuctionConfig) {
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
            self.error(
                Some(id),
                ErrorCode::InvalidAuction,
                format!(
                    "buyer `{}`'s key {} is not in the credentials' region {region}",
                    b.name, b.key_arn
                ),
            );
            return;
        }
        let config_sha256 = config.digest();
        let auction_id = config.auction_id().clone();
        self.auction = Some(Auction {
            config,
            config_sha256,
            lots: HashSet::new(),
            results: Vec::new(),
            pending: HashMap::new(),
        });
        self.phase = Phase::Open;
        self.reply(
            Some(id),
            Response::AuctionOpened(AuctionOpened {
                auction_id,
                config_sha256,
            }),
        );
    }

    fn lot(&mut self, id: u64, lot: LotBids) {
        let auction = self.auction.as_mut().expect("phase Open has an auction");
        let refuse = |code, message: String| Err((code, message));
        let checked: Result<Vec<[u8; 32]>, (ErrorCode, String)> = (|| {
            if auction.lots.contains(&lot.lot) {
                return refuse(
                    ErrorCode::DuplicateLot,
                    format!("lot `{}` was already submitted in this auction", lot.lot),
                );
            }
            if auction.lots.len() >= self.settings.max_lots {
                return refuse(
                    ErrorCode::TooManyLots,
                    format!(
                        "this enclave takes at most {} lots per auction",
                        self.settings.max_lots
                    ),
                );
            }
            if lot.bids.is_empty() {
                return refuse(
                    ErrorCode::EmptyLot,
                    format!("lot `{}` has no bids", lot.lot),
                );
            }
            let mut buyers = HashSet::new();
            let mut digests = Vec::with_capacity(lot.bids.len());
            for bid in &lot.bids {
                if auction.config.buyer(&bid.buyer).is_none() {
                    return refuse(
                        ErrorCode::UnknownBuyer,
                        format!(
                            "lot `{}`: buyer `{}` is not in auction {}",
                            lot.lot,
                            bid.buyer,
                            auction.config.auction_id()
                        ),
                    );
                }
                if !buyers.insert(&bid.buyer) {
                    return refuse(
                        ErrorCode::DuplicateBid,
                        format!("lot `{}`: buyer `{}` bids twice", lot.lot, bid.buyer),
                    );
                }
                if bid.ciphertext.is_empty() || bid.ciphertext.len() > MAX_CIPHERTEXT_LEN {
                    return refuse(
                        ErrorCode::MalformedFrame,
                        format!(
                            "lot `{}`: buyer `{}`'s ciphertext is {} bytes (KMS ciphertexts are 1 to {MAX_CIPHERTEXT_LEN})",
                            lot.lot,
                            bid.buyer,
                            bid.ciphertext.len()
                        ),
                    );
                }
                let digest = config::sha256(&bid.ciphertext);
                if self.guard.seen.contains(&digest) || digests.contains(&digest) {
                    return refuse(
                        ErrorCode::ReplayedCiphertext,
                        format!(
                            "lot `{}`: buyer `{}`'s ciphertext was already used; a ciphertext counts for one lot of one auction only",
                            lot.lot, bid.buyer
                        ),
                    );
                }
                digests.push(digest);
            }
            if self.guard.seen.len() + digests.len() > self.guard.capacity {
                return refuse(
                    ErrorCode::TooManyLots,
                    format!(
                        "this enclave opens at most {} bids per boot",
                        self.guard.capacity
                    ),
                );
            }
            Ok(digests)
        })();
        let digests = match checked {
            Ok(d) => d,
            Err((code, message)) => {
                self.error(Some(id), code, message);
                return;
            }
        };
        // Accepted: from here on the ciphertexts are spent, whatever KMS says.
        self.guard.seen.extend(digests);
        auction.lots.insert(lot.lot.clone());
        let credentials = self
            .credentials
            .clone()
            .expect("phase Open has credentials");
        let mut verdicts = Vec::with_capacity(lot.bids.len());
        for (index, bid) in lot.bids.into_iter().enumerate() {
            let spec = auction.config.buyer(&bid.buyer).expect("checked above");
            self.actions.push_back(Action::Decrypt(DecryptJob {
                ticket: BidTicket { request: id, index },
                key_arn: spec.key_arn.clone(),
                ciphertext: bid.ciphertext,
                context: kms::bid_context(auction.config.auction_id(), &lot.lot, &bid.buyer),
                retry_without_context: auction.config.allow_no_context(),
                credentials: credentials.clone(),
            }));
            verdicts.push((bid.buyer, None));
        }
        self.pending_bids += verdicts.len();
        self.stats.bids_opened += verdicts.len() as u64;
        auction.pending.insert(
            id,
            PendingLot {
                lot: lot.lot,
                remaining: verdicts.len(),
                verdicts,
            },
        );
    }

    fn close(&mut self, id: u64) {
        let auction = self.auction.as_mut().expect("phase Open has an auction");
        if !auction.pending.is_empty() {
            let n = auction.pending.len();
            self.error(
                Some(id),
                ErrorCode::OutOfOrder,
                format!("close while {n} lot(s) are still being opened; wait for their outcomes"),
            );
            return;
        }
        output::sort_results(&mut auction.results);
        let csv = output::render_csv(&auction.results, auction.config.reveal());
        let output_sha256 = config::sha256(&csv);
        let purpose = AttestPurpose::Close {
            id,
            lots: auction.results.len() as u64,
            config_sha256: auction.config_sha256,
            output_sha256,
        };
        let user_data = config::result_commitment(&auction.config_sha256, &output_sha256);
        self.phase = Phase::Closing;
        let nonce = self.nonce.clone();
        self.attest(purpose, user_data, nonce);
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

    /// A fatal error reply, then the end of the session.
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
        self.end_reason.get_or_insert(why);
    }
}
