//! Serving the parent: one session at a time over a stream, driven by core's state machine.
//!
//! Three kinds of threads meet here: a reader per connection (stops reading when the session
//! asks for backpressure, and never reads more than a few chunks ahead of the session loop),
//! the KMS workers (report opened bids), and the session loop, which owns the state machine,
//! writes frames and calls the NSM. A second connection while a session runs gets a `busy`
//! error frame and is closed.

use crate::keys::{PendingKey, RecipientAttestation};
use crate::kms::{KmsClient, KmsSettings};
use crate::log;
use crate::logging::now_ms;
use crate::nsm::{self, Nsm};
use crate::transport::{Listener, Stream};
use bidding_core::session::enclave::{
    Action, BidTicket, DecryptOutcome, EnclaveSession, EnclaveSettings, ReplayGuard,
};
use bidding_core::wire::{
    ErrorCode, ErrorReply, FromEnclave, Response, encode_frame, encode_response,
};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

pub struct Context {
    pub settings: EnclaveSettings,
    pub nsm: Arc<dyn Nsm>,
    pub key: PendingKey,
    pub kms_settings: KmsSettings,
    kms: OnceLock<Result<KmsClient, String>>,
    guard: Mutex<Option<ReplayGuard>>,
    busy: AtomicBool,
}

impl Context {
    pub fn new(
        settings: EnclaveSettings,
        nsm: Arc<dyn Nsm>,
        key: PendingKey,
        kms_settings: KmsSettings,
        replay_capacity: usize,
    ) -> Arc<Self> {
        Arc::new(Context {
            settings,
            nsm,
            key,
            kms_settings,
            kms: OnceLock::new(),
            guard: Mutex::new(Some(ReplayGuard::new(replay_capacity))),
            busy: AtomicBool::new(false),
        })
    }

    fn kms(&self) -> Result<&KmsClient, String> {
        self.kms
            .get_or_init(|| {
                let key = self.key.get()?;
                let recipient = Arc::new(RecipientAttestation::new(self.nsm.clone(), key));
                KmsClient::start(self.kms_settings.clone(), recipient)
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Accepts connections until the listener fails.
pub fn serve(listener: Listener, ctx: Arc<Context>) -> std::io::Result<()> {
    loop {
        let stream = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if ctx.busy.swap(true, Ordering::SeqCst) {
            refuse_busy(stream);
            continue;
        }
        let ctx = ctx.clone();
        std::thread::Builder::new()
            .name("session".into())
            .spawn(move || {
                let summary = run_session(stream, &ctx);
                ctx.busy.store(false, Ordering::SeqCst);
                // Only now: a parent that connects after this line is served, not refused.
                log!("{summary}");
            })?;
    }
}

fn refuse_busy(mut stream: Stream) {
    log!("refused a second parent connection: a session is already running");
    let reply = encode_response(&FromEnclave {
        id: None,
        msg: Response::Error(ErrorReply {
            code: ErrorCode::Busy,
            message: "another parent session is running; one at a time".into(),
            fatal: true,
        }),
    });
    let mut out = Vec::new();
    if encode_frame(&reply, usize::MAX, &mut out).is_ok() {
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = stream.write_all(&out);
    }
    stream.shutdown();
}

enum Event {
    /// A read buffer and how many of its bytes the read filled; the buffer goes back to the
    /// reader once handled, so reads are not copied out of it.
    Input(Vec<u8>, usize),
    Eof(Option<std::io::Error>),
    Decrypted(BidTicket, DecryptOutcome),
}

/// Chunks the reader may have read that the session loop has not yet handled. Without this
/// bound a parent that writes faster than the session decodes (or that stops reading replies,
/// which blocks the session loop in a write) fills the channel with everything it sends.
const MAX_UNHANDLED_READS: usize = 4;

/// The most one read takes: a whole frame of the default size. Smaller reads cost the enclave
/// a thread hand-over each (a wake-up of the session loop and of the reader): at 64 KiB
/// they were about 4 % of its CPU per envelope bid.
const READ_LEN: usize = 1024 * 1024;

/// Lets the reader thread read only while the session wants input and has handled (nearly)
/// everything read before.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    open: bool,
    unhandled: usize,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn set(&self, open: bool) {
        let mut g = self.lock();
        if g.open != open {
            g.open = open;
            self.changed.notify_all();
        }
    }
    /// The reader read a chunk and is about to hand it over.
    fn read_one(&self) {
        self.lock().unhandled += 1;
    }
    /// The session loop handled `n` chunks and wrote its replies to them.
    fn handled(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut g = self.lock();
        g.unhandled = g.unhandled.saturating_sub(n);
        self.changed.notify_all();
    }
    fn wake(&self) {
        let _g = self.lock();
        self.changed.notify_all();
    }
    /// Waits until the reader may read; false when the session is over.
    fn wait_ready(&self, stop: &AtomicBool) -> bool {
        let ready = |g: &GateState| g.open && g.unhandled < MAX_UNHANDLED_READS;
        let mut g = self.lock();
        while !ready(&g) && !stop.load(Ordering::Relaxed) {
            g = self
                .changed
                .wait_timeout(g, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        !stop.load(Ordering::Relaxed)
    }
}

/// Runs one parent session to its end and returns the line to log about it.
pub fn run_session(stream: Stream, ctx: &Context) -> String {
    let started = Instant::now();
    let guard = ctx
        .guard
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default();
    // The lot index's hash key: secret, so no buyer can craft ids that flood one bucket.
    let mut seed = [0u8; 16];
    if let Err(e) = aws_lc_rs::rand::fill(&mut seed) {
        *ctx.guard.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
        return format!("session ended at once: no randomness for the lot index: {e}");
    }
    let mut session = EnclaveSession::new(ctx.settings.clone(), guard, now_ms(), seed);
    log!("parent connected");
    let (tx, rx) = mpsc::channel::<Event>();
    // Read buffers the session loop has handled, back to the reader: only a handful are ever
    // made (MAX_UNHANDLED_READS in flight, one being read into, one being handled).
    let (recycle, recycled) = mpsc::channel::<Vec<u8>>();
    let stop = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(Gate::default());
    gate.set(true);
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            *ctx.guard.lock().unwrap_or_else(|e| e.into_inner()) = Some(session.into_guard());
            return format!("session ended at once: cannot clone the parent stream: {e}");
        }
    };
    let _ = writer.set_write_timeout(Some(Duration::from_secs(60)));
    let reader = {
        let (tx, stop, gate) = (tx.clone(), stop.clone(), gate.clone());
        let mut stream = stream;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; READ_LEN];
            while gate.wait_ready(&stop) {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        let _ = tx.send(Event::Eof(None));
                        return;
                    }
                    Ok(n) => {
                        gate.read_one();
                        let next = recycled.try_recv().unwrap_or_else(|_| vec![0u8; READ_LEN]);
                        if tx
                            .send(Event::Input(std::mem::replace(&mut buf, next), n))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Event::Eof(Some(e)));
                        return;
                    }
                }
            }
        })
    };
    let cancelled = Arc::new(AtomicBool::new(false));
    // Chunks handled whose replies are not yet written. A chunk counts as handled only once
    // its replies are written: a parent that floods and never reads then blocks our write
    // (and so the reader) after a few chunks, instead of filling the outbox without bound.
    let mut handled_inputs = 0usize;
    loop {
        // Drain both, until neither yields: the result's chunks are rendered as they are
        // taken, and taking its last one asks for the attestation.
        loop {
            let mut busy = false;
            while let Some(action) = session.poll_action() {
                busy = true;
                match action {
                    Action::Attest {
                        ticket,
                        user_data,
                        nonce,
                    } => {
                        let doc = ctx.key.get().and_then(|key| {
                            nsm::attest(
                                &*ctx.nsm,
                                Some(user_data),
                                Some(nonce),
                                Some(key.spki_der.clone()),
                            )
                        });
                        session.attested(ticket, doc);
                    }
                    Action::UseCredentials(c) => {
                        log!(
                            "credentials received for {} (expire {})",
                            c.region,
                            c.expiration.map_or("never".to_owned(), |e| e.to_string())
                        );
                        if let Ok(kms) = ctx.kms() {
                            kms.use_credentials(c);
                        }
                    }
                    Action::Decrypt(job) => match ctx.kms() {
                        Ok(kms) => {
                            let tx = tx.clone();
                            kms.submit(job, cancelled.clone(), move |t, o| {
                                let _ = tx.send(Event::Decrypted(t, o));
                            });
                        }
                        Err(e) => session.decrypted(
                            job.ticket,
                            DecryptOutcome::Fatal {
                                code: ErrorCode::Internal,
                                message: format!("KMS client unavailable: {e}"),
                            },
                        ),
                    },
                }
            }
            while let Some(bytes) = session.poll_transmit() {
                busy = true;
                if let Err(e) = writer.write_all(&bytes).and_then(|_| writer.flush()) {
                    log!("writing to the parent failed: {e}");
                    session.handle_eof();
                }
            }
            if !busy {
                break;
            }
        }
        gate.handled(std::mem::take(&mut handled_inputs));
        if session.is_ended() {
            break;
        }
        gate.set(session.wants_input());
        let wait = session
            .poll_timeout()
            .map(|t| Duration::from_millis(t.saturating_sub(now_ms())))
            .unwrap_or(Duration::from_secs(3600));
        // Take whatever else is already queued before acting and writing: one write and one
        // wake-up for many outcomes instead of one each.
        let mut next = Some(rx.recv_timeout(wait));
        let mut taken = 0;
        while let Some(event) = next.take() {
            match event {
                Ok(Event::Input(buf, n)) => {
                    session.handle_input(&buf[..n], now_ms());
                    let _ = recycle.send(buf);
                    handled_inputs += 1;
                }
                Ok(Event::Eof(err)) => {
                    if let Some(e) = err {
                        log!("reading from the parent failed: {e}");
                    }
                    session.handle_eof();
                }
                Ok(Event::Decrypted(ticket, outcome)) => {
                    if let DecryptOutcome::Fatal { code, message } = &outcome {
                        log!("a ciphertext (seal or bid) could not be opened ({code}): {message}");
                    }
                    session.decrypted(ticket, outcome)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => session.handle_timeout(now_ms()),
                Err(mpsc::RecvTimeoutError::Disconnected) => session.handle_eof(),
            }
            taken += 1;
            if taken < 256 && !session.is_ended() {
                next = rx.try_recv().ok().map(Ok);
            }
        }
    }
    cancelled.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    gate.wake();
    writer.shutdown();
    let _ = reader.join();
    let stats = session.stats();
    let summary = format!(
        "session ended after {:.1} s: {}; {} decided, {} opened, {} set aside",
        started.elapsed().as_secs_f64(),
        session.end_reason().unwrap_or("done"),
        bidding_core::count(stats.lots_decided, "lot", "lots"),
        bidding_core::count(stats.bids_opened, "bid", "bids"),
        stats.bids_set_aside
    );
    *ctx.guard.lock().unwrap_or_else(|e| e.into_inner()) = Some(session.into_guard());
    summary
}
