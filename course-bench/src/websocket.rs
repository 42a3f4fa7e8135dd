//! The WebSocket echo workload: how many messages a second an ASGI server
//! passes through the app and back.
//!
//! Each client opens a WebSocket to `/ws` of `apps/asgi_lab.py` (an echo),
//! then sends a small text message and waits for its echo, again and again:
//! one message in flight per client, as the HTTP load generator has one
//! request in flight per connection. What is counted is echoed messages per
//! second. A WebSocket message skips what an HTTP request costs a server
//! (no head to parse, no scope, no new app call: the app's coroutine is
//! already running), so this measures the other half of an ASGI server:
//! the `receive`/`send` awaitables and the frames on the socket.
//!
//! The clients run in the benchmark's process, on [`CLIENT_THREADS`]
//! threads, each a tokio runtime that drives its share of them
//! (`tokio-tungstenite`), as the HTTP load generator's connections do: the
//! CPU they use is counted apart, so the server's CPU per message can be
//! read off. (A blocking client per thread cost twice as much CPU per
//! message, on the cores the server needs; one thread for all clients
//! saturates at about 88,000 messages a second, short of what the null
//! server echoes.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use loadgen::LoadReport;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::measurement::{Budget, thread_cpu};

/// The client threads of the benchmark's echo runs.
pub const CLIENT_THREADS: usize = 2;

/// One run of the echo clients, and the CPU time they used.
pub struct EchoRun {
    /// `requests` are the messages echoed (within the time, for a
    /// [`Budget::Time`]); `errors` the clients that failed; `elapsed` from
    /// the moment every client was connected; `latency` the round trip of
    /// each message.
    pub report: LoadReport,
    pub clients_cpu: Duration,
}

/// What one client did.
struct ClientRun {
    echoed: u64,
    failed: bool,
    latency: Histogram<u64>,
}

/// `clients` WebSocket clients on `ws://addr{path}`, each sending
/// `message_len`-byte text messages and waiting for the echo, for `budget`
/// (a number of messages shared out between the clients, or a time), on
/// `threads` threads (the clients shared out between them, like wrk's
/// `-t`).
pub fn echo(
    addr: SocketAddr,
    path: &str,
    clients: usize,
    message_len: usize,
    budget: Budget,
    threads: usize,
) -> EchoRun {
    let clients = clients.max(1);
    let threads = threads.clamp(1, clients);
    let payload: String = "0123456789abcdef"
        .chars()
        .cycle()
        .take(message_len)
        .collect();
    // Every client connected, on every thread, before any clock starts:
    // the handshakes are not what is measured.
    let ready = std::sync::Barrier::new(threads);
    let parts: Vec<(Vec<ClientRun>, Duration, Duration)> = std::thread::scope(|scope| {
        let ready = &ready;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                // The first threads take the remainder, of clients and of
                // messages.
                let share =
                    |n: u64| n / threads as u64 + u64::from((t as u64) < n % threads as u64);
                let mine = share(clients as u64) as usize;
                let budget = match budget {
                    Budget::Requests(n) => Budget::Requests(share(n.max(clients as u64))),
                    time => time,
                };
                let payload = payload.clone();
                scope
                    .spawn(move || clients_on_this_thread(addr, path, mine, payload, budget, ready))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a WebSocket client thread panicked"))
            .collect()
    });
    let elapsed = match budget {
        Budget::Time(d) => d,
        Budget::Requests(_) => parts.iter().map(|p| p.1).max().unwrap_or_default(),
    };
    let mut report = LoadReport {
        requests: 0,
        errors: 0,
        error_kinds: Default::default(),
        status_counts: Default::default(),
        elapsed,
        bytes: 0,
        latency: new_histogram(),
        connections: clients,
        threads,
    };
    let mut clients_cpu = Duration::ZERO;
    for (runs, _, cpu) in &parts {
        clients_cpu += *cpu;
        for r in runs {
            report.requests += r.echoed;
            report.errors += u64::from(r.failed);
            let _ = report.latency.add(&r.latency);
        }
    }
    report.bytes = report.requests * message_len as u64;
    EchoRun {
        report,
        clients_cpu,
    }
}

/// `clients` clients on this thread's own runtime: what each did, the time
/// from the moment all threads' clients were connected, and this thread's
/// CPU time.
fn clients_on_this_thread(
    addr: SocketAddr,
    path: &str,
    clients: usize,
    payload: String,
    budget: Budget,
    ready: &std::sync::Barrier,
) -> (Vec<ClientRun>, Duration, Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot start a tokio runtime");
    let cpu_before = thread_cpu();
    let (runs, elapsed) = runtime.block_on(async {
        let url = format!("ws://{addr}{path}");
        let mut sockets = Vec::with_capacity(clients);
        for _ in 0..clients {
            sockets.push(connect(addr, &url).await);
        }
        ready.wait();
        let start = Instant::now();
        let tasks: Vec<_> = sockets
            .into_iter()
            .enumerate()
            .map(|(i, ws)| {
                let budget = match budget {
                    // The first clients take the remainder.
                    Budget::Requests(n) => {
                        let c = clients as u64;
                        Budget::Requests(n / c + u64::from((i as u64) < n % c))
                    }
                    time => time,
                };
                tokio::spawn(client(ws, payload.clone(), budget, start))
            })
            .collect();
        let mut runs = Vec::with_capacity(clients);
        for t in tasks {
            runs.push(t.await.expect("a WebSocket client panicked"));
        }
        (runs, start.elapsed())
    });
    (runs, elapsed, thread_cpu().saturating_sub(cpu_before))
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds")
}

type Socket = WebSocketStream<TcpStream>;

async fn connect(addr: SocketAddr, url: &str) -> Option<Socket> {
    let opening = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        stream.set_nodelay(true).ok()?;
        let (ws, _response) = tokio_tungstenite::client_async(url, stream).await.ok()?;
        Some(ws)
    };
    tokio::time::timeout(Duration::from_secs(5), opening)
        .await
        .ok()
        .flatten()
}

/// One client: echo until the budget is spent. A failure ends the client,
/// counted.
async fn client(ws: Option<Socket>, payload: String, budget: Budget, start: Instant) -> ClientRun {
    let mut run = ClientRun {
        echoed: 0,
        failed: false,
        latency: new_histogram(),
    };
    let Some(mut ws) = ws else {
        run.failed = true;
        return run;
    };
    let (messages, deadline) = match budget {
        Budget::Requests(n) => (n, None),
        Budget::Time(d) => (u64::MAX, Some(start + d)),
    };
    while run.echoed < messages {
        let sent = Instant::now();
        if deadline.is_some_and(|d| sent >= d) {
            break;
        }
        let trip = tokio::time::timeout(Duration::from_secs(30), round_trip(&mut ws, &payload));
        match trip.await {
            Ok(Ok(())) => {
                let done = Instant::now();
                // An echo that came back after the deadline is not counted
                // (the load generator's rule for a timed run).
                if deadline.is_some_and(|d| done > d) {
                    break;
                }
                run.echoed += 1;
                let _ = run
                    .latency
                    .record(done.duration_since(sent).as_micros() as u64);
            }
            _ => {
                run.failed = true;
                break;
            }
        }
    }
    // Say goodbye (a normal closure) without waiting for the server's
    // close frame.
    let _ = ws.send(Message::Close(None)).await;
    run
}

/// Sends `payload` and reads until its echo arrives (a ping in between is
/// answered by tungstenite itself).
async fn round_trip(ws: &mut Socket, payload: &str) -> Result<(), Error> {
    ws.send(Message::text(payload)).await?;
    loop {
        match ws.next().await.ok_or(Error::ConnectionClosed)?? {
            Message::Text(echo) if echo.as_str() == payload => return Ok(()),
            Message::Text(_) | Message::Binary(_) => {
                return Err(Error::Io(std::io::Error::other(
                    "the echo is not the message sent",
                )));
            }
            Message::Close(_) => return Err(Error::ConnectionClosed),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A WebSocket echo server in this process, one thread per client.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let Ok(mut ws) = tungstenite::accept(stream) else {
                        return;
                    };
                    while let Ok(m) = ws.read() {
                        if m.is_text() && ws.send(m).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn a_number_of_messages_is_shared_out_and_all_echoed() {
        let addr = echo_server();
        let run = echo(addr, "/ws", 4, 16, Budget::Requests(103), 2);
        assert_eq!(run.report.requests, 103);
        assert_eq!(run.report.errors, 0);
        assert_eq!(run.report.latency.len(), 103);
        assert_eq!(run.report.bytes, 103 * 16);
    }

    #[test]
    fn a_timed_run_lasts_its_time() {
        let addr = echo_server();
        let run = echo(
            addr,
            "/ws",
            2,
            16,
            Budget::Time(Duration::from_millis(200)),
            2,
        );
        assert!(run.report.requests > 10, "{}", run.report.requests);
        assert_eq!(run.report.errors, 0);
        assert_eq!(run.report.elapsed, Duration::from_millis(200));
    }

    #[test]
    fn clients_that_cannot_connect_are_errors() {
        // A port nothing listens on.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let run = echo(addr, "/ws", 3, 16, Budget::Requests(10), 2);
        assert_eq!(run.report.requests, 0);
        assert_eq!(run.report.errors, 3);
    }
}
