//! [`request_svg`]: the steps of one request, each drawn with its median
//! time.

use std::fmt::Write as _;

use crate::trace::{STEPS, State, Trace, step_times};

use super::{LEFT, WIDTH, escape, fmt_num, header, legend, nice_step};

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
