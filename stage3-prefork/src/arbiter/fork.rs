//! Forking a worker: a free scoreboard slot, the `pre_fork` hook, fork(2)
//! with the master's signals blocked (and Python told, if it runs in the
//! master), then the worker's loop in the child.

use std::sync::atomic::Ordering;
use std::time::Instant;

use nix::unistd::{ForkResult, Pid};
use pyo3::prelude::*;

use supervise::signals;

use crate::scoreboard::{MAX_WORKERS, now_ms};
use crate::worker::{self, WorkerSpec};
use wsgi_bridge::trace;

use super::{Arbiter, HOOK_FAILED, WorkerProcess, WorkerState};

/// Which side of a fork this is.
pub(super) enum Forked {
    /// The new process, with the signal mask to restore once it is ready.
    Child {
        signal_mask: nix::sys::signal::SigSet,
    },
    Parent(Pid),
}

impl Arbiter {
    // ANCHOR: spawn_worker
    /// Forks one worker. In the child this never returns.
    pub(super) fn spawn_worker(&mut self) -> bool {
        let Some(slot) = (0..MAX_WORKERS).find(|i| !self.workers.iter().any(|w| w.slot == *i))
        else {
            log::error!("no free scoreboard slot for another worker");
            return false;
        };
        self.scoreboard.slot(slot).reset(0);
        let jitter = if self.config.max_requests_jitter > 0 {
            random_below(self.config.max_requests_jitter + 1)
        } else {
            0
        };
        // The configuration file's pre_fork hook, and the worker's object
        // its other hooks will get.
        let hook_worker = match self.config.hooks.as_ref().map(|h| h.pre_fork(self.target)) {
            Some(Ok(worker)) => Some(worker),
            Some(Err(_)) => {
                self.boot_failed = Some(HOOK_FAILED);
                return false;
            }
            None => None,
        };
        let master_pid = std::process::id();
        match self.fork_child() {
            Ok(Forked::Child { signal_mask }) => {
                let status = worker::run(WorkerSpec {
                    config: &self.config,
                    worker_class: self.worker_class.as_ref(),
                    listeners: self
                        .listeners
                        .as_ref()
                        .expect("listening while workers run"),
                    slot: self.scoreboard.slot(slot),
                    board: &self.scoreboard,
                    master_pid,
                    preloaded: self.preloaded.as_ref(),
                    hook_worker,
                    multiprocess: self.target > 1,
                    signal_mask,
                    max_requests: if self.config.max_requests > 0 {
                        self.config.max_requests + jitter
                    } else {
                        0
                    },
                });
                std::process::exit(status);
            }
            Ok(Forked::Parent(child)) => {
                if let (Some(hooks), Some(worker)) = (&self.config.hooks, hook_worker) {
                    hooks.forked(child.as_raw(), worker);
                }
                self.scoreboard
                    .slot(slot)
                    .pid
                    .store(child.as_raw(), Ordering::Relaxed);
                trace::event("spawn", child.as_raw(), slot, self.generation, "");
                self.workers.push(WorkerProcess {
                    pid: child,
                    slot,
                    generation: self.generation,
                    started: Instant::now(),
                    state: WorkerState::Running,
                    timed_out: false,
                });
                true
            }
            Err(e) => {
                log::error!("fork failed: {e}");
                false
            }
        }
    }

    /// Forks a child of the master (a worker or an extra child). The master's
    /// signals stay blocked in the child until it has handlers of its own:
    /// it restores `signal_mask` then. The child drops what belongs to the
    /// master (its signal handlers, the stats socket).
    pub(super) fn fork_child(&mut self) -> nix::Result<Forked> {
        let old_mask = signals::block_all();
        match self.fork() {
            Ok(ForkResult::Child) => {
                if let Some(signals) = self.signals.take() {
                    signals.forget_in_child();
                }
                self.stats = None;
                Ok(Forked::Child {
                    signal_mask: old_mask,
                })
            }
            Ok(ForkResult::Parent { child }) => {
                signals::restore(&old_mask);
                Ok(Forked::Parent(child))
            }
            Err(e) => {
                signals::restore(&old_mask);
                Err(e)
            }
        }
    }

    /// fork(2). With `--preload` (or a configuration file, `-c`), Python is
    /// running in the master, and must be told about the fork on both sides
    /// (it resets its locks and thread state in the child). This is safe only because the master has a
    /// single thread: a fork copies only the calling thread, and a lock held
    /// by any other thread would stay locked forever in the child.
    fn fork(&self) -> nix::Result<ForkResult> {
        // SAFETY: Py_IsInitialized may be called at any time.
        let python_runs = unsafe { pyo3::ffi::Py_IsInitialized() } != 0;
        if !python_runs {
            // SAFETY: the master is single-threaded (no runtime, no pool).
            return unsafe { nix::unistd::fork() };
        }
        Python::attach(|_py| {
            // SAFETY: called with the GIL held, from the only thread, around
            // fork(), as the C API documentation requires.
            unsafe {
                pyo3::ffi::PyOS_BeforeFork();
                let result = nix::unistd::fork();
                match result {
                    Ok(ForkResult::Child) => pyo3::ffi::PyOS_AfterFork_Child(),
                    _ => pyo3::ffi::PyOS_AfterFork_Parent(),
                }
                result
            }
        })
    }
    // ANCHOR_END: spawn_worker
}

/// A random number below `n`, for --max-requests-jitter (no need for a
/// cryptographic generator: it only spreads restarts apart).
fn random_below(n: u64) -> u64 {
    let seed = now_ms() ^ u64::from(std::process::id()).rotate_left(32);
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (seed >> 29);
    mixed % n
}
