//! The standard AWS credential chain, reduced to what a cron job on an EC2 host needs:
//! environment variables, then static keys in the shared files, then the instance role
//! through IMDSv2; and STS `AssumeRole` on top of any of them.
//!
//! Secrets go straight into [`Secret`] and appear in no error, `Debug` or log line. Parse
//! errors about documents that hold secrets name fields and positions, never contents.
//!
//! Refreshing is re-fetching: keep the [`CredentialSource`] and call
//! [`CredentialSource::fetch`] again when [`expires_within`] says the current credentials are
//! about to run out.

use super::env::{self, Env};
use super::http::{Attempt, HttpClient, HttpError, HttpResponse, RetryPolicy, Signing, retry};
use super::sanitize;
use bidding_core::credentials::{Credentials, Secret};
use bidding_core::names::Region;
use bidding_core::sigv4::{Payload, Request};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// Where IMDS lives on every EC2 instance.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// How long before expiry credentials should be refreshed: the enclave needs time to use
/// them, and IMDS itself rotates role credentials at least five minutes before expiry.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

const IMDS_MAX_BODY: u64 = 64 * 1024;
const STS_MAX_BODY: u64 = 64 * 1024;
/// IMDS is a link-local service: it answers at once or not at all (off EC2, or with a hop
/// limit too low for a container), so waiting long only delays the error.
const IMDS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IMDS_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const IMDS_TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const IMDS_TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const IMDS_MAX_TOKEN_TTL: Duration = Duration::from_secs(21_600);

/// Which provider produced a set of credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    Environment,
    Profile { name: String },
    InstanceRole { role: String },
    AssumeRole { role_arn: String },
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provider::Environment => f.write_str("environment variables"),
            Provider::Profile { name } => write!(f, "shared config profile `{name}`"),
            Provider::InstanceRole { role } => write!(f, "EC2 instance role `{role}`"),
            Provider::AssumeRole { role_arn } => write!(f, "STS AssumeRole of {role_arn}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("environment credentials: {why}")]
    Environment { why: String },
    #[error("shared config profile `{profile}`: {why}")]
    Profile { profile: String, why: String },
    #[error("EC2 instance role (IMDSv2 at {endpoint}): {why}")]
    InstanceRole { endpoint: String, why: String },
    /// STS answered with its XML error document.
    #[error(
        "STS AssumeRole of {role_arn} at {endpoint}: HTTP {status} {}: {} (request id {}; after {attempts} attempt(s))",
        shown(code),
        shown(message),
        shown(request_id)
    )]
    StsRejected {
        role_arn: String,
        endpoint: String,
        status: u16,
        code: Option<String>,
        message: Option<String>,
        request_id: Option<String>,
        attempts: u32,
    },
    #[error("STS AssumeRole of {role_arn} at {endpoint}: {why}")]
    Sts {
        role_arn: String,
        endpoint: String,
        why: String,
    },
    #[error("{provider} gave unusable credentials: {why}")]
    Invalid {
        provider: Provider,
        why: bidding_core::credentials::CredentialsError,
    },
    #[error("no AWS credentials found: {}", .tried.join("; "))]
    NotFound { tried: Vec<String> },
}

fn shown(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(none)")
}

/// True when `creds` expire within `margin` of `now` (never for long-term keys).
pub fn expires_within(creds: &Credentials, now: SystemTime, margin: Duration) -> bool {
    creds.expiration.is_some_and(|exp| {
        let deadline = now + margin;
        deadline
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            >= exp
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    u64::try_from(t.unix_timestamp()).ok()
}

fn validated(creds: Credentials, provider: &Provider) -> Result<Credentials, CredentialsError> {
    creds
        .validate(unix_now())
        .map_err(|why| CredentialsError::Invalid {
            provider: provider.clone(),
            why,
        })?;
    Ok(creds)
}

// ---------------------------------------------------------------------------------------------
// Environment

/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`. `Ok(None)`
/// when neither key variable is set; half a pair is an error rather than a reason to go on
/// to another identity.
pub fn from_environment(
    env: &Env,
    region: &Region,
) -> Result<Option<Credentials>, CredentialsError> {
    let id = env.get("AWS_ACCESS_KEY_ID");
    let secret = env.get("AWS_SECRET_ACCESS_KEY");
    let (id, secret) = match (id, secret) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(CredentialsError::Environment {
                why: "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
            });
        }
        (None, Some(_)) => {
            return Err(CredentialsError::Environment {
                why: "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into(),
            });
        }
        (Some(id), Some(secret)) => (id, secret),
    };
    let creds = Credentials {
        access_key_id: id,
        secret_access_key: Secret::new(secret),
        session_token: env.get("AWS_SESSION_TOKEN").map(Secret::new),
        expiration: None,
        region: region.clone(),
    };
    validated(creds, &Provider::Environment).map(Some)
}

// ---------------------------------------------------------------------------------------------
// Shared files

/// Profile keys that ask for a provider this program does not implement. Any of them in the
/// chosen profile is an error: quietly using the profile's static keys (or the instance role)
/// instead would act as another identity than the operator configured.
const UNSUPPORTED_PROFILE_KEYS: &[&str] = &[
    "role_arn",
    "source_profile",
    "credential_source",
    "credential_process",
    "web_identity_token_file",
    "sso_session",
    "sso_start_url",
    "sso_account_id",
    "sso_role_name",
    "login_session",
];

/// The shared credentials and config files, as `AWS_SHARED_CREDENTIALS_FILE` and
/// `AWS_CONFIG_FILE` (or `~/.aws/credentials` and `~/.aws/config`) name them.
pub fn shared_file_paths(env: &Env) -> (Option<PathBuf>, Option<PathBuf>) {
    let home = env.get("HOME");
    let resolve = |var: &str, default: &str| -> Option<PathBuf> {
        match env.get(var) {
            Some(p) => match (p.strip_prefix("~/"), &home) {
                (Some(rest), Some(home)) => Some(Path::new(home).join(rest)),
                _ => Some(PathBuf::from(p)),
            },
            None => home
                .as_ref()
                .map(|h| Path::new(h).join(".aws").join(default)),
        }
    };
    (
        resolve("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
        resolve("AWS_CONFIG_FILE", "config"),
    )
}

/// The properties of one profile in one file, later lines winning; `None` when the file has
/// no such section.
type Properties = Vec<(String, Zeroizing<String>)>;

/// Reads the subset of the INI dialect the AWS CLI writes: `[section]` headers, `key = value`
/// lines, `#`/`;` comment lines, and lines indented deeper than the property before them
/// (sub-properties such as `s3 =` then `  addressing_style = path`, or continuations), which
/// are skipped, as Python's configparser (and so the AWS CLI) reads them. In the config file
/// a profile's section is `[profile NAME]` (or `[default]`); in the credentials file it is
/// `[NAME]`. Errors give line numbers only: a line may hold a secret.
fn profile_properties(
    text: &str,
    wanted: &str,
    is_config: bool,
) -> Result<Option<Properties>, String> {
    let mut found: Option<Properties> = None;
    let mut in_section = false;
    let mut in_wanted = false;
    // Indentation of the last property line in this section.
    let mut property_indent: Option<usize> = None;
    // Editors on Windows may start the file with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (n, raw) in text.lines().enumerate() {
        let lineno = n + 1;
        let indent = raw.len() - raw.trim_start_matches([' ', '\t']).len();
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if property_indent.is_some_and(|p| indent > p) {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let Some(name) = header.strip_suffix(']') else {
                return Err(format!("line {lineno}: section header without closing `]`"));
            };
            let name = name.trim();
            let profile = if is_config {
                if name == "default" {
                    Some("default")
                } else {
                    name.strip_prefix("profile")
                        .filter(|rest| rest.starts_with([' ', '\t']))
                        .map(str::trim)
                }
            } else {
                Some(name)
            };
            in_section = true;
            in_wanted = profile == Some(wanted);
            if in_wanted && found.is_none() {
                found = Some(Vec::new());
            }
            property_indent = None;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "line {lineno}: expected `[section]` or `key = value`"
            ));
        };
        if !in_section {
            return Err(format!("line {lineno}: property before any `[section]`"));
        }
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() {
            return Err(format!("line {lineno}: property without a name"));
        }
        property_indent = Some(indent);
        if in_wanted && let Some(props) = found.as_mut() {
            let value = strip_inline_comment(value.trim());
            props.retain(|(k, _)| *k != key);
            props.push((key, Zeroizing::new(value.to_owned())));
        }
    }
    Ok(found)
}

/// Inline comments need whitespace before them, so that a `#` inside a value stays.
fn strip_inline_comment(value: &str) -> &str {
    let bytes = value.as_bytes();
    for i in 1..bytes.len() {
        if matches!(bytes[i], b'#' | b';') && matches!(bytes[i - 1], b' ' | b'\t') {
            return value[..i].trim_end();
        }
    }
    value
}

fn read_optional(path: &Path) -> Result<Option<Zeroizing<String>>, String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            match std::str::from_utf8(&bytes) {
                Ok(s) => Ok(Some(Zeroizing::new(s.to_owned()))),
                Err(e) => Err(format!(
                    "{} is not UTF-8 (byte {})",
                    path.display(),
                    e.valid_up_to()
                )),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Static keys from the shared files. `profile` defaults to `AWS_PROFILE`, then `default`.
/// `Ok(None)` when the default profile is simply absent or holds no keys (a config file with
/// only a region is common on EC2); a profile that was asked for by name must exist and hold
/// keys.
pub fn from_profile(
    env: &Env,
    region: &Region,
    profile: Option<&str>,
) -> Result<Option<(Credentials, String)>, CredentialsError> {
    let explicit = profile
        .map(str::to_owned)
        .or_else(|| env.get("AWS_PROFILE"));
    let chosen = explicit.is_some();
    let name = explicit.unwrap_or_else(|| "default".to_owned());
    let err = |why: String| CredentialsError::Profile {
        profile: name.clone(),
        why,
    };
    let (cred_path, config_path) = shared_file_paths(env);
    let mut merged: Properties = Vec::new();
    let mut seen_in = Vec::new();
    // Config first, credentials second: the credentials file wins where both set a key.
    for (path, is_config) in [(&config_path, true), (&cred_path, false)] {
        let Some(path) = path else { continue };
        let Some(text) = read_optional(path).map_err(&err)? else {
            continue;
        };
        let props = profile_properties(&text, &name, is_config)
            .map_err(|why| err(format!("{}: {why}", path.display())))?;
        if let Some(props) = props {
            seen_in.push(path.display().to_string());
            for (k, v) in props {
                merged.retain(|(mk, _)| *mk != k);
                merged.push((k, v));
            }
        }
    }
    let files = || {
        [&cred_path, &config_path]
            .iter()
            .filter_map(|p| p.as_ref().map(|p| p.display().to_string()))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    if seen_in.is_empty() {
        if chosen {
            let where_ = match files() {
                f if f.is_empty() => "HOME is not set and no shared file is configured".into(),
                f => format!("not found in {f}"),
            };
            return Err(err(where_));
        }
        return Ok(None);
    }
    let get = |key: &str| {
        merged
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    if let Some(key) = UNSUPPORTED_PROFILE_KEYS.iter().find(|k| get(k).is_some()) {
        return Err(err(format!(
            "it sets `{key}`, which this program does not support: only static keys \
             (aws_access_key_id, aws_secret_access_key, aws_session_token) are read from \
             shared files; SSO, credential_process, web identity and role profiles are not \
             (use the AssumeRole option for roles)"
        )));
    }
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (None, None) if !chosen => Ok(None),
        (None, None) => Err(err(format!(
            "no aws_access_key_id / aws_secret_access_key in {}",
            seen_in.join(" or ")
        ))),
        (Some(_), None) => Err(err(
            "aws_access_key_id is set but aws_secret_access_key is not".into(),
        )),
        (None, Some(_)) => Err(err(
            "aws_secret_access_key is set but aws_access_key_id is not".into(),
        )),
        (Some(id), Some(secret)) => {
            let creds = Credentials {
                access_key_id: id.to_owned(),
                secret_access_key: Secret::new(secret),
                session_token: get("aws_session_token").map(Secret::new),
                expiration: None,
                region: region.clone(),
            };
            let provider = Provider::Profile { name: name.clone() };
            Ok(Some((validated(creds, &provider)?, name)))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// IMDSv2

/// A client for the instance metadata service, caching its session token between calls.
pub struct Imds {
    endpoint: String,
    http: HttpClient,
    token_ttl: Duration,
    token: Mutex<Option<CachedToken>>,
}

struct CachedToken {
    value: Secret,
    fresh_until: Instant,
}

impl fmt::Debug for Imds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Imds")
            .field("endpoint", &self.endpoint)
            .field("token_ttl", &self.token_ttl)
            .finish_non_exhaustive()
    }
}

/// Why IMDS gave nothing. `unavailable` separates "this is not an EC2 instance with a role"
/// (the chain moves on and reports it) from a broken answer (the chain stops).
struct ImdsFailure {
    unavailable: bool,
    why: String,
}

impl ImdsFailure {
    fn unavailable(why: impl Into<String>) -> Self {
        ImdsFailure {
            unavailable: true,
            why: why.into(),
        }
    }
    fn failed(why: impl Into<String>) -> Self {
        ImdsFailure {
            unavailable: false,
            why: why.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsCredentials {
    code: Option<String>,
    message: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<Secret>,
    token: Option<Secret>,
    expiration: Option<String>,
}

impl Imds {
    pub fn new(endpoint: impl Into<String>) -> Self {
        let endpoint = endpoint.into().trim_end_matches('/').to_owned();
        Imds {
            endpoint,
            http: HttpClient::with_timeouts(IMDS_CONNECT_TIMEOUT, IMDS_REQUEST_TIMEOUT),
            token_ttl: IMDS_MAX_TOKEN_TTL,
            token: Mutex::new(None),
        }
    }

    /// The endpoint from `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else [`DEFAULT_IMDS_ENDPOINT`].
    pub fn from_env(env: &Env) -> Self {
        Self::new(
            env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.to_owned()),
        )
    }

    /// The lifetime asked for each session token: whole seconds from 1 to 21600 (IMDS's
    /// bounds); 6 hours by default.
    pub fn with_token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl.clamp(Duration::from_secs(1), IMDS_MAX_TOKEN_TTL);
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The instance role's current credentials, and the role's name.
    pub fn credentials(&self, region: &Region) -> Result<(Credentials, String), CredentialsError> {
        self.fetch(region)
            .map_err(|f| CredentialsError::InstanceRole {
                endpoint: self.endpoint.clone(),
                why: f.why,
            })
    }

    fn fetch(&self, region: &Region) -> Result<(Credentials, String), ImdsFailure> {
        const ROLES: &str = "/latest/meta-data/iam/security-credentials/";
        let resp = self.get(ROLES)?;
        match resp.status {
            200 => {}
            404 => {
                return Err(ImdsFailure::unavailable(
                    "no IAM role is attached to this instance (security-credentials/ is 404)",
                ));
            }
            s => {
                return Err(ImdsFailure::failed(format!(
                    "listing roles answered HTTP {s}"
                )));
            }
        }
        let listing = String::from_utf8_lossy(&resp.body);
        let role = listing
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or_else(|| ImdsFailure::failed("the role listing is empty"))?;
        if role.len() > 64
            || !role
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
        {
            return Err(ImdsFailure::failed(format!(
                "the role listing names `{}`, which is not an IAM role name",
                sanitize(role, 80)
            )));
        }
        let role = role.to_owned();
        let resp = self.get(&format!("{ROLES}{role}"))?;
        if resp.status != 200 {
            return Err(ImdsFailure::failed(format!(
                "credentials of role `{role}` answered HTTP {}",
                resp.status
            )));
        }
        let body = Zeroizing::new(resp.body);
        // serde_json's messages can quote the input; give only the position.
        let doc: ImdsCredentials = serde_json::from_slice(&body).map_err(|e| {
            ImdsFailure::failed(format!(
                "credentials of role `{role}` are not the expected JSON ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        if let Some(code) = doc.code.as_deref()
            && code != "Success"
        {
            return Err(ImdsFailure::failed(format!(
                "credentials of role `{role}`: IMDS reports Code `{}`: {}",
                sanitize(code, 80),
                sanitize(doc.message.as_deref().unwrap_or("(no message)"), 300)
            )));
        }
        let mut missing = Vec::new();
        if doc.access_key_id.is_none() {
            missing.push("AccessKeyId");
        }
        if doc.secret_access_key.is_none() {
            missing.push("SecretAccessKey");
        }
        if doc.token.is_none() {
            missing.push("Token");
        }
        if doc.expiration.is_none() {
            missing.push("Expiration");
        }
        let (Some(id), Some(secret), Some(token), Some(expiration)) = (
            doc.access_key_id,
            doc.secret_access_key,
            doc.token,
            doc.expiration,
        ) else {
            return Err(ImdsFailure::failed(format!(
                "credentials of role `{role}` lack {}",
                missing.join(", ")
            )));
        };
        let expiration = parse_rfc3339(&expiration).ok_or_else(|| {
            ImdsFailure::failed(format!(
                "credentials of role `{role}`: Expiration `{}` is not an RFC 3339 time",
                sanitize(&expiration, 40)
            ))
        })?;
        let creds = Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: Some(token),
            expiration: Some(expiration),
            region: region.clone(),
        };
        let provider = Provider::InstanceRole { role: role.clone() };
        creds.validate(unix_now()).map_err(|e| {
            ImdsFailure::failed(format!("{provider} gave unusable credentials: {e}"))
        })?;
        Ok((creds, role))
    }

    /// A metadata GET with the session token. A 401 means the token is no longer valid (it
    /// expired, or IMDS restarted): fetch a new one and try once more.
    fn get(&self, path: &str) -> Result<HttpResponse, ImdsFailure> {
        let url = format!("{}{path}", self.endpoint);
        let send = |token: &Secret| {
            let headers = [(IMDS_TOKEN_HEADER, token.expose())];
            let req = Request {
                method: "GET",
                url: &url,
                headers: &headers,
                body: b"",
            };
            self.http
                .send(&req, IMDS_MAX_BODY)
                .map_err(|e| ImdsFailure::failed(e.to_string()))
        };
        let resp = send(&self.token(false)?)?;
        if resp.status != 401 {
            return Ok(resp);
        }
        let resp = send(&self.token(true)?)?;
        if resp.status == 401 {
            return Err(ImdsFailure::failed(format!(
                "GET {path} refused a freshly issued session token (HTTP 401)"
            )));
        }
        Ok(resp)
    }

    fn token(&self, renew: bool) -> Result<Secret, ImdsFailure> {
        let mut cached = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if !renew
            && let Some(t) = cached.as_ref()
            && Instant::now() < t.fresh_until
        {
            return Ok(t.value.clone());
        }
        *cached = None;
        let url = format!("{}/latest/api/token", self.endpoint);
        let ttl = self.token_ttl.as_secs().to_string();
        let headers = [(IMDS_TOKEN_TTL_HEADER, ttl.as_str())];
        let req = Request {
            method: "PUT",
            url: &url,
            headers: &headers,
            body: b"",
        };
        let resp = self.http.send(&req, IMDS_MAX_BODY).map_err(|e| match &e {
            HttpError::Transport { .. } => ImdsFailure::unavailable(format!(
                "no instance metadata service answered ({e}); not on EC2, or the \
                 metadata hop limit is too low for this network namespace"
            )),
            _ => ImdsFailure::failed(e.to_string()),
        })?;
        match resp.status {
            200 => {}
            403 => {
                return Err(ImdsFailure::unavailable(
                    "the session token request was refused (HTTP 403): the instance metadata \
                     service is disabled on this instance",
                ));
            }
            s => {
                return Err(ImdsFailure::failed(format!(
                    "the session token request (PUT /latest/api/token) answered HTTP {s}"
                )));
            }
        }
        // IMDS says how long it granted; trust the shorter of that and what we asked for.
        let granted = resp
            .header(IMDS_TOKEN_TTL_HEADER)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .map_or(self.token_ttl, |g| g.min(self.token_ttl));
        let body = Zeroizing::new(resp.body);
        let value = std::str::from_utf8(&body)
            .ok()
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                ImdsFailure::failed("the session token is empty or not printable ASCII")
            })?;
        // Renew a little early so that a token does not die between check and use.
        let fresh_until = Instant::now() + granted - (granted / 4).min(Duration::from_secs(60));
        let value = Secret::new(value);
        *cached = Some(CachedToken {
            value: value.clone(),
            fresh_until,
        });
        Ok(value)
    }
}

// ---------------------------------------------------------------------------------------------
// STS AssumeRole

/// AWS's URI encoding: everything but unreserved characters.
const AWS_URI_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An STS `AssumeRole` call.
#[derive(Debug, Clone)]
pub struct AssumeRole {
    pub role_arn: String,
    pub session_name: String,
    pub duration: Duration,
    /// Instead of `https://sts.<region>.amazonaws.com/`.
    pub endpoint: Option<String>,
    pub retry: RetryPolicy,
}

#[derive(Deserialize)]
struct AssumeRoleResponseXml {
    #[serde(rename = "AssumeRoleResult")]
    result: Option<AssumeRoleResultXml>,
    #[serde(rename = "ResponseMetadata")]
    metadata: Option<ResponseMetadataXml>,
}

#[derive(Deserialize)]
struct AssumeRoleResultXml {
    #[serde(rename = "Credentials")]
    credentials: Option<StsCredentialsXml>,
}

#[derive(Deserialize)]
struct ResponseMetadataXml {
    #[serde(rename = "RequestId")]
    request_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsCredentialsXml {
    access_key_id: Option<String>,
    secret_access_key: Option<Secret>,
    session_token: Option<Secret>,
    expiration: Option<String>,
}

#[derive(Deserialize)]
struct StsErrorResponseXml {
    #[serde(rename = "Error")]
    error: Option<StsErrorXml>,
    #[serde(rename = "RequestId")]
    request_id: Option<String>,
}

#[derive(Deserialize)]
struct StsErrorXml {
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

impl AssumeRole {
    /// One hour, STS's default, and AWS's default retry policy.
    pub fn new(role_arn: impl Into<String>, session_name: impl Into<String>) -> Self {
        AssumeRole {
            role_arn: role_arn.into(),
            session_name: session_name.into(),
            duration: Duration::from_secs(3600),
            endpoint: None,
            retry: RetryPolicy::default(),
        }
    }

    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    pub fn with_endpoint(mut self, endpoint: Option<String>) -> Self {
        self.endpoint = endpoint;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The URL the call goes to.
    pub fn url(&self, region: &Region) -> String {
        match &self.endpoint {
            Some(e) => format!("{}/", e.trim_end_matches('/')),
            None => format!("https://sts.{region}.amazonaws.com/"),
        }
    }

    fn check(&self) -> Result<(), String> {
        let arn = &self.role_arn;
        if !arn.starts_with("arn:")
            || !(20..=2048).contains(&arn.len())
            || arn.chars().any(char::is_control)
        {
            return Err("the role ARN must look like arn:aws:iam::ACCOUNT:role/NAME".into());
        }
        let name = &self.session_name;
        if !(2..=64).contains(&name.len())
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
        {
            return Err(format!(
                "session name `{}` must be 2 to 64 characters of letters, digits and +=,.@_-",
                sanitize(name, 80)
            ));
        }
        let secs = self.duration.as_secs();
        if !(900..=43_200).contains(&secs) {
            return Err(format!(
                "duration {secs} s is outside STS's 900 to 43200 seconds"
            ));
        }
        Ok(())
    }

    /// Assumes the role with `base` credentials; the result is for `region`.
    pub fn call(
        &self,
        http: &HttpClient,
        base: &Credentials,
        region: &Region,
    ) -> Result<Credentials, CredentialsError> {
        let endpoint = self.url(region);
        let err = |why: String| CredentialsError::Sts {
            role_arn: sanitize(&self.role_arn, 2048),
            endpoint: endpoint.clone(),
            why,
        };
        self.check().map_err(err)?;
        let body = format!(
            "Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName={}&DurationSeconds={}",
            utf8_percent_encode(&self.role_arn, AWS_URI_ENCODE),
            utf8_percent_encode(&self.session_name, AWS_URI_ENCODE),
            self.duration.as_secs()
        );
        let headers = [(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        let req = Request {
            method: "POST",
            url: &endpoint,
            headers: &headers,
            body: body.as_bytes(),
        };
        let signing = Signing {
            service: "sts",
            region: region.as_str(),
            credentials: base,
            payload: Payload::Default,
        };
        let resp = retry(&self.retry, |attempt| {
            match http.send_signed(&req, &signing, STS_MAX_BODY) {
                Ok(resp) if resp.is_success() => Attempt::Done(Ok(resp)),
                Ok(resp) => {
                    let e = self.rejected(&endpoint, &resp, attempt);
                    let throttled = matches!(
                        &e,
                        CredentialsError::StsRejected { code: Some(c), .. }
                            if c == "Throttling" || c == "RequestLimitExceeded"
                    );
                    if resp.status >= 500 || throttled {
                        Attempt::Retry(e)
                    } else {
                        Attempt::Done(Err(e))
                    }
                }
                Err(e) if e.is_retryable() => {
                    Attempt::Retry(err(format!("{e} (after {attempt} attempt(s))")))
                }
                Err(e) => Attempt::Done(Err(err(e.to_string()))),
            }
        })?;
        let body = Zeroizing::new(resp.body);
        let text = std::str::from_utf8(&body)
            .map_err(|_| err("the AssumeRole response is not UTF-8".into()))?;
        // quick-xml's messages can quote the document, which holds the secret: give none.
        let doc: AssumeRoleResponseXml = quick_xml::de::from_str(text).map_err(|_| {
            err("the AssumeRole response is not the documented AssumeRoleResponse XML".into())
        })?;
        let request_id = doc.metadata.and_then(|m| m.request_id).or_else(|| {
            resp.headers
                .iter()
                .find(|(k, _)| k == "x-amzn-requestid")
                .map(|(_, v)| v.clone())
        });
        let creds = doc.result.and_then(|r| r.credentials).ok_or_else(|| {
            err(format!(
                "the AssumeRole response has no AssumeRoleResult/Credentials (request id {})",
                shown(&request_id)
            ))
        })?;
        let mut missing = Vec::new();
        for (name, present) in [
            ("AccessKeyId", creds.access_key_id.is_some()),
            ("SecretAccessKey", creds.secret_access_key.is_some()),
            ("SessionToken", creds.session_token.is_some()),
            ("Expiration", creds.expiration.is_some()),
        ] {
            if !present {
                missing.push(name);
            }
        }
        let (Some(id), Some(secret), Some(token), Some(expiration)) = (
            creds.access_key_id,
            creds.secret_access_key,
            creds.session_token,
            creds.expiration,
        ) else {
            return Err(err(format!(
                "the AssumeRole response's Credentials lack {}",
                missing.join(", ")
            )));
        };
        let expiration = parse_rfc3339(&expiration).ok_or_else(|| {
            err(format!(
                "Expiration `{}` is not an RFC 3339 time",
                sanitize(&expiration, 40)
            ))
        })?;
        let creds = Credentials {
            access_key_id: id.trim().to_owned(),
            secret_access_key: secret,
            session_token: Some(token),
            expiration: Some(expiration),
            region: region.clone(),
        };
        validated(
            creds,
            &Provider::AssumeRole {
                role_arn: sanitize(&self.role_arn, 2048),
            },
        )
    }

    fn rejected(&self, endpoint: &str, resp: &HttpResponse, attempts: u32) -> CredentialsError {
        let doc = std::str::from_utf8(&resp.body)
            .ok()
            .and_then(|t| quick_xml::de::from_str::<StsErrorResponseXml>(t).ok());
        let (code, message, request_id) = match doc {
            Some(d) => {
                let (code, message) = d.error.map(|e| (e.code, e.message)).unwrap_or_default();
                (code, message, d.request_id)
            }
            None => (None, None, None),
        };
        let request_id = request_id.or_else(|| resp.header("x-amzn-requestid").map(str::to_owned));
        CredentialsError::StsRejected {
            role_arn: sanitize(&self.role_arn, 2048),
            endpoint: endpoint.to_owned(),
            status: resp.status,
            code: code.map(|c| sanitize(c.trim(), 100)),
            message: message.map(|m| sanitize(m.trim(), 1000)),
            request_id: request_id.map(|r| sanitize(r.trim(), 100)),
            attempts,
        }
    }
}

/// `AssumeRole` with the defaults (one hour, the regional STS endpoint, the shared client).
pub fn assume_role(
    base: &Credentials,
    role_arn: &str,
    session_name: &str,
    region: &Region,
) -> Result<Credentials, CredentialsError> {
    AssumeRole::new(role_arn, session_name).call(HttpClient::shared(), base, region)
}

// ---------------------------------------------------------------------------------------------
// Sources

/// A way to get credentials, kept so that they can be fetched again before they expire.
#[derive(Debug)]
pub struct CredentialSource {
    kind: SourceKind,
    region: Region,
    env: Env,
    http: HttpClient,
}

#[derive(Debug)]
enum SourceKind {
    Chain(Imds),
    Environment,
    Profile(Option<String>),
    InstanceRole(Imds),
    AssumeRole {
        base: Box<CredentialSource>,
        role: AssumeRole,
    },
}

impl CredentialSource {
    /// Environment, then shared files, then the instance role: the first that is configured
    /// is used. One that is configured but broken is an error, not a reason to fall through
    /// to another identity.
    pub fn chain(env: Env, region: Region) -> Self {
        let imds = Imds::from_env(&env);
        Self::of(SourceKind::Chain(imds), env, region)
    }

    pub fn environment(env: Env, region: Region) -> Self {
        Self::of(SourceKind::Environment, env, region)
    }

    /// `name` defaults to `AWS_PROFILE`, then `default`.
    pub fn profile(env: Env, region: Region, name: Option<String>) -> Self {
        Self::of(SourceKind::Profile(name), env, region)
    }

    pub fn instance_role(env: Env, region: Region) -> Self {
        let imds = Imds::from_env(&env);
        Self::of(SourceKind::InstanceRole(imds), env, region)
    }

    /// Credentials from `self` assume `role`. Without an endpoint of its own, `role` uses
    /// `AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL` when set.
    pub fn assume_role(self, mut role: AssumeRole) -> Self {
        if role.endpoint.is_none() {
            role.endpoint = env::endpoint_url(&self.env, "STS");
        }
        let (env, region, http) = (self.env.clone(), self.region.clone(), self.http.clone());
        CredentialSource {
            kind: SourceKind::AssumeRole {
                base: Box::new(self),
                role,
            },
            region,
            env,
            http,
        }
    }

    fn of(kind: SourceKind, env: Env, region: Region) -> Self {
        CredentialSource {
            kind,
            region,
            env,
            http: HttpClient::shared().clone(),
        }
    }

    /// The client used for STS.
    pub fn with_http(mut self, http: HttpClient) -> Self {
        self.http = http;
        self
    }

    /// Replaces the IMDS client of a chain or instance-role source (and of the source an
    /// AssumeRole starts from).
    pub fn with_imds(mut self, imds: Imds) -> Self {
        self.kind = match self.kind {
            SourceKind::Chain(_) => SourceKind::Chain(imds),
            SourceKind::InstanceRole(_) => SourceKind::InstanceRole(imds),
            SourceKind::AssumeRole { base, role } => SourceKind::AssumeRole {
                base: Box::new(base.with_imds(imds)),
                role,
            },
            other => other,
        };
        self
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    pub fn fetch(&self) -> Result<Credentials, CredentialsError> {
        self.fetch_with_provider().map(|(c, _)| c)
    }

    /// Credentials and where they came from, for the log.
    pub fn fetch_with_provider(&self) -> Result<(Credentials, Provider), CredentialsError> {
        let region = &self.region;
        match &self.kind {
            SourceKind::Environment => match from_environment(&self.env, region)? {
                Some(c) => Ok((c, Provider::Environment)),
                None => Err(CredentialsError::Environment {
                    why: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set".into(),
                }),
            },
            SourceKind::Profile(name) => match from_profile(&self.env, region, name.as_deref())? {
                Some((c, name)) => Ok((c, Provider::Profile { name })),
                None => Err(CredentialsError::Profile {
                    profile: "default".into(),
                    why: "no such profile, or it holds no keys".into(),
                }),
            },
            SourceKind::InstanceRole(imds) => {
                let (c, role) = imds.credentials(region)?;
                Ok((c, Provider::InstanceRole { role }))
            }
            SourceKind::AssumeRole { base, role } => {
                let (base_creds, _) = base.fetch_with_provider()?;
                let c = role.call(&self.http, &base_creds, region)?;
                Ok((
                    c,
                    Provider::AssumeRole {
                        role_arn: sanitize(&role.role_arn, 2048),
                    },
                ))
            }
            SourceKind::Chain(imds) => {
                let mut tried = Vec::new();
                if let Some(c) = from_environment(&self.env, region)? {
                    return Ok((c, Provider::Environment));
                }
                tried.push(
                    "environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY not set".to_owned(),
                );
                if let Some((c, name)) = from_profile(&self.env, region, None)? {
                    return Ok((c, Provider::Profile { name }));
                }
                let (cred_path, config_path) = shared_file_paths(&self.env);
                let files: Vec<String> = [cred_path, config_path]
                    .into_iter()
                    .flatten()
                    .map(|p| p.display().to_string())
                    .collect();
                tried.push(format!(
                    "shared files: no keys for profile `default` in {}",
                    if files.is_empty() {
                        "(HOME not set)".to_owned()
                    } else {
                        files.join(" or ")
                    }
                ));
                if self.env.flag("AWS_EC2_METADATA_DISABLED") {
                    tried.push("instance role: AWS_EC2_METADATA_DISABLED is set".to_owned());
                    return Err(CredentialsError::NotFound { tried });
                }
                match imds.fetch(region) {
                    Ok((c, role)) => Ok((c, Provider::InstanceRole { role })),
                    Err(f) if f.unavailable => {
                        tried.push(format!(
                            "instance role (IMDSv2 at {}): {}",
                            imds.endpoint, f.why
                        ));
                        Err(CredentialsError::NotFound { tried })
                    }
                    Err(f) => Err(CredentialsError::InstanceRole {
                        endpoint: imds.endpoint.clone(),
                        why: f.why,
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(text: &str, wanted: &str, is_config: bool) -> Option<Vec<(String, String)>> {
        profile_properties(text, wanted, is_config)
            .unwrap()
            .map(|p| p.into_iter().map(|(k, v)| (k, v.to_string())).collect())
    }

    #[test]
    fn ini_sections_differ_between_files() {
        let text = "[default]\nregion = eu-west-1\n[profile ops]\nAWS_ACCESS_KEY_ID = A # note\n[ops]\nx=1\n";
        assert_eq!(
            props(text, "ops", true).unwrap(),
            [("aws_access_key_id".to_owned(), "A".to_owned())]
        );
        assert_eq!(
            props(text, "ops", false).unwrap(),
            [("x".to_owned(), "1".to_owned())]
        );
        assert_eq!(
            props(text, "default", true).unwrap(),
            [("region".to_owned(), "eu-west-1".to_owned())]
        );
        assert!(props(text, "nope", true).is_none());
        // `[profileops]` is not `[profile ops]`.
        assert!(props("[profileops]\na=b\n", "ops", true).is_none());
    }

    #[test]
    fn ini_sub_properties_comments_and_duplicates() {
        let text = "# top\n[p]\ns3 =\n  addressing_style = path\n; c\nk = v1\nk = v2#kept\n\n[q]\nk = other\n[p]\nz = last\n";
        assert_eq!(
            props(text, "p", false).unwrap(),
            [
                ("s3".to_owned(), "".to_owned()),
                ("k".to_owned(), "v2#kept".to_owned()),
                ("z".to_owned(), "last".to_owned())
            ]
        );
    }

    #[test]
    fn ini_equally_indented_properties_are_properties() {
        let text = "\u{feff}[p]\r\n  a = 1\n  b = 2\n    nested = 3\n\tc = 4\n";
        assert_eq!(
            props(text, "p", false).unwrap(),
            [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "2".to_owned()),
                ("c".to_owned(), "4".to_owned())
            ]
        );
    }

    #[test]
    fn ini_errors_name_lines_not_contents() {
        let e = profile_properties("[p]\nSECRETVALUE\n", "p", false).unwrap_err();
        assert!(e.contains("line 2") && !e.contains("SECRETVALUE"), "{e}");
        assert!(
            profile_properties("k = v\n", "p", false)
                .unwrap_err()
                .contains("line 1")
        );
        assert!(
            profile_properties("[p\n", "p", false)
                .unwrap_err()
                .contains("line 1")
        );
    }

    #[test]
    fn rfc3339_expirations() {
        assert_eq!(parse_rfc3339("2026-11-27T12:00:00Z"), Some(1_795_780_800));
        assert_eq!(
            parse_rfc3339("2026-11-27T13:00:00+01:00"),
            Some(1_795_780_800)
        );
        assert_eq!(parse_rfc3339("2026-11-27T12:00:00.5Z"), Some(1_795_780_800));
        assert_eq!(parse_rfc3339("tomorrow"), None);
        assert_eq!(parse_rfc3339("1960-01-01T00:00:00Z"), None);
    }

    #[test]
    fn expiry_margin() {
        let c = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Secret::new("s"),
            session_token: None,
            expiration: Some(1000),
            region: Region::new("us-east-1").unwrap(),
        };
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert!(!expires_within(&c, at(600), Duration::from_secs(300)));
        assert!(expires_within(&c, at(700), Duration::from_secs(300)));
        let long_term = Credentials {
            expiration: None,
            ..c
        };
        assert!(!expires_within(
            &long_term,
            at(u32::MAX.into()),
            REFRESH_MARGIN
        ));
    }

    #[test]
    fn assume_role_checks_its_inputs_before_sending() {
        let role = AssumeRole::new("arn:aws:iam::123456789012:role/r", "x");
        assert!(role.check().unwrap_err().contains("session name"));
        let role = AssumeRole::new("arn:aws:iam::123456789012:role/r", "ok-name")
            .with_duration(Duration::from_secs(60));
        assert!(role.check().unwrap_err().contains("900"));
        let role = AssumeRole::new("role/r", "ok-name");
        assert!(role.check().unwrap_err().contains("ARN"));
        assert_eq!(
            AssumeRole::new("a", "b").url(&Region::new("eu-west-3").unwrap()),
            "https://sts.eu-west-3.amazonaws.com/"
        );
        assert_eq!(
            AssumeRole::new("a", "b")
                .with_endpoint(Some("http://127.0.0.1:9/".into()))
                .url(&Region::new("eu-west-3").unwrap()),
            "http://127.0.0.1:9/"
        );
    }
}
