//! A local S3: `s3s-fs` (a real S3 implementation over a directory, with SigV4 checked on
//! every request), on 127.0.0.1, for the demo, the end-to-end tests and the benchmarks.
//!
//! Two things real S3 does that s3s leaves to its embedder are added here: an
//! `x-amz-request-id` on every answer, and NoSuchBucket for objects in missing buckets (s3s-fs
//! would create the directory on PUT). Faults can be injected: the next N requests fail with
//! 500 InternalError, as real S3 sometimes does; and a bucket can be made read-only, its
//! writes answered AccessDenied as S3 answers a role without s3:PutObject.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub struct S3Server {
    endpoint: String,
    keys: Keys,
    root: PathBuf,
    fail_next: Arc<AtomicU32>,
    read_only: ReadOnly,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    /// Serves buckets = directories under `root` for these access keys (id, secret).
    pub fn start(root: &Path, keys: &[(&str, &str)]) -> std::io::Result<S3Server> {
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
        builder.set_access(BucketMustExist(root.to_owned(), read_only.clone()));
        let service = builder.build();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let endpoint = format!("http://{}", listener.local_addr()?);
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
                        _ = serve(listener, service, fail) => {}
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
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(socket);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, handler)
                .await;
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

struct BucketMustExist(PathBuf, ReadOnly);

#[async_trait::async_trait]
impl s3s::access::S3Access for BucketMustExist {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> s3s::S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3s::s3_error!(AccessDenied, "Signature is required"));
        }
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
