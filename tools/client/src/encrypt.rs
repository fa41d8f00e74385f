//! Buyers' side: sealing a plaintext bid file into the proof of concept's `encrypted.csv`
//! (one KMS ciphertext per bid), or into one envelope file (one data key per file).

use crate::kms_client::{KmsClient, KmsError};
use base64::Engine;
use bidding_core::bidfile::{ENCRYPTED_HEADER, PlaintextRow};
use bidding_core::config::Mode;
use bidding_core::kms::bid_context;
use bidding_core::names::{AuctionId, BuyerName, KeyArn};

/// What binds each bid. `rules` is the rule set of the image the bids are for: the sealed
/// image's bids carry `rules=sealed` in their context, which no other image passes.
/// `context: false` makes bids like `aws kms encrypt` does (no encryption context), which only
/// an unsealed auction configured to accept them takes.
pub struct Sealing<'a> {
    pub key: &'a KeyArn,
    pub auction: &'a AuctionId,
    pub buyer: &'a BuyerName,
    pub rules: Mode,
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
                            let context = sealing.context.then(|| {
                                bid_context(sealing.rules, sealing.auction, &row.lot, sealing.buyer)
                            });
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

/// Why an envelope file could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error("writing the message: {0}")]
    Message(#[from] bidding_core::esdk::EsdkError),
    #[error("KMS answered GenerateDataKey with key {found}, not the requested {expected}")]
    OtherKey { expected: String, found: String },
}

/// The frame length `aws-encryption-cli` uses by default.
pub const ENVELOPE_FRAME_LENGTH: u32 = 4096;

/// Makes an envelope bid file (DESIGN §4): `plaintext` (the buyer's `contract,bid` CSV) as one
/// AWS Encryption SDK message, suite 0x0578, with ONE data key from GenerateDataKey on the
/// buyer's key under the context {auction, buyer, rules=sealed} (for the unsealed image
/// {auction, buyer}) plus the message's signing key, as `aws-encryption-cli --encrypt -w
/// key=ARN -c auction=ID buyer=NAME rules=sealed` does.
pub fn envelope_file(
    client: &KmsClient,
    key: &KeyArn,
    auction: &AuctionId,
    buyer: &BuyerName,
    rules: Mode,
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    use bidding_core::esdk::{CONTEXT_AUCTION, CONTEXT_BUYER, Encryptor};
    use bidding_core::kms::{RULES_CONTEXT_KEY, SEALED_RULES};
    let mut context: std::collections::BTreeMap<String, String> = [
        (CONTEXT_AUCTION.to_owned(), auction.as_str().to_owned()),
        (CONTEXT_BUYER.to_owned(), buyer.as_str().to_owned()),
    ]
    .into();
    if rules == Mode::Sealed {
        context.insert(RULES_CONTEXT_KEY.to_owned(), SEALED_RULES.to_owned());
    }
    let encryptor = Encryptor::new(context)?;
    let data_key = client.generate_data_key(key.as_str(), encryptor.context())?;
    // The enclave accepts only the registered ARN as the data key's provider info: an alias or
    // a key id would be answered with the ARN, but check that KMS used the key asked for.
    if data_key.key_id != key.as_str() {
        return Err(EnvelopeError::OtherKey {
            expected: key.to_string(),
            found: data_key.key_id,
        });
    }
    Ok(encryptor.encrypt(
        &data_key.plaintext,
        &data_key.ciphertext_blob,
        &data_key.key_id,
        plaintext,
        ENVELOPE_FRAME_LENGTH,
    )?)
}

/// The plaintext of an envelope bid file, as `bidctl encrypt --format envelope` and `bidctl
/// envelope pad` write it: `rows` with every amount in its fixed-width form, then padding to
/// [`padded_len`](bidding_core::bidfile::padded_len) (with `lots`, the auction's public lot
/// count, at least one row per lot), so the file's size says neither an amount's digits nor
/// the exact number of rows (DESIGN §2, "Sizes"). Zeroed when dropped.
pub fn envelope_plaintext(rows: &[PlaintextRow], lots: Option<u64>) -> zeroize::Zeroizing<Vec<u8>> {
    zeroize::Zeroizing::new(bidding_core::bidfile::padded_plaintext(rows, lots))
}

/// A plaintext `contract,bid` file of `rows`, amounts in their fixed-width form, unpadded.
pub fn plaintext_csv(rows: &[PlaintextRow]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + rows.len() * 40);
    out.extend_from_slice(bidding_core::bidfile::PLAINTEXT_HEADER.join(",").as_bytes());
    out.push(b'\n');
    for row in rows {
        out.extend_from_slice(row.lot.as_str().as_bytes());
        out.push(b',');
        out.extend_from_slice(row.amount.to_padded().as_bytes());
        out.push(b'\n');
    }
    out
}
