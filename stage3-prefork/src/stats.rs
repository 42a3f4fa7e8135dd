//! `--stats`: a JSON snapshot of the master and its workers, in the spirit of
//! uWSGI's stats server. `curl 127.0.0.1:9191` during a class demo shows
//! which worker is busy, how many requests each served, and their memory.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::arbiter::{Arbiter, WorkerState};
use crate::listen::Listeners;

pub(crate) fn snapshot(arbiter: &Arbiter) -> Value {
    let mut workers: Vec<&crate::arbiter::WorkerProcess> = arbiter.workers.iter().collect();
    workers.sort_by_key(|w| w.slot);
    let workers: Vec<Value> = workers
        .into_iter()
        .map(|w| {
            let slot = arbiter.scoreboard.slot(w.slot);
            let pid = w.pid.as_raw();
            json!({
                "id": w.slot + 1,
                "pid": pid,
                "generation": w.generation,
                "state": match w.state {
                    WorkerState::Running => "running",
                    WorkerState::Stopping(_) => "stopping",
                    WorkerState::Killed => "killed",
                },
                "status": if slot.busy.load(Ordering::Relaxed) > 0 { "busy" } else { "idle" },
                "requests": slot.requests.load(Ordering::Relaxed),
                "accept_missed": slot.accept_missed.load(Ordering::Relaxed),
                "last_heartbeat_secs": slot.silent_for_ms() as f64 / 1000.0,
                "running_secs": w.started.elapsed().as_secs_f64(),
                "rss_kib": rss_kib(pid),
                "pss_kib": pss_kib(pid),
            })
        })
        .collect();
    let config = &arbiter.config;
    let listeners = arbiter.listeners.as_ref();
    json!({
        "master": {
            "pid": std::process::id(),
            "listen": listeners.map(|l| l.describe(arbiter.worker_class.protocol())),
            "worker_class": arbiter.worker_class.name(),
            "workers_target": arbiter.target,
            "generation": arbiter.generation,
            "preload": config.preload,
            "reuse_port": matches!(listeners, Some(Listeners::ReusePort { .. })),
            "timeout_secs": config.timeout.map(|t| t.as_secs()),
            "max_requests": config.max_requests,
            "running_secs": arbiter.started.elapsed().as_secs_f64(),
            "rss_kib": rss_kib(std::process::id() as i32),
        },
        "workers": workers,
    })
}

/// Resident memory: every page the process has in RAM, shared or not.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    Some(pages * page / 1024)
}

/// Proportional memory: shared pages divided among the processes sharing
/// them. The honest per-worker figure once `--preload` shares pages.
pub fn pss_kib(pid: i32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
