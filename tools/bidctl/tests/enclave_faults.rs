//! KMS misbehaving under a dev enclave, in protocol 2 (sealed auctions: manifest, seals, whole
//! files, the result only at close).
//!
//! - Throttling storms, 500s and connections reset in the middle of an answer are retried
//!   within the deadline: the sealed auction completes with the right result.
//! - Whatever the operator could cause ends the auction with one fatal error frame and
//!   releases nothing (no result chunk, no `closed`): KMS failing or throttling for longer
//!   than the deadline (`kms_unavailable`), a proxy that refuses connections from the start or
//!   from the middle of the auction on (`kms_unavailable`), a KMS certificate for the wrong
//!   host name (`kms_failure`, at once, never retried), AccessDenied because the key policy
//!   names another enclave measurement or no longer lets the operator's role Decrypt
//!   (`kms_access_denied`, never a set-aside), and a key disabled after sealing
//!   (`key_unavailable`).
//!
//! In a sealed auction every seal is opened with KMS before any bid, so a KMS that fails from
//! the start fails there, at a seal; the failures at the bids are exercised by changing
//! things once every seal is accepted (cutting the proxy, the key policy, disabling the key)
//! and in unsealed auctions. Protocol 1 named the failing lot request; a bid's fatal error
//! now names no request (or the file's last chunk), and the test accepts either.

#[path = "../../test-support/harness/mod.rs"]
mod harness;

use bidding_core::auction::RevealPolicy;
use bidding_core::config::{AuctionConfig, Mode};
use bidding_core::names::BuyerName;
use bidding_core::output::OutputHeader;
use bidding_core::wire::{ErrorCode, FromEnclave, Request, Response, Seal};
use bidding_standins::kms_emulator::{self, FaultRule, faults::Faults};
use bidding_standins::stack::{self, StackOptions};
use harness::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BUYERS: &[&str] = &["Buyer1", "Buyer2", "Buyer3"];

/// Four lots of three bids; the outcomes are known.
const PLAN: [(&str, [&str; 3]); 4] = [
    ("1", ["100", "250", "249.99"]),
    ("2", ["3", "3.00", "1"]),
    ("3", ["1e3", "0", "0.01"]),
    ("4", ["12", "abc", "11"]),
];
const BIDS: usize = 12;
/// Decrypt calls of a sealed auction of [`PLAN`]: one per seal, at least one per bid.
const CALLS: usize = BIDS + 3;

/// How many of the first `requests` Decrypt calls a seeded emulator faults. A sealed auction
/// of [`PLAN`] makes at least [`CALLS`] Decrypt calls, so it met at least this many faults.
fn faults_among_first(rule: &FaultRule, seed: u64, requests: usize) -> usize {
    let f = Faults::new(vec![rule.clone()], seed);
    (0..requests)
        .filter(|_| f.decide("Decrypt").fault.is_some())
        .count()
}

fn faulty_world(rule: &str, seed: u64, min_faults: usize) -> World {
    faulty_world_of(rule, seed, min_faults, StackOptions::default())
}

/// [`faulty_world`] for the rule set `base` says (the unsealed image's world, say).
fn faulty_world_of(rule: &str, seed: u64, min_faults: usize, base: StackOptions) -> World {
    let rule: FaultRule = rule.parse().unwrap();
    let n = faults_among_first(&rule, seed, CALLS);
    assert!(
        n >= min_faults,
        "seed {seed} faults only {n} of the first {CALLS} calls under {rule}"
    );
    println!("{rule} with seed {seed}: at least {n} of {CALLS} first Decrypt calls faulted");
    World::start(
        BUYERS,
        StackOptions {
            kms_faults: vec![rule],
            kms_fault_seed: Some(seed),
            kms_log: false,
            ..base
        },
    )
}

/// Each buyer's bid file for [`PLAN`] in auction `a`, in the buyers' order.
fn plan_files(world: &World, a: &str) -> Vec<Vec<u8>> {
    let sealer = world.sealer();
    BUYERS
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let rows: Vec<(&str, Vec<u8>)> = PLAN
                .iter()
                .map(|(l, amounts)| (*l, sealer.seal(b, amounts[i], a, l)))
                .collect();
            bid_file(&rows)
        })
        .collect()
}

/// A sealed auction ready to run: terms, files, manifest, every buyer's seal.
struct Sealed {
    files: Vec<Vec<u8>>,
    manifest: Vec<u8>,
    seals: Vec<(&'static str, Vec<u8>)>,
}

fn sealed(world: &World, a: &str, reveal: RevealPolicy) -> Sealed {
    let config = world.config(a, reveal);
    let files = plan_files(world, a);
    let manifest = world.manifest(&config, &files);
    let sealer = world.sealer();
    let seals = BUYERS
        .iter()
        .map(|b| (*b, sealer.seal_manifest(b, &manifest)))
        .collect();
    Sealed {
        files,
        manifest,
        seals,
    }
}

/// A sealed second-price auction of [`PLAN`] completes with the right result.
fn auction_completes(world: &World, enclave: &Enclave) {
    let s = sealed(world, "a-faults", RevealPolicy::SecondPrice);
    let mut p = world.parent(enclave);
    p.start_sealed(&world.stack.operator, &s.manifest, &s.seals);
    for (b, f) in BUYERS.iter().zip(&s.files) {
        p.send_file(b, f);
    }
    let (csv, json) = p.close(Mode::Sealed, &s.manifest);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result,Price\n1,Buyer2 Wins,249.99\n2,\"Tie: Buyer1, Buyer2\",3\n3,Buyer3 Wins,0\n4,Buyer1 Wins,11\n"
    );
    let lots = json_lots(&json);
    let set_aside: Vec<_> = lots.iter().map(|l| (l.0.as_str(), l.4.clone())).collect();
    let dq = |b: &str| vec![(b.to_owned(), "invalid_amount".to_owned())];
    assert_eq!(
        set_aside,
        vec![
            ("1", vec![]),
            ("2", vec![]),
            ("3", dq("Buyer1")),
            ("4", dq("Buyer2"))
        ]
    );
    let header = OutputHeader::parse(&json).unwrap();
    let counts: Vec<_> = header
        .set_aside
        .iter()
        .map(|s| (s.buyer.to_string(), s.reason.to_string(), s.count))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("Buyer1".into(), "invalid_amount".into(), 1),
            ("Buyer2".into(), "invalid_amount".into(), 1),
        ]
    );
}

#[test]
fn throttling_storm_is_retried_through() {
    let world = faulty_world("Decrypt:throttle=0.7", 7, 10);
    let enclave = world.enclave("enclave", &[]);
    auction_completes(&world, &enclave);
}

#[test]
fn internal_errors_are_retried_through() {
    let world = faulty_world("Decrypt:error500=0.5", 11, 7);
    let enclave = world.enclave("enclave", &[]);
    auction_completes(&world, &enclave);
}

#[test]
fn connections_reset_mid_answer_are_retried_through() {
    let world = faulty_world("Decrypt:reset=0.3", 5, 4);
    let enclave = world.enclave("enclave", &[]);
    auction_completes(&world, &enclave);
}

/// A fatal error frame, then the end of the connection, and nothing else: no result chunk and
/// no `closed` (either would fail `recv_error` or `expect_eof`). Returns (request id named,
/// code, message).
fn ends_with_nothing(p: &mut Parent) -> (Option<u64>, ErrorCode, String) {
    let (id, e) = p.client.recv_error();
    assert!(e.fatal, "{e:?}");
    p.client.expect_eof();
    (id, e.code, e.message)
}

/// After a failed auction the enclave itself is fine and takes the next parent.
fn serves_the_next_parent(world: &World, enclave: &Enclave, sessions: usize) {
    enclave.wait_sessions_ended(sessions);
    let mut next = world.parent(enclave);
    next.hello();
}

/// A sealed auction whose seals cannot be opened: the first seal that fails ends it with one
/// fatal error naming a seal request. Returns (code, message, time from the seals to the
/// error).
fn fails_at_the_seals(world: &World, enclave: &Enclave) -> (ErrorCode, String, Duration) {
    let s = sealed(world, "a-fails", RevealPolicy::None);
    let mut p = world.parent(enclave);
    p.hello();
    p.credentials(&world.stack.operator);
    p.open_sealed(&s.manifest);
    // Every seal in one write, so none is still being written when the enclave gives up.
    let mut wire = Vec::new();
    let mut ids = Vec::new();
    for (b, ct) in &s.seals {
        let (id, frame) = p.frame(Request::Seal(Seal {
            buyer: BuyerName::new(*b).unwrap(),
            ciphertext: ct.clone(),
        }));
        wire.extend_from_slice(&frame);
        ids.push(id);
    }
    let started = Instant::now();
    p.client.send_bytes(&wire);
    // Seals that open before the failing one are accepted; nothing else comes but the error.
    let (id, e) = loop {
        match p.client.recv() {
            FromEnclave {
                msg: Response::SealAccepted(_),
                ..
            } => {}
            FromEnclave {
                id,
                msg: Response::Error(e),
            } => break (id, e),
            other => panic!("expected seal answers then an error, got {other:?}"),
        }
    };
    let took = started.elapsed();
    assert!(e.fatal, "{e:?}");
    p.client.expect_eof();
    let (code, message) = (e.code, e.message);
    assert!(
        id.is_some_and(|i| ids.contains(&i)),
        "names a seal request: {id:?}"
    );
    assert!(message.contains("seal"), "{message}");
    serves_the_next_parent(world, enclave, 1);
    (code, message, took)
}

/// Sends `files` in the buyers' order; every file before `failing` is accepted, and
/// `failing`'s (one chunk) ends the auction. Returns (code, message, time from that file to
/// the error).
fn fails_at_a_file(
    p: &mut Parent,
    files: &[Vec<u8>],
    failing: usize,
) -> (ErrorCode, String, Duration) {
    for (b, f) in BUYERS.iter().zip(files).take(failing) {
        p.send_file(b, f);
    }
    let started = Instant::now();
    let id = p.send(file_chunk(BUYERS[failing], files[failing].clone(), true));
    let (got, code, message) = ends_with_nothing(p);
    let took = started.elapsed();
    assert!(
        got.is_none() || got == Some(id),
        "names the file's last chunk or nothing: {got:?}"
    );
    (code, message, took)
}

/// An unsealed auction whose bids cannot be opened: Buyer1's file ends it.
fn unsealed_fails_at_the_bids(world: &World, enclave: &Enclave) -> (ErrorCode, String, Duration) {
    let config: AuctionConfig = world.config("a-fails", RevealPolicy::None);
    let files = plan_files(world, "a-fails");
    let mut p = world.parent(enclave);
    p.start(&world.stack.operator, &config);
    let r = fails_at_a_file(&mut p, &files, 0);
    serves_the_next_parent(world, enclave, 1);
    r
}

#[test]
fn kms_failing_past_the_deadline_ends_the_auction() {
    let world = faulty_world("Decrypt:error500=1", 1, CALLS);
    let enclave = world.enclave("enclave", &["--kms-deadline-secs", "2"]);
    let (code, m, took) = fails_at_the_seals(&world, &enclave);
    assert_eq!(code, ErrorCode::KmsUnavailable, "{m}");
    assert!(m.contains("KMS did not answer within 2 s"), "{m}");
    assert!(m.contains("InternalFailure"), "{m}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let log = enclave.log_text();
    assert!(
        log.contains("could not be opened (kms_unavailable)"),
        "{log}"
    );
}

#[test]
fn a_throttling_storm_past_the_deadline_ends_the_auction() {
    let world = faulty_world("Decrypt:throttle=1", 3, CALLS);
    let enclave = world.enclave("enclave", &["--kms-deadline-secs", "2"]);
    // At the seals of a sealed auction ...
    let (code, m, took) = fails_at_the_seals(&world, &enclave);
    assert_eq!(code, ErrorCode::KmsUnavailable, "{m}");
    assert!(m.contains("KMS did not answer within 2 s"), "{m}");
    assert!(m.contains("ThrottlingException"), "{m}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // ... and at the bids of an unsealed one, on the unsealed image.
    let world = faulty_world_of("Decrypt:throttle=1", 3, CALLS, StackOptions::unsealed());
    let enclave = world.enclave("enclave2", &["--kms-deadline-secs", "2"]);
    let (code, m, took) = unsealed_fails_at_the_bids(&world, &enclave);
    assert_eq!(code, ErrorCode::KmsUnavailable, "{m}");
    assert!(m.contains("KMS did not answer within 2 s"), "{m}");
    assert!(m.contains("ThrottlingException"), "{m}");
    assert!(m.contains("`Buyer1`"), "{m}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn a_proxy_refusing_connections_ends_the_auction() {
    let world = World::start(BUYERS, StackOptions::default());
    let proxy = format!("tcp:127.0.0.1:{}", closed_port());
    let enclave = Enclave::start(
        world.dir(),
        "enclave",
        &world.stack.nsm_dir,
        &proxy,
        Some(&world.stack.kms.ca_pem()),
        &["--kms-deadline-secs", "2"],
    );
    let (code, m, took) = fails_at_the_seals(&world, &enclave);
    assert_eq!(code, ErrorCode::KmsUnavailable, "{m}");
    assert!(m.contains("KMS did not answer within 2 s"), "{m}");
    assert!(m.contains("Connection refused"), "{m}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// A TCP forwarder between the enclave and the KMS emulator that the test can cut: from then
/// on its connections are shut down and new ones refused (the listener is closed).
struct CutProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl CutProxy {
    fn start(target: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, k) = (cut.clone(), conns.clone());
        let accept = std::thread::spawn(move || {
            while !c.load(Ordering::SeqCst) {
                let down = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => return,
                };
                down.set_nonblocking(false).unwrap();
                let Ok(up) = TcpStream::connect(target) else {
                    continue;
                };
                let mut list = k.lock().unwrap();
                list.push(down.try_clone().unwrap());
                list.push(up.try_clone().unwrap());
                drop(list);
                for (from, to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    std::thread::spawn(move || pump(from, to));
                }
            }
            // The listener is dropped here: new connections are refused.
        });
        CutProxy {
            addr,
            cut,
            conns,
            accept: Some(accept),
        }
    }

    fn cut(&mut self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            t.join().unwrap();
        }
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[test]
fn kms_unreachable_after_the_seals_ends_the_auction() {
    let world = World::start(BUYERS, StackOptions::default());
    let mut proxy = CutProxy::start(world.stack.kms.addr());
    let enclave = Enclave::start(
        world.dir(),
        "enclave",
        &world.stack.nsm_dir,
        &format!("tcp:{}", proxy.addr),
        Some(&world.stack.kms.ca_pem()),
        &["--kms-deadline-secs", "2"],
    );
    let s = sealed(&world, "a-cut", RevealPolicy::None);
    let mut p = world.parent(&enclave);
    // Every seal opens through the proxy ...
    p.start_sealed(&world.stack.operator, &s.manifest, &s.seals);
    // ... then KMS is out of reach: no bid can be opened, and nothing is decided.
    proxy.cut();
    let (code, m, took) = fails_at_a_file(&mut p, &s.files, 0);
    assert_eq!(code, ErrorCode::KmsUnavailable, "{m}");
    assert!(m.contains("KMS did not answer within 2 s"), "{m}");
    assert!(m.contains("`Buyer1`"), "{m}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    serves_the_next_parent(&world, &enclave, 1);
}

#[test]
fn a_certificate_for_another_host_is_refused_at_once() {
    let world = World::start(BUYERS, StackOptions::default());
    // A second KMS whose certificate names kms.eu-west-1.amazonaws.com, while the
    // credentials (and so the enclave's SNI) say us-east-1.
    let eu_dir = world.dir().join("kms-eu");
    let mut config = kms_emulator::Config::new(&eu_dir);
    config.region = "eu-west-1".into();
    config.attestation_root_der = world.root_der();
    config.log = false;
    let eu = kms_emulator::spawn(config).unwrap();
    let enclave = Enclave::start(
        world.dir(),
        "enclave",
        &world.stack.nsm_dir,
        &format!("tcp:{}", eu.addr()),
        Some(&eu.ca_pem()),
        // The default deadline is a minute: an answer within seconds means no retrying.
        &[],
    );
    let (code, m, took) = fails_at_the_seals(&world, &enclave);
    assert_eq!(code, ErrorCode::KmsFailure, "{m}");
    assert!(m.contains("certificate"), "{m}");
    assert!(
        m.contains("not valid for name \"kms.us-east-1.amazonaws.com\""),
        "{m}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // Nothing reached that KMS.
    assert_eq!(eu.attestation_verifications(), 0);
}

/// Replaces the policy of `buyer`'s key (the emulator's side door, as the key's owner would
/// with PutKeyPolicy).
fn set_key_policy(world: &World, buyer: &str, policy: &str) {
    let key = world.buyer(buyer).key.to_string();
    kms_emulator::set_policy(&world.dir().join("kms"), &key, policy).unwrap();
}

fn buyer_arn(buyer: &str) -> String {
    stack::buyer_arn(&bidding_core::names::BuyerName::new(buyer).unwrap())
}

#[test]
fn access_denied_for_another_measurement_is_fatal() {
    let world = World::start(BUYERS, StackOptions::default());
    // Buyer2's key policy names another enclave image: the operator's role may Decrypt only
    // for a Recipient attested with PCR0 11…11.
    set_key_policy(
        &world,
        "Buyer2",
        &stack::buyer_key_policy(&buyer_arn("Buyer2"), &[0x11; 48]),
    );
    // Sealed: Buyer2's seal is not opened, and the auction ends there.
    let enclave = world.enclave("enclave", &[]);
    let (code, m, _) = fails_at_the_seals(&world, &enclave);
    assert_eq!(code, ErrorCode::KmsAccessDenied, "{m}");
    assert!(m.contains("`Buyer2`"), "{m}");
    assert!(m.contains("AccessDeniedException"), "{m}");
    // Unsealed (the unsealed image, its keys): Buyer1's file opens, Buyer2's is not set aside
    // but ends the auction.
    let world = World::start(BUYERS, StackOptions::unsealed());
    set_key_policy(
        &world,
        "Buyer2",
        &stack::buyer_key_policy(&buyer_arn("Buyer2"), &[0x11; 48]),
    );
    let enclave = world.enclave("enclave2", &[]);
    let config = world.config("a-denied", RevealPolicy::None);
    let files = plan_files(&world, "a-denied");
    let mut p = world.parent(&enclave);
    p.start(&world.stack.operator, &config);
    let (code, m, _) = fails_at_a_file(&mut p, &files, 1);
    assert_eq!(code, ErrorCode::KmsAccessDenied, "{m}");
    assert!(m.contains("`Buyer2`"), "{m}");
    assert!(m.contains(world.buyer("Buyer2").key.as_str()), "{m}");
    assert!(m.contains("AccessDeniedException"), "{m}");
    serves_the_next_parent(&world, &enclave, 1);
}

#[test]
fn access_denied_to_the_operator_after_the_seals_is_fatal() {
    let world = World::start(BUYERS, StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    let s = sealed(&world, "a-revoked", RevealPolicy::None);
    let mut p = world.parent(&enclave);
    p.start_sealed(&world.stack.operator, &s.manifest, &s.seals);
    // Every buyer consented; now Buyer3's key policy no longer lets the operator's role use
    // the key at all (as an IAM policy denying it would). Leaving Buyer3's bids out could
    // change a winner, so the auction fails instead.
    let admin_only = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "BuyerAdministersAndEncrypts", "Effect": "Allow",
             "Principal": {"AWS": buyer_arn("Buyer3")}, "Action": "kms:*", "Resource": "*"}
        ]
    })
    .to_string();
    set_key_policy(&world, "Buyer3", &admin_only);
    let (code, m, _) = fails_at_a_file(&mut p, &s.files, 2);
    assert_eq!(code, ErrorCode::KmsAccessDenied, "{m}");
    assert!(m.contains("`Buyer3`"), "{m}");
    assert!(m.contains("AccessDeniedException"), "{m}");
    serves_the_next_parent(&world, &enclave, 1);
    let log = enclave.log_text();
    assert!(
        log.contains("could not be opened (kms_access_denied)"),
        "{log}"
    );
}

#[test]
fn a_key_disabled_after_the_seals_is_fatal() {
    let world = World::start(BUYERS, StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    let s = sealed(&world, "a-disabled", RevealPolicy::None);
    let mut p = world.parent(&enclave);
    p.start_sealed(&world.stack.operator, &s.manifest, &s.seals);
    // Buyer2 disables its key once every seal is in.
    let b2 = world.buyer("Buyer2");
    let client = world.stack.kms_client(&b2.credentials).unwrap();
    let disabled: Result<serde_json::Value, _> = client.call(
        "DisableKey",
        &serde_json::json!({ "KeyId": b2.key.as_str() }),
    );
    // DisableKey answers with an empty body, which this client cannot read as JSON; the
    // key's metadata says whether it took.
    if let Err(e) = &disabled {
        println!("DisableKey: {e}");
    }
    let meta: serde_json::Value = client
        .call(
            "DescribeKey",
            &serde_json::json!({ "KeyId": b2.key.as_str() }),
        )
        .unwrap();
    assert_eq!(meta["KeyMetadata"]["Enabled"], false, "{meta}");
    let (code, m, _) = fails_at_a_file(&mut p, &s.files, 1);
    assert_eq!(code, ErrorCode::KeyUnavailable, "{m}");
    assert!(m.contains("`Buyer2`"), "{m}");
    assert!(m.contains("DisabledException"), "{m}");
    serves_the_next_parent(&world, &enclave, 1);
}
