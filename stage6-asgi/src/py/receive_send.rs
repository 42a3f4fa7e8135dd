//! `receive` and `send` as the app sees them, and what `receive()` returns.

use std::cell::RefCell;

use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::{AsgiCall, Waiter, ctx};
use crate::shared::{Kind, WsIn};

impl AsgiCall {
    /// The next message for `receive()`, if there is one now.
    pub(super) fn try_receive<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, PyDict>>> {
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
                        super::wake_io(py, &x);
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
                        super::wake_io(py, &x);
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
                    super::wake_io(py, &x);
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
}

pub(super) fn http_request<'py>(
    py: Python<'py>,
    body: &[u8],
    more: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
    d.set_item(intern!(py, "body"), PyBytes::new(py, body))?;
    d.set_item(intern!(py, "more_body"), more)?;
    Ok(d)
}

pub(super) fn disconnect(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
    Ok(d)
}

pub(super) fn ws_disconnect<'py>(
    py: Python<'py>,
    code: u16,
    reason: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
    d.set_item(intern!(py, "code"), code)?;
    d.set_item(intern!(py, "reason"), reason)?;
    Ok(d)
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

pub(super) fn done(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
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

// ANCHOR: receive
/// The `receive` callable given to the app.
#[pyclass(module = "stage6_asgi", frozen)]
pub struct Receive {
    pub(super) call: Py<AsgiCall>,
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
// ANCHOR_END: receive

/// The `send` callable given to the app. The message is handled when
/// `send()` is called; what it returns is awaited only to wait for room
/// when the client reads slower than the app writes.
#[pyclass(module = "stage6_asgi", frozen)]
pub struct Send {
    pub(super) call: Py<AsgiCall>,
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
