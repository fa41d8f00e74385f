//! A buyer's KMS key policy: the statement that lets only the attested enclave (run by the
//! operator's role) decrypt, and the whole policy `bidctl key-policy --document` prints and
//! `deploy/buyer.yaml` deploys. The buyers' security rests on these condition keys, so they
//! are built here, once, and tested.
//!
//! The whole policy has three statements:
//! - `KeyAdministrationAndTheBuyersOwnUse`: the buyer's administrator has `kms:*`.
//! - `AllowDecryptOnlyByTheAttestedSealedBidEnclave`: the operator's role may `kms:Decrypt`
//!   only with a Recipient attestation whose `ImageSha384` (PCR0, and any other PCR given)
//!   is the enclave's.
//! - `OnlyTheAdministratorSeals`: `kms:Encrypt` with a `manifest` encryption-context key is
//!   denied to every principal but the administrator. A seal is KMS Encrypt of a fixed marker
//!   under the buyer's key with the context `{auction, buyer, manifest: hex(H)}`, so whoever
//!   may Encrypt under the key can make the buyer's seal: consent to a manifest the buyer never
//!   saw. The deny keeps that to the administrator, whatever else the policy (or, for an
//!   account-root administrator, IAM) grants. For a role or user administrator the exception
//!   is `ArnNotEquals aws:PrincipalArn`; for the account root it is `StringNotEquals
//!   aws:PrincipalAccount` (the root ARN is never a caller's `aws:PrincipalArn`, so the
//!   account's IAM policies decide who in it may seal).

use serde_json::{Map, Value, json};

pub const ENCLAVE_SID: &str = "AllowDecryptOnlyByTheAttestedSealedBidEnclave";
pub const ADMIN_SID: &str = "KeyAdministrationAndTheBuyersOwnUse";
pub const SEAL_SID: &str = "OnlyTheAdministratorSeals";

/// Why a policy cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyPolicyError {
    #[error("`{0}` is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)")]
    NotARole(String),
    #[error(
        "`{0}` is not an IAM principal ARN (arn:aws:iam::<account>:root, :role/<name> or :user/<name>)"
    )]
    NotAPrincipal(String),
    #[error("{0} must be 96 hex digits (a SHA-384)")]
    BadPcr(String),
    #[error("no PCR0: the statement must pin the enclave image")]
    NoPcr0,
}

/// The operator's role, as buyers name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn(String);

impl RoleArn {
    pub fn new(arn: &str) -> Result<RoleArn, KeyPolicyError> {
        match parse_iam_arn(arn) {
            Some((_, resource)) if resource.starts_with("role/") && resource.len() > 5 => {
                Ok(RoleArn(arn.to_owned()))
            }
            _ => Err(KeyPolicyError::NotARole(arn.to_owned())),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn account(&self) -> &str {
        account_of(&self.0)
    }
}

/// The buyer's administrator: the account root, or one of its roles or users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Administrator {
    Root { arn: String },
    Principal { arn: String },
}

impl Administrator {
    pub fn new(arn: &str) -> Result<Administrator, KeyPolicyError> {
        match parse_iam_arn(arn) {
            Some((_, "root")) => Ok(Administrator::Root {
                arn: arn.to_owned(),
            }),
            Some((_, r))
                if (r.starts_with("role/") && r.len() > 5)
                    || (r.starts_with("user/") && r.len() > 5) =>
            {
                Ok(Administrator::Principal {
                    arn: arn.to_owned(),
                })
            }
            _ => Err(KeyPolicyError::NotAPrincipal(arn.to_owned())),
        }
    }
    pub fn arn(&self) -> &str {
        match self {
            Administrator::Root { arn } | Administrator::Principal { arn } => arn,
        }
    }
    pub fn account(&self) -> &str {
        account_of(self.arn())
    }
}

/// The enclave's measurements a key policy pins: PCR0 and optionally others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurements(Vec<(u8, String)>);

impl Measurements {
    /// From `(index, hex)` pairs; each must be 96 hex digits, and PCR0 must be there.
    pub fn new(pcrs: &[(u8, &str)]) -> Result<Measurements, KeyPolicyError> {
        let mut out = Vec::new();
        for (i, h) in pcrs {
            let h = h.trim().to_ascii_lowercase();
            if h.len() != 96 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(KeyPolicyError::BadPcr(format!("PCR{i}")));
            }
            out.push((*i, h));
        }
        if !out.iter().any(|(i, _)| *i == 0) {
            return Err(KeyPolicyError::NoPcr0);
        }
        Ok(Measurements(out))
    }
    /// Every measurement is zero: a debug-mode enclave's.
    pub fn all_zero(&self) -> bool {
        self.0.iter().all(|(_, h)| h.bytes().all(|b| b == b'0'))
    }
}

/// The statement that lets only the attested enclave, run by `role`, decrypt.
pub fn enclave_statement(role: &RoleArn, pcrs: &Measurements) -> Value {
    let mut condition = Map::new();
    for (i, h) in &pcrs.0 {
        // PCR0 is the image hash; KMS names it ImageSha384.
        let key = if *i == 0 {
            "kms:RecipientAttestation:ImageSha384".to_owned()
        } else {
            format!("kms:RecipientAttestation:PCR{i}")
        };
        condition.insert(key, Value::String(h.clone()));
    }
    json!({
        "Sid": ENCLAVE_SID,
        "Effect": "Allow",
        "Principal": { "AWS": role.as_str() },
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": { "StringEqualsIgnoreCase": Value::Object(condition) }
    })
}

/// The statement that keeps seals (Encrypt with a `manifest` context key) to `admin`.
pub fn seal_statement(admin: &Administrator) -> Value {
    let exception = match admin {
        Administrator::Principal { arn } => {
            json!({ "ArnNotEquals": { "aws:PrincipalArn": arn } })
        }
        Administrator::Root { .. } => {
            json!({ "StringNotEquals": { "aws:PrincipalAccount": admin.account() } })
        }
    };
    let mut condition = Map::new();
    condition.insert(
        "Null".into(),
        json!({ "kms:EncryptionContext:manifest": "false" }),
    );
    if let Value::Object(m) = exception {
        condition.extend(m);
    }
    json!({
        "Sid": SEAL_SID,
        "Effect": "Deny",
        "Principal": { "AWS": "*" },
        "Action": "kms:Encrypt",
        "Resource": "*",
        "Condition": Value::Object(condition)
    })
}

/// The whole key policy: the administrator keeps every right, the operator's role gets
/// Decrypt under the attestation condition and nothing else, and only the administrator seals.
pub fn document(admin: &Administrator, role: &RoleArn, pcrs: &Measurements) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": ADMIN_SID,
                "Effect": "Allow",
                "Principal": { "AWS": admin.arn() },
                "Action": "kms:*",
                "Resource": "*"
            },
            enclave_statement(role, pcrs),
            seal_statement(admin)
        ]
    })
}

/// What a buyer should be told about these inputs (one sentence each), before using them.
pub fn warnings(admin: Option<&Administrator>, role: &RoleArn, pcrs: &Measurements) -> Vec<String> {
    let mut out = Vec::new();
    if pcrs.all_zero() {
        out.push("every measurement is zero. That is a debug-mode enclave (nitro-cli run-enclave --debug-mode): its console is visible to the operator and anyone can build one with these values. Never use this policy for real bids.".into());
    }
    if let Some(admin) = admin
        && admin.account() == role.account()
    {
        out.push(format!(
            "your administrator and the operator's role are in the same AWS account ({}). That account's administrators can rewrite any key policy in it, so the operator could give itself your key. Keep your key in an account the operator does not administer.",
            admin.account()
        ));
    }
    out
}

/// Why the document's statements are what they are, for the buyer reading it.
pub fn explanation(document: bool) -> String {
    if document {
        "your administrator principal keeps kms:*, which covers kms:Encrypt (per-bid files and seals) and kms:GenerateDataKey (envelope files: bidctl encrypt --format envelope, aws-encryption-cli --encrypt). OnlyTheAdministratorSeals denies kms:Encrypt with a `manifest` encryption context to everyone else: a seal is exactly such an Encrypt under your key, so whoever may Encrypt under it could consent to a manifest in your name.".into()
    } else {
        "add this statement to your key's policy. Whoever makes your bid files needs, in another statement, kms:Encrypt (per-bid files and seals) and kms:GenerateDataKey (envelope files: bidctl encrypt --format envelope, aws-encryption-cli --encrypt); with --document a deny keeps seals (Encrypt with a `manifest` context) to your administrator alone, since whoever may make your seal consents in your name.".into()
    }
}

fn parse_iam_arn(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    (partition.starts_with("aws")
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit()))
    .then_some((account, resource))
}

fn account_of(arn: &str) -> &str {
    arn.split(':').nth(4).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PCR: &str = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";

    #[test]
    fn the_seal_deny_has_the_exact_shape() {
        let user = Administrator::new("arn:aws:iam::444455556666:user/Buyer1").unwrap();
        assert_eq!(
            seal_statement(&user),
            json!({"Sid":"OnlyTheAdministratorSeals","Effect":"Deny","Principal":{"AWS":"*"},"Action":"kms:Encrypt","Resource":"*",
                   "Condition":{"Null":{"kms:EncryptionContext:manifest":"false"},"ArnNotEquals":{"aws:PrincipalArn":"arn:aws:iam::444455556666:user/Buyer1"}}})
        );
        let root = Administrator::new("arn:aws:iam::444455556666:root").unwrap();
        assert_eq!(
            seal_statement(&root)["Condition"],
            json!({"Null":{"kms:EncryptionContext:manifest":"false"},"StringNotEquals":{"aws:PrincipalAccount":"444455556666"}})
        );
    }

    #[test]
    fn inputs_are_checked() {
        assert!(RoleArn::new("arn:aws:iam::111122223333:user/x").is_err());
        assert!(RoleArn::new("arn:aws:iam::1111:role/x").is_err());
        assert!(Administrator::new("arn:aws:s3:::bucket").is_err());
        assert!(Measurements::new(&[(1, PCR)]).is_err());
        assert!(Measurements::new(&[(0, "00")]).is_err());
        let role = RoleArn::new("arn:aws:iam::111122223333:role/bidding-parent").unwrap();
        let zero = "0".repeat(96);
        let m = Measurements::new(&[(0, &zero)]).unwrap();
        let admin = Administrator::new("arn:aws:iam::111122223333:root").unwrap();
        assert_eq!(warnings(Some(&admin), &role, &m).len(), 2);
        let doc = document(
            &admin,
            &role,
            &Measurements::new(&[(0, PCR), (8, PCR)]).unwrap(),
        );
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 3);
        assert_eq!(
            doc["Statement"][1]["Condition"]["StringEqualsIgnoreCase"]["kms:RecipientAttestation:PCR8"],
            PCR
        );
    }
}
