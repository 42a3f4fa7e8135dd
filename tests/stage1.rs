//! Stage 1 on its own: what a user sees when starting it, and the lesson it
//! exists for (one slow request blocks everyone).

use std::process::Command;
use std::time::{Duration, Instant};

use assert_cmd::assert::OutputAssertExt;
use wsgi_course::client::{self, Conn};
use wsgi_course::server::{ServerProcess, repo_root, workspace_bin};

const BIN: &str = "stage1-single";

fn lab() -> ServerProcess {
    ServerProcess::start(BIN, &["apps.lab:app", "-b", "127.0.0.1:0"]).expect("stage 1 starts")
}

#[test]
fn no_arguments_serve_the_builtin_hello_app_from_any_directory() {
    let tmp = std::env::temp_dir();
    let server = ServerProcess::start_with(BIN, &["-b", "127.0.0.1:0"], &[], Some(&tmp))
        .expect("stage 1 starts with no app argument");
    let r = client::get(server.addr(), "/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"Hello, World!\n");
    let banner = server
        .wait_for_stderr("Serving ", Duration::from_secs(5))
        .unwrap_or_default();
    assert!(
        banner.contains("Serving the built-in hello app with Python 3."),
        "{banner}"
    );
}

#[test]
fn unknown_module_is_one_sentence_and_exit_1() {
    let out = Command::new(workspace_bin(BIN))
        .args(["no_such_module:app", "-b", "127.0.0.1:0"])
        .current_dir(repo_root())
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot find the module 'no_such_module'"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn missing_callable_bad_spec_and_not_callable_are_refused() {
    for (spec, expected) in [
        ("apps.lab:nope", "no attribute 'nope'"),
        ("apps/lab.py", "is not an app spec"),
        ("apps.lab:HELLO", "is not callable"),
        ("apps.hello:application()", "calling the app factory"),
    ] {
        let out = Command::new(workspace_bin(BIN))
            .args([spec, "-b", "127.0.0.1:0"])
            .current_dir(repo_root())
            .assert()
            .code(1);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(stderr.contains(expected), "{spec}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn import_error_inside_the_app_shows_the_traceback() {
    let dir = tempdir("import-error");
    std::fs::write(
        dir.join("broken.py"),
        "import no_such_dependency\napp = None\n",
    )
    .unwrap();
    let out = Command::new(workspace_bin(BIN))
        .args(["broken:app", "-b", "127.0.0.1:0", "--chdir"])
        .arg(&dir)
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("Traceback (most recent call last)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("No module named 'no_such_dependency'"),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .contains("importing 'broken' failed"),
        "{stderr}"
    );
}

#[test]
fn port_in_use_is_one_sentence_and_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(workspace_bin(BIN))
        .args(["-b", &addr])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("address is already in use"), "{stderr}");
}

#[test]
fn bad_cli_argument_is_refused_without_panic() {
    let out = Command::new(workspace_bin(BIN))
        .args(["--keep-alive", "soon"])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("invalid value 'soon'"), "{stderr}");
}

#[test]
fn wsgi_file_pythonpath_and_virtualenv() {
    let dir = tempdir("paths");
    std::fs::write(
        dir.join("site.py.wsgi"),
        "import sys, helper_mod\ndef application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    if environ['PATH_INFO'] == '/order':\n        sp = [p for p in sys.path if p.endswith('site-packages')]\n        return [b'venv first' if sp and 'venv' in sp[0] else repr(sp).encode()]\n    return [helper_mod.WORD]\n",
    )
    .unwrap();
    // helper_mod lives in a virtualenv's site-packages: only --virtualenv makes it importable.
    let venv = dir.join("venv");
    let status = Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(status.success());
    let version = String::from_utf8(
        Command::new("python3")
            .args([
                "-c",
                "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let site = venv.join(format!("lib/python{}/site-packages", version.trim()));
    std::fs::write(site.join("helper_mod.py"), "WORD = b'from the venv'\n").unwrap();

    let file = dir.join("site.py.wsgi");
    let venv_arg = venv.to_string_lossy().to_string();
    let server = ServerProcess::start(
        BIN,
        &[
            "--wsgi-file",
            file.to_str().unwrap(),
            "--virtualenv",
            &venv_arg,
            "-b",
            "127.0.0.1:0",
        ],
    )
    .expect("starts with --wsgi-file and --virtualenv");
    assert_eq!(
        client::get(server.addr(), "/").unwrap().body,
        b"from the venv"
    );
    // Like an activated virtualenv, its packages come before the base Python's.
    assert_eq!(
        client::get(server.addr(), "/order").unwrap().body,
        b"venv first"
    );

    // Without the virtualenv the import fails, clearly.
    let out = Command::new(workspace_bin(BIN))
        .args(["--wsgi-file", file.to_str().unwrap(), "-b", "127.0.0.1:0"])
        .env_remove("VIRTUAL_ENV")
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("No module named 'helper_mod'"), "{stderr}");

    // --pythonpath adds a directory to sys.path.
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::write(lib.join("helper_mod.py"), "WORD = b'from --pythonpath'\n").unwrap();
    let server = ServerProcess::start(
        BIN,
        &[
            "--wsgi-file",
            file.to_str().unwrap(),
            "--pythonpath",
            lib.to_str().unwrap(),
            "-b",
            "127.0.0.1:0",
        ],
    )
    .expect("starts with --pythonpath");
    assert_eq!(
        client::get(server.addr(), "/").unwrap().body,
        b"from --pythonpath"
    );
}

#[test]
fn script_name_is_split_from_path_info() {
    let server = ServerProcess::start(
        BIN,
        &[
            "apps.lab:app",
            "--script-name",
            "/mount",
            "-b",
            "127.0.0.1:0",
        ],
    )
    .unwrap();
    let r = client::get(server.addr(), "/mount/environ").unwrap();
    let e: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(e["SCRIPT_NAME"], "/mount");
    assert_eq!(e["PATH_INFO"], "/environ");
}

#[test]
fn closes_the_connection_after_each_response_by_default() {
    let server = lab();
    let mut c = Conn::connect(server.addr()).unwrap();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed(Duration::from_secs(2)));
}

#[test]
fn one_slow_request_blocks_everyone() {
    // The lesson of stage 1: while /io sleeps for a second, / waits for it.
    let server = lab();
    let addr = server.addr();
    let slow = std::thread::spawn(move || client::get(addr, "/io?ms=1000").unwrap());
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let r = client::get(addr, "/").unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(slow.join().unwrap().status, 200);
    assert!(
        waited >= Duration::from_millis(500),
        "/ was answered after {waited:?}: it should have waited for /io to finish"
    );
}

#[test]
fn a_client_that_sends_nothing_is_dropped_after_the_timeout() {
    // A silent client holds the one thread for --timeout seconds, not for
    // ever.
    let server = ServerProcess::start(BIN, &["apps.lab:app", "-b", "127.0.0.1:0", "-t", "1"])
        .expect("stage 1 starts");
    let addr = server.addr();
    let mut silent = std::net::TcpStream::connect(addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut silent, &mut buf).unwrap_or(0);
    let dropped_after = started.elapsed();
    assert_eq!(n, 0, "the silent connection is closed without an answer");
    assert!(
        dropped_after < Duration::from_secs(10),
        "dropped after {dropped_after:?}, with -t 1 (the default is 30 s)"
    );
    assert_eq!(client::get(addr, "/").unwrap().status, 200);
}

#[test]
fn sigterm_and_sigint_stop_cleanly() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut server = lab();
        assert_eq!(client::get(server.addr(), "/").unwrap().status, 200);
        server.signal(signal);
        let status = server
            .wait_timeout(Duration::from_secs(5))
            .expect("the server exits after the signal");
        assert_eq!(status.code(), Some(0), "signal {signal}");
        assert!(server.stderr_text().contains("Shutting down"));
    }
}

#[test]
fn flask_app_serves_json() {
    let has_flask = Command::new("python3")
        .args(["-c", "import flask"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_flask {
        eprintln!("SKIPPED: Flask is not installed (pip install flask)");
        return;
    }
    let server = ServerProcess::start(BIN, &["apps.flask_app:app", "-b", "127.0.0.1:0"]).unwrap();
    let r = client::get(server.addr(), "/hello/ada").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["username"], "ada");
    assert_eq!(client::get(server.addr(), "/missing").unwrap().status, 404);
}

#[test]
fn wsgiref_validator_finds_nothing_to_complain_about() {
    // wsgiref.validate checks both sides of PEP 3333: wrapped around the lab
    // app, any AssertionError it raises is a server bug (or the app's).
    let dir = tempdir("validator");
    std::fs::write(
        dir.join("validated.py"),
        "from wsgiref.validate import validator\nimport apps.lab\napp = validator(apps.lab.app)\n",
    )
    .unwrap();
    let root = repo_root();
    let server = ServerProcess::start(
        BIN,
        &[
            "validated:app",
            "--chdir",
            dir.to_str().unwrap(),
            "--pythonpath",
            root.to_str().unwrap(),
            "-b",
            "127.0.0.1:0",
        ],
    )
    .unwrap();
    let addr = server.addr();
    for path in [
        "/",
        "/environ?x=1",
        "/stream?n=3",
        "/bytes?n=1000",
        "/file",
        "/counter",
    ] {
        assert_eq!(client::get(addr, path).unwrap().status, 200, "{path}");
    }
    let head = client::request(
        addr,
        b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(head.is_ok());
    let post = client::request(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    .unwrap();
    assert_eq!(post.body, b"abc");
    let lines = client::request(
        addr,
        b"POST /lines?mode=readline HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nConnection: close\r\n\r\nab\ncd\n",
    )
    .unwrap();
    assert_eq!(lines.status, 200);
    let log = server.stderr_text();
    assert!(
        !log.contains("AssertionError") && !log.contains("Error handling"),
        "{log}"
    );
}

#[test]
fn access_log_lines_in_combined_format() {
    let server = ServerProcess::start(
        BIN,
        &["apps.lab:app", "--access-logfile", "-", "-b", "127.0.0.1:0"],
    )
    .unwrap();
    let r = client::request(
        server.addr(),
        b"GET /bytes?n=7 HTTP/1.1\r\nHost: t\r\nUser-Agent: ua/1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = server.stdout_text();
        if let Some(line) = out.lines().find(|l| l.contains("/bytes?n=7")) {
            assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
            assert!(
                line.ends_with("\"GET /bytes?n=7 HTTP/1.1\" 200 7 \"-\" \"ua/1\""),
                "{line}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no access log line in: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh directory for one test.
fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wsgi-course-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
