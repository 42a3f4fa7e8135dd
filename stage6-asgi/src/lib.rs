//! Stage 6: an ASGI 3.0 server. One process holds thousands of connections
//! with two threads: tokio owns the sockets, one asyncio loop runs the app.
//!
//! ```text
//! cargo run -p stage6-asgi                          # a built-in hello ASGI app
//! cargo run -p stage6-asgi -- apps.asgi_lab:app     # the lab app
//! ```
//!
//! # Design
//!
//! ```text
//!  I/O thread (tokio, current-thread)          Python thread (asyncio loop, GIL)
//!  ----------------------------------          ---------------------------------
//!  accept, read, parse the head (http-codec)
//!  Event::Start ──── inbox + eventfd ────────▶ scope dict, app(scope, receive, send)
//!                                              first step: coro.send(None) from Rust
//!                                              send(): frame bytes into the exchange
//!  write the bytes ◀──── Notify ─────────────  (no GIL on the other side)
//!  body chunks, disconnects ── Event::Wake ──▶ resolve the waiting receive()/send()
//! ```
//!
//! - **No GIL on the I/O thread.** The tokio thread never calls into Python:
//!   it passes plain Rust data ([`shared::Event`]) through a locked queue and
//!   an eventfd the asyncio loop watches with `loop.add_reader`. The loop
//!   takes a whole batch of events per wake-up. The only GIL acquisitions on
//!   the request path are the loop thread coming back from `select`; their
//!   number is printed with `--stats` (see "Measured" in the report of issue
//!   18 and `shared::Stats`).
//! - **Eager first step.** `receive` and `send` are Rust objects whose
//!   awaitables complete at once when they can (`send` always can, unless the
//!   client is slow: back-pressure at 256 KiB queued). The first step of the
//!   app's coroutine is run from Rust with `PyIter_Send` right when the request
//!   arrives; an app that never really suspends (hello) finishes there, with
//!   no Task and no trip through the asyncio loop. A coroutine that yields an
//!   asyncio future not yet done becomes an asyncio Task from that point
//!   (`--eager bare`, the default); `--eager task` creates the Task first and
//!   runs its first step at once (Python 3.12's eager tasks), for libraries
//!   that need `asyncio.current_task()` before their first `await`.
//! - **Own awaitables, not pyo3-async-runtimes.** pyo3-async-runtimes turns
//!   Rust futures into asyncio futures by scheduling through the loop with
//!   `call_soon_threadsafe` (a GIL acquisition on the Rust side plus a trip
//!   through the loop for every resolution); the whole point here is to avoid
//!   both on the fast path, so `receive`/`send` are hand-written awaitables
//!   and the only cross-thread signal is the eventfd.
//! - **Blocked loop warning.** Every step of every app coroutine is timed;
//!   one that holds the loop longer than `--blocked-loop-warning` ms (default
//!   100, asyncio debug mode's `slow_callback_duration`) is logged with the
//!   request that caused it.
//!
//! # Running it in a forked worker (stage 3 `-k asgi`)
//!
//! [`serve_forever`] is the worker entry point, shaped like stage 1's and
//! stage 2's:
//!
//! ```ignore
//! let app: Py<PyAny> = stage6_asgi::load_app(&app_args)?;    // or preloaded in the master
//! let config = stage6_asgi::AsgiConfig::default();            // or from flags
//! stage6_asgi::serve_forever(listener, app, &config, stop_fd.as_fd(), &hooks)?;
//! ```
//!
//! It creates its tokio runtime, its I/O thread and its asyncio loop itself,
//! so it can be called in a freshly forked child (Python initialised in the
//! master and `PyOS_AfterFork_Child` already called, or not started at all:
//! then call [`start_python`] first). It runs the lifespan startup (an `Err`
//! if it fails: exit non-zero), serves until `stop` becomes readable or
//! `hooks.should_stop()` says so, lets running requests finish (up to
//! `graceful_timeout`), runs the lifespan shutdown and returns.
//! `hooks.heartbeat()` is called from the asyncio loop itself (a
//! `loop.call_later` callback every `heartbeat` interval, default 1 s): a loop
//! blocked by `time.sleep` stops beating and a master's `--timeout` catches
//! it. `hooks.request_started()`/`request_finished()` are called once per
//! request (and per WebSocket session) on the loop thread.

pub mod io;
pub mod py;
pub mod shared;

use std::ffi::CString;
use std::net::TcpListener;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Duration;

use http_codec::request::Limits;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule};
use wsgi_bridge::embed::{AppSource, StartError};
use wsgi_bridge::worker::WorkerHooks;

pub use py::Eager;

/// The hello app served without an app argument (built into the binary).
pub const HELLO_APP_SOURCE: &str = include_str!("../../apps/asgi_hello.py");
const SUPPORT_SOURCE: &str = include_str!("support.py");

/// Whether and how the app's lifespan scope is run (uvicorn's `--lifespan`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LifespanMode {
    /// Run it; an app that does not support it is served anyway.
    Auto,
    /// Run it; any failure stops the server.
    On,
    /// Do not run it.
    Off,
}

impl LifespanMode {
    fn as_str(self) -> &'static str {
        match self {
            LifespanMode::Auto => "auto",
            LifespanMode::On => "on",
            LifespanMode::Off => "off",
        }
    }
}

/// Which asyncio event loop runs the app (uvicorn's `--loop`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoopKind {
    /// The standard library's loop: the Task's first step runs at once
    /// (`--eager task`), which needs its Python-level ready queue.
    Asyncio,
    /// uvloop (libuv, in Cython): cheaper timers and callbacks; with
    /// `--eager task` the first step waits for the loop's next turn.
    Uvloop,
}

/// How the worker serves.
#[derive(Clone, Debug)]
pub struct AsgiConfig {
    pub limits: Limits,
    /// Idle time allowed between requests on a connection (`None`: close
    /// after each response). Default 5 s, as uvicorn.
    pub keep_alive: Option<Duration>,
    /// How long a client may take to send a head (or a body the app waits
    /// for) or to take a response.
    pub timeout: Duration,
    /// How long running requests get to finish after a stop.
    pub graceful_timeout: Duration,
    /// `root_path` in every scope (where the app is mounted).
    pub root_path: String,
    pub lifespan: LifespanMode,
    pub eager: Eager,
    pub event_loop: LoopKind,
    /// Warn when one step of an app coroutine holds the loop this long.
    pub slow_step: Duration,
    /// How often the loop calls `hooks.heartbeat()`.
    pub heartbeat: Duration,
    /// The `Server` header.
    pub server_header: String,
    /// Print the per-request cost counters at exit.
    pub stats: bool,
}

impl Default for AsgiConfig {
    fn default() -> Self {
        AsgiConfig {
            limits: Limits::default(),
            keep_alive: Some(Duration::from_secs(5)),
            timeout: Duration::from_secs(30),
            graceful_timeout: Duration::from_secs(30),
            root_path: String::new(),
            lifespan: LifespanMode::Auto,
            eager: Eager::Task,
            event_loop: LoopKind::Asyncio,
            slow_step: Duration::from_millis(100),
            heartbeat: Duration::from_secs(1),
            server_header: concat!("stage6-asgi/", env!("CARGO_PKG_VERSION")).to_string(),
            stats: std::env::var_os("STAGE6_STATS").is_some_and(|v| v != "0" && !v.is_empty()),
        }
    }
}

/// Starts Python (once per process) with the app's `sys.path` set up.
pub fn start_python(args: &wsgi_bridge::cli::AppArgs) -> Result<(), StartError> {
    wsgi_bridge::embed::start_python(&args.python_setup())
}

/// Starts Python if needed and imports the ASGI app the arguments name
/// (the built-in hello app without one).
pub fn load_app(args: &wsgi_bridge::cli::AppArgs) -> Result<Py<PyAny>, StartError> {
    let source = args.source()?;
    start_python(args)?;
    Python::attach(|py| match source {
        AppSource::BuiltinHello => {
            let code = CString::new(HELLO_APP_SOURCE).expect("no NUL in asgi_hello.py");
            let module = PyModule::from_code(py, &code, c"asgi_hello.py", c"asgi_hello")
                .map_err(|e| StartError::new(format!("the built-in hello app failed: {e}")))?;
            module
                .getattr("app")
                .map(Bound::unbind)
                .map_err(|e| StartError::new(format!("the built-in hello app has no app: {e}")))
        }
        other => wsgi_bridge::embed::load_app(py, &other),
    })
}

/// Serves `listener` with the ASGI `app` until a stop (see the crate docs).
/// Blocks; call it on the thread that should run the asyncio loop.
pub fn serve_forever(
    listener: TcpListener,
    app: Py<PyAny>,
    config: &AsgiConfig,
    stop: BorrowedFd<'_>,
    hooks: &dyn WorkerHooks,
) -> std::io::Result<()> {
    let fail = |what: &str, e: PyErr| {
        Python::attach(|py| {
            std::io::Error::other(format!(
                "{what}: {}",
                wsgi_bridge::embed::format_exception(py, &e).trim_end()
            ))
        })
    };
    let inbox = Arc::new(shared::Inbox::new()?);
    let stop_fd = stop.try_clone_to_owned()?;
    let stop_io = Arc::new(tokio::sync::Notify::new());
    let local = listener.local_addr()?;

    // SAFETY: the hooks outlive every use: they are reached only from
    // callbacks of the asyncio loop, which is closed (and the context
    // uninstalled) before this function returns.
    let hooks: &'static dyn WorkerHooks = unsafe { std::mem::transmute(hooks) };

    shared::STATS
        .attaches
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let setup = Python::attach(|py| -> PyResult<(Py<PyAny>, Py<PyAny>, Option<String>)> {
        py::register(py)?;
        let support = PyModule::from_code(
            py,
            &CString::new(SUPPORT_SOURCE).expect("no NUL"),
            c"stage6_support.py",
            c"stage6_support",
        )?;
        let asyncio = py.import("asyncio")?;
        let event_loop = match config.event_loop {
            LoopKind::Asyncio => asyncio.call_method0("new_event_loop")?,
            LoopKind::Uvloop => py.import("uvloop")?.call_method0("new_event_loop")?,
        };
        let original = event_loop.getattr("call_soon")?.unbind();
        // uvloop's loop has no instance dict: there the Task's first step
        // goes through the loop (see py::spawn_task).
        let _ = event_loop.setattr("call_soon", Bound::new(py, py::CallSoon { original })?);
        asyncio.call_method1("set_event_loop", (&event_loop,))?;
        if config.stats {
            support.call_method1(
                "count_turns",
                (&event_loop, wrap_pyfunction!(py::count_turn, py)?),
            )?;
        }
        let log = support.call_method1("make_logger", (wrap_pyfunction!(py::rust_log, py)?,))?;
        let state = PyDict::new(py);
        let lifespan = support.getattr("Lifespan")?.call1((
            app.bind(py),
            &state,
            config.lifespan.as_str(),
            log,
        ))?;
        let failure =
            event_loop.call_method1("run_until_complete", (lifespan.call_method0("startup")?,))?;
        let failure: Option<String> = failure.extract()?;
        let pyconfig = py::PyConfig {
            root_path: config.root_path.clone(),
            server: Some((local.ip().to_string(), local.port())),
            eager: config.eager,
            slow_step: config.slow_step,
            server_header: config.server_header.clone(),
        };
        let (http_template, ws_template) = py::templates(py, &pyconfig)?;
        py::install(py::PyCtx {
            app: app.clone_ref(py),
            event_loop: event_loop.clone().unbind(),
            inbox: inbox.clone(),
            state: state.unbind(),
            http_template,
            ws_template,
            config: pyconfig,
            hooks,
            waiting: Default::default(),
            disconnected_exc: support.getattr("ClientDisconnected")?.unbind(),
            task_type: asyncio.getattr("Task")?.unbind(),
            task_kwargs: {
                let k = PyDict::new(py);
                k.set_item("loop", &event_loop)?;
                k.unbind()
            },
            stop_io: stop_io.clone(),
            stop_asked: std::cell::Cell::new(false),
        });
        Ok((event_loop.unbind(), lifespan.unbind(), failure))
    });
    let (event_loop, lifespan, failure) =
        setup.map_err(|e| fail("starting the asyncio loop failed", e))?;
    if let Some(sentence) = failure {
        py::uninstall();
        return Err(std::io::Error::other(sentence));
    }

    let io_config = io::IoConfig {
        limits: config.limits.clone(),
        keep_alive: config.keep_alive,
        timeout: config.timeout,
        graceful_timeout: config.graceful_timeout,
        server_header: config.server_header.as_str().into(),
    };
    let result = std::thread::scope(|scope| {
        let inbox_io = inbox.clone();
        let stop_for_io = stop_io.clone();
        let io_thread = std::thread::Builder::new()
            .name("stage6-io".into())
            .spawn_scoped(scope, move || {
                io::run(listener, stop_fd, inbox_io, io_config, stop_for_io)
            })?;
        let ran = Python::attach(|py| -> PyResult<()> {
            let lp = event_loop.bind(py);
            lp.call_method1("add_reader", (inbox.fd(), Bound::new(py, py::Drain)?))?;
            let beat = Bound::new(
                py,
                py::Beat {
                    interval: config.heartbeat.as_secs_f64(),
                },
            )?;
            lp.call_method1("call_soon", (beat,))?;
            // The loop runs here until the I/O thread says it is drained.
            lp.call_method0("run_forever")?;
            lp.call_method1("remove_reader", (inbox.fd(),))?;
            lp.call_method1(
                "run_until_complete",
                (lifespan
                    .bind(py)
                    .call_method1("shutdown", (config.graceful_timeout.as_secs_f64(),))?,),
            )?;
            let support = py.import("stage6_support").ok();
            if let Some(cancel) = support.and_then(|s| s.getattr("cancel_leftovers").ok()) {
                let _ = lp.call_method1("run_until_complete", (cancel.call1((1.0,))?,));
            }
            lp.call_method0("close")?;
            Ok(())
        });
        // Make sure the I/O thread stops even if the loop failed.
        stop_io.notify_one();
        let io_result = io_thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the I/O thread panicked")));
        ran.map_err(|e| fail("the asyncio loop failed", e))?;
        io_result
    });
    py::uninstall();
    if config.stats {
        log::info!("{}", shared::STATS.report());
    }
    result
}
