//! AWS credentials, with the secret halves kept out of every `Debug`, log and error.

use crate::names::Region;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use zeroize::Zeroizing;

/// A secret string: zeroed on drop, redacted in `Debug`, never `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(Zeroizing::new(s.into()))
    }
    /// The secret itself. Call sites are few and greppable on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret(Zeroizing::new(String::deserialize(d)?)))
    }
}

/// Temporary (or long-term) AWS credentials and the region they are used in.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<Secret>,
    /// Expiry, Unix time in seconds; `None` for long-term keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<u64>,
    pub region: Region,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expiration", &self.expiration)
            .field("region", &self.region)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("access key id must be 16 to 128 upper-case letters and digits")]
    AccessKeyId,
    #[error("secret access key is empty")]
    EmptySecret,
    #[error("session token is empty")]
    EmptyToken,
    #[error("credentials expired at {expiration} (now {now})")]
    Expired { expiration: u64, now: u64 },
}

impl Credentials {
    /// Shape checks that need no clock; `now` (Unix seconds) for the expiry.
    pub fn validate(&self, now: u64) -> Result<(), CredentialsError> {
        let id = self.access_key_id.as_bytes();
        if !(16..=128).contains(&id.len())
            || !id
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(CredentialsError::AccessKeyId);
        }
        if self.secret_access_key.expose().is_empty() {
            return Err(CredentialsError::EmptySecret);
        }
        if self
            .session_token
            .as_ref()
            .is_some_and(|t| t.expose().is_empty())
        {
            return Err(CredentialsError::EmptyToken);
        }
        if let Some(expiration) = self.expiration
            && expiration <= now
        {
            return Err(CredentialsError::Expired { expiration, now });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            session_token: Some(Secret::new("FwoGZXIvYXdzEXAMPLETOKEN")),
            expiration: Some(100),
            region: Region::new("us-east-1").unwrap(),
        };
        let d = format!("{c:?}");
        assert!(
            !d.contains("EXAMPLEKEY") && !d.contains("EXAMPLETOKEN"),
            "{d}"
        );
        assert_eq!(c.validate(99), Ok(()));
        assert_eq!(
            c.validate(100),
            Err(CredentialsError::Expired {
                expiration: 100,
                now: 100
            })
        );
    }
}
