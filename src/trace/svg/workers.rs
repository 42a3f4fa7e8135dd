//! [`workers_svg`]: a lane per worker process of stage 3.

use std::fmt::Write as _;

use crate::trace::{Trace, workers};

use super::{LEFT, Scale, WIDTH, Window, escape, header, legend, window_ns};

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
