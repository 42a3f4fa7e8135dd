//! One app call ([`AsgiCall`]): the coroutine, the state of its request,
//! stepping it, finishing it, waking it when the I/O thread reports.

use std::sync::Arc;
use std::time::Instant;

use pyo3::exceptions::{PyStopIteration, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::shared::{Event, Exchange, Kind, RecvWait, SEND_LOW_WATER, Start, WsOut};

use super::drain::ask_stop;
use super::{PyCtx, Waiter, ctx};

pub(super) enum StepInput<'py> {
    Send(Bound<'py, PyAny>),
    Throw(Bound<'py, PyAny>),
}

pub(super) enum Step<'py> {
    /// The coroutine yielded (usually an asyncio future it waits for).
    Yielded(Bound<'py, PyAny>),
    /// It returned or raised: the call is finished.
    Done,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Framing {
    Length,
    Chunked,
    UntilClose,
    NoBody,
}

/// The HTTP response as the app sends it.
pub(super) struct Resp {
    /// `http.response.start` arrived.
    pub(super) started: bool,
    /// The head went to the I/O thread.
    pub(super) head_sent: bool,
    /// `more_body` was false: the response is complete.
    pub(super) complete: bool,
    pub(super) status: u16,
    /// The app's header lines, `name: value\r\n`, hop-by-hop ones dropped.
    pub(super) header_lines: Vec<u8>,
    pub(super) content_length: Option<u64>,
    pub(super) app_close: bool,
    pub(super) framing: Framing,
    pub(super) remaining: u64,
}

/// An app call: the coroutine of `app(scope, receive, send)` and the state of
/// its request. asyncio sees it as a coroutine (it has `send`, `throw`,
/// `close` and `__await__`), so a Task can drive it after the first step.
#[pyclass(module = "stage6_asgi")]
pub struct AsgiCall {
    pub(super) coro: Option<Py<PyAny>>,
    pub(super) x: Arc<Exchange>,
    pub(super) kind: Kind,
    pub(super) method: String,
    pub(super) target: String,
    pub(super) keep_alive: bool,
    pub(super) resp: Resp,
    /// The last http.request was delivered (more_body false).
    pub(super) request_done: bool,
    pub(super) recv_fut: Option<Py<Waiter>>,
    pub(super) send_fut: Option<Py<Waiter>>,
    /// A future yielded by a bare first step, not yet handed to the Task.
    pub(super) pending: Option<Py<PyAny>>,
    pub(super) finished: bool,
    // WebSocket.
    pub(super) ws_connect_sent: bool,
    pub(super) ws_accepted: bool,
    pub(super) ws_closed: bool,
    pub(super) ws_disconnect_sent: bool,
}

impl AsgiCall {
    /// The call of `start`'s request; takes the head's method and target.
    pub(super) fn new(start: &mut Start) -> AsgiCall {
        AsgiCall {
            coro: None,
            x: start.exchange.clone(),
            kind: start.kind,
            method: std::mem::take(&mut start.head.method),
            target: std::mem::take(&mut start.head.target),
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

    pub(super) fn label(&self) -> String {
        match self.kind {
            Kind::Http => format!("{} {}", self.method, self.target),
            Kind::WebSocket => format!("WebSocket {}", self.target),
        }
    }

    // ANCHOR: step
    /// Runs the coroutine until it yields or ends; times the step.
    pub(super) fn step<'py>(
        slf: &Bound<'py, Self>,
        ctx: &PyCtx,
        input: StepInput<'py>,
    ) -> Step<'py> {
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
    // ANCHOR_END: step

    /// The coroutine ended (`err`: with an exception). Makes sure the
    /// client gets a complete response or a closed connection.
    pub(super) fn finish(slf: &Bound<'_, Self>, ctx: &PyCtx, err: Option<PyErr>) {
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
                    call.queue_error(py, 500, "Internal Server Error", &server);
                } else if !call.resp.complete {
                    // An app that stops streaming because the client left
                    // (SSE, a long download) did the right thing: no error.
                    let client_left = {
                        let s = call.x.lock();
                        s.disconnected || s.client_eof
                    };
                    if err.is_none() && !client_left {
                        log::error!(
                            "{}: the app returned before its response was complete: closing the connection",
                            call.label()
                        );
                    }
                    let mut s = call.x.lock();
                    s.abort = true;
                    s.out_done = true;
                    drop(s);
                    super::wake_io(py, &call.x);
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
                    super::wake_io(py, &call.x);
                } else {
                    call.x.lock().out_done = true;
                    super::wake_io(py, &call.x);
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
    fn queue_error(&mut self, py: Python<'_>, status: u16, message: &str, server: &str) {
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
        super::wake_io(py, &self.x);
    }

    /// The I/O thread announced a change: resolve what can be resolved.
    /// The waiting Task resumes right here (see [`Waiter`]).
    pub(super) fn wake(slf: &Bound<'_, Self>, ctx: &PyCtx) {
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
    pub(super) fn wait(slf: &Bound<'_, Self>, ctx: &PyCtx) {
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
}

#[pymethods]
impl AsgiCall {
    /// `coro.send(value)`; asyncio's Task uses `__next__` instead when the
    /// value is None (its every step).
    fn send<'py>(slf: &Bound<'py, Self>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        Self::resume(slf, value)?.ok_or_else(|| PyStopIteration::new_err(()))
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

    pub(super) fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
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

    /// Every step of the Task after the first (`PyIter_Send(coro, None)`
    /// takes the `tp_iternext` slot). The end is `Ok(None)`: NULL without
    /// an exception set, which CPython reads as "returned None", where
    /// raising StopIteration would create, normalise and drop an exception
    /// object for every request.
    fn __next__<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, PyAny>>> {
        Self::resume(slf, slf.py().None().into_bound(slf.py()))
    }

    /// What asyncio shows as the Task's coroutine (`coro=<...>`).
    #[getter]
    fn __qualname__(&self) -> String {
        format!("stage6.call[{}]", self.label())
    }

    fn __repr__(&self) -> String {
        format!("<stage6 ASGI call {}>", self.label())
    }
}

impl AsgiCall {
    /// The next step: what the coroutine yields, or None once it is done.
    pub(super) fn resume<'py>(
        slf: &Bound<'py, Self>,
        value: Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        let pending = slf.borrow_mut().pending.take();
        if let Some(fut) = pending {
            // Hand the Task what the first step (run outside it) yielded, as
            // the coroutine would have: the future it waits for, still marked
            // `_asyncio_future_blocking` by its `__await__`, or None (a bare
            // `yield`, `asyncio.sleep(0)`: the Task steps again next turn).
            // A future already done is fine too: the Task's wake-up runs on
            // the next turn.
            return Ok(Some(fut.into_bound(py)));
        }
        let ctx = ctx();
        match Self::step(slf, &ctx, StepInput::Send(value)) {
            Step::Yielded(v) => Ok(Some(v)),
            Step::Done => Ok(None),
        }
    }
}

impl crate::shared::XState {
    fn disconnected_unsent(&self) -> (bool, usize) {
        (self.disconnected || self.io_done, self.unsent)
    }
}

/// `message[key]`, `Err(())` when it is missing. A dict (what apps send)
/// is read with a plain dict lookup: `message.get_item` goes through the
/// mapping protocol and raises a KeyError (an exception object made and
/// dropped) for every absent key, like the `more_body` hello leaves out.
pub(super) fn field<'py>(
    message: &Bound<'py, PyAny>,
    key: &Bound<'py, PyString>,
) -> Result<Bound<'py, PyAny>, ()> {
    match message.cast::<pyo3::types::PyDict>() {
        Ok(dict) => dict.get_item(key).ok().flatten().ok_or(()),
        Err(_) => message.get_item(key).map_err(|_| ()),
    }
}

pub(super) fn get_type<'py>(message: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
    let py = message.py();
    field(message, intern!(py, "type"))
        .map_err(|_| PyValueError::new_err("an ASGI message must be a dict with a 'type'"))?
        .cast_into::<PyString>()
        .map_err(|_| PyTypeError::new_err("an ASGI message's 'type' must be a str"))
}
