//! A local S3: `s3s-fs` (a real S3 implementation over a directory, with SigV4 checked on
//! every request), on 127.0.0.1, for the demo, the end-to-end tests and the benchmarks.
//!
//! Two things real S3 does that s3s leaves to its embedder are added here: an
//! `x-amz-request-id` on every answer, and NoSuchBucket for objects in missing buckets (s3s-fs
//! would create the directory on PUT). Faults can be injected: the next N requests fail with
//! 500 InternalError, as real S3 sometimes does; and a bucket can be made read-only, its
//! writes answered AccessDenied as S3 answers a role without s3:PutObject.
//!
//! With [`S3Server::enforce_policies`] it also authorizes every request as S3 does across
//! accounts ([`crate::iam::authorize`]): each access key belongs to a principal (an IAM user
//! or role session of some account), each bucket to an account, and the bucket's policy and
//! the caller's identity policies decide (an explicit Deny wins; within the bucket's account
//! either may allow; across accounts both must). A missing object is NoSuchKey only for a
//! caller that may `s3:ListBucket` the bucket, and AccessDenied otherwise, as on real S3.
//! Served over TLS ([`S3Options::tls`]) the requests have `aws:SecureTransport` true, as
//! deployed bucket policies that deny plain HTTP require; over HTTP, false.

use crate::iam;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub struct S3Server {
    endpoint: String,
    keys: Keys,
    root: PathBuf,
    fail_next: Arc<AtomicU32>,
    read_only: ReadOnly,
    access: Authz,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    /// Serves buckets = directories under `root` for these access keys (id, secret).
    pub fn start(root: &Path, keys: &[(&str, &str)]) -> std::io::Result<S3Server> {
        S3Server::start_with(root, keys, None)
    }

    /// The same, over TLS with this configuration when given (`https://` endpoint).
    pub fn start_with(
        root: &Path,
        keys: &[(&str, &str)],
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<S3Server> {
        std::fs::create_dir_all(root)?;
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| std::io::Error::other(format!("s3s-fs over {}: {e:?}", root.display())))?;
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        let auth = Keys::default();
        for (id, secret) in keys {
            auth.add(id, secret);
        }
        builder.set_auth(auth.clone());
        let read_only = ReadOnly::default();
        let access = Authz::default();
        access.write().secure_transport = tls.is_some();
        builder.set_access(BucketMustExist(
            root.to_owned(),
            read_only.clone(),
            access.clone(),
        ));
        let service = builder.build();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://{}", listener.local_addr()?);
        let tls = tls.map(tokio_rustls::TlsAcceptor::from);
        let fail_next = Arc::new(AtomicU32::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let fail = fail_next.clone();
        let thread = std::thread::Builder::new()
            .name("s3-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async move {
                    tokio::select! {
                        _ = serve(listener, service, fail, tls) => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(S3Server {
            endpoint,
            keys: auth,
            root: root.to_owned(),
            fail_next,
            read_only,
            access,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`, for path-style clients.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn create_bucket(&self, bucket: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(self.root.join(bucket))
    }

    /// Where an object lives on disk.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// Accepts another access key from now on (temporary credentials issued mid-run).
    pub fn add_key(&self, access_key_id: &str, secret: &str) {
        self.keys.add(access_key_id, secret);
    }

    /// A handle on the accepted keys that other threads can keep.
    pub fn keys(&self) -> Keys {
        self.keys.clone()
    }

    /// From now on, every write to an object of `bucket` (PUT, POST, DELETE: objects,
    /// multipart uploads) is refused with AccessDenied, as S3 refuses a role whose policy
    /// lacks s3:PutObject there; reads still work.
    pub fn deny_writes(&self, bucket: &str) {
        self.read_only
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(bucket.to_owned());
    }

    /// From now on every request is authorized by the bucket's policy and the caller's
    /// identity policies, across accounts, as S3 does (see the module doc).
    pub fn enforce_policies(&self) {
        self.access.write().enforce = true;
    }

    /// The principal an access key signs as: `arn:aws:iam::A:user/N`, `…:root`, or
    /// `arn:aws:sts::A:assumed-role/R/S`.
    pub fn set_principal(&self, access_key_id: &str, arn: &str) {
        self.access
            .write()
            .principals
            .insert(access_key_id.to_owned(), arn.to_owned());
    }

    /// The account that owns `bucket` (the stand-ins' buckets belong to the stack's accounts).
    pub fn set_bucket_owner(&self, bucket: &str, account: &str) {
        self.access
            .write()
            .owners
            .insert(bucket.to_owned(), account.to_owned());
    }

    /// Sets `bucket`'s policy (AWS's JSON), as PutBucketPolicy does; refused when it says
    /// anything the stand-ins cannot enforce ([`crate::iam`]).
    pub fn put_bucket_policy(&self, bucket: &str, text: &str) -> Result<(), String> {
        let p = iam::Policy::parse(text, iam::Kind::Bucket { bucket })?;
        self.access
            .write()
            .bucket_policies
            .insert(bucket.to_owned(), p);
        Ok(())
    }

    /// The identity policies of a user or role (by its ARN; a role's sessions have them):
    /// without any, a principal has full IAM permissions.
    pub fn set_identity_policies(
        &self,
        principal_arn: &str,
        texts: &[String],
    ) -> Result<(), String> {
        let list = texts
            .iter()
            .map(|t| iam::Policy::parse(t, iam::Kind::Identity))
            .collect::<Result<Vec<_>, _>>()?;
        self.access
            .write()
            .identities
            .insert(principal_arn.to_owned(), list);
        Ok(())
    }

    /// Makes the next `n` requests fail with 500 InternalError.
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Body = s3s::Body;

async fn serve(
    listener: std::net::TcpListener,
    service: s3s::service::S3Service,
    fail_next: Arc<AtomicU32>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let next_id = Arc::new(AtomicU64::new(1));
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let (service, next_id, fail_next) = (service.clone(), next_id.clone(), fail_next.clone());
        let handler = hyper::service::service_fn(move |req| {
            let service = service.clone();
            let id = format!("LOCAL{:011}", next_id.fetch_add(1, Ordering::SeqCst));
            let fail = fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            async move {
                let mut resp = if fail {
                    let body = format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message><RequestId>{id}</RequestId></Error>"
                    );
                    let mut r = hyper::Response::new(Body::from(body));
                    *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                    r
                } else {
                    hyper::service::Service::call(&service, req).await?
                };
                if let Ok(v) = id.parse() {
                    resp.headers_mut().insert("x-amz-request-id", v);
                }
                Ok::<_, s3s::HttpError>(resp)
            }
        });
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let io = hyper_util::rt::TokioIo::new(socket);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, handler)
                        .await;
                }
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(socket).await else {
                        return;
                    };
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, handler)
                        .await;
                }
            }
        });
    }
}

/// Access keys, shared with the running server so that keys can be added while it runs.
#[derive(Clone, Default)]
pub struct Keys(Arc<std::sync::RwLock<std::collections::HashMap<String, String>>>);

impl Keys {
    pub fn add(&self, id: &str, secret: &str) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), secret.to_owned());
    }
}

#[async_trait::async_trait]
impl s3s::auth::S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<s3s::auth::SecretKey> {
        match self
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(access_key)
        {
            Some(secret) => Ok(secret.clone().into()),
            // What S3 answers for an access key it does not know.
            None => Err(s3s::s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}

/// Buckets whose objects may be read but not written.
#[derive(Clone, Default)]
struct ReadOnly(Arc<std::sync::RwLock<std::collections::HashSet<String>>>);

/// Who may do what: principals by access key, bucket owners, bucket and identity policies.
#[derive(Default)]
struct AuthzState {
    enforce: bool,
    secure_transport: bool,
    principals: std::collections::HashMap<String, String>,
    owners: std::collections::HashMap<String, String>,
    bucket_policies: std::collections::HashMap<String, iam::Policy>,
    identities: std::collections::HashMap<String, Vec<iam::Policy>>,
}

#[derive(Clone, Default)]
struct Authz(Arc<std::sync::RwLock<AuthzState>>);

impl Authz {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, AuthzState> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
    fn read(&self) -> std::sync::RwLockReadGuard<'_, AuthzState> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl AuthzState {
    fn decide(&self, caller: &str, action: &str, bucket: &str, resource: &str) -> bool {
        let Some(owner) = self.owners.get(bucket) else {
            return false;
        };
        let identity = iam::principal_arn_of(caller).and_then(|a| self.identities.get(&a));
        let req = iam::Request {
            principal_arn: caller,
            action,
            resource,
            context: iam::Context {
                secure_transport: Some(self.secure_transport),
                ..iam::Context::default()
            },
        };
        iam::authorize(
            self.bucket_policies.get(bucket),
            owner,
            identity.map(Vec::as_slice),
            true,
            &req,
        ) == iam::Decision::Allow
    }
}

/// The IAM action an S3 operation needs, as S3's documentation lists them.
fn s3_action(op: &str) -> String {
    match op {
        "GetObject" | "HeadObject" => "s3:GetObject".into(),
        "PutObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "CompleteMultipartUpload"
        | "CopyObject" => "s3:PutObject".into(),
        "AbortMultipartUpload" => "s3:AbortMultipartUpload".into(),
        "DeleteObject" | "DeleteObjects" => "s3:DeleteObject".into(),
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => "s3:ListBucket".into(),
        "ListMultipartUploads" => "s3:ListBucketMultipartUploads".into(),
        "ListParts" => "s3:ListMultipartUploadParts".into(),
        "ListBuckets" => "s3:ListAllMyBuckets".into(),
        other => format!("s3:{other}"),
    }
}

struct BucketMustExist(PathBuf, ReadOnly, Authz);

#[async_trait::async_trait]
impl s3s::access::S3Access for BucketMustExist {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> s3s::S3Result<()> {
        let Some(access_key) = cx.credentials().map(|c| c.access_key.clone()) else {
            return Err(s3s::s3_error!(AccessDenied, "Signature is required"));
        };
        let authz = self.2.read();
        if authz.enforce {
            let denied = || s3s::s3_error!(AccessDenied, "Access Denied");
            let caller = authz.principals.get(&access_key).ok_or_else(denied)?;
            let action = s3_action(cx.s3_op().name());
            match cx.s3_path() {
                s3s::path::S3Path::Root => {}
                s3s::path::S3Path::Bucket { bucket } => {
                    if !self.0.join(&**bucket).is_dir() {
                        return Err(s3s::s3_error!(
                            NoSuchBucket,
                            "The specified bucket does not exist"
                        ));
                    }
                    let arn = format!("arn:aws:s3:::{bucket}");
                    if !authz.decide(caller, &action, bucket, &arn) {
                        return Err(denied());
                    }
                }
                s3s::path::S3Path::Object { bucket, key } => {
                    if !self.0.join(&**bucket).is_dir() {
                        return Err(s3s::s3_error!(
                            NoSuchBucket,
                            "The specified bucket does not exist"
                        ));
                    }
                    let arn = format!("arn:aws:s3:::{bucket}/{key}");
                    if !authz.decide(caller, &action, bucket, &arn) {
                        return Err(denied());
                    }
                    // A missing object is NoSuchKey only to whoever may list the bucket.
                    if action == "s3:GetObject"
                        && !self.0.join(&**bucket).join(&**key).is_file()
                        && !authz.decide(
                            caller,
                            "s3:ListBucket",
                            bucket,
                            &format!("arn:aws:s3:::{bucket}"),
                        )
                    {
                        return Err(denied());
                    }
                }
            }
        }
        drop(authz);
        if let s3s::path::S3Path::Object { bucket, .. } = cx.s3_path() {
            if !self.0.join(&**bucket).is_dir() {
                return Err(s3s::s3_error!(
                    NoSuchBucket,
                    "The specified bucket does not exist"
                ));
            }
            let writes = !matches!(*cx.method(), hyper::Method::GET | hyper::Method::HEAD);
            if writes
                && self
                    .1
                    .0
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&**bucket)
            {
                return Err(s3s::s3_error!(AccessDenied, "Access Denied"));
            }
        }
        Ok(())
    }
}
