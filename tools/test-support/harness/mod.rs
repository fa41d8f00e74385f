//! Shared by the enclave's integration tests: a dev enclave as a child process (`bidctl
//! __enclave`, so PCR0 is the hash of bidctl), a test client that speaks core's wire codec over
//! the enclave's Unix socket with read timeouts, and an honest parent built on it that checks
//! every attestation the enclave hands back.

#![allow(dead_code)]

use base64::Engine;
use bidding_client::kms_client::KmsClient;
use bidding_core::attestation::{self, DocumentFields, VerifyAt, VerifyOptions};
use bidding_core::auction::RevealPolicy;
use bidding_core::config::{self, AuctionConfig, BuyerSpec, Mode, ResultCommitment};
use bidding_core::credentials::Credentials;
use bidding_core::kms::bid_context;
use bidding_core::manifest::{self, FileEntry, FileFormat, Manifest, SEAL_MARKER};
use bidding_core::names::{AuctionId, BuyerName, LotId};
use bidding_core::output::OutputHeader;
use bidding_core::session::enclave::chunk_len_for;
use bidding_core::wire::{
    AuctionOpened, Close, Closed, ErrorCode, ErrorReply, FileChunk, FrameDecoder, FromEnclave,
    Hello, OpenSealed, OutputFile, PROTOCOL_VERSION, Request, Response, Seal, ToEnclave,
    decode_response, encode_frame, encode_request,
};
use bidding_standins::stack::{Buyer, Stack, StackOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// bidctl, which runs the dev enclave as `bidctl __enclave ...`.
pub const EXE: &str = env!("CARGO_BIN_EXE_bidctl");

/// Longest wait for any single frame; a hang fails the test instead of blocking it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

pub fn exe() -> PathBuf {
    PathBuf::from(EXE)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn buyer_names(names: &[&str]) -> Vec<BuyerName> {
    names.iter().map(|n| BuyerName::new(*n).unwrap()).collect()
}

pub fn lot(id: &str) -> LotId {
    LotId::new(id).unwrap()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A stack (S3, KMS emulator, software NSM root, operator and buyers) in a temporary directory
/// that goes away with it.
pub struct World {
    pub stack: Stack,
    // Dropped after the stack (fields drop in declaration order).
    pub tmp: tempfile::TempDir,
}

impl World {
    pub fn start(buyers: &[&str], opts: StackOptions) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let stack = Stack::start(tmp.path(), &buyer_names(buyers), &exe(), opts).unwrap();
        World { stack, tmp }
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// A dev enclave of the stack's rule set reaching this world's KMS emulator over TLS.
    pub fn enclave(&self, name: &str, extra: &[&str]) -> Enclave {
        let proxy = format!("tcp:{}", self.stack.kms.addr());
        let rules = self.stack.rules.to_string();
        let mut args = vec!["--rules", rules.as_str()];
        args.extend_from_slice(extra);
        Enclave::start(
            self.dir(),
            name,
            &self.stack.nsm_dir,
            &proxy,
            Some(&self.stack.kms.ca_pem()),
            &args,
        )
    }

    pub fn root_der(&self) -> Vec<u8> {
        bidding_client::pem_certificate(&std::fs::read(&self.stack.dev_root_pem).unwrap()).unwrap()
    }

    pub fn buyer(&self, name: &str) -> &Buyer {
        self.stack.buyer(name).unwrap()
    }

    /// The configuration of an auction among all of the stack's buyers.
    pub fn config(&self, auction: &str, reveal: RevealPolicy) -> AuctionConfig {
        let buyers = self
            .stack
            .buyers
            .iter()
            .map(|b| BuyerSpec {
                name: b.name.clone(),
                key_arn: b.key.clone(),
            })
            .collect();
        AuctionConfig::new(AuctionId::new(auction).unwrap(), buyers, reveal, false).unwrap()
    }

    /// The manifest of a sealed auction of `config` over these files (one per buyer, in the
    /// configuration's order): its canonical bytes.
    pub fn manifest(&self, config: &AuctionConfig, files: &[Vec<u8>]) -> Vec<u8> {
        let entries = config
            .buyers()
            .iter()
            .zip(files)
            .map(|(b, f)| FileEntry {
                buyer: b.name.clone(),
                bucket: self.stack.buyer(b.name.as_str()).unwrap().bucket.clone(),
                key: "encrypted.csv".into(),
                size: f.len() as u64,
                sha256: config::sha256(f),
                format: FileFormat::detect(f),
            })
            .collect();
        Manifest::new(config.clone(), entries)
            .unwrap()
            .canonical_bytes()
    }

    pub fn sealer(&self) -> Sealer {
        Sealer {
            rules: self.stack.rules,
            clients: self
                .stack
                .buyers
                .iter()
                .map(|b| {
                    (
                        b.name.clone(),
                        b.key.to_string(),
                        self.stack.kms_client(&b.credentials).unwrap(),
                    )
                })
                .collect(),
        }
    }

    /// An honest parent on a fresh connection to `enclave`.
    pub fn parent(&self, enclave: &Enclave) -> Parent {
        Parent::new(Client::connect(enclave), self.root_der(), self.stack.pcr0)
            .with_rules(self.stack.rules)
    }
}

/// Encrypts bids the way buyers do: KMS Encrypt with a buyer's own key and credentials, for
/// the image of rule set `rules` (`rules=sealed` in the context of a sealed auction's bids).
pub struct Sealer {
    clients: Vec<(BuyerName, String, KmsClient)>,
    pub rules: Mode,
}

impl Sealer {
    /// From (buyer, key ARN, a KMS client with the buyer's credentials); bids for the sealed
    /// image.
    pub fn new(clients: Vec<(BuyerName, String, KmsClient)>) -> Sealer {
        Sealer {
            clients,
            rules: Mode::Sealed,
        }
    }

    fn find(&self, name: &str) -> &(BuyerName, String, KmsClient) {
        self.clients
            .iter()
            .find(|(n, _, _)| n.as_str() == name)
            .unwrap_or_else(|| panic!("no buyer {name}"))
    }

    /// `amount` sealed by `encrypter` under its own key, with the encryption context of
    /// (`auction`, `lot`, `context_buyer`).
    pub fn seal_as(
        &self,
        encrypter: &str,
        amount: &str,
        auction: &str,
        lot: &str,
        context_buyer: &str,
    ) -> Vec<u8> {
        let (_, key, client) = self.find(encrypter);
        let context = bid_context(
            self.rules,
            &AuctionId::new(auction).unwrap(),
            &LotId::new(lot).unwrap(),
            &BuyerName::new(context_buyer).unwrap(),
        );
        client
            .encrypt(key, amount.as_bytes(), Some(context))
            .unwrap()
    }

    /// `encrypter`'s seal of `manifest` as buyer `buyer` (normally the same).
    pub fn seal_manifest_as(&self, encrypter: &str, buyer: &str, manifest: &[u8]) -> Vec<u8> {
        let (_, key, client) = self.find(encrypter);
        let m = Manifest::parse(manifest).unwrap();
        let context = manifest::seal_context(
            m.terms().auction_id(),
            &BuyerName::new(buyer).unwrap(),
            &m.digest(),
        );
        client.encrypt(key, SEAL_MARKER, Some(context)).unwrap()
    }

    /// `buyer`'s own seal of `manifest`.
    pub fn seal_manifest(&self, buyer: &str, manifest: &[u8]) -> Vec<u8> {
        self.seal_manifest_as(buyer, buyer, manifest)
    }

    /// A correct bid: `buyer`'s key, `buyer`'s context for this lot.
    pub fn seal(&self, buyer: &str, amount: &str, auction: &str, lot: &str) -> Vec<u8> {
        self.seal_as(buyer, amount, auction, lot, buyer)
    }

    /// Seals many correct bids (buyer, amount, lot) on `threads` threads, in order.
    pub fn seal_many(
        &self,
        auction: &str,
        bids: &[(String, String, String)],
        threads: usize,
    ) -> Vec<Vec<u8>> {
        let chunk = bids.len().div_ceil(threads.max(1)).max(1);
        std::thread::scope(|s| {
            let handles: Vec<_> = bids
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|(b, a, l)| self.seal(b, a, auction, l))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        })
    }
}

/// A per-bid bid file (`[].contract,[].bid`) of these (lot, ciphertext) rows.
pub fn bid_file(rows: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = String::from("[].contract,[].bid\n");
    for (lot, ct) in rows {
        out.push_str(&format!(
            "{lot},{}\n",
            base64::engine::general_purpose::STANDARD.encode(ct)
        ));
    }
    out.into_bytes()
}

/// A whole file in one chunk.
pub fn file_chunk(buyer: &str, data: Vec<u8>, last: bool) -> Request {
    Request::FileChunk(FileChunk {
        buyer: BuyerName::new(buyer).unwrap(),
        data,
        last,
    })
}

/// A dev enclave child process (`bidctl __enclave`), stderr in a log file; killed by its PID
/// when dropped.
pub struct Enclave {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Enclave {
    /// Starts `bidctl __enclave --listen unix:DIR/NAME.sock --kms-proxy PROXY [--kms-ca CA]
    /// --soft-nsm NSM_DIR EXTRA...` and waits until it listens.
    pub fn start(
        dir: &Path,
        name: &str,
        nsm_dir: &Path,
        kms_proxy: &str,
        kms_ca: Option<&Path>,
        extra: &[&str],
    ) -> Enclave {
        let socket = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(EXE);
        cmd.arg("__enclave")
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--kms-proxy")
            .arg(kms_proxy)
            .arg("--soft-nsm")
            .arg(nsm_dir);
        if let Some(ca) = kms_ca {
            cmd.arg("--kms-ca").arg(ca);
        }
        let child = cmd
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting bidctl __enclave");
        let mut enclave = Enclave { child, socket, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !enclave.log_text().contains("listening on") {
            if let Some(status) = enclave.child.try_wait().unwrap() {
                panic!(
                    "the dev enclave exited at start ({status}); its log:\n{}",
                    enclave.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the dev enclave did not listen within 20 s; its log:\n{}",
                enclave.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        enclave
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sessions the enclave has finished: its "session ended" log lines, which it writes once
    /// it is ready for the next parent.
    pub fn sessions_ended(&self) -> usize {
        self.log_text().matches("session ended").count()
    }

    /// Waits until the enclave has logged the end of `n` sessions.
    pub fn wait_sessions_ended(&self, n: usize) {
        let deadline = Instant::now() + READ_TIMEOUT;
        while self.sessions_ended() < n {
            assert!(
                Instant::now() < deadline,
                "the enclave did not end session {n}; its log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics unless the process is still running.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "the enclave exited ({status}); its log:\n{}",
                self.log_text()
            );
        }
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM")
    }

    /// Peak virtual memory (VmPeak) in KiB: grows with every reservation, touched or not.
    pub fn peak_virtual_kib(&self) -> u64 {
        self.status_kib("VmPeak")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }
}

impl Drop for Enclave {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whatever came back from a read.
#[derive(Debug)]
pub enum Event {
    Frame(FromEnclave),
    Eof,
}

/// A connection to the enclave speaking core's codec. Every byte read is kept in `received`.
pub struct Client {
    pub stream: UnixStream,
    decoder: FrameDecoder,
    buffered: Vec<u8>,
    frames: u64,
    pub received: Vec<u8>,
}

impl Client {
    pub fn connect(enclave: &Enclave) -> Client {
        Client::connect_path(&enclave.socket)
    }

    pub fn connect_path(socket: &Path) -> Client {
        let stream = UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Client {
            stream,
            // Larger than anything the enclave may send: its replies are never refused here.
            decoder: FrameDecoder::new(64 * 1024 * 1024),
            buffered: Vec::new(),
            frames: 0,
            received: Vec::new(),
        }
    }

    pub fn frame(msg: &ToEnclave) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&encode_request(msg), usize::MAX, &mut out).unwrap();
        out
    }

    /// A framed arbitrary payload.
    pub fn raw_frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(payload, usize::MAX, &mut out).unwrap();
        out
    }

    pub fn send(&mut self, id: u64, msg: Request) {
        let bytes = Client::frame(&ToEnclave { id, msg });
        self.send_bytes(&bytes);
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Writes `bytes` one byte per write, paced so that the enclave's reader mostly sees them
    /// one at a time (the pacing only makes small reads likely; nothing depends on it).
    pub fn send_bytewise(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.stream.write_all(std::slice::from_ref(b)).unwrap();
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// The next frame or the end of the stream; panics when nothing comes within the timeout.
    pub fn next_event(&mut self) -> Event {
        loop {
            let mut input = &self.buffered[..];
            let frame = self.decoder.decode(&mut input).expect("enclave framing");
            let used = self.buffered.len() - input.len();
            self.buffered.drain(..used);
            if let Some(frame) = frame {
                self.frames += 1;
                let msg = decode_response(self.frames, &frame)
                    .unwrap_or_else(|e| panic!("undecodable frame from the enclave: {e}"));
                return Event::Frame(msg);
            }
            let mut buf = [0u8; 64 * 1024];
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    assert!(
                        self.decoder.finish().is_ok(),
                        "the enclave closed the connection inside a frame"
                    );
                    return Event::Eof;
                }
                Ok(n) => {
                    self.received.extend_from_slice(&buf[..n]);
                    self.buffered.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("no frame from the enclave within {READ_TIMEOUT:?}")
                }
                // A reset after the enclave's last frame counts as the end.
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Event::Eof,
                Err(e) => panic!("reading from the enclave: {e}"),
            }
        }
    }

    #[track_caller]
    pub fn recv(&mut self) -> FromEnclave {
        match self.next_event() {
            Event::Frame(f) => f,
            Event::Eof => panic!("the enclave closed the connection"),
        }
    }

    /// The next frame must be an error; returns it.
    #[track_caller]
    pub fn recv_error(&mut self) -> (Option<u64>, ErrorReply) {
        match self.recv() {
            FromEnclave {
                id,
                msg: Response::Error(e),
            } => (id, e),
            other => panic!("expected an error frame, got {other:?}"),
        }
    }

    /// The next frame is an error with this id, code and fatality; returns its message.
    #[track_caller]
    pub fn expect_error(&mut self, id: Option<u64>, code: ErrorCode, fatal: bool) -> String {
        let (got_id, e) = self.recv_error();
        assert_eq!(
            (got_id, e.code, e.fatal),
            (id, code, fatal),
            "unexpected error frame: {e:?}"
        );
        e.message
    }

    #[track_caller]
    pub fn expect_eof(&mut self) {
        match self.next_event() {
            Event::Eof => {}
            Event::Frame(f) => panic!("expected the enclave to close, got {f:?}"),
        }
    }
}

/// The parent's side of a session, played honestly: it checks the hello attestation before
/// handing over credentials, and the result's digest and attestation at the end.
pub struct Parent {
    pub client: Client,
    pub next_id: u64,
    pub nonce: Vec<u8>,
    root_der: Vec<u8>,
    pcr0: [u8; 48],
    /// The rule set the enclave must state in its hello.
    rules: Mode,
    /// The enclave's RSA public key from the hello attestation.
    pub enclave_public_key: Vec<u8>,
}

impl Parent {
    pub fn new(client: Client, root_der: Vec<u8>, pcr0: [u8; 48]) -> Parent {
        let mut nonce = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut nonce).unwrap();
        Parent {
            client,
            next_id: 1,
            nonce,
            root_der,
            pcr0,
            rules: Mode::Sealed,
            enclave_public_key: Vec::new(),
        }
    }

    /// Expects an enclave of this rule set (its hello says so).
    pub fn with_rules(mut self, rules: Mode) -> Parent {
        self.rules = rules;
        self
    }

    /// Sends `msg` with the next id; returns the id.
    pub fn send(&mut self, msg: Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.client.send(id, msg);
        id
    }

    /// The frame for `msg` with the next id, not sent.
    pub fn frame(&mut self, msg: Request) -> (u64, Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        (id, Client::frame(&ToEnclave { id, msg }))
    }

    /// Sends `msg` and returns the reply, which must carry its id.
    #[track_caller]
    pub fn call(&mut self, msg: Request) -> Response {
        let id = self.send(msg);
        let reply = self.client.recv();
        assert_eq!(reply.id, Some(id), "reply to request {id}: {reply:?}");
        reply.msg
    }

    pub fn hello_request(&self) -> Request {
        Request::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            nonce: self.nonce.clone(),
        })
    }

    /// Verifies a document against the dev root now, with our nonce and the expected PCR0.
    #[track_caller]
    pub fn verify(&self, doc: &[u8]) -> DocumentFields {
        let fields = attestation::verify(
            doc,
            &VerifyOptions {
                root_der: &self.root_der,
                at: VerifyAt::UnixMillis(now_ms()),
            },
        )
        .expect("the enclave's attestation verifies against the dev root")
        .into_fields();
        assert_eq!(fields.nonce(), Some(self.nonce.as_slice()), "nonce");
        assert!(fields.pcr0_matches(&self.pcr0), "PCR0 is bidctl's hash");
        fields
    }

    /// Checks a hello reply (attestation, nonce, PCR0, the rule set's tag, the dev flag).
    #[track_caller]
    pub fn check_hello(&mut self, reply: Response) {
        let Response::Hello(h) = reply else {
            panic!("expected a hello reply, got {reply:?}")
        };
        assert_eq!(h.protocol, PROTOCOL_VERSION);
        assert!(h.dev, "a dev enclave says so");
        let fields = self.verify(&h.attestation);
        assert_eq!(fields.user_data(), Some(self.rules.hello_tag().as_slice()));
        self.enclave_public_key = fields
            .public_key()
            .expect("the hello attestation carries the enclave's key")
            .to_vec();
        assert!(!self.enclave_public_key.is_empty());
    }

    #[track_caller]
    pub fn hello(&mut self) {
        let reply = self.call(self.hello_request());
        self.check_hello(reply);
    }

    #[track_caller]
    pub fn credentials(&mut self, c: &Credentials) {
        match self.call(Request::Credentials(c.clone())) {
            Response::Credentials(r) => {
                assert_eq!(r.region, c.region);
                assert_eq!(r.expiration, c.expiration);
            }
            other => panic!("expected a credentials reply, got {other:?}"),
        }
    }

    /// Opens an unsealed auction.
    #[track_caller]
    pub fn open_unsealed(&mut self, config: &AuctionConfig) {
        match self.call(Request::OpenUnsealed(config.clone())) {
            Response::AuctionOpened(AuctionOpened {
                auction_id,
                mode,
                terms_sha256,
            }) => {
                assert_eq!(&auction_id, config.auction_id());
                assert_eq!(mode, Mode::Unsealed);
                assert_eq!(terms_sha256, config.digest());
            }
            other => panic!("expected auction_opened, got {other:?}"),
        }
    }

    /// Opens a sealed auction with a manifest's bytes.
    #[track_caller]
    pub fn open_sealed(&mut self, manifest: &[u8]) {
        match self.call(Request::OpenSealed(OpenSealed {
            manifest: manifest.to_vec(),
        })) {
            Response::AuctionOpened(o) => {
                assert_eq!(o.mode, Mode::Sealed);
                assert_eq!(o.terms_sha256, config::sha256(manifest));
            }
            other => panic!("expected auction_opened, got {other:?}"),
        }
    }

    /// hello, credentials and an unsealed open.
    #[track_caller]
    pub fn start(&mut self, c: &Credentials, config: &AuctionConfig) {
        self.hello();
        self.credentials(c);
        self.open_unsealed(config);
    }

    /// hello, credentials, a sealed open, and every seal (buyer, ciphertext), each accepted.
    #[track_caller]
    pub fn start_sealed(&mut self, c: &Credentials, manifest: &[u8], seals: &[(&str, Vec<u8>)]) {
        self.hello();
        self.credentials(c);
        self.open_sealed(manifest);
        for (buyer, ct) in seals {
            match self.call(Request::Seal(Seal {
                buyer: BuyerName::new(*buyer).unwrap(),
                ciphertext: ct.clone(),
            })) {
                Response::SealAccepted(a) => assert_eq!(a.buyer.as_str(), *buyer),
                other => panic!("expected seal_accepted for {buyer}, got {other:?}"),
            }
        }
    }

    /// Sends one buyer's file in chunks and checks every acknowledgement; the last one comes
    /// once every bid of the file is opened.
    #[track_caller]
    pub fn send_file(&mut self, buyer: &str, file: &[u8]) {
        let chunk = chunk_len_for(bidding_core::wire::DEFAULT_MAX_FRAME);
        let mut start = 0;
        loop {
            let end = (start + chunk).min(file.len());
            let last = end == file.len();
            match self.call(file_chunk(buyer, file[start..end].to_vec(), last)) {
                Response::ChunkAccepted(a) => {
                    assert_eq!(a.buyer.as_str(), buyer);
                    assert_eq!(a.received, end as u64);
                }
                other => panic!("expected chunk_accepted for {buyer}, got {other:?}"),
            }
            if last {
                return;
            }
            start = end;
        }
    }

    /// Closes the auction: the whole result arrives at once, and is checked against the
    /// attestation (mode, terms, both outputs, same enclave key). Returns (output.csv,
    /// output.json).
    #[track_caller]
    pub fn close(&mut self, mode: Mode, terms: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let id = self.send(Request::Close(Close {}));
        let (mut csv, mut json) = (Vec::new(), Vec::new());
        let closed = loop {
            let reply = self.client.recv();
            assert_eq!(reply.id, Some(id), "reply to close: {reply:?}");
            match reply.msg {
                Response::ResultChunk(c) if c.file == OutputFile::Csv => csv.extend(c.data),
                Response::ResultChunk(c) => json.extend(c.data),
                Response::Closed(c) => break c,
                other => panic!("expected the result, got {other:?}"),
            }
        };
        self.check_closed(&closed, mode, terms, &csv, &json);
        // The session is over: the enclave closes the connection.
        self.client.expect_eof();
        (csv, json)
    }

    #[track_caller]
    pub fn check_closed(&self, closed: &Closed, mode: Mode, terms: &[u8], csv: &[u8], json: &[u8]) {
        assert_eq!(closed.mode, mode);
        assert_eq!(closed.terms_sha256, config::sha256(terms), "terms digest");
        assert_eq!(closed.csv_sha256, config::sha256(csv), "output.csv digest");
        assert_eq!(
            closed.json_sha256,
            config::sha256(json),
            "output.json digest"
        );
        let header = OutputHeader::parse(json).unwrap();
        assert_eq!(header.lot_count, closed.lots);
        let fields = self.verify(&closed.attestation);
        let expected = ResultCommitment {
            mode,
            terms_sha256: config::sha256(terms),
            csv_sha256: closed.csv_sha256,
            json_sha256: closed.json_sha256,
        };
        assert_eq!(
            fields.user_data(),
            Some(expected.to_bytes().as_slice()),
            "result attestation commits to the terms and both outputs"
        );
        assert_eq!(
            fields.public_key(),
            Some(self.enclave_public_key.as_slice()),
            "same enclave key as in the hello"
        );
    }

    /// A whole unsealed auction: files in the configuration's order; returns the outputs.
    #[track_caller]
    pub fn run_unsealed(
        &mut self,
        c: &Credentials,
        config: &AuctionConfig,
        files: &[Vec<u8>],
    ) -> (Vec<u8>, Vec<u8>) {
        self.start(c, config);
        for (b, f) in config.buyers().iter().zip(files) {
            self.send_file(b.name.as_str(), f);
        }
        self.close(Mode::Unsealed, &config.canonical_bytes())
    }
}

/// A parsed output.json lot: (lot, result, winner or tied names, price, set-aside
/// (buyer, reason)).
pub type LotLine = (
    String,
    String,
    Vec<String>,
    Option<String>,
    Vec<(String, String)>,
);

/// The lots of an output.json, in output order.
pub fn json_lots(json: &[u8]) -> Vec<LotLine> {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    v["lots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let names = match l["result"].as_str().unwrap() {
                "winner" => vec![l["winner"].as_str().unwrap().to_owned()],
                "tie" => l["tied"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_str().unwrap().to_owned())
                    .collect(),
                _ => vec![],
            };
            let set_aside = l["disqualified"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .map(|x| {
                            (
                                x["buyer"].as_str().unwrap().to_owned(),
                                x["reason"].as_str().unwrap().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                l["lot"].as_str().unwrap().to_owned(),
                l["result"].as_str().unwrap().to_owned(),
                names,
                l["price"].as_str().map(str::to_owned),
                set_aside,
            )
        })
        .collect()
}

/// A TCP port on loopback with nothing listening (bound, then closed).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Random bytes shaped like a KMS ciphertext: KMS refuses them (`undecryptable`).
pub fn junk_ciphertext() -> Vec<u8> {
    let mut v = vec![0u8; 180];
    aws_lc_rs::rand::fill(&mut v).unwrap();
    v
}
