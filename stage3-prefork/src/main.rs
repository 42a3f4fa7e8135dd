//! `stage3-prefork`: a master that forks, watches and replaces workers.
//!
//! ```text
//! cargo run -p stage3-prefork                         # hello app, 2 x cores + 1 workers
//! cargo run -p stage3-prefork -- apps.lab:app -w 4    # the lab app, 4 workers
//! kill -TTIN <master pid>                             # one more worker
//! ```

use std::net::TcpListener;

use clap::Parser;
use pyo3::prelude::*;
use stage3_prefork::arbiter::Arbiter;
use stage3_prefork::config::{Args, Config};
use stage3_prefork::listen::Listeners;
use stage3_prefork::signals::SignalQueue;
use wsgi_bridge::boot;
use wsgi_bridge::embed::{self, StartError};

fn main() {
    let args = Args::parse();
    match run(args) {
        Ok(status) => std::process::exit(status),
        Err(e) => boot::exit_with(e),
    }
}

fn run(args: Args) -> Result<i32, StartError> {
    args.log.install()?;
    let config = Config::from_args(args)?;

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
            StartError::new(format!("cannot change to directory {}: {e}", config.app.chdir.display()))
        })?;
        None
    };

    let listeners = Listeners::bind(config.bind, config.reuse_port)?;
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
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| StartError::new(format!("cannot write the pid file {}: {e}", path.display())))?;
    }

    let pid = std::process::id();
    log::info!("Starting stage3-prefork {}", env!("CARGO_PKG_VERSION"));
    log::info!("Listening at: {} ({pid})", listeners.describe(config.scheme));
    log::info!(
        "Using worker: {}",
        format!("{:?}", config.worker_class).to_lowercase()
    );
    if let Some(Ok(addr)) = stats.as_ref().map(TcpListener::local_addr) {
        log::info!("Stats server at: {addr}");
    }
    log::info!(
        "Serving {} with {} workers{}",
        config.source.describe(),
        config.workers,
        if config.preload { " (app preloaded in the master)" } else { "" }
    );

    let arbiter = Arbiter::new(config, listeners, signals, stats, preloaded)
        .map_err(|e| StartError::new(format!("cannot create the scoreboard: {e}")))?;
    Ok(arbiter.run())
}
