//! Key policies in AWS's own JSON format, the subset the emulator can enforce faithfully.
//!
//! Accepted: `Version`, `Id`, and `Statement` (one object or a list) whose statements have
//! `Sid`, `Effect` (`Allow`/`Deny`), `Principal` (`"*"` or `{"AWS": ARN | account | [..]}`),
//! `Action` (`kms:…` with `*`/`?` wildcards, or `*`), `Resource` (`*` or the key's ARN) and
//! `Condition` with the operators `StringEquals` / `StringEqualsIgnoreCase` on the keys
//! `kms:RecipientAttestation:ImageSha384` and `kms:RecipientAttestation:PCR0`…`PCR31`.
//! Anything else is refused when the policy is set, rather than silently ignored: a condition
//! the emulator skipped would grant what the written policy denies.
//!
//! Evaluation follows IAM: an explicit Deny wins, otherwise an Allow is needed. A condition on
//! the Recipient's attestation is not satisfied by a request without a Recipient. The account
//! principal (`arn:aws:iam::ACCOUNT:root` or `ACCOUNT`) stands for every principal of that
//! account, as if each had full IAM permissions; a role ARN also matches its sessions
//! (`arn:aws:sts::ACCOUNT:assumed-role/NAME/…`).

use bidding_core::attestation::DocumentFields;
use serde_json::{Map, Value};

/// Real KMS's limit on a key policy document.
pub const MAX_POLICY_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    sid: Option<String>,
    allow: bool,
    principals: Principals,
    /// Lowercase patterns.
    actions: Vec<String>,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Principals {
    Anyone,
    Listed(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    ignore_case: bool,
    key: AttestationKey,
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttestationKey {
    ImageSha384,
    Pcr(u8),
}

impl AttestationKey {
    fn parse(key: &str) -> Option<AttestationKey> {
        const PREFIX: &str = "kms:recipientattestation:";
        let lower = key.to_ascii_lowercase();
        let rest = lower.strip_prefix(PREFIX)?;
        if rest == "imagesha384" {
            return Some(AttestationKey::ImageSha384);
        }
        let n = rest.strip_prefix("pcr")?;
        if n.is_empty()
            || n.len() > 2
            || !n.bytes().all(|b| b.is_ascii_digit())
            || (n.len() == 2 && n.starts_with('0'))
        {
            return None;
        }
        n.parse()
            .ok()
            .filter(|&i: &u8| i <= 31)
            .map(AttestationKey::Pcr)
    }

    fn value(self, doc: &DocumentFields) -> Option<String> {
        let index = match self {
            AttestationKey::ImageSha384 => 0,
            AttestationKey::Pcr(i) => i,
        };
        doc.pcr(index).map(hex::encode)
    }
}

/// What a request asks for, as evaluated against a policy.
pub struct Request<'a> {
    pub principal_arn: &'a str,
    /// `kms:Decrypt` etc.
    pub action: &'a str,
    /// The verified Recipient attestation, when the request has one.
    pub recipient: Option<&'a DocumentFields>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied by a statement (its Sid, if any).
    ExplicitDeny(Option<String>),
    NoAllow,
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
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("the policy is not JSON: {e}"))?;
        let Value::Object(top) = value else {
            return Err("the policy is not a JSON object".into());
        };
        let mut statements = None;
        for (k, v) in top {
            match k.as_str() {
                "Version" => match v.as_str() {
                    Some("2012-10-17" | "2008-10-17") => {}
                    _ => return Err("Version must be \"2012-10-17\" or \"2008-10-17\"".into()),
                },
                "Id" => {
                    v.as_str().ok_or("Id must be a string")?;
                }
                "Statement" => {
                    let list = match v {
                        Value::Array(a) => a,
                        obj @ Value::Object(_) => vec![obj],
                        _ => return Err("Statement must be an object or a list of objects".into()),
                    };
                    statements = Some(
                        list.into_iter()
                            .enumerate()
                            .map(|(i, s)| {
                                Statement::parse(s, key_arn)
                                    .map_err(|e| format!("Statement[{i}]: {e}"))
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                }
                other => return Err(format!("unsupported policy element {other:?}")),
            }
        }
        let statements = statements.ok_or("the policy has no Statement")?;
        if statements.is_empty() {
            return Err("the policy has no statements".into());
        }
        Ok(Policy { statements })
    }

    pub fn evaluate(&self, req: &Request) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            if s.applies(req) {
                if !s.allow {
                    return Decision::ExplicitDeny(s.sid.clone());
                }
                allowed = true;
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::NoAllow
        }
    }
}

impl Statement {
    fn parse(value: Value, key_arn: &str) -> Result<Statement, String> {
        let Value::Object(fields) = value else {
            return Err("not an object".into());
        };
        let mut sid = None;
        let mut allow = None;
        let mut principals = None;
        let mut actions = None;
        let mut resource = false;
        let mut conditions = Vec::new();
        for (k, v) in fields {
            match k.as_str() {
                "Sid" => sid = Some(v.as_str().ok_or("Sid must be a string")?.to_owned()),
                "Effect" => {
                    allow = Some(match v.as_str() {
                        Some("Allow") => true,
                        Some("Deny") => false,
                        _ => return Err("Effect must be \"Allow\" or \"Deny\"".into()),
                    })
                }
                "Principal" => principals = Some(parse_principals(v)?),
                "Action" => actions = Some(parse_actions(v)?),
                "Resource" => {
                    for r in strings(v, "Resource")? {
                        if r != "*" && r != key_arn {
                            return Err(format!(
                                "Resource {r:?} is neither \"*\" nor this key's ARN"
                            ));
                        }
                    }
                    resource = true;
                }
                "Condition" => conditions = parse_conditions(v)?,
                "NotPrincipal" | "NotAction" | "NotResource" => {
                    return Err(format!("{k} is not supported by the KMS emulator"));
                }
                other => return Err(format!("unsupported statement element {other:?}")),
            }
        }
        if !resource {
            return Err("Resource is missing".into());
        }
        Ok(Statement {
            sid,
            allow: allow.ok_or("Effect is missing")?,
            principals: principals.ok_or("Principal is missing")?,
            actions: actions.ok_or("Action is missing")?,
            conditions,
        })
    }

    fn applies(&self, req: &Request) -> bool {
        let principal = match &self.principals {
            Principals::Anyone => true,
            Principals::Listed(list) => {
                list.iter().any(|p| principal_matches(p, req.principal_arn))
            }
        };
        let action = req.action.to_ascii_lowercase();
        principal
            && self
                .actions
                .iter()
                .any(|p| glob(p.as_bytes(), action.as_bytes()))
            && self.conditions.iter().all(|c| c.holds(req.recipient))
    }
}

impl Condition {
    fn holds(&self, recipient: Option<&DocumentFields>) -> bool {
        let Some(actual) = recipient.and_then(|d| self.key.value(d)) else {
            return false;
        };
        self.values.iter().any(|v| {
            if self.ignore_case {
                v.eq_ignore_ascii_case(&actual)
            } else {
                *v == actual
            }
        })
    }
}

fn strings(v: Value, what: &str) -> Result<Vec<String>, String> {
    let list = match v {
        Value::String(s) => vec![s],
        Value::Array(a) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                _ => Err(format!("{what} must hold strings")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(format!("{what} must be a string or a list of strings")),
    };
    if list.is_empty() {
        return Err(format!("{what} is empty"));
    }
    Ok(list)
}

fn parse_principals(v: Value) -> Result<Principals, String> {
    match v {
        Value::String(s) if s == "*" => Ok(Principals::Anyone),
        Value::Object(map) => {
            let mut out = Vec::new();
            for (k, v) in map {
                if k != "AWS" {
                    return Err(format!(
                        "Principal type {k:?} is not supported by the KMS emulator (only \"AWS\")"
                    ));
                }
                for p in strings(v, "Principal AWS")? {
                    if p == "*" {
                        return Ok(Principals::Anyone);
                    }
                    check_principal(&p)?;
                    out.push(p);
                }
            }
            if out.is_empty() {
                return Err("Principal names nobody".into());
            }
            Ok(Principals::Listed(out))
        }
        _ => Err("Principal must be \"*\" or {\"AWS\": …}".into()),
    }
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `arn:aws:SERVICE::ACCOUNT:RESOURCE` split into (service, account, resource).
fn split_arn(arn: &str) -> Option<(&str, &str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    (partition.starts_with("aws") && is_account(account) && !resource.is_empty())
        .then_some((service, account, resource))
}

fn check_principal(p: &str) -> Result<(), String> {
    if is_account(p) {
        return Ok(());
    }
    match split_arn(p) {
        Some(("iam", _, r)) if r == "root" || r.starts_with("user/") || r.starts_with("role/") => {
            Ok(())
        }
        Some(("sts", _, r)) if r.starts_with("assumed-role/") => Ok(()),
        _ => Err(format!(
            "Principal {p:?} is not an account id, an IAM user, role or root ARN, or an STS assumed-role ARN"
        )),
    }
}

/// Whether `arn` can be a caller: an IAM user, role or root, or an STS role session.
pub fn is_principal_arn(arn: &str) -> bool {
    !is_account(arn) && check_principal(arn).is_ok()
}

/// Whether the policy principal `p` names the caller `arn`.
pub fn principal_matches(p: &str, arn: &str) -> bool {
    if p == arn {
        return true;
    }
    let Some((_, caller_account, caller_resource)) = split_arn(arn) else {
        return false;
    };
    if is_account(p) {
        return p == caller_account;
    }
    match split_arn(p) {
        Some(("iam", account, "root")) => account == caller_account,
        Some(("iam", account, r)) if account == caller_account => {
            // A role matches its sessions; the session ARN drops the role's path.
            let (Some(role_path), Some(session)) = (
                r.strip_prefix("role/"),
                caller_resource.strip_prefix("assumed-role/"),
            ) else {
                return false;
            };
            let role_name = role_path.rsplit('/').next().unwrap_or(role_path);
            session
                .split_once('/')
                .is_some_and(|(name, _)| name == role_name)
        }
        _ => false,
    }
}

fn parse_actions(v: Value) -> Result<Vec<String>, String> {
    strings(v, "Action")?
        .into_iter()
        .map(|a| {
            let lower = a.to_ascii_lowercase();
            if lower == "*" || (lower.starts_with("kms:") && lower.len() > 4) {
                Ok(lower)
            } else {
                Err(format!("Action {a:?} is not a kms: action"))
            }
        })
        .collect()
}

fn parse_conditions(v: Value) -> Result<Vec<Condition>, String> {
    let Value::Object(ops) = v else {
        return Err("Condition must be an object".into());
    };
    let mut out = Vec::new();
    for (op, keys) in ops {
        let ignore_case = match op.as_str() {
            "StringEquals" => false,
            "StringEqualsIgnoreCase" => true,
            other => {
                return Err(format!(
                    "condition operator {other:?} is not supported by the KMS emulator (StringEquals, StringEqualsIgnoreCase)"
                ));
            }
        };
        let Value::Object(keys) = keys else {
            return Err(format!("Condition {op} must be an object"));
        };
        let keys: Map<String, Value> = keys;
        if keys.is_empty() {
            return Err(format!("Condition {op} is empty"));
        }
        for (key, values) in keys {
            let parsed = AttestationKey::parse(&key).ok_or_else(|| {
                format!(
                    "condition key {key:?} is not supported by the KMS emulator (kms:RecipientAttestation:ImageSha384, kms:RecipientAttestation:PCR0 to PCR31)"
                )
            })?;
            out.push(Condition {
                ignore_case,
                key: parsed,
                values: strings(values, &format!("Condition {op} {key}"))?,
            });
        }
    }
    Ok(out)
}

/// IAM wildcard match: `*` any run, `?` any one character. Iterative, linear in practice.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// AWS's default key policy: the account's principals may do everything, subject to their
/// IAM policies (which the emulator takes to allow everything).
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
            r#","Condition":{"StringLike":{"kms:RecipientAttestation:ImageSha384":"x"}}"#,
            r#","Condition":{"StringEquals":{"kms:EncryptionContext:auction":"x"}}"#,
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
