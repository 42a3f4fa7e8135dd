//! Draws a `--trace` file as an SVG timeline.
//!
//! ```text
//! cargo run -p stage2-threads --release -- apps.lab:app --threads 4 --trace gil.trace
//! cargo run --bin trace-view -- gil.trace -o gil.svg                 # a lane per thread
//! cargo run --bin trace-view -- gil.trace --view request -o one.svg  # the steps of a request
//! cargo run -p stage3-prefork -- apps.lab:app -w 2 --trace w.trace
//! cargo run --bin trace-view -- w.trace -o workers.svg               # a lane per worker
//! ```

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use wsgi_course::trace::{self, Trace, Window};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum View {
    /// A lane per thread: holding the GIL, waiting for it, I/O without it.
    Gil,
    /// A lane per worker process (stage 3): requests, births, deaths, signals.
    Workers,
    /// The steps of one request, with their median and mean times.
    Request,
}

/// Draw a trace written by `--trace FILE` (stage 2, stage 3) as SVG.
#[derive(Parser, Debug)]
#[command(name = "trace-view")]
struct Args {
    /// The trace file.
    trace: PathBuf,

    /// Where to write the SVG.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,

    /// What to draw [default: workers if the trace has stage 3's master
    /// events, else gil].
    #[arg(long, value_enum)]
    view: Option<View>,

    /// The title above the picture.
    #[arg(long, default_value = "")]
    title: String,

    /// Draw from this many milliseconds after the first request.
    #[arg(long, value_name = "MS")]
    from_ms: Option<f64>,

    /// Draw up to this many milliseconds after the first request.
    #[arg(long, value_name = "MS")]
    to_ms: Option<f64>,

    /// Check the trace too: no two threads hold the GIL at once, no socket
    /// I/O with the GIL held.
    #[arg(long)]
    check: bool,
}

fn main() {
    let args = Args::parse();
    let trace = match Trace::read(&args.trace) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("trace-view: {e}");
            std::process::exit(1);
        }
    };
    if args.check
        && let Err(e) = trace::check_gil(&trace)
    {
        eprintln!("trace-view: check failed: {e}");
        std::process::exit(2);
    }
    let view = args.view.unwrap_or(if trace.has_workers() {
        View::Workers
    } else {
        View::Gil
    });
    let window = Window {
        from_ms: args.from_ms,
        to_ms: args.to_ms,
    };
    let svg = match view {
        View::Gil => trace::gil_svg(&trace, &args.title, window),
        View::Workers => trace::workers_svg(&trace, &args.title, window),
        View::Request => trace::request_svg(&trace, &args.title),
    };
    if let Err(e) = std::fs::write(&args.output, svg) {
        eprintln!("trace-view: cannot write {}: {e}", args.output.display());
        std::process::exit(1);
    }
    if view == View::Gil {
        print!("{}", trace::gil_summary(&trace));
    }
    if view == View::Request {
        for (kind, median, mean, n) in trace::step_times(&trace) {
            println!(
                "{kind:>15}: median {:>9.1} µs, mean {:>9.1} µs ({n})",
                median / 1e3,
                mean / 1e3
            );
        }
    }
}
