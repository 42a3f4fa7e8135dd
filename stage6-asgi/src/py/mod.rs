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
//! there, without a trip through the loop, inside a standing Task's
//! identity (`host`). Only when it yields an asyncio future that is not
//! done does an asyncio Task drive the same `AsgiCall` (it looks like a
//! coroutine to asyncio: `send`, `throw`, `close`, `__await__`) from then
//! on. This is Python 3.12's eager task start, done by hand so that it
//! works on 3.11.
//!
//! The modules, in the order a request meets them:
//!
//! - `drain`: the loop's reader on the inbox eventfd ([`Drain`]), the
//!   heartbeat ([`Beat`]), the log and turn-count callbacks.
//! - `scope`: the scope dict of a request, from its parsed head.
//! - `start`: the eager first step (bare, or in a Task whose first step
//!   [`CallSoon`] catches).
//! - `host`: the default first step, in the identity of a standing Task
//!   ([`Host`]) that a request keeps if it really waits.
//! - `call`: [`AsgiCall`], one app call: stepping its coroutine, finishing
//!   it, waking it when the I/O thread reports.
//! - `receive_send`: the [`Receive`] and [`Send`] callables the app gets
//!   and the messages `receive()` returns.
//! - `http_send`, `websocket`: what `send()` does with each message type.
//! - `waiter`: [`Waiter`], the future a `receive()`/`send()` that must wait
//!   returns.

mod call;
mod drain;
mod host;
mod http_send;
mod receive_send;
mod scope;
mod start;
mod waiter;
mod websocket;

pub use call::AsgiCall;
pub use drain::{Beat, Drain, count_turn, rust_log};
pub use host::{Host, Standing};
pub use http_send::reason;
pub use receive_send::{Done, Ready, Receive, Send};
pub use scope::raw_path;
pub use start::CallSoon;
pub use waiter::Waiter;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::shared::{Exchange, Inbox, Outbox};
use wsgi_bridge::hooks::WorkerHooks;

/// How the first step of an app's coroutine is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Eager {
    /// `coro.send(None)` from Rust with a standing asyncio Task entered as
    /// the current task; a request that really waits keeps that Task, and
    /// the next request gets a new one (see `host`). `current_task()` works
    /// from the first line, and a request that never waits costs no Task.
    Host,
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
    /// The scope's `server` for each listener, in order: its host and
    /// port, or `None` for a unix socket (as uvicorn says).
    pub servers: Vec<Option<(String, u16)>>,
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
    /// The constant part of every scope, one per listener (its `server`).
    pub http_templates: Vec<Py<PyDict>>,
    pub ws_templates: Vec<Py<PyDict>>,
    pub config: PyConfig,
    pub hooks: &'static dyn WorkerHooks,
    /// Calls waiting on a `receive()` or `send()` future, by exchange id.
    pub waiting: RefCell<HashMap<u64, Py<AsgiCall>>>,
    pub disconnected_exc: Py<PyAny>,
    pub task_type: Py<PyAny>,
    /// asyncio's `_enter_task` and `_leave_task`: what a Task's step does
    /// to be `current_task()` while it runs.
    pub enter_task: Py<PyAny>,
    pub leave_task: Py<PyAny>,
    /// The standing Task of `--eager host`, parked between requests.
    pub standing: RefCell<Option<host::Standing>>,
    /// `{"loop": event_loop}`, the keyword arguments of every Task.
    pub task_kwargs: Py<PyDict>,
    /// A [`CallSoon`], if the loop lets us shadow its `call_soon`.
    pub call_soon: Option<Py<PyAny>>,
    pub stop_io: Arc<tokio::sync::Notify>,
    pub stop_asked: std::cell::Cell<bool>,
    /// The I/O thread's outbox, and when its eventfd is to be written for
    /// what [`wake_io`] queued.
    pub outbox: Arc<Outbox>,
    pub signal_io: std::cell::Cell<SignalIo>,
}

/// When the Python thread writes the I/O thread's eventfd.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub enum SignalIo {
    /// Nothing queued: the next [`wake_io`] schedules a [`FlushOutbox`].
    #[default]
    Idle,
    /// A [`FlushOutbox`] is scheduled with `call_soon`.
    Scheduled,
    /// [`Drain`] runs: it writes the eventfd when it has handed every event
    /// out (the responses of apps that finish in their first step).
    AtDrainEnd,
}

// ANCHOR: wake_io
/// Has the I/O thread write what the app queued on `x` (or read more of its
/// body). The eventfd is written once for everything the apps queue in one
/// turn of the loop: at the end of [`Drain`], or by a [`FlushOutbox`] the
/// loop runs after the callbacks already due (every Task this turn woke).
/// Writing it at once cost one wake-up of the I/O thread for nearly every
/// WebSocket message: the I/O thread, on the other core, took each
/// exchange as soon as it was queued.
pub(super) fn wake_io(py: Python<'_>, x: &Arc<Exchange>) {
    if !x.outbox.push_quiet(x.clone()) {
        return; // the eventfd is written already for this batch
    }
    let Some(ctx) = CTX.with(|c| c.borrow().clone()) else {
        // The loop is gone (the last steps of a shutdown): at once.
        x.outbox.signal_pending();
        return;
    };
    if ctx.signal_io.get() != SignalIo::Idle {
        return;
    }
    let scheduled = ctx
        .event_loop
        .bind(py)
        .call_method1(intern!(py, "call_soon"), (FlushOutbox,))
        .is_ok();
    if scheduled {
        ctx.signal_io.set(SignalIo::Scheduled);
    } else {
        // A closed loop: at once.
        ctx.outbox.signal_pending();
    }
}

/// `loop.call_soon(FlushOutbox())`: writes the I/O thread's eventfd for the
/// exchanges queued since it was scheduled.
#[pyclass(module = "stage6_asgi", frozen)]
pub struct FlushOutbox;

#[pymethods]
impl FlushOutbox {
    fn __call__(&self) {
        let ctx = ctx();
        ctx.signal_io.set(SignalIo::Idle);
        ctx.outbox.signal_pending();
    }
}
// ANCHOR_END: wake_io

thread_local! {
    static CTX: RefCell<Option<Rc>> = const { RefCell::new(None) };
}
type Rc = std::rc::Rc<PyCtx>;

pub fn install(ctx: PyCtx) {
    CTX.with(|c| *c.borrow_mut() = Some(std::rc::Rc::new(ctx)));
}

/// At shutdown, after the last request: ends the standing Task of
/// `--eager host` if it never adopted a request.
pub fn release_standing(py: Python<'_>) -> PyResult<()> {
    host::release_standing(py, &ctx())
}

pub fn uninstall() -> Option<Rc> {
    CTX.with(|c| c.borrow_mut().take())
}

fn ctx() -> Rc {
    CTX.with(|c| c.borrow().clone())
        .expect("the stage 6 loop is running")
}

/// Builds the constant part of every scope once, for the listener whose
/// address is `server`; each request copies it. The per-request keys are
/// there too (None), in the order they are set: a copy then has its final
/// size and its key table copied whole, and each request only replaces
/// values (no insertion, no resize).
pub fn templates(
    py: Python<'_>,
    config: &PyConfig,
    server: &Option<(String, u16)>,
) -> PyResult<(Py<PyDict>, Py<PyDict>)> {
    let asgi = PyDict::new(py);
    asgi.set_item("version", "3.0")?;
    asgi.set_item("spec_version", "2.4")?;
    let server: Bound<'_, PyAny> = match server {
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
        for key in scope::PER_REQUEST {
            if *key != "method" || kind == "http" {
                d.set_item(PyString::intern(py, key), py.None())?;
            }
        }
        if kind == "websocket" {
            d.set_item(intern!(py, "subprotocols"), py.None())?;
        }
        Ok(d.unbind())
    };
    Ok((make("http", "http")?, make("websocket", "ws")?))
}

/// Registers the classes asyncio must see as coroutines.
pub fn register(py: Python<'_>) -> PyResult<()> {
    let abc = py.import("collections.abc")?;
    abc.getattr("Coroutine")?
        .call_method1("register", (py.get_type::<AsgiCall>(),))?;
    abc.getattr("Coroutine")?
        .call_method1("register", (py.get_type::<Host>(),))?;
    Ok(())
}
