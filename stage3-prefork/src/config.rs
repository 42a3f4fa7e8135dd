//! The master's settings, with gunicorn's flag names.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use stage1_single::SyncConfig;
use stage2_threads::ThreadConfig;
use wsgi_bridge::boot;
use wsgi_bridge::cli::{AppArgs, LimitArgs, LogArgs};
use wsgi_bridge::embed::{AppSource, StartError};
use wsgi_bridge::worker::WorkerHooks;
use wsgi_bridge::wsgi::call::WsgiApp;

use crate::listen::WorkerListener;
use std::os::fd::BorrowedFd;

/// How each worker serves its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorkerClass {
    /// Stage 1's loop: one connection at a time per worker.
    Sync,
    /// Stage 2's loop: a pool of threads per worker (with --threads).
    Gthread,
}

/// A pre-fork WSGI server: a master process that forks, watches and replaces
/// worker processes, like gunicorn.
#[derive(Parser, Debug)]
#[command(name = "stage3-prefork", version)]
pub struct Args {
    /// The address to listen on (HOST:PORT).
    #[arg(short, long, value_name = "ADDRESS", default_value = "127.0.0.1:8000")]
    pub bind: String,

    /// How many worker processes [default: 2 x CPU cores + 1].
    #[arg(short, long, value_name = "N")]
    pub workers: Option<usize>,

    /// The worker loop: sync (one connection at a time) or gthread (threads).
    #[arg(short = 'k', long, value_enum, default_value = "sync")]
    pub worker_class: WorkerClass,

    /// Threads per worker; more than 1 means the gthread worker class.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,

    /// Workers silent for more than this many seconds are killed and
    /// replaced (0: never).
    #[arg(short, long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,

    /// How long workers get to finish their requests on a graceful stop or
    /// reload, before they are killed.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub graceful_timeout: u64,

    /// Seconds a gthread worker keeps an idle connection open (sync workers
    /// close after each response).
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    pub keep_alive: u64,

    /// A worker exits (and is replaced) after this many requests (0: never).
    /// Limits the damage of a memory leak in the app.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_requests: u64,

    /// Add a random 0..=J to each worker's --max-requests, so the workers do
    /// not all restart at the same moment.
    #[arg(long, value_name = "J", default_value_t = 0)]
    pub max_requests_jitter: u64,

    /// Import the app in the master, before forking: workers share its
    /// memory pages (copy-on-write) and start faster.
    #[arg(long)]
    pub preload: bool,

    /// Give each worker its own listening socket (SO_REUSEPORT) instead of
    /// one shared socket.
    #[arg(long)]
    pub reuse_port: bool,

    /// Write the master's process id to this file.
    #[arg(long, value_name = "FILE")]
    pub pid: Option<PathBuf>,

    /// Serve a JSON snapshot of the master and its workers on this address
    /// (HOST:PORT), like uWSGI's stats server: `curl 127.0.0.1:9191`.
    #[arg(long, value_name = "ADDRESS")]
    pub stats: Option<String>,

    /// Most connections a gthread worker keeps open at once.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub worker_connections: usize,

    #[command(flatten)]
    pub app: AppArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

/// What a worker runs once its app is loaded: a loop that accepts on the
/// listener and serves until `stop` is readable or the hooks ask to stop.
/// Stage 3 runs stage 1's or stage 2's HTTP loop; stage 4 its uwsgi loop.
pub type ServeFn =
    Box<dyn Fn(WorkerListener, &WsgiApp, BorrowedFd<'_>, &dyn WorkerHooks) -> std::io::Result<()>>;

/// A helper process the master runs beside the workers and restarts if it
/// dies (stage 4's HTTP router). Runs in the forked child; returns its exit
/// status.
pub type SidecarFn = Box<dyn Fn() -> i32>;

/// The settings the master and its workers run with.
pub struct Config {
    /// The worker's loop.
    pub serve: ServeFn,
    /// Shown in the banner: `Listening at: http://…`.
    pub scheme: &'static str,
    /// The name in the banner and in `Server` headers.
    pub server_name: &'static str,
    /// The TCP address to listen on (stage 4 may listen on a unix socket instead).
    pub bind: Option<SocketAddr>,
    pub workers: usize,
    pub worker_class: WorkerClass,
    pub timeout: Option<Duration>,
    pub graceful_timeout: Duration,
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    pub preload: bool,
    pub reuse_port: bool,
    pub pid_file: Option<PathBuf>,
    pub stats: Option<SocketAddr>,
    pub app: AppArgs,
    pub source: AppSource,
    /// A helper process to run beside the workers, if any.
    pub sidecar: Option<SidecarFn>,
}

/// How long a client may stall on a socket before a worker gives up on it.
fn io_timeout(timeout: u64) -> Duration {
    Duration::from_secs(if timeout == 0 { 30 } else { timeout })
}

// ANCHOR: worker_classes
/// The HTTP worker classes: stage 1's loop or stage 2's, reused as they are.
pub fn http_workers(class: WorkerClass, sync: SyncConfig, threads: ThreadConfig) -> ServeFn {
    Box::new(move |listener, app, stop, hooks| {
        let WorkerListener::Tcp(listener) = listener else {
            return Err(std::io::Error::other("HTTP workers listen on TCP"));
        };
        match class {
            WorkerClass::Sync => stage1_single::serve_forever(&listener, app, &sync, stop, hooks),
            WorkerClass::Gthread => {
                stage2_threads::serve_forever(&listener, app, &threads, stop, hooks)
            }
        }
    })
}
// ANCHOR_END: worker_classes

// ANCHOR: default_workers
/// gunicorn's rule of thumb for the number of workers: two per core (one
/// computes while the other waits on I/O), plus one.
pub fn default_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    2 * cores + 1
}
// ANCHOR_END: default_workers

impl Config {
    pub fn from_args(args: Args) -> Result<Config, StartError> {
        let bind = boot::resolve_bind(&args.bind)?;
        let stats = args.stats.as_deref().map(boot::resolve_bind).transpose()?;
        let workers = args.workers.unwrap_or_else(default_workers);
        if workers == 0 {
            return Err(StartError::new("--workers must be at least 1"));
        }
        if workers > crate::scoreboard::MAX_WORKERS {
            return Err(StartError::new(format!(
                "--workers {workers} is more than this server runs ({})",
                crate::scoreboard::MAX_WORKERS
            )));
        }
        if args.threads == 0 {
            return Err(StartError::new("--threads must be at least 1"));
        }
        // As in gunicorn: asking for threads means the threaded worker.
        let worker_class = if args.threads > 1 {
            WorkerClass::Gthread
        } else {
            args.worker_class
        };
        let source = args.app.source()?;
        let limits = args.limits.limits();
        let sync = SyncConfig {
            limits: limits.clone(),
            keep_alive: None,
            timeout: io_timeout(args.timeout),
        };
        let threads = ThreadConfig {
            limits: limits.clone(),
            threads: args.threads,
            keep_alive: Duration::from_secs(args.keep_alive),
            timeout: io_timeout(args.timeout),
            worker_connections: args.worker_connections,
            graceful_timeout: Duration::from_secs(args.graceful_timeout),
        };
        Ok(Config {
            serve: http_workers(worker_class, sync, threads),
            scheme: "http",
            server_name: concat!("stage3-prefork/", env!("CARGO_PKG_VERSION")),
            bind: Some(bind),
            workers,
            worker_class,
            timeout: (args.timeout > 0).then(|| Duration::from_secs(args.timeout)),
            graceful_timeout: Duration::from_secs(args.graceful_timeout),
            max_requests: args.max_requests,
            max_requests_jitter: args.max_requests_jitter,
            preload: args.preload,
            reuse_port: args.reuse_port,
            pid_file: args.pid,
            stats,
            sidecar: None,
            app: args.app,
            source,
        })
    }
}
