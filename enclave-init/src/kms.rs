//! The enclave's KMS client: Decrypt with a Recipient over TLS through the vsock-proxy.
//!
//! TLS terminates here (rustls with aws-lc-rs, built-in web PKI roots, SNI and Host
//! `kms.<region>.amazonaws.com`), so the proxy and the parent see only ciphertext. A fixed
//! pool of worker threads each keeps one persistent connection; throttling, 5xx answers and
//! lost connections are retried with exponential backoff and full jitter within a per-bid
//! deadline. The parent only ever learns a reason code.

use crate::keys::RecipientAttestation;
use crate::transport::{self, Stream};
use bidding_core::credentials::Credentials;
use bidding_core::endpoint::Endpoint;
use bidding_core::kms as kms_body;
use bidding_core::session::decrypt::{
    BidTicket, DecryptAttempts, DecryptJob, DecryptOutcome, Step,
};
use bidding_core::sigv4;
use bidding_core::wire::ErrorCode;
use rustls::pki_types::ServerName;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

#[derive(Clone)]
pub struct KmsSettings {
    /// Where the vsock-proxy (or, locally, the KMS emulator) listens.
    pub proxy: Endpoint,
    /// Parallel persistent connections.
    pub connections: usize,
    /// How long one bid may take, retries included, before the auction fails.
    pub bid_deadline: Duration,
    /// Read/write timeout of one request.
    pub io_timeout: Duration,
    /// An extra trusted CA (PEM), for the KMS emulator. Dev builds only.
    pub extra_ca_pem: Option<Vec<u8>>,
}

type Done = Box<dyn FnOnce(BidTicket, DecryptOutcome) + Send>;

struct Job {
    job: DecryptJob,
    cancelled: Arc<AtomicBool>,
    done: Done,
}

pub struct KmsClient {
    queue: mpsc::Sender<Job>,
    latest: Arc<Mutex<Option<Arc<Credentials>>>>,
}

impl KmsClient {
    pub fn start(
        settings: KmsSettings,
        recipient: Arc<RecipientAttestation>,
    ) -> Result<KmsClient, String> {
        let tls = Arc::new(tls_config(settings.extra_ca_pem.as_deref())?);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let latest = Arc::new(Mutex::new(None));
        for i in 0..settings.connections.max(1) {
            let worker = Worker {
                settings: settings.clone(),
                tls: tls.clone(),
                recipient: recipient.clone(),
                latest: latest.clone(),
                conn: None,
            };
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("kms-{i}"))
                .spawn(move || worker.run(rx))
                .map_err(|e| format!("cannot start KMS worker: {e}"))?;
        }
        Ok(KmsClient { queue: tx, latest })
    }

    /// Credentials for every call from now on, queued bids included.
    pub fn use_credentials(&self, credentials: Arc<Credentials>) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(credentials);
    }

    /// Queues a bid. `done` runs on a worker thread unless `cancelled` is set first.
    pub fn submit(
        &self,
        job: DecryptJob,
        cancelled: Arc<AtomicBool>,
        done: impl FnOnce(BidTicket, DecryptOutcome) + Send + 'static,
    ) {
        let _ = self.queue.send(Job {
            job,
            cancelled,
            done: Box::new(done),
        });
    }
}

fn tls_config(extra_ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        add_pem_roots(&mut roots, pem)?;
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(tls::provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// The TLS algorithms the enclave offers KMS: what AWS endpoints and the Amazon Trust Services
/// chains use (TLS 1.3 with AES-GCM; X25519, P-256 and P-384 key exchange; ECDSA P-256/P-384
/// and RSA signatures), nothing more. Leaving out what KMS never uses keeps the unused parts of
/// aws-lc out of the enclave binary (about half a megabyte).
mod tls {
    use rustls::SignatureScheme;
    use rustls::crypto::aws_lc_rs::{cipher_suite, kx_group};
    use rustls::crypto::{
        CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, WebPkiSupportedAlgorithms,
    };
    use webpki::aws_lc_rs as alg;

    static SIGNATURES: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
        all: &[
            alg::ECDSA_P256_SHA256,
            alg::ECDSA_P256_SHA384,
            alg::ECDSA_P384_SHA256,
            alg::ECDSA_P384_SHA384,
            alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
            alg::RSA_PKCS1_2048_8192_SHA256,
            alg::RSA_PKCS1_2048_8192_SHA384,
            alg::RSA_PKCS1_2048_8192_SHA512,
        ],
        mapping: &[
            (
                SignatureScheme::ECDSA_NISTP384_SHA384,
                &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
            ),
            (
                SignatureScheme::ECDSA_NISTP256_SHA256,
                &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
            ),
            (
                SignatureScheme::RSA_PSS_SHA512,
                &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
            ),
            (
                SignatureScheme::RSA_PSS_SHA384,
                &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
            ),
            (
                SignatureScheme::RSA_PSS_SHA256,
                &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA512,
                &[alg::RSA_PKCS1_2048_8192_SHA512],
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA384,
                &[alg::RSA_PKCS1_2048_8192_SHA384],
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA256,
                &[alg::RSA_PKCS1_2048_8192_SHA256],
            ),
        ],
    };

    #[derive(Debug)]
    struct Random;
    impl SecureRandom for Random {
        fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
            aws_lc_rs::rand::fill(buf).map_err(|_| GetRandomFailed)
        }
    }

    /// The enclave never authenticates to KMS with a TLS client key (SigV4 does that).
    #[derive(Debug)]
    struct NoClientKeys;
    impl KeyProvider for NoClientKeys {
        fn load_private_key(
            &self,
            _: rustls::pki_types::PrivateKeyDer<'static>,
        ) -> Result<std::sync::Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
            Err(rustls::Error::General(
                "the enclave has no TLS client keys".into(),
            ))
        }
    }

    pub fn provider() -> CryptoProvider {
        CryptoProvider {
            cipher_suites: vec![
                cipher_suite::TLS13_AES_128_GCM_SHA256,
                cipher_suite::TLS13_AES_256_GCM_SHA384,
            ],
            kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
            signature_verification_algorithms: SIGNATURES,
            secure_random: &Random,
            key_provider: &NoClientKeys,
        }
    }
}

#[cfg(feature = "dev")]
fn add_pem_roots(roots: &mut rustls::RootCertStore, pem: &[u8]) -> Result<(), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("extra KMS CA: {e}"))?;
        roots.add(cert).map_err(|e| format!("extra KMS CA: {e}"))?;
        n += 1;
    }
    if n == 0 {
        return Err("extra KMS CA: no certificate in the PEM file".into());
    }
    Ok(())
}

#[cfg(not(feature = "dev"))]
fn add_pem_roots(_: &mut rustls::RootCertStore, _: &[u8]) -> Result<(), String> {
    Err("an extra KMS CA is accepted only by dev builds".into())
}

type Conn = rustls::StreamOwned<rustls::ClientConnection, Stream>;

struct Worker {
    settings: KmsSettings,
    tls: Arc<rustls::ClientConfig>,
    recipient: Arc<RecipientAttestation>,
    latest: Arc<Mutex<Option<Arc<Credentials>>>>,
    conn: Option<(String, Conn)>,
}

enum Attempt {
    Answer(u16, Vec<u8>),
    Io(io::Error),
}

impl Worker {
    fn run(mut self, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
        loop {
            let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
            let Ok(Job {
                job,
                cancelled,
                done,
            }) = next
            else {
                return;
            };
            if cancelled.load(Ordering::Relaxed) {
                continue;
            }
            let ticket = job.ticket;
            let outcome = self.open_bid(&job, &cancelled);
            if !cancelled.load(Ordering::Relaxed) {
                done(ticket, outcome);
            }
        }
    }

    /// Opens one ciphertext by core's rules ([`DecryptAttempts`]): this worker only sends,
    /// waits and opens what KMS answers with the enclave's key.
    fn open_bid(&mut self, job: &DecryptJob, cancelled: &AtomicBool) -> DecryptOutcome {
        let deadline = self.settings.bid_deadline.as_millis() as u64;
        let mut rules = DecryptAttempts::new(now_ms(), deadline);
        loop {
            if cancelled.load(Ordering::Relaxed) {
                return DecryptOutcome::Fatal {
                    code: ErrorCode::Internal,
                    message: "cancelled".into(),
                };
            }
            let doc = match self.recipient.document() {
                Ok(d) => d,
                Err(e) => {
                    return DecryptOutcome::Fatal {
                        code: ErrorCode::Attestation,
                        message: e,
                    };
                }
            };
            let body = rules.body(job, &doc);
            let step = match self.post(job, "TrentService.Decrypt", &body) {
                Attempt::Answer(status, body) => {
                    rules.answered(job, status, &body, now_ms(), jitter())
                }
                Attempt::Io(e) if is_certificate_error(&e) => {
                    return DecryptOutcome::Fatal {
                        code: ErrorCode::KmsFailure,
                        message: format!("KMS endpoint's TLS certificate refused: {e}"),
                    };
                }
                Attempt::Io(e) => rules.lost(job, e.to_string(), now_ms(), jitter()),
            };
            match step {
                Step::Send => {}
                Step::Wait(ms) => std::thread::sleep(Duration::from_millis(ms)),
                Step::Open(cfr) => {
                    let key = self.recipient.key();
                    return match bidding_core::cms::open(&cfr, &key.private, &key.rid) {
                        Ok(plaintext) => DecryptOutcome::Plaintext(plaintext),
                        Err(e) => DecryptAttempts::unopenable(e.to_string()),
                    };
                }
                Step::Done(outcome) => return outcome,
            }
        }
    }

    fn post(&mut self, job: &DecryptJob, target: &str, body: &[u8]) -> Attempt {
        // The newest credentials the parent sent, unless they are for another region (the
        // enclave refuses that, but a bid must never go to a region its job did not name).
        let credentials = self
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|c| c.region == job.credentials.region)
            .unwrap_or_else(|| job.credentials.clone());
        let region = credentials.region.as_str();
        let host = kms_body::endpoint_host(region);
        let url = format!("https://{host}/");
        let base = [
            ("content-type", kms_body::CONTENT_TYPE),
            ("x-amz-target", target),
        ];
        let req = sigv4::Request {
            method: "POST",
            url: &url,
            headers: &base,
            body,
        };
        let signed = match sigv4::sign(
            &req,
            "kms",
            region,
            &credentials,
            sigv4::Payload::Default,
            SystemTime::now(),
        ) {
            Ok(h) => h,
            Err(e) => return Attempt::Io(io::Error::other(e.to_string())),
        };
        let mut headers: Vec<(&str, &str)> = base.to_vec();
        headers.extend(signed.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let conn = match self.connection(&host) {
            Ok(c) => c,
            Err(e) => return Attempt::Io(e),
        };
        match crate::http::round_trip(
            conn,
            "POST",
            &host,
            "/",
            &headers,
            body,
            kms_body::MAX_RESPONSE_BYTES,
        ) {
            Ok(r) => {
                if !r.keep_alive {
                    self.conn = None;
                }
                Attempt::Answer(r.status, r.body)
            }
            Err(e) => {
                self.conn = None;
                Attempt::Io(e)
            }
        }
    }

    fn connection(&mut self, host: &str) -> io::Result<&mut Conn> {
        if self.conn.as_ref().is_some_and(|(h, _)| h != host) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let stream = transport::connect(&self.settings.proxy)?;
            stream.set_read_timeout(Some(self.settings.io_timeout))?;
            stream.set_write_timeout(Some(self.settings.io_timeout))?;
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls =
                rustls::ClientConnection::new(self.tls.clone(), name).map_err(io::Error::other)?;
            self.conn = Some((host.to_owned(), rustls::StreamOwned::new(tls, stream)));
        }
        Ok(&mut self.conn.as_mut().expect("set above").1)
    }
}

fn is_certificate_error(e: &io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(_))
    )
}

/// A random number that spreads retries (the backoff's full jitter).
fn jitter() -> u64 {
    let mut r = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut r);
    u64::from_le_bytes(r)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
