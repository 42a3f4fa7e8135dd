//! Process supervision, written once for every stage that needs it.
//!
//! - [`signals`]: a signal handler may run in the middle of anything, so it
//!   only records the signal and wakes the process's loop; the loop does the
//!   work. Stage 3's master (and stage 4's, which is the same), stage 5's
//!   supervisor and every single-process server use it.
//! - [`restart`]: a child that keeps dying at once is given up on instead of
//!   being restarted in a tight loop (supervisord's `startsecs` and
//!   `startretries`). Stage 3's master uses it for its extra children (stage
//!   4's HTTP router), stage 5 for nginx and stage 4.
//! - [`memory`]: a child's resident and proportional memory, from `/proc`.

pub mod memory;
pub mod restart;
pub mod signals;
