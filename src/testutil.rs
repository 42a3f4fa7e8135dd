//! Helpers for testing clients (the harness' own and the load generator's):
//! small servers that exist before any stage binary does.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::thread;

use crate::server::ServerProcess;

/// A tiny threaded HTTP/1.1 server in Python that behaves like a stage:
/// gunicorn-style banner on stderr, keep-alive, `Handling signal: term` and exit
/// 0 on SIGTERM.
///
/// Paths: `/` answers `ok` with Content-Length; `/chunked` answers `hello
/// world` chunked; `/close` answers and closes (`Connection: close`); `/500`
/// answers 500. Extra argument `fork` makes it fork a child that ignores
/// SIGTERM and prints `forked child PID`.
const PY_SERVER: &str = r#"
import os, signal, socket, sys, threading, time

def log(msg):
    t = time.strftime('%Y-%m-%d %H:%M:%S +0000', time.gmtime())
    print(f'[{t}] [{os.getpid()}] [INFO] {msg}', file=sys.stderr, flush=True)

def on_term(signum, frame):
    log('Handling signal: term')
    os._exit(0)

signal.signal(signal.SIGTERM, on_term)

def handle(c):
    buf = b''
    try:
        while True:
            while b'\r\n\r\n' not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            head, _, buf = buf.partition(b'\r\n\r\n')
            line = head.split(b'\r\n')[0].split()
            path = line[1] if len(line) > 1 else b'/'
            hl = head.lower()
            n = 0
            for h in hl.split(b'\r\n')[1:]:
                if h.startswith(b'content-length:'):
                    n = int(h.split(b':')[1])
            while len(buf) < n:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            buf = buf[n:]
            close = b'connection: close' in hl
            if path == b'/chunked':
                c.sendall(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n')
            elif path == b'/close':
                c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok')
                close = True
            elif path == b'/500':
                c.sendall(b'HTTP/1.1 500 Internal Server Error\r\nContent-Length: 3\r\n\r\nerr')
            else:
                c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
            if close:
                return
    except OSError:
        pass
    finally:
        c.close()

s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', 0))
s.listen(512)
if 'fork' in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(300)
        os._exit(0)
    log(f'forked child {pid}')
print('hello from stdout', flush=True)
log(f'Listening at: http://127.0.0.1:{s.getsockname()[1]} ({os.getpid()})')
while True:
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#;

/// Starts the server of `PY_SERVER` (above); `_mode` is documentation for the reader of a test.
pub fn python_server(_mode: &str, args: &[&str]) -> Result<ServerProcess, String> {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(PY_SERVER).args(args);
    ServerProcess::start_command("py-server", cmd)
}

/// Accepts one connection on a fresh loopback port and hands it to `f` on a
/// thread.
pub fn serve_once(f: impl FnOnce(TcpStream) + Send + 'static) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("local_addr");
    thread::spawn(move || {
        if let Ok((s, _)) = l.accept() {
            f(s);
        }
    });
    addr
}

/// Reads one request head (up to and including the blank line).
pub fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    head
}

/// A server that answers each request head with the next of `responses`
/// and then closes.
pub fn canned(responses: Vec<&'static [u8]>) -> SocketAddr {
    serve_once(move |mut s| {
        for r in responses {
            read_head(&mut s);
            if s.write_all(r).is_err() {
                return;
            }
        }
    })
}
