//! The runs behind the book's pictures: each starts a stage with `--trace`,
//! gives it a known load (and, for stage 3, the signals of the lesson),
//! stops it and returns its trace. `cargo run --release --bin figures`
//! draws them into `book/src/figures/`; `tests/trace.rs` checks what the
//! same runs must contain.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::client;
use crate::procs;
use crate::server::{ServerProcess, try_workspace_bin};
use crate::trace::Trace;

/// A stage started with `--trace FILE`, and the file.
pub struct Traced {
    pub server: ServerProcess,
    pub path: PathBuf,
}

impl Traced {
    /// Starts `bin` with `args` and `--trace` into `path`, and `env`.
    pub fn start(
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
        path: &Path,
    ) -> Result<Traced, String> {
        let _ = std::fs::remove_file(path);
        let mut all: Vec<&str> = args.to_vec();
        let p = path.to_str().ok_or("the trace path is not UTF-8")?;
        all.extend(["--trace", p]);
        let server = ServerProcess::start_with(bin, &all, env, None)?;
        Ok(Traced {
            server,
            path: path.to_path_buf(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Stops the server with SIGTERM (a graceful stop flushes the trace)
    /// and reads the trace.
    pub fn stop(mut self) -> Result<Trace, String> {
        self.server.signal(libc::SIGTERM);
        if self.server.wait_timeout(Duration::from_secs(30)).is_none() {
            return Err("the server did not stop within 30 s of SIGTERM".into());
        }
        Trace::read(&self.path)
    }
}

/// `clients` clients at once, each sending `each` requests for `path`, one
/// after the other on a new connection. Panics on an answer other than 200:
/// a picture of failed requests would teach the wrong thing.
pub fn load(addr: SocketAddr, path: &str, clients: usize, each: usize) {
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let path = path.to_string();
            thread::spawn(move || {
                for _ in 0..each {
                    let r = client::get(addr, &path).expect("a response");
                    assert_eq!(r.status, 200, "{path}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a load thread");
    }
}

/// Stage 2 with four threads and the lab app, tracing into `path`;
/// `switch_ms` sets CPython's switch interval (`LAB_SWITCH_INTERVAL_MS`).
pub fn stage2(path: &Path, switch_ms: Option<u32>) -> Result<Traced, String> {
    let ms = switch_ms.map(|m| m.to_string());
    let env: Vec<(&str, &str)> = ms
        .as_deref()
        .map(|m| vec![("LAB_SWITCH_INTERVAL_MS", m)])
        .unwrap_or_default();
    Traced::start(
        "stage2-threads",
        &["apps.lab:app", "-b", "127.0.0.1:0", "--threads", "4"],
        &env,
        path,
    )
}

/// Four clients, two requests each, of `path` (e.g. `/cpu?ms=20`), on stage
/// 2's four threads.
pub fn gil_run(trace: &Path, path: &str, switch_ms: Option<u32>) -> Result<Trace, String> {
    let server = stage2(trace, switch_ms)?;
    load(server.addr(), path, 4, 2);
    server.stop()
}

/// `n` requests for `/` from one client on stage 2: a request's steps.
pub fn request_run(trace: &Path, n: usize) -> Result<Trace, String> {
    let server = stage2(trace, None)?;
    load(server.addr(), "/", 1, n);
    server.stop()
}

/// What happened in [`workers_run`], for the book and the tests.
#[derive(Debug, Default)]
pub struct WorkersRun {
    /// The worker killed with SIGKILL.
    pub killed: u32,
    /// Requests answered 200 by the steady client.
    pub answered: usize,
    /// The hung request's status, if it got one (the master kills its
    /// worker: the connection closes without an answer).
    pub hung_status: Option<u16>,
    /// The two one-second requests in flight at HUP: answered by the old
    /// workers (200) as they stop gracefully.
    pub slow_statuses: Vec<Option<u16>>,
}

/// The lesson of stage 3 in one run, about 12 s: two workers (`--timeout
/// 2`, `--max-requests 150`) under a steady trickle of requests (one every
/// 10 ms); then kill -9 of a worker (1 s), TTIN (2.5 s), TTOU (4 s), HUP
/// (5.5 s) while both workers serve a one-second request, a request that
/// hangs for longer than the timeout (7 s), and a last stretch of the
/// trickle, until 12 s.
pub fn workers_run(trace: &Path) -> Result<(Trace, WorkersRun), String> {
    let server = Traced::start(
        "stage3-prefork",
        &[
            "apps.lab:app",
            "-b",
            "127.0.0.1:0",
            "-w",
            "2",
            "--timeout",
            "2",
            "--max-requests",
            "150",
        ],
        &[],
        trace,
    )?;
    let addr = server.addr();
    let master = server.server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    // The steady client: a request every 10 ms, so the picture shows
    // requests without filling the lanes.
    let trickle = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut ok = 0;
            while !stop.load(Ordering::Relaxed) {
                if client::get(addr, "/").is_ok_and(|r| r.status == 200) {
                    ok += 1;
                }
                thread::sleep(Duration::from_millis(10));
            }
            ok
        })
    };
    let t0 = Instant::now();
    let at = |s: f64| {
        let when = t0 + Duration::from_secs_f64(s);
        thread::sleep(when.saturating_duration_since(Instant::now()));
    };
    let signal = |sig: i32| {
        // SAFETY: kill(2) on the master this run started.
        unsafe { libc::kill(master as i32, sig) };
    };
    let mut run = WorkersRun::default();

    at(1.0);
    let workers = procs::children(master);
    run.killed = *workers
        .first()
        .ok_or("stage 3 has no workers one second after it started")?;
    // SAFETY: kill(2) on a worker of the master this run started.
    unsafe { libc::kill(run.killed as i32, libc::SIGKILL) };
    at(2.5);
    signal(libc::SIGTTIN);
    at(4.0);
    signal(libc::SIGTTOU);
    at(5.2);
    // Both workers busy with a one-second request when HUP comes: they
    // finish it while the new generation already serves (a graceful reload).
    let slow: Vec<_> = (0..2)
        .map(|_| thread::spawn(move || client::get(addr, "/io?ms=1000").map(|r| r.status)))
        .collect();
    at(5.5);
    signal(libc::SIGHUP);
    at(7.0);
    // A request that sleeps 30 s: its worker stops answering the master's
    // heartbeat, and `--timeout 2` has the master kill it.
    let hung = thread::spawn(move || {
        let mut conn = client::Conn::connect(addr).ok()?;
        conn.set_timeout(Duration::from_secs(10));
        conn.send(b"GET /io?ms=30000 HTTP/1.1\r\nHost: x\r\n\r\n")
            .ok()?;
        conn.read_response(false).ok().map(|r| r.status)
    });
    at(12.0);
    stop.store(true, Ordering::Relaxed);
    run.answered = trickle.join().map_err(|_| "the steady client panicked")?;
    run.hung_status = hung.join().map_err(|_| "the hung client panicked")?;
    for h in slow {
        run.slow_statuses
            .push(h.join().map_err(|_| "a slow client panicked")?.ok());
    }
    Ok((server.stop()?, run))
}

/// Requests per second of stage 2 (four threads, `/` of the lab app, 16
/// keep-alive connections, `secs` seconds), with and without `--trace`:
/// `rounds` pairs, alternating, so both see the same machine.
pub fn overhead(trace: &Path, secs: f64, rounds: usize) -> Result<Vec<(f64, f64)>, String> {
    let mut out = Vec::new();
    for _ in 0..rounds {
        let mut pair = [0.0; 2];
        for (i, traced) in [false, true].into_iter().enumerate() {
            let args = ["apps.lab:app", "-b", "127.0.0.1:0", "--threads", "4"];
            let (server, traced_server) = if traced {
                let t = Traced::start("stage2-threads", &args, &[], trace)?;
                (None, Some(t))
            } else {
                (Some(ServerProcess::start("stage2-threads", &args)?), None)
            };
            let addr = server
                .as_ref()
                .map(|s| s.addr())
                .or(traced_server.as_ref().map(|t| t.addr()))
                .expect("one of them");
            pair[i] = loadgen_rps(addr, secs)?;
            if let Some(t) = traced_server {
                t.stop()?;
                let _ = std::fs::remove_file(trace);
            }
            if let Some(mut s) = server {
                s.terminate(Duration::from_secs(10));
            }
        }
        out.push((pair[0], pair[1]));
    }
    Ok(out)
}

/// Requests per second from the `loadgen` binary (16 keep-alive
/// connections for `secs` seconds), from its `--json` report.
fn loadgen_rps(addr: SocketAddr, secs: f64) -> Result<f64, String> {
    let out = std::process::Command::new(try_workspace_bin("loadgen")?)
        .args([
            &format!("http://{addr}/"),
            "-c",
            "16",
            "-d",
            &format!("{secs}s"),
            "--json",
        ])
        .output()
        .map_err(|e| format!("cannot run loadgen: {e}"))?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "loadgen's report is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    report["rps"]
        .as_f64()
        .ok_or_else(|| format!("no rps in loadgen's report: {report}"))
}
