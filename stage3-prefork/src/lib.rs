//! Stage 3: the pre-fork model of gunicorn. A master process that never
//! touches a client forks N workers; each runs stage 1's loop (or stage 2's)
//! with its own interpreter and its own GIL, so pure-Python CPU work finally
//! runs on every core. The master watches: it replaces dead workers, kills
//! hung ones, adds and removes workers on TTIN/TTOU, reloads on HUP.
//!
//! The master is a library, used by stage 3's `main.rs` and by stage 4.
//! A caller gives it:
//!
//! - a [`Config`]: gunicorn's server settings (workers, timeouts, preload…);
//! - a [`WorkerClass`]: the loop each worker runs (`-k`);
//! - [`Listeners`]: the sockets the workers accept on, bound by the caller;
//! - [`ExtraChild`]ren, if any: processes the master runs beside the
//!   workers and restarts when they die (stage 4's HTTP router).
//!
//! ```no_run
//! # fn main() -> Result<(), wsgi_bridge::embed::StartError> {
//! use clap::Parser;
//! use stage3_prefork::{Args, Listeners, Master};
//!
//! let setup = Args::parse().setup()?;
//! let master = Master {
//!     config: setup.config,
//!     worker_class: setup.worker_class,
//!     extra_children: Vec::new(),
//! };
//! let status = master.run(|| Listeners::open(setup.bind, setup.reuse_port))?;
//! # Ok(()) }
//! ```

mod arbiter;
pub mod config;
pub mod config_file;
mod http_workers;
pub mod listen;
mod reload;
mod scoreboard;
pub mod server_hooks;
mod start;
mod stats;
pub mod unix_socket;
pub mod unsupported;
mod upgrade;
mod worker;

pub use config::{Args, Bind, Config, Setup, Usr1, WorkerKind, default_workers};
pub use http_workers::{AsgiWorker, SyncWorker, ThreadWorker};
pub use listen::{Listeners, WorkerListener};
pub use start::{ExtraChild, Master};
pub use worker::{WorkerClass, WorkerContext};
