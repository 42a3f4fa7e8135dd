//! The course harness: start a stage binary ([`server`]), talk to it with raw
//! bytes ([`client`]), and load it ([`loadgen`]). The cross-stage tests in
//! `tests/` and the benchmarks in `benches/` are built on it; the `loadgen`
//! binary puts the load generator in the students' hands.
pub mod bench;
pub mod client;
pub mod loadgen;
pub mod nginx;
pub mod procs;
pub mod server;
pub mod uwsgi;

#[cfg(test)]
mod testutil;
