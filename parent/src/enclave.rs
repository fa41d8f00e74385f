//! Driving one auction through the enclave: a stream to it, core's parent session on top.

use bidding_core::credentials::Credentials;
use bidding_core::endpoint::Endpoint;
use bidding_core::session::parent::{
    BuyerInput, EnclaveInfo, Event, Finished, ParentSession, ParentSettings, SessionError, Terms,
};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub enum Stream {
    Vsock(vsock::VsockStream),
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

impl Stream {
    pub fn connect(ep: &Endpoint) -> io::Result<Stream> {
        Ok(match ep {
            Endpoint::Vsock { cid, port } => {
                Stream::Vsock(vsock::VsockStream::connect_with_cid_port(*cid, *port)?)
            }
            Endpoint::Unix(p) => Stream::Unix(std::os::unix::net::UnixStream::connect(p)?),
            Endpoint::Tcp(a) => {
                let s = std::net::TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Endpoint::VsockUds { path, port } => Stream::Unix(connect_vsock_uds(path, *port)?),
        })
    }
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Vsock(s) => Stream::Vsock(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) {
        let _ = match self {
            Stream::Vsock(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
            Stream::Tcp(s) => s.set_read_timeout(timeout),
        };
    }
    fn shutdown(&self) {
        let _ = match self {
            Stream::Vsock(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Vsock(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Vsock(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Vsock(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("cannot connect to the enclave at {endpoint}: {source}")]
    Connect {
        endpoint: Endpoint,
        source: io::Error,
    },
    #[error("{0}")]
    Session(#[from] SessionError),
    #[error("refreshing credentials mid-auction: {0}")]
    Credentials(String),
    #[error("writing to the enclave: {0}")]
    Write(io::Error),
}

/// What the driver reports as the auction runs.
pub trait Observer {
    fn connected(&mut self, _info: &bidding_core::session::parent::EnclaveInfo) {}
    /// Every buyer's seal was accepted: the buyers consented to exactly these terms.
    fn sealed(&mut self) {}
    /// Bytes of bid files the enclave has taken.
    fn progress(&mut self, _done: u64, _total: u64) {}
}

enum Input {
    Bytes(Vec<u8>),
    Eof,
}

/// How long the vsock backend has to answer `CONNECT`.
const VSOCK_UDS_HANDSHAKE: Duration = Duration::from_secs(10);

/// A test VM's vsock port through a vhost-device-vsock backend's Unix socket (`uds-path`
/// mode): connect to `path`, send `CONNECT port\n`, expect `OK port\n`. The answer is read
/// byte by byte so no byte of the enclave's stream after it is consumed. Unix sockets only;
/// never the host's AF_VSOCK.
pub fn connect_vsock_uds(path: &str, port: u32) -> io::Result<std::os::unix::net::UnixStream> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(VSOCK_UDS_HANDSHAKE))?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let refused = |why: String| io::Error::new(io::ErrorKind::ConnectionRefused, why);
    let mut answer = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b)? {
            0 => {
                return Err(refused(format!(
                    "vsock backend {path}: closed before answering CONNECT {port}"
                )));
            }
            _ if b[0] == b'\n' => break,
            _ if answer.len() >= 64 => {
                return Err(refused(format!(
                    "vsock backend {path}: no line in answer to CONNECT {port}"
                )));
            }
            _ => answer.push(b[0]),
        }
    }
    if answer != format!("OK {port}").as_bytes() {
        return Err(refused(format!(
            "vsock backend {path}: CONNECT {port} answered {:?}",
            String::from_utf8_lossy(&answer)
        )));
    }
    s.set_read_timeout(None)?;
    Ok(s)
}

/// Runs the whole session. `refresh` fetches new credentials when the current ones near
/// expiry.
pub fn drive(
    endpoint: &Endpoint,
    settings: ParentSettings,
    terms: Terms,
    inputs: Vec<BuyerInput>,
    credentials: Credentials,
    refresh: &mut dyn FnMut() -> Result<Credentials, String>,
    observer: &mut dyn Observer,
) -> Result<Finished, DriveError> {
    let stream = Stream::connect(endpoint).map_err(|source| DriveError::Connect {
        endpoint: endpoint.clone(),
        source,
    })?;
    let mut writer = stream.try_clone().map_err(DriveError::Write)?;
    let (tx, rx) = mpsc::channel();
    let reader = {
        let mut stream = stream;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Input::Eof);
                        return;
                    }
                    Ok(n) => {
                        if tx.send(Input::Bytes(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        })
    };
    let mut nonce = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut nonce).expect("system randomness");
    let mut session = ParentSession::new(settings, terms, inputs, credentials, nonce, now_ms());
    let result = loop {
        let mut outcome = None;
        while let Some(event) = session.poll_event() {
            match event {
                Event::Connected(info) => observer.connected(&info),
                Event::NeedCredentials => match refresh() {
                    Ok(c) => session.refresh_credentials(c, now_ms()),
                    Err(e) => {
                        outcome = Some(Err(DriveError::Credentials(e)));
                        break;
                    }
                },
                Event::Sealed => observer.sealed(),
                Event::Progress { done, total } => observer.progress(done, total),
                Event::Finished(f) => outcome = Some(Ok(*f)),
                Event::Failed(e) => outcome = Some(Err(e.into())),
            }
        }
        if let Some(o) = outcome {
            break o;
        }
        if let Some(bytes) = session.poll_transmit() {
            if let Err(e) = writer.write_all(&bytes).and_then(|_| writer.flush()) {
                // The enclave may have closed after an error frame; prefer its reason.
                match drain_failure(&mut session, &rx) {
                    Some(err) => break Err(err.into()),
                    None => break Err(DriveError::Write(e)),
                }
            }
            continue;
        }
        let wait = session
            .poll_timeout()
            .map(|t| Duration::from_millis(t.saturating_sub(now_ms())))
            .unwrap_or(Duration::from_secs(3600));
        match rx.recv_timeout(wait) {
            Ok(Input::Bytes(b)) => session.handle_input(&b, now_ms()),
            Ok(Input::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => session.handle_eof(),
            Err(mpsc::RecvTimeoutError::Timeout) => session.handle_timeout(now_ms()),
        }
    };
    writer.shutdown();
    let _ = reader.join();
    result
}

/// A dry run's check of the enclave: connects, sends the hello, verifies the enclave's
/// attestation (root, nonce, PCR0) and disconnects. `settings.hello_only` is set here, so the
/// session ends at the hello; the session holds blank credentials besides, so none could be
/// sent even by mistake.
pub fn probe(
    endpoint: &Endpoint,
    mut settings: ParentSettings,
    terms: Terms,
    region: bidding_core::names::Region,
) -> Result<EnclaveInfo, DriveError> {
    settings.hello_only = true;
    let blank = Credentials {
        access_key_id: String::new(),
        secret_access_key: bidding_core::credentials::Secret::new(""),
        session_token: None,
        expiration: None,
        region,
    };
    let mut nonce = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut nonce).expect("system randomness");
    let mut session = ParentSession::new(settings, terms, Vec::new(), blank, nonce, now_ms());
    let mut stream = Stream::connect(endpoint).map_err(|source| DriveError::Connect {
        endpoint: endpoint.clone(),
        source,
    })?;
    let mut buf = vec![0u8; 64 * 1024];
    let result = loop {
        while let Some(event) = session.poll_event() {
            match event {
                Event::Connected(info) => {
                    stream.shutdown();
                    return Ok(info);
                }
                Event::Failed(e) => {
                    stream.shutdown();
                    return Err(e.into());
                }
                _ => {}
            }
        }
        if !session.is_running() {
            break Err(DriveError::Session(SessionError::Protocol(
                "the session ended without a verified hello".into(),
            )));
        }
        if let Some(bytes) = session.poll_transmit() {
            if let Err(e) = stream.write_all(&bytes).and_then(|_| stream.flush()) {
                break Err(DriveError::Write(e));
            }
            continue;
        }
        let wait = session
            .poll_timeout()
            .map(|t| t.saturating_sub(now_ms()))
            .unwrap_or(1000)
            .max(1);
        stream.set_read_timeout(Some(Duration::from_millis(wait)));
        match stream.read(&mut buf) {
            Ok(0) => session.handle_eof(),
            Ok(n) => session.handle_input(&buf[..n], now_ms()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                session.handle_timeout(now_ms())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => session.handle_eof(),
        }
    };
    stream.shutdown();
    result
}

/// After a write failure: read whatever the enclave managed to send, for a better error.
fn drain_failure(session: &mut ParentSession, rx: &mpsc::Receiver<Input>) -> Option<SessionError> {
    while let Ok(Input::Bytes(b)) = rx.recv_timeout(Duration::from_millis(500)) {
        session.handle_input(&b, now_ms());
    }
    session.handle_eof();
    let mut first = None;
    while let Some(e) = session.poll_event() {
        if let (Event::Failed(err), None) = (e, &first) {
            first = Some(err);
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake backend: reads the CONNECT line, answers `answer`, then writes `after`.
    fn backend(answer: &'static [u8], after: &'static [u8]) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock");
        let l = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
                line.push(b[0]);
            }
            assert_eq!(line, b"CONNECT 5005");
            s.write_all(answer).unwrap();
            s.write_all(after).unwrap();
        });
        (dir, path.display().to_string())
    }

    #[test]
    fn vsock_uds_handshake_then_the_stream() {
        let (_dir, path) = backend(b"OK 5005\n", b"enclave bytes");
        let ep: Endpoint = format!("vsock-uds:{path}:5005").parse().unwrap();
        let mut s = Stream::connect(&ep).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"enclave bytes");
    }

    #[test]
    fn vsock_uds_refusals() {
        for answer in [&b"OK 5006\n"[..], b"FAIL\n", b"OK 5005", b"", &[b'x'; 100]] {
            let (_dir, path) = backend(answer, b"");
            let e = connect_vsock_uds(&path, 5005).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("none").display().to_string();
        assert!(connect_vsock_uds(&none, 5005).is_err());
    }
}
