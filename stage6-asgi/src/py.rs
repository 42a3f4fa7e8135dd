//! The Python side: the asyncio loop's thread.
//!
//! Everything here runs on the one thread that runs the asyncio loop, with
//! the GIL held (the loop gives it up only inside `select`). The loop wakes
//! up when the I/O thread writes the inbox's eventfd; [`Drain`] takes every
//! event queued since, builds scopes, calls the app, resolves waiting
//! `receive()`/`send()` futures.
//!
//! An app call is an [`AsgiCall`]: it holds the app's coroutine and steps it
//! with `PyIter_Send` (the C form of `coro.send(None)`). The first step runs
//! at once, inside the drain callback: a coroutine that never really
//! suspends (hello: `await send(...)` completes immediately) runs to its end
//! there, without a Task and without a trip through the loop. Only when it
//! yields an asyncio future that is not done does it become an asyncio
//! `Task`, which drives the same `AsgiCall` (it looks like a coroutine to
//! asyncio: `send`, `throw`, `close`, `__await__`) from then on. This is
//! Python 3.12's eager task start, done by hand so that it works on 3.11.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http_codec::request::{RequestHead, Version};
use http_codec::response::{
    LAST_CHUNK, is_hop_by_hop, push_chunk_size, push_decimal, push_http_date, status_forbids_body,
};
use http_codec::token::is_tchar;
use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::shared::{
    Event, Exchange, Inbox, Kind, RecvWait, SEND_HIGH_WATER, SEND_LOW_WATER, STATS, Start, WsIn,
    WsOut,
};
use wsgi_bridge::hooks::WorkerHooks;

/// How the first step of an app's coroutine is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Eager {
    /// `coro.send(None)` from Rust, in a fresh contextvars context, no Task
    /// unless the coroutine really suspends (fastest; `asyncio.current_task()`
    /// is None until the first suspension).
    Bare,
    /// An asyncio Task is created first and its first step run at once
    /// (Python 3.12's eager tasks; on 3.11 by running the step the Task just
    /// scheduled): libraries that need a current task from the first line
    /// (anyio, `asyncio.timeout`) work.
    Task,
}

/// What the Python side needs to know, fixed for the life of the loop.
pub struct PyConfig {
    pub root_path: String,
    pub server: Option<(String, u16)>,
    pub eager: Eager,
    pub slow_step: Duration,
    pub server_header: String,
}

/// The Python thread's state: set in [`install`], read by the callbacks.
pub struct PyCtx {
    pub app: Py<PyAny>,
    pub event_loop: Py<PyAny>,
    pub inbox: Arc<Inbox>,
    pub state: Py<PyDict>,
    pub http_template: Py<PyDict>,
    pub ws_template: Py<PyDict>,
    pub config: PyConfig,
    pub hooks: &'static dyn WorkerHooks,
    /// Calls waiting on a `receive()` or `send()` future, by exchange id.
    pub waiting: RefCell<HashMap<u64, Py<AsgiCall>>>,
    pub disconnected_exc: Py<PyAny>,
    pub task_type: Py<PyAny>,
    /// `{"loop": event_loop}`, the keyword arguments of every Task.
    pub task_kwargs: Py<PyDict>,
    /// A [`CallSoon`], if the loop lets us shadow its `call_soon`.
    pub call_soon: Option<Py<PyAny>>,
    pub stop_io: Arc<tokio::sync::Notify>,
    pub stop_asked: std::cell::Cell<bool>,
}

thread_local! {
    static CTX: RefCell<Option<Rc>> = const { RefCell::new(None) };
}
type Rc = std::rc::Rc<PyCtx>;

pub fn install(ctx: PyCtx) {
    CTX.with(|c| *c.borrow_mut() = Some(std::rc::Rc::new(ctx)));
}

pub fn uninstall() -> Option<Rc> {
    CTX.with(|c| c.borrow_mut().take())
}

fn ctx() -> Rc {
    CTX.with(|c| c.borrow().clone())
        .expect("the stage 6 loop is running")
}

/// Builds the constant part of every scope once; each request copies it.
pub fn templates(py: Python<'_>, config: &PyConfig) -> PyResult<(Py<PyDict>, Py<PyDict>)> {
    let asgi = PyDict::new(py);
    asgi.set_item("version", "3.0")?;
    asgi.set_item("spec_version", "2.4")?;
    let server: Bound<'_, PyAny> = match &config.server {
        Some((host, port)) => (host.as_str(), *port).into_pyobject(py)?.into_any(),
        None => py.None().into_bound(py),
    };
    let make = |kind: &str, scheme: &str| -> PyResult<Py<PyDict>> {
        let d = PyDict::new(py);
        d.set_item(intern!(py, "type"), kind)?;
        d.set_item(intern!(py, "asgi"), &asgi)?;
        d.set_item(intern!(py, "scheme"), scheme)?;
        d.set_item(intern!(py, "root_path"), config.root_path.as_str())?;
        d.set_item(intern!(py, "server"), &server)?;
        Ok(d.unbind())
    };
    Ok((make("http", "http")?, make("websocket", "ws")?))
}

// ---------------------------------------------------------------------------
// The drain callback: the loop's reader on the eventfd.

/// `loop.add_reader(inbox_fd, Drain())`: called by the loop when the I/O
/// thread has queued events.
#[pyclass(module = "stage6_asgi", frozen)]
pub struct Drain;

#[pymethods]
impl Drain {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        STATS.py_wakeups.fetch_add(1, Ordering::Relaxed);
        let ctx = ctx();
        let mut events = Vec::new();
        ctx.inbox.take(&mut events);
        STATS
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        for event in events {
            match event {
                Event::Start(start) => start_call(py, &ctx, *start),
                Event::Wake(id) => {
                    let call = ctx.waiting.borrow_mut().remove(&id);
                    if let Some(call) = call {
                        AsgiCall::wake(call.bind(py), &ctx);
                    }
                }
                Event::Drained => {
                    ctx.event_loop.bind(py).call_method0(intern!(py, "stop"))?;
                }
                Event::StopRequested => {}
            }
        }
        Ok(())
    }
}

/// `loop.call_later(interval, Beat(...))`: the heartbeat, sent from the
/// loop itself, so a loop blocked by the app stops beating.
#[pyclass(module = "stage6_asgi", frozen)]
pub struct Beat {
    pub interval: f64,
}

#[pymethods]
impl Beat {
    fn __call__(slf: Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let ctx = ctx();
        ctx.hooks.heartbeat();
        if ctx.hooks.should_stop() {
            ask_stop(&ctx);
        }
        let interval = slf.get().interval;
        ctx.event_loop
            .bind(py)
            .call_method1(intern!(py, "call_later"), (interval, slf))?;
        Ok(())
    }
}

/// Asks the I/O thread to stop accepting (once).
fn ask_stop(ctx: &PyCtx) {
    if !ctx.stop_asked.replace(true) {
        ctx.stop_io.notify_one();
    }
}

/// Counts a turn of the loop (installed around the selector's `select`
/// with `--stats`).
#[pyfunction]
pub fn count_turn() {
    STATS.loop_turns.fetch_add(1, Ordering::Relaxed);
}

/// Logs a Python logging record with the server's logger.
#[pyfunction]
pub fn rust_log(level: i32, message: &str) {
    match level {
        l if l >= 40 => log::error!("{message}"),
        l if l >= 30 => log::warn!("{message}"),
        l if l >= 20 => log::info!("{message}"),
        _ => log::debug!("{message}"),
    }
}

// ---------------------------------------------------------------------------
// Scopes.

fn build_scope<'py>(py: Python<'py>, ctx: &PyCtx, start: &Start) -> PyResult<Bound<'py, PyDict>> {
    let head = &start.head;
    let template = match start.kind {
        Kind::Http => ctx.http_template.bind(py),
        Kind::WebSocket => ctx.ws_template.bind(py),
    };
    let scope = template.copy()?;
    let version = match head.version {
        Version::Http11 => intern!(py, "1.1"),
        Version::Http10 => intern!(py, "1.0"),
    };
    scope.set_item(intern!(py, "http_version"), version)?;
    if start.kind == Kind::Http {
        let method = match head.method.as_str() {
            "GET" => intern!(py, "GET").clone(),
            "POST" => intern!(py, "POST").clone(),
            "HEAD" => intern!(py, "HEAD").clone(),
            other => PyString::new(py, other),
        };
        scope.set_item(intern!(py, "method"), method)?;
    }
    let path = String::from_utf8_lossy(&head.path);
    scope.set_item(intern!(py, "path"), path.as_ref())?;
    scope.set_item(
        intern!(py, "raw_path"),
        PyBytes::new(py, raw_path(&head.target)),
    )?;
    scope.set_item(
        intern!(py, "query_string"),
        PyBytes::new(py, head.query.as_bytes()),
    )?;
    let headers = PyList::empty(py);
    let mut lower = Vec::with_capacity(32);
    for (name, value) in &head.headers {
        lower.clear();
        lower.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        let pair = PyTuple::new(py, [PyBytes::new(py, &lower), PyBytes::new(py, value)])?;
        headers.append(pair)?;
    }
    scope.set_item(intern!(py, "headers"), headers)?;
    let client = (client_host(py, start.client.ip()), start.client.port());
    scope.set_item(intern!(py, "client"), client)?;
    scope.set_item(intern!(py, "state"), ctx.state.bind(py).copy()?)?;
    if start.kind == Kind::WebSocket {
        let protocols = PyList::empty(py);
        for (name, value) in &head.headers {
            if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                for p in String::from_utf8_lossy(value).split(',') {
                    let p = p.trim();
                    if !p.is_empty() {
                        protocols.append(p)?;
                    }
                }
            }
        }
        scope.set_item(intern!(py, "subprotocols"), protocols)?;
    }
    Ok(scope)
}

/// The client's address as a Python str; the last one is kept (most
/// requests come from the same few addresses: a proxy, a load generator).
fn client_host(py: Python<'_>, ip: std::net::IpAddr) -> Bound<'_, PyString> {
    thread_local! {
        static LAST: RefCell<Option<(std::net::IpAddr, Py<PyString>)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((cached, s)) = last.as_ref()
            && *cached == ip
        {
            return s.bind(py).clone();
        }
        let s = PyString::new(py, &ip.to_string());
        *last = Some((ip, s.clone().unbind()));
        s
    })
}

/// The path part of a request target, still percent-encoded: `raw_path`.
/// For an absolute-form target (`http://host/p?q`), its path (`/` if empty).
pub fn raw_path(target: &str) -> &[u8] {
    let mut t = target;
    if !t.starts_with('/')
        && t != "*"
        && let Some(i) = t.find("://")
    {
        let rest = &t[i + 3..];
        t = rest.find('/').map_or("/", |j| &rest[j..]);
        if t == "/" && !rest.contains('/') {
            return b"/";
        }
    }
    let end = t.find(['?', '#']).unwrap_or(t.len());
    let p = &t[..end];
    if p.is_empty() { b"/" } else { p.as_bytes() }
}

// ---------------------------------------------------------------------------
// Starting a call.

fn start_call(py: Python<'_>, ctx: &PyCtx, start: Start) {
    STATS.requests.fetch_add(1, Ordering::Relaxed);
    ctx.hooks.request_started();
    let exchange = start.exchange.clone();
    let call = AsgiCall::new(&start);
    let call = match Bound::new(py, call) {
        Ok(c) => c,
        Err(e) => {
            e.print(py);
            return;
        }
    };
    let coro = (|| -> PyResult<Bound<'_, PyAny>> {
        let scope = build_scope(py, ctx, &start)?;
        let receive = Bound::new(
            py,
            Receive {
                call: call.clone().unbind(),
            },
        )?;
        let send = Bound::new(
            py,
            Send {
                call: call.clone().unbind(),
            },
        )?;
        ctx.app.bind(py).call1((scope, receive, send))
    })();
    let coro = match coro {
        Ok(c) => c,
        Err(e) => {
            AsgiCall::finish(&call, ctx, Some(e));
            return;
        }
    };
    if !coro.hasattr(intern!(py, "send")).unwrap_or(false) {
        let e = PyTypeError::new_err(format!(
            "the app returned {} instead of a coroutine: is it an ASGI 3 app (async def app(scope, receive, send))?",
            coro.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ));
        AsgiCall::finish(&call, ctx, Some(e));
        return;
    }
    call.borrow_mut().coro = Some(coro.unbind());
    let _ = exchange;
    match ctx.config.eager {
        Eager::Bare => start_bare(py, ctx, &call),
        Eager::Task => start_task(py, ctx, &call),
    }
}

/// The first step from Rust, in a context of its own (a Task copies the
/// context it is created in; without one, a ContextVar set by one request
/// would be seen by the next).
fn start_bare(py: Python<'_>, ctx: &PyCtx, call: &Bound<'_, AsgiCall>) {
    // SAFETY: plain CPython context API calls with the GIL held; the new
    // context is entered and exited around the step, and owned by `context`.
    let context = unsafe {
        let c = ffi::PyContext_CopyCurrent();
        if c.is_null() {
            PyErr::fetch(py).print(py);
            return;
        }
        Bound::from_owned_ptr(py, c)
    };
    // SAFETY: as above.
    unsafe { ffi::PyContext_Enter(context.as_ptr()) };
    let step = AsgiCall::step(call, ctx, StepInput::Send(py.None().into_bound(py)));
    // SAFETY: as above: the context entered just before.
    unsafe { ffi::PyContext_Exit(context.as_ptr()) };
    match step {
        Step::Done => {
            STATS.eager_done.fetch_add(1, Ordering::Relaxed);
        }
        Step::Yielded(value) => {
            STATS.suspended.fetch_add(1, Ordering::Relaxed);
            call.borrow_mut().pending = Some(value.unbind());
            // From here an asyncio Task drives the call, in the same
            // context; its first step (handing it the future the coroutine
            // waits for) runs now, not on the loop's next turn.
            if let Err(e) = spawn_task(py, ctx, call, Some(&context)) {
                AsgiCall::finish(call, ctx, Some(e));
            }
        }
    }
}

/// Creates the Task first and runs the step it scheduled at once: what
/// `asyncio.Task(..., eager_start=True)` does on Python 3.12.
fn start_task(py: Python<'_>, ctx: &PyCtx, call: &Bound<'_, AsgiCall>) {
    match spawn_task(py, ctx, call, None) {
        Ok(()) => {
            if call.borrow().finished {
                STATS.eager_done.fetch_add(1, Ordering::Relaxed);
            } else {
                STATS.suspended.fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(e) => AsgiCall::finish(call, ctx, Some(e)),
    }
}

/// Wraps the call in an asyncio Task and runs the Task's first step now,
/// instead of on the loop's next iteration: `Task.__init__` put that step
/// at the end of the loop's ready queue; it is taken back and run here, in
/// the Task's context, as `Handle._run` would.
fn spawn_task(
    py: Python<'_>,
    ctx: &PyCtx,
    call: &Bound<'_, AsgiCall>,
    context: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let lp = ctx.event_loop.bind(py);
    CAPTURE.with(|c| *c.borrow_mut() = Some(None));
    // Shadow the loop's call_soon only while the Task is created (an
    // instance attribute wins over the method): nothing else pays for it.
    let shadowed = match &ctx.call_soon {
        Some(c) => lp.setattr(intern!(py, "call_soon"), c.bind(py)).is_ok(),
        None => false,
    };
    let task = match context {
        None => ctx
            .task_type
            .bind(py)
            .call((call,), Some(ctx.task_kwargs.bind(py))),
        Some(c) => ctx.task_kwargs.bind(py).copy().and_then(|kwargs| {
            kwargs.set_item(intern!(py, "context"), c)?;
            ctx.task_type.bind(py).call((call,), Some(&kwargs))
        }),
    };
    if shadowed {
        lp.delattr(intern!(py, "call_soon"))?;
    }
    let captured = CAPTURE.with(|c| c.borrow_mut().take()).flatten();
    let task = task?;
    let (callback, step_context) = match captured {
        // The Task asked the loop (our `CallSoon`) to schedule its first
        // step: run it now instead.
        Some((callback, Some(context))) => (callback.into_bound(py), context.into_bound(py)),
        other => {
            // Not captured (a loop without our call_soon): the step is at
            // the end of the ready queue.
            if let Some((callback, None)) = other {
                lp.call_method1(intern!(py, "call_soon"), (callback,))?;
            }
            let Ok(ready) = lp.getattr(intern!(py, "_ready")) else {
                // A loop whose ready queue is out of reach: the step runs
                // on the loop's next turn, as with any Task.
                return Ok(());
            };
            let handle = ready.call_method0(intern!(py, "pop"))?;
            let callback = handle.getattr(intern!(py, "_callback"))?;
            let ours = callback
                .getattr(intern!(py, "__self__"))
                .is_ok_and(|s| s.is(&task));
            if !ours {
                // Not the step we expected: put it back, the loop runs it.
                ready.call_method1(intern!(py, "append"), (handle,))?;
                return Ok(());
            }
            (callback, handle.getattr(intern!(py, "_context"))?)
        }
    };
    // SAFETY: CPython context and call API with the GIL held; the context
    // is entered and exited around the call; the result is a new reference
    // (or NULL with an exception set).
    let result = unsafe {
        ffi::PyContext_Enter(step_context.as_ptr());
        let r = ffi::PyObject_CallNoArgs(callback.as_ptr());
        ffi::PyContext_Exit(step_context.as_ptr());
        r
    };
    if result.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: a new reference returned by the call above.
    drop(unsafe { Bound::from_owned_ptr(py, result) });
    Ok(())
}

type Captured = Option<(Py<PyAny>, Option<Py<PyAny>>)>;

thread_local! {
    /// `Some` while a Task is being created: its `call_soon` is kept here.
    static CAPTURE: RefCell<Option<Captured>> = const { RefCell::new(None) };
}

/// Set as the loop's `call_soon` (an instance attribute shadowing the
/// method) while `spawn_task` creates a Task: the Task's request to schedule
/// its first step is captured, so the step runs at once without a `Handle`
/// and a trip through the ready queue. Any other call (none is expected)
/// goes to the loop's own `call_soon`.
#[pyclass(module = "stage6_asgi", frozen)]
pub struct CallSoon {
    pub original: Py<PyAny>,
}

#[pymethods]
impl CallSoon {
    #[pyo3(signature = (callback, *args, context=None))]
    fn __call__(
        &self,
        py: Python<'_>,
        callback: Py<PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        if args.is_empty() {
            let captured = CAPTURE.with(|c| {
                let mut c = c.borrow_mut();
                match c.as_mut() {
                    Some(slot @ None) => {
                        *slot = Some((
                            callback.clone_ref(py),
                            context.as_ref().map(|x| x.clone_ref(py)),
                        ));
                        true
                    }
                    _ => false,
                }
            });
            if captured {
                return Ok(py.None());
            }
        }
        let mut all = Vec::with_capacity(args.len() + 1);
        all.push(callback.into_bound(py));
        all.extend(args.iter());
        let all = PyTuple::new(py, all)?;
        let kwargs = match context {
            Some(c) => {
                let k = PyDict::new(py);
                k.set_item(intern!(py, "context"), c)?;
                Some(k)
            }
            None => None,
        };
        self.original
            .bind(py)
            .call(all, kwargs.as_ref())
            .map(Bound::unbind)
    }
}

// ---------------------------------------------------------------------------
// One app call.

enum StepInput<'py> {
    Send(Bound<'py, PyAny>),
    Throw(Bound<'py, PyAny>),
}

enum Step<'py> {
    /// The coroutine yielded (usually an asyncio future it waits for).
    Yielded(Bound<'py, PyAny>),
    /// It returned or raised: the call is finished.
    Done,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Framing {
    Length,
    Chunked,
    UntilClose,
    NoBody,
}

/// The HTTP response as the app sends it.
struct Resp {
    /// `http.response.start` arrived.
    started: bool,
    /// The head went to the I/O thread.
    head_sent: bool,
    /// `more_body` was false: the response is complete.
    complete: bool,
    status: u16,
    /// The app's header lines, `name: value\r\n`, hop-by-hop ones dropped.
    header_lines: Vec<u8>,
    content_length: Option<u64>,
    app_close: bool,
    framing: Framing,
    remaining: u64,
}

/// An app call: the coroutine of `app(scope, receive, send)` and the state of
/// its request. asyncio sees it as a coroutine (it has `send`, `throw`,
/// `close` and `__await__`), so a Task can drive it after the first step.
#[pyclass(module = "stage6_asgi")]
pub struct AsgiCall {
    coro: Option<Py<PyAny>>,
    x: Arc<Exchange>,
    kind: Kind,
    method: String,
    target: String,
    keep_alive: bool,
    resp: Resp,
    /// The last http.request was delivered (more_body false).
    request_done: bool,
    recv_fut: Option<Py<Waiter>>,
    send_fut: Option<Py<Waiter>>,
    /// A future yielded by a bare first step, not yet handed to the Task.
    pending: Option<Py<PyAny>>,
    finished: bool,
    // WebSocket.
    ws_connect_sent: bool,
    ws_accepted: bool,
    ws_closed: bool,
    ws_disconnect_sent: bool,
}

impl AsgiCall {
    fn new(start: &Start) -> AsgiCall {
        AsgiCall {
            coro: None,
            x: start.exchange.clone(),
            kind: start.kind,
            method: start.head.method.clone(),
            target: start.head.target.clone(),
            keep_alive: start.keep_alive,
            resp: Resp {
                started: false,
                head_sent: false,
                complete: false,
                status: 0,
                header_lines: Vec::new(),
                content_length: None,
                app_close: false,
                framing: Framing::Length,
                remaining: 0,
            },
            request_done: false,
            recv_fut: None,
            send_fut: None,
            pending: None,
            finished: false,
            ws_connect_sent: false,
            ws_accepted: false,
            ws_closed: false,
            ws_disconnect_sent: false,
        }
    }

    fn label(&self) -> String {
        match self.kind {
            Kind::Http => format!("{} {}", self.method, self.target),
            Kind::WebSocket => format!("WebSocket {}", self.target),
        }
    }

    /// Runs the coroutine until it yields or ends; times the step.
    fn step<'py>(slf: &Bound<'py, Self>, ctx: &PyCtx, input: StepInput<'py>) -> Step<'py> {
        let py = slf.py();
        let Some(coro) = slf.borrow().coro.as_ref().map(|c| c.clone_ref(py)) else {
            return Step::Done;
        };
        let coro = coro.into_bound(py);
        let began = Instant::now();
        let result: PyResult<Option<Bound<'py, PyAny>>> = match input {
            StepInput::Send(value) => {
                let mut out: *mut ffi::PyObject = std::ptr::null_mut();
                // SAFETY: coro and value are live objects; PyIter_Send gives
                // a new reference in `out` for RETURN and NEXT.
                let r = unsafe { ffi::PyIter_Send(coro.as_ptr(), value.as_ptr(), &mut out) };
                match r {
                    ffi::PySendResult::PYGEN_NEXT => {
                        // SAFETY: a new reference, see above.
                        Ok(Some(unsafe { Bound::from_owned_ptr(py, out) }))
                    }
                    ffi::PySendResult::PYGEN_RETURN => {
                        // SAFETY: a new reference (the return value), dropped.
                        drop(unsafe { Bound::from_owned_ptr(py, out) });
                        Ok(None)
                    }
                    ffi::PySendResult::PYGEN_ERROR => Err(PyErr::fetch(py)),
                }
            }
            StepInput::Throw(exc) => match coro.call_method1(intern!(py, "throw"), (exc,)) {
                Ok(v) => Ok(Some(v)),
                Err(e) if e.is_instance_of::<PyStopIteration>(py) => Ok(None),
                Err(e) => Err(e),
            },
        };
        let held = began.elapsed();
        if held >= ctx.config.slow_step {
            log::warn!(
                "{} held the event loop for {} ms in one step (a blocking call in an async \
                 function? every other connection of this process waited)",
                slf.borrow().label(),
                held.as_millis()
            );
        }
        match result {
            Ok(Some(v)) => Step::Yielded(v),
            Ok(None) => {
                Self::finish(slf, ctx, None);
                Step::Done
            }
            Err(e) => {
                Self::finish(slf, ctx, Some(e));
                Step::Done
            }
        }
    }

    /// The coroutine ended (`err`: with an exception). Makes sure the
    /// client gets a complete response or a closed connection.
    fn finish(slf: &Bound<'_, Self>, ctx: &PyCtx, err: Option<PyErr>) {
        let py = slf.py();
        let mut call = slf.borrow_mut();
        if call.finished {
            return;
        }
        call.finished = true;
        call.coro = None;
        let cancelled = err
            .as_ref()
            .is_some_and(|e| e.is_instance_of::<pyo3::exceptions::asyncio::CancelledError>(py));
        if let Some(e) = &err
            && !cancelled
        {
            log::error!(
                "Exception in ASGI application ({}):\n{}",
                call.label(),
                wsgi_bridge::embed::format_exception(py, e).trim_end()
            );
        }
        match call.kind {
            Kind::Http => {
                if !call.resp.head_sent {
                    if err.is_none() {
                        log::error!(
                            "{}: the app returned without {} the response: answering 500",
                            call.label(),
                            if call.resp.started {
                                "finishing"
                            } else {
                                "starting"
                            }
                        );
                    }
                    let server = ctx.config.server_header.clone();
                    call.queue_error(500, "Internal Server Error", &server);
                } else if !call.resp.complete {
                    if err.is_none() {
                        log::error!(
                            "{}: the app returned before its response was complete: closing the connection",
                            call.label()
                        );
                    }
                    let mut s = call.x.lock();
                    s.abort = true;
                    s.out_done = true;
                    drop(s);
                    call.x.to_io.notify_one();
                }
            }
            Kind::WebSocket => {
                if !call.ws_closed {
                    call.ws_closed = true;
                    let out = if !call.ws_accepted {
                        // Closed before accept: the handshake is refused (403),
                        // or 500 after an exception.
                        WsOut::Close {
                            code: if err.is_some() { 1011 } else { 1000 },
                            reason: String::new(),
                        }
                    } else {
                        WsOut::Close {
                            code: if err.is_some() { 1011 } else { 1000 },
                            reason: String::new(),
                        }
                    };
                    let mut s = call.x.lock();
                    s.ws_out.push_back(out);
                    if err.is_some() && !call.ws_accepted {
                        s.status = 500;
                    }
                    s.out_done = true;
                    drop(s);
                    call.x.to_io.notify_one();
                } else {
                    call.x.lock().out_done = true;
                    call.x.to_io.notify_one();
                }
            }
        }
        call.recv_fut = None;
        call.send_fut = None;
        let id = call.x.id;
        drop(call);
        ctx.waiting.borrow_mut().remove(&id);
        ctx.hooks.request_finished();
        if ctx.hooks.should_stop() {
            ask_stop(ctx);
        }
    }

    /// Replaces the response with a complete error page (nothing was sent).
    fn queue_error(&mut self, status: u16, message: &str, server: &str) {
        let bytes = http_codec::response::error_response(status, message, server);
        self.resp.head_sent = true;
        self.resp.complete = true;
        self.resp.status = status;
        let mut s = self.x.lock();
        s.unsent += bytes.len();
        s.out.extend_from_slice(&bytes);
        s.out_done = true;
        s.close_after = true;
        s.status = status;
        drop(s);
        self.x.to_io.notify_one();
    }

    /// The I/O thread announced a change: resolve what can be resolved.
    /// The waiting Task resumes right here (see [`Waiter`]).
    fn wake(slf: &Bound<'_, Self>, ctx: &PyCtx) {
        let py = slf.py();
        let mut again = false;
        let recv = slf.borrow_mut().recv_fut.take();
        if let Some(fut) = recv
            && !fut.borrow(py).is_done()
        {
            match Self::try_receive(slf) {
                Ok(Some(msg)) => Waiter::resolve(fut.bind(py), Ok(msg.into_any())),
                Ok(None) => {
                    slf.borrow_mut().recv_fut = Some(fut);
                    again = true;
                }
                Err(e) => Waiter::resolve(fut.bind(py), Err(e)),
            }
        }
        let send = slf.borrow_mut().send_fut.take();
        if let Some(fut) = send
            && !fut.borrow(py).is_done()
        {
            let (gone, unsent) = slf.borrow().x.lock().disconnected_unsent();
            if gone {
                let e = match ctx.disconnected_exc.bind(py).call0() {
                    Ok(e) => PyErr::from_value(e),
                    Err(e) => e,
                };
                Waiter::resolve(fut.bind(py), Err(e));
            } else if unsent < SEND_LOW_WATER {
                Waiter::resolve(fut.bind(py), Ok(py.None().into_bound(py)));
            } else {
                slf.borrow_mut().send_fut = Some(fut);
                again = true;
            }
        }
        if again {
            Self::wait(slf, ctx);
        }
    }

    /// Registers for the next `Event::Wake` of this exchange.
    fn wait(slf: &Bound<'_, Self>, ctx: &PyCtx) {
        let call = slf.borrow();
        let id = call.x.id;
        ctx.waiting.borrow_mut().insert(id, slf.clone().unbind());
        let recv = if call.recv_fut.is_none() {
            RecvWait::Nothing
        } else if call.kind == Kind::WebSocket {
            RecvWait::Message
        } else if call.request_done {
            RecvWait::Disconnect
        } else {
            RecvWait::Body
        };
        let mut s = call.x.lock();
        s.recv_blocked = recv;
        s.send_blocked = call.send_fut.is_some();
        // What we wait for may have come between our look and now: then
        // wake ourselves (the I/O thread will not: it saw no wait).
        if s.wake_due() {
            drop(s);
            ctx.inbox.push(Event::Wake(id));
        }
    }

    /// The next message for `receive()`, if there is one now.
    fn try_receive<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let py = slf.py();
        let mut call = slf.borrow_mut();
        match call.kind {
            Kind::Http => {
                let x = call.x.clone();
                let mut s = x.lock();
                if !call.request_done {
                    if !s.want_body {
                        s.want_body = true;
                        drop(s);
                        x.to_io.notify_one();
                        s = x.lock();
                    }
                    if let Some(mut chunk) = s.body.pop_front() {
                        // Everything read so far in one message (at most the
                        // read-ahead window): a slow app gets big pieces, not
                        // one per TCP segment.
                        while let Some(more) = s.body.pop_front() {
                            chunk.extend_from_slice(&more);
                        }
                        s.body_buffered = 0;
                        let more = !(s.body.is_empty() && s.body_done);
                        drop(s);
                        x.to_io.notify_one();
                        if !more {
                            call.request_done = true;
                        }
                        return Ok(Some(http_request(py, &chunk, more)?));
                    }
                    if s.body_done {
                        call.request_done = true;
                        return Ok(Some(http_request(py, b"", false)?));
                    }
                    if s.disconnected || s.client_eof {
                        return Ok(Some(disconnect(py)?));
                    }
                    return Ok(None);
                }
                if s.disconnected || s.client_eof || call.resp.complete || s.io_done {
                    return Ok(Some(disconnect(py)?));
                }
                Ok(None)
            }
            Kind::WebSocket => {
                if !call.ws_connect_sent {
                    call.ws_connect_sent = true;
                    let d = PyDict::new(py);
                    d.set_item(intern!(py, "type"), intern!(py, "websocket.connect"))?;
                    return Ok(Some(d));
                }
                if call.ws_disconnect_sent {
                    return Err(PyRuntimeError::new_err(
                        "receive() called after websocket.disconnect",
                    ));
                }
                let x = call.x.clone();
                let mut s = x.lock();
                let Some(msg) = s.ws_in.pop_front() else {
                    if s.disconnected {
                        call.ws_disconnect_sent = true;
                        drop(s);
                        return Ok(Some(ws_disconnect(py, 1006, "")?));
                    }
                    return Ok(None);
                };
                let was_full = s.ws_in.len() + 1 >= crate::shared::WS_READ_AHEAD;
                drop(s);
                if was_full {
                    x.to_io.notify_one();
                }
                let d = PyDict::new(py);
                match msg {
                    WsIn::Text(t) => {
                        d.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
                        d.set_item(intern!(py, "text"), t)?;
                    }
                    WsIn::Binary(b) => {
                        d.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
                        d.set_item(intern!(py, "bytes"), PyBytes::new(py, &b))?;
                    }
                    WsIn::Closed { code, reason } => {
                        call.ws_disconnect_sent = true;
                        call.ws_closed = true;
                        return Ok(Some(ws_disconnect(py, code, &reason)?));
                    }
                }
                Ok(Some(d))
            }
        }
    }

    /// `send(message)` for an HTTP call. Returns whether to wait for room.
    fn send_http(&mut self, message: &Bound<'_, PyAny>, server: &str) -> PyResult<bool> {
        let py = message.py();
        let kind = get_type(message)?;
        let kind = kind.to_str()?;
        match kind {
            "http.response.start" => {
                if self.resp.started {
                    return Err(PyRuntimeError::new_err(
                        "http.response.start sent twice in one response",
                    ));
                }
                let status: u16 = message
                    .get_item(intern!(py, "status"))
                    .map_err(|_| PyValueError::new_err("http.response.start needs a 'status'"))?
                    .extract()
                    .map_err(|_| {
                        PyValueError::new_err("the status must be an int between 100 and 999")
                    })?;
                if !(100..=999).contains(&status) {
                    return Err(PyValueError::new_err(format!(
                        "{status} is not an HTTP status code"
                    )));
                }
                self.resp.status = status;
                if let Ok(headers) = message.get_item(intern!(py, "headers")) {
                    self.set_headers(&headers)?;
                }
                self.resp.started = true;
                Ok(false)
            }
            "http.response.body" => {
                if !self.resp.started {
                    return Err(PyRuntimeError::new_err(
                        "http.response.body sent before http.response.start",
                    ));
                }
                if self.resp.complete {
                    return Err(PyRuntimeError::new_err(
                        "http.response.body sent after the response was complete",
                    ));
                }
                let body_obj = message.get_item(intern!(py, "body")).ok();
                let body: &[u8] = match &body_obj {
                    Some(b) if !b.is_none() => b
                        .cast::<PyBytes>()
                        .map_err(|_| PyTypeError::new_err("the body must be bytes"))?
                        .as_bytes(),
                    _ => b"",
                };
                let more = match message.get_item(intern!(py, "more_body")) {
                    Ok(m) => m.is_truthy()?,
                    Err(_) => false,
                };
                Ok(self.write_body(body, more, server))
            }
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected ASGI message '{other}' in an http scope"
            ))),
        }
    }

    fn set_headers(&mut self, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut lines = Vec::with_capacity(128);
        for item in headers.try_iter()? {
            let item = item?;
            let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
                item.extract().map_err(|_| {
                    PyTypeError::new_err("each header must be a pair [name, value] of bytes")
                })?;
            let name = as_bytes(&name)?;
            let value = as_bytes(&value)?;
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                return Err(PyValueError::new_err(format!(
                    "invalid header name {:?}",
                    String::from_utf8_lossy(name)
                )));
            }
            if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(PyValueError::new_err(format!(
                    "invalid header value for {:?}: it contains CR, LF or NUL",
                    String::from_utf8_lossy(name)
                )));
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| PyValueError::new_err("invalid Content-Length"))?;
                self.resp.content_length = Some(n);
            }
            if is_hop_by_hop(name) {
                if name.eq_ignore_ascii_case(b"connection")
                    && value
                        .split(|&b| b == b',')
                        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                {
                    self.resp.app_close = true;
                }
                continue;
            }
            lines.extend_from_slice(name);
            lines.extend_from_slice(b": ");
            lines.extend_from_slice(value);
            lines.extend_from_slice(b"\r\n");
        }
        self.resp.header_lines = lines;
        Ok(())
    }

    /// Frames a body piece (and the head, the first time); returns whether
    /// the app should wait for the client to take what is queued.
    fn write_body(&mut self, body: &[u8], more: bool, server: &str) -> bool {
        let x = self.x.clone();
        let mut s = x.lock();
        if s.disconnected || s.io_done {
            self.resp.head_sent = true;
            if !more {
                self.resp.complete = true;
            }
            return false;
        }
        let start_len = s.out.len();
        if !self.resp.head_sent {
            self.resp.head_sent = true;
            let status = self.resp.status;
            let no_body = status_forbids_body(status);
            let mut cl_header = None;
            let mut chunked_header = false;
            self.resp.framing = if no_body {
                Framing::NoBody
            } else if let Some(n) = self.resp.content_length {
                self.resp.remaining = n;
                Framing::Length
            } else if !more {
                cl_header = Some(body.len() as u64);
                self.resp.remaining = body.len() as u64;
                Framing::Length
            } else if x.head_request {
                Framing::NoBody
            } else if x.version == Version::Http11 {
                chunked_header = true;
                Framing::Chunked
            } else {
                Framing::UntilClose
            };
            let keep =
                self.keep_alive && !self.resp.app_close && self.resp.framing != Framing::UntilClose;
            s.close_after |= !keep;
            s.status = status;
            let out = &mut s.out;
            out.extend_from_slice(b"HTTP/1.1 ");
            push_decimal(out, u64::from(status));
            out.push(b' ');
            out.extend_from_slice(reason(status).as_bytes());
            out.extend_from_slice(b"\r\nserver: ");
            out.extend_from_slice(server.as_bytes());
            out.extend_from_slice(b"\r\ndate: ");
            push_http_date(out);
            out.extend_from_slice(b"\r\n");
            if !keep {
                out.extend_from_slice(b"connection: close\r\n");
            } else if x.version == Version::Http10 {
                out.extend_from_slice(b"connection: keep-alive\r\n");
            }
            out.extend_from_slice(&self.resp.header_lines);
            if let Some(n) = cl_header {
                out.extend_from_slice(b"content-length: ");
                push_decimal(out, n);
                out.extend_from_slice(b"\r\n");
            }
            if chunked_header {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
            out.extend_from_slice(b"\r\n");
            if x.head_request {
                self.resp.framing = Framing::NoBody;
            }
        }
        s.body_bytes += body.len() as u64;
        match self.resp.framing {
            Framing::NoBody => {}
            Framing::Length => {
                let n = (body.len() as u64).min(self.resp.remaining) as usize;
                if n < body.len() {
                    log::warn!(
                        "{}: the app sent more than its Content-Length; the rest is dropped and the connection closed",
                        self.label()
                    );
                    s.close_after = true;
                }
                self.resp.remaining -= n as u64;
                s.out.extend_from_slice(&body[..n]);
            }
            Framing::Chunked => {
                if !body.is_empty() {
                    push_chunk_size(&mut s.out, body.len());
                    s.out.extend_from_slice(body);
                    s.out.extend_from_slice(b"\r\n");
                }
                if !more {
                    s.out.extend_from_slice(LAST_CHUNK);
                }
            }
            Framing::UntilClose => s.out.extend_from_slice(body),
        }
        if !more {
            self.resp.complete = true;
            if self.resp.framing == Framing::Length && self.resp.remaining > 0 {
                log::warn!(
                    "{}: the app sent {} bytes fewer than its Content-Length; closing the connection",
                    self.label(),
                    self.resp.remaining
                );
                s.close_after = true;
            }
            s.out_done = true;
        }
        let added = s.out.len() - start_len;
        s.unsent += added;
        let wait = more && s.unsent >= SEND_HIGH_WATER;
        drop(s);
        if added > 0 || !more {
            x.to_io.notify_one();
        }
        wait
    }

    /// `send(message)` for a WebSocket call. Returns whether to wait.
    fn send_ws(&mut self, message: &Bound<'_, PyAny>) -> PyResult<bool> {
        let py = message.py();
        let kind = get_type(message)?;
        let kind = kind.to_str()?;
        let out = match kind {
            "websocket.accept" => {
                if self.ws_accepted || self.ws_closed {
                    return Err(PyRuntimeError::new_err(
                        "websocket.accept sent twice, or after close",
                    ));
                }
                let subprotocol = match message.get_item(intern!(py, "subprotocol")) {
                    Ok(p) if !p.is_none() => Some(p.extract::<String>()?),
                    _ => None,
                };
                let mut headers = Vec::new();
                if let Ok(h) = message.get_item(intern!(py, "headers")) {
                    for item in h.try_iter()? {
                        let (n, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
                        let (n, v) = (as_bytes(&n)?.to_vec(), as_bytes(&v)?.to_vec());
                        if n.is_empty()
                            || !n.iter().all(|&b| is_tchar(b))
                            || v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
                        {
                            return Err(PyValueError::new_err(
                                "invalid header in websocket.accept",
                            ));
                        }
                        headers.push((n, v));
                    }
                }
                self.ws_accepted = true;
                WsOut::Accept {
                    subprotocol,
                    headers,
                }
            }
            "websocket.send" => {
                if !self.ws_accepted {
                    return Err(PyRuntimeError::new_err(
                        "websocket.send before websocket.accept",
                    ));
                }
                if self.ws_closed {
                    return Err(PyRuntimeError::new_err(
                        "websocket.send after websocket.close",
                    ));
                }
                match message.get_item(intern!(py, "bytes")) {
                    Ok(b) if !b.is_none() => WsOut::Binary(as_bytes(&b)?.to_vec()),
                    _ => match message.get_item(intern!(py, "text")) {
                        Ok(t) if !t.is_none() => WsOut::Text(t.extract::<String>()?),
                        _ => {
                            return Err(PyValueError::new_err(
                                "websocket.send needs 'bytes' or 'text'",
                            ));
                        }
                    },
                }
            }
            "websocket.close" => {
                if self.ws_closed {
                    return Ok(false);
                }
                let code = match message.get_item(intern!(py, "code")) {
                    Ok(c) if !c.is_none() => c.extract::<u16>()?,
                    _ => 1000,
                };
                let reason = match message.get_item(intern!(py, "reason")) {
                    Ok(r) if !r.is_none() => r.extract::<String>()?,
                    _ => String::new(),
                };
                self.ws_closed = true;
                WsOut::Close { code, reason }
            }
            other => {
                return Err(PyRuntimeError::new_err(format!(
                    "unexpected ASGI message '{other}' in a websocket scope"
                )));
            }
        };
        let x = self.x.clone();
        let mut s = x.lock();
        if s.disconnected {
            return Err(PyErr::from_value(ctx().disconnected_exc.bind(py).call0()?));
        }
        let size = match &out {
            WsOut::Text(t) => t.len(),
            WsOut::Binary(b) => b.len(),
            _ => 0,
        };
        s.ws_out.push_back(out);
        s.unsent += size;
        let wait = s.unsent >= SEND_HIGH_WATER;
        drop(s);
        x.to_io.notify_one();
        Ok(wait)
    }
}

#[pymethods]
impl AsgiCall {
    /// asyncio's Task calls this for every step after the first.
    fn send<'py>(slf: &Bound<'py, Self>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let pending = slf.borrow_mut().pending.take();
        if let Some(fut) = pending {
            let fut = fut.into_bound(py);
            if !fut_done(&fut) {
                // Hand the future the bare first step was waiting for to the
                // Task, as the coroutine would have.
                fut.setattr(intern!(py, "_asyncio_future_blocking"), true)?;
                return Ok(fut);
            }
        }
        let ctx = ctx();
        match Self::step(slf, &ctx, StepInput::Send(value)) {
            Step::Yielded(v) => Ok(v),
            Step::Done => Err(PyStopIteration::new_err(())),
        }
    }

    #[pyo3(signature = (typ, val=None, tb=None))]
    fn throw<'py>(
        slf: &Bound<'py, Self>,
        typ: Bound<'py, PyAny>,
        val: Option<Bound<'py, PyAny>>,
        tb: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = tb;
        slf.borrow_mut().pending = None;
        let exc = match val {
            Some(v) if !v.is_none() => v,
            _ => typ,
        };
        let ctx = ctx();
        match Self::step(slf, &ctx, StepInput::Throw(exc)) {
            Step::Yielded(v) => Ok(v),
            Step::Done => Err(PyStopIteration::new_err(())),
        }
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let coro = slf.borrow_mut().coro.take();
        if let Some(c) = coro {
            c.bind(slf.py()).call_method0(intern!(slf.py(), "close"))?;
        }
        Ok(())
    }

    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::send(slf, slf.py().None().into_bound(slf.py()))
    }

    fn __repr__(&self) -> String {
        format!("<stage6 ASGI call {}>", self.label())
    }
}

fn fut_done(fut: &Bound<'_, PyAny>) -> bool {
    fut.call_method0(intern!(fut.py(), "done"))
        .and_then(|d| d.is_truthy())
        .unwrap_or(true)
}

impl crate::shared::XState {
    fn disconnected_unsent(&self) -> (bool, usize) {
        (self.disconnected || self.io_done, self.unsent)
    }
}

fn get_type<'py>(message: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
    let py = message.py();
    message
        .get_item(intern!(py, "type"))
        .map_err(|_| PyValueError::new_err("an ASGI message must be a dict with a 'type'"))?
        .cast_into::<PyString>()
        .map_err(|_| PyTypeError::new_err("an ASGI message's 'type' must be a str"))
}

fn as_bytes<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    obj.cast::<PyBytes>()
        .map(|b| b.as_bytes())
        .map_err(|_| PyTypeError::new_err("header names and values must be bytes"))
}

fn http_request<'py>(py: Python<'py>, body: &[u8], more: bool) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
    d.set_item(intern!(py, "body"), PyBytes::new(py, body))?;
    d.set_item(intern!(py, "more_body"), more)?;
    Ok(d)
}

fn disconnect(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
    Ok(d)
}

fn ws_disconnect<'py>(py: Python<'py>, code: u16, reason: &str) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
    d.set_item(intern!(py, "code"), code)?;
    d.set_item(intern!(py, "reason"), reason)?;
    Ok(d)
}

/// The reason phrase of a status line.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

// ---------------------------------------------------------------------------
// Waiting without an asyncio Future.

enum WaitState {
    Pending,
    Result(Py<PyAny>),
    Error(PyErr),
    Cancelled(Option<String>),
}

/// What `receive()` (or a `send()` held back by a slow client) returns when
/// it must wait: a minimal asyncio-compatible future.
///
/// An asyncio Task accepts any object with `_asyncio_future_blocking`,
/// `get_loop`, `add_done_callback` and `result` (duck typing in
/// `Task.__step`). Unlike an `asyncio.Future`, which schedules its
/// callbacks with `call_soon` (one more turn of the loop, one more `select`),
/// a `Waiter` is resolved by the drain callback and calls the Task's wake-up
/// at once: the app handles a WebSocket message or a body chunk in the same
/// turn of the loop that received it.
#[pyclass(module = "stage6_asgi")]
pub struct Waiter {
    state: WaitState,
    callbacks: Vec<(Py<PyAny>, Option<Py<PyAny>>)>,
    #[pyo3(get, set, name = "_asyncio_future_blocking")]
    blocking: bool,
    event_loop: Py<PyAny>,
}

impl Waiter {
    fn new<'py>(py: Python<'py>, ctx: &PyCtx) -> PyResult<Bound<'py, Waiter>> {
        Bound::new(
            py,
            Waiter {
                state: WaitState::Pending,
                callbacks: Vec::new(),
                blocking: false,
                event_loop: ctx.event_loop.clone_ref(py),
            },
        )
    }

    fn is_done(&self) -> bool {
        !matches!(self.state, WaitState::Pending)
    }

    /// Sets the outcome and runs the done callbacks now, each in its context.
    fn resolve(slf: &Bound<'_, Waiter>, outcome: PyResult<Bound<'_, PyAny>>) {
        let py = slf.py();
        let callbacks = {
            let mut w = slf.borrow_mut();
            if w.is_done() {
                return;
            }
            w.state = match outcome {
                Ok(v) => WaitState::Result(v.unbind()),
                Err(e) => WaitState::Error(e),
            };
            std::mem::take(&mut w.callbacks)
        };
        for (callback, context) in callbacks {
            // SAFETY: CPython context API with the GIL held, entered and
            // exited around the call.
            if let Some(c) = &context {
                unsafe { ffi::PyContext_Enter(c.as_ptr()) };
            }
            let r = callback.bind(py).call1((slf,));
            if let Some(c) = &context {
                unsafe { ffi::PyContext_Exit(c.as_ptr()) };
            }
            if let Err(e) = r {
                e.print(py);
            }
        }
    }
}

#[pymethods]
impl Waiter {
    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.event_loop.clone_ref(py)
    }

    fn done(&self) -> bool {
        self.is_done()
    }

    fn cancelled(&self) -> bool {
        matches!(self.state, WaitState::Cancelled(_))
    }

    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.state {
            WaitState::Pending => Err(asyncio_error(py, "InvalidStateError", "Result is not set.")),
            WaitState::Result(v) => Ok(v.clone_ref(py)),
            WaitState::Error(e) => Err(e.clone_ref(py)),
            WaitState::Cancelled(msg) => Err(pyo3::exceptions::asyncio::CancelledError::new_err(
                msg.clone().unwrap_or_default(),
            )),
        }
    }

    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.state {
            WaitState::Error(e) => Ok(Some(e.value(py).clone().into_any().unbind())),
            WaitState::Result(_) => Ok(None),
            _ => self.result(py).map(|_| None),
        }
    }

    #[pyo3(signature = (callback, *, context=None))]
    fn add_done_callback(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        if slf.borrow().is_done() {
            // As asyncio.Future: a callback added after the fact is scheduled.
            let lp = slf.borrow().event_loop.clone_ref(py);
            let kwargs = PyDict::new(py);
            if let Some(c) = context {
                kwargs.set_item("context", c)?;
            }
            lp.bind(py)
                .call_method("call_soon", (callback, slf), Some(&kwargs))?;
            return Ok(());
        }
        slf.borrow_mut().callbacks.push((callback, context));
        Ok(())
    }

    fn remove_done_callback(&mut self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<usize> {
        let before = self.callbacks.len();
        let mut kept = Vec::with_capacity(before);
        for (cb, ctx) in self.callbacks.drain(..) {
            if !cb.bind(py).eq(&callback)? {
                kept.push((cb, ctx));
            }
        }
        self.callbacks = kept;
        Ok(before - self.callbacks.len())
    }

    #[pyo3(signature = (msg=None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<String>) -> PyResult<bool> {
        let py = slf.py();
        let (callbacks, lp) = {
            let mut w = slf.borrow_mut();
            if w.is_done() {
                return Ok(false);
            }
            w.state = WaitState::Cancelled(msg);
            (std::mem::take(&mut w.callbacks), w.event_loop.clone_ref(py))
        };
        // Cancelling happens inside someone else's code: schedule the
        // callbacks, as asyncio.Future.cancel does.
        for (callback, context) in callbacks {
            let kwargs = PyDict::new(py);
            if let Some(c) = context {
                kwargs.set_item("context", c)?;
            }
            lp.bind(py)
                .call_method("call_soon", (callback, slf), Some(&kwargs))?;
        }
        Ok(true)
    }

    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if !slf.borrow().is_done() {
            // Suspend: the Task sees a future to wait for.
            slf.borrow_mut().blocking = true;
            return Ok(slf.clone().into_any().unbind());
        }
        let value = slf.borrow().result(py)?;
        Err(PyStopIteration::new_err((value,)))
    }
}

fn asyncio_error(py: Python<'_>, name: &str, msg: &str) -> PyErr {
    match py
        .import("asyncio")
        .and_then(|m| m.getattr(name))
        .and_then(|t| t.call1((msg,)))
    {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------
// receive and send, as the app sees them.

/// A message ready now: `await` returns it without suspending.
#[pyclass(module = "stage6_asgi", frozen)]
pub struct Ready {
    value: Py<PyAny>,
}

#[pymethods]
impl Ready {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }
    fn __next__(&self, py: Python<'_>) -> PyResult<()> {
        Err(PyStopIteration::new_err((self.value.clone_ref(py),)))
    }
    #[pyo3(signature = (_value=None))]
    fn send(&self, py: Python<'_>, _value: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        self.__next__(py)
    }
}

/// `await send(...)` that has nothing to wait for: returns None at once.
#[pyclass(module = "stage6_asgi", frozen)]
pub struct Done;

#[pymethods]
impl Done {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }
    fn __next__(&self) -> Option<()> {
        None
    }
}

thread_local! {
    static DONE: RefCell<Option<Py<Done>>> = const { RefCell::new(None) };
}

fn done(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    DONE.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(Py::new(py, Done)?);
        }
        Ok(d.as_ref()
            .map(|d| d.bind(py).clone().into_any())
            .unwrap_or_else(|| py.None().into_bound(py)))
    })
}

/// The `receive` callable given to the app.
#[pyclass(module = "stage6_asgi", frozen)]
pub struct Receive {
    call: Py<AsgiCall>,
}

#[pymethods]
impl Receive {
    fn __call__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let call = self.call.bind(py);
        if let Some(msg) = AsgiCall::try_receive(call)? {
            return Ok(Bound::new(
                py,
                Ready {
                    value: msg.into_any().unbind(),
                },
            )?
            .into_any());
        }
        if call
            .borrow()
            .recv_fut
            .as_ref()
            .is_some_and(|f| !f.borrow(py).is_done())
        {
            return Err(PyRuntimeError::new_err(
                "receive() called while another receive() is waiting",
            ));
        }
        let ctx = ctx();
        let fut = Waiter::new(py, &ctx)?;
        call.borrow_mut().recv_fut = Some(fut.clone().unbind());
        AsgiCall::wait(call, &ctx);
        Ok(fut.into_any())
    }
}

/// The `send` callable given to the app. The message is handled when
/// `send()` is called; what it returns is awaited only to wait for room
/// when the client reads slower than the app writes.
#[pyclass(module = "stage6_asgi", frozen)]
pub struct Send {
    call: Py<AsgiCall>,
}

#[pymethods]
impl Send {
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        message: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let call = self.call.bind(py);
        let ctx = ctx();
        let wait = {
            let mut c = call.borrow_mut();
            if c.finished {
                return Err(PyRuntimeError::new_err(
                    "send() called after the app returned",
                ));
            }
            match c.kind {
                Kind::Http => {
                    let gone = c.x.lock().disconnected;
                    if gone {
                        drop(c);
                        return Err(PyErr::from_value(ctx.disconnected_exc.bind(py).call0()?));
                    }
                    c.send_http(&message, &ctx.config.server_header)?
                }
                Kind::WebSocket => c.send_ws(&message)?,
            }
        };
        if !wait {
            return done(py);
        }
        let fut = Waiter::new(py, &ctx)?;
        call.borrow_mut().send_fut = Some(fut.clone().unbind());
        AsgiCall::wait(call, &ctx);
        Ok(fut.into_any())
    }
}

/// Registers the classes asyncio must see as coroutines.
pub fn register(py: Python<'_>) -> PyResult<()> {
    let abc = py.import("collections.abc")?;
    abc.getattr("Coroutine")?
        .call_method1("register", (py.get_type::<AsgiCall>(),))?;
    Ok(())
}

#[allow(dead_code)]
fn _unused(_: &RequestHead) {}
