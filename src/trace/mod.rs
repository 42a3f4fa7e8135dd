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
//!
//! The modules, in the order the data flows:
//!
//! - `read`: the file's lines as [`Record`]s, in a [`Trace`];
//! - `gil`: who held the GIL when, per thread ([`gil_lanes`]);
//! - `check`: the GIL's rules, checked on those lanes ([`check_gil`]);
//! - `summary`: the same lanes in a few lines of text ([`gil_summary`]);
//! - `steps`: the steps of a request and their times ([`step_times`]);
//! - `workers`: stage 3's worker processes, birth to death ([`workers()`]);
//! - `svg`: the three pictures.

mod check;
mod gil;
mod read;
mod steps;
mod summary;
mod svg;
mod workers;

pub use check::check_gil;
pub use gil::{Lane, State, gil_lanes};
pub use read::{Record, Trace};
pub use steps::{STEPS, step_times};
pub use summary::{gil_summary, handovers};
pub use svg::{Window, gil_svg, request_svg, workers_svg};
pub use workers::{WorkerLife, workers};
