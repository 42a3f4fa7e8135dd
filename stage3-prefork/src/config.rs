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

use crate::http_workers::{SyncWorker, ThreadWorker};

/// How each worker serves its connections (`-k`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorkerKind {
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
    pub worker_class: WorkerKind,

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

    /// Write a trace into FILE: the master's events (workers born and dead,
    /// signals) and each worker's requests (with gthread, its threads' GIL
    /// too); draw it with `cargo run --bin trace-view -- FILE -o out.svg`.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,

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

/// The master's settings: what every worker class shares (gunicorn's
/// server settings; the flags above are stage 3's way to fill them, stage
/// 4 fills them from uWSGI's flags).
pub struct Config {
    /// The name and version in the banner and in `Server` headers.
    pub server_software: &'static str,
    pub workers: usize,
    pub timeout: Option<Duration>,
    pub graceful_timeout: Duration,
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    pub preload: bool,
    pub pid_file: Option<PathBuf>,
    pub stats: Option<SocketAddr>,
    pub app: AppArgs,
    pub source: AppSource,
}

/// Stage 3's command line, read: the master's settings, the worker class,
/// and where to listen.
pub struct Setup {
    pub config: Config,
    pub worker_class: Box<dyn crate::WorkerClass>,
    pub bind: SocketAddr,
    pub reuse_port: bool,
}

/// How long a client may stall on a socket before a worker gives up on it.
fn io_timeout(timeout: u64) -> Duration {
    Duration::from_secs(if timeout == 0 { 30 } else { timeout })
}

// ANCHOR: default_workers
/// gunicorn's rule of thumb for the number of workers: two per core (one
/// computes while the other waits on I/O), plus one.
pub fn default_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    2 * cores + 1
}
// ANCHOR_END: default_workers

impl Args {
    pub fn setup(self) -> Result<Setup, StartError> {
        let args = self;
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
            WorkerKind::Gthread
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
        let worker_class: Box<dyn crate::WorkerClass> = match worker_class {
            WorkerKind::Sync => Box::new(SyncWorker(sync)),
            WorkerKind::Gthread => Box::new(ThreadWorker(threads)),
        };
        let config = Config {
            server_software: concat!("stage3-prefork/", env!("CARGO_PKG_VERSION")),
            workers,
            timeout: (args.timeout > 0).then(|| Duration::from_secs(args.timeout)),
            graceful_timeout: Duration::from_secs(args.graceful_timeout),
            max_requests: args.max_requests,
            max_requests_jitter: args.max_requests_jitter,
            preload: args.preload,
            pid_file: args.pid,
            stats,
            app: args.app,
            source,
        };
        Ok(Setup {
            config,
            worker_class,
            bind,
            reuse_port: args.reuse_port,
        })
    }
}
