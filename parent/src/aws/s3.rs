//! Whole-object GET and PUT against S3 or an S3-compatible endpoint, signed with SigV4,
//! retried with backoff on the failures S3 itself says are transient.

use super::env::{self, Env};
use super::http::{Attempt, HttpClient, HttpError, HttpResponse, RetryPolicy, Signing, retry};
use super::sanitize;
use bidding_core::credentials::Credentials;
use bidding_core::names::Region;
use bidding_core::sigv4::{Payload, Request};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use std::fmt;
use std::sync::RwLock;

/// A PUT's answer is empty on success; anything bigger is not worth reading.
const PUT_RESPONSE_LIMIT: u64 = 64 * 1024;
/// S3's own limit on key length, in UTF-8 bytes.
const MAX_KEY_BYTES: usize = 1024;

/// Each path segment of a key is encoded as SigV4 wants for S3: everything but unreserved
/// characters, once.
const KEY_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The S3 endpoint configured in the environment: `AWS_ENDPOINT_URL_S3`, then
/// `AWS_ENDPOINT_URL` (unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is true).
pub fn endpoint_from_env(env: &Env) -> Option<String> {
    env::endpoint_url(env, "S3")
}

/// What S3 said when it refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub status: u16,
    /// `Code` from the XML error document; `None` when the answer had no body.
    pub code: Option<String>,
    pub message: Option<String>,
    /// From the error document, else from the `x-amz-request-id` header.
    pub request_id: Option<String>,
    /// `x-amz-bucket-region`, which S3 sends when the bucket lives in another region.
    pub bucket_region: Option<String>,
    pub attempts: u32,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => write!(f, " {code}: {message}")?,
            (Some(code), None) => write!(f, " {code}")?,
            (None, _) => f.write_str(" with no error document")?,
        }
        write!(
            f,
            " (request id {}",
            self.request_id.as_deref().unwrap_or("(none)")
        )?;
        if let Some(region) = &self.bucket_region {
            write!(f, "; the bucket is in region {region}")?;
        }
        let s = if self.attempts == 1 { "" } else { "s" };
        write!(f, "; after {} attempt{s})", self.attempts)
    }
}

#[derive(Debug, Deserialize)]
struct ErrorXml {
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
    #[serde(rename = "RequestId")]
    request_id: Option<String>,
}

impl ServiceError {
    fn from_response(resp: &HttpResponse, attempts: u32) -> Self {
        let doc = std::str::from_utf8(&resp.body)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .and_then(|t| quick_xml::de::from_str::<ErrorXml>(t).ok());
        let (code, message, request_id) = match doc {
            Some(d) => (d.code, d.message, d.request_id),
            None => (None, None, None),
        };
        let header = |name| resp.header(name).map(|v| sanitize(v, 100));
        ServiceError {
            status: resp.status,
            code: code.map(|c| sanitize(c.trim(), 100)),
            message: message.map(|m| sanitize(m.trim(), 1000)),
            request_id: request_id
                .map(|r| sanitize(r.trim(), 100))
                .or_else(|| header("x-amz-request-id")),
            bucket_region: header("x-amz-bucket-region"),
            attempts,
        }
    }

    fn code_is(&self, codes: &[&str]) -> bool {
        self.code.as_deref().is_some_and(|c| codes.contains(&c))
    }

    /// S3 asks for these to be retried: server errors, throttling, and a request whose body
    /// arrived too slowly.
    fn is_retryable(&self) -> bool {
        self.status >= 500
            || self.status == 429
            || self.code_is(&[
                "SlowDown",
                "RequestTimeout",
                "InternalError",
                "ServiceUnavailable",
            ])
    }
}

/// `s3://bucket/key`, safe to print whatever the key holds.
struct Location<'a>(&'a str, &'a str);

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "s3://{}/{}",
            sanitize(self.0, 100),
            sanitize(self.1, 1100)
        )
    }
}

fn too_large(size: Option<u64>, limit: u64) -> String {
    match size {
        Some(size) => format!("object is {size} bytes, over the limit of {limit}"),
        None => format!(
            "object is over the limit of {limit} bytes (sent without a length; reading stopped \
             there)"
        ),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("{}: no such key: {error}", Location(bucket, key))]
    NoSuchKey {
        bucket: String,
        key: String,
        error: Box<ServiceError>,
    },
    #[error("{}: no such bucket: {error}", Location(bucket, key))]
    NoSuchBucket {
        bucket: String,
        key: String,
        error: Box<ServiceError>,
    },
    /// The credentials were refused: unknown key, wrong secret, expired token, or no
    /// permission.
    #[error("{}: credentials refused: {error}", Location(bucket, key))]
    Credentials {
        bucket: String,
        key: String,
        error: Box<ServiceError>,
    },
    #[error("{}: {}", Location(bucket, key), too_large(*size, *limit))]
    TooLarge {
        bucket: String,
        key: String,
        /// The declared length, when the server declared one.
        size: Option<u64>,
        limit: u64,
    },
    /// Any other error S3 answered with.
    #[error("{}: {error}", Location(bucket, key))]
    Service {
        bucket: String,
        key: String,
        error: Box<ServiceError>,
    },
    #[error(
        "{}: no answer after {attempts} attempt(s): {cause}",
        Location(bucket, key)
    )]
    Transport {
        bucket: String,
        key: String,
        attempts: u32,
        cause: Box<HttpError>,
    },
    /// Refused before sending: a bucket, key or endpoint S3 could not accept.
    #[error("{}: not sent: {why}", Location(bucket, key))]
    Invalid {
        bucket: String,
        key: String,
        why: String,
    },
}

impl S3Error {
    pub fn bucket(&self) -> &str {
        match self {
            S3Error::NoSuchKey { bucket, .. }
            | S3Error::NoSuchBucket { bucket, .. }
            | S3Error::Credentials { bucket, .. }
            | S3Error::TooLarge { bucket, .. }
            | S3Error::Service { bucket, .. }
            | S3Error::Transport { bucket, .. }
            | S3Error::Invalid { bucket, .. } => bucket,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            S3Error::NoSuchKey { key, .. }
            | S3Error::NoSuchBucket { key, .. }
            | S3Error::Credentials { key, .. }
            | S3Error::TooLarge { key, .. }
            | S3Error::Service { key, .. }
            | S3Error::Transport { key, .. }
            | S3Error::Invalid { key, .. } => key,
        }
    }

    /// What S3 answered, for the variants that come from an answer.
    pub fn service_error(&self) -> Option<&ServiceError> {
        match self {
            S3Error::NoSuchKey { error, .. }
            | S3Error::NoSuchBucket { error, .. }
            | S3Error::Credentials { error, .. }
            | S3Error::Service { error, .. } => Some(error),
            _ => None,
        }
    }

    /// S3 answered AccessDenied: no permission, or (for a reader without `s3:ListBucket` on
    /// the bucket) an object that does not exist; real S3 does not say which.
    pub fn is_access_denied(&self) -> bool {
        self.service_error()
            .is_some_and(|e| e.code.as_deref() == Some("AccessDenied"))
    }

    /// The object (or its bucket) does not exist, including a bare 404 without a document.
    pub fn is_not_found(&self) -> bool {
        match self {
            S3Error::NoSuchKey { .. } | S3Error::NoSuchBucket { .. } => true,
            S3Error::Service { error, .. } => error.status == 404,
            _ => false,
        }
    }

    fn from_service(bucket: &str, key: &str, error: ServiceError) -> Self {
        let (bucket, key, error) = (bucket.to_owned(), key.to_owned(), Box::new(error));
        if error.code_is(&["NoSuchKey"]) {
            S3Error::NoSuchKey { bucket, key, error }
        } else if error.code_is(&["NoSuchBucket"]) {
            S3Error::NoSuchBucket { bucket, key, error }
        } else if error.code_is(&[
            "AccessDenied",
            "AllAccessDisabled",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "InvalidToken",
            "TokenRefreshRequired",
            // What s3s answers for an access key it does not know.
            "NotSignedUp",
        ]) || (error.code.is_none() && error.status == 403)
        {
            S3Error::Credentials { bucket, key, error }
        } else {
            S3Error::Service { bucket, key, error }
        }
    }
}

/// How S3 carries user metadata: one `x-amz-meta-NAME` header per entry.
const USER_METADATA_PREFIX: &str = "x-amz-meta-";

/// An object as read, with its user metadata.
#[derive(Debug)]
pub struct Object {
    pub body: Vec<u8>,
    /// `x-amz-meta-*` entries, names without the prefix, in lower case.
    pub metadata: Vec<(String, String)>,
}

impl Object {
    /// The value of the user metadata entry `name` (lower case, without `x-amz-meta-`).
    pub fn metadata(&self, name: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An S3 client for one region and one set of credentials (replaceable when they are
/// refreshed).
#[derive(Debug)]
pub struct S3Client {
    http: HttpClient,
    endpoint: Option<String>,
    force_path_style: bool,
    region: Region,
    credentials: RwLock<Credentials>,
    retry: RetryPolicy,
}

impl S3Client {
    /// AWS's own endpoint for `region`, virtual-hosted style, the shared HTTP client, and
    /// the default retry policy.
    pub fn new(region: Region, credentials: Credentials) -> Self {
        S3Client {
            http: HttpClient::shared().clone(),
            endpoint: None,
            force_path_style: false,
            region,
            credentials: RwLock::new(credentials),
            retry: RetryPolicy::default(),
        }
    }

    /// A custom endpoint such as `http://127.0.0.1:9000` (requests then use path style, as
    /// S3-compatible servers expect); `None` for AWS.
    pub fn with_endpoint(mut self, endpoint: Option<String>) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// Path-style requests (`https://s3.<region>.amazonaws.com/<bucket>/<key>`) on AWS too.
    pub fn with_force_path_style(mut self, force: bool) -> Self {
        self.force_path_style = force;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn with_http(mut self, http: HttpClient) -> Self {
        self.http = http;
        self
    }

    /// Replaces the credentials, e.g. after a refresh; requests under way keep the old ones.
    pub fn set_credentials(&self, credentials: Credentials) {
        *self.credentials.write().unwrap_or_else(|p| p.into_inner()) = credentials;
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The URL a request for `bucket`/`key` goes to, with the key percent-encoded segment by
    /// segment.
    pub fn object_url(&self, bucket: &str, key: &str) -> Result<String, S3Error> {
        let invalid = |why: String| S3Error::Invalid {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            why,
        };
        check_bucket(bucket).map_err(invalid)?;
        check_key(key).map_err(invalid)?;
        let path: Vec<String> = key
            .split('/')
            .map(|segment| utf8_percent_encode(segment, KEY_SEGMENT).to_string())
            .collect();
        let path = path.join("/");
        let region = &self.region;
        Ok(match &self.endpoint {
            Some(endpoint) => {
                let base = check_endpoint(endpoint).map_err(invalid)?;
                format!("{base}/{bucket}/{path}")
            }
            // A bucket name with dots cannot match the wildcard certificate of
            // `*.s3.<region>.amazonaws.com`, so it goes path style.
            None if self.force_path_style || bucket.contains('.') => {
                format!("https://s3.{region}.amazonaws.com/{bucket}/{path}")
            }
            None => format!("https://{bucket}.s3.{region}.amazonaws.com/{path}"),
        })
    }

    /// The whole object, refused with [`S3Error::TooLarge`] if it is over `max_bytes`
    /// (checked on `Content-Length` before reading, and enforced while reading).
    pub fn get_object(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<Vec<u8>, S3Error> {
        let resp = self.execute("GET", bucket, key, &[], b"", max_bytes)?;
        Ok(resp.body)
    }

    /// The whole object, as [`S3Client::get_object`], with its user metadata.
    pub fn get_object_with_metadata(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<Object, S3Error> {
        let resp = self.execute("GET", bucket, key, &[], b"", max_bytes)?;
        let metadata = resp
            .headers
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(USER_METADATA_PREFIX)
                    .map(|name| (name.to_owned(), v.clone()))
            })
            .collect();
        Ok(Object {
            body: resp.body,
            metadata,
        })
    }

    /// Writes the whole object.
    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        content_type: &str,
    ) -> Result<(), S3Error> {
        self.put_object_with_metadata(bucket, key, body, content_type, &[])
    }

    /// Writes the whole object with user metadata (`x-amz-meta-NAME: VALUE`; names in lower
    /// case, values in ASCII, as S3 keeps them).
    pub fn put_object_with_metadata(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        content_type: &str,
        metadata: &[(&str, &str)],
    ) -> Result<(), S3Error> {
        let names: Vec<String> = metadata
            .iter()
            .map(|(name, _)| format!("{USER_METADATA_PREFIX}{name}"))
            .collect();
        let mut headers = vec![("content-type", content_type)];
        headers.extend(
            names
                .iter()
                .map(String::as_str)
                .zip(metadata.iter().map(|(_, v)| *v)),
        );
        self.execute("PUT", bucket, key, &headers, body, PUT_RESPONSE_LIMIT)?;
        Ok(())
    }

    /// Whether these credentials may write `key` in `bucket`, without writing it: starts a
    /// multipart upload there (S3 authorises it as `s3:PutObject`, and answers NoSuchBucket
    /// for a missing bucket) and aborts it at once (`s3:AbortMultipartUpload`). No object is
    /// created; an upload left behind by a failed abort holds no parts and is removed by a
    /// bucket's lifecycle rule for incomplete uploads.
    pub fn check_writable(&self, bucket: &str, key: &str) -> Result<(), S3Error> {
        let resp =
            self.execute_query("POST", bucket, key, "uploads", &[], b"", PUT_RESPONSE_LIMIT)?;
        let body = String::from_utf8_lossy(&resp.body);
        let upload_id = body
            .split_once("<UploadId>")
            .and_then(|(_, rest)| rest.split_once("</UploadId>"))
            .map(|(id, _)| id.trim().to_owned())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| S3Error::Invalid {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                why: "S3 started a multipart upload but its answer names no UploadId".into(),
            })?;
        let query = format!("uploadId={}", utf8_percent_encode(&upload_id, KEY_SEGMENT));
        self.execute_query("DELETE", bucket, key, &query, &[], b"", PUT_RESPONSE_LIMIT)?;
        Ok(())
    }

    fn execute(
        &self,
        method: &str,
        bucket: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        max_body: u64,
    ) -> Result<HttpResponse, S3Error> {
        self.execute_query(method, bucket, key, "", headers, body, max_body)
    }

    /// `query`: already encoded, without the `?`; empty for none.
    #[allow(clippy::too_many_arguments)]
    fn execute_query(
        &self,
        method: &str,
        bucket: &str,
        key: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        max_body: u64,
    ) -> Result<HttpResponse, S3Error> {
        let mut url = self.object_url(bucket, key)?;
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        let req = Request {
            method,
            url: &url,
            headers,
            body,
        };
        retry(&self.retry, |attempt| {
            // Read per attempt: a refresh between attempts is picked up.
            let credentials = self
                .credentials
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let signing = Signing {
                service: "s3",
                region: self.region.as_str(),
                credentials: &credentials,
                payload: Payload::S3,
            };
            match self.http.send_signed(&req, &signing, max_body) {
                Ok(resp) if resp.is_success() => Attempt::Done(Ok(resp)),
                Ok(resp) => {
                    let error = ServiceError::from_response(&resp, attempt);
                    let retryable = error.is_retryable();
                    let e = S3Error::from_service(bucket, key, error);
                    if retryable {
                        Attempt::Retry(e)
                    } else {
                        Attempt::Done(Err(e))
                    }
                }
                Err(HttpError::TooLarge { size, limit, .. }) => {
                    Attempt::Done(Err(S3Error::TooLarge {
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                        size,
                        limit,
                    }))
                }
                Err(cause) => {
                    let retryable = cause.is_retryable();
                    let e = S3Error::Transport {
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                        attempts: attempt,
                        cause: Box::new(cause),
                    };
                    if retryable {
                        Attempt::Retry(e)
                    } else {
                        Attempt::Done(Err(e))
                    }
                }
            }
        })
    }
}

/// Today's bucket naming rules. Legacy names (capitals, underscores) are refused: they work
/// only path style in us-east-1, and no bucket this service uses has one.
fn check_bucket(bucket: &str) -> Result<(), String> {
    let b = bucket.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else {
        Err(
            "bucket names are 3 to 63 lower-case letters, digits, dots and hyphens, \
             starting and ending with a letter or digit"
                .into(),
        )
    }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the object key is empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the object key is {} bytes, over S3's {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    // HTTP stacks and file-backed servers may resolve these as path steps, so the object
    // named would not be the object read.
    if key.split('/').any(|s| s == "." || s == "..") {
        return Err("object keys with `.` or `..` path segments are not supported".into());
    }
    Ok(())
}

fn check_endpoint(endpoint: &str) -> Result<&str, String> {
    let shown = sanitize(endpoint, 200);
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| format!("endpoint `{shown}` must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("endpoint `{shown}` has no host"));
    }
    if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "endpoint `{shown}` must be a plain URL without query, fragment or spaces"
        ));
    }
    Ok(endpoint.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bidding_core::credentials::Secret;

    fn client(endpoint: Option<&str>) -> S3Client {
        let creds = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Secret::new("secret"),
            session_token: None,
            expiration: None,
            region: Region::new("eu-west-1").unwrap(),
        };
        S3Client::new(Region::new("eu-west-1").unwrap(), creds)
            .with_endpoint(endpoint.map(str::to_owned))
    }

    #[test]
    fn urls_per_style() {
        let c = client(None);
        assert_eq!(
            c.object_url("bids", "a b/ü+x=y&z~.csv").unwrap(),
            "https://bids.s3.eu-west-1.amazonaws.com/a%20b/%C3%BC%2Bx%3Dy%26z~.csv"
        );
        assert_eq!(
            c.object_url("my.bids", "k").unwrap(),
            "https://s3.eu-west-1.amazonaws.com/my.bids/k"
        );
        let c = client(None).with_force_path_style(true);
        assert_eq!(
            c.object_url("bids", "dir//k").unwrap(),
            "https://s3.eu-west-1.amazonaws.com/bids/dir//k"
        );
        let c = client(Some("http://127.0.0.1:9000/"));
        assert_eq!(
            c.object_url("bids", "/lead").unwrap(),
            "http://127.0.0.1:9000/bids//lead"
        );
    }

    #[test]
    fn refuses_what_s3_would_not_accept() {
        let c = client(None);
        for bucket in [
            "ab",
            "Bids",
            "bids_x",
            "-bids",
            "bids-",
            "a..b",
            &"b".repeat(64),
        ] {
            let e = c.object_url(bucket, "k").unwrap_err();
            assert!(matches!(e, S3Error::Invalid { .. }), "{bucket}: {e}");
        }
        for key in ["", "a/../b", ".", &"k".repeat(1025)] {
            assert!(c.object_url("bids", key).is_err(), "{key}");
        }
        for endpoint in [
            "127.0.0.1:9000",
            "http://",
            "http:///x",
            "http://h/?q",
            "ftp://h",
        ] {
            let e = client(Some(endpoint)).object_url("bids", "k").unwrap_err();
            assert!(e.to_string().contains("endpoint"), "{e}");
        }
        let e = c.object_url("bids", "").unwrap_err();
        assert_eq!(
            e.to_string(),
            "s3://bids/: not sent: the object key is empty"
        );
    }

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn error_documents_and_bare_statuses() {
        let r = resp(
            404,
            &[("x-amz-request-id", "HDR")],
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>\
             <Message>The specified key does not exist.</Message><Key>k</Key>\
             <RequestId>DOC</RequestId><HostId>h</HostId></Error>",
        );
        let e = S3Error::from_service("b", "k", ServiceError::from_response(&r, 1));
        assert!(matches!(e, S3Error::NoSuchKey { .. }));
        assert_eq!(
            e.to_string(),
            "s3://b/k: no such key: HTTP 404 NoSuchKey: The specified key does not exist. \
             (request id DOC; after 1 attempt)"
        );
        let r = resp(404, &[("x-amz-request-id", "HDR")], "");
        let e = S3Error::from_service("b", "k\n", ServiceError::from_response(&r, 2));
        assert!(matches!(e, S3Error::Service { .. }) && e.is_not_found());
        assert_eq!(
            e.to_string(),
            "s3://b/k\\n: HTTP 404 with no error document (request id HDR; after 2 attempts)"
        );
        let r = resp(403, &[], "not xml <<<");
        let e = S3Error::from_service("b", "k", ServiceError::from_response(&r, 1));
        assert!(matches!(e, S3Error::Credentials { .. }), "{e}");
        let r = resp(
            301,
            &[("x-amz-bucket-region", "us-west-2")],
            "<Error><Code>PermanentRedirect</Code><Message>m</Message></Error>",
        );
        let e = S3Error::from_service("b", "k", ServiceError::from_response(&r, 1));
        assert!(
            e.to_string().contains("the bucket is in region us-west-2"),
            "{e}"
        );
        for (status, code, retry) in [
            (503, "SlowDown", true),
            (400, "RequestTimeout", true),
            (500, "InternalError", true),
            (400, "InvalidArgument", false),
            (403, "AccessDenied", false),
        ] {
            let r = resp(status, &[], &format!("<Error><Code>{code}</Code></Error>"));
            assert_eq!(
                ServiceError::from_response(&r, 1).is_retryable(),
                retry,
                "{code}"
            );
        }
    }
}
