//! KMS's error answers: HTTP status, `__type` and message, as the real service sends them.
//!
//! Authentication errors come from the AWS front end shared by the JSON-protocol services and
//! carry its namespace in `__type` (`com.amazon.coral.service#UnrecognizedClientException`),
//! with HTTP 400 as those services answer (only API Gateway answers 403 for a missing token).
//! KMS's own exceptions have a bare `__type`. Clients (botocore, `bidding_core::kms`) strip the
//! namespace, and an emulator that left it out would hide a client that does not.

use bidding_core::sigv4::VerifyError;
use std::fmt;

const CORAL: &str = "com.amazon.coral.service#";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsError {
    pub status: u16,
    /// `__type`, possibly namespaced.
    pub kind: String,
    pub message: String,
}

impl KmsError {
    pub fn new(status: u16, kind: &str, message: impl Into<String>) -> KmsError {
        KmsError {
            status,
            kind: kind.to_owned(),
            message: message.into(),
        }
    }

    fn coral(kind: &str, message: impl Into<String>) -> KmsError {
        KmsError::new(400, &format!("{CORAL}{kind}"), message)
    }

    /// The exception name without namespace, e.g. `InvalidSignatureException`.
    pub fn code(&self) -> &str {
        self.kind.rsplit('#').next().unwrap_or(&self.kind)
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::json!({ "__type": self.kind, "message": self.message })
            .to_string()
            .into_bytes()
    }

    pub fn not_found(message: impl Into<String>) -> KmsError {
        KmsError::new(400, "NotFoundException", message)
    }

    pub fn validation(message: impl Into<String>) -> KmsError {
        KmsError::new(400, "ValidationException", message)
    }

    /// The shape of the service's constraint messages, for one failed member.
    pub fn constraint(value: &str, member: &str, constraint: &str) -> KmsError {
        KmsError::validation(format!(
            "1 validation error detected: Value {value} at '{member}' failed to satisfy constraint: {constraint}"
        ))
    }

    pub fn serialization(message: impl Into<String>) -> KmsError {
        KmsError::new(400, "SerializationException", message)
    }

    pub fn invalid_ciphertext(message: impl Into<String>) -> KmsError {
        KmsError::new(400, "InvalidCiphertextException", message)
    }

    pub fn incorrect_key() -> KmsError {
        KmsError::new(
            400,
            "IncorrectKeyException",
            "The key ID in the request does not identify a CMK that can perform this operation.",
        )
    }

    pub fn disabled(arn: &str) -> KmsError {
        KmsError::new(400, "DisabledException", format!("{arn} is disabled."))
    }

    pub fn malformed_policy(message: impl Into<String>) -> KmsError {
        KmsError::new(400, "MalformedPolicyDocumentException", message)
    }

    pub fn unsupported(message: impl Into<String>) -> KmsError {
        KmsError::new(400, "UnsupportedOperationException", message)
    }

    pub fn internal(message: impl Into<String>) -> KmsError {
        KmsError::new(500, "KMSInternalException", message)
    }

    pub fn throttling() -> KmsError {
        KmsError::new(400, "ThrottlingException", "Rate exceeded")
    }

    /// What the front end answers when a service host fails: the fault injector's 500.
    pub fn internal_failure() -> KmsError {
        KmsError::new(
            500,
            "InternalFailure",
            "We encountered an internal error. Please try again.",
        )
    }

    pub fn unknown_operation(message: impl Into<String>) -> KmsError {
        KmsError::coral("UnknownOperationException", message)
    }

    pub fn expired_token() -> KmsError {
        KmsError::coral(
            "ExpiredTokenException",
            "The security token included in the request is expired",
        )
    }

    /// `reason` is what the caller was refused for, in AWS's words.
    pub fn access_denied(message: impl Into<String>) -> KmsError {
        KmsError::new(400, "AccessDeniedException", message)
    }
}

impl From<VerifyError> for KmsError {
    fn from(e: VerifyError) -> KmsError {
        let message = e.to_string();
        match e {
            VerifyError::Missing => KmsError::coral("MissingAuthenticationTokenException", message),
            VerifyError::Incomplete(_) => KmsError::coral("IncompleteSignatureException", message),
            VerifyError::UnknownKey => KmsError::coral("UnrecognizedClientException", message),
            VerifyError::Expired { .. }
            | VerifyError::NotYetCurrent { .. }
            | VerifyError::Scope(_)
            | VerifyError::Mismatch => KmsError::coral("InvalidSignatureException", message),
        }
    }
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code(), self.status, self.message)
    }
}

impl std::error::Error for KmsError {}
