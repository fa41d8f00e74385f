//! The parent's end of a session: drives one auction through the enclave and checks
//! everything that comes back before anything is written anywhere.
//!
//! Checks, in order: the hello attestation (trust anchor, freshness, our nonce, the expected
//! PCR0, `dev` only when allowed) before credentials are sent; the configuration digest the
//! enclave echoes; every lot outcome against what was sent (right lot, only buyers that bid,
//! prices only when the policy reveals them); and at close, the output digest against our own
//! rendering of the outcomes and the result attestation's commitment to it.

use super::Millis;
use crate::attestation::{self, VerifiedDocument};
use crate::auction::{LotResult, Outcome};
use crate::config::{self, AuctionConfig, HELLO_USER_DATA};
use crate::credentials::Credentials;
use crate::names::{BuyerName, LotId};
use crate::output;
use crate::wire::{
    Close, ErrorCode, FrameDecoder, FrameError, FromEnclave, Hello, LotBids, MessageError,
    PROTOCOL_VERSION, Request, Response, ToEnclave, decode_response, encode_frame, encode_request,
};
use std::collections::{HashMap, HashSet, VecDeque};

#[derive(Debug, Clone)]
pub struct ParentSettings {
    pub max_frame: usize,
    /// Lots in flight at once.
    pub window: usize,
    /// Accept an enclave that says it is a dev build (software NSM).
    pub allow_dev: bool,
    /// When set, the enclave's PCR0 must equal it.
    pub expected_pcr0: Option<Vec<u8>>,
    /// DER of the attestation trust anchor (AWS Nitro root G1 unless told otherwise).
    pub root_der: Vec<u8>,
    pub hello_timeout: Millis,
    pub reply_timeout: Millis,
    pub close_timeout: Millis,
    /// Ask for fresh credentials this long before the current ones expire.
    pub refresh_margin: Millis,
}

impl ParentSettings {
    pub fn new(root_der: Vec<u8>) -> Self {
        ParentSettings {
            max_frame: crate::wire::DEFAULT_MAX_FRAME,
            window: 64,
            allow_dev: false,
            expected_pcr0: None,
            root_der,
            hello_timeout: 30_000,
            reply_timeout: 120_000,
            close_timeout: 60_000,
            refresh_margin: 5 * 60 * 1000,
        }
    }
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
    pub results: Vec<LotResult>,
    pub output_csv: Vec<u8>,
    pub output_json: Vec<u8>,
    /// The canonical configuration bytes the attestation commits to.
    pub config_json: Vec<u8>,
    pub attestation: Vec<u8>,
    /// Each lot's time from being sent to its outcome arriving, in ms, in arrival order.
    pub lot_latency_ms: Vec<u64>,
}

#[derive(Debug)]
pub enum Event {
    /// The enclave's hello verified; credentials are on their way.
    Connected(EnclaveInfo),
    /// The credentials expire soon: call [`ParentSession::refresh_credentials`].
    NeedCredentials,
    /// A lot's outcome arrived.
    Progress {
        done: usize,
        total: usize,
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
    #[error("enclave attestation ({what}) failed: {reason}")]
    Attestation { what: &'static str, reason: String },
    #[error("enclave PCR0 is {found}, expected {expected}")]
    Pcr0Mismatch { expected: String, found: String },
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
    Lots,
    AwaitClose,
    Done,
}

#[derive(Debug, Clone)]
enum Sent {
    Hello,
    Credentials,
    Open,
    Lot(usize),
    Close,
}

pub struct ParentSession {
    settings: ParentSettings,
    config: AuctionConfig,
    config_sha256: [u8; 32],
    nonce: Vec<u8>,
    lots: Vec<LotBids>,
    next_lot: usize,
    decoder: FrameDecoder,
    outbox: Vec<u8>,
    next_id: u64,
    phase: Phase,
    in_flight: HashMap<u64, (Sent, Millis)>,
    /// When each lot request went out, for latency figures.
    lot_sent_at: HashMap<u64, Millis>,
    lot_latency_ms: Vec<u64>,
    results: Vec<LotResult>,
    credentials: Credentials,
    refresh_requested: bool,
    enclave: Option<EnclaveInfo>,
    events: VecDeque<Event>,
}

impl ParentSession {
    /// Starts a session: the hello is queued at once. `nonce` must be fresh and random
    /// (16 to 512 bytes); `lots` are sent in the given order.
    pub fn new(
        settings: ParentSettings,
        config: AuctionConfig,
        lots: Vec<LotBids>,
        credentials: Credentials,
        nonce: Vec<u8>,
        now: Millis,
    ) -> Self {
        let mut s = ParentSession {
            decoder: FrameDecoder::new(settings.max_frame),
            config_sha256: config.digest(),
            settings,
            config,
            nonce: nonce.clone(),
            results: Vec::with_capacity(lots.len()),
            lots,
            next_lot: 0,
            outbox: Vec::new(),
            next_id: 1,
            phase: Phase::AwaitHello,
            in_flight: HashMap::new(),
            lot_sent_at: HashMap::new(),
            lot_latency_ms: Vec::new(),
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
            Phase::Lots => format!(
                "mid-auction ({} of {} lots decided)",
                self.results.len(),
                self.lots.len()
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
            Phase::AwaitOpen | Phase::Lots | Phase::AwaitClose
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

    pub fn lots_done(&self) -> usize {
        self.results.len()
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
            _ => self.settings.reply_timeout,
        }
    }

    fn describe(&self, sent: &Sent) -> String {
        match sent {
            Sent::Hello => "hello".into(),
            Sent::Credentials => "credentials".into(),
            Sent::Open => format!("open auction {}", self.config.auction_id()),
            Sent::Lot(i) => format!("lot `{}`", self.lots[*i].lot),
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
        if matches!(sent, Sent::Lot(_)) {
            self.lot_sent_at.insert(id, now);
        }
        self.in_flight.insert(id, (sent, deadline));
    }

    fn fill_window(&mut self, now: Millis) {
        // Only lots count against the window: a credentials refresh in flight must not
        // hold lots back (with a window of one it would stall the auction).
        let mut lots_in_flight = self
            .in_flight
            .values()
            .filter(|(s, _)| matches!(s, Sent::Lot(_)))
            .count();
        while self.phase == Phase::Lots
            && self.next_lot < self.lots.len()
            && lots_in_flight < self.settings.window
        {
            lots_in_flight += 1;
            let i = self.next_lot;
            self.next_lot += 1;
            let msg = Request::Lot(self.lots[i].clone());
            self.send(msg, Sent::Lot(i), now);
        }
        if self.phase == Phase::Lots
            && self.next_lot == self.lots.len()
            && !self
                .in_flight
                .values()
                .any(|(s, _)| matches!(s, Sent::Lot(_)))
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
                if doc.user_data() != Some(HELLO_USER_DATA.as_slice()) {
                    return Err(SessionError::Attestation {
                        what: "hello",
                        reason: "user_data is not the hello marker".into(),
                    });
                }
                let info = EnclaveInfo {
                    build: h.build,
                    dev: h.dev,
                    module_id: doc.module_id().to_owned(),
                    pcr0: doc.pcr(0).unwrap_or_default().to_vec(),
                };
                self.enclave = Some(info.clone());
                self.events.push_back(Event::Connected(info));
                self.phase = Phase::AwaitCredentials;
                let c = self.credentials.clone();
                self.send(Request::Credentials(c), Sent::Credentials, now);
                Ok(())
            }
            (Sent::Credentials, Response::Credentials(_)) => {
                if self.phase == Phase::AwaitCredentials {
                    self.phase = Phase::AwaitOpen;
                    let c = self.config.clone();
                    self.send(Request::OpenAuction(c), Sent::Open, now);
                }
                self.fill_window(now);
                Ok(())
            }
            (Sent::Open, Response::AuctionOpened(o)) => {
                if &o.auction_id != self.config.auction_id()
                    || o.config_sha256 != self.config_sha256
                {
                    return Err(SessionError::Protocol(
                        "the enclave opened a different auction configuration".into(),
                    ));
                }
                self.phase = Phase::Lots;
                self.check_refresh(now);
                self.fill_window(now);
                Ok(())
            }
            (Sent::Lot(i), Response::Lot(result)) => {
                self.check_lot(i, &result)?;
                if let Some(at) = self.lot_sent_at.remove(&id) {
                    self.lot_latency_ms.push(now.saturating_sub(at));
                }
                self.results.push(result);
                self.events.push_back(Event::Progress {
                    done: self.results.len(),
                    total: self.lots.len(),
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

    /// An outcome may only name buyers that bid on that lot, and a price exactly when the
    /// policy reveals one and someone won.
    fn check_lot(&self, i: usize, r: &LotResult) -> Result<(), SessionError> {
        let sent = &self.lots[i];
        let bad = |why: String| Err(SessionError::Result(format!("lot `{}`: {why}", sent.lot)));
        if r.lot != sent.lot {
            return bad(format!("answer names lot `{}`", r.lot));
        }
        let bidders: HashSet<&BuyerName> = sent.bids.iter().map(|b| &b.buyer).collect();
        let named: Vec<&BuyerName> = match &r.outcome {
            Outcome::Winner { buyer, .. } => vec![buyer],
            Outcome::Tie { buyers, .. } => buyers.iter().collect(),
            Outcome::NoValidBid => vec![],
        };
        let mut seen = HashSet::new();
        for b in named
            .iter()
            .copied()
            .chain(r.disqualified.iter().map(|d| &d.buyer))
        {
            if !bidders.contains(b) {
                return bad(format!("outcome names `{b}`, who did not bid"));
            }
            if !seen.insert(b) {
                return bad(format!("outcome names `{b}` twice"));
            }
        }
        if matches!(&r.outcome, Outcome::Tie { buyers, .. } if buyers.len() < 2) {
            return bad("a tie of fewer than two buyers".into());
        }
        let valid = bidders.len() - r.disqualified.len();
        if matches!(r.outcome, Outcome::NoValidBid) != (valid == 0) {
            return bad("outcome does not match the number of valid bids".into());
        }
        let wants_price =
            self.config.reveal().reveals_price() && !matches!(r.outcome, Outcome::NoValidBid);
        if r.outcome.price().is_some() != wants_price {
            return bad(format!(
                "price {} although the reveal policy is {}",
                if wants_price { "missing" } else { "present" },
                self.config.reveal()
            ));
        }
        Ok(())
    }

    fn finish(&mut self, c: crate::wire::Closed, now: Millis) -> Result<(), SessionError> {
        if c.lots != self.results.len() as u64 || self.results.len() != self.lots.len() {
            return Err(SessionError::Result(format!(
                "enclave closed with {} lots; {} were sent and {} decided",
                c.lots,
                self.lots.len(),
                self.results.len()
            )));
        }
        if c.config_sha256 != self.config_sha256 {
            return Err(SessionError::Result(
                "closing configuration digest differs from ours".into(),
            ));
        }
        let mut results = std::mem::take(&mut self.results);
        output::sort_results(&mut results);
        let output_csv = output::render_csv(&results, self.config.reveal());
        let output_sha256 = config::sha256(&output_csv);
        if output_sha256 != c.output_sha256 {
            return Err(SessionError::Result(format!(
                "enclave's output digest {} differs from the digest of the outcomes it sent ({})",
                hex::encode(c.output_sha256),
                hex::encode(output_sha256)
            )));
        }
        let doc = self.verify_document("result", &c.attestation, now)?;
        let expected = config::result_commitment(&self.config_sha256, &output_sha256);
        if doc.user_data() != Some(expected.as_slice()) {
            return Err(SessionError::Attestation {
                what: "result",
                reason: "user_data does not commit to this configuration and output".into(),
            });
        }
        let hello_pcr0 = self.enclave.as_ref().map(|e| e.pcr0.as_slice());
        if doc.pcr(0) != hello_pcr0 {
            return Err(SessionError::Attestation {
                what: "result",
                reason: "PCR0 differs from the hello's".into(),
            });
        }
        let output_json = output::render_json(&self.config, &results);
        self.phase = Phase::Done;
        self.events.push_back(Event::Finished(Box::new(Finished {
            results,
            output_csv,
            output_json,
            config_json: self.config.canonical_bytes(),
            attestation: c.attestation,
            lot_latency_ms: std::mem::take(&mut self.lot_latency_ms),
        })));
        Ok(())
    }

    fn verify_document(
        &self,
        what: &'static str,
        doc: &[u8],
        now: Millis,
    ) -> Result<VerifiedDocument, SessionError> {
        let verified = attestation::verify(
            doc,
            &attestation::VerifyOptions {
                root_der: &self.settings.root_der,
                at: attestation::VerifyAt::UnixMillis(now),
            },
        )
        .map_err(|e| SessionError::Attestation {
            what,
            reason: e.to_string(),
        })?;
        if verified.nonce() != Some(self.nonce.as_slice()) {
            return Err(SessionError::Attestation {
                what,
                reason: "nonce is not the one this session sent".into(),
            });
        }
        if let Some(expected) = &self.settings.expected_pcr0 {
            let found = verified.pcr(0).unwrap_or_default();
            if found != expected.as_slice() {
                return Err(SessionError::Pcr0Mismatch {
                    expected: hex::encode(expected),
                    found: hex::encode(found),
                });
            }
        }
        Ok(verified)
    }

    fn fail(&mut self, e: SessionError) {
        if self.phase != Phase::Done {
            self.phase = Phase::Done;
            self.in_flight.clear();
            self.events.push_back(Event::Failed(e));
        }
    }

    /// Lots in the order they will be sent (for the driver's progress and logs).
    pub fn lot_ids(&self) -> impl Iterator<Item = &LotId> {
        self.lots.iter().map(|l| &l.lot)
    }
}

fn response_kind(r: &Response) -> &'static str {
    match r {
        Response::Hello(_) => "a hello reply",
        Response::Credentials(_) => "a credentials reply",
        Response::AuctionOpened(_) => "an auction-opened reply",
        Response::Lot(_) => "a lot outcome",
        Response::Closed(_) => "a closed reply",
        Response::Error(_) => "an error",
    }
}
