//! The parent's end of a session: drives one auction through the enclave and checks
//! everything that comes back before anything is written anywhere.
//!
//! Order: hello (its attestation checked — trust anchor, freshness, our nonce, the expected
//! PCR0, never a debug-mode or dev enclave unless allowed — before credentials are sent) →
//! credentials → open (the manifest, or unsealed terms) → every buyer's seal → every buyer's
//! file, whole, in chunks under a window → close. At close the result arrives whole; it is
//! accepted only if its digests, the attestation's commitment to them and to the terms, and
//! the PCR0 all check out.

use super::Millis;
use crate::attestation::{self, DocumentFields};
use crate::config::{self, AuctionConfig, Mode, ResultCommitment};
use crate::credentials::Credentials;
use crate::manifest::{FileFormat, Manifest};
use crate::names::BuyerName;
use crate::output::OutputHeader;
use crate::session::enclave::chunk_len_for;
use crate::wire::{
    Close, ErrorCode, FileChunk, FrameDecoder, FrameError, FromEnclave, Hello, MessageError,
    OpenSealed, OutputFile, PROTOCOL_VERSION, Request, Response, Seal, ToEnclave, decode_response,
    encode_frame, encode_request,
};
use std::collections::{HashMap, VecDeque};

/// The result is at most this big (a million lots of CSV and JSON is about 100 MiB).
pub const MAX_RESULT_BYTES: usize = 512 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ParentSettings {
    pub max_frame: usize,
    /// File chunks in flight at once.
    pub window: usize,
    /// Accept an enclave that says it is a dev build (software NSM), and one without an
    /// expected PCR0.
    pub allow_dev: bool,
    /// Also accept the unsigned attestation documents of QEMU's emulated NSM (its
    /// `nitro-enclave` machine), for tests of a real image under QEMU. Honoured only with
    /// `allow_dev`: such a document proves nothing about where the enclave runs.
    pub accept_qemu_unsigned: bool,
    /// The enclave's PCR0 must equal it. Required unless `allow_dev`.
    pub expected_pcr0: Option<Vec<u8>>,
    /// DER of the attestation trust anchor (AWS Nitro root G1 unless told otherwise).
    pub root_der: Vec<u8>,
    pub hello_timeout: Millis,
    pub reply_timeout: Millis,
    pub close_timeout: Millis,
    /// Ask for fresh credentials this long before the current ones expire.
    pub refresh_margin: Millis,
    /// Stop once the enclave's hello is verified (a dry run's check of the enclave): the
    /// session ends there, before credentials, terms or files are sent.
    pub hello_only: bool,
}

impl ParentSettings {
    pub fn new(root_der: Vec<u8>) -> Self {
        ParentSettings {
            max_frame: crate::wire::DEFAULT_MAX_FRAME,
            window: 16,
            allow_dev: false,
            accept_qemu_unsigned: false,
            expected_pcr0: None,
            root_der,
            hello_timeout: 30_000,
            reply_timeout: 120_000,
            close_timeout: 600_000,
            refresh_margin: 5 * 60 * 1000,
            hello_only: false,
        }
    }
}

/// What the auction is decided on.
#[derive(Debug, Clone)]
pub enum Terms {
    /// The buyers sealed this manifest (its bytes are sent as they are).
    Sealed { manifest: Manifest, bytes: Vec<u8> },
    /// The buyers trust the operator.
    Unsealed(AuctionConfig),
}

impl Terms {
    pub fn config(&self) -> &AuctionConfig {
        match self {
            Terms::Sealed { manifest, .. } => manifest.terms(),
            Terms::Unsealed(c) => c,
        }
    }
    pub fn mode(&self) -> Mode {
        match self {
            Terms::Sealed { .. } => Mode::Sealed,
            Terms::Unsealed(_) => Mode::Unsealed,
        }
    }
    /// The bytes the result commits to: the manifest, or the configuration's canonical JSON.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Terms::Sealed { bytes, .. } => bytes.clone(),
            Terms::Unsealed(c) => c.canonical_bytes(),
        }
    }
    pub fn digest(&self) -> [u8; 32] {
        config::sha256(&self.bytes())
    }
}

/// One buyer's part of a run: the file as read, and (sealed) the seal.
#[derive(Debug, Clone)]
pub struct BuyerInput {
    pub buyer: BuyerName,
    pub file: Vec<u8>,
    pub seal: Option<Vec<u8>>,
}

/// Why the inputs cannot make this auction; found before the enclave is contacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("buyer `{0}` has no bid file")]
    MissingFile(BuyerName),
    #[error("buyer `{0}` has no seal: every buyer must seal the manifest before the auction runs")]
    MissingSeal(BuyerName),
    #[error("`{0}` is not a buyer of this auction")]
    UnknownBuyer(BuyerName),
    #[error("buyer `{0}` is listed twice")]
    Duplicate(BuyerName),
    #[error(
        "buyer `{buyer}`'s file changed since the manifest was made: now {size} bytes, SHA-256 {sha256}; the manifest says {manifest_size} bytes, SHA-256 {manifest_sha256}"
    )]
    Changed {
        buyer: BuyerName,
        size: u64,
        sha256: String,
        manifest_size: u64,
        manifest_sha256: String,
    },
}

/// Puts the inputs in the terms' buyer order and checks them against the manifest.
pub fn order_inputs(terms: &Terms, inputs: Vec<BuyerInput>) -> Result<Vec<BuyerInput>, InputError> {
    let buyers = terms.config().buyers();
    let mut slots: Vec<Option<BuyerInput>> = vec![None; buyers.len()];
    for input in inputs {
        let Some(i) = buyers.iter().position(|b| b.name == input.buyer) else {
            return Err(InputError::UnknownBuyer(input.buyer));
        };
        if slots[i].is_some() {
            return Err(InputError::Duplicate(input.buyer));
        }
        slots[i] = Some(input);
    }
    let mut out = Vec::with_capacity(buyers.len());
    for (spec, slot) in buyers.iter().zip(slots) {
        let input = slot.ok_or_else(|| InputError::MissingFile(spec.name.clone()))?;
        if let Terms::Sealed { manifest, .. } = terms {
            if input.seal.is_none() {
                return Err(InputError::MissingSeal(spec.name.clone()));
            }
            let f = manifest
                .file(&spec.name)
                .expect("manifest has a file per buyer");
            let sha256 = config::sha256(&input.file);
            if f.sha256 != sha256 || f.size != input.file.len() as u64 {
                return Err(InputError::Changed {
                    buyer: spec.name.clone(),
                    size: input.file.len() as u64,
                    sha256: hex::encode(sha256),
                    manifest_size: f.size,
                    manifest_sha256: hex::encode(f.sha256),
                });
            }
        }
        out.push(input);
    }
    Ok(out)
}

/// What the enclave showed of itself at hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnclaveInfo {
    pub build: String,
    pub dev: bool,
    pub module_id: String,
    pub pcr0: Vec<u8>,
}

/// The checked result of an auction, ready to be written.
#[derive(Debug, Clone)]
pub struct Finished {
    pub mode: Mode,
    pub output_csv: Vec<u8>,
    pub output_json: Vec<u8>,
    /// What `output.json` says besides the lots: files counted, set-aside counts.
    pub header: OutputHeader,
    /// The terms' bytes the attestation commits to: the manifest (sealed) or the
    /// configuration's canonical JSON (unsealed).
    pub terms_json: Vec<u8>,
    pub attestation: Vec<u8>,
}

#[derive(Debug)]
pub enum Event {
    /// The enclave's hello verified; credentials are on their way.
    Connected(EnclaveInfo),
    /// The credentials expire soon: call [`ParentSession::refresh_credentials`].
    NeedCredentials,
    /// Every seal was accepted.
    Sealed,
    /// File bytes taken by the enclave so far.
    Progress {
        done: u64,
        total: u64,
    },
    Finished(Box<Finished>),
    Failed(SessionError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("enclave stream: {0}")]
    Frame(#[from] FrameError),
    #[error("enclave sent an unreadable message: {0}")]
    Message(#[from] MessageError),
    #[error("enclave broke the protocol: {0}")]
    Protocol(String),
    #[error(
        "the enclave is a dev build (software NSM, no hardware attestation); refusing it without --allow-dev-enclave"
    )]
    DevEnclave,
    #[error(
        "no expected PCR0 is configured; refusing to hand credentials to an enclave whose image nobody checked"
    )]
    NoExpectedPcr0,
    #[error("enclave attestation ({what}) failed: {reason}")]
    Attestation { what: &'static str, reason: String },
    #[error("enclave PCR0 is {found}, expected {expected}")]
    Pcr0Mismatch { expected: String, found: String },
    #[error(
        "the enclave is {}, but this auction is {wanted}: it needs {}; nothing was sent to the enclave",
        found.image(),
        wanted.image()
    )]
    RuleSet { wanted: Mode, found: Mode },
    #[error("enclave refused {request}: {code}: {message}")]
    Enclave {
        request: String,
        code: ErrorCode,
        message: String,
    },
    #[error("timed out after {seconds} s waiting for the enclave's answer to {waiting_for}")]
    Timeout { waiting_for: String, seconds: u64 },
    #[error("the enclave closed the connection {during}")]
    Disconnected { during: String },
    #[error("result check failed: {0}")]
    Result(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    AwaitCredentials,
    AwaitOpen,
    Seals,
    Files,
    AwaitClose,
    Done,
}

#[derive(Debug, Clone)]
enum Sent {
    Hello,
    Credentials,
    Open,
    Seal(usize),
    /// `extra`: for a file's last chunk, time on top of the reply timeout for its bids to be
    /// opened (the enclave answers it only then).
    Chunk {
        buyer: usize,
        end: usize,
        extra: Millis,
    },
    Close,
}

/// Time allowed per bid of a file, on top of the reply timeout, before its last chunk must be
/// answered: 20 bids/s, far below what KMS sustains. The enclave itself gives up on a bid
/// after its own KMS deadline and says so; this only catches an enclave that went silent.
pub const MS_PER_BID: Millis = 50;

pub struct ParentSession {
    settings: ParentSettings,
    terms: Terms,
    terms_sha256: [u8; 32],
    inputs: Vec<BuyerInput>,
    nonce: Vec<u8>,
    decoder: FrameDecoder,
    outbox: Vec<u8>,
    next_id: u64,
    phase: Phase,
    in_flight: HashMap<u64, (Sent, Millis)>,
    seals_accepted: usize,
    /// The next chunk to send: buyer index and offset.
    cursor: (usize, usize),
    acked_bytes: u64,
    total_bytes: u64,
    csv: Vec<u8>,
    json: Vec<u8>,
    credentials: Credentials,
    refresh_requested: bool,
    enclave: Option<EnclaveInfo>,
    events: VecDeque<Event>,
}

impl ParentSession {
    /// Starts a session: the hello is queued at once. `nonce` must be fresh and random
    /// (16 to 512 bytes); `inputs` come from [`order_inputs`].
    pub fn new(
        settings: ParentSettings,
        terms: Terms,
        inputs: Vec<BuyerInput>,
        credentials: Credentials,
        nonce: Vec<u8>,
        now: Millis,
    ) -> Self {
        let total_bytes = inputs.iter().map(|i| i.file.len() as u64).sum();
        let mut s = ParentSession {
            decoder: FrameDecoder::new(settings.max_frame),
            terms_sha256: terms.digest(),
            settings,
            terms,
            inputs,
            nonce: nonce.clone(),
            outbox: Vec::new(),
            next_id: 1,
            phase: Phase::AwaitHello,
            in_flight: HashMap::new(),
            seals_accepted: 0,
            cursor: (0, 0),
            acked_bytes: 0,
            total_bytes,
            csv: Vec::new(),
            json: Vec::new(),
            credentials,
            refresh_requested: false,
            enclave: None,
            events: VecDeque::new(),
        };
        s.send(
            Request::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                nonce,
            }),
            Sent::Hello,
            now,
        );
        s
    }

    pub fn handle_input(&mut self, mut data: &[u8], now: Millis) {
        while self.is_running() && !data.is_empty() {
            let number = self.decoder.frame_number();
            match self.decoder.decode(&mut data) {
                Ok(Some(frame)) => match decode_response(number, &frame) {
                    Ok(msg) => {
                        if let Err(e) = self.handle_message(msg, now) {
                            self.fail(e);
                        }
                    }
                    Err(e) => self.fail(e.into()),
                },
                Ok(None) => {}
                Err(e) => self.fail(e.into()),
            }
        }
    }

    /// The enclave closed the connection (or it broke).
    pub fn handle_eof(&mut self) {
        if !self.is_running() {
            return;
        }
        let during = match self.phase {
            Phase::AwaitHello => "before answering hello".to_owned(),
            Phase::Seals => "while opening the seals".to_owned(),
            Phase::Files => format!(
                "mid-auction ({} of {} bytes of bid files taken)",
                self.acked_bytes, self.total_bytes
            ),
            Phase::AwaitClose => "before answering close".to_owned(),
            _ => "before the auction was open".to_owned(),
        };
        self.fail(SessionError::Disconnected { during });
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        if !self.is_running() {
            return;
        }
        if let Some((sent, deadline)) = self
            .in_flight
            .values()
            .min_by_key(|(_, deadline)| *deadline)
            .cloned()
            && now >= deadline
        {
            let waiting_for = self.describe(&sent);
            let seconds = self.timeout_for(&sent) / 1000;
            self.fail(SessionError::Timeout {
                waiting_for,
                seconds,
            });
            return;
        }
        self.check_refresh(now);
    }

    pub fn poll_timeout(&self) -> Option<Millis> {
        if !self.is_running() {
            return None;
        }
        let reply = self.in_flight.values().map(|(_, d)| *d).min();
        let refresh = self.refresh_at().filter(|_| !self.refresh_requested);
        match (reply, refresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fresh credentials, after [`Event::NeedCredentials`]. Sent at once when the enclave
    /// already has credentials; otherwise they replace the ones to be sent.
    pub fn refresh_credentials(&mut self, credentials: Credentials, now: Millis) {
        self.credentials = credentials;
        self.refresh_requested = false;
        if matches!(
            self.phase,
            Phase::AwaitOpen | Phase::Seals | Phase::Files | Phase::AwaitClose
        ) {
            let c = self.credentials.clone();
            self.send(Request::Credentials(c), Sent::Credentials, now);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.outbox.is_empty()).then(|| std::mem::take(&mut self.outbox))
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn is_running(&self) -> bool {
        self.phase != Phase::Done
    }

    /// Bytes of bid files the enclave has taken, and the total.
    pub fn progress(&self) -> (u64, u64) {
        (self.acked_bytes, self.total_bytes)
    }

    fn refresh_at(&self) -> Option<Millis> {
        let exp = self.credentials.expiration?;
        Some((exp * 1000).saturating_sub(self.settings.refresh_margin))
    }

    fn check_refresh(&mut self, now: Millis) {
        if !self.refresh_requested && self.refresh_at().is_some_and(|at| now >= at) {
            self.refresh_requested = true;
            self.events.push_back(Event::NeedCredentials);
        }
    }

    fn timeout_for(&self, sent: &Sent) -> Millis {
        match sent {
            Sent::Hello => self.settings.hello_timeout,
            Sent::Close => self.settings.close_timeout,
            Sent::Chunk { extra, .. } => self.settings.reply_timeout.saturating_add(*extra),
            _ => self.settings.reply_timeout,
        }
    }

    fn describe(&self, sent: &Sent) -> String {
        let name = |i: usize| self.inputs[i].buyer.to_string();
        match sent {
            Sent::Hello => "hello".into(),
            Sent::Credentials => "credentials".into(),
            Sent::Open => format!("open auction {}", self.terms.config().auction_id()),
            Sent::Seal(i) => format!("buyer `{}`'s seal", name(*i)),
            Sent::Chunk { buyer, end, .. } => {
                format!("buyer `{}`'s file up to byte {end}", name(*buyer))
            }
            Sent::Close => "close".into(),
        }
    }

    fn send(&mut self, msg: Request, sent: Sent, now: Millis) {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = encode_request(&ToEnclave { id, msg });
        if let Err(e) = encode_frame(&bytes, self.settings.max_frame, &mut self.outbox) {
            let what = self.describe(&sent);
            self.fail(SessionError::Protocol(format!(
                "cannot send {what}: {e} (raise the frame limit on both sides)"
            )));
            return;
        }
        let deadline = now.saturating_add(self.timeout_for(&sent));
        self.in_flight.insert(id, (sent, deadline));
    }

    fn fill_window(&mut self, now: Millis) {
        // Only chunks count against the window: a credentials refresh in flight must not
        // hold files back (with a window of one it would stall the auction).
        let mut chunks_in_flight = self
            .in_flight
            .values()
            .filter(|(s, _)| matches!(s, Sent::Chunk { .. }))
            .count();
        let chunk = chunk_len_for(self.settings.max_frame);
        while self.phase == Phase::Files
            && self.cursor.0 < self.inputs.len()
            && chunks_in_flight < self.settings.window.max(1)
        {
            let (buyer, start) = self.cursor;
            let file = &self.inputs[buyer].file;
            let end = (start + chunk).min(file.len());
            let last = end == file.len();
            let msg = Request::FileChunk(FileChunk {
                buyer: self.inputs[buyer].buyer.clone(),
                data: file[start..end].to_vec(),
                last,
            });
            // A per-bid file has a row per bid; an envelope file costs one KMS call.
            let extra = if last {
                let rows = match FileFormat::detect(file) {
                    FileFormat::PerBid => file.iter().filter(|&&b| b == b'\n').count() as u64,
                    FileFormat::Envelope => 1,
                };
                rows.saturating_mul(MS_PER_BID)
            } else {
                0
            };
            self.cursor = if last { (buyer + 1, 0) } else { (buyer, end) };
            chunks_in_flight += 1;
            self.send(msg, Sent::Chunk { buyer, end, extra }, now);
        }
        if self.phase == Phase::Files && self.cursor.0 == self.inputs.len() && chunks_in_flight == 0
        {
            self.phase = Phase::AwaitClose;
            self.send(Request::Close(Close {}), Sent::Close, now);
        }
    }

    fn handle_message(&mut self, msg: FromEnclave, now: Millis) -> Result<(), SessionError> {
        let FromEnclave { id, msg } = msg;
        let Some(id) = id else {
            return Err(match msg {
                Response::Error(e) => SessionError::Enclave {
                    request: "an unreadable request".into(),
                    code: e.code,
                    message: e.message,
                },
                _ => SessionError::Protocol("a reply without a request id".into()),
            });
        };
        // Result chunks answer the close request before `closed` does; it stays outstanding.
        if let Response::ResultChunk(chunk) = msg {
            if !matches!(self.in_flight.get(&id), Some((Sent::Close, _))) {
                return Err(SessionError::Protocol(format!(
                    "a result chunk answering request {id}, which is not the close"
                )));
            }
            let buf = match chunk.file {
                OutputFile::Csv if self.json.is_empty() => &mut self.csv,
                OutputFile::Csv => {
                    return Err(SessionError::Protocol(
                        "output.csv chunks after output.json's".into(),
                    ));
                }
                OutputFile::Json => &mut self.json,
            };
            buf.extend_from_slice(&chunk.data);
            if self.csv.len() + self.json.len() > MAX_RESULT_BYTES {
                return Err(SessionError::Result(format!(
                    "the result is over {MAX_RESULT_BYTES} bytes"
                )));
            }
            return Ok(());
        }
        let Some((sent, _)) = self.in_flight.remove(&id) else {
            return Err(SessionError::Protocol(format!(
                "a reply to request {id}, which is not outstanding"
            )));
        };
        match (sent, msg) {
            (sent, Response::Error(e)) => Err(SessionError::Enclave {
                request: self.describe(&sent),
                code: e.code,
                message: e.message,
            }),
            (Sent::Hello, Response::Hello(h)) => {
                if h.protocol != PROTOCOL_VERSION {
                    return Err(SessionError::Protocol(format!(
                        "enclave speaks protocol {}, we speak {PROTOCOL_VERSION}",
                        h.protocol
                    )));
                }
                if h.dev && !self.settings.allow_dev {
                    return Err(SessionError::DevEnclave);
                }
                let doc = self.verify_document("hello", &h.attestation, now)?;
                let wanted = self.terms.mode();
                match doc.user_data().and_then(Mode::from_hello_tag) {
                    Some(rules) if rules == wanted => {}
                    Some(rules) => {
                        return Err(SessionError::RuleSet {
                            wanted,
                            found: rules,
                        });
                    }
                    None => {
                        return Err(SessionError::Attestation {
                            what: "hello",
                            reason: "user_data states no rule set (neither SBHS nor SBHU): an image of the first release, which served both modes, or not this service's enclave".into(),
                        });
                    }
                }
                let info = EnclaveInfo {
                    build: h.build,
                    dev: h.dev,
                    module_id: doc.module_id().to_owned(),
                    pcr0: doc.pcr(0).unwrap_or_default().to_vec(),
                };
                self.enclave = Some(info.clone());
                self.events.push_back(Event::Connected(info));
                if self.settings.hello_only {
                    // The enclave proved what it is; it gets nothing, credentials least.
                    self.phase = Phase::Done;
                    return Ok(());
                }
                self.phase = Phase::AwaitCredentials;
                let c = self.credentials.clone();
                self.send(Request::Credentials(c), Sent::Credentials, now);
                Ok(())
            }
            (Sent::Credentials, Response::Credentials(_)) => {
                if self.phase == Phase::AwaitCredentials {
                    self.phase = Phase::AwaitOpen;
                    let msg = match &self.terms {
                        Terms::Sealed { bytes, .. } => Request::OpenSealed(OpenSealed {
                            manifest: bytes.clone(),
                        }),
                        Terms::Unsealed(c) => Request::OpenUnsealed(c.clone()),
                    };
                    self.send(msg, Sent::Open, now);
                }
                self.fill_window(now);
                Ok(())
            }
            (Sent::Open, Response::AuctionOpened(o)) => {
                if &o.auction_id != self.terms.config().auction_id()
                    || o.terms_sha256 != self.terms_sha256
                    || o.mode != self.terms.mode()
                {
                    return Err(SessionError::Protocol(
                        "the enclave opened different terms".into(),
                    ));
                }
                self.check_refresh(now);
                match self.terms.mode() {
                    Mode::Sealed => {
                        self.phase = Phase::Seals;
                        for i in 0..self.inputs.len() {
                            let seal = Seal {
                                buyer: self.inputs[i].buyer.clone(),
                                ciphertext: self.inputs[i].seal.clone().unwrap_or_default(),
                            };
                            self.send(Request::Seal(seal), Sent::Seal(i), now);
                        }
                    }
                    Mode::Unsealed => {
                        self.phase = Phase::Files;
                        self.fill_window(now);
                    }
                }
                Ok(())
            }
            (Sent::Seal(i), Response::SealAccepted(a)) => {
                if a.buyer != self.inputs[i].buyer {
                    return Err(SessionError::Protocol(format!(
                        "answered `{}`'s seal for `{}`",
                        self.inputs[i].buyer, a.buyer
                    )));
                }
                self.seals_accepted += 1;
                if self.seals_accepted == self.inputs.len() {
                    self.events.push_back(Event::Sealed);
                    self.phase = Phase::Files;
                    self.fill_window(now);
                }
                Ok(())
            }
            (Sent::Chunk { buyer, end, .. }, Response::ChunkAccepted(a)) => {
                if a.buyer != self.inputs[buyer].buyer || a.received != end as u64 {
                    return Err(SessionError::Protocol(format!(
                        "answered a chunk of `{}`'s file ending at {end} with `{}` at {}",
                        self.inputs[buyer].buyer, a.buyer, a.received
                    )));
                }
                let before: u64 = self.inputs[..buyer]
                    .iter()
                    .map(|i| i.file.len() as u64)
                    .sum();
                self.acked_bytes = self.acked_bytes.max(before + end as u64);
                self.events.push_back(Event::Progress {
                    done: self.acked_bytes,
                    total: self.total_bytes,
                });
                self.check_refresh(now);
                self.fill_window(now);
                Ok(())
            }
            (Sent::Close, Response::Closed(c)) => self.finish(c, now),
            (sent, other) => Err(SessionError::Protocol(format!(
                "answered {} with {}",
                self.describe(&sent),
                response_kind(&other)
            ))),
        }
    }

    fn finish(&mut self, c: crate::wire::Closed, now: Millis) -> Result<(), SessionError> {
        let bad = |why: String| Err(SessionError::Result(why));
        let mode = self.terms.mode();
        if c.mode != mode || c.terms_sha256 != self.terms_sha256 {
            return bad("the enclave closed different terms than were opened".into());
        }
        let csv = std::mem::take(&mut self.csv);
        let json = std::mem::take(&mut self.json);
        if config::sha256(&csv) != c.csv_sha256 || config::sha256(&json) != c.json_sha256 {
            return bad("the result's bytes do not match the digests the enclave attested".into());
        }
        let doc = self.verify_document("result", &c.attestation, now)?;
        let expected = ResultCommitment {
            mode,
            terms_sha256: self.terms_sha256,
            csv_sha256: c.csv_sha256,
            json_sha256: c.json_sha256,
        };
        if doc.user_data() != Some(expected.to_bytes().as_slice()) {
            return Err(SessionError::Attestation {
                what: "result",
                reason: "user_data does not commit to these terms and this output".into(),
            });
        }
        let hello_pcr0 = self.enclave.as_ref().map(|e| e.pcr0.as_slice());
        if doc.pcr(0) != hello_pcr0 {
            return Err(SessionError::Attestation {
                what: "result",
                reason: "PCR0 differs from the hello's".into(),
            });
        }
        let header = OutputHeader::parse(&json).map_err(SessionError::Result)?;
        if &header.auction_id != self.terms.config().auction_id()
            || header.mode != mode
            || header.terms_sha256 != self.terms_sha256
            || header.lot_count != c.lots
        {
            return bad("output.json does not describe this auction".into());
        }
        if header.files.len() != self.inputs.len() {
            return bad(format!(
                "output.json counts {}; {} sent",
                crate::count(header.files.len() as u64, "file", "files"),
                crate::count(self.inputs.len() as u64, "file was", "files were")
            ));
        }
        for (f, input) in header.files.iter().zip(&self.inputs) {
            if f.buyer != input.buyer
                || f.size != input.file.len() as u64
                || f.sha256 != config::sha256(&input.file)
                || f.format != FileFormat::detect(&input.file)
            {
                return bad(format!(
                    "output.json's entry for `{}` is not the file that was sent",
                    input.buyer
                ));
            }
        }
        self.phase = Phase::Done;
        self.events.push_back(Event::Finished(Box::new(Finished {
            mode,
            output_csv: csv,
            output_json: json,
            header,
            terms_json: self.terms.bytes(),
            attestation: c.attestation,
        })));
        Ok(())
    }

    fn verify_document(
        &self,
        what: &'static str,
        doc: &[u8],
        now: Millis,
    ) -> Result<DocumentFields, SessionError> {
        let refused = |reason: String| SessionError::Attestation { what, reason };
        let fields = match attestation::verify(
            doc,
            &attestation::VerifyOptions {
                root_der: &self.settings.root_der,
                at: attestation::VerifyAt::UnixMillis(now),
            },
        ) {
            Ok(verified) => verified.into_fields(),
            Err(e) if self.settings.accept_qemu_unsigned && self.settings.allow_dev => {
                attestation::parse_qemu_unsigned(doc)
                    .map_err(|q| refused(format!("{e}; nor is it QEMU's unsigned document: {q}")))?
            }
            Err(e) => return Err(refused(e.to_string())),
        };
        if fields.nonce() != Some(self.nonce.as_slice()) {
            return Err(SessionError::Attestation {
                what,
                reason: "nonce is not the one this session sent".into(),
            });
        }
        match &self.settings.expected_pcr0 {
            Some(expected) => {
                if !fields.pcr0_matches(expected) {
                    return Err(SessionError::Pcr0Mismatch {
                        expected: hex::encode(expected),
                        found: hex::encode(fields.pcr(0).unwrap_or_default()),
                    });
                }
            }
            None if self.settings.allow_dev => {}
            None => return Err(SessionError::NoExpectedPcr0),
        }
        Ok(fields)
    }

    fn fail(&mut self, e: SessionError) {
        if self.phase != Phase::Done {
            self.phase = Phase::Done;
            self.in_flight.clear();
            self.events.push_back(Event::Failed(e));
        }
    }

    /// The terms being run.
    pub fn terms(&self) -> &Terms {
        &self.terms
    }
}

fn response_kind(r: &Response) -> &'static str {
    match r {
        Response::Hello(_) => "a hello reply",
        Response::Credentials(_) => "a credentials reply",
        Response::AuctionOpened(_) => "an auction-opened reply",
        Response::SealAccepted(_) => "a seal-accepted reply",
        Response::ChunkAccepted(_) => "a chunk-accepted reply",
        Response::ResultChunk(_) => "a result chunk",
        Response::Closed(_) => "a closed reply",
        Response::Error(_) => "an error",
    }
}
