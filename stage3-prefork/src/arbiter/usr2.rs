//! USR2: a new master, started from the binary on disk with the listening
//! sockets handed over (`crate::upgrade` starts it); and, if it exits, this
//! master takes its place back.

use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use supervise::restart::describe_exit;

use crate::listen::Listeners;
use crate::upgrade;

use super::{Arbiter, HOOK_FAILED};

impl Arbiter {
    // ANCHOR: upgrade
    /// USR2: start a new master from the binary on disk, with the same
    /// arguments, handing it the listening socket. This master goes on
    /// serving until it is told to stop (TERM, or WINCH then TERM).
    pub(super) fn upgrade(&mut self) {
        log::info!("Handling signal: usr2: starting a new master");
        if let Some(pid) = self.new_master {
            log::warn!("a new master (pid:{pid}) is already running: stop this one first");
            return;
        }
        let sockets = self.listeners.as_ref().and_then(Listeners::shared_fds);
        let (Some(relaunch), Some(sockets)) = (&self.relaunch, sockets) else {
            log::error!(
                "cannot upgrade: with --reuse-port each worker binds its own socket, so there is none to hand over (start the new server beside this one instead)"
            );
            return;
        };
        if let Some(hooks) = &self.config.hooks
            && hooks.pre_exec(self.target).is_err()
        {
            self.boot_failed = Some(HOOK_FAILED);
            return;
        }
        match relaunch.start(&sockets) {
            Ok(pid) => {
                log::info!(
                    "New master started (pid:{pid}); stop this one (pid:{}) with TERM once it serves",
                    std::process::id()
                );
                if let Some(path) = &self.config.pid_file {
                    let _ = std::fs::rename(path, upgrade::oldbin(path));
                }
                self.new_master = Some(pid);
            }
            Err(e) => log::error!("cannot start a new master: {e}"),
        }
    }
    // ANCHOR_END: upgrade

    /// The new master exited: the upgrade failed, and this master, which
    /// never stopped serving, takes its pid file back. Returns `false`
    /// when `pid` is not the new master.
    pub(super) fn reap_new_master(&mut self, pid: Pid, status: WaitStatus) -> bool {
        if self.new_master != Some(pid) {
            return false;
        }
        self.new_master = None;
        log::error!(
            "The new master (pid:{pid}) exited ({}): this master goes on serving",
            describe_exit(status)
        );
        if let Some(path) = &self.config.pid_file {
            let _ = std::fs::rename(upgrade::oldbin(path), path);
        }
        true
    }
}
