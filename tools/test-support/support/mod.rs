//! Shared by the end-to-end suites: a local world (S3, KMS emulator, dev enclave, parent as
//! real processes), buyers' bids with intended outcomes, and a reference decision written
//! independently of the code under test.

#![allow(dead_code)]

use base64::Engine;
use bidding_core::kms::bid_context;
use bidding_core::names::{AuctionId, LotId};
use bidding_standins::stack::{EnclaveProcess, ParentRun, Stack, StackOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bidctl"))
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub stack: Stack,
}

pub fn world(buyers: &[&str], opts: StackOptions) -> World {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<_> = buyers
        .iter()
        .map(|b| bidding_core::names::BuyerName::new(*b).unwrap())
        .collect();
    let stack = Stack::start(dir.path(), &names, &exe(), opts).unwrap();
    World { dir, stack }
}

/// One bid as a buyer means it: the plaintext that gets encrypted, and how it is sealed.
#[derive(Clone, Debug)]
pub struct Bid {
    pub lot: String,
    pub plaintext: String,
    /// Sealed with the auction/lot/buyer encryption context (bidctl's default).
    pub context: bool,
}

pub fn bid(lot: impl ToString, plaintext: impl ToString) -> Bid {
    Bid {
        lot: lot.to_string(),
        plaintext: plaintext.to_string(),
        context: true,
    }
}

/// Seals each bid with the buyer's own key (invalid plaintexts included: a buyer using
/// `aws kms encrypt` directly is not stopped by bidctl's checks) and renders encrypted.csv.
pub fn seal(w: &World, buyer: &str, auction: &str, bids: &[Bid]) -> Vec<(String, String)> {
    let b = w.stack.buyer(buyer).unwrap();
    let client = w.stack.kms_client(&b.credentials).unwrap();
    let auction = AuctionId::new(auction).unwrap();
    let rows = std::sync::Mutex::new(vec![None; bids.len()]);
    std::thread::scope(|s| {
        for (t, part) in bids.chunks(bids.len().div_ceil(8).max(1)).enumerate() {
            let (client, rows, auction) = (&client, &rows, &auction);
            let offset = t * bids.len().div_ceil(8).max(1);
            s.spawn(move || {
                for (i, x) in part.iter().enumerate() {
                    let lot = LotId::new(&x.lot).unwrap();
                    let ctx = x
                        .context
                        .then(|| bid_context(w.stack.rules, auction, &lot, &b.name));
                    let blob = client
                        .encrypt(b.key.as_str(), x.plaintext.as_bytes(), ctx)
                        .unwrap();
                    rows.lock().unwrap()[offset + i] = Some((
                        x.lot.clone(),
                        base64::engine::general_purpose::STANDARD.encode(blob),
                    ));
                }
            });
        }
    });
    rows.into_inner()
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

pub fn csv(rows: &[(String, String)]) -> Vec<u8> {
    let mut out = String::from("[].contract,[].bid\n");
    for (lot, blob) in rows {
        out.push_str(&format!("{lot},{blob}\n"));
    }
    out.into_bytes()
}

pub fn upload(w: &World, buyer: &str, body: &[u8]) {
    let b = w.stack.buyer(buyer).unwrap();
    w.stack
        .s3_client(&b.credentials)
        .put_object(&b.bucket, "encrypted.csv", body, "text/csv")
        .unwrap();
}

pub struct Auction {
    pub id: String,
    pub reveal: &'static str,
    pub allow_no_context: bool,
    /// Sealed (the default): the operator makes the manifest and every buyer seals it before
    /// the parent runs. Unsealed: the proof of concept's flow, no seal round.
    pub sealed: bool,
    pub extra: Vec<String>,
}

impl Auction {
    pub fn new(id: &str, reveal: &'static str) -> Self {
        Auction {
            id: id.into(),
            reveal,
            allow_no_context: false,
            sealed: true,
            extra: Vec::new(),
        }
    }

    pub fn unsealed(id: &str, reveal: &'static str) -> Self {
        Auction {
            sealed: false,
            ..Auction::new(id, reveal)
        }
    }
}

pub struct Outcome {
    pub run: ParentRun,
    pub enclave_log: String,
    pub config: PathBuf,
}

/// Starts a fresh dev enclave and runs the parent against it, to the end; a sealed auction's
/// seal round (manifest, every buyer's seal) comes first.
pub fn run(w: &World, a: &Auction) -> Outcome {
    let enclave = w
        .stack
        .start_enclave(&exe(), &format!("enclave-{}", a.id), &[])
        .unwrap();
    let config = write_config(w, a, &enclave);
    if a.sealed {
        seal_round(w, &config);
    }
    run_parent(w, a, &enclave, config)
}

/// The operator makes the manifest of `config` and every buyer seals it; the manifest's bytes.
pub fn seal_round(w: &World, config: &Path) -> Vec<u8> {
    w.stack.seal_round(&exe(), config).unwrap()
}

/// Runs the parent on an already written (and, if sealed, sealed) configuration.
pub fn run_parent(w: &World, a: &Auction, enclave: &EnclaveProcess, config: PathBuf) -> Outcome {
    let extra: Vec<&str> = a.extra.iter().map(String::as_str).collect();
    let run = w.stack.run_parent(&exe(), &config, &extra).unwrap();
    let enclave_log = enclave.log_text();
    Outcome {
        run,
        enclave_log,
        config,
    }
}

pub fn write_config(w: &World, a: &Auction, enclave: &EnclaveProcess) -> PathBuf {
    let id = AuctionId::new(&a.id).unwrap();
    let path = w.dir.path().join(format!("{}.toml", a.id));
    std::fs::write(
        &path,
        w.stack.parent_config_mode(
            &id,
            &enclave.endpoint,
            a.reveal,
            a.allow_no_context,
            a.sealed,
        ),
    )
    .unwrap();
    path
}

/// Whether any result file of a run is in the output bucket.
pub fn output_exists(w: &World) -> bool {
    [
        "output.csv",
        "output.json",
        "output.csv.attestation",
        "output.csv.config.json",
    ]
    .iter()
    .any(|k| {
        w.stack
            .s3
            .object_path(
                bidding_standins::stack::OUTPUT_BUCKET,
                &w.stack.output_key(k),
            )
            .exists()
    })
}

/// Deletes an earlier run's result, as an operator may between two runs of one auction (the
/// parent refuses a new manifest beside a published result).
pub fn clear_output(w: &World) {
    for k in [
        "output.csv",
        "output.json",
        "output.csv.attestation",
        "output.csv.config.json",
    ] {
        let path = w.stack.s3.object_path(
            bidding_standins::stack::OUTPUT_BUCKET,
            &w.stack.output_key(k),
        );
        if path.exists() {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

/// What the enclave should make of a bid, decided by the test's own rules.
#[derive(Clone, Debug, PartialEq)]
pub enum Fate {
    Valid(u128),
    SetAside(&'static str),
}

/// Amount rules restated independently: at most 64 bytes in all; surrounding ASCII whitespace
/// (space, tab, LF, FF, CR) ignored; digits, optionally a point and one or two digits; leading
/// zeros are padding, and at most 18 significant digits come before the point; value in
/// hundredths.
pub fn cents(s: &str) -> Option<u128> {
    if s.len() > 64 {
        return None;
    }
    let s = s.trim_matches([' ', '\t', '\n', '\x0c', '\r']);
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || int.trim_start_matches('0').len() > 18
        || !int.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if s.contains('.') && !(1..=2).contains(&frac.len()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let f: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    Some(int.parse::<u128>().ok()? * 100 + if frac.len() == 1 { f * 10 } else { f })
}

fn show(c: u128) -> String {
    if c.is_multiple_of(100) {
        format!("{}", c / 100)
    } else {
        format!("{}.{:02}", c / 100, c % 100)
    }
}

/// The expected `output.csv`, from intended fates per lot and buyer.
pub fn expected_csv(lots: &BTreeMap<u64, Vec<(String, Fate)>>, reveal: &str) -> String {
    let priced = reveal != "none";
    let mut out = String::from(if priced {
        "Property,Result,Price\n"
    } else {
        "Property,Result\n"
    });
    for (lot, bids) in lots {
        let mut valid: Vec<(u128, &str)> = bids
            .iter()
            .filter_map(|(b, f)| match f {
                Fate::Valid(c) => Some((*c, b.as_str())),
                Fate::SetAside(_) => None,
            })
            .collect();
        valid.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        let (text, price) = match valid.first() {
            None => ("No valid bids".to_owned(), String::new()),
            Some(&(top, _)) => {
                let winners: Vec<&str> = valid.iter().filter(|v| v.0 == top).map(|v| v.1).collect();
                let second = valid.get(1).map(|v| v.0).unwrap_or(top);
                let price = match reveal {
                    "winning-bid" => show(top),
                    "second-price" => show(second),
                    _ => String::new(),
                };
                if winners.len() == 1 {
                    (format!("{} Wins", winners[0]), price)
                } else {
                    (format!("\"Tie: {}\"", winners.join(", ")), price)
                }
            }
        };
        if priced {
            out.push_str(&format!("{lot},{text},{price}\n"));
        } else {
            out.push_str(&format!("{lot},{text}\n"));
        }
    }
    out
}

/// Reads an output object, or says which run did not write it.
pub fn fetch(w: &World, key: &str) -> Vec<u8> {
    w.stack
        .fetch_output(key)
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// The parsed output.json of the last run.
pub fn output_json(w: &World) -> serde_json::Value {
    serde_json::from_slice(&fetch(w, "output.json")).unwrap()
}

/// Set-aside counts of output.json as (buyer, reason) → count.
pub fn set_aside(json: &serde_json::Value) -> BTreeMap<(String, String), u64> {
    json["set_aside"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                (
                    s["buyer"].as_str().unwrap().to_owned(),
                    s["reason"].as_str().unwrap().to_owned(),
                ),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Every file under `dir`, recursively, with its bytes.
pub fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}
