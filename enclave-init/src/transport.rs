//! Streams over vsock, and in dev builds over Unix sockets and loopback TCP.
//!
//! A release build has no Unix or TCP code at all: asking it for such an endpoint is a clear
//! error, so an enclave image can never be talked into listening anywhere but vsock.

use bidding_core::endpoint::Endpoint;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

pub enum Stream {
    Vsock(vsock::VsockStream),
    #[cfg(feature = "dev")]
    Unix(std::os::unix::net::UnixStream),
    #[cfg(feature = "dev")]
    Tcp(std::net::TcpStream),
}

pub enum Listener {
    Vsock(vsock::VsockListener),
    #[cfg(feature = "dev")]
    Unix(std::os::unix::net::UnixListener),
    #[cfg(feature = "dev")]
    Tcp(std::net::TcpListener),
}

#[cfg(not(feature = "dev"))]
fn local_refused(ep: &Endpoint) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "{ep}: unix: and tcp: endpoints exist only in dev builds (cargo feature `dev`); an enclave image uses vsock"
        ),
    )
}

/// `vsock-uds:` is how a host reaches a test VM's vsock; inside the enclave it means nothing.
fn parent_side_refused(ep: &Endpoint) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "{ep}: vsock-uds: is a parent-side endpoint (a test VM's vsock seen from the host); an enclave uses vsock"
        ),
    )
}

pub fn listen(ep: &Endpoint) -> io::Result<Listener> {
    match ep {
        Endpoint::VsockUds { .. } => Err(parent_side_refused(ep)),
        Endpoint::Vsock { cid, port } => {
            vsock::VsockListener::bind_with_cid_port(*cid, *port).map(Listener::Vsock)
        }
        #[cfg(feature = "dev")]
        Endpoint::Unix(path) => {
            // A stale socket file from an earlier run would make bind fail.
            let _ = std::fs::remove_file(path);
            std::os::unix::net::UnixListener::bind(path).map(Listener::Unix)
        }
        #[cfg(feature = "dev")]
        Endpoint::Tcp(addr) => std::net::TcpListener::bind(addr).map(Listener::Tcp),
        #[cfg(not(feature = "dev"))]
        other => Err(local_refused(other)),
    }
}

pub fn connect(ep: &Endpoint) -> io::Result<Stream> {
    match ep {
        Endpoint::VsockUds { .. } => Err(parent_side_refused(ep)),
        Endpoint::Vsock { cid, port } => {
            vsock::VsockStream::connect_with_cid_port(*cid, *port).map(Stream::Vsock)
        }
        #[cfg(feature = "dev")]
        Endpoint::Unix(path) => std::os::unix::net::UnixStream::connect(path).map(Stream::Unix),
        #[cfg(feature = "dev")]
        Endpoint::Tcp(addr) => {
            let s = std::net::TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            Ok(Stream::Tcp(s))
        }
        #[cfg(not(feature = "dev"))]
        other => Err(local_refused(other)),
    }
}

/// Refuses endpoints this build cannot serve, before anything starts.
pub fn check_supported(ep: &Endpoint) -> io::Result<()> {
    if matches!(ep, Endpoint::VsockUds { .. }) {
        return Err(parent_side_refused(ep));
    }
    #[cfg(not(feature = "dev"))]
    if ep.is_local() {
        return Err(local_refused(ep));
    }
    let _ = ep;
    Ok(())
}

impl Listener {
    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Vsock(l) => l.accept().map(|(s, _)| Stream::Vsock(s)),
            #[cfg(feature = "dev")]
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            #[cfg(feature = "dev")]
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        }
    }
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Stream::Vsock($s) => $e,
            #[cfg(feature = "dev")]
            Stream::Unix($s) => $e,
            #[cfg(feature = "dev")]
            Stream::Tcp($s) => $e,
        }
    };
}

impl Stream {
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Vsock(s) => Stream::Vsock(s.try_clone()?),
            #[cfg(feature = "dev")]
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            #[cfg(feature = "dev")]
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }
    pub fn shutdown(&self) {
        let _ = each!(self, s => s.shutdown(Shutdown::Both));
    }
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        each!(self, s => s.set_read_timeout(t))
    }
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        each!(self, s => s.set_write_timeout(t))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        each!(self, s => s.read(buf))
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        each!(self, s => s.write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        each!(self, s => s.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vsock_uds_is_refused_in_every_build() {
        let ep: Endpoint = "vsock-uds:/tmp/no-such-dir/vsock:5005".parse().unwrap();
        for e in [
            check_supported(&ep).unwrap_err(),
            listen(&ep).err().unwrap(),
            connect(&ep).err().unwrap(),
        ] {
            assert_eq!(e.kind(), io::ErrorKind::Unsupported);
            assert!(e.to_string().contains("parent-side endpoint"), "{e}");
        }
    }
}
