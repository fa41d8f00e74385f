//! End to end, as separate processes: buyers encrypt bids under their own KMS keys and upload
//! them to S3, the operator makes the manifest, every buyer seals it, the parent runs the
//! auction through a dev enclave, and the published output is compared byte for byte with a
//! reference computed here from the plaintexts. One run is unsealed (the proof of concept's
//! flow), and a sealed manifest run twice gives the same bytes.

#[path = "../../test-support/support/mod.rs"]
mod support;

use bidding_standins::stack::StackOptions;
use std::collections::BTreeMap;
use support::*;

const BUYERS: [&str; 4] = ["Buyer1", "Buyer2", "Buyer3", "Buyer4"];

/// Amounts that collide often (ties), decimals, leading zeros, bidctl's padded form, the
/// proof of concept's `echo 100000 > bid.txt` (a newline), surrounding whitespace, and
/// plaintexts that are not amounts at all.
const AMOUNTS: [&str; 13] = [
    "100000",
    "100000.5",
    "100000.50",
    "99999.99",
    "250000",
    "0.01",
    "007",
    "7",
    "250000.00",
    "000000000000100000.00",
    "100000\n",
    " 12",
    "\t12.00 \r\n",
];
// (KMS cannot encrypt an empty plaintext; whitespace alone is the nearest.)
const INVALID: [&str; 9] = [
    "1e5", "-5", "1 2", "1,000", "12.345", "+1", "0x10", " \n", "12.",
];

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
    /// Rows of a buyer's file that are not `<lot>,<ciphertext>`: appended to the file as
    /// is, counted per buyer as `malformed_row`, naming no lot.
    malformed: BTreeMap<&'static str, Vec<String>>,
    /// Lots a buyer's file names twice: none of its rows for the lot count (`duplicate_lot`).
    duplicated: BTreeMap<&'static str, Vec<u64>>,
}

fn scenario(lots: u64, seed: u64, allow_no_context: bool) -> Scenario {
    let mut rng = Rng(seed);
    let mut bids: BTreeMap<&'static str, Vec<Bid>> = BTreeMap::new();
    let mut fates: BTreeMap<u64, Vec<(String, Fate)>> = BTreeMap::new();
    let mut malformed: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut duplicated: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
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
            // Now and then a lot named twice in the buyer's file (a valid bid each time):
            // the whole lot is set aside for that buyer, once.
            if rng.next().is_multiple_of(40) {
                fate = Fate::SetAside("duplicate_lot");
                bids.entry(buyer).or_default().push(bid(lot, "5"));
                duplicated.entry(buyer).or_default().push(lot);
            }
            bids.entry(buyer).or_default().push(b);
            fates.entry(lot).or_default().push((buyer.to_owned(), fate));
        }
    }
    // Rows that are not rows, in two buyers' files: a bid that is not base64, a row without a
    // bid, one with three fields, a lot id that is not one, an empty ciphertext. Their lots
    // are ones nobody bids on (a row's lot counts as named even when its bid is malformed, so
    // naming a lot of the buyer's own again would make it a duplicate_lot instead).
    malformed.insert(
        "Buyer2",
        vec![
            "900001,not base64!".to_owned(),
            "900002".to_owned(),
            "900003,AQID,AQID".to_owned(),
            "=cmd,AQID".to_owned(),
        ],
    );
    malformed.insert("Buyer4", vec!["900004,".to_owned()]);
    Scenario {
        bids,
        fates,
        malformed,
        duplicated,
    }
}

/// Encrypts each buyer's bids and uploads their file (with its malformed rows); returns the
/// files' bytes.
fn upload_scenario(w: &World, s: &Scenario, id: &str) -> BTreeMap<&'static str, Vec<u8>> {
    let mut files = BTreeMap::new();
    for (buyer, bids) in &s.bids {
        let mut body = csv(&seal(w, buyer, id, bids));
        for row in s.malformed.get(buyer).into_iter().flatten() {
            body.extend_from_slice(format!("{row}\n").as_bytes());
        }
        upload(w, buyer, &body);
        files.insert(*buyer, body);
    }
    files
}

/// output.json: per lot, exactly the set-aside bids the reference expects; the set-aside
/// counts per buyer and reason; the files counted (the very bytes uploaded); the mode and the
/// terms' digest.
fn check_json(
    w: &World,
    s: &Scenario,
    files: &BTreeMap<&'static str, Vec<u8>>,
    mode: &str,
    terms: &[u8],
) {
    let json = output_json(w);
    assert_eq!(json["mode"], mode);
    assert_eq!(
        json["terms_sha256"],
        hex::encode(bidding_core::config::sha256(terms))
    );
    let lots = json["lots"].as_array().unwrap();
    assert_eq!(lots.len(), s.fates.len());
    assert_eq!(json["lot_count"], s.fates.len() as u64);
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
            .map(Vec::as_slice)
            .unwrap_or_default()
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
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    for bids in s.fates.values() {
        for (b, f) in bids {
            if let Fate::SetAside(r) = f {
                *counts.entry((b.clone(), r.to_string())).or_default() += 1;
            }
        }
    }
    for (b, rows) in &s.malformed {
        *counts
            .entry((b.to_string(), "malformed_row".into()))
            .or_default() += rows.len() as u64;
    }
    assert_eq!(set_aside(&json), counts);
    let counted: BTreeMap<String, (u64, String)> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["format"], "per-bid");
            (
                f["buyer"].as_str().unwrap().to_owned(),
                (
                    f["size"].as_u64().unwrap(),
                    f["sha256"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    let uploaded: BTreeMap<String, (u64, String)> = files
        .iter()
        .map(|(b, body)| {
            (
                b.to_string(),
                (
                    body.len() as u64,
                    hex::encode(bidding_core::config::sha256(body)),
                ),
            )
        })
        .collect();
    assert_eq!(counted, uploaded);
}

fn run_scenario(lots: u64, seed: u64, reveal: &'static str, allow_no_context: bool, sealed: bool) {
    // One image, one rule set: an unsealed auction runs on the unsealed dev enclave, whose
    // PCR0 the buyers' keys trust instead (and whose bids carry no `rules` pair).
    let w = world(
        &BUYERS,
        if sealed {
            StackOptions::default()
        } else {
            StackOptions::unsealed()
        },
    );
    let s = scenario(lots, seed, allow_no_context);
    assert!(
        lots < 200 || !s.duplicated.is_empty(),
        "a large scenario names some lots twice"
    );
    let id = format!("e2e-{seed}");
    let files = upload_scenario(&w, &s, &id);
    let mut a = Auction::new(&id, reveal);
    a.allow_no_context = allow_no_context;
    a.sealed = sealed;
    let out = run(&w, &a);
    assert_eq!(
        out.run.code,
        Some(0),
        "parent failed:\n{}\nenclave:\n{}",
        out.run.stderr,
        out.enclave_log
    );
    let got = String::from_utf8(fetch(&w, "output.csv")).unwrap();
    assert_eq!(got, expected_csv(&s.fates, reveal));
    if sealed {
        let manifest = fetch(&w, "manifest.json");
        check_json(&w, &s, &files, "sealed", &manifest);
        assert!(
            !w.stack
                .s3
                .object_path(
                    bidding_standins::stack::OUTPUT_BUCKET,
                    "output.csv.config.json"
                )
                .exists()
        );
    } else {
        let config = fetch(&w, "output.csv.config.json");
        check_json(&w, &s, &files, "unsealed", &config);
        assert!(
            out.run.stderr.contains("UNSEALED"),
            "the parent says plainly the run is unsealed: {}",
            out.run.stderr
        );
    }
}

/// 2,000 lots, 4 buyers, every kind of awkward input, Vickrey prices.
#[test]
fn two_thousand_lots_second_price() {
    run_scenario(2000, 0x5eed_0001, "second-price", false, true);
}

/// Bids without a context count only on the unsealed image (a sealed manifest never allows
/// them: such a ciphertext opens under every image its key ever trusted).
#[test]
fn winners_only_with_bids_without_context_allowed() {
    run_scenario(120, 0x5eed_0002, "none", true, false);
}

#[test]
fn winning_bid_revealed() {
    run_scenario(120, 0x5eed_0003, "winning-bid", false, true);
}

/// The proof of concept's flow, without a seal round: the same decisions, the result says
/// UNSEALED and commits to the configuration instead of a manifest.
#[test]
fn unsealed_run_matches_the_reference() {
    run_scenario(120, 0x5eed_0004, "second-price", false, false);
}

/// A sealed manifest may run again, against the same enclave boot (no replay guard in sealed
/// mode): the same output.csv and output.json, byte for byte.
#[test]
fn rerun_of_a_sealed_manifest_gives_the_same_bytes() {
    let w = world(&BUYERS, StackOptions::default());
    let s = scenario(150, 0x5eed_0005, false);
    let id = "e2e-rerun";
    upload_scenario(&w, &s, id);
    let a = Auction::new(id, "winning-bid");
    let enclave = w.stack.start_enclave(&exe(), "enclave-rerun", &[]).unwrap();
    let config = write_config(&w, &a, &enclave);
    let manifest = seal_round(&w, &config);
    let mut outputs = Vec::new();
    for attempt in 0..2 {
        let out = run_parent(&w, &a, &enclave, config.clone());
        assert_eq!(
            out.run.code,
            Some(0),
            "run {attempt}:\n{}\nenclave:\n{}",
            out.run.stderr,
            out.enclave_log
        );
        outputs.push((
            fetch(&w, "output.csv"),
            fetch(&w, "output.json"),
            fetch(&w, "output.csv.attestation"),
        ));
        // Nothing left behind for the second run to pick up.
        for key in ["output.csv", "output.json", "output.csv.attestation"] {
            std::fs::remove_file(w.stack.s3.object_path(
                bidding_standins::stack::OUTPUT_BUCKET,
                &w.stack.output_key(key),
            ))
            .unwrap();
        }
    }
    assert_eq!(fetch(&w, "manifest.json"), manifest);
    let (first, second) = (&outputs[0], &outputs[1]);
    assert_eq!(
        String::from_utf8(first.0.clone()).unwrap(),
        expected_csv(&s.fates, "winning-bid")
    );
    assert!(first.0 == second.0, "output.csv differs between reruns");
    assert!(first.1 == second.1, "output.json differs between reruns");
    // Each run has its own attestation (its own time), committing to the same bytes.
    assert!(first.2 != second.2);
}

/// The proof of concept's inputs keep working on the unsealed image (its flow, no seal round):
/// `aws kms encrypt`-style bids (no context) in `[].contract,[].bid` files, output
/// `Property,Result` with `1,Buyer1 Wins`.
#[test]
fn proof_of_concept_shape() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::unsealed());
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
    let mut a = Auction::unsealed("poc", "none");
    a.allow_no_context = true;
    let out = run(&w, &a);
    assert_eq!(out.run.code, Some(0), "{}", out.run.stderr);
    assert_eq!(
        String::from_utf8(w.stack.fetch_output("output.csv").unwrap()).unwrap(),
        "Property,Result\n1,Buyer1 Wins\n2,Buyer2 Wins\n3,\"Tie: Buyer1, Buyer2\"\n"
    );
}
