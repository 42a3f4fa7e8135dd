//! The master's end: TERM lets the workers finish their requests, INT and
//! QUIT stop them at once; then the sockets, the pid file, the `on_exit`
//! hook.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;

use crate::upgrade;

use super::{Arbiter, Exit};

impl Arbiter {
    // ANCHOR: stop
    pub(super) fn stop(mut self, exit: Exit) -> i32 {
        self.stopping = true;
        let (signal, limit, status) = match exit {
            Exit::Graceful => {
                log::info!("Handling signal: term");
                (Signal::SIGTERM, self.config.graceful_timeout, 0)
            }
            Exit::Fast => {
                log::info!("Handling signal: int");
                (Signal::SIGQUIT, Duration::from_secs(2), 0)
            }
            Exit::BootFailure(halt) => (Signal::SIGQUIT, Duration::from_secs(2), halt.status),
        };
        for pid in self.extra.iter_mut().filter_map(|e| e.pid.take()) {
            let _ = kill(pid, Signal::SIGTERM);
            let _ = waitpid(pid, None);
        }
        for worker in &self.workers {
            let _ = kill(worker.pid, signal);
        }
        // Then stop listening. Closing the master's copy of the socket is not
        // enough: every worker holds one too (fork copied it) until it exits,
        // and meanwhile new clients would queue, wait, and be reset at the
        // end. Shutting the socket down acts on all copies at once: new
        // clients are refused now and can go elsewhere, while workers finish
        // what they accepted. (Only at a real stop: on a reload the new
        // workers share this same socket.) With --reuse-port each worker's
        // socket is its own and closes when the worker exits.
        if let Some(mut listeners) = self.listeners.take() {
            if self.new_master.is_some() {
                // A new master serves on these same sockets: leave them open,
                // and their files in place.
                log::info!(
                    "The new master keeps the {}",
                    if listeners.count() == 1 {
                        "socket"
                    } else {
                        "sockets"
                    }
                );
                listeners.hand_over();
            } else {
                listeners.stop_listening();
            }
            // Dropped: a unix socket's file is removed (new clients get "No
            // such file" at once), unless handed over.
        }
        let deadline = Instant::now() + limit;
        while !self.workers.is_empty() && Instant::now() < deadline {
            self.wait(Duration::from_millis(100));
            self.reap_workers();
        }
        for worker in &self.workers {
            log::warn!(
                "Worker (pid:{}) did not stop in time: killing it",
                worker.pid
            );
            let _ = kill(worker.pid, Signal::SIGKILL);
        }
        while !self.workers.is_empty() {
            match waitpid(None, None) {
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.workers.retain(|w| w.pid != pid);
                    }
                }
                Err(_) => break,
            }
        }
        if let Some(path) = &self.config.pid_file {
            // After an upgrade the name belongs to the new master.
            match self.new_master {
                Some(_) => std::fs::remove_file(upgrade::oldbin(path)),
                None => std::fs::remove_file(path),
            }
            .ok();
        }
        if let Exit::BootFailure(halt) = exit {
            log::error!("Shutting down: Master");
            log::error!("Reason: {}", halt.reason);
        } else {
            log::info!("Shutting down: Master");
        }
        if let Some(hooks) = &self.config.hooks {
            hooks.on_exit(self.target);
        }
        status
    }
    // ANCHOR_END: stop
}
