//! Turning buyers' bid files into the lots sent to the enclave.
//!
//! Lots are the union of every file's lot ids (a buyer may skip a lot), in numeric-aware
//! order; within a lot, bids follow the auction's buyer order. Lots are matched by id, never by
//! row position (the proof of concept paired rows by position). A ciphertext that appears twice
//! anywhere is refused here, naming both places, before the enclave would refuse it.

use crate::bidfile::EncryptedRow;
use crate::config::sha256;
use crate::names::{BuyerName, LotId};
use crate::wire::{LotBids, SealedBid};
use std::collections::{BTreeMap, HashMap};

/// One buyer's parsed file.
pub struct BuyerFile {
    pub buyer: BuyerName,
    /// How the file is named in errors, e.g. `s3://bucket/encrypted.csv`.
    pub file: String,
    pub rows: Vec<EncryptedRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{file} line {line} (buyer `{buyer}`, lot `{lot}`): the same ciphertext is already at {first_file} line {first_line} (buyer `{first_buyer}`, lot `{first_lot}`); a ciphertext may be used for one lot only"
)]
pub struct ReusedCiphertext {
    pub file: String,
    pub line: u64,
    pub buyer: BuyerName,
    pub lot: LotId,
    pub first_file: String,
    pub first_line: u64,
    pub first_buyer: BuyerName,
    pub first_lot: LotId,
}

/// Builds the lots. `files` must be in the auction's buyer order.
pub fn assemble(files: Vec<BuyerFile>) -> Result<Vec<LotBids>, Box<ReusedCiphertext>> {
    let mut seen: HashMap<[u8; 32], (usize, u64, LotId)> = HashMap::new();
    let mut lots: BTreeMap<SortKey, Vec<SealedBid>> = BTreeMap::new();
    for (index, f) in files.iter().enumerate() {
        for row in &f.rows {
            let digest = sha256(&row.ciphertext);
            if let Some((first, first_line, first_lot)) = seen.get(&digest) {
                let first = &files[*first];
                return Err(Box::new(ReusedCiphertext {
                    file: f.file.clone(),
                    line: row.line,
                    buyer: f.buyer.clone(),
                    lot: row.lot.clone(),
                    first_file: first.file.clone(),
                    first_line: *first_line,
                    first_buyer: first.buyer.clone(),
                    first_lot: first_lot.clone(),
                }));
            }
            seen.insert(digest, (index, row.line, row.lot.clone()));
        }
    }
    for f in files {
        for row in f.rows {
            lots.entry(SortKey(row.lot)).or_default().push(SealedBid {
                buyer: f.buyer.clone(),
                ciphertext: row.ciphertext,
            });
        }
    }
    Ok(lots
        .into_iter()
        .map(|(SortKey(lot), bids)| LotBids { lot, bids })
        .collect())
}

#[derive(PartialEq, Eq)]
struct SortKey(LotId);
impl Ord for SortKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.natural_cmp(&other.0)
    }
}
impl PartialOrd for SortKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: u64, lot: &str, ct: &[u8]) -> EncryptedRow {
        EncryptedRow {
            line,
            lot: LotId::new(lot).unwrap(),
            ciphertext: ct.to_vec(),
        }
    }
    fn file(buyer: &str, rows: Vec<EncryptedRow>) -> BuyerFile {
        BuyerFile {
            buyer: BuyerName::new(buyer).unwrap(),
            file: format!("s3://{}/encrypted.csv", buyer.to_lowercase()),
            rows,
        }
    }

    #[test]
    fn union_by_id_in_natural_order_and_buyer_order() {
        let lots = assemble(vec![
            file("B1", vec![row(2, "10", b"a"), row(3, "2", b"b")]),
            file("B2", vec![row(2, "2", b"c"), row(3, "3", b"d")]),
        ])
        .unwrap();
        let ids: Vec<&str> = lots.iter().map(|l| l.lot.as_str()).collect();
        assert_eq!(ids, ["2", "3", "10"]);
        let buyers: Vec<&str> = lots[0].bids.iter().map(|b| b.buyer.as_str()).collect();
        assert_eq!(buyers, ["B1", "B2"]);
        assert_eq!(lots[1].bids.len(), 1);
    }

    #[test]
    fn reused_ciphertext_names_both_places() {
        let e = assemble(vec![
            file("B1", vec![row(2, "1", b"same")]),
            file("B2", vec![row(5, "3", b"same")]),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "s3://b2/encrypted.csv line 5 (buyer `B2`, lot `3`): the same ciphertext is already at s3://b1/encrypted.csv line 2 (buyer `B1`, lot `1`); a ciphertext may be used for one lot only"
        );
    }
}
