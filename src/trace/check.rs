//! The GIL's rules, checked on a trace: one holder per process at a time,
//! no socket I/O with the GIL held.

use crate::trace::{State, Trace, gil_lanes};

/// Checks a trace of a GIL build: no two threads of a process hold the GIL
/// at once, and no socket I/O happens with the GIL held. Returns what is
/// wrong, if anything.
pub fn check_gil(trace: &Trace) -> Result<(), String> {
    let lanes = gil_lanes(trace);
    let mut holds: Vec<(u64, u64, i32, i32)> = lanes
        .iter()
        .flat_map(|l| {
            l.segments
                .iter()
                .filter(|s| s.2 == State::Holding)
                .map(move |s| (s.0, s.1, l.pid, l.tid))
        })
        .collect();
    holds.sort();
    for pair in holds.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.2 == b.2 && a.3 != b.3 && b.0 < a.1 {
            return Err(format!(
                "threads {} and {} both hold the GIL at {} ns",
                a.3, b.3, b.0
            ));
        }
    }
    for lane in &lanes {
        for io in lane.segments.iter().filter(|s| s.2 == State::Io) {
            if let Some(h) = lane
                .segments
                .iter()
                .find(|h| h.2 == State::Holding && h.0 < io.1 && io.0 < h.1)
            {
                return Err(format!(
                    "thread {} held the GIL ({}..{} ns) during socket I/O",
                    lane.tid, h.0, h.1
                ));
            }
        }
    }
    for r in trace
        .records
        .iter()
        .filter(|r| r.kind == "write" || r.kind == "read")
    {
        if r.arg != 0 {
            return Err(format!(
                "thread {} did socket I/O with the GIL held at {} ns",
                r.tid, r.start
            ));
        }
    }
    Ok(())
}
