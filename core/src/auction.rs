//! Winner selection: the one decision the enclave exists to make.
//!
//! Pure and order-independent: the outcome of a lot depends on the set of (buyer, verdict)
//! pairs, never on the order buyers were configured or bids arrived in.

use crate::amount::Amount;
use crate::names::{BuyerName, LotId, natural_cmp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::fmt;

/// What the output reveals besides the winner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevealPolicy {
    /// Only who won (the proof of concept's behaviour).
    #[default]
    None,
    /// Also the winning bid.
    WinningBid,
    /// Also the second-highest valid bid, which is what the winner pays in a Vickrey auction.
    /// With a single valid bid there is no second price and the winner pays its own bid (the
    /// lone bid acts as its own reserve); on a tie the price is the tied amount.
    SecondPrice,
}

impl RevealPolicy {
    pub fn reveals_price(self) -> bool {
        self != RevealPolicy::None
    }
}

impl fmt::Display for RevealPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RevealPolicy::None => "none",
            RevealPolicy::WinningBid => "winning-bid",
            RevealPolicy::SecondPrice => "second-price",
        })
    }
}

impl std::str::FromStr for RevealPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(RevealPolicy::None),
            "winning-bid" => Ok(RevealPolicy::WinningBid),
            "second-price" => Ok(RevealPolicy::SecondPrice),
            other => Err(format!(
                "unknown reveal policy `{other}` (expected none, winning-bid or second-price)"
            )),
        }
    }
}

/// Why a bid was set aside. Says what went wrong, never what the bid was. Only failures the
/// buyer alone can cause are reasons: anything the operator could cause (KMS access denied,
/// throttling, a key made unusable, credentials refused, a file that differs from the
/// manifest) fails the whole auction instead, because leaving a bid out could change a winner.
/// Each reason is a deterministic function of the sealed file, so every run of one manifest
/// sets aside the same bids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Decrypted, but the plaintext is not a valid amount.
    InvalidAmount,
    /// KMS refused the ciphertext (tampered, not a KMS ciphertext, or made for another
    /// auction, lot or buyer: the encryption context did not match).
    Undecryptable,
    /// Encrypted under a key other than the buyer's registered one.
    WrongKey,
    /// The buyer's file names this lot more than once; none of its rows for the lot count.
    DuplicateLot,
    /// A row of the buyer's file is not `<lot id>,<bid>` (counted per buyer; it names no lot).
    MalformedRow,
    /// The buyer's file as a whole is not a bid file: wrong header, not CSV, not UTF-8, or an
    /// envelope that fails a check (counted per buyer).
    MalformedFile,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::InvalidAmount => "invalid_amount",
            Reason::Undecryptable => "undecryptable",
            Reason::WrongKey => "wrong_key",
            Reason::DuplicateLot => "duplicate_lot",
            Reason::MalformedRow => "malformed_row",
            Reason::MalformedFile => "malformed_file",
        }
    }

    /// Whether a set-aside count for this reason counts files rather than bids: a file that is
    /// not a bid file at all is set aside whole, as one, however many bids it held.
    pub fn is_whole_file(self) -> bool {
        self == Reason::MalformedFile
    }

    /// What `n` set aside for this reason are, in words: `1 bid`, `3 bids`, or for files set
    /// aside whole `the whole file` (`2 whole files`). Every log line and report that counts
    /// set-aside records words them with this, so a whole file is never called a bid.
    pub fn counted(self, n: u64) -> String {
        match (self.is_whole_file(), n) {
            (true, 1) => "the whole file".to_owned(),
            (true, n) => format!("{n} whole files"),
            (false, n) => crate::count(n, "bid", "bids"),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount that the auction's reveal policy deliberately lets out of the enclave. The only
/// path by which any amount can be serialised.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Price(pub Amount);

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
impl fmt::Debug for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Price({})", self.0)
    }
}
impl Serialize for Price {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}
impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Amount::parse(s.as_bytes())
            .map(Price)
            .map_err(serde::de::Error::custom)
    }
}

/// The result of one lot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    Winner {
        buyer: BuyerName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        price: Option<Price>,
    },
    /// Several buyers share the highest valid bid. Named in name order; never resolved silently.
    Tie {
        buyers: Vec<BuyerName>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        price: Option<Price>,
    },
    NoValidBid,
}

impl Outcome {
    pub fn price(&self) -> Option<Price> {
        match self {
            Outcome::Winner { price, .. } | Outcome::Tie { price, .. } => *price,
            Outcome::NoValidBid => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disqualified {
    pub buyer: BuyerName,
    pub reason: Reason,
}

/// A lot's outcome plus the bids set aside, as reported and rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LotResult {
    pub lot: LotId,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disqualified: Vec<Disqualified>,
}

/// One buyer's bid on a lot after opening.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid(Amount),
    Disqualified(Reason),
}

impl fmt::Debug for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Valid(_) => f.write_str("Valid(<redacted>)"),
            Verdict::Disqualified(r) => write!(f, "Disqualified({r})"),
        }
    }
}

/// Decides a lot. Buyers that did not bid are simply absent from `bids`. A buyer is cloned only
/// where the result names it (winner, tie, disqualified), so `bids` may borrow the names.
pub fn decide<B: Borrow<BuyerName>>(
    lot: LotId,
    bids: impl IntoIterator<Item = (B, Verdict)>,
    policy: RevealPolicy,
) -> LotResult {
    let mut valid: Vec<(Amount, B)> = Vec::new();
    let mut disqualified = Vec::new();
    for (buyer, verdict) in bids {
        match verdict {
            Verdict::Valid(amount) => valid.push((amount, buyer)),
            Verdict::Disqualified(reason) => disqualified.push(Disqualified {
                buyer: buyer.borrow().clone(),
                reason,
            }),
        }
    }
    disqualified.sort_by(|a, b| natural_cmp(a.buyer.as_str(), b.buyer.as_str()));
    // Highest first; equal amounts in name order so ties list deterministically.
    valid.sort_by(|(a, x), (b, y)| {
        b.cmp(a)
            .then_with(|| natural_cmp(x.borrow().as_str(), y.borrow().as_str()))
    });

    let outcome = match valid.first() {
        None => Outcome::NoValidBid,
        Some(&(top, _)) => {
            let tied = valid.iter().take_while(|(a, _)| *a == top).count();
            let second = valid.get(1).map(|(a, _)| *a);
            let price = match policy {
                RevealPolicy::None => None,
                RevealPolicy::WinningBid => Some(Price(top)),
                RevealPolicy::SecondPrice => Some(Price(second.unwrap_or(top))),
            };
            if tied > 1 {
                Outcome::Tie {
                    buyers: valid[..tied]
                        .iter()
                        .map(|(_, b)| b.borrow().clone())
                        .collect(),
                    price,
                }
            } else {
                Outcome::Winner {
                    buyer: valid[0].1.borrow().clone(),
                    price,
                }
            }
        }
    };
    LotResult {
        lot,
        outcome,
        disqualified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn amt(s: &str) -> Amount {
        Amount::parse(s.as_bytes()).unwrap()
    }
    fn name(s: &str) -> BuyerName {
        BuyerName::new(s).unwrap()
    }
    fn lot() -> LotId {
        LotId::new("1").unwrap()
    }

    #[test]
    fn a_whole_file_is_counted_as_a_file() {
        assert_eq!(Reason::MalformedFile.counted(1), "the whole file");
        assert_eq!(Reason::MalformedFile.counted(2), "2 whole files");
        assert_eq!(Reason::InvalidAmount.counted(1), "1 bid");
        assert_eq!(Reason::MalformedRow.counted(3), "3 bids");
    }

    #[test]
    fn proof_of_concept_cases() {
        let r = decide(
            lot(),
            [
                (name("Buyer1"), Verdict::Valid(amt("100000"))),
                (name("Buyer2"), Verdict::Valid(amt("90000"))),
            ],
            RevealPolicy::None,
        );
        assert_eq!(
            r.outcome,
            Outcome::Winner {
                buyer: name("Buyer1"),
                price: None
            }
        );
        // The proof of concept gave ties to Buyer1; we name both.
        let r = decide(
            lot(),
            [
                (name("Buyer2"), Verdict::Valid(amt("5"))),
                (name("Buyer1"), Verdict::Valid(amt("5.00"))),
            ],
            RevealPolicy::None,
        );
        assert_eq!(
            r.outcome,
            Outcome::Tie {
                buyers: vec![name("Buyer1"), name("Buyer2")],
                price: None
            }
        );
    }

    #[test]
    fn prices_per_policy() {
        let bids = || {
            [
                (name("A"), Verdict::Valid(amt("10"))),
                (name("B"), Verdict::Valid(amt("7.5"))),
                (name("C"), Verdict::Disqualified(Reason::InvalidAmount)),
            ]
        };
        let price = |p| {
            decide(lot(), bids(), p)
                .outcome
                .price()
                .map(|p| p.to_string())
        };
        assert_eq!(price(RevealPolicy::None), None);
        assert_eq!(price(RevealPolicy::WinningBid).as_deref(), Some("10"));
        assert_eq!(price(RevealPolicy::SecondPrice).as_deref(), Some("7.50"));
        let lone = decide(
            lot(),
            [(name("A"), Verdict::Valid(amt("3")))],
            RevealPolicy::SecondPrice,
        );
        assert_eq!(lone.outcome.price().unwrap().to_string(), "3");
        let r = decide(lot(), bids(), RevealPolicy::None);
        assert_eq!(
            r.disqualified,
            vec![Disqualified {
                buyer: name("C"),
                reason: Reason::InvalidAmount
            }]
        );
    }

    #[test]
    fn no_valid_bid() {
        let r = decide(
            lot(),
            [(name("A"), Verdict::Disqualified(Reason::WrongKey))],
            RevealPolicy::WinningBid,
        );
        assert_eq!(r.outcome, Outcome::NoValidBid);
        assert_eq!(
            decide::<BuyerName>(lot(), [], RevealPolicy::None).outcome,
            Outcome::NoValidBid
        );
    }

    fn verdict() -> impl Strategy<Value = Verdict> {
        prop_oneof![
            4 => (0u64..6).prop_map(|v| Verdict::Valid(amt(&v.to_string()))),
            1 => Just(Verdict::Disqualified(Reason::Undecryptable)),
        ]
    }

    proptest! {
        #[test]
        fn invariants(verdicts in proptest::collection::vec(verdict(), 0..12), seed in any::<u64>(), policy in prop_oneof![Just(RevealPolicy::None), Just(RevealPolicy::WinningBid), Just(RevealPolicy::SecondPrice)]) {
            let bids: Vec<(BuyerName, Verdict)> = verdicts.iter().enumerate().map(|(i, v)| (name(&format!("B{i}")), *v)).collect();
            let result = decide(lot(), bids.clone(), policy);

            // Permuting the buyers never changes anything.
            let mut shuffled = bids.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(&decide(lot(), shuffled, policy), &result);

            let valid: Vec<(&BuyerName, Amount)> = bids.iter().filter_map(|(b, v)| match v { Verdict::Valid(a) => Some((b, *a)), _ => None }).collect();
            let max = valid.iter().map(|(_, a)| *a).max();
            let holders: Vec<&BuyerName> = valid.iter().filter(|(_, a)| Some(*a) == max).map(|(b, _)| *b).collect();
            match &result.outcome {
                Outcome::NoValidBid => prop_assert!(valid.is_empty()),
                Outcome::Winner { buyer, .. } => {
                    // The winner's bid is at least every valid bid, and nobody else has it.
                    prop_assert_eq!(holders, vec![buyer]);
                }
                Outcome::Tie { buyers, .. } => {
                    // A tie exactly when the maximum is shared, naming every holder.
                    prop_assert!(buyers.len() >= 2);
                    let mut h: Vec<&BuyerName> = holders.clone();
                    h.sort_by(|a, b| natural_cmp(a.as_str(), b.as_str()));
                    prop_assert_eq!(h, buyers.iter().collect::<Vec<_>>());
                }
            }
            let n_disq = bids.len() - valid.len();
            prop_assert_eq!(result.disqualified.len(), n_disq);
            if policy == RevealPolicy::None { prop_assert_eq!(result.outcome.price(), None); }
            if let (Some(p), Some(m)) = (result.outcome.price(), max) { prop_assert!(p.0 <= m); }
        }
    }
}
