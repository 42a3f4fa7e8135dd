//! A tiny, strict HTTP/1.1 client over a raw socket, for tests.
//!
//! Tests need to send exactly the bytes they choose (malformed requests,
//! pipelined requests, half a body) and to see exactly how the server framed
//! its answer, so this client hides nothing: you write bytes with
//! [`Conn::send`] and read one [`Response`] at a time with
//! [`Conn::read_response`]. It is strict where a server bug could hide: a
//! response cut short (EOF before `Content-Length` bytes, a chunked body
//! without its last chunk), conflicting framing headers, or a malformed head
//! is an [`io::ErrorKind::InvalidData`] error, never a short success.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Default read/write timeout of a [`Conn`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in one response.
const MAX_HEADERS: usize = 128;

/// One HTTP response as it came off the wire (chunked bodies decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// The minor version: `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub version: u8,
    /// Header fields in order, names as sent (not lower-cased).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header named `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the server said it will close the connection after this
    /// response (`Connection: close`, or HTTP/1.0 without `keep-alive`).
    pub fn closes(&self) -> bool {
        let has = |token: &str| {
            self.header_all("connection")
                .iter()
                .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        has("close") || (self.version == 0 && !has("keep-alive"))
    }
}

/// The socket under a [`Conn`]: TCP, or a unix socket (stage 4's uwsgi socket).
enum Sock {
    Tcp(TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Sock {
    fn set_timeouts(&self, d: Duration) {
        let d = Some(d);
        let _ = match self {
            Sock::Tcp(s) => s.set_read_timeout(d).and(s.set_write_timeout(d)),
            Sock::Unix(s) => s.set_read_timeout(d).and(s.set_write_timeout(d)),
        };
    }

    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(d),
            Sock::Unix(s) => s.set_read_timeout(d),
        }
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown(how),
            Sock::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A client connection: write any bytes, read responses one by one.
pub struct Conn {
    stream: Sock,
    /// Bytes received but not yet consumed (the start of a pipelined
    /// response, or whatever `is_closed` saw arrive).
    buf: Vec<u8>,
    timeout: Duration,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Whether `e` means the peer closed or reset the connection.
fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Normalises a socket timeout: Linux reports it as `WouldBlock`.
fn fix_timeout(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the server")
    } else {
        e
    }
}

/// How the body of a response is delimited.
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

impl Conn {
    /// Connects (within the default timeout of 10 s) with `TCP_NODELAY` on and
    /// 10 s read and write timeouts.
    pub fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, DEFAULT_TIMEOUT)?;
        stream.set_nodelay(true)?;
        let mut c = Conn {
            stream: Sock::Tcp(stream),
            buf: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        };
        c.set_timeout(DEFAULT_TIMEOUT);
        Ok(c)
    }

    /// Sets the read and write timeout (a zero duration means 1 ms).
    pub fn set_timeout(&mut self, d: Duration) {
        let d = d.max(Duration::from_millis(1));
        self.timeout = d;
        self.stream.set_timeouts(d);
    }

    /// Connects to a unix socket (a stage 4 worker's), with the default timeouts.
    pub fn connect_unix(path: &std::path::Path) -> io::Result<Conn> {
        let stream = std::os::unix::net::UnixStream::connect(path)?;
        let mut c = Conn {
            stream: Sock::Unix(stream),
            buf: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        };
        c.set_timeout(DEFAULT_TIMEOUT);
        Ok(c)
    }

    /// The underlying TCP socket, e.g. to set options or read its local
    /// address (`None` on a unix socket).
    pub fn stream(&self) -> Option<&TcpStream> {
        match &self.stream {
            Sock::Tcp(s) => Some(s),
            Sock::Unix(_) => None,
        }
    }

    /// Writes all of `bytes`.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).map_err(fix_timeout)?;
        self.stream.flush()
    }

    /// Closes the writing half: the server sees EOF after what was sent.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    /// Reads more bytes into `self.buf`; `Ok(0)` at EOF. A reset counts as
    /// EOF: the caller decides whether that truncated something.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(e) if is_reset(&e) => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.fill(),
            Err(e) => Err(fix_timeout(e)),
        }
    }

    /// Reads exactly one response.
    ///
    /// The head is parsed with httparse; the body is framed by
    /// `Content-Length`, `Transfer-Encoding: chunked` (decoded; trailers are
    /// read and dropped), or the end of the connection. `head_request: true`
    /// means no body follows (the answer to HEAD); 1xx, 204 and 304 responses
    /// have none either. An interim `100 Continue` is returned as a response
    /// of its own: read again for the final one.
    ///
    /// Errors: `UnexpectedEof` if the connection ended before any byte of a
    /// response (the server closed an idle keep-alive connection);
    /// `InvalidData` if the response is malformed or ends early; `TimedOut`
    /// if the server sent nothing for the timeout.
    pub fn read_response(&mut self, head_request: bool) -> io::Result<Response> {
        // The head.
        let (mut resp, head_len, framing) = loop {
            if !self.buf.is_empty() {
                if let Some(parsed) = parse_head(&self.buf, head_request)? {
                    break parsed;
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(invalid(format!(
                        "response head longer than {MAX_HEAD} bytes"
                    )));
                }
            }
            if self.fill()? == 0 {
                return Err(if self.buf.is_empty() {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection without sending a response",
                    )
                } else {
                    invalid(format!(
                        "the connection ended inside the response head: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ))
                });
            }
        };
        self.buf.drain(..head_len);

        // The body.
        match framing {
            Framing::None => {}
            Framing::Length(n) => {
                while self.buf.len() < n {
                    if self.fill()? == 0 {
                        return Err(invalid(format!(
                            "truncated body: Content-Length is {n} but the connection ended after {} bytes",
                            self.buf.len()
                        )));
                    }
                }
                resp.body = self.buf.drain(..n).collect();
            }
            Framing::UntilClose => {
                while self.fill()? != 0 {}
                resp.body = std::mem::take(&mut self.buf);
            }
            Framing::Chunked => {
                resp.chunked = true;
                resp.body = self.read_chunked()?;
            }
        }
        Ok(resp)
    }

    /// Decodes a chunked body from the connection, leaving what follows it
    /// in the buffer.
    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        let eof = |what: &str, body: &[u8]| {
            invalid(format!(
                "truncated chunked body: the connection ended in {what} after {} body bytes",
                body.len()
            ))
        };
        loop {
            // Chunk-size line.
            let (consumed, size) = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete(x)) => break x,
                    Ok(httparse::Status::Partial) => {
                        if self.buf.len() > MAX_HEAD {
                            return Err(invalid("chunk-size line too long"));
                        }
                        if self.fill()? == 0 {
                            return Err(eof("a chunk-size line", &body));
                        }
                    }
                    Err(_) => {
                        return Err(invalid(format!(
                            "invalid chunk-size line: {:?}",
                            String::from_utf8_lossy(&self.buf[..self.buf.len().min(40)])
                        )));
                    }
                }
            };
            self.buf.drain(..consumed);
            if size == 0 {
                break;
            }
            let size = usize::try_from(size).map_err(|_| invalid("chunk too large"))?;
            let need = size
                .checked_add(2)
                .ok_or_else(|| invalid("chunk too large"))?;
            while self.buf.len() < need {
                if self.fill()? == 0 {
                    return Err(eof("a chunk", &body));
                }
            }
            if &self.buf[size..need] != b"\r\n" {
                return Err(invalid(format!(
                    "chunk of {size} bytes not followed by CRLF"
                )));
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..need);
        }
        // Trailer fields, then the final CRLF.
        loop {
            let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                if self.buf.len() > MAX_HEAD {
                    return Err(invalid("trailer section too long"));
                }
                if self.fill()? == 0 {
                    return Err(eof("the trailer section", &body));
                }
                continue;
            };
            self.buf.drain(..i + 2);
            if i == 0 {
                return Ok(body);
            }
        }
    }

    /// Reads until the server closes the connection (EOF or reset) and
    /// returns everything that arrived, including bytes already buffered.
    /// Errors with `TimedOut` if the server keeps it open past the timeout.
    pub fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? != 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// True if the server closes its side (a read sees EOF or a reset)
    /// within `within`. Bytes that arrive meanwhile are kept for the next
    /// read.
    pub fn is_closed(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let closed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            let _ = self.stream.set_read_timeout(Some(left));
            match self.fill() {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => break false,
                Err(_) => break true,
            }
        };
        let _ = self.stream.set_read_timeout(Some(self.timeout));
        closed
    }
}

/// Parses a complete head from `buf`: the response (body empty), the head's
/// length, and how the body is framed. `Ok(None)` if more bytes are needed.
fn parse_head(buf: &[u8], head_request: bool) -> io::Result<Option<(Response, usize, Framing)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            let end = buf.len().min(200);
            return Err(invalid(format!(
                "malformed response head ({e}): {:?}",
                String::from_utf8_lossy(&buf[..end])
            )));
        }
    };
    let status = r.code.unwrap_or(0);
    let mut resp = Response {
        status,
        reason: r.reason.unwrap_or("").to_string(),
        version: r.version.unwrap_or(1),
        headers: r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
        chunked: false,
    };

    let mut length: Option<usize> = None;
    let mut te: Option<String> = None;
    for (name, value) in &resp.headers {
        if name.eq_ignore_ascii_case("content-length") {
            let v = value.trim();
            let n = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                v.parse::<usize>().ok()
            } else {
                None
            }
            .ok_or_else(|| invalid(format!("invalid Content-Length: {value:?}")))?;
            if length.is_some_and(|m| m != n) {
                return Err(invalid("conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let t = te.get_or_insert_with(String::new);
            if !t.is_empty() {
                t.push(',');
            }
            t.push_str(value);
        }
    }
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if no_body {
        Framing::None
    } else if let Some(te) = te {
        if length.is_some() {
            return Err(invalid(
                "response has both Transfer-Encoding and Content-Length",
            ));
        }
        let last = te.rsplit(',').next().unwrap_or("").trim();
        if last.eq_ignore_ascii_case("chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    resp.body.clear();
    Ok(Some((resp, len, framing)))
}

/// `GET path` with `Connection: close` on a new connection; reads one
/// response.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    request(addr, req.as_bytes())
}

/// Sends `raw` on a new connection and reads one response.
pub fn request(addr: SocketAddr, raw: &[u8]) -> io::Result<Response> {
    let mut c = Conn::connect(addr)?;
    c.send(raw)?;
    c.read_response(raw.starts_with(b"HEAD "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{canned, python_server, read_head, serve_once};

    #[test]
    fn content_length_and_keep_alive() {
        let addr = canned(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nConnection: close\r\n\r\n",
        ]);
        let mut c = Conn::connect(addr).unwrap();
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let r = c.read_response(false).unwrap();
        assert_eq!((r.status, r.reason.as_str(), r.version), (200, "OK", 1));
        assert_eq!(r.text(), "hello");
        assert_eq!(r.header("x-a"), Some("1"));
        assert!(!r.chunked && !r.closes());
        c.send(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let r = c.read_response(false).unwrap();
        assert_eq!(r.status, 404);
        assert!(r.body.is_empty() && r.closes());
        assert!(c.is_closed(Duration::from_secs(5)));
    }

    #[test]
    fn pipelined_responses_in_one_write() {
        let addr = canned(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\nHTTP/1.0 200 OK\r\n\r\nc",
        ]);
        let mut c = Conn::connect(addr).unwrap();
        c.send(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(c.read_response(false).unwrap().text(), "a");
        let r = c.read_response(false).unwrap();
        assert!(r.chunked);
        assert_eq!(r.text(), "b");
        let r = c.read_response(false).unwrap();
        assert_eq!((r.version, r.text().as_str()), (0, "c"));
        assert!(r.closes());
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let addr = canned(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-Trailer: t\r\n\r\n",
        ]);
        let r = request(addr, b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r.text(), "hello, world!!!");
        assert!(r.chunked);
    }

    #[test]
    fn chunked_split_across_writes() {
        let addr = serve_once(|mut s| {
            read_head(&mut s);
            for part in [
                &b"HTTP/1.1 200 OK\r\nTransfer-"[..],
                b"Encoding: chunked\r\n\r\n3",
                b"\r\nab",
                b"c\r",
                b"\n0\r\n",
                b"\r\n",
            ] {
                s.write_all(part).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let r = request(addr, b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r.text(), "abc");
    }

    fn assert_invalid(r: io::Result<Response>, what: &str) {
        match r {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}: {e}"),
            Ok(r) => panic!("{what}: accepted {r:?}"),
        }
    }

    #[test]
    fn truncated_content_length_is_invalid() {
        let addr = canned(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]);
        assert_invalid(request(addr, b"GET / HTTP/1.1\r\n\r\n"), "short body");
    }

    #[test]
    fn truncated_chunked_is_invalid() {
        for resp in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let addr = canned(vec![resp]);
            assert_invalid(
                request(addr, b"GET / HTTP/1.1\r\n\r\n"),
                &String::from_utf8_lossy(resp),
            );
        }
    }

    #[test]
    fn malformed_heads_are_invalid() {
        for resp in [
            &b"HTTP/1.1 200 OK\r\nContent-Le"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 OK\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            let addr = canned(vec![resp]);
            assert_invalid(
                request(addr, b"GET / HTTP/1.1\r\n\r\n"),
                &String::from_utf8_lossy(resp),
            );
        }
    }

    #[test]
    fn truncated_after_reset_is_invalid() {
        // The server sends half a body and resets the connection (SO_LINGER
        // 0): still a truncation, not a success.
        let addr = serve_once(|mut s| {
            read_head(&mut s);
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
                .unwrap();
            std::thread::sleep(Duration::from_millis(50));
            let l = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            use std::os::fd::AsRawFd;
            // SAFETY: setsockopt with a valid fd and a correctly sized struct.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&l as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
        });
        assert_invalid(request(addr, b"GET / HTTP/1.1\r\n\r\n"), "reset");
    }

    #[test]
    fn no_body_cases() {
        let addr = canned(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
        ]);
        let mut c = Conn::connect(addr).unwrap();
        c.send(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n")
            .unwrap();
        assert_eq!(c.read_response(false).unwrap().status, 100);
        assert_eq!(c.read_response(false).unwrap().text(), "ok");
        c.send(b"HEAD / HTTP/1.1\r\n\r\n").unwrap();
        let r = c.read_response(true).unwrap();
        assert_eq!((r.status, r.header("content-length")), (200, Some("42")));
        c.send(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(c.read_response(false).unwrap().status, 204);
        assert_eq!(c.read_response(false).unwrap().status, 304);
        let e = c.read_response(false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn read_to_close_and_timeouts() {
        let addr = canned(vec![b"HTTP/1.1 400 Bad Request\r\n\r\nbye"]);
        let mut c = Conn::connect(addr).unwrap();
        c.send(b"BAD\r\n\r\n").unwrap();
        assert_eq!(
            c.read_to_close().unwrap(),
            b"HTTP/1.1 400 Bad Request\r\n\r\nbye"
        );

        // A server that never answers: a timeout, not a hang or a success.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let addr = serve_once(move |_s| {
            let _ = rx.recv();
        });
        let mut c = Conn::connect(addr).unwrap();
        c.set_timeout(Duration::from_millis(100));
        c.send(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert!(!c.is_closed(Duration::from_millis(50)));
        let e = c.read_response(false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            c.read_to_close().unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        drop(tx);
        c.set_timeout(Duration::from_secs(5));
        assert!(c.read_to_close().unwrap().is_empty());
    }

    #[test]
    fn against_python_server() {
        let s = python_server("ok", &[]).unwrap();
        let r = get(s.addr(), "/chunked").unwrap();
        assert_eq!(
            (r.status, r.chunked, r.text().as_str()),
            (200, true, "hello world")
        );
        let mut c = Conn::connect(s.addr()).unwrap();
        for _ in 0..3 {
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            assert_eq!(c.read_response(false).unwrap().text(), "ok");
        }
        c.send(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(c.read_response(false).unwrap().closes());
        assert!(c.is_closed(Duration::from_secs(5)));
    }
}
