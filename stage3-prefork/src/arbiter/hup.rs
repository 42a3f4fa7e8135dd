//! HUP: a new generation of workers, which import the app afresh, with
//! the configuration file read again when there is one.

use std::time::Duration;

use nix::unistd::Pid;

use super::{Arbiter, HOOK_FAILED, WorkerState};

impl Arbiter {
    // ANCHOR: reload
    /// HUP: start a new generation of workers, which import the app afresh,
    /// and let the old ones finish their requests and exit. The listening
    /// socket stays open in the master all along, so no connection is
    /// refused: connections wait in its backlog while new workers boot.
    pub(super) fn reload(&mut self) {
        if self.target == 0 {
            // After WINCH: HUP brings the configured workers back.
            self.target = self.config.workers;
        }
        // gunicorn reads its configuration file again on HUP: the new
        // generation runs with the new settings.
        if let Some(reread) = self.config.reread.take() {
            match reread() {
                Ok(new) => self.take_settings(new),
                Err(e) => log::error!(
                    "Handling signal: hup: the configuration was not read again ({e}); the workers restart with the settings they had"
                ),
            }
            self.config.reread = Some(reread);
        }
        log::info!("Handling signal: hup: reloading {} workers", self.target);
        if let Some(hooks) = &self.config.hooks
            && hooks.on_reload(self.target).is_err()
        {
            self.boot_failed = Some(HOOK_FAILED);
            return;
        }
        if self.preloaded.is_some() {
            log::warn!(
                "with --preload the app was imported once, in the master: new workers run the same code (restart the master to load new code)"
            );
        }
        self.generation += 1;
        let old: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| w.state == WorkerState::Running)
            .map(|w| w.pid)
            .collect();
        for _ in 0..self.target {
            if !self.spawn_worker() {
                break;
            }
        }
        for pid in old {
            self.stop_worker(pid);
        }
    }
    // ANCHOR_END: reload

    // ANCHOR: take_settings
    /// A HUP's new settings: what a new generation of workers can take
    /// (how many, their timeouts and recycling, the worker class's own
    /// settings, the hooks). The listening sockets and the app loaded by
    /// --preload stay as they are; the log says so when the file changed them.
    fn take_settings(&mut self, new: crate::config::Reread) {
        let crate::config::Reread {
            config: new,
            worker_class,
            not_applied,
        } = new;
        let old = &self.config;
        let mut changes = Vec::new();
        if new.workers != old.workers {
            changes.push(format!("workers {} -> {}", old.workers, new.workers));
        }
        if new.timeout != old.timeout {
            let secs =
                |t: Option<Duration>| t.map_or("off".to_string(), |t| format!("{} s", t.as_secs()));
            changes.push(format!(
                "timeout {} -> {}",
                secs(old.timeout),
                secs(new.timeout)
            ));
        }
        if new.graceful_timeout != old.graceful_timeout {
            changes.push(format!(
                "graceful_timeout {} s -> {} s",
                old.graceful_timeout.as_secs(),
                new.graceful_timeout.as_secs()
            ));
        }
        if (new.max_requests, new.max_requests_jitter)
            != (old.max_requests, old.max_requests_jitter)
        {
            changes.push(format!(
                "max_requests {} (jitter {}) -> {} (jitter {})",
                old.max_requests,
                old.max_requests_jitter,
                new.max_requests,
                new.max_requests_jitter
            ));
        }
        log::info!(
            "Handling signal: hup: configuration read again{}",
            if changes.is_empty() {
                String::new()
            } else {
                format!(": {}", changes.join(", "))
            }
        );
        for what in not_applied {
            log::warn!("Handling signal: hup: {what}");
        }
        if new.workers != old.workers {
            self.target = new.workers;
        }
        self.config.workers = new.workers;
        self.config.timeout = new.timeout;
        self.config.graceful_timeout = new.graceful_timeout;
        self.config.max_requests = new.max_requests;
        self.config.max_requests_jitter = new.max_requests_jitter;
        self.config.forwarded = new.forwarded;
        self.config.hooks = new.hooks;
        if worker_class.name() == self.worker_class.name() {
            self.worker_class = worker_class;
        }
    }
    // ANCHOR_END: take_settings
}
