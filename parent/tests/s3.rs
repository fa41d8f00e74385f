//! The S3 client against s3s-fs (an S3 server that really checks SigV4) and against a
//! hand-written fake for the faults s3s cannot produce.

mod common;

use bidding_parent::aws::Env;
use bidding_parent::aws::s3::{S3Client, S3Error, endpoint_from_env};
use common::{FakeServer, creds, quick_retry, region, respond};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const KEY_ID: &str = "AKIAS3STESTKEY000001";
const SECRET: &str = "s3s-test-secret/with+slash=and=plus";
const BUCKET: &str = "bids";

/// s3s-fs in a background thread with its own tokio runtime, bound to 127.0.0.1:0, with one
/// access key. Like real S3 it stamps every answer with an `x-amz-request-id` (s3s leaves
/// that to the embedder) and refuses objects in buckets that do not exist (s3s-fs would
/// answer NoSuchKey on GET and create the directory on PUT).
struct S3sServer {
    endpoint: String,
    root: tempfile::TempDir,
}

impl S3sServer {
    fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(KEY_ID, SECRET));
        builder.set_access(BucketMustExist(root.path().to_owned()));
        let service = builder.build();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(listener, service));
        });
        S3sServer { endpoint, root }
    }

    fn client(&self, secret: &str) -> S3Client {
        S3Client::new(region(), creds(KEY_ID, secret, None))
            .with_endpoint(Some(self.endpoint.clone()))
            .with_retry(quick_retry(3))
    }

    fn path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }
}

async fn serve(listener: std::net::TcpListener, service: s3s::service::S3Service) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let next_id = Arc::new(AtomicU64::new(1));
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let (service, next_id) = (service.clone(), next_id.clone());
        let with_request_id = hyper::service::service_fn(move |req| {
            let service = service.clone();
            let id = format!("S3S{:013}", next_id.fetch_add(1, Ordering::SeqCst));
            async move {
                let mut resp = hyper::service::Service::call(&service, req).await?;
                resp.headers_mut()
                    .insert("x-amz-request-id", id.parse().unwrap());
                Ok::<_, s3s::HttpError>(resp)
            }
        });
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(socket);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, with_request_id)
                .await;
        });
    }
}

struct BucketMustExist(PathBuf);

#[async_trait::async_trait]
impl s3s::access::S3Access for BucketMustExist {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> s3s::S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3s::s3_error!(AccessDenied, "Signature is required"));
        }
        if let s3s::path::S3Path::Object { bucket, .. } = cx.s3_path()
            && !self.0.join(&**bucket).is_dir()
        {
            return Err(s3s::s3_error!(
                NoSuchBucket,
                "The specified bucket does not exist"
            ));
        }
        Ok(())
    }
}

#[test]
fn put_then_get_round_trips_awkward_keys() {
    let server = S3sServer::start();
    let s3 = server.client(SECRET);
    let keys = [
        "plain.csv",
        "with space/and+plus=equals&amp.csv",
        "ünïcødé/日本語 ファイル.csv",
        "deep/a/b/c/d/e.csv",
        "odd chars ~!$'()*,;@[]%25?#.csv",
    ];
    for (i, key) in keys.iter().enumerate() {
        let body = format!("[].contract,[].bid\n{i},AQICAHh{key}\n").into_bytes();
        s3.put_object(BUCKET, key, &body, "text/csv").unwrap();
        // The server stored it under exactly this key, not a re-encoded one.
        assert_eq!(
            std::fs::read(server.path(BUCKET, key)).unwrap(),
            body,
            "{key}"
        );
        assert_eq!(s3.get_object(BUCKET, key, 1 << 20).unwrap(), body, "{key}");
    }
    // Empty objects and overwrites work too.
    s3.put_object(BUCKET, "empty", b"", "application/octet-stream")
        .unwrap();
    assert_eq!(s3.get_object(BUCKET, "empty", 0).unwrap(), b"");
    s3.put_object(BUCKET, "plain.csv", b"v2", "text/csv")
        .unwrap();
    assert_eq!(s3.get_object(BUCKET, "plain.csv", 2).unwrap(), b"v2");
}

/// User metadata goes out signed (`x-amz-meta-*` headers) and comes back on GET, as a seal's
/// does (`bidctl seal --upload` names the manifest it seals there); an object written without
/// any has none.
#[test]
fn user_metadata_round_trips() {
    let server = S3sServer::start();
    let s3 = server.client(SECRET);
    let h = "ab".repeat(32);
    s3.put_object_with_metadata(
        BUCKET,
        "bids/a-1/encrypted.csv.seal",
        b"c2VhbA==\n",
        "text/plain",
        &[("bidding-manifest-sha256", &h), ("bidding-auction", "a-1")],
    )
    .unwrap();
    let o = s3
        .get_object_with_metadata(BUCKET, "bids/a-1/encrypted.csv.seal", 1 << 10)
        .unwrap();
    assert_eq!(o.body, b"c2VhbA==\n");
    assert_eq!(o.metadata("bidding-manifest-sha256"), Some(h.as_str()));
    assert_eq!(o.metadata("bidding-auction"), Some("a-1"));
    s3.put_object(BUCKET, "plain", b"x", "text/plain").unwrap();
    let o = s3.get_object_with_metadata(BUCKET, "plain", 1).unwrap();
    assert!(o.metadata.is_empty(), "{:?}", o.metadata);
}

#[test]
fn wrong_secret_is_a_credentials_error_naming_bucket_key_code_and_request_id() {
    let server = S3sServer::start();
    server
        .client(SECRET)
        .put_object(BUCKET, "in/buyer1.csv", b"x", "text/csv")
        .unwrap();
    let s3 = server.client("not-the-secret");
    for result in [
        s3.get_object(BUCKET, "in/buyer1.csv", 1024).map(drop),
        s3.put_object(BUCKET, "out/output.csv", b"y", "text/csv"),
    ] {
        let err = result.unwrap_err();
        let S3Error::Credentials { error, .. } = &err else {
            panic!("expected a credentials error, got {err:?}");
        };
        assert_eq!(error.status, 403);
        assert_eq!(error.code.as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(error.attempts, 1, "a refused signature is not retried");
        let id = error.request_id.as_deref().expect("request id");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "s3://{BUCKET}/{}: credentials refused: HTTP 403 SignatureDoesNotMatch",
                err.key()
            )),
            "{msg}"
        );
        assert!(msg.contains(id), "{msg}");
        assert!(!msg.contains("not-the-secret") && !format!("{err:?}").contains("not-the-secret"));
    }
    assert!(!server.path(BUCKET, "out/output.csv").exists());

    // An access key the server does not know.
    let s3 = S3Client::new(region(), creds("AKIAUNKNOWNKEY000001", SECRET, None))
        .with_endpoint(Some(server.endpoint.clone()));
    let err = s3.get_object(BUCKET, "in/buyer1.csv", 1024).unwrap_err();
    assert!(matches!(err, S3Error::Credentials { .. }), "{err}");
    // s3s's code for this; AWS says InvalidAccessKeyId.
    assert_eq!(
        err.service_error().unwrap().code.as_deref(),
        Some("NotSignedUp")
    );
}

#[test]
fn missing_object_and_missing_bucket_are_told_apart() {
    let server = S3sServer::start();
    let s3 = server.client(SECRET);
    let err = s3.get_object(BUCKET, "no/such key.csv", 1024).unwrap_err();
    let S3Error::NoSuchKey { bucket, key, error } = &err else {
        panic!("expected NoSuchKey, got {err:?}");
    };
    assert_eq!((bucket.as_str(), key.as_str()), (BUCKET, "no/such key.csv"));
    assert_eq!(error.status, 404);
    assert!(err.is_not_found());
    assert!(
        err.to_string()
            .starts_with("s3://bids/no/such key.csv: no such key: HTTP 404 NoSuchKey"),
        "{err}"
    );

    for result in [
        s3.get_object("no-such-bucket", "k.csv", 1024).map(drop),
        s3.put_object("no-such-bucket", "k.csv", b"x", "text/csv"),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, S3Error::NoSuchBucket { .. }), "{err:?}");
        assert_eq!((err.bucket(), err.key()), ("no-such-bucket", "k.csv"));
        assert!(
            err.to_string()
                .starts_with("s3://no-such-bucket/k.csv: no such bucket: HTTP 404 NoSuchBucket"),
            "{err}"
        );
    }
    assert!(!server.root.path().join("no-such-bucket").exists());
}

#[test]
fn oversized_object_is_refused_by_its_declared_length() {
    let server = S3sServer::start();
    let s3 = server.client(SECRET);
    let big = vec![b'7'; (1 << 20) + 1];
    s3.put_object(BUCKET, "big.csv", &big, "text/csv").unwrap();
    let err = s3.get_object(BUCKET, "big.csv", 1 << 20).unwrap_err();
    assert!(
        matches!(
            err,
            S3Error::TooLarge {
                size: Some(1_048_577),
                limit: 1_048_576,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "s3://bids/big.csv: object is 1048577 bytes, over the limit of 1048576"
    );
    // Exactly at the limit is fine.
    assert_eq!(
        s3.get_object(BUCKET, "big.csv", 1_048_577).unwrap().len(),
        1_048_577
    );
}

fn fake_client(server: &FakeServer, attempts: u32) -> S3Client {
    S3Client::new(region(), creds(KEY_ID, SECRET, None))
        .with_endpoint(Some(server.url()))
        .with_retry(quick_retry(attempts))
}

#[test]
fn declared_length_over_the_limit_is_refused_before_reading() {
    // Declares 10 GiB, sends a few bytes, then stalls: only a client that trusts the
    // declared length and stops at once returns quickly.
    let server = FakeServer::start(|_, stream| {
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 10737418240\r\n\r\n";
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&[b'x'; 1024]);
        std::thread::sleep(Duration::from_secs(8));
    });
    let start = Instant::now();
    let err = fake_client(&server, 3)
        .get_object(BUCKET, "k", 1 << 20)
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        matches!(
            err,
            S3Error::TooLarge {
                size: Some(10_737_418_240),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 1, "too large is not retried");
}

#[test]
fn streamed_body_without_length_is_capped_while_reading() {
    const TOTAL: u64 = 512 << 20;
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU32::new(0));
    let server = {
        let (sent, done) = (sent.clone(), done.clone());
        FakeServer::start(move |_, stream| {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
            let chunk = [b'9'; 64 * 1024];
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            while sent.load(Ordering::SeqCst) < TOTAL {
                if stream.write_all(&framed).is_err() {
                    break;
                }
                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            done.store(1, Ordering::SeqCst);
        })
    };
    let err = fake_client(&server, 3)
        .get_object(BUCKET, "k", 1 << 20)
        .unwrap_err();
    assert!(
        matches!(
            err,
            S3Error::TooLarge {
                size: None,
                limit: 1_048_576,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("over the limit of 1048576 bytes"),
        "{err}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = sent.load(Ordering::SeqCst);
    assert!(
        sent < 64 << 20,
        "the server got {sent} bytes out before the client hung up"
    );
}

fn error_xml(code: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>canned {code}</Message><RequestId>{request_id}</RequestId><HostId>h</HostId></Error>"
    )
}

type Script = fn(usize) -> Option<(u16, &'static str)>;

/// Answers the n-th request (0-based) with `script(n)`: Some((status, code)) for an error, None
/// for success with body `ok`; code "" means an empty body; code "drop" closes silently.
fn scripted(
    script: impl Fn(usize) -> Option<(u16, &'static str)> + Send + Sync + 'static,
) -> FakeServer {
    let count = Arc::new(AtomicU32::new(0));
    FakeServer::start(move |req, stream| {
        let n = count.fetch_add(1, Ordering::SeqCst) as usize;
        // Every attempt is signed afresh for S3.
        let auth = req.header("authorization").unwrap_or_default();
        assert!(auth.contains("/us-east-1/s3/aws4_request"), "{auth}");
        assert!(req.header("x-amz-content-sha256").is_some());
        match script(n) {
            None => respond(stream, 200, &[("x-amz-request-id", "OKID")], b"ok"),
            Some((_, "drop")) => {}
            Some((status, "")) => respond(stream, status, &[("x-amz-request-id", "HDRID")], b""),
            Some((status, code)) => respond(
                stream,
                status,
                &[("x-amz-request-id", "HDRID")],
                error_xml(code, &format!("DOCID{n}")).as_bytes(),
            ),
        }
    })
}

#[test]
fn retries_server_errors_slowdown_request_timeout_and_dropped_connections() {
    let cases: [(&str, Script, usize); 4] = [
        ("500s", |n| (n < 2).then_some((500, "InternalError")), 3),
        ("SlowDown", |n| (n < 4).then_some((503, "SlowDown")), 5),
        (
            "RequestTimeout",
            |n| (n < 1).then_some((400, "RequestTimeout")),
            2,
        ),
        ("dropped", |n| (n < 2).then_some((0, "drop")), 3),
    ];
    for (name, script, expected) in cases {
        let server = scripted(script);
        let s3 = fake_client(&server, 5);
        assert_eq!(s3.get_object(BUCKET, "k", 10).unwrap(), b"ok", "{name}");
        assert_eq!(server.requests().len(), expected, "{name}");
        // PUT is retried with the same body.
        let server = scripted(script);
        fake_client(&server, 5)
            .put_object(BUCKET, "k", b"payload", "text/csv")
            .unwrap();
        let reqs = server.requests();
        assert_eq!(reqs.len(), expected, "{name}");
        assert!(
            reqs.iter()
                .all(|r| r.method == "PUT" && r.body == b"payload" && r.target == "/bids/k")
        );
    }
}

#[test]
fn gives_up_after_the_configured_attempts_with_the_last_answer() {
    let server = scripted(|_| Some((503, "SlowDown")));
    let err = fake_client(&server, 4)
        .get_object(BUCKET, "k", 10)
        .unwrap_err();
    let S3Error::Service { error, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (error.code.as_deref(), error.attempts),
        (Some("SlowDown"), 4)
    );
    assert_eq!(error.request_id.as_deref(), Some("DOCID3"));
    assert_eq!(server.requests().len(), 4);
    assert!(err.to_string().contains("after 4 attempts"), "{err}");

    let server = scripted(|_| Some((0, "drop")));
    let err = fake_client(&server, 3)
        .get_object(BUCKET, "k", 10)
        .unwrap_err();
    assert!(
        matches!(err, S3Error::Transport { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("s3://bids/k: no answer after 3 attempt(s)"),
        "{err}"
    );
}

#[test]
fn client_errors_are_not_retried() {
    for (status, code) in [
        (403, "AccessDenied"),
        (400, "InvalidArgument"),
        (404, "NoSuchKey"),
        (403, "ExpiredToken"),
    ] {
        let server = scripted(move |_| Some((status, code)));
        let err = fake_client(&server, 5)
            .get_object(BUCKET, "k", 10)
            .unwrap_err();
        assert_eq!(server.requests().len(), 1, "{code}");
        assert_eq!(err.service_error().unwrap().code.as_deref(), Some(code));
    }
    // A bare 404 (no document): the status and the header's request id are what is known.
    let server = scripted(|_| Some((404, "")));
    let err = fake_client(&server, 5)
        .get_object(BUCKET, "k", 10)
        .unwrap_err();
    assert!(
        matches!(err, S3Error::Service { .. }) && err.is_not_found(),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "s3://bids/k: HTTP 404 with no error document (request id HDRID; after 1 attempt)"
    );
}

#[test]
fn nothing_listening_is_a_transport_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s3 = S3Client::new(region(), creds(KEY_ID, SECRET, None))
        .with_endpoint(Some(format!("http://127.0.0.1:{port}")))
        .with_retry(quick_retry(2));
    let err = s3.get_object(BUCKET, "k", 10).unwrap_err();
    assert!(
        matches!(err, S3Error::Transport { attempts: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn https_goes_through_rustls_and_fails_cleanly_on_a_non_tls_peer() {
    // ureq builds its rustls configuration at the first https request; a missing crypto
    // provider would panic there rather than return an error.
    let server = FakeServer::start(|_, stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    });
    let s3 = S3Client::new(region(), creds(KEY_ID, SECRET, None))
        .with_endpoint(Some(format!("https://{}", server.addr)))
        .with_retry(quick_retry(1));
    let err = s3.get_object(BUCKET, "k", 10).unwrap_err();
    assert!(
        matches!(err, S3Error::Transport { attempts: 1, .. }),
        "{err:?}"
    );
}

#[test]
fn endpoint_comes_from_the_injected_environment() {
    let env = Env::from_pairs([
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
        ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2"),
    ]);
    assert_eq!(
        endpoint_from_env(&env).as_deref(),
        Some("http://127.0.0.1:2")
    );
    let env = Env::from_pairs([("AWS_ENDPOINT_URL", "http://127.0.0.1:1")]);
    assert_eq!(
        endpoint_from_env(&env).as_deref(),
        Some("http://127.0.0.1:1")
    );
    assert_eq!(endpoint_from_env(&Env::from_pairs::<&str, &str>([])), None);
}

#[test]
fn client_and_errors_cross_threads() {
    // The binary fetches buyers' files in parallel from one client.
    fn is<T: Send + Sync>() {}
    is::<S3Client>();
    is::<S3Error>();
}
