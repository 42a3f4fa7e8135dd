//! One measurement: a run of the load generator against a running server,
//! with the CPU time and memory `/proc` reports for it, and the summary of
//! a benchmark's runs.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use loadgen::{LoadConfig, LoadReport, run_blocking};
use wsgi_course::procs::{parent_map, process_tree, stat_fields};

use crate::servers::{Running, drain};
use crate::{Kind, Settings, Workload};

// ---- /proc --------------------------------------------------------------

/// CPU time (user + system) a process has used so far, all its threads.
pub fn process_cpu(pid: u32) -> Duration {
    // utime and stime are fields 14 and 15 of /proc/PID/stat; `stat_fields`
    // starts at field 3.
    let ticks = stat_fields(pid)
        .map(|f| {
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            n(11) + n(12)
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// CPU time used so far by `root` and its descendants.
pub fn tree_cpu(root: u32) -> Duration {
    process_tree(root).into_iter().map(process_cpu).sum()
}

/// CPU time the machine has spent running processes since boot: user and
/// system time from `/proc/stat`, without kernel threads (`ksoftirqd`,
/// `kworker`: they do network work on behalf of the server and the client)
/// and without interrupt time (the same, counted apart). What is left,
/// minus the server and the load generator, is other programs.
pub fn machine_busy() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Duration::ZERO;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return Duration::ZERO;
    };
    // user nice system (guest time is already in user).
    let ticks: u64 = line
        .split_whitespace()
        .skip(1)
        .take(3)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let kernel_threads: Duration = parent_map()
        .iter()
        .filter(|(pid, ppid)| **ppid == 2 || **pid == 2)
        .map(|(pid, _)| process_cpu(*pid))
        .sum();
    Duration::from_micros(ticks * 1_000_000 / hz).saturating_sub(kernel_threads)
}

pub use supervise::memory::{pss_kib, rss_kib};

/// CPU time of the calling thread (the load generator runs on it).
pub fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass, nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

// ---- one measurement ----------------------------------------------------

// ANCHOR: measure
/// How long one run of the load generator lasts.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// This many requests, then stop. The last ones finish one by one while
    /// the other connections are already done: an idle tail, which biases
    /// a short run.
    Requests(u64),
    /// Send requests for this long; the ones still in flight at the end are
    /// not counted (wrk's way): no tail.
    Time(Duration),
}

/// `workload` against a running server for `budget`, at the settings'
/// concurrency, with the load generator on this thread (a WebSocket
/// workload: with [`crate::websocket`]'s client threads). Besides the load
/// generator's report, the CPU time the server and the generator used, and
/// the memory of the server's workers afterwards.
pub fn measure(
    server: &Running,
    workload: &Workload,
    settings: &Settings,
    budget: Budget,
) -> Measurement {
    let mut cfg = LoadConfig::new(server.addr);
    cfg.method = workload.method.into();
    cfg.path = workload.path.into();
    cfg.body = vec![b'x'; workload.body];
    cfg.connections = if workload.connections > 0 {
        workload.connections
    } else {
        settings.connections
    };
    match budget {
        Budget::Requests(n) => cfg.requests = Some(n),
        Budget::Time(d) => cfg.duration = Some(d),
    }
    cfg.timeout = Duration::from_secs(30);
    let machine_before = machine_busy();
    let server_before = server.cpu();
    let front_before = server.front_cpu();
    let (report, loadgen_cpu) = match workload.kind {
        Kind::Http => {
            let loadgen_before = thread_cpu();
            let report = run_blocking(&cfg);
            (report, thread_cpu().saturating_sub(loadgen_before))
        }
        // The clients' threads count their own CPU time.
        Kind::WebSocket => {
            let run = crate::websocket::echo(
                server.addr,
                workload.path,
                cfg.connections,
                workload.body,
                budget,
                crate::websocket::CLIENT_THREADS,
            );
            (run.report, run.clients_cpu)
        }
    };
    let server_cpu = server.cpu().saturating_sub(server_before);
    let front_cpu = server.front_cpu().saturating_sub(front_before);
    // Whatever else kept the cores busy meanwhile: other programs (a
    // build, a browser).
    let other_cpu = machine_busy()
        .saturating_sub(machine_before)
        .saturating_sub(server_cpu + loadgen_cpu);
    let workers = server.worker_pids();
    let rss_kib = workers.iter().filter_map(|p| rss_kib(*p)).collect();
    let pss_kib = workers.iter().filter_map(|p| pss_kib(*p)).collect();
    if let Budget::Time(_) = budget {
        // The requests cut off at the end are still queued in the server
        // (a sync worker serves them to a closed socket): let it work them
        // off before the next run, or that run pays for them.
        drain(server.addr);
    }
    Measurement {
        report,
        loadgen_cpu,
        server_cpu,
        front_cpu,
        other_cpu,
        rss_kib,
        pss_kib,
    }
}
// ANCHOR_END: measure

/// Other programs using more than this many cores during a run disturb
/// it: the run is repeated once the machine is quiet, if patience allows.
pub const NOISY_CORES: f64 = 0.25;

/// Waits until the rest of the machine uses less than [`NOISY_CORES`]
/// (sampled over a quarter of a second), at most `patience`, which is
/// decreased by the time waited. The server is idle meanwhile, so whatever
/// is busy is someone else. Returns whether the machine is quiet.
pub fn wait_for_quiet(patience: &mut Duration) -> bool {
    const SAMPLE: Duration = Duration::from_millis(250);
    loop {
        let before = machine_busy();
        std::thread::sleep(SAMPLE);
        let busy = machine_busy().saturating_sub(before);
        *patience = patience.saturating_sub(SAMPLE);
        if busy.as_secs_f64() / SAMPLE.as_secs_f64() < NOISY_CORES {
            return true;
        }
        if patience.is_zero() {
            return false;
        }
    }
}

/// One run of the load generator, and what it cost.
pub struct Measurement {
    pub report: LoadReport,
    pub loadgen_cpu: Duration,
    pub server_cpu: Duration,
    /// The part of `server_cpu` nginx used, in front of the server.
    pub front_cpu: Duration,
    /// CPU time used by everything else on the machine meanwhile.
    pub other_cpu: Duration,
    /// Of each worker, after the run.
    pub rss_kib: Vec<u64>,
    /// Proportional set size of each worker: pages shared with other
    /// processes (the master, after fork) count for their share only.
    pub pss_kib: Vec<u64>,
}

impl Measurement {
    /// Cores used by other programs during the run.
    pub fn other_cores(&self) -> f64 {
        let secs = self.report.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.other_cpu.as_secs_f64() / secs
        } else {
            0.0
        }
    }
}

/// Several measurements of one server on one workload, added up.
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
    pub loadgen_cpu: Duration,
    pub server_cpu: Duration,
    pub front_cpu: Duration,
    pub other_cpu: Duration,
    pub rss_kib: Vec<u64>,
    pub pss_kib: Vec<u64>,
    pub runs: usize,
}

impl Summary {
    pub fn of(measurements: &[Measurement]) -> Option<Summary> {
        let first = measurements.first()?;
        let mut latency = first.report.latency.clone();
        latency.reset();
        let mut s = Summary {
            requests: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency,
            loadgen_cpu: Duration::ZERO,
            server_cpu: Duration::ZERO,
            front_cpu: Duration::ZERO,
            other_cpu: Duration::ZERO,
            rss_kib: Vec::new(),
            pss_kib: Vec::new(),
            runs: measurements.len(),
        };
        for m in measurements {
            s.requests += m.report.requests;
            s.errors += m.report.errors;
            s.elapsed += m.report.elapsed;
            let _ = s.latency.add(&m.report.latency);
            s.loadgen_cpu += m.loadgen_cpu;
            s.server_cpu += m.server_cpu;
            s.front_cpu += m.front_cpu;
            s.other_cpu += m.other_cpu;
            s.rss_kib.clone_from(&m.rss_kib);
            s.pss_kib.clone_from(&m.pss_kib);
        }
        Some(s)
    }

    pub fn rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    fn percentile(&self, p: f64) -> u64 {
        if self.latency.is_empty() {
            0
        } else {
            self.latency.value_at_percentile(p)
        }
    }

    fn per_request_us(&self, d: Duration) -> f64 {
        let n = (self.requests + self.errors).max(1);
        d.as_secs_f64() * 1e6 / n as f64
    }

    pub fn to_json(&self) -> Value {
        let elapsed = self.elapsed.as_secs_f64().max(1e-9);
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "runs": self.runs,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "rps": self.rps(),
            "p50_us": self.percentile(50.0),
            "p99_us": self.percentile(99.0),
            "max_us": if self.latency.is_empty() { 0 } else { self.latency.max() },
            "server_cpu_s": self.server_cpu.as_secs_f64(),
            "loadgen_cpu_s": self.loadgen_cpu.as_secs_f64(),
            "server_cores": self.server_cpu.as_secs_f64() / elapsed,
            "loadgen_cores": self.loadgen_cpu.as_secs_f64() / elapsed,
            "other_cores": self.other_cpu.as_secs_f64() / elapsed,
            "server_cpu_us_per_request": self.per_request_us(self.server_cpu),
            "front_cpu_us_per_request": self.per_request_us(self.front_cpu),
            "loadgen_cpu_us_per_request": self.per_request_us(self.loadgen_cpu),
            "rss_kib_per_worker": self.rss_kib,
            "pss_kib_per_worker": self.pss_kib,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_seen_in_proc() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(pss_kib(me).unwrap() > 0);
        assert!(process_tree(me).contains(&me));
        let t0 = thread_cpu();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            // black_box: in release the sum is otherwise computed in closed
            // form, with no time spent.
            x = x.wrapping_add(std::hint::black_box(i) * i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu() > t0);
    }
}
