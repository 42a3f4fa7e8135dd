//! One connection: its read buffer, its loop over requests, and closing it
//! gently.

use std::io;
use std::time::Duration;

use super::socket::Socket;
use crate::shared::Peer;
use http_codec::request::{HttpError, parse_head};
use http_codec::response::error_response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use wsgi_bridge::logging::{AccessEntry, access_log};

use super::Ctx;
use super::http::http_exchange;
use super::websocket::{is_websocket, websocket};

/// Bytes read from a socket and not used yet.
pub(super) struct RBuf {
    pub(super) data: Vec<u8>,
    pub(super) start: usize,
}

impl RBuf {
    pub(super) fn new() -> RBuf {
        RBuf {
            data: Vec::new(),
            start: 0,
        }
    }
    pub(super) fn bytes(&self) -> &[u8] {
        &self.data[self.start..]
    }
    pub(super) fn len(&self) -> usize {
        self.data.len() - self.start
    }
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }
    pub(super) async fn fill(&mut self, stream: &mut Socket) -> io::Result<usize> {
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

pub(super) async fn connection(
    mut stream: Socket,
    peer: Peer,
    ctx: &Ctx,
    mut shutdown: watch::Receiver<bool>,
) {
    stream.set_nodelay();
    let mut buf = RBuf::new();
    // The response buffer, handed to each exchange of the connection in
    // turn: the app's send() writes into memory already there.
    let mut out = Vec::new();
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
                    out = Vec::new();
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
        if !http_exchange(&mut stream, &mut buf, &mut out, head, peer, ctx, stopping).await {
            return;
        }
    }
}

/// Answers a request that never reached the app, then closes gently.
pub(super) async fn reject(
    stream: &mut Socket,
    buf: &mut RBuf,
    peer: Peer,
    e: &HttpError,
    ctx: &Ctx,
) {
    log::info!("bad request from {peer}: {} ({})", e.reason, e.status);
    let bytes = error_response(e.status, e.reason, &ctx.cfg.server_header);
    let _ = tokio::time::timeout(ctx.cfg.timeout, stream.write_all(&bytes)).await;
    if let Some(log) = access_log() {
        log.write(&AccessEntry {
            remote_addr: &peer.host(),
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
pub(super) async fn linger(stream: &mut Socket, buf: &mut RBuf) {
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
