//! `wsgi.input`: the request body as a file-like object the app reads from.
//!
//! The body is read from the socket only when the app asks for it (a server
//! must not read a body nobody wants; an upload can be large), and never past
//! its end: bytes after it belong to the next pipelined request. The socket
//! is read with the GIL released, so other threads run Python meanwhile.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::conn::{ReadBuf, Stream};
use crate::http::chunked::ChunkedDecoder;
use crate::http::request::{BodyKind, HttpError};
use crate::http::response::CONTINUE;

pyo3::create_exception!(
    wsgi_bridge,
    BadRequestBody,
    PyOSError,
    "The request body could not be read: malformed chunked encoding, over the size limit, or the client went away."
);

/// How much decoded chunked body is produced per step.
const DECODE_STEP: usize = 64 * 1024;

enum BodyState {
    Length { remaining: u64 },
    Chunked(Box<ChunkedDecoder>),
    Done,
}

/// Reads one request body from the connection, whatever its framing.
pub struct BodyReader {
    stream: Arc<Stream>,
    /// Raw bytes from the socket not consumed yet (body, then pipelined requests).
    rbuf: ReadBuf,
    state: BodyState,
    /// Decoded chunked body waiting for the app (`decoded[decoded_pos..]`).
    decoded: Vec<u8>,
    decoded_pos: usize,
    received: u64,
    max_body: u64,
    /// `Expect: 100-continue` was asked and not answered yet.
    continue_pending: bool,
    /// Set once the final response head is on its way: from then on an
    /// interim `100 Continue` would corrupt the response.
    response_started: Arc<AtomicBool>,
    /// Why reading failed, for the status the server answers with.
    pub failure: Option<HttpError>,
    /// When the first read for the body began (see [`MIN_BODY_RATE`]).
    started: Option<std::time::Instant>,
}

/// A body must arrive at an average of at least this many bytes a second,
/// after a grace period of [`BODY_GRACE`]: Apache's `mod_reqtimeout`
/// (`body=20,MinRate=500`) rule, with a shorter grace. The socket's read
/// timeout alone is reset by every byte: a client sending one byte just
/// before each timeout would hold a thread (or a worker) for ever.
pub const MIN_BODY_RATE: u64 = 500;
/// How long a body may take before [`MIN_BODY_RATE`] applies.
pub const BODY_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The body broke the protocol (bad chunk, too large): answer with this status.
    Http(HttpError),
    /// The client closed the connection or stopped sending before the end.
    Io(io::Error),
}

impl BodyReader {
    pub fn new(
        stream: Arc<Stream>,
        rbuf: ReadBuf,
        kind: BodyKind,
        expect_continue: bool,
        max_body: u64,
        response_started: Arc<AtomicBool>,
    ) -> BodyReader {
        let state = match kind {
            BodyKind::Empty | BodyKind::Length(0) => BodyState::Done,
            BodyKind::Length(n) => BodyState::Length { remaining: n },
            BodyKind::Chunked => {
                BodyState::Chunked(Box::new(ChunkedDecoder::with_max_body(max_body)))
            }
        };
        let continue_pending = expect_continue && !matches!(state, BodyState::Done);
        BodyReader {
            stream,
            rbuf,
            state,
            decoded: Vec::new(),
            decoded_pos: 0,
            received: 0,
            max_body,
            continue_pending,
            response_started,
            failure: None,
            started: None,
        }
    }

    /// True when the whole body has been read (or there was none).
    pub fn is_complete(&self) -> bool {
        matches!(self.state, BodyState::Done) && self.decoded_pos >= self.decoded.len()
    }

    /// True if the client is still waiting for `100 Continue` before it sends
    /// the body: then the body will never come, and the connection cannot be
    /// reused unless it is closed.
    pub fn client_still_waiting(&self) -> bool {
        self.continue_pending && !self.is_complete()
    }

    /// Gives back the read buffer (the bytes of the next pipelined request).
    pub fn into_buffer(self) -> ReadBuf {
        self.rbuf
    }

    // ANCHOR: body_fill
    fn fill(&mut self) -> Result<(), BodyError> {
        if self.continue_pending {
            self.continue_pending = false;
            if !self.response_started.load(Ordering::Relaxed) {
                (&*self.stream).write_all(CONTINUE).map_err(BodyError::Io)?;
            }
        }
        let started = *self.started.get_or_insert_with(std::time::Instant::now);
        match self.rbuf.fill_from(&*self.stream) {
            Ok(0) => Err(BodyError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection before sending the whole request body",
            ))),
            Ok(_) if self.too_slow(started) => Err(BodyError::Http(HttpError::new(
                408,
                "request body arriving too slowly",
            ))),
            Ok(_) => Ok(()),
            Err(e) => Err(BodyError::Io(e)),
        }
    }

    /// The body has had [`BODY_GRACE`] plus a second per [`MIN_BODY_RATE`]
    /// bytes received, and is not complete.
    fn too_slow(&self, started: std::time::Instant) -> bool {
        let allowed = BODY_GRACE
            + std::time::Duration::from_secs_f64(
                (self.received + self.rbuf.len() as u64) as f64 / MIN_BODY_RATE as f64,
            );
        started.elapsed() > allowed
    }
    // ANCHOR_END: body_fill

    // ANCHOR: body_available
    /// The next body bytes available, reading the socket if none are
    /// buffered. An empty slice means the body has ended.
    fn available(&mut self) -> Result<&[u8], BodyError> {
        loop {
            match &mut self.state {
                BodyState::Done => {
                    return Ok(&self.decoded[self.decoded_pos.min(self.decoded.len())..]);
                }
                BodyState::Length { remaining } => {
                    if self.rbuf.is_empty() {
                        self.fill()?;
                        continue;
                    }
                    let n = (*remaining).min(self.rbuf.len() as u64) as usize;
                    return Ok(&self.rbuf.data()[..n]);
                }
                BodyState::Chunked(decoder) => {
                    if self.decoded_pos < self.decoded.len() {
                        return Ok(&self.decoded[self.decoded_pos..]);
                    }
                    self.decoded.clear();
                    self.decoded_pos = 0;
                    let progress = decoder
                        .decode(self.rbuf.data(), &mut self.decoded, DECODE_STEP)
                        .map_err(BodyError::Http)?;
                    self.rbuf.consume(progress.consumed);
                    self.received += progress.produced as u64;
                    if self.max_body > 0 && self.received > self.max_body {
                        return Err(BodyError::Http(HttpError {
                            status: 413,
                            reason: "request body larger than the server's limit",
                        }));
                    }
                    if progress.done {
                        self.state = BodyState::Done;
                    } else if progress.produced == 0 {
                        self.fill()?;
                    }
                }
            }
        }
    }
    // ANCHOR_END: body_available

    fn consume(&mut self, n: usize) {
        match &mut self.state {
            BodyState::Length { remaining } => {
                self.rbuf.consume(n);
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.state = BodyState::Done;
                }
            }
            BodyState::Chunked(_) | BodyState::Done => self.decoded_pos += n,
        }
    }

    /// Reads up to `limit` bytes (all that is left with `None`), blocking
    /// until that many arrived or the body ended, as a file's `read` does.
    pub fn read(&mut self, limit: Option<usize>) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        loop {
            let want = limit.map_or(usize::MAX, |l| l - out.len());
            if want == 0 {
                break;
            }
            let chunk = self.available()?;
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len().min(want);
            out.extend_from_slice(&chunk[..n]);
            self.consume(n);
        }
        Ok(out)
    }

    /// Reads one line, including its `\n`, or up to `limit` bytes.
    pub fn readline(&mut self, limit: Option<usize>) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        loop {
            let want = limit.map_or(usize::MAX, |l| l - out.len());
            if want == 0 {
                break;
            }
            let chunk = self.available()?;
            if chunk.is_empty() {
                break;
            }
            let window = &chunk[..chunk.len().min(want)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    out.extend_from_slice(&window[..=i]);
                    self.consume(i + 1);
                    break;
                }
                None => {
                    let n = window.len();
                    out.extend_from_slice(window);
                    self.consume(n);
                }
            }
        }
        Ok(out)
    }

    /// Reads and discards what the app left unread, so the connection can
    /// carry the next request. Gives up (the caller then closes) past
    /// `max_bytes`: reading a huge unwanted upload costs more than a new
    /// connection.
    pub fn discard_rest(&mut self, max_bytes: u64) -> bool {
        let mut discarded = 0u64;
        while !self.is_complete() {
            if self.client_still_waiting() {
                return false;
            }
            match self.available() {
                Ok(chunk) => {
                    let n = chunk.len();
                    self.consume(n);
                    discarded += n as u64;
                    if discarded > max_bytes {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }
}

/// The `wsgi.input` object the app sees.
#[pyclass(module = "wsgi_bridge", name = "Input")]
pub struct WsgiInput {
    /// `None` once the request is over (an app that kept a reference reads b"").
    pub reader: Option<BodyReader>,
}

/// `read(-1)`, `read(None)`: everything; `read(n)`: at most n bytes.
fn size_limit(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

impl WsgiInput {
    // ANCHOR: with_reader
    fn with_reader<F>(&mut self, py: Python<'_>, f: F) -> PyResult<Vec<u8>>
    where
        F: FnOnce(&mut BodyReader) -> Result<Vec<u8>, BodyError> + Send,
    {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(Vec::new());
        };
        // The socket may block: let other threads run Python meanwhile.
        let read = py.detach(|| {
            let t = crate::trace::start();
            let read = f(reader);
            crate::trace::end_io(t, "read");
            read
        });
        match read {
            Ok(bytes) => Ok(bytes),
            Err(BodyError::Http(e)) => {
                reader.failure = Some(e.clone());
                Err(BadRequestBody::new_err(format!(
                    "{} ({})",
                    e.reason, e.status
                )))
            }
            Err(BodyError::Io(e)) => {
                let (status, reason) = match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        (408, "timed out reading the request body")
                    }
                    _ => (400, "incomplete request body"),
                };
                reader.failure = Some(HttpError { status, reason });
                Err(BadRequestBody::new_err(format!("{reason}: {e}")))
            }
        }
    }
    // ANCHOR_END: with_reader
}

#[pymethods]
impl WsgiInput {
    #[pyo3(signature = (size = None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size_limit(size);
        let bytes = self.with_reader(py, |r| r.read(limit))?;
        Ok(PyBytes::new(py, &bytes))
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size_limit(size);
        let bytes = self.with_reader(py, |r| r.readline(limit))?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Lines until the end of the body, or until `hint` bytes were read.
    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = size_limit(hint).filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.with_reader(py, |r| r.readline(None))?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            lines.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.with_reader(py, |r| r.readline(None))?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }
}
