//! The servers compared: the course's stages and real peers, each one line
//! of [`servers`], and how one is started, checked and watched.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use wsgi_course::procs::{parent_map, process_tree};
use wsgi_course::server::{ServerProcess, repo_root, try_workspace_bin};

use crate::measurement::{process_cpu, tree_cpu};
use crate::{APP, ASGI_APP, Settings};

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
    /// It serves ASGI apps: `{app}` is [`ASGI_APP`].
    pub asgi: bool,
    /// The workloads it is measured on, if not all of its kind's (the null
    /// server answers only `/` and `/io`).
    pub only: &'static [&'static str],
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
        asgi: false,
        only: &[],
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
        asgi: false,
        only: &[],
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

    /// It serves the ASGI twin of the lab app.
    const fn asgi(mut self) -> ServerSpec {
        self.asgi = true;
        self
    }

    /// It is measured only on these workloads.
    const fn only(mut self, workloads: &'static [&'static str]) -> ServerSpec {
        self.only = workloads;
        self
    }

    /// Whether it is measured on `workload`.
    pub fn runs_workload(&self, workload: &crate::Workload) -> bool {
        (self.asgi || !workload.asgi_only)
            && (self.only.is_empty() || self.only.contains(&workload.id))
    }

    /// The app it serves.
    pub fn app(&self) -> &'static str {
        if self.asgi { ASGI_APP } else { APP }
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
        // ASGI: one event loop per process, the app apps/asgi_lab.py.
        stage("stage6", "stage 6: one event loop (ASGI)", "stage6-asgi", "-b {addr} {app}", "1 process, 1 asyncio loop + 1 I/O thread").single_process().asgi(),
        stage("stage3-asgi", "stage 3: prefork, asgi workers (stage 6's loop)", "stage3-prefork", "-w {workers} -k asgi -b {addr} {app}", "{workers} workers x 1 loop").asgi(),
        peer("uvicorn", "uvicorn (uvloop + httptools)", "uvicorn", "uvicorn", "pip install 'uvicorn[standard]'", "--workers {workers} --loop uvloop --http httptools --no-access-log --log-level warning --host {host} --port {port} {app}", "{workers} workers x 1 loop").no_banner().asgi(),
        // --backpressure: granian holds at most backlog / workers (512)
        // connections per worker by default, and the idle-connection
        // measurement opens 10,000.
        peer("granian-asgi", "granian --interface asgi", "granian", "granian", "pip install granian", "--interface asgi --workers {workers} --backpressure 16384 --host {host} --port {port} {app}", "{workers} workers (tokio + 1 loop)").no_banner().asgi(),
        // The bound: stage 3 -k asgi's shape with stage 6's I/O thread and no
        // Python at all (course-bench/src/bin/null-server.rs). No server that
        // runs the app can beat it; how close each gets is what they cost.
        stage("null", "null server: no Python (the bound)", "null-server", "-w {workers} -b {addr}", "{workers} workers x 1 tokio thread").asgi().only(&["hello", "io", "io256", "wsecho"]),
        peer("hypercorn", "hypercorn (asyncio)", "hypercorn", "hypercorn", "pip install hypercorn", "--workers {workers} --bind {addr} {app}", "{workers} workers x 1 loop").no_banner().asgi(),
    ]
}
// ANCHOR_END: servers

/// `template` with the placeholders of [`ServerSpec::args`] filled in.
pub fn expand(
    template: &str,
    settings: &Settings,
    addr: SocketAddr,
    socket: &str,
    app: &str,
) -> String {
    template
        .replace("{socket}", socket)
        .replace("{workers}", &settings.workers.to_string())
        .replace("{threads}", &settings.threads.to_string())
        .replace("{app}", app)
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
            self.app(),
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
            self.app(),
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
    if !out.status.success() {
        // No --version (hypercorn answers with its usage): ask the
        // package's metadata instead.
        let out = Command::new("python3")
            .args([
                "-c",
                "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))",
                module,
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return out
            .status
            .success()
            .then_some(text)
            .filter(|v| !v.is_empty());
    }
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
pub(crate) fn drain(addr: SocketAddr) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WORKLOADS;

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
            let line =
                expand(s.args, &settings, addr, "/tmp/app.sock", s.app()) + &s.shape(&settings);
            assert!(
                !line.contains('{'),
                "{}: a placeholder is left in {line:?}",
                s.id
            );
        }
        assert!(WORKLOADS.iter().all(|w| w.path.starts_with('/')));
        let lab = std::fs::read_to_string(repo_root().join("apps/lab.py")).unwrap();
        // The WebSocket workload's route is the ASGI app's echo (`/ws`).
        let asgi_lab = std::fs::read_to_string(repo_root().join("apps/asgi_lab.py")).unwrap();
        for w in WORKLOADS
            .iter()
            .filter(|w| w.kind == crate::Kind::WebSocket)
        {
            assert!(asgi_lab.contains(&format!("    {}  ", w.path)));
        }
        let http = WORKLOADS.iter().filter(|w| w.kind == crate::Kind::Http);
        for w in http.filter(|w| w.path != "/") {
            let route = w.path.split('?').next().unwrap();
            assert!(
                lab.contains(&format!("\"{route}\"")),
                "{route} is not in apps/lab.py"
            );
        }
    }
}
