//! Watching the workers: collecting the ones that died (SIGCHLD) and
//! saying how, and killing the ones that hang (`--timeout`) or that are
//! too slow to stop (`--graceful-timeout`).

use std::sync::atomic::Ordering;
use std::time::Instant;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use supervise::restart::describe_exit;
use supervise::signals;

use crate::worker::{APP_LOAD_ERROR, WORKER_BOOT_ERROR};
use wsgi_bridge::trace;

use super::{ABORT_GRACE, Arbiter, HOOK_FAILED, Halt, WorkerProcess, WorkerState};

impl Arbiter {
    // ANCHOR: reap_workers
    /// Collects the exit status of every worker that died, and says how.
    pub(super) fn reap_workers(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else { continue };
            if self.reap_extra_child(pid, status) || self.reap_new_master(pid, status) {
                continue;
            }
            let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let worker = self.workers.swap_remove(index);
            let expected = worker.state != WorkerState::Running;
            if trace::enabled() {
                let why = match self.stopping {
                    true => format!("stopped with the master ({})", describe_exit(status)),
                    false => exit_reason(&worker, status, self.config.max_requests),
                };
                trace::event("exit", pid.as_raw(), worker.slot, worker.generation, &why);
            }
            match status {
                WaitStatus::Exited(_, 0) => {
                    // The worker said goodbye itself ("Worker exiting").
                    log::debug!("Worker (pid:{pid}) exited cleanly");
                }
                WaitStatus::Exited(_, code) => {
                    log::error!("Worker (pid:{pid}) exited with code {code}.");
                }
                WaitStatus::Signaled(_, Signal::SIGKILL, _) if !expected => {
                    log::error!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?");
                }
                WaitStatus::Signaled(_, signal, _) if !expected || signal != Signal::SIGKILL => {
                    log::error!(
                        "Worker (pid:{pid}) was sent {}!",
                        signals::name(signal as i32)
                    );
                }
                _ => {}
            }
            self.scoreboard
                .slot(worker.slot)
                .pid
                .store(0, Ordering::Relaxed);
            if let Some(halt) = boot_failure(status) {
                // A worker that could not boot would fail the same way
                // again: stop, with its status, rather than fork forever.
                // gunicorn raises HaltServer here, before the line that
                // calls child_exit: a worker that never booted gets none.
                self.boot_failed = Some(halt);
                continue;
            }
            if let Some(hooks) = &self.config.hooks
                && hooks.child_exit(pid.as_raw(), self.target).is_err()
            {
                self.boot_failed = Some(HOOK_FAILED);
            }
        }
    }
    // ANCHOR_END: reap_workers

    // ANCHOR: kill_hung_workers
    /// A worker that has not touched its heartbeat for `--timeout` is stuck
    /// (an endless loop, a request that never ends): kill it, so a new one
    /// can take its place. Workers slow to finish a graceful stop too.
    pub(super) fn kill_hung_workers(&mut self) {
        let graceful = self.config.graceful_timeout;
        for worker in &mut self.workers {
            match worker.state {
                WorkerState::Running => {
                    let Some(timeout) = self.config.timeout else {
                        continue;
                    };
                    let silent = self.scoreboard.slot(worker.slot).silent_for_ms();
                    if silent > timeout.as_millis() as u64 {
                        log::error!(
                            "WORKER TIMEOUT (pid:{}): silent for {:.1} s",
                            worker.pid,
                            silent as f64 / 1000.0
                        );
                        // As gunicorn: ABRT first, which the worker answers
                        // by exiting at once (after the worker_abort hook of
                        // a configuration file); KILL if it cannot even do that.
                        let _ = kill(worker.pid, Signal::SIGABRT);
                        worker.state = WorkerState::Aborted(Instant::now());
                        worker.timed_out = true;
                    }
                }
                WorkerState::Aborted(since) if since.elapsed() > ABORT_GRACE => {
                    log::error!(
                        "Worker (pid:{}) still there {} s after ABRT: killing it",
                        worker.pid,
                        ABORT_GRACE.as_secs()
                    );
                    let _ = kill(worker.pid, Signal::SIGKILL);
                    worker.state = WorkerState::Killed;
                }
                WorkerState::Stopping(since) if since.elapsed() > graceful => {
                    log::warn!(
                        "Worker (pid:{}) did not stop in time: killing it",
                        worker.pid
                    );
                    let _ = kill(worker.pid, Signal::SIGKILL);
                    worker.state = WorkerState::Killed;
                }
                _ => {}
            }
        }
    }
    // ANCHOR_END: kill_hung_workers
}

/// Why the master stops, if `status` says the worker could not boot.
fn boot_failure(status: WaitStatus) -> Option<Halt> {
    match status {
        WaitStatus::Exited(_, WORKER_BOOT_ERROR) => Some(Halt {
            reason: "Worker failed to boot.",
            status: WORKER_BOOT_ERROR,
        }),
        WaitStatus::Exited(_, APP_LOAD_ERROR) => Some(Halt {
            reason: "App failed to load.",
            status: APP_LOAD_ERROR,
        }),
        _ => None,
    }
}

/// Why a worker died, in a few words, for `--trace`'s pictures.
fn exit_reason(worker: &WorkerProcess, status: WaitStatus, max_requests: u64) -> String {
    match (worker.state, status) {
        // ABRT, then KILL if it did not exit: both are the master's --timeout.
        (WorkerState::Aborted(_) | WorkerState::Killed, _) if worker.timed_out => {
            "killed by the master: --timeout".into()
        }
        (WorkerState::Killed, _) => "killed by the master: --graceful-timeout".into(),
        (WorkerState::Stopping(_), WaitStatus::Exited(_, 0)) => "stopped (TERM)".into(),
        (WorkerState::Running, WaitStatus::Exited(_, 0)) if max_requests > 0 => {
            "exited: --max-requests".into()
        }
        (_, WaitStatus::Signaled(_, signal, _)) => {
            format!(
                "killed by {} (not the master)",
                signals::name(signal as i32)
            )
        }
        _ => describe_exit(status),
    }
}
