//! Stage 3's listeners and its workers' signals, on the real binary: `-b`
//! given several times, `unix:PATH`, `[::1]:PORT`, USR2 with all of them,
//! and what each worker class does with each signal.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use assert_cmd::assert::OutputAssertExt;
use serde_json::Value;
use wsgi_course::client::{self, Conn};
use wsgi_course::procs::{self, children};
use wsgi_course::server::{ServerProcess, workspace_bin};
use wsgi_course::wait_until;

const BIN: &str = "stage3-prefork";

/// Each worker class, with an app of its kind that has `/pid`, `/io` and
/// a view of what the server told it (`/environ`, `/scope`).
const CLASSES: [(&str, &str); 3] = [
    ("sync", "apps.lab:app"),
    ("gthread", "apps.lab:app"),
    ("asgi", "apps.asgi_lab:app"),
];

fn start(class: &str, app: &str, args: &[&str]) -> ServerProcess {
    let mut all = vec![app, "-k", class];
    all.extend_from_slice(args);
    ServerProcess::start(BIN, &all).unwrap_or_else(|e| panic!("-k {class}: {e}"))
}

/// Every address of the banner's `Listening at:` lines, in order.
fn listening(server: &ServerProcess) -> Vec<String> {
    // The line after the last address: all of them have been read.
    server
        .wait_for_stderr("Using worker: ", Duration::from_secs(10))
        .expect("the banner goes on after the addresses");
    server
        .stderr_text()
        .lines()
        .filter_map(|l| l.split("Listening at: ").nth(1))
        .map(|rest| rest.split(" (").next().unwrap_or(rest).to_string())
        .collect()
}

fn tcp(address: &str) -> SocketAddr {
    address
        .strip_prefix("http://")
        .expect("an http:// address")
        .parse()
        .unwrap()
}

fn unix_get(path: &Path, target: &str, host: &str) -> std::io::Result<client::Response> {
    let mut conn = Conn::connect_unix(path)?;
    conn.send(
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    conn.read_response(false)
}

fn json(r: &client::Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("JSON: {}", r.text()))
}

/// What the app was told about the server: environ (WSGI) or scope (ASGI).
fn told(class: &str) -> &'static str {
    if class == "asgi" {
        "/scope"
    } else {
        "/environ"
    }
}

fn temp_socket(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stage3-listeners-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn pid_at(addr: SocketAddr) -> u32 {
    client::get(addr, "/pid")
        .unwrap()
        .text()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn two_addresses_are_answered_by_the_same_workers() {
    for (class, app) in CLASSES {
        let server = start(
            class,
            app,
            &["-w", "1", "-b", "127.0.0.1:0", "-b", "127.0.0.1:0"],
        );
        let addresses = listening(&server);
        assert_eq!(
            addresses.len(),
            2,
            "-k {class}: one banner line per address"
        );
        let (a, b) = (tcp(&addresses[0]), tcp(&addresses[1]));
        assert_ne!(a.port(), b.port());
        wait_until("the worker runs", Duration::from_secs(10), || {
            children(server.pid()).len() == 1
        });
        let worker = children(server.pid())[0];
        // One worker, both addresses: it accepts on each.
        for _ in 0..3 {
            assert_eq!(pid_at(a), worker, "-k {class}");
            assert_eq!(pid_at(b), worker, "-k {class}");
        }
        // Each request is told the address it came through.
        for addr in [a, b] {
            let seen = json(&client::get(addr, told(class)).unwrap());
            let port = if class == "asgi" {
                seen["server"][1].as_u64().unwrap().to_string()
            } else {
                seen["SERVER_PORT"].as_str().unwrap().to_string()
            };
            assert_eq!(port, addr.port().to_string(), "-k {class}: {seen}");
        }
    }
}

#[test]
fn unix_socket_serves_http_and_its_file_goes_at_exit() {
    for (class, app) in CLASSES {
        let path = temp_socket(&format!("{class}.sock"));
        let bind = format!("unix:{}", path.display());
        let mut server = start(class, app, &["-w", "1", "-b", &bind]);
        assert_eq!(listening(&server), vec![bind.clone()]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o777,
            "anyone may connect, as with gunicorn's umask 0"
        );
        let r = unix_get(&path, told(class), "example.com:8080").unwrap();
        assert_eq!(r.status, 200, "-k {class}: {}", r.text());
        let seen = json(&r);
        if class == "asgi" {
            // uvicorn's: a unix socket has no host and port, its client none.
            assert_eq!(seen["server"], Value::Null, "{seen}");
            assert_eq!(seen["client"], Value::Null, "{seen}");
        } else {
            // gunicorn's: no client address, no port; the server's name and
            // port from the Host header.
            assert_eq!(seen["REMOTE_ADDR"], "", "-k {class}: {seen}");
            assert!(seen.get("REMOTE_PORT").is_none(), "-k {class}: {seen}");
            assert_eq!(seen["SERVER_NAME"], "example.com", "-k {class}: {seen}");
            assert_eq!(seen["SERVER_PORT"], "8080", "-k {class}: {seen}");
            let r = unix_get(&path, told(class), "example.com").unwrap();
            assert_eq!(json(&r)["SERVER_PORT"], "80", "the scheme's port");
        }
        server.signal(libc::SIGTERM);
        let status = server.wait_timeout(Duration::from_secs(10)).expect("exits");
        assert_eq!(status.code(), Some(0));
        assert!(
            !path.exists(),
            "-k {class}: the socket file is removed at exit"
        );
    }
}

#[test]
fn curl_speaks_http_over_the_unix_socket() {
    if Command::new("curl").arg("--version").output().is_err() {
        println!("skipped: no curl on this machine");
        return;
    }
    let path = temp_socket("curl.sock");
    let bind = format!("unix:{}", path.display());
    let _server = start("sync", "apps.lab:app", &["-w", "1", "-b", &bind]);
    let out = Command::new("curl")
        .args([
            "-s",
            "--unix-socket",
            path.to_str().unwrap(),
            "http://localhost/",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, World!\n");
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_refused() {
    let path = temp_socket("stale.sock");
    // What a server killed with -9 leaves: the file, nobody behind it.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let bind = format!("unix:{}", path.display());
    let mut server = start("sync", "apps.lab:app", &["-w", "1", "-b", &bind]);
    assert!(server.stderr_text().contains("Removed a stale socket file"));
    assert_eq!(unix_get(&path, "/", "t").unwrap().status, 200);

    // A second server on the same path: one sentence, and the first one
    // keeps its socket.
    let out = Command::new(workspace_bin(BIN))
        .args(["-b", &bind])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.lines().last().unwrap_or("").contains(&format!(
            "another server is listening on {}: stop it or choose another -b unix: path",
            path.display()
        )),
        "{stderr}"
    );
    assert_eq!(unix_get(&path, "/", "t").unwrap().status, 200);
    server.signal(libc::SIGTERM);
    server.wait_timeout(Duration::from_secs(10)).expect("exits");
    assert!(!path.exists());
}

#[test]
fn ipv6_loopback() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        println!("skipped: ::1 is not available on this machine");
        return;
    }
    let server = start("sync", "apps.lab:app", &["-w", "1", "-b", "[::1]:0"]);
    let addr = tcp(&listening(&server)[0]);
    assert!(addr.is_ipv6());
    let seen = json(&client::get(addr, "/environ").unwrap());
    assert_eq!(seen["REMOTE_ADDR"], "::1");
    assert_eq!(seen["SERVER_NAME"], "::1");
}

#[test]
fn usr2_upgrade_keeps_every_listener() {
    let path = temp_socket("usr2.sock");
    let bind = format!("unix:{}", path.display());
    let pid_file = path.with_extension("pid");
    let mut old = start(
        "sync",
        "apps.lab:app",
        &[
            "-w",
            "1",
            "-b",
            "127.0.0.1:0",
            "-b",
            &bind,
            "--pid",
            pid_file.to_str().unwrap(),
        ],
    );
    let addr = tcp(&listening(&old)[0]);
    old.signal(libc::SIGUSR2);
    let mut new = 0;
    wait_until(
        "the new master writes its pid file",
        Duration::from_secs(10),
        || {
            new = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            new != 0 && new != old.pid()
        },
    );
    wait_until(
        "the new master's worker runs",
        Duration::from_secs(10),
        || children(new).len() == 1,
    );
    old.signal(libc::SIGTERM);
    assert_eq!(
        old.wait_timeout(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    // The old master is gone and left the socket file to the new one, which
    // answers on both addresses.
    assert!(
        path.exists(),
        "the old master leaves the new one's socket file"
    );
    let worker = children(new)[0];
    assert_eq!(pid_at(addr), worker);
    let r = unix_get(&path, "/pid", "t").unwrap();
    assert_eq!(r.text().trim(), worker.to_string());
    // SAFETY: kill(2) on the master this test caused to start.
    unsafe { libc::kill(new as i32, libc::SIGTERM) };
    wait_until("the new master stops", Duration::from_secs(10), || {
        !procs::alive(new)
    });
    assert!(!path.exists(), "the new master removes the file at exit");
}

/// A request that takes 8 s, on a connection that waits 30 s for it; its
/// outcome comes back on the channel.
fn slow_request(addr: SocketAddr) -> std::sync::mpsc::Receiver<std::io::Result<u16>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = Conn::connect(addr).and_then(|mut conn| {
            conn.set_timeout(Duration::from_secs(30));
            conn.send(b"GET /io?ms=8000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
            conn.read_response(false).map(|r| r.status)
        });
        let _ = tx.send(result);
    });
    rx
}

#[test]
fn int_ends_a_worker_at_once_and_it_is_replaced() {
    for (class, app) in CLASSES {
        let server = start(class, app, &["-w", "1", "-b", "127.0.0.1:0"]);
        let addr = server.addr();
        let worker = pid_at(addr);
        let outcome = slow_request(addr);
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: kill(2) on a worker of the server this test started.
        unsafe { libc::kill(worker as i32, libc::SIGINT) };
        // Gracefully it would answer 200 after 8 s; at once, the connection
        // just closes.
        let result = outcome.recv().unwrap();
        assert!(
            result.is_err(),
            "-k {class}: INT let the request finish: {result:?}"
        );
        assert!(
            !result.unwrap_err().to_string().contains("timed out"),
            "-k {class}"
        );
        wait_until("a new worker", Duration::from_secs(10), || {
            children(server.pid()).iter().any(|&p| p != worker)
        });
        assert_ne!(pid_at(addr), worker, "-k {class}");
    }
}

#[test]
fn abrt_ends_a_worker_with_status_1_and_it_is_replaced() {
    for (class, app) in CLASSES {
        let server = start(class, app, &["-w", "1", "-b", "127.0.0.1:0"]);
        let addr = server.addr();
        let worker = pid_at(addr);
        // SAFETY: kill(2) on a worker of the server this test started.
        unsafe { libc::kill(worker as i32, libc::SIGABRT) };
        server
            .wait_for_stderr(
                &format!("Worker (pid:{worker}) exited with code 1."),
                Duration::from_secs(10),
            )
            .unwrap_or_else(|| panic!("-k {class}: {}", server.stderr_text()));
        wait_until("a new worker", Duration::from_secs(10), || {
            children(server.pid()).iter().any(|&p| p != worker)
        });
        assert_eq!(client::get(addr, "/").unwrap().status, 200);
    }
}

#[test]
fn other_signals_are_logged_and_ignored_by_workers_and_master() {
    for (class, app) in CLASSES {
        let server = start(class, app, &["-w", "1", "-b", "127.0.0.1:0"]);
        let addr = server.addr();
        let worker = pid_at(addr);
        for (signal, name) in [
            (libc::SIGUSR2, "usr2"),
            (libc::SIGHUP, "hup"),
            (libc::SIGALRM, "alrm"),
            (libc::SIGVTALRM, "vtalrm"),
            (libc::SIGPROF, "prof"),
            (libc::SIGRTMIN() + 1, "rtmin+1"),
        ] {
            // SAFETY: kill(2) on a worker of the server this test started.
            unsafe { libc::kill(worker as i32, signal) };
            server
                .wait_for_stderr(
                    &format!("[{worker}] [WARNING] Ignoring signal: {name}"),
                    Duration::from_secs(10),
                )
                .unwrap_or_else(|| panic!("-k {class} {name}: {}", server.stderr_text()));
        }
        // The same worker still serves.
        assert_eq!(pid_at(addr), worker, "-k {class}");
        assert!(server.stderr_text().contains(&format!(
            "Ignoring signal: usr2: it is the master's; send it to the master (pid {})",
            server.pid()
        )));

        // The master, likewise.
        for (signal, name) in [(libc::SIGALRM, "alrm"), (libc::SIGPROF, "prof")] {
            server.signal(signal);
            server
                .wait_for_stderr(
                    &format!(
                        "[{}] [WARNING] Ignoring signal: {name}: it means nothing to the master",
                        server.pid()
                    ),
                    Duration::from_secs(10),
                )
                .unwrap_or_else(|| panic!("-k {class} {name}: {}", server.stderr_text()));
        }
        assert_eq!(pid_at(addr), worker, "-k {class}");
    }
}
