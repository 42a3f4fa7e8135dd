//! Stage 5: nginx in front of stage 4, and the supervisor that runs both.
//! Each behaviour on the real binaries: static files and the app through
//! one port, crashes recovered, a clean stop, errors in one sentence, and
//! the slow-client lab against stage 3.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use wsgi_course::client;
use wsgi_course::procs::{alive, children, descendants};
use wsgi_course::server::{ServerProcess, repo_root, workspace_bin};
use wsgi_course::wait_until;

const BIN: &str = "stage5-nginx";

/// nginx is needed for everything here; without it each test says so and
/// passes (as the stage 4 tests do).
fn have_nginx() -> bool {
    if wsgi_course::nginx::nginx_binary().is_some() {
        return true;
    }
    eprintln!("SKIPPED: nginx is not installed (apt-get install nginx)");
    false
}

/// A running stage 5, stopped with TERM when dropped (even by a failing
/// test), so that it removes its run directory: the harness' own drop
/// would SIGKILL it, and leave the directory in /tmp.
struct Stage5(ServerProcess);

impl std::ops::Deref for Stage5 {
    type Target = ServerProcess;
    fn deref(&self) -> &ServerProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Stage5 {
    fn deref_mut(&mut self) -> &mut ServerProcess {
        &mut self.0
    }
}

impl Drop for Stage5 {
    fn drop(&mut self) {
        self.0.terminate(Duration::from_secs(20));
    }
}

/// Starts stage 5 with `args` and a free port. `cargo build -p stage5-nginx`
/// does not build the stage 4 binary it runs: the harness builds it first.
fn start(args: &[&str]) -> Stage5 {
    workspace_bin("stage4-uwsgi-socket");
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    Stage5(ServerProcess::start(BIN, &all).expect("stage 5 starts"))
}

/// Runs stage 5 to its end (for the start-up errors); its status and stderr.
fn run_to_end(args: &[&str]) -> (Option<i32>, String) {
    workspace_bin("stage4-uwsgi-socket");
    let out = Command::new(workspace_bin(BIN))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("stage 5 runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------
// The process table (Linux /proc)

/// A process's command line, words joined with spaces.
fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            String::from_utf8_lossy(&raw)
                .split('\0')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The supervisor's child whose command line contains `what`.
fn child_running(server: &ServerProcess, what: &str) -> Option<u32> {
    children(server.pid())
        .into_iter()
        .find(|p| cmdline(*p).contains(what))
}

fn nginx_master(server: &ServerProcess) -> Option<u32> {
    child_running(server, "nginx: master process")
}

fn stage4_master(server: &ServerProcess) -> Option<u32> {
    child_running(server, "stage4-uwsgi-socket")
}

/// The run directory the banner names.
fn run_dir(server: &ServerProcess) -> PathBuf {
    let line = server
        .wait_for_stderr("Run directory: ", Duration::from_secs(5))
        .expect("the banner names the run directory");
    PathBuf::from(line.split("Run directory: ").nth(1).unwrap().trim())
}

fn kill(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

// ---------------------------------------------------------------------------

#[test]
fn no_arguments_serve_the_shipped_site_and_the_hello_app() {
    if !have_nginx() {
        return;
    }
    // From a directory that has nothing of the repository in it: the site
    // is built into the binary.
    workspace_bin("stage4-uwsgi-socket");
    let elsewhere = std::env::temp_dir();
    let mut server =
        ServerProcess::start_with(BIN, &["--listen", "127.0.0.1:0"], &[], Some(&elsewhere))
            .expect("stage 5 starts");
    let addr = server.addr();

    let page = client::get(addr, "/static/index.html").unwrap();
    assert_eq!(page.status, 200);
    assert!(page.header("server").unwrap().starts_with("nginx"));
    assert_eq!(page.header("content-type"), Some("text/html"));
    let shipped = std::fs::read(repo_root().join("stage5-nginx/static/index.html")).unwrap();
    assert!(
        page.body == shipped,
        "/static/index.html is not the shipped page"
    );
    assert_eq!(client::get(addr, "/static/").unwrap().body, shipped);
    assert_eq!(
        client::get(addr, "/static/style.css")
            .unwrap()
            .header("content-type"),
        Some("text/css")
    );
    assert_eq!(
        client::get(addr, "/static/logo.svg")
            .unwrap()
            .header("content-type"),
        Some("image/svg+xml")
    );
    assert_eq!(client::get(addr, "/static/nope.txt").unwrap().status, 404);

    let hello = client::get(addr, "/").unwrap();
    assert_eq!(hello.status, 200);
    assert_eq!(hello.body, b"Hello, World!\n");
    assert!(hello.header("server").unwrap().starts_with("nginx"));

    // The access log says who answered each.
    wait_until("the access log shows both", Duration::from_secs(5), || {
        let log = server.stdout_text();
        log.contains("\"GET /static/index.html HTTP/1.1\" 200") && log.contains("upstream=unix:")
    });
    let log = server.stdout_text();
    let static_line = log
        .lines()
        .find(|l| l.contains("GET /static/index.html"))
        .unwrap();
    assert!(static_line.contains("upstream=-"), "{static_line}");

    // The banner, in the other stages' style.
    let err = server.stderr_text();
    assert!(err.contains("Starting stage5-nginx"), "{err}");
    assert!(err.contains("nginx: "), "{err}");
    assert!(err.contains("Upstream: unix:"), "{err}");
    assert!(
        err.contains("with Python 3."),
        "stage 4 names its Python: {err}"
    );
    assert!(
        err.contains(&format!("Listening at: http://{addr} ({})", server.pid())),
        "{err}"
    );

    let dir = run_dir(&server);
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    // Private; started by root, nginx's workers' group may go through it.
    let expected = if nix::unistd::geteuid().is_root() {
        0o710
    } else {
        0o700
    };
    assert_eq!(mode, expected, "the run directory must be private");
    assert!(dir.join("app.sock").exists());

    let status = server
        .terminate(Duration::from_secs(20))
        .expect("stops on TERM");
    assert_eq!(status.code(), Some(0));
    assert!(
        !dir.exists(),
        "the run directory {} outlived the server",
        dir.display()
    );
}

#[test]
fn an_ordinary_user_runs_it_too() {
    if !have_nginx() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Not root: every other test here already runs unprivileged.
        return;
    }
    // Root (CI): run stage 5 as `nobody`, as on a student's laptop.
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let stage4 = workspace_bin("stage4-uwsgi-socket");
    let bin = workspace_bin(BIN);
    let runs = |program: &PathBuf| {
        Command::new(program)
            .arg("--version")
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if !runs(&bin) || !runs(&stage4) {
        eprintln!(
            "SKIPPED: user nobody may not run the binaries in {}",
            bin.display()
        );
        return;
    }
    let tmp = std::env::temp_dir();
    let mut cmd = Command::new(&bin);
    cmd.args(["--listen", "127.0.0.1:0"])
        .uid(NOBODY)
        .gid(NOBODY)
        .current_dir(&tmp)
        .env("HOME", &tmp);
    let mut server =
        Stage5(ServerProcess::start_command(BIN, cmd).expect("stage 5 starts as nobody"));
    let addr = server.addr();
    assert_eq!(client::get(addr, "/").unwrap().body, b"Hello, World!\n");
    assert_eq!(client::get(addr, "/static/").unwrap().status, 200);
    let conf = std::fs::read_to_string(run_dir(&server).join("nginx.conf")).unwrap();
    assert!(
        !conf.contains("\nuser "),
        "no user line without root:\n{conf}"
    );
    for pid in descendants(server.pid()) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap_or_default();
        assert!(
            uid.split_whitespace().nth(1) == Some("65534") || !alive(pid),
            "{} runs as {uid}",
            cmdline(pid)
        );
    }
    let status = server
        .terminate(Duration::from_secs(20))
        .expect("stops on TERM");
    assert_eq!(status.code(), Some(0), "{}", server.stderr_text());
}

#[test]
fn print_nginx_config_shows_what_nginx_gets() {
    let out = Command::new(workspace_bin(BIN))
        .args([
            "--print-nginx-config",
            "--harakiri",
            "5",
            "--run-dir",
            "/srv/run",
        ])
        .args([
            "--limit-request-body",
            "2097152",
            "--listen",
            "127.0.0.1:9999",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let conf = String::from_utf8(out.stdout).unwrap();
    for line in [
        "worker_processes auto;",
        "pid /srv/run/nginx.pid;",
        "error_log stderr notice;",
        "client_body_temp_path /srv/run/client_body_temp;",
        "uwsgi_temp_path /srv/run/uwsgi_temp;",
        "client_max_body_size 2097152;",
        "server unix:/srv/run/app.sock;",
        "listen 127.0.0.1:9999;",
        "alias /srv/run/static/;",
        "include /srv/run/uwsgi_params;",
        "uwsgi_pass app;",
        // Longer than --harakiri 5.
        "uwsgi_read_timeout 15s;",
        "uwsgi_param  HTTP_HOST",
    ] {
        assert!(conf.contains(line), "missing {line:?} in:\n{conf}");
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    // Started by root, nginx's workers run as an unprivileged user.
    assert_eq!(
        conf.contains("\nuser www-data ") || conf.contains("\nuser nobody "),
        root,
        "{conf}"
    );
    assert!(!conf.contains("\nuser root "), "{conf}");
    assert!(
        !std::path::Path::new("/srv/run").exists(),
        "printing must create nothing"
    );
}

#[test]
fn the_app_sees_nginx_s_variables() {
    if !have_nginx() {
        return;
    }
    let server = start(&["apps.lab:app"]);
    let r = client::request(
        server.addr(),
        b"GET /environ?x=1 HTTP/1.1\r\nHost: Example.test:8080\r\n\r\n",
    )
    .unwrap();
    let e: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    // $host is lower-cased; the client's port is kept.
    assert_eq!(e["HTTP_HOST"], "example.test:8080");
    assert_eq!(e["SERVER_NAME"], "localhost");
    assert_eq!(e["SERVER_PORT"], server.addr().port().to_string());
    assert_eq!(e["QUERY_STRING"], "x=1");
    assert_eq!(e["wsgi.multiprocess"], true);
}

#[test]
fn a_killed_nginx_is_started_again() {
    if !have_nginx() {
        return;
    }
    let server = start(&[]);
    let addr = server.addr();
    let old = nginx_master(&server).expect("nginx runs");
    let old_workers = children(old);
    assert!(!old_workers.is_empty());
    kill(old, nix::sys::signal::Signal::SIGKILL);
    let mut new = 0;
    wait_until("a new nginx runs", Duration::from_secs(10), || {
        new = nginx_master(&server).unwrap_or(old);
        new != old
    });
    wait_until("the new nginx answers", Duration::from_secs(10), || {
        client::get(addr, "/").is_ok_and(|r| r.status == 200)
    });
    assert_eq!(client::get(addr, "/static/").unwrap().status, 200);
    // The old workers outlived their master, holding the port: the
    // supervisor made them finish, and reaped them.
    wait_until("the old workers are gone", Duration::from_secs(10), || {
        old_workers.iter().all(|p| !alive(*p))
    });
    assert!(server.stderr_text().contains(&format!(
        "nginx (pid:{old}) exited (killed by SIGKILL): starting it again"
    )));
}

#[test]
fn a_killed_stage4_master_is_started_again() {
    if !have_nginx() {
        return;
    }
    let server = start(&["apps.lab:app"]);
    let addr = server.addr();
    let old = stage4_master(&server).expect("stage 4 runs");
    let old_workers = children(old);
    assert_eq!(old_workers.len(), 2);
    kill(old, nix::sys::signal::Signal::SIGKILL);
    let mut new = 0;
    // The old workers are adopted by the supervisor (a subreaper) while
    // they finish: the new master is the stage 4 process that is neither.
    wait_until("a new stage 4 master runs", Duration::from_secs(10), || {
        new = children(server.pid())
            .into_iter()
            .find(|p| {
                *p != old && !old_workers.contains(p) && cmdline(*p).contains("stage4-uwsgi-socket")
            })
            .unwrap_or(0);
        new != 0
    });
    wait_until("the app answers again", Duration::from_secs(15), || {
        client::get(addr, "/").is_ok_and(|r| r.status == 200)
    });
    let pid: u32 = client::get(addr, "/pid")
        .unwrap()
        .text()
        .trim()
        .parse()
        .unwrap();
    wait_until("2 new workers", Duration::from_secs(10), || {
        children(new).len() == 2
    });
    assert!(children(new).contains(&pid), "a new worker answers");
    wait_until("the old workers are gone", Duration::from_secs(10), || {
        old_workers.iter().all(|p| !alive(*p))
    });
}

#[test]
fn term_finishes_the_request_in_flight_and_leaves_nothing_behind() {
    if !have_nginx() {
        return;
    }
    let mut server = start(&["apps.lab:app"]);
    let addr = server.addr();
    let dir = run_dir(&server);
    let socket = dir.join("app.sock");
    assert!(socket.exists());
    let processes = descendants(server.pid());
    let stage4 = stage4_master(&server).expect("stage 4 runs");
    // nginx master + 2 workers on a 2-core machine; stage 4 master + 2 workers.
    assert!(processes.len() >= 5, "{processes:?}");

    let inflight = std::thread::spawn(move || client::get(addr, "/io?ms=2000"));
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    server.signal(libc::SIGTERM);
    let r = inflight
        .join()
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"io done\n");
    let status = server
        .wait_timeout(Duration::from_secs(20))
        .expect("stage 5 stops");
    assert_eq!(status.code(), Some(0), "{}", server.stderr_text());
    assert!(
        asked.elapsed() >= Duration::from_millis(1000),
        "it waited for the request"
    );
    let left: Vec<(u32, String)> = processes
        .iter()
        .filter(|p| alive(**p))
        .map(|p| (*p, cmdline(*p)))
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    assert!(!socket.exists(), "the socket file was left behind");
    assert!(!dir.exists(), "the run directory was left behind");
    assert!(TcpStream::connect(addr).is_err(), "nobody listens any more");
    let err = server.stderr_text();
    let nginx_done = err
        .find("signal 3 (SIGQUIT) received")
        .expect("nginx got QUIT");
    let master_term = err
        .find(&format!("[{stage4}] [INFO] Handling signal: term"))
        .expect("stage 4 got TERM");
    assert!(
        nginx_done < master_term,
        "nginx is stopped before stage 4:\n{err}"
    );
}

#[test]
fn hup_reloads_nginx_and_stage4() {
    if !have_nginx() {
        return;
    }
    let server = start(&["apps.lab:app"]);
    let addr = server.addr();
    let nginx = nginx_master(&server).unwrap();
    let stage4 = stage4_master(&server).unwrap();
    let (old_nginx, old_stage4) = (children(nginx), children(stage4));
    server.signal(libc::SIGHUP);
    wait_until("new workers for both", Duration::from_secs(15), || {
        let (n, s) = (children(nginx), children(stage4));
        !n.is_empty()
            && n.iter().all(|p| !old_nginx.contains(p))
            && s.len() == 2
            && s.iter().all(|p| !old_stage4.contains(p))
    });
    // The masters stay: a reload, not a restart.
    assert_eq!(nginx_master(&server), Some(nginx));
    assert_eq!(stage4_master(&server), Some(stage4));
    assert_eq!(client::get(addr, "/").unwrap().status, 200);
    assert!(server.stderr_text().contains("reconfiguring"));
}

#[test]
fn harakiri_shorter_than_a_request_is_a_502() {
    if !have_nginx() {
        return;
    }
    let server = start(&["apps.lab:app", "--harakiri", "1"]);
    let r = client::get(server.addr(), "/io?ms=4000").unwrap();
    assert_eq!(r.status, 502);
    assert!(
        server
            .wait_for_stderr("WORKER TIMEOUT", Duration::from_secs(5))
            .is_some()
    );
    assert_eq!(client::get(server.addr(), "/").unwrap().status, 200);
}

#[test]
fn upstream_balances_over_stage4_servers_it_does_not_start() {
    if !have_nginx() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("stage5-test-upstream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sockets: Vec<String> = (1..=2)
        .map(|i| dir.join(format!("{i}.sock")).display().to_string())
        .collect();
    let backends: Vec<ServerProcess> = sockets
        .iter()
        .map(|s| {
            ServerProcess::start(
                "stage4-uwsgi-socket",
                &[
                    "--socket",
                    s,
                    "--module",
                    "apps.lab:app",
                    "--processes",
                    "1",
                    // Started by root, stage 5's nginx workers are
                    // www-data: sockets it did not make must let them in.
                    "--chmod-socket",
                    "666",
                ],
            )
            .unwrap()
        })
        .collect();
    let list = format!("unix:{},unix:{}", sockets[0], sockets[1]);
    let server = start(&["--upstream", &list]);
    assert!(stage4_master(&server).is_none(), "no stage 4 of its own");
    let mut masters = std::collections::HashSet::new();
    for _ in 0..10 {
        let pid: u32 = client::get(server.addr(), "/pid")
            .unwrap()
            .text()
            .trim()
            .parse()
            .unwrap();
        let master = backends.iter().find(|b| children(b.pid()).contains(&pid));
        masters.insert(master.expect("a backend's worker answered").pid());
    }
    assert_eq!(masters.len(), 2, "nginx spreads requests over both");
    assert!(server.stderr_text().contains("(not started here)"));
    drop(server);
    drop(backends);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn start_up_errors_are_one_sentence_and_leave_nothing() {
    if !have_nginx() {
        return;
    }
    let (code, err) = run_to_end(&["--nginx", "/nonexistent/nginx"]);
    assert_eq!(code, Some(1));
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{err}");
    assert!(
        last.contains("apt-get install nginx") && last.contains("--nginx PATH"),
        "{err}"
    );

    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (code, err) = run_to_end(&["--listen", &addr]);
    assert_eq!(code, Some(1));
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("already in use") && last.contains("--listen"),
        "{err}"
    );

    let (code, err) = run_to_end(&["apps.no_such_module:app", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(1));
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: stage 4 exited before creating its socket"),
        "{err}"
    );
    assert!(
        err.contains("no_such_module"),
        "stage 4's own error is shown:\n{err}"
    );

    // An installed stage5-nginx without stage 4 beside it.
    let lonely = std::env::temp_dir().join(format!("stage5-test-lonely-{}", std::process::id()));
    std::fs::create_dir_all(&lonely).unwrap();
    std::fs::copy(workspace_bin(BIN), lonely.join(BIN)).unwrap();
    let out = Command::new(lonely.join(BIN))
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("CARGO_PKG_NAME")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&lonely);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("cargo build -p stage4-uwsgi-socket"), "{err}");
}

// ---------------------------------------------------------------------------
// The slow-client lab

/// How long one normal request takes while 50 clients send their requests
/// one byte a second for `drip`; `None` if it did not complete within 3 s.
fn normal_request_among_slow_clients(addr: SocketAddr, drip: Duration) -> Option<Duration> {
    const SLOW: usize = 50;
    let request = b"GET / HTTP/1.1\r\nHost: slow.test\r\nUser-Agent: slow-client\r\n\r\n";
    let dripper = std::thread::spawn(move || {
        let mut clients: Vec<TcpStream> = (0..SLOW)
            .filter_map(|_| TcpStream::connect(addr).ok())
            .collect();
        let start = Instant::now();
        let mut sent = 0;
        while start.elapsed() < drip {
            for c in &mut clients {
                let _ = c.write_all(&request[sent..=sent.min(request.len() - 1)]);
            }
            sent += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
        clients.len()
        // Dropped here: every slow client hangs up, its request unfinished.
    });
    // Let the slow clients connect and start dripping.
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let latency = (|| {
        let mut c = TcpStream::connect(addr).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut answer = Vec::new();
        c.read_to_end(&mut answer).ok()?;
        answer
            .starts_with(b"HTTP/1.1 200")
            .then(|| started.elapsed())
    })();
    assert_eq!(dripper.join().unwrap(), SLOW, "every slow client connected");
    latency
}

#[test]
fn slow_clients_block_stage3_sync_workers_but_not_nginx() {
    if !have_nginx() {
        return;
    }
    let drip = Duration::from_secs(5);
    let stage3 = ServerProcess::start(
        "stage3-prefork",
        &["apps.lab:app", "-b", "127.0.0.1:0", "-w", "2", "-k", "sync"],
    )
    .unwrap();
    let behind_stage3 = normal_request_among_slow_clients(stage3.addr(), drip);
    drop(stage3);

    let stage5 = start(&["apps.lab:app", "--workers", "2", "--access-log", "off"]);
    let behind_nginx = normal_request_among_slow_clients(stage5.addr(), drip);

    eprintln!(
        "slow-client lab, 50 clients at one byte a second: stage 3 (2 sync workers): {}; stage 5 (nginx + 2 workers): {}",
        behind_stage3.map_or("no answer within 3 s".to_string(), |d| format!("{d:?}")),
        behind_nginx.map_or("no answer within 3 s".to_string(), |d| format!("{d:?}")),
    );
    assert!(
        behind_stage3.is_none(),
        "stage 3's two workers are busy with slow clients: the request must wait"
    );
    let behind_nginx = behind_nginx.expect("nginx answers at once");
    assert!(behind_nginx < Duration::from_secs(1), "{behind_nginx:?}");
}

#[test]
fn the_access_log_survives_output_redirected_to_a_file() {
    // `stage5-nginx > log 2>&1`: the shell opens the file without
    // O_APPEND, nginx appends its access log to the same file, and the
    // supervisor's own lines must not overwrite nginx's.
    if !have_nginx() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("stage5-redirect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("out.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let port = wsgi_course::nginx::free_port();
    let mut child = Command::new(workspace_bin(BIN))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(repo_root())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text().contains("Listening at:") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..5 {
        assert_eq!(client::get(addr, "/").unwrap().status, 200);
    }
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let text = text();
    let _ = std::fs::remove_dir_all(&dir);
    let requests = text
        .lines()
        .filter(|l| l.contains("\"GET / HTTP/1.1\" 200"))
        .count();
    assert_eq!(
        requests, 5,
        "nginx's access log lines were overwritten:\n{text}"
    );
    assert!(text.contains("Shutting down: stage5-nginx"), "{text}");
}

#[test]
fn a_killed_supervisors_run_directory_is_removed_by_the_next_start() {
    if !have_nginx() {
        return;
    }
    // A supervisor killed with -9 leaves its run directory: the next start
    // removes it. The pid of a process that has exited stands for the dead
    // supervisor. The supervisor gets a temporary directory of its own
    // (TMPDIR): in /tmp, the other tests' supervisors, starting at the same
    // time, look for stale directories too, and one of them could be
    // halfway through removing this one when it is checked (a CI run saw
    // it still there).
    let tmp = std::env::temp_dir().join(format!("stage5-stale-test.{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    // nginx's unprivileged workers must reach the run directory inside.
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let stale = tmp.join(format!("stage5-nginx.{dead_pid}"));
    std::fs::create_dir_all(stale.join("static")).unwrap();
    std::fs::write(stale.join("nginx.conf"), "# left by a killed supervisor\n").unwrap();
    workspace_bin("stage4-uwsgi-socket");
    let server = Stage5(
        ServerProcess::start_with(
            BIN,
            &["--listen", "127.0.0.1:0"],
            &[("TMPDIR", tmp.to_str().unwrap())],
            None,
        )
        .expect("stage 5 starts"),
    );
    let still_there = stale.exists();
    let stderr = server.stderr_text();
    drop(server);
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(!still_there, "{} is still there", stale.display());
    assert!(
        stderr.contains("Removed the run directory of a supervisor that died"),
        "{stderr}"
    );
}

#[test]
fn started_by_root_nginx_workers_run_unprivileged() {
    if !have_nginx() {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: only a stage 5 started by root changes its nginx workers' user");
        return;
    }
    let server = start(&[]);
    let addr = server.addr();
    // The app (through the socket) and the static files (through the run
    // directory) both reach nginx's unprivileged workers.
    assert_eq!(client::get(addr, "/").unwrap().status, 200);
    assert_eq!(client::get(addr, "/static/index.html").unwrap().status, 200);
    let uid_of = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
            })
            .and_then(|u| u.parse::<u32>().ok())
    };
    let nginx_workers: Vec<u32> = descendants(server.pid())
        .into_iter()
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.starts_with("nginx: worker process"))
        })
        .collect();
    assert!(!nginx_workers.is_empty(), "nginx's workers are found");
    for pid in nginx_workers {
        assert_ne!(uid_of(pid), Some(0), "nginx worker {pid} runs as root");
    }
    let dir = run_dir(&server);
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o710,
        "the run directory: its group may only go through"
    );
    let socket_mode = std::fs::metadata(dir.join("app.sock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(socket_mode, 0o660);
}

#[test]
fn slow_readers_of_big_responses_do_not_fill_the_disk() {
    // Clients that ask for 20 MB and read nothing: nginx takes the app's
    // answer and keeps it for them on disk, but at most
    // --max-temp-file-size (4 MiB by default) per response, not nginx's
    // default 1 GiB.
    if !have_nginx() {
        return;
    }
    let server = start(&["apps.lab:app"]);
    let dir = run_dir(&server);
    let clients: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = TcpStream::connect(server.addr()).unwrap();
            c.write_all(b"GET /bytes?n=20000000 HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            c
        })
        .collect();
    // nginx unlinks a temp file as soon as it creates it: what it holds is
    // seen through its workers' open files.
    let temp = dir.join("uwsgi_temp");
    let size = || -> u64 {
        descendants(server.pid())
            .into_iter()
            .flat_map(|pid| {
                std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .into_iter()
                    .flatten()
            })
            .flatten()
            .filter(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|target| target.starts_with(&temp))
            })
            .filter_map(|fd| std::fs::metadata(fd.path()).ok())
            .map(|m| m.len())
            .sum()
    };
    // Long enough for nginx to have taken all it will take.
    let mut most = 0;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        most = most.max(size());
    }
    drop(clients);
    println!("nginx kept {most} bytes on disk for 4 slow clients of 20 MB each");
    assert!(most > 0, "nginx buffered part of the responses on disk");
    assert!(
        most <= 4 * (4 << 20) + (1 << 20),
        "{most} bytes on disk: more than 4 MiB per response"
    );
}

#[test]
fn more_waiting_requests_than_a_default_listen_queue_get_no_502() {
    // 120 requests at once on 2 workers: most wait in stage 4's socket
    // queue. uWSGI's default queue (100) would overflow, and nginx would
    // answer 502 to the rest ("connect() failed (11: Resource temporarily
    // unavailable)"); stage 5 sizes stage 4's queue for what nginx sends.
    if !have_nginx() {
        return;
    }
    let server = start(&["apps.lab:app"]);
    let addr = server.addr();
    let requests: Vec<_> = (0..120)
        .map(|_| std::thread::spawn(move || client::get(addr, "/io?ms=100").map(|r| r.status)))
        .collect();
    let statuses: Vec<u16> = requests
        .into_iter()
        .map(|r| r.join().unwrap().unwrap_or(0))
        .collect();
    let bad: Vec<&u16> = statuses.iter().filter(|&&s| s != 200).collect();
    assert!(bad.is_empty(), "{} of 120 were not 200: {bad:?}", bad.len());
}

#[test]
fn an_ini_file_sets_stage4_and_the_command_line_wins() {
    if !have_nginx() {
        return;
    }
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ini-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ini = dir.join("site.ini");
    std::fs::write(
        &ini,
        "[uwsgi]\nmodule = apps.lab:app\nmaster = true\nprocesses = 3\nthreads = 2\n\
         socket = /tmp/nowhere-%n.sock\nchmod-socket = 666\nmax-requests = 1000\n",
    )
    .unwrap();
    // uWSGI's `uwsgi site.ini`: the bare file; --workers on the command line
    // wins over the file's processes.
    let server = start(&[ini.to_str().unwrap(), "--workers", "2"]);
    let r = client::get(server.addr(), "/environ").unwrap();
    assert_eq!(r.status, 200, "the ini's module (the lab app) is served");
    let stage4 = cmdline(stage4_master(&server).expect("stage 4 runs"));
    for wanted in [
        "--processes 2",
        "--threads 2",
        "--module apps.lab:app",
        "--max-requests 1000",
    ] {
        assert!(
            stage4.contains(wanted),
            "stage 4 runs without {wanted:?}: {stage4}"
        );
    }
    assert!(
        !stage4.contains("nowhere"),
        "the ini's socket reached stage 4: {stage4}"
    );
    assert!(
        server
            .wait_for_stderr("`socket` is not used", Duration::from_secs(5))
            .is_some()
    );
    drop(server);

    // A value that is not a number: one sentence naming the file and key.
    std::fs::write(&ini, "[uwsgi]\nthreads = many\n").unwrap();
    let (status, stderr) = run_to_end(&["--ini", ini.to_str().unwrap()]);
    assert_ne!(status, Some(0));
    assert!(
        stderr.contains("`threads = many`: the number of threads must be a number"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
