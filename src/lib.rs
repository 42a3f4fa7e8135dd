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
