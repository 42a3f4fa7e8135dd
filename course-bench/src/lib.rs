//! The benchmarks' shared parts: which servers are compared, on which
//! workloads, and how one measurement is taken.
//!
//! `benches/stages.rs` runs every workload against every server under
//! criterion and leaves, besides criterion's own files, a summary with what
//! criterion does not know (latency percentiles, CPU time, memory) in
//! `target/bench-results.json`. The `bench-report` binary turns that file
//! into the book's results page.
//!
//! A server is one line of [`servers`]: a name, and how to start it. The
//! course's stages are workspace binaries started with `-b 127.0.0.1:0`;
//! the peers (gunicorn, uWSGI, granian) are found on `PATH` or as Python
//! modules, and skipped, with a line saying how to install them, when absent.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use loadgen::{LoadConfig, LoadReport, run_blocking};
use wsgi_course::procs::{parent_map, process_tree, stat_fields};
use wsgi_course::server::{ServerProcess, repo_root, try_workspace_bin};

/// The app every server serves: all workloads are routes of it.
pub const APP: &str = "apps.lab:app";

// ANCHOR: settings
/// What every server is given, from the environment (defaults in brackets).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `BENCH_CONNECTIONS` [32]: concurrent keep-alive clients.
    pub connections: usize,
    /// `BENCH_WORKERS` [2]: worker processes of every prefork server (the
    /// cores of a lab machine). Stages 1 and 2 are one process by design.
    pub workers: usize,
    /// `BENCH_THREADS` [4]: threads per process of the threaded servers
    /// (stage 2, stage 3 gthread, gunicorn gthread).
    pub threads: usize,
    /// `BENCH_QUICK=1` (or criterion's `--quick`): short runs for class.
    pub quick: bool,
    /// `BENCH_PATIENCE` [30 s; quick: 2 s]: how long, per benchmark, to
    /// wait for other programs to leave the cores alone before running
    /// again a run they disturbed. 0: never wait.
    pub patience: Duration,
}
// ANCHOR_END: settings

impl Settings {
    pub fn from_env() -> Settings {
        let number = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        let flag = |name: &str| {
            std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
        };
        let quick = flag("BENCH_QUICK") || std::env::args().any(|a| a == "--quick");
        let patience = std::env::var("BENCH_PATIENCE")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(if quick { 2 } else { 30 });
        Settings {
            connections: number("BENCH_CONNECTIONS", 32),
            workers: number("BENCH_WORKERS", 2),
            threads: number("BENCH_THREADS", 4),
            quick,
            patience: Duration::from_secs(patience),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "connections": self.connections,
            "workers": self.workers,
            "threads": self.threads,
            "quick": self.quick,
            "patience_s": self.patience.as_secs(),
        })
    }
}

// ANCHOR: workloads
/// One kind of request, sent again and again.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Criterion's group name, and the key in the results.
    pub id: &'static str,
    pub method: &'static str,
    /// A route of `apps/lab.py`.
    pub path: &'static str,
    /// Bytes of request body (sent as `x`s).
    pub body: usize,
    pub about: &'static str,
}

pub const WORKLOADS: &[Workload] = &[
    Workload {
        id: "hello",
        method: "GET",
        path: "/",
        body: 0,
        about: "`GET /`: Hello, World! (what the server itself costs)",
    },
    Workload {
        id: "cpu",
        method: "GET",
        path: "/cpu?ms=1",
        body: 0,
        about: "`GET /cpu?ms=1`: 1 ms of pure-Python work (holds the GIL)",
    },
    Workload {
        id: "io",
        method: "GET",
        path: "/io?ms=10",
        body: 0,
        about: "`GET /io?ms=10`: `time.sleep(0.01)`, like waiting on a database (releases the GIL)",
    },
    Workload {
        id: "bytes64k",
        method: "GET",
        path: "/bytes?n=65536",
        body: 0,
        about: "`GET /bytes?n=65536`: a 64 KiB response",
    },
    Workload {
        id: "echo64k",
        method: "POST",
        path: "/echo",
        body: 64 * 1024,
        about: "`POST /echo` with 64 KiB: the upload read through `wsgi.input` and sent back",
    },
];
// ANCHOR_END: workloads

pub fn workload(id: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.id == id)
}

/// Course stage or real-world server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Course,
    Peer,
}

/// How to start a server.
pub enum Launch {
    /// A workspace binary (built first, with the benchmark's profile).
    Stage(&'static str),
    /// A program on `PATH`, or else `python3 -m MODULE`; if neither is
    /// there, the server is skipped with a line saying to run `install`.
    Peer {
        program: &'static str,
        module: &'static str,
        install: &'static str,
    },
}

/// Who the load generator talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    /// The server itself, over HTTP.
    Direct,
    /// The harness' nginx (`src/nginx.rs`: stage 5's configuration with one
    /// worker process and no static files), passing every request to the
    /// server's unix socket (`{socket}` in the arguments) with `uwsgi_pass`.
    /// Stage 4 and `uwsgi --socket` are measured behind the same
    /// configuration.
    Nginx,
}

/// Why a server is not in this run.
#[derive(Clone, Debug)]
pub struct Skip {
    pub reason: String,
    /// What to run to have it next time (empty if nothing helps).
    pub install: String,
}

/// One line of the table of servers.
pub struct ServerSpec {
    /// Criterion's function name, and the key in the results.
    pub id: &'static str,
    pub title: &'static str,
    pub family: Family,
    pub launch: Launch,
    /// The command line after the program, with placeholders: `{workers}`,
    /// `{threads}` (the settings), `{app}` ([`APP`]), `{addr}` (HOST:PORT),
    /// `{host}`, `{port}`, and `{socket}` (the unix socket of a server behind
    /// nginx).
    pub args: &'static str,
    /// Processes and threads, for the tables, with the same placeholders.
    pub shape: &'static str,
    /// It prints gunicorn's `Listening at: http://HOST:PORT` banner, so it
    /// is given port 0 and the harness reads the port it got; otherwise a
    /// free port is picked for it and the harness waits until it accepts.
    pub banner: bool,
    /// The processes whose memory is reported as "per worker".
    pub workers: fn(&ServerProcess) -> Vec<u32>,
    pub front: Front,
    /// Another workspace binary it runs (stage 5 runs stage 4's), built
    /// before it starts.
    pub runs: Option<&'static str>,
    /// It starts nginx itself: skipped when nginx is not installed.
    pub needs_nginx: bool,
}

/// A course stage: a workspace binary with a banner, its workers the
/// children of its master.
const fn stage(
    id: &'static str,
    title: &'static str,
    bin: &'static str,
    args: &'static str,
    shape: &'static str,
) -> ServerSpec {
    ServerSpec {
        id,
        title,
        family: Family::Course,
        launch: Launch::Stage(bin),
        args,
        shape,
        banner: true,
        workers: child_processes,
        front: Front::Direct,
        runs: None,
        needs_nginx: false,
    }
}

/// A real-world server, skipped when not installed.
const fn peer(
    id: &'static str,
    title: &'static str,
    program: &'static str,
    module: &'static str,
    install: &'static str,
    args: &'static str,
    shape: &'static str,
) -> ServerSpec {
    ServerSpec {
        id,
        title,
        family: Family::Peer,
        launch: Launch::Peer {
            program,
            module,
            install,
        },
        args,
        shape,
        banner: true,
        workers: child_processes,
        front: Front::Direct,
        runs: None,
        needs_nginx: false,
    }
}

impl ServerSpec {
    /// One process serves (no master): its own memory is the worker's.
    const fn single_process(mut self) -> ServerSpec {
        self.workers = root_process;
        self
    }

    /// It prints no banner: give it a free port and wait until it accepts.
    const fn no_banner(mut self) -> ServerSpec {
        self.banner = false;
        self
    }

    const fn workers_are(mut self, workers: fn(&ServerProcess) -> Vec<u32>) -> ServerSpec {
        self.workers = workers;
        self
    }

    /// It answers uwsgi on `{socket}`: measured behind the harness' nginx.
    const fn behind_nginx(mut self) -> ServerSpec {
        self.front = Front::Nginx;
        self.needs_nginx = true;
        self
    }

    /// It runs nginx and the workspace binary `bin` itself (stage 5).
    const fn runs_nginx_and(mut self, bin: &'static str) -> ServerSpec {
        self.runs = Some(bin);
        self.needs_nginx = true;
        self
    }
}

// ANCHOR: servers
/// The servers compared, in the order of the tables: one line each.
#[rustfmt::skip]
pub fn servers() -> Vec<ServerSpec> {
    vec![
        stage("stage1", "stage 1: one thread", "stage1-single", "-b {addr} {app}", "1 process x 1 thread").single_process(),
        stage("stage2", "stage 2: threads, one GIL", "stage2-threads", "--threads {threads} -b {addr} {app}", "1 process x {threads} threads").single_process(),
        stage("stage3-sync", "stage 3: prefork, sync workers", "stage3-prefork", "-w {workers} -b {addr} {app}", "{workers} workers x 1 thread"),
        stage("stage3-gthread", "stage 3: prefork, gthread workers", "stage3-prefork", "-w {workers} -k gthread --threads {threads} -b {addr} {app}", "{workers} workers x {threads} threads"),
        // Stage 4 answers uwsgi, not HTTP: measured behind nginx, the same
        // nginx as uWSGI's --socket below. Stage 5 is the same pair started
        // by one command, with its own nginx.conf (one nginx worker per core).
        stage("stage4-nginx", "stage 4: uwsgi workers behind nginx", "stage4-uwsgi-socket", "--socket {socket} --processes {workers} --module {app}", "nginx (1 worker) + {workers} workers x 1 thread").behind_nginx(),
        stage("stage5", "stage 5: nginx + stage 4, one command", "stage5-nginx", "--workers {workers} --listen {addr} --access-log off {app}", "nginx (1 worker per core) + {workers} workers x 1 thread").runs_nginx_and("stage4-uwsgi-socket").workers_are(stage4_workers),
        peer("gunicorn-sync", "gunicorn, sync workers", "gunicorn", "gunicorn", "pip install gunicorn", "-w {workers} -b {addr} {app}", "{workers} workers x 1 thread"),
        peer("gunicorn-gthread", "gunicorn, gthread workers", "gunicorn", "gunicorn", "pip install gunicorn", "-w {workers} -k gthread --threads {threads} -b {addr} {app}", "{workers} workers x {threads} threads"),
        peer("uwsgi-http", "uWSGI --http (its HTTP router in front)", "uwsgi", "pyuwsgi", "pip install pyuwsgi", "--http {addr} --master --processes {workers} --module {app} --need-app --disable-logging", "router + {workers} workers x 1 thread").no_banner().workers_are(uwsgi_workers),
        peer("uwsgi-socket", "uWSGI --socket behind nginx (as stage 4)", "uwsgi", "pyuwsgi", "pip install pyuwsgi", "--socket {socket} --master --processes {workers} --module {app} --need-app --disable-logging", "nginx (1 worker) + {workers} workers x 1 thread").no_banner().behind_nginx(),
        peer("granian", "granian --interface wsgi (Rust: tokio + hyper)", "granian", "granian", "pip install granian", "--interface wsgi --workers {workers} --host {host} --port {port} {app}", "{workers} workers (tokio + blocking threads)").no_banner(),
    ]
}
// ANCHOR_END: servers

/// `template` with the placeholders of [`ServerSpec::args`] filled in.
pub fn expand(template: &str, settings: &Settings, addr: SocketAddr, socket: &str) -> String {
    template
        .replace("{socket}", socket)
        .replace("{workers}", &settings.workers.to_string())
        .replace("{threads}", &settings.threads.to_string())
        .replace("{app}", APP)
        .replace("{addr}", &addr.to_string())
        .replace("{host}", &addr.ip().to_string())
        .replace("{port}", &addr.port().to_string())
}

/// A server started for the benchmarks; dropping it stops it.
pub struct Running {
    pub addr: SocketAddr,
    /// The process trees serving requests, for their CPU time.
    pub roots: Vec<u32>,
    /// The server answered a keep-alive request without closing.
    pub keeps_alive: bool,
    /// `program --version` for a peer.
    pub version: Option<String>,
    workers: Box<dyn Fn() -> Vec<u32>>,
    _guard: Box<dyn std::any::Any>,
}

impl Running {
    /// The worker processes now (a replaced worker has a new pid).
    pub fn worker_pids(&self) -> Vec<u32> {
        (self.workers)()
    }

    /// CPU time used so far by every process serving requests.
    pub fn cpu(&self) -> Duration {
        self.roots.iter().map(|r| tree_cpu(*r)).sum()
    }

    /// The part of [`cpu`](Self::cpu) that nginx's processes used (the
    /// front of stage 4, stage 5 and uWSGI --socket; zero for the others).
    pub fn front_cpu(&self) -> Duration {
        self.roots
            .iter()
            .flat_map(|r| process_tree(*r))
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "nginx")
            })
            .map(process_cpu)
            .sum()
    }
}

impl ServerSpec {
    /// The shape with the settings filled in.
    pub fn shape(&self, settings: &Settings) -> String {
        expand(
            self.shape,
            settings,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            "",
        )
    }

    /// Why it cannot run on this machine (a peer or nginx not installed),
    /// known before anything is started.
    pub fn missing(&self) -> Option<Skip> {
        if let Launch::Peer {
            program,
            module,
            install,
        } = &self.launch
            && !peer_installed(program, module)
        {
            return Some(Skip {
                reason: format!("{program} is not installed"),
                install: install.to_string(),
            });
        }
        if self.needs_nginx && wsgi_course::nginx::nginx_binary().is_none() {
            return Some(Skip {
                reason: "nginx is not installed".to_string(),
                install: "apt-get install nginx".to_string(),
            });
        }
        None
    }

    /// Starts the server with the lab app, in the repository root (and
    /// nginx in front of it if it answers uwsgi), and checks that it
    /// answers.
    pub fn start(&self, settings: &Settings) -> Result<Running, Skip> {
        if let Some(skip) = self.missing() {
            return Err(skip);
        }
        let root = repo_root();
        let failed = |e: String| Skip {
            reason: first_line(&e),
            install: String::new(),
        };
        if let Some(bin) = self.runs {
            try_workspace_bin(bin).map_err(failed)?;
        }
        let (mut cmd, version) = match &self.launch {
            Launch::Stage(bin) => (Command::new(try_workspace_bin(bin).map_err(failed)?), None),
            Launch::Peer {
                program, module, ..
            } => (
                find_peer(program, module).ok_or_else(|| failed(format!("{program} vanished")))?,
                peer_version(program, module),
            ),
        };
        // Behind nginx, the server's socket lives in a private directory.
        let socket_dir = match self.front {
            Front::Direct => None,
            Front::Nginx => Some(PrivateDir::new(self.id).map_err(|e| failed(e.to_string()))?),
        };
        let socket = socket_dir.as_ref().map(|d| d.0.join("app.sock"));
        let socket_text = socket.as_ref().map(|p| p.display().to_string());
        let addr = if self.banner || socket.is_some() {
            SocketAddr::from(([127, 0, 0, 1], 0))
        } else {
            free_addr()
        };
        let args = expand(
            self.args,
            settings,
            addr,
            socket_text.as_deref().unwrap_or("{socket}"),
        );
        cmd.args(args.split_whitespace()).current_dir(&root);
        let process = match &socket {
            _ if self.banner => ServerProcess::start_command(self.id, cmd),
            Some(path) => ServerProcess::start_command_at_unix(self.id, cmd, path),
            None => ServerProcess::start_command_at(self.id, cmd, addr),
        }
        .map_err(failed)?;
        let process = std::rc::Rc::new(process);
        let select = self.workers;
        let for_workers = process.clone();
        let workers = Box::new(move || select(&for_workers));
        let Some(text) = socket_text else {
            return Running::checked(
                process.addr(),
                vec![process.pid()],
                version,
                workers,
                Box::new(process),
            );
        };
        let nginx = wsgi_course::nginx::try_uwsgi_front(&format!("unix:{text}"), 1 << 20)
            .map_err(failed)?;
        Running::checked(
            nginx.addr,
            vec![process.pid(), nginx.process.pid()],
            version,
            workers,
            // Dropped in this order: nginx stops, then the server, then the
            // directory of its socket goes.
            Box::new((nginx, process, socket_dir)),
        )
    }
}

/// A directory only this user can enter, removed when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new(name: &str) -> std::io::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        let path =
            std::env::temp_dir().join(format!("wsgi-course-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(PrivateDir(path))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Running {
    fn checked(
        addr: SocketAddr,
        roots: Vec<u32>,
        version: Option<String>,
        workers: Box<dyn Fn() -> Vec<u32>>,
        guard: Box<dyn std::any::Any>,
    ) -> Result<Running, Skip> {
        let keeps_alive = probe_keep_alive(addr).map_err(|e| Skip {
            reason: format!("started, but did not answer GET / ({e})"),
            install: String::new(),
        })?;
        Ok(Running {
            addr,
            roots,
            keeps_alive,
            version,
            workers,
            _guard: guard,
        })
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// Whether a peer can be started: `program` on PATH, or `module` importable.
pub fn peer_installed(program: &str, module: &str) -> bool {
    find_peer(program, module).is_some()
}

/// `program` on PATH, or `python3 -m module` if the module imports.
fn find_peer(program: &str, module: &str) -> Option<Command> {
    if let Some(path) = which(program) {
        return Some(Command::new(path));
    }
    let importable = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    importable.then(|| {
        let mut c = Command::new("python3");
        c.args(["-m", module]);
        c
    })
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn peer_version(program: &str, module: &str) -> Option<String> {
    let mut cmd = find_peer(program, module)?;
    let out = cmd.arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .trim()
    .to_string();
    Some(first_line(&text)).filter(|v| !v.is_empty())
}

/// A loopback address whose port is free right now (the kernel picks it;
/// there is a small window before the server binds it).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

/// Sends `GET /` and reads the response: whether the connection stays open.
fn probe_keep_alive(addr: SocketAddr) -> std::io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the head, then see whether more than the response comes: EOF
    // within a moment means the server closed.
    let head_end = loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") && !head.starts_with("http/1.0 200") {
        return Err(std::io::Error::other(format!(
            "status line {:?}",
            head.lines().next().unwrap_or("")
        )));
    }
    if head.contains("\r\nconnection: close") {
        return Ok(false);
    }
    s.set_read_timeout(Some(Duration::from_millis(300)))?;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(_) => return Ok(true),
        }
    }
}

/// Sends one request and waits for its answer (at most 30 s). Served after
/// what the server had queued before it, so it returns once the server has
/// caught up.
fn drain(addr: SocketAddr) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_ok() {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }
}

/// The server process itself (stages 1 and 2: one process).
pub fn root_process(p: &ServerProcess) -> Vec<u32> {
    vec![p.pid()]
}

/// The children of the master (prefork servers).
pub fn child_processes(p: &ServerProcess) -> Vec<u32> {
    let parents = parent_map();
    let kids: Vec<u32> = parents
        .iter()
        .filter(|(_, pp)| **pp == p.pid())
        .map(|(c, _)| *c)
        .collect();
    if kids.is_empty() { vec![p.pid()] } else { kids }
}

/// Stage 4's workers, wherever they are in the tree (stage 5 runs stage 4
/// behind nginx): the processes of `stage4-uwsgi-socket` whose parent is
/// one too.
pub fn stage4_workers(p: &ServerProcess) -> Vec<u32> {
    let parents = parent_map();
    let is_stage4 = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.starts_with("stage4-uwsgi"))
    };
    process_tree(p.pid())
        .into_iter()
        .filter(|pid| is_stage4(*pid) && parents.get(pid).is_some_and(|pp| is_stage4(*pp)))
        .collect()
}

/// uWSGI's workers: its children but the HTTP router, which it names in
/// its log (`spawned uWSGI http 1 (pid: N)`).
pub fn uwsgi_workers(p: &ServerProcess) -> Vec<u32> {
    let routers: Vec<u32> = p
        .stderr_text()
        .lines()
        .filter(|l| l.contains("spawned uWSGI http"))
        .filter_map(|l| {
            l.rsplit("pid: ")
                .next()?
                .trim_end_matches(')')
                .trim()
                .parse()
                .ok()
        })
        .collect();
    child_processes(p)
        .into_iter()
        .filter(|pid| !routers.contains(pid))
        .collect()
}

// ---- /proc --------------------------------------------------------------

/// CPU time (user + system) a process has used so far, all its threads.
pub fn process_cpu(pid: u32) -> Duration {
    // utime and stime are fields 14 and 15 of /proc/PID/stat; `stat_fields`
    // starts at field 3.
    let ticks = stat_fields(pid)
        .map(|f| {
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            n(11) + n(12)
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// CPU time used so far by `root` and its descendants.
pub fn tree_cpu(root: u32) -> Duration {
    process_tree(root).into_iter().map(process_cpu).sum()
}

/// CPU time the machine has spent running processes since boot: user and
/// system time from `/proc/stat`, without kernel threads (`ksoftirqd`,
/// `kworker`: they do network work on behalf of the server and the client)
/// and without interrupt time (the same, counted apart). What is left,
/// minus the server and the load generator, is other programs.
pub fn machine_busy() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Duration::ZERO;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return Duration::ZERO;
    };
    // user nice system (guest time is already in user).
    let ticks: u64 = line
        .split_whitespace()
        .skip(1)
        .take(3)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let kernel_threads: Duration = parent_map()
        .iter()
        .filter(|(pid, ppid)| **ppid == 2 || **pid == 2)
        .map(|(pid, _)| process_cpu(*pid))
        .sum();
    Duration::from_micros(ticks * 1_000_000 / hz).saturating_sub(kernel_threads)
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Proportional set size of a process, in KiB (`/proc/PID/smaps_rollup`,
/// Linux 4.14 and later).
pub fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time of the calling thread (the load generator runs on it).
pub fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass, nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

// ---- one measurement ----------------------------------------------------

// ANCHOR: measure
/// How long one run of the load generator lasts.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// This many requests, then stop. The last ones finish one by one while
    /// the other connections are already done: an idle tail, which biases
    /// a short run.
    Requests(u64),
    /// Send requests for this long; the ones still in flight at the end are
    /// not counted (wrk's way): no tail.
    Time(Duration),
}

/// `workload` against a running server for `budget`, at the settings'
/// concurrency, with the load generator on this thread. Besides the load
/// generator's report, the CPU time the server and the generator used, and
/// the memory of the server's workers afterwards.
pub fn measure(
    server: &Running,
    workload: &Workload,
    settings: &Settings,
    budget: Budget,
) -> Measurement {
    let mut cfg = LoadConfig::new(server.addr);
    cfg.method = workload.method.into();
    cfg.path = workload.path.into();
    cfg.body = vec![b'x'; workload.body];
    cfg.connections = settings.connections;
    match budget {
        Budget::Requests(n) => cfg.requests = Some(n),
        Budget::Time(d) => cfg.duration = Some(d),
    }
    cfg.timeout = Duration::from_secs(30);
    let machine_before = machine_busy();
    let server_before = server.cpu();
    let front_before = server.front_cpu();
    let loadgen_before = thread_cpu();
    let report = run_blocking(&cfg);
    let loadgen_cpu = thread_cpu().saturating_sub(loadgen_before);
    let server_cpu = server.cpu().saturating_sub(server_before);
    let front_cpu = server.front_cpu().saturating_sub(front_before);
    // Whatever else kept the cores busy meanwhile: other programs (a
    // build, a browser).
    let other_cpu = machine_busy()
        .saturating_sub(machine_before)
        .saturating_sub(server_cpu + loadgen_cpu);
    let workers = server.worker_pids();
    let rss_kib = workers.iter().filter_map(|p| rss_kib(*p)).collect();
    let pss_kib = workers.iter().filter_map(|p| pss_kib(*p)).collect();
    if let Budget::Time(_) = budget {
        // The requests cut off at the end are still queued in the server
        // (a sync worker serves them to a closed socket): let it work them
        // off before the next run, or that run pays for them.
        drain(server.addr);
    }
    Measurement {
        report,
        loadgen_cpu,
        server_cpu,
        front_cpu,
        other_cpu,
        rss_kib,
        pss_kib,
    }
}
// ANCHOR_END: measure

/// Other programs using more than this many cores during a run disturb
/// it: the run is repeated once the machine is quiet, if patience allows.
pub const NOISY_CORES: f64 = 0.25;

/// Waits until the rest of the machine uses less than [`NOISY_CORES`]
/// (sampled over a quarter of a second), at most `patience`, which is
/// decreased by the time waited. The server is idle meanwhile, so whatever
/// is busy is someone else. Returns whether the machine is quiet.
pub fn wait_for_quiet(patience: &mut Duration) -> bool {
    const SAMPLE: Duration = Duration::from_millis(250);
    loop {
        let before = machine_busy();
        std::thread::sleep(SAMPLE);
        let busy = machine_busy().saturating_sub(before);
        *patience = patience.saturating_sub(SAMPLE);
        if busy.as_secs_f64() / SAMPLE.as_secs_f64() < NOISY_CORES {
            return true;
        }
        if patience.is_zero() {
            return false;
        }
    }
}

/// One run of the load generator, and what it cost.
pub struct Measurement {
    pub report: LoadReport,
    pub loadgen_cpu: Duration,
    pub server_cpu: Duration,
    /// The part of `server_cpu` nginx used, in front of the server.
    pub front_cpu: Duration,
    /// CPU time used by everything else on the machine meanwhile.
    pub other_cpu: Duration,
    /// Of each worker, after the run.
    pub rss_kib: Vec<u64>,
    /// Proportional set size of each worker: pages shared with other
    /// processes (the master, after fork) count for their share only.
    pub pss_kib: Vec<u64>,
}

impl Measurement {
    /// Cores used by other programs during the run.
    pub fn other_cores(&self) -> f64 {
        let secs = self.report.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.other_cpu.as_secs_f64() / secs
        } else {
            0.0
        }
    }
}

/// Several measurements of one server on one workload, added up.
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
    pub loadgen_cpu: Duration,
    pub server_cpu: Duration,
    pub front_cpu: Duration,
    pub other_cpu: Duration,
    pub rss_kib: Vec<u64>,
    pub pss_kib: Vec<u64>,
    pub runs: usize,
}

impl Summary {
    pub fn of(measurements: &[Measurement]) -> Option<Summary> {
        let first = measurements.first()?;
        let mut latency = first.report.latency.clone();
        latency.reset();
        let mut s = Summary {
            requests: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency,
            loadgen_cpu: Duration::ZERO,
            server_cpu: Duration::ZERO,
            front_cpu: Duration::ZERO,
            other_cpu: Duration::ZERO,
            rss_kib: Vec::new(),
            pss_kib: Vec::new(),
            runs: measurements.len(),
        };
        for m in measurements {
            s.requests += m.report.requests;
            s.errors += m.report.errors;
            s.elapsed += m.report.elapsed;
            let _ = s.latency.add(&m.report.latency);
            s.loadgen_cpu += m.loadgen_cpu;
            s.server_cpu += m.server_cpu;
            s.front_cpu += m.front_cpu;
            s.other_cpu += m.other_cpu;
            s.rss_kib.clone_from(&m.rss_kib);
            s.pss_kib.clone_from(&m.pss_kib);
        }
        Some(s)
    }

    pub fn rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    fn percentile(&self, p: f64) -> u64 {
        if self.latency.is_empty() {
            0
        } else {
            self.latency.value_at_percentile(p)
        }
    }

    fn per_request_us(&self, d: Duration) -> f64 {
        let n = (self.requests + self.errors).max(1);
        d.as_secs_f64() * 1e6 / n as f64
    }

    pub fn to_json(&self) -> Value {
        let elapsed = self.elapsed.as_secs_f64().max(1e-9);
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "runs": self.runs,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "rps": self.rps(),
            "p50_us": self.percentile(50.0),
            "p99_us": self.percentile(99.0),
            "max_us": if self.latency.is_empty() { 0 } else { self.latency.max() },
            "server_cpu_s": self.server_cpu.as_secs_f64(),
            "loadgen_cpu_s": self.loadgen_cpu.as_secs_f64(),
            "server_cores": self.server_cpu.as_secs_f64() / elapsed,
            "loadgen_cores": self.loadgen_cpu.as_secs_f64() / elapsed,
            "other_cores": self.other_cpu.as_secs_f64() / elapsed,
            "server_cpu_us_per_request": self.per_request_us(self.server_cpu),
            "front_cpu_us_per_request": self.per_request_us(self.front_cpu),
            "loadgen_cpu_us_per_request": self.per_request_us(self.loadgen_cpu),
            "rss_kib_per_worker": self.rss_kib,
            "pss_kib_per_worker": self.pss_kib,
        })
    }
}

// ---- the results file ---------------------------------------------------

/// The machine, for the results page: numbers mean little without it.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| std::env::consts::OS.into());
    let python = Command::new("python3")
        .args(["-c", "import sys; print(sys.version.split()[0])"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "cores": cores,
        "cpu": cpu,
        "kernel": kernel,
        "os": std::env::consts::OS,
        "python": python,
        "date": utc_date(now),
        "unix_time": now,
    })
}

/// `2026-11-21 10:31 UTC`.
pub fn utc_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let rem = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Where cargo puts its output: `CARGO_TARGET_DIR`, or `target/` in the
/// repository.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                repo_root().join(p)
            }
        })
        .unwrap_or_else(|| repo_root().join("target"))
}

/// `target/bench-results.json`.
pub fn results_path() -> PathBuf {
    target_dir().join("bench-results.json")
}

/// The summary file of one run of `benches/stages.rs`, rewritten after every
/// benchmark so an interrupted run keeps what it measured.
pub struct ResultsFile {
    path: PathBuf,
    doc: Value,
}

impl ResultsFile {
    pub fn new(settings: &Settings) -> ResultsFile {
        ResultsFile {
            path: results_path(),
            doc: json!({
                "machine": machine(),
                "settings": settings.to_json(),
                "workloads": WORKLOADS.iter().map(|w| json!({
                    "id": w.id, "method": w.method, "path": w.path, "body": w.body, "about": w.about,
                })).collect::<Vec<_>>(),
                "servers": [],
                "skipped": [],
                "results": [],
            }),
        }
    }

    pub fn add_server(&mut self, spec: &ServerSpec, settings: &Settings, running: &Running) {
        push(
            &mut self.doc["servers"],
            json!({
                "id": spec.id,
                "title": spec.title,
                "family": match spec.family { Family::Course => "course", Family::Peer => "peer" },
                "shape": spec.shape(settings),
                "keeps_alive": running.keeps_alive,
                "version": running.version,
            }),
        );
        self.save();
    }

    pub fn add_skip(&mut self, spec: &ServerSpec, skip: &Skip) {
        push(
            &mut self.doc["skipped"],
            json!({ "id": spec.id, "title": spec.title, "reason": skip.reason, "install": skip.install }),
        );
        self.save();
    }

    pub fn add_result(&mut self, workload: &Workload, spec: &ServerSpec, summary: &Summary) {
        let mut row = summary.to_json();
        row["workload"] = workload.id.into();
        row["server"] = spec.id.into();
        push(&mut self.doc["results"], row);
        self.save();
    }

    fn save(&self) {
        let text = serde_json::to_string_pretty(&self.doc).unwrap_or_default();
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(&self.path, text) {
            eprintln!("cannot write {}: {e}", self.path.display());
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn push(array: &mut Value, item: Value) {
    if let Some(a) = array.as_array_mut() {
        a.push(item);
    }
}

/// Criterion's estimate of one benchmark: nanoseconds per iteration (the
/// slope where criterion fitted one, else the mean), with its confidence
/// interval.
pub fn criterion_estimate(group: &str, function: &str) -> Option<(f64, f64, f64)> {
    let path = target_dir()
        .join("criterion")
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let pick = |k: &str| -> Option<(f64, f64, f64)> {
        let e = v.get(k)?;
        Some((
            e["point_estimate"].as_f64()?,
            e["confidence_interval"]["lower_bound"].as_f64()?,
            e["confidence_interval"]["upper_bound"].as_f64()?,
        ))
    };
    pick("slope").or_else(|| pick("mean"))
}

/// Groups rows by a key, keeping the order of first appearance.
pub fn by_key<'a>(rows: &'a [Value], key: &str) -> BTreeMap<String, Vec<&'a Value>> {
    let mut map: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in rows {
        if let Some(k) = r[key].as_str() {
            map.entry(k.to_string()).or_default().push(r);
        }
    }
    map
}

/// How long a benchmark has run, for progress lines.
pub fn since(t: Instant) -> String {
    format!("{:.1}s", t.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_795_256_400 + 3_660), "2026-11-21 11:21 UTC");
    }

    #[test]
    fn the_table_has_unique_ids_and_the_lab_routes() {
        let servers = servers();
        let mut ids: Vec<&str> = servers.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), servers.len());
        let settings = Settings::from_env();
        let addr = SocketAddr::from(([127, 0, 0, 1], 8000));
        for s in &servers {
            let line = expand(s.args, &settings, addr, "/tmp/app.sock") + &s.shape(&settings);
            assert!(
                !line.contains('{'),
                "{}: a placeholder is left in {line:?}",
                s.id
            );
        }
        assert!(WORKLOADS.iter().all(|w| w.path.starts_with('/')));
        let lab = std::fs::read_to_string(repo_root().join("apps/lab.py")).unwrap();
        for w in WORKLOADS.iter().filter(|w| w.path != "/") {
            let route = w.path.split('?').next().unwrap();
            assert!(
                lab.contains(&format!("\"{route}\"")),
                "{route} is not in apps/lab.py"
            );
        }
    }

    #[test]
    fn this_process_is_seen_in_proc() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(pss_kib(me).unwrap() > 0);
        assert!(process_tree(me).contains(&me));
        let t0 = thread_cpu();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu() > t0);
    }
}
