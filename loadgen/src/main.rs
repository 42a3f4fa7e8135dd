//! `loadgen`: the course's load generator, for the labs.
//!
//! ```text
//! cargo run --release --bin loadgen -- http://127.0.0.1:8000/cpu?ms=1 -c 32 -d 10s
//! ```
//!
//! Prints a wrk-like summary (or JSON with `--json`). Mistakes a user can
//! make (a bad URL, a server that is not running) get one sentence on stderr
//! and exit status 1.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use loadgen::LoadConfig;

/// Load an HTTP server with many concurrent clients, like wrk.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version)]
struct Args {
    /// The URL to request: http://HOST[:PORT]/PATH[?QUERY]
    url: String,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 32)]
    connections: usize,
    /// Total number of requests (instead of a duration).
    #[arg(short = 'n', long, conflicts_with = "duration")]
    requests: Option<u64>,
    /// How long to run: 10s, 500ms, 1m (default 10s).
    #[arg(short = 'd', long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Open a new connection for every request (sends Connection: close).
    #[arg(long)]
    no_keep_alive: bool,
    /// Request method.
    #[arg(short = 'm', long, default_value = "GET")]
    method: String,
    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Request body read from a file.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Extra request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Generator threads (each runs its share of the connections).
    #[arg(short = 't', long, default_value_t = 1)]
    threads: usize,
    /// Per-request timeout: 10s, 500ms, ...
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Parses `10s`, `500ms`, `1m`, `2h`, `1.5s` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10s, 500ms or 1m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "us" => n / 1_000_000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a valid duration"))
}

/// The parts of an http:// URL the generator needs.
#[derive(Debug, PartialEq)]
struct Target {
    /// As written, for the Host header (`localhost:8000`).
    authority: String,
    host: String,
    port: u16,
    /// Path and query, at least `/`.
    path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "only http:// URLs are supported, not {scheme}:// ({url})"
            ));
        }
        None => return Err(format!("{url:?} is not a URL like http://127.0.0.1:8000/")),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = match path.split_once('#') {
        Some((p, _)) => p,
        None => path,
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?} has no usable host"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?} has an unclosed [ in its host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("{url:?} has a malformed host")),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("{url:?} has an invalid port {p:?}"))?,
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "{url:?} contains spaces or control characters; percent-encode them"
        ));
    }
    Ok(Target {
        authority: authority.to_string(),
        host,
        port,
        path,
    })
}

fn resolve(t: &Target) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", t.host))?
        .collect();
    // Prefer IPv4: "localhost" servers usually bind 127.0.0.1.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{} resolves to no address", t.host))
}

fn build_config(args: &Args) -> Result<(LoadConfig, Target), String> {
    let target = parse_url(&args.url)?;
    let addr = resolve(&target)?;
    let mut cfg = LoadConfig::new(addr);
    cfg.host = target.authority.clone();
    cfg.path = target.path.clone();
    cfg.method = args.method.clone();
    if cfg.method.is_empty()
        || !cfg
            .method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("{:?} is not a valid HTTP method", args.method));
    }
    if let Some(b) = &args.body {
        cfg.body = b.clone().into_bytes();
    }
    if let Some(p) = &args.body_file {
        cfg.body = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    }
    for h in &args.headers {
        let (n, v) = h
            .split_once(':')
            .ok_or_else(|| format!("header {h:?} is not of the form \"Name: value\""))?;
        let n = n.trim();
        if n.is_empty() || n.bytes().any(|b| b <= b' ' || b == b':' || b >= 0x7f) {
            return Err(format!("header {h:?} has an invalid name"));
        }
        if v.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(format!("header {h:?} contains a line break"));
        }
        cfg.extra_headers
            .push((n.to_string(), v.trim().to_string()));
    }
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    cfg.connections = args.connections;
    cfg.requests = args.requests;
    cfg.duration = match (args.requests, args.duration) {
        (None, None) => Some(loadgen::DEFAULT_DURATION),
        (_, d) => d,
    };
    if args.requests == Some(0) {
        return Err("--requests must be at least 1".into());
    }
    cfg.keep_alive = !args.no_keep_alive;
    cfg.threads = args.threads.max(1);
    cfg.timeout = args.timeout;
    Ok((cfg, target))
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            // --help and --version print and succeed; usage mistakes exit 1
            // like every other mistake.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let (cfg, _target) = match build_config(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(1);
        }
    };
    // Fail early and clearly when nothing listens there.
    if let Err(e) = TcpStream::connect_timeout(&cfg.addr, Duration::from_secs(3)) {
        eprintln!(
            "loadgen: cannot connect to {} ({}): {e}; is the server running?",
            args.url, cfg.addr
        );
        return ExitCode::from(1);
    }
    if !args.json {
        let what = match (cfg.requests, cfg.duration) {
            (Some(n), _) => format!("{n} requests"),
            (None, Some(d)) => format!("{d:?}"),
            (None, None) => String::new(),
        };
        println!("Running {what} test @ {}", args.url);
    }
    let report = loadgen::run_blocking(&cfg);
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("http://127.0.0.1:8000/cpu?ms=1").unwrap();
        assert_eq!(
            t,
            Target {
                authority: "127.0.0.1:8000".into(),
                host: "127.0.0.1".into(),
                port: 8000,
                path: "/cpu?ms=1".into()
            }
        );
        let t = parse_url("http://localhost").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        let t = parse_url("HTTP://[::1]:81?x=1#frag").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 81, "/?x=1")
        );
        for bad in [
            "https://x/",
            "127.0.0.1:8000",
            "http://",
            "http://x:99999/",
            "http://x:/",
            "http://[::1/",
            "http://x/a b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    /// A keep-alive server on a thread answering `ok` to every request.
    fn tiny_server() -> SocketAddr {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { break };
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..i + 4);
                            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                                .is_err()
                            {
                                return;
                            }
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        addr
    }

    fn loadgen(args: &[&str]) -> std::process::Output {
        std::process::Command::new(wsgi_course::server::workspace_bin("loadgen"))
            .args(args)
            .output()
            .unwrap()
    }

    #[test]
    fn cli_runs_and_prints_json() {
        let url = format!("http://{}/x?y=1", tiny_server());
        let out = loadgen(&[&url, "-c", "3", "-n", "100", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (j["requests"].as_u64(), j["errors"].as_u64()),
            (Some(100), Some(0))
        );

        let out = loadgen(&[&url, "-c", "2", "-d", "200ms", "--no-keep-alive"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(text.contains("Requests/sec:"), "{text}");
    }

    #[test]
    fn cli_mistakes_exit_1_with_one_sentence() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let closed_url = format!("http://{closed}/");
        for args in [
            &["https://example.com/"][..],
            &["localhost:8000"],
            &[&closed_url],
            &[&closed_url, "-H", "no colon"],
            &[&closed_url, "-d", "5x"],
            &[&closed_url, "-c", "0"],
        ] {
            let out = loadgen(args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            assert!(!err.trim().is_empty(), "{args:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("").is_err());
    }
}
