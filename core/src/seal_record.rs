//! What a buyer's `bidctl seal` remembers: every manifest the buyer sealed, by auction and by
//! the SHA-256 of the bid file it holds.
//!
//! Each seal lets the operator run an auction once more on its manifest, and two sealed
//! results of different manifests holding the same bid file can be compared (DESIGN §2, "a
//! buyer seals one manifest per auction"). So a second, different manifest is refused when it
//! is for the same auction **or** holds the same bid file under any auction id (a "renamed"
//! auction), unless the buyer forces it. The record is also what `bidctl verify --buyer`
//! checks a published manifest against. The file itself is the tools' business; its rules are
//! here.

use crate::names::{AuctionId, BuyerName};
use crate::wire::message::hex32;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One seal a buyer made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealEntry {
    pub auction: AuctionId,
    pub buyer: BuyerName,
    /// H, the manifest's SHA-256.
    #[serde(with = "hex32")]
    pub manifest: [u8; 32],
    /// SHA-256 of the buyer's own bid file that the manifest holds.
    #[serde(with = "hex32")]
    pub file: [u8; 32],
}

/// Every seal a buyer made (on this machine).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealRecord {
    #[serde(default)]
    pub seals: Vec<SealEntry>,
    /// The first record format: "<auction>/<buyer>" → hex(H), without the file's digest. Read,
    /// kept, and checked by auction; never written for new seals.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sealed: BTreeMap<String, String>,
}

/// Why a new seal would be a second one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecondSeal {
    #[error(
        "you already sealed another manifest of auction {auction} (SHA-256 {previous}). Each seal lets the operator run the auction on its manifest, and comparing two results can reveal more than one"
    )]
    SameAuction { auction: String, previous: String },
    #[error(
        "you already sealed a manifest of auction {auction} (SHA-256 {previous}) that holds this very bid file. Two sealed manifests with one file, under any auction id, give the operator two results to compare"
    )]
    SameFile { auction: String, previous: String },
}

impl SealRecord {
    /// Whether `buyer` sealed manifest `h` of `auction`.
    pub fn sealed(&self, auction: &AuctionId, buyer: &BuyerName, h: &[u8; 32]) -> bool {
        self.seals
            .iter()
            .any(|e| &e.auction == auction && &e.buyer == buyer && &e.manifest == h)
            || self.legacy(auction, buyer) == Some(*h)
    }

    /// The manifest `buyer` sealed for `auction`, if any.
    pub fn manifest_for(&self, auction: &AuctionId, buyer: &BuyerName) -> Option<[u8; 32]> {
        self.seals
            .iter()
            .find(|e| &e.auction == auction && &e.buyer == buyer)
            .map(|e| e.manifest)
            .or_else(|| self.legacy(auction, buyer))
    }

    fn legacy(&self, auction: &AuctionId, buyer: &BuyerName) -> Option<[u8; 32]> {
        let hex = self.sealed.get(&format!("{auction}/{buyer}"))?;
        hex::decode(hex).ok()?.try_into().ok()
    }

    /// Checks a seal of manifest `h` of `auction` holding the buyer's file `file` before it is
    /// made: the same manifest again is fine; another manifest of the same auction, or one
    /// holding the same file under any auction, is a second seal.
    pub fn check(
        &self,
        auction: &AuctionId,
        buyer: &BuyerName,
        h: &[u8; 32],
        file: &[u8; 32],
    ) -> Result<(), SecondSeal> {
        if let Some(previous) = self.manifest_for(auction, buyer)
            && &previous != h
        {
            return Err(SecondSeal::SameAuction {
                auction: auction.to_string(),
                previous: hex::encode(previous),
            });
        }
        if let Some(e) = self
            .seals
            .iter()
            .find(|e| &e.buyer == buyer && &e.file == file && &e.manifest != h)
        {
            return Err(SecondSeal::SameFile {
                auction: e.auction.to_string(),
                previous: hex::encode(e.manifest),
            });
        }
        Ok(())
    }

    /// Records a seal (once).
    pub fn add(&mut self, entry: SealEntry) {
        if !self.seals.contains(&entry) {
            self.seals.push(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(auction: &str, manifest: u8, file: u8) -> SealEntry {
        SealEntry {
            auction: AuctionId::new(auction).unwrap(),
            buyer: BuyerName::new("B").unwrap(),
            manifest: [manifest; 32],
            file: [file; 32],
        }
    }

    #[test]
    fn a_second_manifest_is_refused_by_auction_and_by_file() {
        let b = BuyerName::new("B").unwrap();
        let a1 = AuctionId::new("a1").unwrap();
        let a2 = AuctionId::new("a2").unwrap();
        let mut r = SealRecord::default();
        assert_eq!(r.check(&a1, &b, &[1; 32], &[7; 32]), Ok(()));
        r.add(entry("a1", 1, 7));
        // The same manifest again: fine (a re-upload of the seal).
        assert_eq!(r.check(&a1, &b, &[1; 32], &[7; 32]), Ok(()));
        assert!(r.sealed(&a1, &b, &[1; 32]));
        // Another manifest of the same auction, whatever file.
        assert!(matches!(
            r.check(&a1, &b, &[2; 32], &[8; 32]),
            Err(SecondSeal::SameAuction { .. })
        ));
        // The same file in a "renamed" auction.
        let e = r.check(&a2, &b, &[3; 32], &[7; 32]).unwrap_err();
        assert!(matches!(e, SecondSeal::SameFile { ref auction, .. } if auction == "a1"));
        assert!(e.to_string().contains("under any auction id"), "{e}");
        // Another file in another auction: a new auction, fine.
        assert_eq!(r.check(&a2, &b, &[3; 32], &[9; 32]), Ok(()));
        // Another buyer's record does not count.
        let c = BuyerName::new("C").unwrap();
        assert_eq!(r.check(&a1, &c, &[2; 32], &[7; 32]), Ok(()));
        assert!(!r.sealed(&a1, &c, &[1; 32]));
    }

    #[test]
    fn the_first_record_format_is_still_read() {
        let old = format!(r#"{{"sealed":{{"a1/B":"{}"}}}}"#, hex::encode([5u8; 32]));
        let r: SealRecord = serde_json::from_str(&old).unwrap();
        let (a1, b) = (AuctionId::new("a1").unwrap(), BuyerName::new("B").unwrap());
        assert!(r.sealed(&a1, &b, &[5; 32]));
        assert!(matches!(
            r.check(&a1, &b, &[6; 32], &[0; 32]),
            Err(SecondSeal::SameAuction { .. })
        ));
        // Written back, the old entries stay.
        let back: SealRecord = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
