//! Stage 4: workers fed uwsgi packets on a unix socket, by the harness'
//! client (what nginx does) and by a real nginx.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use assert_cmd::assert::OutputAssertExt;
use wsgi_course::server::{ServerProcess, repo_root, workspace_bin};
use wsgi_course::{client, nginx, procs, uwsgi};

const BIN: &str = "stage4-uwsgi-socket";

fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("wsgi-course-s4-{name}-{}.sock", std::process::id()))
}

fn start(name: &str, extra: &[&str]) -> (ServerProcess, PathBuf) {
    let path = socket_path(name);
    let path_text = path.to_str().unwrap().to_string();
    let mut args = vec![
        "--socket",
        path_text.as_str(),
        "--module",
        "apps.lab:app",
        "--processes",
        "2",
    ];
    args.extend_from_slice(extra);
    let server = ServerProcess::start(BIN, &args).expect("stage 4 starts");
    assert_eq!(server.unix_path().as_deref(), Some(path.as_path()));
    (server, path)
}

#[test]
fn serves_packets_from_the_harness_client() {
    let (_server, sock) = start("client", &[]);
    let r = uwsgi::request(&sock, "GET", "/", &[("Host", "t")], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"Hello, World!\n");
    // A plain status line and the app's headers: no Server or Date (nginx adds its own).
    assert!(r.header("server").is_none() && r.header("date").is_none());

    let r = uwsgi::request(&sock, "POST", "/echo", &[("Host", "t")], b"ping pong").unwrap();
    assert_eq!(r.body, b"ping pong");

    let r = uwsgi::request(
        &sock,
        "GET",
        "/environ/a%20b?x=1",
        &[("Host", "example.test"), ("Cookie", "a=1")],
        b"",
    )
    .unwrap();
    let e: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        e["PATH_INFO"], "/environ/a b",
        "nginx sends PATH_INFO decoded"
    );
    assert_eq!(e["QUERY_STRING"], "x=1");
    assert_eq!(e["HTTP_HOST"], "example.test");
    assert_eq!(e["SCRIPT_NAME"], "");
    assert_eq!(e["RAW_URI"], "/environ/a%20b?x=1");
    assert_eq!(e["wsgi.multiprocess"], true);

    // A streamed body: no chunked encoding on a uwsgi socket, the end is the close.
    let r = uwsgi::request(&sock, "GET", "/stream?n=3", &[("Host", "t")], b"").unwrap();
    assert!(!r.chunked);
    assert!(r.header("transfer-encoding").is_none());
    assert_eq!(r.body, b"chunk 0\nchunk 1\nchunk 2\n");

    let r = uwsgi::request(&sock, "GET", "/bytes?n=1000000", &[("Host", "t")], b"").unwrap();
    assert_eq!(r.header("content-length"), Some("1000000"));
    assert_eq!(r.body.len(), 1_000_000);

    let r = uwsgi::request(&sock, "HEAD", "/", &[("Host", "t")], b"").unwrap();
    assert_eq!(r.header("content-length"), Some("14"));
    assert!(r.body.is_empty());

    let r = uwsgi::request(&sock, "GET", "/error", &[("Host", "t")], b"").unwrap();
    assert_eq!(r.status, 500);
}

#[test]
fn bad_packets_never_stop_a_worker() {
    let (server, sock) = start("bad", &[]);
    let mut before = procs::children(server.pid());
    for _ in 0..100 {
        if before.len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        before = procs::children(server.pid());
    }
    assert_eq!(before.len(), 2);

    // A truncated header, then nothing.
    assert!(uwsgi::send_raw(&sock, &[0, 10]).unwrap().is_empty());
    // A vars block larger than --buffer-size (4096).
    assert!(
        uwsgi::send_raw(&sock, &[0, 0x88, 0x13, 0])
            .unwrap()
            .is_empty()
    );
    // Vars that run past their block.
    assert!(
        uwsgi::send_raw(&sock, &[0, 4, 0, 0, 9, 0, b'A', b'B'])
            .unwrap()
            .is_empty()
    );
    // Another language's modifier1.
    let mut other = uwsgi::packet(&[("REQUEST_METHOD", b"GET")]);
    other[0] = 5;
    assert!(uwsgi::send_raw(&sock, &other).unwrap().is_empty());
    // A browser (plain HTTP) on the uwsgi socket: told so, in HTTP.
    let answer = uwsgi::send_raw(&sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        text.contains("This is a uwsgi socket, not an HTTP server"),
        "{text}"
    );

    // Workers log as they go; give the last line time to arrive.
    server.wait_for_stderr(
        "a browser or curl is talking to the uwsgi socket",
        Duration::from_secs(5),
    );
    let log = server.stderr_text();
    assert!(
        log.contains("invalid request block size: 5000 (max 4096)"),
        "{log}"
    );
    assert!(log.contains("malformed uwsgi packet"), "{log}");
    assert!(log.contains("unsupported modifier1 5"), "{log}");
    assert!(
        log.contains("a browser or curl is talking to the uwsgi socket"),
        "{log}"
    );

    let r = uwsgi::request(&sock, "GET", "/", &[("Host", "t")], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        procs::children(server.pid()),
        before,
        "no worker was lost or replaced"
    );
}

#[test]
fn the_socket_file_is_private_replaced_when_stale_and_removed_on_exit() {
    let (mut server, sock) = start("file", &[]);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "owner-only by default");
    server.signal(libc::SIGTERM);
    assert_eq!(
        server.wait_timeout(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    assert!(!sock.exists(), "the socket file is removed on exit");

    // A stale socket file (its server died without cleaning up) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let path = sock.to_str().unwrap();
    let server = ServerProcess::start(BIN, &["--socket", path, "--chmod-socket", "666"]).unwrap();
    assert!(server.stderr_text().contains("Removed a stale socket file"));
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);

    // One a live server listens on is not.
    let out = Command::new(workspace_bin(BIN))
        .args(["--socket", path])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("another server is listening on"),
        "{stderr}"
    );
    drop(server);
}

#[test]
fn bad_flags_are_one_sentence() {
    let out = Command::new(workspace_bin(BIN))
        .args(["--chmod-socket", "999"])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("not an octal file mode"), "{stderr}");
    let out = Command::new(workspace_bin(BIN))
        .args(["--buffer-size", "70000"])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("70000"), "{stderr}");
    let out = Command::new(workspace_bin(BIN))
        .args([
            "--module",
            "no_such_module:app",
            "--socket",
            socket_path("nomod").to_str().unwrap(),
        ])
        .current_dir(repo_root())
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .starts_with("error: cannot find the module"),
        "{stderr}"
    );
}

#[test]
fn a_busy_port_is_named_with_stage_4s_own_flags() {
    // `-b` is --buffer-size here: the hint must name --socket and --http.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    for (flag, value) in [
        ("--socket", format!("127.0.0.1:{port}")),
        ("--http", format!("127.0.0.1:{port}")),
    ] {
        let mut args = vec![flag.to_string(), value];
        if flag == "--http" {
            args.extend([
                "--socket".to_string(),
                socket_path("busy").display().to_string(),
            ]);
        }
        let out = Command::new(workspace_bin(BIN))
            .args(&args)
            .assert()
            .code(1);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(stderr.contains("already in use"), "{stderr}");
        assert!(
            stderr.contains(&format!("with {flag} 127.0.0.1:")) && !stderr.contains("-b "),
            "{flag}: {stderr}"
        );
    }
}

#[test]
fn the_apps_server_and_date_headers_pass_through_as_uwsgi_passes_them() {
    // uWSGI 2.0 adds no Server or Date of its own (nginx, or its --http
    // router, answers the client) and sends the app's as they are. Stage 3
    // drops the app's pair, as gunicorn does, because it writes its own:
    // the bridge's rules keep the two apart.
    let dir = std::env::temp_dir().join(format!("wsgi-course-s4-own-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("own_headers.py");
    std::fs::write(
        &file,
        "def application(environ, start_response):\n    \
             start_response('200 OK', [('Server', 'MyApp/1.0'), ('Date', 'Tue, 01 Jan 2030 00:00:00 GMT')])\n    \
             return [b'hello\\n']\n",
    )
    .unwrap();
    let sock = socket_path("own-headers");
    let server = ServerProcess::start(
        BIN,
        &[
            "--socket",
            sock.to_str().unwrap(),
            "--wsgi-file",
            file.to_str().unwrap(),
            "--processes",
            "1",
        ],
    )
    .expect("stage 4 starts");
    let r = uwsgi::request(&sock, "GET", "/", &[("Host", "t")], b"").unwrap();
    assert_eq!(r.header_all("server"), ["MyApp/1.0"]);
    assert_eq!(r.header_all("date"), ["Tue, 01 Jan 2030 00:00:00 GMT"]);
    assert_eq!(r.body, b"hello\n");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_http_router_lets_curl_in() {
    let (server, _sock) = start("router", &["--http", "127.0.0.1:0"]);
    let line = server
        .wait_for_stderr("HTTP router at: http://", Duration::from_secs(5))
        .unwrap();
    let addr = line
        .split("HTTP router at: http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let r = client::get(addr, "/").unwrap();
    assert_eq!(r.body, b"Hello, World!\n");
    let r = client::request(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nping\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.body, b"ping");
    let r = client::get(addr, "/stream?n=2").unwrap();
    assert_eq!(r.body, b"chunk 0\nchunk 1\n");
}

#[test]
fn a_real_nginx_in_front_and_the_buffer_size_502() {
    let (server, sock) = start("nginx", &[]);
    let Some(front) = nginx::start_uwsgi_front(&format!("unix:{}", sock.display()), 1 << 20) else {
        return;
    };
    let r = client::get(front.addr, "/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"Hello, World!\n");
    assert!(r.header("server").is_some_and(|s| s.starts_with("nginx")));
    let r = client::get(front.addr, "/stream?n=2").unwrap();
    assert!(
        r.chunked,
        "nginx frames the close-delimited answer for its HTTP/1.1 client"
    );
    assert_eq!(r.body, b"chunk 0\nchunk 1\n");

    // A request line longer than --buffer-size: the worker refuses the
    // packet, nginx answers 502 (uWSGI's classic "invalid request block size").
    let long = format!("/{}", "a".repeat(5000));
    let r = client::get(front.addr, &long).unwrap();
    assert_eq!(r.status, 502);
    server
        .wait_for_stderr("invalid request block size", Duration::from_secs(5))
        .expect("the worker says why");
}

#[test]
fn uwsgi_dump_shows_what_nginx_sends() {
    let out = Command::new(workspace_bin("uwsgi-dump"))
        .args(["--build", "GET /hello?x=1", "-H", "Host: example.test"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(text.contains("header: modifier1=0"), "{text}");
    assert!(text.contains("REQUEST_URI =  10 \"/hello?x=1\""), "{text}");

    // Capture a real packet from nginx.
    let sock = socket_path("dump");
    let sock_text = sock.to_str().unwrap().to_string();
    let dump =
        ServerProcess::start("uwsgi-dump", &["--socket", &sock_text, "--count", "1"]).unwrap();
    let Some(front) = nginx::start_uwsgi_front(&format!("unix:{sock_text}"), 1 << 20) else {
        return;
    };
    let r = client::get(front.addr, "/from-nginx?q=2").unwrap();
    let body = r.text();
    assert!(body.contains("PATH_INFO =  11 \"/from-nginx\""), "{body}");
    assert!(body.contains("HTTP_HOST"), "{body}");
    drop(dump);
}

#[test]
fn a_request_nginx_gave_up_on_is_not_run() {
    // nginx answers 504 and closes its connection when the app takes too
    // long, even while the request still waits in the socket's queue. The
    // worker that takes it later must not run the app for nobody.
    let sock = socket_path("gave-up");
    let server = ServerProcess::start(
        BIN,
        &[
            "--socket",
            sock.to_str().unwrap(),
            "--module",
            "apps.lab:app",
            "--processes",
            "1",
        ],
    )
    .expect("stage 4 starts");
    let reset = uwsgi::request(&sock, "GET", "/counter/reset", &[("Host", "t")], b"").unwrap();
    assert_eq!(reset.status, 200);
    // The one worker is busy for a second...
    let busy_sock = sock.clone();
    let busy = std::thread::spawn(move || {
        uwsgi::request(&busy_sock, "GET", "/io?ms=1000", &[("Host", "t")], b"")
    });
    std::thread::sleep(Duration::from_millis(200));
    // ... while a request for /counter is sent, and abandoned.
    let vars = uwsgi::nginx_vars("GET", "/counter", &[("Host", "t")], 0);
    let refs: Vec<(&str, &[u8])> = vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let mut abandoned = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    abandoned.write_all(&uwsgi::packet(&refs)).unwrap();
    drop(abandoned);
    assert_eq!(busy.join().unwrap().unwrap().status, 200);
    server
        .wait_for_stderr(
            "nginx gave up before a worker took it",
            Duration::from_secs(5),
        )
        .expect("the worker says it skipped the request");
    // The counter was never incremented by the abandoned request.
    let counter = uwsgi::request(&sock, "GET", "/counter", &[("Host", "t")], b"").unwrap();
    assert_eq!(
        counter.text().trim(),
        "1",
        "the abandoned request ran the app"
    );
}

#[test]
fn usr1_prints_the_statistics_as_uwsgi_does() {
    let (server, _sock) = start("usr1", &[]);
    server.signal(libc::SIGUSR1);
    let line = server
        .wait_for_stderr("Handling signal: usr1: statistics:", Duration::from_secs(5))
        .expect("the master prints its statistics");
    assert!(line.contains("\"workers\""), "{line}");
    // And the master is still there, serving.
    assert!(procs::alive(server.pid()));
}

#[test]
fn threads_overlap_sleeping_requests() {
    // The course notes' `--processes 4 --threads 2`, in small: one process
    // with four threads serves four sleeping requests at once.
    let sock = socket_path("threads");
    let server = ServerProcess::start(
        BIN,
        &[
            "--socket",
            sock.to_str().unwrap(),
            "--module",
            "apps.lab:app",
            "--processes",
            "1",
            "--threads",
            "4",
            "--enable-threads",
        ],
    )
    .expect("stage 4 starts");
    // The banner's next line, which may still be on its way when
    // `Listening at:` has arrived.
    assert!(
        server
            .wait_for_stderr("4 threads each", Duration::from_secs(10))
            .is_some(),
        "{}",
        server.stderr_text()
    );
    let started = std::time::Instant::now();
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                uwsgi::request(&sock, "GET", "/io?ms=1000", &[("Host", "t")], b"")
            })
        })
        .collect();
    for r in requests {
        assert_eq!(r.join().unwrap().unwrap().status, 200);
    }
    // One after another they would take 4 s.
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "four 1 s requests took {took:?}"
    );
}

#[test]
fn an_ini_file_is_its_flags_and_the_command_line_wins() {
    let dir = std::env::temp_dir().join(format!("stage4-ini-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ini = dir.join("site.ini");
    std::fs::write(
        &ini,
        "# as the course notes ship it\n[uwsgi]\nmodule = apps.lab:app\nsocket = %d%n.sock\nprocesses = 4\nchmod-socket = 660\nmaster = true\nvacuum = true\n",
    )
    .unwrap();
    let server = ServerProcess::start(
        BIN,
        &[ini.to_str().unwrap(), "--processes", "1", "--show-config"],
    )
    .expect("stage 4 starts from an ini file");
    let sock = dir.join("site.sock");
    assert_eq!(server.unix_path().as_deref(), Some(sock.as_path()));
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    assert!(
        server
            .wait_for_stderr(": 1 worker", Duration::from_secs(5))
            .is_some(),
        "the command line's --processes 1 wins over the file's 4: {}",
        server.stderr_text()
    );
    assert!(
        server.stdout_text().contains("processes = 1"),
        "{}",
        server.stdout_text()
    );
    let r = uwsgi::request(&sock, "GET", "/", &[("Host", "t")], b"").unwrap();
    assert_eq!(r.status, 200);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn term_stops_gracefully_and_int_and_quit_stop_at_once() {
    // uWSGI 2.0 reloaded on TERM unless --die-on-term; 2.1 stops, and so
    // does stage 4: gracefully, the request in flight answered. INT and
    // QUIT stop at once, as in uWSGI (and gunicorn), cutting it.
    for (signal, graceful) in [
        (libc::SIGTERM, true),
        (libc::SIGINT, false),
        (libc::SIGQUIT, false),
    ] {
        let (mut server, sock) = start(&format!("stop{signal}"), &[]);
        let in_flight = {
            let sock = sock.clone();
            std::thread::spawn(move || {
                uwsgi::request(&sock, "GET", "/io?ms=1500", &[("Host", "t")], b"")
            })
        };
        std::thread::sleep(Duration::from_millis(400));
        let sent = std::time::Instant::now();
        server.signal(signal);
        let status = server.wait_timeout(Duration::from_secs(10)).unwrap();
        let took = sent.elapsed();
        let answer = in_flight.join().unwrap();
        if graceful {
            assert_eq!(status.code(), Some(0), "TERM: {}", server.stderr_text());
            assert_eq!(
                answer
                    .expect("TERM: the request in flight is answered")
                    .status,
                200
            );
        } else {
            assert!(
                answer.is_err(),
                "signal {signal}: the request in flight was answered, not cut"
            );
            assert!(
                took < Duration::from_millis(1000),
                "signal {signal}: stopping took {took:?}, as long as the request"
            );
        }
        assert!(
            !sock.exists(),
            "signal {signal}: the socket file is removed"
        );
    }
}

#[test]
fn usr2_hands_the_unix_socket_to_a_new_master() {
    // Stage 3's upgrade on the fly, with stage 4's socket: the new master
    // takes the socket the old one passed instead of binding (the path is
    // taken, by that very socket), and the file outlives the old master.
    let pid_file = socket_path("usr2").with_extension("pid");
    let pid_text = pid_file.to_str().unwrap().to_string();
    let (mut old, sock) = start("usr2", &["--pidfile", &pid_text]);
    old.signal(libc::SIGUSR2);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut new = 0u32;
    while new == 0 || new == old.pid() {
        assert!(std::time::Instant::now() < deadline, "no new master");
        std::thread::sleep(Duration::from_millis(50));
        new = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
    }
    while procs::children(new).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no new workers");
        std::thread::sleep(Duration::from_millis(50));
    }
    old.signal(libc::SIGTERM);
    assert_eq!(
        old.wait_timeout(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    assert!(
        sock.exists(),
        "the old master leaves the new one's socket file"
    );
    let r = uwsgi::request(&sock, "GET", "/pid", &[("Host", "t")], b"").unwrap();
    let worker: u32 = r.text().trim().parse().unwrap();
    assert!(procs::children(new).contains(&worker));
    // SAFETY: kill(2) on the master this test caused to start.
    unsafe { libc::kill(new as i32, libc::SIGTERM) };
    while procs::alive(new) {
        assert!(std::time::Instant::now() < deadline + Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!sock.exists(), "the new master removes the file at exit");
    let _ = std::fs::remove_file(&pid_file);
}
