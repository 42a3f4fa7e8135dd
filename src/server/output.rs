//! What a server prints: two threads read its stdout and stderr line by
//! line, keep the lines for the test, and echo them to the test's stderr;
//! a test waits for a line without polling.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::ServerProcess;

/// What the reader threads collected, behind one lock with a condition
/// variable so waiters wake as soon as a line arrives.
#[derive(Default)]
pub(super) struct Output {
    state: Mutex<OutputState>,
    changed: Condvar,
}

#[derive(Default)]
pub(super) struct OutputState {
    pub(super) stderr: Vec<String>,
    pub(super) stdout: Vec<String>,
    pub(super) stderr_closed: bool,
    pub(super) stdout_closed: bool,
}

impl Output {
    pub(super) fn lock(&self) -> MutexGuard<'_, OutputState> {
        // A reader thread never panics while holding the lock, but a test
        // thread might (e.g. a failed assertion inside a closure); the data is
        // still fine to read.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits on the condition variable for at most `d`.
    pub(super) fn wait<'a>(
        &self,
        guard: MutexGuard<'a, OutputState>,
        d: Duration,
    ) -> MutexGuard<'a, OutputState> {
        match self.changed.wait_timeout(guard, d) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

impl ServerProcess {
    /// Everything the server printed on stderr so far, one `\n` per line.
    pub fn stderr_text(&self) -> String {
        join_lines(&self.output.lock().stderr)
    }

    /// Everything the server printed on stdout so far, one `\n` per line.
    pub fn stdout_text(&self) -> String {
        join_lines(&self.output.lock().stdout)
    }

    /// The number of stderr lines printed so far; pass it to
    /// [`wait_for_stderr_from`](Self::wait_for_stderr_from) to wait for a
    /// *new* line.
    pub fn stderr_line_count(&self) -> usize {
        self.output.lock().stderr.len()
    }

    /// Waits up to `timeout` for a stderr line containing `needle`, looking at
    /// the lines already printed too; returns the first such line.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_for_stderr_from(0, needle, timeout)
            .map(|(_, l)| l)
    }

    /// Like [`wait_for_stderr`](Self::wait_for_stderr) but only considers
    /// lines from index `from` on (see [`stderr_line_count`](Self::stderr_line_count));
    /// returns the line's index and text.
    pub fn wait_for_stderr_from(
        &self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> Option<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let mut st = self.output.lock();
        let mut i = from;
        loop {
            while i < st.stderr.len() {
                if st.stderr[i].contains(needle) {
                    return Some((i, st.stderr[i].clone()));
                }
                i += 1;
            }
            let now = Instant::now();
            if st.stderr_closed || now >= deadline {
                return None;
            }
            st = self.output.wait(st, deadline - now);
        }
    }
}

pub(super) fn join_lines(lines: &[String]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s
}

pub(super) fn spawn_reader<R: Read + Send + 'static>(
    pipe: R,
    which: Stream,
    output: Arc<Output>,
    prefix: String,
    echo: bool,
) {
    let name = match which {
        Stream::Stdout => "harness-stdout",
        Stream::Stderr => "harness-stderr",
    };
    let body = move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        buf.pop();
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if echo {
                        eprintln!("{prefix}{line}");
                    }
                    let mut st = output.lock();
                    match which {
                        Stream::Stdout => st.stdout.push(line),
                        Stream::Stderr => st.stderr.push(line),
                    }
                    drop(st);
                    output.changed.notify_all();
                }
            }
        }
        let mut st = output.lock();
        match which {
            Stream::Stdout => st.stdout_closed = true,
            Stream::Stderr => st.stderr_closed = true,
        }
        drop(st);
        output.changed.notify_all();
    };
    // Spawned from the test thread, so the echo goes to libtest's capture of
    // that test and is shown only when the test fails.
    if thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .is_err()
    {
        // Cannot happen short of resource exhaustion; the pipe then simply
        // is not read (and the output not captured).
    }
}
