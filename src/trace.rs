//! Reading a `--trace` file (written by `wsgi_bridge::trace` in stage 2 and
//! stage 3's workers, and by stage 3's master) and drawing it as SVG: the
//! `trace-view` command, and what the tests check in a trace.
//!
//! Three pictures:
//!
//! - [`gil_svg`]: a lane per thread, coloured by what the thread was doing:
//!   holding the GIL, waiting for it, in C code that released it
//!   (`time.sleep`), writing to its socket without it;
//! - [`workers_svg`]: a lane per worker process of stage 3: its requests,
//!   its birth and its death, the signals the master handled;
//! - [`request_svg`]: the steps of one request, each drawn with its median
//!   time, and where the GIL is held.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One line of a trace.
#[derive(Clone, Debug)]
pub struct Record {
    pub kind: String,
    pub pid: i32,
    pub tid: i32,
    pub start: u64,
    pub end: u64,
    pub arg: u64,
    pub label: String,
}

pub struct Trace {
    pub records: Vec<Record>,
}

impl Trace {
    pub fn parse(text: &str) -> Result<Trace, String> {
        let mut records = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let mut parts = line.splitn(7, ' ');
            let mut next = || parts.next().ok_or(format!("line {}: too short", n + 1));
            let kind = next()?.to_string();
            let num = |s: &str| -> Result<u64, String> {
                s.parse()
                    .map_err(|_| format!("line {}: {s:?} is not a number", n + 1))
            };
            let pid = num(next()?)? as i32;
            let tid = num(next()?)? as i32;
            let start = num(next()?)?;
            let end = num(next()?)?;
            let arg = num(next()?)?;
            let label = parts.next().unwrap_or("").to_string();
            records.push(Record {
                kind,
                pid,
                tid,
                start,
                end,
                arg,
                label,
            });
        }
        records.sort_by_key(|r| r.start);
        Ok(Trace { records })
    }

    pub fn read(path: &std::path::Path) -> Result<Trace, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Trace::parse(&text)
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Record> + 'a {
        self.records.iter().filter(move |r| r.kind == kind)
    }

    /// Whether the master of stage 3 wrote events (a workers timeline).
    pub fn has_workers(&self) -> bool {
        self.of_kind("spawn").next().is_some()
    }

    fn first(&self) -> u64 {
        self.records.iter().map(|r| r.start).min().unwrap_or(0)
    }
}

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

impl State {
    const ALL: [State; 5] = [
        State::Holding,
        State::Waiting,
        State::Released,
        State::Io,
        State::Unseen,
    ];

    fn colour(self) -> &'static str {
        match self {
            State::Holding => "#2b6cb0",
            State::Waiting => "#f6ad55",
            State::Released => "#b7c4d1",
            State::Io => "#38a169",
            State::Unseen => "url(#unseen)",
        }
    }

    fn legend(self) -> &'static str {
        match self {
            State::Holding => "holds the GIL (runs Python)",
            State::Waiting => "waits for the GIL",
            State::Released => "in C code without the GIL (time.sleep)",
            State::Io => "socket I/O without the GIL",
            State::Unseen => "not sampled",
        }
    }
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

/// The time window to draw, in ms since the trace's first request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    pub from_ms: Option<f64>,
    pub to_ms: Option<f64>,
}

// Drawn at about the width of the book's text column, so that mdBook
// shows the text at the size written here.
const WIDTH: f64 = 960.0;
const LEFT: f64 = 130.0;
/// Where the title, subtitle and legend start.
const MARGIN: f64 = 12.0;
const RIGHT: f64 = 30.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" step for axis ticks: 1, 2 or 5 times a power of ten, giving
/// about `target` ticks over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = span / target;
    let power = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * power >= raw {
            return m * power;
        }
    }
    10.0 * power
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The x scale: `t0..t1` (ns) onto the plot's width.
struct Scale {
    t0: u64,
    t1: u64,
    /// Where the plot ends on the right.
    right: f64,
}

impl Scale {
    fn x(&self, t: u64) -> f64 {
        let t = t.clamp(self.t0, self.t1);
        LEFT + (t - self.t0) as f64 / (self.t1 - self.t0).max(1) as f64 * (self.right - LEFT)
    }

    /// A time axis at `y`, ticks down to `bottom`, in `unit` (ns per unit).
    fn axis(&self, svg: &mut String, top: f64, y: f64, unit: f64, unit_name: &str, origin: u64) {
        let from = (self.t0 as f64 - origin as f64) / unit;
        let to = (self.t1 as f64 - origin as f64) / unit;
        let step = nice_step(to - from, 10.0);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y}" x2="{:.1}" y2="{y}" stroke="#333"/>"##,
            self.right
        );
        let mut v = (from / step).ceil() * step;
        while v <= to + 1e-9 {
            let t = (origin as f64 + v * unit) as u64;
            let x = self.x(t);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{y}" stroke="#ddd"/><line x1="{x:.1}" y1="{y}" x2="{x:.1}" y2="{:.1}" stroke="#333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                y + 5.0,
                y + 18.0,
                fmt_num(v)
            );
            v += step;
        }
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">time ({unit_name})</text>"##,
            (LEFT + self.right) / 2.0,
            y + 36.0
        );
    }
}

fn header(svg: &mut String, height: f64, title: &str, subtitle: &str) {
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif" font-size="16">
<defs><pattern id="unseen" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#edf2f7"/><rect width="2" height="6" fill="#a0aec0"/></pattern></defs>
<rect width="100%" height="100%" fill="white"/>
<text x="{MARGIN}" y="24" font-size="19" font-weight="bold">{}</text>
<text x="{MARGIN}" y="46" fill="#555" font-size="14">{}</text>"##,
        escape(title),
        escape(subtitle)
    );
}

/// A row of coloured boxes and their meaning; a second row when the
/// first is full.
fn legend(svg: &mut String, y: f64, items: &[(&str, &str)]) {
    let mut x = MARGIN;
    let mut y = y;
    for (colour, text) in items {
        let width = 30.0 + 8.6 * text.chars().count() as f64;
        if x > MARGIN && x + width > WIDTH - RIGHT {
            x = MARGIN;
            y += 22.0;
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{x:.1}" y="{:.1}" width="16" height="12" fill="{colour}" stroke="#333" stroke-width="0.5"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            y - 10.0,
            x + 22.0,
            y,
            escape(text)
        );
        x += width;
    }
}

/// The window in ns, from [`Window`] (ms since `origin`), else `lo..hi`.
fn window_ns(window: Window, origin: u64, lo: u64, hi: u64) -> (u64, u64) {
    let at = |ms: f64| origin + (ms * 1e6).max(0.0) as u64;
    let t0 = window.from_ms.map_or(lo, at);
    let t1 = window.to_ms.map_or(hi, at);
    (t0, t1.max(t0 + 1))
}

/// A lane per thread: the GIL, drawn.
pub fn gil_svg(trace: &Trace, title: &str, window: Window) -> String {
    let lanes = gil_lanes(trace);
    let origin = lanes
        .iter()
        .flat_map(|l| l.requests.iter().map(|r| r.0))
        .min()
        .unwrap_or_else(|| trace.first());
    let hi = lanes
        .iter()
        .flat_map(|l| l.segments.iter().map(|s| s.1))
        .max()
        .unwrap_or(origin + 1);
    let (t0, t1) = window_ns(window, origin, origin, hi);
    let scale = Scale {
        t0,
        t1,
        right: WIDTH - RIGHT,
    };
    let lane_h = 34.0;
    let top = 124.0;
    let height = top + lanes.len() as f64 * (lane_h + 14.0) + 60.0;
    let mut svg = String::new();
    let sampled = trace.of_kind("gil").next().is_some();
    let subtitle = format!(
        "{} threads; {}; thin bars above a lane: its requests",
        lanes.len(),
        if sampled {
            "who holds the GIL: CPython's GIL state, sampled every 20 µs"
        } else {
            "no GIL samples: blue is time inside Python::attach"
        }
    );
    header(&mut svg, height, title, &subtitle);
    let items: Vec<(&str, &str)> = State::ALL
        .iter()
        .map(|s| (s.colour(), s.legend()))
        .collect();
    legend(&mut svg, 74.0, &items);
    for (i, lane) in lanes.iter().enumerate() {
        let y = top + i as f64 * (lane_h + 14.0) + 8.0;
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">thread {}</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#777" font-size="12">tid {}</text><rect x="{LEFT}" y="{y:.1}" width="{:.1}" height="{lane_h}" fill="#f7f7f7"/>"##,
            LEFT - 8.0,
            y + 15.0,
            i + 1,
            LEFT - 8.0,
            y + 29.0,
            lane.tid,
            WIDTH - LEFT - RIGHT
        );
        for &(s, e, state) in &lane.segments {
            if e <= t0 || s >= t1 {
                continue;
            }
            let (x0, x1) = (scale.x(s), scale.x(e));
            let _ = writeln!(
                svg,
                r##"<rect x="{x0:.2}" y="{y:.1}" width="{:.2}" height="{lane_h}" fill="{}"/>"##,
                (x1 - x0).max(0.4),
                state.colour()
            );
        }
        for (s, e, label) in &lane.requests {
            if *e <= t0 || *s >= t1 {
                continue;
            }
            let (x0, x1) = (scale.x(*s), scale.x(*e));
            let _ = writeln!(
                svg,
                r##"<rect x="{x0:.2}" y="{:.1}" width="{:.2}" height="3" fill="#222"/><line x1="{x0:.2}" y1="{:.1}" x2="{x0:.2}" y2="{:.1}" stroke="#222"/>"##,
                y - 5.0,
                (x1 - x0).max(1.0),
                y - 7.0,
                y + lane_h
            );
            if x1 - x0 > 7.0 * label.len() as f64 {
                let _ = writeln!(
                    svg,
                    r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="white">{}</text>"##,
                    x0 + 4.0,
                    y + lane_h - 5.0,
                    escape(label)
                );
            }
        }
    }
    let axis_y = top + lanes.len() as f64 * (lane_h + 14.0) + 4.0;
    let (unit, name) = if t1 - t0 > 5_000_000_000 {
        (1e9, "s since the first request")
    } else {
        (1e6, "ms since the first request")
    };
    scale.axis(&mut svg, top, axis_y, unit, name, origin);
    svg.push_str("</svg>\n");
    svg
}

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

/// A lane per worker process: the workers, drawn.
pub fn workers_svg(trace: &Trace, title: &str, window: Window) -> String {
    let lives = workers(trace);
    let origin = trace.first();
    let hi = trace.records.iter().map(|r| r.end).max().unwrap_or(origin) + 200_000_000;
    let (t0, t1) = window_ns(window, origin, origin, hi);
    // The right-hand column says how each worker died.
    let scale = Scale {
        t0,
        t1,
        right: WIDTH - 320.0,
    };
    let lane_h = 22.0;
    let top = 142.0;
    let height = top + lives.len() as f64 * (lane_h + 8.0) + 60.0;
    let mut svg = String::new();
    header(
        &mut svg,
        height,
        title,
        &format!(
            "{} worker processes over the run; a lane per process (pid, generation); dashed lines: signals the master handled",
            lives.len()
        ),
    );
    legend(
        &mut svg,
        74.0,
        &[
            ("#c6f6d5", "alive, idle"),
            ("#2b6cb0", "serving a request"),
            ("#38a169", "born (forked)"),
            ("#dd6b20", "a request that never finished"),
            ("#e53e3e", "died (the master's reason)"),
        ],
    );
    let bottom = top + lives.len() as f64 * (lane_h + 8.0);
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-weight="bold">how it ended</text>"##,
        scale.right + 14.0,
        top - 8.0
    );
    for r in trace.of_kind("signal") {
        let x = scale.x(r.start);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="#805ad5" stroke-dasharray="4 3"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#805ad5" font-weight="bold">{}</text>"##,
            top - 12.0,
            top - 16.0,
            escape(&r.label)
        );
    }
    for (i, life) in lives.iter().enumerate() {
        let y = top + i as f64 * (lane_h + 8.0);
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">pid {} <tspan fill="#777" font-size="12">gen {}</tspan></text>"##,
            LEFT - 8.0,
            y + 15.0,
            life.pid,
            life.generation
        );
        let end = life.died.as_ref().map_or(t1, |d| d.0);
        let (x0, x1) = (scale.x(life.born), scale.x(end));
        let _ = writeln!(
            svg,
            r##"<rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{lane_h}" fill="#c6f6d5"/>"##,
            (x1 - x0).max(0.5)
        );
        for &(s, e) in &life.requests {
            if e < t0 || s > t1 {
                continue;
            }
            let (a, b) = (scale.x(s), scale.x(e));
            let _ = writeln!(
                svg,
                r##"<rect x="{a:.2}" y="{:.1}" width="{:.2}" height="{:.1}" fill="#2b6cb0"/>"##,
                y + 3.0,
                (b - a).max(0.6),
                lane_h - 6.0
            );
        }
        for (s, label) in &life.unfinished {
            let (a, b) = (scale.x(*s), scale.x(life.died.as_ref().map_or(t1, |d| d.0)));
            let _ = writeln!(
                svg,
                r##"<rect x="{a:.2}" y="{:.1}" width="{:.2}" height="{:.1}" fill="#dd6b20"/><text x="{:.1}" y="{:.1}" font-size="11" fill="white">hung {}</text>"##,
                y + 3.0,
                (b - a).max(0.6),
                lane_h - 6.0,
                a + 4.0,
                y + lane_h - 7.0,
                if b - a > 130.0 {
                    escape(label.split_once(' ').map_or(label.as_str(), |p| p.1))
                } else {
                    String::new()
                }
            );
        }
        if life.born >= t0 {
            let _ = writeln!(
                svg,
                r##"<circle cx="{x0:.1}" cy="{:.1}" r="6" fill="#38a169" stroke="white"/>"##,
                y + lane_h / 2.0
            );
        }
        if let Some((t, why)) = &life.died {
            let x = scale.x(*t);
            let cy = y + lane_h / 2.0;
            let _ = writeln!(
                svg,
                r##"<path d="M{:.1} {:.1} l10 10 m0 -10 l-10 10" stroke="#e53e3e" stroke-width="3"/><text x="{:.1}" y="{:.1}" fill="#c53030" font-size="15">{}</text>"##,
                x - 5.0,
                cy - 5.0,
                scale.right + 14.0,
                cy + 4.0,
                escape(why)
            );
        }
    }
    scale.axis(
        &mut svg,
        top,
        bottom + 2.0,
        1e9,
        "s since the master started",
        origin,
    );
    svg.push_str("</svg>\n");
    svg
}

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

/// One request, drawn: its steps in order, each as long as its median.
pub fn request_svg(trace: &Trace, title: &str) -> String {
    let steps = step_times(trace);
    let requests = trace.of_kind("req").count();
    let row_h = 30.0;
    let top = 110.0;
    let height = top + steps.len() as f64 * row_h + 70.0;
    let mut svg = String::new();
    header(
        &mut svg,
        height,
        title,
        &format!(
            "{requests} requests; each bar starts where the step before it ends (medians); on the right: median / mean"
        ),
    );
    legend(
        &mut svg,
        74.0,
        &[
            (State::Holding.colour(), "GIL held"),
            (State::Waiting.colour(), "waiting for the GIL"),
            (State::Io.colour(), "GIL released: socket write"),
            ("#a0aec0", "no Python at all (Rust only)"),
        ],
    );
    // The path: each step after the one before (start_response is inside
    // the app: it starts where the app starts).
    let label_w = 330.0;
    let plot_left = LEFT + label_w - 140.0;
    let plot_right = WIDTH - 190.0;
    let mut at = 0.0;
    let mut placed = Vec::new();
    let mut app_start = 0.0;
    for &(kind, median, mean, _) in &steps {
        let start = if kind == "start_response" {
            app_start
        } else {
            at
        };
        if kind == "app" {
            app_start = at;
        }
        if kind != "start_response" {
            at += median;
        }
        placed.push((kind, start, median, mean));
    }
    let total = at.max(1.0);
    let x = |ns: f64| plot_left + ns / total * (plot_right - plot_left);
    for (i, &(kind, start, median, mean)) in placed.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let (_, name, state) = STEPS.iter().find(|s| s.0 == kind).expect("a known step");
        let colour = state.map_or("#a0aec0", State::colour);
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{:.2}" y="{y:.1}" width="{:.2}" height="{:.1}" fill="{colour}"/><text x="{:.1}" y="{:.1}" fill="#333">{} / {}</text>"##,
            plot_left - 8.0,
            y + 16.0,
            escape(name.trim()),
            x(start),
            (x(start + median) - x(start)).max(1.0),
            row_h - 8.0,
            plot_right + 10.0,
            y + 16.0,
            micros(median),
            micros(mean)
        );
    }
    let axis_y = top + steps.len() as f64 * row_h + 4.0;
    let (unit, unit_name) = if total > 10_000_000.0 {
        (1e6, "ms")
    } else {
        (1e3, "µs")
    };
    let step = nice_step(total / unit, 8.0);
    let _ = writeln!(
        svg,
        r##"<line x1="{plot_left:.1}" y1="{axis_y:.1}" x2="{plot_right:.1}" y2="{axis_y:.1}" stroke="#333"/>"##
    );
    let mut v = 0.0;
    while v <= total / unit + 1e-9 {
        let xx = x(v * unit);
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" y1="{top:.1}" x2="{xx:.1}" y2="{axis_y:.1}" stroke="#ddd"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            axis_y + 18.0,
            fmt_num(v)
        );
        v += step;
    }
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">time into the request ({unit_name}, medians laid end to end)</text><text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">median / mean</text>"##,
        (plot_left + plot_right) / 2.0,
        axis_y + 38.0,
        plot_right + 80.0,
        top - 8.0
    );
    svg.push_str("</svg>\n");
    svg
}

fn micros(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns >= 100_000.0 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

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
