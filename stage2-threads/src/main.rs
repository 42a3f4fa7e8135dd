//! `stage2-threads`: one process, a pool of threads sharing one GIL.
//!
//! ```text
//! cargo run -p stage2-threads                                # the built-in hello app on 127.0.0.1:8000
//! cargo run -p stage2-threads -- apps.lab:app --threads 8    # the lab app, 8 threads
//! ```

use std::os::fd::AsFd;
use std::time::Duration;

use clap::Parser;
use clap::builder::RangedU64ValueParser;
use pyo3::Python;
use stage2_threads::{ThreadConfig, serve_forever};
use wsgi_bridge::boot;
use wsgi_bridge::cli::{AppArgs, LimitArgs, LogArgs};
use wsgi_bridge::embed::StartError;
use wsgi_bridge::hooks::NoHooks;
use wsgi_bridge::wsgi::call::WsgiApp;
use wsgi_bridge::wsgi::environ::ServerInfo;

/// A WSGI server with a pool of threads: requests that wait (on I/O, on a
/// sleep) run side by side; pure-Python work still runs one at a time (the GIL).
#[derive(Parser, Debug)]
#[command(name = "stage2-threads", version)]
struct Args {
    /// The address to listen on (HOST:PORT).
    #[arg(short, long, value_name = "ADDRESS", default_value = "127.0.0.1:8000")]
    bind: String,

    /// Threads serving requests: how many requests run at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=4096))]
    threads: usize,

    /// Seconds an idle connection is kept open waiting for its next request
    /// (0: close after each response). Idle connections cost no thread here:
    /// the main thread watches them all.
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    keep_alive: u64,

    /// Most connections open at once; past it the server stops accepting
    /// until one closes.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    worker_connections: usize,

    /// Seconds a client may take to send its request or read the response.
    #[arg(short, long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,

    /// Seconds requests in flight get to finish after SIGTERM or SIGINT.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    graceful_timeout: u64,

    /// Record when each thread waits for the GIL, holds it, and writes to
    /// its socket without it, into FILE; draw it with
    /// `cargo run --bin trace-view -- FILE -o gil.svg`.
    #[arg(long, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,

    #[command(flatten)]
    app: AppArgs,

    #[command(flatten)]
    limits: LimitArgs,

    #[command(flatten)]
    log: LogArgs,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        boot::exit_with(e);
    }
}

fn run(args: Args) -> Result<(), StartError> {
    args.log.install()?;
    // First of all: a Ctrl-C while the app is still importing must stop
    // the server once it is ready, not be lost.
    let stop = boot::stop_on_signals()?;
    if let Some(path) = &args.trace {
        wsgi_bridge::trace::open(path).map_err(|e| {
            StartError::new(format!("cannot write the trace {}: {e}", path.display()))
        })?;
        wsgi_bridge::trace::start_flusher();
    }
    let addr = boot::resolve_bind(&args.bind)?;
    let source = args.app.source()?;
    let app = boot::load_app(&args.app)?;
    let listener = boot::bind_tcp(addr)?;
    let local = listener
        .local_addr()
        .map_err(|e| StartError::new(format!("cannot read the listening address: {e}")))?;

    let info = ServerInfo {
        server_name: local.ip().to_string(),
        server_port: local.port().to_string(),
        script_name: args.app.script_name(),
        url_scheme: "http",
        // Several threads call the app at once: apps and frameworks read
        // this to know that their globals need locks.
        multithread: true,
        multiprocess: false,
    };
    let software = concat!("stage2-threads/", env!("CARGO_PKG_VERSION"));
    let wsgi_app = Python::attach(|py| WsgiApp::new(py, app, info, software))
        .map_err(|e| StartError::new(format!("cannot prepare the app: {e}")))?;

    let pid = std::process::id();
    log::info!(
        "Starting stage2-threads {}: {} threads sharing one GIL",
        env!("CARGO_PKG_VERSION"),
        args.threads
    );
    log::info!("Listening at: http://{local} ({pid})");
    log::info!(
        "Serving {} with {}",
        source.describe(),
        boot::python_banner(&args.app)
    );

    let config = ThreadConfig {
        limits: args.limits.limits(),
        threads: args.threads,
        keep_alive: Duration::from_secs(args.keep_alive),
        timeout: Duration::from_secs(args.timeout.max(1)),
        worker_connections: args.worker_connections,
        graceful_timeout: Duration::from_secs(args.graceful_timeout),
    };
    // From here on the main thread never holds the GIL: the pool threads
    // take it in turn.
    serve_forever(&listener, &wsgi_app, &config, stop.as_fd(), &NoHooks)
        .map_err(|e| StartError::new(format!("the server stopped: {e}")))?;
    wsgi_bridge::trace::flush();
    log::info!("Shutting down: stage2-threads ({pid})");
    Ok(())
}
