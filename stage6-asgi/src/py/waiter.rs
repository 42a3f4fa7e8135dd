//! Waiting without an asyncio Future: [`Waiter`].

use super::PyCtx;
use pyo3::exceptions::PyStopIteration;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

pub(super) enum WaitState {
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
    pub(super) state: WaitState,
    pub(super) callbacks: Vec<(Py<PyAny>, Option<Py<PyAny>>)>,
    #[pyo3(get, set, name = "_asyncio_future_blocking")]
    pub(super) blocking: bool,
    pub(super) event_loop: Py<PyAny>,
}

impl Waiter {
    pub(super) fn new<'py>(py: Python<'py>, ctx: &PyCtx) -> PyResult<Bound<'py, Waiter>> {
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

    pub(super) fn is_done(&self) -> bool {
        !matches!(self.state, WaitState::Pending)
    }

    // ANCHOR: waiter_resolve
    /// Sets the outcome and runs the done callbacks now, each in its context.
    pub(super) fn resolve(slf: &Bound<'_, Waiter>, outcome: PyResult<Bound<'_, PyAny>>) {
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
    // ANCHOR_END: waiter_resolve
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

pub(super) fn asyncio_error(py: Python<'_>, name: &str, msg: &str) -> PyErr {
    match py
        .import("asyncio")
        .and_then(|m| m.getattr(name))
        .and_then(|t| t.call1((msg,)))
    {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}
