//! One HTTP request on a connection: the body fed to the app as it asks,
//! the response bytes the app queued written out.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::socket::Socket;
use http_codec::chunked::ChunkedDecoder;
use http_codec::request::{BodyKind, HttpError, RequestHead, Version};
use http_codec::response::CONTINUE;
use tokio::io::AsyncWriteExt;
use wsgi_bridge::logging::{AccessEntry, access_log};

use crate::shared::{BODY_READ_AHEAD, Event, Exchange, Kind, Peer, STATS, Start};

use super::Ctx;
use super::conn::{RBuf, linger, reject};

/// Decodes the request body as it arrives.
pub(super) enum Body {
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

/// Response buffers up to this size stay with the connection for its next
/// request; a larger one is freed. As large as what an app may queue before
/// its `send()` waits: a client that keeps asking for 64 KiB bodies found a
/// buffer kept to 8 KiB freed after every response, and each new one cost
/// page faults and `brk` calls: 41% of the server's CPU samples under perf
/// (11% with the buffer kept). An idle connection gives its buffer back
/// anyway (`conn.rs`).
const KEEP_OUT_BUFFER: usize = crate::shared::SEND_HIGH_WATER;

/// Serves one HTTP request. Returns whether the connection may carry another.
/// `out` is the connection's response buffer: lent to the exchange, given
/// back (empty) when the response is done.
#[allow(clippy::too_many_arguments)]
pub(super) async fn http_exchange(
    stream: &mut Socket,
    buf: &mut RBuf,
    out: &mut Vec<u8>,
    head: RequestHead,
    peer: Peer,
    ctx: &Ctx,
    stopping: bool,
) -> bool {
    let x = Arc::new(Exchange::new(
        head.version,
        head.method == "HEAD",
        ctx.outbox.clone(),
    ));
    let mut body = match head.body {
        BodyKind::Empty => Body::Done,
        BodyKind::Length(n) => Body::Length(n),
        BodyKind::Chunked => Body::Chunked(Box::new(ChunkedDecoder::with_max_body(
            ctx.cfg.limits.max_body,
        ))),
    };
    let expect_continue = head.expect_continue && head.version == Version::Http11;
    let keep_alive = ctx.cfg.keep_alive.is_some() && head.keep_alive && !stopping;
    {
        let mut s = x.lock();
        s.body_done = matches!(body, Body::Done);
        s.out = std::mem::take(out);
    }
    let log_line = access_log().map(|_| {
        (
            format!("{} {} {}", head.method, head.target, head.version.as_str()),
            head.header("referer")
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            head.header("user-agent")
                .map(|v| String::from_utf8_lossy(v).into_owned()),
        )
    });
    ctx.to_python(Event::Start(Box::new(Start {
        kind: Kind::Http,
        head,
        peer,
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
            ctx.to_python(Event::Wake(x.id));
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
        // ANCHOR: wait_app_or_client
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
                log::info!("client {peer} sent no body for {:?}: closing", ctx.cfg.timeout);
                client_gone(&x, ctx);
                return false;
            }
        }
        // ANCHOR_END: wait_app_or_client
    };
    let _ = done;
    let (status, body_bytes) = {
        let mut s = x.lock();
        s.io_done = true;
        // Everything was written: both buffers are empty; keep the one
        // with room for the next response.
        let mut kept = std::mem::take(&mut s.out);
        if spare.capacity() > kept.capacity() {
            kept = std::mem::take(&mut spare);
        }
        if kept.capacity() <= KEEP_OUT_BUFFER {
            kept.clear();
            *out = kept;
        }
        let r = (s.status, s.body_bytes);
        wake_if_due(&x, ctx, s);
        r
    };
    if let (Some(log), Some((line, referer, agent))) = (access_log(), &log_line) {
        log.write(&AccessEntry {
            remote_addr: &peer.host(),
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

pub(super) fn client_gone(x: &Exchange, ctx: &Ctx) {
    let mut s = x.lock();
    s.disconnected = true;
    s.io_done = true;
    wake_if_due(x, ctx, s);
}

/// Sends `Event::Wake` if the Python side waits for something now there.
pub(super) fn wake_if_due(
    x: &Exchange,
    ctx: &Ctx,
    mut s: std::sync::MutexGuard<'_, crate::shared::XState>,
) {
    if s.wake_due() {
        drop(s);
        ctx.to_python(Event::Wake(x.id));
    }
}

pub(super) async fn write(stream: &mut Socket, bytes: &[u8], ctx: &Ctx) -> io::Result<()> {
    match tokio::time::timeout(ctx.cfg.timeout, stream.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}
