//! End to end, as separate processes: buyers seal bids under their own KMS keys and upload
//! them to S3, the parent runs the auction through a dev enclave, and the published output is
//! compared byte for byte with a reference computed here from the plaintexts.

mod support;

use bidding_tools::stack::StackOptions;
use std::collections::BTreeMap;
use support::*;

const BUYERS: [&str; 4] = ["Buyer1", "Buyer2", "Buyer3", "Buyer4"];

/// Amounts that collide often (ties), decimals, leading zeros, and plaintexts that are not
/// amounts at all.
const AMOUNTS: [&str; 9] = [
    "100000",
    "100000.5",
    "100000.50",
    "99999.99",
    "250000",
    "0.01",
    "007",
    "7",
    "250000.00",
];
const INVALID: [&str; 7] = ["1e5", "-5", " 12", "1,000", "12.345", "+1", "0x10"];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

struct Scenario {
    bids: BTreeMap<&'static str, Vec<Bid>>,
    fates: BTreeMap<u64, Vec<(String, Fate)>>,
}

fn scenario(lots: u64, seed: u64, allow_no_context: bool) -> Scenario {
    let mut rng = Rng(seed);
    let mut bids: BTreeMap<&'static str, Vec<Bid>> = BTreeMap::new();
    let mut fates: BTreeMap<u64, Vec<(String, Fate)>> = BTreeMap::new();
    for lot in 1..=lots {
        for buyer in BUYERS {
            let roll = rng.next() % 100;
            if roll < 20 {
                continue; // this buyer skips the lot
            }
            let (plaintext, mut fate) = if roll < 24 {
                (
                    rng.pick(&INVALID).to_owned(),
                    Fate::SetAside("invalid_amount"),
                )
            } else if roll < 60 {
                let a = rng.pick(&AMOUNTS);
                (a.to_owned(), Fate::Valid(cents(a).unwrap()))
            } else {
                let v = format!("{}.{:02}", 1000 + rng.next() % 5000, rng.next() % 100);
                let c = cents(&v).unwrap();
                (v, Fate::Valid(c))
            };
            let mut b = bid(lot, plaintext);
            // A few bids made like `aws kms encrypt`, without an encryption context.
            if rng.next().is_multiple_of(25) {
                b.context = false;
                if !allow_no_context {
                    fate = Fate::SetAside("undecryptable");
                }
            }
            bids.entry(buyer).or_default().push(b);
            fates.entry(lot).or_default().push((buyer.to_owned(), fate));
        }
    }
    Scenario { bids, fates }
}

fn check_json(w: &World, s: &Scenario) {
    let json: serde_json::Value =
        serde_json::from_slice(&w.stack.fetch_output("output.json").unwrap()).unwrap();
    let lots = json["lots"].as_array().unwrap();
    assert_eq!(lots.len(), s.fates.len());
    for l in lots {
        let lot: u64 = l["lot"].as_str().unwrap().parse().unwrap();
        let mut expected: Vec<(String, &str)> = s.fates[&lot]
            .iter()
            .filter_map(|(b, f)| match f {
                Fate::SetAside(r) => Some((b.clone(), *r)),
                Fate::Valid(_) => None,
            })
            .collect();
        expected.sort();
        let mut got: Vec<(String, &str)> = l["disqualified"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["buyer"].as_str().unwrap().to_owned(),
                    d["reason"].as_str().unwrap(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(got, expected, "lot {lot}");
    }
}

fn run_scenario(lots: u64, seed: u64, reveal: &'static str, allow_no_context: bool) {
    let w = world(&BUYERS, StackOptions::default());
    let s = scenario(lots, seed, allow_no_context);
    let id = format!("e2e-{seed}");
    for (buyer, bids) in &s.bids {
        upload(&w, buyer, &csv(&seal(&w, buyer, &id, bids)));
    }
    let mut a = Auction::new(&id, reveal);
    a.allow_no_context = allow_no_context;
    let out = run(&w, &a);
    assert_eq!(
        out.run.code,
        Some(0),
        "parent failed:\n{}\nenclave:\n{}",
        out.run.stderr,
        out.enclave_log
    );
    let got = String::from_utf8(w.stack.fetch_output("output.csv").unwrap()).unwrap();
    assert_eq!(got, expected_csv(&s.fates, reveal));
    check_json(&w, &s);
}

/// 2,000 lots, 4 buyers, every kind of awkward input, Vickrey prices.
#[test]
fn two_thousand_lots_second_price() {
    run_scenario(2000, 0x5eed_0001, "second-price", false);
}

#[test]
fn winners_only_with_bids_without_context_allowed() {
    run_scenario(120, 0x5eed_0002, "none", true);
}

#[test]
fn winning_bid_revealed() {
    run_scenario(120, 0x5eed_0003, "winning-bid", false);
}

/// The proof of concept's inputs keep working: `aws kms encrypt`-style bids (no context) in
/// `[].contract,[].bid` files, output `Property,Result` with `1,Buyer1 Wins`.
#[test]
fn proof_of_concept_shape() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    let poc = |amounts: [&str; 3]| -> Vec<Bid> {
        amounts
            .iter()
            .enumerate()
            .map(|(i, a)| Bid {
                lot: (i + 1).to_string(),
                plaintext: a.to_string(),
                context: false,
            })
            .collect()
    };
    upload(
        &w,
        "Buyer1",
        &csv(&seal(
            &w,
            "Buyer1",
            "poc",
            &poc(["100000", "200000", "150000"]),
        )),
    );
    upload(
        &w,
        "Buyer2",
        &csv(&seal(
            &w,
            "Buyer2",
            "poc",
            &poc(["90000", "210000", "150000"]),
        )),
    );
    let mut a = Auction::new("poc", "none");
    a.allow_no_context = true;
    let out = run(&w, &a);
    assert_eq!(out.run.code, Some(0), "{}", out.run.stderr);
    assert_eq!(
        String::from_utf8(w.stack.fetch_output("output.csv").unwrap()).unwrap(),
        "Property,Result\n1,Buyer1 Wins\n2,Buyer2 Wins\n3,\"Tie: Buyer1, Buyer2\"\n"
    );
}
