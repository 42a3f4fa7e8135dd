//! Starting the master: the steps between reading the settings and the
//! arbiter's loop, shared by stage 3 and stage 4.

use std::net::TcpListener;

use supervise::signals::SignalQueue;
use wsgi_bridge::boot;
use wsgi_bridge::embed::StartError;

use crate::arbiter::Arbiter;
use crate::config::Config;
use crate::listen::Listeners;
use crate::worker::WorkerClass;

/// A process the master runs beside its workers and starts again when it
/// dies (uWSGI's `attach-daemon`): stage 4's HTTP router. It is forked from
/// the master, so it must not need threads that exist before it runs.
pub struct ExtraChild {
    /// Its name in log lines: "the HTTP router".
    pub name: String,
    /// What the child runs; returns its exit status.
    pub run: Box<dyn Fn() -> i32>,
}

/// A pre-fork master, ready to run: stage 3 and stage 4 each make one.
pub struct Master {
    pub config: Config,
    /// The loop every worker runs.
    pub worker_class: Box<dyn WorkerClass>,
    /// Processes to run beside the workers.
    pub extra_children: Vec<ExtraChild>,
}

impl Master {
    /// Loads the app (with `--preload`), binds with `bind`, prints the
    /// banner and runs the arbiter until it stops. Returns the exit status.
    pub fn run(
        self,
        bind: impl FnOnce() -> Result<Listeners, StartError>,
    ) -> Result<i32, StartError> {
        run(self, bind)
    }
}

fn run(
    mut master: Master,
    bind: impl FnOnce() -> Result<Listeners, StartError>,
) -> Result<i32, StartError> {
    // The master changes directory before forking, and each worker starts
    // Python from there: relative paths must mean what they meant where the
    // server was started.
    master.config.app.make_paths_absolute();
    let config = &master.config;
    // Before anything changes directory: how to start this server again.
    let relaunch = crate::upgrade::Relaunch::capture();
    // First of all, so that a signal sent while the app is still importing
    // (with --preload) waits in the queue instead of being lost.
    let signals = SignalQueue::install()
        .map_err(|e| StartError::new(format!("cannot install the signal handlers: {e}")))?;
    // ANCHOR: preload
    // With --preload the master imports the app now, before any fork: an
    // import error stops everything here, and workers inherit the loaded
    // app's memory instead of each importing it again.
    let preloaded = if config.preload {
        Some(master.worker_class.load_app(&config.app, &config.source)?)
    } else {
        // Without it the master never starts Python; change directory as
        // workers will, so relative paths mean the same everywhere.
        std::env::set_current_dir(&config.app.chdir).map_err(|e| {
            StartError::new(format!(
                "cannot change to directory {}: {e}",
                config.app.chdir.display()
            ))
        })?;
        None
    };
    // ANCHOR_END: preload

    log::info!("Starting {}", config.server_software.replace('/', " "));
    // The configuration file's on_starting hook: after the preload, before
    // the socket, as in gunicorn.
    if let Some(hooks) = &config.hooks {
        hooks.on_starting(config.workers)?;
    }
    let listeners = bind()?;
    let stats = config
        .stats
        .map(|addr| {
            let listener = boot::bind_tcp(addr)?;
            listener
                .set_nonblocking(true)
                .map_err(|e| StartError::new(format!("cannot set up the stats socket: {e}")))?;
            Ok::<TcpListener, StartError>(listener)
        })
        .transpose()?;
    if let Some(path) = &config.pid_file {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|e| {
            StartError::new(format!("cannot write the pid file {}: {e}", path.display()))
        })?;
    }

    let pid = std::process::id();
    let class = &master.worker_class;
    // One line per address, as gunicorn prints them.
    for address in listeners.describe(class.protocol()) {
        log::info!("Listening at: {address} ({pid})");
    }
    match class.protocol() {
        "http" => log::info!("Using worker: {}", class.name()),
        other => log::info!(
            "Using worker: {}, speaking the {other} protocol",
            class.name()
        ),
    }
    if let Some(Ok(addr)) = stats.as_ref().map(TcpListener::local_addr) {
        log::info!("Stats server at: {addr}");
    }
    log::info!(
        "Serving {} with {}: {} worker{}{}",
        config.source.describe(),
        boot::python_banner(&config.app),
        config.workers,
        if config.workers == 1 { "" } else { "s" },
        if config.preload {
            " (app preloaded in the master)"
        } else {
            ""
        }
    );

    if let Some(hooks) = &config.hooks {
        hooks.when_ready(config.workers)?;
    }
    let arbiter = Arbiter::new(master, relaunch, listeners, signals, stats, preloaded)
        .map_err(|e| StartError::new(format!("cannot create the scoreboard: {e}")))?;
    Ok(arbiter.run())
}
