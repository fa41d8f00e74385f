//! The manifest of a sealed auction and the seals that consent to it (DESIGN §2).
//!
//! After the bid deadline the operator writes down the terms (auction id, reveal policy,
//! every buyer and key; `allow_no_context` is always false here) and, per buyer, where the bid file is, how long it
//! is, its format and its SHA-256. H = SHA-256 of the manifest's canonical bytes. Each buyer
//! checks the manifest and has KMS encrypt [`SEAL_MARKER`] under their own key with the context
//! `{auction, buyer, manifest: hex(H)}`: only the key's owner can make that ciphertext, so its
//! successful Decrypt inside the enclave is that buyer's consent to exactly H. The enclave
//! decides nothing that every buyer has not consented to, all at once.
//!
//! The manifest travels as bytes and is accepted only in canonical form (compact JSON, fields
//! in declaration order, files in the buyers' order), so that H names one document and what a
//! buyer is shown is exactly what is hashed.

use crate::config::{AuctionConfig, sha256};
use crate::names::{AuctionId, BuyerName};
use crate::wire::message::hex32;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub const MANIFEST_VERSION: u32 = 1;
/// A manifest of 64 buyers with long S3 keys is about 40 KiB.
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;
/// The plaintext of every seal. Fixed, so a seal says nothing but "yes" and cannot be confused
/// with a bid (whose context also differs).
pub const SEAL_MARKER: &[u8] = b"sealed-bid auction: I consent to exactly this manifest";
/// Largest S3 object key (S3's own limit).
pub const MAX_S3_KEY_LEN: usize = 1024;

/// How a bid file is encrypted, recognised from its bytes (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileFormat {
    /// The proof of concept's CSV `[].contract,[].bid`, one KMS ciphertext per bid.
    PerBid,
    /// One AWS Encryption SDK message holding the buyer's plaintext `contract,bid` CSV.
    Envelope,
}

impl FileFormat {
    /// Recognises a bid file's format from its first bytes: an Encryption SDK v2 message
    /// starts with version 0x02 and a suite id; a CSV starts with text.
    pub fn detect(bytes: &[u8]) -> FileFormat {
        match bytes {
            [0x02, 0x05 | 0x04, 0x78, ..] => FileFormat::Envelope,
            _ => FileFormat::PerBid,
        }
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::PerBid => "per-bid",
            FileFormat::Envelope => "envelope",
        })
    }
}

/// One buyer's bid file as the operator read it after the deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub buyer: BuyerName,
    pub bucket: String,
    pub key: String,
    pub size: u64,
    #[serde(with = "hex32")]
    pub sha256: [u8; 32],
    pub format: FileFormat,
}

/// A sealed auction's manifest. Only valid ones exist: valid terms, and exactly one file per
/// buyer, in the buyers' order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    manifest: u32,
    terms: AuctionConfig,
    files: Vec<FileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    manifest: u32,
    terms: AuctionConfig,
    files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {0} bytes, over the limit of {MAX_MANIFEST_BYTES}")]
    TooLarge(usize),
    #[error("manifest is not valid: {0}")]
    Malformed(String),
    #[error("manifest version {0} is not supported (this build reads version {MANIFEST_VERSION})")]
    Version(u32),
    #[error(
        "manifest is not in canonical form (compact JSON exactly as `bidding-parent manifest` writes it); its digest would not name one document"
    )]
    NotCanonical,
    #[error("manifest lists {files} files for {buyers} buyers; it needs exactly one per buyer")]
    FileCount { files: usize, buyers: usize },
    #[error(
        "manifest file {index} belongs to `{found}`, expected `{expected}` (files follow the buyers' order)"
    )]
    FileOrder {
        index: usize,
        found: BuyerName,
        expected: BuyerName,
    },
    #[error("buyer `{buyer}`: {what}")]
    Location { buyer: BuyerName, what: String },
    #[error(
        "a sealed manifest cannot allow bids without an encryption context: such a ciphertext opens under every image its key ever trusted, so a sealed auction takes only bids made with `rules=sealed` in their context (allow_no_context is for the unsealed image)"
    )]
    NoContextBids,
}

impl Manifest {
    pub fn new(terms: AuctionConfig, files: Vec<FileEntry>) -> Result<Manifest, ManifestError> {
        if terms.allow_no_context() {
            return Err(ManifestError::NoContextBids);
        }
        let buyers = terms.buyers();
        if files.len() != buyers.len() {
            return Err(ManifestError::FileCount {
                files: files.len(),
                buyers: buyers.len(),
            });
        }
        for (index, (file, spec)) in files.iter().zip(buyers).enumerate() {
            if file.buyer != spec.name {
                return Err(ManifestError::FileOrder {
                    index,
                    found: file.buyer.clone(),
                    expected: spec.name.clone(),
                });
            }
            check_location(file)?;
        }
        Ok(Manifest {
            manifest: MANIFEST_VERSION,
            terms,
            files,
        })
    }

    /// Reads a manifest from its bytes, which must be canonical.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let raw: RawManifest = serde_json::from_slice(bytes)
            .map_err(|e| ManifestError::Malformed(crate::wire::message::scrub(&e.to_string())))?;
        if raw.manifest != MANIFEST_VERSION {
            return Err(ManifestError::Version(raw.manifest));
        }
        let m = Manifest::new(raw.terms, raw.files)?;
        if m.canonical_bytes() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        Ok(m)
    }

    pub fn terms(&self) -> &AuctionConfig {
        &self.terms
    }
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }
    pub fn file(&self, buyer: &BuyerName) -> Option<&FileEntry> {
        self.files.iter().find(|f| &f.buyer == buyer)
    }

    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serialising plain strings and numbers cannot fail")
    }

    /// H: what every seal names and the result commits to.
    pub fn digest(&self) -> [u8; 32] {
        sha256(&self.canonical_bytes())
    }
}

fn check_location(f: &FileEntry) -> Result<(), ManifestError> {
    let bad = |what: String| {
        Err(ManifestError::Location {
            buyer: f.buyer.clone(),
            what,
        })
    };
    let b = f.bucket.as_bytes();
    if !(3..=63).contains(&b.len())
        || !b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-'))
    {
        return bad(format!("`{}` is not an S3 bucket name", f.bucket));
    }
    if f.key.is_empty() || f.key.len() > MAX_S3_KEY_LEN || f.key.chars().any(char::is_control) {
        return bad("the object key must be 1 to 1024 bytes without control characters".into());
    }
    Ok(())
}

/// The encryption context of a buyer's seal: it names the auction, the buyer and H.
pub fn seal_context(
    auction: &AuctionId,
    buyer: &BuyerName,
    manifest_sha256: &[u8; 32],
) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("auction".to_owned(), auction.to_string()),
        ("buyer".to_owned(), buyer.to_string()),
        ("manifest".to_owned(), hex::encode(manifest_sha256)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auction::RevealPolicy;
    use crate::config::BuyerSpec;
    use crate::names::KeyArn;

    fn terms() -> AuctionConfig {
        let spec = |n: &str, k: &str| BuyerSpec {
            name: BuyerName::new(n).unwrap(),
            key_arn: KeyArn::new(format!("arn:aws:kms:us-east-1:111122223333:key/{k}")).unwrap(),
        };
        AuctionConfig::new(
            AuctionId::new("a1").unwrap(),
            vec![spec("Buyer1", "k1"), spec("Buyer2", "k2")],
            RevealPolicy::None,
            false,
        )
        .unwrap()
    }

    fn file(buyer: &str, digest: u8) -> FileEntry {
        FileEntry {
            buyer: BuyerName::new(buyer).unwrap(),
            bucket: "bids".into(),
            key: format!("{buyer}/encrypted.csv"),
            size: 10,
            sha256: [digest; 32],
            format: FileFormat::PerBid,
        }
    }

    #[test]
    fn canonical_round_trip_and_refusals() {
        let m = Manifest::new(terms(), vec![file("Buyer1", 1), file("Buyer2", 2)]).unwrap();
        let bytes = m.canonical_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"manifest":1,"terms":{"auction_id":"a1""#),
            "{text}"
        );
        assert!(text.contains(r#""format":"per-bid""#), "{text}");
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        assert_eq!(m.digest(), sha256(&bytes));

        let pretty = serde_json::to_vec_pretty(
            &serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
        )
        .unwrap();
        assert_eq!(Manifest::parse(&pretty), Err(ManifestError::NotCanonical));
        let v2 = text.replacen(r#""manifest":1"#, r#""manifest":2"#, 1);
        assert_eq!(
            Manifest::parse(v2.as_bytes()),
            Err(ManifestError::Version(2))
        );
        let extra = text.replacen(r#"{"manifest":1,"#, r#"{"manifest":1,"x":0,"#, 1);
        assert!(
            matches!(Manifest::parse(extra.as_bytes()), Err(ManifestError::Malformed(e)) if e.contains("unknown field `x`"))
        );

        assert_eq!(
            Manifest::new(terms(), vec![file("Buyer1", 1)]),
            Err(ManifestError::FileCount {
                files: 1,
                buyers: 2
            })
        );
        assert!(matches!(
            Manifest::new(terms(), vec![file("Buyer2", 1), file("Buyer1", 2)]),
            Err(ManifestError::FileOrder { index: 0, .. })
        ));
        let mut f = file("Buyer2", 2);
        f.bucket = "Bad_Bucket".into();
        assert!(matches!(
            Manifest::new(terms(), vec![file("Buyer1", 1), f]),
            Err(ManifestError::Location { .. })
        ));
        assert!(matches!(
            Manifest::parse(&vec![b' '; MAX_MANIFEST_BYTES + 1]),
            Err(ManifestError::TooLarge(_))
        ));
        // Bids without a context open under every image their key ever trusted: never in a
        // sealed manifest, whether made or parsed.
        let loose = AuctionConfig::new(
            terms().auction_id().clone(),
            terms().buyers().to_vec(),
            RevealPolicy::None,
            true,
        )
        .unwrap();
        assert_eq!(
            Manifest::new(loose, vec![file("Buyer1", 1), file("Buyer2", 2)]),
            Err(ManifestError::NoContextBids)
        );
        let loose_text = text.replacen(
            r#""allow_no_context":false"#,
            r#""allow_no_context":true"#,
            1,
        );
        assert_ne!(loose_text, text);
        assert_eq!(
            Manifest::parse(loose_text.as_bytes()),
            Err(ManifestError::NoContextBids)
        );
    }

    #[test]
    fn formats_are_recognised_from_bytes() {
        assert_eq!(
            FileFormat::detect(b"[].contract,[].bid\n"),
            FileFormat::PerBid
        );
        assert_eq!(
            FileFormat::detect(&[0x02, 0x05, 0x78, 0]),
            FileFormat::Envelope
        );
        assert_eq!(FileFormat::detect(&[0x02]), FileFormat::PerBid);
    }

    #[test]
    fn seal_context_names_auction_buyer_and_digest() {
        let c = seal_context(
            &AuctionId::new("a1").unwrap(),
            &BuyerName::new("B").unwrap(),
            &[0xab; 32],
        );
        assert_eq!(c["manifest"], "ab".repeat(32));
        assert_eq!(c.len(), 3);
    }
}
