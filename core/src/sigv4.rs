//! AWS Signature Version 4 for described requests, through AWS's own `aws-sigv4` crate.
//!
//! Signing is what the parent (S3, STS) and the enclave (KMS) need. Verification is what the
//! local stand-ins need: it re-signs the request as described by its own `Authorization`
//! header with the same crate and compares, so the canonicalisation is AWS's, not ours.

use crate::credentials::{Credentials, Secret};
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign as aws_sign,
};
use aws_sigv4::sign::v4;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How the payload is covered, which differs per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The body's hash goes only into the canonical request (KMS, STS).
    Default,
    /// Also sent and signed as `x-amz-content-sha256` (S3 requires it).
    S3,
}

/// A request described well enough to sign.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Absolute and already percent-encoded, e.g. `https://kms.us-east-1.amazonaws.com/`.
    pub url: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot sign request: URL `{0}` has no host")]
    NoHost(String),
    #[error("cannot sign request: {0}")]
    Signing(String),
}

/// Signs `req` and returns the headers to add (`authorization`, `x-amz-date`, and
/// `x-amz-security-token` / `x-amz-content-sha256` when they apply). `time` is the signing
/// instant: the caller's clock, passed in.
pub fn sign(
    req: &Request<'_>,
    service: &str,
    region: &str,
    creds: &Credentials,
    payload: Payload,
    time: SystemTime,
) -> Result<Vec<(String, String)>, SignError> {
    let mut settings = SigningSettings::default();
    if payload == Payload::S3 {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        // S3 must see the path exactly as sent.
        settings.percent_encoding_mode = aws_sigv4::http_request::PercentEncodingMode::Single;
        settings.uri_path_normalization_mode =
            aws_sigv4::http_request::UriPathNormalizationMode::Disabled;
    }
    sign_with(
        req,
        service,
        region,
        creds.access_key_id.as_str(),
        &creds.secret_access_key,
        creds.session_token.as_ref(),
        settings,
        time,
    )
    .map(|(headers, _)| headers)
}

#[allow(clippy::too_many_arguments)]
fn sign_with(
    req: &Request<'_>,
    service: &str,
    region: &str,
    access_key_id: &str,
    secret: &Secret,
    token: Option<&Secret>,
    settings: SigningSettings,
    time: SystemTime,
) -> Result<(Vec<(String, String)>, String), SignError> {
    // aws-sigv4 panics on a URL without an authority; refuse that here instead.
    let uri: http::Uri = req
        .url
        .parse()
        .map_err(|_| SignError::NoHost(req.url.to_owned()))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(SignError::NoHost(req.url.to_owned()));
    }
    let identity = aws_credential_types::Credentials::new(
        access_key_id,
        secret.expose(),
        token.map(|t| t.expose().to_owned()),
        None,
        "bidding-core",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| SignError::Signing(e.to_string()))?
        .into();
    let signable = SignableRequest::new(
        req.method,
        req.url,
        req.headers.iter().copied(),
        SignableBody::Bytes(req.body),
    )
    .map_err(|e| SignError::Signing(e.to_string()))?;
    let (instructions, signature) = aws_sign(signable, &params)
        .map_err(|e| SignError::Signing(e.to_string()))?
        .into_parts();
    let headers = instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok((headers, signature))
}

/// What a verifier knows about an access key.
#[derive(Clone)]
pub struct KnownKey {
    pub secret: Secret,
    /// For temporary credentials, the session token that must accompany the key.
    pub session_token: Option<Secret>,
}

/// A verified request's signer and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    pub region: String,
    pub service: String,
    pub time: SystemTime,
}

/// Why a signature was refused. The variants follow the distinctions AWS services make in
/// their error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No `Authorization` header at all (AWS: MissingAuthenticationToken).
    #[error("Missing Authentication Token")]
    Missing,
    /// The header is there but cannot be read (AWS: IncompleteSignature).
    #[error("{0}")]
    Incomplete(String),
    /// The access key is unknown, or a session token is missing or wrong (AWS:
    /// UnrecognizedClient).
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    /// The request's date is too far from the verifier's clock (AWS: InvalidSignature, with
    /// this wording).
    #[error(
        "Signature expired: {request} is now earlier than {earliest} ({now} - {skew_minutes} min.)"
    )]
    Expired {
        request: String,
        earliest: String,
        now: String,
        skew_minutes: u64,
    },
    #[error(
        "Signature not yet current: {request} is still later than {latest} ({now} + {skew_minutes} min.)"
    )]
    NotYetCurrent {
        request: String,
        latest: String,
        now: String,
        skew_minutes: u64,
    },
    /// The credential scope names another region or service.
    #[error("Credential should be scoped to a valid region and service: {0}")]
    Scope(String),
    /// The signature does not match (AWS: InvalidSignature / SignatureDoesNotMatch).
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )]
    Mismatch,
}

/// Verifies a header-signed request. `headers` are all the request's headers (any case);
/// `host` comes from them. `lookup` maps an access key id to what the verifier knows of it.
#[allow(clippy::too_many_arguments)] // mirrors the parts of a request; a struct would only rename them
pub fn verify(
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    expected_service: &str,
    expected_region: &str,
    lookup: impl Fn(&str) -> Option<KnownKey>,
    now: SystemTime,
    max_skew: Duration,
) -> Result<Verified, VerifyError> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let auth = get("authorization").ok_or(VerifyError::Missing)?;
    let parsed = parse_authorization(auth)?;
    let amz_date = get("x-amz-date").ok_or_else(|| {
        VerifyError::Incomplete(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                .into(),
        )
    })?;
    let time = parse_amz_date(amz_date).ok_or_else(|| {
        VerifyError::Incomplete(format!(
            "Date must be in ISO-8601 'basic format'. Got '{amz_date}'."
        ))
    })?;
    if parsed.date != amz_date[..8] {
        return Err(VerifyError::Scope(format!(
            "Credential date {} does not match the request date {}",
            parsed.date,
            &amz_date[..8]
        )));
    }
    if parsed.region != expected_region || parsed.service != expected_service {
        return Err(VerifyError::Scope(format!(
            "expected {expected_region}/{expected_service}, found {}/{}",
            parsed.region, parsed.service
        )));
    }
    let skew_minutes = max_skew.as_secs() / 60;
    if time + max_skew < now {
        return Err(VerifyError::Expired {
            request: amz_date.to_owned(),
            earliest: format_amz_date(now - max_skew),
            now: format_amz_date(now),
            skew_minutes,
        });
    }
    if time > now + max_skew {
        return Err(VerifyError::NotYetCurrent {
            request: amz_date.to_owned(),
            latest: format_amz_date(now + max_skew),
            now: format_amz_date(now),
            skew_minutes,
        });
    }
    let known = lookup(&parsed.access_key_id).ok_or(VerifyError::UnknownKey)?;
    let presented_token = get("x-amz-security-token");
    match (&known.session_token, presented_token) {
        (None, None) => {}
        (Some(want), Some(got)) if crate::ct_eq(want.expose().as_bytes(), got.as_bytes()) => {}
        _ => return Err(VerifyError::UnknownKey),
    }
    let host = get("host").ok_or_else(|| VerifyError::Incomplete("missing Host header".into()))?;
    if !parsed.signed_headers.iter().any(|h| h == "host") {
        return Err(VerifyError::Incomplete(
            "'Host' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    let url = format!("https://{host}{path_and_query}");
    // Exactly the headers the client says it signed; aws-sigv4 adds date and token itself.
    let mut signed: Vec<(&str, &str)> = Vec::new();
    for name in &parsed.signed_headers {
        if matches!(name.as_str(), "x-amz-date" | "x-amz-security-token") {
            continue;
        }
        let mut found = false;
        for (k, v) in headers {
            if k.eq_ignore_ascii_case(name) {
                signed.push((name.as_str(), v));
                found = true;
            }
        }
        if !found {
            return Err(VerifyError::Mismatch);
        }
    }
    let mut settings = SigningSettings::default();
    settings.excluded_headers = Some(Vec::new());
    let req = Request {
        method,
        url: &url,
        headers: &signed,
        body,
    };
    let (out, _) = sign_with(
        &req,
        &parsed.service,
        &parsed.region,
        &parsed.access_key_id,
        &known.secret,
        presented_token.map(Secret::new).as_ref(),
        settings,
        time,
    )
    .map_err(|e| VerifyError::Incomplete(e.to_string()))?;
    let ours = out
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    if crate::ct_eq(ours.as_bytes(), normalise_authorization(auth).as_bytes()) {
        Ok(Verified {
            access_key_id: parsed.access_key_id,
            region: parsed.region,
            service: parsed.service,
            time,
        })
    } else {
        Err(VerifyError::Mismatch)
    }
}

struct ParsedAuthorization {
    access_key_id: String,
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
}

fn parse_authorization(auth: &str) -> Result<ParsedAuthorization, VerifyError> {
    let incomplete = |what: &str| {
        VerifyError::Incomplete(format!("Authorization header requires '{what}' parameter."))
    };
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
        VerifyError::Incomplete("Authorization header must use AWS4-HMAC-SHA256".into())
    })?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let credential = credential.ok_or_else(|| incomplete("Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| incomplete("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| incomplete("Signature"))?;
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(VerifyError::Mismatch);
    }
    let parts: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, "aws4_request"] = parts[..] else {
        return Err(VerifyError::Incomplete(format!(
            "Credential should be scoped to correct service. Got '{credential}'."
        )));
    };
    let signed_headers: Vec<String> = signed_headers.split(';').map(str::to_owned).collect();
    let ok_header = |h: &String| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !signed_headers.iter().all(ok_header) || date.len() != 8 {
        return Err(VerifyError::Incomplete(
            "malformed SignedHeaders or credential date".into(),
        ));
    }
    Ok(ParsedAuthorization {
        access_key_id: key.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers,
    })
}

/// `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` with the spacing aws-sigv4
/// writes, so that equal signatures compare equal whatever spacing a client used.
fn normalise_authorization(auth: &str) -> String {
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").unwrap_or(auth);
    let parts: Vec<&str> = rest.split(',').map(str::trim).collect();
    format!("AWS4-HMAC-SHA256 {}", parts.join(", "))
}

/// Parses `YYYYMMDDTHHMMSSZ`.
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    if days < 0 {
        return None;
    }
    let secs = days as u64 * 86_400 + h * 3_600 + mi * 60 + se;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Formats `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// Howard Hinnant's civil-calendar algorithms (public domain): exact for the proleptic
// Gregorian calendar, no tables.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Region;

    fn creds(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: token.map(Secret::new),
            expiration: None,
            region: Region::new("us-east-1").unwrap(),
        }
    }

    fn at(s: &str) -> SystemTime {
        parse_amz_date(s).unwrap()
    }

    /// The "get-vanilla" case of AWS's published SigV4 test suite.
    #[test]
    fn matches_aws_test_suite_get_vanilla() {
        let req = Request {
            method: "GET",
            url: "https://example.amazonaws.com/",
            headers: &[],
            body: b"",
        };
        let h = sign(
            &req,
            "service",
            "us-east-1",
            &creds(None),
            Payload::Default,
            at("20150830T123600Z"),
        )
        .unwrap();
        let auth = &h.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    fn kms_request(
        token: Option<&str>,
        time: SystemTime,
    ) -> (Vec<(String, String)>, &'static [u8]) {
        let body: &'static [u8] = br#"{"KeyId":"k"}"#;
        let base = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "TrentService.Decrypt"),
        ];
        let req = Request {
            method: "POST",
            url: "https://kms.us-east-1.amazonaws.com/",
            headers: &base,
            body,
        };
        let mut all: Vec<(String, String)> = base
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.push(("host".into(), "kms.us-east-1.amazonaws.com".into()));
        all.extend(
            sign(
                &req,
                "kms",
                "us-east-1",
                &creds(token),
                Payload::Default,
                time,
            )
            .unwrap(),
        );
        (all, body)
    }

    fn check(
        headers: &[(String, String)],
        body: &[u8],
        token: Option<&str>,
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let known = KnownKey {
            secret: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: token.map(Secret::new),
        };
        verify(
            "POST",
            "/",
            &h,
            body,
            "kms",
            "us-east-1",
            |k| (k == "AKIDEXAMPLE").then(|| known.clone()),
            now,
            Duration::from_secs(300),
        )
    }

    #[test]
    fn verify_accepts_our_signatures_and_refuses_tampering() {
        let t = at("20261127T120000Z");
        for token in [None, Some("SESSIONTOKEN")] {
            let (headers, body) = kms_request(token, t);
            assert!(check(&headers, body, token, t).is_ok());
            assert_eq!(check(&headers, b"{}", token, t), Err(VerifyError::Mismatch));
            assert!(matches!(
                check(&headers, body, token, t + Duration::from_secs(301)),
                Err(VerifyError::Expired { .. })
            ));
            assert!(matches!(
                check(&headers, body, token, t - Duration::from_secs(301)),
                Err(VerifyError::NotYetCurrent { .. })
            ));
        }
        let (headers, body) = kms_request(None, t);
        assert_eq!(
            check(&headers, body, Some("T"), t),
            Err(VerifyError::UnknownKey)
        );
        let (headers, body) = kms_request(Some("OTHER"), t);
        assert_eq!(
            check(&headers, body, Some("SESSIONTOKEN"), t),
            Err(VerifyError::UnknownKey)
        );
        let mut h = kms_request(None, t).0;
        h.retain(|(k, _)| k != "authorization");
        assert_eq!(check(&h, body, None, t), Err(VerifyError::Missing));
        let mut h = kms_request(None, t).0;
        for (k, v) in h.iter_mut() {
            if k == "x-amz-target" {
                *v = "TrentService.Encrypt".into();
            }
        }
        assert_eq!(check(&h, body, None, t), Err(VerifyError::Mismatch));
    }

    #[test]
    fn amz_dates_round_trip() {
        for s in [
            "19700101T000000Z",
            "20000229T235959Z",
            "20261127T120000Z",
            "21000301T000001Z",
        ] {
            assert_eq!(format_amz_date(at(s)), s);
        }
        for bad in [
            "2026-11-27T12:00:00Z",
            "20261327T120000Z",
            "20261127T120000",
            "2026112xT120000Z",
        ] {
            assert!(parse_amz_date(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn refuses_urls_without_host_instead_of_panicking() {
        let req = Request {
            method: "GET",
            url: "/relative",
            headers: &[],
            body: b"",
        };
        assert!(
            sign(
                &req,
                "s3",
                "us-east-1",
                &creds(None),
                Payload::S3,
                at("20261127T120000Z")
            )
            .is_err()
        );
    }
}
