//! Stage 3: the pre-fork model of gunicorn. A master process that never
//! touches a client forks N workers; each runs stage 1's loop (or stage 2's)
//! with its own interpreter and its own GIL, so pure-Python CPU work finally
//! runs on every core. The master watches: it replaces dead workers, kills
//! hung ones, adds and removes workers on TTIN/TTOU, reloads on HUP.

pub mod arbiter;
pub mod config;
pub mod listen;
pub mod master;
pub mod scoreboard;
pub mod signals;
pub mod stats;
pub mod worker;
