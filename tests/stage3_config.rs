//! Stage 3's configuration file, as gunicorn reads it: settings, the
//! command line winning over them, server hooks called in order with their
//! objects (seen through a file the hooks write), `--check-config` and
//! `--print-config`. Every test starts the real binary and sends real
//! signals.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use assert_cmd::assert::OutputAssertExt;
use wsgi_course::client;
use wsgi_course::procs::children;
use wsgi_course::server::{ServerProcess, repo_root, workspace_bin};
use wsgi_course::wait_until;

const BIN: &str = "stage3-prefork";

/// A fresh directory for one test, with `gunicorn.conf.py` written in it.
fn dir_with_config(name: &str, config: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stage3-config-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("gunicorn.conf.py"), config).unwrap();
    dir
}

/// Hooks that each append one line to the file named by $HOOKS_LOG, with
/// the attributes gunicorn documents.
const HOOKS: &str = r#"
import os

def note(line):
    with open(os.environ["HOOKS_LOG"], "a") as f:
        f.write(line + "\n")

def on_starting(server):
    note(f"on_starting pid={server.pid} num_workers={server.num_workers}")
    server.log.info("on_starting says hello to %s", "the log")

def when_ready(server):
    note(f"when_ready pid={server.pid}")

def pre_fork(server, worker):
    note(f"pre_fork age={worker.age}")

def post_fork(server, worker):
    note(f"post_fork age={worker.age} pid={worker.pid} ppid={worker.ppid} getpid={os.getpid()}")

def post_worker_init(worker):
    note(f"post_worker_init pid={worker.pid}")

def pre_request(worker, req):
    req.seen_by_pre_request = True
    note(f"pre_request pid={worker.pid} {req.method} {req.path} query={req.query}")

def post_request(worker, req, environ, resp):
    note(f"post_request pid={worker.pid} {req.method} {req.path} {resp.status_code} "
         f"pre={req.seen_by_pre_request} path_info={environ['PATH_INFO']}")

def worker_int(worker):
    note(f"worker_int pid={worker.pid}")

def worker_abort(worker):
    note(f"worker_abort pid={worker.pid}")

def worker_exit(server, worker):
    note(f"worker_exit pid={worker.pid}")

def child_exit(server, worker):
    note(f"child_exit pid={worker.pid}")

def nworkers_changed(server, new_value, old_value):
    note(f"nworkers_changed {new_value} {old_value}")

def on_exit(server):
    note(f"on_exit pid={server.pid}")
"#;

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn position(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.starts_with(needle))
        .unwrap_or_else(|| panic!("no line starts with {needle:?} in {lines:#?}"))
}

fn wait_for_line(path: &Path, needle: &str) {
    wait_until(needle, Duration::from_secs(15), || {
        lines(path).iter().any(|l| l.starts_with(needle))
    });
}

/// The hooks' file for a test, and the environment that names it.
fn hooks_log(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("hooks.log");
    (path.clone(), path.display().to_string())
}

#[test]
fn gunicorn_conf_py_is_read_and_the_command_line_wins() {
    let root = repo_root();
    let config = format!(
        "import multiprocessing\n\
         bind = ['127.0.0.1:0']\n\
         workers = 3\n\
         wsgi_app = 'apps.lab:app'\n\
         chdir = {root:?}\n\
         preload_app = False\n\
         a_helper_variable = multiprocessing.cpu_count()\n",
        root = root.display().to_string()
    );
    let dir = dir_with_config("default-file", &config);
    // No -c: ./gunicorn.conf.py is read; its app, directory, bind, workers.
    let server = ServerProcess::start_with(BIN, &[], &[], Some(&dir)).unwrap();
    let serving = server
        .wait_for_stderr("Serving ", Duration::from_secs(10))
        .unwrap();
    assert!(
        serving.contains("Serving apps.lab:app") && serving.contains(": 3 workers"),
        "{serving}"
    );
    wait_until("3 workers run", Duration::from_secs(10), || {
        children(server.pid()).len() == 3
    });
    assert_eq!(client::get(server.addr(), "/pid").unwrap().status, 200);
    assert!(
        !server.stderr_text().contains("a_helper_variable"),
        "names that are not settings are ignored, as gunicorn does"
    );
    drop(server);

    // A flag beats the file.
    let server = ServerProcess::start_with(BIN, &["-w", "2"], &[], Some(&dir)).unwrap();
    assert!(
        server
            .wait_for_stderr(": 2 workers", Duration::from_secs(10))
            .is_some()
    );
    wait_until("2 workers run", Duration::from_secs(10), || {
        children(server.pid()).len() == 2
    });
}

#[test]
fn hooks_are_called_in_order_with_their_objects() {
    let dir = dir_with_config(
        "hooks",
        &format!("bind = '127.0.0.1:0'\nworkers = 2\n{HOOKS}"),
    );
    let (log, log_env) = hooks_log(&dir);
    let config = dir.join("gunicorn.conf.py").display().to_string();
    let server = ServerProcess::start_with(
        BIN,
        &[
            "-c",
            &config,
            "apps.lab:app",
            "--chdir",
            &repo_root().display().to_string(),
        ],
        &[("HOOKS_LOG", &log_env)],
        None,
    )
    .unwrap();
    let master = server.pid();
    assert!(
        server
            .wait_for_stderr("on_starting says hello to the log", Duration::from_secs(5))
            .is_some(),
        "server.log writes to the server's log"
    );
    wait_for_line(&log, "post_worker_init");
    wait_until(
        "both workers ran post_worker_init",
        Duration::from_secs(10),
        || {
            lines(&log)
                .iter()
                .filter(|l| l.starts_with("post_worker_init"))
                .count()
                == 2
        },
    );

    // A request: pre_request and post_request, in the worker that served it,
    // with the same req object.
    let pid = client::get(server.addr(), "/pid?x=1").unwrap().text();
    let pid = pid.trim();
    wait_for_line(&log, "post_request");
    let seen = lines(&log);
    assert!(
        seen.contains(&format!("pre_request pid={pid} GET /pid query=x=1")),
        "{seen:#?}"
    );
    assert!(
        seen.contains(&format!(
            "post_request pid={pid} GET /pid 200 pre=True path_info=/pid"
        )),
        "{seen:#?}"
    );

    // kill -9 a worker: child_exit in the master, and a new worker (age 3).
    let victim = children(master)[0];
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    wait_for_line(&log, &format!("child_exit pid={victim}"));
    wait_for_line(&log, "post_worker_init");
    wait_for_line(&log, "post_fork age=3");

    // TTIN: nworkers_changed(server, 3, 2).
    server.signal(libc::SIGTTIN);
    wait_for_line(&log, "nworkers_changed 3 2");
    wait_until("3 workers run", Duration::from_secs(10), || {
        children(master).len() == 3
    });
    wait_until("the third worker is ready", Duration::from_secs(10), || {
        lines(&log)
            .iter()
            .filter(|l| l.starts_with("post_worker_init"))
            .count()
            == 4
    });
    let workers = children(master);

    // INT: the master's fast stop; each worker runs worker_int, then
    // worker_exit; the master child_exit for each, then on_exit, last.
    server.signal(libc::SIGINT);
    wait_for_line(&log, "on_exit");
    let seen = lines(&log);
    assert_eq!(seen[0], format!("on_starting pid={master} num_workers=2"));
    assert_eq!(seen[1], format!("when_ready pid={master}"));
    assert_eq!(seen.last().unwrap(), &format!("on_exit pid={master}"));
    for age in 1..=4 {
        let pre = position(&seen, &format!("pre_fork age={age}"));
        let post = position(&seen, &format!("post_fork age={age} "));
        assert!(pre < post, "pre_fork before post_fork: {seen:#?}");
    }
    for line in seen.iter().filter(|l| l.starts_with("post_fork")) {
        // post_fork runs in the new worker: its pid is its own, its ppid
        // the master's.
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap()
                .to_string()
        };
        assert_eq!(field("pid="), field("getpid="), "{line}");
        assert_eq!(field("ppid="), master.to_string(), "{line}");
        let pid = field("pid=");
        assert!(
            position(&seen, line) < position(&seen, &format!("post_worker_init pid={pid}")),
            "{seen:#?}"
        );
    }
    for pid in workers {
        let int = position(&seen, &format!("worker_int pid={pid}"));
        let exit = position(&seen, &format!("worker_exit pid={pid}"));
        let reaped = position(&seen, &format!("child_exit pid={pid}"));
        assert!(int < exit && exit < reaped, "{seen:#?}");
    }
}

#[test]
fn a_timeout_runs_worker_abort_and_term_ends_with_on_exit() {
    let dir = dir_with_config(
        "abort",
        &format!("bind = '127.0.0.1:0'\nworkers = 1\ntimeout = 1\n{HOOKS}"),
    );
    let (log, log_env) = hooks_log(&dir);
    let mut server = ServerProcess::start_with(
        BIN,
        &[
            "apps.lab:app",
            "--chdir",
            &repo_root().display().to_string(),
        ],
        &[("HOOKS_LOG", &log_env)],
        Some(&dir),
    )
    .unwrap();
    wait_for_line(&log, "post_worker_init");
    let hung = children(server.pid())[0];
    // A request that sleeps past --timeout: the master sends ABRT, the
    // worker runs worker_abort then worker_exit, the master child_exit.
    let addr = server.addr();
    let slow = std::thread::spawn(move || client::get(addr, "/io?ms=20000"));
    wait_for_line(&log, &format!("child_exit pid={hung}"));
    let seen = lines(&log);
    let abort = position(&seen, &format!("worker_abort pid={hung}"));
    let exit = position(&seen, &format!("worker_exit pid={hung}"));
    let reaped = position(&seen, &format!("child_exit pid={hung}"));
    assert!(abort < exit && exit < reaped, "{seen:#?}");
    assert!(
        server
            .wait_for_stderr("WORKER TIMEOUT", Duration::from_secs(1))
            .is_some()
    );
    let _ = slow.join();

    // TERM: a graceful stop, worker_exit in the worker, on_exit last.
    wait_for_line(&log, "post_fork age=2");
    wait_until("the new worker is ready", Duration::from_secs(10), || {
        lines(&log)
            .iter()
            .filter(|l| l.starts_with("post_worker_init"))
            .count()
            == 2
    });
    let worker = children(server.pid())[0];
    let status = server.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
    let seen = lines(&log);
    assert!(
        position(&seen, &format!("worker_exit pid={worker}"))
            < position(&seen, &format!("child_exit pid={worker}")),
        "{seen:#?}"
    );
    assert!(
        !seen.contains(&format!("worker_int pid={worker}")),
        "TERM is graceful: {seen:#?}"
    );
    assert!(seen.last().unwrap().starts_with("on_exit"), "{seen:#?}");
}

#[test]
fn hooks_that_raise_do_what_they_do_in_gunicorn() {
    let dir = dir_with_config(
        "raise",
        "bind = '127.0.0.1:0'\nworkers = 1\n\
         def pre_request(worker, req):\n    if req.path == '/boom':\n        raise ValueError('pre_request says no')\n\
         def post_request(worker, req, environ, resp):\n    raise KeyError('post_request fails')\n\
         def child_exit(server, worker):\n    raise RuntimeError('child_exit fails')\n",
    );
    let mut server = ServerProcess::start_with(BIN, &[], &[], Some(&dir)).unwrap();
    // pre_request raising: an app error, a 500, the traceback in the log.
    assert_eq!(client::get(server.addr(), "/boom").unwrap().status, 500);
    assert!(
        server
            .wait_for_stderr("ValueError: pre_request says no", Duration::from_secs(5))
            .is_some()
    );
    // post_request raising: logged, the response was sent already.
    assert_eq!(client::get(server.addr(), "/").unwrap().status, 200);
    assert!(
        server
            .wait_for_stderr("Exception in post_request hook", Duration::from_secs(5))
            .is_some()
    );
    // child_exit raising: a master hook; gunicorn's arbiter stops, with
    // "Unhandled exception in main loop" and sys.exit(-1): status 255.
    let worker = children(server.pid())[0];
    unsafe { libc::kill(worker as i32, libc::SIGKILL) };
    let status = server.wait_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(255));
    for line in [
        "Exception in child_exit hook",
        "RuntimeError: child_exit fails",
        "Reason: Unhandled exception in main loop: a server hook raised (traceback above).",
    ] {
        assert!(
            server
                .wait_for_stderr(line, Duration::from_secs(5))
                .is_some(),
            "{line}: {}",
            server.stderr_text()
        );
    }
}

fn check(dir: &Path, config: &str, args: &[&str]) -> (i32, String, String) {
    std::fs::write(dir.join("checked.py"), config).unwrap();
    let output = Command::new(workspace_bin(BIN))
        .current_dir(dir)
        .args(["--check-config", "-c", "checked.py"])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn check_config_says_what_is_wrong_and_exits_non_zero() {
    let dir = dir_with_config("check", "");
    let root = repo_root().display().to_string();
    let lab = ["apps.lab:app", "--chdir", root.as_str()];
    let good = format!("workers = 2\nbind = '127.0.0.1:9'\n{HOOKS}");
    let (code, stdout, stderr) = check(&dir, &good, &lab);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "");
    assert!(
        !stderr.contains("Listening"),
        "nothing is started: {stderr}"
    );

    for (config, args, says) in [
        ("workers = 2\nbind = [\n", &lab[..], "SyntaxError"),
        (
            "workers = 'three'\n",
            &lab[..],
            "workers = 'three': invalid value",
        ),
        (
            "daemon = True\n",
            &lab[..],
            "daemon is gunicorn's, not this course's",
        ),
        ("certfile = 'cert.pem'\n", &lab[..], "put nginx in front"),
        (
            "def pre_fork(server):\n    pass\n",
            &lab[..],
            "pre_fork takes 1 argument, but it is called with 2",
        ),
        (
            "workers = 2\n",
            &["no_such_module:app"][..],
            "cannot find the module",
        ),
    ] {
        let (code, _, stderr) = check(&dir, config, args);
        assert_eq!(code, 1, "{config}: {stderr}");
        assert!(stderr.contains(says), "{config}: {stderr}");
    }
    // Settings that ask for nothing are harmless.
    let (code, _, stderr) = check(&dir, "daemon = False\ncertfile = None\n", &lab);
    assert_eq!(code, 0, "{stderr}");
    // A gunicorn setting this stage lacks: a warning, not an error.
    let (code, _, stderr) = check(&dir, "backlog = 64\n", &lab);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("backlog is a gunicorn setting"), "{stderr}");
}

#[test]
fn print_config_shows_each_setting_as_resolved() {
    let dir = dir_with_config(
        "print",
        "workers = 3\ntimeout = 5\npreload_app = True\nbind = ['127.0.0.1:9001']\n\
         def when_ready(server):\n    pass\n",
    );
    let root = repo_root().display().to_string();
    // The file < GUNICORN_CMD_ARGS < the command line.
    let output = Command::new(workspace_bin(BIN))
        .current_dir(&dir)
        .env("GUNICORN_CMD_ARGS", "--timeout 7 -w 4 --max-requests 9")
        .args([
            "--print-config",
            "-w",
            "5",
            "apps.lab:app",
            "--chdir",
            &root,
        ])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&output.get_output().stdout).to_string();
    let value = |name: &str| printed(&stdout, name);
    assert_eq!(value("workers"), "5");
    assert_eq!(value("timeout"), "7");
    assert_eq!(value("max_requests"), "9");
    assert_eq!(value("preload_app"), "True");
    assert_eq!(value("bind"), "['127.0.0.1:9001']");
    assert_eq!(value("wsgi_app"), "apps.lab:app");
    assert_eq!(value("config"), "gunicorn.conf.py");
    assert!(value("when_ready").starts_with("<function when_ready"));
    assert_eq!(value("on_starting"), "None");
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by name, as gunicorn prints them");
}

#[test]
fn python_colon_names_a_module_to_import() {
    let dir = dir_with_config("module", "");
    std::fs::write(
        dir.join("deploy_settings.py"),
        "workers = 7\ntimeout = 11\n",
    )
    .unwrap();
    let output = Command::new(workspace_bin(BIN))
        .current_dir(&dir)
        .args(["-c", "python:deploy_settings", "--print-config"])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&output.get_output().stdout).to_string();
    assert_eq!(printed(&stdout, "workers"), "7");
    assert_eq!(printed(&stdout, "timeout"), "11");
    assert_eq!(printed(&stdout, "config"), "python:deploy_settings");
}

/// The value --print-config printed for `name`.
fn printed(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_once(" = "))
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("no {name} in {stdout}"))
}

#[test]
fn worker_abort_runs_even_when_the_worker_is_stuck_in_python() {
    // /cpu computes in a pure-Python loop: the worker's main thread holds
    // the GIL, and the hook's thread must still get it.
    let dir = dir_with_config(
        "abort-cpu",
        &format!("bind = '127.0.0.1:0'\nworkers = 1\ntimeout = 1\n{HOOKS}"),
    );
    let (log, log_env) = hooks_log(&dir);
    let server = ServerProcess::start_with(
        BIN,
        &[
            "apps.lab:app",
            "--chdir",
            &repo_root().display().to_string(),
        ],
        &[("HOOKS_LOG", &log_env)],
        Some(&dir),
    )
    .unwrap();
    wait_for_line(&log, "post_worker_init");
    let stuck = children(server.pid())[0];
    let addr = server.addr();
    let slow = std::thread::spawn(move || client::get(addr, "/cpu?ms=20000"));
    wait_for_line(&log, &format!("child_exit pid={stuck}"));
    let seen = lines(&log);
    assert!(
        position(&seen, &format!("worker_abort pid={stuck}"))
            < position(&seen, &format!("worker_exit pid={stuck}")),
        "{seen:#?}"
    );
    let _ = slow.join();
}

#[test]
fn a_worker_abort_hook_that_never_returns_is_cut_short_by_kill() {
    let dir = dir_with_config(
        "abort-forever",
        "import time\nbind = '127.0.0.1:0'\nworkers = 1\ntimeout = 1\n\
         def worker_abort(worker):\n    time.sleep(3600)\n",
    );
    let server = ServerProcess::start_with(
        BIN,
        &[
            "apps.lab:app",
            "--chdir",
            &repo_root().display().to_string(),
        ],
        &[],
        Some(&dir),
    )
    .unwrap();
    wait_until("a worker runs", Duration::from_secs(10), || {
        children(server.pid()).len() == 1
    });
    let stuck = children(server.pid())[0];
    let addr = server.addr();
    let slow = std::thread::spawn(move || client::get(addr, "/io?ms=20000"));
    assert!(
        server
            .wait_for_stderr(
                &format!("Worker (pid:{stuck}) still there 2 s after ABRT: killing it"),
                Duration::from_secs(15)
            )
            .is_some()
    );
    wait_until("the stuck worker is gone", Duration::from_secs(5), || {
        !children(server.pid()).contains(&stuck)
    });
    let _ = slow.join();
}

#[test]
fn hup_reads_the_file_again_as_gunicorn_does() {
    let root = repo_root().display().to_string();
    let config = |workers: usize, extra: &str| {
        format!(
            "bind = '127.0.0.1:0'\nworkers = {workers}\nwsgi_app = 'apps.lab:app'\nchdir = {root:?}\n\
             def on_reload(server):\n    server.log.info('on_reload sees %d workers', server.num_workers)\n{extra}"
        )
    };
    let dir = dir_with_config("hup", &config(1, ""));
    let server = ServerProcess::start_with(BIN, &[], &[], Some(&dir)).unwrap();
    wait_until("1 worker runs", Duration::from_secs(10), || {
        children(server.pid()).len() == 1
    });

    // More workers in the file, then HUP: the new generation has them.
    std::fs::write(dir.join("gunicorn.conf.py"), config(3, "timeout = 7\n")).unwrap();
    server.signal(libc::SIGHUP);
    let line = server
        .wait_for_stderr("configuration read again", Duration::from_secs(10))
        .expect("the master says it read the file again");
    assert!(line.contains("workers 1 -> 3"), "{line}");
    assert!(line.contains("timeout 30 s -> 7 s"), "{line}");
    assert!(
        server
            .wait_for_stderr("on_reload sees 3 workers", Duration::from_secs(10))
            .is_some(),
        "on_reload runs with the new settings"
    );
    wait_until("3 workers run", Duration::from_secs(15), || {
        children(server.pid()).len() == 3
    });
    assert_eq!(client::get(server.addr(), "/pid").unwrap().status, 200);

    // A file that no longer reads: the error is said, the server goes on
    // with the settings it had.
    std::fs::write(dir.join("gunicorn.conf.py"), "workers = (\n").unwrap();
    server.signal(libc::SIGHUP);
    assert!(
        server
            .wait_for_stderr(
                "the configuration was not read again",
                Duration::from_secs(10)
            )
            .is_some(),
        "{}",
        server.stderr_text()
    );
    wait_until("3 workers again", Duration::from_secs(15), || {
        children(server.pid()).len() == 3
    });
    assert_eq!(client::get(server.addr(), "/pid").unwrap().status, 200);
}

/// An app whose headers need the server's processing: a padded value,
/// hop-by-hop headers, a repeated name, its own Server and Date; a list body without
/// Content-Length (the server adds one), a streamed one (chunked), an app
/// that raises (the server answers 500).
const HEADERS_APP: &str = r#"
def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/error":
        raise RuntimeError("no response from the app")
    if path == "/list":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"a", b"b"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (chunk for chunk in [b"a", b"b"])
    body = b"headers\n"
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("X-Padded", "  spaced value \t"),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Server", "headers-app/1.0"),
        ("Date", "Tue, 01 Jan 2030 00:00:00 GMT"),
        ("Content-Length", str(len(body))),
    ])
    return [body]
"#;

#[test]
fn post_request_sees_the_response_headers_as_gunicorn_gives_them() {
    let dir = dir_with_config(
        "resp-headers",
        "import os\nbind = '127.0.0.1:0'\nworkers = 1\n\
         def post_request(worker, req, environ, resp):\n    \
             typed = type(resp.headers) is list and all(\n        \
                 type(h) is tuple and len(h) == 2 and all(type(x) is str for x in h)\n        \
                 for h in resp.headers)\n    \
             with open(os.environ['HOOKS_LOG'], 'a') as f:\n        \
                 f.write(f'{req.path} {resp.status_code} typed={typed} {resp.headers!r}\\n')\n",
    );
    std::fs::write(dir.join("headers_app.py"), HEADERS_APP).unwrap();
    let (log, log_env) = hooks_log(&dir);
    // What gunicorn 27's post_request sees for the same app (sync and
    // gthread alike): the app's headers in its order, hop-by-hop ones
    // dropped, values stripped; none of the server's own (Server, Date,
    // Connection, Content-Length or Transfer-Encoding added for framing),
    // and not the app's Server and Date either: gunicorn drops them.
    let expected = [
        "/ 200 typed=True [('Content-Type', 'text/plain'), ('X-Padded', 'spaced value'), \
         ('Set-Cookie', 'a=1'), ('Set-Cookie', 'b=2'), ('Content-Length', '8')]",
        "/list 200 typed=True [('Content-Type', 'text/plain')]",
        "/stream 200 typed=True [('Content-Type', 'text/plain')]",
        // The server's own error response: no header of the app's.
        "/error 500 typed=True []",
    ];
    for class in ["sync", "gthread"] {
        let _ = std::fs::remove_file(&log);
        let server = ServerProcess::start_with(
            BIN,
            &["-k", class, "headers_app:app"],
            &[("HOOKS_LOG", &log_env)],
            Some(&dir),
        )
        .unwrap();
        for path in ["/", "/list", "/stream", "/error"] {
            let response = client::get(server.addr(), path).unwrap();
            let status = if path == "/error" { 500 } else { 200 };
            assert_eq!(response.status, status, "-k {class} {path}");
            wait_for_line(&log, &format!("{path} "));
        }
        assert_eq!(lines(&log), expected, "-k {class}");
    }
}

#[test]
fn a_worker_whose_boot_hook_raises_still_runs_worker_exit() {
    for failing in ["post_fork(server, worker)", "post_worker_init(worker)"] {
        let name = failing.split('(').next().unwrap();
        let dir = dir_with_config(
            &format!("boot-{name}"),
            &format!(
                "import os\nbind = '127.0.0.1:0'\nworkers = 1\n\
                 def note(line):\n    with open(os.environ['HOOKS_LOG'], 'a') as f:\n        f.write(line + '\\n')\n\
                 def {failing}:\n    note(f'{name} pid={{worker.pid}}')\n    raise ValueError('{name} says no')\n\
                 def worker_exit(server, worker):\n    note(f'worker_exit pid={{worker.pid}}')\n"
            ),
        );
        let (log, log_env) = hooks_log(&dir);
        let output = Command::new(workspace_bin(BIN))
            .current_dir(&dir)
            .env("HOOKS_LOG", &log_env)
            .args([
                "apps.lab:app",
                "--chdir",
                &repo_root().display().to_string(),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert_eq!(output.status.code(), Some(3), "{stderr}");
        // gunicorn's spawn_worker: the exception, then (its `finally`)
        // "Worker exiting", then worker_exit; then the master stops, with
        // the worker's status (3: it did not boot).
        let seen = lines(&log);
        let pid = seen[0]
            .strip_prefix(&format!("{name} pid="))
            .unwrap_or_else(|| panic!("{seen:#?}"))
            .to_string();
        assert_eq!(
            seen,
            [
                format!("{name} pid={pid}"),
                format!("worker_exit pid={pid}")
            ]
        );
        let at = |needle: &str| {
            stderr
                .find(needle)
                .unwrap_or_else(|| panic!("no {needle:?} in {stderr}"))
        };
        assert!(
            at(&format!("Exception in {name} hook")) < at(&format!("Worker exiting (pid: {pid})"))
                && at(&format!("Worker exiting (pid: {pid})"))
                    < at(&format!("Worker (pid:{pid}) exited with code 3.")),
            "{stderr}"
        );
        assert!(
            stderr.contains("Reason: Worker failed to boot."),
            "{stderr}"
        );
    }
}

#[test]
fn child_exit_is_not_called_for_a_worker_that_failed_to_boot() {
    // gunicorn 27.0.1's reap_workers raises HaltServer for a worker's status
    // 3 or 4 before the line that calls child_exit; halt() still calls
    // on_exit. The worker itself said goodbye (worker_exit) before it exited.
    for (case, hook, app, status) in [
        (
            "post_fork",
            "def post_fork(server, worker):\n    raise ValueError('post_fork says no')\n",
            "apps.lab:app",
            3,
        ),
        ("import", "", "no_such_module:app", 3),
        ("attribute", "", "apps.lab:no_such_app", 4),
    ] {
        let dir = dir_with_config(
            &format!("boot-child-exit-{case}"),
            &format!(
                "import os\nbind = '127.0.0.1:0'\nworkers = 1\n\
                 def note(line):\n    with open(os.environ['HOOKS_LOG'], 'a') as f:\n        f.write(line + '\\n')\n\
                 {hook}\
                 def worker_exit(server, worker):\n    note(f'worker_exit pid={{worker.pid}}')\n\
                 def child_exit(server, worker):\n    note(f'child_exit pid={{worker.pid}}')\n\
                 def on_exit(server):\n    note('on_exit')\n"
            ),
        );
        let (log, log_env) = hooks_log(&dir);
        let output = Command::new(workspace_bin(BIN))
            .current_dir(&dir)
            .env("HOOKS_LOG", &log_env)
            .args([app, "--chdir", &repo_root().display().to_string()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert_eq!(output.status.code(), Some(status), "{case}: {stderr}");
        let seen = lines(&log);
        assert!(
            seen.len() == 2 && seen[0].starts_with("worker_exit pid=") && seen[1] == "on_exit",
            "{case}: {seen:#?}\n{stderr}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// An app whose body the server sends only in part: a HEAD request, a 204
/// with a body, a body longer than its Content-Length.
const SENT_APP: &str = r#"
def app(environ, start_response):
    path = environ["PATH_INFO"]
    body = b"hello\n"
    if path == "/204":
        start_response("204 No Content", [])
        return [body]
    if path == "/over":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (piece for piece in [b"hel", b"lo\n"])
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

#[test]
fn resp_sent_and_the_access_log_count_the_body_bytes_sent() {
    let dir = dir_with_config(
        "resp-sent",
        "import os\nbind = '127.0.0.1:0'\nworkers = 1\n\
         def post_request(worker, req, environ, resp):\n    \
             with open(os.environ['HOOKS_LOG'], 'a') as f:\n        \
                 f.write(f'{req.method} {req.path} {resp.status_code} sent={resp.sent}\\n')\n",
    );
    std::fs::write(dir.join("sent_app.py"), SENT_APP).unwrap();
    let (log, log_env) = hooks_log(&dir);
    let access = dir.join("access.log");
    // What gunicorn 27.0.1 says for the same app, sync and gthread alike:
    // Response.write returns before it counts `sent` when the response has
    // no body (HEAD, 1xx, 204, 304), and counts no more than the
    // Content-Length; its access log's bytes are `resp.sent` too.
    let requests = [
        ("GET", "/", 200, 6),
        ("HEAD", "/", 200, 0),
        ("GET", "/stream", 200, 6),
        ("HEAD", "/stream", 200, 0),
        ("GET", "/204", 204, 0),
        ("GET", "/over", 200, 3),
    ];
    for class in ["sync", "gthread"] {
        let _ = std::fs::remove_file(&log);
        let _ = std::fs::remove_file(&access);
        let server = ServerProcess::start_with(
            BIN,
            &[
                "-k",
                class,
                "sent_app:app",
                "--access-logfile",
                &access.display().to_string(),
            ],
            &[("HOOKS_LOG", &log_env)],
            Some(&dir),
        )
        .unwrap();
        for (method, path, status, _) in requests {
            let raw = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            let response = client::request(server.addr(), raw.as_bytes()).unwrap();
            assert_eq!(response.status, status, "-k {class} {method} {path}");
            wait_for_line(&log, &format!("{method} {path} "));
        }
        let expected: Vec<String> = requests
            .iter()
            .map(|(method, path, status, sent)| format!("{method} {path} {status} sent={sent}"))
            .collect();
        assert_eq!(lines(&log), expected, "-k {class}");
        wait_until(
            "every request is in the access log",
            Duration::from_secs(5),
            || lines(&access).len() == requests.len(),
        );
        for ((method, path, status, sent), line) in requests.iter().zip(lines(&access)) {
            assert!(
                line.contains(&format!("\"{method} {path} HTTP/1.1\" {status} {sent} ")),
                "-k {class}: {line}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
