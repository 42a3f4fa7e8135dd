//! `stage4-uwsgi-socket`: stage 3's master, with workers that read uwsgi
//! packets on a unix socket, with uWSGI's flag names.
//!
//! ```text
//! cargo run -p stage4-uwsgi-socket -- --socket /tmp/app.sock --module apps.lab:app --processes 4
//! cargo run -p stage4-uwsgi-socket -- --http 127.0.0.1:8000     # plus a router, to try it with curl
//! ```

mod socket;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use stage3_prefork::{
    Config, ExtraChild, Listeners, Master, Usr1, WorkerClass, WorkerContext, WorkerListener,
};
use stage4_uwsgi_socket::router::{self, Upstream};
use stage4_uwsgi_socket::{UwsgiConfig, ini, serve_forever_threads};
use wsgi_bridge::boot;
use wsgi_bridge::cli::{AppArgs, LimitArgs, LogArgs};
use wsgi_bridge::embed::{AppSource, StartError};
use wsgi_bridge::http::request::Limits;

/// A pre-fork WSGI server fed by nginx's uwsgi protocol, like
/// `uwsgi --socket PATH --master --processes N`.
#[derive(Parser, Debug)]
#[command(name = "stage4-uwsgi-socket", version, args_override_self = true)]
struct Args {
    /// Read flags from this uWSGI ini file (its `[uwsgi]` section); the
    /// command line wins. A bare `FILE.ini` argument means the same.
    #[arg(long, value_name = "FILE")]
    ini: Option<PathBuf>,

    /// Print the configuration this run uses, as an ini file, then start.
    #[arg(long)]
    show_config: bool,

    /// Accepted for familiarity: the socket file is always removed at exit.
    #[arg(long)]
    vacuum: bool,

    /// Accepted for familiarity: TERM stops stage 4 (gracefully), as uWSGI
    /// 2.1 does; uWSGI 2.0 needed this flag not to reload on TERM.
    #[arg(long)]
    die_on_term: bool,

    /// Where to listen for uwsgi packets: a unix socket path, or HOST:PORT.
    #[arg(
        short,
        long,
        value_name = "PATH|HOST:PORT",
        default_value = "/tmp/wsgi-course-stage4.sock"
    )]
    socket: String,

    /// Permissions of the unix socket file, in octal. The default lets only
    /// this user connect; nginx running as another user needs 666 (or 660
    /// and a shared group).
    #[arg(long, value_name = "MODE", default_value = "600", value_parser = parse_mode)]
    chmod_socket: u32,

    /// Owner of the unix socket file, as USER or USER:GROUP (uWSGI's
    /// --chown-socket): with --chmod-socket 660, only that group (nginx's
    /// workers, say) may connect. Needs root unless it is you.
    #[arg(long, value_name = "USER[:GROUP]")]
    chown_socket: Option<String>,

    /// Threads per worker process, each serving one request at a time
    /// (uWSGI's --threads; the course notes' `--processes 4 --threads 2`).
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,

    /// Accepted for familiarity: uWSGI needs it before an app may start
    /// threads of its own; an embedded Python here always allows them.
    #[arg(long)]
    enable_threads: bool,

    /// How many worker processes.
    #[arg(short, long, alias = "workers", value_name = "N", default_value_t = 1)]
    processes: usize,

    /// The WSGI app, as MODULE:CALLABLE (e.g. apps.lab:app). Without it and
    /// without --wsgi-file, a built-in hello app.
    #[arg(short = 'w', long, alias = "wsgi", value_name = "MODULE[:CALLABLE]")]
    module: Option<String>,

    /// Load the app from this Python file.
    #[arg(long, value_name = "FILE", conflicts_with = "module")]
    wsgi_file: Option<PathBuf>,

    /// The name of the callable in --wsgi-file (default: application, then app).
    #[arg(long, value_name = "NAME")]
    callable: Option<String>,

    /// Change to this directory before loading the app.
    #[arg(long, value_name = "DIR", default_value = ".")]
    chdir: PathBuf,

    /// More directories for sys.path.
    #[arg(long, value_name = "DIRS", value_delimiter = ',')]
    pythonpath: Vec<PathBuf>,

    /// A virtualenv (uWSGI's -H/--home).
    #[arg(
        short = 'H',
        long,
        alias = "home",
        value_name = "DIR",
        env = "VIRTUAL_ENV"
    )]
    virtualenv: Option<PathBuf>,

    /// Load the app in each worker instead of once in the master. uWSGI
    /// loads it in the master by default (gunicorn's --preload).
    #[arg(long)]
    lazy_apps: bool,

    /// Kill a worker stuck on one request for more than SECS (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    harakiri: u64,

    /// A worker is recycled after this many requests (0: never).
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_requests: u64,

    /// How long workers get to finish on a graceful stop or reload.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    worker_reload_mercy: u64,

    /// The socket's listen queue (how many connections may wait).
    #[arg(short, long, value_name = "BACKLOG", default_value_t = 100)]
    listen: i32,

    /// The largest uwsgi packet header accepted (its vars block), in bytes.
    #[arg(short, long, value_name = "BYTES", default_value_t = 4096, value_parser = clap::value_parser!(u16).range(1..))]
    buffer_size: u16,

    /// Also run an HTTP router on ADDR that turns HTTP into uwsgi packets,
    /// to try the stage with curl. For debugging: stage 5 puts nginx there.
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,

    /// Serve a JSON snapshot of the master and workers on this address.
    #[arg(long, value_name = "ADDR")]
    stats: Option<String>,

    /// Write the master's process id to this file.
    #[arg(long, value_name = "FILE")]
    pidfile: Option<PathBuf>,

    /// Accepted for familiarity: there is always a master.
    #[arg(short = 'M', long)]
    master: bool,

    #[command(flatten)]
    limits: LimitArgs,

    #[command(flatten)]
    log: LogArgs,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("'{s}' is not an octal file mode such as 600, 660 or 666"))
}

fn main() {
    let args = match args_with_ini(std::env::args().collect()) {
        Ok(argv) => Args::parse_from(argv),
        Err(e) => boot::exit_with(StartError::new(e)),
    };
    if args.show_config {
        print!("{}", show_config(&args));
    }
    match run(args) {
        Ok(status) => std::process::exit(status),
        Err(e) => boot::exit_with(e),
    }
}

/// The command line with an ini file's flags before it: `--ini FILE`, or
/// a bare `FILE.ini` (uWSGI's `uwsgi app.ini`).
fn args_with_ini(argv: Vec<String>) -> Result<Vec<String>, String> {
    let mut rest = Vec::new();
    let mut files = Vec::new();
    let mut it = argv.into_iter();
    let program = it.next().unwrap_or_default();
    while let Some(arg) = it.next() {
        if arg == "--ini" {
            files.push(it.next().ok_or("--ini needs a file")?);
        } else if let Some(file) = arg.strip_prefix("--ini=") {
            files.push(file.to_string());
        } else if arg.ends_with(".ini") && !arg.starts_with('-') {
            files.push(arg);
        } else {
            rest.push(arg);
        }
    }
    let mut all = vec![program];
    for file in &files {
        all.extend(ini::to_args(std::path::Path::new(file))?);
    }
    all.extend(rest);
    Ok(all)
}

/// `--show-config`: the settings this run uses, as an ini file.
fn show_config(args: &Args) -> String {
    let mut out = String::from(";uWSGI instance configuration\n[uwsgi]\n");
    let mut line = |key: &str, value: String| out.push_str(&format!("{key} = {value}\n"));
    line("socket", args.socket.clone());
    line("chmod-socket", format!("{:o}", args.chmod_socket));
    if let Some(owner) = &args.chown_socket {
        line("chown-socket", owner.clone());
    }
    line("processes", args.processes.to_string());
    line("threads", args.threads.to_string());
    if let Some(module) = &args.module {
        line("module", module.clone());
    }
    if let Some(file) = &args.wsgi_file {
        line("wsgi-file", file.display().to_string());
    }
    line("chdir", args.chdir.display().to_string());
    line("lazy-apps", args.lazy_apps.to_string());
    line("harakiri", args.harakiri.to_string());
    line("max-requests", args.max_requests.to_string());
    line("listen", args.listen.to_string());
    line("buffer-size", args.buffer_size.to_string());
    if let Some(http) = &args.http {
        line("http", http.clone());
    }
    line("master", "true".to_string());
    out.push_str(";end of configuration\n");
    out
}

/// A unix socket path, or a TCP address (`HOST:PORT`, as uWSGI tells them apart).
enum SocketSpec {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

fn socket_spec(s: &str) -> Result<SocketSpec, StartError> {
    if s.contains('/') || !s.contains(':') {
        Ok(SocketSpec::Unix(PathBuf::from(s)))
    } else {
        boot::resolve_bind(s).map(SocketSpec::Tcp)
    }
}

// ANCHOR: worker_class
/// uWSGI's workers, as a worker class of stage 3's master: one connection
/// (one packet from nginx) at a time, stage 1's accept loop.
struct UwsgiWorker(UwsgiConfig);

impl WorkerClass for UwsgiWorker {
    fn name(&self) -> String {
        match self.0.threads {
            1 => "sync".to_string(),
            n => format!("sync, {n} threads each"),
        }
    }

    fn protocol(&self) -> &'static str {
        "uwsgi"
    }

    fn serve(&self, worker: WorkerContext<'_>) -> io::Result<()> {
        let app = worker.wsgi_app(self.0.threads > 1)?;
        // uWSGI's one --socket: the master gives this worker class one listener.
        let listener = worker
            .listeners
            .first()
            .ok_or_else(|| io::Error::other("no socket to listen on"))?;
        serve_forever_threads(listener, &app, &self.0, worker.stop, worker.hooks)
    }
}
// ANCHOR_END: worker_class

fn run(args: Args) -> Result<i32, StartError> {
    args.log.install()?;
    if args.processes == 0 {
        return Err(StartError::new("--processes must be at least 1"));
    }
    if args.threads == 0 {
        return Err(StartError::new("--threads must be at least 1"));
    }
    let socket = socket_spec(&args.socket)?;
    let limits = args.limits.limits();
    let uwsgi = UwsgiConfig {
        buffer_size: usize::from(args.buffer_size),
        limits: limits.clone(),
        timeout: Duration::from_secs(30),
        threads: args.threads,
    };
    let extra_children = match args.http.as_deref() {
        Some(addr) => vec![http_router(addr, &socket, &args.socket, limits)?],
        None => Vec::new(),
    };
    let master = Master {
        config: master_config(&args)?,
        worker_class: Box::new(UwsgiWorker(uwsgi)),
        extra_children,
    };
    let (mode, backlog) = (args.chmod_socket, args.listen);
    let owner = args
        .chown_socket
        .as_deref()
        .map(socket::owner)
        .transpose()?;
    // Started by an old master's USR2: its socket, already bound.
    if let Some(inherited) = Listeners::inherited() {
        return master.run(|| inherited);
    }
    match socket {
        SocketSpec::Tcp(addr) => master.run(|| {
            let listener = boot::bind_tcp_as(addr, "--socket")?;
            Ok(Listeners::shared(WorkerListener::Tcp(listener)))
        }),
        // The master removes the socket file when it stops.
        SocketSpec::Unix(path) => master.run(|| socket::bind_unix(&path, mode, owner, backlog)),
    }
}

// ANCHOR: uwsgi_config
/// uWSGI's flags, as stage 3's master settings.
fn master_config(args: &Args) -> Result<Config, StartError> {
    let app = AppArgs {
        app: args.module.clone(),
        wsgi_file: args.wsgi_file.clone(),
        chdir: args.chdir.clone(),
        pythonpath: args.pythonpath.clone(),
        virtualenv: args.virtualenv.clone(),
        script_name: String::new(),
    };
    let source = match (&args.wsgi_file, &args.callable) {
        (Some(path), Some(callable)) => AppSource::File {
            path: path.clone(),
            callable: Some(callable.clone()),
        },
        _ => app.source()?,
    };
    Ok(Config {
        server_software: concat!("stage4-uwsgi-socket/", env!("CARGO_PKG_VERSION")),
        workers: args.processes,
        timeout: (args.harakiri > 0).then(|| Duration::from_secs(args.harakiri)),
        graceful_timeout: Duration::from_secs(args.worker_reload_mercy),
        max_requests: args.max_requests,
        max_requests_jitter: 0,
        preload: !args.lazy_apps,
        pid_file: args.pidfile.clone(),
        stats: args.stats.as_deref().map(boot::resolve_bind).transpose()?,
        app,
        source,
        // uWSGI's USR1 prints the statistics.
        usr1: Usr1::PrintStats,
        reload: false,
        // nginx passes the client's address and scheme in the uwsgi vars.
        forwarded: None,
        // uWSGI has no Python configuration file, nor gunicorn's hooks.
        hooks: None,
        reread: None,
    })
}
// ANCHOR_END: uwsgi_config

/// `--http ADDR`: the router, an extra child of the master. Its port is
/// bound now, in the master, so a busy port is reported at start-up.
fn http_router(
    addr: &str,
    socket: &SocketSpec,
    socket_arg: &str,
    limits: Limits,
) -> Result<ExtraChild, StartError> {
    let listener = boot::bind_tcp_as(boot::resolve_bind(addr)?, "--http")?;
    let upstream = match socket {
        SocketSpec::Unix(path) => Upstream::Unix(std::path::absolute(path).unwrap_or(path.clone())),
        SocketSpec::Tcp(addr) => Upstream::Tcp(*addr),
    };
    log::info!(
        "HTTP router at: http://{} -> {socket_arg}",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    );
    Ok(ExtraChild {
        name: "The HTTP router".to_string(),
        run: Box::new(move || {
            let listener = match listener.try_clone() {
                Ok(l) => l,
                Err(e) => {
                    log::error!("the HTTP router lost its socket: {e}");
                    return 1;
                }
            };
            router::run(listener, upstream.clone(), limits.clone())
        }),
    })
}
