//! `start_response` and the response writer behind it.
//!
//! The app calls `start_response(status, headers)` first, then returns the
//! body. Nothing is sent at that call: PEP 3333 has the server send the
//! headers together with the first non-empty piece of the body, so an app
//! can still change its mind (an error page via `exc_info`) until then.
//! (What `start_response` is given is checked in `response_head.rs`.)

use std::io::{self, IoSlice, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::{PyAssertionError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use super::request::ResponseRules;
use super::response_head::ResponseHead;
use crate::conn::Stream;
use crate::http::request::Version;
use crate::http::response::{
    Framing, LAST_CHUNK, error_response, push_chunk_size, push_decimal,
    push_status_and_common_headers, status_forbids_body,
};
use crate::trace;

/// Buffered bytes are written out once they pass this size, so a large list
/// body is not held whole in memory.
const FLUSH_THRESHOLD: usize = 64 * 1024;
/// Bodies pieces at least this big are written straight from the Python
/// bytes object (vectored write) instead of being copied into the buffer.
const DIRECT_WRITE: usize = 16 * 1024;

/// Frames and writes one response on the connection.
pub struct ResponseWriter {
    /// `None` once the request is over (see [`release`](Self::release)).
    stream: Option<Arc<Stream>>,
    out: Vec<u8>,
    server: Arc<str>,
    request_version: Version,
    head_request: bool,
    /// The client allows reusing the connection and the server wants to.
    keep_alive_allowed: bool,
    /// Set by `start_response`; replaced by a later call with `exc_info`.
    head: Option<ResponseHead>,
    headers_sent: bool,
    framing: Framing,
    /// Body bytes still allowed by the Content-Length sent.
    remaining: u64,
    /// Body bytes sent, framing left out (for the access log and
    /// `post_request`'s `resp.sent`).
    body_bytes: u64,
    /// The connection must be closed after this response.
    must_close: bool,
    /// The client went away: later writes are skipped.
    client_gone: Option<io::Error>,
    response_started: Arc<AtomicBool>,
    rules: ResponseRules,
}

/// What is left of a response once the app is done: the bytes still to
/// write, and what the connection and the access log need to know.
pub struct ResponseRest {
    /// Buffered and not written yet (nothing if the client is gone).
    pub unsent: Vec<u8>,
    /// The status sent (500 if the app never gave one).
    pub status: u16,
    /// Body bytes sent, framing left out: none for a response without a
    /// body (HEAD, 1xx, 204, 304), never more than the Content-Length. As
    /// gunicorn's `Response.sent`, which its access log prints too.
    pub body_bytes: u64,
    /// The connection must be closed after this response.
    pub must_close: bool,
    /// Why the client is gone, if it went away.
    pub client_gone: Option<io::Error>,
}

impl ResponseWriter {
    pub fn new(
        stream: Arc<Stream>,
        server: Arc<str>,
        request_version: Version,
        head_request: bool,
        keep_alive_allowed: bool,
        response_started: Arc<AtomicBool>,
        rules: ResponseRules,
    ) -> ResponseWriter {
        ResponseWriter {
            stream: Some(stream),
            out: Vec::with_capacity(512),
            server,
            request_version,
            head_request,
            keep_alive_allowed,
            head: None,
            headers_sent: false,
            framing: Framing::UntilClose,
            remaining: 0,
            body_bytes: 0,
            must_close: false,
            client_gone: None,
            response_started,
            rules,
        }
    }

    /// The head has gone into the buffer (or out): too late for another.
    #[inline]
    pub fn headers_sent(&self) -> bool {
        self.headers_sent
    }

    /// The client went away: nothing more is written.
    #[inline]
    pub fn client_gone(&self) -> bool {
        self.client_gone.is_some()
    }

    /// Writes the response head into the buffer, choosing the framing.
    /// `known_length` is the body's total length when the server knows it
    /// (the app returned a list of bytes).
    fn send_head(&mut self, known_length: Option<u64>) -> PyResult<()> {
        let Some(head) = self.head.as_ref() else {
            return Err(PyAssertionError::new_err(
                "the app produced body data before calling start_response()",
            ));
        };
        // ANCHOR: choose_framing
        let no_body = status_forbids_body(head.code);
        let mut framing_header = FramingHeader::None;
        self.framing = if let Some(n) = head.content_length {
            if no_body {
                Framing::NoBody
            } else {
                Framing::Length(n)
            }
        } else if no_body {
            Framing::NoBody
        } else if let Some(n) = known_length {
            framing_header = FramingHeader::Length(n);
            Framing::Length(n)
        } else if self.head_request {
            // A HEAD response has no body whatever its headers say; with an
            // unknown length there is nothing true to announce.
            Framing::NoBody
        } else if self.request_version == Version::Http11 && self.rules.chunked {
            framing_header = FramingHeader::Chunked;
            Framing::Chunked
        } else {
            Framing::UntilClose
        };
        if let Framing::Length(n) = self.framing {
            self.remaining = n;
        }
        let keep_alive =
            self.keep_alive_allowed && !head.close && self.framing != Framing::UntilClose;
        self.must_close |= !keep_alive;
        // ANCHOR_END: choose_framing
        self.push_head(keep_alive, framing_header);
        if self.head_request {
            self.framing = Framing::NoBody;
        }
        self.headers_sent = true;
        self.response_started.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The head's bytes: status line, the server's headers, the app's, the
    /// framing header, the blank line.
    fn push_head(&mut self, keep_alive: bool, framing_header: FramingHeader) {
        let head = self.head.as_ref().expect("send_head checked the head");
        let out = &mut self.out;
        if self.rules.server_and_date {
            push_status_and_common_headers(out, head.status_line(), &self.server);
        } else {
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(head.status_line());
            out.extend_from_slice(b"\r\n");
        }
        if !self.rules.connection_header {
            // The connection is closed after every response; the peer knows.
        } else if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if self.request_version == Version::Http10 {
            // HTTP/1.0 closes by default; say that this one stays open.
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(head.header_lines());
        match framing_header {
            FramingHeader::None => {}
            FramingHeader::Length(n) => {
                out.extend_from_slice(b"Content-Length: ");
                push_decimal(out, n);
                out.extend_from_slice(b"\r\n");
            }
            FramingHeader::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Adds a piece of the body. Sends the head first if it has not gone yet.
    /// `flush` writes everything out now (a streamed piece must not wait for
    /// the next one: PEP 3333 forbids delaying a block the app yielded).
    pub fn write_body(
        &mut self,
        py: Python<'_>,
        data: &[u8],
        known_length: Option<u64>,
        flush: bool,
    ) -> PyResult<()> {
        if !self.headers_sent {
            self.send_head(known_length)?;
        }
        if self.client_gone.is_some() {
            return Ok(());
        }
        let data = match self.framing {
            Framing::NoBody => &data[..0],
            Framing::Length(_) => {
                // An app that sends more than its Content-Length would
                // corrupt the next response on this connection: cut it off.
                let n = (data.len() as u64).min(self.remaining) as usize;
                if n < data.len() {
                    log::warning_once_app_overran();
                    self.must_close = true;
                }
                self.remaining -= n as u64;
                &data[..n]
            }
            Framing::Chunked if !data.is_empty() => {
                push_chunk_size(&mut self.out, data.len());
                data
            }
            Framing::Chunked | Framing::UntilClose => data,
        };
        // Counted once framed: what the client gets, not what the app made.
        self.body_bytes += data.len() as u64;
        let chunk_trailer: &[u8] = if self.framing == Framing::Chunked && !data.is_empty() {
            b"\r\n"
        } else {
            b""
        };
        if data.len() >= DIRECT_WRITE {
            self.write_out(py, data, chunk_trailer);
        } else {
            self.out.extend_from_slice(data);
            self.out.extend_from_slice(chunk_trailer);
            if flush || self.out.len() >= FLUSH_THRESHOLD {
                self.write_out(py, &[], &[]);
            }
        }
        Ok(())
    }

    /// Ends the response in the buffer: the head if the body was empty, the
    /// last chunk. [`take_rest`](Self::take_rest) hands it to whoever writes
    /// it after the GIL is released.
    pub fn end_body(&mut self) -> PyResult<()> {
        if !self.headers_sent {
            self.send_head(Some(0))?;
        }
        match self.framing {
            Framing::Chunked => self.out.extend_from_slice(LAST_CHUNK),
            Framing::Length(_) if self.remaining > 0 => {
                // Fewer bytes than announced: the client will wait for the
                // rest, so closing is the only way to end this response.
                log::warn!(
                    "the app sent {} bytes fewer than its Content-Length; closing the connection",
                    self.remaining
                );
                self.must_close = true;
            }
            _ => {}
        }
        Ok(())
    }

    /// What is left to do once the app is done: the bytes buffered and not
    /// written yet (nothing if the client is gone), and how it went.
    #[inline]
    pub fn take_rest(&mut self) -> ResponseRest {
        if self.client_gone.is_some() {
            self.out.clear();
        }
        ResponseRest {
            unsent: std::mem::take(&mut self.out),
            status: self.head.as_ref().map_or(500, |h| h.code),
            body_bytes: self.body_bytes,
            must_close: self.must_close,
            client_gone: self.client_gone.take(),
        }
    }

    /// Takes the head `start_response` was given (or the server's error
    /// head), moved out, not copied: for a server's `post_request` hook.
    /// Call it after [`take_rest`](Self::take_rest), which reads its status.
    #[inline]
    pub fn take_head(&mut self) -> Option<ResponseHead> {
        self.head.take()
    }

    /// Lets go of the connection: the request is over, and the object that
    /// holds this writer waits to be reused. The socket must close when its
    /// connection is done with it, not when the object is next used.
    pub fn release(&mut self) {
        self.stream = None;
    }

    /// After an app error once the head has gone: send what is buffered, but
    /// no last chunk, so the client sees an incomplete response, not a
    /// complete wrong one; then the connection is closed.
    pub fn abort(&mut self, py: Python<'_>) {
        self.must_close = true;
        self.write_out(py, &[], &[]);
        if self.rules.reset_on_abort {
            // A uwsgi response without Content-Length ends when the
            // connection closes, so a plain close would make a cut-short body
            // look complete to nginx. A reset (SO_LINGER 0) cannot be
            // mistaken: nginx reports the upstream error and cuts its own
            // response to the client short in turn.
            if let Some(stream) = &self.stream {
                reset_on_close(stream);
            }
        }
    }

    /// Replaces anything buffered with a complete error response (the head
    /// has not been sent, so the client has seen nothing yet).
    pub fn send_error(&mut self, py: Python<'_>, status: u16, message: &str) {
        debug_assert!(!self.headers_sent);
        self.out = error_response(status, message, &self.server);
        self.head = Some(ResponseHead::of_error(status));
        self.headers_sent = true;
        self.must_close = true;
        self.response_started.store(true, Ordering::Relaxed);
        self.write_out(py, &[], &[]);
    }

    // ANCHOR: write_out
    /// Writes the buffer, then `data` and `trailer`, without the GIL.
    fn write_out(&mut self, py: Python<'_>, data: &[u8], trailer: &[u8]) {
        if self.client_gone.is_some() {
            self.out.clear();
            return;
        }
        let Some(stream) = self.stream.as_deref() else {
            self.out.clear();
            return;
        };
        if self.out.is_empty() && data.is_empty() {
            return;
        }
        let out = &self.out;
        let result = py.detach(|| {
            let t = trace::start();
            let written = write_all_vectored(stream, &mut [out.as_slice(), data, trailer]);
            trace::end_io(t, "write");
            written
        });
        self.out.clear();
        if let Err(e) = result {
            self.must_close = true;
            self.client_gone = Some(e);
        }
    }
    // ANCHOR_END: write_out
}

/// The framing header the server adds to the app's headers.
enum FramingHeader {
    None,
    Length(u64),
    Chunked,
}

/// Makes the coming close send a reset instead of an orderly end.
fn reset_on_close(stream: &Stream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a pointer to a linger struct of the right size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Writes several buffers with as few system calls as possible.
fn write_all_vectored(mut stream: &Stream, parts: &mut [&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

mod log {
    use std::sync::atomic::{AtomicBool, Ordering};

    pub use ::log::warn;

    /// Said once per process: an app that overruns its Content-Length does
    /// it on every request.
    pub fn warning_once_app_overran() {
        static SAID: AtomicBool = AtomicBool::new(false);
        if !SAID.swap(true, Ordering::Relaxed) {
            ::log::warn!(
                "the app sent more bytes than its Content-Length header; the extra bytes were not sent"
            );
        }
    }
}

/// The `start_response` callable given to the app.
#[pyclass(module = "wsgi_bridge", name = "StartResponse")]
pub struct StartResponse {
    writer: ResponseWriter,
    /// The `write` callable it returns, kept: a bound method is a new object
    /// at every lookup, and this object serves many requests (see
    /// `RequestObjects` in call.rs). The method refers back to this object,
    /// so the server drops it before it leaves the object to the app
    /// ([`hand_over`](Self::hand_over)).
    write: Option<Py<PyAny>>,
    /// Whether `write` may be kept: not once the object is the app's.
    keep_write: bool,
}

impl StartResponse {
    pub fn new(writer: ResponseWriter) -> StartResponse {
        StartResponse {
            writer,
            write: None,
            keep_write: true,
        }
    }

    /// The writer of the request in progress.
    #[inline]
    pub(crate) fn writer_mut(&mut self) -> &mut ResponseWriter {
        &mut self.writer
    }

    /// Gets the object ready for another request, written by `writer`.
    #[inline]
    pub(crate) fn reset(&mut self, writer: ResponseWriter) {
        self.writer = writer;
    }

    /// The `write` callable kept by an earlier call, if any.
    pub fn kept_write(&self) -> Option<&Py<PyAny>> {
        self.write.as_ref()
    }

    /// The server lets go of this object while the app still holds it: the
    /// kept `write` goes, so that no cycle keeps the object alive once the
    /// app is done with it.
    pub fn hand_over(&mut self) {
        self.write = None;
        self.keep_write = false;
    }
}

#[pymethods]
impl StartResponse {
    // ANCHOR: start_response_call
    /// `start_response(status, response_headers, exc_info=None)` → `write`.
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        {
            let mut this = slf.borrow_mut();
            match exc_info.filter(|e| !e.is_none()) {
                Some(exc_info) if this.writer.headers_sent => {
                    // Too late to change the response: PEP 3333 says to
                    // re-raise the app's exception.
                    let value = exc_info.cast::<PyTuple>()?.get_item(1)?;
                    return Err(PyErr::from_value(value));
                }
                Some(_) => {}
                None if this.writer.head.is_some() => {
                    return Err(PyAssertionError::new_err(
                        "start_response() was called a second time without exc_info \
                         (PEP 3333 allows a second call only to report an error)",
                    ));
                }
                None => {}
            }
            let t = trace::start();
            let server_and_date = this.writer.rules.server_and_date;
            this.writer.head = Some(ResponseHead::check(status, headers, server_and_date)?);
            trace::end(t, "start_response");
            // The same `write` for every call: looked up once, then kept.
            if let Some(write) = &this.write {
                return Ok(write.bind(slf.py()).clone());
            }
        }
        let write = slf.getattr(intern!(slf.py(), "write"))?;
        let mut this = slf.borrow_mut();
        if this.keep_write {
            this.write = Some(write.clone().unbind());
        }
        Ok(write)
    }
    // ANCHOR_END: start_response_call

    // The kept `write` is a reference cycle: tell the garbage collector.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(write) = &self.write {
            visit.call(write)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.write = None;
    }

    /// The `write(data)` callable `start_response` returns, for apps written
    /// for the old imperative style. Sends at once.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = body_bytes(data)?;
        self.writer.write_body(py, bytes.as_bytes(), None, true)
    }
}

/// A body piece must be `bytes` (PEP 3333: "bytestrings"). The error says how
/// to fix the common mistake.
pub fn body_bytes<'a, 'py>(item: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyBytes>> {
    item.cast::<PyBytes>().map_err(|_| {
        let type_name = item
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        if item.is_instance_of::<PyString>() {
            PyTypeError::new_err(
                "the app's body contains a str; WSGI bodies are bytes: encode it, e.g. text.encode('utf-8')",
            )
        } else {
            PyTypeError::new_err(format!(
                "the app's body must be an iterable of bytes, but it contains a {type_name}"
            ))
        }
    })
}
