//! The results chart (`book/src/results.svg`): requests per second, one
//! panel per workload, every panel on one logarithmic axis (the workloads
//! span three orders of magnitude: 100 req/s for a 10 ms sleep on one
//! thread, 70,000 for hello on threads).
//!
//! `bench-report` draws it from the last benchmark run, or, when there is
//! none, from the numbers of the results page itself ([`Chart::from_page`]),
//! so the chart can be redrawn without measuring again.

use std::fmt::Write as _;

use crate::servers::servers;

/// One bar: a server's requests per second in a workload.
pub struct Bar {
    /// The server's short id (`stage3-sync`, `gunicorn-sync`).
    pub id: String,
    /// One of the course's servers (else a real-world one).
    pub course: bool,
    pub rps: f64,
    /// The 95% confidence interval, as a fraction of `rps` (±).
    pub spread: Option<f64>,
}

pub struct Panel {
    pub title: String,
    pub bars: Vec<Bar>,
}

pub struct Chart {
    pub panels: Vec<Panel>,
    /// Where and when it was measured, in a few words.
    pub machine: String,
}

const WIDTH: f64 = 860.0;
const LABEL: f64 = 140.0;
const PLOT_RIGHT: f64 = WIDTH - 80.0;
const BAR_H: f64 = 16.0;
const GAP: f64 = 4.0;

/// The axis: 10 to 100,000 requests per second, logarithmic.
const DECADES: (i32, i32) = (1, 5);

fn x(rps: f64) -> f64 {
    let (lo, hi) = (DECADES.0 as f64, DECADES.1 as f64);
    let v = rps.max(10f64.powf(lo)).log10();
    LABEL + (v - lo) / (hi - lo) * (PLOT_RIGHT - LABEL)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn tick_label(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", thousands(v / 1000.0))
    } else {
        format!("{v}")
    }
}

impl Chart {
    /// The chart from the results page's own tables: the `### ` heading of
    /// each workload, and the `req/s` column of its table (`18,969 ±8%`).
    pub fn from_page(page: &str) -> Chart {
        let specs = servers();
        let mut panels: Vec<Panel> = Vec::new();
        let mut machine = String::new();
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("Measured ") {
                // "Measured DATE on N cores (CPU), Linux ..., Python ..."
                let (date, rest) = rest.split_once(" on ").unwrap_or((rest, ""));
                let cores = rest.split(" (").next().unwrap_or("");
                let cpu = rest
                    .split_once(" (")
                    .and_then(|(_, r)| r.split_once(')'))
                    .map_or("", |(cpu, _)| cpu);
                machine = format!("{cores}, {cpu}, {date}");
            } else if let Some(heading) = line.strip_prefix("### ") {
                panels.push(Panel {
                    title: heading.replace('`', ""),
                    bars: Vec::new(),
                });
            } else if let (Some(panel), Some(row)) = (panels.last_mut(), line.strip_prefix("| ")) {
                let cells: Vec<&str> = row.split(" | ").collect();
                let Some(spec) = specs.iter().find(|s| Some(&s.title) == cells.first()) else {
                    continue;
                };
                let Some(value) = cells.get(1) else { continue };
                let (number, spread) = value.split_once(" ±").unwrap_or((value, ""));
                let Ok(rps) = number.replace(',', "").trim().parse::<f64>() else {
                    continue;
                };
                let spread = spread
                    .trim_end_matches('%')
                    .parse::<f64>()
                    .ok()
                    .map(|p| p / 100.0);
                panel.bars.push(Bar {
                    id: spec.id.to_string(),
                    course: matches!(spec.family, crate::servers::Family::Course),
                    rps,
                    spread,
                });
            }
        }
        panels.retain(|p| !p.bars.is_empty());
        Chart { panels, machine }
    }

    pub fn svg(&self) -> String {
        let mut body = String::new();
        let mut y = 92.0;
        for panel in &self.panels {
            let _ = writeln!(
                body,
                r#"<text x="8" y="{:.0}" class="title">{}</text>"#,
                y + 14.0,
                escape(&panel.title)
            );
            y += 24.0;
            let top = y;
            let bottom = top + panel.bars.len() as f64 * (BAR_H + GAP);
            grid(&mut body, top, bottom);
            for bar in &panel.bars {
                let end = x(bar.rps);
                let _ = writeln!(
                    body,
                    r#"<text x="{:.0}" y="{:.0}" class="label">{}</text><rect x="{LABEL:.0}" y="{y:.0}" width="{:.1}" height="{BAR_H:.0}" class="{}"/>"#,
                    LABEL - 6.0,
                    y + BAR_H - 4.0,
                    escape(&bar.id),
                    (end - LABEL).max(1.0),
                    if bar.course { "course" } else { "peer" },
                );
                let mut value_x = end + 4.0;
                if let Some(s) = bar.spread.filter(|s| *s > 0.0) {
                    let (a, b) = (x(bar.rps * (1.0 - s)), x(bar.rps * (1.0 + s)));
                    let mid = y + BAR_H / 2.0;
                    let _ = writeln!(
                        body,
                        r#"<path d="M{a:.1} {mid:.1} H{b:.1} M{a:.1} {:.1} v8 M{b:.1} {:.1} v8" class="whisker"/>"#,
                        mid - 4.0,
                        mid - 4.0
                    );
                    value_x = value_x.max(b + 4.0);
                }
                let _ = writeln!(
                    body,
                    r#"<text x="{value_x:.0}" y="{:.0}" class="value">{}</text>"#,
                    y + BAR_H - 4.0,
                    thousands(bar.rps)
                );
                y += BAR_H + GAP;
            }
            axis(&mut body, bottom + 2.0);
            y = bottom + 52.0;
        }
        let height = y + 10.0;
        format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{height:.0}" viewBox="0 0 {WIDTH:.0} {height:.0}" font-family="sans-serif" font-size="12">
<style>
.title {{ font-weight: bold; font-size: 13px; fill: #222; }}
.label {{ text-anchor: end; fill: #333; }}
.value {{ fill: #222; }}
.tick {{ fill: #555; font-size: 11px; text-anchor: middle; }}
.axis-title {{ fill: #333; font-size: 11px; text-anchor: middle; }}
.course {{ fill: #c2410c; }}
.peer {{ fill: #64748b; }}
.whisker {{ stroke: #111; stroke-width: 1; fill: none; }}
</style>
<rect width="100%" height="100%" fill="white"/>
<text x="8" y="22" font-size="17" font-weight="bold">Requests per second, per workload (longer is better)</text>
<text x="8" y="42" fill="#555">Logarithmic axis: each gridline step is x10. 32 connections; {}.</text>
<rect x="8" y="56" width="16" height="12" class="course"/><text x="30" y="66">the course's servers</text>
<rect x="180" y="56" width="16" height="12" class="peer"/><text x="202" y="66">real-world servers</text>
<path d="M350 62 H380 M350 58 v8 M380 58 v8" class="whisker"/><text x="388" y="66">95% confidence interval (criterion)</text>
{body}</svg>
"##,
            escape(&self.machine)
        )
    }
}

/// Vertical gridlines at 10, 100, 1k... and lighter ones at 2x and 5x.
fn grid(body: &mut String, top: f64, bottom: f64) {
    for d in DECADES.0..=DECADES.1 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(d);
            if v > 10f64.powi(DECADES.1) {
                continue;
            }
            let colour = if m == 1.0 { "#bbb" } else { "#eee" };
            let _ = writeln!(
                body,
                r#"<line x1="{0:.1}" y1="{top:.0}" x2="{0:.1}" y2="{bottom:.0}" stroke="{colour}"/>"#,
                x(v)
            );
        }
    }
}

fn axis(body: &mut String, y: f64) {
    let _ = writeln!(
        body,
        r##"<line x1="{LABEL:.0}" y1="{y:.0}" x2="{PLOT_RIGHT:.0}" y2="{y:.0}" stroke="#333"/>"##
    );
    for d in DECADES.0..=DECADES.1 {
        let v = 10f64.powi(d);
        let _ = writeln!(
            body,
            r##"<line x1="{0:.1}" y1="{y:.0}" x2="{0:.1}" y2="{1:.0}" stroke="#333"/><text x="{0:.1}" y="{2:.0}" class="tick">{3}</text>"##,
            x(v),
            y + 4.0,
            y + 16.0,
            tick_label(v)
        );
    }
    let _ = writeln!(
        body,
        r#"<text x="{:.0}" y="{:.0}" class="axis-title">requests per second (log scale)</text>"#,
        (LABEL + PLOT_RIGHT) / 2.0,
        y + 30.0
    );
}
