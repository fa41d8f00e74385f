//! The `Recipient` parameter: an attestation document checked as KMS checks it, and the
//! answer sealed to its public key.
//!
//! A document must verify with `bidding_core::attestation` against the configured root (AWS's,
//! or the software NSM's dev root), with every certificate valid now, and must be fresh: made
//! at most five minutes ago (and not more than five minutes ahead of our clock). Documents
//! that fail any of this are refused with ValidationException: KMS's documentation lists no
//! dedicated exception for a bad attestation, and ValidationException is what it uses for a
//! parameter that does not meet the operation's constraints. A stale document is such a
//! parameter, not an authorization failure: the caller may well be allowed, just not with a
//! document this old. (The enclave treats ValidationException as fatal, which is right: it
//! refreshes its document every four minutes, so a stale one is a bug.)
//!
//! Verification (a chain of four P-384 signatures plus one) is remembered by the document's
//! SHA-256, so a document reused for many calls, as the enclave does, is checked once.
//! Freshness is checked on every use.
//!
//! Only when told so by an option that names QEMU (`--accept-qemu-unsigned-attestation`, off
//! by default), a document in the exact shape of QEMU's `nitro-enclave` NSM, which signs
//! nothing, is decoded with `attestation::parse_qemu_unsigned` instead; freshness, the key
//! and the key policy's PCR conditions are checked as for any other. Without the option such a
//! document is a ValidationException like any unverifiable one.

use super::error::KmsError;
use bidding_core::attestation::{self, DocumentFields, VerifyAt, VerifyOptions};
use bidding_core::kms::RECIPIENT_ALGORITHM;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How old a Recipient document may be.
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// Entries kept before stale ones are dropped.
const CACHE_SOFT_LIMIT: usize = 4096;

pub struct RecipientVerifier {
    root_der: Vec<u8>,
    /// Accept QEMU's unsigned documents (tests under QEMU's nitro-enclave machine only).
    qemu_unsigned: bool,
    cache: Mutex<HashMap<[u8; 32], Arc<DocumentFields>>>,
    verifications: AtomicU64,
}

impl RecipientVerifier {
    pub fn new(root_der: Vec<u8>) -> Self {
        RecipientVerifier {
            root_der,
            qemu_unsigned: false,
            cache: Mutex::new(HashMap::new()),
            verifications: AtomicU64::new(0),
        }
    }

    /// Also accept documents from QEMU's emulated NSM, which are not signed. Test setups only:
    /// anyone can write such a document.
    pub fn accept_qemu_unsigned(&mut self) {
        self.qemu_unsigned = true;
    }

    /// Full verifications done so far (cache misses).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Checks a Recipient and returns the document's fields, with a public key present.
    pub fn check(
        &self,
        algorithm: &str,
        document: &[u8],
        now: SystemTime,
    ) -> Result<Arc<DocumentFields>, KmsError> {
        if algorithm != RECIPIENT_ALGORITHM {
            return Err(KmsError::constraint(
                &format!("'{}'", printable(algorithm)),
                "recipient.keyEncryptionAlgorithm",
                "Member must satisfy enum value set: [RSAES_OAEP_SHA_256]",
            ));
        }
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let hash: [u8; 32] = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, document)
            .as_ref()
            .try_into()
            .map_err(|_| KmsError::internal("SHA-256 is not 32 bytes"))?;
        let cached = self.lock().get(&hash).cloned();
        let fields = match cached {
            Some(f) => f,
            None => {
                self.verifications.fetch_add(1, Ordering::Relaxed);
                let opts = VerifyOptions {
                    root_der: &self.root_der,
                    at: VerifyAt::UnixMillis(now_ms),
                };
                let qemu = if self.qemu_unsigned {
                    attestation::parse_qemu_unsigned(document).ok()
                } else {
                    None
                };
                let fields = match qemu {
                    Some(fields) => Arc::new(fields),
                    None => {
                        let verified = attestation::verify(document, &opts).map_err(|e| {
                            KmsError::validation(format!(
                                "The attestation document in the Recipient is not valid: {e}"
                            ))
                        })?;
                        Arc::new(verified.into_fields())
                    }
                };
                let mut cache = self.lock();
                if cache.len() >= CACHE_SOFT_LIMIT {
                    let horizon = now_ms.saturating_sub(MAX_AGE.as_millis() as u64);
                    cache.retain(|_, f| f.timestamp >= horizon);
                    if cache.len() >= CACHE_SOFT_LIMIT {
                        cache.clear();
                    }
                }
                cache.insert(hash, fields.clone());
                fields
            }
        };
        let max_age = MAX_AGE.as_millis() as u64;
        if fields.timestamp.saturating_add(max_age) < now_ms {
            return Err(KmsError::validation(format!(
                "The attestation document in the Recipient is stale: made {} s ago, the limit is {} s",
                (now_ms - fields.timestamp) / 1000,
                MAX_AGE.as_secs()
            )));
        }
        if fields.timestamp > now_ms.saturating_add(max_age) {
            return Err(KmsError::validation(
                "The attestation document in the Recipient has a timestamp in the future",
            ));
        }
        if fields.public_key.as_ref().is_none_or(Vec::is_empty) {
            return Err(KmsError::validation(
                "The attestation document in the Recipient has no public key",
            ));
        }
        Ok(fields)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<DocumentFields>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Seals `plaintext` to the document's RSA key in KMS's CiphertextForRecipient shape.
pub fn seal_for(fields: &DocumentFields, plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
    let spki = fields.public_key.as_deref().unwrap_or_default();
    bidding_core::cms::seal(spki, plaintext).map_err(|e| match e {
        bidding_core::cms::CmsError::InvalidRecipientKey => KmsError::validation(
            "The public key in the Recipient's attestation document is not a DER SubjectPublicKeyInfo of an RSA key",
        ),
        other => KmsError::internal(format!("sealing CiphertextForRecipient: {other}")),
    })
}

/// Caller-supplied text cut short for a message.
pub fn printable(s: &str) -> String {
    let cut: String = s.chars().take(128).collect();
    if cut.len() < s.len() {
        format!("{cut}…")
    } else {
        cut
    }
}
