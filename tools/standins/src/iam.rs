//! IAM policy documents, the subset the local stand-ins (the KMS emulator's key policies, the
//! S3 server's bucket policies, and the identity policies of the stand-ins' principals) enforce
//! exactly as AWS does; everything else is refused when the policy is set.
//!
//! A policy is parsed for one [`Kind`]: a KMS key policy (`Resource` is `*` or the key's ARN,
//! actions `kms:…`), an S3 bucket policy (`Resource` the bucket's ARNs, actions `s3:…`), or an
//! identity policy (no `Principal`, any `Resource` ARN pattern). Accepted elements: `Version`,
//! `Id`, `Statement` (one or a list) with `Sid`, `Effect`, `Principal` (`"*"` or `{"AWS": …}`),
//! `Action` (with `*`/`?` wildcards), `Resource` and `Condition`.
//!
//! Conditions: the operators `StringEquals`, `StringNotEquals`, `StringEqualsIgnoreCase`,
//! `StringNotEqualsIgnoreCase`, `StringLike`, `StringNotLike`, `ArnEquals`, `ArnLike`,
//! `ArnNotEquals`, `ArnNotLike`, `Bool` and `Null`, on the keys `aws:PrincipalArn`,
//! `aws:PrincipalAccount`, `aws:SecureTransport` (S3), `kms:EncryptionContext:KEY` and
//! `kms:RecipientAttestation:ImageSha384` / `PCR0`…`PCR31` (KMS). As in IAM: condition key
//! names are case-insensitive (the encryption context key within
//! `kms:EncryptionContext:KEY` too; its value is compared case-sensitively); keys in one
//! block are ANDed and the values of one key ORed; a positive operator on a key the request
//! lacks is false, a negated one (`…Not…`) true; `Null: true` holds when the key is absent.
//! `aws:PrincipalArn` of a role session is the role's ARN (`arn:aws:iam::A:role/NAME`: the
//! stand-ins keep no role paths), of a user the user's, of the root `arn:aws:iam::A:root`.
//!
//! Evaluation ([`authorize`]) follows AWS's rules for a resource policy and the caller's
//! identity policies: an explicit Deny in either wins; within the resource's account an Allow
//! naming the caller itself suffices, and for S3 an identity Allow also suffices (KMS needs
//! the key policy to name the account, `arn:aws:iam::A:root`, before IAM policies count);
//! across accounts both the resource policy (naming the caller or its account) and the
//! caller's identity policies must allow. A caller with no identity policies configured is
//! taken to have full IAM permissions (the stand-ins' single-account default).

use bidding_core::attestation::DocumentFields;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What a policy is attached to, which decides what it may say.
#[derive(Debug, Clone, Copy)]
pub enum Kind<'a> {
    /// A KMS key policy of the key with this ARN (`"*"`: any key, for AWS's default policy).
    Key { key_arn: &'a str },
    /// An S3 bucket policy of this bucket.
    Bucket { bucket: &'a str },
    /// An IAM identity policy (user or role).
    Identity,
}

impl Kind<'_> {
    fn service(&self) -> Option<&'static str> {
        match self {
            Kind::Key { .. } => Some("kms"),
            Kind::Bucket { .. } => Some("s3"),
            Kind::Identity => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    sid: Option<String>,
    allow: bool,
    /// `None` in identity policies (the principal is whoever the policy is attached to).
    principals: Option<Principals>,
    /// Lowercase patterns.
    actions: Vec<String>,
    /// Patterns; `["*"]` when any.
    resources: Vec<String>,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Principals {
    Anyone,
    Listed(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    ArnLike,
    ArnNotLike,
    Bool,
    Null,
}

impl Op {
    fn parse(op: &str) -> Option<Op> {
        Some(match op {
            "StringEquals" => Op::StringEquals,
            "StringNotEquals" => Op::StringNotEquals,
            "StringEqualsIgnoreCase" => Op::StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => Op::StringNotEqualsIgnoreCase,
            "StringLike" => Op::StringLike,
            "StringNotLike" => Op::StringNotLike,
            // IAM treats ArnEquals exactly as ArnLike (both take wildcards per segment).
            "ArnEquals" | "ArnLike" => Op::ArnLike,
            "ArnNotEquals" | "ArnNotLike" => Op::ArnNotLike,
            "Bool" => Op::Bool,
            "Null" => Op::Null,
            _ => return None,
        })
    }

    fn negated(self) -> bool {
        matches!(
            self,
            Op::StringNotEquals
                | Op::StringNotEqualsIgnoreCase
                | Op::StringNotLike
                | Op::ArnNotLike
        )
    }

    /// Whether the request's value matches one policy value (for the positive form).
    fn matches(self, policy: &str, actual: &str) -> bool {
        match self {
            Op::StringEquals | Op::StringNotEquals => policy == actual,
            Op::StringEqualsIgnoreCase | Op::StringNotEqualsIgnoreCase => {
                policy.eq_ignore_ascii_case(actual)
            }
            Op::StringLike | Op::StringNotLike => glob(policy.as_bytes(), actual.as_bytes()),
            Op::ArnLike | Op::ArnNotLike => arn_like(policy, actual),
            Op::Bool => policy.eq_ignore_ascii_case(actual),
            Op::Null => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    PrincipalArn,
    PrincipalAccount,
    SecureTransport,
    /// The context key, lowercased.
    EncryptionContext(String),
    /// `kms:RecipientAttestation:ImageSha384` is PCR 0.
    Pcr(u8),
}

impl Key {
    fn parse(key: &str, kind: Kind) -> Option<Key> {
        let lower = key.to_ascii_lowercase();
        let k = match lower.as_str() {
            "aws:principalarn" => Key::PrincipalArn,
            "aws:principalaccount" => Key::PrincipalAccount,
            "aws:securetransport" => Key::SecureTransport,
            _ => {
                if let Some(ctx) = lower.strip_prefix("kms:encryptioncontext:") {
                    if ctx.is_empty() {
                        return None;
                    }
                    Key::EncryptionContext(ctx.to_owned())
                } else {
                    let rest = lower.strip_prefix("kms:recipientattestation:")?;
                    if rest == "imagesha384" {
                        Key::Pcr(0)
                    } else {
                        let n = rest.strip_prefix("pcr")?;
                        if n.is_empty()
                            || n.len() > 2
                            || !n.bytes().all(|b| b.is_ascii_digit())
                            || (n.len() == 2 && n.starts_with('0'))
                        {
                            return None;
                        }
                        Key::Pcr(n.parse().ok().filter(|&i: &u8| i <= 31)?)
                    }
                }
            }
        };
        let fits = matches!(
            (&k, kind.service()),
            (Key::PrincipalArn | Key::PrincipalAccount, _)
                | (Key::SecureTransport, Some("s3") | None)
                | (Key::EncryptionContext(_) | Key::Pcr(_), Some("kms") | None)
        );
        fits.then_some(k)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    op: Op,
    key: Key,
    values: Vec<String>,
}

/// What a request carries besides its caller, action and resource.
#[derive(Default, Clone, Copy)]
pub struct Context<'a> {
    /// The verified Recipient attestation of a KMS request, when it has one.
    pub recipient: Option<&'a DocumentFields>,
    /// A KMS request's encryption context.
    pub encryption_context: Option<&'a BTreeMap<String, String>>,
    /// Whether the request came over TLS (S3).
    pub secure_transport: Option<bool>,
}

/// One request, as evaluated against policies.
pub struct Request<'a> {
    /// The caller: `arn:aws:iam::A:user/N`, `…:root` or `arn:aws:sts::A:assumed-role/R/S`.
    pub principal_arn: &'a str,
    /// `kms:Decrypt`, `s3:GetObject`, …
    pub action: &'a str,
    /// The ARN of what is acted on.
    pub resource: &'a str,
    pub context: Context<'a>,
}

impl Request<'_> {
    fn value(&self, key: &Key) -> Option<String> {
        match key {
            Key::PrincipalArn => principal_arn_of(self.principal_arn),
            Key::PrincipalAccount => split_arn(self.principal_arn).map(|(_, a, _)| a.to_owned()),
            Key::SecureTransport => self.context.secure_transport.map(|b| b.to_string()),
            Key::EncryptionContext(name) => self.context.encryption_context.and_then(|c| {
                c.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            }),
            Key::Pcr(i) => self
                .context
                .recipient
                .and_then(|d| d.pcr(*i))
                .map(hex::encode),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied by a statement (its Sid, if any).
    ExplicitDeny(Option<String>),
    NoAllow,
}

/// How a resource policy's Allow reached the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Grant {
    None,
    /// Through the caller's account (`arn:aws:iam::A:root` or `A`): IAM decides the rest.
    Account,
    /// The caller itself (its ARN, its role, or `*`).
    Caller,
}

impl Policy {
    /// Parses and validates a policy document for `kind`.
    pub fn parse(text: &str, kind: Kind) -> Result<Policy, String> {
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
                                Statement::parse(s, kind)
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

    /// Whether an explicit Deny applies, and how far its Allows reach the caller.
    fn scan(&self, req: &Request) -> (Option<Option<String>>, Grant) {
        let mut grant = Grant::None;
        for s in &self.statements {
            let Some(how) = s.applies(req) else { continue };
            if !s.allow {
                return (Some(s.sid.clone()), grant);
            }
            grant = grant.max(how);
        }
        (None, grant)
    }

    /// This policy alone, with the caller taken to have full IAM permissions: a statement
    /// naming the caller's account grants it as much as one naming the caller.
    pub fn evaluate(&self, req: &Request) -> Decision {
        match self.scan(req) {
            (Some(sid), _) => Decision::ExplicitDeny(sid),
            (None, Grant::None) => Decision::NoAllow,
            (None, _) => Decision::Allow,
        }
    }
}

/// The decision for `req` on a resource of `resource_account` with policy `resource_policy`
/// (none: no resource policy), given the caller's identity policies (`None`: full IAM
/// permissions). `same_account_identity_suffices`: S3's rule (an identity Allow within the
/// bucket's account is enough), not KMS's (the key policy must name the account).
pub fn authorize(
    resource_policy: Option<&Policy>,
    resource_account: &str,
    identity: Option<&[Policy]>,
    same_account_identity_suffices: bool,
    req: &Request,
) -> Decision {
    let (deny, grant) = resource_policy.map_or((None, Grant::None), |p| p.scan(req));
    if let Some(sid) = deny {
        return Decision::ExplicitDeny(sid);
    }
    let identity_allows = match identity {
        None => true,
        Some(list) => {
            let mut allowed = false;
            for p in list {
                match p.scan(req) {
                    (Some(sid), _) => return Decision::ExplicitDeny(sid),
                    (None, Grant::None) => {}
                    (None, _) => allowed = true,
                }
            }
            allowed
        }
    };
    let caller_account = split_arn(req.principal_arn).map(|(_, a, _)| a);
    let allowed = if caller_account == Some(resource_account) {
        grant == Grant::Caller
            || (grant == Grant::Account && identity_allows)
            || (same_account_identity_suffices && identity_allows)
    } else {
        grant != Grant::None && identity_allows
    };
    if allowed {
        Decision::Allow
    } else {
        Decision::NoAllow
    }
}

impl Statement {
    fn parse(value: Value, kind: Kind) -> Result<Statement, String> {
        let Value::Object(fields) = value else {
            return Err("not an object".into());
        };
        let mut sid = None;
        let mut allow = None;
        let mut principals = None;
        let mut actions = None;
        let mut resources = None;
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
                "Principal" => {
                    if matches!(kind, Kind::Identity) {
                        return Err("an identity policy has no Principal".into());
                    }
                    principals = Some(parse_principals(v)?)
                }
                "Action" => actions = Some(parse_actions(v, kind)?),
                "Resource" => resources = Some(parse_resources(v, kind)?),
                "Condition" => conditions = parse_conditions(v, kind)?,
                "NotPrincipal" | "NotAction" | "NotResource" => {
                    return Err(format!("{k} is not supported by the local stand-ins"));
                }
                other => return Err(format!("unsupported statement element {other:?}")),
            }
        }
        if principals.is_none() && !matches!(kind, Kind::Identity) {
            return Err("Principal is missing".into());
        }
        Ok(Statement {
            sid,
            allow: allow.ok_or("Effect is missing")?,
            principals,
            actions: actions.ok_or("Action is missing")?,
            resources: resources.ok_or("Resource is missing")?,
            conditions,
        })
    }

    /// `None` when the statement does not apply; else how it names the caller.
    fn applies(&self, req: &Request) -> Option<Grant> {
        let how = match &self.principals {
            None => Grant::Caller,
            Some(Principals::Anyone) => Grant::Caller,
            Some(Principals::Listed(list)) => list
                .iter()
                .map(|p| principal_grant(p, req.principal_arn))
                .max()
                .unwrap_or(Grant::None),
        };
        if how == Grant::None {
            return None;
        }
        let action = req.action.to_ascii_lowercase();
        let ok = self
            .actions
            .iter()
            .any(|p| glob(p.as_bytes(), action.as_bytes()))
            && self
                .resources
                .iter()
                .any(|r| r == "*" || glob(r.as_bytes(), req.resource.as_bytes()))
            && self.conditions.iter().all(|c| c.holds(req));
        ok.then_some(how)
    }
}

impl Condition {
    fn holds(&self, req: &Request) -> bool {
        let actual = req.value(&self.key);
        if self.op == Op::Null {
            // "true": the key must be absent; "false": present.
            return self
                .values
                .iter()
                .any(|v| v.eq_ignore_ascii_case("true") == actual.is_none());
        }
        let Some(actual) = actual else {
            return self.op.negated();
        };
        let any = self.values.iter().any(|v| self.op.matches(v, &actual));
        if self.op.negated() { !any } else { any }
    }
}

fn strings(v: Value, what: &str) -> Result<Vec<String>, String> {
    let list = match v {
        Value::String(s) => vec![s],
        Value::Bool(b) => vec![b.to_string()],
        Value::Array(a) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                Value::Bool(b) => Ok(b.to_string()),
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
                        "Principal type {k:?} is not supported by the local stand-ins (only \"AWS\")"
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

fn parse_actions(v: Value, kind: Kind) -> Result<Vec<String>, String> {
    strings(v, "Action")?
        .into_iter()
        .map(|a| {
            let lower = a.to_ascii_lowercase();
            let ok = match kind.service() {
                _ if lower == "*" => true,
                Some(service) => lower
                    .strip_prefix(service)
                    .and_then(|r| r.strip_prefix(':'))
                    .is_some_and(|r| !r.is_empty()),
                None => lower
                    .split_once(':')
                    .is_some_and(|(s, r)| !s.is_empty() && !r.is_empty()),
            };
            if ok {
                Ok(lower)
            } else {
                Err(match kind.service() {
                    Some(s) => format!("Action {a:?} is not a {s}: action"),
                    None => format!("Action {a:?} is not SERVICE:ACTION"),
                })
            }
        })
        .collect()
}

fn parse_resources(v: Value, kind: Kind) -> Result<Vec<String>, String> {
    let list = strings(v, "Resource")?;
    for r in &list {
        let ok = match kind {
            Kind::Key { key_arn } => r == "*" || r == key_arn,
            Kind::Bucket { bucket } => {
                let arn = format!("arn:aws:s3:::{bucket}");
                *r == arn || r.starts_with(&format!("{arn}/"))
            }
            Kind::Identity => r == "*" || r.starts_with("arn:"),
        };
        if !ok {
            return Err(match kind {
                Kind::Key { .. } => format!("Resource {r:?} is neither \"*\" nor this key's ARN"),
                Kind::Bucket { bucket } => format!(
                    "Resource {r:?} is not this bucket (arn:aws:s3:::{bucket}) or its objects"
                ),
                Kind::Identity => format!("Resource {r:?} is neither \"*\" nor an ARN"),
            });
        }
    }
    Ok(list)
}

fn parse_conditions(v: Value, kind: Kind) -> Result<Vec<Condition>, String> {
    let Value::Object(ops) = v else {
        return Err("Condition must be an object".into());
    };
    let mut out = Vec::new();
    for (op_name, keys) in ops {
        let op = Op::parse(&op_name).ok_or_else(|| {
            format!(
                "condition operator {op_name:?} is not supported by the local stand-ins (String[Not]Equals[IgnoreCase], String[Not]Like, Arn[Not]Equals, Arn[Not]Like, Bool, Null)"
            )
        })?;
        let Value::Object(keys) = keys else {
            return Err(format!("Condition {op_name} must be an object"));
        };
        let keys: Map<String, Value> = keys;
        if keys.is_empty() {
            return Err(format!("Condition {op_name} is empty"));
        }
        for (key, values) in keys {
            let parsed = Key::parse(&key, kind).ok_or_else(|| {
                format!(
                    "condition key {key:?} is not supported here by the local stand-ins (aws:PrincipalArn, aws:PrincipalAccount; KMS: kms:EncryptionContext:KEY, kms:RecipientAttestation:ImageSha384 and PCR0 to PCR31; S3: aws:SecureTransport)"
                )
            })?;
            let values = strings(values, &format!("Condition {op_name} {key}"))?;
            if matches!(op, Op::Null | Op::Bool)
                && !values
                    .iter()
                    .all(|v| v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false"))
            {
                return Err(format!(
                    "Condition {op_name} {key} takes \"true\" or \"false\""
                ));
            }
            out.push(Condition {
                op,
                key: parsed,
                values,
            });
        }
    }
    Ok(out)
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

/// `aws:PrincipalArn` of a caller: a role session's role, else the caller's own ARN.
pub fn principal_arn_of(caller: &str) -> Option<String> {
    let (service, account, resource) = split_arn(caller)?;
    if service == "sts" {
        let role = resource.strip_prefix("assumed-role/")?.split('/').next()?;
        return Some(format!("arn:aws:iam::{account}:role/{role}"));
    }
    Some(caller.to_owned())
}

/// Whether the policy principal `p` names the caller `arn`.
pub fn principal_matches(p: &str, arn: &str) -> bool {
    principal_grant(p, arn) != Grant::None
}

fn principal_grant(p: &str, arn: &str) -> Grant {
    if p == arn {
        return Grant::Caller;
    }
    let Some((_, caller_account, caller_resource)) = split_arn(arn) else {
        return Grant::None;
    };
    if is_account(p) {
        return if p == caller_account {
            Grant::Account
        } else {
            Grant::None
        };
    }
    match split_arn(p) {
        Some(("iam", account, "root")) if account == caller_account => Grant::Account,
        Some(("iam", account, r)) if account == caller_account => {
            // A role matches its sessions; the session ARN drops the role's path.
            let (Some(role_path), Some(session)) = (
                r.strip_prefix("role/"),
                caller_resource.strip_prefix("assumed-role/"),
            ) else {
                return Grant::None;
            };
            let role_name = role_path.rsplit('/').next().unwrap_or(role_path);
            if session
                .split_once('/')
                .is_some_and(|(name, _)| name == role_name)
            {
                Grant::Caller
            } else {
                Grant::None
            }
        }
        _ => Grant::None,
    }
}

/// ArnLike: each of the six `:`-separated parts matched as a wildcard pattern.
fn arn_like(pattern: &str, arn: &str) -> bool {
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == 6
        && a.len() == 6
        && p.iter()
            .zip(&a)
            .all(|(p, a)| glob(p.as_bytes(), a.as_bytes()))
}

/// IAM wildcard match: `*` any run, `?` any one character. Iterative, linear in practice.
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "arn:aws:iam::444455556666:user/admin";
    const OTHER: &str = "arn:aws:iam::444455556666:user/other";
    const ROLE_SESSION: &str = "arn:aws:sts::111122223333:assumed-role/bidding-parent/i-0";

    fn req<'a>(who: &'a str, action: &'a str, resource: &'a str, cx: Context<'a>) -> Request<'a> {
        Request {
            principal_arn: who,
            action,
            resource,
            context: cx,
        }
    }

    #[test]
    fn negated_and_null_operators_follow_iam() {
        let kind = Kind::Key { key_arn: "*" };
        let p = Policy::parse(
            &format!(
                r#"{{"Version":"2012-10-17","Statement":[
                  {{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}},
                  {{"Sid":"D","Effect":"Deny","Principal":{{"AWS":"*"}},"Action":"kms:Encrypt","Resource":"*",
                    "Condition":{{"Null":{{"kms:EncryptionContext:manifest":"false"}},"ArnNotEquals":{{"aws:PrincipalArn":"{ADMIN}"}}}}}}]}}"#
            ),
            kind,
        )
        .unwrap();
        let with = BTreeMap::from([("Manifest".to_owned(), "ab".to_owned())]);
        let without = BTreeMap::from([("auction".to_owned(), "a".to_owned())]);
        let cx = |c| Context {
            encryption_context: Some(c),
            ..Context::default()
        };
        let k = "arn:aws:kms:us-east-1:444455556666:key/x";
        assert_eq!(
            p.evaluate(&req(ADMIN, "kms:Encrypt", k, cx(&with))),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate(&req(OTHER, "kms:Encrypt", k, cx(&with))),
            Decision::ExplicitDeny(Some("D".into()))
        );
        assert_eq!(
            p.evaluate(&req(OTHER, "kms:Encrypt", k, cx(&without))),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate(&req(OTHER, "kms:Encrypt", k, Context::default())),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate(&req(OTHER, "kms:Decrypt", k, cx(&with))),
            Decision::Allow
        );
    }

    #[test]
    fn principal_arn_of_a_session_is_its_role() {
        assert_eq!(
            principal_arn_of(ROLE_SESSION).unwrap(),
            "arn:aws:iam::111122223333:role/bidding-parent"
        );
        assert_eq!(principal_arn_of(ADMIN).unwrap(), ADMIN);
        assert!(arn_like(
            "arn:aws:iam::*:role/bidding-*",
            "arn:aws:iam::111122223333:role/bidding-parent"
        ));
        assert!(!arn_like("arn:aws:iam::1:role/x", "arn:aws:iam::1:user/x"));
    }

    #[test]
    fn cross_account_needs_both_sides() {
        let bucket = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/bidding-parent"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/bids/*"}]}"#,
            Kind::Bucket { bucket: "b" },
        )
        .unwrap();
        let identity = vec![
            Policy::parse(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/bids/*"}]}"#,
                Kind::Identity,
            )
            .unwrap(),
        ];
        let r = |res| req(ROLE_SESSION, "s3:GetObject", res, Context::default());
        let a = |res, id: Option<&[Policy]>| {
            authorize(Some(&bucket), "444455556666", id, true, &r(res))
        };
        assert_eq!(a("arn:aws:s3:::b/bids/x", Some(&identity)), Decision::Allow);
        assert_eq!(a("arn:aws:s3:::b/bids/x", Some(&[])), Decision::NoAllow);
        assert_eq!(
            a("arn:aws:s3:::b/other", Some(&identity)),
            Decision::NoAllow
        );
        // Within its own account an identity Allow suffices for S3, not for KMS.
        let own = req(
            ADMIN,
            "s3:GetObject",
            "arn:aws:s3:::b/x",
            Context::default(),
        );
        let all = vec![
            Policy::parse(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
                Kind::Identity,
            )
            .unwrap(),
        ];
        assert_eq!(
            authorize(Some(&bucket), "444455556666", Some(&all), true, &own),
            Decision::Allow
        );
        assert_eq!(
            authorize(None, "444455556666", Some(&all), false, &own),
            Decision::NoAllow
        );
    }

    #[test]
    fn refusals() {
        let base = |extra: &str| {
            format!(
                r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"{extra}}}]}}"#
            )
        };
        let k = Kind::Key { key_arn: "*" };
        for extra in [
            r#","Condition":{"StringEqualsIfExists":{"aws:PrincipalArn":"x"}}"#,
            r#","Condition":{"ForAnyValue:StringEquals":{"aws:PrincipalArn":"x"}}"#,
            r#","Condition":{"StringEquals":{"aws:SourceIp":"x"}}"#,
            r#","Condition":{"Bool":{"aws:SecureTransport":"false"}}"#,
            r#","Condition":{"Null":{"kms:EncryptionContext:x":"maybe"}}"#,
            r#","Condition":{"StringEquals":{"kms:EncryptionContext:":"x"}}"#,
        ] {
            assert!(Policy::parse(&base(extra), k).is_err(), "{extra}");
        }
        assert!(
            Policy::parse(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::other/*"}]}"#,
                Kind::Bucket { bucket: "b" }
            )
            .is_err()
        );
    }
}
