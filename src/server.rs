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

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long [`ServerProcess::start`] waits for the `Listening at:` banner.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The words a server prints before its address, as gunicorn does.
const BANNER: &str = "Listening at: ";

/// A running server process, killed (with everything it started) on drop.
pub struct ServerProcess {
    label: String,
    child: Child,
    status: Option<ExitStatus>,
    output: Arc<Output>,
    listen_text: String,
    addr: Option<SocketAddr>,
}

/// What the reader threads collected, behind one lock with a condition
/// variable so waiters wake as soon as a line arrives.
#[derive(Default)]
struct Output {
    state: Mutex<OutputState>,
    changed: Condvar,
}

#[derive(Default)]
struct OutputState {
    stderr: Vec<String>,
    stdout: Vec<String>,
    stderr_closed: bool,
    stdout_closed: bool,
}

impl Output {
    fn lock(&self) -> MutexGuard<'_, OutputState> {
        // A reader thread never panics while holding the lock, but a test
        // thread might (e.g. a failed assertion inside a closure); the data is
        // still fine to read.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits on the condition variable for at most `d`.
    fn wait<'a>(
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
enum Stream {
    Stdout,
    Stderr,
}

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

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

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

impl std::fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProcess")
            .field("label", &self.label)
            .field("pid", &self.child.id())
            .field("listen", &self.listen_text)
            .finish()
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

fn join_lines(lines: &[String]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s
}

fn send_signal(pid: u32, sig: i32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn spawn_reader<R: Read + Send + 'static>(
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

/// The repository root: the directory of the root `Cargo.toml`, where `apps/`,
/// `tests/` and the stage crates live.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of the workspace binary `bin`, built first (once per process per
/// binary) with the same cargo profile and target directory as the running
/// test or benchmark.
///
/// # Panics
/// If the build fails; the message contains cargo's output.
pub fn workspace_bin(bin: &str) -> PathBuf {
    match try_workspace_bin(bin) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// [`workspace_bin`] returning the build error instead of panicking.
///
/// Runs `cargo build -q -p <package> --bin <bin>` where the package is the
/// binary's name (`loadgen`, the stages), or the package that has it (`uwsgi-dump`). The
/// profile (`--release`, `--profile NAME` or the default dev profile) and the
/// target directory come from the path of the running executable
/// (`<target>/<profile>/deps/<test>`), so a `cargo test --release` starts
/// release servers and a `cargo bench` benchmarks optimised ones.
pub fn try_workspace_bin(bin: &str) -> Result<PathBuf, String> {
    static BUILT: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    // Holding the lock while cargo runs serialises builds from parallel tests:
    // they would only queue on cargo's own build lock anyway.
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = built.get(bin) {
        return r.clone();
    }
    let r = build_bin(bin);
    built.insert(bin.to_string(), r.clone());
    r
}

/// Where cargo put the running executable, understood as a target layout.
struct Layout {
    /// `target/<profile>` (or `target/<triple>/<profile>`).
    profile_dir: PathBuf,
    /// The `--target-dir`.
    target_dir: PathBuf,
    /// The profile's directory name: `debug`, `release`, or a custom profile.
    profile: String,
    /// The `--target` triple, if the build was a cross build.
    triple: Option<String>,
}

fn current_layout() -> Result<Layout, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot locate the running executable: {e}"))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", exe.display()))?
        .to_path_buf();
    // Tests and benches live in <profile>/deps; binaries and examples in
    // <profile> and <profile>/examples.
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("cannot tell the cargo profile from {}", exe.display()))?
        .to_string();
    let parent = dir
        .parent()
        .ok_or_else(|| format!("cannot find the target directory of {}", exe.display()))?;
    // Cargo marks the root of a target directory with CACHEDIR.TAG; if the
    // parent is not it, the parent is a target triple's directory.
    let (target_dir, triple) = if !parent.join("CACHEDIR.TAG").exists()
        && parent
            .parent()
            .is_some_and(|p| p.join("CACHEDIR.TAG").exists())
    {
        let triple = parent
            .file_name()
            .and_then(|n| n.to_str())
            .map(String::from);
        (parent.parent().unwrap_or(parent).to_path_buf(), triple)
    } else {
        (parent.to_path_buf(), None)
    };
    Ok(Layout {
        profile_dir: dir,
        target_dir,
        profile,
        triple,
    })
}

fn package_of(bin: &str) -> &str {
    match bin {
        "uwsgi-dump" => "stage4-uwsgi-socket",
        "trace-view" | "conformance-report" => "wsgi-course",
        "cluster" => "stage5-nginx",
        "null-server" => "course-bench",
        other => other,
    }
}

fn build_bin(bin: &str) -> Result<PathBuf, String> {
    let layout = current_layout()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("-q")
        .arg("--manifest-path")
        .arg(repo_root().join("Cargo.toml"))
        .arg("-p")
        .arg(package_of(bin))
        .arg("--bin")
        .arg(bin)
        .arg("--target-dir")
        .arg(&layout.target_dir);
    match layout.profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.arg("--profile").arg(other);
        }
    }
    if let Some(t) = &layout.triple {
        cmd.arg("--target").arg(t);
    }
    cmd.stdin(Stdio::null());
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cargo:?} to build {bin}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building {bin} failed ({}): {cmd:?}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let path = layout
        .profile_dir
        .join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        return Err(format!(
            "cargo built {bin} but {} does not exist",
            path.display()
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::python_server;

    #[test]
    fn starts_reads_banner_and_serves() {
        let s = python_server("ok", &[]).unwrap();
        assert_eq!(s.addr().ip().to_string(), "127.0.0.1");
        assert_ne!(s.addr().port(), 0);
        assert_eq!(s.listen_text(), format!("http://{}", s.addr()));
        let r = crate::client::get(s.addr(), "/").unwrap();
        assert_eq!(r.status, 200);
        assert!(s.stderr_text().contains("Listening at:"));
        assert!(s.stdout_text().contains("hello from stdout"));
    }

    #[test]
    fn exit_before_banner_is_an_error_with_stderr() {
        let mut cmd = Command::new("python3");
        cmd.args([
            "-c",
            "import sys; print('boom: bad app spec', file=sys.stderr); sys.exit(3)",
        ]);
        let err = ServerProcess::start_command("py", cmd).unwrap_err();
        assert!(err.contains("boom: bad app spec"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
    }

    #[test]
    fn missing_program_is_an_error() {
        let cmd = Command::new("/nonexistent/server");
        let err = ServerProcess::start_command("nope", cmd).unwrap_err();
        assert!(err.contains("cannot start nope"), "{err}");
    }

    #[test]
    fn bad_banner_address_is_an_error() {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", "import sys,time; print('Listening at: http://nowhere', file=sys.stderr); time.sleep(30)"]);
        let err = ServerProcess::start_command("py", cmd).unwrap_err();
        assert!(err.contains("not IP:PORT"), "{err}");
    }

    #[test]
    fn unix_banner() {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", "import sys,time; print('[x] [1] [INFO] Listening at: unix:/tmp/x.sock (1)', file=sys.stderr); time.sleep(30)"]);
        let s = ServerProcess::start_command("py", cmd).unwrap();
        assert_eq!(s.listen_text(), "unix:/tmp/x.sock");
        assert_eq!(s.unix_path(), Some(PathBuf::from("/tmp/x.sock")));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.addr()));
        assert!(r.is_err());
    }

    #[test]
    fn signal_wait_and_log_lines() {
        let mut s = python_server("ok", &[]).unwrap();
        let n = s.stderr_line_count();
        assert!(
            s.wait_for_stderr("Listening", Duration::from_secs(1))
                .is_some()
        );
        assert!(
            s.wait_for_stderr_from(n, "Listening", Duration::from_millis(50))
                .is_none()
        );
        assert!(s.wait_timeout(Duration::from_millis(50)).is_none());
        s.signal(libc::SIGTERM);
        let line = s.wait_for_stderr("Handling signal: term", Duration::from_secs(10));
        assert!(line.is_some(), "{}", s.stderr_text());
        let status = s.wait_timeout(Duration::from_secs(10)).expect("exited");
        assert_eq!(status.code(), Some(0));
        // Signalling a reaped process is harmless.
        s.signal(libc::SIGTERM);
    }

    #[test]
    fn drop_kills_the_whole_tree() {
        // The server forks a child that ignores SIGTERM; both must be gone
        // after drop.
        let s = python_server("ok", &["fork"]).unwrap();
        let line = s
            .wait_for_stderr("forked child", Duration::from_secs(10))
            .unwrap();
        let child: u32 = line.rsplit(' ').next().unwrap().parse().unwrap();
        let pid = s.pid();
        assert!(alive(child));
        drop(s);
        assert!(!alive(pid));
        let deadline = Instant::now() + Duration::from_secs(5);
        // The orphaned child is reaped by init (or a subreaper) shortly after.
        while alive(child) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(child), "child {child} survived");
    }

    #[test]
    fn env_and_cwd_are_passed() {
        let dir = std::env::temp_dir();
        let mut cmd = Command::new("python3");
        cmd.args(["-c", "import os,sys,time; print('cwd', os.getcwd(), os.environ.get('HARNESS_X'), os.environ.get('PYTHONUNBUFFERED')); print('Listening at: unix:/x', file=sys.stderr); time.sleep(30)"])
            .current_dir(&dir)
            .env("HARNESS_X", "42");
        let s = ServerProcess::start_command("py", cmd).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !s.stdout_text().contains("cwd") && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let out = s.stdout_text();
        assert!(out.contains(" 42 1"), "{out}");
        let canon = dir.canonicalize().unwrap();
        assert!(out.contains(canon.to_str().unwrap()), "{out}");
    }

    fn alive(pid: u32) -> bool {
        // A zombie still answers kill(0); look at its state too.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat
                .rfind(')')
                .is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }

    #[test]
    fn builds_and_starts_a_workspace_binary() {
        // The loadgen binary (the `loadgen` package) always compiles, and
        // quickly: no Python. It prints no banner, so starting it fails, but
        // with its own message.
        let path = workspace_bin("loadgen");
        assert!(path.exists());
        let layout = current_layout().unwrap();
        assert!(path.starts_with(&layout.profile_dir));
        let err = ServerProcess::start("loadgen", &["not-a-url"]).unwrap_err();
        assert!(err.contains("loadgen"), "{err}");
        assert!(err.contains("exited with"), "{err}");
    }
}
