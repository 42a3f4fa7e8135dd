//! Signals, handled outside the signal handler.
//!
//! A signal handler may interrupt the process anywhere (in the middle of a
//! `malloc`, say), so it does almost nothing: it counts the signal and writes
//! one byte to a pipe (both async-signal-safe). The process's loop polls the
//! pipe's other end, wakes up, and handles the counted signals calmly, one
//! by one, in its own time: the "self-pipe trick". (gunicorn's arbiter did
//! the same with a pipe until version 23; since 24 its handlers put signals
//! on a `queue.SimpleQueue` that the loop waits on: the same idea, written
//! with the tools Python offers.)
//!
//! Three users, three shapes:
//! - a supervisor (stage 3's master, stage 5) reacts to many signals:
//!   [`SignalQueue`];
//! - a server that only needs to be told to stop (stages 1 and 2, each
//!   worker process): [`stop_on_signals`] and [`stop_requested`];
//! - a process that should die at once on a signal: [`exit_at_once_on`];
//! - the signals nobody here uses ([`unused`]), whose default action would
//!   kill the process: a supervisor gets them from its queue and logs
//!   them, a worker logs them on a thread ([`log_and_ignore`]).

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use signal_hook::SigId;

/// The signals a supervisor reacts to, in the order [`SignalQueue::take`]
/// hands them out (CHLD first: replace dead children before anything else).
pub const HANDLED: [libc::c_int; 10] = [
    libc::SIGCHLD,
    libc::SIGHUP,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// The other signals whose default action ends the process, and that mean
/// nothing to the course's servers: `kill -ALRM` by mistake (or a timer an
/// app forgot) must not take a master or a worker down. A supervisor logs
/// and ignores them (they come out of [`SignalQueue::take`] after
/// [`HANDLED`]); a worker does the same with [`log_and_ignore`]. Left out:
/// the faults (`SEGV`, `BUS`, `FPE`, `ILL`, `TRAP`, `SYS`), which a process
/// cannot go on after, and `PIPE`, which Rust's runtime ignores at start-up
/// (a write to a closed connection then fails with `EPIPE`, which the
/// server handles where it writes; a log line for each client that leaves
/// would be noise).
pub fn unused() -> Vec<libc::c_int> {
    let mut signals = vec![
        libc::SIGABRT,
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGSTKFLT,
        libc::SIGXCPU,
        libc::SIGXFSZ,
    ];
    // The real-time signals too (glibc keeps the first two for itself:
    // SIGRTMIN() is past them).
    signals.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
    signals
}

/// How many times each signal arrived and was not handled yet.
static PENDING: [AtomicUsize; 65] = [const { AtomicUsize::new(0) }; 65];
/// The write end of the wake-up pipe, for the handler.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// A supervisor's end of the self-pipe, and the handlers behind it.
pub struct SignalQueue {
    wake: UnixStream,
    ids: Vec<SigId>,
}

impl SignalQueue {
    pub fn install() -> io::Result<SignalQueue> {
        let (read_end, write_end) = UnixStream::pair()?;
        read_end.set_nonblocking(true)?;
        write_end.set_nonblocking(true)?;
        // The write end lives as long as the process (the handler uses it).
        WAKE_FD.store(write_end.as_raw_fd(), Ordering::SeqCst);
        std::mem::forget(write_end);
        let mut ids = Vec::new();
        for signal in HANDLED.into_iter().chain(unused()) {
            // SAFETY: the action only touches atomics and calls write(2),
            // both async-signal-safe.
            let id =
                unsafe { signal_hook::low_level::register(signal, move || on_signal(signal)) }?;
            ids.push(id);
        }
        Ok(SignalQueue {
            wake: read_end,
            ids,
        })
    }

    /// The fd to poll: readable when a signal arrived.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Takes the signals that arrived since the last call, in a fixed order
    /// (CHLD first: replace dead workers before anything else; the
    /// [`unused`] ones last).
    pub fn take(&mut self) -> Vec<libc::c_int> {
        let mut scratch = [0u8; 64];
        while matches!((&self.wake).read(&mut scratch), Ok(n) if n > 0) {}
        let mut out = Vec::new();
        for signal in HANDLED.into_iter().chain(unused()) {
            let n = PENDING[signal as usize].swap(0, Ordering::SeqCst);
            // Three TTINs in a row are three more workers; repeated CHLDs
            // or TERMs mean the same as one.
            let times = if matches!(signal, libc::SIGTTIN | libc::SIGTTOU) {
                n
            } else {
                n.min(1)
            };
            out.extend(std::iter::repeat_n(signal, times));
        }
        out
    }

    // ANCHOR: forget_in_child
    /// In a freshly forked child: remove the supervisor's handlers, so a
    /// signal sent to the child is not mistaken for one sent to its parent.
    pub fn forget_in_child(self) {
        for id in self.ids {
            signal_hook::low_level::unregister(id);
        }
        let fd: RawFd = WAKE_FD.swap(-1, Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: the write end was leaked on purpose in install(); this
            // process no longer needs it.
            unsafe { libc::close(fd) };
        }
        // The master's signals mean nothing to a child until it says
        // otherwise: the registry's handler stays installed with no action
        // left, which ignores them, so a `kill -TTIN` sent to a worker by
        // mistake (`pkill` matches workers too: they share the master's
        // command line) does no harm (SIGTTIN's default action would stop
        // the process, SIGUSR2's kill it). A stage 3 worker then logs them;
        // changing the disposition here (SIG_IGN) would hide the signals
        // from the handlers it registers, since the registry believes its
        // handler is still in place.
        // A child's own children (an app's subprocess) are its business.
        // SAFETY: a plain sigaction change.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
        drop(self.wake);
    }
    // ANCHOR_END: forget_in_child
}

/// Blocks a supervisor's signals until the returned mask is restored.
///
/// Around fork: between fork() and the moment the child has replaced the
/// master's handlers with its own, a signal would run the master's handler
/// in the child and be lost (a TERM sent to a worker that is still booting
/// would be ignored). Blocked, it waits, and is delivered to the right
/// handler once the child unblocks it.
pub fn block_all() -> SigSet {
    let mut set = SigSet::empty();
    for signal in HANDLED.into_iter().chain(unused()) {
        if let Ok(s) = Signal::try_from(signal) {
            set.add(s);
        }
    }
    let mut old = SigSet::empty();
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old));
    old
}

/// Restores the mask `block_all` returned.
pub fn restore(old: &SigSet) {
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(old), None);
}

// ANCHOR: on_signal
fn on_signal(signal: libc::c_int) {
    PENDING[signal as usize].fetch_add(1, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = [signal as u8];
        // SAFETY: write(2) is async-signal-safe; a full pipe just means a
        // wake-up is already pending.
        unsafe { libc::write(fd, byte.as_ptr().cast(), 1) };
    }
}
// ANCHOR_END: on_signal

// ANCHOR: stop_on_signals
/// Makes SIGINT and SIGTERM write a byte to a pipe whose other end is
/// returned: the server's loop polls it beside its sockets and stops when it
/// becomes readable. Handlers do nothing else (little is safe inside a signal
/// handler). A second SIGINT or SIGTERM exits at once, for the impatient.
/// [`stop_requested`] tells the same without a system call.
pub fn stop_on_signals() -> io::Result<UnixStream> {
    stop_on(&[libc::SIGINT, libc::SIGTERM])
}

/// [`stop_on_signals`] for the given signals only: a stage 3 worker stops
/// gracefully on TERM alone (INT and QUIT end it at once, as gunicorn's).
pub fn stop_on(signals: &[libc::c_int]) -> io::Result<UnixStream> {
    let (stop_read, stop_write) = UnixStream::pair()?;
    let stopping = STOPPING.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for &signal in signals {
        // Order matters: the exit-if-already-set action is registered first,
        // so the first signal only sets the flag.
        signal_hook::flag::register_conditional_shutdown(signal, 1, stopping.clone())?;
        signal_hook::flag::register(signal, stopping.clone())?;
        signal_hook::low_level::pipe::register(signal, stop_write.try_clone()?)?;
    }
    Ok(stop_read)
}
// ANCHOR_END: stop_on_signals

/// Set by the handlers of [`stop_on_signals`].
static STOPPING: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Whether SIGINT or SIGTERM arrived: a loop that is busy (and so does not
/// poll the stop pipe) checks this between connections.
pub fn stop_requested() -> bool {
    STOPPING.get().is_some_and(|s| s.load(Ordering::Relaxed))
}

/// Makes each of `signals` end the process at once (exit status 0), whatever
/// it is doing: a worker's SIGQUIT (the master's fast stop), a helper
/// process that has nothing to finish.
pub fn exit_at_once_on(signals: &[libc::c_int]) -> io::Result<()> {
    exit_at_once_with(0, signals)
}

/// [`exit_at_once_on`] with exit status `status`: a worker's SIGABRT (the
/// master's timeout) exits with 1, as gunicorn's. The handler calls
/// `_exit(2)` itself, so it works even while the process is stuck in a
/// loop that holds the GIL.
pub fn exit_at_once_with(status: libc::c_int, signals: &[libc::c_int]) -> io::Result<()> {
    let always = Arc::new(AtomicBool::new(true));
    for &signal in signals {
        signal_hook::flag::register_conditional_shutdown(signal, status, always.clone())?;
    }
    Ok(())
}

/// Ignores each of `signals`, but says so in the log: `say` runs on a
/// thread of its own for every one that arrives (a signal handler cannot
/// log). For a process that may have threads (a worker), never for the
/// master, which forks.
pub fn log_and_ignore(
    signals: &[libc::c_int],
    say: impl Fn(libc::c_int) + Send + 'static,
) -> io::Result<()> {
    let mut arrived = signal_hook::iterator::Signals::new(signals)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in arrived.forever() {
                say(signal);
            }
        })?;
    Ok(())
}

/// A signal's name as gunicorn logs it: `hup`, `alrm`, `rtmin+3`.
pub fn short_name(signal: libc::c_int) -> String {
    if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signal) {
        return format!("rtmin+{}", signal - libc::SIGRTMIN());
    }
    name(signal).trim_start_matches("SIG").to_lowercase()
}

/// A signal's name, for log lines a student can read.
pub fn name(signal: libc::c_int) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}
