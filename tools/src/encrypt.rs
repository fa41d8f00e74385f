//! Buyers' side: sealing a plaintext bid file into the proof of concept's `encrypted.csv`.

use crate::kms_client::{KmsClient, KmsError};
use base64::Engine;
use bidding_core::bidfile::{ENCRYPTED_HEADER, PlaintextRow};
use bidding_core::kms::bid_context;
use bidding_core::names::{AuctionId, BuyerName, KeyArn};

/// What binds each bid. `context: false` makes bids like `aws kms encrypt` does (no
/// encryption context), which an auction accepts only when configured to.
pub struct Sealing<'a> {
    pub key: &'a KeyArn,
    pub auction: &'a AuctionId,
    pub buyer: &'a BuyerName,
    pub context: bool,
}

/// Encrypts every row with KMS (in `parallel` threads) and renders `encrypted.csv`. Each
/// amount is encrypted in one fixed-width form (`000000000000100000.00`), which the enclave
/// parses back to the same value: every ciphertext has the same length, whatever the amount.
pub fn seal_rows(
    client: &KmsClient,
    sealing: &Sealing<'_>,
    rows: &[PlaintextRow],
    parallel: usize,
) -> Result<Vec<u8>, KmsError> {
    let parallel = parallel.clamp(1, 64);
    let chunk = rows.len().div_ceil(parallel).max(1);
    let mut blobs: Vec<Result<Vec<String>, KmsError>> = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = rows
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|row| {
                            let context = sealing
                                .context
                                .then(|| bid_context(sealing.auction, &row.lot, sealing.buyer));
                            let blob = client.encrypt(
                                sealing.key.as_str(),
                                row.amount.to_padded().as_bytes(),
                                context,
                            )?;
                            Ok(base64::engine::general_purpose::STANDARD.encode(blob))
                        })
                        .collect()
                })
            })
            .collect();
        blobs = handles
            .into_iter()
            .map(|h| h.join().expect("encryption thread panicked"))
            .collect();
    });
    let mut out = format!("{}\n", ENCRYPTED_HEADER.join(",")).into_bytes();
    let mut blobs = blobs
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten();
    for row in rows {
        let blob = blobs.next().expect("one blob per row");
        out.extend_from_slice(format!("{},{blob}\n", row.lot).as_bytes());
    }
    Ok(out)
}
