//! What the auction accepts as an envelope bid file, beyond a well-formed message (issue 13):
//! suite 0x0578, exactly one data key, from `aws-kms`, for the buyer's registered key ARN,
//! and the encryption context exactly `{auction, buyer, rules, aws-crypto-public-key}` naming
//! this auction and buyer with `rules=sealed` for the sealed image, or exactly `{auction,
//! buyer, aws-crypto-public-key}` for the unsealed image (DESIGN §2: a file made for one rule
//! set never opens in the other). Checked before the KMS call.

use super::error::{EsdkError, shown};
use super::{ContentType, HeaderView, Message, PUBLIC_KEY_CONTEXT_KEY, Suite};
use crate::config::Mode;
use crate::kms::{RULES_CONTEXT_KEY, SEALED_RULES};

pub const BID_FILE_PROVIDER_ID: &str = "aws-kms";
pub const CONTEXT_AUCTION: &str = "auction";
pub const CONTEXT_BUYER: &str = "buyer";

/// [`check_bid_header`] on a whole message.
pub fn check_bid_file(
    message: &Message<'_>,
    rules: Mode,
    auction_id: &str,
    buyer: &str,
    key_arn: &str,
) -> Result<(), EsdkError> {
    check_bid_header(
        &HeaderView {
            suite: message.suite(),
            content_type: message.content_type(),
            frame_length: message.frame_length(),
            context: message.context(),
            data_keys: message.data_keys(),
        },
        rules,
        auction_id,
        buyer,
        key_arn,
    )
}

/// The auction's policy for an envelope bid file, from its header alone (the enclave checks
/// it before the data key reaches KMS, and before any frame).
pub fn check_bid_header(
    header: &HeaderView<'_>,
    rules: Mode,
    auction_id: &str,
    buyer: &str,
    key_arn: &str,
) -> Result<(), EsdkError> {
    if header.suite != Suite::AesGcmHkdfSha512CommitKeyEcdsaP384 {
        return Err(EsdkError::BidFileSuite {
            found: header.suite.id(),
        });
    }
    if header.content_type != ContentType::Framed {
        return Err(EsdkError::BidFileSingleBlock);
    }
    let [key] = header.data_keys else {
        return Err(EsdkError::BidFileDataKeyCount {
            found: header.data_keys.len(),
        });
    };
    if key.provider_id != BID_FILE_PROVIDER_ID {
        return Err(EsdkError::BidFileProvider {
            found: shown(&key.provider_id),
        });
    }
    if key.provider_info != key_arn.as_bytes() {
        return Err(EsdkError::BidFileKeyArn {
            expected: shown(key_arn),
            found: shown(&String::from_utf8_lossy(&key.provider_info)),
        });
    }
    let context = header.context;
    let allowed: &[&str] = match rules {
        Mode::Sealed => &[
            CONTEXT_AUCTION,
            CONTEXT_BUYER,
            RULES_CONTEXT_KEY,
            PUBLIC_KEY_CONTEXT_KEY,
        ],
        Mode::Unsealed => &[CONTEXT_AUCTION, CONTEXT_BUYER, PUBLIC_KEY_CONTEXT_KEY],
    };
    if let Some(extra) = context.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(EsdkError::BidFileExtraContextKey {
            key: shown(extra),
            rules,
        });
    }
    if rules == Mode::Sealed {
        match context.get(RULES_CONTEXT_KEY) {
            None => {
                return Err(EsdkError::BidFileMissingContextKey {
                    key: RULES_CONTEXT_KEY,
                });
            }
            Some(v) if v != SEALED_RULES => {
                return Err(EsdkError::BidFileRules { found: shown(v) });
            }
            Some(_) => {}
        }
    }
    // The public key is present: parse refuses a 0x0578 message without it.
    let auction = context
        .get(CONTEXT_AUCTION)
        .ok_or(EsdkError::BidFileMissingContextKey {
            key: CONTEXT_AUCTION,
        })?;
    let found_buyer = context
        .get(CONTEXT_BUYER)
        .ok_or(EsdkError::BidFileMissingContextKey { key: CONTEXT_BUYER })?;
    if auction != auction_id {
        return Err(EsdkError::BidFileAuction {
            expected: shown(auction_id),
            found: shown(auction),
        });
    }
    if found_buyer != buyer {
        return Err(EsdkError::BidFileBuyer {
            expected: shown(buyer),
            found: shown(found_buyer),
        });
    }
    Ok(())
}
