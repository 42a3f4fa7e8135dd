//! The course's servers and real ones side by side, on the same workloads.
//!
//! ```text
//! cargo bench --bench stages                     # everything (several times the quick mode)
//! BENCH_QUICK=1 cargo bench --bench stages       # for class (under 3 minutes)
//! cargo bench --bench stages -- hello/           # one workload; `-- stage3` one server
//! cargo run --release --bin bench-report         # the book's results page from the last run
//! ```
//!
//! Each server is started once, before its first benchmark, outside the
//! timed part, and stays up until the end. Criterion asks for N requests;
//! the harness' load generator sends them over `BENCH_CONNECTIONS` (32)
//! keep-alive connections from this thread, and the time it took is the
//! measurement. Throughput is in elements, so criterion's report reads as
//! requests per second. Every prefork server runs `BENCH_WORKERS` (2)
//! workers, every threaded one `BENCH_THREADS` (4) threads per process;
//! stages 1 and 2 are one process by design.
//!
//! The ASGI servers are also measured on a WebSocket echo (`wsecho`: 32
//! clients, messages per second; `src/websocket.rs`) and, once each after
//! the timed workloads, on the memory an idle keep-alive connection costs
//! (`idle/SERVER`, not a criterion benchmark; `src/idle.rs`).
//!
//! Besides criterion's own report (`target/criterion/report/index.html`),
//! the run leaves `target/bench-results.json`: latency percentiles, the CPU
//! time of the server and of the load generator, and the memory of each
//! worker, which `bench-report` turns into `book/src/results.md`.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use course_bench::idle::measure_idle;
use course_bench::measurement::{
    Budget, Measurement, NOISY_CORES, Summary, measure, wait_for_quiet,
};
use course_bench::results::ResultsFile;
use course_bench::servers::{Running, ServerSpec, servers};
use course_bench::{Filter, Settings, WORKLOADS, Workload, since};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

fn stages(c: &mut Criterion) {
    let settings = Settings::from_env();
    // The idle measurement holds thousands of sockets here, and the
    // servers, which inherit the limit, as many.
    raise_open_files_limit();
    let specs = servers();
    let mut results = ResultsFile::new(&settings);
    println!(
        "servers: {} workers per prefork server, {} threads per threaded process; \
         {} connections{}",
        settings.workers,
        settings.threads,
        settings.connections,
        if settings.quick { "; quick mode" } else { "" }
    );

    // Peers that are not installed are left out, and said so. Nothing is
    // started yet: a filtered run starts only the servers it measures.
    let mut available = Vec::new();
    let mut skipped = Vec::new();
    for spec in &specs {
        match spec.missing() {
            Some(skip) => {
                results.add_skip(spec, &skip);
                skipped.push(format!("{} ({})", spec.id, skip.install));
            }
            None => available.push(spec),
        }
    }
    if !skipped.is_empty() {
        println!("skipped, not installed: {}", skipped.join(", "));
    }

    let mut running: Vec<Option<Running>> = available.iter().map(|_| None).collect();
    for workload in WORKLOADS {
        let mut group = c.benchmark_group(workload.id);
        group.throughput(Throughput::Elements(1));
        // Every sample the same size: a run of the load generator has a fixed
        // cost (connecting), which a linear fit would not need to see.
        group.sampling_mode(SamplingMode::Flat);
        for (i, spec) in available.iter().enumerate() {
            if !spec.runs_workload(workload) {
                continue;
            }
            let samples: RefCell<Vec<(u64, Measurement)>> = RefCell::new(Vec::new());
            let per_request: Cell<Option<Duration>> = Cell::new(None);
            let patience = RefCell::new(settings.patience);
            let min_run = if settings.quick {
                Duration::from_millis(150)
            } else {
                Duration::from_millis(500)
            };
            // Rounds of the connections a run lasts at least (see `run`).
            // Quick mode makes do with two: the slow servers of /io
            // (100 requests a second) would otherwise take most of its time.
            let rounds = if settings.quick { 2.0 } else { 3.0 };
            let started = Instant::now();
            group.bench_function(spec.id, |b| {
                let server = running[i].get_or_insert_with(|| start(spec, &settings, &mut results));
                b.iter_custom(|iters| {
                    let plan = Plan {
                        iters,
                        per_request: per_request.get(),
                        min_run,
                        rounds,
                    };
                    let m = run(
                        server,
                        workload,
                        &settings,
                        plan,
                        &mut patience.borrow_mut(),
                    );
                    let done = m.report.requests.max(1);
                    let per = m.report.elapsed.div_f64(done as f64);
                    per_request.set(Some(per));
                    samples.borrow_mut().push((iters, m));
                    per.mul_f64(iters as f64)
                });
            });
            let samples = measurement_calls(samples.into_inner());
            if let Some(summary) = Summary::of(&samples) {
                print_summary(workload.id, spec.id, &summary, &started);
                results.add_result(workload, spec, &summary);
            }
        }
        group.finish();
    }
    // Memory per idle keep-alive connection: once per server of the
    // WebSocket workload (the ASGI servers but the null one), outside
    // criterion (a measurement, not a throughput), after the timed work.
    let filter = Filter::from_args();
    let ws = course_bench::workload("wsecho").expect("the WebSocket workload");
    for (i, spec) in available.iter().enumerate() {
        let id = format!("idle/{}", spec.id);
        if !spec.runs_workload(ws) || !filter.matches(&id) {
            continue;
        }
        let server = running[i].get_or_insert_with(|| start(spec, &settings, &mut results));
        let m = measure_idle(server, settings.idle_connections);
        println!(
            "{id}: {:.0} bytes per connection ({} of {} open; RSS {:.1} -> {:.1} MiB over {} workers; opened in {:.1}s)",
            m.bytes_per_connection(),
            m.open,
            m.connections,
            m.rss_before_kib as f64 / 1024.0,
            m.rss_after_kib as f64 / 1024.0,
            m.workers,
            m.opening.as_secs_f64(),
        );
        if m.open < m.connections {
            println!(
                "{id}: WARNING: {} connections were refused or closed",
                m.connections - m.open
            );
        }
        results.add_idle(spec, &m);
    }
    drop(running);
    println!(
        "summary written to {}; the results page: cargo run --release --bin bench-report",
        results.path().display()
    );
}

/// Start `spec`'s server (once, before its first benchmark) and note it in
/// the results file. A server that cannot start stops the run: a benchmark
/// without one of its servers would be read as a complete one.
fn start(spec: &ServerSpec, settings: &Settings, results: &mut ResultsFile) -> Running {
    let t = Instant::now();
    match spec.start(settings) {
        Ok(server) => {
            results.add_server(spec, settings, &server);
            println!(
                "started {} at {} in {} ({})",
                spec.id,
                server.addr,
                since(t),
                if server.keeps_alive {
                    "keeps connections alive"
                } else {
                    "closes after each response"
                }
            );
            server
        }
        Err(skip) => panic!(
            "{} could not be started: {}\n\
             Fix it, or leave it out with a filter (cargo bench --bench stages -- stage).",
            spec.id, skip.reason
        ),
    }
}

/// What one of criterion's calls asks for, and what is known so far.
struct Plan {
    /// The requests criterion asked for.
    iters: u64,
    /// The time per request measured by the previous call, if any.
    per_request: Option<Duration>,
    /// The shortest run.
    min_run: Duration,
    /// The fewest rounds of the connections in a run.
    rounds: f64,
}

/// One of criterion's calls: one run of the load generator, taken again
/// (at most twice) if another program disturbed it.
///
/// Criterion asks for `iters` requests. Once the time per request is known
/// (from the first run), a run lasts as long as `iters` requests should
/// take, but at least `min_run`, and counts the requests completed in that
/// time. A run of N requests would end with an idle tail (the last requests
/// finish while the other connections wait), and a short run would mostly
/// measure opening 32 connections. A run also lasts at least three rounds
/// (two in quick mode; every connection served that many times): the first
/// round's requests wait in the server's queue less than later ones, and
/// latency is measured in the steady state. The first run sends one request
/// per connection. The caller returns to criterion the time per request
/// measured, times `iters`.
fn run(
    server: &Running,
    workload: &Workload,
    settings: &Settings,
    plan: Plan,
    patience: &mut Duration,
) -> Measurement {
    let Plan {
        iters,
        per_request,
        min_run,
        rounds,
    } = plan;
    let budget = match per_request {
        Some(t) => Budget::Time(
            t.mul_f64(iters as f64)
                .max(min_run)
                .max(t.mul_f64(rounds * settings.connections as f64)),
        ),
        None => Budget::Requests(iters.max(settings.connections as u64)),
    };
    let mut m = measure(server, workload, settings, budget);
    // Disturbed by another program (a build, a test run on the same cores)?
    // Wait for quiet and run again. (A shorter run is too short to tell: CPU
    // time is counted in 10 ms ticks.)
    let mut again = 0;
    while m.report.elapsed >= Duration::from_millis(100)
        && m.other_cores() > NOISY_CORES
        && again < 2
        && wait_for_quiet(patience)
    {
        m = measure(server, workload, settings, budget);
        again += 1;
    }
    if std::env::var_os("BENCH_DEBUG").is_some() {
        eprintln!(
            "  {iters} iters, {budget:?}: {} requests in {:?}, server {:?}, loadgen {:?}, others {:.2} cores, {again} repeats",
            m.report.requests,
            m.report.elapsed,
            m.server_cpu,
            m.loadgen_cpu,
            m.other_cores()
        );
    }
    m
}

/// The calls of criterion's measurement proper, without the warm-up before
/// them: in the flat sampling mode, the trailing calls with the same number
/// of iterations; in criterion's `--quick` mode, the last two.
fn measurement_calls(calls: Vec<(u64, Measurement)>) -> Vec<Measurement> {
    let keep = if std::env::args().any(|a| a == "--quick") {
        2
    } else {
        let last = calls.last().map(|(iters, _)| *iters);
        calls
            .iter()
            .rev()
            .take_while(|(iters, _)| Some(*iters) == last)
            .count()
    };
    let skip = calls.len().saturating_sub(keep);
    calls.into_iter().skip(skip).map(|(_, m)| m).collect()
}

fn print_summary(workload: &str, server: &str, s: &Summary, started: &Instant) {
    let j = s.to_json();
    let ms = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as f64 / 1000.0;
    let rss: Vec<String> = s
        .rss_kib
        .iter()
        .map(|k| format!("{:.1}", *k as f64 / 1024.0))
        .collect();
    println!(
        "{workload}/{server}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, server {:.2} cores ({:.1} us/req), \
         loadgen {:.2} cores, others {:.2} cores, RSS per worker [{}] MiB{} ({} in all)",
        s.rps(),
        ms(&j["p50_us"]),
        ms(&j["p99_us"]),
        j["server_cores"].as_f64().unwrap_or(0.0),
        j["server_cpu_us_per_request"].as_f64().unwrap_or(0.0),
        j["loadgen_cores"].as_f64().unwrap_or(0.0),
        j["other_cores"].as_f64().unwrap_or(0.0),
        rss.join(", "),
        if s.errors > 0 {
            format!(", {} ERRORS", s.errors)
        } else {
            String::new()
        },
        since(*started),
    );
}

/// Raises this process' soft limit of open files to its hard limit (the
/// servers started afterwards inherit it).
fn raise_open_files_limit() {
    // SAFETY: getrlimit/setrlimit read and write the struct passed, nothing else.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn config() -> Criterion {
    let settings = Settings::from_env();
    let c = Criterion::default()
        .sample_size(10)
        // The servers are noisy neighbours' neighbours: say "changed" only
        // for a real change.
        .noise_threshold(0.05);
    let c = if settings.quick {
        // Drawing criterion's plots takes longer than measuring (3 s per
        // benchmark): the quick mode leaves them out (the HTML report still
        // has the numbers; bench-report draws its own plot).
        c.warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(1000))
            .without_plots()
    } else {
        c.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5))
    };
    c.configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = stages
}
criterion_main!(benches);
