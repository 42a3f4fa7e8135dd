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

use crate::http_workers::{AsgiWorker, SyncWorker, ThreadWorker};

/// How each worker serves its connections (`-k`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorkerKind {
    /// Stage 1's loop: one connection at a time per worker.
    Sync,
    /// Stage 2's loop: a pool of threads per worker (with --threads).
    Gthread,
    /// Stage 6's event loop: an ASGI app on one asyncio loop per worker
    /// (gunicorn's `-k uvicorn.workers.UvicornWorker`).
    Asgi,
}

/// A pre-fork WSGI server: a master process that forks, watches and replaces
/// worker processes, like gunicorn.
#[derive(Parser, Debug)]
#[command(name = "stage3-prefork", version)]
pub struct Args {
    /// The address to listen on: HOST:PORT, [::1]:PORT, :PORT (every
    /// interface), PORT (on 127.0.0.1), unix:PATH (a unix socket file), or
    /// fd://N (a socket this process inherited, as systemd's socket
    /// activation passes it). Give it several times to listen on several
    /// addresses: every worker accepts on all of them.
    #[arg(short, long, value_name = "ADDRESS", default_value = "127.0.0.1:8000")]
    pub bind: Vec<String>,

    /// How many worker processes [default: 2 x CPU cores + 1].
    #[arg(short, long, value_name = "N")]
    pub workers: Option<usize>,

    /// The worker loop: sync (one connection at a time), gthread (threads),
    /// or asgi (stage 6's event loop, for an ASGI app).
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

    /// Proxies whose X-Forwarded-Proto (and -Ssl, -Protocol) headers are
    /// believed, as gunicorn's: addresses, networks (10.0.0.0/8) or '*'.
    #[arg(
        long,
        value_name = "ADDRS",
        default_value = "127.0.0.1,::1",
        env = "FORWARDED_ALLOW_IPS"
    )]
    pub forwarded_allow_ips: String,

    /// Also take the client's address (REMOTE_ADDR) from X-Forwarded-For
    /// sent by those proxies, as uvicorn's --proxy-headers does.
    #[arg(long)]
    pub proxy_headers: bool,

    /// Restart workers when a source file of the app changes (for
    /// development). Not with --preload, which imports the app once.
    #[arg(long)]
    pub reload: bool,

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

    /// A gunicorn configuration file, in Python: its settings (`workers =
    /// 3`) apply unless a flag says otherwise, and its server hooks run.
    /// Without it, ./gunicorn.conf.py is read if there is one.
    /// `python:MODULE` names an importable module instead.
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<String>,

    /// Read the settings and import the app, say what is wrong, and exit
    /// (status 0: nothing is).
    #[arg(long)]
    pub check_config: bool,

    /// Print every setting as resolved (from the file, GUNICORN_CMD_ARGS and
    /// the flags), then check as --check-config does.
    #[arg(long)]
    pub print_config: bool,

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
    /// Workers exit when a source file of the app changes (`--reload`).
    pub reload: bool,
    /// Proxies whose forwarded headers the HTTP workers believe.
    pub forwarded: Option<wsgi_bridge::wsgi::forwarded::Forwarded>,
    pub pid_file: Option<PathBuf>,
    pub stats: Option<SocketAddr>,
    pub app: AppArgs,
    pub source: AppSource,
    /// What USR1 does: gunicorn's "reopen the log files" (workers reopen
    /// their access log), or uWSGI's "print statistics" (stage 4).
    pub usr1: Usr1,
    /// The server hooks of a configuration file (`-c`), if it has any.
    pub hooks: Option<crate::server_hooks::ServerHooks>,
    /// How to read the settings again on HUP, as gunicorn re-reads its
    /// configuration file then (`None`: there is no file to read).
    pub reread: Option<Rereader>,
}

/// Reads the settings again (the configuration file, GUNICORN_CMD_ARGS and
/// the same command line) for a HUP.
pub type Rereader = Box<dyn Fn() -> Result<Reread, StartError>>;

/// What a HUP read: the new settings and worker class, and what changed
/// in them that a reload cannot apply (said in the log, left as it was).
pub struct Reread {
    pub config: Config,
    pub worker_class: Box<dyn crate::WorkerClass>,
    pub not_applied: Vec<String>,
}

/// The meaning of SIGUSR1, which gunicorn and uWSGI disagree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usr1 {
    /// gunicorn: the workers reopen their log files (logrotate).
    ReopenLogs,
    /// uWSGI: the master prints its statistics to the log.
    PrintStats,
}

/// Stage 3's command line, read: the master's settings, the worker class,
/// and where to listen.
pub struct Setup {
    pub config: Config,
    pub worker_class: Box<dyn crate::WorkerClass>,
    /// Every address to listen on, in the order given.
    pub bind: Vec<Bind>,
    pub reuse_port: bool,
}

/// One address stage 3 listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bind {
    Tcp(SocketAddr),
    /// A unix socket file (`unix:PATH`).
    Unix(PathBuf),
    /// A listening socket inherited as this file descriptor (`fd://N`).
    Fd(i32),
}

impl Bind {
    fn parse(text: &str) -> Result<Bind, StartError> {
        if let Some(path) = text.strip_prefix("unix:") {
            // gunicorn also accepts unix://PATH.
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StartError::new(format!(
                    "--bind {text}: give the socket file's path, e.g. unix:/tmp/app.sock"
                )));
            }
            // Relative to where the server was started: the master changes
            // to --chdir before it binds.
            let path = std::env::current_dir()
                .map(|cwd| cwd.join(path))
                .unwrap_or_else(|_| PathBuf::from(path));
            return Ok(Bind::Unix(path));
        }
        match text.strip_prefix("fd://") {
            Some(n) => n.parse().map(Bind::Fd).map_err(|_| {
                StartError::new(format!(
                    "--bind {text}: fd://N takes a file descriptor number"
                ))
            }),
            None => boot::resolve_bind(text).map(Bind::Tcp),
        }
    }

    /// Reads every `--bind`, refusing one given twice (the second bind
    /// would find the address taken, by the first).
    fn parse_all(texts: &[String]) -> Result<Vec<Bind>, StartError> {
        let mut binds: Vec<Bind> = Vec::new();
        for text in texts {
            let bind = Bind::parse(text)?;
            // Port 0 twice is two ports, each chosen by the kernel.
            let any_port = matches!(bind, Bind::Tcp(a) if a.port() == 0);
            if !any_port && binds.contains(&bind) {
                return Err(StartError::new(format!(
                    "--bind {text} is given twice: give each address once"
                )));
            }
            binds.push(bind);
        }
        Ok(binds)
    }
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
        let bind = Bind::parse_all(&args.bind)?;
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
        if args.reload && args.preload {
            return Err(StartError::new(
                "--reload and --preload do not go together: with --preload the master imports the app once, before forking, so a new worker would run the old code again (drop --preload while you develop)",
            ));
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
        let asgi = stage6_asgi::AsgiConfig {
            limits: limits.clone(),
            keep_alive: (args.keep_alive > 0).then(|| Duration::from_secs(args.keep_alive)),
            timeout: io_timeout(args.timeout),
            graceful_timeout: Duration::from_secs(args.graceful_timeout),
            root_path: args.app.script_name(),
            server_header: concat!("stage3-prefork/", env!("CARGO_PKG_VERSION")).to_string(),
            ..stage6_asgi::AsgiConfig::default()
        };
        let worker_class: Box<dyn crate::WorkerClass> = match worker_class {
            WorkerKind::Sync => Box::new(SyncWorker(sync)),
            WorkerKind::Gthread => Box::new(ThreadWorker(threads)),
            WorkerKind::Asgi => Box::new(AsgiWorker(asgi)),
        };
        let config = Config {
            server_software: concat!("stage3-prefork/", env!("CARGO_PKG_VERSION")),
            workers,
            timeout: (args.timeout > 0).then(|| Duration::from_secs(args.timeout)),
            graceful_timeout: Duration::from_secs(args.graceful_timeout),
            max_requests: args.max_requests,
            max_requests_jitter: args.max_requests_jitter,
            preload: args.preload,
            reload: args.reload,
            forwarded: Some(
                wsgi_bridge::wsgi::forwarded::Forwarded::parse(
                    &args.forwarded_allow_ips,
                    args.proxy_headers,
                )
                .map_err(StartError::new)?,
            ),
            pid_file: args.pid,
            stats,
            app: args.app,
            source,
            usr1: Usr1::ReopenLogs,
            hooks: None,
            reread: None,
        };
        Ok(Setup {
            config,
            worker_class,
            bind,
            reuse_port: args.reuse_port,
        })
    }
}
