//! Starting an app call: the eager first step, bare or in a Task, and the
//! `call_soon` shadowing that lets a new Task's first step run at once.

use std::cell::RefCell;
use std::sync::atomic::Ordering;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::shared::{STATS, Start};

use super::call::{Step, StepInput};
use super::host::start_hosted;
use super::scope::build_scope;
use super::{AsgiCall, Eager, PyCtx, Receive, Send};

pub(super) fn start_call(py: Python<'_>, ctx: &PyCtx, mut start: Start) {
    STATS.requests.fetch_add(1, Ordering::Relaxed);
    ctx.hooks.request_started();
    // The scope first: then the call can take the head's method and target
    // (for its log lines) instead of copying them.
    let scope = build_scope(py, ctx, &start);
    let call = AsgiCall::new(&mut start);
    let call = match Bound::new(py, call) {
        Ok(c) => c,
        Err(e) => {
            e.print(py);
            return;
        }
    };
    let coro = (|| -> PyResult<Bound<'_, PyAny>> {
        let scope = scope?;
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
    // SAFETY: a type check of a live object.
    let is_coroutine = unsafe { ffi::PyCoro_CheckExact(coro.as_ptr()) } != 0;
    if !is_coroutine && !coro.hasattr(intern!(py, "send")).unwrap_or(false) {
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
    match ctx.config.eager {
        Eager::Host => start_hosted(py, ctx, &call),
        Eager::Bare => start_bare(py, ctx, &call),
        Eager::Task => start_task(py, ctx, &call),
    }
}

/// The app's first step from Rust, in a contextvars context of its own (a
/// Task copies the context it is created in; without one, a ContextVar set
/// by one request would be seen by the next). Returns the step and that
/// context, which the rest of the call runs in.
pub(super) fn first_step<'py>(
    py: Python<'py>,
    ctx: &PyCtx,
    call: &Bound<'py, AsgiCall>,
) -> PyResult<(Step<'py>, Bound<'py, PyAny>)> {
    // SAFETY: plain CPython context API calls with the GIL held; the new
    // context is entered and exited around the step, and owned by `context`.
    let context = unsafe {
        let c = ffi::PyContext_CopyCurrent();
        if c.is_null() {
            return Err(PyErr::fetch(py));
        }
        Bound::from_owned_ptr(py, c)
    };
    // SAFETY: as above.
    unsafe { ffi::PyContext_Enter(context.as_ptr()) };
    let step = AsgiCall::step(call, ctx, StepInput::Send(py.None().into_bound(py)));
    // SAFETY: as above: the context entered just before.
    unsafe { ffi::PyContext_Exit(context.as_ptr()) };
    Ok((step, context))
}

/// `--eager bare`: the first step with no Task; one is made only if the
/// coroutine really waits.
pub(super) fn start_bare(py: Python<'_>, ctx: &PyCtx, call: &Bound<'_, AsgiCall>) {
    let (step, context) = match first_step(py, ctx, call) {
        Ok(s) => s,
        Err(e) => return AsgiCall::finish(call, ctx, Some(e)),
    };
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
            if let Err(e) = spawn_task(py, ctx, call.as_any(), Some(&context)) {
                AsgiCall::finish(call, ctx, Some(e));
            }
        }
    }
}

/// Creates the Task first and runs the step it scheduled at once: what
/// `asyncio.Task(..., eager_start=True)` does on Python 3.12.
pub(super) fn start_task(py: Python<'_>, ctx: &PyCtx, call: &Bound<'_, AsgiCall>) {
    match spawn_task(py, ctx, call.as_any(), None) {
        Ok(_) => {
            if call.borrow().finished {
                STATS.eager_done.fetch_add(1, Ordering::Relaxed);
            } else {
                STATS.suspended.fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(e) => AsgiCall::finish(call, ctx, Some(e)),
    }
}

/// Wraps `coro` (an [`AsgiCall`]) in an asyncio Task and runs the Task's
/// first step now, instead of on the loop's next iteration.
pub(super) fn spawn_task<'py>(
    py: Python<'py>,
    ctx: &PyCtx,
    coro: &Bound<'py, PyAny>,
    context: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let (task, first_step) = new_task(py, ctx, coro, context)?;
    if let Some(step) = first_step {
        step.run(py)?;
    }
    Ok(task)
}

/// A Task's first step, taken back from the loop: `Task.__init__` asks the
/// loop to run it soon; whoever holds it runs it instead.
pub(super) struct FirstStep {
    callback: Py<PyAny>,
    context: Py<PyAny>,
}

impl FirstStep {
    /// Runs the step in the Task's context, as the loop's `Handle._run`
    /// would.
    pub(super) fn run(self, py: Python<'_>) -> PyResult<()> {
        // SAFETY: CPython context and call API with the GIL held; the context
        // is entered and exited around the call; the result is a new
        // reference (or NULL with an exception set).
        let result = unsafe {
            ffi::PyContext_Enter(self.context.as_ptr());
            let r = ffi::PyObject_CallNoArgs(self.callback.as_ptr());
            ffi::PyContext_Exit(self.context.as_ptr());
            r
        };
        if result.is_null() {
            return Err(PyErr::fetch(py));
        }
        // SAFETY: a new reference returned by the call above.
        drop(unsafe { Bound::from_owned_ptr(py, result) });
        Ok(())
    }
}

/// Wraps `coro` in an asyncio Task and takes back the first step the Task
/// scheduled: our [`CallSoon`] keeps it, or else it is popped from the end
/// of the loop's ready queue. `None` when neither worked: the step then
/// runs on the loop's next turn, as with any Task.
pub(super) fn new_task<'py>(
    py: Python<'py>,
    ctx: &PyCtx,
    coro: &Bound<'py, PyAny>,
    context: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyAny>, Option<FirstStep>)> {
    let lp = ctx.event_loop.bind(py);
    CAPTURE.with(|c| *c.borrow_mut() = Some(None));
    // The drain shadows the loop's call_soon for its whole batch (an
    // instance attribute wins over the method); while CAPTURE is set, our
    // CallSoon keeps the step the new Task schedules.
    let task = match context {
        // No keywords: the Task finds the loop as the running one (this
        // runs inside the loop), and a call without a keyword dict skips
        // the keyword parsing.
        None => ctx.task_type.bind(py).call1((coro,)),
        Some(c) => ctx.task_kwargs.bind(py).copy().and_then(|kwargs| {
            kwargs.set_item(intern!(py, "context"), c)?;
            ctx.task_type.bind(py).call((coro,), Some(&kwargs))
        }),
    };
    let captured = CAPTURE.with(|c| c.borrow_mut().take()).flatten();
    let task = task?;
    match captured {
        // The Task asked the loop (our `CallSoon`) to schedule its first
        // step: it is ours to run.
        Some((callback, Some(context))) => Ok((task, Some(FirstStep { callback, context }))),
        other => {
            // Not captured (a loop without our call_soon): the step is at
            // the end of the ready queue.
            if let Some((callback, None)) = other {
                lp.call_method1(intern!(py, "call_soon"), (callback,))?;
            }
            let Ok(ready) = lp.getattr(intern!(py, "_ready")) else {
                // A loop whose ready queue is out of reach.
                return Ok((task, None));
            };
            let handle = ready.call_method0(intern!(py, "pop"))?;
            let callback = handle.getattr(intern!(py, "_callback"))?;
            let ours = callback
                .getattr(intern!(py, "__self__"))
                .is_ok_and(|s| s.is(&task));
            if !ours {
                // Not the step we expected: put it back, the loop runs it.
                ready.call_method1(intern!(py, "append"), (handle,))?;
                return Ok((task, None));
            }
            let context = handle.getattr(intern!(py, "_context"))?.unbind();
            Ok((
                task,
                Some(FirstStep {
                    callback: callback.unbind(),
                    context,
                }),
            ))
        }
    }
}

pub(super) type Captured = Option<(Py<PyAny>, Option<Py<PyAny>>)>;

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
