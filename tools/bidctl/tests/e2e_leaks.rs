//! The leak search: a full sealed auction (manifest, every buyer's seal) with distinctive
//! amounts, every byte between parent and enclave captured by a relay, the KMS emulator run as
//! a process with its request log on; then every log line, frame and file the run produced is
//! searched for the amounts, the secret access keys and the session token, and the enclave's
//! frames are checked to hold nothing of the result before close.

#[path = "../../test-support/support/mod.rs"]
mod support;

use bidding_core::credentials::Secret;
use bidding_standins::kms_emulator::{self, Principal};
use bidding_standins::stack::StackOptions;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use support::*;

type Capture = Arc<Mutex<Vec<u8>>>;

/// Forwards one connection from `listen` to `target`, keeping a copy of each direction.
fn relay(listen: PathBuf, target: PathBuf) -> (Capture, Capture) {
    let to_enclave = Arc::new(Mutex::new(Vec::new()));
    let to_parent = Arc::new(Mutex::new(Vec::new()));
    let listener = UnixListener::bind(&listen).unwrap();
    let (a, b) = (to_enclave.clone(), to_parent.clone());
    std::thread::spawn(move || {
        let (parent, _) = listener.accept().unwrap();
        let enclave = UnixStream::connect(&target).unwrap();
        let pipe = |mut from: UnixStream, mut to: UnixStream, log: Arc<Mutex<Vec<u8>>>| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                loop {
                    match from.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = to.shutdown(std::net::Shutdown::Write);
                            return;
                        }
                        Ok(n) => {
                            log.lock().unwrap().extend_from_slice(&buf[..n]);
                            if to.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            })
        };
        let t1 = pipe(parent.try_clone().unwrap(), enclave.try_clone().unwrap(), a);
        let t2 = pipe(enclave, parent, b);
        let _ = (t1.join(), t2.join());
    });
    (to_enclave, to_parent)
}

/// Splits a captured stream into its frames' payloads (4-byte big-endian length, then bytes).
fn frames(mut stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !stream.is_empty() {
        let len = u32::from_be_bytes(stream[..4].try_into().unwrap()) as usize;
        out.push(&stream[4..4 + len]);
        stream = &stream[4 + len..];
    }
    out
}

/// Nothing of the result leaves before close: every frame the enclave sent before its answer
/// to the close request is a hello, credentials, auction-opened, seal or chunk
/// acknowledgement; the result chunks and `closed` answer the close request and come last.
fn check_nothing_before_close(to_enclave: &[u8], to_parent: &[u8], manifest: &[u8]) {
    use bidding_core::wire::message::{Request, Response, decode_request, decode_response};
    let requests: Vec<_> = frames(to_enclave)
        .into_iter()
        .enumerate()
        .map(|(i, f)| decode_request(i as u64, f).unwrap())
        .collect();
    // The auction the enclave opened is exactly the manifest the buyers sealed.
    assert!(
        requests
            .iter()
            .any(|r| matches!(&r.msg, Request::OpenSealed(o) if o.manifest == manifest)),
        "the parent opened the sealed manifest"
    );
    let close = requests
        .iter()
        .find(|r| matches!(r.msg, Request::Close(..)))
        .expect("the parent closed the auction")
        .id;
    let responses: Vec<_> = frames(to_parent)
        .into_iter()
        .enumerate()
        .map(|(i, f)| decode_response(i as u64, f).unwrap())
        .collect();
    let first_result = responses
        .iter()
        .position(|r| matches!(r.msg, Response::ResultChunk(_) | Response::Closed(_)))
        .expect("a result");
    for r in &responses[..first_result] {
        assert!(
            matches!(
                r.msg,
                Response::Hello(_)
                    | Response::Credentials(_)
                    | Response::AuctionOpened(_)
                    | Response::SealAccepted(_)
                    | Response::ChunkAccepted(_)
            ),
            "before close: {:?}",
            r.msg
        );
    }
    for r in &responses[first_result..] {
        assert!(
            matches!(r.msg, Response::ResultChunk(_) | Response::Closed(_)),
            "{:?}",
            r.msg
        );
        assert_eq!(r.id, Some(close), "the result answers the close request");
    }
    assert!(matches!(responses.last().unwrap().msg, Response::Closed(_)));
    let seals = responses
        .iter()
        .filter(|r| matches!(r.msg, Response::SealAccepted(_)))
        .count();
    assert_eq!(seals, 3, "every buyer's seal opened");
}

#[test]
fn no_amount_or_credential_leaves_the_enclave() {
    let opts = StackOptions {
        kms_process: Some(exe()),
        kms_log: true,
        ..StackOptions::default()
    };
    let w = world(&["Buyer1", "Buyer2", "Buyer3"], opts);
    // Distinctive amounts, none of whose digit strings occurs by accident elsewhere.
    let amounts: [[&str; 3]; 4] = [
        ["7314159.26", "6271828.18", "7314159.26"],
        ["5161803.39", "4141421.35", "3173205.08"],
        ["2236067.97", "9264575.13", "8302775.64"],
        ["1414213.56", "1732050.81", "1618033.99"],
    ];
    for (b, buyer) in ["Buyer1", "Buyer2", "Buyer3"].into_iter().enumerate() {
        let bids: Vec<Bid> = (0..4).map(|lot| bid(lot + 1, amounts[lot][b])).collect();
        upload(&w, buyer, &csv(&seal(&w, buyer, "leaks", &bids)));
    }

    // The parent runs with temporary credentials (with a session token), known to KMS and S3.
    let (key_id, secret, token) = (
        "ASIALEAKCHECK0000001",
        "leak-check-secret-Zq8vY2xWq1rT5uK9pL3mN7bV",
        "leak-check-session-token-Hd72kPq9Zx",
    );
    kms_emulator::state::add_principal(
        &w.dir.path().join("kms"),
        Principal {
            access_key_id: key_id.into(),
            secret_access_key: Secret::new(secret),
            session_token: Some(Secret::new(token)),
            expiration: None,
            arn: "arn:aws:sts::111122223333:assumed-role/bidding-parent/i-0leaks".into(),
        },
    )
    .unwrap();
    w.stack.s3.add_key(key_id, secret);

    let enclave = w.stack.start_enclave(&exe(), "enclave-leaks", &[]).unwrap();
    let relay_sock = w.dir.path().join("relay.sock");
    let bidding_core::endpoint::Endpoint::Unix(target) = &enclave.endpoint else {
        unreachable!()
    };
    let (to_enclave, to_parent) = relay(relay_sock.clone(), PathBuf::from(target));
    let config = w.dir.path().join("leaks.toml");
    let relay_endpoint = bidding_core::endpoint::Endpoint::Unix(relay_sock.display().to_string());
    std::fs::write(
        &config,
        w.stack.parent_config(
            &bidding_core::names::AuctionId::new("leaks").unwrap(),
            &relay_endpoint,
            "none",
            false,
        ),
    )
    .unwrap();
    // The seal round, with the operator's and buyers' own credentials.
    let manifest = seal_round(&w, &config);
    let out = Command::new(exe())
        .arg("__parent")
        .arg("--config")
        .arg(&config)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_SESSION_TOKEN", token)
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    let parent_log = [out.stdout, out.stderr].concat();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&parent_log)
    );
    assert_eq!(
        String::from_utf8(w.stack.fetch_output("output.csv").unwrap()).unwrap(),
        "Property,Result\n1,\"Tie: Buyer1, Buyer3\"\n2,Buyer1 Wins\n3,Buyer2 Wins\n4,Buyer2 Wins\n"
    );
    drop(enclave);

    let to_enclave = to_enclave.lock().unwrap().clone();
    let to_parent = to_parent.lock().unwrap().clone();
    assert!(
        to_parent.len() > 1000 && to_enclave.len() > 1000,
        "the relay saw the session"
    );
    let kms_log = std::fs::read(w.stack.kms.log().unwrap()).unwrap();
    assert!(contains(&kms_log, "Decrypt"), "the emulator's log is on");

    let secrets: Vec<String> = std::iter::once(secret.to_owned())
        .chain(std::iter::once(token.to_owned()))
        .chain(std::iter::once(
            w.stack.operator.secret_access_key.expose().to_owned(),
        ))
        .chain(
            w.stack
                .buyers
                .iter()
                .map(|b| b.credentials.secret_access_key.expose().to_owned()),
        )
        .collect();
    let mut amount_forms = Vec::new();
    for a in amounts.iter().flatten() {
        amount_forms.push(a.to_string());
        amount_forms.push(a.replace('.', "")); // as an integer of cents
    }
    check_nothing_before_close(&to_enclave, &to_parent, &manifest);

    // What the enclave sent and logged, and what the parent logged: no amount, no secret.
    let sources: Vec<(String, Vec<u8>)> = vec![
        ("enclave→parent frames".into(), to_parent),
        (
            "enclave log".into(),
            std::fs::read(w.dir.path().join("enclave-leaks.log")).unwrap(),
        ),
        ("parent log".into(), parent_log),
        ("KMS emulator log".into(), kms_log),
    ];
    for (name, bytes) in &sources {
        for a in &amount_forms {
            assert!(!contains(bytes, a), "amount {a} in {name}");
        }
        for s in &secrets {
            assert!(!contains(bytes, s), "a secret in {name}");
        }
    }
    // The parent→enclave stream carries the credentials by design, but never an amount.
    for a in &amount_forms {
        assert!(
            !contains(&to_enclave, a),
            "amount {a} sent to the enclave in the clear"
        );
    }
    // Every file the run left: S3's objects (bids, outputs), KMS state, logs, configuration.
    // principals.json is the emulator's credential store (IAM's stand-in), set up by the test.
    let files = all_files(w.dir.path());
    assert!(files.len() > 10);
    for (path, bytes) in &files {
        for a in &amount_forms {
            assert!(!contains(bytes, a), "amount {a} in {}", path.display());
        }
        if path.file_name().is_some_and(|n| n == "principals.json") {
            continue;
        }
        for s in &secrets {
            assert!(!contains(bytes, s), "a secret in {}", path.display());
        }
    }
}
