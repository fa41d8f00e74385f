//! Key policies in AWS's own JSON format: [`crate::iam`]'s policy language for one KMS key.
//!
//! Accepted: what [`crate::iam`] accepts for a key policy: `Resource` `*` or the key's ARN,
//! `kms:…` actions, and conditions on `kms:RecipientAttestation:ImageSha384` / `PCR0`…`PCR31`,
//! `kms:EncryptionContext:KEY`, `aws:PrincipalArn` and `aws:PrincipalAccount`. Anything else
//! is refused when the policy is set, rather than silently ignored: a condition the emulator
//! skipped would grant what the written policy denies.
//!
//! Evaluation follows IAM: an explicit Deny wins, otherwise an Allow is needed. A condition on
//! the Recipient's attestation is not satisfied by a request without a Recipient. The account
//! principal (`arn:aws:iam::ACCOUNT:root` or `ACCOUNT`) stands for every principal of that
//! account whose identity policies allow the action (a principal with none configured has
//! full IAM permissions); a role ARN also matches its sessions
//! (`arn:aws:sts::ACCOUNT:assumed-role/NAME/…`). Across accounts the caller's identity
//! policies must allow the action too ([`crate::iam::authorize`]).

use crate::iam::{self, Context, Kind};
use bidding_core::attestation::DocumentFields;
use std::collections::BTreeMap;

pub use crate::iam::{Decision, is_principal_arn, principal_matches};

/// Real KMS's limit on a key policy document.
pub const MAX_POLICY_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    inner: iam::Policy,
    key_arn: String,
}

/// What a request asks for, as evaluated against a policy.
pub struct Request<'a> {
    pub principal_arn: &'a str,
    /// `kms:Decrypt` etc.
    pub action: &'a str,
    /// The verified Recipient attestation, when the request has one.
    pub recipient: Option<&'a DocumentFields>,
    /// The request's encryption context (Encrypt, Decrypt, GenerateDataKey).
    pub encryption_context: Option<&'a BTreeMap<String, String>>,
}

impl Request<'_> {
    fn iam<'b>(&'b self, key_arn: &'b str) -> iam::Request<'b> {
        iam::Request {
            principal_arn: self.principal_arn,
            action: self.action,
            resource: key_arn,
            context: Context {
                recipient: self.recipient,
                encryption_context: self.encryption_context,
                secure_transport: None,
            },
        }
    }
}

impl Policy {
    /// Parses and validates a policy document for the key `key_arn`.
    pub fn parse(text: &str, key_arn: &str) -> Result<Policy, String> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(format!(
                "the policy is {} bytes, over the limit of {MAX_POLICY_BYTES}",
                text.len()
            ));
        }
        Ok(Policy {
            inner: iam::Policy::parse(text, Kind::Key { key_arn })?,
            key_arn: key_arn.to_owned(),
        })
    }

    /// This policy alone, the caller taken to have full IAM permissions.
    pub fn evaluate(&self, req: &Request) -> Decision {
        self.inner.evaluate(&req.iam(&self.key_arn))
    }

    /// The decision for a caller whose identity policies are `identity` (`None`: full IAM
    /// permissions) on a key of `key_account`.
    pub fn authorize(
        &self,
        key_arn: &str,
        key_account: &str,
        identity: Option<&[iam::Policy]>,
        req: &Request,
    ) -> Decision {
        iam::authorize(
            Some(&self.inner),
            key_account,
            identity,
            false,
            &req.iam(key_arn),
        )
    }
}

/// AWS's default key policy: the account's principals may do everything, subject to their
/// IAM policies.
pub fn default_policy(account: &str) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": { "AWS": format!("arn:aws:iam::{account}:root") },
            "Action": "kms:*",
            "Resource": "*"
        }]
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iam::glob;
    use std::collections::BTreeMap;

    const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const ROLE: &str = "arn:aws:iam::111122223333:role/bidding-parent";
    const SESSION: &str = "arn:aws:sts::111122223333:assumed-role/bidding-parent/i-0123";
    const USER: &str = "arn:aws:iam::111122223333:user/alice";

    fn doc(pcr0: u8) -> DocumentFields {
        DocumentFields {
            module_id: "i-1-enc2".into(),
            timestamp: 1,
            pcrs: (0..16u8)
                .map(|i| (i, vec![if i == 0 { pcr0 } else { i }; 48]))
                .collect::<BTreeMap<_, _>>(),
            certificate: vec![1],
            cabundle: vec![vec![1]],
            public_key: None,
            user_data: None,
            nonce: None,
        }
    }

    /// The statement of the proof of concept's README, as `bidctl key-policy` prints it.
    fn poc_policy(image: &str) -> String {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[
              {{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::111122223333:user/alice"}},"Action":"kms:*","Resource":"*"}},
              {{"Sid":"Enable enclave data processing","Effect":"Allow","Principal":{{"AWS":"{ROLE}"}},"Action":"kms:Decrypt","Resource":"*",
                "Condition":{{"StringEqualsIgnoreCase":{{"kms:RecipientAttestation:ImageSha384":"{image}"}}}}}}]}}"#
        )
    }

    fn eval(p: &Policy, who: &str, action: &str, recipient: Option<&DocumentFields>) -> Decision {
        p.evaluate(&Request {
            principal_arn: who,
            action,
            recipient,
            encryption_context: None,
        })
    }

    #[test]
    fn proof_of_concept_statement_works_unchanged() {
        let p = Policy::parse(&poc_policy(&hex::encode_upper([7u8; 48])), KEY).unwrap();
        assert_eq!(
            eval(&p, SESSION, "kms:Decrypt", Some(&doc(7))),
            Decision::Allow
        );
        assert_eq!(
            eval(&p, SESSION, "kms:Decrypt", Some(&doc(8))),
            Decision::NoAllow
        );
        // The parent itself, without the enclave's attestation, gets nothing.
        assert_eq!(eval(&p, SESSION, "kms:Decrypt", None), Decision::NoAllow);
        assert_eq!(
            eval(&p, SESSION, "kms:Encrypt", Some(&doc(7))),
            Decision::NoAllow
        );
        assert_eq!(eval(&p, USER, "kms:Decrypt", None), Decision::Allow);
        assert_eq!(
            eval(
                &p,
                "arn:aws:iam::111122223333:user/bob",
                "kms:Decrypt",
                None
            ),
            Decision::NoAllow
        );
    }

    #[test]
    fn deny_wins_and_case_rules_hold() {
        let text = format!(
            r#"{{"Version":"2012-10-17","Statement":[
              {{"Effect":"Allow","Principal":"*","Action":["kms:*"],"Resource":"*"}},
              {{"Sid":"no-enc","Effect":"Deny","Principal":{{"AWS":["111122223333"]}},"Action":"KMS:Encrypt","Resource":"{KEY}"}},
              {{"Effect":"Deny","Principal":"*","Action":"kms:Gen*","Resource":"*","Condition":{{"StringEquals":{{"kms:RecipientAttestation:PCR10":"{}"}}}}}}]}}"#,
            hex::encode([10u8; 48]).to_uppercase()
        );
        let p = Policy::parse(&text, KEY).unwrap();
        assert_eq!(
            eval(&p, USER, "kms:Encrypt", None),
            Decision::ExplicitDeny(Some("no-enc".into()))
        );
        assert_eq!(
            eval(&p, "arn:aws:iam::444455556666:user/x", "kms:Encrypt", None),
            Decision::Allow
        );
        // StringEquals is case-sensitive: the upper-case hex never matches.
        assert_eq!(
            eval(&p, USER, "kms:GenerateDataKey", Some(&doc(0))),
            Decision::Allow
        );
        let lower = text.replace(
            &hex::encode([10u8; 48]).to_uppercase(),
            &hex::encode([10u8; 48]),
        );
        let p = Policy::parse(&lower, KEY).unwrap();
        assert_eq!(
            eval(&p, USER, "kms:GenerateDataKey", Some(&doc(0))),
            Decision::ExplicitDeny(None)
        );
    }

    #[test]
    fn every_supported_condition_key_matches_its_pcr() {
        let d = doc(0xaa);
        for (key, index) in [
            ("ImageSha384", 0u8),
            ("PCR0", 0),
            ("PCR1", 1),
            ("PCR2", 2),
            ("PCR8", 8),
        ] {
            for (value, want) in [
                (d.pcr(index).unwrap().to_vec(), Decision::Allow),
                (vec![0xee; 48], Decision::NoAllow),
            ] {
                let text = format!(
                    r#"{{"Version":"2012-10-17","Statement":{{"Effect":"Allow","Principal":{{"AWS":"{USER}"}},"Action":"kms:Decrypt","Resource":"*","Condition":{{"StringEqualsIgnoreCase":{{"kms:RecipientAttestation:{key}":["{}"]}}}}}}}}"#,
                    hex::encode(value)
                );
                let p = Policy::parse(&text, KEY).unwrap();
                assert_eq!(eval(&p, USER, "kms:Decrypt", Some(&d)), want, "{key}");
            }
        }
    }

    #[test]
    fn unsupported_elements_are_refused() {
        let base = |extra: &str| {
            format!(
                r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"{extra}}}]}}"#
            )
        };
        assert!(Policy::parse(&base(""), KEY).is_ok());
        for extra in [
            r#","Condition":{"NumericLessThan":{"kms:RecipientAttestation:ImageSha384":"x"}}"#,
            r#","Condition":{"StringEquals":{"aws:SourceVpc":"x"}}"#,
            r#","Condition":{"StringEquals":{"kms:RecipientAttestation:PCR32":"x"}}"#,
            r#","Condition":{"StringEquals":{"kms:RecipientAttestation:PCR01":"x"}}"#,
            r#","NotAction":"kms:Decrypt""#,
            r#","Principals":"*""#,
        ] {
            assert!(Policy::parse(&base(extra), KEY).is_err(), "{extra}");
        }
        for bad in [
            "",
            "[]",
            r#"{"Version":"2012-10-17"}"#,
            r#"{"Version":"2012-10-17","Statement":[]}"#,
            r#"{"Version":"2013","Statement":[]}"#,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Service":"x"},"Action":"kms:*","Resource":"*"}}"#,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"*"}}"#,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"arn:aws:kms:us-east-1:111122223333:key/other"}}"#,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"kms:*","Resource":"*"}}"#,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Maybe","Principal":"*","Action":"kms:*","Resource":"*"}}"#,
        ] {
            assert!(Policy::parse(bad, KEY).is_err(), "{bad}");
        }
        assert!(Policy::parse(&" ".repeat(MAX_POLICY_BYTES + 1), KEY).is_err());
    }

    #[test]
    fn default_policy_lets_the_account_do_everything() {
        let p = Policy::parse(&default_policy("111122223333"), KEY).unwrap();
        assert_eq!(eval(&p, SESSION, "kms:PutKeyPolicy", None), Decision::Allow);
        assert_eq!(
            eval(&p, "arn:aws:iam::444455556666:root", "kms:Decrypt", None),
            Decision::NoAllow
        );
    }

    #[test]
    fn principals_and_globs() {
        assert!(principal_matches(
            "arn:aws:iam::111122223333:role/team/bidding-parent",
            SESSION
        ));
        assert!(!principal_matches(
            "arn:aws:iam::111122223333:role/other",
            SESSION
        ));
        assert!(!principal_matches(
            "arn:aws:iam::444455556666:role/bidding-parent",
            SESSION
        ));
        assert!(!principal_matches(ROLE, "not an arn"));
        assert!(glob(b"kms:*", b"kms:decrypt") && glob(b"kms:gen*key", b"kms:generatedatakey"));
        assert!(glob(b"kms:d?crypt", b"kms:decrypt") && !glob(b"kms:d?crypt", b"kms:dcrypt"));
        assert!(!glob(b"kms:encrypt", b"kms:reencrypt") && glob(b"*", b""));
    }
}
