//! What a run measured: requests, errors by kind, statuses, latency, and
//! the wrk-like summary printed from it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::{ErrKind, LoadConfig, MAX_LATENCY_US};

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

    pub(crate) fn add(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.read += o.read;
        self.write += o.write;
        self.timeout += o.timeout;
        self.status += o.status;
        self.malformed += o.malformed;
    }

    pub(crate) fn bump(&mut self, kind: ErrKind) {
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

pub(crate) fn new_histogram() -> Histogram<u64> {
    // Cannot fail for these constant bounds; fall back to auto-resizing.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap_or_else(|_| {
        let mut h =
            Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures are valid"));
        h.auto(true);
        h
    })
}

impl LoadReport {
    pub(crate) fn empty(cfg: &LoadConfig) -> LoadReport {
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
