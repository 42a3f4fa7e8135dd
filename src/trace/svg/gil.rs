//! [`gil_svg`]: a lane per thread, coloured by what the thread was doing.

use std::fmt::Write as _;

use crate::trace::{State, Trace, gil_lanes};

use super::{LEFT, RIGHT, Scale, WIDTH, Window, escape, header, legend, window_ns};

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
