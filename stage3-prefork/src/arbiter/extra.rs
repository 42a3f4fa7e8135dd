//! The master's extra children: processes it runs beside the workers and
//! starts again when they die (uWSGI's `attach-daemon`; stage 4's HTTP
//! router is one), unless one keeps dying at start-up.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use supervise::restart::{Decision, RestartPolicy, Restarts, describe_exit};
use supervise::signals;

use crate::start::ExtraChild;

use super::Arbiter;
use super::fork::Forked;

/// An extra child that dies within 2 s of being started did not start;
/// after 5 such failures in a row the master gives up on it.
const EXTRA_CHILD_RESTARTS: RestartPolicy = RestartPolicy {
    start_secs: Duration::from_secs(2),
    start_retries: 5,
};

/// One of the master's extra children, and its record.
pub(super) struct ExtraProcess {
    child: ExtraChild,
    pub(super) pid: Option<Pid>,
    started: Instant,
    restarts: Restarts,
}

impl ExtraProcess {
    /// Not running yet: `spawn_extra_children` forks it.
    pub(super) fn new(child: ExtraChild) -> ExtraProcess {
        ExtraProcess {
            child,
            pid: None,
            started: Instant::now(),
            restarts: Restarts::new(EXTRA_CHILD_RESTARTS),
        }
    }
}

impl Arbiter {
    /// Forks the extra children that are not running, unless one keeps
    /// dying at start-up: that one is given up on instead of being
    /// restarted in a tight loop.
    pub(super) fn spawn_extra_children(&mut self) {
        for index in 0..self.extra.len() {
            let extra = &self.extra[index];
            if extra.pid.is_some() || extra.restarts.gave_up() {
                continue;
            }
            match self.fork_child() {
                Ok(Forked::Child { signal_mask }) => {
                    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
                    // It has no graceful stop: TERM, INT, QUIT end it at once.
                    let _ = signals::exit_at_once_on(&[libc::SIGTERM, libc::SIGINT, libc::SIGQUIT]);
                    signals::restore(&signal_mask);
                    std::process::exit((self.extra[index].child.run)());
                }
                Ok(Forked::Parent(child)) => {
                    let extra = &mut self.extra[index];
                    extra.pid = Some(child);
                    extra.started = Instant::now();
                }
                Err(e) => log::error!("fork failed: {e}"),
            }
        }
    }

    /// An extra child exited: say how, and whether it will be started again.
    /// Returns `false` when `pid` is not an extra child.
    pub(super) fn reap_extra_child(&mut self, pid: Pid, status: WaitStatus) -> bool {
        let Some(extra) = self.extra.iter_mut().find(|e| e.pid == Some(pid)) else {
            return false;
        };
        extra.pid = None;
        let name = &extra.child.name;
        match extra.restarts.exited(extra.started) {
            Decision::Restart => log::error!(
                "{name} (pid:{pid}) exited ({}); restarting it",
                describe_exit(status)
            ),
            Decision::GiveUp => log::error!(
                "{name} (pid:{pid}) exited ({}); it keeps dying at start-up: giving up on it",
                describe_exit(status)
            ),
        }
        true
    }
}
