//! `--stats`: a JSON snapshot of the master and its workers, in the spirit of
//! uWSGI's stats server. `curl 127.0.0.1:9191` during a class demo shows
//! which worker is busy, how many requests each served, and their memory.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use supervise::memory::{pss_kib, rss_kib};

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
                    WorkerState::Aborted(_) => "aborted",
                    WorkerState::Killed => "killed",
                },
                "status": if slot.busy.load(Ordering::Relaxed) > 0 { "busy" } else { "idle" },
                "requests": slot.requests.load(Ordering::Relaxed),
                "accept_missed": slot.accept_missed.load(Ordering::Relaxed),
                "last_heartbeat_secs": slot.silent_for_ms() as f64 / 1000.0,
                "running_secs": w.started.elapsed().as_secs_f64(),
                "rss_kib": rss_kib(pid as u32),
                "pss_kib": pss_kib(pid as u32),
            })
        })
        .collect();
    let config = &arbiter.config;
    let listeners = arbiter.listeners.as_ref();
    json!({
        "master": {
            "pid": std::process::id(),
            "listen": listeners.map(|l| l.describe(arbiter.worker_class.protocol()).join(", ")),
            "worker_class": arbiter.worker_class.name(),
            "workers_target": arbiter.target,
            "generation": arbiter.generation,
            "preload": config.preload,
            "reuse_port": listeners.is_some_and(Listeners::reuse_port),
            "timeout_secs": config.timeout.map(|t| t.as_secs()),
            "max_requests": config.max_requests,
            "running_secs": arbiter.started.elapsed().as_secs_f64(),
            "rss_kib": rss_kib(std::process::id()),
        },
        "workers": workers,
    })
}
