//! HTTP/1.1 (hyper) over TLS (rustls) or plain TCP, and the transport-level faults.

use super::error::KmsError;
use super::faults::Injected;
use super::service::Service;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Larger bodies are refused: the biggest real KMS request (a 6 KiB blob, a 16 KiB document,
/// base64) is far below.
const MAX_BODY: usize = 64 * 1024;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) struct Shared {
    pub service: Service,
    pub log: bool,
}

pub(super) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    if shared.log {
                        eprintln!("kms-emulator: accept failed: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        // Each response leaves at once; Nagle would also hold back half a reset response.
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let ctl = Arc::new(ConnCtl::default());
            let io = ResetIo {
                inner: stream,
                ctl: ctl.clone(),
                cut: false,
            };
            match tls {
                Some(acceptor) => {
                    ctl.tls.store(true, Ordering::Relaxed);
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                        Ok(Ok(tls)) => connection(tls, shared, ctl).await,
                        Ok(Err(e)) if shared.log => {
                            eprintln!("kms-emulator: TLS handshake failed: {e}")
                        }
                        Err(_) if shared.log => eprintln!("kms-emulator: TLS handshake timed out"),
                        _ => {}
                    }
                }
                None => connection(io, shared, ctl).await,
            }
        });
    }
}

async fn connection<I>(io: I, shared: Arc<Shared>, ctl: Arc<ConnCtl>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let ctl = ctl.clone();
        async move { Ok::<_, Infallible>(handle(req, &shared, &ctl).await) }
    });
    // Errors here are the client's (a reset, a malformed request hyper answered itself).
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // A client that shuts down its sending side after the request still gets its answer.
        .half_close(true)
        // One buffer per response, so a reset can cut it in its body.
        .writev(false)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

fn respond(status: u16, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(bidding_core::kms::CONTENT_TYPE),
    );
    if let Ok(id) = super::blob::new_key_id()
        && let Ok(v) = http::HeaderValue::from_str(&id)
    {
        headers.insert("x-amzn-requestid", v);
    }
    resp
}

fn error_response(e: &KmsError) -> Response<Full<Bytes>> {
    respond(e.status, e.body())
}

async fn handle(req: Request<Incoming>, shared: &Shared, ctl: &ConnCtl) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            let err = if too_large {
                KmsError::new(
                    413,
                    "RequestEntityTooLargeException",
                    format!("Request body is over {MAX_BODY} bytes"),
                )
            } else {
                KmsError::serialization("The request body could not be read")
            };
            return error_response(&err);
        }
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let target = header("x-amz-target");
    let op_name = target
        .and_then(|t| t.strip_prefix(bidding_core::kms::TARGET_PREFIX))
        .unwrap_or("-")
        .chars()
        .take(40)
        .collect::<String>();
    let svc = &shared.service;
    // A latency fault sets when the answer leaves, counted from the request's arrival, as a
    // client measures a real service: its processing time is part of the latency.
    let arrived = tokio::time::Instant::now();
    let outcome = async {
        let now = SystemTime::now();
        let headers: Vec<(&str, &str)> = parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        if parts.method != http::Method::POST || parts.uri.path() != "/" {
            return Err((
                None,
                KmsError::unknown_operation(format!(
                    "KMS answers POST /, not {} {}",
                    parts.method,
                    super::recipient::printable(path)
                )),
            ));
        }
        let caller = svc
            .authenticate(parts.method.as_str(), path, &headers, &body, now)
            .map_err(|e| (None, e))?;
        let op = svc
            .operation(target, header("content-type"))
            .map_err(|e| (Some(caller.clone()), e))?;
        let decision = svc.faults.decide(op);
        let answer = match decision.fault {
            Some(Injected::Throttle) => Err((Some(caller.clone()), KmsError::throttling())),
            Some(Injected::Error500) => Err((Some(caller.clone()), KmsError::internal_failure())),
            // The operation's own clock: a latency fault delays the answer, not the request.
            _ => svc
                .call(op, &caller, &body, now)
                .map_err(|e| (Some(caller.clone()), e)),
        };
        if !decision.latency.is_zero() {
            tokio::time::sleep_until(arrived + decision.latency).await;
        }
        let answer = answer?;
        if decision.fault == Some(Injected::Reset) {
            ctl.arm(answer.len());
        }
        Ok((caller, answer, decision.fault == Some(Injected::Reset)))
    }
    .await;
    match outcome {
        Ok((caller, answer, reset)) => {
            if shared.log {
                let note = if reset {
                    " (connection reset injected)"
                } else {
                    ""
                };
                eprintln!("kms-emulator: {op_name} by {} -> 200{note}", caller.arn);
            }
            respond(200, answer)
        }
        Err((caller, e)) => {
            if shared.log {
                let who = caller
                    .map(|c| c.arn)
                    .unwrap_or_else(|| "(unauthenticated)".into());
                // serde's messages may quote the offending input, which could be a plaintext.
                let message = if e.code() == "SerializationException" {
                    "(not logged)"
                } else {
                    e.message.as_str()
                };
                eprintln!(
                    "kms-emulator: {op_name} by {who} -> {} {}: {message}",
                    e.status,
                    e.code()
                );
            }
            error_response(&e)
        }
    }
}

/// Per-connection switch for the reset fault.
#[derive(Default)]
struct ConnCtl {
    armed: AtomicBool,
    body_len: AtomicUsize,
    tls: AtomicBool,
}

impl ConnCtl {
    fn arm(&self, body_len: usize) {
        self.body_len.store(body_len, Ordering::Relaxed);
        self.armed.store(true, Ordering::Release);
    }
}

/// The TCP stream under TLS and HTTP. When armed, it lets through part of the next write
/// (plain HTTP: the head and half the body; TLS: half the record), then fails every further
/// write, so hyper drops the connection, and closes with SO_LINGER 0: the client sees a
/// truncated response and a TCP reset, as when a load balancer or host dies mid-answer.
struct ResetIo {
    inner: TcpStream,
    ctl: Arc<ConnCtl>,
    cut: bool,
}

impl ResetIo {
    fn reset(&mut self) -> io::Error {
        let _ = self.inner.set_zero_linger();
        io::Error::new(io::ErrorKind::ConnectionReset, "injected connection reset")
    }
}

impl AsyncRead for ResetIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResetIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.cut {
            return Poll::Ready(Err(self.reset()));
        }
        if !buf.is_empty() && self.ctl.armed.load(Ordering::Acquire) {
            let body = self.ctl.body_len.load(Ordering::Relaxed);
            let keep = if self.ctl.tls.load(Ordering::Relaxed) || buf.len() <= body {
                buf.len() / 2
            } else {
                buf.len() - body + body / 2
            }
            .clamp(1, buf.len().saturating_sub(1).max(1));
            let r = Pin::new(&mut self.inner).poll_write(cx, &buf[..keep]);
            if let Poll::Ready(Ok(_)) = r {
                self.cut = true;
            }
            return r;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cut {
            return Poll::Ready(Err(self.reset()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cut {
            return Poll::Ready(Err(self.reset()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
