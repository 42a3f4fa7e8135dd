//! The pool threads: take a connection, serve its request, give it back.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use pyo3::Python;
use wsgi_bridge::serve::{HttpConnection, Next};

use crate::{Done, Job, Shared};

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
        // One idle thread waits on the channel, the others on the lock. The
        // guard is a temporary: the lock is released as soon as a job arrives.
        let job = shared
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        // An error means the main loop has ended: so does the thread.
        let Ok(Job { slot, mut conn }) = job else {
            return;
        };
        let keep = serve(shared, &mut conn);
        let _ = shared.done.send(Done {
            slot,
            conn: keep.then_some(conn),
        });
        let _ = shared.waker.wake();
    }
}

/// Serves the request waiting on `conn`, and any pipelined after it.
/// Returns whether the connection stays open.
fn serve(shared: &Shared<'_>, conn: &mut HttpConnection) -> bool {
    let config = shared.config;
    loop {
        let keep_alive = !config.keep_alive.is_zero() && !shared.stopping.load(Ordering::Relaxed);
        // Reading and writing the socket happen without the GIL; it is taken
        // only to build environ, call the app and pull each body chunk (see
        // wsgi_bridge::wsgi::call). A panic must not cost the pool a thread.
        let next = catch_unwind(AssertUnwindSafe(|| {
            conn.serve_one(shared.app, &config.limits, keep_alive, shared.hooks)
        }))
        .unwrap_or(Next::Close);
        if shared.hooks.should_stop() {
            // Served its --max-requests (stage 3): stop like on a signal.
            shared.stopping.store(true, Ordering::Relaxed);
            return false;
        }
        if next == Next::Close || shared.stopping.load(Ordering::Relaxed) {
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
