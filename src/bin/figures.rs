//! Draws the book's pictures from real runs of the stages.
//!
//! ```text
//! cargo run --release --bin figures -- gil-cpu     # stage 2, /cpu on 4 threads
//! cargo run --release --bin figures -- all         # every picture
//! ```
//!
//! Each run starts a stage with `--trace`, gives it its load, stops it and
//! draws the trace (as `trace-view` would) into `book/src/figures/`; the
//! trace stays in `target/figures/` for `trace-view` to draw again.

use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use wsgi_course::figures;
use wsgi_course::server::repo_root;
use wsgi_course::trace::{self, Trace, Window};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Figure {
    /// gil-cpu.svg and gil-switch-5ms.svg: /cpu?ms=20 on four threads.
    GilCpu,
    /// gil-io.svg and gil-io-zoom.svg: /io?ms=20 (time.sleep) on four threads.
    GilIo,
    /// gil-switch-1ms.svg and gil-switch-20ms.svg: /cpu with another
    /// switch interval.
    GilSwitch,
    /// request.svg: the steps of one request (2000 requests of /).
    Request,
    /// workers.svg: stage 3's workers through kill -9, TTIN, TTOU, HUP,
    /// --timeout and --max-requests.
    Workers,
    /// No picture: stage 2's requests per second with and without --trace
    /// (8 pairs of 3 s runs).
    Overhead,
    /// All of the above.
    All,
}

/// Run a stage with --trace under a known load and draw the book's figure.
#[derive(Parser, Debug)]
#[command(name = "figures")]
struct Args {
    /// Which figures.
    #[arg(value_enum, required = true)]
    figures: Vec<Figure>,

    /// Where to write the SVGs [default: book/src/figures].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// Draw again from the traces of the last run (in target/figures/)
    /// instead of running the stages.
    #[arg(long)]
    redraw: bool,
}

/// The trace of a run: made now, or read from the last run's file.
struct Runs {
    dir: PathBuf,
    redraw: bool,
}

impl Runs {
    fn get(
        &self,
        name: &str,
        run: impl FnOnce(&Path) -> Result<Trace, String>,
    ) -> Result<Trace, String> {
        let path = self.dir.join(format!("{name}.trace"));
        if self.redraw {
            Trace::read(&path)
        } else {
            run(&path)
        }
    }
}

fn main() {
    let args = Args::parse();
    let out = args
        .out
        .unwrap_or_else(|| repo_root().join("book/src/figures"));
    let traces = repo_root().join("target/figures");
    for dir in [&out, &traces] {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("figures: cannot create {}: {e}", dir.display());
            std::process::exit(1);
        }
    }
    let mut todo = args.figures.clone();
    if todo.contains(&Figure::All) {
        todo = vec![
            Figure::GilCpu,
            Figure::GilIo,
            Figure::GilSwitch,
            Figure::Request,
            Figure::Workers,
            Figure::Overhead,
        ];
    }
    for figure in todo {
        let runs = Runs {
            dir: traces.clone(),
            redraw: args.redraw,
        };
        if let Err(e) = draw(figure, &out, &runs) {
            eprintln!("figures: {figure:?}: {e}");
            std::process::exit(1);
        }
    }
}

fn write(out: &Path, name: &str, svg: String) -> Result<(), String> {
    let path = out.join(name);
    std::fs::write(&path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn window(from_ms: f64, to_ms: f64) -> Window {
    Window {
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
    }
}

/// Checks a GIL trace before drawing it: a picture of a broken trace would
/// teach something false.
fn checked(trace: Trace) -> Result<Trace, String> {
    trace::check_gil(&trace).map_err(|e| format!("the trace fails its check: {e}"))?;
    print!("{}", trace::gil_summary(&trace));
    Ok(trace)
}

fn draw(figure: Figure, out: &Path, runs: &Runs) -> Result<(), String> {
    match figure {
        Figure::GilCpu => {
            let t = checked(runs.get("gil-cpu", |p| figures::gil_run(p, "/cpu?ms=20", None))?)?;
            write(
                out,
                "gil-cpu.svg",
                trace::gil_svg(
                    &t,
                    "Four threads, /cpu?ms=20 four at a time: one runs Python at a time",
                    Window::default(),
                ),
            )?;
            write(
                out,
                "gil-switch-5ms.svg",
                trace::gil_svg(
                    &t,
                    "The first 40 ms: the GIL changes hands every 5 ms, the default switch interval",
                    window(0.0, 40.0),
                ),
            )
        }
        Figure::GilIo => {
            let t = checked(runs.get("gil-io", |p| figures::gil_run(p, "/io?ms=20", None))?)?;
            write(
                out,
                "gil-io.svg",
                trace::gil_svg(
                    &t,
                    "Four threads, /io?ms=20 four at a time: the sleeps overlap",
                    Window::default(),
                ),
            )?;
            // Zoom on the end of the first sleep: the short moments each
            // thread holds the GIL between two sleeps.
            let lanes = trace::gil_lanes(&t);
            let origin = lanes
                .iter()
                .flat_map(|l| l.requests.iter().map(|r| r.0))
                .min()
                .unwrap_or(0);
            let first_end = lanes
                .iter()
                .flat_map(|l| l.requests.iter().map(|r| r.1))
                .min()
                .unwrap_or(origin);
            let at = (first_end - origin) as f64 / 1e6;
            println!("zoom: {:.2} to {:.2} ms", at - 0.3, at + 0.7);
            write(
                out,
                "gil-io-zoom.svg",
                trace::gil_svg(
                    &t,
                    "One millisecond of it: a sleep ends, Python runs briefly, the answer is written",
                    window(at - 0.3, at + 0.7),
                ),
            )
        }
        Figure::GilSwitch => {
            for ms in [1, 20] {
                let t = checked(runs.get(&format!("gil-switch-{ms}ms"), |p| {
                    figures::gil_run(p, "/cpu?ms=20", Some(ms))
                })?)?;
                write(
                    out,
                    &format!("gil-switch-{ms}ms.svg"),
                    trace::gil_svg(
                        &t,
                        &format!(
                            "The same /cpu load with a switch interval of {ms} ms: the first 40 ms"
                        ),
                        window(0.0, 40.0),
                    ),
                )?;
            }
            Ok(())
        }
        Figure::Request => {
            let t = checked(runs.get("request", |p| figures::request_run(p, 2000))?)?;
            for (kind, median, mean, n) in trace::step_times(&t) {
                println!(
                    "{kind:>15}: median {:>9.1} µs, mean {:>9.1} µs ({n})",
                    median / 1e3,
                    mean / 1e3
                );
            }
            write(
                out,
                "request.svg",
                trace::request_svg(
                    &t,
                    "One request for / of the lab app, step by step (stage 2)",
                ),
            )
        }
        Figure::Workers => {
            let mut run = None;
            let t = runs.get("workers", |p| {
                let (t, r) = figures::workers_run(p)?;
                run = Some(r);
                Ok(t)
            })?;
            if let Some(run) = run {
                println!(
                    "killed worker {} with SIGKILL; {} requests answered; the hung request got {}",
                    run.killed,
                    run.answered,
                    run.hung_status
                        .map_or("no answer (its worker was killed)".into(), |s| s
                            .to_string())
                );
                println!("the requests in flight at HUP got {:?}", run.slow_statuses);
            }
            for life in trace::workers(&t) {
                println!(
                    "worker {} (slot {}, generation {}): {} requests, {}",
                    life.pid,
                    life.slot,
                    life.generation,
                    life.requests.len(),
                    life.died.map_or("alive at the end".into(), |d| d.1)
                );
            }
            write(
                out,
                "workers.svg",
                trace::workers_svg(
                    &t,
                    "Stage 3, two workers: kill -9, TTIN, TTOU, HUP, --timeout, --max-requests",
                    Window::default(),
                ),
            )
        }
        Figure::Overhead => {
            if runs.redraw {
                return Ok(());
            }
            let pairs = figures::overhead(&runs.dir.join("overhead.trace"), 3.0, 8)?;
            for (plain, traced) in &pairs {
                println!(
                    "without --trace {plain:>8.0} req/s, with --trace {traced:>8.0} req/s ({:+.1}%)",
                    (traced / plain - 1.0) * 100.0
                );
            }
            let median = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let plain = median(pairs.iter().map(|p| p.0).collect());
            let traced = median(pairs.iter().map(|p| p.1).collect());
            // Each pair ran back to back: the median of the pairs' ratios
            // is less at the mercy of what else the machine did.
            let ratio = median(pairs.iter().map(|p| p.1 / p.0).collect());
            println!(
                "median: {plain:.0} req/s without, {traced:.0} req/s with --trace; median of the pairs' ratios {:+.1}%",
                (ratio - 1.0) * 100.0
            );
            Ok(())
        }
        Figure::All => unreachable!("expanded in main"),
    }
}
