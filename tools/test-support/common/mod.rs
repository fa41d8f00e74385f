//! A small KMS client for the emulator's tests: hyper over tokio-rustls, signed with core's
//! SigV4, one connection per call so every call also exercises the handshake.

#![allow(dead_code)]

use bidding_core::credentials::{Credentials, Secret};
use bidding_core::names::Region;
use bidding_core::sigv4::{self, Payload};
use bidding_standins::kms_emulator::{self, Config, Principal, Running};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

pub const ALICE: &str = "AKIAALICEALICEALICE0";
pub const ALICE_SECRET: &str = "alice/secret/alice/secret/alice/secret00";
pub const ALICE_ARN: &str = "arn:aws:iam::111122223333:user/alice";
/// The parent instance's role session (temporary credentials).
pub const PARENT: &str = "ASIAPARENTPARENTPAR0";
pub const PARENT_SECRET: &str = "parent/secret/parent/secret/parent/secr0";
pub const PARENT_TOKEN: &str = "FwoGZXIvYXdzEparent-session-token";
pub const PARENT_ARN: &str =
    "arn:aws:sts::111122223333:assumed-role/bidding-parent/i-0123456789abcdef0";
pub const PARENT_ROLE: &str = "arn:aws:iam::111122223333:role/bidding-parent";
/// A user of the account that no policy but the default one names.
pub const BOB: &str = "AKIABOBBOBBOBBOBBOB0";
pub const BOB_SECRET: &str = "bob/secret/bob/secret/bob/secret/bob/se0";
pub const BOB_ARN: &str = "arn:aws:iam::111122223333:user/bob";

pub fn principal(id: &str, secret: &str, token: Option<&str>, arn: &str) -> Principal {
    Principal {
        access_key_id: id.into(),
        secret_access_key: Secret::new(secret),
        session_token: token.map(Secret::new),
        expiration: None,
        arn: arn.into(),
    }
}

pub fn write_principals(dir: &Path) {
    kms_emulator::state::write_principals(
        dir,
        &[
            principal(ALICE, ALICE_SECRET, None, ALICE_ARN),
            principal(PARENT, PARENT_SECRET, Some(PARENT_TOKEN), PARENT_ARN),
            principal(BOB, BOB_SECRET, None, BOB_ARN),
        ],
    )
    .unwrap();
}

pub fn creds(id: &str, secret: &str, token: Option<&str>) -> Credentials {
    Credentials {
        access_key_id: id.into(),
        secret_access_key: Secret::new(secret),
        session_token: token.map(Secret::new),
        expiration: None,
        region: Region::new("us-east-1").unwrap(),
    }
}

pub fn alice() -> Credentials {
    creds(ALICE, ALICE_SECRET, None)
}

pub fn parent() -> Credentials {
    creds(PARENT, PARENT_SECRET, Some(PARENT_TOKEN))
}

pub fn bob() -> Credentials {
    creds(BOB, BOB_SECRET, None)
}

/// An emulator on a fresh state directory with the three principals above.
pub struct Emu {
    pub dir: tempfile::TempDir,
    pub running: Option<Running>,
    pub root_der: Vec<u8>,
}

impl Emu {
    pub fn start(root_der: Option<Vec<u8>>) -> Emu {
        Emu::start_with(root_der, |_| {})
    }

    pub fn start_with(root_der: Option<Vec<u8>>, tweak: impl FnOnce(&mut Config)) -> Emu {
        let dir = tempfile::tempdir().unwrap();
        write_principals(dir.path());
        let root_der =
            root_der.unwrap_or_else(|| bidding_core::attestation::AWS_NITRO_ROOT_G1_DER.to_vec());
        let mut config = Config::new(dir.path());
        config.attestation_root_der = root_der.clone();
        tweak(&mut config);
        let running = kms_emulator::spawn(config).unwrap();
        Emu {
            dir,
            running: Some(running),
            root_der,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub fn restart(&mut self) {
        let plain = self.running().endpoint().starts_with("http:");
        self.running.take().unwrap().shutdown();
        let mut config = Config::new(self.dir.path());
        config.attestation_root_der = self.root_der.clone();
        config.plain_http = plain;
        self.running = Some(kms_emulator::spawn(config).unwrap());
    }

    pub fn client(&self, creds: Credentials) -> Client {
        Client::new(self.running(), creds)
    }
}

pub struct Client {
    addr: std::net::SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    pub creds: Credentials,
    /// The TLS server name, `kms.<region>.amazonaws.com` as the enclave sends it.
    pub sni: String,
    rt: tokio::runtime::Runtime,
}

/// A call's outcome: status and JSON body (`Value::Null` for an empty body).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// `__type` without namespace.
    pub fn code(&self) -> &str {
        let t = self.body["__type"].as_str().unwrap_or("");
        t.rsplit('#').next().unwrap_or(t)
    }

    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "{:?}", self.body);
        self.body
    }

    #[track_caller]
    pub fn err(&self, status: u16, code: &str) -> &Self {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "{:?}",
            self.body
        );
        self
    }
}

impl Client {
    pub fn new(running: &Running, creds: Credentials) -> Client {
        let ca = running
            .endpoint()
            .starts_with("https:")
            .then(|| running.ca_pem());
        Client::connect(running.addr(), ca.as_deref(), creds)
    }

    /// An emulator in another process, over HTTPS with its CA.
    pub fn remote(addr: std::net::SocketAddr, ca_pem: &Path, creds: Credentials) -> Client {
        Client::connect(addr, Some(ca_pem), creds)
    }

    fn connect(addr: std::net::SocketAddr, ca_pem: Option<&Path>, creds: Credentials) -> Client {
        let tls = ca_pem.map(|ca| {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(ca).unwrap();
            for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots.add(c.unwrap()).unwrap();
            }
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
            )
        });
        Client {
            addr,
            tls,
            sni: bidding_core::kms::endpoint_host(creds.region.as_str()),
            creds,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    pub fn call(&self, op: &str, body: &Value) -> Answer {
        self.call_at(op, body.to_string().as_bytes(), SystemTime::now())
    }

    /// Signs at `time` (a skewed clock) and sends.
    pub fn call_at(&self, op: &str, body: &[u8], time: SystemTime) -> Answer {
        let target = format!("TrentService.{op}");
        let headers = self.signed_headers(&target, body, time);
        self.send(headers, body.to_vec())
    }

    /// The headers a correctly signing client sends, Host included.
    pub fn signed_headers(
        &self,
        target: &str,
        body: &[u8],
        time: SystemTime,
    ) -> Vec<(String, String)> {
        let base = [
            ("content-type", bidding_core::kms::CONTENT_TYPE),
            ("x-amz-target", target),
        ];
        let host = bidding_core::kms::endpoint_host(self.creds.region.as_str());
        let req = sigv4::Request {
            method: "POST",
            url: &format!("https://{host}/"),
            headers: &base,
            body,
        };
        let mut headers: Vec<(String, String)> = base
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        headers.push(("host".into(), host.clone()));
        headers.extend(
            sigv4::sign(
                &req,
                "kms",
                self.creds.region.as_str(),
                &self.creds,
                Payload::Default,
                time,
            )
            .unwrap(),
        );
        headers
    }

    /// Sends exactly these headers and body.
    pub fn send(&self, headers: Vec<(String, String)>, body: Vec<u8>) -> Answer {
        self.rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
            let mut builder = hyper::Request::builder().method("POST").uri("/");
            for (k, v) in &headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            let req = builder.body(Full::new(Bytes::from(body))).unwrap();
            let resp = match &self.tls {
                Some(cfg) => {
                    let name = ServerName::try_from(self.sni.clone()).unwrap();
                    let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(name, tcp)
                        .await
                        .unwrap();
                    round_trip(TokioIo::new(tls), req).await
                }
                None => round_trip(TokioIo::new(tcp), req).await,
            };
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            Answer { status, body }
        })
    }
}

async fn round_trip<I>(
    io: I,
    req: hyper::Request<Full<Bytes>>,
) -> hyper::Response<hyper::body::Incoming>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.unwrap()
}

pub fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub fn unb64(v: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("base64 string"))
        .unwrap()
}

/// CreateKey as alice; returns the key ARN.
pub fn create_key(c: &Client, policy: Option<&str>) -> String {
    let mut body = serde_json::json!({"Description": "test"});
    if let Some(p) = policy {
        body["Policy"] = p.into();
        body["BypassPolicyLockoutSafetyCheck"] = true.into();
    }
    let v = c.call("CreateKey", &body).ok();
    v["KeyMetadata"]["Arn"].as_str().unwrap().to_owned()
}
