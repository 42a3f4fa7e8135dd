//! The null server: the bound of the ASGI benchmarks on this machine.
//!
//! ```text
//! cargo run --release -p course-bench --bin null-server -- -w 2 -b 127.0.0.1:8000
//! ```
//!
//! Shaped like `stage3-prefork -w 2 -k asgi`: a master binds the socket and
//! forks the workers, each a one-thread tokio runtime accepting from the
//! shared socket and parsing heads with the course's codec (stage 6's I/O
//! thread). But no worker has Python: `GET /` is answered at once,
//! `GET /io?ms=N` after a sleep of N ms on a timerfd, and `GET /ws` becomes
//! a WebSocket that echoes every message with stage 6's frame code
//! (tokio-tungstenite, the same settings). What it serves is what the
//! sockets, the parser, the timers and the load generator cost on this
//! machine, and nothing else: no server that runs Python can beat it. The
//! load generator shares the cores with it, so `/io?ms=10` from 256
//! connections does not reach the arithmetic bound (25,600 a second) even
//! here; how close it gets is the honest target for the real servers.
//!
//! Every response is written whole, like an app's; nothing is cached
//! between requests but the `Date` header's second.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use clap::Parser;
use http_codec::request::{Limits, parse_head};
use http_codec::response::{push_decimal, push_status_and_common_headers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(about = "A server without Python: the bound the ASGI servers are measured against")]
struct Args {
    /// Worker processes.
    #[arg(short = 'w', long = "workers", default_value_t = 2)]
    workers: usize,
    /// The address to listen on (port 0: any free port).
    #[arg(short = 'b', long = "bind", default_value = "127.0.0.1:8000")]
    bind: SocketAddr,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.bind)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let mut children = Vec::new();
    for _ in 0..args.workers.max(1) {
        // SAFETY: no other thread exists yet (no runtime was built in the
        // master), so the child may go on as a normal program.
        match unsafe { libc::fork() } {
            -1 => return Err(io::Error::last_os_error()),
            0 => {
                // A worker dies with its master (the harness stops the master).
                // SAFETY: plain prctl with a signal number.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
                return worker(listener);
            }
            pid => children.push(pid),
        }
    }
    // gunicorn's banner, which the harness reads the port from.
    eprintln!(
        "[null-server] Listening at: http://{addr} ({} workers, no Python)",
        children.len()
    );
    // Wait for the workers; a TERM kills the master and, with it, them.
    for pid in children {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    Ok(())
}

fn worker(listener: TcpListener) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let _ = connection(stream).await;
            });
        }
    })
}

async fn connection(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let limits = Limits::default();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(256);
    loop {
        let (head, used) = loop {
            if let Ok(Some(parsed)) = parse_head(&buf, &limits) {
                break parsed;
            }
            if buf.len() > 64 * 1024 || stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        buf.drain(..used);
        if head.path == b"/ws" {
            return websocket_echo(stream, &head, buf).await;
        }
        let (status, body): (&str, &[u8]) = match head.path.as_slice() {
            b"/" => ("200 OK", b"Hello, World!\n"),
            b"/io" => {
                let ms = head
                    .query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("ms="))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(10);
                precise_sleep(Duration::from_millis(ms)).await?;
                ("200 OK", b"io done\n")
            }
            _ => ("404 Not Found", b"not found\n"),
        };
        // The head stage 6 writes: status, Server, Date, the app's headers.
        out.clear();
        push_status_and_common_headers(&mut out, status.as_bytes(), "null-server");
        out.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\ncontent-length: ");
        push_decimal(&mut out, body.len() as u64);
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
        stream.write_all(&out).await?;
        if !head.keep_alive {
            return Ok(());
        }
    }
}

/// `GET /ws`: the handshake, then every text or binary message sent back
/// as it came, as the lab app's `/ws` does; ping and close are answered by
/// tungstenite. The frames are read and written as stage 6's I/O thread
/// does (the same crate, the same read buffer), so the difference between
/// this and stage 6 is what the app, the hand-over to the loop and back
/// cost.
async fn websocket_echo(
    mut stream: TcpStream,
    head: &http_codec::request::RequestHead,
    leftover: Vec<u8>,
) -> io::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

    let Some(key) = head.header("sec-websocket-key") else {
        stream
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await?;
        return Ok(());
    };
    let mut resp = Vec::with_capacity(160);
    resp.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    resp.extend_from_slice(derive_accept_key(key.trim_ascii()).as_bytes());
    resp.extend_from_slice(b"\r\n\r\n");
    stream.write_all(&resp).await?;
    let mut ws = WebSocketStream::from_partially_read(
        stream,
        leftover,
        Role::Server,
        Some(WebSocketConfig::default().read_buffer_size(8 * 1024)),
    )
    .await;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => ws.send(m).await,
            // tungstenite queued the pong or the closing answer.
            Ok(_) => ws.flush().await,
            Err(_) => break,
        }
        .map_err(io::Error::other)?;
    }
    Ok(())
}

/// Sleeps `d` on a timerfd of its own. tokio's timer fires on whole
/// milliseconds and rounds a sleep up to the next one: `/io?ms=10` took
/// 11.3 ms per request on one connection with it, against 10.6 ms for
/// stage 6 on asyncio's or uvloop's loop, so an app server could beat this
/// "bound" on `/io`. A timerfd fires at the deadline (three more system
/// calls per request: a cost the bound does not care about).
async fn precise_sleep(d: Duration) -> io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: timerfd_create returns a new descriptor or -1.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we own from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let when = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        },
    };
    // SAFETY: a valid timerfd and itimerspec; no old value wanted.
    if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &when, std::ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the AsyncFd owns the descriptor, so it stays open while it is
    // registered and is closed only after the AsyncFd deregisters it.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    }?;
    let _ = fd.readable().await?;
    Ok(())
}
