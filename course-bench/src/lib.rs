//! The benchmarks' shared parts: which servers are compared
//! ([`servers`]), on which workloads (here), how one measurement is taken
//! ([`measurement`]), and the file the measurements go to ([`results`]).
//!
//! `benches/stages.rs` runs every workload against every server under
//! criterion and leaves, besides criterion's own files, a summary with what
//! criterion does not know (latency percentiles, CPU time, memory) in
//! `target/bench-results.json`. The `bench-report` binary turns that file
//! into the book's results page.
//!
//! A server is one line of [`servers::servers`]: a name, and how to start
//! it. The course's stages are workspace binaries started with
//! `-b 127.0.0.1:0`; the peers (gunicorn, uWSGI, granian) are found on
//! `PATH` or as Python modules, and skipped, with a line saying how to
//! install them, when absent.

pub mod chart;
pub mod idle;
pub mod measurement;
pub mod results;
pub mod servers;
pub mod websocket;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The app every server serves: all workloads are routes of it.
pub const APP: &str = "apps.lab:app";
/// The same routes for the ASGI servers (stage 6, `-k asgi`, uvicorn,
/// granian's ASGI interface, hypercorn): `apps/asgi_lab.py`.
pub const ASGI_APP: &str = "apps.asgi_lab:app";

// ANCHOR: settings
/// What every server is given, from the environment (defaults in brackets).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `BENCH_CONNECTIONS` [32]: concurrent keep-alive clients.
    pub connections: usize,
    /// `BENCH_WORKERS` [2]: worker processes of every prefork server (the
    /// cores of a lab machine). Stages 1 and 2 are one process by design.
    pub workers: usize,
    /// `BENCH_THREADS` [4]: threads per process of the threaded servers
    /// (stage 2, stage 3 gthread, gunicorn gthread).
    pub threads: usize,
    /// `BENCH_QUICK=1` (or criterion's `--quick`): short runs for class.
    pub quick: bool,
    /// `BENCH_PATIENCE` [30 s; quick: 2 s]: how long, per benchmark, to
    /// wait for other programs to leave the cores alone before running
    /// again a run they disturbed. 0: never wait.
    pub patience: Duration,
    /// `BENCH_IDLE_CONNECTIONS` [10000]: idle keep-alive connections opened
    /// to each ASGI server to weigh one ([`idle`]).
    pub idle_connections: usize,
}
// ANCHOR_END: settings

impl Settings {
    pub fn from_env() -> Settings {
        let number = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        let flag = |name: &str| {
            std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
        };
        let quick = flag("BENCH_QUICK") || std::env::args().any(|a| a == "--quick");
        let patience = std::env::var("BENCH_PATIENCE")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(if quick { 2 } else { 30 });
        Settings {
            connections: number("BENCH_CONNECTIONS", 32),
            workers: number("BENCH_WORKERS", 2),
            threads: number("BENCH_THREADS", 4),
            quick,
            patience: Duration::from_secs(patience),
            idle_connections: number("BENCH_IDLE_CONNECTIONS", 10_000),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "connections": self.connections,
            "workers": self.workers,
            "threads": self.threads,
            "quick": self.quick,
            "patience_s": self.patience.as_secs(),
            "idle_connections": self.idle_connections,
        })
    }
}

// ANCHOR: workloads
/// One kind of request, sent again and again.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Criterion's group name, and the key in the results.
    pub id: &'static str,
    pub method: &'static str,
    /// A route of `apps/lab.py`.
    pub path: &'static str,
    /// Bytes of request body (sent as `x`s).
    pub body: usize,
    pub about: &'static str,
    /// Concurrent connections, when not the settings' (0).
    pub connections: usize,
    /// Only for the ASGI servers (a load the WSGI servers would take
    /// minutes to get through at their pace, for a figure already known;
    /// or a protocol they do not speak).
    pub asgi_only: bool,
    pub kind: Kind,
}

/// What a workload's clients speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// HTTP requests from the load generator (`loadgen`).
    Http,
    /// WebSocket messages on `path`, each `body` bytes of text, echoed
    /// ([`websocket`]): throughput in messages.
    WebSocket,
}

impl Workload {
    /// What its throughput counts.
    pub fn unit(&self) -> &'static str {
        match self.kind {
            Kind::Http => "requests",
            Kind::WebSocket => "messages",
        }
    }
}

pub const WORKLOADS: &[Workload] = &[
    Workload {
        id: "hello",
        method: "GET",
        path: "/",
        body: 0,
        about: "`GET /`: Hello, World! (what the server itself costs)",
        connections: 0,
        asgi_only: false,
        kind: Kind::Http,
    },
    Workload {
        id: "cpu",
        method: "GET",
        path: "/cpu?ms=1",
        body: 0,
        about: "`GET /cpu?ms=1`: 1 ms of pure-Python work (holds the GIL)",
        connections: 0,
        asgi_only: false,
        kind: Kind::Http,
    },
    Workload {
        id: "io",
        method: "GET",
        path: "/io?ms=10",
        body: 0,
        about: "`GET /io?ms=10`: `time.sleep(0.01)`, like waiting on a database (releases the GIL)",
        connections: 0,
        asgi_only: false,
        kind: Kind::Http,
    },
    Workload {
        id: "bytes64k",
        method: "GET",
        path: "/bytes?n=65536",
        body: 0,
        about: "`GET /bytes?n=65536`: a 64 KiB response",
        connections: 0,
        asgi_only: false,
        kind: Kind::Http,
    },
    Workload {
        id: "echo64k",
        method: "POST",
        path: "/echo",
        body: 64 * 1024,
        about: "`POST /echo` with 64 KiB: the upload read through `wsgi.input` and sent back",
        connections: 0,
        asgi_only: false,
        kind: Kind::Http,
    },
    Workload {
        id: "io256",
        method: "GET",
        path: "/io?ms=10",
        body: 0,
        about: "`GET /io?ms=10` from 256 connections at once, `asyncio.sleep(0.01)` (what an event loop is for; ASGI servers only; the bound is 25,600 requests/s)",
        connections: 256,
        asgi_only: true,
        kind: Kind::Http,
    },
    Workload {
        id: "wsecho",
        method: "GET",
        path: "/ws",
        body: 16,
        about: "WebSocket echo on `/ws`, 32 clients: a 16-byte text message and its echo, again and again (messages per second; ASGI servers only)",
        connections: 32,
        asgi_only: true,
        kind: Kind::WebSocket,
    },
];
// ANCHOR_END: workloads

pub fn workload(id: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.id == id)
}

/// Criterion's filter (`cargo bench --bench stages -- FILTER`), for what
/// runs outside criterion: the first argument that is neither an option
/// nor an option's value; a regex, or the whole id with `--exact`.
pub enum Filter {
    All,
    Exact(String),
    Regex(regex::Regex),
}

impl Filter {
    pub fn from_args() -> Filter {
        Filter::parse(&std::env::args().skip(1).collect::<Vec<_>>())
    }

    pub fn parse(args: &[String]) -> Filter {
        // criterion's options that take a value (`--name VALUE`).
        const WITH_VALUE: &[&str] = &[
            "-c",
            "--color",
            "--colour",
            "-s",
            "--save-baseline",
            "-b",
            "--baseline",
            "--baseline-lenient",
            "--format",
            "--profile-time",
            "--load-baseline",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--plotting-backend",
            "--output-format",
        ];
        let exact = args.iter().any(|a| a == "--exact");
        let mut pattern = None;
        let mut args = args.iter();
        while let Some(a) = args.next() {
            if WITH_VALUE.contains(&a.as_str()) {
                args.next();
            } else if !a.starts_with('-') && pattern.is_none() {
                pattern = Some(a.clone());
            }
        }
        match pattern {
            None => Filter::All,
            Some(p) if exact => Filter::Exact(p),
            Some(p) => regex::Regex::new(&p).map_or(Filter::All, Filter::Regex),
        }
    }

    pub fn matches(&self, id: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Exact(e) => e == id,
            Filter::Regex(r) => r.is_match(id),
        }
    }
}

/// How long a benchmark has run, for progress lines.
pub fn since(t: Instant) -> String {
    format!("{:.1}s", t.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criterion_filters() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let f = Filter::parse(&args(&["--bench"]));
        assert!(f.matches("idle/stage6"));
        let f = Filter::parse(&args(&["^(wsecho|idle)/", "--bench"]));
        assert!(f.matches("idle/uvicorn") && f.matches("wsecho/stage6"));
        assert!(!f.matches("hello/stage6"));
        let f = Filter::parse(&args(&["--sample-size", "20", "stage3", "--bench"]));
        assert!(f.matches("idle/stage3-asgi") && !f.matches("idle/uvicorn"));
        let f = Filter::parse(&args(&["--exact", "idle/stage6"]));
        assert!(f.matches("idle/stage6") && !f.matches("idle/stage6x"));
    }
}
