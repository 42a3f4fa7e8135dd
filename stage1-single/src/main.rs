//! `stage1-single`: one process, one thread, one connection at a time.
//!
//! ```text
//! cargo run -p stage1-single                       # the built-in hello app on 127.0.0.1:8000
//! cargo run -p stage1-single -- apps.lab:app       # the lab app
//! ```

use std::os::fd::AsFd;
use std::time::Duration;

use clap::Parser;
use pyo3::Python;
use stage1_single::{SyncConfig, serve_forever};
use wsgi_bridge::boot;
use wsgi_bridge::cli::{AppArgs, LimitArgs, LogArgs};
use wsgi_bridge::embed::StartError;
use wsgi_bridge::hooks::NoHooks;
use wsgi_bridge::wsgi::call::WsgiApp;
use wsgi_bridge::wsgi::environ::ServerInfo;

/// A WSGI server with one thread that serves one connection at a time.
#[derive(Parser, Debug)]
#[command(name = "stage1-single", version)]
struct Args {
    /// The address to listen on (HOST:PORT).
    #[arg(short, long, value_name = "ADDRESS", default_value = "127.0.0.1:8000")]
    bind: String,

    // ANCHOR: keep_alive_flag
    /// Seconds to wait for another request on the same connection. 0 (the
    /// default) closes the connection after each response, as gunicorn's
    /// sync worker does: while this thread waits on one idle client, no one
    /// else is served.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    keep_alive: u64,

    // ANCHOR_END: keep_alive_flag
    /// Seconds a client may take to send its request or read the response.
    #[arg(short, long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,

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

// ANCHOR: run
fn run(args: Args) -> Result<(), StartError> {
    args.log.install()?;
    // First of all: a Ctrl-C while the app is still importing must stop
    // the server once it is ready, not be lost.
    let stop = boot::stop_on_signals()?;
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
        multithread: false,
        multiprocess: false,
    };
    let software = concat!("stage1-single/", env!("CARGO_PKG_VERSION"));
    let wsgi_app = Python::attach(|py| WsgiApp::new(py, app, info, software))
        .map_err(|e| StartError::new(format!("cannot prepare the app: {e}")))?;

    let pid = std::process::id();
    log::info!(
        "Starting stage1-single {}: one thread, one connection at a time",
        env!("CARGO_PKG_VERSION")
    );
    log::info!("Listening at: http://{local} ({pid})");
    log::info!(
        "Serving {} with {}",
        source.describe(),
        boot::python_banner(&args.app)
    );

    let config = SyncConfig {
        limits: args.limits.limits(),
        keep_alive: (args.keep_alive > 0).then(|| Duration::from_secs(args.keep_alive)),
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    serve_forever(&listener, &wsgi_app, &config, stop.as_fd(), &NoHooks)
        .map_err(|e| StartError::new(format!("the server stopped: {e}")))?;
    log::info!("Shutting down: stage1-single ({pid})");
    Ok(())
}
// ANCHOR_END: run
