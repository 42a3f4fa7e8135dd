//! Restarting a child that exited, without restarting one that cannot start.

use std::time::{Duration, Instant};

use nix::sys::wait::WaitStatus;

/// When to give up on a child that keeps exiting, in supervisord's terms: a
/// child that exits sooner than `start_secs` after it was started did not
/// start, and after `start_retries` such failures in a row it is not started
/// again. A child that ran longer resets the count: it started, then died,
/// which is a crash worth restarting.
#[derive(Clone, Copy, Debug)]
pub struct RestartPolicy {
    pub start_secs: Duration,
    pub start_retries: u32,
}

/// What to do about a child that exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Restart,
    GiveUp,
}

/// One child's record of failed starts under a [`RestartPolicy`].
#[derive(Debug)]
pub struct Restarts {
    policy: RestartPolicy,
    failed_starts: u32,
}

impl Restarts {
    pub fn new(policy: RestartPolicy) -> Restarts {
        Restarts {
            policy,
            failed_starts: 0,
        }
    }

    /// The child started at `started` has exited: restart it, or give up.
    pub fn exited(&mut self, started: Instant) -> Decision {
        self.failed_starts = if started.elapsed() < self.policy.start_secs {
            self.failed_starts + 1
        } else {
            0
        };
        if self.failed_starts >= self.policy.start_retries {
            Decision::GiveUp
        } else {
            Decision::Restart
        }
    }

    /// Whether the last decision was to give up (nothing to start any more).
    pub fn gave_up(&self) -> bool {
        self.failed_starts >= self.policy.start_retries
    }
}

/// How a child ended, in the words a log line needs: `exit status 1`,
/// `killed by SIGKILL`.
pub fn describe_exit(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("killed by {}", signal.as_str()),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RestartPolicy = RestartPolicy {
        start_secs: Duration::from_secs(2),
        start_retries: 3,
    };

    #[test]
    fn gives_up_after_repeated_failed_starts() {
        let mut restarts = Restarts::new(POLICY);
        let now = Instant::now();
        assert_eq!(restarts.exited(now), Decision::Restart);
        assert_eq!(restarts.exited(now), Decision::Restart);
        assert_eq!(restarts.exited(now), Decision::GiveUp);
        assert!(restarts.gave_up());
    }

    #[test]
    fn a_child_that_ran_resets_the_count() {
        let mut restarts = Restarts::new(POLICY);
        let now = Instant::now();
        assert_eq!(restarts.exited(now), Decision::Restart);
        assert_eq!(restarts.exited(now), Decision::Restart);
        let long_ago = now - Duration::from_secs(10);
        assert_eq!(restarts.exited(long_ago), Decision::Restart);
        assert_eq!(restarts.exited(now), Decision::Restart);
        assert!(!restarts.gave_up());
    }
}
