//! The pool threads: take a connection, serve its request, give it back.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use pyo3::Python;
use wsgi_bridge::serve::{HttpConnection, Next};
use wsgi_bridge::wsgi::call::WsgiApp;

use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Interest, Token};

use crate::{Done, FIRST_CONN, Job, Shared};

/// The life of one pool thread.
pub(crate) fn run(shared: &Shared<'_>) {
    // Attach to Python once, for the thread's whole life, and let go of the
    // GIL at once. The thread keeps its Python thread state, so the
    // `Python::attach` of each request only takes the GIL, instead of
    // creating and destroying a thread state every time.
    Python::attach(|py| py.detach(|| serve_jobs(shared)));
}

// ANCHOR: pool_thread
fn serve_jobs(shared: &Shared<'_>) {
    loop {
        // `None` means the main loop has ended: so does the thread.
        let Some(Job {
            slot,
            mut conn,
            origin,
        }) = shared.jobs.pop()
        else {
            return;
        };
        let keep =
            serve(shared, &shared.apps[origin], &mut conn) && watch_again(shared, slot, &conn);
        let _ = shared.done.send(Done {
            slot,
            conn: keep.then_some(conn),
        });
        if !keep || shared.stopping.load(Ordering::Relaxed) {
            // The main thread must free the slot (and, when stopping, learn
            // that the request in flight is done): wake it up. A kept-alive
            // connection needs nothing from it until its next request.
            let _ = shared.waker.wake();
        }
    }
}

/// The jobs waiting for a pool thread: a queue behind a lock, and a
/// condition variable the idle threads sleep on. `push` wakes one idle
/// thread, and only if one is idle: under load every thread is busy, and
/// the next to finish takes the job without anybody being woken.
///
/// (The pool of the Rust book's last chapter shares one channel receiver
/// behind a lock instead. The idle threads then queue on the lock, and each
/// job wakes two of them: the one that takes it, and the next, which only
/// moves from waiting on the lock to waiting on the channel. Measured with
/// `perf`, that second wake-up and the spinning on the lock cost more than
/// a tenth of the server's CPU time at 60,000 requests a second.)
pub(crate) struct JobQueue {
    state: Mutex<Queue>,
    ready: Condvar,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Threads asleep on `ready`.
    idle: usize,
    /// The main loop has ended: the threads end too.
    closed: bool,
}

impl JobQueue {
    pub(crate) fn new() -> JobQueue {
        JobQueue {
            state: Mutex::new(Queue {
                jobs: VecDeque::new(),
                idle: 0,
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, job: Job) {
        let mut queue = self.lock();
        queue.jobs.push_back(job);
        let someone_idle = queue.idle > 0;
        drop(queue);
        if someone_idle {
            self.ready.notify_one();
        }
    }

    /// The next job, waiting for one if needed; `None` once closed.
    fn pop(&self) -> Option<Job> {
        let mut queue = self.lock();
        loop {
            if queue.closed {
                return None;
            }
            if let Some(job) = queue.jobs.pop_front() {
                return Some(job);
            }
            queue.idle += 1;
            queue = self
                .ready
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
            queue.idle -= 1;
        }
    }
}

/// Closes the queue when dropped: every pool thread then ends.
pub(crate) struct CloseOnDrop<'a>(pub(crate) &'a JobQueue);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.ready.notify_all();
    }
}

/// Puts a kept-alive connection back under the poller's watch, from this
/// thread: the main thread is then not woken up just to do it. Registering
/// reports bytes already waiting, so a next request that arrived meanwhile
/// is not missed. False if it cannot be watched: close it.
fn watch_again(shared: &Shared<'_>, slot: usize, conn: &HttpConnection) -> bool {
    let fd = conn.stream().as_raw_fd();
    let token = Token(FIRST_CONN + slot);
    match shared
        .registry
        .reregister(&mut SourceFd(&fd), token, Interest::READABLE)
    {
        Ok(()) => true,
        Err(e) => {
            log::warn!("cannot watch a connection: {e}");
            false
        }
    }
}

/// Serves the request waiting on `conn`, and any pipelined after it.
/// Returns whether the connection stays open.
fn serve(shared: &Shared<'_>, app: &WsgiApp, conn: &mut HttpConnection) -> bool {
    let config = shared.config;
    loop {
        let keep_alive = !config.keep_alive.is_zero() && !shared.stopping.load(Ordering::Relaxed);
        // Reading and writing the socket happen without the GIL; it is taken
        // only to build environ, call the app and pull each body chunk (see
        // wsgi_bridge::wsgi::call). A panic must not cost the pool a thread.
        let next = catch_unwind(AssertUnwindSafe(|| {
            conn.serve_one(app, &config.limits, keep_alive, shared.hooks)
        }))
        .unwrap_or(Next::Close);
        if shared.hooks.should_stop() {
            // Served its --max-requests (stage 3): stop like on a signal.
            shared.stopping.store(true, Ordering::Relaxed);
            return false;
        }
        // A response sent before the stop began promised keep-alive: the
        // client may already be sending its next request, so the connection
        // goes back to the main thread, which serves a request that arrived
        // and closes the others (`drain`).
        if next == Next::Close {
            return false;
        }
        // Bytes of the next request are already buffered (pipelining): no
        // readiness will ever be reported for them, so serve them now.
        if !conn.has_buffered_bytes() {
            return true;
        }
    }
}
// ANCHOR_END: pool_thread
