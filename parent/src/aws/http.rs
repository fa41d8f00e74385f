//! One HTTP agent for every AWS call the parent makes, and the one way to send a request
//! through it: bounded in time, bounded in size, with 4xx/5xx answers handed back for the
//! caller to read rather than turned into opaque errors.

use bidding_core::credentials::Credentials;
use bidding_core::sigv4::{self, Payload, Request, SignError};
use std::io::Read;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

/// How long to wait for a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole exchange, from DNS to the last byte of the body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of a non-2xx body is kept: enough for any AWS error document, and a server that
/// answers an error with a flood costs us nothing.
pub const MAX_ERROR_BODY: u64 = 64 * 1024;

/// A cheaply cloned handle on a `ureq` agent (connection pool included).
#[derive(Clone)]
pub struct HttpClient {
    agent: ureq::Agent,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient { .. }")
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::shared().clone()
    }
}

/// A response read in full (within the caller's limit).
#[derive(Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Names in lower case, values as sent (non-UTF-8 bytes replaced).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for HttpResponse {
    // Bodies can hold credentials (IMDS, STS): show only their size.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl HttpResponse {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{method} {url}: {cause}")]
    Transport {
        method: String,
        url: String,
        cause: ureq::Error,
    },
    #[error("{method} {url}: {}", too_large(*.size, *.limit))]
    TooLarge {
        method: String,
        url: String,
        /// The declared `Content-Length`, when there was one.
        size: Option<u64>,
        limit: u64,
    },
    #[error("{method} {url}: {cause}")]
    Sign {
        method: String,
        url: String,
        cause: SignError,
    },
}

fn too_large(size: Option<u64>, limit: u64) -> String {
    match size {
        Some(size) => format!("response body is {size} bytes, over the limit of {limit}"),
        None => format!(
            "response body is over the limit of {limit} bytes (sent without a length; \
             reading stopped there)"
        ),
    }
}

impl HttpError {
    /// Whether sending the same request again may succeed: the connection failed or broke,
    /// or timed out. A bad URL, a TLS verification failure or an oversized body will not
    /// get better.
    pub fn is_retryable(&self) -> bool {
        match self {
            HttpError::Transport { cause, .. } => matches!(
                cause,
                ureq::Error::Io(_)
                    | ureq::Error::Timeout(_)
                    | ureq::Error::ConnectionFailed
                    | ureq::Error::HostNotFound
                    | ureq::Error::Protocol(_)
                    | ureq::Error::BodyStalled
            ),
            HttpError::TooLarge { .. } | HttpError::Sign { .. } => false,
        }
    }
}

/// What a signed request is signed for.
#[derive(Debug, Clone, Copy)]
pub struct Signing<'a> {
    pub service: &'a str,
    pub region: &'a str,
    pub credentials: &'a Credentials,
    pub payload: Payload,
}

impl HttpClient {
    /// The process-wide client with the default timeouts, shared so that S3 and STS calls
    /// reuse pooled connections.
    pub fn shared() -> &'static HttpClient {
        static SHARED: OnceLock<HttpClient> = OnceLock::new();
        SHARED.get_or_init(|| HttpClient::with_timeouts(CONNECT_TIMEOUT, REQUEST_TIMEOUT))
    }

    pub fn with_timeouts(connect: Duration, overall: Duration) -> Self {
        Self::build(connect, overall, ureq::tls::RootCerts::WebPki)
    }

    /// A client that trusts only the certificates in `pem` (like `AWS_CA_BUNDLE` for the AWS
    /// CLI), e.g. the KMS emulator's local CA.
    pub fn with_ca_bundle(pem: &[u8]) -> Result<Self, String> {
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            match item.map_err(|e| format!("CA bundle: {e}"))? {
                ureq::tls::PemItem::Certificate(c) => certs.push(c),
                _ => continue,
            }
        }
        if certs.is_empty() {
            return Err("CA bundle: no certificate in the PEM".into());
        }
        Ok(Self::build(
            CONNECT_TIMEOUT,
            REQUEST_TIMEOUT,
            ureq::tls::RootCerts::Specific(Arc::new(certs)),
        ))
    }

    fn build(connect: Duration, overall: Duration, roots: ureq::tls::RootCerts) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = ureq::tls::TlsConfig::builder()
            .unversioned_rustls_crypto_provider(provider)
            .root_certs(roots)
            .build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_connect(Some(connect))
            .timeout_global(Some(overall))
            // Callers read AWS's error documents from 4xx/5xx bodies.
            .http_status_as_error(false)
            // S3 answers a wrong-region request with a 301 whose body says where to go;
            // following it blindly would re-send to a host nobody configured.
            .max_redirects(0)
            // ureq would otherwise pick up HTTPS_PROXY behind our `Env`'s back, and IMDS
            // must never be asked through a proxy.
            .proxy(None)
            .user_agent(concat!("bidding-parent/", env!("CARGO_PKG_VERSION")))
            .build();
        HttpClient {
            agent: config.new_agent(),
        }
    }

    /// Signs `req` with SigV4 at the current time and sends it. See [`HttpClient::send`].
    pub fn send_signed(
        &self,
        req: &Request<'_>,
        signing: &Signing<'_>,
        max_body: u64,
    ) -> Result<HttpResponse, HttpError> {
        let signed = sigv4::sign(
            req,
            signing.service,
            signing.region,
            signing.credentials,
            signing.payload,
            SystemTime::now(),
        )
        .map_err(|cause| HttpError::Sign {
            method: req.method.to_owned(),
            url: req.url.to_owned(),
            cause,
        })?;
        let extra: Vec<(&str, &str)> = signed
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.send_with(req, &extra, max_body)
    }

    /// Sends `req` and reads the answer. A 2xx body larger than `max_body` is refused: from
    /// its `Content-Length` before any of it is read, and otherwise by stopping the read one
    /// byte past the limit. Other statuses keep at most [`MAX_ERROR_BODY`] bytes of body.
    pub fn send(&self, req: &Request<'_>, max_body: u64) -> Result<HttpResponse, HttpError> {
        self.send_with(req, &[], max_body)
    }

    fn send_with(
        &self,
        req: &Request<'_>,
        extra: &[(&str, &str)],
        max_body: u64,
    ) -> Result<HttpResponse, HttpError> {
        let transport = |cause: ureq::Error| HttpError::Transport {
            method: req.method.to_owned(),
            url: req.url.to_owned(),
            cause,
        };
        let mut builder = ureq::http::Request::builder()
            .method(req.method)
            .uri(req.url);
        for (k, v) in req.headers.iter().chain(extra) {
            builder = builder.header(*k, *v);
        }
        // A GET with an empty body must not grow a `Content-Length: 0`; a PUT of an empty
        // object must.
        let bodiless = req.body.is_empty() && matches!(req.method, "GET" | "HEAD" | "DELETE");
        let response = if bodiless {
            let request = builder.body(()).map_err(|e| transport(e.into()))?;
            self.agent.run(request)
        } else {
            let request = builder.body(req.body).map_err(|e| transport(e.into()))?;
            self.agent.run(request)
        }
        .map_err(transport)?;

        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let too_large = |size| HttpError::TooLarge {
            method: req.method.to_owned(),
            url: req.url.to_owned(),
            size,
            limit: max_body,
        };
        let mut body = response.into_body();
        let body = if (200..300).contains(&status) {
            if let Some(len) = body.content_length()
                && len > max_body
            {
                // Dropping the unread body closes the connection instead of draining it.
                return Err(too_large(Some(len)));
            }
            match body.with_config().limit(max_body).read_to_vec() {
                Ok(bytes) => bytes,
                Err(ureq::Error::BodyExceedsLimit(_)) => return Err(too_large(None)),
                Err(e) => return Err(transport(e)),
            }
        } else {
            let mut bytes = Vec::new();
            // A broken error body still leaves a status worth reporting.
            let _ = body
                .as_reader()
                .take(MAX_ERROR_BODY)
                .read_to_end(&mut bytes);
            bytes
        };
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// Bounded retries with exponential backoff and jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; at least 1.
    pub max_attempts: u32,
    /// The backoff before the second attempt; it doubles for each attempt after that.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt number `attempt` (1-based): half of the exponential
    /// step fixed, half random, so that many clients backing off together spread out while
    /// each still waits longer every time.
    pub fn delay(&self, attempt: u32) -> Duration {
        let step = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max_delay);
        let half = step / 2;
        let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(fastrand::u64(0..=jitter_nanos))
    }
}

/// One attempt's outcome, as [`retry`] sees it.
pub(crate) enum Attempt<T, E> {
    Done(Result<T, E>),
    Retry(E),
}

/// Runs `f` (given the 1-based attempt number) until it is done or the attempts run out; the
/// last retryable error is returned then.
pub(crate) fn retry<T, E>(
    policy: &RetryPolicy,
    mut f: impl FnMut(u32) -> Attempt<T, E>,
) -> Result<T, E> {
    let mut attempt = 1;
    loop {
        match f(attempt) {
            Attempt::Done(result) => return result,
            Attempt::Retry(e) if attempt >= policy.max_attempts.max(1) => return Err(e),
            Attempt::Retry(_) => {
                std::thread::sleep(policy.delay(attempt));
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_bounds() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        for _ in 0..100 {
            let d1 = p.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d9 = p.delay(9);
            assert!(d9 >= Duration::from_millis(500) && d9 <= Duration::from_millis(1000));
            assert!(p.delay(u32::MAX) <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn retry_stops_at_max_attempts() {
        let p = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        };
        let mut seen = Vec::new();
        let r: Result<(), u32> = retry(&p, |n| {
            seen.push(n);
            Attempt::Retry(n)
        });
        assert_eq!(r, Err(3));
        assert_eq!(seen, [1, 2, 3]);
        let r: Result<u32, u32> = retry(&p, |n| {
            if n == 2 {
                Attempt::Done(Ok(n))
            } else {
                Attempt::Retry(n)
            }
        });
        assert_eq!(r, Ok(2));
    }
}
