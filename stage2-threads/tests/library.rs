//! `serve_forever` as a library, the way stage 3 runs it in its workers:
//! in this process, with hooks, stopped by a file descriptor or by the hooks.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use pyo3::Python;
use stage2_threads::{ThreadConfig, serve_forever};
use wsgi_bridge::embed::{self, AppSource, PythonSetup};
use wsgi_bridge::hooks::WorkerHooks;
use wsgi_bridge::http::request::Limits;
use wsgi_bridge::wsgi::call::WsgiApp;
use wsgi_bridge::wsgi::environ::ServerInfo;

/// The built-in hello app, loaded once for all the tests of this binary.
fn app() -> &'static WsgiApp {
    static APP: OnceLock<WsgiApp> = OnceLock::new();
    APP.get_or_init(|| {
        let setup = PythonSetup {
            chdir: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            ..PythonSetup::default()
        };
        embed::start_python(&setup).expect("Python starts");
        Python::attach(|py| {
            let app = embed::load_app(py, &AppSource::BuiltinHello).expect("hello loads");
            let info = ServerInfo {
                server_name: "127.0.0.1".into(),
                server_port: "0".into(),
                script_name: String::new(),
                url_scheme: "http",
                multithread: true,
                multiprocess: false,
            };
            WsgiApp::new(py, app, info, "library-test").expect("the app is prepared")
        })
    })
}

fn config() -> ThreadConfig {
    ThreadConfig {
        limits: Limits {
            max_request_line: 4094,
            max_header_count: 100,
            max_header_size: 8190,
            max_body: 1 << 20,
        },
        threads: 2,
        keep_alive: Duration::from_secs(5),
        timeout: Duration::from_secs(5),
        worker_connections: 100,
        graceful_timeout: Duration::from_secs(5),
    }
}

/// Counts what the loop reports; asks to stop after `max_requests`.
struct Counting {
    beats: AtomicUsize,
    started: AtomicUsize,
    finished: AtomicUsize,
    max_requests: usize,
}

impl Counting {
    fn new(max_requests: usize) -> Counting {
        Counting {
            beats: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            max_requests,
        }
    }
}

impl WorkerHooks for Counting {
    fn heartbeat(&self) {
        self.beats.fetch_add(1, Ordering::SeqCst);
    }
    fn request_started(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }
    fn request_finished(&self) {
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
    fn should_stop(&self) -> bool {
        self.finished.load(Ordering::SeqCst) >= self.max_requests
    }
}

/// Sends a keep-alive GET / and reads the 14-byte hello response; false if
/// the connection ended first.
fn hello(c: &mut TcpStream) -> bool {
    if c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").is_err() {
        return false;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"Hello, World!\n") {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    true
}

fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

#[test]
fn the_stop_fd_ends_the_loop_and_heartbeats_flow_meanwhile() {
    let app = app();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_read, mut stop_write) = UnixStream::pair().unwrap();
    let hooks = Counting::new(usize::MAX);
    let config = config();
    thread::scope(|s| {
        let server = s.spawn(|| serve_forever(&listener, app, &config, stop_read.as_fd(), &hooks));
        let mut c = connect(addr);
        for _ in 0..3 {
            assert!(hello(&mut c));
        }
        thread::sleep(Duration::from_millis(1200));
        let stopped_at = Instant::now();
        stop_write.write_all(b"x").unwrap();
        server.join().unwrap().expect("serve_forever returns Ok");
        assert!(stopped_at.elapsed() < Duration::from_secs(1));
        // The idle connection was closed by the stop.
        assert!(!hello(&mut c));
    });
    assert_eq!(hooks.started.load(Ordering::SeqCst), 3);
    assert_eq!(hooks.finished.load(Ordering::SeqCst), 3);
    let beats = hooks.beats.load(Ordering::SeqCst);
    assert!(beats >= 2, "{beats} heartbeats in 1.2 s");
}

#[test]
fn should_stop_ends_the_loop_like_a_signal() {
    // Stage 3's --max-requests: the hooks say "enough" after the third
    // request; the loop answers it, stops accepting and returns.
    let app = app();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_read, _stop_write) = UnixStream::pair().unwrap();
    let hooks = Counting::new(3);
    let config = config();
    thread::scope(|s| {
        let server = s.spawn(|| serve_forever(&listener, app, &config, stop_read.as_fd(), &hooks));
        let mut c = connect(addr);
        assert!(hello(&mut c));
        assert!(hello(&mut c));
        assert!(hello(&mut c), "the third request is answered");
        server.join().unwrap().expect("serve_forever returns Ok");
        assert!(!hello(&mut c), "the connection is closed after the stop");
    });
    assert_eq!(hooks.finished.load(Ordering::SeqCst), 3);
}
