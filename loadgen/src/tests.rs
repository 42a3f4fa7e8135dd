//! The load generator against small servers of the harness' own
//! (`wsgi_course::testutil`): framing, errors, timeouts, counting.

use super::*;
use std::io::Write;
use wsgi_course::testutil::{python_server, read_head, serve_once};

fn cfg(addr: SocketAddr) -> LoadConfig {
    let mut c = LoadConfig::new(addr);
    c.connections = 4;
    c.timeout = Duration::from_secs(5);
    c
}

#[test]
fn request_bytes() {
    let mut c = cfg("127.0.0.1:80".parse().unwrap());
    c.path = "/x?y=1".into();
    assert_eq!(
        c.request_bytes(),
        b"GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n"
    );
    c.method = "POST".into();
    c.body = b"abc".to_vec();
    c.keep_alive = false;
    c.extra_headers = vec![("X-A".into(), "1".into()), ("host".into(), "h".into())];
    assert_eq!(
        c.request_bytes(),
        b"POST /x?y=1 HTTP/1.1\r\nX-A: 1\r\nhost: h\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    );
}

#[test]
fn counts_exactly_n_requests_with_keep_alive() {
    let s = python_server("ok", &[]).unwrap();
    let mut c = cfg(s.addr());
    c.requests = Some(503);
    let r = run_blocking(&c);
    assert_eq!((r.requests, r.errors), (503, 0), "{r}");
    assert_eq!(r.status_counts.get(&200), Some(&503));
    assert_eq!(r.latency.len(), 503);
    assert_eq!(r.bytes, 503 * 40);
    assert!(r.rps() > 0.0 && r.percentile_us(50.0) > 0);
}

#[test]
fn without_keep_alive_and_with_chunked_and_closing_server() {
    let s = python_server("ok", &[]).unwrap();
    // 4 connections on tokio's sockets; 1, alone on its thread, on a
    // blocking socket: the same results.
    for connections in [4, 1] {
        let mut c = cfg(s.addr());
        c.connections = connections;
        c.requests = Some(50);
        c.keep_alive = false;
        let r = run_blocking(&c);
        assert_eq!((r.requests, r.errors), (50, 0), "{connections}: {r}");

        c.keep_alive = true;
        c.path = "/chunked".into();
        let r = run_blocking(&c);
        assert_eq!((r.requests, r.errors), (50, 0), "{connections}: {r}");

        // The server closes after each response: the generator reconnects.
        c.path = "/close".into();
        let r = run_blocking(&c);
        assert_eq!((r.requests, r.errors), (50, 0), "{connections}: {r}");
    }
}

#[test]
fn non_2xx_are_errors() {
    let s = python_server("ok", &[]).unwrap();
    let mut c = cfg(s.addr());
    c.requests = Some(20);
    c.path = "/500".into();
    let r = run_blocking(&c);
    assert_eq!(
        (r.requests, r.errors, r.error_kinds.status),
        (0, 20, 20),
        "{r}"
    );
    assert_eq!(r.status_counts.get(&500), Some(&20));
}

#[test]
fn closed_port_counts_connect_errors() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for connections in [4, 1] {
        let mut c = cfg(addr);
        c.connections = connections;
        c.requests = Some(40);
        let t = Instant::now();
        let r = run_blocking(&c);
        assert_eq!(
            (r.requests, r.errors, r.error_kinds.connect),
            (0, 40, 40),
            "{connections}: {r}"
        );
        assert!(t.elapsed() < Duration::from_secs(5));

        // Duration mode against a dead server backs off instead of spinning.
        c.requests = None;
        c.duration = Some(Duration::from_millis(300));
        let r = run_blocking(&c);
        assert!(r.errors > 0 && r.errors < 4 * 300, "{connections}: {r}");
        assert!(r.elapsed <= Duration::from_millis(300));
    }
}

#[test]
fn duration_mode_and_threads() {
    let s = python_server("ok", &[]).unwrap();
    let mut c = cfg(s.addr());
    c.duration = Some(Duration::from_millis(300));
    c.threads = 2;
    let t = Instant::now();
    let r = run_blocking(&c);
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(r.requests > 0 && r.errors == 0, "{r}");
    assert_eq!(r.threads, 2);
    let j = r.to_json();
    assert_eq!(j["requests"], r.requests);
    assert!(j["latency_us"]["p99"].as_u64().is_some());
}

#[test]
fn hung_server_times_out_and_truncation_is_an_error() {
    // A server that accepts and never answers.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = cfg(l.local_addr().unwrap());
    c.connections = 2;
    c.requests = Some(2);
    c.timeout = Duration::from_millis(200);
    let r = run_blocking(&c);
    assert_eq!((r.errors, r.error_kinds.timeout), (2, 2), "{r}");
    drop(l);

    // A response cut short is a read error, not a success.
    let addr = serve_once(|mut s| {
        read_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    });
    let mut c = cfg(addr);
    c.connections = 1;
    c.requests = Some(1);
    let r = run_blocking(&c);
    assert_eq!((r.requests, r.error_kinds.read), (0, 1), "{r}");

    // Garbage is malformed.
    let addr = serve_once(|mut s| {
        read_head(&mut s);
        let _ = s.write_all(b"SPAM\r\n\r\n");
    });
    let mut c = cfg(addr);
    c.connections = 1;
    c.requests = Some(1);
    let r = run_blocking(&c);
    assert_eq!(r.error_kinds.malformed, 1, "{r}");
    let text = r.to_string();
    assert!(text.contains("Requests/sec"), "{text}");
}

#[test]
fn stale_keep_alive_connection_is_retried() {
    // Answers one request per connection without saying it will close,
    // then closes: the generator must retry on a new connection and
    // count no error.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            read_head(&mut s);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let mut c = cfg(addr);
    c.connections = 1;
    c.requests = Some(20);
    let r = run_blocking(&c);
    assert_eq!((r.requests, r.errors), (20, 0), "{r}");
}

#[test]
fn zero_connections_is_an_empty_report() {
    let mut c = cfg("127.0.0.1:9".parse().unwrap());
    c.connections = 0;
    c.requests = Some(1);
    let r = run_blocking(&c);
    assert_eq!((r.requests, r.errors), (0, 0));
    assert_eq!(r.percentile_us(99.0), 0);
}
