//! A small HTTP/1.1 client for one purpose: POSTing KMS requests over a kept-alive stream.
//!
//! Response heads are parsed by `httparse`; bodies are read by `Content-Length` or chunked
//! transfer coding (chunk sizes also parsed by `httparse`). Sizes are bounded everywhere, so a
//! hostile proxy or server cannot make the enclave buffer without limit.

use std::io::{self, Read, Write};

const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// False when the server will close the connection after this response.
    pub keep_alive: bool,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Sends one request and reads its response. `host` goes into the Host header; `headers`
/// should not repeat Host or Content-Length.
pub fn round_trip<S: Read + Write>(
    stream: &mut S,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    max_body: usize,
) -> io::Result<Response> {
    let mut req = Vec::with_capacity(256 + body.len());
    write!(req, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n")?;
    for (k, v) in headers {
        if v.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(bad(format!("header {k} contains a line break")));
        }
        write!(req, "{k}: {v}\r\n")?;
    }
    write!(req, "Content-Length: {}\r\n\r\n", body.len())?;
    req.extend_from_slice(body);
    stream.write_all(&req)?;
    stream.flush()?;
    read_response(stream, max_body)
}

pub fn read_response<S: Read>(stream: &mut S, max_body: usize) -> io::Result<Response> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    // After an interim (1xx) response the buffer may already hold the whole next one.
    let mut need_more = true;
    let (status, head_len, length, chunked, keep_alive) = loop {
        if need_more {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    if buf.is_empty() {
                        "connection closed before a response"
                    } else {
                        "connection closed inside the response head"
                    },
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        need_more = true;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        match resp
            .parse(&buf)
            .map_err(|e| bad(format!("malformed response head: {e}")))?
        {
            httparse::Status::Partial if buf.len() > MAX_HEAD => {
                return Err(bad("response head over 16 KiB"));
            }
            httparse::Status::Partial => continue,
            httparse::Status::Complete(head_len) => {
                let status = resp.code.unwrap_or(0);
                let mut length = None;
                let mut chunked = false;
                let mut keep_alive = resp.version == Some(1);
                for h in resp.headers.iter() {
                    let value = std::str::from_utf8(h.value).unwrap_or("").trim();
                    if h.name.eq_ignore_ascii_case("content-length") {
                        let n: usize = value.parse().map_err(|_| bad("invalid Content-Length"))?;
                        if length.is_some_and(|l| l != n) {
                            return Err(bad("conflicting Content-Length headers"));
                        }
                        length = Some(n);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = value.eq_ignore_ascii_case("chunked");
                        if !chunked {
                            return Err(bad(format!("unsupported Transfer-Encoding {value}")));
                        }
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        keep_alive = !value.eq_ignore_ascii_case("close");
                    }
                }
                if (100..200).contains(&status) {
                    // An interim response: drop it and read the real one.
                    buf.drain(..head_len);
                    need_more = buf.is_empty();
                    continue;
                }
                break (status, head_len, length, chunked, keep_alive);
            }
        }
    };
    let mut rest = buf.split_off(head_len);
    let body = if chunked {
        read_chunked(stream, &mut rest, max_body)?
    } else if let Some(len) = length {
        if len > max_body {
            return Err(bad(format!(
                "response body of {len} bytes is over the limit of {max_body}"
            )));
        }
        while rest.len() < len {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {} of {len} body bytes", rest.len()),
                ));
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        rest
    } else {
        // Neither: the body runs to the end of the connection.
        loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&chunk[..n]);
            if rest.len() > max_body {
                return Err(bad("response body over the limit"));
            }
        }
        return Ok(Response {
            status,
            body: rest,
            keep_alive: false,
        });
    };
    Ok(Response {
        status,
        body,
        keep_alive,
    })
}

fn read_chunked<S: Read>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    max_body: usize,
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut more = |buf: &mut Vec<u8>, stream: &mut S| -> io::Result<()> {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a chunked body",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > max_body + MAX_HEAD {
            return Err(bad("chunked body over the limit"));
        }
        Ok(())
    };
    loop {
        let (consumed, size) = loop {
            match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete(x)) => break x,
                Ok(httparse::Status::Partial) => more(buf, stream)?,
                Err(_) => return Err(bad("malformed chunk size")),
            }
        };
        let size = usize::try_from(size).map_err(|_| bad("chunk too large"))?;
        if size > max_body || body.len() + size > max_body {
            return Err(bad("chunked body over the limit"));
        }
        buf.drain(..consumed);
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
                    let line_empty = pos == 0;
                    buf.drain(..pos + 2);
                    if line_empty {
                        return Ok(body);
                    }
                } else {
                    more(buf, stream)?;
                }
            }
        }
        while buf.len() < size + 2 {
            more(buf, stream)?;
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(bad("chunk not followed by CRLF"));
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Serves `input` in pieces of `step` bytes.
    struct Trickle<'a> {
        input: &'a [u8],
        step: usize,
    }
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(self.input.len()).min(out.len());
            out[..n].copy_from_slice(&self.input[..n]);
            self.input = &self.input[n..];
            Ok(n)
        }
    }

    fn parse(input: &[u8], step: usize) -> io::Result<Response> {
        read_response(&mut Trickle { input, step }, 1024)
    }

    #[test]
    fn content_length_chunked_and_close() {
        for step in [1, 3, 4096] {
            let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", step).unwrap();
            assert_eq!(
                (r.status, r.body.as_slice(), r.keep_alive),
                (200, &b"hello"[..], true)
            );
            let r = parse(b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n", step).unwrap();
            assert_eq!((r.status, r.body.as_slice()), (400, &b"abcde"[..]));
            let r = parse(b"HTTP/1.1 500 X\r\nConnection: close\r\n\r\nbye", step).unwrap();
            assert_eq!(
                (r.status, r.body.as_slice(), r.keep_alive),
                (500, &b"bye"[..], false)
            );
            let r = parse(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No\r\nContent-Length: 0\r\n\r\n",
                step,
            )
            .unwrap();
            assert_eq!(r.status, 204);
        }
    }

    #[test]
    fn refuses_what_it_must() {
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", 64).is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", 64).is_err());
        assert!(
            parse(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                64
            )
            .is_err()
        );
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 64).is_err());
        assert!(
            parse(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffff\r\n",
                64
            )
            .is_err()
        );
        assert!(parse(b"", 64).is_err());
        assert!(parse(b"garbage\r\n\r\n", 64).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..400), step in 1usize..50) {
            let mut input = b"HTTP/1.1 200 OK\r\n".to_vec();
            input.extend_from_slice(&data);
            let _ = parse(&input, step);
            let _ = parse(&data, step);
        }
    }
}
