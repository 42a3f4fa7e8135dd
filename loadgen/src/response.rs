//! One exchange on one connection, from the client's side: the socket
//! (tokio's or a blocking one), its receive buffer, and reading a response:
//! its head parsed in place with httparse, its body skipped without copying.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Done, ErrKind, RECV_BUF, ReadErr, Shared};

/// One client connection's socket: tokio's, multiplexed with the other
/// connections of its thread, or a plain blocking one when it is the
/// thread's only connection (see the crate's comment, in lib.rs).
pub(crate) enum ClientStream {
    Tokio(TcpStream),
    Blocking(std::net::TcpStream),
}

/// A request this small fits in a new socket's send buffer: writing it
/// cannot block, so a blocking socket needs no write timeout for it.
const FITS_IN_SEND_BUFFER: usize = 16 * 1024;

impl ClientStream {
    pub(crate) async fn connect(shared: &Shared, blocking: bool) -> std::io::Result<ClientStream> {
        if !blocking {
            let s = TcpStream::connect(shared.addr).await?;
            // Several requests of a run may be in flight on a thread: none
            // waits for Nagle's algorithm.
            let _ = s.set_nodelay(true);
            return Ok(ClientStream::Tokio(s));
        }
        // A blocking connect, with the kernel's own connect timeout. No
        // TCP_NODELAY: a lone connection sends its next request only after
        // the response (which acknowledges every byte sent), so Nagle's
        // algorithm never holds a request back.
        let s = std::net::TcpStream::connect(shared.addr)?;
        s.set_read_timeout(Some(shared.timeout))?;
        if shared.request.len() > FITS_IN_SEND_BUFFER {
            s.set_write_timeout(Some(shared.timeout))?;
        }
        Ok(ClientStream::Blocking(s))
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ClientStream::Tokio(s) => s.read(buf).await,
            ClientStream::Blocking(s) => std::io::Read::read(s, buf),
        }
    }

    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            ClientStream::Tokio(s) => s.write_all(buf).await,
            ClientStream::Blocking(s) => std::io::Write::write_all(s, buf),
        }
    }
}

/// A fixed receive buffer: `buf[start..end]` holds unconsumed bytes.
pub(crate) struct RecvBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes received over the connection task's life.
    pub(crate) total: u64,
}

impl RecvBuf {
    pub(crate) fn new() -> RecvBuf {
        RecvBuf {
            buf: vec![0; RECV_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            total: 0,
        }
    }

    #[inline]
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    #[inline]
    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Reads more bytes after the unconsumed ones; `Ok(0)` at EOF or reset.
    /// Fails (malformed) if the buffer is full of unconsumed bytes.
    async fn fill(&mut self, s: &mut ClientStream) -> Result<usize, ErrKind> {
        if self.start == self.end {
            self.clear();
        } else if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(ErrKind::Malformed);
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        match s.read(&mut self.buf[self.end..]).await {
            Ok(n) => {
                self.end += n;
                self.total += n as u64;
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                Ok(0)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(ErrKind::Timeout)
            }
            Err(_) => Err(ErrKind::Read),
        }
    }

    /// Skips `n` body bytes, reading them as needed.
    async fn skip(&mut self, s: &mut ClientStream, mut n: u64) -> Result<(), ErrKind> {
        loop {
            let avail = (self.end - self.start) as u64;
            let take = avail.min(n);
            // `take` <= avail, a usize.
            self.consume(take as usize);
            n -= take;
            if n == 0 {
                return Ok(());
            }
            if self.fill(s).await? == 0 {
                return Err(ErrKind::Read);
            }
        }
    }
}

/// How a response body is delimited.
#[derive(Clone, Copy)]
enum Body {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The parts of a response head the generator needs.
struct Head {
    len: usize,
    status: u16,
    body: Body,
    close: bool,
}

/// Parses a response head at the start of `buf`; `Ok(None)` if incomplete.
fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, ErrKind> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ErrKind::Malformed),
    };
    let status = r.code.unwrap_or(0);
    let mut length = None;
    let mut chunked = false;
    let mut other_te = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    for h in r.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| ErrKind::Malformed)?;
            length = Some(v.trim().parse::<u64>().map_err(|_| ErrKind::Malformed)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only the last coding decides the framing.
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or(b"");
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            other_te = !chunked;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|b| *b == b',') {
                let t = token.trim_ascii();
                conn_close |= t.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let body = if no_body {
        Body::None
    } else if chunked {
        Body::Chunked
    } else if other_te {
        Body::UntilClose
    } else if let Some(n) = length {
        Body::Length(n)
    } else {
        Body::UntilClose
    };
    let http10 = r.version == Some(0);
    let close = conn_close || (http10 && !conn_keep_alive) || matches!(body, Body::UntilClose);
    Ok(Some(Head {
        len,
        status,
        body,
        close,
    }))
}

/// Reads one response from `s`, skipping interim 1xx responses.
pub(crate) async fn read_response(
    s: &mut ClientStream,
    rb: &mut RecvBuf,
    head_request: bool,
) -> Result<Done, ReadErr> {
    let mut first = true;
    let head = loop {
        if rb.start != rb.end
            && let Some(h) = parse_head(rb.data(), head_request)?
        {
            if (100..200).contains(&h.status) && h.status != 101 {
                rb.consume(h.len);
                continue;
            }
            break h;
        }
        let empty = rb.start == rb.end;
        if rb.fill(s).await? == 0 {
            return Err(if empty && first {
                ReadErr::ClosedEarly
            } else {
                ReadErr::Kind(ErrKind::Read)
            });
        }
        first = false;
    };
    rb.consume(head.len);
    match head.body {
        Body::None => {}
        Body::Length(n) => rb.skip(s, n).await?,
        Body::Chunked => skip_chunked(s, rb).await?,
        Body::UntilClose => {
            rb.clear();
            while rb.fill(s).await? != 0 {
                rb.clear();
            }
        }
    }
    Ok(Done {
        status: head.status,
        close: head.close,
    })
}

/// Skips a chunked body and its trailer section.
async fn skip_chunked(s: &mut ClientStream, rb: &mut RecvBuf) -> Result<(), ErrKind> {
    loop {
        let (consumed, size) = loop {
            match httparse::parse_chunk_size(rb.data()) {
                Ok(httparse::Status::Complete(x)) => break x,
                Ok(httparse::Status::Partial) => {
                    if rb.fill(s).await? == 0 {
                        return Err(ErrKind::Read);
                    }
                }
                Err(_) => return Err(ErrKind::Malformed),
            }
        };
        rb.consume(consumed);
        if size == 0 {
            break;
        }
        // The chunk and its CRLF.
        rb.skip(s, size.saturating_add(2)).await?;
    }
    // Trailer lines up to an empty line.
    loop {
        match rb.data().iter().position(|b| *b == b'\n') {
            Some(i) => {
                let empty = i == 0 || (i == 1 && rb.data()[0] == b'\r');
                rb.consume(i + 1);
                if empty {
                    return Ok(());
                }
            }
            None => {
                if rb.fill(s).await? == 0 {
                    return Err(ErrKind::Read);
                }
            }
        }
    }
}
