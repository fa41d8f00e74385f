//! KMS JSON bodies (the `application/x-amz-json-1.1` protocol) and how their answers are judged.
//!
//! Shared by the enclave (Decrypt with a Recipient), `bidctl` (Encrypt, CreateKey) and the KMS
//! emulator, so that both ends of every exchange use one definition.

use crate::auction::Reason;
use crate::config::Mode;
use crate::names::{AuctionId, BuyerName, LotId};
use crate::wire::message::b64;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
pub const TARGET_PREFIX: &str = "TrentService.";
pub const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";
pub const RECIPIENT_ALGORITHM: &str = "RSAES_OAEP_SHA_256";
/// Largest KMS answer we read: a Decrypt answer with a CiphertextForRecipient is under 2 KiB.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The encryption-context key that names the rule set a ciphertext was made for.
pub const RULES_CONTEXT_KEY: &str = "rules";
/// Its one value: the sealed image's. Every bid made for a sealed auction carries
/// `rules=sealed`, the sealed image passes it on every bid Decrypt, and no other image ever
/// does (the unsealed image, and the first release, pass `{auction, lot, buyer}` alone), so KMS
/// itself refuses a sealed bid to any other image, whatever PCR0s its key policy names.
pub const SEALED_RULES: &str = "sealed";

/// The encryption context that binds a bid to its auction, lot and buyer, and, for the sealed
/// rule set, to that rule set.
pub fn bid_context(
    rules: Mode,
    auction: &AuctionId,
    lot: &LotId,
    buyer: &BuyerName,
) -> BTreeMap<String, String> {
    let mut context = BTreeMap::from([
        ("auction".to_owned(), auction.to_string()),
        ("buyer".to_owned(), buyer.to_string()),
        ("lot".to_owned(), lot.to_string()),
    ]);
    if rules == Mode::Sealed {
        context.insert(RULES_CONTEXT_KEY.to_owned(), SEALED_RULES.to_owned());
    }
    context
}

/// The `host` of a region's KMS endpoint.
pub fn endpoint_host(region: &str) -> String {
    format!("kms.{region}.amazonaws.com")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecipientInfo {
    pub key_encryption_algorithm: String,
    #[serde(with = "b64")]
    pub attestation_document: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptRequest {
    #[serde(with = "b64")]
    pub ciphertext_blob: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<RecipientInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptResponse {
    pub key_id: String,
    #[serde(default, with = "opt_b64", skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<Vec<u8>>,
    #[serde(default, with = "opt_b64", skip_serializing_if = "Option::is_none")]
    pub ciphertext_for_recipient: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptRequest {
    pub key_id: String,
    #[serde(with = "b64")]
    pub plaintext: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptResponse {
    #[serde(with = "b64")]
    pub ciphertext_blob: Vec<u8>,
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_usage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    pub key_id: String,
    pub arn: String,
    #[serde(rename = "AWSAccountId")]
    pub aws_account_id: String,
    pub creation_date: f64,
    pub enabled: bool,
    pub key_state: String,
    pub key_usage: String,
    pub key_spec: String,
    pub key_manager: String,
    pub origin: String,
    #[serde(default)]
    pub description: String,
    pub encryption_algorithms: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadataResponse {
    pub key_metadata: KeyMetadata,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeKeyRequest {
    pub key_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_bytes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<RecipientInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyResponse {
    #[serde(with = "b64")]
    pub ciphertext_blob: Vec<u8>,
    pub key_id: String,
    #[serde(default, with = "opt_b64", skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<Vec<u8>>,
    #[serde(default, with = "opt_b64", skip_serializing_if = "Option::is_none")]
    pub ciphertext_for_recipient: Option<Vec<u8>>,
}

/// A Recipient attestation document, base64- and JSON-encoded once for the many Decrypt
/// bodies that reuse it (the document lives for minutes; encoding its 4.6 KB per bid was a
/// measurable share of the enclave's work beside the RSA operation).
pub struct EncodedRecipient(Box<serde_json::value::RawValue>);

impl EncodedRecipient {
    pub fn new(document: &[u8]) -> Self {
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD.encode(document);
        let json = serde_json::to_string(&text).expect("a string serialises");
        EncodedRecipient(serde_json::value::RawValue::from_string(json).expect("valid JSON string"))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptBody<'a> {
    #[serde(with = "b64")]
    ciphertext_blob: &'a [u8],
    key_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_context: Option<&'a BTreeMap<String, String>>,
    encryption_algorithm: &'static str,
    recipient: RecipientBody<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RecipientBody<'a> {
    key_encryption_algorithm: &'static str,
    attestation_document: &'a serde_json::value::RawValue,
}

/// The body of a Decrypt with a Recipient, as [`DecryptRequest`] would serialise it.
pub fn decrypt_body(
    ciphertext: &[u8],
    key_id: &str,
    context: Option<&BTreeMap<String, String>>,
    recipient: &EncodedRecipient,
) -> Vec<u8> {
    serde_json::to_vec(&DecryptBody {
        ciphertext_blob: ciphertext,
        key_id,
        encryption_context: context,
        encryption_algorithm: SYMMETRIC_DEFAULT,
        recipient: RecipientBody {
            key_encryption_algorithm: RECIPIENT_ALGORITHM,
            attestation_document: &recipient.0,
        },
    })
    .expect("plain JSON")
}

/// The JSON error shape of the KMS protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "__type")]
    pub kind: String,
    #[serde(default, alias = "Message")]
    pub message: Option<String>,
}

mod opt_b64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::b64::serialize(v, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::b64")] Vec<u8>);
        Ok(Option::<W>::deserialize(d)?.map(|W(v)| v))
    }
}

/// What a failed KMS call means for the auction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The bid itself is at fault: set it aside with this reason.
    Bid(Reason),
    /// Worth retrying (throttling, KMS-side failures, transient key unavailability).
    Retry { code: String, message: String },
    /// The operator's credentials are wrong, expired or unsigned: no bid can be opened.
    Credentials { code: String, message: String },
    /// KMS denied access to the key: the key policy does not allow this role or this enclave
    /// measurement, or the role's IAM policy does not allow the key. The operator can cause
    /// that (a role without the permission), so it is never the buyer's fault.
    Denied { code: String, message: String },
    /// The key is disabled, pending deletion, gone or not for decryption.
    KeyState { code: String, message: String },
    /// Anything else, including KMS answers we cannot make sense of: fatal for the auction,
    /// because guessing could change a winner.
    Fatal { code: String, message: String },
}

/// Classifies a non-2xx KMS answer by its HTTP status and `__type`.
pub fn classify_error(status: u16, body: &[u8]) -> Failure {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (code, message) = match parsed {
        Some(e) => {
            // `__type` may carry a namespace: `com.amazonaws.kms#InvalidCiphertextException`.
            let code = e.kind.rsplit('#').next().unwrap_or_default().to_owned();
            (code, e.message.unwrap_or_default())
        }
        None if status >= 500 => {
            return Failure::Retry {
                code: format!("HTTP {status}"),
                message: "unreadable error body".into(),
            };
        }
        None => {
            return Failure::Fatal {
                code: format!("HTTP {status}"),
                message: "unreadable error body".into(),
            };
        }
    };
    let message: String = message.chars().take(300).collect();
    match code.as_str() {
        "InvalidCiphertextException" => Failure::Bid(Reason::Undecryptable),
        "IncorrectKeyException" => Failure::Bid(Reason::WrongKey),
        "AccessDeniedException" => Failure::Denied { code, message },
        "DisabledException"
        | "KMSInvalidStateException"
        | "NotFoundException"
        | "InvalidKeyUsageException" => Failure::KeyState { code, message },
        "ThrottlingException"
        | "LimitExceededException"
        | "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "ServiceUnavailableException"
        | "InternalFailure" => Failure::Retry { code, message },
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException"
        | "MissingAuthenticationTokenException"
        | "IncompleteSignatureException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch" => Failure::Credentials { code, message },
        _ if status >= 500 => Failure::Retry { code, message },
        _ => Failure::Fatal { code, message },
    }
}

/// Judges a 2xx Decrypt answer to a Recipient request and returns the CiphertextForRecipient.
/// `expected_key` is the buyer's registered key ARN.
pub fn recipient_ciphertext(body: &[u8], expected_key: &str) -> Result<Vec<u8>, Failure> {
    let fatal = |message: String| Failure::Fatal {
        code: "UnexpectedResponse".into(),
        message,
    };
    let r: DecryptResponse = serde_json::from_slice(body)
        .map_err(|e| fatal(format!("Decrypt answer is not the documented JSON: {e}")))?;
    if r.plaintext.is_some() {
        // KMS never returns Plaintext to a Recipient request; one that does is not KMS.
        return Err(fatal(
            "Decrypt answer carries Plaintext although a Recipient was given".into(),
        ));
    }
    if r.key_id != expected_key {
        return Err(Failure::Bid(Reason::WrongKey));
    }
    r.ciphertext_for_recipient
        .ok_or_else(|| fatal("Decrypt answer lacks CiphertextForRecipient".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypt_request_shape() {
        let req = DecryptRequest {
            ciphertext_blob: vec![1, 2, 3],
            key_id: Some("arn:aws:kms:us-east-1:111122223333:key/k".into()),
            encryption_context: Some(bid_context(
                Mode::Unsealed,
                &AuctionId::new("a").unwrap(),
                &LotId::new("1").unwrap(),
                &BuyerName::new("B").unwrap(),
            )),
            encryption_algorithm: Some(SYMMETRIC_DEFAULT.into()),
            recipient: Some(RecipientInfo {
                key_encryption_algorithm: RECIPIENT_ALGORITHM.into(),
                attestation_document: vec![9],
            }),
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"CiphertextBlob":"AQID","KeyId":"arn:aws:kms:us-east-1:111122223333:key/k","EncryptionContext":{"auction":"a","buyer":"B","lot":"1"},"EncryptionAlgorithm":"SYMMETRIC_DEFAULT","Recipient":{"KeyEncryptionAlgorithm":"RSAES_OAEP_SHA_256","AttestationDocument":"CQ=="}}"#
        );
    }

    #[test]
    fn only_the_sealed_rule_set_names_itself_in_a_bids_context() {
        let (a, l, b) = (
            AuctionId::new("a").unwrap(),
            LotId::new("1").unwrap(),
            BuyerName::new("B").unwrap(),
        );
        let sealed = bid_context(Mode::Sealed, &a, &l, &b);
        let unsealed = bid_context(Mode::Unsealed, &a, &l, &b);
        assert_eq!(sealed.get("rules").map(String::as_str), Some("sealed"));
        assert_eq!(
            unsealed.keys().collect::<Vec<_>>(),
            ["auction", "buyer", "lot"],
            "the unsealed image passes what the first release passed, and no rules pair"
        );
        let mut without = sealed.clone();
        without.remove("rules");
        assert_eq!(without, unsealed);
    }

    #[test]
    fn fast_body_is_the_documented_request() {
        let doc = vec![0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xff];
        let ctx = bid_context(
            Mode::Sealed,
            &AuctionId::new("a").unwrap(),
            &LotId::new("1").unwrap(),
            &BuyerName::new("B").unwrap(),
        );
        let arn = "arn:aws:kms:us-east-1:111122223333:key/k";
        for context in [Some(&ctx), None] {
            let body = decrypt_body(&[1, 2, 3], arn, context, &EncodedRecipient::new(&doc));
            let parsed: DecryptRequest = serde_json::from_slice(&body).unwrap();
            let expected = DecryptRequest {
                ciphertext_blob: vec![1, 2, 3],
                key_id: Some(arn.into()),
                encryption_context: context.cloned(),
                encryption_algorithm: Some(SYMMETRIC_DEFAULT.into()),
                recipient: Some(RecipientInfo {
                    key_encryption_algorithm: RECIPIENT_ALGORITHM.into(),
                    attestation_document: doc.clone(),
                }),
            };
            assert_eq!(parsed, expected);
            assert_eq!(body, serde_json::to_vec(&expected).unwrap());
        }
    }

    #[test]
    fn classifies_errors() {
        let body = |t: &str| format!(r#"{{"__type":"{t}","message":"m"}}"#).into_bytes();
        assert_eq!(
            classify_error(400, &body("InvalidCiphertextException")),
            Failure::Bid(Reason::Undecryptable)
        );
        assert_eq!(
            classify_error(400, &body("com.amazonaws.kms#IncorrectKeyException")),
            Failure::Bid(Reason::WrongKey)
        );
        assert!(matches!(
            classify_error(400, &body("AccessDeniedException")),
            Failure::Denied { .. }
        ));
        assert!(matches!(
            classify_error(400, &body("DisabledException")),
            Failure::KeyState { .. }
        ));
        assert!(matches!(
            classify_error(400, &body("ThrottlingException")),
            Failure::Retry { .. }
        ));
        assert!(matches!(
            classify_error(500, &body("KMSInternalException")),
            Failure::Retry { .. }
        ));
        assert!(matches!(
            classify_error(502, b"<html>"),
            Failure::Retry { .. }
        ));
        assert!(matches!(
            classify_error(400, &body("ExpiredTokenException")),
            Failure::Credentials { .. }
        ));
        assert!(matches!(
            classify_error(400, &body("ValidationException")),
            Failure::Fatal { .. }
        ));
        assert!(matches!(classify_error(400, b""), Failure::Fatal { .. }));
    }

    #[test]
    fn judges_decrypt_answers() {
        let arn = "arn:aws:kms:us-east-1:111122223333:key/k";
        let ok = format!(
            r#"{{"KeyId":"{arn}","CiphertextForRecipient":"AQID","EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}}"#
        );
        assert_eq!(recipient_ciphertext(ok.as_bytes(), arn), Ok(vec![1, 2, 3]));
        assert_eq!(
            recipient_ciphertext(ok.as_bytes(), "arn:aws:kms:us-east-1:111122223333:key/j"),
            Err(Failure::Bid(Reason::WrongKey))
        );
        let leaked =
            format!(r#"{{"KeyId":"{arn}","Plaintext":"AQID","CiphertextForRecipient":"AQID"}}"#);
        assert!(matches!(
            recipient_ciphertext(leaked.as_bytes(), arn),
            Err(Failure::Fatal { .. })
        ));
        assert!(matches!(
            recipient_ciphertext(b"{}", arn),
            Err(Failure::Fatal { .. })
        ));
    }
}
