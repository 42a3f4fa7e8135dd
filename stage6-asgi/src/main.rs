//! `stage6-asgi`: an ASGI 3.0 server, one asyncio loop per process.
//!
//! ```text
//! cargo run -p stage6-asgi                          # the built-in hello app on 127.0.0.1:8000
//! cargo run -p stage6-asgi -- apps.asgi_lab:app     # the lab app
//! ```

use std::os::fd::AsFd;
use std::time::Duration;

use clap::Parser;
use stage6_asgi::{AsgiConfig, Eager, LifespanMode, LoopKind, serve_forever};
use wsgi_bridge::boot;
use wsgi_bridge::cli::{AppArgs, LimitArgs, LogArgs};
use wsgi_bridge::embed::StartError;
use wsgi_bridge::hooks::NoHooks;

/// An ASGI server: sockets in tokio, the app on one asyncio event loop.
#[derive(Parser, Debug)]
#[command(name = "stage6-asgi", version)]
#[command(mut_arg("app", |a: clap::Arg| a.help(
    "The ASGI app, as MODULE:CALLABLE (e.g. apps.asgi_lab:app). A bare MODULE means its \
     `application`, then its `app`. Without it, a built-in hello app."
)))]
struct Args {
    /// The address to listen on (HOST:PORT).
    #[arg(short, long, value_name = "ADDRESS", default_value = "127.0.0.1:8000")]
    bind: String,

    /// Seconds an idle connection is kept open for another request
    /// (uvicorn's --timeout-keep-alive); 0 closes after each response.
    #[arg(
        long,
        alias = "timeout-keep-alive",
        value_name = "SECONDS",
        default_value_t = 5
    )]
    keep_alive: u64,

    /// Seconds a client may take to send its request (or a body the app
    /// waits for) or to take the response.
    #[arg(short, long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,

    /// Seconds running requests get to finish after SIGTERM/SIGINT.
    #[arg(
        long,
        alias = "timeout-graceful-shutdown",
        value_name = "SECONDS",
        default_value_t = 30
    )]
    graceful_timeout: u64,

    /// Where the app is mounted: the scopes' root_path (uvicorn's --root-path).
    #[arg(long, value_name = "PATH")]
    root_path: Option<String>,

    /// Run the app's lifespan scope: auto (if it supports it), on, off.
    #[arg(long, value_enum, default_value = "auto")]
    lifespan: LifespanMode,

    /// How the first step of each app coroutine runs: host (coro.send from
    /// Rust inside a standing Task's identity, a Task of its own only if it
    /// suspends), bare (the same with no current task) or task (a Task from
    /// the start, its first step run at once).
    #[arg(long, value_enum, default_value = "host")]
    eager: Eager,

    /// The event loop: auto (uvloop if it is installed, else asyncio's, as
    /// uvicorn does), asyncio (the standard library's) or uvloop.
    #[arg(long = "loop", value_enum, default_value = "auto")]
    event_loop: LoopKind,

    /// Warn when one step of an app coroutine holds the event loop this many
    /// milliseconds (a blocking call in an async function).
    #[arg(long, value_name = "MS", default_value_t = 100)]
    blocked_loop_warning: u64,

    /// Print, at exit, what requests cost in thread crossings (GIL
    /// acquisitions by the loop thread per request, ...). Also STAGE6_STATS=1.
    #[arg(long)]
    stats: bool,

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
    // First of all, as in every stage: a Ctrl-C while the app is still
    // importing must stop the server once it is ready, not be lost.
    let stop = boot::stop_on_signals()?;
    let addr = boot::resolve_bind(&args.bind)?;
    let source = args.app.source()?;
    let app = stage6_asgi::load_app(&args.app)?;
    if args.event_loop == LoopKind::Uvloop
        && pyo3::Python::attach(|py| py.import("uvloop").is_err())
    {
        return Err(StartError::new(
            "--loop uvloop: uvloop is not installed for the embedded Python (pip install uvloop)",
        ));
    }
    let listener = boot::bind_tcp(addr)?;
    let local = listener
        .local_addr()
        .map_err(|e| StartError::new(format!("cannot read the listening address: {e}")))?;

    let pid = std::process::id();
    log::info!(
        "Starting stage6-asgi {}: one asyncio loop, sockets in tokio",
        env!("CARGO_PKG_VERSION")
    );
    log::info!("Listening at: http://{local} ({pid})");
    log::info!(
        "Serving {} with {}",
        source.describe(),
        boot::python_description()
    );

    let mut config = AsgiConfig {
        limits: args.limits.limits(),
        keep_alive: (args.keep_alive > 0).then(|| Duration::from_secs(args.keep_alive)),
        timeout: Duration::from_secs(args.timeout.max(1)),
        graceful_timeout: Duration::from_secs(args.graceful_timeout),
        root_path: args
            .root_path
            .clone()
            .unwrap_or_else(|| args.app.script_name()),
        lifespan: args.lifespan,
        eager: args.eager,
        event_loop: args.event_loop,
        slow_step: Duration::from_millis(args.blocked_loop_warning),
        ..AsgiConfig::default()
    };
    config.stats |= args.stats;
    serve_forever(listener, app, &config, stop.as_fd(), &NoHooks)
        .map_err(|e| StartError::new(e.to_string()))?;
    log::info!("Shutting down: stage6-asgi ({pid})");
    Ok(())
}
