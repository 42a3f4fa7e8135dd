//! Starting the master: the steps between parsing the flags and the
//! arbiter's loop, shared by stage 3 and stage 4.

use std::net::TcpListener;

use pyo3::prelude::*;
use wsgi_bridge::boot;
use wsgi_bridge::embed::{self, StartError};

use crate::arbiter::Arbiter;
use crate::config::Config;
use crate::listen::Listeners;
use crate::signals::SignalQueue;

/// Loads the app (with `--preload`), binds with `bind`, prints the banner and
/// runs the arbiter. Returns the exit status.
pub fn run(
    config: Config,
    bind: impl FnOnce(&Config) -> Result<Listeners, StartError>,
) -> Result<i32, StartError> {
    // ANCHOR: preload
    // With --preload the master imports the app now, before any fork: an
    // import error stops everything here, and workers inherit the loaded
    // app's memory instead of each importing it again.
    let preloaded = if config.preload {
        embed::start_python(&config.app.python_setup())?;
        Some(Python::attach(|py| embed::load_app(py, &config.source))?)
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

    let listeners = bind(&config)?;
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
    let signals = SignalQueue::install()
        .map_err(|e| StartError::new(format!("cannot install the signal handlers: {e}")))?;
    if let Some(path) = &config.pid_file {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|e| {
            StartError::new(format!("cannot write the pid file {}: {e}", path.display()))
        })?;
    }

    let pid = std::process::id();
    log::info!("Starting {}", config.server_name.replace('/', " "));
    log::info!(
        "Listening at: {} ({pid})",
        listeners.describe(config.scheme)
    );
    let class = format!("{:?}", config.worker_class).to_lowercase();
    if config.scheme == "http" {
        log::info!("Using worker: {class}");
    } else {
        log::info!(
            "Using worker: {class}, speaking the {} protocol",
            config.scheme
        );
    }
    if let Some(Ok(addr)) = stats.as_ref().map(TcpListener::local_addr) {
        log::info!("Stats server at: {addr}");
    }
    log::info!(
        "Serving {} with {} workers{}",
        config.source.describe(),
        config.workers,
        if config.preload {
            " (app preloaded in the master)"
        } else {
            ""
        }
    );

    let arbiter = Arbiter::new(config, listeners, signals, stats, preloaded)
        .map_err(|e| StartError::new(format!("cannot create the scoreboard: {e}")))?;
    Ok(arbiter.run())
}
