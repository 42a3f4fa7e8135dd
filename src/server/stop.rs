//! Signalling a server, waiting for it to exit, and killing it with every
//! process it started (on drop too, so a failed test leaves nothing behind).

use std::process::ExitStatus;
use std::thread;
use std::time::{Duration, Instant};

use super::ServerProcess;

impl ServerProcess {
    pub(super) fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`, `libc::SIGHUP`) to the server
    /// process. Does nothing if it has already been reaped.
    pub fn signal(&self, sig: i32) {
        if self.status.is_none() {
            send_signal(self.child.id(), sig);
        }
    }

    /// Waits up to `timeout` for the server to exit; its status, or `None` if
    /// it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Graceful stop: SIGTERM, wait up to `timeout`, then SIGKILL (the whole
    /// process tree). Returns the exit status if it exited by itself in time.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let status = self.wait_timeout(timeout);
        if status.is_none() {
            self.kill_tree();
        }
        status
    }

    /// SIGSTOPs the server (so it cannot fork any more), SIGKILLs all its
    /// descendants and then the server itself, and reaps it.
    fn kill_tree(&mut self) {
        if self.try_status().is_some() {
            return;
        }
        let pid = self.child.id();
        send_signal(pid, libc::SIGSTOP);
        for d in crate::procs::descendants(pid) {
            send_signal(d, libc::SIGKILL);
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill_tree();
    }
}

fn send_signal(pid: u32, sig: i32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}
