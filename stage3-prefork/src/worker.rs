//! The worker: what a forked child does. It loads the app (or takes the one
//! the master preloaded), opens its listening socket, and runs its worker
//! class (stage 1's loop for `-k sync`, stage 2's for `-k gthread`, stage
//! 4's uwsgi loop) with hooks that report to the scoreboard.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;

use pyo3::prelude::*;
use wsgi_bridge::boot;
use wsgi_bridge::cli::AppArgs;
use wsgi_bridge::embed::{AppSource, StartError};
use wsgi_bridge::hooks::WorkerHooks;
use wsgi_bridge::wsgi::call::WsgiApp;
use wsgi_bridge::wsgi::environ::ServerInfo;

use crate::config::Config;
use crate::listen::{Listeners, WorkerListener};
use crate::scoreboard::{MAX_WORKERS, Scoreboard, Slot, now_ms};

/// The exit status of a worker that could not start (its app's module
/// raised while it was imported, its listening socket failed, a post_fork
/// hook raised): the master stops instead of forking it again and again.
/// gunicorn uses 3 too.
pub const WORKER_BOOT_ERROR: i32 = 3;
/// The exit status of a worker that imported the app's module and found no
/// app in it (gunicorn's 4, for its `AppImportError`).
pub const APP_LOAD_ERROR: i32 = 4;

// ANCHOR: worker_class
/// The loop a worker runs: gunicorn's worker class (`-k`). The master knows
/// nothing else about it; stage 3 has two (`sync`, `gthread`), stage 4 one
/// (its uwsgi loop).
pub trait WorkerClass {
    /// The name in the banner and the stats: `sync`, `gthread`, …
    fn name(&self) -> String;

    /// The protocol its workers speak, for the banner: `http`, `uwsgi`.
    fn protocol(&self) -> &'static str {
        "http"
    }

    /// Imports the app (in each worker, or once in the master with
    /// `--preload`). The WSGI classes import `module:callable` (or the
    /// built-in hello app); the ASGI class has its own hello app.
    fn load_app(&self, args: &AppArgs, source: &AppSource) -> Result<Py<PyAny>, StartError> {
        boot::load_app_from(args, source)
    }

    /// Accepts on the worker's listeners and serves until `worker.stop` is
    /// readable or the hooks ask to stop. Runs in the forked worker.
    fn serve(&self, worker: WorkerContext<'_>) -> io::Result<()>;
}

/// What the master gives a worker class, in the forked worker.
pub struct WorkerContext<'a> {
    /// The sockets to accept on, one per address (`-b` given more than
    /// once), in the order given.
    pub listeners: Vec<WorkerListener>,
    /// The app object (`module:callable`), imported in this worker or
    /// preloaded in the master.
    pub app: Py<PyAny>,
    /// Readable once the worker should stop gracefully (TERM).
    pub stop: BorrowedFd<'a>,
    /// How the loop reports to the master.
    pub hooks: &'a dyn WorkerHooks,
    /// What a PEP 3333 environ says about the server, but `multithread`,
    /// which is the worker class's to say, and `SERVER_NAME` and
    /// `SERVER_PORT`, which each listener's address says.
    pub script_name: String,
    pub multiprocess: bool,
    /// The `Server` header.
    pub server_software: &'static str,
    /// Proxies whose forwarded headers the app's environ believes.
    pub forwarded: Option<wsgi_bridge::wsgi::forwarded::Forwarded>,
    /// The configuration file's `pre_request` and `post_request`, if any.
    pub request_hooks: Option<std::sync::Arc<dyn wsgi_bridge::hooks::RequestHooks>>,
}

impl WorkerContext<'_> {
    /// The app wrapped for PEP 3333, once per listener (`apps[i]` has
    /// listener `i`'s `SERVER_NAME` and `SERVER_PORT`), as the WSGI worker
    /// classes serve it.
    pub fn wsgi_apps(&self, multithread: bool) -> io::Result<Vec<WsgiApp>> {
        self.listeners
            .iter()
            .map(|l| self.wsgi_app_for(l, multithread))
            .collect()
    }

    /// The app wrapped for PEP 3333, for a worker class with one listener
    /// (stage 4's socket).
    pub fn wsgi_app(&self, multithread: bool) -> io::Result<WsgiApp> {
        let first = self
            .listeners
            .first()
            .ok_or_else(|| io::Error::other("no socket to listen on"))?;
        self.wsgi_app_for(first, multithread)
    }

    fn wsgi_app_for(&self, listener: &WorkerListener, multithread: bool) -> io::Result<WsgiApp> {
        let (server_name, server_port) = listener.server_name_port();
        let info = ServerInfo {
            server_name,
            server_port,
            script_name: self.script_name.clone(),
            url_scheme: "http",
            multithread,
            multiprocess: self.multiprocess,
        };
        let mut app = Python::attach(|py| {
            WsgiApp::new(py, self.app.clone_ref(py), info, self.server_software)
        })
        .map_err(|e| io::Error::other(format!("cannot prepare the app: {e}")))?;
        if let Some(forwarded) = &self.forwarded {
            app.trust_proxies(forwarded.clone());
        }
        if let Some(hooks) = &self.request_hooks {
            app.set_request_hooks(hooks.clone());
        }
        Ok(app)
    }
}
// ANCHOR_END: worker_class

/// Everything a worker needs, prepared by the master before the fork.
pub(crate) struct WorkerSpec<'a> {
    pub config: &'a Config,
    pub worker_class: &'a dyn WorkerClass,
    pub listeners: &'a Listeners,
    pub slot: &'a Slot,
    /// Every worker's slot (the siblings' connection counts).
    pub board: &'a Scoreboard,
    /// The master's pid, taken before the fork.
    pub master_pid: u32,
    /// The app imported by the master (`--preload`), or `None`: import it here.
    pub preloaded: Option<&'a Py<PyAny>>,
    /// This worker's object for the configuration file's hooks (`-c`).
    pub hook_worker: Option<Py<PyAny>>,
    pub multiprocess: bool,
    pub max_requests: u64,
    /// The signal mask to restore once the worker's own handlers are in
    /// place (the master blocks its signals around fork).
    pub signal_mask: nix::sys::signal::SigSet,
}

/// How many more connections than its least loaded sibling a worker may
/// hold before it leaves the next one to that sibling (`-k asgi`).
const BALANCE_MARGIN: u32 = 4;

// ANCHOR: hooks
/// How a worker reports to the master: through its scoreboard slot.
struct ScoreboardHooks<'a> {
    slot: &'a Slot,
    board: &'a Scoreboard,
    max_requests: u64,
}

impl WorkerHooks for ScoreboardHooks<'_> {
    fn heartbeat(&self) {
        self.slot.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.slot.busy.fetch_add(1, Ordering::Relaxed);
        self.heartbeat();
    }

    fn request_finished(&self) {
        self.slot.busy.fetch_sub(1, Ordering::Relaxed);
        self.heartbeat();
        let served = self.slot.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_requests > 0 && served == self.max_requests {
            log::info!("Autorestarting worker after current request ({served} requests served).");
        }
    }

    fn should_stop(&self) -> bool {
        self.max_requests > 0 && self.slot.requests.load(Ordering::Relaxed) >= self.max_requests
    }

    fn accept_missed(&self) {
        self.slot.accept_missed.fetch_add(1, Ordering::Relaxed);
    }

    fn connection(&self, opened: bool) {
        if opened {
            self.slot.connections.fetch_add(1, Ordering::Relaxed);
        } else {
            self.slot.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn should_accept(&self) -> bool {
        let mine = self.slot.connections.load(Ordering::Relaxed);
        let me: *const Slot = self.slot;
        // The least loaded live sibling; none: accept.
        let least = (0..MAX_WORKERS)
            .map(|i| self.board.slot(i))
            .filter(|s| !std::ptr::eq(*s, me) && s.is_live())
            .map(|s| s.connections.load(Ordering::Relaxed))
            .min();
        // Well ahead only: under steady churn (a new connection per
        // request) the counts differ by a few all the time, and waiting
        // then would only slow the accepts down.
        least.is_none_or(|least| mine <= least + BALANCE_MARGIN)
    }
}
// ANCHOR_END: hooks

/// Runs the worker; returns its exit status.
pub(crate) fn run(spec: WorkerSpec<'_>) -> i32 {
    // ANCHOR: worker_boot
    let pid = std::process::id();
    log::info!("Booting worker with pid: {pid}");
    // If the master dies (even by SIGKILL), take this worker down with it:
    // an orphaned worker would go on serving with nobody watching it.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    // A master that died between the fork and the line above sends no
    // signal: this worker would live on alone (one was seen, after a test
    // killed its master). Then it is already reparented.
    if nix::unistd::getppid().as_raw() as u32 != spec.master_pid {
        log::info!(
            "The master (pid: {}) is gone; worker {pid} exits",
            spec.master_pid
        );
        return 0;
    }

    let hooks = spec.config.hooks.as_ref();
    let status = boot_and_serve(spec);
    // However the worker ends, booted or not: gunicorn's spawn_worker says
    // this and calls worker_exit in a `finally`, so a worker whose
    // post_fork raised gets its worker_exit too.
    log::info!("Worker exiting (pid: {pid})");
    if let Some(hooks) = hooks {
        hooks.worker_exit();
    }
    flush_python_output();
    wsgi_bridge::trace::flush();
    status
}
// ANCHOR_END: worker_boot

/// Everything a worker does between its fork and its exit; returns its
/// exit status.
fn boot_and_serve(spec: WorkerSpec<'_>) -> i32 {
    // ANCHOR: worker_setup
    let pid = std::process::id();
    let config = spec.config;
    // The configuration file's post_fork(server, worker) (-c).
    if let (Some(hooks), Some(me)) = (&config.hooks, spec.hook_worker)
        && hooks.post_fork(me).is_err()
    {
        return WORKER_BOOT_ERROR;
    }
    let stop = match install_signals() {
        Ok(stop) => stop,
        Err(e) => {
            log::error!("cannot install the signal handlers: {e}");
            return 1;
        }
    };
    // With worker_int or worker_abort hooks: INT, QUIT, ABRT run them
    // (their handlers, installed above, are replaced).
    if let Some(hooks) = &config.hooks
        && let Err(e) = hooks.watch_worker_signals()
    {
        log::error!("cannot watch the signals of the worker hooks: {e}");
    }
    // Signals that arrived since the fork are delivered now, to these handlers.
    supervise::signals::restore(&spec.signal_mask);
    // ANCHOR_END: worker_setup

    let app = match spec.preloaded {
        Some(app) => Python::attach(|py| app.clone_ref(py)),
        None => match spec.worker_class.load_app(&config.app, &config.source) {
            Ok(app) => app,
            Err(e) => {
                if let Some(tb) = &e.traceback {
                    eprintln!("{}", tb.trim_end());
                }
                // gunicorn's spawn_worker tells the two apart: an
                // AppImportError (no such app in the module) is status 4;
                // any exception raised by the import itself, a missing
                // module included, is an exception in a worker that has not
                // booted: status 3.
                if e.app_not_found {
                    log::error!("App failed to load: {e}");
                    return APP_LOAD_ERROR;
                }
                log::error!("Worker failed to boot: {e}");
                return WORKER_BOOT_ERROR;
            }
        },
    };
    let listeners = match spec.listeners.for_worker() {
        Ok(l) => l,
        Err(e) => {
            log::error!("cannot open the listening socket in worker {pid}: {e}");
            return WORKER_BOOT_ERROR;
        }
    };
    if let Some(hooks) = &config.hooks
        && hooks.post_worker_init().is_err()
    {
        return WORKER_BOOT_ERROR;
    }
    let hooks = ScoreboardHooks {
        slot: spec.slot,
        board: spec.board,
        max_requests: spec.max_requests,
    };
    hooks.heartbeat();
    if config.reload {
        match crate::reload::watch_sources() {
            Ok(n) => log::debug!("Watching {n} source files for changes"),
            Err(e) => log::warn!("--reload: cannot watch the source files: {e}"),
        }
    }

    // With --trace: this worker's requests go to the master's trace file.
    wsgi_bridge::trace::start_flusher();
    let result = spec.worker_class.serve(WorkerContext {
        listeners,
        app,
        stop: stop.as_fd(),
        hooks: &hooks,
        script_name: config.app.script_name(),
        multiprocess: spec.multiprocess,
        server_software: config.server_software,
        forwarded: config.forwarded.clone(),
        request_hooks: config.hooks.as_ref().and_then(|h| h.request_hooks()),
    });
    // A worker_int or worker_abort hook running on its thread ends the
    // process itself, after its own worker_exit: wait for it.
    crate::server_hooks::wait_for_signal_hooks();
    match result {
        Ok(()) => 0,
        Err(e) => {
            log::error!("worker {pid} stopped: {e}");
            1
        }
    }
}

// ANCHOR: worker_signals
/// A worker's signals, as gunicorn's workers take them. Returns the socket
/// that becomes readable on TERM.
fn install_signals() -> io::Result<std::os::unix::net::UnixStream> {
    use supervise::signals;
    // TERM (the master's graceful stop): finish the requests in hand, then
    // exit. A second TERM exits at once.
    let stop = signals::stop_on(&[libc::SIGTERM])?;
    // INT and QUIT (the master's fast stop, or Ctrl-C reaching the whole
    // process group): exit at once, mid-request or not.
    signals::exit_at_once_on(&[libc::SIGINT, libc::SIGQUIT])?;
    // ABRT (the master's --timeout): exit at once with status 1. The
    // handler exits by itself, so a worker stuck in Python exits too.
    signals::exit_at_once_with(1, &[libc::SIGABRT])?;
    // USR1 (passed on by the master): reopen the access log file.
    wsgi_bridge::logging::reopen_on_signal(libc::SIGUSR1)?;
    // The master's signals mean nothing to a worker, and the rest would
    // kill it by default: `kill -HUP` or `pkill -USR2 stage3-prefork`
    // (which matches the workers too: they share the master's command
    // line) must not take workers down. Ignored, with a line that says so.
    let master = nix::unistd::getppid();
    let mut ignored = vec![
        libc::SIGHUP,
        libc::SIGUSR2,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGWINCH,
    ];
    ignored.extend(
        signals::unused()
            .into_iter()
            .filter(|&s| s != libc::SIGABRT),
    );
    signals::log_and_ignore(&ignored, move |signal| {
        let name = signals::short_name(signal);
        match signal {
            // A terminal resized: nothing to say above debug (gunicorn's
            // words).
            libc::SIGWINCH => log::debug!("SIGWINCH ignored. Not applicable."),
            libc::SIGHUP | libc::SIGUSR2 | libc::SIGTTIN | libc::SIGTTOU => log::warn!(
                "Ignoring signal: {name}: it is the master's; send it to the master (pid {master})"
            ),
            _ => log::warn!("Ignoring signal: {name}: it means nothing to a worker"),
        }
    })?;
    Ok(stop)
}
// ANCHOR_END: worker_signals

/// What the app printed may still sit in Python's buffers: write it out
/// before the process ends.
pub fn flush_python_output() {
    Python::try_attach(|py| {
        for name in ["stdout", "stderr"] {
            if let Ok(stream) = py.import("sys").and_then(|sys| sys.getattr(name)) {
                let _ = stream.call_method0("flush");
            }
        }
    });
}
