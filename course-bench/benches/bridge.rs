//! One request inside a worker, without the network: what `wsgi-bridge`
//! costs on top of the app itself.
//!
//! ```text
//! cargo bench --bench bridge
//! BENCH_QUICK=1 cargo bench --bench bridge
//! ```
//!
//! All in this process, with the hello app (`apps/hello.py`), on the
//! request the load generator sends:
//!
//! - `python_call`: the floor. The app called with a ready `environ` and a
//!   do-nothing `start_response` written in Python, its body taken. No
//!   server can serve the app for less.
//! - `python_server`: for comparison, the same work (environ, the call,
//!   the response head) written in Python, the way a pure-Python server
//!   does it, minus parsing, checks and I/O.
//! - `parse_head`: the HTTP/1.1 request head parsed (httparse and the checks).
//! - `environ`: the `environ` dict built for it.
//! - `serve_one`: the whole path of `HttpConnection::serve_one` over a unix
//!   socket pair: the request is written into one end, served from the
//!   other (read, parse, environ, app, `start_response`, response written),
//!   and the response read back.
//! - `socketpair`: the same bytes through the same socket pair with nobody
//!   serving them: the system calls `serve_one` cannot avoid.
//!
//! The cost of one request inside a worker is `serve_one` minus
//! `socketpair`; the results page compares it with `python_call`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use loadgen::LoadConfig;
use pyo3::prelude::*;
use wsgi_bridge::conn::Stream;
use wsgi_bridge::embed::{self, AppSource, PythonSetup};
use wsgi_bridge::hooks::NoHooks;
use wsgi_bridge::http::request::{Limits, RequestHead, parse_head};
use wsgi_bridge::serve::{HttpConnection, Next};
use wsgi_bridge::wsgi::call::WsgiApp;
use wsgi_bridge::wsgi::environ::{self, Peer, ServerInfo};
use wsgi_course::server::repo_root;

/// What every benchmark here works on: the hello app loaded in this
/// process, and the load generator's request, parsed once.
struct Fixture {
    app: Py<PyAny>,
    wsgi_app: WsgiApp,
    info: ServerInfo,
    request: Vec<u8>,
    limits: Limits,
    peer: Peer,
    head: RequestHead,
}

impl Fixture {
    fn new() -> Fixture {
        let setup = PythonSetup {
            chdir: repo_root(),
            pythonpath: Vec::new(),
            virtualenv: None,
        };
        embed::start_python(&setup).unwrap_or_else(|e| panic!("cannot start Python: {e}"));
        let source = AppSource::parse_spec("apps.hello:application").expect("a valid spec");
        let app = Python::attach(|py| embed::load_app(py, &source))
            .unwrap_or_else(|e| panic!("cannot load apps/hello.py: {e}"));
        let info = ServerInfo {
            server_name: "127.0.0.1".into(),
            server_port: "8000".into(),
            script_name: String::new(),
            url_scheme: "http",
            multithread: false,
            multiprocess: false,
        };
        let wsgi_app =
            Python::attach(|py| WsgiApp::new(py, app.clone_ref(py), info.clone(), "bench"))
                .unwrap_or_else(|e| panic!("cannot prepare the app: {e}"));
        let request =
            LoadConfig::new("127.0.0.1:8000".parse().expect("an address")).request_bytes();
        let limits = Limits::default();
        let peer = Peer {
            addr: "127.0.0.1".into(),
            port: "40000".into(),
        };
        let (head, _) = parse_head(&request, &limits)
            .ok()
            .flatten()
            .expect("the load generator's request parses");
        Fixture {
            app,
            wsgi_app,
            info,
            request,
            limits,
            peer,
            head,
        }
    }
}

type Group<'a> = BenchmarkGroup<'a, WallTime>;

fn bridge(c: &mut Criterion) {
    let fx = Fixture::new();
    let mut group = c.benchmark_group("bridge");
    group.throughput(Throughput::Elements(1));
    python_call(&mut group, &fx);
    python_server(&mut group, &fx);
    group.bench_function("parse_head", |b| {
        b.iter(|| parse_head(std::hint::black_box(&fx.request), &fx.limits))
    });
    build_environ(&mut group, &fx);
    serve_one(&mut group, &fx);
    socketpair(&mut group, &fx);
    group.finish();

    // Python objects are released with the GIL, before the interpreter goes.
    Python::attach(|_py| drop(fx));
}

// ANCHOR: floor
/// The floor: the app called with a ready `environ` and a do-nothing
/// `start_response` written in Python, its body taken.
fn python_call(group: &mut Group<'_>, fx: &Fixture) {
    group.bench_function("python_call", |b| {
        Python::attach(|py| {
            let none = py.None().into_bound(py);
            let template = environ::template(py, &fx.info, &none).expect("a template");
            let env =
                environ::build(py, &template, &fx.head, &fx.peer, "", &none).expect("an environ");
            let start_response = py
                .eval(c"lambda status, headers, exc_info=None: None", None, None)
                .expect("a lambda");
            let app = fx.app.bind(py);
            b.iter(|| {
                let body = app.call1((&env, &start_response)).expect("the app answers");
                let mut n = 0;
                for chunk in body.try_iter().expect("an iterable") {
                    n += chunk.expect("a chunk").len().expect("bytes");
                }
                n
            });
        });
    });
}
// ANCHOR_END: floor

// ANCHOR: python_server
/// The same work as the bridge's (environ, the call, the response head)
/// written in Python, as a pure-Python server does it ([`PYTHON_SERVER`]).
fn python_server(group: &mut Group<'_>, fx: &Fixture) {
    group.bench_function("python_server", |b| {
        Python::attach(|py| {
            let none = py.None().into_bound(py);
            let template = environ::template(py, &fx.info, &none).expect("a template");
            let code = std::ffi::CString::new(PYTHON_SERVER).expect("no NUL byte");
            let module =
                pyo3::types::PyModule::from_code(py, &code, c"python_server.py", c"python_server")
                    .expect("the Python server step compiles");
            let serve = module.getattr("serve").expect("serve()");
            let app = fx.app.bind(py);
            b.iter(|| {
                serve
                    .call1((app, &template, &none))
                    .expect("a response")
                    .len()
                    .expect("bytes")
            });
        });
    });
}
// ANCHOR_END: python_server

/// The `environ` dict built for the request, as the server builds it.
fn build_environ(group: &mut Group<'_>, fx: &Fixture) {
    group.bench_function("environ", |b| {
        Python::attach(|py| {
            let none = py.None().into_bound(py);
            // What the server uses for an HTTP request: its template, and
            // the client's address made into strings by the connection.
            let template = environ::http_template(py, &fx.info, &none).expect("a template");
            let peer = environ::PeerStrings::new(py, &fx.peer);
            b.iter(|| {
                environ::build_for(py, &template, &fx.head, &peer, "", &none).map(|d| d.len())
            });
        });
    });
}

// ANCHOR: serve_one
/// The whole of `HttpConnection::serve_one` over a unix socket pair: the
/// request written into one end, served from the other, the response read.
fn serve_one(group: &mut Group<'_>, fx: &Fixture) {
    group.bench_function("serve_one", |b| {
        let (mut client, server) = UnixStream::pair().expect("a socket pair");
        let mut conn = HttpConnection::new(Stream::Unix(server), fx.peer.clone());
        let mut response = vec![0u8; 64 * 1024];
        b.iter(|| {
            client
                .write_all(&fx.request)
                .expect("the request is written");
            let next = conn.serve_one(&fx.wsgi_app, &fx.limits, true, &NoHooks);
            assert_eq!(next, Next::KeepAlive);
            // The whole response was written before serve_one returned.
            client.read(&mut response).expect("a response")
        });
    });
}
// ANCHOR_END: serve_one

/// The same bytes through the same socket pair with nobody serving them:
/// the system calls `serve_one` cannot avoid.
fn socketpair(group: &mut Group<'_>, fx: &Fixture) {
    group.bench_function("socketpair", |b| {
        let (mut client, mut server) = UnixStream::pair().expect("a socket pair");
        let canned = canned_response(&fx.wsgi_app, &fx.request, &fx.limits, &fx.peer);
        let mut buf = vec![0u8; 64 * 1024];
        b.iter(|| {
            client.write_all(&fx.request).expect("written");
            let n = server.read(&mut buf).expect("read");
            server.write_all(&canned).expect("written");
            client.read(&mut buf).expect("read") + n
        });
    });
}

/// What a server written in Python does for the same request once it is
/// parsed: the same environ, a `start_response` that records, the head
/// formatted. No parsing, no checks, no I/O: less than `serve_one` does.
const PYTHON_SERVER: &str = r#"
def serve(app, template, wsgi_input):
    env = template.copy()
    env["REQUEST_METHOD"] = "GET"
    env["PATH_INFO"] = "/"
    env["QUERY_STRING"] = ""
    env["RAW_URI"] = env["REQUEST_URI"] = "/"
    env["SERVER_PROTOCOL"] = "HTTP/1.1"
    env["REMOTE_ADDR"] = "127.0.0.1"
    env["REMOTE_PORT"] = "40000"
    env["wsgi.input"] = wsgi_input
    env["HTTP_HOST"] = "127.0.0.1:8000"
    started = []
    def start_response(status, headers, exc_info=None):
        started[:] = [status, headers]
    body = b"".join(app(env, start_response))
    status, headers = started
    head = "HTTP/1.1 %s\r\n%s\r\n" % (status, "".join("%s: %s\r\n" % h for h in headers))
    return head.encode("latin-1") + body
"#;

/// The response `serve_one` writes, for the socket-pair baseline.
fn canned_response(app: &WsgiApp, request: &[u8], limits: &Limits, peer: &Peer) -> Vec<u8> {
    let (mut client, server) = UnixStream::pair().expect("a socket pair");
    let mut conn = HttpConnection::new(Stream::Unix(server), peer.clone());
    client.write_all(request).expect("written");
    conn.serve_one(app, limits, true, &NoHooks);
    let mut buf = vec![0u8; 64 * 1024];
    let n = client.read(&mut buf).expect("a response");
    buf.truncate(n);
    buf
}

fn config() -> Criterion {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let c = Criterion::default();
    let c = if quick {
        c.warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(1))
    } else {
        c
    };
    c.configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = bridge
}
criterion_main!(benches);
