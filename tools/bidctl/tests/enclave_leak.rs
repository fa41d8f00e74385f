//! No amount, secret access key or session token leaves the enclave. Sealed and unsealed
//! auctions with distinctive amounts (winner, tie, invalid amount, wrong context, wrong key, a
//! padded amount, an unsealed replay, a malformed credentials frame carrying the secrets,
//! credentials KMS refuses) run through a dev enclave and a KMS emulator run as its own
//! process; then every frame the enclave sent (decoded: the result's chunks are base64 on the
//! wire), its whole log and the emulator's whole log are searched for each amount (as written,
//! without its padding, its integer digits — which also covers the digits-only, padded and
//! minor-unit forms — in hex and in base64) and for the secrets. With `reveal = none` no amount
//! may appear anywhere; with `winning-bid` the winning prices may appear only in the result
//! released at close — and must appear there, which shows the search finds what is present.

#[path = "../../test-support/harness/mod.rs"]
mod harness;

use base64::Engine;
use bidding_client::kms_client::KmsClient;
use bidding_core::amount::Amount;
use bidding_core::auction::RevealPolicy;
use bidding_core::config::{self, AuctionConfig, BuyerSpec, Mode};
use bidding_core::credentials::{Credentials, Secret};
use bidding_core::manifest::{FileEntry, FileFormat, Manifest};
use bidding_core::names::{AuctionId, BuyerName, KeyArn, Region};
use bidding_core::wire::{ErrorCode, FrameDecoder, Request, Response, Seal, decode_response};
use bidding_standins::kms_emulator::{Principal, state};
use bidding_standins::stack::{OPERATOR_ROLE, buyer_key_policy, dev_pcr0};
use harness::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ACCOUNT: &str = "111122223333";
const SECRET: &str = "LeakCheck/Secret/Key/q8Zr2Vw5Tn1Xy4Kp7Hs0";
const TOKEN: &str = "FwoGZXIvYXdzELEAKCHECK//session+token/Uq3Jd8Mv6Rb9Wc2Ye5Gt";
const WRONG_SECRET: &str = "LeakCheck/Wrong/Secret/m3Nb6Vc9Xz2Lk5Jh8Gf1";

/// `bidctl kms-emulator` as a child process, its log (stderr) in a file; killed on drop.
struct EmulatorProcess {
    child: Child,
    log: PathBuf,
    addr: String,
}

impl EmulatorProcess {
    fn start(state_dir: &Path, root_pem: &Path, log: &Path) -> EmulatorProcess {
        let child = Command::new(EXE)
            .args(["kms-emulator", "--listen", "127.0.0.1:0", "--state"])
            .arg(state_dir)
            .arg("--attestation-root")
            .arg(root_pem)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("starting bidctl kms-emulator");
        let mut emu = EmulatorProcess {
            child,
            log: log.to_owned(),
            addr: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(rest) = text.split(" on https://").nth(1) {
                emu.addr = rest.split_whitespace().next().unwrap().to_owned();
                return emu;
            }
            if let Some(status) = emu.child.try_wait().unwrap() {
                panic!("the KMS emulator exited ({status}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "the KMS emulator did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn credentials(id: &str, secret: &str, token: Option<&str>) -> Credentials {
    Credentials {
        access_key_id: id.into(),
        secret_access_key: Secret::new(secret),
        session_token: token.map(Secret::new),
        expiration: None,
        region: Region::new("us-east-1").unwrap(),
    }
}

fn add_principal(dir: &Path, c: &Credentials, arn: String) {
    state::add_principal(
        dir,
        Principal {
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.clone(),
            session_token: c.session_token.clone(),
            expiration: None,
            arn,
        },
    )
    .unwrap();
}

/// Every way an amount could show up in text we control.
fn forms(amount: &str) -> Vec<String> {
    let written = amount.trim();
    let unpadded = written.trim_start_matches('0');
    let integer = unpadded.split('.').next().unwrap();
    assert!(integer.len() >= 7, "{amount} is not distinctive enough");
    let mut forms = vec![
        written.to_owned(),
        unpadded.to_owned(),
        integer.to_owned(),
        unpadded.replace('.', ""),
        hex::encode(written),
        hex::encode(unpadded),
        base64::engine::general_purpose::STANDARD.encode(written),
        base64::engine::general_purpose::STANDARD.encode(unpadded),
    ];
    forms.sort();
    forms.dedup();
    forms
}

/// What to look for: (needle, what it is).
type Needles = Vec<(String, String)>;

fn amount_needles(amounts: &[&str]) -> Needles {
    amounts
        .iter()
        .flat_map(|a| {
            forms(a)
                .into_iter()
                .map(move |f| (f, format!("the amount {a:?}")))
        })
        .collect()
}

/// Panics if `text` (called `what`) holds any needle.
#[track_caller]
fn assert_clean(what: &str, text: &str, needles: &Needles) {
    for (needle, kind) in needles {
        assert!(
            !text.contains(needle.as_str()),
            "{what} contains {kind} ({needle}):\n{text}"
        );
    }
}

/// What a session's parent received, decoded.
#[derive(Default)]
struct Capture {
    /// Every frame but the result's chunks: its JSON as sent, plus its attestation document
    /// (base64 on the wire) as text.
    frames: String,
    /// The result released at close: output.csv then output.json, decoded from the chunks.
    result: String,
    /// Kinds of the frames, in order.
    kinds: Vec<&'static str>,
}

impl Capture {
    fn of(received: &[u8]) -> Capture {
        let mut decoder = FrameDecoder::new(64 << 20);
        let mut input = received;
        let mut c = Capture::default();
        let (mut csv, mut json) = (Vec::new(), Vec::new());
        let mut n = 0;
        while let Some(frame) = decoder.decode(&mut input).unwrap() {
            n += 1;
            let msg = decode_response(n, &frame).unwrap().msg;
            c.kinds.push(kind(&msg));
            match msg {
                Response::ResultChunk(r) => match r.file {
                    bidding_core::wire::OutputFile::Csv => csv.extend(r.data),
                    bidding_core::wire::OutputFile::Json => json.extend(r.data),
                },
                other => {
                    c.frames.push_str(&String::from_utf8_lossy(&frame));
                    c.frames.push('\n');
                    let doc = match &other {
                        Response::Hello(h) => Some(&h.attestation),
                        Response::Closed(closed) => Some(&closed.attestation),
                        _ => None,
                    };
                    if let Some(doc) = doc {
                        c.frames.push_str(&String::from_utf8_lossy(doc));
                        c.frames.push('\n');
                    }
                }
            }
        }
        assert!(decoder.is_idle(), "a partial frame");
        c.result = format!(
            "{}{}",
            String::from_utf8(csv).unwrap(),
            String::from_utf8(json).unwrap()
        );
        c
    }
}

fn kind(msg: &Response) -> &'static str {
    match msg {
        Response::Hello(_) => "hello",
        Response::Credentials(_) => "credentials",
        Response::AuctionOpened(_) => "auction_opened",
        Response::SealAccepted(_) => "seal_accepted",
        Response::ChunkAccepted(_) => "chunk_accepted",
        Response::ResultChunk(_) => "result_chunk",
        Response::Closed(_) => "closed",
        Response::Error(_) => "error",
    }
}

/// The result leaves only at close: result chunks come only right before `closed`, at the end.
#[track_caller]
fn assert_result_only_at_close(c: &Capture) {
    let first = c
        .kinds
        .iter()
        .position(|k| matches!(*k, "result_chunk" | "closed"))
        .unwrap_or(c.kinds.len());
    if let Some((last, chunks)) = c.kinds[first..].split_last() {
        assert_eq!(*last, "closed", "{:?}", c.kinds);
        assert!(chunks.iter().all(|k| *k == "result_chunk"), "{:?}", c.kinds);
    }
}

/// The enclave, the emulator and three buyers with their own keys and credentials.
struct Setup {
    emu: EmulatorProcess,
    enclave: Enclave,
    root_der: Vec<u8>,
    pcr0: [u8; 48],
    operator: Credentials,
    specs: Vec<BuyerSpec>,
    sealer: Sealer,
    rules: Mode,
    sessions: std::cell::Cell<usize>,
    // Dropped last, after the processes (fields drop in declaration order).
    _tmp: tempfile::TempDir,
}

const BUYERS: [&str; 3] = ["Buyer1", "Buyer2", "Buyer3"];

impl Setup {
    /// A KMS emulator process and a dev enclave of rule set `rules`, whose PCR0 the buyers'
    /// keys trust.
    fn start(rules: Mode) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let nsm_dir = dir.join("nsm");
        let root_der = enclave_init::soft_nsm::dev_root_der(&nsm_dir).unwrap();
        let root_pem = nsm_dir.join("root.pem");
        let pcr0 = dev_pcr0(&exe(), rules).unwrap();

        // The operator's temporary credentials (with a session token) and three buyers.
        let kms_dir = dir.join("kms");
        let operator = credentials("ASIALEAKCHECK0000001", SECRET, Some(TOKEN));
        add_principal(
            &kms_dir,
            &operator,
            format!("arn:aws:sts::{ACCOUNT}:assumed-role/bidding-parent/i-0leakcheck"),
        );
        assert!(OPERATOR_ROLE.ends_with(":role/bidding-parent"));
        let buyer_creds: Vec<Credentials> = (0..BUYERS.len())
            .map(|i| {
                credentials(
                    &format!("AKIALEAKCHECKBUYER0{i}"),
                    &format!("buyer-{i}-secret-0000000000000000000000000"),
                    None,
                )
            })
            .collect();
        for (name, c) in BUYERS.iter().zip(&buyer_creds) {
            add_principal(&kms_dir, c, format!("arn:aws:iam::{ACCOUNT}:user/{name}"));
        }
        let emu = EmulatorProcess::start(&kms_dir, &root_pem, &dir.join("kms.log"));
        let endpoint = format!("https://{}", emu.addr);
        let ca = std::fs::read(kms_dir.join("ca.pem")).unwrap();
        let mut specs = Vec::new();
        let mut clients = Vec::new();
        for (name, c) in BUYERS.iter().zip(&buyer_creds) {
            let client = KmsClient::new(c.clone(), Some(endpoint.clone()), Some(&ca)).unwrap();
            let arn = format!("arn:aws:iam::{ACCOUNT}:user/{name}");
            let key = client
                .create_key("bids", Some(buyer_key_policy(&arn, &pcr0)))
                .unwrap()
                .arn;
            let name = BuyerName::new(*name).unwrap();
            specs.push(BuyerSpec {
                name: name.clone(),
                key_arn: KeyArn::new(key.clone()).unwrap(),
            });
            clients.push((name, key, client));
        }
        let enclave = Enclave::start(
            &dir,
            "enclave",
            &nsm_dir,
            &format!("tcp:{}", emu.addr),
            Some(&kms_dir.join("ca.pem")),
            &["--rules", &rules.to_string()],
        );
        let mut sealer = Sealer::new(clients);
        sealer.rules = rules;
        Setup {
            emu,
            enclave,
            root_der,
            pcr0,
            operator,
            specs,
            sealer,
            rules,
            sessions: std::cell::Cell::new(0),
            _tmp: tmp,
        }
    }

    fn config(&self, auction: &str, reveal: RevealPolicy) -> AuctionConfig {
        AuctionConfig::new(
            AuctionId::new(auction).unwrap(),
            self.specs.clone(),
            reveal,
            false,
        )
        .unwrap()
    }

    /// The canonical manifest of `config` over these files.
    fn manifest(&self, config: &AuctionConfig, files: &[Vec<u8>]) -> Vec<u8> {
        let entries = config
            .buyers()
            .iter()
            .zip(files)
            .map(|(b, f)| FileEntry {
                buyer: b.name.clone(),
                bucket: format!("leak-{}", b.name.as_str().to_lowercase()),
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

    fn seals(&self, manifest: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
        BUYERS
            .iter()
            .map(|b| (*b, self.sealer.seal_manifest(b, manifest)))
            .collect()
    }

    /// Every buyer's file: (lot, ciphertext) rows.
    fn file(&self, rows: &[(&str, Vec<u8>)]) -> Vec<u8> {
        bid_file(rows)
    }

    fn parent(&self) -> Parent {
        Parent::new(
            Client::connect(&self.enclave),
            self.root_der.clone(),
            self.pcr0,
        )
        .with_rules(self.rules)
    }

    /// Waits for the session to end; returns what its parent received.
    fn done(&self, p: Parent) -> Capture {
        let _ = p.client.stream.shutdown(std::net::Shutdown::Both);
        self.sessions.set(self.sessions.get() + 1);
        self.enclave.wait_sessions_ended(self.sessions.get());
        let c = Capture::of(&p.client.received);
        assert_result_only_at_close(&c);
        c
    }
}

fn set_aside(json: &Value) -> &Value {
    &json["set_aside"]
}

#[test]
fn nothing_secret_leaves_the_enclave() {
    let sealed = Setup::start(Mode::Sealed);
    let s = &sealed;
    let sealer = &s.sealer;
    let mut captures: Vec<(String, Capture)> = Vec::new();

    // 1. Sealed, reveal none: a winner, a tie, and one lot of bids set aside for every
    // reason a buyer can cause (an amount with three decimals, a ciphertext made for another
    // lot, one made for another auction); Buyer3's last bid padded as `bidctl encrypt` pads
    // it.
    let a = "leak-sealed";
    let config = s.config(a, RevealPolicy::None);
    let padded = Amount::parse(b"3828427.12").unwrap().to_padded();
    let files = vec![
        s.file(&[
            ("1", sealer.seal("Buyer1", "7314159.26", a, "1")),
            ("2", sealer.seal("Buyer1", "5772156.64", a, "2")),
            ("3", sealer.seal("Buyer1", "9988776.655", a, "3")),
        ]),
        s.file(&[
            ("1", sealer.seal("Buyer2", "8271828", a, "1")),
            ("2", sealer.seal("Buyer2", " 5772156.64\n", a, "2")),
            ("3", sealer.seal("Buyer2", "5551212.34", a, "4")),
        ]),
        s.file(&[
            ("1", sealer.seal("Buyer3", "6626070.15", a, "1")),
            ("3", sealer.seal("Buyer3", "4242424.24", "leak-other", "3")),
            ("4", sealer.seal("Buyer3", &padded, a, "4")),
        ]),
    ];
    let manifest = s.manifest(&config, &files);
    let seals = s.seals(&manifest);
    let mut p = s.parent();
    p.hello();
    // A malformed credentials frame with both secrets as values: refused, and its error
    // message must not quote them.
    let id = p.next_id;
    p.next_id += 1;
    let bad = format!(
        r#"{{"id":{id},"msg":{{"credentials":{{"access_key_id":"{}","secret_access_key":"{SECRET}","session_token":"{TOKEN}","region":"us-east-1","expiration":"{TOKEN}","note":"{SECRET}"}}}}}}"#,
        s.operator.access_key_id
    );
    p.client.send_bytes(&Client::raw_frame(bad.as_bytes()));
    p.client
        .expect_error(Some(id), ErrorCode::MalformedFrame, false);
    p.credentials(&s.operator);
    p.open_sealed(&manifest);
    for (b, seal) in &seals {
        match p.call(Request::Seal(Seal {
            buyer: BuyerName::new(*b).unwrap(),
            ciphertext: seal.clone(),
        })) {
            Response::SealAccepted(_) => {}
            other => panic!("seal of {b}: {other:?}"),
        }
    }
    for (b, f) in BUYERS.iter().zip(&files) {
        p.send_file(b, f);
    }
    let (csv, json) = p.close(Mode::Sealed, &manifest);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result\n1,Buyer2 Wins\n2,\"Tie: Buyer1, Buyer2\"\n3,No valid bids\n4,Buyer3 Wins\n"
    );
    let json: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        set_aside(&json),
        &json!([
            {"buyer": "Buyer1", "reason": "invalid_amount", "count": 1,
                "lots": {"first": ["3"], "more": 0}},
            {"buyer": "Buyer2", "reason": "undecryptable", "count": 1,
                "lots": {"first": ["3"], "more": 0}},
            {"buyer": "Buyer3", "reason": "undecryptable", "count": 1,
                "lots": {"first": ["3"], "more": 0}},
        ])
    );
    captures.push(("the sealed auction".into(), s.done(p)));

    // 2. Unsealed (the unsealed image, with keys of its own), reveal none: a winner, an
    // invalid amount, a bid under another buyer's key.
    let unsealed = Setup::start(Mode::Unsealed);
    let s = &unsealed;
    let sealer = &s.sealer;
    let u = "leak-unsealed";
    let uconfig = s.config(u, RevealPolicy::None);
    let ufiles = vec![
        s.file(&[
            ("1", sealer.seal("Buyer1", "6180339.88", u, "1")),
            ("2", sealer.seal("Buyer1", "1414213.56x", u, "2")),
        ]),
        s.file(&[
            ("1", sealer.seal("Buyer2", "2718281.82", u, "1")),
            (
                "2",
                sealer.seal_as("Buyer3", "1732050.80", u, "2", "Buyer2"),
            ),
        ]),
        s.file(&[("1", sealer.seal("Buyer3", "1618033.98", u, "1"))]),
    ];
    let mut p = s.parent();
    let (csv, json) = p.run_unsealed(&s.operator, &uconfig, &ufiles);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result\n1,Buyer1 Wins\n2,No valid bids\n"
    );
    let json: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        set_aside(&json),
        &json!([
            {"buyer": "Buyer1", "reason": "invalid_amount", "count": 1,
                "lots": {"first": ["2"], "more": 0}},
            {"buyer": "Buyer2", "reason": "wrong_key", "count": 1,
                "lots": {"first": ["2"], "more": 0}},
        ])
    );
    captures.push(("the unsealed auction".into(), s.done(p)));

    // 3. The unsealed auction's winning file replayed in the same boot: refused, by name only.
    let mut p = s.parent();
    p.start(&s.operator, &uconfig);
    let id = p.send(file_chunk("Buyer1", ufiles[0].clone(), true));
    p.client
        .expect_error(Some(id), ErrorCode::ReplayedCiphertext, true);
    p.client.expect_eof();
    captures.push(("the unsealed replay".into(), s.done(p)));

    // 4. Credentials KMS refuses (the right key id and token, a wrong secret), sealed and
    // unsealed: the error that ends each session passes on KMS's words, which must not carry
    // a secret.
    let wrong = credentials(&s.operator.access_key_id, WRONG_SECRET, Some(TOKEN));
    let s = &sealed;
    let mut p = s.parent();
    p.hello();
    p.credentials(&wrong);
    p.open_sealed(&manifest);
    let id = p.send(Request::Seal(Seal {
        buyer: BuyerName::new("Buyer1").unwrap(),
        ciphertext: seals[0].1.clone(),
    }));
    let m = p
        .client
        .expect_error(Some(id), ErrorCode::KmsCredentials, true);
    assert!(m.contains("InvalidSignatureException"), "{m}");
    p.client.expect_eof();
    captures.push((
        "the sealed auction with refused credentials".into(),
        s.done(p),
    ));
    let w = "leak-wrong-credentials";
    let s = &unsealed;
    let mut p = s.parent();
    p.hello();
    p.credentials(&wrong);
    p.open_unsealed(&s.config(w, RevealPolicy::None));
    let chunk_id = p.send(file_chunk(
        "Buyer1",
        s.file(&[("5", sealer.seal("Buyer1", "3141592.65", w, "5"))]),
        true,
    ));
    // (The error answers the file's last chunk, or no request in particular.)
    let (id, e) = p.client.recv_error();
    assert!(id.is_none() || id == Some(chunk_id), "{id:?}");
    assert_eq!(
        (e.code, e.fatal),
        (ErrorCode::KmsCredentials, true),
        "{e:?}"
    );
    assert!(e.message.contains("InvalidSignatureException"), "{e:?}");
    p.client.expect_eof();
    captures.push((
        "the unsealed auction with refused credentials".into(),
        s.done(p),
    ));

    // 5. Sealed, reveal winning-bid: the winning prices (a winner's, a tie's) are released —
    // only in the result, at close; the losing amounts never.
    let s = &sealed;
    let sealer = &s.sealer;
    let v = "leak-winning";
    let vconfig = s.config(v, RevealPolicy::WinningBid);
    let vfiles = vec![
        s.file(&[
            ("1", sealer.seal("Buyer1", "4669201.60", v, "1")),
            ("2", sealer.seal("Buyer1", "2502907.87", v, "2")),
        ]),
        s.file(&[
            ("1", sealer.seal("Buyer2", "7071067.81", v, "1")),
            ("2", sealer.seal("Buyer2", "2502907.87", v, "2")),
        ]),
        s.file(&[
            ("1", sealer.seal("Buyer3", "3359885.66", v, "1")),
            ("2", sealer.seal("Buyer3", "1202056.90", v, "2")),
        ]),
    ];
    let vmanifest = s.manifest(&vconfig, &vfiles);
    let mut p = s.parent();
    p.start_sealed(&s.operator, &vmanifest, &s.seals(&vmanifest));
    for (b, f) in BUYERS.iter().zip(&vfiles) {
        p.send_file(b, f);
    }
    let (csv, _) = p.close(Mode::Sealed, &vmanifest);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result,Price\n1,Buyer2 Wins,7071067.81\n2,\"Tie: Buyer1, Buyer2\",2502907.87\n"
    );
    let winning = s.done(p);

    let enclave_log = sealed.enclave.log_text() + &unsealed.enclave.log_text();
    let kms_log = std::fs::read_to_string(&sealed.emu.log).unwrap()
        + &std::fs::read_to_string(&unsealed.emu.log).unwrap();
    // The captures are real: the frames, the sessions and the enclave's Decrypt calls (seals
    // and bids) are in them.
    assert!(captures[0].1.frames.contains(r#""closed""#));
    assert!(captures[0].1.frames.contains(r#""seal_accepted""#));
    assert!(captures[0].1.result.contains("Buyer2 Wins"));
    assert!(enclave_log.contains("session ended"), "{enclave_log}");
    assert!(
        kms_log.contains(
            "Decrypt by arn:aws:sts::111122223333:assumed-role/bidding-parent/i-0leakcheck -> 200"
        ),
        "{kms_log}"
    );
    let mut secrets: Needles = vec![
        (SECRET.to_owned(), "the secret access key".to_owned()),
        (TOKEN.to_owned(), "the session token".to_owned()),
        (
            WRONG_SECRET.to_owned(),
            "a (wrong) secret access key".to_owned(),
        ),
    ];
    for i in 0..BUYERS.len() {
        secrets.push((
            format!("buyer-{i}-secret-0000000000000000000000000"),
            format!("buyer {i}'s secret key"),
        ));
    }
    let never = amount_needles(&[
        "7314159.26",
        "8271828",
        "6626070.15",
        "5772156.64",
        "9988776.655",
        "5551212.34",
        "4242424.24",
        &padded,
        "6180339.88",
        "1414213.56x",
        "2718281.82",
        "1732050.80",
        "1618033.98",
        "3141592.65",
        "4669201.60",
        "3359885.66",
        "1202056.90",
    ]);
    let winning_prices = amount_needles(&["7071067.81", "2502907.87"]);
    let everything: Needles = [secrets.clone(), never.clone(), winning_prices.clone()].concat();
    for (session, c) in &captures {
        assert_clean(&format!("the frames of {session}"), &c.frames, &everything);
        assert_clean(&format!("the result of {session}"), &c.result, &everything);
    }
    assert_clean("the enclave's log", &enclave_log, &everything);
    assert_clean("the KMS emulator's log", &kms_log, &everything);
    // Winning-bid: nothing but the result holds a price, and the result holds no other amount.
    assert_clean(
        "the frames of the winning-bid auction",
        &winning.frames,
        &everything,
    );
    let others: Needles = [secrets, never].concat();
    assert_clean("the winning-bid result", &winning.result, &others);
    // The control: the search finds the prices where they are, in the decoded result (and
    // only there: on the wire they are inside base64).
    for price in ["7071067.81", "2502907.87"] {
        assert!(
            winning.result.contains(price),
            "the released result lacks the winning price {price}:\n{}",
            winning.result
        );
        let found = std::panic::catch_unwind(|| {
            assert_clean(
                "the winning-bid result",
                &winning.result,
                &amount_needles(&[price]),
            )
        });
        assert!(found.is_err(), "the search missed {price}");
    }
    println!(
        "searched {} sessions' frames and results, {} bytes of enclave log, {} bytes of KMS log",
        captures.len() + 1,
        enclave_log.len(),
        kms_log.len()
    );
}

/// The search itself can fail: every form of an amount planted in text is found.
#[test]
fn the_search_finds_every_form_of_an_amount() {
    for amount in ["7314159.26", " 000000000008271828.00\n", "9988776.655"] {
        let needles = amount_needles(&[amount]);
        for (form, _) in &needles {
            let text = format!("frame 7: {{\"message\":\"x{form}y\"}}");
            let found = std::panic::catch_unwind(|| assert_clean("planted", &text, &needles));
            assert!(found.is_err(), "{form} of {amount:?} not found");
        }
    }
    let needles = amount_needles(&["8271828"]);
    // The integer digits are found inside the padded, the minor-unit and the decimal forms.
    for text in ["000000000008271828.00", "827182800", "8271828.5"] {
        assert!(std::panic::catch_unwind(|| assert_clean("planted", text, &needles)).is_err());
    }
    assert_clean("unrelated", "8271827 and 827-1828 and 82718 28", &needles);
}
