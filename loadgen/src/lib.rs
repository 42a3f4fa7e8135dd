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
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// Errors by kind, as wrk reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Could not connect.
    pub connect: u64,
    /// Reading failed: reset, or the connection ended inside a response.
    pub read: u64,
    /// Writing the request failed.
    pub write: u64,
    /// No complete response within the timeout.
    pub timeout: u64,
    /// A complete response whose status was not 2xx or 3xx.
    pub status: u64,
    /// A response that could not be parsed.
    pub malformed: u64,
}

impl ErrorCounts {
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout + self.status + self.malformed
    }

    fn add(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.read += o.read;
        self.write += o.write;
        self.timeout += o.timeout;
        self.status += o.status;
        self.malformed += o.malformed;
    }

    fn bump(&mut self, kind: ErrKind) {
        match kind {
            ErrKind::Connect => self.connect += 1,
            ErrKind::Read => self.read += 1,
            ErrKind::Write => self.write += 1,
            ErrKind::Malformed => self.malformed += 1,
            ErrKind::Timeout => self.timeout += 1,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Requests completed with a 2xx or 3xx status.
    pub requests: u64,
    /// Requests that failed: connect errors, resets, timeouts, non-2xx/3xx
    /// statuses, malformed responses (`error_kinds` has the breakdown).
    pub errors: u64,
    pub error_kinds: ErrorCounts,
    /// Complete responses by status (including the non-2xx/3xx ones).
    pub status_counts: BTreeMap<u16, u64>,
    /// From the first connect to the end of the last request (or the end of
    /// the duration).
    pub elapsed: Duration,
    /// Bytes received.
    pub bytes: u64,
    /// Latency of each complete response in microseconds, from sending the
    /// request (or connecting, when the connection had to be opened) to its
    /// last byte.
    pub latency: Histogram<u64>,
    pub connections: usize,
    pub threads: usize,
}

fn new_histogram() -> Histogram<u64> {
    // Cannot fail for these constant bounds; fall back to auto-resizing.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap_or_else(|_| {
        let mut h =
            Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures are valid"));
        h.auto(true);
        h
    })
}

impl LoadReport {
    fn empty(cfg: &LoadConfig) -> LoadReport {
        LoadReport {
            requests: 0,
            errors: 0,
            error_kinds: ErrorCounts::default(),
            status_counts: BTreeMap::new(),
            elapsed: Duration::ZERO,
            bytes: 0,
            latency: new_histogram(),
            connections: cfg.connections,
            threads: cfg.threads.max(1),
        }
    }

    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.requests as f64 / s
        } else {
            0.0
        }
    }

    /// The latency (µs) below which `p` percent of the responses fell, e.g.
    /// `percentile_us(99.0)`; 0 when nothing completed.
    pub fn percentile_us(&self, p: f64) -> u64 {
        if self.latency.is_empty() {
            0
        } else {
            self.latency.value_at_percentile(p.clamp(0.0, 100.0))
        }
    }

    /// The report as JSON, for scripts and the book's tables.
    pub fn to_json(&self) -> serde_json::Value {
        let e = &self.error_kinds;
        let statuses: serde_json::Map<String, serde_json::Value> = self
            .status_counts
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        serde_json::json!({
            "requests": self.requests,
            "errors": self.errors,
            "error_kinds": {
                "connect": e.connect, "read": e.read, "write": e.write,
                "timeout": e.timeout, "status": e.status, "malformed": e.malformed,
            },
            "status_counts": statuses,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "rps": self.rps(),
            "bytes": self.bytes,
            "connections": self.connections,
            "threads": self.threads,
            "latency_us": {
                "min": if self.latency.is_empty() { 0 } else { self.latency.min() },
                "mean": self.latency.mean(),
                "stdev": self.latency.stdev(),
                "p50": self.percentile_us(50.0),
                "p90": self.percentile_us(90.0),
                "p99": self.percentile_us(99.0),
                "p99.9": self.percentile_us(99.9),
                "max": self.latency.max(),
            },
        })
    }
}

/// Formats microseconds as wrk does: `812.00us`, `1.25ms`, `2.01s`.
fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.2}us")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

fn fmt_bytes(b: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2}{}", UNITS[i])
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.latency;
        writeln!(
            f,
            "  {} connections, {} thread{}",
            self.connections,
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        )?;
        writeln!(
            f,
            "  Latency   p50 {}  p90 {}  p99 {}  max {}  (mean {}, stdev {})",
            fmt_us(self.percentile_us(50.0) as f64),
            fmt_us(self.percentile_us(90.0) as f64),
            fmt_us(self.percentile_us(99.0) as f64),
            fmt_us(h.max() as f64),
            fmt_us(h.mean()),
            fmt_us(h.stdev()),
        )?;
        writeln!(
            f,
            "  {} requests in {:.2}s, {} read",
            self.requests,
            self.elapsed.as_secs_f64(),
            fmt_bytes(self.bytes as f64)
        )?;
        if self.errors > 0 {
            let e = &self.error_kinds;
            writeln!(
                f,
                "  Errors: {} (connect {}, read {}, write {}, timeout {}, non-2xx/3xx {}, malformed {})",
                self.errors, e.connect, e.read, e.write, e.timeout, e.status, e.malformed
            )?;
        }
        if !self.status_counts.is_empty() {
            let list: Vec<String> = self
                .status_counts
                .iter()
                .map(|(s, n)| format!("{s}: {n}"))
                .collect();
            writeln!(f, "  Status codes: {}", list.join(", "))?;
        }
        writeln!(f, "Requests/sec: {:.2}", self.rps())?;
        let secs = self.elapsed.as_secs_f64();
        let tps = if secs > 0.0 {
            self.bytes as f64 / secs
        } else {
            0.0
        };
        write!(f, "Transfer/sec: {}", fmt_bytes(tps))
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

/// One client connection's socket: tokio's, multiplexed with the other
/// connections of its thread, or a plain blocking one when it is the
/// thread's only connection (see the module's comment).
enum ClientStream {
    Tokio(TcpStream),
    Blocking(std::net::TcpStream),
}

/// A request this small fits in a new socket's send buffer: writing it
/// cannot block, so a blocking socket needs no write timeout for it.
const FITS_IN_SEND_BUFFER: usize = 16 * 1024;

impl ClientStream {
    async fn connect(shared: &Shared, blocking: bool) -> std::io::Result<ClientStream> {
        if !blocking {
            let s = TcpStream::connect(shared.addr).await?;
            // Several requests of a run may be in flight on a thread: none
            // waits for Nagle's algorithm.
            let _ = s.set_nodelay(true);
            return Ok(ClientStream::Tokio(s));
        }
        // A blocking connect, with the kernel's own connect timeout. No
        // TCP_NODELAY: a lone connection sends its next request only after
        // the response (which acknowledges every byte sent), so Nagle's
        // algorithm never holds a request back.
        let s = std::net::TcpStream::connect(shared.addr)?;
        s.set_read_timeout(Some(shared.timeout))?;
        if shared.request.len() > FITS_IN_SEND_BUFFER {
            s.set_write_timeout(Some(shared.timeout))?;
        }
        Ok(ClientStream::Blocking(s))
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ClientStream::Tokio(s) => s.read(buf).await,
            ClientStream::Blocking(s) => std::io::Read::read(s, buf),
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            ClientStream::Tokio(s) => s.write_all(buf).await,
            ClientStream::Blocking(s) => std::io::Write::write_all(s, buf),
        }
    }
}

/// A fixed receive buffer: `buf[start..end]` holds unconsumed bytes.
struct RecvBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes received over the connection task's life.
    total: u64,
}

impl RecvBuf {
    fn new() -> RecvBuf {
        RecvBuf {
            buf: vec![0; RECV_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            total: 0,
        }
    }

    #[inline]
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    #[inline]
    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Reads more bytes after the unconsumed ones; `Ok(0)` at EOF or reset.
    /// Fails (malformed) if the buffer is full of unconsumed bytes.
    async fn fill(&mut self, s: &mut ClientStream) -> Result<usize, ErrKind> {
        if self.start == self.end {
            self.clear();
        } else if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(ErrKind::Malformed);
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        match s.read(&mut self.buf[self.end..]).await {
            Ok(n) => {
                self.end += n;
                self.total += n as u64;
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                Ok(0)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(ErrKind::Timeout)
            }
            Err(_) => Err(ErrKind::Read),
        }
    }

    /// Skips `n` body bytes, reading them as needed.
    async fn skip(&mut self, s: &mut ClientStream, mut n: u64) -> Result<(), ErrKind> {
        loop {
            let avail = (self.end - self.start) as u64;
            let take = avail.min(n);
            // `take` <= avail, a usize.
            self.consume(take as usize);
            n -= take;
            if n == 0 {
                return Ok(());
            }
            if self.fill(s).await? == 0 {
                return Err(ErrKind::Read);
            }
        }
    }
}

/// How a response body is delimited.
#[derive(Clone, Copy)]
enum Body {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The parts of a response head the generator needs.
struct Head {
    len: usize,
    status: u16,
    body: Body,
    close: bool,
}

/// Parses a response head at the start of `buf`; `Ok(None)` if incomplete.
fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, ErrKind> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ErrKind::Malformed),
    };
    let status = r.code.unwrap_or(0);
    let mut length = None;
    let mut chunked = false;
    let mut other_te = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    for h in r.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| ErrKind::Malformed)?;
            length = Some(v.trim().parse::<u64>().map_err(|_| ErrKind::Malformed)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only the last coding decides the framing.
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or(b"");
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            other_te = !chunked;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|b| *b == b',') {
                let t = token.trim_ascii();
                conn_close |= t.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let body = if no_body {
        Body::None
    } else if chunked {
        Body::Chunked
    } else if other_te {
        Body::UntilClose
    } else if let Some(n) = length {
        Body::Length(n)
    } else {
        Body::UntilClose
    };
    let http10 = r.version == Some(0);
    let close = conn_close || (http10 && !conn_keep_alive) || matches!(body, Body::UntilClose);
    Ok(Some(Head {
        len,
        status,
        body,
        close,
    }))
}

/// Reads one response from `s`, skipping interim 1xx responses.
async fn read_response(
    s: &mut ClientStream,
    rb: &mut RecvBuf,
    head_request: bool,
) -> Result<Done, ReadErr> {
    let mut first = true;
    let head = loop {
        if rb.start != rb.end
            && let Some(h) = parse_head(rb.data(), head_request)?
        {
            if (100..200).contains(&h.status) && h.status != 101 {
                rb.consume(h.len);
                continue;
            }
            break h;
        }
        let empty = rb.start == rb.end;
        if rb.fill(s).await? == 0 {
            return Err(if empty && first {
                ReadErr::ClosedEarly
            } else {
                ReadErr::Kind(ErrKind::Read)
            });
        }
        first = false;
    };
    rb.consume(head.len);
    match head.body {
        Body::None => {}
        Body::Length(n) => rb.skip(s, n).await?,
        Body::Chunked => skip_chunked(s, rb).await?,
        Body::UntilClose => {
            rb.clear();
            while rb.fill(s).await? != 0 {
                rb.clear();
            }
        }
    }
    Ok(Done {
        status: head.status,
        close: head.close,
    })
}

/// Skips a chunked body and its trailer section.
async fn skip_chunked(s: &mut ClientStream, rb: &mut RecvBuf) -> Result<(), ErrKind> {
    loop {
        let (consumed, size) = loop {
            match httparse::parse_chunk_size(rb.data()) {
                Ok(httparse::Status::Complete(x)) => break x,
                Ok(httparse::Status::Partial) => {
                    if rb.fill(s).await? == 0 {
                        return Err(ErrKind::Read);
                    }
                }
                Err(_) => return Err(ErrKind::Malformed),
            }
        };
        rb.consume(consumed);
        if size == 0 {
            break;
        }
        // The chunk and its CRLF.
        rb.skip(s, size.saturating_add(2)).await?;
    }
    // Trailer lines up to an empty line.
    loop {
        match rb.data().iter().position(|b| *b == b'\n') {
            Some(i) => {
                let empty = i == 0 || (i == 1 && rb.data()[0] == b'\r');
                rb.consume(i + 1);
                if empty {
                    return Ok(());
                }
            }
            None => {
                if rb.fill(s).await? == 0 {
                    return Err(ErrKind::Read);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
