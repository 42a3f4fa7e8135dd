//! Starting a server: the process, with its output captured; then the
//! wait for its `Listening at:` banner (or, for a program that prints none,
//! for a connection to succeed), and the address the banner gives.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::output::{Output, Stream, join_lines, spawn_reader};
use super::{START_TIMEOUT, ServerProcess, try_workspace_bin};

/// The words a server prints before its address, as gunicorn does.
const BANNER: &str = "Listening at: ";

impl ServerProcess {
    /// Builds (once per test process) and starts the workspace binary `bin`
    /// (e.g. `"stage1-single"`) with `args`, then waits up to 30 s for a stderr
    /// line containing `Listening at: http://HOST:PORT` (or `unix:/path`).
    ///
    /// Returns `Err` with the captured stderr if the build fails, the process
    /// exits first, or the banner does not appear in time.
    pub fn start(bin: &str, args: &[&str]) -> Result<ServerProcess, String> {
        Self::start_with(bin, args, &[], None)
    }

    /// [`start`](Self::start) with extra environment variables and a working
    /// directory. The child inherits the test's environment, plus
    /// `PYTHONUNBUFFERED=1` (so an app's `print` shows up at once) unless `env`
    /// sets it.
    pub fn start_with(
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
        cwd: Option<&Path>,
    ) -> Result<ServerProcess, String> {
        let path = try_workspace_bin(bin)?;
        let mut cmd = Command::new(path);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        Self::start_command(bin, cmd)
    }

    /// Starts any program (a Python test server, gunicorn for a comparison
    /// benchmark, ...) and waits for its `Listening at:` banner like
    /// [`start`](Self::start). `label` names it in the echoed output.
    pub fn start_command(label: &str, cmd: Command) -> Result<ServerProcess, String> {
        let mut server = Self::spawn(label, cmd)?;
        server.wait_for_banner(START_TIMEOUT)?;
        Ok(server)
    }

    /// Starts a program that prints no banner (uWSGI, granian, ...) and waits
    /// until a TCP connection to `addr` succeeds, up to 30 s.
    pub fn start_command_at(
        label: &str,
        cmd: Command,
        addr: SocketAddr,
    ) -> Result<ServerProcess, String> {
        let mut server = Self::spawn(label, cmd)?;
        server.wait_until_accepting(&addr.to_string(), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })?;
        server.listen_text = format!("http://{addr}");
        server.addr = Some(addr);
        Ok(server)
    }

    /// [`start_command_at`](Self::start_command_at) for a server that
    /// listens on a unix socket (`uwsgi --socket PATH`): waits until a
    /// connection to `path` succeeds.
    pub fn start_command_at_unix(
        label: &str,
        cmd: Command,
        path: &Path,
    ) -> Result<ServerProcess, String> {
        let mut server = Self::spawn(label, cmd)?;
        server.wait_until_accepting(&path.display().to_string(), || {
            std::os::unix::net::UnixStream::connect(path).is_ok()
        })?;
        server.listen_text = format!("unix:{}", path.display());
        Ok(server)
    }

    /// Polls `accepts` until it says yes, the process exits, or 30 s pass.
    fn wait_until_accepting(
        &mut self,
        place: &str,
        accepts: impl Fn() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_status() {
                return Err(
                    self.failure(&format!("exited with {status} before accepting on {place}"))
                );
            }
            if accepts() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "did not accept on {place} within {START_TIMEOUT:?}"
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn(label: &str, mut cmd: Command) -> Result<ServerProcess, String> {
        if !cmd.get_envs().any(|(k, _)| k == "PYTHONUNBUFFERED") {
            cmd.env("PYTHONUNBUFFERED", "1");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {label} ({:?}): {e}", cmd.get_program()))?;
        let output = Arc::new(Output::default());
        let prefix = format!("[{label} {}] ", child.id());
        let echo = std::env::var_os("WSGI_HARNESS_QUIET").is_none_or(|v| v.is_empty() || v == "0");
        if let Some(out) = child.stdout.take() {
            spawn_reader(out, Stream::Stdout, output.clone(), prefix.clone(), echo);
        }
        if let Some(err) = child.stderr.take() {
            spawn_reader(err, Stream::Stderr, output.clone(), prefix, echo);
        }
        Ok(ServerProcess {
            label: label.to_string(),
            child,
            status: None,
            output,
            listen_text: String::new(),
            addr: None,
        })
    }

    /// Waits for the banner line, parses the address that follows it.
    fn wait_for_banner(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            let found = {
                let mut st = self.output.lock();
                let found = find_banner(&st.stderr[seen..]);
                seen = st.stderr.len();
                if found.is_none() && !st.stderr_closed {
                    // Poll the child every 50 ms while waiting for lines: a
                    // grandchild (a forked worker) may hold the pipe open after
                    // the process itself died.
                    st = self.output.wait(st, Duration::from_millis(50));
                }
                drop(st);
                found
            };
            if let Some(text) = found {
                return self.set_listen(text);
            }
            if let Some(status) = self.try_status() {
                // Give the reader a moment to collect the last words.
                self.drain(Duration::from_millis(500));
                let found = find_banner(&self.output.lock().stderr[seen..]);
                if let Some(text) = found {
                    return self.set_listen(text);
                }
                return Err(self.failure(&format!(
                    "exited with {status} before printing its `{}` banner",
                    BANNER.trim_end()
                )));
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "printed no `{}` banner within {timeout:?}",
                    BANNER.trim_end()
                )));
            }
        }
    }

    fn set_listen(&mut self, text: String) -> Result<(), String> {
        if let Some(rest) = text.strip_prefix("http://") {
            let hostport = rest.trim_end_matches('/');
            match hostport.parse::<SocketAddr>() {
                Ok(a) => self.addr = Some(a),
                Err(_) => {
                    return Err(self.failure(&format!(
                        "printed a banner with an address that is not IP:PORT: {text:?}"
                    )));
                }
            }
        } else if !text.starts_with("unix:") {
            return Err(self.failure(&format!(
                "printed a banner with neither http:// nor unix: after `{}`: {text:?}",
                BANNER.trim_end()
            )));
        }
        self.listen_text = text;
        Ok(())
    }

    /// Waits until both output pipes reached EOF, at most `d`.
    fn drain(&self, d: Duration) {
        let deadline = Instant::now() + d;
        let mut st = self.output.lock();
        while !(st.stderr_closed && st.stdout_closed) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self.output.wait(st, deadline - now);
        }
    }

    /// An error message naming the server, with everything it printed.
    fn failure(&self, what: &str) -> String {
        let st = self.output.lock();
        format!(
            "{} (pid {}) {what}; its stderr:\n{}{}",
            self.label,
            self.child.id(),
            join_lines(&st.stderr),
            if st.stdout.is_empty() {
                String::new()
            } else {
                format!("its stdout:\n{}", join_lines(&st.stdout))
            }
        )
    }
}

/// The first word after `Listening at: ` in the first line that has it.
fn find_banner(lines: &[String]) -> Option<String> {
    lines.iter().find_map(|line| {
        let i = line.find(BANNER)?;
        let rest = &line[i + BANNER.len()..];
        Some(rest.split_whitespace().next().unwrap_or("").to_string())
    })
}
