//! What a worker loop tells whoever runs it.
//!
//! Stages 1 and 2 run their loop directly and need none of this. Stage 3's
//! master runs the same loops in forked workers and watches them: a worker
//! proves it is alive (heartbeat), shows whether it is busy, and stops after
//! `--max-requests`. The loops call these hooks (`HttpConnection::serve_one`
//! calls the request ones, only when a request really arrived); stage 3
//! implements them.

// ANCHOR: worker_hooks
/// Hooks a worker loop calls. Every method has a do-nothing default.
pub trait WorkerHooks: Sync {
    /// Called at least once a second while the loop is not stuck in a
    /// request: the proof of life a master's `--timeout` watches.
    fn heartbeat(&self) {}

    /// A request is about to be served.
    fn request_started(&self) {}

    /// The loop woke up for a connection and found none to accept: another
    /// process took it first (the "thundering herd" stage 3 measures).
    fn accept_missed(&self) {}

    /// A request was served.
    fn request_finished(&self) {}

    /// Asked after each request: `true` makes the loop stop gracefully, as
    /// on SIGTERM (the worker has served its `--max-requests`).
    fn should_stop(&self) -> bool {
        false
    }
}
// ANCHOR_END: worker_hooks

/// The hooks of a server that runs its loop itself.
pub struct NoHooks;

impl WorkerHooks for NoHooks {}
