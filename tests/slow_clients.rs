//! Slow clients against the threaded stages: a client that sends its
//! request head one byte at a time must not hold a thread.
//!
//! Each thread of stage 2 (and of a stage 3 gthread worker) used to be
//! handed a connection as soon as its first bytes arrived, and then wait in
//! a blocking read whose timeout every new byte reset: four clients
//! dripping one byte a second held four threads for as long as they liked.
//! Now the poller reads heads itself and hands a connection to a thread
//! only once its head is complete; a head has `--timeout` in all to
//! arrive. This is a bounded load test (the benchmark-size run, 500
//! clients for 40 s, is in the book), not a timing test: it checks that
//! normal requests are served at all while the slow ones drip.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use wsgi_course::client::Conn;
use wsgi_course::server::ServerProcess;

/// Opens `count` connections that send a request head one byte a second
/// for `drip`, while a normal GET is tried every 200 ms with a 1 s limit.
/// Returns (answered within 1 s, tried).
fn normal_requests_among_slow_ones(
    addr: SocketAddr,
    count: usize,
    drip: Duration,
) -> (usize, usize) {
    let slow_head = b"GET /environ HTTP/1.1\r\nHost: slow\r\nX-Drip: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut slow: Vec<TcpStream> = (0..count)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    assert!(slow.len() > count * 9 / 10, "the slow clients connect");
    let dripper = std::thread::spawn(move || {
        let started = Instant::now();
        let mut i = 0;
        while started.elapsed() < drip {
            for s in &mut slow {
                let _ = s.write_all(&slow_head[i % slow_head.len()..][..1]);
            }
            i += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
        slow
    });
    // Let the first bytes of every slow head arrive first.
    std::thread::sleep(Duration::from_millis(1500));
    let (mut answered, mut tried) = (0, 0);
    let until = Instant::now() + drip.saturating_sub(Duration::from_secs(2));
    while Instant::now() < until {
        tried += 1;
        let t = Instant::now();
        let ok = Conn::connect(addr)
            .and_then(|mut c| {
                c.set_timeout(Duration::from_secs(1));
                c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
                c.read_response(false)
            })
            .is_ok_and(|r| r.status == 200);
        if ok && t.elapsed() <= Duration::from_secs(1) {
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(dripper.join());
    (answered, tried)
}

fn check(name: &str, server: &ServerProcess) {
    let (answered, tried) =
        normal_requests_among_slow_ones(server.addr(), 100, Duration::from_secs(9));
    println!(
        "{name}: {answered} of {tried} normal requests answered within 1 s among 100 slow clients"
    );
    assert!(tried >= 10, "{tried}");
    assert!(
        answered * 100 >= tried * 95,
        "{name}: {answered} of {tried}"
    );
}

#[test]
fn stage2_serves_normal_requests_while_slow_clients_drip() {
    let server = ServerProcess::start(
        "stage2-threads",
        &[
            "apps.lab:app",
            "-b",
            "127.0.0.1:0",
            "--threads",
            "4",
            "--timeout",
            "30",
        ],
    )
    .expect("stage 2 starts");
    check("stage 2, 4 threads", &server);
}

#[test]
fn gthread_workers_serve_normal_requests_while_slow_clients_drip() {
    let server = ServerProcess::start(
        "stage3-prefork",
        &[
            "apps.lab:app",
            "-b",
            "127.0.0.1:0",
            "-w",
            "2",
            "-k",
            "gthread",
            "--threads",
            "4",
            "--timeout",
            "30",
        ],
    )
    .expect("stage 3 starts");
    check("stage 3 gthread, 2 x 4 threads", &server);
}

#[test]
fn a_body_that_trickles_is_cut_off() {
    // The head is complete, so a thread reads the body: a body sent one byte
    // a second must not hold it for ever. After 10 s, a body must average
    // 500 bytes a second (Apache's mod_reqtimeout rule): this one is cut
    // between 10 and 12 s (the 1,000 bytes sent at once buy up to 2 s more).
    let server = ServerProcess::start(
        "stage2-threads",
        &[
            "apps.lab:app",
            "-b",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--timeout",
            "30",
        ],
    )
    .expect("stage 2 starts");
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
        .unwrap();
    s.write_all(&[b'x'; 1000]).unwrap();
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut answer = Vec::new();
    let ended = loop {
        if started.elapsed() > Duration::from_secs(25) {
            break None;
        }
        // One byte a second, as long as the server takes them.
        if s.write_all(b"x").is_err() {
            break Some(started.elapsed());
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut closed = false;
        while Instant::now() < deadline {
            let mut buf = [0u8; 4096];
            match std::io::Read::read(&mut s, &mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        if closed {
            break Some(started.elapsed());
        }
    };
    let text = String::from_utf8_lossy(&answer).to_string();
    println!(
        "the trickling body was cut after {ended:?}: {}",
        text.lines().next().unwrap_or("")
    );
    let ended = ended.expect("the server went on reading a body sent at one byte a second");
    assert!(ended < Duration::from_secs(20), "{ended:?}");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // The one thread is free again.
    assert_eq!(
        wsgi_course::client::get(server.addr(), "/").unwrap().status,
        200
    );
}
