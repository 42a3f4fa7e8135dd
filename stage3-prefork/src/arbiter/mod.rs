//! The master (gunicorn calls it the arbiter). It never talks to a client.
//! It binds the socket, forks the workers, and then only watches:
//!
//! ```text
//!            ┌──────────── master ────────────┐
//! signals ──►│ self-pipe ─► loop: reap, spawn, │◄── scoreboard (shared memory)
//!            │             kill hung, reload  │        ▲  ▲  ▲
//!            └──────┬──────────┬──────────┬───┘        │  │  │ heartbeats
//!              fork │     fork │     fork │            │  │  │
//!               worker 1   worker 2   worker 3  ───────┘──┘──┘
//!                   └──── accept() on the shared socket ────┘
//! ```
//!
//! One file per job of the master:
//!
//! - this one: what the master knows (its workers, the target count), its
//!   loop (`run`, which handles TTIN, TTOU and WINCH itself), and
//!   `manage_workers`, which forks or stops workers until as many run as
//!   should; USR1 and the `--stats` server;
//! - `fork.rs`: forking a worker (`spawn_worker`), safely even with Python
//!   running in the master;
//! - `watch.rs`: collecting dead workers (`reap_workers`, on SIGCHLD) and
//!   killing hung ones (`kill_hung_workers`, `--timeout`);
//! - `extra.rs`: the extra children run beside the workers (uWSGI's
//!   `attach-daemon`), restarted with bounded retries;
//! - `hup.rs`: HUP, a new generation of workers (`reload`), with the
//!   configuration read again (`take_settings`);
//! - `usr2.rs`: USR2, a new master started from the binary on disk
//!   (`upgrade`), and what happens when it exits;
//! - `stop.rs`: TERM, INT and QUIT: the workers stop, then the master.

mod extra;
mod fork;
mod hup;
mod stop;
mod usr2;
mod watch;

use std::net::TcpListener;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pyo3::prelude::*;

use supervise::signals::{self, SignalQueue};

use crate::config::Config;
use crate::listen::Listeners;
use crate::scoreboard::Scoreboard;
use crate::start::Master;
use crate::stats;
use crate::upgrade::Relaunch;
use crate::worker::WorkerClass;
use wsgi_bridge::trace;

use extra::ExtraProcess;

/// What the master knows about one worker.
pub(crate) struct WorkerProcess {
    pub pid: Pid,
    pub slot: usize,
    /// Bumped by every reload (HUP): workers of an older generation run old code.
    pub generation: u64,
    pub started: Instant,
    pub state: WorkerState,
    /// Killed by the master for `--timeout` (for `--trace`).
    pub timed_out: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WorkerState {
    Running,
    /// Sent TERM at this moment: finishing its requests, then exiting.
    Stopping(Instant),
    /// Silent past --timeout, sent ABRT at this moment: it exits at once
    /// with status 1 (after the configuration file's worker_abort hook, if
    /// there is one); sent KILL if it is still there [`ABORT_GRACE`] later.
    Aborted(Instant),
    /// Sent KILL: waiting to be reaped.
    Killed,
}

/// How long a worker sent ABRT has to run its `worker_abort` hook and exit.
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// Why the master stops by itself (gunicorn's `HaltServer`): the reason it
/// logs last, and its exit status.
#[derive(Clone, Copy, Debug)]
struct Halt {
    reason: &'static str,
    status: i32,
}

/// Why the master stops when a hook of its own raised. gunicorn's arbiter
/// does not catch those exceptions either: its main loop logs "Unhandled
/// exception in main loop" and calls `sys.exit(-1)`, status 255, which is
/// what a script or a supervisor watching the master sees.
const HOOK_FAILED: Halt = Halt {
    reason: "Unhandled exception in main loop: a server hook raised (traceback above).",
    status: 255,
};

/// How the master's loop ended.
enum Exit {
    /// TERM: let workers finish their requests.
    Graceful,
    /// INT or QUIT: stop now.
    Fast,
    /// A worker could not start, or could not load the app, or a hook
    /// raised: stop, and say so.
    BootFailure(Halt),
}

pub(crate) struct Arbiter {
    pub config: Config,
    pub worker_class: Box<dyn WorkerClass>,
    pub listeners: Option<Listeners>,
    pub scoreboard: Scoreboard,
    signals: Option<SignalQueue>,
    stats: Option<TcpListener>,
    pub workers: Vec<WorkerProcess>,
    /// How many workers should be running (TTIN and TTOU change it).
    pub target: usize,
    pub generation: u64,
    preloaded: Option<Py<PyAny>>,
    pub started: Instant,
    /// Why a worker failed to boot, if one did.
    boot_failed: Option<Halt>,
    extra: Vec<ExtraProcess>,
    /// How to start this server again (USR2), and the new master once
    /// started: the socket is then shared with it.
    relaunch: Option<Relaunch>,
    new_master: Option<Pid>,
    /// The master is stopping (for `--trace`: why workers exit).
    stopping: bool,
}

impl Arbiter {
    pub fn new(
        master: Master,
        relaunch: Option<Relaunch>,
        listeners: Listeners,
        signals: SignalQueue,
        stats: Option<TcpListener>,
        preloaded: Option<Py<PyAny>>,
    ) -> nix::Result<Arbiter> {
        let Master {
            config,
            worker_class,
            extra_children,
        } = master;
        let extra = extra_children.into_iter().map(ExtraProcess::new).collect();
        Ok(Arbiter {
            target: config.workers,
            config,
            worker_class,
            listeners: Some(listeners),
            scoreboard: Scoreboard::new()?,
            signals: Some(signals),
            stats,
            workers: Vec::new(),
            generation: 0,
            preloaded,
            started: Instant::now(),
            boot_failed: None,
            extra,
            relaunch,
            new_master: None,
            stopping: false,
        })
    }

    // ANCHOR: main_loop
    /// Runs until told to stop; returns the process exit status.
    pub fn run(mut self) -> i32 {
        let exit = loop {
            let mut exit = None;
            for signal in self.signals.as_mut().map(|s| s.take()).unwrap_or_default() {
                if signal != libc::SIGCHLD && wsgi_bridge::trace::enabled() {
                    let name = signals::name(signal);
                    trace::event("signal", 0, 0, 0, name.trim_start_matches("SIG"));
                }
                match signal {
                    libc::SIGCHLD => self.reap_workers(),
                    libc::SIGHUP => self.reload(),
                    libc::SIGTTIN => {
                        let old = self.target;
                        self.target += 1;
                        log::info!("Handling signal: ttin: {} workers", self.target);
                        self.nworkers_changed(old);
                    }
                    libc::SIGTTOU => {
                        let old = self.target;
                        self.target = self.target.saturating_sub(1).max(1);
                        log::info!("Handling signal: ttou: {} workers", self.target);
                        self.nworkers_changed(old);
                    }
                    libc::SIGUSR1 => self.reopen_logs(),
                    libc::SIGUSR2 => self.upgrade(),
                    libc::SIGWINCH => {
                        self.target = 0;
                        log::info!(
                            "Handling signal: winch: stopping every worker; the master keeps the socket (HUP or TTIN starts workers again)"
                        );
                    }
                    libc::SIGTERM => exit = Some(Exit::Graceful),
                    libc::SIGINT | libc::SIGQUIT => exit = Some(Exit::Fast),
                    // ALRM, PROF, ...: their default action would end the
                    // master (and leave the workers orphaned); they mean
                    // nothing to it.
                    other => log::warn!(
                        "Ignoring signal: {}: it means nothing to the master",
                        signals::short_name(other)
                    ),
                }
            }
            self.serve_stats();
            self.reap_workers();
            if let Some(reason) = self.boot_failed {
                break Exit::BootFailure(reason);
            }
            if let Some(exit) = exit {
                break exit;
            }
            self.kill_hung_workers();
            self.manage_workers();
            // Sleep until a signal or a stats request arrives, and at least
            // twice a second to look for hung workers.
            self.wait(Duration::from_millis(500));
        };
        self.stop(exit)
    }
    // ANCHOR_END: main_loop

    fn wait(&self, timeout: Duration) {
        let Some(signals) = &self.signals else { return };
        let mut fds = vec![PollFd::new(signals.fd(), PollFlags::POLLIN)];
        if let Some(stats) = &self.stats {
            fds.push(PollFd::new(stats.as_fd(), PollFlags::POLLIN));
        }
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let _ = poll(&mut fds, timeout);
    }

    // ANCHOR: manage_workers
    /// Forks workers until `target` are running; asks the oldest extra ones
    /// to stop when there are too many (after TTOU).
    fn manage_workers(&mut self) {
        self.spawn_extra_children();
        let running = |w: &&WorkerProcess| w.state == WorkerState::Running;
        while self.workers.iter().filter(running).count() < self.target {
            if !self.spawn_worker() {
                break;
            }
        }
        let mut alive: Vec<(Instant, Pid)> = self
            .workers
            .iter()
            .filter(running)
            .map(|w| (w.started, w.pid))
            .collect();
        alive.sort();
        let extra = alive.len().saturating_sub(self.target);
        for &(_, pid) in alive.iter().take(extra) {
            self.stop_worker(pid);
        }
    }
    // ANCHOR_END: manage_workers

    /// The configuration file's `nworkers_changed(server, new, old)` hook.
    fn nworkers_changed(&mut self, old: usize) {
        if let Some(hooks) = &self.config.hooks
            && hooks.nworkers_changed(self.target, old).is_err()
        {
            self.boot_failed = Some(HOOK_FAILED);
        }
    }

    /// Asks a worker to finish its requests and exit.
    fn stop_worker(&mut self, pid: Pid) {
        if let Some(worker) = self.workers.iter_mut().find(|w| w.pid == pid) {
            let _ = kill(pid, Signal::SIGTERM);
            worker.state = WorkerState::Stopping(Instant::now());
        }
    }

    /// USR1: the workers reopen their log files (logrotate has moved them),
    /// as in gunicorn; or, as in uWSGI, the master prints its statistics.
    fn reopen_logs(&mut self) {
        if self.config.usr1 == crate::config::Usr1::PrintStats {
            log::info!(
                "Handling signal: usr1: statistics: {}",
                stats::snapshot(self)
            );
            return;
        }
        log::info!("Handling signal: usr1: workers reopen their log files");
        for worker in &self.workers {
            let _ = kill(worker.pid, Signal::SIGUSR1);
        }
    }

    fn serve_stats(&mut self) {
        let Some(listener) = &self.stats else { return };
        while let Ok((mut stream, _)) = listener.accept() {
            // Answer as HTTP, so `curl` shows it; read the request first (a
            // close with unread bytes would reset the connection).
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = std::io::Read::read(&mut stream, &mut [0u8; 4096]);
            let body = stats::snapshot(self).to_string();
            let response = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}\n",
                body.len() + 1
            );
            let _ = std::io::Write::write_all(&mut stream, response.as_bytes());
        }
    }
}
