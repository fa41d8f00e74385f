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

/// How many of a buyer's bids were set aside for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAside {
    pub buyer: BuyerName,
    pub reason: Reason,
    pub count: u64,
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
        serde_json::from_slice(json).map_err(|e| format!("output.json: {e}"))
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
    }
}
