//! What the three pictures share: the page, the title, the legend, the
//! time axis, and the colour of each [`State`].

mod gil;
mod request;
mod workers;

use std::fmt::Write as _;

use crate::trace::State;

pub use gil::gil_svg;
pub use request::request_svg;
pub use workers::workers_svg;

/// How each state is drawn: its colour, and its words in the legend.
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
