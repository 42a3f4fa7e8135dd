//! The course harness: start a stage binary ([`server`]), talk to it with raw
//! bytes ([`client`]), put nginx in front of it ([`nginx`]), find its
//! processes ([`procs`]). The cross-stage tests in `tests/`, the load
//! generator's tests (`loadgen/`) and the benchmarks (`course-bench/`) are
//! built on it. It does not embed Python.
pub mod client;
pub mod figures;
pub mod nginx;
pub mod procs;
pub mod server;
pub mod testutil;
pub mod trace;
pub mod uwsgi;

use std::time::{Duration, Instant};

/// Waits, checking every 50 ms, until `cond` holds; fails the test, naming
/// `what`, if it has not after `timeout`. For what a test cannot be told of
/// (a process gone, a worker count reached, a line in a file).
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
