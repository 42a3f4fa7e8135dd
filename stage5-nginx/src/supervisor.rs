//! The supervisor: what supervisord (or a container's init) does for nginx
//! and uWSGI, in one small loop.
//!
//! ```text
//!                 ┌──────────── stage5-nginx (supervisor) ────────────┐
//!  TERM INT HUP ─►│ self-pipe ─► loop: forward signals, reap, restart │
//!                 └────────┬──────────────────────────────┬───────────┘
//!                    spawn │ (its stderr: a pipe)   spawn │ (once the socket exists)
//!                          ▼                              ▼
//!               stage4-uwsgi-socket master           nginx master
//!                 │ fork    │ fork                  │ fork    │ fork
//!              worker    worker ◄── app.sock ──── worker    worker ◄── clients
//! ```
//!
//! It runs both programs with `std::process::Command` (no fork of its own),
//! each in its own process group, and waits for them with `waitpid`. Signals
//! arrive through stage 3's self-pipe, and are handled in the loop.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use supervise::restart::{Decision, RestartPolicy, Restarts, describe_exit as describe};
use supervise::signals::SignalQueue;
use wsgi_bridge::embed::StartError;

use crate::relay::Relay;

/// A program that exits within 2 s of being started did not start
/// (supervisord's `startsecs`), and after 3 such failures in a row the
/// supervisor gives up (supervisord's `startretries`).
const RESTARTS: RestartPolicy = RestartPolicy {
    start_secs: Duration::from_secs(2),
    start_retries: 3,
};
/// How long stage 4 may take to import the app and create its socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(60);
/// How long nginx may take to read its configuration and bind its port.
const NGINX_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Nginx,
    Master,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Nginx => "nginx",
            Role::Master => "stage 4",
        }
    }
}

/// What to run.
pub struct Plan {
    /// nginx and its arguments.
    pub nginx: Vec<OsString>,
    /// stage 4 and its arguments; `None` with `--upstream` (it runs elsewhere).
    pub master: Option<Vec<OsString>>,
    /// stage 4's socket: nginx starts once it exists.
    pub socket: Option<PathBuf>,
    /// Where nginx listens.
    pub listen: SocketAddr,
    /// Where nginx writes its pid once it is up.
    pub nginx_pid_file: PathBuf,
    /// How long a graceful stop may take before it is forced.
    pub grace: Duration,
}

/// One program the supervisor runs.
struct Program {
    role: Role,
    command: Vec<OsString>,
    pid: Option<Pid>,
    started: Instant,
    restarts: Restarts,
}

/// Why start-up did not complete.
pub enum Failure {
    /// TERM or INT arrived first.
    Stopped,
    /// A program could not start: one sentence.
    Error(String),
}

pub struct Supervisor {
    plan: Plan,
    nginx: Program,
    master: Option<Program>,
    signals: SignalQueue,
    /// Stage 4's stderr (several while an old master's workers finish).
    relays: Vec<Relay>,
    /// A second TERM or INT: stop now, not gracefully.
    hurry: bool,
}

impl Supervisor {
    pub fn new(plan: Plan) -> Result<Supervisor, StartError> {
        let signals = SignalQueue::install()
            .map_err(|e| StartError::new(format!("cannot install the signal handlers: {e}")))?;
        // When nginx or stage 4 dies, its workers are orphans: make them ours
        // rather than init's, so this loop reaps them (and a container whose
        // first process this is collects no zombies).
        #[cfg(target_os = "linux")]
        let _ = nix::sys::prctl::set_child_subreaper(true);
        let program = |role, command| Program {
            role,
            command,
            pid: None,
            started: Instant::now(),
            restarts: Restarts::new(RESTARTS),
        };
        Ok(Supervisor {
            nginx: program(Role::Nginx, plan.nginx.clone()),
            master: plan.master.clone().map(|c| program(Role::Master, c)),
            plan,
            signals,
            relays: Vec::new(),
            hurry: false,
        })
    }

    pub fn pid(&self, role: Role) -> Option<Pid> {
        match role {
            Role::Nginx => self.nginx.pid,
            Role::Master => self.master.as_ref().and_then(|m| m.pid),
        }
    }

    fn program(&mut self, role: Role) -> Option<&mut Program> {
        match role {
            Role::Nginx => Some(&mut self.nginx),
            Role::Master => self.master.as_mut(),
        }
    }

    // ANCHOR: start
    /// Starts stage 4, waits for its socket, then starts nginx in front of
    /// it: started together, nginx would answer 502 until stage 4 is ready.
    pub fn start(&mut self) -> Result<(), Failure> {
        if self.master.is_some() {
            self.spawn(Role::Master).map_err(Failure::Error)?;
            let socket = self.plan.socket.clone();
            self.wait_until(Role::Master, SOCKET_TIMEOUT, || {
                socket.as_ref().is_none_or(|s| s.exists())
            })?;
        }
        check_port(self.plan.listen).map_err(|e| Failure::Error(e.message))?;
        self.spawn(Role::Nginx).map_err(Failure::Error)?;
        // nginx writes its pid file once it has read its configuration and
        // opened its listening socket: from then on, connections are queued.
        let (pid_file, pid) = (self.plan.nginx_pid_file.clone(), self.nginx.pid);
        self.wait_until(Role::Nginx, NGINX_TIMEOUT, || {
            let written = std::fs::read_to_string(&pid_file).unwrap_or_default();
            pid.is_some_and(|pid| written.trim() == pid.to_string())
        })
    }
    // ANCHOR_END: start

    /// Waits until `ready()`, polling every 50 ms; fails if a program exits
    /// or TERM or INT arrives first.
    fn wait_until(
        &mut self,
        role: Role,
        timeout: Duration,
        ready: impl Fn() -> bool,
    ) -> Result<(), Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return Ok(());
            }
            if let Some((exited, status)) = self.reap().into_iter().next() {
                return Err(Failure::Error(match exited {
                    Role::Nginx => nginx_failed(self.plan.listen, status),
                    Role::Master if role == Role::Master => format!(
                        "stage 4 exited before creating its socket ({}): its error is above",
                        describe(status)
                    ),
                    Role::Master => format!(
                        "stage 4 exited while nginx was starting ({}): its error is above",
                        describe(status)
                    ),
                }));
            }
            if self.signals.take().into_iter().any(is_stop) {
                return Err(Failure::Stopped);
            }
            if Instant::now() >= deadline {
                return Err(Failure::Error(format!(
                    "{} did not start within {} s",
                    role.name(),
                    timeout.as_secs()
                )));
            }
            self.wait(Duration::from_millis(50));
        }
    }

    // ANCHOR: supervise
    /// Watches both programs until TERM or INT; returns the exit status, or
    /// why it gave up.
    pub fn supervise(mut self) -> Result<i32, StartError> {
        loop {
            self.wait(Duration::from_secs(1));
            for signal in self.signals.take() {
                match signal {
                    libc::SIGCHLD => {} // reaped below
                    libc::SIGHUP => self.reload(),
                    libc::SIGTTIN | libc::SIGTTOU => self.forward(Role::Master, signal),
                    libc::SIGUSR1 => {
                        // Reopen the log files (logrotate): nginx's and
                        // stage 4's workers' access logs.
                        log::info!("Handling signal: usr1: nginx and stage 4 reopen their logs");
                        self.forward(Role::Nginx, signal);
                        self.forward(Role::Master, signal);
                    }
                    libc::SIGUSR2 | libc::SIGWINCH => {
                        log::info!(
                            "Ignoring signal {}: stage 5 has no upgrade on the fly",
                            supervise::signals::name(signal)
                        );
                    }
                    libc::SIGTERM | libc::SIGINT | libc::SIGQUIT => {
                        let name = Signal::try_from(signal).map_or("?", Signal::as_str);
                        let name = name.trim_start_matches("SIG").to_lowercase();
                        log::info!("Handling signal: {name}");
                        self.stop();
                        return Ok(0);
                    }
                    // ALRM, PROF, ...: their default action would end the
                    // supervisor; they mean nothing to it.
                    other => log::warn!(
                        "Ignoring signal: {}: it means nothing to stage 5",
                        supervise::signals::short_name(other)
                    ),
                }
            }
            for (role, status) in self.reap() {
                if let Err(reason) = self.restart(role, status) {
                    self.stop();
                    return Err(StartError::new(reason));
                }
            }
        }
    }

    /// A program exited by itself: start it again, as supervisord does,
    /// unless it keeps dying as soon as it starts.
    fn restart(&mut self, role: Role, status: WaitStatus) -> Result<(), String> {
        let Some(program) = self.program(role) else {
            return Ok(());
        };
        if program.restarts.exited(program.started) == Decision::GiveUp {
            return Err(format!(
                "{} exited {} times in a row within {} s of starting (last: {}): giving up",
                role.name(),
                RESTARTS.start_retries,
                RESTARTS.start_secs.as_secs(),
                describe(status)
            ));
        }
        log::error!(
            "{} (pid:{}) exited ({}): starting it again",
            role.name(),
            status.pid().map_or(0, Pid::as_raw),
            describe(status)
        );
        if let Some(pid) = status.pid() {
            self.clean_up_after(role, pid);
        }
        self.spawn(role)
    }
    // ANCHOR_END: supervise

    /// What a dead master leaves behind. nginx's workers outlive their
    /// master and keep the port: QUIT makes them close it at once and finish
    /// their requests. Stage 4's workers already got TERM (their
    /// PR_SET_PDEATHSIG); its socket file stays, and would stop the new
    /// master from binding while they finish.
    fn clean_up_after(&mut self, role: Role, pid: Pid) {
        match role {
            Role::Nginx => {
                let _ = killpg(pid, Signal::SIGQUIT);
                let deadline = Instant::now() + Duration::from_secs(5);
                while TcpListener::bind(self.plan.listen).is_err() {
                    if Instant::now() >= deadline {
                        let _ = killpg(pid, Signal::SIGKILL);
                        break;
                    }
                    self.wait(Duration::from_millis(50));
                }
            }
            Role::Master => {
                #[cfg(not(target_os = "linux"))]
                let _ = killpg(pid, Signal::SIGTERM);
                if let Some(socket) = &self.plan.socket {
                    let _ = std::fs::remove_file(socket);
                }
            }
        }
    }

    // ANCHOR: signals
    /// HUP: nginx reads its configuration again and replaces its workers;
    /// stage 4 replaces its workers (with new code, with --lazy-apps).
    fn reload(&mut self) {
        log::info!("Handling signal: hup: reloading nginx and stage 4");
        self.forward(Role::Nginx, libc::SIGHUP);
        self.forward(Role::Master, libc::SIGHUP);
    }

    fn forward(&self, role: Role, signal: libc::c_int) {
        if let (Some(pid), Ok(signal)) = (self.pid(role), Signal::try_from(signal)) {
            let _ = kill(pid, signal);
        }
    }

    /// TERM or INT: nginx first (it stops accepting, and finishes the
    /// requests in flight, which wait on stage 4), then stage 4, which by
    /// then has no more work coming. A second TERM or INT hurries both.
    pub fn stop(&mut self) {
        match (self.pid(Role::Nginx), self.pid(Role::Master)) {
            (Some(_), Some(_)) => log::info!("Stopping nginx, then stage 4"),
            (Some(_), None) => log::info!("Stopping nginx"),
            (None, Some(_)) => log::info!("Stopping stage 4"),
            (None, None) => {}
        }
        self.stop_one(Role::Nginx, Signal::SIGQUIT, Signal::SIGTERM);
        self.stop_one(Role::Master, Signal::SIGTERM, Signal::SIGINT);
        if let (Some(_), Some(socket)) = (&self.master, &self.plan.socket) {
            // Gone already, unless stage 4 had to be killed.
            let _ = std::fs::remove_file(socket);
        }
        self.reap_orphans();
        log::info!("Shutting down: stage5-nginx");
    }
    // ANCHOR_END: signals

    /// Sends `graceful` and waits for the program to exit: `fast` instead
    /// once hurried, SIGKILL to its whole process group (its workers too)
    /// after the grace time.
    fn stop_one(&mut self, role: Role, graceful: Signal, fast: Signal) {
        let Some(pid) = self.pid(role) else { return };
        let _ = kill(pid, if self.hurry { fast } else { graceful });
        let deadline = Instant::now() + self.plan.grace;
        let mut killed = false;
        while self.pid(role).is_some() {
            self.wait(Duration::from_millis(50));
            if !self.hurry && self.signals.take().into_iter().any(is_stop) {
                log::info!("Stopping at once");
                self.hurry = true;
                let _ = kill(pid, fast);
            }
            if !killed && Instant::now() >= deadline {
                log::warn!(
                    "{} (pid:{pid}) did not stop in time: killing it",
                    role.name()
                );
                let _ = killpg(pid, Signal::SIGKILL);
                killed = true;
            }
            self.reap();
        }
    }

    /// Orphans this process adopted (workers of a master that was killed)
    /// get a few seconds to finish and be reaped; stage 4's last lines are
    /// passed on.
    fn reap_orphans(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let children_left = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => true,
                Ok(_) => continue,
                Err(_) => false, // ECHILD: none
            };
            if !children_left && self.relays.is_empty() {
                return;
            }
            self.wait(Duration::from_millis(50));
        }
    }

    /// Starts `role`'s program: in its own process group (so a Ctrl+C in the
    /// terminal reaches only the supervisor, which stops things in order),
    /// and told to die with the supervisor, should it be killed.
    fn spawn(&mut self, role: Role) -> Result<(), String> {
        let Some(program) = self.program(role) else {
            return Ok(());
        };
        log::info!(
            "Starting {}: {}",
            role.name(),
            command_line(&program.command)
        );
        let mut cmd = Command::new(&program.command[0]);
        cmd.args(&program.command[1..])
            .stdin(Stdio::null())
            .process_group(0);
        if role == Role::Master {
            cmd.stderr(Stdio::piped());
        }
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start {}: {e}",
                std::path::Path::new(&program.command[0]).display()
            )
        })?;
        program.pid = Some(Pid::from_raw(child.id() as i32));
        program.started = Instant::now();
        if let Some(pipe) = child.stderr.take() {
            self.relays.push(Relay::new(pipe));
        }
        Ok(())
    }

    /// Collects every child that exited, ours and adopted ones; returns ours.
    fn reap(&mut self) -> Vec<(Role, WaitStatus)> {
        let mut exited = Vec::new();
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return exited,
                Ok(status) => status,
            };
            let ours = [Some(&mut self.nginx), self.master.as_mut()];
            for program in ours.into_iter().flatten() {
                if program.pid.is_some() && program.pid == status.pid() {
                    program.pid = None;
                    exited.push((program.role, status));
                }
            }
        }
    }

    /// Sleeps until a signal arrives, stage 4 writes a line, or `timeout`;
    /// passes on what stage 4 wrote.
    fn wait(&mut self, timeout: Duration) {
        let mut fds = vec![PollFd::new(self.signals.fd(), PollFlags::POLLIN)];
        fds.extend(
            self.relays
                .iter()
                .map(|r| PollFd::new(r.fd(), PollFlags::POLLIN)),
        );
        let _ = poll(
            &mut fds,
            PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX),
        );
        drop(fds);
        self.relays.retain_mut(Relay::pump);
    }
}

/// A command as a student would type it in a shell.
fn command_line(command: &[OsString]) -> String {
    let words: Vec<String> = command
        .iter()
        .map(|word| {
            let word = word.to_string_lossy();
            if word.is_empty()
                || word.contains(|c: char| !c.is_ascii_alphanumeric() && !"/._-:=,".contains(c))
            {
                format!("'{}'", word.replace('\'', "'\\''"))
            } else {
                word.into_owned()
            }
        })
        .collect();
    words.join(" ")
}

fn is_stop(signal: libc::c_int) -> bool {
    matches!(signal, libc::SIGTERM | libc::SIGINT | libc::SIGQUIT)
}

/// On Linux, the child gets SIGTERM if the supervisor dies, even by SIGKILL
/// (both programs stop cleanly on TERM): no nginx is left holding the port.
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        let parent = nix::unistd::getpid();
        // SAFETY: between fork and exec the closure makes only
        // async-signal-safe system calls (prctl, getppid).
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::other("the supervisor has exited"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// Whether nginx will be able to listen: bind the address ourselves first,
/// so a busy port gets one clear sentence.
pub fn check_port(addr: SocketAddr) -> Result<(), StartError> {
    TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| port_error(addr, e))
}

fn port_error(addr: SocketAddr, e: std::io::Error) -> StartError {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        StartError::new(format!(
            "cannot listen on {addr}: the address is already in use (is another server running there? choose another with --listen {}:{})",
            addr.ip(),
            addr.port().wrapping_add(1).max(1)
        ))
    } else {
        wsgi_bridge::boot::bind_error(addr, e)
    }
}

/// nginx exited at start-up: its own message is above; say it in one
/// sentence when it is the usual reason.
fn nginx_failed(addr: SocketAddr, status: WaitStatus) -> String {
    match check_port(addr) {
        Err(e) => e.message,
        Ok(()) => format!(
            "nginx did not start ({}): its error is above",
            describe(status)
        ),
    }
}
