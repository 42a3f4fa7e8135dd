//! Stage 3's worker processes, read from the master's events: when each
//! was born, what it served, when and how it died.

use crate::trace::Trace;

/// A worker process's life, from the master's events and its requests.
pub struct WorkerLife {
    pub pid: i32,
    pub slot: usize,
    pub generation: u64,
    pub born: u64,
    /// When it died and how (the master's words).
    pub died: Option<(u64, String)>,
    pub requests: Vec<(u64, u64)>,
    /// Requests begun and never finished: (start, label).
    pub unfinished: Vec<(u64, String)>,
}

/// Stage 3's workers, in order of birth.
pub fn workers(trace: &Trace) -> Vec<WorkerLife> {
    let mut lives: Vec<WorkerLife> = trace
        .of_kind("spawn")
        .map(|r| WorkerLife {
            pid: r.pid,
            slot: r.tid as usize,
            generation: r.arg,
            born: r.start,
            died: None,
            requests: Vec::new(),
            unfinished: Vec::new(),
        })
        .collect();
    for r in trace.of_kind("exit") {
        if let Some(life) = lives.iter_mut().find(|l| l.pid == r.pid) {
            life.died = Some((r.start, r.label.clone()));
        }
    }
    for r in trace.of_kind("req") {
        if let Some(life) = lives.iter_mut().find(|l| l.pid == r.pid) {
            life.requests.push((r.start, r.end));
        }
    }
    for r in trace.of_kind("begin") {
        let finished = trace
            .of_kind("req")
            .any(|q| q.pid == r.pid && q.tid == r.tid && q.start == r.start);
        if !finished && let Some(life) = lives.iter_mut().find(|l| l.pid == r.pid) {
            life.unfinished.push((r.start, r.label.clone()));
        }
    }
    lives
}
