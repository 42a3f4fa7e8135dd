//! Who held the GIL when: each thread's time in Python cut into
//! [`State`]s, from the sampler's `gil` records and the thread's own spans.

use std::collections::BTreeMap;

use crate::trace::{Record, Trace};

/// What a thread was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Asked for the GIL and did not have it.
    Waiting,
    /// Held the GIL: ran Python.
    Holding,
    /// In C code called from Python that let go of the GIL (time.sleep).
    Released,
    /// Wrote to or read from its socket, without the GIL.
    Io,
    /// In Python while the sampler was not running (not scheduled by a
    /// busy machine), with other threads in Python too: who held the GIL
    /// then is not known.
    Unseen,
}

/// One thread's time, cut into states.
pub struct Lane {
    pub pid: i32,
    pub tid: i32,
    pub segments: Vec<(u64, u64, State)>,
    /// Its requests: start, end, label.
    pub requests: Vec<(u64, u64, String)>,
}

impl Lane {
    pub fn time_in(&self, state: State) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.2 == state)
            .map(|s| s.1 - s.0)
            .sum()
    }
}

/// Parts of `[start, end)` covered by `cover` (sorted, non-overlapping).
fn intersect(start: u64, end: u64, cover: &[(u64, u64)]) -> Vec<(u64, u64)> {
    cover
        .iter()
        .filter(|c| c.1 > start && c.0 < end)
        .map(|c| (c.0.max(start), c.1.min(end)))
        .collect()
}

/// Parts of `[start, end)` not covered by `cover` (sorted, non-overlapping).
fn subtract(start: u64, end: u64, cover: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = start;
    for &(s, e) in cover {
        if e <= at || s >= end {
            continue;
        }
        if s > at {
            out.push((at, s));
        }
        at = at.max(e);
    }
    if at < end {
        out.push((at, end));
    }
    out
}

/// Merges overlapping intervals.
fn merged(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The threads that served requests, with what they did when.
///
/// Who held the GIL comes from the sampler's `gil` records (CPython's own
/// state; ARG 0: nobody), matched to a thread by its Python thread state
/// during its `py` spans (inside `Python::attach`). The rest of a `py`
/// span is:
/// - C code that released the GIL, during a long C call (`time.sleep`)
///   while the sampler saw another holder or nobody;
/// - waiting, while the sampler saw another thread hold the GIL;
/// - otherwise unknown: the sampler saw nobody (the GIL changing hands),
///   or did not look (it was not scheduled): holding if this thread was
///   the only one that could be running Python then, waiting if several
///   could.
pub fn gil_lanes(trace: &Trace) -> Vec<Lane> {
    let mut threads: BTreeMap<(i32, i32), Vec<&Record>> = BTreeMap::new();
    let mut holds: BTreeMap<(i32, u64), Vec<(u64, u64)>> = BTreeMap::new();
    let mut any_hold: BTreeMap<i32, Vec<(u64, u64)>> = BTreeMap::new();
    let mut watched: BTreeMap<i32, Vec<(u64, u64)>> = BTreeMap::new();
    for r in &trace.records {
        if r.kind == "gil" {
            watched.entry(r.pid).or_default().push((r.start, r.end));
            if r.arg != 0 {
                holds
                    .entry((r.pid, r.arg))
                    .or_default()
                    .push((r.start, r.end));
                any_hold.entry(r.pid).or_default().push((r.start, r.end));
            }
        } else if ["wait", "py", "write", "read", "c_call", "req"].contains(&r.kind.as_str()) {
            threads.entry((r.pid, r.tid)).or_default().push(r);
        }
    }
    for v in holds.values_mut() {
        *v = merged(std::mem::take(v));
    }
    for map in [&mut any_hold, &mut watched] {
        for v in map.values_mut() {
            *v = merged(std::mem::take(v));
        }
    }
    let mut lanes = Vec::new();
    // Per thread, the times nobody was seen holding the GIL while it was
    // in Python: settled below, across the threads of its process.
    let mut unknown: Vec<Unknown> = Vec::new();
    for ((pid, tid), records) in threads {
        let mut segments = Vec::new();
        let mut open = Vec::new();
        let mut unseen = Vec::new();
        let c_calls = merged(
            records
                .iter()
                .filter(|r| r.kind == "c_call")
                .map(|r| (r.start, r.end))
                .collect(),
        );
        let others = any_hold.get(&pid).cloned().unwrap_or_default();
        // No sampler at all (a Python other than 3.11): C calls are taken
        // to release the GIL, as `time.sleep` does.
        let seen = watched
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| vec![(0, u64::MAX)]);
        for r in &records {
            match r.kind.as_str() {
                "wait" => segments.push((r.start, r.end, State::Waiting)),
                "write" | "read" => segments.push((r.start, r.end, State::Io)),
                "py" => {
                    let mine = holds.get(&(pid, r.arg)).cloned().unwrap_or_default();
                    let held = intersect(r.start, r.end, &mine);
                    for &(s, e) in &held {
                        segments.push((s, e, State::Holding));
                    }
                    for (s, e) in subtract(r.start, r.end, &held) {
                        // What the sampler did not see is settled below.
                        for (us, ue) in subtract(s, e, &seen) {
                            // A C call nobody watched may or may not have
                            // let go of the GIL.
                            for &(cs, ce) in &intersect(us, ue, &c_calls) {
                                segments.push((cs, ce, State::Unseen));
                            }
                            unseen.extend(subtract(us, ue, &c_calls));
                        }
                        for (ss, se) in intersect(s, e, &seen) {
                            for &(cs, ce) in &intersect(ss, se, &c_calls) {
                                segments.push((cs, ce, State::Released));
                            }
                            for (ws, we) in subtract(ss, se, &c_calls) {
                                for &(hs, he) in &intersect(ws, we, &others) {
                                    segments.push((hs, he, State::Waiting));
                                }
                                open.extend(subtract(ws, we, &others));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let requests = records
            .iter()
            .filter(|r| r.kind == "req")
            .map(|r| (r.start, r.end, r.label.clone()))
            .collect();
        lanes.push(Lane {
            pid,
            tid,
            segments,
            requests,
        });
        unknown.push((open, unseen));
    }
    settle_unknown(&mut lanes, &unknown);
    for lane in &mut lanes {
        lane.segments.sort_by_key(|s| s.0);
    }
    lanes.retain(|lane| !lane.requests.is_empty());
    lanes
}

/// A thread's times in Python that the sampler does not settle: (seen
/// nobody holding the GIL, not seen at all).
type Unknown = (Vec<(u64, u64)>, Vec<(u64, u64)>);

/// Times no sampled holder covers. A thread alone in Python then held the
/// GIL (a hold shorter than the sampler's period); several at once: when
/// the sampler saw the GIL free, they were handing it over (waiting);
/// when it did not look, nobody knows ([`State::Unseen`]).
fn settle_unknown(lanes: &mut [Lane], unknown: &[Unknown]) {
    // (time, pid, lane, starts, sampler looked)
    let mut edges: Vec<(u64, i32, usize, bool, bool)> = Vec::new();
    for (i, (free, unseen)) in unknown.iter().enumerate() {
        for (spans, looked) in [(free, true), (unseen, false)] {
            for &(s, e) in spans {
                edges.push((s, lanes[i].pid, i, true, looked));
                edges.push((e, lanes[i].pid, i, false, looked));
            }
        }
    }
    edges.sort_by_key(|e| (e.1, e.0, !e.3));
    let mut inside: BTreeMap<i32, Vec<(usize, bool)>> = BTreeMap::new();
    let mut last: BTreeMap<i32, u64> = BTreeMap::new();
    for (t, pid, lane, starts, looked) in edges {
        let now = inside.entry(pid).or_default();
        if let Some(&from) = last.get(&pid)
            && t > from
        {
            for &(i, seen) in now.iter() {
                let state = if now.len() == 1 {
                    State::Holding
                } else if seen {
                    State::Waiting
                } else {
                    State::Unseen
                };
                lanes[i].segments.push((from, t, state));
            }
        }
        if starts {
            now.push((lane, looked));
        } else if let Some(k) = now.iter().position(|&x| x == (lane, looked)) {
            now.swap_remove(k);
        }
        last.insert(pid, t);
    }
}
