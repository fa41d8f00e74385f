//! The auction's configuration and the exact bytes the result attestation commits to.

use crate::auction::RevealPolicy;
use crate::names::{AuctionId, BuyerName, KeyArn};
use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub const MAX_BUYERS: usize = 64;

/// Prefix of a result attestation's `user_data`, so a document made for another purpose (the
/// hello, say) can never pass for a result.
pub const RESULT_COMMITMENT_TAG: &[u8; 4] = b"SBR1";
/// `user_data` of the hello attestation.
pub const HELLO_USER_DATA: &[u8; 4] = b"SBH1";
/// Length of a result commitment: tag, SHA-256 of the configuration, SHA-256 of the output.
pub const RESULT_COMMITMENT_LEN: usize = 4 + 32 + 32;

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

/// `user_data` of the result attestation: `SBR1 ‖ SHA-256(config) ‖ SHA-256(output.csv)`.
pub fn result_commitment(config_digest: &[u8; 32], output_digest: &[u8; 32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(RESULT_COMMITMENT_LEN);
    v.extend_from_slice(RESULT_COMMITMENT_TAG);
    v.extend_from_slice(config_digest);
    v.extend_from_slice(output_digest);
    v
}

/// Splits a result commitment into its two digests, if it is one.
pub fn parse_result_commitment(user_data: &[u8]) -> Option<([u8; 32], [u8; 32])> {
    if user_data.len() != RESULT_COMMITMENT_LEN || !user_data.starts_with(RESULT_COMMITMENT_TAG) {
        return None;
    }
    let config = user_data[4..36].try_into().ok()?;
    let output = user_data[36..68].try_into().ok()?;
    Some((config, output))
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
        let commitment = result_commitment(&c.digest(), &sha256(b"x"));
        assert_eq!(
            parse_result_commitment(&commitment),
            Some((c.digest(), sha256(b"x")))
        );
        assert_eq!(parse_result_commitment(&commitment[1..]), None);
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
