//! A WebSocket connection: the upgrade check, then messages both ways
//! until one side closes.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::socket::Socket;
use futures_util::{SinkExt, StreamExt};
use http_codec::request::{BodyKind, RequestHead, Version};
use http_codec::response::error_response;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use wsgi_bridge::logging::{AccessEntry, access_log};

use crate::shared::{Event, Exchange, Kind, Peer, STATS, Start, WS_READ_AHEAD, WsIn, WsOut};

use super::Ctx;
use super::conn::{RBuf, linger};
use super::http::wake_if_due;

pub(super) fn has_token(head: &RequestHead, name: &str, token: &str) -> bool {
    head.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .any(|(_, v)| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
}

/// A request that asks to become a WebSocket (RFC 6455 4.1).
pub(super) fn is_websocket(head: &RequestHead) -> bool {
    has_token(head, "upgrade", "websocket") && has_token(head, "connection", "upgrade")
}

/// Why a WebSocket upgrade is refused, if it is.
pub(super) fn check_upgrade(head: &RequestHead) -> Option<(u16, &'static str)> {
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

pub(super) async fn websocket(
    mut stream: Socket,
    mut buf: RBuf,
    head: RequestHead,
    peer: Peer,
    ctx: &Ctx,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Some((status, why)) = check_upgrade(&head) {
        log::info!("refused WebSocket upgrade from {peer}: {why}");
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
    let x = Arc::new(Exchange::new(head.version, false, ctx.outbox.clone()));
    ctx.to_python(Event::Start(Box::new(Start {
        kind: Kind::WebSocket,
        head,
        peer,
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

pub(super) fn ws_access(peer: Peer, target: &str, status: u16) {
    if let Some(log) = access_log() {
        log.write(&AccessEntry {
            remote_addr: &peer.host(),
            request_line: &format!("GET {target} HTTP/1.1 (WebSocket)"),
            status,
            body_bytes: 0,
            referer: None,
            user_agent: None,
        });
    }
}

pub(super) fn ws_push(x: &Exchange, ctx: &Ctx, event: WsIn) {
    if !matches!(event, WsIn::Closed { .. }) {
        STATS.ws_messages.fetch_add(1, Ordering::Relaxed);
    }
    let mut s = x.lock();
    s.ws_in.push_back(event);
    wake_if_due(x, ctx, s);
}

pub(super) fn ws_gone(x: &Exchange, ctx: &Ctx, code: u16) {
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

pub(super) async fn write_plain(stream: &mut Socket, bytes: &[u8], ctx: &Ctx) -> io::Result<()> {
    match tokio::time::timeout(ctx.cfg.timeout, stream.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}
