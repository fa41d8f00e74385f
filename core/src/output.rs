//! Rendering results: the proof of concept's `output.csv`, and a JSON form with reason codes.
//!
//! Both are deterministic byte for byte: the result attestation commits to the CSV bytes, and
//! the parent re-renders them from the lot results to check the enclave's digest.

use crate::auction::{LotResult, Outcome, Reason, RevealPolicy};
use crate::config::{AuctionConfig, Mode};
use crate::manifest::FileFormat;
use crate::names::{AuctionId, BuyerName, LotId};
use crate::wire::message::hex32;
use serde::{Deserialize, Serialize};

/// Sorts results into output order: numeric-aware by lot id.
pub fn sort_results(results: &mut [LotResult]) {
    results.sort_by(|a, b| a.lot.natural_cmp(&b.lot));
}

/// The text of the `Result` column.
pub fn result_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Winner { buyer, .. } => format!("{buyer} Wins"),
        Outcome::Tie { buyers, .. } => {
            let names: Vec<&str> = buyers.iter().map(BuyerName::as_str).collect();
            format!("Tie: {}", names.join(", "))
        }
        Outcome::NoValidBid => "No valid bids".to_owned(),
    }
}

/// `output.csv`: header `Property,Result` (plus `Price` when the policy reveals one), LF line
/// ends, fields quoted only when needed (a tie's `Tie: A, B` contains a comma). `results` must
/// already be in output order.
pub fn render_csv(results: &[LotResult], policy: RevealPolicy) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::with_capacity(results.len() * 24 + 32));
    let write = |w: &mut csv::Writer<Vec<u8>>, rec: &[&str]| {
        w.write_record(rec)
            .expect("writing CSV into memory cannot fail")
    };
    if policy.reveals_price() {
        write(&mut w, &["Property", "Result", "Price"]);
    } else {
        write(&mut w, &["Property", "Result"]);
    }
    for r in results {
        let text = result_text(&r.outcome);
        if policy.reveals_price() {
            let price = r.outcome.price().map(|p| p.to_string()).unwrap_or_default();
            write(&mut w, &[r.lot.as_str(), &text, &price]);
        } else {
            write(&mut w, &[r.lot.as_str(), &text]);
        }
    }
    w.into_inner().expect("flushing into memory cannot fail")
}

/// A buyer's file as the enclave received it: what counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSummary {
    pub buyer: BuyerName,
    pub format: FileFormat,
    pub size: u64,
    #[serde(with = "hex32")]
    pub sha256: [u8; 32],
}

/// At most this many lot ids per set-aside record; the rest are only counted, so that
/// `output.json`'s header and the parent's log line stay small whatever the auction's size.
pub const MAX_LISTED_LOTS: usize = 20;

/// How many of a buyer's bids were set aside for one reason, and, where the operator may
/// know them, on which lots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAside {
    pub buyer: BuyerName,
    pub reason: Reason,
    pub count: u64,
    /// `None`: no lots are listed. The enclave lists lots only for a per-bid file, whose
    /// contract column the operator reads in plain text anyway (and only for reasons tied to
    /// a lot: a malformed row or file names none). An envelope file's lots are secret from
    /// the operator, so its records must say nothing about them: the caller decides, per
    /// record, and `None` is the only answer for anything but a per-bid file. Absent from
    /// the JSON when `None` (and in `output.json` files written before lots were listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lots: Option<ListedLots>,
}

/// The lots of a set-aside record: the first few in output order, then a count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedLots {
    /// At most [`MAX_LISTED_LOTS`], in output order.
    pub first: Vec<LotId>,
    /// Set-aside bids of the record beyond those on `first`.
    pub more: u64,
}

impl ListedLots {
    /// The record's lots from the decided results (in output order): the lots where `buyer`
    /// had a bid set aside for `reason`, the first [`MAX_LISTED_LOTS`] named and the rest of
    /// `count` counted.
    pub fn from_results(
        results: &[LotResult],
        buyer: &BuyerName,
        reason: Reason,
        count: u64,
    ) -> ListedLots {
        let first: Vec<LotId> = results
            .iter()
            .filter(|r| {
                r.disqualified
                    .iter()
                    .any(|d| d.reason == reason && &d.buyer == buyer)
            })
            .take(MAX_LISTED_LOTS)
            .map(|r| r.lot.clone())
            .collect();
        ListedLots {
            more: count.saturating_sub(first.len() as u64),
            first,
        }
    }

    /// `on lots 1, 2, 3`, `on lot 7`, `on lots 1, …, 20 and 5 more`: lot ids, nothing else.
    pub fn describe(&self) -> String {
        if self.first.is_empty() {
            return String::new();
        }
        let ids: Vec<&str> = self.first.iter().map(LotId::as_str).collect();
        let word = if ids.len() == 1 && self.more == 0 {
            "lot"
        } else {
            "lots"
        };
        let mut text = format!("on {word} {}", ids.join(", "));
        if self.more > 0 {
            text.push_str(&format!(" and {} more", self.more));
        }
        text
    }
}

/// Everything `output.json` says besides the lots, for readers (the parent's summary,
/// `bidctl verify`). The attestation commits to the whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OutputHeader {
    pub auction_id: AuctionId,
    pub mode: Mode,
    #[serde(with = "hex32")]
    pub terms_sha256: [u8; 32],
    pub reveal: RevealPolicy,
    pub lot_count: u64,
    pub files: Vec<FileSummary>,
    pub set_aside: Vec<SetAside>,
}

impl OutputHeader {
    pub fn parse(json: &[u8]) -> Result<OutputHeader, String> {
        let header: OutputHeader =
            serde_json::from_slice(json).map_err(|e| format!("output.json: {e}"))?;
        for s in &header.set_aside {
            if let Some(l) = &s.lots
                && (l.first.len() > MAX_LISTED_LOTS
                    || (l.first.len() as u64).saturating_add(l.more) > s.count)
            {
                return Err(format!(
                    "output.json: buyer `{}`'s set-aside record ({}) lists more lots than it has bids, or over {MAX_LISTED_LOTS}",
                    s.buyer, s.reason
                ));
            }
        }
        Ok(header)
    }
}

/// What `output.json` is made of.
pub struct Report<'a> {
    pub config: &'a AuctionConfig,
    pub mode: Mode,
    pub terms_sha256: [u8; 32],
    pub files: &'a [FileSummary],
    /// In the buyers' configured order, then by reason.
    pub set_aside: &'a [SetAside],
    /// In output order.
    pub results: &'a [LotResult],
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    auction_id: &'a str,
    mode: Mode,
    #[serde(with = "hex32")]
    terms_sha256: &'a [u8; 32],
    reveal: RevealPolicy,
    lot_count: u64,
    files: &'a [FileSummary],
    set_aside: &'a [SetAside],
    lots: Vec<JsonLot<'a>>,
}

#[derive(Serialize)]
struct JsonLot<'a> {
    lot: &'a LotId,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    winner: Option<&'a BuyerName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tied: Option<&'a [BuyerName]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    disqualified: Vec<JsonDisq<'a>>,
}

#[derive(Serialize)]
struct JsonDisq<'a> {
    buyer: &'a BuyerName,
    reason: Reason,
}

/// `output.json`: the mode, the terms' digest, every file that counted, the set-aside counts
/// per buyer and reason, and each lot's result with the reasons its bids were set aside.
/// Never an amount beyond the price the reveal policy asks for.
pub fn render_json(report: &Report<'_>) -> Vec<u8> {
    let lots = report
        .results
        .iter()
        .map(|r| {
            let (result, winner, tied) = match &r.outcome {
                Outcome::Winner { buyer, .. } => ("winner", Some(buyer), None),
                Outcome::Tie { buyers, .. } => ("tie", None, Some(buyers.as_slice())),
                Outcome::NoValidBid => ("no_valid_bid", None, None),
            };
            JsonLot {
                lot: &r.lot,
                result,
                winner,
                tied,
                price: r.outcome.price().map(|p| p.to_string()),
                disqualified: r
                    .disqualified
                    .iter()
                    .map(|d| JsonDisq {
                        buyer: &d.buyer,
                        reason: d.reason,
                    })
                    .collect(),
            }
        })
        .collect();
    let doc = JsonOutput {
        auction_id: report.config.auction_id().as_str(),
        mode: report.mode,
        terms_sha256: &report.terms_sha256,
        reveal: report.config.reveal(),
        lot_count: report.results.len() as u64,
        files: report.files,
        set_aside: report.set_aside,
        lots,
    };
    // One lot per line keeps a million-lot file small and still readable.
    let mut out = serde_json::to_vec(&doc).expect("serialising strings cannot fail");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::Amount;
    use crate::auction::{Disqualified, Price};

    fn lot(id: &str, outcome: Outcome) -> LotResult {
        LotResult {
            lot: LotId::new(id).unwrap(),
            outcome,
            disqualified: vec![],
        }
    }
    fn b(n: &str) -> BuyerName {
        BuyerName::new(n).unwrap()
    }

    #[test]
    fn proof_of_concept_shape() {
        let mut results = vec![
            lot("10", Outcome::NoValidBid),
            lot(
                "2",
                Outcome::Tie {
                    buyers: vec![b("Buyer1"), b("Buyer2")],
                    price: None,
                },
            ),
            lot(
                "1",
                Outcome::Winner {
                    buyer: b("Buyer1"),
                    price: None,
                },
            ),
        ];
        sort_results(&mut results);
        let csv = render_csv(&results, RevealPolicy::None);
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "Property,Result\n1,Buyer1 Wins\n2,\"Tie: Buyer1, Buyer2\"\n10,No valid bids\n"
        );
    }

    #[test]
    fn price_column_only_when_revealed() {
        let p = Some(Price(Amount::parse(b"1234.5").unwrap()));
        let mut r = lot(
            "7",
            Outcome::Winner {
                buyer: b("B"),
                price: p,
            },
        );
        r.disqualified.push(Disqualified {
            buyer: b("C"),
            reason: Reason::WrongKey,
        });
        let results = [r, lot("8", Outcome::NoValidBid)];
        let csv = render_csv(&results, RevealPolicy::SecondPrice);
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "Property,Result,Price\n7,B Wins,1234.50\n8,No valid bids,\n"
        );
        let config = AuctionConfig::new(
            crate::names::AuctionId::new("x").unwrap(),
            vec![crate::config::BuyerSpec {
                name: b("B"),
                key_arn: crate::names::KeyArn::new("arn:aws:kms:us-east-1:111122223333:key/k")
                    .unwrap(),
            }],
            RevealPolicy::SecondPrice,
            false,
        )
        .unwrap();
        let files = [FileSummary {
            buyer: b("B"),
            format: FileFormat::PerBid,
            size: 12,
            sha256: [7; 32],
        }];
        let set_aside = [SetAside {
            buyer: b("C"),
            reason: Reason::WrongKey,
            count: 1,
            lots: Some(ListedLots::from_results(
                &results,
                &b("C"),
                Reason::WrongKey,
                1,
            )),
        }];
        let report = Report {
            config: &config,
            mode: Mode::Sealed,
            terms_sha256: [9; 32],
            files: &files,
            set_aside: &set_aside,
            results: &results,
        };
        let json = String::from_utf8(render_json(&report)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["lots"][0]["price"], "1234.50");
        assert_eq!(v["lots"][0]["disqualified"][0]["reason"], "wrong_key");
        assert_eq!(v["lots"][1]["result"], "no_valid_bid");
        assert_eq!(v["mode"], "sealed");
        assert_eq!(json, String::from_utf8(render_json(&report)).unwrap());
        let header = OutputHeader::parse(json.as_bytes()).unwrap();
        assert_eq!(header.files, files);
        assert_eq!(header.set_aside, set_aside);
        assert_eq!(header.lot_count, 2);
        assert_eq!(header.terms_sha256, [9; 32]);
        assert_eq!(
            v["set_aside"][0]["lots"],
            serde_json::json!({"first": ["7"], "more": 0})
        );
        assert_eq!(set_aside[0].lots.as_ref().unwrap().describe(), "on lot 7");
    }

    fn set_aside_on(lots: u64, buyer: &str) -> Vec<LotResult> {
        (1..=lots)
            .map(|i| LotResult {
                lot: LotId::new(i.to_string()).unwrap(),
                outcome: Outcome::NoValidBid,
                disqualified: vec![Disqualified {
                    buyer: b(buyer),
                    reason: Reason::InvalidAmount,
                }],
            })
            .collect()
    }

    #[test]
    fn listed_lots_are_bounded_and_counted() {
        let results = set_aside_on(25, "A");
        let l = ListedLots::from_results(&results, &b("A"), Reason::InvalidAmount, 25);
        assert_eq!(l.first.len(), MAX_LISTED_LOTS);
        assert_eq!(l.more, 5);
        assert!(l.describe().starts_with("on lots 1, 2, 3, "));
        assert!(l.describe().ends_with(", 20 and 5 more"));
        let three = ListedLots::from_results(&results[..3], &b("A"), Reason::InvalidAmount, 3);
        assert_eq!(three.describe(), "on lots 1, 2, 3");
        // Another buyer or reason: nothing of A's.
        let none = ListedLots::from_results(&results, &b("B"), Reason::InvalidAmount, 0);
        assert_eq!(
            (none.first.len(), none.more, none.describe()),
            (0, 0, String::new())
        );
    }

    #[test]
    fn header_without_lots_parses_and_oversized_lists_do_not() {
        let base = r#"{"auction_id":"x","mode":"sealed","terms_sha256":"0000000000000000000000000000000000000000000000000000000000000000","reveal":"none","lot_count":0,"files":[],"set_aside":[SA],"lots":[]}"#;
        let old = base.replace("SA", r#"{"buyer":"A","reason":"malformed_row","count":2}"#);
        let h = OutputHeader::parse(old.as_bytes()).unwrap();
        assert_eq!(h.set_aside[0].lots, None);
        let ids: Vec<String> = (0..=MAX_LISTED_LOTS).map(|i| format!("\"{i}\"")).collect();
        let long = base.replace(
            "SA",
            &format!(
                r#"{{"buyer":"A","reason":"invalid_amount","count":100,"lots":{{"first":[{}],"more":0}}}}"#,
                ids.join(",")
            ),
        );
        assert!(OutputHeader::parse(long.as_bytes()).is_err());
        let over = base.replace(
            "SA",
            r#"{"buyer":"A","reason":"invalid_amount","count":1,"lots":{"first":["1"],"more":1}}"#,
        );
        assert!(OutputHeader::parse(over.as_bytes()).is_err());
    }
}
