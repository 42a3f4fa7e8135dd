//! A WebSocket echo load generator, for comparing stage 6 with uvicorn and
//! granian by hand (loopback only):
//!
//! ```text
//! cargo run --release -p stage6-asgi --example ws_echo_load -- 127.0.0.1:8000 /ws 64 5
//! ```
//!
//! Opens CONNECTIONS WebSockets to ADDR PATH; each sends a 32-byte text
//! message, waits for its echo, and repeats for SECONDS. Prints messages
//! echoed per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8000".into());
    let path = args.get(2).cloned().unwrap_or_else(|| "/ws".into());
    let conns: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(64);
    let secs: u64 = args
        .get(4)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5)
        .min(60);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let count = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let mut sockets = Vec::new();
        for _ in 0..conns {
            let stream = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            stream.set_nodelay(true).unwrap();
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(8 * 1024);
            let (ws, _) = tokio_tungstenite::client_async_with_config(
                format!("ws://{addr}{path}"),
                stream,
                Some(config),
            )
            .await
            .expect("handshake");
            sockets.push(ws);
        }
        let start = Instant::now();
        let deadline = start + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for mut ws in sockets {
            let count = count.clone();
            tasks.push(tokio::spawn(async move {
                let msg = "x".repeat(32);
                while Instant::now() < deadline {
                    if ws.send(Message::text(msg.clone())).await.is_err() {
                        break;
                    }
                    match ws.next().await {
                        Some(Ok(_)) => {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => break,
                    }
                }
                let _ = ws.close(None).await;
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let n = count.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{conns} connections, {n} messages echoed in {secs:.1} s: {:.0} messages/s",
            n as f64 / secs
        );
    });
}
