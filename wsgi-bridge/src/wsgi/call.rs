//! One call of the app: environ in, status, headers and body out.
//!
//! ```text
//! environ, start_response ──► app(environ, start_response) ──► iterable
//!                                                                 │ for each chunk
//!                         socket ◄── head + first chunk, then more ◄┘
//! ```
//!
//! The GIL is held for this whole function except while the socket is
//! read or written (`py.detach`), so in a threaded server other requests'
//! Python runs while this one waits on the network.

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::environ::{self, Peer, PeerStrings, ServerInfo};
use super::file_wrapper::FileWrapper;
use super::input::{BodyReader, WsgiInput};
use super::start_response::Protocol;
use super::start_response::{ResponseWriter, StartResponse, body_bytes};
use crate::conn::{ReadBuf, Stream};
use crate::embed::format_exception;
use crate::http::request::{BodyKind, RequestHead, Version};
use crate::uwsgi::UwsgiRequest;

/// An unread body up to this size is read and thrown away so the connection
/// can be reused; past it, closing is cheaper.
const MAX_DISCARD: u64 = 1024 * 1024;

/// The app, loaded in this process, with what the server says about itself.
pub struct WsgiApp {
    /// `wsgi.input` and `start_response` objects of earlier requests,
    /// ready for the next ones (see [`RequestObjects`]).
    spare: Mutex<Vec<RequestObjects>>,
    app: Py<PyAny>,
    /// The environ template of uwsgi requests (nginx sends the CGI
    /// variables: any of them may be missing)...
    template: Py<PyDict>,
    /// ... and the one of HTTP requests, with room for the variables every
    /// request sets.
    http_template: Py<PyDict>,
    pub info: ServerInfo,
    pub server_software: Arc<str>,
}

impl WsgiApp {
    pub fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        info: ServerInfo,
        server_software: &str,
    ) -> PyResult<WsgiApp> {
        let file_wrapper = py.get_type::<FileWrapper>();
        let template = environ::template(py, &info, file_wrapper.as_any())?.unbind();
        let http_template = environ::http_template(py, &info, file_wrapper.as_any())?.unbind();
        Ok(WsgiApp {
            spare: Mutex::new(Vec::new()),
            app,
            template,
            http_template,
            info,
            server_software: server_software.into(),
        })
    }
}

/// The two objects a request hands the app: `environ["wsgi.input"]` and
/// `start_response`.
///
/// Making two Python objects and freeing them again is a good part of what
/// the bridge costs on a small request, so they are reused, the way CPython
/// keeps free lists of its own small objects: when a request ends and the
/// server holds the only reference to them, they wait in [`WsgiApp`] for
/// the next request. An app that kept one (in a global, or in a generator
/// still alive) keeps it to itself; the next request gets new ones.
struct RequestObjects {
    input: Py<WsgiInput>,
    start_response: Py<StartResponse>,
}

/// Spare [`RequestObjects`] kept at most: more than the requests a process
/// has in flight at once.
const MAX_SPARE: usize = 64;

impl WsgiApp {
    /// The objects for one request: spare ones if there are any.
    fn request_objects<'py>(
        &self,
        py: Python<'py>,
        reader: BodyReader,
        writer: ResponseWriter,
    ) -> PyResult<(Bound<'py, WsgiInput>, Bound<'py, StartResponse>)> {
        let spare = self.spare.lock().ok().and_then(|mut spare| spare.pop());
        if let Some(RequestObjects {
            input,
            start_response,
        }) = spare
        {
            let (input, start_response) = (input.into_bound(py), start_response.into_bound(py));
            input.borrow_mut().reader = Some(reader);
            start_response.borrow_mut().writer = writer;
            return Ok((input, start_response));
        }
        let input = Bound::new(
            py,
            WsgiInput {
                reader: Some(reader),
            },
        )?;
        Ok((input, Bound::new(py, StartResponse::new(writer))?))
    }

    /// Keeps a request's objects for the next request, if nothing but the
    /// server refers to them any more (the body reader was taken already).
    fn recycle(&self, input: Bound<'_, WsgiInput>, start_response: Bound<'_, StartResponse>) {
        // SAFETY: reading the reference count of live objects, with the GIL.
        let refs = |obj: *mut pyo3::ffi::PyObject| unsafe { pyo3::ffi::Py_REFCNT(obj) };
        // The kept `write` holds one reference to `start_response`.
        let (write_refs, via_write) = match start_response.borrow().kept_write() {
            Some(write) => (refs(write.as_ptr()), 1),
            None => (1, 0),
        };
        let only_ours = refs(input.as_ptr()) == 1
            && refs(start_response.as_ptr()) == 1 + via_write
            && write_refs == 1;
        let mut sr = start_response.borrow_mut();
        let spare = self.spare.lock().ok();
        let Some(mut spare) = spare.filter(|s| only_ours && s.len() < MAX_SPARE) else {
            sr.hand_over();
            return;
        };
        sr.writer.release();
        drop(sr);
        spare.push(RequestObjects {
            input: input.unbind(),
            start_response: start_response.unbind(),
        });
    }
}

/// A request, as one of the two protocols delivered it.
#[derive(Clone, Copy)]
pub enum Request<'a> {
    /// Parsed from HTTP/1.1 by this server (stages 1 to 3).
    Http {
        head: &'a RequestHead,
        peer: &'a Peer,
        /// The same address as Python strings: the connection makes them
        /// at its first request and keeps them for the others.
        peer_strings: &'a PyOnceLock<PeerStrings>,
    },
    /// Already parsed by nginx, received as uwsgi variables (stage 4).
    Uwsgi(&'a UwsgiRequest),
}

impl Request<'_> {
    pub fn method(&self) -> &str {
        match self {
            Request::Http { head, .. } => &head.method,
            Request::Uwsgi(r) => r.method(),
        }
    }

    /// The target as the client sent it, for logs.
    pub fn target(&self) -> String {
        match self {
            Request::Http { head, .. } => head.target.clone(),
            Request::Uwsgi(r) => r.uri(),
        }
    }

    /// Who sent it, for logs.
    pub fn client(&self) -> String {
        match self {
            Request::Http { peer, .. } => format!("{}:{}", peer.addr, peer.port),
            Request::Uwsgi(r) => {
                let addr = r.var("REMOTE_ADDR").map(String::from_utf8_lossy);
                format!("{} (through the uwsgi socket)", addr.unwrap_or_default())
            }
        }
    }

    fn body(&self) -> BodyKind {
        match self {
            Request::Http { head, .. } => head.body,
            Request::Uwsgi(r) => r.body,
        }
    }

    fn expect_continue(&self) -> bool {
        // nginx answers `Expect: 100-continue` itself, before it forwards.
        matches!(self, Request::Http { head, .. } if head.expect_continue)
    }

    fn version(&self) -> Version {
        match self {
            Request::Http { head, .. } => head.version,
            Request::Uwsgi(r) => match r.var("SERVER_PROTOCOL") {
                Some(b"HTTP/1.0") => Version::Http10,
                _ => Version::Http11,
            },
        }
    }

    fn protocol(&self) -> Protocol {
        match self {
            Request::Http { .. } => Protocol::Http,
            Request::Uwsgi(_) => Protocol::Uwsgi,
        }
    }
}

/// What one request brings to the app.
pub struct Exchange<'a> {
    pub request: Request<'a>,
    pub stream: &'a Arc<Stream>,
    /// The bytes read after the request head (the body starts here).
    pub rbuf: ReadBuf,
    /// Whether the connection may stay open after this response.
    pub keep_alive_allowed: bool,
    pub max_body: u64,
}

/// How the exchange ended.
pub struct Outcome {
    pub status: u16,
    pub body_bytes: u64,
    /// The connection is in a clean state for the next request.
    pub keep_alive: bool,
    /// The client disconnected before the response was complete.
    pub client_gone: bool,
    /// The bytes read past this request (a pipelined next request).
    pub rbuf: ReadBuf,
}

/// Calls the app for one request and writes its response.
pub fn call_app(py: Python<'_>, app: &WsgiApp, ex: Exchange<'_>) -> Outcome {
    let rest = call_app_with_gil(py, app, ex);
    py.detach(|| rest.finish())
}

// ANCHOR: call_app_with_gil
/// The part of [`call_app`] that needs Python: environ, the app, its body.
/// What is left (see [`AfterApp`]) is for the caller to finish once it has
/// released the GIL, as `HttpConnection::serve_one` does.
pub fn call_app_with_gil<'a>(py: Python<'_>, app: &WsgiApp, ex: Exchange<'a>) -> AfterApp<'a> {
    let Exchange {
        request,
        stream,
        rbuf,
        keep_alive_allowed,
        max_body,
    } = ex;
    let response_started = Arc::new(AtomicBool::new(false));
    let reader = BodyReader::new(
        stream.clone(),
        rbuf,
        request.body(),
        request.expect_continue(),
        max_body,
        response_started.clone(),
    );
    let writer = ResponseWriter::new(
        stream.clone(),
        app.server_software.clone(),
        request.version(),
        request.method() == "HEAD",
        keep_alive_allowed,
        response_started,
        request.protocol(),
    );
    let (input, start_response) = match app.request_objects(py, reader, writer) {
        Ok(objects) => objects,
        Err(e) => {
            // Only an out-of-memory interpreter fails here.
            log::error!("cannot create the WSGI objects: {e}");
            return AfterApp {
                request,
                stream: stream.clone(),
                unsent: Vec::new(),
                reader: None,
                status: 500,
                body_bytes: 0,
                must_close: true,
                client_gone: None,
            };
        }
    };

    let result = run_app(py, app, &request, &input, &start_response);

    let reader = input
        .borrow_mut()
        .reader
        .take()
        .expect("the body reader is only taken here");
    let mut sr = start_response.borrow_mut();
    let writer = &mut sr.writer;
    // ANCHOR: app_errors
    match result {
        Ok(()) => {
            // The response is complete in the buffer; `AfterApp::finish`
            // writes it.
            if let Err(e) = writer.end_body() {
                // end_body() fails only when no start_response was ever called.
                report_app_error(py, &request, &e);
                writer.send_error(py, 500, "Internal Server Error");
            }
        }
        Err(e) => {
            if let Some(failure) = reader.failure.clone() {
                // The body was bad (or the client stopped sending): not the
                // app's fault, and worth one line, not a traceback.
                log::info!(
                    "request {} {} from {}: {} ({})",
                    request.method(),
                    request.target(),
                    request.client(),
                    failure.reason,
                    failure.status
                );
                if writer.headers_sent {
                    writer.abort(py);
                } else {
                    writer.send_error(py, failure.status, failure.reason);
                }
            } else if writer.client_gone.is_none() {
                report_app_error(py, &request, &e);
                if writer.headers_sent {
                    // The client has the head and part of the body: the
                    // only honest signal left is to cut the connection.
                    writer.abort(py);
                } else {
                    writer.send_error(py, 500, "Internal Server Error");
                }
            }
        }
    }
    // ANCHOR_END: app_errors
    let rest = AfterApp {
        request,
        stream: stream.clone(),
        unsent: writer.take_unsent(),
        reader: Some(reader),
        status: writer.status_code().unwrap_or(500),
        body_bytes: writer.body_bytes,
        must_close: writer.must_close,
        client_gone: writer.client_gone.take(),
    };
    drop(sr);
    app.recycle(input, start_response);
    rest
}
// ANCHOR_END: call_app_with_gil

// ANCHOR: after_app
/// What is left of an exchange once the app is done: the last buffered
/// bytes of the response, and the unread rest of the request body. None of
/// it touches Python, so it runs after the GIL is released. For a small
/// response this is the only write: the GIL is taken once per request
/// instead of three times (call, write, discard), and in a threaded server
/// the next request's Python runs while this one's bytes go out.
pub struct AfterApp<'a> {
    request: Request<'a>,
    stream: Arc<Stream>,
    unsent: Vec<u8>,
    /// `None` when the request never got a body reader (out of memory).
    reader: Option<BodyReader>,
    status: u16,
    body_bytes: u64,
    must_close: bool,
    client_gone: Option<std::io::Error>,
}

impl AfterApp<'_> {
    /// Writes what is left of the response, then reads and drops what is
    /// left of the request body. Call it without the GIL.
    pub fn finish(mut self) -> Outcome {
        if !self.unsent.is_empty()
            && self.client_gone.is_none()
            && let Err(e) = (&*self.stream).write_all(&self.unsent)
        {
            self.must_close = true;
            self.client_gone = Some(e);
        }
        if let Some(e) = &self.client_gone {
            log::info!(
                "client {} went away during the response to {} {} ({e})",
                self.request.client(),
                self.request.method(),
                self.request.target()
            );
        }
        let Some(mut reader) = self.reader else {
            return Outcome {
                status: self.status,
                body_bytes: self.body_bytes,
                keep_alive: false,
                client_gone: self.client_gone.is_some(),
                rbuf: ReadBuf::new(),
            };
        };
        // ANCHOR: discard_rest
        // The next request on this connection starts after this one's body.
        let body_done = !self.must_close && reader.discard_rest(MAX_DISCARD);
        Outcome {
            status: self.status,
            body_bytes: self.body_bytes,
            keep_alive: body_done && !self.must_close && self.client_gone.is_none(),
            client_gone: self.client_gone.is_some(),
            rbuf: reader.into_buffer(),
        }
        // ANCHOR_END: discard_rest
    }
}
// ANCHOR_END: after_app

fn report_app_error(py: Python<'_>, request: &Request<'_>, err: &PyErr) {
    log::error!(
        "Error handling request {}\n{}",
        request.target(),
        format_exception(py, err).trim_end()
    );
}

// ANCHOR: run_app
/// Builds environ, calls the app and sends each chunk of its body. The
/// iterable's `close()` is called however this ends (PEP 3333: it is how
/// apps release resources, and frameworks rely on it).
fn run_app(
    py: Python<'_>,
    app: &WsgiApp,
    request: &Request<'_>,
    input: &Bound<'_, WsgiInput>,
    start_response: &Bound<'_, StartResponse>,
) -> PyResult<()> {
    let environ = match request {
        Request::Http {
            head,
            peer,
            peer_strings,
        } => environ::build_for(
            py,
            app.http_template.bind(py),
            head,
            peer_strings.get_or_init(py, || PeerStrings::new(py, peer)),
            &app.info.script_name,
            input.as_any(),
        )?,
        Request::Uwsgi(packet) => {
            environ::build_from_vars(py, app.template.bind(py), packet, input.as_any())?
        }
    };
    let iterable = app.app.bind(py).call1((environ, start_response))?;
    let sent = send_body(py, &iterable, start_response);
    // A plain list or tuple has no close(); asking would raise (and catch)
    // an AttributeError on every request, which costs more than the call.
    let has_close =
        !iterable.is_exact_instance_of::<PyList>() && !iterable.is_exact_instance_of::<PyTuple>();
    let closed = match has_close.then(|| iterable.getattr_opt(pyo3::intern!(py, "close"))) {
        Some(Ok(Some(close))) => close.call0().map(drop),
        _ => Ok(()),
    };
    sent.and(closed)
}
// ANCHOR_END: run_app

// ANCHOR: send_body
/// Sends the body. A list or tuple of bytes has a known total length, so the
/// response gets a Content-Length and stays cheap to reuse; anything else is
/// streamed, each chunk written as soon as the app yields it.
fn send_body(
    py: Python<'_>,
    iterable: &Bound<'_, PyAny>,
    start_response: &Bound<'_, StartResponse>,
) -> PyResult<()> {
    if let Ok(list) = iterable.cast::<PyList>() {
        // Each item is held here, not looked up in the list as it goes: a
        // write releases the GIL, and another thread could change the list
        // meanwhile. (A body of one item, the usual case, needs no Vec.)
        return if list.len() == 1 {
            send_items(py, &[list.get_item(0)?], start_response)
        } else {
            send_items(py, &list.iter().collect::<Vec<_>>(), start_response)
        };
    }
    if let Ok(tuple) = iterable.cast::<PyTuple>() {
        return send_items(py, tuple.as_slice(), start_response);
    }
    for item in iterable.try_iter()? {
        let item = item?;
        let bytes = body_bytes(&item)?;
        // Empty chunks before the head do not send it: the app may still call
        // start_response again (with exc_info) until real data goes out.
        let mut sr = start_response.borrow_mut();
        if bytes.as_bytes().is_empty() && !sr.writer.headers_sent {
            continue;
        }
        sr.writer.write_body(py, bytes.as_bytes(), None, true)?;
        if sr.writer.client_gone.is_some() {
            break;
        }
    }
    Ok(())
}

/// Sends a body whose pieces are all known: its length is their sum.
fn send_items(
    py: Python<'_>,
    items: &[Bound<'_, PyAny>],
    start_response: &Bound<'_, StartResponse>,
) -> PyResult<()> {
    let mut total = 0u64;
    for item in items {
        total += body_bytes(item)?.as_bytes().len() as u64;
    }
    for item in items {
        let bytes = body_bytes(item)?;
        let mut sr = start_response.borrow_mut();
        sr.writer
            .write_body(py, bytes.as_bytes(), Some(total), false)?;
        if sr.writer.client_gone.is_some() {
            break;
        }
    }
    Ok(())
}
// ANCHOR_END: send_body
