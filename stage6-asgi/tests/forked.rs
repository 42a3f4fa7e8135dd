//! What stage 3 `-k asgi` will do: start Python and import the app in a
//! single-threaded master (`--preload`), fork, and call `serve_forever` in
//! the child. No test harness (`harness = false`): libtest's threads would
//! make the fork unsafe, as they would in a real master.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyModule;
use stage6_asgi::{AsgiConfig, serve_forever};
use wsgi_bridge::hooks::WorkerHooks;

const APP: &std::ffi::CStr = c"
import asyncio, os

async def app(scope, receive, send):
    if scope['type'] != 'http':
        return
    await asyncio.sleep(0.01)
    await send({'type': 'http.response.start', 'status': 200, 'headers': []})
    await send({'type': 'http.response.body', 'body': b'pid %d' % os.getpid()})
";

/// Stops the worker after two requests, as `--max-requests 2` would.
struct StopAfterTwo(AtomicUsize);

impl WorkerHooks for StopAfterTwo {
    fn request_finished(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn should_stop(&self) -> bool {
        self.0.load(Ordering::SeqCst) >= 2
    }
}

fn get(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn main() {
    Python::initialize();
    let app = Python::attach(|py| {
        PyModule::from_code(py, APP, c"forked_app.py", c"forked_app")
            .and_then(|m| m.getattr("app"))
            .unwrap()
            .unbind()
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_read, _stop_write) = std::os::unix::net::UnixStream::pair().unwrap();

    // SAFETY: this process has one thread; the GIL is held around fork()
    // and Python is told on both sides, as the C API requires.
    let child = Python::attach(|_py| unsafe {
        pyo3::ffi::PyOS_BeforeFork();
        let pid = libc::fork();
        if pid == 0 {
            pyo3::ffi::PyOS_AfterFork_Child();
        } else {
            pyo3::ffi::PyOS_AfterFork_Parent();
        }
        pid
    });
    assert!(child >= 0, "fork failed");
    if child == 0 {
        let hooks = StopAfterTwo(AtomicUsize::new(0));
        let r = serve_forever(
            listener,
            app,
            &AsgiConfig::default(),
            stop_read.as_fd(),
            &hooks,
        );
        std::process::exit(if r.is_ok() { 0 } else { 1 });
    }
    drop(listener);
    let a = get(addr);
    let b = get(addr);
    for r in [&a, &b] {
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with(&format!("pid {child}")),
            "{r}"
        );
    }
    // The worker stops by itself after its two requests.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child, with a valid status pointer.
        let done = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if done == child {
            break;
        }
        if Instant::now() > deadline {
            // SAFETY: our own child.
            unsafe { libc::kill(child, libc::SIGKILL) };
            panic!("the forked worker did not stop after two requests");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the worker exited with status {status:#x}"
    );
    println!("forked worker: served 2 requests in pid {child} and stopped cleanly");
    println!("1 passed, 0 failed");
}
