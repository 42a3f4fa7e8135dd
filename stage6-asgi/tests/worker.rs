//! The worker entry point stage 3 will call (`serve_forever`), in-process:
//! the hooks a master watches are called from the right places.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyModule;
use stage6_asgi::{AsgiConfig, serve_forever};
use wsgi_bridge::hooks::WorkerHooks;

const APP: &std::ffi::CStr = c"
import asyncio, time

async def app(scope, receive, send):
    if scope['type'] != 'http':
        return
    if scope['path'] == '/block':
        time.sleep(2.5)          # blocks the loop: no heartbeat meanwhile
    if scope['path'] == '/io':
        await asyncio.sleep(0.3)
    await send({'type': 'http.response.start', 'status': 200, 'headers': []})
    await send({'type': 'http.response.body', 'body': b'ok'})
";

#[derive(Default)]
struct Hooks {
    beats: Mutex<Vec<Instant>>,
    started: AtomicUsize,
    finished: AtomicUsize,
    stop_after: usize,
}

impl WorkerHooks for Hooks {
    fn heartbeat(&self) {
        self.beats.lock().unwrap().push(Instant::now());
    }
    fn request_started(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }
    fn request_finished(&self) {
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
    fn should_stop(&self) -> bool {
        self.stop_after > 0 && self.finished.load(Ordering::SeqCst) >= self.stop_after
    }
}

fn app() -> Py<PyAny> {
    Python::initialize();
    Python::attach(|py| {
        PyModule::from_code(py, APP, c"worker_test_app.py", c"worker_test_app")
            .and_then(|m| m.getattr("app"))
            .unwrap()
            .unbind()
    })
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn heartbeats_come_from_the_loop_and_should_stop_ends_the_worker() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_read, _stop_write) = std::os::unix::net::UnixStream::pair().unwrap();
    let hooks = Hooks {
        stop_after: 3,
        ..Hooks::default()
    };
    let config = AsgiConfig {
        heartbeat: Duration::from_millis(100),
        ..AsgiConfig::default()
    };
    let client = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let a = get(addr, "/");
        let b = get(addr, "/block");
        std::thread::sleep(Duration::from_millis(300));
        let c = get(addr, "/");
        (a, b, c)
    });
    serve_forever(listener, app(), &config, stop_read.as_fd(), &hooks)
        .expect("the worker stops cleanly when the hooks ask");
    let (a, b, c) = client.join().unwrap();
    for r in [a, b, c] {
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok"), "{r}");
    }
    assert_eq!(hooks.started.load(Ordering::SeqCst), 3);
    assert_eq!(hooks.finished.load(Ordering::SeqCst), 3);
    let beats = hooks.beats.lock().unwrap();
    assert!(beats.len() >= 3, "{} heartbeats", beats.len());
    // The loop was blocked for 2.5 s by /block: no beat in that time. A
    // heartbeat sent from any other thread would not show the gap.
    let longest = beats
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        longest >= Duration::from_secs(2),
        "the longest gap between heartbeats was {longest:?}: they do not come from the loop"
    );
}

#[test]
fn a_stop_lets_the_request_in_flight_finish() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_read, mut stop_write) = std::os::unix::net::UnixStream::pair().unwrap();
    let hooks = Hooks::default();
    let client = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let waiting = std::thread::spawn(move || get(addr, "/io"));
        std::thread::sleep(Duration::from_millis(100));
        stop_write.write_all(b"x").unwrap();
        waiting.join().unwrap()
    });
    serve_forever(
        listener,
        app(),
        &AsgiConfig::default(),
        stop_read.as_fd(),
        &hooks,
    )
    .expect("the worker stops cleanly");
    let r = client.join().unwrap();
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok"), "{r}");
    assert_eq!(hooks.finished.load(Ordering::SeqCst), 1);
    // No longer listening.
    assert!(TcpStream::connect(addr).is_err());
}
