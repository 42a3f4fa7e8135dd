//! The steps of one request through the bridge, and how long each took.

use std::collections::BTreeMap;

use crate::trace::{Record, State, Trace};

/// The steps of a request, in order, and whether the GIL is held in each.
pub const STEPS: [(&str, &str, Option<State>); 10] = [
    ("parse", "parse the head (http-codec)", None),
    (
        "wait",
        "Python::attach: wait for the GIL",
        Some(State::Waiting),
    ),
    (
        "objects",
        "wsgi.input, start_response objects",
        Some(State::Holding),
    ),
    ("environ", "build environ", Some(State::Holding)),
    ("app", "app(environ, start_response)", Some(State::Holding)),
    (
        "start_response",
        "  of which start_response",
        Some(State::Holding),
    ),
    ("body", "iterate the body", Some(State::Holding)),
    ("head", "the response head, buffered", Some(State::Holding)),
    (
        "release",
        "the rest: close(), objects kept",
        Some(State::Holding),
    ),
    (
        "write",
        "write the response (GIL released)",
        Some(State::Io),
    ),
];

/// Per step: (kind, median ns, mean ns, count).
pub fn step_times(trace: &Trace) -> Vec<(&'static str, f64, f64, usize)> {
    let mut by_kind: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for r in &trace.records {
        by_kind
            .entry(r.kind.as_str())
            .or_default()
            .push(r.end - r.start);
    }
    // What is left of each py span after the steps above: close(), the
    // objects kept for the next request, the bookkeeping.
    let mut rest: Vec<u64> = Vec::new();
    let mut inner: BTreeMap<(i32, i32), Vec<&Record>> = BTreeMap::new();
    for r in &trace.records {
        if ["objects", "environ", "app", "body", "head"].contains(&r.kind.as_str()) {
            inner.entry((r.pid, r.tid)).or_default().push(r);
        }
    }
    for py in trace.of_kind("py") {
        let steps: u64 = inner.get(&(py.pid, py.tid)).map_or(0, |v| {
            v.iter()
                .filter(|r| r.start >= py.start && r.end <= py.end)
                .map(|r| r.end - r.start)
                .sum()
        });
        rest.push((py.end - py.start).saturating_sub(steps));
    }
    if !rest.is_empty() {
        by_kind.insert("release", rest);
    }
    STEPS
        .iter()
        .filter_map(|&(kind, _, _)| {
            let mut v = by_kind.get(kind)?.clone();
            v.sort_unstable();
            let median = v[v.len() / 2] as f64;
            let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
            Some((kind, median, mean, v.len()))
        })
        .collect()
}
