//! Stage 4's log, passed on line by line.
//!
//! The stage 4 master and its workers write to a pipe the supervisor reads
//! (supervisord captures its programs' output the same way). Every line is
//! copied to the supervisor's stderr as it is, except the master's
//! `Listening at: unix:…` banner: this server listens where nginx does, and
//! its own banner says so.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::process::ChildStderr;

use nix::fcntl::{FcntlArg, OFlag, fcntl};

pub struct Relay {
    pipe: ChildStderr,
    partial: Vec<u8>,
}

impl Relay {
    pub fn new(pipe: ChildStderr) -> Relay {
        // Never block the supervisor's loop on a quiet pipe.
        let _ = fcntl(&pipe, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        Relay {
            pipe,
            partial: Vec::new(),
        }
    }

    /// The fd to poll: readable when there is something to pass on.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.pipe.as_fd()
    }

    /// Passes on the complete lines that arrived. `false` at end of file:
    /// the master and all its workers have exited.
    pub fn pump(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        loop {
            match self.pipe.read(&mut chunk) {
                Ok(0) => {
                    if !self.partial.is_empty() {
                        self.partial.push(b'\n');
                        self.emit();
                    }
                    return false;
                }
                Ok(n) => {
                    self.partial.extend_from_slice(&chunk[..n]);
                    self.emit();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }

    /// Writes out the complete lines in `partial`, keeps the rest.
    fn emit(&mut self) {
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let lines: Vec<u8> = self.partial.drain(..=end).collect();
        let text = String::from_utf8_lossy(&lines);
        let text = text.replace("Listening at: ", "uwsgi socket: ");
        let _ = io::stderr().lock().write_all(text.as_bytes());
    }
}
