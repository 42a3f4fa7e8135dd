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

use std::net::TcpListener;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use pyo3::prelude::*;

use supervise::restart::{Decision, RestartPolicy, Restarts, describe_exit};
use supervise::signals::{self, SignalQueue};

use crate::config::Config;
use crate::listen::Listeners;
use crate::scoreboard::{MAX_WORKERS, Scoreboard, now_ms};
use crate::start::{ExtraChild, Master};
use crate::stats;
use crate::upgrade::{self, Relaunch};
use wsgi_bridge::trace;

use crate::worker::{self, APP_LOAD_ERROR, WORKER_BOOT_ERROR, WorkerClass, WorkerSpec};

/// An extra child that dies within 2 s of being started did not start;
/// after 5 such failures in a row the master gives up on it.
const EXTRA_CHILD_RESTARTS: RestartPolicy = RestartPolicy {
    start_secs: Duration::from_secs(2),
    start_retries: 5,
};

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

/// Why the master stops when a hook of its own raised (gunicorn's arbiter
/// does not catch those exceptions either).
const HOOK_FAILED: &str = "A server hook raised an exception (traceback above).";

/// Which side of a fork this is.
enum Forked {
    /// The new process, with the signal mask to restore once it is ready.
    Child {
        signal_mask: nix::sys::signal::SigSet,
    },
    Parent(Pid),
}

/// How the master's loop ended.
enum Exit {
    /// TERM: let workers finish their requests.
    Graceful,
    /// INT or QUIT: stop now.
    Fast,
    /// A worker could not start, or could not load the app: stop, and say so.
    BootFailure(&'static str),
}

/// One of the master's extra children, and its record.
struct ExtraProcess {
    child: ExtraChild,
    pid: Option<Pid>,
    started: Instant,
    restarts: Restarts,
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
    boot_failed: Option<&'static str>,
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
        let extra = extra_children
            .into_iter()
            .map(|child| ExtraProcess {
                child,
                pid: None,
                started: Instant::now(),
                restarts: Restarts::new(EXTRA_CHILD_RESTARTS),
            })
            .collect();
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

    // ANCHOR: spawn_worker
    /// Forks one worker. In the child this never returns.
    fn spawn_worker(&mut self) -> bool {
        let Some(slot) = (0..MAX_WORKERS).find(|i| !self.workers.iter().any(|w| w.slot == *i))
        else {
            log::error!("no free scoreboard slot for another worker");
            return false;
        };
        self.scoreboard.slot(slot).reset(0);
        let jitter = if self.config.max_requests_jitter > 0 {
            random_below(self.config.max_requests_jitter + 1)
        } else {
            0
        };
        // The configuration file's pre_fork hook, and the worker's object
        // its other hooks will get.
        let hook_worker = match self.config.hooks.as_ref().map(|h| h.pre_fork(self.target)) {
            Some(Ok(worker)) => Some(worker),
            Some(Err(_)) => {
                self.boot_failed = Some(HOOK_FAILED);
                return false;
            }
            None => None,
        };
        match self.fork_child() {
            Ok(Forked::Child { signal_mask }) => {
                let status = worker::run(WorkerSpec {
                    config: &self.config,
                    worker_class: self.worker_class.as_ref(),
                    listeners: self
                        .listeners
                        .as_ref()
                        .expect("listening while workers run"),
                    slot: self.scoreboard.slot(slot),
                    preloaded: self.preloaded.as_ref(),
                    hook_worker,
                    multiprocess: self.target > 1,
                    signal_mask,
                    max_requests: if self.config.max_requests > 0 {
                        self.config.max_requests + jitter
                    } else {
                        0
                    },
                });
                std::process::exit(status);
            }
            Ok(Forked::Parent(child)) => {
                if let (Some(hooks), Some(worker)) = (&self.config.hooks, hook_worker) {
                    hooks.forked(child.as_raw(), worker);
                }
                self.scoreboard
                    .slot(slot)
                    .pid
                    .store(child.as_raw(), Ordering::Relaxed);
                trace::event("spawn", child.as_raw(), slot, self.generation, "");
                self.workers.push(WorkerProcess {
                    pid: child,
                    slot,
                    generation: self.generation,
                    started: Instant::now(),
                    state: WorkerState::Running,
                    timed_out: false,
                });
                true
            }
            Err(e) => {
                log::error!("fork failed: {e}");
                false
            }
        }
    }

    /// Forks a child of the master (a worker or an extra child). The master's
    /// signals stay blocked in the child until it has handlers of its own:
    /// it restores `signal_mask` then. The child drops what belongs to the
    /// master (its signal handlers, the stats socket).
    fn fork_child(&mut self) -> nix::Result<Forked> {
        let old_mask = signals::block_all();
        match self.fork() {
            Ok(ForkResult::Child) => {
                if let Some(signals) = self.signals.take() {
                    signals.forget_in_child();
                }
                self.stats = None;
                Ok(Forked::Child {
                    signal_mask: old_mask,
                })
            }
            Ok(ForkResult::Parent { child }) => {
                signals::restore(&old_mask);
                Ok(Forked::Parent(child))
            }
            Err(e) => {
                signals::restore(&old_mask);
                Err(e)
            }
        }
    }

    /// fork(2). With `--preload` (or a configuration file, `-c`), Python is
    /// running in the master, and must be told about the fork on both sides
    /// (it resets its locks and thread state in the child). This is safe only because the master has a
    /// single thread: a fork copies only the calling thread, and a lock held
    /// by any other thread would stay locked forever in the child.
    fn fork(&self) -> nix::Result<ForkResult> {
        // SAFETY: Py_IsInitialized may be called at any time.
        let python_runs = unsafe { pyo3::ffi::Py_IsInitialized() } != 0;
        if !python_runs {
            // SAFETY: the master is single-threaded (no runtime, no pool).
            return unsafe { nix::unistd::fork() };
        }
        Python::attach(|_py| {
            // SAFETY: called with the GIL held, from the only thread, around
            // fork(), as the C API documentation requires.
            unsafe {
                pyo3::ffi::PyOS_BeforeFork();
                let result = nix::unistd::fork();
                match result {
                    Ok(ForkResult::Child) => pyo3::ffi::PyOS_AfterFork_Child(),
                    _ => pyo3::ffi::PyOS_AfterFork_Parent(),
                }
                result
            }
        })
    }
    // ANCHOR_END: spawn_worker

    /// Forks the extra children that are not running, unless one keeps
    /// dying at start-up: that one is given up on instead of being
    /// restarted in a tight loop.
    fn spawn_extra_children(&mut self) {
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
    fn reap_extra_child(&mut self, pid: Pid, status: WaitStatus) -> bool {
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

    // ANCHOR: reap_workers
    /// Collects the exit status of every worker that died, and says how.
    fn reap_workers(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else { continue };
            if self.reap_extra_child(pid, status) || self.reap_new_master(pid, status) {
                continue;
            }
            let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let worker = self.workers.swap_remove(index);
            let expected = worker.state != WorkerState::Running;
            if trace::enabled() {
                let why = match self.stopping {
                    true => format!("stopped with the master ({})", describe_exit(status)),
                    false => exit_reason(&worker, status, self.config.max_requests),
                };
                trace::event("exit", pid.as_raw(), worker.slot, worker.generation, &why);
            }
            match status {
                WaitStatus::Exited(_, 0) => {
                    // The worker said goodbye itself ("Worker exiting").
                    log::debug!("Worker (pid:{pid}) exited cleanly");
                }
                WaitStatus::Exited(_, WORKER_BOOT_ERROR) => {
                    log::error!("Worker (pid:{pid}) failed to boot.");
                    self.boot_failed = Some("Worker failed to boot.");
                }
                WaitStatus::Exited(_, APP_LOAD_ERROR) => {
                    log::error!("Worker (pid:{pid}) failed to load the app.");
                    self.boot_failed = Some("App failed to load.");
                }
                WaitStatus::Exited(_, code) => {
                    log::error!("Worker (pid:{pid}) exited with code {code}.");
                }
                WaitStatus::Signaled(_, Signal::SIGKILL, _) if !expected => {
                    log::error!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?");
                }
                WaitStatus::Signaled(_, signal, _) if !expected || signal != Signal::SIGKILL => {
                    log::error!(
                        "Worker (pid:{pid}) was sent {}!",
                        signals::name(signal as i32)
                    );
                }
                _ => {}
            }
            self.scoreboard
                .slot(worker.slot)
                .pid
                .store(0, Ordering::Relaxed);
            if let Some(hooks) = &self.config.hooks
                && hooks.child_exit(pid.as_raw(), self.target).is_err()
            {
                self.boot_failed = Some(HOOK_FAILED);
            }
        }
    }
    // ANCHOR_END: reap_workers

    // ANCHOR: kill_hung_workers
    /// A worker that has not touched its heartbeat for `--timeout` is stuck
    /// (an endless loop, a request that never ends): kill it, so a new one
    /// can take its place. Workers slow to finish a graceful stop too.
    fn kill_hung_workers(&mut self) {
        let graceful = self.config.graceful_timeout;
        for worker in &mut self.workers {
            match worker.state {
                WorkerState::Running => {
                    let Some(timeout) = self.config.timeout else {
                        continue;
                    };
                    let silent = self.scoreboard.slot(worker.slot).silent_for_ms();
                    if silent > timeout.as_millis() as u64 {
                        log::error!(
                            "WORKER TIMEOUT (pid:{}): silent for {:.1} s",
                            worker.pid,
                            silent as f64 / 1000.0
                        );
                        // As gunicorn: ABRT first, which the worker answers
                        // by exiting at once (after the worker_abort hook of
                        // a configuration file); KILL if it cannot even do that.
                        let _ = kill(worker.pid, Signal::SIGABRT);
                        worker.state = WorkerState::Aborted(Instant::now());
                        worker.timed_out = true;
                    }
                }
                WorkerState::Aborted(since) if since.elapsed() > ABORT_GRACE => {
                    log::error!(
                        "Worker (pid:{}) still there {} s after ABRT: killing it",
                        worker.pid,
                        ABORT_GRACE.as_secs()
                    );
                    let _ = kill(worker.pid, Signal::SIGKILL);
                    worker.state = WorkerState::Killed;
                }
                WorkerState::Stopping(since) if since.elapsed() > graceful => {
                    log::warn!(
                        "Worker (pid:{}) did not stop in time: killing it",
                        worker.pid
                    );
                    let _ = kill(worker.pid, Signal::SIGKILL);
                    worker.state = WorkerState::Killed;
                }
                _ => {}
            }
        }
    }
    // ANCHOR_END: kill_hung_workers

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

    // ANCHOR: reload
    /// HUP: start a new generation of workers, which import the app afresh,
    /// and let the old ones finish their requests and exit. The listening
    /// socket stays open in the master all along, so no connection is
    /// refused: connections wait in its backlog while new workers boot.
    fn reload(&mut self) {
        if self.target == 0 {
            // After WINCH: HUP brings the configured workers back.
            self.target = self.config.workers;
        }
        // gunicorn reads its configuration file again on HUP: the new
        // generation runs with the new settings.
        if let Some(reread) = self.config.reread.take() {
            match reread() {
                Ok(new) => self.take_settings(new),
                Err(e) => log::error!(
                    "Handling signal: hup: the configuration was not read again ({e}); the workers restart with the settings they had"
                ),
            }
            self.config.reread = Some(reread);
        }
        log::info!("Handling signal: hup: reloading {} workers", self.target);
        if let Some(hooks) = &self.config.hooks
            && hooks.on_reload(self.target).is_err()
        {
            self.boot_failed = Some(HOOK_FAILED);
            return;
        }
        if self.preloaded.is_some() {
            log::warn!(
                "with --preload the app was imported once, in the master: new workers run the same code (restart the master to load new code)"
            );
        }
        self.generation += 1;
        let old: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| w.state == WorkerState::Running)
            .map(|w| w.pid)
            .collect();
        for _ in 0..self.target {
            if !self.spawn_worker() {
                break;
            }
        }
        for pid in old {
            self.stop_worker(pid);
        }
    }
    // ANCHOR_END: reload

    // ANCHOR: take_settings
    /// A HUP's new settings: what a new generation of workers can take
    /// (how many, their timeouts and recycling, the worker class's own
    /// settings, the hooks). The listening sockets and the app loaded by
    /// --preload stay as they are; the log says so when the file changed them.
    fn take_settings(&mut self, new: crate::config::Reread) {
        let crate::config::Reread {
            config: new,
            worker_class,
            not_applied,
        } = new;
        let old = &self.config;
        let mut changes = Vec::new();
        if new.workers != old.workers {
            changes.push(format!("workers {} -> {}", old.workers, new.workers));
        }
        if new.timeout != old.timeout {
            let secs =
                |t: Option<Duration>| t.map_or("off".to_string(), |t| format!("{} s", t.as_secs()));
            changes.push(format!(
                "timeout {} -> {}",
                secs(old.timeout),
                secs(new.timeout)
            ));
        }
        if new.graceful_timeout != old.graceful_timeout {
            changes.push(format!(
                "graceful_timeout {} s -> {} s",
                old.graceful_timeout.as_secs(),
                new.graceful_timeout.as_secs()
            ));
        }
        if (new.max_requests, new.max_requests_jitter)
            != (old.max_requests, old.max_requests_jitter)
        {
            changes.push(format!(
                "max_requests {} (jitter {}) -> {} (jitter {})",
                old.max_requests,
                old.max_requests_jitter,
                new.max_requests,
                new.max_requests_jitter
            ));
        }
        log::info!(
            "Handling signal: hup: configuration read again{}",
            if changes.is_empty() {
                String::new()
            } else {
                format!(": {}", changes.join(", "))
            }
        );
        for what in not_applied {
            log::warn!("Handling signal: hup: {what}");
        }
        if new.workers != old.workers {
            self.target = new.workers;
        }
        self.config.workers = new.workers;
        self.config.timeout = new.timeout;
        self.config.graceful_timeout = new.graceful_timeout;
        self.config.max_requests = new.max_requests;
        self.config.max_requests_jitter = new.max_requests_jitter;
        self.config.forwarded = new.forwarded;
        self.config.hooks = new.hooks;
        if worker_class.name() == self.worker_class.name() {
            self.worker_class = worker_class;
        }
    }
    // ANCHOR_END: take_settings

    // ANCHOR: stop
    fn stop(mut self, exit: Exit) -> i32 {
        self.stopping = true;
        let (signal, limit, status) = match exit {
            Exit::Graceful => {
                log::info!("Handling signal: term");
                (Signal::SIGTERM, self.config.graceful_timeout, 0)
            }
            Exit::Fast => {
                log::info!("Handling signal: int");
                (Signal::SIGQUIT, Duration::from_secs(2), 0)
            }
            Exit::BootFailure(_) => (Signal::SIGQUIT, Duration::from_secs(2), 1),
        };
        for pid in self.extra.iter_mut().filter_map(|e| e.pid.take()) {
            let _ = kill(pid, Signal::SIGTERM);
            let _ = waitpid(pid, None);
        }
        for worker in &self.workers {
            let _ = kill(worker.pid, signal);
        }
        // Then stop listening. Closing the master's copy of the socket is not
        // enough: every worker holds one too (fork copied it) until it exits,
        // and meanwhile new clients would queue, wait, and be reset at the
        // end. Shutting the socket down acts on all copies at once: new
        // clients are refused now and can go elsewhere, while workers finish
        // what they accepted. (Only at a real stop: on a reload the new
        // workers share this same socket.) With --reuse-port each worker's
        // socket is its own and closes when the worker exits.
        if let Some(mut listeners) = self.listeners.take() {
            if self.new_master.is_some() {
                // A new master serves on these same sockets: leave them open,
                // and their files in place.
                log::info!(
                    "The new master keeps the {}",
                    if listeners.count() == 1 {
                        "socket"
                    } else {
                        "sockets"
                    }
                );
                listeners.hand_over();
            } else {
                listeners.stop_listening();
            }
            // Dropped: a unix socket's file is removed (new clients get "No
            // such file" at once), unless handed over.
        }
        let deadline = Instant::now() + limit;
        while !self.workers.is_empty() && Instant::now() < deadline {
            self.wait(Duration::from_millis(100));
            self.reap_workers();
        }
        for worker in &self.workers {
            log::warn!(
                "Worker (pid:{}) did not stop in time: killing it",
                worker.pid
            );
            let _ = kill(worker.pid, Signal::SIGKILL);
        }
        while !self.workers.is_empty() {
            match waitpid(None, None) {
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.workers.retain(|w| w.pid != pid);
                    }
                }
                Err(_) => break,
            }
        }
        if let Some(path) = &self.config.pid_file {
            // After an upgrade the name belongs to the new master.
            match self.new_master {
                Some(_) => std::fs::remove_file(upgrade::oldbin(path)),
                None => std::fs::remove_file(path),
            }
            .ok();
        }
        if let Exit::BootFailure(reason) = exit {
            log::error!("Shutting down: Master");
            log::error!("Reason: {reason}");
        } else {
            log::info!("Shutting down: Master");
        }
        if let Some(hooks) = &self.config.hooks {
            hooks.on_exit(self.target);
        }
        status
    }
    // ANCHOR_END: stop

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

    // ANCHOR: upgrade
    /// USR2: start a new master from the binary on disk, with the same
    /// arguments, handing it the listening socket. This master goes on
    /// serving until it is told to stop (TERM, or WINCH then TERM).
    fn upgrade(&mut self) {
        log::info!("Handling signal: usr2: starting a new master");
        if let Some(pid) = self.new_master {
            log::warn!("a new master (pid:{pid}) is already running: stop this one first");
            return;
        }
        let sockets = self.listeners.as_ref().and_then(Listeners::shared_fds);
        let (Some(relaunch), Some(sockets)) = (&self.relaunch, sockets) else {
            log::error!(
                "cannot upgrade: with --reuse-port each worker binds its own socket, so there is none to hand over (start the new server beside this one instead)"
            );
            return;
        };
        if let Some(hooks) = &self.config.hooks
            && hooks.pre_exec(self.target).is_err()
        {
            self.boot_failed = Some(HOOK_FAILED);
            return;
        }
        match relaunch.start(&sockets) {
            Ok(pid) => {
                log::info!(
                    "New master started (pid:{pid}); stop this one (pid:{}) with TERM once it serves",
                    std::process::id()
                );
                if let Some(path) = &self.config.pid_file {
                    let _ = std::fs::rename(path, upgrade::oldbin(path));
                }
                self.new_master = Some(pid);
            }
            Err(e) => log::error!("cannot start a new master: {e}"),
        }
    }
    // ANCHOR_END: upgrade

    /// The new master exited: the upgrade failed, and this master, which
    /// never stopped serving, takes its pid file back. Returns `false`
    /// when `pid` is not the new master.
    fn reap_new_master(&mut self, pid: Pid, status: WaitStatus) -> bool {
        if self.new_master != Some(pid) {
            return false;
        }
        self.new_master = None;
        log::error!(
            "The new master (pid:{pid}) exited ({}): this master goes on serving",
            describe_exit(status)
        );
        if let Some(path) = &self.config.pid_file {
            let _ = std::fs::rename(upgrade::oldbin(path), path);
        }
        true
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

/// Why a worker died, in a few words, for `--trace`'s pictures.
fn exit_reason(worker: &WorkerProcess, status: WaitStatus, max_requests: u64) -> String {
    match (worker.state, status) {
        // ABRT, then KILL if it did not exit: both are the master's --timeout.
        (WorkerState::Aborted(_) | WorkerState::Killed, _) if worker.timed_out => {
            "killed by the master: --timeout".into()
        }
        (WorkerState::Killed, _) => "killed by the master: --graceful-timeout".into(),
        (WorkerState::Stopping(_), WaitStatus::Exited(_, 0)) => "stopped (TERM)".into(),
        (WorkerState::Running, WaitStatus::Exited(_, 0)) if max_requests > 0 => {
            "exited: --max-requests".into()
        }
        (_, WaitStatus::Signaled(_, signal, _)) => {
            format!(
                "killed by {} (not the master)",
                signals::name(signal as i32)
            )
        }
        _ => describe_exit(status),
    }
}

/// A random number below `n`, for --max-requests-jitter (no need for a
/// cryptographic generator: it only spreads restarts apart).
fn random_below(n: u64) -> u64 {
    let seed = now_ms() ^ u64::from(std::process::id()).rotate_left(32);
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (seed >> 29);
    mixed % n
}
