//! The enclave's RSA-2048 key for KMS Recipient answers, and the attestation that carries it.
//!
//! One key pair per boot, generated off the accept path. The private half never leaves this
//! process; the public half goes to KMS inside attestation documents, which are reused while
//! fresh instead of being requested per bid.

use crate::nsm::{self, Nsm};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use bidding_core::kms::EncodedRecipient;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub struct RecipientKey {
    pub private: PrivateDecryptingKey,
    /// DER SubjectPublicKeyInfo, as put in `public_key` of attestation documents.
    pub spki_der: Vec<u8>,
    /// SHA-256 of `spki_der`: the rid KMS writes into CiphertextForRecipient.
    pub rid: [u8; 32],
}

impl RecipientKey {
    pub fn generate() -> Result<Self, String> {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048)
            .map_err(|_| "RSA-2048 key generation failed".to_owned())?;
        let spki_der = private
            .public_key()
            .as_der()
            .map_err(|_| "encoding the RSA public key failed".to_owned())?
            .as_ref()
            .to_vec();
        let rid = bidding_core::cms::recipient_key_id(&spki_der);
        Ok(RecipientKey {
            private,
            spki_der,
            rid,
        })
    }
}

type KeySlot = Mutex<Option<Result<Arc<RecipientKey>, String>>>;

/// A key being generated on another thread; `get` waits for it.
#[derive(Clone)]
pub struct PendingKey(Arc<(KeySlot, Condvar)>);

impl PendingKey {
    pub fn spawn() -> Self {
        let p = PendingKey(Arc::new((Mutex::new(None), Condvar::new())));
        let q = p.clone();
        std::thread::Builder::new()
            .name("keygen".into())
            .spawn(move || {
                let started = Instant::now();
                let key = RecipientKey::generate().map(Arc::new);
                if key.is_ok() {
                    crate::log!(
                        "RSA-2048 recipient key ready in {} ms",
                        started.elapsed().as_millis()
                    );
                }
                let (m, c) = &*q.0;
                *m.lock().unwrap_or_else(|e| e.into_inner()) = Some(key);
                c.notify_all();
            })
            .expect("spawning the key generation thread");
        p
    }

    pub fn get(&self) -> Result<Arc<RecipientKey>, String> {
        let (m, c) = &*self.0;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        while g.is_none() {
            g = c.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.clone().expect("loop waits for Some")
    }
}

/// The Recipient attestation document, shared by every KMS call while fresh. KMS refuses
/// documents older than five minutes; refreshing at four leaves room for slow calls.
pub struct RecipientAttestation {
    nsm: Arc<dyn Nsm>,
    key: Arc<RecipientKey>,
    max_age: Duration,
    current: Mutex<Option<(Instant, Arc<EncodedRecipient>)>>,
}

impl RecipientAttestation {
    pub fn new(nsm: Arc<dyn Nsm>, key: Arc<RecipientKey>) -> Self {
        RecipientAttestation {
            nsm,
            key,
            max_age: Duration::from_secs(240),
            current: Mutex::new(None),
        }
    }

    /// The current document, encoded for Decrypt bodies.
    pub fn document(&self) -> Result<Arc<EncodedRecipient>, String> {
        let mut g = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, doc)) = &*g
            && at.elapsed() < self.max_age
        {
            return Ok(doc.clone());
        }
        let doc = Arc::new(EncodedRecipient::new(&nsm::attest(
            &*self.nsm,
            None,
            None,
            Some(self.key.spki_der.clone()),
        )?));
        *g = Some((Instant::now(), doc.clone()));
        Ok(doc)
    }

    pub fn key(&self) -> &RecipientKey {
        &self.key
    }
}
