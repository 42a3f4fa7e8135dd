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
//!  write the bytes ◀─── outbox + eventfd ────  (no GIL on the other side)
//!  body chunks, disconnects ── Event::Wake ──▶ resolve the waiting receive()/send()
//! ```
//!
//! - **No GIL on the I/O thread.** The tokio thread never calls into Python:
//!   it passes plain Rust data ([`shared::Event`]) through a locked queue and
//!   an eventfd the asyncio loop watches with `loop.add_reader`. The loop
//!   takes a whole batch of events per wake-up. The only GIL acquisitions on
//!   the request path are the loop thread coming back from `select`: about
//!   one per request with a single client, and 0.06-0.09 per request (or
//!   WebSocket message) under load, where one wake-up carries a batch.
//!   `--stats` (or `STAGE6_STATS=1`) prints these counts at exit
//!   ([`shared::Stats`]). The other way, the loop thread puts exchanges with
//!   work for the I/O thread in an outbox ([`shared::Outbox`]) and writes its
//!   eventfd once per batch; a task of the I/O thread wakes the connections.
//!   (Calling tokio's `Notify::notify_one` from the loop thread wrote tokio's
//!   own eventfd once per response: 1.05 `write` calls per request, 0.29 with
//!   the outbox.)
//! - **Eager first step.** `receive` and `send` are Rust objects whose
//!   awaitables complete at once when they can (`send` always can, unless the
//!   client is slow: back-pressure at 256 KiB queued). The first step of the
//!   app's coroutine runs from Rust (`PyIter_Send`, the C form of
//!   `coro.send(None)`) as soon as the request arrives; an app that never
//!   really suspends (hello) finishes there, without a trip through the
//!   asyncio loop. Three ways, `--eager`:
//!   - `host` (the default): a standing asyncio Task lends itself to each
//!     request's first step (it is entered as the loop's current task with
//!     `asyncio.tasks._enter_task`, as a Task's own step does). A request
//!     that finishes there costs no Task; one that really waits keeps the
//!     standing Task, which drives it from then on, and the next request
//!     gets a new one ([`py::Host`]). `asyncio.current_task()` works from
//!     the app's first line and stays the same across waits, which anyio
//!     (Starlette, FastAPI) and `asyncio.timeout` need. A Task costs about
//!     9k instructions on 3.11 (its name, asyncio's WeakSet of all tasks,
//!     `call_soon`): callgrind counts 42.9k instructions per hello request
//!     with `host`, 51.6k with `task`.
//!   - `task`: an asyncio Task per request, created first and its first
//!     step run at once, which is what Python 3.12's eager tasks do, done by
//!     hand for 3.11: the loop's `call_soon` (shadowed by [`py::CallSoon`])
//!     hands back the step the new Task schedules, and it runs right there.
//!   - `bare`: no Task at all unless the coroutine really suspends; a
//!     contextvars context of its own per request (42.0k instructions), but
//!     `asyncio.current_task()` is None until the first suspension: FastAPI's
//!     plain `def` routes fail (anyio finds no running task).
//! - **Waiting without asyncio Futures.** A `receive()` that must wait
//!   returns a [`py::Waiter`], a minimal asyncio-compatible future the Task
//!   waits on (asyncio accepts any object with `_asyncio_future_blocking`,
//!   `add_done_callback`, `result`). When the I/O thread reports data, the
//!   drain callback resolves it and calls the Task's wake-up directly: the
//!   app handles a body chunk or WebSocket message in the same turn of the
//!   loop, where an `asyncio.Future` would schedule one more turn.
//! - **Own awaitables, not pyo3-async-runtimes.** pyo3-async-runtimes 0.30
//!   (which matches pyo3 0.30) resolves an asyncio future from the Rust side
//!   with `call_soon_threadsafe` under the GIL: a GIL acquisition on the
//!   tokio thread (contending with the loop) plus one more loop turn per
//!   resolution, and it has no notion of running a coroutine's first step
//!   eagerly. Both are what this design avoids, so it was not adopted; it was
//!   not benchmarked head to head.
//! - **The loop.** `--loop auto` (the default: uvloop when it is installed,
//!   else asyncio's, as uvicorn chooses), `asyncio` or `uvloop`. uvloop's
//!   timers and callbacks are in C; `uvloop.Loop` is a Python subclass of
//!   its Cython loop, so the `call_soon` shadowing works there too and Tasks
//!   start eagerly on both. Callgrind, one process: a `/io?ms=10` request
//!   takes 116.7k instructions on asyncio's loop and 82.7k on uvloop's (the
//!   timer, the future and the wake-up are Python code in asyncio); hello
//!   42.9k and 41.5k.
//! - **Blocked loop warning.** Every step of every app coroutine is timed
//!   (the Task drives an [`py::AsgiCall`], which steps the app's coroutine);
//!   one that holds the loop longer than `--blocked-loop-warning` ms (default
//!   100, asyncio debug mode's `slow_callback_duration`) is logged with the
//!   request that caused it. Tasks the app spawns itself are not timed.
//! - **Memory.** An idle keep-alive connection gives its read buffer back
//!   after 50 ms (then 2-3 KB of RSS each: its socket and task); WebSocket
//!   read buffers are 8 KiB (tungstenite's default 128 KiB is zeroed on
//!   every read).
//!
//! # Measured (2 workers each, loopback, the course's load generator on the same 2-core machine)
//!
//! `BENCH_QUICK=1 cargo bench --bench stages -- '^(hello|io256|wsecho)/(null|stage3-asgi|uvicorn|granian-asgi)$'`,
//! four undisturbed runs (single runs vary by ±10-20%; compare within one
//! run). `null` is course-bench's null server: the same shape and I/O
//! thread, no Python, the bound of this machine and load generator.
//!
//! | workload | stage 3 `-k asgi` | uvicorn (uvloop, httptools) | granian asgi | null server |
//! |---|---|---|---|---|
//! | hello, 32 connections | 63.1-66.8k req/s | 33.9-42.6k | 40.4-42.5k | 110-126k |
//! | hello, server CPU per request | 18-19 µs | 30-33 µs | 34-36 µs | 7-8 µs |
//! | `/io?ms=10`, 256 connections (25.6k if sleeping were free) | 17.2-19.9k | 16.1-18.0k | 16.8-18.5k | 18.4-20.0k |
//! | `/io?ms=10`, server CPU per request | 28-51 µs | 47-62 µs | 39-55 µs | 25-30 µs |
//! | WebSocket echo, 32 clients (messages/s) | 63.5-70.0k | 56.3-58.6k | 30.3-37.5k | 83.3-94.0k |
//! | WebSocket echo, server CPU per message | 15-17 µs | 21-22 µs | 37-45 µs | 9-10 µs |
//!
//! Same-run ratios, hello: 1.56-1.60x granian, 1.54-1.86x uvicorn; `/io`:
//! 86-105% of the null server (uvicorn 83-95%, granian 90-98%); WebSocket
//! echo: 1.12-1.23x uvicorn, where the null server shows 1.47-1.61x. User-space
//! instructions per hello request (callgrind, one process): 42.9k (51.6k
//! with `--eager task`, 42.0k with `--eager bare`), granian 69.6k, uvicorn
//! 120.2k. RSS per idle keep-alive connection (10,000 of them, one worker):
//! 3.2 KiB, uvicorn 7.3, granian 20.3, hypercorn 9.8.
//!
//! The loop thread takes the GIL back once per request with a single
//! client, and 0.06-0.09 times per request or message under load (`--stats`).
//!
//! # ASGI coverage
//!
//! HTTP scope with every field (`type`, `asgi`, `http_version`, `method`,
//! `scheme`, `path` (percent-decoded UTF-8), `raw_path`, `query_string`,
//! `root_path`, `headers` (lower-cased, in order, repeats kept), `client`,
//! `server`, `state`); `http.request` with `more_body` (read ahead at most
//! 64 KiB, `100 Continue` on the first `receive()`); `http.response.start`/
//! `body` with `more_body` (Content-Length when the whole body comes in one
//! message, chunked otherwise on HTTP/1.1, close-delimited on 1.0; HEAD, 204
//! and 304 without body); `http.disconnect`; `send()` after a disconnect
//! raises an `OSError` subclass (spec 2.4). Lifespan (`--lifespan
//! auto|on|off`) with `state`. WebSocket: handshake (400/426 for invalid
//! ones, 403 when the app closes first), subprotocols, accept headers, text
//! and binary, fragmented messages, ping/pong, close codes and reasons,
//! `websocket.disconnect`, 1012 on server shutdown. Not implemented: the
//! extensions (`http.response.trailers`, `http.response.pathsend`,
//! `websocket.http.response` denial responses), ASGI 2 (double-callable)
//! apps, HTTP/2, TLS.
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
use wsgi_bridge::conn::Listener;
use wsgi_bridge::embed::{AppSource, StartError};
use wsgi_bridge::hooks::WorkerHooks;

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
    /// uvloop if it is installed, else asyncio's (uvicorn's default).
    Auto,
    /// The standard library's loop.
    Asyncio,
    /// uvloop (libuv, in Cython): cheaper timers and callbacks.
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
            eager: Eager::Host,
            event_loop: LoopKind::Auto,
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
    serve_all(vec![Listener::Tcp(listener)], app, config, stop, hooks)
}

/// [`serve_forever`] on several listening sockets, TCP or unix (stage 3's
/// `-k asgi` with `-b` given more than once, or `-b unix:PATH`): the I/O
/// thread accepts on all of them, and each scope's `server` is the address
/// of the listener its connection came through.
pub fn serve_all(
    listeners: Vec<Listener>,
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
    let outbox = Arc::new(shared::Outbox::new()?);
    let stop_fd = stop.try_clone_to_owned()?;
    let stop_io = Arc::new(tokio::sync::Notify::new());
    let servers: Vec<Option<(String, u16)>> = listeners
        .iter()
        .map(|l| l.tcp_addr().map(|a| (a.ip().to_string(), a.port())))
        .collect();

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
            LoopKind::Auto => match py.import("uvloop") {
                Ok(uvloop) => uvloop.call_method0("new_event_loop")?,
                Err(_) => asyncio.call_method0("new_event_loop")?,
            },
        };
        // The loop's call_soon is shadowed while Tasks are created (see
        // py::spawn_task); a loop without an instance dict refuses it, and
        // then a Task's first step goes through the loop.
        let call_soon = {
            let original = event_loop.getattr("call_soon")?.unbind();
            let capture = Bound::new(py, py::CallSoon { original })?.into_any();
            let ok = event_loop.setattr("call_soon", &capture).is_ok()
                && event_loop.delattr("call_soon").is_ok();
            ok.then(|| capture.unbind())
        };
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
            servers,
            eager: config.eager,
            slow_step: config.slow_step,
            server_header: config.server_header.clone(),
        };
        let mut http_templates = Vec::new();
        let mut ws_templates = Vec::new();
        for server in &pyconfig.servers {
            let (http, ws) = py::templates(py, &pyconfig, server)?;
            http_templates.push(http);
            ws_templates.push(ws);
        }
        py::install(py::PyCtx {
            app: app.clone_ref(py),
            event_loop: event_loop.clone().unbind(),
            inbox: inbox.clone(),
            state: state.unbind(),
            http_templates,
            ws_templates,
            config: pyconfig,
            hooks,
            waiting: Default::default(),
            disconnected_exc: support.getattr("ClientDisconnected")?.unbind(),
            task_type: asyncio.getattr("Task")?.unbind(),
            enter_task: asyncio.getattr("tasks")?.getattr("_enter_task")?.unbind(),
            leave_task: asyncio.getattr("tasks")?.getattr("_leave_task")?.unbind(),
            standing: Default::default(),
            task_kwargs: {
                let k = PyDict::new(py);
                k.set_item("loop", &event_loop)?;
                k.unbind()
            },
            call_soon,
            stop_io: stop_io.clone(),
            stop_asked: std::cell::Cell::new(false),
            outbox: outbox.clone(),
            signal_io: Default::default(),
        });
        Ok((event_loop.unbind(), lifespan.unbind(), failure))
    });
    let (event_loop, lifespan, failure) =
        setup.map_err(|e| fail("starting the asyncio loop failed", e))?;
    if let Some(sentence) = failure {
        Python::attach(|_| drop(py::uninstall()));
        return Err(std::io::Error::other(sentence));
    }

    let io_config = io::IoConfig {
        limits: config.limits.clone(),
        keep_alive: config.keep_alive,
        timeout: config.timeout,
        graceful_timeout: config.graceful_timeout,
        server_header: config.server_header.as_str().into(),
        hooks,
    };
    let result = std::thread::scope(|scope| {
        let inbox_io = inbox.clone();
        let stop_for_io = stop_io.clone();
        let io_thread = std::thread::Builder::new()
            .name("stage6-io".into())
            .spawn_scoped(scope, move || {
                io::run(listeners, stop_fd, inbox_io, outbox, io_config, stop_for_io)
            })?;
        // The loop thread's one attach: the loop runs inside it and gives the
        // GIL up only in `select`.
        shared::STATS
            .attaches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // ANCHOR: loop_thread
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
            // ANCHOR_END: loop_thread
            lp.call_method1("remove_reader", (inbox.fd(),))?;
            py::release_standing(py)?;
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
    Python::attach(|_| drop(py::uninstall()));
    if config.stats {
        log::info!("{}", shared::STATS.report());
    }
    result
}
