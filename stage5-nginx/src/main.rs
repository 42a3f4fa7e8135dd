//! `stage5-nginx`: real nginx in front of stage 4's workers, and a small
//! supervisor that starts, watches and stops both, as supervisord does in a
//! container. nginx serves `/static/` itself and passes everything else to
//! the app over the uwsgi socket.
//!
//! ```text
//! cargo run -p stage5-nginx                          # hello app + a static site on 127.0.0.1:8080
//! cargo run -p stage5-nginx -- apps.lab:app -w 4     # the lab app, 4 workers
//! cargo run -p stage5-nginx -- --print-nginx-config  # the configuration nginx gets
//! ```

mod ini_file;
mod relay;
mod site;
mod supervisor;

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use wsgi_bridge::boot;
use wsgi_bridge::embed::StartError;
use wsgi_bridge::logging::{self, LogLevel};

use stage5_nginx::config::{self, NginxSettings};
use stage5_nginx::programs;

use crate::supervisor::{Failure, Plan, Role, Supervisor};

/// nginx in front (static files, slow clients, HTTP), stage 4's pre-fork
/// workers behind it on a uwsgi socket, and a supervisor for both.
#[derive(Parser, Debug)]
#[command(name = "stage5-nginx", version)]
struct Args {
    /// The WSGI app, as MODULE:CALLABLE (e.g. apps.lab:app). Without it and
    /// without --wsgi-file, a built-in hello app. A FILE.ini here is --ini.
    #[arg(value_name = "APP")]
    app: Option<String>,

    /// Read the app's and its workers' settings from this uWSGI ini file
    /// (its [uwsgi] section); the command line wins. Its socket settings
    /// are not used: stage 5 makes the socket nginx connects to.
    #[arg(long, value_name = "FILE")]
    ini: Option<PathBuf>,

    /// The ini file's settings that stage 5 passes to stage 4 unread.
    #[arg(skip)]
    stage4_flags: Vec<String>,

    /// Load the app from this Python file instead.
    #[arg(long, value_name = "FILE", conflicts_with = "app")]
    wsgi_file: Option<PathBuf>,

    /// Change to this directory before loading the app.
    #[arg(long, value_name = "DIR")]
    chdir: Option<PathBuf>,

    /// More directories for sys.path (comma-separated or repeated).
    #[arg(long, value_name = "DIRS", value_delimiter = ',')]
    pythonpath: Vec<PathBuf>,

    /// A virtualenv for the app (without it, stage 4 honours $VIRTUAL_ENV).
    #[arg(long, value_name = "DIR")]
    virtualenv: Option<PathBuf>,

    /// Import the app in each worker rather than once in stage 4's master,
    /// so that HUP loads new code (uWSGI's --lazy-apps).
    #[arg(long)]
    lazy_apps: bool,

    /// Threads per stage 4 worker process (uWSGI's --threads).
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,

    /// How many stage 4 worker processes.
    #[arg(
        short,
        long,
        visible_alias = "processes",
        value_name = "N",
        default_value_t = 2
    )]
    workers: usize,

    /// Where nginx listens for clients (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: String,

    /// uwsgi servers already running elsewhere (unix:PATH or HOST:PORT,
    /// comma-separated or repeated): nginx spreads requests over them, and
    /// no stage 4 is started here.
    #[arg(long, value_name = "SOCKETS", value_delimiter = ',',
          conflicts_with_all = ["app", "wsgi_file", "chdir", "pythonpath", "virtualenv", "lazy_apps", "ini"])]
    upstream: Vec<String>,

    /// Kill a worker stuck on one request for more than SECS (0: never).
    /// nginx waits 10 s longer for an answer.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    harakiri: u64,

    /// Serve this directory at /static/ (default: the small site built
    /// into stage5-nginx).
    #[arg(long = "static", value_name = "DIR")]
    static_dir: Option<PathBuf>,

    /// The URL the static directory is served at (Django's STATIC_URL).
    #[arg(long, value_name = "URL", default_value = "/static/")]
    static_url: String,

    /// How long browsers may keep static files without asking again, as
    /// nginx's `expires` takes it (30m, 1h, 7d, max); 'off': no caching
    /// headers.
    #[arg(long, value_name = "TIME", default_value = "1h")]
    static_expires: String,

    /// A directory of uploaded files (Django's MEDIA_ROOT) for nginx to
    /// serve at --media-url.
    #[arg(long = "media", value_name = "DIR")]
    media_dir: Option<PathBuf>,

    /// The URL the media directory is served at (Django's MEDIA_URL).
    #[arg(long, value_name = "URL", default_value = "/media/")]
    media_url: String,

    /// Where nginx.conf, the socket and nginx's files go (default: a new
    /// private directory in /tmp, removed at exit).
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,

    /// The nginx program (default: the first on PATH, or /usr/sbin/nginx).
    #[arg(long, value_name = "PATH")]
    nginx: Option<PathBuf>,

    /// The largest request body nginx accepts (client_max_body_size), in
    /// bytes; larger: 413. 0: no limit.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    limit_request_body: u64,

    /// The largest uwsgi vars block stage 4 accepts, in bytes. The default
    /// is the most a uwsgi packet can carry: whatever head nginx accepted
    /// reaches the app (uWSGI's default, 4096, turns long URLs into 502s).
    #[arg(long, value_name = "BYTES", default_value_t = u16::MAX, value_parser = clap::value_parser!(u16).range(1..))]
    buffer_size: u16,

    /// nginx's access log: '-' for stdout, a file, or 'off'.
    #[arg(long, value_name = "FILE", default_value = "-")]
    access_log: String,

    /// Started by root: the user (USER or USER:GROUP) nginx's workers run
    /// as [default: www-data, else nobody]. Stage 4's socket is given to
    /// its group.
    #[arg(long, value_name = "USER[:GROUP]")]
    user: Option<String>,

    /// How much of one response nginx may keep on disk for a client that
    /// reads slower than the app writes (uwsgi_max_temp_file_size), in
    /// bytes. Past it, the app's worker waits for the client. 0: no file,
    /// only the 256 KiB of memory buffers.
    #[arg(long, value_name = "BYTES", default_value_t = config::DEFAULT_MAX_TEMP_FILE)]
    max_temp_file_size: u64,

    /// Print the nginx configuration this would run with, and exit.
    #[arg(long)]
    print_nginx_config: bool,
}

fn main() {
    let matches = Args::command().get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(args, &matches) {
        Ok(status) => std::process::exit(status),
        Err(e) => boot::exit_with(e),
    }
}

fn run(mut args: Args, matches: &clap::ArgMatches) -> Result<i32, StartError> {
    logging::init(LogLevel::Info);
    append_to_output_files();
    // uWSGI's `uwsgi app.ini`: a bare ini file where the app would be.
    if args.ini.is_none() && args.app.as_deref().is_some_and(|a| a.ends_with(".ini")) {
        args.ini = args.app.take().map(PathBuf::from);
    }
    if let Some(path) = args.ini.clone() {
        let from_ini = ini_file::apply(&mut args, matches, &path)?;
        for warning in &from_ini.warnings {
            log::warn!("{warning}");
        }
        args.stage4_flags = from_ini.stage4_flags;
    }
    if args.workers == 0 {
        return Err(StartError::new("--workers must be at least 1"));
    }
    let site = Site::from_args(&args)?;
    if args.print_nginx_config {
        print!("{}", config::nginx_conf(&site.nginx));
        println!("\n# ---- {} ----", site.nginx.params_path().display());
        print!("{}", config::uwsgi_params());
        return Ok(0);
    }

    let nginx = programs::find_nginx(args.nginx.as_deref()).map_err(StartError::new)?;
    let version = programs::nginx_version(&nginx).map_err(StartError::new)?;
    supervisor::check_port(site.nginx.listen)?;
    let stage4 = if args.upstream.is_empty() {
        Some(programs::find_stage4().map_err(StartError::new)?)
    } else {
        None
    };
    let _cleanup = site.write(args.static_dir.is_none())?;

    log::info!(
        "Starting stage5-nginx {}: {version} in front, stage 4 behind",
        env!("CARGO_PKG_VERSION")
    );
    log::info!("Run directory: {}", site.run_dir.display());
    let plan = Plan {
        nginx: config::nginx_command(&nginx, &site.nginx),
        master: stage4.map(|bin| stage4_command(&bin, &args, &site)),
        socket: args.upstream.is_empty().then(|| site.socket.clone()),
        listen: site.nginx.listen,
        nginx_pid_file: site.nginx.pid_path(),
        grace: Duration::from_secs(site.nginx.read_timeout + 5),
    };
    let mut supervisor = Supervisor::new(plan)?;
    match supervisor.start() {
        Ok(()) => {}
        Err(Failure::Stopped) => {
            supervisor.stop();
            return Ok(0);
        }
        Err(Failure::Error(reason)) => {
            supervisor.stop();
            return Err(StartError::new(reason));
        }
    }
    announce(&supervisor, &site, &nginx, &version, args.workers);
    supervisor.supervise()
}

/// What this run sets up: the run directory, stage 4's socket in it, and
/// nginx's settings.
struct Site {
    run_dir: PathBuf,
    /// Whether the run directory is this run's own, to remove at the end.
    temporary: bool,
    socket: PathBuf,
    /// Who nginx's workers run as, when started by root.
    worker_user: Option<config::WorkerUser>,
    /// The static site nginx serves under /static/.
    static_dir: PathBuf,
    nginx: NginxSettings,
}

impl Site {
    fn from_args(args: &Args) -> Result<Site, StartError> {
        let listen = listen_addr(&args.listen)?;
        let (run_dir, temporary) = match &args.run_dir {
            Some(dir) => (absolute(dir), false),
            None => (
                std::env::temp_dir().join(format!("stage5-nginx.{}", std::process::id())),
                true,
            ),
        };
        let socket = run_dir.join("app.sock");
        let upstreams: Vec<String> = if args.upstream.is_empty() {
            vec![format!("unix:{}", socket.display())]
        } else {
            args.upstream.iter().map(|u| nginx_upstream(u)).collect()
        };
        let static_dir = match &args.static_dir {
            Some(dir) => dir
                .canonicalize()
                .map_err(|e| StartError::new(format!("--static {}: {e}", dir.display())))?,
            None => run_dir.join("static"),
        };
        let worker_user =
            config::unprivileged_user(args.user.as_deref()).map_err(StartError::new)?;
        // nginx waits for an answer longer than the master lets a worker work.
        let read_timeout = if args.harakiri > 0 {
            args.harakiri + 10
        } else {
            60
        };
        let nginx = NginxSettings {
            run_dir: run_dir.clone(),
            listen,
            worker_processes: None,
            static_dir: Some(static_dir.clone()),
            upstreams,
            max_body: args.limit_request_body,
            read_timeout,
            access_log: match args.access_log.as_str() {
                "-" => Some(stdout_or_file(&run_dir)),
                "off" => None,
                path => Some(absolute(Path::new(path))),
            },
            user: worker_user
                .as_ref()
                .map(|u| (u.user.clone(), u.group.clone())),
            max_temp_file: args.max_temp_file_size,
            files: file_options(args)?,
            upstream: Default::default(),
        };
        Ok(Site {
            run_dir,
            temporary,
            socket,
            worker_user,
            static_dir,
            nginx,
        })
    }

    /// Creates the run directory with nginx's files (and the demo static
    /// site, unless `--static` names one); the directory goes away when the
    /// returned guard is dropped, if it is this run's own.
    fn write(&self, with_demo_site: bool) -> Result<RunDir, StartError> {
        if self.temporary {
            remove_stale_run_dirs(self.run_dir.parent().unwrap_or(Path::new("/tmp")));
        }
        let group = self.worker_user.as_ref().map(|u| u.gid);
        config::make_run_dir(&self.run_dir, group).map_err(StartError::new)?;
        let cleanup = RunDir {
            path: self.run_dir.clone(),
            remove: self.temporary,
        };
        let static_dir = &self.static_dir;
        if with_demo_site {
            site::write_into(static_dir).map_err(|e| {
                StartError::new(format!(
                    "cannot write the static site into {}: {e}",
                    static_dir.display()
                ))
            })?;
        }
        config::write_files(&self.nginx).map_err(StartError::new)?;
        Ok(cleanup)
    }
}

/// The banner, once both programs run: where each is, and the address to
/// use.
fn announce(supervisor: &Supervisor, site: &Site, nginx: &Path, version: &str, workers: usize) {
    let pid = |role| supervisor.pid(role).map_or(0, |p| p.as_raw());
    log::info!(
        "nginx: {} ({version}), pid {}",
        nginx.display(),
        pid(Role::Nginx)
    );
    let files = &site.nginx.files;
    log::info!(
        "Static files: {} -> {}",
        config::url_prefix(&files.static_url),
        site.static_dir.display()
    );
    if let Some(media) = &files.media_dir {
        log::info!(
            "Media files: {} -> {}",
            config::url_prefix(&files.media_url),
            media.display()
        );
    }
    let upstreams = &site.nginx.upstreams;
    match supervisor.pid(Role::Master) {
        Some(master) => log::info!(
            "Upstream: {} (stage4-uwsgi-socket, pid {master}, {workers} workers)",
            upstreams[0],
        ),
        None => log::info!("Upstream: {} (not started here)", upstreams.join(", ")),
    }
    log::info!(
        "Listening at: http://{} ({})",
        site.nginx.listen,
        std::process::id()
    );
}

/// `--static-url`, `--static-expires`, `--media` and `--media-url`, checked.
fn file_options(args: &Args) -> Result<config::FileOptions, StartError> {
    let url = |flag: &str, text: &str| {
        if text
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '{' | '}' | ';' | '"' | '\'' | '#' | '?'))
        {
            Ok(text.to_string())
        } else {
            Err(StartError::new(format!(
                "{flag} {text:?}: a URL path like /static/ is needed"
            )))
        }
    };
    let expires = args.static_expires.trim();
    let valid_time = expires == "max"
        || expires
            .strip_suffix(['s', 'm', 'h', 'd', 'w', 'M', 'y'])
            .unwrap_or(expires)
            .parse::<u64>()
            .is_ok();
    if expires != "off" && !valid_time {
        return Err(StartError::new(format!(
            "--static-expires {expires:?}: a time like 30m, 1h, 7d, max, or off"
        )));
    }
    let media_dir = match &args.media_dir {
        Some(dir) => Some(
            dir.canonicalize()
                .map_err(|e| StartError::new(format!("--media {}: {e}", dir.display())))?,
        ),
        None => None,
    };
    Ok(config::FileOptions {
        static_url: url("--static-url", &args.static_url)?,
        static_expires: (expires != "off").then(|| expires.to_string()),
        media_dir,
        media_url: url("--media-url", &args.media_url)?,
    })
}

/// `--listen`; port 0 means a free port, chosen now (nginx cannot report
/// back the port the kernel gave it).
fn listen_addr(text: &str) -> Result<SocketAddr, StartError> {
    let mut addr = boot::resolve_bind(text)?;
    if addr.port() == 0 {
        let free = TcpListener::bind(addr)
            .and_then(|l| l.local_addr())
            .map_err(|e| boot::bind_error(addr, e))?;
        addr.set_port(free.port());
    }
    Ok(addr)
}

/// An `--upstream` as `uwsgi_pass` wants it: `unix:/abs/path` or `host:port`.
fn nginx_upstream(text: &str) -> String {
    let text = text.trim();
    let path = text.strip_prefix("unix:").unwrap_or(text);
    if text.starts_with("unix:") || path.contains('/') || !path.contains(':') {
        format!("unix:{}", absolute(Path::new(path)).display())
    } else {
        text.to_string()
    }
}

/// nginx opens its access log by name, and `/dev/stdout` names this
/// process's standard output: nginx can open it again, as the same user,
/// if this process can. Not always (output redirected to another user's
/// file, or to a socket): then the log goes to a file in the run directory.
fn stdout_or_file(run_dir: &Path) -> PathBuf {
    let stdout = PathBuf::from("/dev/stdout");
    match std::fs::OpenOptions::new().append(true).open(&stdout) {
        Ok(_) => stdout,
        Err(e) => {
            let file = run_dir.join("access.log");
            log::warn!(
                "cannot open /dev/stdout ({e}), nor could nginx: its access log goes to {}",
                file.display()
            );
            file
        }
    }
}

/// nginx appends its access log to this process's standard output when it
/// is a file (`stage5-nginx > log 2>&1`), but the shell opened that file
/// without `O_APPEND`: this process would then write its own lines at its
/// own offset, over nginx's. Switching standard output and error to append
/// mode (on the file description the shell opened, which nginx shares)
/// makes every writer add at the end.
fn append_to_output_files() {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    for fd in [std::io::stdout().as_fd(), std::io::stderr().as_fd()] {
        let is_file =
            nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG);
        if !is_file {
            continue;
        }
        if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
            let flags = OFlag::from_bits_truncate(flags) | OFlag::O_APPEND;
            let _ = fcntl(fd, FcntlArg::F_SETFL(flags));
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Stage 4, with uWSGI's flags.
fn stage4_command(bin: &Path, args: &Args, site: &Site) -> Vec<OsString> {
    let read_timeout = site.nginx.read_timeout;
    let mut cmd: Vec<OsString> = vec![bin.into(), "--socket".into(), site.socket.clone().into()];
    let mut flag = |name: &str, value: OsString| {
        cmd.push(name.into());
        cmd.push(value);
    };
    if let Some(user) = &site.worker_user {
        // nginx's workers connect as another user: the socket is for this
        // user and their group (uWSGI's chown-socket and chmod-socket).
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map_or_else(|| "root".to_string(), |u| u.name);
        flag("--chown-socket", format!("{me}:{}", user.group).into());
        flag("--chmod-socket", "660".into());
    }
    flag("--processes", args.workers.to_string().into());
    flag("--threads", args.threads.to_string().into());
    // Requests wait in the socket's queue while every worker is busy.
    // uWSGI's default queue (100) is soon full under load, and nginx then
    // answers 502 at once; nginx can have as many requests in flight as
    // its worker_connections (1024 per worker) allow.
    flag("--listen", config::UPSTREAM_BACKLOG.to_string().into());
    flag("--harakiri", args.harakiri.to_string().into());
    flag("--buffer-size", args.buffer_size.to_string().into());
    flag(
        "--limit-request-body",
        args.limit_request_body.to_string().into(),
    );
    // A graceful stop or reload waits as long as nginx does.
    flag("--worker-reload-mercy", read_timeout.to_string().into());
    if let Some(app) = &args.app {
        flag("--module", app.into());
    }
    if let Some(file) = &args.wsgi_file {
        flag("--wsgi-file", file.into());
    }
    if let Some(dir) = &args.chdir {
        flag("--chdir", dir.into());
    }
    for dir in &args.pythonpath {
        flag("--pythonpath", dir.into());
    }
    if let Some(venv) = &args.virtualenv {
        flag("--virtualenv", venv.into());
    }
    if args.lazy_apps {
        cmd.push("--lazy-apps".into());
    }
    cmd.extend(args.stage4_flags.iter().map(OsString::from));
    cmd
}

/// Removes the run directories of supervisors that died without cleaning
/// up (`kill -9`: nginx and stage 4 follow it, but nobody removes its
/// directory). A directory is named after its supervisor's pid; it is stale
/// when no process has that pid any more, and it is ours.
fn remove_stale_run_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("stage5-nginx."))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = process_exists(pid);
        let ours = entry.metadata().is_ok_and(|m| {
            std::os::unix::fs::MetadataExt::uid(&m) == nix::unistd::getuid().as_raw()
        });
        if !alive && ours && std::fs::remove_dir_all(entry.path()).is_ok() {
            log::info!(
                "Removed the run directory of a supervisor that died: {}",
                entry.path().display()
            );
        }
    }
}

/// Whether a process has this pid: `kill(pid, 0)` succeeds, or fails with
/// EPERM (it exists, and is someone else's).
fn process_exists(pid: i32) -> bool {
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Ok(()) | Err(nix::errno::Errno::EPERM)
    )
}

/// The run directory stage 5 made for itself, removed when it exits.
struct RunDir {
    path: PathBuf,
    remove: bool,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_as_nginx_names_them() {
        assert_eq!(nginx_upstream("unix:/run/a.sock"), "unix:/run/a.sock");
        assert_eq!(nginx_upstream("/run/a.sock"), "unix:/run/a.sock");
        assert_eq!(nginx_upstream("10.0.0.2:3031"), "10.0.0.2:3031");
        assert!(nginx_upstream("a.sock").starts_with("unix:/"));
    }

    #[test]
    fn file_flags_are_checked() {
        let args = |extra: &[&str]| {
            let mut all = vec!["stage5-nginx"];
            all.extend_from_slice(extra);
            Args::try_parse_from(all).unwrap()
        };
        let files =
            file_options(&args(&["--static-url", "assets", "--static-expires", "7d"])).unwrap();
        assert_eq!(files.static_url, "assets");
        assert_eq!(files.static_expires.as_deref(), Some("7d"));
        let off = file_options(&args(&["--static-expires", "off"])).unwrap();
        assert_eq!(off.static_expires, None);
        assert!(file_options(&args(&["--static-expires", "soon"])).is_err());
        assert!(file_options(&args(&["--static-url", "/a b/"])).is_err());
        assert!(file_options(&args(&["--media", "/no/such/dir"])).is_err());
    }

    #[test]
    fn port_zero_becomes_a_free_port() {
        let addr = listen_addr("127.0.0.1:0").unwrap();
        assert_ne!(addr.port(), 0);
    }
}
