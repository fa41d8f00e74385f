//! The auction's configuration and the exact bytes the result attestation commits to.

use crate::auction::RevealPolicy;
use crate::names::{AuctionId, BuyerName, KeyArn};
use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub const MAX_BUYERS: usize = 64;

/// `user_data` of a sealed image's hello attestation: the image's rule set, so that a parent
/// (and anyone reading the document) knows which auctions the enclave will run. The first
/// release, whose one image served both modes, said `SBH1`; no parent accepts that any more.
pub const SEALED_HELLO_TAG: &[u8; 4] = b"SBHS";
/// `user_data` of an unsealed image's hello attestation.
pub const UNSEALED_HELLO_TAG: &[u8; 4] = b"SBHU";
/// Prefix of a sealed auction's result commitment; the terms digest is the manifest's, H.
pub const SEALED_RESULT_TAG: &[u8; 4] = b"SBRS";
/// Prefix of an unsealed auction's result commitment; the terms digest is the configuration's.
/// A different tag, so a verifier always knows which guarantee a result carries.
pub const UNSEALED_RESULT_TAG: &[u8; 4] = b"SBRU";
/// Length of a result commitment: tag, then SHA-256 of the terms, of output.csv, of output.json.
pub const RESULT_COMMITMENT_LEN: usize = 4 + 32 * 3;

/// Whether the buyers sealed the manifest (the default) or trust the operator (unsealed).
///
/// It is also an enclave image's **rule set** (DESIGN §2, "one image, one rule set"): every
/// request an image accepts is available to the operator, so an image serves one mode only. The
/// sealed image (the release build) opens only sealed manifests and passes `rules=sealed` in
/// every bid's encryption context; the unsealed image (built with the `unsealed` feature, its
/// own PCR0) opens only unsealed terms and never passes that pair, so neither can open the
/// other's bids whatever PCR0s a key policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Sealed,
    Unsealed,
}

impl Mode {
    /// The hello attestation's `user_data` of an image with this rule set.
    pub fn hello_tag(self) -> &'static [u8; 4] {
        match self {
            Mode::Sealed => SEALED_HELLO_TAG,
            Mode::Unsealed => UNSEALED_HELLO_TAG,
        }
    }

    /// The rule set a hello attestation's `user_data` states, if it is one.
    pub fn from_hello_tag(user_data: &[u8]) -> Option<Mode> {
        [Mode::Sealed, Mode::Unsealed]
            .into_iter()
            .find(|m| m.hello_tag().as_slice() == user_data)
    }

    /// What an image with this rule set is, for messages: "the sealed image", ...
    pub fn image(self) -> &'static str {
        match self {
            Mode::Sealed => "the sealed image (it serves sealed auctions only)",
            Mode::Unsealed => "the unsealed image (it serves unsealed auctions only)",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Sealed => "sealed",
            Mode::Unsealed => "unsealed",
        })
    }
}

/// What a result attestation's `user_data` commits to. Everything a verifier needs besides the
/// files themselves: which mode, which terms (the manifest's digest H, or the unsealed
/// configuration's), and the exact bytes of both outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultCommitment {
    pub mode: Mode,
    pub terms_sha256: [u8; 32],
    pub csv_sha256: [u8; 32],
    pub json_sha256: [u8; 32],
}

impl ResultCommitment {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(RESULT_COMMITMENT_LEN);
        v.extend_from_slice(match self.mode {
            Mode::Sealed => SEALED_RESULT_TAG,
            Mode::Unsealed => UNSEALED_RESULT_TAG,
        });
        v.extend_from_slice(&self.terms_sha256);
        v.extend_from_slice(&self.csv_sha256);
        v.extend_from_slice(&self.json_sha256);
        v
    }

    /// The commitment in a document's `user_data`, if it is one.
    pub fn parse(user_data: &[u8]) -> Option<Self> {
        if user_data.len() != RESULT_COMMITMENT_LEN {
            return None;
        }
        let mode = match &user_data[..4] {
            t if t == SEALED_RESULT_TAG => Mode::Sealed,
            t if t == UNSEALED_RESULT_TAG => Mode::Unsealed,
            _ => return None,
        };
        let digest = |i: usize| -> [u8; 32] {
            user_data[4 + 32 * i..4 + 32 * (i + 1)]
                .try_into()
                .expect("length checked above")
        };
        Some(ResultCommitment {
            mode,
            terms_sha256: digest(0),
            csv_sha256: digest(1),
            json_sha256: digest(2),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuyerSpec {
    pub name: BuyerName,
    pub key_arn: KeyArn,
}

/// An auction's configuration. Only valid ones exist: 1 to 64 buyers with distinct names and
/// distinct keys (two buyers sharing a key could open each other's bids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawAuctionConfig")]
pub struct AuctionConfig {
    auction_id: AuctionId,
    buyers: Vec<BuyerSpec>,
    reveal: RevealPolicy,
    allow_no_context: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuctionConfig {
    auction_id: AuctionId,
    buyers: Vec<BuyerSpec>,
    #[serde(default)]
    reveal: RevealPolicy,
    #[serde(default)]
    allow_no_context: bool,
}

impl TryFrom<RawAuctionConfig> for AuctionConfig {
    type Error = ConfigError;
    fn try_from(r: RawAuctionConfig) -> Result<Self, ConfigError> {
        AuctionConfig::new(r.auction_id, r.buyers, r.reveal, r.allow_no_context)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("an auction needs at least one buyer")]
    NoBuyers,
    #[error("an auction may have at most {MAX_BUYERS} buyers, this one has {0}")]
    TooManyBuyers(usize),
    #[error("buyer `{0}` is listed twice")]
    DuplicateBuyer(BuyerName),
    #[error("buyers `{0}` and `{1}` share the KMS key {2}; every buyer needs a key of its own")]
    SharedKey(BuyerName, BuyerName, KeyArn),
}

impl AuctionConfig {
    pub fn new(
        auction_id: AuctionId,
        buyers: Vec<BuyerSpec>,
        reveal: RevealPolicy,
        allow_no_context: bool,
    ) -> Result<Self, ConfigError> {
        if buyers.is_empty() {
            return Err(ConfigError::NoBuyers);
        }
        if buyers.len() > MAX_BUYERS {
            return Err(ConfigError::TooManyBuyers(buyers.len()));
        }
        let mut names = HashSet::new();
        for b in &buyers {
            if !names.insert(&b.name) {
                return Err(ConfigError::DuplicateBuyer(b.name.clone()));
            }
        }
        for (i, a) in buyers.iter().enumerate() {
            if let Some(b) = buyers[i + 1..].iter().find(|b| b.key_arn == a.key_arn) {
                return Err(ConfigError::SharedKey(
                    a.name.clone(),
                    b.name.clone(),
                    a.key_arn.clone(),
                ));
            }
        }
        Ok(AuctionConfig {
            auction_id,
            buyers,
            reveal,
            allow_no_context,
        })
    }

    pub fn auction_id(&self) -> &AuctionId {
        &self.auction_id
    }
    pub fn buyers(&self) -> &[BuyerSpec] {
        &self.buyers
    }
    pub fn reveal(&self) -> RevealPolicy {
        self.reveal
    }
    pub fn allow_no_context(&self) -> bool {
        self.allow_no_context
    }
    pub fn buyer(&self, name: &BuyerName) -> Option<&BuyerSpec> {
        self.buyers.iter().find(|b| &b.name == name)
    }

    /// The canonical bytes the result attestation commits to: compact JSON with the fields in
    /// declaration order (serde_json keeps struct order), buyers in configured order.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serialising plain strings and enums cannot fail")
    }

    pub fn digest(&self) -> [u8; 32] {
        sha256(&self.canonical_bytes())
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, data)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, key: &str) -> BuyerSpec {
        BuyerSpec {
            name: BuyerName::new(name).unwrap(),
            key_arn: KeyArn::new(format!("arn:aws:kms:us-east-1:111122223333:key/{key}")).unwrap(),
        }
    }

    #[test]
    fn canonical_bytes_are_stable() {
        let c = AuctionConfig::new(
            AuctionId::new("a1").unwrap(),
            vec![spec("Buyer1", "k1"), spec("Buyer2", "k2")],
            RevealPolicy::SecondPrice,
            true,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(c.canonical_bytes()).unwrap(),
            r#"{"auction_id":"a1","buyers":[{"name":"Buyer1","key_arn":"arn:aws:kms:us-east-1:111122223333:key/k1"},{"name":"Buyer2","key_arn":"arn:aws:kms:us-east-1:111122223333:key/k2"}],"reveal":"second-price","allow_no_context":true}"#
        );
        let back: AuctionConfig = serde_json::from_slice(&c.canonical_bytes()).unwrap();
        assert_eq!(back, c);
        let commitment = ResultCommitment {
            mode: Mode::Unsealed,
            terms_sha256: c.digest(),
            csv_sha256: sha256(b"x"),
            json_sha256: sha256(b"y"),
        };
        let bytes = commitment.to_bytes();
        assert!(bytes.starts_with(b"SBRU"));
        assert_eq!(ResultCommitment::parse(&bytes), Some(commitment));
        assert_eq!(ResultCommitment::parse(&bytes[1..]), None);
        let mut sealed = bytes.clone();
        sealed[3] = b'S';
        assert_eq!(
            ResultCommitment::parse(&sealed).map(|c| c.mode),
            Some(Mode::Sealed)
        );
        sealed[3] = b'1';
        assert_eq!(ResultCommitment::parse(&sealed), None);
    }

    #[test]
    fn refuses_shared_keys_and_duplicate_names() {
        let id = || AuctionId::new("a").unwrap();
        let e = AuctionConfig::new(
            id(),
            vec![spec("A", "k"), spec("B", "k")],
            RevealPolicy::None,
            false,
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "buyers `A` and `B` share the KMS key arn:aws:kms:us-east-1:111122223333:key/k; every buyer needs a key of its own"
        );
        let e = AuctionConfig::new(
            id(),
            vec![spec("A", "k"), spec("A", "j")],
            RevealPolicy::None,
            false,
        );
        assert_eq!(e.unwrap_err().to_string(), "buyer `A` is listed twice");
        assert_eq!(
            AuctionConfig::new(id(), vec![], RevealPolicy::None, false),
            Err(ConfigError::NoBuyers)
        );
        let json = r#"{"auction_id":"a","buyers":[{"name":"A","key_arn":"arn:aws:kms:us-east-1:111122223333:key/k"},{"name":"B","key_arn":"arn:aws:kms:us-east-1:111122223333:key/k"}]}"#;
        assert!(serde_json::from_str::<AuctionConfig>(json).is_err());
    }
}
