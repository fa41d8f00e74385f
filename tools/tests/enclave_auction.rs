//! A whole auction through a dev enclave (a child process, over its Unix socket) against the
//! KMS emulator over TLS, played by an honest parent built on core's codec: three buyers, a
//! winner, a tie, an invalid amount, a missing bid, a bid under another buyer's key, a
//! ciphertext replayed into a second lot, a wrong encryption context, and a lot with no valid
//! bid; every outcome, the output digest and the result attestation checked.

mod harness;

use bidding_core::auction::{Disqualified, LotResult, Outcome, Reason, RevealPolicy};
use bidding_core::names::BuyerName;
use bidding_core::wire::{ErrorCode, Response};
use bidding_tools::stack::StackOptions;
use harness::*;
use std::collections::HashMap;

fn name(n: &str) -> BuyerName {
    BuyerName::new(n).unwrap()
}

fn winner(l: &str, buyer: &str, disqualified: &[(&str, Reason)]) -> LotResult {
    result(
        l,
        Outcome::Winner {
            buyer: name(buyer),
            price: None,
        },
        disqualified,
    )
}

fn result(l: &str, outcome: Outcome, disqualified: &[(&str, Reason)]) -> LotResult {
    LotResult {
        lot: lot(l),
        outcome,
        disqualified: disqualified
            .iter()
            .map(|(b, r)| Disqualified {
                buyer: name(b),
                reason: *r,
            })
            .collect(),
    }
}

#[test]
fn three_buyers_every_outcome() {
    let world = World::start(&["Buyer1", "Buyer2", "Buyer3"], StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    let sealer = world.sealer();
    let a = "auction-1";
    let config = world.config(a, RevealPolicy::None);

    let lot1_b1 = sealer.seal("Buyer1", "100000", a, "1");
    let lot6_b2 = sealer.seal("Buyer2", "300", a, "6");
    let lots = vec![
        // A clear winner, by one cent over 99999.99.
        (
            "1",
            vec![
                bid("Buyer1", lot1_b1.clone()),
                bid("Buyer2", sealer.seal("Buyer2", "95000", a, "1")),
                bid("Buyer3", sealer.seal("Buyer3", "99999.99", a, "1")),
            ],
        ),
        // A tie: 150000 and 150000.00 are the same amount.
        (
            "2",
            vec![
                bid("Buyer1", sealer.seal("Buyer1", "150000", a, "2")),
                bid("Buyer2", sealer.seal("Buyer2", "150000.00", a, "2")),
                bid("Buyer3", sealer.seal("Buyer3", "1", a, "2")),
            ],
        ),
        // An invalid amount: exponent notation.
        (
            "3",
            vec![
                bid("Buyer1", sealer.seal("Buyer1", "1e5", a, "3")),
                bid("Buyer2", sealer.seal("Buyer2", "10", a, "3")),
                bid("Buyer3", sealer.seal("Buyer3", "20", a, "3")),
            ],
        ),
        // Buyer1 did not bid.
        (
            "4",
            vec![
                bid("Buyer2", sealer.seal("Buyer2", "500", a, "4")),
                bid("Buyer3", sealer.seal("Buyer3", "400", a, "4")),
            ],
        ),
        // Buyer3's slot holds a (huge) bid Buyer1 encrypted under Buyer1's key.
        (
            "5",
            vec![
                bid("Buyer1", sealer.seal("Buyer1", "5", a, "5")),
                bid("Buyer2", sealer.seal("Buyer2", "6", a, "5")),
                bid(
                    "Buyer3",
                    sealer.seal_as("Buyer1", "999999999", a, "5", "Buyer3"),
                ),
            ],
        ),
        // Lot 1's Buyer1 ciphertext replayed into lot 6: the whole frame is refused.
        (
            "6",
            vec![
                bid("Buyer1", lot1_b1.clone()),
                bid("Buyer2", lot6_b2.clone()),
            ],
        ),
        // The same lot again, honestly; Buyer2's ciphertext was not spent by the refusal.
        (
            "6",
            vec![
                bid("Buyer1", sealer.seal("Buyer1", "200", a, "6")),
                bid("Buyer2", lot6_b2.clone()),
            ],
        ),
        // Buyer2's (huge) bid was made for lot 8: KMS refuses it under lot 7's context.
        (
            "7",
            vec![
                bid("Buyer1", sealer.seal("Buyer1", "7", a, "7")),
                bid("Buyer2", sealer.seal("Buyer2", "1000000", a, "8")),
            ],
        ),
        // Nothing valid: a sign, three fraction digits, a leading space.
        (
            "10",
            vec![
                bid("Buyer1", sealer.seal("Buyer1", "-5", a, "10")),
                bid("Buyer2", sealer.seal("Buyer2", "12.345", a, "10")),
                bid("Buyer3", sealer.seal("Buyer3", " 7", a, "10")),
            ],
        ),
    ];

    let mut parent = world.parent(&enclave);
    parent.start(&world.stack.operator, &config);
    // Pipelined, as the real parent does: every lot frame at once, replies in any order.
    let mut wire = Vec::new();
    let mut ids = Vec::new();
    for (l, bids) in &lots {
        let (id, frame) = parent.frame(lot_bids(l, bids.clone()));
        wire.extend_from_slice(&frame);
        ids.push((id, *l));
    }
    parent.client.send_bytes(&wire);
    let mut replies = HashMap::new();
    for _ in 0..lots.len() {
        let reply = parent.client.recv();
        let id = reply.id.expect("every reply names its request");
        assert!(
            replies.insert(id, reply.msg).is_none(),
            "two replies to {id}"
        );
    }
    let replayed_id = ids[5].0;
    match replies.remove(&replayed_id) {
        Some(Response::Error(e)) => {
            assert_eq!(e.code, ErrorCode::ReplayedCiphertext, "{e:?}");
            assert!(!e.fatal, "a refused lot does not end the auction");
            assert!(
                e.message.contains("lot `6`") && e.message.contains("`Buyer1`"),
                "{}",
                e.message
            );
        }
        other => panic!("the replayed ciphertext was not refused: {other:?}"),
    }
    let mut results = Vec::new();
    for (id, l) in &ids {
        if *id == replayed_id {
            continue;
        }
        match replies.remove(id) {
            Some(Response::Lot(r)) => {
                assert_eq!(r.lot.as_str(), *l, "reply {id} is about its own lot");
                results.push(r);
            }
            other => panic!("lot {l} (request {id}): {other:?}"),
        }
    }
    let by_lot: HashMap<&str, &LotResult> = results.iter().map(|r| (r.lot.as_str(), r)).collect();
    let expected = [
        winner("1", "Buyer1", &[]),
        result(
            "2",
            Outcome::Tie {
                buyers: vec![name("Buyer1"), name("Buyer2")],
                price: None,
            },
            &[],
        ),
        winner("3", "Buyer3", &[("Buyer1", Reason::InvalidAmount)]),
        winner("4", "Buyer2", &[]),
        winner("5", "Buyer2", &[("Buyer3", Reason::WrongKey)]),
        winner("6", "Buyer2", &[]),
        winner("7", "Buyer1", &[("Buyer2", Reason::Undecryptable)]),
        result(
            "10",
            Outcome::NoValidBid,
            &[
                ("Buyer1", Reason::InvalidAmount),
                ("Buyer2", Reason::InvalidAmount),
                ("Buyer3", Reason::InvalidAmount),
            ],
        ),
    ];
    assert_eq!(results.len(), expected.len());
    for e in &expected {
        assert_eq!(by_lot[e.lot.as_str()], e, "lot {}", e.lot);
    }

    let csv = parent.close(&config, &results);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result\n1,Buyer1 Wins\n2,\"Tie: Buyer1, Buyer2\"\n3,Buyer3 Wins\n4,Buyer2 Wins\n5,Buyer2 Wins\n6,Buyer2 Wins\n7,Buyer1 Wins\n10,No valid bids\n"
    );
    enclave.wait_sessions_ended(1);

    // A second auction on the same enclave: a spent ciphertext stays spent, and a fresh bid
    // made for the first auction does not open in the second.
    let a2 = "auction-2";
    let config2 = world.config(a2, RevealPolicy::None);
    let mut parent = world.parent(&enclave);
    parent.start(&world.stack.operator, &config2);
    let id = parent.send(lot_bids("1", vec![bid("Buyer1", lot1_b1)]));
    parent
        .client
        .expect_error(Some(id), ErrorCode::ReplayedCiphertext, false);
    let moved = sealer.seal("Buyer2", "123", a, "1");
    let r = parent.lot(lot_bids("1", vec![bid("Buyer2", moved)]));
    assert_eq!(
        r,
        result(
            "1",
            Outcome::NoValidBid,
            &[("Buyer2", Reason::Undecryptable)]
        )
    );
    let csv = parent.close(&config2, &[r]);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result\n1,No valid bids\n"
    );
}
