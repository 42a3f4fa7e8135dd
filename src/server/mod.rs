//! Start a real server process (a stage binary, or any program) and stop it.
//!
//! Tests and benchmarks talk to the stages the way a student does: they run the
//! real binary, wait for its gunicorn-style banner
//! (`Listening at: http://127.0.0.1:41234`), and connect to that address. Passing
//! `-b 127.0.0.1:0` lets the kernel pick a free port and the banner tells us which
//! one, so parallel tests never race for ports.
//!
//! A [`ServerProcess`] owns the child. Dropping it kills the child *and every
//! process the child started* (prefork workers, nginx), so a failing or panicking
//! test never leaves servers behind. Everything the server prints is captured by
//! background threads (for assertions on logs) and echoed to the test's stderr
//! with a `[bin pid] ` prefix, where libtest shows it when a test fails. Set
//! `WSGI_HARNESS_QUIET=1` to turn the echo off (e.g. in benchmarks).
//!
//! - this file: [`ServerProcess`] and what it knows (address, pid);
//! - `start.rs`: start the process, wait for its banner (or for it to
//!   accept connections), read the address;
//! - `output.rs`: the threads that read its stdout and stderr, and waiting
//!   for a line;
//! - `stop.rs`: signals, waiting for the exit, killing the whole tree;
//! - `workspace.rs`: where the repository is, and building a workspace
//!   binary with the running test's cargo profile.

mod output;
mod start;
mod stop;
#[cfg(test)]
mod tests;
mod workspace;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::time::Duration;

use output::Output;

pub use workspace::{repo_root, try_workspace_bin, workspace_bin};

/// How long [`ServerProcess::start`] waits for the `Listening at:` banner.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server process, killed (with everything it started) on drop.
pub struct ServerProcess {
    label: String,
    child: Child,
    status: Option<ExitStatus>,
    output: Arc<Output>,
    listen_text: String,
    addr: Option<SocketAddr>,
}

impl ServerProcess {
    /// The TCP address from the banner.
    ///
    /// # Panics
    /// If the server listens on a unix socket (see [`listen_text`](Self::listen_text)).
    pub fn addr(&self) -> SocketAddr {
        match self.addr {
            Some(a) => a,
            None => panic!(
                "{} listens at {:?}, not on a TCP address; use listen_text()",
                self.label, self.listen_text
            ),
        }
    }

    /// The address as the banner printed it: the first word after
    /// `Listening at: `, e.g. `http://127.0.0.1:41234` or `unix:/tmp/app.sock`
    /// (gunicorn's trailing ` (pid)` is not included).
    pub fn listen_text(&self) -> &str {
        &self.listen_text
    }

    /// The unix socket path if the banner said `unix:/path`.
    pub fn unix_path(&self) -> Option<PathBuf> {
        self.listen_text.strip_prefix("unix:").map(PathBuf::from)
    }

    /// The process id of the server (the master, for prefork stages).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl std::fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProcess")
            .field("label", &self.label)
            .field("pid", &self.child.id())
            .field("listen", &self.listen_text)
            .finish()
    }
}
