//! The course's load generator: `connections` clients hammering one URL, like
//! wrk.
//!
//! It has to measure servers doing 50k-100k requests/s on a 2-core machine
//! while sharing the CPU with them, so it is built to cost little per
//! request: the request bytes are built once, each connection reuses one
//! receive buffer, responses are parsed in place with httparse and their bodies
//! skipped without copying, and all connections of a thread run as tasks on one
//! single-threaded tokio runtime (no locks, no work stealing). With
//! `threads > 1` the connections are split over that many threads, each with
//! its own runtime, like wrk's threads.
//!
//! A thread with a single connection (`-c 1`, or as many threads as
//! connections) has nothing to multiplex: that connection uses a plain
//! blocking socket instead of tokio's, because every system call the client
//! makes is part of the round trip it measures. Per new connection, tokio
//! needs 11 (a non-blocking connect, registering with epoll, waiting for it,
//! reading the connect's result, ...), a blocking socket 5 to 7.
//!
//! Errors never stop the run: they are counted by kind, the connection is
//! reopened, and after a connection-level error the client backs off a little
//! (1 ms doubling up to 50 ms) so a dead server does not make it spin.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

mod report;
mod response;
#[cfg(test)]
mod tests;

use report::new_histogram;
pub use report::{ErrorCounts, LoadReport};
use response::{ClientStream, RecvBuf, read_response};

/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a run lasts when neither `requests` nor `duration` is set.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Receive buffer per connection; also the largest response head accepted.
const RECV_BUF: usize = 32 * 1024;
/// Longest per-request timeout (longer ones are cut to it).
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Longest backoff after repeated connection errors.
const MAX_BACKOFF: Duration = Duration::from_millis(50);
/// Highest latency the histogram tracks exactly (1 hour, in µs); longer ones
/// are recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// What to send, to whom, and for how long.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub addr: SocketAddr,
    pub method: String,
    /// Path and query, e.g. `/cpu?ms=1`.
    pub path: String,
    /// Request body; a `Content-Length` is sent when it is not empty or the
    /// method is POST, PUT or PATCH.
    pub body: Vec<u8>,
    /// The `Host` header (unless `extra_headers` has one).
    pub host: String,
    pub extra_headers: Vec<(String, String)>,
    /// Concurrent connections (each one request at a time).
    pub connections: usize,
    /// Total requests over all connections; the run ends when they are done.
    pub requests: Option<u64>,
    /// Stop starting requests after this; requests still in flight at the end
    /// are abandoned and not counted. With neither `requests` nor `duration`,
    /// the run lasts [`DEFAULT_DURATION`].
    pub duration: Option<Duration>,
    /// Reuse connections (reopening them when the server closes them); if
    /// false, every request sends `Connection: close` on a new connection.
    pub keep_alive: bool,
    /// Per request, including a (re)connect.
    pub timeout: Duration,
    /// Generator threads, each with its own single-threaded runtime
    /// (default 1: leave the other cores to the server).
    pub threads: usize,
}

impl LoadConfig {
    /// `GET /` on `addr`, 32 keep-alive connections, 10 s timeout, one
    /// thread; set `requests` or `duration` before running.
    pub fn new(addr: SocketAddr) -> LoadConfig {
        LoadConfig {
            addr,
            method: "GET".into(),
            path: "/".into(),
            body: Vec::new(),
            host: addr.to_string(),
            extra_headers: Vec::new(),
            connections: 32,
            requests: None,
            duration: None,
            keep_alive: true,
            timeout: DEFAULT_TIMEOUT,
            threads: 1,
        }
    }

    /// The exact bytes sent for every request.
    pub fn request_bytes(&self) -> Vec<u8> {
        let has = |name: &str| {
            self.extra_headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        let mut r = Vec::with_capacity(256 + self.body.len());
        r.extend_from_slice(format!("{} {} HTTP/1.1\r\n", self.method, self.path).as_bytes());
        if !has("host") {
            r.extend_from_slice(format!("Host: {}\r\n", self.host).as_bytes());
        }
        for (n, v) in &self.extra_headers {
            r.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        let needs_length = !self.body.is_empty()
            || ["POST", "PUT", "PATCH"]
                .iter()
                .any(|m| self.method.eq_ignore_ascii_case(m));
        if needs_length && !has("content-length") && !has("transfer-encoding") {
            r.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        if !self.keep_alive && !has("connection") {
            r.extend_from_slice(b"Connection: close\r\n");
        }
        r.extend_from_slice(b"\r\n");
        r.extend_from_slice(&self.body);
        r
    }
}

/// What all connections of a run share.
struct Shared {
    addr: SocketAddr,
    request: Box<[u8]>,
    /// Requests started (claimed) so far, against `limit`.
    started: AtomicU64,
    limit: Option<u64>,
    /// When to stop starting requests (duration mode).
    deadline: Option<Instant>,
    timeout: Duration,
    /// The response to HEAD has no body.
    head: bool,
    keep_alive: bool,
}

impl Shared {
    /// Claims the next request; its start time, or `None` when the run is
    /// over.
    #[inline]
    fn claim(&self) -> Option<Instant> {
        if let Some(limit) = self.limit
            && self.started.fetch_add(1, Ordering::Relaxed) >= limit
        {
            return None;
        }
        let now = Instant::now();
        match self.deadline {
            Some(d) if now >= d => None,
            _ => Some(now),
        }
    }
}

/// Per-thread tallies, merged into the report at the end.
struct Stats {
    requests: u64,
    errors: ErrorCounts,
    /// Indexed by status code (httparse accepts exactly three digits).
    status: Box<[u64; 1000]>,
    bytes: u64,
    latency: Histogram<u64>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            requests: 0,
            errors: ErrorCounts::default(),
            status: Box::new([0; 1000]),
            bytes: 0,
            latency: new_histogram(),
        }
    }

    fn merge_into(&self, r: &mut LoadReport) {
        r.requests += self.requests;
        r.error_kinds.add(&self.errors);
        r.bytes += self.bytes;
        for (code, n) in self.status.iter().enumerate() {
            if *n > 0 {
                // `code` < 1000, so it fits.
                *r.status_counts.entry(code as u16).or_insert(0) += n;
            }
        }
        let _ = r.latency.add(&self.latency);
    }
}

/// Runs the load described by `cfg` and reports. Awaits on the caller's
/// runtime when `threads` is 1, which must have time and I/O enabled; the
/// future is not `Send` (the connections of a thread share their tallies
/// without locks), so await it rather than spawn it, or use
/// [`run_blocking`]. With more threads, each gets its own runtime.
pub async fn run(cfg: &LoadConfig) -> LoadReport {
    // The caller's runtime may run other tasks: never block it.
    run_on(cfg, false).await
}

/// [`run`]; `may_block`: this thread's runtime is ours alone, so a lone
/// connection may use a blocking socket.
async fn run_on(cfg: &LoadConfig, may_block: bool) -> LoadReport {
    let mut report = LoadReport::empty(cfg);
    if cfg.connections == 0 {
        return report;
    }
    let threads = cfg.threads.clamp(1, cfg.connections);
    report.threads = threads;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        addr: cfg.addr,
        request: cfg.request_bytes().into_boxed_slice(),
        started: AtomicU64::new(0),
        limit: cfg.requests,
        deadline: match (cfg.requests, cfg.duration) {
            // A duration too long to represent means no deadline.
            (_, Some(d)) => start.checked_add(d),
            (None, None) => Some(start + DEFAULT_DURATION),
            (Some(_), None) => None,
        },
        timeout: cfg.timeout.clamp(Duration::from_millis(1), MAX_TIMEOUT),
        head: cfg.method.eq_ignore_ascii_case("HEAD"),
        keep_alive: cfg.keep_alive,
    });
    if threads == 1 {
        run_local(shared.clone(), cfg.connections, may_block)
            .await
            .merge_into(&mut report);
    } else {
        let mut waiting = Vec::new();
        for i in 0..threads {
            // Spread the connections as evenly as possible.
            let n = cfg.connections / threads + usize::from(i < cfg.connections % threads);
            let (tx, rx) = tokio::sync::oneshot::channel();
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("loadgen-{i}"))
                .spawn(move || {
                    let _ = tx.send(run_thread(shared, n));
                });
            if spawned.is_ok() {
                waiting.push(rx);
            }
        }
        for rx in waiting {
            if let Ok(r) = rx.await {
                r.merge_into(&mut report);
            }
        }
    }
    report.elapsed = start.elapsed();
    if let Some(d) = shared.deadline {
        // Requests cut off at the deadline are not counted, so neither is
        // the time spent winding down.
        report.elapsed = report.elapsed.min(d - start);
    }
    report.errors = report.error_kinds.total();
    report
}

/// [`run`] on a new single-threaded tokio runtime, from synchronous code
/// (tests, benchmarks).
///
/// # Panics
/// If the runtime cannot be created (the process is out of file descriptors
/// or threads).
pub fn run_blocking(cfg: &LoadConfig) -> LoadReport {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot create a tokio runtime: {e}"));
    rt.block_on(run_on(cfg, true))
}

/// One generator thread: its own runtime running `n` connections.
fn run_thread(shared: Arc<Shared>, n: usize) -> Stats {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run_local(shared, n, true)),
        Err(_) => {
            let mut s = Stats::new();
            s.errors.connect += 1;
            s
        }
    }
}

/// Runs `n` connection tasks on a `LocalSet` sharing one `Stats`; a lone
/// connection blocks, if `may_block`.
async fn run_local(shared: Arc<Shared>, n: usize, may_block: bool) -> Stats {
    let blocking = may_block && n == 1;
    let stats = Rc::new(RefCell::new(Stats::new()));
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    tokio::task::spawn_local(connection(shared.clone(), stats.clone(), blocking))
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        })
        .await;
    stats.replace(Stats::new())
}

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrKind {
    Connect,
    Read,
    Write,
    Malformed,
    /// A blocking socket's timeout (tokio's are counted where they fire).
    Timeout,
}

/// A failed read of a response.
enum ReadErr {
    /// The connection ended (EOF or reset) before any byte of a response:
    /// on a reused connection, the server had closed it while idle.
    ClosedEarly,
    Kind(ErrKind),
}

impl From<ErrKind> for ReadErr {
    fn from(k: ErrKind) -> Self {
        ReadErr::Kind(k)
    }
}

/// A complete response.
struct Done {
    status: u16,
    /// The connection cannot be reused.
    close: bool,
}

/// One client connection: claims requests until the run is over.
async fn connection(shared: Arc<Shared>, stats: Rc<RefCell<Stats>>, blocking: bool) {
    let mut conn: Option<ClientStream> = None;
    let mut rb = RecvBuf::new();
    let mut backoff = Duration::ZERO;
    while let Some(t0) = shared.claim() {
        let limit = match shared.deadline {
            Some(d) => (t0 + shared.timeout).min(d),
            None => t0 + shared.timeout,
        };
        let result = tokio::time::timeout_at(
            tokio::time::Instant::from_std(limit),
            exchange(&shared, &mut conn, &mut rb, blocking),
        )
        .await;
        // `timeout_at` cannot cut a blocking exchange short: one that ends
        // past its limit counts as cut off (or timed out) all the same.
        let result = if blocking && Instant::now() >= limit {
            Err(())
        } else {
            result.map_err(drop)
        };
        let cut_off = {
            let mut st = stats.borrow_mut();
            match result {
                Ok(Ok(done)) => {
                    let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                    st.latency.saturating_record(us.clamp(1, MAX_LATENCY_US));
                    if let Some(n) = st.status.get_mut(usize::from(done.status)) {
                        *n += 1;
                    }
                    if (200..400).contains(&done.status) {
                        st.requests += 1;
                    } else {
                        st.errors.status += 1;
                    }
                    if done.close || !shared.keep_alive {
                        conn = None;
                    }
                    backoff = Duration::ZERO;
                    false
                }
                Ok(Err(kind)) => {
                    st.errors.bump(kind);
                    conn = None;
                    backoff = (backoff * 2).clamp(Duration::from_millis(1), MAX_BACKOFF);
                    false
                }
                Err(_) => {
                    conn = None;
                    // Cut off by the end of the run, not by the timeout?
                    let cut_off =
                        shared.deadline.is_some_and(|d| limit >= d) && Instant::now() >= limit;
                    if !cut_off {
                        st.errors.timeout += 1;
                    }
                    cut_off
                }
            }
        };
        if cut_off {
            break;
        }
        if conn.is_none() {
            rb.clear();
        }
        if !backoff.is_zero() {
            tokio::time::sleep(backoff).await;
        }
    }
    stats.borrow_mut().bytes += rb.total;
}

/// Sends the request and reads the response, (re)connecting as needed. A
/// kept-alive connection the server closed while idle is retried once on a
/// new connection, as browsers do; that counts as one request.
async fn exchange(
    shared: &Shared,
    conn: &mut Option<ClientStream>,
    rb: &mut RecvBuf,
    blocking: bool,
) -> Result<Done, ErrKind> {
    loop {
        let fresh = conn.is_none();
        let stream = match conn {
            Some(s) => s,
            None => {
                let s = ClientStream::connect(shared, blocking)
                    .await
                    .map_err(|_| ErrKind::Connect)?;
                rb.clear();
                conn.insert(s)
            }
        };
        if stream.write_all(&shared.request).await.is_err() {
            *conn = None;
            if fresh {
                return Err(ErrKind::Write);
            }
            continue;
        }
        match read_response(stream, rb, shared.head).await {
            Ok(done) => return Ok(done),
            Err(ReadErr::ClosedEarly) if !fresh => {
                *conn = None;
                continue;
            }
            Err(ReadErr::ClosedEarly) => return Err(ErrKind::Read),
            Err(ReadErr::Kind(k)) => return Err(k),
        }
    }
}
