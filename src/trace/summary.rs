//! A GIL trace in a few lines of text: what `trace-view` prints when it
//! draws a GIL picture, and `figures` when it draws the book's.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::trace::{State, Trace, gil_lanes};

/// How many times the GIL passed from one thread to another (per the
/// sampler), in all processes of the trace.
pub fn handovers(trace: &Trace) -> usize {
    let mut last: BTreeMap<i32, u64> = BTreeMap::new();
    let mut count = 0;
    for r in trace.of_kind("gil").filter(|r| r.arg != 0) {
        if let Some(prev) = last.insert(r.pid, r.arg)
            && prev != r.arg
        {
            count += 1;
        }
    }
    count
}

/// A few lines on a GIL trace: per thread, its time in each state; the
/// hand-overs of the GIL and how long a thread kept it (median).
pub fn gil_summary(trace: &Trace) -> String {
    let lanes = gil_lanes(trace);
    let mut out = String::new();
    let mut slices: Vec<u64> = Vec::new();
    for (i, lane) in lanes.iter().enumerate() {
        let ms = |s| lane.time_in(s) as f64 / 1e6;
        let _ = writeln!(
            out,
            "thread {} (tid {}): {} request{}; GIL held {:.1} ms, waiting {:.1} ms, C code without the GIL {:.1} ms, socket I/O {:.2} ms",
            i + 1,
            lane.tid,
            lane.requests.len(),
            if lane.requests.len() == 1 { "" } else { "s" },
            ms(State::Holding),
            ms(State::Waiting),
            ms(State::Released),
            ms(State::Io)
        );
        if lane.time_in(State::Unseen) >= 50_000 {
            let _ = writeln!(out, "  and {:.1} ms not sampled", ms(State::Unseen));
        }
        slices.extend(
            lane.segments
                .iter()
                .filter(|s| s.2 == State::Holding)
                .map(|s| s.1 - s.0),
        );
    }
    slices.sort_unstable();
    if !slices.is_empty() {
        let _ = writeln!(
            out,
            "the GIL changed hands {} times; a thread kept it {:.2} ms (median of {} holds)",
            handovers(trace),
            slices[slices.len() / 2] as f64 / 1e6,
            slices.len()
        );
    }
    out
}
