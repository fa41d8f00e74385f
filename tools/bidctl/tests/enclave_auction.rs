//! Whole auctions through a dev enclave (a child process, over its Unix socket) against the
//! KMS emulator over TLS, played by an honest parent built on core's codec (protocol 2: every
//! buyer's file whole, the result only at close). Three buyers, each with one bid file:
//! a winner, a tie, padded amounts and a bid with `echo`'s newline, invalid amounts, skipped
//! lots, a bid under another buyer's key, a ciphertext copied into another lot, a bid made for
//! another lot, a bid without encryption context (counted only when the terms allow it), a lot
//! named twice, a malformed row, and a lot with no valid bid.
//!
//! The main path is sealed (manifest, every buyer's seal, files, close), run under each reveal
//! policy, and rerun on a new connection to the same enclave boot: same bytes. One unsealed run
//! shows the per-boot replay guard that only unsealed auctions keep. Every result's digests and
//! attestation are checked by the harness's parent; outcomes are read from output.json, and
//! the set-aside counts from its header.
//!
//! What changed from protocol 1, premise by premise: lot frames and per-lot replies are gone
//! (outcomes leave only at close, so the checks read output.json); a ciphertext replayed into a
//! second lot was a refused frame, and is now a row of the buyer's own file that KMS refuses
//! under that lot's context (`undecryptable`); the same lot sent twice is now a lot named twice
//! in one file (`duplicate_lot`, none of its rows count); " 7" is a valid amount now
//! (surrounding ASCII whitespace is allowed), so the inner-space "7 7" stands in for it.

#[path = "../../test-support/harness/mod.rs"]
mod harness;

use bidding_core::auction::RevealPolicy;
use bidding_core::config::{self, AuctionConfig, BuyerSpec, Mode};
use bidding_core::manifest::FileFormat;
use bidding_core::names::AuctionId;
use bidding_core::output::OutputHeader;
use bidding_core::wire::ErrorCode;
use bidding_standins::stack::StackOptions;
use harness::*;

const BUYERS: &[&str] = &["Buyer1", "Buyer2", "Buyer3"];

/// The terms of an auction among every buyer of the world.
fn terms(world: &World, auction: &str, reveal: RevealPolicy, no_context: bool) -> AuctionConfig {
    let buyers = world
        .stack
        .buyers
        .iter()
        .map(|b| BuyerSpec {
            name: b.name.clone(),
            key_arn: b.key.clone(),
        })
        .collect();
    AuctionConfig::new(AuctionId::new(auction).unwrap(), buyers, reveal, no_context).unwrap()
}

/// A bid as plain `aws kms encrypt` makes it: the buyer's own key, no encryption context.
fn seal_without_context(world: &World, buyer: &str, amount: &str) -> Vec<u8> {
    let b = world.buyer(buyer);
    world
        .stack
        .kms_client(&b.credentials)
        .unwrap()
        .encrypt(b.key.as_str(), amount.as_bytes(), None)
        .unwrap()
}

/// Every buyer's seal of `manifest`.
fn seals_of(sealer: &Sealer, manifest: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    BUYERS
        .iter()
        .map(|b| (*b, sealer.seal_manifest(b, manifest)))
        .collect()
}

/// A whole sealed auction on a new connection: manifest, seals, every file, close. Returns
/// (output.csv, output.json), checked against the attestation by the harness.
fn run_sealed(
    world: &World,
    enclave: &Enclave,
    manifest: &[u8],
    seals: &[(&str, Vec<u8>)],
    files: &[Vec<u8>],
) -> (Vec<u8>, Vec<u8>) {
    let mut p = world.parent(enclave);
    p.start_sealed(&world.stack.operator, manifest, seals);
    for (b, f) in BUYERS.iter().zip(files) {
        p.send_file(b, f);
    }
    p.close(Mode::Sealed, manifest)
}

fn line(
    lot: &str,
    result: &str,
    names: &[&str],
    price: Option<&str>,
    set_aside: &[(&str, &str)],
) -> LotLine {
    (
        lot.to_owned(),
        result.to_owned(),
        names.iter().map(|n| n.to_string()).collect(),
        price.map(str::to_owned),
        set_aside
            .iter()
            .map(|(b, r)| (b.to_string(), r.to_string()))
            .collect(),
    )
}

/// The set-aside counts of output.json's header as (buyer, reason, count).
fn set_aside_counts(header: &OutputHeader) -> Vec<(String, String, u64)> {
    header
        .set_aside
        .iter()
        .map(|s| (s.buyer.to_string(), s.reason.to_string(), s.count))
        .collect()
}

fn counts(list: &[(&str, &str, u64)]) -> Vec<(String, String, u64)> {
    list.iter()
        .map(|(b, r, n)| (b.to_string(), r.to_string(), *n))
        .collect()
}

/// The expected lots, with the prices `price(lot)` for a policy that reveals one.
fn expected_lots(price: impl Fn(&str) -> Option<&'static str>) -> Vec<LotLine> {
    let w = |l: &str, b: &str, dq: &[(&str, &str)]| line(l, "winner", &[b], price(l), dq);
    let tie = |l: &str| line(l, "tie", &["Buyer1", "Buyer2"], price(l), &[]);
    vec![
        w("1", "Buyer1", &[]),
        tie("2"),
        w("3", "Buyer3", &[("Buyer1", "invalid_amount")]),
        w("4", "Buyer2", &[]),
        w("5", "Buyer2", &[("Buyer3", "undecryptable")]),
        w("6", "Buyer2", &[("Buyer1", "undecryptable")]),
        w("7", "Buyer1", &[("Buyer2", "undecryptable")]),
        tie("8"),
        w("9", "Buyer1", &[("Buyer3", "undecryptable")]),
        line(
            "10",
            "no_valid_bid",
            &[],
            None,
            &[
                ("Buyer1", "invalid_amount"),
                ("Buyer2", "invalid_amount"),
                ("Buyer3", "invalid_amount"),
            ],
        ),
        w("11", "Buyer2", &[("Buyer3", "duplicate_lot")]),
    ]
}

#[test]
fn sealed_auction_every_outcome_each_policy_and_a_rerun() {
    let world = World::start(BUYERS, StackOptions::default());
    let mut enclave = world.enclave("enclave", &[]);
    let sealer = world.sealer();
    let a = "auction-1";

    let lot1_b1 = sealer.seal("Buyer1", "100000", a, "1");
    let b1 = bid_file(&[
        // Lot 1: a clear winner, by one cent over 99999.99.
        ("1", lot1_b1.clone()),
        // Lot 2: a tie, 150000 and 150000.00 being the same amount.
        ("2", sealer.seal("Buyer1", "150000", a, "2")),
        // Lot 3: exponent notation is not an amount.
        ("3", sealer.seal("Buyer1", "1e5", a, "3")),
        // Lot 4: Buyer1 skips it.
        ("5", sealer.seal("Buyer1", "5", a, "5")),
        // Lot 6: Buyer1's lot-1 ciphertext copied here; KMS refuses it under lot 6's context.
        ("6", lot1_b1.clone()),
        ("7", sealer.seal("Buyer1", "7", a, "7")),
        // Lot 8: padded to bidctl encrypt's fixed width.
        ("8", sealer.seal("Buyer1", "000000000000100000.00", a, "8")),
        ("9", sealer.seal("Buyer1", "9", a, "9")),
        // Lot 10: a sign.
        ("10", sealer.seal("Buyer1", "-5", a, "10")),
        ("11", sealer.seal("Buyer1", "50", a, "11")),
    ]);
    let mut b2 = bid_file(&[
        ("1", sealer.seal("Buyer2", "95000", a, "1")),
        ("2", sealer.seal("Buyer2", "150000.00", a, "2")),
        ("3", sealer.seal("Buyer2", "10", a, "3")),
        ("4", sealer.seal("Buyer2", "500", a, "4")),
        ("5", sealer.seal("Buyer2", "6", a, "5")),
        ("6", sealer.seal("Buyer2", "300", a, "6")),
        // Lot 7: a (huge) bid Buyer2 made for lot 8; KMS refuses it under lot 7's context.
        ("7", sealer.seal("Buyer2", "1000000", a, "8")),
        // Lot 8: as `echo 100000 > bid.txt` makes it; equal to Buyer1's padded bid.
        ("8", sealer.seal("Buyer2", "100000\n", a, "8")),
        // Lot 9: Buyer2 skips it. Lot 10: three fraction digits.
        ("10", sealer.seal("Buyer2", "12.345", a, "10")),
        ("11", sealer.seal("Buyer2", "60", a, "11")),
    ]);
    // A row that is not `<lot>,<base64>`: set aside as malformed_row; it names no lot.
    b2.extend_from_slice(b"12,!!not-base64!!\n");
    let b3 = bid_file(&[
        ("1", sealer.seal("Buyer3", "99999.99", a, "1")),
        ("2", sealer.seal("Buyer3", "1", a, "2")),
        ("3", sealer.seal("Buyer3", "20", a, "3")),
        ("4", sealer.seal("Buyer3", "400", a, "4")),
        // Lot 5: a (huge) bid Buyer3 made for another auction; KMS refuses its context. (A bid
        // under another buyer's key fails a sealed auction: `enclave_attacks.rs`.)
        (
            "5",
            sealer.seal("Buyer3", "999999999", "another-auction", "5"),
        ),
        // Lots 6 and 7: Buyer3 skips them.
        ("8", sealer.seal("Buyer3", "99999.99", a, "8")),
        // Lot 9: a (huge) bid made without encryption context.
        ("9", seal_without_context(&world, "Buyer3", "1000000")),
        // Lot 10: an inner space.
        ("10", sealer.seal("Buyer3", "7 7", a, "10")),
        // Lot 11 named twice (a huge bid, then a small one): neither row counts.
        ("11", sealer.seal("Buyer3", "999999", a, "11")),
        ("11", sealer.seal("Buyer3", "1", a, "11")),
    ]);
    let files = vec![b1, b2, b3];

    // Reveal none, bids without context not allowed: the main run.
    let config = terms(&world, a, RevealPolicy::None, false);
    let manifest = world.manifest(&config, &files);
    let seals = seals_of(&sealer, &manifest);
    let (csv_main, json_main) = run_sealed(&world, &enclave, &manifest, &seals, &files);
    let (csv, json) = (&csv_main, &json_main);
    assert_eq!(
        String::from_utf8(csv.clone()).unwrap(),
        "Property,Result\n1,Buyer1 Wins\n2,\"Tie: Buyer1, Buyer2\"\n3,Buyer3 Wins\n4,Buyer2 Wins\n5,Buyer2 Wins\n6,Buyer2 Wins\n7,Buyer1 Wins\n8,\"Tie: Buyer1, Buyer2\"\n9,Buyer1 Wins\n10,No valid bids\n11,Buyer2 Wins\n"
    );
    assert_eq!(json_lots(json), expected_lots(|_| None));
    let header = OutputHeader::parse(json).unwrap();
    assert_eq!(header.mode, Mode::Sealed);
    assert_eq!(header.auction_id.as_str(), a);
    assert_eq!(header.reveal, RevealPolicy::None);
    assert_eq!(header.terms_sha256, config::sha256(&manifest));
    assert_eq!(header.lot_count, 11);
    // Every file that counted, exactly as the manifest names it.
    let summary: Vec<_> = header
        .files
        .iter()
        .map(|f| (f.buyer.to_string(), f.size, f.sha256, f.format))
        .collect();
    let want: Vec<_> = BUYERS
        .iter()
        .zip(&files)
        .map(|(b, f)| {
            (
                b.to_string(),
                f.len() as u64,
                config::sha256(f),
                FileFormat::PerBid,
            )
        })
        .collect();
    assert_eq!(summary, want);
    let main_counts = counts(&[
        ("Buyer1", "invalid_amount", 2),
        ("Buyer1", "undecryptable", 1),
        ("Buyer2", "invalid_amount", 1),
        ("Buyer2", "undecryptable", 1),
        ("Buyer2", "malformed_row", 1),
        ("Buyer3", "invalid_amount", 1),
        ("Buyer3", "undecryptable", 2),
        ("Buyer3", "duplicate_lot", 1),
    ]);
    assert_eq!(set_aside_counts(&header), main_counts);
    let mut sessions = 1;
    enclave.wait_sessions_ended(sessions);

    // The same files under another manifest (winning-bid), sealed again by every buyer: the
    // winning bids come out. Bids copied or moved between lots still do not open, and a bid
    // without a context never counts in a sealed auction.
    let config_wb = terms(&world, a, RevealPolicy::WinningBid, false);
    let manifest_wb = world.manifest(&config_wb, &files);
    let seals_wb = seals_of(&sealer, &manifest_wb);
    let (csv, json) = run_sealed(&world, &enclave, &manifest_wb, &seals_wb, &files);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result,Price\n1,Buyer1 Wins,100000\n2,\"Tie: Buyer1, Buyer2\",150000\n3,Buyer3 Wins,20\n4,Buyer2 Wins,500\n5,Buyer2 Wins,6\n6,Buyer2 Wins,300\n7,Buyer1 Wins,7\n8,\"Tie: Buyer1, Buyer2\",100000\n9,Buyer1 Wins,9\n10,No valid bids,\n11,Buyer2 Wins,60\n"
    );
    let winning = |l: &str| {
        Some(match l {
            "1" => "100000",
            "2" => "150000",
            "3" => "20",
            "4" => "500",
            "5" => "6",
            "6" => "300",
            "7" => "7",
            "8" => "100000",
            "9" => "9",
            "11" => "60",
            _ => return None,
        })
    };
    assert_eq!(json_lots(&json), expected_lots(winning));
    let header = OutputHeader::parse(&json).unwrap();
    assert_eq!(header.reveal, RevealPolicy::WinningBid);
    assert_eq!(header.terms_sha256, config::sha256(&manifest_wb));
    assert_eq!(set_aside_counts(&header), main_counts);
    sessions += 1;
    enclave.wait_sessions_ended(sessions);

    // Second price (Vickrey): the next valid bid below the winner's; a lone valid bid is its
    // own price, a tie's price is the tied amount. Lot 11's duplicated rows (999999 and 1) are
    // not the second price: they do not count.
    let config_sp = terms(&world, a, RevealPolicy::SecondPrice, false);
    let manifest_sp = world.manifest(&config_sp, &files);
    let seals_sp = seals_of(&sealer, &manifest_sp);
    let (csv, json) = run_sealed(&world, &enclave, &manifest_sp, &seals_sp, &files);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result,Price\n1,Buyer1 Wins,99999.99\n2,\"Tie: Buyer1, Buyer2\",150000\n3,Buyer3 Wins,10\n4,Buyer2 Wins,400\n5,Buyer2 Wins,5\n6,Buyer2 Wins,300\n7,Buyer1 Wins,7\n8,\"Tie: Buyer1, Buyer2\",100000\n9,Buyer1 Wins,9\n10,No valid bids,\n11,Buyer2 Wins,50\n"
    );
    let second = |l: &str| {
        Some(match l {
            "1" => "99999.99",
            "2" => "150000",
            "3" => "10",
            "4" => "400",
            "5" => "5",
            "6" => "300",
            "7" => "7",
            "8" => "100000",
            "9" => "9",
            "11" => "50",
            _ => return None,
        })
    };
    assert_eq!(json_lots(&json), expected_lots(second));
    let header = OutputHeader::parse(&json).unwrap();
    assert_eq!(header.reveal, RevealPolicy::SecondPrice);
    assert_eq!(set_aside_counts(&header), main_counts);
    sessions += 1;
    enclave.wait_sessions_ended(sessions);

    // The first manifest again, with the same seals, on a new connection to the same boot:
    // the same bytes, after other auctions of the same bids.
    let (csv, json) = run_sealed(&world, &enclave, &manifest, &seals, &files);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        String::from_utf8(csv_main).unwrap(),
        "output.csv differs on the rerun"
    );
    assert_eq!(
        String::from_utf8(json).unwrap(),
        String::from_utf8(json_main).unwrap(),
        "output.json differs on the rerun"
    );
    sessions += 1;
    enclave.wait_sessions_ended(sessions);
    enclave.assert_running();
}

/// An unsealed auction (the proof of concept's flow, no seal round): outcomes as in sealed
/// mode, with bids made for another auction refused by KMS; then the same files again on a
/// new connection to the same boot, which the per-boot replay guard of unsealed auctions
/// refuses (fatal, nothing released). The enclave then still serves the next parent.
#[test]
fn unsealed_auction_and_its_replay_guard() {
    let world = World::start(BUYERS, StackOptions::unsealed());
    let enclave = world.enclave("enclave", &[]);
    let sealer = world.sealer();
    let (a1, a2) = ("auction-1", "auction-2");
    let files = vec![
        bid_file(&[
            ("1", sealer.seal("Buyer1", "200", a2, "1")),
            // A bid made for auction-1: KMS refuses it under auction-2's context.
            ("2", sealer.seal("Buyer1", "1000000", a1, "2")),
        ]),
        bid_file(&[
            ("1", sealer.seal("Buyer2", "1000000", a1, "1")),
            ("2", sealer.seal("Buyer2", " 000005 ", a2, "2")),
        ]),
        bid_file(&[
            ("1", sealer.seal("Buyer3", "199.99", a2, "1")),
            ("3", sealer.seal("Buyer3", "abc", a2, "3")),
        ]),
    ];
    let config = terms(&world, a2, RevealPolicy::WinningBid, false);
    let mut p = world.parent(&enclave);
    let (csv, json) = p.run_unsealed(&world.stack.operator, &config, &files);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result,Price\n1,Buyer1 Wins,200\n2,Buyer2 Wins,5\n3,No valid bids,\n"
    );
    assert_eq!(
        json_lots(&json),
        vec![
            line(
                "1",
                "winner",
                &["Buyer1"],
                Some("200"),
                &[("Buyer2", "undecryptable")]
            ),
            line(
                "2",
                "winner",
                &["Buyer2"],
                Some("5"),
                &[("Buyer1", "undecryptable")]
            ),
            line(
                "3",
                "no_valid_bid",
                &[],
                None,
                &[("Buyer3", "invalid_amount")]
            ),
        ]
    );
    let header = OutputHeader::parse(&json).unwrap();
    assert_eq!(header.mode, Mode::Unsealed);
    assert_eq!(header.terms_sha256, config.digest());
    assert_eq!(header.lot_count, 3);
    assert_eq!(header.files.len(), 3);
    assert_eq!(
        set_aside_counts(&header),
        counts(&[
            ("Buyer1", "undecryptable", 1),
            ("Buyer2", "undecryptable", 1),
            ("Buyer3", "invalid_amount", 1),
        ])
    );
    enclave.wait_sessions_ended(1);

    // The same unsealed auction again in this boot: Buyer1's file holds ciphertexts already
    // opened, so the enclave refuses it and ends the session with no result.
    let mut p = world.parent(&enclave);
    p.start(&world.stack.operator, &config);
    let id = p.send(file_chunk("Buyer1", files[0].clone(), true));
    let message = p
        .client
        .expect_error(Some(id), ErrorCode::ReplayedCiphertext, true);
    assert!(message.contains("`Buyer1`"), "{message}");
    p.client.expect_eof();
    enclave.wait_sessions_ended(2);

    // The enclave is fine: the next parent gets a verified hello.
    let mut next = world.parent(&enclave);
    next.hello();
}
