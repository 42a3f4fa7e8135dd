//! The conformance suite: the same cases, written once, run against every
//! stage. Each stage starts once; its cases run one after another against
//! it, and the test fails with the list of every case that failed.
//!
//! A stage adds itself to `STAGES`.

mod cases;
mod corpus;

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use wsgi_course::server::ServerProcess;

/// How a stage is started for the suite, and what its design allows.
pub struct Stage {
    pub bin: &'static str,
    pub args: &'static [&'static str],
    /// Whether the stage keeps connections open between requests.
    pub keep_alive: bool,
    /// Who faces the client.
    pub front: Front,
}

/// Who parses the client's HTTP.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// The stage itself, with `COMMON` arguments added.
    Direct,
    /// nginx, started by the suite in front of the stage's uwsgi socket
    /// (stage 4). `{socket}` in `args` becomes the socket's path.
    Nginx,
    /// nginx, started by the stage itself (stage 5): its banner names
    /// nginx's address.
    OwnNginx,
}

thread_local! {
    /// Set while a suite runs through nginx (each suite runs its cases on
    /// its own thread): a few cases expect nginx's answer instead.
    pub static VIA_NGINX: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The arguments every stage gets: the lab app, a known body limit.
const COMMON: &[&str] = &[
    "apps.lab:app",
    "--bind",
    "127.0.0.1:0",
    "--limit-request-body",
    "2097152",
];

pub fn run_suite(stage: &Stage) {
    let socket = std::env::temp_dir().join(format!(
        "wsgi-course-conformance-{}-{}.sock",
        stage.bin,
        std::process::id()
    ));
    let socket_text = socket.to_string_lossy().to_string();
    let mut args: Vec<&str> = if stage.front == Front::Direct {
        // An ASGI stage serves the ASGI twin of the lab app (apps/asgi_lab.py:
        // the same routes; /environ shows the environ a WSGI-on-ASGI adapter
        // builds from the scope, so the environ cases check the scope).
        let asgi = stage.bin == "stage6-asgi" || stage.args.contains(&"asgi");
        COMMON
            .iter()
            .map(|a| {
                if asgi && *a == "apps.lab:app" {
                    "apps.asgi_lab:app"
                } else {
                    a
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    args.extend(stage.args.iter().map(|a| {
        if *a == "{socket}" {
            socket_text.as_str()
        } else {
            a
        }
    }));
    let mut server = ServerProcess::start(stage.bin, &args).expect("the server starts");
    let nginx = match stage.front {
        Front::Nginx => {
            match wsgi_course::nginx::start_uwsgi_front(&format!("unix:{socket_text}"), 2 << 20) {
                Some(nginx) => Some(nginx),
                None => return, // nginx is not installed: said on stderr, nothing to check.
            }
        }
        _ => None,
    };
    let addr = nginx.as_ref().map_or_else(|| server.addr(), |n| n.addr);
    VIA_NGINX.set(stage.front != Front::Direct);
    let mut failed = Vec::new();
    for (name, case) in cases::CASES {
        let by_design = !stage.keep_alive && cases::NEEDS_KEEP_ALIVE.contains(name);
        let case: Case = if by_design {
            closes_after_each_response
        } else {
            *case
        };
        let result = catch_unwind(AssertUnwindSafe(|| case(addr)));
        if let Err(panic) = result {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{name}: {msg}"));
        }
        // Whatever a case did, the server must still be up and serving.
        if let Err(e) = wsgi_course::client::get(addr, "/") {
            failed.push(format!(
                "{name}: the server stopped answering afterwards ({e})"
            ));
            break;
        }
    }
    // The raw-request corpus of tests/corpus/, on the same running stage.
    corpus::run_in_suite(
        addr,
        stage.bin,
        stage.front != Front::Direct,
        stage.keep_alive,
        &mut failed,
    );
    assert!(
        server.wait_timeout(Duration::from_millis(1)).is_none(),
        "{} exited during the suite",
        stage.bin
    );
    server.signal(libc::SIGTERM);
    assert!(
        server.wait_timeout(Duration::from_secs(10)).is_some(),
        "{} did not stop on SIGTERM",
        stage.bin
    );
    assert!(
        failed.is_empty(),
        "{}: {} of {} cases failed:\n  {}",
        stage.bin,
        failed.len(),
        cases::CASES.len(),
        failed.join("\n  ")
    );
}

/// The type of one case: it gets the address of a running server.
pub type Case = fn(SocketAddr);

/// What a stage without keep-alive does instead of reusing a connection:
/// it says `Connection: close` and closes, so the client knows to reconnect.
fn closes_after_each_response(addr: SocketAddr) {
    let mut c = wsgi_course::client::Conn::connect(addr).unwrap();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "the connection must be closed"
    );
}

#[test]
fn stage1_single() {
    // Stage 1 closes connections after each response by default; the suite
    // turns keep-alive on to check the keep-alive and pipelining rules too.
    run_suite(&Stage {
        bin: "stage1-single",
        args: &["--keep-alive", "2"],
        keep_alive: true,
        front: Front::Direct,
    });
}

#[test]
fn stage2_threads() {
    // Keep-alive is on by default (2 s); more threads than the suite has
    // clients, so a case that waits never starves the check that follows it.
    run_suite(&Stage {
        bin: "stage2-threads",
        args: &["--threads", "4"],
        keep_alive: true,
        front: Front::Direct,
    });
}

#[test]
fn stage1_single_without_keep_alive() {
    // Stage 1 as it starts by default: one response per connection.
    run_suite(&Stage {
        bin: "stage1-single",
        args: &[],
        keep_alive: false,
        front: Front::Direct,
    });
}

#[test]
fn stage3_prefork_sync() {
    run_suite(&Stage {
        bin: "stage3-prefork",
        args: &["-w", "2"],
        keep_alive: false,
        front: Front::Direct,
    });
}

#[test]
fn stage3_prefork_gthread() {
    run_suite(&Stage {
        bin: "stage3-prefork",
        args: &["-w", "2", "-k", "gthread", "--threads", "4"],
        keep_alive: true,
        front: Front::Direct,
    });
}

#[test]
fn stage4_uwsgi_socket_behind_nginx() {
    // nginx parses HTTP and keeps client connections alive; the workers get
    // uwsgi packets on a unix socket.
    run_suite(&Stage {
        bin: "stage4-uwsgi-socket",
        args: &[
            "--socket",
            "{socket}",
            "--module",
            "apps.lab:app",
            "--processes",
            "2",
            "--limit-request-body",
            "2097152",
            // Room for the 5000-byte request line case; with uWSGI's default
            // of 4096 nginx would answer 502 (tests/stage4.rs shows it).
            "--buffer-size",
            "32768",
        ],
        keep_alive: true,
        front: Front::Nginx,
    });
}

#[test]
fn stage5_nginx() {
    // Stage 5 starts nginx and stage 4 itself, and its banner names nginx's
    // address. `cargo build -p stage5-nginx` does not build stage 4's
    // binary, which stage 5 runs: build it first.
    if wsgi_course::nginx::nginx_binary().is_none() {
        eprintln!("SKIPPED: nginx is not installed (apt-get install nginx)");
        return;
    }
    wsgi_course::server::workspace_bin("stage4-uwsgi-socket");
    run_suite(&Stage {
        bin: "stage5-nginx",
        args: &[
            "apps.lab:app",
            "--listen",
            "127.0.0.1:0",
            // client_max_body_size 2097152, the limit every stage gets.
            "--limit-request-body",
            "2097152",
            "--workers",
            "2",
        ],
        keep_alive: true,
        front: Front::OwnNginx,
    });
}

#[test]
fn stage6_asgi() {
    run_suite(&Stage {
        bin: "stage6-asgi",
        args: &[],
        keep_alive: true,
        front: Front::Direct,
    });
}

#[test]
fn stage3_prefork_asgi() {
    // Stage 3's master with stage 6's loop in each worker (gunicorn's
    // `-k uvicorn.workers.UvicornWorker`), serving the ASGI lab app.
    run_suite(&Stage {
        bin: "stage3-prefork",
        args: &["-w", "2", "-k", "asgi"],
        keep_alive: true,
        front: Front::Direct,
    });
}
