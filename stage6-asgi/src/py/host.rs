//! `--eager host` (the default): one standing asyncio Task that requests
//! borrow for their first step, so a request that finishes at once costs no
//! Task of its own, yet `asyncio.current_task()` is a real Task from the
//! app's first line.
//!
//! A Task on Python 3.11 costs about 9,000 instructions: a name made with
//! `PyUnicode_FromFormat`, its registration in asyncio's `WeakSet` of all
//! tasks (Python code), the `call_soon` of its first step, and the same
//! again when it dies. Most requests never wait (hello's `await send(...)`
//! completes at once), so most of them would pay it for nothing. Here:
//!
//! 1. A standing Task is created, its coroutine a [`Host`], and not started:
//!    the first step it asks the loop to schedule is kept here instead.
//! 2. Each request's first step runs from Rust with that Task entered as
//!    the loop's current task (`asyncio._enter_task`, what a Task's own
//!    step does), in a contextvars context of its own.
//! 3. A request that finishes there leaves the Task as it was, for the next
//!    one.
//! 4. A request that really waits keeps the Task: the kept first step runs
//!    now, and the `Host` hands the Task the future the app waits for. From
//!    then on the Task drives that request, exactly as if it had been made
//!    for it (the same task for `current_task()` before and after the wait,
//!    which anyio's cancel scopes check). The next request gets a new
//!    standing Task.

use pyo3::exceptions::PyStopIteration;
use pyo3::ffi;
use pyo3::prelude::*;

use super::call::{Step, StepInput};
use super::start::{FirstStep, first_step, new_task};
use super::{AsgiCall, PyCtx, Waiter, ctx};
use crate::shared::STATS;
use std::sync::atomic::Ordering;

/// The coroutine of the standing Task. Once it has adopted a request, it
/// steps that request's [`AsgiCall`] in the request's own contextvars
/// context.
#[pyclass(module = "stage6_asgi")]
pub struct Host {
    /// The request it drives, once one has really waited.
    call: Option<Py<AsgiCall>>,
    /// That request's contextvars context (its first step ran in it).
    context: Option<Py<PyAny>>,
    /// What the Task waits on while parked (only when its first step could
    /// not be kept: it then ran on the loop's next turn).
    parked: Option<Py<Waiter>>,
    /// Cancelled, closed or released before it adopted a request: the Task
    /// is over.
    dead: bool,
}

/// The standing Task, its coroutine, and its first step, not run yet.
pub struct Standing {
    task: Py<PyAny>,
    host: Py<Host>,
    first_step: Option<FirstStep>,
}

// ANCHOR: start_hosted
/// Runs a request's first step inside the standing Task's identity.
pub(super) fn start_hosted(py: Python<'_>, ctx: &PyCtx, call: &Bound<'_, AsgiCall>) {
    let (task, host) = match standing(py, ctx) {
        Ok(s) => s,
        Err(e) => {
            AsgiCall::finish(call, ctx, Some(e));
            return;
        }
    };
    let lp = ctx.event_loop.bind(py);
    let task = task.bind(py);
    // `current_task()` is the standing Task for this step, as if its own
    // step were running.
    if let Err(e) = ctx.enter_task.bind(py).call1((lp, task)) {
        AsgiCall::finish(call, ctx, Some(e));
        return;
    }
    let stepped = first_step(py, ctx, call);
    if let Err(e) = ctx.leave_task.bind(py).call1((lp, task)) {
        e.print(py);
    }
    let (step, context) = match stepped {
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
            // The Task is this request's now; the next one gets a new Task.
            let first_step = ctx.standing.borrow_mut().take().and_then(|s| s.first_step);
            let parked = {
                let mut h = host.bind(py).borrow_mut();
                h.call = Some(call.clone().unbind());
                h.context = Some(context.unbind());
                h.parked.take()
            };
            // The Task's first step runs now: it asks the Host for the next
            // value, the future the app waits for, and waits on that.
            let started = match (first_step, parked) {
                (Some(step), _) => step.run(py),
                // Its first step ran on the loop's turn and parked it on a
                // Waiter (a loop whose `call_soon` we could not take): wake
                // it (a Waiter runs its callbacks at once).
                (None, Some(parked)) => {
                    Waiter::resolve(parked.bind(py), Ok(py.None().into_bound(py)));
                    Ok(())
                }
                // Its first step is still in the loop's queue: it will ask
                // the Host then.
                (None, None) => Ok(()),
            };
            if let Err(e) = started {
                AsgiCall::finish(call, ctx, Some(e));
            }
        }
    }
}
// ANCHOR_END: start_hosted

/// The standing Task and its Host, made if there is none.
fn standing(py: Python<'_>, ctx: &PyCtx) -> PyResult<(Py<PyAny>, Py<Host>)> {
    if let Some(s) = ctx.standing.borrow().as_ref()
        && !s.host.bind(py).borrow().dead
    {
        return Ok((s.task.clone_ref(py), s.host.clone_ref(py)));
    }
    let host = Bound::new(
        py,
        Host {
            call: None,
            context: None,
            parked: None,
            dead: false,
        },
    )?;
    let (task, first_step) = new_task(py, ctx, host.as_any(), None)?;
    let (task, host) = (task.unbind(), host.unbind());
    *ctx.standing.borrow_mut() = Some(Standing {
        task: task.clone_ref(py),
        host: host.clone_ref(py),
        first_step,
    });
    Ok((task, host))
}

/// At shutdown: the standing Task, if it never adopted a request, ends (its
/// kept first step runs and finds the Host released), so that asyncio does
/// not report a pending Task destroyed.
pub fn release_standing(py: Python<'_>, ctx: &PyCtx) -> PyResult<()> {
    let Some(standing) = ctx.standing.borrow_mut().take() else {
        return Ok(());
    };
    standing.host.bind(py).borrow_mut().dead = true;
    match standing.first_step {
        Some(step) => step.run(py),
        None => {
            let parked = standing.host.bind(py).borrow_mut().parked.take();
            if let Some(parked) = parked {
                Waiter::resolve(parked.bind(py), Ok(py.None().into_bound(py)));
            }
            Ok(())
        }
    }
}

impl Host {
    /// The next step of the Task: park, or step the adopted request.
    fn resume<'py>(
        slf: &Bound<'py, Self>,
        input: StepInput<'py>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        let adopted = {
            let h = slf.borrow();
            h.call
                .as_ref()
                .map(|c| (c.clone_ref(py), h.context.as_ref().map(|c| c.clone_ref(py))))
        };
        let Some((call, context)) = adopted else {
            return Self::park(slf, input);
        };
        let call = call.into_bound(py);
        // SAFETY: CPython context API with the GIL held, entered and exited
        // around the step; `context` is kept alive by the Host.
        if let Some(c) = &context {
            unsafe { ffi::PyContext_Enter(c.as_ptr()) };
        }
        let r = match input {
            StepInput::Send(value) => AsgiCall::resume(&call, value),
            StepInput::Throw(exc) => {
                call.borrow_mut().pending = None;
                let ctx = ctx();
                Ok(match AsgiCall::step(&call, &ctx, StepInput::Throw(exc)) {
                    Step::Yielded(v) => Some(v),
                    Step::Done => None,
                })
            }
        };
        if let Some(c) = &context {
            unsafe { ffi::PyContext_Exit(c.as_ptr()) };
        }
        r
    }

    /// No request adopted yet: a first step run by the loop (when it could
    /// not be kept) parks the Task on a fresh Waiter; an exception thrown in
    /// (the Task cancelled, at shutdown) or a release ends it.
    fn park<'py>(
        slf: &Bound<'py, Self>,
        input: StepInput<'py>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        if let StepInput::Throw(exc) = input {
            slf.borrow_mut().dead = true;
            return Err(PyErr::from_value(exc));
        }
        if slf.borrow().dead {
            // Released at shutdown: the Task ends.
            return Ok(None);
        }
        let ctx = ctx();
        let waiter = Waiter::new(py, &ctx)?;
        waiter.borrow_mut().blocking = true;
        slf.borrow_mut().parked = Some(waiter.clone().unbind());
        Ok(Some(waiter.into_any()))
    }
}

#[pymethods]
impl Host {
    fn send<'py>(slf: &Bound<'py, Self>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        Self::resume(slf, StepInput::Send(value))?.ok_or_else(|| PyStopIteration::new_err(()))
    }

    #[pyo3(signature = (typ, val=None, tb=None))]
    fn throw<'py>(
        slf: &Bound<'py, Self>,
        typ: Bound<'py, PyAny>,
        val: Option<Bound<'py, PyAny>>,
        tb: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = tb;
        let exc = match val {
            Some(v) if !v.is_none() => v,
            _ => typ,
        };
        Self::resume(slf, StepInput::Throw(exc))?.ok_or_else(|| PyStopIteration::new_err(()))
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let call = {
            let mut h = slf.borrow_mut();
            h.dead = true;
            h.call.take()
        };
        if let Some(call) = call {
            AsgiCall::close(call.bind(py))?;
        }
        Ok(())
    }

    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Every step of the Task with None (see [`AsgiCall`]'s `__next__`).
    fn __next__<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, PyAny>>> {
        Self::resume(slf, StepInput::Send(slf.py().None().into_bound(slf.py())))
    }

    /// What asyncio shows as the Task's coroutine (`coro=<...>`).
    #[getter]
    fn __qualname__(&self, py: Python<'_>) -> String {
        match &self.call {
            Some(call) => format!("stage6.host[{}]", call.bind(py).borrow().label()),
            None => "stage6.host".to_owned(),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("<{}>", self.__qualname__(py))
    }
}
