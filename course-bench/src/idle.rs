//! Memory per idle keep-alive connection: what a server pays for a client
//! that is connected but says nothing (a browser's spare connection, a
//! long-poll waiting its turn). An event loop is meant to hold thousands
//! of them for little more than a socket and a buffer; this is how little.
//!
//! N connections each send one `GET /` with keep-alive and read the
//! response, then stay open, idle. The RSS of the server's workers (summed)
//! before and after, divided by the connections still open, is the cost of
//! one. A measurement, not a throughput: taken once per server, outside
//! criterion's timing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::measurement::rss_kib;
use crate::servers::Running;

/// Connections being opened at once: more would overflow the listen
/// backlog of the slower servers (hypercorn's is 100), and measure the
/// kernel's SYN retries instead.
const OPENING_AT_ONCE: usize = 64;

/// The most opening them all may take: the connections not open by then
/// are left out (a server that stops answering must not stall the run).
const OPENING_AT_MOST: Duration = Duration::from_secs(60);

/// One measurement of a server's idle connections.
#[derive(Clone, Debug)]
pub struct IdleMeasurement {
    /// Connections asked for.
    pub connections: usize,
    /// Connections that got their response.
    pub opened: usize,
    /// Of those, still open when the memory was read (a server may close
    /// idle connections after a keep-alive timeout).
    pub open: usize,
    /// Summed over the workers, before the connections and with them open.
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub workers: usize,
    /// How long opening them all took.
    pub opening: Duration,
}

impl IdleMeasurement {
    /// RSS added per connection still open.
    pub fn bytes_per_connection(&self) -> f64 {
        if self.open == 0 {
            return 0.0;
        }
        self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64 * 1024.0 / self.open as f64
    }

    pub fn to_json(&self) -> Value {
        json!({
            "connections": self.connections,
            "opened": self.opened,
            "open": self.open,
            "workers": self.workers,
            "rss_before_kib": self.rss_before_kib,
            "rss_after_kib": self.rss_after_kib,
            "bytes_per_connection": self.bytes_per_connection(),
            "opening_s": self.opening.as_secs_f64(),
        })
    }
}

/// The summed RSS of `pids`, in KiB.
fn rss_sum(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| rss_kib(*p)).sum()
}

/// Opens `connections` idle keep-alive connections to `server` and reads
/// the memory of its workers before and after.
pub fn measure_idle(server: &Running, connections: usize) -> IdleMeasurement {
    let workers = server.worker_pids();
    let rss_before_kib = rss_sum(&workers);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot start a tokio runtime");
    let t = Instant::now();
    let streams = runtime.block_on(open_idle(server.addr, connections));
    let opening = t.elapsed();
    // Let the workers finish what they do after a response (a buffer
    // freed, a timer set) before reading their memory.
    std::thread::sleep(Duration::from_millis(300));
    let rss_after_kib = rss_sum(&server.worker_pids());
    let open = count_open(&streams);
    let m = IdleMeasurement {
        connections,
        opened: streams.len(),
        open,
        rss_before_kib,
        rss_after_kib,
        workers: workers.len(),
        opening,
    };
    drop(streams);
    m
}

/// `n` connections that each sent `GET /` and read the whole response;
/// the ones that failed are left out.
pub async fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let permits = Arc::new(tokio::sync::Semaphore::new(OPENING_AT_ONCE));
    let deadline = tokio::time::Instant::now() + OPENING_AT_MOST;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let permits = permits.clone();
            tokio::spawn(async move {
                let _permit = permits.acquire().await.ok()?;
                let opening = tokio::time::timeout_at(deadline, get(addr));
                opening.await.ok()?.ok()
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(n);
    for t in tasks {
        if let Ok(Some(s)) = t.await {
            streams.push(s);
        }
    }
    streams
}

/// Connects, sends `GET /` (HTTP/1.1: kept alive) and reads the response
/// head and its Content-Length of body.
async fn get(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
        if response_length(&got).is_some_and(|total| got.len() >= total) {
            return Ok(s);
        }
    }
}

/// The length of a whole response whose head is in `got` (head and
/// Content-Length body), once the head is complete.
fn response_length(got: &[u8]) -> Option<usize> {
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let body = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    Some(head_end + body)
}

/// How many of `streams` the server has not closed: a peek at each
/// socket, without waiting, finds neither an end of file nor an error.
pub fn count_open(streams: &[TcpStream]) -> usize {
    use std::os::fd::AsRawFd;
    streams
        .iter()
        .filter(|s| {
            let mut byte = 0u8;
            // SAFETY: recv writes at most 1 byte into `byte`; the fd is
            // open for as long as `s` is borrowed.
            let n = unsafe {
                libc::recv(
                    s.as_raw_fd(),
                    (&mut byte as *mut u8).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            n > 0
                || (n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn response_lengths() {
        assert_eq!(response_length(b"HTTP/1.1 200 OK\r\n"), None);
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nHello";
        assert_eq!(response_length(r), Some(r.len() - 5 + 14));
        assert_eq!(
            response_length(b"HTTP/1.1 204 No Content\r\n\r\n"),
            Some(27)
        );
    }

    #[test]
    fn connections_stay_open_until_the_server_closes_them() {
        // A server that answers one request per connection and keeps the
        // first 5 connections; it closes the others after answering.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            for mut s in listener.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ =
                    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nHello, World!\n");
                if kept.len() < 5 {
                    kept.push(s);
                }
            }
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let streams = runtime.block_on(open_idle(addr, 8));
        assert_eq!(streams.len(), 8);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(count_open(&streams), 5);
    }

    #[test]
    fn bytes_per_connection() {
        let m = IdleMeasurement {
            connections: 100,
            opened: 100,
            open: 50,
            rss_before_kib: 1000,
            rss_after_kib: 1100,
            workers: 2,
            opening: Duration::ZERO,
        };
        assert_eq!(m.bytes_per_connection(), 2048.0);
    }
}
