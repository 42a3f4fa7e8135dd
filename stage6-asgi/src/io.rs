//! The I/O thread: a tokio runtime (one thread) that owns every socket.
//!
//! Each connection is a tokio task: it reads request heads with the course's
//! HTTP/1.1 codec, hands each request to the Python thread as an
//! [`Event::Start`], feeds the request body into the exchange as the app asks
//! for it, and writes what the app's `send()` queued. It never touches Python.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_codec::chunked::ChunkedDecoder;
use http_codec::request::{BodyKind, HttpError, Limits, RequestHead, Version, parse_head};
use http_codec::response::{CONTINUE, error_response};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use wsgi_bridge::logging::{AccessEntry, access_log};

use crate::shared::{
    BODY_READ_AHEAD, Event, Exchange, Inbox, Kind, STATS, Start, WS_READ_AHEAD, WsIn, WsOut,
};

/// What the connection tasks need to know.
pub struct IoConfig {
    pub limits: Limits,
    /// Idle time allowed between requests on one connection; `None`: close
    /// after every response.
    pub keep_alive: Option<Duration>,
    /// How long a client may take to send a request head, or a body the app
    /// waits for, or to take a response.
    pub timeout: Duration,
    /// How long running requests get to finish after the stop.
    pub graceful_timeout: Duration,
    pub server_header: Arc<str>,
}

struct Ctx {
    cfg: IoConfig,
    inbox: Arc<Inbox>,
    live: AtomicUsize,
    all_closed: Notify,
}

/// Runs the I/O thread until a stop: `stop_fd` readable (a signal) or
/// `stop` notified (the Python side: the hooks asked). Then stops accepting,
/// lets running requests finish (up to the graceful timeout), and tells the
/// Python thread with [`Event::Drained`].
pub fn run(
    listener: std::net::TcpListener,
    stop_fd: OwnedFd,
    inbox: Arc<Inbox>,
    cfg: IoConfig,
    stop: Arc<Notify>,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(listener, stop_fd, inbox.clone(), cfg, stop));
    // Whatever happened, the Python loop must not wait for ever.
    inbox.push(Event::Drained);
    // Connection tasks left after the graceful timeout are dropped here.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn serve(
    listener: std::net::TcpListener,
    stop_fd: OwnedFd,
    inbox: Arc<Inbox>,
    cfg: IoConfig,
    stop: Arc<Notify>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    #[allow(deprecated)]
    let stop_fd = AsyncFd::with_interest(stop_fd, tokio::io::Interest::READABLE)?;
    let graceful = cfg.graceful_timeout;
    let ctx = Arc::new(Ctx {
        cfg,
        inbox,
        live: AtomicUsize::new(0),
        all_closed: Notify::new(),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    ctx.live.fetch_add(1, Ordering::Relaxed);
                    let ctx = ctx.clone();
                    let shutdown = shutdown_rx.clone();
                    tokio::spawn(async move {
                        connection(stream, peer, &ctx, shutdown).await;
                        if ctx.live.fetch_sub(1, Ordering::Relaxed) == 1 {
                            ctx.all_closed.notify_one();
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was
                    // taken: not a reason to stop serving.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            ready = stop_fd.readable() => {
                if let Ok(mut guard) = ready {
                    guard.clear_ready();
                }
                break;
            }
            _ = stop.notified() => break,
        }
    }
    drop(listener);
    let _ = shutdown_tx.send(true);
    let live = ctx.live.load(Ordering::Relaxed);
    if live > 0 {
        log::info!("Waiting for {live} connection(s) to finish (up to {graceful:?})");
        let _ = tokio::time::timeout(graceful, async {
            while ctx.live.load(Ordering::Relaxed) > 0 {
                ctx.all_closed.notified().await;
            }
        })
        .await;
    }
    Ok(())
}

/// Bytes read from a socket and not used yet.
struct RBuf {
    data: Vec<u8>,
    start: usize,
}

impl RBuf {
    fn new() -> RBuf {
        RBuf {
            data: Vec::new(),
            start: 0,
        }
    }
    fn bytes(&self) -> &[u8] {
        &self.data[self.start..]
    }
    fn len(&self) -> usize {
        self.data.len() - self.start
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }
    async fn fill(&mut self, stream: &mut TcpStream) -> io::Result<usize> {
        if self.start > 0 && self.start * 2 >= self.data.len() {
            self.data.drain(..self.start);
            self.start = 0;
        }
        if self.data.capacity() - self.data.len() < 4096 {
            self.data.reserve(16 * 1024);
        }
        stream.read_buf(&mut self.data).await
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: &Ctx,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = RBuf::new();
    let mut first = true;
    loop {
        // Read one request head.
        let head = loop {
            if !buf.is_empty() {
                match parse_head(buf.bytes(), &ctx.cfg.limits) {
                    Ok(Some((head, used))) => {
                        buf.consume(used);
                        break head;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        reject(&mut stream, &mut buf, peer, &e, ctx).await;
                        return;
                    }
                }
            }
            let idle = buf.is_empty() && !first;
            if idle && *shutdown.borrow() {
                return;
            }
            let wait = match (idle, ctx.cfg.keep_alive) {
                (true, Some(k)) => k,
                (true, None) => return,
                (false, _) => ctx.cfg.timeout,
            };
            if idle {
                // A busy client sends its next request at once: keep the
                // buffer for it. One that stays idle for a moment gives its
                // buffer back: thousands of idle keep-alive connections cost
                // only their sockets and tasks. (Freeing it after every
                // request cost more in malloc than it saved.)
                let soon = Duration::from_millis(50).min(wait);
                let early = tokio::select! {
                    r = tokio::time::timeout(soon, stream.readable()) => match r {
                        Ok(Ok(())) => true,
                        Ok(Err(_)) => return,
                        Err(_) => false,
                    },
                    _ = shutdown.changed() => return,
                };
                if !early {
                    buf.data = Vec::new();
                    buf.start = 0;
                    let ready = tokio::select! {
                        r = tokio::time::timeout(wait - soon, stream.readable()) => matches!(r, Ok(Ok(()))),
                        _ = shutdown.changed() => false,
                    };
                    if !ready {
                        return;
                    }
                }
            }
            tokio::select! {
                r = tokio::time::timeout(wait, buf.fill(&mut stream)) => match r {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(_)) => {}
                },
                _ = shutdown.changed(), if idle => return,
            }
        };
        first = false;
        if is_websocket(&head) {
            websocket(stream, buf, head, peer, ctx, shutdown).await;
            return;
        }
        let stopping = *shutdown.borrow();
        if !http_exchange(&mut stream, &mut buf, head, peer, ctx, stopping).await {
            return;
        }
    }
}

/// Answers a request that never reached the app, then closes gently.
async fn reject(
    stream: &mut TcpStream,
    buf: &mut RBuf,
    peer: SocketAddr,
    e: &HttpError,
    ctx: &Ctx,
) {
    log::info!(
        "bad request from {}:{}: {} ({})",
        peer.ip(),
        peer.port(),
        e.reason,
        e.status
    );
    let bytes = error_response(e.status, e.reason, &ctx.cfg.server_header);
    let _ = tokio::time::timeout(ctx.cfg.timeout, stream.write_all(&bytes)).await;
    if let Some(log) = access_log() {
        log.write(&AccessEntry {
            remote_addr: &peer.ip().to_string(),
            request_line: "-",
            status: e.status,
            body_bytes: 0,
            referer: None,
            user_agent: None,
        });
    }
    linger(stream, buf).await;
}

/// Stops writing, then reads and drops what the client still sends for a
/// moment: closing with unread bytes sends a reset that can destroy the
/// response in flight.
async fn linger(stream: &mut TcpStream, buf: &mut RBuf) {
    let _ = stream.shutdown().await;
    buf.data.clear();
    buf.start = 0;
    let mut scratch = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let mut total = 0usize;
        while total < (1 << 20) {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// Decodes the request body as it arrives.
enum Body {
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    Done,
}

impl Body {
    /// Moves body bytes from `buf` into `out` (at most `room`); returns
    /// whether the body is complete.
    fn feed(&mut self, buf: &mut RBuf, out: &mut Vec<u8>, room: usize) -> Result<bool, HttpError> {
        match self {
            Body::Done => Ok(true),
            Body::Length(left) => {
                let n = (buf.len() as u64).min(*left).min(room as u64) as usize;
                out.extend_from_slice(&buf.bytes()[..n]);
                buf.consume(n);
                *left -= n as u64;
                if *left == 0 {
                    *self = Body::Done;
                    return Ok(true);
                }
                Ok(false)
            }
            Body::Chunked(dec) => {
                let p = dec.decode(buf.bytes(), out, room)?;
                buf.consume(p.consumed);
                if p.done {
                    *self = Body::Done;
                    return Ok(true);
                }
                Ok(false)
            }
        }
    }
}

/// Serves one HTTP request. Returns whether the connection may carry another.
async fn http_exchange(
    stream: &mut TcpStream,
    buf: &mut RBuf,
    head: RequestHead,
    peer: SocketAddr,
    ctx: &Ctx,
    stopping: bool,
) -> bool {
    let x = Arc::new(Exchange::new(head.version, head.method == "HEAD"));
    let mut body = match head.body {
        BodyKind::Empty => Body::Done,
        BodyKind::Length(n) => Body::Length(n),
        BodyKind::Chunked => Body::Chunked(Box::new(ChunkedDecoder::with_max_body(
            ctx.cfg.limits.max_body,
        ))),
    };
    let expect_continue = head.expect_continue && head.version == Version::Http11;
    let keep_alive = ctx.cfg.keep_alive.is_some() && head.keep_alive && !stopping;
    x.lock().body_done = matches!(body, Body::Done);
    let log_line = access_log().map(|_| {
        (
            format!("{} {} {}", head.method, head.target, head.version.as_str()),
            head.header("referer")
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            head.header("user-agent")
                .map(|v| String::from_utf8_lossy(v).into_owned()),
        )
    });
    ctx.inbox.push(Event::Start(Box::new(Start {
        kind: Kind::Http,
        head,
        client: peer,
        exchange: x.clone(),
        keep_alive,
    })));

    let mut continue_sent = false;
    let mut eof = false;
    let mut truncated = false;
    let mut written = 0u64;
    let mut spare: Vec<u8> = Vec::new();
    let mut chunk = Vec::new();
    let (done, close_after, abort) = loop {
        // Move body bytes to the app, take what it wants written.
        let mut wake = false;
        let mut body_error = None;
        let (want, body_done, out_done, close_after, abort, gone, waiting_body) = {
            let mut s = x.lock();
            if !s.body_done && (s.want_body || !expect_continue) && !eof {
                let room = BODY_READ_AHEAD.saturating_sub(s.body_buffered);
                if room > 0 && !buf.is_empty() {
                    chunk.clear();
                    match body.feed(buf, &mut chunk, room) {
                        Ok(complete) => {
                            if !chunk.is_empty() {
                                s.body_buffered += chunk.len();
                                s.body.push_back(std::mem::take(&mut chunk));
                                wake = true;
                            }
                            if complete {
                                s.body_done = true;
                                wake = true;
                            }
                        }
                        Err(e) => body_error = Some(e),
                    }
                }
            }
            if !spare.is_empty() {
                spare.clear();
            }
            std::mem::swap(&mut s.out, &mut spare);
            wake = wake && s.wake_due();
            (
                s.want_body,
                s.body_done,
                s.out_done,
                s.close_after,
                s.abort,
                s.disconnected,
                s.want_body && !s.body_done,
            )
        };
        if wake {
            ctx.inbox.push(Event::Wake(x.id));
        }
        if truncated {
            body_error = Some(HttpError::new(400, "the request body ended early"));
        }
        if let Some(e) = body_error {
            // A framing error or a body over the limit: the app hears a
            // disconnect; the client gets the error if nothing was written.
            client_gone(&x, ctx);
            if written == 0 {
                reject(stream, buf, peer, &e, ctx).await;
            }
            return false;
        }
        if gone {
            x.lock().io_done = true;
            return false;
        }
        if expect_continue
            && want
            && !continue_sent
            && !body_done
            && written == 0
            && spare.is_empty()
        {
            continue_sent = true;
            if write(stream, CONTINUE, ctx).await.is_err() {
                client_gone(&x, ctx);
                return false;
            }
        }
        if !spare.is_empty() {
            let n = spare.len();
            STATS.writes.fetch_add(1, Ordering::Relaxed);
            if write(stream, &spare, ctx).await.is_err() {
                client_gone(&x, ctx);
                return false;
            }
            written += n as u64;
            let mut s = x.lock();
            s.unsent = s.unsent.saturating_sub(n);
            wake_if_due(&x, ctx, s);
            continue;
        }
        if out_done {
            break (true, close_after, abort);
        }
        // Wait for the app, or for the client.
        let reading_body = !body_done && (want || !expect_continue);
        let room_for_body = x.lock().body_buffered < BODY_READ_AHEAD;
        let can_read =
            !eof && ((reading_body && room_for_body) || (body_done && buf.len() < 64 * 1024));
        tokio::select! {
            _ = x.to_io.notified() => {}
            r = buf.fill(stream), if can_read => match r {
                Ok(0) if !body_done => {
                    // The client ended its side before the whole body came:
                    // an incomplete request (400, as the WSGI stages).
                    truncated = true;
                }
                Ok(0) => {
                    eof = true;
                    let mut s = x.lock();
                    s.client_eof = true;
                    wake_if_due(&x, ctx, s);
                }
                Ok(_) => {}
                Err(_) => {
                    client_gone(&x, ctx);
                    return false;
                }
            },
            _ = tokio::time::sleep(ctx.cfg.timeout), if waiting_body && room_for_body => {
                log::info!("client {}:{} sent no body for {:?}: closing", peer.ip(), peer.port(), ctx.cfg.timeout);
                client_gone(&x, ctx);
                return false;
            }
        }
    };
    let _ = done;
    let (status, body_bytes) = {
        let mut s = x.lock();
        s.io_done = true;
        let r = (s.status, s.body_bytes);
        wake_if_due(&x, ctx, s);
        r
    };
    if let (Some(log), Some((line, referer, agent))) = (access_log(), &log_line) {
        log.write(&AccessEntry {
            remote_addr: &peer.ip().to_string(),
            request_line: line,
            status,
            body_bytes,
            referer: referer.as_deref(),
            user_agent: agent.as_deref(),
        });
    }
    if abort {
        // The app failed mid-response: close without ending the body, so the
        // client sees it incomplete.
        return false;
    }
    // The app may not have read the whole body: read and drop the rest (up
    // to 1 MiB), or close.
    if !matches!(body, Body::Done) {
        if expect_continue && !continue_sent {
            return false;
        }
        let mut dropped = 0usize;
        let mut sink = Vec::new();
        let finished = tokio::time::timeout(ctx.cfg.timeout, async {
            loop {
                sink.clear();
                match body.feed(buf, &mut sink, 1 << 20) {
                    Ok(true) => return true,
                    Ok(false) => {}
                    Err(_) => return false,
                }
                dropped += sink.len();
                if dropped > (1 << 20) {
                    return false;
                }
                match buf.fill(stream).await {
                    Ok(0) | Err(_) => return false,
                    Ok(_) => {}
                }
            }
        })
        .await
        .unwrap_or(false);
        if !finished {
            return false;
        }
    }
    if close_after || eof {
        if !buf.is_empty() || eof {
            let _ = stream.shutdown().await;
        } else {
            linger(stream, buf).await;
        }
        return false;
    }
    keep_alive
}

fn client_gone(x: &Exchange, ctx: &Ctx) {
    let mut s = x.lock();
    s.disconnected = true;
    s.io_done = true;
    wake_if_due(x, ctx, s);
}

/// Sends `Event::Wake` if the Python side waits for something now there.
fn wake_if_due(x: &Exchange, ctx: &Ctx, mut s: std::sync::MutexGuard<'_, crate::shared::XState>) {
    if s.wake_due() {
        drop(s);
        ctx.inbox.push(Event::Wake(x.id));
    }
}

async fn write(stream: &mut TcpStream, bytes: &[u8], ctx: &Ctx) -> io::Result<()> {
    match tokio::time::timeout(ctx.cfg.timeout, stream.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

// ---------------------------------------------------------------------------
// WebSocket.

fn has_token(head: &RequestHead, name: &str, token: &str) -> bool {
    head.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .any(|(_, v)| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
}

/// A request that asks to become a WebSocket (RFC 6455 4.1).
fn is_websocket(head: &RequestHead) -> bool {
    has_token(head, "upgrade", "websocket") && has_token(head, "connection", "upgrade")
}

/// Why a WebSocket upgrade is refused, if it is.
fn check_upgrade(head: &RequestHead) -> Option<(u16, &'static str)> {
    if head.method != "GET" || head.version != Version::Http11 {
        return Some((400, "a WebSocket handshake is a GET on HTTP/1.1"));
    }
    if head.header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Some((
            426,
            "unsupported Sec-WebSocket-Version (this server speaks 13)",
        ));
    }
    let key_ok = head.header("sec-websocket-key").is_some_and(|k| {
        let k = k.trim_ascii();
        k.len() == 24
            && k.ends_with(b"==")
            && k[..22]
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    });
    if !key_ok {
        return Some((400, "missing or invalid Sec-WebSocket-Key"));
    }
    if head.body != BodyKind::Empty {
        return Some((400, "a WebSocket handshake has no body"));
    }
    None
}

async fn websocket(
    mut stream: TcpStream,
    mut buf: RBuf,
    head: RequestHead,
    peer: SocketAddr,
    ctx: &Ctx,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Some((status, why)) = check_upgrade(&head) {
        log::info!(
            "refused WebSocket upgrade from {}:{}: {why}",
            peer.ip(),
            peer.port()
        );
        let mut resp = error_response(status, why, &ctx.cfg.server_header);
        if status == 426 {
            // Insert the version the client should use before the blank line.
            let at = resp
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or(resp.len());
            resp.splice(at..at, b"\r\nSec-WebSocket-Version: 13".iter().copied());
        }
        let _ = write_plain(&mut stream, &resp, ctx).await;
        linger(&mut stream, &mut buf).await;
        return;
    }
    let key = head
        .header("sec-websocket-key")
        .map(|k| k.trim_ascii().to_vec())
        .unwrap_or_default();
    let target = head.target.clone();
    let x = Arc::new(Exchange::new(head.version, false));
    ctx.inbox.push(Event::Start(Box::new(Start {
        kind: Kind::WebSocket,
        head,
        client: peer,
        exchange: x.clone(),
        keep_alive: false,
    })));

    // Wait for the app's answer: accept, or close (refusal).
    let accept = loop {
        let first = {
            let mut s = x.lock();
            let first = s.ws_out.pop_front();
            if first.is_none() && s.out_done {
                Some(WsOut::Close {
                    code: 1000,
                    reason: String::new(),
                })
            } else {
                first
            }
        };
        match first {
            Some(WsOut::Accept {
                subprotocol,
                headers,
            }) => break (subprotocol, headers),
            Some(_) => {
                // Closed (or failed) before accepting: refuse the handshake.
                let status = match x.lock().status {
                    500 => 500,
                    _ => 403,
                };
                let msg = if status == 500 {
                    "the app failed"
                } else {
                    "the app refused the WebSocket"
                };
                let _ = write_plain(
                    &mut stream,
                    &error_response(status, msg, &ctx.cfg.server_header),
                    ctx,
                )
                .await;
                ws_access(peer, &target, status);
                let mut s = x.lock();
                s.io_done = true;
                s.disconnected = true;
                return;
            }
            None => {}
        }
        let mut probe = [0u8; 1];
        tokio::select! {
            _ = x.to_io.notified() => {}
            r = stream.peek(&mut probe) => {
                if matches!(r, Ok(0) | Err(_)) {
                    // The client left before the app answered.
                    ws_gone(&x, ctx, 1006);
                    return;
                }
                // A client must wait for the 101 before sending frames; one
                // that does not is read after the handshake.
                x.to_io.notified().await;
            }
        }
    };
    let (subprotocol, headers) = accept;
    let mut resp = Vec::with_capacity(256);
    resp.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    resp.extend_from_slice(
        tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key).as_bytes(),
    );
    resp.extend_from_slice(b"\r\n");
    if let Some(p) = &subprotocol {
        resp.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        resp.extend_from_slice(p.as_bytes());
        resp.extend_from_slice(b"\r\n");
    }
    resp.extend_from_slice(b"Server: ");
    resp.extend_from_slice(ctx.cfg.server_header.as_bytes());
    resp.extend_from_slice(b"\r\n");
    for (n, v) in &headers {
        resp.extend_from_slice(n);
        resp.extend_from_slice(b": ");
        resp.extend_from_slice(v);
        resp.extend_from_slice(b"\r\n");
    }
    resp.extend_from_slice(b"\r\n");
    if write_plain(&mut stream, &resp, ctx).await.is_err() {
        ws_gone(&x, ctx, 1006);
        return;
    }
    ws_access(peer, &target, 101);
    let leftover = buf.bytes().to_vec();
    let mut ws = WebSocketStream::from_partially_read(
        stream,
        leftover,
        Role::Server,
        // tungstenite zeroes its read buffer before each read: the default
        // 128 KiB made memset the I/O thread's biggest cost (perf).
        Some(WebSocketConfig::default().read_buffer_size(8 * 1024)),
    )
    .await;

    let mut closing: Option<tokio::time::Instant> = None;
    let mut stopping = false;
    loop {
        let full = x.lock().ws_in.len() >= WS_READ_AHEAD;
        let close_deadline = closing
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600 * 24 * 365));
        tokio::select! {
            msg = ws.next(), if !full => {
                let event = match msg {
                    Some(Ok(Message::Text(t))) => WsIn::Text(t.as_str().to_owned()),
                    Some(Ok(Message::Binary(b))) => WsIn::Binary(b.to_vec()),
                    Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) | Some(Ok(Message::Frame(_))) => {
                        // tungstenite queued the pong; send it now.
                        let _ = ws.flush().await;
                        continue;
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame
                            .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))
                            .unwrap_or((1005, String::new()));
                        // tungstenite answers the close; flush it.
                        let _ = ws.flush().await;
                        ws_push(&x, ctx, WsIn::Closed { code, reason });
                        break;
                    }
                    Some(Err(_)) | None => {
                        ws_gone(&x, ctx, 1006);
                        break;
                    }
                };
                ws_push(&x, ctx, event);
            }
            _ = x.to_io.notified() => {
                let outs: Vec<WsOut> = {
                    let mut s = x.lock();
                    s.ws_out.drain(..).collect()
                };
                let mut sent = 0usize;
                for out in outs {
                    let r = match out {
                        WsOut::Text(t) => {
                            sent += t.len();
                            ws.feed(Message::text(t)).await
                        }
                        WsOut::Binary(b) => {
                            sent += b.len();
                            ws.feed(Message::binary(b)).await
                        }
                        WsOut::Close { code, reason } => {
                            closing = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                            ws.feed(Message::Close(Some(CloseFrame {
                                code: CloseCode::from(code),
                                reason: reason.into(),
                            })))
                            .await
                        }
                        WsOut::Accept { .. } => Ok(()),
                    };
                    if r.is_err() {
                        break;
                    }
                }
                if ws.flush().await.is_err() && closing.is_none() {
                    ws_gone(&x, ctx, 1006);
                    break;
                }
                let mut s = x.lock();
                s.unsent = s.unsent.saturating_sub(sent);
                wake_if_due(&x, ctx, s);
            }
            _ = tokio::time::sleep_until(close_deadline), if closing.is_some() => {
                ws_gone(&x, ctx, 1006);
                break;
            }
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                // The server is going away: 1012 (service restart), as uvicorn.
                let _ = ws.send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Restart,
                    reason: "server shutting down".into(),
                }))).await;
                closing = Some(tokio::time::Instant::now() + Duration::from_secs(2));
            }
        }
    }
    x.lock().io_done = true;
}

fn ws_access(peer: SocketAddr, target: &str, status: u16) {
    if let Some(log) = access_log() {
        log.write(&AccessEntry {
            remote_addr: &peer.ip().to_string(),
            request_line: &format!("GET {target} HTTP/1.1 (WebSocket)"),
            status,
            body_bytes: 0,
            referer: None,
            user_agent: None,
        });
    }
}

fn ws_push(x: &Exchange, ctx: &Ctx, event: WsIn) {
    if !matches!(event, WsIn::Closed { .. }) {
        STATS.ws_messages.fetch_add(1, Ordering::Relaxed);
    }
    let mut s = x.lock();
    s.ws_in.push_back(event);
    wake_if_due(x, ctx, s);
}

fn ws_gone(x: &Exchange, ctx: &Ctx, code: u16) {
    let mut s = x.lock();
    let already = s.ws_in.iter().any(|m| matches!(m, WsIn::Closed { .. }));
    if !already {
        s.ws_in.push_back(WsIn::Closed {
            code,
            reason: String::new(),
        });
    }
    s.disconnected = true;
    s.io_done = true;
    wake_if_due(x, ctx, s);
}

async fn write_plain(stream: &mut TcpStream, bytes: &[u8], ctx: &Ctx) -> io::Result<()> {
    match tokio::time::timeout(ctx.cfg.timeout, stream.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}
