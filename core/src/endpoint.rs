//! Where a stream goes: `vsock:CID:PORT` on Nitro, `unix:PATH` or `tcp:HOST:PORT` locally,
//! and `vsock-uds:PATH:PORT` for a test VM's vsock reached through a Unix socket (the
//! vhost-device-vsock backend's `uds-path` mode: connect to PATH, send `CONNECT PORT\n`, read
//! `OK PORT\n`; never the host's AF_VSOCK).

use std::fmt;
use std::str::FromStr;

/// The vsock CID meaning "any" when listening.
pub const VSOCK_CID_ANY: u32 = u32::MAX;
/// The parent instance's CID, where the vsock-proxy listens.
pub const VSOCK_CID_PARENT: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Vsock {
        cid: u32,
        port: u32,
    },
    Unix(String),
    Tcp(String),
    /// A guest's vsock port behind a vhost-user backend's Unix socket (parent side only).
    VsockUds {
        path: String,
        port: u32,
    },
}

impl Endpoint {
    /// True for the endpoints that exist only on a development machine.
    pub fn is_local(&self) -> bool {
        !matches!(self, Endpoint::Vsock { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "endpoint `{given}`: {why} (expected vsock:CID:PORT, unix:PATH, tcp:HOST:PORT or vsock-uds:PATH:PORT)"
)]
pub struct EndpointError {
    given: String,
    why: &'static str,
}

impl FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, EndpointError> {
        let err = |why| EndpointError {
            given: s.chars().take(200).collect(),
            why,
        };
        let (scheme, rest) = s.split_once(':').ok_or_else(|| err("no scheme"))?;
        match scheme {
            "vsock" => {
                let (cid, port) = rest.split_once(':').ok_or_else(|| err("no port"))?;
                let cid = if cid == "any" {
                    VSOCK_CID_ANY
                } else {
                    cid.parse().map_err(|_| err("CID is not a number"))?
                };
                let port = port.parse().map_err(|_| err("port is not a number"))?;
                Ok(Endpoint::Vsock { cid, port })
            }
            "unix" if !rest.is_empty() => Ok(Endpoint::Unix(rest.to_owned())),
            "unix" => Err(err("empty path")),
            "tcp" => {
                let (host, port) = rest.rsplit_once(':').ok_or_else(|| err("no port"))?;
                if host.is_empty() {
                    return Err(err("empty host"));
                }
                port.parse::<u16>()
                    .map_err(|_| err("port is not a number"))?;
                Ok(Endpoint::Tcp(rest.to_owned()))
            }
            "vsock-uds" => {
                let (path, port) = rest.rsplit_once(':').ok_or_else(|| err("no port"))?;
                if path.is_empty() {
                    return Err(err("empty path"));
                }
                let port = port.parse().map_err(|_| err("port is not a number"))?;
                Ok(Endpoint::VsockUds {
                    path: path.to_owned(),
                    port,
                })
            }
            _ => Err(err("unknown scheme")),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Vsock { cid, port } if *cid == VSOCK_CID_ANY => write!(f, "vsock:any:{port}"),
            Endpoint::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Endpoint::Unix(p) => write!(f, "unix:{p}"),
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
            Endpoint::VsockUds { path, port } => write!(f, "vsock-uds:{path}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in [
            "vsock:16:5005",
            "vsock:any:5005",
            "unix:/tmp/x.sock",
            "tcp:127.0.0.1:8000",
            "vsock-uds:/tmp/vm/vsock:5005",
            "vsock-uds:/odd:dir/vsock:0",
        ] {
            assert_eq!(s.parse::<Endpoint>().unwrap().to_string(), s);
        }
        assert_eq!(
            "vsock:3:8000".parse(),
            Ok(Endpoint::Vsock { cid: 3, port: 8000 })
        );
        for bad in [
            "",
            "vsock:3",
            "vsock:x:1",
            "unix:",
            "tcp:127.0.0.1",
            "tcp::80",
            "http://x",
            "vsock-uds:",
            "vsock-uds:/tmp/vsock",
            "vsock-uds::5005",
            "vsock-uds:/tmp/vsock:x",
            "vsock-uds:/tmp/vsock:-1",
            "vsock-uds:/tmp/vsock:4294967296",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
        assert_eq!(
            "vsock-uds:/a:b/vsock:5005".parse(),
            Ok(Endpoint::VsockUds {
                path: "/a:b/vsock".into(),
                port: 5005
            })
        );
        assert_eq!(
            "ftp:x".parse::<Endpoint>().unwrap_err().to_string(),
            "endpoint `ftp:x`: unknown scheme (expected vsock:CID:PORT, unix:PATH, tcp:HOST:PORT or vsock-uds:PATH:PORT)"
        );
    }

    #[test]
    fn only_vsock_is_not_local() {
        assert!(!"vsock:16:5005".parse::<Endpoint>().unwrap().is_local());
        for s in ["unix:/x", "tcp:127.0.0.1:1", "vsock-uds:/tmp/vsock:5005"] {
            assert!(s.parse::<Endpoint>().unwrap().is_local(), "{s}");
        }
    }
}
