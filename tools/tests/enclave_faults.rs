//! KMS misbehaving under a dev enclave: throttling storms, 500s and connections reset in the
//! middle of an answer (retried: the auction completes with the right outcomes), KMS failing
//! for longer than the deadline or a proxy that refuses connections (the auction fails with a
//! clear fatal error, no outcome), and a KMS certificate for the wrong host name (refused at
//! once, never retried).

mod harness;

use bidding_core::auction::{Disqualified, Reason, RevealPolicy};
use bidding_core::names::BuyerName;
use bidding_core::wire::{ErrorCode, FromEnclave, Response};
use bidding_tools::kms_emulator::{self, FaultRule, faults::Faults};
use bidding_tools::stack::StackOptions;
use harness::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const BUYERS: &[&str] = &["Buyer1", "Buyer2", "Buyer3"];

/// How many of the first `requests` Decrypt calls a seeded emulator faults. Every bid costs at
/// least one Decrypt, so an auction of `requests` bids met at least this many faults.
fn faults_among_first(rule: &FaultRule, seed: u64, requests: usize) -> usize {
    let f = Faults::new(vec![rule.clone()], seed);
    (0..requests)
        .filter(|_| f.decide("Decrypt").fault.is_some())
        .count()
}

fn faulty_world(rule: &str, seed: u64, min_faults: usize) -> World {
    let rule: FaultRule = rule.parse().unwrap();
    let n = faults_among_first(&rule, seed, BIDS);
    assert!(
        n >= min_faults,
        "seed {seed} faults only {n} of the first {BIDS} calls under {rule}"
    );
    println!("{rule} with seed {seed}: at least {n} of {BIDS} first Decrypt calls faulted");
    World::start(
        BUYERS,
        StackOptions {
            kms_faults: vec![rule],
            kms_fault_seed: Some(seed),
            kms_log: false,
            ..StackOptions::default()
        },
    )
}

const BIDS: usize = 12;

/// Four lots of three bids; the outcomes are known.
fn auction_completes(world: &World, enclave: &Enclave) {
    let sealer = world.sealer();
    let a = "a-faults";
    let config = world.config(a, RevealPolicy::SecondPrice);
    let plan = [
        ("1", ["100", "250", "249.99"]),
        ("2", ["3", "3.00", "1"]),
        ("3", ["1e3", "0", "0.01"]),
        ("4", ["12", "abc", "11"]),
    ];
    let mut p = world.parent(enclave);
    p.start(&world.stack.operator, &config);
    let mut ids = HashMap::new();
    for (l, amounts) in plan {
        let bids = BUYERS
            .iter()
            .zip(amounts)
            .map(|(b, amount)| bid(b, sealer.seal(b, amount, a, l)))
            .collect();
        ids.insert(p.send(lot_bids(l, bids)), l);
    }
    assert_eq!(ids.len() * BUYERS.len(), BIDS);
    let mut results = Vec::new();
    for _ in 0..plan.len() {
        let FromEnclave { id, msg } = p.client.recv();
        match msg {
            Response::Lot(r) => {
                assert_eq!(Some(r.lot.as_str()), id.and_then(|i| ids.get(&i).copied()));
                results.push(r);
            }
            other => panic!("request {id:?}: {other:?}"),
        }
    }
    let csv = p.close(&config, &results);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result,Price\n1,Buyer2 Wins,249.99\n2,\"Tie: Buyer1, Buyer2\",3\n3,Buyer3 Wins,0\n4,Buyer1 Wins,11\n"
    );
    results.sort_by(|a, b| a.lot.natural_cmp(&b.lot));
    let b = |n: &str| BuyerName::new(n).unwrap();
    assert_eq!(
        results[2].disqualified,
        vec![Disqualified {
            buyer: b("Buyer1"),
            reason: Reason::InvalidAmount
        }]
    );
    assert_eq!(
        results[3].disqualified,
        vec![Disqualified {
            buyer: b("Buyer2"),
            reason: Reason::InvalidAmount
        }]
    );
}

#[test]
fn throttling_storm_is_retried_through() {
    let world = faulty_world("Decrypt:throttle=0.7", 7, 6);
    let enclave = world.enclave("enclave", &[]);
    auction_completes(&world, &enclave);
}

#[test]
fn internal_errors_are_retried_through() {
    let world = faulty_world("Decrypt:error500=0.5", 11, 4);
    let enclave = world.enclave("enclave", &[]);
    auction_completes(&world, &enclave);
}

#[test]
fn connections_reset_mid_answer_are_retried_through() {
    let world = faulty_world("Decrypt:reset=0.3", 5, 3);
    let enclave = world.enclave("enclave", &[]);
    auction_completes(&world, &enclave);
}

/// Two lots go in; the first bid that cannot be opened in time ends the auction with one fatal
/// error frame naming its lot, and no outcome at all comes back.
fn auction_fails(world: &World, enclave: &Enclave, code: ErrorCode) -> (String, Duration) {
    let config = world.config("a-fails", RevealPolicy::None);
    let mut p = world.parent(enclave);
    p.start(&world.stack.operator, &config);
    let started = Instant::now();
    let ids = [
        p.send(lot_bids(
            "1",
            vec![
                bid("Buyer1", junk_ciphertext()),
                bid("Buyer2", junk_ciphertext()),
            ],
        )),
        p.send(lot_bids("2", vec![bid("Buyer3", junk_ciphertext())])),
    ];
    let (id, e) = p.client.recv_error();
    let took = started.elapsed();
    assert!(id.is_some_and(|i| ids.contains(&i)), "names a lot: {id:?}");
    assert_eq!((e.code, e.fatal), (code, true), "{e:?}");
    p.client.expect_eof();
    enclave.wait_sessions_ended(1);
    // The enclave itself is fine and takes the next parent.
    let mut next = world.parent(enclave);
    next.hello();
    (e.message, took)
}

#[test]
fn kms_failing_past_the_deadline_ends_the_auction() {
    let world = faulty_world("Decrypt:error500=1", 1, BIDS);
    let enclave = world.enclave("enclave", &["--kms-deadline-secs", "2"]);
    let (m, took) = auction_fails(&world, &enclave, ErrorCode::KmsUnavailable);
    assert!(m.contains("KMS did not answer within 2 s"), "{m}");
    assert!(m.contains("InternalFailure"), "{m}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let log = enclave.log_text();
    assert!(
        log.contains("bid could not be opened (kms_unavailable)"),
        "{log}"
    );
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
    let (m, took) = auction_fails(&world, &enclave, ErrorCode::KmsUnavailable);
    assert!(m.contains("KMS did not answer within 2 s"), "{m}");
    assert!(m.contains("Connection refused"), "{m}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
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
    let (m, took) = auction_fails(&world, &enclave, ErrorCode::KmsFailure);
    assert!(m.contains("certificate"), "{m}");
    assert!(
        m.contains("not valid for name \"kms.us-east-1.amazonaws.com\""),
        "{m}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // Nothing reached that KMS.
    assert_eq!(eu.attestation_verifications(), 0);
}
