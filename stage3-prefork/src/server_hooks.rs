//! gunicorn's server hooks: functions of the configuration file (`-c`) that
//! the server calls at fixed moments, in the master or in a worker.
//!
//! | hook               | runs in | when                                          | called with                  |
//! |--------------------|---------|-----------------------------------------------|------------------------------|
//! | `on_starting`      | master  | before the socket is bound                    | server                       |
//! | `when_ready`       | master  | listening, before the first worker is forked  | server                       |
//! | `pre_fork`         | master  | before each fork                              | server, worker               |
//! | `post_fork`        | worker  | just after the fork, before the app's import  | server, worker               |
//! | `post_worker_init` | worker  | the app is imported, before the first request | worker                       |
//! | `pre_request`      | worker  | before the app is called                      | worker, req                  |
//! | `post_request`     | worker  | once the response is sent                     | worker, req, environ, resp   |
//! | `worker_int`       | worker  | on INT or QUIT (the master's fast stop)       | worker                       |
//! | `worker_abort`     | worker  | on ABRT (the master's `--timeout`)            | worker                       |
//! | `worker_exit`      | worker  | as the worker exits, booted or not            | server, worker               |
//! | `child_exit`       | master  | a worker was reaped                           | server, worker               |
//! | `nworkers_changed` | master  | TTIN or TTOU changed the number of workers    | server, new, old             |
//! | `on_reload`        | master  | HUP                                           | server                       |
//! | `pre_exec`         | master  | USR2, before the new master starts            | server                       |
//! | `on_exit`          | master  | just before the master exits                  | server                       |
//!
//! The objects carry the attributes gunicorn documents: `server.pid`,
//! `server.num_workers`, `server.log`; `worker.pid`, `worker.ppid`,
//! `worker.age` (1 for the first worker forked, then 2, …), `worker.log`;
//! `req.method`, `req.path`, `req.query`, `req.uri`, `req.version`,
//! `req.headers`, `req.remote_addr`; `resp.status`, `resp.status_code`,
//! `resp.sent`, `resp.headers`. `log` has `debug`, `info`, `warning`,
//! `error`, `critical` and `exception`, which write to the server's log.
//!
//! `resp.headers` is what gunicorn's `post_request` sees: the app's
//! headers as sent, a list of `(str, str)` tuples in the app's order,
//! hop-by-hop ones (`Connection`, `Keep-Alive`, …) left out, values
//! stripped of spaces and tabs; none of the server's own (`Server`, `Date`,
//! `Connection`, the `Content-Length` or `Transfer-Encoding` it adds to
//! frame a body). An error response the server made itself (the app
//! raised) has none: `[]`. The list is built only for a file that defines
//! `post_request`: the bridge moves the response head to the hook, and
//! nothing is copied for a server without one.
//!
//! A hook that raises does what it does in gunicorn: in the master (but
//! `on_exit`) the exception ends the server (gunicorn's arbiter does not
//! catch it either); `post_fork` and `post_worker_init` make the worker fail
//! to boot, so the master stops (the worker still logs `Worker exiting` and
//! calls `worker_exit` first, as gunicorn's `spawn_worker` does in its
//! `finally`); `pre_request` is answered as an app error
//! (a 500); `post_request`, `worker_exit`, `worker_int`, `worker_abort` and
//! `on_exit` are logged, and the server goes on (or exits) as it would have.
//! The traceback is always in the log.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use wsgi_bridge::embed::{StartError, format_exception};
use wsgi_bridge::hooks::RequestHooks;
use wsgi_bridge::wsgi::response_head::ResponseHead;

// ANCHOR: hook_names
/// The hooks stage 3 calls, with the number of arguments each is called
/// with (gunicorn checks it when it reads the file, and so does this).
pub const HOOKS: &[(&str, usize)] = &[
    ("on_starting", 1),
    ("on_reload", 1),
    ("when_ready", 1),
    ("pre_fork", 2),
    ("post_fork", 2),
    ("post_worker_init", 1),
    ("worker_int", 1),
    ("worker_abort", 1),
    ("pre_exec", 1),
    ("pre_request", 2),
    ("post_request", 4),
    ("child_exit", 2),
    ("worker_exit", 2),
    ("nworkers_changed", 3),
    ("on_exit", 1),
];
// ANCHOR_END: hook_names

/// A hook raised; the traceback is in the log already.
#[derive(Debug)]
pub struct HookFailed;

/// The hooks a configuration file defines, and the objects they are called
/// with. Made in the master when the file is read, so every worker inherits
/// them through fork.
pub struct ServerHooks {
    hooks: BTreeMap<&'static str, Py<PyAny>>,
    /// gunicorn's `server` (its arbiter): `pid`, `num_workers`, `log`.
    server: Py<PyAny>,
    /// In the master: each worker's object, by pid, for `child_exit`.
    workers: std::cell::RefCell<BTreeMap<i32, Py<PyAny>>>,
    /// How many workers were forked so far: the next one's `age`.
    forked: std::cell::Cell<u64>,
    /// In a worker: its own object.
    this_worker: std::cell::RefCell<Option<Py<PyAny>>>,
}

impl ServerHooks {
    /// The hooks found in a configuration file (name, function).
    pub fn new(py: Python<'_>, found: Vec<(&'static str, Py<PyAny>)>) -> PyResult<ServerHooks> {
        let server = namespace(
            py,
            &[
                ("pid", std::process::id().into_pyobject(py)?.into_any()),
                ("num_workers", py.None().into_bound(py)),
                ("log", Bound::new(py, HookLog)?.into_any()),
            ],
        )?;
        Ok(ServerHooks {
            hooks: found.into_iter().collect(),
            server: server.unbind(),
            workers: Default::default(),
            forked: Default::default(),
            this_worker: Default::default(),
        })
    }

    /// Whether the file defines `name`.
    pub fn has(&self, name: &str) -> bool {
        self.hooks.contains_key(name)
    }

    /// The defined hooks' names and functions, for --print-config.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        Python::attach(|py| {
            self.hooks
                .iter()
                .map(|(name, f)| {
                    let text = f.bind(py).repr().map(|r| r.to_string());
                    (*name, text.unwrap_or_default())
                })
                .collect()
        })
    }

    // ---- in the master ----

    /// `on_starting(server)`: an error stops the server before it listens.
    pub fn on_starting(&self, num_workers: usize) -> Result<(), StartError> {
        self.master_hook_at_start("on_starting", num_workers)
    }

    /// `when_ready(server)`: an error stops the server before any fork.
    pub fn when_ready(&self, num_workers: usize) -> Result<(), StartError> {
        self.master_hook_at_start("when_ready", num_workers)
    }

    fn master_hook_at_start(&self, name: &str, num_workers: usize) -> Result<(), StartError> {
        Python::attach(|py| {
            self.call_master(py, name, num_workers, |server| PyTuple::new(py, [server]))
                .map_err(|e| {
                    StartError::with_python(format!("the {name} hook raised an exception"), py, &e)
                })
        })
    }

    // ANCHOR: pre_fork
    /// Before a fork: makes the new worker's object (gunicorn makes its
    /// Worker then too) and calls `pre_fork(server, worker)`.
    pub fn pre_fork(&self, num_workers: usize) -> Result<Py<PyAny>, HookFailed> {
        Python::attach(|py| {
            let age = self.forked.get() + 1;
            self.forked.set(age);
            let made = worker_object(py, age);
            let worker = made.map_err(|e| report(py, "pre_fork", &e))?;
            self.call_master(py, "pre_fork", num_workers, |server| {
                PyTuple::new(py, [server, worker.clone()])
            })
            .map_err(|e| report(py, "pre_fork", &e))?;
            Ok(worker.unbind())
        })
    }
    // ANCHOR_END: pre_fork

    /// In the master, after the fork: the worker's object learns its pid.
    pub fn forked(&self, pid: i32, worker: Py<PyAny>) {
        Python::attach(|py| {
            let _ = worker.bind(py).setattr("pid", pid);
        });
        self.workers.borrow_mut().insert(pid, worker);
    }

    /// `child_exit(server, worker)`, once a worker was reaped.
    pub fn child_exit(&self, pid: i32, num_workers: usize) -> Result<(), HookFailed> {
        let Some(worker) = self.workers.borrow_mut().remove(&pid) else {
            return Ok(());
        };
        self.master_hook("child_exit", num_workers, |py, server| {
            PyTuple::new(py, [server, worker.into_bound(py)])
        })
    }

    /// `nworkers_changed(server, new_value, old_value)`, after TTIN or TTOU.
    pub fn nworkers_changed(&self, new: usize, old: usize) -> Result<(), HookFailed> {
        self.master_hook("nworkers_changed", new, |py, server| {
            PyTuple::new(
                py,
                [
                    server,
                    new.into_pyobject(py)?.into_any(),
                    old.into_pyobject(py)?.into_any(),
                ],
            )
        })
    }

    /// `on_reload(server)`, on HUP.
    pub fn on_reload(&self, num_workers: usize) -> Result<(), HookFailed> {
        self.master_hook("on_reload", num_workers, |py, server| {
            PyTuple::new(py, [server])
        })
    }

    /// `pre_exec(server)`, on USR2 before the new master starts.
    pub fn pre_exec(&self, num_workers: usize) -> Result<(), HookFailed> {
        self.master_hook("pre_exec", num_workers, |py, server| {
            PyTuple::new(py, [server])
        })
    }

    /// `on_exit(server)`: the master is exiting anyway; an error is logged.
    pub fn on_exit(&self, num_workers: usize) {
        let _ = self.master_hook("on_exit", num_workers, |py, server| {
            PyTuple::new(py, [server])
        });
    }

    fn master_hook(
        &self,
        name: &str,
        num_workers: usize,
        args: impl for<'py> FnOnce(Python<'py>, Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>>,
    ) -> Result<(), HookFailed> {
        if !self.has(name) {
            return Ok(());
        }
        Python::attach(|py| {
            self.call_master(py, name, num_workers, |server| args(py, server))
                .map_err(|e| report(py, name, &e))
        })
    }

    /// Calls hook `name` of the master, if the file defines it, with
    /// `server.num_workers` brought up to date first.
    fn call_master<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        num_workers: usize,
        args: impl FnOnce(Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>>,
    ) -> PyResult<()> {
        let Some(hook) = self.hooks.get(name) else {
            return Ok(());
        };
        let server = self.server.bind(py).clone();
        server.setattr("num_workers", num_workers)?;
        hook.bind(py).call1(args(server)?)?;
        Ok(())
    }

    // ---- in a worker ----

    /// In a new worker: its object learns its pid, then `post_fork(server,
    /// worker)`. An error makes the worker fail to boot.
    pub fn post_fork(&self, worker: Py<PyAny>) -> Result<(), HookFailed> {
        Python::attach(|py| {
            let worker = worker.into_bound(py);
            let _ = worker.setattr("pid", std::process::id());
            *self.this_worker.borrow_mut() = Some(worker.clone().unbind());
            self.worker_hook(py, "post_fork", true)
        })
    }

    /// `post_worker_init(worker)`: the app is imported. An error makes the
    /// worker fail to boot.
    pub fn post_worker_init(&self) -> Result<(), HookFailed> {
        Python::attach(|py| self.worker_hook(py, "post_worker_init", false))
    }

    /// `worker_exit(server, worker)`: an error is only logged.
    pub fn worker_exit(&self) {
        Python::attach(|py| {
            let _ = self.worker_hook(py, "worker_exit", true);
        });
    }

    fn worker_hook(&self, py: Python<'_>, name: &str, with_server: bool) -> Result<(), HookFailed> {
        let (Some(hook), Some(worker)) = (self.hooks.get(name), &*self.this_worker.borrow()) else {
            return Ok(());
        };
        let worker = worker.bind(py).clone();
        let result = if with_server {
            hook.bind(py).call1((self.server.bind(py), worker))
        } else {
            hook.bind(py).call1((worker,))
        };
        result.map(drop).map_err(|e| report(py, name, &e))
    }

    /// What the worker's app runs around each request: `pre_request` and
    /// `post_request`, if the file defines either.
    pub fn request_hooks(&self) -> Option<Arc<dyn RequestHooks>> {
        if !self.has("pre_request") && !self.has("post_request") {
            return None;
        }
        Python::attach(|py| {
            let worker = self.this_worker.borrow().as_ref()?.clone_ref(py);
            let hook = |name| self.hooks.get(name).map(|h| h.clone_ref(py));
            Some(Arc::new(AroundRequest {
                worker,
                pre_request: hook("pre_request"),
                post_request: hook("post_request"),
            }) as Arc<dyn RequestHooks>)
        })
    }

    // ANCHOR: worker_signals
    /// If the file defines `worker_int` or `worker_abort`: INT and QUIT, or
    /// ABRT, now run that hook and then `worker_exit` before the worker
    /// exits, as gunicorn's do. The hook is Python, and little is allowed in
    /// a signal handler: the handler writes the signal's number to a pipe,
    /// and a thread waiting on the pipe takes the GIL and calls the hook.
    /// (It gets the GIL even from a worker stuck in a Python loop, which
    /// gives it up every few milliseconds: that is what `worker_abort` is
    /// for.)
    pub fn watch_worker_signals(&self) -> std::io::Result<()> {
        let mut signals = Vec::new();
        if self.has("worker_int") {
            signals.extend([libc::SIGINT, libc::SIGQUIT]);
        }
        if self.has("worker_abort") {
            signals.push(libc::SIGABRT);
        }
        if signals.is_empty() {
            return Ok(());
        }
        let (mut read_end, write_end) = UnixStream::pair()?;
        HOOK_SIGNAL_FD.store(write_end.into_raw_fd(), Ordering::SeqCst);
        for signal in signals {
            // SAFETY: the handler only calls write(2), async-signal-safe.
            // It replaces the worker's other handlers for these signals.
            unsafe { libc::signal(signal, on_hook_signal as *const () as libc::sighandler_t) };
        }
        let (server, worker, hooks) = Python::attach(|py| {
            let worker = self.this_worker.borrow().as_ref().map(|w| w.clone_ref(py));
            let hooks: BTreeMap<&'static str, Py<PyAny>> = self
                .hooks
                .iter()
                .map(|(name, hook)| (*name, hook.clone_ref(py)))
                .collect();
            (self.server.clone_ref(py), worker, hooks)
        });
        std::thread::Builder::new()
            .name("worker-hooks".into())
            .spawn(move || {
                let mut byte = [0u8; 1];
                loop {
                    match read_end.read(&mut byte) {
                        Ok(1) => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        // The pipe is never closed; should it fail, the
                        // signals still stop the loop, without their hooks.
                        _ => return,
                    }
                }
                let signal = libc::c_int::from(byte[0]);
                let (name, status) = if signal == libc::SIGABRT {
                    ("worker_abort", 1)
                } else {
                    ("worker_int", 0)
                };
                Python::attach(|py| {
                    let worker = worker.as_ref().map(|w| w.bind(py).clone());
                    let call = |name: &str, args: Bound<'_, PyTuple>| {
                        if let Some(hook) = hooks.get(name)
                            && let Err(e) = hook.bind(py).call1(args)
                        {
                            report(py, name, &e);
                        }
                    };
                    if let Some(worker) = worker {
                        if let Ok(args) = PyTuple::new(py, [worker.clone()]) {
                            call(name, args);
                        }
                        log::info!("Worker exiting (pid: {})", std::process::id());
                        if let Ok(args) = PyTuple::new(py, [server.bind(py).clone(), worker]) {
                            call("worker_exit", args);
                        }
                    }
                });
                crate::worker::flush_python_output();
                // SAFETY: ends the process at once, as the signal would
                // have; the other threads have nothing to finish.
                unsafe { libc::_exit(status) }
            })?;
        Ok(())
    }
    // ANCHOR_END: worker_signals
}

/// Where the worker's hook signals are written (see `watch_worker_signals`).
static HOOK_SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);
/// Set by the handler: the hook thread will end the process.
static HOOK_SIGNALLED: AtomicBool = AtomicBool::new(false);

/// Called by a worker whose loop has ended: if a `worker_int` or
/// `worker_abort` signal arrived, the hook thread is running those hooks
/// and will end the process; wait for it instead of exiting first. (The
/// master's fast stop sends QUIT and then shuts the socket down, which
/// ends the loop too: both arrive together.)
pub fn wait_for_signal_hooks() {
    if HOOK_SIGNALLED.load(Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

extern "C" fn on_hook_signal(signal: libc::c_int) {
    HOOK_SIGNALLED.store(true, Ordering::SeqCst);
    let fd = HOOK_SIGNAL_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = [signal as u8];
        // SAFETY: write(2) is async-signal-safe.
        unsafe { libc::write(fd, byte.as_ptr().cast(), 1) };
    }
}

/// gunicorn's `worker`, made before the fork: its `pid` is set after it.
fn worker_object(py: Python<'_>, age: u64) -> PyResult<Bound<'_, PyAny>> {
    namespace(
        py,
        &[
            // Not forked yet: gunicorn's worker has no pid either.
            ("pid", py.None().into_bound(py)),
            ("ppid", std::process::id().into_pyobject(py)?.into_any()),
            ("age", age.into_pyobject(py)?.into_any()),
            ("log", Bound::new(py, HookLog)?.into_any()),
        ],
    )
}

/// Logs a hook's exception with its traceback, as gunicorn does.
fn report(py: Python<'_>, name: &str, err: &PyErr) -> HookFailed {
    log::error!(
        "Exception in {name} hook\n{}",
        format_exception(py, err).trim_end()
    );
    HookFailed
}

/// A `types.SimpleNamespace`: an object with these attributes, to which a
/// hook may add its own (gunicorn's objects allow that too).
fn namespace<'py>(
    py: Python<'py>,
    attributes: &[(&str, Bound<'py, PyAny>)],
) -> PyResult<Bound<'py, PyAny>> {
    let kwargs = PyDict::new(py);
    for (name, value) in attributes {
        kwargs.set_item(name, value)?;
    }
    // Looked up once: a request hook makes two of these per request.
    static SIMPLE_NAMESPACE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let class = SIMPLE_NAMESPACE.get_or_try_init(py, || {
        py.import("types")?
            .getattr("SimpleNamespace")
            .map(Bound::unbind)
    })?;
    class.bind(py).call((), Some(&kwargs))
}

// ANCHOR: around_request
/// A worker's `pre_request` and `post_request`, as the bridge calls them
/// around each request (with the GIL it holds for the app anyway, and once
/// more after the response).
struct AroundRequest {
    worker: Py<PyAny>,
    pre_request: Option<Py<PyAny>>,
    post_request: Option<Py<PyAny>>,
}

impl RequestHooks for AroundRequest {
    fn before(&self, py: Python<'_>, environ: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let req = request_object(py, environ)?;
        if let Some(hook) = &self.pre_request {
            hook.bind(py).call1((self.worker.bind(py), &req))?;
        }
        Ok(req.unbind())
    }

    fn after(
        &self,
        py: Python<'_>,
        req: Py<PyAny>,
        environ: Py<PyDict>,
        status: u16,
        body_bytes: u64,
        head: Option<&ResponseHead>,
    ) {
        let Some(hook) = &self.post_request else {
            return;
        };
        let called = response_object(py, status, body_bytes, head).and_then(|resp| {
            hook.bind(py)
                .call1((self.worker.bind(py), req, environ, resp))
        });
        if let Err(e) = called {
            report(py, "post_request", &e);
        }
    }
}
// ANCHOR_END: around_request

/// gunicorn's `req`, read from the environ the bridge built: the method,
/// the target as sent (`uri`), its path and query, the version, the
/// headers as (NAME, value) pairs, the client's address.
fn request_object<'py>(
    py: Python<'py>,
    environ: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    let text = |key: &str| -> PyResult<String> {
        Ok(match environ.get_item(key)? {
            Some(v) => v.str()?.to_string(),
            None => String::new(),
        })
    };
    let uri = text("RAW_URI")?;
    let path = uri.split('?').next().unwrap_or_default().to_string();
    let protocol = text("SERVER_PROTOCOL")?;
    let version = protocol
        .strip_prefix("HTTP/")
        .and_then(|v| v.split_once('.'))
        .and_then(|(a, b)| Some((a.parse::<u8>().ok()?, b.parse::<u8>().ok()?)))
        .unwrap_or((1, 0));
    let mut headers = Vec::new();
    for (key, value) in environ.iter() {
        let Ok(key) = key.cast_into::<PyString>() else {
            continue;
        };
        let key = key.to_string();
        let name = match key.as_str() {
            "CONTENT_TYPE" | "CONTENT_LENGTH" => key.replace('_', "-"),
            other => match other.strip_prefix("HTTP_") {
                Some(rest) => rest.replace('_', "-"),
                None => continue,
            },
        };
        headers.push((name, value));
    }
    namespace(
        py,
        &[
            (
                "method",
                text("REQUEST_METHOD")?.into_pyobject(py)?.into_any(),
            ),
            ("uri", uri.into_pyobject(py)?.into_any()),
            ("path", path.into_pyobject(py)?.into_any()),
            ("query", text("QUERY_STRING")?.into_pyobject(py)?.into_any()),
            ("version", version.into_pyobject(py)?.into_any()),
            ("headers", headers.into_pyobject(py)?.into_any()),
            (
                "remote_addr",
                text("REMOTE_ADDR")?.into_pyobject(py)?.into_any(),
            ),
        ],
    )
}

/// gunicorn's `resp`, as far as the worker knows it once it is sent.
/// `resp.headers` is gunicorn's too: the app's headers as sent, a list of
/// `(str, str)` in the app's order, without the hop-by-hop ones, each value
/// stripped of spaces and tabs, and none of the server's own (`Server`,
/// `Date`, `Connection`, the framing); `[]` for an error response the
/// server made itself.
fn response_object<'py>(
    py: Python<'py>,
    status: u16,
    body_bytes: u64,
    head: Option<&ResponseHead>,
) -> PyResult<Bound<'py, PyAny>> {
    static HTTP_STATUS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let http_status = HTTP_STATUS.get_or_try_init(py, || {
        py.import("http")?.getattr("HTTPStatus").map(Bound::unbind)
    })?;
    let phrase = http_status
        .bind(py)
        .call1((status,))
        .and_then(|s| s.getattr("phrase"))
        .map(|p| p.to_string())
        .unwrap_or_default();
    namespace(
        py,
        &[
            (
                "status",
                format!("{status} {phrase}")
                    .trim_end()
                    .into_pyobject(py)?
                    .into_any(),
            ),
            ("status_code", status.into_pyobject(py)?.into_any()),
            ("sent", body_bytes.into_pyobject(py)?.into_any()),
            ("headers", response_headers(py, head)?.into_any()),
        ],
    )
}

/// The head's headers as Python's `[(name, value), ...]`.
fn response_headers<'py>(
    py: Python<'py>,
    head: Option<&ResponseHead>,
) -> PyResult<Bound<'py, PyList>> {
    // The bytes are latin-1: one character each.
    let text = |bytes: &[u8]| bytes.iter().map(|&b| char::from(b)).collect::<String>();
    let headers = PyList::empty(py);
    for (name, value) in head.into_iter().flat_map(ResponseHead::headers) {
        // gunicorn strips the value (RFC 9110 5.5: the spaces around a
        // field value are not part of it).
        let blank = |b: &u8| *b == b' ' || *b == b'\t';
        let start = value.iter().position(|b| !blank(b)).unwrap_or(value.len());
        let end = value
            .iter()
            .rposition(|b| !blank(b))
            .map_or(start, |i| i + 1);
        headers.append((text(name), text(&value[start..end])))?;
    }
    Ok(headers)
}

// ANCHOR: hook_log
/// `server.log` and `worker.log`: the server's own log, for hooks.
/// `log.info("%s workers", n)` formats as Python's logging does.
#[pyclass(name = "Log", module = "stage3_prefork", frozen)]
struct HookLog;

#[pymethods]
impl HookLog {
    #[pyo3(signature = (msg, *args))]
    fn debug(&self, msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        emit(log::Level::Debug, msg, args)
    }

    #[pyo3(signature = (msg, *args))]
    fn info(&self, msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        emit(log::Level::Info, msg, args)
    }

    #[pyo3(signature = (msg, *args))]
    fn warning(&self, msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        emit(log::Level::Warn, msg, args)
    }

    #[pyo3(signature = (msg, *args))]
    fn error(&self, msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        emit(log::Level::Error, msg, args)
    }

    #[pyo3(signature = (msg, *args))]
    fn critical(&self, msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        emit(log::Level::Error, msg, args)
    }

    /// An error with the traceback of the exception being handled.
    #[pyo3(signature = (msg, *args))]
    fn exception(&self, msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        let py = msg.py();
        let tb = py.import("traceback")?.call_method0("format_exc")?;
        let text = format!(
            "{}\n{}",
            render(msg, args)?,
            tb.str()?.to_string().trim_end()
        );
        log::error!("{text}");
        Ok(())
    }
}

fn emit(level: log::Level, msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
    log::log!(level, "{}", render(msg, args)?);
    Ok(())
}

/// `msg % args`, as Python's logging formats, or `msg` alone.
fn render(msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<String> {
    if args.is_empty() {
        return Ok(msg.str()?.to_string());
    }
    Ok(msg.rem(args)?.str()?.to_string())
}
// ANCHOR_END: hook_log
