//! One call of the app: environ in, status, headers and body out.
//!
//! ```text
//! environ, start_response ──► app(environ, start_response) ──► iterable
//!                                                                 │ for each chunk
//!                         socket ◄── head + first chunk, then more ◄┘
//! ```
//!
//! [`call_app`] is the request path of every stage and both protocols: the
//! protocol only answers the questions of [`Request`]. The GIL is taken
//! once per request, for environ, the app and its body, and released
//! whenever the socket is read or written (`py.detach`), so in a threaded
//! server other requests' Python runs while this one waits on the network.
//!
//! (The generic path is compiled where it is used, in stage 4's crate for
//! uwsgi; the small helpers it calls are `#[inline]` so that the compiler
//! may inline them there too, as it did when the path was not generic.)

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::environ::{self, ServerInfo};
use super::file_wrapper::FileWrapper;
use super::input::{BodyReader, WsgiInput};
use super::request::Request;
use super::response_head::ResponseHead;
use super::start_response::{ResponseRest, ResponseWriter, StartResponse, body_bytes};
use crate::conn::{ReadBuf, Stream};
use crate::embed::format_exception;
use crate::hooks::RequestHooks;
use crate::trace;

/// An unread body up to this size is read and thrown away so the connection
/// can be reused; past it, closing is cheaper.
const MAX_DISCARD: u64 = 1024 * 1024;

/// The app, loaded in this process, with what the server says about itself.
pub struct WsgiApp {
    /// `wsgi.input` and `start_response` objects of earlier requests,
    /// ready for the next ones (see [`RequestObjects`]).
    spare: Mutex<Vec<RequestObjects>>,
    app: Py<PyAny>,
    /// The environ template: the keys every request shares...
    template: Py<PyDict>,
    /// ... and the one of HTTP requests, with room for the variables every
    /// request sets.
    http_template: Py<PyDict>,
    pub info: ServerInfo,
    pub server_software: Arc<str>,
    /// Proxies whose forwarded headers are believed (`--forwarded-allow-ips`).
    forwarded: Option<super::forwarded::Forwarded>,
    /// Python code to run around each request (stage 3's `pre_request`
    /// and `post_request` hooks), if the server has any.
    request_hooks: Option<Arc<dyn RequestHooks>>,
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
            forwarded: None,
            request_hooks: None,
        })
    }

    /// The environ template: the keys every request shares, whatever its
    /// protocol ([`environ::template`]).
    #[inline]
    pub fn template<'a, 'py>(&'a self, py: Python<'py>) -> &'a Bound<'py, PyDict> {
        self.template.bind(py)
    }

    /// The template of HTTP requests ([`environ::http_template`]).
    #[inline]
    pub(crate) fn http_template<'a, 'py>(&'a self, py: Python<'py>) -> &'a Bound<'py, PyDict> {
        self.http_template.bind(py)
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
    /// Believes the forwarded headers of these proxies (their scheme, and
    /// with `proxy_headers` the client's address).
    pub fn trust_proxies(&mut self, forwarded: super::forwarded::Forwarded) {
        self.forwarded = Some(forwarded);
    }

    pub fn forwarded(&self) -> Option<&super::forwarded::Forwarded> {
        self.forwarded.as_ref()
    }

    /// Runs `hooks` around every request (see [`RequestHooks`]).
    pub fn set_request_hooks(&mut self, hooks: Arc<dyn RequestHooks>) {
        self.request_hooks = Some(hooks);
    }
}

impl WsgiApp {
    /// The objects for one request: spare ones if there are any.
    #[inline]
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
            start_response.borrow_mut().reset(writer);
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
    #[inline]
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
        sr.writer_mut().release();
        drop(sr);
        spare.push(RequestObjects {
            input: input.unbind(),
            start_response: start_response.unbind(),
        });
    }
}

/// What one request brings to the app.
pub struct Exchange<'a, R> {
    pub request: &'a R,
    pub stream: &'a Arc<Stream>,
    /// The bytes read after the request head (the body starts here).
    pub rbuf: ReadBuf,
    /// The server is willing to reuse the connection (the request and the
    /// response have their say too).
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

// ANCHOR: call_app
/// Calls the app for one request and writes its response: the request path
/// of every stage, whatever the protocol. The GIL is taken once, for the
/// app; the last bytes of the response are written, and an unread body
/// dropped, after it is released.
pub fn call_app<R: Request>(app: &WsgiApp, ex: Exchange<'_, R>) -> Outcome {
    // With `--trace`: when the GIL was asked for, got, and let go.
    let asked = trace::start();
    let mut rest = Python::attach(|py| {
        let held = trace::got_gil(asked);
        let rest = call_app_with_gil(py, app, ex);
        trace::release_gil(held);
        rest
    });
    let hooked = rest.hooked.take();
    let outcome = rest.finish();
    // gunicorn's post_request runs once the response is out: with the GIL
    // again, but only for a server that has the hook.
    if let (Some(hooks), Some(hooked)) = (&app.request_hooks, hooked) {
        let Hooked { req, environ, head } = hooked;
        Python::attach(|py| {
            let (status, sent) = (outcome.status, outcome.body_bytes);
            hooks.after(py, req, environ, status, sent, head.as_ref());
        });
    }
    outcome
}
// ANCHOR_END: call_app

// ANCHOR: call_app_with_gil
/// The part of [`call_app`] that needs Python: environ, the app, its body.
/// What is left (see [`AfterApp`]) is finished once the GIL is released.
fn call_app_with_gil<'a, R: Request>(
    py: Python<'_>,
    app: &WsgiApp,
    ex: Exchange<'a, R>,
) -> AfterApp<'a, R> {
    let (request, stream) = (ex.request, ex.stream.clone());
    let t = trace::start();
    let objects = wsgi_objects(py, app, ex);
    trace::end(t, "objects");
    let (input, start_response) = match objects {
        Ok(objects) => objects,
        Err(e) => {
            // Only an out-of-memory interpreter fails here.
            log::error!("cannot create the WSGI objects: {e}");
            return AfterApp::failed(request, stream);
        }
    };

    let mut hooked = None;
    let result = run_app(py, app, request, &input, &start_response, &mut hooked);

    let reader = input.borrow_mut().reader.take();
    let reader = reader.expect("the body reader is only taken here");
    let response = {
        let mut sr = start_response.borrow_mut();
        let writer = sr.writer_mut();
        let t = trace::start();
        complete_response(py, request, result, &reader, writer);
        trace::end(t, "head");
        let rest = writer.take_rest();
        // Only a request with hooks keeps the head, for their `after`.
        if let Some(hooked) = &mut hooked {
            hooked.head = writer.take_head();
        }
        rest
    };
    app.recycle(input, start_response);
    AfterApp {
        request,
        stream,
        response,
        reader: Some(reader),
        hooked,
    }
}
// ANCHOR_END: call_app_with_gil

/// `wsgi.input` and `start_response` for a request: its body reader and its
/// response writer, sharing its socket and a flag (once the response has
/// started, an `Expect: 100-continue` must not be answered any more).
fn wsgi_objects<'py, R: Request>(
    py: Python<'py>,
    app: &WsgiApp,
    ex: Exchange<'_, R>,
) -> PyResult<(Bound<'py, WsgiInput>, Bound<'py, StartResponse>)> {
    let request = ex.request;
    let response_started = Arc::new(AtomicBool::new(false));
    let reader = BodyReader::new(
        ex.stream.clone(),
        ex.rbuf,
        request.body(),
        request.expect_continue(),
        ex.max_body,
        response_started.clone(),
    );
    let writer = ResponseWriter::new(
        ex.stream.clone(),
        app.server_software.clone(),
        request.version(),
        request.method() == "HEAD",
        ex.keep_alive_allowed && request.keep_alive(),
        response_started,
        R::RESPONSE,
    );
    app.request_objects(py, reader, writer)
}

/// Completes the response after the app returned or raised: the app's
/// response if it finished, an error response if nothing was sent yet, a
/// cut connection if something was.
fn complete_response<R: Request>(
    py: Python<'_>,
    request: &R,
    result: PyResult<()>,
    reader: &BodyReader,
    writer: &mut ResponseWriter,
) {
    // ANCHOR: app_errors
    match result {
        Ok(()) => {
            // The response is complete in the buffer; `AfterApp::finish`
            // writes it.
            if let Err(e) = writer.end_body() {
                // end_body() fails only when no start_response was ever called.
                report_app_error(py, request, &e);
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
                if writer.headers_sent() {
                    writer.abort(py);
                } else {
                    writer.send_error(py, failure.status, failure.reason);
                }
            } else if !writer.client_gone() {
                report_app_error(py, request, &e);
                if writer.headers_sent() {
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
}

// ANCHOR: after_app
/// What is left of an exchange once the app is done: the last buffered
/// bytes of the response, and the unread rest of the request body. None of
/// it touches Python, so it runs after the GIL is released. For a small
/// response this is the only write: the GIL is taken once per request
/// instead of three times (call, write, discard), and in a threaded server
/// the next request's Python runs while this one's bytes go out.
struct AfterApp<'a, R> {
    request: &'a R,
    stream: Arc<Stream>,
    response: ResponseRest,
    /// `None` when the request never got a body reader (out of memory).
    reader: Option<BodyReader>,
    /// What the request hooks' `before` returned, and the environ, for
    /// their `after`.
    hooked: Option<Hooked>,
}

/// What [`RequestHooks::before`] returned, the request's environ, and the
/// response's head once it is complete: what their `after` gets.
struct Hooked {
    req: Py<PyAny>,
    environ: Py<PyDict>,
    head: Option<ResponseHead>,
}

impl<R: Request> AfterApp<'_, R> {
    /// Writes what is left of the response, then reads and drops what is
    /// left of the request body. Call it without the GIL.
    fn finish(self) -> Outcome {
        let mut response = self.response;
        if !response.unsent.is_empty() && response.client_gone.is_none() {
            let t = trace::start();
            if let Err(e) = (&*self.stream).write_all(&response.unsent) {
                response.must_close = true;
                response.client_gone = Some(e);
            }
            trace::end_io(t, "write");
        }
        if let Some(e) = &response.client_gone {
            log::info!(
                "client {} went away during the response to {} {} ({e})",
                self.request.client(),
                self.request.method(),
                self.request.target()
            );
        }
        let client_gone = response.client_gone.is_some();
        // ANCHOR: discard_rest
        // The next request on this connection starts after this one's body.
        let must_close = response.must_close;
        let (body_done, rbuf) = match self.reader {
            Some(mut reader) => {
                let done = !must_close && reader.discard_rest(MAX_DISCARD);
                (done, reader.into_buffer())
            }
            None => (false, ReadBuf::new()),
        };
        Outcome {
            status: response.status,
            body_bytes: response.body_bytes,
            keep_alive: body_done && !must_close && !client_gone,
            client_gone,
            rbuf,
        }
        // ANCHOR_END: discard_rest
    }
}
// ANCHOR_END: after_app

impl<'a, R> AfterApp<'a, R> {
    /// The request never reached the app: a 500 in the log, nothing sent,
    /// the connection closed.
    fn failed(request: &'a R, stream: Arc<Stream>) -> AfterApp<'a, R> {
        let response = ResponseRest {
            unsent: Vec::new(),
            status: 500,
            body_bytes: 0,
            must_close: true,
            client_gone: None,
        };
        AfterApp {
            request,
            stream,
            response,
            reader: None,
            hooked: None,
        }
    }
}

fn report_app_error(py: Python<'_>, request: &impl Request, err: &PyErr) {
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
    request: &impl Request,
    input: &Bound<'_, WsgiInput>,
    start_response: &Bound<'_, StartResponse>,
    hooked: &mut Option<Hooked>,
) -> PyResult<()> {
    let t = trace::start();
    let environ = request.environ(py, app, input.as_any())?;
    trace::end(t, "environ");
    if let Some(hooks) = &app.request_hooks {
        let req = hooks.before(py, &environ)?;
        *hooked = Some(Hooked {
            req,
            environ: environ.clone().unbind(),
            head: None,
        });
    }
    let t = trace::start();
    let iterable = app.app.bind(py).call1((environ, start_response))?;
    trace::end(t, "app");
    let t = trace::start();
    let sent = send_body(py, &iterable, start_response);
    trace::end(t, "body");
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
#[inline]
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
        let writer = sr.writer_mut();
        if bytes.as_bytes().is_empty() && !writer.headers_sent() {
            continue;
        }
        writer.write_body(py, bytes.as_bytes(), None, true)?;
        if writer.client_gone() {
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
        let writer = sr.writer_mut();
        writer.write_body(py, bytes.as_bytes(), Some(total), false)?;
        if writer.client_gone() {
            break;
        }
    }
    Ok(())
}
// ANCHOR_END: send_body
